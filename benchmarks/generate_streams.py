"""Generation throughput against the number of streams (``--n``), side by side in one process.

Issue 14, goal 1: several clips at once (listening tests, studies, ``--n 5``) should cost far
less than one clip each.

* ``wavenet``: the small config (16 kHz; 2 stacks of dilations 1...256, 32 residual and
  dilation channels, 128 skip channels, 256 classes; untrained weights: speed does not depend
  on them), the default generation path (``generate``: ``mode=fast``, a silent seed of one
  receptive field, temperature 1) at 1 and 16 streams. Samples per second in total and per
  stream, and the real-time factor (audio seconds per second). Goals: 16 streams at least 6x
  the total of one stream; one stream at least 3x real time. Also the arithmetic: FLOPs per
  sample (2 x the weights read per sample), GFLOP/s achieved, and the machine's dense fp32
  rate (a 4096 x 4096 ``torch.mm``, best of before and between the repeats): 16 streams
  cannot go faster than that rate, so ``ceiling_ratio`` (that rate over one stream's GFLOP/s)
  is the most any 16-stream path could reach against the one-stream path measured.
* ``seq2seq`` (tiny: 32 hidden units; paper: 256), ``fft_base`` and ``fft_bilinear`` (tiny:
  128 hidden units; paper: 2048; 8000 features, T = 40 frames, the default ``mode=sliding``):
  ``generate`` at ``--n 1`` and ``--n 8``, new samples (seq2seq) or frames (fft) per second in
  total, seed reading included as ``cadenza generate`` runs it. Goal: ``--n 8`` at least 3x
  the total of ``--n 1``.
* ``wavenet-small-sgemm``: the same WaveNet with every product through scipy's BLAS
  ``sgemm`` (``CADENZA_KERNELS=on``), beside the default (``auto``: each stream count takes
  the faster of ``sgemm`` and the compiled loop's own products, measured on this machine in a
  fresh cache directory; the choices are recorded).
* ``wavenet_products_only``: the small WaveNet's step without its gates, draw and bookkeeping:
  only its products (the compiled loop's ``_mm`` calls, the same shapes, in the same order,
  over the model's own weights), at 1 and 16 streams in the same groups as ``generate``, the
  faster of ``sgemm`` and the loop's own products. ``products_ceiling_ratio`` (16 streams'
  products alone against one stream's whole generation) is what 16 streams could reach if
  everything but the products cost nothing: a tighter ceiling than the dense rate's.

Every figure is the median of ``--repeats`` runs; the runs of all cases and stream counts are
interleaved (one of each, then again), so that a change in the machine's load hits them
alike. Wall-clock rates are the figures; the process's CPU time per output is recorded beside
them. The load average before and after is recorded; a run that started with a 1-minute load
above ``_machine.BUSY_LOAD`` is marked ``taken_under_load`` (ratios taken side by side stay
meaningful but noisy; the absolute rates do not).

    .venv/bin/python benchmarks/generate_streams.py [--threads 2] [--repeats 3] [--sizes tiny,paper]

Results go to benchmarks/results/generate_streams.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _machine import load_record, machine, mm_rate, run_as_cadenza

RESULTS = Path(__file__).parent / "results" / "generate_streams.json"
SAMPLE_RATE = 16000
GOAL_WAVENET = 6.0  # 16 streams against one, total samples per second
GOAL_REALTIME = 3.0  # one WaveNet stream, as a multiple of real time
GOAL_N8 = 3.0  # --n 8 against --n 1, total throughput
FFT_FEATURES, FFT_SEQ_LEN, FFT_FRAME_SECONDS = 8000, 40, 0.25


def wavenet_small() -> Any:
    from cadenza.models import DataInfo
    from cadenza.models.wavenet import Config, Model

    info = DataInfo(n_features=1, representation={"name": "waveform", "encoding": "mulaw", "n_classes": 256})
    torch.manual_seed(0)
    return Model(Config.paper(n_stacks=2, n_layers=9, skip_channels=128), info).eval()


def wavenet_flops_per_sample(model: Any) -> float:
    """Multiply-adds x 2 per generated sample and stream: every weight of the dilated, residual,
    skip and output layers is read once per sample; the input layer is a table lookup (0)."""
    per_sample = sum(
        p.numel() for n, p in model.named_parameters() if p.dim() > 1 and not n.startswith("input_conv")
    )
    return 2.0 * per_sample


def products_only_rate(model: Any, streams: int, groups: int, steps: int, repeats: int) -> dict[str, float]:
    """Samples per second (all streams) of the WaveNet step's products alone: per step and group,
    each layer's two dilated taps, its skip and residual products, then the head's two products in
    chunks of ``wavenet_step.HEAD_STREAMS``, as ``_batched_loop`` calls them. Best of ``repeats``
    runs of ``steps`` steps, the groups side by side in threads; for ``sgemm`` and the loop's own."""
    from concurrent.futures import ThreadPoolExecutor

    import numba
    import numpy as np
    from threadpoolctl import threadpool_limits

    from cadenza.kernels import wavenet_step as ws

    ws.compiled()
    mm, head = ws._mm, ws.HEAD_STREAMS

    @numba.njit(fastmath=True, nogil=True)
    def products(gemm, B, n_steps, L, R, D, S, C, dil, res, skip, h1, h2, x, h, z, s, a, lg):  # type: ignore[no-untyped-def]
        zero, one = np.float32(0.0), np.float32(1.0)
        for _ in range(n_steps):
            for i in range(L):
                mm(gemm, 2 * D, B, R, dil, i * 4 * R * D + 2 * R * D, 2 * D, x, 0, R, zero, h, 0, 2 * D)
                mm(gemm, 2 * D, B, R, dil, i * 4 * R * D, 2 * D, x, 0, R, zero, h, 0, 2 * D)
                mm(gemm, S, B, D, skip, i * D * S, S, z, 0, D, zero if i == 0 else one, s, 0, S)
                if i < L - 1:
                    mm(gemm, R, B, D, res, i * D * R, R, z, 0, D, one, x, 0, R)
            for b0 in range(0, B, head):
                nb = min(head, B - b0)
                mm(gemm, S, nb, S, h1, 0, S, s, b0 * S, S, zero, a, b0 * S, S)
            for b0 in range(0, B, head):
                nb = min(head, B - b0)
                mm(gemm, C, nb, S, h2, 0, C, a, b0 * S, S, zero, lg, b0 * C, C)

    w = model._step_weights(None, 1)
    dil, res, skip, h1, h2 = (w[k].numpy().reshape(-1) for k in (3, 5, 7, 9, 11))
    L, R, D = w[3].shape[0], w[0].shape[1], w[3].shape[2] // 2
    S, C = w[9].shape[0], w[11].shape[1]
    sizes = [round((g + 1) * streams / groups) - round(g * streams / groups) for g in range(groups)]

    def one_group(gemm: int, B: int, n_steps: int) -> None:
        g = np.random.default_rng(B)
        bufs = [(0.01 * g.standard_normal(B * k)).astype(np.float32) for k in (R, 2 * D, D, S, S, C)]
        products(gemm, B, n_steps, L, R, D, S, C, dil, res, skip, h1, h2, *bufs)

    rates = {}
    ways = {"sgemm": ws.blas_sgemm(), "loops": 0} if ws.blas_sgemm() else {"loops": 0}
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(groups) as pool:
        for name, gemm in ways.items():
            list(pool.map(one_group, [gemm] * groups, sizes, [2] * groups))  # compile, warm
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                list(pool.map(one_group, [gemm] * groups, sizes, [steps] * groups))
                best = min(best, time.perf_counter() - t)
            rates[name] = streams * steps / best
    return rates


