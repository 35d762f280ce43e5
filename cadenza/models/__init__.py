"""Model families and the ``MODELS`` table.

Every trainable model is one entry of :data:`MODELS`: a key (``fft_base``) naming a family
module (``cadenza.models.fft_lstm``) and the configuration fields that the key pins (its
``arch``). The one trainer in :mod:`cadenza.training` calls what a family module offers and
nothing else:

``Config``
    A dataclass of the model's hyper-parameters whose defaults match the paper, with two
    classmethod presets, ``Config.paper(**changes)`` and ``Config.tiny(**changes)`` (a size
    that trains on two CPU cores in a minute or two). Fields may carry
    ``metadata={"choices": (...)}`` or ``metadata={"min": x}``; the config loader checks them.
``Model(config, info)``
    An ``nn.Module`` built from its ``Config`` and a :class:`DataInfo` (feature count,
    window length, label vocabulary, representation parameters), with:

    ``losses(batch, *, step: str | None = None) -> dict[str, Tensor]``
        Scalar losses of one batch (``batch`` is what the dataset yields, collated and on the
        model's device). ``step`` names the optimiser the trainer is about to step (``"loss"``
        for a model with a single optimiser, ``"discriminator"`` or ``"generator"`` for a GAN),
        so that a model computes only what that step needs and returns at least that entry:
        a GAN's discriminator step makes its fakes without a graph, its generator step leaves
        the discriminator's weights out of the graph. ``step=None`` (validation) asks for every
        entry. A model with one optimiser may leave ``step`` out of its signature
        (``fft_lstm``, ``seq2seq``, ``wavenet`` do): the trainer then calls ``losses(batch)``
        and expects ``{"loss": ...}``. Entries that name no optimiser are logged as metrics
        (detach them) and never back-propagated; the entry of another optimiser is ignored.
    ``n_steps_trained: int`` (set by the trainer)
        Training steps (batches) done before the current one; the trainer sets it before every
        batch and a resumed run carries on from its checkpoint, so a schedule inside a model
        (a GAN's pre-training) follows the trainer's count instead of counting its own calls.
    ``first_monitored_step: int`` (optional)
        The first step count whose validation may become ``best.pt`` (default 0): a GAN's
        pre-training is a different model, which ``best.pt`` should not be.
    ``configure_optimizers(optim) -> dict[str, Optimizer]`` (optional)
        Only for models with several optimisers: one per loss name, built with
        :func:`cadenza.training.optim.build_optimizer` so that ``optim`` (the experiment's
        ``optim`` section, with its per-name ``groups``) is honoured. Without it the trainer
        builds one optimiser, ``"loss"``, over all parameters. The trainer steps them in this
        order, each ``optim.ratio[name]`` times per batch (default once).
    ``generate(request: GenerationRequest) -> Tensor``
        ``(n, n_frames, n_features)`` frames in the normalised feature space the model was
        trained on; :mod:`cadenza.generation` denormalises them and decodes them
        through the run's representation. All randomness comes from ``request.generator``.
    ``n_seed_frames: int``
        Frames of real music that ``generate`` starts from (0 when it needs none).

Datasets come from the experiment's ``data`` section; :attr:`ModelSpec.dataset` names the
windowing a family uses when the section leaves ``dataset`` empty (see
:data:`cadenza.training.data.DATASETS`).

Examples
--------
>>> from cadenza.models import MODELS, get_model_spec
>>> "fft_base" in MODELS and "wavenet" in MODELS
True
>>> get_model_spec("fft_base").preset("tiny").hidden_size
128
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from types import MappingProxyType, ModuleType
from typing import Any

from cadenza.errors import ParameterError

__all__ = ["MODELS", "DataInfo", "GenerationRequest", "ModelSpec", "get_model_spec"]

PRESETS = ("paper", "tiny")


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data to be built.

    Saved in every checkpoint, so a model can be rebuilt without its feature store.
    """

    n_features: int
    #: Frames per training window (``data.seq_len``), or None for datasets without one.
    seq_len: int | None = None
    #: Label vocabulary when ``data.label_key`` is set (class ``i`` is ``labels[i]``).
    labels: tuple[str, ...] = ()
    #: The representation's parameters (``rep.to_dict()``).
    representation: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    frame_rate: float = 0.0
    #: What the windowing decided, for the model to read instead of restating it: raw-audio
    #: windows give ``scheme``, ``n_input``, ``n_output``, ``shift``; piano-roll phrases
    #: ``n_bars``, ``resolution``, ``resolution_factor``, ``steps_per_bar``.
    window: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "seq_len": self.seq_len,
            "labels": list(self.labels),
            "representation": dict(self.representation),
            "frame_rate": self.frame_rate,
            "window": dict(self.window),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataInfo:
        return cls(
            n_features=int(d["n_features"]),
            seq_len=None if d.get("seq_len") is None else int(d["seq_len"]),
            labels=tuple(d.get("labels", ())),
            representation=dict(d.get("representation", {})),
            frame_rate=float(d.get("frame_rate", 0.0)),
            window=dict(d.get("window", {})),  # absent from checkpoints written before it existed
        )


