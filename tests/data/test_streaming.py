"""Training streams from the store: its memory does not grow with the corpus, nor with the workers.

Each training run is a child process (``cadenza train``) whose peak resident memory
(``ru_maxrss`` of that process alone, from ``wait4``) is compared across runs over stores of
1x and 4x the corpus (the same music, copied under other ids: 4x the bytes read in an epoch),
and with ``data.num_workers`` 0 and 2. Shards of 200 MB are read whole in an epoch: a memory
map would leave all of its pages resident in the process; ``os.pread`` leaves them to the
page cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cadenza.data.store import create_store
from cadenza.data.windows import SequenceWindows, ShardReader
from cadenza.representations import make_representation
from cadenza.training.data import EpochBatchSampler

N_MELS = 128
FRAMES_PER_FILE = 25_000  # 12.8 MB of float32 frames per file


def _store(path: Path, n_files: int) -> Path:
    rep = make_representation("mel", n_mels=N_MELS)
    rng = np.random.default_rng(0)
    base = rng.normal(-40, 10, size=(FRAMES_PER_FILE, N_MELS)).astype(np.float32)
    items = {f"f{i:03d}": (base + i, "valid" if i == 0 else "train", {}) for i in range(n_files)}
    create_store(path, rep, items)
    return path


def _peak_rss_mb(store: Path, run: Path, workers: int) -> float:
    """Peak RSS (MB) of a ``cadenza train`` process over one epoch of ``store``."""
    argv = [sys.executable, "-m", "cadenza", "train", "mel_rnn-tiny", "--data", str(store), "--run", str(run),
            "model.hidden_size=8", "model.n_layers=1", "data.seq_len=64", "data.hop=64", "data.batch_size=64",
            f"data.num_workers={workers}", "train.max_epochs=1", "train.max_steps=0", "train.progress=false",
            "train.tensorboard=false", "train.valid_every=1", "train.save_every=1"]  # fmt: skip
    env = {**os.environ, "CADENZA_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert os.waitstatus_to_exitcode(status) == 0, err[-2000:]
    return usage.ru_maxrss / 1024.0


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("streaming")
    return _store(root / "small", 4), _store(root / "large", 16)


def test_peak_memory_does_not_grow_with_the_corpus_or_the_workers(
    stores: tuple[Path, Path], tmp_path: Path
) -> None:
    small, large = stores
    rss_small = _peak_rss_mb(small, tmp_path / "a", 0)
    rss_large = _peak_rss_mb(large, tmp_path / "b", 0)
    rss_workers = _peak_rss_mb(large, tmp_path / "c", 2)
    corpus_mb = 15 * FRAMES_PER_FILE * N_MELS * 4 / 2**20  # the large store's training frames: 183 MB
    # a memory-mapped epoch would add ~140 MB from small to large; allow noise of 10% of the small run
    assert rss_large <= rss_small * 1.10, (rss_small, rss_large, corpus_mb)
    assert abs(rss_workers - rss_large) <= 0.10 * rss_large, (rss_large, rss_workers)


def test_windows_keep_numpy_indices_and_read_what_a_memory_map_reads(stores: tuple[Path, Path]) -> None:
    small, _ = stores
    ds = SequenceWindows(small, "train", seq_len=64, hop=50)
    assert isinstance(ds.ids, np.ndarray) and isinstance(ds._cum, np.ndarray)
    for index in (0, 7, len(ds) - 1):
        f, start = ds.locate(index)
        mapped = np.load(ds.store.shard_path(str(ds.ids[f])), mmap_mode="r")[start : start + 65]
        assert np.array_equal(ds.window(index)[0], mapped)
    reader = ShardReader(ds.store.shard_path(str(ds.ids[0])))
    assert reader.read(FRAMES_PER_FILE - 2, FRAMES_PER_FILE + 5).shape == (2, N_MELS)  # clipped at the end
    reader.close()


@pytest.mark.parametrize("n_items", [50, 63, 64, 65, 1001])
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_every_rank_gets_the_same_number_of_training_batches(n_items: int, world_size: int) -> None:
    batch = 12
    ranks = [
        EpochBatchSampler(n_items, batch, seed=1, rank=r, world_size=world_size) for r in range(world_size)
    ]
    for epoch in (0, 3):
        seen = []
        for s in ranks:
            s.set_epoch(epoch)
            seen.append([len(b) for b in s])
        assert all(sizes == seen[0] for sizes in seen) and set(seen[0]) <= {batch // world_size}
        assert len(seen[0]) == n_items // batch
