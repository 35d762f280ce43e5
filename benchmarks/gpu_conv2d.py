"""fft_conv2d on a GPU: its CNN over K-frame stacks in NCHW against channels-last (NHWC).

``benchmarks/gpu.py`` measured fft_conv2d at 7.2% of the H200's bf16 peak where the other FFT
LSTMs reach 36-47% (issue 14, goal 4: 25%). Its CNN (2 -> 8 -> 16 channels, 3 x 5 kernels over
3 x 4000 stacks) does about a tenth of the step's arithmetic and most of its memory traffic, in
convolutions with too few channels for cuDNN's NCHW kernels. This runs, side by side in one
process on the paper-size model (``fft_conv2d-paper``: 8000 features, hidden 2048, T = 40,
RMSprop, bf16 autocast), the training step and the CNN alone (forward and backward) with
``StackCNN.channels_last`` off (NCHW, the layout before this change) and on (what cadenza now
does on CUDA), at the paper's batch of 16 and at 256, eager and (at 256) ``torch.compile``; it
checks that both layouts give the same loss from the same weights (eval mode, float32).

    python benchmarks/gpu_conv2d.py [--steps 10]      # one GPU, about 2 minutes; results/gpu_conv2d.json

``--dry-run`` (automatic without CUDA) runs the same stages on the CPU at the tiny size in
seconds (both layouts, where channels-last is not applied: the model keeps NCHW on the CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _machine import forward_flops
from gpu import (
    GOAL_MFU,
    LossModule,
    Sizes,
    autocast_bf16,
    batch_for,
    build_on,
    checkout_on_path,
    kernels_off,
    machine_record,
    measured_peak,
    table_peak,
    time_calls,
    train_step,
    wall,
)

RESULTS = Path(__file__).parent / "results" / "gpu_conv2d.json"
LAYOUTS = {"nchw": False, "channels_last": True}


def cnn_time(model: Any, x: torch.Tensor, s: Sizes) -> float:
    """Median seconds of the CNN encoder's forward and backward alone (bf16 autocast)."""
    enc = model.encoder

    def step() -> None:
        with autocast_bf16(x.device.type):
            z = enc(x)
        z.float().sum().backward()

    for _ in range(s.warmup):
        step()
    return statistics.median(time_calls(step, s.steps, s.device))


