"""The HTTP app: every bad request is a 4xx with a message (never a 5xx), blinding holds, 50 listeners at once."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
from pathlib import Path

import pytest
import soundfile as sf

from cadenza.errors import ParameterError
from cadenza.listening.clips import TEST_FOLDER
from cadenza.listening.experiment import Experiment, config_hash
from cadenza.listening.server import MAX_BODY, make_server
from tests.listening.helpers import MODELS, FastClock, Listener, make_experiment, serving


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("server")
    exp = make_experiment(root, n_per_condition=1)
    with serving(exp) as url:
        yield exp, url, root
    exp.close()


def _raw(url: str, data: bytes) -> bytes:
    """Send raw bytes to the server; the first line of its answer."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.split(b"\r\n", 1)[0]


def test_a_listener_gets_a_block_plays_its_clips_and_answers(served) -> None:
    exp, url, _ = served
    who = Listener(url)
    status, state = who.json("GET", "/api/state")
    assert (
        status == 200 and state["listener"] is None and state["config"]["n_trials"] == exp.design.n_trials()
    )
    block = who.start()
    assert who.cookie and block["next"] == 0 and not block["done"]
    again = who.start()  # a second start keeps the same listener
    assert again["trials"] == block["trials"]
    token = block["trials"][0]["tokens"][0]
    status, headers, wav = who.request("GET", f"/audio/{token}.wav")
    assert status == 200 and headers["content-type"] == "audio/wav"
    assert headers["cache-control"] == "private, no-cache"  # reloaded, the page asks (and is logged) again
    assert wav == (exp.folder / "clips" / f"{token}.wav").read_bytes()
    status, headers, part = who.request("GET", f"/audio/{token}.wav", headers={"Range": "bytes=4-99"})
    assert status == 206 and part == wav[4:100] and headers["content-range"] == f"bytes 4-99/{len(wav)}"
    status, _, tail = who.request("GET", f"/audio/{token}.wav", headers={"Range": "bytes=-10"})
    assert status == 206 and tail == wav[-10:]
    status, headers, body = who.request("HEAD", "/")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    status, reply = who.answer(0, [token], 4, seconds=exp.seconds)
    assert status == 200 and reply["ok"] and reply["next"] == 1
    status, reply = who.answer(0, [token], 2, seconds=0)  # a change needs no second listen
    assert status == 200
    assert exp.store.answers(who.cookie.split("=")[1].split(".")[0]).popitem()[1][0].rating == 2
    # a first answer goes in order: trial 2 before trial 1 is refused, trial 0 again is a change
    third, second = block["trials"][2]["tokens"], block["trials"][1]["tokens"]
    status, reply = who.answer(2, third, 5, seconds=exp.seconds)
    assert status == 409 and reply["error"] == "trial 1 comes first: the trials are answered in order"
    assert who.answer(1, second, 3, seconds=exp.seconds)[0] == 200
    assert who.answer(2, third, 5, seconds=exp.seconds)[0] == 200
    assert who.answer(0, [token], 1, seconds=0)[0] == 200


