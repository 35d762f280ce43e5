"""Seq2Seq generation: the mixture head's draw, side by side in one process.

Seq2Seq generates one audio sample per decoder step, so the cost of each step's draw sets the
speed of generation. Three ways of generating the same model size, interleaved:

* ``mse``: the paper's regressor head (no draw: the prediction is the sample);
* ``mdn-naive``: the mixture head (8 Gaussians), each step drawn by
  :func:`cadenza.models.mixture.sample_mixture` (a uniform and a normal per call, the
  component by inverse CDF, advanced indexing), the path before the draws were written out;
* ``mdn``: the mixture head as it generates now (the round's Gumbel and normal values drawn up
  front, the component by Gumbel-max, one gather).

Samples per second in total at ``--n 1`` and ``--n 8`` (untrained weights: speed does not depend
on them), medians of ``--repeats`` interleaved runs; the load average before and after, and
``taken_under_load`` when the 1-minute load was above ``_machine.BUSY_LOAD`` at the start.

    .venv/bin/python benchmarks/seq2seq_draw.py [--threads 2] [--repeats 5] [--sizes tiny,paper]

Results go to benchmarks/results/seq2seq_draw.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
from pathlib import Path
from typing import Any

import torch
from _machine import load_record, machine, run_as_cadenza
from generate_streams import generate_once

RESULTS = Path(__file__).parent / "results" / "seq2seq_draw.json"
WAYS = ("mse", "mdn-naive", "mdn")


def build(preset: str, way: str) -> Any:
    from cadenza.models import DataInfo, get_model_spec
    from cadenza.training.config import load_config

    cfg = load_config(f"seq2seq-{preset}", [f"model.head={'mse' if way == 'mse' else 'mdn'}"])
    torch.manual_seed(0)
    model = get_model_spec("seq2seq").build(cfg.model, DataInfo(n_features=1)).eval()
    if way == "mdn-naive":  # a sample_mixture call per step (Model.draw) instead of the written-out draws
        model._step_draws = lambda n, n_steps, temperature, generator, device: functools.partial(
            model.draw, temperature=temperature, generator=generator
        )
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sizes", default="tiny,paper")
    p.add_argument("--samples", type=int, default=4096)
    args = p.parse_args()
    run_as_cadenza()
    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    sizes = [s for s in args.sizes.split(",") if s]
    models = {(s, w): build(s, w) for s in sizes for w in WAYS}
    streams = (1, 8)
    times: dict[tuple[str, str, int], list[float]] = {(s, w, n): [] for s, w in models for n in streams}
    for model in models.values():  # warm-up: first-call allocations
        for n in streams:
            generate_once(model, n, 256, 1)
    for r in range(args.repeats):
        for (s, w), model in models.items():
            for n in streams if r % 2 == 0 else reversed(streams):
                times[s, w, n].append(generate_once(model, n, args.samples, 1)[0])
        print(f"repeat {r + 1}/{args.repeats} done, load {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for s in sizes:
        row: dict[str, Any] = {"size": s}
        for w in WAYS:
            for n in streams:
                row[f"{w}_n{n}_samples_per_s"] = n * args.samples / statistics.median(times[s, w, n])
        for n in streams:
            row[f"mdn_vs_naive_n{n}"] = row[f"mdn_n{n}_samples_per_s"] / row[f"mdn-naive_n{n}_samples_per_s"]
            row[f"mdn_vs_mse_n{n}"] = row[f"mdn_n{n}_samples_per_s"] / row[f"mse_n{n}_samples_per_s"]
        row["mdn_n8_vs_n1"] = row["mdn_n8_samples_per_s"] / row["mdn_n1_samples_per_s"]
        rows.append(row)
    result = {
        "benchmark": "seq2seq_draw",
        "machine": machine(threads=args.threads, **load_record(load_before)),
        "samples": args.samples,
        "repeats": args.repeats,
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'size':6} {'way':10} {'n=1 /s':>10} {'n=8 /s':>10}")
    for row in rows:
        for w in WAYS:
            print(
                f"{row['size']:6} {w:10} {row[f'{w}_n1_samples_per_s']:>10.0f} {row[f'{w}_n8_samples_per_s']:>10.0f}"
            )
        print(f"{'':6} mdn vs naive: {row['mdn_vs_naive_n1']:.2f}x (n=1), {row['mdn_vs_naive_n8']:.2f}x (n=8); "
              f"mdn vs mse: {row['mdn_vs_mse_n1']:.2f}x, {row['mdn_vs_mse_n8']:.2f}x; mdn n8/n1 {row['mdn_n8_vs_n1']:.2f}x")  # fmt: skip
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