@dataclasses.dataclass
class GenerationRequest:
    """What :meth:`Model.generate` is asked for.

    ``seed`` holds ``(n, n_seed_frames, n_features)`` normalised frames of real music (or a
    quiet noise seed) when the model's ``n_seed_frames`` is positive, else None. ``options``
    are family-specific (``cadenza generate --option mode=stateful``), recorded in each
    sample's JSON sidecar.
    """

    n: int
    n_frames: int
    generator: Any  # torch.Generator on the model's device
    seed: Any = None  # torch.Tensor (n, T, F) or None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The run's :class:`~cadenza.data.normalize.Normalizer`, for a family that reads real music
    #: named in its options (``mfcc_vae``'s ``interpolate=A,B``).
    normalizer: Any = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of :data:`MODELS`.

    ``module`` is the family module (imported on first use, so listing models stays cheap),
    ``fixed`` the ``Config`` fields this key pins (e.g. ``{"arch": "base"}``), ``dataset``
    the windowing of :data:`cadenza.training.data.DATASETS` it trains on by default.
    """

    key: str
    module: str
    summary: str
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    dataset: str = "sequence"
    #: What the family needs of the store's representation: parameter -> accepted values
    #: (``{"name": ("waveform",), "encoding": ("float",)}``), checked by :meth:`check` before
    #: the model is built, with ``prepare`` (the ``cadenza prepare`` options that give such a
    #: store) in the message.
    requires: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    prepare: str = ""

    @property
    def family(self) -> ModuleType:
        return importlib.import_module(self.module)

    @property
    def config_class(self) -> type:
        return self.family.Config

    def preset(self, name: str = "paper") -> Any:
        """The family's ``Config`` preset ``name`` with this key's fixed fields."""
        if name not in PRESETS:
            raise ParameterError(f"unknown preset {name!r} for model {self.key}; expected one of {PRESETS}")
        return getattr(self.config_class, name)(**dict(self.fixed))

    def check(self, info: DataInfo) -> None:
        """A clear error when the data's representation is not one this family trains on."""
        rep = dict(info.representation)
        if not rep:  # a DataInfo built by hand, without a store
            return
        for key, accepted in self.requires.items():
            if rep.get(key) not in accepted:
                held = ", ".join(f"{k}={rep.get(k)!r}" for k in self.requires)
                raise ParameterError(
                    f"model {self.key} trains on stores with {key} in {list(accepted)}, but this store holds "
                    f"{held}; prepare one with `cadenza prepare SOURCE OUT {self.prepare}`".rstrip()
                )

    def build(self, config: Any, info: DataInfo) -> Any:
        """The family's ``Model(config, info)``, once :meth:`check` accepts the data."""
        self.check(info)
        return self.family.Model(config, info)


#: What the convolutional FFT LSTMs need: GRUV frames (the others read any frames as vectors).
_FFT: Mapping[str, tuple[Any, ...]] = MappingProxyType({"name": ("fft",)})

