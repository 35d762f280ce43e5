"""The evaluation report: ``metrics.json``, ``metrics.csv``, ``distances.png``, ``report.md``, ``report.html``.

:func:`write_report` renders one :class:`~cadenza.evaluation.results.Evaluation` into the folder
that already holds its clips (WAV, PNG and MIDI files at the relative paths the clips name). The
Markdown and HTML reports hold the same content:

1. the settings (``n_clips``, ``seconds``, ``seed``, ``reference``, ``feature_version``) and notes;
2. the comparison table: the calibration rows (the "real vs real" floor, then garbage such as
   white noise), then the sets, with KAD and FAD and their bootstrap 95% intervals, precision,
   recall, density, coverage, the per-clip flags as ``k/n`` and the mean loudness (LUFS);
   the legend of the flags follows it;
3. ``distances.png``: KAD and FAD as horizontal bars with their intervals;
4. one section per set (the sets first, then the calibration rows and the reference, folded
   away in HTML): its note, skipped inputs, symbolic metrics, loss curve, its best and worst
   three clips by distance to the reference, and every clip with a player, its image, flags and
   measures.

The HTML is self-contained: relative links, inline CSS, no scripts and nothing fetched from
elsewhere, so the folder can be zipped, copied or served as it is. Numbers show three
significant digits; a missing value is an em dash.

Examples
--------
>>> paths = write_report(evaluation, "eval")   # doctest: +SKIP
>>> paths["html"]                              # doctest: +SKIP
PosixPath('eval/report.html')
"""

from __future__ import annotations

import csv
import html
import io
import json
import numbers
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cadenza.data.store import atomic_write_text
from cadenza.evaluation.results import FLAGS, Clip, ClipSet, Estimate, Evaluation, finite_or_none
from cadenza.plots import save_figure

__all__ = ["write_report"]

DASH = "\u2014"
#: Set distances in the order the table and the CSV show them (other keys follow, sorted).
DISTANCE_KEYS = ("kad", "fad", "precision", "recall", "density", "coverage")
#: Per-clip measures in the order the CSV and the clip lists show them (other keys follow, sorted).
MEASURE_KEYS = (
    "distance",
    "lufs",
    "silent_fraction",
    "flatness",
    "clipping",
    "loop_score",
    "loop_lag",
    "copy_distance",
    "copy_ratio",
)
TABLE_FLAGS = ("silent", "noise", "loop", "copy", "clipping")
SETTING_KEYS = ("n_clips", "seconds", "seed", "reference")
LEGEND = (
    'Lower KAD and FAD are better: a row should sit near the "real vs real" floor and far '
    "from the garbage rows (the other calibration rows). A round-trip row (ceiling) is the "
    "reference encoded in a model's representation and decoded back: the nearest such a "
    "model can come. Flags count clips as k/n."
)
SET_COLOURS = ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
CSS = """
body{font:15px/1.45 system-ui,sans-serif;color:#222;max-width:76rem;margin:1.5rem auto;padding:0 1rem}
h1,h2,h3{line-height:1.2}.muted,.legend{color:#666}.legend{font-size:13px}
.scroll{overflow-x:auto;max-width:100%}
table{margin:.5rem 0;border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:14px}
th,td{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
tr.calibration td{color:#777}tr.ceiling td{color:#555;font-style:italic}tr.floor td{background:#edf7ed;color:#222}
img{max-width:100%;height:auto}
.clips{display:grid;grid-template-columns:repeat(auto-fill,minmax(19rem,1fr));gap:.8rem}
.clip{border:1px solid #ddd;border-radius:4px;padding:.5rem;min-width:0;overflow-wrap:anywhere}
.clip h4{margin:.1rem 0 .4rem}.clip audio{width:100%}
.flag{background:#fde3e1;border-radius:3px;padding:0 .35rem;margin-right:.3rem;cursor:help}
.measures{font-size:12.5px;color:#555}details{margin:1rem 0}summary{cursor:pointer;font-weight:600}
"""


