"""Optimisers and learning-rate schedules from the ``optim`` and ``schedule`` sections.

The papers use RMSprop (000: lr 1e-4), Adam and SGD with momentum and a decaying rate (004),
and Keras's ``ReduceLROnPlateau`` with early stopping (003). A model with several optimisers
(a GAN) builds each with :func:`build_optimizer` and its name, so ``optim.groups.<name>``
can change any field for that one.

Examples
--------
>>> import torch
>>> from cadenza.training.config import OptimConfig
>>> opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), OptimConfig(name="adam", lr=1e-3))
>>> type(opt).__name__, opt.param_groups[0]["lr"]
('Adam', 0.001)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from cadenza.kernels.rmsprop import RMSprop
from cadenza.training.config import ConfigError, OptimConfig, ScheduleConfig, TrainConfig, build_section


def optim_for(cfg: OptimConfig, name: str | None = None) -> OptimConfig:
    """``cfg`` with ``cfg.groups[name]`` applied (checked like any config section)."""
    if not name or name not in cfg.groups:
        return cfg
    changes = {k: v for k, v in cfg.groups[name].items()}
    if "groups" in changes or "ratio" in changes:
        raise ConfigError(f"optim.groups.{name}: ratio and groups cannot be set per optimiser")
    return build_section(OptimConfig, changes, section=f"optim.groups.{name}", source="config", base=cfg)


#: Optimiser name -> how to build it from ``(params, cfg)``; ``optim.name`` picks one.
OPTIMIZER_BUILDERS: dict[str, Callable[[Any, OptimConfig], torch.optim.Optimizer]] = {
    # paper 000's RMSprop: torch's, with a fused CPU update
    "rmsprop": lambda p, c: RMSprop(
        p, lr=c.lr, alpha=c.alpha, eps=c.eps, weight_decay=c.weight_decay, momentum=c.momentum
    ),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(
        p, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay
    ),
    "sgd": lambda p, c: torch.optim.SGD(
        p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=c.nesterov
    ),
}

_sched = torch.optim.lr_scheduler
#: Schedule name -> how to build it from ``(optimizer, cfg, train)``, stepped once per epoch
#: (``plateau``: per validation); ``none`` gives no schedule.
SCHEDULE_BUILDERS: dict[str, Callable[[Any, ScheduleConfig, TrainConfig], Any]] = {
    "none": lambda o, c, t: None,
    "plateau": lambda o, c, t: _sched.ReduceLROnPlateau(  # paper 003's ReduceLROnPlateau
        o,
        mode="min",
        factor=c.factor,
        patience=c.patience,
        threshold=c.min_delta,
        threshold_mode="abs",
        min_lr=c.min_lr,
    ),
    "step": lambda o, c, t: _sched.StepLR(o, step_size=c.step_size, gamma=c.factor),
    "exponential": lambda o, c, t: _sched.ExponentialLR(o, gamma=c.gamma),
    "cosine": lambda o, c, t: _sched.CosineAnnealingLR(o, T_max=t.max_epochs, eta_min=c.min_lr),
}


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], cfg: OptimConfig, name: str | None = None
) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` describes (with ``cfg.groups[name]`` applied) over ``params``."""
    cfg = optim_for(cfg, name)
    if cfg.name not in OPTIMIZER_BUILDERS:
        raise ConfigError(f"optim.name: unknown optimiser {cfg.name!r}")
    return OPTIMIZER_BUILDERS[cfg.name](params, cfg)


#: Schedules that count epochs, as the lr they give ``base`` after ``epochs`` (fractional) epochs:
#: what torch's StepLR, ExponentialLR and CosineAnnealingLR (T_max = ``span``) give at whole ones.
EPOCH_SCHEDULES: dict[str, Callable[[ScheduleConfig, float, float, float], float]] = {
    "step": lambda c, base, e, span: base * c.factor ** math.floor(e / c.step_size),
    "exponential": lambda c, base, e, span: base * c.gamma**e,
    "cosine": lambda c, base, e, span: c.min_lr + (base - c.min_lr) * (1 + math.cos(math.pi * e / span)) / 2,
}


def budget_span(cfg: ScheduleConfig, train: TrainConfig) -> int:
    """Epochs an epoch-counted schedule spans over the budget, or 0 when it counts epochs itself:
    ``schedule.span_epochs`` under ``train.max_seconds`` or ``train.max_steps``."""
    budget = train.max_seconds > 0 or train.max_steps > 0
    return cfg.span_epochs if budget and cfg.name in EPOCH_SCHEDULES else 0


def budget_lr(cfg: ScheduleConfig, base: float, fraction: float, span: int) -> float:
    """The lr of an epoch-counted schedule at ``fraction`` (0-1) of a budget spanning ``span`` epochs.

    Examples
    --------
    >>> cfg = ScheduleConfig(name="exponential", gamma=0.5)
    >>> budget_lr(cfg, 1.0, 0.5, 4)  # half the budget: two of the four epochs
    0.25
    """
    return EPOCH_SCHEDULES[cfg.name](cfg, base, min(max(fraction, 0.0), 1.0) * span, span)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, train: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The schedule ``cfg`` describes, stepped once per epoch (``plateau``: per validation); None
    when there is none, or when it follows the budget (:func:`budget_span`: the trainer sets
    the lr at every step with :func:`budget_lr`)."""
    if cfg.name not in SCHEDULE_BUILDERS:
        raise ConfigError(f"schedule.name: unknown schedule {cfg.name!r}")
    if budget_span(cfg, train):
        return None
    return SCHEDULE_BUILDERS[cfg.name](optimizer, cfg, train)


def update_plan(names: list[str], cfg: OptimConfig) -> list[tuple[str, int]]:
    """``(optimiser, updates per batch)`` in stepping order, from ``optim.ratio``."""
    unknown = sorted(set(cfg.ratio) - set(names))
    if unknown:
        raise ConfigError(f"optim.ratio names {unknown}, but the model's optimisers are {names}")
    plan = [(n, int(cfg.ratio.get(n, 1))) for n in names]
    if any(k < 0 for _, k in plan):
        raise ConfigError(f"optim.ratio: updates per batch cannot be negative ({cfg.ratio})")
    if not any(k for _, k in plan):
        raise ConfigError(f"optim.ratio: every optimiser is set to 0 updates per batch ({cfg.ratio})")
    return plan


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def scale_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Multiply every group's learning rate by ``factor`` (the non-finite guard's remedy)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * factor
        if "initial_lr" in group:
            group["initial_lr"] = group["initial_lr"] * factor


def describe(cfg: OptimConfig) -> str:
    fields = {
        f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ("ratio", "groups")
    }
    return ", ".join(f"{k}={v}" for k, v in fields.items())
