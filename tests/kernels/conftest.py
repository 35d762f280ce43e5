"""The kernels' tests run with the kernels on, whatever ``CADENZA_KERNELS`` says outside."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_KERNELS", "on")
