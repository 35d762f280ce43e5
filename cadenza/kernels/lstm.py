"""The LSTM on the CPU: a fused layer for training, one step shared by many windows, cheap dropout.

Reference: ``nn.LSTM`` (batch first, gates in PyTorch's order i, f, g, o) and ``nn.Dropout``.

:func:`lstm_forward`
    ``lstm(x, state)`` through :class:`FusedLSTMLayer` on the CPU: the input projection
    ``x W_ih^T + b`` and, in the backward pass, ``dW_ih``, ``dW_hh`` and ``dx`` are one matrix
    product each over all B x T rows; only ``h W_hh^T`` and its gradient run step by step.
    Where MKL runs its AVX-512 path PyTorch's own CPU LSTM reached about half MKL's rate at
    paper 000's size; on an AMD EPYC, where MKL takes its AVX2 path and oneDNN's RNN primitive
    does not, ``torch.lstm`` is often the faster: so each layer runs whichever of the two
    :mod:`cadenza.kernels.lstm_choice` measured faster for its shape here (README, Performance).
    ``h W_hh^T`` goes through oneDNN with ``W_hh`` packed once per call (about 1.3x MKL for 16
    rows) while its guard (:mod:`cadenza.kernels.guards`) passes. CUDA keeps cuDNN.
:func:`lstm_stepper`
    One time step of a multi-layer LSTM for W windows that read the same input: the first
    layer's input projection is computed once, not W times (the pipelined sliding window of the
    ``fft_*`` models), and the step is written out with its weights gathered once rather than
    a module call per step (seq2seq's free-running decoder, W = 1).
:func:`bf16_autocast`
    ``torch.autocast(device, bfloat16)``, and on a CPU whose oneDNN has no bf16 LSTM (AVX2
    machines: "could not create a primitive descriptor for the LSTM forward propagation
    primitive") oneDNN off inside it, so that ``nn.LSTM`` runs in float32 there instead of failing.
:class:`Dropout`
    ``nn.Dropout`` whose CPU training mask comes from one ``torch.rand`` draw (half the time of
    ``bernoulli_``); the fused LSTM drops between layers the same way.

With the kernels off (``CADENZA_KERNELS=off``, see :mod:`cadenza.kernels`) each is its reference.

Examples
--------
>>> import torch
>>> from torch import nn
>>> lstm = nn.LSTM(3, 4, batch_first=True)
>>> y, (h, c) = lstm_forward(lstm, torch.zeros(2, 5, 3))
>>> y.shape, h.shape
(torch.Size([2, 5, 4]), torch.Size([1, 2, 4]))
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from cadenza.kernels import enabled, guards, lstm_choice, mode
from cadenza.kernels.linear import mm

__all__ = [
    "Dropout",
    "FusedLSTMLayer",
    "bf16_autocast",
    "cpu_bf16_lstm_supported",
    "dropout_always",
    "linear_for_rows",
    "lstm_forward",
    "lstm_stepper",
]

State = tuple[torch.Tensor, torch.Tensor]
#: One tensor per layer: a stepper's states.
Layers = Sequence[torch.Tensor]


@functools.cache
def cpu_bf16_lstm_supported() -> bool:
    """Whether ``nn.LSTM`` runs under CPU bf16 autocast here: oneDNN's bf16 LSTM needs AVX-512
    (or a CPU with native bf16); on an AVX2 machine it raises instead. Tried once, on 1 x 1 x 1."""
    lstm = nn.LSTM(1, 1, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 1, 1))
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def _onednn_off() -> Iterator[None]:
    was = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(was)


@contextlib.contextmanager
def bf16_autocast(device_type: str) -> Iterator[None]:
    """``torch.autocast(device_type, dtype=torch.bfloat16)``; on a CPU without oneDNN's bf16
    LSTM (:func:`cpu_bf16_lstm_supported`), with oneDNN off inside it: PyTorch's own LSTM then
    runs in float32, where oneDNN's would fail, and the other layers keep their bf16 rules."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device_type=device_type, dtype=torch.bfloat16))
        if device_type == "cpu" and not cpu_bf16_lstm_supported():
            stack.enter_context(_onednn_off())
        yield


