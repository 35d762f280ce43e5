"""Reading scores (MIDI, MusicXML, ABC, the music21 corpus) and pypianoroll .npz files."""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest

from cadenza.data.scores import (
    BINARY_VELOCITY,
    PartialScoreWarning,
    read_lpd_npz,
    read_lpd_roll,
    read_score,
    score_head,
)
from cadenza.errors import DecodeError

from ._build_corpora import lpd_tracks, write_lpd_v0, write_lpd_v1, write_midi


def note_list(midi: pretty_midi.PrettyMIDI) -> list[tuple[int, bool, int, float, float, int]]:
    return sorted(
        (int(inst.program), inst.is_drum, n.pitch, round(n.start, 4), round(n.end, 4), n.velocity)
        for inst in midi.instruments
        for n in inst.notes
    )


# ------------------------------------------------------------------------------- MIDI
def test_midi_round_trip(tmp_path: Path):
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)  # every time below is a whole tick
    violin = pretty_midi.Instrument(program=40, name="Violin")
    violin.notes = [pretty_midi.Note(80, 76, 0.0, 0.5), pretty_midi.Note(90, 74, 0.5, 1.25)]
    cello = pretty_midi.Instrument(program=42, name="Cello")
    cello.notes = [pretty_midi.Note(70, 48, 0.0, 1.25)]
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="Drums")
    drums.notes = [pretty_midi.Note(100, 36, t, t + 0.1) for t in (0.0, 0.5, 1.0)]
    pm.instruments = [violin, cello, drums]
    path = tmp_path / "trio.mid"
    pm.write(str(path))
    back = read_score(path)
    assert note_list(back) == note_list(pm)
    assert [(i.name, int(i.program), i.is_drum) for i in back.instruments] == [
        ("Violin", 40, False),
        ("Cello", 42, False),
        ("Drums", 0, True),
    ]


def test_midi_beyond_pretty_midis_tick_limit(tmp_path: Path):
    """music21 writes 10080 ticks a quarter; a long piece passes pretty_midi's 1e7-tick guard."""
    mid = mido.MidiFile(ticks_per_beat=10080)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    track.append(mido.Message("note_on", note=60, velocity=90, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=10080))
    track.append(mido.Message("note_on", note=62, velocity=90, time=1100 * 10080))  # after 1100 quarters
    track.append(mido.Message("note_off", note=62, velocity=0, time=3360))  # a triplet quarter
    mid.tracks.append(track)
    path = tmp_path / "long.mid"
    mid.save(path)
    with pytest.raises(ValueError, match="likely corrupt"):
        pretty_midi.PrettyMIDI(str(path))
    notes = read_score(path).instruments[0].notes
    assert [(n.pitch, round(n.start, 6), round(n.end, 6)) for n in notes] == [
        (60, 0.0, 0.5),
        (62, 550.5, round(550.5 + 1 / 6, 6)),
    ]


def test_midi_data_bytes_above_127_are_clipped(tmp_path: Path):
    path = write_midi(tmp_path / "loud.mid", [(60, 0.0, 0.5)])
    data = bytearray(path.read_bytes())
    at = data.index(bytes([0x90, 60, 100]))  # note_on, pitch 60, velocity 100
    data[at + 2] = 0xC8  # velocity 200: out of range, as some old sequencers wrote
    path.write_bytes(bytes(data))
    with pytest.raises((OSError, ValueError)):
        pretty_midi.PrettyMIDI(str(path))
    assert [n.velocity for n in read_score(path).instruments[0].notes] == [127]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.mid", b"", "empty file"),
        ("text.mid", b"These are not the notes you are looking for.\n", "not a MIDI file"),
        ("score.musicxml", b"<?xml version='1.0'?><score-partwise><part id=", "unparseable score"),
        ("notes.xml", b"just some words, not XML at all", "unparseable score"),
    ],
)
def test_malformed_files(tmp_path: Path, name: str, content: bytes, reason: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DecodeError) as info:
        read_score(path)
    assert info.value.reason == reason
    assert info.value.path == str(path)


