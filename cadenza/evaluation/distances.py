"""Set distances between generated clips ``x`` and real clips ``y``, with bootstrap intervals.

Inputs are embeddings, one float row per clip, already standardised by the caller: ``x`` is
``(n, D)`` (the generated set), ``y`` is ``(m, D)`` (the reference set).

* :func:`kad` -- kernel audio distance: the unbiased MMD^2 (Gretton et al. 2012, eq. 3) with a
  Gaussian kernel whose bandwidth is the median pairwise distance of the *reference*
  (:func:`median_bandwidth`; the public KAD tool takes it from the evaluated set, so its scale
  moves with the model being judged).
* :func:`fad` -- Frechet distance between Gaussians fitted with Ledoit-Wolf covariances
  (:func:`ledoit_wolf`), matrix square roots by symmetric eigendecomposition, so the result is
  never complex and never negative (``scipy.linalg.sqrtm`` on rank-deficient covariances, as in
  the public FAD tools, can give either).
* :func:`prdc` -- precision, recall, density and coverage (Naeem et al. 2020).
* :func:`set_distances` -- all of them with percentile 95% intervals from a bootstrap over clips.

The bootstrap never builds a resampled set. A draw is a vector of counts ``c`` (how often each
clip was drawn, :func:`bootstrap_counts`); kernel sums become ``c^T K c`` (all draws at once as
one matrix product), covariances are count-weighted and PRDC reads the precomputed distance
matrices. Each is exactly what the function gives on the resampled rows, duplicates included,
which ``tests/evaluation/test_distances.py`` checks draw by draw.

Memory and time grow as ``(n + m)^2``: the kernel and distance matrices are held whole, which
suits sets of up to a few thousand clips. 2000 x 2000 clips with 1000 draws take about 2 s for
KAD and FAD at D = 136 (3 s at D = 166) on two cores, and PRDC (250 draws) about 2.5 s more.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.linalg.blas import dgemm
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_limits

from cadenza.errors import ParameterError
from cadenza.evaluation.results import Estimate

__all__ = [
    "METRICS",
    "MIN_CLIPS",
    "PRDC_METRICS",
    "PRDC_BOOT_CELLS",
    "bootstrap_counts",
    "fad",
    "kad",
    "kad_reach",
    "ledoit_wolf",
    "median_bandwidth",
    "prdc",
    "set_distances",
]

#: The fewest clips per set for KAD and FAD (PRDC needs more than ``k``).
MIN_CLIPS = 2
#: What :func:`prdc` returns.
PRDC_METRICS = ("precision", "recall", "density", "coverage")
#: What :func:`set_distances` can return.
METRICS = ("kad", "fad", *PRDC_METRICS)
#: PRDC's bootstrap costs ``n * m`` per draw: it uses at most ``PRDC_BOOT_CELLS // (n * m)`` draws
#: (all 1000 up to 1000 x 1000 clips, 250 at 2000 x 2000) and none below ``PRDC_MIN_BOOT``.
PRDC_BOOT_CELLS = 10**9
#: Fewer PRDC draws than this give no interval (``low``/``high`` None) rather than a ragged one.
PRDC_MIN_BOOT = 100
#: Interval bounds, in percent.
PERCENTILES = (2.5, 97.5)
#: Draws handled together (bounds the memory of the batched products).
_BATCH_ELEMENTS = 4_000_000


# ------------------------------------------------------------------------------------------ checks
def _as_set(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ParameterError(f"{name} must be a 2-D array (n_clips, n_features), got shape {a.shape}")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ParameterError(
            f"{name} has {rows.size} of {len(a)} rows with NaN or infinite values (first: row {rows[0]})"
        )
    return a


def _as_sets(x: np.ndarray, y: np.ndarray, *, min_rows: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_set(x, "x"), _as_set(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ParameterError(f"x and y differ in width: {x.shape[1]} and {y.shape[1]} features")
    if min(len(x), len(y)) < min_rows:
        raise ParameterError(
            f"{what} needs at least {min_rows} clips per set; got {len(x)} generated (x) "
            f"and {len(y)} reference (y)"
        )
    return x, y


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"k must be a positive integer, got {k!r}")
    return int(k)


# -------------------------------------------------------------------------------------------- KAD
def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(a), len(b))`` by the Gram identity, clipped at 0."""
    d = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * (a @ b.T)
    if a is b:
        np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0, out=d)


