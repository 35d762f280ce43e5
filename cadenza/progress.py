"""Progress that suits where the output goes: a tqdm bar on a terminal, plain lines elsewhere.

A bar redraws itself many times a second; written into a log that is not a terminal (CI,
``nohup``, a pipe into a file) every redraw stays behind as a line of carriage returns. So
:func:`progress` draws a bar only when ``stderr`` is a terminal (or a notebook), and otherwise
prints one plain line at most every ``interval`` seconds, and one at the end::

    epoch 3/20: 120/1200 steps (10%), 3.1 step/s, 5:48 left, loss=0.97, lr=0.001
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["Progress", "progress"]

#: Seconds between two plain lines, by default.
DEFAULT_INTERVAL = 5.0

#: The clock of the plain lines; tests replace it.
_clock = time.monotonic


def _on_terminal() -> bool:
    """True when a bar can redraw in place: ``stderr`` is a terminal, or we run in a notebook."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def format_duration(seconds: float) -> str:
    """``"5:48"``, ``"1:02:03"``: a duration as the progress lines write it."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts work done and shows it; made by :func:`progress`, which says how it shows.

    The methods are those of a ``tqdm`` bar that cadenza uses, so either can stand in for the
    other: :meth:`update`, :meth:`set_postfix`, :meth:`set_description`, :meth:`close`, iteration
    over the wrapped iterable, and use as a context manager.
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None,
        *,
        total: int | None,
        initial: int,
        desc: str,
        unit: str,
        mode: str,
        interval: float,
    ) -> None:
        self.iterable = iterable
        self.total = total
        self.n = initial
        self.desc = desc
        self.unit = unit
        self.mode = mode
        self.interval = interval
        self.postfix: dict[str, Any] = {}
        self._initial = initial
        self._start = self._last_time = _clock()
        self._last_n: int | None = None
        self._bar: Any = None
        if mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

    # -- counting
    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and _clock() - self._last_time >= self.interval:
            self._print()

    def set_postfix(
        self, values: Mapping[str, Any] | None = None, *, refresh: bool = False, **kw: Any
    ) -> None:
        """Show ``key=value`` pairs after the count (``loss=0.97, lr=0.001``), replacing earlier ones.

        ``refresh`` redraws a bar at once (as in tqdm); plain lines wait for their turn.
        """
        self.postfix = {**(values or {}), **kw}
        if self._bar is not None:
            self._bar.set_postfix(self.postfix, refresh=refresh)

    def set_description(self, desc: str, *, refresh: bool = False) -> None:
        """Change the label before the count (``"epoch 4/20"``)."""
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc, refresh=refresh)

    def close(self) -> None:
        """Finish: a bar is closed; plain lines end with one for the final count (if it is new)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self._last_n != self.n:
            self._print()
        self.mode = "closed"

    # -- plain lines
    def line(self) -> str:
        """The plain line for the count now: ``desc: 12/120 steps (10%), 3.1 step/s, loss=0.97``."""
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        parts = [f"{self.n}/{self.total} {units}" if self.total else f"{self.n} {units}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        elapsed = _clock() - self._start
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"{format_duration((self.total - self.n) / rate)} left")
        parts += [f"{k}={_format(v)}" for k, v in self.postfix.items()]
        text = ", ".join(parts)
        return f"{self.desc}: {text}" if self.desc else text

    def _print(self) -> None:
        print(self.line(), file=sys.stderr, flush=True)
        self._last_time, self._last_n = _clock(), self.n

    # -- protocols
    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("this progress wraps no iterable; call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _format(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    initial: int = 0,
    desc: str = "",
    unit: str = "item",
    enabled: bool = True,
    interval: float = DEFAULT_INTERVAL,
) -> Progress:
    """Show progress over ``iterable`` or ``total`` units, in the way the output can take it.

    On a terminal (``sys.stderr.isatty()``) or in a notebook this is a tqdm bar. Elsewhere (CI,
    ``nohup``, a pipe) it prints a plain line to ``stderr`` at most every ``interval`` seconds,
    and one when it closes. Disabled, it counts and shows nothing.

    Parameters
    ----------
    iterable : iterable, optional
        Wrap it: iterating yields its items and counts one unit for each, then closes.
    total : int, optional
        Units expected (default: ``len(iterable)`` when it has one); unknown leaves the
        percentage and the time left out.
    initial : int
        Units already done (a resumed job); the rate counts only the new ones.
    desc : str
        Label before the count (``"prepare"``, ``"epoch 3/20"``).
    unit : str
        Name of one unit (``"file"``, ``"step"``); plain lines add an "s" for the count.
    enabled : bool
        False shows nothing.
    interval : float
        Least seconds between two plain lines.

    Returns
    -------
    Progress

    Examples
    --------
    >>> with progress(total=3, desc="demo", unit="file", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    ...         bar.set_postfix(hours=0.5)
    >>> bar.n, bar.line()  # doctest: +ELLIPSIS
    (3, 'demo: 3/3 files (100%), ... file/s, hours=0.5')
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    mode = "off" if not enabled else "bar" if _on_terminal() else "lines"
    return Progress(
        iterable, total=total, initial=initial, desc=desc, unit=unit, mode=mode, interval=interval
    )
