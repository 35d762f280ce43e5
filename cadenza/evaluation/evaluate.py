"""``cadenza evaluate``: where each set of clips sits between real music and garbage.

:func:`evaluate` takes runs, bundles and folders, a reference (a feature store, whose held-out
split is decoded back to sound, or a folder of held-out music) and writes a report folder:

1. **Clips.** A run or bundle generates ``n_clips`` clips of ``seconds`` with ``seed``
   (piano-roll models: one phrase each, rendered); a folder is taken as it is (audio, and
   scores rendered with FluidSynth). Every clip is resampled to 22.05 kHz mono for measuring.
2. **Features** of :mod:`cadenza.evaluation.features` (plain DSP, versioned), one embedding
   per clip, standardised by the reference's mean and deviation.
3. **Set distances** against the reference (:mod:`cadenza.evaluation.distances`): KAD (the
   headline), FAD, precision, recall, density, coverage, each with a bootstrap 95% interval.
4. **Calibration rows** from the reference itself: its two halves (split by file) against each
   other, the floor, and garbage made from the first half against the second (white noise at
   the clip's level, digital silence, a 3.5 kHz low-pass, one 0.5 s snippet looped). For each
   run whose store only estimates its sound (mel, MFCC), a *ceiling* row: the first half
   encoded in that representation and decoded back, the nearest to real music a model of it
   can come.
5. **Per-clip detectors** (:mod:`cadenza.evaluation.detectors`): silence, noise, clipping,
   loudness, loops and copies of the training data, flagged by rules relative to the reference.
6. **Symbolic measures** where both sides have scores: EB, UPC, QN and muspy's family per set,
   and the set distances over per-bar features.

Examples
--------
>>> ev = evaluate(["runs/bach-base", "samples/"], reference="data/bach-fft", out="results")  # doctest: +SKIP
>>> print(format_summary(ev))                                                               # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cadenza import __version__
from cadenza.errors import CadenzaError, ParameterError
from cadenza.evaluation import detectors as det
from cadenza.evaluation.clips import (
    RENDER_SR,
    Item,
    folder_clips,
    folder_training_audio,
    is_run,
    is_store,
    read_folder,
    store_clips,
    store_training_audio,
)
from cadenza.evaluation.distances import MIN_CLIPS, kad_reach, set_distances
from cadenza.evaluation.features import (
    ANALYSIS_SR,
    CLIP_SCALE_FLOOR,
    FEATURE_VERSION,
    WINDOW_SCALE_FLOOR,
    ClipFeatures,
    clip_embedding,
    clip_features,
    feature_gaps,
)
from cadenza.evaluation.results import Clip, ClipSet, Estimate, Evaluation, garbage_not_apart
from cadenza.validation import output_folder

log = logging.getLogger(__name__)

__all__ = ["evaluate", "format_summary"]

#: Calibration clips written out for listening (all are measured).
N_CALIBRATION_PLAYERS = 3
#: Nearest reference clips averaged into a clip's own distance (for best/worst).
K_CLIP = 5
LOWPASS_HZ = 3500.0
LOOP_SECONDS = 0.5
#: Window hop (frames of 20 ms) of the training windows the copy check searches: a clip cut at
#: any offset lies within 10 ms of one of them.
COPY_HOP_FRAMES = 1
#: The most of each file of an evaluated folder that is heard (a score's symbolic measures read
#: it whole): an hour-long recording measured whole took 5.2 GB of memory, as one clip.
MAX_MEASURED_SECONDS = 600.0


def _say(text: str) -> None:
    log.info(text)


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "set"
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}-{k}", k + 1
    taken.add(slug)
    return slug


def _to_analysis(y: np.ndarray, sr: int) -> np.ndarray:
    import soxr

    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if sr != ANALYSIS_SR and len(y):
        y = soxr.resample(y, sr, ANALYSIS_SR, quality="HQ").astype(np.float32)
    return y


# ----------------------------------------------------------------------------- measuring
class _Measured:
    """One set's items with their features, embeddings and per-clip measures."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.y16 = [_to_analysis(it.y, it.sr) for it in items]
        self.features: list[ClipFeatures] = [clip_features(y) for y in self.y16]
        self.embeddings = (
            np.stack([clip_embedding(f.windows) for f in self.features]) if items else np.zeros((0, 0))
        )
        self.measures: list[dict[str, float | None]] = []
        for it, y, f in zip(items, self.y16, self.features):
            score, lag = det.loop_score(f)
            self.measures.append(
                {
                    "seconds": len(it.y) / it.sr,
                    "silent_fraction": det.silent_fraction(it.y, it.sr),
                    "flatness": det.flatness(it.y, it.sr),
                    "lufs": det.loudness_lufs(y, ANALYSIS_SR),
                    "clipping": det.clipping_rate(it.y, level=det.CLIPPING_LEVEL / it.scale),
                    "loop_score": score,
                    "loop_lag": lag,
                }
            )


