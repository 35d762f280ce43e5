"""Datasets for training and the sampler that makes their order reproducible.

``DATASETS`` maps the ``data.dataset`` names of an experiment to the windowed datasets of
:mod:`cadenza.data.windows` and the ``data`` fields each takes. ``data.options`` adds any
further keyword argument of the class (``{scheme: shift}`` for raw-audio windows).

:class:`EpochBatchSampler` orders the windows of an epoch as a function of ``(seed, epoch)``
alone and can start part-way through an epoch, which is what makes a resumed run continue
exactly. Across ``W`` DDP processes it splits every global batch the way
``DistributedSampler`` does (process ``r`` takes every ``W``-th index starting at ``r``), so
the union of the per-process batches is the batch one process would have drawn.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cadenza.data.phrases import PianorollPhrases
from cadenza.data.store import FeatureStore
from cadenza.data.windows import SEQ2SEQ_SCHEMES, AudioWindows, SequenceWindows
from cadenza.errors import ParameterError, StoreError
from cadenza.training.config import DataConfig


@dataclasses.dataclass
class NoOptions:
    """A windowing that takes no ``data.options``."""


@dataclasses.dataclass
class SequenceOptions:
    """``data.options`` of frame sequences: how far the target lies after the input."""

    shift: int = dataclasses.field(
        default=1, metadata={"min": 0}
    )  # 1 next frame, seq_len next clip, 0 itself


@dataclasses.dataclass
class AudioOptions:
    """``data.options`` of raw-audio windows (paper 002): a scheme, or its sizes one by one."""

    scheme: str = dataclasses.field(default="split", metadata={"choices": tuple(SEQ2SEQ_SCHEMES)})
    n_input: int | None = dataclasses.field(default=None, metadata={"min": 1})
    n_output: int | None = dataclasses.field(default=None, metadata={"min": 1})
    shift: int | None = dataclasses.field(default=None, metadata={"min": 1})
    hop: int | None = dataclasses.field(default=None, metadata={"min": 1})  # overrides data.hop
    #: Leave out the windows whose target is mostly silence (more than half its 10 ms frames
    #: below -50 dBFS, as the evaluation's silence flag counts them).
    skip_quiet: bool = False


@dataclasses.dataclass
class PhraseOptions:
    """``data.options`` of piano-roll phrases (paper 004)."""

    n_bars: int = dataclasses.field(default=4, metadata={"min": 1})
    hop_bars: int = dataclasses.field(default=1, metadata={"min": 1})
    resolution: int | None = dataclasses.field(default=None, metadata={"min": 1})
    transpose: int = dataclasses.field(default=0, metadata={"min": 0})


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset class, the ``data`` fields passed to it, and the typed ``data.options`` it takes."""

    cls: type
    fields: tuple[str, ...]
    options: type = NoOptions
    #: The settings that make its windows shorter, and those that make them overlap more (hints).
    length_keys: str = "data.seq_len"
    hop_keys: str = "data.hop"


