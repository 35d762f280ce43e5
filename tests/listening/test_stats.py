"""Statistics on simulated listeners with known effects: interval coverage, screening, tests, Bradley-Terry.

Simulated ACR ratings follow a crossed random-effects model - ``round(mu_condition + listener
+ clip + noise)`` clipped to 1..5 - whose true condition means (over the populations of
listeners and clips) are known in closed form; the intervals must cover them at about their
nominal 95% rate. Random raters (uniform 1..5, or coin flips in A/B) must be screened out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from cadenza.listening import stats
from cadenza.listening.design import ANCHOR, REFERENCE, Design
from cadenza.listening.experiment import Experiment
from cadenza.listening.results import analyse
from cadenza.listening.store import Event
from tests.listening.helpers import make_experiment

SD_LISTENER, SD_CLIP, SD_NOISE = 0.5, 0.4, 0.7


def true_mean(mu: float) -> float:
    """E[clip(round(mu + Z), 1, 5)] for the simulated rating's total spread."""
    sd = np.sqrt(SD_LISTENER**2 + SD_CLIP**2 + SD_NOISE**2)
    edges = np.array([-np.inf, 1.5, 2.5, 3.5, 4.5, np.inf])
    return float(np.diff(norm.cdf((edges - mu) / sd)) @ np.arange(1, 6))


def rate(mu: float, rng: np.random.Generator) -> int:
    return int(min(5, max(1, round(mu + rng.normal(0, SD_NOISE)))))


def simulate_acr(design: Design, mus: dict[str, float], n_listeners: int, rng: np.random.Generator) -> tuple:
    bias = rng.normal(0, SD_LISTENER, n_listeners)
    clip = {t: rng.normal(0, SD_CLIP) for t in design.condition_of}
    y, who, clips, groups = [], [], [], []
    for listener in range(n_listeners):
        for trial in design.block(listener):
            token = trial.tokens[0]
            c = design.condition_of[token]
            y.append(rate(mus[c] + bias[listener] + clip[token], rng))
            who.append(listener)
            clips.append(token)
            groups.append(c)
    return y, who, clips, groups


@pytest.mark.parametrize(
    ("n_listeners", "n_clips", "n_per"),
    [(10, 5, 5), (12, 8, 3)],  # paper 000's complete design; an incomplete one
)
def test_cluster_bootstrap_intervals_cover_the_true_means(n_listeners: int, n_clips: int, n_per: int) -> None:
    mus = {"low": 2.0, "mid": 3.0, "high": 4.2}
    truth = {c: true_mean(m) for c, m in mus.items()}
    rng = np.random.default_rng(1)
    hits, widths = [], []
    for sim in range(200):
        conditions = {c: [f"{c}{k}-{sim}" for k in range(n_clips)] for c in mus}
        design = Design(conditions, n_per_condition=n_per, seed=sim, use_repeat=False)
        y, who, clips, groups = simulate_acr(design, mus, n_listeners, rng)
        draws = stats.cluster_bootstrap_means(y, who, clips, groups, groups=list(mus), n_boot=300, seed=sim)
        for k, c in enumerate(mus):
            low, high = stats.interval(draws[:, k])
            hits.append(low <= truth[c] <= high)
            widths.append(high - low)
    coverage = float(np.mean(hits))
    assert 0.90 <= coverage <= 0.995, coverage
    # a pooled standard error, which ignores listeners and clips, is far too narrow
    assert np.mean(widths) > 0.5


def test_holm_and_wilcoxon() -> None:
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    assert stats.holm([]).size == 0
    means = {
        "a": {f"L{k}": 4.0 + 0.1 * k for k in range(10)},
        "b": {f"L{k}": 2.0 for k in range(10)},
        "c": {f"L{k}": 2.0 for k in range(10)},
    }
    ab, bc, ad = stats.wilcoxon_pairs(means, [("a", "b"), ("b", "c"), ("a", "d")])
    assert ab["p"] < 0.01 and ab["p_holm"] == pytest.approx(min(1.0, 2 * ab["p"]))
    assert bc["p"] == 1.0 and bc["n_listeners"] == 10
    assert ad["p"] is None and ad["p_holm"] is None


def test_bradley_terry_intervals_cover_known_strengths() -> None:
    theta = np.array([1.0, 0.0, -1.0])  # centred
    rng = np.random.default_rng(2)
    hits = []
    for sim in range(100):
        winner, loser, who, wclip, lclip = [], [], [], [], []
        for listener in range(12):
            for i, j in [(0, 1), (0, 2), (1, 2)] * 2:
                ci, cj = f"{i}-{rng.integers(6)}", f"{j}-{rng.integers(6)}"
                i_wins = rng.random() < 1 / (1 + np.exp(theta[j] - theta[i]))
                winner.append(i if i_wins else j)
                loser.append(j if i_wins else i)
                wclip.append(ci if i_wins else cj)
                lclip.append(cj if i_wins else ci)
                who.append(listener)
        draws = stats.cluster_bootstrap_bradley_terry(
            winner, loser, who, wclip, lclip, groups=[0, 1, 2], n_boot=200, seed=sim
        )
        for k in range(3):
            low, high = stats.interval(draws[:, k])
            hits.append(low <= theta[k] <= high)
    assert 0.88 <= np.mean(hits) <= 1.0, np.mean(hits)
    # the point estimate of a large sample is close to the truth
    wins = np.zeros((3, 3))
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        p = 1 / (1 + np.exp(theta[j] - theta[i]))
        wins[i, j], wins[j, i] = 10000 * p, 10000 * (1 - p)
    np.testing.assert_allclose(stats.bradley_terry(wins, l2=0.0), theta, atol=1e-6)


