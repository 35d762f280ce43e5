"""The non-finite guard: a step whose loss or gradient norm is NaN or infinite never reaches the weights.

The trainer checks the loss and the gradient norm of every optimiser step before applying it.
A non-finite one is skipped instead: the gradients are dropped, that optimiser's learning rate
is multiplied by ``train.nonfinite_lr_factor``, the weights are reloaded from ``last.pt`` in
the rare case that they hold non-finite values themselves, and a warning names the step, the
batch and its windows. After ``train.max_nonfinite`` skipped steps in a row, training stops
with a :class:`TrainingDiverged` that says what to try.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cadenza.errors import CadenzaError
from cadenza.training.checkpoint import load_checkpoint
from cadenza.training.config import TrainConfig
from cadenza.training.optim import current_lr, scale_lr
from cadenza.training.state import TrainState

log = logging.getLogger(__name__)

REMEDIES = (
    "try a lower learning rate (optim.lr=...), gradient clipping (train.grad_clip=1.0), "
    "normalised features (data.normalization=standard), fp32 (train.precision=fp32), "
    "or a smaller model"
)


class TrainingDiverged(CadenzaError):
    """The loss or the gradients stayed non-finite for ``train.max_nonfinite`` steps in a row."""


class NonfiniteGuard:
    """Skips non-finite steps of ``model``'s ``optimizers`` as the module says.

    Parameters
    ----------
    model, optimizers
        What a skipped step leaves alone (and reloads from ``last_path`` when the weights went bad).
    last_path : path
        The run's ``last.pt``.
    config : TrainConfig
        ``nonfinite_lr_factor`` and ``max_nonfinite``.
    device : torch.device
        Where reloaded weights go.
    is_main : bool
        Whether this process warns (rank 0).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizers: dict[str, torch.optim.Optimizer],
        last_path: Path,
        config: TrainConfig,
        *,
        device: torch.device,
        is_main: bool = True,
    ) -> None:
        self.model = model
        self.optimizers = optimizers
        self.last_path = last_path
        self.config = config
        self.device = device
        self.is_main = is_main
        self._told: set[str] = set()  # damaged windows named already

    def skip(
        self, name: str, loss_value: float, norm_value: float, state: TrainState, windows: list[int]
    ) -> None:
        """Skip the step of optimiser ``name`` that ``state`` is in (``state`` counts it); raise
        :class:`TrainingDiverged` when it is the ``max_nonfinite``-th in a row."""
        self.model.zero_grad(set_to_none=True)
        opt = self.optimizers[name]
        scale_lr(opt, self.config.nonfinite_lr_factor)
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self._reload_weights()
        what = "loss" if not math.isfinite(loss_value) else "gradient norm"
        shown = ", ".join(map(str, windows[:8])) + (", ..." if len(windows) > 8 else "")
        limit = self.config.max_nonfinite
        if self.is_main:
            log.warning(
                "non-finite %s (%s, gradient norm %s) at step %d, epoch %d, batch %d of the epoch "
                "(windows %s): update of %r skipped, its learning rate lowered to %.3g (%d of %d in a row)",
                what,
                loss_value,
                norm_value,
                state.step + 1,
                state.epoch + 1,
                state.batch_in_epoch,
                shown,
                name,
                current_lr(opt),
                state.consecutive_nonfinite,
                limit,
            )
        if state.consecutive_nonfinite >= limit:
            last = (
                f"the last good checkpoint is {self.last_path}"
                if self.last_path.exists()
                else "no checkpoint was written yet"
            )
            raise TrainingDiverged(
                f"training diverged: the {what} was not finite for {limit} steps in a row "
                f"(last at step {state.step + 1}, epoch {state.epoch + 1}, even with the learning rate of "
                f"{name!r} lowered to {current_lr(opt):.3g}); {last}. To fix it, {REMEDIES}"
            )

    def skip_bad_data(
        self, name: str | None, state: TrainState, where: list[str], *, split: str = "train"
    ) -> None:
        """Skip a batch that itself holds NaN or infinite values (a shard damaged on disk since it
        was prepared): a training step of optimiser ``name`` with its learning rate kept (halving
        it at each draw of the window had starved the run of learning, the model blamed), or
        (``name`` None) a validation batch, left out of the mean. The damage is named once, with
        what to do."""
        self.model.zero_grad(set_to_none=True)
        new = [w for w in where if w not in self._told]
        self._told.update(new)
        if self.is_main and new:
            what = (
                "the step is skipped (its learning rate kept)"
                if name
                else "its windows are left out of the loss"
            )
            log.warning(
                "step %d, epoch %d: the %s data holds NaN or infinite values, in %s; %s at each draw. The "
                "store is damaged (a disk error, a copy gone wrong): delete the shard and run the store's "
                "cadenza prepare command again, which makes it anew",
                state.step + 1,
                state.epoch + 1,
                "training" if split == "train" else f"{split!r}",
                "; ".join(new[:4]) + (f" and {len(new) - 4} more" if len(new) > 4 else ""),
                what,
            )

    def _reload_weights(self) -> None:
        """Weights and optimiser states back from ``last.pt``, keeping the lowered learning rates."""
        if not self.last_path.exists():
            raise TrainingDiverged(
                f"the weights became non-finite before any checkpoint was written; {REMEDIES}"
            )
        state: dict[str, Any] = load_checkpoint(self.last_path, map_location=self.device)
        self.model.load_state_dict(state["weights"])
        for name, opt in self.optimizers.items():
            lrs = [g["lr"] for g in opt.param_groups]
            opt.load_state_dict(state["optimizers"][name])
            for g, lr in zip(opt.param_groups, lrs):
                g["lr"] = lr
