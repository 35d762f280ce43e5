"""Waveform representation and mu-law companding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadenza.errors import ParameterError
from cadenza.representations import Waveform, mu_law_decode, mu_law_encode


def _reference_encode(x: np.ndarray, n_classes: int) -> np.ndarray:
    """The textbook definition in float64."""
    mu = n_classes - 1
    x = np.clip(np.asarray(x, dtype=np.float64), -1, 1)
    f = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.round((f + 1) / 2 * mu)


def test_mu_law_known_values():
    x = np.array([-1.0, 0.0, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(mu_law_encode(x), [0, 128, 255])
    assert mu_law_encode(x).dtype == np.uint8
    np.testing.assert_array_equal(mu_law_encode(np.array([-2.0, 2.0])), [0, 255])  # clipped
    np.testing.assert_array_equal(mu_law_decode(np.array([0, 255])), [-1.0, 1.0])
    assert abs(float(mu_law_decode(np.array([128]))[0])) < 1e-4
    t = mu_law_encode(torch.tensor([-1.0, 0.0, 1.0]))
    assert t.dtype == torch.int64 and t.tolist() == [0, 128, 255]
    assert mu_law_encode(np.zeros(3), n_classes=65536).dtype == np.uint16


@pytest.mark.parametrize("n_classes", [2, 16, 256, 65536])
def test_mu_law_is_exact_at_its_resolution(n_classes):
    c = np.arange(n_classes)
    x = mu_law_decode(c, n_classes=n_classes)
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(mu_law_encode(x, n_classes=n_classes), c)
    np.testing.assert_array_equal(
        mu_law_decode(mu_law_encode(x, n_classes=n_classes), n_classes=n_classes), x
    )
    ct = torch.arange(n_classes)
    xt = mu_law_decode(ct, n_classes=n_classes)
    assert xt.dtype == torch.float32
    assert torch.equal(mu_law_encode(xt, n_classes=n_classes), ct)
    np.testing.assert_allclose(xt.numpy(), x, atol=1e-6)


def test_mu_law_matches_the_standard_definition():
    x = np.random.default_rng(0).uniform(-1, 1, 100_000).astype(np.float32)
    ref = _reference_encode(x, 256)
    ours_np = mu_law_encode(x).astype(np.float64)
    ours_t = mu_law_encode(torch.from_numpy(x)).numpy().astype(np.float64)
    # float32 may round the other way only where the exact value sits on a half.
    mu = 255
    f = np.sign(x.astype(np.float64)) * np.log1p(mu * np.abs(x.astype(np.float64))) / np.log1p(mu)
    near_half = np.abs(((f + 1) / 2 * mu) % 1 - 0.5) < 1e-4
    for ours in (ours_np, ours_t):
        assert np.all((ours == ref) | near_half)
        assert np.abs(ours - ref).max() <= 1


def test_mu_law_rejects_bad_class_counts():
    for bad in (1, 65537, 2.5, True):
        with pytest.raises(ParameterError):
            mu_law_encode(np.zeros(2), n_classes=bad)


def test_float_waveform_is_exact():
    rep = Waveform()
    y = np.random.default_rng(1).uniform(-1, 1, 1000).astype(np.float32)
    frames = rep.encode(y)
    assert frames.shape == (1000, 1) and frames.dtype == np.float32 == np.dtype(rep.dtype)
    np.testing.assert_array_equal(rep.decode(frames), y)
    assert rep.n_features == 1 and rep.frame_rate == 16000.0


def test_mulaw_waveform_stores_classes():
    rep = Waveform(encoding="mulaw")
    assert rep.dtype == "uint8" and Waveform(encoding="mulaw", n_classes=1024).dtype == "uint16"
    y = np.random.default_rng(2).uniform(-1, 1, 5000).astype(np.float32)
    classes = rep.encode(y)
    assert classes.shape == (5000, 1) and classes.dtype == np.uint8
    y_hat = rep.decode(classes)
    assert y_hat.dtype == np.float32 and y_hat.shape == (5000,)
    np.testing.assert_array_equal(rep.encode(y_hat), classes)
    np.testing.assert_array_equal(rep.decode(rep.encode(y_hat)), y_hat)
    # mu-law's quantisation error grows with |x|: at most half a step of the companded scale.
    bound = np.log(256) / 255 * (np.maximum(np.abs(y), np.abs(y_hat)) + 1 / 255)
    assert np.all(np.abs(y_hat - y) <= bound + 1e-6)
    with pytest.raises(ParameterError):
        rep.decode(np.array([[256]]))
    with pytest.raises(ParameterError):
        rep.decode(np.array([[-1]]))


def test_waveform_rejects_bad_input_and_parameters():
    with pytest.raises(ParameterError):
        Waveform(encoding="alaw")
    with pytest.raises(ParameterError):
        Waveform(sample_rate=0)
    with pytest.raises(ParameterError):
        Waveform(n_classes=1)
    with pytest.raises(ParameterError):
        Waveform().encode(np.zeros((10, 2), dtype=np.float32))  # stereo
    with pytest.raises(ParameterError):
        Waveform().encode(np.array([0.0, np.nan]))
    with pytest.raises(ParameterError):
        Waveform().decode(np.zeros((10, 2), dtype=np.float32))