@pytest.fixture(scope="module")
def acr_test(tmp_path_factory: pytest.TempPathFactory) -> Experiment:
    exp = make_experiment(tmp_path_factory.mktemp("acr"), n_per_condition=3)
    yield exp
    exp.close()


def test_analysis_screens_random_raters_and_recovers_the_effects(acr_test: Experiment) -> None:
    exp = acr_test
    mus = {"lstm": 3.8, "gru": 2.4, REFERENCE: 4.4, ANCHOR: 1.5}
    rng = np.random.default_rng(5)
    clip = {t: rng.normal(0, SD_CLIP) for t in exp.design.condition_of}
    kinds = {}
    for k in range(40):
        who = exp.store.add_listener(seed_of=exp.listener_seed)
        kinds[who.pseudonym] = random_rater = k % 4 == 3  # 10 random raters among 40
        bias = rng.normal(0, SD_LISTENER)
        for trial, t in enumerate(exp.design.block(who.number)):
            token = t.tokens[0]
            mu = mus[exp.design.condition_of[token]] + bias + clip[token]
            rating = int(rng.integers(1, 6)) if random_rater else rate(mu, rng)
            if trial == 0:  # a changed mind: only the last answer counts
                exp.store.add_event(Event(who.pseudonym, trial, t.tokens, rating=5 if rating < 5 else 1))
            exp.store.add_event(Event(who.pseudonym, trial, t.tokens, rating=rating, listened=1.0))
    # one listener who stopped half-way is reported, not analysed
    quitter = exp.store.add_listener(seed_of=exp.listener_seed)
    t0 = exp.design.block(quitter.number)[0]
    exp.store.add_event(Event(quitter.pseudonym, 0, t0.tokens, rating=3))

    results = analyse(exp, n_boot=500)
    by = {s.pseudonym: s for s in results.listeners}
    random_out = [by[p].screened for p, is_random in kinds.items() if is_random]
    genuine_out = [by[p].screened for p, is_random in kinds.items() if not is_random]
    assert np.mean(random_out) >= 0.9, random_out
    assert np.mean(genuine_out) <= 0.05, genuine_out
    assert not by[quitter.pseudonym].analysed and not by[quitter.pseudonym].complete
    counts = results.counts()
    assert counts["listeners"] == 41 and counts["analysed"] == 40
    assert counts["kept"] + counts["screened_out"] == 40
    assert counts["answers_after_screening"] < counts["answers_before_screening"]

    rows = {r.condition: r for r in results.rows}
    for c, mu in mus.items():
        row = rows[c]
        assert row.n_listeners == counts["kept"] and row.n_answers == 3 * counts["kept"]
        assert row.value.low < row.value.value < row.value.high
        assert abs(row.value.value - true_mean(mu)) < 0.5
    # random raters pull every condition towards 3 before screening
    assert rows[REFERENCE].all_value.value < rows[REFERENCE].value.value
    assert rows[ANCHOR].all_value.value > rows[ANCHOR].value.value
    comparisons = {(c["a"], c["b"]): c for c in results.comparisons}
    assert set(comparisons) == {("gru", "lstm"), ("gru", REFERENCE), ("lstm", REFERENCE)}
    gru_lstm = comparisons[("gru", "lstm")]  # true difference 2.4 - 3.8
    assert gru_lstm["p_holm"] < 0.01 and gru_lstm["difference"].high < 0
    # every listener's repeated trial was measured
    assert all(s.repeat_difference is not None for s in results.listeners if s.analysed)


def test_ab_analysis_orders_the_models_and_screens_coin_flippers(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, mode="ab", n_per_condition=1)
    theta = {"lstm": 1.0, "gru": -0.5, REFERENCE: 2.0, ANCHOR: -2.5}
    rng = np.random.default_rng(3)
    flippers = set()
    for k in range(30):
        who = exp.store.add_listener(seed_of=exp.listener_seed)
        if k % 5 == 4:
            flippers.add(who.pseudonym)
        for trial, t in enumerate(exp.design.block(who.number)):
            a, b = (exp.design.condition_of[x] for x in t.tokens)
            p_a = 0.5 if who.pseudonym in flippers else 1 / (1 + np.exp(theta[b] - theta[a]))
            choice = t.tokens[0] if rng.random() < p_a else t.tokens[1]
            exp.store.add_event(Event(who.pseudonym, trial, t.tokens, choice=choice, listened=2.0))
    results = analyse(exp, n_boot=300)
    screened = {s.pseudonym for s in results.listeners if s.screened}
    assert len(screened & flippers) >= 4  # a coin flipper passes three checks with probability 1/8
    assert len(screened - flippers) <= 2  # one lapse in three checks screens a genuine listener out
    rows = {r.condition: r for r in results.rows}
    order = sorted(rows, key=lambda c: -rows[c].value.value)
    assert order == [REFERENCE, "lstm", "gru", ANCHOR]
    for row in rows.values():
        assert row.value.low <= row.value.value <= row.value.high
        assert 0 <= row.win_rate <= 1
    pair = next(c for c in results.comparisons if (c["a"], c["b"]) == ("gru", "lstm"))
    assert pair["p_a_preferred"].value < 0.4 and pair["n_trials"] > 0
    exp.close()
