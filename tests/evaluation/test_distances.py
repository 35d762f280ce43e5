"""Set distances: closed forms for Gaussians, sklearn's Ledoit-Wolf, hand-made PRDC, bootstrap = explicit resamples."""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest
import scipy.linalg
from sklearn.covariance import LedoitWolf

from cadenza.errors import ParameterError
from cadenza.evaluation import distances
from cadenza.evaluation.distances import (
    MIN_CLIPS,
    bootstrap_counts,
    fad,
    kad,
    ledoit_wolf,
    median_bandwidth,
    prdc,
    set_distances,
)
from cadenza.evaluation.results import Estimate

PRDC_KEYS = ("precision", "recall", "density", "coverage")


def resampled(a: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The resampled set of one draw, built explicitly: row i ``counts[i]`` times."""
    return a[np.repeat(np.arange(len(a)), counts)]


def gaussians(seed: int, n: int = 200, m: int = 150, d: int = 6, shift: float = 0.4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) + shift, rng.standard_normal((m, d))


def reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The authors' code (clovaai/generative-evaluation-prdc, prdc.py), transcribed with numpy."""

    def radii(a: np.ndarray) -> np.ndarray:
        d = np.sqrt(np.sum((a[:, None, :] - a[None, :, :]) ** 2, axis=-1))
        return np.max(np.partition(d, k, axis=-1)[..., : k + 1], axis=-1)  # get_kth_value(k + 1)

    r_real, r_fake = radii(real), radii(fake)
    d = np.sqrt(np.sum((real[:, None, :] - fake[None, :, :]) ** 2, axis=-1))  # (real, fake)
    return {
        "precision": (d < r_real[:, None]).any(axis=0).mean(),
        "recall": (d < r_fake[None, :]).any(axis=1).mean(),
        "density": (1.0 / k) * (d < r_real[:, None]).sum(axis=0).mean(),
        "coverage": (d.min(axis=1) < r_real).mean(),
    }


# -------------------------------------------------------------------------------------------- KAD
def test_kad_matches_the_population_mmd_of_two_gaussians():
    # a, b ~ N(mu_a, s^2 I), N(mu_b, s^2 I): E k(a, b) = (sig^2 / (sig^2 + 2 s^2))^(D/2)
    # * exp(-||mu_a - mu_b||^2 / (2 (sig^2 + 2 s^2))), so MMD^2 = 2 E k(same) - 2 E k(shifted)
    d, s, sigma = 4, 1.0, 2.0
    mu = np.array([3.0, 0.0, 0.0, 0.0])
    same = (sigma**2 / (sigma**2 + 2 * s**2)) ** (d / 2)
    true = 2 * same - 2 * same * np.exp(-(mu @ mu) / (2 * (sigma**2 + 2 * s**2)))
    rng = np.random.default_rng(0)
    x, y = rng.normal(mu, s, (2000, d)), rng.normal(0.0, s, (2000, d))
    assert kad(x, y, bandwidth=sigma) == pytest.approx(true, rel=0.05)  # sd of the estimate: 1.5%


def test_kad_is_the_unbiased_estimator_on_a_hand_computed_case():
    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
    within = np.exp(-0.5) + np.exp(-2.0)  # the off-diagonal pairs only
    cross = (1.0 + np.exp(-2.0) + 2 * np.exp(-0.5)) / 4
    assert kad(x, y, bandwidth=1.0) == pytest.approx(within - 2 * cross, rel=1e-12)


def test_kad_of_one_distribution_is_near_zero_and_not_clipped():
    values = [kad(*gaussians(seed, shift=0.0), bandwidth=3.0) for seed in range(8)]
    assert max(abs(v) for v in values) < 0.02
    assert min(values) < 0  # unbiased: negative values are kept


def test_kad_bandwidth_comes_from_the_reference():
    rng = np.random.default_rng(1)
    y = rng.standard_normal((100, 5))
    x = 3.0 * rng.standard_normal((80, 5))
    assert kad(x, y) == kad(x, y, bandwidth=median_bandwidth(y))
    assert kad(x, y) != pytest.approx(kad(x, y, bandwidth=median_bandwidth(x)))


def test_median_bandwidth():
    rng = np.random.default_rng(2)
    for m in (2, 3, 10, 11):
        y = rng.standard_normal((m, 3))
        assert median_bandwidth(y) == pytest.approx(np.median(scipy.spatial.distance.pdist(y)), rel=1e-12)
    assert median_bandwidth(np.ones((5, 3))) == 1.0  # all rows equal: fall back
    with pytest.raises(ParameterError, match="at least 2"):
        median_bandwidth(np.ones((1, 3)))


# -------------------------------------------------------------------------------------------- FAD
def frechet_of_gaussians(m1, s1, m2, s2) -> float:
    root = scipy.linalg.sqrtm(s2)
    return float(
        np.sum((m1 - m2) ** 2)
        + np.trace(s1)
        + np.trace(s2)
        - 2 * np.trace(scipy.linalg.sqrtm(root @ s1 @ root)).real
    )


def test_fad_matches_the_closed_form_for_two_gaussians():
    m1, m2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 0.0, 2.0, 2.5])
    s1 = np.array([[2.0, 0.5, 0.0, 0.0], [0.5, 1.0, 0.3, 0.0], [0.0, 0.3, 1.5, 0.2], [0.0, 0.0, 0.2, 0.5]])
    s2 = np.diag([1.0, 2.0, 0.5, 1.0])
    rng = np.random.default_rng(0)
    x, y = rng.multivariate_normal(m1, s1, 20000), rng.multivariate_normal(m2, s2, 20000)
    assert fad(x, y) == pytest.approx(frechet_of_gaussians(m1, s1, m2, s2), rel=0.02)


