"""read_audio / write_audio / audio_info on real files of every common kind, good and broken."""

from __future__ import annotations

import os
import shutil
import warnings

import librosa
import numpy as np
import pytest
import soundfile as sf

from cadenza.audio import (
    AUDIO_EXTENSIONS,
    DECODABLE_EXTENSIONS,
    MendedAudioWarning,
    PartialAudioWarning,
    audio_info,
    io,
    is_silent,
    read_audio,
    trim_silence,
    write_audio,
)
from cadenza.errors import DecodeError, ParameterError

FREQ = 440.0
AMP = 0.5


def sine(sr: int, seconds: float = 1.0, *, freq: float = FREQ, amp: float = AMP) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(sr * seconds)) / sr)).astype(np.float64)


def peak_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spectrum)])


def amplitude(y: np.ndarray) -> float:
    """Amplitude of a sine from its RMS, ignoring the first and last tenth (resampler edges)."""
    middle = y[len(y) // 10 : -len(y) // 10]
    return float(np.sqrt(2 * np.mean(middle.astype(np.float64) ** 2)))


def mp3_writable() -> bool:
    return "MP3" in sf.available_formats() and sf.check_format("MP3", "MPEG_LAYER_III")


# (extension, file rate, channels, soundfile format, subtype, lossless)
FORMATS = [
    pytest.param("wav", 44100, 2, "WAV", "PCM_16", True, id="wav-44k-stereo-int16"),
    pytest.param("flac", 22050, 1, "FLAC", "PCM_24", True, id="flac-22k-int24"),
    pytest.param("wav", 8000, 1, "WAV", "PCM_U8", True, id="wav-8k-u8"),
    pytest.param("wav", 48000, 1, "WAV", "FLOAT", True, id="wav-48k-float"),
    pytest.param("ogg", 44100, 1, "OGG", "VORBIS", False, id="ogg-vorbis"),
    pytest.param(
        "mp3",
        44100,
        1,
        "MP3",
        "MPEG_LAYER_III",
        False,
        id="mp3",
        marks=pytest.mark.skipif(not mp3_writable(), reason="this libsndfile cannot write MP3"),
    ),
]


@pytest.mark.parametrize(("ext", "file_sr", "channels", "file_format", "subtype", "lossless"), FORMATS)
def test_read_audio_decodes_format_to_target_rate(
    tmp_path, ext, file_sr, channels, file_format, subtype, lossless
):
    x = sine(file_sr)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    path = tmp_path / f"tone.{ext}"
    sf.write(path, data, file_sr, format=file_format, subtype=subtype)

    y, sr = read_audio(path, sr=16000)

    assert sr == 16000
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16000) <= 1
    assert abs(peak_hz(y, sr) - FREQ) <= 1.0
    assert np.max(np.abs(y)) <= 1.0
    if lossless:
        assert amplitude(y) == pytest.approx(AMP, rel=0.01)
    else:
        assert amplitude(y) == pytest.approx(AMP, rel=0.1)


def test_opposite_phase_stereo_mixes_to_silence(tmp_path):
    x = sine(44100)
    sf.write(tmp_path / "phase.wav", np.stack([x, -x], axis=1), 44100, subtype="PCM_16")
    y, sr = read_audio(tmp_path / "phase.wav")
    assert sr == 44100 and y.shape == (44100,)
    assert np.max(np.abs(y)) < 1e-4


def test_three_channels_mix_by_mean_or_stay_apart(tmp_path):
    x = sine(16000)
    sf.write(
        tmp_path / "three.wav",
        np.stack([0.3 / AMP * x, 0.6 / AMP * x, 0 * x], axis=1),
        16000,
        subtype="FLOAT",
    )
    y, _ = read_audio(tmp_path / "three.wav")
    assert amplitude(y) == pytest.approx(0.3, rel=1e-3)
    frames, _ = read_audio(tmp_path / "three.wav", mono=False)
    assert frames.shape == (16000, 3)
    np.testing.assert_allclose(frames.mean(axis=1), y, atol=1e-7)