@pytest.mark.parametrize("mode", ["acr", "ab"])
def test_an_answer_sooner_than_its_clips_could_be_heard_is_refused(tmp_path: Path, mode: str) -> None:
    """The reported seconds are the page's word; the server's clock is not: a first answer needs
    its clips sent to the listener, and 0.9 of their length since the later of that and the
    listener's previous first answer (a clock that stands still until the test moves it)."""
    exp = make_experiment(tmp_path, mode=mode, n_per_condition=1)
    clock = FastClock(speed=0)
    needed = 0.9 * exp.seconds * (2 if mode == "ab" else 1)
    with serving(exp, clock=clock) as url:
        who = Listener(url)
        block = [t["tokens"] for t in who.start()["trials"]]

        def answer(trial: int, **kw) -> tuple[int, dict]:
            value = 3 if mode == "acr" else block[trial][0]
            return who.answer(trial, block[trial], value, seconds=exp.seconds, mode=mode, **kw)

        status, reply = answer(0, fetch=False)  # claims to have heard clips it never loaded
        assert status == 422 and "never loaded" in reply["error"]
        for tokens in block:  # a script loads every clip of its block at once ...
            for token in tokens:
                assert who.request("GET", f"/audio/{token}.wav")[0] == 200
        status, reply = answer(0, fetch=False)
        assert status == 422 and reply["error"].startswith("listen to the whole clip before answering")
        clock.advance(needed - 0.05)
        assert answer(0, fetch=False)[0] == 422
        clock.advance(0.05)
        assert answer(0, fetch=False)[0] == 200
        # ... and must still spend each trial's length on it after the answer before
        assert answer(1, fetch=False)[0] == 422
        clock.advance(needed)
        assert answer(1, fetch=False)[0] == 200
        assert answer(0, fetch=False)[0] == 200  # a changed answer needs no second listen
    pseudonym = who.cookie.split("=")[1].split(".")[0]
    served = exp.store.served(pseudonym)
    assert set(served) == {t for tokens in block for t in tokens}  # each clip once, at its first sending
    assert set(served.values()) == {1.8e9}
    raw = sqlite3.connect(exp.store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        raw.execute("UPDATE served SET time = 0")
    raw.close()
    exp.close()


def test_nothing_served_names_a_model_or_a_path(served) -> None:
    exp, url, root = served
    who = Listener(url)
    bodies = [who.request("GET", "/")[2], who.request("GET", "/static/app.js")[2]]
    status, _, started = who.request("POST", "/api/start", {})
    bodies += [started, who.request("GET", "/api/state")[2]]
    block = json.loads(started)["listener"]
    for trial in block["trials"]:
        for token in trial["tokens"]:
            status, headers, _ = who.request("GET", f"/audio/{token}.wav")
            assert status == 200 and set(headers) >= {"content-type", "content-length"}
            assert not any(h.startswith("content-disposition") for h in headers)
    text = b"\n".join(bodies).decode()
    for secret in [*MODELS, "reference", "anchor", str(root), "clip-0", "piece-0", exp.config_hash]:
        assert secret not in text, secret
    # every clip: one rate, one length (no clip is given away by its level, length or bandwidth)
    infos = [sf.info(p) for p in (exp.folder / "clips").iterdir()]
    assert len({(i.samplerate, i.frames) for i in infos}) == 1


BAD_ANSWERS = [
    ({"trial": 0, "rating": 0}, 400),
    ({"trial": 0, "rating": 6}, 400),
    ({"trial": 0, "rating": 3.5}, 400),
    ({"trial": 0, "rating": "3"}, 400),
    ({"trial": 0, "rating": True}, 400),
    ({"trial": 0, "rating": None}, 400),
    ({"trial": 0, "rating": [3]}, 400),
    ({"trial": -1}, 400),
    ({"trial": 10**9}, 400),
    ({"trial": "0"}, 400),
    ({"trial": 0.0}, 400),
    ({"trial": 0, "choice": "x"}, 400),
    ({"trial": 0, "evil": 1}, 400),
    ({"trial": 0, "plays": 0}, 400),
    ({"trial": 0, "plays": 10**6}, 400),
    ({"trial": 0, "listened": -1}, 400),
    ({"trial": 0, "listened": "all"}, 400),
    ({"trial": 0, "page_seconds": -5}, 400),
    ({"trial": 0, "tokens": ["../../../etc/passwd"]}, 400),
    ({"trial": 0, "tokens": "abc"}, 400),
    ({"trial": 0, "tokens": []}, 400),
    ({"trial": 0, "tokens": ["A" * 16]}, 400),
    ({"trial": 1}, 400),  # the clips of trial 0 sent as trial 1
    ({"trial": 2, "listened": 0.1}, 422),  # not heard to the end
    ({"trial": 2}, 409),  # heard, but trials 0 and 1 come first
]


def test_bad_answers_get_4xx_with_a_message(served) -> None:
    exp, url, _ = served
    who = Listener(url)
    block = who.start()
    good = {
        "trial": 0,
        "tokens": block["trials"][0]["tokens"],
        "rating": 3,
        "plays": 1,
        "listened": exp.seconds,
        "page_seconds": 2.0,
    }
    n_events = len(exp.store.events())
    for change, expected in BAD_ANSWERS:
        body = dict(good, **change)
        if change.get("trial") == 2:
            body["tokens"] = block["trials"][2]["tokens"]
        status, _, payload = who.request("POST", "/api/answer", body)
        assert status == expected, (change, status, payload)
        assert json.loads(payload)["error"], change
    # NaN and infinity are not numbers here (Python's json module would read them)
    for word in ("NaN", "Infinity"):
        raw = json.dumps(good).replace(f'"listened": {exp.seconds}', f'"listened": {word}').encode()
        status, _, _ = who.request(
            "POST", "/api/answer", raw=raw, headers={"Content-Type": "application/json"}
        )
        assert status == 400, word
    assert len(exp.store.events()) == n_events  # none of them was stored


def test_malformed_and_oversized_requests_get_4xx_never_5xx(served, monkeypatch) -> None:
    exp, url, _ = served
    who = Listener(url)
    block = who.start()
    read: list[Path] = []  # every file the server reads while it answers the requests below
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or read_bytes(self))
    token = block["trials"][0]["tokens"][0]
    other = next(t for t in exp.clips if t not in {x for tr in block["trials"] for x in tr["tokens"]})
    json_type = {"Content-Type": "application/json"}
    cases = [
        ("GET", "/nope", {}, None, 404),
        ("GET", "/audio/../../etc/passwd", {}, None, 404),
        ("GET", "/audio/..%2f..%2fsecret.key", {}, None, 404),
        ("GET", "/audio/" + "A" * 16 + ".wav", {}, None, 404),  # well-formed, unknown
        ("GET", f"/audio/{other}.wav", {}, None, 404),  # a clip of another listener's block
        ("GET", f"/audio/{token}.mp3", {}, None, 404),
        ("GET", "/static/../test.json", {}, None, 404),
        ("GET", f"/{TEST_FOLDER}/acr/test.json", {}, None, 404),
        ("GET", "/ratings.sqlite", {}, None, 404),
        ("GET", "/secret.key", {}, None, 404),
        ("GET", f"/audio/{token}.wav", {"Range": "bytes=99999999-"}, None, 416),
        ("GET", f"/audio/{token}.wav", {"Range": "bytes=abc"}, None, 416),
        ("GET", f"/audio/{token}.wav", {"Range": "bytes=0-1,5-9"}, None, 416),
        ("GET", "/api/state", {"Content-Length": "5"}, b"hello", 400),
        ("PUT", "/api/answer", json_type, b"{}", 405),
        ("DELETE", "/", {}, None, 405),
        ("PATCH", "/api/start", {}, None, 405),
        ("OPTIONS", "/api/answer", {}, None, 405),
        ("FROB", "/", {}, None, 405),
        ("GET", "/api/answer", {}, None, 405),
        ("POST", "/", json_type, b"{}", 405),
        ("POST", "/api/answer", json_type, b"{not json", 400),
        ("POST", "/api/answer", json_type, b"[1, 2]", 400),
        ("POST", "/api/answer", json_type, b"\xff\xfe\x00", 400),
        ("POST", "/api/answer", json_type, b"[" * 2000 + b"]" * 2000, 400),
        ("POST", "/api/answer", json_type, b"{}" + b" " * (MAX_BODY + 1), 413),
        ("POST", "/api/answer", {**json_type, "Content-Length": str(10**9)}, b"{}", 413),
        ("POST", "/api/answer", {"Content-Type": "text/plain"}, b"rating=5", 415),
        ("POST", "/api/answer", {"Content-Type": "application/x-www-form-urlencoded"}, b"trial=0", 415),
        ("POST", "/api/start", {}, None, 415),
        ("POST", "/api/start", json_type, b'{"listener": "L000000000000"}', 400),
        ("POST", "/api/answer", {**json_type, "Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n", 411),
        ("GET", "/results", {}, None, 403),
        ("GET", "/results.json?key=wrong", {}, None, 403),
        ("GET", "/results.csv?key=a&key=b", {}, None, 403),
        ("GET", "/results?key=x&&&=", {}, None, 400),
    ]
    for method, path, headers, raw, expected in cases:
        status, got, payload = who.request(method, path, headers=headers, raw=raw)
        assert status == expected, (method, path, status, payload[:200])
        assert got["content-type"] == "application/json" and json.loads(payload)["error"]
        if expected == 405:
            assert got["allow"]
    # path traversal and unknown tokens never reached the file system: only this listener's clips were read
    mine = {exp.folder / "clips" / f"{t}.wav" for trial in block["trials"] for t in trial["tokens"]}
    assert read and set(read) <= mine
    # without a cookie, or with a forged one, a listener is nobody
    stranger = Listener(url)
    assert stranger.request("GET", f"/audio/{token}.wav")[0] == 401
    good = {"trial": 0, "tokens": [token], "rating": 3, "plays": 1, "listened": 9.0, "page_seconds": 1.0}
    assert stranger.request("POST", "/api/answer", good)[0] == 401
    pseudonym = who.cookie.split("=")[1].split(".")[0]
    for cookie in [
        f"cadenza_listener={pseudonym}.{'0' * 64}",
        f"cadenza_listener={pseudonym}",
        'cadenza_listener="\\x00\\"; x=;;',
        "cadenza_listener=" + "A" * 5000,
    ]:
        status, _, _ = stranger.request("POST", "/api/answer", good, headers={"Cookie": cookie})
        assert status == 401, cookie
    # broken HTTP never reaches the app, and never gets a 5xx
    assert _raw(url, b"GARBAGE\r\n\r\n").split()[1] == b"400"
    assert _raw(url, b"GET / HTTP/1.x\r\n\r\n").split()[1] == b"400"
    assert _raw(url, b"GET / HTTP/9.9\r\n\r\n").split()[1] == b"400"
    assert _raw(url, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n").split()[1] == b"414"
    many = b"".join(b"X-%d: y\r\n" % k for k in range(150))
    assert _raw(url, b"GET / HTTP/1.1\r\n" + many + b"\r\n").split()[1] == b"431"


def test_a_content_length_of_unicode_digits_is_a_400_not_a_500(served) -> None:
    """``"\xb2"`` (latin-1 "²") passed ``str.isdigit`` and then failed ``int()``: a 500 with a traceback."""
    _, url, _ = served
    cookie = Listener(url)
    cookie.start()
    for path, extra in (("/api/start", b""), ("/api/answer", f"Cookie: {cookie.cookie}\r\n".encode())):
        request = (
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + extra
            + b"Content-Length: \xb2\r\nConnection: close\r\n\r\n{}"
        )
        assert _raw(url, request).split()[1] == b"400", path


def test_a_bug_is_a_logged_json_500_and_requests_are_logged_quietly(served, monkeypatch, caplog) -> None:
    exp, url, _ = served
    who = Listener(url)
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(exp, "page_config", lambda: 1 / 0)
    status, headers, payload = who.request("GET", "/api/state")
    assert status == 500 and headers["content-type"] == "application/json"
    assert json.loads(payload) == {"error": "internal error (logged on the server)"}
    assert b"Traceback" not in payload and b"ZeroDivision" not in payload
    monkeypatch.undo()
    assert who.request("GET", "/api/state")[0] == 200
    records = [r for r in caplog.records if r.name.startswith("cadenza.listening.server")]
    assert any(r.levelno == logging.ERROR and r.exc_info for r in records)  # the bug, with its traceback
    assert any(r.levelno == logging.DEBUG and "/api/state" in r.getMessage() for r in records)  # the request
    assert not [r for r in caplog.records if r.name == "werkzeug"]  # werkzeug's own request log stays quiet
    # a port in use is the experimenter's error, not werkzeug's exit
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with pytest.raises(ParameterError, match="cannot serve"):
        make_server(exp, port=port)


def test_a_full_disk_is_a_507_that_says_the_answer_was_not_kept(served, monkeypatch, caplog) -> None:
    exp, url, _ = served
    who = Listener(url)
    block = who.start()
    token = block["trials"][0]["tokens"][0]
    who.request("GET", f"/audio/{token}.wav")

    def full(event):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(exp.store, "add_event", full)
    status, reply = who.answer(0, [token], 4, seconds=exp.seconds)
    assert status == 507 and "disk is full" in reply["error"] and "not saved" in reply["error"]
    assert any("disk is full" in r.getMessage() and not r.exc_info for r in caplog.records)
    monkeypatch.undo()
    assert who.answer(0, [token], 4, seconds=exp.seconds)[0] == 200  # room again: the same answer is taken


@pytest.mark.parametrize("content", ["", "abc", "00ff"])
def test_a_damaged_signing_key_is_replaced_never_used(tmp_path: Path, content: str) -> None:
    exp = make_experiment(tmp_path, n_per_condition=1)
    try:
        path = exp.folder / "secret.key"
        path.unlink(missing_ok=True)
        first = exp.secret()
        assert len(first) == 32 and path.read_text() == first.hex() and exp.secret() == first
        assert (path.stat().st_mode & 0o777) == 0o600
        path.write_text(content)  # a key cut short (a full disk before the fix), or edited
        second = exp.secret()
        assert len(second) == 32 and second != first and path.read_text() == second.hex()
        assert not [p for p in exp.folder.iterdir() if p.name.endswith(".tmp")]
    finally:
        exp.close()


def test_fifty_concurrent_listeners_lose_no_answer(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, n_per_condition=1)
    n_listeners = 50
    statuses: list[int] = []
    acked: list[tuple[str, int, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n_listeners)

    def listen(url: str, k: int) -> None:
        who = Listener(url)
        barrier.wait()
        status, state = who.json("POST", "/api/start", {})
        codes = [status]
        for trial, spec in enumerate(state["listener"]["trials"]):
            rating = (k + trial) % 5 + 1
            status, _, _ = who.request("GET", f"/audio/{spec['tokens'][0]}.wav")
            codes.append(status)
            status, reply = who.answer(trial, spec["tokens"], rating, seconds=exp.seconds)
            codes.append(status)
            if status == 200:
                with lock:
                    acked.append((who.cookie.split("=")[1].split(".")[0], trial, rating))
        with lock:
            statuses.extend(codes)

    with serving(exp) as url:
        threads = [threading.Thread(target=listen, args=(url, k)) for k in range(n_listeners)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    n_trials = exp.design.n_trials()
    assert set(statuses) == {200} and len(acked) == n_listeners * n_trials
    answers = exp.store.answers()
    assert len(answers) == n_listeners
    for pseudonym, trial, rating in acked:
        assert answers[pseudonym][trial].rating == rating
    numbers = sorted(w.number for w in exp.store.listeners())
    assert numbers == list(range(n_listeners))
    # the design stayed balanced: every clip of a condition rated within one of the others
    heard = {t: 0 for t in exp.clips}
    for pseudonym, per_trial in answers.items():
        who = exp.store.listener(pseudonym)
        block = exp.design.block(who.number)
        for trial, e in per_trial.items():
            if block[trial].repeat_of is None:
                heard[e.tokens[0]] += 1
    for c, tokens in exp.design.conditions.items():
        counts = [heard[t] for t in tokens]
        assert max(counts) - min(counts) <= 1, (c, counts)
    exp.close()


def test_ab_mode_and_the_results_pages(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path, mode="ab", n_per_condition=1)
    with serving(exp) as url:
        who = Listener(url)
        block = who.start()
        for trial, spec in enumerate(block["trials"]):
            a, b = spec["tokens"]
            if trial == 0:
                assert who.answer(0, [a, b], "C" * 16, seconds=exp.seconds, mode="ab")[0] == 400
                assert who.answer(0, [a, b], 3, seconds=exp.seconds)[0] == 400  # a rating in an A/B test
                # only one of the two clips heard
                assert who.answer(0, [a, b], a, seconds=exp.seconds / 2, mode="ab")[0] == 422
            # prefer the real clip, then the first model in name order
            rank = {"reference": 0, "gru": 1, "lstm": 2, "anchor": 3}
            best = min((a, b), key=lambda t: rank[exp.design.condition_of[t]])
            status, reply = who.answer(trial, [a, b], best, seconds=exp.seconds, mode="ab")
            assert status == 200, reply
        assert reply["done"]
        key = exp.results_key()
        status, _, page = who.request("GET", f"/results?key={key}")
        assert status == 200 and b"Bradley-Terry" in page and b"real music (hidden reference)" in page
        status, _, data = who.request("GET", f"/results.json?key={key}")
        results = json.loads(data)
        scores = {r["condition"]: r["value"]["value"] for r in results["rows"]}
        assert scores["reference"] > scores["gru"] > scores["lstm"] > scores["anchor"]
        assert results["counts"]["kept"] == 1
        for fmt in ("csv", "md"):
            assert who.request("GET", f"/results.{fmt}?key={key}")[0] == 200
    exp.close()


def test_an_edited_configuration_is_refused(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    path = exp.folder / "test.json"
    config = json.loads(path.read_text())
    assert config["config_hash"] == config_hash(config) == exp.config_hash
    config["design"]["seed"] = 99
    path.write_text(json.dumps(config))
    with pytest.raises(ParameterError, match="edited"):
        Experiment(exp.folder)