def test_truncated_missing_and_silent_midi(tmp_path: Path):
    whole = write_midi(tmp_path / "whole.mid", [(60 + i % 12, i * 0.1, i * 0.1 + 0.1) for i in range(50)])
    data = whole.read_bytes()
    for n_bytes in (200, 201, 202, 203):  # cut inside an event at each of its bytes
        cut = tmp_path / f"cut{n_bytes}.mid"
        cut.write_bytes(data[:n_bytes])  # a download cut short: it was refused as "corrupt MIDI"
        with pytest.warns(
            PartialScoreWarning, match=rf"kept in part: track \d breaks off at byte \d+ of {n_bytes}"
        ):
            part = read_score(cut)
        kept, all_notes = note_list(part), note_list(read_score(whole))
        missing = [n for n in all_notes if n not in kept]
        assert 0 < len(kept) < 50 and set(kept) <= set(all_notes)
        assert max(n[3] for n in kept) <= min(n[3] for n in missing)  # the notes before the cut
    with pytest.raises(DecodeError, match="missing file"):
        read_score(tmp_path / "nowhere.mid")
    no_division = tmp_path / "division0.mid"
    no_division.write_bytes(
        data[:12] + b"\x00\x00" + data[14:]
    )  # was "ZeroDivisionError: float division by zero"
    with pytest.raises(DecodeError, match="corrupt MIDI.*0 ticks per beat"):
        read_score(no_division)
    silent = tmp_path / "silent.mid"
    pretty_midi.PrettyMIDI().write(str(silent))
    with pytest.raises(DecodeError, match="no notes"):
        read_score(silent)


def _smf(tracks: list[bytes], n_declared: int | None = None) -> bytes:
    n = len(tracks) if n_declared is None else n_declared
    head = (
        b"MThd"
        + (6).to_bytes(4, "big")
        + (1).to_bytes(2, "big")
        + n.to_bytes(2, "big")
        + (480).to_bytes(2, "big")
    )
    return head + b"".join(b"MTrk" + len(t).to_bytes(4, "big") + t for t in tracks)


#: Five quarter notes (running status inside) and the end of the track.
_NOTES = (
    b"".join(bytes([0, 0x90, p, 90, 0x83, 0x60, 0x80, p, 0]) for p in (60, 62, 64, 65, 67))
    + b"\x00\xff\x2f\x00"
)
_TEMPO = b"\x00\xff\x51\x03\x07\xa1\x20\x00\xff\x2f\x00"


@pytest.mark.parametrize(
    ("content", "n_notes", "note"),
    [
        (_smf([_TEMPO, _NOTES])[:-30], 2, "kept in part: track 2 breaks off"),  # cut in the last track
        (
            _smf([_TEMPO, _NOTES]).replace(len(_NOTES).to_bytes(4, "big"), (9999).to_bytes(4, "big")),
            5,
            "breaks off",
        ),
        (_smf([_TEMPO, _NOTES], n_declared=3), 5, "its header counts 3 tracks, the file holds 2"),
        (bytes(128) + _smf([_TEMPO, _NOTES]), 5, "128 bytes before its MIDI header passed over"),  # MacBinary
        (_smf([_TEMPO, _NOTES]) + b"\x00\xffjunk" * 10, 5, None),  # bytes after the last track: as before
    ],
    ids=["cut", "length-past-the-end", "fewer-tracks", "macbinary", "trailing-bytes"],
)
def test_a_damaged_midi_file_keeps_what_parses_and_says_what_was_wrong(tmp_path, content, n_notes, note):
    path = tmp_path / "damaged.mid"
    path.write_bytes(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        midi = read_score(path)
    notes = [n.pitch for inst in midi.instruments for n in inst.notes]
    assert notes == [60, 62, 64, 65, 67][:n_notes]
    said = [str(w.message) for w in caught if issubclass(w.category, PartialScoreWarning)]
    assert (said == []) if note is None else (len(said) == 1 and note in said[0]), said


def test_a_whole_midi_file_is_read_as_it_is(tmp_path: Path):
    # running status across a meta event, as mido reads it, and a system-exclusive event
    from cadenza.data.scores import _mend_tracks

    track = (
        b"\x00\xf0\x03\x7e\x7f\xf7"  # a system-exclusive event
        + b"\x00\x90\x3c\x50"  # note on, then running status
        + b"\x00\xff\x01\x03abc"  # a text meta event
        + b"\x83\x60\x3c\x00"  # note off by velocity 0, on the running status
        + b"\x00\xff\x2f\x00"
    )
    data = _smf([_TEMPO, track])
    assert _mend_tracks(data) == (data, "")
    (tmp_path / "ok.mid").write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialScoreWarning)
        assert [n.pitch for n in read_score(tmp_path / "ok.mid").instruments[0].notes] == [60]


