"""Training steps per second of paper 004's GANs before and after each optimiser step computed
only what it needs.

*Before* is cadenza's old step, kept here as a reference: for every optimiser step the whole
forward (fakes with a graph, the discriminator on real and fake rolls, WGAN-GP's penalty), then
the backward of that optimiser's loss, which reached the generator from the discriminator's
loss (the fakes were not detached) and the discriminator's weights from the generator's loss.
*After* is ``Model.losses(batch, step=name)`` as the trainer calls it now. Both run the
trainer's update (``zero_grad``, losses, backward, gradient norm, optimiser step), as
``optim.ratio`` plans it per batch (bilstm_gan 1 discriminator + 2 generator steps, cnn_lstm_gan
1 + 1), on the same batch and from the same weights.

For ``bilstm_gan`` and ``cnn_lstm_gan``, at their ``tiny`` and ``paper`` sizes (4-bar phrases of
192 x 84 and 384 x 84 steps; the paper size at a small batch, so that the whole benchmark takes
a few minutes on two cores), with binary cross-entropy and with WGAN-GP:

``steps/s``
    Training steps (batches) per second, before and after, in interleaved rounds (the order
    alternates, so drifts in machine load hit both alike); the fastest round of each side. At
    the paper size (batch 1 by default; a step takes seconds) one step of each, the new first.
``FLOPs``
    Matrix-multiply and convolution FLOPs per optimiser step, counted with
    ``torch.utils.flop_counter.FlopCounterMode`` (oneDNN off, so that the LSTMs run as counted
    matrix products) at a short phrase (``--flop-steps`` time steps; every count is linear in
    the phrase length), before and after, against the analytic minimum: one generator forward
    and the discriminator's forward and weight backward on real and fake rolls for the
    discriminator's step (plus the gradient penalty, counted alone: its double backward has no
    short closed form); the generator's forward and backward through the discriminator's
    forward and input backward for the generator's step.
``same losses``
    On a fixed batch from the same seed, with dropout off (the old step drew the
    discriminator's dropout masks on real rolls before the fakes'), each step's loss before and
    after, and the largest difference of the stepped network's gradients.

On the CPU the steps per second gain less than the FLOPs: oneDNN's LSTM backward computes its
weight gradients whether they are wanted or not, so the frozen discriminator of the generator's
step saves counted FLOPs but no time there (measured: the same seconds frozen or not).

Goal (issue 11): the work per step at its minimum, worth about 1.2x the steps per second for
BCE and more for WGAN-GP. Results go to benchmarks/results/gan.json.

    .venv/bin/python benchmarks/gan.py [--rounds 3] [--sizes tiny,paper] [--paper-batch 1]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _machine import machine, run_as_cadenza
from torch.utils.flop_counter import FlopCounterMode

RESULTS = Path(__file__).parent / "results" / "gan.json"
KEYS = ("bilstm_gan", "cnn_lstm_gan")
LOSSES = ("bce", "wgan-gp")
#: Phrase steps at each size (4 bars of 4 beats at 12 and 24 steps per beat), 84 pitches.
N_STEPS = {"tiny": 192, "paper": 384}
N_PITCHES = 84
#: Issue 11: about 1.2x for BCE, more for WGAN-GP.
GOAL_SPEEDUP = {"bce": 1.2, "wgan-gp": 1.2}


# ----------------------------------------------------------------------------- the two steps
def old_losses(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """cadenza's GAN losses before this change: one forward for both, fakes not detached."""
    from cadenza.models.gan import gradient_penalty

    cfg = model.config
    real = batch["x"].float()
    logits = model.generator(model.sample_noise(real.shape[0], device=real.device))
    fake = torch.sigmoid(logits)
    d_real, d_fake = model.discriminator(real), model.discriminator(fake)
    if cfg.loss == "bce":
        d_loss = F.binary_cross_entropy_with_logits(
            d_real, torch.ones_like(d_real)
        ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        g_loss = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        scores = torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean()
    else:
        penalty = gradient_penalty(model.discriminator, real, fake)
        d_loss = d_fake.mean() - d_real.mean() + cfg.gp_weight * penalty
        g_loss = -d_fake.mean()
        scores = d_real.mean(), d_fake.mean()
    return {
        "generator": g_loss,
        "discriminator": d_loss,
        "d_real": scores[0].detach(),
        "d_fake": scores[1].detach(),
        "density_gap": (fake.mean() - real.mean()).abs().detach(),
    }


def new_losses(model: Any, batch: dict[str, torch.Tensor], step: str) -> dict[str, torch.Tensor]:
    return model.losses(batch, step=step)


def update(
    model: Any, opts: dict[str, Any], name: str, batch: dict[str, torch.Tensor], *, old: bool
) -> float:
    """One optimiser step as the trainer takes it (its guard's host sync included)."""
    model.zero_grad(set_to_none=True)
    losses = old_losses(model, batch) if old else new_losses(model, batch, name)
    losses[name].backward()
    params = [p for g in opts[name].param_groups for p in g["params"] if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    values = torch.stack([losses[name].detach(), norm]).tolist()
    opts[name].step()
    return values[0]


def train_step(
    model: Any, opts: dict[str, Any], plan: list[tuple[str, int]], batch: Any, *, old: bool
) -> None:
    for name, count in plan:
        for _ in range(count):
            update(model, opts, name, batch, old=old)


# ----------------------------------------------------------------------------- building
def build(
    key: str,
    size: str,
    loss: str,
    *,
    batch_size: int | None = None,
    n_steps: int | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """The model of the packaged ``<key>-<size>`` config (``model.loss=loss``, no pre-training,
    ``changes``) for phrases of ``n_steps`` (default: the size's), its update plan and a batch of
    random rolls (``batch_size``, default: the config's)."""
    from cadenza.models import DataInfo, get_model_spec
    from cadenza.training.config import load_config
    from cadenza.training.optim import update_plan

    cfg = load_config(f"{key}-{size}", [f"model.loss={loss}", "model.pretrain_steps=0"])
    n_steps = n_steps or N_STEPS[size]
    torch.manual_seed(0)
    info = DataInfo(n_features=N_PITCHES, seq_len=n_steps)
    model = get_model_spec(key).build(dataclasses.replace(cfg.model, **changes), info).train()
    g = torch.Generator().manual_seed(1)
    real = (torch.rand(batch_size or cfg.data.batch_size, n_steps, N_PITCHES, generator=g) < 0.1).float()
    plan = update_plan(["discriminator", "generator"], cfg.optim)
    return {"config": cfg, "model": model, "batch": {"x": real}, "plan": plan}


def with_optimizers(model: Any, cfg: Any) -> dict[str, Any]:
    return dict(model.configure_optimizers(cfg.optim))


# ----------------------------------------------------------------------------- timing
def seconds(fn: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def side_by_side(before: Any, after: Any, *, rounds: int, budget: float) -> tuple[float, float, int]:
    """Fastest seconds per call of each over ``rounds`` interleaved rounds (order alternating) of
    ``n`` calls each, ``n`` such that all of them take about ``budget`` seconds; returns ``n`` too.

    The first round is one call of each, which also warms both up (``after`` first, so that it
    pays for what a first call costs); it counts only when one call is all a round makes (a
    paper-size step takes seconds).
    """
    ta = [seconds(after, 1)]
    tb = [seconds(before, 1)]
    n = max(1, round(budget / (rounds * (tb[0] + ta[0]))))
    if n > 1:
        tb, ta = [], []
    for r in range(len(tb), rounds):
        pair = [(after, ta), (before, tb)]
        for fn, times in pair if r % 2 == 0 else pair[::-1]:
            times.append(seconds(fn, n))
    return min(tb), min(ta), n


# ----------------------------------------------------------------------------- FLOPs
class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker, whose backward hooks make
    ``torch.autograd.grad`` (the gradient penalty) fail; only the totals are needed here."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args: object) -> None:
        return None


def _backward(model: Any, batch: dict[str, torch.Tensor], name: str, *, old: bool) -> None:
    losses = old_losses(model, batch) if old else new_losses(model, batch, name)
    losses[name].backward()


def count_flops(fn: Any) -> int:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()  # see _GlobalOnly; a plain attribute of the counter
    with torch.backends.mkldnn.flags(enabled=False), counter:
        fn()
    return int(counter.get_total_flops())


def _lstm(T: int, B: int, n_in: int, H: int, dirs: int, *, dx: bool, dw: bool) -> tuple[int, int]:
    """Forward and backward FLOPs of an LSTM layer run as matrix products (as counted)."""
    u = 2 * T * B * 4 * H * dirs
    recurrent = 2 * (T - 1) * B * 4 * H * H * dirs if dx or dw else 0  # dh back through time
    return u * (n_in + H), (u * n_in if dx else 0) + (u * (n_in + H) if dw else 0) + recurrent


def _linear(N: int, n_in: int, n_out: int, *, dx: bool, dw: bool) -> tuple[int, int]:
    return 2 * N * n_in * n_out, 2 * N * n_in * n_out * (int(dx) + int(dw))


def _conv_t(B: int, c_in: int, c_out: int, k: int, h: int, w: int, *, dx: bool, dw: bool) -> tuple[int, int]:
    flops = 2 * B * c_in * c_out * k * k * h * w  # stride 1, the input's size kept
    return flops, flops * (int(dx) + int(dw))


def _discriminator(c: Any, B: int, T: int, P: int, *, dx: bool, dw: bool) -> tuple[int, int]:
    h2 = c.d_bilstm_size // 2
    parts = [
        _lstm(T, B, P, c.d_lstm_size, 1, dx=dx, dw=dw),
        _lstm(T, B, c.d_lstm_size, h2, 2, dx=True, dw=dw),
    ]
    width = 2 * h2
    for out in (*c.d_dense_sizes, 1):
        parts.append(_linear(B, width, out, dx=True, dw=dw))
        width = out
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def _generator(c: Any, B: int, T: int, P: int) -> tuple[int, int]:
    if c.arch == "bilstm":
        half = c.g_bilstm_size // 2
        parts = [
            _lstm(T, B, c.noise_dim + c.step_noise, c.g_lstm_size, 1, dx=False, dw=True),
            _lstm(T, B, c.g_lstm_size, half, 2, dx=True, dw=True),
            _lstm(T, B, 2 * half, half, 2, dx=True, dw=True),
            _linear(B * T, 2 * half, c.g_dense_size, dx=True, dw=True),
            _linear(B * T, c.g_dense_size, P, dx=True, dw=True),
        ]
    else:
        C, k, t4, p4 = c.cnn_channels, c.cnn_kernel, math.ceil(T / 4), math.ceil(P / 4)
        parts = [
            _linear(B, c.noise_dim, C * t4 * p4, dx=False, dw=True),
            _conv_t(B, C, C // 2, k, 2 * t4, 2 * p4, dx=True, dw=True),
            _conv_t(B, C // 2, C // 4, k, 4 * t4, 4 * p4, dx=True, dw=True),
            _conv_t(B, C // 4, 1, k, 4 * t4, 4 * p4, dx=True, dw=True),
        ]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def minimum_flops(c: Any, B: int, T: int, P: int) -> dict[str, int]:
    """The analytic minimum per optimiser step, without the gradient penalty (``c``: the widths)."""
    g_fwd, g_bwd = _generator(c, B, T, P)
    d_fwd, d_bwd_weights = _discriminator(c, B, T, P, dx=False, dw=True)
    d_fwd, d_bwd_input = _discriminator(c, B, T, P, dx=True, dw=False)
    return {
        "discriminator": g_fwd + 2 * (d_fwd + d_bwd_weights),  # real and fake rolls
        "generator": g_fwd + g_bwd + d_fwd + d_bwd_input,
    }


def flops(key: str, size: str, loss: str, n_steps: int) -> dict[str, Any]:
    """Counted FLOPs per optimiser step, before and after, and the minimum, at ``n_steps`` steps."""
    from cadenza.models.gan import _widths, gradient_penalty

    built = build(key, size, loss, batch_size=2, n_steps=n_steps)
    model, batch = built["model"], built["batch"]
    B = batch["x"].shape[0]
    minimum = minimum_flops(_widths(model.config), B, n_steps, N_PITCHES)
    if loss == "wgan-gp":
        fake = torch.rand_like(batch["x"])
        minimum["discriminator"] += count_flops(
            lambda: gradient_penalty(model.discriminator, batch["x"], fake).backward()
        )
    out: dict[str, Any] = {"phrase_steps": n_steps, "batch": B}
    for name in ("discriminator", "generator"):
        counts = {}
        for side, old in (("before", True), ("after", False)):
            model.zero_grad(set_to_none=True)
            counts[side] = count_flops(functools.partial(_backward, model, batch, name, old=old))
        out[name] = {
            **counts,
            "minimum": minimum[name],
            "after_over_minimum": round(counts["after"] / minimum[name], 4),
        }
    plan = dict(built["plan"])
    for side in ("before", "after", "minimum"):
        out[f"per_training_step_{side}"] = sum(plan[n] * out[n][side] for n in ("discriminator", "generator"))
    out["before_over_after"] = round(out["per_training_step_before"] / out["per_training_step_after"], 3)
    return out


# ----------------------------------------------------------------------------- same losses
def same_losses(key: str, loss: str) -> dict[str, Any]:
    """Each step's loss before and after on a fixed batch from the same seed (tiny size, dropout off)."""
    built = build(key, "tiny", loss, dropout=0.0)
    model, batch = built["model"], built["batch"]
    out: dict[str, Any] = {}
    for name in ("discriminator", "generator"):
        results = {}
        for side, old in (("before", True), ("after", False)):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(7)
            losses = old_losses(model, batch) if old else new_losses(model, batch, name)
            losses[name].backward()
            grads = [p.grad.clone() for p in getattr(model, name).parameters()]
            results[side] = (losses[name].item(), grads)
        (a, ga), (b, gb) = results["before"], results["after"]
        scale = max(float(g.abs().max()) for g in ga)
        out[name] = {
            "before": a,
            "after": b,
            "equal": a == b,
            "max_grad_difference": max(float((x - y).abs().max()) for x, y in zip(ga, gb)),
            "max_grad": scale,
        }
    return out


# ----------------------------------------------------------------------------- timing rows
def steps_per_second(
    key: str, size: str, loss: str, *, rounds: int, batch_size: int | None, budget: float
) -> dict[str, Any]:
    built = build(key, size, loss, batch_size=batch_size)
    before_model = built["model"]
    after_model = copy.deepcopy(before_model)
    cfg, plan, batch = built["config"], built["plan"], built["batch"]
    before_opts, after_opts = with_optimizers(before_model, cfg), with_optimizers(after_model, cfg)

    def before() -> None:
        train_step(before_model, before_opts, plan, batch, old=True)

    def after() -> None:
        train_step(after_model, after_opts, plan, batch, old=False)

    tb, ta, n = side_by_side(before, after, rounds=rounds, budget=budget)
    return {
        "key": key,
        "size": size,
        "loss": loss,
        "batch": batch["x"].shape[0],
        "phrase": list(batch["x"].shape[1:]),
        "plan": dict(plan),
        "optimizer": cfg.optim.name,
        "steps_per_round": n,
        "rounds": rounds,
        "before_ms_per_step": round(tb * 1e3, 2),
        "after_ms_per_step": round(ta * 1e3, 2),
        "before_steps_per_s": round(1 / tb, 3),
        "after_steps_per_s": round(1 / ta, 3),
        "speedup": round(tb / ta, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds at the tiny size")
    parser.add_argument("--paper-rounds", type=int, default=1, help="interleaved rounds at the paper size")
    parser.add_argument("--sizes", default="tiny,paper")
    parser.add_argument(
        "--paper-batch", type=int, default=1, help="batch of the paper size (the configs: 64)"
    )
    parser.add_argument(
        "--budget", type=float, default=4.0, help="seconds of timed steps per row, both sides"
    )
    parser.add_argument("--flop-steps", type=int, default=24, help="phrase steps at which FLOPs are counted")
    args = parser.parse_args()
    load_before = os.getloadavg()
    run_as_cadenza()
    started = time.perf_counter()
    rows = []
    for size in args.sizes.split(","):
        batch_size = args.paper_batch if size == "paper" else None
        rounds = args.paper_rounds if size == "paper" else args.rounds
        for key in KEYS:
            for loss in LOSSES:
                load = os.getloadavg()[0]
                row = steps_per_second(
                    key, size, loss, rounds=rounds, batch_size=batch_size, budget=args.budget
                )
                row["load_at_start"] = round(load, 2)
                row["flops"] = flops(key, size, loss, args.flop_steps)
                if size == "tiny":
                    row["same_losses"] = same_losses(key, loss)
                rows.append(row)
                print(f"  {key} {size} {loss}: {row['speedup']:.2f}x", flush=True)
    result = {
        "benchmark": "GAN training steps per second: each optimiser step computing only what it needs (after) "
        "vs the whole forward per optimiser step (before)",
        "goal_speedup": GOAL_SPEEDUP,
        "machine": machine(load_before=list(load_before), load_after=list(os.getloadavg())),
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    header = (
        f"{'model':<13}{'size':<6}{'loss':<8}{'B':>3}{'before/s':>10}{'after/s':>9}{'speedup':>9}"
        f"{'FLOPs old/new':>15}{'new/min':>9}{'same loss':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        f = r["flops"]
        worst = max(f[n]["after_over_minimum"] for n in ("discriminator", "generator"))
        same = r.get("same_losses")
        same_text = "-" if same is None else ("yes" if all(s["equal"] for s in same.values()) else "NO")
        print(
            f"{r['key']:<13}{r['size']:<6}{r['loss']:<8}{r['batch']:>3}{r['before_steps_per_s']:>10.2f}"
            f"{r['after_steps_per_s']:>9.2f}{r['speedup']:>8.2f}x{f['before_over_after']:>14.2f}x{worst:>9.3f}"
            f"{same_text:>11}"
        )
    print(f"load before: {load_before[0]:.2f}; {result['seconds']} s; results in {RESULTS}")


if __name__ == "__main__":
    main()
