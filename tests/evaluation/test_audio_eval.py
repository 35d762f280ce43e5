"""The audio evaluation on real music: rendered Bach chorales and a Haydn quartet from music21.

The metric self-test: progressive degradations of real clips raise KAD and FAD in order; the
real-vs-real floor sits below every garbage calibration row; the loop detector flags loops and
passes music; the copy check flags clips cut from the training files and passes held-out ones.
Then ``cadenza evaluate`` on folders with bad input, from the command line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import music21
import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

from cadenza.audio import render_midi, write_audio
from cadenza.cli import main
from cadenza.data.scores import read_score
from cadenza.errors import ParameterError
from cadenza.evaluation import detectors as det
from cadenza.evaluation.distances import fad, kad
from cadenza.evaluation.evaluate import evaluate
from cadenza.evaluation.features import (
    ANALYSIS_SR,
    N_CLIP_FEATURES,
    clip_embedding,
    clip_features,
    reference_window_features,
)
from tests.evaluation.helpers import open_in_chromium, strict_json

SR = ANALYSIS_SR
CLIP = 5 * SR  # 5 s clips keep the suite fast


def _render(work: str, seconds: float | None = None) -> np.ndarray:
    y = render_midi(read_score(music21.corpus.getWork(work)), sr=SR)
    return y[: int(seconds * SR)] if seconds else y


@pytest.fixture(scope="module")
def pieces() -> dict[str, list[np.ndarray]]:
    """Rendered music in three disjoint groups of pieces: train, reference (held out), other held-out."""
    chorales = [
        str(p) for p in music21.corpus.getComposer("bach") if "bwv" in str(p) and str(p).endswith(".mxl")
    ]
    chorales = sorted(chorales)[:18]
    ys = [render_midi(read_score(p), sr=SR) for p in chorales]
    quartet = _render("haydn/opus74no1/movement3", 60.0)
    return {"train": ys[:6], "reference": [*ys[6:14], quartet], "held_out": ys[14:]}


def _clips(ys: list[np.ndarray], n: int = CLIP) -> list[np.ndarray]:
    return [y[a : a + n] for y in ys for a in range(0, len(y) - n + 1, n)]


def _z(sets: list[np.ndarray], ref: np.ndarray) -> list[np.ndarray]:
    mean, std = ref.mean(0), ref.std(0)
    std = np.maximum(std, 1e-3 * np.median(std[std > 0]))
    return [(s - mean) / std for s in sets]


def _embed(clips: list[np.ndarray]) -> np.ndarray:
    return np.stack([clip_embedding(clip_features(c).windows) for c in clips])


def test_features_equal_a_librosa_loop_on_real_music(pieces: dict[str, list[np.ndarray]]) -> None:
    y = pieces["reference"][-1][: 6 * SR]  # the quartet
    fast = clip_features(y).windows
    slow = reference_window_features(y)
    assert fast.shape == slow.shape == (11, 134)
    scale = np.maximum(np.abs(slow), 1e-3 * np.abs(slow).max(axis=0))
    assert np.max(np.abs(fast - slow) / scale) < 1e-4
    assert clip_embedding(fast).shape == (N_CLIP_FEATURES,)
    # a different piece gives different features (the test can fail)
    assert np.abs(reference_window_features(pieces["train"][0][: 6 * SR]) - slow).max() > 1.0


def test_degradations_raise_kad_and_fad_in_order(pieces: dict[str, list[np.ndarray]]) -> None:
    ref_clips = _clips(pieces["reference"])
    test_clips = _clips(pieces["held_out"] + pieces["train"][:2])
    assert len(ref_clips) >= 30 and len(test_clips) >= 20
    rng = np.random.default_rng(0)

    def noisy(y: np.ndarray, snr_db: float) -> np.ndarray:
        power = np.mean(y.astype(np.float64) ** 2)
        return (y + np.sqrt(power / 10 ** (snr_db / 10)) * rng.standard_normal(len(y))).astype(np.float32)

    def lowpass(y: np.ndarray, hz: float) -> np.ndarray:
        return sosfiltfilt(butter(8, hz, fs=SR, output="sos"), y).astype(np.float32)

    def clipped(y: np.ndarray, level: float) -> np.ndarray:
        peak = np.abs(y).max()
        return np.clip(y / peak, -level, level) / level * peak

    ladders = {
        "noise": [lambda y: y] + [lambda y, s=s: noisy(y, s) for s in (30, 20, 10, 0)],
        "low-pass": [lambda y: y] + [lambda y, f=f: lowpass(y, f) for f in (8000, 4000, 2000)],
        "clipping": [lambda y: y] + [lambda y, c=c: clipped(y, c) for c in (0.3, 0.05)],
    }
    ref = _embed(ref_clips)
    for name, ladder in ladders.items():
        sets = [_embed([step(c) for c in test_clips]) for step in ladder]
        zs = _z(sets, ref)
        zref = _z([ref], ref)[0]
        kads = [kad(z, zref) for z in zs]
        fads = [fad(z, zref) for z in zs]
        assert all(a < b for a, b in zip(kads, kads[1:])), (name, kads)
        assert all(a < b for a, b in zip(fads, fads[1:])), (name, fads)


def test_hiss_below_the_noise_floor_cannot_set_music_apart(pieces: dict[str, list[np.ndarray]]) -> None:
    """Features are measured through a -80 dBFS hiss: inaudible noise added to real music leaves
    its KAD at the floor, audible hiss does not (on the study's chorales without the floor, noise
    at -90 dBFS measured 0.28, past the goal's line, and -80 dBFS 0.72, past the loop row)."""
    from cadenza.evaluation.features import NOISE_FLOOR_DBFS

    assert NOISE_FLOOR_DBFS == -80.0
    ref = _embed(_clips(pieces["reference"]))
    test_clips = _clips(pieces["held_out"] + pieces["train"][:2])
    rng = np.random.default_rng(0)

    def hiss(db: float) -> np.ndarray:
        sets = [
            c + np.float32(10 ** (db / 20)) * rng.standard_normal(len(c)).astype(np.float32)
            for c in test_clips
        ]
        return _embed(sets)

    z_clean, z_100, z_90, z_60, z_ref = _z([_embed(test_clips), hiss(-100), hiss(-90), hiss(-60), ref], ref)
    clean = kad(z_clean, z_ref)
    assert abs(kad(z_100, z_ref) - clean) < 0.01 and abs(kad(z_90, z_ref) - clean) < 0.03
    assert kad(z_60, z_ref) > clean + 0.3  # hiss 20 dB over the floor, plainly audible in the rests
    # digital silence is the floor's own level, not -100 dB
    quiet = clip_features(np.zeros(2 * SR, dtype=np.float32))
    assert np.allclose(quiet.rms_db, NOISE_FLOOR_DBFS) and quiet.logmel.min() > NOISE_FLOOR_DBFS - 40


def test_round_trip_rows_measure_what_a_representation_keeps_of_real_music(
    pieces: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    from cadenza.evaluation.clips import Item
    from cadenza.evaluation.evaluate import _ceilings, _Measured, _Space, round_trip
    from cadenza.representations import make_representation
    from cadenza.study.report import ceiling_of, nearer_floor

    y = pieces["held_out"][0][:CLIP]
    # an exact representation at the analysis rate gives the music back
    exact = round_trip(y, make_representation("waveform", sample_rate=SR))
    assert np.abs(exact - y).max() < 1e-6
    # 8 kHz keeps what lies below 4 kHz and nothing above it
    spec = lambda x: np.abs(np.fft.rfft(x))  # noqa: E731
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    low, high = spec(round_trip(y, make_representation("waveform", sample_rate=8000))), spec(y)
    band = (freqs > 200) & (freqs < 3000)
    assert np.allclose(low[band], high[band], rtol=0.05, atol=1e-3 * high[band].max())
    assert low[freqs > 4500].max() < 1e-3 * high[band].max()

    ref_clips = _clips(pieces["reference"])[:12]
    ref = _Measured([Item(name=f"r{i}", y=c, sr=SR, group=str(i)) for i, c in enumerate(ref_clips)])
    mel = make_representation("mel", sample_rate=SR)
    mfcc = make_representation("mfcc", sample_rate=SR)  # paper 003's 20 coefficients

    def fails(frames: np.ndarray) -> np.ndarray:
        raise ParameterError("cannot decode")

    broken = SimpleNamespace(name="broken", sample_rate=SR, encode=lambda y: y, decode=fails)
    rows = _ceilings(ref, _Space(ref), tmp_path, tmp_path / "clips", [broken, mel, mfcc], n_boot=20, seed=0)
    # a representation that cannot decode is left out; the others are measured
    assert [r.name for r in rows] == ["mel round trip", "mfcc round trip"]
    assert all(r.kind == "ceiling" and len(r.clips) == 6 for r in rows)
    kad_mel, kad_mfcc = (r.distances["kad"].value for r in rows)
    # 128 mel bands keep the harmonics; 20 coefficients keep the envelope alone (on the study's
    # chorales: 0.071 and 1.02 where the low-pass garbage row measures 1.12)
    assert 0 < kad_mel < 0.5 * kad_mfcc, (kad_mel, kad_mfcc)
    # the study's report: a round trip is a yardstick, not garbage
    calibration = [
        {"name": "real vs real", "kind": "calibration", "distances": {"kad": {"value": 0.0}}},
        {"name": "0.5 s loop", "kind": "calibration", "distances": {"kad": {"value": 0.6}}},
        *(
            {"name": r.name, "kind": r.kind, "distances": {"kad": {"value": v}}}
            for r, v in zip(rows, (0.1, 1.1))
        ),
    ]
    assert nearer_floor(0.2, calibration) is True  # nearer 0 than the loop, though nearest the mel row
    assert (
        ceiling_of("mfcc", calibration)["name"] == "mfcc round trip"
        and ceiling_of("fft", calibration) is None
    )


def test_loop_detector_flags_loops_and_held_tones_and_passes_music(
    pieces: dict[str, list[np.ndarray]],
) -> None:
    music = _clips(pieces["reference"] + pieces["held_out"], 10 * SR)
    scores = [det.loop_score(clip_features(c))[0] for c in music]
    assert max(scores) < det.LOOP_THRESHOLD, scores
    rng = np.random.default_rng(1)
    for clip in music[:8]:
        start = int(rng.integers(len(clip) - SR // 2))
        score, lag = det.loop_score(clip_features(np.tile(clip[start : start + SR // 2], 20)))
        assert score > det.LOOP_THRESHOLD and lag == pytest.approx(0.5, abs=0.02)
    cycle = np.sin(2 * np.pi * np.arange(128) / 128) + 0.3 * np.sin(6 * np.pi * np.arange(128) / 128)
    tone = 0.3 * np.tile(cycle, 10 * SR // 128).astype(np.float32)  # the tiny Seq2Seq's collapse
    assert det.loop_score(clip_features(tone))[0] > det.LOOP_THRESHOLD
    noise = 0.1 * rng.standard_normal(10 * SR).astype(np.float32)
    assert det.loop_score(clip_features(noise))[0] < 0.2
    assert det.loop_score(clip_features(np.zeros(10 * SR, np.float32))) == (None, None)


def test_the_loop_search_of_an_hour_long_clip_reads_its_first_minute_only() -> None:
    # The search compares every lag with every frame: on a 2-hour file in a folder given to
    # `cadenza evaluate` it had run for most of an hour (a 30-minute clip: many minutes).
    import time

    from cadenza.evaluation.features import FRAME_RATE, ClipFeatures

    rng = np.random.default_rng(0)
    n = int(30 * 60 * FRAME_RATE)
    cycle = rng.normal(-40.0, 10.0, (int(FRAME_RATE / 2), 32)).astype(np.float32)  # 0.5 s, repeated
    logmel = rng.normal(-40.0, 10.0, (n, 32)).astype(np.float32)
    first = int(60 * FRAME_RATE)
    logmel[:first] = np.tile(cycle, (first // len(cycle) + 1, 1))[:first]
    rms = np.full(n, -20.0, np.float32)
    features = ClipFeatures(np.zeros((1, 1)), logmel, np.zeros((n, 12)), np.zeros(n), rms)
    began = time.perf_counter()
    score, lag = det.loop_score(features)
    assert time.perf_counter() - began < 20.0
    assert score > det.LOOP_THRESHOLD and lag == pytest.approx(0.5, abs=0.02)


def _folder(path: Path, ys: list[np.ndarray], prefix: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, y in enumerate(ys):
        write_audio(path / f"{prefix}{i:02d}.wav", y, SR)
    return path


def test_evaluate_folders_calibration_copies_and_bad_input(
    pieces: dict[str, list[np.ndarray]], tmp_path: Path
) -> None:
    ref_dir = _folder(tmp_path / "reference", pieces["reference"], "ref")
    train_dir = _folder(tmp_path / "train", pieces["train"], "train")
    rng = np.random.default_rng(2)
    gen = tmp_path / "generated"
    gen.mkdir()
    for i, y in enumerate(pieces["train"][:4]):  # cut from the training files, at odd offsets
        start = int(rng.integers(len(y) - CLIP))
        write_audio(gen / f"copy{i}.wav", y[start : start + CLIP], SR)
    for i, y in enumerate(pieces["held_out"][:4]):  # real music the evaluation has not seen
        write_audio(gen / f"held{i}.wav", y[SR : SR + CLIP], SR)
    held = pieces["held_out"][0]
    stereo = np.stack([held[:CLIP], 0.5 * held[:CLIP]], axis=1)
    sf.write(gen / "stereo-44k.flac", np.repeat(stereo, 2, axis=0)[: 2 * CLIP], 2 * SR)  # other rate, 2 ch
    start = 3 * SR
    write_audio(gen / "loop.wav", np.tile(held[start : start + SR // 2], 10), SR)
    write_audio(gen / "noise.wav", 0.1 * rng.standard_normal(CLIP), SR)
    write_audio(gen / "short.wav", held[: SR // 4], SR)
    (gen / "broken.mp3").write_text("not audio at all")
    (gen / "empty.wav").write_bytes(b"")
    sf.write(gen / "nan.wav", np.full(CLIP, np.nan), SR, subtype="FLOAT")  # a model gone to NaN
    hot = held[2 * SR : 2 * SR + CLIP] * (6.0 / np.max(np.abs(held[2 * SR : 2 * SR + CLIP])))
    sf.write(gen / "hot.wav", hot, SR, subtype="FLOAT")  # +15.6 dBFS: read scaled down, played clipped
    silent = music21.stream.Stream([music21.note.Rest(quarterLength=8)])
    silent.write("midi", fp=str(gen / "rests.mid"))

    out = tmp_path / "results"
    ev = evaluate([gen], reference=ref_dir, out=out, n_clips=40, seconds=5.0, n_boot=100, train=train_dir)

    (cs,) = ev.sets
    assert dict(cs.skipped).keys() == {"broken.mp3", "empty.wav", "nan.wav"}
    flags = {c.name: c.flags for c in cs.clips}
    assert all("copy" in flags[f"copy{i}"] for i in range(4)), flags
    assert not any(flags[f"held{i}"] for i in range(4)), flags
    assert flags["stereo-44k"] == [] and "loop" in flags["loop"] and "noise" in flags["noise"]
    assert "short" in flags["short"] and "silent" in flags["rests"]
    assert flags["hot"] == ["clipping"], flags  # at the file's own level, as a player clips it
    hot_clip = next(c for c in cs.clips if c.name == "hot")
    assert hot_clip.measures["clipping"] == pytest.approx(
        np.mean(np.abs(hot) >= det.CLIPPING_LEVEL), abs=1e-4
    )
    ratios = {c.name: c.measures["copy_ratio"] for c in cs.clips}
    assert (
        max(ratios[f"copy{i}"] for i in range(4)) < det.COPY_RATIO < min(ratios[f"held{i}"] for i in range(4))
    )

    rows = {r.name: r for r in ev.calibration}
    floor = rows.pop("real vs real")
    assert set(rows) == {"white noise", "digital silence", "low-pass 3.5 kHz", "0.5 s loop"}
    for key in ("kad", "fad"):
        assert all(floor.distances[key].value < r.distances[key].value for r in rows.values()), key
    assert {"precision", "recall", "density", "coverage"} <= set(cs.distances)
    assert rows["white noise"].flag_counts()["noise"] == len(rows["white noise"].clips)
    assert rows["0.5 s loop"].flag_counts()["loop"] == len(rows["0.5 s loop"].clips)
    # where each garbage row stands apart: a loop does not change across the clip, a low-pass is
    # darker, noise is flatter; the floor stands apart in nothing much
    groups = {name: dict(r.gaps["groups"]) for name, r in [*rows.items(), ("floor", floor)]}
    assert groups["0.5 s loop"]["change across the clip (MFCC, chroma spread)"] > 2
    assert groups["low-pass 3.5 kHz"]["brightness (centroid)"] > 2
    assert groups["white noise"]["noisiness (flatness)"] > 5
    assert (
        max(groups["floor"].values()) < 1.5 < min(max(g.values()) for n, g in groups.items() if n != "floor")
    )

    payload = strict_json(out / "metrics.json")
    for row, saved in zip(ev.calibration, payload["calibration"]):
        assert saved["gaps"]["groups"] == [[g, pytest.approx(v)] for g, v in row.gaps["groups"]]
    assert "Farthest from the reference" in (out / "report.md").read_text()
    assert payload["feature_version"] == ev.feature_version
    assert dict(cs.skipped)["nan.wav"].startswith("non-finite samples")
    assert (out / "report.html").is_file() and (out / "distances.png").is_file()
    for clip in cs.clips:
        assert clip.audio and (out / clip.audio).is_file() and (out / clip.image).is_file()
        assert all(v is None or math.isfinite(v) for v in clip.measures.values())
    players, images, problems = open_in_chromium(out / "report.html")
    assert problems == [] and len(players) >= len(cs.clips) + len(ev.reference.clips)
    assert all(p["error"] is None and p["readyState"] >= 2 and p["duration"] > 0.2 for p in players), players
    assert images and all(i["width"] > 0 for i in images)


def test_a_small_reference_gives_per_clip_measures_and_a_note(
    pieces: dict[str, list[np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref_dir = _folder(tmp_path / "ref", [pieces["reference"][0][:CLIP]], "only")
    gen = _folder(tmp_path / "gen", [pieces["held_out"][0][:CLIP]], "g")
    out = tmp_path / "out"
    assert main(["evaluate", str(gen), "--reference", str(ref_dir), "--out", str(out), "--n-boot", "10"]) == 0
    printed = capsys.readouterr().out
    assert "too few" in printed and "report:" in printed
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["calibration"] == [] and payload["sets"][0]["distances"] == {}
    assert payload["sets"][0]["clips"][0]["measures"]["lufs"] < -10

    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    assert main(["evaluate", str(gen), "--reference", str(empty), "--out", str(out)]) == 1
    assert "no usable clip" in capsys.readouterr().err
    assert main(["evaluate", str(empty), "--reference", str(ref_dir), "--out", str(out)]) == 0
    assert "no usable clip" in json.loads((out / "metrics.json").read_text())["sets"][0]["note"]


def test_mistakes_in_the_command_are_one_error_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = np.arange(22050 * 2) / 22050
    ref_dir = _folder(tmp_path / "ref", [0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32)], "tone")
    (tmp_path / "file").write_text("x")
    cases = [
        # a mistyped source: was a whole evaluation, exit 0, and a note in the report
        (["evaluate", str(tmp_path / "typo"), str(ref_dir)], "no such run, bundle, folder or file: "),
        (
            ["evaluate", str(ref_dir), "--out", str(tmp_path / "file")],
            "is a file, not a folder",
        ),  # a traceback
        (["evaluate", str(ref_dir), "--n-boot", "-1"], "n_boot must be 0 (no intervals) or more, got -1"),
    ]
    for args, expected in cases:
        out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
        assert main([*args, "--reference", str(ref_dir), *out]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_scores_against_a_folder_of_scores(tmp_path: Path) -> None:
    """MIDI against MIDI: EB, UPC and QN per set and set distances over per-bar features."""
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    ref.mkdir()
    gen.mkdir()
    chorales = sorted(
        str(p) for p in music21.corpus.getComposer("bach") if "bwv" in str(p) and str(p).endswith(".mxl")
    )
    for i, path in enumerate(chorales[20:28]):
        read_score(path).write(str(ref / f"c{i}.mid"))
    for i, path in enumerate(chorales[28:32]):
        read_score(path).write(str(gen / f"g{i}.mid"))
    drone = music21.stream.Stream([music21.chord.Chord([48 + k for k in range(0, 24, 2)], quarterLength=32)])
    drone.write("midi", fp=str(gen / "drone.mid"))
    ev = evaluate([gen], reference=ref, out=tmp_path / "out", n_clips=30, seconds=10.0, n_boot=50)
    (cs,) = ev.sets
    assert ev.reference.symbolic["used_pitch_classes"] > 2
    assert 0 <= cs.symbolic["empty_bar_rate"] <= 100 and cs.symbolic["qualified_note_rate"] > 50
    assert {"kad", "fad"} <= set(cs.symbolic_distances)
    drone_only = evaluate(
        [gen / "drone.mid"], reference=ref, out=tmp_path / "out2", n_clips=30, seconds=10.0, n_boot=0
    )
    assert drone_only.sets[0].symbolic_distances["kad"].value > cs.symbolic_distances["kad"].value


def test_reference_clips_with_no_sample_at_the_analysis_rate_or_shorter_than_a_frame(tmp_path: Path) -> None:
    # One sample at 96 kHz is none at 22.05 kHz: the calibration rows made from it had no WAV to
    # write, and a mel round trip of a clip shorter than a frame came back empty; either stopped
    # the whole evaluation ("y must be a non-empty array") after all its work.
    from cadenza.evaluation.evaluate import round_trip
    from cadenza.representations import make_representation

    rng = np.random.default_rng(5)
    t = np.arange(SR) / SR
    tones = [
        0.3 * np.sin(2 * np.pi * f * t) * (1 + 0.1 * rng.standard_normal(SR)) for f in (220, 330, 440, 550)
    ]
    ref_dir = _folder(tmp_path / "reference", tones, "tone")
    for i in range(4):
        sf.write(ref_dir / f"blip{i}.wav", np.array([0.5 - 0.1 * i]), 96000)  # not copies of each other
    gen_dir = _folder(tmp_path / "generated", [tones[1][::-1], tones[2][::-1]], "gen")
    ev = evaluate([gen_dir], reference=ref_dir, out=tmp_path / "out", n_clips=10, seconds=1.0, n_boot=20)
    silence = next(row for row in ev.calibration if row.name == "digital silence")
    assert len(silence.clips) == 4 and all(
        c.audio is None or (tmp_path / "out" / c.audio).is_file() for c in silence.clips
    )
    mel = make_representation("mel")
    for n in (1, 20, 100):
        assert len(round_trip(np.full(n, 0.5, np.float32), mel)) == n
    # a clip of a hop or more comes back as decoded, not padded (the studies' round-trip rows)
    assert len(round_trip(np.full(220500, 0.5, np.float32), mel)) == 220160


def test_a_reference_or_training_folder_is_read_only_as_far_as_its_clips_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A whole collection given as --reference or --train was decoded at once, every file whole
    # (six 20-minute files: 1.9 GB to measure six 2-second clips).
    import cadenza.audio
    from cadenza.evaluation import clips

    sr = 8000
    t = np.arange(20 * sr) / sr
    ref_dir = _folder(tmp_path / "ref", [], "x")
    train_dir = _folder(tmp_path / "train", [], "x")
    for i in range(10):
        tone = (0.3 * np.sin(2 * np.pi * (200 + 30 * i) * t)).astype(np.float32)
        sf.write(ref_dir / f"ref{i}.wav", tone, sr)
        sf.write(train_dir / f"train{i}.wav", tone[::-1], sr)
    gen_dir = _folder(tmp_path / "gen", [0.3 * np.sin(2 * np.pi * 300 * np.arange(SR) / SR)], "g")
    decoded: dict[str, float] = {}
    read_audio = cadenza.audio.read_audio

    def counting(path, **kwargs):
        y, got_sr = read_audio(path, **kwargs)
        decoded[Path(path).parent.name] = decoded.get(Path(path).parent.name, 0.0) + len(y) / got_sr
        return y, got_sr

    monkeypatch.setattr(cadenza.audio, "read_audio", counting)
    monkeypatch.setattr(clips, "MAX_TRAIN_SECONDS", 5.0)
    ev = evaluate(
        [gen_dir], reference=ref_dir, train=train_dir, out=tmp_path / "out", n_clips=3, seconds=1.0, n_boot=0
    )
    assert len(ev.reference.clips) == 3 and len({c.name.rsplit("-", 1)[0] for c in ev.reference.clips}) == 3
    assert decoded["ref"] <= 3 * 3 * 1.0 and decoded["train"] <= 5.0 + 1.0, decoded


def test_a_reference_folder_of_long_scores_is_rendered_only_as_far_as_its_clips_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scores were rendered whole: a folder of two-hour MIDI files took an hour for a few clips.
    import pretty_midi

    import cadenza.audio

    ref_dir = _folder(tmp_path / "ref", [], "x")
    for i in range(3):
        pm = pretty_midi.PrettyMIDI()
        piano = pretty_midi.Instrument(0)
        piano.notes += [pretty_midi.Note(90, 60 + (k + i) % 12, 0.5 * k, 0.5 * k + 0.45) for k in range(240)]
        pm.instruments.append(piano)
        pm.write(str(ref_dir / f"long{i}.mid"))  # two minutes each
    gen_dir = _folder(tmp_path / "gen", [0.3 * np.sin(2 * np.pi * 300 * np.arange(SR) / SR)], "g")
    rendered: list[float] = []
    render_midi = cadenza.audio.render_midi

    def counting(midi, **kwargs):
        y = render_midi(midi, **kwargs)
        rendered.append(len(y) / kwargs["sr"])
        return y

    monkeypatch.setattr(cadenza.audio, "render_midi", counting)
    ev = evaluate([gen_dir], reference=ref_dir, out=tmp_path / "out", n_clips=2, seconds=1.0, n_boot=0)
    assert len(ev.reference.clips) == 2 and rendered and len(rendered) <= 2
    assert max(rendered) <= 2 * 1.0 + 1.5, rendered  # the head a file's clips can reach, and its release
    from cadenza.evaluation.clips import folder_clips

    _, scores, _ = folder_clips(ref_dir, n_clips=2, seconds=1.0)
    assert scores and all(s.get_end_time() == pytest.approx(119.95) for s in scores)  # read whole


def test_a_reference_clip_a_few_samples_long_is_measured_and_flagged_short(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    t = np.arange(SR) / SR
    tones = [
        0.3 * np.sin(2 * np.pi * f * t) * (1 + 0.1 * rng.standard_normal(SR)) for f in (220, 330, 440, 550)
    ]
    ref_dir = _folder(tmp_path / "reference", tones, "tone")
    for i in range(4):  # 20 samples: shorter than the low-pass filter's padding (in both halves)
        write_audio(ref_dir / f"blip{i}.wav", tones[i][:20], SR)
    gen_dir = _folder(tmp_path / "generated", [tones[1][::-1], tones[2][::-1]], "gen")
    ev = evaluate([gen_dir], reference=ref_dir, out=tmp_path / "out", n_clips=10, seconds=1.0, n_boot=20)
    flags = {c.name: c.flags for c in ev.reference.clips}  # reference clips are named file-part
    assert all("short" in flags[f"blip{i}-0"] and "short" not in flags[f"tone{i:02d}-0"] for i in range(4))
    lowpass = next(row for row in ev.calibration if row.name.startswith("low-pass"))
    assert len(lowpass.clips) == 4 and lowpass.distances["kad"].value is not None


def _ten_tones_store(tmp_path: Path, seconds: int) -> None:
    """``tmp_path/store``: a waveform store of ten tones of ``seconds`` at 8 kHz (one test file)."""
    from cadenza.data import prepare_corpus

    root = tmp_path / "music"
    root.mkdir()
    t = np.arange(seconds * 8000) / 8000
    for i in range(10):
        sf.write(root / f"piece{i}.wav", 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t), 8000)
    prepare_corpus(str(root), tmp_path / "store", representation="waveform", sample_rate=8000, progress=False)


def test_a_small_test_split_is_followed_by_the_valid_splits_files(tmp_path: Path) -> None:
    # A folder of ten files holds one test file: its few clips were the whole reference, too few
    # for any set distance, while the valid split's held-out files sat unused.
    from cadenza.data import FeatureStore
    from cadenza.evaluation.clips import store_clips

    _ten_tones_store(tmp_path, seconds=2)
    store = FeatureStore(tmp_path / "store")
    test, valid = set(store.ids("test")), set(store.ids("valid"))
    assert len(test) == 1 and len(valid) == 1
    items, info = store_clips(tmp_path / "store", n_clips=2, seconds=1.0)
    assert info["split"] == "test" and info["note"] is None and {i.group for i in items} == test
    items, info = store_clips(tmp_path / "store", n_clips=6, seconds=1.0)
    assert info["split"] == "test+valid" and "test split gives 2 clips of 1 s, fewer than 6" in info["note"]
    assert {i.group for i in items} == test | valid and len(items) == 4


def test_a_damaged_clip_of_a_reference_store_is_skipped_and_named(tmp_path: Path, caplog) -> None:
    """A held-out shard damaged on disk (NaN in its frames) crashed cadenza evaluate in librosa
    ("Input must be finite"); its clip is skipped with the shard named, the others measured."""
    from cadenza.data import FeatureStore
    from cadenza.evaluation.clips import store_clips

    _ten_tones_store(tmp_path, seconds=3)
    (test,) = FeatureStore(tmp_path / "store").ids("test")
    frames = np.load(tmp_path / "store" / "shards" / f"{test}.npy", mmap_mode="r+")
    frames[2] = np.nan  # in the first second: the first clip
    frames.flush()
    del frames
    with caplog.at_level("WARNING", logger="cadenza.evaluation.clips"):
        items, _ = store_clips(tmp_path / "store", n_clips=2, seconds=1.0)
    assert len(items) == 2 and all(np.isfinite(i.y).all() for i in items)
    assert f"{test}-0" not in {i.name for i in items}
    assert any(f"shards/{test}.npy" in r.getMessage() and "NaN" in r.getMessage() for r in caplog.records)


def test_a_long_file_of_an_evaluated_folder_is_heard_over_its_first_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An hour-long recording in an evaluated folder was read and measured whole: 5.2 GB of memory.
    from cadenza.evaluation import evaluate as ev_module

    monkeypatch.setattr(ev_module, "MAX_MEASURED_SECONDS", 2.0)
    t = np.arange(5 * SR) / SR
    ref_dir = _folder(
        tmp_path / "ref", [0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t[:SR]) for i in range(4)], "r"
    )
    gen_dir = _folder(
        tmp_path / "gen", [0.3 * np.sin(2 * np.pi * 300 * t), 0.3 * np.sin(2 * np.pi * 350 * t[:SR])], "g"
    )
    ev = evaluate([gen_dir], reference=ref_dir, out=tmp_path / "out", n_clips=4, seconds=1.0, n_boot=0)
    (cs,) = ev.sets
    assert "1 file measured over its first 2 s (g00)" in cs.note, cs.note
    assert sorted(c.seconds for c in cs.clips) == pytest.approx([1.0, 2.0], abs=0.01)


def test_files_named_in_latin_1_are_measured_and_shown_as_meant(tmp_path: Path) -> None:
    # A folder from an old archive: names whose bytes are not UTF-8 stopped the report's plots.
    import os

    t = np.arange(SR) / SR
    ref_dir = _folder(tmp_path / "ref", [0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) for i in range(4)], "r")
    gen_dir = _folder(tmp_path / "gen", [0.3 * np.sin(2 * np.pi * (250 + 40 * i) * t) for i in range(3)], "g")
    try:
        os.rename(gen_dir / "g00.wav", os.fsencode(gen_dir) + b"/caf\xe9.wav")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    ev = evaluate([gen_dir], reference=ref_dir, out=tmp_path / "out", n_clips=4, seconds=1.0, n_boot=0)
    (cs,) = ev.sets
    assert "café" in {c.name for c in cs.clips}
    assert "café" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_a_copy_in_a_reference_folder_is_left_out_with_its_reason(tmp_path: Path) -> None:
    # The same recording twice would sit on both sides of the real-vs-real floor.
    import shutil

    from cadenza.evaluation.clips import folder_clips

    t = np.arange(2 * SR) / SR
    ref_dir = _folder(tmp_path / "ref", [0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) for i in range(4)], "r")
    shutil.copy(ref_dir / "r01.wav", ref_dir / "r01 (1).wav")
    clips, _, skipped = folder_clips(ref_dir, n_clips=20, seconds=1.0)
    assert ("r01 (1).wav", "the same bytes as r01.wav") in skipped
    assert len(clips) == 8 and not any(c.name.startswith("r01 (1)") for c in clips)


def test_a_calibration_that_cannot_tell_real_music_from_garbage_judges_no_model() -> None:
    """Two held-out files of a small folder: the 0.5 s loop measured 0.553 against a floor of
    0.69, and a model trained 60 steps (0.901) came out "nearer the floor". Where a garbage row
    is no farther from the held-out music than real music is, no verdict is given, and why."""
    from cadenza.evaluation.evaluate import _not_apart
    from cadenza.evaluation.results import Clip, ClipSet, Estimate
    from cadenza.study.report import nearer_floor, not_apart

    def row(name: str, kad: float, kind: str = "calibration") -> ClipSet:
        clips = [Clip(name=f"{name} {k}", audio=None) for k in range(2)]
        return ClipSet(name=name, kind=kind, source="", clips=clips, distances={"kad": Estimate(kad)})

    apart = [row("real vs real", 0.0032), row("white noise", 1.55), row("0.5 s loop", 0.523)]
    assert _not_apart(apart) is None and apart[0].note is None
    assert nearer_floor(0.2, [r.to_dict() for r in apart]) is True  # the chorales' study: judged
    close = [row("real vs real", 0.69), row("white noise", 1.6), row("0.5 s loop", 0.553)]
    why = _not_apart(close)
    assert why is not None and close[0].note == why
    assert "the 0.5 s loop measures 0.553" in why and "(0.69, 2 clips a side)" in why and "noise" not in why
    as_json = [r.to_dict() for r in close]
    assert not_apart(as_json) == why
    assert nearer_floor(0.901, as_json) is None and nearer_floor(0.69, as_json) is None
    # a round trip below the floor is a yardstick, not garbage: the verdict stands
    ceiling = [*(r.to_dict() for r in apart), row("mel round trip", 0.001, "ceiling").to_dict()]
    assert not_apart(ceiling) is None and nearer_floor(0.2, ceiling) is True


def test_a_set_beyond_the_kernels_reach_is_noted_as_saturated_not_ranked_by_kad() -> None:
    """Two sets of steady tones measured KAD 0.6072 and 0.6070 against quartets: beyond the
    Gaussian kernel's reach of the held-out music its cross term is gone and KAD says only how
    alike a set's clips are. Such a set gets a note (FAD still measures it); a set within reach
    does not. On the chorales the 3.5 kHz low-pass row keeps 3e-8 of the held-out music's own
    similarity (saturated), the 0.5 s loop 0.08, a tiny fft_base after 400 steps 0.14."""
    from cadenza.evaluation.distances import kad, kad_reach
    from cadenza.evaluation.evaluate import KAD_REACH_MIN, _distances

    rng = np.random.default_rng(0)
    y = rng.standard_normal((40, 8))
    near, far_alike, far_apart = (
        rng.standard_normal((30, 8)) + 0.3,
        np.full((30, 8), 25.0),
        25.0 + 9.0 * rng.standard_normal((30, 8)),
    )
    assert (
        kad_reach(near, y) > 0.5
        and kad_reach(far_alike, y) < KAD_REACH_MIN
        and kad_reach(far_apart, y) < KAD_REACH_MIN
    )
    # saturated: the two far sets' KAD differ by how alike their clips are, not by where they are
    apart = kad(far_apart, y)
    assert kad(far_alike, y) == pytest.approx(apart + 1.0, abs=1e-3)
    _, note = _distances(near, y, n_boot=0, seed=0)
    assert note is None or "saturated" not in note
    for x in (far_alike, far_apart):
        _, note = _distances(x, y, n_boot=0, seed=0)
        assert note is not None and "KAD saturated" in note and "FAD still measures" in note
