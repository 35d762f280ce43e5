"""Audio hours prepared per wall-clock minute: `cadenza prepare` against a plain librosa loop.

Every audio representation (fft, mel, mfcc, waveform as floats and as mu-law classes) on every
format users have: WAV 44.1 kHz stereo 16-bit, FLAC, OGG Vorbis and MP3 (where this libsndfile
writes it). The music: Bach chorales from music21's corpus rendered by FluidSynth, looped to
``--seconds`` each, in stereo (the right channel at 0.8 of the left); the files are kept in
``data/.benchmark_cache/`` (gitignored).

The librosa side is the straightforward script a user would write: one file after another in
one process, ``librosa.load(path, sr=sr, mono=True)`` (soxr_hq, as cadenza), the transform with
the representation's parameters (its defaults), ``np.save`` of the frames:

=========  ===================================================================================
fft        numpy's FFT of 4000-sample blocks at 16 kHz, real then imaginary (librosa has none)
mel        ``power_to_db(melspectrogram(n_fft=2048, hop_length=512, n_mels=128), ref=1.0,
           top_db=None)`` at 22.05 kHz
mfcc       ``librosa.feature.mfcc(n_mfcc=20)`` at 22.05 kHz (librosa's defaults, top_db=80)
waveform   the samples at 16 kHz, float32
mulaw      ``librosa.mu_compress(y, mu=255)`` at 16 kHz, as uint8 classes
=========  ===================================================================================

The cadenza side is ``prepare_corpus(folder, out, representation, workers=--workers)``: the
complete store of ``cadenza prepare`` (shards, manifest, statistics, meta), written afresh.
Each row also has the CPU seconds each side used while timed (the librosa loop's BLAS may use
both cores; cadenza's include its workers').

Each measurement runs in a fresh Python process, as a script or the command would. The librosa
loop is timed after ``import librosa`` and a warm-up transform of one second of audio (its
imports, a second or so, are not counted); prepare after ``import cadenza.data.prepare``, with
its workers' start-up and imports counted (they are part of the command's time). The sides
alternate, best of ``--repeats``. The piano roll is left out: its input is MIDI or MusicXML,
not audio, no librosa loop computes its bar-aligned roll, and its time is score parsing.

``profile`` splits prepare's work per file, single-threaded, in CPU seconds per hour of audio:
decoding (to float32 mono), resampling, the transform, writing the shard, and a worker's
start-up (imports and first transform, once per worker); and the librosa side's
``librosa.load`` and transform (with its ``np.save``). From it, ``steady_speedup``: the
librosa loop's CPU per hour over cadenza's per-file CPU per hour shared by the workers, the
speed-up a long corpus approaches on idle cores (start-up and the store's statistics aside).

Load: the 1-minute load average before and after, and before each cell the processes of others
that are running (``procs_running`` of /proc/stat, sampled for half a second, less this one).
A load average above ``BUSY_LOAD`` before the run, or others running above it before a cell,
marks the figures as taken under load: not clean, for a rerun on a quiet machine.
Results go to benchmarks/results/prepare.json (``--out``).

    .venv/bin/python benchmarks/prepare.py [--files 24] [--seconds 120] [--workers 2] [--repeats 2]
        [--formats wav,flac,ogg,mp3] [--representations fft,mel,mfcc,waveform,mulaw]
        [--profile-only | --no-profile] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).parent / "results" / "prepare.json"
CACHE = Path(__file__).resolve().parent.parent / "data" / ".benchmark_cache"
#: A 1-minute load average above this (on 2 cores) means something else was running.
BUSY_LOAD = 0.7
#: The goal of issue 12, on 2 cores (whose limit is 2x).
GOAL_SPEEDUP = 1.8

#: Representation name in this benchmark -> (cadenza representation, its parameters).
REPRESENTATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "fft": ("fft", {}),
    "mel": ("mel", {}),
    "mfcc": ("mfcc", {}),
    "waveform": ("waveform", {}),
    "mulaw": ("waveform", {"encoding": "mulaw"}),
}
#: Format -> (extension, libsndfile format, subtype).
FORMATS = {
    "wav": ("wav", "WAV", "PCM_16"),
    "flac": ("flac", "FLAC", "PCM_16"),
    "ogg": ("ogg", "OGG", "VORBIS"),
    "mp3": ("mp3", "MP3", "MPEG_LAYER_III"),
}
SOURCE_SR = 44100


def representation(name: str) -> Any:
    from cadenza.representations import make_representation

    rep, params = REPRESENTATIONS[name]
    return make_representation(rep, **params)


# ------------------------------------------------------------------ the music
def writable_formats(wanted: list[str]) -> list[str]:
    import soundfile as sf

    return [f for f in wanted if sf.check_format(FORMATS[f][1], FORMATS[f][2])]


def build_corpus(n_files: int, seconds: float, formats: list[str]) -> Path:
    """``n_files`` chorales of ``seconds`` each in every format, cached; returns the folder of folders."""
    import soundfile as sf

    root = CACHE / f"prepare-{n_files}x{seconds:g}s"
    missing = [f for f in formats if not (root / f / ".complete").exists()]
    if not missing:
        return root
    from cadenza.audio import render_midi
    from cadenza.data import open_source
    from cadenza.data.scores import read_score

    items = list(open_source("music21:chorales").items())[:n_files]
    for fmt in missing:
        shutil.rmtree(root / fmt, ignore_errors=True)
        (root / fmt).mkdir(parents=True)
    for i, item in enumerate(items):
        y = render_midi(read_score(item.path), sr=SOURCE_SR)
        y = np.resize(y, int(seconds * SOURCE_SR))  # loop the chorale to the wanted length
        stereo = np.stack([y, 0.8 * y], axis=1)
        for fmt in missing:
            ext, container, subtype = FORMATS[fmt]
            path = root / fmt / f"piece{i:03d}.{ext}"
            with sf.SoundFile(path, "w", SOURCE_SR, 2, subtype, format=container) as f:
                for b in range(0, len(stereo), 1 << 15):  # libsndfile's Vorbis encoder crashes on big writes
                    f.write(stereo[b : b + (1 << 15)])
    for fmt in missing:
        (root / fmt / ".complete").touch()
    return root


def audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".wav", ".flac", ".ogg", ".mp3"))


# ------------------------------------------------------------------ the two sides (run in a fresh process)
def librosa_transform(name: str) -> tuple[int, Any]:
    """(rate, frames from samples) of the librosa script, with the representation's parameters."""
    import librosa

    rep = representation(name)
    if name == "fft":
        n = rep.block_size

        def fft(y: np.ndarray) -> np.ndarray:
            y = np.pad(y, (0, (-len(y)) % n))
            spec = np.fft.fft(y.reshape(-1, n), axis=1)
            return np.concatenate([spec.real, spec.imag], axis=1).astype(np.float32)

        return rep.sample_rate, fft
    if name == "mel":

        def mel(y: np.ndarray) -> np.ndarray:
            power = librosa.feature.melspectrogram(
                y=y, sr=rep.sample_rate, n_fft=rep.n_fft, hop_length=rep.hop_length, n_mels=rep.n_mels
            )
            return librosa.power_to_db(power, ref=1.0, amin=rep.amin, top_db=None).T

        return rep.sample_rate, mel
    if name == "mfcc":

        def mfcc(y: np.ndarray) -> np.ndarray:
            return librosa.feature.mfcc(
                y=y,
                sr=rep.sample_rate,
                n_mfcc=rep.n_mfcc,
                n_fft=rep.n_fft,
                hop_length=rep.hop_length,
                n_mels=rep.n_mels,
            ).T

        return rep.sample_rate, mfcc
    if name == "waveform":
        return rep.sample_rate, lambda y: y[:, None]
    if name == "mulaw":
        mu = rep.n_classes - 1
        return rep.sample_rate, lambda y: (
            librosa.mu_compress(y, mu=mu, quantize=True) + (mu + 1) // 2
        ).astype(np.uint8)[:, None]
    raise ValueError(name)


