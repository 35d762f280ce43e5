"""Spectral analysis and its inverses: cadenza against librosa, side by side in one process, on real music.

The music: Bach chorales from music21's corpus rendered by ``cadenza.audio.render_midi``
(FluidSynth where installed) at 22.05 kHz, cached in ``data/.benchmark_cache/`` (gitignored).
Default mel parameters (n_fft 2048, hop 512, 128 mels, Slaney), one seed, the same thread
count on both sides (``--threads``: torch's intra-op threads and, through threadpoolctl, the
BLAS under numpy). Every timing is the best of ``--repeats`` after a warm-up call.

1. **Mel back to sound** (a ``--seconds`` clip, 32 iterations each):
   ``librosa.feature.inverse.mel_to_audio``; ``Mel(inversion="librosa").decode`` (the same
   route: least squares, then Griffin-Lim from random phase); ``Mel(inversion="joint").decode``
   (PGHI start, mel re-projection inside every iteration). Each result's mel spectrogram is
   re-extracted with librosa and compared with the target: the mel spectral convergence
   ``20 log10(||A - A_target|| / ||A_target||)`` over mel amplitudes ``A = sqrt(mel power)``
   (``mel_sc_db``; the same over mel powers as ``mel_power_sc_db``). Goals: joint at most
   -25 dB and at least 5x faster than librosa.
2. **Griffin-Lim** on the clip's exact STFT magnitude: time per iteration (``(t(32) - t(0)) / 32``,
   so without the start and the last inverse STFT) against ``librosa.griffinlim``, and linear
   spectral convergence ``||(|STFT(y)|) - S|| / ||S||`` (librosa's STFT) after 32 iterations
   from PGHI, against librosa's 32 and 100 (random start). Goals: 2x faster per iteration, at
   least 3 dB better than librosa's 32 and no worse than its 100. A batch of clips in one call
   is timed too.
3. **Extraction**: log-mel of a batch of ``--clips`` clips (``--clip-seconds`` each) in one call
   against ``librosa.power_to_db(librosa.feature.melspectrogram(y=batch))``, and per clip
   ``Mel.encode`` / ``MFCC.encode`` against ``librosa.feature.mfcc``; values compared as
   ``evaluate.py`` does (relative difference, floored at 1e-3 of each feature's largest
   magnitude), and as the largest absolute difference. Goal: 2x faster.

The 1-minute load average is recorded before and after; figures taken with a load above
``BUSY_LOAD`` before the run (something else was running on these 2 cores) are marked as taken
under load. Results go to benchmarks/results/spectral.json.

    .venv/bin/python benchmarks/spectral.py [--seconds 20] [--repeats 3] [--clips 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _machine import machine

RESULTS = Path(__file__).parent / "results" / "spectral.json"
CACHE = Path(__file__).resolve().parent.parent / "data" / ".benchmark_cache"
#: A 1-minute load average above this (on 2 cores) means something else was running.
BUSY_LOAD = 0.7
SR, N_FFT, HOP, N_MELS, N_ITER = 22050, 2048, 512, 128, 32


def chorale_audio(seconds: float) -> np.ndarray:
    """At least ``seconds`` of rendered chorales at ``SR``, concatenated (cached on disk)."""
    path = CACHE / f"chorales-{SR}-{int(seconds)}s.npy"
    if path.is_file():
        return np.load(path)
    from music21 import corpus

    from cadenza.audio import render_midi
    from cadenza.data.scores import read_score

    paths = sorted(str(p) for p in corpus.getComposer("bach") if "bwv" in str(p) and str(p).endswith(".mxl"))
    parts, total = [], 0
    for p in paths:
        y = render_midi(read_score(p), sr=SR)
        parts.append(y)
        total += len(y)
        if total >= seconds * SR:
            break
    audio = np.concatenate(parts).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, audio)
    return audio


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls (after one warm-up call), and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def sc_db(estimate: np.ndarray, target: np.ndarray) -> float:
    n = min(estimate.shape[-1], target.shape[-1])
    a, b = estimate[..., :n].astype(np.float64), target[..., :n].astype(np.float64)
    return float(20 * np.log10(np.linalg.norm(a - b) / np.linalg.norm(b)))


def librosa_mel(y: np.ndarray) -> np.ndarray:
    import librosa

    return librosa.feature.melspectrogram(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)


def bench_mel_to_audio(clip: np.ndarray, repeats: int) -> dict[str, Any]:
    import librosa

    from cadenza.representations import Mel

    target = librosa_mel(clip)  # (n_mels, T) power: librosa's own features of the clip
    rows: dict[str, Any] = {}

    def librosa_route() -> np.ndarray:
        np.random.seed(0)  # noqa: NPY002 (mel_to_audio draws its random phase from numpy's global state)
        return librosa.feature.inverse.mel_to_audio(
            target, sr=SR, n_fft=N_FFT, hop_length=HOP, n_iter=N_ITER, pad_mode="constant"
        )

    frames = librosa.power_to_db(target, ref=1.0, amin=1e-10, top_db=None).T
    candidates = {
        "librosa.mel_to_audio": librosa_route,
        "cadenza_librosa_route": lambda: Mel(inversion="librosa").decode(frames),
        "cadenza_joint": lambda: Mel(inversion="joint").decode(frames),
    }
    for name, fn in candidates.items():
        seconds, audio = best_of(fn, repeats)
        again = librosa_mel(audio)
        rows[name] = {
            "seconds": seconds,
            "mel_sc_db": sc_db(np.sqrt(again), np.sqrt(target)),
            "mel_power_sc_db": sc_db(again, target),
        }
    base = rows["librosa.mel_to_audio"]["seconds"]
    for row in rows.values():
        row["speedup_vs_librosa"] = base / row["seconds"]
    inv = Mel().invert(frames)
    rows["cadenza_joint"]["invert_reports_mel_sc_db"] = inv.spectral_convergence_db
    return {"clip_seconds": len(clip) / SR, "n_iter": N_ITER, "rows": rows}


def bench_griffin_lim(clip: np.ndarray, repeats: int, batch: int) -> dict[str, Any]:
    import librosa

    from cadenza.representations._inversion import griffin_lim

    mag = np.abs(librosa.stft(clip, n_fft=N_FFT, hop_length=HOP, pad_mode="constant"))
    kw = {"n_fft": N_FFT, "hop_length": HOP}

    def lin_sc(y: np.ndarray) -> float:
        again = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP, pad_mode="constant"))
        return sc_db(again, mag)

    def ours(n: int, init: str = "pghi") -> Callable[[], np.ndarray]:
        return lambda: griffin_lim(mag, **kw, n_iter=n, init=init)

    def theirs(n: int) -> Callable[[], np.ndarray]:
        return lambda: librosa.griffinlim(mag, n_iter=n, hop_length=HOP, n_fft=N_FFT, random_state=0)

    t_ours0, _ = best_of(ours(0), repeats)
    t_ours, y_ours = best_of(ours(N_ITER), repeats)
    t_lib0, _ = best_of(theirs(0), repeats)
    t_lib, y_lib = best_of(theirs(N_ITER), repeats)
    per_ours = (t_ours - t_ours0) / N_ITER
    per_lib = (t_lib - t_lib0) / N_ITER
    result: dict[str, Any] = {
        "clip_seconds": len(clip) / SR,
        "cadenza_per_iteration_ms": 1e3 * per_ours,
        "librosa_per_iteration_ms": 1e3 * per_lib,
        "per_iteration_speedup": per_lib / per_ours,
        "cadenza_32_seconds": t_ours,
        "librosa_32_seconds": t_lib,
        "cadenza_pghi_start_seconds": t_ours0,
        "sc_db": {
            "cadenza_pghi_0": lin_sc(ours(0)()),
            "cadenza_pghi_32": lin_sc(y_ours),
            "cadenza_random_32": lin_sc(ours(N_ITER, "random")()),
            "librosa_32": lin_sc(y_lib),
            "librosa_100": lin_sc(theirs(100)()),
        },
    }
    # A batch: `batch` clips of a quarter of the clip each, in one call, against one by one.
    n = len(clip) // 4 // HOP * HOP
    clips = [clip[i * n // 2 : i * n // 2 + n] for i in range(batch)]
    mags = np.stack(
        [np.abs(librosa.stft(c, n_fft=N_FFT, hop_length=HOP, pad_mode="constant")) for c in clips]
    )
    t_batch, _ = best_of(lambda: griffin_lim(mags, **kw, n_iter=N_ITER), repeats)
    t_loop, _ = best_of(lambda: [griffin_lim(m, **kw, n_iter=N_ITER) for m in mags], repeats)
    t_lib_loop, _ = best_of(
        lambda: [librosa.griffinlim(m, n_iter=N_ITER, hop_length=HOP, random_state=0) for m in mags], repeats
    )
    result["batch"] = {
        "clips": batch,
        "clip_seconds": n / SR,
        "cadenza_batched_s": t_batch,
        "cadenza_one_by_one_s": t_loop,
        "librosa_one_by_one_s": t_lib_loop,
    }
    return result


def _relative(ours: np.ndarray, ref: np.ndarray) -> float:
    """Largest relative difference, floored at 1e-3 of each feature's largest magnitude (evaluate.py)."""
    ref64 = ref.astype(np.float64)
    scale = np.maximum(np.abs(ref64), 1e-3 * np.abs(ref64).max(axis=-2, keepdims=True))
    return float(np.max(np.abs(ours - ref64) / scale))


