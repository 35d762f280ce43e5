"""Symbolic metrics on 10,000 bars: cadenza.evaluation against muspy, side by side in one process.

The bars are real Bach chorales (music21's corpus) encoded as cadenza piano rolls (24 steps per
beat, 96 per 4/4 bar, the 84 pitches C1-B7), transposed by -5..+6 semitones and tiled until there
are ``--bars`` of them, then cut into 4-bar phrases (the GAN's phrase length). cadenza gets the
``uint8`` array ``(n_bars, 96, 84)`` as ``PianoRoll.encode`` writes it, so its timings include the
thresholding. muspy gets one ``muspy.Music`` per phrase (and per bar, for UPC) holding the same
notes (one note per run of active steps, as muspy's own ``from_pianoroll_representation``
reads a roll; checked on a sample) and an annotation at the phrase's end so that its length is
the phrase's; building those objects is timed once and left out of muspy's timings.

Each metric is timed alternately on both sides, ``--repeats`` times, and the median kept; the
suite is ``symbolic_report`` (every metric, one pass) against muspy's metrics one after another.
Values must agree within 1e-9 where the definitions agree; where they do not (muspy 0.5's
off-by-one beats and bars, see ``cadenza/evaluation/symbolic.py``) both values are shown.
Results go to benchmarks/results/metrics.json.

    .venv/bin/python benchmarks/metrics.py [--bars 10000] [--chorales 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "metrics.json"
RESOLUTION, BEATS_PER_BAR, LOWEST_PITCH, N_PITCHES, BARS_PER_PIECE = 24, 4, 24, 84, 4
STEPS_PER_BAR = RESOLUTION * BEATS_PER_BAR


def chorale_bars(n_bars: int, n_chorales: int) -> tuple[np.ndarray, list[str]]:
    """``(n_bars, 96, 84)`` uint8 bars of chorales, transposed and tiled."""
    from music21 import corpus

    from cadenza.data.scores import read_score
    from cadenza.representations import make_representation

    rep = make_representation(
        "pianoroll",
        resolution=RESOLUTION,
        lowest_pitch=LOWEST_PITCH,
        n_pitches=N_PITCHES,
        beats_per_bar=BEATS_PER_BAR,
    )
    paths = sorted(p for p in corpus.getComposer("bach") if p.suffix == ".mxl")[:n_chorales]
    bars = np.concatenate([rep.bars(rep.encode(read_score(p))) for p in paths])
    versions = []
    for semitones in [0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6]:
        shifted = np.zeros_like(bars)
        if semitones >= 0:
            shifted[..., semitones:] = bars[..., : N_PITCHES - semitones]
        else:
            shifted[..., :semitones] = bars[..., -semitones:]
        assert np.count_nonzero(shifted) == np.count_nonzero(bars), "a transposition left the 84-pitch range"
        versions.append(shifted)
    all_bars = np.concatenate(versions)
    return np.resize(all_bars, (n_bars, *all_bars.shape[1:])), [p.name for p in paths]


def to_musics(rolls: np.ndarray) -> list[Any]:
    """Rolls ``(n, n_steps, 84)`` -> one ``muspy.Music`` each: a note per run, MIDI pitch, an end annotation."""
    import muspy

    n, n_steps, _ = rolls.shape
    padded = np.pad(rolls > 0, ((0, 0), (1, 1), (0, 0))).astype(np.int8)
    change = np.diff(padded, axis=1).transpose(0, 2, 1)  # (n, pitch, step): +1 onset, -1 end
    onsets, ends = np.argwhere(change == 1), np.argwhere(change == -1)  # same (roll, pitch) order
    bounds = np.searchsorted(onsets[:, 0], np.arange(n + 1))
    musics = []
    for i in range(n):
        part = slice(bounds[i], bounds[i + 1])
        notes = [
            muspy.Note(time=int(t), pitch=int(p) + LOWEST_PITCH, duration=int(e - t), velocity=64)
            for (_, p, t), e in zip(onsets[part], ends[part, 2])
        ]
        track = muspy.Track(
            program=0, notes=notes, annotations=[muspy.Annotation(time=n_steps, annotation="end")]
        )
        musics.append(muspy.Music(resolution=RESOLUTION, tracks=[track]))
    return musics


def check_conversion(rolls: np.ndarray, musics: list[Any], n: int = 50) -> None:
    """Our Music objects hold the notes muspy's own reader finds in the same rolls."""
    import muspy

    for roll, music in zip(rolls[:n], musics[:n]):
        full = np.zeros((roll.shape[0], 128), dtype=bool)
        full[:, LOWEST_PITCH : LOWEST_PITCH + N_PITCHES] = roll > 0
        theirs = muspy.from_pianoroll_representation(full, resolution=RESOLUTION, encode_velocity=False)
        key = lambda m: sorted((x.time, x.pitch, x.duration) for x in m.tracks[0].notes)  # noqa: E731
        assert key(theirs) == key(music), "conversion differs from muspy.from_pianoroll_representation"
        assert music.get_end_time() == roll.shape[0]


