"""The study's plan, settings, state and report, without training anything."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

from cadenza.errors import ParameterError
from cadenza.models import MODELS
from cadenza.representations import representation_from_dict
from cadenza.study import Budget, StudyError, StudyState, check_held_out, plan_study, resolve_settings
from cadenza.study.plan import store_key, store_needs
from cadenza.study.report import paper000_answer, write_report
from cadenza.study.run import _split_overrides


def test_budget_reads_times_steps_and_config() -> None:
    assert Budget.parse("10m") == Budget("seconds", 600.0)
    assert Budget.parse("2h").seconds == 7200.0 and Budget.parse("1h30m").seconds == 5400.0
    assert Budget.parse("90s").text == "1 min 30 s" and Budget.parse("2.5min").seconds == 150.0
    assert Budget.parse("500steps") == Budget("steps", 500.0) and Budget.parse("1 step").steps == 1
    assert Budget.parse("config").kind == "config"
    for spec in ("10m", "500steps", "config"):
        assert Budget.parse(Budget.parse(spec).spec) == Budget.parse(spec)
    for bad in ("", "ten minutes", "10", "10parsecs", "0s", "0steps", "5steps10m"):
        with pytest.raises(ParameterError, match="--budget"):
            Budget.parse(bad)
    for repeated in ("5m5m", "30s1m", "1h2h"):  # once read as the sum: 5m5m was 10 minutes
        with pytest.raises(ParameterError, match="each unit once, largest first"):
            Budget.parse(repeated)
    assert Budget.parse("1h2m3s").seconds == 3723.0 and Budget.parse("1hour30min").seconds == 5400.0


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_every_model_has_a_store_and_is_measured_against_the_sound_itself(preset: str) -> None:
    plan = plan_study(MODELS, preset)
    assert not plan.errors and plan.models == list(MODELS)
    for model in MODELS:
        rep = plan.stores[plan.train_store[model]]
        MODELS[model].check(_info(rep))  # the family accepts the store the study makes for it
        ref = representation_from_dict(plan.stores[plan.reference[model]])
        # measured against an exact decoding of the music: float samples, FFT frames or the scores
        assert ref.is_exact and (ref.input_kind == "score" or ref.dtype == "float32"), model
        if ref.input_kind == "audio":
            assert ref.sample_rate == representation_from_dict(rep).sample_rate, model
    groups = plan.groups()
    assert groups["fft-16k"] == [
        "fft_base",
        "fft_fc",
        "fft_conv1d",
        "fft_conv2d",
        "fft_bilinear",
        "fft_stacked",
    ]
    gans = plan.train_store["bilstm_gan"]
    assert gans == plan.train_store["cnn_lstm_gan"] == "pianoroll-lowest_pitch=24-n_pitches=84"
    rate = "8k" if preset == "tiny" else "16k"
    assert plan.train_store["wavenet"] == f"waveform-{rate}-encoding=mulaw"
    assert plan.reference["wavenet"] == plan.train_store["seq2seq"] == f"waveform-{rate}"
    assert plan.reference["mel_rnn"] == plan.reference["mfcc_vae"] == "waveform-22.05k"
    assert plan.users(f"waveform-{rate}") == ["seq2seq", "wavenet"]


def _info(rep: dict):
    from cadenza.models import DataInfo

    return DataInfo(n_features=1, representation=rep)


def test_a_family_without_configs_trains_on_what_it_requires(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.study import toy

    spec = MODELS[toy.register("toy_plain", monkeypatch)]
    assert store_key(store_needs("toy_plain")) == "fft-16k"  # nothing said: cadenza prepare's default
    rolls = replace(spec, key="toy_rolls", requires=MappingProxyType({"name": ("pianoroll",)}))
    monkeypatch.setitem(MODELS, "toy_rolls", rolls)
    assert store_key(store_needs("toy_rolls")) == "pianoroll"
    bad = replace(
        spec, key="toy_bad", prepare="--representation mel", requires=MappingProxyType({"name": ("fft",)})
    )
    monkeypatch.setitem(MODELS, "toy_bad", bad)
    plan = plan_study(["toy_plain", "toy_bad"])
    assert list(plan.train_store) == ["toy_plain"] and "trains on name in ['fft']" in plan.errors["toy_bad"]


def _manifest(folder: Path, splits: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    lines = [json.dumps({"id": i, "status": "ok", "split": s}) for i, s in splits.items()]
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_held_out_check_names_stores_that_drew_or_split_other_files(tmp_path: Path) -> None:
    base = {"a": "train", "b": "train", "c": "valid", "d": "test"}
    a = _manifest(tmp_path / "a", base)
    b = _manifest(tmp_path / "b", dict(base))
    assert check_held_out({"a": a, "b": b}) == (True, [])
    c = _manifest(tmp_path / "c", {**base, "d": "train", "e": "test"})
    same, notes = check_held_out({"a": a, "b": b, "c": c})
    assert not same and len(notes) == 2
    assert "c drew other files than a (1 only in c, 0 only in a, e.g. e)" in notes[0]
    assert "c splits 1 files differently from a (e.g. d)" in notes[1]


def test_settings_come_from_the_study_folder_and_its_data_cannot_change(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="give the SOURCE"):
        resolve_settings(tmp_path)
    s = resolve_settings(tmp_path, source="music21:chorales", models=["fft_base", " wavenet"], max_files=6)
    assert s.models == ["fft_base", "wavenet"] and s.budget == Budget.parse("8m") and s.preset == "tiny"
    state = StudyState(tmp_path)
    state.data["settings"] = s.to_dict()
    state.save()
    again = resolve_settings(tmp_path, budget="20steps")
    assert again.source == "music21:chorales" and again.max_files == 6 and again.models == s.models
    assert again.budget == Budget("steps", 20.0)
    with pytest.raises(StudyError, match="max_files: 6 there, 8 now"):
        resolve_settings(tmp_path, max_files=8)
    music = tmp_path / "music"  # one folder SOURCE, written two ways, is the same study
    music.mkdir()
    state.data["settings"]["source"] = f"{music}/"
    state.save()
    assert resolve_settings(tmp_path, source=str(music / ".." / "music")).source == f"{music}/"
    with pytest.raises(StudyError, match="source: .* there, 'music21:chorales' now"):
        resolve_settings(tmp_path, source="music21:chorales")
    with pytest.raises(ParameterError, match="unknown model"):
        resolve_settings(tmp_path, models=["fft_base", "nope"])
    (tmp_path / "study.json").write_text("{not json")
    with pytest.raises(StudyError, match="cannot be read"):
        StudyState(tmp_path)


def test_overrides_go_to_every_model_or_to_the_one_named() -> None:
    split = _split_overrides(["data.batch_size=4", "wavenet:optim.lr=1e-3"], ["fft_base", "wavenet"])
    assert split == {"fft_base": ["data.batch_size=4"], "wavenet": ["data.batch_size=4", "optim.lr=1e-3"]}
    with pytest.raises(ParameterError, match="'seq2seq' is not a model of this study"):
        _split_overrides(["seq2seq:optim.lr=1"], ["fft_base"])


def _row(name: str, kad: tuple[float, float, float], **flags: int) -> dict:
    est = {"value": kad[0], "low": kad[1], "high": kad[2]}
    return {
        "name": name,
        "n_clips": 10,
        "distances": {"kad": est, "fad": {"value": 10 * kad[0], "low": 10 * kad[1], "high": 10 * kad[2]}},
        "flags": {"silent": 0, "noise": 0, "loop": 0, "copy": 0, **flags},
    }


def test_paper000_answer_reads_the_intervals() -> None:
    base = _row("fft_base", (0.5, 0.4, 0.6))
    assert paper000_answer({"fft_base": base, "fft_bilinear": _row("b", (0.2, 0.1, 0.3))}).startswith(
        "Yes: fft_bilinear beats fft_base"
    )
    assert paper000_answer({"fft_base": base, "fft_bilinear": _row("b", (0.9, 0.7, 1.1))}).startswith("No:")
    overlap = paper000_answer({"fft_base": base, "fft_bilinear": _row("b", (0.45, 0.3, 0.55), loop=3)})
    assert overlap.startswith("Not measurably") and "fft_bilinear loop 3/10; fft_base none" in overlap
    assert paper000_answer({"fft_base": base}) is None


def test_report_compares_models_with_the_floor_and_garbage(tmp_path: Path) -> None:
    plan = plan_study(["fft_base", "fft_bilinear"])
    state = StudyState(tmp_path)
    state.data.update(
        settings={
            "source": "music21:chorales",
            "models": plan.models,
            "budget": {"kind": "seconds", "value": 600.0},
            "preset": "tiny",
            "seed": 0,
        },
        commands=[
            {"command": "cadenza study music21:chorales --budget 10m", "date": "2026-12-01T10:00:00+00:00"}
        ],
        finished="2026-12-01T12:00:00+00:00",
        failed={},
    )
    for m, steps in (("fft_base", 900), ("fft_bilinear", 700)):
        state.stage(m, "train").update(status="done", steps=steps, seconds=600.0, stopped="budget", epoch=3)
    state.group("fft-16k").update(status="done", members=plan.models)
    state.store("fft-16k").update(
        status="done",
        summary=(
            "24 of 24 files prepared, 0 skipped; 0.40 h; warning: the held-out files hold 91% of the "
            "music, training 9% (the longest held out: y, 1.0 min): another --seed draws other files to hold out"
        ),
        test_files=["x", "y"],
    )
    state.data["held_out"] = {"same": True, "notes": []}
    metrics = {
        "settings": {"n_reference_clips": 20},
        "calibration": [
            _row("real vs real", (0.01, -0.05, 0.08)),
            _row("white noise", (3.0, 2.8, 3.2)),
            _row("0.5 s loop", (0.9, 0.8, 1.0)),
        ],
        "sets": [_row("fft_base", (0.8, 0.7, 0.9), loop=7), _row("fft_bilinear", (0.3, 0.2, 0.4))],
    }
    (tmp_path / "evaluation" / "fft-16k").mkdir(parents=True)
    (tmp_path / "evaluation" / "fft-16k" / "metrics.json").write_text(json.dumps(metrics))
    md, html = write_report(tmp_path, state, plan)
    text = md.read_text()
    assert (
        "| fft_base | 000 | fft-16k | 900 steps, 10m00s | 0.8 [0.7, 0.9] | 8 [7, 9] | 0.5 s loop | **no** | loop 7/10 | ok |"
        in text
    )
    assert (
        "| fft_bilinear | 000 | fft-16k | 700 steps, 10m00s | 0.3 [0.2, 0.4] | 3 [2, 4] | real vs real | yes | none | ok |"
        in text
    )
    assert "Yes: fft_bilinear beats fft_base at 10 min" in text
    assert "**No collapse**: not met: fft_base (loop 7/10)" in text
    assert "not met by fft_base" in text and "10 min of training each (wall-clock, measured)" in text
    assert "<table>" in html.read_text() and "<strong>no</strong>" in html.read_text()
    assert "- **warning**: the held-out files hold 91% of the music, training 9%" in text  # prepare's, kept


def test_a_schedule_set_on_the_command_line_is_spread_over_the_budget(tmp_path: Path) -> None:
    from cadenza.study.run import _Study

    def study_overrides(*sets: str) -> list[str]:
        settings = resolve_settings(
            tmp_path, source="music21:chorales", models=["mel_rnn"], budget="10m", overrides=list(sets)
        )
        study = _Study(tmp_path, settings, workers=1, device="cpu", say=lambda _: None)
        return study._config("mel_rnn", tmp_path)[1]

    # mel_rnn-tiny has no schedule: a cosine one set with --set must span the budget, not the
    # study's lifted epoch limit (under which it had stayed at its first rate throughout)
    assert "schedule.span_epochs=30" not in study_overrides()
    got = study_overrides("mel_rnn:schedule.name=cosine")
    assert got.index("schedule.span_epochs=30") < got.index("schedule.name=cosine")
    assert "schedule.span_epochs=12" in study_overrides("schedule.name=step", "train.max_epochs=12")
    # what the user sets explicitly comes last and stands
    got = study_overrides("mel_rnn:schedule.name=cosine", "mel_rnn:schedule.span_epochs=5")
    assert got[-1] == "schedule.span_epochs=5"


def _no_study(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a study that gets as far as running fail the test at once (nothing here may train)."""
    from cadenza.study.run import _Study

    def run(self: _Study, command: str) -> None:
        raise AssertionError(f"the study started: {self.s.models} {self.s.overrides}")

    monkeypatch.setattr(_Study, "run", run)