MODELS: dict[str, ModelSpec] = {
    "fft_base": ModelSpec(
        key="fft_base",
        module="cadenza.models.fft_lstm",
        summary="GRUV baseline (paper 000): FFT frames -> LSTM -> dense -> next frame, MSE",
        fixed=MappingProxyType({"arch": "base"}),
    ),
    # --- the other frequency-domain LSTMs of paper 000 (cadenza.models.fft_lstm) ---
    "fft_fc": ModelSpec(
        key="fft_fc",
        module="cadenza.models.fft_lstm",
        summary="paper 000: FFT frames -> dense ReLU (as wide as the LSTM) -> LSTM -> dense, MSE",
        fixed=MappingProxyType({"arch": "fc"}),
    ),
    "fft_conv1d": ModelSpec(
        key="fft_conv1d",
        module="cadenza.models.fft_lstm",
        summary="paper 000: 12 frequency filters of 3 + max pooling of 2 per frame -> LSTM -> dense, MSE",
        fixed=MappingProxyType({"arch": "conv1d"}),
        requires=_FFT,  # its convolutions read a frame as N real parts, then N imaginary parts
        prepare="--representation fft",
    ),
    "fft_conv2d": ModelSpec(
        key="fft_conv2d",
        module="cadenza.models.fft_lstm",
        summary="paper 000: K-frame stacks as 2-channel K x N images -> CNN -> LSTM -> dense, MSE",
        fixed=MappingProxyType({"arch": "conv2d"}),
        requires=_FFT,  # its convolutions read a frame as N real parts, then N imaginary parts
        prepare="--representation fft",
    ),
    "fft_bilinear": ModelSpec(
        key="fft_bilinear",
        module="cadenza.models.fft_lstm",
        summary="paper 000's best: dense ReLU -> two LSTMs summed -> dense, MSE",
        fixed=MappingProxyType({"arch": "bilinear"}),
    ),
    "fft_stacked": ModelSpec(
        key="fft_stacked",
        module="cadenza.models.fft_lstm",
        summary="paper 000: FFT frames -> two LSTMs in sequence -> dense, MSE",
        fixed=MappingProxyType({"arch": "stacked"}),
    ),
    # --- piano-roll GANs of paper 004 (cadenza.models.gan) ---
    "bilstm_gan": ModelSpec(
        key="bilstm_gan",
        module="cadenza.models.gan",
        summary="bi-LSTM GAN (paper 004): noise -> LSTM, 2 bi-LSTMs, dense -> 4-bar piano roll; bi-LSTM critic",
        fixed=MappingProxyType({"arch": "bilstm"}),
        dataset="phrases",
        requires=MappingProxyType({"name": ("pianoroll",)}),
        prepare="--representation pianoroll",
    ),
    "cnn_lstm_gan": ModelSpec(
        key="cnn_lstm_gan",
        module="cadenza.models.gan",
        summary="CNN-LSTM GAN (paper 004): DCGAN-style generator of 4-bar piano rolls, bi-LSTM discriminator",
        fixed=MappingProxyType({"arch": "cnn"}),
        dataset="phrases",
        requires=MappingProxyType({"name": ("pianoroll",)}),
        prepare="--representation pianoroll",
    ),
    # --- raw-audio models of paper 002 (cadenza.models.seq2seq, cadenza.models.wavenet) ---
    "seq2seq": ModelSpec(
        key="seq2seq",
        module="cadenza.models.seq2seq",
        summary="Seq2Seq (paper 002): LSTM encoder over 128 samples -> LSTM decoder -> a sampled mixture per next sample",
        dataset="audio",
        requires=MappingProxyType({"name": ("waveform",), "encoding": ("float",)}),
        prepare="--representation waveform",
    ),
    # --- spectral models of papers 001 and 003 (cadenza.models.mel_rnn, mfcc_lstm, mfcc_vae) ---
    "mel_rnn": ModelSpec(
        key="mel_rnn",
        module="cadenza.models.mel_rnn",
        summary="paper 001: log-mel frames -> RNN/GRU/LSTM -> a sampled mixture over the next frames",
        requires=MappingProxyType({"name": ("mel",)}),
        prepare="--representation mel",
    ),
    "mfcc_lstm": ModelSpec(
        key="mfcc_lstm",
        module="cadenza.models.mfcc_lstm",
        summary="paper 003: a clip of 20 MFCCs -> 2 LSTM layers (recurrent dropout) -> linear -> the next clip",
        requires=MappingProxyType({"name": ("mfcc",)}),
        prepare="--representation mfcc",
    ),
    "mfcc_vae": ModelSpec(
        key="mfcc_vae",
        module="cadenza.models.mfcc_vae",
        summary="VAE (paper 003): 20 MFCCs x T frames flattened -> dense 2580 -> 128 latents -> dense -> the clip, made stable",
        requires=MappingProxyType({"name": ("mfcc",)}),
        prepare="--representation mfcc",
    ),
    "wavenet": ModelSpec(
        key="wavenet",
        module="cadenza.models.wavenet",
        summary="WaveNet (paper 002): dilated causal convolutions over mu-law samples, label-conditioned",
        dataset="audio",
        requires=MappingProxyType({"name": ("waveform",)}),  # float stores are mu-law encoded on the fly
        prepare="--representation waveform --param encoding=mulaw",
    ),
}


def get_model_spec(key: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``key``; a :class:`ParameterError` listing the keys otherwise."""
    try:
        return MODELS[key]
    except KeyError:
        raise ParameterError(f"unknown model {key!r}; expected one of {sorted(MODELS)}") from None