def test_fad_of_a_set_with_itself_is_zero():
    x, _ = gaussians(3, n=300, d=10)
    value = fad(x, x)
    assert isinstance(value, float) and 0.0 <= value < 1e-9


def test_fad_is_real_and_non_negative_when_rank_deficient():
    for seed in range(5):
        x, y = gaussians(seed, n=20, m=15, d=50, shift=0.0)
        for a, b in ((x, y), (x, x), (y, x)):
            value = fad(a, b)
            assert isinstance(value, float) and np.isfinite(value) and value >= 0.0


def test_the_sqrtm_fad_of_the_public_tools_goes_wrong_where_fad_does_not():
    # the public tools: np.cov and scipy.linalg.sqrtm(sigma_x @ sigma_y) (then .real)
    x, _ = gaussians(0, n=20, d=50, shift=0.0)
    cov = np.cov(x, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        naive = 2 * np.trace(cov) - 2 * np.trace(scipy.linalg.sqrtm(cov @ cov))
    value = fad(x, x)
    assert isinstance(value, float) and 0.0 <= value < 1e-9
    if np.iscomplexobj(naive) or naive.real < 0:  # scipy 1.x: about -1e-6 - 4e-7j here
        assert not np.iscomplexobj(value)


def test_ledoit_wolf_matches_sklearn():
    rng = np.random.default_rng(4)
    for n, d in ((50, 80), (300, 10), (40, 1), (2, 3)):
        x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)
        mean, cov = ledoit_wolf(x)
        lw = LedoitWolf().fit(x)
        np.testing.assert_allclose(mean, lw.location_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cov, lw.covariance_, rtol=1e-10, atol=1e-12 * np.abs(cov).max())


def test_ledoit_wolf_shrinks_when_rows_are_few():
    x, _ = gaussians(5, n=10, d=30, shift=0.0)
    _, cov = ledoit_wolf(x)
    assert np.linalg.eigvalsh(cov).min() > 0  # the empirical covariance has rank 9
    with pytest.raises(ParameterError, match="at least 2"):
        ledoit_wolf(x[:1])


# ------------------------------------------------------------------------------------------- PRDC
def test_prdc_hand_made():
    # k = 1. Real radii: 0, 1, 2, 3 -> 1; 30, 33 -> 3. Fake radii: 0.5, 2.5 -> 2; 9.6 -> 7.1; 20, 21 -> 1.
    real = np.array([0.0, 1.0, 2.0, 3.0, 30.0, 33.0])[:, None]
    fake = np.array([0.5, 2.5, 9.6, 20.0, 21.0])[:, None]
    out = prdc(fake, real, k=1)
    assert out["precision"] == pytest.approx(2 / 5)  # 0.5 and 2.5 lie in real balls
    assert out["density"] == pytest.approx(4 / 5)  # each of them in two
    assert out["recall"] == pytest.approx(4 / 6)  # 30 and 33 lie in no fake ball
    assert out["coverage"] == pytest.approx(4 / 6)  # the balls of 30 and 33 hold no fake


def test_prdc_of_identical_sets():
    x, _ = gaussians(6, n=50, d=3)
    out = prdc(x, x, k=3)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    # on a line at unit spacing the radius (k = 2) is 1 (2 at the ends): a neighbour on the
    # boundary is outside, as in the authors' code, so a clip is in its own ball and the ends'
    density = prdc(np.arange(10.0)[:, None], np.arange(10.0)[:, None], k=2)["density"]
    assert density == pytest.approx((10 + 2) / (2 * 10))


