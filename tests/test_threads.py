"""cadenza.threads: the CPUs a process may use, the load, the chosen thread count, and a real
competing program (training beside it keeps a fair share of its idle speed)."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cadenza import threads
from cadenza.errors import ParameterError
from cadenza.threads import Cpus, Snapshot


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch):
    """No choice made yet, no CADENZA_THREADS; torch's thread count restored afterwards."""
    before = torch.get_num_threads()
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    threads._reset()
    yield
    threads._reset()
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- requests
@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), (3, 3), ("2", 2), (" 4 ", 4), ("auto", None), ("", None), (0, None)]
)
def test_a_request_is_a_count_or_auto(value: object, expected: int | None) -> None:
    assert threads.parse_request(value) == expected


@pytest.mark.parametrize("value", ["-1", "two", "1.5", -2])
def test_a_bad_request_is_a_parameter_error(value: object) -> None:
    with pytest.raises(ParameterError, match="whole number"):
        threads.parse_request(value)


def test_an_explicit_request_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.ENV_VAR, "3")
    choice = threads.choose_threads(5)
    assert (choice.threads, choice.source, choice.explicit) == (5, "--threads", True)
    choice = threads.choose_threads(None)
    assert (choice.threads, choice.source) == (3, "CADENZA_THREADS")
    assert "set by CADENZA_THREADS" in choice.describe()
    monkeypatch.setenv(threads.ENV_VAR, "auto")
    assert threads.choose_threads(None, window=0.05).source == "free CPUs"
    monkeypatch.setenv(threads.ENV_VAR, "many")
    with pytest.raises(ParameterError, match="CADENZA_THREADS='many'"):
        threads.choose_threads(None)


def test_configure_applies_the_count_to_torch_and_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    choice = threads.configure(1)
    assert torch.get_num_threads() == 1 and threads.current() is choice
    assert threads.ensure() is choice  # made once per process
    assert threads.refresh(every=0.0) is None  # an explicit count is never re-checked


