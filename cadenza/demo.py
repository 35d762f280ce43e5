"""The main job on the embedded corpus, as `make demo` runs it.

Prepares Bach chorales from the music21 corpus (rendered to audio with FluidSynth, or the
built-in synthesiser when FluidSynth is missing) into FFT frames and piano rolls, plots one
piece, trains a tiny frequency-domain LSTM, generates music from it and writes a report.
Every stage is a library call, so each can be rerun on its own; running the demo again
resumes what is already done.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _say(text: str) -> None:
    print(f"==> {text}", flush=True)


def plot_one_piece(store_rolls: Path, out: Path, *, sr: int = 16000) -> Path:
    """Waveform, spectrogram and piano roll of the first training chorale of a piano-roll store."""
    import numpy as np

    from cadenza.audio import render_midi
    from cadenza.data import FeatureStore
    from cadenza.plots import plot_piece

    store = FeatureStore(store_rolls)
    item_id = store.ids("train")[0]
    rep = store.representation
    roll = np.asarray(store.load(item_id))
    y = render_midi(rep.decode(roll), sr=sr)  # type: ignore[attr-defined]
    return plot_piece(
        out / "plots" / f"{item_id}.png",
        y=y,
        sr=sr,
        roll=roll,
        resolution=rep.resolution,  # type: ignore[attr-defined]
        lowest_pitch=rep.lowest_pitch,  # type: ignore[attr-defined]
        title=item_id.split("__")[-1],
    )


def run_demo(
    out: str | Path = "demo",
    *,
    max_files: int = 24,
    workers: int = 2,
    train_overrides: list[str] | None = None,
    seconds: float = 8.0,
    n_samples: int = 2,
) -> dict[str, Any]:
    """Run every stage of the demo into ``out``; returns the paths it wrote."""
    from cadenza.data import prepare_corpus
    from cadenza.doctor import check_environment

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    written: dict[str, Any] = {}

    missing = [c for c in check_environment() if c.name in ("fluidsynth", "soundfont") and not c.ok]
    if missing:
        _say("FluidSynth or its soundfont is missing: scores are rendered with the built-in synthesiser")

    _say("preparing Bach chorales from the music21 corpus as FFT frames (paper 000: 16 kHz, N = 4000)")
    fft = prepare_corpus("music21:chorales", out / "data" / "bach-fft", representation="fft", max_files=max_files, workers=workers)
    print(fft)
    _say("preparing the same chorales as piano rolls (paper 004: 24 steps per beat, 84 pitches)")
    rolls = prepare_corpus(
        "music21:chorales",
        out / "data" / "bach-rolls",
        representation="pianoroll",
        rep_params={"lowest_pitch": 24, "n_pitches": 84},
        max_files=max_files,
        workers=workers,
    )
    print(rolls)
    written["stores"] = [str(fft.out), str(rolls.out)]

    _say("plotting one chorale: waveform, spectrogram and piano roll")
    written["plot"] = str(plot_one_piece(rolls.out, out))
    print(written["plot"])

    try:
        from cadenza.training import train
        from cadenza.training.generation import generate_from_run
    except ImportError:  # the trainer is not part of this build
        train = None
    if train is not None:
        _say("training a tiny frequency-domain LSTM (fft_base-tiny) on the chorales")
        run_dir = out / "runs" / "fft_base-tiny"
        train("fft_base-tiny", data=fft.out, run=run_dir, overrides=list(train_overrides or []))
        _say(f"generating {n_samples} samples of {seconds:g} s")
        written["samples"] = [str(p) for p in generate_from_run(run_dir, seconds=seconds, n=n_samples, seed=7, out=out / "samples")]
        written["run"] = str(run_dir)
        for p in written["samples"]:
            print(p)

    written["report"] = str(write_report(out, written, fft=fft, rolls=rolls, seconds=time.perf_counter() - t0))
    _say(f"done in {time.perf_counter() - t0:.0f} s; report: {written['report']}")
    return written


def write_report(out: Path, written: dict[str, Any], *, fft: Any, rolls: Any, seconds: float) -> Path:
    lines = [
        "# cadenza demo",
        "",
        f"Run in {seconds:.0f} s.",
        "",
        "## Data",
        f"- FFT frames: {fft}",
        f"- Piano rolls: {rolls}",
        "",
        "## Plots",
        f"![one chorale]({Path(written['plot']).relative_to(out)})",
        "",
    ]
    if "run" in written:
        lines += [
            "## Training",
            f"- run directory: `{written['run']}` (config, checkpoints, metrics.csv, plots/loss.png, TensorBoard events)",
            f"![loss]({Path(written['run']).relative_to(out)}/plots/loss.png)",
            "",
            "## Generated music",
            *[f"- `{p}`" for p in written.get("samples", [])],
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
