"""fft_conv2d's training step on the CPU: its CNN in NCHW against channels-last (cadenza's layout).

fft_conv2d reads, at every step, a stack of K FFT frames as a K x N image of 2 channels (real,
imaginary) and convolves it with a few channels (2 and 4 at the tiny size, 8 and 16 at paper
size). oneDNN's NCHW kernels for so few channels are slow; in channels-last (NHWC) memory the
same convolutions run several times faster, and the stacks can be built in that layout from the
frames directly. This benchmark trains the same model (same weights, same batches) for
``--steps`` steps in each layout in turn, ``--repeats`` times alternating, in one process, and
reports seconds per step, the ratio, and the first step's loss in each layout (the same
arithmetic: equal to float rounding).

    python benchmarks/fft_conv2d_cpu.py                       # tiny and paper size
    python benchmarks/fft_conv2d_cpu.py --presets tiny --steps 5
    CADENZA_MALLOC=system python benchmarks/fft_conv2d_cpu.py --presets tiny \
        --out benchmarks/results/fft_conv2d_cpu_glibc.json     # under glibc's malloc

It runs under tcmalloc where installed, as the cadenza command does; under glibc's allocator
the NCHW step is about three times slower (its larger temporaries are page-faulted in afresh
every step), so the layout matters most there.

Results go to benchmarks/results/fft_conv2d_cpu.json (``--out`` elsewhere) with the machine and
its load before and after; a figure taken on a busy machine says so.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _machine  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "fft_conv2d_cpu.json"
LAYOUTS = {"nchw": False, "channels_last": True}


def make_step(model, batch_size: int, seq_len: int, n_features: int, seed: int = 0):
    """One RMSprop training step of ``model`` on a fixed random batch (T + K - 1 input frames)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, seq_len + model.n_context, n_features, generator=g)
    y = torch.randn(batch_size, seq_len, n_features, generator=g)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-4)

    def step() -> float:
        pred, _ = model(x, n_context=model.n_context)
        loss = F.mse_loss(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def measure(preset: str, steps: int, repeats: int, batch_size: int | None) -> dict:
    import torch

    model, cfg = _machine.build("fft_conv2d", preset=preset)
    cnn = model.encoder[0]
    bs = int(batch_size or cfg.data.batch_size)
    seq_len, n_features = 40, 8000
    first_loss = {}
    for name, on in LAYOUTS.items():  # the same weights, batch and dropout masks: the same first loss
        cnn.channels_last = on
        step = make_step(copy.deepcopy(model), bs, seq_len, n_features)
        torch.manual_seed(1)
        first_loss[name] = step()
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    models = {name: copy.deepcopy(model) for name in LAYOUTS}
    steps_of = {}
    for name, on in LAYOUTS.items():
        models[name].encoder[0].channels_last = on
        steps_of[name] = make_step(models[name], bs, seq_len, n_features)
        steps_of[name]()  # warm-up: oneDNN picks its kernels
    for _ in range(repeats):
        for name in LAYOUTS:
            t0 = time.perf_counter()
            for _ in range(steps):
                steps_of[name]()
            times[name].append((time.perf_counter() - t0) / steps)
            print(f"{preset} {name}: {times[name][-1]:.4f} s/step", flush=True)
    best = {name: min(v) for name, v in times.items()}
    rel = abs(first_loss["nchw"] - first_loss["channels_last"]) / max(abs(first_loss["nchw"]), 1e-12)
    return {
        "preset": preset,
        "batch_size": bs,
        "seq_len": seq_len,
        "n_features": n_features,
        "cnn_channels": list(cnn.cnn[0].weight.shape[:1]) + list(cnn.cnn[3].weight.shape[:1]),
        "steps": steps,
        "seconds_per_step": times,
        "best_seconds_per_step": best,
        "speedup_channels_last": round(best["nchw"] / best["channels_last"], 2),
        "first_loss": first_loss,
        "first_loss_rel_diff": rel,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,paper", help="comma-separated: tiny, paper")
    parser.add_argument("--steps", type=int, default=10, help="steps per try (default 10)")
    parser.add_argument("--paper-steps", type=int, default=2, help="steps per try at paper size (default 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: each config's own")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    _machine.run_as_cadenza()
    import torch

    from cadenza.threads import configure

    configure(args.threads)
    before = os.getloadavg()
    rows = []
    for preset in args.presets.split(","):
        steps = args.paper_steps if preset == "paper" else args.steps
        row = measure(preset, steps, args.repeats, args.batch_size)
        rows.append(row)
        print(
            f"{preset}: NCHW {row['best_seconds_per_step']['nchw']:.4f} s/step, channels-last "
            f"{row['best_seconds_per_step']['channels_last']:.4f}: {row['speedup_channels_last']:.2f}x "
            f"(first loss differs by {row['first_loss_rel_diff']:.1e})",
            flush=True,
        )
    result = {
        "benchmark": "fft_conv2d_cpu: fft_conv2d's training step, CNN in NCHW against channels-last",
        "machine": _machine.machine(threads=torch.get_num_threads()),
        **_machine.load_record(before),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if result["taken_under_load"]:
        print(f"the machine was busy before the run (load {before[0]:.2f}): the figures are not clean")
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
