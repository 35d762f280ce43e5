"""How many threads cadenza's numerical work uses: the CPUs that are free, not all there are.

PyTorch's intra-op threads (OpenMP) work in lock-step: every parallel operation waits for its
slowest thread. When another program keeps one of two cores busy, the thread that shares a
core with it runs a fraction of the time and the other waits for it, so two threads go far
slower than one (measured on two cores: the tiny WaveNet trained at 0.048 s/step idle,
0.23 s/step beside one busy program with two threads, 0.071 s/step with one; beside two busy
programs, about 5 s/step). cadenza therefore chooses its thread count from what is free:

1. an explicit request wins: ``--threads N`` on the command line, else ``CADENZA_THREADS=N``
   in the environment (``auto``, ``0`` or empty: choose);
2. otherwise the CPUs this process may use (:func:`available_cpus`: its affinity mask and its
   cgroup's CPU quota, v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), less the CPUs other programs
   kept busy over a short window (:func:`busy_cpus`, from ``/proc/stat`` less this process's
   own CPU time), a CPU counting as free when at least three quarters of it is idle; at least
   1, and never more than the process had when cadenza first chose (torch's default, which
   ``OMP_NUM_THREADS`` or an earlier ``torch.set_num_threads`` sets).

:func:`configure` chooses and applies the count: ``torch.set_num_threads``,
``torch.set_num_interop_threads`` while torch still allows it, and the BLAS libraries'
thread pools (threadpoolctl, never above their own start); cadenza's numba loops run on one
thread or, the fused RMSprop, over ``torch.get_num_threads()`` workers, so they follow
(the evaluation's distance pools size themselves from the affinity mask; their threads do not
wait for each other in lock-step). The commands call it at start-up;
:class:`~cadenza.training.Trainer` calls :func:`ensure` (which configures once per process)
and :func:`refresh` between steps, which re-measures every :data:`RECHECK_SECONDS` from the
CPU time counted since the last look (no waiting) so that a program started or stopped later
in a long run is accounted for. ``cadenza doctor`` prints what would be chosen and why.

Subnormal floats (magnitudes below 1.2e-38 in float32) take a slow path on x86 CPUs, tens to
hundreds of cycles an operation, and training makes them: a saturated LSTM gate's derivative or a
small gradient squared. :func:`configure` therefore has the CPU treat them as zero
(:func:`flush_denormals`; ``CADENZA_DENORMALS=keep`` keeps them). Measured on an Intel Xeon
(2 cores): the study's tiny fft_fc slowed from 0.068 to 0.21 s/step within its first 1,500 steps
(fft_bilinear 0.079 to 0.27), and resumed from that state it trains at 0.071 s/step with
subnormals flushed against 0.20-0.22 without (``benchmarks/denormals.py``). The setting belongs to
each thread, and threads inherit it when they start: torch's intra-op pool, started at its first
parallel operation, must start after it, so the commands configure before any work.

Floating-point sums can round differently with another thread count: training of every
family differs in the last bits between one and two threads (generation's frames did not in
``benchmarks/shared_machine.py``; mel_rnn's audio did, through the mel inversion). A run, its
resumption and a generation are bit-for-bit reproducible at the same count: ``--threads N``
fixes it when the load may differ between the runs to compare.

Examples
--------
>>> from cadenza import threads
>>> threads.parse_request("3"), threads.parse_request("auto"), threads.parse_request(None)
(3, None, None)
>>> threads.quota_from_cpu_max("200000 100000"), threads.quota_from_cpu_max("max 100000")
(2.0, None)
>>> choice = threads.choose_threads(2)
>>> choice.threads, choice.source
(2, '--threads')
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from cadenza.errors import ParameterError

log = logging.getLogger(__name__)

__all__ = [
    "ENV_VAR",
    "RECHECK_SECONDS",
    "Choice",
    "Cpus",
    "available_cpus",
    "busy_cpus",
    "choose_threads",
    "configure",
    "current",
    "ensure",
    "refresh",
]

#: The environment variable of an explicit thread count (``auto`` or empty: choose).
ENV_VAR = "CADENZA_THREADS"
#: Seconds between two looks at the load during training (:func:`refresh`).
RECHECK_SECONDS = 10.0
#: The window of a fresh measurement of the load, in seconds.
WINDOW = 0.3
#: A CPU counts as free when at most this share of it is busy with other programs.
BUSY_TOLERANCE = 0.25

_CGROUP_ROOT = "/sys/fs/cgroup"
_PROC_CGROUP = "/proc/self/cgroup"
_PROC_STAT = "/proc/stat"


# ----------------------------------------------------------------------------- what we may use
def parse_request(value: object) -> int | None:
    """A thread count from ``--threads`` or :data:`ENV_VAR`: an int >= 1, or None for "choose"."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        text = str(value).strip().lower()
        if text in ("", "auto", "0"):
            return None
        try:
            n = int(text)
        except ValueError:
            raise ParameterError(f"threads: expected a whole number >= 1 or 'auto', got {value!r}") from None
    if n == 0:
        return None
    if n < 0:
        raise ParameterError(f"threads: expected a whole number >= 1 or 'auto', got {value!r}")
    return n


