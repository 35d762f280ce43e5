"""WaveNet's cached generation step compiled with numba (``wavenet`` generation ``mode=fast``).

Reference: :meth:`cadenza.models.wavenet.Model._cached_loop` (``mode=cached``), the step of
fast WaveNet generation (Paine et al. 2016) in torch, itself checked against the plain
forward pass (``mode=naive``). This kernel is the same step as one compiled loop over all
samples and layers with preallocated buffers, which removes the per-sample Python overhead
(about 18x ``cached`` at paper size on one core). It runs when the kernels are on, the model
is on the CPU and numba's guard passes; otherwise ``mode=fast`` runs as ``mode=cached``.

Examples
--------
>>> available(torch.device("cpu")) == (enabled() and guards.passes("numba"))
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cadenza.kernels import enabled, guards

__all__ = ["available", "compiled", "run"]

_COMPILED: list[Any] = []


def available(device: torch.device) -> bool:
    """Whether :func:`run` applies on ``device``: kernels on, the CPU, numba's guard passing."""
    return enabled() and device.type == "cpu" and guards.passes("numba")


def compiled() -> Any:
    """The compiled loop (compiled, or loaded from numba's disk cache, on first use).

    Raises RuntimeError without numba: numba is a declared dependency.
    """
    if not _COMPILED:
        numba = guards.load_numba()
        if numba is None:
            raise RuntimeError("numba is missing or broken (see the warning of the 'numba' kernel guard)")
        _COMPILED.append(numba.njit(cache=True, fastmath=True)(_fast_loop))
    return _COMPILED[0]


def run(
    classes: torch.Tensor,
    T0: int,
    ring: torch.Tensor,
    dilations: list[int],
    weights: list[torch.Tensor],
    u: torch.Tensor,
    temperature: float,
    logits: torch.Tensor | None,
) -> None:
    """Fill ``classes`` (B, T) from ``T0`` on, in place, as ``Model._cached_loop`` does.

    ``ring`` holds the layers' queues, ``weights`` the step's weights of
    ``Model._step_weights`` (contiguous float32 CPU tensors), ``u`` (B, T - T0) the uniforms of
    the draws; ``logits`` (B, T - T0, C), when given, receives the logits of every draw.
    """
    compiled()(
        classes.numpy(), T0, ring.numpy(), np.array(dilations, np.int64),
        *[a.numpy() for a in weights], u.cpu().contiguous().numpy(), float(temperature),
        logits.numpy() if logits is not None else np.zeros((0, 0, 0), np.float32),
    )  # fmt: skip


def _fast_loop(
    classes,
    T0,
    ring,
    dilations,
    e0,
    e1,
    b_in,
    dil,
    bias,
    res,
    res_b,
    skip,
    skip_b,
    h1,
    hb1,
    h2,
    hb2,
    u,
    temperature,
    logits,
):  # type: ignore[no-untyped-def]
    """The cached step of ``Model._cached_loop`` as explicit loops (numba compiles it).

    Matrix-vector products are written as ``y += x[k] * W[k, :]`` over rows of ``W`` laid out
    ``(in, out)``, which the compiler vectorises; each weight row is read once per step for
    every stream of the batch.
    """
    B, T = classes.shape
    L = dilations.shape[0]
    R = e0.shape[1]
    D = dil.shape[2] // 2
    S = skip.shape[1]
    C = h2.shape[1]
    want_logits = logits.shape[0] > 0
    x = np.empty((B, R), np.float32)
    h = np.empty((B, 2 * D), np.float32)
    zs = np.empty((B, L * D), np.float32)
    s = np.empty((B, S), np.float32)
    a = np.empty((B, S), np.float32)
    lg = np.empty((B, C), np.float32)
    cdf = np.empty(C, np.float64)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    offsets = np.zeros(L, np.int64)
    for i in range(1, L):
        offsets[i] = offsets[i - 1] + dilations[i - 1]
    for t in range(T0 - 1, T - 1):
        for b in range(B):
            for r in range(R):
                x[b, r] = e1[classes[b, t], r] + b_in[r]
                if t > 0:
                    x[b, r] += e0[classes[b, t - 1], r]
        for i in range(L):
            slot = offsets[i] + t % dilations[i]
            for b in range(B):
                for j in range(2 * D):
                    h[b, j] = bias[i, b, j]
            for k in range(R):  # past tap (ring) and current tap (x)
                for b in range(B):
                    xp = ring[slot, b, k]
                    xc = x[b, k]
                    for j in range(2 * D):
                        h[b, j] += xp * dil[i, k, j] + xc * dil[i, R + k, j]
            for b in range(B):
                for r in range(R):
                    ring[slot, b, r] = x[b, r]
                for j in range(D):
                    zs[b, i * D + j] = np.tanh(h[b, j]) / (one + np.exp(-h[b, D + j]))
            if i < L - 1:
                for b in range(B):
                    for r in range(R):
                        x[b, r] += res_b[i, r]
                for k in range(D):
                    for b in range(B):
                        zk = zs[b, i * D + k]
                        for r in range(R):
                            x[b, r] += zk * res[i, k, r]
        for b in range(B):
            for j in range(S):
                s[b, j] = skip_b[j]
        for k in range(L * D):
            for b in range(B):
                zk = zs[b, k]
                for j in range(S):
                    s[b, j] += zk * skip[k, j]
        for b in range(B):
            for j in range(S):
                a[b, j] = hb1[j]
        for k in range(S):
            for b in range(B):
                sk = max(s[b, k], zero)
                for j in range(S):
                    a[b, j] += sk * h1[k, j]
        for b in range(B):
            for j in range(C):
                lg[b, j] = hb2[j]
        for k in range(S):
            for b in range(B):
                ak = max(a[b, k], zero)
                for j in range(C):
                    lg[b, j] += ak * h2[k, j]
        n = t + 1 - T0
        for b in range(B):
            if want_logits:
                for j in range(C):
                    logits[b, n, j] = lg[b, j]
            best = 0
            for j in range(C):
                if lg[b, j] > lg[b, best]:
                    best = j
            if temperature == 0:
                classes[b, t + 1] = best
                continue
            top = np.float64(lg[b, best]) / temperature
            acc = 0.0
            for j in range(C):  # a running sum, in the order of torch.cumsum
                acc += np.exp(np.float64(lg[b, j]) / temperature - top)
                cdf[j] = acc
            target = u[b, n] * cdf[C - 1]
            k = C - 1
            for j in range(C):
                if cdf[j] > target:
                    k = j
                    break
            classes[b, t + 1] = k
