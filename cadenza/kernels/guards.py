"""Guards for the private or optional APIs that the kernels use.

A guard checks, once per process, that an API exists and computes a tiny known case right.
:func:`passes` runs it: on failure it logs one warning that names the API and the reason, and
returns False, so the kernel takes its public path instead. ``tests/kernels/test_guards.py``
runs every check of :data:`CHECKS` directly and fails with the reason when one no longer
holds on the installed versions: an upgrade that changes a private API fails a test loudly
rather than silently slowing down.

Examples
--------
>>> passes("numba")
True
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def mkldnn_linear(w: torch.Tensor, n_rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``h -> h @ w.T`` for ``n_rows`` rows through oneDNN, ``w`` (out, in) packed once (private API)."""
    import torch

    packed = torch.ops.mkldnn._reorder_linear_weight(w, n_rows)
    return lambda h: torch.ops.mkldnn._linear_pointwise(h, packed, None, "none", [], "")


def _check_mkldnn_linear() -> None:
    """oneDNN's packed linear (``torch.ops.mkldnn._reorder_linear_weight`` and
    ``_linear_pointwise``) gives ``h @ w.T`` for a small float32 product."""
    import torch

    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("this PyTorch has no oneDNN (torch.backends.mkldnn.is_available() is False)")
    g = torch.Generator().manual_seed(0)
    w, h = torch.randn(16, 8, generator=g), torch.randn(3, 8, generator=g)
    got = mkldnn_linear(w, 3)(h)
    if got.shape != (3, 16) or not torch.allclose(got, h @ w.t(), atol=1e-5, rtol=1e-5):
        raise RuntimeError(f"oneDNN's packed linear gave a wrong product (shape {tuple(got.shape)})")


def _check_mkldnn_matmul() -> None:
    """oneDNN's linear with a plain (unpacked) weight, ``_linear_pointwise(a, b_t, bias)``,
    gives ``a @ b_t.T + bias`` for contiguous and transposed factors (what
    :func:`cadenza.kernels.linear.mm` passes it)."""
    import torch

    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("this PyTorch has no oneDNN (torch.backends.mkldnn.is_available() is False)")
    g = torch.Generator().manual_seed(0)
    a, b_t, bias = torch.randn(5, 7, generator=g), torch.randn(6, 7, generator=g), torch.randn(6, generator=g)
    for x, w, b in ((a, b_t, bias), (a.t().contiguous().t(), b_t, None), (a, b_t.t().contiguous().t(), bias)):
        got = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        want = x @ w.t() + (b if b is not None else 0)
        if got.shape != want.shape or not torch.allclose(got, want, atol=1e-5, rtol=1e-5):
            raise RuntimeError("oneDNN's linear gave a wrong product")


def _check_numba() -> None:
    """numba (a declared dependency) imports and offers ``njit``."""
    import numba

    if not callable(getattr(numba, "njit", None)):
        raise RuntimeError(f"numba {numba.__version__} has no njit")


def _check_scipy_sgemm() -> None:
    """scipy's Fortran ``sgemm``, reached through numba's address lookup of
    :mod:`scipy.linalg.cython_blas` (what WaveNet's compiled step calls), multiplies correctly."""
    from numba.extending import get_cython_function_address

    from cadenza.kernels.wavenet_step import _check_sgemm

    _check_sgemm(int(get_cython_function_address("scipy.linalg.cython_blas", "sgemm")))


#: Guard name -> check; a check raises with the reason when its API does not hold.
CHECKS: dict[str, Callable[[], None]] = {
    "mkldnn_linear": _check_mkldnn_linear,
    "mkldnn_matmul": _check_mkldnn_matmul,
    "numba": _check_numba,
    "scipy_sgemm": _check_scipy_sgemm,
}

#: What each guard's failure costs, for its warning.
_FALLBACKS = {
    "scipy_sgemm": "WaveNet's compiled step multiplies without BLAS (slower with many streams)",
    "mkldnn_linear": "the fused CPU LSTM multiplies h W_hh^T with torch.mm instead (about 1.3x slower)",
    "mkldnn_matmul": "large matrix products take MKL (torch.addmm) only: about half the speed on AMD CPUs",
    "numba": (
        "wavenet mode=fast runs as mode=cached, RMSprop as torch.optim.RMSprop and the mel/MFCC "
        "projection, PGHI and Griffin-Lim loops as their numpy/torch references (all slower)"
    ),
}


@functools.cache
def passes(name: str) -> bool:
    """Whether guard ``name`` of :data:`CHECKS` holds; checked once, a warning logged once if not."""
    try:
        CHECKS[name]()
    except Exception as exc:  # any failure of a private API means: take the public path
        log.warning("kernel guard %r failed (%s: %s); %s", name, type(exc).__name__, exc, _FALLBACKS[name])
        return False
    return True


def load_numba() -> Any:
    """The ``numba`` module when its guard passes, else None."""
    if not passes("numba"):
        return None
    import numba as module

    return module
