"""Shared by the listening tests: folders of synthesized models, a served test, an HTTP listener."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
import soundfile as sf

from cadenza.listening.experiment import Experiment, prepare_experiment
from cadenza.listening.server import make_server

#: Model name -> (sample rate, amplitude, base frequency): different rates and levels on purpose.
MODELS = {"lstm": (16000, 0.5, 220.0), "gru": (22050, 0.05, 330.0)}
REFERENCE_SR = 44100
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def tone(freq: float, seconds: float, sr: int, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)


def make_folders(root: Path, *, n_clips: int = 3, seconds: float = 1.5) -> tuple[Path, Path]:
    """``root/results/<model>/*.wav`` (two models) and ``root/reference/*.wav`` (chords with noise)."""
    results, reference = root / "results", root / "reference"
    for name, (sr, amp, f0) in MODELS.items():
        (results / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_clips):
            sf.write(
                results / name / f"clip-{i}.wav", tone(f0 * (1 + 0.25 * i), seconds + 0.1 * i, sr, amp), sr
            )
    reference.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        n = int(2 * seconds * n_clips * REFERENCE_SR)
        y = sum(tone(f * (1 + 0.1 * i), n / REFERENCE_SR, REFERENCE_SR, 0.1) for f in (261.6, 329.6, 392.0))
        sf.write(
            reference / f"piece-{i}.wav", y + 0.005 * rng.standard_normal(n).astype(np.float32), REFERENCE_SR
        )
    return results, reference


def make_experiment(root: Path, **kwargs: Any) -> Experiment:
    results, reference = make_folders(root)
    kwargs = {"seconds": 1.0, "n_per_condition": 1} | kwargs
    return prepare_experiment(results, reference=reference, **kwargs)


class FastClock:
    """A clock for the store that runs ``speed`` times faster than the wall clock (from now), or
    stands still at ``now`` until moved (``speed=0``): the server's check that clips were heard
    for their length then takes milliseconds, or exactly what a test sets."""

    def __init__(self, speed: float = 1000.0) -> None:
        self.speed, self.start, self.now = speed, time.monotonic(), 1.8e9

    def __call__(self) -> float:
        return self.now + self.speed * (time.monotonic() - self.start)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.contextmanager
def serving(exp: Experiment, clock: Any = "fast") -> Iterator[str]:
    """Serve ``exp`` on a free loopback port in a thread; yields the base URL. The store's clock
    is a :class:`FastClock` (``"fast"``), the given clock, or the wall clock (None)."""
    if clock is not None:
        exp.store.clock = FastClock() if clock == "fast" else clock
    server = make_server(exp, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        exp.store.clock = time.time


class Listener:
    """A scripted listener over plain HTTP that keeps its cookie."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.cookie: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            sent = dict(headers or {})
            data = raw
            if body is not None:
                data = json.dumps(body).encode()
                sent.setdefault("Content-Type", "application/json")
            if self.cookie and "Cookie" not in sent:
                sent["Cookie"] = self.cookie
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            payload = response.read()
            got = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        if "set-cookie" in got:
            self.cookie = got["set-cookie"].split(";")[0]
        return response.status, got, payload

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, payload = self.request(method, path, body)
        return status, json.loads(payload)

    def start(self) -> dict:
        status, state = self.json("POST", "/api/start", {})
        assert status == 200, state
        return state["listener"]

    def answer(
        self,
        trial: int,
        tokens: list[str],
        value: Any,
        *,
        seconds: float,
        mode: str = "acr",
        fetch: bool = True,
        wait: float = 0.0,
    ) -> tuple[int, Any]:
        """Answer ``trial``, after fetching its clips as the page does (``fetch``) and ``wait``
        seconds (a server on the wall clock wants 0.9 of the clips' length), reporting ``seconds``
        heard of each."""
        for token in tokens if fetch else ():
            self.request("GET", f"/audio/{token}.wav")
        time.sleep(wait)
        body = {
            "trial": trial,
            "tokens": tokens,
            "plays": 1,
            "listened": seconds * len(tokens),
            "page_seconds": 3.0,
        }
        body["rating" if mode == "acr" else "choice"] = value
        return self.json("POST", "/api/answer", body)


def require_chromium() -> tuple[Any, str]:
    """playwright's sync API and Debian's chromium, or skip."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright python package is not installed"
    )
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make system-deps installs it as root)")
    return sync_api, chromium
