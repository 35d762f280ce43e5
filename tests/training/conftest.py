"""Fixtures: a small FFT-frame feature store of synthetic harmonic tones, and tiny overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# The models here are tiny: a second intra-op thread only adds contention (with pytest-xdist
# or anything else running, OpenMP threads waiting on a busy core make a step 10-50x slower).
torch.set_num_threads(1)

SR = 8000
BLOCK = 128  # 256 features, 62.5 frames per second

#: Overrides that make fft_base-tiny train in about a second.
TINY = [
    "model.hidden_size=16",
    "model.dropout=0.0",
    "data.seq_len=8",
    "data.hop=8",
    "data.batch_size=8",
    "train.log_every=1",
    "train.sample_every=0",
    "train.tensorboard=false",
    "train.progress=false",
    "schedule.name=none",
    "schedule.early_stopping=0",
]


def tone(seconds: float, f0: float, *, seed: int) -> np.ndarray:
    """A few harmonics of ``f0`` with a slow tremolo and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 5))
    y = y * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)) + 0.01 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def make_store(path: Path) -> Path:
    from cadenza.data.store import create_store
    from cadenza.representations import make_representation

    rep = make_representation("fft", sample_rate=SR, block_size=BLOCK)
    items = {}
    plan = [
        ("train", 220.0),
        ("train", 262.0),
        ("train", 330.0),
        ("train", 392.0),
        ("valid", 294.0),
        ("test", 349.0),
    ]
    for i, (split, f0) in enumerate(plan):
        items[f"tone{i}"] = (rep.encode(tone(2.0, f0, seed=i)), split, {"composer": "synth"})
    create_store(path, rep, items)
    return path


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("store") / "tones-fft")
