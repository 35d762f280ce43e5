"""Windowed datasets over a feature store: indexing, targets, normalisation, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cadenza.data import AudioWindows, SequenceWindows, create_store
from cadenza.errors import ParameterError, StoreError
from cadenza.representations import make_representation


def _fft_store(tmp_path, lengths=(50, 7, 95), n_features=8):
    rep = make_representation("fft", sample_rate=8000, block_size=n_features // 2)
    items = {}
    for i, n in enumerate(lengths):
        frames = np.arange(n * n_features, dtype=np.float32).reshape(n, n_features) + 1000 * i
        items[f"f{i}"] = (frames, "train", {"composer": ["bach", "mozart"][i % 2]})
    items["v0"] = (np.ones((45, n_features), np.float32), "valid", {"composer": "bach"})
    return create_store(tmp_path / "store", rep, items)


def test_sequence_windows_count_targets_and_file_boundaries(tmp_path):
    store = _fft_store(tmp_path)
    ds = SequenceWindows(store, "train", seq_len=10, hop=5, normalization="none")
    # A file of n frames gives (n - 11) // 5 + 1 windows; the 7-frame file gives none.
    assert len(ds) == (50 - 11) // 5 + 1 + (95 - 11) // 5 + 1
    assert ds.n_too_short == 1
    first = ds[0]
    np.testing.assert_array_equal(first["x"].numpy(), store.load("f0")[0:10])
    np.testing.assert_array_equal(first["y"].numpy(), store.load("f0")[1:11])
    # The first window of the third file follows the last window of the first.
    n0 = (50 - 11) // 5 + 1
    np.testing.assert_array_equal(ds[n0]["x"].numpy(), store.load("f2")[0:10])
    np.testing.assert_array_equal(ds[n0 + 3]["y"].numpy(), store.load("f2")[16:26])
    np.testing.assert_array_equal(ds[-1]["x"].numpy(), store.load("f2")[80:90])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_sequence_windows_normalise_with_training_statistics(tmp_path):
    store = _fft_store(tmp_path)
    ds = SequenceWindows(store, "valid", seq_len=10, normalization="standard")
    x = ds[0]["x"].numpy()
    train = np.concatenate([store.load(i) for i in store.ids("train")]).astype(np.float64)
    expected = (1.0 - train.mean(axis=0)) / train.std(axis=0, ddof=1)
    np.testing.assert_allclose(x[0], expected, rtol=1e-5)
    np.testing.assert_allclose(ds.normalizer.invert(ds[0]["x"]).numpy(), np.ones((10, 8)), atol=1e-3)


def test_labels_are_integer_classes(tmp_path):
    store = _fft_store(tmp_path)
    ds = SequenceWindows(store, "train", seq_len=10, label_key="composer", normalization="none")
    assert ds.labels == ["bach", "mozart"]
    assert ds[0]["label"].item() == 0  # f0 is bach
    assert ds[len(ds) - 1]["label"].item() == 0  # f2 is bach too


def test_empty_split_and_bad_sizes_fail_clearly(tmp_path):
    store = _fft_store(tmp_path)
    ds = SequenceWindows(store, "test", seq_len=10)
    assert len(ds) == 0
    with pytest.raises(StoreError, match="no window"):
        ds.require_nonempty()
    with pytest.raises(ParameterError):
        SequenceWindows(store, "train", seq_len=0)


def test_pickles_small_and_works_with_worker_processes(tmp_path):
    rep = make_representation("fft", sample_rate=8000, block_size=4)
    big = np.random.default_rng(0).standard_normal((200_000, 8)).astype(np.float32)
    store = create_store(tmp_path / "big", rep, {"a": (big, "train", {}), "b": (big[:500], "train", {})})
    ds = SequenceWindows(store, "train", seq_len=40, normalization="none")
    _ = ds[0]  # opens a memory map, which must not travel with the pickle
    blob = pickle.dumps(ds)
    assert len(blob) < 64_000  # indexes files, not frames: 6.4 MB of frames stay on disk
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone[123]["x"].numpy(), ds[123]["x"].numpy())
    loader = DataLoader(ds, batch_size=64, num_workers=2, shuffle=False)
    batch = next(iter(loader))
    np.testing.assert_array_equal(batch["y"][5].numpy(), big[5 * 40 + 1 : 5 * 40 + 41])


def _waveform_store(tmp_path, encoding="float"):
    rep = make_representation("waveform", sample_rate=16000, encoding=encoding)
    y = (np.arange(1000, dtype=np.float32) / 1000.0)[:, None] - 0.5
    frames = rep.encode(y[:, 0]) if encoding == "mulaw" else y
    return create_store(tmp_path / encoding, rep, {"a": (frames, "train", {"composer": "mozart"})})


def test_audio_windows_split_scheme(tmp_path):
    store = _waveform_store(tmp_path)
    s = store.load("a")[:, 0]
    ds = AudioWindows(store, "train", scheme="split")
    assert len(ds) == (1000 - 256) // 128 + 1
    item = ds[2]
    np.testing.assert_array_equal(item["x"].numpy(), s[256:384])
    np.testing.assert_array_equal(item["y"].numpy(), s[384:512])


def test_audio_windows_shift_scheme(tmp_path):
    store = _waveform_store(tmp_path)
    s = store.load("a")[:, 0]
    ds = AudioWindows(store, "train", scheme="shift")
    assert len(ds) == (1000 - 129) // 64 + 1
    item = ds[3]
    np.testing.assert_array_equal(item["x"].numpy(), s[192:320])
    np.testing.assert_array_equal(item["y"].numpy(), s[193:321])


def test_audio_windows_mu_law_gives_classes(tmp_path):
    store = _waveform_store(tmp_path, "mulaw")
    item = AudioWindows(store, "train", scheme="shift", label_key="composer")[0]
    assert item["x"].dtype == torch.int64 and item["x"].max() <= 255 and item["x"].min() >= 0
    assert item["label"].item() == 0


def test_audio_windows_refuse_frame_stores(tmp_path):
    with pytest.raises(StoreError, match="waveform store"):
        AudioWindows(_fft_store(tmp_path), "train")


@pytest.mark.parametrize("encoding", ["float", "mulaw"])
def test_audio_windows_skip_quiet_leaves_out_mostly_silent_targets(tmp_path, encoding):
    # 0.5 s of a -20 dBFS tone, 0.5 s of digital silence, 0.5 s of tone again, at 8 kHz; windows of
    # 800 targets (ten 10 ms frames) every 400 samples: those whose target is more than half silence go.
    rep = make_representation("waveform", sample_rate=8000, encoding=encoding)
    t = np.arange(4000) / 8000
    tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = np.concatenate([tone, np.zeros(4000, np.float32), tone])
    frames = rep.encode(y) if encoding == "mulaw" else y[:, None]
    store = create_store(tmp_path / encoding, rep, {"a": (frames, "train", {})})
    kw = {"n_input": 800, "n_output": 800, "shift": 1, "hop": 400}
    every = AudioWindows(store, "train", **kw)
    kept = AudioWindows(store, "train", skip_quiet=True, **kw)
    starts = np.arange(len(every)) * 400 + 1  # each target's first sample
    quiet = ((starts >= 4000 - 400) & (starts + 800 <= 8000 + 400)).sum()  # > 5 of 10 frames silent
    assert every.n_quiet == 0 and kept.n_quiet == quiet > 0
    assert len(kept) == len(every) - quiet
    for i in range(len(kept)):  # every kept target is mostly sound, and the items follow the kept order
        target = kept[i]["y"].numpy().astype(np.float64)
        target = rep.decode(target[:, None]).reshape(-1) if encoding == "mulaw" else target
        loud = (target[:800].reshape(10, 80) ** 2).mean(axis=1) >= 1e-5
        assert loud.sum() >= 5
    assert kept[0]["x"].shape == every[0]["x"].shape
