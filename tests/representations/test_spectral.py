"""Shared spectral helpers, and the music-like test signals every audio test uses."""

from __future__ import annotations

import subprocess
import sys

import librosa
import numpy as np
import pytest
import torch

from cadenza.errors import ParameterError
from cadenza.representations import _inversion, _spectral, spectral_distance


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run each audio test module on one intra-op thread.

    The spectral code works on small tensors (1025 x a few hundred frames), where a second
    thread gains little; but when the cores are already busy (``pytest -n 2`` on two cores),
    OpenMP's spinning threads make Griffin-Lim 10-30 times slower. Imported by the other
    audio test modules.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def music_signal(seconds: float = 3.0, *, sr: int = 22050, seed: int = 0) -> np.ndarray:
    """Chords of harmonic tones with attack/decay envelopes: two chords a second, float32 in [-0.9, 0.9].

    Each chord is a random major or minor triad (roots A2-A4) of six-partial tones, with a
    10 ms attack, an exponential decay and a quiet noise floor, so it has the onsets, partials
    and dynamics of played music without needing a recording.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    n_chords = max(1, int(round(seconds * 2)))
    seg = -(-n // n_chords)
    t = np.arange(seg) / sr
    env = np.minimum(t / 0.01, 1.0) * np.exp(-3.0 * t)  # (seg,)
    y = np.zeros(n_chords * seg)
    for k in range(n_chords):
        root = rng.integers(45, 70)
        third = 4 if rng.random() < 0.5 else 3
        for interval in (0, third, 7):
            f0 = 440.0 * 2.0 ** ((root + interval - 69) / 12)
            partials = np.arange(1, 7)[:, None]  # (6, 1)
            partials = partials[(f0 * partials[:, 0]) < sr / 2]
            phases = rng.uniform(0, 2 * np.pi, size=(len(partials), 1))
            tone = (0.6 ** (partials - 1) * np.sin(2 * np.pi * f0 * partials * t + phases)).sum(axis=0)
            y[k * seg : (k + 1) * seg] += env * tone * rng.uniform(0.5, 1.0)
    y = y[:n] + 1e-3 * rng.standard_normal(n)
    return (0.9 * y / np.abs(y).max()).astype(np.float32)


def noise_signal(seconds: float = 3.0, *, sr: int = 22050, seed: int = 0) -> np.ndarray:
    """White noise at -10 dBFS: spectrally nothing like music."""
    return (0.3 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def test_music_signal_is_music_like():
    y = music_signal(2.0, seed=3)
    assert y.dtype == np.float32 and y.shape == (44100,)
    assert 0.85 < np.abs(y).max() <= 0.9
    np.testing.assert_array_equal(y, music_signal(2.0, seed=3))  # reproducible


def test_spectral_distance_known_values():
    y = music_signal(2.0)
    assert spectral_distance(y, y, sr=22050) == 0.0
    assert spectral_distance(y, 0.5 * y, sr=22050) == pytest.approx(20 * np.log10(2), abs=1e-3)
    other = music_signal(2.0, seed=1)
    assert spectral_distance(y, other, sr=22050) == pytest.approx(spectral_distance(other, y, sr=22050))
    assert spectral_distance(y, other, sr=22050) > 8.0
    assert spectral_distance(y, noise_signal(2.0), sr=22050) > 30.0
    # A different length is cut to the shorter signal.
    assert spectral_distance(y, np.concatenate([y, y]), sr=22050) == 0.0
    with pytest.raises(ParameterError):
        spectral_distance(y, y[:0], sr=22050)


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large:UserWarning")
@pytest.mark.parametrize("n", [0, 1, 511, 512, 1000, 2048, 22050])
def test_power_spectrogram_matches_librosa(n):
    y = music_signal(1.0)[:n]
    ours = _spectral.power_spectrogram(y, n_fft=2048, hop_length=512)
    ref = np.abs(librosa.stft(y, n_fft=2048, hop_length=512, center=True, pad_mode="constant")) ** 2
    assert ours.shape == ref.shape == (1025, 1 + n // 512)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6 * max(ref.max(), 1e-12))


def test_power_spectrogram_chunks_agree(monkeypatch):
    y = music_signal(3.0)
    whole = _spectral.power_spectrogram(y, n_fft=1024, hop_length=256, pad_mode="reflect", power=1.0)
    monkeypatch.setattr(_spectral, "_CHUNK_FRAMES", 7)
    np.testing.assert_array_equal(
        _spectral.power_spectrogram(y, n_fft=1024, hop_length=256, pad_mode="reflect", power=1.0), whole
    )
    ref = np.abs(librosa.stft(y, n_fft=1024, hop_length=256, pad_mode="reflect"))
    np.testing.assert_allclose(whole, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pad_mode", _spectral.PAD_MODES)
@pytest.mark.parametrize("n", [5, 300, 1025, 5000])
def test_mel_pads_each_chunk_as_padding_the_whole_signal_would(monkeypatch, pad_mode, n):
    """The mel spectrogram padded the whole clip first (a copy: 318 MB for an hour at 22.05 kHz);
    each chunk of frames is now padded alone, to the same frames."""
    y = np.stack([music_signal(1.0, seed=1)[:n], music_signal(1.0, seed=2)[:n]])
    half = 512
    whole = np.pad(y, ((0, 0), (half, half)), mode=pad_mode)
    left, right = _spectral._pad_edges(y, half, pad_mode)
    np.testing.assert_array_equal(left, whole[:, :half])
    np.testing.assert_array_equal(right, whole[:, half + n :])
    monkeypatch.setattr(_spectral, "_MEL_CHUNK_FRAMES", 3)  # chunks that start and end in either pad
    mel = _spectral.mel_spectrogram(y, sr=22050, n_fft=1024, hop_length=256, n_mels=32, pad_mode=pad_mode)
    frames = torch.from_numpy(whole.astype(np.float32)).unfold(-1, 1024, 256)
    win = _spectral._window_tensor(1024, None, torch.float32)
    weights = _spectral._mel_weights(22050, 1024, 32, 0.0, None, False, "slaney")
    mag = torch.fft.rfft(frames * win).abs().square().numpy()
    assert mel.shape == (2, 1 + n // 256, 32)
    np.testing.assert_allclose(mel, mag @ weights.dense.T, rtol=1e-5, atol=1e-6 * mel.max())


@pytest.mark.parametrize(
    ("sr", "n_fft", "win_length", "n_mels", "fmin", "fmax", "htk", "norm"),
    [
        (16000, 1024, 1500, 40, 0.0, 7000.0, False, "slaney"),
        (22050, 2048, None, 128, 0.0, None, False, "slaney"),
        (44100, 2048, 1025, 128, 30.0, None, True, "slaney"),
        (8000, 256, 255, 20, 1500.0, 3000.0, False, None),
        (22050, 512, 400, 64, 0.0, 11025.0, True, None),
    ],
)
def test_window_and_mel_basis_are_librosas_bit_for_bit_and_cached(
    sr, n_fft, win_length, n_mels, fmin, fmax, htk, norm
):
    """Computed here without librosa (whose filters import scipy.signal: 1.4 s of a worker's start)."""
    _spectral.window.cache_clear()
    _spectral.mel_basis.cache_clear()
    hann = librosa.filters.get_window("hann", min(win_length or n_fft, n_fft), fftbins=True)
    np.testing.assert_array_equal(
        _spectral.window(n_fft, min(win_length or n_fft, n_fft)), librosa.util.pad_center(hann, size=n_fft)
    )
    kw = {"sr": sr, "n_fft": n_fft, "n_mels": n_mels, "fmin": fmin, "fmax": fmax, "htk": htk, "norm": norm}
    basis = _spectral.mel_basis(**kw)
    np.testing.assert_array_equal(basis, librosa.filters.mel(**kw))
    assert basis.dtype == np.float32
    assert basis is _spectral.mel_basis(**kw)
    assert not basis.flags.writeable


def test_encoding_a_mel_spectrogram_imports_neither_librosa_nor_scipy_signal():
    """What a prepare worker loads before its first file: their imports took 2.2 s of it."""
    code = (
        "import sys, numpy as np\n"
        "from cadenza.representations import make_representation\n"
        "make_representation('mfcc').encode(np.zeros(22050, np.float32))\n"
        "print(sorted(m for m in ('librosa.filters', 'librosa.util', 'scipy.signal') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("init", ["pghi", "random"])
def test_griffin_lim_is_reproducible_and_sized(init):
    mag = np.sqrt(_spectral.power_spectrogram(music_signal(1.0), n_fft=512, hop_length=128))
    kw = {"n_fft": 512, "hop_length": 128, "init": init}
    a = _inversion.griffin_lim(mag, n_iter=4, **kw)
    b = _inversion.griffin_lim(mag, n_iter=4, **kw)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == ((mag.shape[1] - 1) * 128,)
    assert _inversion.griffin_lim(mag, n_iter=1, length=1000, **kw).shape == (1000,)
    if init == "random":
        assert not np.array_equal(a, _inversion.griffin_lim(mag, n_iter=4, seed=1, **kw))


def test_mel_to_magnitude_fits_nonnegatively():
    spec = _spectral.power_spectrogram(music_signal(1.0), n_fft=2048, hop_length=512)
    basis = _spectral.mel_basis(sr=22050, n_fft=2048, n_mels=128)
    mel = (basis @ spec).T
    est = _inversion.mel_to_magnitude(mel, sr=22050, n_fft=2048).numpy() ** 2
    assert est.shape == spec.shape and est.min() >= 0
    rel = np.linalg.norm(basis @ est - mel.T) / np.linalg.norm(mel)
    # librosa.util.nnls (L-BFGS-B) leaves about 0.02 on such signals, at 10-50 times the time.
    assert rel < 0.02
