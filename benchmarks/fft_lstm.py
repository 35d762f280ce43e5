"""Paper-size training throughput and generation speed of the frequency-domain LSTMs (paper 000).

Everything runs side by side in one process on the same machine:

``train``
    One training step of each model at the paper's size (8000 features, hidden 2048, B = 16,
    T = 40, RMSprop with its paper config, dropout on): ``zero_grad; losses; backward; step``,
    after one warm-up step, the best of ``--steps`` (paired with the best matrix-multiply rate;
    the median is recorded too). The models are timed in rounds, one step of each per round
    with a matrix-multiply measurement between rounds, so that all see the same moments of a
    shared machine. Throughput is B x T frames per second.
    Achieved FLOP/s is an analytic FLOP count over the best step time, as a fraction of the
    best dense rate (4096 x 4096 fp32: ``torch.mm``, measured before the rounds and after each,
    or oneDNN's linear after them, whichever is higher: oneDNN's is twice MKL's on an AMD EPYC,
    and cadenza's products take it there).
    Two counts are reported: *model FLOPs*, the usual 3 x forward (every matrix product once
    forward, once for its weight gradient, once for its input gradient), and *executed
    FLOPs*, which leaves out the input gradient of the layer that reads the data, since
    autograd never computes it. The goal (model FLOPs, the brief's convention): at least 0.85
    for fft_base, fft_fc, fft_bilinear and fft_stacked.
``vs_torch``
    Each paper-size model's training step with cadenza's kernels as a user gets them
    (``CADENZA_KERNELS=auto``: each LSTM layer the faster of the fused layer and PyTorch's,
    measured on this machine, :mod:`cadenza.kernels.lstm_choice`), with the fused LSTM always
    (``on``), and as plain PyTorch (``off``: ``nn.LSTM``, ``nn.Dropout``,
    ``torch.optim.RMSprop``) on the same model, weights and batch, the three steps in rotating
    order so that all see the same moments of a shared machine; best and median of ``--steps``
    each, and the LSTM choices made. Goal (issue
    14): at least 1.8x for every model. Also the machine's dense rate (``torch.mm``, before and
    after each model) and nn.LSTM's model FLOP/s as a fraction of it: a step that does the same
    FLOPs cannot beat the dense rate, so ``ceiling_speedup`` (the better of MKL's and oneDNN's
    dense rates over nn.LSTM's) bounds what any kernel could reach.
``optimizer``
    One RMSprop update of fft_base's paper-size parameters (99 M) with weight decay: PyTorch's
    ``torch.optim.RMSprop`` against cadenza's fused one-pass update, best of 5 interleaved.
``generate``
    10 s of audio (40 frames) from the paper-size bilinear model after a 40-frame seed, as a
    real-time factor (seconds of compute per second of audio; below 1 is faster than real
    time): the sliding window (cadenza's pipelined windows), the stateful mode, and for
    reference the sliding window computed the plain way (the whole model over the window for
    every frame). Goal: sliding window faster than real time. One sample, and five at once
    (the listening test's batch; the factor is then per second of audio of all five).

Like ``cadenza train``, the script re-runs itself under tcmalloc where it is installed (see
``cadenza/_malloc.py``; ``CADENZA_MALLOC=system`` for glibc's allocator). Results go to
benchmarks/results/fft_lstm.json.

    .venv/bin/python benchmarks/fft_lstm.py [--steps 3] [--models fft_base,fft_fc,...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from pathlib import Path

import torch
from _machine import build, forward_flops, load_record, machine, mm_rate, run_as_cadenza

RESULTS = Path(__file__).parent / "results" / "fft_lstm.json"
BATCH, SEQ_LEN, N_FEATURES, FRAME_RATE = 16, 40, 8000, 4.0
MODELS = ("fft_base", "fft_fc", "fft_conv1d", "fft_conv2d", "fft_bilinear", "fft_stacked")
GOAL_FRACTION = 0.85
GOAL_MODELS = ("fft_base", "fft_fc", "fft_bilinear", "fft_stacked")
GOAL_VS_TORCH = 1.8


class TrainBench:
    """One paper-size model, its optimiser and a fixed batch, ready to time one step at a time."""

    def __init__(self, key: str, preset: str = "paper") -> None:
        from cadenza.training.optim import build_optimizer

        self.key = key
        self.model, cfg = build(key, preset=preset)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.opt = build_optimizer(self.model.parameters(), cfg.optim)
        g = torch.Generator().manual_seed(0)
        frames = torch.randn(BATCH, SEQ_LEN + 1, N_FEATURES, generator=g)
        self.batch = {"x": frames[:, :-1], "y": frames[:, 1:]}
        self.fwd, self.first = forward_flops(self.model, self.batch["x"])
        self.model.train()
        self.times: list[float] = []
        self.step(timed=False)  # warm-up (allocates gradients and optimiser state)

    def step(self, timed: bool = True) -> None:
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        self.model.losses(self.batch)["loss"].backward()
        self.opt.step()
        if timed:
            self.times.append(time.perf_counter() - t0)

    def row(self) -> dict:
        seconds = min(self.times)  # paired with the best matrix-multiply rate: both are best-of
        fwd, first = self.fwd, self.first
        return {
            "model": self.key,
            "params_m": round(self.n_params / 1e6, 1),
            "step_s": round(seconds, 3),
            "median_step_s": round(statistics.median(self.times), 3),
            "frames_per_s": round(BATCH * SEQ_LEN / seconds, 1),
            "model_gflop_per_step": round(3 * fwd / 1e9, 1),
            "executed_gflop_per_step": round((3 * fwd - first) / 1e9, 1),
            "model_gflops": round(3 * fwd / seconds / 1e9, 1),
            "executed_gflops": round((3 * fwd - first) / seconds / 1e9, 1),
            "step_times_s": [round(t, 3) for t in self.times],
        }


def bench_train(keys: list[str], steps: int) -> tuple[list[dict], list[float]]:
    """All models side by side: each round measures the matmul rate, then one step of every
    model, so that every model sees the same moments of a shared machine."""
    benches = [TrainBench(key) for key in keys]
    mm = [mm_rate()]
    for r in range(steps):
        for bench in benches:
            bench.step()
        mm.append(mm_rate())
        print(
            f"  round {r + 1}/{steps}: " + ", ".join(f"{b.key} {b.times[-1]:.2f} s" for b in benches),
            flush=True,
        )
    return [b.row() for b in benches], mm


MODES = ("auto", "on", "off")  # CADENZA_KERNELS: the default, the fused LSTM always, plain PyTorch


def bench_vs_torch(keys: list[str], steps: int, preset: str = "paper") -> list[dict]:
    """Each model's step with the kernels as they are by default (``auto``: each LSTM layer the
    faster of the fused layer and PyTorch's, measured here), with the fused LSTM always (``on``)
    and off, in rotating order on the same model and batch. The choices are measured afresh
    (a temporary cache directory per model) and recorded."""
    import tempfile

    from cadenza.kernels import ENV_VAR, lstm_choice

    rows = []
    cache = tempfile.TemporaryDirectory(prefix="cadenza-bench-")
    for key in keys:
        os.environ["CADENZA_CACHE"] = os.path.join(cache.name, key)  # each model's choices its own
        mm = mm_rate()  # the machine's dense rate at this moment: no step can beat it
        bench = TrainBench(key, preset)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for r in range(steps):
            for mode in MODES[r % 3 :] + MODES[: r % 3]:
                os.environ[ENV_VAR] = mode
                if not times[mode]:
                    bench.step(timed=False)  # warm-up of this path (auto: measures its choices)
                bench.times = []
                bench.step()
                times[mode] += bench.times
        os.environ[ENV_VAR] = "auto"
        best = {m: min(t) for m, t in times.items()}
        median = {m: statistics.median(t) for m, t in times.items()}
        row = {
            "model": key,
            "kernels_step_s": round(best["auto"], 3),
            "fused_step_s": round(best["on"], 3),
            "torch_step_s": round(best["off"], 3),
            "speedup": round(best["off"] / best["auto"], 2),
            "median_speedup": round(median["off"] / median["auto"], 2),
            "fused_speedup": round(best["off"] / best["on"], 2),
            "kernels_gflops": round(3 * bench.fwd / best["auto"] / 1e9, 1),
            "torch_gflops": round(3 * bench.fwd / best["off"] / 1e9, 1),
            "lstm_paths": lstm_choice.choices(),
        }
        # nn.LSTM's model FLOP/s against the dense rate: the speed-up any kernel doing the same
        # FLOPs could reach at most is the dense rate over nn.LSTM's.
        mm = max(mm, mm_rate())
        onednn = max(mm_rate(onednn=True), mm_rate(onednn=True))
        row["mm_gflops"] = round(mm / 1e9, 1)
        row["onednn_mm_gflops"] = round(onednn / 1e9, 1)
        row["torch_fraction_of_mm"] = round(row["torch_gflops"] * 1e9 / mm, 3)
        # the most any path doing nn.LSTM's FLOPs could reach: the better dense rate over nn.LSTM's
        row["ceiling_speedup"] = round(max(mm, onednn) / 1e9 / row["torch_gflops"], 2)
        row["goal_met"] = row["speedup"] >= GOAL_VS_TORCH
        print(f"  {key}: default (auto) {row['kernels_step_s']:.2f} s, fused {row['fused_step_s']:.2f} s, "
              f"nn.LSTM {row['torch_step_s']:.2f} s -> {row['speedup']:.2f}x (median "
              f"{row['median_speedup']:.2f}x; fused always {row['fused_speedup']:.2f}x); nn.LSTM at "
              f"{row['torch_fraction_of_mm']:.2f} of MKL's dense rate ({row['mm_gflops']:.0f} GFLOP/s; "
              f"oneDNN's {row['onednn_mm_gflops']:.0f}): "
              f"at most {row['ceiling_speedup']:.2f}x", flush=True)  # fmt: skip
        rows.append(row)
        lstm_choice.forget()
        del bench
        gc.collect()
    cache.cleanup()
    return rows


def bench_optimizer(repeats: int = 5) -> dict:
    """One RMSprop update of fft_base's paper-size parameters: torch's against cadenza's fused one."""
    from cadenza.kernels.rmsprop import RMSprop

    model, cfg = build("fft_base")
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    kwargs = {"lr": cfg.optim.lr, "alpha": cfg.optim.alpha, "eps": cfg.optim.eps, "weight_decay": 1e-4}
    opts = {"torch": torch.optim.RMSprop(params, **kwargs), "fused": RMSprop(params, **kwargs)}
    times: dict[str, list[float]] = {name: [] for name in opts}
    for opt in opts.values():
        opt.step()  # state allocation (and numba's compilation)
    for _ in range(repeats):
        for name, opt in opts.items():
            t0 = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    best = {name: min(t) for name, t in times.items()}
    return {
        "params_m": round(sum(p.numel() for p in params) / 1e6, 1),
        "weight_decay": kwargs["weight_decay"],
        "torch_s": round(best["torch"], 4),
        "fused_s": round(best["fused"], 4),
        "speedup": round(best["torch"] / best["fused"], 2),
    }