def measure_librosa(name: str, folder: Path, out: Path) -> tuple[float, float]:
    import librosa

    sr, transform = librosa_transform(name)
    warm = librosa.resample(np.zeros(SOURCE_SR, np.float32), orig_sr=SOURCE_SR, target_sr=sr)
    transform(warm)  # librosa's lazy imports and first-call set-up are not counted
    files = audio_files(folder)
    out.mkdir(parents=True, exist_ok=True)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    for path in files:
        y, _ = librosa.load(path, sr=sr, mono=True)
        np.save(out / f"{path.stem}.npy", transform(y))
    return time.perf_counter() - t0, _cpu_seconds() - cpu0


def measure_cadenza(name: str, folder: Path, out: Path, workers: int) -> tuple[float, float]:
    from cadenza.data.prepare import prepare_corpus

    rep, params = REPRESENTATIONS[name]
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    prepare_corpus(str(folder), out, representation=rep, rep_params=params, workers=workers, progress=False)
    return time.perf_counter() - t0, _cpu_seconds() - cpu0


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the pool's workers, once joined)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure_main(args: argparse.Namespace) -> None:
    """``--measure SIDE``: one timing in this fresh process, printed as a JSON line."""
    folder, out = Path(args.folder), Path(args.store)
    shutil.rmtree(out, ignore_errors=True)
    if args.measure == "librosa":
        seconds, cpu = measure_librosa(args.rep, folder, out)
    else:
        seconds, cpu = measure_cadenza(args.rep, folder, out, args.workers)
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


