"""Scores to audio: piano roll -> PrettyMIDI, FluidSynth, the built-in synthesiser and its warning."""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pretty_midi
import pytest

from cadenza.audio import (
    RenderFallbackWarning,
    find_soundfont,
    fluidsynth_available,
    pianoroll_to_midi,
    render,
    render_midi,
    render_pianoroll,
    synthesize,
)
from cadenza.errors import DecodeError, ParameterError

SR = 16000
HAS_FLUIDSYNTH = fluidsynth_available() and find_soundfont() is not None
needs_fluidsynth = pytest.mark.skipif(
    not HAS_FLUIDSYNTH, reason="fluidsynth or a GM soundfont is not installed"
)


def a4_score(*, start: float = 0.5, end: float = 1.5, program: int = 0) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=program)
    instrument.notes.append(pretty_midi.Note(velocity=100, pitch=69, start=start, end=end))
    pm.instruments.append(instrument)
    return pm


def peak_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spectrum)])


def sounding_span(y: np.ndarray, sr: int, *, floor: float = 0.01) -> tuple[float, float]:
    """First and last time (s) at which |y| exceeds ``floor`` times its peak."""
    loud = np.flatnonzero(np.abs(y) > floor * np.max(np.abs(y)))
    return loud[0] / sr, loud[-1] / sr


def assert_renders_a4(y: np.ndarray, *, start: float = 0.5, end: float = 1.5) -> None:
    assert y.dtype == np.float32 and y.ndim == 1
    assert end < len(y) / SR <= end + render.RELEASE_SECONDS + 1e-3
    assert abs(peak_hz(y, SR) - 440.0) <= 2.0
    first, last = sounding_span(y, SR)
    assert first == pytest.approx(start, abs=0.03)
    assert end - 0.1 < last <= end + render.RELEASE_SECONDS
    assert np.max(np.abs(y)) <= 1.0


@pytest.fixture
def fresh_fallback_warning(monkeypatch):
    """Forget that the once-per-process fallback warning was already given."""
    monkeypatch.setattr(render, "_fallback_warned", False)


# ----------------------------------------------------------------------------------------------
# pianoroll_to_midi


def notes_of(pm: pretty_midi.PrettyMIDI) -> list[tuple[int, float, float, int]]:
    return [(n.pitch, n.start, n.end, n.velocity) for n in pm.instruments[0].notes]


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int8, np.float32])
def test_pianoroll_to_midi_gives_exact_notes(dtype):
    roll = np.zeros((10, 12), dtype=dtype)
    roll[0:4, 0] = 1  # C (lowest_pitch 60): steps 0-3
    roll[4:6, 2] = 1  # D right after it: adjacent notes of different pitches
    roll[6:8, 0] = 1  # C again after a gap
    roll[0:10, 4] = 1  # E held through the whole roll
    roll[9, 7] = 1  # G on the last step only
    pm = pianoroll_to_midi(roll, resolution=4, tempo=100.0, lowest_pitch=60, program=40)

    step = 60.0 / (100.0 * 4)  # 0.15 s
    expected = [(60, 0, 4), (64, 0, 10), (62, 4, 6), (60, 6, 8), (67, 9, 10)]
    got = notes_of(pm)
    assert [(p, v) for p, _, _, v in got] == [(p, 100) for p, _, _ in expected]
    np.testing.assert_allclose(
        [(s, e) for _, s, e, _ in got], [(s * step, e * step) for _, s, e in expected], atol=1e-12
    )
    assert pm.instruments[0].program == 40 and not pm.instruments[0].is_drum
    assert pm.get_tempo_changes()[1][0] == pytest.approx(100.0)


