"""The clips of a listening test: read per model, cut, resampled, loudness-matched; anchors made.

Blinding depends on what a clip gives away besides its music, so every clip of a test is made
alike: the same sample rate (the lowest among the sources, so bandwidth does not tell a real
recording from a 16 kHz model), the same length (cut from the start, 20 ms fades at both
ends), and the same integrated loudness (ITU-R BS.1770 via pyloudnorm). The anchor is a real
clip low-passed at 3.5 kHz, as ITU-R BS.1534 prescribes for its low anchor, or lower in a
test whose band is narrower (:func:`anchor_cutoff`).

Examples
--------
>>> sr = 16000
>>> y = 0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * sr) / sr).astype(np.float32)
>>> ys, target = match_loudness([y, 0.1 * y], sr)
>>> [round(loudness_lufs(v, sr), 1) for v in ys] == [round(target, 1)] * 2
True
>>> float(np.abs(fit_length(y, sr, seconds=1.0)).max()) <= 0.5, len(fit_length(y, sr, seconds=1.0))
(True, 16000)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cadenza._fs import printable
from cadenza.audio.io import AUDIO_EXTENSIONS
from cadenza.data.corpora import SCORE_EXTENSIONS
from cadenza.errors import CadenzaError, DecodeError, ParameterError
from cadenza.evaluation.detectors import LUFS_FLOOR, loudness_lufs

log = logging.getLogger(__name__)

__all__ = [
    "ANCHOR_HZ",
    "ANCHOR_SHARE",
    "anchor_cutoff",
    "TARGET_LUFS",
    "fit_length",
    "lowpass_anchor",
    "match_loudness",
    "model_folders",
    "read_clip",
    "reference_clips",
    "resample",
]

#: The low anchor's cut-off (ITU-R BS.1534).
ANCHOR_HZ = 3500.0
#: The most of a test's band (half its sample rate) the anchor keeps: 3.5 kHz of a 16 kHz test's 8.
ANCHOR_SHARE = 0.4375
#: Clips are matched to this integrated loudness, or lower when a clip's peaks need the room.
TARGET_LUFS = -23.0
#: ... but never lower than this; clips that would still peak above the ceiling are limited.
MIN_TARGET_LUFS = -30.0
#: The peak ceiling (dBFS) of a loudness-matched clip.
PEAK_CEILING_DB = -1.0
#: Rounds of gain correction for a clip whose peaks are limited.
LIMIT_ROUNDS = 4
#: Fade in and out (seconds), the same for every clip, so a cut gives nothing away.
FADE_SECONDS = 0.02
#: A clip at most this much shorter than the test's length is padded (seconds).
SHORT_TOLERANCE = 0.05
#: Folders of an evaluation's ``clips/`` that are not models (calibration rows).
CALIBRATION_PREFIX = "calibration-"
#: The folder name of held-out real music inside a results folder.
REFERENCE_FOLDER = "reference"
#: The folder a listening test lives in, inside the results folder (never read as a model).
TEST_FOLDER = "listening"


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def clip_files(folder: str | os.PathLike) -> list[Path]:
    """The audio and score files under ``folder``, one per stem (audio before a score of the same stem)."""
    by_stem: dict[Path, Path] = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        ext = path.suffix.lower()
        if ext not in AUDIO_EXTENSIONS and ext not in SCORE_EXTENSIONS:
            continue
        stem = path.with_suffix("")
        if stem not in by_stem or (
            ext in AUDIO_EXTENSIONS and by_stem[stem].suffix.lower() not in AUDIO_EXTENSIONS
        ):
            by_stem[stem] = path
    return [by_stem[s] for s in sorted(by_stem)]


def model_folders(source: str | os.PathLike) -> tuple[dict[str, Path], Path | None]:
    """The models of a results folder and its held-out reference, when it has one.

    ``source`` is an evaluation output (its ``clips/`` folder is read) or any folder of
    per-model subfolders of WAV/MIDI. A subfolder named ``reference`` is the held-out real
    music; ``calibration-*`` folders, hidden folders and ``listening/`` are passed over.

    Returns
    -------
    models : dict of str to Path
        Model name (the folder's name) to its folder, in name order; only folders that hold audio or scores.
    reference : Path or None
    """
    source = Path(source)
    if not source.is_dir():
        raise ParameterError(f"{source}: no such folder (give a folder of per-model subfolders of WAV/MIDI)")
    root = source / "clips" if (source / "metrics.json").is_file() and (source / "clips").is_dir() else source
    models: dict[str, Path] = {}
    reference = None
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if _hidden(sub) or sub.name == TEST_FOLDER or sub.name.startswith(CALIBRATION_PREFIX):
            continue
        if not clip_files(sub):
            continue
        if sub.name == REFERENCE_FOLDER:
            reference = sub
        else:
            models[printable(sub.name)] = sub  # a name that is not UTF-8 shown as it was meant
    if not models:
        loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS]
        hint = f" ({len(loose)} audio files lie directly in it: put each model's in its own subfolder)"
        raise ParameterError(f"{root}: no model subfolders with WAV/MIDI files" + (hint if loose else ""))
    return models, reference


def read_clip(path: str | os.PathLike, *, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """One file as mono float32 and its rate; a score is rendered (16 kHz)."""
    from cadenza.audio import read_audio
    from cadenza.evaluation.clips import read_score_item

    path = Path(path)
    if path.suffix.lower() in SCORE_EXTENSIONS:
        item = read_score_item(path, path.stem, max_seconds)  # only the head that is heard is rendered
        y, sr = item.y, item.sr
        if max_seconds is not None:
            y = y[: int(max_seconds * sr)]
        return np.asarray(y, np.float32), int(sr)
    y, sr = read_audio(path, duration=max_seconds)
    return np.asarray(y, np.float32), int(sr)


def read_clips(
    files: Sequence[Path], *, max_seconds: float
) -> tuple[list[tuple[Path, np.ndarray, int]], list[tuple[str, str]]]:
    """``(file, y, sr)`` of each readable file (at most ``max_seconds`` each) and ``(file, reason)`` of the others."""
    clips, skipped = [], []
    for path in files:
        try:
            y, sr = read_clip(path, max_seconds=max_seconds)
        except (CadenzaError, OSError, ValueError, EOFError) as exc:
            reason = exc.reason if isinstance(exc, DecodeError) else str(exc) or type(exc).__name__
            skipped.append((str(path), reason))
            log.warning("skipping %s: %s", path, reason)
            continue
        if len(y) == 0:
            skipped.append((str(path), "no audio samples"))
            continue
        clips.append((path, y, sr))
    return clips, skipped


def reference_clips(
    reference: str | os.PathLike, *, n_clips: int, seconds: float, seed: int = 0
) -> tuple[list[tuple[str, np.ndarray, int]], list[tuple[str, str]]]:
    """Up to ``n_clips`` held-out clips of ``seconds`` (shorter ones are left out), with where each came from.

    ``reference`` is a feature store (its held-out split, decoded back to sound) or a folder of
    music, whose files (in a seeded order) are cut into consecutive clips dealt round-robin, so
    that many pieces are heard.
    """
    from cadenza.evaluation.clips import is_store, store_clips

    reference = Path(reference)
    if is_store(reference):
        items, _ = store_clips(reference, n_clips=n_clips, seconds=seconds, seed=seed)
        per_file = [[(it.origin, it.y, it.sr)] for it in items]
        skipped: list[tuple[str, str]] = []
    elif reference.exists():
        files = [reference] if reference.is_file() else clip_files(reference)
        files = [files[i] for i in np.random.default_rng(seed).permutation(len(files))]
        whole, skipped = read_clips(files, max_seconds=seconds * n_clips)
        per_file = []
        for path, y, sr in whole:
            step = int(round(seconds * sr))
            per_file.append(
                [(f"{path}@{a / sr:g}s", y[a : a + step], sr) for a in range(0, len(y) - step + 1, step)]
            )
    else:
        raise ParameterError(f"--reference {reference}: no such feature store, folder or file")
    clips: list[tuple[str, np.ndarray, int]] = []
    depth = 0
    while len(clips) < n_clips and any(depth < len(c) for c in per_file):
        clips += [c[depth] for c in per_file if depth < len(c)][: n_clips - len(clips)]
        depth += 1

    # a clip a few milliseconds short (frames rounding) is padded later; a shorter one is left out
    def long_enough(y: np.ndarray, sr: int) -> bool:
        return len(y) >= int(round((seconds - SHORT_TOLERANCE) * sr))

    short = [(o, "shorter than the test's clips") for o, y, sr in clips if not long_enough(y, sr)]
    clips = [c for c in clips if long_enough(c[1], c[2])]
    return clips, skipped + short


def resample(y: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """``y`` at ``target_sr`` (soxr, high quality)."""
    import soxr

    y = np.asarray(y, np.float32)
    if sr == target_sr or len(y) == 0:
        return y
    return soxr.resample(y, sr, target_sr, quality="HQ").astype(np.float32)


def fit_length(y: np.ndarray, sr: int, *, seconds: float) -> np.ndarray:
    """The first ``seconds`` of ``y`` (zero-padded when shorter) with :data:`FADE_SECONDS` fades at both ends."""
    n = int(round(seconds * sr))
    out = np.zeros(n, np.float32)
    out[: min(n, len(y))] = y[:n]
    fade = min(int(FADE_SECONDS * sr), n // 2)
    if fade:
        ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)).astype(np.float32)
        out[:fade] *= ramp
        out[n - fade :] *= ramp[::-1]
    return out


def anchor_cutoff(sr: int) -> float:
    """The low anchor's cut-off in a test at ``sr``: ITU-R BS.1534's 3.5 kHz, or 7/16 of the
    test's band where that is lower.

    BS.1534's 3.5 kHz assumes a full band (it keeps a sixth of 20 kHz). A study's listening test
    runs at its lowest rate, 8 kHz where WaveNet or Seq2Seq take part, and there 3.5 kHz kept all
    but the band's top 500 Hz: on rendered quartets the anchor differed from the real clip by
    -26.9 dB of its energy (-22.4 dB at 16 kHz), one critical band of seventeen, an anchor a
    listener could hardly tell from the real clip, so that honest listeners would fail the
    screening that compares the two.

    Examples
    --------
    >>> anchor_cutoff(44100), anchor_cutoff(16000), anchor_cutoff(8000)
    (3500.0, 3500.0, 1750.0)
    """
    return min(ANCHOR_HZ, ANCHOR_SHARE * sr / 2)


def anchor_name(cutoff: float) -> str:
    """``"3.5 kHz"``: the anchor's cut-off as the reports name it."""
    return f"{cutoff / 1000:g} kHz"


def lowpass_anchor(y: np.ndarray, sr: int, *, cutoff: float = ANCHOR_HZ) -> np.ndarray:
    """The low anchor of ITU-R BS.1534: ``y`` low-passed at ``cutoff`` Hz (8th-order Butterworth, zero phase)."""
    from scipy.signal import butter, sosfiltfilt

    if sr <= 2 * cutoff:
        raise ParameterError(f"a {cutoff:g} Hz anchor needs a sample rate above {2 * cutoff:g} Hz, got {sr}")
    sos = butter(8, cutoff, btype="low", fs=sr, output="sos")
    return sosfiltfilt(sos, np.asarray(y, np.float64)).astype(np.float32)


def _is_silent(lufs: float | None) -> bool:
    return lufs is None or lufs <= LUFS_FLOOR + 1.0


def match_loudness(
    clips: Sequence[np.ndarray], sr: int, *, target: float = TARGET_LUFS
) -> tuple[list[np.ndarray], float]:
    """Every clip scaled to one integrated loudness; the loudness reached (LUFS).

    The level is ``target``, or lower - down to :data:`MIN_TARGET_LUFS` - when a clip's peaks
    would otherwise rise above :data:`PEAK_CEILING_DB`; a clip that would peak above it even
    there is limited (clipped at the ceiling, its gain raised until its loudness holds).
    Silent clips are left as they are.
    """
    lufs = [loudness_lufs(y, sr) for y in clips]
    peaks = [20 * np.log10(max(float(np.abs(y).max(initial=0.0)), 1e-12)) for y in clips]
    room = [lu + PEAK_CEILING_DB - pk for lu, pk in zip(lufs, peaks) if not _is_silent(lu)]
    level = max(min([target, *room]), MIN_TARGET_LUFS)
    ceiling = 10 ** (PEAK_CEILING_DB / 20)
    out = []
    for y, lu in zip(clips, lufs):
        y = np.asarray(y, np.float32)
        if not _is_silent(lu):
            gain = 10 ** ((level - lu) / 20)
            for _ in range(LIMIT_ROUNDS):  # limiting lowers the loudness: raise the gain until it holds
                z = np.clip(y * np.float32(gain), -ceiling, ceiling).astype(np.float32)
                reached = loudness_lufs(z, sr)
                if reached is None or abs(reached - level) < 0.05:
                    break
                gain *= 10 ** ((level - reached) / 20)
            y = z
        out.append(y)
    return out, float(level)
