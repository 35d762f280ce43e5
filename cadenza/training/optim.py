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
from collections.abc import Iterable
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


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], cfg: OptimConfig, name: str | None = None
) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` describes (with ``cfg.groups[name]`` applied) over ``params``."""
    cfg = optim_for(cfg, name)
    if cfg.name == "rmsprop":
        return RMSprop(  # torch's, with a fused CPU update
            params,
            lr=cfg.lr,
            alpha=cfg.alpha,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    raise ConfigError(f"optim.name: unknown optimiser {cfg.name!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, train: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The schedule ``cfg`` describes, stepped once per epoch (``plateau``: per validation)."""
    sched = torch.optim.lr_scheduler
    if cfg.name == "none":
        return None
    if cfg.name == "plateau":
        return sched.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=cfg.factor,
            patience=cfg.patience,
            threshold=cfg.min_delta,
            threshold_mode="abs",
            min_lr=cfg.min_lr,
        )
    if cfg.name == "step":
        return sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.factor)
    if cfg.name == "exponential":
        return sched.ExponentialLR(optimizer, gamma=cfg.gamma)
    if cfg.name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=train.max_epochs, eta_min=cfg.min_lr)
    raise ConfigError(f"schedule.name: unknown schedule {cfg.name!r}")


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
