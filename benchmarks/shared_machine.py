"""Training and generation beside other busy programs: cadenza's chosen threads against torch's default.

Issue 14, goal 2: with one other CPU-bound single-threaded program running, tiny-model training
and generation of every family keep at least 0.45x of their idle throughput (a fair share of
two cores), and with two others at least 0.25x.

For each family's packaged ``*-tiny`` config (fft_base, seq2seq, wavenet, bilstm_gan, mel_rnn,
mfcc_lstm, mfcc_vae)
on a small store of the embedded corpus (prepared once into ``data/.benchmark_cache/``):

* training: ``Trainer.train_step`` steps per second on a few fixed batches (the packaged
  config; its optimiser, clipping and bookkeeping included);
* generation: generated seconds of music per second of wall time (one sample at a time, for
  at least ``--seconds``), ``synthesize`` (the model's own generation) and the
  representation's ``to_audio`` (inversion or rendering), as ``cadenza generate`` does
  without writing files, from a checkpoint of that training.

Each is measured idle and beside 1 and 2 competing programs (``python -c "while True:
pass"``, each in a session of its own as a program started from another terminal: Linux
shares the CPUs between sessions first). The competitors start once and are paused (SIGSTOP)
and resumed (SIGCONT), so that for each family the three conditions are measured seconds
apart, in ``--repeats`` rounds. Two settings alternate within a condition: ``chosen``
(``cadenza.threads.configure()``, measured afresh with the competitors running: what
``cadenza train`` and ``generate`` do) and ``default`` (torch's default intra-op threads,
what the process started with: cadenza before issue 14). ``train_vs_idle``/``gen_vs_idle``
are the median over the rounds of each round's ratio to its idle figure of the same
setting; ``*_vs_default`` compare the settings in the same condition.

"Idle" is only idle when nothing else runs: the load average before and after, and the CPUs
other programs kept busy before each round (``cadenza.threads.busy_cpus``, ours paused), are
recorded; with more than ``BUSY`` CPUs busy before any round the results are marked
``clean: false`` (figures taken under load, for a rerun on a quiet machine).

It also checks, per family, whether one and two threads give the same bits (three training
steps from the same start; one generation with the same seed): when they do, choosing threads
from the load costs nothing in reproducibility.

Results go to benchmarks/results/shared_machine.json.

    .venv/bin/python benchmarks/shared_machine.py [--families fft_base,wavenet] [--seconds 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).parent / "results" / "shared_machine.json"
CACHE = Path(__file__).resolve().parent.parent / "data" / ".benchmark_cache" / "shared_machine"
#: Other programs keeping more than this many CPUs busy before the idle condition: not clean.
BUSY = 0.3
GOALS = {1: 0.45, 2: 0.25}
COMPETITOR = "while True: pass"


@dataclass(frozen=True)
class Family:
    config: str
    store: str  # a key of STORES
    gen_seconds: float  # length generated per measurement


#: Store key -> (source, representation, parameters, sample rate) of the embedded corpus.
STORES: dict[str, tuple[str, str, dict[str, Any], int | None]] = {
    "fft": ("music21:chorales", "fft", {}, None),
    "rolls": ("music21:chorales", "pianoroll", {"lowest_pitch": 24, "n_pitches": 84}, None),
    "wave": ("music21:bach,corelli", "waveform", {}, 8000),
    "mulaw": ("music21:bach,corelli", "waveform", {"encoding": "mulaw"}, 8000),
    "mel": ("music21:chorales", "mel", {}, None),
    "mfcc": ("music21:chorales", "mfcc", {}, None),
}
#: One tiny model of each family.
FAMILIES = {
    "fft_base": Family("fft_base-tiny", "fft", 4.0),
    "seq2seq": Family("seq2seq-tiny", "wave", 0.25),
    "wavenet": Family("wavenet-tiny", "mulaw", 0.25),
    "bilstm_gan": Family("bilstm_gan-tiny", "rolls", 8.0),
    "mel_rnn": Family("mel_rnn-tiny", "mel", 2.0),
    "mfcc_lstm": Family("mfcc_lstm-tiny", "mfcc", 2.0),
    "mfcc_vae": Family("mfcc_vae-tiny", "mfcc", 2.0),
}
OVERRIDES = ["train.progress=false", "train.tensorboard=false", "train.sample_every=0"]


# ------------------------------------------------------------------ set-up
def store(key: str, max_files: int) -> Path:
    from cadenza.data import prepare_corpus

    source, representation, params, sample_rate = STORES[key]
    out = CACHE / f"{key}-{max_files}"
    prepare_corpus(
        source,
        out,
        representation=representation,
        sample_rate=sample_rate,
        rep_params=dict(params),
        max_files=max_files,
        workers=1,
        progress=False,
    )
    return out


def trainer(fam: Family, data: Path, run: Path) -> Any:
    from cadenza.training.config import load_config
    from cadenza.training.trainer import Trainer

    cfg = load_config(fam.config, OVERRIDES)
    cfg.data.store = str(data)
    return Trainer(cfg, run, device="cpu", restart=True)


def batches(tr: Any, n: int) -> list[Any]:
    tr.sampler.set_epoch(0, 0)
    out = []
    for batch in tr._loader(tr.train_set, tr.sampler, epoch=0):
        out.append(batch)
        if len(out) == n:
            break
    return out


class Bench:
    """One family: a trainer with fixed batches, and a generator from its checkpoint."""

    def __init__(self, name: str, fam: Family, data: Path, root: Path) -> None:
        from cadenza.generation.generator import load_generator

        self.name, self.fam = name, fam
        self.trainer = trainer(fam, data, root / name)
        self.batches = batches(self.trainer, 6)
        self.trainer.model.train()
        for b in self.batches[:2]:
            self.trainer.train_step(b)  # warm-up, and a checkpoint to generate from
            self.trainer.state.step += 1
        self.trainer.save_last()
        self.gen = load_generator(root / name)
        self.i = 0

    def train_rate(self, seconds: float) -> float:
        """Training steps per second over at least ``seconds`` (after one untimed step)."""
        tr = self.trainer
        tr.train_step(self.batches[self.i % len(self.batches)])
        steps, t0 = 0, time.perf_counter()
        while True:
            self.i += 1
            tr.train_step(self.batches[self.i % len(self.batches)])
            steps += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return steps / elapsed

    def generate(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        from cadenza.generation.generator import synthesize

        frames, _ = synthesize(self.gen, n=1, seconds=self.fam.gen_seconds, seed=seed)
        audio = self.gen.representation.to_audio(frames[0], seconds=self.fam.gen_seconds)[0]
        return frames, np.asarray(audio)

    def generate_rate(self, seconds: float) -> float:
        """Generated seconds of music per second of wall time, over at least ``seconds``."""
        n, t0 = 0, time.perf_counter()
        while True:
            self.generate()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return n * self.fam.gen_seconds / elapsed


# ------------------------------------------------------------------ threads
def set_threads(setting: str, default: int) -> dict[str, Any]:
    import torch

    from cadenza import threads

    if setting == "default":
        torch.set_num_threads(default)
        return {"threads": default}
    choice = threads.configure()  # measured now, with the competitors running
    return {"threads": choice.threads, "busy_measured": round(choice.busy or 0.0, 2)}


def same_bits(bench: Bench, data: Path, root: Path) -> dict[str, bool]:
    """Whether 1 and 2 threads give the same bits: 3 training steps from one start; one generation."""
    import torch

    weights, frames, audio = [], [], []
    for n in (1, 2):
        torch.set_num_threads(n)
        tr = trainer(bench.fam, data, root / f"bits-{bench.name}-{n}")
        tr.model.train()
        for b in bench.batches[:3]:
            tr.train_step(b)
            tr.state.step += 1
        weights.append({k: v.clone() for k, v in tr.model.state_dict().items()})
        tr.close()
        f, a = bench.generate(seed=3)
        frames.append(f)
        audio.append(a)
    return {
        "training": all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]),
        "generation_frames": bool(np.array_equal(frames[0], frames[1])),
        "generation_audio": bool(np.array_equal(audio[0], audio[1])),
    }


def competitors(n: int) -> list[subprocess.Popen]:
    # Sessions of their own, as programs started from another terminal: Linux shares the CPUs
    # between sessions first (autogroups), so competitors in ours would take only our share.
    procs = [subprocess.Popen([sys.executable, "-c", COMPETITOR], start_new_session=True) for _ in range(n)]
    time.sleep(0.5 if n else 0.0)  # let them start spinning
    return procs


def pause(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGSTOP)


def resume(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGCONT)
    time.sleep(0.1 if procs else 0.0)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


# ------------------------------------------------------------------ the run
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--competitors", default="0,1,2", help="numbers of competing programs")
    parser.add_argument("--seconds", type=float, default=1.5, help="timed training per measurement")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-files", type=int, default=6)
    parser.add_argument("--no-bits", action="store_true", help="skip the 1-vs-2-thread bits check")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    from _machine import machine, run_as_cadenza

    run_as_cadenza()
    import torch

    from cadenza import threads

    default = torch.get_num_threads()
    load_before = threads.load_average()
    busy_before = threads.busy_cpus(1.0)
    print(f"load before {load_before}, others busy {busy_before:.2f} CPUs; torch default {default} threads")
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    counts = [int(c) for c in args.competitors.split(",")]
    root = Path(tempfile.mkdtemp(prefix="cadenza-shared-"))
    data = {}
    benches = {}
    for name in names:
        fam = FAMILIES[name]
        if fam.store not in data:
            data[fam.store] = store(fam.store, args.max_files)
        torch.set_num_threads(default)
        benches[name] = Bench(name, fam, data[fam.store], root)
        benches[name].generate()  # compile numba loops, warm caches
    bits = {}
    if not args.no_bits:
        for name, b in benches.items():
            bits[name] = same_bits(b, data[b.fam.store], root)
            print(f"{name}: same bits with 1 and 2 threads: {bits[name]}", flush=True)

    rows = []
    others = []  # CPUs other programs kept busy before each round (ours paused)
    rates: dict[tuple[str, int, str], list[float]] = {}
    gens: dict[tuple[str, int, str], list[float]] = {}
    chosen: dict[tuple[str, int], list[int]] = {}
    procs = competitors(max(counts))
    try:
        pause(procs)
        for name, b in benches.items():
            for r in range(args.repeats):
                busy = threads.busy_cpus(0.5)
                others.append(round(busy or 0.0, 2))
                for k in counts:  # the conditions side by side, seconds apart
                    resume(procs[:k])
                    order = ("chosen", "default") if r % 2 == 0 else ("default", "chosen")
                    for setting in order:
                        info = set_threads(setting, default)
                        rates.setdefault((name, k, setting), []).append(b.train_rate(args.seconds))
                        gens.setdefault((name, k, setting), []).append(b.generate_rate(args.seconds))
                        if setting == "chosen":
                            chosen.setdefault((name, k), []).append(info["threads"])
                    pause(procs[:k])
                    print(
                        f"{name:<11} round {r}  {k} competitors  threads {chosen[name, k][-1]}  "
                        + "  ".join(
                            f"{st}: train {rates[name, k, st][-1]:7.2f} steps/s gen {gens[name, k, st][-1]:7.3f} s/s"
                            for st in ("chosen", "default")
                        ),
                        flush=True,
                    )
    finally:
        stop(procs)
    torch.set_num_threads(default)

    def median_ratio(a: list[float], b: list[float]) -> float:
        return round(statistics.median(x / y for x, y in zip(a, b)), 3)

    for name in benches:
        for k in counts:
            for setting in ("chosen", "default"):
                key = (name, k, setting)
                row: dict[str, Any] = {
                    "family": name,
                    "competitors": k,
                    "setting": setting,
                    "threads": chosen[name, k] if setting == "chosen" else default,
                    "train_steps_per_s": [round(x, 3) for x in rates[key]],
                    "gen_seconds_per_s": [round(x, 4) for x in gens[key]],
                }
                if k:
                    idle = (name, 0, setting)
                    row["train_vs_idle"] = median_ratio(rates[key], rates[idle])
                    row["gen_vs_idle"] = median_ratio(gens[key], gens[idle])
                    goal = GOALS.get(k)
                    if goal is not None:
                        row["goal"] = goal
                        row["meets_goal"] = row["train_vs_idle"] >= goal and row["gen_vs_idle"] >= goal
                if setting == "chosen":
                    other = (name, k, "default")
                    row["train_vs_default"] = median_ratio(rates[key], rates[other])
                    row["gen_vs_default"] = median_ratio(gens[key], gens[other])
                rows.append(row)

    summary = {
        name: {
            f"{r['competitors']}_competitors": {
                "threads": r["threads"],
                "train_vs_idle": r["train_vs_idle"],
                "gen_vs_idle": r["gen_vs_idle"],
                "meets_goal": r.get("meets_goal"),
                "train_vs_default": r["train_vs_default"],
                "gen_vs_default": r["gen_vs_default"],
            }
            for r in rows
            if r["family"] == name and r["setting"] == "chosen" and r["competitors"]
        }
        for name in benches
    }
    load_after = threads.load_average()
    clean = bool(others) and max(others) <= BUSY
    if not clean:
        print(
            f"WARNING: other programs kept up to {max(others, default=float('nan'))} CPUs busy before a round: "
            "figures taken under load (rerun on a quiet machine)",
            flush=True,
        )
    result = {
        "benchmark": "shared_machine",
        "machine": machine(torch_default_threads=default, cpus=threads.available_cpus().describe()),
        "goals": {f"{k}_competitors_vs_idle": g for k, g in GOALS.items()},
        "measures": {
            "train_steps_per_s": "Trainer.train_step on fixed batches of the packaged tiny config",
            "gen_seconds_per_s": "generated seconds of music per wall second: synthesize + to_audio",
        },
        "clean": clean,
        "busy_threshold": BUSY,
        "load_before": [round(x, 2) for x in load_before] if load_before else None,
        "load_after": [round(x, 2) for x in load_after] if load_after else None,
        "others_busy_before": round(busy_before or 0.0, 2),
        "others_busy_before_each_round": others,
        "same_bits_1_vs_2_threads": bits,
        "seconds_per_measurement": args.seconds,
        "repeats": args.repeats,
        "summary_chosen": summary,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
