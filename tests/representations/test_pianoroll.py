"""Piano rolls: known values on hand-built scores, tempo changes, cropping, and exactness."""

from __future__ import annotations

import io

import mido
import numpy as np
import pretty_midi
import pytest

from cadenza.errors import ParameterError
from cadenza.representations import PianoRoll


def _score(notes, *, tempo=120.0, is_drum=False, resolution=220):
    """A PrettyMIDI with one instrument of ``(pitch, start_beat, end_beat)`` notes at ``tempo``."""
    midi = pretty_midi.PrettyMIDI(resolution=resolution, initial_tempo=tempo)
    inst = pretty_midi.Instrument(program=0, is_drum=is_drum)
    beat = 60.0 / tempo
    inst.notes = [pretty_midi.Note(velocity=80, pitch=p, start=a * beat, end=b * beat) for p, a, b in notes]
    midi.instruments.append(inst)
    return midi


def _tempo_change_file() -> pretty_midi.PrettyMIDI:
    """A real MIDI file (written with mido): 120 bpm for two beats, then 60 bpm.

    Notes, in beats: C4 0-1, D4 2-3 (lasts a whole second at 60 bpm), E4 3-4.
    """
    tpb = 480
    conductor = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=500000, time=0),
            mido.MetaMessage("set_tempo", tempo=1000000, time=2 * tpb),
        ]
    )
    events = [(0, "note_on", 60), (1, "note_off", 60), (2, "note_on", 62), (3, "note_off", 62)]
    events += [(3, "note_on", 64), (4, "note_off", 64)]
    piano, now = mido.MidiTrack(), 0
    for beat, kind, pitch in events:
        piano.append(mido.Message(kind, note=pitch, velocity=80, time=beat * tpb - now))
        now = beat * tpb
    file = mido.MidiFile(ticks_per_beat=tpb)
    file.tracks += [conductor, piano]
    buffer = io.BytesIO()
    file.save(file=buffer)
    buffer.seek(0)
    return pretty_midi.PrettyMIDI(buffer)