def bench_extraction(audio: np.ndarray, n_clips: int, clip_seconds: float, repeats: int) -> dict[str, Any]:
    import librosa

    from cadenza.representations import MFCC, Mel
    from cadenza.representations._spectral import log_mel_spectrogram

    n = int(clip_seconds * SR)
    batch = np.stack([audio[i * n : (i + 1) * n] for i in range(n_clips)])
    mel, mfcc = Mel(), MFCC()

    def lib_logmel(y: np.ndarray) -> np.ndarray:
        return librosa.power_to_db(librosa_mel(y), ref=1.0, amin=1e-10, top_db=None)

    def lib_mfcc(y: np.ndarray) -> np.ndarray:
        return librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)

    t_ours_b, ours_b = best_of(lambda: log_mel_spectrogram(batch, sr=SR), repeats)
    t_lib_b, lib_b = best_of(lambda: lib_logmel(batch), repeats)
    t_ours_mel, ours_mel = best_of(lambda: [mel.encode(c) for c in batch], repeats)
    t_lib_mel, lib_mel = best_of(lambda: [lib_logmel(c) for c in batch], repeats)
    t_ours_mfcc, ours_mfcc = best_of(lambda: [mfcc.encode(c) for c in batch], repeats)
    t_lib_mfcc, lib_mfcc_v = best_of(lambda: [lib_mfcc(c) for c in batch], repeats)
    lib_b_t = np.swapaxes(lib_b, -1, -2)
    return {
        "clips": n_clips,
        "clip_seconds": clip_seconds,
        "log_mel_batch": {
            "cadenza_s": t_ours_b,
            "librosa_s": t_lib_b,
            "speedup": t_lib_b / t_ours_b,
            "max_abs_db": float(np.max(np.abs(ours_b - lib_b_t))),
            "max_relative": _relative(ours_b, lib_b_t),
        },
        "mel_encode_per_clip": {
            "cadenza_s": t_ours_mel,
            "librosa_s": t_lib_mel,
            "speedup": t_lib_mel / t_ours_mel,
            "max_abs_db": max(float(np.max(np.abs(a - b.T))) for a, b in zip(ours_mel, lib_mel)),
            "max_relative": max(_relative(a, b.T) for a, b in zip(ours_mel, lib_mel)),
        },
        "mfcc_encode_per_clip": {
            "cadenza_s": t_ours_mfcc,
            "librosa_s": t_lib_mfcc,
            "speedup": t_lib_mfcc / t_ours_mfcc,
            "max_abs": max(float(np.max(np.abs(a - b.T))) for a, b in zip(ours_mfcc, lib_mfcc_v)),
            "max_relative": max(_relative(a, b.T) for a, b in zip(ours_mfcc, lib_mfcc_v)),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the inversion clip")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=8, help="clips of the extraction batch")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--gl-batch", type=int, default=4, help="clips of the Griffin-Lim batch")
    parser.add_argument("--threads", type=int, default=1, help="threads on both sides")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    audio = chorale_audio(max(args.seconds, args.clips * args.clip_seconds))
    clip = audio[: int(args.seconds * SR)]
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    with threadpool_limits(limits=args.threads):
        inversion = bench_mel_to_audio(clip, args.repeats)
        gl = bench_griffin_lim(clip, args.repeats, args.gl_batch)
        extraction = bench_extraction(audio, args.clips, args.clip_seconds, args.repeats)
    load_after = os.getloadavg()
    busy = load_before[0] > BUSY_LOAD  # after the run, the load includes the benchmark itself
    joint = inversion["rows"]["cadenza_joint"]
    result = {
        "machine": machine(load_before=load_before, load_after=load_after, taken_under_load=busy),
        "threads": args.threads,
        "repeats": args.repeats,
        "mel_to_audio": inversion,
        "griffin_lim": gl,
        "extraction": extraction,
        "goals": {
            "joint_mel_sc_at_most_-25_db": joint["mel_sc_db"] <= -25.0,
            "joint_at_least_5x_librosa": joint["speedup_vs_librosa"] >= 5.0,
            "gl_per_iteration_at_least_2x": gl["per_iteration_speedup"] >= 2.0,
            "gl_32_at_least_3_db_better_than_librosa_32": gl["sc_db"]["cadenza_pghi_32"]
            <= gl["sc_db"]["librosa_32"] - 3.0,
            "gl_32_no_worse_than_librosa_100": gl["sc_db"]["cadenza_pghi_32"] <= gl["sc_db"]["librosa_100"],
            "log_mel_batch_at_least_2x": extraction["log_mel_batch"]["speedup"] >= 2.0,
            "mfcc_at_least_2x": extraction["mfcc_encode_per_clip"]["speedup"] >= 2.0,
        },
        "seconds": time.perf_counter() - t_start,
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"{'mel -> audio, ' + str(inversion['clip_seconds']) + ' s, 32 it':<40}{'s':>8}{'x librosa':>11}{'mel SC dB':>11}"
    )
    for name, row in inversion["rows"].items():
        print(f"{name:<40}{row['seconds']:>8.3f}{row['speedup_vs_librosa']:>11.2f}{row['mel_sc_db']:>11.2f}")
    print(
        f"Griffin-Lim per iteration: cadenza {gl['cadenza_per_iteration_ms']:.1f} ms, librosa "
        f"{gl['librosa_per_iteration_ms']:.1f} ms ({gl['per_iteration_speedup']:.2f}x); linear SC dB: "
        + ", ".join(f"{k} {v:.2f}" for k, v in gl["sc_db"].items())
    )
    b = gl["batch"]
    print(
        f"Griffin-Lim batch of {b['clips']} x {b['clip_seconds']:.1f} s: batched {b['cadenza_batched_s']:.3f} s, "
        f"one by one {b['cadenza_one_by_one_s']:.3f} s, librosa {b['librosa_one_by_one_s']:.3f} s"
    )
    for name, row in extraction.items():
        if isinstance(row, dict):
            diff = row.get("max_abs_db", row.get("max_abs"))
            print(
                f"{name:<24} cadenza {row['cadenza_s'] * 1e3:7.1f} ms, librosa {row['librosa_s'] * 1e3:7.1f} ms, "
                f"{row['speedup']:.2f}x; max abs diff {diff:.2g}, max relative {row['max_relative']:.2g}"
            )
    print(f"goals: {result['goals']}")
    print(
        f"load before {load_before[0]:.2f}, after {load_after[0]:.2f}; {result['seconds']:.0f} s; results in {RESULTS}"
    )
    if busy:
        print(f"WARNING: the load average was {load_before[0]:.2f} before the run: figures taken under load")


if __name__ == "__main__":
    main()
