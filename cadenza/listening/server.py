"""The listening test's web app: a thin WSGI application over the library, and a threaded server.

Standard library only (``wsgiref`` on a threading ``http.server``): the app is a plain WSGI
callable, so it also runs under any WSGI server (a framework would be a dependency for six
routes, and the tests drive this one whole). It serves one prepared
:class:`~cadenza.listening.experiment.Experiment`:

- ``GET /``: the test page (``static/index.html``; its script and styles beside it);
- ``GET /api/state``: the page's configuration and, with a cookie, the listener's block;
- ``POST /api/start``: a new listener (numbered, seeded, stored) and its signed cookie;
- ``POST /api/answer``: one rating or choice, stored before the answer is acknowledged;
- ``GET /audio/<token>.wav``: a clip of the listener's own block, by its opaque token
  (single byte ranges for players that ask);
- ``GET /results[.json|.csv|.md]?key=K``: the results (``K`` is printed by ``cadenza listen``).

Every field is validated; a bad request gets a 4xx with a JSON ``{"error": ...}`` message,
never a 500 or a traceback. A listener is known by an HMAC-signed cookie (HttpOnly,
SameSite=Strict); POST bodies must be JSON (so no cross-site form can post), at most
:data:`MAX_BODY` bytes. Clips are found only through the test's token table: no part of a
request becomes a file path.

Examples
--------
>>> server = make_server(open_experiment("results/"), port=8000)   # doctest: +SKIP
>>> server.serve_forever()                                         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import http
import importlib.resources
import json
import logging
import math
import re
import socketserver
import threading
from collections.abc import Callable, Iterable
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from cadenza.listening.experiment import Experiment
from cadenza.listening.store import Event, Listener

log = logging.getLogger(__name__)

__all__ = ["MAX_BODY", "App", "ListeningServer", "make_server"]

#: The largest request body accepted (bytes); an answer is about 200.
MAX_BODY = 4096
#: A longer body is not even drained before the 413 (the connection is closed instead).
MAX_DRAIN = 1 << 20
#: An answer needs this share of its clips' length to have been heard.
MIN_LISTENED_SHARE = 0.9
COOKIE = "cadenza_listener"
COOKIE_DAYS = 30
TOKEN = re.compile(r"[A-Za-z0-9_-]{16}")
PSEUDONYM = re.compile(r"L[0-9a-f]{12}")
SIGNATURE = re.compile(r"[0-9a-f]{64}")
AUDIO_PATH = re.compile(r"/audio/([A-Za-z0-9_-]{16})\.wav")
RANGE = re.compile(r"bytes=(\d*)-(\d*)")
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
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


class HTTPError(Exception):
    """A request the app refuses: status and a message for the listener (or the script)."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


Response = tuple[int, list[tuple[str, str]], bytes]


def _json(payload: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, allow_nan=False).encode()
    return status, [("Content-Type", "application/json"), *(headers or [])], body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