class _Space:
    """The reference's standardisation of clip embeddings and of window features (deviations floored
    at :data:`~cadenza.evaluation.features.CLIP_SCALE_FLOOR`)."""

    def __init__(self, ref: _Measured) -> None:
        emb = ref.embeddings
        self.mean = emb.mean(axis=0)
        self.scale = np.maximum(emb.std(axis=0), CLIP_SCALE_FLOOR)
        windows = np.concatenate([f.windows for f in ref.features])
        self.w_mean = windows.mean(axis=0)
        self.w_scale = np.maximum(windows.std(axis=0), WINDOW_SCALE_FLOOR)
        self.ref = self.z(emb)

    def z(self, emb: np.ndarray) -> np.ndarray:
        return (emb - self.mean) / self.scale

    def zw(self, windows: np.ndarray) -> np.ndarray:
        return (windows - self.w_mean) / self.w_scale


def _scale(std: np.ndarray) -> np.ndarray:
    """Deviations with a floor, so a feature constant over the reference cannot blow up distances."""
    positive = std[std > 0]
    floor = 1e-3 * float(np.median(positive)) if positive.size else 1.0
    return np.maximum(std, max(floor, 1e-9))


#: Below this share of the held-out music's own kernel similarity a set's KAD is saturated
#: (:func:`~cadenza.evaluation.distances.kad_reach`).
KAD_REACH_MIN = 0.01


def _distances(
    x: np.ndarray, y: np.ndarray, *, n_boot: int, seed: int
) -> tuple[dict[str, Estimate], str | None]:
    if len(x) < MIN_CLIPS or len(y) < MIN_CLIPS:
        return {}, (
            f"set distances need at least {MIN_CLIPS} clips on each side, here {len(x)} against "
            f"{len(y)} reference clips: per-clip measures only"
        )
    try:
        dist = set_distances(x, y, n_boot=n_boot, seed=seed)
    except ParameterError as exc:
        return {}, f"no set distances: {exc}"
    notes = []
    if "precision" not in dist:
        notes.append(
            "too few clips for precision/recall/density/coverage (they need more than 5 on each side)"
        )
    reach = kad_reach(x, y)
    log.debug("KAD reach %.3g", reach)
    if reach < KAD_REACH_MIN:
        notes.append(
            f"KAD saturated: these clips lie beyond its kernel's reach of the held-out music (they keep "
            f"{reach:.2%} of its own similarity), so their KAD says how alike they are, not how far: "
            "FAD still measures the distance"
        )
    return dist, "; ".join(notes) or None


def _clip_distance(z: np.ndarray, ref: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.maximum(((z[:, None, :] - ref[None, :, :]) ** 2).sum(-1), 0.0))
    k = min(K_CLIP, ref.shape[0])
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


# ----------------------------------------------------------------------------- files for the report
def _write_wav(path: Path, y: np.ndarray, sr: int) -> Path | None:
    """A player's WAV; None for a clip without a sample (a reference file one sample long at
    96 kHz has none at the analysis rate), which no WAV holds."""
    from cadenza.audio import write_audio

    if len(y) == 0:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.abs(y).max(initial=0.0))
    write_audio(path, np.clip(y, -1.0, 1.0) if peak > 1.0 else y, sr)
    return path


def _write_spectrogram(path: Path, y16: np.ndarray, title: str) -> Path:
    from cadenza.plots import _plt, plot_spectrogram, save_figure

    fig, ax = _plt().subplots(figsize=(6, 1.8))
    plot_spectrogram(
        y16 if len(y16) else np.zeros(ANALYSIS_SR, np.float32),
        sr=ANALYSIS_SR,
        n_fft=1024,
        hop_length=256,
        n_mels=64,
        ax=ax,
        title=title,
    )
    return save_figure(fig, path, dpi=72)


def _rel(path: Path | None, out: Path) -> str | None:
    return None if path is None else Path(os.path.relpath(path, out)).as_posix()


# ----------------------------------------------------------------------------- sources
def _generate(
    run: Path, folder: Path, *, n_clips: int, seconds: float, seed: int, device: str, options: dict[str, Any]
) -> tuple[list[Item], dict[str, Any]]:
    """Clips generated by a run or bundle into ``folder``, read back as items."""
    import pretty_midi

    from cadenza.audio import read_audio
    from cadenza.generation import generate_from_run

    paths = generate_from_run(
        run, seconds=seconds, n=n_clips, seed=seed, out=folder, device=device, options=options
    )
    items = []
    for i, path in enumerate(paths):
        wav = path.with_suffix(".wav")
        y, sr = read_audio(wav)
        midi = pretty_midi.PrettyMIDI(str(path)) if path.suffix == ".mid" else None
        files = {"wav": wav}
        if midi is not None:
            files["midi"] = path
            if path.with_suffix(".png").is_file():
                files["png"] = path.with_suffix(".png")
        items.append(
            Item(name=f"clip-{i}", y=y, sr=int(sr), midi=midi, origin=str(path), group=str(i), files=files)
        )
    store = None
    try:
        from cadenza.generation import find_checkpoint
        from cadenza.training.checkpoint import load_checkpoint

        state = load_checkpoint(find_checkpoint(run))
        store = (state.get("config") or {}).get("data", {}).get("store")
    except CadenzaError:
        pass
    return items, {"store": store}


