"""Sequence-to-sequence LSTM over raw samples (paper 002's first model).

An LSTM encoder reads a window of ``n_input`` samples (128) into its state; an LSTM decoder,
started from that state with a start token, predicts the target window one sample at a time.
In training the decoder is teacher-forced: its inputs are the start token and then the true
previous targets, ``{x_s, Y[1 : T-1]}``, as the paper does to keep an early error from
propagating. The paper's loss is least squares (the mean of ``(y - y_hat)**2``, its sum up to a
constant), optimised with Adam; cadenza's default head predicts a distribution instead (``head``).

``normalize`` (cadenza's addition, on by default): every input window is divided by its RMS
and its target by the same number, so the model learns the shape of the next samples rather
than their level, and generation keeps the seed's loudness. The paper's plain model
(``model.normalize=false``), fed its own predictions, shrinks towards the mean (silence)
round after round: the tiny demo model was 99.8% silent after half a second.

``head`` (cadenza's addition): what the decoder predicts for each sample.

``mdn`` (default)
    A mixture of ``n_mixtures`` Gaussians over the sample (in the window's RMS units), trained by
    negative log-likelihood and *sampled* at generation (``--option temperature=T`` scales each
    draw's spread, 0.8 by default; 0 takes the mixture's mean). A least-squares regressor can only predict the
    mean of the futures it cannot tell apart; fed its own predictions it settles on one period of
    the waveform and holds it: a steady tone. Measured on 24 chorales after one minute of
    training (4400 steps, 20 clips of 10 s against the held-out files): the paper's regressor
    looped in 20 of 20 clips (FAD 25,900, KAD 1.27); the mixture in none (FAD 1,430, KAD 1.20).
``mse``
    The paper's least squares, kept for comparison (and what a run saved before the mixture
    head loads as).

Each decoder input is two numbers, ``(sample, is_start)``: the start token is ``(0, 1)`` and a
sample ``y`` is ``(y, 0)``, so that the start is never mistaken for a silent sample.

Windowings (``data.options.scheme`` of the raw-audio dataset; the model reads the one the data
used from ``DataInfo.window``, so the two cannot disagree):

``split``
    256-sample windows, input the first 128, target the next 128, hop 128. Generation encodes
    the last 128 samples and decodes the next 128 freely (each prediction is the next input),
    then feeds that predicted window back as the next input: 128 new samples per round.
``shift``
    129-sample windows, input samples 1..128, target 2..129, hop 64. The target window overlaps
    the input by 127 samples; generation decodes the known 127 teacher-forced and the last one
    freely, so a round yields one new sample (slow: two LSTM passes of 128 steps per sample).

Explicit ``data.options.n_input``, ``n_output`` and ``shift`` give other windows: with
``n_input=1024 shift=1024 n_output=128`` the encoder hears 128 ms at 8 kHz before each
128-sample round instead of 16 ms.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.data.windows import SEQ2SEQ_SCHEMES
from cadenza.errors import ParameterError
from cadenza.kernels.lstm import lstm_stepper
from cadenza.models import DataInfo, GenerationRequest
from cadenza.models.mixture import mixture_nll, sample_mixture

#: ``normalize``: windows quieter than this RMS (-60 dBFS) are scaled as if they were this loud.
MIN_RMS = 1e-3
#: ``normalize``: the loudness (RMS, -20 dBFS) of music generated from a silent seed.
SILENCE_LEVEL = 0.1
#: ``normalize``: a seed quieter than this RMS (-50 dBFS, where the evaluation calls a frame
#: silent) counts as silent. Continued at its own level, the one seed of the study's 50 taken
#: from a file's dying last moment (-60 dBFS) gave a clip flagged silent whatever it held.
QUIET_SEED = 10 ** (-50 / 20)

#: ``mdn``: the spread of each draw at generation (``--option temperature``). Measured on the
#: study's model (8 minutes, 26,400 steps, 20 clips of 10 s against the held-out chorales): at
#: 1.0 the draws leave a broadband floor (spectral flatness 0.090, the noise flag at 0.1, the
#: chorales 0.016; KAD 1.06, FAD 1,390, 1 clip clipping); at 0.8, flatness 0.022, KAD 1.01,
#: FAD 1,960, no flag.
DEFAULT_TEMPERATURE = 0.8

#: What the decoder predicts per sample (``Config.head``).
HEADS = ("mse", "mdn")

#: Fields of earlier releases that the data now decides (``DataInfo.window``); a saved config
#: that still has them loads without them.
RETIRED_FIELDS = ("n_input",)
#: Fields added since, with the value a run saved before them was trained with.
SAVED_DEFAULTS = {"head": "mse"}


@dataclasses.dataclass
class Config:
    """Hyper-parameters; the paper gives no sizes, so the defaults are a Keras seq2seq's."""

    #: The windowing, read from the data (``DataInfo.window``); set only to pin it (a run saved
    #: before the data carried it, a model built by hand), and then it must agree with the data.
    scheme: str | None = dataclasses.field(default=None, metadata={"choices": (None, *SEQ2SEQ_SCHEMES)})
    hidden_size: int = dataclasses.field(default=256, metadata={"min": 1})
    n_layers: int = dataclasses.field(default=1, metadata={"min": 1})
    #: Scale each input window to unit RMS (its target by the same factor) and generate at the
    #: seed's loudness; False is the paper's plain model, whose free-running output shrinks
    #: towards silence round after round.
    normalize: bool = True
    #: What the decoder predicts for each sample: ``mse`` the value (the paper's least squares),
    #: ``mdn`` a mixture of ``n_mixtures`` Gaussians over it, trained by likelihood and sampled.
    head: str = dataclasses.field(default="mdn", metadata={"choices": HEADS})
    n_mixtures: int = dataclasses.field(default=8, metadata={"min": 1})
    #: Smallest standard deviation of a mixture component (units of the window's RMS with ``normalize``).
    min_std: float = dataclasses.field(default=1e-3, metadata={"min": 1e-6})

    @classmethod
    def paper(cls, **changes: Any) -> Config:
        """128-sample windows, one LSTM layer of 256 units in the encoder and the decoder."""
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> Config:
        """A size that trains on two CPU cores in a minute or two."""
        return cls(**{"hidden_size": 32, **changes})


