"""On one GPU (or several): bf16 training MFU of paper 000's FFT LSTMs, WaveNet generation with
CUDA graphs, and one DDP step. Issue 14, goal 4.

Stages, in this order (the compiled training cases last, after ``ddp``, while the time budget lasts):

``peak``
    The GPU's dense bf16 rate: measured (best of a few ``torch.mm`` of 8192 x 8192 bf16
    matrices) and the datasheet's, by device name (H100 SXM and H200 989e12, H100 PCIe 756e12,
    H100 NVL 835e12, A100 312e12, L4 121e12; the measured rate where the name is not in the
    table). Measured again at the end; the better of the two is kept.
``train``
    One training step of each paper-000 FFT LSTM (fft_base, fft_fc, fft_bilinear, fft_stacked,
    fft_conv1d, fft_conv2d) at the paper's size (``<key>-paper`` config: 8000 features, hidden
    2048, T = 40, RMSprop, dropout on): ``zero_grad``, forward and loss under
    ``torch.autocast("cuda", dtype=torch.bfloat16)``, ``backward``, ``step``; timed with CUDA
    events after warm-up (median and best of ``--steps``). Two batches: the paper's 16
    (``batch_kind`` ``paper``; tiny for a GPU, bound by the 40 sequential LSTM steps) and
    ``--large-batch`` (256, ``large``; fills the GPU better). Model FLOPs are 3 x the analytic
    forward count (``_machine.forward_flops``, as ``fft_lstm.py``); MFU is achieved FLOP/s over
    the table's peak (``mfu``, the goal's) and over the measured one (``mfu_vs_measured``).
    Each case runs eager and, time allowing, through ``torch.compile`` of the loss, forward
    and backward (inductor; ``nn.LSTM`` stays eager behind a graph break; the optimiser step
    stays torch's foreach RMSprop), at the batches ``--compile`` names. Goal:
    MFU >= 25% (the best case of each model is reported).
``wavenet``
    Generation with the small WaveNet of ``generate_streams.py`` (16 kHz; 2 stacks of
    dilations 1...256, 32 residual and dilation channels, 128 skip channels, 256 classes;
    untrained weights) at 1 and 16 streams, samples per second per stream: the model's own
    eager incremental generation (``Model.sample(mode="cached")``, its default on a GPU until 2026-12-04)
    against the same step with its state in static buffers (the layers' queues updated in
    place, the time step a device tensor), ``--steps-per-graph`` samples captured in one
    ``torch.cuda.CUDAGraph`` and replayed (``graph``); and that step compiled by
    ``torch.compile`` (inductor, one graph: its gates and draw fused into fewer kernels)
    captured the same way (``graph_compiled``, in the first half of ``--budget-s``). Every
    timing includes priming the queues from a seed of one receptive field. Recorded for
    reference: the step uncaptured, numba's ``mode=fast`` on a CPU copy of the model
    (``cpu_fast``), and ``Model.sample``'s default ``mode=fast`` with the model on the GPU
    (``default``: numba's step on the host CPU, with the copies to and from the device).
    Check: ``graph`` draws the same classes as the eager path with the same logits,
    ``graph_compiled`` and ``default`` the same classes (fixed uniform draws, temperature 1,
    256 samples). Goal: a graph whose check passes >= 3x eager at both stream counts.
``ddp``
    With more than one GPU: one process per GPU (``torch.multiprocessing.spawn``, NCCL over
    ``tcp://127.0.0.1``), one fft_base paper-size step under DDP (the paper's batch of 16 per
    GPU, a different batch on each rank); the step time (slowest rank's median) and whether
    the gradients and the updated parameters agree across ranks (while the ranks' local
    gradients, taken under ``no_sync``, differ). Skipped, with the reason, on one GPU.

The results are written after every stage (``complete`` is false until the last), and the
script exits 1 when a stage failed or a check did not pass (``problems``). Run on a GPU
machine (one command, under 5 minutes on one H200; writes benchmarks/results/gpu.json):

    python benchmarks/gpu.py [--steps 10] [--compile large|both|none] [--budget-s 270]

``--dry-run`` (automatic when no CUDA device is present) runs every stage on the CPU at tiny
sizes (the tiny configs over 64 features, a few steps and samples, bf16 autocast on the CPU
with cadenza's CPU kernels off so the LSTMs are ``nn.LSTM`` as on CUDA, ``torch.compile``
with the ``eager`` backend, the graph stage's step without capture, DDP over gloo with 2
processes) in well under a minute, and writes the same JSON shape to
benchmarks/results/gpu-dryrun.json (gitignored) unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import math
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from _machine import build, forward_flops, load_record, machine
from torch import nn

RESULTS = Path(__file__).parent / "results" / "gpu.json"
DRY_RUN_RESULTS = RESULTS.with_name("gpu-dryrun.json")
MODELS = ("fft_base", "fft_fc", "fft_bilinear", "fft_stacked", "fft_conv1d", "fft_conv2d")
GOAL_MFU = 0.25
GOAL_GRAPH_SPEEDUP = 3.0
#: Dense (no sparsity) bf16 FLOP/s by device name: the first pattern found in the name wins.
PEAK_BF16 = (
    (r"H100.*PCIe", 756e12),
    (r"H100.*NVL", 835e12),
    (r"H100", 989e12),
    (r"H200", 989e12),
    (r"A100", 312e12),
    (r"\bL4\b", 121e12),
)
SAMPLE_RATE = 16000


@dataclasses.dataclass
class Sizes:
    """Everything a run's size decides: the real GPU run's or the CPU dry-run's."""

    dry_run: bool
    device: torch.device
    preset: str = "paper"
    n_features: int = 8000
    seq_len: int = 40
    batches: tuple[tuple[str, int], ...] = (("paper", 16), ("large", 256))
    warmup: int = 3
    steps: int = 10
    mm_size: int = 8192
    mm_repeats: int = 10
    compile_backend: str = "inductor"
    compile_kinds: tuple[str, ...] = ("large",)
    streams: tuple[int, ...] = (1, 16)
    wavenet_samples: int = 2048
    wavenet_compile: bool = True
    check_samples: int = 256
    steps_per_graph: int = 16
    repeats: int = 3
    ddp_world: int = 0
    ddp_backend: str = "nccl"
    ddp_steps: int = 5
    budget_s: float = 270.0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def dry_run_sizes(args: argparse.Namespace) -> Sizes:
    return Sizes(
        dry_run=True,
        device=torch.device("cpu"),
        preset="tiny",
        n_features=64,
        seq_len=8,
        batches=(("paper", 4), ("large", 16)),
        warmup=1,
        steps=3,
        mm_size=256,
        mm_repeats=3,
        compile_backend="eager",
        compile_kinds=compile_kinds(args.compile),
        wavenet_samples=48,
        wavenet_compile=not args.no_wavenet_compile,
        check_samples=48,
        steps_per_graph=8,
        repeats=1,
        ddp_world=0 if args.no_ddp else 2,
        ddp_backend="gloo",
        ddp_steps=2,
        budget_s=args.budget_s,
    )