DATASETS: dict[str, DatasetSpec] = {
    "sequence": DatasetSpec(
        SequenceWindows, ("seq_len", "hop", "normalization", "label_key"), SequenceOptions
    ),
    # --- raw-audio windows of paper 002 (Seq2Seq, WaveNet) ---
    "audio": DatasetSpec(
        AudioWindows,
        ("hop", "label_key"),
        AudioOptions,
        "data.options.n_input and data.options.n_output",
        "data.options.hop",
    ),
    # --- piano-roll phrases of paper 004 (GANs) ---
    "phrases": DatasetSpec(
        PianorollPhrases, ("label_key",), PhraseOptions, "data.options.n_bars", "data.options.hop_bars"
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    spec = DATASETS.get(name)
    if spec is None:
        raise ParameterError(f"data.dataset: unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    return spec


def check_options(data: DataConfig, *, source: str = "config") -> dict[str, Any]:
    """``data.options`` checked against the typed options of ``data.dataset``: only the keys given, coerced."""
    from cadenza.training.config import build_section

    spec = dataset_spec(data.dataset)
    checked = build_section(spec.options, dict(data.options), section="data.options", source=source)
    return {k: getattr(checked, k) for k in data.options}


def build_dataset(
    data: DataConfig, store: FeatureStore, split: str, *, labels: list[str] | None = None
) -> Dataset:
    """The ``split`` of ``store`` windowed as ``data`` says."""
    spec = dataset_spec(data.dataset)
    kwargs: dict[str, Any] = {f: getattr(data, f) for f in spec.fields}
    kwargs.update(check_options(data))
    if data.label_key:
        kwargs["labels"] = labels
    return spec.cls(store, split, **kwargs)


def data_info_of(dataset: Dataset) -> Any:
    """The :class:`~cadenza.models.DataInfo` the dataset gives its model (facts flow data -> model)."""
    return dataset.data_info()  # type: ignore[attr-defined]


def normalizer_of(dataset: Dataset) -> Any:
    """The dataset's :class:`~cadenza.data.normalize.Normalizer`, or None when it has none."""
    return getattr(dataset, "normalizer", None)


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of window indices for one process, in an order fixed by ``(seed, epoch)``.

    Parameters
    ----------
    n_items : int
        Windows in the dataset.
    batch_size : int
        The global batch; each of ``world_size`` processes gets ``batch_size // world_size``.
    shuffle : bool
        Training order (a permutation per epoch) or the natural order (validation).
    drop_last : bool
        Drop the last, incomplete global batch. Training drops it, so that every step sees a
        full batch and the result does not depend on the number of processes.

    Examples
    --------
    >>> s = EpochBatchSampler(10, 4, seed=0)
    >>> s.set_epoch(0)
    >>> [len(b) for b in s]
    [4, 4]
    >>> s.set_epoch(0, start_batch=1)
    >>> list(s) == [EpochBatchSampler.batch(s, 0, 1)]
    True
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ParameterError(
                f"data.batch_size={batch_size} does not split evenly over {world_size} processes; "
                f"use a multiple of {world_size}"
            )
        self.n_items = n_items
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        return max(0, self.n_batches - self.start_batch)

    @property
    def n_batches(self) -> int:
        """Global batches per epoch."""
        if self.drop_last:
            return self.n_items // self.batch_size
        return math.ceil(self.n_items / self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n_items)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_items, generator=g).numpy()

    def batch(self, epoch: int, index: int, order: np.ndarray | None = None) -> list[int]:
        """This process's share of global batch ``index`` of ``epoch``."""
        order = self.order(epoch) if order is None else order
        chunk = order[index * self.batch_size : (index + 1) * self.batch_size]
        return chunk[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order(self.epoch)
        for index in range(self.start_batch, self.n_batches):
            indices = self.batch(self.epoch, index, order)
            if indices:  # the last, short batch of a validation may leave a process nothing
                yield indices


def require_batches(dataset: Dataset, data: DataConfig, split: str) -> None:
    """Fail early when a split cannot fill a single batch, naming the settings that would help.

    With no window at all a smaller batch cannot help: every file is shorter than one window
    (or the split has no file), so the message asks for shorter windows or longer music.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n >= data.batch_size:
        return
    spec = dataset_spec(data.dataset)
    if n == 0:
        store = dataset.store  # type: ignore[attr-defined]
        records = store.records_of(split)
        quiet = getattr(dataset, "n_quiet", 0)
        if not records:
            raise StoreError(f"the {split!r} split of {store.path} has no files; prepare more music")
        if quiet:
            raise StoreError(
                f"every one of the {quiet} windows of the {split!r} split has a target that is mostly "
                "silence (data.options.skip_quiet); set data.options.skip_quiet=false or prepare "
                "louder music"
            )
        longest = max(int(r["n_frames"]) for r in records)
        raise StoreError(
            f"the {split!r} split has no window: each of its {len(records)} files is shorter than "
            f"one window of {dataset.span} frames (the longest has {longest}), so a smaller "  # type: ignore[attr-defined]
            f"data.batch_size cannot help; shorten the windows ({spec.length_keys}) or prepare "
            "longer music"
        )
    # Windows already one hop unit apart (a frame; a bar for phrases) cannot overlap more.
    overlap = f", let them overlap more ({spec.hop_keys})" if dataset.hop > dataset.min_hop else ""  # type: ignore[attr-defined]
    raise StoreError(
        f"the {split!r} split has {n} windows, fewer than data.batch_size={data.batch_size}; lower "
        f"data.batch_size, shorten the windows ({spec.length_keys}){overlap} or prepare more music"
    )


def batch_size_of(batch: Any) -> int:
    """Items in a collated batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return batch_size_of(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)):
        return batch_size_of(batch[0])
    raise TypeError(f"cannot tell the size of a batch of type {type(batch).__name__}")


def to_device(batch: Any, device: torch.device) -> Any:
    """A collated batch moved to ``device`` (non-blocking from pinned memory)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
