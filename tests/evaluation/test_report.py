"""The evaluation report on a hand-built Evaluation with real WAV and PNG files.

The unit checks read the files; the browser check opens ``report.html`` in Debian's Chromium
(through playwright, no downloaded browser) and asserts that every player decodes its WAV and
every image loads, with no console error and no failed request.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from cadenza.audio import write_audio
from cadenza.evaluation.report import write_report
from cadenza.evaluation.results import Clip, ClipSet, Estimate, Evaluation
from cadenza.plots import plot_spectrogram, save_figure
from tests.evaluation.helpers import open_in_chromium

SR = 16000
ODD_FOLDER = "my folder & more"
SCRIPT_NAME = 'mel-lstm <script>alert("x")</script>'


def _chord(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))).astype(np.float32)


def _noise(seconds: float) -> np.ndarray:
    return np.random.default_rng(0).uniform(-0.3, 0.3, int(seconds * SR)).astype(np.float32)


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Evaluation, Path, dict[str, float]]:
    """An Evaluation in ``tmp_path/eval`` and the length of each WAV by relative path."""
    out = tmp_path / "eval"
    audio = {
        "reference/chord.wav": _chord(1.0),
        "calibration/noise.wav": _noise(1.0),
        "model/chord short.wav": _chord(0.5),
        f"{ODD_FOLDER}/clip #1.wav": _chord(0.75),
    }
    for rel, y in audio.items():
        write_audio(out / rel, y, SR)
    save_figure(plot_spectrogram(audio["reference/chord.wav"], sr=SR).figure, out / "images" / "chord.png")
    save_figure(
        plot_spectrogram(audio["calibration/noise.wav"], sr=SR).figure, out / ODD_FOLDER / "noise 'x'.png"
    )

    def clip(name: str, rel: str | None, image: str | None = None, flags=(), **measures) -> Clip:
        seconds = len(audio[rel]) / SR if rel else 0.0
        return Clip(name, rel, image, seconds=seconds, measures=measures, flags=list(flags))

    reference = ClipSet(
        "reference",
        "reference",
        "data/held-out",
        [clip("ref chord", "reference/chord.wav", "images/chord.png")],
    )
    floor = ClipSet(
        "real vs real",
        "calibration",
        "data/held-out",
        [clip("held-out chord", "reference/chord.wav", "images/chord.png", lufs=-20.1, distance=0.01)],
        distances={"kad": Estimate(0.0123, -0.002, 0.02), "fad": Estimate(1.5, 1.2, 1.9)},
    )
    noise = ClipSet(
        "white noise",
        "calibration",
        "synthetic",
        [
            clip(
                "noise",
                "calibration/noise.wav",
                f"{ODD_FOLDER}/noise 'x'.png",
                ["noise"],
                lufs=-9.0,
                distance=40.0,
            )
        ],
        distances={"kad": Estimate(12.0, 10.0, 14.0), "fad": Estimate(300.0, 280.0, 320.0)},
    )
    model_clips = [
        clip(f"sample {i}", "model/chord short.wav", "images/chord.png", flags, lufs=-18.0 + i, distance=d)
        for i, (d, flags) in enumerate([(0.5, []), (2.0, ["loop"]), (0.1, []), (9.0, ["loop", "clipping"])])
    ]
    model_clips.append(clip("unranked", "model/chord short.wav", lufs=float("nan"), distance=None))
    model = ClipSet(
        SCRIPT_NAME,
        "model",
        "runs/mel-lstm",
        model_clips,
        distances={
            "kad": Estimate(0.8, 0.6, 1.1),
            "fad": Estimate(25.0, 21.0, float("nan")),
            "precision": Estimate(0.42),
            "recall": Estimate(0.3),
            "density": Estimate(0.9),
            "coverage": Estimate(0.5),
        },
        symbolic={"EB": 5.5, "UPC": float("nan")},
        symbolic_distances={"oa_pitch": Estimate(0.2, 0.1, 0.3)},
        loss_curve="images/chord.png",
        note="trained 3 epochs & stopped <early>",
    )
    folder = ClipSet(
        "a folder",
        "folder",
        f"/somewhere/{ODD_FOLDER}",
        [
            clip(
                "odd & 'quoted' <clip>",
                f"{ODD_FOLDER}/clip #1.wav",
                flags=["silent"],
                lufs=None,
                distance=None,
            )
        ],
        distances={"kad": Estimate(3.0, 2.0, 4.0), "fad": Estimate(None)},
        skipped=[("bad.mp3", "not an audio file")],
    )
    empty = ClipSet(
        "empty run", "model", "runs/empty", distances={"kad": Estimate(None)}, note="no clips generated"
    )
    evaluation = Evaluation(
        feature_version="clap-v1+vggish-v1",
        settings={"n_clips": 4, "seconds": 1.0, "seed": 12345, "reference": "data/held-out", "n_boot": 200},
        reference=reference,
        calibration=[floor, noise],
        sets=[model, folder, empty],
        notes=["KAD is unbiased and can be slightly below zero."],
    )
    return evaluation, out, {rel: len(y) / SR for rel, y in audio.items()}


def test_files_and_formats(built: tuple[Evaluation, Path, dict[str, float]]) -> None:
    evaluation, out, _ = built
    paths = write_report(evaluation, out)
    assert sorted(paths) == ["chart", "csv", "html", "json", "md"]
    assert all(p.parent == out and p.stat().st_size > 0 for p in paths.values())

    def no_nan(name: str) -> None:
        raise AssertionError(f"metrics.json holds {name}")

    metrics = json.loads(paths["json"].read_text(), parse_constant=no_nan)
    assert metrics["sets"][0]["distances"]["fad"]["high"] is None
    assert metrics["feature_version"] == "clap-v1+vggish-v1"

    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [
        "reference",
        "real vs real",
        "white noise",
        SCRIPT_NAME,
        "a folder",
        "empty run",
    ]
    by_name = {r["name"]: r for r in rows}
    assert by_name["white noise"]["kad_high"] == "14.0" and by_name["white noise"]["n_noise"] == "1"
    assert by_name["empty run"]["kad"] == "" and by_name["empty run"]["n_clips"] == "0"
    assert by_name[SCRIPT_NAME]["fad_high"] == "" and by_name[SCRIPT_NAME]["n_loop"] == "2"
    assert float(by_name[SCRIPT_NAME]["mean_lufs"]) == pytest.approx(-16.5)  # NaN left out
    assert by_name["a folder"]["mean_lufs"] == "" and by_name["a folder"]["note"] == ""
    assert {r["feature_version"] for r in rows} == {"clap-v1+vggish-v1"}

    md = paths["md"].read_text()
    assert "| set | KAD [95% interval] | FAD [95% interval] | precision |" in md
    assert "real vs real" in md and "0.0123 [-0.002, 0.02]" in md and "12 [10, 14]" in md
    assert "| 2/5 |" in md  # two looping clips of five
    assert "![KAD and FAD" in md and "bad.mp3" in md and "not an audio file" in md


def test_html_is_safe_and_self_contained(built: tuple[Evaluation, Path, dict[str, float]]) -> None:
    evaluation, out, _ = built
    text = write_report(evaluation, out)["html"].read_text()
    assert str(out.parent) not in text and "file://" not in text
    links = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert links and all(not link.startswith("/") and "://" not in link for link in links)
    assert "my%20folder%20%26%20more/clip%20%231.wav" in links
    assert not re.search(r"\bnan\b", text, re.IGNORECASE) and not re.search(r"\bNone\b", text)
    assert "<script" not in text and "&lt;script&gt;" in text
    assert "&lt;early&gt;" in text and "odd &amp; &#x27;quoted&#x27; &lt;clip&gt;" in text
    assert text.count("<details>") == 3  # two calibration rows and the reference
    assert text.count("</b>: mostly silence") == 1  # the flag legend once
    assert 'title="a loop or a held tone' in text
    # Ranking: best 3 by distance (0.1, 0.5, 2), then the worst (9) alone; "unranked" in neither.
    best = re.search(r"Best by distance to the reference: (.*?)</p>", text).group(1)
    assert re.findall(r">(sample \d)<", best) == ["sample 2", "sample 0", "sample 1"]
    worst = re.search(r"Worst by distance to the reference: (.*?)</p>", text).group(1)
    assert re.findall(r">(sample \d)<", worst) == ["sample 3"] and "unranked" not in best + worst
    assert text.count("<audio controls") == 9


def test_report_in_chromium(built: tuple[Evaluation, Path, dict[str, float]]) -> None:
    evaluation, out, seconds = built
    players, images, problems = open_in_chromium(write_report(evaluation, out)["html"])

    assert len(players) == 9
    for player in players:
        rel = Path(unquote(urlparse(player["src"]).path)).relative_to(out.resolve()).as_posix()
        assert player["error"] is None and player["readyState"] >= 2, player
        assert player["duration"] == pytest.approx(seconds[rel], abs=0.02), player
    assert len(images) == 9 and all(image["width"] > 0 for image in images), images
    assert problems == []