def gpu_sizes(args: argparse.Namespace) -> Sizes:
    return Sizes(
        dry_run=False,
        device=torch.device("cuda", 0),
        batches=(("paper", 16), ("large", args.large_batch)),
        steps=args.steps,
        compile_kinds=compile_kinds(args.compile),
        wavenet_samples=args.wavenet_samples,
        wavenet_compile=not args.no_wavenet_compile,
        steps_per_graph=args.steps_per_graph,
        ddp_world=0 if args.no_ddp else torch.cuda.device_count(),
        budget_s=args.budget_s,
    )


def compile_kinds(choice: str) -> tuple[str, ...]:
    return {"none": (), "large": ("large",), "both": ("paper", "large")}[choice]


@contextlib.contextmanager
def kernels_off(on_cpu: bool) -> Iterator[None]:
    """cadenza's CPU kernels off on the CPU (the LSTMs then run as ``nn.LSTM``, as on CUDA; the
    fused CPU LSTM does not take bf16 autocast); nothing changes on CUDA."""
    from cadenza.kernels import ENV_VAR

    before = os.environ.get(ENV_VAR)
    if on_cpu:
        os.environ[ENV_VAR] = "off"
    try:
        yield
    finally:
        if on_cpu:
            if before is None:
                os.environ.pop(ENV_VAR, None)
            else:
                os.environ[ENV_VAR] = before


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], n: int, device: torch.device) -> list[float]:
    """Seconds of each of ``n`` calls of ``fn``: CUDA events on a GPU, the wall clock on the CPU."""
    if device.type == "cuda":
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)
        ]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) / 1e3 for start, end in events]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def wall(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn`` with the device's queue drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- peak
def measured_peak(s: Sizes) -> float:
    """Best bf16 FLOP/s of ``s.mm_repeats`` dense ``torch.mm`` of ``s.mm_size`` squared matrices."""
    n = s.mm_size
    a = torch.randn(n, n, device=s.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=s.device, dtype=torch.bfloat16)
    out = torch.empty(n, n, device=s.device, dtype=torch.bfloat16)
    torch.mm(a, b, out=out)
    times = time_calls(lambda: torch.mm(a, b, out=out), s.mm_repeats, s.device)
    return 2.0 * n**3 / min(times)


def table_peak(name: str) -> tuple[float | None, str | None]:
    for pattern, flops in PEAK_BF16:
        if re.search(pattern, name):
            return flops, pattern
    return None, None


# ----------------------------------------------------------------------------- train
class LossModule(nn.Module):
    """The training loss as a module's forward: what ``torch.compile`` and DDP wrap (DDP only
    synchronises gradients of work that went through its own forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model.losses({"x": x, "y": y})["loss"]


def autocast_bf16(device_type: str) -> contextlib.AbstractContextManager:
    """bf16 autocast; on a CPU whose oneDNN has no bf16 LSTM (AVX2), with nn.LSTM in float32."""
    from cadenza.kernels.lstm import bf16_autocast

    return bf16_autocast(device_type)


def train_step(loss_fn: Callable, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    with autocast_bf16(x.device.type):
        loss = loss_fn(x, y)
    loss.backward()
    opt.step()


def build_on(key: str, s: Sizes) -> tuple[nn.Module, Any]:
    model, cfg = build(key, s.seq_len, preset=s.preset, n_features=s.n_features)
    return model.to(s.device), cfg


def batch_for(s: Sizes, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=s.device).manual_seed(seed)
    frames = torch.randn(n, s.seq_len + 1, s.n_features, device=s.device, generator=g)
    return frames[:, :-1], frames[:, 1:]


def bench_model(key: str, s: Sizes, modes: dict[str, list[str]], peaks: dict) -> list[dict]:
    """Rows of one model: for each batch kind, each mode in ``modes[kind]`` (eager, compiled)."""
    from cadenza.training.optim import build_optimizer

    model, cfg = build_on(key, s)
    n_params = sum(p.numel() for p in model.parameters())
    opt = build_optimizer(model.parameters(), cfg.optim)
    lstm_dtypes: list[str] = []
    hook = model.lstm.register_forward_hook(lambda m, i, o: lstm_dtypes.append(str(o[0].dtype)))
    rows = []
    for kind, n in s.batches:
        if not modes.get(kind):
            continue
        x, y = batch_for(s, n)
        fwd, _ = forward_flops(model, x)
        model.train()
        flop = 3.0 * fwd
        for mode in modes[kind]:
            row: dict[str, Any] = {"model": key, "params_m": round(n_params / 1e6, 1), "batch": n,
                                   "batch_kind": kind, "mode": mode, "dtype": "bfloat16 autocast"}  # fmt: skip
            try:
                if mode == "compiled":
                    torch._dynamo.reset()
                    loss_fn: Callable = torch.compile(
                        LossModule(model), backend=s.compile_backend, dynamic=False
                    )
                    row["compile_backend"] = s.compile_backend
                    row["compile_s"] = round(
                        wall(lambda f=loss_fn, o=opt, x=x, y=y: train_step(f, o, x, y), s.device), 2
                    )
                else:
                    loss_fn = LossModule(model)
                for _ in range(s.warmup):
                    train_step(loss_fn, opt, x, y)
                lstm_dtypes.clear()
                times = time_calls(
                    lambda f=loss_fn, o=opt, x=x, y=y: train_step(f, o, x, y), s.steps, s.device
                )
            except torch.OutOfMemoryError as e:
                row["skipped"] = f"out of memory: {str(e).splitlines()[0]}"
                print(f"  {key} B={n} {mode}: {row['skipped']}", flush=True)
                rows.append(row)
                opt.zero_grad(set_to_none=True)
                if s.cuda:
                    torch.cuda.empty_cache()
                continue
            except Exception as e:  # recorded, and the run goes on
                row["error"] = f"{type(e).__name__}: {e}"[:500]
                print(f"  {key} B={n} {mode}: ERROR {row['error']}", flush=True)
                rows.append(row)
                continue
            median, best = statistics.median(times), min(times)
            row.update({
                "lstm_dtype": lstm_dtypes[-1] if lstm_dtypes else None,
                "step_s": median,
                "best_step_s": best,
                "steps_per_s": 1.0 / median,
                "frames_per_s": n * s.seq_len / median,
                "model_tflop_per_step": flop / 1e12,
                "tflops": flop / median / 1e12,
                "mfu": flop / median / peaks["used"],
                "mfu_vs_measured": flop / median / peaks["measured"],
                "mfu_best_step": flop / best / peaks["used"],
                "step_times_s": [round(t, 6) for t in times],
            })  # fmt: skip
            row["goal_met"] = row["mfu"] >= GOAL_MFU
            print(f"  {key:<13} B={n:<4} {mode:<8} {median * 1e3:9.2f} ms/step  {row['tflops']:8.2f} TFLOP/s  "
                  f"MFU {row['mfu']:.1%} (vs measured {row['mfu_vs_measured']:.1%})", flush=True)  # fmt: skip
            rows.append(row)
    hook.remove()
    del model, opt
    gc.collect()
    if s.cuda:
        torch.cuda.empty_cache()
    return rows


def bench_train(s: Sizes, keys: list[str], peaks: dict, mode: str, deadline: float) -> list[dict]:
    """Every model in ``mode``: eager at every batch, or compiled at ``s.compile_kinds`` while
    the time budget lasts (a compiled case is skipped, with the reason, past ``deadline``)."""
    rows = []
    for key in keys:
        if mode == "eager":
            modes = {kind: ["eager"] for kind, _ in s.batches}
        else:
            modes = {kind: ["compiled"] for kind in s.compile_kinds}
            if time.perf_counter() > deadline:
                for kind, n in s.batches:
                    if kind in s.compile_kinds:
                        rows.append({"model": key, "batch": n, "batch_kind": kind, "mode": "compiled",
                                     "skipped": "time budget (--budget-s) spent"})  # fmt: skip
                print(f"  {key}: compiled skipped (time budget)", flush=True)
                continue
        with kernels_off(not s.cuda):
            rows += bench_model(key, s, modes, peaks)
    if mode == "compiled":
        torch._dynamo.reset()
    return rows


def train_summary(rows: list[dict]) -> dict:
    """Per model: its best MFU and where (batch, mode); whether that meets the goal."""
    out = {}
    for key in dict.fromkeys(r["model"] for r in rows):
        timed = [r for r in rows if r["model"] == key and "mfu" in r]
        if not timed:
            continue
        best = max(timed, key=lambda r: r["mfu"])
        paper = [r["mfu"] for r in timed if r["batch_kind"] == "paper"]
        out[key] = {
            "best_mfu": best["mfu"],
            "best_at": f"batch {best['batch']} ({best['batch_kind']}), {best['mode']}",
            "best_mfu_paper_batch": max(paper) if paper else None,
            "goal_met": best["mfu"] >= GOAL_MFU,
        }
    return out


# ----------------------------------------------------------------------------- wavenet
def wavenet_model(device: torch.device) -> Any:
    from generate_streams import wavenet_small

    return wavenet_small().to(device)


class GraphStep:
    """WaveNet's cached generation step (``Model._cached_loop``'s arithmetic, op for op) with all
    its state in static buffers, so that samples can be captured in a CUDA graph and replayed.

    The classes so far, the layers' queues (``Model._prime``'s ring), the uniform draws and the
    time step live in tensors that every step updates in place: the time step as a device
    counter ``(t - 1, t, t + 1, t + 1 - T0)``, and the queue slots ``offset_i + t % d_i``
    computed from it on the device. ``reset`` starts a new generation in the same buffers.
    ``compile_backend`` runs the step through ``torch.compile`` (one graph, no break). The seed
    must hold at least two samples.
    """

    def __init__(
        self,
        model: Any,
        n_streams: int,
        n_seed: int,
        n_new: int,
        *,
        logits: bool = False,
        compile_backend: str | None = None,
    ) -> None:
        from cadenza.models.wavenet import draw

        if n_seed < 2:
            raise ValueError("GraphStep needs a seed of at least two samples")
        device = model.input_conv.weight.device
        self.model, self.T0, self.n_new = model, n_seed, n_new
        self.w = model._step_weights(None, n_streams)
        self.D = model.config.dilation_channels
        self.L = len(model.dilations)
        self.dilations = torch.tensor(model.dilations, device=device)
        self.offsets = torch.cumsum(self.dilations, 0) - self.dilations
        self.classes = torch.zeros(n_streams, n_seed + n_new, dtype=torch.long, device=device)
        self.ring = torch.zeros(
            sum(model.dilations), n_streams, model.config.residual_channels, device=device
        )
        self.u = torch.zeros(n_streams, n_new, dtype=torch.float64, device=device)
        self.counter = torch.zeros(4, dtype=torch.long, device=device)
        self.logits = torch.zeros(n_streams, n_new, model.n_classes, device=device) if logits else None
        self.temperature = 1.0
        self.draw = draw  # the eager path's: CDF inversion at a uniform draw
        self._reset_counter()  # valid indices from the start (a capture's warm-up steps read them)
        self.step: Callable[[], None] = self._step
        if compile_backend:
            self.step = torch.compile(self._step, backend=compile_backend, dynamic=False, fullgraph=True)

    def _reset_counter(self) -> None:
        self.counter.copy_(torch.tensor([self.T0 - 2, self.T0 - 1, self.T0, 0]))

    def reset(self, seed: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0) -> None:
        """A new generation from ``seed`` (B, T0) with draws ``uniforms`` (B, n_new), in place."""
        self.classes.zero_()
        self.classes[:, : self.T0] = seed
        self.ring.copy_(self.model._prime(seed[:, :-1], None))
        self.u.copy_(uniforms)
        self._reset_counter()
        self.temperature = temperature

    def _step(self) -> None:
        """One new sample of every stream: ``classes[:, t + 1]`` from the queues and ``classes[:, t]``."""
        e0, e1, b_in, dil, bias, res, res_b, skip, skip_b, h1, hb1, h2, hb2 = self.w
        D, L, counter = self.D, self.L, self.counter
        recent = self.classes.index_select(1, counter[:2])  # (B, 2): classes at t - 1 and t
        x = e1[recent[:, 1]] + b_in
        x = x + e0[recent[:, 0]]
        slots = self.offsets + torch.remainder(counter[1:2], self.dilations)  # (L,)
        past = self.ring.index_select(0, slots)  # (L, B, R): each layer's input d samples ago
        inputs, zs = [], []
        for i in range(L):
            h = torch.addmm(bias[i], torch.cat([past[i], x], dim=1), dil[i])  # (B, 2D)
            inputs.append(x)
            z = torch.tanh(h[:, :D]) * torch.sigmoid(h[:, D:])
            zs.append(z)
            if i < L - 1:
                x = torch.addmm(x + res_b[i], z, res[i])
        self.ring.index_copy_(0, slots, torch.stack(inputs))
        a = torch.relu(torch.addmm(hb1, torch.relu(torch.addmm(skip_b, torch.cat(zs, dim=1), skip)), h1))
        lg = torch.addmm(hb2, a, h2)  # (B, C)
        if self.logits is not None:
            self.logits.index_copy_(1, counter[3:], lg[:, None])
        k = self.draw(lg, self.temperature, self.u.index_select(1, counter[3:])[:, 0])
        self.classes.index_copy_(1, counter[2:3], k[:, None])
        counter.add_(1)


class Replay:
    """``k`` steps of a :class:`GraphStep` as one call: a captured CUDA graph on a GPU (unless
    ``capture`` is false), the same steps run one by one (the code path minus the capture) on
    the CPU."""

    def __init__(self, step: GraphStep, k: int, *, capture: bool = True) -> None:
        if step.n_new % k:
            raise ValueError(f"{step.n_new} samples are not a whole number of {k}-sample replays")
        self.step, self.k, self.graph = step, k, None
        if capture and step.counter.device.type == "cuda":
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture (it moves the state on: reset after)
                self._steps()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._steps()
        else:
            self.step.step()  # a compiled step compiles here (the state is reset before use)

    def _steps(self) -> None:
        for _ in range(self.k):
            self.step.step()

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._steps()

    def generate(self, seed: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        """Reset to ``seed`` and generate every new sample the buffers hold: the classes."""
        self.step.reset(seed, uniforms)
        for _ in range(self.step.n_new // self.k):
            self()
        return self.step.classes


def wavenet_inputs(
    model: Any, n: int, n_new: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random seed of one receptive field (B, RF) and uniform draws (B, n_new)."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.randint(0, model.n_classes, (n, model.receptive_field), generator=g)
    uniforms = torch.rand(n, n_new, generator=g, dtype=torch.float64)
    return classes.to(device), uniforms.to(device)


def compare(name: str, n: int, got: torch.Tensor, ref: torch.Tensor, logits: Any, ref_logits: Any) -> dict:
    mismatches = int((got != ref).sum())
    check = {
        "graph": name,
        "streams": n,
        "classes_equal": mismatches == 0,
        "mismatched_samples": mismatches,
        "max_logit_diff": None if logits is None else float((logits - ref_logits).abs().max()),
    }
    diff = "" if logits is None else f", max logit difference {check['max_logit_diff']:.2e}"
    print(
        f"  check {name}, {n} streams: {'same' if mismatches == 0 else 'DIFFERENT'} classes{diff}", flush=True
    )
    return check


def bench_wavenet(s: Sizes, deadline: float) -> dict:
    """Eager incremental generation against the captured step (and the compiled, captured step
    while the time budget lasts) at each stream count, after checking that they draw the same."""
    model = wavenet_model(s.device)
    k = s.steps_per_graph
    n_new = -(-s.wavenet_samples // k) * k
    n_check = -(-s.check_samples // k) * k
    out: dict[str, Any] = {
        "config": "small (generate_streams.py): 2 stacks of dilations 1...256, 32 residual/dilation, "
        "128 skip channels, 256 classes",
        "receptive_field": model.receptive_field,
        "captured": s.cuda,
        "steps_per_graph": k,
        "samples": n_new,
        "check_samples": n_check,
        "compile_backend": s.compile_backend if s.wavenet_compile else None,
        "rows": [],
        "checks": [],
    }
    cpu_model = copy.deepcopy(model).cpu()
    compiled_ok = s.wavenet_compile
    with torch.no_grad():
        for n in s.streams:
            # the checks: the same classes (and logits) as the eager path, temperature 1, fixed draws
            seed, u = wavenet_inputs(model, n, n_check, s.device, seed=n)
            ref, ref_logits = model.sample(seed, n_check, uniforms=u, mode="cached", return_logits=True)
            step = GraphStep(model, n, seed.shape[1], n_check, logits=True)
            got = Replay(step, k).generate(seed, u)
            out["checks"].append(compare("graph", n, got, ref, step.logits, ref_logits))
            got, _ = model.sample(seed, n_check, uniforms=u, mode="fast")
            out["checks"].append(compare("default", n, got, ref, None, None))
            seed, u = wavenet_inputs(model, n, n_new, s.device, seed=100 + n)
            graphs = {
                "graph": Replay(GraphStep(model, n, seed.shape[1], n_new), k),
                "graph_uncaptured": Replay(GraphStep(model, n, seed.shape[1], n_new), k, capture=False),
            }
            if compiled_ok and time.perf_counter() > deadline:
                out["compiled_skipped"] = "time budget (--budget-s) spent"
                compiled_ok = False
            if compiled_ok:
                try:
                    t0 = time.perf_counter()
                    step = GraphStep(model, n, seed.shape[1], n_new, compile_backend=s.compile_backend)
                    graphs["graph_compiled"] = Replay(step, k)
                    out[f"compile_s_{n}_streams"] = time.perf_counter() - t0
                    eager, _ = model.sample(seed, n_new, uniforms=u, mode="cached")
                    got = graphs["graph_compiled"].generate(seed, u)
                    out["checks"].append(compare("graph_compiled", n, got, eager, None, None))
                except Exception as e:  # recorded; the plain graph is the goal's
                    out["compiled_error"] = f"{type(e).__name__}: {e}"[:500]
                    print(f"  graph_compiled: ERROR {out['compiled_error']}", flush=True)
                    graphs.pop("graph_compiled", None)
                    compiled_ok = False
            cases: dict[str, Callable[[], Any]] = {
                "eager": lambda seed=seed, u=u: model.sample(seed, n_new, uniforms=u, mode="cached"),
                # generate's default mode with the model on the device: numba's step on the host CPU
                "default": lambda seed=seed, u=u: model.sample(seed, n_new, uniforms=u, mode="fast"),
            }
            for name, replay in graphs.items():
                cases[name] = lambda seed=seed, u=u, replay=replay: replay.generate(seed, u)
            cpu_seed, cpu_u = seed.cpu(), u.cpu()
            cases["cpu_fast"] = lambda seed=cpu_seed, u=cpu_u: cpu_model.sample(
                seed, n_new, uniforms=u, mode="fast"
            )
            times: dict[str, list[float]] = {name: [] for name in cases}
            for fn in cases.values():
                fn()  # warm-up (and numba's compilation, or its cache)
            for _ in range(s.repeats):  # interleaved
                for name, fn in cases.items():
                    times[name].append(wall(fn, s.device))
            rates = {name: n_new / statistics.median(t) for name, t in times.items()}
            for name, rate in rates.items():
                out["rows"].append({
                    "mode": name, "streams": n,
                    "device": "cpu" if name in ("cpu_fast", "default") else s.device.type,
                    "model_on": "cpu" if name == "cpu_fast" else s.device.type,
                    "samples_per_s_per_stream": rate, "samples_per_s": rate * n,
                    "realtime_per_stream": rate / SAMPLE_RATE, "seconds": sorted(times[name]),
                    "speedup_vs_eager": rate / rates["eager"],
                })  # fmt: skip
            out[f"graph_speedup_{n}_streams"] = rates["graph"] / rates["eager"]
            if "graph_compiled" in rates:
                out[f"compiled_graph_speedup_{n}_streams"] = rates["graph_compiled"] / rates["eager"]
            print(f"  {n:>2} streams, samples/s per stream: " + ", ".join(f"{name} {rate:.1f}" for name, rate in rates.items())
                  + f"; graph {out[f'graph_speedup_{n}_streams']:.2f}x eager", flush=True)  # fmt: skip
            del graphs, cases
    checked = {c["graph"]: True for c in out["checks"]}
    for c in out["checks"]:
        checked[c["graph"]] = checked[c["graph"]] and c["classes_equal"]
    out["check_passed"] = checked["graph"]
    out["default_check_passed"] = checked.get("default")
    out["compiled_check_passed"] = checked.get("graph_compiled")
    met = {
        prefix: all(out.get(f"{prefix}_speedup_{n}_streams", 0.0) >= GOAL_GRAPH_SPEEDUP for n in s.streams)
        for prefix in ("graph", "compiled_graph")
    }
    out["goal_met_graph"] = met["graph"] and out["check_passed"]
    out["goal_met_compiled_graph"] = met["compiled_graph"] and bool(out["compiled_check_passed"])
    out["goal_met"] = out["goal_met_graph"] or out["goal_met_compiled_graph"]
    return out


# ----------------------------------------------------------------------------- ddp
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flat_grads(params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.grad.detach().float().flatten() for p in params if p.grad is not None])


def max_diff_across_ranks(flat: torch.Tensor) -> float:
    """The largest difference, over ranks and entries, between this rank's ``flat`` and rank 0's."""
    import torch.distributed as dist

    ref = flat.clone()
    dist.broadcast(ref, 0)
    diff = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def ddp_worker(rank: int, world: int, backend: str, port: int, s: Sizes, out_path: str) -> None:
    """One rank: fft_base under DDP, timed steps, then the agreement checks; rank 0 writes JSON."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from cadenza.training.optim import build_optimizer

    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))  # fmt: skip
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
            device = torch.device("cuda", rank)
        else:
            torch.set_num_threads(1)
            device = torch.device("cpu")
        s = dataclasses.replace(s, device=device)
        with kernels_off(device.type == "cpu"):
            model, cfg = build_on("fft_base", s)
            ddp = DDP(LossModule(model), device_ids=[rank] if device.type == "cuda" else None)
            opt = build_optimizer(ddp.parameters(), cfg.optim)
            x, y = batch_for(s, s.batches[0][1], seed=1000 + rank)  # a different batch on each rank
            for _ in range(max(1, s.warmup)):
                train_step(ddp, opt, x, y)
            dist.barrier()
            times = time_calls(lambda: train_step(ddp, opt, x, y), s.ddp_steps, device)
            slowest = torch.tensor([statistics.median(times)], device=device)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            params = [p for p in ddp.parameters() if p.requires_grad]
            opt.zero_grad(set_to_none=True)
            with ddp.no_sync(), autocast_bf16(device.type):
                local = ddp(x, y)
            local.backward()
            local_diff = max_diff_across_ranks(flat_grads(params))
            opt.zero_grad(set_to_none=True)
            with autocast_bf16(device.type):
                loss = ddp(x, y)
            loss.backward()
            grads = flat_grads(params)
            grad_diff = max_diff_across_ranks(grads)
            opt.step()
            param_diff = max_diff_across_ranks(torch.cat([p.detach().float().flatten() for p in params]))
        if rank == 0:
            result = {
                "ran": True,
                "world_size": world,
                "backend": backend,
                "model": "fft_base",
                "batch_per_rank": s.batches[0][1],
                "step_s": float(slowest),
                "steps_per_s": 1.0 / float(slowest),
                "rank0_step_times_s": [round(t, 6) for t in times],
                "grad_norm": float(grads.norm()),
                "max_grad_diff": grad_diff,
                "grads_agree": grad_diff == 0.0,
                "max_param_diff_after_step": param_diff,
                "params_agree": param_diff == 0.0,
                "max_local_grad_diff": local_diff,
                "local_grads_differ": local_diff > 0.0,
            }
            Path(out_path).write_text(json.dumps(result))
        dist.barrier()  # both ranks done with every collective before either tears the group down
    finally:
        dist.destroy_process_group()
    # Out without the interpreter's teardown: a gloo thread still joinable when the C++ statics are
    # destroyed at exit aborted a rank ("terminate called without an active exception", SIGABRT)
    # in about one run of five on a 2-core AMD EPYC, after its results were written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def bench_ddp(s: Sizes) -> dict:
    if s.ddp_world < 2:
        if s.dry_run:
            return {"ran": False, "reason": "--no-ddp"}
        n = torch.cuda.device_count()
        return {"ran": False, "reason": f"{n} GPU: DDP needs more than one" if n < 2 else "--no-ddp"}
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out_path = Path(tmp) / "ddp.json"
        mp.spawn(ddp_worker, args=(s.ddp_world, s.ddp_backend, free_port(), s, str(out_path)),
                 nprocs=s.ddp_world, join=True)  # fmt: skip
        return json.loads(out_path.read_text())


