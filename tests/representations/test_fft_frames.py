"""GRUV FFT frames: layout, exactness and the real-part inverse."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.errors import ParameterError
from cadenza.representations import FFTFrames


@pytest.mark.parametrize("block_size", [2, 7, 8, 4000])
def test_frames_are_np_fft_unrolled(block_size):
    rep = FFTFrames(block_size=block_size)
    y = np.random.default_rng(block_size).uniform(-1, 1, 3 * block_size + 1).astype(np.float32)
    frames = rep.encode(y)
    assert frames.shape == (4, 2 * block_size) and frames.dtype == np.float32
    blocks = np.zeros(4 * block_size)
    blocks[: len(y)] = y
    spectrum = np.fft.fft(blocks.reshape(4, block_size), axis=1)
    expected = np.concatenate([spectrum.real, spectrum.imag], axis=1)
    np.testing.assert_allclose(frames, expected, atol=1e-4 * block_size**0.5)


def test_paper_defaults():
    rep = FFTFrames()
    assert rep.n_features == 8000 and rep.frame_rate == 4.0 and rep.block_size == 4000
    assert rep.encode(np.zeros(16000, dtype=np.float32)).shape == (4, 8000)
    assert rep.encode(np.zeros(0, dtype=np.float32)).shape == (0, 8000)


@pytest.mark.parametrize("block_size", [4000, 1023])
def test_round_trip_is_exact_to_float32(block_size):
    rep = FFTFrames(block_size=block_size)
    y = np.random.default_rng(0).uniform(-1, 1, 10 * block_size + 123).astype(np.float32)
    y_hat = rep.decode(rep.encode(y))
    assert y_hat.shape == (11 * block_size,) and y_hat.dtype == np.float32
    assert np.abs(y_hat[: len(y)] - y).max() < 1e-5
    assert np.abs(y_hat[len(y) :]).max() < 1e-5  # the padding decodes to silence


@pytest.mark.parametrize("block_size", [6, 7])
def test_decode_is_real_part_of_ifft_for_any_frames(block_size):
    rep = FFTFrames(block_size=block_size)
    frames = np.random.default_rng(1).standard_normal((5, 2 * block_size)).astype(np.float32)  # not Hermitian
    spectrum = frames[:, :block_size].astype(np.float64) + 1j * frames[:, block_size:]
    expected = np.fft.ifft(spectrum, axis=1).real.reshape(-1)
    np.testing.assert_allclose(rep.decode(frames), expected, atol=1e-6)


def test_bad_parameters_and_frames():
    with pytest.raises(ParameterError):
        FFTFrames(block_size=1)
    with pytest.raises(ParameterError):
        FFTFrames(block_size=-4000)
    with pytest.raises(ParameterError):
        FFTFrames(sample_rate=-1)
    with pytest.raises(ParameterError):
        FFTFrames(block_size=4).decode(np.zeros((3, 7), dtype=np.float32))