def test_pianoroll_to_midi_survives_a_midi_file_round_trip(tmp_path):
    roll = np.zeros((24, 128), dtype=np.uint8)
    roll[0:5, 60] = roll[5:6, 61] = roll[7:24, 72] = roll[23, 127] = roll[3:9, 0] = 1
    pm = pianoroll_to_midi(roll, resolution=24, tempo=93.0)
    pm.write(str(tmp_path / "roll.mid"))
    again = pretty_midi.PrettyMIDI(str(tmp_path / "roll.mid"))
    ticks_per_step = again.resolution // 24
    assert again.resolution % 24 == 0
    for before, after in zip(
        sorted(pm.instruments[0].notes, key=lambda n: (n.start, n.pitch)),
        sorted(again.instruments[0].notes, key=lambda n: (n.start, n.pitch)),
        strict=True,
    ):
        assert after.pitch == before.pitch
        # Steps land on whole ticks; MIDI keeps the tempo in whole microseconds per beat.
        assert again.time_to_tick(after.start) % ticks_per_step == 0
        assert (after.start, after.end) == pytest.approx((before.start, before.end), abs=1e-6)


def test_pianoroll_to_midi_empty_roll_and_bad_arguments():
    assert pianoroll_to_midi(np.zeros((16, 88)), resolution=4, lowest_pitch=21).instruments[0].notes == []
    with pytest.raises(ParameterError, match="outside"):
        pianoroll_to_midi(np.zeros((4, 88)), resolution=4, lowest_pitch=60)
    with pytest.raises(ParameterError):
        pianoroll_to_midi(np.zeros(16), resolution=4)
    with pytest.raises(ParameterError):
        pianoroll_to_midi(np.zeros((4, 128)), resolution=0)


# ----------------------------------------------------------------------------------------------
# Built-in synthesiser and the fallback


