"""A full disk is not a bad file: the long jobs stop with what to do, keep what they finished,
leave no part-written file behind, and go on when run again."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cadenza._fs import disk_full_text, is_disk_full
from cadenza.cli import main as cli
from cadenza.data import FeatureStore, prepare_corpus
from cadenza.data.store import atomic_save_npy, atomic_write_text
from cadenza.errors import DiskFullError

SMALL_FFT = {"block_size": 400}


def _tones(root: Path, n: int, seconds: float = 0.6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    for i in range(n):
        sf.write(root / f"t{i}.wav", 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t), 16000)
    return root


def _manifest(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def test_prepare_stops_on_a_full_disk_keeps_what_it_finished_and_goes_on(tmp_path, monkeypatch):
    import cadenza.data.store as store_module

    src, out = _tones(tmp_path / "music", 6), tmp_path / "store"
    real = store_module.atomic_save_npy
    saved: list[str] = []

    def fills_up_after_two(path, array):
        if len(saved) == 2:
            _no_space()
        saved.append(Path(path).name)
        real(path, array)

    monkeypatch.setattr(store_module, "atomic_save_npy", fills_up_after_two)
    with pytest.raises(
        DiskFullError, match=r"no space left on device writing .*2 of 6 files are prepared and kept"
    ):
        prepare_corpus(str(src), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    records = _manifest(out)
    assert len(records) == 2 and all(r["status"] == "ok" for r in records.values())  # none marked skipped

    monkeypatch.setattr(store_module, "atomic_save_npy", real)
    summary = prepare_corpus(str(src), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    assert summary.n_done_before == 2 and summary.n_ok == 6 and summary.n_skipped == 0
    assert len(FeatureStore(out).records) == 6


def test_files_an_older_run_skipped_for_a_full_disk_are_prepared_on_resume(tmp_path):
    src, out = _tones(tmp_path / "music", 3), tmp_path / "store"
    prepare_corpus(str(src), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    (out / "shards" / f"{first['id']}.npy").unlink()
    damaged = {k: first[k] for k in ("id", "path", "kind", "labels", "split")}
    damaged.update(
        status="skipped", reason="failed to decode", detail="OSError: [Errno 28] No space left on device"
    )
    (out / "manifest.jsonl").write_text("\n".join([json.dumps(damaged), *lines[1:]]) + "\n")
    summary = prepare_corpus(str(src), out, representation="fft", rep_params=SMALL_FFT, progress=False)
    assert summary.n_ok == 3 and summary.n_skipped == 0 and summary.n_done_before == 2
    assert (out / "shards" / f"{first['id']}.npy").exists()


def test_the_cli_says_the_disk_is_full_and_how_to_go_on(tmp_path, monkeypatch, capsys):
    import cadenza.data.store as store_module

    src = _tones(tmp_path / "music", 2)
    monkeypatch.setattr(store_module, "atomic_save_npy", _no_space)
    rc = cli(["prepare", str(src), str(tmp_path / "store"), "--param", "block_size=400", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "cadenza prepare: error: no space left on device writing" in err
    assert "free there" in err and "run the same command again" in err and "Traceback" not in err


def test_a_verb_stopped_by_a_full_disk_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    import cadenza.commands.train as train_command

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "runs" / "last.pt"))

    def fails(args):
        raise full

    monkeypatch.setattr(train_command, "run", fails)  # registered as the verb's function by name
    assert cli(["train", "fft_base-tiny"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"cadenza train: error: no space left on device writing {full.filename}" in err
    assert "training goes on from its last checkpoint" in err


def test_is_disk_full_tells_room_from_other_errors(tmp_path):
    assert is_disk_full(OSError(errno.ENOSPC, "x")) and is_disk_full(OSError(errno.EDQUOT, "x"))
    assert is_disk_full(DiskFullError("stopped"))
    assert not is_disk_full(OSError(errno.EACCES, "x")) and not is_disk_full(ValueError("x"))
    text = disk_full_text(OSError(errno.ENOSPC, "x", str(tmp_path / "a" / "b.npy")))
    assert text.startswith(f"no space left on device writing {tmp_path}") and " free there)" in text
    assert disk_full_text(OSError(errno.EDQUOT, "x")) == "the disk quota is used up"


@pytest.mark.parametrize("writer", ["npy", "text"])
def test_atomic_writers_keep_the_old_file_and_leave_no_part_on_a_full_disk(tmp_path, monkeypatch, writer):
    target = tmp_path / ("a.npy" if writer == "npy" else "a.json")
    if writer == "npy":
        atomic_save_npy(target, np.arange(3))
        monkeypatch.setattr(np, "save", lambda f, *a, **k: (f.write(b"\x93NUMPY partial"), _no_space()))
        with pytest.raises(OSError) as caught:
            atomic_save_npy(target, np.arange(1000))
        assert np.load(target).tolist() == [0, 1, 2]
    else:
        atomic_write_text(target, "old")

        class Full(io.StringIO):
            def write(self, text):
                _no_space()

        real_open = open

        def opens_full(path, mode="r", *args, **kwargs):
            return (
                Full()
                if "w" in mode and str(path).endswith(".tmp")
                else real_open(path, mode, *args, **kwargs)
            )

        import builtins

        monkeypatch.setattr(builtins, "open", opens_full)
        with pytest.raises(OSError) as caught:
            atomic_write_text(target, "new")
        monkeypatch.undo()
        assert target.read_text() == "old"
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert _leftovers(tmp_path) == []


def test_write_audio_on_a_full_disk_raises_the_disks_error_naming_the_file(tmp_path, monkeypatch, capfd):
    import cadenza.audio.io as audio_io

    real_fdopen = os.fdopen

    class FillsUp(io.BufferedWriter):
        def write(self, data):
            if self.tell() + len(data) > 4096:
                _no_space()
            return super().write(data)

    def fdopen(fd, mode="r", *args, **kwargs):
        return FillsUp(io.FileIO(fd, "w")) if "w" in mode else real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(audio_io.os, "fdopen", fdopen)
    for name in ("a.wav", "a.flac"):
        noise = np.random.default_rng(0).uniform(-0.5, 0.5, 64000)
        with pytest.raises(OSError) as caught:
            audio_io.write_audio(tmp_path / name, noise, 16000)
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / name)
        assert not (tmp_path / name).exists()
    assert _leftovers(tmp_path) == []
    assert "Exception ignored" not in capfd.readouterr().err  # libsndfile's callback said nothing


# ------------------------------------------------------------------ a real full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (as root, where mounting is allowed), unmounted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small file system needs root")
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3072k", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_prepare_onto_a_real_full_disk_with_workers_stops_then_goes_on(tmp_path, small_disk):
    src = _tones(tmp_path / "music", 8, seconds=2.0)  # 8 x 2 s at 16 kHz: 8 x 128 kB of float32 frames
    out = small_disk / "store"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 2_400_000)  # room for a few shards only
    cmd = [sys.executable, "-m", "cadenza", "prepare", str(src), str(out), "--param", "block_size=400"]
    cmd += ["--workers", "2", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "no space left on device writing" in done.stderr and "Traceback" not in done.stderr
    kept = _manifest(out)
    assert 0 < len(kept) < 8 and all(r["status"] == "ok" for r in kept.values())
    assert _leftovers(small_disk) == []  # no part-written shard holds on to the room

    filler.unlink()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(FeatureStore(out).records) == 8


def test_a_metrics_row_cut_short_is_taken_off_before_the_next(tmp_path):
    from cadenza.training.logs import MetricsLog, read_metrics

    path = tmp_path / "metrics.csv"
    log = MetricsLog(path)
    log.write({"epoch": 0, "step": 1, "split": "train", "loss": 0.5})
    log.write({"epoch": 0, "step": 2, "split": "train", "loss": 0.25})
    whole = path.read_text()
    path.write_text(whole + "0,")  # a third row cut before its step by a full disk: not a row
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    path.write_text(whole + "0,3,tra")  # cut after it: the next row would be glued onto it
    MetricsLog(path).write({"epoch": 0, "step": 3, "split": "train", "loss": 0.125})
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(1, 0.5), (2, 0.25), (3, 0.125)]
    assert path.read_text().startswith(whole)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_file_the_system_refuses_is_one_line_naming_it(tmp_path, monkeypatch, capsys, code):
    import cadenza.commands.train as train_command

    refused = OSError(code, os.strerror(code), str(tmp_path / "runs" / "config.yaml"))

    def fails(args):
        raise refused

    monkeypatch.setattr(train_command, "run", fails)
    assert cli(["train", "fft_base-tiny"]) == 1
    err = capsys.readouterr().err
    assert err == f"cadenza train: error: {refused.filename}: {os.strerror(code)}\n"


def test_training_onto_a_real_full_disk_stops_keeps_its_checkpoint_and_goes_on(tmp_path, small_disk):
    from cadenza.training import load_checkpoint
    from cadenza.training.logs import read_metrics
    from tests.training.conftest import TINY, make_store

    store = make_store(tmp_path / "store")
    run = small_disk / "run"
    cmd = [sys.executable, "-m", "cadenza", "train", "fft_base-tiny", "--data", str(store), "--run", str(run)]
    cmd += [*TINY, "train.max_epochs=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    first = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * max(free - 8192, 0))  # room for the metrics, not for a checkpoint

    longer = [*cmd[:-1], "train.max_epochs=3"]
    done = subprocess.run(longer, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1
    last = f"{run / 'checkpoints' / 'last.pt'}"
    assert "cadenza train: error: no space left on device writing" in done.stderr, done.stderr
    assert "training goes on from its last checkpoint" in done.stderr and "Traceback" not in done.stderr
    assert load_checkpoint(last)["step"] == first  # the checkpoint before is whole
    assert _leftovers(small_disk) == []

    filler.unlink()
    done = subprocess.run(longer, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(last)["step"] == 3 * first
    steps = [r["step"] for r in read_metrics(run / "metrics.csv") if r["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 3 * first  # no step twice, none missing at the end
