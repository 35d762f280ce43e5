"""The feature store: a folder of prepared features that training streams from.

Layout::

    OUT/
      meta.yaml          representation parameters, dtype, split seed and fractions, totals
      manifest.jsonl     one line per source file: id, path, status, reason, labels, split, n_frames...
      stats.npz          per-feature mean, std, min, max over the training split (float64)
      shards/<id>.npy    the frames of one file, (n_frames, n_features), read by memory map

Everything a run needs to turn its output back into sound (the representation's
parameters) lives in ``meta.yaml``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cadenza._fs import atomic_write
from cadenza.errors import StoreError
from cadenza.representations import Representation, representation_from_dict

SPLITS = ("train", "valid", "test")
FORMAT_VERSION = 1


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that a kill at any moment leaves the old or the new file (a
    failed write, a full disk, leaves the old one and no part of the new). A file name that is
    not UTF-8 (surrogates) is written as "caf\\udce9.wav"."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8", errors="backslashreplace")))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` through a temporary file and a rename (through ``write()``: a full disk keeps
    its errno, which numpy's ``tofile`` loses)."""
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def shard_problem(path: str | os.PathLike, n_frames: int, n_features: int, dtype: Any) -> str | None:
    """What is wrong with the shard at ``path`` for a file of ``n_frames`` frames, or None: gone,
    a header that is not an array's, another shape or type, or fewer (or more) bytes than its
    header says (a disk error, a copy cut short, a file written over by another program). Reads
    the header alone (a few hundred bytes).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.npy"
    >>> np.save(path, np.zeros((100, 8), np.float32))
    >>> shard_problem(path, 100, 8, "float32") is None
    True
    >>> with open(path, "r+b") as f:
    ...     _ = f.truncate(2000)
    >>> shard_problem(path, 100, 8, "float32")
    '2,000 bytes where its header says 3,328'
    """
    fmt = np.lib.format
    want_dtype = np.dtype(dtype)
    try:
        with open(path, "rb") as f:
            head = f.read(256)
            size = os.fstat(f.fileno()).st_size
            # The header numpy writes for such a shard, compared as text: parsing it costs 50 us a
            # shard (10 s for the Lakh corpus's 174,000 at each opening of its store).
            text = f"{{'descr': {fmt.dtype_to_descr(want_dtype)!r}, 'fortran_order': False, 'shape': ({int(n_frames)}, {int(n_features)}), }}"
            if head[:8] == b"\x93NUMPY\x01\x00" and len(head) >= 10:
                end = 10 + int.from_bytes(head[8:10], "little")
                if head[10:end].decode("latin1").rstrip() == text:
                    want = end + int(n_frames) * int(n_features) * want_dtype.itemsize
                    return None if size == want else f"{size:,} bytes where its header says {want:,}"
            f.seek(0)
            version = fmt.read_magic(f)
            shape, fortran, kind = (
                fmt.read_array_header_1_0(f) if version == (1, 0) else fmt.read_array_header_2_0(f)
            )
            header = f.tell()
    except FileNotFoundError:
        return "its shard is missing"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        return f"not an array's header ({exc})"
    if fortran or shape != (int(n_frames), int(n_features)) or kind != want_dtype:
        return f"it holds {kind} {shape} where {want_dtype} ({n_frames}, {n_features}) was prepared"
    want = header + int(np.prod(shape)) * kind.itemsize
    if size != want:
        return f"{size:,} bytes where its header says {want:,}"
    return None


class DamagedShardWarning(UserWarning):
    """Shards of a store that a job leaves out because they no longer hold what was prepared;
    ``cadenza prepare`` run again prepares them anew."""


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a ``manifest.jsonl``; a line cut short by a kill is ignored."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the last line of a killed run
    return records


