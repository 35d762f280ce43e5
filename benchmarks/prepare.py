"""Audio hours prepared per wall-clock minute: `cadenza prepare` against a plain librosa loop.

Both sides read the same folder of 44.1 kHz stereo WAV files (Bach chorales rendered by
FluidSynth, looped to a minute each), resample to the representation's rate and compute
its frames; the librosa side is the straightforward script a user would write
(`librosa.load` then the transform, one file after another). Run side by side in one
process, alternating, best of ``--repeats``. Results go to benchmarks/results/prepare.json.

    .venv/bin/python benchmarks/prepare.py [--files 16] [--seconds 60] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "prepare.json"


def build_corpus(folder: Path, n_files: int, seconds: float) -> float:
    """Render chorales to 44.1 kHz stereo WAVs of ``seconds`` each; returns the hours written."""
    from cadenza.audio import render_midi, write_audio
    from cadenza.data import open_source
    from cadenza.data.scores import read_score

    folder.mkdir(parents=True, exist_ok=True)
    items = list(open_source("music21:chorales").items())[:n_files]
    sr = 44100
    for i, item in enumerate(items):
        y = render_midi(read_score(item.path), sr=sr)
        n = int(seconds * sr)
        y = np.resize(y, n)  # loop the chorale to the wanted length
        stereo = np.stack([y, 0.8 * y], axis=1)
        write_audio(folder / f"piece{i:03d}.wav", stereo, sr)
    return len(items) * seconds / 3600


def librosa_loop(folder: Path, representation: str) -> None:
    import librosa

    for path in sorted(folder.glob("*.wav")):
        if representation == "fft":
            y, sr = librosa.load(path, sr=16000, mono=True)
            n = 4000
            y = np.pad(y, (0, (-len(y)) % n))
            spec = np.fft.fft(y.reshape(-1, n), axis=1)
            frames = np.concatenate([spec.real, spec.imag], axis=1).astype(np.float32)
        else:
            y, sr = librosa.load(path, sr=22050, mono=True)
            mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
            frames = librosa.power_to_db(mel, ref=1.0, top_db=None).T
        np.save(folder.parent / "librosa_out.npy", frames)


def cadenza_prepare(folder: Path, out: Path, representation: str, workers: int) -> None:
    from cadenza.data import prepare_corpus

    shutil.rmtree(out, ignore_errors=True)
    prepare_corpus(str(folder), out, representation=representation, workers=workers, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cadenza-bench-"))
    try:
        hours = build_corpus(tmp / "wav", args.files, args.seconds)
        rows = []
        for rep in ("fft", "mel"):
            best = {"cadenza": np.inf, "librosa": np.inf}
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                librosa_loop(tmp / "wav", rep)
                best["librosa"] = min(best["librosa"], time.perf_counter() - t0)
                t0 = time.perf_counter()
                cadenza_prepare(tmp / "wav", tmp / f"store-{rep}", rep, args.workers)
                best["cadenza"] = min(best["cadenza"], time.perf_counter() - t0)
            row = {
                "representation": rep,
                "hours": round(hours, 4),
                "cadenza_hours_per_min": round(hours / (best["cadenza"] / 60), 3),
                "librosa_hours_per_min": round(hours / (best["librosa"] / 60), 3),
                "speedup": round(best["librosa"] / best["cadenza"], 2),
                "cadenza_seconds": round(best["cadenza"], 2),
                "librosa_seconds": round(best["librosa"], 2),
            }
            rows.append(row)
            print(
                f"{rep:>4}: cadenza {row['cadenza_hours_per_min']:.2f} h/min, librosa loop "
                f"{row['librosa_hours_per_min']:.2f} h/min, speed-up {row['speedup']:.2f}x"
            )
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {
                    "benchmark": "prepare",
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "workers": args.workers,
                    "files": args.files,
                    "seconds_per_file": args.seconds,
                    "results": rows,
                    "date": time.strftime("%Y-%m-%d"),
                },
                indent=2,
            )
            + "\n"
        )
        print(f"results: {RESULTS}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
