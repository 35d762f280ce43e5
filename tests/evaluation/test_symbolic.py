"""Symbolic metrics: hand-built rolls with known answers, the reference code's traps, muspy on chorales."""

from __future__ import annotations

import doctest
import inspect
import math

import numpy as np
import pytest

from cadenza.errors import ParameterError
from cadenza.evaluation import symbolic
from cadenza.evaluation.symbolic import (
    TABLE_1,
    empty_bar_rate,
    empty_bars,
    empty_beat_rate,
    groove_consistency,
    n_pitches_used,
    pitch_class_entropy,
    pitch_range,
    polyphony,
    polyphony_rate,
    qualified_note_rate,
    qualified_notes_per_bar,
    scale_consistency,
    symbolic_report,
    used_pitch_classes,
    used_pitch_classes_per_bar,
)

LOWEST = 24  # C1, column 0 of the 84-pitch crop


def zeros(n_bars: int = 1, steps: int = 96, pitches: int = 84, dtype: type = np.uint8) -> np.ndarray:
    return np.zeros((n_bars, steps, pitches), dtype=dtype)


def random_bars(
    seed: int, n_bars: int = 8, steps: int = 16, pitches: int = 84, density: float = 0.3
) -> np.ndarray:
    """Sparse rolls with runs of varied length, some empty bars."""
    rng = np.random.default_rng(seed)
    bars = (rng.random((n_bars, steps, pitches)) < density / 4).astype(np.uint8)
    for shift in (1, 2, 3):  # stretch some onsets into longer notes
        bars[:, shift:] |= bars[:, :-shift] & (rng.random(bars[:, shift:].shape) < 0.5)
    bars[rng.random(n_bars) < 0.2] = 0
    return bars


# ------------------------------------------------------------------------------ EB
def test_empty_bar_rate_is_the_empty_rate_not_the_non_empty_rate() -> None:
    bars = zeros(4)
    bars[0, :24, 36] = bars[1, 50, 10] = bars[2, 95, 83] = 1  # three bars with a note, one empty
    assert empty_bar_rate(bars) == 25.0
    # MuseGAN's TensorFlow empty_bar_rate and pypianoroll's empty_beat_rate compute this instead:
    assert 100 * np.mean(np.any(bars > 0.5, axis=(1, 2))) == 75.0
    assert list(empty_bars(bars)) == [False, False, False, True]


def test_empty_bar_rate_of_a_flat_roll_needs_the_bar_length() -> None:
    roll = zeros(3).reshape(-1, 84)
    roll[100, 5] = 1  # second bar
    assert empty_bar_rate(roll, steps_per_bar=96) == pytest.approx(200 / 3)
    with pytest.raises(ParameterError, match="steps_per_bar"):
        empty_bar_rate(roll)
    with pytest.raises(ParameterError, match="whole bars"):
        empty_bar_rate(roll, steps_per_bar=100)
    with pytest.raises(ParameterError, match="steps_per_bar"):
        empty_bar_rate(zeros(2), steps_per_bar=48)


# ------------------------------------------------------------------------------ UPC
def test_pitch_classes_are_pitch_mod_12_not_bands_of_seven() -> None:
    bars = zeros(2)
    bars[0, :, [0, 12]] = 1  # C1 and C2: one pitch class; bands 0 and 1 of the 12x7 reshape
    bars[1, :, [0, 2]] = 1  # C1 and D1: two pitch classes; both in band 0
    assert list(used_pitch_classes_per_bar(bars, lowest_pitch=LOWEST)) == [1, 2]
    assert list(used_pitch_classes_per_bar(bars, lowest_pitch=LOWEST, legacy=True)) == [2, 1]
    bands = bars.reshape(2, 96, 12, 7).sum(axis=3)  # MuseGAN's v1 "chroma"
    assert list(np.count_nonzero(bands.any(axis=1), axis=1)) == [2, 1]