def bench_generate(n: int, seconds: float, plain: bool) -> list[dict]:
    from cadenza.models import GenerationRequest

    model, _ = build("fft_bilinear")
    model.eval()
    n_frames = int(seconds * FRAME_RATE)
    seed = torch.randn(n, model.n_seed_frames, N_FEATURES, generator=torch.Generator().manual_seed(0))
    rows = []
    modes = ["sliding", "stateful"] + (["sliding (plain)"] if plain else [])
    for mode in ("sliding", "stateful"):  # warm-up: the first call measures the kernels' choices
        model.generate(GenerationRequest(n=n, n_frames=2, generator=torch.Generator(), seed=seed,
                                         options={"mode": mode}))  # fmt: skip
    for mode in modes:
        request = GenerationRequest(
            n=n,
            n_frames=n_frames,
            generator=torch.Generator(),
            seed=seed,
            options={"mode": mode.split()[0]},
        )
        t0 = time.perf_counter()
        if mode == "sliding (plain)":
            with torch.no_grad():
                window = seed
                for _ in range(n_frames):
                    y, _ = model(window)
                    window = torch.cat([window[:, 1:], y[:, -1:]], 1)
        else:
            model.generate(request)
        elapsed = time.perf_counter() - t0
        rows.append(
            {
                "model": "fft_bilinear",
                "mode": mode,
                "n": n,
                "audio_s": seconds,
                "compute_s": round(elapsed, 3),
                "rtf": round(elapsed / (seconds * n), 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7, help="timed training steps (rounds) per model")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seconds", type=float, default=10.0, help="audio generated per measurement")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain sliding-window reference")
    parser.add_argument("--only-vs-torch", action="store_true", help="only the kernels-vs-nn.LSTM comparison")
    parser.add_argument(
        "--preset", default="paper", choices=("paper", "tiny"),
        help="the models' size for --only-vs-torch (results to fft_lstm_vs_torch[_tiny].json)",
    )  # fmt: skip
    args = parser.parse_args()
    run_as_cadenza()
    t_start = time.perf_counter()
    keys = [k.strip() for k in args.models.split(",")]
    load_before = os.getloadavg()
    if args.preset != "paper" and not args.only_vs_torch:
        parser.error("--preset applies to --only-vs-torch")
    vs_torch = bench_vs_torch(keys, max(args.steps, 4), args.preset)
    gc.collect()
    if args.only_vs_torch:
        suffix = "" if args.preset == "paper" else f"_{args.preset}"
        path = RESULTS.with_name(f"fft_lstm_vs_torch{suffix}.json")
        path.write_text(json.dumps({"machine": machine(**load_record(load_before)), "preset": args.preset,
                                    "vs_torch": vs_torch, "goal": f">= {GOAL_VS_TORCH}x"}, indent=2) + "\n")  # fmt: skip
        print(f"results in {path}")
        return
    train_rows, mm = bench_train(keys, args.steps)
    gc.collect()  # free the models
    # the dense rate: the better of MKL's (torch.mm) and oneDNN's, which cadenza.kernels.linear
    # uses where it is the faster (twice MKL's on an AMD EPYC, where MKL runs its AVX2 path)
    mkl_mm, onednn_mm = max(mm), max(mm_rate(onednn=True) for _ in range(2))
    best_mm = max(mkl_mm, onednn_mm)
    for row in train_rows:
        row["model_fraction"] = round(row["model_gflops"] * 1e9 / best_mm, 3)
        row["executed_fraction"] = round(row["executed_gflops"] * 1e9 / best_mm, 3)
        row["goal_met"] = row["model_fraction"] >= GOAL_FRACTION if row["model"] in GOAL_MODELS else None
    optimizer = bench_optimizer()
    gc.collect()
    gen_rows = bench_generate(1, args.seconds, not args.no_plain) + bench_generate(5, args.seconds, False)
    result = {
        "benchmark": "paper 000 frequency-domain LSTMs at paper size: training throughput, generation speed",
        "goals": {
            "train_model_flop_fraction": f">= {GOAL_FRACTION} for {', '.join(GOAL_MODELS)}",
            "generate": "sliding window faster than real time (rtf < 1)",
            "vs_torch": f"training step >= {GOAL_VS_TORCH}x the same model on nn.LSTM (issue 14)",
        },
        "machine": machine(**load_record(load_before)),
        "shape": {"batch": BATCH, "seq_len": SEQ_LEN, "n_features": N_FEATURES, "hidden": 2048},
        "mm_gflops": {
            "best": round(best_mm / 1e9, 1),
            "mkl_best": round(mkl_mm / 1e9, 1),
            "mkl_all": [round(r / 1e9, 1) for r in mm],
            "onednn_best": round(onednn_mm / 1e9, 1),
        },
        "train": train_rows,
        "vs_torch": vs_torch,
        "optimizer": optimizer,
        "generate": gen_rows,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"dense matmul reference: {best_mm / 1e9:.1f} GFLOP/s (MKL's best of {len(mm)}: "
          f"{mkl_mm / 1e9:.1f}, oneDNN's {onednn_mm / 1e9:.1f})")  # fmt: skip
    print(f"allocator: {result['machine']['allocator']}")
    header = (
        f"{'model':<14}{'params M':>9}{'s/step':>8}{'frames/s':>10}{'GFLOP/s':>9}"
        f"{'of mm':>7}{'exec. of mm':>12}{'goal':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in train_rows:
        goal = {True: "met", False: "MISS", None: "-"}[r["goal_met"]]
        print(
            f"{r['model']:<14}{r['params_m']:>9.1f}{r['step_s']:>8.2f}{r['frames_per_s']:>10.1f}"
            f"{r['model_gflops']:>9.1f}{r['model_fraction']:>7.2f}{r['executed_fraction']:>12.2f}{goal:>6}"
        )
    print(
        f"RMSprop update of {optimizer['params_m']} M parameters: torch {optimizer['torch_s']:.3f} s, "
        f"cadenza's fused {optimizer['fused_s']:.3f} s ({optimizer['speedup']:.1f}x)"
    )
    print()
    header = f"{'generation (fft_bilinear)':<28}{'n':>3}{'audio s':>9}{'compute s':>11}{'RTF':>7}"
    print(header)
    print("-" * len(header))
    for r in gen_rows:
        print(f"{r['mode']:<28}{r['n']:>3}{r['audio_s']:>9.1f}{r['compute_s']:>11.2f}{r['rtf']:>7.3f}")
    print(f"goals: {result['goals']}; results in {RESULTS} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
