"""Log-mel frames against librosa, and their Griffin-Lim inverse."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from cadenza.errors import ParameterError
from cadenza.representations import Mel, spectral_distance

from .test_spectral import music_signal, noise_signal, one_torch_thread  # noqa: F401 (autouse fixture)


def _librosa_log_mel(y, rep: Mel) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=rep.sample_rate,
        n_fft=rep.n_fft,
        hop_length=rep.hop_length,
        win_length=rep.win_length,
        n_mels=rep.n_mels,
        fmin=rep.fmin,
        fmax=rep.fmax,
        htk=rep.htk,
        norm=rep.norm,
        center=True,
        pad_mode=rep.pad_mode,
        power=rep.power,
    )
    return librosa.power_to_db(mel, ref=1.0, amin=rep.amin, top_db=rep.top_db).T


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sample_rate": 16000, "n_fft": 1024, "hop_length": 256, "n_mels": 64, "fmin": 30.0, "fmax": 7000.0},
        {"win_length": 1500, "htk": True, "norm": None, "pad_mode": "reflect", "top_db": 80.0, "power": 1.0},
    ],
)
def test_encode_matches_librosa(params):
    rep = Mel(**params)
    y = music_signal(2.0, sr=rep.sample_rate)
    ours, ref = rep.encode(y), _librosa_log_mel(y, rep)
    assert ours.shape == ref.shape == (1 + len(y) // rep.hop_length, rep.n_mels)
    assert ours.dtype == np.float32
    # The FFT runs in float32 (librosa's in float64): the rounding, relative to each frame's
    # energy, shows in bands far below the frame's peak. Measured on these signals: below 1.2e-3
    # dB (real music: below 0.01 dB, see test_inversion.py); 5e-3 dB leaves a margin.
    np.testing.assert_allclose(ours, ref, atol=5e-3, rtol=0)


def test_encode_matches_librosa_on_noise_and_silence():
    rep = Mel()
    for y in (noise_signal(1.0), np.zeros(5000, dtype=np.float32)):
        np.testing.assert_allclose(rep.encode(y), _librosa_log_mel(y, rep), atol=5e-3, rtol=0)
    assert rep.encode(np.zeros(5000, dtype=np.float32)).min() == pytest.approx(-100.0)  # 10 log10(amin)


@pytest.mark.parametrize("n", [0, 1, 511, 512, 513, 22050])
def test_frame_count_is_librosas(n):
    rep = Mel()
    assert rep.encode(np.zeros(n, dtype=np.float32)).shape == (1 + n // 512, 128)


def test_frame_rate_and_features():
    rep = Mel()
    assert rep.frame_rate == pytest.approx(22050 / 512) and rep.n_features == 128


def test_decode_is_close_and_sized():
    rep = Mel()
    y = music_signal(1.5, seed=4)
    frames = rep.encode(y)
    y_hat = rep.decode(frames)
    assert y_hat.dtype == np.float32 and y_hat.shape == ((len(frames) - 1) * 512,)
    assert spectral_distance(y, y_hat, sr=22050) < Mel.round_trip_tolerance
    # The tolerance still tells music apart: other chords are far outside it.
    assert spectral_distance(y, music_signal(1.5, seed=5), sr=22050) > Mel.round_trip_tolerance


@pytest.mark.parametrize(
    "params",
    [
        {"hop_length": 4096},
        {"hop_length": 0},
        {"n_fft": -2048},
        {"win_length": 4096},
        {"n_mels": 0},
        {"fmax": 20000.0},
        {"fmin": 9000.0, "fmax": 8000.0},
        {"fmin": -1.0},
        {"amin": 0.0},
        {"top_db": -1.0},
        {"power": 0.0},
        {"pad_mode": "mirror"},
        {"norm": "l2"},
        {"center": False},
        {"n_iter": -1},
        {"sample_rate": 0},
        {"n_mels": 128.0},
        {"n_mels": True},
        {"fmin": "low"},
    ],
)
def test_bad_parameters(params):
    with pytest.raises(ParameterError):
        Mel(**params)


def test_bad_frames():
    with pytest.raises(ParameterError):
        Mel().decode(np.zeros((10, 64), dtype=np.float32))
    with pytest.raises(ParameterError):
        Mel().encode(np.zeros((100, 2), dtype=np.float32))
