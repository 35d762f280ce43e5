"""Piano-roll GANs of paper 004: a bi-LSTM generator or a DCGAN-style CNN generator, one bi-LSTM discriminator.

A sample is one phrase: ``n_bars`` bars of a binary piano roll ``(T, P)`` (4 bars; T = 384 steps at
LPD's 24 per beat, or 192 at 12; P = 84 pitches, C1-B7, or 128), from
:class:`~cadenza.data.phrases.PianorollPhrases`. A generator maps a 100-d noise vector ``z`` to
note probabilities ``(T, P)``; the discriminator reads a roll step by step and says real or fake.

Architectures (``Config.arch``; registered in ``cadenza.models.MODELS`` as ``bilstm_gan`` and
``cnn_lstm_gan``):

``bilstm``
    Generator: LSTM 512 -> bidirectional LSTM 1024 -> bidirectional LSTM 1024 -> dense 1024,
    LeakyReLU, batch norm -> dense to the P pitches, applied at every step; dropout after every
    recurrent layer. The paper's Keras generator reads a 100-step input sequence and maps the last
    state through one dense layer to its 100 outputs; cadenza feeds ``z`` at every one of the T
    steps and keeps the sequence to the end (a dense layer from the last state to a whole
    384 x 84 roll would hold 33 M weights), so that a sample is one point ``z`` of the latent space,
    which interpolation needs. ``step_noise`` values of fresh noise per step are read beside ``z``
    (the shipped configs: 1, as the paper's one value per step, and 4 for tiny); they are part of
    the noise vector, so interpolation walks them too. With ``z`` alone at every step the tiny
    generator settled into one chord held for the whole phrase. ``position`` (off by default)
    adds a clock beside the noise: a one-hot of each step within its bar and of its bar.
    ``z_into="state"`` (tiny config) maps ``z`` once to the first LSTM's initial state (C-RNN-GAN)
    instead of reading it at every step: a near-constant input drove the LSTM to a fixed point,
    one chord held for the phrase. SGD from lr 0.01, decayed every epoch (the ``schedule`` section).
``cnn``
    Generator (DCGAN-like, fully convolutional): dense from ``z`` to ``C x T/4 x P/4``, reshape,
    two units of 2x upsampling + transposed convolution (batch norm after the first unit only, and
    LeakyReLU at the end of each, as the paper says), a last transposed convolution to one track.
    Adam (the paper: "all other learning parameters are same"; the shipped configs use DCGAN's
    2e-4 and betas (0.5, 0.999), since Adam at SGD's 0.01 diverges).

Discriminator (both): LSTM 512 -> bidirectional LSTM 1024 (its last states; ``d_pool="mean"``:
its outputs averaged over every step) -> dense 512, 256 with LeakyReLU -> 1. It returns a logit:
the paper's sigmoid is folded into the loss (``binary_cross_entropy_with_logits``), which is the
same function, computed stably.

Losses (``Config.loss``):

``bce``
    Paper 004's cross-entropy: the discriminator minimises ``-log D(x) - log(1 - D(G(z)))`` (its
    equation 3); the generator minimises ``-log D(G(z))``, the non-saturating form of equation 4
    that a Keras GAN trained with label 1 for its fakes uses.
``wgan-gp``
    Wasserstein loss with gradient penalty (Gulrajani et al. 2017): the critic minimises
    ``D(G(z)) - D(x) + gp_weight * (||grad D(x_hat)|| - 1)^2`` at random points ``x_hat`` between
    real and fake rolls; the generator minimises ``-D(G(z))``.

Each optimiser step computes what it needs and no more (``losses(batch, step=...)``): the
discriminator's step makes its fakes without a graph (no gradient reaches the generator) and alone
pays for WGAN-GP's gradient penalty; the generator's step reads its fakes through the discriminator
with the discriminator's weights frozen (no gradient for them, and no pass over real rolls
but feature matching's, without a graph).

The paper's remedies for an over-strong discriminator: several generator updates per
discriminator update (``optim.ratio.generator``), and **generator pre-training** ("pretraining
the generator model with unsupervised learning", details not given). Here, during the first
``pretrain_steps`` training steps (batches, as the trainer counts them: it sets
``n_steps_trained`` before each one, so a resumed run goes on where it stopped), the generator
alone learns by cross-entropy to put out the real phrases of the batch from its noise (it learns
the data's note density and pitch range, no adversary), and the discriminator's loss is zero, so
it stays at its initial weights. ``best.pt`` is chosen among the validations after it
(``first_monitored_step``): on the demo's 24 chorales the pre-trained generator's phrases
(a blur of likely notes) once scored better on ``phrase_gap`` than every adversarial epoch
of a run.

A remedy the paper does not use, **feature matching** (Salimans et al. 2016;
``feature_matching`` > 0; 1 in bilstm_gan-tiny): the generator's loss adds the squared distance
between the discriminator's last hidden layer averaged over the real batch and over its fakes
(``adversarial`` weighs the usual loss beside it; 0 leaves feature matching alone). The
generator then learns what the discriminator looks at even once the discriminator wins, where
the adversarial loss alone saturates.

A second remedy, **weight averaging** (``ema`` > 0; off in every shipped config): a moving average
of the generator's weights (Yazici et al. 2019) makes the validation fakes (so ``best.pt`` is
chosen on it) and generation's music, smoothing over the oscillation of a training that does not
converge, which paper 004 reports of its bi-LSTM GAN. Screened once on the tiny bi-LSTM GAN at
the demo's scale it did not take away its held chords (docs/models.md).

A third, **R1** (``r1`` > 0; off in every config): the discriminator's loss adds
``r1 / 2 * E ||grad D(x)||^2`` over the real rolls (Mescheder et al. 2018). At ``r1=10`` the tiny
discriminator learned nothing (docs/models.md).

Which checkpoint is ``best.pt`` matters as much: the training oscillates, and the validation
statistics ``note_gap`` and ``phrase_gap`` (the monitor of the tiny configs: density, onsets,
pitch classes per bar, empty steps, steps a bar after the latest note start, range within a
phrase and pitch histograms against the real phrases) choose the epoch whose thresholded fakes
look most like the music.

Generation binarises the probabilities (``binarize``: ``threshold`` at ``threshold``, or
``bernoulli`` draws), repeats each step back to the store's resolution when the phrases were
reduced, and chains phrases until ``n_frames`` steps. Options (``--option key=value``):
``binarize``, ``threshold``, and ``interpolate`` (``true``/``slerp`` or ``linear``): the n samples
walk from one noise vector to another, sample ``i`` at ``t = i / (n - 1)``, spherically (slerp,
which keeps the norm a Gaussian ``z`` is likely to have) or linearly.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.errors import ParameterError
from cadenza.models import DataInfo, GenerationRequest
from cadenza.training.optim import build_optimizer

ARCHS = ("bilstm", "cnn")
LOSSES = ("bce", "wgan-gp")
BINARIZE = ("threshold", "bernoulli")
#: What the discriminator reads of the generator's notes (``Config.binary_neurons``).
BINARY_NEURONS = ("none", "deterministic", "stochastic")
#: How the discriminator sums up a roll (``Config.d_pool``).
D_POOLS = ("last", "mean")
#: Where the bi-LSTM generator reads ``z`` (``Config.z_into``).
Z_INTO = ("input", "state")
OPTIONS = ("binarize", "threshold", "interpolate")
#: The optimiser steps, in the order the trainer takes them.
STEPS = ("discriminator", "generator")


@dataclasses.dataclass
class Config:
    """Hyper-parameters; the defaults are paper 004's sizes."""

    arch: str = dataclasses.field(default="bilstm", metadata={"choices": ARCHS})
    #: Bars per phrase: the data's (``data.options.n_bars``, read from ``DataInfo.window``); set
    #: only to pin it, and then it must agree with the data.
    n_bars: int | None = dataclasses.field(default=None, metadata={"min": 1})
    noise_dim: int = dataclasses.field(default=100, metadata={"min": 1})
    #: bilstm: fresh noise values per time step, read beside z at every step (the paper's
    #: generator reads its noise as a sequence, one value per step). With 0, z alone is
    #: repeated at every step, and the LSTMs easily settle into one held chord.
    step_noise: int = dataclasses.field(default=0, metadata={"min": 0})
    #: bilstm: read where each step stands beside the noise: a one-hot of its step within the
    #: bar and one of its bar within the phrase (False: the paper's noise alone). Without it the
    #: LSTMs have no clock to change chords on and hold them.
    position: bool = False
    #: bilstm: where ``z`` enters: ``input`` read at every step beside the step noise (the
    #: paper's one input sequence), or ``state``: mapped once to the first LSTM's initial state
    #: (C-RNN-GAN, Mogren 2016), so that the steps read only their own noise and the clock. A
    #: constant input drives an LSTM towards a fixed point: one chord held for the phrase.
    z_into: str = dataclasses.field(default="input", metadata={"choices": Z_INTO})
    g_lstm_size: int = dataclasses.field(default=512, metadata={"min": 1})
    g_bilstm_size: int = dataclasses.field(default=1024, metadata={"min": 2})  # both directions together
    g_dense_size: int = dataclasses.field(default=1024, metadata={"min": 1})
    cnn_channels: int = dataclasses.field(default=256, metadata={"min": 4})  # halved by each unit
    cnn_kernel: int = dataclasses.field(default=5, metadata={"min": 1})  # odd: sizes are kept
    d_lstm_size: int = dataclasses.field(default=512, metadata={"min": 1})
    d_bilstm_size: int = dataclasses.field(default=1024, metadata={"min": 2})
    d_dense_sizes: tuple[int, ...] = (512, 256)
    #: What the discriminator's dense layers read of its bi-LSTM: ``last`` its last states (the
    #: forward direction's at the phrase's end, the backward's at its start: the paper), or
    #: ``mean`` its outputs averaged over every step (C-RNN-GAN, Mogren 2016, averages a decision
    #: per step), so that the middle of a phrase counts as much as its edges.
    d_pool: str = dataclasses.field(default="last", metadata={"choices": D_POOLS})
    # One width for every layer of both networks when positive (a quick way to a small GAN:
    # ``model.hidden_size=16``); 0 keeps the widths above.
    hidden_size: int = dataclasses.field(default=0, metadata={"min": 0})
    dropout: float = dataclasses.field(default=0.3, metadata={"min": 0.0, "max": 1.0})  # rate not given
    leaky_slope: float = dataclasses.field(default=0.2, metadata={"min": 0.0})
    loss: str = dataclasses.field(default="bce", metadata={"choices": LOSSES})
    gp_weight: float = dataclasses.field(default=10.0, metadata={"min": 0.0})
    #: Weight ``gamma`` of the R1 penalty (Mescheder et al. 2018): the discriminator's loss adds
    #: ``gamma / 2 * E ||grad D(x)||^2`` over the real rolls, which damps the oscillation of a
    #: discriminator that wins and loses in turn. 0: none (the paper).
    r1: float = dataclasses.field(default=0.0, metadata={"min": 0.0})
    pretrain_steps: int = dataclasses.field(default=0, metadata={"min": 0})
    #: Weight of feature matching in the generator's loss (Salimans et al. 2016): the squared gap
    #: between the discriminator's last hidden layer averaged over the real batch and over the
    #: fakes. 0: the adversarial loss alone (the paper).
    feature_matching: float = dataclasses.field(default=0.0, metadata={"min": 0.0})
    #: Weight of the adversarial loss in the generator's loss (1: the paper; 0 with
    #: ``feature_matching`` > 0: feature matching alone).
    adversarial: float = dataclasses.field(default=1.0, metadata={"min": 0.0})
    binarize: str = dataclasses.field(default="threshold", metadata={"choices": BINARIZE})
    #: What the discriminator reads of the fakes: ``none`` the note probabilities (the paper);
    #: ``deterministic`` them thresholded at ``threshold``, ``stochastic`` them drawn on at their
    #: probability, both with straight-through gradients (Dong & Yang's binary neurons, 2018).
    binary_neurons: str = dataclasses.field(default="none", metadata={"choices": BINARY_NEURONS})
    threshold: float = dataclasses.field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    #: Decay of a moving average of the generator's weights (Yazici et al. 2019), which then makes
    #: the validation fakes and generation's; 0: the generator as trained (the paper). Averaged at
    #: every generator step with decay ``min(ema, (1 + k) / (10 + k))`` after ``k`` steps.
    ema: float = dataclasses.field(default=0.0, metadata={"min": 0.0, "max": 0.9999})

    @classmethod
    def paper(cls, **changes: Any) -> Config:
        """Paper 004's sizes."""
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> Config:
        """A size that trains on two CPU cores in a minute or two."""
        sizes = {
            "noise_dim": 32,
            "g_lstm_size": 48,
            "g_bilstm_size": 64,
            "g_dense_size": 64,
            "cnn_channels": 32,
            "cnn_kernel": 3,
            "d_lstm_size": 48,
            "d_bilstm_size": 64,
            "d_dense_sizes": (64, 32),
            "dropout": 0.1,
        }
        return cls(**{**sizes, **changes})


