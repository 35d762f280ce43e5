"""Which LSTM layer is faster on this machine, cadenza's fused layer or PyTorch's own: measured once.

Neither path wins everywhere. On an Intel Xeon whose MKL takes its AVX-512 path, the fused layer
(:class:`~cadenza.kernels.lstm.FusedLSTMLayer`) trained paper 000's models 1.1-1.7x faster than
``nn.LSTM``; on an AMD EPYC (MKL on AVX2, oneDNN's RNN primitive unaffected) ``nn.LSTM`` was the
faster at every shape measured, by 1.2x at paper size and 4x at the tiny one, until the fused
layer's products went through oneDNN too (:mod:`cadenza.kernels.linear`); now each wins some
shapes there (README, Performance). So with ``CADENZA_KERNELS=auto`` (the default) :func:`choose` times one forward
and backward pass of both for the layer's shape, on random weights of that shape, and keeps the
faster:

- per shape: batch, steps, input and hidden size, dtype, which gradients are needed, training
  mode and the number of torch threads (a choice for 2 threads says little about 16);
- once per process, and across processes in cadenza's cache directory, filed under the CPU's
  model name and torch's version (:mod:`cadenza.kernels.measured`);
- with a private random generator: measuring draws nothing from torch's global one, so a run
  that measures follows the same random path as one that read the choice from the cache.

The two paths compute the same function (gradients included) within float rounding, and the
dropout between layers is cadenza's either way, so a resumed run that takes the other path
(another machine, a cleared cache) continues the same training. ``cadenza doctor`` lists the
choices made here. ``CADENZA_KERNELS=on`` always takes the fused layer, ``off`` the module.

Examples
--------
>>> key = Shape(16, 40, 8000, 128, "float32", "weights", True, 2)
>>> key.text()
'B16 T40 8000->128 float32 grad=weights train threads=2'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from cadenza.kernels import measured

__all__ = ["PATHS", "TABLE", "Shape", "choices", "choose", "measure", "torch_layer"]

#: The two LSTM layers: cadenza's fused layer and PyTorch's ``torch.lstm`` (what ``nn.LSTM`` runs).
PATHS = ("fused", "torch")
#: The table of :mod:`cadenza.kernels.measured` that keeps the choices.
TABLE = "lstm"
#: Timed repetitions of each path after one warm-up call each (the fastest is kept), fewer
#: where one call of both already takes :data:`BUDGET_S` seconds (paper size on 2 cores).
REPS = 3
BUDGET_S = 2.0


@dataclasses.dataclass(frozen=True)
class Shape:
    """What a choice is made for: one LSTM layer's call."""

    batch: int
    steps: int
    n_in: int
    hidden: int
    dtype: str  # "float32" or "float64"
    grad: str  # "none", "weights" (the input needs none) or "all"
    training: bool
    threads: int

    def text(self) -> str:
        mode = "train" if self.training else "eval"
        return (
            f"B{self.batch} T{self.steps} {self.n_in}->{self.hidden} {self.dtype} "
            f"grad={self.grad} {mode} threads={self.threads}"
        )


def shape_of(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, training: bool) -> Shape:
    """The :class:`Shape` of a layer's call on ``x`` (B, T, I) with these weights, now."""
    needs = torch.is_grad_enabled() and (w_ih.requires_grad or w_hh.requires_grad or x.requires_grad)
    grad = "none" if not needs else ("all" if x.requires_grad else "weights")
    batch, steps, n_in = x.shape
    dtype = str(x.dtype).removeprefix("torch.")
    return Shape(batch, steps, n_in, w_hh.shape[1], dtype, grad, training, torch.get_num_threads())


def choose(shape: Shape) -> str:
    """``"fused"`` or ``"torch"``: the faster layer for ``shape`` here, measured on first need."""
    return measured.choose(TABLE, shape.text(), lambda: measure(shape), "LSTM layer", PATHS)


def measure(shape: Shape) -> dict[str, float]:
    """Seconds of one call of each path (forward, and backward where ``shape.grad`` asks for it)
    on random weights and inputs of ``shape``: the fastest of up to :data:`REPS` alternating
    repetitions after a warm-up. Draws from a private generator only."""
    from cadenza.kernels.lstm import FusedLSTMLayer

    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, shape.dtype)
    hidden, n_in, batch = shape.hidden, shape.n_in, shape.batch
    bound = hidden**-0.5

    def uniform(*size: int) -> torch.Tensor:
        return (torch.rand(*size, generator=g, dtype=dtype) * 2 - 1) * bound

    w_ih, w_hh, b_ih, b_hh = (
        uniform(4 * hidden, n_in),
        uniform(4 * hidden, hidden),
        uniform(4 * hidden),
        uniform(4 * hidden),
    )
    x = torch.randn(batch, shape.steps, n_in, generator=g, dtype=dtype)
    h0 = torch.zeros(batch, hidden, dtype=dtype)
    c0 = torch.zeros(batch, hidden, dtype=dtype)
    weights = [w_ih, w_hh, b_ih, b_hh]
    if shape.grad != "none":
        for w in weights:
            w.requires_grad_(True)
        x.requires_grad_(shape.grad == "all")
    wants = [t for t in (x, *weights) if t.requires_grad]

    def run(layer: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> Callable[[], None]:
        def call() -> None:
            with torch.set_grad_enabled(shape.grad != "none"):
                y, h, c = layer()
                if wants:
                    torch.autograd.grad(y.sum() + h.sum() + c.sum(), wants)

        return call

    calls = {
        "fused": run(lambda: FusedLSTMLayer.apply(x, w_ih, w_hh, b_ih + b_hh, h0, c0)),
        "torch": run(lambda: torch_layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, shape.training)),
    }
    return measured.fastest(calls, REPS, BUDGET_S)


def torch_layer(
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    training: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch-first layer through ``torch.lstm``, as ``nn.LSTM`` calls it: ``(y, h, c)``.

    ``y`` is made contiguous (``torch.lstm`` returns a transposed (T, B, H) buffer): dropout's
    mask, drawn by ``torch.rand_like`` in memory order, is then the fused layer's mask."""
    y, h, c = torch.lstm(
        x, (h0[None], c0[None]), [w_ih, w_hh, b_ih, b_hh], True, 1, 0.0, training, False, True
    )
    return y.contiguous(), h[0], c[0]


def choices() -> dict[str, str]:
    """The choices known for this machine (shape text -> path), the process's and the cache's."""
    return measured.choices(TABLE)


def forget() -> None:
    """Forget this process's choices (the cache file stays): the next call reads or measures."""
    measured.forget()