def test_fallback_synth_renders_a4_and_warns_once(fresh_fallback_warning):
    with pytest.warns(RenderFallbackWarning, match="apt-get install fluidsynth fluid-soundfont-gm"):
        y = render_midi(a4_score(), sr=SR, use_fluidsynth=False)
    assert_renders_a4(y)
    assert np.max(np.abs(y)) == pytest.approx(0.9, abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render_midi(a4_score(), sr=SR, use_fluidsynth=False)


def test_missing_fluidsynth_falls_back_or_raises(fresh_fallback_warning, monkeypatch):
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    assert not fluidsynth_available()
    with pytest.warns(RenderFallbackWarning, match="fluidsynth program is not on the PATH"):
        y = render_midi(a4_score(), sr=SR)
    assert_renders_a4(y)
    with pytest.raises(ParameterError, match="apt-get install"):
        render_midi(a4_score(), sr=SR, use_fluidsynth=True)


def test_find_soundfont_prefers_the_environment(tmp_path, monkeypatch):
    sf2 = tmp_path / "mine.sf2"
    sf2.write_bytes(b"RIFF")
    monkeypatch.setenv("CADENZA_SOUNDFONT", str(tmp_path / "missing.sf2"))
    monkeypatch.setenv("SOUNDFONT", str(sf2))
    assert find_soundfont() == sf2
    monkeypatch.setenv("CADENZA_SOUNDFONT", str(sf2))
    monkeypatch.setenv("SOUNDFONT", "")
    assert find_soundfont() == sf2


def test_synth_struck_decays_sustained_holds():
    piano = synthesize(a4_score(start=0.0, end=3.0, program=0), sr=SR)
    strings = synthesize(a4_score(start=0.0, end=3.0, program=48), sr=SR)

    def rms(y, t0, t1):
        return float(np.sqrt(np.mean(y[round(t0 * SR) : round(t1 * SR)] ** 2)))

    assert rms(piano, 2.5, 2.9) < 0.2 * rms(piano, 0.05, 0.45)
    assert rms(strings, 2.5, 2.9) > 0.8 * rms(strings, 0.3, 0.7)
    assert abs(peak_hz(strings, SR) - 440.0) <= 1.0


def test_synth_velocity_drums_pedal_and_empty_scores():
    pm = a4_score(start=0.0, end=0.5)
    pm.instruments[0].notes.append(pretty_midi.Note(velocity=30, pitch=57, start=1.0, end=1.5))
    y = synthesize(pm, sr=SR)
    assert np.max(np.abs(y[: SR // 2])) > 3 * np.max(np.abs(y[SR : 3 * SR // 2]))

    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes.append(pretty_midi.Note(velocity=100, pitch=36, start=0.0, end=2.0))
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(drums)
    assert not np.any(synthesize(pm, sr=SR))

    pedalled = a4_score(start=0.0, end=0.2)
    pedalled.instruments[0].control_changes += [
        pretty_midi.ControlChange(64, 127, 0.0),
        pretty_midi.ControlChange(64, 0, 1.0),
    ]
    assert (
        len(synthesize(pedalled, sr=SR)) / SR
        > 1.0
        > len(synthesize(a4_score(start=0.0, end=0.2), sr=SR)) / SR
    )

    assert len(render_midi(pretty_midi.PrettyMIDI(), sr=SR)) == 0


def test_synth_renders_ten_minutes_quickly():
    rng = np.random.default_rng(0)
    pm = pretty_midi.PrettyMIDI()
    for program in (0, 48):
        instrument = pretty_midi.Instrument(program=program)
        for _ in range(1500):
            start = float(rng.uniform(0, 600))
            instrument.notes.append(
                pretty_midi.Note(
                    velocity=80,
                    pitch=int(rng.integers(36, 96)),
                    start=start,
                    end=start + float(rng.uniform(0.1, 1.5)),
                )
            )
        pm.instruments.append(instrument)
    began = time.perf_counter()
    y = synthesize(pm, sr=SR)
    assert time.perf_counter() - began < 10.0  # about 0.5 s on a laptop core
    assert 600 < len(y) / SR < 602


def test_render_pianoroll_lasts_the_whole_roll(fresh_fallback_warning):
    roll = np.zeros((32, 88), dtype=np.uint8)
    roll[4:12, 69 - 21] = 1  # A4 from 0.5 s to 1.5 s at 8 steps per second
    with pytest.warns(RenderFallbackWarning):
        y = render_pianoroll(roll, resolution=4, tempo=120.0, lowest_pitch=21, sr=SR, use_fluidsynth=False)
    assert len(y) == 4 * SR  # 32 steps of 0.125 s, longer than the note and its release
    assert abs(peak_hz(y, SR) - 440.0) <= 2.0
    assert sounding_span(y, SR)[0] == pytest.approx(0.5, abs=0.03)


# ----------------------------------------------------------------------------------------------
# FluidSynth


@needs_fluidsynth
def test_fluidsynth_renders_a4_without_warning():
    score = a4_score()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenderFallbackWarning)
        y = render_midi(score, sr=SR)
    assert_renders_a4(y)


@needs_fluidsynth
def test_fluidsynth_renders_a_file_with_program_override(tmp_path):
    score = a4_score(program=48)
    score.write(str(tmp_path / "a4.mid"))
    y = render_midi(tmp_path / "a4.mid", sr=SR, program=0)
    assert_renders_a4(y)
    assert score.instruments[0].program == 48  # the caller's score is left alone


def test_render_midi_bad_input(tmp_path):
    with pytest.raises(DecodeError) as caught:
        render_midi(tmp_path / "none.mid")
    assert caught.value.reason == "missing file"
    (tmp_path / "text.mid").write_text("not midi")
    with pytest.raises(DecodeError) as caught:
        render_midi(tmp_path / "text.mid")
    assert caught.value.reason == "not a MIDI file"
    a4_score().write(str(tmp_path / "good.mid"))
    (tmp_path / "cut.mid").write_bytes((tmp_path / "good.mid").read_bytes()[:30])
    with pytest.raises(DecodeError) as caught:
        render_midi(tmp_path / "cut.mid")
    assert caught.value.reason == "corrupt or truncated MIDI"
    with pytest.raises(ParameterError):
        render_midi(a4_score(), program=128)
    with pytest.raises(ParameterError):
        render_midi(a4_score(), soundfont=tmp_path / "none.sf2")


# ----------------------------------------------------------------------------------------------
# A voice that is never released: FluidSynth 2.3.1-2.3.3 rendered until every voice was silent


def _strings(*notes: tuple[int, float, float], program: int = 48) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=program)
    instrument.notes += [pretty_midi.Note(velocity=90, pitch=p, start=s, end=e) for p, s, e in notes]
    pm.instruments.append(instrument)
    return pm


def _rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))