def test_used_pitch_classes_averages_over_non_empty_bars_only() -> None:
    bars = zeros(4)
    bars[0, :10, [0, 12, 24, 36]] = 1  # C in four octaves: 1
    bars[1, :10, [4, 7]] = bars[1, 40:50, [0, 11]] = 1  # E G C B: 4
    assert used_pitch_classes(bars, lowest_pitch=LOWEST) == 2.5  # not (1 + 4) / 4
    assert math.isnan(used_pitch_classes(zeros(2), lowest_pitch=LOWEST))


def test_used_pitch_classes_on_a_full_midi_roll() -> None:
    bars = zeros(1, pitches=128)
    bars[0, 0, [0, 60, 127, 61]] = 1  # C, C, G, C#
    assert used_pitch_classes(bars, lowest_pitch=0) == 3.0
    with pytest.raises(ParameterError, match="multiple of 12"):
        used_pitch_classes(bars, lowest_pitch=0, legacy=True)
    with pytest.raises(ParameterError, match="outside MIDI"):
        used_pitch_classes(bars, lowest_pitch=24)


# ------------------------------------------------------------------------------ QN
def flattened_time_major_qn(bars: np.ndarray, threshold: int = 3) -> float:
    """The trap: onsets and offsets found on a time-major flattening, paired across pitches."""
    rates = []
    for bar in bars.astype(np.int64):
        diff = np.diff(np.pad(bar, ((1, 1), (0, 0))), axis=0).reshape(
            -1
        )  # (steps + 1) * pitches, pitch fastest
        onsets, offsets = np.flatnonzero(diff > 0), np.flatnonzero(diff < 0)
        if len(onsets):
            rates.append(np.mean(offsets - onsets >= threshold))
    return 100 * float(np.mean(rates))


def test_qualified_notes_are_runs_of_one_pitch() -> None:
    bars = zeros(1, steps=16, pitches=12)
    bars[0, 0:4, 0] = 1  # 4 steps: qualified
    bars[0, 0, 1] = 1  # 1 step: not
    assert qualified_note_rate(bars) == 50.0
    assert flattened_time_major_qn(bars) == 100.0  # pairs pitch 0's onset with pitch 1's offset
    assert [list(x) for x in qualified_notes_per_bar(bars)] == [[1], [2]]


def test_qualified_note_rate_threshold_and_legacy() -> None:
    bars = zeros(1, steps=32, pitches=12)
    bars[0, 0:1, 0] = bars[0, 4:6, 0] = bars[0, 8:11, 0] = bars[0, 20:24, 3] = 1  # 1, 2, 3, 4 steps
    assert qualified_note_rate(bars) == 50.0  # at least 3 steps, as papers 004 and MuseGAN say
    assert qualified_note_rate(bars, legacy=True) == 75.0  # MuseGAN's code: at least 2
    assert qualified_note_rate(bars, min_length=1) == 100.0
    assert qualified_note_rate(bars, min_length=5) == 0.0
    assert qualified_note_rate(bars, min_length=4, legacy=True) == 25.0
    with pytest.raises(ParameterError, match="min_length"):
        qualified_note_rate(bars, min_length=0)


def test_qualified_note_rate_averages_per_bar_rates_over_bars_with_notes() -> None:
    bars = zeros(3, steps=16, pitches=12)
    bars[0, 0:8, 0] = 1  # 1 of 1 qualified
    bars[1, 0, [0, 1, 2]] = 1  # 0 of 3; bar 2 is empty
    assert qualified_note_rate(bars) == 50.0  # (100 + 0) / 2
    n_qualified, n_notes = qualified_notes_per_bar(bars)
    assert list(n_qualified) == [1, 0, 0] and list(n_notes) == [1, 3, 0]
    assert n_qualified.sum() / n_notes.sum() == 0.25  # the pooled rate, if wanted
    assert math.isnan(qualified_note_rate(zeros(2)))


