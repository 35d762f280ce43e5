"""The outcome of a listening test: screening, per-model estimates with intervals, comparisons.

:func:`analyse` reads a test's event log (the last answer of every listener's trial counts),
rebuilds each listener's block from the stored design, and computes:

1. **Who counts.** Listeners who finished their block (``include_partial`` adds the others).
   The screening rule stated in ``test.json`` before the test (see
   :func:`~cadenza.listening.experiment.screening_rule`) marks some of them; they are reported
   with their numbers, and every row shows its values both after and before screening.
2. **ACR.** Per condition, the mean rating (first presentations; the repeated trial only
   measures consistency) with a 95% interval from the two-way cluster bootstrap over
   listeners and clips (:func:`~cadenza.listening.stats.cluster_bootstrap_means`). Pairs of
   models, and each model against the hidden reference: the difference of means with its
   bootstrap interval, and a Wilcoxon signed-rank test on per-listener means, Holm-adjusted.
3. **A/B.** Per condition, the Bradley-Terry log-strength (centred) with a cluster-bootstrap
   interval and the raw win rate; per pair, the modelled probability of preference.

Examples
--------
>>> results = analyse(open_experiment("results/"))   # doctest: +SKIP
>>> print(format_table(results))                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from cadenza.evaluation.results import Estimate, finite_or_none
from cadenza.listening import stats
from cadenza.listening.design import ANCHOR, REFERENCE
from cadenza.listening.experiment import Experiment

__all__ = ["LABELS", "ListenerSummary", "Results", "Row", "analyse"]

#: How the hidden conditions are named in tables.
LABELS = {REFERENCE: "real music (hidden reference)", ANCHOR: "anchor (low-pass 3.5 kHz)"}
METHOD = {
    "acr": (
        "mean rating (ACR, 1-5, ITU-T P.800) with a 95% interval from a two-way cluster bootstrap over "
        "listeners and clips; pairs by a Wilcoxon signed-rank test on per-listener means, Holm-adjusted"
    ),
    "ab": (
        "Bradley-Terry log-strength (centred, penalised maximum likelihood) with a 95% interval from a "
        "two-way cluster bootstrap over listeners and clips; win rate = share of trials won"
    ),
}


def label(condition: str, anchor_hz: float | None = None) -> str:
    """How the reports name a condition; the anchor by its cut-off (3.5 kHz unless ``anchor_hz``)."""
    if condition == ANCHOR and anchor_hz is not None:
        from cadenza.listening.clips import anchor_name

        return f"anchor (low-pass {anchor_name(anchor_hz)})"
    return LABELS.get(condition, condition)


@dataclasses.dataclass
class Row:
    """One condition: ``value`` is the mean rating (ACR) or the Bradley-Terry score (A/B).

    ``n_answers`` counts ratings (ACR) or trials the condition took part in (A/B); the
    ``all_`` fields are the same before screening.
    """

    condition: str
    kind: str
    n_clips: int
    value: Estimate
    n_listeners: int
    n_answers: int
    all_value: Estimate
    all_n_listeners: int
    all_n_answers: int
    win_rate: float | None = None
    all_win_rate: float | None = None
    anchor_hz: float | None = None  # the test's anchor cut-off, for the anchor's label

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["label"] = label(self.condition, self.anchor_hz)
        out["value"], out["all_value"] = self.value.to_dict(), self.all_value.to_dict()
        return out


@dataclasses.dataclass
class ListenerSummary:
    """One listener: progress, the screening measure and verdict, consistency on the repeated trial."""

    pseudonym: str
    number: int
    n_answered: int
    n_trials: int
    analysed: bool
    fail_share: float | None
    screened: bool
    repeat_difference: float | None  # ACR: |second - first rating|; A/B: 0 same choice, 1 changed
    median_page_seconds: float | None

    @property
    def complete(self) -> bool:
        return self.n_answered >= self.n_trials


@dataclasses.dataclass
class Results:
    mode: str
    settings: dict[str, Any]
    rows: list[Row]
    comparisons: list[dict[str, Any]]
    listeners: list[ListenerSummary]
    rule: str
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def n_analysed(self) -> int:
        return sum(s.analysed for s in self.listeners)

    @property
    def n_kept(self) -> int:
        return sum(s.analysed and not s.screened for s in self.listeners)

    @property
    def n_screened(self) -> int:
        return sum(s.analysed and s.screened for s in self.listeners)

    def counts(self) -> dict[str, int]:
        return {
            "listeners": len(self.listeners),
            "started": sum(s.n_answered > 0 for s in self.listeners),
            "complete": sum(s.complete for s in self.listeners),
            "analysed": self.n_analysed,
            "screened_out": self.n_screened,
            "kept": self.n_kept,
            "answers_before_screening": sum(s.n_answered for s in self.listeners if s.analysed),
            "answers_after_screening": sum(
                s.n_answered for s in self.listeners if s.analysed and not s.screened
            ),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "method": METHOD[self.mode],
            "settings": dict(self.settings),
            "screening_rule": self.rule,
            "counts": self.counts(),
            "rows": [r.to_dict() for r in self.rows],
            "comparisons": [
                {k: (v.to_dict() if isinstance(v, Estimate) else v) for k, v in c.items()}
                for c in self.comparisons
            ],
            "listeners": [dataclasses.asdict(s) | {"complete": s.complete} for s in self.listeners],
            "notes": list(self.notes),
        }


@dataclasses.dataclass(frozen=True)
class _Answer:
    listener: str
    trial: int
    tokens: tuple[str, ...]
    conditions: tuple[str, ...]
    rating: int | None
    choice: str | None
    repeat_of: int | None
    page_seconds: float


def _answers(exp: Experiment) -> tuple[dict[str, list[_Answer]], dict[str, tuple[int, int]], list[str]]:
    """Every listener's counting answers, ``{pseudonym: (number, n_trials)}`` and notes."""
    notes = []
    store = exp.store
    out: dict[str, list[_Answer]] = {}
    info: dict[str, tuple[int, int]] = {}
    latest = store.answers()
    foreign = 0
    for who in store.listeners():
        block = exp.design.block(who.number)
        info[who.pseudonym] = (who.number, len(block))
        rows = []
        for trial, e in sorted(latest.get(who.pseudonym, {}).items()):
            if (
                e.config_hash != exp.config_hash
                or not 0 <= trial < len(block)
                or e.tokens != block[trial].tokens
            ):
                foreign += 1
                continue
            conditions = tuple(exp.design.condition_of[t] for t in e.tokens)
            rows.append(
                _Answer(
                    who.pseudonym,
                    trial,
                    e.tokens,
                    conditions,
                    e.rating,
                    e.choice,
                    block[trial].repeat_of,
                    e.page_seconds,
                )
            )
        out[who.pseudonym] = rows
    if foreign:
        notes.append(f"{foreign} stored answers do not belong to this test's configuration and were left out")
    return out, info, notes