@needs_fluidsynth
def test_a_note_of_no_length_is_heard_as_a_short_one_not_for_ever():
    """A grace note music21 writes with no length: pretty_midi writes its note-off before its
    note-on, and FluidSynth held that looped string note for ever (render_midi waited out its
    62 s limit, writing gigabytes); now it is given 10 ms, and the score is not changed."""
    plain = _strings((60, 0.0, 1.0))
    grace = _strings((60, 0.0, 1.0), (64, 0.5, 0.5))
    start = time.monotonic()
    y = render_midi(grace, sr=SR)
    assert time.monotonic() - start < 20.0
    assert grace.instruments[0].notes[1].end == 0.5  # the caller's score is left alone
    assert len(y) == round(2.0 * SR)
    tail, plain_tail = _rms(y[int(1.5 * SR) :]), _rms(render_midi(plain, sr=SR)[int(1.5 * SR) :])
    assert tail < 2.0 * plain_tail + 1e-4  # released with the rest, not sounding on


@needs_fluidsynth
def test_a_voice_held_past_the_end_stops_the_render_at_the_release(tmp_path):
    """A file whose last note-off is lost (a recording cut off, a tool's bug): the looped string
    voice sounds for ever, and the render stops once last note + RELEASE_SECONDS is written."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    track += [
        mido.Message("program_change", program=48, time=0),
        mido.Message("note_on", note=60, velocity=90, time=0),
        mido.Message("note_off", note=60, velocity=0, time=960),  # 1 s at 120 bpm
        mido.Message("note_on", note=67, velocity=90, time=0),  # never released
        mido.Message("note_on", note=64, velocity=90, time=480),
        mido.Message("note_off", note=64, velocity=0, time=480),
        mido.MetaMessage("end_of_track", time=0),
    ]
    mid.tracks.append(track)
    mid.save(tmp_path / "lost-note-off.mid")
    start = time.monotonic()
    y = render_midi(tmp_path / "lost-note-off.mid", sr=SR)
    assert time.monotonic() - start < 20.0
    assert len(y) == round(3.0 * SR)  # pretty_midi ends the open note at the last event (2 s)
    assert _rms(y[int(2.8 * SR) :]) > 1e-3  # what the file says: the voice still sounds


def test_the_render_guard_stops_a_writer_at_its_size_and_a_stalled_one_at_its_limit(tmp_path):
    """``_fluidsynth`` without FluidSynth: a program that writes for ever (here through a shell,
    as a wrapper script would run FluidSynth: its child is stopped too) is stopped once the file
    holds what is needed; one that never writes is stopped at the time limit."""
    out = tmp_path / "out.raw"
    # The writer stops by itself after 64 MB, so that a guard that failed could not fill a disk.
    writer = f"import time\nwith open({str(out)!r}, 'wb') as f:\n"
    writer += "    for _ in range(1024):\n        f.write(bytes(65536)); f.flush()\n    time.sleep(30)\n"
    script = tmp_path / "writer.py"
    script.write_text(writer)
    start = time.monotonic()
    command = ["sh", "-c", f"{sys.executable} {script}; sleep 30"]
    render._fluidsynth(command, out, n_bytes=1 << 20, timeout=60.0, name="endless")
    assert time.monotonic() - start < 10.0
    size = out.stat().st_size
    assert size >= 1 << 20
    time.sleep(0.3)
    assert out.stat().st_size == size  # the shell's child was stopped with it
    with pytest.raises(DecodeError, match="took more than 1 s") as caught:
        render._fluidsynth(["sleep", "30"], tmp_path / "none.raw", n_bytes=8, timeout=1.0, name="stalled")
    assert caught.value.reason == "render failed"
    with pytest.raises(DecodeError, match="exited with 3: broken"):
        command = ["sh", "-c", "echo broken >&2; exit 3"]
        render._fluidsynth(command, tmp_path / "x.raw", n_bytes=8, timeout=9.0, name="x")
