"""A fixed, versioned feature space of plain DSP for comparing sets of audio clips.

No learned embedding and nothing downloaded: every number is a librosa feature of 1 s windows
(0.5 s hop) of mono audio at ``ANALYSIS_SR`` (22.05 kHz, resampled with soxr by the caller's
:func:`cadenza.audio.read_audio`). Frames are 1024-sample Hann windows at a 441-sample
(20 ms) hop, uncentred, so a 1 s window holds 48 frames and every window's frames are frames
of the whole clip: the STFT, the mel projection and every frame feature are computed once per
clip and the windows are strided views of them. The values equal a window-by-window librosa
loop over the same samples (``benchmarks/evaluate.py`` checks 1e-4 relative) at a fraction
of the cost.

One window's vector (``N_WINDOW_FEATURES`` = 134 values, named by :data:`WINDOW_FEATURE_NAMES`):

==========================  ===  =====================================================
log-mel bands (32, dB)       64  mean and standard deviation over the window's frames
MFCC                         20  mean (DCT-II of the log-mel, 20 coefficients)
MFCC deltas                  20  mean absolute delta (librosa's Savitzky-Golay, width 9)
chroma                       12  mean (STFT chroma, tuning fixed at A440)
spectral centroid (Hz)        2  mean, standard deviation
spectral flatness (dB)        2  mean, standard deviation
spectral contrast             6  mean of 5 octave bands from 200 Hz and the valley band
RMS (dBFS)                    2  mean, standard deviation
onset strength                2  mean, standard deviation (log-mel flux)
tempogram                     4  onset autocorrelation averaged over lags 0.1-0.25,
                                 0.25-0.5, 0.5-0.94 s, and its maximum beyond 0.25 s
==========================  ===  =====================================================

A clip's embedding (:func:`clip_embedding`, ``N_CLIP_FEATURES`` = 166) is the mean of its
window vectors and the standard deviation across windows of the MFCC and chroma means (how
much the clip moves: a held tone or a loop barely does). Every clip is measured through the same faint
hiss, white noise at ``NOISE_FLOOR_DBFS`` (-80 dBFS RMS) added as power to each STFT bin and
to each frame's RMS: what lies below it (digital silence, an inversion's faint residue, a
recording's own noise floor, all inaudible at a normal listening level) cannot set clips apart,
silence is finite, and a window's values do not depend on its loudest frame (no ``top_db``).

:data:`FEATURE_VERSION` changes whenever any of this changes; it is written into every
evaluation output so that numbers of two releases are never compared silently.

Examples
--------
>>> import numpy as np
>>> y = 0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * ANALYSIS_SR) / ANALYSIS_SR)
>>> clip = clip_features(y)
>>> clip.windows.shape, clip_embedding(clip.windows).shape
((5, 134), (166,))
"""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np

from cadenza.errors import ParameterError

__all__ = [
    "ANALYSIS_SR",
    "FEATURE_VERSION",
    "FRAME_RATE",
    "HOP_LENGTH",
    "CLIP_FEATURE_NAMES",
    "FEATURE_GROUPS",
    "N_CLIP_FEATURES",
    "N_FFT",
    "N_WINDOW_FEATURES",
    "WINDOW_FEATURE_NAMES",
    "WINDOW_FRAMES",
    "WINDOW_HOP_FRAMES",
    "CLIP_SCALE_FLOOR",
    "WINDOW_SCALE_FLOOR",
    "ClipFeatures",
    "clip_embedding",
    "feature_gaps",
    "clip_features",
    "frames_to_windows",
]