# ----------------------------------------------------------------------------- pieces
def binarize(
    probs: torch.Tensor, mode: str = "threshold", threshold: float = 0.5, *, generator: Any = None
) -> torch.Tensor:
    """Note probabilities -> a 0/1 roll of the same shape and dtype.

    ``threshold``: on where ``probs > threshold``. ``bernoulli``: each step drawn on with its
    probability (from ``generator``).

    Examples
    --------
    >>> binarize(torch.tensor([0.2, 0.5, 0.9])).tolist()
    [0.0, 0.0, 1.0]
    """
    if mode == "threshold":
        return (probs > threshold).to(probs.dtype)
    if mode == "bernoulli":
        return torch.bernoulli(probs, generator=generator)
    raise ParameterError(f"unknown binarisation {mode!r}; expected one of {BINARIZE}")


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of ``z0``, ``z1`` ``(..., D)`` at ``t`` ``(n,)`` -> ``(n, ..., D)``.

    Falls back to linear interpolation where the two vectors are (nearly) parallel.
    """
    t = t.reshape(-1, *([1] * z0.dim()))
    cos = F.cosine_similarity(z0, z1, dim=-1).clamp(-1.0, 1.0)[..., None]
    omega = torch.acos(cos)
    so = torch.sin(omega)
    lerp = (1 - t) * z0 + t * z1
    spherical = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / so.clamp_min(1e-6)
    return torch.where(so > 1e-6, spherical, lerp)


def r1_penalty(critic: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """R1's ``mean(||grad critic(x)||^2)`` over the real rolls ``x``: with a graph to train through
    where gradients are on, its value alone where they are off (validation)."""
    train = torch.is_grad_enabled()
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        x = real.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=train)
    return grad.flatten(1).pow(2).sum(dim=1).mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's ``mean((||grad critic(x_hat)||_2 - 1)^2)`` at random points between real and fake."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    # cuDNN's LSTM has no double backward; the native kernels do.
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        mixed = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class Discriminator(nn.Module):
    """Roll ``(B, T, P)`` -> logit ``(B,)``: LSTM -> bi-LSTM (last states) -> dense layers."""

    def __init__(self, n_pitches: int, config: Config) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_pitches, config.d_lstm_size, batch_first=True)
        self.bilstm = nn.LSTM(
            config.d_lstm_size, config.d_bilstm_size // 2, batch_first=True, bidirectional=True
        )
        layers: list[nn.Module] = []
        size = 2 * (config.d_bilstm_size // 2)
        for width in config.d_dense_sizes:
            layers += [nn.Linear(size, width), nn.LeakyReLU(config.leaky_slope)]
            size = width
        self.head = nn.Sequential(*layers, nn.Linear(size, 1))
        self.drop = nn.Dropout(config.dropout)
        self.pool = config.d_pool

    def forward(self, x: torch.Tensor, *, features: bool = False) -> Any:
        """Logits ``(B,)``; with ``features``, also the last hidden layer ``(B, F)`` (feature matching's)."""
        h, _ = self.lstm(x)  # (B, T, H)
        out, (h_n, _) = self.bilstm(self.drop(h))  # (B, T, 2 H2); (2, B, H2): forward's last, backward's
        if self.pool == "mean":
            h = out.mean(dim=1)  # (B, 2 H2): every step alike
        else:
            h = torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, 2 H2): the phrase's two ends
        f = self.head[:-1](self.drop(h))  # (B, F)
        logits = self.head[-1](f).squeeze(-1)  # (B,)
        return (logits, f) if features else logits


