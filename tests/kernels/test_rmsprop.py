"""The fused CPU RMSprop against torch.optim.RMSprop: same updates, same state, fallbacks, the switch."""

from __future__ import annotations

import pytest
import torch

from cadenza.kernels.rmsprop import RMSprop


def params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    # One tensor large enough to be split over threads, and small ones.
    shapes = [(600, 1000), (37,), (8, 5)]
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def run(
    opt_class, kwargs: dict, steps: int = 5, state: dict | None = None
) -> tuple[list, torch.optim.Optimizer]:
    ps = params()
    opt = opt_class(ps, **kwargs)
    if state is not None:
        opt.load_state_dict(state)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach().clone() for p in ps], opt


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_fused_update_matches_torch(weight_decay: float) -> None:
    kwargs = {"lr": 1e-2, "alpha": 0.9, "eps": 1e-7, "weight_decay": weight_decay}
    ours, opt = run(RMSprop, kwargs)
    assert opt._fast()  # the fused path ran: fails without numba (a declared dependency)
    theirs, ref = run(torch.optim.RMSprop, kwargs)
    for a, b in zip(ours, theirs):  # float32 rounding; a wrong formula is off by ~lr = 1e-2
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    assert ours[0].ne(params()[0]).all()  # every element moved
    for p, q in zip(opt.state.values(), ref.state.values()):
        assert set(p) == set(q) == {"step", "square_avg"}
        assert float(p["step"]) == float(q["step"]) == 5
        torch.testing.assert_close(p["square_avg"], q["square_avg"], atol=1e-7, rtol=1e-5)


def test_state_dicts_carry_over_between_the_two() -> None:
    kwargs = {"lr": 1e-2, "alpha": 0.9}
    _, ours = run(RMSprop, kwargs, steps=3)
    a, _ = run(torch.optim.RMSprop, kwargs, steps=2, state=ours.state_dict())
    _, theirs = run(torch.optim.RMSprop, kwargs, steps=3)
    b, _ = run(RMSprop, kwargs, steps=2, state=theirs.state_dict())
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("change", [{"momentum": 0.9}, {"centered": True}, {"maximize": True}])
def test_other_variants_are_torch_exactly(change: dict) -> None:
    kwargs = {"lr": 1e-2, **change}
    ours, opt = run(RMSprop, kwargs)
    assert not opt._fast()
    theirs, _ = run(torch.optim.RMSprop, kwargs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_non_float32_parameters_take_torchs_path() -> None:
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = RMSprop([p], lr=0.1)
    p.grad = torch.ones(3, dtype=torch.float64)
    assert not opt._fast()
    opt.step()
    q = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    ref = torch.optim.RMSprop([q], lr=0.1)
    q.grad = torch.ones(3, dtype=torch.float64)
    ref.step()
    assert torch.equal(p, q)


def test_build_optimizer_gives_the_fused_rmsprop() -> None:
    from cadenza.training.config import OptimConfig
    from cadenza.training.optim import build_optimizer

    opt = build_optimizer(torch.nn.Linear(3, 2).parameters(), OptimConfig(name="rmsprop", lr=1e-3))
    assert isinstance(opt, RMSprop) and isinstance(opt, torch.optim.RMSprop)


def test_switched_off_it_is_torchs_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_KERNELS", "off")
    kwargs = {"lr": 1e-2, "alpha": 0.9, "weight_decay": 1e-2}
    ours, opt = run(RMSprop, kwargs)
    assert not opt._fast()
    theirs, _ = run(torch.optim.RMSprop, kwargs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