FEATURE_VERSION = "cadenza-dsp-2"
ANALYSIS_SR = 22050
N_FFT = 1024
HOP_LENGTH = 441  # 20 ms
FRAME_RATE = ANALYSIS_SR / HOP_LENGTH  # 50 frames per second
WINDOW_SECONDS = 1.0
WINDOW_SAMPLES = int(WINDOW_SECONDS * ANALYSIS_SR)
WINDOW_FRAMES = 1 + (WINDOW_SAMPLES - N_FFT) // HOP_LENGTH  # 48
WINDOW_HOP_FRAMES = 25  # 0.5 s
N_MELS = 32
N_MFCC = 20
N_CHROMA = 12
CONTRAST_BANDS = 5  # 200 Hz * 2**5 = 6.4 kHz
CONTRAST_FMIN = 200.0
AMIN = 1e-10
#: Every clip is heard through the same faint hiss: white noise of this RMS (dBFS) is added, as
#: power, to every STFT bin and to every frame's RMS before anything is measured. Sound below it
#: (digital silence, an inversion's faint residue, a recording's own noise floor) cannot tell
#: clips apart: without it, white noise at -90 dBFS added to real music (inaudible) moved the
#: KAD of held-out chorales from 0.004 to 0.28 and at -80 dBFS to 0.72, past the 0.5 s loop row.
NOISE_FLOOR_DBFS = -80.0
DELTA_WIDTH = 9
#: Lag bands (in frames of 20 ms) of the tempogram summary.
TEMPO_BANDS = ((5, 13), (13, 25), (25, WINDOW_FRAMES))


def _names() -> list[str]:
    names = [f"logmel_mean_{i}" for i in range(N_MELS)] + [f"logmel_std_{i}" for i in range(N_MELS)]
    names += [f"mfcc_{i}" for i in range(N_MFCC)] + [f"mfcc_delta_{i}" for i in range(N_MFCC)]
    names += [f"chroma_{i}" for i in range(N_CHROMA)]
    names += ["centroid_mean", "centroid_std", "flatness_mean", "flatness_std"]
    names += [f"contrast_{i}" for i in range(CONTRAST_BANDS + 1)]
    names += ["rms_db_mean", "rms_db_std", "onset_mean", "onset_std"]
    names += [f"tempo_{a}_{b}" for a, b in TEMPO_BANDS] + ["tempo_max"]
    return names


WINDOW_FEATURE_NAMES = tuple(_names())
N_WINDOW_FEATURES = len(WINDOW_FEATURE_NAMES)
#: Window features whose spread across a clip's windows joins the clip embedding.
_MOVING = np.r_[
    2 * N_MELS : 2 * N_MELS + N_MFCC, 2 * N_MELS + 2 * N_MFCC : 2 * N_MELS + 2 * N_MFCC + N_CHROMA
]
N_CLIP_FEATURES = N_WINDOW_FEATURES + len(_MOVING)
#: The clip embedding's names: the window features' means, then ``moving_<name>``, the spread
#: across windows of each MFCC and chroma mean.
CLIP_FEATURE_NAMES = WINDOW_FEATURE_NAMES + tuple(f"moving_{WINDOW_FEATURE_NAMES[i]}" for i in _MOVING)
#: Groups of clip features by what they describe, as :func:`feature_gaps` reports them.
FEATURE_GROUPS = {
    "level (log-mel means)": ("logmel_mean",),
    "level movement (log-mel deviations)": ("logmel_std",),
    "timbre (MFCC)": ("mfcc_",),
    "timbre movement (MFCC deltas)": ("mfcc_delta",),
    "harmony (chroma)": ("chroma",),
    "brightness (centroid)": ("centroid",),
    "noisiness (flatness)": ("flatness",),
    "peaks and valleys (contrast)": ("contrast",),
    "loudness (RMS)": ("rms_db",),
    "onsets (log-mel flux)": ("onset",),
    "rhythm (tempogram)": ("tempo",),
    "change across the clip (MFCC, chroma spread)": ("moving_",),
}


def _group_of(name: str) -> str:
    matches = [
        (len(prefix), group)
        for group, prefixes in FEATURE_GROUPS.items()
        for prefix in prefixes
        if name.startswith(prefix)
    ]
    return max(matches)[1]  # the longest prefix: mfcc_delta_3 is a delta, not an MFCC


_GROUP_INDEX = {g: [i for i, n in enumerate(CLIP_FEATURE_NAMES) if _group_of(n) == g] for g in FEATURE_GROUPS}