def metric_rows(bars: np.ndarray, pieces: list[Any], bar_musics: list[Any]) -> list[dict[str, Any]]:
    """Each metric: our call, muspy's loop, and whether the two definitions agree."""
    import muspy

    from cadenza.evaluation import symbolic as ev

    per_piece = {"bars_per_piece": BARS_PER_PIECE}

    def over_pieces(fn: Callable[[Any], float]) -> Callable[[], float]:
        return lambda: float(np.nanmean([fn(m) for m in pieces]))

    def muspy_upc() -> float:
        return float(np.mean([muspy.n_pitch_classes_used(m) for m in bar_musics if m.tracks[0].notes]))

    return [
        {
            "metric": "empty_bar_rate",
            "ours": lambda: ev.empty_bar_rate(bars),
            "muspy": lambda: 100 * over_pieces(lambda m: muspy.empty_measure_rate(m, STEPS_PER_BAR))(),
            "agree": False,
            "note": "muspy.empty_measure_rate: a note's end marks the next bar, and a phantom bar",
        },
        {
            "metric": "used_pitch_classes",
            "ours": lambda: ev.used_pitch_classes(bars, lowest_pitch=LOWEST_PITCH),
            "muspy": muspy_upc,
            "agree": True,
            "note": "muspy.n_pitch_classes_used per non-empty one-bar Music",
        },
        {
            "metric": "qualified_note_rate",
            "ours": lambda: ev.qualified_note_rate(bars),
            "muspy": None,
            "agree": False,
            "note": "muspy has no qualified-note rate",
        },
        {
            "metric": "pitch_class_entropy",
            "ours": lambda: ev.pitch_class_entropy(bars, lowest_pitch=LOWEST_PITCH, **per_piece),
            "muspy": over_pieces(muspy.pitch_class_entropy),
            "agree": True,
        },
        {
            "metric": "n_pitches_used",
            "ours": lambda: ev.n_pitches_used(bars, **per_piece),
            "muspy": over_pieces(muspy.n_pitches_used),
            "agree": True,
        },
        {
            "metric": "pitch_range",
            "ours": lambda: ev.pitch_range(bars, **per_piece),
            "muspy": over_pieces(muspy.pitch_range),
            "agree": True,
        },
        {
            "metric": "polyphony",
            "ours": lambda: ev.polyphony(bars, **per_piece),
            "muspy": over_pieces(muspy.polyphony),
            "agree": True,
        },
        {
            "metric": "polyphony_rate",
            "ours": lambda: ev.polyphony_rate(bars, min_pitches=3, **per_piece),
            "muspy": over_pieces(muspy.polyphony_rate),
            "agree": True,
            "note": "min_pitches=3 is muspy's default threshold=2 (more than 2 pitches)",
        },
        {
            "metric": "scale_consistency",
            "ours": lambda: ev.scale_consistency(bars, lowest_pitch=LOWEST_PITCH, **per_piece),
            "muspy": over_pieces(muspy.scale_consistency),
            "agree": True,
        },
        {
            "metric": "groove_consistency",
            "ours": lambda: ev.groove_consistency(bars, **per_piece),
            "muspy": over_pieces(lambda m: muspy.groove_consistency(m, STEPS_PER_BAR)),
            "agree": False,
            "note": "muspy compares a phantom empty bar after the last one",
        },
        {
            "metric": "empty_beat_rate",
            "ours": lambda: ev.empty_beat_rate(bars, resolution=RESOLUTION, **per_piece),
            "muspy": over_pieces(muspy.empty_beat_rate),
            "agree": False,
            "note": "muspy: a note's end marks the next beat, and a phantom beat",
        },
    ]


