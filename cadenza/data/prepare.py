"""``prepare``: decode, resample and encode a corpus into a feature store, in parallel and resumably.

Every source file ends as one manifest line: ``ok`` with its shard, or ``skipped`` with the
reason; an ``ok`` line may carry a ``warning`` (``"kept in part: decoded 1.2 s"`` for a file cut
short), which the closing summary repeats. Finished lines are appended to ``manifest.jsonl`` as
they come in, so a run that is killed and started again only does the files that are not there
yet. Worker processes start once for the run, forked from this process where that is safe
(:func:`_start_method`; a few milliseconds, against half a second of imports for a spawned
one), and exit when the process that started them dies, even by ``kill -9``.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import ctypes
import dataclasses
import errno
import functools
import json
import logging
import math
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cadenza._fs import disk_full_text, is_disk_full
from cadenza.data.items import SourceItem
from cadenza.data.store import (
    SPLITS,
    FeatureStore,
    base_meta,
    finish_store,
    read_manifest,
    shard_problem,
    write_meta,
)
from cadenza.errors import (
    BusyError,
    CadenzaError,
    DecodeError,
    DiskFullError,
    ParameterError,
    SourceError,
    StoreError,
)
from cadenza.representations import Representation, make_representation, representation_from_dict

log = logging.getLogger(__name__)

#: Label keys used to stratify splits and ``--max-files`` picks, most specific first.
STRATIFY_KEYS = ("composer", "genre", "folder")
#: Default split fractions (train, valid, test).
DEFAULT_SPLIT = (0.8, 0.1, 0.1)
#: How audio is prepared, recorded in an audio store's ``meta.yaml``: 2 trims each file's silent
#: lead-in and ending (:func:`cadenza.audio.trim_silence`); a store without it holds untrimmed
#: files, and resuming it would mix the two.
AUDIO_PREP = 2
#: A file's mean above this (-60 dBFS) is a recording's DC offset, subtracted before the silence
#: check and the trim (a constant offset keeps a silent lead-in from counting as silent) and
#: recorded in the manifest as ``dc_offset``; below it the samples are kept bit for bit (so
#: stores prepared before it, which it leaves at ``AUDIO_PREP`` 2, differ only in such files).
DC_OFFSET = 1e-3
#: Audio with less sound than this (seconds, after the trim) is skipped as "too short": a
#: header with a handful of samples, a click; no model learns music from it.
MIN_AUDIO_SECONDS = 0.1
#: A score whose last event lies further in than this, in hours or in beats, is skipped as "too
#: long": a stray event or a damaged delta time far past the music (a 60-byte MIDI file with a
#: note 2**27 ticks in is 19 hours: 6.8 GB to encode as a roll, more to render), not a piece.
MAX_SCORE_HOURS = 4.0
MAX_SCORE_BEATS = 40_000
#: Where a source has too few files to hold whole ones out (one or two recordings: an album
#: kept as one file, an hour of improvisation), each file is cut into parts, about this many
#: in all, and whole parts are split instead (:func:`parts_per_file`) ...
PARTS_WANTED = 10
#: ... each at least this long (seconds: a training window of every model fits in one, and a
#: held-out part gives two of the evaluation's 10 s clips) ...
MIN_PART_SECONDS = 20.0
#: ... and at least this many of a file, or none: fewer would leave training one or two parts.
MIN_PARTS = 5
#: Seconds one file may take (``--file-timeout``) before it is skipped as "timed out": a file that
#: a decoder or parser cannot finish held the whole job at its last file for ever, and again at
#: every resume. Far above any real file here (an hour of audio encodes in seconds).
FILE_TIMEOUT = 1800.0


@dataclasses.dataclass
class PrepareSummary:
    """What a ``prepare`` run did."""

    out: Path
    n_files: int
    n_ok: int
    n_skipped: int
    reasons: dict[str, int]
    hours: float
    seconds: float
    n_done_before: int = 0
    #: The ``warning`` of each prepared file that has one, by id (``"kept in part: decoded 1.2 s"``).
    warnings: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Files of the source of another kind than the store's, by kind (``{"score": 3}``: the
    #: scores of a folder that also holds recordings, which an audio store is made from).
    left_out: dict[str, int] = dataclasses.field(default_factory=dict)
    #: The held-out splits drawn files that were all skipped, with how many (``{"test": 1}``):
    #: splits are drawn from the ids before decoding, so evaluation would find no held-out music.
    empty_splits: dict[str, int] = dataclasses.field(default_factory=dict)
    #: The parts each file was cut into, by file id (:func:`parts_per_file`; none when files are
    #: split whole). ``n_files``, ``n_ok`` and ``n_skipped`` then count parts (a file too short
    #: to cut is one part of itself).
    parts: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Parts of each split prepared (``{"train": 8, "valid": 1, "test": 1}``), when cut.
    part_splits: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Files too few to hold whole ones out and too short to cut: nothing held out (their count).
    uncut: int = 0
    #: Where the held-out files hold far more of the music than the split's fractions ask (a
    #: long recording drawn for the test split beside short ones): their share of the seconds
    #: prepared, and the longest held-out file with its seconds; else None.
    held_share: tuple[float, str, float] | None = None

    def __str__(self) -> str:
        unit = "parts" if self.parts else "files"
        text = f"{self.n_ok} of {self.n_files} {unit} prepared, {self.n_skipped} skipped"
        if self.reasons:
            text += " (" + ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items())) + ")"
        if self.parts:
            n = len(self.parts) + self.uncut
            counts = ", ".join(f"{self.part_splits.get(s, 0)} {s}" for s in SPLITS)
            cut = " and ".join(str(k) for k in self.parts.values())
            if n == 1:
                which = f"it is cut in time into {cut} parts"
            elif not self.uncut:
                which = f"they are cut in time into {cut} parts"
            else:
                which = (
                    f"the longer is cut in time into {cut} parts (the other, under "
                    f"{MIN_PARTS * MIN_PART_SECONDS:g} s, is kept whole)"
                )
            text += (
                f"; {n} file{'' if n == 1 else 's'}, too few to hold whole files out: {which} and whole "
                f"parts are split ({counts} prepared); held-out parts share their recording's sound "
                "with the training parts, so measures against them are kinder than against music of "
                "other recordings"
            )
        for line in self._warning_lines():
            text += f"; {line}"
        text += f"; {self.hours:.2f} h of material in {self.out}"
        if self.left_out.get("score") or self.left_out.get("roll"):
            n = self.left_out.get("score", 0) + self.left_out.get("roll", 0)
            text += (
                f"; {n} score{'' if n == 1 else 's'} left out: the source also holds recordings, which "
                "an audio store is made from (prepare the scores on their own to render them)"
            )
        if self.left_out.get("audio"):
            n = self.left_out["audio"]
            text += f"; {n} audio file{'' if n == 1 else 's'} left out: a piano roll is made from scores"
        if self.n_done_before:
            text += f" ({self.n_done_before} already done by an earlier run)"
        if self.empty_splits:  # one warning, however many splits
            splits = sorted(self.empty_splits, key=SPLITS.index)
            n = sum(self.empty_splits.values())
            one = unit[:-1]
            if len(splits) == 1:
                which = f"the {splits[0]} split holds"
                files = f"its {one} was" if n == 1 else f"all {n} of its {unit} were"
            else:
                which = f"the {' and '.join(splits)} splits hold"
                files = f"both of their {unit} were" if n == 2 else f"all {n} of their {unit} were"
            text += (
                f"; warning: {which} no music ({files} skipped), so nothing held out is there to "
                "evaluate against: prepare more music, or with another --seed"
            )
        if self.held_share is not None:
            share, longest, seconds = self.held_share
            text += (
                f"; warning: the held-out files hold {share:.0%} of the music, training {1 - share:.0%} "
                f"(the longest held out: {longest}, {seconds / 60:.1f} min): another --seed draws other "
                "files to hold out"
            )
        if self.uncut and not self.parts and self.n_ok:  # (none prepared: the error says so)
            text += (
                f"; warning: {self.uncut} file{'' if self.uncut == 1 else 's'}, too few to hold whole files "
                f"out and too short to cut into {MIN_PARTS} parts of {MIN_PART_SECONDS:g} s (under "
                f"{MIN_PARTS * MIN_PART_SECONDS:g} s): nothing is "
                "held out to evaluate against (add music, or evaluate against a folder of other music)"
            )
        return text

    def _warning_lines(self, n_shown: int = 3) -> list[str]:
        """``"1 file kept in part: decoded 1.2 s (jazz__a.ogg)"``, one line per kind of warning."""
        by_kind: dict[str, list[str]] = collections.defaultdict(list)
        for item_id, warning in sorted(self.warnings.items()):
            kind, _, detail = warning.partition(": ")
            by_kind[kind].append(f"{detail} ({item_id})" if detail else item_id)
        lines = []
        for kind, entries in by_kind.items():
            n = len(entries)
            line = f"{n} file{'' if n == 1 else 's'} {kind}: " + ", ".join(entries[:n_shown])
            if n > n_shown:
                line += f" and {n - n_shown} more (see manifest.jsonl)"
            lines.append(line)
        return lines


# ------------------------------------------------------------------ choosing files
def _primary_label(item: SourceItem) -> str:
    for key in STRATIFY_KEYS:
        if key in item.labels:
            return item.labels[key]
    return ""


def pick_files(items: Sequence[SourceItem], max_files: int | None, seed: int) -> list[SourceItem]:
    """At most ``max_files`` items, drawn round-robin over the primary label so every class shows up."""
    if max_files is None or max_files >= len(items):
        return list(items)
    rng = random.Random(seed)
    groups: dict[str, list[SourceItem]] = collections.defaultdict(list)
    for item in items:
        groups[_primary_label(item)].append(item)
    for members in groups.values():
        rng.shuffle(members)
    picked: list[SourceItem] = []
    queues = [collections.deque(groups[k]) for k in sorted(groups)]
    while len(picked) < max_files:
        for q in queues:
            if q and len(picked) < max_files:
                picked.append(q.popleft())
    return sorted(picked, key=lambda it: it.id)


def assign_splits(
    items: Sequence[SourceItem], *, seed: int, fractions: Sequence[float] = DEFAULT_SPLIT
) -> dict[str, str]:
    """File-level split, stratified by the primary label; a function of (ids, labels, seed) only.

    Whole files go to one split, so no window of a test file is ever seen in training. With
    three files or more, valid and test get at least one file each.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ParameterError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    rng = random.Random(seed)
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for item in sorted(items, key=lambda it: it.id):
        groups[_primary_label(item)].append(item.id)
    # Interleave the shuffled groups so each split draws from every class in proportion.
    order: list[tuple[float, str]] = []
    for key in sorted(groups):
        ids = groups[key]
        rng.shuffle(ids)
        order += [((i + 0.5) / len(ids), item_id) for i, item_id in enumerate(ids)]
    order.sort()
    n = len(order)
    n_valid = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:
        n_valid = max(n_valid, 1 if fractions[1] > 0 else 0)
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
    n_held = min(n_valid + n_test, n)
    # Held-out files sit at evenly spaced places of the interleaved order (so every class is
    # represented), alternating valid and test until each has its count.
    held = np.linspace(0, n - 1, num=n_held).round().astype(int).tolist() if n_held else []
    held_names = []
    left = {"valid": n_valid, "test": n_test}
    for i in range(n_held):
        name = ("valid", "test")[i % 2]
        if left[name] == 0:
            name = "test" if name == "valid" else "valid"
        left[name] -= 1
        held_names.append(name)
    result = {item_id: "train" for _, item_id in order}
    for pos, name in zip(held, held_names):
        result[order[pos][1]] = name
    return result


