"""Plots are real PNGs with the content asked for."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.cli import main as cli
from cadenza.plots import plot_pianoroll, plot_piece, plot_waveform


def _png_size(path):
    import matplotlib.image as mpimg

    return mpimg.imread(path).shape


def test_plot_piece_writes_three_panels(tmp_path):
    sr = 8000
    t = np.arange(3 * sr) / sr
    y = 0.5 * np.sin(2 * np.pi * 440 * t)
    roll = np.zeros((96, 128), np.uint8)
    roll[0:24, 60] = 1
    roll[24:48, [64, 67]] = 1
    path = plot_piece(tmp_path / "p" / "piece.png", y=y, sr=sr, roll=roll, resolution=24, title="test")
    h, w, _ = _png_size(path)
    assert path.exists() and h > 2.5 * w / 11 * 2.8  # three stacked panels: taller than two
    assert not list(path.parent.glob("*.tmp*"))


def test_pianoroll_axes_are_beats_and_midi_pitches():
    roll = np.zeros((48, 84), np.uint8)
    roll[:, 36] = 1  # pitch 24 + 36 = 60
    ax = plot_pianoroll(roll, resolution=12, lowest_pitch=24)
    assert ax.get_xlim() == (0.0, 4.0)
    lo, hi = ax.get_ylim()
    assert lo < 60 < hi and hi - lo < 10


def test_long_waveforms_are_drawn_as_an_envelope():
    y = np.random.default_rng(0).uniform(-1, 1, 600_000)
    ax = plot_waveform(y, sr=16000)
    assert len(ax.lines) == 0 and len(ax.collections) == 1
    with pytest.raises(ValueError):
        plot_piece("x.png")


def test_doctor_reports_every_dependency(capsys):
    assert cli(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "soundfile", "fluidsynth", "soundfont", "gpu", "mp3 decoding"):
        assert name in out


def test_doctor_says_what_reads_aac_m4a_and_wma(capsys, monkeypatch):
    import shutil

    real_which = shutil.which
    monkeypatch.setattr(
        shutil,
        "which",
        lambda name, *a, **k: None if name in ("ffmpeg", "avconv") else real_which(name, *a, **k),
    )
    assert cli(["doctor"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "aac/m4a/wma" in line)
    assert line.startswith("--") and "not readable here" in line
    assert "apt-get install ffmpeg" in out
    monkeypatch.setattr(
        shutil,
        "which",
        lambda name, *a, **k: "/usr/bin/ffmpeg" if name == "ffmpeg" else real_which(name, *a, **k),
    )
    assert cli(["doctor"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "aac/m4a/wma" in line)
    assert line.startswith("ok") and "/usr/bin/ffmpeg" in line
