"""The main job on the embedded corpus, as `make demo` runs it.

Prepares music from the music21 corpus (Bach chorales as FFT frames and piano rolls; Bach
and Corelli rendered to raw audio, labelled by composer), plots one piece, trains one tiny
model of each family (paper 000's LSTM over FFT frames, paper 004's GAN over piano rolls,
paper 002's Seq2Seq and WaveNet over raw audio), generates music from each, prints paper
004's Table 1 for the GAN and writes ``report.md``. Every stage is a library call, so each
can be rerun on its own; running the demo again resumes what is already done.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Store:
    """A feature store the demo prepares."""

    key: str
    source: str
    representation: str
    params: dict[str, Any]
    sample_rate: int | None
    what: str


@dataclasses.dataclass(frozen=True)
class Job:
    """One model the demo trains and generates from."""

    config: str  # a packaged config name
    store: str  # a Store key
    what: str
    seconds: float
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


STORES = {
    "fft": Store(
        "fft",
        "music21:chorales",
        "fft",
        {},
        None,
        "Bach chorales as FFT frames (paper 000: 16 kHz, N = 4000)",
    ),
    "rolls": Store(
        "rolls",
        "music21:chorales",
        "pianoroll",
        {"lowest_pitch": 24, "n_pitches": 84},
        None,
        "Bach chorales as piano rolls (paper 004: 24 steps per beat, 84 pitches)",
    ),
    "wave": Store(
        "wave",
        "music21:bach,corelli",
        "waveform",
        {},
        8000,
        "Bach and Corelli as 8 kHz audio (paper 002, Seq2Seq)",
    ),
    "mel": Store(
        "mel",
        "music21:chorales",
        "mel",
        {},
        None,
        "Bach chorales as log-mel spectrograms (paper 001: 22.05 kHz, 128 bands)",
    ),
    "mfcc": Store(
        "mfcc",
        "music21:chorales",
        "mfcc",
        {},
        None,
        "Bach chorales as 20 MFCCs (paper 003: 22.05 kHz, hop 512)",
    ),
    "mulaw": Store(
        "mulaw",
        "music21:bach,corelli",
        "waveform",
        {"encoding": "mulaw"},
        8000,
        "Bach and Corelli as 8 kHz mu-law audio, labelled by composer (paper 002, WaveNet)",
    ),
}

JOBS = (
    Job("fft_base-tiny", "fft", "the GRUV LSTM over FFT frames (paper 000)", 8.0),
    Job("fft_bilinear-tiny", "fft", "the bilinear LSTM, paper 000's best model", 8.0),
    Job("bilstm_gan-tiny", "rolls", "the bi-LSTM GAN over piano rolls (paper 004)", 8.0),
    Job("cnn_lstm_gan-tiny", "rolls", "the CNN generator / bi-LSTM discriminator GAN (paper 004)", 8.0),
    Job("seq2seq-tiny", "wave", "the Seq2Seq LSTM over raw audio (paper 002)", 5.0),
    Job("wavenet-tiny", "mulaw", "the WaveNet over mu-law audio, composer-conditioned (paper 002)", 3.0),
    Job("mel_rnn-tiny", "mel", "the mel-spectrogram LSTM with a sampled mixture head (paper 001)", 8.0),
    Job("mfcc_lstm-tiny", "mfcc", "the MFCC next-clip LSTM (paper 003)", 8.0),
    Job("mfcc_vae-tiny", "mfcc", "the MFCC VAE, sampled from its prior (paper 003)", 8.0),
)
#: Files per store: chorales for FFT frames and rolls; fewer, longer pieces for raw audio.
MAX_FILES = {"fft": 24, "rolls": 24, "wave": 12, "mulaw": 12, "mel": 24, "mfcc": 24}


def _say(text: str) -> None:
    print(f"==> {text}", flush=True)


def config_exists(name: str) -> bool:
    return resources.files("cadenza").joinpath("configs", f"{name}.yaml").is_file()


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
    max_files: int | None = None,
    workers: int = 2,
    train_overrides: list[str] | None = None,
    seconds: float | None = None,
    n_samples: int = 2,
    models: list[str] | None = None,
    eval_bars: int = 2000,
    eval_clips: int = 20,
) -> dict[str, Any]:
    """Run every stage of the demo into ``out``; returns what it wrote.

    ``models`` picks jobs by config name (``fft_base-tiny``) or model key (``wavenet``);
    default: one model of each family. ``max_files`` and ``seconds`` override the per-store
    file counts and the per-model sample lengths. ``eval_clips`` clips per model are measured
    against the held-out music of the model's data (``cadenza evaluate``; 0 skips it).
    """
    from cadenza.data import prepare_corpus
    from cadenza.doctor import check_environment
    from cadenza.errors import ParameterError

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [j for j in JOBS if config_exists(j.config)]
    if models:
        known = {j.config for j in jobs} | {j.config.rsplit("-", 1)[0] for j in jobs}
        unknown = [m for m in models if m not in known]
        if unknown:
            raise ParameterError(f"demo: unknown model(s) {unknown}; expected some of {sorted(known)}")
        jobs = [j for j in jobs if j.config in models or j.config.rsplit("-", 1)[0] in models]
    written: dict[str, Any] = {"stores": {}, "runs": {}, "samples": {}, "jobs": jobs}

    missing = [c for c in check_environment() if c.name in ("fluidsynth", "soundfont") and not c.ok]
    if missing:
        _say("FluidSynth or its soundfont is missing: scores are rendered with the built-in synthesiser")

    needed = ["rolls"] + [k for j in jobs for k in (j.store, REFERENCE_OF[j.store]) if k != "rolls"]
    for key in dict.fromkeys(needed):
        st = STORES[key]
        _say(f"preparing {st.what}")
        summary = prepare_corpus(
            st.source,
            out / "data" / f"demo-{key}",
            representation=st.representation,
            sample_rate=st.sample_rate,
            rep_params=dict(st.params),
            max_files=max_files or MAX_FILES[key],
            workers=workers,
        )
        print(summary)
        written["stores"][key] = summary

    _say("plotting one chorale: waveform, spectrogram and piano roll")
    written["plot"] = str(plot_one_piece(written["stores"]["rolls"].out, out))
    print(written["plot"])

    from cadenza.generation import generate_from_run
    from cadenza.training import train

    for job in jobs:
        name = job.config
        _say(f"training {name}: {job.what}")
        run_dir = out / "runs" / name
        train(name, data=written["stores"][job.store].out, run=run_dir, overrides=list(train_overrides or []))
        written["runs"][name] = run_dir
        length = seconds or job.seconds
        _say(f"generating {n_samples} samples of {length:g} s from {name}")
        paths = generate_from_run(
            run_dir, seconds=length, n=n_samples, seed=7, out=out / "samples", options=dict(job.options)
        )
        written["samples"][name] = [str(p) for p in paths]
        for p in paths:
            print(p)

    gan_runs = [written["runs"][j.config] for j in jobs if "gan" in j.config]
    if gan_runs:
        written["table1"] = _table1(gan_runs, written["stores"]["rolls"].out, out, eval_bars)

    written["evaluations"] = _evaluate(jobs, written, out, eval_clips, seconds) if eval_clips else {}

    written["report"] = str(write_report(out, written, seconds=time.perf_counter() - t0))
    html = Path(written["report"]).with_suffix(".html")
    _say(f"done in {time.perf_counter() - t0:.0f} s; report: {html} (and {written['report']})")
    for key in written["evaluations"]:
        _say(f"a blind listening test of these clips: cadenza listen {out / 'evaluation' / key} --port 8000")
    return written


#: The held-out music each store's models are measured against: audio decoded exactly (mu-law
#: audio: the same pieces as floats; mel and MFCC: the same chorales as FFT frames, which decode
#: to the rendered sound itself, not to a Griffin-Lim estimate of it).
REFERENCE_OF = {"fft": "fft", "rolls": "rolls", "wave": "wave", "mulaw": "wave", "mel": "fft", "mfcc": "fft"}


def _evaluate(
    jobs: list[Job], written: dict[str, Any], out: Path, n_clips: int, seconds: float | None
) -> dict:
    """``cadenza evaluate`` of the demo's models, grouped by the held-out music they are measured against."""
    from cadenza.evaluation.evaluate import evaluate, format_summary

    groups: dict[str, list[Job]] = {}
    for job in jobs:
        if job.config in written["runs"]:
            groups.setdefault(REFERENCE_OF[job.store], []).append(job)
    results = {}
    for key, members in groups.items():
        if key not in written["stores"]:
            continue
        length = seconds or max(j.seconds for j in members)
        _say(f"evaluating {', '.join(j.config for j in members)} against held-out {STORES[key].what}")
        ev = evaluate(
            [written["runs"][j.config] for j in members],
            reference=written["stores"][key].out,
            out=out / "evaluation" / key,
            n_clips=n_clips,
            seconds=length,
            seed=7,
            n_boot=500,
        )
        print(format_summary(ev), end="")
        results[key] = ev
    return results


