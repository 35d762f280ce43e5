"""The compiled WaveNet step against the torch step it replaces and the plain forward pass."""

from __future__ import annotations

import pytest
import torch

from cadenza.kernels import wavenet_step
from cadenza.models import DataInfo
from cadenza.models.wavenet import Config, Model

torch.set_num_threads(1)

MULAW = {"name": "waveform", "encoding": "mulaw", "n_classes": 256, "sample_rate": 8000}


def tiny_model(labels: tuple[str, ...] = ("bach", "corelli")) -> Model:
    torch.manual_seed(0)
    config = Config.tiny(
        n_stacks=2, n_layers=4, residual_channels=8, dilation_channels=8, skip_channels=16, label_channels=4
    )
    return Model(config, DataInfo(n_features=1, labels=labels, representation=MULAW)).eval()


def test_the_kernel_is_there_on_the_cpu() -> None:
    """numba is a declared dependency: without it this fails (mode=fast would silently be cached)."""
    assert wavenet_step.compiled() is not None
    assert wavenet_step.available(torch.device("cpu"))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_compiled_step_equals_the_torch_step_and_the_forward_pass(
    batch: int, temperature: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    run = wavenet_step.run
    monkeypatch.setattr(wavenet_step, "run", lambda *a, **k: calls.append(1) or run(*a, **k))
    model = tiny_model(labels=("bach", "corelli") if batch > 1 else ())
    seed = torch.randint(0, 256, (batch, 45 if batch > 1 else 3), generator=torch.Generator().manual_seed(1))
    cond = model.label_vector(torch.rand(batch, 2)) if model.label_embedding is not None else None
    u = torch.rand(batch, 60, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = {
        mode: model.sample(
            seed, 60, cond=cond, temperature=temperature, uniforms=u, mode=mode, return_logits=True
        )
        for mode in ("naive", "cached", "fast")
    }
    assert calls == [1]  # mode=fast ran the kernel
    for mode in ("cached", "fast"):
        assert (out[mode][1] - out["naive"][1]).abs().max() < 1e-4, mode
        assert torch.equal(out[mode][0], out["naive"][0]), mode


def test_switched_off_fast_runs_the_torch_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the compiled step ran with the kernels off")

    monkeypatch.setattr(wavenet_step, "run", boom)
    monkeypatch.setenv("CADENZA_KERNELS", "off")
    model = tiny_model()
    seed = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    u = torch.rand(2, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fast = model.sample(seed, 20, uniforms=u, mode="fast")[0]
    assert torch.equal(fast, model.sample(seed, 20, uniforms=u, mode="cached")[0])
    monkeypatch.setenv("CADENZA_KERNELS", "on")
    with pytest.raises(AssertionError, match="kernels off"):
        model.sample(seed, 20, uniforms=u, mode="fast")


def test_scipy_sgemm_is_there() -> None:
    """scipy (a declared dependency) offers sgemm: without it the kernel multiplies by itself (slower)."""
    assert wavenet_step.blas_sgemm() != 0


@pytest.mark.parametrize(("threads", "blas"), [(1, True), (3, True), (2, False)])
def test_streams_in_groups_with_and_without_blas_equal_the_forward_pass(
    threads: int, blas: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nine streams: two head products (8 + 1 streams), running sums 4 + 4 + 1, split over threads."""
    if not blas:
        monkeypatch.setattr(wavenet_step, "blas_sgemm", lambda: 0)
    model = tiny_model()
    batch = 9
    seed = torch.randint(0, 256, (batch, 30), generator=torch.Generator().manual_seed(3))
    cond = model.label_vector(torch.rand(batch, 2, generator=torch.Generator().manual_seed(4)))
    u = torch.rand(batch, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ref = model.sample(seed, 50, cond=cond, temperature=0.8, uniforms=u, mode="naive", return_logits=True)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        classes, logits = model.sample(
            seed, 50, cond=cond, temperature=0.8, uniforms=u, mode="fast", return_logits=True
        )
    finally:
        torch.set_num_threads(before)
    assert (logits - ref[1]).abs().max() < 1e-4
    assert torch.equal(classes, ref[0])


def test_gates_and_draw_hold_at_large_activations() -> None:
    """Large weights push the gates into saturation and spread the logits (the rational tanh's
    clamp, exp far below the maximum): the compiled step stays as close to the forward pass as
    the torch step does (float32 sums in another order differ by more than 1e-4 at this size)."""
    model = tiny_model(labels=())
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(6.0)
    seed = torch.randint(0, 256, (4, 20), generator=torch.Generator().manual_seed(6))
    u = torch.rand(4, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    out = {
        mode: model.sample(seed, 40, temperature=0.5, uniforms=u, mode=mode, return_logits=True)
        for mode in ("naive", "cached", "fast")
    }
    ref = out["naive"][1]
    assert ref.abs().max() > 50  # the logits do spread
    torch_error = (out["cached"][1] - ref).abs().max()
    assert (out["fast"][1] - ref).abs().max() <= max(2 * torch_error, 1e-4)
    assert torch.equal(out["fast"][0], out["naive"][0])


def test_the_kernel_reads_the_seed_as_the_forward_pass_primes_the_queues() -> None:
    """run(ring=None) reads the seed step by step; run(ring=Model._prime(...)) starts from the
    queues of the forward pass: the same draws, the same logits within float rounding."""
    model = tiny_model()
    batch, n_seed, n_new = 3, 70, 30  # a seed longer than the receptive field (31)
    seed = torch.randint(0, 256, (batch, n_seed), generator=torch.Generator().manual_seed(8))
    cond = model.label_vector(torch.tensor([0, 1, -1]))
    u = torch.rand(batch, n_new, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    weights = model._step_weights(cond, batch)
    out = {}
    for how in ("forward", "kernel"):
        classes = torch.cat([seed, seed.new_zeros(batch, n_new)], dim=1)
        logits = torch.zeros(batch, n_new, model.n_classes)
        ring = model._prime(seed[:, :-1], cond) if how == "forward" else None
        wavenet_step.run(classes, n_seed, ring, model.dilations, weights, u, 1.0, logits)
        out[how] = classes, logits
    assert torch.equal(out["kernel"][0], out["forward"][0])
    assert torch.equal(out["kernel"][0][:, :n_seed], seed)
    assert (out["kernel"][1] - out["forward"][1]).abs().max() < 1e-4


def test_the_loops_own_products_with_odd_channel_counts_equal_the_forward_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without BLAS, channels that are no multiple of 4 (the products' remainders) and 3 streams
    (a pair, then one) on one thread: the same classes, logits within 1e-4."""
    monkeypatch.setattr(wavenet_step, "blas_sgemm", lambda: 0)
    torch.manual_seed(0)
    config = Config.tiny(n_stacks=1, n_layers=3, residual_channels=6, dilation_channels=5, skip_channels=10)
    model = Model(config, DataInfo(n_features=1, representation=MULAW)).eval()
    seed = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(1))
    u = torch.rand(3, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = model.sample(seed, 40, uniforms=u, mode="naive", return_logits=True)
    classes, logits = model.sample(seed, 40, uniforms=u, mode="fast", return_logits=True)
    assert (logits - ref[1]).abs().max() < 1e-4
    assert torch.equal(classes, ref[0])


@pytest.mark.parametrize("batch", [1, 5])
def test_auto_measures_blas_against_the_loops_once_and_keeps_the_faster(
    batch: int, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """``CADENZA_KERNELS=auto``: both ways timed on copies (the output is still the forward
    pass's), the choice kept for this shape and reused without measuring again."""
    from cadenza.kernels import measured

    monkeypatch.setenv("CADENZA_KERNELS", "auto")
    monkeypatch.setenv("CADENZA_CACHE", str(tmp_path))
    measured.forget()
    model = tiny_model(labels=())
    n = wavenet_step.PROBE_SAMPLES + 12
    seed = torch.randint(0, 256, (batch, 20), generator=torch.Generator().manual_seed(1))
    u = torch.rand(batch, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = model.sample(seed, n, uniforms=u, mode="naive", return_logits=True)
    try:
        for _ in range(2):
            classes, logits = model.sample(seed, n, uniforms=u, mode="fast", return_logits=True)
            assert (logits - ref[1]).abs().max() < 1e-4
            assert torch.equal(classes, ref[0])
            (key, path), *others = measured.choices(wavenet_step.TABLE).items()
            assert not others and path in ("sgemm", "loops") and f"streams={batch} " in key
            monkeypatch.setattr(measured, "_save", lambda *a: pytest.fail("measured twice"))
        measured.forget()
        monkeypatch.setattr(wavenet_step, "PROBE_SAMPLES", 10**6)  # longer than the clip: no probe
        monkeypatch.setattr(measured, "choose", lambda *a, **k: pytest.fail("no probe should run"))
        model.sample(seed, n, uniforms=u, mode="fast")
    finally:
        measured.forget()
