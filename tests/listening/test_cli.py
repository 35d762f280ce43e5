"""`cadenza listen` end to end, as a new user runs it: a folder of per-model WAV/MIDI subfolders,
the served test, scripted listeners over HTTP, Ctrl-C, then ``--results`` in the terminal and as files."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pretty_midi
import pytest
import soundfile as sf

from cadenza.cli import main
from cadenza.evaluation.detectors import loudness_lufs
from tests.listening.helpers import Listener, make_folders

#: Each scripted listener's rating per condition; the third rates the real clips below the anchors.
SCRIPTS = [
    {"reference": 5, "lstm": 4, "score": 3, "gru": 2, "anchor": 1},
    {"reference": 4, "lstm": 4, "score": 3, "gru": 3, "anchor": 2},
    {"reference": 1, "lstm": 3, "score": 3, "gru": 3, "anchor": 5},
]


def _scores(folder: Path) -> None:
    """A model that wrote MIDI: three short phrases (rendered by the test's preparation)."""
    folder.mkdir(parents=True)
    for k in range(3):
        midi = pretty_midi.PrettyMIDI()
        piano = pretty_midi.Instrument(program=0)
        for n in range(4):
            piano.notes.append(pretty_midi.Note(90, 60 + 2 * n + k, 0.35 * n, 0.35 * n + 0.35))
        midi.instruments.append(piano)
        midi.write(str(folder / f"phrase-{k}.mid"))


def _start(argv: list[str]) -> tuple[subprocess.Popen, dict[str, str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cadenza", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    urls: dict[str, str] = {}
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and "results" not in urls:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        for key in ("listeners", "results"):
            if line.startswith(f"{key}:"):
                urls[key] = line.split()[1]
    if "results" not in urls:
        proc.kill()
        raise AssertionError("cadenza listen did not start:\n" + "".join(lines))
    return proc, urls, lines


def test_cadenza_listen_serves_a_folder_of_models_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results, reference = make_folders(tmp_path)
    _scores(results / "score")
    argv = ["listen", str(results), "--reference", str(reference), "--port", "0", "--seconds", "1"]
    proc, urls, lines = _start([*argv, "--n-per-model", "1"])
    try:
        text = "".join(lines)
        assert "127.0.0.1" in urls["listeners"] and "key=" in urls["results"]
        assert "screening rule:" in text and "score" in text  # the experimenter sees the models
        test = json.loads((results / "listening" / "acr" / "test.json").read_text())
        condition = {token: clip["condition"] for token, clip in test["clips"].items()}

        def listen(k: int, who: Listener, block: dict, script: dict[str, int]) -> None:
            for trial, spec in enumerate(block["trials"]):
                (token,) = spec["tokens"]
                status, _, wav = who.request("GET", f"/audio/{token}.wav")
                assert status == 200
                path = tmp_path / f"heard-{k}.wav"
                path.write_bytes(wav)
                y, sr = sf.read(path, dtype="float32")
                # what a listener hears gives no model away: one rate, one length, one loudness
                assert (sr, len(y)) == (16000, 16000)
                assert loudness_lufs(y, sr) == pytest.approx(test["loudness_lufs"], abs=0.5)
                time.sleep(0.95)  # the server takes an answer 0.9 of the clip's length after sending it
                status, reply = who.answer(trial, [token], script[condition[token]], seconds=1.0, fetch=False)
                assert status == 200, reply
            assert reply["done"]

        listeners = [Listener(urls["listeners"]) for _ in SCRIPTS]
        blocks = [who.start() for who in listeners]  # numbered in the order of SCRIPTS
        with ThreadPoolExecutor(len(SCRIPTS)) as pool:  # then listening at once
            list(pool.map(listen, range(len(SCRIPTS)), listeners, blocks, SCRIPTS))
        # the experimenter's results page, while the test runs
        results_page = Listener(urls["listeners"])
        status, _, page = results_page.request("GET", "/results?" + urls["results"].split("?")[1])
        assert status == 200 and b"Table 1." in page
    finally:
        proc.send_signal(signal.SIGTERM)  # `kill PID` stops it cleanly, as Ctrl-C does
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "answers are stored" in out

    # --- the results in the terminal, and as CSV, JSON and Markdown
    assert main(["listen", str(results), "--results", "--n-boot", "200"]) == 0
    printed = capsys.readouterr().out
    assert "Table 1. Results of blind testing performed on 2 testers (3 before screening)" in printed
    assert "| lstm | 4.00 |" in printed and "| real music (hidden reference) | 4.50 |" in printed
    folder = results / "listening" / "acr"
    rows = {r["condition"]: r for r in csv.DictReader((folder / "results.csv").open())}
    assert set(rows) == {"gru", "lstm", "score", "reference", "anchor"}
    assert float(rows["gru"]["value"]) == 2.5 and float(rows["gru"]["all_value"]) == pytest.approx(8 / 3)
    assert rows["anchor"]["n_listeners"] == "2" and rows["anchor"]["all_n_listeners"] == "3"
    payload = json.loads((folder / "results.json").read_text())
    assert payload["counts"]["screened_out"] == 1 and payload["counts"]["kept"] == 2
    assert [s["screened"] for s in payload["listeners"]] == [False, False, True]
    assert (folder / "results.md").read_text().startswith("# Listening test (ACR)")

    # --- a changed setting for the same test is refused; a folder without a test says what to do
    assert main(["listen", str(results), "--seconds", "2", "--port", "0"]) == 1
    assert "seconds=1.0, not 2.0" in capsys.readouterr().err
    assert main(["listen", str(tmp_path / "reference"), "--results"]) == 1
    assert "run `cadenza listen" in capsys.readouterr().err
