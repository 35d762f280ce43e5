"""Choices between two equivalent code paths, measured once on this machine and remembered.

Some kernels have no path that wins on every CPU: the LSTM layer (cadenza's fused layer or
PyTorch's oneDNN RNN, :mod:`.lstm_choice`) and WaveNet's step products (scipy's BLAS ``sgemm``
or the compiled loop's own multiplication, :mod:`.wavenet_step`). Each such kernel asks
:func:`choose` with a *table* (which kernel), a *key* (the shape of the call) and a function
that times every path; the fastest is kept:

- once per process (in memory), and across processes in ``kernel-choices.json`` under
  cadenza's cache directory (``$CADENZA_CACHE``, else ``~/.cache/cadenza``;
  ``CADENZA_CACHE=off`` keeps choices in the process only), filed under the CPU's model name
  and torch's version, so that a home directory shared by several machines keeps each one's;
- written atomically (a temporary file, then a rename); an unreadable file is measured again
  and rewritten;
- reported by ``cadenza doctor`` (:func:`choices`) and logged when made (at INFO where measuring
  took over :data:`LOUD_SECONDS`).

The paths of a table compute the same results (within float rounding), so a choice changes
speed only.

Examples
--------
>>> import os
>>> from unittest import mock
>>> with mock.patch.dict(os.environ, {"CADENZA_CACHE": "off"}):  # kept in the process only
...     choose("example", "n=3", lambda: {"slow": 2.0, "fast": 1.0})
...     choices("example")
'fast'
{'n=3': 'fast'}
>>> forget()
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

import torch

__all__ = ["CACHE_NAME", "cache_file", "choices", "choose", "fastest", "forget", "machine"]

log = logging.getLogger(__name__)

#: The file under the cache directory that keeps the choices.
CACHE_NAME = "kernel-choices.json"
#: A choice whose measuring took longer is logged at INFO (the pause it caused), else at DEBUG
#: (``cadenza -v``; ``cadenza doctor`` lists every choice).
LOUD_SECONDS = 1.0

_lock = threading.RLock()
_memo: dict[tuple[str, str], str] = {}


def choose(
    table: str, key: str, measure: Callable[[], dict[str, float]], what: str = "", paths: Collection[str] = ()
) -> str:
    """The fastest path of ``table`` for ``key``: remembered, read from the cache file, or
    measured now by ``measure()`` (seconds per path, lower is better) and kept. ``paths``, when
    given, are the names a cached choice may have (any other is measured again)."""
    with _lock:
        if (table, key) in _memo:
            return _memo[table, key]
        cached = _load().get(machine(), {}).get(table, {}).get(key)
        if (
            cached is not None
            and isinstance(cached.get("path"), str)
            and (not paths or cached["path"] in paths)
        ):
            _memo[table, key] = cached["path"]
            return cached["path"]
        start = time.perf_counter()
        seconds = measure()
        path = min(seconds, key=lambda p: seconds[p])
        _memo[table, key] = path
        where = _save(table, key, path, seconds)
        elapsed = time.perf_counter() - start
        log.log(
            logging.INFO if elapsed > LOUD_SECONDS else logging.DEBUG,  # a pause worth explaining
            "%s %s: %s -> %s (measured once in %.2f s%s)",
            what or table,
            key,
            ", ".join(f"{p} {1e3 * s:.2f} ms" for p, s in seconds.items()),
            path,
            elapsed,
            f"; kept in {where}" if where else "",
        )
        return path


def fastest(
    calls: dict[str, Callable[[], object]], reps: int = 3, budget_s: float = float("inf")
) -> dict[str, float]:
    """Seconds of one call of each path: after a warm-up round (first calls create primitives
    and touch memory), the fastest of ``reps`` rounds in which the paths alternate, so that all
    see the same moments of a shared machine; fewer rounds (at least one) once the calls have
    taken ``budget_s`` seconds in all."""
    best = {p: float("inf") for p in calls}
    spent = 0.0
    for rep in range(reps + 1):
        for path, call in calls.items():
            t = time.perf_counter()
            call()
            elapsed = time.perf_counter() - t
            spent += elapsed
            if rep:
                best[path] = min(best[path], elapsed)
        if rep and spent > budget_s:
            break
    return best


def choices(table: str) -> dict[str, str]:
    """The choices known for ``table`` on this machine (key -> path), the process's and the file's."""
    known = {k: v["path"] for k, v in _load().get(machine(), {}).get(table, {}).items() if "path" in v}
    with _lock:
        known.update({k: p for (t, k), p in _memo.items() if t == table})
    return known


def forget() -> None:
    """Forget this process's choices (the cache file stays): the next call reads or measures."""
    with _lock:
        _memo.clear()


def cache_file() -> Path | None:
    """``kernel-choices.json`` in cadenza's cache directory, or None where the cache is off."""
    from cadenza.data.prepare import cache_dir

    root = cache_dir()
    return None if root is None else root / CACHE_NAME


@functools.cache
def machine() -> str:
    """What a choice holds for: the CPU (its model name, family and model numbers and widest vector
    instructions) and torch's version.

    The model name alone is not enough: virtual machines report "AMD EPYC" for Zen 3 and Zen 4
    alike, and oneDNN's products ran at twice MKL's rate on one (AVX-512) and at MKL's on the
    other (AVX2); a home folder shared by a cluster's mixed nodes must not carry one's choices
    to the other.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    return f"{describe_cpu(text)} | torch {torch.__version__}"


def describe_cpu(cpuinfo: str) -> str:
    """The first processor of a /proc/cpuinfo text as "name (cpu family F model M, widest ISA)".

    >>> describe_cpu("model name: AMD EPYC\\ncpu family: 25\\nmodel: 17\\nflags: fma avx2 avx512f")
    'AMD EPYC (cpu family 25 model 17, avx512f)'
    """
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    name = next((fields[k] for k in ("model name", "hardware", "cpu model") if fields.get(k)), "")
    name = name or platform.processor() or platform.machine()
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    isa = next((f for f in ("avx512f", "avx2", "avx", "sve", "asimd", "neon") if f in flags), "")
    numbers = " ".join(f"{k} {fields[k]}" for k in ("cpu family", "model") if fields.get(k))
    detail = ", ".join(x for x in (numbers, isa) if x)
    return f"{name} ({detail})" if detail else name


def _load() -> dict[str, dict[str, dict[str, dict]]]:
    """The cache file as {machine: {table: {key: entry}}}, whatever of it is well formed."""
    path = cache_file()
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measured again and rewritten
    if not isinstance(data, dict):
        return {}
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for m, tables in data.items():
        if isinstance(tables, dict):
            out[m] = {
                t: {k: v for k, v in entries.items() if isinstance(v, dict)}
                for t, entries in tables.items()
                if isinstance(entries, dict)
            }
    return out


def _save(table: str, key: str, path: str, seconds: dict[str, float]) -> Path | None:
    """Adds one choice to the cache file, atomically."""
    file = cache_file()
    if file is None:
        return None
    data = _load()
    entry = {"path": path, **{f"{p}_ms": round(1e3 * s, 3) for p, s in seconds.items()}}
    data.setdefault(machine(), {}).setdefault(table, {})[key] = entry
    tmp = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, file)
    except OSError as e:
        log.debug("could not keep the choice in %s: %s", file, e)
        tmp.unlink(missing_ok=True)
        return None
    return file