def _table1(runs: list[Path], store: Path, out: Path, bars: int) -> str | None:
    """Paper 004's Table 1 (EB, UPC, QN) for the GAN runs beside the training data, as markdown."""
    try:
        from cadenza.evaluation.table import format_table, table1, write_table
    except ImportError:
        return None
    _say(f"paper 004's Table 1: EB, UPC and QN of the training data and of {bars} generated bars")
    rows = table1(runs, data=store, n_bars=bars, seed=0)
    write_table(rows, out / "evaluation", with_paper=True)
    text = format_table(rows, with_paper=True)
    print(text)
    return text


def _silence_note(path: Path) -> str:
    """``(62% silent)`` from a sample's JSON sidecar, when it says so."""
    import json

    try:
        silent = json.loads(path.with_suffix(".json").read_text()).get("silent_fraction")
    except (OSError, ValueError):
        return ""
    if silent is None:
        return ""
    warn = ": mostly silence" if silent > 0.5 else ""
    return f" ({silent:.0%} silent{warn})"


def _measured(job: Job, written: dict[str, Any], out: Path) -> list[str]:
    """Bullet lines: where the model's clips sit between the floor and the garbage, and their flags."""
    key = REFERENCE_OF[job.store]
    ev = written.get("evaluations", {}).get(key)
    if ev is None:
        return []
    cs = next((c for c in ev.sets if Path(c.source).name == job.config), None)
    if cs is None:
        return []
    link = f"evaluation/{key}/report.html"
    kad = cs.distances.get("kad")
    floor = next((c for c in ev.calibration if c.name == "real vs real"), None)
    garbage = [c for c in ev.calibration if c is not floor and c.distances.get("kad")]
    lines = []
    if kad is not None and kad.value is not None:
        text = f"- measured against held-out music: KAD {kad.value:.3g}"
        if kad.low is not None and kad.high is not None:
            text += f" [{kad.low:.3g}, {kad.high:.3g}]"
        if floor is not None and floor.distances.get("kad"):
            text += f" (real vs real: {floor.distances['kad'].value:.3g}"
            if garbage:
                nearest = min(garbage, key=lambda c: c.distances["kad"].value)
                text += f"; nearest garbage, {nearest.name}: {nearest.distances['kad'].value:.3g}"
            text += ")"
        lines.append(text)
    flags = ", ".join(f"{k} {v}/{len(cs.clips)}" for k, v in cs.flag_counts().items() if v)
    lines.append(f"- flags: {flags or 'none'} ([evaluation report]({link}))")
    if cs.note:
        lines.append(f"- note: {cs.note}")
    return lines


