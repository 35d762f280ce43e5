"""Piano-roll phrases of a fixed number of bars (paper 004's GANs), streamed from a feature store.

A phrase is ``n_bars`` whole bars (4, as MuseGAN and paper 004) of a ``pianoroll`` store, starting
on a bar line every ``hop_bars`` bars. The store keeps LPD's 24 steps per beat; ``resolution`` may
reduce it (12 per beat gives 48 steps per 4/4 bar and 192 per phrase) by an integer factor ``f``:

* step ``s`` of the reduced roll is on where step ``f * s`` of the store's roll is on, or where a
  note *starts* within steps ``f * s .. f * s + f - 1`` (so that no note shorter than ``f`` steps is
  lost);
* a note that starts while the same pitch sounds gets a one-step gap before its onset, as
  :class:`~cadenza.representations.PianoRoll` encodes repeated notes, so that re-articulations
  survive the reduction (a plain max-pool or subsampling would merge them).

Transposition (``transpose=k``) shifts each training phrase by a random number of semitones in
``-k..k``, clipped so that no note leaves the pitch range; other splits are never transposed.
The draw uses torch's global generator, so it is reproducible under the trainer's seeds and
resumes exactly (the trainer saves that generator's state).

Items are ``{"x": (n_steps, n_pitches) float32}`` of 0/1: one track (the store merges every
instrument into one roll, as paper 004 trains on a single piano track); a multi-track store would
add a leading track axis, which the GAN generators already treat as channels.

Like the windows of :mod:`cadenza.data.windows`, the dataset keeps only file ids and window counts
and reads frames from memory maps, so memory does not grow with the corpus, and it pickles without
its open maps (``num_workers > 0``, DDP).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from cadenza.data.normalize import Normalizer
from cadenza.data.store import FeatureStore
from cadenza.data.windows import _StoreWindows
from cadenza.errors import ParameterError, StoreError

__all__ = ["PianorollPhrases", "reduce_resolution", "transpose_roll"]


def reduce_resolution(roll: np.ndarray, factor: int) -> np.ndarray:
    """A ``(n_steps, n_pitches)`` roll at ``1 / factor`` of its time resolution, notes kept apart.

    Parameters
    ----------
    roll : np.ndarray
        ``(n_steps, n_pitches)``, on where nonzero; ``n_steps`` a multiple of ``factor``.
    factor : int
        Steps of ``roll`` per step of the result.

    Returns
    -------
    np.ndarray
        ``uint8`` ``(n_steps // factor, n_pitches)``.

    Examples
    --------
    >>> roll = np.zeros((8, 1), dtype=np.uint8)
    >>> roll[0:3, 0] = 1   # a note of 3 steps
    >>> roll[4:8, 0] = 1   # a repeated note right after a one-step gap
    >>> reduce_resolution(roll, 2)[:, 0].tolist()
    [1, 0, 1, 1]
    """
    roll = np.asarray(roll) > 0
    if factor < 1 or roll.ndim != 2 or len(roll) % factor:
        raise ParameterError(f"cannot reduce a roll of shape {roll.shape} by a factor of {factor}")
    if factor == 1:
        return roll.astype(np.uint8)
    n, p = len(roll) // factor, roll.shape[1]
    onset = roll & ~np.concatenate([np.zeros((1, p), bool), roll[:-1]])
    is_onset = onset.reshape(n, factor, p).any(axis=1)
    out = roll[::factor] | is_onset
    # A re-onset while the pitch sounds: free the step before it (unless that step is an onset).
    gap = is_onset[1:] & out[:-1] & ~is_onset[:-1]
    out[:-1][gap] = False
    return out.astype(np.uint8)


def transpose_roll(roll: np.ndarray, semitones: int) -> np.ndarray:
    """``roll`` shifted up by ``semitones`` along the pitch axis (the last), zeros shifted in.

    Examples
    --------
    >>> transpose_roll(np.array([[0, 1, 0, 0]]), 2).tolist()
    [[0, 0, 0, 1]]
    """
    out = np.zeros_like(roll)
    if semitones >= 0:
        out[..., semitones:] = roll[..., : roll.shape[-1] - semitones]
    else:
        out[..., :semitones] = roll[..., -semitones:]
    return out


class PianorollPhrases(_StoreWindows):
    """Phrases of ``n_bars`` bars of a ``pianoroll`` store, optionally at a lower resolution.

    Parameters
    ----------
    store : FeatureStore or path
        A store prepared with ``--representation pianoroll`` (from MIDI, music21 or LPD ``.npz``).
    split : {"train", "valid", "test"}
    n_bars : int
        Bars per phrase (4 as paper 004).
    hop_bars : int
        Bars between phrase starts (1: every bar line starts a phrase).
    resolution : int, optional
        Steps per beat of the phrases; must divide the store's. Default: the store's.
    transpose : int
        Largest random transposition, in semitones, of training phrases (0: none).
    label_key, labels
        As :class:`~cadenza.data.windows.SequenceWindows`.

    Examples
    --------
    >>> ds = PianorollPhrases("data/bach-rolls", "train", resolution=12)   # doctest: +SKIP
    >>> ds.seq_len, ds[0]["x"].shape                                       # doctest: +SKIP
    (192, torch.Size([192, 84]))
    """

    def __init__(
        self,
        store: FeatureStore | str | os.PathLike,
        split: str = "train",
        *,
        n_bars: int = 4,
        hop_bars: int = 1,
        resolution: int | None = None,
        transpose: int = 0,
        label_key: str | None = None,
        labels: list[str] | None = None,
    ) -> None:
        store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        rep = store.representation
        if rep.name != "pianoroll":
            raise StoreError(
                f"piano-roll phrases need a pianoroll store; {store.path} holds {rep.name} frames "
                "(prepare one with `cadenza prepare SOURCE OUT --representation pianoroll`)"
            )
        if n_bars < 1 or hop_bars < 1:
            raise ParameterError(f"n_bars and hop_bars must be positive, got {n_bars} and {hop_bars}")
        resolution = int(resolution or rep.resolution)
        if resolution < 1 or rep.resolution % resolution:
            raise ParameterError(
                f"phrase resolution {resolution} must divide the store's {rep.resolution} steps per beat"
            )
        if not 0 <= transpose < rep.n_pitches:
            raise ParameterError(f"transpose must be in 0..{rep.n_pitches - 1} semitones, got {transpose}")
        steps_per_bar = int(rep.steps_per_bar)
        super().__init__(
            store,
            split,
            span=n_bars * steps_per_bar,
            hop=hop_bars * steps_per_bar,
            label_key=label_key,
            labels=labels,
        )
        self.min_hop = steps_per_bar
        self.n_bars = n_bars
        self.resolution = resolution
        self.factor = rep.resolution // resolution
        self.steps_per_bar = steps_per_bar // self.factor
        self.seq_len = n_bars * self.steps_per_bar  # steps per phrase, at ``resolution``
        self.transpose = transpose if split == "train" else 0
        self.lowest_pitch = int(rep.lowest_pitch)
        # Rolls are 0/1 already: the identity, so that generation and samples need no statistics.
        self.normalizer = Normalizer.from_stats("none", None)

    def window_facts(self) -> dict[str, Any]:
        return {
            "n_bars": self.n_bars,
            "resolution": self.resolution,
            "resolution_factor": self.factor,
            "steps_per_bar": self.steps_per_bar,
        }

    def _shift(self, roll: np.ndarray) -> int:
        """A random transposition that keeps every note of ``roll`` in range."""
        pitches = np.flatnonzero(roll.any(axis=0))
        if not pitches.size:
            return 0
        lo = max(-self.transpose, -int(pitches[0]))
        hi = min(self.transpose, roll.shape[1] - 1 - int(pitches[-1]))
        return int(torch.randint(lo, hi + 1, ()).item()) if hi > lo else lo

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        w, f = self.window(index)
        roll = reduce_resolution(w, self.factor)
        if self.transpose:
            roll = transpose_roll(roll, self._shift(roll))
        return {"x": torch.from_numpy(roll.astype(np.float32)), **self._extras(f)}
