"""Checkpoints: atomic, self-describing, loadable with ``weights_only=True``.

A checkpoint is a dict of tensors and plain containers::

    format, version, kind        "cadenza-checkpoint", 1, "last" | "best" | "bundle"
    model                        the key in cadenza.models.MODELS
    config                       the resolved experiment config (plain dict)
    representation               rep.to_dict(), so output can be decoded without the store
    normalization                {"kind", "shift", "scale"} (tensors)
    data_info                    DataInfo.to_dict()
    weights                      state dict of the unwrapped model
    optimizers, schedulers       {name: state dict} ("last" only)
    step, epoch, batch_in_epoch  where training stands: `epoch` epochs done, and
                                 `batch_in_epoch` batches of the next one
    progress                     best monitored value, validations without improvement, ...
    rng                          per DDP process: Python, NumPy, torch (and CUDA) RNG states
    seed_clips                   raw frames to start generation from ("bundle" only)

Writes go to a temporary file in the same folder that is flushed, fsynced and renamed over
the target, so a kill at any moment leaves either the old or the new checkpoint.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadenza._fs import atomic_write, fsync_dir
from cadenza.errors import CadenzaError

FORMAT = "cadenza-checkpoint"
VERSION = 1


class CheckpointError(CadenzaError):
    """A checkpoint that is missing, unreadable or not one of cadenza's."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, flush, fsync, rename).

    Examples
    --------
    >>> import tempfile, torch
    >>> p = save_checkpoint(tempfile.mkdtemp() + "/last.pt", {"weights": {"w": torch.ones(2)}})
    >>> load_checkpoint(p)["weights"]["w"].tolist()
    [1.0, 1.0]
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda f: torch.save(state, f))  # a full disk: torch says "unexpected pos"
    fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``: it cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise CheckpointError(
            f"{path}: not a readable checkpoint, damaged or not a checkpoint at all ({_why(exc)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cadenza checkpoint")
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path}: written by a newer cadenza (format {state['version']}); upgrade cadenza"
        )
    return state


def _why(exc: BaseException) -> str:
    """What ``torch.load`` said, without its advice to load with ``weights_only=False`` (which
    would run whatever code a damaged or foreign file holds: never the fix here).

    >>> _why(RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory"))
    'RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory'
    >>> _why(Exception("Weights only load failed. Re-running ...\\nWeightsUnpickler error: \\n\\nUnsupported operand 6\\n\\nCheck the ..."))
    'Exception: Unsupported operand 6'
    """
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n", 1)[0]
    text = text.strip().split("\n", 1)[0] if text.strip() else "the file ends early"
    return f"{type(exc).__name__}: {text}"


# ----------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """The RNG states of Python, NumPy and torch (CPU and CUDA) as tensors and plain values."""
    version, mt, gauss = random.getstate()
    # NumPy's legacy global RNG is what third-party code draws from, so it is what must be saved.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": [int(version), torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [
            str(kind),
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, mt, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in mt.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