# ----------------------------------------------------------------------------- what we may use
def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_tightest_on_the_path(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc-cgroup"
    write(proc, "0::/user.slice/job\n")
    write(root / "cpu.max", "max 100000\n")
    write(root / "user.slice" / "cpu.max", "300000 100000\n")
    write(root / "user.slice" / "job" / "cpu.max", "150000 100000\n")
    assert threads.cgroup_quota(root, proc) == 1.5
    write(root / "user.slice" / "job" / "cpu.max", "max 100000\n")
    assert threads.cgroup_quota(root, proc) == 3.0
    assert threads.quota_from_cpu_max("max") is None and threads.quota_from_cpu_max("50000") == 0.5


def test_cgroup_v2_in_a_container_reads_its_own_root(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc-cgroup"
    write(proc, "0::/\n")
    write(root / "cpu.max", "200000 100000\n")
    assert threads.cgroup_quota(root, proc) == 2.0
    write(proc, "0::/docker/abc\n")  # a path the container cannot see: its root's files count
    assert threads.cgroup_quota(root, proc) == 2.0


def test_cgroup_v1_quota_and_no_quota(tmp_path: Path) -> None:
    root, proc = tmp_path / "cgroup", tmp_path / "proc-cgroup"
    write(proc, "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n")
    job = root / "cpu,cpuacct" / "docker" / "abc"
    write(job / "cpu.cfs_quota_us", "50000\n")
    write(job / "cpu.cfs_period_us", "100000\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert threads.cgroup_quota(root, proc) == 0.5
    write(job / "cpu.cfs_quota_us", "-1\n")
    assert threads.cgroup_quota(root, proc) is None
    assert threads.cgroup_quota(tmp_path / "nothing", tmp_path / "missing") is None


def test_available_cpus_follow_affinity_and_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Cpus(4, None).available == 4
    assert Cpus(4, 1.5).available == 1 and Cpus(4, 0.5).available == 1 and Cpus(2, 8.0).available == 2
    assert "cgroup quota 1.5 CPUs" in Cpus(4, 1.5).describe()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    root, proc = tmp_path / "cgroup", tmp_path / "proc-cgroup"
    write(proc, "0::/\n")
    write(root / "cpu.max", "300000 100000\n")
    assert threads.available_cpus(root, proc) == Cpus(6, 3.0)
    assert threads.available_cpus(root, proc).available == 3


# ----------------------------------------------------------------------------- what is busy
STAT = """cpu  {t0} 0 0 {i0} 0 0 0 0 0 0
cpu0 {a} 0 0 {ia} 5 0 0 0 0 0
cpu1 {b} 0 0 {ib} 0 0 0 0 0 0
cpu2 {c} 0 0 {ic} 0 0 0 0 0 0
intr 1 2 3
"""


def test_proc_stat_busy_counts_only_our_cpus() -> None:
    text = STAT.format(t0=600, i0=900, a=100, ia=300, b=200, ib=300, c=300, ic=300)
    hz = threads._clock_ticks()
    assert threads._stat_busy(text, {0, 1}) == pytest.approx(300 / hz)
    assert threads._stat_busy(text, None) == pytest.approx(600 / hz)
    assert threads._stat_busy(text, {7}) == pytest.approx(600 / hz)  # unknown CPUs: the total


def test_busy_between_leaves_out_our_own_time() -> None:
    cpus = Cpus(2, None)
    a = Snapshot(when=10.0, own=5.0, busy=100.0, cgroup=None)
    # 2 s: 3 CPU-seconds busy on our CPUs, 2 of them ours: others kept 0.5 CPU busy
    b = Snapshot(when=12.0, own=7.0, busy=103.0, cgroup=None)
    assert threads.busy_between(a, b, cpus) == pytest.approx(0.5)
    assert threads.busy_between(b, a, cpus) is None
    # a quota of 1.5 CPUs in a 4-CPU mask: others in our cgroup use 1 CPU of it
    quota = Cpus(4, 1.5)
    a = Snapshot(10.0, 5.0, 100.0, 50.0)
    b = Snapshot(12.0, 6.0, 101.0, 53.0)
    assert threads.busy_between(a, b, quota) == pytest.approx(1.0)
    assert threads.threads_for(quota, 1.0, 8) == 1


def test_our_own_ended_children_are_not_other_programs() -> None:
    # A study prepares its stores in worker processes and then trains: the workers' CPU time
    # must count as our own, not as programs competing for the CPUs.
    a = threads.snapshot()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass",
        ],
        check=True,
    )
    b = threads.snapshot()
    assert b.own - a.own >= 0.9


def test_threads_for_counts_a_cpu_free_when_three_quarters_idle() -> None:
    two = Cpus(2, None)
    assert [threads.threads_for(two, b, 2) for b in (0.0, 0.2, 0.3, 1.0, 1.9, 5.0)] == [2, 2, 1, 1, 1, 1]
    assert threads.threads_for(two, None, 2) == 2  # not measurable: every available CPU
    assert threads.threads_for(Cpus(16, None), 2.0, 8) == 8  # never above the process's own count
    assert threads.threads_for(Cpus(16, None), 2.0, 16) == 14


def test_the_cap_is_what_the_process_had(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    choice = threads.configure(window=0.05)
    assert choice.cap == 1 and choice.threads == 1 and torch.get_num_threads() == 1


def test_refresh_follows_programs_that_start_and_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cpus", lambda *a: Cpus(2, None))
    torch.set_num_threads(2)
    quiet = [Snapshot(time.monotonic() - 20, 0.0, 0.0, None), Snapshot(time.monotonic(), 0.0, 0.0, None)]
    monkeypatch.setattr(threads, "snapshot", lambda *a: quiet.pop(0))
    choice = threads.configure()
    assert choice.threads == 2 and choice.busy == 0.0 and torch.get_num_threads() == 2
    assert threads.refresh() is None  # less than RECHECK_SECONDS since the last look: nothing read
    # 10 s later another program has kept one CPU busy (our own 15 CPU-seconds left out)
    last = threads._last_check
    threads._last_check = Snapshot(time.monotonic() - 10, last.own, last.busy, None)
    busy = Snapshot(time.monotonic(), last.own + 15.0, last.busy + 25.0, None)
    monkeypatch.setattr(threads, "snapshot", lambda *a: busy)
    assert threads.refresh() == 1 and torch.get_num_threads() == 1
    assert threads.current().busy == pytest.approx(1.0, abs=0.01)
    # and stopped again
    threads._last_check = Snapshot(time.monotonic() - 10, busy.own, busy.busy, None)
    idle = Snapshot(time.monotonic(), busy.own + 10.0, busy.busy + 10.0, None)
    monkeypatch.setattr(threads, "snapshot", lambda *a: idle)
    assert threads.refresh() == 2 and torch.get_num_threads() == 2


# ----------------------------------------------------------------------------- the commands
def test_every_heavy_command_takes_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from cadenza.cli import build_parser
    from cadenza.commands.prepare import default_workers

    parser = build_parser()
    for argv in (
        ["train", "fft_base-tiny"],
        ["generate", "runs/x"],
        ["evaluate", "runs/x"],
        ["demo"],
        ["prepare", "music21:bach", "out"],
    ):
        assert parser.parse_args([*argv, "--threads", "3"]).threads == 3
        assert parser.parse_args([*argv, "--threads", "auto"]).threads is None
        assert parser.parse_args(argv).threads is None
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "fft_base-tiny", "--threads", "-1"])
    assert default_workers(3) == 3
    monkeypatch.setenv(threads.ENV_VAR, "1")
    assert default_workers() == 1