def _kernel(a: np.ndarray, b: np.ndarray, bandwidth: float) -> np.ndarray:
    d = _sq_distances(a, b)
    return np.exp(d * (-0.5 / bandwidth**2), out=d)


def median_bandwidth(y: np.ndarray) -> float:
    """Median Euclidean distance between distinct rows of the reference set ``y``.

    The Gaussian kernel's default bandwidth for :func:`kad`. It is taken from the reference,
    never from the evaluated set, so every model is measured with the same kernel.

    Parameters
    ----------
    y : np.ndarray
        Reference embeddings ``(m, D)``, ``m >= 2``.

    Returns
    -------
    float
        The median over the ``m (m - 1) / 2`` pairs ``i < j``; 1.0 when it is 0 (more than half
        the pairs are identical rows).

    Examples
    --------
    >>> import numpy as np
    >>> median_bandwidth(np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]))
    5.0
    """
    y = _as_set(y, "y")
    if len(y) < MIN_CLIPS:
        raise ParameterError(f"the bandwidth needs at least {MIN_CLIPS} reference clips, got {len(y)}")
    sq = _sq_distances(y, y)[np.triu_indices(len(y), k=1)]
    low, high = (len(sq) - 1) // 2, len(sq) // 2  # the middle one or two (sqrt keeps the order)
    middle = np.partition(sq, [low, high])
    median = float(np.sqrt(middle[low]) + np.sqrt(middle[high])) / 2.0
    return median if median > 0.0 else 1.0


def _check_bandwidth(bandwidth: float | None, y: np.ndarray) -> float:
    if bandwidth is None:
        return median_bandwidth(y)
    if not np.isfinite(bandwidth) or bandwidth <= 0:
        raise ParameterError(f"bandwidth must be a positive finite number, got {bandwidth!r}")
    return float(bandwidth)


def kad(x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None) -> float:
    """Kernel audio distance: the unbiased MMD^2 between ``x`` and ``y`` with a Gaussian kernel.

    ``mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)`` with
    ``k(a, b) = exp(-||a - b||^2 / (2 bandwidth^2))`` (Gretton et al. 2012, eq. 3). Unbiased,
    so it can be slightly negative when both sets come from one distribution; it is not clipped.

    Parameters
    ----------
    x, y : np.ndarray
        Generated ``(n, D)`` and reference ``(m, D)`` embeddings, at least :data:`MIN_CLIPS` rows each.
    bandwidth : float, optional
        The kernel's sigma; default :func:`median_bandwidth` of ``y``.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.standard_normal((200, 4))
    >>> round(kad(y + 2.0, y), 3)
    0.704
    >>> abs(kad(rng.standard_normal((200, 4)), y)) < 0.01
    True
    """
    x, y = _as_sets(x, y, min_rows=MIN_CLIPS, what="KAD")
    h = _check_bandwidth(bandwidth, y)
    n, m = len(x), len(y)
    return float(_kad_draws(x, y, np.ones((1, n), np.int64), np.ones((1, m), np.int64), h)[0])


def kad_reach(x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None) -> float:
    """How much of the reference's own kernel similarity the set ``x`` reaches: ``mean_{i,j}
    k(x_i, y_j) / mean_{i != j} k(y_i, y_j)`` with :func:`kad`'s kernel.

    Near 1 for a set like the reference, near 0 for one beyond the kernel's reach. There KAD
    saturates: its cross term is gone, and what is left, ``mean k(x, x) + mean k(y, y)``, says
    how alike the set's clips are, not how far they are from real music (two sets of steady
    tones, one at 44.1 kHz and one at 96 kHz, measured 0.6072 and 0.6070 against quartets).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.standard_normal((200, 4))
    >>> round(kad_reach(rng.standard_normal((200, 4)), y), 1), kad_reach(y + 20.0, y) < 1e-6
    (1.0, True)
    """
    x, y = _as_sets(x, y, min_rows=MIN_CLIPS, what="KAD")
    h = _check_bandwidth(bandwidth, y)
    kyy = _kernel(y, y, h)
    m = len(y)
    within = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(_kernel(x, y, h).mean() / within) if within > 0 else 0.0