class _MixtureDraws:
    """The mixture head's draws of one free run, its randomness drawn up front.

    A call takes the head's output ``z`` ``(n, 3M)`` at the next step and returns its draw
    ``(n,)``: the component by the Gumbel-max trick (``argmax(logits + g)`` picks component k
    with probability ``softmax(logits)[k]``), then the value from its Gaussian. Drawing every
    step's Gumbel and normal values in two calls leaves about ten small ops per step, where
    :func:`~cadenza.models.mixture.sample_mixture` takes twice as many (it runs once per audio
    sample, so this sets the speed of generation).
    """

    def __init__(
        self, n: int, n_steps: int, config: Config, temperature: float, generator: Any, device: Any
    ) -> None:
        m = config.n_mixtures
        self.gumbel = -torch.empty(n_steps, n, m, device=device).exponential_(generator=generator).log()
        self.noise = temperature * torch.randn(n_steps, n, device=device, generator=generator)
        self.min_log_std, self.m, self.t = math.log(config.min_std), m, 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.t += 1
        zz = z.view(len(z), 3, self.m)
        pick = (zz[:, 0] + self.gumbel[self.t]).argmax(1)  # (n,)
        mean_std = zz[:, 1:].gather(2, pick.view(-1, 1, 1).expand(-1, 2, 1))  # (n, 2, 1)
        log_std = mean_std[:, 1, 0].clamp_min(self.min_log_std)
        return torch.addcmul(mean_std[:, 0, 0], log_std.exp(), self.noise[self.t])


