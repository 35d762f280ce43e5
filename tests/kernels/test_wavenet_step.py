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
    monkeypatch.setattr(wavenet_step, "run", lambda *a: calls.append(1) or run(*a))
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
    def boom(*args: object) -> None:
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