# ----------------------------------------------------------------------------- main
def machine_record(s: Sizes, load_before: tuple[float, float, float]) -> dict:
    extra: dict[str, Any] = {
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if s.cuda else None,
    }
    if s.cuda:
        props = torch.cuda.get_device_properties(0)
        extra.update({
            "device": torch.cuda.get_device_name(0),
            "gpus": torch.cuda.device_count(),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
        })  # fmt: skip
    return machine(**extra, **load_record(load_before))


def checks(result: dict) -> list[str]:
    """What went wrong: errors recorded by a stage, a failed equality or agreement check."""
    problems = [f"{stage}: {result[stage]['error']}" for stage in ("peak", "wavenet", "ddp")
                if "error" in result.get(stage, {})]  # fmt: skip
    problems += [f"train {r['model']} B={r['batch']} {r['mode']}: {r['error']}"
                 for r in result["train"]["rows"] if "error" in r]  # fmt: skip
    wavenet, ddp = result.get("wavenet", {}), result.get("ddp", {})
    if "check_passed" in wavenet and not wavenet["check_passed"]:
        problems.append("wavenet: the graph's classes differ from the eager path's")
    if ddp.get("ran") and not (ddp["grads_agree"] and ddp["params_agree"]):
        problems.append("ddp: gradients or parameters differ across ranks")
    return problems


