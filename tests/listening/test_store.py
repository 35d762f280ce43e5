"""The event log: WAL, append-only, the last answer counts, and nothing acknowledged is lost to ``kill -9``."""

from __future__ import annotations

import http.client
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cadenza.listening.experiment import Experiment
from cadenza.listening.store import Event, Store
from tests.listening.helpers import Listener, make_experiment

#: Seconds a listener of a served test on the wall clock waits between a clip's arrival and the
#: answer: the server takes an answer only 0.9 of the clip's length (here 1 s) after it was sent.
HEARD = 0.95


def test_the_log_is_append_only_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "ratings.sqlite", config_hash="h")
    assert store.journal_mode() == "wal"
    who = store.add_listener(seed_of=lambda n: 100 + n)
    for rating in (2, 4, 3):
        store.add_event(Event(who.pseudonym, trial=0, tokens=("tok",), rating=rating))
    store.add_event(Event(who.pseudonym, trial=1, tokens=("tik",), rating=5))
    answers = store.answers()[who.pseudonym]
    assert answers[0].rating == 3 and answers[1].rating == 5  # the last event of a trial counts
    assert [e.rating for e in store.events()] == [2, 4, 3, 5]  # ... and every event stays
    assert {e.config_hash for e in store.events()} == {"h"}
    raw = sqlite3.connect(store.path)
    for sql in ("UPDATE events SET rating = 1", "DELETE FROM events", "DELETE FROM listeners"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute(sql)
    raw.close()
    store.close()


def test_a_database_from_before_the_served_log_gets_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "ratings.sqlite", config_hash="h")
    who = store.add_listener(seed_of=lambda n: n)
    store.add_event(Event(who.pseudonym, trial=0, tokens=("tok",), rating=4))
    store.close()
    raw = sqlite3.connect(tmp_path / "ratings.sqlite")
    raw.execute("DROP TABLE served")  # as a test begun before the log existed left it
    raw.commit()
    raw.close()
    times = iter([10.0, 11.0])
    store = Store(tmp_path / "ratings.sqlite", config_hash="h", clock=lambda: next(times))
    assert store.served(who.pseudonym) == {} and store.answers()[who.pseudonym][0].rating == 4
    store.mark_served(who.pseudonym, "tok")
    store.mark_served(who.pseudonym, "tok")  # sent again: the first time stays
    assert store.served(who.pseudonym) == {"tok": 10.0}
    store.close()


def test_listeners_are_numbered_once_each_under_concurrency(tmp_path: Path) -> None:
    store = Store(tmp_path / "ratings.sqlite", config_hash="h")
    made = []
    threads = [
        threading.Thread(target=lambda: made.append(store.add_listener(seed_of=lambda n: n)))
        for _ in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(w.number for w in made) == list(range(20))
    assert len({w.pseudonym for w in made}) == 20
    assert store.listener(made[0].pseudonym) == made[0] and store.listener("Lnobody") is None


def _serve(folder: Path) -> tuple[subprocess.Popen, str]:
    """``cadenza listen FOLDER --port 0`` in a subprocess; its listeners' URL once it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cadenza", "listen", str(folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        seen.append(line)
        if line.startswith("listeners: "):
            return proc, line.split()[1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the server did not start:\n" + "".join(seen))


def test_kill_9_loses_no_acknowledged_rating_and_listeners_resume(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, n_per_condition=2)
    results = exp.folder.parents[1]
    n_trials = exp.design.n_trials()
    exp.close()
    proc, url = _serve(results)
    acknowledged: list[tuple[str, int, int, int]] = []  # (cookie, trial, rating, event id)
    lock = threading.Lock()
    listeners = [Listener(url) for _ in range(8)]
    failures: list[BaseException] = []  # what a listener met other than the server going away

    def work(who: Listener) -> None:
        try:
            block = who.start()
            for trial, spec in enumerate(block["trials"]):
                rating = trial % 5 + 1
                status, reply = who.answer(trial, spec["tokens"], rating, seconds=exp.seconds, wait=HEARD)
                assert status == 200, reply
                with lock:
                    acknowledged.append((who.cookie, trial, rating, reply["event"]))
        except (OSError, http.client.HTTPException, ValueError):
            return  # the server is gone: refused, reset, or a reply cut off mid-way
        except BaseException as error:  # noqa: BLE001 - reported by the test's thread below
            with lock:
                failures.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in listeners]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 20 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of the run: other answers are in flight
    proc.wait(10)
    for t in threads:
        t.join(30)
    with lock:
        acked = list(acknowledged)
    assert not failures, failures
    assert 20 <= len(acked) < 8 * n_trials, "the kill should land mid-run"
    folder = results / "listening" / "acr"
    assert (folder / "ratings.sqlite-wal").exists()  # committed pages still in the write-ahead log

    stored = {e.id: e for e in Experiment(folder).store.events()}
    for _, trial, rating, event_id in acked:
        assert event_id in stored and stored[event_id].trial == trial and stored[event_id].rating == rating

    # the server comes back on the same test; each listener continues where they stopped
    proc, url = _serve(results)
    try:
        fresh = Listener(url)
        going_on = []
        for who in listeners:
            who.host, who.port = fresh.host, fresh.port
            mine = {trial for cookie, trial, _, _ in acked if cookie == who.cookie}
            status, state = who.json("GET", "/api/state")
            assert status == 200
            done = {int(k) for k in state["listener"]["answers"]}
            assert mine <= done  # nothing acknowledged is missing
            if not state["listener"]["done"]:
                k = state["listener"]["next"]
                assert k not in done
                tokens = state["listener"]["trials"][k]["tokens"]
                for token in tokens:  # the page loads the clips again
                    assert who.request("GET", f"/audio/{token}.wav")[0] == 200
                going_on.append((who, k, tokens))
        time.sleep(HEARD)  # all of them listening at once
        for who, k, tokens in going_on:
            status, reply = who.answer(k, tokens, 3, seconds=exp.seconds, fetch=False)
            assert status == 200, reply
    finally:
        proc.send_signal(signal.SIGTERM)  # a child of a pytest-xdist worker ignores SIGINT
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped;" in out
