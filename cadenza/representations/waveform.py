"""Raw samples, as floats or as mu-law classes (WaveNet, Seq2Seq on raw audio).

Mu-law companding follows the ITU-T G.711 / WaveNet definition with ``mu = n_classes - 1``::

    f = sign(x) * ln(1 + mu * |x|) / ln(1 + mu)          # in [-1, 1]
    c = round((f + 1) / 2 * mu)                          # in [0, mu]
    x = sign(f) * ((1 + mu) ** |f| - 1) / mu,  f = 2 * c / mu - 1

Rounding is half-to-even in numpy and torch alike, so silence maps to class 128 of 256.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

if TYPE_CHECKING:  # not imported at run time: encoding workers start without torch
    import torch

from cadenza.errors import ParameterError
from cadenza.representations.base import Representation, as_mono

__all__ = ["ENCODINGS", "Waveform", "mu_law_decode", "mu_law_encode"]

#: ``Waveform.encoding`` values.
ENCODINGS = ("float", "mulaw")

ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")


def _is_tensor(x: Any) -> bool:
    """True for a torch tensor; never imports torch (a caller holding a tensor has done so)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _check_classes(n_classes: int) -> int:
    if (
        isinstance(n_classes, bool)
        or not isinstance(n_classes, (int, np.integer))
        or not 2 <= n_classes <= 65536
    ):
        raise ParameterError(f"n_classes must be an integer in 2..65536, got {n_classes!r}")
    return int(n_classes)


def _class_dtype(n_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if n_classes <= 256 else np.dtype(np.uint16)


def mu_law_encode(x: ArrayT, *, n_classes: int = 256) -> ArrayT:
    """Samples in [-1, 1] -> mu-law classes in ``[0, n_classes - 1]``.

    Samples outside [-1, 1] are clipped first.

    Parameters
    ----------
    x : np.ndarray or torch.Tensor
        Samples, any shape.
    n_classes : int
        Number of classes (``mu + 1``), 2 to 65536.

    Returns
    -------
    np.ndarray or torch.Tensor
        Same shape as ``x``. numpy: ``uint8`` (``uint16`` above 256 classes), compact for storage;
        torch: ``int64`` on ``x``'s device, ready as a cross-entropy target.

    Examples
    --------
    >>> import numpy as np, torch
    >>> mu_law_encode(np.array([-1.0, 0.0, 1.0]))
    array([  0, 128, 255], dtype=uint8)
    >>> mu_law_encode(torch.tensor([-1.0, 0.0, 1.0]))
    tensor([  0, 128, 255])
    """
    n_classes = _check_classes(n_classes)
    mu = n_classes - 1
    if _is_tensor(x):
        import torch

        xt = x.float().clamp(-1.0, 1.0)
        f = torch.sign(xt) * torch.log1p(mu * xt.abs()) / math.log1p(mu)
        return torch.round((f + 1.0) * (mu / 2.0)).long()
    xn = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    f = np.sign(xn) * np.log1p(np.float32(mu) * np.abs(xn)) / np.float32(math.log1p(mu))
    return np.round((f + np.float32(1.0)) * np.float32(mu / 2.0)).astype(_class_dtype(n_classes))


def mu_law_decode(c: ArrayT, *, n_classes: int = 256) -> ArrayT:
    """Mu-law classes in ``[0, n_classes - 1]`` -> float32 samples in [-1, 1].

    Exact at the mu-law resolution: ``mu_law_encode(mu_law_decode(c)) == c``.

    Parameters
    ----------
    c : np.ndarray or torch.Tensor
        Integer classes (any integer or float dtype holding whole numbers), any shape.
    n_classes : int
        Number of classes (``mu + 1``).

    Returns
    -------
    np.ndarray or torch.Tensor
        float32, same shape (and device) as ``c``.

    Examples
    --------
    >>> mu_law_decode(np.array([0, 255]))
    array([-1.,  1.], dtype=float32)
    >>> c = np.arange(256)
    >>> bool((mu_law_encode(mu_law_decode(c)) == c).all())
    True
    """
    n_classes = _check_classes(n_classes)
    mu = n_classes - 1
    if _is_tensor(c):
        import torch

        f = c.float() * (2.0 / mu) - 1.0
        return (torch.sign(f) * torch.expm1(f.abs() * math.log1p(mu)) / mu).clamp(-1.0, 1.0)
    f = np.asarray(c, dtype=np.float32) * np.float32(2.0 / mu) - np.float32(1.0)
    x = np.sign(f) * np.expm1(np.abs(f) * np.float32(math.log1p(mu))) / np.float32(mu)
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)  # float32 rounding may pass 1 by an ulp


@dataclasses.dataclass(frozen=True)
class Waveform(Representation):
    """Samples as frames of one feature: floats, or mu-law classes for classification models.

    Parameters
    ----------
    sample_rate : int
        Samples per second (16 kHz as WaveNet and the raw-audio Seq2Seq paper).
    encoding : {"float", "mulaw"}
        ``"float"``: frames are the samples, float32, exact. ``"mulaw"``: frames are mu-law
        classes, stored as ``uint8`` (``uint16`` above 256 classes); exact at that resolution,
        i.e. ``encode(decode(c)) == c``.
    n_classes : int
        Mu-law classes (``mu + 1``); ignored by ``"float"``.

    Examples
    --------
    >>> rep = Waveform(encoding="mulaw")
    >>> frames = rep.encode(np.array([-1.0, 0.0, 1.0], dtype=np.float32))
    >>> frames.T, rep.dtype
    (array([[  0, 128, 255]], dtype=uint8), 'uint8')
    >>> rep.decode(frames).shape
    (3,)
    """

    name: ClassVar[str] = "waveform"
    is_exact: ClassVar[bool] = True

    sample_rate: int = 16000
    encoding: str = "float"
    n_classes: int = 256

    def _validate(self) -> None:
        if self.sample_rate <= 0:
            raise ParameterError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.encoding not in ENCODINGS:
            raise ParameterError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        _check_classes(self.n_classes)

    @property
    def dtype(self) -> str:  # type: ignore[override]
        """``"float32"``, or the class dtype (``"uint8"``/``"uint16"``) for mu-law."""
        return "float32" if self.encoding == "float" else _class_dtype(self.n_classes).name

    @property
    def n_features(self) -> int:
        return 1

    @property
    def frame_rate(self) -> float:
        return float(self.sample_rate)

    def encode(self, y: Any) -> np.ndarray:
        """Samples ``(n,)`` -> frames ``(n, 1)`` (float32, or mu-law classes)."""
        y = as_mono(y)
        if self.encoding == "float":
            return y[:, None].copy()
        return mu_law_encode(y, n_classes=self.n_classes)[:, None]

    def decode(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``(n, 1)`` (or ``(n,)``) -> float32 samples ``(n,)``."""
        frames = np.asarray(frames)
        if frames.ndim == 2 and frames.shape[1] == 1:
            frames = frames[:, 0]
        if frames.ndim != 1:
            raise ParameterError(f"waveform frames must have shape (n, 1), got {frames.shape}")
        if self.encoding == "float":
            return frames.astype(np.float32)
        if frames.size and (frames.min() < 0 or frames.max() > self.n_classes - 1):
            raise ParameterError(
                f"mu-law classes must lie in 0..{self.n_classes - 1}, got {frames.min()}..{frames.max()}"
            )
        return mu_law_decode(frames, n_classes=self.n_classes)
