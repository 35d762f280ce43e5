"""The inner loops of spectral analysis and phase retrieval, compiled with numba (used by
:mod:`cadenza.representations._spectral` and :mod:`cadenza.representations._inversion`).

:func:`mel_project`
    ``|X| ** power`` of each frame's spectrum through the mel filters, one frame at a time over
    each filter's span of frequencies only (about 2,000 weights of the 131,000 at 128 bands and
    n_fft=2048): a frame's result depends on nothing else, so the features are the same bits
    for any number of threads and any chunking (MKL's ``sgemm`` is not: its float32
    sums change with the thread count, and the feature stores must not). Reference:
    :func:`mel_project_reference`, ``|X| ** power`` through numpy's float32 matrix product
    (one BLAS thread, as ``cadenza prepare`` runs it, gives the same bits whatever the workers).
:func:`heap_integrate`
    Phase-gradient heap integration (Prusa, Balazs and Sondergaard 2017): from the largest
    coefficient outward, each coefficient's phase is its already-phased neighbour's plus the
    trapezoidal integral of the phase gradient between them. Inherently sequential (a
    priority queue ordered by magnitude, here a bucket queue of magnitude levels 0.19 dB
    apart). Reference: :func:`heap_integrate_reference`, the same queue in plain Python (about
    100x slower); both take the coefficients in the same order, so they return the same phases.
:func:`gl_update`
    One Griffin-Lim step on a rebuilt spectrogram: ``a = rebuilt - alpha * previous``, then
    ``a * magnitude / |a|``. One pass over memory instead of torch's four complex element-wise
    passes (slow on CPU: about 4 ms each for a 20 s clip). Reference:
    :func:`gl_update_reference`, those torch operations.
:func:`mel_correct`
    The joint mel inversion's step on a rebuilt spectrogram: its magnitude, corrected towards
    target mel bands by one over-relaxed multiplicative (Richardson-Lucy) update, one frame at a
    time over the filters' spans (as :func:`mel_project`) instead of two dense products.
    Reference: :func:`mel_correct_reference`, torch products with the dense basis.
:func:`squared_magnitude`
    ``|spec| ** 2`` of a complex64 spectrogram in one pass. Reference: torch's
    ``view_as_real(spec).square().sum(-1)``.

Each runs compiled while the kernels are on (see :mod:`cadenza.kernels`) and numba's guard
passes, else as its reference. ``tests/kernels/test_spectral_kernels.py`` compares them. The
two sums over filter spans (:func:`mel_project`, :func:`mel_correct`) are compiled with
reassociation so that they vectorise: other bits than the references', but the same on every
call.

Examples
--------
>>> import numpy as np
>>> key = np.array([[3.0, 1.0], [2.0, 0.5]])  # (frames, bins)
>>> dt = np.full_like(key, 0.5); df = np.full_like(key, 0.25)
>>> phase, done = heap_integrate(key, dt, df, np.array([0]), key > 0.1)
>>> phase.tolist(), bool(done.all())
([[0.0, 0.25], [0.5, 0.75]], True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from cadenza.kernels import enabled, guards

if TYPE_CHECKING:  # torch is imported where a function uses it: the mel projection of numpy
    import torch  # frames (what `cadenza prepare` computes) runs without it (0.8 s a worker)

__all__ = [
    "MelWeights",
    "gl_update",
    "gl_update_reference",
    "heap_integrate",
    "heap_integrate_reference",
    "mel_correct",
    "mel_correct_reference",
    "mel_project",
    "mel_project_reference",
    "squared_magnitude",
]

_COMPILED: dict[str, Any] = {}
#: The smallest normal float32 (``torch.finfo(torch.float32).tiny``): a floor against division by 0.
_TINY = 1.1754944e-38


def _kernels() -> dict[str, Any] | None:
    """The compiled loops (compiled, or loaded from numba's cache, on first use); None when
    the kernels are off or numba's guard fails."""
    if not enabled():
        return None
    if not _COMPILED:
        numba = guards.load_numba()
        if numba is None:
            return None
        jit = numba.njit(nogil=True, cache=True, error_model="numpy")
        # Reassociation only (no approximate functions, no FMA contraction): sums vectorise.
        jit_sum = numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "nsz"})
        _COMPILED.update(
            heap=jit(_heap_loop),
            update=jit(_update_loop),
            power=jit(_power_loop),
            mel=jit_sum(_mel_loop),
            correct=jit_sum(_correct_loop),
        )
    return _COMPILED