def registered(key: str, preset: str, **info: Any) -> Any:
    from cadenza.models import DataInfo, get_model_spec
    from cadenza.training.config import load_config

    cfg = load_config(f"{key}-{preset}")
    torch.manual_seed(0)
    return get_model_spec(key).build(cfg.model, DataInfo(**info)).eval()


def generate_once(model: Any, n: int, n_frames: int, n_features: int) -> tuple[float, float]:
    """Wall and process CPU seconds of one ``model.generate`` of ``n`` streams of ``n_frames``.

    ``n_features`` 0: no seed (wavenet then starts from silence, its default); else a seed of
    ``model.n_seed_frames`` frames of noise at a music-like level.
    """
    from cadenza.models import GenerationRequest

    seed = None
    if n_features:
        g = torch.Generator().manual_seed(0)
        seed = (0.1 if n_features == 1 else 1.0) * torch.randn(
            n, model.n_seed_frames, n_features, generator=g
        )
    request = GenerationRequest(n=n, n_frames=n_frames, generator=torch.Generator().manual_seed(1), seed=seed)
    wall, cpu = time.perf_counter(), time.process_time()
    model.generate(request)
    return time.perf_counter() - wall, time.process_time() - cpu


class Case:
    """One model at two stream counts; ``unit`` is what ``n_frames`` counts."""

    def __init__(self, name: str, build: Callable[[], Any], streams: tuple[int, int], n_frames: int,
                 n_features: int, unit: str, seconds_per_unit: float, goal: float,
                 flops: Callable[[Any], float] | None = None, kernels: str = "auto") -> None:  # fmt: skip
        self.name, self.streams, self.n_frames, self.n_features = name, streams, n_frames, n_features
        self.kernels = kernels  # CADENZA_KERNELS while this case runs
        self.unit, self.seconds_per_unit, self.goal = unit, seconds_per_unit, goal
        self.model = build()
        self.flops_per_unit = flops(self.model) if flops is not None else None
        self.times: dict[int, list[tuple[float, float]]] = {n: [] for n in streams}

    def warm_up(self) -> None:
        os.environ["CADENZA_KERNELS"] = self.kernels
        for n in self.streams:  # long enough for auto's probes (wavenet_step.PROBE_SAMPLES)
            generate_once(self.model, n, min(self.n_frames, 64), self.n_features)

    def run(self, n: int) -> None:
        os.environ["CADENZA_KERNELS"] = self.kernels
        self.times[n].append(generate_once(self.model, n, self.n_frames, self.n_features))

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "case": self.name,
            "unit": self.unit,
            "n_frames": self.n_frames,
            "goal": self.goal,
        }
        rates = {}
        for n in self.streams:
            wall = statistics.median(t for t, _ in self.times[n])
            cpu = statistics.median(c for _, c in self.times[n])
            rate = n * self.n_frames / wall
            rates[n] = rate
            out[f"n{n}"] = {
                f"{self.unit}_per_s": rate,
                f"{self.unit}_per_s_per_stream": rate / n,
                f"{self.unit}_per_cpu_s": n * self.n_frames / cpu,
                "realtime_all_streams": rate * self.seconds_per_unit,
                "realtime_per_stream": rate * self.seconds_per_unit / n,
                "seconds": sorted(t for t, _ in self.times[n]),
            }
            if self.flops_per_unit:
                out[f"n{n}"]["gflops"] = rate * self.flops_per_unit / 1e9
        lo, hi = self.streams
        out["ratio"] = rates[hi] / rates[lo]
        out["meets_goal"] = out["ratio"] >= self.goal
        if self.flops_per_unit:
            out["flops_per_unit"] = self.flops_per_unit
        return out


