"""Per-clip detectors of degenerate output: silence, noise, clipping, loudness, loops and copies.

Each detector is a plain function of one clip (samples or its :class:`ClipFeatures`) that
returns a number; :func:`clip_measures` gathers them and :func:`flag_clip` turns them into
flags by rules stated here, most of them relative to the reference set (so a corpus of noisy
field recordings does not flag every clip as noise):

* **silent**: more than half of the clip's 10 ms frames are below -50 dBFS.
* **noise**: the clip's spectral flatness (mean over its non-silent frames, at its own rate) is
  above ``max(NOISE_FLOOR, twice that of the flattest reference clip)`` (white noise is about
  0.6, music 0.001-0.05).
* **clipping**: more than 0.1% of the samples at or above 0.999 of full scale.
* **loop**: :func:`loop_score` above ``max(LOOP_THRESHOLD, the reference's highest + 0.05)``.
* **copy**: the clip's nearest-neighbour distance to the training windows is below half the
  median of the same distance for real held-out clips (:func:`nearest_window_distances`).

Examples
--------
>>> import numpy as np
>>> sr = 16000
>>> tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
>>> silent_fraction(np.concatenate([tone, np.zeros(3 * sr)]), sr)
0.75
"""

from __future__ import annotations

import warnings

import numpy as np

from cadenza.evaluation.features import FRAME_RATE, ClipFeatures

__all__ = [
    "CLIPPING_LEVEL",
    "CLIPPING_RATE",
    "COPY_RATIO",
    "LOOP_THRESHOLD",
    "LUFS_FLOOR",
    "clipping_rate",
    "flatness",
    "loop_score",
    "loudness_lufs",
    "nearest_window_distances",
    "silent_fraction",
]

#: Silence: 10 ms frames whose RMS is below -50 dBFS; a clip more than half silent is flagged.
SILENCE_FRAME_SECONDS = 0.01
SILENCE_THRESHOLD_DB = -50.0
SILENT_FLAG = 0.5
#: Samples at or above this magnitude count as clipped; a clip with more than CLIPPING_RATE is flagged.
CLIPPING_LEVEL = 0.999
CLIPPING_RATE = 0.001
#: ITU-R BS.1770's absolute gate: a clip quieter than this everywhere reads as this.
LUFS_FLOOR = -70.0
#: A loop score above this (and above the reference's) flags a loop or held tone.
LOOP_THRESHOLD = 0.8
#: Shortest lag of the loop search (s): repetition at shorter lags is a note's own sustain.
LOOP_MIN_LAG = 0.25
#: Smallest typical frame change (mean |dB| over the log-mel bands) a score is relative to: a
#: held tone, which barely changes at any lag, is measured against this and scores near 1.
LOOP_FLOOR_DB = 1.0
#: The loop search reads at most this many seconds from the clip's start: it compares every lag
#: with every frame, so its time grows with the square of the length (a 2-hour file in a folder
#: given to ``cadenza evaluate`` had kept it busy for most of an hour; 60 s take 0.2 s).
LOOP_MAX_SECONDS = 60.0
#: A clip whose copy distance is below this share of the held-out clips' median is a likely copy.
COPY_RATIO = 0.5
#: A flatness above this multiple of the flattest reference clip's, and above NOISE_FLOOR, is noise.
NOISE_FACTOR = 2.0
NOISE_FLOOR = 0.1