class MelWeights(NamedTuple):
    """A mel basis ``(n_mels, n_freq)`` float32, and each band's span of frequencies with its weights.

    Band ``b`` covers frequencies ``start[b]:stop[b]`` (from its first nonzero weight to its
    last), whose weights are ``data[offset[b]:offset[b] + stop[b] - start[b]]``.
    """

    dense: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    offset: np.ndarray
    data: np.ndarray

    @classmethod
    def of(cls, basis: np.ndarray) -> MelWeights:
        """The spans of ``basis`` (kept, not copied: pass a read-only one).

        Examples
        --------
        >>> w = MelWeights.of(np.array([[0.5, 0.5, 0.0], [0.0, 0.25, 1.0]], np.float32))
        >>> w.start.tolist(), w.stop.tolist(), w.offset.tolist(), w.data.tolist()
        ([0, 1], [2, 3], [0, 2], [0.5, 0.5, 0.25, 1.0])
        """
        nonzero = basis != 0
        any_ = nonzero.any(axis=1)
        start = np.where(any_, nonzero.argmax(axis=1), 0).astype(np.int64)
        stop = np.where(any_, basis.shape[1] - nonzero[:, ::-1].argmax(axis=1), 0).astype(np.int64)
        offset = np.concatenate([[0], np.cumsum(stop - start)[:-1]]).astype(np.int64)
        parts = [basis[i, start[i] : stop[i]] for i in range(basis.shape[0])]
        data = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        return cls(basis, start, stop, offset, data)


def mel_project(spec: torch.Tensor | np.ndarray, weights: MelWeights, power: float, out: np.ndarray) -> None:
    """``out[t] = weights.dense @ |spec[t]| ** power`` for frames ``spec`` ``(n, n_freq)`` complex64
    (a torch tensor or a numpy array), into ``out`` ``(n, n_mels)`` float32 (C-contiguous)."""
    compiled = _kernels()
    if isinstance(spec, np.ndarray):
        fits = spec.dtype == np.complex64 and spec.flags.c_contiguous
    else:
        fits = _fits(spec)
    if compiled is None or not fits or spec.ndim != 2 or not out.flags.c_contiguous:
        mel_project_reference(spec, weights, power, out)
        return
    rows = spec.view(np.float32) if isinstance(spec, np.ndarray) else _rows(spec)
    compiled["mel"](
        rows, weights.start, weights.stop, weights.offset, weights.data, np.float32(power / 2.0), out
    )


def mel_project_reference(
    spec: torch.Tensor | np.ndarray, weights: MelWeights, power: float, out: np.ndarray
) -> None:
    """:func:`mel_project` as ``|X| ** power`` times the basis, numpy's float32 matrix product."""
    if isinstance(spec, np.ndarray):
        pairs = np.ascontiguousarray(spec, dtype=np.complex64).view(np.float32).reshape(*spec.shape, 2)
        mag = np.square(pairs).sum(-1)
    else:
        import torch

        mag = torch.view_as_real(spec).square().sum(-1).numpy()
    if power != 2.0:
        mag = mag ** np.float32(power / 2.0)
    np.matmul(mag, weights.dense.T, out=out)


