"""PNG plots people would rather look at than read: waveforms, spectrograms, piano rolls.

Each ``plot_*`` function draws on a matplotlib ``Axes`` (made if not given) and returns it;
``save_figure`` writes a PNG atomically. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _axes(ax: Any, figsize: tuple[float, float] = (10, 3)) -> Any:
    if ax is not None:
        return ax
    return _plt().subplots(figsize=figsize)[1]


def new_axes(n_rows: int = 1, *, height: float = 3.0) -> list[Any]:
    """``n_rows`` axes stacked in one new figure, sharing the time axis."""
    fig, axes = _plt().subplots(n_rows, 1, figsize=(10, height * n_rows), squeeze=False, sharex=True)
    return list(axes[:, 0])


def close_figure(fig: Any) -> None:
    """Free a figure that will not be saved."""
    _plt().close(fig)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (PNG) through a temporary file, close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _plt().close(fig)
    return path


def plot_waveform(y: np.ndarray, *, sr: int, ax: Any = None, title: str = "Waveform") -> Any:
    """Samples against time; long signals are drawn as a min/max envelope per pixel column.

    Examples
    --------
    >>> import numpy as np
    >>> ax = plot_waveform(np.sin(np.linspace(0, 100, 16000)), sr=16000)
    """
    ax = _axes(ax)
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    n_cols = 2000
    if y.size > 4 * n_cols:
        hop = y.size // n_cols
        blocks = y[: hop * n_cols].reshape(n_cols, hop)
        t = (np.arange(n_cols) + 0.5) * hop / sr
        ax.fill_between(t, blocks.min(axis=1), blocks.max(axis=1), color="tab:blue", linewidth=0)
    else:
        ax.plot(np.arange(y.size) / sr, y, color="tab:blue", linewidth=0.6)
    ax.set(xlabel="time (s)", ylabel="amplitude", title=title, xlim=(0, max(y.size / sr, 1e-3)))
    ax.set_ylim(-1.05, 1.05) if np.abs(y).max(initial=0) <= 1 else None
    return ax


def plot_spectrogram(
    y: np.ndarray,
    *,
    sr: int,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 128,
    ax: Any = None,
    title: str = "Log-mel spectrogram",
) -> Any:
    """A log-mel spectrogram in dB (80 dB range below the peak) with a colour bar."""
    from cadenza.representations import make_representation

    mel = make_representation("mel", sample_rate=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    db = mel.encode(np.asarray(y, dtype=np.float32))
    return plot_db_frames(db, frame_rate=sr / hop_length, ax=ax, title=title, ylabel="mel band")


def plot_db_frames(
    frames: np.ndarray,
    *,
    frame_rate: float,
    is_db: bool = True,
    ax: Any = None,
    title: str = "",
    ylabel: str = "feature",
) -> Any:
    """Any ``(n_frames, n_features)`` matrix as an image, time on x; dB values show 80 dB below the peak."""
    ax = _axes(ax)
    frames = np.asarray(frames, dtype=np.float32)
    vmax = float(frames.max(initial=0.0))
    im = ax.imshow(
        frames.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, len(frames) / frame_rate, 0, frames.shape[1]),
        vmin=vmax - 80 if is_db else None,
        vmax=vmax,
    )
    ax.figure.colorbar(im, ax=ax, pad=0.01, label="dB" if is_db else "")
    ax.set(xlabel="time (s)", ylabel=ylabel, title=title)
    return ax


def plot_pianoroll(
    roll: np.ndarray,
    *,
    resolution: int,
    lowest_pitch: int = 0,
    beats_per_bar: int = 4,
    ax: Any = None,
    title: str = "Piano roll",
) -> Any:
    """A many-hot roll ``(n_steps, n_pitches)``: pitch on y (MIDI numbers), beats on x, bar lines."""
    ax = _axes(ax)
    roll = np.asarray(roll)
    n_steps, n_pitches = roll.shape
    active = np.flatnonzero(roll.any(axis=0))
    lo, hi = (active.min(), active.max()) if active.size else (0, n_pitches - 1)
    lo, hi = max(lo - 2, 0), min(hi + 2, n_pitches - 1)
    ax.imshow(
        roll[:, lo : hi + 1].T > 0,
        origin="lower",
        aspect="auto",
        cmap="Greys",
        interpolation="nearest",
        extent=(0, n_steps / resolution, lowest_pitch + lo - 0.5, lowest_pitch + hi + 0.5),
    )
    n_beats = n_steps / resolution
    for bar in np.arange(0, n_beats + 1e-9, beats_per_bar):
        ax.axvline(bar, color="tab:red", linewidth=0.4, alpha=0.6)
    ax.set(xlabel="beat", ylabel="MIDI pitch", title=title)
    return ax


def plot_piece(
    path: str | os.PathLike,
    *,
    y: np.ndarray | None = None,
    sr: int | None = None,
    roll: np.ndarray | None = None,
    resolution: int = 24,
    lowest_pitch: int = 0,
    title: str = "",
) -> Path:
    """One PNG with the waveform, the spectrogram and the piano roll of a piece (those given)."""
    panels = (2 if y is not None else 0) + (1 if roll is not None else 0)
    if panels == 0:
        raise ValueError("plot_piece needs audio (y, sr) or a piano roll")
    fig, axes = _plt().subplots(panels, 1, figsize=(11, 2.8 * panels), squeeze=False)
    axes = list(axes[:, 0])
    if y is not None:
        if sr is None:
            raise ValueError("plot_piece needs sr with y")
        plot_waveform(y, sr=sr, ax=axes.pop(0), title=f"{title} waveform".strip())
        plot_spectrogram(y, sr=sr, ax=axes.pop(0), title=f"{title} log-mel spectrogram".strip())
    if roll is not None:
        plot_pianoroll(
            roll,
            resolution=resolution,
            lowest_pitch=lowest_pitch,
            ax=axes.pop(0),
            title=f"{title} piano roll".strip(),
        )
    fig.tight_layout()
    return save_figure(fig, path)


def plot_store_item(store: Any, item_id: str | None = None, out: str | os.PathLike | None = None) -> Path:
    """Plot one prepared file of a feature store from its frames (decoded back for audio stores)."""
    from cadenza.data.store import FeatureStore

    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    ids = store.ids("train") or store.ids()
    item_id = item_id or ids[0]
    frames = np.asarray(store.load(item_id))
    rep = store.representation
    out = Path(out) if out else store.path / "plots" / f"{item_id}.png"
    ax = rep.picture(frames, title=item_id)  # a piano roll, a mel or MFCC image; None: draw the sound
    if ax is not None:
        ax.figure.set_size_inches(11, 3.5)
        return save_figure(ax.figure, out)
    y, sr = rep.to_audio(frames)
    return plot_piece(out, y=y, sr=sr, title=item_id)
