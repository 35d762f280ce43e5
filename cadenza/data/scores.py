"""Reading symbolic files: MIDI, MusicXML/Humdrum/ABC (through music21) and pianoroll .npz.

Everything symbolic reaches the rest of cadenza as a ``pretty_midi.PrettyMIDI``:

* :func:`read_score` reads ``.mid/.midi/.kar`` with mido (tolerant of out-of-range data
  bytes) and every other score format with ``music21.converter.parse``, translated to MIDI
  in memory so that part instruments (violin, viola, cello...) keep their programs;
  parts without an instrument play as piano (program 0).
* :func:`read_lpd_roll` reads the ``.npz`` files written by pypianoroll, in both of its
  layouts, with numpy and scipy only; :func:`read_lpd_npz` turns one into notes.

A pypianoroll ``.npz`` is a zip of ``.npy`` arrays plus a raw ``info.json`` member:

=============================================  ==========================================
member                                         meaning
=============================================  ==========================================
``info.json``                                  ``{"name", "resolution"`` (>= 1.0) or
                                               ``"beat_resolution"`` (0.x), and per track
                                               ``"0": {"name", "program", "is_drum"}, ...}``
``pianoroll_<i>_csc_{data,indices,indptr}``    track ``i`` as a ``scipy.sparse.csc_matrix``
``pianoroll_<i>_csc_shape``                    its ``(n_steps, 128)`` shape
``tempo``                                      bpm at each step (always in 0.x, optional after)
``downbeat``                                   bool, True on each bar's first step (optional)
=============================================  ==========================================

Failures raise :class:`cadenza.errors.DecodeError` with a short reason: "missing file",
"empty file", "not a MIDI file", "corrupt MIDI", "unparseable score", "no notes",
"not a pianoroll .npz".
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import re
import warnings
import zipfile
from typing import Any

import mido
import numpy as np
import pretty_midi

from cadenza._fs import not_a_file
from cadenza.errors import DecodeError

__all__ = [
    "MIDI_EXTENSIONS",
    "PartialScoreWarning",
    "read_lpd_npz",
    "read_lpd_roll",
    "read_score",
    "score_head",
]

MIDI_EXTENSIONS = (".mid", ".midi", ".kar")

#: Velocity given to the steps of a binary (True/False) piano roll, as pypianoroll does.
BINARY_VELOCITY = 64
DEFAULT_TEMPO = 120.0
#: The most steps a pianoroll .npz may declare over all its tracks: 2**22, 4.2 million (an LPD-5
#: song at 24 steps a beat has five tracks of some 10,000). The shape is declared, not stored:
#: a 1 KB file could otherwise ask for gigabytes, and it is refused as "too long" before they are.
MAX_ROLL_STEPS = 1 << 22


# ------------------------------------------------------------------------------ scores
def read_score(path: str | os.PathLike[str]) -> pretty_midi.PrettyMIDI:
    """Read a MIDI file or any score music21 can parse, as a ``PrettyMIDI``.

    Parameters
    ----------
    path : str or path
        ``.mid``/``.midi``/``.kar`` are read as MIDI; ``.xml``/``.musicxml``/``.mxl``/
        ``.krn``/``.abc`` (and anything else) through ``music21.converter.parse``. A file
        holding several pieces (an ABC tune book) gives them one after the other.

    Returns
    -------
    pretty_midi.PrettyMIDI

    Raises
    ------
    DecodeError
        "missing file", "empty file", "not a MIDI file", "corrupt MIDI",
        "unparseable score" or "no notes".

    Examples
    --------
    >>> import music21
    >>> pm = read_score(music21.corpus.getWork("bach/bwv66.6"))
    >>> len(pm.instruments), sum(len(i.notes) for i in pm.instruments) > 100
    (4, True)
    """
    path = os.fspath(path)
    _check_file(path)
    if path.lower().endswith(MIDI_EXTENSIONS):
        with open(path, "rb") as f:
            midi = _midi_from_bytes(path, f.read())
    else:
        midi = _read_with_music21(path)
    if not any(inst.notes for inst in midi.instruments):
        n = len(midi.instruments)
        raise DecodeError(
            path, "no notes", f"{n} part{'' if n == 1 else 's'}, none with a note" if n else "no part"
        )
    return midi


def _check_file(path: str) -> None:
    problem = not_a_file(path)
    if problem is not None:
        raise DecodeError(path, *problem)
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file")


class PartialScoreWarning(UserWarning):
    """A MIDI file that breaks off inside a track (a download cut short, a damaged disk) or whose
    header is preceded by other bytes: what parses is read, and a corpus job records
    :attr:`note` in its manifest, as it does for audio kept in part."""

    def __init__(self, path: str, note: str) -> None:
        self.path = path
        self.note = note  # one line for a manifest
        super().__init__(f"{path}: {note}")


#: How far into a file a MIDI header is looked for (a Mac's 128-byte MacBinary header, a web
#: server's reply saved with the file).
_HEADER_SEARCH = 4096


def _midi_from_bytes(path: str, data: bytes, *, shrink: bool = False) -> pretty_midi.PrettyMIDI:
    if data[:4] == b"RIFF" and data[8:12] == b"RMID":  # RIFF-wrapped MIDI (.rmi saved as .mid)
        start = data.find(b"MThd")
        data = data[start:] if start >= 0 else b""
    elif data[:4] != b"MThd" and 0 < (start := data.find(b"MThd\x00\x00\x00\x06", 0, _HEADER_SEARCH)):
        warnings.warn(
            PartialScoreWarning(path, f"{start} bytes before its MIDI header passed over"), stacklevel=3
        )
        data = data[start:]
    if data[:4] != b"MThd":
        raise DecodeError(path, "not a MIDI file", "no MThd header")
    data, cut = _mend_tracks(data)
    if cut:
        warnings.warn(PartialScoreWarning(path, f"kept in part: {cut}"), stacklevel=3)
    try:
        # clip=True: data bytes above 127, common in files from old sequencers, are clipped
        # instead of refused (pretty_midi's own reader refuses them).
        mid = mido.MidiFile(file=io.BytesIO(data), clip=True)
    except (EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise DecodeError(path, "corrupt MIDI", f"{type(exc).__name__}: {exc}") from None
    if not mid.tracks:
        raise DecodeError(path, "no notes", "no track")
    if not data[12] & 0x80 and mid.ticks_per_beat == 0:
        raise DecodeError(
            path, "corrupt MIDI", "its header gives 0 ticks per beat: nothing in it can be timed"
        )
    if mid.type == 2:
        _patterns_in_sequence(mid)
    if data[12] & 0x80:  # the header's division counts SMPTE frames, not beats
        _smpte_to_beats(path, mid, 256 - data[12], data[13])
    _shrink_ticks(mid, always=shrink)
    _lengthen_zero_notes(mid)
    if mended := _mend_zero_tempos(mid):
        warnings.warn(
            PartialScoreWarning(
                path,
                f"mended: {mended} tempo event{'s' if mended > 1 else ''} of 0 µs a beat taken as the tempo before",
            ),
            stacklevel=3,
        )
    try:
        with warnings.catch_warnings():
            # "tempo events on non-zero tracks" (music21 writes them there): harmless here.
            warnings.simplefilter("ignore", RuntimeWarning)
            return pretty_midi.PrettyMIDI(mido_object=mid)
    except (ValueError, KeyError, IndexError, TypeError, ZeroDivisionError) as exc:
        raise DecodeError(path, "corrupt MIDI", f"{type(exc).__name__}: {exc}") from None


def _event_end(data: bytes, i: int, end: int, status: int | None) -> tuple[int, int | None, bool] | None:
    """Where the track event at ``i`` (its delta time first) ends, the running status after it,
    and whether it ends the track; None where it does not fit before ``end``."""

    def vlq(j: int) -> tuple[int, int] | None:
        value = 0
        for k in range(4):
            if j + k >= end:
                return None
            value = (value << 7) | (data[j + k] & 0x7F)
            if not data[j + k] & 0x80:
                return value, j + k + 1
        return None

    got = vlq(i)  # the delta time
    if got is None or got[1] >= end:
        return None
    j = got[1]
    first = data[j]
    if first == 0xFF:  # meta event: type, length, data
        if j + 1 >= end:
            return None
        got = vlq(j + 2)
        if got is None or got[1] + got[0] > end:
            return None
        return got[1] + got[0], status, data[j + 1] == 0x2F
    if first in (0xF0, 0xF7):  # system exclusive: length, data (the running status kept, as mido keeps it)
        got = vlq(j + 1)
        if got is None or got[1] + got[0] > end:
            return None
        return got[1] + got[0], status, False
    if first & 0x80:
        status, j = first, j + 1
    elif status is None:
        return None  # data without a status to run on: the track is damaged from here
    kind = status & 0xF0
    n = 1 if kind in (0xC0, 0xD0) else 2 if kind < 0xF0 else {0xF1: 1, 0xF2: 2, 0xF3: 1}.get(status, 0)
    return (j + n, status, False) if j + n <= end else None


def _mend_tracks(data: bytes) -> tuple[bytes, str]:
    """``data`` with a track that breaks off (its declared length past the end of the file, or
    its last event cut) ended after its last whole event, and the header's track count set to
    the tracks there are; and what was wrong ("" when nothing was)."""
    if len(data) < 14:
        return data, ""
    pos = 8 + int.from_bytes(data[4:8], "big")
    declared = int.from_bytes(data[10:12], "big")
    chunks: list[bytes] = []
    cut = ""
    n_tracks = 0
    while pos + 8 <= len(data):
        kind, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "big")
        body_start, body_end = pos + 8, min(pos + 8 + length, len(data))
        if kind != b"MTrk":
            if not kind.isalnum():  # not a chunk: bytes after the last track (a tag, padding)
                break
            chunks.append(data[pos:body_end])  # another kind of chunk: mido passes over it
            pos = body_end
            continue
        i, status, ended = body_start, None, False
        while i < body_end and not ended:
            step = _event_end(data, i, body_end, status)
            if step is None:
                break
            i, status, ended = step
        if i < body_end and not ended or body_start + length > len(data):
            kept = data[body_start:i] + (b"" if ended else b"\x00\xff\x2f\x00")
            chunks.append(b"MTrk" + len(kept).to_bytes(4, "big") + kept)
            cut = cut or f"track {n_tracks + 1} breaks off at byte {i} of {len(data)}"
        else:
            chunks.append(data[pos:body_end])
        n_tracks += 1
        pos = body_start + length
    if not cut and n_tracks >= declared:  # more tracks than counted: mido reads those counted, as before
        return data, ""
    if not cut:
        cut = f"its header counts {declared} tracks, the file holds {n_tracks}"
    header = data[:10] + n_tracks.to_bytes(2, "big") + data[12 : 8 + int.from_bytes(data[4:8], "big")]
    return header + b"".join(chunks), cut


def _patterns_in_sequence(mid: mido.MidiFile) -> None:
    """A type 2 file as the one track it plays: its tracks are independent patterns, heard one
    after another (the format of some drum machines and old sequencers), so they are laid end
    to end, each pattern's tempo and program changes going on until the next changes them."""
    merged = mido.MidiTrack()
    carry = 0
    for track in mid.tracks:
        for msg in track:
            if msg.type == "end_of_track":  # a pattern's end: the next starts there
                carry += msg.time
            else:
                merged.append(msg.copy(time=msg.time + carry))
                carry = 0
    merged.append(mido.MetaMessage("end_of_track", time=carry))
    mid.type = 0
    mid.tracks[:] = [merged]


