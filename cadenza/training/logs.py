"""What a run leaves to look at: ``metrics.csv``, TensorBoard events and ``plots/loss.png``.

``metrics.csv`` has one row per ``train.log_every`` training steps (``split`` = ``train``,
losses averaged over those steps) and one per validation (``split`` = ``valid``). Floats are
written with ``repr``, so values read back are the exact numbers the trainer saw; a resumed
run first drops the rows written after its checkpoint.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cadenza.data.store import atomic_write_text

log = logging.getLogger(__name__)

BASE_COLUMNS = ("epoch", "step", "split")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv``: ``epoch`` and ``step`` as int, other numbers as float. A row
    cut short before its step (a kill, a full disk, in the middle of a write) is left out."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            try:
                int(raw.get("epoch") or ""), int(raw.get("step") or "")
            except ValueError:
                continue
            for k, v in raw.items():
                if k is None:
                    continue
                if k in ("epoch", "step"):
                    row[k] = int(v)
                elif k == "split" or v in ("", None):
                    row[k] = v if v != "" else None
                else:
                    try:
                        row[k] = float(v)
                    except ValueError:
                        row[k] = v
            rows.append(row)
    return rows


def _drop_cut_row(path: Path) -> None:
    """Take off a last row cut short by a kill or a full disk: the next row would be glued onto it."""
    try:
        data = path.read_bytes()
    except OSError:
        return
    if data and not data.endswith(b"\n"):
        atomic_write_text(path, data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace"))


class MetricsLog:
    """Appends rows to ``metrics.csv``; a new column rewrites the file once with a wider header."""

    def __init__(self, path: str | os.PathLike, *, keep_until_step: int | None = None) -> None:
        self.path = Path(path)
        self.columns: list[str] = []
        _drop_cut_row(self.path)
        if self.path.exists():
            rows = read_metrics(self.path)
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            self.columns = list(header)
            if keep_until_step is not None:
                kept = [r for r in rows if r["step"] <= keep_until_step]
                if len(kept) != len(rows):
                    self._rewrite(kept)

    def _rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in self.columns])
        atomic_write_text(self.path, buf.getvalue())

    def write(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.columns]
        if new or not self.path.exists():
            old = read_metrics(self.path) if self.path.exists() else []
            self.columns = (
                [c for c in BASE_COLUMNS if c not in self.columns]
                + self.columns
                + [k for k in new if k not in BASE_COLUMNS]
            )
            self._rewrite([*old, row])
            return
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerow([_cell(row.get(c)) for c in self.columns])


class Board:
    """TensorBoard scalars, audio and figures; does nothing when disabled."""

    def __init__(
        self, log_dir: str | os.PathLike, *, enabled: bool = True, purge_step: int | None = None
    ) -> None:
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step or None)

    def scalars(self, values: dict[str, float], step: int, prefix: str) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def audio(self, tag: str, y: Any, sr: int, step: int) -> None:
        if self.writer is not None:
            import torch

            self.writer.add_audio(
                tag, torch.as_tensor(y).clamp(-1, 1).reshape(1, -1), step, sample_rate=int(sr)
            )

    def figure(self, tag: str, fig: Any, step: int) -> None:
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step, close=False)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def loss_figure(rows: list[dict[str, Any]], names: list[str], title: str = "") -> Any:
    """A matplotlib Figure of training and validation losses against the step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    positive = True
    for split, style in (("train", "-"), ("valid", "o-")):
        for name in names:
            pts = [
                (r["step"], r.get(name)) for r in rows if r.get("split") == split and r.get(name) is not None
            ]
            pts = [(s, v) for s, v in pts if isinstance(v, float) and math.isfinite(v)]
            if not pts:
                continue
            positive = positive and all(v > 0 for _, v in pts)
            xs, ys = zip(*pts)
            ax.plot(xs, ys, style, label=f"{split} {name}", markersize=3, linewidth=1.2)
    if positive and ax.lines:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    if ax.lines:
        ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write a Figure to a PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
