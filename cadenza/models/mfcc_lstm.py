"""Paper 003's MFCC LSTM: a clip of MFCC frames in, the next clip out.

Each frame is 20 MFCCs (the store's ``mfcc`` representation), normalised per coefficient with
the feature store's training statistics (``data.normalization: standard``; the statistics
travel in the checkpoint), never rescaled to a "template" clip, the failure paper 003
describes. Two LSTM layers read a clip of T frames; a linear layer (no squashing: the paper's
"linear activation") turns the top layer's output at step t into frame t of the next clip.
The dataset pairs each clip with the one after it (``data.options.shift = seq_len``).

Regularisation as the paper: recurrent dropout 0.5 (Keras's ``recurrent_dropout``: one mask
per sequence on the hidden state that feeds each layer's recurrence), ``ReduceLROnPlateau``
and early stopping on the validation loss (the configs' ``schedule``).

Generation (paper 003): a seed clip from a held-out file; each predicted clip is fed back in
as the next input, until the requested length. A regressor fed its own averages goes flat (a
tiny model's clips fall to 0.16x the real frame-to-frame spread within seconds), so each
predicted clip gets the part the regressor cannot predict back: Gaussian noise with the
per-coefficient spread *and* the frame-to-frame correlation of the model's own training
residuals (an AR(1) process per coefficient; white noise of the same spread would triple the
spectral flux). ``--option noise=1`` is the default; ``noise=0`` is the paper's plain loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.errors import ParameterError
from cadenza.models import DataInfo, GenerationRequest


@dataclasses.dataclass
class Config:
    """Hyper-parameters; paper 003: two LSTM layers, linear output, recurrent dropout 0.5."""

    hidden_size: int = dataclasses.field(default=256, metadata={"min": 1})
    n_layers: int = dataclasses.field(default=2, metadata={"min": 1})
    recurrent_dropout: float = dataclasses.field(default=0.5, metadata={"min": 0.0, "max": 0.99})
    #: Momentum of the running per-coefficient residual spread that generation's noise uses.
    residual_momentum: float = dataclasses.field(default=0.99, metadata={"min": 0.0, "max": 1.0})

    @classmethod
    def paper(cls, **changes: Any) -> Config:
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> Config:
        """A size that trains on two CPU cores in a minute or two."""
        return cls(**{"hidden_size": 64, "recurrent_dropout": 0.2, **changes})


class Model(nn.Module):
    """Next-clip predictor over MFCC frames.

    Examples
    --------
    >>> import torch
    >>> from cadenza.models import DataInfo
    >>> model = Model(Config.tiny(hidden_size=8), DataInfo(n_features=20, seq_len=16))
    >>> model(torch.zeros(2, 16, 20)).shape
    torch.Size([2, 16, 20])
    """

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__()
        if not info.seq_len:
            raise ParameterError("mfcc_lstm is built from clips of seq_len frames (the sequence dataset)")
        shift = int(dict(info.window).get("shift", info.seq_len))
        if shift != info.seq_len:
            raise ParameterError(
                f"mfcc_lstm predicts the next clip: set data.options.shift to data.seq_len={info.seq_len} "
                f"(got {shift})"
            )
        self.config = config
        self.n_seed_frames = int(info.seq_len)
        self.lstm = nn.LSTM(info.n_features, config.hidden_size, num_layers=config.n_layers, batch_first=True)
        self.out = nn.Linear(config.hidden_size, info.n_features)
        #: Running per-coefficient standard deviation of the training residuals (normalised units)
        #: and their correlation from one frame to the next.
        self.register_buffer("residual_std", torch.zeros(info.n_features))
        self.register_buffer("residual_rho", torch.zeros(info.n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A clip (B, T, F) -> the next clip (B, T, F)."""
        if self.training and self.config.recurrent_dropout > 0:
            h = self._lstm_with_recurrent_dropout(x)  # (B, T, H)
        else:
            h, _ = self.lstm(x)  # (B, T, H)
        return self.out(h)  # (B, T, F): linear, no squashing

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch["x"].float(), batch["y"].float()
        residual = self(x) - y  # (B, T, F)
        if self.training:
            self._track_residuals(residual.detach())
        return {"loss": residual.square().mean()}

    @torch.no_grad()
    def _track_residuals(self, residual: torch.Tensor) -> None:
        """Running spread and lag-1 correlation per coefficient of ``residual`` (B, T, F)."""
        r = residual - residual.mean((0, 1))
        var = r.square().mean((0, 1))  # (F,)
        rho = (r[:, 1:] * r[:, :-1]).mean((0, 1)) / var.clamp(min=1e-12)
        m = self.config.residual_momentum if self.residual_std.any() else 0.0
        self.residual_std.mul_(m).add_((1 - m) * var.sqrt())
        self.residual_rho.mul_(m).add_((1 - m) * rho.clamp(-0.999, 0.999))

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        """``request.seed`` (n, T, F) -> (n, n_frames, F): each predicted clip is the next input."""
        options = dict(request.options)
        noise = float(options.pop("noise", 1.0))
        if options:
            raise ParameterError(f"mfcc_lstm takes the generation option noise only, got {sorted(options)}")
        seed = request.seed
        if seed is None or seed.shape[1] != self.n_seed_frames:
            got = None if seed is None else tuple(seed.shape)
            raise ParameterError(f"mfcc_lstm starts from (n, {self.n_seed_frames}, F) seed frames, got {got}")
        clips, clip = [], seed
        e = None  # the residual process's last value, (n, F)
        while sum(c.shape[1] for c in clips) < request.n_frames:
            clip = self(clip)
            if noise > 0:
                residuals, e = self._residual_noise(clip.shape, e, request.generator)
                clip = clip + noise * residuals
            clips.append(clip)
        return torch.cat(clips, 1)[:, : request.n_frames]

    def _residual_noise(
        self, shape: torch.Size, e: torch.Tensor | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, T, F) draws of the AR(1) residual process, continuing from ``e`` (n, F)."""
        eps = torch.randn(shape, generator=generator, device=self.residual_std.device)
        rho, std = self.residual_rho, self.residual_std
        innovation = (1 - rho.square()).sqrt() * std
        out = torch.empty(shape, device=std.device)
        for t in range(shape[1]):
            e = std * eps[:, t] if e is None else rho * e + innovation * eps[:, t]
            out[:, t] = e
        return out, e

    def _lstm_with_recurrent_dropout(self, x: torch.Tensor) -> torch.Tensor:
        """``self.lstm`` step by step, the hidden state feeding each recurrence dropped (Keras's
        ``recurrent_dropout``: one mask per sequence and layer), (B, T, F) -> (B, T, H)."""
        p, lstm = self.config.recurrent_dropout, self.lstm
        b, t, _ = x.shape
        layer_input = x
        for k in range(lstm.num_layers):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{k}"), getattr(lstm, f"weight_hh_l{k}")
            bias = getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")
            gates_x = F.linear(layer_input, w_ih, bias)  # (B, T, 4H): the inputs, all steps at once
            h = c = x.new_zeros(b, lstm.hidden_size)
            mask = F.dropout(x.new_ones(b, lstm.hidden_size), p, training=True)  # (B, H), scaled 1/(1-p)
            outputs = []
            for s in range(t):
                i, f, g, o = (gates_x[:, s] + F.linear(h * mask, w_hh)).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
            layer_input = torch.stack(outputs, 1)  # (B, T, H)
        return layer_input