def test_a_midi_file_without_tracks_has_no_notes(tmp_path: Path):
    (tmp_path / "empty.mid").write_bytes(_smf([]))
    with pytest.raises(DecodeError, match="no notes") as info:
        read_score(tmp_path / "empty.mid")
    assert info.value.detail == "no track"


def test_prepare_notes_a_midi_file_kept_in_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from cadenza.data import prepare_corpus

    monkeypatch.setenv("CADENZA_CACHE", str(tmp_path / "cache"))

    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "cut.mid").write_bytes(_smf([_TEMPO, _NOTES])[:-30])
    (tmp_path / "music" / "whole.mid").write_bytes(_smf([_TEMPO, _NOTES]))
    summary = prepare_corpus(
        str(tmp_path / "music"), tmp_path / "rolls", representation="pianoroll", progress=False
    )
    assert summary.n_ok == 2
    records = {
        r["id"]: r for r in map(json.loads, (tmp_path / "rolls" / "manifest.jsonl").read_text().splitlines())
    }
    assert records["cut.mid"]["warning"].startswith("kept in part: track 2 breaks off")
    assert "warning" not in records["whole.mid"]
    # rendered for an audio store, then read from the render cache for a second: noted in both
    for name in ("wave", "wave-again"):
        prepare_corpus(str(tmp_path / "music"), tmp_path / name, representation="waveform", progress=False)
        lines = (tmp_path / name / "manifest.jsonl").read_text().splitlines()
        records = {r["id"]: r for r in map(json.loads, lines)}
        assert records["cut.mid"]["warning"].startswith("kept in part: track 2 breaks off"), name


def test_notes_that_end_at_the_tick_they_start_are_kept_one_tick_long(tmp_path: Path):
    """A drum machine's hits (note-off at the note-on's tick): pretty_midi kept each open until
    the next note-off of its pitch, so a file of them had 'no notes', and repeated hits of one
    pitch were held from hit to hit."""
    mid = mido.MidiFile(type=0, ticks_per_beat=480)
    track = mido.MidiTrack()
    for i, pitch in enumerate((60, 62, 64, 60, 60)):
        track.append(mido.Message("note_on", note=pitch, velocity=90, time=0 if i == 0 else 480))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=0))
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid.tracks.append(track)
    mid.save(tmp_path / "hits.mid")
    notes = sorted(read_score(tmp_path / "hits.mid").instruments[0].notes, key=lambda n: n.start)
    assert [n.pitch for n in notes] == [60, 62, 64, 60, 60]
    assert [round(n.start, 6) for n in notes] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert all(0 < n.end - n.start < 0.002 for n in notes)  # one tick: 1/960 s at 120 bpm


