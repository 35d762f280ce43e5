"""The contract every representation keeps.

A representation is a frozen dataclass of its parameters with ``encode`` and ``decode``
beside each other. Audio representations take mono float32 samples at ``sample_rate``;
the symbolic one (``pianoroll``) takes a score. Frames are always ``(n_frames, n_features)``.

Constructing one checks every field against its type hint (``int`` fields refuse floats and
bools; ``float`` fields take ints and store them as floats, so ``to_dict`` is stable through
YAML) and then calls the subclass's ``_validate`` for ranges; both raise
:class:`~cadenza.errors.ParameterError`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar

import numpy as np

from cadenza.errors import ParameterError

__all__ = ["Representation", "as_mono"]


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
            value = _check_type(type(self).__name__, field.name, getattr(self, field.name), hints[field.name])
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

    def encode(self, x: Any) -> np.ndarray:
        """Input (samples or score) -> frames of shape ``(n_frames, n_features)``."""
        raise NotImplementedError

    def decode(self, frames: np.ndarray) -> Any:
        """Frames -> samples (audio) or a ``pretty_midi.PrettyMIDI`` (scores)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Parameters as plain data, with ``name`` first; ``from_dict`` turns it back."""
        return {"name": self.name, **dataclasses.asdict(self)}


def _check_type(owner: str, name: str, value: Any, hint: Any) -> Any:
    """``value`` as the plain Python type of ``hint`` (int, float, str, bool, or one of them | None)."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and isinstance(value, (bool, np.bool_)):
            return bool(value)
        if kind is int and isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return int(value)
        if kind is float and isinstance(value, (int, float, np.integer, np.floating)):
            if not isinstance(value, (bool, np.bool_)) and math.isfinite(value):
                return float(value)
        if kind is str and isinstance(value, str):
            return value
    expected = " or ".join("None" if k is type(None) else k.__name__ for k in allowed)
    raise ParameterError(f"{owner}.{name} must be {expected} (finite for numbers), got {value!r}")


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
