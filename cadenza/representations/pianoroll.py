"""Piano roll (paper 004; the Lakh Pianoroll Dataset): a score as a many-hot ``(n_steps, n_pitches)`` grid.

Time is counted in steps of ``1 / resolution`` beat (24 per beat as LPD and MuseGAN), taken
from the MIDI file's own ticks, so tempo changes do not move notes off the beat grid. A note
sounding from tick ``a`` to ``b`` covers steps ``round(a * resolution / ticks_per_beat)`` up to,
not including, the same of ``b`` (halves round up), and at least one step; seconds become
ticks as ``midi.time_to_tick`` does, vectorised over the file's tempo map. The roll lasts until
the score's end (``midi.get_end_time()``: its last note or event), padded up to whole bars of
``resolution * beats_per_bar`` steps. Drums are left out
unless ``include_drums``; notes outside the pitch range are dropped and counted. Every
non-drum instrument is merged into one roll; velocities are not kept (on or off).

Re-articulation: when a note starts while the same pitch is sounding (repeated notes that
touch or overlap), the step just before its onset is turned off, so the roll keeps a one-step
gap and ``decode`` plays two notes, not one held note. Where that step is itself an onset (the
earlier note is a single step long) the notes merge instead, since no gap would leave the earlier
note any step. ``decode`` turns each run of on-steps into one note, so
``encode(decode(roll)) == roll`` for every binary roll of whole bars.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
import pretty_midi

from cadenza.errors import ParameterError
from cadenza.representations.base import RENDER_SAMPLE_RATE, Representation

__all__ = ["PianoRoll", "pianoroll_to_midi"]

#: Velocity of the notes that ``decode`` writes.
DECODE_VELOCITY = 100
#: General MIDI program of the instrument that ``decode`` writes (acoustic grand piano).
DECODE_PROGRAM = 0
#: Text of the event that marks the end of a decoded roll, so that trailing empty bars survive.
END_MARKER = "cadenza:end"


def _tempo_map(midi: pretty_midi.PrettyMIDI) -> np.ndarray | None:
    """pretty_midi's tempo map, ``(n_changes, 2)`` rows of (tick, seconds per tick); None if it changed.

    ``PrettyMIDI._tick_scales`` is private: a list of ``(tick, seconds_per_tick)`` pairs starting
    at tick 0, in tick order, that ``time_to_tick`` reads. Reading it lets
    :meth:`PianoRoll.encode` convert every note time at once; if a pretty_midi release renames
    it or changes its shape, this returns None and the encoder falls back to the public
    ``midi.time_to_tick`` per value (slower, same steps). ``tests/representations/test_pianoroll.py``
    fails loudly when the installed pretty_midi no longer takes the fast path.

    Examples
    --------
    >>> _tempo_map(pretty_midi.PrettyMIDI(resolution=480, initial_tempo=120.0))
    array([[0.        , 0.00104167]])
    """
    raw = getattr(midi, "_tick_scales", None)
    if not isinstance(raw, list | tuple) or not raw:
        return None
    try:
        scales = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if scales.ndim != 2 or scales.shape[1] != 2 or not np.all(np.isfinite(scales)):
        return None
    change_tick, seconds_per_tick = scales[:, 0], scales[:, 1]
    if change_tick[0] != 0 or np.any(np.diff(change_tick) < 0) or np.any(seconds_per_tick <= 0):
        return None
    return scales


@dataclasses.dataclass(frozen=True)
class PianoRoll(Representation):
    """Score <-> binary piano roll, ``uint8`` frames ``(n_steps, n_pitches)``, ``n_steps`` whole bars.

    Parameters
    ----------
    resolution : int
        Time steps per beat (quarter note); 24 as LPD.
    lowest_pitch : int
        MIDI pitch of column 0.
    n_pitches : int
        Pitches kept: 128 for all of MIDI, or 84 from ``lowest_pitch=24`` for LPD/MuseGAN's C1-B7.
    beats_per_bar : int
        Beats per bar: rolls are padded to whole bars of ``resolution * beats_per_bar`` steps.
    tempo : float
        Beats per minute of the scores that ``decode`` writes.
    include_drums : bool
        Put drum-track notes into the roll too.

    Examples
    --------
    >>> import pretty_midi
    >>> midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    >>> piano = pretty_midi.Instrument(program=0)
    >>> piano.notes.append(pretty_midi.Note(velocity=90, pitch=60, start=0.0, end=0.5))  # C4, one beat
    >>> midi.instruments.append(piano)
    >>> rep = PianoRoll()
    >>> roll = rep.encode(midi)
    >>> roll.shape, int(roll[:, 60].sum())  # one bar of 4 beats, 24 steps on
    ((96, 128), 24)
    >>> [(n.pitch, n.start, n.end) for n in rep.decode(roll).instruments[0].notes]
    [(60, 0.0, 0.5)]
    """

    name: ClassVar[str] = "pianoroll"
    input_kind: ClassVar[str] = "score"
    is_exact: ClassVar[bool] = True
    dtype: ClassVar[str] = "uint8"

    resolution: int = 24
    lowest_pitch: int = 0
    n_pitches: int = 128
    beats_per_bar: int = 4
    tempo: float = 120.0
    include_drums: bool = False

    def _validate(self) -> None:
        if self.resolution < 1:
            raise ParameterError(f"resolution must be at least 1 step per beat, got {self.resolution}")
        if self.n_pitches < 1:
            raise ParameterError(f"n_pitches must be positive, got {self.n_pitches}")
        if self.lowest_pitch < 0 or self.lowest_pitch + self.n_pitches > 128:
            raise ParameterError(
                f"pitches {self.lowest_pitch}..{self.lowest_pitch + self.n_pitches - 1} fall outside MIDI's 0..127"
            )
        if self.beats_per_bar < 1:
            raise ParameterError(f"beats_per_bar must be positive, got {self.beats_per_bar}")
        if self.tempo <= 0:
            raise ParameterError(f"tempo must be positive, got {self.tempo}")

    @property
    def n_features(self) -> int:
        return self.n_pitches

    @property
    def frame_rate(self) -> float:
        """Steps per beat (not per second: a score's tempo may change)."""
        return float(self.resolution)

    @property
    def steps_per_bar(self) -> int:
        return self.resolution * self.beats_per_bar

    @property
    def frame_unit(self) -> int:
        return self.steps_per_bar

    def bars(self, roll: np.ndarray) -> np.ndarray:
        """View of a roll as bars: ``(n_steps, n_pitches)`` -> ``(n_bars, steps_per_bar, n_pitches)``.

        Examples
        --------
        >>> PianoRoll().bars(np.zeros((192, 128), dtype=np.uint8)).shape
        (2, 96, 128)
        """
        roll = np.asarray(roll)
        if roll.ndim != 2 or roll.shape[1] != self.n_pitches or roll.shape[0] % self.steps_per_bar:
            raise ParameterError(
                f"a roll of whole bars has shape (k * {self.steps_per_bar}, {self.n_pitches}), got {roll.shape}"
            )
        return roll.reshape(-1, self.steps_per_bar, self.n_pitches)

    def encode(self, midi: pretty_midi.PrettyMIDI) -> np.ndarray:
        """Score -> ``uint8`` roll ``(n_steps, n_pitches)`` of 0/1, padded to whole bars."""
        return self.encode_with_info(midi)[0]

    def encode_with_info(self, midi: pretty_midi.PrettyMIDI) -> tuple[np.ndarray, dict[str, int]]:
        """:meth:`encode`, plus counts: ``n_notes`` (in the roll), ``n_dropped_out_of_range``,
        ``n_drum_notes`` (left out) and ``n_steps``.

        Examples
        --------
        >>> import pretty_midi
        >>> midi = pretty_midi.PrettyMIDI()
        >>> inst = pretty_midi.Instrument(program=0)
        >>> inst.notes += [pretty_midi.Note(velocity=80, pitch=p, start=0.0, end=1.0) for p in (10, 60)]
        >>> midi.instruments.append(inst)
        >>> roll, info = PianoRoll(lowest_pitch=24, n_pitches=84).encode_with_info(midi)
        >>> info
        {'n_notes': 1, 'n_dropped_out_of_range': 1, 'n_drum_notes': 0, 'n_steps': 96}
        """
        if not isinstance(midi, pretty_midi.PrettyMIDI):
            raise ParameterError(f"pianoroll encodes a pretty_midi.PrettyMIDI, got {type(midi).__name__}")
        n_drum_notes = sum(len(i.notes) for i in midi.instruments if i.is_drum and not self.include_drums)
        notes = [n for i in midi.instruments if self.include_drums or not i.is_drum for n in i.notes]
        pitch = np.fromiter((n.pitch for n in notes), dtype=np.int64, count=len(notes))
        seconds = np.fromiter(
            (t for n in notes for t in (n.start, n.end)), dtype=np.float64, count=2 * len(notes)
        )
        steps = self._seconds_to_steps(midi, np.append(seconds, midi.get_end_time()))
        start, end, last = steps[0:-1:2], steps[1:-1:2], int(steps[-1])
        end = np.maximum(end, start + 1)  # every note covers at least one step

        column = pitch - self.lowest_pitch
        keep = (column >= 0) & (column < self.n_pitches)
        start, end, column = start[keep], end[keep], column[keep]

        n_steps = max(int(end.max(initial=0)), last)
        n_steps = -(-n_steps // self.steps_per_bar) * self.steps_per_bar
        # Notes sounding per (step, pitch): cumulative count of onsets minus offsets, in int32
        # and in place (bincount's int64 arrays took 32 bytes a cell: 1.4 GB for a 2-hour score).
        size = (n_steps + 1) * self.n_pitches
        sounding = np.zeros(size, np.int32)
        np.add.at(sounding, start * self.n_pitches + column, 1)
        np.add.at(sounding, end * self.n_pitches + column, -1)
        sounding = sounding.reshape(n_steps + 1, self.n_pitches)[:n_steps]
        np.cumsum(sounding, axis=0, out=sounding)
        roll = sounding > 0
        del sounding
        is_onset = np.zeros((n_steps + 1) * self.n_pitches, bool)
        is_onset[start * self.n_pitches + column] = True
        is_onset = is_onset.reshape(n_steps + 1, self.n_pitches)[:n_steps]
        # A re-onset while the pitch sounds: free the step before it (unless that step is an onset).
        gap = is_onset[1:] & roll[:-1] & ~is_onset[:-1]
        roll[:-1][gap] = False

        info = {
            "n_notes": int(keep.sum()),
            "n_dropped_out_of_range": int((~keep).sum()),
            "n_drum_notes": int(n_drum_notes),
            "n_steps": int(n_steps),
        }
        return roll.view(np.uint8), info

    def _seconds_to_steps(self, midi: pretty_midi.PrettyMIDI, seconds: np.ndarray) -> np.ndarray:
        """Times in seconds -> steps, through the file's ticks (``midi.time_to_tick``, vectorised)."""
        scales = _tempo_map(midi)
        if scales is None:  # pretty_midi changed its private tempo map: the public call, per value
            ticks = np.array([midi.time_to_tick(t) for t in seconds], dtype=np.int64).reshape(-1)
        else:
            change_tick, seconds_per_tick = scales[:, 0], scales[:, 1]
            change_time = np.concatenate([[0.0], np.cumsum(np.diff(change_tick) * seconds_per_tick[:-1])])
            segment = np.clip(np.searchsorted(change_time, seconds, side="right") - 1, 0, None)
            ticks = np.rint(
                change_tick[segment] + (seconds - change_time[segment]) / seconds_per_tick[segment]
            )
            ticks = ticks.astype(np.int64)
        ticks = np.maximum(ticks, 0)
        # round(tick * resolution / ticks_per_beat) with halves up, in exact integer arithmetic.
        tpb = int(midi.resolution)
        return (2 * ticks * self.resolution + tpb) // (2 * tpb)

    def decode(self, roll: np.ndarray) -> pretty_midi.PrettyMIDI:
        """Roll ``(n_steps, n_pitches)`` -> one piano at ``tempo``; each run of on-steps is one note.

        The score also holds a time signature of ``beats_per_bar`` / 4 and a text event at the
        roll's end, so that trailing empty bars survive ``encode(decode(roll))``.
        """
        roll = np.asarray(roll)
        if roll.ndim != 2 or roll.shape[1] != self.n_pitches:
            raise ParameterError(f"piano roll must have shape (n_steps, {self.n_pitches}), got {roll.shape}")
        midi = pianoroll_to_midi(
            roll,
            resolution=self.resolution,
            tempo=self.tempo,
            lowest_pitch=self.lowest_pitch,
            program=DECODE_PROGRAM,
            velocity=DECODE_VELOCITY,
        )
        midi.time_signature_changes.append(pretty_midi.TimeSignature(self.beats_per_bar, 4, 0.0))
        end = len(roll) * 60.0 / (self.tempo * self.resolution)
        midi.text_events.append(pretty_midi.Text(END_MARKER, end))
        return midi

    # --- what consumers call, without asking for the kind (see representations.base)
    def frames_for(
        self, *, seconds: float | None = None, beats: float | None = None, bars: float | None = None
    ) -> int:
        """Steps of a score lasting ``bars``, ``beats`` or ``seconds`` (at ``tempo``), in whole steps.

        Examples
        --------
        >>> rep = PianoRoll(resolution=4)
        >>> rep.frames_for(bars=2), rep.frames_for(beats=3), rep.frames_for(seconds=8.0)
        (32, 12, 64)
        """
        given = [(k, v) for k, v in (("seconds", seconds), ("beats", beats), ("bars", bars)) if v is not None]
        if len(given) != 1:
            raise ParameterError("give one of seconds, beats or bars")
        kind, value = given[0]
        if not 0 < value < math.inf:
            raise ParameterError(f"{kind} must be a positive, finite number, got {value}")
        n_beats = {"seconds": value * self.tempo / 60.0, "beats": value, "bars": value * self.beats_per_bar}[
            kind
        ]
        return max(1, int(math.ceil(n_beats * self.resolution - 1e-9)))

    def read(self, path: Any, *, max_seconds: float | None = None) -> np.ndarray:
        """The roll of a MIDI file or any score music21 parses (only its first ``max_seconds``
        when given), as ``cadenza prepare`` reads one: a file without notes in the roll's range
        raises :class:`~cadenza.errors.DecodeError` ("no notes")."""
        from cadenza.data.prepare import read_frames

        return read_frames(path, self, max_seconds=max_seconds)

    def quiet_frames(self, n_frames: int, rng: np.random.Generator, *, amplitude: float = 0.0) -> np.ndarray:
        """``n_frames`` empty steps."""
        return np.zeros((n_frames, self.n_features), np.float32)

    def to_score(self, frames: np.ndarray) -> pretty_midi.PrettyMIDI:
        return self.decode(frames)

    def to_audio(
        self, frames: np.ndarray, *, seconds: float | None = None, report: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, int]:
        """The decoded score rendered (FluidSynth, else the built-in synthesiser) at 16 kHz.

        A score sounds as long as its notes (and their release): ``seconds`` is not applied.
        """
        from cadenza.audio import render_midi

        return render_midi(self.decode(frames), sr=RENDER_SAMPLE_RATE), RENDER_SAMPLE_RATE

    def picture(self, frames: np.ndarray, *, title: str = "", ax: Any = None) -> Any:
        """The roll drawn with bar lines (``plot_pianoroll``)."""
        from cadenza.plots import plot_pianoroll

        return plot_pianoroll(
            frames,
            ax=ax,
            resolution=self.resolution,
            lowest_pitch=self.lowest_pitch,
            beats_per_bar=self.beats_per_bar,
            title=title,
        )


def pianoroll_to_midi(
    roll: np.ndarray,
    *,
    resolution: int,
    tempo: float = 120.0,
    lowest_pitch: int = 0,
    program: int = 0,
    velocity: int = 100,
) -> pretty_midi.PrettyMIDI:
    """Turn a many-hot piano roll into a one-instrument score.

    Each run of consecutive on-steps of a pitch becomes one note, so a held note and repeated
    notes of one pitch are told apart only by an off-step between them.

    Parameters
    ----------
    roll : np.ndarray
        Shape ``(n_steps, n_pitches)``; nonzero entries are on. Column ``j`` is MIDI pitch
        ``lowest_pitch + j``.
    resolution : int
        Time steps per beat (quarter note).
    tempo : float
        Beats per minute; a step lasts ``60 / (tempo * resolution)`` seconds.
    lowest_pitch : int
        MIDI pitch of column 0.
    program : int
        General MIDI program (0-127) of the instrument.
    velocity : int
        Velocity (1-127) of every note.

    Returns
    -------
    pretty_midi.PrettyMIDI
        One instrument with the notes sorted by start, then pitch; ticks per beat are a
        multiple of ``resolution`` so that writing the file keeps every step exact.

    Examples
    --------
    >>> import numpy as np
    >>> from cadenza.audio import pianoroll_to_midi
    >>> roll = np.zeros((8, 128), dtype=bool)
    >>> roll[0:4, 60] = True  # C4 for steps 0-3
    >>> roll[4:8, 64] = True  # then E4
    >>> pm = pianoroll_to_midi(roll, resolution=4, tempo=120.0)
    >>> [(n.pitch, n.start, n.end) for n in pm.instruments[0].notes]
    [(60, 0.0, 0.5), (64, 0.5, 1.0)]
    """
    roll = np.asarray(roll)
    if roll.ndim != 2:
        raise ParameterError(f"roll must have shape (n_steps, n_pitches), got {roll.shape}")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution <= 0:
        raise ParameterError(f"resolution must be a positive number of steps per beat, got {resolution!r}")
    if not np.isfinite(tempo) or tempo <= 0:
        raise ParameterError(f"tempo must be a positive number of beats per minute, got {tempo!r}")
    if not 0 <= lowest_pitch or lowest_pitch + roll.shape[1] > 128:
        raise ParameterError(
            f"pitches {lowest_pitch}..{lowest_pitch + roll.shape[1] - 1} fall outside MIDI's 0..127"
        )
    if not 0 <= program <= 127:
        raise ParameterError(f"program must be 0-127, got {program!r}")
    if not 1 <= velocity <= 127:
        raise ParameterError(f"velocity must be 1-127, got {velocity!r}")

    # int8, not uint8: diff must see -1 at note offs. Pad a silent step on both sides so that
    # notes sounding at the first or last step still have an on and an off.
    on = np.pad((roll != 0).astype(np.int8), ((1, 1), (0, 0)))  # (n_steps + 2, n_pitches)
    edges = np.diff(on, axis=0).T  # (n_pitches, n_steps + 1): +1 at onsets, -1 after the last on-step
    pitch_on, step_on = np.nonzero(edges == 1)  # row-major over pitches: per pitch, in time order
    _, step_off = np.nonzero(edges == -1)  # each pitch's offs pair one to one with its ons
    order = np.lexsort((pitch_on, step_on))  # sort by start, then pitch
    seconds_per_step = 60.0 / (float(tempo) * int(resolution))

    ticks_per_beat = int(resolution) * max(1, round(480 / int(resolution)))
    midi = pretty_midi.PrettyMIDI(resolution=ticks_per_beat, initial_tempo=float(tempo))
    instrument = pretty_midi.Instrument(program=int(program))
    instrument.notes = [
        pretty_midi.Note(
            velocity=int(velocity),
            pitch=int(pitch) + int(lowest_pitch),
            start=start * seconds_per_step,
            end=end * seconds_per_step,
        )
        for pitch, start, end in zip(
            pitch_on[order].tolist(), step_on[order].tolist(), step_off[order].tolist()
        )
    ]
    midi.instruments.append(instrument)
    return midi
