"""What ``cadenza evaluate`` measures, as plain dataclasses: one :class:`Evaluation` holds sets of clips.

Every set (a model's clips, a folder, the reference, a calibration row) is a :class:`ClipSet`;
every clip a :class:`Clip` with its per-clip measures and flags. Set distances are
:class:`Estimate` values with a bootstrap 95% interval. The report writers
(:mod:`cadenza.evaluation.report`) read nothing else, and :meth:`Evaluation.to_dict` is what
``metrics.json`` holds. A value that could not be computed is ``None`` (never NaN), with a
``note`` on the set that says why.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["FLAGS", "Clip", "ClipSet", "Estimate", "Evaluation", "finite_or_none", "garbage_not_apart"]

#: Per-clip flags and what each one means (the report's legend).
FLAGS = {
    "silent": "mostly silence: more than half of its 10 ms frames below -50 dBFS",
    "noise": "noise: spectral flatness above 0.1 and above twice that of the flattest reference clip",
    "loop": "a loop or a held tone: its frame features repeat at one lag across the whole clip",
    "copy": "a likely copy: closer to the training data than real held-out music is",
    "clipping": "clipped: more than 0.1% of its samples at full scale",
    "short": "shorter than one 1 s analysis window (padded with silence to measure it)",
}


def garbage_not_apart(
    floor: float | None, garbage: list[tuple[str, float | None]], n_clips: int | None = None
) -> str | None:
    """Why the calibration cannot judge a model, or None where it can.

    ``floor`` is the real-vs-real KAD and ``garbage`` the garbage rows' (name, KAD). Where a
    garbage row measures no farther from the held-out music than real music does, the held-out
    music is too little (or too alike) to tell real music from that garbage, and "nearer the
    floor than the garbage" says nothing: a study of ten files with two held out had its 0.5 s
    loop at 0.553 below a floor of 0.69, and a model trained 60 steps came out "nearer the
    floor".

    Examples
    --------
    >>> garbage_not_apart(0.01, [("white noise", 1.6), ("0.5 s loop", 0.52)]) is None
    True
    >>> print(garbage_not_apart(0.69, [("white noise", 1.6), ("0.5 s loop", 0.553)], 2).split(", so")[0])
    the held-out music cannot tell real music from garbage: the 0.5 s loop measures 0.553, no farther from it than real music from itself (0.69, 2 clips a side)
    """
    if floor is None:
        return None
    close = [(name, k) for name, k in garbage if k is not None and k <= floor]
    if not close:
        return None
    rows = ", ".join(f"the {name} measures {k:.3g}" for name, k in close)
    per_side = f", {n_clips} clips a side" if n_clips else ""
    return (
        f"the held-out music cannot tell real music from garbage: {rows}, no farther from it than real "
        f"music from itself ({floor:.3g}{per_side}), so no model can be judged nearer the floor; hold "
        "out more music (more files, or a larger held-out share with --split) or measure against a "
        "larger folder with --reference"
    )


def finite_or_none(value: Any) -> float | None:
    """``float(value)``, or None when it is missing, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclasses.dataclass
class Estimate:
    """A number with its bootstrap 95% interval (``low``/``high`` None when not bootstrapped)."""

    value: float | None
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "value": finite_or_none(self.value),
            "low": finite_or_none(self.low),
            "high": finite_or_none(self.high),
        }


@dataclasses.dataclass
class Clip:
    """One clip: where its files are (relative to the output folder) and what was measured.

    ``measures`` keys (any may be None): ``silent_fraction``, ``flatness``, ``lufs``,
    ``clipping``, ``loop_score``, ``loop_lag`` (s), ``copy_distance``, ``copy_ratio``
    (``copy_distance`` over the held-out clips' median), ``distance`` (to the reference set,
    used to rank best and worst clips); symbolic clips add EB/UPC/QN keys.
    """

    name: str
    audio: str | None  # a PCM WAV the report's <audio> player plays
    image: str | None = None  # a spectrogram or piano-roll PNG
    midi: str | None = None
    seconds: float = 0.0
    measures: dict[str, float | None] = dataclasses.field(default_factory=dict)
    flags: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["measures"] = {k: finite_or_none(v) for k, v in self.measures.items()}
        return out


@dataclasses.dataclass
class ClipSet:
    """A set of clips measured together: a model, a folder, the reference or a calibration row.

    ``kind`` is ``"model"`` (a run or bundle that generated its clips), ``"folder"``,
    ``"reference"`` or ``"calibration"``. ``distances`` maps ``kad``, ``fad``, ``precision``,
    ``recall``, ``density``, ``coverage`` to estimates against the reference (empty when they
    cannot be computed; ``note`` says why); ``symbolic`` holds EB/UPC/QN and muspy's family for
    sets of scores and ``symbolic_distances`` the set distances over per-bar features.
    ``skipped`` lists ``(file, reason)`` of inputs that could not be used.
    """

    name: str
    kind: str
    source: str
    clips: list[Clip] = dataclasses.field(default_factory=list)
    distances: dict[str, Estimate] = dataclasses.field(default_factory=dict)
    symbolic: dict[str, float | None] = dataclasses.field(default_factory=dict)
    symbolic_distances: dict[str, Estimate] = dataclasses.field(default_factory=dict)
    loss_curve: str | None = None
    note: str | None = None
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: Where the set stands apart from the reference (:func:`~cadenza.evaluation.features.feature_gaps`).
    gaps: dict[str, list[tuple[str, float]]] = dataclasses.field(default_factory=dict)

    def flag_counts(self) -> dict[str, int]:
        """How many clips carry each flag (every flag of :data:`FLAGS`, zeros included)."""
        counts = dict.fromkeys(FLAGS, 0)
        for clip in self.clips:
            for flag in clip.flags:
                counts[flag] = counts.get(flag, 0) + 1
        return counts

    def mean_measure(self, key: str) -> float | None:
        values = [c.measures.get(key) for c in self.clips]
        finite = [v for v in (finite_or_none(x) for x in values) if v is not None]
        return sum(finite) / len(finite) if finite else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "n_clips": len(self.clips),
            "distances": {k: e.to_dict() for k, e in self.distances.items()},
            "symbolic": {k: finite_or_none(v) for k, v in self.symbolic.items()},
            "symbolic_distances": {k: e.to_dict() for k, e in self.symbolic_distances.items()},
            "flags": self.flag_counts(),
            "loss_curve": self.loss_curve,
            "note": self.note,
            "skipped": [list(s) for s in self.skipped],
            "gaps": {k: [[name, finite_or_none(v)] for name, v in items] for k, items in self.gaps.items()},
            "clips": [c.to_dict() for c in self.clips],
        }


@dataclasses.dataclass
class Evaluation:
    """Everything one ``cadenza evaluate`` measured.

    ``settings`` records what was asked (``n_clips``, ``seconds``, ``seed``, ``sample_rate``,
    ``reference``, ``n_boot``...) and ``feature_version`` the feature space, so numbers from
    two releases are never compared silently.
    """

    feature_version: str
    settings: dict[str, Any]
    reference: ClipSet
    calibration: list[ClipSet] = dataclasses.field(default_factory=list)
    sets: list[ClipSet] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def rows(self) -> list[ClipSet]:
        """The comparison table's rows: calibration rows first (floor, then garbage), then the sets."""
        return [*self.calibration, *self.sets]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_version": self.feature_version,
            "settings": dict(self.settings),
            "notes": list(self.notes),
            "reference": self.reference.to_dict(),
            "calibration": [s.to_dict() for s in self.calibration],
            "sets": [s.to_dict() for s in self.sets],
        }