def test_a_bad_set_is_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cadenza.study import run_study

    _no_study(monkeypatch)
    out = tmp_path / "study"
    models = ["fft_base", "cnn_lstm_gan", "wavenet"]
    # found for the last model, not after the others have trained for hours
    with pytest.raises(ParameterError, match=r"optim.lr: expected float, got 'fast' \(for wavenet\)"):
        run_study(out, source="music21:chorales", models=models, overrides=["wavenet:optim.lr=fast"])
    # a key of every model's set that one family does not have is named with that model
    with pytest.raises(ParameterError, match=r"unknown key 'hidden_size'.*\(for wavenet\). Nothing was done"):
        run_study(out, source="music21:chorales", models=models, overrides=["model.hidden_size=64"])
    assert not out.exists()


def test_empty_models_and_an_empty_set_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cadenza.cli import main
    from cadenza.study.run import _Study

    _no_study(monkeypatch)
    # --models "" (an empty shell variable) is no model, not every model for 1 h 44 min
    assert main(["study", "music21:chorales", "--models", "", "--out", str(tmp_path / "a")]) == 1
    assert "--models names no model" in capsys.readouterr().err
    # --set '' drops the changes a study was given before (leaving --set out keeps them)
    state = StudyState(tmp_path / "b")
    settings = resolve_settings(tmp_path / "b", source="music21:chorales", models=["fft_base"])
    state.data["settings"] = {**settings.to_dict(), "overrides": ["data.batch_size=4"]}
    state.save()
    seen = []

    def run(self: _Study, command: str) -> object:
        seen.append(list(self.s.overrides))
        return type("Result", (), {"failed": {}})()

    monkeypatch.setattr(_Study, "run", run)
    assert main(["study", "--out", str(tmp_path / "b")]) == 0
    assert main(["study", "--out", str(tmp_path / "b"), "--set", ""]) == 0
    assert seen == [["data.batch_size=4"], []]