def test_midi_of_smpte_division_is_timed_in_seconds(tmp_path: Path):
    """A division of 25 frames a second, 40 ticks each: 1000 ticks a second, whatever the tempo
    events say (mido reads the division as 59176 ticks a beat; pretty_midi then failed)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=500_000))
    for i, pitch in enumerate((60, 64, 67)):
        track.append(mido.Message("note_on", note=pitch, velocity=90, time=0 if i == 0 else 250))
        if i == 1:
            track.append(mido.MetaMessage("set_tempo", tempo=250_000, time=100))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=500 if i != 1 else 400))
    mid.tracks.append(track)
    mid.save(tmp_path / "smpte.mid")
    data = bytearray((tmp_path / "smpte.mid").read_bytes())
    data[12:14] = bytes([0x100 - 25, 40])
    (tmp_path / "smpte.mid").write_bytes(bytes(data))
    notes = read_score(tmp_path / "smpte.mid").instruments[0].notes
    assert [(n.pitch, round(n.start, 6), round(n.end, 6)) for n in notes] == [
        (60, 0.0, 0.5),
        (64, 0.75, 1.25),
        (67, 1.5, 2.0),
    ]


def test_a_type_2_file_plays_its_patterns_one_after_another(tmp_path: Path):
    """Type 2 (a drum machine's or old sequencer's patterns) was refused as 'corrupt MIDI'. Its
    tracks are heard in turn, each at its own tempo; a program change goes on into the next."""
    mid = mido.MidiFile(type=2, ticks_per_beat=480)
    for pitches, tempo, program in (((60, 62), 500_000, 40), ((67, 69, 71), 250_000, None)):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("set_tempo", tempo=tempo))
        if program is not None:
            track.append(mido.Message("program_change", program=program))
        for pitch in pitches:
            track.append(mido.Message("note_on", note=pitch, velocity=90))
            track.append(mido.Message("note_off", note=pitch, velocity=0, time=480))
        track.append(mido.MetaMessage("end_of_track", time=480))  # a beat of rest closes each pattern
        mid.tracks.append(track)
    mid.save(tmp_path / "patterns.mid")
    midi = read_score(tmp_path / "patterns.mid")
    assert [(p, s, e) for prog, _, p, s, e, _ in note_list(midi)] == [
        (60, 0.0, 0.5),
        (62, 0.5, 1.0),
        (67, 1.5, 1.75),  # after the first pattern's closing rest (0.5 s), at twice the tempo
        (69, 1.75, 2.0),
        (71, 2.0, 2.25),
    ]
    assert {inst.program for inst in midi.instruments} == {40}


def test_score_head_keeps_what_sounds_before_the_cut():
    pm = pretty_midi.PrettyMIDI(initial_tempo=100)
    violin, drums = pretty_midi.Instrument(program=40), pretty_midi.Instrument(program=0, is_drum=True)
    violin.notes += [
        pretty_midi.Note(80, 67, 0.5, 3.0),
        pretty_midi.Note(80, 69, 2.0, 2.5),
        pretty_midi.Note(80, 71, 5, 6),
    ]
    drums.notes += [pretty_midi.Note(100, 36, t, t + 0.1) for t in np.arange(0.0, 6.0, 0.5)]
    violin.control_changes += [pretty_midi.ControlChange(7, 100, 0.0), pretty_midi.ControlChange(7, 20, 4.0)]
    pm.instruments += [violin, drums]
    head = score_head(pm, 2.2)
    assert [(n.pitch, n.start, n.end) for n in head.instruments[0].notes] == [
        (67, 0.5, 2.2),
        (69, 2.0, 2.2),
    ]
    assert head.instruments[1].is_drum and len(head.instruments[1].notes) == 5  # 0.0 ... 2.0
    assert [c.time for c in head.instruments[0].control_changes] == [0.0]
    assert head.get_end_time() == pytest.approx(2.2) and pm.get_end_time() == pytest.approx(6.0)  # pm kept
    assert score_head(pm, 60.0) is pm


def test_mxl_archive_without_musicxml_says_so(tmp_path: Path):
    path = tmp_path / "score.mxl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "no score here")
    with pytest.raises(DecodeError) as info:
        read_score(path)
    assert info.value.reason == "unparseable score"
    assert info.value.detail == "an .mxl archive without MusicXML inside (readme.txt)"


# ---------------------------------------------------------------------------- music21
def test_music21_chorale_from_the_corpus():
    import music21

    midi = read_score(music21.corpus.getWork("bach/bwv66.6"))
    assert [inst.name for inst in midi.instruments] == ["Soprano", "Alto", "Tenor", "Bass"]
    assert all(int(inst.program) == 0 for inst in midi.instruments)  # no instrument: piano
    assert all(len(inst.notes) > 30 for inst in midi.instruments)
    assert 15 < midi.get_end_time() < 40
    assert midi.resolution <= 960  # not music21's 10080 ticks a quarter


def test_musicxml_keeps_part_programs(tmp_path: Path):
    from music21 import instrument, meter, note, stream

    score = stream.Score()
    for inst, pitches in (
        (instrument.Violin(), ["E5", "D5", "C5"]),
        (instrument.Violoncello(), ["C3"]),
        (None, ["G4"]),
    ):
        part = stream.Part()
        if inst is not None:
            part.insert(0, inst)
        part.append(meter.TimeSignature("3/4"))
        for p in pitches:
            part.append(note.Note(p, quarterLength=3 / len(pitches)))
        score.insert(0, part)
    path = tmp_path / "trio.musicxml"
    score.write("musicxml", fp=str(path))
    midi = read_score(path)
    assert [int(i.program) for i in midi.instruments] == [40, 42, 0]
    assert [n.pitch for n in midi.instruments[0].notes] == [76, 74, 72]


@pytest.mark.parametrize(
    ("codec", "bom", "declared"),
    [
        ("utf-16", b"", True),
        ("utf-16-le", b"", True),
        ("utf-16-be", b"\xfe\xff", True),
        ("utf-32", b"", True),  # music21 alone: "encoding specified in XML declaration is incorrect"
        ("utf-16", b"", False),  # re-saved as "Unicode" by an editor, still declaring UTF-8: the same
    ],
)
def test_musicxml_in_utf_16_or_32_is_read(tmp_path: Path, codec: str, bom: bytes, declared: bool):
    from music21 import meter, note, stream

    part = stream.Part()
    part.append(meter.TimeSignature("2/4"))
    for p in ("C4", "E4", "G4", "C5"):
        part.append(note.Note(p, quarterLength=0.5))
    plain = tmp_path / "plain.musicxml"
    stream.Score([part]).write("musicxml", fp=str(plain))
    text = plain.read_text(encoding="utf-8")
    name = codec.split("-")[0].upper() + "-" + codec.split("-")[1]
    wide = tmp_path / "wide.xml"
    if declared:
        text = text.replace("UTF-8", name, 1).replace("utf-8", name, 1)
    wide.write_bytes(bom + text.encode(codec))
    assert note_list(read_score(wide)) == note_list(read_score(plain))
    assert [n.pitch for n in read_score(wide).instruments[0].notes] == [60, 64, 67, 72]


def test_abc_tune_book_plays_its_tunes_in_turn(tmp_path: Path):
    path = tmp_path / "book.abc"
    path.write_text(
        "X:1\nT:First\nM:4/4\nL:1/4\nQ:1/4=120\nK:C\nCDEF|GABc|]\n\n"
        "X:2\nT:Second\nM:4/4\nL:1/4\nQ:1/4=120\nK:G\nGABc|dcBA|G4|]\n"
    )
    notes = sorted((n.start, n.pitch) for inst in read_score(path).instruments for n in inst.notes)
    assert len(notes) == 8 + 9
    assert notes[0] == (0.0, 60) and notes[8][1] == 67  # the second tune starts after the first
    assert notes[8][0] == pytest.approx(4.0, abs=0.01)


# ---------------------------------------------------------------------- piano rolls
def merged(tracks) -> np.ndarray:
    rolls = [
        r.astype(np.uint8) * BINARY_VELOCITY if r.dtype == np.bool_ else r
        for _, _, drum, r in tracks
        if not drum
    ]
    return np.maximum.reduce(rolls)


@pytest.mark.parametrize(
    "writer", [write_lpd_v0, write_lpd_v1], ids=["pypianoroll-0.x", "pypianoroll-installed"]
)
def test_lpd_roll_equals_what_was_written(tmp_path: Path, writer):
    tracks = lpd_tracks()
    path = writer(tmp_path / "song.npz", tracks, tempo=100.0)
    roll, resolution, info = read_lpd_roll(path)
    assert roll.dtype == np.uint8 and roll.shape == (96, 128)
    assert np.array_equal(roll, merged(tracks))
    assert resolution == 24 and info["tempo"] == 100.0 and info["is_binary"]
    assert info["format"] == ("pypianoroll-0.x" if writer is write_lpd_v0 else "pypianoroll-1.x")
    assert [(t["name"], t["program"], t["is_drum"]) for t in info["tracks"]] == [
        (n, p, d) for n, p, d, _ in tracks
    ]
    per_track, _, _ = read_lpd_roll(path, merge=False)
    assert per_track.shape == (5, 96, 128)
    assert all(np.array_equal(per_track[i] > 0, r) for i, (*_, r) in enumerate(tracks))


def test_lpd_velocity_track_and_other_resolution(tmp_path: Path):
    velocity = np.zeros((40, 128), np.uint8)
    velocity[4:10, 50] = 90
    velocity[10:16, 50] = 30  # the same pitch held on at another velocity: one note
    path = write_lpd_v1(tmp_path / "v.npz", [("Lead", 81, False, velocity)], resolution=4, tempo=150.0)
    roll, resolution, _ = read_lpd_roll(path)
    assert resolution == 4 and np.array_equal(roll, velocity)
    midi = read_lpd_npz(path)
    (note,) = midi.instruments[0].notes
    step = 60 / (150 * 4)
    assert (note.pitch, note.velocity) == (50, 60)
    assert note.start == pytest.approx(4 * step) and note.end == pytest.approx(16 * step)
    assert int(midi.instruments[0].program) == 81


def test_lpd_npz_notes_fall_on_the_steps(tmp_path: Path):
    tracks = lpd_tracks()
    path = write_lpd_v0(tmp_path / "song.npz", tracks, tempo=100.0)
    midi = read_lpd_npz(path)
    step = 60 / (100 * 24)
    assert [i.name for i in midi.instruments] == ["Drums", "Piano", "Guitar", "Bass", "Strings"]
    assert midi.instruments[0].is_drum and int(midi.instruments[3].program) == 32
    piano = sorted(
        (n.pitch, round(n.start / step, 6), round(n.end / step, 6)) for n in midi.instruments[1].notes
    )
    assert piano == [(60, 0, 24), (64, 0, 24), (67, 0, 24), (72, 24, 30)]
    assert len(midi.instruments[0].notes) == 8 and not midi.instruments[2].notes
    assert midi.get_tempo_changes()[1][0] == pytest.approx(100.0)
    # back to a roll: the same steps
    for inst, (*_, r) in zip(midi.instruments, tracks):
        if inst.is_drum:
            continue
        again = np.zeros_like(r)
        for n in inst.notes:
            again[round(n.start / step) : round(n.end / step), n.pitch] = True
        assert np.array_equal(again, r)


def test_not_a_pianoroll(tmp_path: Path):
    text = tmp_path / "text.npz"
    text.write_text("hello")
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    single = tmp_path / "single.npz"
    np.save(single, np.zeros(3))
    single = single.with_suffix(".npz.npy")
    no_tracks = tmp_path / "no_tracks.npz"
    np.savez(no_tracks, tempo=np.full(4, 120.0))
    with zipfile.ZipFile(no_tracks, "a") as zf:
        zf.writestr("info.json", '{"resolution": 24, "name": ""}')
    for path in (text, plain, single, no_tracks):
        with pytest.raises(DecodeError) as info:
            read_lpd_npz(path)
        assert info.value.reason == "not a pianoroll .npz", path
    silent = write_lpd_v0(tmp_path / "silent.npz", [("Piano", 0, False, np.zeros((8, 128), bool))])
    assert read_lpd_roll(silent)[0].shape == (8, 128)
    with pytest.raises(DecodeError, match="no notes"):
        read_lpd_npz(silent)


def test_an_npz_declaring_a_huge_roll_is_refused_before_it_is_made(tmp_path: Path):
    """A 1 KB file once asked for its declared shape: 2**23 steps took 50 s and 4 GB, larger ones all memory."""
    path = tmp_path / "bomb.npz"
    arrays = {
        "pianoroll_0_csc_data": np.ones(1, bool),
        "pianoroll_0_csc_indices": np.zeros(1, np.int32),
        "pianoroll_0_csc_indptr": np.r_[0, np.ones(128, np.int32)],
        "pianoroll_0_csc_shape": np.array([2**40, 128]),
    }
    np.savez_compressed(path, **arrays)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("info.json", json.dumps({"beat_resolution": 24, "0": {"program": 0, "name": "Piano"}}))
    with pytest.raises(DecodeError) as info:
        read_lpd_roll(path)
    assert info.value.reason == "too long" and "declare" in info.value.detail


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.77])
def test_a_musicxml_file_cut_short_keeps_its_whole_measures(tmp_path, fraction):
    """A MusicXML download that broke off was "unparseable score" (expat: "unclosed token", "no
    element found"); the measures before the cut are kept, with a note, as a cut MIDI file's are."""
    import music21

    archive = zipfile.ZipFile(music21.corpus.getWork("bach/bwv66.6"))
    name = next(n for n in archive.namelist() if n.endswith(".xml") and not n.startswith("META"))
    data = archive.read(name)
    whole, cut = tmp_path / "whole.musicxml", tmp_path / "cut.musicxml"
    whole.write_bytes(data)
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.warns(
        PartialScoreWarning, match=r"kept in part: the score breaks off in part P\d after measure \d+"
    ):
        part = read_score(cut)
    full = read_score(whole)
    assert 0 < len(part.instruments) <= len(full.instruments)
    for got, want in zip(part.instruments, full.instruments):  # each part kept: the full one's start
        got_notes = [(n.pitch, n.start, n.end) for n in got.notes]
        assert got_notes == [(n.pitch, n.start, n.end) for n in want.notes][: len(got_notes)]
    assert sum(len(i.notes) for i in part.instruments) < sum(len(i.notes) for i in full.instruments)
    assert len(part.instruments[0].notes) == len(full.instruments[0].notes)  # the first part is whole
    (tmp_path / "nothing.musicxml").write_bytes(data[:300])  # no measure ends before the cut
    with pytest.raises(DecodeError, match="unparseable score"):
        read_score(tmp_path / "nothing.musicxml")


def test_a_musicxml_duration_past_any_music_is_too_long_not_a_damaged_translation(tmp_path):
    """One <duration> of 999999999 was translated to MIDI delta times past MIDI's limit and read
    as "kept in part: track 2 breaks off at byte 78", a note about a file the user never had."""
    import re

    import music21

    archive = zipfile.ZipFile(music21.corpus.getWork("bach/bwv66.6"))
    name = next(n for n in archive.namelist() if n.endswith(".xml") and not n.startswith("META"))
    text = archive.read(name).decode("utf-8")
    path = tmp_path / "typo.musicxml"
    path.write_text(re.sub(r"<duration>\d+</duration>", "<duration>999999999</duration>", text, count=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialScoreWarning)
        with pytest.raises(
            DecodeError, match=r"too long \(its last note or rest ends 500,000,035 quarter notes in"
        ):
            read_score(path)


@pytest.mark.parametrize("fraction", [0.5, 0.67, 0.99])
def test_an_mxl_archive_cut_short_keeps_its_whole_measures(tmp_path, fraction):
    """A compressed MusicXML (.mxl) download that broke off has lost its zip index (at the end of
    the file), so no zip reader opens it: it was "unparseable score" (music21 then read the zip as
    XML: "not well-formed"). Its score is decompressed from the member's own header as far as it
    goes, and its whole measures are kept as a cut .musicxml file's are."""
    import io

    import music21

    archive = zipfile.ZipFile(music21.corpus.getWork("bach/bwv66.6"))
    name = next(n for n in archive.namelist() if n.endswith(".xml") and not n.startswith("META"))
    data = archive.read(name)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as out:  # as notation programs write it
        out.writestr(
            "META-INF/container.xml",
            '<container><rootfiles><rootfile full-path="score.xml"/></rootfiles></container>',
        )
        out.writestr("score.xml", data)
    whole, cut = tmp_path / "whole.mxl", tmp_path / "cut.mxl"
    whole.write_bytes(packed.getvalue())
    cut.write_bytes(packed.getvalue()[: int(len(packed.getvalue()) * fraction)])
    full = read_score(whole)
    if fraction == 0.99:  # only the index is gone: the score is whole, and nothing is said
        with warnings.catch_warnings():
            warnings.simplefilter("error", PartialScoreWarning)
            part = read_score(cut)
        assert [len(i.notes) for i in part.instruments] == [len(i.notes) for i in full.instruments]
        return
    with pytest.warns(
        PartialScoreWarning, match=r"breaks off in part P\d after measure \d+.*\.mxl archive cut short"
    ):
        part = read_score(cut)
    for got, want in zip(part.instruments, full.instruments):
        got_notes = [(n.pitch, n.start, n.end) for n in got.notes]
        assert got_notes == [(n.pitch, n.start, n.end) for n in want.notes][: len(got_notes)]
    assert 0 < sum(len(i.notes) for i in part.instruments) < sum(len(i.notes) for i in full.instruments)
    start = packed.getvalue().index(b"PK\x03\x04", 4) + 30 + len("score.xml")  # the score's first byte
    for n_bytes, said in ((start + 200, "with no whole measure"), (start - 10, "before its score")):
        (tmp_path / "nothing.mxl").write_bytes(packed.getvalue()[:n_bytes])
        with pytest.raises(
            DecodeError, match=rf"an \.mxl archive cut short, {said}|an \.mxl archive cut short {said}"
        ):
            read_score(tmp_path / "nothing.mxl")


def test_a_musicxml_score_no_reader_can_time_says_why(tmp_path):
    """<divisions>0 was "unparseable score (ZeroDivisionError: float division by zero)" and a
    negative <duration> "MIDI translation: TranslateException: got a negative delta time"."""
    import music21

    archive = zipfile.ZipFile(music21.corpus.getWork("bach/bwv66.6"))
    name = next(n for n in archive.namelist() if n.endswith(".xml") and not n.startswith("META"))
    text = archive.read(name).decode("utf-8")
    (tmp_path / "div0.musicxml").write_text(
        re.sub(r"<divisions>\d+</divisions>", "<divisions>0</divisions>", text)
    )
    (tmp_path / "neg.musicxml").write_text(
        re.sub(r"<duration>\d+</duration>", "<duration>-5</duration>", text, count=1)
    )
    with pytest.raises(DecodeError, match=r"unparseable score \(its <divisions> is 0, so no note's length"):
        read_score(tmp_path / "div0.musicxml")
    with pytest.raises(DecodeError, match=r"negative length \(<duration>-5</duration>\)"):
        read_score(tmp_path / "neg.musicxml")


def test_a_tempo_of_zero_is_taken_as_the_tempo_before_it(tmp_path):
    """A tempo event of 0 microseconds a beat (a beat of no time; a damaged or hand-made file) was
    "corrupt MIDI: ZeroDivisionError: float division by zero": the whole file lost. It is taken
    as the tempo before it (120 bpm before any), with a note."""
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=0, time=0))  # 120 bpm in its place
    for k in range(4):
        track += [
            mido.Message("note_on", note=60 + k, velocity=80, time=0),
            mido.Message("note_off", note=60 + k, time=480),
        ]
    track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))  # 60 bpm
    track += [
        mido.Message("note_on", note=70, velocity=80, time=0),
        mido.Message("note_off", note=70, time=480),
    ]
    track.append(mido.MetaMessage("set_tempo", tempo=0, time=0))  # 60 bpm goes on
    track += [
        mido.Message("note_on", note=72, velocity=80, time=0),
        mido.Message("note_off", note=72, time=480),
    ]
    mid = mido.MidiFile(ticks_per_beat=480)
    mid.tracks.append(track)
    mid.save(tmp_path / "tempo0.mid")
    with pytest.warns(PartialScoreWarning, match="mended: 2 tempo events of 0 µs a beat"):
        score = read_score(tmp_path / "tempo0.mid")
    starts = [round(n.start, 6) for n in score.instruments[0].notes]
    assert starts == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0] and score.instruments[0].notes[-1].end == pytest.approx(
        4.0
    )
