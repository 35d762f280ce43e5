"""Devices and DDP.

``torchrun --nproc-per-node=N -m cadenza train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU) and
gives each process its device. Rank 0 alone writes logs and checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist

from cadenza.errors import ParameterError

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    #: True when :func:`setup` started the process group (and :func:`teardown` should end it).
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; ``cuda`` takes the local rank's GPU."""
    base = name.split(":")[0]
    if base not in DEVICES:
        raise ParameterError(f"unknown device {name!r}; expected one of {DEVICES} (or cuda:N)")
    if base == "auto":
        if torch.cuda.is_available():
            base = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            base = "mps"
        else:
            base = "cpu"
    if base == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
        index = name.split(":", 1)[1] if ":" in name else str(local_rank)
        if not index.isascii() or not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise ParameterError(
                f"--device {name}: this machine has GPUs cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device("cuda", int(index))
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParameterError("--device mps: Apple MPS is not available; use --device cpu")
    return torch.device(base)


def setup(device: str = "auto") -> DistInfo:
    """Join the DDP group when started by ``torchrun``; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "mps":
        raise ParameterError("DDP on Apple MPS is not supported by torch; use --device cpu")
    owns = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns)


def teardown(info: DistInfo, *, wait: bool = False) -> None:
    """Leave the DDP group. ``wait`` (a run that ended normally): every process waits for the
    others first, so none shuts its connections down while a peer is still finishing a
    collective with it. A process leaving on an error does not wait: its peers may never come."""
    if info.owns_group and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.is_distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over all processes in place (a no-op in one process)."""
    if info.is_distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``obj`` of every process, in rank order (a one-item list in one process)."""
    if not info.is_distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