def write_report(evaluation: Evaluation, out: str | os.PathLike) -> dict[str, Path]:
    """Write the metrics and the Markdown and HTML reports of ``evaluation`` into ``out``.

    Parameters
    ----------
    evaluation : Evaluation
        What ``cadenza evaluate`` measured.
    out : str or PathLike
        The folder that holds the clips' files at the relative paths their :class:`Clip` name;
        it is made if missing.

    Returns
    -------
    dict
        Paths of the files written: ``md``, ``html``, ``json`` (``metrics.json``), ``csv``
        (``metrics.csv``) and ``chart`` (``distances.png``).

    Examples
    --------
    >>> from cadenza.evaluation.results import ClipSet, Evaluation
    >>> ev = Evaluation("v1", {"n_clips": 0}, ClipSet("ref", "reference", "data/"))
    >>> import tempfile; paths = write_report(ev, tempfile.mkdtemp())
    >>> sorted(paths)
    ['chart', 'csv', 'html', 'json', 'md']
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "metrics.json",
        "csv": out / "metrics.csv",
        "chart": out / "distances.png",
        "md": out / "report.md",
        "html": out / "report.html",
    }
    text = json.dumps(evaluation.to_dict(), indent=2, allow_nan=False, ensure_ascii=False, default=str)
    atomic_write_text(paths["json"], text + "\n")
    atomic_write_text(paths["csv"], _csv(evaluation))
    _chart(evaluation, paths["chart"])
    atomic_write_text(paths["md"], _markdown(evaluation, out))
    atomic_write_text(paths["html"], _html(evaluation, out))
    return paths


# ---------------------------------------------------------------------------- shared helpers


def _fmt(value: Any) -> str:
    """A value as the reports show it: integers whole, other numbers to 3 significant digits."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = finite_or_none(value)
        return DASH if value is None else f"{value:.3g}"
    return str(value)


def _interval(estimate: Estimate | None) -> str:
    """``0.123 [0.100, 0.150]``, the value alone without an interval, or an em dash."""
    if estimate is None or finite_or_none(estimate.value) is None:
        return DASH
    low, high = finite_or_none(estimate.low), finite_or_none(estimate.high)
    text = _fmt(float(estimate.value))
    return text if low is None or high is None else f"{text} [{low:.3g}, {high:.3g}]"


def _ordered(keys: Iterable[str], first: Iterable[str]) -> list[str]:
    keys, first = set(keys), list(first)
    return [k for k in first if k in keys] + sorted(keys - set(first))


def _is_floor(clip_set: ClipSet) -> bool:
    return clip_set.kind == "calibration" and "real vs real" in clip_set.name.lower()


def _url(path: str, out: Path) -> str:
    """A path relative to ``out``, URL-quoted for ``src``/``href`` (absolute ones made relative)."""
    p = Path(path)
    if p.is_absolute():
        p = Path(os.path.relpath(p, out.resolve()))
    return quote(p.as_posix())


def _ranked(clip_set: ClipSet) -> tuple[list[Clip], list[Clip]]:
    """The best 3 and the worst 3 (worst first) clips by distance; unranked clips left out."""
    ranked = [c for c in clip_set.clips if finite_or_none(c.measures.get("distance")) is not None]
    ranked.sort(key=lambda c: float(c.measures["distance"]))  # type: ignore[arg-type]
    return ranked[:3], ranked[max(3, len(ranked) - 3) :][::-1]


def _comparison(evaluation: Evaluation) -> tuple[list[str], list[tuple[ClipSet, list[str]]]]:
    """The comparison table's header and its rows as text cells (the set's name first)."""
    header = ["set", "KAD [95% interval]", "FAD [95% interval]", "precision", "recall", "density"]
    header += ["coverage", *TABLE_FLAGS, "mean LUFS"]
    rows = []
    for s in evaluation.rows():
        cells = [s.name, _interval(s.distances.get("kad")), _interval(s.distances.get("fad"))]
        cells += [
            _fmt(finite_or_none(s.distances[k].value)) if k in s.distances else DASH
            for k in DISTANCE_KEYS[2:]
        ]
        counts = s.flag_counts()
        cells += [f"{counts.get(f, 0)}/{len(s.clips)}" if s.clips else DASH for f in TABLE_FLAGS]
        rows.append((s, [*cells, _fmt(s.mean_measure("lufs"))]))
    return header, rows


def _settings(evaluation: Evaluation) -> list[tuple[str, str]]:
    keys = _ordered(evaluation.settings, SETTING_KEYS)
    items = [(k, _fmt(evaluation.settings.get(k))) for k in keys]
    return [*items, ("feature_version", evaluation.feature_version)]


def _measure_items(clip: Clip) -> list[tuple[str, str]]:
    return [(k, _fmt(clip.measures[k])) for k in _ordered(clip.measures, MEASURE_KEYS)]