class _TrainingWindows:
    """Standardised training windows per training source, for the copy check (cached)."""

    def __init__(self, space: _Space, seed: int) -> None:
        self.space = space
        self.seed = seed
        self.cache: dict[str, np.ndarray | None] = {}

    def get(self, source: str | os.PathLike | None) -> np.ndarray | None:
        """The windows of a store's train split or of a folder of music; None when there is none."""
        if not source or not Path(source).exists():
            return None
        key = str(Path(source).resolve())
        if key not in self.cache:
            if is_store(source):
                _say(f"copy check: reading the training split of {source}")
                audio = store_training_audio(source, seed=self.seed)
            else:
                _say(f"copy check: reading the training music in {source}")
                audio = folder_training_audio(source, seed=self.seed)
            windows = [_dense_windows(_to_analysis(y, sr)) for y, sr in audio if len(y)]
            self.cache[key] = self.space.zw(np.concatenate(windows)) if windows else None
        return self.cache[key]


def _dense_windows(y: np.ndarray, *, segment_seconds: float = 60.0) -> np.ndarray:
    """Window features at every ``COPY_HOP_FRAMES`` frames, a minute of audio at a time (bounded memory)."""
    seg, extra = int(segment_seconds * ANALYSIS_SR), ANALYSIS_SR
    return np.concatenate(
        [
            clip_features(y[a : a + seg + extra], hop_frames=COPY_HOP_FRAMES).windows
            for a in range(0, max(len(y) - extra, 1), seg)
        ]
    )


def _copy_baseline(src: str, ref: _Measured, n_clips: int, seconds: float, seed: int) -> _Measured:
    """The held-out clips whose distance to the training windows is the copy check's yardstick.

    The reference's clips, unless the training music comes from a store whose representation
    only estimates its sound (mel, MFCC): its training windows then carry the inversion's
    artefacts, and so do a model's clips, while exact held-out audio carries none, so that any
    inverted clip would look closer to the training music than real held-out music is (every
    clip of a mel model was flagged as a copy). The store's own held-out files, decoded the
    same way, are then the yardstick.
    """
    from cadenza.data.store import FeatureStore

    if not is_store(src) or FeatureStore(src).representation.is_exact:
        return ref
    try:
        items, _ = store_clips(src, n_clips=n_clips, seconds=seconds, seed=seed)
    except (CadenzaError, ParameterError):
        return ref
    return _Measured(items) if items else ref


def _store_representation(store: str | None) -> Any:
    """The representation of the feature store at ``store``, or None (no store, or unreadable)."""
    from cadenza.data.store import FeatureStore

    if not store or not is_store(store):
        return None
    try:
        return FeatureStore(store).representation
    except (CadenzaError, ParameterError, OSError):
        return None


def _copy_distances(measured: _Measured, train: np.ndarray, space: _Space) -> np.ndarray:
    return np.array(
        [
            float(np.median(det.nearest_window_distances(space.zw(f.windows), train)))
            for f in measured.features
        ]
    )


# ----------------------------------------------------------------------------- symbolic
def _symbolic(scores: list[Any], rep: Any) -> np.ndarray | None:
    """Bars ``(n, steps_per_bar, n_pitches)`` of scores (``pretty_midi.PrettyMIDI``), encoded by ``rep``."""
    bars = []
    for midi in scores:
        try:
            roll = np.asarray(rep.encode(midi))
        except CadenzaError:
            continue
        bars.append(roll.reshape(-1, int(rep.steps_per_bar), roll.shape[-1]))
    return np.concatenate(bars) if bars else None


def bar_features(bars: np.ndarray, *, lowest_pitch: int) -> np.ndarray:
    """Per-bar vectors ``(n, 17)``: pitch-class occupancy (12), polyphony, mean pitch, pitch range,
    onsets per step and the share of empty steps."""
    on = np.asarray(bars) > 0  # (n, S, P)
    n, steps, n_p = on.shape
    pitches = lowest_pitch + np.arange(n_p)
    pc = np.zeros((n, 12))
    occupancy = on.mean(axis=1)  # (n, P)
    np.add.at(pc.T, pitches % 12, occupancy.T)
    active = on.any(axis=1)
    count = np.maximum(active.sum(axis=1), 1)
    mean_pitch = (active * pitches).sum(axis=1) / count
    hi = np.where(active.any(axis=1), np.max(np.where(active, pitches, -1), axis=1), 0)
    lo = np.where(active.any(axis=1), np.min(np.where(active, pitches, 999), axis=1), 0)
    onsets = (on[:, 1:] & ~on[:, :-1]).sum(axis=(1, 2)) + on[:, 0].sum(axis=1)
    return np.column_stack(
        [
            pc,
            on.sum(axis=2).mean(axis=1),
            mean_pitch,
            hi - lo,
            onsets / steps,
            1.0 - on.any(axis=2).mean(axis=1),
        ]
    )


