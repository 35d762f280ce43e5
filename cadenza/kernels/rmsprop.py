"""RMSprop with the whole CPU update in one pass over memory.

``torch.optim.RMSprop`` updates a parameter in five passes (weight decay, ``mul_``,
``addcmul_``, ``sqrt``, ``addcdiv_``), each reading or writing a tensor as large as the
parameter. At paper 000's size (100 M parameters) that is memory-bound work of about
0.15 s a step on two cores. :class:`RMSprop` does the same update element by element in
one compiled loop (numba), split over the intra-op threads:
about three times faster. It is ``torch.optim.RMSprop`` in every other way: the same
arguments, the same state (``step``, ``square_avg``) and checkpoints either can load.

Reference: ``torch.optim.RMSprop.step``. The fast path takes plain RMSprop (no momentum, not
centred, not maximising) on dense, contiguous float32 CPU tensors while the kernels are on (see
:mod:`cadenza.kernels`) and numba's guard passes; anything else goes through
``torch.optim.RMSprop.step`` unchanged.

Examples
--------
>>> import torch
>>> p = torch.nn.Parameter(torch.ones(4))
>>> opt = RMSprop([p], lr=0.1)
>>> p.grad = torch.ones(4)
>>> _ = opt.step()
>>> round(float(p.detach()[0]), 4)  # 1 - 0.1 * 1 / (sqrt(1 - 0.99) + 1e-8)
0.0
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from cadenza.kernels import enabled, guards

#: Elements below which a tensor is updated in one piece rather than split over threads.
_SPLIT_MIN = 1 << 18
_kernel: Any = None
#: The worker pool and its number of threads (kept here: the executor's own count is private).
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _compiled() -> Any:
    """The numba kernel, compiled on first use; None when numba's guard fails."""
    global _kernel
    if _kernel is None:
        numba = guards.load_numba()
        if numba is None:
            _kernel = False
            return None

        # error_model="numpy": no zero-division check, so the loops vectorise.
        @numba.njit(nogil=True, cache=True, error_model="numpy")
        def update(p, g, v, lr, alpha, one_minus_alpha, eps, weight_decay):  # pragma: no cover - compiled
            if weight_decay:
                for i in range(p.size):
                    gi = g[i] + weight_decay * p[i]
                    vi = alpha * v[i] + one_minus_alpha * (gi * gi)
                    v[i] = vi
                    p[i] -= lr * (gi / (np.sqrt(vi) + eps))
            else:
                for i in range(p.size):
                    gi = g[i]
                    vi = alpha * v[i] + one_minus_alpha * (gi * gi)
                    v[i] = vi
                    p[i] -= lr * (gi / (np.sqrt(vi) + eps))

        _kernel = update
    return _kernel or None


def _executor(n_threads: int) -> ThreadPoolExecutor:
    """A pool of ``n_threads`` workers, rebuilt when the count changes."""
    global _pool, _pool_size
    if _pool is None or _pool_size != n_threads:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(n_threads, thread_name_prefix="cadenza-rmsprop")
        _pool_size = n_threads
    return _pool


class RMSprop(torch.optim.RMSprop):
    """``torch.optim.RMSprop`` whose plain CPU update is one fused, multi-threaded pass."""

    def _fast(self) -> bool:
        """Whether this step takes the fused path: kernels on, numba there, plain RMSprop, float32 CPU."""
        if not enabled() or _compiled() is None:
            return False
        for group in self.param_groups:
            if group["momentum"] or group["centered"] or group["maximize"] or group["differentiable"]:
                return False
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if p.device.type != "cpu" or p.dtype != torch.float32 or g.dtype != torch.float32:
                    return False
                if g.is_sparse or not p.is_contiguous() or not g.is_contiguous():
                    return False
        return True

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if not self._fast():
            return super().step(closure)
        kernel = _compiled()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        jobs = []
        for group in self.param_groups:
            lr, alpha, eps, wd = group["lr"], group["alpha"], group["eps"], group["weight_decay"]
            scalars = tuple(np.float32(s) for s in (lr, alpha, 1 - alpha, eps, wd))
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                jobs.append(
                    (
                        p.view(-1).numpy(),
                        p.grad.view(-1).numpy(),
                        state["square_avg"].view(-1).numpy(),
                        scalars,
                    )
                )
        n_threads = max(1, torch.get_num_threads())
        pieces = []
        for p, g, v, scalars in jobs:
            n = p.size
            parts = n_threads if n >= _SPLIT_MIN * n_threads else 1
            bounds = [n * k // parts for k in range(parts + 1)]
            pieces += [(p[a:b], g[a:b], v[a:b], scalars) for a, b in zip(bounds, bounds[1:])]
        if n_threads == 1 or len(pieces) == 1:
            for p, g, v, scalars in pieces:
                kernel(p, g, v, *scalars)
        else:
            list(_executor(n_threads).map(lambda job: kernel(job[0], job[1], job[2], *job[3]), pieces))
        return loss