def parts_per_file(n_files: int, seconds: float, fractions: Sequence[float] = DEFAULT_SPLIT) -> int:
    """How many parts a file of ``seconds`` is cut into: 1 (split whole) from three files on, or
    where nothing is held out; else enough that the files give :data:`PARTS_WANTED` parts in all,
    none shorter than :data:`MIN_PART_SECONDS`, and 1 where that leaves fewer than
    :data:`MIN_PARTS`.

    Whole files cannot be held out from one or two: :func:`assign_splits` would put them all in
    training and leave nothing to evaluate against. ``seconds`` is the source file's own length
    (:func:`_source_seconds`: a recording's header, a score's last event), the same in every
    store of the source, so that all of them cut alike and hold out the same parts.

    >>> parts_per_file(1, 600.0), parts_per_file(2, 600.0), parts_per_file(1, 130.0)
    (10, 5, 6)
    >>> parts_per_file(1, 90.0), parts_per_file(3, 600.0), parts_per_file(1, 600.0, (1.0, 0.0, 0.0))
    (1, 1, 1)
    """
    if n_files >= 3 or n_files == 0 or fractions[1] + fractions[2] <= 0:
        return 1
    k = min(-(-PARTS_WANTED // n_files), int(seconds // MIN_PART_SECONDS))
    return k if k >= MIN_PARTS else 1


def _source_seconds(item: SourceItem) -> float:
    """A source file's length as every store of it sees it (0.0 where it cannot be read: the
    file then fails in its worker, with the reason)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the worker gives them
            if item.kind == "audio":
                from cadenza.audio import audio_info

                return float(audio_info(item.path)["duration"])
            return float(load_score_item(item).get_end_time())
    except Exception:  # noqa: BLE001 - a damaged file is the worker's to report
        return 0.0


def part_ids(item_id: str, parts: int) -> list[str]:
    """The ids of a file's parts (``["a.wav.part01", ...]``), or ``[item_id]`` for a file kept whole."""
    if parts == 1:
        return [item_id]
    return [f"{item_id}.part{k:02d}" for k in range(1, parts + 1)]


# ------------------------------------------------------------------ one file
def load_audio_item(item: SourceItem, sr: int, *, max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 samples at ``sr`` for any item: decoded, or rendered from a score or roll;
    only its first ``max_seconds`` when given (a score's head alone is rendered)."""
    from cadenza.audio import read_audio, render_midi

    if item.kind == "audio":
        y, _ = read_audio(item.path, sr=sr, duration=max_seconds, mend=True)  # a NaN glitch: set to 0, noted
        return y
    from cadenza.data.scores import PartialScoreWarning

    cached = _render_cache_path(item.path, sr)
    if cached is not None and cached.exists():
        try:
            y = (
                np.load(cached)
                if max_seconds is None
                else np.array(np.load(cached, mmap_mode="r")[: _n_samples(max_seconds, sr)])
            )
            note = cached.with_suffix(".note")
            if note.exists():  # what reading the score said when it was rendered, said again
                warnings.warn(PartialScoreWarning(item.path, note.read_text(encoding="utf-8")), stacklevel=2)
            return y
        except (OSError, ValueError):
            cached.unlink(missing_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PartialScoreWarning)
        midi = load_score_item(item)
    notes = [w.message.note for w in caught if isinstance(w.message, PartialScoreWarning)]
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if max_seconds is not None and midi.get_end_time() > max_seconds:
        from cadenza.data.scores import score_head

        return render_midi(score_head(midi, max_seconds), sr=sr)[: _n_samples(max_seconds, sr)]  # not cached
    y = render_midi(midi, sr=sr)
    if cached is not None:
        try:
            from cadenza.data.store import atomic_save_npy

            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(cached, y.astype(np.float32))
            if notes:
                cached.with_suffix(".note").write_text("; ".join(notes), encoding="utf-8")
        except OSError:
            pass  # a cache we cannot write only costs time
    return y


def _n_samples(seconds: float | None, sr: int) -> int | None:
    return None if seconds is None else int(round(seconds * sr))


def cache_dir() -> Path | None:
    """Where rendered scores are kept: ``$CADENZA_CACHE``, else ``~/.cache/cadenza``; ``CADENZA_CACHE=off`` disables."""
    root = os.environ.get("CADENZA_CACHE")
    if root and root.lower() in ("off", "0", "none"):
        return None
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cadenza"
    return base


def _render_cache_path(path: str, sr: int) -> Path | None:
    """A cache file for the rendering of one score at one rate by the renderer in use now."""
    import hashlib

    from cadenza.audio import find_soundfont, fluidsynth_available

    root = cache_dir()
    if root is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    renderer = str(find_soundfont()) if fluidsynth_available() else "builtin"
    key = f"{os.path.abspath(path)}|{st.st_mtime_ns}|{st.st_size}|{sr}|{renderer}"
    return root / "render" / (hashlib.sha1(key.encode()).hexdigest() + ".npy")


def load_score_item(item: SourceItem) -> Any:
    """A ``pretty_midi.PrettyMIDI`` for a score or piano-roll item."""
    from cadenza.data.scores import read_lpd_npz, read_score

    if item.kind == "score":
        midi = read_score(item.path)
    elif item.kind == "roll":
        midi = read_lpd_npz(item.path)
    else:
        raise DecodeError(item.path, "not a score", "piano rolls need MIDI, MusicXML or pianoroll .npz files")
    seconds = float(midi.get_end_time())
    beats = midi.time_to_tick(seconds) / midi.resolution
    if seconds > 3600 * MAX_SCORE_HOURS or beats > MAX_SCORE_BEATS:
        raise DecodeError(
            item.path,
            "too long",
            f"its last event is {seconds / 3600:.1f} h ({beats:.0f} beats) in, beyond {MAX_SCORE_HOURS:g} h "
            f"or {MAX_SCORE_BEATS} beats: a stray event or a damaged delta time past the music?",
        )
    return midi


def _encode_score(
    item: SourceItem, rep: Representation, max_seconds: float | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """A score (MIDI, MusicXML, LPD roll) encoded by a score representation."""
    from cadenza.data.scores import PartialScoreWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PartialScoreWarning)
        midi = load_score_item(item)
    notes = _notes_of(caught, PartialScoreWarning)
    if max_seconds is not None:
        from cadenza.data.scores import score_head

        midi = score_head(midi, max_seconds)
    frames, enc_info = rep.encode_with_info(midi)  # type: ignore[attr-defined]
    info: dict[str, Any] = {k: v for k, v in enc_info.items() if isinstance(v, int | float | str)}
    if notes:
        info["warning"] = notes
    if not np.any(frames):
        n_drums, n_out = int(enc_info.get("n_drum_notes", 0)), int(enc_info.get("n_dropped_out_of_range", 0))
        if n_drums and not n_out:
            detail = f"only drum notes ({n_drums}), which the roll leaves out (--param include_drums=true keeps them)"
        elif n_out:
            detail = f"{n_out} notes, none within the roll's pitch range"
        else:
            detail = "the score holds no note"
        raise DecodeError(item.path, "no notes", detail)
    info["duration"] = float(midi.get_end_time())
    return frames, info


def _encode_audio(
    item: SourceItem,
    rep: Representation,
    max_seconds: float | None = None,
    samples: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Any item as sound (a score rendered), resampled and encoded by an audio representation;
    the samples encoded are appended to ``samples`` when it is given."""
    info: dict[str, Any] = {}
    sr = int(rep.sample_rate)  # type: ignore[attr-defined]
    y, warning = _load_audio_with_notes(item, sr, max_seconds=max_seconds)
    if warning:
        info["warning"] = warning
    if y.size == 0:
        raise DecodeError(item.path, "no audio samples")
    if y.size < MIN_AUDIO_SECONDS * sr:  # before the offset: one sample is its own "constant offset"
        raise DecodeError(item.path, "too short", _too_short(y.size, sr))
    from cadenza.audio import is_silent, trim_silence

    offset = float(np.mean(y, dtype=np.float64))
    if abs(offset) > DC_OFFSET:  # not sound: it wastes a waveform model's range and hides silence
        y = _without_offset(item, y, sr, offset, max_seconds)
        info["dc_offset"] = round(offset, 4)
    if is_silent(y):
        raise DecodeError(item.path, "silent", _silence_detail(item, info.get("dc_offset")))
    y, lead, tail = trim_silence(y, sr)  # a rendered score's dying release, a recording's fade
    if lead or tail:
        info["trimmed"] = [round(lead, 3), round(tail, 3)]  # seconds cut at the start and the end
    if y.size < MIN_AUDIO_SECONDS * sr:
        raise DecodeError(item.path, "too short", _too_short(y.size, sr))
    frames = rep.encode(y)
    if len(frames) == 0:
        raise DecodeError(item.path, "too short", f"{y.size} samples give no frame")
    info["duration"] = float(y.size / sr)
    if samples is not None:
        samples.append(y)
    return frames, info


def _too_short(n: int, sr: int) -> str:
    """``"50.0 ms of sound (at least 0.1 s)"``."""
    return f"{1e3 * n / sr:.1f} ms of sound (at least {MIN_AUDIO_SECONDS} s)"


class FileNoteWarning(UserWarning):
    """What ``prepare`` would note in its manifest about a file read alone (:func:`read_frames`):
    kept in part, or scaled down from beyond full scale."""


def _encode_item(
    item: SourceItem, rep: Representation, max_seconds: float | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    return rep.by_kind(audio=_encode_audio, score=_encode_score)(item, rep, max_seconds)


def read_frames(
    path: str | os.PathLike[str],
    rep: Representation,
    *,
    max_seconds: float | None = None,
    info: dict[str, Any] | None = None,
) -> np.ndarray:
    """The frames of one file as ``cadenza prepare`` would store them: any audio or score
    (rendered for an audio representation), its constant offset taken out and the silence at
    its ends trimmed; only its first ``max_seconds`` when given. A seed file is read this way.
    ``info``, when given, receives what ``prepare`` records of the file (``trimmed``: the
    seconds cut at its start and end; ``dc_offset``; ``duration``).

    Raises
    ------
    DecodeError
        Where ``prepare`` would skip the file, with the same reason ("silent", "too short",
        "not an audio file"...). A file read in part (cut short, or scaled down from beyond
        full scale) warns, as ``prepare`` notes it.
    """
    from cadenza.data.corpora import kind_of

    path = os.fspath(path)
    kind = kind_of(path) or "audio"  # anything else: read_audio says what it is
    item = SourceItem(id=os.path.basename(path) or "file", kind=kind, path=path)
    frames, found = _encode_item(item, rep, max_seconds)
    if found.get("warning"):
        warnings.warn(FileNoteWarning(f"{path}: {found['warning']}"), stacklevel=2)
    if info is not None:
        info.update(found)
    return frames


def _without_offset(
    item: SourceItem, y: np.ndarray, sr: int, offset: float, max_seconds: float | None = None
) -> np.ndarray:
    """``y`` less its constant offset. A recording at another rate is read again and the offset
    taken out before resampling (:func:`~cadenza.audio.io.read_audio_without_offset`, which holds
    neither pass at the file's rate): resampled with it, the file's first and last samples are
    steps that the resampler rings on (a click at each end, kept by the trim as sound)."""
    from cadenza.audio import audio_info
    from cadenza.audio.io import read_audio_without_offset

    if item.kind == "audio" and _quietly(audio_info, item.path, default={}).get("sr", sr) != sr:
        again = _quietly(read_audio_without_offset, item.path, sr=sr, duration=max_seconds, mend=True)
        if again is not None and again[0].shape == y.shape:
            return again[0]
    if y.flags.writeable:  # in place: a copy of an hour of audio is 318 MB more
        y -= np.float32(offset)
        return y
    return y - np.float32(offset)


def _silence_detail(item: SourceItem, dc_offset: float | None) -> str:
    """Why a file with samples holds no sound: a constant offset alone, or channels that cancel."""
    if dc_offset is not None:
        return f"a constant offset of {dc_offset:+.3f} (DC) and no sound beside it"
    from cadenza.audio import read_audio

    # rare: read again, every channel apart, to tell a phase-inverted pair from silence
    channels = _quietly(read_audio, item.path, mono=False) if item.kind == "audio" else None
    if channels is not None and channels[0].ndim == 2 and min(channels[0].shape) > 1:
        y = channels[0]
        peak = float(np.max(np.abs(y)))
        if peak > 1e-3:
            return (
                f"its {min(y.shape)} channels cancel when mixed to mono (one is the other inverted; "
                f"each peaks at {20 * np.log10(peak):.0f} dBFS): keep one channel with an audio editor"
            )
    return "peak below -60 dBFS"


def _quietly(read: Any, path: str, *, default: Any = None, **kwargs: Any) -> Any:
    """``read(path, **kwargs)`` for a file read once already: its warnings were given then, and
    a failure now gives ``default`` (what is read again only improves on the first reading)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read(path, **kwargs)
    except Exception:  # noqa: BLE001 - the first reading stands
        return default


def _load_audio_with_notes(
    item: SourceItem, sr: int, max_seconds: float | None = None
) -> tuple[np.ndarray, str]:
    """:func:`load_audio_item`, and the notes of a :class:`PartialAudioWarning` (a file cut short),
    a :class:`LoudAudioWarning` (a float file scaled down to full scale), a
    :class:`MendedAudioWarning` (a few NaN samples set to 0) or a
    :class:`~cadenza.data.scores.PartialScoreWarning` (a MIDI file cut short); "" when none.

    Other warnings are shown as they would have been.
    """
    from cadenza.audio import LoudAudioWarning, MendedAudioWarning, PartialAudioWarning
    from cadenza.data.scores import PartialScoreWarning

    kinds = (PartialAudioWarning, LoudAudioWarning, MendedAudioWarning, PartialScoreWarning)
    with warnings.catch_warnings(record=True) as caught:
        for kind in kinds:
            warnings.simplefilter("always", kind)
        y = load_audio_item(item, sr, max_seconds=max_seconds)
    return y, _notes_of(caught, kinds)


def _notes_of(caught: list[warnings.WarningMessage], kinds: Any) -> str:
    """The notes (``.note``) of the warnings of ``kinds`` among ``caught``, joined; the other
    warnings are given again, as they would have been."""
    notes = []
    for w in caught:
        if isinstance(w.message, kinds):
            notes.append(w.message.note)  # type: ignore[attr-defined]
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return "; ".join(dict.fromkeys(notes))


def prepare_one(
    item: SourceItem, rep_dict: dict[str, Any], out: str, split: str | dict[str, str]
) -> dict[str, Any] | list[dict[str, Any]]:
    """Prepare one file into ``out/shards``; never raises for a bad file, returns its manifest line.
    A full disk is not the file's fault: its ``OSError`` is raised, and ``prepare`` stops.

    ``split`` as ``{part id: split}`` (:func:`part_ids`) cuts the file's frames into that many
    parts of equal length, one shard and one manifest line each (returned as a list)."""
    from cadenza.data.store import atomic_save_npy

    if isinstance(split, dict):
        return _prepare_parts(item, rep_dict, out, split)
    record = _record(item, split)
    t0 = time.perf_counter()
    try:
        rep = representation_from_dict(rep_dict)
        frames, info = _encode_item(item, rep)
        frames = np.ascontiguousarray(frames, dtype=rep.dtype)
        atomic_save_npy(Path(out) / "shards" / f"{item.id}.npy", frames)
        record.update(status="ok", n_frames=int(len(frames)), **info)
    except Exception as exc:  # a long job must outlive any one bad file; the reason is kept
        record.update(_why_skipped(exc))
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def _why_skipped(exc: Exception) -> dict[str, Any]:
    """The manifest fields of a file whose reading raised ``exc``. A full disk is not the file's
    fault: it is raised again, and the run stops (and goes on once there is room)."""
    if isinstance(exc, DecodeError):
        return {"status": "skipped", "reason": exc.reason, "detail": exc.detail[:300]}
    if isinstance(exc, MemoryError):
        return {"status": "skipped", "reason": "out of memory"}
    if is_disk_full(exc):
        raise exc
    return {"status": "skipped", "reason": "failed to decode", "detail": f"{type(exc).__name__}: {exc}"[:300]}


def _prepare_parts(
    item: SourceItem, rep_dict: dict[str, Any], out: str, splits: dict[str, str]
) -> list[dict[str, Any]]:
    """A file encoded once and cut into ``len(splits)`` consecutive parts of equal length (a
    piano roll's at the nearest bar lines), each a shard and a manifest line (``part``: [k, n];
    ``start``, ``end``: its seconds in the file, after the trimmed lead-in; for a roll, its
    share of the score's length). A file that fails fails every part, with its reason; a part
    with nothing in it (a long pause, bars of rests) is skipped as silent (a roll's: no notes)."""
    from cadenza.audio import is_silent
    from cadenza.data.store import atomic_save_npy

    ids = sorted(splits)
    t0 = time.perf_counter()
    samples: list[np.ndarray] = []  # an audio representation's: a part's silence is its sound's
    try:
        rep = representation_from_dict(rep_dict)
        encode = rep.by_kind(audio=functools.partial(_encode_audio, samples=samples), score=_encode_score)
        frames, info = encode(item, rep)
        frames = np.ascontiguousarray(frames, dtype=rep.dtype)
        failed = None
    except Exception as exc:  # noqa: BLE001 - as prepare_one: the reason is kept, the run goes on
        failed = _why_skipped(exc)
    seconds = round(time.perf_counter() - t0, 3)
    if failed is not None:
        return [{**_record(item, splits[pid], pid), **failed, "seconds": seconds} for pid in ids]
    n, total = len(frames), float(info.get("duration", 0.0))
    lead = float(info.get("trimmed", [0.0])[0]) if "trimmed" in info else 0.0
    records = []
    unit = rep.frame_unit  # a piano roll is cut at bar lines
    hop = len(samples[0]) / max(n, 1) if samples else 0.0  # samples a frame
    for k, pid in enumerate(ids):
        a, b = (unit * round(j * (n // unit) / len(ids)) for j in (k, k + 1))
        part = frames[a:b]
        record = _record(item, splits[pid], pid)
        record.update(
            part=[k + 1, len(ids)],
            start=round(lead + total * a / max(n, 1), 3),
            end=round(lead + total * b / max(n, 1), 3),
            seconds=seconds,
        )
        if len(part) == 0:
            record.update(
                status="skipped",
                reason="too short",
                detail=f"{n} frames give part {k + 1} of {len(ids)} none",
            )
        elif is_silent(samples[0][round(a * hop) : round(b * hop)]) if samples else not np.any(part):
            what = rep.by_kind(audio="silent", score="no notes")
            record.update(status="skipped", reason=what, detail=f"part {k + 1} of {len(ids)} holds nothing")
        else:
            atomic_save_npy(Path(out) / "shards" / f"{pid}.npy", np.ascontiguousarray(part))
            record.update(
                status="ok", n_frames=int(len(part)), duration=round(total * len(part) / max(n, 1), 6)
            )
            for key in ("warning", "dc_offset"):
                if key in info:
                    record[key] = info[key]
        records.append(record)
    return records


def _record(item: SourceItem, split: str, part_id: str | None = None) -> dict[str, Any]:
    """The start of a file's manifest line, or of one of its parts' (with ``file``: its id)."""
    record = {
        "id": item.id,
        "path": item.path,
        "kind": item.kind,
        "labels": dict(item.labels),
        "split": split,
    }
    if part_id is not None:
        record.update(id=part_id, file=item.id)
    return record


def _same_bytes(items: Sequence[SourceItem]) -> dict[str, str]:
    """``{id: id of the file kept}`` for every other file with the same bytes
    (:func:`cadenza._fs.same_bytes`: the shortest path is kept)."""
    from cadenza._fs import same_bytes

    paths = [item.path for item in items]
    return {items[i].id: items[k].id for i, k in same_bytes(paths).items()}


#: The function a worker runs per file (``prepare_one``); tests swap in one that crashes.
_WORKER_FN: Any = None

#: How often the pool's files are checked against their time limit, in seconds.
_WATCH_SECONDS = 1.0


#: Thread pools of the numerical libraries, one thread each in a worker: ``workers`` processes
#: already fill the cores, and oversubscribed BLAS/OpenMP threads only wait on each other.
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


#: How often a worker's watchdog looks for its parent, in seconds.
_WATCHDOG_SECONDS = 1.0

#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` dies, however it dies (``kill -9`` included).

    A pool worker blocks on its task queue forever once the parent is gone (it holds the
    queue's write end itself, so it never reads an end of file), keeping a few hundred MB.
    On Linux the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``); the
    signal comes when the parent *thread* that started the worker ends, which is the thread
    that runs ``prepare_corpus``, alive until the pool is shut down. Elsewhere, or if prctl
    is refused, a daemon thread checks once a second that the parent is still ours.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
        if armed:
            if os.getppid() != parent_pid:  # the parent died before the signal was armed
                os._exit(1)
            return
    _start_parent_watchdog(parent_pid)


def _start_parent_watchdog(parent_pid: int, interval: float = _WATCHDOG_SECONDS) -> threading.Thread:
    """A daemon thread that ends this process once its parent is no longer ``parent_pid``.

    An orphan is re-parented (to init or a subreaper), so ``os.getppid()`` changes.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    thread = threading.Thread(target=watch, name="cadenza-parent-watchdog", daemon=True)
    thread.start()
    return thread


#: How worker processes start: None chooses (:func:`_start_method`); tests set "spawn" or "fork".
_START_METHOD: str | None = None


def _start_method() -> str:
    """``"fork"`` where it is safe and cheap, else ``"spawn"``.

    A spawned worker starts a fresh interpreter and imports cadenza, numpy, scipy and the
    audio libraries before its first file: 0.3-0.5 s of CPU each, as long as the whole run of a
    few minutes of audio. A forked one starts in milliseconds with what this process has
    imported. Fork is used on Linux when this process runs a single Python thread (no lock of
    another thread can be copied held into the child) and has not loaded torch (whose OpenMP
    pool does not survive a fork); the native threads of OpenBLAS re-create themselves after a
    fork (``pthread_atfork``), and a worker limits every library to one thread anyway
    (:func:`_worker_init`). Elsewhere, and in a notebook or a threaded program, workers spawn.
    """
    if _START_METHOD is not None:
        return _START_METHOD
    if sys.platform.startswith("linux") and threading.active_count() == 1 and "torch" not in sys.modules:
        return "fork"
    return "spawn"


def _import_for_workers() -> None:
    """Import here what every worker needs (decoders, resampler, store), so that forked workers start with it."""
    import cadenza.audio  # noqa: F401
    import cadenza.data.store  # noqa: F401


@contextlib.contextmanager
def _quiet_fork_warning() -> Iterator[None]:
    """Python 3.12+ warns at every fork from a process with native threads (OpenBLAS's own
    pool, here); :func:`_start_method` forks only where that is safe."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*use of fork\(\) may lead to deadlocks", DeprecationWarning)
        yield


def _read_ahead(path: str) -> None:
    """Ask the kernel to start reading ``path`` now, while the workers are busy with earlier files."""
    if hasattr(os, "posix_fadvise"):
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a named pipe must not hold us
        except OSError:
            return  # the worker reports it
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def _worker_init(parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # for libraries loaded before the environment took effect
    torch = sys.modules.get("torch")  # encoding never imports torch; a custom worker function may have
    if torch is not None:
        torch.set_num_threads(1)


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Spawned workers start with one thread per numerical library (they read the environment)."""
    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update({k: "1" for k in _THREAD_ENV})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------ the job
class _Journal:
    """``manifest.jsonl`` opened for appending: one flushed line per finished file."""

    def __init__(self, path: Path) -> None:
        # A line cut short by a kill would glue onto the next one; end it first.
        if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with open(path, "ab") as f:
                f.write(b"\n")
        self.f = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.f.write(json.dumps(record, sort_keys=True) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _skipped_for_room(record: dict[str, Any]) -> bool:
    """A file recorded as skipped because the disk was full (by a cadenza before it stopped for
    that): prepared again when the run resumes."""
    detail = str(record.get("detail", ""))
    return record.get("reason") == "failed to decode" and detail.startswith(
        (f"OSError: [Errno {errno.ENOSPC}]", f"OSError: [Errno {errno.EDQUOT}]")
    )


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "shards").mkdir(exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(
            f"cannot write to {out}: {exc.strerror or exc}; choose a folder you can write to"
        ) from exc


def prepare_corpus(
    source: str,
    out: str | os.PathLike,
    *,
    representation: str = "fft",
    sample_rate: int | None = None,
    rep_params: dict[str, Any] | None = None,
    workers: int = 1,
    max_files: int | None = None,
    seed: int = 0,
    split: Sequence[float] = DEFAULT_SPLIT,
    progress: bool = True,
    overwrite: bool = False,
    file_timeout: float | None = FILE_TIMEOUT,
) -> PrepareSummary:
    """Prepare the files of ``source`` into a feature store at ``out``.

    Parameters
    ----------
    source : str
        A corpus spec (``music21:bach``, ``gtzan:/data/gtzan``, a folder, ...) as
        :func:`cadenza.data.open_source` reads it.
    out : path
        The store's folder. Running again with the same arguments resumes; other
        parameters on an existing store stop with an error unless ``overwrite``.
    representation : str
        A key of ``REPRESENTATIONS``.
    sample_rate : int, optional
        Audio rate for audio representations (default: the representation's own).
    rep_params : dict, optional
        Further representation parameters (``{"block_size": 2000}``, ``{"n_mels": 80}``).
    workers : int
        Processes decoding in parallel (1: in this process).
    max_files : int, optional
        Prepare at most this many files, drawn round-robin over composers/genres.
    seed : int
        Seeds the split and the ``max_files`` draw; saved in ``meta.yaml``.
    file_timeout : float, optional
        Seconds a file may take before it is skipped as "timed out" (a damaged file that its
        decoder or parser cannot finish); None or 0: no limit.

    Returns
    -------
    PrepareSummary

    Examples
    --------
    >>> summary = prepare_corpus("music21:bach", "data/bach-fft", representation="fft", max_files=8)  # doctest: +SKIP
    >>> print(summary)                                                                                 # doctest: +SKIP
    8 of 8 files prepared, 0 skipped; 0.12 h of material in data/bach-fft
    """
    from cadenza.data.corpora import open_source

    t_start = time.perf_counter()
    params = dict(rep_params or {})
    if sample_rate is not None:
        params["sample_rate"] = int(sample_rate)
    rep = make_representation(representation, **params)
    if workers < 1:
        raise ParameterError(f"--workers must be at least 1, got {workers}")
    if max_files is not None and max_files < 1:
        raise ParameterError(f"--max-files must be at least 1, got {max_files}")
    if file_timeout is not None and not 0 <= file_timeout < math.inf:
        raise ParameterError(f"--file-timeout must be a number of seconds (0: no limit), got {file_timeout}")

    src = open_source(source, kind=rep.by_kind(audio="audio", score="score"))
    usable = rep.by_kind(audio=("audio", "score", "roll"), score=("score", "roll"))
    all_items = [it for it in src.items() if it.kind in usable]
    if not all_items:
        raise SourceError(f"{source} has no file that the {rep.name!r} representation can use")
    items = pick_files(all_items, max_files, seed)
    n_parts = {
        it.id: parts_per_file(len(items), _source_seconds(it) if len(items) < 3 else 0.0, split)
        for it in items
    }
    parts = {i: k for i, k in n_parts.items() if k > 1}  # the files cut
    ids_of = {it.id: part_ids(it.id, n_parts[it.id]) for it in items}
    splits = assign_splits(
        [dataclasses.replace(it, id=pid) for it in items for pid in ids_of[it.id]], seed=seed, fractions=split
    )
    # What each file's worker is given: its split, or its parts' splits when it is cut.
    jobs: dict[str, str | dict[str, str]] = {
        it.id: {pid: splits[pid] for pid in ids_of[it.id]} if it.id in parts else splits[it.id]
        for it in items
    }

    out = Path(out).expanduser()
    meta = base_meta(
        rep, seed=seed, source=source, split_fractions=[float(f) for f in split], max_files=max_files
    )
    trims = rep.by_kind(audio=True, score=False)
    if trims:
        meta["audio_prep"] = AUDIO_PREP
    if parts:
        meta["parts"] = parts
    _check_writable(out)
    with _lock_store(out):  # two prepares of one store would write each other's files
        meta_path = out / "meta.yaml"
        if meta_path.exists() and not overwrite:
            import yaml

            old = yaml.safe_load(meta_path.read_text()) or {}
            keys = ("representation", "seed", "source", "split_fractions", "max_files")
            diffs = [k for k in keys if old.get(k) != meta.get(k)]
            if trims and old.get("audio_prep", 1) != AUDIO_PREP:
                raise StoreError(
                    f"{out} was prepared by an earlier cadenza that kept each file's silent lead-in and "
                    "ending (this one trims them); a store must not mix the two: use another folder, or "
                    "--overwrite to prepare it again"
                )
            if diffs:
                raise StoreError(
                    f"{out} already holds a store prepared with other parameters ({', '.join(diffs)} differ); "
                    "use another folder, or --overwrite to start it again"
                )
        if overwrite:
            for name in ("manifest.jsonl", "stats.npz", "meta.yaml"):
                (out / name).unlink(missing_ok=True)
            for shard in (out / "shards").glob("*.npy"):
                shard.unlink()
        write_meta(out, meta)

        # Resume: keep what an earlier run finished (ok with its shard whole on disk, or skipped); a
        # shard gone or damaged since (a disk error, a copy cut short) is prepared again.
        wanted = {pid for ids in ids_of.values() for pid in ids}
        done: dict[str, dict[str, Any]] = {}
        n_damaged = 0
        for r in read_manifest(out / "manifest.jsonl"):
            if r.get("id") not in wanted:
                continue
            if r.get("status") == "ok":
                shard = out / "shards" / f"{r['id']}.npy"
                kept = shard_problem(shard, r.get("n_frames", -1), meta["n_features"], meta["dtype"]) is None
                n_damaged += shard.exists() and not kept
            else:
                kept = r.get("status") == "skipped" and not _skipped_for_room(r)
                if r.get("reason") == "timed out" and (
                    not file_timeout or file_timeout > r.get("timeout", 0)
                ):
                    kept = False  # a longer limit now: tried again
            if kept:
                r["split"] = splits[r["id"]]
                done[r["id"]] = r
        if n_damaged:
            log.warning("%s: %d damaged shards are prepared again", out, n_damaged)
        todo = [it for it in items if any(pid not in done for pid in ids_of[it.id])]
        n_done_before = len(done)
        if n_done_before:
            unit = "parts" if parts else "files"
            log.info("resuming %s: %d of %d %s already done", out, n_done_before, len(wanted), unit)

        rep_dict = rep.to_dict()
        # Chosen before the progress bar, whose thread (on a terminal) is the bar's, not the caller's.
        start_method = _start_method()
        if workers > 1 and start_method == "fork":
            _import_for_workers()
        journal = _Journal(out / "manifest.jsonl")
        bar = _progress_bar(
            len(wanted),
            n_done_before,
            progress,
            sum(r.get("duration", 0.0) for r in done.values()),
            unit="part" if parts else "file",
        )
        try:
            # A file with the same bytes as another (a download kept twice, "song (1).mp3", a MIDI
            # collection's copies) is not prepared again: in two splits it would put held-out
            # music in the training data.
            same = _same_bytes(items) if todo else {}  # a finished store read again: nothing to hash
            for item in [it for it in todo if it.id in same]:
                for pid in ids_of[item.id]:
                    record = _record(item, splits[pid], pid)
                    record.update(
                        status="skipped", reason="duplicate", detail=f"the same bytes as {same[item.id]}"
                    )
                    done[pid] = record
                    journal.write(record)
                    bar.advance(record)
            todo = [it for it in todo if it.id not in same]
            for record in _run(todo, rep_dict, str(out), jobs, workers, start_method, file_timeout or None):
                done[record["id"]] = record
                journal.write(record)
                bar.advance(record)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            n_kept = sum(r.get("status") == "ok" for r in done.values())
            raise DiskFullError(
                f"{disk_full_text(exc, out)}; {n_kept} of {len(wanted)} {'parts' if parts else 'files'} "
                "are prepared and kept: free "
                "some space (or prepare into a folder on another disk) and run the same command again, "
                "which goes on with the rest"
            ) from None
        finally:
            journal.close()
            bar.close()

        records = [done[pid] for it in items for pid in ids_of[it.id] if pid in done]
        ok = [r for r in records if r["status"] == "ok"]
        reasons = collections.Counter(r["reason"] for r in records if r["status"] != "ok")
        summary = PrepareSummary(
            out=out,
            n_files=len(wanted),
            n_ok=len(ok),
            n_skipped=len(records) - len(ok),
            reasons=dict(reasons),
            hours=sum(float(r.get("duration", 0.0)) for r in ok) / 3600.0,
            seconds=time.perf_counter() - t_start,
            n_done_before=n_done_before,
            # (a file's note once, not once for each of its parts)
            warnings={r.get("file", r["id"]): r["warning"] for r in ok if r.get("warning")},
            left_out=dict(src.left_out),
            empty_splits={
                split: n
                for split, n in collections.Counter(r["split"] for r in records).items()
                if split in ("valid", "test") and not any(r["split"] == split for r in ok)
            },
            parts=parts,
            part_splits=dict(collections.Counter(r["split"] for r in ok)) if parts else {},
            uncut=sum(k == 1 for k in n_parts.values()) if len(items) < 3 and sum(split[1:]) > 0 else 0,
            held_share=_lopsided(ok, split),
        )
        if not ok:
            raise StoreError(f"none of the {len(items)} files of {source} could be prepared: {summary}")
        finish_store(out, records, {**meta, "n_source_files": len(all_items)})
        _remove_strays(out, {r["id"] for r in ok})
        FeatureStore(out)  # fails loudly if what was written does not read back
        return summary


def _lopsided(ok: list[dict[str, Any]], fractions: Sequence[float]) -> tuple[float, str, float] | None:
    """``(share, longest, seconds)`` where the held-out files hold more than half the seconds
    prepared and more than 2.5 times the split's held-out fractions (files are split by count, so
    a long recording drawn for the test split leaves training little); else None.

    >>> _lopsided([{"split": "train", "duration": 60.0, "id": "a"}, {"split": "test", "duration": 600.0, "id": "b"}], (0.8, 0.1, 0.1))
    (0.9090909090909091, 'b', 600.0)
    """
    seconds = sum(float(r.get("duration", 0.0)) for r in ok)
    held = [r for r in ok if r["split"] in ("valid", "test")]
    share = sum(float(r.get("duration", 0.0)) for r in held) / seconds if seconds > 0 else 0.0
    if not held or share <= max(0.5, 2.5 * (fractions[1] + fractions[2])):
        return None
    longest = max(held, key=lambda r: float(r.get("duration", 0.0)))
    return share, str(longest["id"]), float(longest.get("duration", 0.0))


def _remove_strays(out: Path, ids: set[str]) -> None:
    """Delete the shards of ``out`` that its manifest no longer names (a file taken out of the
    source, a file cut into parts since, another ``--max-files``), and the temporary files of a
    prepare that was killed while writing: nothing reads them, and they kept their disk space
    for as long as the store lived. The store is this process's (:func:`_lock_store`)."""
    n, size = 0, 0
    for path in (out / "shards").iterdir():
        stray = path.suffix == ".npy" and not path.name.startswith(".") and path.stem not in ids
        if stray or (path.name.startswith(".") and path.name.endswith(".tmp")):
            with contextlib.suppress(OSError):
                size += path.stat().st_size
                path.unlink()
                n += 1
    if n:
        log.info("%s: removed %d shards no file of the store has now (%.1f MB)", out, n, size / 1e6)


def _lock_store(out: Path) -> Any:
    """The store's folder taken for this process, or :class:`~cadenza.errors.BusyError` while
    another process prepares into it."""
    from cadenza._fs import lock_folder

    def busy(pid: int | None) -> BusyError:
        who = f"process {pid}" if pid else "another process"
        return BusyError(
            f"{out} is being prepared now by {who} (a cadenza prepare or a study); let it finish, "
            "or stop it and run the same command again (it goes on with the files not yet done)"
        )

    return lock_folder(out, ".prepare.lock", busy)


def _run(
    todo: list[SourceItem],
    rep_dict: dict[str, Any],
    out: str,
    splits: dict[str, str | dict[str, str]],
    workers: int,
    start_method: str = "spawn",
    timeout: float | None = None,
):
    """Yield manifest records as files finish (a file cut into parts: one per part); a crashed
    worker costs only the file it was on, and a file still read after ``timeout`` seconds only
    itself. ``splits``: each file's split, or its parts' splits."""
    fn = _WORKER_FN if _WORKER_FN is not None else prepare_one
    if workers == 1 or len(todo) <= 1:
        from threadpoolctl import threadpool_limits

        # One BLAS thread, as in a worker: the shards are then bitwise the same for any --workers.
        for i, item in enumerate(todo):
            if i + 1 < len(todo):
                _read_ahead(todo[i + 1].path)
            try:
                with threadpool_limits(1), _time_limit(timeout):
                    record = fn(item, rep_dict, out, splits[item.id])
            except FileTimeout:
                log.warning("%s: still being read after %g s; skipped as timed out", item.path, timeout)
                record = _timed_out(item, splits[item.id], timeout or 0.0)
            yield from _records(record)
        return
    with _single_threaded_children():
        yield from _run_pool(fn, todo, rep_dict, out, splits, workers, start_method, timeout)


def _run_pool(
    fn: Any,
    todo: list[SourceItem],
    rep_dict: dict[str, Any],
    out: str,
    splits: dict[str, str | dict[str, str]],
    workers: int,
    start_method: str,
    timeout: float | None = None,
):
    """The files on ``workers`` processes started once for the run (again only after a crash,
    or after a file's time was up: its workers are stopped, and it is recorded as timed out)."""
    ctx = multiprocessing.get_context(start_method)
    queue = collections.deque(todo)
    suspects: list[SourceItem] = []
    while queue or suspects:
        # Files that were in flight when a worker died are retried one at a time, alone.
        for item in suspects:
            yield from _records(_isolated(fn, item, rep_dict, out, splits[item.id], ctx, timeout))
        suspects = []
        if not queue:
            break
        with cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
        ) as pool:
            in_flight: dict[cf.Future, SourceItem] = {}
            began: dict[cf.Future, float] = {}  # when each was handed to a worker
            overdue: list[cf.Future] = []
            try:
                while queue or in_flight:
                    while queue and len(in_flight) < 2 * workers:
                        item = queue[0]  # taken off the queue only once submitted: a broken pool refuses it
                        with _quiet_fork_warning():  # the first submit starts the workers
                            in_flight[pool.submit(fn, item, rep_dict, out, splits[item.id])] = item
                        queue.popleft()
                        _read_ahead(item.path)
                    finished, _ = cf.wait(
                        in_flight, timeout=_WATCH_SECONDS if timeout else None, return_when=cf.FIRST_COMPLETED
                    )
                    now = time.monotonic()
                    for fut in in_flight:
                        if fut not in began and fut.running():
                            began[fut] = now
                    overdue = [
                        f for f in in_flight if f not in finished and now - began.get(f, now) > (timeout or 0)
                    ]
                    if timeout and overdue:
                        _stop_workers(pool)  # the pool breaks: the next result() raises
                        finished = set(in_flight)
                    for fut in finished:
                        record = fut.result()  # raises BrokenProcessPool while the file is still in flight
                        del in_flight[fut]
                        yield from _records(record)
            except cf.process.BrokenProcessPool:
                late = {id(in_flight[f]) for f in overdue} if timeout else set()
                for fut in overdue if timeout else []:
                    item = in_flight[fut]
                    log.warning("%s: still being read after %g s; skipped as timed out", item.path, timeout)
                    yield from _records(_timed_out(item, splits[item.id], timeout or 0.0))
                suspects = [it for it in in_flight.values() if id(it) not in late]
                if suspects and not late:
                    log.warning("a worker died; retrying %d file(s) one at a time", len(suspects))
            except BaseException:  # a full disk (or a stop): the files not begun are not begun
                for fut in in_flight:
                    fut.cancel()
                raise


class FileTimeout(BaseException):
    """Raised in a file's work when its time is up (:func:`_time_limit`); a BaseException, so that
    the reader's own ``except Exception`` does not take it for a decoding error."""


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`FileTimeout` in this (main) thread after ``seconds``: a hang in Python code
    (a parser's loop) ends; one inside a C call ends when the call returns. Nothing elsewhere
    (another thread, or no ``setitimer``): the pool's workers are stopped from outside instead."""
    if (
        not seconds
        or not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise FileTimeout

    before = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def _given_up(
    item: SourceItem, split: str | dict[str, str], reason: str, detail: str = ""
) -> dict[str, Any] | list[dict[str, Any]]:
    """The manifest line of a file given up on from outside its work (a crash, its time up), or
    of each of its parts."""
    fields = {"status": "skipped", "reason": reason, **({"detail": detail} if detail else {})}
    if isinstance(split, dict):
        return [{**_record(item, s, pid), **fields} for pid, s in sorted(split.items())]
    return {**_record(item, split), **fields}


def _timed_out(
    item: SourceItem, split: str | dict[str, str], seconds: float
) -> dict[str, Any] | list[dict[str, Any]]:
    """A file given up on after ``seconds`` (kept in ``timeout``: a resume with a longer limit
    tries it again, one with the same does not wait for it again)."""
    records = _given_up(
        item,
        split,
        "timed out",
        f"still being read after {seconds:g} s: a damaged file that its decoder or parser cannot finish? "
        "(--file-timeout SECONDS allows more)",
    )
    for record in _records(records):
        record["timeout"] = seconds
    return records


def _records(result: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A worker's manifest lines: one for a file, a list for a file's parts."""
    return result if isinstance(result, list) else [result]


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Kill a pool's worker processes (one of them is on a file whose time is up); the pool then
    breaks, and the files it was on are given up or retried."""
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(OSError, AttributeError):
            process.kill()


def _isolated(
    fn: Any,
    item: SourceItem,
    rep_dict: dict[str, Any],
    out: str,
    split: str | dict[str, str],
    ctx: Any,
    timeout: float | None = None,
) -> dict[str, Any] | list[dict[str, Any]]:
    with cf.ProcessPoolExecutor(
        max_workers=1, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
    ) as pool:
        try:
            with _quiet_fork_warning():
                future = pool.submit(fn, item, rep_dict, out, split)
            return future.result(timeout=timeout)
        except cf.process.BrokenProcessPool:
            return _given_up(item, split, "crashed the decoder")
        except cf.TimeoutError:
            _stop_workers(pool)
            return _timed_out(item, split, timeout or 0.0)


class _progress_bar:
    """Progress over files (:func:`cadenza.progress.progress`), with hours of material done and files skipped."""

    def __init__(
        self, total: int, initial: int, enabled: bool, seconds_before: float, unit: str = "file"
    ) -> None:
        from cadenza.progress import progress

        self.bar = progress(total=total, initial=initial, unit=unit, enabled=enabled, desc="prepare")
        self.seconds = seconds_before
        self.skipped = 0

    def advance(self, record: dict[str, Any]) -> None:
        if record["status"] == "ok":
            self.seconds += float(record.get("duration", 0.0))
        else:
            self.skipped += 1
        self.bar.set_postfix(hours=f"{self.seconds / 3600:.2f}", skipped=self.skipped)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


__all__ = [
    "SPLITS",
    "CadenzaError",
    "FileNoteWarning",
    "PrepareSummary",
    "assign_splits",
    "load_audio_item",
    "load_score_item",
    "part_ids",
    "parts_per_file",
    "pick_files",
    "prepare_corpus",
    "prepare_one",
    "read_frames",
]
