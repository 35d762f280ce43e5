"""Per-feature normalisation from a feature store's statistics, with its inverse beside it."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cadenza.errors import ParameterError

NORMALIZATIONS = ("none", "standard", "minmax")


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """``apply`` maps features to a normalised scale, ``invert`` maps them back.

    ``standard``: (x - mean) / std. ``minmax``: to [-1, 1] from the training min and max
    (paper 003 rescales MFCCs this way). ``none``: identity. Works on numpy arrays and
    torch tensors whose last axis is the feature axis.

    Examples
    --------
    >>> import numpy as np
    >>> stats = {"mean": np.array([1.0]), "std": np.array([2.0]), "min": np.array([0.0]), "max": np.array([4.0])}
    >>> norm = Normalizer.from_stats("standard", stats)
    >>> float(norm.apply(np.array([[3.0]]))[0, 0]), float(norm.invert(np.array([[1.0]]))[0, 0])
    (1.0, 3.0)
    """

    kind: str
    shift: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_stats(cls, kind: str, stats: dict[str, np.ndarray] | None, *, eps: float = 1e-6) -> Normalizer:
        if kind not in NORMALIZATIONS:
            raise ParameterError(f"unknown normalization {kind!r}; expected one of {NORMALIZATIONS}")
        if kind == "none" or stats is None:
            return cls("none", np.zeros(1, np.float32), np.ones(1, np.float32))
        if kind == "standard":
            shift = np.asarray(stats["mean"], np.float64)
            scale = np.asarray(stats["std"], np.float64)
        else:
            lo = np.asarray(stats["min"], np.float64)
            hi = np.asarray(stats["max"], np.float64)
            shift = (hi + lo) / 2
            scale = (hi - lo) / 2
        # A constant feature (e.g. the always-zero imaginary part of the DC bin) must not divide by ~0.
        floor = max(eps, float(np.median(np.abs(scale))) * 1e-3) if scale.size else eps
        scale = np.where(scale < floor, floor, scale)
        return cls(kind, shift.astype(np.float32), scale.astype(np.float32))

    def _cast(self, a: np.ndarray, like: Any) -> Any:
        if isinstance(like, np.ndarray):
            return a
        import torch

        return torch.as_tensor(a, dtype=like.dtype, device=like.device)

    def apply(self, x: Any) -> Any:
        if self.kind == "none":
            return x
        return (x - self._cast(self.shift, x)) / self._cast(self.scale, x)

    def invert(self, x: Any) -> Any:
        if self.kind == "none":
            return x
        return x * self._cast(self.scale, x) + self._cast(self.shift, x)
