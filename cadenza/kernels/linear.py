"""Large float32 matrix products on the CPU through MKL or oneDNN, whichever is faster here.

Reference: ``torch.addmm`` / ``F.linear`` (MKL on x86 CPU builds of PyTorch).

On an AMD EPYC, MKL takes its AVX2 path whatever the CPU supports (``MKL_ENABLE_INSTRUCTIONS``
and ``MKL_DEBUG_CPU_TYPE`` change nothing), while oneDNN, also inside PyTorch, runs AVX-512:
measured on 2 cores (2026-12-06), a 4096² product at 232 GFLOP/s through ``torch.mm`` and 505
through oneDNN; fft_base's output layer (640 x 2048 by 2048 x 8000) forward and backward 1.9x
faster. On an Intel Xeon MKL is as fast. So each product of at least :data:`MIN_MACS`
multiply-adds takes the faster of the two for its shape on this machine, measured once and
remembered (:mod:`cadenza.kernels.measured`, table ``matmul``):

:func:`mm`
    ``a @ b_t.T (+ bias)``: the product with its second factor given as it would be stored
    for a linear layer, (out, in). Views (transposes) are accepted as they are.
:func:`linear`
    ``F.linear(x, weight, bias)`` whose forward and backward products each go through
    :func:`mm` (:class:`LinearFunction`).
:class:`Linear`
    ``nn.Linear`` whose forward is :func:`linear`: same parameters, same ``state_dict``.

oneDNN is reached through ``torch.ops.mkldnn._linear_pointwise``, a private API behind the
``mkldnn_matmul`` guard (:mod:`cadenza.kernels.guards`). Its products sum in another order than
MKL's: results agree within float32 rounding (about 1e-6 relative). ``CADENZA_KERNELS=on``
takes oneDNN for every product of that size, ``off`` MKL.

Examples
--------
>>> import torch
>>> a, w = torch.ones(2, 3), torch.ones(4, 3)
>>> mm(a, w).shape
torch.Size([2, 4])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cadenza.kernels import guards, measured, mode

__all__ = ["MIN_MACS", "TABLE", "Linear", "LinearFunction", "linear", "mm"]

#: Products of fewer multiply-adds take MKL without asking: below about 4 M, oneDNN's fixed
#: cost per call is a large part of the product's time.
MIN_MACS = 1 << 22
#: The table of :mod:`cadenza.kernels.measured` that keeps the choices.
TABLE = "matmul"
PATHS = ("mkl", "onednn")


def _onednn(a: torch.Tensor, b_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")


def _mkl(a: torch.Tensor, b_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.mm(a, b_t.t()) if bias is None else torch.addmm(bias, a, b_t.t())


def mm(a: torch.Tensor, b_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b_t.T + bias`` for ``a`` (M, K) and ``b_t`` (N, K): through oneDNN where that was
    measured faster for this shape and layout here, else ``torch.addmm``. No autograd."""
    if _path(a, b_t) == "onednn":
        return _onednn(a, b_t, bias)
    return _mkl(a, b_t, bias)


def _path(a: torch.Tensor, b_t: torch.Tensor) -> str:
    """``"mkl"`` or ``"onednn"`` for this product (see :func:`mm`)."""
    n_rows, n_in = a.shape
    n_out = b_t.shape[0]
    if (
        n_rows * n_in * n_out < MIN_MACS
        or a.dtype != torch.float32
        or b_t.dtype != torch.float32
        or a.device.type != "cpu"
        or torch.is_autocast_enabled("cpu")
    ):
        return "mkl"
    kernels = mode()
    if kernels == "off" or not guards.passes("mkldnn_matmul"):
        return "mkl"
    if kernels == "on":
        return "onednn"
    layout = _layout(a) + _layout(b_t)
    if "?" in layout:  # neither contiguous nor a transpose of a contiguous matrix
        return "mkl"
    rows = 1 << (n_rows - 1).bit_length()  # measured for the power of two at or above: the
    # sliding window's products grow by one row per window while the seed is read
    key = f"{rows}x{n_in} @ {n_in}x{n_out} {layout} threads={torch.get_num_threads()}"
    return measured.choose(
        TABLE, key, lambda: _measure((rows, n_in), b_t.shape, layout), "matrix product", PATHS
    )


def _layout(t: torch.Tensor) -> str:
    """``n`` for a contiguous matrix, ``t`` for the transpose of one, ``?`` otherwise."""
    if t.is_contiguous():
        return "n"
    return "t" if t.t().is_contiguous() else "?"


def _measure(a_shape: Any, b_shape: Any, layout: str) -> dict[str, float]:
    """Seconds of one product each way on random factors of these shapes and layouts (the
    fastest of three alternating repetitions after a warm-up); a private generator."""
    g = torch.Generator().manual_seed(0)

    def factor(shape: Any, transposed: bool) -> torch.Tensor:
        if transposed:
            return torch.randn(shape[1], shape[0], generator=g).t()
        return torch.randn(*shape, generator=g)

    a, b_t = factor(a_shape, layout[0] == "t"), factor(b_shape, layout[1] == "t")
    return measured.fastest({"mkl": lambda: _mkl(a, b_t, None), "onednn": lambda: _onednn(a, b_t, None)})


class LinearFunction(torch.autograd.Function):
    """``F.linear`` on 2-D ``x`` with every product through :func:`mm`: ``y = x W^T + b``,
    ``dx = dy W``, ``dW = dy^T x``, ``db`` the column sums of ``dy``."""

    @staticmethod
    def forward(ctx: Any, x, weight, bias):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return mm(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, dy):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = mm(dy, weight.t())
        if ctx.needs_input_grad[1]:
            dw = mm(dy.t(), x.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum(0)
        return dx, dw, db


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; a large float32 CPU product goes through
    :class:`LinearFunction` (each of its products MKL or oneDNN, whichever is faster here)."""
    if (
        x.device.type != "cpu"
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or x.dim() < 2
        or x.numel() // x.shape[-1] * weight.shape[0] * weight.shape[1] < MIN_MACS
        or torch.is_autocast_enabled("cpu")
        or mode() == "off"
    ):
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])
    return LinearFunction.apply(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` whose product takes :func:`linear`: MKL or oneDNN, whichever is faster here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