def _n_clips(clip_set: ClipSet) -> str:
    return f"{len(clip_set.clips)} clip{'' if len(clip_set.clips) == 1 else 's'}"


def _sections(evaluation: Evaluation) -> list[tuple[ClipSet, bool]]:
    """Every set in report order, with whether HTML folds it away."""
    return [(s, False) for s in evaluation.sets] + [
        (s, True) for s in [*evaluation.calibration, evaluation.reference]
    ]


# ---------------------------------------------------------------------------- CSV and chart


def _csv(evaluation: Evaluation) -> str:
    """One row per set (the reference, the calibration rows, the sets); empty cells for None."""
    sets = [evaluation.reference, *evaluation.rows()]
    d_keys = _ordered({k for s in sets for k in s.distances}, DISTANCE_KEYS)
    m_keys = _ordered({k for s in sets for c in s.clips for k in c.measures}, MEASURE_KEYS)
    f_keys = _ordered({k for s in sets for k in s.flag_counts()}, FLAGS)
    header = ["name", "kind", "source", "n_clips"]
    header += [f"{k}{suffix}" for k in d_keys for suffix in ("", "_low", "_high")]
    header += [f"mean_{k}" for k in m_keys] + [f"n_{k}" for k in f_keys] + ["note", "feature_version"]

    def cell(value: Any) -> str:
        value = finite_or_none(value)
        return "" if value is None else repr(value)

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for s in sets:
        row: list[Any] = [s.name, s.kind, s.source, len(s.clips)]
        for k in d_keys:
            e = s.distances.get(k, Estimate(None))
            row += [cell(e.value), cell(e.low), cell(e.high)]
        counts = s.flag_counts()
        row += [cell(s.mean_measure(k)) for k in m_keys] + [counts.get(k, 0) for k in f_keys]
        writer.writerow([*row, s.note or "", evaluation.feature_version])
    return buffer.getvalue()


def _chart(evaluation: Evaluation, path: Path) -> Path:
    """KAD above FAD: a bar per row with its interval; symlog when the values span decades."""
    from matplotlib.figure import Figure  # no pyplot: no global state, headless

    rows = evaluation.rows()
    colours = {id(s): SET_COLOURS[i % len(SET_COLOURS)] for i, s in enumerate(evaluation.sets)}
    colours |= {
        id(s): "tab:green" if _is_floor(s) else "tab:cyan" if s.kind == "ceiling" else "0.65"
        for s in evaluation.calibration
    }
    fig = Figure(figsize=(9, 2 * (1.0 + 0.3 * max(len(rows), 1))), layout="constrained")
    for ax, key in zip(fig.subplots(2, 1), ("kad", "fad")):
        ax.set_title(f"{key.upper()} to the reference, 95% interval (lower is better)", fontsize=10)
        drawn = [
            (s, e)
            for s in rows
            if finite_or_none((e := s.distances.get(key, Estimate(None))).value) is not None
        ]
        if not drawn:
            ax.text(0.5, 0.5, f"no {key.upper()} values", ha="center", va="center", transform=ax.transAxes)
            ax.set(xticks=[], yticks=[])
            continue
        values = [float(e.value) for _, e in drawn]  # type: ignore[arg-type]
        lows = [v if (lo := finite_or_none(e.low)) is None else lo for v, (_, e) in zip(values, drawn)]
        highs = [v if (hi := finite_or_none(e.high)) is None else hi for v, (_, e) in zip(values, drawn)]
        errors = [
            [max(v - lo, 0.0) for v, lo in zip(values, lows)],
            [max(hi - v, 0.0) for v, hi in zip(values, highs)],
        ]
        y = list(range(len(drawn)))
        ax.barh(y, values, xerr=errors, color=[colours[id(s)] for s, _ in drawn], capsize=3, ecolor="0.2")
        ax.set_yticks(y, [s.name.replace("$", r"\$") for s, _ in drawn], fontsize=9)  # no mathtext
        ax.invert_yaxis()
        ax.axvline(0.0, color="0.3", linewidth=0.8)
        ax.grid(axis="x", alpha=0.3)
        magnitudes = [abs(v) for v in values if v]
        if magnitudes and max(magnitudes) / min(magnitudes) >= 100:
            # Log-like above the smallest value and linear below it, so 0 and a slightly
            # negative (unbiased) KAD still have a place; limits hug the data.
            ax.set_xscale("symlog", linthresh=min(magnitudes))
            ax.set_xlim(min(0.0, 1.5 * min(lows)), 1.5 * max(highs))
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- Markdown


