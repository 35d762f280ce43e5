"""Scores to audio: FluidSynth with a General MIDI soundfont, or the built-in synthesiser.

FluidSynth is used when its command-line program and a soundfont are found; otherwise (or with
``use_fluidsynth=False``) :func:`cadenza.audio.synth.synthesize` renders the score and one
:class:`RenderFallbackWarning` per process says what is missing and how to install it.
"""

from __future__ import annotations

import copy
import glob
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pretty_midi

from cadenza.audio.io import _as_rate, _resample
from cadenza.audio.synth import synthesize
from cadenza.errors import DecodeError, ParameterError
from cadenza.representations.pianoroll import pianoroll_to_midi  # the roll's inverse, beside its forward

__all__ = [
    "RenderFallbackWarning",
    "find_soundfont",
    "fluidsynth_available",
    "pianoroll_to_midi",
    "render_midi",
    "render_pianoroll",
]

#: Seconds kept after the last note ends, for the instruments' release and the reverb tail.
RELEASE_SECONDS = 1.0

#: FluidSynth's master gain: 0.5 is loud enough without clipping most ensembles.
FLUIDSYNTH_GAIN = 0.5

#: The length a note of none is given when a score is rendered (seconds).
_SHORTEST_NOTE = 0.01

#: Sample rates FluidSynth renders at; others are rendered at 44.1 kHz and resampled.
_FLUIDSYNTH_RATES = range(8000, 96001)

_INSTALL_HINT = "install FluidSynth and a General MIDI soundfont (Debian/Ubuntu: apt-get install fluidsynth fluid-soundfont-gm)"

_fallback_warned = False


class RenderFallbackWarning(UserWarning):
    """Scores are being rendered with the built-in synthesiser instead of FluidSynth."""


def _warn_fallback(why: str) -> None:
    global _fallback_warned
    if _fallback_warned:
        return
    _fallback_warned = True
    warnings.warn(
        f"rendering scores with cadenza's built-in synthesiser because {why}; for real instruments, {_INSTALL_HINT}",
        RenderFallbackWarning,
        stacklevel=3,
    )


