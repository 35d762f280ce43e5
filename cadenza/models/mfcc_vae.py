"""Variational autoencoder over whole MFCC clips (paper 003), made stable.

Paper 003 flattens a 30-second clip of 20 MFCCs, ``(20, 1293)``, to 25860 numbers, encodes it
with one dense layer of 2580 units into the mean and log-variance of 128 latent Gaussians,
samples ``z`` by reparameterisation and decodes it with a dense layer of 2580 units back to
25860 numbers; the loss is the KL divergence plus a reconstruction error. On ~300 clips of raw
MFCCs (values in the hundreds) its loss went to 1e22 and then NaN.

The same network here, with what keeps it finite and useful:

* **Normalised inputs.** The ``sequence`` dataset standardises every coefficient with the
  feature store's training statistics (``data.normalization: standard``; the statistics are
  saved with the checkpoint and generation undoes them). No "template" clip rescales anything.
* **Bounded log-variance.** The encoder's log-variance goes through a smooth clamp into
  ``[logvar_min, logvar_max]`` (:func:`soft_clamp`: the identity in between, with a gradient
  everywhere), so ``exp(logvar)`` can neither overflow nor vanish, whatever the input's scale.
* **A reconstruction scale that balances the KL.** The reconstruction term is a Gaussian
  negative log-likelihood with a learned log-variance per coefficient (bounded below by
  ``recon_logvar_min``), so the model finds the weight of the reconstruction against the KL
  itself instead of a hand-picked factor (``learn_recon_variance=false``: unit variance,
  half the squared error).
* **KL warm-up and free bits.** The KL weight grows linearly from 0 to 1 over
  ``kl_warmup_steps`` training steps, counted by the trainer (``n_steps_trained``), so a
  resumed run carries on from its count. Each latent unit's KL (averaged over the batch) is
  charged at least ``free_bits`` nats, so that units are not pushed to the prior all at once.
  Validation always reports the full negative ELBO (KL weight 1).
* **Gradient clipping** is the trainer's: ``train.grad_clip`` in the configs.

The loss is the negative ELBO per coefficient and frame (divided by ``T * F``), so that its
value and the gradient norm that ``grad_clip`` bounds do not grow with the clip length.
Metrics logged beside it: ``recon`` (NLL per element), ``mse`` (normalised units), ``kl``
(nats per clip), ``kl_weight`` and ``active_units`` (latent units whose batch-mean KL is above
:data:`ACTIVE_KL`).

Generation (``cadenza generate RUN --option key=value``) decodes latent codes into clips of
``T = data.seq_len`` frames (the decoder's mean; its noise would only add white noise):

``temperature`` (default 1)
    Standard deviation of the prior samples.
``walk`` (default 0.3)
    For more than one clip, successive codes follow a random walk that keeps the prior:
    ``z[k+1] = sqrt(1 - walk**2) * z[k] + walk * eps`` (0: one clip repeated, 1: independent).
``crossfade`` (default ``T // 8`` frames)
    Successive clips overlap by this many frames, mixed linearly in the normalised MFCC
    domain; every clip after the first adds ``T - crossfade`` frames.
``interpolate=A,B`` and ``steps`` (default: as many as the length needs, at least 2)
    Encode the first ``T`` frames of audio files ``A`` and ``B`` (read through the run's
    representation, normalised with the run's statistics), then decode ``steps`` points
    evenly spaced on the line between their latent means, A to B, joined as above; a longer
    request goes back from B to A, and so on, a shorter one cuts the path. All samples are the
    same. This needs the
    generator's normaliser (``GenerationRequest.normalizer``); :meth:`Model.interpolate` does
    the same from normalised clips.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cadenza.errors import ParameterError
from cadenza.models import DataInfo, GenerationRequest

_LOG_2PI = math.log(2.0 * math.pi)
#: A latent unit is active when its KL, averaged over a batch, is above this (nats).
ACTIVE_KL = 0.01
#: ``--option`` keys of :meth:`Model.generate`.
OPTIONS = ("temperature", "walk", "crossfade", "interpolate", "steps")


@dataclasses.dataclass
class Config:
    """Hyper-parameters; widths are paper 003's (25860 -> 2580 -> 128 -> 2580 -> 25860)."""

    hidden_size: int = dataclasses.field(default=2580, metadata={"min": 1})
    latent_size: int = dataclasses.field(default=128, metadata={"min": 1})
    #: Bounds of the encoder's log-variance; None on both: unbounded, the paper's plain VAE.
    logvar_min: float | None = -8.0
    logvar_max: float | None = 4.0
    #: Learn the reconstruction's log-variance per coefficient (Gaussian NLL); False: unit variance.
    learn_recon_variance: bool = True
    #: Lower bound of the learned reconstruction log-variance (std 0.05 in normalised units).
    recon_logvar_min: float = -6.0
    #: Training steps over which the KL weight grows linearly from 0 to 1; 0: 1 from the start.
    kl_warmup_steps: int = dataclasses.field(default=1000, metadata={"min": 0})
    #: Nats per latent unit below which its KL is not reduced further (0: off).
    free_bits: float = dataclasses.field(default=0.0, metadata={"min": 0.0})

    @classmethod
    def paper(cls, **changes: Any) -> Config:
        """Paper 003's widths with the stabilisers on."""
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> Config:
        """A size that trains on two CPU cores in a minute or two (clips of ~64 frames)."""
        return cls(**{"hidden_size": 128, "latent_size": 16, "kl_warmup_steps": 100, **changes})


