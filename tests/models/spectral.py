"""Spectral stores of real music for the mel and MFCC model tests, and the collapse measures.

The stores are prepared by the CLI from the embedded corpus (Bach chorales rendered by
FluidSynth; cadenza caches the renderings), at 16 kHz with 64 bands so that the tests train in
seconds. ``collapse_measures`` is the issue's yardstick for free-running output: per-band
temporal standard deviation and spectral flux of the frames re-extracted from the audio,
against the same measures of the real held-out music.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cadenza.cli import main
from cadenza.data import FeatureStore

#: 16 kHz, 64 bands, 31 frames per second.
PARAMS = [
    "--sample-rate",
    "16000",
    "--param",
    "n_fft=1024",
    "--param",
    "hop_length=512",
    "--param",
    "n_mels=64",
]


def prepare_store(path: Path, representation: str, *, n_files: int = 16) -> Path:
    argv = ["prepare", "music21:chorales", str(path), "--representation", representation]
    assert main([*argv, *PARAMS, "--max-files", str(n_files), "--workers", "1"]) == 0
    return path


def band_std(frames: np.ndarray) -> float:
    """Mean over bands of each band's standard deviation over time, (T, F) -> float."""
    return float(np.asarray(frames, np.float64).std(0).mean())


def flux(frames: np.ndarray) -> float:
    """Mean absolute frame-to-frame change, (T, F) -> float."""
    return float(np.abs(np.diff(np.asarray(frames, np.float64), axis=0)).mean())


def trim_silence(frames: np.ndarray, *, below_peak: float = 60.0) -> np.ndarray:
    """The frames from the first to the last whose loudest band is within ``below_peak`` of the
    file's peak: a rendering's silent lead-in and release are not music, and a clip cut from a
    free-running stream has none."""
    loudness = frames.max(1)
    loud = np.flatnonzero(loudness > loudness.max() - below_peak)
    return frames[loud[0] : loud[-1] + 1]


def real_measures(store: Path) -> tuple[float, float]:
    """``band_std`` and ``flux`` averaged over the store's held-out files (mel stores: edge silence trimmed)."""
    s = FeatureStore(store)
    held_out = [np.asarray(s.load(i)) for i in s.ids("test") + s.ids("valid")]
    if s.representation.name == "mel":
        held_out = [trim_silence(f) for f in held_out]
    return float(np.mean([band_std(f) for f in held_out])), float(np.mean([flux(f) for f in held_out]))
