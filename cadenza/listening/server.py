"""The listening test's web app: a small Flask application over the library, and werkzeug's threaded server.

Flask because it is well kept, small and plain WSGI: six routes need no more, there is no build
step and nothing comes from a CDN (the page, its script and its styles are package data in
``static/``, read once at start). :class:`App` is the Flask application of one prepared
:class:`~cadenza.listening.experiment.Experiment`, so it also runs under any WSGI server;
:func:`make_server` serves it with werkzeug's threaded server (a thread per request):

- ``GET /``: the test page (``static/index.html``; its script and styles beside it);
- ``GET /api/state``: the page's configuration and, with a cookie, the listener's block;
- ``POST /api/start``: a new listener (numbered, seeded, stored) and its signed cookie;
- ``POST /api/answer``: one rating or choice, stored before the answer is acknowledged;
- ``GET /audio/<token>.wav``: a clip of the listener's own block, by its opaque token
  (single byte ranges for players that ask); the first time each listener gets each clip is
  stored;
- ``GET /results[.json|.csv|.md]?key=K``: the results (``K`` is printed by ``cadenza listen``).

An answer is taken only as a listener of the page could have given it: to the next trial
(a changed answer to any trial answered before is taken at any time), with the trial's clips
sent to this listener, reported as heard (``listened``, at least :data:`MIN_LISTENED_SHARE` of
their length), and given no sooner after the later of the clips' first sending and the
listener's previous first answer than that share of the clips' length: the server's clock,
which a script cannot report as the page reports ``listened``.

Every field is validated; a bad request gets a 4xx with a JSON ``{"error": ...}`` message,
never a 500 or a traceback (werkzeug's own refusals, 404, 405 and 413 among them, are answered
in JSON too; a 500 is left for real bugs, and logged). A listener is known by an HMAC-signed
cookie (HttpOnly, SameSite=Strict); POST bodies must be JSON (so no cross-site form can post), at
most :data:`MAX_BODY` bytes. Clips are found only through the test's token table: no part of a
request becomes a file path. Requests are logged through :mod:`logging` at DEBUG.

Examples
--------
>>> server = make_server(open_experiment("results/"), port=8000)   # doctest: +SKIP
>>> server.serve_forever()                                         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import json
import logging
import math
import re
import sqlite3
import threading
from typing import Any
from urllib.parse import parse_qs

from flask import Flask, Response, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler
from werkzeug.serving import make_server as werkzeug_server

from cadenza.errors import ParameterError
from cadenza.listening.experiment import Experiment
from cadenza.listening.store import Event, Listener

log = logging.getLogger(__name__)

__all__ = ["COOKIE", "MAX_BODY", "App", "ListeningServer", "make_server"]

#: The largest request body accepted (bytes); an answer is about 200.
MAX_BODY = 4096
#: A longer declared body is not read at all: the 413 goes out at once (werkzeug's server then
#: discards what the client still sends, and closes the connection).
MAX_DRAIN = 1 << 20
#: An answer needs this share of its clips' length to have been heard.
MIN_LISTENED_SHARE = 0.9
#: Seconds an answer may come sooner than the server's clock says its clips could be heard
#: (the clock's and the player's granularity; times are stored as seconds since the epoch).
CLOCK_SLACK = 0.01
COOKIE = "cadenza_listener"
COOKIE_DAYS = 30
TOKEN = re.compile(r"[A-Za-z0-9_-]{16}")
PSEUDONYM = re.compile(r"L[0-9a-f]{12}")
SIGNATURE = re.compile(r"[0-9a-f]{64}")
RANGE = re.compile(r"bytes=(\d*)-(\d*)")
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
RESULTS = ("/results", "/results.json", "/results.csv", "/results.md")
SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'self'; media-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]
ANSWER_FIELDS = {"trial", "tokens", "rating", "choice", "plays", "listened", "page_seconds"}


class HTTPError(HTTPException):
    """A request the app refuses: status and a message for the listener (or the script)."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.code = status
        self.message = message
        self.extra_headers = headers or []


class _Token(BaseConverter):
    """A clip's opaque token in a URL; anything else is no route (404)."""

    regex = TOKEN.pattern