def find_soundfont() -> Path | None:
    """The General MIDI soundfont to render with, or None when there is none.

    Looks, in order, at ``$CADENZA_SOUNDFONT``, ``$SOUNDFONT``,
    ``/usr/share/sounds/sf2/FluidR3_GM.sf2``, then any ``/usr/share/sounds/sf2/*.sf2`` and
    ``/usr/share/soundfonts/*.sf2`` (alphabetically). Variables naming a missing file are skipped.

    Examples
    --------
    >>> from cadenza.audio import find_soundfont
    >>> sf2 = find_soundfont()
    >>> sf2 is None or sf2.is_file()
    True
    """
    candidates = [
        os.environ.get("CADENZA_SOUNDFONT"),
        os.environ.get("SOUNDFONT"),
        "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    ]
    candidates += sorted(glob.glob("/usr/share/sounds/sf2/*.sf2")) + sorted(
        glob.glob("/usr/share/soundfonts/*.sf2")
    )
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def fluidsynth_available() -> bool:
    """True when the ``fluidsynth`` program is on the PATH.

    Examples
    --------
    >>> from cadenza.audio import fluidsynth_available
    >>> isinstance(fluidsynth_available(), bool)
    True
    """
    return shutil.which("fluidsynth") is not None


def _load_midi(
    midi: str | os.PathLike[str] | pretty_midi.PrettyMIDI,
) -> tuple[pretty_midi.PrettyMIDI, Path | None]:
    """The score as PrettyMIDI, and its file when it came from one."""
    if isinstance(midi, pretty_midi.PrettyMIDI):
        return midi, None
    if not isinstance(midi, (str, os.PathLike)):
        raise ParameterError(
            f"midi must be a path to a .mid file or a pretty_midi.PrettyMIDI, got {type(midi).__name__}"
        )
    path = Path(midi)
    if not path.is_file():
        raise DecodeError(path, "missing file", "no such MIDI file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise DecodeError(path, "unreadable file", str(e)) from e
    if not head:
        raise DecodeError(path, "empty file", "0 bytes")
    if head != b"MThd":
        raise DecodeError(path, "not a MIDI file", f"starts with {head!r}, not b'MThd'")
    try:
        return pretty_midi.PrettyMIDI(str(path)), path
    except Exception as e:  # mido and pretty_midi raise many types (EOFError, OSError, KeyError...)
        raise DecodeError(path, "corrupt or truncated MIDI", f"{type(e).__name__}: {e}") from e


def _with_program(midi: pretty_midi.PrettyMIDI, program: int) -> pretty_midi.PrettyMIDI:
    """A copy of the score with every non-drum instrument playing ``program``."""
    midi = copy.deepcopy(midi)
    for instrument in midi.instruments:
        if not instrument.is_drum:
            instrument.program = program
    return midi


def _last_note_end(midi: pretty_midi.PrettyMIDI) -> float:
    return max((note.end for instrument in midi.instruments for note in instrument.notes), default=0.0)


def _playable(midi: pretty_midi.PrettyMIDI) -> pretty_midi.PrettyMIDI:
    """The score as FluidSynth should get it: a note of no length (a grace note, a drum
    machine's hit) given one of ``_SHORTEST_NOTE``, where it is written as its note-off before
    its note-on (pretty_midi's order at one tick) and would sound until the next note of its
    pitch, or, the last of its pitch, for ever. The score itself is not changed."""
    if not any(note.end <= note.start for instrument in midi.instruments for note in instrument.notes):
        return midi
    midi = copy.deepcopy(midi)
    for instrument in midi.instruments:
        for note in instrument.notes:
            if note.end <= note.start:
                note.end = note.start + _SHORTEST_NOTE
    return midi


def _fluidsynth(command: list[str], out: Path, *, n_bytes: int, timeout: float, name: str) -> None:
    """Run FluidSynth until it has written ``n_bytes`` to ``out`` or ends, whichever is first.

    FluidSynth 2.3.1 to 2.3.3 (Debian 12's) go on rendering until every voice is silent, and a
    voice that is never released (a note-off lost from the file) keeps them writing for ever:
    one Mozart movement wrote 6.5 GB in two minutes. What is needed is known beforehand, so the
    run stops there. It runs in its own process group, so that where ``fluidsynth`` is a wrapper
    script the program it starts is stopped too.
    """
    start = time.monotonic()
    errors = out.with_suffix(".log")
    group = os.name == "posix"
    with open(errors, "wb") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=group,
        )
        try:
            delay = 0.002
            while process.poll() is None:
                try:
                    done = out.stat().st_size >= n_bytes
                except OSError:
                    done = False
                if done:
                    return
                if time.monotonic() - start > timeout:
                    raise DecodeError(name, "render failed", f"fluidsynth took more than {timeout:.0f} s")
                time.sleep(delay)
                delay = min(2 * delay, 0.05)
        finally:  # stopped on every way out, an interrupt included
            _stop(process, group)
    if process.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        log = errors.read_bytes().decode(errors="replace").strip()[-500:]
        raise DecodeError(name, "render failed", f"fluidsynth exited with {process.returncode}: {log}")


def _stop(process: subprocess.Popen[bytes], group: bool) -> None:
    """Kill ``process`` (its whole group with ``group``) unless it has ended, and reap it."""
    if process.poll() is None:
        if group:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:  # ended in between
                pass
        else:
            process.kill()
    process.wait()


def _render_fluidsynth(
    midi: pretty_midi.PrettyMIDI, midi_path: Path | None, *, sr: int, soundfont: Path, name: str
) -> np.ndarray:
    last_end = _last_note_end(midi)
    rate = sr if sr in _FLUIDSYNTH_RATES else 44100
    n_frames = math.ceil((last_end + RELEASE_SECONDS) * rate) + 1
    with tempfile.TemporaryDirectory(prefix="cadenza-render-") as tmp:
        if midi_path is None:
            midi_path = Path(tmp) / "score.mid"
            _playable(midi).write(str(midi_path))
        out = Path(tmp) / "out.raw"
        # -n no MIDI input, -i no shell, -q quiet; -F renders the file offline, with no audio
        # driver; raw float samples (stereo, this machine's byte order: no header to finish, so
        # a run stopped early is read as far as it got), so that loud passages are scaled below
        # rather than clipped.
        command = [
            shutil.which("fluidsynth") or "fluidsynth",
            "-n", "-i", "-q",
            "-g", str(FLUIDSYNTH_GAIN),
            "-r", str(rate),
            "-T", "raw", "-O", "float", "-E", "cpu",
            "-F", str(out),
            str(soundfont), str(midi_path),
        ]  # fmt: skip
        timeout = 60.0 + 2.0 * midi.get_end_time()  # far slower than real time means it hangs
        _fluidsynth(command, out, n_bytes=n_frames * 2 * 4, timeout=timeout, name=name)
        stereo = np.fromfile(out, dtype=np.float32, count=n_frames * 2)
    stereo = stereo[: len(stereo) // 2 * 2].reshape(-1, 2)
    y = stereo.mean(axis=1, dtype=np.float32)
    if rate != sr:
        y = _resample(y, rate, sr, "soxr_hq")
    y = np.ascontiguousarray(y[: round((last_end + RELEASE_SECONDS) * sr)], dtype=np.float32)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 1.0:
        y *= 0.9 / peak
    return y


def render_midi(
    midi: str | os.PathLike[str] | pretty_midi.PrettyMIDI,
    *,
    sr: int = 16000,
    soundfont: str | os.PathLike[str] | None = None,
    program: int | None = None,
    use_fluidsynth: bool | None = None,
) -> np.ndarray:
    """Render a score to mono audio.

    Parameters
    ----------
    midi : str, PathLike or pretty_midi.PrettyMIDI
        A standard MIDI file or a score in memory (not modified).
    sr : int
        Sample rate of the result.
    soundfont : str, PathLike or None
        The ``.sf2`` to play with; None uses :func:`find_soundfont`.
    program : int or None
        General MIDI program (0-127, 0-based: 0 is the grand piano) that every non-drum
        instrument plays instead of its own; None keeps the score's.
    use_fluidsynth : bool or None
        None (default) uses FluidSynth when the program and a soundfont are found and the
        built-in synthesiser otherwise; True requires FluidSynth; False always uses the
        built-in synthesiser. Either fallback warns once per process
        (:class:`RenderFallbackWarning`).

    Returns
    -------
    np.ndarray
        float32 samples, shape ``(n,)``, ending at most 1 s after the last note ends. FluidSynth
        output is scaled to a peak of 0.9 only if it would clip; the built-in synthesiser
        always normalises to 0.9. A score without notes gives ``midi.get_end_time()`` of silence.

    Raises
    ------
    cadenza.errors.DecodeError
        A MIDI file that is missing, empty, not MIDI ("not a MIDI file") or broken ("corrupt or
        truncated MIDI"), or a FluidSynth run that fails ("render failed").
    cadenza.errors.ParameterError
        Bad arguments, a ``soundfont`` that does not exist, or ``use_fluidsynth=True`` where
        FluidSynth or a soundfont is missing.

    Examples
    --------
    >>> import pretty_midi
    >>> from cadenza.audio import render_midi
    >>> pm = pretty_midi.PrettyMIDI()
    >>> strings = pretty_midi.Instrument(program=48)
    >>> strings.notes.append(pretty_midi.Note(velocity=90, pitch=60, start=0.0, end=0.5))
    >>> pm.instruments.append(strings)
    >>> y = render_midi(pm, sr=8000, program=0, use_fluidsynth=False)
    >>> y.dtype, 0.5 < len(y) / 8000 <= 1.5
    (dtype('float32'), True)
    """
    sr = _as_rate(sr, "sr")
    if program is not None and (
        isinstance(program, bool) or not isinstance(program, (int, np.integer)) or not 0 <= program <= 127
    ):
        raise ParameterError(f"program must be None or a General MIDI program 0-127, got {program!r}")
    if use_fluidsynth not in (None, True, False):
        raise ParameterError(f"use_fluidsynth must be None, True or False, got {use_fluidsynth!r}")
    if soundfont is not None and not Path(soundfont).is_file():
        raise ParameterError(f"soundfont {soundfont}: no such file")
    score, midi_path = _load_midi(midi)
    name = str(midi_path) if midi_path is not None else "<PrettyMIDI>"
    if program is not None:
        score, midi_path = _with_program(score, int(program)), None
    if _last_note_end(score) <= 0.0:
        return np.zeros(round(score.get_end_time() * sr), dtype=np.float32)

    sf2 = Path(soundfont) if soundfont is not None else find_soundfont()
    if use_fluidsynth is False:
        missing = "use_fluidsynth=False was passed"
    elif not fluidsynth_available():
        missing = "the fluidsynth program is not on the PATH"
    elif sf2 is None:
        missing = "no General MIDI soundfont was found (set $CADENZA_SOUNDFONT to an .sf2 file)"
    else:
        return _render_fluidsynth(score, midi_path, sr=sr, soundfont=sf2, name=name)
    if use_fluidsynth:
        raise ParameterError(f"use_fluidsynth=True, but {missing}; {_INSTALL_HINT}")
    _warn_fallback(missing)
    return synthesize(score, sr=sr)


def render_pianoroll(
    roll: np.ndarray,
    *,
    resolution: int,
    tempo: float = 120.0,
    lowest_pitch: int = 0,
    sr: int = 16000,
    program: int = 0,
    soundfont: str | os.PathLike[str] | None = None,
    use_fluidsynth: bool | None = None,
) -> np.ndarray:
    """Render a many-hot piano roll to mono audio.

    The roll becomes a score with :func:`pianoroll_to_midi` (velocity 100), which
    :func:`render_midi` plays. The result lasts at least as long as the roll, silent steps at
    the end included.

    Parameters
    ----------
    roll : np.ndarray
        Shape ``(n_steps, n_pitches)``; nonzero entries are on.
    resolution : int
        Time steps per beat.
    tempo : float
        Beats per minute.
    lowest_pitch : int
        MIDI pitch of column 0.
    sr : int
        Sample rate of the result.
    program : int
        General MIDI program (0-127) to play the notes with; 0 is the grand piano.
    soundfont, use_fluidsynth
        As for :func:`render_midi`.

    Returns
    -------
    np.ndarray
        float32 samples, shape ``(n,)``.

    Examples
    --------
    >>> import numpy as np
    >>> from cadenza.audio import render_pianoroll
    >>> roll = np.zeros((16, 88), dtype=np.uint8)
    >>> roll[:8, 48] = 1  # A4 (pitch 21 + 48 = 69) for two beats
    >>> y = render_pianoroll(roll, resolution=4, lowest_pitch=21, sr=8000, use_fluidsynth=False)
    >>> y.dtype, len(y) >= 16 * 0.125 * 8000
    (dtype('float32'), True)
    """
    midi = pianoroll_to_midi(
        roll, resolution=resolution, tempo=tempo, lowest_pitch=lowest_pitch, program=program
    )
    y = render_midi(midi, sr=sr, soundfont=soundfont, use_fluidsynth=use_fluidsynth)
    n_roll = round(np.asarray(roll).shape[0] * 60.0 / (tempo * resolution) * sr)
    if len(y) < n_roll:
        y = np.concatenate([y, np.zeros(n_roll - len(y), dtype=np.float32)])
    return y
