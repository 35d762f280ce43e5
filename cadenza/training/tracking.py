"""What a run shows and leaves behind while it trains: progress, metrics, plots and samples.

:class:`Tracker` holds, for one run directory, the progress display (:func:`cadenza.progress.progress`:
a bar on a terminal, plain lines in a log), ``metrics.csv`` and TensorBoard
(:mod:`cadenza.training.logs`), ``plots/loss.png``, and the samples written every
``train.sample_every`` epochs into ``samples/``. Only the main process writes: on the others
every method does nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cadenza.errors import CadenzaError
from cadenza.training.logs import Board, MetricsLog, loss_figure, read_metrics, save_figure

log = logging.getLogger(__name__)


class Tracker:
    """Progress, ``metrics.csv``, TensorBoard, ``plots/`` and ``samples/`` of one run.

    Parameters
    ----------
    run_dir : path
        The run directory.
    title : str
        Shown above the loss plot.
    is_main : bool
        Whether this process writes (rank 0).
    """

    def __init__(self, run_dir: str | os.PathLike, *, title: str, is_main: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.title = title
        self.is_main = is_main
        self.metrics_path = self.run_dir / "metrics.csv"
        self.metrics: MetricsLog | None = None
        self.board: Board | None = None
        self.bar: Any = None

    def clear(self) -> None:
        """Delete what an earlier run left: checkpoints, metrics, events, plots and samples."""
        for sub in ("checkpoints", "plots", "samples"):
            shutil.rmtree(self.run_dir / sub, ignore_errors=True)
        for path in [self.metrics_path, *self.run_dir.glob("events.out.tfevents.*")]:
            path.unlink(missing_ok=True)

    def open(
        self, *, step: int, total_steps: int | None, desc: str, tensorboard: bool, progress: bool
    ) -> None:
        """Open ``metrics.csv`` (rows after ``step`` dropped), TensorBoard and the progress display."""
        if not self.is_main:
            return
        from cadenza.progress import progress as make_progress

        self.metrics = MetricsLog(self.metrics_path, keep_until_step=step)
        self.board = Board(self.run_dir, enabled=tensorboard, purge_step=step)
        if progress:
            self.bar = make_progress(total=total_steps, initial=step, unit="step", desc=desc)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.board is not None:
            self.board.close()
            self.board = None

    def flush(self) -> None:
        if self.board is not None:
            self.board.flush()

    # ------------------------------------------------------------------ while training
    def new_epoch(self, desc: str) -> None:
        if self.bar is not None:
            self.bar.set_description(desc, refresh=False)

    def advance(self) -> None:
        """One training step done."""
        if self.bar is not None:
            self.bar.update(1)

    def train_row(self, row: dict[str, Any], shown: dict[str, str]) -> None:
        """A ``split=train`` row to ``metrics.csv`` and TensorBoard; ``shown`` beside the progress."""
        if self.metrics is not None:
            self.metrics.write(row)
        if self.board is not None:
            scalars = {k: v for k, v in row.items() if k not in ("epoch", "step", "split")}
            self.board.scalars(scalars, row["step"], "train")
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)

    def valid_row(self, row: dict[str, Any]) -> None:
        """A ``split=valid`` row to ``metrics.csv`` and TensorBoard."""
        if self.metrics is not None:
            self.metrics.write(row)
        if self.board is not None:
            scalars = {k: v for k, v in row.items() if k not in ("epoch", "step", "split")}
            self.board.scalars(scalars, row["step"], "valid")

    def nonfinite(self, n_nonfinite: int, step: int) -> None:
        if self.board is not None:
            self.board.scalars({"nonfinite": float(n_nonfinite)}, step, "train")

    def plot(self, names: list[str], step: int) -> None:
        """``plots/loss.png`` of the losses ``names`` from ``metrics.csv`` (also to TensorBoard)."""
        if not self.is_main:
            return
        rows = read_metrics(self.metrics_path)
        names = [n for n in names if any(n in r for r in rows)]
        fig = loss_figure(rows, names, title=self.title)
        save_figure(fig, self.run_dir / "plots" / "loss.png")
        if self.board is not None:
            self.board.figure("loss", fig, step)

    def write_sample(self, gen: Any, *, epoch: int, step: int, seconds: float, seed: int) -> list[Path]:
        """One sample of ``seconds`` from ``gen`` (a :class:`cadenza.generation.Generator`) into
        ``samples/epochNNNNN.*``, through its representation; its sound and frames to TensorBoard."""
        from cadenza.generation import synthesize

        if not self.is_main:
            return []
        try:
            frames, _ = synthesize(gen, n=1, seconds=seconds, seed=seed)
        except CadenzaError as exc:
            log.warning("no sample at epoch %d: %s", epoch, exc)
            return []
        rep, audio = gen.representation, None
        if self.board is not None:
            try:
                audio = rep.to_audio(frames[0], seconds=seconds)
            except (CadenzaError, ImportError) as exc:
                log.warning("no sound of the sample of epoch %d for TensorBoard: %s", epoch, exc)
        out = self.run_dir / "samples"
        out.mkdir(parents=True, exist_ok=True)
        files = rep.write(frames[0], out / f"epoch{epoch:05d}", seconds=seconds, audio=audio)
        if self.board is not None and audio is not None:
            y, sr = audio
            self.board.audio("sample", y, int(sr), step)
            self.board.figure("sample_frames", frames_figure(frames[0], rep.name), step)
        log.debug("wrote %s", files)
        return [Path(f) for f in files]


def frames_figure(frames: np.ndarray, name: str) -> Any:
    """Magnitudes of generated frames ``(T, F)`` in dB, as a figure for TensorBoard."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    mags = 20 * np.log10(np.abs(frames.T) + 1e-6)
    ax.imshow(mags, origin="lower", aspect="auto", cmap="magma", vmin=mags.max() - 80, vmax=mags.max())
    ax.set(xlabel="frame", ylabel="feature", title=f"generated {name} frames (dB)")
    fig.tight_layout()
    return fig


def advise_allocator(model: Any, device: Any) -> None:
    """Say once when a large CPU model trains without tcmalloc (see :mod:`cadenza._malloc`)."""
    from cadenza import _malloc

    n_params = sum(p.numel() for p in model.parameters())
    if device.type != "cpu" or n_params < 5_000_000:
        return
    if _malloc.wanted() and _malloc.active_allocator() != "tcmalloc":
        how = (
            "run it as `cadenza train` (the command line re-runs itself under tcmalloc)"
            if _malloc.find_tcmalloc()
            else "apt-get install libtcmalloc-minimal4"
        )
        log.info(
            "training %.0f M parameters on the CPU with the system allocator, which page-faults every "
            "large gradient in again at each step; for faster steps, %s",
            n_params / 1e6,
            how,
        )