def test_qualified_notes_cut_at_bar_lines_or_not() -> None:
    bars = zeros(2, steps=8, pitches=12)
    bars[0, 6:8, 5] = bars[1, 0:2, 5] = 1  # 4 steps tied over the bar line
    assert qualified_note_rate(bars) == 0.0  # MuseGAN: two notes of 2 steps
    assert [list(x) for x in qualified_notes_per_bar(bars)] == [[0, 0], [1, 1]]
    assert qualified_note_rate(bars, cut_at_bars=False) == 100.0  # one note of 4, counted in bar 0
    assert [list(x) for x in qualified_notes_per_bar(bars, cut_at_bars=False)] == [[1, 0], [1, 0]]
    assert qualified_note_rate(bars, cut_at_bars=False, bars_per_piece=1) == 0.0
    with pytest.raises(ParameterError, match="cut_at_bars"):
        qualified_note_rate(bars, cut_at_bars=False, legacy=True)


def test_notes_near_the_bar_end_and_repeated_notes() -> None:
    bars = zeros(1, steps=8, pitches=12)
    bars[0, 5:8, 0] = 1  # 3 steps ending at the bar end: qualified
    bars[0, 0:2, 1] = bars[0, 3:5, 1] = 1  # a repeated note with a gap: two notes of 2
    assert [list(x) for x in qualified_notes_per_bar(bars)] == [[1], [3]]


# ------------------------------------------------------------------------------ dtypes, overflow, caller's array
def test_uint8_differences_would_wrap_but_ours_do_not() -> None:
    assert list(np.diff(np.array([0, 1, 0], dtype=np.uint8))) == [1, 255]  # why uint8 arithmetic is out
    bars = random_bars(1)
    expected = symbolic_report(bars.astype(bool), lowest_pitch=LOWEST, resolution=4)
    signed = np.where(bars > 0, 3, -2).astype(np.int8)  # inactive cells negative
    for roll in (bars, bars * np.uint8(255), signed, bars.astype(np.float16)):
        assert symbolic_report(roll, lowest_pitch=LOWEST, resolution=4) == pytest.approx(
            expected, nan_ok=True
        )


def test_counts_beyond_255_do_not_overflow() -> None:
    bars = np.ones((1, 4, 128), dtype=np.uint8)  # 128 pitches x 4 steps = 512 active cells
    assert polyphony(bars) == 128.0
    assert n_pitches_used(bars) == 128.0
    assert pitch_range(bars) == 127.0
    long_bar = np.zeros((2, 600, 12), dtype=np.uint8)
    long_bar[:, :, 0] = 1  # one note of 600 steps per bar, and 300 notes of 1 step
    long_bar[1, ::2, 3] = 1
    assert [list(x) for x in qualified_notes_per_bar(long_bar, min_length=300)] == [[1, 1], [1, 301]]


def test_threshold_on_probabilities() -> None:
    bars = np.zeros((1, 8, 12), dtype=np.float32)
    bars[0, 0:4, 0] = 0.9
    bars[0, 4:8, 0] = 0.5  # not above 0.5
    bars[0, 0, 1] = np.nan
    assert qualified_notes_per_bar(bars)[1].tolist() == [1]
    assert n_pitches_used(bars) == 1.0
    assert n_pitches_used(bars, threshold=0.4) == 1.0 and polyphony(bars, threshold=0.4) == 1.0
    assert empty_bar_rate(bars, threshold=0.95) == 100.0
    ints = np.array([[[-3, 0, 1, 2]]], dtype=np.int16)
    assert n_pitches_used(ints) == 2.0 and n_pitches_used(ints, threshold=-5) == 4.0
    assert (
        n_pitches_used(ints, threshold=1.5) == 1.0 and n_pitches_used(ints.astype(bool), threshold=2) == 0.0
    )