def test_doctor_reports_cpus_load_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from cadenza.doctor import check_cpus

    checks = {c.name: c for c in check_cpus()}
    assert set(checks) == {"cpus", "load", "threads", "denormals"}
    assert checks["denormals"].detail.startswith("treated as zero")
    assert "affinity" in checks["cpus"].detail and "busy" in checks["load"].detail
    assert "--threads N" in checks["threads"].detail
    monkeypatch.setenv(threads.ENV_VAR, "1")
    threads._reset()
    detail = {c.name: c for c in check_cpus()}["threads"].detail
    assert detail.startswith("1 (set by CADENZA_THREADS; the free CPUs would give")
    # a value other than keep (a typo) leaves subnormals flushed: said, not passed over as set
    monkeypatch.setenv(threads.DENORMALS_ENV, "kep")
    check = {c.name: c for c in check_cpus()}["denormals"]
    assert not check.ok and "CADENZA_DENORMALS='kep' means nothing" in check.detail
    assert "set CADENZA_DENORMALS=keep" in check.cost
    monkeypatch.setenv(threads.DENORMALS_ENV, "keep")
    check = {c.name: c for c in check_cpus()}["denormals"]
    assert check.ok and check.detail.startswith("kept as they are")


# ----------------------------------------------------------------------------- subnormal floats
SUBNORMALS_LEFT = """
import torch
from cadenza import threads
threads.configure(2)
a = torch.full((1 << 21,), 1e-39)  # subnormal in float32; each intra-op thread takes a part
print(int(((a * 1.5) > 0).sum()), int(((a.numpy() * 1.5) > 0).sum()))
"""


