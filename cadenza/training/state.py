"""Where a run stands: one dataclass of counters and partial sums, saved into every checkpoint.

:class:`TrainState` is everything about a run's progress that a resumed run needs to go on
exactly: the step and the position in the epoch (which, with ``(seed, epoch)``, fix the next
batch), the best monitored value and the validations without improvement (``best.pt``, early
stopping), the non-finite steps, and the partial sums of the metrics of the current epoch and
logging interval (so a resumed run writes the same ``metrics.csv`` rows).

Examples
--------
>>> state = TrainState()
>>> state.add({"loss": 2.0})
>>> state.add({"loss": 4.0})
>>> state.take_interval()
({'loss': 3.0}, 0.0)
>>> TrainState.from_checkpoint(state.to_checkpoint()) == state
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

#: Fields kept at the top level of a checkpoint (the rest go under ``progress``).
TOP_LEVEL = ("step", "epoch", "batch_in_epoch")
#: Fields that are not saved: the wall-clock time of an interrupted process means nothing later.
NOT_SAVED = ("interval_seconds",)


@dataclasses.dataclass
class TrainState:
    """The counters of a run (see the module's docstring)."""

    step: int = 0  # training steps (batches) done
    epoch: int = 0  # epochs done
    batch_in_epoch: int = 0  # batches of the current epoch done
    best_value: float = math.inf  # best monitored loss so far
    best_step: int = 0  # the step count of best.pt (0: none yet, or a run saved before it was kept)
    bad_validations: int = 0  # epochs in a row without improvement of it
    n_nonfinite: int = 0  # optimiser steps skipped for a non-finite loss or gradient
    consecutive_nonfinite: int = 0  # ... in a row, up to now
    epoch_sums: dict[str, float] = dataclasses.field(default_factory=dict)
    epoch_count: int = 0
    interval_sums: dict[str, float] = dataclasses.field(default_factory=dict)
    interval_count: int = 0
    interval_seconds: float = 0.0
    seconds_trained: float = 0.0  # wall-clock seconds of training steps, over every resume
    #: "finished", "max_steps", "early_stopping", "interrupted", or "" while training goes on.
    stopped: str = ""

    def add(self, values: Mapping[str, float]) -> None:
        """One batch's losses and metrics into the sums of the interval and of the epoch."""
        for k, v in values.items():
            self.interval_sums[k] = self.interval_sums.get(k, 0.0) + v
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
        self.interval_count += 1
        self.epoch_count += 1

    def take_interval(self) -> tuple[dict[str, float], float]:
        """Means over the logging interval and its seconds per step; starts the next interval."""
        n = max(self.interval_count, 1)
        means = {k: v / n for k, v in self.interval_sums.items()}
        seconds_per_step = self.interval_seconds / n
        self.interval_sums, self.interval_count, self.interval_seconds = {}, 0, 0.0
        return means, seconds_per_step

    def take_epoch(self) -> dict[str, float]:
        """Means over the epoch; starts the next."""
        means = {k: v / max(self.epoch_count, 1) for k, v in self.epoch_sums.items()}
        self.epoch_sums, self.epoch_count = {}, 0
        return means

    def to_checkpoint(self) -> dict[str, Any]:
        """``{"step", "epoch", "batch_in_epoch", "progress": {the rest}}`` for a checkpoint."""
        saved = {
            f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in NOT_SAVED
        }
        top = {k: saved.pop(k) for k in TOP_LEVEL}
        return {**top, "progress": saved}

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> TrainState:
        """The state saved by :meth:`to_checkpoint` (fields a checkpoint lacks keep their defaults)."""
        given = {**{k: state[k] for k in TOP_LEVEL if k in state}, **dict(state.get("progress", {}))}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in given or f.name in NOT_SAVED:
                continue
            value = given[f.name]
            if isinstance(value, Mapping):
                values[f.name] = {str(k): float(v) for k, v in value.items()}
            else:
                values[f.name] = type(f.default)(value)  # type: ignore[call-arg]
        return cls(**values)


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value
