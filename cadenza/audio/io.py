"""Reading and writing audio files: any rate, channel count and sample format in, float32 out.

Decoding goes through ``soundfile`` (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3 from
libsndfile 1.1, AIFF, AU, ...). Formats libsndfile cannot read are tried with ``audioread``
when it is importable. Every failure raises :class:`~cadenza.errors.DecodeError` with one of
a few stable ``reason`` strings, suitable for a corpus manifest:

``"missing file"``, ``"unreadable file"``, ``"empty file"``, ``"not an audio file"``,
``"corrupt or truncated audio"``, ``"no audio samples"``, ``"non-finite samples"``,
``"unsupported format"``.

A file cut short whose first part still decodes (an Ogg stream without its last page, a WAV
whose data chunk promises more than the file holds, an MP3 shorter than its Xing header says)
is returned as far as it decodes, with a :class:`PartialAudioWarning` that says so.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import numbers
import os
import secrets
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from cadenza._fs import fsync_dir, not_a_file
from cadenza.errors import DecodeError, ParameterError

__all__ = [
    "AUDIO_EXTENSIONS",
    "DECODABLE_EXTENSIONS",
    "PartialAudioWarning",
    "audio_info",
    "is_silent",
    "read_audio",
    "write_audio",
]

#: ``res_type`` names (librosa's) -> soxr quality recipes.
RES_TYPES = {"soxr_vhq": "VHQ", "soxr_hq": "HQ", "soxr_mq": "MQ", "soxr_lq": "LQ", "soxr_qq": "QQ"}

#: Frames decoded at a time (mixing many channels down, resampling as a file decodes), so memory
#: stays about one output copy. A multiple of 1152, the frames of an MPEG-1 layer III frame (and
#: of two of MPEG-2's 576), chosen when glitches after the block boundaries of mono MPEG-2 MP3s
#: were put down to blocks of part frames; their cause was the seek after every read (see
#: :class:`_Unseeking`), which glitched MP3s of every rate in blocks of any size.
_BLOCK_FRAMES = 1152 * 57

#: Magic bytes at offset 0 of formats libsndfile reads.
_SNDFILE_MAGIC = (
    (b"RIFF", "WAV"),
    (b"RIFX", "WAV"),
    (b"RF64", "RF64"),
    (b"BW64", "RF64"),
    (b"riff\x2e\x91\xcf\x11", "W64"),
    (b"FORM", "AIFF"),
    (b"fLaC", "FLAC"),
    (b"OggS", "OGG"),
    (b".snd", "AU"),
    (b"dns.", "AU"),
    (b"caff", "CAF"),
    (b"NIST_1A", "NIST"),
    (b"Creative Voice File", "VOC"),
    (b"ID3", "MP3"),
)
#: Magic bytes of audio formats libsndfile does not read (audioread may, through ffmpeg/gstreamer).
_FOREIGN_MAGIC = (
    (b"#!AMR", "AMR"),
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMA"),
    (b"wvpk", "WavPack"),
    (b"MAC ", "Monkey's Audio"),
)


def _soundfile_reads_mp3() -> bool:
    """True when the bundled libsndfile decodes MP3 (libsndfile >= 1.1)."""
    return "MP3" in sf.available_formats()


def _import_audioread() -> Any:
    """The ``audioread`` module, or None when it is not installed."""
    try:
        import audioread
    except ImportError:
        return None
    return audioread


#: Lower-case extensions (with the dot) of the audio files cadenza knows, whether or not this
#: environment decodes them: a corpus lists every one of them, so that a file it cannot read
#: shows up in the manifest with its reason ("unsupported format") instead of being passed over.
#: AAC (.m4a, .aac) and WMA are decoded by audioread where it has ffmpeg or GStreamer.
AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".opus",
    ".caf", ".w64", ".m4a", ".aac", ".wma",
)  # fmt: skip


def _decodable_extensions() -> frozenset[str]:
    ext = {".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc", ".au", ".caf", ".w64"}
    if _soundfile_reads_mp3() or _import_audioread() is not None:
        ext.add(".mp3")
    if "OPUS" in sf.available_subtypes("OGG"):
        ext.add(".opus")
    return frozenset(ext)


#: The subset of :data:`AUDIO_EXTENSIONS` that :func:`read_audio` decodes in this environment
#: (MP3 needs libsndfile >= 1.1 or audioread; Opus needs a libsndfile built with it).
DECODABLE_EXTENSIONS: frozenset[str] = _decodable_extensions()


class PartialAudioWarning(UserWarning):
    """An audio file that breaks off before its stream ends: only its first part decodes.

    :func:`read_audio` returns the samples that decode and warns with this category; a corpus
    job records :attr:`note` in its manifest.

    Attributes
    ----------
    path : str
        The file.
    seconds : float
        The audio that decoded, in seconds.
    detail : str
        How the cut shows (which header promises more than the file holds).
    """

    def __init__(self, path: str | os.PathLike[str], seconds: float, detail: str) -> None:
        self.path = str(path)
        self.seconds = float(seconds)
        self.detail = detail
        super().__init__(f"{self.path}: {self.note} ({detail})")

    @property
    def note(self) -> str:
        """One line for a manifest: ``"kept in part: decoded 1.2 s"``."""
        return (
            f"kept in part: decoded {self.seconds:.1f} s"
            if self.seconds >= 0.1
            else (f"kept in part: decoded {self.seconds * 1000:.0f} ms")
        )


class UnfinishedAudioWarning(PartialAudioWarning):
    """A WAV file whose writer never came back to fill in its sizes (a recorder whose battery
    died, a program killed while recording): its header says 0 frames, its samples follow it.
    :func:`read_audio` reads them, as far as the file goes, and warns with this category."""

    @property
    def note(self) -> str:
        """One line for a manifest: ``"header never finished: read 12.3 s after it"``."""
        return f"header never finished: read {self.seconds:.1f} s after it"


class LoudAudioWarning(UserWarning):
    """A floating-point file whose samples go beyond full scale: scaled down, not clipped.

    Floating-point WAV, AIFF-C or CAF files (a DAW's export, a tool that writes another scale)
    may peak far above 1.0 (0 dBFS); clipped to [-1, 1] such a file would become a square wave.
    Above :data:`LOUD_PEAK` :func:`read_audio` divides what it read by its peak instead and
    warns with this category; a corpus job records :attr:`note` in its manifest.
    """

    def __init__(self, path: str | os.PathLike[str], peak: float) -> None:
        self.path = str(path)
        self.peak = float(peak)
        super().__init__(f"{self.path}: {self.note}")

    @property
    def note(self) -> str:
        """One line for a manifest: ``"scaled down: peaked at +9.5 dBFS"``."""
        return f"scaled down: peaked at +{20 * math.log10(self.peak):.1f} dBFS"


class MendedAudioWarning(UserWarning):
    """A float file with a few NaN or infinite samples (a writer's glitch), read with them set to
    0 by ``read_audio(..., mend=True)``; a corpus job records :attr:`note` in its manifest."""

    def __init__(self, path: str | os.PathLike[str], n_bad: int, n: int) -> None:
        self.path = str(path)
        self.n_bad, self.n = int(n_bad), int(n)
        super().__init__(f"{self.path}: {self.note}")

    @property
    def note(self) -> str:
        """One line for a manifest: ``"mended: 100 of 66150 samples were NaN or infinite, set to 0"``."""
        return f"mended: {self.n_bad} of {self.n} samples were NaN or infinite, set to 0"


#: The most of a file's samples ``read_audio(..., mend=True)`` sets to 0 for being NaN or
#: infinite (1%); more is damage, not a glitch, and the file is refused.
MAX_MENDED = 0.01


#: A peak above this (+6 dBFS) is a float file of another scale: divided by its peak and reported
#: with :class:`LoudAudioWarning`. Up to it, overs are clipped, as players do: a lossy decoder's
#: overshoot on a file mastered at full scale (+0.5 to +4 dB on loud material) stays at the
#: file's level, and a window read with ``offset``/``duration`` at the level of the whole: a
#: window of a float file is scaled by the whole file's peak (:func:`_float_file_peak`).
LOUD_PEAK = 2.0

#: A float sample beyond this (2^32, about +193 dBFS) is damaged data: a file written in another
#: tool's units (16- or 32-bit integer scale) peaks below 2^31, and one wild sample would
#: otherwise scale the whole file down to nothing (:data:`LOUD_PEAK`) and be skipped as too short.
WILD_SAMPLE = 2.0**32

#: Sample rates a file of sound can have, in Hz. A header outside them is damaged: at 1 Hz a
#: 30 KB WAV would become 4 hours of audio (a 2 GB feature shard) once resampled, at 2 GHz none.
#: 1 kHz holds nothing above 500 Hz; 3.072 MHz is 64 times 48 kHz, beyond any recording's rate.
AUDIO_RATES = (1000, 3_072_000)

#: libsndfile's floating-point sample formats: the only ones that can go beyond full scale.
_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


def _native(path: str | os.PathLike[str]) -> str | bytes:
    """``path`` as libsndfile can open it. A name that is not valid in the file system's
    encoding (Latin-1 bytes on a UTF-8 system: old archives, zips made on Windows) reaches
    Python with surrogates, which soundfile cannot encode; its bytes open it."""
    text = os.fspath(path)
    try:
        text.encode(sys.getfilesystemencoding())
    except UnicodeEncodeError:
        return os.fsencode(text)
    return text


@functools.lru_cache(maxsize=256)
def _float_file_peak(path: str, mtime_ns: int, size: int, mono: bool) -> float:
    """The largest finite magnitude of a whole float file as read (mixed down when ``mono``).

    Read block by block, once per version of the file (``mtime_ns`` and ``size`` key the cache):
    the listening test and the evaluation read the first seconds of many files, and a window
    must be scaled as the whole file is, not by its own peak.
    """
    peak = 0.0
    with _Opened(Path(path)) as opened:
        for block in opened.f.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
            if mono and block.shape[1] > 1:
                block = block.mean(axis=1)
            block = np.abs(block)
            block = block[np.isfinite(block)]
            if block.size:
                peak = max(peak, float(block.max()))
    return peak


# --------------------------------------------------------------------------------------------
# Classifying files before and after libsndfile has had a go at them.


def _sniff(head: bytes) -> tuple[str, str]:
    """Classify the first bytes of a file as ``(kind, name)``.

    ``kind`` is "sndfile" (libsndfile reads it), "foreign" (audio libsndfile does not read),
    "text", "midi" or "unknown".
    """
    for magic, name in _SNDFILE_MAGIC:
        if head.startswith(magic):
            return "sndfile", name
    bom = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}.get(head[:2])
    if bom and _looks_like_text(head[2 : len(head) & ~1].decode(bom, errors="replace")):
        return "text", "UTF-16 text"  # a byte-order mark, which an MPEG frame sync also matches
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        # An MPEG audio frame sync; layer bits 00 mean AAC in an ADTS stream.
        return ("foreign", "AAC") if (head[1] & 0x06) == 0 else ("sndfile", "MP3")
    for magic, name in _FOREIGN_MAGIC:
        if head.startswith(magic):
            return "foreign", name
    if head[4:8] == b"ftyp":
        return "foreign", "MP4/M4A"
    if head.startswith(b"MThd"):
        return "midi", "MIDI"
    if head and b"\x00" not in head and _looks_like_text(head.decode("utf-8", errors="replace")):
        return "text", "HTML/XML" if head.lstrip().startswith(b"<") else "text"
    return "unknown", ""


def _looks_like_text(text: str) -> bool:
    """True when (nearly) every character of ``text`` is printable or a line break."""
    n_bad = sum(1 for c in text if c == "\ufffd" or (not c.isprintable() and c not in "\r\n\t\f"))
    return bool(text) and n_bad <= max(1, len(text) // 100)  # allow a multibyte character cut at the end


def _check_file(path: Path) -> tuple[str, str]:
    """Raise the DecodeError for a missing, unreadable, empty or non-audio file; else sniff it."""
    problem = not_a_file(path)
    if problem is not None:
        reason, detail = problem
        raise DecodeError(path, "not an audio file" if reason == "not a file" else reason, detail)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except PermissionError as e:
        raise DecodeError(path, "unreadable file", f"permission denied: {e.strerror}") from e
    except OSError as e:
        raise DecodeError(path, "unreadable file", str(e)) from e
    if not head:
        raise DecodeError(path, "empty file", "0 bytes")
    kind, name = _sniff(head)
    if kind == "text":
        raise DecodeError(path, "not an audio file", f"the file holds {name}, not audio")
    if kind == "midi":
        raise DecodeError(path, "not an audio file", "a MIDI file: render it with cadenza.audio.render_midi")
    return kind, name


def _check_rate(path: Path, name: str, sr: int) -> None:
    """Raise the DecodeError for a header whose sample rate no sound has (:data:`AUDIO_RATES`)."""
    low, high = AUDIO_RATES
    if not low <= sr <= high:
        raise DecodeError(
            path,
            "corrupt or truncated audio",
            f"the {name or 'audio'} header gives a sample rate of {sr} Hz (audio is {low} Hz to {high} Hz)",
        )


def _needs_audioread(kind: str, name: str) -> bool:
    return kind == "foreign" or (name == "MP3" and not _soundfile_reads_mp3())


def _open_error(path: Path, kind: str, name: str, error: Exception) -> DecodeError:
    """The DecodeError for a file libsndfile refused to open."""
    if kind == "sndfile":
        return DecodeError(path, "corrupt or truncated audio", f"{name} header, but libsndfile says: {error}")
    return DecodeError(path, "not an audio file", f"no known audio header; libsndfile says: {error}")


def _ogg_cut(path: Path) -> str | None:
    """How an Ogg file shows it was cut short, or None when its last page ends the stream.

    An Ogg stream ends with a page flagged end-of-stream; libsndfile decodes a file that
    breaks off before it without a word, up to the last whole page.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        pos, last_flags = 0, None
        while pos + 27 <= size:
            fh.seek(pos)
            head = fh.read(27)  # capture pattern, version, flags, granule, serial, sequence, CRC, n_segments
            if head[:4] != b"OggS":
                if pos and _finds(fh, b"OggS", pos + 1):  # pages follow: damage in the middle
                    return f"the Ogg pages from byte {pos} are damaged (the decoder passes over them)"
                break  # bytes after the last page (a tag a tool appended) are not part of the stream
            table = fh.read(head[26])
            end = pos + 27 + len(table) + sum(table)
            if len(table) < head[26] or end > size:
                return f"the Ogg page at byte {pos} breaks off at the end of the file"
            last_flags, pos = head[5], end
        else:
            if pos < size:
                return f"the file ends {size - pos} bytes into an Ogg page header"
    if last_flags is not None and not last_flags & 0x04:
        return "the last Ogg page does not end the stream"
    return None


def _finds(fh: Any, needle: bytes, start: int) -> bool:
    """Whether ``needle`` occurs in the open file ``fh`` at or after ``start``."""
    import mmap

    with contextlib.suppress(ValueError, OSError), mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(needle, start) >= 0
    return False


def _wav_cut(path: Path) -> str | None:
    """How a RIFF WAV file shows it was cut short: a data chunk longer than what follows it."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RIFX, RF64 and W64 keep their sizes elsewhere; not checked
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            n_bytes = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                # 0 and 0xFFFFFFFF: a streaming writer that never came back to fill the size in.
                if n_bytes not in (0, 0xFFFFFFFF) and size - pos - 8 < n_bytes:
                    return f"the WAV data chunk promises {n_bytes} bytes, the file holds {size - pos - 8}"
                return None
            pos += 8 + n_bytes + (n_bytes & 1)
    return None


def _cut_short(path: Path, name: str, f: sf.SoundFile, end: int) -> str | None:
    """How a file that decoded up to frame ``end`` shows it was cut short, or None."""
    if name == "OGG":
        return _ogg_cut(path)
    if name == "WAV":
        return _wav_cut(path)
    # Formats whose header counts the frames (FLAC's STREAMINFO, MP3's Xing header): compare.
    # MP3 lengths without a Xing header are estimates from the file size, hence the slack.
    missing = f.frames - end
    if missing > max(0.01 * f.frames, 0.1 * f.samplerate):
        return f"the {name} header promises {f.frames / f.samplerate:.2f} s"
    return None


# --------------------------------------------------------------------------------------------
# Argument checks.


def _as_rate(value: Any, name: str) -> int:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and np.isfinite(value)
    if not ok or value != int(value) or value <= 0:
        raise ParameterError(f"{name} must be a positive integer number of samples per second, got {value!r}")
    return int(value)


def _check_read_args(sr: Any, offset: float, duration: float | None, res_type: str) -> int | None:
    if res_type not in RES_TYPES:
        raise ParameterError(f"unknown res_type {res_type!r}; expected one of {sorted(RES_TYPES)}")
    if not np.isfinite(offset) or offset < 0:
        raise ParameterError(f"offset must be a finite number of seconds >= 0, got {offset!r}")
    if duration is not None and (not np.isfinite(duration) or duration <= 0):
        raise ParameterError(f"duration must be None or a number of seconds > 0, got {duration!r}")
    return None if sr is None else _as_rate(sr, "sr")


# --------------------------------------------------------------------------------------------
# Decoding.


#: Uncompressed 8- and 16-bit PCM, whose mono mix is read as integers (:func:`_read_frames`).
_INT_MIX_SUBTYPES = frozenset({"PCM_S8", "PCM_U8", "PCM_16"})


def _mixes_as_integers(f: sf.SoundFile) -> bool:
    """True when ``f``'s channel mean comes out the same, bit for bit, from its samples read as int16.

    libsndfile's float for a sample ``s`` of 8 or 16 bits is ``s / 32768``, exactly; so is
    numpy's cast of ``s`` to float32 scaled by a power of two. With a power-of-two channel count
    ``C`` the weights ``1 / C`` are powers of two as well, and every product and partial sum of the
    mix fits float32's 24-bit mantissa (at most ``16 + log2 C`` bits): both give the exact mean.
    Reading int16 skips libsndfile's float conversion, which costs more than the rest of
    decoding a WAV (a minute of CD stereo to mono: 14 ms through floats, 6 ms through int16).
    FLAC gains nothing (its decoding dominates), 24-bit PCM neither; both are read as floats.
    """
    c = f.channels
    return f.subtype in _INT_MIX_SUBTYPES and f.format != "FLAC" and c & (c - 1) == 0 and c <= 256


def _read_frames(f: sf.SoundFile, n_frames: int, *, mono: bool) -> np.ndarray:
    """Read up to ``n_frames`` (-1: to the end) from an open file as float32.

    Returns ``(n,)`` when ``mono`` else ``(n, channels)``. Many channels are mixed down block by
    block into one preallocated output, so memory stays about one copy of the result; 8- and
    16-bit PCM is read as int16 and converted by numpy (:func:`_mixes_as_integers`: the same
    floats, faster).
    """
    if n_frames < 0 and not f.seekable():
        # libsndfile reads "to the end" only where it can seek, which it cannot in a GSM 6.10 WAV
        # (a telephone or voice recorder's format): block by block until no frame comes.
        blocks = []
        while len(block := _read_frames(f, _BLOCK_FRAMES, mono=mono)):
            blocks.append(block)
        return np.concatenate(blocks) if blocks else np.zeros((0,) if mono else (0, f.channels), np.float32)
    as_int = mono and _mixes_as_integers(f)
    if not (mono and f.channels > 1) and not as_int:
        return f.read(n_frames, dtype="float32", always_2d=not mono)
    # f.frames can overestimate (MP3 lengths are estimates); the output shrinks or grows to fit.
    capacity = n_frames if n_frames >= 0 else max(f.frames - f.tell(), 0)
    out = np.empty(capacity, dtype=np.float32)
    buf = np.empty((_BLOCK_FRAMES, f.channels), dtype=np.float32)
    ints = np.empty((_BLOCK_FRAMES, f.channels), dtype=np.int16) if as_int else None
    # The mix as a matrix-vector product: numpy's mean over a short last axis is ~10x slower.
    # int16 samples are scaled to [-1, 1) by the same product (2**-15 / C is a power of two).
    weights = np.full(f.channels, (2.0**-15 if as_int else 1.0) / f.channels, dtype=np.float32)
    pos = 0
    while n_frames < 0 or pos < n_frames:
        want = _BLOCK_FRAMES if n_frames < 0 else min(_BLOCK_FRAMES, n_frames - pos)
        if ints is None:
            block = f.read(want, dtype="float32", always_2d=True, out=buf[:want])  # (n, channels)
        else:
            block = f.read(want, dtype="int16", always_2d=True, out=ints[:want])
        n = len(block)
        if n == 0:
            break
        if pos + n > len(out):
            out = np.concatenate([out[:pos], np.empty(max(len(out), n), dtype=np.float32)])
        if f.channels == 1:  # int16 only: scaled in float32 (exact), cheaper than a product with one column
            np.multiply(block[:, 0], weights[0], out=out[pos : pos + n], dtype=np.float32)
        else:
            if ints is not None:
                block = buf[:n]
                np.copyto(block, ints[:n])  # int16 -> float32: exact
            np.matmul(block, weights, out=out[pos : pos + n])
        pos += n
    return out[:pos]


class _Scanned:
    """What :func:`_read_resampled` saw of the file's own samples before resampling them."""

    def __init__(self) -> None:
        self.n = self.bad = self.wild = 0
        self.peak = 0.0

    def add(self, block: np.ndarray) -> np.ndarray:
        """Count ``block``'s samples, and give it back with its non-finite ones at 0, to be
        resampled so (a NaN would smear over the resampler's whole filter): :func:`_load`
        decides whether they are mended or the file refused."""
        bad, wild, peak = _scan(block)
        if bad:
            block = np.nan_to_num(block, copy=not block.flags.writeable, nan=0.0, posinf=0.0, neginf=0.0)
        self.n += len(block)
        self.bad, self.wild, self.peak = self.bad + bad, self.wild + wild, max(self.peak, peak)
        return block


def _read_resampled(
    f: sf.SoundFile, n_frames: int, sr: int, res_type: str, scanned: _Scanned, minus: float = 0.0
) -> np.ndarray:
    """Up to ``n_frames`` (-1: to the end) of ``f`` mixed to mono and resampled to ``sr`` block by
    block as they decode: the samples :func:`_resample` gives from the whole decoding (soxr's
    stream is bit for bit its one-shot), in the memory of the result alone. Decoded whole first,
    an hour of 44.1 kHz audio held 635 MB at the file's rate beside its 318 MB at 22.05 kHz.
    ``scanned`` counts the file's own samples (how many, non-finite, wild, their peak); ``minus``
    is taken from each before it is resampled (a constant offset: resampled with it, the first
    and last samples are steps the resampler rings on)."""
    stream = soxr.ResampleStream(f.samplerate, sr, 1, dtype="float32", quality=RES_TYPES[res_type])
    expected = n_frames if n_frames >= 0 else max(f.frames - f.tell(), 0)
    out = np.empty(round(expected * sr / f.samplerate) + 64, dtype=np.float32)
    pos = 0
    while True:
        want = _BLOCK_FRAMES if n_frames < 0 else min(_BLOCK_FRAMES, n_frames - scanned.n)
        block = _read_frames(f, want, mono=True) if want > 0 else np.zeros(0, np.float32)
        block = scanned.add(block)
        if minus:
            block = block - np.float32(minus)
        last = len(block) < want or want == 0 or (n_frames >= 0 and scanned.n >= n_frames)
        chunk = stream.resample_chunk(block, last=last)
        if pos + len(chunk) > len(out):  # the header undercounted (an MP3's estimate)
            out = np.concatenate([out[:pos], np.empty(max(len(out), len(chunk)), dtype=np.float32)])
        out[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
        if last:
            break
    n_out = round(scanned.n * sr / f.samplerate)  # exactly as _resample cuts or pads
    if pos < n_out:
        out = np.concatenate([out[:pos], np.zeros(n_out - pos, dtype=np.float32)])
    return out[:n_out]


def _unfinished_wav(path: Path) -> tuple[dict[int, bytes], str] | None:
    """Where a RIFF WAV's data chunk says 0 bytes and sound follows it (a writer that never came
    back to fill its sizes in): the header's bytes as they should have been written (by file
    offset), and what was wrong; else None."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos, align = 12, 0
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            n_bytes = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"fmt ":
                fmt = fh.read(min(n_bytes, 16))
                align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else 0
            elif chunk[:4] == b"data":
                if n_bytes or not align:
                    return None
                n_data = (size - pos - 8) // align * align
                if not n_data or n_data >= 2**32:
                    return None
                patches = {
                    4: min(size - 8, 2**32 - 1).to_bytes(4, "little"),
                    pos + 4: n_data.to_bytes(4, "little"),
                }
                return patches, f"its data chunk says 0 bytes; {n_data} follow it"
            pos += 8 + n_bytes + (n_bytes & 1)
    return None


def _oversize_wav(path: Path) -> tuple[bytes, int, int] | None:
    """Where a RIFF WAV holds more than 4 GiB of samples, which its 32-bit sizes cannot say (they
    wrap, or say 0xFFFFFFFF: a recorder's or an old tool's long take; libsndfile reads the
    wrapped size and gives the first minutes, or milliseconds, of hours):
    ``(header, offset, length)``: an RF64 header that says the true size, and where the samples
    lie in the file. None for any other file.
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size <= 2**32:
            return None
        head = fh.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos, fmt = 12, b""
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            n_bytes = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"fmt ":
                fmt = fh.read(n_bytes)
            elif chunk[:4] == b"data":
                align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 16 else 0
                left = size - pos - 8
                if not align:
                    return None
                if n_bytes == 0xFFFFFFFF:
                    n_data = left
                elif left >= n_bytes + 2**32:  # wrapped: as many 4 GiB as the file holds more
                    n_data = n_bytes + (left - n_bytes) // 2**32 * 2**32
                else:
                    return None
                n_data = n_data // align * align
                fmt_chunk = b"fmt " + len(fmt).to_bytes(4, "little") + fmt + (b"\0" if len(fmt) & 1 else b"")
                n_head = 12 + 36 + len(fmt_chunk) + 8
                ds64 = (
                    b"ds64"
                    + (28).to_bytes(4, "little")
                    + (n_head - 8 + n_data).to_bytes(8, "little")
                    + n_data.to_bytes(8, "little")
                    + (n_data // align).to_bytes(8, "little")
                    + (0).to_bytes(4, "little")
                )
                header = b"RF64" + b"\xff\xff\xff\xff" + b"WAVE" + ds64 + fmt_chunk + b"data\xff\xff\xff\xff"
                return header, pos + 8, n_data
            pos += 8 + n_bytes + (n_bytes & 1)
    return None


class _Prefixed(io.RawIOBase):
    """``head`` followed by the bytes ``[start, start + length)`` of a file, read as one file."""

    def __init__(self, path: Path, head: bytes, start: int, length: int) -> None:
        self.fh = open(path, "rb")  # noqa: SIM115 - closed with this object
        self.head, self.start, self.length = head, start, length
        self.at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.at, 2: len(self.head) + self.length}[whence]
        self.at = max(0, base + offset)
        return self.at

    def tell(self) -> int:
        return self.at

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = 0
        if self.at < len(self.head):
            part = self.head[self.at : self.at + len(view)]
            view[: len(part)] = part
            n = len(part)
        body = self.at + n - len(self.head)
        want = min(len(view) - n, self.length - body)
        if want > 0:
            self.fh.seek(self.start + body)
            n += self.fh.readinto(view[n : n + want])
        self.at += n
        return n

    def close(self) -> None:
        self.fh.close()
        super().close()


class _Patched(io.RawIOBase):
    """A file read as if some of its bytes (``patches``: offset -> bytes) were others."""

    def __init__(self, path: Path, patches: dict[int, bytes]) -> None:
        self.fh = open(path, "rb")  # noqa: SIM115 - closed with this object
        self.patches = patches

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()

    def readinto(self, buffer: Any) -> int:
        at = self.fh.tell()
        n = self.fh.readinto(buffer)
        view = memoryview(buffer).cast("B")
        for start, data in self.patches.items():
            lo, hi = max(start, at), min(start + len(data), at + n)
            if lo < hi:
                view[lo - at : hi - at] = data[lo - start : hi - start]
        return n

    def close(self) -> None:
        self.fh.close()
        super().close()


def _mpeg_in_wav(path: Path) -> tuple[int, int] | None:
    """Where the MPEG audio of a WAV file whose format tag is MPEG (0x50) or MPEG layer 3 (0x55)
    lies, ``(offset, length)`` (some recorders and old tools wrap MP3 so): libsndfile refuses
    the container ("Malformed 'fmt ' chunk") but reads the stream inside. None for any other file."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos, tag = 12, None
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            n_bytes = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"fmt ":
                tag = int.from_bytes(fh.read(2), "little")
            elif chunk[:4] == b"data":
                if tag not in (0x50, 0x55):
                    return None
                end = size if n_bytes in (0, 0xFFFFFFFF) else min(size, pos + 8 + n_bytes)
                return (pos + 8, end - pos - 8) if end > pos + 8 else None
            pos += 8 + n_bytes + (n_bytes & 1)
    return None


class _Window(_Patched):
    """The bytes ``[start, start + length)`` of a file, read as a file of their own."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        super().__init__(path, {})
        self.start, self.length = start, length
        self.fh.seek(start)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: self.start, 1: self.fh.tell(), 2: self.start + self.length}[whence]
        return self.fh.seek(min(max(base + offset, self.start), self.start + self.length)) - self.start

    def tell(self) -> int:
        return self.fh.tell() - self.start

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        left = self.start + self.length - self.fh.tell()
        return self.fh.readinto(view[: max(0, min(len(view), left))])


#: kbit/s by bitrate index 1-14, for (MPEG-1?, layer).
_MP3_KBPS = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
#: Sample rates by rate index, for the version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5).
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _id3_end(data: Any, pos: int, size: int) -> int:
    """Where an ID3v2 tag starting at ``pos`` ends."""
    tag = data[pos + 6 : pos + 10]
    n = (tag[0] & 0x7F) << 21 | (tag[1] & 0x7F) << 14 | (tag[2] & 0x7F) << 7 | tag[3] & 0x7F
    return min(size, pos + 10 + n + (10 if data[pos + 5] & 0x10 else 0))  # with its footer


def _mp3_walk(data: Any, size: int) -> Iterator[tuple[int, int, bool]]:
    """``(offset, samples, starts a file)`` of each MPEG audio frame of an MP3 file in order, from
    the frame headers alone; "starts a file" for a frame after the first that holds a Xing,
    Info or VBRI header, or that follows an ID3v2 tag (the next of MP3 files joined end to end),
    with the offset of that tag then. Junk between frames (a damaged frame, an ID3v1 trailer) is
    passed over; the walk stops where no frame follows."""
    pos, n_frames, misses = 0, 0, 0
    tag_at = None  # where an ID3v2 tag after the first frame began
    while pos + 4 <= size:
        if data[pos : pos + 3] == b"ID3" and pos + 10 <= size:
            tag_at = pos if n_frames else None
            pos = _id3_end(data, pos, size)
            continue
        b0, b1, b2 = data[pos], data[pos + 1], data[pos + 2]
        version, layer_bits = (b1 >> 3) & 3, (b1 >> 1) & 3
        rate_index, kbps_index = (b2 >> 2) & 3, b2 >> 4
        if (
            b0 != 0xFF
            or b1 & 0xE0 != 0xE0
            or version == 1
            or not layer_bits
            or rate_index == 3
            or kbps_index in (0, 15)
        ):
            if n_frames == 0 and pos < 65536 or misses < 64:  # junk before the stream, or a damaged frame
                nxt = data.find(b"\xff", pos + 1)
                nxt_tag = data.find(b"ID3", pos + 1, nxt if nxt >= 0 else size)
                if nxt_tag >= 0:
                    nxt = nxt_tag
                if nxt < 0:
                    break
                misses += n_frames > 0
                pos = nxt
                continue
            break
        mpeg1, layer = version == 3, 4 - layer_bits
        rate = _MP3_RATES[version][rate_index]
        kbps = _MP3_KBPS[(mpeg1, layer)][kbps_index - 1]
        pad = (b2 >> 1) & 1
        if layer == 1:
            length, per_frame = (12000 * kbps // rate + pad) * 4, 384
        else:
            per_frame = 1152 if mpeg1 or layer == 2 else 576
            length = (144000 if mpeg1 or layer == 2 else 72000) * kbps // rate + pad
        tagged = any(data.find(t, pos, min(pos + length, pos + 48)) >= 0 for t in (b"Xing", b"Info", b"VBRI"))
        starts = n_frames > 0 and (tagged or tag_at is not None)
        yield (
            (tag_at if tag_at is not None else pos),
            (0 if tagged else per_frame),
            starts or (n_frames == 0 and tagged),
        )
        tag_at = None
        n_frames += 1
        pos += length


def _mp3_frames_samples(path: Path) -> int | None:
    """The samples an MP3 file holds, counted from its frame headers, where its first frame has
    no Xing, Info or VBRI header (which give libsndfile the count); None otherwise, or where the
    stream cannot be walked. libsndfile estimates the length of such a file from its size and
    first frame's bit rate, and reads no further: a VBR file without the header (an old
    encoder's, a cutting tool's) read as 8.5 of its 30 s, without a word."""
    import mmap

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 128:
            return None
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            samples, n_frames = 0, 0
            for _, n, starts in _mp3_walk(data, size):
                if n_frames == 0 and starts:
                    return None  # libsndfile reads its count
                samples += n
                n_frames += 1
    return samples if n_frames >= 8 else None


def _stream_starts(path: Path, fmt: str) -> list[int]:
    """Byte offsets (after 0) where another stream begins in an Ogg or MP3 file made of several
    one after another: the links of a chained Ogg file (a radio recording, Ogg files joined end
    to end), MP3 files joined by ``cat`` (each with its own Xing header or ID3 tag). libsndfile
    reads the first alone: 8 s of two joined files were read as 4 s, without a word."""
    import mmap

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 128:
            return []
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if fmt == "MP3":
                # The walk costs 0.35 s an hour of MP3 in Python; a file with no Xing, Info or
                # VBRI header or ID3 tag past its first frame (almost all) needs none.
                lead = _id3_end(data, 0, size) if data[:3] == b"ID3" and size >= 10 else 0
                first = [
                    at for t in (b"Xing", b"Info", b"VBRI") if 0 <= (at := data.find(t, lead, lead + 70000))
                ]
                after = min(first) + 4 if first else lead + 1
                if all(data.find(t, after) < 0 for t in (b"Xing", b"Info", b"VBRI", b"ID3")):
                    return []
                return [pos for pos, _, starts in _mp3_walk(data, size) if starts and pos > 0]
            starts, live, pos = [], set(), 0
            while pos + 27 <= size:
                if data[pos : pos + 4] != b"OggS":
                    pos = data.find(b"OggS", pos + 1)  # damaged pages: the decoder passes over them too
                    if pos < 0:
                        break
                    continue
                flags, serial, n_segments = data[pos + 5], bytes(data[pos + 14 : pos + 18]), data[pos + 26]
                if flags & 0x02:  # the first page of a logical stream
                    if not live and pos > 0:
                        starts.append(pos)
                    live.add(serial)
                if flags & 0x04:  # its last
                    live.discard(serial)
                pos += 27 + n_segments + sum(data[pos + 27 : pos + 27 + n_segments])
            return starts


def _as_read(data: np.ndarray, out: np.ndarray | None, always_2d: bool) -> np.ndarray:
    """``(frames, channels)`` ``data`` as ``SoundFile.read`` gives it: in ``out`` where given,
    one channel as a 1-D array unless ``always_2d``. The readers that stand in for a
    ``SoundFile`` (:class:`_Unseeking`, :class:`_Chain`, :class:`_UntilError`) end so."""
    if out is not None:
        out = out.reshape(len(out), -1)
        out[: len(data)] = data
        data = out[: len(data)]
    return data if always_2d or data.shape[1] > 1 else data[:, 0]


#: numpy dtype -> libsndfile's read function's C type.
_SF_CTYPES = {"float32": "float", "float64": "double", "int16": "short", "int32": "int"}


class _Unseeking:
    """An MP3 read without the seek that pysoundfile makes after every read (to keep its own idea
    of the position): libsndfile's MP3 decoder loses its bit reservoir at a seek, so the first
    ~4,000 samples after every read call came out wrong in tonal music (a chord, a held note: up
    to 0.36 on a 0.3 sine; noise hides it). Every block-wise read of an MP3 (mixed to mono,
    resampled as it decodes) had them, one glitch per 65,664 frames. libsndfile's read is called
    directly, and the position kept here."""

    def __init__(self, f: sf.SoundFile) -> None:
        self.f = f
        self.pos = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def seekable(self) -> bool:
        return self.f.seekable()

    def seek(self, frame: int, whence: int = 0) -> int:
        self.pos = self.f.seek(frame, whence)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(
        self, frames: int = -1, dtype: str = "float64", always_2d: bool = False, out: np.ndarray | None = None
    ) -> np.ndarray:
        if frames < 0:  # to the end, whatever the header's estimate of the length
            blocks = []
            while len(block := self.read(_BLOCK_FRAMES, dtype=dtype, always_2d=True)):
                blocks.append(block)
            data = np.concatenate(blocks) if blocks else np.zeros((0, self.f.channels), dtype=dtype)
        else:
            data = np.empty((frames, self.f.channels), dtype=dtype)
            read = getattr(sf._snd, "sf_readf_" + _SF_CTYPES[np.dtype(dtype).name])
            n = read(
                self.f._file, sf._ffi.cast(_SF_CTYPES[np.dtype(dtype).name] + "*", data.ctypes.data), frames
            )
            sf._error_check(self.f._errorcode)
            self.pos += n
            data = data[:n]
        return _as_read(data, out, always_2d)

    def close(self) -> None:
        self.f.close()


def _unseeking(f: sf.SoundFile) -> Any:
    """``f`` read through :class:`_Unseeking` where it is an MP3 and this soundfile's internals
    are as expected; else ``f`` itself."""
    if f.format != "MP3" or not all(hasattr(sf, a) for a in ("_snd", "_ffi", "_error_check")):
        return f
    if not hasattr(f, "_file") or not hasattr(f, "_errorcode"):
        return f
    return _Unseeking(f)


class _Chain:
    """Sound files one after another in one file (:func:`_stream_starts`), read as one: the
    leading links of the first one's rate and channel count (``dropped`` counts the others)."""

    def __init__(self, path: Path, starts: list[int], size: int) -> None:
        self.raws: list[_Window] = []
        self.links: list[sf.SoundFile] = []
        bounds = [*starts, size]
        try:
            for a, b in zip(bounds, bounds[1:]):
                raw = _Window(path, a, b - a)
                try:
                    link = _unseeking(sf.SoundFile(raw))
                except (sf.SoundFileError, RuntimeError):
                    raw.close()
                    break
                if self.links and (link.samplerate, link.channels) != (self.samplerate, self.channels):
                    link.close()
                    raw.close()
                    break
                self.raws.append(raw)
                self.links.append(link)
                self.samplerate, self.channels = self.links[0].samplerate, self.links[0].channels
        except BaseException:
            self.close()
            raise
        self.dropped = len(starts) - len(self.links)
        first = self.links[0] if self.links else None
        self.format = first.format if first else ""
        self.subtype = first.subtype if first else ""
        self.offsets = np.cumsum([0] + [link.frames for link in self.links]).tolist()
        self.frames = self.offsets[-1]
        self.at = 0  # the link being read

    def seekable(self) -> bool:
        return all(link.seekable() for link in self.links)

    def seek(self, frame: int) -> int:
        i = max(0, min(len(self.links) - 1, int(np.searchsorted(self.offsets, frame, side="right")) - 1))
        self.links[i].seek(min(frame - self.offsets[i], self.links[i].frames))
        for link in self.links[i + 1 :]:
            link.seek(0)
        self.at = i
        return self.offsets[i] + self.links[i].tell()

    def tell(self) -> int:
        return self.offsets[self.at] + self.links[self.at].tell()

    def read(
        self, frames: int = -1, dtype: str = "float64", always_2d: bool = False, out: np.ndarray | None = None
    ) -> np.ndarray:
        blocks, got = [], 0
        while self.at < len(self.links) and (frames < 0 or got < frames):
            block = self.links[self.at].read(-1 if frames < 0 else frames - got, dtype=dtype, always_2d=True)
            blocks.append(block)
            got += len(block)
            if frames < 0 or got < frames:  # this link is done
                self.at += 1
        data = np.concatenate(blocks) if blocks else np.zeros((0, self.channels), dtype=dtype)
        return _as_read(data, out, always_2d)

    def close(self) -> None:
        for link in self.links:
            link.close()
        for raw in self.raws:
            raw.close()


class _Opened:
    """libsndfile's reader of ``path`` (``.f``); a WAV whose header was never finished is read
    through its header as it should have been (``.unfinished`` says what was wrong; else None),
    and the MP3 stream inside a WAV file whose format is MPEG is read by itself."""

    def __init__(self, path: Path) -> None:
        self.raw: _Patched | _Prefixed | None = None
        self.unfinished: str | None = None
        #: ``(samples in the file, libsndfile's estimate)`` of an MP3 it would read short
        self.short: tuple[int, int] | None = None
        #: What of a file of several streams one after another is not read (else None)
        self.chain_note: str | None = None
        try:
            self.f = sf.SoundFile(_native(path))
        except (sf.SoundFileError, RuntimeError):
            inner = _mpeg_in_wav(path)
            if inner is None:
                raise
            self.raw = _Window(path, *inner)
            try:
                self.f = _unseeking(sf.SoundFile(self.raw))
            except BaseException:
                self.raw.close()
                raise
            return
        if self.f.format in ("OGG", "MP3") and (starts := _stream_starts(path, self.f.format)):
            self._chain(path, starts)
        self.f = _unseeking(self.f)
        if self.f.format == "MP3" and not isinstance(self.f, _Chain):
            counted = _mp3_frames_samples(path)
            if counted is not None and counted > self.f.frames * 1.01 + 0.1 * self.f.samplerate:
                self.short = (counted, self.f.frames)
        if self.f.format == "WAV" and (big := _oversize_wav(path)) is not None:
            self.f.close()
            self.raw = _Prefixed(path, *big)
            try:
                self.f = sf.SoundFile(self.raw)
            except BaseException:
                self.raw.close()
                raise
        elif self.f.frames == 0 and self.f.format == "WAV":
            fix = _unfinished_wav(path)
            if fix is not None:
                self.f.close()
                self.raw = _Patched(path, fix[0])
                self.unfinished = fix[1]
                try:
                    self.f = sf.SoundFile(self.raw)
                except BaseException:
                    self.raw.close()
                    raise

    def _chain(self, path: Path, starts: list[int]) -> None:
        """Read the streams after the first too (:class:`_Chain`), where they add frames."""
        chain = _Chain(path, [0, *starts], path.stat().st_size)
        if len(chain.links) < 2 or chain.frames <= self.f.frames:
            chain.close()
            return
        self.f.close()
        self.f = chain  # type: ignore[assignment]
        if chain.dropped:
            n = len(starts) + 1
            self.chain_note = (
                f"{len(chain.links)} of the {n} {chain.format} streams joined in the file read; the one after "
                "them is at another sample rate or channel count, or does not open"
            )

    def __enter__(self) -> _Opened:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.f.close()
        if self.raw is not None:
            self.raw.close()


class _UntilError:
    """An open sound file read in small steps that stop at its first decoding error: what comes
    before damage in the middle of a file (FLAC's "lost sync", an MP3's "internal error"), which
    a read of one large block loses with it. ``error`` keeps what stopped it."""

    STEP = 1152 * 8  # frames per read (whole MPEG frames: see _BLOCK_FRAMES); at most this is lost

    def __init__(self, f: sf.SoundFile) -> None:
        self.f = f
        self.error: Exception | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)

    def read(
        self, frames: int = -1, dtype: str = "float64", always_2d: bool = False, out: np.ndarray | None = None
    ) -> np.ndarray:
        blocks, got = [], 0
        while self.error is None and (frames < 0 or got < frames):
            step = self.STEP if frames < 0 else min(self.STEP, frames - got)
            try:
                block = self.f.read(step, dtype=dtype, always_2d=True)
            except (sf.SoundFileError, RuntimeError) as exc:
                self.error = exc
                break
            if not len(block):
                break
            blocks.append(block)
            got += len(block)
        data = np.concatenate(blocks) if blocks else np.zeros((0, self.f.channels), dtype=dtype)
        return _as_read(data, out, always_2d)


class _ReadElsewhere(Exception):
    """libsndfile would read a file short: :func:`_load` reads it through ffmpeg instead."""


def _ffmpeg_reads() -> bool:
    return bool(shutil.which("ffmpeg") or shutil.which("avconv")) and _import_audioread() is not None


def _decode_soundfile(
    path: Path,
    kind: str,
    name: str,
    *,
    mono: bool,
    offset: float,
    duration: float | None,
    resample: tuple[int, str] | None = None,
    minus: float = 0.0,
) -> tuple[np.ndarray, int, float | None, _Scanned | None]:
    """The samples, the file's rate, the whole file's peak where a window of a float file was
    read, and, where ``resample`` (``(sr, res_type)``) asked for mono samples at another rate and
    they were resampled as they decoded, what was seen of the file's own (else None)."""
    try:
        opened = _Opened(path)
    except (sf.SoundFileError, RuntimeError) as e:
        raise _open_error(path, kind, name, e) from e
    with opened:
        f = opened.f
        if f.frames == 0:
            raise DecodeError(path, "no audio samples", f"a valid {f.format} header with 0 frames")
        orig_sr = f.samplerate
        _check_rate(path, name, orig_sr)
        start = round(offset * orig_sr)
        reach = -1 if duration is None else start + round(duration * orig_sr)
        if opened.short is not None and (reach < 0 or reach > f.frames) and _ffmpeg_reads():
            raise _ReadElsewhere  # libsndfile stops short of the end: ffmpeg reads it whole
        if start >= f.frames:
            raise ParameterError(
                f"{path}: offset {offset} s is past the end of the audio ({f.frames / orig_sr:.3f} s)"
            )
        n_frames = -1 if duration is None else round(duration * orig_sr)

        def read(f: Any) -> tuple[np.ndarray, int, _Scanned | None]:
            if start and f.seekable() and f.format != "MP3":
                f.seek(start)
            elif start:  # the frames before are read and dropped: libsndfile cannot seek in a GSM
                # 6.10 WAV, and a seek in an MP3 loses its decoder's bit reservoir (see _Unseeking)
                left = start
                while left > 0 and (got := len(f.read(min(_BLOCK_FRAMES, left), dtype="float32"))):
                    left -= got
            if mono and resample is not None and resample[0] != orig_sr:
                scanned = _Scanned()
                return (
                    _read_resampled(f, n_frames, resample[0], resample[1], scanned, minus),
                    scanned.n,
                    scanned,
                )
            y = _read_frames(f, n_frames, mono=mono)
            return y, len(y), None

        broke = None
        try:
            y, n_read, scanned = read(f)
        except (sf.SoundFileError, RuntimeError) as e:
            # Damaged in the middle (a FLAC frame or MP3 frames of bad bytes): what decodes before
            # the damage is kept, read again in small steps that stop at it.
            with _Opened(path) as again:
                until = _UntilError(again.f)
                try:
                    y, n_read, scanned = read(until)
                except (sf.SoundFileError, RuntimeError):  # damaged before `start`
                    n_read = 0
            if n_read == 0:
                raise DecodeError(path, "corrupt or truncated audio", f"decoding failed: {e}") from e
            if until.error is not None:  # else read whole the second time: nothing to say
                broke = f"decoding failed at {(start + n_read) / orig_sr:.1f} s: {e}"
        if n_read == 0:
            raise DecodeError(
                path,
                "corrupt or truncated audio",
                f"the {name or 'audio'} header promises audio but none decodes",
            )
        if broke is not None:
            cut = broke
        elif opened.short is not None and start + n_read >= f.frames:
            counted = opened.short[0]
            cut = (
                f"a VBR MP3 without a Xing header: libsndfile reads {f.frames / orig_sr:.1f} s of its "
                f"{counted / orig_sr:.1f} s; install ffmpeg to read it whole"
            )
        elif opened.chain_note is not None and start + n_read >= f.frames:
            cut = opened.chain_note
        else:
            cut = _cut_short(path, name, f, start + n_read) if n_frames < 0 or n_read < n_frames else None
        window = start > 0 or (n_frames >= 0 and start + n_read < f.frames)
        float_window = window and f.subtype in _FLOAT_SUBTYPES
    if cut is not None:
        # stacklevel 4: the caller of read_audio (through _load and this function).
        warnings.warn(PartialAudioWarning(path, n_read / orig_sr, cut), stacklevel=4)
    elif opened.unfinished is not None:
        warnings.warn(UnfinishedAudioWarning(path, n_read / orig_sr, opened.unfinished), stacklevel=4)
    peak = None
    if float_window:  # a part of a file that may go beyond full scale: the whole file's peak decides
        st = path.stat()
        peak = _float_file_peak(str(path), st.st_mtime_ns, st.st_size, mono)
    return y, orig_sr, peak, scanned


def _decode_audioread(
    path: Path,
    name: str,
    *,
    mono: bool,
    offset: float,
    duration: float | None,
    resample: tuple[int, str] | None = None,
    minus: float = 0.0,
) -> tuple[np.ndarray, int, _Scanned | None]:
    """AAC, WMA and the like through audioread (ffmpeg): the samples, the file's rate, and as
    :func:`_decode_soundfile`, what was seen of the file's own samples where mono samples at
    another rate were asked for and resampled as they decoded (else None). ffmpeg's blocks are
    mixed down (and resampled) as they come: read whole first, an hour of stereo AAC held
    3 GB (its int16 blocks, their copy, float32 channels and the mix)."""
    audioread = _import_audioread()
    if audioread is None:
        raise DecodeError(
            path, "unsupported format", f"{name} needs audioread (pip install audioread) and ffmpeg"
        )
    pieces: list[np.ndarray] = []
    scanned = _Scanned()
    stream = None
    try:
        with audioread.audio_open(str(path)) as f:
            orig_sr, channels = int(f.samplerate), int(f.channels)
            _check_rate(path, name, orig_sr)
            start = round(offset * orig_sr)
            stop = None if duration is None else start + round(duration * orig_sr)
            if mono and resample is not None and resample[0] != orig_sr:
                stream = soxr.ResampleStream(
                    orig_sr, resample[0], 1, dtype="float32", quality=RES_TYPES[resample[1]]
                )
            weights = np.full(channels, 2.0**-15 / channels, dtype=np.float32)
            pos = 0  # frames of the file decoded so far
            for buf in f:
                ints = np.frombuffer(buf, dtype="<i2")
                ints = ints[: len(ints) // channels * channels].reshape(-1, channels)
                lo, hi = (
                    max(0, start - pos),
                    len(ints) if stop is None else max(0, min(len(ints), stop - pos)),
                )
                pos += len(ints)
                if lo < hi:
                    block = (
                        ints[lo:hi].astype(np.float32) @ weights if mono else ints[lo:hi] / np.float32(32768)
                    )
                    block = scanned.add(block)
                    if stream is not None:  # else _load takes ``minus`` out of the whole
                        pieces.append(stream.resample_chunk(block - np.float32(minus) if minus else block))
                    else:
                        pieces.append(block)
                if stop is not None and pos >= stop:
                    break
            if stream is not None:
                pieces.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    except audioread.NoBackendError as e:
        if shutil.which("ffmpeg") or shutil.which("avconv"):  # it ran, and could not decode the file
            raise DecodeError(
                path, "corrupt or truncated audio", f"{name}: ffmpeg cannot decode it (cut short or damaged)"
            ) from e
        raise DecodeError(
            path,
            "unsupported format",
            f"{name}: libsndfile cannot read it and audioread has no backend (install ffmpeg)",
        ) from e
    except DecodeError:
        raise
    except Exception as e:  # audioread backends raise their own error types
        raise DecodeError(path, "corrupt or truncated audio", f"{name}: audioread says: {e}") from e
    if pos == 0:
        raise DecodeError(path, "no audio samples", f"{name} stream with 0 frames")
    if start >= pos:
        raise ParameterError(
            f"{path}: offset {offset} s is past the end of the audio ({pos / orig_sr:.3f} s)"
        )
    shape = (0,) if mono else (0, channels)
    y = np.concatenate(pieces) if pieces else np.zeros(shape, np.float32)
    if stream is None:
        return y, orig_sr, None
    n_out = round(scanned.n * resample[0] / orig_sr)  # as _resample cuts or pads  # type: ignore[index]
    if len(y) < n_out:
        y = np.concatenate([y, np.zeros(n_out - len(y), dtype=np.float32)])
    return y[:n_out], orig_sr, scanned


#: Samples scanned at a time by :func:`_scan` (its temporaries stay a few MB for any file).
_SCAN_BLOCK = 1 << 20


def _scan(y: np.ndarray) -> tuple[int, int, float]:
    """``(non-finite, beyond WILD_SAMPLE, peak)`` of ``y``'s samples, block by block: whole-array
    temporaries (``np.abs``, ``np.isfinite``) had doubled the memory of reading an hour of
    audio (1.43 GB for its 635 MB of samples). The peak is of the finite samples."""
    flat = y.reshape(-1)
    bad = wild = 0
    peak = 0.0
    for i in range(0, flat.size, _SCAN_BLOCK):
        block = np.abs(flat[i : i + _SCAN_BLOCK])
        finite = np.isfinite(block)
        n_finite = int(np.count_nonzero(finite))
        if n_finite < block.size:
            bad += block.size - n_finite
            block = block[finite]
        if block.size:
            top = float(block.max())
            peak = max(peak, top)
            if top > WILD_SAMPLE:
                wild += int(np.count_nonzero(block > WILD_SAMPLE))
    return bad, wild, peak


def _resample(y: np.ndarray, orig_sr: int, sr: int, res_type: str) -> np.ndarray:
    """Resample along axis 0 to exactly ``round(n * sr / orig_sr)`` samples."""
    n_out = round(len(y) * sr / orig_sr)
    y = soxr.resample(np.ascontiguousarray(y), orig_sr, sr, quality=RES_TYPES[res_type])
    if len(y) > n_out:
        y = y[:n_out]
    elif len(y) < n_out:
        y = np.concatenate([y, np.zeros((n_out - len(y), *y.shape[1:]), dtype=y.dtype)])
    return y


def _load(
    path: str | os.PathLike[str],
    *,
    sr: int | None,
    mono: bool,
    offset: float,
    duration: float | None,
    res_type: str,
    clip: bool,
    minus: float = 0.0,
    mend: bool = False,
) -> tuple[np.ndarray, int]:
    sr = _check_read_args(sr, offset, duration, res_type)
    path = Path(path)
    kind, name = _check_file(path)
    file_peak = None  # of the whole file where only a window of a float file was read
    scanned = None  # the file's own samples where they were resampled as they decoded
    args: dict[str, Any] = {
        "mono": mono,
        "offset": offset,
        "duration": duration,
        "resample": (sr, res_type) if sr else None,
        "minus": minus,
    }
    y = None
    if not _needs_audioread(kind, name):
        try:
            y, orig_sr, file_peak, scanned = _decode_soundfile(path, kind, name, **args)
        except _ReadElsewhere:
            pass
    if y is None:
        y, orig_sr, scanned = _decode_audioread(path, name, **args)
    if minus and scanned is None:  # not taken out as the blocks decoded: from the samples at the file's rate
        y = y - np.float32(minus)
    if scanned is None:
        n_file = y.size
        bad, wild, y_peak = _scan(y)
    else:
        n_file, bad, wild, y_peak = scanned.n, scanned.bad, scanned.wild, scanned.peak
    if bad:  # a float file: a writer's glitch, or a model's output gone to NaN (counted as in the file)
        if not mend or bad > MAX_MENDED * n_file:
            beyond = f" (more than {MAX_MENDED:.0%}: not a glitch to mend)" if mend else ""
            raise DecodeError(
                path, "non-finite samples", f"{bad} of {n_file} samples are NaN or infinite{beyond}"
            )
        if scanned is None:
            y = np.nan_to_num(y, copy=not y.flags.writeable, nan=0.0, posinf=0.0, neginf=0.0)
        warnings.warn(MendedAudioWarning(path, bad, n_file), stacklevel=3)
    if wild or (file_peak is not None and file_peak > WILD_SAMPLE):
        largest = max(y_peak, file_peak or 0.0)
        where = f"{wild} of {n_file} samples" if wild else "samples elsewhere in the file"
        raise DecodeError(
            path,
            "corrupt or truncated audio",
            f"{where} beyond ±2^32 (up to {largest:.3g}): damaged data, not a scale any writer uses",
        )
    resampled = sr is not None and sr != orig_sr
    if resampled and scanned is None:
        y = _resample(y, orig_sr, sr, res_type)
    y = np.ascontiguousarray(y, dtype=np.float32)
    if clip:
        if file_peak is not None:
            peak = file_peak
        elif not resampled:
            peak = y_peak
        else:  # resampled: its peak may differ a little from the file's
            peak = _scan(y)[2]
        if peak > LOUD_PEAK and math.isfinite(peak):  # float samples of another scale
            y *= np.float32(1.0 / peak)
            warnings.warn(LoudAudioWarning(path, peak), stacklevel=3)
        np.clip(y, -1.0, 1.0, out=y)
    return y, sr if sr is not None else orig_sr


def read_audio(
    path: str | os.PathLike[str],
    *,
    sr: int | None = None,
    mono: bool = True,
    offset: float = 0.0,
    duration: float | None = None,
    res_type: str = "soxr_hq",
    mend: bool = False,
) -> tuple[np.ndarray, int]:
    """Decode an audio file to float32 samples in [-1, 1].

    Parameters
    ----------
    path : str or PathLike
        Any file libsndfile reads (WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF, AU, ...), of any
        sample rate, channel count and sample format (8/16/24/32-bit integer or float).
    sr : int or None
        Target sample rate; None keeps the file's. Resampling uses soxr and returns exactly
        ``round(n * sr / sr_file)`` samples.
    mono : bool
        Mix all channels down by their mean (the default). Otherwise return every channel.
    offset : float
        Start reading this many seconds into the file. An offset at or past the end raises
        :class:`~cadenza.errors.ParameterError`.
    duration : float or None
        Read at most this many seconds; None reads to the end.
    res_type : str
        Resampler quality, named as in librosa: "soxr_vhq", "soxr_hq" (default), "soxr_mq",
        "soxr_lq" or "soxr_qq".
    mend : bool
        Set a float file's NaN or infinite samples to 0 (a writer's glitch in a recording) with a
        :class:`MendedAudioWarning`, where they are at most :data:`MAX_MENDED` of its samples. By
        default they raise: a generated clip gone to NaN is a model's failure, not a glitch.

    Returns
    -------
    y : np.ndarray
        float32 samples, shape ``(n,)`` when ``mono``, else ``(n, channels)`` (the layout
        :func:`write_audio` takes), in [-1, 1]: clipped, except a float file that peaks above
        +6 dBFS, which is divided by its peak (clipped it would be a square wave); a window
        (``offset``, ``duration``) by the whole file's peak, so that it is read at the level the
        whole file is.
    sr : int
        The sample rate of ``y``.

    Raises
    ------
    cadenza.errors.DecodeError
        With ``reason`` one of "missing file", "unreadable file", "empty file", "not an audio
        file", "corrupt or truncated audio", "no audio samples", "non-finite samples" (a float
        file holding NaN or infinity), "unsupported format".
        A FLAC stream that breaks off mid-frame is "corrupt or truncated audio", and so is a
        header whose sample rate is outside :data:`AUDIO_RATES` (1 kHz to 3.072 MHz).

    Warns
    -----
    PartialAudioWarning
        When the file was cut short but its first part decodes (a WAV, an Ogg Vorbis/Opus
        file, an MP3 with a Xing header): the samples that decode are returned.
    LoudAudioWarning
        When a float file peaks above +6 dBFS (scaled down as above).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from cadenza.audio import read_audio, write_audio
    >>> path = os.path.join(tempfile.mkdtemp(), "a4.wav")
    >>> write_audio(path, 0.5 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100), 44100)
    >>> y, sr = read_audio(path, sr=16000)
    >>> y.shape, y.dtype, sr
    ((16000,), dtype('float32'), 16000)
    """
    return _load(
        path, sr=sr, mono=mono, offset=offset, duration=duration, res_type=res_type, clip=True, mend=mend
    )


def read_audio_without_offset(
    path: str | os.PathLike[str], *, sr: int, duration: float | None = None, mend: bool = False
) -> tuple[np.ndarray, float]:
    """Mono samples at ``sr`` less the file's constant (DC) offset, taken out at the file's own
    rate before resampling, and that offset (the mean of the samples read, at the file's rate).

    Resampled with the offset in, the file's first and last samples are steps that the
    resampler rings on (a click at each end); the mean is found in a first pass, block by block,
    so that neither pass holds the file at its own rate. Errors and warnings as
    :func:`read_audio`'s.
    """
    path = Path(path)
    kind, name = _check_file(path)
    total, count = 0.0, 0
    if not _needs_audioread(kind, name):
        with warnings.catch_warnings(), contextlib.suppress(sf.SoundFileError, RuntimeError):
            warnings.simplefilter("ignore")  # the second pass gives them
            with _Opened(path) as opened:
                f = opened.f
                limit = -1 if duration is None else round(duration * f.samplerate)
                while limit < 0 or count < limit:
                    want = _BLOCK_FRAMES if limit < 0 else min(_BLOCK_FRAMES, limit - count)
                    block = _read_frames(f, want, mono=True)
                    if not len(block):
                        break
                    part = float(np.sum(block, dtype=np.float64))
                    if not math.isfinite(part):  # NaN samples: the second pass mends or refuses them
                        part = float(np.sum(block[np.isfinite(block)], dtype=np.float64))
                    total += part
                    count += len(block)
    elif (audioread := _import_audioread()) is not None:  # AAC, WMA: ffmpeg's blocks, mixed as they come
        with contextlib.suppress(Exception):  # the second pass says what is wrong with the file
            with audioread.audio_open(str(path)) as f:
                channels, limit = int(f.channels), -1 if duration is None else round(duration * f.samplerate)
                for buf in f:
                    ints = np.frombuffer(buf, dtype="<i2")
                    ints = ints[: len(ints) // channels * channels].reshape(-1, channels)
                    if limit >= 0:
                        ints = ints[: max(0, limit - count)]
                    total += float(np.sum(ints, dtype=np.float64)) / (32768.0 * channels)
                    count += len(ints)
                    if 0 <= limit <= count:
                        break
    if count == 0:  # a file the first pass could not read: read it whole
        y, file_sr = read_audio(path, duration=duration, mend=mend)
        mean = float(np.mean(y, dtype=np.float64))
        return _resample(y - np.float32(mean), file_sr, sr, "soxr_hq").astype(np.float32, copy=False), mean
    mean = total / count
    y, _ = _load(
        path,
        sr=sr,
        mono=True,
        offset=0.0,
        duration=duration,
        res_type="soxr_hq",
        clip=True,
        minus=mean,
        mend=mend,
    )
    return y, mean


def audio_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe an audio file from its header, without decoding the samples.

    Parameters
    ----------
    path : str or PathLike
        An audio file, as for :func:`read_audio`.

    Returns
    -------
    dict
        ``sr`` (int), ``channels`` (int), ``frames`` (int; 0 for a header without samples, an
        estimate for MP3), ``duration`` (seconds), ``format`` ("WAV", "FLAC", "OGG", "MP3",
        ...) and ``subtype`` ("PCM_16", "VORBIS", ...; "" when unknown).

    Raises
    ------
    cadenza.errors.DecodeError
        As :func:`read_audio`, except that a header with zero frames is described, not refused.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from cadenza.audio import audio_info, write_audio
    >>> path = os.path.join(tempfile.mkdtemp(), "silence.flac")
    >>> write_audio(path, np.zeros((22050, 2)), 22050)
    >>> info = audio_info(path)
    >>> info["sr"], info["channels"], info["frames"], info["duration"], info["format"]
    (22050, 2, 22050, 1.0, 'FLAC')
    """
    path = Path(path)
    kind, name = _check_file(path)
    if _needs_audioread(kind, name):
        audioread = _import_audioread()
        if audioread is None:
            raise DecodeError(
                path, "unsupported format", f"{name} needs audioread (pip install audioread) and ffmpeg"
            )
        try:
            with audioread.audio_open(str(path)) as f:
                sr, channels, duration = int(f.samplerate), int(f.channels), float(f.duration)
        except audioread.NoBackendError as e:
            if shutil.which("ffmpeg") or shutil.which("avconv"):
                raise DecodeError(
                    path,
                    "corrupt or truncated audio",
                    f"{name}: ffmpeg cannot decode it (cut short or damaged)",
                ) from e
            raise DecodeError(
                path,
                "unsupported format",
                f"{name}: libsndfile cannot read it and audioread has no backend (install ffmpeg)",
            ) from e
        except Exception as e:  # audioread backends raise their own error types
            raise DecodeError(path, "corrupt or truncated audio", f"{name}: audioread says: {e}") from e
        _check_rate(path, name, sr)
        return {
            "sr": sr,
            "channels": channels,
            "frames": round(duration * sr),
            "duration": duration,
            "format": name,
            "subtype": "",
        }
    try:
        with _Opened(path) as opened:
            info = opened.f
            frames = (
                int(info.frames) if opened.short is None else opened.short[0]
            )  # the file's, not the estimate
            found = {
                "sr": int(info.samplerate),
                "channels": int(info.channels),
                "frames": frames,
                "duration": frames / info.samplerate,
                "format": info.format,
                "subtype": info.subtype or "",
            }
    except (sf.SoundFileError, RuntimeError) as e:
        raise _open_error(path, kind, name, e) from e
    _check_rate(path, name, found["sr"])
    return found


def is_silent(y: np.ndarray, *, threshold_db: float = -60.0) -> bool:
    """True when the peak of ``y`` is below ``threshold_db`` dB full scale (or ``y`` is empty).

    Parameters
    ----------
    y : np.ndarray
        Samples in [-1, 1], any shape.
    threshold_db : float
        Peak level in dBFS under which the signal counts as silent.

    See Also
    --------
    cadenza.evaluation.detectors.silent_fraction : the share of 100 ms frames whose RMS is
        below -50 dBFS.

    Notes
    -----
    The two answer different questions, so they measure differently. ``is_silent`` decides
    whether a source file holds any signal at all before a corpus keeps it: one peak above
    -60 dBFS is enough, so a recording of a quiet passage with a few soft notes is never thrown
    away. ``silent_fraction`` measures how much of a *generated* clip has gone dead, frame by
    frame, where a sustained low RMS is the failure to catch and a lone click should not hide
    it. Deriving one from the other (``silent_fraction(y, sr) == 1.0``) would drop recordings
    whose RMS stays below -50 dBFS though they clearly sound, which prepare keeps today.

    Examples
    --------
    >>> import numpy as np
    >>> from cadenza.audio import is_silent
    >>> is_silent(np.full(100, 1e-4)), is_silent(np.full(100, 0.01))
    (True, False)
    """
    y = np.asarray(y)
    if y.size == 0:
        return True
    peak = max(abs(float(y.max())), abs(float(y.min())))  # no |y| copy: an hour at 16 kHz is 230 MB
    if not np.isfinite(peak):
        raise ParameterError("y holds NaN or infinite values")
    return bool(peak <= 0.0 or 20.0 * np.log10(peak) < threshold_db)


#: :func:`trim_silence`: a file's lead-in and ending quieter than this, in dB below its loudest
#: frame, are not kept. Every rendered score ends in a second of release that dies away into
#: digital silence (a recording, in a fade or a room's hush): windows of it teach a sequence
#: model that quiet is followed by quieter, and give generation seeds with nothing to continue
#: (2 of the study's 50 Seq2Seq clips continued such a seed, silent). The tiny mel RNN, a minute
#: on 24 chorales, 50 clips of 10 s against the same held-out files: trained on untrimmed files,
#: 6 clips drifted into silence (5 of them from seeds mid-piece), FAD 10,300; trimmed, none, FAD 478.
TRIM_DB = 40.0


def trim_silence(
    y: np.ndarray, sr: int, *, top_db: float = TRIM_DB, frame_seconds: float = 0.05
) -> tuple[np.ndarray, float, float]:
    """``y`` without its lead-in and ending quieter than ``top_db`` below its loudest frame.

    Frames of ``frame_seconds`` (hop a quarter of that); the music between the first and the
    last frame that reaches the level is kept whole, quiet passages inside it included. Returns
    the samples kept and the seconds cut at the start and at the end. As
    ``librosa.effects.trim`` (frame RMS against the peak), at a hop in seconds rather than samples.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 1000
    >>> y = np.concatenate([np.zeros(500), 0.5 * np.ones(1000), 0.001 * np.ones(1500)])
    >>> kept, lead, tail = trim_silence(y, sr)
    >>> round(lead, 2), round(tail, 2), len(kept)
    (0.46, 1.46, 1082)
    """
    y = np.asarray(y)
    frame = max(1, int(round(frame_seconds * sr)))
    hop = max(1, frame // 4)
    if y.size < frame:
        return y, 0.0, 0.0
    n = 1 + (y.size - frame) // hop
    energy = np.empty(n)
    for i in range(0, n, 4096):  # a few thousand frames at a time: no (n, frame) copy of an hour
        j = min(n, i + 4096)
        idx = np.arange(i, j)[:, None] * hop + np.arange(frame)[None]
        energy[i:j] = np.mean(np.square(y[idx], dtype=np.float64), axis=1)
    loud = np.nonzero(energy > energy.max() * 10 ** (-top_db / 10))[0]
    if loud.size == 0:
        return y, 0.0, 0.0
    start = int(loud[0]) * hop
    stop = y.size if loud[-1] == n - 1 else int(loud[-1]) * hop + frame  # loud to the end: all of it
    return y[start:stop], start / sr, (y.size - stop) / sr


# --------------------------------------------------------------------------------------------
# Writing.

#: Extensions write_audio knows -> libsndfile container.
_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}

#: Warn when more than this fraction of the samples is clipped.
_CLIP_WARN_FRACTION = 0.001


def write_audio(path: str | os.PathLike[str], y: np.ndarray, sr: int, *, subtype: str = "PCM_16") -> None:
    """Write samples to a WAV or FLAC file (chosen by extension), atomically.

    The file appears complete or not at all: the samples go to a temporary file in the same
    folder, which is flushed, fsynced and renamed over ``path``. Missing folders are created.

    Parameters
    ----------
    path : str or PathLike
        Destination ending in ``.wav`` or ``.flac``.
    y : np.ndarray
        Float samples, shape ``(n,)`` (mono) or ``(n, channels)``. Values outside [-1, 1] are
        clipped, with a warning when more than 0.1% of them are.
    sr : int
        Sample rate of ``y``.
    subtype : str
        libsndfile sample format: "PCM_16" (default), "PCM_24", "PCM_32", "FLOAT", ...

    Raises
    ------
    cadenza.errors.ParameterError
        On an unknown extension, a subtype the container cannot hold, an empty, non-float or
        non-finite ``y``, or a 2-D ``y`` that looks like ``(channels, n)``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from cadenza.audio import read_audio, write_audio
    >>> path = os.path.join(tempfile.mkdtemp(), "out", "noise.wav")
    >>> y = np.random.default_rng(0).uniform(-0.5, 0.5, 8000)
    >>> write_audio(path, y, 8000)
    >>> z, sr = read_audio(path)
    >>> bool(np.max(np.abs(z - y)) <= 1 / 32768)
    True
    """
    path = Path(path)
    sr = _as_rate(sr, "sr")
    file_format = _WRITE_FORMATS.get(path.suffix.lower())
    if file_format is None:
        raise ParameterError(
            f"{path}: cannot write {path.suffix or 'extension-less'} files; use one of {sorted(_WRITE_FORMATS)}"
        )
    if not sf.check_format(file_format, subtype):
        raise ParameterError(
            f"{path}: {file_format} cannot hold subtype {subtype!r}; try one of {sorted(sf.available_subtypes(file_format))}"
        )
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.floating):
        raise ParameterError(f"{path}: y must hold floats in [-1, 1], got dtype {y.dtype}")
    if y.ndim not in (1, 2) or y.size == 0:
        raise ParameterError(
            f"{path}: y must be a non-empty (n,) or (n, channels) array, got shape {y.shape}"
        )
    if y.ndim == 2 and y.shape[1] > 64:
        raise ParameterError(f"{path}: y has shape {y.shape}, which looks like (channels, n); pass y.T")
    if not np.all(np.isfinite(y)):
        raise ParameterError(f"{path}: y holds NaN or infinite values")
    n_clipped = int(np.count_nonzero(np.abs(y) > 1.0))
    if n_clipped > _CLIP_WARN_FRACTION * y.size:
        warnings.warn(
            f"{path}: clipping {n_clipped / y.size:.2%} of the samples to [-1, 1]", UserWarning, stacklevel=2
        )
    if n_clipped:
        y = np.clip(y, -1.0, 1.0)

    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # O_EXCL so two writers never share a temporary file; 0o666 so the umask applies
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as raw:
            channels = 1 if y.ndim == 1 else y.shape[1]
            sink = _Sink(raw)
            try:
                with sf.SoundFile(
                    sink, "w", samplerate=sr, channels=channels, subtype=subtype, format=file_format
                ) as f:
                    f.write(y)
            except BaseException:
                # libsndfile says "assertion" or "error opening"; the disk said why
                if sink.error is not None:
                    raise sink.failure(path) from None
                raise
            if sink.error is not None:
                raise sink.failure(path)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class _Sink:
    """The file libsndfile writes through, keeping the first ``OSError`` of a write (a full
    disk) for :func:`write_audio` to raise: raised inside libsndfile's callback it would be
    printed as "Exception ignored" and the write would fail as a bare ``AssertionError``."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        if self.error is not None:
            return 0
        try:
            return self.raw.write(data)
        except OSError as exc:
            self.error = exc
            return 0

    def failure(self, path: Path) -> OSError:
        """The error kept, naming the file that was being written."""
        assert self.error is not None
        return OSError(self.error.errno, self.error.strerror, str(path))

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(n)
