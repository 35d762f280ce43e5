"""`cadenza demo` end to end at a size that runs in about a minute: a small study of every family, resumed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pretty_midi
import pytest
import soundfile as sf
import torch

from cadenza.cli import main as cli
from cadenza.demo import DEMO_MODELS, PLOT
from cadenza.models import MODELS

torch.set_num_threads(1)

ROLLS = "pianoroll-lowest_pitch=24-n_pitches=84"
#: The held-out music each family is measured against (the study's evaluation groups).
GROUPS = {
    "fft-16k": ["fft_base", "fft_bilinear"],
    ROLLS: ["bilstm_gan", "cnn_lstm_gan"],
    "waveform-8k": ["seq2seq", "wavenet"],
    "waveform-22.05k": ["mel_rnn", "mfcc_lstm", "mfcc_vae"],
}
#: Three chorales, two steps of training, one listening clip and two metric clips of a second.
ARGS = [
    "--max-files",
    "3",
    "--budget",
    "2steps",
    "--n",
    "1",
    "--seconds",
    "1",
    "--eval-clips",
    "2",
    "--eval-seconds",
    "1",
    "--bars",
    "8",
    "--threads",
    "1",
    "--workers",
    "1",
    "data.batch_size=4",
    "train.tensorboard=false",
    "train.progress=false",
]


def _mtimes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_demo_is_a_small_study_of_every_family_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), *ARGS]
    assert sorted(m for ms in GROUPS.values() for m in ms) == sorted(DEMO_MODELS)
    families = {MODELS[m].module for m in DEMO_MODELS}
    assert len(families) == len({spec.module for spec in MODELS.values()}), "one model of each family"
    assert cli(args) == 0
    printed = capsys.readouterr().out
    state = json.loads((out / "study.json").read_text())
    assert state["settings"]["source"] == "music21:chorales" and state["failed"] == {}
    assert state["held_out"] == {"same": True, "notes": []}

    # every family trained for the budget and wrote its listening clip
    for model in DEMO_MODELS:
        stages = state["models"][model]["stages"]
        assert {s: r["status"] for s, r in stages.items()} == {
            "prepare": "done",
            "train": "done",
            "generate": "done",
            "evaluate": "done",
            **({"table1": "done"} if "gan" in model else {}),
        }, model
        assert stages["train"]["steps"] == 2 and stages["train"]["stopped"] == "budget", model
        assert (out / "runs" / model / "checkpoints" / "last.pt").is_file(), model
        wavs = sorted((out / "listen" / model).glob("*.wav"))
        assert len(wavs) == 1, model
        y, sr = sf.read(wavs[0])
        assert y.ndim == 1 and len(y) >= 0.99 * sr and abs(y).max() <= 1.0, model
        if "gan" in model:
            midi = wavs[0].with_suffix(".mid")
            pretty_midi.PrettyMIDI(str(midi))  # decodes

    # measured per group of models that share held-out music; Table 1 for the GANs
    assert set(state["groups"]) == set(GROUPS)
    for group, members in GROUPS.items():
        metrics = json.loads((out / "evaluation" / group / "metrics.json").read_text())
        assert [s["name"] for s in metrics["sets"]] == members, group
        assert all(s["n_clips"] == 2 and "kad" in s["distances"] for s in metrics["sets"]), group
    table = json.loads((out / "table1" / ROLLS / "table1.json").read_text())
    assert [r["name"] for r in table["rows"]] == ["Training data", "bilstm_gan", "cnn_lstm_gan"]

    # the report: every model, the demo's section with the plot, Table 1, the listening command
    report = (out / "report.md").read_text()
    for model in DEMO_MODELS:
        assert f"| {model} |" in report and f"### {model}" in report, model
    assert "## The demo" in report and f"]({PLOT.as_posix()})" in report and (out / PLOT).is_file()
    assert "Paper 004's Table 1" in report and "No collapse" in report
    assert (
        "2 steps of training each" in report
        and "`cadenza study music21:chorales --models fft_base," in report
    )
    listen = f"cadenza listen {out / 'listen'} --reference {out / 'data' / 'fft-16k'} --port 8000"
    assert listen in report and listen in printed
    assert "evaluation/fft-16k/report.html" in (out / "report.html").read_text()

    # the same command again: nothing to redo
    before = {k: v for k, v in _mtimes(out).items() if not k.startswith(("study.json", "report."))}
    t0 = time.perf_counter()
    assert cli(args) == 0
    seconds = time.perf_counter() - t0
    again = capsys.readouterr().out
    assert not any(
        w in again for w in ("prepare:", "train:", "generate:", "[evaluate", "[table 1]", "plotting")
    )
    assert {k: v for k, v in _mtimes(out).items() if k in before} == before
    assert seconds < 30, seconds
    assert len(json.loads((out / "study.json").read_text())["commands"]) == 2
