"""Piano-roll phrases: shapes, bar alignment, resolution reduction and transposition, on real chorales."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cadenza.data import FeatureStore, prepare_corpus
from cadenza.data.phrases import PianorollPhrases, reduce_resolution, transpose_roll
from cadenza.data.store import create_store
from cadenza.errors import ParameterError, StoreError
from cadenza.representations import make_representation

torch.set_num_threads(1)

#: 8 steps per beat keeps the chorales' eighth notes and sixteenths exact and the store small.
RES = 8


@pytest.fixture(scope="module")
def chorales(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    out = tmp_path_factory.mktemp("phrases") / "bach-rolls"
    prepare_corpus(
        "music21:chorales",
        out,
        representation="pianoroll",
        rep_params={"lowest_pitch": 24, "n_pitches": 84, "resolution": RES},
        max_files=3,
        split=(1.0, 0.0, 0.0),
        progress=False,
    )
    return FeatureStore(out)


def test_phrases_are_whole_bars_starting_on_bar_lines(chorales: FeatureStore) -> None:
    ds = PianorollPhrases(chorales, "train", n_bars=4, hop_bars=1)
    spb = RES * 4
    expected = sum(int(r["n_frames"]) // spb - 3 for r in chorales.records_of("train"))
    assert len(ds) == expected and ds.seq_len == 4 * spb
    item = ds[5]["x"]
    assert item.shape == (4 * spb, 84) and item.dtype == torch.float32
    f, start = ds.locate(5)
    roll = np.asarray(chorales.load(ds.ids[f]))
    assert start % spb == 0 and np.array_equal(item.numpy(), roll[start : start + 4 * spb])
    assert ds.normalizer.kind == "none"
    assert len(PianorollPhrases(chorales, "train", n_bars=4, hop_bars=4)) < len(ds)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[5]["x"], item)


def test_resolution_reduction_keeps_notes_and_repeated_notes_apart(chorales: FeatureStore) -> None:
    ds = PianorollPhrases(chorales, "train", n_bars=2, resolution=RES // 2)
    assert ds.seq_len == 2 * 4 * RES // 2 and ds[0]["x"].shape == (ds.seq_len, 84)
    full = PianorollPhrases(chorales, "train", n_bars=2)
    # Every note of the chorales survives (only repeated sixteenths of one pitch could merge).
    n_reduced = sum(_n_notes(ds[i]["x"].numpy()) for i in range(len(ds)))
    n_full = sum(_n_notes(full[i]["x"].numpy()) for i in range(len(full)))
    assert 0.99 * n_full <= n_reduced <= n_full
    roll = np.zeros((12, 3), np.uint8)
    roll[0:6, 0] = 1  # a held note, then the same pitch again after a one-step gap
    roll[7:11, 0] = 1
    roll[1, 1] = 1  # a note shorter than the factor
    roll[2:12, 2] = 1  # a note starting mid-group
    out = reduce_resolution(roll, 3)
    assert out[:, 0].tolist() == [1, 0, 1, 1]  # two notes, not one
    assert out[:, 1].tolist() == [1, 0, 0, 0]  # kept
    assert out[:, 2].tolist() == [1, 1, 1, 1]
    assert reduce_resolution(roll, 1).tolist() == roll.tolist()
    with pytest.raises(ParameterError):
        reduce_resolution(roll, 5)
    with pytest.raises(ParameterError):
        PianorollPhrases(chorales, "train", resolution=3)


def _n_notes(roll: np.ndarray) -> int:
    on = roll > 0
    return int(on[0].sum() + (on[1:] & ~on[:-1]).sum())


def _store(path: Path) -> FeatureStore:
    rep = make_representation("pianoroll", resolution=2, lowest_pitch=60, n_pitches=12)
    roll = np.zeros((16, 12), np.uint8)
    roll[:, 3] = 1  # pitch 63 held for two bars
    roll[10:14, 8] = 1  # and a second pitch in the second bar
    create_store(path, rep, {"a": (roll, "train", {}), "b": (roll, "valid", {})})
    return FeatureStore(path)


def test_transposition_is_random_in_range_and_training_only(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    ds = PianorollPhrases(store, "train", n_bars=1, transpose=5)
    torch.manual_seed(0)
    shifts = set()
    for _ in range(60):
        x = ds[0]["x"].numpy()
        pitches = np.flatnonzero(x.any(axis=0))
        assert x.sum() == 8 and len(pitches) == 1  # the first bar holds pitch 63 only
        shifts.add(int(pitches[0]) - 3)
    assert shifts == set(range(-3, 6))  # -5..5, clipped to keep the note in 0..11
    torch.manual_seed(1)
    a = [ds[1]["x"] for _ in range(5)]
    torch.manual_seed(1)
    assert all(torch.equal(x, y) for x, y in zip(a, [ds[1]["x"] for _ in range(5)]))
    valid = PianorollPhrases(store, "valid", n_bars=1, transpose=5)
    assert all(torch.equal(valid[0]["x"], valid[0]["x"]) for _ in range(5)) and valid.transpose == 0
    assert transpose_roll(np.eye(3, dtype=np.uint8), -1).tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]


def test_a_store_of_other_frames_is_refused(tmp_path: Path) -> None:
    rep = make_representation("fft", sample_rate=8000, block_size=64)
    create_store(tmp_path / "f", rep, {"a": (np.zeros((10, 128), np.float32), "train", {})})
    with pytest.raises(StoreError, match="pianoroll"):
        PianorollPhrases(tmp_path / "f", "train")
