"""WaveNet generation: cached (and compiled) against naive, side by side in one process.

Two sizes, untrained weights (speed does not depend on them):

* ``paper``: the common WaveNet defaults (5 stacks of dilations 1...512, 32 residual and
  dilation channels, 512 skip channels, 256 classes; receptive field 5117 samples). Samples per
  second at batch 1 of the naive path (the whole receptive field recomputed per sample; only a
  few samples are timed and the rate is per sample), the cached torch path and the compiled
  (numba) cached path. Goal: cached at least 100x naive.
* ``small``: 2 stacks of dilations 1...256, 32 residual and dilation channels, 128 skip
  channels, 256 classes. The real-time factor at 16 kHz (audio seconds per second of compute,
  per stream and for all streams) of cached generation at batch 1 and 16. Goal: real time or
  better at batch 1.

Every timing is the median of ``--repeats``. The naive path starts from a seed of one
receptive field; the cached paths from a one-sample seed (priming the queues with a long seed
is one batched forward pass, paid once per generation, and left out). numba's compilation is
done before timing. torch uses ``--threads``, and the compiled path splits the streams over as
many threads (one stream runs on one). The load average before and after is recorded, and a
run that started under load is marked so (``taken_under_load``). Results go to
benchmarks/results/wavenet_generate.json. Scaling with the number of streams, side by side
with seq2seq and the fft LSTMs: ``benchmarks/generate_streams.py``.

    .venv/bin/python benchmarks/wavenet_generate.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from _machine import load_record, machine, run_as_cadenza

from cadenza.models import DataInfo
from cadenza.models.wavenet import Config, Model

RESULTS = Path(__file__).parent / "results" / "wavenet_generate.json"
SAMPLE_RATE = 16000
GOAL_SPEEDUP = 100.0
GOAL_REALTIME = 1.0
INFO = DataInfo(n_features=1, representation={"name": "waveform", "encoding": "mulaw", "n_classes": 256})


def build(**changes: int) -> Model:
    torch.manual_seed(0)
    return Model(Config.paper(**changes), INFO).eval()


def rate(model: Model, mode: str, batch: int, n_new: int, repeats: int) -> float:
    """Median samples per second per stream of ``mode`` generating ``n_new`` samples.

    The naive path starts from a seed of one receptive field (its per-sample cost is then the
    steady state); the cached paths start from a one-sample seed, whose queues need no priming
    and whose per-sample cost is already the steady state.
    """
    n_seed = model.receptive_field if mode == "naive" else 1
    seed = torch.randint(0, 256, (batch, n_seed), generator=torch.Generator().manual_seed(1))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.sample(seed, n_new, mode=mode)
        times.append(time.perf_counter() - t0)
    return n_new / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive-samples", type=int, default=5)
    p.add_argument("--cached-samples", type=int, default=2000)
    args = p.parse_args()
    run_as_cadenza()
    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    paper, small = build(), build(n_stacks=2, n_layers=9, skip_channels=128)
    for m in (paper, small):
        m.sample(torch.full((1, 4), 128), 4, mode="fast")  # compile (or load numba's cache)
    rows = []
    naive = rate(paper, "naive", 1, args.naive_samples, args.repeats)
    for mode in ("naive", "cached", "fast"):
        r = naive if mode == "naive" else rate(paper, mode, 1, args.cached_samples, args.repeats)
        rows.append(
            {"config": "paper", "mode": mode, "batch": 1, "samples_per_s": r, "speedup_vs_naive": r / naive}
        )
    for batch in (1, 16):
        for mode in ("cached", "fast"):
            r = rate(small, mode, batch, args.cached_samples if mode == "fast" else 500, args.repeats)
            rows.append({
                "config": "small", "mode": mode, "batch": batch, "samples_per_s": r,
                "realtime_per_stream": r / SAMPLE_RATE, "realtime_all_streams": r * batch / SAMPLE_RATE,
            })  # fmt: skip
    result = {
        "benchmark": "wavenet_generate",
        "machine": machine(threads=args.threads, **load_record(load_before)),
        "receptive_field": {"paper": paper.receptive_field, "small": small.receptive_field},
        "sample_rate": SAMPLE_RATE,
        "goals": {"paper_cached_speedup_vs_naive": GOAL_SPEEDUP, "small_realtime_batch1": GOAL_REALTIME},
        "repeats": args.repeats,
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{'config':7} {'mode':7} {'batch':>5} {'samples/s':>11} {'x naive':>9} {'RT/stream':>10} {'RT all':>8}"
    )
    for r in rows:
        print(
            f"{r['config']:7} {r['mode']:7} {r['batch']:>5} {r['samples_per_s']:>11.1f} "
            f"{r.get('speedup_vs_naive', float('nan')):>9.1f} {r.get('realtime_per_stream', float('nan')):>10.3f} "
            f"{r.get('realtime_all_streams', float('nan')):>8.3f}"
        )
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
