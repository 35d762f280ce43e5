"""The LSTM kernels against nn.LSTM and nn.Dropout: outputs, states and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cadenza.kernels import guards, lstm
from cadenza.kernels.lstm import Dropout, FusedLSTMLayer, linear_for_rows, lstm_forward, lstm_stepper
from cadenza.models import DataInfo
from cadenza.models.fft_lstm import ARCHS, Config, Model

torch.set_num_threads(1)


def test_fused_lstm_matches_torch_lstm_with_gradients() -> None:
    torch.manual_seed(0)
    module = nn.LSTM(5, 7, num_layers=2, batch_first=True).double()
    x = torch.randn(3, 6, 5, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(2, 3, 7, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(2, 3, 7, dtype=torch.double, requires_grad=True)

    def loss(y: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return (y**2).sum() + 3 * state[0].sum() + (state[1] ** 3).sum()

    inputs = [x, h0, c0, *module.parameters()]
    expected = torch.autograd.grad(loss(*module(x, (h0, c0))), inputs)
    got = torch.autograd.grad(loss(*lstm_forward(module, x, (h0, c0))), inputs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    shapes = [(3, 3, 5), (8, 5), (8, 2), (8,), (3, 2), (3, 2)]  # x, W_ih, W_hh, b, h0, c0 of H = 2
    args = [torch.randn(s, dtype=torch.double, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(lambda *a: FusedLSTMLayer.apply(*a)[0], args)


@pytest.mark.parametrize("n_batch", [1, 16])
def test_fused_lstm_in_float32_matches_torch_lstm(n_batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The float32 path, through oneDNN's packed recurrent product (checked to be taken)."""
    assert guards.passes("mkldnn_linear")
    packed, pack = [], guards.mkldnn_linear
    monkeypatch.setattr(guards, "mkldnn_linear", lambda w, n: packed.append(n) or pack(w, n))
    torch.manual_seed(0)
    module = nn.LSTM(40, 64, batch_first=True)
    x = torch.randn(n_batch, 9, 40, requires_grad=True)
    expected_y, _ = module(x)
    got_y, _ = lstm_forward(module, x)
    assert packed == [n_batch]
    torch.testing.assert_close(got_y, expected_y, atol=1e-5, rtol=1e-4)
    weights = torch.randn_like(expected_y)
    expected = torch.autograd.grad((expected_y * weights).sum(), [x, *module.parameters()])
    got = torch.autograd.grad((got_y * weights).sum(), [x, *module.parameters()])
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_recurrent_product_is_h_times_w_transposed() -> None:
    torch.manual_seed(0)
    w, h = torch.randn(96, 24), torch.randn(5, 24)
    torch.testing.assert_close(lstm._recurrent_product(w, 5)(h), h @ w.t(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        lstm._recurrent_product(w.double(), 5)(h.double()), h.double() @ w.double().t()
    )


@pytest.mark.parametrize("shape", [(3, 7), (1, 3, 7), (4, 3, 7)])  # per layer (n, H) or (W, n, H)
def test_lstm_stepper_is_one_step_of_the_module_for_every_window(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    module = nn.LSTM(5, 7, num_layers=2, batch_first=True).double()
    n_windows = shape[0] if len(shape) == 3 else 1
    z = torch.randn(3, 5, dtype=torch.double)  # one input, read by every window
    h = [torch.randn(shape, dtype=torch.double) for _ in range(2)]
    c = [torch.randn(shape, dtype=torch.double) for _ in range(2)]
    got_h, got_c = lstm_stepper(module)(z, h, c)
    x = z.repeat(n_windows, 1)[:, None]  # (W n, T = 1, I), window-major like the states
    _, (ref_h, ref_c) = module(x, (torch.stack(h).view(2, -1, 7), torch.stack(c).view(2, -1, 7)))
    for got, ref in ((got_h, ref_h), (got_c, ref_c)):
        assert [s.shape for s in got] == [shape, shape]
        torch.testing.assert_close(torch.stack(got).view(2, -1, 7), ref)


@pytest.mark.parametrize("n_rows", [1, 3, 8])
def test_linear_for_rows_is_f_linear_packed_from_a_few_rows(
    n_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(0)
    w, b = (
        torch.randn(lstm.PACK_MIN_ENTRIES // 256, 256, generator=g),
        torch.randn(lstm.PACK_MIN_ENTRIES // 256, generator=g),
    )
    x = torch.randn(n_rows, 256, generator=g)
    calls = []
    pack = guards.mkldnn_linear
    monkeypatch.setattr(guards, "mkldnn_linear", lambda *a: calls.append(1) or pack(*a))
    for bias in (b, None):
        torch.testing.assert_close(
            linear_for_rows(w, bias, n_rows)(x), torch.nn.functional.linear(x, w, bias), atol=1e-4, rtol=1e-4
        )
    assert len(calls) == (2 if n_rows >= lstm.PACK_MIN_ROWS else 0)  # packed from PACK_MIN_ROWS rows on
    small = w[:, :128]  # under PACK_MIN_ENTRIES: addmm
    torch.testing.assert_close(
        linear_for_rows(small, b, n_rows)(x[:, :128]), torch.nn.functional.linear(x[:, :128], small, b)
    )
    assert len(calls) == (2 if n_rows >= lstm.PACK_MIN_ROWS else 0)
    monkeypatch.setenv("CADENZA_KERNELS", "off")
    torch.testing.assert_close(linear_for_rows(w, b, n_rows)(x), torch.nn.functional.linear(x, w, b))
    assert len(calls) == (2 if n_rows >= lstm.PACK_MIN_ROWS else 0)  # off: never packed


@pytest.mark.parametrize("shape", [(5, 7), (4, 5, 7)])
def test_lstm_stepper_with_packed_weights_in_float32(
    shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every weight packed (PACK_MIN_ENTRIES 0, five streams): still one step of the module."""
    monkeypatch.setattr(lstm, "PACK_MIN_ENTRIES", 0)
    torch.manual_seed(0)
    module = nn.LSTM(6, 7, num_layers=2, batch_first=True)
    n_windows = shape[0] if len(shape) == 3 else 1
    z = torch.randn(5, 6)
    h = [torch.randn(shape) for _ in range(2)]
    c = [torch.randn(shape) for _ in range(2)]
    got_h, got_c = lstm_stepper(module)(z, h, c)
    _, (ref_h, ref_c) = module(
        z.repeat(n_windows, 1)[:, None], (torch.stack(h).view(2, -1, 7), torch.stack(c).view(2, -1, 7))
    )
    for got, ref in ((got_h, ref_h), (got_c, ref_c)):
        torch.testing.assert_close(torch.stack(got).view(2, -1, 7), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["base", "fc", "bilinear"])
def test_fft_generation_with_packed_weights_equals_it_without_kernels(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five streams with every product packed (LSTM, fc and bilinear's dense input layer, head)."""
    from cadenza.models import GenerationRequest

    monkeypatch.setattr(lstm, "PACK_MIN_ENTRIES", 0)
    torch.manual_seed(0)
    model = Model(
        Config.tiny(arch=arch, hidden_size=24, dropout=0.0, fc_dropout=0.0),
        DataInfo(n_features=32, seq_len=6),
    ).eval()
    seed = torch.randn(5, model.n_seed_frames, 32, generator=torch.Generator().manual_seed(2))
    calls = []
    pack = guards.mkldnn_linear
    monkeypatch.setattr(guards, "mkldnn_linear", lambda *a: calls.append(1) or pack(*a))
    out = {}
    for switch in ("on", "off"):
        monkeypatch.setenv("CADENZA_KERNELS", switch)
        out[switch] = [
            model.generate(GenerationRequest(n=5, n_frames=4, generator=None, seed=seed, options={"mode": m}))
            for m in ("sliding", "stateful")
        ]
    assert calls  # the packed products ran
    for a, b in zip(out["on"], out["off"]):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_cpu_dropout_keeps_1_minus_p_scaled_and_passes_gradients_through_the_mask() -> None:
    torch.manual_seed(0)
    drop = Dropout(0.3)
    x = torch.ones(200, 500, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    (grad,) = torch.autograd.grad((y * 2).sum(), x)
    torch.testing.assert_close(grad, 2 * y.detach())  # x is all ones: the gradient is 2 x the mask
    torch.manual_seed(1)
    a = drop(x)
    torch.manual_seed(1)
    torch.testing.assert_close(drop(x), a)  # seeded like every other draw
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_fft_model_with_kernels_equals_it_without(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole models (dropout 0) in float32: loss, every gradient and both generation modes."""
    from cadenza.models import GenerationRequest

    torch.manual_seed(0)
    config = Config.tiny(arch=arch, hidden_size=24, dropout=0.0, fc_dropout=0.0, cnn_channels=(2, 3))
    config.n_layers = 2 if arch == "stacked" else 1
    model = Model(config, DataInfo(n_features=32, seq_len=6)).train()
    frames = torch.randn(4, 7, 32, generator=torch.Generator().manual_seed(1))
    seed = torch.randn(2, model.n_seed_frames, 32, generator=torch.Generator().manual_seed(2))
    results = {}
    for switch in ("on", "off"):
        monkeypatch.setenv("CADENZA_KERNELS", switch)
        model.zero_grad()
        loss = model.losses({"x": frames[:, :-1], "y": frames[:, 1:]})["loss"]
        loss.backward()
        outs = [
            model.eval().generate(
                GenerationRequest(n=2, n_frames=5, generator=None, seed=seed, options={"mode": m})
            )
            for m in ("sliding", "stateful")
        ]
        model.train()
        results[switch] = [loss.detach(), *[p.grad.clone() for p in model.parameters()], *outs]
    for a, b in zip(results["on"], results["off"]):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_cpu_autocast_in_bf16_trains_through_the_module_lstm() -> None:
    """``train.precision=bf16`` on a CPU: the fused backward had mixed float and bfloat16, and
    on an AVX2 CPU oneDNN has no bf16 LSTM at all (it raised); there the LSTM runs in float32."""
    torch.manual_seed(0)
    module = nn.LSTM(8, 16, batch_first=True)
    x = torch.randn(3, 5, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, (h, _) = lstm.lstm_forward(module, x)
    with lstm.bf16_autocast("cpu"):
        expected, _ = module(x)
    reference, _ = module(x)  # float32, no autocast
    assert y.dtype == (torch.bfloat16 if lstm.cpu_bf16_lstm_supported() else torch.float32)
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(y.float(), reference, atol=0.02, rtol=0.02)
    y.float().square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and module.weight_ih_l0.grad.abs().sum() > 0


def test_bf16_autocast_leaves_onednn_as_it_found_it() -> None:
    before = torch._C._get_mkldnn_enabled()
    with lstm.bf16_autocast("cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch._C._get_mkldnn_enabled() == (before and lstm.cpu_bf16_lstm_supported())
    assert torch._C._get_mkldnn_enabled() == before and not torch.is_autocast_enabled("cpu")


def test_gates_through_sigmoid_equal_torchs_activations() -> None:
    """From TANH_MIN_ENTRIES on, tanh is 2 sigmoid(2x) - 1: within 3e-7 of torch.tanh, the
    gates' other slices plain sigmoids, and below it torch's own functions exactly."""
    g = torch.randn(64, 4 * 128, generator=torch.Generator().manual_seed(0)) * 6
    for rows in (64, 2):  # 8192 entries in the tanh slice (the sigmoid form), 256 (torch's)
        x = g[:rows].clone()
        lstm._gates_(x, 128)
        ref = torch.cat([g[:rows, :256].sigmoid(), g[:rows, 256:384].tanh(), g[:rows, 384:].sigmoid()], 1)
        assert (x - ref).abs().max() < 3e-7
        if rows == 2:
            assert torch.equal(x, ref)
    c = torch.linspace(-12, 12, 10_000)
    assert (lstm._tanh(c) - c.tanh()).abs().max() < 3e-7
    assert torch.equal(lstm._tanh(c[:100]), c[:100].tanh())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_layer_and_stepper_with_the_sigmoid_tanh_equal_the_module(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every activation through the sigmoid form (TANH_MIN_ENTRIES 0): the fused layer's
    outputs and gradients, and the stepper's step, still the module's."""
    monkeypatch.setattr(lstm, "TANH_MIN_ENTRIES", 0)
    torch.manual_seed(0)
    module = nn.LSTM(5, 7, num_layers=2, batch_first=True).to(dtype)
    x = torch.randn(3, 6, 5, dtype=dtype, requires_grad=True)
    inputs = [x, *module.parameters()]
    tol = {"atol": 2e-6, "rtol": 1e-5} if dtype == torch.float32 else {}

    def loss(y: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return (y**2).sum() + 3 * state[0].sum() + (state[1] ** 3).sum()

    expected = torch.autograd.grad(loss(*module(x)), inputs)
    got = torch.autograd.grad(loss(*lstm_forward(module, x)), inputs)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, **tol)
    z, h = torch.randn(4, 5, dtype=dtype), [torch.randn(3, 4, 7, dtype=dtype) for _ in range(2)]
    got_h, got_c = lstm_stepper(module)(z, h, h)
    _, (ref_h, ref_c) = module(z.repeat(3, 1)[:, None], (torch.stack(h).view(2, 12, 7),) * 2)
    torch.testing.assert_close(torch.stack(got_h).view(2, 12, 7), ref_h, **tol)
    torch.testing.assert_close(torch.stack(got_c).view(2, 12, 7), ref_c, **tol)