def _gaps(s: ClipSet) -> str | None:
    """One line on where a set stands apart from the reference (none for the reference itself)."""
    if not s.gaps or s.kind == "reference":
        return None
    features = ", ".join(f"{name} {value:+.1f}" for name, value in s.gaps["features"])
    groups = ", ".join(f"{name} {value:.1f}" for name, value in s.gaps["groups"][:3])
    return (
        f"Farthest from the reference (the set's mean, in reference deviations): {features}; "
        f"by group (root mean square): {groups}."
    )


def _md(text: Any) -> str:
    """Text safe in a Markdown table cell or paragraph."""
    text = " ".join(str(text).split())
    for char in "\\`*_|":
        text = text.replace(char, "\\" + char)
    return text.replace("](", "]\\(").replace("<", "&lt;").replace(">", "&gt;")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]


def _markdown(evaluation: Evaluation, out: Path) -> str:
    lines = ["# Evaluation report", ""]
    lines += [f"- **{_md(k)}**: {_md(v)}" for k, v in _settings(evaluation)]
    lines += ["", *[f"> {_md(n)}" for n in evaluation.notes], ""]
    header, rows = _comparison(evaluation)
    lines += ["## Comparison", "", _md(LEGEND), "", *_md_table(header, [cells for _, cells in rows]), ""]
    lines += ["Flags:", "", *[f"- **{flag}**: {_md(text)}" for flag, text in FLAGS.items()], ""]
    lines += ["![KAD and FAD of every row with its 95% interval](distances.png)", ""]
    for s, _ in _sections(evaluation):
        lines += _md_set(s, out)
    return "\n".join(lines).rstrip() + "\n"


def _md_set(s: ClipSet, out: Path) -> list[str]:
    lines = [f"## {_md(s.name)} ({_md(s.kind)})", "", f"Source: {_md(s.source)}; {_n_clips(s)}.", ""]
    if s.note:
        lines += [f"> {_md(s.note)}", ""]
    if s.skipped:
        lines += ["Skipped:", "", *[f"- {_md(f)}: {_md(reason)}" for f, reason in s.skipped], ""]
    if gaps := _gaps(s):
        lines += [_md(gaps), ""]
    if s.symbolic:
        lines += _md_table(["symbolic metric", "value"], [[k, _fmt(v)] for k, v in s.symbolic.items()]) + [""]
    if s.symbolic_distances:
        items = [[k, _interval(e)] for k, e in s.symbolic_distances.items()]
        lines += _md_table(["symbolic distance", "value [95% interval]"], items) + [""]
    if s.loss_curve:
        lines += ["Training loss:", "", f"![loss curve]({_url(s.loss_curve, out)})", ""]
    best, worst = _ranked(s)
    for title, clips in (("Best", best), ("Worst", worst)):
        if clips:
            names = ", ".join(f"{_md(c.name)} ({_fmt(c.measures['distance'])})" for c in clips)
            lines += [f"{title} by distance to the reference: {names}", ""]
    for clip in s.clips:
        lines += [f"### {_md(clip.name)}", ""]
        links = [f"[audio]({_url(clip.audio, out)})"] if clip.audio else []
        links += [f"[MIDI]({_url(clip.midi, out)})"] if clip.midi else []
        lines += [" · ".join([f"{_fmt(clip.seconds)} s", *links]), ""]
        if clip.image:
            lines += [f"![{_md(clip.name)}]({_url(clip.image, out)})", ""]
        lines += [f"Flags: {', '.join(_md(f) for f in clip.flags) if clip.flags else 'none'}", ""]
        if clip.measures:
            lines += [" · ".join(f"{_md(k)} {v}" for k, v in _measure_items(clip)), ""]
    return lines