def score_head(midi: pretty_midi.PrettyMIDI, seconds: float) -> pretty_midi.PrettyMIDI:
    """The first ``seconds`` of a score: its notes that start before then, cut there (``midi``
    itself when it ends sooner). Rendering or encoding a long file's head costs the head's time,
    not the file's.

    Examples
    --------
    >>> pm = pretty_midi.PrettyMIDI()
    >>> piano = pretty_midi.Instrument(program=0)
    >>> piano.notes += [pretty_midi.Note(90, 60, 0.0, 1.5), pretty_midi.Note(90, 64, 3.0, 4.0)]
    >>> pm.instruments.append(piano)
    >>> [(n.start, n.end) for n in score_head(pm, 1.0).instruments[0].notes]
    [(0.0, 1.0)]
    >>> len(pm.instruments[0].notes)  # not modified
    2
    """
    if midi.get_end_time() <= seconds:
        return midi
    head = copy.copy(midi)
    head.instruments = []
    for inst in midi.instruments:
        part = pretty_midi.Instrument(program=inst.program, is_drum=inst.is_drum, name=inst.name)
        part.notes = [
            pretty_midi.Note(n.velocity, n.pitch, n.start, min(n.end, seconds))
            for n in inst.notes
            if n.start < seconds
        ]
        part.pitch_bends = [b for b in inst.pitch_bends if b.time < seconds]
        part.control_changes = [c for c in inst.control_changes if c.time < seconds]
        head.instruments.append(part)
    return head