def test_out_must_be_a_writable_folder_outside_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cadenza.study import run_study

    _no_study(monkeypatch)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StudyError, match="is a file, not a folder"):
        run_study(tmp_path / "file", source="music21:chorales", models=["fft_base"])
    with pytest.raises(StudyError, match=r"cannot make the folder \(Not a directory\)"):
        run_study(tmp_path / "file" / "study", source="music21:chorales", models=["fft_base"])
    # in a folder SOURCE, the stores made after the first model's clips would read the clips as music
    music = tmp_path / "music"
    music.mkdir()
    for out in (music / "study", music):
        with pytest.raises(ParameterError, match="inside the SOURCE folder"):
            run_study(out, source=str(music), models=["fft_base"])
    assert list(music.iterdir()) == []
    # a folder of other things is refused (the study would write runs/, listen/, report.html there)
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    with pytest.raises(StudyError, match=r"holds other things \(notes.txt, runs\) and no study.json"):
        run_study(home, source="music21:chorales", models=["fft_base"])
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt", "runs"]
    # one holding only another study's data/ (its stores reused), or a study, goes on to run
    reuse = tmp_path / "reuse"
    (reuse / "data").mkdir(parents=True)
    (reuse / ".DS_Store").write_bytes(b"")  # hidden names do not count
    with pytest.raises(AssertionError, match="the study started"):
        run_study(reuse, source="music21:chorales", models=["fft_base"])
    (home / "study.json").write_text("{}")
    with pytest.raises(StudyError, match="study.json"):  # on to reading it: a study, damaged
        run_study(home, source="music21:chorales", models=["fft_base"])