class FeatureStore:
    """A prepared feature store, opened read-only.

    Parameters
    ----------
    path : str or Path
        The folder written by :func:`cadenza.data.prepare_corpus`.

    Examples
    --------
    >>> store = FeatureStore("data/bach-fft")              # doctest: +SKIP
    >>> store.representation.name, len(store.ids("train"))  # doctest: +SKIP
    ('fft', 346)
    >>> frames = store.load(store.ids("train")[0])          # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        meta_path = self.path / "meta.yaml"
        if not meta_path.exists():
            raise StoreError(
                f"{self.path} is not a feature store (no meta.yaml); "
                f"create one with `cadenza prepare SOURCE {self.path} --representation NAME`"
            )
        self.meta: dict[str, Any] = yaml.safe_load(meta_path.read_text()) or {}
        if not self.meta.get("complete", False):
            raise StoreError(
                f"{self.path} was not prepared to the end; run the same `cadenza prepare` command "
                "again to finish it"
            )
        self.representation: Representation = representation_from_dict(self.meta["representation"])
        records = [r for r in read_manifest(self.path / "manifest.jsonl") if r.get("status") == "ok"]
        #: Files whose shard no longer holds what was prepared, left out of every split: ``{id: what}``.
        self.damaged: dict[str, str] = {}
        for r in records:
            problem = shard_problem(self.shard_path(r["id"]), r["n_frames"], self.n_features, self.dtype)
            if problem is not None:
                self.damaged[r["id"]] = problem
        if self.damaged:
            shown = "; ".join(f"{i}: {p}" for i, p in list(self.damaged.items())[:3])
            more = f" and {len(self.damaged) - 3} more" if len(self.damaged) > 3 else ""
            warnings.warn(
                DamagedShardWarning(
                    f"{len(self.damaged)} of {len(records)} files of {self.path} are left out, their "
                    f"shards damaged ({shown}{more}): run the `cadenza prepare` command that made the "
                    "store again to prepare them anew"
                ),
                stacklevel=2,
            )
        self.records = [r for r in records if r["id"] not in self.damaged]
        if records and not self.records:
            raise StoreError(f"every shard of {self.path} is damaged; prepare the store again (--overwrite)")
        self._by_id = {r["id"]: r for r in self.records}
        self._stats: dict[str, np.ndarray] | None = None

    # ---------------------------------------------------------------- contents
    @property
    def n_features(self) -> int:
        return int(self.meta["n_features"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    def ids(self, split: str | None = None) -> list[str]:
        """Ids of the prepared files, all or of one split."""
        if split is not None and split not in SPLITS:
            raise StoreError(f"unknown split {split!r}; expected one of {SPLITS}")
        return [r["id"] for r in self.records if split is None or r["split"] == split]

    def record(self, item_id: str) -> dict[str, Any]:
        return self._by_id[item_id]

    def records_of(self, split: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records if split is None or r["split"] == split]

    def shard_path(self, item_id: str) -> Path:
        return self.path / "shards" / f"{item_id}.npy"

    def load(self, item_id: str, *, mmap: bool = True) -> np.ndarray:
        """Frames of one file, ``(n_frames, n_features)``, memory-mapped by default."""
        if item_id in self.damaged:
            raise StoreError(f"the shard of {item_id} in {self.path} is damaged: {self.damaged[item_id]}")
        return np.load(self.shard_path(item_id), mmap_mode="r" if mmap else None, allow_pickle=False)

    def iter_frames(self, split: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
        for item_id in self.ids(split):
            yield item_id, self.load(item_id)

    @property
    def stats(self) -> dict[str, np.ndarray]:
        """Per-feature ``mean``, ``std``, ``min``, ``max`` over the training split."""
        if self._stats is None:
            with np.load(self.path / "stats.npz") as z:
                self._stats = {k: z[k] for k in z.files}
        return self._stats

    def label_values(self, key: str) -> list[str]:
        """Sorted distinct values of one label over all prepared files (the label vocabulary)."""
        return sorted({r["labels"][key] for r in self.records if key in r.get("labels", {})})

    def hours(self, split: str | None = None) -> float:
        return sum(r.get("duration", 0.0) for r in self.records_of(split)) / 3600.0

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={len(self.ids(s))}" for s in SPLITS)
        return f"FeatureStore({str(self.path)!r}, {self.representation.name}, {counts})"


# ------------------------------------------------------------------ statistics
class RunningStats:
    """Per-feature count, mean, M2, min and max merged file by file (Chan et al.), in float64."""

    def __init__(self, n_features: int) -> None:
        self.n = 0
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)
        self.min = np.full(n_features, np.inf)
        self.max = np.full(n_features, -np.inf)

    def update(self, frames: np.ndarray, *, chunk: int = 65536) -> None:
        for start in range(0, len(frames), chunk):
            x = np.asarray(frames[start : start + chunk], dtype=np.float64)
            if not len(x):
                continue
            n_b = len(x)
            mean_b = x.mean(axis=0)
            m2_b = ((x - mean_b) ** 2).sum(axis=0)
            n = self.n + n_b
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (n_b / n)
            self.m2 = self.m2 + m2_b + delta**2 * (self.n * n_b / n)
            self.n = n
            np.minimum(self.min, x.min(axis=0), out=self.min)
            np.maximum(self.max, x.max(axis=0), out=self.max)

    def result(self) -> dict[str, np.ndarray]:
        if self.n == 0:
            zeros = np.zeros_like(self.mean)
            return {
                "mean": zeros,
                "std": np.ones_like(zeros),
                "min": zeros,
                "max": zeros,
                "count": np.array(0),
            }
        std = np.sqrt(self.m2 / max(self.n - 1, 1))
        return {"mean": self.mean, "std": std, "min": self.min, "max": self.max, "count": np.array(self.n)}


def compute_stats(arrays: Iterable[np.ndarray], n_features: int) -> dict[str, np.ndarray]:
    """Streaming per-feature statistics over many ``(n, n_features)`` arrays."""
    acc = RunningStats(n_features)
    for a in arrays:
        acc.update(a)
    return acc.result()


# ------------------------------------------------------------------ writing
def write_meta(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    atomic_write_text(Path(path) / "meta.yaml", yaml.safe_dump(meta, sort_keys=False))


def finish_store(
    path: str | os.PathLike, records: list[dict[str, Any]], meta: dict[str, Any]
) -> dict[str, Any]:
    """Write the final manifest, the training statistics and a complete ``meta.yaml``.

    ``records`` are manifest lines; the shards of ``ok`` records must already exist.
    Returns the meta written.
    """
    path = Path(path)
    records = sorted(records, key=lambda r: r["id"])
    atomic_write_text(path / "manifest.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    ok = [r for r in records if r["status"] == "ok"]
    train = [r for r in ok if r["split"] == "train"] or ok
    n_features = int(meta["n_features"])
    stats = compute_stats(
        (np.load(path / "shards" / f"{r['id']}.npy", mmap_mode="r") for r in train), n_features
    )
    atomic_write(path / "stats.npz", lambda f: np.savez(f, **stats))
    meta = dict(meta)
    meta["counts"] = {
        "files": len(records),
        "ok": len(ok),
        "skipped": len(records) - len(ok),
        **{s: sum(1 for r in ok if r["split"] == s) for s in SPLITS},
    }
    meta["frames"] = int(sum(int(r["n_frames"]) for r in ok))
    meta["hours"] = round(sum(float(r.get("duration", 0.0)) for r in ok) / 3600.0, 6)
    meta["complete"] = True
    write_meta(path, meta)
    return meta


def create_store(
    path: str | os.PathLike,
    representation: Representation,
    items: dict[str, tuple[np.ndarray, str, dict[str, str]]],
    *,
    seed: int = 0,
) -> FeatureStore:
    """A feature store from frames already in memory: ``{id: (frames, split, labels)}``.

    For tests and for users with their own features; ``cadenza prepare`` writes the same layout.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from cadenza.representations import make_representation
    >>> rep = make_representation("waveform", sample_rate=8000)
    >>> y = np.zeros((8000, 1), np.float32)
    >>> store = create_store(tempfile.mkdtemp(), rep, {"a": (y, "train", {"composer": "bach"})})
    >>> store.ids("train")
    ['a']
    """
    path = Path(path)
    (path / "shards").mkdir(parents=True, exist_ok=True)
    records = []
    frame_rate = float(representation.frame_rate)
    for item_id, (frames, split, labels) in items.items():
        frames = np.asarray(frames, dtype=representation.dtype)
        atomic_save_npy(path / "shards" / f"{item_id}.npy", frames)
        records.append(
            {
                "id": item_id,
                "path": item_id,
                "status": "ok",
                "split": split,
                "labels": dict(labels),
                "n_frames": int(len(frames)),
                "duration": float(len(frames) / frame_rate) if representation.input_kind == "audio" else 0.0,
            }
        )
    meta = base_meta(representation, seed=seed, source="memory")
    finish_store(path, records, meta)
    return FeatureStore(path)


def base_meta(representation: Representation, *, seed: int, source: str, **extra: Any) -> dict[str, Any]:
    """The ``meta.yaml`` of a store before it is finished."""
    return {
        "format_version": FORMAT_VERSION,
        "source": source,
        "representation": representation.to_dict(),
        "n_features": int(representation.n_features),
        "dtype": str(np.dtype(representation.dtype)),
        "frame_rate": float(representation.frame_rate),
        "seed": int(seed),
        **extra,
        "complete": False,
    }