CALLS = {
    "empty_bars": lambda b: empty_bars(b),
    "empty_bar_rate": lambda b: empty_bar_rate(b),
    "used_pitch_classes_per_bar": lambda b: used_pitch_classes_per_bar(b, lowest_pitch=LOWEST),
    "used_pitch_classes": lambda b: used_pitch_classes(b, lowest_pitch=LOWEST, legacy=True),
    "qualified_notes_per_bar": lambda b: qualified_notes_per_bar(b, cut_at_bars=False),
    "qualified_note_rate": lambda b: qualified_note_rate(b),
    "pitch_class_entropy": lambda b: pitch_class_entropy(b, lowest_pitch=LOWEST, bars_per_piece=2),
    "n_pitches_used": lambda b: n_pitches_used(b),
    "pitch_range": lambda b: pitch_range(b),
    "polyphony": lambda b: polyphony(b),
    "polyphony_rate": lambda b: polyphony_rate(b),
    "scale_consistency": lambda b: scale_consistency(b, lowest_pitch=LOWEST),
    "groove_consistency": lambda b: groove_consistency(b, bars_per_piece=4),
    "empty_beat_rate": lambda b: empty_beat_rate(b, resolution=4),
    "symbolic_report": lambda b: symbolic_report(b, lowest_pitch=LOWEST, resolution=4, cut_at_bars=False),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_the_callers_array_is_left_unchanged(name: str) -> None:
    base = random_bars(2)
    for roll in (base, base.astype(bool), base * np.float32(0.8), np.asfortranarray(base)):
        before = roll.copy()
        roll.setflags(write=False)  # any in-place write raises
        CALLS[name](roll)
        np.testing.assert_array_equal(roll, before)
        assert roll.dtype == before.dtype


# ------------------------------------------------------------------------------ muspy's family, by hand
def test_n_pitches_used_and_pitch_range() -> None:
    bars = zeros(2)
    bars[0, :24, [3, 15, 40]] = 1
    assert n_pitches_used(bars) == 3.0 and pitch_range(bars) == 37.0
    assert n_pitches_used(bars, bars_per_piece=1) == 1.5  # (3 + 0) / 2: a silent piece counts 0, as muspy
    assert pitch_range(bars, bars_per_piece=1) == 18.5


def test_pitch_class_entropy_counts_notes_not_steps() -> None:
    roll = np.zeros((96, 84), dtype=np.uint8)
    roll[0:60, 12] = roll[72:80, 12] = 1  # two Cs, one of them long
    roll[0:8, 16] = roll[8:16, 19] = 1  # E, G
    assert pitch_class_entropy(roll, lowest_pitch=LOWEST) == pytest.approx(1.5)  # 1/2, 1/4, 1/4
    steps = np.array([68, 8, 8]) / 84  # what a step histogram would give instead
    assert -(steps * np.log2(steps)).sum() < 1.0
    roll[0:8, 24] = 1  # C an octave up: the same class
    assert pitch_class_entropy(roll, lowest_pitch=LOWEST) == pytest.approx(
        -(0.6 * np.log2(0.6) + 0.4 * np.log2(0.2))
    )
    assert math.isnan(pitch_class_entropy(zeros(1), lowest_pitch=LOWEST))


def test_scale_consistency() -> None:
    roll = np.zeros((96, 12), dtype=bool)
    for i, pitch_class in enumerate([0, 2, 4, 5, 7, 9, 11, 1]):
        roll[12 * i : 12 * i + 6, pitch_class] = True
    assert scale_consistency(roll, lowest_pitch=60) == 0.875
    roll[:, 1] = False
    assert scale_consistency(roll, lowest_pitch=60) == 1.0
    assert math.isnan(scale_consistency(roll & False, lowest_pitch=60))


def test_polyphony_and_polyphony_rate() -> None:
    roll = np.zeros((6, 12), dtype=np.uint8)
    roll[0, :1] = roll[1, :2] = roll[2, :3] = roll[3, :4] = 1  # 1..4 pitches, then two silent steps
    assert polyphony(roll) == 2.5
    assert polyphony_rate(roll) == 0.5  # steps with at least 2 of the 6
    assert polyphony_rate(roll, min_pitches=4) == pytest.approx(1 / 6)
    assert math.isnan(polyphony(zeros(1)))


def test_groove_consistency() -> None:
    bars = zeros(3, steps=4, pitches=12)
    bars[0, [0, 2], 0] = 1
    bars[1, [0, 2], 4] = 1
    bars[2, 0, 7] = bars[2, 1, 9] = 1
    assert groove_consistency(bars) == 0.75  # distances 0 and 2 over 2 * 4 positions
    tied = zeros(2, steps=4, pitches=12)
    tied[0, 2:4, 0] = tied[1, 0:2, 0] = 1  # one note across the bar line: no onset in bar 1
    assert groove_consistency(tied) == 0.75
    assert math.isnan(groove_consistency(tied, bars_per_piece=1))


def test_empty_beat_rate() -> None:
    bars = zeros(2)
    bars[0, :24, 36] = 1  # beat 0 of bar 0
    bars[1, 30, 5] = 1  # beat 1 of bar 1
    assert empty_beat_rate(bars, resolution=24) == 0.75
    assert empty_beat_rate(bars, resolution=24, bars_per_piece=1) == 0.75
    assert empty_beat_rate(bars, resolution=48) == 0.5
    with pytest.raises(ParameterError, match="whole beats"):
        empty_beat_rate(bars, resolution=25)


def test_bars_per_piece_must_divide_the_bars() -> None:
    with pytest.raises(ParameterError, match="bars_per_piece"):
        n_pitches_used(zeros(3), bars_per_piece=2)
    with pytest.raises(ParameterError, match="positive integer"):
        polyphony(zeros(2), bars_per_piece=0)


def test_bad_input_fails_loudly() -> None:
    with pytest.raises(ParameterError, match="shape"):
        empty_bar_rate(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ParameterError, match="empty piano roll"):
        empty_bar_rate(zeros(0))
    with pytest.raises(ParameterError, match="dtype"):
        empty_bar_rate(np.zeros((1, 4, 4), dtype=complex))
    with pytest.raises(ParameterError, match="threshold"):
        empty_bar_rate(zeros(1), threshold=math.nan)
    with pytest.raises(ParameterError, match="lowest_pitch"):
        used_pitch_classes(zeros(1), lowest_pitch=24.0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ against plain loops
def reference(
    bars: np.ndarray, *, lowest_pitch: int, bars_per_piece: int, min_length: int, resolution: int
) -> dict[str, float]:
    """Every metric by plain loops over bars, pitches and runs (independent of the packed code)."""
    active = bars > 0.5
    n_bars, n_steps, n_pitches = active.shape

    def runs(column: np.ndarray) -> list[tuple[int, int]]:
        out, start = [], None
        for t, on in enumerate(list(column) + [False]):
            if on and start is None:
                start = t
            elif not on and start is not None:
                out.append((start, t - start))
                start = None
        return out

    empty = [not active[b].any() for b in range(n_bars)]
    upc = [
        len({(lowest_pitch + p) % 12 for p in range(n_pitches) if active[b, :, p].any()})
        for b in range(n_bars)
    ]
    rates = []
    for b in range(n_bars):
        notes = [n for p in range(n_pitches) for _, n in runs(active[b, :, p])]
        if notes:
            rates.append(100 * np.mean([n >= min_length for n in notes]))
    pieces = active.reshape(-1, bars_per_piece * n_steps, n_pitches)
    values: dict[str, list[float]] = {k: [] for k in ("pce", "npu", "pr", "poly", "polyr", "sc", "gc", "ebr")}
    for piece in pieces:
        onsets = [(t, p) for p in range(n_pitches) for t, _ in runs(piece[:, p])]
        classes = np.bincount([(lowest_pitch + p) % 12 for _, p in onsets], minlength=12)
        if onsets:
            prob = classes[classes > 0] / len(onsets)
            values["pce"].append(-(prob * np.log2(prob)).sum())
            major = [np.roll([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], r) for r in range(12)]
            values["sc"].append(max(classes @ m for m in major) / len(onsets))
        used = [p for p in range(n_pitches) if piece[:, p].any()]
        values["npu"].append(len(used))
        values["pr"].append(max(used) - min(used) if used else 0)
        per_step = piece.sum(axis=1)
        if per_step.any():
            values["poly"].append(per_step.sum() / np.count_nonzero(per_step))
        values["polyr"].append(np.mean(per_step >= 2))
        groove = np.zeros((bars_per_piece, n_steps), dtype=bool)
        for t, _ in onsets:
            groove[t // n_steps, t % n_steps] = True
        if bars_per_piece > 1:
            distance = sum(np.count_nonzero(groove[i] != groove[i + 1]) for i in range(bars_per_piece - 1))
            values["gc"].append(1 - distance / (n_steps * (bars_per_piece - 1)))
        values["ebr"].append(
            np.mean([not piece[i : i + resolution].any() for i in range(0, len(piece), resolution)])
        )
    mean = lambda x: float(np.mean(x)) if len(x) else math.nan  # noqa: E731
    return {
        "empty_bar_rate": 100 * mean(empty),
        "used_pitch_classes": mean([u for u, e in zip(upc, empty) if not e]),
        "qualified_note_rate": mean(rates),
        "pitch_class_entropy": mean(values["pce"]),
        "n_pitches_used": mean(values["npu"]),
        "pitch_range": mean(values["pr"]),
        "polyphony": mean(values["poly"]),
        "polyphony_rate": mean(values["polyr"]),
        "scale_consistency": mean(values["sc"]),
        "groove_consistency": mean(values["gc"]),
        "empty_beat_rate": mean(values["ebr"]),
    }


@pytest.mark.parametrize(
    ("seed", "n_bars", "steps", "pitches", "lowest_pitch", "bars_per_piece", "min_length", "resolution"),
    [
        (3, 8, 16, 84, 24, 2, 3, 4),
        (4, 6, 12, 128, 0, 3, 2, 3),  # two 64-pitch words
        (5, 4, 24, 60, 31, 4, 4, 6),  # one word, lowest pitch not a C
        (6, 5, 7, 65, 50, 1, 1, 7),  # odd sizes, one bit in the second word
    ],
)
def test_report_matches_plain_loops(
    seed, n_bars, steps, pitches, lowest_pitch, bars_per_piece, min_length, resolution
) -> None:
    bars = random_bars(seed, n_bars, steps, pitches, density=0.6)
    settings = {"bars_per_piece": bars_per_piece, "min_length": min_length, "resolution": resolution}
    expected = reference(bars, lowest_pitch=lowest_pitch, **settings)
    report = symbolic_report(bars, lowest_pitch=lowest_pitch, **settings)
    assert report == pytest.approx(expected, rel=1e-12, nan_ok=True)


def test_report_equals_the_single_functions() -> None:
    bars = random_bars(7, n_bars=8)
    kwargs = {"bars_per_piece": 4}
    report = symbolic_report(bars, lowest_pitch=LOWEST, resolution=4, legacy=True, min_pitches=3, **kwargs)
    assert report == {
        "empty_bar_rate": empty_bar_rate(bars),
        "used_pitch_classes": used_pitch_classes(bars, lowest_pitch=LOWEST, legacy=True),
        "qualified_note_rate": qualified_note_rate(bars, legacy=True),
        "pitch_class_entropy": pitch_class_entropy(bars, lowest_pitch=LOWEST, **kwargs),
        "n_pitches_used": n_pitches_used(bars, **kwargs),
        "pitch_range": pitch_range(bars, **kwargs),
        "polyphony": polyphony(bars, **kwargs),
        "polyphony_rate": polyphony_rate(bars, min_pitches=3, **kwargs),
        "scale_consistency": scale_consistency(bars, lowest_pitch=LOWEST, **kwargs),
        "groove_consistency": groove_consistency(bars, **kwargs),
        "empty_beat_rate": empty_beat_rate(bars, resolution=4, **kwargs),
    }


REPORT_KEYS = [  # callers and written reports depend on this order
    "empty_bar_rate",
    "used_pitch_classes",
    "qualified_note_rate",
    "pitch_class_entropy",
    "n_pitches_used",
    "pitch_range",
    "polyphony",
    "polyphony_rate",
    "scale_consistency",
    "groove_consistency",
    "empty_beat_rate",
]


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"bars_per_piece": 2, "legacy": True, "min_pitches": 3, "threshold": 0.2},
        {"bars_per_piece": 4, "cut_at_bars": False, "min_length": 2},
        {"steps_per_bar": 16, "bars_per_piece": 1, "cut_at_bars": False},
    ],
)
def test_the_report_is_the_table_of_metrics(settings: dict) -> None:
    bars = random_bars(9, n_bars=8) * np.float32(0.7)
    if "steps_per_bar" in settings:
        bars = bars.reshape(-1, bars.shape[-1])
    arguments = {"lowest_pitch": LOWEST, "resolution": 4, **settings}
    report = symbolic_report(bars, **arguments)
    assert list(report) == list(symbolic._METRICS) == REPORT_KEYS
    assert TABLE_1 == {
        "empty_bar_rate": "EB (%)",
        "used_pitch_classes": "UPC",
        "qualified_note_rate": "QN (%)",
    }
    for name, metric in symbolic._METRICS.items():
        assert metric.function is getattr(symbolic, name)
        accepted = inspect.signature(metric.function).parameters
        alone = metric.function(bars, **{k: v for k, v in arguments.items() if k in accepted})
        assert report[name] == alone or (math.isnan(report[name]) and math.isnan(alone)), name