def lstm_forward(lstm: nn.LSTM, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
    """``lstm(x, state)`` for a batch-first ``x`` (B, T, I): off CUDA, layer by layer, each layer
    :class:`FusedLSTMLayer` or PyTorch's ``torch.lstm``, whichever :mod:`.lstm_choice` measured
    faster for its shape here (always the fused one with ``CADENZA_KERNELS=on``), with
    :class:`Dropout`'s masks between them; the module itself on CUDA, for options the kernel
    does not cover, or when off.
    Under CPU bf16 autocast where oneDNN has no bf16 LSTM, the module runs in float32."""
    if not _is_fusable(lstm, x):
        if torch.is_autocast_enabled("cpu") and not cpu_bf16_lstm_supported():
            with _onednn_off():
                return lstm(x, state)
        return lstm(x, state)
    n_batch = x.shape[0]
    zeros = x.new_zeros(lstm.num_layers, n_batch, lstm.hidden_size)
    h0, c0 = state if state is not None else (zeros, zeros)
    hs, cs = [], []
    for layer in range(lstm.num_layers):
        if layer and lstm.dropout and lstm.training:
            x = _CPUDropout.apply(x, lstm.dropout) if lstm.dropout < 1 else torch.zeros_like(x)
        w_ih, w_hh, b_ih, b_hh = (getattr(lstm, f"{name}_l{layer}") for name in _PARAMS)
        if _faster(x, w_ih, w_hh, lstm.training) == "fused":
            x, h, c = FusedLSTMLayer.apply(x, w_ih, w_hh, b_ih + b_hh, h0[layer], c0[layer])
        else:  # PyTorch's own layer was the faster here (oneDNN's RNN on an AMD EPYC)
            x, h, c = lstm_choice.torch_layer(x, w_ih, w_hh, b_ih, b_hh, h0[layer], c0[layer], lstm.training)
        hs.append(h)
        cs.append(c)
    return x, (torch.stack(hs), torch.stack(cs))


_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _faster(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, training: bool) -> str:
    """``"fused"`` with ``CADENZA_KERNELS=on``; with ``auto``, the layer measured faster here."""
    if mode() == "on":
        return "fused"
    return lstm_choice.choose(lstm_choice.shape_of(x, w_ih, w_hh, training))


def _is_fusable(lstm: nn.LSTM, x: Any) -> bool:
    """Whether the fused layer covers this call: a plain batch-first LSTM, off CUDA, in float32
    (or float64) and outside CPU autocast (``train.precision=bf16`` on a CPU runs ``nn.LSTM``,
    whose bf16 the autocast rules handle; the fused backward mixed the two dtypes)."""
    plain = lstm.batch_first and lstm.bias and not lstm.bidirectional and not lstm.proj_size
    return (
        plain
        and isinstance(x, torch.Tensor)
        and x.dim() == 3
        and x.device.type != "cuda"
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
        and enabled()
    )


def lstm_stepper(lstm: nn.LSTM) -> Callable[[torch.Tensor, Layers, Layers], tuple[Layers, Layers]]:
    """``step(z, h, c) -> (h, c)``: one time step of ``lstm`` for W windows whose first layer
    reads the same input, with the weights gathered once.

    ``z`` (n, I) is that input; ``h``, ``c`` hold one state per layer, (W, n, H) or (n, H),
    and come back as new lists of the same shapes. The weights are read when the stepper is
    made: make a new one after changing them. Products of a few rows (n streams) with a large
    weight go through :func:`linear_for_rows`, made once per row count.
    """
    if not enabled():
        return lambda z, h, c: _module_step(lstm, z, h, c)
    weights = []  # per layer: W_ih, W_hh and W_hh^T (views), b_ih + b_hh
    for layer in range(lstm.num_layers):
        w_ih, w_hh, b = _weights(lstm, layer)
        weights.append((w_ih, w_hh, w_hh.t(), b))
    hidden = lstm.hidden_size
    # products of the n streams' rows (the first layer's input, one window's state), made once
    # per layer and row count; the rows of W windows (deeper layers) are many: addmm
    input_products: dict[tuple[int, int], Callable[[torch.Tensor], torch.Tensor]] = {}
    packed_hh: dict[tuple[int, int], Callable[[torch.Tensor], torch.Tensor] | None] = {}

    def input_product(layer: int, x: torch.Tensor, n: int) -> torch.Tensor:  # x W_ih^T + b
        w_ih, _, _, b = weights[layer]
        if x.shape[0] != n:
            return mm(x, w_ih, b)  # many rows: MKL or oneDNN, whichever is faster here
        if (layer, n) not in input_products:
            input_products[layer, n] = linear_for_rows(w_ih, b, n)
        return input_products[layer, n](x)

    def step(z: torch.Tensor, h: Layers, c: Layers) -> tuple[Layers, Layers]:
        n, shape = z.shape[0], h[0].shape  # h[layer]: (W, n, H) or (n, H)
        if len(shape) > 2:
            h, c = [s.reshape(-1, hidden) for s in h], [s.reshape(-1, hidden) for s in c]  # (rows, H)
        n_rows = h[0].shape[0]
        hs, cs = [], []
        x = z
        for layer, ((_, w_hh, w_hh_t, _), h_layer, c_layer) in enumerate(zip(weights, h, c)):
            xw = input_product(layer, x, n)  # (n, 4H) in the first layer: once for all W windows
            if n_rows == n:  # one window: as few operations as possible
                key = (layer, n)
                if key not in packed_hh:
                    packed_hh[key] = _packed(w_hh, n)
                rec = packed_hh[key]
                g = torch.addmm(xw, h_layer, w_hh_t) if rec is None else rec(h_layer).add_(xw)  # (n, 4H)
            else:  # W windows: the input part added in place, window by window
                g = mm(h_layer, w_hh).view(-1, *xw.shape).add_(xw).view(n_rows, 4 * hidden)
            _gates_(g, hidden)
            i, f, gg, o = g.chunk(4, 1)
            c_layer = f.mul(c_layer).addcmul_(i, gg)
            x = _tanh(c_layer).mul_(o)  # (rows, H), the next layer's input
            hs.append(x)
            cs.append(c_layer)
        if len(shape) > 2:
            return [s.view(shape) for s in hs], [s.view(shape) for s in cs]
        return hs, cs

    return step


#: Below this many entries PyTorch's ``tanh`` is the faster; from it on, ``2 sigmoid(2x) - 1``.
TANH_MIN_ENTRIES = 1 << 13


def _gates_(g: torch.Tensor, hidden: int) -> None:
    """The activations of an LSTM's gates ``g`` (rows, 4H) in place: sigmoid, sigmoid, tanh,
    sigmoid. From :data:`TANH_MIN_ENTRIES` entries on, the tanh is ``2 sigmoid(2x) - 1`` (within
    2e-7): on an AMD EPYC PyTorch's CPU ``tanh`` took 4-16x the time of ``sigmoid`` per entry
    (147 us for a strided (320, 128) slice, where the whole (320, 512) ``sigmoid_`` took 19)."""
    gg = g[:, 2 * hidden : 3 * hidden]
    if gg.numel() < TANH_MIN_ENTRIES:
        g[:, : 2 * hidden].sigmoid_()
        gg.tanh_()
        g[:, 3 * hidden :].sigmoid_()
        return
    gg.mul_(2)
    g.sigmoid_()
    gg.mul_(2).sub_(1)


def _tanh(x: torch.Tensor) -> torch.Tensor:
    """``torch.tanh(x)``, as ``2 sigmoid(2x) - 1`` from :data:`TANH_MIN_ENTRIES` entries on."""
    if x.numel() < TANH_MIN_ENTRIES:
        return torch.tanh(x)
    return torch.mul(x, 2).sigmoid_().mul_(2).sub_(1)


#: :func:`linear_for_rows` packs weights of at least this many entries for at least
#: :data:`PACK_MIN_ROWS` rows; below either, oneDNN's fixed cost per call (about 18 us) exceeds
#: what packing saves (measured on one core: 8 rows of a 1024 x 512 weight 119 us with addmm,
#: 110 us packed; 8000 x 128: 458 us and 249 us; 2 rows of it: 149 us and 188 us).
PACK_MIN_ENTRIES = 1 << 19
PACK_MIN_ROWS = 4


def linear_for_rows(
    weight: torch.Tensor, bias: torch.Tensor | None, n_rows: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> x W^T + b`` (``F.linear``) for ``x`` of ``n_rows`` rows, ``weight`` (out, in) reused
    on many calls (generation's products, one call per step).

    MKL's ``addmm`` copies (packs) a large weight on every call of a few rows: at 8 rows it
    took 3x the time of one row for an 8000 x 512 weight, where reading the weight once costs
    1.3x. So a float32 CPU weight of at least :data:`PACK_MIN_ENTRIES` entries is packed once
    for oneDNN (private API, behind its guard in :mod:`cadenza.kernels.guards`) for at least
    :data:`PACK_MIN_ROWS` rows when the kernels are on; fewer rows (MKL's matrix-vector
    kernels), small weights, other devices and dtypes take ``torch.addmm``, as ``F.linear``
    does.
    """
    packed = _packed(weight, n_rows)
    w_t = weight.detach().t()
    if packed is not None:
        if bias is None:
            return packed
        b = bias.detach()
        return lambda x: packed(x).add_(b)
    if bias is None:
        return lambda x: torch.mm(x, w_t)
    return lambda x: torch.addmm(bias, x, w_t)


def _packed(weight: torch.Tensor, n_rows: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``x -> x W^T`` with ``weight`` packed once for oneDNN, where :func:`linear_for_rows` packs; else None."""
    big = weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.numel() >= PACK_MIN_ENTRIES
    if n_rows >= PACK_MIN_ROWS and big and enabled() and guards.passes("mkldnn_linear"):
        return guards.mkldnn_linear(weight.detach(), n_rows)
    return None


def _module_step(lstm: nn.LSTM, z: torch.Tensor, h: Layers, c: Layers) -> tuple[Layers, Layers]:
    """The reference of a stepper's step: ``lstm`` over every window's copy of ``z``."""
    shape, hidden = h[0].shape, h[0].shape[-1]
    n_rows = h[0].numel() // hidden
    x = z.expand(n_rows // z.shape[0], *z.shape).reshape(n_rows, 1, z.shape[1])  # (rows, T = 1, I)
    state = (torch.stack(list(h)).view(-1, n_rows, hidden), torch.stack(list(c)).view(-1, n_rows, hidden))
    _, (h_new, c_new) = lstm(x if lstm.batch_first else x.transpose(0, 1), state)
    return [s.view(shape) for s in h_new], [s.view(shape) for s in c_new]


class FusedLSTMLayer(torch.autograd.Function):
    """One LSTM layer over ``x`` (B, T, I) from state ``h0``, ``c0`` (B, H): returns the outputs
    (B, T, H) and the final ``h``, ``c``; ``b`` is ``b_ih + b_hh``."""

    @staticmethod
    def forward(ctx: Any, x, w_ih, w_hh, b, h0, c0):  # type: ignore[override]
        n_batch, n_steps, _ = x.shape
        hidden = w_hh.shape[1]
        gates = mm(x.reshape(n_batch * n_steps, -1), w_ih, b).view(n_batch, n_steps, 4 * hidden)
        hs = x.new_empty(n_batch, n_steps + 1, hidden)  # hs[:, t + 1] = h_t, hs[:, 0] = h0
        cs = x.new_empty(n_batch, n_steps + 1, hidden)
        hs[:, 0], cs[:, 0] = h0, c0
        recurrent = _recurrent_product(w_hh, n_batch)
        for t in range(n_steps):
            g = gates[:, t]  # (B, 4H), becomes the activations (kept for the backward pass)
            g.add_(recurrent(hs[:, t]))
            _gates_(g, hidden)
            i, f, gg, o = g.chunk(4, 1)
            c = cs[:, t + 1]
            torch.mul(f, cs[:, t], out=c)
            c.addcmul_(i, gg)
            torch.mul(o, _tanh(c), out=hs[:, t + 1])
        ctx.save_for_backward(x, w_ih, w_hh, gates, hs, cs)
        return hs[:, 1:], hs[:, n_steps].clone(), cs[:, n_steps].clone()

    @staticmethod
    def backward(ctx: Any, dy, dh_n, dc_n):  # type: ignore[override]
        x, w_ih, w_hh, acts, hs, cs = ctx.saved_tensors
        n_batch, n_steps, _ = x.shape
        hidden = w_hh.shape[1]
        dgates = torch.empty_like(acts)  # (B, T, 4H)
        dh = dh_n.clone() if dh_n is not None else x.new_zeros(n_batch, hidden)
        dc = dc_n.clone() if dc_n is not None else x.new_zeros(n_batch, hidden)
        w_hh_t = w_hh.t().contiguous()  # (H, 4H)
        for t in range(n_steps - 1, -1, -1):
            if dy is not None:
                dh = dh + dy[:, t]
            i, f, gg, o = acts[:, t].chunk(4, 1)
            tanh_c = _tanh(cs[:, t + 1])
            di, df, dg, do = dgates[:, t].chunk(4, 1)
            torch.mul(dh, tanh_c, out=do).mul_(o * (1 - o))
            dc = dc + dh * o * (1 - tanh_c * tanh_c)
            torch.mul(dc, gg, out=di).mul_(i * (1 - i))
            torch.mul(dc, cs[:, t], out=df).mul_(f * (1 - f))
            torch.mul(dc, i, out=dg).mul_(1 - gg * gg)
            dc = dc * f
            dh = torch.mm(w_hh_t, dgates[:, t].t()).t()  # (B, H)
        d_all = dgates.view(n_batch * n_steps, 4 * hidden)
        dx = dw_ih = dw_hh = db = None
        if ctx.needs_input_grad[0]:
            dx = mm(d_all, w_ih.t()).view_as(x)
        if ctx.needs_input_grad[1]:
            dw_ih = mm(d_all.t(), x.reshape(n_batch * n_steps, -1).t())
        if ctx.needs_input_grad[2]:
            dw_hh = mm(d_all.t(), hs[:, :n_steps].reshape(n_batch * n_steps, hidden).t())
        if ctx.needs_input_grad[3]:
            db = d_all.sum(0)
        return dx, dw_ih, dw_hh, db, dh, dc


def _recurrent_product(w: torch.Tensor, n_rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``h -> h W^T`` for ``n_rows`` rows at a time: oneDNN with ``w`` packed once where its
    guard passes, else ``torch.mm``."""
    if w.dtype == torch.float32 and w.device.type == "cpu" and guards.passes("mkldnn_linear"):
        return guards.mkldnn_linear(w, n_rows)
    return lambda h: torch.mm(w, h.t()).t()  # MKL is faster this way round for few rows


def _weights(lstm: nn.LSTM, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_ih, W_hh, b_ih + b_hh)`` of one layer."""
    b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
    return getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}"), b


class _CPUDropout(torch.autograd.Function):
    """Inverted dropout from one ``torch.rand`` draw: twice as fast as ``bernoulli_`` on the CPU."""

    @staticmethod
    def forward(ctx: Any, x, p):  # type: ignore[override]
        keep = torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))  # 0 or 1 / (1 - p)
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx: Any, dy):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return dy * keep, None


def dropout_always(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout whatever the mode (generation that keeps its dropout on), without
    autograd: one ``torch.rand`` draw, 3.4x faster than ``F.dropout`` on the CPU for (8, 8000)."""
    if p <= 0.0:
        return x
    return x * torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout``; in training on the CPU (kernels on), its mask is drawn by one ``torch.rand``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and 0.0 < self.p < 1.0 and x.device.type == "cpu" and not self.inplace and enabled():
            return _CPUDropout.apply(x, self.p)
        return super().forward(x)