def stage(result: dict, name: str, fn: Callable[[], dict]) -> None:
    """``result[name] = fn()``; an exception is recorded there (and the run goes on)."""
    try:
        result[name] = fn()
    except Exception as e:
        result[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        print(f"  ERROR {result[name]['error']}", flush=True)


def checkout_on_path() -> None:
    """Run from a checkout where cadenza is not installed (``pip install -e .``): use the checkout's."""
    try:
        import cadenza  # noqa: F401
    except ImportError:
        sys.path.insert(1, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    checkout_on_path()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every stage on the CPU at tiny sizes")
    p.add_argument("--out", type=Path, help=f"results (default {RESULTS}; dry-run {DRY_RUN_RESULTS})")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--steps", type=int, default=10, help="timed training steps per case")
    p.add_argument("--large-batch", type=int, default=256)
    p.add_argument("--compile", choices=("none", "large", "both"), default="large",
                   help="the batch kinds that also run through torch.compile")  # fmt: skip
    p.add_argument("--wavenet-samples", type=int, default=2048)
    p.add_argument("--steps-per-graph", type=int, default=16, help="WaveNet samples per CUDA graph replay")
    p.add_argument("--no-wavenet-compile", action="store_true", help="no torch.compile'd WaveNet step")
    p.add_argument("--no-ddp", action="store_true")
    p.add_argument("--budget-s", type=float, default=270.0,
                   help="compiled cases start only within this many seconds (WaveNet's in the first half)")  # fmt: skip
    args = p.parse_args()
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    dry_run = args.dry_run
    if not dry_run and not torch.cuda.is_available():
        print("no CUDA device: running the CPU dry-run (tiny sizes) instead of the GPU benchmark", flush=True)
        dry_run = True
    s = dry_run_sizes(args) if dry_run else gpu_sizes(args)
    if dry_run:
        torch.set_num_threads(1)  # steady beside other work on a small machine
    out_path = args.out or (DRY_RUN_RESULTS if dry_run else RESULTS)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    if s.cuda:
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(0) if s.cuda else "cpu"
    print(f"{'dry run on the CPU' if dry_run else name}: results to {out_path}", flush=True)
    result: dict[str, Any] = {
        "benchmark": "gpu: bf16 training MFU of paper 000's FFT LSTMs, WaveNet generation with CUDA graphs, "
        "one DDP step (issue 14, goal 4)",
        "compares": "training: each model's eager bf16-autocast step (and torch.compile of its loss) at the "
        "paper's batch and a large one, against the GPU's dense bf16 peak; WaveNet: the model's eager "
        "incremental generation (Model.sample mode=cached) against the same step captured in a CUDA graph "
        "(plain, and compiled by torch.compile)",
        "goals": {
            "train_mfu": f">= {GOAL_MFU} of the table's dense bf16 peak (the best case of each model)",
            "wavenet_graph_vs_eager": f">= {GOAL_GRAPH_SPEEDUP}x samples/s at 1 and 16 streams, same samples",
            "ddp": "gradients and parameters agree across ranks",
        },
        "dry_run": dry_run,
        "complete": False,
        "machine": machine_record(s, load_before),
        "train": {
            "sizes": {
                "preset": s.preset,
                "n_features": s.n_features,
                "seq_len": s.seq_len,
                "batches": dict(s.batches),
                "warmup": s.warmup,
                "steps": s.steps,
            },  # fmt: skip
            "flops": "model FLOPs: 3 x the analytic forward count (_machine.forward_flops)",
            "note": "dry run: cadenza's CPU kernels off, the LSTMs as nn.LSTM (as on CUDA)"
            if dry_run
            else None,
            "rows": [],
        },
    }

    def save() -> None:  # after every stage: a run cut short keeps what it measured
        result["wall_s"] = time.perf_counter() - t_start
        result["problems"] = checks(result)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")

    print("peak: dense bf16 matrix products", flush=True)
    table, pattern = table_peak(name) if s.cuda else (None, None)
    stage(result, "peak", lambda: {"dtype": "bfloat16", "mm_size": s.mm_size, "measured_flops": measured_peak(s),
                                   "table_flops": table, "table_match": pattern})  # fmt: skip
    peak = result["peak"]
    peaks = {"measured": peak.get("measured_flops") or math.nan}
    peaks["used"] = table or peaks["measured"]
    peak["mfu_uses"] = "table" if table else "measured (no table entry for this device)"
    print(f"  measured {peaks['measured'] / 1e12:.3g} TFLOP/s; table "
          f"{f'{table / 1e12:.0f} TFLOP/s ({pattern})' if table else 'none'}", flush=True)  # fmt: skip
    save()

    print(f"train: {len(keys)} models, eager, batches {', '.join(f'{n} ({k})' for k, n in s.batches)}", flush=True)  # fmt: skip
    result["train"]["rows"] += bench_train(s, keys, peaks, "eager", math.inf)
    save()

    print(f"wavenet: eager against a CUDA graph{'' if s.cuda else ' (uncaptured: dry run)'}", flush=True)
    stage(result, "wavenet", lambda: bench_wavenet(s, t_start + 0.5 * s.budget_s))
    save()

    print(f"ddp: {s.ddp_world} processes over {s.ddp_backend}" if s.ddp_world >= 2 else "ddp:", flush=True)
    stage(result, "ddp", lambda: bench_ddp(s))
    ddp = result["ddp"]
    if ddp.get("ran"):
        print(f"  step {ddp['step_s'] * 1e3:.2f} ms, gradients agree: {ddp['grads_agree']}, "
              f"parameters agree: {ddp['params_agree']}", flush=True)  # fmt: skip
    elif "reason" in ddp:
        print(f"  skipped: {ddp['reason']}", flush=True)
    save()

    if s.compile_kinds:
        print(f"train: torch.compile ({s.compile_backend}) at {', '.join(s.compile_kinds)} batch", flush=True)
        result["train"]["rows"] += bench_train(s, keys, peaks, "compiled", t_start + 0.75 * s.budget_s)
        save()

    try:  # the peak again, after the work: the better of the two
        after = measured_peak(s)
    except Exception:
        after = 0.0
    if after > peaks["measured"] or not math.isfinite(peaks["measured"]):
        peak["measured_flops"] = peaks["measured"] = after
        for row in result["train"]["rows"]:
            if "tflops" not in row:
                continue
            row["mfu_vs_measured"] = row["tflops"] * 1e12 / after
            if table is None:
                row["mfu"] = row["mfu_vs_measured"]
                row["mfu_best_step"] = row["model_tflop_per_step"] * 1e12 / row["best_step_s"] / after
                row["goal_met"] = row["mfu"] >= GOAL_MFU
    summary = result["train"]["summary"] = train_summary(result["train"]["rows"])
    result["complete"] = True
    save()

    print()
    print(f"{'model':<14}{'best MFU':>9}  {'at':<28}{'paper batch':>12}{'goal':>6}")
    for key, row in summary.items():
        paper = row["best_mfu_paper_batch"]
        print(f"{key:<14}{row['best_mfu']:>9.1%}  {row['best_at']:<28}"
              f"{'-' if paper is None else f'{paper:.1%}':>12}{'met' if row['goal_met'] else 'MISS':>6}")  # fmt: skip
    wavenet = result["wavenet"]
    if "error" not in wavenet:
        speedups = ", ".join(
            f"{n} streams {wavenet[f'graph_speedup_{n}_streams']:.2f}x"
            + (f" (compiled {wavenet[f'compiled_graph_speedup_{n}_streams']:.2f}x)"
               if f"compiled_graph_speedup_{n}_streams" in wavenet else "")
            for n in s.streams
        )  # fmt: skip
        print(f"wavenet graph vs eager: {speedups}; goal {GOAL_GRAPH_SPEEDUP}x "
              f"{'met' if wavenet['goal_met'] else 'MISS'}; same samples: {wavenet['check_passed']}")  # fmt: skip
    for problem in result["problems"]:
        print(f"PROBLEM: {problem}")
    print(f"results in {out_path} ({result['wall_s']:.0f} s)")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