#: The help of ``--threads``, the same for every command.
HELP = (
    "CPU threads for the models (default: the CPUs other programs leave free, chosen at start and "
    f"re-checked during training; {ENV_VAR}=N sets a default; `cadenza doctor` shows the choice)"
)


def _argument(value: str) -> int | None:
    import argparse

    try:
        return parse_request(value)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("threads: ")) from None


def add_argument(parser: Any, help: str = HELP) -> None:
    """Add ``--threads N`` (an int >= 1, or ``auto``) to a command's parser."""
    parser.add_argument("--threads", type=_argument, default=None, metavar="N", help=help)


def affinity_cpus() -> int:
    """The CPUs the scheduler lets this process run on (``os.sched_getaffinity``), else all."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _affinity_set() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def quota_from_cpu_max(text: str) -> float | None:
    """CPUs of a cgroup v2 ``cpu.max`` line (``"200000 100000"`` -> 2.0; ``"max ..."`` -> None)."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = float(parts[0])
        period = float(parts[1]) if len(parts) > 1 else 100000.0
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_paths(proc_cgroup: str | os.PathLike) -> dict[str, str]:
    """Controller -> this process's cgroup path, from ``/proc/self/cgroup`` (v2: key ``""``)."""
    out: dict[str, str] = {}
    for line in (_read(Path(proc_cgroup)) or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        for controller in fields[1].split(",") if fields[1] else [""]:
            out[controller] = fields[2].strip()
    return out


def _ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and each folder above it up to ``base`` (the innermost first)."""
    parts = [p for p in rel.strip("/").split("/") if p and p != ".."]
    return [base.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]


def _v1_dirs(root: Path, controller: str) -> list[Path]:
    names = [controller, "cpu,cpuacct", "cpuacct,cpu"]
    return [root / n for n in dict.fromkeys(names) if (root / n).is_dir()]


def cgroup_quota(
    root: str | os.PathLike = _CGROUP_ROOT, proc_cgroup: str | os.PathLike = _PROC_CGROUP
) -> float | None:
    """CPUs this process's cgroup may use per period (the tightest limit on its path), or None.

    cgroup v2: ``cpu.max`` (``"QUOTA PERIOD"`` or ``"max PERIOD"``) of the process's cgroup and
    of every cgroup above it; v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: none).
    In a container the process's path is often not visible under ``root``; the files at
    ``root`` itself (the container's own cgroup) are read then.
    """
    root = Path(root)
    paths = _cgroup_paths(proc_cgroup)
    limits: list[float] = []
    if "" in paths or (root / "cpu.max").is_file():  # v2 (or hybrid with a unified hierarchy)
        for folder in _ancestors(root, paths.get("", "/")):
            text = _read(folder / "cpu.max")
            if text is not None and (q := quota_from_cpu_max(text)) is not None:
                limits.append(q)
    for base in _v1_dirs(root, "cpu"):
        for folder in _ancestors(base, paths.get("cpu", "/")):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            try:
                q, p = float(quota or "-1"), float(period or "0")
            except ValueError:
                continue
            if q > 0 and p > 0:
                limits.append(q / p)
    return min(limits) if limits else None


@dataclasses.dataclass(frozen=True)
class Cpus:
    """The CPUs this process may use: its affinity mask and its cgroup's quota."""

    affinity: int
    quota: float | None  # CPUs per period of the cgroup's quota; None: no quota

    @property
    def available(self) -> int:
        """The affinity count, lowered to the quota (rounded down, at least 1)."""
        if self.quota is None:
            return self.affinity
        return max(1, min(self.affinity, math.floor(self.quota + 1e-6)))

    def describe(self) -> str:
        quota = "no CPU quota" if self.quota is None else f"cgroup quota {self.quota:g} CPUs"
        return f"{self.available} CPUs available (affinity {self.affinity}, {quota})"


def available_cpus(
    root: str | os.PathLike = _CGROUP_ROOT, proc_cgroup: str | os.PathLike = _PROC_CGROUP
) -> Cpus:
    """The CPUs this process may use (see :class:`Cpus`)."""
    return Cpus(affinity_cpus(), cgroup_quota(root, proc_cgroup))


# ----------------------------------------------------------------------------- what is busy
@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Counters read at one instant; two of them give the CPUs busy in between."""

    when: float  # time.monotonic()
    own: float  # CPU seconds of this process (all its threads) and of its ended children
    busy: float | None  # CPU seconds busy on the CPUs of the affinity mask (None: unknown)
    cgroup: float | None  # CPU seconds used by this process's cgroup (None: unknown)


def _stat_busy(text: str, cpus: set[int] | None) -> float | None:
    """Busy CPU seconds on ``cpus`` from ``/proc/stat`` (all CPUs when ``cpus`` is None)."""
    hz = _clock_ticks()
    total = None
    per_cpu = 0.0
    seen = 0
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *fields = line.split()
        try:
            values = [float(v) for v in fields[:8]]
        except ValueError:
            continue
        values += [0.0] * (8 - len(values))
        # user nice system idle iowait irq softirq steal: busy is all but idle and iowait
        busy = sum(values) - values[3] - values[4]
        if name == "cpu":
            total = busy
        elif cpus is not None and name[3:].isdigit() and int(name[3:]) in cpus:
            per_cpu += busy
            seen += 1
    if cpus is not None and seen:
        return per_cpu / hz
    return None if total is None else total / hz


def _clock_ticks() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def _cgroup_usage(root: Path, proc_cgroup: str | os.PathLike) -> float | None:
    """CPU seconds used by this process's cgroup (v2 ``cpu.stat`` usage_usec, v1 cpuacct.usage)."""
    paths = _cgroup_paths(proc_cgroup)
    for folder in _ancestors(root, paths.get("", "/"))[:1] + [root]:
        for line in (_read(folder / "cpu.stat") or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                try:
                    return float(value) / 1e6
                except ValueError:
                    return None
    for base in _v1_dirs(root, "cpuacct"):
        for folder in _ancestors(base, paths.get("cpuacct", "/"))[:1] + [base]:
            text = _read(folder / "cpuacct.usage")
            if text is not None:
                try:
                    return float(text) / 1e9
                except ValueError:
                    return None
    return None


def snapshot(
    root: str | os.PathLike = _CGROUP_ROOT,
    proc_cgroup: str | os.PathLike = _PROC_CGROUP,
    proc_stat: str | os.PathLike = _PROC_STAT,
) -> Snapshot:
    """Read the counters now (a few file reads; no waiting)."""
    text = _read(Path(proc_stat))
    busy = _stat_busy(text, _affinity_set()) if text else None
    return Snapshot(time.monotonic(), _own_cpu_seconds(), busy, _cgroup_usage(Path(root), proc_cgroup))


def _own_cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and of its children that have ended.

    The children count as our own: without them, the workers of ``cadenza prepare`` that a
    study or the demo ran just before training looked like other programs, and training
    started on one thread of two.
    """
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def busy_between(a: Snapshot, b: Snapshot, cpus: Cpus) -> float | None:
    """CPUs of :attr:`Cpus.available` that other programs kept busy between two snapshots.

    The busy time of the affinity CPUs less this process's own (and less the CPUs a quota
    keeps from this process anyway); where a quota limits the cgroup below its CPUs, the
    cgroup's usage less our own counts too. The larger wins; None: not measurable here.
    """
    elapsed = b.when - a.when
    if elapsed <= 0:
        return None
    own = max(0.0, b.own - a.own)
    found = []
    if a.busy is not None and b.busy is not None:
        # others on our CPUs, less the CPUs a quota keeps from us anyway
        found.append((b.busy - a.busy - own) / elapsed - (cpus.affinity - cpus.available))
    if (
        cpus.quota is not None
        and cpus.quota < cpus.affinity
        and a.cgroup is not None
        and b.cgroup is not None
    ):
        found.append((b.cgroup - a.cgroup - own) / elapsed)  # others in our cgroup share its quota
    if not found:
        return None
    return max(0.0, min(float(cpus.available), max(found)))


def busy_cpus(window: float = WINDOW) -> float | None:
    """CPUs other programs keep busy, measured over ``window`` seconds (None: not measurable).

    Linux: ``/proc/stat`` (and the cgroup's usage) less this process's own CPU time. Elsewhere
    the 1-minute load average is the best estimate there is.
    """
    cpus = available_cpus()
    a = snapshot()
    if a.busy is None and a.cgroup is None:
        return _loadavg_busy()
    time.sleep(window)
    return busy_between(a, snapshot(), cpus)


def _loadavg_busy() -> float | None:
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15-minute load averages (None where the system has none)."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


# ----------------------------------------------------------------------------- the choice
@dataclasses.dataclass(frozen=True)
class Choice:
    """A thread count and why it was chosen."""

    threads: int
    source: str  # "--threads", "CADENZA_THREADS" or "free CPUs"
    cpus: Cpus
    busy: float | None  # CPUs other programs kept busy (measured), None when not measured
    cap: int  # the most an automatic choice may give

    @property
    def explicit(self) -> bool:
        return self.source != "free CPUs"

    def describe(self) -> str:
        """One line for ``cadenza doctor`` and the log."""
        if self.explicit:
            return f"{self.threads} (set by {self.source}; {self.cpus.describe()})"
        if self.busy is None:
            why = "the load is not measurable here"
        else:
            why = f"other programs keep {self.busy:.1f} of them busy"
        cap = f", at most {self.cap}" if self.cap < self.cpus.available else ""
        return f"{self.threads} ({self.cpus.describe()}; {why}{cap}; --threads N to choose)"


def threads_for(cpus: Cpus, busy: float | None, cap: int) -> int:
    """The automatic count: CPUs at least three quarters free, at least 1, at most ``cap``.

    >>> threads_for(Cpus(2, None), 0.1, 2), threads_for(Cpus(2, None), 1.0, 2)
    (2, 1)
    >>> threads_for(Cpus(8, 4.0), 1.0, 8), threads_for(Cpus(2, None), 3.0, 2)
    (3, 1)
    """
    free = cpus.available - (busy or 0.0)
    return max(1, min(cap, cpus.available, math.floor(free + BUSY_TOLERANCE + 1e-9)))


# what the process had before cadenza changed it, and what cadenza set last
_baseline: int | None = None
_applied: int | None = None
_choice: Choice | None = None
_mark: Snapshot | None = None
_last_check: Snapshot | None = None
_blas_baseline: dict[str, int] = {}


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _cap() -> int:
    """The most an automatic choice gives: the count the process had before cadenza set one."""
    global _baseline
    now = _torch_threads()
    if now is not None and (_baseline is None or now != _applied):
        _baseline = now  # first look, or someone else changed it since: their count is the cap
    if _baseline is not None:
        return _baseline
    env = parse_request(os.environ.get("OMP_NUM_THREADS"))  # torch not loaded: what it would start with
    return env or affinity_cpus()


def mark() -> None:
    """Start measuring the load now (cheap); :func:`configure` then needs no wait of its own.

    The commands call it before they import torch, so the import's second is the window.
    """
    global _mark
    _mark = snapshot()


def choose_threads(requested: object = None, *, window: float = WINDOW, env: bool = True) -> Choice:
    """The thread count to use: ``requested``, else :data:`ENV_VAR` (``env``), else the free CPUs.

    ``requested`` is ``--threads`` (an int, a string, ``"auto"`` or None). The load is measured
    from the latest :func:`mark` when it is 0.2-10 s old, else over ``window`` seconds.
    """
    cpus = available_cpus()
    cap = _cap()
    n = parse_request(requested)
    if n is not None:
        return Choice(n, "--threads", cpus, None, cap)
    try:
        n = parse_request(os.environ.get(ENV_VAR)) if env else None
    except ParameterError as exc:
        raise ParameterError(f"{ENV_VAR}={os.environ[ENV_VAR]!r}: {exc}") from None
    if n is not None:
        return Choice(n, ENV_VAR, cpus, None, cap)
    busy = _measure(cpus, window)
    return Choice(threads_for(cpus, busy, cap), "free CPUs", cpus, busy, cap)


def _measure(cpus: Cpus, window: float) -> float | None:
    global _last_check
    start = _mark
    now = snapshot()
    if start is None or not 0.2 <= now.when - start.when <= 10.0:
        if now.busy is None and now.cgroup is None:
            return _loadavg_busy()
        time.sleep(window)
        start, now = now, snapshot()
    _last_check = now
    return busy_between(start, now, cpus)


def _apply(n: int, *, first: bool) -> None:
    global _applied
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if first:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # inter-op work has started (or it was set): torch allows it once
            pass
    _apply_blas(n)
    _applied = n


def _apply_blas(n: int) -> None:
    """The BLAS libraries loaded now (numpy's, scipy's) to ``n`` threads, never above their own start."""
    try:
        from threadpoolctl import ThreadpoolController

        for lib in ThreadpoolController().lib_controllers:
            if lib.user_api != "blas":
                continue
            target = min(n, _blas_baseline.setdefault(lib.filepath, lib.num_threads))
            if lib.num_threads != target:
                lib.set_num_threads(target)
    except Exception as exc:  # pragma: no cover - threadpoolctl is a dependency
        log.debug("could not limit the BLAS threads (%s)", exc)


#: ``CADENZA_DENORMALS=keep`` leaves subnormal floats as they are (see :func:`flush_denormals`).
DENORMALS_ENV = "CADENZA_DENORMALS"
_flushing: bool | None = None


def flush_denormals() -> bool:
    """Have this thread, and the threads started from it later, treat subnormal floats as zero.

    ``torch.set_flush_denormal`` (x86's flush-to-zero and denormals-are-zero) unless
    ``CADENZA_DENORMALS=keep``. Returns whether subnormals are now flushed (False where the CPU
    cannot or the user kept them). Threads that already run (torch's intra-op pool after its
    first parallel operation) keep their own setting: call it before any work.
    """
    global _flushing
    if _flushing is None:
        import torch

        _flushing = False if keep_denormals() else bool(torch.set_flush_denormal(True))
    return _flushing


def keep_denormals() -> bool:
    """Whether the user asked to keep subnormal floats (``CADENZA_DENORMALS=keep``)."""
    return os.environ.get(DENORMALS_ENV, "").strip().lower() == "keep"


def configure(requested: object = None, *, window: float = WINDOW) -> Choice:
    """Choose the thread count (see :func:`choose_threads`) and apply it to torch and BLAS.

    What the commands call with their ``--threads``; the choice is kept for :func:`current`
    and re-checked by :func:`refresh` when it was automatic.
    """
    global _choice
    first = _choice is None
    flush_denormals()
    choice = choose_threads(requested, window=window)
    _apply(choice.threads, first=first)
    _choice = choice
    level = logging.INFO if not choice.explicit and choice.threads < choice.cap else logging.DEBUG
    log.log(level, "threads: %s", choice.describe())
    return choice


def ensure() -> Choice:
    """The choice of this process, made now (:func:`configure`) when none was made yet."""
    return _choice if _choice is not None else configure()


def current() -> Choice | None:
    """The choice :func:`configure` made last in this process (None: none yet)."""
    return _choice


def refresh(*, every: float = RECHECK_SECONDS) -> int | None:
    """Between training steps: re-measure the load every ``every`` seconds and re-apply.

    Costs one clock read between checks; a check reads a few counters and measures the CPUs
    other programs used since the last one (this process's own time left out). Does nothing
    for an explicit choice or before :func:`configure`. Returns the new count when it changed.
    """
    global _choice, _last_check
    choice = _choice
    if choice is None or choice.explicit:
        return None
    last = _last_check
    now_t = time.monotonic()
    if last is not None and now_t - last.when < every:
        return None
    now = snapshot()
    _last_check = now
    if last is None:
        return None
    cap = _cap()
    busy = busy_between(last, now, choice.cpus)
    if busy is None:
        return None
    n = threads_for(choice.cpus, busy, cap)
    _choice = dataclasses.replace(choice, threads=n, busy=busy, cap=cap)
    if n == _applied:
        return None
    _apply(n, first=False)
    log.info("threads: now %s", _choice.describe())
    return n


def _reset() -> None:
    """Forget every choice and give the BLAS libraries their own counts back (tests)."""
    global _baseline, _applied, _choice, _mark, _last_check
    _baseline = _applied = None
    _choice = _mark = _last_check = None
    if _blas_baseline:
        from threadpoolctl import ThreadpoolController

        for lib in ThreadpoolController().lib_controllers:
            if lib.filepath in _blas_baseline and lib.num_threads != _blas_baseline[lib.filepath]:
                lib.set_num_threads(_blas_baseline[lib.filepath])
        _blas_baseline.clear()
