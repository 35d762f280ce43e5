"""A small additive synthesiser: the fallback when FluidSynth or a General MIDI soundfont is missing.

Each note is a handful of harmonics of its equal-tempered pitch under an ADSR envelope, scaled
by velocity. Two voices cover General MIDI: a struck/plucked one (pianos, chromatic percussion,
guitars, basses, ethnic instruments), whose upper harmonics die first, and a sustained one
(organs, strings, ensembles and voices, brass, reeds, pipes, synths). It sounds like a
keyboard demo, not an orchestra, but pitches, timing and dynamics are right, which is what
listening to a model's output needs.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pretty_midi

from cadenza.errors import ParameterError

__all__ = ["synthesize"]


@dataclasses.dataclass(frozen=True)
class _Voice:
    """Timbre and envelope of one family of General MIDI programs."""

    #: Amplitudes of harmonics 1, 2, 3, ...
    harmonics: tuple[float, ...]
    #: Seconds of the linear attack.
    attack: float
    #: Time constant (s) of the exponential fall from the attack peak to ``sustain`` (at middle C).
    decay: float
    #: Level held while the key is down, relative to the attack peak.
    sustain: float
    #: Seconds of the linear fade after the key is released.
    release: float
    #: Harmonics 3 and up decay this many times faster than the first two (brightness fades).
    upper_decay_ratio: float
    #: Whether the decay shortens with pitch, as on a piano (halves every two octaves).
    is_struck: bool


_STRUCK = _Voice(
    (1.0, 0.45, 0.25, 0.15, 0.08, 0.05),
    attack=0.004,
    decay=1.0,
    sustain=0.0,
    release=0.12,
    upper_decay_ratio=3.0,
    is_struck=True,
)
_SUSTAINED = _Voice(
    (1.0, 0.5, 0.33, 0.25, 0.2, 0.16, 0.12, 0.1),
    attack=0.05,
    decay=0.2,
    sustain=0.7,
    release=0.25,
    upper_decay_ratio=1.0,
    is_struck=False,
)

#: General MIDI programs (0-based) played by the struck/plucked voice: pianos and chromatic
#: percussion (0-15), guitars and basses (24-39), ethnic and percussive (104-119).
STRUCK_PROGRAMS = frozenset([*range(0, 16), *range(24, 40), *range(104, 120)])

#: Harmonics at or above this fraction of the sample rate are left out (no aliasing).
_MAX_HARMONIC_FRACTION = 0.45

#: Output peak after normalisation.
_PEAK = 0.9


def _voice(program: int) -> _Voice:
    return _STRUCK if program in STRUCK_PROGRAMS else _SUSTAINED


def _pedalled_ends(instrument: pretty_midi.Instrument, ends: np.ndarray) -> np.ndarray:
    """Note ends extended to the release of the sustain pedal (CC 64 >= 64) held when they end."""
    pedal = sorted((cc.time, cc.value >= 64) for cc in instrument.control_changes if cc.number == 64)
    downs: list[float] = []
    ups: list[float] = []
    is_down = False
    for time, down in pedal:
        if down and not is_down:
            downs.append(time)
        elif not down and is_down:
            ups.append(time)
        is_down = down
    if not downs:
        return ends
    if len(ups) < len(downs):  # pedal never lifted: it holds to the last note end
        ups.append(max(float(ends.max()), downs[-1]))
    downs_a, ups_a = np.asarray(downs), np.asarray(ups)
    i = np.searchsorted(downs_a, ends, side="right") - 1  # last pedal press at or before each end
    held = (i >= 0) & (ends < ups_a[np.maximum(i, 0)])
    return np.where(held, np.maximum(ends, ups_a[np.maximum(i, 0)]), ends)


def _decay_time(voice: _Voice, pitch: int) -> float:
    return voice.decay * 2.0 ** (-(pitch - 60) / 24.0) if voice.is_struck else voice.decay


def _tone(voice: _Voice, pitch: int, n: int, sr: int) -> np.ndarray:
    """``n`` samples of one note at full velocity with the key held (attack, decay, sustain).

    A note's sound while held does not depend on how long it will be held, so every note of
    one pitch and voice slices this same array; only the release fade is applied per note.
    """
    t = np.arange(n, dtype=np.float64) / sr
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
    n_harmonics = max(1, min(len(voice.harmonics), int(_MAX_HARMONIC_FRACTION * sr / f0)))
    phase = np.mod(2.0 * np.pi * f0 * t, 2.0 * np.pi).astype(np.float32)  # float64 first: long notes
    t = t.astype(np.float32)

    # sin(k * phase) by the Chebyshev recurrence: one sin and one cos however many harmonics.
    two_cos = 2.0 * np.cos(phase)
    s_prev, s_k = np.zeros_like(phase), np.sin(phase)
    lower = voice.harmonics[0] * s_k  # harmonics 1-2, which decay slowly
    upper = np.zeros_like(phase)  # harmonics 3+, which may decay faster
    for k in range(2, n_harmonics + 1):
        s_prev, s_k = s_k, two_cos * s_k - s_prev
        if k <= 2:
            lower += voice.harmonics[k - 1] * s_k
        else:
            upper += voice.harmonics[k - 1] * s_k

    fall = np.exp(-np.maximum(t - np.float32(voice.attack), 0.0) / np.float32(_decay_time(voice, pitch)))
    wave = (voice.sustain + (1.0 - voice.sustain) * fall) * lower
    if n_harmonics > 2:
        wave += (voice.sustain + (1.0 - voice.sustain) * fall**voice.upper_decay_ratio) * upper
    n_attack = min(max(1, round(voice.attack * sr)), n)
    wave[:n_attack] *= np.linspace(0.0, 1.0, n_attack, endpoint=False, dtype=np.float32)
    return wave


def synthesize(midi: pretty_midi.PrettyMIDI, *, sr: int) -> np.ndarray:
    """Render a score with the built-in additive synthesiser.

    Parameters
    ----------
    midi : pretty_midi.PrettyMIDI
        The score. Drum tracks are skipped; notes with no duration are skipped; the sustain
        pedal (CC 64) lengthens notes; pitch bends and other controllers are ignored.
    sr : int
        Sample rate of the result.

    Returns
    -------
    np.ndarray
        float32 mono samples, shape ``(n,)``, lasting until the last note's release has faded
        (a fraction of a second after its end), with the peak normalised to 0.9. A score without
        notes gives silence as long as ``midi.get_end_time()``.

    Examples
    --------
    >>> import pretty_midi
    >>> from cadenza.audio import synthesize
    >>> pm = pretty_midi.PrettyMIDI()
    >>> piano = pretty_midi.Instrument(program=0)
    >>> piano.notes.append(pretty_midi.Note(velocity=100, pitch=69, start=0.0, end=1.0))
    >>> pm.instruments.append(piano)
    >>> y = synthesize(pm, sr=16000)
    >>> y.dtype, round(float(abs(y).max()), 3), len(y) / 16000 > 1.0
    (dtype('float32'), 0.9, True)
    """
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ParameterError(f"sr must be a positive integer, got {sr!r}")
    if not isinstance(midi, pretty_midi.PrettyMIDI):
        raise ParameterError(f"midi must be a pretty_midi.PrettyMIDI, got {type(midi).__name__}")

    # Notes grouped by (voice, pitch): each group slices one precomputed tone.
    groups: dict[tuple[_Voice, int], list[tuple[int, int, float]]] = defaultdict(list)
    n_total = 0
    for instrument in midi.instruments:
        if instrument.is_drum or not instrument.notes:
            continue
        voice = _voice(instrument.program)
        n_release = round(voice.release * sr)
        first = np.round(np.array([note.start for note in instrument.notes]) * sr).astype(np.int64)
        ends = _pedalled_ends(instrument, np.array([note.end for note in instrument.notes]))
        n_on = np.round(ends * sr).astype(np.int64) - first
        for note, start, length in zip(instrument.notes, first.tolist(), n_on.tolist()):
            if length <= 0 or start < 0:
                continue
            groups[(voice, int(note.pitch))].append((start, length, (note.velocity / 127.0) ** 1.5))
            n_total = max(n_total, start + length + n_release)
    if not groups:
        return np.zeros(round(midi.get_end_time() * sr), dtype=np.float32)

    y = np.zeros(n_total, dtype=np.float32)
    for (voice, pitch), notes in groups.items():
        n_release = round(voice.release * sr)
        n_tone = max(length for _, length, _ in notes) + n_release
        if voice.is_struck:  # nothing audible is left after 14 decay times (-120 dB)
            n_tone = min(n_tone, round((voice.attack + 14 * _decay_time(voice, pitch)) * sr))
        tone = _tone(voice, pitch, n_tone, sr)
        fade = np.linspace(1.0, 0.0, n_release + 1, dtype=np.float32)[1:]  # ends at exactly zero
        for start, length, gain in notes:
            held = min(length, n_tone)
            y[start : start + held] += gain * tone[:held]
            n_fade = min(length + n_release, n_tone) - length
            if n_fade > 0:
                y[start + length : start + length + n_fade] += (
                    gain * tone[length : length + n_fade] * fade[:n_fade]
                )
    peak = float(np.max(np.abs(y)))
    if peak > 0:
        y *= _PEAK / peak
    return y
