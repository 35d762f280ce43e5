"""Run CPU-heavy commands under tcmalloc, which keeps freed memory for reuse.

PyTorch on the CPU frees and allocates the same large buffers at every training step:
gradients, optimiser temporaries, activations. glibc's ``malloc`` serves every block over
32 MB with fresh ``mmap`` pages and unmaps it on ``free``, so each step the kernel
page-faults and zero-fills them all again: at paper 000's size about 0.5 GB a step, a
quarter of the CPU time spent in the kernel, and fft_base trained at 0.66 of the
matrix-multiply rate instead of 0.84-0.92. (Telling glibc to keep big blocks in its heap instead, with ``mallopt``,
grows the heap without bound when a block of the same size is freed and asked for again
with PyTorch's 64-byte alignment, so cadenza does not.) tcmalloc, which PyTorch's tuning
guide recommends for CPU work, reuses them.

``cadenza train``, ``generate`` and ``demo`` re-execute themselves once, at start-up and
before anything is loaded, with ``libtcmalloc_minimal`` in ``LD_PRELOAD`` when it is
installed (Debian: ``apt-get install libtcmalloc-minimal4``; ``make`` installs it).
``CADENZA_MALLOC=system`` keeps the C library's allocator. Elsewhere (no tcmalloc, not
Linux) nothing happens and ``cadenza doctor`` says so.
"""

from __future__ import annotations

import glob
import logging
import os
import sys

log = logging.getLogger(__name__)

#: Library names, most specific first; ``minimal`` is tcmalloc without the heap profiler.
NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
_DIRS = ("/usr/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib/*-linux-gnu")


def find_tcmalloc() -> str | None:
    """The path of an installed tcmalloc, or None."""
    if not sys.platform.startswith("linux"):
        return None
    for name in NAMES:
        for pattern in _DIRS:
            for path in sorted(glob.glob(os.path.join(pattern, name))):
                if os.path.isfile(path):
                    return path
    return None


def active_allocator() -> str:
    """``"tcmalloc"`` if this process runs under tcmalloc, else ``"system"``."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return "tcmalloc" if "libtcmalloc" in maps.read() else "system"
    except OSError:
        return "system"


def wanted() -> bool:
    return os.environ.get("CADENZA_MALLOC", "").strip().lower() not in ("system", "glibc", "off", "0")


def reexec_under_tcmalloc(argv: list[str]) -> None:
    """Replace this process with ``argv`` (``argv[0]`` the executable) under tcmalloc.

    Returns without doing anything when tcmalloc is already in use, another allocator is in
    ``LD_PRELOAD``, tcmalloc is not installed or not wanted (``CADENZA_MALLOC=system``), or
    when the ``exec`` fails.
    """
    if not wanted() or "malloc" in os.environ.get("LD_PRELOAD", ""):
        return  # not wanted, or an allocator (tcmalloc, jemalloc, mimalloc) chosen already
    if active_allocator() == "tcmalloc":
        return
    lib = find_tcmalloc()
    if lib is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    # tcmalloc reports every allocation over 1 GiB on stderr unless told otherwise.
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    try:
        os.execve(argv[0], argv, env)
    except OSError as exc:  # pragma: no cover - exec of our own interpreter failing
        log.debug("could not re-run under tcmalloc (%s); keeping the system allocator", exc)