def _kad_draws(x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray, bandwidth: float) -> np.ndarray:
    """:func:`kad` of the multisets with counts ``cx (B, n)`` and ``cy (B, m)``: ``(B,)``.

    Over the positions of a multiset with counts ``c``, the kernel summed over all ordered pairs
    is ``c^T K c``; the pairs of a position with itself add ``sum_i c_i K_ii``, which the unbiased
    estimator leaves out. All draws at once: ``K @ C`` with ``C (n, B)``.
    """
    n, m = cx.sum(axis=1), cy.sum(axis=1)
    kxx, kyy, kxy = _kernel(x, x, bandwidth), _kernel(y, y, bandwidth), _kernel(x, y, bandwidth)
    out = np.empty(len(cx))
    step = max(1, _BATCH_ELEMENTS // max(len(x), len(y)))
    for start in range(0, len(cx), step):
        part = slice(start, start + step)
        bx, by = cx[part].T.astype(np.float64), cy[part].T.astype(np.float64)  # (n, b), (m, b)
        sxx = np.einsum("ib,ib->b", bx, kxx @ bx) - np.diag(kxx) @ bx
        syy = np.einsum("ib,ib->b", by, kyy @ by) - np.diag(kyy) @ by
        sxy = np.einsum("ib,ib->b", bx, kxy @ by)
        nx, ny = n[part], m[part]
        out[part] = sxx / (nx * (nx - 1)) + syy / (ny * (ny - 1)) - 2.0 * sxy / (nx * ny)
    return out


# -------------------------------------------------------------------------------------------- FAD
def _shrinkage(
    trace: np.ndarray, frob2: np.ndarray, fourth: np.ndarray, n: int | np.ndarray, d: int
) -> np.ndarray:
    """Ledoit-Wolf's optimal intensity from the empirical covariance's trace and squared norm.

    ``fourth`` is ``sum_i ||x_i - mean||^4``. Same formula as ``sklearn.covariance.ledoit_wolf_shrinkage``.
    """
    if d == 1:
        return np.zeros_like(trace)  # shrinking toward mu * I changes nothing
    mu = trace / d
    beta = (fourth / n - frob2) / (d * n)
    delta = (frob2 - 2.0 * mu * trace + d * mu**2) / d  # ||S - mu I||_F^2 / d
    beta = np.minimum(beta, delta)
    safe = np.where(delta > 0, delta, 1.0)
    return np.where(delta > 0, np.clip(beta / safe, 0.0, 1.0), 0.0)


def _shrink(cov: np.ndarray, shrinkage: np.ndarray) -> np.ndarray:
    """``(1 - s) S + s mu I`` over a stack ``(B, D, D)``, in place."""
    d = cov.shape[-1]
    mu = np.trace(cov, axis1=1, axis2=2) / d
    cov *= (1.0 - shrinkage)[:, None, None]
    cov[:, np.arange(d), np.arange(d)] += (shrinkage * mu)[:, None]
    return cov


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Ledoit-Wolf shrinkage covariance of the rows of ``x``.

    The empirical covariance ``S`` (divided by ``n``) shrunk toward ``mu I`` (``mu = tr(S) / D``)
    with Ledoit and Wolf's optimal intensity: what ``sklearn.covariance.LedoitWolf()`` gives
    (``location_``, ``covariance_``), written in numpy. Well conditioned even when ``n < D``.

    Parameters
    ----------
    x : np.ndarray
        ``(n, D)`` rows, ``n >= 2``.

    Returns
    -------
    mean : np.ndarray
        ``(D,)``.
    cov : np.ndarray
        ``(D, D)``, symmetric positive semi-definite.

    Examples
    --------
    >>> import numpy as np
    >>> mean, cov = ledoit_wolf(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]]))
    >>> mean
    array([1., 1.])
    >>> cov
    array([[1., 0.],
           [0., 1.]])
    """
    x = _as_set(x, "x")
    n, d = x.shape
    if n < MIN_CLIPS:
        raise ParameterError(f"the Ledoit-Wolf covariance needs at least {MIN_CLIPS} rows, got {n}")
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / n
    sq_norms = np.einsum("ij,ij->i", xc, xc)
    s = _shrinkage(np.trace(cov), np.sum(cov**2), np.sum(sq_norms**2), n, d)
    return mean, _shrink(cov[None], np.atleast_1d(s))[0]


def _second_moments(x0: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum_i w[b, i] x0_i x0_i^T`` of every draw, upper triangles ``(B, D (D + 1) / 2)``.

    One product ``w @ O`` with ``O (n, D (D + 1) / 2)`` the upper triangles of the outer
    products, built by blocks of rows and accumulated in place (BLAS ``dgemm`` with beta = 1).
    """
    d = x0.shape[1]
    n_tri = d * (d + 1) // 2
    out = np.zeros((len(w), n_tri))
    rows = max(1, _BATCH_ELEMENTS // n_tri)
    for start in range(0, len(x0), rows):
        block = x0[start : start + rows]
        outer = np.empty((len(block), n_tri))
        pos = 0
        for i in range(d):  # row i of the upper triangle: x_i * x_j for j >= i
            outer[:, pos : pos + d - i] = block[:, i : i + 1] * block[:, i:]
            pos += d - i
        # out.T += outer.T @ w_block.T: Fortran-ordered views, so out is updated in place
        acc = dgemm(1.0, outer.T, w[:, start : start + rows].T, beta=1.0, c=out.T, overwrite_c=True)
        if not np.shares_memory(acc, out):  # a BLAS wrapper that copied after all
            out[...] = acc.T
    return out


def _ledoit_wolf_from_moments(
    x0: np.ndarray, w: np.ndarray, second: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Means ``(B, D)`` and Ledoit-Wolf covariances ``(B, D, D)`` of the multisets of rows of ``x0``
    with counts ``w (B, n)``, from their :func:`_second_moments`."""
    d = x0.shape[1]
    size = w.sum(axis=1)[:, None]  # (B, 1), n for a bootstrap draw
    mean = w @ x0 / size
    tri = np.zeros((d, d), np.int64)  # (i, j) -> position of (min(i, j), max(i, j)) in a triangle
    tri[np.triu_indices(d)] = np.arange(d * (d + 1) // 2)
    tri = np.maximum(tri, tri.T)
    cov = second[:, tri]
    cov /= size[:, :, None]
    cov -= mean[:, :, None] * mean[:, None, :]
    # sum_i w_i ||x0_i - m||^4, with ||x0_i - m||^2 = ||x0_i||^2 - 2 x0_i.m + ||m||^2
    sq_norms = np.einsum("ij,ij->i", x0, x0)[None, :] - 2.0 * (mean @ x0.T)
    sq_norms += np.einsum("bj,bj->b", mean, mean)[:, None]
    fourth = np.einsum("bi,bi->b", w, sq_norms**2)
    trace = np.trace(cov, axis1=1, axis2=2)
    s = _shrinkage(trace, np.einsum("bij,bij->b", cov, cov), fourth, size[:, 0], d)
    return mean, _shrink(cov, s)


def _weighted_ledoit_wolf(x: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ledoit_wolf` of the multisets of rows of ``x`` with counts ``(B, n)``: ``(B, D)``, ``(B, D, D)``.

    A resampled set is the multiset with duplicates, so the count-weighted moments are exact.
    """
    offset = x.mean(axis=0)
    x0 = x - offset  # the draws' means are then small: little cancellation in M2 - m m^T
    w = counts.astype(np.float64)
    mean, cov = _ledoit_wolf_from_moments(x0, w, _second_moments(x0, w))
    return mean + offset, cov


def _trace_sqrt_product(cov_x: np.ndarray, cov_y: np.ndarray) -> np.ndarray:
    """``tr((Sy^1/2 Sx Sy^1/2)^1/2)`` over stacks ``(B, D, D)`` by symmetric eigendecomposition.

    With any factor ``Sy = F F^T``, ``F^T Sx F`` is symmetric with the eigenvalues of ``Sx Sy``,
    i.e. of ``Sy^1/2 Sx Sy^1/2``. ``F`` is the Cholesky factor (fast); where ``Sy`` is singular,
    ``F = V W^1/2`` from ``eigh(Sy)``, negative eigenvalues from rounding clipped to 0.
    """
    try:
        f = np.linalg.cholesky(cov_y)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(cov_y)
        f = v * np.sqrt(np.clip(w, 0.0, None))[:, None, :]
    inner = np.empty_like(cov_x)
    for b in range(len(f)):  # a loop of BLAS products beats a stacked matmul here
        inner[b] = f[b].T @ cov_x[b] @ f[b]
    eig = np.linalg.eigvalsh(inner)  # reads one triangle: rounding asymmetry does not matter
    return np.sqrt(np.clip(eig, 0.0, None)).sum(axis=-1)


def _frechet(mean_x: np.ndarray, cov_x: np.ndarray, mean_y: np.ndarray, cov_y: np.ndarray) -> np.ndarray:
    """Frechet distance of Gaussians, over stacks; clipped at 0."""
    trace = np.trace(cov_x, axis1=-2, axis2=-1) + np.trace(cov_y, axis1=-2, axis2=-1)
    value = np.sum((mean_x - mean_y) ** 2, axis=-1) + trace - 2.0 * _trace_sqrt_product(cov_x, cov_y)
    return np.maximum(value, 0.0)


def fad(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to ``x`` and ``y`` with Ledoit-Wolf covariances.

    ``||mu_x - mu_y||^2 + tr(Sx) + tr(Sy) - 2 tr((Sy^1/2 Sx Sy^1/2)^1/2)``. The square roots come
    from symmetric eigendecompositions (eigenvalues of rounding below 0 clipped to 0) and the
    result is clipped at 0: never negative, never complex, also when ``n < D``.

    Parameters
    ----------
    x, y : np.ndarray
        Generated ``(n, D)`` and reference ``(m, D)`` embeddings, at least :data:`MIN_CLIPS` rows each.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.standard_normal((5000, 2))
    >>> round(fad(y + [3.0, 4.0], y), 6)  # a shift by 5 costs 5^2
    25.0
    >>> fad(y, y)
    0.0
    """
    x, y = _as_sets(x, y, min_rows=MIN_CLIPS, what="FAD")
    (mean_x, cov_x), (mean_y, cov_y) = ledoit_wolf(x), ledoit_wolf(y)
    return float(_frechet(mean_x[None], cov_x[None], mean_y[None], cov_y[None])[0])


def _fad_draws(x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """:func:`fad` of every bootstrap draw ``(B,)`` from counts ``cx (B, n)`` and ``cy (B, m)``.

    Second moments of many draws at once (one threaded BLAS product), then covariances, Cholesky
    factors and eigenvalues by small batches of draws, one batch per CPU thread with one BLAS
    thread each: on matrices this small, BLAS threads only wait for each other (and on a busy
    machine OpenBLAS's waiting made one batch of Cholesky factors take 13 s instead of 0.03 s).
    """
    d = x.shape[1]
    offset = y.mean(axis=0) - x.mean(axis=0)
    x0, y0 = x - x.mean(axis=0), y - y.mean(axis=0)  # small means: little cancellation in M2 - m m^T
    out = np.empty(len(cx))
    big = max(1, 2 * _BATCH_ELEMENTS // (d * (d + 1) // 2))  # 64 MB of second moments a set
    small = max(1, _BATCH_ELEMENTS // (2 * d * d))

    def batch(first: int, wx: np.ndarray, wy: np.ndarray, second_x: np.ndarray, second_y: np.ndarray) -> None:
        mean_x, cov_x = _ledoit_wolf_from_moments(x0, wx, second_x)
        mean_y, cov_y = _ledoit_wolf_from_moments(y0, wy, second_y)
        out[first : first + len(wx)] = _frechet(mean_x, cov_x, mean_y + offset, cov_y)

    with ThreadPoolExecutor(_n_threads()) as pool:
        for start in range(0, len(cx), big):
            wx, wy = cx[start : start + big].astype(np.float64), cy[start : start + big].astype(np.float64)
            sx, sy = _second_moments(x0, wx), _second_moments(y0, wy)
            with threadpool_limits(limits=1, user_api="blas"):
                parts = [slice(at, at + small) for at in range(0, len(wx), small)]
                jobs = [pool.submit(batch, start + p.start, wx[p], wy[p], sx[p], sy[p]) for p in parts]
                for job in jobs:
                    job.result()
    return out


def _n_threads() -> int:
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # not on Linux
        return max(1, min(os.cpu_count() or 1, 8))


# ------------------------------------------------------------------------------------------- PRDC
def prdc(x: np.ndarray, y: np.ndarray, *, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of Naeem et al. 2020; real = ``y``, fake = ``x``.

    Each clip's ball has as radius the Euclidean distance to its ``k``-th nearest neighbour in
    its own set (itself excluded). Precision: share of fake clips inside at least one real ball.
    Recall: share of real clips inside at least one fake ball. Density: ``1 / (k n)`` times the
    number of (fake, real ball) pairs with the fake inside. Coverage: share of real clips whose
    ball holds at least one fake. "Inside" is strictly closer than the radius, as in the
    authors' code (``clovaai/generative-evaluation-prdc``).

    Parameters
    ----------
    x, y : np.ndarray
        Fake ``(n, D)`` and real ``(m, D)`` embeddings, more than ``k`` rows each.
    k : int
        The neighbour that sets the radii.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``density``, ``coverage``.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.arange(10.0)[:, None]  # radius 1 (2 at the ends): a clip is not inside its neighbour's ball
    >>> prdc(y, y, k=2)
    {'precision': 1.0, 'recall': 1.0, 'density': 0.6, 'coverage': 1.0}
    >>> prdc(y + 100.0, y, k=2)
    {'precision': 0.0, 'recall': 0.0, 'density': 0.0, 'coverage': 0.0}
    """
    k = _check_k(k)
    x, y = _as_sets(x, y, min_rows=k + 1, what=f"PRDC with k={k}")
    ones_x, ones_y = np.ones(len(x), np.int64), np.ones(len(y), np.int64)
    return {key: float(v) for key, v in _PRDC(x, y, k).values(ones_x, ones_y).items()}


class _Neighbours:
    """A set's distance matrix with each row's nearest clips sorted, for k-NN radii of multisets."""

    def __init__(self, a: np.ndarray, k: int) -> None:
        self.dist = cdist(a, a)  # exact: a clip and its copy are at distance 0
        self.k = k
        n_near = min(len(a), 4 * k + 28)  # enough unless most of them are left out of a draw
        near = np.argpartition(self.dist, n_near - 1, axis=1)[:, :n_near]
        by_dist = np.argsort(np.take_along_axis(self.dist, near, axis=1), axis=1, kind="stable")
        self.order = np.take_along_axis(near, by_dist, axis=1)  # (n, n_near)
        self.sorted = np.take_along_axis(self.dist, self.order, axis=1)
        self.is_self = self.order == np.arange(len(a))[:, None]

    def radii(self, counts: np.ndarray) -> np.ndarray:
        """Radius (k-th neighbour, itself excluded) of each clip in the multiset with these counts.

        Clip ``j`` stands for ``counts[j]`` positions; the clip's own other copies are
        ``counts[i] - 1`` positions at distance 0. Meaningless where ``counts[i] == 0``.
        """
        reached = np.cumsum(counts[self.order] - self.is_self, axis=1) >= self.k
        out = self.sorted[np.arange(len(counts)), np.argmax(reached, axis=1)]
        for i in np.flatnonzero(~reached[:, -1] & (counts > 0)):  # most near ones left out
            order = np.argsort(self.dist[i], kind="stable")
            at = np.argmax(np.cumsum(counts[order] - (order == i)) >= self.k)
            out[i] = self.dist[i, order[at]]
        return out


class _PRDC:
    """PRDC of multisets of ``x`` and ``y`` given by counts, from distances computed once."""

    def __init__(self, x: np.ndarray, y: np.ndarray, k: int) -> None:
        self.fake, self.real = _Neighbours(x, k), _Neighbours(y, k)
        self.dist = cdist(x, y)  # (n_fake, n_real)
        self.k = k

    def values(self, cx: np.ndarray, cy: np.ndarray) -> dict[str, float]:
        """One draw: ``cx (n,)`` and ``cy (m,)`` counts. Clips left out get radius -inf (no ball)."""
        r_fake = np.where(cx > 0, self.fake.radii(cx), -np.inf)
        r_real = np.where(cy > 0, self.real.radii(cy), -np.inf)
        n, m = cx.sum(), cy.sum()
        in_real = (self.dist < r_real[None, :]).astype(np.float32)  # fake i in real ball j
        n_balls = in_real @ cy.astype(np.float32)  # real positions whose ball holds fake i
        n_fakes = cx.astype(np.float32) @ in_real  # fake positions in real ball j
        recalled = (self.dist < r_fake[:, None]).any(axis=0)
        return {
            "precision": cx @ (n_balls > 0) / n,
            "recall": cy @ recalled / m,
            "density": cx @ n_balls / (self.k * n),
            "coverage": cy @ (n_fakes > 0) / m,
        }


# -------------------------------------------------------------------------------------- bootstrap
def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of ``n`` rows is drawn in each of ``n_boot`` resamples with replacement.

    Parameters
    ----------
    n : int
        Rows in the set (each resample draws ``n``).
    n_boot : int
        Resamples.
    rng : np.random.Generator
        The source of the draws.

    Returns
    -------
    np.ndarray
        ``(n_boot, n)`` integer counts, each row summing to ``n``; the resampled set of draw
        ``b`` is ``rows[np.repeat(np.arange(n), counts[b])]`` up to order.

    Examples
    --------
    >>> import numpy as np
    >>> counts = bootstrap_counts(4, 3, np.random.default_rng(0))
    >>> counts.shape, counts.sum(axis=1).tolist()
    ((3, 4), [4, 4, 4])
    """
    idx = rng.integers(0, n, size=(n_boot, n))
    idx += n * np.arange(n_boot)[:, None]
    return np.bincount(idx.ravel(), minlength=n * n_boot).reshape(n_boot, n)


def _estimate(
    value: float, draws: np.ndarray | None, *, low: float = -np.inf, high: float = np.inf
) -> Estimate:
    """The draws' 2.5-97.5 percentile spread, shifted so that their median sits on ``value``.

    Resampling with replacement biases every one of these distances (see ``set_distances``'s
    notes); the shift removes that bias, as a basic bootstrap would, while keeping the spread.
    The bounds are clipped to the metric's range [``low``, ``high``].
    """
    if draws is None or len(draws) == 0:  # n_boot = 0
        return Estimate(float(value))
    q_low, q_mid, q_high = np.percentile(draws, (PERCENTILES[0], 50.0, PERCENTILES[1]))
    shift = float(value) - float(q_mid)
    return Estimate(
        float(value),
        float(np.clip(q_low + shift, low, high)),
        float(np.clip(q_high + shift, low, high)),
    )


#: The range of each metric, for clipping the shifted intervals.
_RANGE = {"precision": (0.0, 1.0), "recall": (0.0, 1.0), "coverage": (0.0, 1.0), "density": (0.0, np.inf)}


def set_distances(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    k: int = 5,
    bandwidth: float | None = None,
    metrics: Collection[str] | None = None,
) -> dict[str, Estimate]:
    """KAD, FAD and PRDC of generated ``x`` against reference ``y``, with bootstrap 95% intervals.

    Every draw resamples the clips (rows) of both sets with replacement; an interval is the 2.5th
    to 97.5th percentile spread of the draws' values, centred on the point estimate (see Notes). KAD's bandwidth stays the full reference's
    median (or ``bandwidth``) in every draw. PRDC costs ``n * m`` per draw, so its interval uses
    only the first ``PRDC_BOOT_CELLS // (n * m)`` draws when that is fewer than ``n_boot`` (250 at
    2000 x 2000 clips) and has no interval when that is below ``PRDC_MIN_BOOT`` (100, beyond
    about 3000 x 3000 clips).

    Parameters
    ----------
    x, y : np.ndarray
        Generated ``(n, D)`` and reference ``(m, D)`` embeddings, at least :data:`MIN_CLIPS` rows
        each, finite.
    n_boot : int
        Bootstrap draws; 0 gives point estimates only (``low``/``high`` None).
    seed : int
        Seeds the draws (``np.random.default_rng``): the same seed gives the same numbers.
    k : int
        PRDC's neighbour; PRDC needs more than ``k`` clips per set, and its keys are left out
        (not an error) when a set is smaller.
    bandwidth : float, optional
        KAD's kernel sigma; default :func:`median_bandwidth` of ``y``.
    metrics : collection of str, optional
        Only these of :data:`METRICS` (default: all), e.g. ``("kad", "fad")`` to skip PRDC.

    Returns
    -------
    dict
        ``kad``, ``fad`` and, when both sets have more than ``k`` clips, ``precision``,
        ``recall``, ``density``, ``coverage`` (those of them asked for):
        :class:`~cadenza.evaluation.results.Estimate` each.

    Notes
    -----
    A resampled set holds only about 63% of the distinct clips, the rest as copies. Copies are
    neighbours at distance 0 (PRDC radii shrink) and pairs with kernel 1 (KAD grows by about
    ``1 / n``), and fewer distinct rows inflate FAD (roughly by ``D^2 / n``). So the draws are
    biased, and a plain percentile interval can miss the point estimate altogether (real-vs-real
    sets of 2000 clips at D = 136: FAD 0.11, percentiles of the draws [2.3, 2.7]). The interval
    reported is the draws' 2.5-97.5 percentile spread shifted so that their median sits on the
    point estimate (the bias removed, the spread kept), clipped to the metric's range.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> d = set_distances(rng.standard_normal((100, 8)) + 0.5, rng.standard_normal((100, 8)), n_boot=200)
    >>> sorted(d)
    ['coverage', 'density', 'fad', 'kad', 'precision', 'recall']
    >>> d["fad"].low < d["fad"].value < d["fad"].high
    True
    """
    x, y = _as_sets(x, y, min_rows=MIN_CLIPS, what="KAD and FAD")
    k = _check_k(k)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ParameterError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    wanted = set(METRICS if metrics is None else [metrics] if isinstance(metrics, str) else metrics)
    if not wanted <= set(METRICS):
        raise ParameterError(f"unknown metrics {sorted(wanted - set(METRICS))}; choose among {METRICS}")
    h = _check_bandwidth(bandwidth, y)
    n, m = len(x), len(y)
    rng = np.random.default_rng(seed)
    cx, cy = bootstrap_counts(n, n_boot, rng), bootstrap_counts(m, n_boot, rng)
    out = {}
    if "kad" in wanted:
        # the first "draw" counts every clip once: the point estimate, from the same kernel matrices
        ones_x, ones_y = np.ones((1, n), np.int64), np.ones((1, m), np.int64)
        kads = _kad_draws(x, y, np.vstack([ones_x, cx]), np.vstack([ones_y, cy]), h)
        out["kad"] = _estimate(kads[0], kads[1:])
    if "fad" in wanted:
        out["fad"] = _estimate(fad(x, y), _fad_draws(x, y, cx, cy), low=0.0)
    if min(n, m) > k and wanted & set(PRDC_METRICS):
        n_prdc = min(n_boot, PRDC_BOOT_CELLS // (n * m))
        if n_prdc < n_boot and n_prdc < PRDC_MIN_BOOT:
            n_prdc = 0
        metric = _PRDC(x, y, k)
        point = metric.values(np.ones(n, np.int64), np.ones(m, np.int64))
        with ThreadPoolExecutor(_n_threads()) as pool, threadpool_limits(limits=1, user_api="blas"):
            draws = list(pool.map(metric.values, cx[:n_prdc], cy[:n_prdc]))
        for key in PRDC_METRICS:
            if key in wanted:
                values = np.array([d[key] for d in draws]) if draws else None
                out[key] = _estimate(point[key], values, low=_RANGE[key][0], high=_RANGE[key][1])
    return out
