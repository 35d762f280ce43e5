"""`prepare`: real files and real malformed files into a feature store, resumably."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time

import numpy as np
import pytest
import soundfile as sf
import yaml

from cadenza.cli import main as cli
from cadenza.data import FeatureStore, prepare_corpus
from cadenza.data.items import SourceItem
from cadenza.data.prepare import assign_splits, pick_files, read_frames
from cadenza.errors import DecodeError, ParameterError, SourceError, StoreError
from cadenza.representations import make_representation

SMALL_FFT = {"block_size": 400}


def _tone(seconds, sr, freq=440.0, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.2 * np.sin(2 * np.pi * 3 * t))
    return np.stack([y] * channels, axis=1) if channels > 1 else y


@pytest.fixture
def music_folder(tmp_path):
    """Good recordings of several rates and channel counts, and the malformed files of the issue."""
    root = tmp_path / "music"
    (root / "jazz").mkdir(parents=True)
    (root / "rock").mkdir()
    sf.write(root / "jazz" / "a.wav", _tone(2.0, 44100, 440, channels=2), 44100, subtype="PCM_16")
    sf.write(root / "jazz" / "b.flac", _tone(1.5, 22050, 330), 22050, subtype="PCM_24")
    sf.write(
        root / "rock" / "c.ogg", _tone(1.0, 48000, 550, channels=2), 48000, format="OGG", subtype="VORBIS"
    )
    sf.write(root / "rock" / "d.wav", _tone(1.2, 8000, 220, channels=3), 8000)
    # Malformed: empty, text named .mp3, truncated, silent, header only.
    (root / "rock" / "empty.wav").write_bytes(b"")
    (root / "rock" / "notes.mp3").write_text("these are my notes, not an mp3\n" * 20)
    good = (root / "jazz" / "a.wav").read_bytes()
    (root / "jazz" / "truncated.wav").write_bytes(good[:30])
    sf.write(root / "jazz" / "silent.wav", np.zeros(16000), 16000)
    sf.write(root / "jazz" / "header_only.wav", np.zeros((0,)), 16000)
    return root


def _manifest(out):
    return {r["id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


def test_prepare_folder_records_every_file_and_skips_bad_ones(music_folder, tmp_path):
    out = tmp_path / "store"
    summary = prepare_corpus(
        str(music_folder), out, representation="fft", rep_params=SMALL_FFT, progress=False
    )
    manifest = _manifest(out)
    assert len(manifest) == 9
    ok = {k for k, r in manifest.items() if r["status"] == "ok"}
    assert ok == {"jazz__a.wav", "jazz__b.flac", "rock__c.ogg", "rock__d.wav"}
    reasons = {k: r["reason"] for k, r in manifest.items() if r["status"] == "skipped"}
    assert reasons["rock__empty.wav"] == "empty file"
    assert reasons["rock__notes.mp3"] == "not an audio file"
    assert reasons["jazz__silent.wav"] == "silent"
    assert reasons["jazz__header_only.wav"] == "no audio samples"
    assert reasons["jazz__truncated.wav"] in ("corrupt or truncated audio", "no audio samples")
    assert summary.n_ok == 4 and summary.n_skipped == 5
    assert str(summary).startswith("4 of 9 files prepared, 5 skipped (")
    assert "1 empty file" in str(summary)

    store = FeatureStore(out)
    assert store.representation.to_dict() == make_representation("fft", **SMALL_FFT).to_dict()
    # Labels from the first-level folders; durations of the decoded audio.
    assert manifest["jazz__a.wav"]["labels"] == {"folder": "jazz"}
    assert manifest["jazz__a.wav"]["duration"] == pytest.approx(2.0, abs=1e-3)
    # The shard is the encoding of the file resampled to 16 kHz and mixed to mono.
    frames = store.load("jazz__a.wav")
    assert frames.shape == (80, 800)  # 2 s at 16 kHz in blocks of 400, 2N features
    y = store.representation.decode(np.asarray(frames))
    assert np.abs(y).max() == pytest.approx(0.36, abs=0.02)
    spectrum = np.abs(np.fft.rfft(y[:16000]))
    assert np.argmax(spectrum) == pytest.approx(440, abs=2)
    # Statistics over the training split only, per feature.
    stats = store.stats
    train = np.concatenate([np.asarray(store.load(i), np.float64) for i in store.ids("train")])
    np.testing.assert_allclose(stats["mean"], train.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["max"], train.max(axis=0))
    meta = yaml.safe_load((out / "meta.yaml").read_text())
    assert meta["complete"] and meta["seed"] == 0 and meta["counts"]["ok"] == 4


def test_split_is_by_file_seeded_and_stratified():
    items = [
        SourceItem(f"{c}{i:02d}", "audio", f"/x/{c}{i}", {"composer": c}) for c in "ab" for i in range(20)
    ]
    s1 = assign_splits(items, seed=3)
    assert s1 == assign_splits(list(reversed(items)), seed=3)
    assert s1 != assign_splits(items, seed=4)
    for c in "ab":
        counts = {
            s: sum(1 for k, v in s1.items() if k.startswith(c) and v == s) for s in ("train", "valid", "test")
        }
        assert counts == {"train": 16, "valid": 2, "test": 2}
    few = assign_splits(items[:3], seed=0)
    assert sorted(few.values()) == ["test", "train", "valid"]
    picked = pick_files(items, 6, seed=0)
    assert sorted({it.labels["composer"] for it in picked}) == ["a", "b"] and len(picked) == 6


def test_killed_prepare_resumes_without_redoing_files(music_folder, tmp_path, monkeypatch):
    import cadenza.data.prepare as prep

    out = tmp_path / "store"
    real = prep.prepare_one
    calls = []

    def dies_after_three(item, *args):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed ^C, or the machine went down
        calls.append(item.id)
        return real(item, *args)

    monkeypatch.setattr(prep, "prepare_one", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(str(music_folder), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    assert len(_manifest(out)) == 3
    with pytest.raises(StoreError, match="not prepared to the end"):
        FeatureStore(out)

    calls.clear()
    monkeypatch.setattr(prep, "prepare_one", lambda item, *a: (calls.append(item.id), real(item, *a))[1])
    summary = prepare_corpus(
        str(music_folder), out, representation="fft", rep_params=SMALL_FFT, progress=False
    )
    assert len(calls) == 6 and summary.n_done_before == 3
    assert summary.n_ok == 4 and len(_manifest(out)) == 9
    # A third run has nothing left to do.
    calls.clear()
    prepare_corpus(str(music_folder), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    assert calls == []


def test_other_parameters_on_an_existing_store_are_refused(music_folder, tmp_path):
    out = tmp_path / "store"
    prepare_corpus(str(music_folder), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    with pytest.raises(StoreError, match="other parameters"):
        prepare_corpus(
            str(music_folder), out, representation="fft", rep_params={"block_size": 200}, progress=False
        )
    summary = prepare_corpus(
        str(music_folder),
        out,
        representation="fft",
        rep_params={"block_size": 200},
        progress=False,
        overwrite=True,
    )
    assert summary.n_ok == 4 and FeatureStore(out).n_features == 400


def test_an_untrimmed_audio_store_is_not_resumed_with_trimmed_files(music_folder, tmp_path):
    """A store from before trimming (its meta.yaml has no audio_prep) is refused, not mixed."""
    import yaml

    out = tmp_path / "store"
    prepare_corpus(str(music_folder), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    meta = yaml.safe_load((out / "meta.yaml").read_text())
    assert meta["audio_prep"] == 2
    del meta["audio_prep"]  # as an earlier cadenza wrote it
    (out / "meta.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(StoreError, match="silent lead-in and ending.*--overwrite"):
        prepare_corpus(str(music_folder), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    summary = prepare_corpus(
        str(music_folder), out, representation="fft", rep_params=SMALL_FFT, progress=False, overwrite=True
    )
    assert summary.n_done_before == 0 and summary.n_ok == 4


#: Forked workers where this platform can fork (not Windows).
needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="this platform cannot fork"
)


@pytest.mark.parametrize(
    ("representation", "start_method"),
    [
        pytest.param("mel", None, id="mel-auto"),
        pytest.param("fft", "fork", id="fft-fork", marks=needs_fork),
        pytest.param("fft", "spawn", id="fft-spawn"),
    ],
)
def test_parallel_workers_give_the_same_store(
    music_folder, tmp_path, monkeypatch, representation, start_method
):
    import cadenza.data.prepare as prep

    monkeypatch.setattr(prep, "_START_METHOD", start_method)
    a, b = tmp_path / "one", tmp_path / "two"
    prepare_corpus(str(music_folder), a, representation=representation, progress=False)
    prepare_corpus(str(music_folder), b, representation=representation, workers=2, progress=False)
    ma, mb = _manifest(a), _manifest(b)
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in ma.values()] == [
        {k: v for k, v in r.items() if k not in strip} for r in mb.values()
    ]
    for item_id in FeatureStore(a).ids():
        np.testing.assert_array_equal(
            np.load(a / "shards" / f"{item_id}.npy"), np.load(b / "shards" / f"{item_id}.npy")
        )


def crash_on_c(item, *args):
    """Stands in for a decoder that takes its process down on one file."""
    from cadenza.data.prepare import prepare_one

    if item.id == "rock__c.ogg":
        os._exit(3)
    return prepare_one(item, *args)


@pytest.mark.parametrize("start_method", [pytest.param("fork", marks=needs_fork), "spawn"])
def test_a_worker_crash_costs_only_its_file(music_folder, tmp_path, monkeypatch, start_method):
    import cadenza.data.prepare as prep

    monkeypatch.setattr(prep, "_START_METHOD", start_method)
    out = tmp_path / "store"
    monkeypatch.setattr(prep, "_WORKER_FN", crash_on_c)
    summary = prepare_corpus(
        str(music_folder), out, representation="fft", rep_params=SMALL_FFT, workers=2, progress=False
    )
    manifest = _manifest(out)
    assert manifest["rock__c.ogg"]["reason"] == "crashed the decoder"
    assert summary.n_ok == 3 and len(manifest) == 9


def test_workers_fork_only_from_a_single_threaded_process_without_torch(monkeypatch):
    import sys

    import cadenza.data.prepare as prep

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(prep.threading, "active_count", lambda: 1)
    assert prep._start_method() == "fork"
    monkeypatch.setattr(prep, "_START_METHOD", "spawn")
    assert prep._start_method() == "spawn"  # a test or a user can choose
    monkeypatch.setattr(prep, "_START_METHOD", None)
    monkeypatch.setitem(sys.modules, "torch", object())
    assert prep._start_method() == "spawn"  # torch's OpenMP pool does not survive a fork
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(prep.threading, "active_count", lambda: 2)
    assert prep._start_method() == "spawn"  # another thread may hold a lock the child would copy
    monkeypatch.setattr(prep.threading, "active_count", lambda: 1)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert prep._start_method() == "spawn"


def test_only_the_fork_warning_of_python_3_12_is_silenced():
    import warnings

    from cadenza.data.prepare import _quiet_fork_warning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _quiet_fork_warning():
            warnings.warn(
                "This process (pid=123) is multi-threaded, use of fork() may lead to deadlocks in the child.",
                DeprecationWarning,
                stacklevel=1,
            )
            warnings.warn("something else", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]


def test_cli_errors_are_one_clear_line(music_folder, tmp_path, capsys):
    assert cli(["prepare", str(music_folder), str(tmp_path / "o"), "--representation", "wavelet"]) == 1
    err = capsys.readouterr().err
    assert "wavelet" in err and "fft" in err and err.count("\n") == 1
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "readme.txt").write_text("no music here")
    assert cli(["prepare", str(empty), str(tmp_path / "o2")]) == 1
    assert "nothing" in capsys.readouterr().err
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert cli(["prepare", str(music_folder), str(blocker / "sub"), "--param", "block_size=400"]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SourceError):
        prepare_corpus(str(tmp_path / "missing"), tmp_path / "o3", progress=False)
    with pytest.raises(ParameterError):
        prepare_corpus(str(music_folder), tmp_path / "o4", workers=0, progress=False)


@pytest.mark.parametrize("representation", ["waveform", "fft", "mel", "mfcc", "pianoroll"])
def test_cli_prepares_bach_chorales_into_every_representation(representation, tmp_path, capsys):
    out = tmp_path / representation
    argv = ["prepare", "music21:bach", str(out), "-r", representation, "--max-files", "3", "--no-progress"]
    if representation == "fft":
        argv += ["--plot"]
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "3 of 3 files prepared, 0 skipped" in printed
    store = FeatureStore(out)
    assert len(store.ids()) == 3 and store.n_features == store.representation.n_features
    assert {store.record(i)["labels"]["composer"] for i in store.ids()} == {"bach"}
    frames = np.asarray(store.load(store.ids()[0]))
    assert np.isfinite(frames.astype(np.float64)).all() and frames.any()
    if representation == "pianoroll":
        assert frames.shape[0] % store.representation.steps_per_bar == 0
    if representation == "fft":
        assert (out / "plots").glob("*.png")
        assert "plot:" in printed


def test_cli_prepares_with_one_worker_per_core_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from cadenza.commands import prepare as command

    assert command.default_workers() == max(1, min(8, len(os.sched_getaffinity(0))))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)), raising=False)
    assert command.default_workers() == 8
    seen: dict[str, int] = {}

    def fake_prepare(*args: object, **kwargs: object) -> str:
        seen["workers"] = int(kwargs["workers"])  # type: ignore[arg-type]
        return "prepared"

    monkeypatch.setattr("cadenza.data.prepare.prepare_corpus", fake_prepare)
    assert cli(["prepare", "some/folder", "out", "--no-progress"]) == 0
    assert seen["workers"] == 8
    assert cli(["prepare", "some/folder", "out", "--no-progress", "--workers", "3"]) == 0
    assert seen["workers"] == 3


# ------------------------------------------------------------------ a file cut short
def test_truncated_ogg_is_kept_in_part_with_a_warning(tmp_path, capsys):
    from cadenza.audio import PartialAudioWarning, read_audio

    root = tmp_path / "music"
    root.mkdir()
    sf.write(root / "whole.wav", _tone(1.0, 16000), 16000)
    noise = 0.3 * np.random.default_rng(0).standard_normal(3 * 22050)
    sf.write(tmp_path / "full.ogg", noise, 22050, format="OGG", subtype="VORBIS")
    data = (tmp_path / "full.ogg").read_bytes()
    (root / "cut.ogg").write_bytes(data[: int(0.45 * len(data))])  # a download that broke off
    with pytest.warns(PartialAudioWarning):
        decoded = len(read_audio(root / "cut.ogg")[0]) / 22050
    assert 0.5 < decoded < 2.5
    note = f"kept in part: decoded {decoded:.1f} s"

    out = tmp_path / "store"
    assert cli(["prepare", str(root), str(out), "--param", "block_size=400", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    manifest = _manifest(out)
    assert manifest["cut.ogg"]["status"] == "ok" and manifest["cut.ogg"]["warning"] == note
    assert manifest["cut.ogg"]["duration"] == pytest.approx(decoded, abs=1e-3)
    assert "warning" not in manifest["whole.wav"]
    assert f"2 of 2 files prepared, 0 skipped; 1 file {note} (cut.ogg); " in captured.out
    # Not a terminal: the progress is a plain line, not a redrawn bar.
    assert "prepare: 2/2 files (100%)" in captured.err and "\r" not in captured.err
    # The summary of a resumed run still names it.
    summary = prepare_corpus(str(root), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    assert summary.n_done_before == 2 and summary.warnings == {"cut.ogg": note}


def test_a_float_file_beyond_full_scale_is_scaled_down_not_clipped_and_noted(tmp_path, capsys):
    """A float export at another scale (+9.5 dBFS here) clipped would be a square wave; a small
    over (a lossy decoder's overshoot) is clipped at the file's level, as players do."""
    root = tmp_path / "music"
    root.mkdir()
    tone = _tone(1.0, 16000)
    sf.write(root / "hot.wav", 3.0 * tone / np.abs(tone).max(), 16000, subtype="FLOAT")
    sf.write(root / "over.wav", 1.5 * tone / np.abs(tone).max(), 16000, subtype="FLOAT")
    out = tmp_path / "store"
    args = ["prepare", str(root), str(out), "-r", "waveform", "--sample-rate", "16000", "--no-progress"]
    assert cli([*args, "--workers", "1"]) == 0
    manifest = _manifest(out)
    assert manifest["hot.wav"]["status"] == "ok"
    assert manifest["hot.wav"]["warning"] == "scaled down: peaked at +9.5 dBFS"
    assert manifest["over.wav"]["status"] == "ok" and "warning" not in manifest["over.wav"]
    assert "1 file scaled down: peaked at +9.5 dBFS (hot.wav)" in capsys.readouterr().out
    y = np.asarray(FeatureStore(out).load("hot.wav"))[:, 0]
    assert np.abs(y).max() == pytest.approx(1.0, abs=1e-6)
    assert np.mean(np.abs(y) > 0.999) < 0.01  # the shape kept, not flattened at the rails
    assert np.corrcoef(y, tone[: len(y)])[0, 1] > 0.999


def test_summary_names_a_few_files_kept_in_part_and_counts_the_rest(tmp_path):
    from cadenza.data.prepare import PrepareSummary

    summary = PrepareSummary(
        out=tmp_path,
        n_files=6,
        n_ok=6,
        n_skipped=0,
        reasons={},
        hours=0.5,
        seconds=1.0,
        warnings={f"f{i}.ogg": f"kept in part: decoded {i}.0 s" for i in range(5)},
    )
    assert str(summary) == (
        "6 of 6 files prepared, 0 skipped; 5 files kept in part: decoded 0.0 s (f0.ogg), "
        "decoded 1.0 s (f1.ogg), decoded 2.0 s (f2.ogg) and 2 more (see manifest.jsonl); "
        f"0.50 h of material in {tmp_path}"
    )


# ------------------------------------------------------------------ workers die with their parent
_SLOW_WORKER = '''
import os, sys, time
from pathlib import Path


def slow(item, *args):
    """Stands in for a long file: says which process took it, then works for a minute."""
    (Path(os.environ["CADENZA_TEST_MARKS"]) / f"{os.getpid()}").touch()
    time.sleep(60)


if __name__ == "__main__":
    import cadenza.data.prepare as prep
    from cadenza.cli import main

    prep._WORKER_FN = slow
    prep._START_METHOD = os.environ.get("CADENZA_TEST_START") or None
    sys.exit(main(sys.argv[1:]))
'''


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped has ended)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def _wait_until(condition, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds processes through /proc")
@pytest.mark.parametrize("start_method", ["", "spawn"], ids=["auto", "spawn"])
def test_kill_9_of_prepare_takes_its_workers_along(music_folder, tmp_path, start_method):
    import signal
    import subprocess
    import sys

    (tmp_path / "slow_worker.py").write_text(_SLOW_WORKER)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "CADENZA_TEST_MARKS": str(marks), "CADENZA_TEST_START": start_method}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    argv = ["prepare", str(music_folder), str(tmp_path / "store"), "--workers", "2", "--no-progress"]
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "slow_worker.py"), *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    workers: set[int] = set()
    try:
        busy = _wait_until(lambda: len(os.listdir(marks)) >= 2 or parent.poll() is not None, 60)
        workers = {int(name) for name in os.listdir(marks)}
        assert busy and len(workers) == 2, parent.stderr.read().decode() if parent.poll() is not None else ""
        family = _children(parent.pid)  # the two workers and multiprocessing's resource tracker
        assert workers <= family
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert _wait_until(lambda: not any(_alive(pid) for pid in family), 10), [
            pid for pid in family if _alive(pid)
        ]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in workers:  # leave nothing behind should the test fail
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.stderr.close()


_WATCHDOG_PARENT = """
import os, sys, time
import multiprocessing


def child(parent_pid, mark):
    from cadenza.data.prepare import _start_parent_watchdog

    _start_parent_watchdog(parent_pid, interval=0.1)
    open(mark, "w").close()
    time.sleep(60)


if __name__ == "__main__":
    process = multiprocessing.get_context("spawn").Process(target=child, args=(os.getpid(), sys.argv[1]))
    process.start()
    print(process.pid, flush=True)
    process.join()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds processes through /proc")
def test_watchdog_ends_a_worker_whose_parent_died(tmp_path):
    """The fallback where prctl is not available: a thread notices the parent is gone."""
    import signal
    import subprocess
    import sys

    (tmp_path / "parent.py").write_text(_WATCHDOG_PARENT)
    mark = tmp_path / "started"
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py"), str(mark)], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    try:
        assert _wait_until(mark.exists, 60)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert _wait_until(lambda: not _alive(child), 10)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if _alive(child):
            os.kill(child, signal.SIGKILL)
        parent.stdout.close()


def test_a_drums_only_midi_file_is_skipped_with_what_would_keep_it(tmp_path):
    import pretty_midi

    root = tmp_path / "scores"
    root.mkdir()
    for name, drum, pitch in (("drums.mid", True, 36), ("high.mid", False, 120), ("tune.mid", False, 60)):
        score = pretty_midi.PrettyMIDI()
        part = pretty_midi.Instrument(0, is_drum=drum)
        part.notes += [pretty_midi.Note(90, pitch + i % 3, 0.5 * i, 0.5 * i + 0.4) for i in range(8)]
        score.instruments.append(part)
        score.write(str(root / name))
    out = tmp_path / "rolls"
    piano = ["--param", "lowest_pitch=24", "--param", "n_pitches=84"]  # the GANs' 84 pitches
    assert (
        cli(["prepare", str(root), str(out), "-r", "pianoroll", *piano, "--workers", "1", "--no-progress"])
        == 0
    )
    manifest = _manifest(out)
    assert manifest["tune.mid"]["status"] == "ok"
    assert manifest["drums.mid"]["reason"] == "no notes"
    assert manifest["drums.mid"]["detail"] == (
        "only drum notes (8), which the roll leaves out (--param include_drums=true keeps them)"
    )
    assert manifest["high.mid"]["detail"] == "8 notes, none within the roll's pitch range"
    drums = tmp_path / "with-drums"
    args = [
        "prepare",
        str(root),
        str(drums),
        "-r",
        "pianoroll",
        "--param",
        "include_drums=true",
        "--no-progress",
    ]
    assert cli([*args, "--workers", "1"]) == 0
    assert _manifest(drums)["drums.mid"]["status"] == "ok"  # the advice works


def test_a_dc_offset_is_taken_out_before_the_silence_trim(tmp_path):
    """A recording 0.1 above zero throughout: its silent second before the music is trimmed, the
    music kept around zero; a file that is nothing but an offset is silent."""
    root = tmp_path / "recordings"
    root.mkdir()
    sr = 16000
    music = _tone(2.0, sr)
    sf.write(root / "offset.wav", np.concatenate([np.zeros(sr), music]) + 0.1, sr, subtype="FLOAT")
    sf.write(root / "only-offset.wav", np.full(sr, 0.3), sr, subtype="FLOAT")
    sf.write(root / "clean.wav", music, sr, subtype="FLOAT")
    # at another rate: the resampler leaves edges on a constant that the trim sees as 50 ms of sound
    sf.write(root / "offset-44k.wav", np.full(2 * 44100, -0.5), 44100, subtype="FLOAT")
    sf.write(root / "music-44k.wav", _tone(1.0, 44100) + 0.2, 44100, subtype="FLOAT")
    tone = _tone(1.0, sr)
    sf.write(root / "inverted.wav", np.stack([tone, -tone], axis=1), sr, subtype="FLOAT")
    out = tmp_path / "store"
    args = ["prepare", str(root), str(out), "-r", "waveform", "--sample-rate", str(sr), "--no-progress"]
    assert cli([*args, "--workers", "1"]) == 0
    manifest = _manifest(out)
    assert manifest["offset.wav"]["dc_offset"] == pytest.approx(0.1 + music.mean() * 2 / 3, abs=1e-4)
    assert manifest["offset.wav"]["trimmed"][0] >= 0.9  # the silent lead-in, seen as silent
    assert manifest["only-offset.wav"]["reason"] == "silent"
    assert manifest["only-offset.wav"]["detail"] == "a constant offset of +0.300 (DC) and no sound beside it"
    assert manifest["offset-44k.wav"]["reason"] == "silent", manifest["offset-44k.wav"]
    assert manifest["offset-44k.wav"]["detail"].startswith("a constant offset of -0.500 (DC)")
    assert manifest["inverted.wav"]["reason"] == "silent"
    # the offset is taken out before resampling: no step at either end for the resampler to ring on
    import librosa

    got = np.asarray(FeatureStore(out).load("music-44k.wav"))[:, 0]
    want = librosa.resample(_tone(1.0, 44100), orig_sr=44100, target_sr=sr, res_type="soxr_hq")
    assert got.shape == want.shape and np.abs(got - want).max() < 0.01, np.abs(got - want).max()
    assert manifest["inverted.wav"]["detail"].startswith("its 2 channels cancel when mixed to mono")
    assert "dc_offset" not in manifest["clean.wav"]
    store = FeatureStore(out)
    y = np.asarray(store.load("offset.wav"))[:, 0]
    assert abs(float(y.mean())) < 0.01 and np.abs(y).max() < 0.5
    np.testing.assert_array_equal(np.asarray(store.load("clean.wav"))[:, 0], music.astype(np.float32))


def test_a_mixed_folder_says_what_each_store_left_out_and_a_click_is_too_short(music_folder, tmp_path):
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(0)
    piano.notes += [pretty_midi.Note(90, 60 + i, 0.25 * i, 0.25 * i + 0.5) for i in range(8)]
    pm.instruments.append(piano)
    pm.write(str(music_folder / "jazz" / "tune.mid"))
    pretty_midi.PrettyMIDI().write(str(music_folder / "rock" / "nothing.mid"))
    sf.write(music_folder / "rock" / "click.wav", _tone(0.004, 44100), 44100)  # 4 ms: a header and a click
    summary = prepare_corpus(
        str(music_folder), tmp_path / "audio", representation="fft", rep_params=SMALL_FFT, progress=False
    )
    manifest = _manifest(tmp_path / "audio")
    assert manifest["rock__click.wav"]["reason"] == "too short"
    assert manifest["rock__click.wav"]["detail"] == "4.0 ms of sound (at least 0.1 s)"
    assert "jazz__tune.mid" not in manifest and summary.left_out == {"score": 2}
    assert (
        "; 2 scores left out: the source also holds recordings, which an audio store is made from "
        "(prepare the scores on their own to render them); warning: the valid and test splits hold no music "
        "(both of their files were skipped)"
    ) in str(summary)  # of its 10 files only 4 are music: both held-out splits drew broken ones
    assert summary.empty_splits == {"valid": 1, "test": 1}
    rolls = prepare_corpus(str(music_folder), tmp_path / "rolls", representation="pianoroll", progress=False)
    manifest = _manifest(tmp_path / "rolls")
    assert manifest.keys() == {"jazz__tune.mid", "rock__nothing.mid"}
    assert manifest["rock__nothing.mid"]["reason"] == "no notes"
    assert manifest["rock__nothing.mid"]["detail"] == "no part"
    assert rolls.left_out == {"audio": 10}
    assert (
        "; 10 audio files left out: a piano roll is made from scores; warning: 2 files, too few to hold "
        "whole files out and too short to cut"
    ) in str(rolls)
    alone = prepare_corpus(
        str(music_folder / "jazz" / "tune.mid"),
        tmp_path / "rendered",
        representation="fft",
        rep_params=SMALL_FFT,
        progress=False,
    )
    assert alone.n_ok == 1 and alone.left_out == {} and "left out" not in str(alone)


def test_a_file_of_one_sample_is_too_short_not_an_offset(tmp_path):
    """A single sample is its own mean: it was skipped as 'silent', a constant offset (DC)."""
    root = tmp_path / "music"
    root.mkdir()
    sf.write(root / "one.wav", np.array([0.5]), 16000)
    sf.write(root / "good.wav", _tone(1.0, 16000), 16000)
    prepare_corpus(str(root), tmp_path / "store", representation="waveform", progress=False)
    record = _manifest(tmp_path / "store")["one.wav"]
    assert (record["reason"], record["detail"]) == ("too short", "0.1 ms of sound (at least 0.1 s)")


def test_a_score_whose_last_event_is_hours_or_many_beats_in_is_too_long(tmp_path, monkeypatch):
    """A stray event far past the music (a damaged delta time): 60 bytes of MIDI became a roll of
    millions of steps, gigabytes to encode; it is skipped before it is encoded or rendered."""
    import pretty_midi

    from cadenza.data import prepare

    root = tmp_path / "scores"
    root.mkdir()
    for name, notes, bpm in [
        ("tune.mid", [(60, 0.0, 1.0), (64, 1.0, 2.0)], 120.0),
        ("stray.mid", [(60, 0.0, 60.0), (64, 5 * 3600.0, 5 * 3600.0 + 60.0)], 4.0),  # 5 h: 1204 beats
        ("beats.mid", [(60, 0.0, 1.0), (64, 1000.0, 1001.0)], 120.0),  # 2002 beats: 17 minutes
    ]:
        pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
        piano = pretty_midi.Instrument(0)
        piano.notes += [pretty_midi.Note(90, p, a, b) for p, a, b in notes]
        pm.instruments.append(piano)
        pm.write(str(root / name))
    monkeypatch.setattr(prepare, "MAX_SCORE_BEATS", 1500)
    summary = prepare_corpus(str(root), tmp_path / "rolls", representation="pianoroll", progress=False)
    manifest = _manifest(tmp_path / "rolls")
    assert summary.n_ok == 1 and summary.reasons == {"too long": 2}
    assert manifest["stray.mid"]["detail"].startswith("its last event is 5.0 h (1204 beats) in, beyond 4 h")
    assert manifest["beats.mid"]["detail"].startswith("its last event is 0.3 h (2002 beats) in")


def test_a_held_out_split_whose_files_were_all_skipped_is_reported(tmp_path):
    """Splits are drawn from the ids before decoding: when the test split's only file is broken
    the store has no held-out music, which the summary must say (it said nothing)."""
    root = tmp_path / "music"
    root.mkdir()
    for i in range(5):
        sf.write(root / f"piece{i}.wav", _tone(1.0, 16000, freq=220.0 * (i + 1)), 16000)
    items = [SourceItem(f"piece{i}.wav", "audio", str(root / f"piece{i}.wav"), {}) for i in range(5)]
    test = [i for i, split in assign_splits(items, seed=0).items() if split == "test"]
    assert len(test) == 1
    (root / test[0]).write_bytes(b"RIFF" + bytes(40))  # broken
    summary = prepare_corpus(str(root), tmp_path / "store", representation="waveform", progress=False)
    assert summary.empty_splits == {"test": 1}
    assert "warning: the test split holds no music (its file was skipped)" in str(summary)
    fine = prepare_corpus(str(root), tmp_path / "other", representation="waveform", seed=1, progress=False)
    assert fine.empty_splits == {} and "warning" not in str(fine)
    both = dataclasses.replace(summary, empty_splits={"test": 2, "valid": 1})
    assert str(both).count("warning") == 1  # one sentence, not one a split
    assert "warning: the valid and test splits hold no music (all 3 of their files were skipped)" in str(both)


def test_a_broken_link_to_a_music_file_is_recorded_as_missing(tmp_path):
    """A link whose target is gone is skipped with its reason (it was left out without a word)."""
    root = tmp_path / "music"
    root.mkdir()
    for i, name in enumerate(("a.wav", "b.wav", "c.wav")):
        sf.write(root / name, _tone(1.0, 16000, 220 + 110 * i), 16000)
    os.symlink(root / "moved-away.flac", root / "gone.flac")
    os.symlink(root / "moved-away.txt", root / "notes.txt")  # not music: not listed at all
    summary = prepare_corpus(str(root), tmp_path / "store", representation="waveform", progress=False)
    manifest = _manifest(tmp_path / "store")
    assert manifest["gone.flac"]["status"] == "skipped" and manifest["gone.flac"]["reason"] == "missing file"
    assert "notes.txt" not in manifest and summary.n_skipped == 1


@pytest.mark.skipif(
    not hasattr(os, "mkfifo") or not hasattr(__import__("signal"), "SIGALRM"), reason="POSIX only"
)
@pytest.mark.parametrize("representation", ["waveform", "pianoroll"])
def test_a_named_pipe_or_a_link_loop_is_skipped_and_does_not_hold_the_job(tmp_path, representation):
    """A named pipe called song.wav (a recorder's live feed, a tool's fifo) held ``prepare`` for
    ever: opening it waits for a writer. It and a link that leads back to itself are skipped."""
    import signal

    import pretty_midi

    root = tmp_path / "music"
    root.mkdir()
    ext = ".wav" if representation == "waveform" else ".mid"
    for i in range(3):
        if ext == ".wav":
            sf.write(root / f"piece{i}.wav", _tone(1.0, 16000, 220 + 110 * i), 16000)
        else:
            pm = pretty_midi.PrettyMIDI()
            inst = pretty_midi.Instrument(0)
            inst.notes = [pretty_midi.Note(80, 60 + i + k, k * 0.5, k * 0.5 + 0.5) for k in range(8)]
            pm.instruments.append(inst)
            pm.write(str(root / f"piece{i}.mid"))
    os.mkfifo(root / f"live{ext}")
    os.symlink(root / f"b{ext}", root / f"a{ext}")
    os.symlink(root / f"a{ext}", root / f"b{ext}")
    os.symlink(tmp_path / f"moved{ext}", root / f"gone{ext}")

    class Stuck(Exception):  # not an OSError: a reader's own error handling must not take it
        pass

    def stuck(*_):
        raise Stuck("prepare is waiting on the named pipe")

    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(20)
    try:
        summary = prepare_corpus(
            str(root), tmp_path / "store", representation=representation, progress=False, workers=1
        )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    manifest = _manifest(tmp_path / "store")
    assert summary.n_ok == 3 and summary.n_skipped == 4
    live = manifest[f"live{ext}"]
    assert live["status"] == "skipped" and "named pipe" in live["detail"]
    assert live["reason"] == ("not an audio file" if ext == ".wav" else "not a file")
    for name in (f"a{ext}", f"b{ext}"):
        assert manifest[name]["reason"] == "missing file"
        assert manifest[name]["detail"] == "a symbolic link that leads back to itself"
    assert manifest[f"gone{ext}"]["detail"] == f"a broken link to {tmp_path / f'moved{ext}'}"


def test_a_recording_with_a_nan_glitch_is_prepared_with_a_note_and_no_nan_in_the_store(tmp_path):
    """One NaN sample in an hour of recording had the whole file skipped as "non-finite samples"."""
    root = tmp_path / "music"
    root.mkdir()
    for i in range(3):
        y = _tone(2.0, 22050, 220 + 110 * i) + (0.2 if i == 2 else 0.0)  # the third with a DC offset
        y[5000:5040] = np.nan
        sf.write(root / f"take{i}.wav", y, 22050, subtype="FLOAT")
    sf.write(root / "gone.wav", np.full(22050, np.nan), 22050, subtype="FLOAT")
    summary = prepare_corpus(str(root), tmp_path / "store", representation="waveform", progress=False)
    manifest = _manifest(tmp_path / "store")
    assert summary.n_ok == 3 and manifest["gone.wav"]["reason"] == "non-finite samples"
    for i in range(3):
        assert (
            manifest[f"take{i}.wav"]["warning"]
            == "mended: 40 of 44100 samples were NaN or infinite, set to 0"
        )
    store = FeatureStore(tmp_path / "store")
    for i in range(3):
        x = store.load(f"take{i}.wav")
        assert np.all(np.isfinite(x)) and np.abs(x).max() > 0.1
    assert "mended" in str(summary)


def test_aac_wma_caf_and_w64_files_are_prepared_or_skipped_with_a_reason(tmp_path):
    """An iTunes .m4a, an .aac, a .wma beside WAVs were passed over without a word; a .caf and a
    .w64, which libsndfile reads, were too."""
    root = tmp_path / "music"
    root.mkdir()
    sf.write(root / "a.wav", _tone(1.0, 16000), 16000)
    sf.write(root / "b.caf", _tone(1.0, 16000), 16000, format="CAF")
    sf.write(root / "c.w64", _tone(1.0, 16000), 16000, format="W64")
    (root / "d.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom" + bytes(64))
    (root / "e.aac").write_bytes(b"\xff\xf1\x50\x80\x02\x1f\xfc" + bytes(64))
    (root / "f.wma").write_bytes(
        b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c" + bytes(64)
    )
    summary = prepare_corpus(str(root), tmp_path / "store", representation="waveform", progress=False)
    manifest = _manifest(tmp_path / "store")
    assert sorted(manifest) == ["a.wav", "b.caf", "c.w64", "d.m4a", "e.aac", "f.wma"]
    assert all(manifest[n]["status"] == "ok" for n in ("a.wav", "b.caf", "c.w64"))
    for name in ("d.m4a", "e.aac", "f.wma"):  # no decoder here, or ffmpeg finds no sound in them
        assert manifest[name]["status"] == "skipped", manifest[name]
        assert manifest[name]["reason"] in ("unsupported format", "corrupt or truncated audio")
    assert summary.n_skipped == 3


def test_a_file_read_alone_is_read_as_prepare_reads_it(tmp_path):
    """A seed file was read raw: its constant offset and silent start kept, a silent file (or
    one of a DC offset alone) accepted, and a long one decoded whole for a few seconds of it."""
    root = tmp_path / "music"
    root.mkdir()
    y = np.concatenate([np.zeros(8000), _tone(1.0, 16000), np.zeros(4000)]) + 0.2
    sf.write(root / "offset.wav", y, 16000, subtype="FLOAT")
    prepare_corpus(str(root), tmp_path / "store", representation="waveform", progress=False)
    stored = np.load(tmp_path / "store" / "shards" / "offset.wav.npy")
    rep = make_representation("waveform")
    info = {}
    frames = read_frames(root / "offset.wav", rep, info=info)
    np.testing.assert_array_equal(frames, stored)
    assert np.mean(frames.astype(np.float64)) == pytest.approx(0.0, abs=1e-3)  # the offset is gone
    assert info["dc_offset"] == pytest.approx(0.2, abs=0.01) and 0.4 < info["trimmed"][0] <= 0.5
    np.testing.assert_array_equal(rep.read(root / "offset.wav"), stored.astype(np.float32))
    head = rep.read(root / "offset.wav", max_seconds=1.0)  # the first second: 0.5 s of it is silence
    assert 8000 <= len(head) <= 9000 and len(head) < len(stored)
    sf.write(root / "dc.wav", np.full(16000, 0.3), 16000, subtype="FLOAT")
    with pytest.raises(DecodeError, match=r"silent \(a constant offset of \+0.300 \(DC\)"):
        rep.read(root / "dc.wav")
    (root / "notes.txt").write_text("not music")
    with pytest.raises(DecodeError):
        rep.read(root / "notes.txt")


def test_a_file_with_the_same_bytes_as_another_is_prepared_once(tmp_path):
    import shutil

    root = tmp_path / "music"
    root.mkdir()
    for i in range(6):
        sf.write(root / f"t{i}.wav", _tone(1.0, 16000, 220 + 40 * i), 16000)
    shutil.copy(root / "t1.wav", root / "t1 (1).wav")  # a download kept twice
    (root / "sub").mkdir()
    shutil.copy(root / "t4.wav", root / "sub" / "t4 copy.wav")
    (root / "empty1.wav").write_bytes(b"")
    (root / "empty2.wav").write_bytes(b"")
    out = tmp_path / "store"
    summary = prepare_corpus(str(root), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    records = _manifest(out)
    assert summary.n_ok == 6 and summary.reasons == {"duplicate": 2, "empty file": 2}
    assert records["t1_1_.wav"]["detail"] == "the same bytes as t1.wav"
    assert records["sub__t4_copy.wav"]["detail"] == "the same bytes as t4.wav"
    assert not (out / "shards" / "t1_1_.wav.npy").exists()
    again = prepare_corpus(str(root), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    assert again.n_done_before == 10 and again.n_ok == 6  # resumed: nothing done twice


def test_a_damaged_shard_is_left_out_of_training_and_prepared_again(tmp_path):
    """A shard cut short by a disk error stopped `cadenza train` with numpy's "mmap length is
    greater than file size"; now the store leaves it out with a warning that says what to do, and
    `prepare` run again prepares it anew, byte for byte as before."""
    from cadenza.data import SequenceWindows
    from cadenza.data.store import DamagedShardWarning

    root = tmp_path / "music"
    root.mkdir()
    for i in range(6):
        sf.write(root / f"take{i}.wav", _tone(2.0, 16000, 220 + 55 * i), 16000)
    kwargs = dict(representation="fft", progress=False, split=(1.0, 0.0, 0.0), workers=1)
    prepare_corpus(str(root), tmp_path / "store", **kwargs)
    shards = tmp_path / "store" / "shards"
    whole = {p.name: p.read_bytes() for p in shards.glob("*.npy")}
    cut = shards / "take1.wav.npy"
    cut.write_bytes(whole[cut.name][:1000])
    (shards / "take2.wav.npy").write_bytes(b"garbage")
    # bytes changed past a whole header are not looked for (that would read every shard)
    (shards / "take3.wav.npy").write_bytes(whole["take4.wav.npy"][:200] + whole["take3.wav.npy"][200:])
    with pytest.warns(DamagedShardWarning, match="2 of 6 files .* are left out") as caught:
        store = FeatureStore(tmp_path / "store")
    text = str(caught[0].message)
    assert f"take1.wav: 1,000 bytes where its header says {len(whole['take1.wav.npy']):,}" in text
    assert "take2.wav: not an array's header" in text and "cadenza prepare" in text
    assert store.ids("train") == ["take0.wav", "take3.wav", "take4.wav", "take5.wav"]
    windows = SequenceWindows(store, "train", seq_len=4)
    assert len(windows) > 0 and all(np.isfinite(windows[i]["x"].numpy()).all() for i in range(len(windows)))
    with pytest.raises(StoreError, match="damaged"):
        store.load("take1.wav")
    prepare_corpus(str(root), tmp_path / "store", **kwargs)  # run again: the two are prepared anew
    assert {p.name: p.read_bytes() for p in shards.glob("*.npy")} == {
        **whole,
        "take3.wav.npy": whole["take4.wav.npy"][:200] + whole["take3.wav.npy"][200:],
    }
    for p in shards.glob("*.npy"):
        p.write_bytes(b"")
    with pytest.raises(StoreError, match="every shard"), pytest.warns(DamagedShardWarning):
        FeatureStore(tmp_path / "store")


def test_same_bytes_reads_the_ends_first_and_a_whole_file_only_where_they_match(tmp_path, monkeypatch):
    """Files of one size (WAVs of one length) were hashed whole: 0.5 s for 24 two-minute WAVs, a
    fifth of preparing them. Their first and last 64 KB come first; a file equal in both but not
    in the middle is no copy."""
    import builtins

    from cadenza._fs import same_bytes

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    files = {
        "a.wav": base,
        "b.wav": rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes(),  # same size, other bytes
        "c.wav": base[: 1 << 19] + b"\x00" + base[(1 << 19) + 1 :],  # one byte in the middle differs
        "copy of a.wav": base,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    read = []
    real_open = builtins.open

    def counting_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "b" in mode:
            real_read = f.read

            def read_counted(n=-1):
                data = real_read(n)
                read.append((os.path.basename(path), len(data)))
                return data

            f.read = read_counted
        return f

    monkeypatch.setattr(builtins, "open", counting_open)
    paths = [str(tmp_path / n) for n in files]
    assert same_bytes(paths) == {3: 0}  # "copy of a.wav" is a's copy; c is not
    whole = {name for name, _ in read if sum(n for m, n in read if m == name) > 1 << 18}
    assert whole == {"a.wav", "c.wav", "copy of a.wav"}  # b differs at its ends: never read whole


def _phrase(seconds, sr, gap=None):
    """A recording whose pitch rises through it (every part of it sounds different), with
    digital silence over ``gap`` (start, end) seconds."""
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * (220.0 + 2.0 * t) * t)
    if gap is not None:
        y[int(gap[0] * sr) : int(gap[1] * sr)] = 0.0
    return y


def test_one_recording_is_cut_into_parts_and_whole_parts_are_held_out(tmp_path, monkeypatch):
    """A source of one long recording (an album kept as one file) held nothing out: every
    evaluation of a study of it failed after training ("no held-out files"). Its parts are split
    instead, alike in every store, and resume as files do."""
    import cadenza.data.prepare as prep
    from cadenza.evaluation.clips import store_clips
    from cadenza.study.plan import check_held_out

    root = tmp_path / "music"
    root.mkdir()
    sf.write(root / "album.wav", _phrase(200.0, 8000, gap=(79.0, 121.0)), 8000)  # parts 5, 6 silent
    fft = prepare_corpus(
        str(root), tmp_path / "fft", representation="fft", rep_params=SMALL_FFT, progress=False
    )
    wave = prepare_corpus(str(root), tmp_path / "wave", representation="waveform", progress=False)
    ids = [f"album.wav.part{k:02d}" for k in range(1, 11)]
    manifest = _manifest(tmp_path / "fft")
    assert sorted(manifest) == ids and fft.parts == {"album.wav": 10} and fft.n_files == 10
    assert [manifest[i]["status"] for i in ids[4:6]] == ["skipped"] * 2
    assert {manifest[i]["reason"] for i in ids[4:6]} == {"silent"}
    assert (
        fft.n_ok == 8
        and "1 file, too few to hold whole files out: it is cut in time into 10 parts" in str(fft)
    )
    # Consecutive cuts of the whole file's frames, with their times in it.
    whole = read_frames(root / "album.wav", make_representation("fft", **SMALL_FFT))
    store = FeatureStore(tmp_path / "fft")
    cuts = [np.asarray(store.load(i)) if manifest[i]["status"] == "ok" else None for i in ids]
    bounds = np.cumsum([0] + [manifest[i].get("n_frames", len(whole) // 10) for i in ids])
    assert bounds[-1] == len(whole)
    for k, cut in enumerate(cuts):
        if cut is not None:
            np.testing.assert_array_equal(cut, whole[bounds[k] : bounds[k + 1]])
    assert [manifest[i]["start"] for i in ids] == pytest.approx([20.0 * k for k in range(10)], abs=0.03)
    assert manifest[ids[-1]]["end"] == pytest.approx(200.0, abs=0.03)
    # The same parts held out in both stores, and evaluation finds them.
    assert check_held_out({"fft": tmp_path / "fft", "wave": tmp_path / "wave"}) == (True, [])
    assert store.ids("test") and store.ids("valid") and len(store.ids("train")) >= 6
    clips, info = store_clips(tmp_path / "wave", n_clips=2, seconds=10.0)
    assert info["split"] == "test" and len(clips) == 2
    assert sum(wave.part_splits.values()) == 8
    # Resumed: nothing to do; a file of the parts is decoded once.
    calls = []
    real = prep.prepare_one
    monkeypatch.setattr(prep, "prepare_one", lambda item, *a: (calls.append(item.id), real(item, *a))[1])
    again = prepare_corpus(
        str(root), tmp_path / "fft", representation="fft", rep_params=SMALL_FFT, progress=False
    )
    assert calls == [] and again.n_done_before == 10
    (tmp_path / "fft" / "shards" / f"{ids[0]}.npy").unlink()  # one part lost: its file again, once
    prepare_corpus(str(root), tmp_path / "fft", representation="fft", rep_params=SMALL_FFT, progress=False)
    assert calls == ["album.wav"]
    np.testing.assert_array_equal(FeatureStore(tmp_path / "fft").load(ids[0]), cuts[0])


def test_a_short_recording_is_kept_whole_and_the_summary_says_nothing_is_held_out(tmp_path):
    """Parts of at least 20 s, five at least (else training keeps one or two): 99 s stays whole."""
    root = tmp_path / "music"
    root.mkdir()
    sf.write(root / "sketch.wav", _phrase(99.0, 8000), 8000)
    summary = prepare_corpus(str(root), tmp_path / "s", representation="waveform", progress=False)
    assert sorted(_manifest(tmp_path / "s")) == ["sketch.wav"] and summary.parts == {}
    assert "warning: 1 file, too few to hold whole files out and too short to cut" in str(summary)
    assert "nothing is held out" in str(summary)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "take.wav").write_bytes(b"RIFF" + bytes(40))
    with pytest.raises(StoreError) as none:  # nothing prepared: the error, not this warning
        prepare_corpus(str(broken), tmp_path / "u", representation="waveform", progress=False)
    assert "could be prepared" in str(none.value) and "nothing is held out" not in str(none.value)
    sf.write(root / "album.wav", _phrase(130.0, 8000), 8000)  # a longer one beside it: it is cut
    both = prepare_corpus(str(root), tmp_path / "t", representation="waveform", progress=False)
    assert both.parts == {"album.wav": 5} and both.n_files == 6
    assert "2 files, too few to hold whole files out: the longer is cut in time into 5 parts" in str(both)
    assert "warning" not in str(both)


def crash_on_b(item, *args):
    """A decoder that takes its process down on one of two files."""
    from cadenza.data.prepare import prepare_one

    if item.id == "b.wav":
        os._exit(3)
    return prepare_one(item, *args)


def test_two_recordings_give_five_parts_each_and_a_crash_costs_one_files_parts(tmp_path, monkeypatch):
    import cadenza.data.prepare as prep

    root = tmp_path / "music"
    root.mkdir()
    for name, seconds in (("a.wav", 100.0), ("b.wav", 110.0)):
        sf.write(root / name, _phrase(seconds, 8000), 8000)
    monkeypatch.setattr(prep, "_WORKER_FN", crash_on_b)
    summary = prepare_corpus(str(root), tmp_path / "s", representation="waveform", workers=2, progress=False)
    manifest = _manifest(tmp_path / "s")
    assert summary.parts == {"a.wav": 5, "b.wav": 5} and len(manifest) == 10 and summary.n_ok == 5
    assert {manifest[f"b.wav.part{k}"]["reason"] for k in ("01", "03", "05")} == {"crashed the decoder"}
    assert all(manifest[f"a.wav.part0{k}"]["status"] == "ok" for k in range(1, 6))
    assert "5 of 10 parts prepared, 5 skipped (5 crashed the decoder); 2 files, too few" in str(summary)
    assert "they are cut in time into 5 and 5 parts" in str(summary)


def test_one_score_is_cut_at_bar_lines_and_its_parts_split_as_its_rendering_is(tmp_path):
    """A piano roll's parts are whole bars (a phrase starts on a bar line), and the piano-roll
    and audio stores of one score hold out the same parts."""
    import pretty_midi

    from cadenza.study.plan import check_held_out

    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=0)
    for beat in range(4 * 53):  # 53 bars of 4/4 at 120 bpm: 106 s, a pitch a beat
        piano.notes.append(pretty_midi.Note(80, 48 + beat % 30, 0.5 * beat, 0.5 * beat + 0.45))
    midi.instruments.append(piano)
    root = tmp_path / "score"
    root.mkdir()
    midi.write(str(root / "piece.mid"))
    roll = prepare_corpus(str(root), tmp_path / "roll", representation="pianoroll", progress=False)
    prepare_corpus(str(root), tmp_path / "wave", representation="waveform", sample_rate=8000, progress=False)
    assert roll.parts == {"piece.mid": 5} and roll.n_ok == 5
    store = FeatureStore(tmp_path / "roll")
    bar = store.representation.frame_unit
    lengths = [len(store.load(i)) for i in store.ids()]
    assert bar == 96 and sum(lengths) == 53 * bar
    assert sorted(lengths) == [10 * bar] * 2 + [11 * bar] * 3  # 53 bars in five parts
    assert check_held_out({"roll": tmp_path / "roll", "wave": tmp_path / "wave"}) == (True, [])


def test_a_store_being_prepared_by_another_process_is_refused(tmp_path, capsys):
    from tests.training.test_trainer import _hold

    root = tmp_path / "music"
    root.mkdir()
    sf.write(root / "a.wav", _tone(1.0, 16000), 16000)
    out = tmp_path / "store"
    out.mkdir()
    holder = _hold(out, ".prepare.lock")
    try:
        assert cli(["prepare", str(root), str(out), "--workers", "1"]) == 1
        err = capsys.readouterr().err
        assert f"{out} is being prepared now by process {holder.pid}" in err and "Traceback" not in err
        assert not (out / "manifest.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert cli(["prepare", str(root), str(out), "--workers", "1"]) == 0


def test_shards_no_file_of_the_store_has_now_are_removed(tmp_path):
    """A file taken out of the source (or cut into parts since) kept its shard, and a killed
    prepare its temporary file, on disk for as long as the store lived."""
    root = tmp_path / "music"
    root.mkdir()
    for i in range(4):
        sf.write(root / f"piece{i}.wav", _tone(1.0, 16000, freq=220.0 * (i + 1)), 16000)
    out = tmp_path / "store"
    prepare_corpus(str(root), out, representation="waveform", progress=False)
    shards = out / "shards"
    assert sorted(p.name for p in shards.iterdir()) == [f"piece{i}.wav.npy" for i in range(4)]
    (root / "piece3.wav").unlink()
    (shards / ".piece0.wav.npy.4242.tmp").write_bytes(b"\x93NUMPY half-written")  # a kill mid-write
    prepare_corpus(str(root), out, representation="waveform", progress=False)
    assert sorted(p.name for p in shards.iterdir()) == [f"piece{i}.wav.npy" for i in range(3)]
    assert sorted(FeatureStore(out).ids()) == [f"piece{i}.wav" for i in range(3)]


def test_a_long_recording_drawn_for_the_held_out_split_is_warned_of(tmp_path):
    """Files are split by count: a long recording drawn for the test split beside short ones left
    training a sliver of the music without a word."""
    root = tmp_path / "music"
    root.mkdir()
    names = [f"track{i}.wav" for i in range(5)]
    items = [SourceItem(n, "audio", str(root / n), {}) for n in names]
    test = next(i for i, s in assign_splits(items, seed=0).items() if s == "test")
    for i, name in enumerate(names):
        sf.write(root / name, _tone(60.0 if name == test else 2.0, 8000, freq=200.0 + 50 * i), 8000)
    summary = prepare_corpus(str(root), tmp_path / "s", representation="waveform", progress=False)
    share = 62.0 / 68.0  # the long one and the short valid file, of all
    assert summary.held_share is not None and summary.held_share[:2] == (pytest.approx(share, abs=1e-3), test)
    assert (
        f"warning: the held-out files hold 91% of the music, training 9% (the longest held out: {test}, 1.0 min)"
        in str(summary)
    )
    for i, name in enumerate(names):  # files of one length: no warning
        sf.write(root / name, _tone(2.0, 8000, freq=300.0 + 50 * i), 8000)
    same = prepare_corpus(str(root), tmp_path / "u", representation="waveform", progress=False)
    assert same.n_ok == 5 and same.held_share is None and "warning" not in str(same)


def hang_on_c(item, *args):
    """A parser that never finishes one file: Python looping for ever, as a parser caught in a
    damaged file's structure would."""
    from cadenza.data.prepare import prepare_one

    if item.id == "rock__c.ogg":
        while True:
            pass
    return prepare_one(item, *args)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_that_is_never_finished_is_skipped_as_timed_out(music_folder, tmp_path, monkeypatch, workers):
    """One file that a decoder cannot finish held the whole job at it for ever, and again at every
    resume; now it is skipped after --file-timeout, its worker stopped, and the rest prepared."""
    import cadenza.data.prepare as prep

    monkeypatch.setattr(prep, "_WORKER_FN", hang_on_c)
    monkeypatch.setattr(prep, "_WATCH_SECONDS", 0.2)
    t0 = time.monotonic()
    summary = prepare_corpus(
        str(music_folder),
        tmp_path / "s",
        representation="fft",
        rep_params=SMALL_FFT,
        workers=workers,
        progress=False,
        file_timeout=1.5,
    )
    assert time.monotonic() - t0 < 30
    manifest = _manifest(tmp_path / "s")
    assert manifest["rock__c.ogg"]["reason"] == "timed out"
    assert "still being read after 1.5 s" in manifest["rock__c.ogg"]["detail"]
    assert summary.n_ok == 3 and summary.reasons["timed out"] == 1 and len(manifest) == 9
    assert not multiprocessing.active_children()  # the stuck worker is stopped, not left spinning
    # resumed with the same limit: not waited for again; with a longer one: tried again
    monkeypatch.setattr(prep, "_WORKER_FN", None)
    again = dict(representation="fft", rep_params=SMALL_FFT, workers=workers, progress=False)
    same = prepare_corpus(str(music_folder), tmp_path / "s", file_timeout=1.5, **again)
    assert same.n_done_before == 9 and same.reasons["timed out"] == 1
    longer = prepare_corpus(str(music_folder), tmp_path / "s", file_timeout=60.0, **again)
    assert longer.n_done_before == 8 and longer.n_ok == 4
    assert _manifest(tmp_path / "s")["rock__c.ogg"]["status"] == "ok"
    with pytest.raises(ParameterError, match="--file-timeout"):
        prepare_corpus(str(music_folder), tmp_path / "t", representation="fft", file_timeout=-1.0)