def _estimate(value: float | None, draws: np.ndarray | None) -> Estimate:
    if value is None or draws is None:
        return Estimate(finite_or_none(value))
    low, high = stats.interval(draws)
    return Estimate(float(value), low, high)


def analyse(exp: Experiment, *, n_boot: int = 2000, seed: int = 0, include_partial: bool = False) -> Results:
    """Screen the listeners of ``exp`` and estimate every condition (see the module's docstring).

    Parameters
    ----------
    exp : Experiment
    n_boot : int
        Bootstrap draws of the intervals.
    seed : int
        Seed of the bootstrap.
    include_partial : bool
        Analyse listeners who have not finished their block too.

    Returns
    -------
    Results
    """
    answers, info, notes = _answers(exp)
    max_fail = float(exp.config["screening"]["max_fail_share"])
    summaries: list[ListenerSummary] = []
    for who, rows in answers.items():
        number, n_trials = info[who]
        first = [a for a in rows if a.repeat_of is None]
        by_trial = {a.trial: a for a in rows}
        fail = None
        if exp.has_reference and exp.mode == "acr":
            real = [a.rating for a in first if a.conditions[0] == REFERENCE]
            anchor = [a.rating for a in first if a.conditions[0] == ANCHOR]
            fail = stats.pair_fail_share(real, anchor)  # type: ignore[arg-type]
        elif exp.has_reference:
            checks = [a for a in first if set(a.conditions) == {REFERENCE, ANCHOR}]
            fail = stats.choice_fail_share([exp.design.condition_of[a.choice] == ANCHOR for a in checks])  # type: ignore[index]
        repeat = None
        for a in rows:
            if a.repeat_of is not None and a.repeat_of in by_trial:
                earlier = by_trial[a.repeat_of]
                if exp.mode == "acr":
                    repeat = float(abs(a.rating - earlier.rating))  # type: ignore[operator]
                else:
                    repeat = float(a.choice != earlier.choice)
        pages = [a.page_seconds for a in rows if a.page_seconds > 0]
        summaries.append(
            ListenerSummary(
                pseudonym=who,
                number=number,
                n_answered=len(rows),
                n_trials=n_trials,
                analysed=bool(rows) and (include_partial or len(rows) >= n_trials),
                fail_share=fail,
                screened=fail is not None and fail > max_fail,
                repeat_difference=repeat,
                median_page_seconds=float(np.median(pages)) if pages else None,
            )
        )
    analysed = {s.pseudonym for s in summaries if s.analysed}
    kept = {s.pseudonym for s in summaries if s.analysed and not s.screened}
    in_progress = sum(0 < s.n_answered < s.n_trials for s in summaries)
    if in_progress and not include_partial:
        notes.append(f"{in_progress} listeners have not finished their block: they are not analysed yet")
    if not analysed:
        notes.append("no listener has finished a block yet")
    if not exp.has_reference:
        notes.append(
            "no hidden reference: nobody is screened, and the ratings have no ceiling or anchor to compare with"
        )

    settings = {
        "seconds": exp.seconds,
        "sample_rate": exp.config["sample_rate"],
        "anchor_hz": exp.config.get("anchor_hz"),
        "loudness_lufs": exp.config["loudness_lufs"],
        "n_per_condition": exp.design.n_per_condition,
        "design_seed": exp.design.seed,
        "n_boot": n_boot,
        "seed": seed,
        "include_partial": include_partial,
        "config_hash": exp.config_hash,
    }
    all_rows = [a for who in analysed for a in answers[who] if a.repeat_of is None]
    kept_rows = [a for a in all_rows if a.listener in kept]
    fn = _acr if exp.mode == "acr" else _ab
    rows, comparisons = fn(exp, all_rows, kept_rows, n_boot=n_boot, seed=seed)
    rule = str(exp.config["screening"]["rule"])
    return Results(exp.mode, settings, rows, comparisons, summaries, rule, notes)