def _symbolic_row(bars: np.ndarray, rep: Any) -> dict[str, float | None]:
    from cadenza.evaluation.symbolic import symbolic_report

    bpp = 4 if len(bars) >= 4 else 1
    bars = bars[: len(bars) // bpp * bpp]
    report = symbolic_report(
        bars, lowest_pitch=int(rep.lowest_pitch), resolution=int(rep.resolution), bars_per_piece=bpp
    )
    return {k: (float(v) if v is not None and np.isfinite(v) else None) for k, v in report.items()}


# ----------------------------------------------------------------------------- the evaluation


def display_names(sources: Sequence[str | os.PathLike]) -> list[str]:
    """A row name per source: its folder's name, with as many parent folders as it takes to tell
    two sources of the same name apart (two studies' ``runs/mel_rnn``).

    >>> display_names(["a/runs/mel_rnn", "b/runs/mel_rnn", "runs/wavenet"])
    ['a/runs/mel_rnn', 'b/runs/mel_rnn', 'wavenet']
    """
    parts = [Path(os.path.abspath(s)).parts for s in sources]
    depth = [1] * len(parts)
    while True:
        names = [str(Path(*p[-d:])) if p else str(s) for p, d, s in zip(parts, depth, sources)]
        twins = {n for n in names if names.count(n) > 1}
        grow = [i for i, n in enumerate(names) if n in twins and depth[i] < len(parts[i])]
        if not grow:
            return names
        for i in grow:
            depth[i] += 1


def evaluate(
    sources: Sequence[str | os.PathLike],
    *,
    reference: str | os.PathLike,
    out: str | os.PathLike = "results",
    n_clips: int = 50,
    seconds: float = 10.0,
    seed: int = 0,
    n_boot: int = 1000,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    train: str | os.PathLike | None = None,
    names: Sequence[str] | None = None,
) -> Evaluation:
    """Measure runs, bundles and folders against a reference and write the report into ``out``.

    Parameters
    ----------
    sources : sequence of paths
        Run directories, bundles or checkpoints (asked for ``n_clips`` clips of ``seconds``),
        and folders (or single files) of audio and MIDI/MusicXML, taken as they are.
    reference : path
        A feature store (its ``test`` split, decoded back to audio or scores) or a folder of
        held-out music (each file cut into clips of ``seconds``).
    out : path
        The report folder: ``report.html``, ``report.md``, ``metrics.json``, ``metrics.csv``,
        ``distances.png`` and ``clips/`` with every clip's WAV and picture.
    n_clips, seconds, seed : int, float, int
        Clips generated per run, their length, and the seed of generation and of the bootstrap.
        ``n_clips`` also caps the reference's clips.
    n_boot : int
        Bootstrap draws of the 95% intervals (0: no intervals).
    device : str
        Where runs generate.
    options : dict, optional
        Generation options of the model families (``{"temperature": 0.9}``).
    train : path, optional
        Training material for the copy check: a feature store (its train split) or a folder.
        Default: each run's own store, else the reference store's train split.
    names : sequence of str, optional
        Display names of the sources (default: their folder names).

    Returns
    -------
    Evaluation
    """
    from cadenza.evaluation.report import write_report

    if n_clips < 1:
        raise ParameterError(f"n_clips must be at least 1, got {n_clips}")
    if not seconds > 0:
        raise ParameterError(f"seconds must be positive, got {seconds}")
    if n_boot < 0:
        raise ParameterError(f"n_boot must be 0 (no intervals) or more, got {n_boot}")
    if names is not None and len(names) != len(sources):
        raise ParameterError(f"{len(names)} names for {len(sources)} sources")
    out = output_folder(out, "the report")
    clips_dir = out / "clips"
    taken: set[str] = {"reference"}
    notes: list[str] = []

    # --- the reference
    reference = Path(reference)
    ref_rep = None
    if is_store(reference):
        _say(f"reference: held-out clips of the feature store {reference}")
        ref_items, info = store_clips(reference, n_clips=n_clips, seconds=seconds, seed=seed)
        ref_skipped: list[tuple[str, str]] = []
        ref_rep = info["representation"]
        scores = [i.midi for i in ref_items if i.midi is not None]
        if info["note"]:
            notes.append(info["note"])
    elif reference.exists():
        _say(f"reference: the music in {reference}")
        ref_items, scores, ref_skipped = folder_clips(reference, n_clips=n_clips, seconds=seconds, seed=seed)
    else:
        raise ParameterError(f"--reference {reference}: no such feature store or folder")
    if not ref_items:
        raise ParameterError(
            f"the reference {reference} holds no usable clip"
            + (f" ({len(ref_skipped)} files skipped: {ref_skipped[0][1]}, ...)" if ref_skipped else "")
        )
    ref = _Measured(ref_items)
    space = _Space(ref)
    ref_set = _clip_set(
        "reference",
        "reference",
        str(reference),
        ref,
        space,
        out,
        clips_dir / "reference",
        players=len(ref_items),
        skipped=ref_skipped,
    )
    training = _TrainingWindows(space, seed)
    # the training music of the copy check: --train, else each run's own store, else the reference store's
    default_train = str(train) if train else (str(reference) if is_store(reference) else None)

    # --- calibration rows
    calibration = _calibration(ref, space, out, clips_dir, n_boot=n_boot, seed=seed)
    if calibration and (why := _not_apart(calibration)):
        notes.append(why)

    # --- symbolic reference
    sym_rep = ref_rep if ref_rep is not None and ref_items[0].midi is not None else None
    if sym_rep is None and scores:
        from cadenza.representations import make_representation

        sym_rep = make_representation("pianoroll")
    ref_bars = _symbolic(scores, sym_rep) if sym_rep is not None else None
    if ref_bars is not None:
        ref_set.symbolic = _symbolic_row(ref_bars, sym_rep)

    # --- held-out copy distances, per training source
    ref_copy: dict[str, np.ndarray] = {}

    def copy_check(
        measured: _Measured, store: str | None
    ) -> tuple[list[float | None], list[float | None], str | None]:
        src = default_train if train else (store if store and is_store(store) else default_train)
        train_windows = training.get(src) if src else None
        if train_windows is None:
            return (
                [None] * len(measured.items),
                [None] * len(measured.items),
                ("no training data at hand: copy check skipped (pass --train STORE_OR_FOLDER)"),
            )
        if src not in ref_copy:
            ref_copy[src] = _copy_distances(
                _copy_baseline(src, ref, n_clips, seconds, seed), train_windows, space
            )
        median = float(np.median(ref_copy[src]))
        d = _copy_distances(measured, train_windows, space)
        return list(d), list(d / max(median, 1e-12)), None

    # --- the sets
    sets: list[ClipSet] = []
    lossy: dict[str, Any] = {}  # the runs' representations that only estimate their sound
    names = list(names) if names is not None else display_names(sources)
    for source, display in zip(sources, names):
        source = Path(source)
        slug = _slug(display, taken)
        folder = clips_dir / slug
        skipped: list[tuple[str, str]] = []
        cut: list[str] = []  # files of a folder measured over their first MAX_MEASURED_SECONDS
        store = None
        loss_curve = None
        try:
            if is_run(source):
                _say(f"{display}: generating {n_clips} clips of {seconds:g} s (seed {seed})")
                items, meta = _generate(
                    source,
                    folder,
                    n_clips=n_clips,
                    seconds=seconds,
                    seed=seed,
                    device=device,
                    options=dict(options or {}),
                )
                store, kind = meta["store"], "model"
                curve = (source if source.is_dir() else source.parent.parent) / "plots" / "loss.png"
                if curve.is_file():
                    loss_curve = folder / "loss.png"
                    shutil.copyfile(curve, loss_curve)
            elif source.exists():
                _say(f"{display}: reading {source}")
                items, skipped = read_folder(source, max_seconds=MAX_MEASURED_SECONDS)
                kind = "folder"
                cut = [i.name for i in items if len(i.y) >= int(MAX_MEASURED_SECONDS * i.sr) - 1]
            else:
                raise ParameterError(f"{source}: no such run, bundle, folder or file")
        except CadenzaError as exc:
            log.warning("%s: %s", display, exc)
            sets.append(
                ClipSet(
                    name=display,
                    kind="model" if is_run(source) else "folder",
                    source=str(source),
                    note=f"could not be evaluated: {exc}",
                )
            )
            continue
        if not items:
            sets.append(
                ClipSet(
                    name=display,
                    kind=kind,
                    source=str(source),
                    skipped=skipped,
                    note="no usable clip" + (f" ({len(skipped)} files skipped)" if skipped else ""),
                )
            )
            continue
        rep = _store_representation(store)
        if rep is not None and not rep.is_exact:
            lossy.setdefault(repr(rep.to_dict()), rep)
        _say(f"{display}: measuring {len(items)} clips")
        measured = _Measured(items)
        cs = _clip_set(
            display,
            kind,
            str(source),
            measured,
            space,
            out,
            folder,
            players=len(items),
            skipped=skipped,
            loss_curve=loss_curve,
        )
        dist, note = _distances(space.z(measured.embeddings), space.ref, n_boot=n_boot, seed=seed)
        cs.distances = dist
        copy_d, copy_r, copy_note = copy_check(measured, store)
        for clip, d, r in zip(cs.clips, copy_d, copy_r):
            clip.measures["copy_distance"] = d
            clip.measures["copy_ratio"] = r
        cut_note = None
        if kind == "folder" and cut:
            m = MAX_MEASURED_SECONDS
            span = f"{m / 60:g} minutes" if m >= 60 else f"{m:g} s"
            cut_note = (
                f"{len(cut)} file{'s' if len(cut) > 1 else ''} measured over {'their' if len(cut) > 1 else 'its'} "
                f"first {span} ({', '.join(cut[:3])}{' ...' if len(cut) > 3 else ''})"
            )
        cs.note = "; ".join(n for n in (note, copy_note, cut_note) if n) or None
        if ref_bars is not None:
            bars = _symbolic([i.midi for i in items if i.midi is not None], sym_rep)
            if bars is not None and len(bars):
                cs.symbolic = _symbolic_row(bars, sym_rep)
                lp = int(sym_rep.lowest_pitch)
                cs.symbolic_distances, _ = _distances(
                    *_standardise(
                        bar_features(bars, lowest_pitch=lp), bar_features(ref_bars, lowest_pitch=lp)
                    ),
                    n_boot=n_boot,
                    seed=seed,
                )
        sets.append(cs)

    # --- the ceilings of the lossy representations
    calibration += _ceilings(ref, space, out, clips_dir, list(lossy.values()), n_boot=n_boot, seed=seed)

    # --- flags, relative to the reference
    _flag(ref_set, ref_set)
    for cs in [*calibration, *sets]:
        _flag(cs, ref_set)

    settings = {
        "n_clips": n_clips,
        "seconds": seconds,
        "seed": seed,
        "n_boot": n_boot,
        "reference": str(reference),
        "n_reference_clips": len(ref_items),
        "sample_rate": ANALYSIS_SR,
        "options": dict(options or {}),
        "cadenza_version": __version__,
    }
    if len(ref_items) < 2 * MIN_CLIPS:
        notes.append(
            f"the reference has {len(ref_items)} clip{'' if len(ref_items) == 1 else 's'}: too few for set distances and calibration rows "
            f"(at least {2 * MIN_CLIPS}); only the per-clip measures are shown. Hold out more music (`cadenza "
            "prepare --split 0.6,0.2,0.2`, `cadenza study --split 0.6,0.2,0.2`) or give a folder of it as --reference"
        )
    evaluation = Evaluation(FEATURE_VERSION, settings, ref_set, calibration, sets, notes)
    write_report(evaluation, out)
    return evaluation


def _standardise(x: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, scale = ref.mean(axis=0), _scale(ref.std(axis=0))
    return (x - mean) / scale, (ref - mean) / scale


def _clip_set(
    name: str,
    kind: str,
    source: str,
    measured: _Measured,
    space: _Space,
    out: Path,
    folder: Path,
    *,
    players: int,
    skipped: list[tuple[str, str]] | None = None,
    loss_curve: Path | None = None,
) -> ClipSet:
    """A :class:`ClipSet` of measured items, with WAV players and pictures for the first ``players``."""
    clip_dist = _clip_distance(space.z(measured.embeddings), space.ref) if len(measured.items) else []
    clips = []
    for i, (it, y16, m) in enumerate(zip(measured.items, measured.y16, measured.measures)):
        m = dict(m, distance=float(clip_dist[i]))
        audio = image = midi = None
        if i < players:
            stem = _slug(it.name, set())
            wav = it.files.get("wav") or _write_wav(folder / f"{i:03d}-{stem}.wav", it.y, it.sr)
            audio = _rel(wav, out)
            png = it.files.get("png") or _write_spectrogram(folder / f"{i:03d}-{stem}.png", y16, it.name)
            image = _rel(png, out)
            midi = _rel(it.files.get("midi"), out)
        clips.append(
            Clip(name=it.name, audio=audio, image=image, midi=midi, seconds=len(it.y) / it.sr, measures=m)
        )
        if measured.features[i].padded:
            clips[-1].flags.append("short")
    return ClipSet(
        name=name,
        kind=kind,
        source=source,
        clips=clips,
        skipped=list(skipped or []),
        loss_curve=_rel(loss_curve, out),
        gaps=feature_gaps(space.z(measured.embeddings)) if len(measured.items) else {},
    )


def _calibration(
    ref: _Measured, space: _Space, out: Path, clips_dir: Path, *, n_boot: int, seed: int
) -> list[ClipSet]:
    """The floor (real vs real, halves split by file) and garbage made from half A against half B."""
    halves = _halves(ref)
    if halves is None:
        return []
    a, b = halves
    from scipy.signal import butter, sosfiltfilt

    rng = np.random.default_rng(seed)
    sos = butter(8, LOWPASS_HZ, btype="low", fs=ANALYSIS_SR, output="sos")
    half_a = [ref.y16[i] for i in a]

    def looped(y: np.ndarray) -> np.ndarray:
        n = int(LOOP_SECONDS * ANALYSIS_SR)
        if len(y) <= n:
            return y
        start = int(rng.integers(len(y) - n))
        return np.tile(y[start : start + n], -(-len(y) // n))[: len(y)]

    def lowpass(y: np.ndarray) -> np.ndarray:
        # forwards and backwards, padded at the ends by as much as a clip a few ms long allows
        padlen = min(3 * (2 * len(sos) + 1), len(y) - 1)
        return sosfiltfilt(sos, y, padlen=padlen).astype(np.float32) if padlen >= 0 else y.copy()

    def noise(y: np.ndarray) -> np.ndarray:
        rms = (float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) if len(y) else 0.0) or 0.1
        return np.clip(rms * rng.standard_normal(len(y)), -1, 1).astype(np.float32)

    garbage = {
        "white noise": noise,
        "digital silence": lambda y: np.zeros_like(y),
        f"low-pass {LOWPASS_HZ / 1000:g} kHz": lowpass,
        f"{LOOP_SECONDS:g} s loop": looped,
    }
    ref_b = space.ref[b]
    rows = []
    floor = _clip_set(
        "real vs real",
        "calibration",
        "the reference's first half against its second",
        _subset(ref, a),
        space,
        out,
        clips_dir / "calibration-real",
        players=0,
    )
    floor.distances, floor.note = _distances(space.ref[a], ref_b, n_boot=n_boot, seed=seed)
    rows.append(floor)
    for name, make in garbage.items():
        source = f"made from the reference's first half ({len(a)} clips)"
        ys = [make(y) for y in half_a]
        rows.append(_made_row(name, "calibration", source, ys, space, out, clips_dir, ref_b, n_boot, seed))
    return rows


def _not_apart(calibration: list[ClipSet]) -> str | None:
    """:func:`~cadenza.evaluation.results.garbage_not_apart` of the calibration rows, also kept
    as the floor row's note."""
    floor, garbage = calibration[0], calibration[1:]

    def kad(row: ClipSet) -> float | None:
        est = row.distances.get("kad")
        return None if est is None else est.value

    why = garbage_not_apart(kad(floor), [(r.name, kad(r)) for r in garbage], len(floor.clips) or None)
    if why:
        floor.note = f"{floor.note}; {why}" if floor.note else why
    return why


def _made_row(
    name: str,
    kind: str,
    source: str,
    ys: list[np.ndarray],
    space: _Space,
    out: Path,
    clips_dir: Path,
    ref_b: np.ndarray,
    n_boot: int,
    seed: int,
) -> ClipSet:
    """A row of clips ``ys`` (at the analysis rate) made from the reference's first half, measured
    against its second half ``ref_b`` (standardised embeddings)."""
    made = _Measured([Item(name=f"{name} {k}", y=y, sr=ANALYSIS_SR, group=str(k)) for k, y in enumerate(ys)])
    cs = _clip_set(
        name,
        kind,
        source,
        made,
        space,
        out,
        clips_dir / _slug("calibration-" + name, set()),
        players=N_CALIBRATION_PLAYERS,
    )
    cs.distances, cs.note = _distances(space.z(made.embeddings), ref_b, n_boot=n_boot, seed=seed)
    return cs


def _halves(ref: _Measured) -> tuple[list[int], list[int]] | None:
    """The reference's clips split in two by file (by clip where there is one file), or None
    where either half would hold fewer than ``MIN_CLIPS``."""
    items = ref.items
    if len(items) < 2 * MIN_CLIPS:
        return None
    groups = list(dict.fromkeys(it.group for it in items))
    if len(groups) >= 2:
        in_a = {g for k, g in enumerate(groups) if k % 2 == 0}
        a = [i for i, it in enumerate(items) if it.group in in_a]
        b = [i for i, it in enumerate(items) if it.group not in in_a]
    else:
        a, b = list(range(0, len(items), 2)), list(range(1, len(items), 2))
    if min(len(a), len(b)) < MIN_CLIPS:
        a, b = list(range(0, len(items), 2)), list(range(1, len(items), 2))
    return a, b


def round_trip(y: np.ndarray, rep: Any) -> np.ndarray:
    """``y`` (mono at the analysis rate) encoded by ``rep`` and decoded back, at the analysis rate:
    the best any model of that representation can sound, its inversion's artefacts and all."""
    import soxr

    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if rep.sample_rate != ANALYSIS_SR and len(y):
        y = soxr.resample(y, ANALYSIS_SR, rep.sample_rate, quality="HQ").astype(np.float32)
    out = np.asarray(rep.decode(rep.encode(y)), dtype=np.float32).reshape(-1)[: len(y)]
    if len(out) == 0 and len(y):  # a clip shorter than one hop decodes to nothing: silence as long as it
        out = np.zeros(len(y), np.float32)
    # (a longer clip comes back up to a hop short, 15 ms of 10 s, and is measured so, as it was
    # in every study: padding it with silence had moved the chorales' mel round-trip row by 4%)
    return _to_analysis(out, rep.sample_rate)


def _ceilings(
    ref: _Measured, space: _Space, out: Path, clips_dir: Path, reps: list[Any], *, n_boot: int, seed: int
) -> list[ClipSet]:
    """For each representation in ``reps`` that only estimates its sound (mel, MFCC): the
    reference's first half encoded and decoded by it, against the second half, as the
    calibration rows are. A model of that representation cannot be expected below this row."""
    halves = _halves(ref)
    if halves is None or not reps:
        return []
    a, b = halves
    rows = []
    names: set[str] = set()
    for rep in reps:
        name, k = f"{rep.name} round trip", 1
        while name in names:  # two stores of one representation with other parameters
            k += 1
            name = f"{rep.name} round trip {k}"
        names.add(name)
        _say(f"calibration: the reference's first half through {rep.name} and back")
        try:
            ys = [round_trip(ref.y16[i], rep) for i in a]
        except (CadenzaError, ParameterError, ValueError, RuntimeError) as exc:  # a yardstick, not the job
            log.warning("%s: left out (%s: %s)", name, type(exc).__name__, exc)
            continue
        source = f"the reference's first half ({len(a)} clips) encoded as {rep.name} and decoded back"
        rows.append(_made_row(name, "ceiling", source, ys, space, out, clips_dir, space.ref[b], n_boot, seed))
    return rows


def _subset(measured: _Measured, idx: list[int]) -> _Measured:
    sub = object.__new__(_Measured)
    sub.items = [measured.items[i] for i in idx]
    sub.y16 = [measured.y16[i] for i in idx]
    sub.features = [measured.features[i] for i in idx]
    sub.embeddings = measured.embeddings[idx]
    sub.measures = [measured.measures[i] for i in idx]
    return sub


def _flag(cs: ClipSet, ref: ClipSet) -> None:
    """Flags of every clip of ``cs`` by the rules of :mod:`cadenza.evaluation.detectors`."""
    ref_flat = [c.measures.get("flatness") for c in ref.clips]
    ref_flat = [v for v in ref_flat if v is not None]
    ref_loop = [c.measures.get("loop_score") for c in ref.clips]
    ref_loop = [v for v in ref_loop if v is not None]
    noise_at = max(det.NOISE_FLOOR, det.NOISE_FACTOR * max(ref_flat)) if ref_flat else det.NOISE_FLOOR
    loop_at = max(det.LOOP_THRESHOLD, (max(ref_loop) + 0.05) if ref_loop else 0.0)
    for clip in cs.clips:
        m = clip.measures
        flags = [f for f in clip.flags if f == "short"]
        if (m.get("silent_fraction") or 0.0) > det.SILENT_FLAG:
            flags.append("silent")
        if noise_at is not None and m.get("flatness") is not None and m["flatness"] > noise_at:
            flags.append("noise")
        if m.get("loop_score") is not None and m["loop_score"] > loop_at and cs is not ref:
            flags.append("loop")
        if m.get("copy_ratio") is not None and m["copy_ratio"] < det.COPY_RATIO:
            flags.append("copy")
        if (m.get("clipping") or 0.0) > det.CLIPPING_RATE:
            flags.append("clipping")
        clip.flags = flags


def format_summary(ev: Evaluation) -> str:
    """The comparison table as plain text for the terminal."""
    header = f"{'set':<28} {'KAD':>22} {'FAD':>22} {'clips':>5}  flags"
    lines = [header, "-" * len(header)]

    def cell(e: Estimate | None) -> str:
        if e is None or e.value is None:
            return "—"
        if e.low is None or e.high is None:
            return f"{e.value:.3g}"
        return f"{e.value:.3g} [{e.low:.3g}, {e.high:.3g}]"

    for cs in ev.rows():
        flags = ", ".join(f"{k} {v}" for k, v in cs.flag_counts().items() if v)
        lines.append(
            f"{cs.name[:28]:<28} {cell(cs.distances.get('kad')):>22} {cell(cs.distances.get('fad')):>22} "
            f"{len(cs.clips):>5}  {flags or '-'}"
        )
        if cs.kind not in ("calibration", "ceiling") and cs.note:
            lines.append(f"{'':<28} note: {cs.note}")
    return "\n".join(lines) + "\n"


__all__ += ["bar_features", "RENDER_SR"]
