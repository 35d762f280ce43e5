"""FFT frames (GRUV; paper 000): blocks of N samples -> their full complex FFT, unrolled to 2N reals.

The signal is zero-padded to a whole number of blocks; each block's N-point FFT (all N bins,
as ``np.fft.fft``) becomes one frame ``[Re X_0 .. Re X_{N-1}, Im X_0 .. Im X_{N-1}]``. At the
paper's 16 kHz and N = 4000 (0.25 s) a frame has 8000 features and there are 4 per second.

Real input makes the spectrum conjugate-symmetric, so ``encode`` computes ``rfft`` and mirrors
it (half the work of ``fft``); ``decode`` takes the real part of the inverse FFT, which is the
inverse real FFT of the spectrum's conjugate-symmetric part (so it is defined, and cheap, for
any frames a model outputs).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from cadenza.errors import ParameterError
from cadenza.representations.base import Representation, as_mono

__all__ = ["FFTFrames"]

#: Blocks transformed at once (bounds the float64 temporaries at ~64 MB for N = 4000).
_CHUNK_BLOCKS = 1024


@dataclasses.dataclass(frozen=True)
class FFTFrames(Representation):
    """Blocks of ``block_size`` samples as real-then-imaginary FFT vectors of length ``2 * block_size``.

    Exact to float32 precision: ``decode(encode(y))[:len(y)]`` equals ``y`` within 1e-6 for
    audio in [-1, 1] (the padding decodes to zeros).

    Parameters
    ----------
    sample_rate : int
        Samples per second (16 kHz in the paper).
    block_size : int
        Samples per block ``N`` (4000 = 0.25 s in the paper); at least 2.

    Examples
    --------
    >>> rep = FFTFrames(block_size=4)
    >>> frames = rep.encode(np.array([1.0, 0.0, 0.0, 0.0, 1.0], dtype=np.float32))
    >>> frames.shape  # 5 samples -> 2 blocks of 4 (zero-padded), 2 * 4 features each
    (2, 8)
    >>> frames[0, :4], np.abs(frames[0, 4:])  # an impulse: flat real spectrum, no imaginary part
    (array([1., 1., 1., 1.], dtype=float32), array([0., 0., 0., 0.], dtype=float32))
    >>> rep.decode(frames)
    array([1., 0., 0., 0., 1., 0., 0., 0.], dtype=float32)
    """

    name: ClassVar[str] = "fft"
    is_exact: ClassVar[bool] = True

    sample_rate: int = 16000
    block_size: int = 4000

    def _validate(self) -> None:
        if self.sample_rate <= 0:
            raise ParameterError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.block_size < 2:
            raise ParameterError(f"block_size must be at least 2 samples, got {self.block_size}")

    @property
    def n_features(self) -> int:
        return 2 * self.block_size

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.block_size

    def encode(self, y: Any) -> np.ndarray:
        """Samples ``(n,)`` -> float32 frames ``(ceil(n / N), 2N)``."""
        y = as_mono(y)
        n = self.block_size
        n_blocks = -(-len(y) // n)
        blocks = np.zeros((n_blocks, n), dtype=np.float32)  # (B, N), zero-padded tail
        blocks.reshape(-1)[: len(y)] = y
        frames = np.empty((n_blocks, 2 * n), dtype=np.float32)
        n_mirror = n - n // 2  # bins 1 .. n_mirror - 1 reappear, conjugated, as bins N-1 .. n//2 + 1
        for b0 in range(0, n_blocks, _CHUNK_BLOCKS):
            half = np.fft.rfft(blocks[b0 : b0 + _CHUNK_BLOCKS].astype(np.float64), axis=1)  # (b, N//2 + 1)
            re, im = frames[b0 : b0 + _CHUNK_BLOCKS, :n], frames[b0 : b0 + _CHUNK_BLOCKS, n:]
            re[:, : n // 2 + 1] = half.real
            re[:, n // 2 + 1 :] = half.real[:, n_mirror - 1 : 0 : -1]
            im[:, : n // 2 + 1] = half.imag
            im[:, n // 2 + 1 :] = -half.imag[:, n_mirror - 1 : 0 : -1]
        return frames

    def decode(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``(n_blocks, 2N)`` -> float32 samples ``(n_blocks * N,)``: ``Re(ifft)`` per block."""
        frames = np.asarray(frames)
        n = self.block_size
        if frames.ndim != 2 or frames.shape[1] != 2 * n:
            raise ParameterError(f"fft frames must have shape (n_blocks, {2 * n}), got {frames.shape}")
        out = np.empty((len(frames), n), dtype=np.float32)
        mirror = (-np.arange(n // 2 + 1)) % n  # index of the bin conjugate to bin k
        for b0 in range(0, len(frames), _CHUNK_BLOCKS):
            chunk = frames[b0 : b0 + _CHUNK_BLOCKS].astype(np.float64)
            re, im = chunk[:, :n], chunk[:, n:]
            # Conjugate-symmetric part (X_k + conj(X_{-k})) / 2 of bins 0 .. N//2: Re(ifft(X)) = irfft of it.
            sym = (re[:, : n // 2 + 1] + re[:, mirror]) / 2 + 1j * (im[:, : n // 2 + 1] - im[:, mirror]) / 2
            out[b0 : b0 + _CHUNK_BLOCKS] = np.fft.irfft(sym, n=n, axis=1)
        return out.reshape(-1)
