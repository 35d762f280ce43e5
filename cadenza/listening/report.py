"""A listening test's results as Markdown (the terminal's table too), CSV, JSON and an HTML page.

The main table has paper 000's Table 1 shape - one row per model and its average rating, a
caption that names the number of testers and of samples per model - with the interval, the
counts and the values before screening beside it, and the hidden reference and the anchor as
the last two rows.

Examples
--------
>>> paths = write_results(analyse(exp), exp.folder)   # doctest: +SKIP
>>> sorted(paths)                                     # doctest: +SKIP
['csv', 'json', 'md']
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path

from cadenza.data.store import atomic_write_text
from cadenza.evaluation.results import Estimate
from cadenza.listening.results import METHOD, Results, Row, label

__all__ = ["format_table", "results_csv", "results_html", "write_results"]

DASH = "\u2014"
CSV_FIELDS = (
    "condition",
    "label",
    "kind",
    "measure",
    "value",
    "low",
    "high",
    "n_listeners",
    "n_answers",
    "win_rate",
    "n_clips",
    "all_value",
    "all_low",
    "all_high",
    "all_n_listeners",
    "all_n_answers",
    "all_win_rate",
)


def _num(value: float | None, digits: int = 2) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _interval(e: Estimate) -> str:
    return DASH if e.low is None or e.high is None else f"[{e.low:.2f}, {e.high:.2f}]"


def _estimate(e: Estimate) -> str:
    """``3.20 [2.85, 3.55]``, the value alone without an interval, or a dash."""
    if e.value is None:
        return DASH
    return _num(e.value) if e.low is None or e.high is None else f"{_num(e.value)} {_interval(e)}"


def _p(value: float | None) -> str:
    if value is None:
        return DASH
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _tables(r: Results) -> list[tuple[str, list[str], list[list[str]], str]]:
    """``(title, header, rows, caption)`` of every table, shared by Markdown and HTML."""
    c = r.counts()
    per_model = r.settings["n_per_condition"]
    pools = sorted({row.n_clips for row in r.rows if row.kind == "model"})
    pool = "-".join(map(str, dict.fromkeys([pools[0], pools[-1]]))) if pools else "0"
    if r.mode == "acr":  # a model with fewer clips than asked for is heard whole
        heard = sorted({min(per_model, n) for n in pools}) or [per_model]
        per_model = "-".join(map(str, dict.fromkeys([heard[0], heard[-1]])))
    answers = "ratings" if r.mode == "acr" else "trials"

    def before(row: Row) -> str:
        return f"{_estimate(row.all_value)} ({row.all_n_listeners} listeners, {row.all_n_answers} {answers})"

    if r.mode == "acr":
        header = ["Model", "Average rating", "95% interval", "listeners", "ratings", "before screening"]
        rows = [
            [
                label(x.condition, x.anchor_hz),
                _num(x.value.value),
                _interval(x.value),
                str(x.n_listeners),
                str(x.n_answers),
                before(x),
            ]
            for x in r.rows
        ]
        caption = (
            f"Table 1. Results of blind testing performed on {c['kept']} testers ({c['analysed']} before "
            f"screening) with {per_model} samples picked from each model ({pool} per model in the test). "
            f"{METHOD['acr'][0].upper() + METHOD['acr'][1:].split(';')[0]}."
        )
    else:
        header = [
            "Model",
            "Bradley-Terry score",
            "95% interval",
            "win rate",
            "trials",
            "listeners",
            "before screening",
        ]
        rows = [
            [
                label(x.condition, x.anchor_hz),
                _num(x.value.value),
                _interval(x.value),
                _num(x.win_rate),
                str(x.n_answers),
                str(x.n_listeners),
                before(x),
            ]
            for x in r.rows
        ]
        caption = (
            f"Table 1. Pairwise blind preferences ('which is more musical?') of {c['kept']} testers "
            f"({c['analysed']} before screening), each pair of conditions {per_model} times per tester. "
            f"{METHOD['ab'][0].upper() + METHOD['ab'][1:]}."
        )
    tables = [("Results", header, rows, caption)]
    if r.mode == "acr":
        comp = [
            [
                label(x["a"], r.settings.get("anchor_hz")),
                label(x["b"], r.settings.get("anchor_hz")),
                _estimate(x["difference"]),
                str(x["n_listeners"]),
                _num(x["statistic"], 1),
                _p(x["p"]),
                _p(x["p_holm"]),
            ]
            for x in r.comparisons
        ]
        tables.append(
            (
                "Comparisons",
                ["A", "B", "A - B [95% interval]", "listeners", "W", "p", "p (Holm)"],
                comp,
                "Wilcoxon signed-rank tests on per-listener mean ratings, Holm-adjusted over the rows of this table.",
            )
        )
    else:
        comp = [
            [
                label(x["a"], r.settings.get("anchor_hz")),
                label(x["b"], r.settings.get("anchor_hz")),
                _estimate(x["p_a_preferred"]),
                str(x["n_trials"]),
                _num(x["observed_share"]),
            ]
            for x in r.comparisons
        ]
        tables.append(
            (
                "Comparisons",
                ["A", "B", "P(A preferred) [95% interval]", "direct trials", "A chosen"],
                comp,
                "P(A preferred) from the Bradley-Terry scores; 'A chosen' is the share of the direct A-B trials.",
            )
        )
    listeners = [
        [
            s.pseudonym,
            f"{s.n_answered}/{s.n_trials}",
            ("screened out" if s.screened else "kept") if s.analysed else "not analysed",
            _num(s.fail_share),
            _num(s.repeat_difference, 0),
            _num(s.median_page_seconds, 1),
        ]
        for s in r.listeners
    ]
    repeat = "|second - first rating|" if r.mode == "acr" else "1 if the choice changed"
    tables.append(
        (
            "Listeners",
            ["listener", "answered", "status", "failed checks", "repeat", "median s per trial"],
            listeners,
            f"'failed checks' is the screening measure (the share of reference-anchor comparisons failed); "
            f"'repeat' compares the repeated trial with its first presentation ({repeat}).",
        )
    )
    return tables


def _summary_lines(r: Results) -> list[str]:
    c = r.counts()
    return [
        f"Listeners: {c['listeners']} joined, {c['complete']} finished, {c['analysed']} analysed, "
        f"{c['screened_out']} screened out, {c['kept']} kept.",
        f"Answers: {c['answers_before_screening']} before screening, {c['answers_after_screening']} after.",
        f"Screening rule (stated before the test): {r.rule}. Screened listeners are reported, not deleted.",
    ]


def format_table(r: Results) -> str:
    """The results as Markdown: the paper-000 table, comparisons, listeners, rule and notes."""
    out = [f"# Listening test ({r.mode.upper()})", ""]
    for title, header, rows, caption in _tables(r):
        out += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        out += ["", caption, ""]
    out += _summary_lines(r)
    out += [f"- note: {n}" for n in r.notes]
    return "\n".join(out) + "\n"


def results_csv(r: Results) -> str:
    """One CSV row per condition (after screening, then the ``all_`` columns before)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for x in r.rows:
        writer.writerow(
            {
                "condition": x.condition,
                "label": label(x.condition, x.anchor_hz),
                "kind": x.kind,
                "measure": "mean_rating" if r.mode == "acr" else "bradley_terry",
                "value": x.value.value,
                "low": x.value.low,
                "high": x.value.high,
                "n_listeners": x.n_listeners,
                "n_answers": x.n_answers,
                "win_rate": x.win_rate,
                "n_clips": x.n_clips,
                "all_value": x.all_value.value,
                "all_low": x.all_value.low,
                "all_high": x.all_value.high,
                "all_n_listeners": x.all_n_listeners,
                "all_n_answers": x.all_n_answers,
                "all_win_rate": x.all_win_rate,
            }
        )
    return buf.getvalue()