# ---------------------------------------------------------------------------- HTML


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html(evaluation: Evaluation, out: Path) -> str:
    anchors = {id(s): f"set-{i}" for i, (s, _) in enumerate(_sections(evaluation))}
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request
        f"<title>Evaluation report</title><style>{CSS}</style></head><body>",
        "<h1>Evaluation report</h1><ul>",
        *[f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in _settings(evaluation)],
        "</ul>",
        *[f'<p class="muted">{_e(n)}</p>' for n in evaluation.notes],
        f'<h2>Comparison</h2><p class="legend">{_e(LEGEND)}</p>',
    ]
    header, rows = _comparison(evaluation)
    parts.append('<div class="scroll"><table><thead><tr>')
    parts += [f"<th>{_e(h)}</th>" for h in header] + ["</tr></thead><tbody>"]
    for s, cells in rows:
        css = "floor" if _is_floor(s) else s.kind
        name = f'<a href="#{anchors[id(s)]}">{_e(cells[0])}</a>'
        parts.append(
            f'<tr class="{_e(css)}"><td>{name}</td>'
            + "".join(f"<td>{_e(c)}</td>" for c in cells[1:])
            + "</tr>"
        )
    parts.append('</tbody></table></div><p class="legend">Flags:</p><ul class="legend">')
    parts += [f"<li><b>{_e(flag)}</b>: {_e(text)}</li>" for flag, text in FLAGS.items()] + ["</ul>"]
    parts.append('<img src="distances.png" alt="KAD and FAD of every row with its 95% interval">')
    for s, is_folded in _sections(evaluation):
        body = _html_set(s, out, anchors[id(s)], is_folded)
        if is_folded:
            body = f"<details><summary>{_e(s.name)} ({_e(s.kind)})</summary>{body}</details>"
        parts.append(body)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_set(s: ClipSet, out: Path, anchor: str, is_folded: bool) -> str:
    parts = [f'<section id="{anchor}">']
    if not is_folded:
        parts.append(f'<h2>{_e(s.name)} <small class="muted">({_e(s.kind)})</small></h2>')
    parts.append(f'<p class="muted">Source: {_e(s.source)}; {_n_clips(s)}.</p>')
    if s.note:
        parts.append(f"<p>{_e(s.note)}</p>")
    if s.skipped:
        items = "".join(f"<li><code>{_e(f)}</code>: {_e(reason)}</li>" for f, reason in s.skipped)
        parts.append(f"<p>Skipped:</p><ul>{items}</ul>")
    if gaps := _gaps(s):
        parts.append(f'<p class="gaps">{_e(gaps)}</p>')
    tables = [(("symbolic metric", "value"), [(k, _fmt(v)) for k, v in s.symbolic.items()])]
    tables += [
        (
            ("symbolic distance", "value [95% interval]"),
            [(k, _interval(e)) for k, e in s.symbolic_distances.items()],
        )
    ]
    for (key_title, value_title), items in tables:
        if items:
            body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in items)
            parts.append(
                f'<div class="scroll"><table><tr><th>{key_title}</th><th>{value_title}</th></tr>{body}</table></div>'
            )
    if s.loss_curve:
        parts.append(
            f'<p>Training loss:<br><img src="{_e(_url(s.loss_curve, out))}" alt="loss curve of {_e(s.name)}"></p>'
        )
    best, worst = _ranked(s)
    index = {id(c): i for i, c in enumerate(s.clips)}
    for title, clips in (("Best", best), ("Worst", worst)):
        if clips:
            links = ", ".join(
                f'<a href="#{anchor}-{index[id(c)]}">{_e(c.name)}</a> ({_e(_fmt(c.measures["distance"]))})'
                for c in clips
            )
            parts.append(f"<p>{title} by distance to the reference: {links}</p>")
    parts.append('<div class="clips">')
    parts += [_html_clip(clip, out, f"{anchor}-{i}") for i, clip in enumerate(s.clips)]
    parts.append("</div></section>")
    return "\n".join(parts)


def _html_clip(clip: Clip, out: Path, anchor: str) -> str:
    parts = [
        f'<div class="clip" id="{anchor}"><h4>{_e(clip.name)} <small class="muted">{_e(_fmt(clip.seconds))} s</small></h4>'
    ]
    if clip.audio:
        parts.append(f'<audio controls preload="metadata" src="{_e(_url(clip.audio, out))}"></audio>')
    if clip.image:
        parts.append(f'<img src="{_e(_url(clip.image, out))}" alt="{_e(clip.name)}">')
    flags = "".join(f'<span class="flag" title="{_e(FLAGS.get(f, f))}">{_e(f)}</span>' for f in clip.flags)
    parts.append(f"<div>Flags: {flags or 'none'}</div>")
    if clip.measures:
        items = " · ".join(f"{_e(k)} <b>{_e(v)}</b>" for k, v in _measure_items(clip))
        parts.append(f'<div class="measures">{items}</div>')
    if clip.midi:
        parts.append(f'<div><a href="{_e(_url(clip.midi, out))}">MIDI</a></div>')
    parts.append("</div>")
    return "".join(parts)
