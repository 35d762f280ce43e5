"""What the benchmarks share: the machine they ran on, and running as the cadenza command does."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def run_as_cadenza() -> None:
    """Re-run this script under tcmalloc where it is installed, as ``cadenza train`` and
    ``generate`` run (``cadenza/_malloc.py``; ``CADENZA_MALLOC=system`` for glibc's allocator)."""
    from cadenza._malloc import reexec_under_tcmalloc

    reexec_under_tcmalloc([sys.executable, str(Path(sys.argv[0]).resolve()), *sys.argv[1:]])


#: A load average above this before a run (2 cores) means the figures were taken beside other work.
BUSY_LOAD = 0.7


def load_record(before: tuple[float, float, float]) -> dict[str, Any]:
    """The 1/5/15-minute load averages before (given) and now, and whether the run was under load."""
    after = os.getloadavg()
    return {
        "load_before": [round(x, 2) for x in before],
        "load_after": [round(x, 2) for x in after],
        "taken_under_load": before[0] > BUSY_LOAD,
    }


def machine(**extra: Any) -> dict[str, Any]:
    """Platform, CPU, torch build and threads, allocator; ``extra`` adds or overrides fields."""
    import torch

    from cadenza._malloc import active_allocator

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "allocator": active_allocator(),
        "device": "cpu",
    }
    info.update(extra)
    return info