def results_json(r: Results) -> str:
    return json.dumps(r.to_dict(), indent=2, allow_nan=False) + "\n"


def write_results(r: Results, folder: str | os.PathLike) -> dict[str, Path]:
    """``results.md``, ``results.csv`` and ``results.json`` in ``folder``; their paths."""
    folder = Path(folder)
    paths = {"md": folder / "results.md", "csv": folder / "results.csv", "json": folder / "results.json"}
    atomic_write_text(paths["md"], format_table(r))
    atomic_write_text(paths["csv"], results_csv(r))
    atomic_write_text(paths["json"], results_json(r))
    return paths


def results_html(r: Results, *, links: dict[str, str] | None = None) -> str:
    """The server's results page (styles from ``/static/style.css``; no script)."""
    e = html.escape
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<title>Listening test results ({e(r.mode.upper())})</title>",
        "<link rel=icon href='data:,'><link rel=stylesheet href='/static/style.css'></head><body class=results>",
        f"<h1>Listening test results ({e(r.mode.upper())})</h1>",
    ]
    for title, header, rows, caption in _tables(r):
        parts.append(f"<h2>{e(title)}</h2><div class=scroll><table>")
        parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>")
        parts.append(f"</table></div><p class=caption>{e(caption)}</p>")
    parts += [f"<p>{e(line)}</p>" for line in _summary_lines(r)]
    if r.notes:
        parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in r.notes) + "</ul>")
    if links:
        parts.append(
            "<p>Download: " + " · ".join(f"<a href='{e(h)}'>{e(t)}</a>" for t, h in links.items()) + "</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