def _kind(condition: str) -> str:
    return "reference" if condition == REFERENCE else "anchor" if condition == ANCHOR else "model"


def _pairs(exp: Experiment) -> list[tuple[str, str]]:
    """The comparisons: every pair of models, then each model against the hidden reference."""
    pairs = list(itertools.combinations(exp.models, 2))
    if REFERENCE in exp.design.conditions:
        pairs += [(m, REFERENCE) for m in exp.models]
    return pairs


def _acr(
    exp: Experiment, all_rows: Sequence[_Answer], kept_rows: Sequence[_Answer], *, n_boot: int, seed: int
) -> tuple[list[Row], list[dict[str, Any]]]:
    conditions = list(exp.design.conditions)

    def measure(rows: Sequence[_Answer]) -> tuple[dict[str, dict], np.ndarray | None]:
        per: dict[str, dict] = {}
        for c in conditions:
            mine = [a for a in rows if a.conditions[0] == c]
            per[c] = {
                "mean": float(np.mean([a.rating for a in mine])) if mine else None,  # type: ignore[misc]
                "n_listeners": len({a.listener for a in mine}),
                "n_answers": len(mine),
            }
        draws = None
        if rows and n_boot > 0:
            draws = stats.cluster_bootstrap_means(
                [a.rating for a in rows],  # type: ignore[misc]
                [a.listener for a in rows],
                [a.tokens[0] for a in rows],
                [a.conditions[0] for a in rows],
                groups=conditions,
                n_boot=n_boot,
                seed=seed,
            )
        return per, draws

    after, draws = measure(kept_rows)
    before, all_draws = measure(all_rows)
    rows = [
        Row(
            condition=c,
            kind=_kind(c),
            anchor_hz=exp.config.get("anchor_hz"),
            n_clips=len(exp.design.conditions[c]),
            value=_estimate(after[c]["mean"], None if draws is None else draws[:, k]),
            n_listeners=after[c]["n_listeners"],
            n_answers=after[c]["n_answers"],
            all_value=_estimate(before[c]["mean"], None if all_draws is None else all_draws[:, k]),
            all_n_listeners=before[c]["n_listeners"],
            all_n_answers=before[c]["n_answers"],
        )
        for k, c in enumerate(conditions)
    ]
    # per-listener means for the paired tests
    sums: dict[str, dict[str, list[float]]] = {}
    for a in kept_rows:
        sums.setdefault(a.conditions[0], {}).setdefault(a.listener, []).append(float(a.rating))  # type: ignore[arg-type]
    means = {c: {who: float(np.mean(v)) for who, v in d.items()} for c, d in sums.items()}
    pairs = _pairs(exp)
    tests = stats.wilcoxon_pairs(means, pairs)
    comparisons = []
    for (a, b), t in zip(pairs, tests):
        diff = None
        if after[a]["mean"] is not None and after[b]["mean"] is not None:
            diff = after[a]["mean"] - after[b]["mean"]
        d_draws = None if draws is None else draws[:, conditions.index(a)] - draws[:, conditions.index(b)]
        comparisons.append(
            {
                "a": a,
                "b": b,
                "difference": _estimate(diff, d_draws),
                "n_listeners": t["n_listeners"],
                "statistic": t["statistic"],
                "p": t["p"],
                "p_holm": t["p_holm"],
            }
        )
    return rows, comparisons