def feature_gaps(z: np.ndarray, *, top: int = 5) -> dict[str, list[tuple[str, float]]]:
    """Where a set of clips stands apart from the reference, in reference deviations.

    ``z`` is ``(n, N_CLIP_FEATURES)``: the set's clip embeddings standardised by the reference
    (its mean and floored deviation). Returns ``features``: the ``top`` features whose set mean
    is farthest from the reference's, signed (``+4.1``: four deviations above the reference's
    mean); ``groups``: every group of :data:`FEATURE_GROUPS` with the root mean square of its
    features' set means, largest first. The reference against itself gives values near 0.

    >>> z = np.zeros((3, N_CLIP_FEATURES))
    >>> z[:, CLIP_FEATURE_NAMES.index("onset_mean")] = 4.0
    >>> feature_gaps(z, top=1)["features"]
    [('onset_mean', 4.0)]
    >>> feature_gaps(z)["groups"][0]
    ('onsets (log-mel flux)', 2.8284271247461903)
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != N_CLIP_FEATURES or not len(z):
        raise ParameterError(
            f"feature_gaps needs (n >= 1, {N_CLIP_FEATURES}) standardised embeddings, got {z.shape}"
        )
    mean = z.mean(axis=0)
    order = np.argsort(-np.abs(mean), kind="stable")[:top]
    groups = [(g, float(np.sqrt(np.mean(mean[idx] ** 2)))) for g, idx in _GROUP_INDEX.items()]
    return {
        "features": [(CLIP_FEATURE_NAMES[i], float(mean[i])) for i in order],
        "groups": sorted(groups, key=lambda item: -item[1]),
    }


def _floor(name: str) -> float:
    """The smallest spread a feature is standardised by: about the smallest change one can hear."""
    for prefix, floor in (
        ("logmel", 1.0), ("rms_db", 1.0), ("contrast", 1.0), ("flatness", 1.0), ("mfcc_delta", 0.1),
        ("mfcc", 1.0), ("chroma", 0.01), ("centroid", 20.0), ("onset", 0.1), ("tempo", 0.01),
    ):  # fmt: skip
        if name.startswith(prefix):
            return floor
    raise AssertionError(name)


#: Floors of the per-feature deviations that standardise window vectors and clip embeddings: a
#: feature that barely moves in the reference (the empty band above 4 kHz of 8 kHz audio, say)
#: must not turn a 1 dB change into thousands of deviations.
WINDOW_SCALE_FLOOR = np.array([_floor(n) for n in WINDOW_FEATURE_NAMES])
CLIP_SCALE_FLOOR = np.concatenate([WINDOW_SCALE_FLOOR, 0.5 * WINDOW_SCALE_FLOOR[_MOVING]])

_MEL_BASIS = librosa.filters.mel(sr=ANALYSIS_SR, n_fft=N_FFT, n_mels=N_MELS)
_HANN = librosa.filters.get_window("hann", N_FFT, fftbins=True)


@dataclasses.dataclass
class ClipFeatures:
    """The features of one clip: per-window vectors and the frame series the detectors use.

    ``windows`` is ``(n_windows, N_WINDOW_FEATURES)``; ``logmel`` ``(n_frames, N_MELS)`` in dB,
    ``chroma`` ``(n_frames, 12)``, ``flatness`` and ``rms_db`` ``(n_frames,)``, all at
    ``FRAME_RATE``; ``padded`` says the clip was shorter than one window.
    """

    windows: np.ndarray
    logmel: np.ndarray
    chroma: np.ndarray
    flatness: np.ndarray
    rms_db: np.ndarray
    padded: bool = False


def frames_to_windows(x: np.ndarray, *, hop_frames: int = WINDOW_HOP_FRAMES) -> np.ndarray:
    """A strided view ``(..., n_windows, WINDOW_FRAMES)`` of frame series ``(..., n_frames)``."""
    view = librosa.util.frame(x, frame_length=WINDOW_FRAMES, hop_length=hop_frames, axis=-1)
    return np.swapaxes(view, -1, -2)  # librosa puts the window index last


def _floor_power() -> float:
    """The expected ``|STFT|^2`` of one bin of white noise at :data:`NOISE_FLOOR_DBFS`."""
    return float(10.0 ** (NOISE_FLOOR_DBFS / 10.0) * np.sum(_HANN.astype(np.float64) ** 2))


def _stft_power(y: np.ndarray) -> np.ndarray:
    """``|STFT|^2`` ``(1 + N_FFT/2, n_frames)``, uncentred Hann frames, as librosa computes it,
    plus the noise floor's power."""
    frames = librosa.util.frame(y, frame_length=N_FFT, hop_length=HOP_LENGTH)  # (N_FFT, n_frames)
    spec = np.fft.rfft(frames * _HANN[:, None], axis=0)
    return (spec.real**2 + spec.imag**2 + _floor_power()).astype(np.float32)


