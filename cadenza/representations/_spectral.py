"""Spectral analysis shared by ``mel`` and ``mfcc``: STFT, mel bases, log-mel; the STFT pair of the inverses.

Forward transforms reproduce librosa (``librosa.stft`` + ``librosa.feature.melspectrogram``
+ ``librosa.power_to_db``). Two precisions:

* :func:`mel_spectrogram` and :func:`log_mel_spectrogram` (the features: ``Mel.encode``,
  ``MFCC.encode``) run the FFT in float32 on torch (MKL), batched over clips and over
  cache-sized chunks of frames (a strided view of the signal; no full-size spectrogram for
  hour-long files), with the mel projection fused into each chunk: 3-4x faster than librosa,
  whose FFT runs in float64 (its float64 window promotes the frames). The float32 FFT's
  rounding is relative to a frame's total energy, so it shows only in bands far below the
  frame's loudest. Measured on 80 s of real music (chorales rendered by FluidSynth, 22.05 kHz,
  default parameters), the linear mel power differs from librosa's by at most 1e-6 (relative)
  in bands within 20 dB of their frame's loudest, 5e-6 within 40 dB, 3e-5 within 60 dB, 1e-4
  within 80 dB and 0.2 % further down: the log-mel by at most 0.01 dB (relative to the dB
  value: 1e-4), the MFCCs by at most 1e-4. Clean synthesised tones (the built-in synthesiser's)
  also have bands 100-120 dB under their frame's loudest, just above the -100 dB floor: those
  differ by up to 3 % (0.13 dB).
* :func:`power_spectrogram` (a linear STFT power, per bin, where float32 rounding would cost
  up to 0.1 dB in quiet bins) runs numpy's FFT in float64 as librosa does and agrees to float32
  rounding (1e-5 relative).

:class:`_STFTPlan` is the centred STFT and its inverse (overlap-add with a precomputed window
envelope) on torch float32, frames first ``(batch, n_frames, 1 + n_fft // 2)``, for the
inverses of :mod:`._inversion` (Griffin-Lim runs one of each per iteration: 3-4x faster than
``torch.istft``, which rebuilds the window envelope at every call). Windows, mel bases and
plans are cached per parameter set.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is needed: importing the package stays light
    import torch

    from cadenza.kernels.spectral import MelWeights

from cadenza.errors import ParameterError
from cadenza.representations.base import Representation

__all__ = [
    "INVERSIONS",
    "PAD_MODES",
    "MelFields",
    "check_mel_fields",
    "check_mel_params",
    "db_to_power",
    "log_mel_spectrogram",
    "mel_basis",
    "mel_spectrogram",
    "power_spectrogram",
    "spectral_distance",
    "window",
]

#: ``pad_mode`` values accepted with ``center=True`` (numpy names, as librosa).
PAD_MODES = ("constant", "edge", "reflect", "wrap")
_TORCH_PAD = {"constant": "constant", "edge": "replicate", "reflect": "reflect", "wrap": "circular"}

#: ``inversion`` values of mel and MFCC (see :mod:`._inversion`): magnitude and phase
#: estimated jointly from a PGHI start, or librosa's route (NNLS, then Griffin-Lim from random phase).
INVERSIONS = ("joint", "librosa")

#: Frames transformed at once (4 MiB of float64 frames at n_fft=2048: cache-sized, and fastest).
_CHUNK_FRAMES = 256
#: Frames of a chunk of the float32 features (4 MiB of frames at n_fft=2048).
_MEL_CHUNK_FRAMES = 512
#: Envelopes kept per STFT plan (one per number of frames).
_ENVELOPES = 8


def check_mel_params(
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    win_length: int | None,
    n_mels: int,
    fmin: float,
    fmax: float | None,
    amin: float,
    top_db: float | None,
    n_iter: int,
) -> None:
    """Raise ``ParameterError`` for STFT/mel parameters that cannot work (shared by mel and MFCC)."""
    if sample_rate <= 0:
        raise ParameterError(f"sample_rate must be positive, got {sample_rate}")
    if n_fft < 2:
        raise ParameterError(f"n_fft must be at least 2, got {n_fft}")
    effective_win = n_fft if win_length is None else win_length
    if not 1 <= effective_win <= n_fft:
        raise ParameterError(f"win_length must be in 1..n_fft={n_fft}, got {win_length}")
    if not 1 <= hop_length < effective_win:
        # hop = window length would leave the Hann window's zeros uncovered and decode undefined.
        raise ParameterError(
            f"hop_length must be at least 1 and below the window length {effective_win}, got {hop_length}"
        )
    if n_mels < 1:
        raise ParameterError(f"n_mels must be positive, got {n_mels}")
    nyquist = sample_rate / 2
    top = nyquist if fmax is None else fmax
    if not 0.0 <= fmin < top <= nyquist:
        raise ParameterError(
            f"need 0 <= fmin < fmax <= sample_rate / 2 = {nyquist}, got fmin={fmin}, fmax={fmax}"
        )
    if amin <= 0:
        raise ParameterError(f"amin must be positive, got {amin}")
    if top_db is not None and top_db < 0:
        raise ParameterError(f"top_db must be non-negative or None, got {top_db}")
    if n_iter < 0:
        raise ParameterError(f"n_iter must be non-negative, got {n_iter}")


@functools.lru_cache(maxsize=32)
def window(n_fft: int, win_length: int | None = None) -> np.ndarray:
    """Periodic Hann window of ``win_length`` zero-padded to ``n_fft`` (centred), as librosa.

    Returned float64 and read-only (it is cached).

    Examples
    --------
    >>> window(8).round(3)
    array([0.   , 0.146, 0.5  , 0.854, 1.   , 0.854, 0.5  , 0.146])
    """
    # scipy.signal.get_window("hann", m, fftbins=True) (librosa's), computed as scipy does, so
    # that importing neither scipy.signal nor librosa.filters (1-2 s) is needed to encode.
    m = win_length or n_fft
    w = np.zeros(n_fft, dtype=np.float64)
    start = (n_fft - m) // 2  # librosa.util.pad_center
    w[start : start + m] = 0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, m + 1))[:m]
    w.flags.writeable = False
    return w


@functools.lru_cache(maxsize=32)
def _window_tensor(n_fft: int, win_length: int | None, dtype: torch.dtype) -> torch.Tensor:
    import torch

    return torch.from_numpy(window(n_fft, win_length).copy()).to(dtype)


@functools.lru_cache(maxsize=32)
def mel_basis(
    *,
    sr: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    norm: str | None = "slaney",
) -> np.ndarray:
    """``librosa.filters.mel`` as float32, shape ``(n_mels, 1 + n_fft // 2)``, cached and read-only.

    Examples
    --------
    >>> mel_basis(sr=22050, n_fft=2048, n_mels=128).shape
    (128, 1025)
    """

    # librosa.filters.mel's computation, step for step (bit-identical, tested), without
    # importing it: librosa.filters loads scipy.signal, 1.4 s of each prepare worker's start.
    top = float(sr) / 2 if fmax is None else fmax
    freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin, htk), _hz_to_mel(top, htk), n_mels + 2), htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, freqs)
    m = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        m[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    if norm == "slaney":
        m *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    elif norm is not None:
        raise ParameterError(f"norm must be 'slaney' or None, got {norm!r}")
    m.flags.writeable = False
    return m


#: The Slaney mel scale: linear to 1 kHz (200/3 Hz per mel), logarithmic above (librosa's).
_SLANEY_SP = 200.0 / 3
_SLANEY_LOG_HZ = 1000.0
_SLANEY_LOG_MEL = _SLANEY_LOG_HZ / _SLANEY_SP
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float, htk: bool) -> float:
    """``librosa.hz_to_mel`` of one frequency."""
    if htk:
        return float(2595.0 * np.log10(1.0 + hz / 700.0))
    if hz >= _SLANEY_LOG_HZ:
        return float(_SLANEY_LOG_MEL + np.log(hz / _SLANEY_LOG_HZ) / _SLANEY_LOGSTEP)
    return hz / _SLANEY_SP


def _mel_to_hz(mels: np.ndarray, htk: bool) -> np.ndarray:
    """``librosa.mel_to_hz`` of an array of mels."""
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    hz = _SLANEY_SP * mels
    log_t = mels >= _SLANEY_LOG_MEL
    hz[log_t] = _SLANEY_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mels[log_t] - _SLANEY_LOG_MEL))
    return hz


@functools.lru_cache(maxsize=32)
def _mel_weights(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool, norm: str | None
) -> MelWeights:
    """The mel basis with its nonzero weights by band, for :func:`~cadenza.kernels.spectral.mel_project`."""
    from cadenza.kernels.spectral import MelWeights

    return MelWeights.of(
        mel_basis(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    )


@functools.lru_cache(maxsize=32)
def _basis_tensor(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool, norm: str | None
) -> torch.Tensor:
    """The mel basis as a float32 tensor ``(n_mels, 1 + n_fft // 2)`` (cached: do not modify)."""
    import torch

    return torch.from_numpy(
        mel_basis(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm).copy()
    )


def check_mel_fields(rep: Any) -> None:
    """:func:`check_mel_params` on the fields of a mel-based representation (mel, MFCC)."""
    check_mel_params(
        sample_rate=rep.sample_rate,
        n_fft=rep.n_fft,
        hop_length=rep.hop_length,
        win_length=rep.win_length,
        n_mels=rep.n_mels,
        fmin=rep.fmin,
        fmax=rep.fmax,
        amin=rep.amin,
        top_db=rep.top_db,
        n_iter=rep.n_iter,
    )
    if rep.inversion not in INVERSIONS:
        raise ParameterError(f"inversion must be one of {INVERSIONS}, got {rep.inversion!r}")


def _power_chunks(
    y: np.ndarray,
    *,
    n_fft: int,
    hop_length: int,
    win_length: int | None,
    center: bool,
    pad_mode: str,
    power: float,
) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    """Number of frames, and ``(first_frame, |STFT| ** power)`` chunks of shape ``(n, 1 + n_fft // 2)``."""
    y = np.asarray(y, dtype=np.float32)
    if center:
        if pad_mode not in PAD_MODES:
            raise ParameterError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        y = np.pad(y, n_fft // 2, mode=pad_mode)
    if len(y) < n_fft:
        raise ParameterError(f"{len(y)} samples are fewer than n_fft={n_fft} (use center=True)")
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop_length]  # (T, n_fft), a view
    win = window(n_fft, win_length)  # float64: the FFT runs in float64, as librosa's

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        for f0 in range(0, len(frames), _CHUNK_FRAMES):
            spec = np.fft.rfft(frames[f0 : f0 + _CHUNK_FRAMES] * win, axis=-1)  # (n, n_freq) complex128
            mag2 = spec.real**2
            mag2 += spec.imag**2
            yield f0, (mag2 if power == 2.0 else mag2 ** (power / 2.0)).astype(np.float32)

    return len(frames), chunks()


def power_spectrogram(
    y: np.ndarray,
    *,
    n_fft: int = 2048,
    hop_length: int = 512,
    win_length: int | None = None,
    center: bool = True,
    pad_mode: str = "constant",
    power: float = 2.0,
) -> np.ndarray:
    """``np.abs(librosa.stft(y, ...)) ** power`` as float32, shape ``(1 + n_fft // 2, n_frames)``.

    With ``center=True`` there are ``1 + len(y) // hop_length`` frames (even ``n_fft``).

    Examples
    --------
    >>> y = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
    >>> power_spectrogram(y).shape
    (1025, 44)
    """
    n_frames, chunks = _power_chunks(
        y,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        center=center,
        pad_mode=pad_mode,
        power=power,
    )
    out = np.empty((1 + n_fft // 2, n_frames), dtype=np.float32)
    for f0, chunk in chunks:
        out[:, f0 : f0 + len(chunk)] = chunk.T
    return out


def mel_spectrogram(
    y: np.ndarray,
    *,
    sr: int,
    n_fft: int = 2048,
    hop_length: int = 512,
    win_length: int | None = None,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    power: float = 2.0,
    center: bool = True,
    pad_mode: str = "constant",
    htk: bool = False,
    norm: str | None = "slaney",
) -> np.ndarray:
    """Linear mel spectrogram, frames first: shape ``(..., n_frames, n_mels)``, float32.

    ``librosa.feature.melspectrogram(y=y, sr=sr, ...)`` with its last two axes swapped, from a
    float32 FFT (see the module notes for the difference). ``y`` is ``(n,)`` or a batch
    ``(..., n)`` of clips of one length, transformed together.

    Examples
    --------
    >>> y = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
    >>> mel_spectrogram(y, sr=22050).shape
    (44, 128)
    >>> mel_spectrogram(np.stack([y, 0.5 * y]), sr=22050).shape  # a batch of two clips
    (2, 44, 128)
    """
    import scipy.fft

    from cadenza.kernels.spectral import mel_project

    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 0:
        raise ParameterError("mel_spectrogram needs samples of shape (n,) or (..., n), got a scalar")
    lead = y.shape[:-1]
    y2 = y.reshape(math.prod(lead), y.shape[-1])
    if center and pad_mode not in PAD_MODES:
        raise ParameterError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    half = n_fft // 2 if center else 0
    n_padded = y2.shape[-1] + 2 * half
    if n_padded < n_fft:
        raise ParameterError(f"{y2.shape[-1]} samples are fewer than n_fft={n_fft} (use center=True)")
    edges = _pad_edges(y2, half, pad_mode) if half else None
    n_frames = 1 + (n_padded - n_fft) // hop_length
    weights = _mel_weights(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    win = window(n_fft, win_length).astype(np.float32)
    out = np.empty((y2.shape[0], n_frames, n_mels), dtype=np.float32)
    for b in range(y2.shape[0]):
        for f0 in range(0, n_frames, _MEL_CHUNK_FRAMES):
            f1 = min(f0 + _MEL_CHUNK_FRAMES, n_frames)
            # the padded samples of frames f0..f1 alone: the whole padded signal was a copy of
            # the clip (318 MB for an hour at 22.05 kHz), the frames of one chunk are a few MB
            seg = _padded_slice(y2[b], edges, b, half, f0 * hop_length, (f1 - 1) * hop_length + n_fft)
            frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop_length]  # (f1 - f0, n_fft)
            # numpy and scipy's pocketfft in float32, not torch's FFT: a `prepare` worker that
            # imported torch for it spent 0.8 s of its start there (a third of a small corpus's time)
            spec = scipy.fft.rfft(frames * win, axis=-1)  # (n, n_freq) complex64
            mel_project(spec, weights, power, out[b, f0:f1])
    return out.reshape(*lead, n_frames, n_mels)


def _pad_edges(y2: np.ndarray, half: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``half`` samples ``np.pad(y2, ((0, 0), (half, half)), mode)`` puts before and after each
    row of ``y2`` ``(B, n)``, without padding the whole."""
    n = y2.shape[-1]
    if n <= half + 1:  # short: np.pad's own rules (reflections of reflections) on the few samples
        padded = np.pad(y2, ((0, 0), (half, half)), mode=mode)  # type: ignore[call-overload]
        return padded[:, :half], padded[:, half + n :]
    if mode == "wrap":  # wraps to the other end of the whole row
        return y2[:, n - half :].copy(), y2[:, :half].copy()
    ends = np.concatenate([y2[:, : half + 1], y2[:, n - half - 1 :]], axis=1)  # all the others read
    padded = np.pad(ends, ((0, 0), (half, half)), mode=mode)  # type: ignore[call-overload]
    return padded[:, :half], padded[:, -half:]


def _padded_slice(
    row: np.ndarray, edges: tuple[np.ndarray, np.ndarray] | None, b: int, half: int, start: int, stop: int
) -> np.ndarray:
    """Samples ``start:stop`` of ``row`` padded with ``edges`` (``half`` on each side), float32."""
    n = row.shape[-1]
    lo, hi = start - half, stop - half  # in the row's own samples
    if lo >= 0 and hi <= n:
        return row[lo:hi]
    parts = []
    if lo < 0:
        parts.append(edges[0][b, half + lo : half + min(hi, 0)])  # type: ignore[index]
    parts.append(row[max(lo, 0) : max(min(hi, n), 0)])
    if hi > n:
        parts.append(edges[1][b, max(lo - n, 0) : hi - n])  # type: ignore[index]
    return np.concatenate(parts)


def log_mel_spectrogram(
    y: np.ndarray,
    *,
    sr: int,
    n_fft: int = 2048,
    hop_length: int = 512,
    win_length: int | None = None,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    power: float = 2.0,
    center: bool = True,
    pad_mode: str = "constant",
    htk: bool = False,
    norm: str | None = "slaney",
    amin: float = 1e-10,
    top_db: float | None = None,
) -> np.ndarray:
    """Mel spectrogram in dB (``ref=1``), frames first: shape ``(..., n_frames, n_mels)``, float32.

    Equals ``librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, ...), ref=1.0,
    amin=amin, top_db=top_db).T`` to 0.01 dB on music (float32 FFT; up to 0.13 dB in bands 100 dB
    or more under their frame's loudest: see the module notes). A batch
    ``(..., n)`` is clipped at ``top_db`` below each clip's own peak.

    Examples
    --------
    >>> y = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
    >>> log_mel_spectrogram(y, sr=22050).shape
    (44, 128)
    """
    mel = mel_spectrogram(
        y,
        sr=sr,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
        power=power,
        center=center,
        pad_mode=pad_mode,
        htk=htk,
        norm=norm,
    )
    np.maximum(mel, np.float32(amin), out=mel)
    db = np.log10(mel, out=mel)
    db *= np.float32(10.0)
    if top_db is not None and db.size:
        peak = db.max(axis=(-2, -1), keepdims=True)
        np.maximum(db, peak - np.float32(top_db), out=db)
    return db


def db_to_power(db: np.ndarray) -> np.ndarray:
    """Inverse of ``10 * log10(power)`` (``ref=1``), float32.

    Examples
    --------
    >>> db_to_power(np.array([0.0, 10.0, -20.0]))
    array([ 1.  , 10.  ,  0.01], dtype=float32)
    """
    return np.power(np.float32(10.0), np.asarray(db, dtype=np.float32) / np.float32(10.0))


class _STFTPlan:
    """Centred STFT and its inverse on torch float32, frames first, for one ``(n_fft, hop, window)``.

    :meth:`stft` is ``torch.stft(..., center=True)`` transposed to ``(B, T, n_freq)``;
    :meth:`istft` is ``torch.istft(..., center=True, length=length)`` of such frames (the
    least-squares inverse: overlap-add of the windowed frames over the summed squared window),
    with the envelope computed once per number of frames.
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int | None) -> None:
        import torch

        self.n_fft, self.hop = n_fft, hop_length
        self.win = _window_tensor(n_fft, win_length, torch.float32)
        self._inverse_envelopes: dict[int, torch.Tensor] = {}

    def stft(self, y: torch.Tensor, pad_mode: str = "constant") -> torch.Tensor:
        """Samples ``(B, n)`` -> complex64 frames ``(B, 1 + n // hop, n_freq)``."""
        import torch
        import torch.nn.functional as F

        half = self.n_fft // 2
        padded = F.pad(y[:, None, :], (half, half), mode=_TORCH_PAD[pad_mode])[:, 0]
        return torch.fft.rfft(padded.unfold(-1, self.n_fft, self.hop) * self.win)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Complex frames ``(B, T, n_freq)`` -> samples ``(B, length)`` (zeros past the last frame)."""
        import torch
        import torch.nn.functional as F

        n_frames = spec.shape[1]
        frames = torch.fft.irfft(spec, n=self.n_fft)
        frames *= self.win
        y = self._overlap_add(frames)
        y *= self._inverse_envelope(n_frames)
        half = self.n_fft // 2
        y = y[:, half : half + length]
        if y.shape[1] < length:
            y = F.pad(y, (0, length - y.shape[1]))
        return y

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, n_fft)`` -> ``(B, n_fft + (T - 1) * hop)``: each frame added at ``t * hop``."""
        import torch
        import torch.nn.functional as F

        b, t, n = frames.shape
        hop = self.hop
        if n % hop == 0:  # hop-sized blocks: n // hop shifted slice additions
            r = n // hop
            blocks = frames.reshape(b, t, r, hop)
            out = torch.zeros((b, t + r - 1, hop), dtype=frames.dtype)
            for k in range(r):
                out[:, k : k + t] += blocks[:, :, k]
            return out.reshape(b, -1)
        size = n + (t - 1) * hop
        return F.fold(frames.transpose(1, 2), (1, size), (1, n), stride=(1, hop)).reshape(b, size)

    def _inverse_envelope(self, n_frames: int) -> torch.Tensor:
        """``1 / sum_t w(i - t hop) ** 2`` over the padded signal (0 where the sum vanishes)."""
        import torch

        env = self._inverse_envelopes.get(n_frames)
        if env is None:
            if len(self._inverse_envelopes) >= _ENVELOPES:
                self._inverse_envelopes.clear()
            sq = (self.win * self.win).expand(1, n_frames, self.n_fft).contiguous()
            total = self._overlap_add(sq)[0]
            env = torch.where(total > 1e-11, 1.0 / total.clamp(min=1e-11), torch.zeros(()))
            self._inverse_envelopes[n_frames] = env
        return env


@functools.lru_cache(maxsize=16)
def stft_plan(n_fft: int, hop_length: int, win_length: int | None = None) -> _STFTPlan:
    """The cached :class:`_STFTPlan` of these parameters.

    Examples
    --------
    >>> import torch
    >>> plan = stft_plan(2048, 512)
    >>> y = torch.randn(1, 22016)
    >>> spec = plan.stft(y)
    >>> spec.shape
    torch.Size([1, 44, 1025])
    >>> bool((plan.istft(spec, 22016) - y).abs().max() < 1e-5)  # a perfect reconstruction
    True
    """
    return _STFTPlan(n_fft, hop_length, win_length)


def spectral_distance(
    y_ref: np.ndarray,
    y_test: np.ndarray,
    *,
    sr: int,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    top_db: float = 80.0,
) -> float:
    """Mean absolute difference, in dB, between the log-mel spectra of two signals.

    Each spectrum is in dB (``ref=1``) and clipped below at its own peak minus ``top_db``, so
    that inaudible detail far below the music does not dominate. The longer signal is cut to
    the shorter one's length. Phase does not count: a Griffin-Lim reconstruction of a mel
    spectrogram scores a few dB, unrelated music ten or more, silence against music 60 or more.

    Parameters
    ----------
    y_ref, y_test : np.ndarray
        Mono samples at ``sr``.
    sr : int
        Sample rate of both.

    Returns
    -------
    float
        The distance in dB; 0.0 for identical signals.

    Examples
    --------
    >>> t = np.arange(22050) / 22050
    >>> a = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    >>> spectral_distance(a, a, sr=22050)
    0.0
    >>> round(spectral_distance(a, 0.5 * a, sr=22050), 2)  # half the amplitude: -6 dB
    6.02
    """
    n = min(len(y_ref), len(y_test))
    if n == 0:
        raise ParameterError("spectral_distance needs two non-empty signals")
    kwargs = {"sr": sr, "n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels, "top_db": top_db}
    a = log_mel_spectrogram(np.asarray(y_ref[:n], dtype=np.float32), **kwargs)
    b = log_mel_spectrogram(np.asarray(y_test[:n], dtype=np.float32), **kwargs)
    return float(np.mean(np.abs(a.astype(np.float64) - b)))


@dataclasses.dataclass(frozen=True)
class MelFields(Representation):
    """The STFT, mel filters, floor and inversion fields that ``mel`` and ``mfcc`` share (librosa's defaults).

    ``inversion`` (one of :data:`INVERSIONS`) chooses how ``decode`` finds sound for the frames:
    ``"joint"`` (default) or librosa's route; stores written before the field existed load with
    the default.
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    win_length: int | None = None
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    htk: bool = False
    amin: float = 1e-10
    n_iter: int = 32
    inversion: str = "joint"

    #: Whether the frames are in dB (mel) or not (MFCC), for :meth:`picture`.
    is_db: ClassVar[bool] = True

    def decode_bytes(self, n_frames: int) -> int:
        """About the memory :meth:`decode` takes for ``n_frames``: the inversion holds some twelve
        complex spectrograms of a block of at most 2,112 frames (it goes block by block), and the
        sound and its re-analysis some eight float32 copies of the samples (measured at 22.05 kHz:
        0.94 GB of peak memory for ten minutes, 2.9 GB for an hour; 3.1 GB for ten minutes when
        the inversion held the whole clip)."""
        from cadenza.representations._inversion import _BLOCK_FRAMES, block_overlap

        block = min(int(n_frames), _BLOCK_FRAMES + block_overlap(self.n_fft, self.hop_length))
        return 12 * block * (self.n_fft // 2 + 1) * 8 + 8 * 4 * int(n_frames) * self.hop_length

    def mel_fields(self) -> dict[str, Any]:
        """These fields as keyword arguments (to build the ``Mel`` under an ``MFCC``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(MelFields)}

    def picture(self, frames: np.ndarray, *, title: str = "", ax: Any = None) -> Any:
        """The frames as an image, time on x (``plot_db_frames``)."""
        from cadenza.plots import plot_db_frames

        name = self.name  # type: ignore[attr-defined]
        return plot_db_frames(
            frames,
            frame_rate=self.frame_rate,
            is_db=self.is_db,
            ax=ax,
            title=f"{title} {name}".strip(),
            ylabel=name,
        )

    def to_audio(
        self, frames: np.ndarray, *, seconds: float | None = None, report: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, int]:
        """As :meth:`Representation.to_audio`, through :meth:`invert`: ``report`` (a dict, when
        given) receives the inversion's ``summary()``, its own spectral convergence included."""
        inversion = self.invert(frames)  # type: ignore[attr-defined]
        if report is not None:
            report.update(inversion.summary())
        return self._fit(inversion.audio, seconds), int(self.sample_rate)
