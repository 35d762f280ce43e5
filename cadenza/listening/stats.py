"""Statistics of a listening test: intervals that account for listeners and clips, tests, Bradley-Terry.

A rating depends on the listener (some rate everything high) and on the clip (some of a
model's clips are better than others), so ratings are not independent and a pooled standard
error is far too narrow. The intervals here come from the **two-way cluster bootstrap**
(Owen's "pigeonhole" bootstrap, 2007): every draw resamples listeners and, independently,
each condition's clips, both with replacement, and weights every rating by the product of its
listener's and its clip's multiplicities. Its variance is slightly conservative (Owen), which
offsets the percentile interval's optimism with few listeners; the tests check the coverage on
simulated listeners with known effects.

- :func:`cluster_bootstrap_means`: draws of every condition's mean rating;
- :func:`wilcoxon_pairs` + :func:`holm`: paired comparisons of per-listener means;
- :func:`bradley_terry` / :func:`bradley_terry_draws`: strengths from pairwise preferences
  (penalised maximum likelihood, Newton's method, batched over bootstrap draws);
- :func:`pair_fail_share` / :func:`choice_fail_share`: the screening rule's measure.

Examples
--------
>>> holm([0.01, 0.04, 0.03])
array([0.03, 0.06, 0.06])
>>> wins = np.array([[0, 8], [2, 0]])  # 0 beat 1 eight times, lost twice
>>> theta = bradley_terry(wins, l2=0.0)
>>> round(float(1 / (1 + np.exp(theta[1] - theta[0]))), 3)
0.8
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from cadenza.errors import ParameterError

__all__ = [
    "bradley_terry",
    "bradley_terry_draws",
    "choice_fail_share",
    "cluster_bootstrap_bradley_terry",
    "cluster_bootstrap_means",
    "holm",
    "interval",
    "pair_fail_share",
    "wilcoxon_pairs",
    "win_matrix",
]

#: Bootstrap draws are made this many at a time (bounded memory).
CHUNK = 256


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of ``pvalues`` (family-wise error), in their order."""
    p = np.asarray(pvalues, np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def interval(draws: np.ndarray, *, level: float = 0.95) -> tuple[float | None, float | None]:
    """The percentile interval of bootstrap ``draws`` (NaN draws ignored); Nones without draws."""
    draws = np.asarray(draws, np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return None, None
    a = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [a, 1.0 - a])
    return float(low), float(high)


def _index(values: Sequence) -> tuple[np.ndarray, list]:
    levels = list(dict.fromkeys(values))
    lookup = {v: k for k, v in enumerate(levels)}
    return np.array([lookup[v] for v in values], np.int64), levels


def _pigeonhole_weights(
    listener: np.ndarray, clips: Sequence[np.ndarray], clip_group: np.ndarray, *, n_boot: int, seed: int
):
    """Yield ``(b, R)`` weights of the R observations, :data:`CHUNK` draws at a time.

    An observation's weight is its listener's multiplicity times that of each of its clips
    (one clip for a rating, two for a pair); listeners are drawn with replacement, and each
    group's clips with replacement within the group.
    """
    rng = np.random.default_rng(seed)
    n_l = int(listener.max()) + 1 if len(listener) else 0
    n_c = len(clip_group)
    members = [np.flatnonzero(clip_group == g) for g in np.unique(clip_group)]
    for start in range(0, n_boot, CHUNK):
        b = min(CHUNK, n_boot - start)
        w_l = rng.multinomial(n_l, np.full(n_l, 1.0 / max(n_l, 1)), size=b).astype(np.float64)
        w_c = np.zeros((b, n_c))
        for idx in members:
            w_c[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=b)
        w = w_l[:, listener]
        for c in clips:
            w = w * w_c[:, c]
        yield start, w


def cluster_bootstrap_means(
    y: Sequence[float],
    listener: Sequence,
    clip: Sequence,
    group: Sequence,
    *,
    groups: Sequence | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Two-way cluster bootstrap draws of each group's mean of ``y``.

    Parameters
    ----------
    y : sequence of float
        The ratings.
    listener, clip, group : sequences
        Each rating's listener, clip and group (condition); a clip belongs to one group.
    groups : sequence, optional
        The groups in the order of the output's columns (default: order of appearance).
    n_boot : int
    seed : int

    Returns
    -------
    np.ndarray
        ``(n_boot, n_groups)``: draw ``b`` resamples the listeners, and each group's clips, with
        replacement; a rating counts as often as its listener times its clip was drawn. A group
        left with no rating in a draw is NaN there.

    Examples
    --------
    >>> draws = cluster_bootstrap_means([4, 5, 2, 1], ["a", "b", "a", "b"], [1, 2, 3, 4],
    ...                                 ["m", "m", "n", "n"], n_boot=100)
    >>> draws.shape, float(np.nanmin(draws[:, 0])) >= 4, float(np.nanmax(draws[:, 0])) <= 5
    ((100, 2), True, True)
    """
    y = np.asarray(y, np.float64)
    if not (len(y) == len(listener) == len(clip) == len(group)):
        raise ParameterError("y, listener, clip and group must have the same length")
    groups = list(dict.fromkeys(group)) if groups is None else list(groups)
    li, _ = _index(listener)
    ci, clips = _index(clip)
    gi = np.array([groups.index(g) for g in group], np.int64)
    clip_group = np.zeros(len(clips), np.int64)
    clip_group[ci] = gi
    out = np.full((n_boot, len(groups)), np.nan)
    masks = [gi == g for g in range(len(groups))]
    for start, w in _pigeonhole_weights(li, [ci], clip_group, n_boot=n_boot, seed=seed):
        for g, mask in enumerate(masks):
            den = w[:, mask].sum(axis=1)
            num = w[:, mask] @ y[mask]
            out[start : start + len(w), g] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def win_matrix(
    winner: Sequence[int], loser: Sequence[int], n_groups: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """``wins[..., i, j]``: the (weighted) number of times group ``i`` was preferred to group ``j``."""
    pair = np.asarray(winner, np.int64) * n_groups + np.asarray(loser, np.int64)
    if weights is None:
        return np.bincount(pair, minlength=n_groups * n_groups).reshape(n_groups, n_groups).astype(float)
    onehot = np.zeros((len(pair), n_groups * n_groups))
    onehot[np.arange(len(pair)), pair] = 1.0
    return (weights @ onehot).reshape(-1, n_groups, n_groups)


def cluster_bootstrap_bradley_terry(
    winner: Sequence,
    loser: Sequence,
    listener: Sequence,
    winner_clip: Sequence,
    loser_clip: Sequence,
    *,
    groups: Sequence,
    n_boot: int = 2000,
    seed: int = 0,
    l2: float = 0.1,
) -> np.ndarray:
    """Two-way cluster bootstrap draws of Bradley-Terry log-strengths, ``(n_boot, n_groups)``.

    Each trial is one preference (``winner``'s clip over ``loser``'s); a draw resamples the
    listeners and each group's clips, and weights a trial by its listener's multiplicity times
    both clips'.
    """
    groups = list(groups)
    wi = np.array([groups.index(g) for g in winner], np.int64)
    lo = np.array([groups.index(g) for g in loser], np.int64)
    li, _ = _index(listener)
    ci, clips = _index([*winner_clip, *loser_clip])
    cw, cl = ci[: len(wi)], ci[len(wi) :]
    clip_group = np.zeros(len(clips), np.int64)
    clip_group[cw], clip_group[cl] = wi, lo
    out = np.full((n_boot, len(groups)), np.nan)
    for start, w in _pigeonhole_weights(li, [cw, cl], clip_group, n_boot=n_boot, seed=seed):
        out[start : start + len(w)] = bradley_terry_draws(win_matrix(wi, lo, len(groups), w), l2=l2)
    return out


def wilcoxon_pairs(
    means: dict[str, dict[str, float]], pairs: Sequence[tuple[str, str]]
) -> list[dict[str, float | int | None]]:
    """Wilcoxon signed-rank tests of per-listener means, one per pair, with Holm's adjustment.

    Parameters
    ----------
    means : dict
        ``{condition: {listener: mean rating}}``.
    pairs : sequence of (str, str)
        The comparisons (the family Holm's adjustment covers).

    Returns
    -------
    list of dict
        Per pair: ``n_listeners`` (those who rated both), ``statistic`` (W), ``p`` and
        ``p_holm`` (None when no listener rated both; 1.0 when every difference is zero).
    """
    from scipy.stats import wilcoxon

    rows = []
    for a, b in pairs:
        both = sorted(set(means.get(a, {})) & set(means.get(b, {})))
        d = np.array([means[a][k] - means[b][k] for k in both])
        stat = p = None
        if len(d) and np.all(d == 0):
            stat, p = 0.0, 1.0
        elif len(d):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = wilcoxon(d)
            stat, p = float(res.statistic), float(res.pvalue)
        rows.append({"a": a, "b": b, "n_listeners": len(both), "statistic": stat, "p": p})
    tested = [k for k, r in enumerate(rows) if r["p"] is not None]
    adjusted = holm([rows[k]["p"] for k in tested])  # type: ignore[misc]
    for r in rows:
        r["p_holm"] = None
    for k, p in zip(tested, adjusted):
        rows[k]["p_holm"] = float(p)
    return rows


def bradley_terry_draws(wins: np.ndarray, *, l2: float = 0.1, n_iter: int = 50) -> np.ndarray:
    """Bradley-Terry log-strengths for a batch of win matrices, centred to mean 0.

    Parameters
    ----------
    wins : np.ndarray
        ``(B, M, M)`` or ``(M, M)``: ``wins[..., i, j]`` how often (weighted) ``i`` beat ``j``.
    l2 : float
        A ridge penalty on the log-strengths (a weak prior that keeps them finite when a
        condition won or lost every comparison).
    n_iter : int
        Newton steps.

    Returns
    -------
    np.ndarray
        ``(B, M)`` (or ``(M,)``): ``P(i beats j) = 1 / (1 + exp(theta_j - theta_i))``.
    """
    w = np.asarray(wins, np.float64)
    single = w.ndim == 2
    w = w[None] if single else w
    b, m, _ = w.shape
    n = w + np.swapaxes(w, 1, 2)
    theta = np.zeros((b, m))
    eye = np.eye(m)
    # the likelihood only fixes differences: a tiny ridge keeps the Hessian invertible when l2 is 0
    ridge = max(l2, 1e-9)
    for _ in range(n_iter):
        diff = theta[:, :, None] - theta[:, None, :]
        p = 1.0 / (1.0 + np.exp(-diff))
        grad = (w - n * p).sum(axis=2) - ridge * theta
        v = n * p * (1.0 - p)
        hess = v - eye * v.sum(axis=2)[:, :, None] - ridge * eye
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        theta = theta - step
        if np.max(np.abs(step)) < 1e-10:
            break
    theta = theta - theta.mean(axis=1, keepdims=True)
    return theta[0] if single else theta


def bradley_terry(wins: np.ndarray, *, l2: float = 0.1) -> np.ndarray:
    """Bradley-Terry log-strengths of one ``(M, M)`` win matrix (see :func:`bradley_terry_draws`)."""
    return bradley_terry_draws(np.asarray(wins, np.float64), l2=l2)


def pair_fail_share(real: Sequence[float], anchor: Sequence[float]) -> float | None:
    """ACR screening: the share of (real clip, anchor clip) pairs a listener rated real <= anchor.

    Examples
    --------
    >>> pair_fail_share([5, 4], [1, 4])  # 4 <= 4 fails, the rest pass
    0.25
    """
    r, a = np.asarray(real, np.float64), np.asarray(anchor, np.float64)
    if r.size == 0 or a.size == 0:
        return None
    return float((r[:, None] <= a[None, :]).mean())


def choice_fail_share(chose_anchor: Sequence[bool]) -> float | None:
    """A/B screening: the share of reference-against-anchor trials in which the anchor was preferred."""
    c = np.asarray(chose_anchor, bool)
    return float(c.mean()) if c.size else None