def run_measure(side: str, name: str, folder: Path, out: Path, workers: int) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", side, "--rep", name]
    cmd += ["--folder", str(folder), "--store", str(out), "--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{side} {name} on {folder} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return result


# ------------------------------------------------------------------ where prepare's time goes
def profile_main(args: argparse.Namespace) -> None:
    """``--profile-format FOLDER``: CPU seconds per hour of audio per stage, printed as JSON."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # as in a worker
    from pathlib import Path as P

    import librosa

    from cadenza.audio import io as audio_io
    from cadenza.data.store import atomic_save_npy

    clock = time.process_time
    files = audio_files(P(args.folder))
    reps = {name: representation(name) for name in args.representations.split(",")}
    rates = sorted({rep.sample_rate for rep in reps.values()})
    transforms = {name: librosa_transform(name)[1] for name in reps}
    for name, rep in reps.items():  # first-call set-up is the start-up's, not the files'
        rep.encode(np.zeros(rep.sample_rate, np.float32))
        transforms[name](np.zeros(rep.sample_rate, np.float32))
    librosa.resample(np.zeros(SOURCE_SR, np.float32), orig_sr=SOURCE_SR, target_sr=rates[0])
    cpu: dict[str, float] = {}

    def add(key: str, t0: float) -> None:
        cpu[key] = cpu.get(key, 0.0) + clock() - t0

    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            t0 = clock()
            y, sr = audio_io.read_audio(path)  # decoding, mixed to mono float32
            add("decode", t0)
            seconds += len(y) / sr
            for rate in rates:
                t0 = clock()
                z = audio_io._resample(y, sr, rate, "soxr_hq")
                np.clip(z, -1.0, 1.0, out=z)
                add(f"resample to {rate}", t0)
                for name, rep in reps.items():
                    if rep.sample_rate != rate:
                        continue
                    t0 = clock()
                    frames = np.ascontiguousarray(rep.encode(z), dtype=rep.dtype)
                    add(f"encode {name}", t0)
                    t0 = clock()
                    atomic_save_npy(P(tmp) / "shard.npy", frames)
                    add(f"write {name}", t0)
                    t0 = clock()
                    np.save(P(tmp) / "librosa.npy", transforms[name](z))
                    add(f"librosa {name}", t0)
                t0 = clock()
                librosa.load(path, sr=rate, mono=True)
                add(f"librosa.load at {rate}", t0)
    hours = seconds / 3600
    print(json.dumps({k: round(v / hours, 3) for k, v in cpu.items()}))


def startup_main(args: argparse.Namespace) -> None:
    """``--startup REP``: a worker's imports and first transform, CPU seconds, printed as JSON."""
    t0 = time.process_time()
    import cadenza.data.prepare  # noqa: F401  what a spawned worker imports before its first file
    from cadenza.audio import read_audio  # noqa: F401

    t1 = time.process_time()
    rep = representation(args.startup)
    rep.encode(np.zeros(rep.sample_rate, np.float32))
    t2 = time.process_time()
    print(json.dumps({"import": round(t1 - t0, 3), "first_encode": round(t2 - t1, 3)}))


def run_json(*extra: str) -> dict[str, Any]:
    """Run this script with ``extra`` in a fresh process with one thread per library, as a worker."""
    from cadenza.data.prepare import _THREAD_ENV

    env = {**os.environ, **dict.fromkeys(_THREAD_ENV, "1")}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *extra], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"{extra} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ load
