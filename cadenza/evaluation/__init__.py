"""Evaluation: objective metrics of generated music.

:mod:`cadenza.evaluation.symbolic` holds the piano-roll metrics: paper 004's EB, UPC and QN
(with MuseGAN's ``legacy`` conventions) and muspy's family, vectorised over many bars, and
:func:`symbolic_report`, which computes them all at once.
"""

from __future__ import annotations

from cadenza.evaluation.symbolic import (
    LEGACY_QUALIFIED_MIN_LENGTH,
    QUALIFIED_MIN_LENGTH,
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

__all__ = [
    "LEGACY_QUALIFIED_MIN_LENGTH",
    "QUALIFIED_MIN_LENGTH",
    "TABLE_1",
    "empty_bar_rate",
    "empty_bars",
    "empty_beat_rate",
    "groove_consistency",
    "n_pitches_used",
    "pitch_class_entropy",
    "pitch_range",
    "polyphony",
    "polyphony_rate",
    "qualified_note_rate",
    "qualified_notes_per_bar",
    "scale_consistency",
    "symbolic_report",
    "used_pitch_classes",
    "used_pitch_classes_per_bar",
]