def timed(fn: Callable[[], float]) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bars", type=int, default=10_000)
    parser.add_argument("--chorales", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.bars % BARS_PER_PIECE:
        parser.error(f"--bars must be a multiple of {BARS_PER_PIECE}")

    import muspy

    from cadenza.evaluation import symbolic_report

    t0 = time.perf_counter()
    bars, names = chorale_bars(args.bars, args.chorales)
    read_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    pieces = to_musics(bars.reshape(-1, BARS_PER_PIECE * STEPS_PER_BAR, N_PITCHES))
    bar_musics = to_musics(bars)
    convert_seconds = time.perf_counter() - t0
    check_conversion(bars.reshape(-1, BARS_PER_PIECE * STEPS_PER_BAR, N_PITCHES), pieces)
    check_conversion(bars, bar_musics)
    n_notes = sum(len(m.tracks[0].notes) for m in pieces)
    print(
        f"{len(bars)} bars ({len(pieces)} phrases of {BARS_PER_PIECE}, {n_notes} notes) from {len(names)} chorales "
        f"x 12 transpositions; read in {read_seconds:.1f} s; muspy objects built in {convert_seconds:.1f} s (not timed)"
    )

    rows = metric_rows(bars, pieces, bar_musics)
    times: dict[str, dict[str, list[float]]] = {r["metric"]: {"ours": [], "muspy": []} for r in rows}
    suite: dict[str, list[float]] = {"ours": [], "muspy": []}
    report_args = {"lowest_pitch": LOWEST_PITCH, "resolution": RESOLUTION, "bars_per_piece": BARS_PER_PIECE}
    for repeat in range(args.repeats):
        muspy_total = 0.0
        for row in rows:
            sides = ["ours", "muspy"] if repeat % 2 == 0 else ["muspy", "ours"]
            for side in sides:
                if row[side] is None:
                    continue
                seconds, value = timed(row[side])
                times[row["metric"]][side].append(seconds)
                row[f"{side}_value"] = value
                muspy_total += seconds if side == "muspy" else 0.0
        suite["muspy"].append(muspy_total)
        seconds, report = timed(lambda: symbolic_report(bars, min_pitches=3, **report_args))
        suite["ours"].append(seconds)

    results = []
    print(
        f"\n{'metric':<22}{'cadenza ms':>11}{'muspy ms':>11}{'speed-up':>10}  {'cadenza value':>16}{'muspy value':>16}  agree"
    )
    for row in rows:
        name, ours_s = row["metric"], statistics.median(times[row["metric"]]["ours"])
        assert report[name] == row["ours_value"], f"symbolic_report's {name} differs from {name}()"
        muspy_s = statistics.median(times[name]["muspy"]) if row["muspy"] else None
        muspy_value = row.get("muspy_value")
        if row["agree"]:
            assert abs(row["ours_value"] - muspy_value) <= 1e-9, (
                f"{name}: {row['ours_value']} != muspy {muspy_value}"
            )
        result = {
            "metric": name,
            "cadenza_ms": round(1e3 * ours_s, 2),
            "muspy_ms": None if muspy_s is None else round(1e3 * muspy_s, 1),
            "speedup": None if muspy_s is None else round(muspy_s / ours_s, 1),
            "cadenza_value": row["ours_value"],
            "muspy_value": muspy_value,
            "definitions_agree": row["agree"],
            "note": row.get("note", ""),
        }
        results.append(result)
        muspy_cells = (
            ("-", "-", "-")
            if muspy_s is None
            else (f"{1e3 * muspy_s:.0f}", f"{result['speedup']:.1f}x", f"{muspy_value:.6f}")
        )
        agree = "yes" if row["agree"] else ("-" if muspy_s is None else "differs")
        print(
            f"{name:<22}{1e3 * ours_s:>11.1f}{muspy_cells[0]:>11}{muspy_cells[1]:>10}  "
            f"{row['ours_value']:>16.6f}{muspy_cells[2]:>16}  {agree}"
        )
    ours_suite, muspy_suite = statistics.median(suite["ours"]), statistics.median(suite["muspy"])
    speedup = muspy_suite / ours_suite
    print(
        f"\nsuite: symbolic_report {1e3 * ours_suite:.0f} ms (11 metrics) vs muspy {muspy_suite:.2f} s "
        f"(its 10): {speedup:.1f}x faster (goal 20x: {'met' if speedup >= 20 else 'NOT met'})"
    )

    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "metrics",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
                "python": platform.python_version(),
                "numpy": np.__version__,
                "muspy": muspy.__version__,
                "n_bars": len(bars),
                "bars_per_piece": BARS_PER_PIECE,
                "n_notes": n_notes,
                "chorales": names,
                "transpositions": 12,
                "input": "uint8 (n_bars, 96, 84), resolution 24, lowest pitch 24",
                "muspy_conversion_seconds_excluded": round(convert_seconds, 2),
                "repeats": args.repeats,
                "statistic": "median of interleaved repetitions",
                "suite_cadenza_ms": round(1e3 * ours_suite, 1),
                "suite_muspy_ms": round(1e3 * muspy_suite, 1),
                "suite_speedup": round(speedup, 1),
                "results": results,
                "date": time.strftime("%Y-%m-%d"),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
