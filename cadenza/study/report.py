"""The study's report: ``report.md`` and ``report.html`` (the same content) from ``study.json`` and the evaluations.

It reads only files (``study.json``, each group's ``evaluation/<store>/metrics.json``, each
``table1/<store>/table1.json``), so a study continued in another process reports the same.
What it answers:

* per model: KAD and FAD against held-out music with their 95% intervals, the calibration row
  its KAD lies nearest to, whether that is nearer the real-vs-real floor than the nearest
  garbage row (distances on the KAD axis itself), and its clips' flags;
* paper 000's question, when fft_base and fft_bilinear are both measured against the same
  music: does the bilinear LSTM beat the GRUV baseline at equal budget (:func:`paper000_answer`);
* for piano-roll models, paper 004's Table 1 and the symbolic goals against the training data
  (:data:`SYMBOLIC_GOALS`);
* the budget, each model's steps and time, the date, the commands, the machine, the stores and
  whether their held-out files agree, failures with their errors, and the ``cadenza listen``
  command of the clips.

Examples
--------
>>> est = {"value": 0.2, "low": 0.1, "high": 0.3}
>>> format_estimate(est)
'0.2 [0.1, 0.3]'
>>> calibration = [
...     {"name": "real vs real", "distances": {"kad": {"value": 0.01}}},
...     {"name": "white noise", "distances": {"kad": {"value": 3.0}}},
...     {"name": "0.5 s loop", "distances": {"kad": {"value": 0.5}}},
... ]
>>> nearest_calibration(0.4, calibration), nearer_floor(0.4, calibration)
('0.5 s loop', False)
>>> nearest_calibration(0.1, calibration), nearer_floor(0.1, calibration)
('real vs real', True)
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cadenza.data.store import atomic_write_text
from cadenza.study.plan import DEFAULT_BUDGET, Budget, Plan, budget_from, describe_store, format_seconds
from cadenza.study.state import StudyState

__all__ = [
    "SYMBOLIC_GOALS",
    "ceiling_of",
    "format_estimate",
    "markdown_to_html",
    "nearer_floor",
    "nearest_calibration",
    "not_apart",
    "paper000_answer",
    "symbolic_goals",
    "write_report",
]

FLOOR = "real vs real"
#: Flags that mean a collapsed model (the "no collapse" check).
COLLAPSE_FLAGS = ("silent", "noise", "loop", "copy")
#: The symbolic goals against the training data: metric -> (label, tolerance, "relative" or "points").
SYMBOLIC_GOALS = {
    "used_pitch_classes": ("UPC", 0.10, "relative"),
    "qualified_note_rate": ("QN (%)", 0.10, "relative"),
    "empty_bar_rate": ("EB (%)", 5.0, "points"),
    "polyphony": ("polyphony", 0.20, "relative"),
    "pitch_range": ("pitch range", 0.20, "relative"),
}


# ----------------------------------------------------------------------------- numbers
def _value(est: Mapping[str, Any] | None) -> float | None:
    if not est:
        return None
    v = est.get("value")
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


def format_estimate(est: Mapping[str, Any] | None) -> str:
    """``"0.2 [0.1, 0.3]"``: a value with its 95% interval; ``"—"`` when there is none."""
    v = _value(est)
    if v is None:
        return "—"
    lo, hi = (est or {}).get("low"), (est or {}).get("high")
    if lo is None or hi is None:
        return _num(v)
    return f"{v:.3g} [{float(lo):.3g}, {float(hi):.3g}]"


def _kad(row: Mapping[str, Any]) -> float | None:
    return _value((row.get("distances") or {}).get("kad"))


def nearest_calibration(kad: float | None, calibration: Sequence[Mapping[str, Any]]) -> str | None:
    """The calibration row (the floor or a garbage row) whose KAD is nearest ``kad``."""
    rows = (
        [(abs(kad - k), r["name"]) for r in calibration if (k := _kad(r)) is not None]
        if kad is not None
        else []
    )
    return min(rows)[1] if rows else None


def _floor_and_garbage(calibration: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any] | None, list]:
    """The floor row and the garbage rows (a representation's round trip, ``ceiling``, is not garbage)."""
    floor = next((r for r in calibration if r["name"] == FLOOR), None)
    return floor, [r for r in calibration if r["name"] != FLOOR and r.get("kind") != "ceiling"]


def not_apart(calibration: Sequence[Mapping[str, Any]]) -> str | None:
    """Why these calibration rows cannot judge a model (a garbage row no farther from the
    held-out music than real music), or None: :func:`~cadenza.evaluation.results.garbage_not_apart`."""
    from cadenza.evaluation.results import garbage_not_apart

    floor, garbage = _floor_and_garbage(calibration)
    if floor is None:
        return None
    return garbage_not_apart(_kad(floor), [(r["name"], _kad(r)) for r in garbage], floor.get("n_clips"))


def nearer_floor(kad: float | None, calibration: Sequence[Mapping[str, Any]]) -> bool | None:
    """Whether ``kad`` is nearer the real-vs-real floor than the nearest garbage row (None: cannot
    tell, also where a garbage row measures no farther from the held-out music than the floor,
    :func:`not_apart`). A representation's round trip (a ``ceiling`` row) is not garbage."""
    if kad is None:
        return None
    floor_row, rows = _floor_and_garbage(calibration)
    floor = _kad(floor_row) if floor_row is not None else None
    garbage = [k for r in rows if (k := _kad(r)) is not None]
    if floor is None or not garbage or not_apart(calibration):
        return None
    return abs(kad - floor) < min(abs(kad - g) for g in garbage)


def ceiling_of(
    representation: str | None, calibration: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The round-trip row of ``representation`` (its name) among an evaluation's calibration rows."""
    return next(
        (
            r
            for r in calibration
            if representation and r.get("kind") == "ceiling" and r["name"].split(" ")[0] == representation
        ),
        None,
    )


def _rep_name(plan: Plan, model: str) -> str | None:
    """The name of the representation ``model`` trains on (``mel``, ``mfcc``, ...)."""
    return (plan.stores.get(plan.train_store.get(model, "")) or {}).get("name")


def _compare(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> str | None:
    """``"lower"``, ``"higher"`` (intervals apart), ``"overlap"``, or by value alone (``"lower?"``)."""
    va, vb = _value(a), _value(b)
    if va is None or vb is None:
        return None
    if all(x and x.get("low") is not None and x.get("high") is not None for x in (a, b)):
        if float(a["high"]) < float(b["low"]):  # type: ignore[index]
            return "lower"
        if float(a["low"]) > float(b["high"]):  # type: ignore[index]
            return "higher"
        return "overlap"
    return "lower?" if va < vb else "higher?"


def paper000_answer(sets: Mapping[str, Mapping[str, Any]], *, budget: str = "the same budget") -> str | None:
    """Paper 000's question in words from the two models' rows of one evaluation, or None when either is missing.

    The headline is KAD (lower is closer to real music): fft_bilinear beats fft_base when its
    95% interval lies wholly below fft_base's, loses when wholly above, and neither wins when
    the intervals overlap. FAD and the flags are reported beside it.

    >>> rows = {"fft_base": {"distances": {"kad": {"value": 0.5, "low": 0.4, "high": 0.6}}},
    ...         "fft_bilinear": {"distances": {"kad": {"value": 0.2, "low": 0.1, "high": 0.3}}}}
    >>> paper000_answer(rows).split(":")[0]
    'Yes'
    """
    base, bil = sets.get("fft_base"), sets.get("fft_bilinear")
    if base is None or bil is None:
        return None
    kad = _compare(bil["distances"].get("kad"), base["distances"].get("kad"))
    fad = _compare(bil["distances"].get("fad"), base["distances"].get("fad"))
    kb, kl = format_estimate(base["distances"].get("kad")), format_estimate(bil["distances"].get("kad"))
    if kad is None:
        return f"No answer: the evaluation has no KAD for both models (fft_base {kb}, fft_bilinear {kl})."
    verdict = {
        "lower": "Yes: fft_bilinear beats fft_base",
        "higher": "No: fft_base beats fft_bilinear",
        "overlap": "Not measurably: the 95% intervals overlap, so neither model is closer to real music",
        "lower?": "Perhaps: fft_bilinear's KAD is lower, but without intervals to show it is not chance",
        "higher?": "Perhaps not: fft_bilinear's KAD is higher, but without intervals to show it is not chance",
    }[kad]
    text = f"{verdict} at {budget} (KAD, lower is closer to held-out music: fft_bilinear {kl}, fft_base {kb}"
    if fad is not None:
        words = {
            "lower": "lower",
            "higher": "higher",
            "overlap": "overlapping",
            "lower?": "lower",
            "higher?": "higher",
        }
        text += (
            f"; FAD {words[fad]}: fft_bilinear {format_estimate(bil['distances'].get('fad'))}, "
            f"fft_base {format_estimate(base['distances'].get('fad'))}"
        )
    text += ")."
    fb, fl = _flag_text(base), _flag_text(bil)
    return text + f" Flags: fft_bilinear {fl}; fft_base {fb}."


def _flag_text(row: Mapping[str, Any]) -> str:
    flags = row.get("flags") or {}
    n = row.get("n_clips", 0)
    shown = ", ".join(f"{k} {v}/{n}" for k, v in flags.items() if v)
    return shown or "none"


def symbolic_goals(
    data: Mapping[str, float], model: Mapping[str, float]
) -> dict[str, tuple[float | None, float | None, bool | None]]:
    """Per goal of :data:`SYMBOLIC_GOALS`: (the model's value, its difference, whether it is within the goal).

    The difference is relative (a fraction of the training data's value) or in points (EB).

    >>> goals = symbolic_goals({"used_pitch_classes": 7.0, "empty_bar_rate": 2.0},
    ...                        {"used_pitch_classes": 11.3, "empty_bar_rate": 4.0})
    >>> goals["used_pitch_classes"][2], goals["empty_bar_rate"][2]
    (False, True)
    """
    out: dict[str, tuple[float | None, float | None, bool | None]] = {}
    for key, (_, tol, kind) in SYMBOLIC_GOALS.items():
        t, g = data.get(key), model.get(key)
        if t is None or g is None or not math.isfinite(t) or not math.isfinite(g):
            out[key] = (g, None, None)
            continue
        if kind == "points":
            diff = g - t
            out[key] = (g, diff, abs(diff) <= tol)
        elif t == 0:
            out[key] = (g, None, g == 0)
        else:
            diff = (g - t) / abs(t)
            out[key] = (g, diff, abs(diff) <= tol)
    return out


# ----------------------------------------------------------------------------- reading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _paper(summary: str) -> str:
    m = re.search(r"paper (\d{3})", summary)
    return m.group(1) if m else "—"


def _yes_no(v: bool | None) -> str:
    return "—" if v is None else ("yes" if v else "**no**")


def _rel(path: str | os.PathLike, out: Path) -> str:
    return Path(os.path.relpath(path, out)).as_posix()


# ----------------------------------------------------------------------------- the report
def write_report(out: str | os.PathLike, state: StudyState, plan: Plan) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out``; return both paths."""
    from cadenza.models import MODELS

    out = Path(out)
    data = state.data
    settings = data.get("settings") or {}
    budget: Budget = budget_from(settings.get("budget", DEFAULT_BUDGET))
    models: list[str] = list(settings.get("models") or [])
    failed: dict[str, str] = data.get("failed") or {}
    evaluations = {
        group: ev
        for group in data.get("groups", {})
        if (ev := _read_json(out / "evaluation" / group / "metrics.json")) is not None
    }
    sets = {
        s["name"]: (group, s)
        for group, ev in evaluations.items()
        for s in ev.get("sets", [])
        if s["name"] in models and (data["groups"][group].get("members") or []).count(s["name"])
    }
    commands = data.get("commands") or []
    machine = data.get("machine") or {}

    lines = ["# cadenza study", ""]
    date = (data.get("finished") or data.get("updated") or "")[:10]
    lines += [
        f"{len(models)} model{'s' * (len(models) != 1)} on `{settings.get('source')}`, {budget.each}"
        + (" (wall-clock, measured)" if budget.kind == "seconds" else "")
        + f", {settings.get('preset')} configs; report of {date}.",
        "",
    ]
    if commands:
        lines.append(f"- command: `{commands[0]['command']}` ({commands[0]['date']})")
        if len(commands) > 1:
            lines.append(
                f"- continued {len(commands) - 1} time(s); last: `{commands[-1]['command']}` ({commands[-1]['date']})"
            )
    lines.append(f"- started {data.get('started', '?')}, finished {data.get('finished', '?')}")
    lines.append(
        "- machine: "
        + ", ".join(f"{k} {v}" for k, v in machine.items())
        + f"; cadenza {data.get('cadenza_version', '?')}"
    )
    from cadenza.study.run import listen_command

    listen = listen_command(out, state, plan)
    if listen:
        lines.append(f"- listening test of the clips (paper 000's protocol): `{listen}`")
    if failed:
        lines.append(
            f"- **{len(failed)} model(s) failed**: "
            + "; ".join(f"{m} ({e.split(':')[0]})" for m, e in failed.items())
        )
    lines.append("")
    if data.get("preface"):
        lines += [*data["preface"], ""]

    # --- the comparison
    lines += [
        "## Models",
        "",
        "KAD and FAD against held-out files of the same corpus (lower is closer to real music), with "
        "95% bootstrap intervals; each model is measured against the held-out music of its own "
        "evaluation group (below), so compare numbers within a group. *Nearest row*: the calibration "
        "row whose KAD is nearest the model's; *nearer the floor*: the model's KAD is nearer the "
        "real-vs-real floor than the nearest garbage row (noise, silence, low-pass, loop). For a "
        "model whose representation only estimates its sound (mel, MFCC), the *round trip* row is "
        "held-out music encoded in that representation and decoded back: the nearest to real music "
        "such a model can come.",
        "",
        "| model | paper | measured against | trained | KAD | FAD | nearest row | nearer the floor | flags | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        spec = MODELS.get(m)
        paper = _paper(spec.summary) if spec else "—"
        train = (data["models"].get(m) or {}).get("stages", {}).get("train", {})
        trained = "—"
        if train.get("steps") is not None:
            trained = f"{train['steps']} steps, {format_seconds(float(train.get('seconds') or 0))}"
            if train.get("stopped") not in (None, "budget"):
                trained += f" ({train['stopped']})"
        group, row = sets.get(m, (plan.reference.get(m, "—"), None))
        kad = fad = near = floor = flags = "—"
        if row is not None:
            cal = evaluations[group].get("calibration") or []
            kad = format_estimate(row["distances"].get("kad"))
            fad = format_estimate(row["distances"].get("fad"))
            near = nearest_calibration(_kad(row), cal) or "—"
            verdict = nearer_floor(_kad(row), cal)
            floor = "cannot tell (below)" if verdict is None and not_apart(cal) else _yes_no(verdict)
            ceiling = ceiling_of(_rep_name(plan, m), cal)
            if verdict is False and ceiling is not None and nearer_floor(_kad(ceiling), cal) is False:
                floor += f" (nor is its representation's round trip, {_kad(ceiling):.3g})"
            flags = _flag_text(row)
        status = "ok" if m not in failed else f"**failed** at {failed[m].split(':')[0]}"
        lines.append(
            f"| {m} | {paper} | {group} | {trained} | {kad} | {fad} | {near} | {floor} | {flags} | {status} |"
        )
    lines.append("")

    # --- paper 000's question
    if "fft_base" in models and "fft_bilinear" in models:
        lines += ["## Paper 000: does fft_bilinear beat fft_base at equal budget?", ""]
        both = [sets.get(k) for k in ("fft_base", "fft_bilinear")]
        if all(both) and both[0][0] == both[1][0]:  # type: ignore[index]
            answer = paper000_answer({k: v[1] for k, v in sets.items()}, budget=budget.text)
        else:
            answer = "No answer: both models must be trained and measured against the same music (see the failures)."
        lines += [answer or "No answer.", ""]

    # --- collapse and floor/garbage summary
    lines += ["## Checks", ""]
    collapsed = {
        m: ", ".join(
            f"{f} {row['flags'][f]}/{row.get('n_clips', 0)}" for f in COLLAPSE_FLAGS if row["flags"].get(f)
        )
        for m, (g, row) in sets.items()
    }
    collapsed = {m: t for m, t in collapsed.items() if t}
    measured = [m for m in models if m in sets]
    if measured:
        lines.append(
            "- **No collapse**: "
            + (
                "met: no clip of any model flagged silent, noise, loop or copy"
                if not collapsed
                else "not met: " + "; ".join(f"{m} ({t})" for m, t in collapsed.items())
            )
        )
        audio = [m for m in measured if evaluations[sets[m][0]].get("calibration")]
        verdicts = {m: nearer_floor(_kad(sets[m][1]), evaluations[sets[m][0]]["calibration"]) for m in audio}
        undecided = {
            g: why
            for g in dict.fromkeys(sets[m][0] for m in audio)
            if (why := not_apart(evaluations[g]["calibration"]))
        }
        for g, why in undecided.items():
            lines.append(f"- **Cannot tell** against the held-out files of {g}: {why}")
        verdicts = {m: v for m, v in verdicts.items() if sets[m][0] not in undecided}
        if verdicts:
            far = [m for m, v in verdicts.items() if v is not True]
            bound = [
                m
                for m in far
                if (c := ceiling_of(_rep_name(plan, m), evaluations[sets[m][0]]["calibration"])) is not None
                and nearer_floor(_kad(c), evaluations[sets[m][0]]["calibration"]) is False
            ]
            lines.append(
                "- **Between floor and garbage** (KAD nearer the floor than the nearest garbage row): "
                + ("met by every model measured" if not far else f"not met by {', '.join(far)}")
                + (
                    f" ({', '.join(bound)}: out of reach in their representation, whose round trip of "
                    "held-out music is itself nearer a garbage row)"
                    if bound
                    else ""
                )
            )
    lines.append("")

    # --- per group
    for group, ev in evaluations.items():
        members = data["groups"][group].get("members") or []
        lines += [
            f"## Against the held-out files of {group}",
            "",
            f"{', '.join(members)} against {ev.get('settings', {}).get('n_reference_clips', '?')} held-out clips of "
            f"{describe_store(plan.stores.get(group, {'name': group}))}; "
            f"[the evaluation's report, with players](evaluation/{group}/report.html).",
            "",
        ]
        if (out / "evaluation" / group / "distances.png").is_file():
            lines += [f"![KAD and FAD of {group}](evaluation/{group}/distances.png)", ""]
        lines += ["| set | KAD | FAD | clips | flags |", "|---|---|---|---|---|"]
        for row in [*(ev.get("calibration") or []), *(ev.get("sets") or [])]:
            lines.append(
                f"| {row['name']} | {format_estimate(row['distances'].get('kad'))} | "
                f"{format_estimate(row['distances'].get('fad'))} | {row.get('n_clips', 0)} | {_flag_text(row)} |"
            )
        for note in ev.get("notes") or []:
            lines.append(f"\nnote: {note}")
        lines.append("")

    # --- Table 1 and the symbolic goals
    for store, rec in (data.get("table1") or {}).items():
        table = _read_json(out / "table1" / store / "table1.json")
        if rec.get("status") != "done" or not table:
            continue
        md = (
            (out / "table1" / store / "table1.md").read_text()
            if (out / "table1" / store / "table1.md").is_file()
            else ""
        )
        rows = table.get("rows") or []
        train_row = next((r for r in rows if r["name"] == "Training data"), None)
        lines += [
            f"## Paper 004's Table 1: the piano-roll models against the training data of {store}",
            "",
            md.strip(),
            "",
        ]
        if train_row is not None:
            head = " | ".join(label for label, _, _ in SYMBOLIC_GOALS.values())
            lines += [
                "The symbolic goals: UPC and QN within 10% of the training data, EB within 5 points, "
                "polyphony and pitch range within 20% (the difference in brackets).",
                "",
                f"| | {head} | goals met |",
                "|---" * (len(SYMBOLIC_GOALS) + 2) + "|",
            ]
            t = train_row["metrics"]
            lines.append("| training data | " + " | ".join(_num(t.get(k)) for k in SYMBOLIC_GOALS) + " | |")
            for r in rows:
                if r["name"] == "Training data":
                    continue
                goals = symbolic_goals(t, r["metrics"])
                cells = []
                for key, (value, diff, ok) in goals.items():
                    kind = SYMBOLIC_GOALS[key][2]
                    d = "" if diff is None else (f" ({diff:+.1f})" if kind == "points" else f" ({diff:+.0%})")
                    cells.append(f"{_num(value)}{d}" + ("" if ok is None else (" ✓" if ok else " ✗")))
                met = sum(1 for *_, ok in goals.values() if ok)
                lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {met}/{len(goals)} |")
            lines.append("")

    # --- per model
    lines += ["## Each model", ""]
    for m in models:
        spec = MODELS.get(m)
        rec = data["models"].get(m) or {}
        stages = rec.get("stages") or {}
        lines += [f"### {m}", ""]
        if spec is not None:
            lines.append(f"- {spec.summary}")
        store = plan.train_store.get(m)
        if store:
            lines.append(
                f"- trains on `data/{store}` ({describe_store(plan.stores[store])}), measured against `data/{plan.reference[m]}`"
            )
        train = stages.get("train") or {}
        if train.get("steps") is not None:
            rate = train.get("seconds_per_step")
            lines.append(
                f"- trained {train['steps']} steps ({train.get('epoch', '?')} epochs) in "
                f"{format_seconds(float(train.get('seconds') or 0))} (budget: {budget.text})"
                + (f", {float(rate):.3g} s per step" if rate else "")
                + f"; stopped: {train.get('stopped', '?')}"
                + (f"; `best.pt` from step {train['best_step']}" if train.get("best_step") else "")
                + f"; run: `{train.get('run', f'runs/{m}')}`"
            )
        if m in failed:
            where = failed[m].split(":")[0]
            log = (stages.get(where) or {}).get("log")
            lines.append(f"- **failed** at {failed[m]}" + (f" (traceback: `{log}`)" if log else ""))
        gaps = (sets.get(m, (None, {}))[1].get("gaps") or {}).get("groups") or []
        if gaps:
            lines.append(
                "- farthest from the held-out music in: "
                + ", ".join(
                    f"{name} ({value:.1f} deviations)" for name, value in gaps[:3] if value is not None
                )
            )
        loss = out / "runs" / m / "plots" / "loss.png"
        if loss.is_file():
            lines.append(f"- ![loss of {m}]({_rel(loss, out)})")
        files = (stages.get("generate") or {}).get("files") or []
        if files:
            lines.append("- listening clips: " + ", ".join(f"[{Path(f).name}]({f})" for f in files))
        lines.append("")

    # --- data
    lines += [
        "## Data",
        "",
        f"Every store is prepared from `{settings.get('source')}` with the same files "
        f"(max files: {settings.get('max_files') or 'all'}) and split seed {settings.get('seed')}, so the "
        "held-out files are the same for every model.",
        "",
        "| store | representation | used by | prepared | held-out files |",
        "|---|---|---|---|---|",
    ]
    for key, rec in (data.get("stores") or {}).items():
        if key not in plan.stores:
            continue
        prepared = (
            rec.get("summary", rec.get("status", "—"))
            if rec.get("status") == "done"
            else f"**{rec.get('status')}**: {rec.get('error', '')}"
        )
        prepared = str(prepared).split(" in /")[0].split(";")[0]
        lines.append(
            f"| `data/{key}` | {describe_store(plan.stores[key])} | {', '.join(plan.users(key))} | {prepared} | "
            f"{len(rec.get('test_files') or [])} |"
        )
    # what prepare warned of (a held-out split without music, one holding most of it), once
    told = dict.fromkeys(
        part.strip()
        for r in (data.get("stores") or {}).values()
        if r.get("status") == "done"
        for part in str(r.get("summary", "")).split("; ")
        if part.startswith("warning: ")
    )
    if told:
        lines += ["", *(f"- **{w.split(': ', 1)[0]}**: {w.split(': ', 1)[1]}" for w in told)]
    parts: dict[str, int] = {}
    for r in (data.get("stores") or {}).values():
        parts.update(r.get("parts") or {})
    if parts:
        cut = "; ".join(f"{name} is cut in time into {k} parts" for name, k in sorted(parts.items()))
        lines += [
            "",
            f"The source has too few files to hold whole ones out: {cut}, and whole parts are held out. "
            "Held-out parts share their recording's sound with the training parts, so every measure here "
            "is kinder than it would be against other recordings.",
        ]
    held = data.get("held_out") or {}
    if held.get("same") is True:
        first = next((r for r in (data.get("stores") or {}).values() if r.get("test_files")), {})
        shown = ", ".join(first.get("test_files", [])[:12])
        more = len(first.get("test_files", [])) - 12
        lines += [
            "",
            f"The held-out (test) files are the same in every store: {shown}"
            + (f" and {more} more" if more > 0 else "")
            + ".",
        ]
    elif held.get("notes"):
        lines += ["", "**The held-out files differ between stores**: " + "; ".join(held["notes"])]
    lines.append("")

    if failed:
        lines += ["## Failures", ""]
        for m, e in failed.items():
            lines.append(f"- {m}: {e}")
        lines.append("")

    text = "\n".join(lines) + "\n"
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, text)
    atomic_write_text(html_path, markdown_to_html(text, title="cadenza study"))
    return md_path, html_path


def markdown_to_html(text: str, *, title: str) -> str:
    """The reports' small Markdown (headings, bullets, tables, images, links, code, bold) as a page."""

    def inline(s: str) -> str:
        s = html.escape(s, quote=False)
        s = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2" style="max-width:100%">', s)
        s = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", s)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)

    body: list[str] = []
    table: list[list[str]] = []
    in_list = 0

    def close() -> None:
        nonlocal in_list, table
        body.extend(["</ul>"] * in_list)
        in_list = 0
        if table:
            head, *rows = table
            body.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>")
            body.extend("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append("</table>")
            table = []

    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
            continue
        bullet = re.match(r"( *)- (.*)", line)
        if bullet:
            depth = len(bullet.group(1)) // 2 + 1
            if table:
                close()
            while in_list < depth:
                body.append("<ul>")
                in_list += 1
            while in_list > depth:
                body.append("</ul>")
                in_list -= 1
            body.append(f"<li>{inline(bullet.group(2))}</li>")
            continue
        close()
        heading = re.match(r"(#+) (.*)", line)
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    close()
    style = (
        "body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em}code{background:#f4f4f4}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<link rel="icon" href="data:,"><style>{style}</style></head><body>\n'
        + "\n".join(body)
        + "\n</body></html>\n"
    )
