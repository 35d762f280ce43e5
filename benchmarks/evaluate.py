"""The evaluation's two costs, side by side in one process: feature extraction and set distances.

1. **Features**: ``cadenza.evaluation.features.clip_features`` (one STFT per clip, windows as
   strided views, batched per-window steps) against ``reference_window_features``, the
   straightforward librosa loop that hands every 1 s window to librosa's feature functions on
   its own, over the same clips of real music (Bach chorales from music21's corpus rendered with
   FluidSynth at 22.05 kHz, cut into 10 s clips). Timed in interleaved rounds, best of
   ``--repeats``; values compared feature by feature (relative difference, with a floor of 1e-3
   of the feature's largest magnitude for values near zero). Goal: at least 3x faster, equal
   within 1e-4, at least 100x real time.
2. **Set distances**: KAD and FAD with ``--n-boot`` (1000) bootstrap draws on two sets of
   ``--n-sets`` (2000) clip embeddings of the real dimension. Goal: under 10 s.

The machine's load average is recorded before and after; figures taken when the 1-minute load
before the run was above ``BUSY_LOAD`` (something else was running) are marked as taken under load. Results go to benchmarks/results/evaluate.json.

    .venv/bin/python benchmarks/evaluate.py [--clips 24] [--repeats 3] [--n-sets 2000] [--n-boot 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _machine import machine

RESULTS = Path(__file__).parent / "results" / "evaluate.json"
#: A 1-minute load average above this (on 2 cores) means something else was running.
BUSY_LOAD = 0.7
CLIP_SECONDS = 10.0


def real_clips(n_clips: int) -> list[np.ndarray]:
    """``n_clips`` 10 s clips of rendered chorales at the analysis rate."""
    from music21 import corpus

    from cadenza.audio import render_midi
    from cadenza.data.scores import read_score
    from cadenza.evaluation.features import ANALYSIS_SR

    n = int(CLIP_SECONDS * ANALYSIS_SR)
    clips: list[np.ndarray] = []
    paths = sorted(str(p) for p in corpus.getComposer("bach") if "bwv" in str(p) and str(p).endswith(".mxl"))
    for path in paths:
        y = render_midi(read_score(path), sr=ANALYSIS_SR)
        clips += [y[a : a + n] for a in range(0, len(y) - n + 1, n)]
        if len(clips) >= n_clips:
            return clips[:n_clips]
    return clips


def bench_features(clips: list[np.ndarray], repeats: int) -> dict:
    from cadenza.evaluation.features import clip_features, reference_window_features

    fast = [clip_features(c).windows for c in clips]  # warm up (and the values)
    slow = [reference_window_features(c) for c in clips]
    worst = 0.0
    for f, s in zip(fast, slow):
        scale = np.maximum(np.abs(s), 1e-3 * np.abs(s).max(axis=0))
        worst = max(worst, float(np.max(np.abs(f - s) / scale)))
    t_fast, t_slow = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in clips:
            clip_features(c)
        t1 = time.perf_counter()
        for c in clips:
            reference_window_features(c)
        t2 = time.perf_counter()
        t_fast.append(t1 - t0)
        t_slow.append(t2 - t1)
    audio = len(clips) * CLIP_SECONDS
    return {
        "clips": len(clips),
        "audio_seconds": audio,
        "cadenza_s": min(t_fast),
        "librosa_loop_s": min(t_slow),
        "speedup": min(t_slow) / min(t_fast),
        "cadenza_real_time": audio / min(t_fast),
        "librosa_loop_real_time": audio / min(t_slow),
        "max_relative_difference": worst,
    }


def bench_distances(n_sets: int, n_boot: int) -> dict:
    from cadenza.evaluation.distances import set_distances
    from cadenza.evaluation.features import N_CLIP_FEATURES

    rng = np.random.default_rng(0)
    mix = rng.standard_normal((N_CLIP_FEATURES, N_CLIP_FEATURES)) / np.sqrt(N_CLIP_FEATURES)
    x = rng.standard_normal((n_sets, N_CLIP_FEATURES)) @ mix
    y = rng.standard_normal((n_sets, N_CLIP_FEATURES)) @ mix + 0.1
    t0 = time.perf_counter()
    result = set_distances(x, y, n_boot=n_boot, seed=0, metrics=("kad", "fad"))
    seconds = time.perf_counter() - t0
    return {
        "n_per_set": n_sets,
        "dimension": N_CLIP_FEATURES,
        "n_boot": n_boot,
        "kad_fad_s": seconds,
        "kad": result["kad"].to_dict(),
        "fad": result["fad"].to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-sets", type=int, default=2000)
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()

    clips = real_clips(args.clips)
    load_before = os.getloadavg()
    features = bench_features(clips, args.repeats)
    distances = bench_distances(args.n_sets, args.n_boot)
    load_after = os.getloadavg()
    busy = load_before[0] > BUSY_LOAD  # after the run, the load includes the benchmark itself
    result = {
        "machine": machine(load_before=load_before, load_after=load_after, taken_under_load=busy),
        "features": features,
        "distances": distances,
        "goals": {
            "features_speedup_at_least_3": features["speedup"] >= 3.0,
            "features_equal_within_1e-4": features["max_relative_difference"] <= 1e-4,
            "features_at_least_100x_real_time": features["cadenza_real_time"] >= 100.0,
            "kad_fad_1000_draws_2000_clips_under_10_s": distances["kad_fad_s"] < 10.0,
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if busy:
        print(
            f"WARNING: the load average was {max(load_before[0], load_after[0]):.2f}: figures taken under load"
        )


if __name__ == "__main__":
    main()
