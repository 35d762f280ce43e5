"""A tiny model family for trainer tests, with faults to inject.

Registered into ``cadenza.models.MODELS`` by the tests (``register``). Its faults happen at
training steps as the trainer counts them (``n_steps_trained``, set before every batch), so a
test can make a chosen step's loss or gradient NaN, send the process a SIGTERM, or give the
model two optimisers; every call of ``losses`` is recorded in ``calls`` as ``(step,
n_steps_trained, training)``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.models import MODELS, DataInfo, GenerationRequest, ModelSpec
from cadenza.training.optim import build_optimizer

KEY = "test_family"


@dataclasses.dataclass
class Config:
    hidden_size: int = 8
    dropout: float = 0.0
    nan_steps: tuple[int, ...] = ()  # training steps (1-based) whose loss is NaN
    nan_from: int = 0  # every training step from this one on is NaN; 0: never
    nan_in_grad: bool = False  # inject through the gradient (finite loss) instead of the loss
    sigterm_at: int = 0  # send SIGTERM to this process during this training step; 0: never
    constant_loss: bool = False  # a loss that never improves
    two_optimizers: bool = False  # losses {"a", "b"} with one optimiser each
    lstm: bool = False  # an nn.LSTM called directly before ``b`` (as seq2seq, the GANs, mfcc_lstm do)

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
        self.n_seed_frames = int(info.seq_len or 1)
        self.a = nn.Linear(info.n_features, config.hidden_size)
        self.b = nn.Linear(config.hidden_size, info.n_features)
        self.drop = nn.Dropout(config.dropout)
        self.rnn = nn.LSTM(config.hidden_size, config.hidden_size, batch_first=True) if config.lstm else None
        self.n_steps_trained = 0
        self.calls: list[tuple[str | None, int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.a(x))
        if self.rnn is not None:
            h, _ = self.rnn(h)
        return self.b(self.drop(h))

    def losses(self, batch: dict[str, torch.Tensor], *, step: str | None = None) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.calls.append((step, self.n_steps_trained, self.training))
        call = self.n_steps_trained + 1 if self.training else 0  # this training step, 1-based
        if cfg.constant_loss:
            return {"loss": 1.0 + 0.0 * self(batch["x"]).sum()}
        loss = F.mse_loss(self(batch["x"]), batch["y"])
        if call and cfg.sigterm_at == call:
            os.kill(os.getpid(), signal.SIGTERM)
        if call and (call in cfg.nan_steps or (cfg.nan_from and call >= cfg.nan_from)):
            if cfg.nan_in_grad:
                zero = self.a.weight.sum() * 0.0
                loss = loss + 0.0 * torch.sqrt(zero)  # finite value, NaN gradient (0 * inf)
            else:
                loss = loss * float("nan")
        if cfg.two_optimizers:
            return {"a": loss + 0.0 * self.b.bias.sum(), "b": loss, "metric": loss.detach() * 2}
        return {"loss": loss}

    def configure_optimizers(self, optim: Any) -> dict[str, torch.optim.Optimizer]:
        if not self.config.two_optimizers:
            return {"loss": build_optimizer(self.parameters(), optim)}
        return {
            "a": build_optimizer(self.a.parameters(), optim, "a"),
            "b": build_optimizer(self.b.parameters(), optim, "b"),
        }

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        x = request.seed[:, -1:]  # (n, 1, F)
        noise = torch.randn(
            request.n, request.n_frames, x.shape[-1], generator=request.generator, device=x.device
        )
        return self(x).expand(-1, request.n_frames, -1) + 0.1 * noise


def register(monkeypatch: Any) -> str:
    monkeypatch.setitem(MODELS, KEY, ModelSpec(key=KEY, module=__name__, summary="trainer test model"))
    return KEY