class Model(nn.Module):
    """LSTM encoder-decoder over raw float samples.

    Examples
    --------
    >>> from cadenza.models import DataInfo
    >>> model = Model(Config.tiny(hidden_size=8), DataInfo(n_features=1))
    >>> model(torch.zeros(2, 128), torch.zeros(2, 128)).shape  # 8 weights, means, log std per target sample
    torch.Size([2, 128, 24])
    >>> plain = Model(Config.tiny(hidden_size=8, head="mse"), DataInfo(n_features=1))
    >>> plain(torch.zeros(2, 128), torch.zeros(2, 128)).shape  # the paper's: one value per sample
    torch.Size([2, 128])
    """

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__()
        window = dict(info.window) or dict(
            SEQ2SEQ_SCHEMES[config.scheme or "split"], scheme=config.scheme or "split"
        )
        if config.scheme is not None and config.scheme != window["scheme"]:
            raise ParameterError(
                f"model.scheme={config.scheme!r} but the data is windowed {window['scheme']!r}; "
                "leave model.scheme unset (the model follows data.options.scheme)"
            )
        self.config = config
        self.scheme = str(window["scheme"])
        self.n_input = int(window["n_input"])
        self.n_seed_frames = self.n_input
        #: Target ``y = s[shift : shift + n_output]`` of input ``x = s[:n_input]``: the first
        #: ``n_input - shift`` targets are known inputs, the rest are new samples.
        self.shift = int(window["shift"])
        n_output = int(window.get("n_output", self.n_input))
        self.advance = self.shift + n_output - self.n_input  # new samples per window
        if not 1 <= self.shift <= self.n_input or self.advance < 1:
            raise ParameterError(
                f"seq2seq needs a target that starts within or right after its input and ends after it; "
                f"got n_input={self.n_input}, shift={self.shift}, n_output={n_output} "
                "(data.options: e.g. n_input=1024 shift=1024 n_output=128 for a longer context)"
            )
        self.encoder = nn.LSTM(1, config.hidden_size, num_layers=config.n_layers, batch_first=True)
        self.decoder = nn.LSTM(2, config.hidden_size, num_layers=config.n_layers, batch_first=True)
        self.head = nn.Linear(config.hidden_size, 3 * config.n_mixtures if config.head == "mdn" else 1)

    @staticmethod
    def decoder_inputs(y: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: targets ``(B, T)`` -> decoder inputs ``(B, T, 2)``, the start token
        ``(0, 1)`` followed by ``(y[t], 0)`` for ``t < T - 1``."""
        start = y.new_zeros(y.shape[0], 1, 2)
        start[:, :, 1] = 1.0
        return torch.cat([start, F.pad(y[:, :-1, None], (0, 1))], dim=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input window ``(B, T)`` -> the encoder's final state."""
        _, state = self.encoder(x[:, :, None])
        return state

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Teacher-forced predictions of the targets ``y`` from the inputs ``x``: ``(B, T_out)``
        samples (``mse``) or ``(B, T_out, 3M)`` mixture parameters (``mdn``, :meth:`mixture`)."""
        h, _ = self.decoder(self.decoder_inputs(y), self.encode(x))  # (B, T_out, H)
        z = self.head(h)
        return z[..., 0] if self.config.head == "mse" else z

    def mixture(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The head's output ``(..., 3M)`` -> logits ``(..., M)``, means and log std ``(..., M, 1)``."""
        logits, mean, log_std = z.unflatten(-1, (3, -1)).unbind(-2)
        return logits, mean[..., None], log_std.clamp(min=math.log(self.config.min_std))[..., None]

    def draw(
        self, z: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The next sample ``(n,)`` from the head's output ``(n, n_out)`` at one step: the
        prediction (``mse``) or a draw from the mixture at ``temperature`` (``mdn``)."""
        if self.config.head == "mse":
            return z[:, 0]
        return sample_mixture(*self.mixture(z), temperature, generator)[:, 0]

    @staticmethod
    def loudness(x: torch.Tensor) -> torch.Tensor:
        """RMS of each window ``(B, T)`` -> ``(B, 1)``, at least :data:`MIN_RMS`."""
        return x.pow(2).mean(1, keepdim=True).sqrt().clamp_min(MIN_RMS)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch["x"].float(), batch["y"].float()
        if self.config.normalize:
            scale = self.loudness(x)
            x, y = x / scale, y / scale
        if self.config.head == "mse":
            return {"loss": F.mse_loss(self(x, y), y)}
        logits, mean, log_std = self.mixture(self(x, y))
        return {"loss": mixture_nll(logits, mean, log_std, y[..., None])}

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        """Continue the seed window ``(n, n_input, 1)`` by ``n_frames`` samples -> ``(n, n_frames, 1)``.

        With ``normalize`` the window is brought to unit RMS before every round and the new
        samples are scaled to the seed's RMS (:data:`SILENCE_LEVEL` from a silent seed, or one
        quieter than :data:`QUIET_SEED`).

        Options: ``seed=silence`` starts from a silent window instead of the request's seed;
        ``temperature`` (``mdn``, default :data:`DEFAULT_TEMPERATURE`) scales the spread of each
        draw, 0 takes the mixture's mean.
        """
        opts = dict(request.options)
        seed_kind = str(opts.pop("seed", "real"))
        temperature = float(opts.pop("temperature", DEFAULT_TEMPERATURE))
        if opts or seed_kind not in ("real", "silence") or temperature < 0:
            raise ParameterError(
                f"seq2seq generation options: seed=real|silence, temperature (0 or more); got {request.options}"
            )
        draw = {"temperature": temperature, "generator": request.generator}
        device = self.head.weight.device
        T = self.n_input
        if request.seed is None or seed_kind == "silence":
            window = torch.zeros(request.n, T, device=device)
        else:
            window = request.seed[:, -T:, 0].float()
        out = window.new_empty(request.n, request.n_frames + self.advance)
        level = None
        if self.config.normalize:  # every round sees a unit-RMS window; the output keeps the seed's level
            # a silent or near-silent seed (a silent window's loudness is MIN_RMS) at SILENCE_LEVEL
            level = self.loudness(window)
            level = torch.where(level < QUIET_SEED, SILENCE_LEVEL, level)
        done = 0
        while done < request.n_frames:
            if level is not None:
                window = window / self.loudness(window)
            new = self.continue_window(window, **draw)  # (n, advance)
            out[:, done : done + self.advance] = new if level is None else new * level
            window = torch.cat([window[:, self.advance :], new], dim=1)
            done += self.advance
        return out[:, : request.n_frames, None]

    def continue_window(
        self, window: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The ``advance`` samples after ``window`` ``(n, n_input)``: the known overlap teacher-forced,
        then each prediction fed back as the next decoder input."""
        state = self.encode(window)
        known = window[:, self.shift :]  # (n, n_input - shift): targets that are already known
        inp = self.decoder_inputs(F.pad(known, (0, 1)))  # start token + the known samples
        h, state = self.decoder(inp, state)
        y = self.draw(self.head(h[:, -1]), temperature, generator)  # (n,): the first new sample
        return self._free_run(y, state, self.advance, temperature, generator)

    def _step_draws(
        self, n: int, n_steps: int, temperature: float, generator: Any, device: Any
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """What :meth:`_free_run` draws each step's sample with: head output ``(n, n_out)`` -> ``(n,)``."""
        if self.config.head == "mse" or temperature == 0:
            return functools.partial(self.draw, temperature=temperature)
        return _MixtureDraws(n, n_steps, self.config, temperature, generator, device)

    def _free_run(
        self,
        y: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        n_steps: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n_steps`` samples from the decoder fed its own predictions, starting with ``y`` ``(n,)``.

        Each step is ``self.decoder`` over one input ``(y, 0)`` and ``self.head``, written out
        (:func:`~cadenza.kernels.lstm.lstm_stepper`; module calls per sample cost more than the step).
        """
        step = lstm_stepper(self.decoder)
        w_head, b_head = self.head.weight.t(), self.head.bias
        h, c = state[0].unbind(0), state[1].unbind(0)  # per layer (n, H)
        out = y.new_empty(y.shape[0], n_steps)
        out[:, 0] = y
        zero = torch.zeros_like(y)
        draw = self._step_draws(len(y), n_steps, temperature, generator, y.device)
        for t in range(1, n_steps):
            h, c = step(torch.stack([y, zero], 1), h, c)  # input (y, 0): (n, 2)
            y = draw(torch.addmm(b_head, h[-1], w_head))  # (n,)
            out[:, t] = y
        return out