def test_block_mixdown_matches_whole_file_mixdown(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    data = rng.uniform(-0.9, 0.9, size=(10_007, 4))
    sf.write(tmp_path / "four.wav", data, 8000, subtype="FLOAT")
    monkeypatch.setattr(io, "_BLOCK_FRAMES", 1000)
    y, _ = read_audio(tmp_path / "four.wav")
    np.testing.assert_allclose(y, data.mean(axis=1), atol=1e-6)
    part, _ = read_audio(tmp_path / "four.wav", offset=0.5, duration=0.3)
    np.testing.assert_allclose(part, data[4000:6400].mean(axis=1), atol=1e-6)


@pytest.mark.parametrize(
    ("file_format", "subtype", "channels", "as_int"),
    [
        ("WAV", "PCM_16", 1, True),
        ("WAV", "PCM_16", 2, True),
        ("WAV", "PCM_16", 4, True),
        ("WAV", "PCM_U8", 2, True),
        ("AIFF", "PCM_S8", 2, True),
        ("WAV", "PCM_16", 3, False),  # weights 1/3 round: through floats
        ("WAV", "PCM_24", 2, False),
        ("FLAC", "PCM_16", 2, False),
    ],
)
def test_integer_mixdown_gives_the_floats_of_libsndfile_bit_for_bit(
    tmp_path, monkeypatch, file_format, subtype, channels, as_int
):
    """8- and 16-bit PCM is read as int16 and mixed by numpy: the same float32 mean, exactly."""
    rng = np.random.default_rng(2)
    data = rng.uniform(-1.0, 1.0, size=(5_003, channels))
    data[:8] = 1.0  # full scale both ways, where a wrong scale or an overflow would show
    data[8:16] = -1.0
    path = tmp_path / f"pcm.{file_format.lower()}"
    sf.write(path, data, 8000, format=file_format, subtype=subtype)
    monkeypatch.setattr(io, "_BLOCK_FRAMES", 1000)  # blocks and a short last one
    with sf.SoundFile(path) as f:
        assert io._mixes_as_integers(f) == as_int
    floats, _ = sf.read(path, dtype="float32", always_2d=True)
    y, _ = read_audio(path)
    expected = floats.astype(np.float64).mean(axis=1)
    if as_int:
        assert y.dtype == np.float32 and np.array_equal(y, expected.astype(np.float32))
    else:
        np.testing.assert_allclose(y, expected, atol=1e-7)
    part, _ = read_audio(path, offset=0.25, duration=0.3)
    np.testing.assert_array_equal(part, y[2000:4400])


@pytest.mark.parametrize("res_type", ["soxr_hq", "soxr_vhq"])
def test_resampling_matches_librosa(tmp_path, res_type):
    rng = np.random.default_rng(1)
    x = (sine(44100, 0.7) + 0.1 * rng.standard_normal(round(44100 * 0.7))).clip(-1, 1).astype(np.float32)
    sf.write(tmp_path / "mix.wav", x, 44100, subtype="FLOAT")
    y, _ = read_audio(tmp_path / "mix.wav", sr=22050, res_type=res_type)
    expected = librosa.resample(x, orig_sr=44100, target_sr=22050, res_type=res_type)
    assert len(y) == round(len(x) * 22050 / 44100)
    n = min(len(y), len(expected))
    np.testing.assert_allclose(y[:n], expected[:n], atol=1e-5)


@pytest.mark.parametrize(("subtype", "channels"), [("PCM_16", 2), ("FLOAT", 1), ("PCM_24", 3)])
def test_resampled_as_decoded_equals_resampling_the_whole_decoding_in_the_memory_of_the_result(
    tmp_path, monkeypatch, subtype, channels
):
    """A file read at another rate was decoded whole at its own rate first, and whole-array
    temporaries doubled that: an hour of 44.1 kHz stereo read at 22.05 kHz peaked at 1.46 GB of
    memory for its 318 MB result. Blocks are now resampled as they decode (0.39 GB)."""
    import tracemalloc

    rng = np.random.default_rng(4)
    n = 44100 * 12 + 7
    data = 0.4 * np.sin(2 * np.pi * 220 * np.arange(n) / 44100)[:, None] + 0.05 * rng.standard_normal(
        (n, channels)
    )
    path = tmp_path / "long.wav"
    sf.write(path, data, 44100, subtype=subtype)
    monkeypatch.setattr(io, "_BLOCK_FRAMES", 10_000)  # many blocks and a short last one
    monkeypatch.setattr(io, "_SCAN_BLOCK", 10_000)
    native, _ = read_audio(path)
    expected = io._resample(native, 44100, 22050, "soxr_hq")
    del native
    tracemalloc.start()
    try:
        y, sr = read_audio(path, sr=22050)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sr == 22050 and y.dtype == np.float32 and len(y) == round(n / 2)
    np.testing.assert_array_equal(y, np.clip(expected, -1, 1))  # the same samples, bit for bit
    assert peak < 1.25 * y.nbytes, (peak, y.nbytes)  # decoded whole first: 3 times the result and more
    part, _ = read_audio(path, sr=22050, offset=2.0, duration=3.0)
    whole_part, _ = read_audio(path, offset=2.0, duration=3.0)
    np.testing.assert_array_equal(part, np.clip(io._resample(whole_part, 44100, 22050, "soxr_hq"), -1, 1))


def test_an_offset_is_taken_out_at_the_files_rate_without_holding_the_file_at_its_rate(tmp_path, monkeypatch):
    """prepare took a DC offset out before resampling by reading the whole file again at its own
    rate (635 MB an hour at 44.1 kHz), and a seed's 10 minutes were read whole for it."""
    import tracemalloc

    n = 44100 * 8 + 5
    music = 0.3 * np.sin(2 * np.pi * 330 * np.arange(n) / 44100)
    sf.write(tmp_path / "offset.wav", np.stack([music + 0.25, music + 0.15], 1), 44100, subtype="FLOAT")
    monkeypatch.setattr(io, "_BLOCK_FRAMES", 10_000)
    monkeypatch.setattr(io, "_SCAN_BLOCK", 10_000)
    native, _ = read_audio(tmp_path / "offset.wav")
    mean = float(np.mean(native, dtype=np.float64))
    expected = io._resample(native - np.float32(mean), 44100, 16000, "soxr_hq")
    del native
    tracemalloc.start()
    try:
        y, found = io.read_audio_without_offset(tmp_path / "offset.wav", sr=16000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == pytest.approx(0.2, abs=1e-3) and found == pytest.approx(mean, abs=1e-7)
    np.testing.assert_allclose(y, expected, atol=1e-6)
    assert abs(float(y[:50].mean())) < 0.01 and abs(float(y[-50:].mean())) < 0.01  # no step at either end
    # a few blocks beside the result; the file at its own rate would be 1.4 MB more
    assert peak < y.nbytes + 400_000, (peak, y.nbytes)
    head, _ = io.read_audio_without_offset(tmp_path / "offset.wav", sr=16000, duration=2.0)
    assert len(head) == 32000


def test_offset_and_duration_cut_exact_frames(tmp_path):
    x = np.random.default_rng(2).uniform(-1, 1, 8000)
    sf.write(tmp_path / "cut.wav", x, 8000, subtype="FLOAT")
    y, _ = read_audio(tmp_path / "cut.wav", offset=0.25, duration=0.5)
    np.testing.assert_allclose(y, x[2000:6000], atol=1e-7)
    with pytest.raises(ParameterError, match="past the end"):
        read_audio(tmp_path / "cut.wav", offset=1.0)


@pytest.mark.parametrize(
    "kwargs", [{"sr": 0}, {"sr": 22050.5}, {"res_type": "kaiser_best"}, {"offset": -1.0}, {"duration": 0.0}]
)
def test_bad_read_arguments_raise_parameter_error(tmp_path, kwargs):
    sf.write(tmp_path / "ok.wav", sine(8000), 8000)
    with pytest.raises(ParameterError):
        read_audio(tmp_path / "ok.wav", **kwargs)


def test_a_gsm_wav_which_libsndfile_cannot_seek_in_decodes_whole_and_in_parts(tmp_path):
    # GSM 6.10 (telephone and voice-recorder WAVs): libsndfile reads "to the end" only where it
    # can seek, and it cannot here: the whole file was 'failed to decode' (a ValueError).
    if not sf.check_format("WAV", "GSM610"):
        pytest.skip("this libsndfile cannot write GSM 6.10")
    sr = 8000
    path = tmp_path / "voice.wav"
    sf.write(path, 0.4 * np.sin(2 * np.pi * 440 * np.arange(2 * sr) / sr), sr, subtype="GSM610")
    assert not sf.SoundFile(path).seekable()
    y, got_sr = read_audio(path)
    assert got_sr == sr and len(y) >= 2 * sr and amplitude(y) == pytest.approx(0.4, abs=0.05)
    part, _ = read_audio(path, offset=0.5, duration=0.25)
    np.testing.assert_array_equal(part, y[sr // 2 : sr // 2 + sr // 4])
    both, _ = read_audio(path, mono=False)
    assert both.shape == (len(y), 1)


def test_truncated_wav_decodes_the_samples_that_are_there(tmp_path):
    x = sine(16000)
    sf.write(tmp_path / "full.wav", x, 16000, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "half.wav").write_bytes(data[: len(data) // 2])
    full, _ = read_audio(tmp_path / "full.wav")
    with pytest.warns(PartialAudioWarning, match="kept in part: decoded 0.5 s") as caught:
        half, _ = read_audio(tmp_path / "half.wav")
    assert abs(len(half) - (len(data) // 2 - 44) // 2) <= 1
    np.testing.assert_array_equal(half, full[: len(half)])
    assert "data chunk promises 32000 bytes" in caught[0].message.detail


def _unfinish(path, *, trailing: bytes = b"") -> bytes:
    """The bytes of ``path`` as a recorder that died mid-take leaves them: RIFF and data sizes 0."""
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[4:8] = bytes(4)
    data[at + 4 : at + 8] = bytes(4)
    return bytes(data) + trailing


@pytest.mark.parametrize(
    ("subtype", "channels", "sr"),
    [("PCM_16", 1, 16000), ("PCM_24", 2, 44100), ("FLOAT", 3, 48000)],
)
def test_a_wav_whose_header_was_never_finished_is_read_whole(tmp_path, subtype, channels, sr):
    x = np.stack([sine(sr, 1.5, freq=220.0 * (c + 1)) for c in range(channels)], axis=1).squeeze()
    sf.write(tmp_path / "whole.wav", x, sr, subtype=subtype)
    (tmp_path / "died.wav").write_bytes(
        _unfinish(tmp_path / "whole.wav", trailing=b"\x01")
    )  # half a frame more
    assert sf.info(str(tmp_path / "died.wav")).frames == 0  # what libsndfile alone makes of it
    whole, _ = read_audio(tmp_path / "whole.wav", sr=16000)
    with pytest.warns(io.UnfinishedAudioWarning, match="header never finished: read 1.5 s after it"):
        died, got_sr = read_audio(tmp_path / "died.wav", sr=16000)
    assert got_sr == 16000
    np.testing.assert_array_equal(died, whole)
    info = audio_info(tmp_path / "died.wav")
    assert info["frames"] == round(1.5 * sr) and info["channels"] == channels and info["sr"] == sr
    with pytest.warns(io.UnfinishedAudioWarning):
        part, _ = read_audio(tmp_path / "died.wav", offset=0.5, duration=0.5)
    np.testing.assert_array_equal(part, read_audio(tmp_path / "whole.wav", offset=0.5, duration=0.5)[0])


@pytest.mark.parametrize("size_field", ["wrapped", "0xFFFFFFFF"])
def test_a_wav_of_more_than_4_gib_is_read_whole_not_as_its_wrapped_size(tmp_path, size_field):
    """A WAV's 32-bit sizes cannot say more than 4 GiB: a 6.8-hour take's wrapped data size made
    libsndfile read 22 ms of it (and prepare skip it as too short). The file is sparse: 4 GiB of
    zeros between a tone at its start and one at its end take no disk."""
    sr, tail = 44100, 4000  # frames of the tone at the end
    sf.write(tmp_path / "head.wav", np.stack([sine(sr, 2.0)] * 2, axis=1), sr, subtype="PCM_16")
    data = bytearray((tmp_path / "head.wav").read_bytes())
    at = data.index(b"data") + 8
    n_data = 2**32 + 4 * 1000  # 1000 frames past 4 GiB
    stated = 0xFFFFFFFF if size_field == "0xFFFFFFFF" else n_data % 2**32
    data[4:8] = ((stated + at - 8) % 2**32).to_bytes(4, "little")
    data[at - 4 : at] = stated.to_bytes(4, "little")
    end = (0.5 * sine(sr, tail / sr, freq=330.0) * 32767).astype("<i2")
    path = tmp_path / "take.wav"
    with open(path, "wb") as f:
        f.write(data)
        f.seek(at + n_data - 4 * tail)
        f.write(np.repeat(end, 2).tobytes())
    assert path.stat().st_size == at + n_data
    if size_field == "wrapped":
        assert sf.info(str(path)).frames == 1000  # what libsndfile alone makes of it
    frames = n_data // 4
    info = audio_info(path)
    assert info["frames"] == frames and info["sr"] == sr and info["channels"] == 2
    start, _ = read_audio(path, duration=2.0)
    np.testing.assert_allclose(start, sine(sr, 2.0), atol=1e-4)
    last, _ = read_audio(path, offset=(frames - tail) / sr)
    assert len(last) == tail and np.corrcoef(last, end.astype(np.float32))[0, 1] > 0.999


def test_a_wav_header_of_zero_frames_with_nothing_after_it_is_still_refused(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(DecodeError, match="no audio samples"):
        read_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "one.wav", sine(16000, 0.1), 16000)
    data = _unfinish(tmp_path / "one.wav")
    (tmp_path / "header_only.wav").write_bytes(data[: data.index(b"data") + 8] + b"\x01")  # less than a frame
    with pytest.raises(DecodeError, match="no audio samples"):
        read_audio(tmp_path / "header_only.wav")


@pytest.mark.skipif(not mp3_writable(), reason="this libsndfile cannot write MP3")
def test_the_mp3_inside_a_wav_file_is_read(tmp_path):
    # A WAV whose format is MPEG layer 3 (tag 0x55): libsndfile says "Malformed 'fmt ' chunk".
    import struct

    sf.write(tmp_path / "a.mp3", sine(22050, 2.0), 22050, format="MP3")
    mp3 = (tmp_path / "a.mp3").read_bytes()
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 0x55, 1, 22050, 16000, 1, 0)
    body = (
        b"WAVE" + fmt + b"data" + struct.pack("<I", len(mp3)) + mp3 + b"LIST" + struct.pack("<I", 4) + b"INFO"
    )
    (tmp_path / "mp3.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    inside, sr = read_audio(tmp_path / "mp3.wav")
    alone, _ = read_audio(tmp_path / "a.mp3")
    assert sr == 22050
    np.testing.assert_array_equal(inside, alone)  # the LIST chunk after it is not read as sound
    assert audio_info(tmp_path / "mp3.wav")["format"] == "MP3"


@pytest.mark.skipif(not mp3_writable(), reason="this libsndfile cannot write MP3")
@pytest.mark.parametrize("file_sr", [16000, 22050])
def test_a_mono_mpeg_2_mp3_read_in_blocks_is_the_mp3_read_whole(tmp_path, file_sr):
    # Read in blocks of 65,536 frames, such a file had glitches of up to 300 samples after some
    # block boundaries: resampled as it decoded, a 22.05 kHz MP3 was off by up to half the
    # signal's level there (the seek after each read: see the tonal test below).
    import soxr

    noise = 0.1 * np.random.default_rng(1).standard_normal(12 * file_sr)
    sf.write(tmp_path / "mono.mp3", noise, file_sr, format="MP3")
    whole = sf.read(str(tmp_path / "mono.mp3"), dtype="float32")[0]
    y, _ = read_audio(tmp_path / "mono.mp3", sr=44100)
    np.testing.assert_allclose(y, soxr.resample(whole, file_sr, 44100, quality="HQ")[: len(y)], atol=1e-6)
    part, _ = read_audio(tmp_path / "mono.mp3", sr=44100, offset=1.0, duration=8.0)
    assert len(part) == 8 * 44100


def _damaged(path, n_bytes: int = 2000):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for k in range(middle, middle + n_bytes):
        data[k] ^= 0x5A
    bad = path.with_name("damaged" + path.suffix)
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize(
    ("ext", "file_format", "subtype"),
    [
        ("flac", "FLAC", "PCM_16"),
        pytest.param(
            "mp3",
            "MP3",
            "MPEG_LAYER_III",
            marks=pytest.mark.skipif(not mp3_writable(), reason="this libsndfile cannot write MP3"),
        ),
    ],
)
def test_a_file_damaged_in_the_middle_keeps_what_decodes_before_the_damage(
    tmp_path, ext, file_format, subtype
):
    # FLAC "lost sync", an MP3's "internal error": the whole file was skipped as corrupt.
    sf.write(
        tmp_path / f"clean.{ext}",
        0.1 * np.random.default_rng(0).standard_normal(20 * 22050),
        22050,
        format=file_format,
        subtype=subtype,
    )
    bad = _damaged(tmp_path / f"clean.{ext}")
    with pytest.warns(PartialAudioWarning, match=r"kept in part: decoded .* \(decoding failed at") as caught:
        y, sr = read_audio(bad)
    clean, _ = read_audio(tmp_path / f"clean.{ext}")
    assert 5 < len(y) / sr < 15  # the damage is half-way
    np.testing.assert_allclose(y, clean[: len(y)], atol=1e-6)  # MP3: read in other steps, last bits
    assert caught[0].message.seconds == pytest.approx(len(y) / sr)
    with pytest.warns(PartialAudioWarning):
        y16, _ = read_audio(bad, sr=16000)  # the same when resampled as it decodes
    assert abs(len(y16) / 16000 - len(y) / sr) < 0.5  # up to a step of reading apart


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg here to write and read AAC")
def test_aac_through_ffmpeg_is_mixed_and_resampled_as_it_decodes(tmp_path):
    # An hour of stereo AAC was decoded whole first: 3.23 GB at its peak; as it decodes, 0.73 GB.
    import subprocess

    import soxr

    x = np.stack([sine(44100, 4.0, freq=440.0), sine(44100, 4.0, freq=660.0)], axis=1)
    sf.write(tmp_path / "a.wav", x, 44100)
    m4a = tmp_path / "a.m4a"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(tmp_path / "a.wav"), "-c:a", "aac", str(m4a)],
        check=True,
    )
    whole, sr = read_audio(m4a)
    channels, _ = read_audio(m4a, mono=False)
    assert sr == 44100 and channels.shape[1] == 2 and len(channels) == len(whole)
    np.testing.assert_allclose(whole, channels.mean(axis=1), atol=1e-6)
    y, _ = read_audio(m4a, sr=22050)
    np.testing.assert_allclose(y, soxr.resample(whole, 44100, 22050, quality="HQ")[: len(y)], atol=1e-6)
    assert len(y) == round(len(whole) * 22050 / 44100)
    part, _ = read_audio(m4a, offset=1.0, duration=2.0)
    np.testing.assert_array_equal(part, whole[44100 : 3 * 44100])
    (tmp_path / "cut.m4a").write_bytes(m4a.read_bytes()[:2000])  # its index (moov) cut away
    with pytest.raises(DecodeError, match="corrupt or truncated audio.*ffmpeg cannot decode it"):
        read_audio(tmp_path / "cut.m4a")


def _vbr_mp3_without_xing(path) -> float:
    """A VBR MP3, loud then quiet, whose Xing header is blanked (an old encoder's, a cutting
    tool's): libsndfile estimates its length from its first, loud frame. Its real length in s."""
    rng = np.random.default_rng(0)
    y = np.concatenate([0.3 * rng.standard_normal(2 * 22050), 0.001 * sine(22050, 20.0)])
    sf.write(path, y, 22050, format="MP3")
    data = bytearray(path.read_bytes())
    at = data.find(b"Xing", 0, 4000)
    assert at >= 0
    data[at : at + 4] = bytes(4)
    path.write_bytes(bytes(data))
    return len(y) / 22050


@pytest.mark.skipif(not mp3_writable(), reason="this libsndfile cannot write MP3")
def test_a_vbr_mp3_without_a_xing_header_is_not_read_short_without_a_word(tmp_path, monkeypatch):
    seconds = _vbr_mp3_without_xing(tmp_path / "vbr.mp3")
    assert sf.info(str(tmp_path / "vbr.mp3")).frames / 22050 < seconds / 2  # libsndfile's estimate
    assert audio_info(tmp_path / "vbr.mp3")["duration"] == pytest.approx(seconds, abs=0.2)  # counted
    monkeypatch.setattr(io.shutil, "which", lambda name, *a, **k: None)  # no ffmpeg: said, not hidden
    with pytest.warns(
        PartialAudioWarning,
        match="a VBR MP3 without a Xing header: libsndfile reads .* of its 22.1 s; install ffmpeg",
    ):
        y, sr = read_audio(tmp_path / "vbr.mp3")
    assert len(y) / sr < seconds / 2


@pytest.mark.skipif(
    not mp3_writable() or shutil.which("ffmpeg") is None, reason="needs MP3 writing and ffmpeg"
)
def test_a_vbr_mp3_without_a_xing_header_is_read_whole_through_ffmpeg(tmp_path):
    seconds = _vbr_mp3_without_xing(tmp_path / "vbr.mp3")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialAudioWarning)
        y, sr = read_audio(tmp_path / "vbr.mp3", sr=16000)
    assert len(y) / sr == pytest.approx(seconds, abs=0.2)
    assert np.max(np.abs(y[: 2 * sr])) > 0.5 and np.max(np.abs(y[-5 * sr :])) < 0.01  # loud, then quiet


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg here to write and read AAC")
def test_the_dc_offset_of_an_aac_file_is_found_as_it_decodes(tmp_path):
    # Its first pass read the whole file (10 minutes of stereo AAC: 0.37 GB; now 0.17 GB).
    import subprocess

    from cadenza.audio.io import read_audio_without_offset

    x = np.stack([sine(44100, 3.0), sine(44100, 3.0, freq=660.0)], axis=1) * 0.5 + 0.2
    sf.write(tmp_path / "dc.wav", x, 44100)
    m4a = tmp_path / "dc.m4a"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(tmp_path / "dc.wav"), "-c:a", "aac", str(m4a)],
        check=True,
    )
    y, mean = read_audio_without_offset(m4a, sr=22050)
    whole, _ = read_audio(m4a)
    assert mean == pytest.approx(float(np.mean(whole, dtype=np.float64)), abs=1e-4)
    assert mean == pytest.approx(0.2, abs=0.01) and abs(float(np.mean(y[2205:-2205]))) < 5e-3
    assert len(y) == round(len(whole) * 22050 / 44100)


def _noise(sr: int, seconds: float) -> np.ndarray:
    """Noise, which compresses badly: a cut at a fraction of the bytes lands in the middle of the audio."""
    return 0.3 * np.random.default_rng(7).standard_normal(round(sr * seconds))


def _cut(path, fraction: float):
    data = path.read_bytes()
    cut = path.with_name("cut" + path.suffix)
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


@pytest.mark.parametrize(
    ("ext", "file_format", "subtype", "file_sr"),
    [
        pytest.param("ogg", "OGG", "VORBIS", 22050, id="ogg-vorbis"),
        pytest.param(
            "opus",
            "OGG",
            "OPUS",
            48000,
            id="ogg-opus",
            marks=pytest.mark.skipif(".opus" not in DECODABLE_EXTENSIONS, reason="no Opus here"),
        ),
        pytest.param(
            "mp3",
            "MP3",
            "MPEG_LAYER_III",
            22050,
            id="mp3",
            marks=pytest.mark.skipif(not mp3_writable(), reason="this libsndfile cannot write MP3"),
        ),
    ],
)
def test_truncated_compressed_file_keeps_what_decodes_and_warns(tmp_path, ext, file_format, subtype, file_sr):
    full_path = tmp_path / f"full.{ext}"
    sf.write(full_path, _noise(file_sr, 5.0), file_sr, format=file_format, subtype=subtype)
    cut = _cut(full_path, 0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialAudioWarning)
        full, _ = read_audio(full_path)  # the whole file: no warning
    with pytest.warns(PartialAudioWarning) as caught:
        part, sr = read_audio(cut)
    assert sr == file_sr and 0.5 * file_sr < len(part) < len(full) - 0.5 * file_sr
    np.testing.assert_allclose(part[: file_sr // 2], full[: file_sr // 2], atol=1e-6)
    warning = caught[0].message
    assert warning.path == str(cut) and warning.seconds == pytest.approx(len(part) / file_sr)
    assert warning.note == f"kept in part: decoded {len(part) / file_sr:.1f} s"
    assert str(cut) in str(warning)
    # A read that stops before the cut has nothing to warn about.
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialAudioWarning)
        assert len(read_audio(cut, duration=0.25)[0]) == round(0.25 * file_sr)


def test_whole_files_and_streaming_wavs_do_not_warn(tmp_path):
    x = sine(8000)
    sf.write(tmp_path / "a.wav", x, 8000)
    sf.write(tmp_path / "a.flac", x, 8000)
    sf.write(tmp_path / "a.ogg", _noise(8000, 1.0), 8000)
    # A WAV written by a streaming tool that never filled its data size in (0xFFFFFFFF).
    data = bytearray((tmp_path / "a.wav").read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = b"\xff\xff\xff\xff"
    (tmp_path / "stream.wav").write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialAudioWarning)
        for name in ("a.wav", "a.flac", "a.ogg", "stream.wav"):
            y, _ = read_audio(tmp_path / name)
            assert len(y) == 8000, name


def _write_malformed(tmp_path, kind):
    """Make one broken file; return its path."""
    if kind == "empty":
        path = tmp_path / "empty.wav"
        path.write_bytes(b"")
    elif kind == "text":
        path = tmp_path / "lyrics.mp3"
        path.write_text("la la la, this is not an mp3\n" * 20)
    elif kind == "html":
        path = tmp_path / "download.flac"
        path.write_text(
            "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body></body></html>\n"
        )
    elif kind == "midi":
        path = tmp_path / "song.wav"
        path.write_bytes(b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x00\x04\x00\xff\x2f\x00")
    elif kind == "binary":
        path = tmp_path / "blob.ogg"
        path.write_bytes(b"\x00\x01PK" + np.random.default_rng(3).bytes(4000))
    elif kind == "header-only":
        sf.write(tmp_path / "full.wav", sine(8000), 8000)
        path = tmp_path / "header.wav"
        path.write_bytes((tmp_path / "full.wav").read_bytes()[:30])
    elif kind == "truncated-flac":
        sf.write(tmp_path / "full.flac", sine(16000), 16000)
        data = (tmp_path / "full.flac").read_bytes()
        path = tmp_path / "half.flac"
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero-frames":
        path = tmp_path / "nothing.wav"
        sf.write(path, np.zeros(0), 16000)
    elif kind == "m4a":
        path = tmp_path / "song.m4a"
        path.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isommp42" + bytes(64))
    elif kind == "utf16":  # its byte-order mark FF FE is also an MPEG frame sync
        path = tmp_path / "readme.wav"
        path.write_bytes(("These are my notes, not a recording.\n" * 5).encode("utf-16"))
    elif kind == "missing":
        path = tmp_path / "nowhere" / "gone.wav"
    else:
        raise AssertionError(kind)
    return path


MALFORMED = [
    ("empty", "empty file"),
    ("text", "not an audio file"),
    ("html", "not an audio file"),
    ("midi", "not an audio file"),
    ("binary", "not an audio file"),
    ("header-only", "corrupt or truncated audio"),
    ("truncated-flac", "corrupt or truncated audio"),
    ("zero-frames", "no audio samples"),
    ("m4a", "unsupported format"),
    ("utf16", "not an audio file"),
    ("missing", "missing file"),
]


@pytest.mark.parametrize(("kind", "reason"), MALFORMED)
def test_malformed_file_raises_decode_error_with_reason(tmp_path, monkeypatch, kind, reason):
    monkeypatch.setattr(io, "_import_audioread", lambda: None)  # no ffmpeg lottery
    path = _write_malformed(tmp_path, kind)
    with pytest.raises(DecodeError) as caught:
        read_audio(path, sr=16000)
    assert caught.value.reason == reason
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_float_file_holding_nan_or_infinity_is_a_decode_error(tmp_path, bad):
    """A writer's glitch or a model gone to NaN: skipped with its reason, never fed to features."""
    y = 0.1 * np.sin(np.arange(8000) / 5.0)
    y[100:110] = bad
    sf.write(tmp_path / "glitch.wav", y, 8000, subtype="FLOAT")
    with pytest.raises(DecodeError) as caught:
        read_audio(tmp_path / "glitch.wav")
    assert caught.value.reason == "non-finite samples"
    assert caught.value.detail == "10 of 8000 samples are NaN or infinite"
    with pytest.raises(DecodeError) as caught:  # counted as in the file, not as resampling spreads it
        read_audio(tmp_path / "glitch.wav", sr=16000)
    assert caught.value.detail == "10 of 8000 samples are NaN or infinite"


@pytest.mark.parametrize("channels", [1, 2])
def test_mend_sets_a_few_nan_samples_to_zero_with_a_note_at_any_rate(tmp_path, channels):
    """A recording with a DAW's glitch of NaN samples was skipped whole; ``mend=True`` (what
    ``prepare`` asks for) reads it with them at 0 and says so; resampled, the NaN must not smear
    over the resampler's filter (the streaming path zeroes them block by block)."""
    sr = 22050
    y = (0.3 * np.sin(2 * np.pi * 330 * np.arange(3 * sr) / sr)).astype(np.float32)
    y[1000:1100] = np.nan
    y[65700] = -np.inf  # in the second block read
    clean = np.where(np.isfinite(y), y, 0.0).astype(np.float32)
    frames = np.stack([y] * channels, 1) if channels > 1 else y
    sf.write(tmp_path / "glitch.wav", frames, sr, subtype="FLOAT")
    sf.write(
        tmp_path / "clean.wav",
        np.stack([clean] * channels, 1) if channels > 1 else clean,
        sr,
        subtype="FLOAT",
    )
    with pytest.raises(DecodeError, match="101 of 66150 samples are NaN or infinite"):
        read_audio(tmp_path / "glitch.wav")  # by default: refused, as a generated clip gone to NaN must be
    for rate in (None, 16000, 44100):
        with pytest.warns(MendedAudioWarning) as caught:
            got, got_sr = read_audio(tmp_path / "glitch.wav", sr=rate, mend=True)
        assert caught[0].message.note == "mended: 101 of 66150 samples were NaN or infinite, set to 0"
        want, want_sr = read_audio(tmp_path / "clean.wav", sr=rate)
        assert got_sr == want_sr and np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, atol=1e-6)
    y[::50] = np.nan  # 2%: damage, not a glitch
    sf.write(tmp_path / "damaged.wav", y, sr, subtype="FLOAT")
    with pytest.raises(DecodeError, match=r"more than 1%: not a glitch to mend"):
        read_audio(tmp_path / "damaged.wav", sr=16000, mend=True)


def test_a_float_file_with_a_wild_sample_is_corrupt_not_scaled_to_nothing(tmp_path):
    """One 3e38 sample in a tone had scaled the tone to 1e-39 and the file was skipped as too short."""
    y = 0.1 * np.sin(np.arange(16000) / 5.0)
    y[5000] = 3e38
    sf.write(tmp_path / "wild.wav", y, 16000, subtype="FLOAT")
    for kwargs in ({}, {"sr": 8000}, {"offset": 0.5}):  # the window read holds no wild sample itself
        with pytest.raises(DecodeError) as caught:
            read_audio(tmp_path / "wild.wav", **kwargs)
        assert caught.value.reason == "corrupt or truncated audio"
        assert "beyond ±2^32 (up to 3e+38): damaged data" in caught.value.detail
    assert caught.value.detail.startswith("samples elsewhere in the file")
    # a file in 32-bit integer units is another scale, not damage: scaled down and kept
    sf.write(tmp_path / "int-scale.wav", y.clip(-1, 1) * 2.0**31, 16000, subtype="FLOAT")
    with pytest.warns(io.LoudAudioWarning):
        kept = read_audio(tmp_path / "int-scale.wav")[0]
    assert np.abs(kept).max() == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("rate", [1, 7, 5_000_000])
def test_a_header_with_a_rate_no_sound_has_is_corrupt(tmp_path, rate):
    """At 1 Hz a 32 KB WAV became 4.4 hours at 16 kHz (a 2 GB feature shard); at 2 GHz no sample."""
    path = tmp_path / "odd.wav"
    sf.write(path, sine(16000), rate)
    for read in (lambda: read_audio(path, sr=16000), lambda: audio_info(path)):
        with pytest.raises(DecodeError) as caught:
            read()
        assert caught.value.reason == "corrupt or truncated audio"
        assert (
            caught.value.detail
            == f"the WAV header gives a sample rate of {rate} Hz (audio is 1000 Hz to 3072000 Hz)"
        )


@pytest.mark.parametrize(("kind", "reason"), [m for m in MALFORMED if m[0] != "zero-frames"])
def test_audio_info_classifies_like_read_audio(tmp_path, monkeypatch, kind, reason):
    monkeypatch.setattr(io, "_import_audioread", lambda: None)
    path = _write_malformed(tmp_path, kind)
    if kind == "truncated-flac":  # the header is intact: only decoding finds the damage
        assert audio_info(path)["format"] == "FLAC"
        return
    with pytest.raises(DecodeError) as caught:
        audio_info(path)
    assert caught.value.reason == reason


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode"
)
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.wav"
    sf.write(path, sine(8000), 8000)
    path.chmod(0)
    try:
        with pytest.raises(DecodeError) as caught:
            read_audio(path)
        assert caught.value.reason == "unreadable file"
    finally:
        path.chmod(0o644)


def test_permission_error_is_unreadable_file(tmp_path, monkeypatch):
    """The same classification, checked even as root by making open() refuse."""
    path = tmp_path / "secret.wav"
    sf.write(path, sine(8000), 8000)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io, "open", refuse, raising=False)
    with pytest.raises(DecodeError) as caught:
        read_audio(path)
    assert caught.value.reason == "unreadable file"


def test_mp3_without_decoder_is_unsupported_format(tmp_path, monkeypatch):
    path = tmp_path / "song.mp3"
    path.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(500))
    monkeypatch.setattr(io, "_soundfile_reads_mp3", lambda: False)
    monkeypatch.setattr(io, "_import_audioread", lambda: None)
    with pytest.raises(DecodeError) as caught:
        read_audio(path)
    assert caught.value.reason == "unsupported format"
    assert "audioread" in caught.value.detail


def test_audio_info_reads_the_header(tmp_path):
    sf.write(tmp_path / "st.flac", np.zeros((33075, 2)), 22050, subtype="PCM_24")
    info = audio_info(tmp_path / "st.flac")
    assert info == {
        "sr": 22050,
        "channels": 2,
        "frames": 33075,
        "duration": 1.5,
        "format": "FLAC",
        "subtype": "PCM_24",
    }
    sf.write(tmp_path / "none.wav", np.zeros(0), 8000)
    assert audio_info(tmp_path / "none.wav")["frames"] == 0


def test_is_silent():
    assert is_silent(np.zeros(10))
    assert is_silent(np.zeros(0))
    assert is_silent(np.full(10, 10 ** (-61 / 20)))
    assert not is_silent(np.full(10, 10 ** (-59 / 20)))
    assert not is_silent(np.full(10, 0.01), threshold_db=-60.0)
    assert is_silent(np.full(10, 0.01), threshold_db=-30.0)


def test_trim_silence_cuts_a_rendered_chorales_release_as_librosa_does():
    """A Bach chorale rendered (FluidSynth or the built-in synth) ends in a release that dies into
    digital silence: cut at 40 dB below the loudest frame, within a frame of librosa's trim."""
    from cadenza.audio import render_midi
    from cadenza.data import open_source
    from cadenza.data.prepare import load_score_item

    sr = 8000
    item = next(open_source("music21:chorales").items())
    y = render_midi(load_score_item(item), sr=sr)
    y = np.concatenate([np.zeros(sr // 2, dtype=y.dtype), y])  # half a second of lead-in
    kept, lead, tail = trim_silence(y, sr, frame_seconds=2048 / sr)
    _, (start, stop) = librosa.effects.trim(y, top_db=40, frame_length=2048, hop_length=512)
    assert abs(lead * sr - start) <= 2048 and abs((len(y) - tail * sr) - stop) <= 2048
    assert (
        0.5 - 2048 / sr <= lead <= 0.5 and tail > 0.1 and abs(len(kept) - (len(y) - (lead + tail) * sr)) <= 1
    )
    db = 10 * np.log10(np.mean(np.square(kept[-1024:])) / np.mean(np.square(kept)))
    assert db > -45  # what is kept ends where the sound is still there
    # a quiet passage inside the music is kept; silence and an empty input pass through
    inside = np.concatenate([np.ones(1000), 1e-4 * np.ones(3000), np.ones(1000)])
    assert len(trim_silence(inside, 1000)[0]) == 5000
    assert trim_silence(np.zeros(4000), 1000)[1:] == (0.0, 0.0)
    assert trim_silence(np.zeros(0), 1000)[0].size == 0


def test_audio_extensions():
    from cadenza.data import corpora

    assert corpora.AUDIO_EXTENSIONS is AUDIO_EXTENSIONS  # one list, that corpora import
    assert {".wav", ".flac", ".ogg", ".aiff", ".mp3", ".opus"} <= set(AUDIO_EXTENSIONS)
    assert all(ext.startswith(".") and ext == ext.lower() for ext in AUDIO_EXTENSIONS)
    assert {".wav", ".flac", ".ogg", ".aiff"} <= DECODABLE_EXTENSIONS <= set(AUDIO_EXTENSIONS)
    assert (".mp3" in DECODABLE_EXTENSIONS) == (
        "MP3" in sf.available_formats() or io._import_audioread() is not None
    )


# ----------------------------------------------------------------------------------------------
# write_audio


def test_write_audio_round_trips_pcm16_and_leaves_no_temp_file(tmp_path):
    y = np.random.default_rng(4).uniform(-0.5, 0.5, 12345)
    path = tmp_path / "new" / "dir" / "noise.wav"
    write_audio(path, y, 22050)
    z, sr = read_audio(path)
    assert sr == 22050 and len(z) == len(y)
    assert np.max(np.abs(z - y)) <= 1 / 32768
    assert sf.info(path).subtype == "PCM_16"
    assert os.listdir(path.parent) == ["noise.wav"]


def test_write_audio_stereo_flac_24(tmp_path):
    y = np.random.default_rng(5).uniform(-0.9, 0.9, (5000, 2))
    write_audio(tmp_path / "st.flac", y, 16000, subtype="PCM_24")
    z, _ = read_audio(tmp_path / "st.flac", mono=False)
    assert z.shape == (5000, 2)
    assert np.max(np.abs(z - y)) <= 2 / 2**23
    assert sf.info(tmp_path / "st.flac").format == "FLAC"


def test_a_float_file_beyond_full_scale_is_divided_by_its_peak(tmp_path):
    from cadenza.audio import LoudAudioWarning

    x = np.sin(2 * np.pi * 220 * np.arange(8000) / 8000)
    sf.write(tmp_path / "hot.wav", 1e6 * x, 8000, subtype="FLOAT")
    with pytest.warns(LoudAudioWarning, match=r"scaled down: peaked at \+120\.0 dBFS"):
        y, _ = read_audio(tmp_path / "hot.wav")
    np.testing.assert_allclose(y, x, atol=1e-6)  # the sine, not a square wave at the rails
    sf.write(tmp_path / "over.wav", 1.5 * x, 8000, subtype="FLOAT")  # a lossy decoder's overshoot
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _ = read_audio(tmp_path / "over.wav")  # clipped at the file's level, as players do
    np.testing.assert_allclose(y, np.clip(1.5 * x, -1, 1), atol=1e-6)
    sf.write(tmp_path / "in-range.wav", 0.5 * x, 8000, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(tmp_path / "in-range.wav")[0], (0.5 * x).astype(np.float32))


def test_a_window_of_a_loud_float_file_is_scaled_as_the_whole_file_is(tmp_path):
    from cadenza.audio import LoudAudioWarning

    sr = 8000
    x = np.sin(2 * np.pi * 220 * np.arange(3 * sr) / sr)
    level = np.repeat([1.8, 0.5, 4.0], sr)  # the loudest second last; the first alone would be clipped
    stereo = np.stack([level * x, 0.5 * level * x], axis=1)
    sf.write(tmp_path / "daw.wav", stereo, sr, subtype="FLOAT")
    for mono in (True, False):
        with pytest.warns(LoudAudioWarning, match=r"peaked at \+12\.0 dBFS" if not mono else "scaled down"):
            whole, _ = read_audio(tmp_path / "daw.wav", mono=mono)
        for offset, duration in ((0.0, 1.0), (0.5, 1.0), (1.0, None), (0.0, 2.0)):
            with pytest.warns(LoudAudioWarning):
                part, _ = read_audio(tmp_path / "daw.wav", mono=mono, offset=offset, duration=duration)
            start = round(offset * sr)
            np.testing.assert_allclose(part, whole[start : start + len(part)], atol=1e-6)
    with pytest.warns(LoudAudioWarning, match=r"peaked at \+9\.5 dBFS"):  # the mix peaks at 0.75 * 4
        first, _ = read_audio(tmp_path / "daw.wav", duration=1.0, mono=True)
    assert np.max(np.abs(first)) == pytest.approx(1.8 * 0.75 / 3.0, rel=1e-3)  # not clipped at 1.0
    # a new version of the file is measured again
    sf.write(tmp_path / "daw.wav", stereo[:sr] / 1.8 * 0.9, sr, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        part, _ = read_audio(tmp_path / "daw.wav", duration=0.5)
    assert np.max(np.abs(part)) == pytest.approx(0.9 * 0.75, rel=1e-3)


def test_write_audio_clips_and_warns_above_a_thousandth(tmp_path):
    y = sine(8000, amp=0.5)
    y[:80] = 1.5  # 1% clipped
    with pytest.warns(UserWarning, match="clipping 1.00%"):
        write_audio(tmp_path / "loud.wav", y, 8000, subtype="FLOAT")
    z, _ = read_audio(tmp_path / "loud.wav")
    np.testing.assert_array_equal(z[:80], 1.0)
    y[:80] = y[80:160]
    y[:4] = -1.2  # 0.05% clipped: clipped quietly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_audio(tmp_path / "loud.wav", y, 8000, subtype="FLOAT")
    z, _ = read_audio(tmp_path / "loud.wav")
    np.testing.assert_array_equal(z[:4], -1.0)


def test_write_audio_failure_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "keep.wav"
    write_audio(path, sine(8000), 8000)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_audio(path, np.zeros(100), 8000)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.wav"]


@pytest.mark.parametrize(
    ("name", "y", "kwargs"),
    [
        ("a.mp3", np.zeros(10), {}),
        ("a.wav", np.zeros((2, 1000)), {}),
        ("a.wav", np.array([0.0, np.nan]), {}),
        ("a.wav", np.zeros(10, dtype=np.int16), {}),
        ("a.wav", np.zeros(0), {}),
        ("a.flac", np.zeros(10), {"subtype": "FLOAT"}),
    ],
)
def test_write_audio_rejects_bad_input(tmp_path, name, y, kwargs):
    with pytest.raises(ParameterError):
        write_audio(tmp_path / name, y, 8000, **kwargs)
    assert not os.listdir(tmp_path)


def test_the_whole_file_peak_of_a_float_file_is_found_once_for_many_windows(tmp_path):
    # The evaluation and the listening test read the first seconds of a file many times: its
    # whole-file peak (which scales every window) is read once per version of the file.
    sf.write(tmp_path / "loud.wav", 8.0 * sine(16000, 3.0), 16000, subtype="FLOAT")  # peaks at 4.0
    io._float_file_peak.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", io.LoudAudioWarning)  # scaled down: said each time
        first, _ = read_audio(tmp_path / "loud.wav", offset=0.5, duration=1.0)
        again, _ = read_audio(tmp_path / "loud.wav", offset=1.5, duration=1.0)
    assert np.max(np.abs(first)) == pytest.approx(1.0, abs=1e-3)  # divided by the whole file's peak
    np.testing.assert_allclose(again, first, atol=1e-3)  # the same sine, a second later
    info = io._float_file_peak.cache_info()
    assert info.misses == 1 and info.hits == 1


def test_an_ogg_file_damaged_in_the_middle_says_so(tmp_path):
    # libvorbis passes over damaged pages; the note said "the last Ogg page does not end the stream"
    sf.write(
        tmp_path / "clean.ogg",
        0.1 * np.random.default_rng(0).standard_normal(20 * 22050),
        22050,
        format="OGG",
    )
    bad = _damaged(tmp_path / "clean.ogg")
    with pytest.warns(PartialAudioWarning, match=r"the Ogg pages from byte \d+ are damaged") as caught:
        y, sr = read_audio(bad)
    assert 10 < len(y) / sr < 20 and caught[0].message.seconds == pytest.approx(len(y) / sr)
    cut = tmp_path / "cut.ogg"
    cut.write_bytes((tmp_path / "clean.ogg").read_bytes()[:20000])  # cut short: said as before
    with pytest.warns(PartialAudioWarning, match="breaks off at the end of the file|does not end the stream"):
        read_audio(cut)


@pytest.mark.parametrize("fmt", ["OGG", "MP3"])
def test_files_joined_end_to_end_are_read_whole(tmp_path, fmt):
    """A chained Ogg file (a radio recording, Ogg files joined) or MP3 files joined by cat, each
    with its own header: libsndfile read the first stream alone (8 s read as 4 s, no word)."""
    if fmt == "MP3" and not mp3_writable():
        pytest.skip("this libsndfile does not write MP3")
    sr, ext = 22050, fmt.lower()
    t = np.arange(3 * sr) / sr
    parts = [
        0.3 * np.sin(2 * np.pi * f * t[: int(len(t) * k)]) for f, k in ((330, 1.0), (550, 0.7), (440, 0.5))
    ]
    alone = []
    for i, y in enumerate(parts):
        sf.write(tmp_path / f"part{i}.{ext}", y.astype(np.float32), sr, format=fmt)
        alone.append(read_audio(tmp_path / f"part{i}.{ext}")[0])
    joined = tmp_path / f"joined.{ext}"
    joined.write_bytes(b"".join((tmp_path / f"part{i}.{ext}").read_bytes() for i in range(3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialAudioWarning)
        y, got_sr = read_audio(joined)
    assert got_sr == sr
    np.testing.assert_allclose(y, np.concatenate(alone), atol=1e-6)
    assert audio_info(joined)["frames"] == len(y)
    # A window across the first join, and one inside the second stream
    across, _ = read_audio(joined, duration=4.0)
    np.testing.assert_allclose(across, np.concatenate(alone)[: 4 * sr], atol=1e-6)
    later, _ = read_audio(joined, offset=3.5, duration=1.0)
    np.testing.assert_allclose(later, np.concatenate(alone)[round(3.5 * sr) : round(4.5 * sr)], atol=1e-6)
    resampled, _ = read_audio(joined, sr=16000)
    assert abs(len(resampled) - round(len(y) * 16000 / sr)) <= 1


def test_a_chained_ogg_file_at_two_rates_reads_its_first_streams_and_says_so(tmp_path):
    y = (0.3 * np.sin(2 * np.pi * 330 * np.arange(44100) / 22050)).astype(np.float32)
    sf.write(tmp_path / "a.ogg", y, 22050)
    sf.write(tmp_path / "b.ogg", y, 22050)
    sf.write(tmp_path / "c.ogg", y, 44100)
    joined = tmp_path / "radio.ogg"
    joined.write_bytes(b"".join((tmp_path / n).read_bytes() for n in ("a.ogg", "b.ogg", "c.ogg")))
    with pytest.warns(PartialAudioWarning, match="2 of the 3 OGG streams joined in the file read"):
        got, sr = read_audio(joined)
    assert sr == 22050 and len(got) == 2 * len(y)


@pytest.mark.skipif(not mp3_writable(), reason="this libsndfile cannot write MP3")
@pytest.mark.parametrize(("file_sr", "channels"), [(44100, 2), (22050, 1), (16000, 2)])
def test_an_mp3_of_tonal_music_read_in_blocks_or_from_an_offset_is_the_mp3_read_whole(
    tmp_path, file_sr, channels
):
    """pysoundfile seeks after every read, and libsndfile's MP3 decoder loses its bit reservoir at
    a seek: in a chord (noise hides it) the first ~4,000 samples after every block read were off
    by up to 0.36, and a read from an offset began with them. Every MP3 mixed to mono or resampled
    as it decoded, in prepare, evaluate and listen, had such a glitch every 65,664 frames."""
    import soxr

    t = np.arange(8 * file_sr) / file_sr
    chord = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (262.0, 330.0, 392.0))
    frames = np.stack([chord, 0.5 * chord], 1) if channels == 2 else chord
    sf.write(tmp_path / "chord.mp3", frames.astype(np.float32), file_sr, format="MP3")
    whole = sf.read(str(tmp_path / "chord.mp3"), dtype="float32", always_2d=True)[0].mean(axis=1)
    assert np.abs(whole[file_sr : 7 * file_sr] - chord[file_sr : 7 * file_sr]).max() > 0  # a real decode
    y, _ = read_audio(tmp_path / "chord.mp3")
    np.testing.assert_allclose(y, whole, atol=1e-6)
    y, _ = read_audio(tmp_path / "chord.mp3", sr=11025)
    np.testing.assert_allclose(y, soxr.resample(whole, file_sr, 11025, quality="HQ")[: len(y)], atol=1e-6)
    part, _ = read_audio(tmp_path / "chord.mp3", offset=2.5, duration=3.0)
    start = round(2.5 * file_sr)
    np.testing.assert_allclose(part, whole[start : start + 3 * file_sr], atol=1e-6)
