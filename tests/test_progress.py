"""Progress: a tqdm bar on a terminal, rate-limited plain lines elsewhere, nothing when disabled."""

from __future__ import annotations

import io
import sys

import pytest

from cadenza import progress as progress_module
from cadenza.progress import progress


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(progress_module, "_clock", fake)
    return fake


def _stderr(monkeypatch: pytest.MonkeyPatch, *, tty: bool) -> _Stream:
    stream = _Stream(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    return stream


def test_terminal_gets_a_tqdm_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm import tqdm

    err = _stderr(monkeypatch, tty=True)
    with progress(total=20, initial=2, desc="epoch 1/3", unit="step") as bar:
        assert bar.mode == "bar" and isinstance(bar._bar, tqdm)
        for _ in range(3):
            bar.update(1)
        bar.set_postfix({"loss": "0.97"}, refresh=False)
        bar.set_postfix(lr="0.001", refresh=True)
        bar.set_description("epoch 2/3", refresh=True)
        assert bar.n == 5 and bar._bar.n == 5
    text = err.getvalue()
    assert "\r" in text and "epoch 2/3" in text and "lr=0.001" in text and "5/20" in text
    assert bar.mode == "closed"


def test_elsewhere_plain_lines_at_most_every_interval(monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    err = _stderr(monkeypatch, tty=False)
    bar = progress(total=120, desc="epoch 3/20", unit="step", interval=5.0)
    assert bar.mode == "lines" and bar._bar is None
    bar.set_postfix({"loss": 0.9712, "lr": "0.001"}, refresh=False)
    for _ in range(12):  # 12 steps in 3 s: too soon for a line
        clock.now += 0.25
        bar.update(1)
    assert err.getvalue() == ""
    clock.now += 2.0  # 5 s after the start
    bar.update(1)
    assert err.getvalue().splitlines() == [
        "epoch 3/20: 13/120 steps (11%), 2.6 step/s, 0:41 left, loss=0.9712, lr=0.001"
    ]
    for _ in range(40):  # 40 steps in 2.5 s after that line: no new one
        clock.now += 0.0625
        bar.update(1)
    assert len(err.getvalue().splitlines()) == 1
    clock.now += 2.5
    bar.update(1)  # 5 s after the last line
    assert len(err.getvalue().splitlines()) == 2
    clock.now += 0.5
    bar.update(1)
    bar.close()  # the final count, once
    bar.close()
    lines = err.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("epoch 3/20: 55/120 steps (46%)")
    assert "\r" not in err.getvalue()


def test_plain_lines_end_with_the_final_count_once(monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    err = _stderr(monkeypatch, tty=False)
    with progress(total=3, initial=1, desc="prepare", unit="file") as bar:
        clock.now += 1.0
        bar.update(2)
        bar.set_postfix(hours="0.01", skipped=0)
    assert err.getvalue() == "prepare: 3/3 files (100%), 2 file/s, hours=0.01, skipped=0\n"
    # Closed right after a line: no repeat.
    err.truncate(0)
    err.seek(0)
    bar = progress(total=None, unit="item", interval=1.0)
    clock.now += 2.0
    bar.update(7)
    bar.close()
    assert err.getvalue() == "7 items, 3.5 item/s\n"


def test_iterable_and_disabled(monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    err = _stderr(monkeypatch, tty=False)
    bar = progress(range(4), desc="copy", unit="file")
    assert bar.total == 4 and list(bar) == [0, 1, 2, 3] and bar.n == 4
    assert err.getvalue().startswith("copy: 4/4 files (100%)") and bar.mode == "closed"
    err.truncate(0)
    err.seek(0)
    with progress(total=10, enabled=False) as quiet:
        quiet.update(10)
        quiet.set_postfix(loss=1.0)
        quiet.set_description("silent")
    assert quiet.n == 10 and err.getvalue() == ""
    with pytest.raises(TypeError, match="no iterable"):
        iter(progress(total=3, enabled=False)).__next__()