def test_settings_that_would_fail_every_model_later_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cadenza.study import run_study

    _no_study(monkeypatch)
    for given, message in (
        ({"bars": 2}, "--bars 2: Table 1 measures whole phrases of 4 bars"),
        ({"eval_seconds": 0.0}, "--eval-seconds 0.0: expected a positive number"),
        ({"listen_seconds": float("nan")}, "--listen-seconds nan: expected a positive number"),
        ({"workers": -1}, "--workers -1: at least one process"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ):
        with pytest.raises(ParameterError, match=message):
            run_study(tmp_path / "s", source="music21:chorales", models=["cnn_lstm_gan"], **given)


def test_a_damaged_study_json_is_named_with_the_way_on(tmp_path: Path) -> None:
    s = resolve_settings(tmp_path / "x", source="music21:chorales", models=["fft_base"], budget="20steps")
    good = {
        "format": "cadenza-study",
        "version": 1,
        "settings": s.to_dict(),
        "models": {"fft_base": {"stages": {"train": {"status": "done", "steps": 20, "seconds": 3.5}}}},
    }
    edits = {
        "settings is str, not a mapping": lambda d: d.update(settings="nonsense"),
        "models is list, not a mapping": lambda d: d.update(models=[]),
        "groups is NoneType": lambda d: d.update(groups=None),
        "commands is str, not a list": lambda d: d.update(commands="x"),
        "stages.train is str, not a mapping": lambda d: d["models"]["fft_base"]["stages"].update(train="x"),
        "stages.train.steps is 'many', not a number": lambda d: d["models"]["fft_base"]["stages"][
            "train"
        ].update(steps="many"),
        "settings.max_files is 'six', not a whole number": lambda d: d["settings"].update(max_files="six"),
        "settings.models is 'fft_base', not a list": lambda d: d["settings"].update(models="fft_base"),
        "settings.models is empty": lambda d: d["settings"].update(models=[]),
        "settings.budget is missing": lambda d: d["settings"].pop("budget"),
        "kind 'parsecs' is not one of": lambda d: d["settings"].update(
            budget={"kind": "parsecs", "value": 3}
        ),
        "a seconds budget of -3: expected a positive number": lambda d: d["settings"].update(
            budget={"kind": "seconds", "value": -3}
        ),
        "written by a newer cadenza": lambda d: d.update(version=99),
        "stores.fft-16k.test_files is 5, not a list": lambda d: d.update(
            stores={"fft-16k": {"test_files": 5}}
        ),
    }
    for n, (message, edit) in enumerate(edits.items()):
        folder = tmp_path / str(n)
        folder.mkdir()
        data = json.loads(json.dumps(good))
        edit(data)
        (folder / "study.json").write_text(json.dumps(data))
        with pytest.raises(StudyError, match=re.escape(message)) as caught:
            resolve_settings(folder)
        assert (
            "newer" in message
            or "move it away" in str(caught.value)
            or "move the file away" in str(caught.value)
        )
    # what the command line gives is not read from the file
    folder = tmp_path / "given"
    folder.mkdir()
    data = json.loads(json.dumps(good))
    data["settings"]["budget"] = "abc"
    (folder / "study.json").write_text(json.dumps(data))
    assert resolve_settings(folder, budget="5steps").budget == Budget("steps", 5.0)
    data["models"]["fft_base"].pop("stages")  # a model's record without its stages: made anew
    (folder / "study.json").write_text(json.dumps(data))
    assert StudyState(folder).stage("fft_base", "train") == {}


def test_a_second_study_in_the_same_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cadenza.study import run_study
    from cadenza.study.state import lock_study

    _no_study(monkeypatch)
    tmp_path.joinpath("s").mkdir()
    held = lock_study(tmp_path / "s")  # as a study running in another process holds it
    try:
        with pytest.raises(StudyError, match="another cadenza study is running in"):
            run_study(tmp_path / "s", source="music21:chorales", models=["fft_base"])
    finally:
        held.close()
    with pytest.raises(AssertionError, match="the study started"):  # free again: this one may run
        run_study(tmp_path / "s", source="music21:chorales", models=["fft_base"])


def test_the_equivalent_command_runs_as_it_is_written(tmp_path: Path) -> None:
    from cadenza.cli import build_parser
    from cadenza.study.run import equivalent_command

    settings = resolve_settings(
        tmp_path,
        source="music21:chorales",
        models=["fft_base", "wavenet"],
        max_files=6,
        eval_seconds=2.5,
        overrides=["data.batch_size=4", "wavenet:optim.lr=1e-3"],
    )
    command = equivalent_command(tmp_path, settings)
    args = build_parser().parse_args(shlex.split(command)[1:])  # an unknown argument exits here
    assert args.overrides == ["data.batch_size=4", "wavenet:optim.lr=1e-3"]
    assert args.models == "fft_base,wavenet" and args.max_files == 6 and args.eval_seconds == 2.5


def test_a_study_holds_out_what_split_says_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folder of ten files held out one file a split (0.8,0.1,0.1): a reference of a few clips,
    # too few for any set distance; --split holds out more, and fixes the data as --seed does.
    import cadenza.data
    from cadenza.study import run_study
    from cadenza.study.run import DEFAULT_SPLIT, equivalent_command, parse_split

    assert parse_split("0.6,0.2,0.2") == [0.6, 0.2, 0.2] and parse_split([0.7, 0.3, 0.0]) == [0.7, 0.3, 0.0]
    for bad in ("0.5,0.5", "0.6,0.2,0.3", "0,0.5,0.5", "1,0,0", "a,b,c", "-0.2,0.6,0.6"):
        with pytest.raises(ParameterError, match="--split"):
            parse_split(bad)
    asked: list[tuple] = []

    def prepare(source, out, **kwargs):  # noqa: ANN001, ANN003, ANN202 - records what the study asks
        asked.append(kwargs["split"])
        raise RuntimeError("not prepared in this test")

    monkeypatch.setattr(cadenza.data, "prepare_corpus", prepare)
    out = tmp_path / "study"
    result = run_study(
        out, source="music21:chorales", models=["fft_base"], split="0.6,0.2,0.2", eval_clips=0, listen_clips=0
    )
    assert asked == [(0.6, 0.2, 0.2)] and "fft_base" in result.failed
    settings = resolve_settings(out)
    assert settings.split == [0.6, 0.2, 0.2] and "--split 0.6,0.2,0.2" in equivalent_command(out, settings)
    with pytest.raises(StudyError, match=r"split: \[0.6, 0.2, 0.2\] there, \[0.8, 0.1, 0.1\] now"):
        resolve_settings(out, split="0.8,0.1,0.1")
    state = StudyState(out)  # a study from before --split: the default, and its stores are kept
    del state.data["settings"]["split"]
    state.save()
    assert resolve_settings(out).split == DEFAULT_SPLIT == resolve_settings(out, split="0.8,0.1,0.1").split
    assert "--split" not in equivalent_command(out, resolve_settings(out))
