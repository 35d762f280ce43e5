"""Frequency-domain LSTMs of paper 000 over GRUV FFT frames.

A frame is the FFT of one block of N samples unrolled to 2N reals (real parts, then
imaginary parts): 8000 features for the paper's N = 4000 at 16 kHz. A model reads T
frames and predicts, at every step, the next frame; the loss is the mean squared error
against the true next frame. Generation slides a window of T frames: predict the frame
after the window, append it, drop the oldest, repeat (the paper prefers this to feeding one
frame at a time, since every prediction then sees T frames of context).

Architectures (``Config.arch``; each is registered in ``cadenza.models.MODELS`` as
``fft_<arch>``):

``base``
    The GRUV baseline: frames -> LSTM -> dense -> next frame.

Dropout: the paper applies 0.5 to the LSTM's input and recurrent weights (Keras's
``dropout`` and ``recurrent_dropout``). Recurrent dropout needs a step-by-step LSTM, which
gives up the fused kernels, so cadenza drops the LSTM's inputs and outputs instead (and
between layers when ``n_layers > 1``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.errors import ParameterError
from cadenza.models import DataInfo, GenerationRequest

ARCHS = ("base",)


@dataclasses.dataclass
class Config:
    """Hyper-parameters; the defaults are paper 000's (hidden 2048, LSTM dropout 0.5)."""

    arch: str = dataclasses.field(default="base", metadata={"choices": ARCHS})
    hidden_size: int = dataclasses.field(default=2048, metadata={"min": 1})
    n_layers: int = dataclasses.field(default=1, metadata={"min": 1})
    dropout: float = dataclasses.field(default=0.5, metadata={"min": 0.0, "max": 1.0})

    @classmethod
    def paper(cls, **changes: Any) -> Config:
        """Paper 000's size: hidden 2048 over 8000 features."""
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> Config:
        """A size that trains on two CPU cores in a minute or two."""
        return cls(**{"hidden_size": 128, "dropout": 0.1, **changes})


class Model(nn.Module):
    """Next-frame predictor over FFT frames.

    Parameters
    ----------
    config : Config
    info : DataInfo
        ``n_features`` (2N) and ``seq_len`` (T, the generation window) come from here.

    Examples
    --------
    >>> import torch
    >>> from cadenza.models import DataInfo
    >>> model = Model(Config.tiny(hidden_size=8), DataInfo(n_features=16, seq_len=4))
    >>> model(torch.zeros(2, 4, 16))[0].shape
    torch.Size([2, 4, 16])
    """

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__()
        if config.arch not in ARCHS:
            raise ParameterError(f"unknown fft_lstm architecture {config.arch!r}; expected one of {ARCHS}")
        self.config = config
        self.n_features = info.n_features
        self.n_seed_frames = int(info.seq_len or 40)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            info.n_features,
            config.hidden_size,
            num_layers=config.n_layers,
            batch_first=True,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
        )
        self.head = nn.Linear(config.hidden_size, info.n_features)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """``x`` (B, T, F) -> next-frame predictions (B, T, F) and the LSTM state."""
        h, state = self.lstm(self.drop(x), state)  # (B, T, H)
        return self.head(self.drop(h)), state  # (B, T, F)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        y_hat, _ = self(batch["x"])
        return {"loss": F.mse_loss(y_hat.float(), batch["y"].float())}

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        """Sliding-window generation from ``request.seed`` (n, T, F) -> (n, n_frames, F)."""
        if request.options:
            raise ParameterError(
                f"fft_{self.config.arch} takes no generation options, got {sorted(request.options)}"
            )
        window = request.seed  # (n, T, F)
        out = window.new_empty(window.shape[0], request.n_frames, window.shape[2])
        for i in range(request.n_frames):
            y, _ = self(window)  # (n, T, F)
            out[:, i] = y[:, -1]
            window = torch.cat([window[:, 1:], y[:, -1:]], dim=1)
        return out
