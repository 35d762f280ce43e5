"""WaveNet's cached generation step compiled with numba (``wavenet`` generation ``mode=fast``).

Reference: :meth:`cadenza.models.wavenet.Model._cached_loop` (``mode=cached``), the step of
fast WaveNet generation (Paine et al. 2016) in torch, itself checked against the plain
forward pass (``mode=naive``). This kernel is the same step as one compiled loop over all
samples and layers with preallocated buffers, which removes the per-sample Python overhead.
It runs when the kernels are on, the model is on the CPU and numba's guard passes; otherwise
``mode=fast`` runs as ``mode=cached``.

The streams of a step are computed together, so that the cost per sample falls with the
number of streams:

* every product is one matrix product over the streams, ``(streams x in) @ (in x out)``: the
  two taps of a layer's dilated convolution, its residual and skip 1x1 convolutions and the
  two head convolutions. They go either to BLAS, scipy's ``sgemm``
  (:mod:`scipy.linalg.cython_blas`, its address from numba's ``get_cython_function_address``)
  called from the compiled loop, or to the loop's own products (two streams and four inputs
  at a time, :func:`_mm_impl`): with ``CADENZA_KERNELS=auto`` whichever a short probe of the
  call's stream count found faster on this machine (:func:`_products`; on an AMD EPYC the
  loop's own, 7.9x at one stream and 3.4x at 16, where OpenBLAS's small products cost a few
  microseconds a call), with ``on`` BLAS always. One stream
  is bound by reading the weights (0.85 MB at the small size, from the L2 cache every
  sample); many are bound by arithmetic (about 160 GFLOP/s on one core here, at 16 streams
  3.9 us per sample against 10 us for one stream). The queues hold each layer's past tap
  already multiplied (``x(t - d) W_past``, computed when ``x(t - d)`` was), so nothing is
  copied in or out of them;
* the gates use a rational ``tanh`` (Eigen's, within 4e-7; the sigmoid from it) and the draw a
  polynomial ``exp`` in float64 (within an ulp of libm's), which the compiler vectorises where
  libm's scalar calls cost as much as the products; the draw's running sums (the CDF, in
  ``torch.cumsum``'s order) run four streams side by side;
* the seed is read into the queues by the same loop, one step per sample through the layers
  only (no skip, head or draw), where ``Model._prime``'s convolutions over the whole seed took
  as long as generating a quarter of a second (16 streams, small config, its receptive field);
* the streams are split into one group per thread (``torch.get_num_threads()``, at most one
  group per stream; :mod:`cadenza.threads` chooses that count from the free CPUs). The groups
  are independent, so they run side by side for the whole generation without waiting for
  each other (numba releases the GIL), with BLAS on one thread in each.

When scipy's ``sgemm`` is missing or fails its check (:func:`blas_sgemm`), the loop multiplies
by itself (the same results, slower with many streams).

Examples
--------
>>> available(torch.device("cpu")) == (enabled() and guards.passes("numba"))
True
"""

from __future__ import annotations

import ctypes
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from cadenza.kernels import enabled, guards, measured, mode

__all__ = ["available", "blas_sgemm", "compiled", "run"]

log = logging.getLogger(__name__)

_COMPILED: list[Any] = []

