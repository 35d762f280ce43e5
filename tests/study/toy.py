"""Toy model families for the study's tests: a tiny next-frame regressor that can be slow or fail.

:func:`register` puts one into ``cadenza.models.MODELS`` (through ``monkeypatch`` in a test, or
for good in a subprocess). ``sleep`` makes every training step last that long, so a test can
kill a study in the middle of training; ``fail`` makes training raise, as a broken model would;
``disk_full`` makes it raise what a write to a full disk raises.
"""

from __future__ import annotations

import dataclasses
import errno
import time
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.models import MODELS, DataInfo, GenerationRequest, ModelSpec

#: Overrides that make a toy train on an FFT store of chorales in a fraction of a second per step.
FAST = ["data.seq_len=8", "data.hop=8", "data.batch_size=4", "train.log_every=1"]


@dataclasses.dataclass
class Config:
    hidden_size: int = 4
    sleep: float = 0.0  # seconds per training step
    fail: bool = False  # raise at the first training step
    disk_full: bool = False  # the first training step finds the disk full

    @classmethod
    def paper(cls, **changes: Any) -> Config:
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> Config:
        return cls(**changes)


class Model(nn.Module):
    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__()
        self.config = config
        self.n_seed_frames = 1
        self.a = nn.Linear(info.n_features, config.hidden_size)
        self.b = nn.Linear(config.hidden_size, info.n_features)
        self.n_steps_trained = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.training and self.config.fail:
            raise RuntimeError("the toy model is broken on purpose")
        if self.training and self.config.disk_full:
            raise OSError(errno.ENOSPC, "No space left on device", "runs/toy/checkpoints/last.pt")
        if self.training and self.config.sleep:
            time.sleep(self.config.sleep)
        return {"loss": F.mse_loss(self(batch["x"]), batch["y"])}

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        x = request.seed[:, -1:]
        noise = torch.randn(
            request.n, request.n_frames, x.shape[-1], generator=request.generator, device=x.device
        )
        return self(x).expand(-1, request.n_frames, -1) + 0.5 * noise


def register(key: str, monkeypatch: Any = None, **fixed: Any) -> str:
    """Register a toy family under ``key`` with these ``Config`` fields fixed (``fail=True``)."""
    spec = ModelSpec(
        key=key,
        module=__name__,
        summary="a toy next-frame regressor for the study's tests",
        fixed=MappingProxyType(dict(fixed)),
    )
    if monkeypatch is not None:
        monkeypatch.setitem(MODELS, key, spec)
    else:
        MODELS[key] = spec
    return key