def soft_clamp(x: torch.Tensor, lo: float | None, hi: float | None) -> torch.Tensor:
    """``x`` smoothly bounded to ``[lo, hi]``: about ``x`` well inside, never outside, a gradient
    everywhere but within 1e-5 of a bound (where a last hard clamp removes softplus's rounding)."""
    if lo is not None:
        x = lo + F.softplus(x - lo)
    if hi is not None:
        x = hi - F.softplus(hi - x)
    return x.clamp(lo, hi) if lo is not None or hi is not None else x


def kl_per_unit(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, 1))`` of every unit: ``0.5 * (mu**2 + exp(logvar) - 1 - logvar)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class Model(nn.Module):
    """Dense VAE over clips of ``T`` normalised MFCC frames ``(B, T, F)``.

    Examples
    --------
    >>> from cadenza.models import DataInfo
    >>> model = Model(Config.tiny(hidden_size=8, latent_size=4), DataInfo(n_features=20, seq_len=16))
    >>> x_hat, mu, logvar = model(torch.zeros(2, 16, 20))
    >>> x_hat.shape, mu.shape
    (torch.Size([2, 16, 20]), torch.Size([2, 4]))
    """

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__()
        if not info.seq_len:
            raise ParameterError("mfcc_vae encodes clips of seq_len frames (the sequence dataset)")
        lo, hi = config.logvar_min, config.logvar_max
        if lo is not None and hi is not None and not lo < hi:
            raise ParameterError(f"logvar_min must be below logvar_max, got {lo} and {hi}")
        self.config = config
        self.seq_len, self.n_features = int(info.seq_len), int(info.n_features)
        self.representation = dict(info.representation)
        self.n_seed_frames = 0  # prior samples need no real music
        self.n_steps_trained = 0  # set by the trainer before every batch
        n_in, h, d = self.seq_len * self.n_features, config.hidden_size, config.latent_size
        self.encoder = nn.Linear(n_in, h)  # paper: 25860 -> 2580
        self.mean = nn.Linear(h, d)  # 2580 -> 128
        self.logvar = nn.Linear(h, d)  # 2580 -> 128
        self.decoder = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, n_in))  # 128 -> 2580 -> 25860
        # log-variance of the reconstruction, one per coefficient, shared by every frame
        self.recon_logvar = nn.Parameter(
            torch.zeros(self.n_features), requires_grad=config.learn_recon_variance
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips ``(B, T, F)`` -> mean and bounded log-variance ``(B, D)`` of ``q(z | x)``."""
        h = F.relu(self.encoder(x.flatten(1)))  # (B, T*F) -> (B, H)
        return self.mean(h), soft_clamp(self.logvar(h), self.config.logvar_min, self.config.logvar_max)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, D)`` -> mean clips ``(B, T, F)``."""
        return self.decoder(z).view(-1, self.seq_len, self.n_features)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) * eps``: a sample of ``q(z | x)`` differentiable in ``mu``, ``logvar``."""
        return mu + (0.5 * logvar).exp() * eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clips ``(B, T, F)`` -> reconstruction ``(B, T, F)`` from a sampled ``z``, mean and log-variance ``(B, D)``."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, torch.randn_like(mu))
        return self.decode(z), mu, logvar

    # ------------------------------------------------------------------ training
    def kl_weight(self) -> float:
        """The KL's weight at the trainer's step: linear warm-up from 0 to 1 over ``kl_warmup_steps``."""
        warmup = self.config.kl_warmup_steps
        return 1.0 if warmup <= 0 else min(1.0, self.n_steps_trained / warmup)

    def recon_nll(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Gaussian negative log-likelihood of ``x`` per element ``(B, T, F)``."""
        s = self.recon_logvar.clamp_min(self.config.recon_logvar_min)
        return 0.5 * (_LOG_2PI + s + (x - x_hat).pow(2) * torch.exp(-s))

    def losses(self, batch: dict[str, torch.Tensor], *, step: str | None = None) -> dict[str, torch.Tensor]:
        """Negative ELBO per element (KL weighted by the warm-up in training, 1 in validation)."""
        x = batch["x"].float()  # the target is x itself, whatever y the windowing gives
        x_hat, mu, logvar = self(x)
        x_hat, mu, logvar = x_hat.float(), mu.float(), logvar.float()
        recon = self.recon_nll(x, x_hat).flatten(1).sum(1).mean()  # nats per clip
        kl_units = kl_per_unit(mu, logvar).mean(0)  # (D,) batch mean
        kl = kl_units.sum()
        charged = kl_units.clamp_min(self.config.free_bits).sum() if self.config.free_bits > 0 else kl
        beta = self.kl_weight() if self.training else 1.0
        per_element = self.seq_len * self.n_features
        return {
            "loss": (recon + beta * charged) / per_element,
            "recon": recon.detach() / per_element,
            "mse": F.mse_loss(x_hat, x).detach(),
            "kl": kl.detach(),
            "kl_weight": torch.tensor(beta, device=x.device),
            "active_units": (kl_units.detach() > ACTIVE_KL).sum().float(),
        }

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def interpolate(
        self, xa: torch.Tensor, xb: torch.Tensor, steps: int, *, crossfade: int | None = None
    ) -> torch.Tensor:
        """Normalised clips ``(T, F)`` (or longer: the first T frames) of A and B -> ``(L, F)`` frames.

        ``steps`` points evenly spaced from A's latent mean to B's (t = 0 and 1 included) are
        decoded and joined with :meth:`join`: ``L = steps * T - (steps - 1) * crossfade``.
        """
        if steps < 2:
            raise ParameterError(f"interpolation needs steps >= 2, got {steps}")
        return self.join(self.decode(self._line(xa, xb, torch.linspace(0.0, 1.0, steps))), crossfade)

    def _line(self, xa: torch.Tensor, xb: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Codes ``(len(t), D)`` at ``t`` on the line from A's latent mean (t = 0) to B's (t = 1)."""
        T = self.seq_len
        for name, x in (("A", xa), ("B", xb)):
            if x.ndim != 2 or x.shape[0] < T or x.shape[1] != self.n_features:
                raise ParameterError(
                    f"interpolation clip {name} must have at least {T} frames of {self.n_features} features, "
                    f"got shape {tuple(x.shape)}"
                )
        device = self.mean.weight.device
        mu, _ = self.encode(torch.stack([xa[:T], xb[:T]]).float().to(device))  # (2, D)
        t = t.to(device)[:, None]
        return (1 - t) * mu[0] + t * mu[1]

    def join(self, clips: torch.Tensor, crossfade: int | None = None) -> torch.Tensor:
        """Clips ``(K, T, F)`` one after the other, each overlapping the last by ``crossfade`` frames
        mixed linearly -> ``(K * T - (K - 1) * crossfade, F)``."""
        T = self.seq_len
        o = self._crossfade(crossfade)
        out = clips[0]
        ramp = torch.linspace(0.0, 1.0, o + 2, device=clips.device)[1:-1, None]  # (o, 1), 0 and 1 excluded
        for clip in clips[1:]:
            mixed = out[out.shape[0] - o :] * (1 - ramp) + clip[:o] * ramp
            out = torch.cat([out[: out.shape[0] - o], mixed, clip[o:T]])
        return out

    def _crossfade(self, crossfade: Any) -> int:
        o = self.seq_len // 8 if crossfade is None else int(crossfade)
        if not 0 <= o < self.seq_len:
            raise ParameterError(f"crossfade must be 0..{self.seq_len - 1} frames, got {o}")
        return o

    @staticmethod
    def n_clips(n_frames: int, T: int, overlap: int) -> int:
        """Clips of ``T`` frames overlapping by ``overlap`` that cover ``n_frames``."""
        return 1 + max(0, math.ceil((n_frames - T) / (T - overlap)))

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        """``(n, n_frames, F)`` normalised frames: prior samples (a latent walk), or an interpolation."""
        opts = dict(request.options)
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise ParameterError(
                f"unknown mfcc_vae generation options {unknown}; expected some of {list(OPTIONS)}"
            )
        T, n, device = self.seq_len, request.n, self.mean.weight.device
        overlap = self._crossfade(opts.get("crossfade"))
        k = self.n_clips(request.n_frames, T, overlap)
        if opts.get("interpolate") is not None:
            xa, xb = self._read_pair(opts["interpolate"], request)
            steps = max(2, k) if opts.get("steps") is None else int(opts["steps"])
            if steps < 2:
                raise ParameterError(f"interpolation needs steps >= 2, got {steps}")
            ramp = torch.linspace(0.0, 1.0, steps)
            cycle = torch.cat([ramp, ramp.flip(0)[1:-1]]) if steps > 2 else ramp  # A..B..A..
            t = cycle.repeat(math.ceil(max(k, steps) / len(cycle)))[: max(k, steps)]
            frames = self.join(self.decode(self._line(xa, xb, t)), overlap)
            return frames[: request.n_frames].expand(n, -1, -1).contiguous()
        temperature, walk = float(opts.get("temperature", 1.0)), float(opts.get("walk", 0.3))
        if temperature < 0 or not 0 <= walk <= 1:
            raise ParameterError(f"temperature must be >= 0 and walk in [0, 1], got {temperature} and {walk}")
        d = self.config.latent_size
        eps = torch.randn(k, n, d, generator=request.generator, device=device) * temperature
        z = [eps[0]]
        for step in eps[1:]:  # a walk that keeps the prior N(0, temperature**2)
            z.append(math.sqrt(1.0 - walk**2) * z[-1] + walk * step)
        clips = self.decode(torch.stack(z, 1).reshape(n * k, d)).view(n, k, T, self.n_features)
        return torch.stack([self.join(c, overlap)[: request.n_frames] for c in clips])

    def _read_pair(self, value: Any, request: GenerationRequest) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised frames of ``interpolate=A,B`` (two audio files)."""
        paths = [p.strip() for p in str(value).split(",")]
        if len(paths) != 2 or not all(paths):
            raise ParameterError(f"interpolate takes two audio files, A,B; got {value!r}")
        normalizer = request.normalizer
        if normalizer is None:
            raise ParameterError(
                "interpolate=A,B needs the run's normalisation statistics, which this generator does not pass "
                "(GenerationRequest.normalizer); use Model.interpolate on normalised clips"
            )
        from cadenza.representations import representation_from_dict

        rep = representation_from_dict(self.representation)
        clips = []
        for path in paths:
            frames = np.asarray(normalizer.apply(rep.read(path, max_seconds=600.0)), dtype=np.float32)
            if frames.shape[0] < self.seq_len:
                raise ParameterError(
                    f"{path} gives {frames.shape[0]} frames; interpolation encodes clips of {self.seq_len} "
                    f"({self.seq_len / rep.frame_rate:.2f} s)"
                )
            clips.append(torch.from_numpy(frames))
        return clips[0], clips[1]
