"""The contract every representation keeps.

A representation is a frozen dataclass of its parameters with ``encode`` and ``decode``
beside each other. Audio representations take mono float32 samples at ``sample_rate``;
the symbolic one (``pianoroll``) takes a score. Frames are always ``(n_frames, n_features)``.

Consumers (generation, evaluation, training) never ask which kind a representation is: they
call the few methods every representation answers, whose base versions here are those of
audio and which a score representation overrides:

``frames_for(seconds=, beats=, bars=)``
    How many frames a duration takes (audio counts seconds; a score also beats and bars).
``read(path)``
    The frames of a file: audio decoded and resampled, or a score parsed.
``quiet_frames(n_frames, rng)``
    A near-silent start for a model that continues music when no real music is at hand.
``to_audio(frames)`` and ``to_score(frames)``
    Sound (a score is rendered with FluidSynth), and the score when there is one (else None).
``write(frames, stem, seconds=)``
    The files of one result: ``stem.wav``, or ``stem.mid`` with a rendered ``stem.wav``, and a
    ``stem.png`` of the :meth:`picture` when the representation draws one (a piano roll does).

Constructing one checks every field against its type hint (``int`` fields refuse floats and
bools; ``float`` fields take ints and store them as floats, so ``to_dict`` is stable through
YAML) and then calls the subclass's ``_validate`` for ranges; both raise
:class:`~cadenza.errors.ParameterError`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, ClassVar

import numpy as np

from cadenza.errors import ParameterError
from cadenza.validation import coerce

__all__ = ["RENDER_SAMPLE_RATE", "Representation", "as_mono"]

#: The rate at which a score is rendered to sound (``to_audio``, ``write``).
RENDER_SAMPLE_RATE = 16000


@dataclasses.dataclass(frozen=True)
class Representation:
    """Base of all representations. Subclasses are frozen dataclasses with keyword defaults."""

    name: ClassVar[str] = ""
    #: "audio" for representations of sound, "score" for symbolic ones.
    input_kind: ClassVar[str] = "audio"
    #: True when ``decode(encode(x))`` gives ``x`` back exactly (at the representation's resolution).
    is_exact: ClassVar[bool] = False
    #: dtype of the frames as stored in a feature store (a subclass may make it a property).
    dtype: ClassVar[str] = "float32"
    #: For lossy audio representations: the declared bound, in dB, on
    #: ``spectral_distance(y, decode(encode(y)), sr=sample_rate)`` for music; 0.0 when exact.
    round_trip_tolerance: ClassVar[float] = 0.0

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            where = f"{type(self).__name__}.{field.name}"
            value = coerce(getattr(self, field.name), hints[field.name], where, strict=True)
            object.__setattr__(self, field.name, value)
        self._validate()

    def _validate(self) -> None:
        """Range checks of a subclass; raise ``ParameterError`` naming the field."""

    @property
    def n_features(self) -> int:
        raise NotImplementedError

    @property
    def frame_rate(self) -> float:
        """Frames per second (audio) or steps per beat (scores)."""
        raise NotImplementedError

    @property
    def frame_unit(self) -> int:
        """Frames that a stored file's length is a whole number of (a piano roll: one bar's
        steps); ``prepare`` cuts a file into parts only at multiples of it."""
        return 1

    def encode(self, x: Any) -> np.ndarray:
        """Input (samples or score) -> frames of shape ``(n_frames, n_features)``."""
        raise NotImplementedError

    def decode(self, frames: np.ndarray) -> Any:
        """Frames -> samples (audio) or a ``pretty_midi.PrettyMIDI`` (scores)."""
        raise NotImplementedError

    def decode_bytes(self, n_frames: int) -> int:
        """About the memory :meth:`decode` (and rendering) takes for one clip of ``n_frames``, so
        that a sample too long to be turned into sound here is refused before it is generated.
        Audio: a few float32 copies of its samples; a representation whose decoding costs more
        (an inversion) says so; scores: 0 (rendering streams)."""
        if self.input_kind != "audio":
            return 0
        return 4 * 4 * int(math.ceil(n_frames * float(self.sample_rate) / self.frame_rate))  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """Parameters as plain data, with ``name`` first; ``from_dict`` turns it back."""
        return {"name": self.name, **dataclasses.asdict(self)}

    def by_kind(self, *, audio: Any, score: Any) -> Any:
        """``audio`` or ``score``, whichever this representation is: a consumer hands both
        alternatives (two loaders, two lists) instead of testing the kind itself.

        Examples
        --------
        >>> from cadenza.representations import make_representation
        >>> make_representation("pianoroll").by_kind(audio="a WAV", score="a MIDI file")
        'a MIDI file'
        """
        return {"audio": audio, "score": score}[self.input_kind]

    # --- what consumers call, without asking for the kind (audio here; scores override)
    def frames_for(
        self, *, seconds: float | None = None, beats: float | None = None, bars: float | None = None
    ) -> int:
        """Frames of a result lasting ``seconds`` (an audio representation counts nothing else).

        Examples
        --------
        >>> from cadenza.representations import make_representation
        >>> make_representation("fft", sample_rate=8000, block_size=80).frames_for(seconds=1.5)
        150
        """
        if beats is not None or bars is not None:
            raise ParameterError(f"a {self.name} representation counts seconds, not beats or bars")
        if seconds is None or not 0 < seconds < math.inf:
            raise ParameterError(f"seconds must be a positive, finite number, got {seconds}")
        return max(1, int(math.ceil(seconds * self.frame_rate - 1e-9)))

    def read(self, path: Any, *, max_seconds: float | None = None) -> np.ndarray:
        """Frames of an audio file, decoded to mono at ``sample_rate`` (any format, rate, channels),
        or of a score or stored roll rendered to sound, as ``cadenza prepare`` reads one: its
        constant offset taken out, the silence at its ends trimmed; only its first
        ``max_seconds`` when given. Raises :class:`~cadenza.errors.DecodeError` for a file that
        ``prepare`` would skip (silent, too short, not audio...)."""
        from cadenza.data.prepare import read_frames

        return np.asarray(read_frames(path, self, max_seconds=max_seconds), dtype=np.float32)

    def quiet_frames(self, n_frames: int, rng: np.random.Generator, *, amplitude: float = 1e-3) -> np.ndarray:
        """``n_frames`` frames of noise at ``amplitude`` (about -60 dBFS), encoded."""
        sr = float(self.sample_rate)  # type: ignore[attr-defined]
        n_samples = int(math.ceil((n_frames + 1) * sr / self.frame_rate))
        y = (amplitude * rng.standard_normal(n_samples)).astype(np.float32)
        return np.asarray(self.encode(y), dtype=np.float32)[:n_frames]

    def to_audio(
        self, frames: np.ndarray, *, seconds: float | None = None, report: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, int]:
        """``(samples, sample_rate)`` of decoded frames, cut or padded to ``seconds`` when given.

        ``report``, a dict when given, receives what an estimating inverse says of its result (the
        spectral representations' consistency); an exact inverse adds nothing.
        """
        return self._fit(self.decode(frames), seconds), int(self.sample_rate)  # type: ignore[attr-defined]

    def _fit(self, y: np.ndarray, seconds: float | None) -> np.ndarray:
        """Samples as float32, cut or padded with silence to ``seconds`` when given."""
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        if seconds is not None:
            n = int(round(seconds * int(self.sample_rate)))  # type: ignore[attr-defined]
            y = np.pad(y, (0, max(0, n - len(y))))[:n]
        return y

    def to_score(self, frames: np.ndarray) -> Any:
        """The score of the frames (a ``pretty_midi.PrettyMIDI``), or None: audio has none."""
        return None

    def picture(self, frames: np.ndarray, *, title: str = "", ax: Any = None) -> Any:
        """A matplotlib ``Axes`` (``ax`` when given) that shows the frames, written beside a result;
        None: none is."""
        return None

    def write(
        self,
        frames: np.ndarray,
        stem: Any,
        *,
        seconds: float | None = None,
        audio: tuple[np.ndarray, int] | None = None,
        reference: np.ndarray | None = None,
    ) -> list[Any]:
        """The files of one result, the result itself first: ``stem.mid`` when the frames are a score,
        ``stem.wav`` (``audio`` when the caller already has it) and ``stem.png`` when there is a
        :meth:`picture` (above a picture of ``reference``, real frames to compare with, when
        given). A score that cannot be rendered is still written, with a warning."""
        import logging
        import os
        from pathlib import Path

        from cadenza._fs import naming
        from cadenza.audio import write_audio
        from cadenza.errors import CadenzaError

        stem = Path(stem)
        files: list[Any] = []
        score = self.to_score(frames)
        if score is not None:
            path = stem.with_suffix(".mid")
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                score.write(str(tmp))
                os.replace(tmp, path)
            except BaseException as exc:
                tmp.unlink(missing_ok=True)
                raise naming(exc, path) from None
            files.append(path)
        try:
            y, sr = audio if audio is not None else self.to_audio(frames, seconds=seconds)
        except (ImportError, CadenzaError) as exc:
            if score is None:
                raise
            logging.getLogger(__name__).warning("could not render %s to audio (%s)", files[0], exc)
        else:
            write_audio(stem.with_suffix(".wav"), y, sr)
            files.append(stem.with_suffix(".wav"))
        if type(self).picture is Representation.picture:  # nothing to draw
            return files
        from cadenza.plots import new_axes, save_figure

        axes = new_axes(2 if reference is not None else 1)
        ax = self.picture(
            frames, title=stem.name if reference is None else f"{stem.name} (generated)", ax=axes[0]
        )
        if reference is not None:
            self.picture(reference, title="real music (held out)", ax=axes[1])
            axes[0].set_xlabel("")  # the axes share time: one label, at the bottom
        files.append(save_figure(ax.figure, stem.with_suffix(".png")))
        return files


def as_mono(y: Any) -> np.ndarray:
    """``y`` as a contiguous 1-D float32 array of finite samples, or a ``ParameterError``.

    Examples
    --------
    >>> as_mono([0.0, 0.5, -0.5]).dtype
    dtype('float32')
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ParameterError(f"audio must be mono samples of shape (n,), got shape {y.shape}")
    if not np.isfinite(y).all():
        raise ParameterError("audio contains NaN or infinite samples")
    return y
