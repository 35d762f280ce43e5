"""Shared by the evaluation tests: `cadenza evaluate` on a trained run, and a report opened in Chromium."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from cadenza.cli import main
from cadenza.evaluation.detectors import silent_fraction

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-file-access-from-files",
]
# Waits until the element has decoded data (or failed) after load(); 10 s at most.
WAIT_FOR_AUDIO = """async (el) => {
    el.load();
    const t0 = performance.now();
    while (el.readyState < 2 && !el.error && performance.now() - t0 < 10000) {
        await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return {src: el.currentSrc || el.src, readyState: el.readyState, duration: el.duration,
            error: el.error ? el.error.code + ": " + el.error.message : null};
}"""


def open_in_chromium(html: Path) -> tuple[list[dict], list[dict], list[str]]:
    """Open ``html`` from ``file://`` in Debian's headless Chromium (through playwright).

    Returns every ``<audio>`` element's state once it has decoded data (or failed), every
    image's natural width, and the console errors, page errors and failed requests. Skips the
    test when Chromium or the playwright package is missing.
    """
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright python package is not installed"
    )
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make system-deps installs it as root)")
    playwright = sync_api.sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        # a media request that the player itself cancels (load() again, metadata enough) is
        # ERR_ABORTED; a missing or unreadable file is another error and counts
        page.on(
            "requestfailed",
            lambda r: (
                None
                if "ERR_ABORTED" in str(r.failure)
                else problems.append(f"request failed: {r.url} {r.failure}")
            ),
        )
        page.goto(Path(html).resolve().as_uri(), wait_until="load")
        players = [el.evaluate(WAIT_FOR_AUDIO) for el in page.query_selector_all("audio")]
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => ({src: e.currentSrc || e.src, width: e.naturalWidth}))"
        )
        browser.close()
    finally:
        playwright.stop()
    return players, images, problems


def strict_json(path: Path) -> Any:
    """``path`` parsed as JSON that other languages read: a NaN or Infinity number fails the test
    (the words in a message are text, not numbers)."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{path}: the number {token} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def assert_evaluates(
    run: Path, reference: Path, out: Path, *, seconds: float, n_clips: int = 3
) -> dict[str, Any]:
    """Evaluate ``run`` against ``reference`` from the CLI; check the outputs; return metrics.json."""
    args = ["evaluate", str(run), "--reference", str(reference), "--out", str(out)]
    args += ["--n-clips", str(n_clips), "--seconds", str(seconds), "--n-boot", "20"]
    assert main(args) == 0
    payload = strict_json(out / "metrics.json")
    (model,) = payload["sets"]
    assert model["kind"] == "model" and model["n_clips"] == n_clips, model["note"]
    for clip in model["clips"]:
        assert (out / clip["audio"]).is_file() and (out / clip["image"]).is_file()
        y, sr = sf.read(out / clip["audio"])  # the measure is that of the clip one hears
        assert clip["measures"]["silent_fraction"] == pytest.approx(silent_fraction(y, sr), abs=0.02)
        assert all(v is None or math.isfinite(v) for v in clip["measures"].values())
    assert payload["reference"]["n_clips"] >= 1
    html = (out / "report.html").read_text()
    assert (
        html.count("<audio") >= n_clips and (out / "report.md").is_file() and (out / "metrics.csv").is_file()
    )
    return payload