def _rms_db(frames: np.ndarray) -> np.ndarray:
    """Frame RMS in dBFS over the noise floor: ``frames`` ``(N_FFT, n_frames)``."""
    power = np.mean(np.abs(frames.astype(np.float64)) ** 2, axis=0) + 10.0 ** (NOISE_FLOOR_DBFS / 10.0)
    return 10.0 * np.log10(power)


def clip_features(y: np.ndarray, *, hop_frames: int = WINDOW_HOP_FRAMES) -> ClipFeatures:
    """Window features of mono audio ``y`` at ``ANALYSIS_SR``.

    Parameters
    ----------
    y : np.ndarray
        Mono samples at 22.05 kHz (any length; under 1 s is padded with silence to one window).
    hop_frames : int
        Window hop in 20 ms frames: 25 (0.5 s, the feature space's) or finer for copy search.

    Returns
    -------
    ClipFeatures

    Examples
    --------
    >>> import numpy as np
    >>> noise = np.random.default_rng(0).standard_normal(2 * ANALYSIS_SR).astype(np.float32) * 0.1
    >>> f = clip_features(noise)
    >>> f.windows.shape, round(float(f.flatness.mean()), 1)
    ((3, 134), 0.6)
    """
    y = np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1))
    padded = len(y) < WINDOW_SAMPLES
    if padded:
        y = np.pad(y, (0, WINDOW_SAMPLES - len(y)))
    power = _stft_power(y)  # (F, T)
    mag = np.sqrt(power)
    mel = _MEL_BASIS @ power  # (N_MELS, T)
    logmel = 10.0 * np.log10(np.maximum(mel, AMIN))
    mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=N_MFCC)  # (20, T)
    chroma = librosa.feature.chroma_stft(S=power, sr=ANALYSIS_SR, n_fft=N_FFT, tuning=0.0)
    centroid = librosa.feature.spectral_centroid(S=mag, sr=ANALYSIS_SR, n_fft=N_FFT)[0]
    flatness = librosa.feature.spectral_flatness(S=mag, amin=AMIN)[0]
    contrast = librosa.feature.spectral_contrast(
        S=mag, sr=ANALYSIS_SR, n_fft=N_FFT, n_bands=CONTRAST_BANDS, fmin=CONTRAST_FMIN
    )
    flatness_db = 10.0 * np.log10(np.maximum(flatness, AMIN))
    rms_db = _rms_db(librosa.util.frame(y, frame_length=N_FFT, hop_length=HOP_LENGTH))

    win = lambda x: frames_to_windows(x, hop_frames=hop_frames)  # noqa: E731 - (..., W, 48)
    w_logmel = win(logmel)  # (M, W, 48)
    w_mfcc = win(mfcc)  # (20, W, 48)
    delta = librosa.feature.delta(w_mfcc, width=DELTA_WIDTH, axis=-1)  # per window, as a loop would
    # onset strength per window: log-mel flux of each window alone (its first frame has no predecessor)
    w_logmel_t = np.moveaxis(w_logmel, 1, 0)  # (W, M, 48)
    onset = librosa.onset.onset_strength(S=w_logmel_t, sr=ANALYSIS_SR, center=False)  # (W, 48)
    ac = librosa.autocorrelate(onset, axis=-1)  # (W, 48)
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    tempo = [ac[:, a:b].mean(axis=1) for a, b in TEMPO_BANDS] + [ac[:, TEMPO_BANDS[1][0] :].max(axis=1)]

    def stats(x: np.ndarray, *, std: bool = True) -> list[np.ndarray]:  # (..., W, 48) -> (W, ...)
        out = [np.moveaxis(x.mean(axis=-1), -1, 0).reshape(x.shape[-2], -1)]
        if std:
            out.append(np.moveaxis(x.std(axis=-1), -1, 0).reshape(x.shape[-2], -1))
        return out

    parts = [
        *stats(w_logmel),
        *stats(w_mfcc, std=False),
        np.moveaxis(np.abs(delta).mean(axis=-1), -1, 0),
        *stats(win(chroma), std=False),
        *stats(win(centroid)),
        *stats(win(flatness_db)),
        *stats(win(contrast), std=False),
        *stats(win(rms_db)),
        onset.mean(axis=1, keepdims=True),
        onset.std(axis=1, keepdims=True),
        np.stack(tempo, axis=1),
    ]
    windows = np.concatenate([np.asarray(p, dtype=np.float64).reshape(len(onset), -1) for p in parts], axis=1)
    return ClipFeatures(
        windows=windows,
        logmel=logmel.T,
        chroma=chroma.T,
        flatness=flatness,
        rms_db=rms_db,
        padded=padded,
    )