def test_a_registered_metric_joins_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(symbolic, "_METRICS", dict(symbolic._METRICS))  # restored after the test

    @symbolic._metric(heading="toy", need_bars=False)
    def toy_metric(
        bars: np.ndarray,
        *,
        resolution: int,
        bars_per_piece: int | None = None,
        steps_per_bar: int | None = None,
        threshold: float = 0.5,
    ) -> float:
        """Beats per piece.

        Examples
        --------
        >>> toy_metric(np.zeros((8, 4)), resolution=2)
        4.0
        """
        roll = symbolic._Roll.of(bars, steps_per_bar, threshold, need_bars=False)
        return float(roll.pieces(bars_per_piece)[1] * roll.n_steps // resolution)

    assert toy_metric(np.zeros((8, 4)), resolution=2) == 4.0
    doc = inspect.getdoc(toy_metric)
    assert (
        "\nbars_per_piece : int or None\n    Bars per piece; default the whole input is one piece.\n" in doc
    )
    assert doc.endswith(
        "\nReturns\n-------\nfloat\n\nExamples\n--------\n>>> toy_metric(np.zeros((8, 4)), resolution=2)\n4.0"
    )
    report = symbolic_report(random_bars(10), lowest_pitch=LOWEST, resolution=4, bars_per_piece=2)
    assert list(report) == [*REPORT_KEYS, "toy_metric"] and report["toy_metric"] == 8.0
    with pytest.raises(TypeError, match="symbolic_report does not take"):

        @symbolic._metric()
        def unknown_option(bars: np.ndarray, *, octave: int) -> float:
            """Not a report option."""
            return 0.0

    with pytest.raises(TypeError, match="does not describe 'min_length'"):

        @symbolic._metric()
        def undocumented(bars: np.ndarray, *, min_length: int = 1) -> float:
            """A parameter with no shared description."""
            return 0.0

    assert list(symbolic._METRICS) == [*REPORT_KEYS, "toy_metric"]  # the failed ones are not registered


def test_docstrings_describe_every_parameter_in_order() -> None:
    for name in symbolic.__all__:
        function = getattr(symbolic, name)
        if not callable(function):
            continue
        doc = inspect.getdoc(function)
        section = doc[doc.index("Parameters\n----------\n") :].split("\n\n")[0].splitlines()[2:]
        described = [line.split(" : ")[0] for line in section if not line.startswith(" ")]
        assert described == list(inspect.signature(function).parameters), name
        assert "\nReturns\n-------\n" in doc and "\nExamples\n--------\n" in doc, name


def test_popcount_table_matches_numpy() -> None:
    words = np.random.default_rng(8).integers(0, 2**63, size=(3, 50), dtype=np.uint64) * np.uint64(
        2
    ) + np.uint64(1)
    expected = [[bin(int(w)).count("1") for w in row] for row in words]
    assert symbolic._popcount_table(words).tolist() == expected
    assert symbolic._popcount(words).tolist() == expected


def test_docstring_examples_run() -> None:
    result = doctest.testmod(symbolic, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 30 and result.failed == 0


# ------------------------------------------------------------------------------ muspy on real chorales
@pytest.fixture(scope="module")
def chorales() -> list[tuple[object, np.ndarray]]:
    from music21 import corpus

    from cadenza.data.scores import read_score
    from cadenza.representations import make_representation

    rep = make_representation("pianoroll", resolution=24, lowest_pitch=LOWEST, n_pitches=84, beats_per_bar=4)
    paths = sorted(p for p in corpus.getComposer("bach") if p.suffix == ".mxl")[:3]
    scores = [read_score(p) for p in paths]
    return [(score, rep.bars(rep.encode(score))) for score in scores]


def to_muspy(bars: np.ndarray):
    """muspy's own reading of our roll, as long as the roll (an annotation marks its end)."""
    muspy = pytest.importorskip("muspy")
    roll = bars.reshape(-1, bars.shape[-1]) > 0
    full = np.zeros((len(roll), 128), dtype=bool)
    full[:, LOWEST : LOWEST + roll.shape[1]] = roll
    music = muspy.from_pianoroll_representation(full, resolution=24, encode_velocity=False)
    music.tracks[0].annotations.append(muspy.Annotation(time=len(roll), annotation="end"))
    return music


def test_muspy_agrees_on_chorales(chorales) -> None:
    muspy = pytest.importorskip("muspy")
    for score, bars in chorales:
        music = to_muspy(bars)
        assert music.get_end_time() == bars.shape[0] * bars.shape[1]
        pairs = [
            (n_pitches_used(bars), muspy.n_pitches_used(music)),
            (pitch_range(bars), muspy.pitch_range(music)),
            (pitch_class_entropy(bars, lowest_pitch=LOWEST), muspy.pitch_class_entropy(music)),
            (scale_consistency(bars, lowest_pitch=LOWEST), muspy.scale_consistency(music)),
            (polyphony(bars), muspy.polyphony(music)),
            (polyphony_rate(bars, min_pitches=3), muspy.polyphony_rate(music)),  # muspy: > threshold=2
            (polyphony_rate(bars, min_pitches=2), muspy.polyphony_rate(music, threshold=1)),
        ]
        for ours, theirs in pairs:
            assert ours == pytest.approx(theirs, abs=1e-9)
        # the score itself, not our roll: the same pitches
        original = muspy.from_pretty_midi(score)
        assert n_pitches_used(bars) == muspy.n_pitches_used(original)
        assert pitch_range(bars) == muspy.pitch_range(original)
        # UPC: muspy's pitch classes of each non-empty bar on its own
        upc = [muspy.n_pitch_classes_used(to_muspy(bar[None])) for bar in bars if bar.any()]
        assert used_pitch_classes(bars, lowest_pitch=LOWEST) == pytest.approx(np.mean(upc), abs=1e-12)


def test_muspy_groove_consistency_adds_a_phantom_bar(chorales) -> None:
    muspy = pytest.importorskip("muspy")
    for _, bars in chorales:
        n_bars, steps = bars.shape[:2]
        theirs = muspy.groove_consistency(to_muspy(bars), measure_resolution=steps)
        ours = groove_consistency(bars)
        assert ours != pytest.approx(theirs, abs=1e-6)
        # muspy compares n_bars + 1 bars, the last one empty: its distance adds the last bar's onsets
        roll = bars.reshape(-1, bars.shape[-1]) > 0
        onsets = roll & ~np.vstack([np.zeros_like(roll[:1]), roll[:-1]])
        last_onsets = np.count_nonzero(onsets[-steps:].any(axis=1))  # positions with an onset in the last bar
        hamming = (1 - ours) * steps * (n_bars - 1) + last_onsets
        assert theirs == pytest.approx(1 - hamming / (steps * n_bars), abs=1e-12)


def test_muspy_empty_beat_rate_is_off_by_one() -> None:
    muspy = pytest.importorskip("muspy")
    roll = np.zeros((48, 84), dtype=np.uint8)
    roll[:24, 36] = 1  # a quarter note, then a silent beat
    assert empty_beat_rate(roll, resolution=24) == 0.5
    # muspy: 48 // 24 + 1 = 3 beats, and the note's end (step 24) marks beat 1 as sounding
    assert muspy.empty_beat_rate(to_muspy(roll[None])) == pytest.approx(1 / 3)
