"""Export a run as a self-contained bundle that ``cadenza generate`` takes in place of the run.

A bundle is a checkpoint of kind ``"bundle"``: the weights, the resolved config, the
representation's parameters, the normalisation, and a few seed clips of raw frames from
held-out files, so generation needs neither the optimiser state nor the feature store. ``OUT``
ending in ``.pt`` is written as that one file; any other ``OUT`` is a folder holding
``bundle.pt`` and a readable ``config.yaml``.

Examples
--------
>>> export_bundle("runs/bach-base", "bundles/bach-base.pt")  # doctest: +SKIP
PosixPath('bundles/bach-base.pt')
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from cadenza.data.store import FeatureStore, atomic_write_text
from cadenza.errors import ParameterError, StoreError
from cadenza.generation import held_out_clips, load_generator
from cadenza.training.checkpoint import save_checkpoint

log = logging.getLogger(__name__)

#: What a bundle keeps from a checkpoint.
BUNDLE_KEYS = ("model", "config", "representation", "normalization", "data_info", "weights", "step", "epoch")


def export_bundle(
    run: str | os.PathLike,
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    n_clips: int = 4,
    seed: int = 0,
) -> Path:
    """Write the bundle of ``run`` (its best checkpoint unless ``checkpoint``) to ``out``.

    Returns the ``.pt`` file written.
    """
    out = Path(out)
    _check_out(out)  # before the run is read: a wrong OUT is said at once
    gen = load_generator(run, checkpoint=checkpoint, device="cpu")
    bundle = {k: gen.state[k] for k in BUNDLE_KEYS if k in gen.state}
    bundle["kind"] = "bundle"
    bundle["source_checkpoint"] = str(gen.checkpoint)
    clips: list[torch.Tensor] = list(gen.state.get("seed_clips") or [])
    n_seed = gen.n_seed_frames
    store_path = gen.config.data.store
    if n_seed > 0 and not clips:
        if store_path and (Path(store_path) / "meta.yaml").exists():
            store = FeatureStore(store_path)
            rng = np.random.default_rng(seed)
            picked = []
            for length in (2 * n_seed, n_seed):  # longer clips give more distinct seeds
                try:
                    picked = held_out_clips(store, length, n_clips, rng)
                    break
                except StoreError:
                    continue
            clips = [torch.from_numpy(np.ascontiguousarray(frames)) for frames, _ in picked]
        if not clips:
            log.warning(
                "%s: the run's feature store is not at hand; the bundle has no seed clips "
                "and will start from noise unless given --seed-file",
                run,
            )
    bundle["seed_clips"] = clips
    try:
        if out.suffix == ".pt":
            return save_checkpoint(out, bundle)
        out.mkdir(parents=True, exist_ok=True)
        path = save_checkpoint(out / "bundle.pt", bundle)
        atomic_write_text(out / "config.yaml", gen.config.to_yaml())
    except OSError as exc:
        raise ParameterError(
            f"{out}: cannot write the bundle ({exc.strerror or exc}); give another OUT"
        ) from None
    return path


def _check_out(out: Path) -> None:
    """``OUT`` can be written as what its name says: a ``.pt`` file, else a folder."""
    if out.suffix == ".pt" and out.is_dir():
        raise ParameterError(
            f"{out} is a folder: OUT ending in .pt is the bundle file; give another name, or one "
            "without .pt for a bundle folder"
        )
    if out.suffix != ".pt" and out.exists() and not out.is_dir():
        raise ParameterError(
            f"{out} is a file: OUT not ending in .pt is a bundle folder; give a name ending in .pt "
            "for a bundle file"
        )
    for parent in (out.parent, *out.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ParameterError(f"{out}: {parent} is a file, not a folder; give another OUT")
            break
