"""The ratings of a listening test: SQLite in WAL mode, an append-only log of events.

Three tables, all insert-only (triggers refuse ``UPDATE`` and ``DELETE``):

- ``listeners``: one row per listener: ``number`` (0, 1, 2... in order of arrival, the number
  of the design's block), a random ``pseudonym``, the ``seed`` that shuffled the block, the
  test's configuration hash and the time.
- ``events``: one row per answer: listener pseudonym, trial, clip token(s), the rating (ACR,
  1-5) or the chosen token (A/B), plays, seconds listened, seconds on the page, configuration
  hash and time. A changed answer is a new event; the last one of a listener's trial counts.
- ``served``: when each clip was first sent to each listener (one row per listener and clip),
  so that the server can tell an answer given sooner than the clips could have been heard.
  Made on first use in a test's database from before it existed.

Every write is its own transaction with ``synchronous=FULL``, committed before the server
answers, so a rating that was acknowledged survives a ``kill -9`` of the server (and a power
cut). Readers (``cadenza listen --results`` while the test runs) never block the writer.

Examples
--------
>>> import tempfile, os
>>> store = Store(os.path.join(tempfile.mkdtemp(), "ratings.sqlite"), config_hash="abc")
>>> who = store.add_listener(seed_of=lambda number: 7)
>>> who.number, who.seed
(0, 7)
>>> _ = store.add_event(Event(who.pseudonym, trial=0, tokens=("t1",), rating=4))
>>> _ = store.add_event(Event(who.pseudonym, trial=0, tokens=("t1",), rating=5))
>>> store.answers()[who.pseudonym][0].rating  # the last one counts
5
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Event", "Listener", "Store"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS listeners (
    number INTEGER PRIMARY KEY,
    pseudonym TEXT NOT NULL UNIQUE,
    seed INTEGER NOT NULL,
    config_hash TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    listener TEXT NOT NULL REFERENCES listeners(pseudonym),
    trial INTEGER NOT NULL,
    tokens TEXT NOT NULL,
    rating INTEGER,
    choice TEXT,
    plays INTEGER NOT NULL,
    listened REAL NOT NULL,
    page_seconds REAL NOT NULL,
    config_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_listener ON events (listener, trial, id);
CREATE TABLE IF NOT EXISTS served (
    listener TEXT NOT NULL REFERENCES listeners(pseudonym),
    token TEXT NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (listener, token)
);
CREATE TRIGGER IF NOT EXISTS served_append_only_u BEFORE UPDATE ON served
    BEGIN SELECT RAISE(ABORT, 'the served log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS served_append_only_d BEFORE DELETE ON served
    BEGIN SELECT RAISE(ABORT, 'the served log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_u BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_d BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS listeners_append_only_u BEFORE UPDATE ON listeners
    BEGIN SELECT RAISE(ABORT, 'the listener log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS listeners_append_only_d BEFORE DELETE ON listeners
    BEGIN SELECT RAISE(ABORT, 'the listener log is append-only'); END;
"""


@dataclasses.dataclass(frozen=True)
class Listener:
    number: int
    pseudonym: str
    seed: int
    time: float = 0.0


@dataclasses.dataclass(frozen=True)
class Event:
    """One answer: ``rating`` (ACR, 1-5) or ``choice`` (A/B, the chosen token) to a trial."""

    listener: str
    trial: int
    tokens: tuple[str, ...]
    rating: int | None = None
    choice: str | None = None
    plays: int = 1
    listened: float = 0.0
    page_seconds: float = 0.0
    config_hash: str = ""
    time: float = 0.0
    id: int | None = None


class Store:
    """The SQLite file of one test (made on first use), safe to share between threads.

    Parameters
    ----------
    path : path
        The database file (``ratings.sqlite``); its ``-wal`` and ``-shm`` files sit beside it.
    config_hash : str
        The test's configuration hash, written into every row.
    clock : callable
        Seconds since the epoch for every row's time (``time.time``; tests pass their own).
    """

    def __init__(
        self, path: str | os.PathLike, *, config_hash: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self.config_hash = config_hash
        self.clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection, one lock: writes are serialised here, and each is its own transaction
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    # ------------------------------------------------------------------ listeners
    def add_listener(self, *, seed_of: Callable[[int], int]) -> Listener:
        """A new listener with the next number and a random pseudonym; ``seed_of(number)`` its seed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (number,) = self._db.execute("SELECT COUNT(*) FROM listeners").fetchone()
                who = Listener(
                    int(number), "L" + secrets.token_hex(6), int(seed_of(int(number))), self.clock()
                )
                self._db.execute(
                    "INSERT INTO listeners (number, pseudonym, seed, config_hash, time) VALUES (?, ?, ?, ?, ?)",
                    (who.number, who.pseudonym, who.seed, self.config_hash, who.time),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return who

    def listener(self, pseudonym: str) -> Listener | None:
        with self._lock:
            row = self._db.execute(
                "SELECT number, pseudonym, seed, time FROM listeners WHERE pseudonym = ?", (pseudonym,)
            ).fetchone()
        return Listener(*row) if row else None

    def listeners(self) -> list[Listener]:
        with self._lock:
            rows = self._db.execute("SELECT number, pseudonym, seed, time FROM listeners ORDER BY number")
            return [Listener(*row) for row in rows.fetchall()]

    # ------------------------------------------------------------------ events
    def add_event(self, event: Event) -> int:
        """Append ``event`` (committed when this returns); its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO events (time, listener, trial, tokens, rating, choice, plays, listened,"
                " page_seconds, config_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.clock(),
                    event.listener,
                    int(event.trial),
                    " ".join(event.tokens),
                    event.rating,
                    event.choice,
                    int(event.plays),
                    float(event.listened),
                    float(event.page_seconds),
                    self.config_hash,
                ),
            )
            return int(cur.lastrowid)

    def events(self, listener: str | None = None) -> list[Event]:
        """Every event (of one listener), oldest first."""
        sql = (
            "SELECT listener, trial, tokens, rating, choice, plays, listened, page_seconds, config_hash,"
            " time, id FROM events"
        )
        args: tuple = ()
        if listener is not None:
            sql, args = sql + " WHERE listener = ?", (listener,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id", args).fetchall()
        return [Event(r[0], r[1], tuple(r[2].split()), *r[3:]) for r in rows]

    def mark_served(self, listener: str, token: str) -> None:
        """Record that clip ``token`` was sent to ``listener`` now, unless it was before."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO served (listener, token, time) VALUES (?, ?, ?)",
                (listener, token, self.clock()),
            )

    def served(self, listener: str) -> dict[str, float]:
        """When each clip was first sent to ``listener``: ``{token: time}``."""
        with self._lock:
            rows = self._db.execute("SELECT token, time FROM served WHERE listener = ?", (listener,))
            return {token: when for token, when in rows.fetchall()}

    def answers(self, listener: str | None = None) -> dict[str, dict[int, Event]]:
        """The answer that counts (the last event) of every listener's trials: ``{pseudonym: {trial: event}}``."""
        out: dict[str, dict[int, Event]] = {}
        for e in self.events(listener):
            out.setdefault(e.listener, {})[e.trial] = e
        return out
