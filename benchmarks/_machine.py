"""What the benchmarks share: the machine they ran on, running as the cadenza command does, and
the paper-000 FFT LSTMs at a given size with their analytic FLOP count (``fft_lstm.py``, ``gpu.py``)."""

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


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Intel and AMD differ, e.g. on subnormal floats)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine(**extra: Any) -> dict[str, Any]:
    """Platform, CPU, torch build and threads, the numeric packages' versions (a figure that
    moves between runs can then be traced to an upgrade), allocator; ``extra`` adds or
    overrides fields."""
    from importlib import metadata

    import torch
    from threadpoolctl import threadpool_info

    from cadenza._malloc import active_allocator

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        **{name: version(name) for name in ("numpy", "scipy", "numba")},
        "blas": sorted({f"{p['internal_api']} {p.get('version')}" for p in threadpool_info()}),
        "threads": torch.get_num_threads(),
        "allocator": active_allocator(),
        "device": "cpu",
    }
    info.update(extra)
    return info


def build(key: str, seq_len: int = 40, *, preset: str = "paper", n_features: int = 8000) -> tuple[Any, Any]:
    """The registered model ``key`` (an ``fft_*`` LSTM) from its ``<key>-<preset>`` config over
    ``n_features`` features and windows of ``seq_len`` frames, seeded; and the config."""
    import torch

    from cadenza.models import DataInfo, get_model_spec
    from cadenza.training.config import load_config

    cfg = load_config(f"{key}-{preset}")
    torch.manual_seed(0)
    model = get_model_spec(key).build(cfg.model, DataInfo(n_features=n_features, seq_len=seq_len))
    return model, cfg


def forward_flops(model: Any, x: Any) -> tuple[float, float]:
    """Matrix-product FLOPs of one forward pass of an ``fft_*`` model over ``x``, and those of
    the layer reading ``x``.

    Dense and convolution layers are counted from their output shapes (2 x outputs x fan-in);
    each LSTM layer from its sizes (2 x B x T x 4H x (inputs + H)).
    """
    import torch
    from torch import nn

    counts: list[tuple[str, float]] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            fan_in = module.in_features
        else:
            fan_in = module.weight[0].numel()  # (in / groups) x kernel
        counts.append((type(module).__name__, 2.0 * output.numel() * fan_in))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    rows = x.shape[0] * x.shape[1]
    lstm_flops, first_lstm_input = 0.0, 0.0
    for m in (model.lstm, model.lstm2):
        if m is None:
            continue
        for layer in range(m.num_layers):
            n_in = m.input_size if layer == 0 else m.hidden_size
            lstm_flops += 2.0 * rows * 4 * m.hidden_size * (n_in + m.hidden_size)
        first_lstm_input = 2.0 * rows * 4 * m.hidden_size * m.input_size
    total = lstm_flops + sum(f for _, f in counts)
    # The layer that reads the data: the encoder's first product, or the LSTM's input projection.
    encoder_counts = [f for name, f in counts[:-1]]  # the last product is the head
    first = encoder_counts[0] if encoder_counts else first_lstm_input
    return total, first


#: Side of the square fp32 matrices whose product measures the machine's dense rate.
MM_SIZE = 4096


def mm_rate(repeats: int = 3, onednn: bool = False) -> float:
    """Best fp32 FLOP/s of ``repeats`` dense MM_SIZE x MM_SIZE products (torch's threads as set):
    ``torch.mm`` (MKL), or with ``onednn`` oneDNN's linear (twice MKL's rate on an AMD EPYC,
    where MKL takes its AVX2 path; what :mod:`cadenza.kernels.linear` uses there)."""
    import time

    import torch

    a, b = torch.randn(MM_SIZE, MM_SIZE), torch.randn(MM_SIZE, MM_SIZE)

    def product() -> None:
        if onednn:
            torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
        else:
            torch.mm(a, b)

    product()
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        product()
        best = max(best, 2 * MM_SIZE**3 / (time.perf_counter() - t0))
    return best