# tanh as Eigen's rational approximation (generic_fast_tanh_float): |error| < 4e-7 in float32.
_T_CLAMP = np.float32(7.90531110763549805)
_T_A13 = np.float32(-2.76076847742355e-16)
_T_A11 = np.float32(2.00018790482477e-13)
_T_A9 = np.float32(-8.60467152213735e-11)
_T_A7 = np.float32(5.12229709037114e-08)
_T_A5 = np.float32(1.48572235717979e-05)
_T_A3 = np.float32(6.37261928875436e-04)
_T_A1 = np.float32(4.89352455891786e-03)
_T_B6 = np.float32(1.19825839466702e-06)
_T_B4 = np.float32(1.18534705686654e-04)
_T_B2 = np.float32(2.26843463243900e-03)
_T_B0 = np.float32(4.89352518554385e-03)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
#: Streams per product of the head: BLAS's direct (copy-free) kernels cover up to 8 of them.
HEAD_STREAMS = 8
# exp in float64: 2**n * p(r), r = x - n ln 2 (|r| <= ln 2 / 2, Cody-Waite), p Taylor to r**13
# (within an ulp of libm's); below -708 (where 2**n would not be normal) it is 0.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_E13, _E12, _E11, _E10 = 1 / 6227020800.0, 1 / 479001600.0, 1 / 39916800.0, 1 / 3628800.0
_E9, _E8, _E7, _E6 = 1 / 362880.0, 1 / 40320.0, 1 / 5040.0, 1 / 720.0
_E5, _E4, _E3, _E2 = 1 / 120.0, 1 / 24.0, 1 / 6.0, 0.5


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
        globals()["_sgemm_call"] = _make_sgemm_call()
        globals()["_mm"] = numba.njit(fastmath=True, error_model="numpy", inline="always")(_mm_impl)
        globals()["_max"] = numba.njit(fastmath=True, error_model="numpy")(_max_impl)
        _COMPILED.append(
            numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")(_batched_loop)
        )
    return _COMPILED[0]


