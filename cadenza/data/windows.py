"""Windowed datasets that stream from a feature store.

Each dataset keeps only numpy arrays of the file ids and a cumulative count of windows per
file, so its memory does not grow with the length of the corpus. A window's frames are read
from its shard with ``os.pread`` when the item is asked for: they pass through the page
cache, which the kernel may drop, and never become resident pages of the process, as the
touched pages of a memory map would (an epoch over a memory-mapped corpus of 4x the size
holds 4x the pages). The datasets pickle without their open files, so
``DataLoader(num_workers > 0)`` and DDP work.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cadenza.data.normalize import Normalizer
from cadenza.data.store import FeatureStore
from cadenza.errors import ParameterError, StoreError

_MAX_OPEN = 256  # shard files kept open per process


class ShardReader:
    """Rows ``[start, stop)`` of one ``.npy`` shard, read with ``os.pread`` (no memory map).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.npy"
    >>> np.save(path, np.arange(12, dtype=np.float32).reshape(6, 2))
    >>> reader = ShardReader(path)
    >>> reader.shape, reader.read(4, 6).tolist()
    ((6, 2), [[8.0, 9.0], [10.0, 11.0]])
    >>> reader.close()
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        header = np.load(self.path, mmap_mode="r", allow_pickle=False)  # reads the header; no data page
        if not isinstance(header, np.memmap) or header.ndim != 2 or not header.flags.c_contiguous:
            raise StoreError(f"{self.path}: a shard must be a C-ordered 2-D array, got shape {header.shape}")
        self.shape: tuple[int, int] = (int(header.shape[0]), int(header.shape[1]))
        self.dtype = header.dtype
        self.offset = int(header.offset)
        del header
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        self.fd = os.open(self.path, os.O_RDONLY)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (clipped to the shard), a read-only ``(n, n_features)`` array."""
        start, stop = max(0, start), min(stop, self.shape[0])
        n_bytes = max(0, stop - start) * self.row_bytes
        data = os.pread(self.fd, n_bytes, self.offset + start * self.row_bytes)
        if len(data) != n_bytes:
            raise StoreError(f"{self.path} is shorter than its header says; prepare the store again")
        return np.frombuffer(data, dtype=self.dtype).reshape(-1, self.shape[1])

    def close(self) -> None:
        os.close(self.fd)


class _StoreWindows(Dataset):
    """Shared machinery: (file, window) indexing over a store split and lazy memory maps."""

    #: The smallest hop between window starts, in frames (phrases start on bar lines).
    min_hop = 1

    def __init__(
        self,
        store: FeatureStore | str | os.PathLike,
        split: str,
        *,
        span: int,
        hop: int,
        label_key: str | None = None,
        labels: list[str] | None = None,
    ) -> None:
        if span < 1 or hop < 1:
            raise ParameterError(f"window span and hop must be positive, got span={span}, hop={hop}")
        self.store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        self.split = split
        self.span = span
        self.hop = hop
        records = self.store.records_of(split)
        counts = np.array([max(0, (int(r["n_frames"]) - span) // hop + 1) for r in records], dtype=np.int64)
        keep = counts > 0
        self.ids = np.array([r["id"] for r, k in zip(records, keep) if k], dtype=str)
        self.n_too_short = int((~keep).sum())
        self._cum = np.concatenate([[0], np.cumsum(counts[keep])])
        self.label_key = label_key
        self.labels = (
            labels if labels is not None else (self.store.label_values(label_key) if label_key else [])
        )
        if label_key:
            index = {v: i for i, v in enumerate(self.labels)}
            self._label_ids = np.array(
                [index.get(self.store.record(i)["labels"].get(label_key, ""), -1) for i in self.ids], np.int64
            )
        self._readers: OrderedDict[str, ShardReader] = OrderedDict()
        #: Global window indices kept by a subclass's filter (None: every window).
        self._kept: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self._cum[-1]) if self._kept is None else len(self._kept)

    def require_nonempty(self) -> None:
        if len(self) == 0:
            raise StoreError(
                f"the {self.split!r} split of {self.store.path} has no window of {self.span} frames "
                f"({len(self.store.ids(self.split))} files, {self.n_too_short} too short); "
                "use shorter windows or prepare more or longer files"
            )

    def locate(self, index: int) -> tuple[int, int]:
        """Global window index -> (file position, first frame)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        if self._kept is not None:
            index = int(self._kept[index])
        f = int(np.searchsorted(self._cum, index, side="right") - 1)
        return f, int(index - self._cum[f]) * self.hop

    def reader(self, f: int) -> ShardReader:
        """The open shard of file position ``f`` (at most ``_MAX_OPEN`` stay open)."""
        item_id = str(self.ids[f])
        reader = self._readers.get(item_id)
        if reader is None:
            reader = ShardReader(self.store.shard_path(item_id))
            self._readers[item_id] = reader
            if len(self._readers) > _MAX_OPEN:
                self._readers.popitem(last=False)[1].close()
        else:
            self._readers.move_to_end(item_id)
        return reader

    def window(self, index: int) -> tuple[np.ndarray, int]:
        """The frames of window ``index`` (read-only) and its file position."""
        f, start = self.locate(index)
        return self.reader(f).read(start, start + self.span), f

    def _extras(self, f: int) -> dict[str, torch.Tensor]:
        if not self.label_key:
            return {}
        return {"label": torch.tensor(self._label_ids[f])}

    def window_facts(self) -> dict[str, Any]:
        """What this windowing decided that a model must agree with (see ``DataInfo.window``)."""
        return {}

    def data_info(self) -> Any:
        """The :class:`~cadenza.models.DataInfo` a model is built from: everything it may know of the data."""
        from cadenza.models import DataInfo

        rep = self.store.representation
        return DataInfo(
            n_features=self.store.n_features,
            seq_len=getattr(self, "seq_len", None),
            labels=tuple(self.labels or ()),
            representation=rep.to_dict(),
            frame_rate=float(rep.frame_rate),
            window=self.window_facts(),
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()
        return state

    def __del__(self) -> None:
        for reader in getattr(self, "_readers", {}).values():
            reader.close()


def _tensor(a: np.ndarray) -> torch.Tensor:
    if np.issubdtype(a.dtype, np.integer):
        return torch.from_numpy(a.astype(np.int64))
    return torch.from_numpy(np.array(a, dtype=np.float32))  # a copy: shards are read-only maps


class SequenceWindows(_StoreWindows):
    """Sequences of ``seq_len`` frames with targets ``shift`` frames later (paper 000: T = 40, next frame).

    Item ``i`` is ``{"x": frames[s : s+T], "y": frames[s+k : s+k+T]}`` with ``k = shift``, both
    ``(T, F)`` float32 and normalised with the store's training statistics, plus ``"label"``
    (int64, -1 when the file has none) when ``label_key`` is given. ``shift=1`` predicts the
    next frame (paper 000), ``shift=seq_len`` the next clip (paper 003's MFCC LSTM) and
    ``shift=0`` gives ``y = x`` (an autoencoder: paper 003's VAE).

    Parameters
    ----------
    store : FeatureStore or path
    split : {"train", "valid", "test"}
    seq_len : int
        T, frames per sequence.
    hop : int, optional
        Frames between window starts; default ``seq_len`` (non-overlapping, as paper 000's
        10-second segments).
    normalization : {"standard", "minmax", "none"}
    label_key : str, optional
        A label of the manifest to return as an integer class (e.g. "composer").
    shift : int
        Frames between an input and its target (``data.options.shift``).

    Examples
    --------
    >>> ds = SequenceWindows("data/bach-fft", "train", seq_len=40)   # doctest: +SKIP
    >>> ds[0]["x"].shape                                             # doctest: +SKIP
    torch.Size([40, 8000])
    """

    def __init__(
        self,
        store: FeatureStore | str | os.PathLike,
        split: str = "train",
        *,
        seq_len: int = 40,
        hop: int | None = None,
        normalization: str = "standard",
        label_key: str | None = None,
        labels: list[str] | None = None,
        shift: int = 1,
    ) -> None:
        if shift < 0:
            raise ParameterError(f"shift must be 0 or more frames, got {shift}")
        super().__init__(
            store, split, span=seq_len + shift, hop=hop or seq_len, label_key=label_key, labels=labels
        )
        self.seq_len = seq_len
        self.shift = shift
        stats = self.store.stats if normalization != "none" else None
        self.normalizer = Normalizer.from_stats(normalization, stats)

    def window_facts(self) -> dict[str, Any]:
        return {"shift": self.shift}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        w, f = self.window(index)
        w = self.normalizer.apply(w.astype(np.float32)).astype(np.float32)
        x = torch.from_numpy(w[: self.seq_len])
        y = torch.from_numpy(w[self.shift : self.shift + self.seq_len]) if self.shift else x
        return {"x": x, "y": y, **self._extras(f)}


#: Paper 002's two raw-audio windowings: 256 samples split 128 in / 128 out with hop 128,
#: and 129 samples giving input 1..128 and target 2..129 with hop 64.
SEQ2SEQ_SCHEMES = {
    "split": {"n_input": 128, "n_output": 128, "shift": 128, "hop": 128},
    "shift": {"n_input": 128, "n_output": 128, "shift": 1, "hop": 64},
}


class AudioWindows(_StoreWindows):
    """Raw-audio windows for sequence-to-sequence and sample-level models (paper 002).

    Item ``i`` is ``{"x": s[a : a+n_input], "y": s[a+shift : a+shift+n_output]}`` over a
    ``waveform`` store, shapes ``(n_input,)`` and ``(n_output,)``: float32 samples, or int64
    mu-law classes for a mu-law store.

    Parameters
    ----------
    scheme : {"split", "shift"}, optional
        ``"split"``: 256-sample windows split 128/128, hop 128. ``"shift"``: 129-sample windows,
        input samples 1..128 and targets 2..129, hop 64. Explicit ``n_input``, ``n_output``,
        ``shift`` and ``hop`` override the scheme's values.

    Examples
    --------
    >>> ds = AudioWindows("data/quartets", "train", scheme="shift")   # doctest: +SKIP
    >>> ds[0]["x"].shape, ds[0]["y"].shape                            # doctest: +SKIP
    (torch.Size([128]), torch.Size([128]))
    """

    def __init__(
        self,
        store: FeatureStore | str | os.PathLike,
        split: str = "train",
        *,
        scheme: str = "split",
        n_input: int | None = None,
        n_output: int | None = None,
        shift: int | None = None,
        hop: int | None = None,
        label_key: str | None = None,
        labels: list[str] | None = None,
        skip_quiet: bool = False,
    ) -> None:
        if scheme not in SEQ2SEQ_SCHEMES:
            raise ParameterError(
                f"unknown windowing scheme {scheme!r}; expected one of {sorted(SEQ2SEQ_SCHEMES)}"
            )
        p = dict(SEQ2SEQ_SCHEMES[scheme])
        for key, value in (("n_input", n_input), ("n_output", n_output), ("shift", shift), ("hop", hop)):
            if value is not None:
                p[key] = value
        self.scheme = scheme
        self.n_input, self.n_output, self.shift = p["n_input"], p["n_output"], p["shift"]
        span = max(self.n_input, self.shift + self.n_output)
        store_obj = store if isinstance(store, FeatureStore) else FeatureStore(store)
        if store_obj.n_features != 1:
            raise StoreError(
                f"AudioWindows needs a waveform store (1 feature per frame); {store_obj.path} holds "
                f"{store_obj.representation.name} frames with {store_obj.n_features} features"
            )
        super().__init__(store_obj, split, span=span, hop=p["hop"], label_key=label_key, labels=labels)
        self.skip_quiet = bool(skip_quiet)
        #: Windows left out by ``skip_quiet`` (0 without it).
        self.n_quiet = 0
        if self.skip_quiet:
            quiet = self._quiet_targets()
            self._kept = np.flatnonzero(~quiet)
            self.n_quiet = int(quiet.sum())

    def _quiet_targets(self) -> np.ndarray:
        """Per window, whether most of its target's 10 ms frames are below -50 dBFS (the
        evaluation's silence measure), read once from every file of the split."""
        from cadenza.evaluation.detectors import SILENCE_FRAME_SECONDS, SILENCE_THRESHOLD_DB, SILENT_FLAG

        rep = self.store.representation
        frame = max(1, round(float(getattr(rep, "sample_rate", 16000)) * SILENCE_FRAME_SECONDS))
        floor = 10.0 ** (SILENCE_THRESHOLD_DB / 10.0)  # mean square of a -50 dBFS frame
        out = []
        for f in range(len(self.ids)):
            reader = self.reader(f)
            y = np.asarray(rep.decode(reader.read(0, reader.shape[0])), dtype=np.float64).reshape(-1)
            n_frames = len(y) // frame
            loud = (y[: n_frames * frame].reshape(n_frames, frame) ** 2).mean(axis=1) >= floor
            quiet_cum = np.concatenate([[0], np.cumsum(~loud)])
            n_windows = int(self._cum[f + 1] - self._cum[f])
            a = np.arange(n_windows) * self.hop + self.shift  # each target's first sample
            first, last = -(-a // frame), (a + self.n_output) // frame  # whole frames inside it
            last = np.maximum(np.minimum(last, n_frames), first)
            n_inside = last - first
            n_quiet = quiet_cum[last] - quiet_cum[first]
            out.append((n_inside > 0) & (n_quiet > SILENT_FLAG * np.maximum(n_inside, 1)))
        return np.concatenate(out) if out else np.zeros(0, dtype=bool)

    def window_facts(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "n_input": self.n_input,
            "n_output": self.n_output,
            "shift": self.shift,
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        w, f = self.window(index)
        w = w[:, 0]
        x = w[: self.n_input]
        y = w[self.shift : self.shift + self.n_output]
        return {"x": _tensor(x), "y": _tensor(y), **self._extras(f)}