def same_loss(model: Any, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The loss in eval mode (float32) with each layout, from the same weights."""
    cnn = model.encoder[0]
    model.eval()
    out = {}
    with torch.no_grad():
        for name, on in LAYOUTS.items():
            cnn.channels_last = on
            out[name] = float(model.losses({"x": x, "y": y})["loss"])
    model.train()
    rel = abs(out["nchw"] - out["channels_last"]) / max(abs(out["nchw"]), 1e-12)
    return {"losses": out, "relative_difference": rel, "same": rel < 1e-4}


def run(s: Sizes, peaks: dict, compiled_batches: tuple[int, ...]) -> tuple[list[dict], dict]:
    from cadenza.training.optim import build_optimizer

    rows: list[dict] = []
    check: dict = {}
    with kernels_off(not s.cuda):
        model, cfg = build_on("fft_conv2d", s)
        cnn = model.encoder[0]
        opt = build_optimizer(model.parameters(), cfg.optim)
        for kind, n in s.batches:
            x, y = batch_for(s, n)
            if not check:
                check = same_loss(model, x[:4], y[:4])
                print(f"  same loss in both layouts: {check['same']} (relative difference "
                      f"{check['relative_difference']:.1e})", flush=True)  # fmt: skip
            fwd, _ = forward_flops(model, x)
            model.train()
            flop = 3.0 * fwd
            modes = ["eager"] + (["compiled"] if n in compiled_batches else [])
            for mode in modes:
                for layout, on in LAYOUTS.items():
                    cnn.channels_last = on
                    row: dict[str, Any] = {"batch": n, "batch_kind": kind, "mode": mode, "layout": layout,
                                           "applied": on and s.cuda}  # fmt: skip
                    try:
                        if mode == "compiled":
                            torch._dynamo.reset()
                            fn: Any = torch.compile(
                                LossModule(model), backend=s.compile_backend, dynamic=False
                            )
                            row["compile_s"] = round(
                                wall(lambda f=fn, x=x, y=y: train_step(f, opt, x, y), s.device), 2
                            )
                        else:
                            fn = LossModule(model)
                            row["cnn_fwd_bwd_s"] = cnn_time(model, x, s)
                        for _ in range(s.warmup):
                            train_step(fn, opt, x, y)
                        times = time_calls(lambda f=fn, x=x, y=y: train_step(f, opt, x, y), s.steps, s.device)
                    except Exception as e:  # recorded, and the run goes on
                        row["error"] = f"{type(e).__name__}: {e}"[:500]
                        print(f"  B={n} {mode} {layout}: ERROR {row['error']}", flush=True)
                        rows.append(row)
                        continue
                    median = statistics.median(times)
                    row.update({"step_s": median, "best_step_s": min(times), "tflops": flop / median / 1e12,
                                "mfu": flop / median / peaks["used"],
                                "mfu_vs_measured": flop / median / peaks["measured"]})  # fmt: skip
                    row["goal_met"] = row["mfu"] >= GOAL_MFU
                    cnn_ms = (
                        f"  CNN alone {row['cnn_fwd_bwd_s'] * 1e3:7.2f} ms" if "cnn_fwd_bwd_s" in row else ""
                    )
                    print(f"  B={n:<4} {mode:<8} {layout:<13} {median * 1e3:8.2f} ms/step  "
                          f"MFU {row['mfu']:.1%}{cnn_ms}", flush=True)  # fmt: skip
                    rows.append(row)
        cnn.channels_last = True
    return rows, check


def profile(s: Sizes, top: int = 8) -> dict:
    """Per layout: the ``top`` kernels by device time in one eager step at the large batch."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from cadenza.training.optim import build_optimizer

    out: dict[str, list] = {}
    activity = ProfilerActivity.CUDA if s.cuda else ProfilerActivity.CPU
    with kernels_off(not s.cuda):
        model, cfg = build_on("fft_conv2d", s)
        opt = build_optimizer(model.parameters(), cfg.optim)
        x, y = batch_for(s, s.batches[-1][1])
        fn = LossModule(model)
        for layout, on in LAYOUTS.items():
            model.encoder[0].channels_last = on
            for _ in range(2):
                train_step(fn, opt, x, y)
            with torch_profile(activities=[activity]) as prof:
                train_step(fn, opt, x, y)
                if s.cuda:
                    torch.cuda.synchronize()
            events = [
                e
                for e in prof.key_averages()
                if (e.device_time_total if s.cuda else e.self_cpu_time_total) > 0
            ]
            events.sort(key=lambda e: -(e.device_time_total if s.cuda else e.self_cpu_time_total))
            out[layout] = [{"name": e.key[:120], "ms": round((e.device_time_total if s.cuda else e.self_cpu_time_total) / 1e3, 3),
                            "calls": e.count} for e in events[:top]]  # fmt: skip
            print(f"  top kernels, {layout}:", flush=True)
            for k in out[layout]:
                print(f"    {k['ms']:8.2f} ms  x{k['calls']:<4} {k['name']}", flush=True)
    return out


def main() -> int:
    checkout_on_path()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--large-batch", type=int, default=256)
    p.add_argument(
        "--profile", action="store_true", help="the top kernels of one eager large-batch step per layout"
    )
    args = p.parse_args()
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    dry = args.dry_run or not torch.cuda.is_available()
    if dry:
        s = Sizes(dry_run=True, device=torch.device("cpu"), preset="tiny", n_features=64, seq_len=8,
                  batches=(("paper", 4), ("large", 16)), warmup=1, steps=2, mm_size=256, mm_repeats=2,
                  compile_backend="eager")  # fmt: skip
        torch.set_num_threads(1)
        out_path = args.out or RESULTS.with_name("gpu_conv2d-dryrun.json")
    else:
        s = Sizes(dry_run=False, device=torch.device("cuda", 0), steps=args.steps,
                  batches=(("paper", 16), ("large", args.large_batch)))  # fmt: skip
        torch.backends.cudnn.benchmark = True  # as cadenza's trainer on CUDA
        out_path = args.out or RESULTS
    name = torch.cuda.get_device_name(0) if s.cuda else "cpu"
    measured = measured_peak(s)
    table, pattern = table_peak(name)
    peaks = {"measured": measured, "table": table, "table_pattern": pattern, "used": table or measured}
    print(f"{name}: peak measured {measured / 1e12:.0f} TFLOP/s, used {peaks['used'] / 1e12:.0f}", flush=True)
    rows, check = run(s, peaks, compiled_batches=(s.batches[-1][1],))
    kernels = profile(s) if args.profile else {}
    speedups = {}
    for kind, n in s.batches:
        for mode in ("eager", "compiled"):
            by = {r["layout"]: r for r in rows if r["batch"] == n and r["mode"] == mode and "step_s" in r}
            if len(by) == 2:
                speedups[f"{kind} {mode}"] = by["nchw"]["step_s"] / by["channels_last"]["step_s"]
    result = {
        "benchmark": "gpu_conv2d: fft_conv2d's CNN in NCHW against channels-last, paper size, bf16 autocast",
        "dry_run": dry,
        "sizes": {k: v for k, v in dataclasses.asdict(s).items() if k != "device"},
        "peak": peaks,
        "check": check,
        "rows": rows,
        "speedup_channels_last": speedups,
        "top_kernels": kernels,
        "best_mfu": max((r["mfu"] for r in rows if "mfu" in r), default=None),
        "machine": machine_record(s, load_before),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2))
    for k, v in speedups.items():
        print(f"  channels-last vs NCHW, {k}: {v:.2f}x", flush=True)
    print(f"results in {out_path} ({result['wall_s']} s)", flush=True)
    return 0 if check.get("same", False) and not any("error" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
