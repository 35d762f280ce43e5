"""MFCC against librosa, and the inverse DCT back to log-mel and audio."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.fft

from cadenza.errors import ParameterError
from cadenza.representations import MFCC, Mel, spectral_distance

from .test_spectral import music_signal, noise_signal, one_torch_thread  # noqa: F401 (autouse fixture)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"n_mfcc": 13, "n_mels": 40, "fmax": 8000.0, "lifter": 22.0},
        {"dct_type": 3, "norm": None, "top_db": None, "n_fft": 1024, "hop_length": 256},
    ],
)
def test_encode_matches_librosa(params):
    rep = MFCC(**params)
    y = music_signal(2.0, seed=2)
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=rep.sample_rate,
        n_fft=rep.n_fft,
        hop_length=rep.hop_length,
        n_mels=rep.n_mels,
        fmin=rep.fmin,
        fmax=rep.fmax,
    )
    kwargs = {"n_mfcc": rep.n_mfcc, "dct_type": rep.dct_type, "norm": rep.norm, "lifter": rep.lifter}
    if rep.top_db == 80.0:  # librosa's default: the whole pipeline from the samples
        ref = librosa.feature.mfcc(
            y=y,
            sr=rep.sample_rate,
            n_fft=rep.n_fft,
            hop_length=rep.hop_length,
            n_mels=rep.n_mels,
            fmin=rep.fmin,
            fmax=rep.fmax,
            **kwargs,
        ).T
    else:
        ref = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=rep.top_db), **kwargs).T
    ours = rep.encode(y)
    assert ours.shape == ref.shape == (1 + len(y) // rep.hop_length, rep.n_mfcc) and ours.dtype == np.float32
    # The float32 FFT's rounding in the log-mel (below 1.2e-3 dB on these signals) passes through
    # the DCT, times its gain (1 orthonormal, up to sqrt(2 n_mels) unnormalised) and the lifter's.
    gain = (1.0 if rep.norm == "ortho" else np.sqrt(2.0 * rep.n_mels)) * (1.0 + rep.lifter / 2.0)
    np.testing.assert_allclose(ours, ref, atol=2e-3 * gain, rtol=0)


def test_paper_shape():
    # Paper 003: a 30 s GTZAN clip (661794 samples at 22050 Hz) gives 20 x 1293 MFCCs.
    rep = MFCC()
    assert rep.encode(np.zeros(661794, dtype=np.float32)).shape == (1293, 20)
    assert rep.n_features == 20 and rep.frame_rate == pytest.approx(22050 / 512)


@pytest.mark.parametrize("params", [{}, {"lifter": 22.0}, {"dct_type": 3, "norm": None}, {"dct_type": 1}])
def test_all_coefficients_invert_to_the_log_mel_exactly(params):
    rep = MFCC(n_mfcc=128, **params)
    y = music_signal(1.0, seed=3)
    np.testing.assert_allclose(rep.to_log_mel(rep.encode(y)), rep.mel.encode(y), atol=2e-3)


def test_truncated_coefficients_give_a_smoothed_log_mel():
    rep = MFCC()
    y = music_signal(1.0)
    coeffs = rep.encode(y)
    smooth = rep.to_log_mel(coeffs)
    assert smooth.shape == (len(coeffs), 128) and smooth.dtype == np.float32
    # Zero-padding the dropped coefficients is an orthogonal projection: the smoothed log-mel
    # has exactly the kept coefficients and nothing else.
    spectrum = scipy.fft.dct(smooth.astype(np.float64), type=2, norm="ortho", axis=1)
    np.testing.assert_allclose(spectrum[:, :20], coeffs, atol=1e-3)
    np.testing.assert_allclose(spectrum[:, 20:], 0.0, atol=1e-3)
    np.testing.assert_allclose(MFCC(n_mfcc=128).encode(y)[:, :20], coeffs, atol=1e-3)


def test_decode_within_tolerance_and_noise_outside():
    rep = MFCC()
    y = music_signal(1.5, seed=6)
    y_hat = rep.decode(rep.encode(y))
    assert y_hat.dtype == np.float32 and y_hat.shape == ((1 + len(y) // 512 - 1) * 512,)
    assert spectral_distance(y, y_hat, sr=22050) < MFCC.round_trip_tolerance
    assert spectral_distance(y, noise_signal(1.5), sr=22050) > MFCC.round_trip_tolerance
    assert spectral_distance(y, np.zeros_like(y), sr=22050) > MFCC.round_trip_tolerance
    assert MFCC.round_trip_tolerance > Mel.round_trip_tolerance


@pytest.mark.parametrize(
    "params",
    [
        {"n_mfcc": 129},
        {"n_mfcc": 0},
        {"n_mfcc": 40, "n_mels": 20},
        {"dct_type": 4},
        {"norm": "backward"},
        {"lifter": -1.0},
        {"lifter": 2.0},  # 1 + sin(3 pi / 2) = 0 would zero coefficient 3
        {"hop_length": 4096},
        {"top_db": -80.0},
    ],
)
def test_bad_parameters(params):
    with pytest.raises(ParameterError):
        MFCC(**params)


def test_bad_frames():
    with pytest.raises(ParameterError):
        MFCC().decode(np.zeros((10, 13), dtype=np.float32))