def _json(payload: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, allow_nan=False).encode()
    return Response(body, status, headers or [], content_type="application/json")


def _utf8(text: str) -> bytes:
    """A page's text as UTF-8; a model named by a folder whose name is not UTF-8 (surrogates)
    is shown with its odd bytes escaped, not refused with a 500."""
    return text.encode("utf-8", errors="backslashreplace")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


class App(Flask):
    """The Flask application of one experiment (see the module's docstring); a WSGI callable."""

    def __init__(self, exp: Experiment) -> None:
        super().__init__(__name__, static_folder=None)  # the page's files are served from memory below
        self.config["MAX_CONTENT_LENGTH"] = MAX_BODY
        self.exp = exp
        self.store = exp.store
        self._secret = exp.secret()
        self._key = exp.results_key()
        root = importlib.resources.files("cadenza.listening") / "static"
        self._pages = {
            path: (root.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in STATIC.items()
        }
        self._results_lock = threading.Lock()
        self._sent: set[tuple[str, str]] = set()  # (listener, token) already in the served log

        self.url_map.converters["token"] = _Token
        self.url_map.merge_slashes = False  # "/api//state" is not found, rather than redirected
        routes = [
            *((path, self._page, "GET") for path in STATIC),
            ("/api/state", self._state, "GET"),
            ("/api/start", self._start, "POST"),
            ("/api/answer", self._answer, "POST"),
            ("/audio/<token:token>.wav", self._audio, "GET"),
            *((path, self._results, "GET") for path in RESULTS),
        ]
        for path, view, method in routes:  # GET brings HEAD; OPTIONS is not answered (405)
            self.add_url_rule(path, view_func=view, methods=[method], provide_automatic_options=False)
        self.before_request(self._no_body_on_get)
        self.after_request(self._headers)
        self.register_error_handler(HTTPException, self._refused)
        self.register_error_handler(Exception, self._failed)

    # ------------------------------------------------------------------ every request
    def _no_body_on_get(self) -> None:
        if request.routing_exception is None and request.method in ("GET", "HEAD"):
            if (request.headers.get("Content-Length") or "0") != "0" or request.headers.get(
                "Transfer-Encoding"
            ):
                raise HTTPError(400, "a GET request has no body")

    def _headers(self, response: Response) -> Response:
        for name, value in SECURITY_HEADERS:
            response.headers[name] = value
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def _refused(self, exc: HTTPException) -> Response:
        """werkzeug's and the app's refusals, in JSON (never an HTML page)."""
        if isinstance(exc, HTTPError):
            return _json({"error": exc.message}, exc.code or 400, exc.extra_headers)
        if isinstance(exc, NotFound):
            return _json({"error": "not found"}, 404)
        if isinstance(exc, MethodNotAllowed):
            allowed = ", ".join(sorted(exc.valid_methods or []))
            return _json({"error": f"{request.method} is not allowed here"}, 405, [("Allow", allowed)])
        if exc.code == 413:
            return _json({"error": f"the request body is larger than {MAX_BODY} bytes"}, 413)
        return _json({"error": exc.description or exc.name}, exc.code or 500)

    def _failed(self, exc: Exception) -> Response:
        """A bug: logged here, and the client gets no traceback. A full disk is not a bug: the
        listener is told that the answer was not kept (507), and the experimenter, in the log."""
        if _disk_full(exc):
            log.error(
                "listening server: %s %s: the disk is full (%s); free some space",
                request.method,
                request.path,
                exc,
            )
            return _json(
                {"error": "the server's disk is full, so this was not saved; tell whoever runs the test"}, 507
            )
        log.exception("listening server: %s %s failed", request.method, request.path)
        return _json({"error": "internal error (logged on the server)"}, 500)

    # ------------------------------------------------------------------ helpers
    def _sign(self, pseudonym: str) -> str:
        return hmac.new(self._secret, pseudonym.encode(), hashlib.sha256).hexdigest()

    def _set_cookie(self, response: Response, pseudonym: str) -> None:
        value = f"{pseudonym}.{self._sign(pseudonym)}"
        response.set_cookie(
            COOKIE, value, max_age=COOKIE_DAYS * 86400, path="/", httponly=True, samesite="Strict"
        )

    def _listener(self) -> Listener | None:
        """The listener of a validly signed cookie, else None."""
        raw = request.headers.get("Cookie", "")
        if not raw or len(raw) > 4096:
            return None
        pseudonym, _, signature = request.cookies.get(COOKIE, "").partition(".")
        if not (PSEUDONYM.fullmatch(pseudonym) and SIGNATURE.fullmatch(signature)):
            return None
        if not hmac.compare_digest(signature, self._sign(pseudonym)):
            return None
        return self.store.listener(pseudonym)

    def _require_listener(self) -> Listener:
        who = self._listener()
        if who is None:
            raise HTTPError(401, "no listener: open the test page and start the test first")
        return who

    def _body(self) -> Any:
        """The JSON request body (an empty body is ``{}``)."""
        if request.headers.get("Transfer-Encoding"):
            raise HTTPError(411, "send the body with a Content-Length, not a transfer encoding")
        raw_length = request.headers.get("Content-Length") or "0"
        if not (raw_length.isascii() and raw_length.isdigit()):  # "²" is a digit to isdigit, not to int
            raise HTTPError(400, "a bad Content-Length")
        length = int(raw_length)
        if length > MAX_BODY:
            if length <= MAX_DRAIN:  # read it away, so the client sees the answer and not a reset
                try:
                    request.environ["wsgi.input"].read(length)
                except OSError:
                    pass
            raise HTTPError(413, f"the request body is larger than {MAX_BODY} bytes")
        is_json = request.mimetype == "application/json"
        if length and not is_json:
            raise HTTPError(415, "the body must be JSON (Content-Type: application/json)")
        if not is_json:
            raise HTTPError(415, "send Content-Type: application/json")
        try:
            data = request.get_data(cache=False) if length else b"{}"
        except (ClientDisconnected, OSError) as exc:
            raise HTTPError(400, "the body is shorter than its Content-Length") from exc
        if len(data) != length and length:
            raise HTTPError(400, "the body is shorter than its Content-Length")
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise HTTPError(400, "the body is not valid JSON") from exc

    def _answers(self, who: Listener) -> dict[int, Any]:
        """The listener's latest answer to each trial answered, by trial."""
        return self.store.answers(who.pseudonym).get(who.pseudonym, {})

    def _progress(self, who: Listener, answers: dict[int, Any] | None = None) -> dict[str, Any]:
        block = self.exp.design.block(who.number)
        answers = self._answers(who) if answers is None else answers
        given: dict[str, Any] = {}
        for trial, e in answers.items():
            if 0 <= trial < len(block) and e.tokens == block[trial].tokens:
                given[str(trial)] = e.rating if self.exp.mode == "acr" else e.choice
        pending = [k for k in range(len(block)) if str(k) not in given]
        return {
            "trials": [{"tokens": list(t.tokens)} for t in block],
            "answers": given,
            "next": pending[0] if pending else len(block),
            "done": not pending,
        }

    # ------------------------------------------------------------------ routes
    def _page(self) -> Response:
        body, ctype = self._pages[request.path]
        return Response(body, 200, content_type=ctype)

    def _state(self) -> Response:
        who = self._listener()
        payload = {"config": self.exp.page_config(), "listener": None if who is None else self._progress(who)}
        return _json(payload)

    def _start(self) -> Response:
        body = self._body()
        if not isinstance(body, dict) or body:
            raise HTTPError(400, "start takes an empty JSON object")
        who = self._listener()
        new = who is None
        if who is None:
            who = self.store.add_listener(seed_of=self.exp.listener_seed)
        response = _json({"config": self.exp.page_config(), "listener": self._progress(who)})
        if new:
            self._set_cookie(response, who.pseudonym)
        return response

    def _answer(self) -> Response:
        who = self._require_listener()
        body = self._body()
        if not isinstance(body, dict):
            raise HTTPError(400, "the answer must be a JSON object")
        unknown = set(body) - ANSWER_FIELDS
        if unknown:
            raise HTTPError(400, f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}")
        block = self.exp.design.block(who.number)
        trial = body.get("trial")
        if not _is_int(trial) or not 0 <= trial < len(block):
            raise HTTPError(400, f"trial must be an integer from 0 to {len(block) - 1}")
        tokens = body.get("tokens")
        if (
            not isinstance(tokens, list)
            or not all(isinstance(t, str) and TOKEN.fullmatch(t) for t in tokens)
            or tuple(tokens) != block[trial].tokens
        ):
            raise HTTPError(400, f"tokens do not name the clips of trial {trial}")
        rating, choice = body.get("rating"), body.get("choice")
        if self.exp.mode == "acr":
            if choice is not None or not _is_int(rating) or not 1 <= rating <= 5:
                raise HTTPError(400, "rating must be an integer from 1 to 5 (and no choice)")
        elif rating is not None or choice not in tokens:
            raise HTTPError(400, "choice must be one of the trial's two tokens (and no rating)")
        plays, listened, page = body.get("plays"), body.get("listened"), body.get("page_seconds")
        if not _is_int(plays) or not 1 <= plays <= 1000:
            raise HTTPError(400, "plays must be an integer from 1 to 1000")
        if not _is_number(listened) or not 0 <= listened <= 100_000:
            raise HTTPError(400, "listened must be a number of seconds from 0 to 100000")
        if not _is_number(page) or not 0 <= page <= 1_000_000:
            raise HTTPError(400, "page_seconds must be a number of seconds from 0 to 1000000")
        needed = MIN_LISTENED_SHARE * self.exp.seconds * len(tokens)
        events = self.store.events(who.pseudonym)
        answers = {e.trial: e for e in events}  # the latest of each trial
        answered_before = trial in answers
        if listened < needed and not answered_before:
            raise HTTPError(422, "listen to the whole clip before answering")
        if not answered_before:  # the page shows the trials in order; a first answer out of it is a script's
            first = self._progress(who, answers)["next"]
            if trial != first:
                raise HTTPError(409, f"trial {first} comes first: the trials are answered in order")
            self._check_heard(who, tokens, events, needed)
        event = Event(
            who.pseudonym,
            trial=trial,
            tokens=tuple(tokens),
            rating=rating,
            choice=choice,
            plays=plays,
            listened=float(listened),
            page_seconds=float(page),
        )
        event_id = self.store.add_event(event)  # committed: only now is the answer acknowledged
        progress = self._progress(who)
        return _json({"ok": True, "event": event_id, "next": progress["next"], "done": progress["done"]})

    def _check_heard(self, who: Listener, tokens: list[str], events: list[Event], needed: float) -> None:
        """Refuse (422) a first answer given sooner than its clips could have been heard: each clip
        sent to this listener, and ``needed`` seconds on the server's clock since the later of the
        clips' first sending and the listener's previous first answer (the page shows a trial only
        once the previous answer is saved, and plays one clip at a time)."""
        served = self.store.served(who.pseudonym)
        if any(t not in served for t in tokens):
            raise HTTPError(422, "play the clips before answering (they were never loaded: reload the page)")
        first_answers: dict[int, float] = {}
        for e in events:
            first_answers.setdefault(e.trial, e.time)
        since = max([min(served[t] for t in tokens), *first_answers.values()])
        heard_for = self.store.clock() - since
        if heard_for + CLOCK_SLACK < needed:
            raise HTTPError(
                422, f"listen to the whole clip before answering ({heard_for:.1f} s of {needed:.1f} s)"
            )

    def _audio(self, token: str) -> Response:
        who = self._require_listener()
        mine = {t for trial in self.exp.design.block(who.number) for t in trial.tokens}
        path = self.exp.clip_path(token) if token in mine else None
        if path is None:
            raise HTTPError(404, "no such clip")
        data = path.read_bytes()
        if request.method == "GET" and (who.pseudonym, token) not in self._sent:
            self.store.mark_served(who.pseudonym, token)  # committed before the clip goes out
            self._sent.add((who.pseudonym, token))
        # no-cache: a page loaded again asks the server again (the clip is logged as sent even
        # where a test's database was made before that log existed)
        headers = [("Accept-Ranges", "bytes"), ("Cache-Control", "private, no-cache")]
        wanted = request.headers.get("Range")
        if not wanted:
            return Response(data, 200, headers, content_type="audio/wav")
        match = RANGE.fullmatch(wanted.strip())
        size = len(data)
        if match is None or match.groups() == ("", ""):
            raise HTTPError(416, "a single byte range, please", [("Content-Range", f"bytes */{size}")])
        first, last = match.groups()
        if first == "":  # the last N bytes
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            raise HTTPError(416, "the range lies outside the clip", [("Content-Range", f"bytes */{size}")])
        headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
        return Response(data[start : end + 1], 206, headers, content_type="audio/wav")

    def _results(self) -> Response:
        from cadenza.listening.report import format_table, results_csv, results_html, results_json
        from cadenza.listening.results import analyse

        query = request.environ.get("QUERY_STRING", "")
        try:
            fields = parse_qs(query, max_num_fields=8, strict_parsing=bool(query))
        except ValueError as exc:
            raise HTTPError(400, "a malformed query string") from exc
        keys = fields.get("key", [])
        if len(keys) != 1 or not hmac.compare_digest(keys[0].encode(), self._key.encode()):
            raise HTTPError(403, "the results need the key that `cadenza listen` printed (?key=...)")
        with self._results_lock:  # one analysis at a time
            results = analyse(self.exp, n_boot=1000)
        if request.path == "/results.json":
            return Response(_utf8(results_json(results)), 200, content_type="application/json")
        if request.path == "/results.csv":
            return Response(_utf8(results_csv(results)), 200, content_type="text/csv; charset=utf-8")
        if request.path == "/results.md":
            return Response(_utf8(format_table(results)), 200, content_type="text/markdown; charset=utf-8")
        k = self._key
        links = {
            "JSON": f"/results.json?key={k}",
            "CSV": f"/results.csv?key={k}",
            "Markdown": f"/results.md?key={k}",
        }
        return Response(
            _utf8(results_html(results, links=links)), 200, content_type="text/html; charset=utf-8"
        )


class _Handler(WSGIRequestHandler):
    """werkzeug's request handler, quiet (its log goes to :mod:`logging` at DEBUG) and never 5xx."""

    timeout = 60  # seconds a connection may idle mid-request
    protocol_version = "HTTP/1.1"  # as werkzeug sets for threads (it closes every connection anyway)
    default_request_version = "HTTP/1.0"  # so that a malformed request line still gets a status line

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The HTTP parser's answer to a broken request, in JSON; a client error (its 505 too)."""
        if code >= 500:
            code, message = 400, message or "unsupported HTTP version"
        phrase = self.responses.get(code, ("Error", ""))[0]
        self.log_error("code %d, message %s", code, message)
        body = json.dumps({"error": message or phrase}).encode()
        self.send_response(code, phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.log("info", "%r %s %s", getattr(self, "requestline", ""), code, size)

    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002 (werkzeug's name)
        log.debug("%s " + message, self.address_string(), *args)


class ListeningServer:
    """werkzeug's threaded WSGI server of one :class:`App`, and the address it serves."""

    def __init__(self, server: BaseWSGIServer) -> None:
        self.server = server

    @property
    def app(self) -> App:
        return self.server.app  # type: ignore[return-value]

    @property
    def server_address(self) -> tuple[str, int]:
        return self.server.server_address[:2]  # type: ignore[return-value]

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown` (from another thread) or Ctrl-C (then it closes the socket)."""
        self.server.serve_forever(poll_interval)

    def shutdown(self) -> None:
        self.server.shutdown()

    def server_close(self) -> None:
        self.server.server_close()


def make_server(exp: Experiment, *, host: str = "127.0.0.1", port: int = 8000) -> ListeningServer:
    """A server of ``exp`` bound to ``host:port`` (0: any free port); call ``serve_forever()``."""
    try:
        server = werkzeug_server(host, port, App(exp), threaded=True, request_handler=_Handler)
    except SystemExit as exc:  # werkzeug has printed why it cannot bind (the port in use, ...)
        raise ParameterError(
            f"cannot serve on {host}:{port} (see above); --port 0 picks a free port"
        ) from exc
    return ListeningServer(server)


def _disk_full(exc: BaseException) -> bool:
    """An OSError for want of room, or SQLite's own words for it ("database or disk is full")."""
    from cadenza._fs import is_disk_full

    return is_disk_full(exc) or (isinstance(exc, sqlite3.Error) and "disk is full" in str(exc))
