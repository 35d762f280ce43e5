"""Guards of the private and optional APIs: they hold on the installed versions, and a broken one
warns once and falls back to the public path."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch

from cadenza.kernels import guards, lstm, rmsprop


@pytest.fixture
def fresh_guards() -> Iterator[None]:
    guards.passes.cache_clear()
    yield
    guards.passes.cache_clear()


@pytest.mark.parametrize("name", sorted(guards.CHECKS))
def test_every_guard_holds_on_the_installed_versions(name: str) -> None:
    """Fails with the reason when an upgrade (torch, numba) or a missing package breaks a guard."""
    guards.CHECKS[name]()  # raises with the reason, rather than a bare False
    assert guards.passes(name)


def test_numba_is_there() -> None:
    """numba is a declared dependency: its absence is an error here, not a silent fallback."""
    assert guards.load_numba() is not None
    assert rmsprop._compiled() is not None


def test_a_broken_private_api_warns_once_and_takes_the_public_path(
    fresh_guards: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(w: torch.Tensor, n_rows: int) -> object:
        raise RuntimeError("_reorder_linear_weight() missing 1 required argument")

    monkeypatch.setattr(guards, "mkldnn_linear", broken)
    w, h = torch.randn(12, 4), torch.randn(3, 4)
    with caplog.at_level(logging.WARNING, logger="cadenza.kernels.guards"):
        for _ in range(3):
            torch.testing.assert_close(lstm._recurrent_product(w, 3)(h), h @ w.t(), atol=1e-5, rtol=1e-5)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "'mkldnn_linear' failed" in warnings[0] and "missing 1 required argument" in warnings[0]


def test_rmsprop_keeps_its_own_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool is rebuilt when the thread count changes, without reading the executor's private count."""
    monkeypatch.setattr(rmsprop, "_pool", None)
    monkeypatch.setattr(rmsprop, "_pool_size", 0)
    two = rmsprop._executor(2)
    assert rmsprop._executor(2) is two and rmsprop._pool_size == 2
    three = rmsprop._executor(3)
    assert three is not two and rmsprop._pool_size == 3
    assert sorted(three.map(lambda k: k * k, range(5))) == [0, 1, 4, 9, 16]
    three.shutdown()
