"""Training speed with subnormal floats flushed to zero (cadenza's default) against kept.

Training makes subnormal floats (a saturated LSTM gate's derivative, a small gradient squared),
and x86 CPUs take a slow path for each operation on one. ``cadenza.threads.configure`` has the
CPU treat them as zero; ``CADENZA_DENORMALS=keep`` keeps them. This benchmark resumes a trained
run (where the subnormals have appeared: the study's ``runs/fft_fc`` after 8 minutes, say) for
``--steps`` more steps, flushed and kept in turn (``--repeats`` times each, alternating), each
from a copy of the same checkpoint, and reports seconds per step and the ratio. The setting
belongs to each thread and threads inherit it when they start, so each try is its own process
(the cadenza command, as a user runs it), one after the other.

    python benchmarks/denormals.py study/runs/fft_fc study/runs/fft_bilinear

Results go to benchmarks/results/denormals.json with the machine and its load before and after.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _machine  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "denormals.json"


def _train_rows(metrics: Path) -> list[dict[str, str]]:
    with metrics.open() as f:
        return [r for r in csv.DictReader(f) if r.get("split") == "train"]


def one_try(run: Path, steps: int, keep: bool, threads: int) -> float:
    """Seconds per step of ``steps`` more steps of ``run`` (a copy), subnormals kept or flushed."""
    last = int(_train_rows(run / "metrics.csv")[-1]["step"])
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("events.out.tfevents*", "plots"))
        (copy / "metrics.csv").unlink()
        env = dict(os.environ)
        env.pop("CADENZA_DENORMALS", None)
        if keep:
            env["CADENZA_DENORMALS"] = "keep"
        cmd = [sys.executable, "-m", "cadenza", "train", str(copy / "config.yaml"), "--run", str(copy)]
        cmd += [
            "--threads",
            str(threads),
            "--no-progress",
            "train.max_seconds=0",
            f"train.max_steps={last + steps}",
        ]
        cmd += ["train.tensorboard=false", "train.sample_every=0"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"training {run} failed:\n{done.stderr[-2000:]}")
        rows = _train_rows(copy / "metrics.csv")
    return statistics.fmean(float(r["seconds_per_step"]) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", nargs="+", type=Path, help="trained run folders (with metrics.csv and checkpoints)"
    )
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for run in args.runs:
        if not (run / "metrics.csv").is_file() or not (run / "checkpoints" / "last.pt").is_file():
            raise SystemExit(f"{run}: not a trained run (it needs metrics.csv and checkpoints/last.pt)")
    before = os.getloadavg()
    rows = []
    for run in args.runs:
        times: dict[str, list[float]] = {"flushed": [], "kept": []}
        for _ in range(args.repeats):
            for mode in ("kept", "flushed"):
                times[mode].append(one_try(run, args.steps, mode == "kept", args.threads))
                print(f"{run.name} {mode}: {times[mode][-1]:.4f} s/step", flush=True)
        flushed, kept = min(times["flushed"]), min(times["kept"])
        rows.append(
            {
                "run": run.name,
                "steps": args.steps,
                "seconds_per_step": times,
                "speedup": round(kept / flushed, 2),
            }
        )
        print(f"{run.name}: flushed {flushed:.4f} s/step, kept {kept:.4f}: {kept / flushed:.2f}x")
    result = {"machine": _machine.machine(threads=args.threads), **_machine.load_record(before), "rows": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    if result["taken_under_load"]:
        print(f"the machine was busy before the run (load {before[0]:.2f}): the figures are not clean")
    print(f"results in {RESULTS}")


if __name__ == "__main__":
    main()