def silent_fraction(
    y: np.ndarray,
    sr: int,
    *,
    frame_seconds: float = SILENCE_FRAME_SECONDS,
    threshold_db: float = SILENCE_THRESHOLD_DB,
) -> float:
    """The fraction of ``frame_seconds`` frames of ``y`` whose RMS is below ``threshold_db`` dBFS.

    Frames do not overlap; a last partial frame counts as a frame. Paper 002's WaveNet fell
    silent after a second.

    Examples
    --------
    >>> sr = 8000
    >>> tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    >>> silent_fraction(np.concatenate([tone, np.zeros(3 * sr)]), sr)
    0.75
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.size == 0:
        return 1.0
    n = max(1, int(round(frame_seconds * sr)))
    y = np.pad(y, (0, -len(y) % n)).reshape(-1, n)
    rms = np.sqrt(np.mean(y**2, axis=1))
    return float(np.mean(rms < 10.0 ** (threshold_db / 20.0)))


def clipping_rate(y: np.ndarray, *, level: float = CLIPPING_LEVEL) -> float:
    """The share of samples whose magnitude is at least ``level`` (full scale is 1).

    Examples
    --------
    >>> clipping_rate(np.array([0.0, 1.0, -1.0, 0.5]))
    0.5
    """
    y = np.asarray(y).reshape(-1)
    return float(np.mean(np.abs(y) >= level)) if y.size else 0.0


def loudness_lufs(y: np.ndarray, sr: int) -> float | None:
    """Integrated loudness (ITU-R BS.1770-4, K-weighted and gated) in LUFS, via ``pyloudnorm``.

    A clip quieter than the absolute gate reads :data:`LUFS_FLOOR`; one shorter than the
    400 ms gating block gives None.

    Examples
    --------
    >>> sr = 16000
    >>> y = 0.1 * np.sin(2 * np.pi * 1000 * np.arange(sr) / sr)
    >>> round(loudness_lufs(y, sr))
    -23
    """
    import pyloudnorm

    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(y) < int(0.4 * sr) + 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(pyloudnorm.Meter(sr).integrated_loudness(y))
    return max(value, LUFS_FLOOR) if np.isfinite(value) or value == -np.inf else None


def flatness(y: np.ndarray, sr: int) -> float | None:
    """Mean spectral flatness of the clip's non-silent frames, at the clip's own rate (None if all silent).

    Measured up to the clip's own Nyquist frequency, so 8 kHz noise reads as noise (about 0.5)
    and not as the near-zero flatness of a spectrum that is empty above 4 kHz. Frames of about
    46 ms with a half-frame hop; digital silence, "flat" to the formula, is left out (the
    silence detector reports it).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> round(flatness(rng.standard_normal(8000) * 0.1, 8000), 1)
    0.6
    >>> flatness(np.zeros(8000), 8000) is None
    True
    """
    import librosa

    y = np.asarray(y, dtype=np.float32).reshape(-1)
    n_fft = int(2 ** np.ceil(np.log2(max(0.046 * sr, 64))))
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    mag = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=n_fft // 2, center=False))
    frames = librosa.util.frame(y, frame_length=n_fft, hop_length=n_fft // 2)
    loud = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=0)) > 10 ** (SILENCE_THRESHOLD_DB / 20)
    if not loud.any():
        return None
    return float(librosa.feature.spectral_flatness(S=mag[:, loud], amin=1e-10).mean())


def loop_score(features: ClipFeatures) -> tuple[float | None, float | None]:
    """How strongly the clip repeats itself at one lag: ``(score in [0, 1], lag in seconds)``.

    For every lag ``L`` from 0.25 s to half the clip, ``D(L)`` is the mean absolute difference
    (dB) of the log-mel frames ``t`` and ``t + L`` over all non-silent pairs; the score is
    ``1 - min_L D(L) / max(median_L D(L), 1 dB)`` clipped to [0, 1]: how much closer the clip
    is to itself at its best lag than at a typical one. A clip made of one cycle repeated
    scores near 1 at the cycle's length, and so does a held tone (it barely changes at any
    lag); music, whose notes change within any half of the clip, and noise, which never
    repeats, stay well below. None when less than 1 s of the clip sounds. Only the first
    :data:`LOOP_MAX_SECONDS` of a longer clip are searched (the search is quadratic in length).

    Examples
    --------
    >>> from cadenza.evaluation.features import ANALYSIS_SR, clip_features
    >>> rng = np.random.default_rng(0)
    >>> cycle = rng.standard_normal(ANALYSIS_SR // 2).astype(np.float32) * 0.1
    >>> score, lag = loop_score(clip_features(np.tile(cycle, 12)))
    >>> score > 0.8, lag
    (True, 0.5)
    """
    n_max = int(round(LOOP_MAX_SECONDS * FRAME_RATE))
    logmel = features.logmel[:n_max]  # (T, M) dB
    loud = features.rms_db[:n_max] > SILENCE_THRESHOLD_DB
    n = len(logmel)
    min_lag = int(round(LOOP_MIN_LAG * FRAME_RATE))
    max_lag = n // 2
    if loud.sum() < FRAME_RATE or max_lag < min_lag:
        return None, None
    lags, diffs = [], []
    for lag in range(min_lag, max_lag + 1):
        pair = loud[:-lag] & loud[lag:]
        if pair.sum() >= FRAME_RATE / 2:
            lags.append(lag)
            diffs.append(np.abs(logmel[:-lag][pair] - logmel[lag:][pair]).mean())
    if not diffs:
        return None, None
    diffs_arr = np.asarray(diffs)
    best = int(np.argmin(diffs_arr))
    typical = max(float(np.median(diffs_arr)), LOOP_FLOOR_DB)
    return float(np.clip(1.0 - diffs_arr[best] / typical, 0.0, 1.0)), lags[best] / FRAME_RATE


def nearest_window_distances(windows: np.ndarray, train: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
    """For each row of ``windows`` ``(n, D)``, the Euclidean distance to its nearest row of ``train``.

    Both in the same standardised feature space. A clip's copy distance is the median over its
    windows: a clip cut from a training file sits next to that file's windows all along.

    Examples
    --------
    >>> nearest_window_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 1.0]]))
    array([1.        , 4.24264069])
    """
    windows = np.asarray(windows, dtype=np.float64)
    train = np.asarray(train, dtype=np.float64)
    t2 = np.einsum("ij,ij->i", train, train)
    out = np.empty(len(windows))
    for a in range(0, len(windows), chunk):
        w = windows[a : a + chunk]
        d2 = np.einsum("ij,ij->i", w, w)[:, None] - 2.0 * w @ train.T + t2[None, :]
        out[a : a + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out