def others_running(seconds: float = 0.5, samples: int = 10) -> float:
    """Processes of others running right now: /proc/stat's ``procs_running`` less this one, averaged."""
    try:
        counts = []
        for _ in range(samples):
            with open("/proc/stat") as f:
                for line in f:
                    if line.startswith("procs_running"):
                        counts.append(int(line.split()[1]) - 1)
            time.sleep(seconds / samples)
        return float(np.mean(counts)) if counts else float("nan")
    except OSError:
        return float("nan")


# ------------------------------------------------------------------ the run
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--representations", default=",".join(REPRESENTATIONS))
    parser.add_argument("--no-profile", action="store_true", help="skip the per-stage profile")
    parser.add_argument("--profile-only", action="store_true", help="only the per-stage profile (CPU time)")
    parser.add_argument("--out", default=str(RESULTS), help="where the results go")
    # One measurement in a fresh process (internal).
    parser.add_argument("--measure", choices=("librosa", "cadenza"), help=argparse.SUPPRESS)
    parser.add_argument("--profile-format", help=argparse.SUPPRESS)
    parser.add_argument("--startup", help=argparse.SUPPRESS)
    parser.add_argument("--rep", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure_main(args)
    if args.profile_format:
        args.folder = args.profile_format
        return profile_main(args)
    if args.startup:
        return startup_main(args)

    from _machine import machine

    load_before = os.getloadavg()
    started = time.perf_counter()
    names = args.representations.split(",")
    unknown = [n for n in names if n not in REPRESENTATIONS]
    if unknown:
        parser.error(f"unknown representations {unknown}; choose from {list(REPRESENTATIONS)}")
    wanted = args.formats.split(",")
    formats = writable_formats(wanted)
    left_out = {f: "this libsndfile cannot write it" for f in wanted if f not in formats}
    left_out["pianoroll"] = (
        "MIDI/MusicXML input, not audio: no librosa loop computes its bar-aligned roll, "
        "and its time is score parsing"
    )
    print(
        "librosa side: librosa.load(path, sr=..., mono=True) + the transform + np.save, one file "
        "after another in one process, imports warm; cadenza side: prepare_corpus(..., "
        f"workers={args.workers}) in a fresh process, workers' start-up counted. Best of {args.repeats}.",
        flush=True,
    )
    if load_before[0] > BUSY_LOAD:
        print(
            f"WARNING: load average {load_before[0]:.2f} before the run: figures taken under load", flush=True
        )
    root = build_corpus(args.files, args.seconds, formats)
    hours = args.files * args.seconds / 3600
    tmp = Path(tempfile.mkdtemp(prefix="cadenza-bench-"))
    rows = []
    try:
        for fmt in formats if not args.profile_only else []:
            folder = root / fmt
            for name in names:
                others = others_running()
                load_cell = os.getloadavg()[0]
                best = {"cadenza": np.inf, "librosa": np.inf}
                cpu = {"cadenza": np.inf, "librosa": np.inf}
                for _ in range(args.repeats):
                    for side in ("librosa", "cadenza"):
                        r = run_measure(side, name, folder, tmp / side, args.workers)
                        if r["seconds"] < best[side]:
                            best[side], cpu[side] = r["seconds"], r["cpu"]
                others_after = others_running()
                clean = load_before[0] <= BUSY_LOAD and max(others, others_after) <= BUSY_LOAD
                row = {
                    "format": fmt,
                    "representation": name,
                    "hours": round(hours, 4),
                    "cadenza_hours_per_min": round(hours / (best["cadenza"] / 60), 3),
                    "librosa_hours_per_min": round(hours / (best["librosa"] / 60), 3),
                    "speedup": round(best["librosa"] / best["cadenza"], 2),
                    "cadenza_seconds": round(best["cadenza"], 3),
                    "librosa_seconds": round(best["librosa"], 3),
                    "cadenza_cpu_seconds": round(cpu["cadenza"], 3),
                    "librosa_cpu_seconds": round(cpu["librosa"], 3),
                    "load_before": round(load_cell, 2),
                    "load_after": round(os.getloadavg()[0], 2),
                    "others_running": round(max(others, others_after), 2),
                    "clean": clean,
                }
                rows.append(row)
                flag = "" if clean else f"  [UNDER LOAD: others running {row['others_running']:.1f}]"
                print(
                    f"{fmt:>4} {name:>8}: cadenza {row['cadenza_hours_per_min']:6.2f} h/min, librosa loop "
                    f"{row['librosa_hours_per_min']:6.2f} h/min, speed-up {row['speedup']:.2f}x{flag}",
                    flush=True,
                )
        profile: dict[str, Any] = {}
        if not args.no_profile:
            startup = {name: run_json("--startup", name) for name in names}
            per_format = {
                fmt: run_json("--profile-format", str(root / fmt), "--representations", ",".join(names))
                for fmt in formats
            }
            profile = {
                "unit": "CPU seconds per hour of audio, one thread; startup: CPU seconds per worker",
                "per_format": per_format,
                "worker_startup": startup,
            }
            steady = {}
            for fmt, stages in per_format.items():
                print(f"profile {fmt}: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
                for name in names:
                    sr = representation(name).sample_rate
                    ours = stages["decode"] + stages[f"resample to {sr}"]
                    ours += stages[f"encode {name}"] + stages[f"write {name}"]
                    theirs = stages[f"librosa.load at {sr}"] + stages[f"librosa {name}"]
                    steady[f"{fmt}/{name}"] = round(theirs / (ours / args.workers), 2)
            profile["steady_speedup"] = steady
            print(
                "steady-state speed-up from the profile: "
                + ", ".join(f"{k} {v:.2f}x" for k, v in steady.items())
            )
            for name, s in startup.items():
                print(
                    f"worker start-up {name}: imports {s['import']:.2f} s, first transform {s['first_encode']:.2f} s"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    clean = load_before[0] <= BUSY_LOAD and all(r["clean"] for r in rows)
    if args.profile_only:
        print(f"load before {load_before[0]:.2f}, after {load_after[0]:.2f}; profile only: nothing written")
        return
    result = {
        "benchmark": "prepare",
        "compares": "librosa.load(path, sr, mono=True) + the librosa transform + np.save, one file after "
        "another in one process (imports warm), against prepare_corpus with --workers processes "
        "in a fresh process (workers' start-up counted); best of --repeats",
        "goal_speedup": GOAL_SPEEDUP,
        "machine": machine(
            load_before=[round(x, 2) for x in load_before],
            load_after=[round(x, 2) for x in load_after],
            taken_under_load=not clean,
        ),
        "clean": clean,
        "workers": args.workers,
        "files": args.files,
        "seconds_per_file": args.seconds,
        "source": f"{SOURCE_SR} Hz stereo, Bach chorales rendered by FluidSynth",
        "left_out": left_out,
        "results": rows,
        "profile": profile,
        "seconds": round(time.perf_counter() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    below = [f"{r['format']}/{r['representation']}" for r in rows if r["speedup"] < GOAL_SPEEDUP]
    print(f"load before {load_before[0]:.2f}, after {load_after[0]:.2f}; results: {out}")
    if below:
        print(f"below {GOAL_SPEEDUP}x: {', '.join(below)}")
    if not clean:
        print("WARNING: taken under load (others were running): not clean figures; rerun on a quiet machine")


if __name__ == "__main__":
    main()