def test_prdc_matches_the_authors_code():
    for seed in range(3):
        x, y = gaussians(seed, n=60, m=45, d=4, shift=0.3)
        x = np.vstack([x, x[:7]])  # duplicates: neighbours at distance 0
        for k in (1, 5):
            expected = reference_prdc(y, x, k)
            assert prdc(x, y, k=k) == pytest.approx(expected, rel=1e-12)


# -------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_counts():
    counts = bootstrap_counts(7, 50, np.random.default_rng(0))
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all() and counts.min() >= 0
    again = bootstrap_counts(7, 50, np.random.default_rng(0))
    np.testing.assert_array_equal(counts, again)


def draws(n: int, m: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The counts set_distances draws with this seed (x's first, then y's)."""
    rng = np.random.default_rng(seed)
    return bootstrap_counts(n, n_boot, rng), bootstrap_counts(m, n_boot, rng)


def test_bootstrap_kad_equals_kad_of_the_explicit_resamples():
    x, y = gaussians(7, n=40, m=30, d=5)
    cx, cy = draws(len(x), len(y), 6, seed=3)
    h = median_bandwidth(y)
    batched = distances._kad_draws(x, y, cx, cy, h)
    explicit = [kad(resampled(x, a), resampled(y, b), bandwidth=h) for a, b in zip(cx, cy)]
    np.testing.assert_allclose(batched, explicit, rtol=0, atol=1e-10)


def test_weighted_ledoit_wolf_equals_ledoit_wolf_of_the_explicit_resamples():
    for n, d in ((40, 5), (12, 20)):
        x, _ = gaussians(8, n=n, d=d)
        counts = bootstrap_counts(n, 5, np.random.default_rng(1))
        means, covs = distances._weighted_ledoit_wolf(x, counts)
        for b, c in enumerate(counts):
            mean, cov = ledoit_wolf(resampled(x, c))
            np.testing.assert_allclose(means[b], mean, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(covs[b], cov, rtol=1e-10, atol=1e-12 * np.abs(cov).max())


def test_bootstrap_fad_equals_fad_of_the_explicit_resamples():
    x, y = gaussians(9, n=40, m=30, d=5)
    cx, cy = draws(len(x), len(y), 6, seed=4)
    batched = distances._fad_draws(x, y, cx, cy)
    explicit = [fad(resampled(x, a), resampled(y, b)) for a, b in zip(cx, cy)]
    np.testing.assert_allclose(batched, explicit, rtol=1e-9)


def test_bootstrap_prdc_equals_prdc_of_the_explicit_resamples():
    x, y = gaussians(10, n=40, m=30, d=3)
    cx, cy = draws(len(x), len(y), 20, seed=5)
    for k in (1, 3):
        metric = distances._PRDC(x, y, k)
        for a, b in zip(cx, cy):
            expected = reference_prdc(resampled(y, b), resampled(x, a), k)
            assert metric.values(a, b) == pytest.approx(expected, rel=1e-12)


def test_set_distances_intervals_are_percentiles_of_the_explicit_resamples():
    x, y = gaussians(11, n=30, m=25, d=4)
    n_boot, seed, k = 9, 12, 3
    out = set_distances(x, y, n_boot=n_boot, seed=seed, k=k)
    cx, cy = draws(len(x), len(y), n_boot, seed)
    h = median_bandwidth(y)
    explicit = {"kad": [], "fad": [], **{key: [] for key in PRDC_KEYS}}
    for a, b in zip(cx, cy):
        xs, ys = resampled(x, a), resampled(y, b)
        explicit["kad"].append(kad(xs, ys, bandwidth=h))
        explicit["fad"].append(fad(xs, ys))
        for key, value in prdc(xs, ys, k=k).items():
            explicit[key].append(value)
    assert out["kad"].value == pytest.approx(kad(x, y), abs=1e-12)
    assert out["fad"].value == pytest.approx(fad(x, y), rel=1e-12)
    assert {key: out[key].value for key in PRDC_KEYS} == prdc(x, y, k=k)
    for key, values in explicit.items():
        low, mid, high = np.percentile(values, [2.5, 50, 97.5])
        shift = out[key].value - mid  # the spread of the draws, centred on the estimate
        bounds = (0.0, 1.0) if key in ("precision", "recall", "coverage") else (0.0, np.inf)
        expected = (
            (low + shift, high + shift)
            if key == "kad"
            else tuple(np.clip([low + shift, high + shift], *bounds))
        )
        assert (out[key].low, out[key].high) == pytest.approx(expected, rel=1e-9, abs=1e-12), key


def test_set_distances_is_seeded():
    x, y = gaussians(13)
    a = set_distances(x, y, n_boot=50, seed=1)
    b = set_distances(x, y, n_boot=50, seed=1)
    c = set_distances(x, y, n_boot=50, seed=2)
    assert a == b
    assert a["kad"].low != c["kad"].low and a["fad"].high != c["fad"].high
    assert all(isinstance(e, Estimate) for e in a.values())


def test_set_distances_interval_contains_the_estimate():
    rng = np.random.default_rng(14)
    x, y = rng.standard_normal((300, 4)) + 0.5, rng.standard_normal((300, 4))
    out = set_distances(x, y, n_boot=200)
    for key in ("kad", "fad", "precision", "recall", "density", "coverage"):
        assert out[key].low <= out[key].value <= out[key].high, key
    assert out["kad"].low > 0 and out["fad"].low > 0  # clearly apart
    # one distribution in many dimensions, where the draws' own percentiles miss the estimate
    a, b = rng.standard_normal((200, 60)), rng.standard_normal((200, 60))
    same = set_distances(a, b, n_boot=200)
    for key, e in same.items():
        assert e.low <= e.value <= e.high, key
    assert same["kad"].low < 0 < same["kad"].high and same["fad"].low >= 0


def test_set_distances_without_bootstrap():
    x, y = gaussians(15)
    out = set_distances(x, y, n_boot=0)
    assert set(out) == {"kad", "fad", *PRDC_KEYS}
    assert all(e.low is None and e.high is None for e in out.values())
    assert out["kad"].value == pytest.approx(kad(x, y), abs=1e-12)


def test_set_distances_computes_only_the_metrics_asked_for():
    x, y = gaussians(20)
    full = set_distances(x, y, n_boot=30)
    some = set_distances(x, y, n_boot=30, metrics=("kad", "fad"))
    assert some == {"kad": full["kad"], "fad": full["fad"]}
    assert set_distances(x, y, n_boot=30, metrics=["coverage"]) == {"coverage": full["coverage"]}
    with pytest.raises(ParameterError, match="unknown metrics"):
        set_distances(x, y, metrics=("kad", "fid"))


def test_set_distances_prdc_draws_are_capped(monkeypatch):
    x, y = gaussians(16, n=40, m=30)
    monkeypatch.setattr(distances, "PRDC_BOOT_CELLS", 40 * 30 * 150)  # room for 150 draws
    capped = set_distances(x, y, n_boot=300)
    assert capped["precision"].low is not None
    monkeypatch.setattr(distances, "PRDC_BOOT_CELLS", 40 * 30 * 50)  # 50 < PRDC_MIN_BOOT
    skipped = set_distances(x, y, n_boot=300)
    assert skipped["precision"].low is None and skipped["precision"].value == capped["precision"].value
    assert skipped["kad"] == capped["kad"]


# ----------------------------------------------------------------------------------------- errors
def test_too_small_sets_raise_with_the_sizes():
    x, y = gaussians(17, n=10, m=10)
    assert MIN_CLIPS == 2
    with pytest.raises(ParameterError, match=r"at least 2 clips per set; got 1 generated \(x\) and 10"):
        set_distances(x[:1], y)
    with pytest.raises(ParameterError, match=r"got 10 generated \(x\) and 1 reference"):
        set_distances(x, y[:1])
    for function in (kad, fad):
        with pytest.raises(ParameterError, match="at least 2"):
            function(x[:1], y)
    with pytest.raises(
        ParameterError, match=r"PRDC with k=5 needs at least 6 clips per set; got 5 generated"
    ):
        prdc(x[:5], y)


def test_prdc_is_left_out_when_only_prdc_is_impossible():
    x, y = gaussians(18, n=4, m=50)
    out = set_distances(x, y, n_boot=20, k=5)
    assert set(out) == {"kad", "fad"}
    assert out["kad"].low is not None


def test_bad_rows_and_arguments_raise():
    x, y = gaussians(19)
    bad = x.copy()
    bad[3, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(
        ParameterError, match=r"x has 2 of 200 rows with NaN or infinite values \(first: row 3\)"
    ):
        set_distances(bad, y)
    with pytest.raises(ParameterError, match="y has 1 of"):
        kad(x, np.vstack([y, np.full((1, y.shape[1]), np.nan)]))
    with pytest.raises(ParameterError, match="differ in width"):
        fad(x, y[:, :3])
    with pytest.raises(ParameterError, match="2-D"):
        kad(x[0], y)
    with pytest.raises(ParameterError, match="n_boot"):
        set_distances(x, y, n_boot=-1)
    with pytest.raises(ParameterError, match="k must"):
        prdc(x, y, k=0)
    with pytest.raises(ParameterError, match="bandwidth"):
        kad(x, y, bandwidth=0.0)


def test_docstring_examples():
    result = doctest.testmod(distances, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0
