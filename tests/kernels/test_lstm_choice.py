"""``CADENZA_KERNELS=auto``: each LSTM layer takes the faster of the fused layer and PyTorch's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cadenza.kernels import lstm, lstm_choice, measured
from cadenza.kernels.lstm import lstm_forward

SHAPE = lstm_choice.Shape(4, 6, 5, 7, "float32", "weights", True, 1)


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``auto``, an empty cache directory of its own and no choice remembered in the process."""
    monkeypatch.setenv("CADENZA_KERNELS", "auto")
    monkeypatch.setenv("CADENZA_CACHE", str(tmp_path))
    measured.forget()
    yield tmp_path
    measured.forget()


def timings(fused: float, torch_: float) -> object:
    calls: list[lstm_choice.Shape] = []

    def measure(shape: lstm_choice.Shape) -> dict[str, float]:
        calls.append(shape)
        return {"fused": fused, "torch": torch_}

    measure.calls = calls  # type: ignore[attr-defined]
    return measure


def no_measuring(shape: lstm_choice.Shape) -> dict[str, float]:
    raise AssertionError(f"measured {shape.text()} again")


@pytest.mark.parametrize(("fused", "torch_", "expected"), [(1.0, 2.0, "fused"), (2.0, 1.0, "torch")])
def test_the_faster_path_is_chosen_and_kept_on_disk(
    fused: float, torch_: float, expected: str, fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    measure = timings(fused, torch_)
    monkeypatch.setattr(lstm_choice, "measure", measure)
    assert lstm_choice.choose(SHAPE) == expected
    assert lstm_choice.choose(SHAPE) == expected
    assert measure.calls == [SHAPE]  # once per process
    saved = json.loads((fresh / measured.CACHE_NAME).read_text())
    assert saved == {  # filed under this machine, in the LSTM's table
        measured.machine(): {
            "lstm": {SHAPE.text(): {"path": expected, "fused_ms": 1e3 * fused, "torch_ms": 1e3 * torch_}}
        }
    }
    lstm_choice.forget()  # a new process: reads the file, measures nothing
    monkeypatch.setattr(lstm_choice, "measure", no_measuring)
    assert lstm_choice.choose(SHAPE) == expected
    assert lstm_choice.choices() == {SHAPE.text(): expected}


def test_another_shape_or_thread_count_is_measured_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    measure = timings(1.0, 2.0)
    monkeypatch.setattr(lstm_choice, "measure", measure)
    other_threads = lstm_choice.Shape(4, 6, 5, 7, "float32", "weights", True, 2)
    no_grad = lstm_choice.Shape(4, 6, 5, 7, "float32", "none", False, 1)
    for shape in (SHAPE, other_threads, no_grad, SHAPE):
        lstm_choice.choose(shape)
    assert measure.calls == [SHAPE, other_threads, no_grad]


def test_a_corrupt_or_foreign_cache_file_is_measured_again_and_rewritten(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = fresh / measured.CACHE_NAME
    measure = timings(2.0, 1.0)
    monkeypatch.setattr(lstm_choice, "measure", measure)
    other = {"other CPU | torch 1.0": {"lstm": {SHAPE.text(): {"path": "fused"}}}}
    for text in (
        "{not json",
        "[1, 2]",
        json.dumps(other),
        json.dumps({measured.machine(): {"lstm": {SHAPE.text(): {"path": "foreign"}}}}),
    ):
        file.write_text(text)
        lstm_choice.forget()
        assert lstm_choice.choose(SHAPE) == "torch"
    assert len(measure.calls) == 4
    file.write_text(json.dumps(other))
    lstm_choice.forget()
    lstm_choice.choose(SHAPE)
    assert json.loads(file.read_text())["other CPU | torch 1.0"] == other["other CPU | torch 1.0"]  # kept
    assert not list(fresh.glob(".*.tmp"))  # written through a temporary file, renamed


def test_with_the_cache_off_choices_stay_in_the_process(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_CACHE", "off")
    monkeypatch.setattr(lstm_choice, "measure", timings(1.0, 2.0))
    assert lstm_choice.choose(SHAPE) == "fused"
    assert not list(fresh.iterdir())
    monkeypatch.setattr(lstm_choice, "measure", no_measuring)
    assert lstm_choice.choose(SHAPE) == "fused"


def test_measuring_really_times_both_and_draws_nothing_from_the_global_generator() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    for grad in ("none", "weights", "all"):
        seconds = lstm_choice.measure(lstm_choice.Shape(2, 3, 4, 5, "float32", grad, grad != "none", 1))
        assert set(seconds) == {"fused", "torch"} and all(0 < s < 5 for s in seconds.values())
    assert torch.equal(torch.rand(4), expected)


def test_shape_of_a_call() -> None:
    module = nn.LSTM(5, 7, batch_first=True)
    x = torch.zeros(4, 6, 5)
    w_ih, w_hh = module.weight_ih_l0, module.weight_hh_l0
    threads = torch.get_num_threads()
    assert lstm_choice.shape_of(x, w_ih, w_hh, True) == lstm_choice.Shape(
        4, 6, 5, 7, "float32", "weights", True, threads
    )
    assert lstm_choice.shape_of(x.requires_grad_(), w_ih, w_hh, True).grad == "all"
    with torch.no_grad():
        assert lstm_choice.shape_of(x, w_ih, w_hh, False).grad == "none"


@pytest.mark.parametrize("dropout", [0.0, 0.4])
@pytest.mark.parametrize("x_grad", [False, True])
def test_pytorchs_layer_computes_what_the_fused_one_does(
    dropout: float, x_grad: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs, states and every gradient within float32 rounding, with the same dropout masks
    between layers (the same seed gives the same masks whichever path each layer takes)."""
    torch.manual_seed(0)
    module = nn.LSTM(6, 9, num_layers=3, batch_first=True, dropout=dropout).train()
    x = torch.randn(5, 8, 6, requires_grad=x_grad)
    state = (torch.randn(3, 5, 9), torch.randn(3, 5, 9))
    results = {}
    for path in ("fused", "torch", "mixed"):
        layers = iter(["torch", "fused", "torch"] if path == "mixed" else [path] * 3)
        monkeypatch.setattr(lstm_choice, "choose", lambda shape, layers=layers: next(layers))
        module.zero_grad()
        x.grad = None
        torch.manual_seed(7)
        y, (h, c) = lstm_forward(module, x, state)
        ((y**2).sum() + 3 * h.sum() + (c**3).sum()).backward()
        after = torch.rand(3)  # the same draws were made
        grads = [p.grad for p in module.parameters()] + ([x.grad] if x_grad else [])
        results[path] = [y, h, c, after, *grads]
    for path in ("torch", "mixed"):
        for a, b in zip(results[path], results["fused"]):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_auto_asks_for_each_layer_and_on_never_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[lstm_choice.Shape] = []
    monkeypatch.setattr(lstm_choice, "choose", lambda shape: asked.append(shape) or "torch")
    module = nn.LSTM(6, 9, num_layers=2, batch_first=True).train()
    lstm_forward(module, torch.randn(5, 8, 6))
    threads = torch.get_num_threads()
    assert asked == [
        lstm_choice.Shape(5, 8, 6, 9, "float32", "weights", True, threads),
        lstm_choice.Shape(5, 8, 9, 9, "float32", "all", True, threads),  # the first layer's output needs grad
    ]
    monkeypatch.setenv("CADENZA_KERNELS", "on")
    called = []
    monkeypatch.setattr(lstm.FusedLSTMLayer, "apply", lambda *a: called.append(1) or boom())
    with pytest.raises(ZeroDivisionError):
        lstm_forward(module, torch.randn(5, 8, 6))
    assert called and len(asked) == 2


def boom() -> None:
    raise ZeroDivisionError


def test_a_real_choice_is_measured_once_and_reported_by_doctor(fresh: Path) -> None:
    from cadenza.doctor import check_kernels

    module = nn.LSTM(6, 9, batch_first=True).train()
    lstm_forward(module, torch.randn(5, 8, 6))
    (choice,) = lstm_choice.choices().values()
    assert choice in lstm_choice.PATHS
    lstm_check, _, wavenet_check = check_kernels()
    assert lstm_check.ok and "1 shape measured" in lstm_check.detail and str(fresh) in lstm_check.detail
    assert f"the fused layer for {int(choice == 'fused')}" in lstm_check.detail
    assert "none measured yet" in wavenet_check.detail


def test_a_quick_choice_is_logged_quietly_and_a_slow_one_at_info(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG, logger="cadenza.kernels.measured")
    measured.choose("example", "quick", lambda: {"a": 1.0, "b": 2.0})
    monkeypatch.setattr(measured, "LOUD_SECONDS", -1.0)  # every measuring counts as a pause
    measured.choose("example", "slow", lambda: {"a": 2.0, "b": 1.0})
    levels = {r.getMessage().split(":")[0]: r.levelno for r in caplog.records}
    assert levels == {"example quick": logging.DEBUG, "example slow": logging.INFO}
    assert "-> b (measured once in" in caplog.records[-1].getMessage()


def test_fastest_warms_up_alternates_and_stops_at_its_budget() -> None:
    order: list[str] = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    seconds = measured.fastest(calls, reps=3)
    assert order == ["a", "b"] * 4 and set(seconds) == {"a", "b"}  # a warm-up round, then 3
    order.clear()
    measured.fastest(calls, reps=3, budget_s=0.0)
    assert order == ["a", "b"] * 2  # the warm-up and one timed round


ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx fma avx2\n\nprocessor\t: 1\nmodel name\t: other\n"
ZEN4 = ZEN3.replace("model\t\t: 1\n", "model\t\t: 17\n").replace("avx2\n", "avx2 avx512f avx512bw\n")
GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes sve\nCPU part\t: 0xd40\n"


def test_choices_are_kept_apart_for_cpus_that_share_a_model_name() -> None:
    """A VM's "AMD EPYC" is Zen 3 or Zen 4: their products rank differently, so their choices do too."""
    assert measured.describe_cpu(ZEN3) == "AMD EPYC (cpu family 25 model 1, avx2)"  # the first block only
    assert measured.describe_cpu(ZEN4) == "AMD EPYC (cpu family 25 model 17, avx512f)"
    assert "sve" in measured.describe_cpu(GRAVITON)
    assert measured.machine().endswith(f"| torch {torch.__version__}")
