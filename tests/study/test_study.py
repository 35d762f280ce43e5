"""`cadenza study` end to end on a toy budget: every stage, a model that fails, and a resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cadenza.cli import main as cli
from cadenza.study.plan import split_of
from tests.study import toy

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "music21:chorales"
ROLLS = "pianoroll-lowest_pitch=24-n_pitches=84"
#: Four chorales, two clips of two seconds to measure and to listen to, few bars and draws.
SMALL = [
    "--max-files",
    "4",
    "--eval-clips",
    "2",
    "--eval-seconds",
    "2",
    "--listen-clips",
    "2",
    "--listen-seconds",
    "2",
    "--bars",
    "8",
    "--n-boot",
    "20",
    "--threads",
    "1",
    "--workers",
    "1",
    "--set",
    "train.tensorboard=false",
    "--set",
    "train.progress=false",
]


def _state(out: Path) -> dict:
    return json.loads((out / "study.json").read_text())


def _mtimes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_study_of_two_families_and_a_broken_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toy.register("broken_toy", monkeypatch, fail=True)
    out = tmp_path / "study"
    args = [
        "study",
        SOURCE,
        "--models",
        "fft_base,bilstm_gan,broken_toy",
        "--budget",
        "3steps",
        "--out",
        str(out),
        *SMALL,
        "--set",
        "data.batch_size=4",
        "--set",
        "fft_base:model.hidden_size=16",
        *(f"--set=broken_toy:{o}" for o in toy.FAST),
    ]
    assert cli(args) == 1  # a model failed
    captured = capsys.readouterr()
    assert "broken_toy failed at train" in captured.err and "broken on purpose" in captured.err
    for line in ("[1/3 fft_base] prepare:", "[1/3 fft_base] train: 3 steps", "[2/3 bilstm_gan] generate:"):
        assert line in captured.out, line
    assert "--set changes differ" not in captured.out  # a new run is not "trained again"
    state = _state(out)

    # one store per representation, shared; the same files drawn and split alike in each
    assert state["plan"]["train_store"] == {
        "fft_base": "fft-16k",
        "bilstm_gan": ROLLS,
        "broken_toy": "fft-16k",
    }
    assert sorted(p.name for p in (out / "data").iterdir()) == ["fft-16k", ROLLS]
    fft, rolls = split_of(out / "data" / "fft-16k"), split_of(out / "data" / ROLLS)
    assert fft == rolls and len(fft) == 4 and set(fft.values()) == {"train", "valid", "test"}
    assert state["held_out"] == {"same": True, "notes": []}

    # each model trained for exactly the budget, made its listening clips and was measured
    for model, group in (("fft_base", "fft-16k"), ("bilstm_gan", ROLLS)):
        stages = state["models"][model]["stages"]
        assert {s: stages[s]["status"] for s in stages} == {
            "prepare": "done",
            "train": "done",
            "generate": "done",
            "evaluate": "done",
            **({"table1": "done"} if model == "bilstm_gan" else {}),
        }
        assert stages["train"]["steps"] == 3 and stages["train"]["stopped"] == "budget"
        assert (out / "runs" / model / "checkpoints" / "last.pt").is_file()
        assert len(list((out / "listen" / model).glob("*.json"))) == 2
        metrics = json.loads((out / "evaluation" / group / "metrics.json").read_text())
        assert [s["name"] for s in metrics["sets"]] == [model] and metrics["sets"][0]["n_clips"] == 2
    table = json.loads((out / "table1" / ROLLS / "table1.json").read_text())
    assert [r["name"] for r in table["rows"]] == ["Training data", "bilstm_gan"]

    # the broken model: its error and traceback kept, left out of the evaluation
    train = state["models"]["broken_toy"]["stages"]["train"]
    assert train["status"] == "failed" and "broken on purpose" in train["error"]
    assert "RuntimeError" in (out / train["log"]).read_text()
    assert "evaluate" not in state["models"]["broken_toy"]["stages"]
    assert state["failed"] == {"broken_toy": f"train: {train['error']}"}

    report = (out / "report.md").read_text()
    assert "| fft_base | 000 | fft-16k | 3 steps" in report and "| bilstm_gan | 004 |" in report
    assert "**failed** at train" in report and "broken on purpose" in report
    assert f"cadenza listen {out / 'listen'} --reference {out / 'data' / 'fft-16k'}" in report
    assert (
        "Table 1" in report
        and "UPC" in report
        and "held-out (test) files are the same in every store" in report
    )
    assert "3 steps of training each" in report and "`cadenza study " in report
    for model, group in (("fft_base", "fft-16k"), ("bilstm_gan", ROLLS)):  # each model's farthest group
        (saved,) = json.loads((out / "evaluation" / group / "metrics.json").read_text())["sets"]
        name, value = saved["gaps"]["groups"][0]
        assert (
            f"### {model}" in report and f"farthest from the held-out music in: {name} ({value:.1f}" in report
        )
    assert "evaluation/fft-16k/report.html" in (out / "report.html").read_text()

    # the same command again: finished stages are not done again; the broken model is tried again
    kept = ("data/", "runs/fft_base/", "runs/bilstm_gan/", "listen/", "evaluation/", "table1/")
    before = {k: v for k, v in _mtimes(out).items() if k.startswith(kept)}
    assert cli(args) == 1
    again = capsys.readouterr()
    assert "error:" not in again.err and "broken_toy failed at train" in again.err
    assert "[1/3 fft_base] train" not in again.out and "[2/3 bilstm_gan] generate" not in again.out
    assert "[3/3 broken_toy] train: 3 steps" in again.out
    after = {k: v for k, v in _mtimes(out).items() if k in before}
    assert after == before
    assert len(_state(out)["commands"]) == 2

    # a --set change for one model: that model is trained again from step 0 (at the same step
    # count, so the budget alone cannot tell), made its clips and was measured again; the other not
    changed = [*args, "--set", "fft_base:model.hidden_size=8"]
    assert cli(changed) == 1
    third = capsys.readouterr()
    assert "[1/3 fft_base] train: its --set changes differ from the run's" in third.out
    assert "[1/3 fft_base] generate:" in third.out and "fft_base against the held-out files" in third.out
    assert "[2/3 bilstm_gan] train" not in third.out and "[2/3 bilstm_gan] generate" not in third.out
    state = _state(out)
    train = state["models"]["fft_base"]["stages"]["train"]
    assert train["steps"] == 3 and "model.hidden_size=8" in train["overrides"]
    saved = torch.load(out / "runs" / "fft_base" / "checkpoints" / "last.pt", weights_only=False)
    assert saved["config"]["model"]["hidden_size"] == 8
    assert state["models"]["fft_base"]["stages"]["evaluate"]["key"] == [3, train["overrides"]]
    assert cli(changed) == 1  # and the same changed command again: nothing of fft_base again
    fourth = capsys.readouterr().out
    assert "[1/3 fft_base] train" not in fourth and "[1/3 fft_base] generate" not in fourth
    assert "fft_base against the held-out files" not in fourth


def test_a_full_disk_stops_the_study_without_failing_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toy.register("full_toy", monkeypatch, disk_full=True)
    toy.register("next_toy", monkeypatch)
    out = tmp_path / "study"
    args = ["study", SOURCE, "--models", "full_toy,next_toy", "--budget", "2steps", "--out", str(out)]
    args += [*SMALL, "--eval-clips", "0", "--listen-clips", "0"]
    args += [f"--set={m}:{o}" for m in ("full_toy", "next_toy") for o in toy.FAST]
    assert cli(args) == 1
    captured = capsys.readouterr()
    assert captured.err.count("error:") == 1 and "Traceback" not in captured.err
    assert (
        "cadenza study: error: no space left on device writing runs/toy/checkpoints/last.pt" in captured.err
    )
    assert "the study goes on where it stopped" in captured.err
    assert "[2/2 next_toy]" not in captured.out  # stopped: the next model would find the disk full too
    state = _state(out)
    assert state["models"]["full_toy"]["stages"]["train"]["status"] != "failed"
    assert not (out / "logs").exists()

    toy.register("full_toy", monkeypatch)  # room again: the same command goes on
    assert cli(args) == 0
    state = _state(out)
    assert all(state["models"][m]["stages"]["train"]["status"] == "done" for m in ("full_toy", "next_toy"))


@pytest.mark.slow
def test_study_killed_in_the_middle_of_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cadenza.study.run import _checkpoint_step

    out = tmp_path / "study"
    overrides = [*toy.FAST, "train.save_every_steps=2"]  # last.pt, with the time trained, every 2 steps
    args = [
        "study",
        SOURCE,
        "--models",
        "slow_toy",
        "--budget",
        "15s",
        "--out",
        str(out),
        *SMALL,
        *(f"--set=slow_toy:{o}" for o in overrides),
    ]
    script = (
        "import sys, torch; torch.set_num_threads(1); from tests.study import toy; "
        "toy.register('slow_toy', sleep=0.05); from cadenza.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
    deadline = time.monotonic() + 120
    train: dict = {}
    try:
        # kill it in the middle of training, once last.pt holds some steps
        while time.monotonic() < deadline and proc.poll() is None:
            if _checkpoint_step(out / "runs" / "slow_toy") >= 10:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    killed_at = _checkpoint_step(out / "runs" / "slow_toy")
    state = _state(out)  # a whole file, as written after the last stage
    train = state["models"]["slow_toy"]["stages"]["train"]
    assert train["status"] == "running" and 10 <= killed_at
    store_meta = (out / "data" / "fft-16k" / "meta.yaml").stat().st_mtime_ns

    # the same study again, its options taken from study.json: training goes on from last.pt
    toy.register("slow_toy", monkeypatch, sleep=0.05)
    assert cli(["study", "--out", str(out), "--threads", "1"]) == 0
    state = _state(out)
    train = state["models"]["slow_toy"]["stages"]["train"]
    assert train["status"] == "done" and train["stopped"] == "budget"
    # the trainer stops at the step that spends the budget, the first call's saved time counted
    assert train["steps"] > killed_at and 15 <= train["seconds"] < 15 + 2.0
    assert (out / "data" / "fft-16k" / "meta.yaml").stat().st_mtime_ns == store_meta  # not prepared again
    assert {s: r["status"] for s, r in state["models"]["slow_toy"]["stages"].items()} == {
        "prepare": "done",
        "train": "done",
        "generate": "done",
        "evaluate": "done",
    }
    assert state["failed"] == {} and (out / "report.html").is_file()
    assert state["settings"]["budget"] == {"kind": "seconds", "value": 15.0} and len(state["commands"]) == 2


def test_a_source_with_no_music_stops_the_study_once(tmp_path: Path, capsys) -> None:
    """An empty folder (or one that does not exist) failed all 13 models, one after another, each
    with the same message; it now stops the study at once with it. (A folder of recordings still
    fails only the piano-roll models, "piano rolls need scores": the others can use it.)"""
    empty = tmp_path / "music"
    empty.mkdir()
    (empty / "notes.txt").write_text("not music")
    args = ["study", str(empty), "--models", "fft_base,bilstm_gan", "--budget", "2steps", "--out"]
    assert cli([*args, str(tmp_path / "study"), *SMALL]) == 1
    err = capsys.readouterr()
    assert "contains no usable file" in err.err and "the study stops: no model can be prepared" in err.err
    assert "failed" not in err.out  # no model is blamed for the source
    missing = str(tmp_path / "nowhere")
    assert cli(["study", missing, "--models", "fft_base", "--out", str(tmp_path / "study2"), *SMALL]) == 1
    assert "does not exist" in capsys.readouterr().err


def _recording(path: Path, seconds: float, freq: float = 220.0) -> None:
    """A 16 kHz recording of ``seconds`` whose pitch rises through it."""
    import numpy as np
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(path, 0.3 * np.sin(2 * np.pi * (freq + 2.0 * t) * t), 16000)


#: A study of fft_base alone on a folder of one's own, two steps.
def _one_model_study(music: Path, out: Path) -> list[str]:
    args = ["study", str(music), "--models", "fft_base", "--budget", "2steps", "--out", str(out), *SMALL]
    return [*args, "--set", "fft_base:model.hidden_size=16", "--set", "data.batch_size=4"]


def test_a_study_of_one_recording_holds_out_parts_of_it(tmp_path: Path, capsys) -> None:
    """One long recording held nothing out: the study trained every model and then failed each
    at its evaluation ("no held-out files"). Its parts are held out and measured against."""
    _recording(tmp_path / "music" / "take.wav", 120.0)
    out = tmp_path / "study"
    assert cli(_one_model_study(tmp_path / "music", out)) == 0
    captured = capsys.readouterr()
    assert "no held-out files" not in captured.err + captured.out
    state = _state(out)
    assert state["models"]["fft_base"]["stages"]["evaluate"]["status"] == "done"
    assert sorted(split_of(out / "data" / "fft-16k")) == [f"take.wav.part{k:02d}" for k in range(1, 7)]
    report = (out / "report.md").read_text()
    assert "too few files to hold whole ones out: take.wav is cut in time into 6 parts" in report
    assert "6 of 6 parts prepared" in report


def test_a_study_of_nothing_it_can_hold_out_trains_no_model(tmp_path: Path, capsys) -> None:
    """One 60 s recording (too short to cut into parts) holds nothing out: every model trained for
    its budget and then failed its evaluation. Each fails at its store, saying why, untrained; a
    recording added to the source is then prepared and the study goes on."""
    _recording(tmp_path / "music" / "sketch.wav", 60.0)
    out = tmp_path / "study"
    args = _one_model_study(tmp_path / "music", out)
    assert cli(args) == 1
    captured = capsys.readouterr()
    assert (
        "fft_base failed at prepare: nothing held out in fft-16k to measure its models against, so none is "
        "trained: one or two files under 100 s are too short to cut into parts; add music"
    ) in captured.err
    assert not (out / "runs").exists()
    _recording(tmp_path / "music" / "take.wav", 120.0, freq=330.0)  # a longer one beside it: cut
    assert cli(args) == 0
    assert _state(out)["models"]["fft_base"]["stages"]["evaluate"]["status"] == "done"
