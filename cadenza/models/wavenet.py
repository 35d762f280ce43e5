"""WaveNet over mu-law audio (paper 002's second model, after van den Oord et al. 2016).

Samples are mu-law classes (256 by default). A causal input convolution (kernel 2 over the
one-hot classes) feeds ``n_stacks`` stacks of dilated causal convolutions with dilations
1, 2, 4, ... 2**(n_layers - 1) (the common defaults: 5 stacks of 1...512). Each layer is a
gated unit ``tanh(W_f * x) * sigmoid(W_g * x)`` with a residual 1x1 convolution back into the
layer's input and a skip 1x1 convolution into the sum that feeds the head
``ReLU -> 1x1 conv -> ReLU -> 1x1 conv -> softmax over the classes``; the loss is the
cross-entropy of the next sample. With labels (``data.label_key``, e.g. composer) the model is
globally conditioned: a label embedding, projected per layer, is added to the gates, so one
model learns several styles and generation can blend them (``style={"bach": 0.5, ...}``: the
weighted mean of the label embeddings).

Receptive field (kernel 2 everywhere): ``n_stacks * (2**n_layers - 1) + 2`` samples, 5117 for
the defaults (:func:`receptive_field`).

Generation (``generate`` options ``mode``, ``temperature``, ``min_p``, ``quiet_db``, ``style``,
``seed``) draws each sample from the softmax at ``temperature`` (0: the most likely class),
leaving out the classes less likely than ``min_p`` times the likeliest (default
:data:`DEFAULT_MIN_P`; 0 draws from every class, as the paper) except in a rest: where a
stream's level over its receptive field is below ``quiet_db`` (default
:data:`DEFAULT_QUIET_DB`; ``off``: the cut everywhere) it draws from every class, so that
it can leave the rest (:class:`Level`). Each sample is drawn by inverting the
CDF at a uniform number drawn up front from the request's generator, so every mode draws the
same samples from the same logits. Modes:

``naive``
    Recomputes the whole receptive field for every new sample (why paper 000 quotes a
    minute of compute per second of audio). Kept as the reference.
``cached``
    Fast generation (Paine et al. 2016): each layer keeps a queue of its past inputs (a ring
    buffer of ``dilation`` entries), so a new sample costs one step per layer; batched over
    streams, plain torch (any device).
``fast`` (the default)
    The cached step compiled with numba (:mod:`cadenza.kernels.wavenet_step`) as one loop over
    all samples and layers, removing the per-sample Python overhead. The streams (``--n``) are
    computed together, one matrix product per layer for all of them, and split over the
    threads, so several clips cost far less than one clip each. It runs on the CPU whatever
    device holds the model (a model on a GPU lends it a CPU copy of its step's weights): one
    sample at a time, a GPU waits on kernel launches, and on one H200 the small WaveNet's eager
    step made 326 samples/s and the same step in a compiled CUDA graph 6,540, where this loop
    with the model on the GPU made 51,600 (``benchmarks/gpu.py``). Runs as ``cached`` with
    the kernels off (``CADENZA_KERNELS=off``) or where numba's guard fails.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cadenza.errors import ParameterError
from cadenza.kernels import wavenet_step
from cadenza.models import DataInfo, GenerationRequest
from cadenza.representations.waveform import mu_law_decode, mu_law_encode

MODES = ("fast", "cached", "naive")
#: ``generate``'s ``min_p``: classes less likely than a fifth of the likeliest are not drawn.
#: Measured on the tiny model against the held-out chorales (2026-12-02; see docs/models.md):
#: after the study's 8 minutes (5771 steps, 50 clips) 39 clips were flagged noise at 0.1 and
#: none at 0.2 (20 clips: mean flatness 0.039, KAD 0.99 where 0.1 gave 1.28); after the demo's
#: minute (636 steps) neither cut is flagged (KAD 1.57 both); with every class drawable
#: (``min_p=0``, the paper) every clip was noise. Higher cuts begin to fall silent.
DEFAULT_MIN_P = 0.2
#: ``generate``'s ``quiet_db``: while a stream's level over about its receptive field (an
#: exponential mean square, time constant one receptive field) is below this (dBFS), ``min_p``
#: is not applied and the sample is drawn from every class. In a rest the likeliest classes are
#: the rest's own hiss and the music's return lives in the tail that ``min_p`` cuts, so with the
#: cut everywhere a stream that reaches a rest never leaves it: measured on the tiny model after
#: 10,893 steps (2026-12-05; docs/models.md), 17 of 24 clips seeded with a held-out rest
#: (-55..-40 dBFS) held a -48 dBFS hiss for ten seconds, 0 of 24 with this rule; seeds from the
#: music sound as before (0 of 24 quiet either way). ``None`` (``quiet_db=off``) cuts everywhere.
DEFAULT_QUIET_DB = -40.0


def receptive_field(n_stacks: int, n_layers: int) -> int:
    """Samples that one output sees: ``n_stacks * (2**n_layers - 1)`` from the dilated layers,
    one more from the causal input convolution, and the sample itself.

    >>> receptive_field(5, 10)
    5117
    """
    return n_stacks * (2**n_layers - 1) + 2


@dataclasses.dataclass
class Config:
    """Hyper-parameters; the defaults are the common WaveNet defaults that paper 002 used."""

    n_stacks: int = dataclasses.field(default=5, metadata={"min": 1})
    n_layers: int = dataclasses.field(default=10, metadata={"min": 1})  # dilations 1 ... 2**(n_layers-1)
    residual_channels: int = dataclasses.field(default=32, metadata={"min": 1})
    dilation_channels: int = dataclasses.field(default=32, metadata={"min": 1})
    skip_channels: int = dataclasses.field(default=512, metadata={"min": 1})
    #: Mu-law classes: a mu-law store's own count (leave unset); for a float store, the
    #: quantisation the model encodes its input with on the fly (default 256).
    n_classes: int | None = dataclasses.field(default=None, metadata={"min": 2})
    label_channels: int = dataclasses.field(default=32, metadata={"min": 0})  # 0: no conditioning
    # The loss only at positions that see a whole receptive field (as tensorflow-wavenet);
    # training windows must then be longer than the receptive field.
    use_full_context_only: bool = True

    @classmethod
    def paper(cls, **changes: Any) -> Config:
        """5 stacks of dilations 1...512, 32 residual/dilation channels, 512 skip channels."""
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> Config:
        """2 stacks of 1...128 at 16 channels (receptive field 512): trains on 2 CPU cores in minutes."""
        base = {"n_stacks": 2, "n_layers": 8, "residual_channels": 16, "dilation_channels": 16}
        return cls(**{**base, "skip_channels": 64, "label_channels": 16, **changes})


class Model(nn.Module):
    """WaveNet with optional global conditioning on the corpus labels.

    Examples
    --------
    >>> from cadenza.models import DataInfo
    >>> info = DataInfo(n_features=1, labels=("bach", "mozart"))
    >>> model = Model(Config.tiny(n_stacks=1, n_layers=3), info)
    >>> model.receptive_field
    9
    >>> model(torch.zeros(2, 20, dtype=torch.long), model.label_vector(torch.tensor([0, 1]))).shape
    torch.Size([2, 256, 20])
    """

    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__()
        rep = dict(info.representation)  # a waveform (ModelSpec.requires)
        # a float store is mu-law encoded on the fly; a mu-law store says how many classes it has
        self.encodes_input = rep.get("encoding") == "float"
        stored = None if self.encodes_input or not rep else int(rep.get("n_classes", 256))
        if config.n_classes is not None and stored is not None and config.n_classes != stored:
            raise ParameterError(
                f"model.n_classes={config.n_classes} but the store's mu-law has {stored} classes"
            )
        self.n_classes = int(stored or config.n_classes or 256)
        self.config = config
        self.labels = tuple(info.labels)
        self.dilations = [2**i for _ in range(config.n_stacks) for i in range(config.n_layers)]
        self.receptive_field = receptive_field(config.n_stacks, config.n_layers)
        self.n_seed_frames = self.receptive_field
        C, R, D, S = (
            self.n_classes,
            config.residual_channels,
            config.dilation_channels,
            config.skip_channels,
        )
        G = config.label_channels if self.labels else 0
        self.input_conv = nn.Conv1d(C, R, 2)  # over one-hot classes, applied as two look-ups
        self.dilated = nn.ModuleList(nn.Conv1d(R, 2 * D, 2, dilation=d) for d in self.dilations)
        self.skip = nn.ModuleList(nn.Conv1d(D, S, 1) for _ in self.dilations)
        # the last layer's residual output would feed nothing, so it has none
        self.residual = nn.ModuleList(nn.Conv1d(D, R, 1) for _ in self.dilations[:-1])
        self.label_embedding = nn.Embedding(len(self.labels), G) if G else None
        self.label_proj = (
            nn.ModuleList(nn.Linear(G, 2 * D, bias=False) for _ in self.dilations) if G else None
        )
        self.head1 = nn.Conv1d(S, S, 1)
        self.head2 = nn.Conv1d(S, C, 1)

    # ------------------------------------------------------------------ the network
    def embed(self, c: torch.Tensor) -> torch.Tensor:
        """Causal input convolution of classes ``(B, T)`` -> ``(B, R, T)``."""
        w = self.input_conv.weight  # (R, C, 2): tap 0 sees t-1, tap 1 sees t
        x = F.embedding(c, w[:, :, 1].t()) + F.pad(F.embedding(c, w[:, :, 0].t()), (0, 0, 1, 0))[:, :-1]
        return (x + self.input_conv.bias).transpose(1, 2)

    def label_vector(self, weights: torch.Tensor) -> torch.Tensor | None:
        """Label ids ``(B,)`` (-1: unlabelled, conditioned on zeros) or blend weights ``(B, n_labels)``
        -> conditioning vectors ``(B, G)``; None for an unconditioned model."""
        if self.label_embedding is None:
            return None
        if weights.dim() == 1:
            weights = F.one_hot(weights.clamp(min=0), len(self.labels)).float() * (weights >= 0)[:, None]
        return weights.float() @ self.label_embedding.weight  # (B, G)

    def forward(
        self, c: torch.Tensor, cond: torch.Tensor | None = None, *, inputs: list | None = None
    ) -> torch.Tensor:
        """Classes ``(B, T)`` -> logits ``(B, n_classes, T)`` of the next sample at every step.

        ``inputs``, when a list, receives every layer's input ``(B, R, T)`` (to prime the queues).
        """
        D = self.config.dilation_channels
        x = self.embed(c)  # (B, R, T)
        skips = 0.0
        for i, d in enumerate(self.dilations):
            if inputs is not None:
                inputs.append(x)
            h = self.dilated[i](F.pad(x, (d, 0)))  # (B, 2D, T), causal
            if cond is not None and self.label_proj is not None:
                h = h + self.label_proj[i](cond)[:, :, None]
            z = torch.tanh(h[:, :D]) * torch.sigmoid(h[:, D:])  # (B, D, T)
            skips = skips + self.skip[i](z)
            if i < len(self.residual):
                x = x + self.residual[i](z)
        return self.head2(F.relu(self.head1(F.relu(skips))))  # (B, C, T)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch["x"], batch["y"]
        if self.encodes_input:  # float samples -> mu-law classes, as the store would have held them
            x, y = (
                mu_law_encode(x.float(), n_classes=self.n_classes),
                mu_law_encode(y.float(), n_classes=self.n_classes),
            )
        elif x.is_floating_point():
            raise ParameterError("wavenet was built for a mu-law store but got float samples")
        cond = self.label_vector(batch["label"]) if "label" in batch else None
        logits = self(x, cond)  # (B, C, T)
        if self.config.use_full_context_only:
            start = self.receptive_field - 1
            if x.shape[1] <= start:
                raise ParameterError(
                    f"training windows of {x.shape[1]} samples are not longer than the receptive field "
                    f"({self.receptive_field}); use longer windows (data.options.n_input/n_output) or "
                    "model.use_full_context_only=false"
                )
            logits, y = logits[:, :, start:], y[:, start:]
        return {"loss": F.cross_entropy(logits.float(), y)}

    # ------------------------------------------------------------------ generation
    def style_weights(self, style: Mapping[str, float] | None) -> torch.Tensor | None:
        """Blend weights ``(n_labels,)`` summing to 1 from ``{label: weight}``; None when unconditioned.

        Without a style, every label weighs the same.
        """
        if self.label_embedding is None:
            if style:
                raise ParameterError(
                    "this wavenet was trained without labels (data.label_key): no style to mix"
                )
            return None
        if not style:
            return torch.full((len(self.labels),), 1.0 / len(self.labels))
        w = torch.zeros(len(self.labels))
        for name, weight in style.items():
            if name not in self.labels:
                raise ParameterError(f"unknown style {name!r}; this model knows {', '.join(self.labels)}")
            weight = float(weight)
            if not (math.isfinite(weight) and weight >= 0):
                raise ParameterError(f"style weight of {name!r} must be a finite number >= 0, got {weight}")
            w[self.labels.index(name)] += weight
        if w.sum() <= 0:
            raise ParameterError(f"style weights must not all be zero: {dict(style)}")
        return w / w.sum()

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        """``request.n_frames`` new samples after the seed -> ``(n, n_frames, 1)`` classes (as floats).

        Options: ``mode`` (fast, cached, naive), ``temperature`` (default 1), ``min_p``,
        ``quiet_db`` (a level in dBFS, or ``off``), ``style``
        (``{label: weight}``), ``seed`` (``real``: the request's seed clip, ``silence``).
        """
        opts = dict(request.options)
        mode = str(opts.pop("mode", "fast"))
        temperature = float(opts.pop("temperature", 1.0))
        min_p = float(opts.pop("min_p", DEFAULT_MIN_P))
        quiet_db = opts.pop("quiet_db", DEFAULT_QUIET_DB)
        style = opts.pop("style", None)
        seed_kind = str(opts.pop("seed", "real"))
        bad = opts or mode not in MODES or seed_kind not in ("real", "silence")
        quiet_db = _quiet_db(quiet_db)
        if bad or not temperature >= 0 or not 0 <= min_p < 1 or (quiet_db is not None and quiet_db > 0):
            raise ParameterError(
                f"wavenet generation options: mode in {MODES}, temperature >= 0, min_p in [0, 1), "
                f"quiet_db a level <= 0 dBFS or off, seed real|silence, style NAME=W,...; got {request.options}"
            )
        device = self.input_conv.weight.device
        if request.seed is None or seed_kind == "silence":
            seed = torch.full(
                (request.n, self.receptive_field), self.silence_class, dtype=torch.long, device=device
            )
        else:
            seed = request.seed[..., 0]
            seed = (
                mu_law_encode(seed, n_classes=self.n_classes) if self.encodes_input else seed.round().long()
            )
            seed = seed.clamp(0, self.n_classes - 1)
        weights = self.style_weights(style)
        cond = None if weights is None else self.label_vector(weights.to(device).expand(request.n, -1))
        u = torch.rand(
            request.n, request.n_frames, generator=request.generator, device=device, dtype=torch.float64
        )
        classes, _ = self.sample(
            seed,
            request.n_frames,
            cond=cond,
            temperature=temperature,
            uniforms=u,
            mode=mode,
            min_p=min_p,
            quiet_db=quiet_db,
        )
        new = classes[:, seed.shape[1] :, None]
        return mu_law_decode(new, n_classes=self.n_classes) if self.encodes_input else new.float()

    @property
    def silence_class(self) -> int:
        return self.n_classes // 2  # mu-law of 0.0 (half-to-even rounding of mu / 2)

    @torch.no_grad()
    def sample(
        self,
        seed: torch.Tensor,
        n_new: int,
        *,
        cond: torch.Tensor | None = None,
        temperature: float = 1.0,
        uniforms: torch.Tensor | None = None,
        mode: str = "cached",
        return_logits: bool = False,
        min_p: float = 0.0,
        quiet_db: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Continue seed classes ``(B, T0)`` by ``n_new`` samples (each drawn by :func:`draw`).

        ``min_p`` applies to the streams whose recent level (:class:`Level`) is at least
        ``quiet_db`` dBFS (every stream when ``quiet_db`` is None); the others draw from every class.
        Returns the classes ``(B, T0 + n_new)`` and, with ``return_logits``, the logits that drew
        each new sample ``(B, n_new, C)``.
        """
        if mode not in MODES:
            raise ParameterError(f"unknown generation mode {mode!r}; expected one of {MODES}")
        B, T0 = seed.shape
        if T0 < 1:
            raise ParameterError("wavenet generation needs a seed of at least one sample")
        classes = torch.cat([seed, seed.new_zeros(B, n_new)], dim=1)
        u = uniforms if uniforms is not None else torch.rand(B, n_new, dtype=torch.float64)
        level = Level(seed, self.n_classes, self.receptive_field, quiet_db if min_p > 0 else None)
        logits = seed.new_zeros((B, n_new, self.n_classes), dtype=torch.float32) if return_logits else None
        if mode == "fast" and not wavenet_step.available(torch.device("cpu")):
            mode = "cached"
        if mode == "naive":
            for j, t in enumerate(range(T0 - 1, T0 + n_new - 1)):
                window = classes[:, max(0, t + 1 - self.receptive_field) : t + 1]
                lg = self(window, cond)[:, :, -1]
                if logits is not None:
                    logits[:, j] = lg
                classes[:, t + 1] = level.draw(lg, temperature, u[:, j], min_p)
            return classes, logits
        w = self._step_weights(cond, B)
        if mode == "fast":  # the same step, compiled, on the CPU; it reads the seed into its queues itself
            on_cpu = classes.device.type == "cpu"
            c_host, u_host = (classes, u) if on_cpu else (classes.cpu(), u.cpu())
            lg_host = logits if on_cpu or logits is None else logits.cpu()
            w_host = w if on_cpu else [a.cpu() for a in w]
            wavenet_step.run(
                c_host,
                T0,
                None,
                self.dilations,
                w_host,
                u_host,
                temperature,
                lg_host,
                min_p=min_p,
                level=level,
            )
            if not on_cpu:
                classes.copy_(c_host)
                if logits is not None:
                    logits.copy_(lg_host)
        else:
            ring = self._prime(classes[:, : T0 - 1], cond)
            self._cached_loop(classes, T0, ring, w, u, temperature, logits, min_p, level)
        return classes, logits

    def _prime(self, history: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Queues after reading ``history`` ``(B, T)``: one ring ``(sum(dilations), B, R)`` in which
        layer ``i`` owns ``dilations[i]`` slots, slot ``t % d`` holding its input at time ``t``."""
        B, T = history.shape
        R = self.config.residual_channels
        ring = history.new_zeros((sum(self.dilations), B, R), dtype=torch.float32)
        if T:
            inputs: list[torch.Tensor] = []
            self(history, cond, inputs=inputs)
            offset = 0
            for x, d in zip(inputs, self.dilations):
                t = torch.arange(max(0, T - d), T, device=ring.device)
                ring[offset + t % d] = x[:, :, t].permute(2, 0, 1)  # (times, B, R)
                offset += d
        return ring

    def _step_weights(self, cond: torch.Tensor | None, B: int) -> list[torch.Tensor]:
        """Contiguous float32 CPU-layout weights of one step, laid out ``(in, out)`` for ``x @ W``."""
        L, D = len(self.dilations), self.config.dilation_channels
        R = self.config.residual_channels
        w_in = self.input_conv.weight
        dil = torch.stack(
            [torch.cat([m.weight[:, :, 0], m.weight[:, :, 1]], dim=1).t() for m in self.dilated]
        )
        bias = torch.stack([m.bias for m in self.dilated])[:, None, :].expand(L, B, 2 * D).clone()
        if cond is not None and self.label_proj is not None:
            bias += torch.stack([p(cond) for p in self.label_proj])  # (L, B, 2D)
        res = torch.zeros(L, D, R, device=dil.device)
        res_b = torch.zeros(L, R, device=dil.device)
        if self.residual:
            res[:-1] = torch.stack([m.weight[:, :, 0].t() for m in self.residual])
            res_b[:-1] = torch.stack([m.bias for m in self.residual])
        skip = torch.cat([m.weight[:, :, 0].t() for m in self.skip])  # (L*D, S)
        skip_b = torch.stack([m.bias for m in self.skip]).sum(0)
        out = [
            w_in[:, :, 0].t(), w_in[:, :, 1].t(), self.input_conv.bias, dil, bias, res, res_b, skip, skip_b,
            self.head1.weight[:, :, 0].t(), self.head1.bias, self.head2.weight[:, :, 0].t(), self.head2.bias,
        ]  # fmt: skip
        return [a.detach().float().contiguous() for a in out]

    def _cached_loop(
        self,
        classes: torch.Tensor,
        T0: int,
        ring: torch.Tensor,
        w: list[torch.Tensor],
        u: torch.Tensor,
        temperature: float,
        logits: torch.Tensor | None,
        min_p: float = 0.0,
        level: Level | None = None,
    ) -> None:
        """The cached step in torch, one sample at a time for all streams (fills ``classes`` in place)."""
        e0, e1, b_in, dil, bias, res, res_b, skip, skip_b, h1, hb1, h2, hb2 = w
        D = self.config.dilation_channels
        L = len(self.dilations)
        offsets = np.cumsum([0, *self.dilations])
        zs = ring.new_empty(classes.shape[0], L * D)
        for t in range(T0 - 1, classes.shape[1] - 1):
            x = e1[classes[:, t]] + b_in
            if t > 0:
                x = x + e0[classes[:, t - 1]]
            for i, d in enumerate(self.dilations):
                slot = int(offsets[i]) + t % d
                h = torch.addmm(bias[i], torch.cat([ring[slot], x], dim=1), dil[i])  # (B, 2D)
                ring[slot] = x
                z = torch.tanh(h[:, :D]) * torch.sigmoid(h[:, D:])
                zs[:, i * D : (i + 1) * D] = z
                if i < L - 1:
                    x = torch.addmm(x + res_b[i], z, res[i])
            a = torch.relu(torch.addmm(hb1, torch.relu(torch.addmm(skip_b, zs, skip)), h1))
            lg = torch.addmm(hb2, a, h2)  # (B, C)
            j = t + 1 - T0
            if logits is not None:
                logits[:, j] = lg
            if level is None:
                classes[:, t + 1] = draw(lg, temperature, u[:, j], min_p)
            else:
                classes[:, t + 1] = level.draw(lg, temperature, u[:, j], min_p)


def _quiet_db(value: Any) -> float | None:
    """``quiet_db`` as given (a number, or off/none/False) -> dBFS or None; NaN and text raise."""
    if (
        value is None
        or value is False
        or (isinstance(value, str) and value.strip().lower() in ("off", "none"))
    ):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ParameterError(
            f"wavenet generation option quiet_db: a level in dBFS or off, got {value!r}"
        ) from None
    if math.isnan(out):
        raise ParameterError("wavenet generation option quiet_db: a level in dBFS or off, got nan")
    return None if out == -math.inf else out


class Level:
    """Each stream's recent level, which decides where ``min_p`` applies (``quiet_db``).

    ``ms`` (B,) float64 is an exponential mean of the decoded samples' squares, time constant
    ``tau`` samples (the receptive field): ``ms <- a ms + (1 - a) y**2``, ``a = 1 - 1 / tau``,
    started over the seed. A stream below ``quiet_db`` dBFS draws from every class; the others
    leave out the classes below ``min_p``. Every generation mode keeps it with the same float64
    operations in the same order, so all modes draw the same samples. ``quiet_db`` None: off.
    """

    def __init__(self, seed: torch.Tensor, n_classes: int, tau: int, quiet_db: float | None) -> None:
        self.on = quiet_db is not None
        self.alpha = 1.0 - 1.0 / max(int(tau), 1)
        self.threshold = 10.0 ** (quiet_db / 10.0) if quiet_db is not None else 0.0
        c = torch.arange(n_classes)
        self.squares = mu_law_decode(c, n_classes=n_classes).double().pow(2)  # (C,) y**2 per class
        ms = torch.full((seed.shape[0],), self.squares[n_classes // 2].item(), dtype=torch.float64)
        if self.on:
            sq = self.squares[seed.long().cpu()]  # (B, T0)
            for t in range(seed.shape[1]):
                ms = self.alpha * ms + (1.0 - self.alpha) * sq[:, t]
        self.ms = ms

    def draw(self, logits: torch.Tensor, temperature: float, u: torch.Tensor, min_p: float) -> torch.Tensor:
        """:func:`draw` with ``min_p`` for the loud streams only; updates each stream's level."""
        if not self.on:
            return draw(logits, temperature, u, min_p)
        cut = torch.where(self.ms < self.threshold, 0.0, min_p).to(logits.device)
        k = draw(logits, temperature, u, cut)
        self.ms = self.alpha * self.ms + (1.0 - self.alpha) * self.squares[k.cpu()]
        return k


def draw(
    logits: torch.Tensor, temperature: float, u: torch.Tensor, min_p: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Classes from logits ``(B, C)`` at ``temperature`` by inverting the CDF at ``u`` ``(B,)``.

    ``min_p`` > 0 leaves out the classes less likely than ``min_p`` times the likeliest (at
    ``temperature``): min-p sampling (Nguyen et al. 2024), which cuts the improbable tail whose
    draws are broadband noise while keeping the rest of the distribution as it is. A tensor
    ``(B,)`` gives each stream its own cut.
    Computed in float64 so that every generation mode draws the same class from the same logits.
    """
    if temperature == 0:
        return logits.argmax(dim=1)
    lg = logits.double() / temperature
    e = torch.exp(lg - lg.max(dim=1, keepdim=True).values)  # each class over the likeliest
    if isinstance(min_p, torch.Tensor):
        e = e.masked_fill(e < min_p.to(e)[:, None], 0.0)
    elif min_p > 0:
        e = e.masked_fill(e < min_p, 0.0)
    cdf = torch.cumsum(e, dim=1)
    k = torch.searchsorted(cdf, (u.to(cdf.device) * cdf[:, -1])[:, None], right=True)[:, 0]
    return k.clamp(max=logits.shape[1] - 1)
