"""Fast paths beside the readable models: each computes what a plain PyTorch reference computes.

The model files of :mod:`cadenza.models` read as plain PyTorch (``nn.LSTM``, ``nn.Conv1d``,
``nn.Linear``); where that is slow on a CPU, they call one of these kernels, which falls back to
the reference whenever it does not apply (another device, dtype or option) or is switched off.

==========================  ==============================================  =============================
kernel                      replaces                                        used by
==========================  ==============================================  =============================
:mod:`.lstm`                ``nn.LSTM`` on the CPU: one autograd function   the ``fft_*`` models' training
                            per layer (input projections and weight         (each layer where it is the
                            gradients as single matrix products, ``h W^T``  faster here: :mod:`.lstm_choice`),
                            through oneDNN with ``W`` packed once), a       ``fft_*`` generation and
                            dropout mask from one ``torch.rand``, and one   seq2seq's free-running decoder
                            LSTM step shared by many windows
:mod:`.linear`              ``torch.addmm``/``F.linear`` (MKL) for large    the ``fft_*`` models' ``Linear``
                            float32 products: oneDNN where it is faster     layers, the fused LSTM's
                            here (AMD CPUs: MKL runs AVX2, about half        products and the sliding
                            oneDNN's rate)                                  window's many-row products
:mod:`.wavenet_step`        WaveNet's cached generation step in torch       ``wavenet`` ``mode=fast``
                            (``mode=cached``), compiled with numba, every
                            stream of a step in one product (BLAS
                            ``sgemm`` or the loop's own, whichever is
                            faster here)
:mod:`.rmsprop`             ``torch.optim.RMSprop.step``: the plain CPU     ``optim.name=rmsprop``
                            update as one compiled pass over memory
:mod:`.spectral`            the mel projection (thread-independent bits),   ``mel``/``mfcc`` encode and
                            PGHI's heap integration, the Griffin-Lim        decode (invert)
                            update and the joint mel correction, compiled
==========================  ==============================================  =============================

Each kernel has a test in ``tests/kernels/`` that compares it with its reference (forward and
gradients for the LSTM, logits within 1e-4 for WaveNet, parameters and state for RMSprop).

The switch
----------
``CADENZA_KERNELS`` in the environment chooses: ``auto`` (the default, also when unset or empty)
runs every kernel, and where two paths each win on some CPUs it takes the one measured faster
for the call's shape on this machine, once, and remembers it (:mod:`.measured`): each LSTM
layer cadenza's fused layer or PyTorch's own (oneDNN's RNN, :mod:`.lstm_choice`), each large
matrix product MKL or oneDNN (:mod:`.linear`), WaveNet's step products scipy's BLAS ``sgemm``
or the compiled loop's own; ``on`` runs every kernel with the fused LSTM, oneDNN's products
and BLAS always; ``off`` runs the plain PyTorch references. It is read at every call, so
``os.environ["CADENZA_KERNELS"] = "off"`` also works from Python at any time. Results agree
with the kernels' within float rounding; with the kernels off, dropout draws its masks
differently, so training with dropout follows another (equally valid) random path (``auto``
draws them as ``on`` does, whichever LSTM path it takes).

Private APIs
------------
The kernels lean on what their libraries do not promise: the LSTM on oneDNN's packed linear
(``torch.ops.mkldnn._reorder_linear_weight``, ``_linear_pointwise``), WaveNet's step, RMSprop
and the spectral loops on numba, WaveNet's step also on scipy's ``sgemm`` through numba. :mod:`.guards` checks each once per process on a tiny known
case; when one fails, it logs a warning and the kernel takes the public path. ``tests/kernels/test_guards.py`` asserts
that every guard passes on the installed versions, so an upgrade that breaks one fails there.

Examples
--------
>>> from cadenza import kernels
>>> kernels.ENV_VAR
'CADENZA_KERNELS'
>>> kernels.enabled() in (True, False)
True
>>> kernels.mode() in ("auto", "on", "off")
True
"""

from __future__ import annotations

import os

from cadenza.errors import ParameterError

__all__ = ["ENV_VAR", "enabled", "mode"]

#: The environment variable that switches the kernels: ``auto`` (default), ``on`` or ``off``.
ENV_VAR = "CADENZA_KERNELS"
_MODES = {"": "auto", "auto": "auto", "on": "on", "off": "off"}


def mode() -> str:
    """``auto`` (:data:`ENV_VAR` unset, empty or ``auto``), ``on`` or ``off``.

    Any other value is a :class:`~cadenza.errors.ParameterError`: a typo must not silently
    leave the kernels on.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower()
    try:
        return _MODES[value]
    except KeyError:
        raise ParameterError(f"{ENV_VAR}={os.environ[ENV_VAR]!r}: expected 'auto', 'on' or 'off'") from None


def enabled() -> bool:
    """Whether the kernels run (``auto`` or ``on``, see :func:`mode`); ``off`` turns them off."""
    return mode() != "off"
