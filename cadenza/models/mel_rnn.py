"""Mel-spectrogram RNN, GRU or LSTM of paper 001: log-mel frames in, the next frames out.

Paper 001 plans sequence models (RNN, GRU, LSTM) over log-mel spectrograms of MusicNet,
streamed from disk, and turns the generated spectrograms back into sound. It gives no sizes;
cadenza's paper preset is two layers of 512 units over 128 mel bands.

A model reads a window of T normalised log-mel frames and predicts, at every step, the next
``k`` frames (``k`` = the dataset's ``data.options.shift``: 1 by default; with ``k > 1`` the
frames are read and predicted in groups of ``k``, so the recurrence runs T / k steps).

A plain regressor trained with the mean squared error predicts the mean of what may come
next; running free on its own predictions it drifts to a blurred average frame: a steady
tone or a wash. ``head`` chooses what the network predicts:

``mdn`` (default)
    A mixture of ``n_mixtures`` diagonal Gaussians over the next frames, trained by negative
    log-likelihood and *sampled* at generation (Graves 2013), so a generated frame is one of
    the futures the model finds likely, not their average; ``temperature`` scales the
    standard deviations. ``input_noise`` adds Gaussian noise (normalised units) to the inputs
    in training, so that the model learns to read frames as imperfect as its own samples; it
    is off by default: on the rendered chorales a tiny model trained with 0.1 ran free with
    per-band temporal spread 0.5-0.9x that of real music, and 0.6-1.0x without.
``mse``
    The plain regressor (the obvious reading of the paper), kept for comparison.

Trained only on real frames (teacher forcing, the paper's way and the configs'), a model reads
its own draws for the first time at generation, and some fall into a quiet state the music
never holds (0.45% of the chorales' frames are 40 dB below their file's peak): at the demo's
size (24 chorales, 1300 steps) each of three seeds left one clip of 30 quiet for 27-49% of it.
Generation guards against it with the **level floor** (on by default; ``--option
level_floor=false`` for the plain sampler): a drawn frame whose level (its mean over the bands)
is below that of all but the quietest 1% of the training frames is raised to it, every band
alike. With it the same three runs left no clip quiet for more than 2%, and at the study's
budget (12,741 steps) the KAD is 0.384 (docs/study.md, section 17).

``self_feed`` (parallel scheduled sampling, Duckworth et al. 2019) is the other guard, the
tiny config's from 2026-12-03 to 2026-12-06: that share of the input steps, at random, is
replaced by the model's own draws for them from a first pass without gradients, so that it
learns to go on from frames like its own. It kept short runs out of the quiet state too, at a
price: the first pass makes a step cost 1.3-1.6 times as much, and the draws it trains on
flicker, so that at the study's budget the KAD was 0.549 against teacher forcing's 0.416
(section 16). ``self_feed_steps`` lets the share fall linearly to 0 over that many steps (at
2,000: 0.437 where teacher forcing with the floor measured 0.384, section 17).

Each band of a drawn frame carries its own independent draw, so a clip flickers from frame to
frame where the music holds still: the onset strength (the log-mel rises summed over the
bands) stays up between notes. The generated frames therefore pass a **running median** of
``median`` frames along time, band by band (default 3; ``--option median=1`` for the plain
sampler): a one-frame excursion in a band goes, a step that holds (a note's onset) stays where
it is. Over five pairs of trained runs and draws (three seeds at 12,741 steps, one study at
its 8 minutes) the KAD moved by -0.038, -0.035, +0.002, -0.016 and -0.029 against the same
draws unfiltered, the onset features 0.8-1.1 reference deviations nearer the chorales each time; a median of 5 or 7 frames measured worse (0.377,
0.453 against 0.384), as did noise correlated from frame to frame (0.496 at 0.5; study.md
section 19).

Generation (``cadenza generate RUN --option temperature=0.8``): the recurrence reads a real
seed of T frames, then runs free for ``n_frames``, feeding each sampled group back in. A sample
is kept within each band's range over the training music (a component's tail once gave
+47 dB bins where the music peaks at +14 dB, which no sound can match: the inversion's
spectral convergence fell from -29 to -2.5 dB).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.errors import ParameterError
from cadenza.models import DataInfo, GenerationRequest
from cadenza.models.mixture import mixture_mean, mixture_nll, sample_mixture
from cadenza.validation import coerce

#: The share of the training frames quieter than the level a generated frame is kept at.
FLOOR_QUANTILE = 0.01
#: The running median's length (frames, along time, each band alone) that generated frames pass.
MEDIAN_FRAMES = 3

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
HEADS = ("mdn", "mse")


@dataclasses.dataclass
class Config:
    """Hyper-parameters; paper 001 names the cells, not the sizes (two layers of 512 here)."""

    cell: str = dataclasses.field(default="lstm", metadata={"choices": tuple(CELLS)})
    hidden_size: int = dataclasses.field(default=512, metadata={"min": 1})
    n_layers: int = dataclasses.field(default=2, metadata={"min": 1})
    dropout: float = dataclasses.field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    head: str = dataclasses.field(default="mdn", metadata={"choices": HEADS})
    n_mixtures: int = dataclasses.field(default=4, metadata={"min": 1})
    #: Smallest standard deviation of a mixture component (normalised units).
    min_std: float = dataclasses.field(default=0.01, metadata={"min": 1e-6})
    #: Standard deviation of the noise added to the inputs in training (normalised units).
    input_noise: float = dataclasses.field(default=0.0, metadata={"min": 0.0})
    #: Parallel scheduled sampling: the share of input steps replaced in training by the model's
    #: own draws for them (from a first pass without gradients).
    self_feed: float = dataclasses.field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    #: The share ``self_feed`` falls linearly to 0 over this many training steps, then the model
    #: trains on real frames alone (0: the share stays ``self_feed`` throughout).
    self_feed_steps: int = dataclasses.field(default=0, metadata={"min": 0})

    @classmethod
    def paper(cls, **changes: Any) -> Config:
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> Config:
        """A size that trains on two CPU cores in a minute or two."""
        return cls(**{"hidden_size": 128, "n_layers": 2, "dropout": 0.0, **changes})


class Model(nn.Module):
    """Next-frames predictor over log-mel (or any) frames.

    Examples
    --------
    >>> import torch
    >>> from cadenza.models import DataInfo
    >>> model = Model(Config.tiny(hidden_size=8), DataInfo(n_features=16, seq_len=4))
    >>> model(torch.zeros(2, 4, 16))[0].shape  # mixture logits: (B, T / k, n_mixtures)
    torch.Size([2, 4, 4])
    """

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__()
        if config.self_feed > 0 and config.head != "mdn":
            raise ParameterError(
                "model.self_feed feeds the model its own draws, which only the mixture head makes: "
                "use model.head=mdn, or model.self_feed=0 with model.head=mse"
            )
        if not info.seq_len:
            raise ParameterError("mel_rnn is built from windows of seq_len frames (the sequence dataset)")
        self.config = config
        self.n_features = info.n_features
        self.k = int(dict(info.window).get("shift", 1))  # frames per step, from the dataset
        if self.k < 1 or info.seq_len % self.k:
            raise ParameterError(
                f"mel_rnn predicts the next data.options.shift={self.k} frames at each step, which must "
                f"be at least 1 and divide data.seq_len={info.seq_len}"
            )
        self.n_seed_frames = int(info.seq_len)
        width = self.k * self.n_features  # one step: k frames side by side
        self.rnn = CELLS[config.cell](
            width,
            config.hidden_size,
            num_layers=config.n_layers,
            batch_first=True,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
        )
        n_out = config.n_mixtures * (1 + 2 * width) if config.head == "mdn" else width
        self.out = nn.Linear(config.hidden_size, n_out)
        #: The range of every feature over the training targets seen (normalised units): a sample
        #: beyond it is a draw from a component's tail, not music, and is clamped back.
        self.register_buffer("low", torch.full((self.n_features,), math.inf))
        self.register_buffer("high", torch.full((self.n_features,), -math.inf))
        #: The level (mean over the bands, normalised units) that all but the quietest 1% of the
        #: training frames reach, a moving average of each batch's: generation keeps its frames
        #: at or above it (``level_floor``), the guard against the quiet state.
        self.register_buffer("floor", torch.tensor(-math.inf))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        state_dict.setdefault(prefix + "floor", torch.tensor(-math.inf))  # saved before it: no floor
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, ...]:
        """Frames (B, T, F) -> the head's parameters for the next k frames at each of S = T / k steps.

        ``mdn``: (logits (B, S, M), means (B, S, M, kF), log std (B, S, M, kF), state);
        ``mse``: (prediction (B, S, kF), state).
        """
        b, t, f = x.shape
        steps = x.reshape(b, t // self.k, self.k * f)  # (B, S, kF): k frames per step
        h, state = self.rnn(steps, state)  # (B, S, H)
        z = self.out(h)  # (B, S, n_out)
        if self.config.head == "mse":
            return z, state
        m, width = self.config.n_mixtures, self.k * f
        # split, not sliced: a slice's gradient is a zero tensor of the whole, filled each time
        logits, params = z.split([m, z.shape[-1] - m], dim=-1)
        mean, log_std = params.reshape(b, -1, m, 2, width).unbind(-2)
        return logits, mean, log_std.clamp(min=math.log(self.config.min_std)), state

    #: Training steps done before the current one; the trainer sets it (``self_feed_steps`` reads it).
    n_steps_trained = 0

    @property
    def self_feed_share(self) -> float:
        """The share of input steps fed the model's own draws at this training step."""
        c = self.config
        if c.self_feed_steps <= 0:
            return c.self_feed
        return c.self_feed * max(0.0, 1.0 - self.n_steps_trained / c.self_feed_steps)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch["x"].float(), batch["y"].float()
        if self.training:
            torch.minimum(self.low, y.detach().amin((0, 1)), out=self.low)
            torch.maximum(self.high, y.detach().amax((0, 1)), out=self.high)
            quiet = torch.quantile(y.detach().mean(-1).flatten(), FLOOR_QUANTILE)
            self.floor.copy_(quiet if not torch.isfinite(self.floor) else 0.99 * self.floor + 0.01 * quiet)
            if self.config.input_noise > 0:
                x = x + self.config.input_noise * torch.randn_like(x)
            if self.self_feed_share > 0:
                x = self._self_fed(x)
        target = y.reshape(y.shape[0], -1, self.k * y.shape[2])  # (B, S, kF)
        if self.config.head == "mse":
            prediction, _ = self(x)
            return {"loss": F.mse_loss(prediction, target)}
        logits, mean, log_std, _ = self(x)
        return {
            "loss": mixture_nll(logits, mean, log_std, target),
            "mse": F.mse_loss(mixture_mean(logits, mean), target).detach(),
        }

    def _in_range(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (..., F)`` kept within each band's range over the training music (once trained)."""
        if not torch.isfinite(self.low).all():
            return frames
        return torch.maximum(torch.minimum(frames, self.high), self.low)

    @torch.no_grad()
    def _self_fed(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, F) with a share ``self_feed`` of its steps after the first replaced by the
        model's own draws for them, as generation would have fed it (Duckworth et al. 2019)."""
        b, t, f = x.shape
        logits, mean, log_std, _ = self(x)  # step s predicts input step s + 1
        s, m, width = logits.shape[1], logits.shape[2], self.k * f
        drawn = sample_mixture(
            logits.reshape(b * s, m), mean.reshape(b * s, m, width), log_std.reshape(b * s, m, width)
        ).reshape(b, s, self.k, f)
        drawn = self._in_range(drawn)
        steps = x.reshape(b, s, self.k, f).clone()
        swap = torch.rand(b, s - 1, 1, 1, device=x.device) < self.self_feed_share
        steps[:, 1:] = torch.where(swap, drawn[:, :-1], steps[:, 1:])
        return steps.reshape(b, t, f)

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        """``request.seed`` (n, T, F) -> (n, n_frames, F): read the seed, then run free, sampling."""
        options = dict(request.options)
        temperature = float(options.pop("temperature", 1.0))
        level_floor = coerce(options.pop("level_floor", True), bool, "level_floor")
        median = coerce(options.pop("median", MEDIAN_FRAMES), int, "median")
        if options:
            raise ParameterError(
                "mel_rnn takes the generation options temperature, level_floor and median only, "
                f"got {sorted(options)}"
            )
        if temperature < 0:
            raise ParameterError(f"temperature must be 0 or more, got {temperature}")
        if median < 1 or median % 2 == 0:
            raise ParameterError(
                f"median is a running median's length in frames: 1 (off), 3, 5, ..., got {median}"
            )
        seed = request.seed
        if seed is None or seed.shape[1] != self.n_seed_frames:
            got = None if seed is None else tuple(seed.shape)
            raise ParameterError(f"mel_rnn starts from (n, {self.n_seed_frames}, F) seed frames, got {got}")
        n, _, f = seed.shape
        n_steps = -(-request.n_frames // self.k)
        out = seed.new_empty(n, n_steps, self.k * f)
        *head, state = self(seed)
        for s in range(n_steps):
            step = self._draw([p[:, -1:] for p in head], temperature, request.generator)  # (n, 1, kF)
            frames = step.reshape(n, self.k, f)
            frames = self._in_range(frames)
            if level_floor:
                frames = self._above_floor(frames)
            out[:, s] = frames.reshape(n, -1)
            *head, state = self(frames, state)
        out = running_median(out.reshape(n, n_steps * self.k, f)[:, : request.n_frames], median)
        return self._above_floor(out) if level_floor and median > 1 else out  # a median can dip below it

    def _above_floor(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames (..., F)`` each raised, all bands alike, to the level of ``floor`` if below it."""
        if not torch.isfinite(self.floor):
            return frames
        lift = (self.floor - frames.mean(-1, keepdim=True)).clamp(min=0)
        return torch.minimum(frames + lift, self.high) if torch.isfinite(self.high).all() else frames + lift

    def _draw(self, head: list[torch.Tensor], temperature: float, generator: torch.Generator) -> torch.Tensor:
        """One step's frames (n, 1, kF) from the head's parameters at that step."""
        if self.config.head == "mse":
            return head[0]
        logits, mean, log_std = head  # (n, 1, M), (n, 1, M, kF), (n, 1, M, kF)
        return sample_mixture(logits[:, 0], mean[:, 0], log_std[:, 0], temperature, generator)[:, None]


def running_median(frames: torch.Tensor, width: int) -> torch.Tensor:
    """``frames (n, T, F)`` through a running median of ``width`` frames along time, band by band.

    The ends repeat the first and last frame, so the length stays T; ``width`` 1 returns the frames.

    >>> import torch
    >>> running_median(torch.tensor([[[0.0], [9.0], [0.0], [0.0], [5.0], [5.0], [5.0]]]), 3)[0, :, 0]
    tensor([0., 0., 0., 0., 5., 5., 5.])
    """
    if width <= 1:
        return frames
    pad = width // 2
    padded = torch.cat([frames[:, :1].expand(-1, pad, -1), frames, frames[:, -1:].expand(-1, pad, -1)], 1)
    return padded.unfold(1, width, 1).median(-1).values
