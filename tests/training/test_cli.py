"""`cadenza train`, `generate` and `export` end to end, and DDP under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cadenza.cli import main
from cadenza.errors import ParameterError
from cadenza.training import load_checkpoint
from cadenza.training.logs import read_metrics
from tests.training.conftest import BLOCK, SR, TINY, make_store, tone

STEPS_PER_EPOCH = 7


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store of its own (so a test may delete it) and a run trained for 2 epochs by the CLI."""
    root = tmp_path_factory.mktemp("cli")
    store = make_store(root / "store")
    run = root / "run"
    args = ["train", "fft_base-tiny", "--data", str(store), "--run", str(run), *TINY, "train.sample_every=1"]
    assert main([*args, "train.max_epochs=1"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == STEPS_PER_EPOCH
    assert main([*args, "train.max_epochs=2"]) == 0  # the same command, one epoch more: resumes
    return store, run


def test_train_twice_resumes_instead_of_restarting(
    run_dir: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store, run = run_dir
    steps = [r["step"] for r in read_metrics(run / "metrics.csv") if r["split"] == "train"]
    assert steps == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # continued at step 8, nothing done twice
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv") if r["split"] == "valid"] == [1, 2]
    for name in (
        "config.yaml",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "plots/loss.png",
        "samples/epoch00002.wav",
    ):
        assert (run / name).is_file(), name
    assert (
        main(["train", "fft_base-tiny", "--data", str(store), "--run", str(run), *TINY, "train.max_epochs=2"])
        == 0
    )
    assert "already finished at step 14" in capsys.readouterr().out


def test_generate_writes_wavs_and_sidecars_reproducibly(run_dir: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = run_dir
    args = ["generate", str(run), "--seconds", "2", "--n", "2", "--seed", "7"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    wavs = sorted((tmp_path / "a").glob("*.wav"))
    assert [p.name for p in wavs] == ["run-seed7-0.wav", "run-seed7-1.wav"]
    for wav in wavs:
        y, sr = sf.read(wav)
        assert sr == SR and y.shape == (2 * SR,) and np.abs(y).max() > 0
        meta = json.loads(wav.with_suffix(".json").read_text())
        assert meta["seed"] == 7 and meta["seconds"] == 2 and meta["n"] == 2 and meta["model"] == "fft_base"
        assert meta["checkpoint"].endswith("best.pt") and meta["seed_source"]["kind"] == "store"
        assert meta["seed_source"]["split"] == "test" and meta["representation"]["block_size"] == BLOCK
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert [p.read_bytes() for p in wavs] == [p.read_bytes() for p in sorted((tmp_path / "b").glob("*.wav"))]
    assert (
        main(
            ["generate", str(run), "--seconds", "2", "--n", "2", "--seed", "8", "--out", str(tmp_path / "c")]
        )
        == 0
    )
    assert wavs[0].read_bytes() != (tmp_path / "c" / "run-seed8-0.wav").read_bytes()


def test_generate_from_a_seed_file_and_a_chosen_checkpoint(
    run_dir: tuple[Path, Path], tmp_path: Path
) -> None:
    from cadenza.audio import write_audio

    _, run = run_dir
    seed_file = tmp_path / "seed.wav"
    write_audio(seed_file, tone(1.0, 440.0, seed=9), SR)
    out = tmp_path / "out"
    last = run / "checkpoints" / "last.pt"
    args = [
        "generate",
        str(run),
        "--seconds",
        "0.5",
        "--seed-file",
        str(seed_file),
        "--checkpoint",
        str(last),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    meta = json.loads((out / "run-seed0-0.json").read_text())
    assert meta["seed_source"]["kind"] == "file" and meta["checkpoint"] == str(last)
    assert sf.info(out / "run-seed0-0.wav").frames == SR // 2


def test_a_seed_file_cut_short_is_one_warning_line_not_python_source(
    run_dir: tuple[Path, Path], tmp_path: Path
) -> None:
    """Python's warning format printed `.../prepare.py:208: PartialAudioWarning: ...` and the
    source line `y, _ = read_audio(item.path, sr=sr)` to the user."""
    from cadenza.audio import write_audio

    _, run = run_dir
    whole, cut = tmp_path / "whole.wav", tmp_path / "cut.wav"
    write_audio(whole, tone(2.0, 440.0, seed=9), SR)
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])  # the header still promises 2 s
    done = subprocess.run(
        [sys.executable, "-m", "cadenza", "generate", str(run), "--seconds", "0.5", "--seed-file", str(cut)]
        + ["--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "CADENZA_MALLOC": "system"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if "kept in part" in ln]
    assert lines and lines[0].startswith("warning: ") and str(cut) in lines[0], done.stderr
    assert "PartialAudioWarning" not in done.stderr and "read_audio(" not in done.stderr, done.stderr


def test_a_silent_seed_file_is_refused_and_a_silent_start_is_passed_over(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A seed of silence or of a DC offset alone was taken without a word (the clip then began
    from nothing); a seed's windows could fall in its silent first seconds."""
    from cadenza.audio import write_audio

    _, run = run_dir
    write_audio(tmp_path / "dc.wav", np.full(SR, 0.3, np.float32), SR, subtype="FLOAT")
    out = tmp_path / "out"
    seeded = ["generate", str(run), "--seconds", "0.5", "--out", str(out), "--seed-file"]
    assert main([*seeded, str(tmp_path / "dc.wav")]) == 1
    err = capsys.readouterr().err
    assert (
        "dc.wav: silent (a constant offset of +0.300 (DC) and no sound beside it)" in err
        and "give another" in err
    )
    late = np.concatenate([np.zeros(2 * SR, np.float32), tone(1.0, 440.0, seed=3)])
    write_audio(tmp_path / "late.wav", late, SR)
    assert main([*seeded, str(tmp_path / "late.wav"), "--n", "3"]) == 0
    for i in range(3):
        source = json.loads((out / f"run-seed0-{i}.json").read_text())["seed_source"]
        assert source["kind"] == "file" and 1.9 <= source["seconds"] <= 3.0, source  # in the tone


def test_a_score_seeds_an_audio_model_rendered_as_prepare_renders_it(
    run_dir: tuple[Path, Path], tmp_path: Path
) -> None:
    """`--seed-file` takes a MIDI file for an audio model too (the help promised "or score")."""
    import pretty_midi

    from cadenza.data.items import SourceItem
    from cadenza.data.prepare import load_audio_item
    from cadenza.generation.generator import load_generator

    _, run = run_dir
    score = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes += [pretty_midi.Note(90, 60 + 2 * (i % 5), 0.25 * i, 0.25 * i + 0.24) for i in range(8)]
    score.instruments.append(piano)
    midi = tmp_path / "seed.mid"
    score.write(str(midi))
    out = tmp_path / "out"
    assert main(["generate", str(run), "--seconds", "0.5", "--seed-file", str(midi), "--out", str(out)]) == 0
    meta = json.loads((out / "run-seed0-0.json").read_text())
    assert meta["seed_source"] == {**meta["seed_source"], "kind": "file", "path": str(midi)}
    rep = load_generator(run).representation
    rendered = load_audio_item(SourceItem("seed.mid", "score", str(midi)), rep.sample_rate)
    assert np.abs(rendered).max() > 0.01  # real notes, not silence
    from cadenza.audio import trim_silence

    np.testing.assert_array_equal(rep.read(midi), rep.encode(trim_silence(rendered, rep.sample_rate)[0]))
    (tmp_path / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    assert main(["generate", str(run), "--seed-file", str(tmp_path / "broken.mid"), "--out", str(out)]) == 1


def test_export_bundle_generates_without_the_store(run_dir: tuple[Path, Path], tmp_path: Path) -> None:
    store, run = run_dir
    assert main(["export", str(run), str(tmp_path / "bundle.pt")]) == 0
    assert main(["export", str(run), str(tmp_path / "folder")]) == 0
    bundle = load_checkpoint(tmp_path / "bundle.pt")
    assert bundle["kind"] == "bundle" and "optimizers" not in bundle and len(bundle["seed_clips"]) >= 1
    assert (tmp_path / "folder" / "bundle.pt").is_file() and (tmp_path / "folder" / "config.yaml").is_file()
    reference = tmp_path / "from-run"
    assert main(["generate", str(run), "--seconds", "1", "--seed", "3", "--out", str(reference)]) == 0
    shutil.rmtree(store)  # the store is gone: the bundle must carry all generation needs
    for source in ("bundle.pt", "folder"):
        out = tmp_path / f"out-{source}"
        assert (
            main(
                [
                    "generate",
                    str(tmp_path / source),
                    "--seconds",
                    "1",
                    "--n",
                    "2",
                    "--seed",
                    "3",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        wavs = sorted(out.glob("*.wav"))
        assert len(wavs) == 2 and all(sf.info(w).frames == SR for w in wavs)
        assert json.loads(wavs[0].with_suffix(".json").read_text())["seed_source"]["kind"] == "bundle"
    # The run itself still generates from quiet noise when its store is gone.
    assert main(["generate", str(run), "--seconds", "1", "--out", str(tmp_path / "noise")]) == 0
    assert json.loads((tmp_path / "noise" / "run-seed0-0.json").read_text())["seed_source"]["kind"] == "noise"


def test_generate_without_a_checkpoint_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["generate", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint" in err[0] and "cadenza train" in err[0]


def test_a_sample_too_long_to_turn_into_sound_here_is_refused_before_it_is_generated(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The frames fit, their decoding would not (a mel RNN's hour: some 15 GB of inversion)."""
    from cadenza.representations import make_representation

    _, run = run_dir
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    frames = total // 1536  # 1,024 bytes of frames and 2,048 of decoding each: between the two
    seconds = frames / (SR / BLOCK)
    assert main(["generate", str(run), "--seconds", f"{seconds:.0f}", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "turning one sample into sound: about" in err and "GiB, more than this machine's" in err, err
    assert not (tmp_path / "o").exists()
    # mel, inverted block by block: 0.94 GB of peak memory for ten minutes at 22.05 kHz and 2.9 GB
    # for an hour, measured (3.1 GB for ten minutes when the inversion held the whole clip)
    mel = make_representation("mel")
    assert 0.4 < mel.decode_bytes(int(600 * mel.frame_rate)) / 2**30 < 1.0
    assert 2.0 < mel.decode_bytes(int(3600 * mel.frame_rate)) / 2**30 < 3.2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--seconds", "inf"], "seconds must be a positive, finite number, got inf"),  # an OverflowError
        # refused before any work (a GAN chaining phrases ground for minutes before it ran out)
        (["--seconds", "1e12"], "GiB, more than this machine's"),
        (["--option", "temperature=nan"], "--option 'temperature=nan': expected a number, got NaN"),
        (["--style", "bach=1"], "trained without labels (data.label_key), so --style has nothing to blend"),
        (["--out", "FILE"], "is a file, not a folder for the samples"),  # a FileExistsError
    ],
)
def test_generate_refuses_what_it_cannot_honour_in_one_line(
    run_dir: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: str,
) -> None:
    _, run = run_dir
    (tmp_path / "FILE").write_text("x")
    args = [a.replace("FILE", str(tmp_path / "FILE")) for a in args]
    assert main(["generate", str(run), "--seconds", "0.5", "--out", str(tmp_path / "o"), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_generate_says_which_option_or_argument_it_cannot_read(
    run_dir: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cadenza.generation import generator, load_generator, synthesize

    _, run = run_dir
    with pytest.raises(SystemExit):  # numpy's generators take no negative seed: was a ValueError
        main(["generate", str(run), "--seed", "-1"])
    assert "a seed is a whole number of 0 or more, got '-1'" in capsys.readouterr().err
    gen = load_generator(run)
    # a family that reads an option as a number (as mel_rnn's temperature): a ValueError before
    monkeypatch.setattr(gen.model, "generate", lambda request: float(request.options["temperature"]))
    with pytest.raises(
        ParameterError, match=r"generation option temperature=hot of model fft_base cannot be read"
    ):
        synthesize(gen, n=1, seconds=0.5, seed=0, options={"temperature": "hot"})
    monkeypatch.setattr(gen.model, "n_seed_frames", 0)  # a model that starts from noise (a GAN)
    with pytest.raises(ParameterError, match="no use for a seed file; leave out --seed-file"):
        synthesize(gen, n=1, seconds=0.5, seed=0, seed_file=tmp_path / "x.wav")

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(generator, "generate_from_run", out_of_memory)
    monkeypatch.setattr("cadenza.generation.generate_from_run", out_of_memory)
    assert main(["generate", str(run), "--seconds", "1e9"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "out of memory" in err[0] and "ask for fewer --seconds or a smaller --n" in err[0]
    )


def test_generate_from_a_run_whose_best_checkpoint_is_damaged_uses_its_last(
    run_dir: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, run = run_dir
    damaged = tmp_path / "run"
    shutil.copytree(run, damaged)
    (damaged / "checkpoints" / "best.pt").write_bytes(b"\x80\x02garbage")
    assert main(["generate", str(damaged), "--seconds", "0.5", "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "run-seed0-0.json").read_text())["checkpoint"].endswith("last.pt")
    assert "best.pt: not a readable checkpoint" in caplog.text and "weights_only" not in caplog.text


@pytest.mark.slow
def test_two_processes_under_torchrun_give_the_weights_of_one(store: Path, tmp_path: Path) -> None:
    overrides = [*TINY, "train.max_epochs=2", "train.grad_clip=0"]
    # PYTHONFAULTHANDLER: a process that dies of a signal prints where each of its threads was.
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONFAULTHANDLER": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "cadenza", "train", "fft_base-tiny", "--data", str(store), "--run-dir", str(tmp_path / "two"),
        "--device", "cpu", "--no-progress", *overrides,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[:3000] + "\n[...]\n" + proc.stderr[-3000:]
    assert (
        main(
            [
                "train",
                "fft_base-tiny",
                "--data",
                str(store),
                "--run",
                str(tmp_path / "one"),
                "--device",
                "cpu",
                *overrides,
            ]
        )
        == 0
    )
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert two["step"] == one["step"] == 2 * STEPS_PER_EPOCH and len(two["rng"]) == 2
    for name, w in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], w, rtol=1e-4, atol=1e-5)
    losses = lambda run: [r["loss"] for r in read_metrics(run / "metrics.csv")]  # noqa: E731
    np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-5)


def test_export_to_a_path_that_cannot_hold_the_bundle_is_one_error(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = run_dir
    (tmp_path / "taken.pt").mkdir()  # a folder where the bundle file would go
    (tmp_path / "file").write_text("not a folder")
    cases = {
        "taken.pt": "is a folder: OUT ending in .pt is the bundle file",
        "file": "is a file: OUT not ending in .pt is a bundle folder",
        "file/bundle.pt": "file is a file, not a folder",
        "file/deeper/bundle": "file is a file, not a folder",
    }
    for out, message in cases.items():
        assert main(["export", str(run), str(tmp_path / out)]) == 1, out
        assert message in capsys.readouterr().err, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken.pt"]  # nothing half-written
    assert not any((tmp_path / "taken.pt").iterdir())


def test_a_bundle_damaged_inside_is_one_error(
    run_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, run = run_dir
    assert main(["export", str(run), str(tmp_path / "bundle.pt")]) == 0
    bundle = torch.load(tmp_path / "bundle.pt", weights_only=True)
    no_weights = {k: v for k, v in bundle.items() if k != "weights"}
    name, weight = next(iter(bundle["weights"].items()))
    wrong_shape = {**bundle, "weights": {**bundle["weights"], name: weight[:1]}}
    for label, state, message in (
        ("no-weights", no_weights, "a cadenza checkpoint without its weights"),
        ("wrong-shape", wrong_shape, f"its weights do not fit its own model (size mismatch for {name}"),
    ):
        torch.save(state, tmp_path / f"{label}.pt")
        capsys.readouterr()
        assert main(["generate", str(tmp_path / f"{label}.pt"), "--out", str(tmp_path / label)]) == 1, label
        assert message in capsys.readouterr().err, label
