"""``CADENZA_KERNELS``: one switch that sends every kernel to its plain PyTorch reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cadenza import kernels
from cadenza.errors import ParameterError
from cadenza.kernels import lstm
from cadenza.kernels.lstm import Dropout, lstm_forward, lstm_stepper


def boom(*args: object, **kwargs: object) -> None:
    raise AssertionError("a kernel ran with the kernels off")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("", True), ("auto", True), ("on", True), ("off", False), (" OFF ", False)],
)
def test_values(value: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(kernels.ENV_VAR, value)
    assert kernels.enabled() is expected
    assert kernels.mode() == ("off" if not expected else (value or "auto").strip().lower())


def test_a_typo_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.ENV_VAR, "of")
    with pytest.raises(ParameterError, match="CADENZA_KERNELS='of': expected 'auto', 'on' or 'off'"):
        kernels.enabled()


def test_off_the_lstm_kernels_are_the_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lstm.FusedLSTMLayer, "apply", boom)
    monkeypatch.setattr(lstm, "_CPUDropout", type("Boom", (), {"apply": staticmethod(boom)}))
    monkeypatch.setenv(kernels.ENV_VAR, "off")
    torch.manual_seed(0)
    module = nn.LSTM(3, 4, num_layers=2, batch_first=True, dropout=0.5).train()
    x = torch.randn(2, 5, 3)
    torch.manual_seed(1)
    got = lstm_forward(module, x)
    torch.manual_seed(1)
    expected = module(x)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1][0], expected[1][0])
    module.eval()
    z, h = torch.randn(2, 3), [torch.randn(5, 2, 4) for _ in range(2)]  # 5 windows
    got_h, got_c = lstm_stepper(module)(z, h, h)
    _, (ref_h, ref_c) = module(z.repeat(5, 1)[:, None], (torch.stack(h).view(2, 10, 4),) * 2)
    assert torch.equal(torch.stack(got_h).view(2, 10, 4), ref_h)  # the module itself ran
    drop = Dropout(0.3)
    torch.manual_seed(2)
    got_drop = drop(x)
    torch.manual_seed(2)
    assert torch.equal(got_drop, nn.Dropout(0.3)(x))
    monkeypatch.setenv(kernels.ENV_VAR, "on")
    with pytest.raises(AssertionError, match="kernels off"):
        lstm_forward(module, x)