@pytest.mark.parametrize(("keep", "left"), [(None, 0), ("keep", 1 << 21)])
def test_configure_flushes_subnormals_in_every_thread_unless_kept(keep: str | None, left: int) -> None:
    """Flushed in torch's intra-op threads too (set before they start), and in numpy (and so in
    the numba kernels, on threads started later): a subnormal times 1.5 is zero."""
    env = {k: v for k, v in os.environ.items() if k not in (threads.DENORMALS_ENV, threads.ENV_VAR)}
    if keep:
        env[threads.DENORMALS_ENV] = keep
    out = subprocess.run(
        [sys.executable, "-c", SUBNORMALS_LEFT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split() == [str(left), str(left)], out.stderr


# ----------------------------------------------------------------------------- a real competitor
def tiny_lstm_step():
    """One training step of a tiny LSTM (as the FFT LSTMs, smaller): a few parallel regions."""
    torch.manual_seed(0)
    lstm, head = torch.nn.LSTM(128, 128, batch_first=True), torch.nn.Linear(128, 128)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], 1e-3)
    x, y = torch.randn(32, 8, 128), torch.randn(32, 8, 128)

    def step() -> None:
        opt.zero_grad()
        out, _ = lstm(x)
        torch.nn.functional.mse_loss(head(out), y).backward()
        opt.step()

    return step


def steps_per_second(step, seconds: float) -> float:
    """Steps per second over at least ``seconds`` (and at least one step)."""
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="pauses its competitors with SIGSTOP")
def test_beside_busy_programs_the_chosen_threads_keep_a_fair_share() -> None:
    """One, then two ``while True: pass`` programs: the chosen count drops, and training keeps
    a fair share of its idle speed, no slower than all threads forced.

    The issue's 0.45x (one) and 0.25x (two) are measured by ``benchmarks/shared_machine.py`` on
    a quiet machine (met by every family). Here the suite's other worker may be busy too, which
    makes "idle" half a machine and one rival two (0.447 was seen once): the test asks for
    0.3x and 0.15x, far above what all threads forced keep (0.01-0.05x).

    Interleaved and relative, for a machine that other jobs share: the competitors are paused
    (SIGSTOP) for the idle figure and resumed (SIGCONT) for the others, in rounds of short
    measurements side by side; each ratio is the median over the rounds of the ratio within
    a round, so a burst of other work hits one round's pair, not the result.
    """
    cpus = threads.available_cpus().available
    if cpus < 2:
        pytest.skip("one CPU: nothing to choose")
    forced = min(cpus, 8)  # torch's default: a thread per CPU (other tests may have set 1)
    torch.set_num_threads(forced)
    threads._reset()  # the cap: torch's count now
    step = tiny_lstm_step()
    step()
    # Sessions of their own, as programs started elsewhere: Linux shares the CPUs between
    # sessions first (autogroups), so rivals in ours would take our share, not the machine's.
    rivals = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(2)
    ]
    rates: dict[str, list[float]] = {}
    chosen: dict[int, list[int]] = {1: [], 2: []}

    def measure(key: str) -> None:
        rates.setdefault(key, []).append(steps_per_second(step, 0.35))

    try:
        for rival in rivals:
            rival.send_signal(signal.SIGSTOP)
        for _ in range(4):
            threads.configure()
            measure("idle")
            for k, rival in enumerate(rivals, start=1):
                rival.send_signal(signal.SIGCONT)
                chosen[k].append(threads.configure().threads)
                measure(f"chosen{k}")
                torch.set_num_threads(forced)
                measure(f"forced{k}")
            for rival in rivals:
                rival.send_signal(signal.SIGSTOP)
    finally:
        for rival in rivals:
            rival.kill()
            rival.wait()

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b]))

    steps = {k: [round(x) for x in v] for k, v in rates.items()}
    report = f"chosen threads {chosen}, steps/s {steps}"
    assert max(chosen[1]) <= cpus - 1, report  # our program is seen
    assert max(chosen[2]) <= max(1, cpus - 2), report
    assert ratio("chosen1", "forced1") >= 0.8, report  # not slower than all threads forced
    assert ratio("chosen2", "forced2") >= 0.8, report
    assert ratio("chosen1", "idle") >= 0.3, report  # a fair share (see above)
    assert ratio("chosen2", "idle") >= 0.15, report
