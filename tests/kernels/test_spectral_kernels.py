"""The spectral kernels against their references: mel projection, PGHI's heap, Griffin-Lim's update, |X|^2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cadenza import kernels
from cadenza.kernels import spectral as phase
from cadenza.representations._spectral import mel_basis


def boom(*args: object, **kwargs: object) -> None:
    raise AssertionError("a compiled loop ran with the kernels off")


def heap_problem(seed: int = 0) -> tuple[np.ndarray, ...]:
    """A magnitude with plateaus (equal levels), holes below the tolerance and several regions."""
    rng = np.random.default_rng(seed)
    mag = np.exp(rng.normal(0.0, 2.0, size=(37, 53)))
    mag[5:9] = 1e-9  # a band of silence: regions on both sides
    mag[20:22, 10:30] = mag[20, 10]  # a plateau: ties within a level
    big = mag > 1e-6 * mag.max()
    dt, df = rng.normal(size=mag.shape), rng.normal(size=mag.shape)
    flat = np.flatnonzero(big)
    starts = flat[np.argsort(-mag.reshape(-1)[flat], kind="stable")]
    return mag, dt, df, starts, big


@pytest.mark.parametrize("seed", [0, 1])
def test_heap_integration_equals_the_reference(seed: int) -> None:
    mag, dt, df, starts, big = heap_problem(seed)
    assert phase._kernels() is not None  # the compiled path runs: fails without numba (declared)
    got, done = phase.heap_integrate(mag, dt, df, starts, big)
    ref, ref_done = phase.heap_integrate_reference(phase._levels(mag, big), dt, df, starts, big)
    np.testing.assert_array_equal(done, ref_done)
    np.testing.assert_array_equal(got, ref)  # same order, same float64 sums: bit for bit
    np.testing.assert_array_equal(done, big)  # every coefficient to phase got one, no other
    assert np.all(got[~big] == 0.0)


def test_heap_integration_follows_the_gradients() -> None:
    # Constant increments on a full grid: the phase is linear in n and m, whatever the order.
    mag = np.random.default_rng(2).uniform(1.0, 2.0, size=(9, 11))
    dt, df = np.full(mag.shape, 0.3), np.full(mag.shape, -0.1)
    start = int(np.argmax(mag))
    got, done = phase.heap_integrate(mag, dt, df, np.array([start]), np.ones(mag.shape, bool))
    n0, m0 = divmod(start, mag.shape[1])
    n, m = np.meshgrid(np.arange(9), np.arange(11), indexing="ij")
    np.testing.assert_allclose(got, 0.3 * (n - n0) - 0.1 * (m - m0), atol=1e-12)
    assert done.all()


@pytest.mark.parametrize("with_previous", [False, True])
def test_gl_update_equals_the_reference(with_previous: bool) -> None:
    g = torch.Generator().manual_seed(0)
    rebuilt = torch.randn(2, 30, 65, dtype=torch.complex64, generator=g)
    previous = torch.randn(2, 30, 65, dtype=torch.complex64, generator=g) if with_previous else None
    mag = torch.rand(2, 30, 65, generator=g)
    got = phase.gl_update(rebuilt, previous, mag, 0.495)
    ref = phase.gl_update_reference(rebuilt, previous, mag, 0.495)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.abs(), mag, rtol=1e-5, atol=1e-6)  # the magnitude is imposed


@pytest.mark.parametrize(("power", "basis"), [(2.0, {}), (1.0, {"htk": True, "norm": None, "fmin": 100.0})])
def test_mel_projection_equals_the_reference(power: float, basis: dict) -> None:
    weights = phase.MelWeights.of(mel_basis(sr=16000, n_fft=512, n_mels=40, **basis))
    spec = torch.randn(70, 257, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    got, ref = np.empty((70, 40), np.float32), np.empty((70, 40), np.float32)
    phase.mel_project(spec, weights, power, got)
    phase.mel_project_reference(spec, weights, power, ref)
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-6 * ref.max())
    # A frame's bands depend on that frame alone: any chunking gives the same bits.
    parts = np.empty_like(got)
    for a, b in ((0, 7), (7, 50), (50, 70)):
        phase.mel_project(spec[a:b], weights, power, parts[a:b])
    np.testing.assert_array_equal(parts, got)


def test_mel_projection_is_the_same_for_any_thread_count() -> None:
    weights = phase.MelWeights.of(mel_basis(sr=22050, n_fft=2048, n_mels=128))
    spec = torch.randn(300, 1025, dtype=torch.complex64, generator=torch.Generator().manual_seed(4))
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(np.empty((300, 128), np.float32))
            phase.mel_project(spec, weights, 2.0, outs[-1])
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize(("power", "relax"), [(2.0, 1.5), (1.0, 1.0), (2.0, 1.2)])
def test_mel_correction_equals_the_reference(power: float, relax: float) -> None:
    basis = mel_basis(sr=16000, n_fft=512, n_mels=40, fmax=7000.0)  # the top bins reach no filter
    weights = phase.MelWeights.of(basis)
    col = basis.sum(0)
    inv_col = torch.from_numpy(np.where(col > 0, 1.0 / np.maximum(col, 1e-30), 0.0).astype(np.float32))
    g = torch.Generator().manual_seed(5)
    rebuilt = torch.randn(2, 30, 257, dtype=torch.complex64, generator=g)
    target = torch.rand(2, 30, 40, generator=g)
    got = phase.mel_correct(rebuilt, target, weights, inv_col, power, relax)
    ref = phase.mel_correct_reference(rebuilt, target, weights, inv_col, power, relax)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6 * float(ref.max()))
    assert torch.all(got[..., inv_col == 0] == 0)  # no filter: no energy
    # One plain step (relax 1) moves the mel bands towards the target (Richardson-Lucy).
    if relax == 1.0:
        m = torch.from_numpy(basis.copy())
        before = (rebuilt.abs() @ m.T - target).norm()
        assert (got @ m.T - target).norm() < before


def test_squared_magnitude_equals_the_reference() -> None:
    spec = torch.randn(3, 17, 33, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(phase.squared_magnitude(spec), spec.abs() ** 2, rtol=1e-5, atol=1e-6)


def test_other_inputs_take_the_reference() -> None:
    spec = torch.randn(4, 6, dtype=torch.complex128)  # complex128: the compiled loop takes complex64
    torch.testing.assert_close(phase.squared_magnitude(spec), spec.abs() ** 2)
    strided = torch.randn(6, 4, dtype=torch.complex64).T  # not contiguous
    mag = torch.ones(4, 6)
    torch.testing.assert_close(phase.gl_update(strided, None, mag, 0.5).abs(), mag)


def test_off_the_references_run(monkeypatch: pytest.MonkeyPatch) -> None:
    mag, dt, df, starts, big = heap_problem(3)
    on = phase.heap_integrate(mag, dt, df, starts, big)
    spec = torch.randn(5, 9, dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    on_update = phase.gl_update(spec, spec * 0.5, torch.ones(5, 9), 0.4)
    monkeypatch.setenv(kernels.ENV_VAR, "off")
    monkeypatch.setattr(
        phase, "_COMPILED", dict.fromkeys(("heap", "update", "power", "mel", "correct"), boom)
    )
    off = phase.heap_integrate(mag, dt, df, starts, big)
    np.testing.assert_array_equal(off[0], on[0])
    np.testing.assert_array_equal(off[1], on[1])
    torch.testing.assert_close(phase.gl_update(spec, spec * 0.5, torch.ones(5, 9), 0.4), on_update)
    torch.testing.assert_close(phase.squared_magnitude(spec), spec.abs() ** 2)
    monkeypatch.setenv(kernels.ENV_VAR, "on")
    with pytest.raises(AssertionError, match="kernels off"):
        phase.squared_magnitude(spec)