def clip_embedding(windows: np.ndarray) -> np.ndarray:
    """A clip's vector ``(N_CLIP_FEATURES,)`` from its windows ``(n_windows, N_WINDOW_FEATURES)``.

    The mean of the windows, then the standard deviation across windows of the MFCC and
    chroma means (zero for a single window).
    """
    windows = np.asarray(windows, dtype=np.float64)
    return np.concatenate([windows.mean(axis=0), windows[:, _MOVING].std(axis=0)])


def reference_window_features(y: np.ndarray, *, hop_frames: int = WINDOW_HOP_FRAMES) -> np.ndarray:
    """The same window vectors as :func:`clip_features`, by a plain librosa loop over windows.

    Each 1 s window is cut from ``y`` and handed to librosa's feature functions on its own
    (every call computes its own STFT). Slow; kept as the definition that the fast path is
    tested and benchmarked against.
    """
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if len(y) < WINDOW_SAMPLES:
        y = np.pad(y, (0, WINDOW_SAMPLES - len(y)))
    common = {"sr": ANALYSIS_SR, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "center": False}
    floor = 10.0 ** (NOISE_FLOOR_DBFS / 10.0)  # white noise's power per sample, so per bin:
    floor_bin = floor * float(np.sum(librosa.filters.get_window("hann", N_FFT, fftbins=True) ** 2))
    rows = []
    for start in range(0, len(y) - WINDOW_SAMPLES + 1, hop_frames * HOP_LENGTH):
        seg = y[start : start + WINDOW_SAMPLES]
        power = np.abs(librosa.stft(seg, n_fft=N_FFT, hop_length=HOP_LENGTH, center=False)) ** 2 + floor_bin
        mel = librosa.feature.melspectrogram(S=power, n_mels=N_MELS, **common)
        logmel = librosa.power_to_db(mel, ref=1.0, amin=AMIN, top_db=None)
        mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=N_MFCC)
        delta = librosa.feature.delta(mfcc, width=DELTA_WIDTH)
        chroma = librosa.feature.chroma_stft(S=power, tuning=0.0, **common)
        centroid = librosa.feature.spectral_centroid(S=np.sqrt(power), **common)[0]
        flatness = librosa.feature.spectral_flatness(S=np.sqrt(power), amin=AMIN)[0]
        contrast = librosa.feature.spectral_contrast(
            S=np.sqrt(power), n_bands=CONTRAST_BANDS, fmin=CONTRAST_FMIN, **common
        )
        flatness = 10.0 * np.log10(np.maximum(flatness, AMIN))
        rms = librosa.feature.rms(y=seg, frame_length=N_FFT, hop_length=HOP_LENGTH, center=False)[0]
        rms_db = 10.0 * np.log10(rms.astype(np.float64) ** 2 + floor)
        onset = librosa.onset.onset_strength(S=logmel, sr=ANALYSIS_SR, center=False)
        ac = librosa.autocorrelate(onset)
        ac = ac / max(ac[0], 1e-12)
        tempo = [ac[a:b].mean() for a, b in TEMPO_BANDS] + [ac[TEMPO_BANDS[1][0] :].max()]
        rows.append(
            np.concatenate(
                [
                    logmel.mean(axis=1),
                    logmel.std(axis=1),
                    mfcc.mean(axis=1),
                    np.abs(delta).mean(axis=1),
                    chroma.mean(axis=1),
                    [centroid.mean(), centroid.std(), flatness.mean(), flatness.std()],
                    contrast.mean(axis=1),
                    [rms_db.mean(), rms_db.std(), onset.mean(), onset.std()],
                    tempo,
                ]
            )
        )
    return np.asarray(rows, dtype=np.float64)
