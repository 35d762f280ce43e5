"""Symbolic metrics on piano rolls, vectorised over many bars: paper 004's EB, UPC, QN and muspy's family.

Conventions shared by every function here:

* **Input.** ``bars`` is ``(n_bars, steps_per_bar, n_pitches)``, or a roll ``(n_steps, n_pitches)``
  with ``steps_per_bar`` given (``PianoRoll.encode`` output). Column ``j`` is MIDI pitch
  ``lowest_pitch + j``. Any dtype: a step is **active** where ``roll > threshold`` (0.5 by default:
  ``True``, any positive integer, a probability above one half). The caller's array is never
  written to, and no arithmetic is done in the input's dtype (``uint8`` differences wrap).
* **Notes.** A note is a maximal run of consecutive active steps of *one* pitch; its onset is its
  first step and its length the run's number of steps.
* **Bar metrics** (paper 004, from MuseGAN): EB, UPC and QN are computed per bar and averaged over
  the bars they are defined on; EB and QN are percentages as in paper 004's Table 1.
* **Piece metrics** (muspy's family): ``bars_per_piece`` consecutive bars form one piece, read like
  one ``muspy.Music`` whose notes are the piece's notes (runs go on across bar lines inside a
  piece and stop at its end); the default ``None`` makes the whole input one piece. The per-piece
  values are averaged over the pieces they are defined on; units are muspy's (fractions, bits,
  semitones). Where a definition differs from muspy 0.5's code, the function says how.

``legacy=True`` (UPC and QN) reproduces the conventions of the evaluation code released with the
MuseGAN paper (``v1/musegan/eval/metrics.py`` in salu133445/musegan; bars of 96 steps x 84
pitches), i.e. of the published MuseGAN numbers, which paper 004's Table 1 quotes ("MuseGAN
model", and it seems the "Training data" row too):

* UPC counts 12 *bands of adjacent pitches*, not pitch classes: the code sums the pitch axis
  reshaped to ``(12, n_pitches // 12)``, i.e. bands of 7 semitones for the 84-pitch crop;
* QN counts a note as qualified from 2 steps on (the code's ``threshold=2``), although the
  MuseGAN and 004 papers both say "no shorter than three time steps".

Its EB is already right (the fraction of bars with no active step) and needs no switch; each bar
is evaluated on its own and UPC/QN are averaged over the non-empty bars, as here.

Traps in other public code, pinned by ``tests/evaluation/test_symbolic.py``: MuseGAN's later
TensorFlow ``empty_bar_rate`` and pypianoroll's ``empty_beat_rate`` return the *non-empty*
rate; pypianoroll's ``qualified_note_rate`` flattens its differences time-major, so it pairs
onsets and offsets of different pitches, and takes those differences in ``uint8`` (0 - 1 = 255);
pypianoroll's chroma sums bands of 10 adjacent pitches and adds into the caller's array in place.

Internally a roll is thresholded once and packed 64 pitches to a ``uint64`` word, planes
``(n_words, n_bars, steps_per_bar)``: bit ``j`` of word ``k`` is column ``64 k + j``. Every
operation along time is then a bitwise operation on 1/8 of the bytes and a count is a popcount.

Each metric is written once, as its public function, registered with ``@_metric`` in ``_METRICS``
(with its Table 1 heading, if any) in the order of :func:`symbolic_report`'s keys. A public
function takes ``bars`` or the report's packed roll (a ``_Roll``, which also caches what several
metrics share), so the report packs once and calls each registered function with the options its
signature names. The parameters most functions share are described once, in ``_PARAMETERS``, and
``@_documented`` writes them into each docstring in signature order.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
from collections.abc import Callable

import numpy as np

from cadenza.errors import ParameterError

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

#: A note this many steps long or longer is qualified (papers 004 and MuseGAN: "three time steps").
QUALIFIED_MIN_LENGTH = 3
#: What MuseGAN's released evaluation code actually counts as qualified (``threshold=2``, ``>=``).
LEGACY_QUALIFIED_MIN_LENGTH = 2

# The 12 major scales as pitch-class sets, (root, pitch class). muspy's 12 natural-minor scales
# are the same 12 sets (A minor = C major), so the maximum over muspy's 24 scales is the same.
_MAJOR_SCALE = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=np.int64)
_SCALES = np.stack([np.roll(_MAJOR_SCALE, root) for root in range(12)])
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_BITWISE_COUNT = getattr(np, "bitwise_count", None)  # numpy >= 2


# ------------------------------------------------------------------------------ the packed roll
def _popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of each ``uint64``, as ``int32`` (numpy >= 2 has ``bitwise_count``; else a byte table)."""
    if _BITWISE_COUNT is not None:
        return _BITWISE_COUNT(words).astype(np.int32)
    return _popcount_table(words)


def _popcount_table(words: np.ndarray) -> np.ndarray:
    as_bytes = np.ascontiguousarray(words).astype("<u8", copy=False).view(np.uint8)
    return _BYTE_POPCOUNT[as_bytes].reshape(*words.shape, 8).sum(axis=-1, dtype=np.int32)


def _unpack(words: np.ndarray, n_pitches: int) -> np.ndarray:
    """Words ``(n_words, n)`` -> bool ``(n, n_pitches)``."""
    as_bytes = np.ascontiguousarray(words.T).astype("<u8", copy=False).view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, count=n_pitches, bitorder="little").astype(bool)