def _ab(
    exp: Experiment, all_rows: Sequence[_Answer], kept_rows: Sequence[_Answer], *, n_boot: int, seed: int
) -> tuple[list[Row], list[dict[str, Any]]]:
    conditions = list(exp.design.conditions)
    index = {c: k for k, c in enumerate(conditions)}
    cond_of = exp.design.condition_of

    def measure(rows: Sequence[_Answer]) -> tuple[dict[str, dict], np.ndarray | None, np.ndarray | None]:
        winner = [cond_of[a.choice] for a in rows]  # type: ignore[index]
        loser_clip = [a.tokens[1] if a.choice == a.tokens[0] else a.tokens[0] for a in rows]
        loser = [cond_of[t] for t in loser_clip]
        per = {}
        for c in conditions:
            mine = [a for a in rows if c in a.conditions]
            won = sum(w == c for w in winner)
            per[c] = {
                "win_rate": won / len(mine) if mine else None,
                "n_listeners": len({a.listener for a in mine}),
                "n_answers": len(mine),
            }
        if not rows:
            return per, None, None
        theta = stats.bradley_terry(
            stats.win_matrix([index[w] for w in winner], [index[x] for x in loser], len(conditions))
        )
        draws = None
        if n_boot > 0:
            draws = stats.cluster_bootstrap_bradley_terry(
                winner,
                loser,
                [a.listener for a in rows],
                [a.choice for a in rows],
                loser_clip,
                groups=conditions,
                n_boot=n_boot,
                seed=seed,
            )
        return per, theta, draws

    after, theta, draws = measure(kept_rows)
    before, all_theta, all_draws = measure(all_rows)
    rows = [
        Row(
            condition=c,
            kind=_kind(c),
            anchor_hz=exp.config.get("anchor_hz"),
            n_clips=len(exp.design.conditions[c]),
            value=_estimate(
                None if theta is None else float(theta[k]), None if draws is None else draws[:, k]
            ),
            n_listeners=after[c]["n_listeners"],
            n_answers=after[c]["n_answers"],
            all_value=_estimate(
                None if all_theta is None else float(all_theta[k]),
                None if all_draws is None else all_draws[:, k],
            ),
            all_n_listeners=before[c]["n_listeners"],
            all_n_answers=before[c]["n_answers"],
            win_rate=after[c]["win_rate"],
            all_win_rate=before[c]["win_rate"],
        )
        for k, c in enumerate(conditions)
    ]
    comparisons = []
    for a, b in _pairs(exp):
        direct = [x for x in kept_rows if set(x.conditions) == {a, b}]
        won = sum(cond_of[x.choice] == a for x in direct)  # type: ignore[index]
        p = None if theta is None else float(1 / (1 + np.exp(theta[index[b]] - theta[index[a]])))
        p_draws = None if draws is None else 1 / (1 + np.exp(draws[:, index[b]] - draws[:, index[a]]))
        comparisons.append(
            {
                "a": a,
                "b": b,
                "p_a_preferred": _estimate(p, p_draws),
                "n_trials": len(direct),
                "observed_share": won / len(direct) if direct else None,
            }
        )
    return rows, comparisons
