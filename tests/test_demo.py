"""`cadenza demo` end to end, at a size that runs in a minute: every family trains and generates."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile as sf
import torch

from cadenza.cli import main as cli
from cadenza.demo import JOBS

torch.set_num_threads(1)

FAST = [
    "data.batch_size=4",
    "train.max_epochs=1",
    "train.max_steps=2",
    "train.sample_every=0",
    "train.tensorboard=false",
    "train.progress=false",
]


def test_demo_trains_and_generates_one_model_of_each_family(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    args = [
        "demo",
        "--out",
        str(out),
        "--max-files",
        "3",
        "--n",
        "1",
        "--seconds",
        "1",
        "--bars",
        "32",
        "--eval-clips",
        "2",
        *FAST,
    ]
    assert cli(args) == 0
    report = (out / "report.md").read_text()
    assert {job.config.rsplit("-", 1)[0] for job in JOBS} >= {"fft_base", "bilstm_gan", "seq2seq", "wavenet"}
    for job in JOBS:
        assert f"## {job.config}" in report, job.config
        run = out / "runs" / job.config
        assert (run / "checkpoints" / "last.pt").is_file() and (run / "plots" / "loss.png").is_file()
        wavs = sorted((out / "samples").glob(f"{job.config}-seed7-*.wav"))
        assert len(wavs) == 1, job.config
        y, sr = sf.read(wavs[0])
        assert y.ndim == 1 and len(y) >= sr * 0.99, job.config
        meta = json.loads(wavs[0].with_suffix(".json").read_text())
        assert meta["model"] == job.config.rsplit("-", 1)[0] and meta["seed"] == 7
    assert sorted(p.name for p in (out / "samples").glob("bilstm_gan-tiny-seed7-0.*")) == [
        "bilstm_gan-tiny-seed7-0.json",
        "bilstm_gan-tiny-seed7-0.mid",
        "bilstm_gan-tiny-seed7-0.png",
        "bilstm_gan-tiny-seed7-0.wav",
    ]
    table = (out / "evaluation" / "table1.md").read_text()
    assert "Training data" in table and "bilstm_gan-tiny" in table and "paper 004" in table
    assert "Training data" in report and (out / "plots").is_dir()
    # the demo ends by evaluating its models against held-out music of their data
    assert "## Evaluation" in report and "| fft_base-tiny |" in report and (out / "report.html").is_file()
    for key in ("fft", "rolls", "wave"):
        metrics = json.loads((out / "evaluation" / key / "metrics.json").read_text())
        assert metrics["sets"] and all(s["n_clips"] == 2 for s in metrics["sets"]), key
    assert "evaluation/fft/report.html" in (out / "report.html").read_text()
    # the same command again resumes: every stage finds its work done
    assert cli(args) == 0
