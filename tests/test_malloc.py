"""tcmalloc for the CPU-heavy commands: the re-exec, its opt-out, and why (pages are reused)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cadenza import _malloc, cli

needs_tcmalloc = pytest.mark.skipif(
    _malloc.find_tcmalloc() is None, reason="libtcmalloc-minimal4 not installed"
)

REEXEC = """
import sys
from cadenza._malloc import reexec_under_tcmalloc
reexec_under_tcmalloc([sys.executable, "-c", sys.argv[1]])
exec(sys.argv[1])  # reached only when not re-run
"""

# Allocate and free 256 MB six times; print the page faults and the resident size of each round.
ROUNDS = """
import resource, torch
from cadenza._malloc import active_allocator
print(active_allocator())
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(64 << 20)
    del x
    rss = int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, rss)
"""


def run(code: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "CADENZA_MALLOC")}
    out = subprocess.run(
        [sys.executable, "-c", REEXEC, code], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return out.stdout.split("\n")


@needs_tcmalloc
def test_reexec_puts_the_process_under_tcmalloc_unless_told_not_to() -> None:
    code = "from cadenza._malloc import active_allocator; print(active_allocator())"
    assert run(code)[0] == "tcmalloc"
    assert run(code, CADENZA_MALLOC="system")[0] == "system"
    # an allocator the user preloads is left alone
    jemalloc = "/nonexistent/libjemalloc.so.2"
    assert run(code, LD_PRELOAD=jemalloc)[0] == "system"


@needs_tcmalloc
def test_under_tcmalloc_a_freed_large_tensor_is_reused_and_memory_stays_flat() -> None:
    lines = [line.split() for line in run(ROUNDS)[1:] if line]
    faults = [int(f) for f, _ in lines]
    rss = [int(r) for _, r in lines]
    assert max(faults[1:]) < 2000  # 256 MB is 65536 pages of 4 KiB
    assert max(rss) - rss[1] < 64  # MB: no growth round after round
    lines = [line.split() for line in run(ROUNDS, CADENZA_MALLOC="system")[1:] if line]
    assert min(int(f) for f, _ in lines[1:]) > 30000  # glibc maps the block afresh each round


def test_cli_reexecs_only_the_heavy_verbs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake(argv: list[str]) -> None:
        calls.append(argv)
        raise SystemExit(0)  # stands in for exec, which never returns

    monkeypatch.setattr(_malloc, "reexec_under_tcmalloc", fake)
    monkeypatch.setattr(sys, "argv", ["cadenza", "-v", "train", "fft_base-tiny", "--data", "d"])
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == [[sys.executable, "-m", "cadenza", "-v", "train", "fft_base-tiny", "--data", "d"]]
    calls.clear()
    monkeypatch.setattr(sys, "argv", ["cadenza", "doctor", "--help"])
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == []  # light verbs are not re-run
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])  # a call from Python is never re-run
    assert calls == []