def _runs(column: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of on-steps."""
    edges = np.diff(np.pad(column.astype(np.int8), 1))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def test_quarter_note_is_24_steps():
    rep = PianoRoll()
    roll = rep.encode(_score([(60, 0, 1)]))
    assert roll.shape == (96, 128) and roll.dtype == np.uint8
    assert _runs(roll[:, 60]) == [(0, 24)]
    assert roll.sum() == 24
    assert rep.frame_rate == 24.0 and rep.steps_per_bar == 96 and rep.n_features == 128


def test_tempo_change_keeps_24_steps_per_beat():
    midi = _tempo_change_file()
    assert len(midi.get_tempo_changes()[0]) == 2
    roll = PianoRoll().encode(midi)
    assert _runs(roll[:, 60]) == [(0, 24)]
    assert _runs(roll[:, 62]) == [(48, 72)]  # one beat, although it lasts twice as long in seconds
    assert _runs(roll[:, 64]) == [(72, 96)]
    assert roll.shape == (96, 128)


def test_step_conversion_matches_time_to_tick():
    midi = _tempo_change_file()
    rep = PianoRoll()
    times = np.array(
        [n.start for n in midi.instruments[0].notes] + [n.end for n in midi.instruments[0].notes]
    )
    ticks = np.array([midi.time_to_tick(t) for t in times])
    expected = np.floor(ticks * 24 / midi.resolution + 0.5).astype(int)
    np.testing.assert_array_equal(rep._seconds_to_steps(midi, times), expected)


def test_installed_pretty_midi_takes_the_fast_path():
    """Fails loudly when a pretty_midi release renames or reshapes its private ``_tick_scales``."""
    from cadenza.representations import pianoroll

    midi = _tempo_change_file()
    scales = pianoroll._tempo_map(midi)
    assert scales is not None, (
        f"pretty_midi {pretty_midi.__version__} changed PrettyMIDI._tick_scales "
        f"({type(getattr(midi, '_tick_scales', None)).__name__}); PianoRoll.encode now converts "
        "note times one by one through midi.time_to_tick: update _tempo_map in pianoroll.py"
    )
    # 120 bpm from tick 0, 60 bpm from beat 2, at 480 ticks per beat.
    np.testing.assert_allclose(scales, [[0, 0.5 / 480], [960, 1.0 / 480]])


@pytest.mark.parametrize(
    "broken",
    [None, "missing", [], [(0.0, 0.001, 1.0)], [(5, 0.001)], [(0, 0.001), (0, -1.0)], [(0, float("nan"))]],
)
def test_tempo_map_refuses_what_it_does_not_expect(broken):
    from types import SimpleNamespace

    from cadenza.representations import pianoroll

    midi = SimpleNamespace() if broken == "missing" else SimpleNamespace(_tick_scales=broken)
    assert pianoroll._tempo_map(midi) is None


def test_fallback_through_time_to_tick_gives_the_same_steps(monkeypatch):
    from cadenza.representations import pianoroll

    midi = _tempo_change_file()
    rep = PianoRoll()
    times = np.random.default_rng(0).uniform(0.0, 6.0, 500)
    times = np.concatenate(
        [times, [0.0, 1.0, 1.0 + 1e-9, 2.5, 7.5], [n.end for n in midi.instruments[0].notes]]
    )
    fast = rep._seconds_to_steps(midi, times)
    roll = rep.encode(midi)

    calls = []
    real_time_to_tick = midi.time_to_tick
    monkeypatch.setattr(midi, "time_to_tick", lambda t: (calls.append(t), real_time_to_tick(t))[1])
    monkeypatch.setattr(pianoroll, "_tempo_map", lambda midi: None)  # as if pretty_midi had changed
    np.testing.assert_array_equal(rep._seconds_to_steps(midi, times), fast)
    assert len(calls) == len(times)
    np.testing.assert_array_equal(rep.encode(midi), roll)


def test_lpd_crop_drops_and_counts_out_of_range_notes():
    rep = PianoRoll(lowest_pitch=24, n_pitches=84)
    roll, info = rep.encode_with_info(_score([(10, 0, 1), (60, 0, 1), (107, 1, 2), (108, 1, 2)]))
    assert roll.shape == (96, 84)
    assert info == {"n_notes": 2, "n_dropped_out_of_range": 2, "n_drum_notes": 0, "n_steps": 96}
    assert _runs(roll[:, 60 - 24]) == [(0, 24)] and _runs(roll[:, 107 - 24]) == [(24, 48)]
    assert roll.sum() == 48


def test_drums_are_left_out_unless_asked():
    midi = _score([(60, 0, 1)])
    midi.instruments.append(_score([(36, 0, 1), (38, 1, 2)], is_drum=True).instruments[0])
    roll, info = PianoRoll().encode_with_info(midi)
    assert roll[:, 36].sum() == 0 and info["n_drum_notes"] == 2 and info["n_notes"] == 1
    roll, info = PianoRoll(include_drums=True).encode_with_info(midi)
    assert roll[:, 36].sum() == 24 and info["n_drum_notes"] == 0 and info["n_notes"] == 3


def test_instruments_merge_and_length_pads_to_whole_bars():
    midi = _score([(60, 0, 1)])
    midi.instruments.append(_score([(64, 4, 5.5)]).instruments[0])
    roll = PianoRoll().encode(midi)
    assert roll.shape == (192, 128)  # a note in bar 2 gives two bars
    assert _runs(roll[:, 64]) == [(96, 132)]
    assert PianoRoll(beats_per_bar=3).encode(midi).shape == (144, 128)  # 132 steps -> two 72-step bars


def test_repeated_notes_keep_a_gap_at_the_re_onset():
    # Touching repeats, an overlapping repeat, and a one-step note followed by the same pitch.
    midi = _score([(60, 0, 1), (60, 1, 2), (62, 0, 2), (62, 1, 1.5), (64, 0, 1 / 24), (64, 1 / 24, 1)])
    roll = PianoRoll().encode(midi)
    assert _runs(roll[:, 60]) == [(0, 23), (24, 48)]
    assert _runs(roll[:, 62]) == [(0, 23), (24, 48)]
    assert _runs(roll[:, 64]) == [(0, 24)]  # a one-step note cannot give up its only step: they merge
    notes = PianoRoll().decode(roll).instruments[0].notes
    assert sum(n.pitch == 60 for n in notes) == 2


def test_very_short_notes_get_one_step_and_rounding():
    beat = 0.5
    midi = _score([(60, 0, 0)])
    midi.instruments[0].notes.append(
        pretty_midi.Note(velocity=80, pitch=62, start=0.3 / 24 * beat, end=0.4 / 24 * beat)
    )
    midi.instruments[0].notes.append(
        pretty_midi.Note(velocity=80, pitch=64, start=0.6 / 24 * beat, end=1.4 / 24 * beat)
    )
    roll = PianoRoll().encode(midi)
    assert (
        _runs(roll[:, 60]) == [(0, 1)] and _runs(roll[:, 62]) == [(0, 1)] and _runs(roll[:, 64]) == [(1, 2)]
    )


def test_a_long_score_is_encoded_in_a_few_bytes_a_cell():
    # bincount's int64 onsets, offsets, their difference and its sum took 32 bytes for each
    # cell of the roll: 1.4 GB for a 2-hour MIDI file (per prepare worker); 5 bytes now.
    import tracemalloc

    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    inst = pretty_midi.Instrument(program=0)
    inst.notes += [pretty_midi.Note(80, 40 + i % 48, 0.5 * i, 0.5 * i + 0.4) for i in range(1200)]  # 10 min
    midi.instruments.append(inst)
    tracemalloc.start()
    try:
        roll, info = PianoRoll().encode_with_info(midi)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert roll.dtype == np.uint8 and roll.shape == (28800, 128) and info["n_notes"] == 1200
    assert set(np.unique(roll).tolist()) == {0, 1} and int(roll.sum()) == 1200 * 19  # 0.4 s: 19.2 steps
    assert peak < 8 * roll.size, peak / roll.size


def test_decode_writes_one_piano_with_runs_as_notes():
    rep = PianoRoll(tempo=90.0)
    roll = np.zeros((96, 128), dtype=np.uint8)
    roll[0:24, 60] = 1
    roll[24:30, 60] = 1  # contiguous with the first run: one note
    roll[48:60, 67] = 1
    midi = rep.decode(roll)
    assert len(midi.instruments) == 1 and midi.instruments[0].program == 0 and not midi.instruments[0].is_drum
    step = 60.0 / (90.0 * 24)
    got = [(n.pitch, n.velocity) for n in midi.instruments[0].notes]
    assert got == [(60, 100), (67, 100)]
    times = [t for n in midi.instruments[0].notes for t in (n.start, n.end)]
    assert times == pytest.approx([0.0, 30 * step, 48 * step, 60 * step])
    assert midi.get_tempo_changes()[1].tolist() == pytest.approx([90.0])
    assert midi.get_end_time() == pytest.approx(96 * step)


@pytest.mark.parametrize(
    "params",
    [{}, {"lowest_pitch": 24, "n_pitches": 84}, {"resolution": 4, "beats_per_bar": 3, "tempo": 73.5}],
)
@pytest.mark.parametrize("seed", range(4))
def test_decode_then_encode_is_exact(params, seed):
    rep = PianoRoll(**params)
    rng = np.random.default_rng(seed)
    n_bars = int(rng.integers(1, 5))
    roll = (rng.random((n_bars * rep.steps_per_bar, rep.n_pitches)) < rng.uniform(0.005, 0.3)).astype(
        np.uint8
    )
    roll[-rep.steps_per_bar :] = 0  # a silent last bar must survive too
    roll[0, :] = 1  # notes at the very start, on every pitch
    np.testing.assert_array_equal(rep.encode(rep.decode(roll)), roll)


def test_decoded_file_round_trips_through_disk(tmp_path):
    rep = PianoRoll()
    roll = (np.random.default_rng(9).random((192, 128)) < 0.05).astype(np.uint8)
    path = tmp_path / "roll.mid"
    rep.decode(roll).write(str(path))
    np.testing.assert_array_equal(rep.encode(pretty_midi.PrettyMIDI(str(path))), roll)


def test_empty_score_and_bars_view():
    rep = PianoRoll()
    assert rep.encode(pretty_midi.PrettyMIDI()).shape == (0, 128)
    roll = np.zeros((192, 128), dtype=np.uint8)
    bars = rep.bars(roll)
    assert bars.shape == (2, 96, 128) and np.shares_memory(bars, roll)
    with pytest.raises(ParameterError):
        rep.bars(np.zeros((100, 128), dtype=np.uint8))
    with pytest.raises(ParameterError):
        rep.bars(np.zeros((96, 84), dtype=np.uint8))


@pytest.mark.parametrize(
    "params",
    [
        {"resolution": 0},
        {"n_pitches": 0},
        {"lowest_pitch": -1},
        {"lowest_pitch": 24, "n_pitches": 105},
        {"beats_per_bar": 0},
        {"tempo": 0.0},
        {"tempo": float("inf")},
        {"resolution": 24.5},
        {"include_drums": "yes"},
    ],
)
def test_bad_parameters(params):
    with pytest.raises(ParameterError):
        PianoRoll(**params)


def test_bad_inputs():
    with pytest.raises(ParameterError):
        PianoRoll().encode(np.zeros((96, 128)))
    with pytest.raises(ParameterError):
        PianoRoll().decode(np.zeros((96, 84), dtype=np.uint8))