def write_report(out: Path, written: dict[str, Any], *, seconds: float) -> Path:
    """``report.md`` and ``report.html`` (the same content) in ``out``; returns the Markdown path."""
    lines = [
        "# cadenza demo",
        "",
        f"Run in {seconds:.0f} s on the music21 corpus shipped with the package.",
        "",
    ]
    lines += ["## Data", *[f"- {STORES[k].what}: {s}" for k, s in written["stores"].items()], ""]
    lines += ["## One chorale", f"![one chorale]({Path(written['plot']).relative_to(out)})", ""]
    for job in written["jobs"]:
        run = written["runs"].get(job.config)
        if run is None:
            continue
        lines += [
            f"## {job.config}: {job.what}",
            f"- run directory: `{run}` (config.yaml, checkpoints, metrics.csv, plots/loss.png, TensorBoard events)",
            *_measured(job, written, out),
            f"![loss]({Path(run).relative_to(out)}/plots/loss.png)",
            "- generated:",
            *[f"  - `{p}`{_silence_note(Path(p))}" for p in written["samples"].get(job.config, [])],
            "",
        ]
    if written.get("evaluations"):
        lines += [
            "## Evaluation",
            "",
            "Each model's clips against held-out music of its data (`cadenza evaluate`): lower KAD and FAD "
            "are closer to real music; a model should sit near the real-vs-real floor and far from the "
            "garbage rows (noise, silence, low-pass, loop).",
            "",
        ]
        for key, ev in written["evaluations"].items():
            lines += [
                f"### Against {STORES[key].what}",
                "",
                f"[full report with players](evaluation/{key}/report.html)",
                "",
            ]
            lines += ["| set | KAD | FAD | clips | flags |", "|---|---|---|---|---|"]
            for cs in ev.rows():
                cells = []
                for metric in ("kad", "fad"):
                    e = cs.distances.get(metric)
                    cells.append("—" if e is None or e.value is None else f"{e.value:.3g}")
                flags = ", ".join(f"{k} {v}" for k, v in cs.flag_counts().items() if v) or "—"
                lines.append(f"| {cs.name} | {cells[0]} | {cells[1]} | {len(cs.clips)} | {flags} |")
            lines.append("")
    if written.get("table1"):
        lines += ["## Paper 004's Table 1 for our GAN", "", written["table1"], ""]
    lines += [
        "## Next",
        "- `cadenza train <model>-tiny --data <store>` trains any other model; `cadenza generate RUN` writes more music.",
        "- `cadenza evaluate RUN... --reference STORE --out results/` measures any runs or folders of audio/MIDI.",
        "- `tensorboard --logdir demo/runs` shows the losses, audio samples and figures.",
        "",
    ]
    path = out / "report.md"
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    from cadenza.study.report import markdown_to_html

    (out / "report.html").write_text(markdown_to_html(text, title="cadenza demo"))
    return path
