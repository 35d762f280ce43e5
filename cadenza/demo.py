"""The main job on the embedded corpus, as `make demo` runs it: a small :mod:`cadenza.study`.

The demo is ``cadenza study music21:chorales`` of one tiny model of each family (paper 000's
LSTMs over FFT frames, paper 004's GANs over piano rolls, paper 002's Seq2Seq and WaveNet over
raw audio, paper 001's mel LSTM, paper 003's MFCC LSTM and VAE) at a small budget
(:data:`DEMO_BUDGET` of training each) and a small evaluation: the study prepares every store
from the same 24 chorales with the same held-out files, trains, writes the listening clips,
measures each model against the held-out music of its group, computes paper 004's Table 1 for
the GANs and writes ``report.html``. What the demo adds is a plot of one chorale (waveform,
spectrogram and piano roll) and a section at the top of the report. Running it again resumes
(the study's ``study.json``).

The chorales are all Bach's, so WaveNet's composer conditioning sees a single composer here
(a source without composer labels would train it unconditioned, ``data.label_key=null``);
``cadenza prepare music21:bach,corelli`` into a mu-law store and ``cadenza train wavenet-tiny``
on it shows composer conditioning.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cadenza.study import StudyResult, StudyState

__all__ = ["DEMO_BUDGET", "DEMO_MODELS", "DEMO_SOURCE", "DemoResult", "plot_one_piece", "run_demo"]

DEMO_SOURCE = "music21:chorales"
#: One model of each family, in the order they train.
DEMO_MODELS = (
    "fft_base",
    "fft_bilinear",
    "bilstm_gan",
    "cnn_lstm_gan",
    "seq2seq",
    "wavenet",
    "mel_rnn",
    "mfcc_lstm",
    "mfcc_vae",
)
#: Training per model. Nine models of 90 s each, plus preparing the stores, the listening clips,
#: the evaluation and Table 1 (about 11 minutes). At 60 s the tiny WaveNet made 535 steps on a
#: busy machine (0.112 s a step) and fell silent after its first seconds in 5 of 20 clips; at
#: 400 steps 17 of 20, from 500 on none (docs/models.md). ``cadenza demo --budget 10m`` (or
#: ``cadenza study``) trains for longer.
DEMO_BUDGET = "90s"
#: The study's sizes for a new demo (an existing one keeps its own unless told otherwise):
#: 24 chorales, 20 metric clips of 10 s per model (the study's default is 50), two listening
#: clips of 10 s per model, 2000 bars per GAN for Table 1.
DEMO_SETTINGS = {
    "budget": DEMO_BUDGET,
    "max_files": 24,
    "eval_clips": 20,
    "eval_seconds": 10.0,
    "listen_clips": 2,
    "listen_seconds": 10.0,
    "bars": 2000,
}
#: The plot of one chorale, relative to the demo's folder.
PLOT = Path("plots") / "one-chorale.png"


@dataclasses.dataclass
class DemoResult:
    """The study's result, the plot (None without a piano-roll model) and the listening test's command."""

    study: StudyResult
    plot: Path | None
    listen: str | None


def _say(text: str) -> None:
    print(f"==> {text}", flush=True)


def plot_one_piece(store_rolls: Path, path: Path, *, sr: int = 16000) -> Path:
    """Waveform, spectrogram and piano roll of the first training chorale of a piano-roll store, as ``path``."""
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
        path,
        y=y,
        sr=sr,
        roll=roll,
        resolution=rep.resolution,  # type: ignore[attr-defined]
        lowest_pitch=rep.lowest_pitch,  # type: ignore[attr-defined]
        title=item_id.split("__")[-1],
    )


def _preface(out: Path) -> list[str]:
    """The demo's section at the top of the study's report."""
    lines = [
        "## The demo",
        "",
        "`cadenza demo` (what `make demo` runs) is this study of one tiny model of each family on the "
        "Bach chorales of the music21 corpus, at a small budget. The chorales are all Bach's, so WaveNet's "
        "composer conditioning sees one composer; `cadenza train wavenet-tiny` on a mu-law store of "
        "`music21:bach,corelli` shows it choosing between Bach and Corelli. `cadenza study` runs the same at any budget on your own music.",
    ]
    if (out / PLOT).is_file():
        lines += ["", f"![one chorale: waveform, spectrogram and piano roll]({PLOT.as_posix()})"]
    return lines


def _piano_roll_store(out: Path, state: StudyState) -> Path | None:
    """A prepared piano-roll store of the study, if any."""
    for key, rec in state.data["stores"].items():
        if rec.get("status") == "done" and (rec.get("rep") or {}).get("name") == "pianoroll":
            return out / "data" / key
    return None


def run_demo(
    out: str | os.PathLike = "demo",
    *,
    models: Sequence[str] | None = None,
    workers: int = 2,
    device: str = "auto",
    command: str | None = None,
    say: Callable[[str], None] = _say,
    **options: Any,
) -> DemoResult:
    """Run (or continue) the demo's study in ``out``, plot one chorale and write the report.

    ``models`` are model keys (``wavenet``; ``wavenet-tiny`` is read as ``wavenet``), default
    :data:`DEMO_MODELS`. ``options`` are :func:`cadenza.study.run_study`'s (``budget``,
    ``max_files``, ``eval_clips``, ``listen_clips``, ``bars``, ``overrides``...); those left out
    or None take what ``out/study.json`` holds, else :data:`DEMO_SETTINGS`.
    """
    from cadenza.doctor import check_environment
    from cadenza.study import StudyState, listen_command, plan_study, run_study, write_report

    out = Path(out)
    t0 = time.perf_counter()
    given = {k: v for k, v in options.items() if v is not None}
    if models:
        given["models"] = [m.removesuffix("-tiny") for m in models]
    if not StudyState(out).settings:  # a new demo: its own sizes where none is given
        given = {"models": list(DEMO_MODELS), **DEMO_SETTINGS, **given}
    missing = [c for c in check_environment() if c.name in ("fluidsynth", "soundfont") and not c.ok]
    if missing:
        say("FluidSynth or its soundfont is missing: scores are rendered with the built-in synthesiser")

    result = run_study(
        out,
        source=DEMO_SOURCE,
        **given,
        workers=workers,
        device=device,
        command=command,
        preface=_preface(out),
    )
    settings = result.state.settings
    plan = plan_study(settings["models"], settings["preset"])
    plot = out / PLOT
    if not plot.is_file() and (rolls := _piano_roll_store(out, result.state)) is not None:
        say("plotting one chorale: waveform, spectrogram and piano roll")
        plot_one_piece(rolls, plot)
        result.state.data["preface"] = _preface(out)  # now with the plot
        result.state.save()
        write_report(out, result.state, plan)
    listen = listen_command(out, result.state, plan)
    say(f"demo done in {time.perf_counter() - t0:.0f} s; report: {result.html} (and {result.report.name})")
    if listen:
        say(f"listen to the clips, blind: {listen}")
    return DemoResult(result, plot if plot.is_file() else None, listen)
