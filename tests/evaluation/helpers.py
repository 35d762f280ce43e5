"""`cadenza evaluate` on a trained run, as the model families' end-to-end tests call it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cadenza.cli import main


def assert_evaluates(
    run: Path, reference: Path, out: Path, *, seconds: float, n_clips: int = 3
) -> dict[str, Any]:
    """Evaluate ``run`` against ``reference`` from the CLI; check the outputs; return metrics.json."""
    args = ["evaluate", str(run), "--reference", str(reference), "--out", str(out)]
    args += ["--n-clips", str(n_clips), "--seconds", str(seconds), "--n-boot", "20"]
    assert main(args) == 0
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    payload = json.loads(text)
    (model,) = payload["sets"]
    assert model["kind"] == "model" and model["n_clips"] == n_clips, model["note"]
    for clip in model["clips"]:
        assert (out / clip["audio"]).is_file() and (out / clip["image"]).is_file()
        assert 0.0 <= clip["measures"]["silent_fraction"] <= 1.0
        assert all(v is None or math.isfinite(v) for v in clip["measures"].values())
    assert payload["reference"]["n_clips"] >= 1
    html = (out / "report.html").read_text()
    assert (
        html.count("<audio") >= n_clips and (out / "report.md").is_file() and (out / "metrics.csv").is_file()
    )
    return payload