@functools.cache
def blas_sgemm() -> int:
    """The address of scipy's Fortran ``sgemm`` (:mod:`scipy.linalg.cython_blas`), checked once on
    a small product; 0 (the loop then multiplies by itself) when it is missing or wrong."""
    try:
        from numba.extending import get_cython_function_address

        address = int(get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
        _check_sgemm(address)
    except Exception as exc:  # any failure: the compiled loop's own products instead
        log.warning("scipy's sgemm is not usable (%s: %s); WaveNet generation multiplies without "
                    "BLAS (slower with many streams)", type(exc).__name__, exc)  # fmt: skip
        return 0
    return address


def _check_sgemm(address: int) -> None:
    """``C = A B`` through the Fortran interface at ``address`` for a 3 x 5 by 5 x 4 product."""
    ptr = ctypes.c_void_p
    sgemm = ctypes.CFUNCTYPE(None, *[ptr] * 13)(address)
    g = np.random.default_rng(0)
    a, b = g.standard_normal((3, 5), dtype=np.float32), g.standard_normal((5, 4), dtype=np.float32)
    c = np.zeros((3, 4), np.float32)
    ints = [ctypes.c_int(v) for v in (4, 3, 5)]  # column-major C^T = B^T A^T: m = 4, n = 3, k = 5
    one, zero, no = ctypes.c_float(1.0), ctypes.c_float(0.0), ctypes.c_char(b"N")
    m, n, k = (ctypes.byref(v) for v in ints)
    sgemm(ctypes.addressof(no), ctypes.addressof(no), m, n, k, ctypes.addressof(one), b.ctypes.data, m,
          a.ctypes.data, k, ctypes.addressof(zero), c.ctypes.data, m)  # fmt: skip
    if not np.allclose(c, a @ b, atol=1e-5, rtol=1e-5):
        raise RuntimeError("sgemm gave a wrong product")


def run(
    classes: torch.Tensor,
    T0: int,
    ring: torch.Tensor | None,
    dilations: list[int],
    weights: list[torch.Tensor],
    u: torch.Tensor,
    temperature: float,
    logits: torch.Tensor | None,
    *,
    threads: int | None = None,
    min_p: float = 0.0,
    level: Any = None,
) -> None:
    """Fill ``classes`` (B, T) from ``T0`` on, in place, as ``Model._cached_loop`` does.

    ``ring`` holds the layers' queues after the seed, as ``Model._prime`` leaves them (read
    only: the kernel keeps queues of its own), or is None: the kernel then reads the seed
    ``classes[:, :T0 - 1]`` into its queues itself, one step per sample without the skips,
    head and draw (cheaper than the convolutions of ``_prime``). ``weights`` are the step's
    weights of ``Model._step_weights`` (contiguous float32 CPU tensors), ``u`` (B, T - T0)
    the uniforms of the draws (``min_p``: classes less likely than that share of the likeliest
    are not drawn; with ``level``, a :class:`cadenza.models.wavenet.Level`, only for the streams
    at or above its level, which the kernel keeps and leaves in ``level.ms``);
    ``logits`` (B, T - T0, C), when given, receives the logits of
    every draw. The streams are split into ``threads`` groups (default
    ``torch.get_num_threads()``, at most B) that run side by side.
    """
    from threadpoolctl import threadpool_limits

    loop = compiled()
    e0, e1, b_in, dil, bias, *rest = [a.numpy() for a in weights]
    B, R = classes.shape[0], e0.shape[1]
    n_groups = max(1, min(int(threads or torch.get_num_threads()), B))
    bounds = [round(g * B / n_groups) for g in range(n_groups + 1)]
    # the queues hold each layer's past tap, x(t - d) W_past, rather than its input x(t - d)
    past = torch.zeros(sum(dilations), B, dil.shape[2])
    if ring is not None:
        start = 0
        for i, d in enumerate(dilations):
            torch.matmul(ring[start : start + d].detach(), weights[3][i, :R], out=past[start : start + d])
            start += d
    t_first = T0 - 1 if ring is not None else 0
    c, r, uu = classes.numpy(), past.numpy(), u.cpu().contiguous().numpy()
    lg = logits.numpy() if logits is not None else None
    no_logits = np.zeros((0, 0, 0), np.float32)
    dil_arr, gemm = np.array(dilations, np.int64), blas_sgemm()
    C = weights[-1].shape[0]
    on = level is not None and level.on
    ms = level.ms.numpy().copy() if on else np.zeros(B, np.float64)
    squares = level.squares.numpy() if on else np.zeros(C, np.float64)
    alpha, threshold = (float(level.alpha), float(level.threshold)) if on else (0.0, -1.0)

    def group(b0: int, b1: int, gemm: int = gemm) -> None:
        loop(
            c[b0:b1], T0, np.ascontiguousarray(r[:, b0:b1]), dil_arr, e0, e1, b_in, dil,
            np.ascontiguousarray(bias[:, b0:b1]), *rest, uu[b0:b1], float(temperature),
            float(min_p), lg[b0:b1] if lg is not None else no_logits, gemm, t_first,
            ms[b0:b1], squares, alpha, threshold,
        )  # fmt: skip

    def probe(gemm: int) -> None:  # PROBE_SAMPLES draws of every group side by side, on copies
        end = T0 + PROBE_SAMPLES

        def one(b0: int, b1: int) -> None:
            loop(
                c[b0:b1, :end].copy(), T0, r[:, b0:b1].copy(), dil_arr, e0, e1, b_in, dil,
                np.ascontiguousarray(bias[:, b0:b1]), *rest, uu[b0:b1, :PROBE_SAMPLES].copy(),
                float(temperature), float(min_p), no_logits, gemm, T0 - 1, ms[b0:b1].copy(), squares,
                alpha, threshold,
            )  # fmt: skip

        if n_groups == 1:
            one(0, B)
        else:
            with ThreadPoolExecutor(n_groups) as pool:
                list(pool.map(one, bounds[:-1], bounds[1:]))

    with threadpool_limits(1, user_api="blas"):  # the groups are the parallelism
        if gemm and mode() == "auto" and c.shape[1] - T0 >= PROBE_SAMPLES:
            shape = f"streams={B} groups={n_groups} R{R} D{dil.shape[2] // 2} S{rest[2].shape[1]} C{C} layers={len(dilations)}"
            gemm = (
                gemm
                if _products(shape, {"sgemm": lambda: probe(gemm), "loops": lambda: probe(0)}) == "sgemm"
                else 0
            )
        if n_groups == 1:
            group(0, B, gemm)
        else:
            with ThreadPoolExecutor(n_groups) as pool:
                list(pool.map(group, bounds[:-1], bounds[1:], [gemm] * n_groups))
    if on:
        level.ms = torch.from_numpy(ms)


#: Draws of every stream that :func:`run` times with each way of multiplying (``CADENZA_KERNELS=auto``).
PROBE_SAMPLES = 48
#: The table of :mod:`cadenza.kernels.measured` that keeps which way is faster.
TABLE = "wavenet products"


def _products(shape: str, probes: dict[str, Any]) -> str:
    """``"sgemm"`` or ``"loops"``: how the loop multiplies for ``shape`` on this machine, measured
    once (the faster of three alternating probes each) and kept. On an Intel Xeon scipy's
    OpenBLAS ``sgemm`` made 16 streams 2.6-4.7x one stream; on an AMD EPYC (2026-12-06) its
    small products cost so much per call that one stream drew 13,000 samples/s through it
    against 66,000 through the loop's own multiplication."""
    import scipy

    return measured.choose(
        TABLE,
        f"{shape} scipy {scipy.__version__}",
        lambda: measured.fastest(probes),
        "WaveNet's step products",
        ("sgemm", "loops"),
    )


def _make_sgemm_call() -> Any:
    """A numba intrinsic ``_sgemm_call(address, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c,
    c_off, ldc)``: the Fortran ``sgemm`` at ``address``, ``C = A B + beta C`` (column-major, no
    transposes, alpha 1) on the float32 1-D arrays ``a``, ``b``, ``c`` from the given offsets.

    Row-major ``Y (n x m) = X (n x k) @ W (k x m)`` is this with ``a = W``, ``b = X``, ``c = Y``.
    """
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def sgemm_call(typingctx, address, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):  # type: ignore[no-untyped-def]
        sig = types.void(address, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            tys = signature.args
            i8, i32, f32 = ir.IntType(8), ir.IntType(32), ir.FloatType()

            def slot(i: int, ty: Any) -> Any:  # a stack slot holding argument i as ``ty``
                return cgutils.alloca_once_value(builder, context.cast(builder, args[i], tys[i], ty))

            def data(i: int, off: int) -> Any:  # the data pointer of array argument i, plus an offset
                ptr = context.make_array(tys[i])(context, builder, args[i]).data
                return builder.gep(ptr, [context.cast(builder, args[off], tys[off], types.intp)])

            no = cgutils.alloca_once_value(builder, ir.Constant(i8, ord("N")))
            one = cgutils.alloca_once_value(builder, ir.Constant(f32, 1.0))
            fnty = ir.FunctionType(ir.VoidType(), [i8.as_pointer()] * 2 + [i32.as_pointer()] * 3
                                   + [f32.as_pointer(), f32.as_pointer(), i32.as_pointer(), f32.as_pointer(),
                                      i32.as_pointer(), f32.as_pointer(), f32.as_pointer(), i32.as_pointer()])  # fmt: skip
            fn = builder.inttoptr(context.cast(builder, args[0], tys[0], types.intp), fnty.as_pointer())
            builder.call(fn, [
                no, no, slot(1, types.int32), slot(2, types.int32), slot(3, types.int32), one,
                data(4, 5), slot(6, types.int32), data(7, 8), slot(9, types.int32),
                slot(10, types.float32), data(11, 12), slot(13, types.int32),
            ])  # fmt: skip
            return context.get_dummy_value()

        return sig, codegen

    return sgemm_call


def _mm_impl(gemm, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):  # type: ignore[no-untyped-def]
    """``C = A B + beta C`` as :func:`_sgemm_call` describes it: through BLAS at address ``gemm``,
    or (``gemm == 0``) as loops over contiguous columns of ``A`` (m, the output channels).

    The loops take two columns of ``C`` (two streams) and four of ``A`` at a time: each entry
    of ``C`` is read and written once per four products, each of ``A`` read once for two
    streams (one column and one product at a time spent its time loading and storing ``C``)."""
    if gemm != 0:
        _sgemm_call(gemm, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)  # noqa: F821
        return
    k4 = k - k % 4
    col = 0
    while col < n:
        two = col + 1 < n
        o0 = c[c_off + col * ldc : c_off + col * ldc + m]
        o1 = c[c_off + (col + 1) * ldc : c_off + (col + 1) * ldc + m] if two else o0
        if beta == 0:
            o0[:] = 0
            if two:
                o1[:] = 0
        x0 = b[b_off + col * ldb : b_off + col * ldb + k]
        x1 = b[b_off + (col + 1) * ldb : b_off + (col + 1) * ldb + k] if two else x0
        for p in range(0, k4, 4):
            r0 = a[a_off + p * lda : a_off + p * lda + m]
            r1 = a[a_off + (p + 1) * lda : a_off + (p + 1) * lda + m]
            r2 = a[a_off + (p + 2) * lda : a_off + (p + 2) * lda + m]
            r3 = a[a_off + (p + 3) * lda : a_off + (p + 3) * lda + m]
            u0, u1, u2, u3 = x0[p], x0[p + 1], x0[p + 2], x0[p + 3]
            if two:
                v0, v1, v2, v3 = x1[p], x1[p + 1], x1[p + 2], x1[p + 3]
                for i in range(m):
                    a0, a1, a2, a3 = r0[i], r1[i], r2[i], r3[i]
                    o0[i] += a0 * u0 + a1 * u1 + a2 * u2 + a3 * u3
                    o1[i] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
            else:
                for i in range(m):
                    o0[i] += r0[i] * u0 + r1[i] * u1 + r2[i] * u2 + r3[i] * u3
        for p in range(k4, k):
            row = a[a_off + p * lda : a_off + p * lda + m]
            u0 = x0[p]
            for i in range(m):
                o0[i] += row[i] * u0
            if two:
                v0 = x1[p]
                for i in range(m):
                    o1[i] += row[i] * v0
        col += 2


def _max_impl(v):  # type: ignore[no-untyped-def]
    """The largest entry of ``v`` (1-D, not empty) over eight running maxima, which do not wait
    for each other as one running maximum would (a max reduction does not vectorise in numba)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = v[0]
    n8 = v.shape[0] // 8 * 8
    for j in range(0, n8, 8):
        m0 = max(m0, v[j])
        m1 = max(m1, v[j + 1])
        m2 = max(m2, v[j + 2])
        m3 = max(m3, v[j + 3])
        m4 = max(m4, v[j + 4])
        m5 = max(m5, v[j + 5])
        m6 = max(m6, v[j + 6])
        m7 = max(m7, v[j + 7])
    for j in range(n8, v.shape[0]):
        m0 = max(m0, v[j])
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


def _batched_loop(
    classes,
    T0,
    past,
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
    min_p,
    logits,
    gemm,
    t_first,
    ms,
    squares,
    alpha,
    threshold,
):  # type: ignore[no-untyped-def]
    """The cached step of ``Model._cached_loop`` for a group of streams (numba compiles it),
    from step ``t_first``: the steps before ``T0 - 1`` read the seed into the queues.

    Row-major buffers (streams x channels); every product is one ``_mm`` over all the streams
    of the group with the weights laid out ``(in, out)``. The queues hold each layer's past
    tap already multiplied, ``past[slot] = x(t - d) W_past`` (B, 2D): a layer's input is
    multiplied by the current tap into ``h`` and, once the gates have read the queue's
    entry, by the past tap into that entry for step t + d, so that nothing is copied. Each
    layer's skip product accumulates into ``s`` (small products: BLAS's copy-free kernels,
    where one product over all layers would be copied). The draw is ``draw`` of the model:
    a float64 CDF over ``exp((lg - max) / T)`` (zero below ``min_p``), inverted at ``u`` (``lg / T - max / T``
    there; the two agree to an ulp). ``min_p`` applies to the streams whose level ``ms`` (the
    exponential mean square of ``Level``, updated after every draw with the ``squares`` of the
    classes) is at least ``threshold``; a negative threshold: every stream.
    """
    B, T = classes.shape
    L = dilations.shape[0]
    R = e0.shape[1]
    D = dil.shape[2] // 2
    S = skip.shape[1]
    C = h2.shape[1]
    want_logits = logits.shape[0] > 0
    x = np.empty((B, R), np.float32)  # the layer's input
    h = np.empty((B, 2 * D), np.float32)
    z = np.empty((B, D), np.float32)  # the layer's gated output
    s = np.empty((B, S), np.float32)
    a = np.empty((B, S), np.float32)
    lg = np.empty((B, C), np.float32)
    xf, hf, zf, sf, af, lgf = x.reshape(-1), h.reshape(-1), z.reshape(-1), s.reshape(-1), a.reshape(-1), lg.reshape(-1)  # fmt: skip
    dilf, resf, skipf, h1f, h2f = dil.reshape(-1), res.reshape(-1), skip.reshape(-1), h1.reshape(-1), h2.reshape(-1)  # fmt: skip
    pastf = past.reshape(-1)
    res_bt = np.empty((L, B * R), np.float32)  # res_b for every stream: one flat loop adds it
    for i in range(L):
        for b in range(B):
            res_bt[i, b * R : (b + 1) * R] = res_b[i]
    e = np.zeros((B, C), np.float64)  # the draw's exp((lg - top) / temperature)
    bits = np.empty(C, np.int64)
    scale = bits.view(np.float64)  # 2**n from its bits
    cdf = np.empty((4, C), np.float64)
    inv_temperature = 1.0 / temperature if temperature > 0 else 0.0
    offsets = np.zeros(L, np.int64)
    for i in range(1, L):
        offsets[i] = offsets[i - 1] + dilations[i - 1]
    for t in range(t_first, T - 1):
        reading = t < T0 - 1  # a step of the seed: the queues only (no skips, head or draw)
        for b in range(B):  # index by plain loop counters (views), which the compiler vectorises
            xb, now = x[b], classes[b, t]
            for r in range(R):
                xb[r] = e1[now, r] + b_in[r]
            if t > 0:
                before = classes[b, t - 1]
                for r in range(R):
                    xb[r] += e0[before, r]
        for i in range(L):
            slot = offsets[i] + t % dilations[i]
            w_past, w_now = i * 4 * R * D, i * 4 * R * D + 2 * R * D
            _mm(gemm, 2 * D, B, R, dilf, w_now, 2 * D, xf, 0, R, _ZERO, hf, 0, 2 * D)  # noqa: F821
            for b in range(B):
                hf_, hg_, pf_, pg_ = h[b, :D], h[b, D:], past[slot, b, :D], past[slot, b, D:]
                bf_, bg_, zb = bias[i, b, :D], bias[i, b, D:], z[b]
                for j in range(D):  # tanh(f) sigmoid(g) = (pf / qf) (1 + pg / qg) / 2, one division
                    f = min(max(hf_[j] + pf_[j] + bf_[j], -_T_CLAMP), _T_CLAMP)
                    g = min(max(_HALF * (hg_[j] + pg_[j] + bg_[j]), -_T_CLAMP), _T_CLAMP)
                    f2 = f * f
                    g2 = g * g
                    pf = ((((((_T_A13 * f2 + _T_A11) * f2 + _T_A9) * f2 + _T_A7) * f2 + _T_A5) * f2 + _T_A3) * f2 + _T_A1) * f  # fmt: skip
                    qf = ((_T_B6 * f2 + _T_B4) * f2 + _T_B2) * f2 + _T_B0
                    pg = ((((((_T_A13 * g2 + _T_A11) * g2 + _T_A9) * g2 + _T_A7) * g2 + _T_A5) * g2 + _T_A3) * g2 + _T_A1) * g  # fmt: skip
                    qg = ((_T_B6 * g2 + _T_B4) * g2 + _T_B2) * g2 + _T_B0
                    zb[j] = (_HALF * pf) * (qg + pg) / (qf * qg)
            _mm(gemm, 2 * D, B, R, dilf, w_past, 2 * D, xf, 0, R, _ZERO, pastf, slot * B * 2 * D, 2 * D)  # noqa: F821
            if not reading:
                _mm(gemm, S, B, D, skipf, i * D * S, S, zf, 0, D, _ZERO if i == 0 else _ONE, sf, 0, S)  # noqa: F821
            if i < L - 1:
                rb = res_bt[i]
                for k in range(B * R):
                    xf[k] += rb[k]
                _mm(gemm, R, B, D, resf, i * D * R, R, zf, 0, D, _ONE, xf, 0, R)  # noqa: F821
        if reading:
            continue
        for b in range(B):
            sb = s[b]
            for j in range(S):
                sb[j] = max(sb[j] + skip_b[j], _ZERO)
        for b0 in range(0, B, HEAD_STREAMS):  # BLAS's direct kernels take up to 8 columns here
            nb = min(HEAD_STREAMS, B - b0)
            _mm(gemm, S, nb, S, h1f, 0, S, sf, b0 * S, S, _ZERO, af, b0 * S, S)  # noqa: F821
        for b in range(B):
            ab = a[b]
            for j in range(S):
                ab[j] = max(ab[j] + hb1[j], _ZERO)
        for b0 in range(0, B, HEAD_STREAMS):
            nb = min(HEAD_STREAMS, B - b0)
            _mm(gemm, C, nb, S, h2f, 0, C, af, b0 * S, S, _ZERO, lgf, b0 * C, C)  # noqa: F821
        n = t + 1 - T0
        for b in range(B):
            lb = lg[b]
            for j in range(C):
                lb[j] += hb2[j]
            top = _max(lb)  # noqa: F821
            if want_logits:
                out = logits[b, n]
                for j in range(C):
                    out[j] = lb[j]
            if temperature == 0:
                best = 0
                for j in range(C):
                    if lb[j] > lb[best]:
                        best = j
                classes[b, t + 1] = best
                ms[b] = alpha * ms[b] + (1.0 - alpha) * squares[best]
                continue
            eb = e[b]
            for j in range(C):  # exp((lg - top) / temperature), vectorised (see _LOG2E)
                y = max((np.float64(lb[j]) - top) * inv_temperature, -708.0)
                m2 = np.floor(y * _LOG2E + 0.5)
                w = (y - m2 * _LN2_HI) - m2 * _LN2_LO
                p = ((((((_E13 * w + _E12) * w + _E11) * w + _E10) * w + _E9) * w + _E8) * w + _E7) * w
                p = (((((((p + _E6) * w + _E5) * w + _E4) * w + _E3) * w + _E2) * w + 1.0) * w) + 1.0
                bits[j] = (np.int64(m2) + 1023) << 52
                eb[j] = p if y > -708.0 else 0.0
            for j in range(C):
                eb[j] *= scale[j]
            if min_p > 0.0 and ms[b] >= threshold:  # eb: each class's probability over the likeliest's
                for j in range(C):
                    if eb[j] < min_p:
                        eb[j] = 0.0
        if temperature == 0:
            continue
        for b0 in range(0, B, 4):  # running sums in the order of torch.cumsum, four streams at a time
            e0_, e1_, e2_, e3_ = e[b0], e[min(b0 + 1, B - 1)], e[min(b0 + 2, B - 1)], e[min(b0 + 3, B - 1)]
            c0_, c1_, c2_, c3_ = cdf[0], cdf[1], cdf[2], cdf[3]
            acc0 = acc1 = acc2 = acc3 = 0.0
            for j in range(C):
                acc0 += e0_[j]
                acc1 += e1_[j]
                acc2 += e2_[j]
                acc3 += e3_[j]
                c0_[j] = acc0
                c1_[j] = acc1
                c2_[j] = acc2
                c3_[j] = acc3
            for q in range(min(4, B - b0)):
                cq = cdf[q]
                target = u[b0 + q, n] * cq[C - 1]
                count = 0  # searchsorted(right=True): the number of entries <= target
                for j in range(C):
                    count += cq[j] <= target
                k = min(count, C - 1)
                classes[b0 + q, t + 1] = k
                ms[b0 + q] = alpha * ms[b0 + q] + (1.0 - alpha) * squares[k]