def _mel_loop(spec, start, stop, offset, data, half_power, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The compiled :func:`mel_project`: one frame at a time, each band a contiguous dot product
    (compiled with reassociation, so that it vectorises: the same bits on every call)."""
    n_frames, n_mels = out.shape
    n_freq = spec.shape[1] // 2
    mag = np.empty(n_freq, np.float32)
    for t in range(n_frames):
        for k in range(n_freq):
            re = spec[t, 2 * k]
            im = spec[t, 2 * k + 1]
            mag[k] = re * re + im * im
        if half_power != 1.0:
            for k in range(n_freq):
                mag[k] = mag[k] ** half_power
        for b in range(n_mels):
            k0 = start[b]
            o = offset[b] - k0
            acc = np.float32(0.0)
            for k in range(k0, stop[b]):
                acc += data[o + k] * mag[k]
            out[t, b] = acc


def mel_correct(
    rebuilt: torch.Tensor,
    target: torch.Tensor,
    weights: MelWeights,
    inv_col: torch.Tensor,
    power: float,
    relax: float,
) -> torch.Tensor:
    """The magnitude of ``rebuilt`` ``(B, T, n_freq)`` corrected towards the mel bands ``target``
    ``(B, T, n_mels)``: with ``s = |rebuilt| ** power`` and
    ``g = (M^T (target / M s)) * inv_col``, returns ``(s * g ** relax) ** (1 / power)``.

    ``inv_col`` is ``1 / (M^T 1)`` per frequency (0 where no filter reaches).
    """
    import torch

    compiled = _kernels()
    if compiled is None or not _fits(rebuilt, target, inv_col) or rebuilt.ndim != 3:
        return mel_correct_reference(rebuilt, target, weights, inv_col, power, relax)
    out = torch.empty(rebuilt.shape, dtype=torch.float32)
    compiled["correct"](
        _rows(rebuilt), target.numpy().reshape(-1, target.shape[-1]), weights.start, weights.stop,
        weights.offset, weights.data, inv_col.numpy(), np.float32(power), np.float32(relax),
        out.numpy().reshape(-1, rebuilt.shape[-1]),
    )  # fmt: skip
    return out


def mel_correct_reference(
    rebuilt: torch.Tensor,
    target: torch.Tensor,
    weights: MelWeights,
    inv_col: torch.Tensor,
    power: float,
    relax: float,
) -> torch.Tensor:
    """:func:`mel_correct` with torch products by the dense basis (the reference)."""
    import torch

    m = torch.from_numpy(np.array(weights.dense))
    s = torch.view_as_real(rebuilt).square().sum(-1)  # |X| ** 2
    if power != 2.0:
        s = s.pow_(power / 2.0)  # |X| ** power, what the mel basis sums
    gain = (target / torch.clamp_(s @ m.T, min=_TINY)) @ m
    gain *= inv_col
    s *= gain.pow_(relax)
    return s.sqrt_() if power == 2.0 else s.pow_(1.0 / power)


def _correct_loop(spec, target, start, stop, offset, data, inv_col, power, relax, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The compiled :func:`mel_correct`, one frame (row of ``target`` and ``out``) at a time."""
    n_frames, n_freq = out.shape
    n_mels = target.shape[1]
    tiny = np.float32(_TINY)
    s = np.empty(n_freq, np.float32)
    gain = np.empty(n_freq, np.float32)
    ratio = np.empty(n_mels, np.float32)
    squared = power == 2.0
    for t in range(n_frames):
        for k in range(n_freq):
            re = spec[t, 2 * k]
            im = spec[t, 2 * k + 1]
            s[k] = re * re + im * im
        if not squared:
            for k in range(n_freq):
                s[k] = s[k] ** (power / 2)
        for b in range(n_mels):
            o = offset[b] - start[b]
            acc = np.float32(0.0)
            for k in range(start[b], stop[b]):
                acc += data[o + k] * s[k]
            ratio[b] = target[t, b] / max(acc, tiny)
        gain[:] = 0.0
        for b in range(n_mels):
            o = offset[b] - start[b]
            r = ratio[b]
            for k in range(start[b], stop[b]):
                gain[k] += data[o + k] * r
        if squared and relax == 1.5:
            for k in range(n_freq):
                g = gain[k] * inv_col[k]
                out[t, k] = np.sqrt(s[k] * g * np.sqrt(g))
        else:
            for k in range(n_freq):
                g = gain[k] * inv_col[k]
                out[t, k] = (s[k] * g**relax) ** (1 / power)


#: Bits of a float32 magnitude dropped for its heap level: 5 mantissa bits are kept, 32 levels
#: per octave of magnitude (0.19 dB apart).
_LEVEL_SHIFT = 18


def heap_integrate(
    magnitude: np.ndarray, dt: np.ndarray, df: np.ndarray, starts: np.ndarray, big: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Phases ``(T, F)`` integrated from the gradients, and which coefficients got one.

    The heap is a bucket queue: coefficients are taken by level, the magnitude quantised to
    0.19 dB, largest first, and last in first out within a level. (An exact binary heap gives
    the same quality at three times the cost: its branches mispredict.)

    Parameters
    ----------
    magnitude : np.ndarray
        ``(T, F)`` (frames, bins), non-negative: the integration order.
    dt, df : np.ndarray
        Phase increments ``(T, F)``, float64, per frame step (``n -> n + 1``) and per bin step
        (``m -> m + 1``) at each coefficient; a step between two coefficients adds their mean.
    starts : np.ndarray
        Flat indices (``n * F + m``) where a new integration may begin, largest first: when the
        queue runs empty, the first of them not yet phased starts the next region at phase 0.
    big : np.ndarray
        bool ``(T, F)``: the coefficients to phase (the others keep phase 0, ``done`` False).
    """
    level = _levels(magnitude, big)
    dt = np.ascontiguousarray(dt, dtype=np.float64)
    df = np.ascontiguousarray(df, dtype=np.float64)
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    big = np.ascontiguousarray(big, dtype=np.bool_)
    compiled = _kernels()
    if compiled is None:
        return heap_integrate_reference(level, dt, df, starts, big)
    phase = np.zeros(level.shape, np.float64)
    done = np.zeros(level.shape, np.bool_)
    n_levels = int(level.max()) + 1 if level.size else 1
    compiled["heap"](level, n_levels, dt, df, starts, big, phase, done)
    return phase, done


def _levels(magnitude: np.ndarray, big: np.ndarray) -> np.ndarray:
    """int64 level of each coefficient, 0 for the smallest of ``big``: the top bits of its float32
    magnitude (monotonic in the magnitude for non-negative floats)."""
    mag = np.ascontiguousarray(np.maximum(magnitude, 0.0), dtype=np.float32)
    bits = (mag.view(np.int32) >> _LEVEL_SHIFT).astype(np.int64)
    floor = int(bits[big].min()) if np.any(big) else 0
    return np.maximum(bits - floor, 0)


def heap_integrate_reference(
    level: np.ndarray, dt: np.ndarray, df: np.ndarray, starts: np.ndarray, big: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`heap_integrate` in plain Python (the reference), on the levels of :func:`_levels`:
    one stack per level, the highest non-empty one popped first."""
    n_frames, n_bins = level.shape
    lv, t, f, ok = level.ravel().tolist(), dt.ravel().tolist(), df.ravel().tolist(), big.ravel().tolist()
    phase = [0.0] * len(lv)
    done = [False] * len(lv)
    stacks: dict[int, list[int]] = {}
    for s in starts.tolist():
        if done[s]:
            continue
        done[s] = True
        stacks[lv[s]] = [s]
        while stacks:
            top = max(stacks)
            cur = stacks[top].pop()
            if not stacks[top]:
                del stacks[top]
            n, m = divmod(cur, n_bins)
            p = phase[cur]
            for v in range(4):
                if v == 0:
                    if n + 1 >= n_frames:
                        continue
                    nb = cur + n_bins
                    val = p + (0.5 * t[cur] + 0.5 * t[nb])
                elif v == 1:
                    if n == 0:
                        continue
                    nb = cur - n_bins
                    val = p + (-0.5 * t[cur] - 0.5 * t[nb])
                elif v == 2:
                    if m + 1 >= n_bins:
                        continue
                    nb = cur + 1
                    val = p + (0.5 * f[cur] + 0.5 * f[nb])
                else:
                    if m == 0:
                        continue
                    nb = cur - 1
                    val = p + (-0.5 * f[cur] - 0.5 * f[nb])
                if done[nb] or not ok[nb]:
                    continue
                done[nb] = True
                phase[nb] = val
                stacks.setdefault(lv[nb], []).append(nb)
    return np.array(phase).reshape(level.shape), np.array(done).reshape(level.shape)


def _heap_loop(level, n_levels, dt, df, starts, big, phase, done):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The compiled :func:`heap_integrate`: one linked stack per level (``head``, ``below``)."""
    n_frames, n_bins = level.shape
    lv = level.reshape(level.size)
    t = dt.reshape(dt.size)
    f = df.reshape(df.size)
    ok = big.reshape(big.size)
    ph = phase.reshape(phase.size)
    dn = done.reshape(done.size)
    head = np.full(n_levels, -1, np.int64)
    below = np.empty(lv.size, np.int64)
    for s in starts:
        if dn[s]:
            continue
        dn[s] = True
        ph[s] = 0.0
        top = lv[s]
        head[top] = s
        below[s] = -1
        size = 1
        while size > 0:
            while head[top] < 0:
                top -= 1
            cur = head[top]
            head[top] = below[cur]
            size -= 1
            n = cur // n_bins
            m = cur - n * n_bins
            p = ph[cur]
            for v in range(4):
                if v == 0:
                    if n + 1 >= n_frames:
                        continue
                    nb = cur + n_bins
                    val = p + (0.5 * t[cur] + 0.5 * t[nb])
                elif v == 1:
                    if n == 0:
                        continue
                    nb = cur - n_bins
                    val = p + (-0.5 * t[cur] - 0.5 * t[nb])
                elif v == 2:
                    if m + 1 >= n_bins:
                        continue
                    nb = cur + 1
                    val = p + (0.5 * f[cur] + 0.5 * f[nb])
                else:
                    if m == 0:
                        continue
                    nb = cur - 1
                    val = p + (-0.5 * f[cur] - 0.5 * f[nb])
                if dn[nb] or not ok[nb]:
                    continue
                dn[nb] = True
                ph[nb] = val
                b = lv[nb]  # push
                below[nb] = head[b]
                head[b] = nb
                size += 1
                if b > top:
                    top = b


def gl_update(
    rebuilt: torch.Tensor, previous: torch.Tensor | None, magnitude: torch.Tensor, alpha: float
) -> torch.Tensor:
    """One fast Griffin-Lim step: ``a = rebuilt - alpha * previous``, the new spectrogram
    ``a * magnitude / |a|`` (a new tensor; the inputs are not modified).

    ``rebuilt`` and ``previous`` are contiguous complex64 tensors, ``magnitude`` a float32
    tensor of their shape. Without ``previous`` (the first step) ``a = rebuilt``.
    """
    import torch

    compiled = _kernels()
    if compiled is None or not _fits(rebuilt, previous, magnitude) or magnitude.shape != rebuilt.shape:
        return gl_update_reference(rebuilt, previous, magnitude, alpha)
    out = torch.empty_like(rebuilt)
    if previous is None:
        previous, alpha = rebuilt, 0.0
    compiled["update"](
        _flat(rebuilt), _flat(previous), magnitude.numpy().reshape(-1), np.float32(alpha), _flat(out)
    )
    return out


def gl_update_reference(
    rebuilt: torch.Tensor, previous: torch.Tensor | None, magnitude: torch.Tensor, alpha: float
) -> torch.Tensor:
    """:func:`gl_update` in torch operations (the reference)."""
    import torch

    angles = rebuilt if previous is None else rebuilt - alpha * previous
    return angles * (magnitude / (angles.abs() + torch.finfo(torch.float32).tiny))


def squared_magnitude(spec: torch.Tensor) -> torch.Tensor:
    """``|spec| ** 2``: float32 for complex64 (compiled for a contiguous CPU tensor)."""
    import torch

    compiled = _kernels()
    if compiled is None or not _fits(spec):
        return torch.view_as_real(spec).square().sum(-1)
    out = torch.empty(spec.shape, dtype=torch.float32)
    compiled["power"](_flat(spec), out.numpy().reshape(-1))
    return out


def _fits(*tensors: torch.Tensor | None) -> bool:
    """Whether the compiled loops take these: contiguous CPU tensors of the expected dtypes."""
    import torch

    for x in tensors:
        if x is None:
            continue
        want = torch.float32 if not x.is_complex() else torch.complex64
        if x.device.type != "cpu" or x.dtype != want or not x.is_contiguous() or x.requires_grad:
            return False
    return True


def _rows(x: torch.Tensor) -> np.ndarray:
    """A contiguous complex64 tensor ``(..., n)`` as a float32 numpy view ``(rows, 2 n)`` (re, im interleaved)."""
    import torch

    return torch.view_as_real(x).numpy().reshape(-1, 2 * x.shape[-1])


def _flat(x: torch.Tensor) -> np.ndarray:
    """A contiguous complex64 tensor as a flat float32 numpy view (re, im interleaved)."""
    import torch

    return torch.view_as_real(x).numpy().reshape(-1)


def _update_loop(reb, prev, mag, alpha, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The compiled :func:`gl_update` on interleaved (re, im) float32 arrays."""
    tiny = np.float32(_TINY)
    for i in range(mag.size):
        a_re = reb[2 * i] - alpha * prev[2 * i]
        a_im = reb[2 * i + 1] - alpha * prev[2 * i + 1]
        g = mag[i] / (np.sqrt(a_re * a_re + a_im * a_im) + tiny)
        out[2 * i] = a_re * g
        out[2 * i + 1] = a_im * g


def _power_loop(spec, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The compiled :func:`squared_magnitude` on interleaved (re, im) float32 arrays."""
    for i in range(out.size):
        re = spec[2 * i]
        im = spec[2 * i + 1]
        out[i] = re * re + im * im