def _smpte_to_beats(path: str, mid: mido.MidiFile, fps: int, ticks_per_frame: int) -> None:
    """Time a file of SMPTE division (``fps`` frames a second, ``ticks_per_frame`` ticks each) in
    beats of one second: its ticks per second become ticks per beat at 60 bpm, and its tempo
    events, which SMPTE time ignores, are dropped (their delta times go to the next event)."""
    if fps not in (24, 25, 29, 30) or ticks_per_frame == 0:
        raise DecodeError(
            path, "corrupt MIDI", f"SMPTE division of {fps} frames/s, {ticks_per_frame} ticks/frame"
        )
    mid.ticks_per_beat = (30 if fps == 29 else fps) * ticks_per_frame  # 29: 29.97 drop-frame, within 0.1%
    for track in mid.tracks:
        kept, carry = [], 0
        for msg in track:
            if msg.type == "set_tempo":
                carry += msg.time
            else:
                kept.append(msg.copy(time=msg.time + carry))
                carry = 0
        track[:] = kept
    mid.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))


def _shrink_ticks(mid: mido.MidiFile, *, always: bool = False) -> None:
    """Lower the tick resolution, exactly where possible, when it is needlessly fine.

    music21 writes 10080 ticks per quarter, so a long movement passes pretty_midi's 1e7-tick
    guard against corrupt files (and its tick-to-time table costs 8 bytes a tick). Times
    are all multiples of some divisor of the resolution; the smallest such resolution of at
    least 480 keeps every time exact. Files still beyond the limit are rounded to 960.
    """
    limit = int(getattr(pretty_midi.pretty_midi, "MAX_TICK", 1e7))
    tpb = mid.ticks_per_beat
    ticks = [np.cumsum([msg.time for msg in track], dtype=np.int64) for track in mid.tracks]
    last = max((int(t[-1]) for t in ticks if len(t)), default=0)
    if tpb <= 0 or (last < limit and not always):
        return
    base = tpb // int(np.gcd.reduce(np.concatenate([[tpb], *ticks])))  # coarsest exact resolution
    exact = [d for d in range(base, tpb + 1, base) if tpb % d == 0 and last * d // tpb < limit]
    new_tpb = next((d for d in exact if d >= 480), exact[-1] if exact else min(tpb, 960))
    if new_tpb == tpb:
        return
    for track, abs_ticks in zip(mid.tracks, ticks):
        scaled = np.round(abs_ticks * (new_tpb / tpb)).astype(np.int64)
        for msg, delta in zip(track, np.diff(scaled, prepend=0)):
            msg.time = int(delta)
    mid.ticks_per_beat = new_tpb


def _mend_zero_tempos(mid: mido.MidiFile) -> int:
    """Give each tempo event of 0 microseconds a beat (a beat of no time, which nothing can play
    and pretty_midi divides by: it was ``corrupt MIDI: ZeroDivisionError``) the tempo before it in
    its track (120 bpm before any); how many there were."""
    mended = 0
    for track in mid.tracks:
        before = 500_000
        for i, msg in enumerate(track):
            if msg.type != "set_tempo":
                continue
            if msg.tempo <= 0:
                track[i] = msg.copy(tempo=before)
                mended += 1
            else:
                before = msg.tempo
    return mended


def _lengthen_zero_notes(mid: mido.MidiFile) -> None:
    """Move the note-off of a note that ends at the tick it starts (a drum machine's or a
    tracker's hit) one tick later. pretty_midi keeps such a note open until the next note-off
    of its pitch: a file of them had no notes at all ("no notes: no part"), and repeated hits
    became notes held from one hit to the next."""
    for track in mid.tracks:
        tick, started, moved = 0, {}, False
        events = []
        for order, msg in enumerate(track):
            tick += msg.time
            key = (getattr(msg, "channel", None), getattr(msg, "note", None))
            if msg.type == "note_on" and msg.velocity > 0:
                started[key] = tick
            elif msg.type in ("note_on", "note_off") and started.get(key) == tick:
                events.append((tick + 1, -1, order, msg))  # before the events of the next tick
                moved = True
                continue
            events.append((tick, 0, order, msg))
        if not moved:
            continue
        end = max(e[0] for e in events)
        events = [(end, 1, *e[2:]) if e[3].type == "end_of_track" else e for e in events]  # stays last
        events.sort(key=lambda e: e[:3])
        last = 0
        for at, _, _, msg in events:
            msg.time, last = at - last, at
        track[:] = [e[3] for e in events]


def _read_with_music21(path: str) -> pretty_midi.PrettyMIDI:
    import music21

    cut_archive = _check_mxl(path) if path.lower().endswith(".mxl") else None
    text = cut_archive if cut_archive is not None else _wide_xml(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if text is None:
                parsed = music21.converter.parse(path)
            else:
                parsed = music21.converter.parseData(text, format="musicxml")
    except Exception as exc:  # music21 raises a zoo of types (its own, XML, regex, index...)
        mended = _mend_cut_xml(path, text, exc)
        if mended is None:
            detail = _xml_damage(path, text) or f"{type(exc).__name__}: {exc}"[:300]
            if cut_archive is not None:
                detail = f"an .mxl archive cut short, with no whole measure left in it ({detail})"
            raise DecodeError(path, "unparseable score", detail) from None
        text, note = mended
        if cut_archive is not None:
            note += " (an .mxl archive cut short: its score read as far as it goes)"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = music21.converter.parseData(text, format="musicxml")
        except Exception:  # noqa: BLE001 - the first error says more
            raise DecodeError(path, "unparseable score", f"{type(exc).__name__}: {exc}"[:300]) from None
        warnings.warn(PartialScoreWarning(path, note), stacklevel=3)
    if not isinstance(parsed, music21.stream.Opus):
        return _music21_to_pretty_midi(path, parsed)
    # A collection (an ABC tune book): the pieces one after the other. music21 cannot
    # translate some tunes of some books; those are left out unless all of them fail.
    midis, first_error = [], None
    for piece in parsed.scores:
        try:
            midis.append(_music21_to_pretty_midi(path, piece))
        except DecodeError as exc:
            first_error = first_error or exc
    if not midis:
        raise first_error or DecodeError(path, "no notes", "an empty collection of scores")
    return midis[0] if len(midis) == 1 else _concatenate(midis)


#: expat's errors for a document that stops in the middle: "no element found" (between tags),
#: "unclosed token" (inside one), "partial character" (inside a UTF-8 sequence).
_CUT_XML = (3, 5, 6)


def _mend_cut_xml(path: str, text: str | None, exc: Exception) -> tuple[str, str] | None:
    """A MusicXML file cut short (a download or a copy that broke off) as the text of its whole
    measures, the elements still open at the last one closed, and the note for its manifest;
    None where the error is not a cut or nothing whole is left."""
    from xml.etree import ElementTree
    from xml.etree.ElementTree import ParseError, XMLPullParser

    if not (isinstance(exc, ParseError) and exc.code in _CUT_XML):
        return None
    if text is None:
        if not path.lower().endswith((".xml", ".musicxml")):
            return None  # an .mxl archive cut short does not unzip at all
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8", errors="ignore")  # a multibyte character cut at the end
    end = text.rfind("</measure>")
    if end < 0:
        return None
    head = text[: end + len("</measure>")]
    parser = XMLPullParser(events=("start", "end"))
    open_tags: list[str] = []
    where: dict[str, str] = {}
    try:
        parser.feed(head.encode("utf-8"))
        for event, element in parser.read_events():
            if event == "start":
                open_tags.append(element.tag)
                if element.tag in ("part", "measure"):
                    where[element.tag] = element.get("id") or element.get("number") or "?"
            else:
                open_tags.pop()
    except ParseError:
        return None
    if not open_tags or any(t.startswith("{") for t in open_tags):
        return None  # nothing left open (the cut was after the end), or namespaced tags
    closing = "".join(f"</{t}>" for t in reversed(open_tags))
    try:
        root = ElementTree.fromstring(head + closing)
    except ParseError:
        return None
    # The parts the cut left out are still listed (and grouped): music21 refuses the list.
    kept = {part.get("id") for part in root.iter("part")}
    lost = []
    for part_list in root.iter("part-list"):
        for entry in list(part_list):
            if entry.tag == "score-part" and entry.get("id") not in kept:
                lost.append(entry.get("id") or "?")
                part_list.remove(entry)
        if lost:
            for entry in list(part_list):
                if entry.tag == "part-group":
                    part_list.remove(entry)
    at = (
        f"in part {where['part']} after measure {where['measure']}"
        if "part" in where
        else f"after measure {where.get('measure', '?')}"
    )
    missing = f"; parts {', '.join(lost)} lost" if lost else ""
    return ElementTree.tostring(root, encoding="unicode"), f"kept in part: the score breaks off {at}{missing}"


#: The first bytes of XML in UTF-16 or UTF-32 (with or without a byte-order mark), and the codec.
_WIDE_XML = (
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\xfe\xff", "utf-16"),
    (b"\xff\xfe", "utf-16"),
    (b"<\x00?\x00", "utf-16-le"),
    (b"\x00<\x00?", "utf-16-be"),
)


def _wide_xml(path: str) -> str | None:
    """The text of an XML score written in UTF-16 or UTF-32 (some notation programs export
    MusicXML so), its declaration saying UTF-8: music21 reads the file as UTF-8 text and the XML
    parser then refuses the declaration ("encoding specified in XML declaration is incorrect").
    None for any other file."""
    if not path.lower().endswith((".xml", ".musicxml")):
        return None
    with open(path, "rb") as f:
        head = f.read(4)
        codec = next((c for mark, c in _WIDE_XML if head.startswith(mark)), None)
        if codec is None:
            return None
        data = head + f.read()
    try:
        text = data.decode(codec).lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise DecodeError(path, "unparseable score", f"{codec} text that does not decode: {exc}") from None
    return re.sub(r"""^(<\?xml[^>]*?encoding=)(["'])[^"']*\2""", r"\1\2UTF-8\2", text, count=1)


def _check_mxl(path: str) -> str | None:
    """Raise the DecodeError for an ``.mxl`` archive without MusicXML in it (music21 fails on the
    missing member with a TypeError); the text of the score in an archive cut short (its index,
    at the end of a zip, is gone, so no zip reader opens it: a download that broke off), as far
    as it decompresses; None for a whole archive and for one that is no zip (music21 reads plain
    XML)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        text = _cut_mxl_text(path)
        if text is None:
            with open(path, "rb") as f:
                if f.read(4) == b"PK\x03\x04":  # a zip, cut (or damaged) before any of its score
                    raise DecodeError(
                        path, "unparseable score", "an .mxl archive cut short before its score"
                    ) from None
        return text
    except OSError:
        return None
    if not any(n.lower().endswith((".xml", ".musicxml")) and not n.startswith("META-INF/") for n in names):
        raise DecodeError(
            path,
            "unparseable score",
            f"an .mxl archive without MusicXML inside ({', '.join(names[:3]) or 'empty'})",
        )
    return None


def _cut_mxl_text(path: str) -> str | None:
    """The MusicXML member of a zip cut short, read from its local header on: deflated data
    decompresses as far as it goes. None where the file is no zip or holds no MusicXML member."""
    import struct
    import zlib

    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 30 <= len(data) and data[pos : pos + 4] == b"PK\x03\x04":
        flags, method = struct.unpack_from("<HH", data, pos + 6)
        size = struct.unpack_from("<I", data, pos + 18)[0]
        n_name, n_extra = struct.unpack_from("<HH", data, pos + 26)
        name = data[pos + 30 : pos + 30 + n_name].decode("utf-8", errors="replace")
        start = pos + 30 + n_name + n_extra
        sized = not flags & 0x08 and size > 0  # else its size follows the data: read to the end
        if name.lower().endswith((".xml", ".musicxml")) and not name.startswith("META-INF/"):
            raw = data[start : start + size] if sized else data[start:]
            try:
                body = (
                    zlib.decompressobj(-15).decompress(raw) if method == 8 else raw if method == 0 else None
                )
            except zlib.error:
                return None
            if not body:
                return None
            codec = next((c for mark, c in _WIDE_XML if body.startswith(mark)), "utf-8")
            return body.decode(codec, errors="ignore").lstrip("\ufeff")
        if not sized:
            return None  # where the next member starts is not known
        pos = start + size
    return None


#: What a MusicXML file holds that no reader can time: a part's divisions of 0, a negative length.
_XML_DAMAGE = (
    (
        re.compile(r"<divisions>\s*[+-]?0*(?:\.0*)?\s*</divisions>"),
        "its <divisions> is 0, so no note's length can be read",
    ),
    (re.compile(r"<divisions>\s*-"), "its <divisions> is negative, so no note's length can be read"),
    (re.compile(r"<duration>\s*-[0-9.]+\s*</duration>"), "a note or a backup of negative length ({})"),
)


def _xml_damage(path: str, text: str | None) -> str | None:
    """What makes a MusicXML score unreadable, said plainly where it is one of :data:`_XML_DAMAGE`
    (music21 says ``ZeroDivisionError`` or "got a negative delta time"); None otherwise."""
    if text is None:
        if not path.lower().endswith((".xml", ".musicxml", ".mxl")):
            return None
        try:
            if path.lower().endswith(".mxl"):
                with zipfile.ZipFile(path) as archive:
                    members = [n for n in archive.namelist() if n.lower().endswith((".xml", ".musicxml"))]
                    members = [n for n in members if not n.startswith("META-INF/")]
                    text = archive.read(members[0]).decode("utf-8", errors="ignore") if members else ""
            else:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", errors="ignore")
        except (OSError, zipfile.BadZipFile, KeyError):
            return None
    for pattern, what in _XML_DAMAGE:
        found = pattern.search(text)
        if found:
            return what.format(found.group(0))
    return None


def _music21_to_pretty_midi(path: str, stream: Any) -> pretty_midi.PrettyMIDI:
    from music21.midi.translate import music21ObjectToMidiFile

    from cadenza.data.prepare import MAX_SCORE_BEATS

    beats = float(stream.highestTime)  # in quarter notes
    if beats > MAX_SCORE_BEATS:  # translated, its delta times would not fit MIDI's (damaged tracks)
        raise DecodeError(
            path,
            "too long",
            f"its last note or rest ends {beats:,.0f} quarter notes in, beyond {MAX_SCORE_BEATS:,}: "
            "a duration damaged or typed wrong?",
        )
    _name_generic_instruments(stream)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                data = music21ObjectToMidiFile(stream).writestr()
            except Exception:  # most often "badly formed repeats": play it once through instead
                _drop_repeats(stream)
                data = music21ObjectToMidiFile(stream).writestr()
    except Exception as exc:  # as above: translation fails in many ways on odd scores
        raise DecodeError(
            path,
            "unparseable score",
            _xml_damage(path, None) or f"MIDI translation: {type(exc).__name__}: {exc}"[:300],
        ) from None
    return _midi_from_bytes(path, data, shrink=True)


def _drop_repeats(stream: Any) -> None:
    """Remove repeat barlines, brackets and marks (segno, coda, D.C....) from a parsed score."""
    from music21 import bar, repeat, spanner
    from music21 import stream as m21stream

    for measure in stream.recurse().getElementsByClass(m21stream.Measure):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline("regular")
    marks = stream.recurse().getElementsByClass((repeat.RepeatMark, spanner.RepeatBracket))
    stream.remove(list(marks), recurse=True)


def _name_generic_instruments(stream: Any) -> None:
    """Give a part the program its name implies when its instrument is only a family.

    Several corpus quartets (Mozart, Haydn) mark every part "String Ensemble 1"; the part
    names ("Violin I", "Viola", "Cello") say which instrument plays it.
    """
    from music21 import instrument

    families = (instrument.StringInstrument, instrument.WoodwindInstrument, instrument.BrassInstrument)
    for part in getattr(stream, "parts", []):
        for inst in part.recurse().getElementsByClass(instrument.Instrument):
            if type(inst) not in families:
                continue
            try:
                specific = instrument.fromString(part.partName or inst.partName or "")
            except Exception:  # InstrumentException, or a name music21 cannot tokenise
                continue
            if type(specific) not in families and specific.midiProgram is not None:
                inst.midiProgram = specific.midiProgram


def _concatenate(midis: list[pretty_midi.PrettyMIDI]) -> pretty_midi.PrettyMIDI:
    """Several pieces one after the other; instruments with the same program, drum flag and name are joined."""
    out = pretty_midi.PrettyMIDI(resolution=midis[0].resolution, initial_tempo=_first_tempo(midis[0]))
    joined: dict[tuple[int, bool, str], pretty_midi.Instrument] = {}
    offset = 0.0
    for midi in midis:
        for inst in midi.instruments:
            key = (int(inst.program), bool(inst.is_drum), inst.name)
            if key not in joined:
                joined[key] = pretty_midi.Instrument(program=key[0], is_drum=key[1], name=key[2])
                out.instruments.append(joined[key])
            joined[key].notes.extend(
                pretty_midi.Note(n.velocity, n.pitch, n.start + offset, n.end + offset) for n in inst.notes
            )
        offset += midi.get_end_time()
    return out


def _first_tempo(midi: pretty_midi.PrettyMIDI) -> float:
    _, tempi = midi.get_tempo_changes()
    return float(tempi[0]) if len(tempi) else DEFAULT_TEMPO


# ------------------------------------------------------------------------- piano rolls
def read_lpd_roll(
    path: str | os.PathLike[str], *, merge: bool = True
) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Read a pypianoroll ``.npz`` (the Lakh Pianoroll Dataset's files) as a velocity roll.

    Both layouts are read: pypianoroll >= 1.0 (``resolution`` in ``info.json``, optional
    ``tempo``) and 0.x, in which the published LPD files were written (``beat_resolution``).
    Binary tracks get velocity ``BINARY_VELOCITY`` (64, as pypianoroll plays them).

    Parameters
    ----------
    path : str or path
        The ``.npz`` file.
    merge : bool
        True: one ``(n_steps, 128)`` roll, the maximum over the non-drum tracks. False:
        ``(n_tracks, n_steps, 128)``, every track in file order, drums included.

    Returns
    -------
    roll : np.ndarray, uint8
        Velocities 0-127, ``(n_steps, 128)`` or ``(n_tracks, n_steps, 128)``.
    resolution : int
        Steps per quarter note.
    info : dict
        ``name``, ``tempo`` (bpm of the first step), ``tempo_array`` (bpm per step or None),
        ``downbeat`` (bool array or None), ``tracks`` (list of ``{"name", "program",
        "is_drum"}``), ``is_binary``, ``format`` ("pypianoroll-0.x" or "pypianoroll-1.x").

    Raises
    ------
    DecodeError
        "missing file", "empty file" or "not a pianoroll .npz".

    Examples
    --------
    >>> roll, resolution, info = read_lpd_roll("TRAAAGR128F425B14B/b97c529ab9ef783a849b896816001748.npz")  # doctest: +SKIP
    >>> roll.shape, resolution, info["tempo"]                                                             # doctest: +SKIP
    ((6912, 128), 24, 100.0)
    """
    path = os.fspath(path)
    _check_file(path)
    rolls, resolution, info = _load_pypianoroll(path)
    n_steps = max([r.shape[0] for r in rolls], default=0)
    if merge:
        roll = np.zeros((n_steps, 128), np.uint8)
        for track, r in zip(info["tracks"], rolls):
            if not track["is_drum"]:
                np.maximum(roll[: r.shape[0]], r, out=roll[: r.shape[0]])
    else:
        roll = np.zeros((len(rolls), n_steps, 128), np.uint8)
        for i, r in enumerate(rolls):
            roll[i, : r.shape[0]] = r
    return roll, resolution, info


def read_lpd_npz(path: str | os.PathLike[str]) -> pretty_midi.PrettyMIDI:
    """A pypianoroll ``.npz`` as a ``PrettyMIDI``: one instrument per track, notes on the steps.

    A run of non-zero steps of one pitch is one note (its velocity the run's mean); the
    step lasts ``60 / (tempo * resolution)`` seconds with the tempo of the first step.

    Raises
    ------
    DecodeError
        As :func:`read_lpd_roll`, and "no notes" for a silent roll.

    Examples
    --------
    >>> pm = read_lpd_npz("b97c529ab9ef783a849b896816001748.npz")  # doctest: +SKIP
    >>> [inst.name for inst in pm.instruments]                      # doctest: +SKIP
    ['Drums', 'Piano', 'Guitar', 'Bass', 'Strings']
    """
    path = os.fspath(path)
    rolls, resolution, info = read_lpd_roll(path, merge=False)
    tempo = info["tempo"]
    step = 60.0 / (tempo * resolution)
    # A tick grid that holds every step exactly.
    midi = pretty_midi.PrettyMIDI(
        resolution=resolution * max(1, math.ceil(480 / resolution)), initial_tempo=tempo
    )
    for roll, track in zip(rolls, info["tracks"]):
        inst = pretty_midi.Instrument(program=track["program"], is_drum=track["is_drum"], name=track["name"])
        inst.notes = _roll_notes(roll, step)
        midi.instruments.append(inst)
    if not any(inst.notes for inst in midi.instruments):
        raise DecodeError(path, "no notes", "the piano roll is silent")
    return midi


def _roll_notes(roll: np.ndarray, step: float) -> list[pretty_midi.Note]:
    """Notes from a ``(n_steps, 128)`` velocity roll: each run of non-zero steps of one pitch."""
    active = np.pad(roll > 0, ((1, 1), (0, 0)))
    edges = np.diff(active.astype(np.int8), axis=0)  # (n_steps + 1, 128)
    on_pitch, on_step = np.nonzero(edges.T > 0)  # both sorted by pitch, then step
    _, off_step = np.nonzero(edges.T < 0)
    csum = np.concatenate([np.zeros((1, 128)), np.cumsum(roll, axis=0, dtype=np.float64)])
    notes = []
    for pitch, on, off in zip(on_pitch, on_step, off_step):
        velocity = int(round((csum[off, pitch] - csum[on, pitch]) / (off - on)))
        notes.append(
            pretty_midi.Note(max(1, min(127, velocity)), int(pitch), float(on * step), float(off * step))
        )
    notes.sort(key=lambda n: (n.start, n.pitch))
    return notes


def _load_pypianoroll(path: str) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    from scipy.sparse import csc_matrix

    def bad(detail: str) -> DecodeError:
        return DecodeError(path, "not a pianoroll .npz", detail)

    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise bad(f"{type(exc).__name__}: {exc}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise bad("a single .npy array, not an .npz archive")
    with loaded:
        if "info.json" not in loaded.files:
            raise bad("no info.json member")
        try:
            meta = json.loads(bytes(loaded["info.json"]).decode("utf-8"))
            resolution = int(meta.get("resolution") or meta.get("beat_resolution") or 0)
            rolls, tracks, n_steps = [], [], 0
            while str(len(rolls)) in meta:
                key = f"pianoroll_{len(rolls)}_csc"
                track = meta[str(len(rolls))] or {}
                shape = tuple(int(v) for v in loaded[f"{key}_shape"])
                if len(shape) != 2 or shape[1] != 128:
                    raise bad(f"a track of shape {shape}, expected (n_steps, 128)")
                n_steps += shape[0]
                if n_steps > MAX_ROLL_STEPS:
                    raise DecodeError(
                        path,
                        "too long",
                        f"its tracks declare {n_steps} steps or more (at most {MAX_ROLL_STEPS}): a damaged shape?",
                    )
                matrix = csc_matrix(
                    (loaded[f"{key}_data"], loaded[f"{key}_indices"], loaded[f"{key}_indptr"]), shape=shape
                )
                rolls.append(_as_velocity(matrix.toarray()))
                tracks.append(
                    {
                        "name": str(track.get("name") or ""),
                        "program": int(track.get("program") or 0),
                        "is_drum": bool(track.get("is_drum") or False),
                    }
                )
            binary = [loaded[f"pianoroll_{i}_csc_data"].dtype == np.bool_ for i in range(len(rolls))]
            tempo_array = np.asarray(loaded["tempo"], np.float64) if "tempo" in loaded.files else None
            downbeat = np.asarray(loaded["downbeat"], bool) if "downbeat" in loaded.files else None
        except (KeyError, ValueError, TypeError, UnicodeDecodeError, AttributeError) as exc:
            raise bad(f"{type(exc).__name__}: {exc}") from None
    if resolution < 1:
        raise bad("info.json gives no resolution (or beat_resolution)")
    if not rolls:
        raise bad("no pianoroll_0_csc_* arrays")
    for r in rolls:
        if r.ndim != 2 or r.shape[1] != 128:
            raise bad(f"a track of shape {r.shape}, expected (n_steps, 128)")
    first = float(tempo_array[0]) if tempo_array is not None and tempo_array.size else DEFAULT_TEMPO
    info = {
        "name": str(meta.get("name") or ""),
        "resolution": resolution,
        "tempo": first if math.isfinite(first) and first > 0 else DEFAULT_TEMPO,
        "tempo_array": tempo_array,
        "downbeat": downbeat,
        "tracks": tracks,
        "is_binary": all(binary),
        "format": "pypianoroll-1.x" if "resolution" in meta else "pypianoroll-0.x",
    }
    return rolls, resolution, info


def _as_velocity(roll: np.ndarray) -> np.ndarray:
    if roll.dtype == np.bool_:
        return roll.astype(np.uint8) * np.uint8(BINARY_VELOCITY)
    return np.clip(np.nan_to_num(roll), 0, 127).astype(np.uint8)
