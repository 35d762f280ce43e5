"""MFCC (paper 003: 20 coefficients, librosa defaults), and its inversion to audio.

``encode`` equals ``librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=n_mfcc, ...).T`` within
1e-3, librosa's ``top_db=80`` included: unlike the mel representation this keeps librosa's
default, because the paper's features (and anything compared with them) are librosa's MFCCs.
A GTZAN clip (30.013 s at 22.05 kHz) gives the paper's ``(20, 1293)``, transposed to ``(1293, 20)``.

``decode`` inverts the DCT (zero-padding the dropped coefficients) back to a smoothed log-mel
spectrogram, then follows the mel decode path (``inversion``: joint magnitude and phase
estimation by default, or librosa's route). ``invert`` also reports how close the MFCCs of
the result are to the requested ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import scipy.fft

from cadenza.errors import ParameterError
from cadenza.representations import _inversion, _spectral
from cadenza.representations._inversion import Inversion
from cadenza.representations.base import as_mono
from cadenza.representations.mel import Mel

__all__ = ["DCT_NORMS", "DCT_TYPES", "MFCC"]

#: ``MFCC.dct_type`` values (as librosa).
DCT_TYPES = (1, 2, 3)
#: ``MFCC.norm`` values: orthonormal DCT, or scipy's unnormalised one.
DCT_NORMS = ("ortho", None)


@dataclasses.dataclass(frozen=True)
class MFCC(_spectral.MelFields):
    """Mel-frequency cepstral coefficients, frames ``(1 + n // hop_length, n_mfcc)``.

    Lossy twice: 20 of 128 cepstral coefficients keep only the spectral envelope (not the
    partials), and decode estimates the phase. Measured at the default parameters over 44
    signals of chords of harmonic tones (as :class:`~cadenza.representations.mel.Mel`'s),
    ``spectral_distance(y, decode(encode(y)))`` is 7.3-11.6 dB (mean 9.1), all of it from the
    truncation: both ``inversion`` routes give the same figures, though on the mel spectrogram
    itself the joint one is 1 dB closer. The declared ``round_trip_tolerance`` is 12 dB. That is as far as unrelated chord music can be
    (9.8-18.5 dB), so the tolerance separates a reconstruction from noise (40 dB) or silence
    (60 dB and more), not from other music: MFCCs do not hold the notes.

    Parameters
    ----------
    sample_rate : int
        Samples per second.
    n_mfcc : int
        Coefficients kept, at most ``n_mels``.
    n_fft, hop_length, win_length, n_mels, fmin, fmax, htk, amin
        As :class:`~cadenza.representations.mel.Mel` (power 2, centred, constant padding,
        Slaney-normalised filters).
    dct_type : {1, 2, 3}
        DCT type.
    norm : {"ortho", None}
        DCT normalisation.
    lifter : float
        Cepstral liftering coefficient (0: none).
    top_db : float or None
        Clip the log-mel spectrogram at its peak minus ``top_db`` before the DCT (librosa: 80).
    n_iter : int
        Griffin-Lim iterations of ``decode``.
    inversion : {"joint", "librosa"}
        How ``decode`` finds the sound (as :class:`~cadenza.representations.mel.Mel`).

    Examples
    --------
    >>> rep = MFCC()
    >>> y = np.zeros(661794, dtype=np.float32)  # a 30 s GTZAN clip (30.013 s at 22050 Hz)
    >>> rep.encode(y).shape  # paper 003: (20, 1293), frames first here
    (1293, 20)
    """

    name: ClassVar[str] = "mfcc"
    is_db: ClassVar[bool] = False
    round_trip_tolerance: ClassVar[float] = 12.0

    n_mfcc: int = 20
    dct_type: int = 2
    norm: str | None = "ortho"
    lifter: float = 0.0
    top_db: float | None = 80.0

    def _validate(self) -> None:
        _spectral.check_mel_fields(self)
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise ParameterError(f"n_mfcc must be in 1..n_mels={self.n_mels}, got {self.n_mfcc}")
        if self.dct_type not in DCT_TYPES:
            raise ParameterError(f"dct_type must be one of {DCT_TYPES}, got {self.dct_type}")
        if self.norm not in DCT_NORMS:
            raise ParameterError(f"norm must be one of {DCT_NORMS}, got {self.norm!r}")
        if self.dct_type == 1 and self.n_mels < 2:
            raise ParameterError("dct_type=1 needs n_mels >= 2")
        if self.lifter < 0:
            raise ParameterError(f"lifter must be non-negative, got {self.lifter}")
        if self.lifter > 0 and np.min(np.abs(self._lifter_weights())) < 1e-6:
            raise ParameterError(f"lifter={self.lifter} zeroes a coefficient, so decode could not undo it")

    def _lifter_weights(self) -> np.ndarray:
        k = np.arange(1, 1 + self.n_mfcc, dtype=np.float64)
        return (1.0 + (self.lifter / 2.0) * np.sin(np.pi * k / self.lifter)).astype(np.float32)

    @property
    def n_features(self) -> int:
        return self.n_mfcc

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def mel(self) -> Mel:
        """The mel representation under these MFCCs (same STFT, filters, floor and Griffin-Lim)."""
        return Mel(**self.mel_fields(), top_db=self.top_db)

    def encode(self, y: Any) -> np.ndarray:
        """Samples ``(n,)`` -> float32 coefficients ``(1 + n // hop_length, n_mfcc)``."""
        log_mel = self.mel.encode(as_mono(y))  # (T, n_mels) dB, clipped at peak - top_db
        coeffs = scipy.fft.dct(log_mel, type=self.dct_type, norm=self.norm, axis=1)[:, : self.n_mfcc]
        if self.lifter > 0:
            coeffs *= self._lifter_weights()
        return np.ascontiguousarray(coeffs, dtype=np.float32)

    def to_log_mel(self, frames: np.ndarray) -> np.ndarray:
        """Coefficients ``(n_frames, n_mfcc)`` -> log-mel dB ``(n_frames, n_mels)`` (inverse DCT)."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[1] != self.n_mfcc:
            raise ParameterError(f"mfcc frames must have shape (n_frames, {self.n_mfcc}), got {frames.shape}")
        if self.lifter > 0:
            frames = frames / self._lifter_weights()
        return scipy.fft.idct(frames, type=self.dct_type, norm=self.norm, n=self.n_mels, axis=1).astype(
            np.float32
        )

    def decode(self, frames: np.ndarray) -> np.ndarray:
        """Coefficients ``(n_frames, n_mfcc)`` -> float32 samples ``((n_frames - 1) * hop_length,)``."""
        return self.mel.decode(self.to_log_mel(frames))

    def invert(self, frames: np.ndarray) -> Inversion:
        """:meth:`decode`, with the spectral convergence of the result's MFCCs.

        20 coefficients cannot carry a waveform (nor a spectrum: only its envelope), so
        ``spectral_convergence_db`` compares the MFCCs re-extracted from the audio with the
        requested ones, ``20 log10(||encode(audio) - frames|| / ||frames||)``; ``domain`` is
        ``"mfcc"``.

        Examples
        --------
        >>> rep = MFCC()
        >>> t = np.arange(22050) / 22050
        >>> y = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        >>> inv = rep.invert(rep.encode(y))
        >>> inv.domain, inv.audio.shape, inv.spectral_convergence_db < -10
        ('mfcc', (22016,), True)
        """
        frames = np.asarray(frames, dtype=np.float32)
        audio = self.decode(frames)
        again = self.encode(audio)[: len(frames)]
        sc = _inversion.spectral_convergence_db(again, frames[: len(again)])
        return Inversion(audio, sc, self.inversion, self.n_iter, "mfcc")
