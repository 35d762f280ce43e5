"""Paper 004's Table 1: the training data's row on hand-built rolls with known EB, UPC and QN.

Generated rows are covered end to end by ``tests/models/test_gan.py`` (train -> evaluate).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cadenza.cli import main
from cadenza.data.store import create_store
from cadenza.errors import ParameterError
from cadenza.evaluation.table import PAPER_004_TABLE_1, TableRow, data_bars, format_table, table1, write_table
from cadenza.representations import make_representation

SPB = 8  # 2 steps per beat, 4 beats per bar


def _song() -> np.ndarray:
    """8 bars: 4 of a held C major chord, an empty bar, 4 one-step Ds, two empty bars."""
    bars = np.zeros((8, SPB, 12), np.uint8)
    bars[:4, :, [0, 4, 7]] = 1  # UPC 3, every note 8 steps: QN 100
    bars[5, ::2, 2] = 1  # 4 notes of one step: UPC 1, QN 0
    return bars.reshape(-1, 12)


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    rep = make_representation("pianoroll", resolution=2, lowest_pitch=60, n_pitches=12)
    tail = np.zeros((3 * SPB, 12), np.uint8)  # 3 bars: no whole 4-bar phrase, left out
    tail[:, 0] = 1
    create_store(tmp_path / "rolls", rep, {"song": (_song(), "train", {}), "tail": (tail, "train", {})})
    return tmp_path / "rolls"


def test_training_row_has_the_known_values(store: Path) -> None:
    bars = data_bars(store, max_bars=None)
    assert bars.shape == (8, SPB, 12)  # the 3-bar file has no whole phrase
    (row,) = table1([], data=store)
    assert row.name == "Training data" and row.n_bars == 8
    assert row.metrics["empty_bar_rate"] == pytest.approx(100 * 3 / 8)  # bars 4, 6, 7
    assert row.metrics["used_pitch_classes"] == pytest.approx((3 + 3 + 3 + 3 + 1) / 5)
    assert row.metrics["qualified_note_rate"] == pytest.approx((100 * 4 + 0) / 5)


def test_max_bars_draws_whole_phrases_reproducibly(store: Path) -> None:
    a = data_bars(store, max_bars=4, seed=3)
    assert a.shape == (4, SPB, 12) and np.array_equal(a, data_bars(store, max_bars=4, seed=3))
    song = _song().reshape(8, SPB, 12)
    assert np.array_equal(a, song[:4]) or np.array_equal(a, song[4:])


def test_table_files_and_printout(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = table1([], data=store)
    text = format_table(rows, with_paper=True)
    assert text.splitlines()[0] == "| | EB (%) | UPC | QN (%) | bars |"
    assert "| Training data | 37.50 | 2.60 | 80.00 | 8 |" in text
    assert f"| paper 004: CNN-LSTM model | {PAPER_004_TABLE_1['CNN-LSTM model'][0]:.2f} |" in text
    assert "polyphony" in format_table(rows, columns="all")
    paths = write_table(rows, tmp_path / "out")
    assert [p.name for p in paths] == ["table1.md", "table1.csv", "table1.json"]
    with open(paths[1], newline="") as f:
        (record,) = list(csv.DictReader(f))
    assert float(record["empty_bar_rate"]) == pytest.approx(37.5) and record["n_bars"] == "8"
    payload = json.loads(paths[2].read_text())
    assert payload["rows"][0]["metrics"]["used_pitch_classes"] == pytest.approx(2.6)
    assert payload["paper_004"]["Training data"]["qualified_note_rate"] == 88.4
    nan_row = TableRow("silent", "x", 4, {"empty_bar_rate": 100.0, "used_pitch_classes": float("nan")})
    assert "| silent | 100.00 | n/a | n/a | 4 |" in format_table([nan_row])

    assert main(["evaluate", "--data", str(store), "--out", str(tmp_path / "cli")]) == 0
    assert "| Training data | 37.50 | 2.60 | 80.00 | 8 |" in capsys.readouterr().out
    assert (tmp_path / "cli" / "table1.md").is_file()


def test_a_store_of_audio_frames_is_refused(tmp_path: Path) -> None:
    rep = make_representation("fft", sample_rate=8000, block_size=64)
    create_store(tmp_path / "f", rep, {"a": (np.zeros((10, 128), np.float32), "train", {})})
    with pytest.raises(ParameterError, match="piano rolls"):
        table1([], data=tmp_path / "f")
    with pytest.raises(ParameterError, match="give runs"):
        table1([])


def test_fewer_bars_than_a_phrase_or_an_unusable_out_is_one_error(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bars in (0, 3):  # checked before any run is loaded: this one does not exist
        with pytest.raises(
            ParameterError, match=rf"--bars\) {bars}: Table 1 measures whole phrases of 4 bars"
        ):
            table1([tmp_path / "no-run"], data=store, n_bars=bars)
    for limit in (-1, 1):  # the limit, not the store, was short of a phrase
        with pytest.raises(ParameterError, match=rf"--data-bars\) {limit}: .* or 0 for every bar"):
            table1([], data=store, max_data_bars=limit)
    (tmp_path / "file").write_text("not a folder")
    assert main(["evaluate", "--data", str(store), "--out", str(tmp_path / "file")]) == 1
    assert "file is a file, not a folder for Table 1" in capsys.readouterr().err
