"""benchmarks/gpu.py's CPU dry-run: every stage runs at tiny sizes and writes the GPU run's JSON shape."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"fft_base", "fft_fc", "fft_bilinear", "fft_stacked", "fft_conv1d", "fft_conv2d"}


def positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def run_dry(script: str, out: Path, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    """``benchmarks/<script> --dry-run --out OUT``: its output and the JSON it wrote (exit 0 asserted)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    return run_dry("gpu.py", tmp_path_factory.mktemp("gpu") / "gpu.json", timeout=150)


@pytest.mark.slow
def test_dry_run_completes_with_every_stage(dry_run: tuple[subprocess.CompletedProcess, dict]) -> None:
    proc, result = dry_run
    assert result["dry_run"] is True and result["complete"] is True
    assert result["problems"] == []
    for key in ("benchmark", "compares", "goals", "machine", "peak", "train", "wavenet", "ddp", "wall_s"):
        assert key in result, key
    assert {"load_before", "load_after", "taken_under_load", "torch", "device"} <= set(result["machine"])
    assert positive(result["peak"]["measured_flops"])
    for stage in ("peak:", "train:", "wavenet:", "ddp:", "results in"):
        assert stage in proc.stdout, stage


@pytest.mark.slow
def test_dry_run_train_rows(dry_run: tuple[subprocess.CompletedProcess, dict]) -> None:
    train = dry_run[1]["train"]
    timed = [r for r in train["rows"] if "step_s" in r]
    assert {r["model"] for r in timed} == MODELS
    assert {(r["batch_kind"], r["mode"]) for r in timed} >= {("paper", "eager"), ("large", "eager"),
                                                             ("large", "compiled")}  # fmt: skip
    for row in timed:
        for field in ("step_s", "steps_per_s", "frames_per_s", "model_tflop_per_step", "tflops", "mfu",
                      "mfu_vs_measured"):  # fmt: skip
            assert positive(row[field]), (row["model"], row["batch_kind"], row["mode"], field)
        assert isinstance(row["goal_met"], bool)
    assert set(train["summary"]) == MODELS
    assert all(positive(s["best_mfu"]) for s in train["summary"].values())


@pytest.mark.slow
def test_dry_run_wavenet_graph_path_matches_eager(dry_run: tuple[subprocess.CompletedProcess, dict]) -> None:
    wavenet = dry_run[1]["wavenet"]
    assert wavenet["check_passed"] is True
    graph_checks = [c for c in wavenet["checks"] if c["graph"] == "graph"]
    assert {c["streams"] for c in graph_checks} == {1, 16}
    assert all(c["classes_equal"] and c["max_logit_diff"] == 0.0 for c in graph_checks)
    modes = {(r["mode"], r["streams"]) for r in wavenet["rows"]}
    assert {
        ("eager", 1),
        ("graph", 1),
        ("eager", 16),
        ("graph", 16),
        ("default", 1),
        ("default", 16),
    } <= modes
    # generate's default with the model on the device draws what the eager step draws (numba, on the host)
    assert wavenet["default_check_passed"] is True
    assert all(r["device"] == "cpu" for r in wavenet["rows"] if r["mode"] == "default")
    assert all(positive(r["samples_per_s"]) for r in wavenet["rows"])
    assert positive(wavenet["graph_speedup_1_streams"]) and positive(wavenet["graph_speedup_16_streams"])


@pytest.mark.slow
def test_dry_run_ddp_ran_or_says_why(dry_run: tuple[subprocess.CompletedProcess, dict]) -> None:
    ddp = dry_run[1]["ddp"]
    if not ddp["ran"]:
        assert ddp.get("reason"), ddp
        return
    assert ddp["world_size"] == 2 and ddp["backend"] == "gloo"
    assert positive(ddp["step_s"])
    assert ddp["grads_agree"] and ddp["params_agree"] and ddp["local_grads_differ"]


def test_conv2d_layout_dry_run(tmp_path: Path) -> None:
    """benchmarks/gpu_conv2d.py on the CPU: both layouts timed at both batches, the loss checked equal."""
    _, result = run_dry("gpu_conv2d.py", tmp_path / "gpu_conv2d.json", timeout=120)
    assert result["dry_run"] is True and result["check"]["same"] is True
    timed = [r for r in result["rows"] if "step_s" in r]
    assert {(r["batch_kind"], r["mode"], r["layout"]) for r in timed} == {
        (kind, mode, layout)
        for kind, mode in (("paper", "eager"), ("large", "eager"), ("large", "compiled"))
        for layout in ("nchw", "channels_last")
    }
    assert all(positive(r["step_s"]) and positive(r["mfu"]) for r in timed)
    assert not any(r["applied"] for r in timed)  # channels-last is a CUDA layout: the CPU keeps NCHW
    assert set(result["speedup_channels_last"]) == {"paper eager", "large eager", "large compiled"}