class App:
    """The WSGI application of one experiment (see the module's docstring)."""

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp
        self.store = exp.store
        self._secret = exp.secret()
        self._key = exp.results_key()
        root = importlib.resources.files("cadenza.listening") / "static"
        self._static = {
            path: (root.joinpath(name).read_bytes(), ctype) for path, (name, ctype) in STATIC.items()
        }
        self._routes: dict[str, dict[str, Callable[[dict], Response]]] = {
            "/": {"GET": self._page},
            "/static/app.js": {"GET": self._page},
            "/static/style.css": {"GET": self._page},
            "/api/state": {"GET": self._state},
            "/api/start": {"POST": self._start},
            "/api/answer": {"POST": self._answer},
            "/results": {"GET": self._results},
            "/results.json": {"GET": self._results},
            "/results.csv": {"GET": self._results},
            "/results.md": {"GET": self._results},
        }
        self._results_lock = threading.Lock()

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            status, headers, body = self._dispatch(environ, method)
        except HTTPError as exc:
            status, headers, body = _json({"error": exc.message}, exc.status, exc.headers)
        except Exception:  # a bug: logged here, and the client gets no traceback
            log.exception("listening server: %s %s failed", method, environ.get("PATH_INFO"))
            status, headers, body = _json({"error": "internal error (logged on the server)"}, 500)
        headers = [*headers, *SECURITY_HEADERS]
        if not any(k == "Cache-Control" for k, _ in headers):
            headers.append(("Cache-Control", "no-store"))
        if not any(k == "Content-Length" for k, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {http.HTTPStatus(status).phrase}", headers)
        return [b"" if method == "HEAD" else body]

    def _dispatch(self, environ: dict, method: str) -> Response:
        path = environ.get("PATH_INFO", "/")
        match = AUDIO_PATH.fullmatch(path)
        handlers = {"GET": self._audio} if match else self._routes.get(path)
        if handlers is None:
            raise HTTPError(404, "not found")
        if method == "HEAD" and "GET" in handlers:
            method = "GET"
        if method not in handlers:
            allowed = ", ".join(sorted({*handlers, "HEAD"} if "GET" in handlers else handlers))
            raise HTTPError(405, f"{method} is not allowed here", [("Allow", allowed)])
        if method == "GET" and (environ.get("CONTENT_LENGTH") or "0") != "0":
            raise HTTPError(400, "a GET request has no body")
        return handlers[method](environ)

    # ------------------------------------------------------------------ helpers
    def _sign(self, pseudonym: str) -> str:
        return hmac.new(self._secret, pseudonym.encode(), hashlib.sha256).hexdigest()

    def _cookie(self, pseudonym: str) -> tuple[str, str]:
        value = f"{pseudonym}.{self._sign(pseudonym)}"
        max_age = COOKIE_DAYS * 86400
        return ("Set-Cookie", f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict")

    def _listener(self, environ: dict) -> Listener | None:
        """The listener of a validly signed cookie, else None."""
        raw = environ.get("HTTP_COOKIE", "")
        if not raw or len(raw) > 4096:
            return None
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(raw)
        except CookieError:
            return None
        morsel = cookie.get(COOKIE)
        if morsel is None:
            return None
        pseudonym, _, signature = morsel.value.partition(".")
        if not (PSEUDONYM.fullmatch(pseudonym) and SIGNATURE.fullmatch(signature)):
            return None
        if not hmac.compare_digest(signature, self._sign(pseudonym)):
            return None
        return self.store.listener(pseudonym)

    def _require_listener(self, environ: dict) -> Listener:
        who = self._listener(environ)
        if who is None:
            raise HTTPError(401, "no listener: open the test page and start the test first")
        return who

    def _body(self, environ: dict) -> Any:
        """The JSON request body (an empty body is ``{}``)."""
        ctype = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if environ.get("HTTP_TRANSFER_ENCODING"):
            raise HTTPError(411, "send the body with a Content-Length, not a transfer encoding")
        raw_length = environ.get("CONTENT_LENGTH") or "0"
        if not raw_length.isdigit():
            raise HTTPError(400, "a bad Content-Length")
        length = int(raw_length)
        if length > MAX_BODY:
            if length <= MAX_DRAIN:  # read it away, so the client sees the answer and not a reset
                environ["wsgi.input"].read(length)
            raise HTTPError(413, f"the request body is larger than {MAX_BODY} bytes")
        if length and ctype != "application/json":
            raise HTTPError(415, "the body must be JSON (Content-Type: application/json)")
        if ctype != "application/json" and not length:
            raise HTTPError(415, "send Content-Type: application/json")
        data = environ["wsgi.input"].read(length) if length else b"{}"
        if len(data) != length and length:
            raise HTTPError(400, "the body is shorter than its Content-Length")
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise HTTPError(400, "the body is not valid JSON") from exc

    def _progress(self, who: Listener) -> dict[str, Any]:
        block = self.exp.design.block(who.number)
        answers = self.store.answers(who.pseudonym).get(who.pseudonym, {})
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
    def _page(self, environ: dict) -> Response:
        body, ctype = self._static[environ.get("PATH_INFO", "/")]
        return 200, [("Content-Type", ctype)], body

    def _state(self, environ: dict) -> Response:
        who = self._listener(environ)
        payload = {"config": self.exp.page_config(), "listener": None if who is None else self._progress(who)}
        return _json(payload)

    def _start(self, environ: dict) -> Response:
        body = self._body(environ)
        if not isinstance(body, dict) or body:
            raise HTTPError(400, "start takes an empty JSON object")
        who = self._listener(environ)
        headers = []
        if who is None:
            who = self.store.add_listener(seed_of=self.exp.listener_seed)
            headers.append(self._cookie(who.pseudonym))
        payload = {"config": self.exp.page_config(), "listener": self._progress(who)}
        return _json(payload, headers=headers)

    def _answer(self, environ: dict) -> Response:
        who = self._require_listener(environ)
        body = self._body(environ)
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
        answered_before = trial in self.store.answers(who.pseudonym).get(who.pseudonym, {})
        if listened < needed and not answered_before:
            raise HTTPError(422, "listen to the whole clip before answering")
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

    def _audio(self, environ: dict) -> Response:
        who = self._require_listener(environ)
        token = AUDIO_PATH.fullmatch(environ["PATH_INFO"]).group(1)  # type: ignore[union-attr]
        mine = {t for trial in self.exp.design.block(who.number) for t in trial.tokens}
        path = self.exp.clip_path(token) if token in mine else None
        if path is None:
            raise HTTPError(404, "no such clip")
        data = path.read_bytes()
        headers = [
            ("Content-Type", "audio/wav"),
            ("Accept-Ranges", "bytes"),
            ("Cache-Control", "private, max-age=3600"),
        ]
        wanted = environ.get("HTTP_RANGE")
        if not wanted:
            return 200, headers, data
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
        return 206, [*headers, ("Content-Range", f"bytes {start}-{end}/{size}")], data[start : end + 1]

    def _results(self, environ: dict) -> Response:
        from cadenza.listening.report import format_table, results_csv, results_html, results_json
        from cadenza.listening.results import analyse

        query = environ.get("QUERY_STRING", "")
        try:
            fields = parse_qs(query, max_num_fields=8, strict_parsing=bool(query))
        except ValueError as exc:
            raise HTTPError(400, "a malformed query string") from exc
        keys = fields.get("key", [])
        if len(keys) != 1 or not hmac.compare_digest(keys[0].encode(), self._key.encode()):
            raise HTTPError(403, "the results need the key that `cadenza listen` printed (?key=...)")
        with self._results_lock:  # one analysis at a time
            results = analyse(self.exp, n_boot=1000)
        path = environ["PATH_INFO"]
        if path == "/results.json":
            return 200, [("Content-Type", "application/json")], results_json(results).encode()
        if path == "/results.csv":
            return 200, [("Content-Type", "text/csv; charset=utf-8")], results_csv(results).encode()
        if path == "/results.md":
            return 200, [("Content-Type", "text/markdown; charset=utf-8")], format_table(results).encode()
        k = self._key
        links = {
            "JSON": f"/results.json?key={k}",
            "CSV": f"/results.csv?key={k}",
            "Markdown": f"/results.md?key={k}",
        }
        return (
            200,
            [("Content-Type", "text/html; charset=utf-8")],
            results_html(results, links=links).encode(),
        )


class _Handler(WSGIRequestHandler):
    timeout = 60  # seconds a connection may idle mid-request
    default_request_version = "HTTP/1.0"  # so that a malformed request line still gets a status line

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # the HTTP parser's answers to broken requests are client errors (its 505 for HTTP/2+ too)
        if code >= 500:
            code, message = 400, message or "unsupported HTTP version"
        super().send_error(code, message, explain)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)


class ListeningServer(socketserver.ThreadingMixIn, WSGIServer):
    """``wsgiref``'s server with a thread per request."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("listening server: connection from %s failed", client_address, exc_info=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(exp: Experiment, *, host: str = "127.0.0.1", port: int = 8000) -> ListeningServer:
    """A server of ``exp`` bound to ``host:port`` (0: any free port); call ``serve_forever()``."""
    server = ListeningServer((host, port), _Handler)
    server.set_app(App(exp))
    return server