def _pack_rows(bits: np.ndarray) -> np.ndarray:
    """bool ``(n, n_pitches)`` -> words ``(n, n_words)``."""
    n_words = -(-bits.shape[1] // 64)
    buffer = np.zeros((bits.shape[0], 8 * n_words), dtype=np.uint8)
    packed = np.packbits(bits, axis=-1, bitorder="little")
    buffer[:, : packed.shape[1]] = packed
    return buffer.view("<u8")


def _count_per_bar(words: np.ndarray) -> np.ndarray:
    """Set bits per bar of words ``(n_words, n_bars, n_steps)``, int ``(n_bars,)``."""
    return sum(_popcount(plane).sum(axis=-1) for plane in words)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_lowest_pitch(lowest_pitch: object, n_pitches: int) -> int:
    if isinstance(lowest_pitch, bool) or not isinstance(lowest_pitch, (int, np.integer)):
        raise ParameterError(f"lowest_pitch must be an integer MIDI pitch, got {lowest_pitch!r}")
    if lowest_pitch < 0 or lowest_pitch + n_pitches > 128:
        raise ParameterError(
            f"pitches {lowest_pitch}..{lowest_pitch + n_pitches - 1} of a {n_pitches}-pitch roll fall outside MIDI's 0..127"
        )
    return int(lowest_pitch)


class _Roll:
    """A thresholded roll packed into words, with the intermediate arrays the metrics share.

    The metrics take one in place of ``bars`` (:meth:`of`): :func:`symbolic_report` builds one and
    passes it to every metric, so what several of them use (emptiness, onsets, note counts per
    pitch class) is computed once.
    """

    def __init__(
        self, bars: np.ndarray, *, steps_per_bar: int | None, threshold: float, need_bars: bool = True
    ):
        x = np.asarray(bars)
        if not (
            x.dtype == np.bool_ or np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
        ):
            raise ParameterError(f"a piano roll holds booleans, integers or floats, got dtype {x.dtype}")
        if not isinstance(threshold, (int, float, np.integer, np.floating)) or not math.isfinite(threshold):
            raise ParameterError(f"threshold must be a finite number, got {threshold!r}")
        if steps_per_bar is not None:
            steps_per_bar = _check_positive_int("steps_per_bar", steps_per_bar)
        if x.ndim == 3:
            if steps_per_bar is not None and steps_per_bar != x.shape[1]:
                raise ParameterError(
                    f"bars of shape {x.shape} have {x.shape[1]} steps, not steps_per_bar={steps_per_bar}"
                )
        elif x.ndim == 2:
            if steps_per_bar is None:
                if need_bars:
                    raise ParameterError(f"a roll of shape {x.shape} needs steps_per_bar to be cut into bars")
                steps_per_bar = x.shape[0]  # the whole roll as one bar
            if steps_per_bar == 0 or x.shape[0] % steps_per_bar:
                raise ParameterError(
                    f"a roll of {x.shape[0]} steps is not whole bars of {steps_per_bar} steps"
                )
            x = x.reshape(-1, steps_per_bar, x.shape[1])
        else:
            raise ParameterError(
                f"expected bars (n_bars, steps_per_bar, n_pitches) or a roll (n_steps, n_pitches), got shape {x.shape}"
            )
        if 0 in x.shape:
            raise ParameterError(f"empty piano roll of shape {x.shape}: no bar, step or pitch to evaluate")

        self.n_bars, self.n_steps, self.n_pitches = x.shape
        # Threshold into pitches padded to whole bytes, so that the rows pack without sharing a byte.
        width = 8 * -(-self.n_pitches // 8)
        active = np.zeros((self.n_bars, self.n_steps, width), dtype=bool)
        _threshold(x, threshold, out=active[..., : self.n_pitches])
        packed = np.packbits(active.reshape(-1), bitorder="little").reshape(self.n_bars, self.n_steps, -1)
        n_words = -(-self.n_pitches // 64)
        buffer = np.zeros((self.n_bars, self.n_steps, 8 * n_words), dtype=np.uint8)
        buffer[..., : packed.shape[-1]] = packed
        # (n_words, n_bars, n_steps): bit j of word k is column 64 k + j
        self.words = np.ascontiguousarray(np.moveaxis(buffer.view("<u8"), -1, 0))
        self._onsets: dict[int, np.ndarray] = {}
        self._pitch_class_counts: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def of(
        cls, bars: np.ndarray | _Roll, steps_per_bar: int | None, threshold: float, *, need_bars: bool = True
    ) -> _Roll:
        """``bars`` when it is a ``_Roll`` already (``steps_per_bar`` and ``threshold`` are then its own), else ``bars`` packed."""
        if isinstance(bars, _Roll):
            return bars
        return cls(bars, steps_per_bar=steps_per_bar, threshold=threshold, need_bars=need_bars)

    @functools.cached_property
    def used(self) -> np.ndarray:
        """Words of the pitches active anywhere in each bar, ``(n_words, n_bars)``."""
        return np.bitwise_or.reduce(self.words, axis=2)

    @functools.cached_property
    def used_bits(self) -> np.ndarray:
        """Pitches active anywhere in each bar, bool ``(n_bars, n_pitches)``."""
        return _unpack(self.used, self.n_pitches)

    @functools.cached_property
    def empty(self) -> np.ndarray:
        """Bars with no active step at any pitch, bool ``(n_bars,)``."""
        return functools.reduce(np.bitwise_or, self.used) == 0

    @functools.cached_property
    def n_active(self) -> np.ndarray:
        """Pitches active at each step, int ``(n_bars, n_steps)``."""
        return sum(_popcount(w) for w in self.words)

    def pieces(self, bars_per_piece: int | None) -> tuple[int, int]:
        """``(n_pieces, bars_per_piece)``; ``None`` makes all bars one piece."""
        if bars_per_piece is None:
            return 1, self.n_bars
        bars_per_piece = _check_positive_int("bars_per_piece", bars_per_piece)
        if self.n_bars % bars_per_piece:
            raise ParameterError(
                f"{self.n_bars} bars do not split into pieces of bars_per_piece={bars_per_piece}"
            )
        return self.n_bars // bars_per_piece, bars_per_piece

    def piece_used(self, bars_per_piece: int | None) -> np.ndarray:
        """Words of the pitches active anywhere in each piece, ``(n_words, n_pieces)``."""
        n_pieces, per_piece = self.pieces(bars_per_piece)
        return np.bitwise_or.reduce(self.used.reshape(-1, n_pieces, per_piece), axis=2)

    def active_per_piece(self, bars_per_piece: int | None) -> np.ndarray:
        """Pitches active at each step of each piece, int ``(n_pieces, steps per piece)``."""
        n_pieces, _ = self.pieces(bars_per_piece)
        return self.n_active.reshape(n_pieces, -1)

    def onsets(self, bars_per_piece: int | None) -> np.ndarray:
        """Words of note onsets, runs cut at piece starts (every bar when ``bars_per_piece == 1``)."""
        n_pieces, per_piece = self.pieces(bars_per_piece)
        if 1 not in self._onsets:
            onsets = self.words.copy()
            onsets[:, :, 1:] &= ~self.words[:, :, :-1]  # active, and the same pitch off one step before
            self._onsets[1] = onsets
        if per_piece not in self._onsets:
            # inside a piece, a bar's first step continues the previous bar's last step
            carried = np.zeros_like(self.words[:, :, 0])  # (n_words, n_bars)
            carried[:, 1:] = self.words[:, :-1, -1]
            carried[:, ::per_piece] = 0
            onsets = self._onsets[1].copy()
            onsets[:, :, 0] &= ~carried
            self._onsets[per_piece] = onsets
        return self._onsets[per_piece]

    def pitch_class_counts(self, lowest_pitch: int, bars_per_piece: int | None) -> np.ndarray:
        """Notes per pitch class and piece, ``(n_pieces, 12)`` int (a note counts once, whatever its length)."""
        lowest_pitch = _check_lowest_pitch(lowest_pitch, self.n_pitches)
        n_pieces, per_piece = self.pieces(bars_per_piece)
        if (lowest_pitch, per_piece) in self._pitch_class_counts:
            return self._pitch_class_counts[lowest_pitch, per_piece]
        flat = self.onsets(bars_per_piece).reshape(self.words.shape[0], -1)  # (n_words, n_bars * n_steps)
        # the (few) steps where some note starts, and a silent step last, for reduceat
        steps = np.flatnonzero(functools.reduce(np.bitwise_or, flat))
        onsets = np.concatenate([flat[:, steps], np.zeros((len(flat), 1), flat.dtype)], axis=1)
        starts = np.searchsorted(steps // (per_piece * self.n_steps), np.arange(n_pieces))  # pieces' first
        has_onsets = np.diff(starts, append=len(steps)) > 0
        counts = np.zeros((n_pieces, 12), dtype=np.int64)
        # mask c: the bits of the columns of pitch class c, (12, n_words)
        is_class = (lowest_pitch + np.arange(self.n_pitches)) % 12 == np.arange(12)[:, None]
        for pitch_class, mask in enumerate(_pack_rows(is_class)):
            per_step = sum(_popcount(onsets[k] & mask[k]) for k in range(len(mask)))
            # reduceat sums each piece's steps; a piece with none would get its neighbour's first step
            in_pieces = np.add.reduceat(per_step, starts, dtype=np.int64)
            counts[:, pitch_class] = np.where(has_onsets, in_pieces, 0)
        self._pitch_class_counts[lowest_pitch, per_piece] = counts
        return counts


def _threshold(x: np.ndarray, threshold: float, *, out: np.ndarray) -> None:
    """``out[...] = x > threshold``, comparing integers with integers (no float copy of the roll)."""
    if x.dtype == np.bool_ and 0 <= threshold < 1:
        np.copyto(out, x)
    elif np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        floor = math.floor(threshold)  # for an integer v, v > threshold exactly when v > floor(threshold)
        if floor < info.min:
            out[...] = True
        elif floor >= info.max:
            out[...] = False
        else:
            np.greater(x, x.dtype.type(floor), out=out)
    else:
        np.greater(x, threshold, out=out)  # NaN is inactive


def _fold_pitch_classes(x: np.ndarray, lowest_pitch: int) -> np.ndarray:
    """Sum ``(..., n_pitches)`` into true pitch classes ``(..., 12)``: column j is class (lowest_pitch + j) % 12."""
    before = lowest_pitch % 12
    after = -(before + x.shape[-1]) % 12
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(before, after)])
    return padded.reshape(*x.shape[:-1], -1, 12).sum(axis=-2)  # (..., octaves, 12) -> (..., 12)


def _mean(values: np.ndarray) -> float:
    """Mean over the finite values (the units a metric is defined on); NaN when there is none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` as float, NaN where the denominator is 0."""
    out = np.full(np.shape(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=np.asarray(denominator) > 0)
    return out


# ------------------------------------------------------------------------------ the table of metrics
# What the parameters most functions share mean: ``name: (type, description)``, written into each
# docstring that does not describe the parameter itself. ``bars`` and ``steps_per_bar`` read
# differently where a 2-D roll without ``steps_per_bar`` is one bar (``need_bars=False``).
_PARAMETERS = {
    "bars": (
        "np.ndarray",
        "``(n_bars, steps_per_bar, n_pitches)``, or ``(n_steps, n_pitches)`` with ``steps_per_bar``.",
    ),
    "lowest_pitch": ("int", "MIDI pitch of column 0."),
    "resolution": ("int", "Steps per beat."),
    "bars_per_piece": ("int or None", "Bars per piece; default the whole input is one piece."),
    "steps_per_bar": ("int or None", "Steps per bar, needed for a 2-D roll."),
    "threshold": ("float", "A step is active where ``roll > threshold``."),
}
_ONE_BAR_PARAMETERS = {
    **_PARAMETERS,
    "bars": ("np.ndarray", "``(n_bars, steps_per_bar, n_pitches)`` or a roll ``(n_steps, n_pitches)``."),
    "steps_per_bar": ("int or None", "Steps per bar of a 2-D roll (needed only with ``bars_per_piece``)."),
}
_SECTIONS = ("Parameters", "Returns", "Examples")
# The report's options that its packed roll has applied already: a metric given the roll ignores them.
_ROLL_OPTIONS = ("steps_per_bar", "threshold")


def _documented(*, need_bars: bool = True) -> Callable[[Callable], Callable]:
    """Complete a function's docstring from its signature, before its Returns or Examples section.

    Parameters: the docstring's own entries and, for the parameters it does not describe,
    ``_PARAMETERS``'s, in signature order. Returns: ``float``, where the docstring has no Returns
    section and the function returns a float.
    """
    shared = _PARAMETERS if need_bars else _ONE_BAR_PARAMETERS

    def document(function: Callable) -> Callable:
        lines = (function.__doc__ or "").split("\n")
        headers = {line.strip(): i for i, line in enumerate(lines) if line.strip() in _SECTIONS}
        end = headers.get("Returns", headers.get("Examples", len(lines)))
        start = headers.get("Parameters", end)
        indent = re.match(r" *", lines[min(end, len(lines) - 1)]).group()
        own: dict[str, list[str]] = {}
        entry: list[str] = []
        for line in lines[start + 2 : end]:
            if line.strip() and not line.startswith(indent + " "):  # "name : type", its description below
                entry = own[line.split(" : ")[0].strip()] = []
            if line.strip():
                entry.append(line)
        signature = inspect.signature(function)
        section = [f"{indent}Parameters", f"{indent}----------"]
        for name in signature.parameters:
            if name in own:
                section += own.pop(name)
            elif name in shared:
                kind, text = shared[name]
                section += [f"{indent}{name} : {kind}", f"{indent}    {text}"]
            else:
                raise TypeError(f"{function.__name__}: the docstring does not describe {name!r}")
        if own:
            raise TypeError(f"{function.__name__}: the docstring describes {sorted(own)}, not parameters")
        section.append("")
        if "Returns" not in headers and signature.return_annotation in ("float", float):
            section += [f"{indent}Returns", f"{indent}-------", f"{indent}float", ""]
        function.__doc__ = "\n".join(lines[:start] + section + lines[end:])
        return function

    return document


@dataclasses.dataclass(frozen=True)
class _Metric:
    """A metric of :func:`symbolic_report`: its public function, called there on the report's roll."""

    function: Callable[..., float]
    #: The report's options it takes: its keyword-only parameters, less those the roll applied.
    options: tuple[str, ...]
    #: Its column heading in paper 004's Table 1 (:data:`TABLE_1`), or None.
    heading: str | None = None


#: :func:`symbolic_report`'s metrics by key, in the report's order (the order they are registered).
_METRICS: dict[str, _Metric] = {}


def _metric(*, heading: str | None = None, need_bars: bool = True) -> Callable[[Callable], Callable]:
    """Register a public metric function in ``_METRICS`` (and write its shared parameters' docs)."""

    def register(function: Callable[..., float]) -> Callable[..., float]:
        parameters = inspect.signature(function).parameters.values()
        options = tuple(
            p.name for p in parameters if p.kind == p.KEYWORD_ONLY and p.name not in _ROLL_OPTIONS
        )
        unknown = set(options) - set(inspect.signature(symbolic_report).parameters)
        if unknown:
            raise TypeError(
                f"{function.__name__} takes {sorted(unknown)}, which symbolic_report does not take"
            )
        _METRICS[function.__name__] = _Metric(_documented(need_bars=need_bars)(function), options, heading)
        return function

    return register


@_documented()
def symbolic_report(
    bars: np.ndarray,
    *,
    lowest_pitch: int,
    resolution: int,
    steps_per_bar: int | None = None,
    bars_per_piece: int | None = None,
    min_length: int | None = None,
    cut_at_bars: bool = True,
    min_pitches: int = 2,
    threshold: float = 0.5,
    legacy: bool = False,
) -> dict[str, float]:
    """Every metric of this module on the same bars, thresholded and packed once.

    Keys, each equal to the function of the same name called with the matching arguments:
    ``empty_bar_rate`` (EB, %), ``used_pitch_classes`` (UPC), ``qualified_note_rate`` (QN, %), then
    ``pitch_class_entropy``, ``n_pitches_used``, ``pitch_range``, ``polyphony``, ``polyphony_rate``,
    ``scale_consistency``, ``groove_consistency`` and ``empty_beat_rate`` per piece of
    ``bars_per_piece`` bars. :data:`TABLE_1` names paper 004's columns. ``legacy`` switches UPC and QN
    to MuseGAN's released code (bands, 2-step notes); QN's notes with ``cut_at_bars=False`` stop at
    piece ends.

    Parameters
    ----------
    bars_per_piece : int or None
        Bars per piece for muspy's family; default the whole input is one piece.
    min_length : int or None
        QN's shortest qualified note (default 3, or 2 with ``legacy``).
    cut_at_bars : bool
        QN's notes stop at bar lines (MuseGAN).
    min_pitches : int
        Polyphony rate's fewest pitches.
    legacy : bool
        MuseGAN's released code's UPC and QN.

    Returns
    -------
    dict[str, float]

    Examples
    --------
    >>> import numpy as np
    >>> bars = np.zeros((4, 96, 84), dtype=np.uint8)
    >>> bars[:2, :48, [24, 28, 31]] = 1  # two bars of a C major chord, two empty bars
    >>> report = symbolic_report(bars, lowest_pitch=24, resolution=24)
    >>> {TABLE_1[k]: report[k] for k in TABLE_1}
    {'EB (%)': 50.0, 'UPC': 3.0, 'QN (%)': 100.0}
    >>> report["polyphony"], report["empty_beat_rate"]
    (3.0, 0.75)
    """
    options = dict(locals())  # the arguments by name (before any other local): each metric's pick
    roll = _Roll(bars, steps_per_bar=steps_per_bar, threshold=threshold)
    return {
        name: metric.function(roll, **{option: options[option] for option in metric.options})
        for name, metric in _METRICS.items()
    }


# ------------------------------------------------------------------------------ bar metrics
@_documented()
def empty_bars(bars: np.ndarray, *, steps_per_bar: int | None = None, threshold: float = 0.5) -> np.ndarray:
    """Which bars are empty: no active step at any pitch.

    Returns
    -------
    np.ndarray
        bool ``(n_bars,)``.

    Examples
    --------
    >>> import numpy as np
    >>> bars = np.zeros((3, 4, 12), dtype=np.uint8)
    >>> bars[0, 0, 5] = 1
    >>> empty_bars(bars)
    array([False,  True,  True])
    """
    return _Roll.of(bars, steps_per_bar, threshold).empty


@_metric(heading="EB (%)")
def empty_bar_rate(bars: np.ndarray, *, steps_per_bar: int | None = None, threshold: float = 0.5) -> float:
    """EB: percentage of bars that are empty (no active step at any pitch), over all bars.

    ``100 * n_empty_bars / n_bars``: the *empty* rate (MuseGAN's later TensorFlow code and
    pypianoroll's ``empty_beat_rate`` return the non-empty rate under this name). MuseGAN's
    published numbers use this same definition, so there is no ``legacy`` switch.

    Returns
    -------
    float
        EB in percent, 0 to 100.

    Examples
    --------
    >>> import numpy as np
    >>> bars = np.zeros((4, 96, 84), dtype=np.uint8)
    >>> bars[0, :24, 36] = 1  # one bar with a note, three empty
    >>> empty_bar_rate(bars)
    75.0
    """
    return 100.0 * _mean(empty_bars(bars, steps_per_bar=steps_per_bar, threshold=threshold))


@_documented()
def used_pitch_classes_per_bar(
    bars: np.ndarray,
    *,
    lowest_pitch: int,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
    legacy: bool = False,
) -> np.ndarray:
    """Number of distinct pitch classes active in each bar, 0 to 12 (0 for an empty bar).

    The pitch class of column ``j`` is ``(lowest_pitch + j) % 12``; C1 and C2 are one class.
    With ``legacy=True``, MuseGAN's released code instead: the number of non-empty bands among
    12 bands of ``n_pitches // 12`` adjacent columns (7 semitones for 84 pitches), which are not
    pitch classes; ``lowest_pitch`` is then unused.

    Parameters
    ----------
    lowest_pitch : int
        MIDI pitch of column 0 (24 for the 84-pitch C1-B7 crop).
    legacy : bool
        Count MuseGAN's 12 bands instead of pitch classes (needs ``n_pitches % 12 == 0``).

    Returns
    -------
    np.ndarray
        int ``(n_bars,)``.

    Examples
    --------
    >>> import numpy as np
    >>> bars = np.zeros((2, 96, 84), dtype=bool)
    >>> bars[0, :, [0, 12]] = True  # C1 and C2: one pitch class, two of MuseGAN's bands
    >>> bars[1, :, [0, 2]] = True   # C1 and D1: two pitch classes, one band
    >>> used_pitch_classes_per_bar(bars, lowest_pitch=24)
    array([1, 2])
    >>> used_pitch_classes_per_bar(bars, lowest_pitch=24, legacy=True)
    array([2, 1])
    """
    roll = _Roll.of(bars, steps_per_bar, threshold)
    lowest_pitch = _check_lowest_pitch(lowest_pitch, roll.n_pitches)
    used = roll.used_bits  # (n_bars, n_pitches)
    if legacy:
        if roll.n_pitches % 12:
            raise ParameterError(
                f"legacy UPC reshapes the pitches into 12 bands; {roll.n_pitches} is not a multiple of 12"
            )
        return np.count_nonzero(used.reshape(roll.n_bars, 12, -1).any(axis=-1), axis=-1)  # MuseGAN's 12 bands
    return np.count_nonzero(_fold_pitch_classes(used, lowest_pitch), axis=-1)


@_metric(heading="UPC")
def used_pitch_classes(
    bars: np.ndarray,
    *,
    lowest_pitch: int,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
    legacy: bool = False,
) -> float:
    """UPC: mean number of distinct pitch classes per bar, over the non-empty bars only.

    ``mean(used_pitch_classes_per_bar(bars)[~empty_bars(bars)])``, between 1 and 12; NaN when every
    bar is empty. Empty bars are left out (they have no pitch class to count) so that EB and UPC
    measure different things, as in MuseGAN. ``legacy=True`` counts MuseGAN's 12 bands of adjacent
    pitches instead (see :func:`used_pitch_classes_per_bar`).

    Parameters
    ----------
    lowest_pitch : int
        MIDI pitch of column 0 (24 for the 84-pitch C1-B7 crop).
    legacy : bool
        MuseGAN's released code's bands instead of pitch classes.

    Returns
    -------
    float
        UPC, 1 to 12, or NaN.

    Examples
    --------
    >>> import numpy as np
    >>> bars = np.zeros((3, 96, 84), dtype=np.uint8)
    >>> bars[0, :48, [0, 12, 24]] = 1      # C1, C2, C3: one class
    >>> bars[1, :48, [4, 7, 12]] = 1       # E1, G1, C2: three classes; bar 2 is empty
    >>> used_pitch_classes(bars, lowest_pitch=24)
    2.0
    """
    roll = _Roll.of(bars, steps_per_bar, threshold)
    per_bar = used_pitch_classes_per_bar(roll, lowest_pitch=lowest_pitch, legacy=legacy)
    return _mean(np.where(roll.empty, np.nan, per_bar))


@_documented()
def qualified_notes_per_bar(
    bars: np.ndarray,
    *,
    min_length: int | None = None,
    cut_at_bars: bool = True,
    bars_per_piece: int | None = None,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
    legacy: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per bar: the number of qualified notes and the number of notes, counted in the bar of their onset.

    A note is a run of active steps of one pitch; it is qualified when it is at least
    ``min_length`` steps long. With ``cut_at_bars=True`` (MuseGAN's convention) every bar is
    evaluated on its own: runs stop at bar lines, so a note tied over a bar line counts as one
    note in each bar. With ``cut_at_bars=False`` a run goes on across bar lines inside each piece of
    ``bars_per_piece`` bars (default: the whole input) and is counted once, in its first bar.

    Parameters
    ----------
    min_length : int or None
        Shortest qualified note in steps; default :data:`QUALIFIED_MIN_LENGTH` (3), or
        :data:`LEGACY_QUALIFIED_MIN_LENGTH` (2) with ``legacy=True``.
    cut_at_bars : bool
        Cut notes at bar lines (required by ``legacy``).
    bars_per_piece : int or None
        Where notes stop when ``cut_at_bars=False``.
    legacy : bool
        MuseGAN's released code's default ``min_length`` of 2.

    Returns
    -------
    n_qualified, n_notes : np.ndarray
        int ``(n_bars,)`` each. ``n_qualified.sum() / n_notes.sum()`` is the pooled rate over notes.

    Examples
    --------
    >>> import numpy as np
    >>> bars = np.zeros((2, 8, 12), dtype=np.uint8)
    >>> bars[0, 0:1, 0] = bars[0, 2:4, 0] = bars[0, 4:8, 5] = 1  # notes of 1, 2 and 4 steps
    >>> bars[1, 0:3, 7] = 1                                      # one note of 3 steps
    >>> qualified_notes_per_bar(bars)
    (array([1, 1]), array([3, 1]))
    """
    roll = _Roll.of(bars, steps_per_bar, threshold)
    if min_length is None:
        min_length = LEGACY_QUALIFIED_MIN_LENGTH if legacy else QUALIFIED_MIN_LENGTH
    min_length = _check_positive_int("min_length", min_length)
    if legacy and not cut_at_bars:
        raise ParameterError(
            "legacy QN evaluates each bar on its own, as MuseGAN's code does: keep cut_at_bars=True"
        )
    note_piece = 1 if cut_at_bars else bars_per_piece  # where runs stop
    n_pieces, per_piece = roll.pieces(note_piece)
    onsets = roll.onsets(note_piece)
    # a note starting at step t is qualified when the next min_length - 1 steps of its pitch are active
    shape = (roll.words.shape[0], n_pieces, per_piece * roll.n_steps)
    words, starts = roll.words.reshape(shape), onsets.reshape(shape)
    qualified = np.zeros_like(starts)
    n = shape[2] - min_length + 1
    if n > 0:
        kept = starts[:, :, :n].copy()
        for shift in range(1, min_length):
            kept &= words[:, :, shift : shift + n]
        qualified[:, :, :n] = kept
    return _count_per_bar(qualified.reshape(roll.words.shape)), _count_per_bar(onsets)


@_metric(heading="QN (%)")
def qualified_note_rate(
    bars: np.ndarray,
    *,
    min_length: int | None = None,
    cut_at_bars: bool = True,
    bars_per_piece: int | None = None,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
    legacy: bool = False,
) -> float:
    """QN: percentage of notes at least ``min_length`` steps long, per bar, averaged over the bars with notes.

    For each bar with at least one note onset, ``100 * n_qualified / n_notes`` from
    :func:`qualified_notes_per_bar`; QN is the mean of these per-bar rates (each bar weighs the
    same, as in MuseGAN). With the default ``cut_at_bars=True`` the bars with onsets are exactly the
    non-empty bars. Notes are runs along time of *one* pitch, never across pitches. NaN when no
    bar has a note. ``legacy=True`` counts notes from 2 steps on, as MuseGAN's released code.

    Parameters
    ----------
    min_length : int or None
        Shortest qualified note in steps: default 3 (papers 004 and MuseGAN), 2 with ``legacy``.
    cut_at_bars : bool
        Evaluate every bar on its own (True, MuseGAN), or let notes run on across bar lines
        inside pieces of ``bars_per_piece`` bars.
    bars_per_piece : int or None
        Where notes stop when ``cut_at_bars=False``; default the whole input.
    legacy : bool
        MuseGAN's released code's ``min_length`` of 2.

    Returns
    -------
    float
        QN in percent, 0 to 100, or NaN.

    Examples
    --------
    >>> import numpy as np
    >>> bars = np.zeros((2, 8, 12), dtype=np.uint8)
    >>> bars[0, 0:1, 0] = bars[0, 2:4, 0] = bars[0, 4:8, 5] = 1  # 1, 2, 4 steps: 1 of 3 qualified
    >>> bars[1, 0:3, 7] = 1                                      # 3 steps: 1 of 1
    >>> round(qualified_note_rate(bars), 2)                     # (33.33 + 100) / 2
    66.67
    >>> round(qualified_note_rate(bars, legacy=True), 2)        # 2 steps qualify: (66.67 + 100) / 2
    83.33
    """
    roll = _Roll.of(bars, steps_per_bar, threshold)
    n_qualified, n_notes = qualified_notes_per_bar(
        roll, min_length=min_length, cut_at_bars=cut_at_bars, bars_per_piece=bars_per_piece, legacy=legacy
    )
    return 100.0 * _mean(_ratio(n_qualified, n_notes))


# ------------------------------------------------------------------------------ muspy's family
@_metric(need_bars=False)
def pitch_class_entropy(
    bars: np.ndarray,
    *,
    lowest_pitch: int,
    bars_per_piece: int | None = None,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
) -> float:
    """Shannon entropy (bits) of a piece's note pitch-class histogram, averaged over pieces (muspy's ``pitch_class_entropy``).

    Per piece: ``-sum_c p_c log2 p_c`` where ``p_c`` is the fraction of the piece's *notes* (runs,
    each counted once whatever its length) of pitch class ``c = (lowest_pitch + j) % 12``; 0 to
    log2(12). NaN for a piece with no note; the mean over the other pieces.

    Examples
    --------
    >>> import numpy as np
    >>> roll = np.zeros((96, 84), dtype=np.uint8)
    >>> roll[0:60, 36] = 1               # one long C
    >>> roll[72:80, 36] = 1              # a second C
    >>> roll[0:8, 40] = roll[8:16, 43] = 1  # E, G
    >>> pitch_class_entropy(roll, lowest_pitch=24)  # notes C, C, E, G: p = 1/2, 1/4, 1/4
    1.5
    """
    roll = _Roll.of(bars, steps_per_bar, threshold, need_bars=False)
    counts = roll.pitch_class_counts(lowest_pitch, bars_per_piece)
    total = counts.sum(axis=1)
    prob = counts / np.maximum(total, 1)[:, None]
    terms = prob * np.log2(np.where(prob > 0, prob, 1.0))  # 0 log 0 = 0
    return _mean(np.where(total > 0, -terms.sum(axis=1), np.nan))


@_metric(need_bars=False)
def n_pitches_used(
    bars: np.ndarray,
    *,
    bars_per_piece: int | None = None,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
) -> float:
    """Number of distinct pitches active in a piece, averaged over pieces (muspy's ``n_pitches_used``).

    Per piece: the number of columns with at least one active step (0 for a silent piece, as
    muspy); the mean over all pieces.

    Examples
    --------
    >>> import numpy as np
    >>> roll = np.zeros((96, 84), dtype=np.uint8)
    >>> roll[:24, [0, 12, 40]] = 1
    >>> n_pitches_used(roll)
    3.0
    """
    roll = _Roll.of(bars, steps_per_bar, threshold, need_bars=False)
    return _mean(sum(_popcount(w) for w in roll.piece_used(bars_per_piece)))


@_metric(need_bars=False)
def pitch_range(
    bars: np.ndarray,
    *,
    bars_per_piece: int | None = None,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
) -> float:
    """Highest minus lowest active pitch of a piece in semitones, averaged over pieces (muspy's ``pitch_range``).

    Per piece: ``max(active column) - min(active column)``, 0 for a silent piece (as muspy); the
    mean over all pieces.

    Examples
    --------
    >>> import numpy as np
    >>> roll = np.zeros((96, 84), dtype=np.uint8)
    >>> roll[:24, 3] = roll[48:, 40] = 1
    >>> pitch_range(roll)
    37.0
    """
    roll = _Roll.of(bars, steps_per_bar, threshold, need_bars=False)
    used = _unpack(roll.piece_used(bars_per_piece), roll.n_pitches)  # (n_pieces, n_pitches)
    lowest = np.argmax(used, axis=1)
    highest = roll.n_pitches - 1 - np.argmax(used[:, ::-1], axis=1)
    return _mean(np.where(used.any(axis=1), highest - lowest, 0))


@_metric(need_bars=False)
def polyphony(
    bars: np.ndarray,
    *,
    bars_per_piece: int | None = None,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
) -> float:
    """Mean number of active pitches over the steps with at least one, averaged over pieces (muspy's ``polyphony``).

    Per piece: ``n_active_cells / n_steps_with_an_active_pitch``; NaN for a silent piece; the mean
    over the other pieces.

    Examples
    --------
    >>> import numpy as np
    >>> roll = np.zeros((4, 12), dtype=np.float32)
    >>> roll[0, 0] = roll[1, :2] = roll[2, :3] = 0.9  # 1, 2, 3 pitches, then a silent step
    >>> polyphony(roll)
    2.0
    """
    n_active = _Roll.of(bars, steps_per_bar, threshold, need_bars=False).active_per_piece(bars_per_piece)
    return _mean(_ratio(n_active.sum(axis=1), np.count_nonzero(n_active, axis=1)))


@_metric(need_bars=False)
def polyphony_rate(
    bars: np.ndarray,
    *,
    min_pitches: int = 2,
    bars_per_piece: int | None = None,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
) -> float:
    """Fraction of a piece's steps with at least ``min_pitches`` active pitches, averaged over pieces.

    Per piece: ``n_steps_with_at_least_min_pitches / n_steps``, every step of the piece counted
    (trailing silence included); the mean over all pieces. The default, 2, is what muspy's
    docstring and MuseGAN's "polyphonicity" describe ("multiple pitches"). muspy's code counts
    *more than* its ``threshold`` (default 2, so 3 pitches) and ends the piece at the last note's
    end: ``muspy.polyphony_rate(music, threshold=t)`` equals ``polyphony_rate(..., min_pitches=t + 1)``
    on a piece whose last step is active.

    Parameters
    ----------
    min_pitches : int
        Fewest active pitches for a step to count.

    Examples
    --------
    >>> import numpy as np
    >>> roll = np.zeros((4, 12), dtype=np.uint8)
    >>> roll[0, :1] = roll[1, :2] = roll[2, :3] = 1  # 1, 2, 3 pitches, then a silent step
    >>> polyphony_rate(roll), polyphony_rate(roll, min_pitches=3)
    (0.5, 0.25)
    """
    roll = _Roll.of(bars, steps_per_bar, threshold, need_bars=False)
    min_pitches = _check_positive_int("min_pitches", min_pitches)
    n_active = roll.active_per_piece(bars_per_piece)
    return _mean(np.count_nonzero(n_active >= min_pitches, axis=1) / n_active.shape[1])


@_metric(need_bars=False)
def scale_consistency(
    bars: np.ndarray,
    *,
    lowest_pitch: int,
    bars_per_piece: int | None = None,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
) -> float:
    """Largest fraction of a piece's notes inside one major/minor scale, averaged over pieces (muspy's ``scale_consistency``).

    Per piece: ``max over scales of n_notes_in_scale / n_notes``, notes counted once each (runs)
    by pitch class ``(lowest_pitch + j) % 12``, over muspy's 12 major and 12 natural-minor scales
    (the minor ones are the same pitch-class sets as the major ones). NaN for a piece with no
    note; the mean over the other pieces.

    Examples
    --------
    >>> import numpy as np
    >>> roll = np.zeros((96, 12), dtype=bool)
    >>> for i, pitch_class in enumerate([0, 2, 4, 5, 7, 9, 11, 1]):  # C major scale, then C#
    ...     roll[12 * i : 12 * i + 6, pitch_class] = True
    >>> scale_consistency(roll, lowest_pitch=60)
    0.875
    """
    roll = _Roll.of(bars, steps_per_bar, threshold, need_bars=False)
    counts = roll.pitch_class_counts(lowest_pitch, bars_per_piece)
    in_scale = counts @ _SCALES.T  # (n_pieces, 12 roots): notes in each major scale
    return _mean(_ratio(in_scale.max(axis=1), counts.sum(axis=1)))


@_metric()
def groove_consistency(
    bars: np.ndarray,
    *,
    bars_per_piece: int | None = None,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
) -> float:
    """1 - mean Hamming distance between the onset patterns of neighbouring bars, averaged over pieces (muspy's ``groove_consistency``).

    A bar's onset pattern is the bool vector over its steps that is True where some note starts
    (notes run on across bar lines inside a piece, so a tied note starts nothing in the next bar).
    Per piece of ``B >= 2`` bars: ``1 - sum_i d(G_i, G_{i+1}) / (steps_per_bar * (B - 1))``; NaN for
    a one-bar piece; the mean over the other pieces. muspy's code appends a phantom empty bar when
    the music's length is a whole number of bars (``length // measure_resolution + 1`` bars), which
    adds the last bar's onsets to the distance; here a piece has exactly its own bars.

    Examples
    --------
    >>> import numpy as np
    >>> bars = np.zeros((3, 4, 12), dtype=np.uint8)
    >>> bars[0, [0, 2], 0] = 1   # onsets on steps 0 and 2
    >>> bars[1, [0, 2], 4] = 1   # same pattern, other pitch
    >>> bars[2, 0, 7] = bars[2, 1, 9] = 1  # onsets on steps 0 and 1: distance 2 from bar 1
    >>> groove_consistency(bars)  # 1 - (0 + 2) / (4 * 2)
    0.75
    """
    roll = _Roll.of(bars, steps_per_bar, threshold)
    n_pieces, per_piece = roll.pieces(bars_per_piece)
    if per_piece < 2:
        return _mean(np.full(n_pieces, np.nan))
    # (n_bars, n_steps): True where some note starts
    pattern = functools.reduce(np.bitwise_or, roll.onsets(bars_per_piece)) != 0
    pattern = pattern.reshape(n_pieces, per_piece, roll.n_steps)
    hamming = np.count_nonzero(pattern[:, 1:] != pattern[:, :-1], axis=(1, 2))
    return _mean(1.0 - hamming / (roll.n_steps * (per_piece - 1)))


@_metric(need_bars=False)
def empty_beat_rate(
    bars: np.ndarray,
    *,
    resolution: int,
    bars_per_piece: int | None = None,
    steps_per_bar: int | None = None,
    threshold: float = 0.5,
) -> float:
    """Fraction of a piece's beats with no active step, averaged over pieces (muspy's ``empty_beat_rate``, corrected).

    A beat is ``resolution`` consecutive steps, from the first step; it is empty when none of its
    steps is active at any pitch. Per piece: ``n_empty_beats / n_beats`` over every beat of the
    piece; the mean over pieces. Two differences from muspy 0.5's code, both off-by-one: muspy
    marks the beat where a note *ends* (its exclusive end) as non-empty, and counts one beat more
    than there are (``length // resolution + 1``) when the length is a whole number of beats; its
    length also stops at the last note's end, so trailing silence is not counted.

    Parameters
    ----------
    bars : np.ndarray
        ``(n_bars, steps_per_bar, n_pitches)`` or a roll ``(n_steps, n_pitches)``; a bar's steps must
        be whole beats.

    Examples
    --------
    >>> import numpy as np
    >>> roll = np.zeros((96, 84), dtype=np.uint8)
    >>> roll[:24, 36] = 1                 # a quarter note, then three silent beats
    >>> empty_beat_rate(roll, resolution=24)
    0.75
    """
    roll = _Roll.of(bars, steps_per_bar, threshold, need_bars=False)
    resolution = _check_positive_int("resolution", resolution)
    if roll.n_steps % resolution:
        raise ParameterError(
            f"bars of {roll.n_steps} steps are not whole beats of resolution={resolution} steps"
        )
    n_active = roll.active_per_piece(bars_per_piece)
    is_empty = ~np.any(n_active.reshape(n_active.shape[0], -1, resolution) > 0, axis=2)  # (n_pieces, n_beats)
    return _mean(is_empty.mean(axis=1))


#: Paper 004's Table 1: :func:`symbolic_report` key -> column heading.
TABLE_1 = {name: metric.heading for name, metric in _METRICS.items() if metric.heading}
