"""Large products through MKL or oneDNN (cadenza.kernels.linear) against torch's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cadenza.kernels import guards, linear, measured


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CADENZA_CACHE", str(tmp_path))
    measured.forget()
    yield
    measured.forget()


def factors(m: int, k: int, n: int, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(k, m, generator=g).t() if layout[0] == "t" else torch.randn(m, k, generator=g)
    b_t = torch.randn(k, n, generator=g).t() if layout[1] == "t" else torch.randn(n, k, generator=g)
    return a, b_t


@pytest.mark.parametrize("layout", ["nn", "tn", "nt", "tt"])
@pytest.mark.parametrize("path", ["mkl", "onednn"])
def test_mm_equals_torch_in_every_layout_either_way(
    layout: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert guards.passes("mkldnn_matmul")
    monkeypatch.setenv("CADENZA_KERNELS", "auto")
    calls: list[str] = []
    monkeypatch.setattr(measured, "choose", lambda table, key, *a, **k: calls.append(key) or path)
    a, b_t = factors(130, 170, 200, layout)  # 4.4 M multiply-adds: over MIN_MACS
    bias = torch.randn(200)
    ref = (a.double() @ b_t.double().t() + bias.double()).float()
    torch.testing.assert_close(linear.mm(a, b_t, bias), ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(linear.mm(a, b_t), ref - bias, atol=1e-4, rtol=1e-5)
    assert calls == [f"256x170 @ 170x200 {layout} threads={torch.get_num_threads()}"] * 2  # rows: 130 -> 256


def test_small_float64_or_odd_layouts_take_mkl_without_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_KERNELS", "auto")
    monkeypatch.setattr(measured, "choose", lambda *a, **k: pytest.fail("asked"))
    a, b_t = factors(8, 16, 32, "nn")  # under MIN_MACS
    torch.testing.assert_close(linear.mm(a, b_t), a @ b_t.t())
    big_a, big_b = factors(130, 170, 200, "nn")
    torch.testing.assert_close(linear.mm(big_a.double(), big_b.double()), big_a.double() @ big_b.double().t())
    sliced = torch.randn(130, 340)[:, ::2]  # neither contiguous nor a transpose
    torch.testing.assert_close(linear.mm(sliced, big_b), sliced @ big_b.t())
    monkeypatch.setenv("CADENZA_KERNELS", "off")
    torch.testing.assert_close(linear.mm(big_a, big_b), big_a @ big_b.t())


def test_the_choice_is_measured_once_and_is_the_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_KERNELS", "auto")
    timings = iter([{"mkl": 2.0, "onednn": 1.0}])
    monkeypatch.setattr(linear, "_measure", lambda *a: next(timings))
    a, b_t = factors(130, 170, 200, "nn")
    for _ in range(3):
        linear.mm(a, b_t)  # measured once (a second measurement would raise StopIteration)
    linear.mm(factors(200, 170, 200, "nn")[0], b_t)  # 200 rows: the same power of two, no measuring
    assert measured.choices(linear.TABLE) == {
        f"256x170 @ 170x200 nn threads={torch.get_num_threads()}": "onednn"  # 130 rows -> 256
    }


def test_measuring_times_both_paths_without_touching_the_global_generator() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    seconds = linear._measure((130, 170), (200, 170), "tn")
    assert set(seconds) == {"mkl", "onednn"} and all(0 < s < 5 for s in seconds.values())
    assert torch.equal(torch.rand(3), expected)


def ran_the_kernel(y: torch.Tensor) -> bool:
    """Whether :class:`LinearFunction` is in ``y``'s graph."""
    todo, seen = [y.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if fn.name() == "LinearFunctionBackward":
            return True
        todo += [f for f, _ in fn.next_functions]
    return False


@pytest.mark.parametrize("path", ["mkl", "onednn"])
def test_linear_module_equals_nn_linear_with_gradients(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """3-D input (batch, steps, features), gradients of input, weight and bias."""
    monkeypatch.setenv("CADENZA_KERNELS", "auto")
    monkeypatch.setattr(measured, "choose", lambda *a, **k: path)
    torch.manual_seed(0)
    ours = linear.Linear(170, 200)
    ref = nn.Linear(170, 200)
    ref.load_state_dict(ours.state_dict())  # the same parameters and keys
    x = torch.randn(4, 33, 170, requires_grad=True)
    dy = torch.randn(4, 33, 200)
    got = torch.autograd.grad(ours(x), [x, *ours.parameters()], dy)
    want = torch.autograd.grad(ref(x), [x, *ref.parameters()], dy)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=2e-4, rtol=1e-5)
    assert ran_the_kernel(ours(x))
    monkeypatch.setenv("CADENZA_KERNELS", "off")
    assert not ran_the_kernel(ours(x))
    assert torch.equal(ours(x), F.linear(x, ours.weight, ours.bias))