def cases(sizes: list[str], wavenet_samples: int, s2s_samples: int, fft_frames: dict[str, int]) -> list[Case]:
    out = [Case("wavenet-small", wavenet_small, (1, 16), wavenet_samples, 0, "samples", 1 / SAMPLE_RATE,
                GOAL_WAVENET, wavenet_flops_per_sample),
           Case("wavenet-small-sgemm", wavenet_small, (1, 16), wavenet_samples, 0, "samples", 1 / SAMPLE_RATE,
                GOAL_WAVENET, wavenet_flops_per_sample, kernels="on")]  # fmt: skip
    for size in sizes:
        out.append(Case(f"seq2seq-{size}", lambda s=size: registered("seq2seq", s, n_features=1), (1, 8),
                        s2s_samples, 1, "samples", 1 / SAMPLE_RATE, GOAL_N8))  # fmt: skip
        for key in ("fft_base", "fft_bilinear"):
            out.append(Case(
                f"{key}-{size}",
                lambda k=key, s=size: registered(k, s, n_features=FFT_FEATURES, seq_len=FFT_SEQ_LEN),
                (1, 8), fft_frames[size], FFT_FEATURES, "frames", FFT_FRAME_SECONDS, GOAL_N8,
            ))  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", default="tiny,paper", help="seq2seq/fft sizes: tiny, paper or both")
    p.add_argument("--wavenet-samples", type=int, default=16000)
    p.add_argument("--seq2seq-samples", type=int, default=2048)
    p.add_argument("--fft-frames-tiny", type=int, default=40)
    p.add_argument("--fft-frames-paper", type=int, default=8)
    args = p.parse_args()
    run_as_cadenza()
    import tempfile

    from cadenza.kernels import measured, wavenet_step

    cache = tempfile.TemporaryDirectory(prefix="cadenza-bench-")
    os.environ["CADENZA_CACHE"] = cache.name  # the per-machine choices measured afresh, recorded
    load_before = os.getloadavg()
    torch.set_num_threads(args.threads)
    sizes = [s for s in args.sizes.split(",") if s]
    frames = {"tiny": args.fft_frames_tiny, "paper": args.fft_frames_paper}
    todo = cases(sizes, args.wavenet_samples, args.seq2seq_samples, frames)
    for case in todo:
        case.warm_up()  # numba's compilation (or cache), first-call allocations
    mm = [mm_rate()]
    for r in range(args.repeats):
        for case in todo:
            for n in case.streams if r % 2 == 0 else reversed(case.streams):
                case.run(n)
        mm.append(mm_rate())
        print(f"repeat {r + 1}/{args.repeats} done, load {os.getloadavg()[0]:.2f}", flush=True)
    rows = [case.row() for case in todo]
    wavenet = rows[0]
    # The ceiling: at most the machine's dense fp32 rate, measured between the repeats.
    mm_gflops = max(mm) / 1e9
    one = wavenet["n1"]["gflops"]
    wavenet["mm_gflops"] = mm_gflops
    wavenet["n16"]["fraction_of_mm"] = wavenet["n16"]["gflops"] / mm_gflops
    wavenet["ceiling_ratio"] = mm_gflops / one  # 16 streams at the dense rate, against one stream
    # A tighter ceiling: the step's products alone, in the groups that generate uses.
    only = {
        n: products_only_rate(todo[0].model, n, min(args.threads, n), 2000, args.repeats) for n in (1, 16)
    }
    wavenet["products_only_samples_per_s"] = {f"n{n}": rates for n, rates in only.items()}
    wavenet["products_ceiling_ratio"] = max(only[16].values()) / wavenet["n1"]["samples_per_s"]
    wavenet["products_share_at_16"] = wavenet["n16"]["samples_per_s"] / max(only[16].values())
    result = {
        "benchmark": "generate_streams",
        "machine": machine(threads=args.threads, **load_record(load_before)),
        "goals": {
            "wavenet_16_vs_1": GOAL_WAVENET,
            "wavenet_realtime_1_stream": GOAL_REALTIME,
            "n8_vs_n1": GOAL_N8,
        },  # fmt: skip
        "wavenet_realtime_1_stream": wavenet["n1"]["realtime_per_stream"],
        "wavenet_default_vs_sgemm_always": {
            n: wavenet[n]["samples_per_s"] / rows[1][n]["samples_per_s"] for n in ("n1", "n16")
        },
        "repeats": args.repeats,
        "rows": rows,
        "wavenet_products": measured.choices(wavenet_step.TABLE),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{'case':20} {'unit':8} {'n':>3} {'per s':>10} {'per stream':>11} {'per cpu s':>10} {'RT/stream':>9}"
    )
    for row in rows:
        for n in (k for k in row if k.startswith("n") and k[1:].isdigit()):
            f = row[n]
            print(f"{row['case']:20} {row['unit']:8} {n[1:]:>3} {f[row['unit'] + '_per_s']:>10.1f} "
                  f"{f[row['unit'] + '_per_s_per_stream']:>11.1f} {f[row['unit'] + '_per_cpu_s']:>10.1f} "
                  f"{f['realtime_per_stream']:>9.3f}")  # fmt: skip
        print(
            f"{'':20} ratio {row['ratio']:.2f} (goal {row['goal']}){'' if row['meets_goal'] else '  BELOW GOAL'}"
        )
        if "ceiling_ratio" in row:
            print(
                f"{'':20} {row['flops_per_unit'] / 1e3:.0f} kFLOP per sample: {row['n16']['gflops']:.0f} GFLOP/s at 16 "
                f"streams = {row['n16']['fraction_of_mm']:.2f} of the dense fp32 rate ({row['mm_gflops']:.0f} GFLOP/s); "
                f"ratio at that rate: {row['ceiling_ratio']:.2f}"
            )
            print(
                f"{'':20} the products alone at 16 streams: {max(row['products_only_samples_per_s']['n16'].values()):.0f} "
                f"samples/s ({row['products_ceiling_ratio']:.2f}x one stream's generation; generation runs at "
                f"{row['products_share_at_16']:.2f} of it)"
            )
    under = result["machine"]["taken_under_load"]
    print(f"load before {result['machine']['load_before']}, after {result['machine']['load_after']}"
          + ("  (taken under load: rerun on a quiet machine)" if under else ""))  # fmt: skip
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