def _position_code(n_steps: int, n_bars: int) -> torch.Tensor:
    """``(T, steps per bar + n_bars)``: each step's one-hot step within its bar, then its bar's.

    Examples
    --------
    >>> _position_code(4, 2).tolist()
    [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]]
    """
    per_bar = max(1, n_steps // n_bars)
    t = torch.arange(n_steps)
    in_bar = F.one_hot(t % per_bar, per_bar)
    bar = F.one_hot((t // per_bar).clamp_max(n_bars - 1), n_bars)
    return torch.cat([in_bar, bar], dim=1).float()


class BiLSTMGenerator(nn.Module):
    """``z`` ``(B, D)`` -> logits ``(B, T, P)``: z at every step through three LSTMs and two dense layers."""

    def __init__(self, n_steps: int, n_pitches: int, config: Config, *, n_bars: int = 1) -> None:
        super().__init__()
        self.n_steps = n_steps
        half = config.g_bilstm_size // 2
        self.noise_dim, self.step_noise = config.noise_dim, config.step_noise
        position = _position_code(n_steps, n_bars) if config.position else torch.zeros(n_steps, 0)
        self.register_buffer("position", position, persistent=False)  # (T, steps per bar + bars)
        self.z_into = config.z_into
        n_in = config.step_noise + position.shape[1]
        if config.z_into == "input":
            n_in += config.noise_dim
        else:  # z -> (h0, c0) of the first LSTM
            self.initial = nn.Linear(config.noise_dim, 2 * config.g_lstm_size)
        if n_in == 0:
            raise ParameterError(
                "model.z_into=state needs step_noise > 0 or position: the steps read nothing else"
            )
        self.lstm = nn.LSTM(n_in, config.g_lstm_size, batch_first=True)
        self.bilstm1 = nn.LSTM(config.g_lstm_size, half, batch_first=True, bidirectional=True)
        self.bilstm2 = nn.LSTM(2 * half, half, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * half, config.g_dense_size)
        self.act = nn.LeakyReLU(config.leaky_slope)
        self.norm = nn.BatchNorm1d(config.g_dense_size)
        self.out = nn.Linear(config.g_dense_size, n_pitches)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, noise_dim + T * step_noise)``: z, then each step's own noise values."""
        z0 = z[:, : self.noise_dim]  # (B, D)
        steps = [z0[:, None].expand(-1, self.n_steps, -1)] if self.z_into == "input" else []  # (B, T, D)
        if self.step_noise:
            steps.append(z[:, self.noise_dim :].reshape(-1, self.n_steps, self.step_noise))
        if self.position.shape[1]:
            steps.append(self.position.expand(len(z), -1, -1))
        x = torch.cat(steps, dim=2)  # (B, T, inputs)
        state = None
        if self.z_into == "state":
            h0, c0 = torch.tanh(self.initial(z0)).chunk(2, dim=1)  # (B, H1) each
            state = (h0[None].contiguous(), c0[None].contiguous())
        h, _ = self.lstm(x, state)  # (B, T, H1)
        h, _ = self.bilstm1(self.drop(h))  # (B, T, H2)
        h, _ = self.bilstm2(self.drop(h))  # (B, T, H2)
        h = self.act(self.dense(self.drop(h)))  # (B, T, H3)
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)  # batch norm over features
        return self.out(self.drop(h))  # (B, T, P)


class CNNGenerator(nn.Module):
    """``z`` ``(B, D)`` -> logits ``(B, T, P)``: dense, reshape, two upsampling units, a last deconvolution."""

    def __init__(self, n_steps: int, n_pitches: int, config: Config) -> None:
        super().__init__()
        self.n_steps, self.n_pitches = n_steps, n_pitches
        c, k = config.cnn_channels, config.cnn_kernel
        self.shape = (c, math.ceil(n_steps / 4), math.ceil(n_pitches / 4))
        self.dense = nn.Linear(config.noise_dim, math.prod(self.shape))
        pad = k // 2
        self.unit1 = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.ConvTranspose2d(c, c // 2, k, padding=pad),
            nn.BatchNorm2d(c // 2),
            nn.LeakyReLU(config.leaky_slope),
        )
        self.unit2 = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.ConvTranspose2d(c // 2, c // 4, k, padding=pad),
            nn.LeakyReLU(config.leaky_slope),
        )
        self.last = nn.ConvTranspose2d(c // 4, 1, k, padding=pad)  # one track

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense(z).view(-1, *self.shape)  # (B, C, T/4, P/4)
        h = self.unit2(self.unit1(h))  # (B, C/4, T', P')
        return self.last(h)[:, 0, : self.n_steps, : self.n_pitches]  # (B, T, P), one track


# ----------------------------------------------------------------------------- the model
class Model(nn.Module):
    """A phrase GAN: ``generator`` and ``discriminator``, losses for both, binarised generation.

    Parameters
    ----------
    config : Config
    info : DataInfo
        ``n_features`` (pitches), ``seq_len`` (steps per phrase) and the store's ``representation``
        (to undo a resolution reduction in :meth:`generate`).

    Examples
    --------
    >>> from cadenza.models import DataInfo
    >>> model = Model(Config.tiny(arch="cnn"), DataInfo(n_features=12, seq_len=16))
    >>> model.generator(torch.zeros(2, 32)).shape
    torch.Size([2, 16, 12])
    """

    n_seed_frames = 0
    #: Training steps done before the current one; the trainer sets it (pre-training reads it).
    n_steps_trained = 0

    @property
    def first_monitored_step(self) -> int:
        """The first step count whose validation may become ``best.pt``: one after pre-training."""
        return self.config.pretrain_steps + 1 if self.config.pretrain_steps else 0

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__()
        if config.arch not in ARCHS:
            raise ParameterError(f"unknown GAN architecture {config.arch!r}; expected one of {ARCHS}")
        if config.z_into not in Z_INTO:
            raise ParameterError(f"unknown model.z_into {config.z_into!r}; expected one of {Z_INTO}")
        if config.d_pool not in D_POOLS:
            raise ParameterError(f"unknown model.d_pool {config.d_pool!r}; expected one of {D_POOLS}")
        if config.binary_neurons not in BINARY_NEURONS:
            raise ParameterError(
                f"unknown model.binary_neurons {config.binary_neurons!r}; expected one of {BINARY_NEURONS}"
            )
        if not info.seq_len:
            raise ParameterError("a phrase GAN needs phrases of a fixed length (data.dataset: phrases)")
        self.config = config
        self.n_steps, self.n_pitches = int(info.seq_len), int(info.n_features)
        self.n_bars, self.factor = _phrase_shape(config, info)
        widths = _widths(config)
        if config.arch == "bilstm":
            self.generator: nn.Module = BiLSTMGenerator(
                self.n_steps, self.n_pitches, widths, n_bars=self.n_bars
            )
        else:
            self.generator = CNNGenerator(self.n_steps, self.n_pitches, widths)
        self.discriminator = Discriminator(self.n_pitches, widths)
        # The generator's weights averaged over training (``ema``): the model that makes music.
        self.generator_ema: nn.Module | None = None
        if config.ema > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.register_load_state_dict_pre_hook(_drop_call_counter)

    @property
    def noise_size(self) -> int:
        """Length of the generator's noise vector: z, then the per-step noise of bilstm."""
        per_step = self.config.step_noise * self.n_steps if self.config.arch == "bilstm" else 0
        return self.config.noise_dim + per_step

    def sample_noise(self, n: int, *, device: Any = None, generator: Any = None) -> torch.Tensor:
        return torch.randn(n, self.noise_size, device=device, generator=generator)

    def losses(self, batch: dict[str, torch.Tensor], *, step: str | None = None) -> dict[str, torch.Tensor]:
        """The loss of optimiser ``step`` (``discriminator`` or ``generator``) and the metrics at hand.

        ``step=None`` (validation) gives the value of every entry from one pass: one draw of fakes,
        the discriminator once on real and once on fake rolls.
        """
        if step not in (None, *STEPS):
            raise ParameterError(f"unknown GAN step {step!r}; expected one of {STEPS}")
        real = batch["x"].float()  # (B, T, P) of 0/1
        z = self.sample_noise(real.shape[0], device=real.device)
        pretraining = self.training and self.n_steps_trained < self.config.pretrain_steps
        generator = self.generator
        if step is None and not self.training and self.generator_ema is not None:
            generator = self.generator_ema  # validation judges the music's generator (best.pt keeps it)
        if step == "generator" and self.training:
            self._average_generator()  # the weights of the last generator step join the average
        if step == "discriminator":
            with torch.no_grad():
                fake = self._notes(torch.sigmoid(self.generator(z)))  # (B, T, P), no graph: nothing reaches G
            if pretraining:
                return self._resting_discriminator(real, fake)
            return self._discriminator_losses(real, fake)
        logits = generator(z)  # (B, T, P)
        fake = self._notes(torch.sigmoid(logits))
        if step == "generator":
            out = self._pretraining_loss(logits, real) if pretraining else self._generator_losses(fake, real)
            return {**out, "density_gap": density_gap(fake, real)}
        if pretraining:
            return {
                **self._resting_discriminator(real, fake.detach()),
                **self._pretraining_loss(logits, real),
            }
        return self._discriminator_losses(real, fake.detach())

    @torch.no_grad()
    def _average_generator(self) -> None:
        """Fold the generator's weights into ``generator_ema``; copy its buffers (batch norm's)."""
        if self.generator_ema is None:
            return
        k = int(self.ema_updates)
        decay = min(self.config.ema, (1 + k) / (10 + k))
        for avg, p in zip(self.generator_ema.parameters(), self.generator.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - decay)
        for avg, b in zip(self.generator_ema.buffers(), self.generator.buffers(), strict=True):
            avg.copy_(b)
        self.ema_updates += 1

    def _notes(self, probs: torch.Tensor) -> torch.Tensor:
        """What the discriminator reads of note probabilities ``(B, T, P)`` (``binary_neurons``): a
        0/1 roll in the forward pass whose gradient is the probabilities' (straight through)."""
        mode = self.config.binary_neurons
        if mode == "none":
            return probs
        hard = binarize(
            probs.detach(), "threshold" if mode == "deterministic" else "bernoulli", self.config.threshold
        )
        return probs + (hard - probs).detach()

    def _discriminator_losses(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The discriminator's loss on real rolls and fakes ``(B, T, P)``, its scores, and the
        generator's loss on the same fakes (a value to log: no gradient reaches the generator)."""
        cfg = self.config
        (d_real, f_real), (d_fake, f_fake) = (self.discriminator(x, features=True) for x in (real, fake))
        if cfg.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(
                d_real, torch.ones_like(d_real)
            ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            scores = torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean()
        else:
            penalty = gradient_penalty(self.discriminator, real, fake)
            loss = d_fake.mean() - d_real.mean() + cfg.gp_weight * penalty
            scores = d_real.mean(), d_fake.mean()
        r1 = {}
        if cfg.r1 > 0:
            r1["r1"] = r1_penalty(self.discriminator, real)
            loss = loss + cfg.r1 / 2 * r1["r1"]
        return {
            "discriminator": loss,
            "generator": self._fooling_loss(d_fake).detach(),
            "d_real": scores[0].detach(),
            "d_fake": scores[1].detach(),
            "density_gap": density_gap(fake, real),
            "note_gap": note_gap(fake, real, self.config.threshold),
            "phrase_gap": phrase_gap(fake, real, self.config.threshold, self.n_bars),
            **({"feature_gap": feature_gap(f_real, f_fake).detach()} if cfg.feature_matching > 0 else {}),
            **{k: v.detach() for k, v in r1.items()},
        }

    def _resting_discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pre-training: the scores alone, and a zero loss that leaves every weight where it is."""
        with torch.no_grad():
            out = self._discriminator_losses(real, fake)
        out["discriminator"] = 0.0 * sum(p.sum() for p in self.discriminator.parameters())
        return out

    def _generator_losses(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's loss on its fakes ``(B, T, P)``, read by a frozen discriminator: the
        adversarial loss and, with ``feature_matching``, the gap to the real batch ``real``."""
        cfg = self.config
        with _frozen(self.discriminator):
            d_fake, f_fake = self.discriminator(fake, features=True)  # (B,) logits, (B, F)
            if cfg.feature_matching > 0:
                with torch.no_grad():
                    _, f_real = self.discriminator(real, features=True)  # (B, F)
        score = torch.sigmoid(d_fake).mean() if cfg.loss == "bce" else d_fake.mean()
        fooling = self._fooling_loss(d_fake)
        loss = cfg.adversarial * fooling
        out = {"d_fake": score.detach()}
        if cfg.feature_matching > 0:
            matching = feature_gap(f_real, f_fake)
            loss = loss + cfg.feature_matching * matching
            out["feature_gap"] = matching.detach()
        return {"generator": loss, **out}

    def _fooling_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        """The generator's loss from the discriminator's logits ``(B,)`` on its fakes."""
        if self.config.loss == "bce":
            return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        return -d_fake.mean()

    @staticmethod
    def _pretraining_loss(logits: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pre-training: the generator learns to put out the batch's real phrases, no adversary."""
        return {"generator": F.binary_cross_entropy_with_logits(logits, real)}

    def configure_optimizers(self, optim: Any) -> dict[str, torch.optim.Optimizer]:
        """The discriminator's optimiser first: the trainer steps them in this order."""
        return {
            "discriminator": build_optimizer(self.discriminator.parameters(), optim, "discriminator"),
            "generator": build_optimizer(self.generator.parameters(), optim, "generator"),
        }

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        """``(n, n_frames, P)`` 0/1 steps at the store's resolution: phrases chained, binarised."""
        opts = dict(request.options)
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise ParameterError(f"unknown GAN generation options {unknown}; expected some of {OPTIONS}")
        mode = str(opts.get("binarize", self.config.binarize))
        threshold = float(opts.get("threshold", self.config.threshold))
        interpolate = opts.get("interpolate", False)
        if interpolate not in (False, True, "slerp", "linear", "false", "true"):
            raise ParameterError(f"interpolate must be true, slerp, linear or false, got {interpolate!r}")
        n, device = request.n, next(self.parameters()).device
        phrase = self.n_steps * self.factor
        n_phrases = math.ceil(request.n_frames / phrase)
        d = self.noise_size
        if interpolate in (False, "false"):
            z = self.sample_noise(n * n_phrases, device=device, generator=request.generator)
            z = z.view(n, n_phrases, d)
        else:
            ends = self.sample_noise(2 * n_phrases, device=device, generator=request.generator)
            ends = ends.view(2, n_phrases, d)
            t = torch.linspace(0.0, 1.0, n, device=device) if n > 1 else torch.zeros(1, device=device)
            if interpolate == "linear":
                z = (1 - t[:, None, None]) * ends[0] + t[:, None, None] * ends[1]
            else:
                z = slerp(ends[0], ends[1], t)  # (n, n_phrases, D)
        generator = self.generator if self.generator_ema is None else self.generator_ema
        probs = torch.sigmoid(generator(z.reshape(-1, d)))  # (n * n_phrases, T, P)
        roll = binarize(probs, mode, threshold, generator=request.generator)
        roll = roll.repeat_interleave(self.factor, dim=1)  # back to the store's steps
        return roll.reshape(n, n_phrases * phrase, self.n_pitches)[:, : request.n_frames]


def note_gap(fake: torch.Tensor, real: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """How far the fakes' notes, thresholded as generation does, are from the real ones: the gap in
    note density plus the gap in onsets (steps where a pitch starts), per step and pitch.

    A monitor for ``best.pt`` that a held chord cannot pass: ``density_gap`` alone picked a
    bi-LSTM GAN checkpoint that held its chords (0.25 onsets per beat, the chorales 4.5) over
    the last one of the same run (1.0).

    >>> real = torch.tensor([[[1.0], [0.0], [1.0], [0.0]]])   # two notes
    >>> held = torch.tensor([[[0.9], [0.9], [0.0], [0.0]]])   # one note, as dense
    >>> round(note_gap(held, real).item(), 3)
    0.25
    """
    notes = (fake > threshold).to(real.dtype)
    gap = (notes.mean() - real.mean()).abs() + (_onsets(notes).mean() - _onsets(real).mean()).abs()
    return gap.detach()


def phrase_gap(
    fake: torch.Tensor, real: torch.Tensor, threshold: float = 0.5, n_bars: int = 1
) -> torch.Tensor:
    """How far the fakes' notes, thresholded as generation does, are from the real phrases
    ``(B, T, P)`` of ``n_bars`` bars, summed over eight statistics, each a gap in [0, 1]:

    * note density, onsets (steps where a pitch starts) and the pitch classes used in a bar
      (paper 004's UPC), relative to the real ones;
    * the share of steps without a note (a phrase that bursts and falls silent), and the share
      of steps a bar or more after the latest note start (a phrase that bursts and then holds
      its chord: a rendered piano dies away under it; the chorales never go a bar without one);
    * the pitch range within a phrase, relative to the real one (a spread over the keyboard);
    * the pitch histogram and the pitch-class histogram: half their L1 distance to the real ones.

    A monitor for ``best.pt`` (``train.monitor: phrase_gap``) that sees what ``note_gap`` misses:
    a burst of notes at each phrase's start and one held note after it has the real density and
    about the real onsets (``note_gap`` chose such checkpoints of the tiny bi-LSTM GAN).

    >>> real = torch.zeros(1, 4, 12); real[0, :, 0] = 1; real[0, :, 7] = 1   # C and G held
    >>> round(phrase_gap(real.clone(), real).item(), 6)
    0.0
    >>> round(phrase_gap(torch.zeros(1, 4, 12), real).item(), 3)   # silence: every gap at 1
    7.0
    """
    notes = (fake > threshold).to(real.dtype)
    bars_in = max(1, n_bars)

    def stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
        active = x.amax(dim=1)  # (B, P): pitches sounding in each phrase
        idx = torch.arange(x.shape[2], device=x.device, dtype=x.dtype)
        top = torch.where(active > 0, idx, -1.0).amax(dim=1)
        low = torch.where(active > 0, idx, float(x.shape[2])).amin(dim=1)
        hist = x.sum(dim=(0, 1))  # (P,)
        classes = F.pad(hist, (0, (-len(hist)) % 12)).view(-1, 12).sum(0)  # (12,), from the lowest pitch
        per_bar = x.shape[1] // bars_in
        bars = x[:, : per_bar * bars_in].unflatten(1, (-1, per_bar)).amax(dim=2)  # (B, bars, P)
        bars = F.pad(bars, (0, (-bars.shape[2]) % 12)).unflatten(2, (-1, 12)).amax(dim=2)  # (B, bars, 12)
        onsets = _onsets(x)  # (B, T, P)
        steps = torch.arange(x.shape[1], device=x.device)
        starts = onsets.amax(dim=2) > 0  # (B, T): some note starts at this step
        latest = torch.where(starts, steps, -per_bar).cummax(dim=1).values  # before the first: a bar ago
        return {
            "upc": bars.sum(dim=2).mean(),
            "density": x.mean(),
            "onsets": onsets.mean(),
            "empty": (x.amax(dim=2) == 0).to(x.dtype).mean(),
            "still": (steps - latest >= per_bar).to(x.dtype).mean(),
            "range": (top - low).clamp_min(0).mean(),
            "pitches": hist / hist.sum().clamp_min(1),
            "classes": classes / classes.sum().clamp_min(1),
        }

    f, r = stats(notes), stats(real.to(notes.dtype))
    gap = torch.zeros((), dtype=notes.dtype, device=notes.device)
    for key in ("density", "onsets", "upc", "range"):
        gap = gap + ((f[key] - r[key]).abs() / r[key].clamp_min(1e-6)).clamp_max(1.0)
    gap = gap + (f["empty"] - r["empty"]).abs() + (f["still"] - r["still"]).abs()
    for key in ("pitches", "classes"):
        gap = gap + 0.5 * (f[key] - r[key]).abs().sum()
    return gap.detach()


def _onsets(x: torch.Tensor) -> torch.Tensor:
    """``(B, T, P)`` 0/1 notes -> 1 where a pitch starts (sounds and did not at the step before)."""
    return F.relu(x - F.pad(x, (0, 0, 1, 0))[:, :-1])


def feature_gap(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """Feature matching's loss: the squared distance between the mean features ``(B, F)`` of the
    real batch and of the fakes.

    >>> feature_gap(torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[0.0, 1.0]])).item()
    5.0
    """
    return (f_real.mean(0) - f_fake.mean(0)).pow(2).sum()


def density_gap(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """How far the fakes' note density is from the real one: a crude monitor for best.pt."""
    return (fake.mean() - real.mean()).abs().detach()


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """``module``'s weights out of the autograd graph: gradients flow through it, not into it."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _drop_call_counter(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Checkpoints written before the trainer counted steps carry the model's own call counter."""
    state_dict.pop(prefix + "n_updates", None)


def _widths(config: Config) -> Config:
    """``config`` with every layer width set to ``hidden_size`` when that is positive."""
    h = config.hidden_size
    if h <= 0:
        return config
    return dataclasses.replace(
        config,
        g_lstm_size=h,
        g_bilstm_size=max(h, 2),
        g_dense_size=h,
        cnn_channels=max(h, 4),
        d_lstm_size=h,
        d_bilstm_size=max(h, 2),
        d_dense_sizes=(h,) * len(config.d_dense_sizes),
    )


def _phrase_shape(config: Config, info: DataInfo) -> tuple[int, int]:
    """``(bars per phrase, store steps per phrase step)``: the phrase dataset's facts
    (``DataInfo.window``); for a checkpoint saved before the data carried them, worked out from
    the store's representation and ``model.n_bars`` (4 when unset)."""
    window = dict(info.window)
    if window:
        n_bars = int(window["n_bars"])
        if config.n_bars is not None and config.n_bars != n_bars:
            raise ParameterError(
                f"model.n_bars={config.n_bars} but the data's phrases have {n_bars} bars; leave model.n_bars "
                "unset (the model follows data.options.n_bars)"
            )
        return n_bars, int(window["resolution_factor"])
    n_bars = config.n_bars or 4
    rep = info.representation
    if not rep.get("resolution"):
        return n_bars, 1
    store_steps = n_bars * int(rep["resolution"]) * int(rep["beats_per_bar"])
    factor = store_steps // int(info.seq_len or 1)
    if factor < 1 or factor * info.seq_len != store_steps or int(rep["resolution"]) % factor:
        raise ParameterError(
            f"phrases of {info.seq_len} steps do not fit n_bars={n_bars} bars of {rep['resolution']} steps per beat"
        )
    return n_bars, factor
