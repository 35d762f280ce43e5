"""Generation from a run, a checkpoint or an exported bundle.

:func:`generate_from_run` loads ``checkpoints/best.pt`` (else ``last.pt``), rebuilds the model
from the configuration saved inside, asks the family's ``generate`` for frames, undoes the
normalisation, decodes them through the run's representation and writes one WAV (or MIDI for
a symbolic representation) per sample with a JSON sidecar of every parameter used. All
randomness comes from ``seed``, so the same call writes the same bytes.

Models that continue real music (``model.n_seed_frames > 0``, e.g. the FFT LSTMs' sliding
window) start from a seed clip: ``seed_file`` when given, else one of the clips an exported
bundle carries, else a random window of a held-out file of the run's feature store (test,
else valid, else train split), else quiet noise. A raw-audio window that is mostly silence
(most of its 10 ms frames below -50 dBFS, as the silence flag counts them; a chorale's last
breath) is drawn again, up to :data:`SEED_DRAWS` times: a sample-level model continues such a
seed with silence.

Examples
--------
>>> paths = generate_from_run("runs/bach-base", seconds=10, n=3, seed=7, out="samples")  # doctest: +SKIP
>>> [p.name for p in paths]                                                              # doctest: +SKIP
['bach-base-seed7-0.wav', 'bach-base-seed7-1.wav', 'bach-base-seed7-2.wav']
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadenza import __version__
from cadenza.data.normalize import Normalizer
from cadenza.data.store import FeatureStore, atomic_write_text
from cadenza.errors import CadenzaError, ParameterError, StoreError
from cadenza.evaluation.detectors import SILENCE_THRESHOLD_DB, silent_fraction
from cadenza.models import DataInfo, GenerationRequest, get_model_spec
from cadenza.representations import Representation, representation_from_dict
from cadenza.representations.base import RENDER_SAMPLE_RATE  # noqa: F401 - re-exported
from cadenza.training.checkpoint import CheckpointError, load_checkpoint
from cadenza.training.config import ExperimentConfig
from cadenza.training.distributed import resolve_device

log = logging.getLogger(__name__)

#: Split preference for seed clips: held-out music first.
SEED_SPLITS = ("test", "valid", "train")
#: Draws of a held-out window for a raw-audio seed until one is not mostly silence.
SEED_DRAWS = 10
#: Amplitude of the noise seed used when no real music is at hand.
NOISE_SEED_AMPLITUDE = 1e-3
#: How much of a seed file is read: its windows come from its first ten minutes (a whole
#: concert recording would otherwise be decoded to start from a few seconds of it).
SEED_FILE_SECONDS = 600.0
#: A sample more than this share silent (see :func:`cadenza.evaluation.detectors.silent_fraction`) gets a warning.
SILENCE_WARNING = 0.5


@dataclasses.dataclass
class Generator:
    """A model ready to generate, with everything needed to turn its output into sound."""

    model: torch.nn.Module
    config: ExperimentConfig
    representation: Representation
    normalizer: Normalizer
    info: DataInfo
    checkpoint: Path
    state: dict[str, Any]
    name: str

    @property
    def n_seed_frames(self) -> int:
        return int(getattr(self.model, "n_seed_frames", 0) or 0)


# ----------------------------------------------------------------------------- loading
def find_checkpoint(source: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Path:
    """The checkpoint to generate from: ``checkpoint``, a ``.pt`` file, a bundle folder or a run."""
    if checkpoint is not None:
        return Path(checkpoint)
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise CheckpointError(f"{source}: no such run, bundle or checkpoint")
    for candidate in (
        source / "bundle.pt",
        source / "checkpoints" / "best.pt",
        source / "checkpoints" / "last.pt",
    ):
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"{source}: no checkpoint (neither checkpoints/best.pt nor checkpoints/last.pt, nor bundle.pt); "
        "train first with `cadenza train CONFIG --run " + str(source) + "`"
    )


def normalizer_from_state(state: dict[str, Any]) -> Normalizer:
    norm = state.get("normalization") or {"kind": "none"}
    if norm["kind"] == "none":
        return Normalizer("none", np.zeros(1, np.float32), np.ones(1, np.float32))
    return Normalizer(
        norm["kind"], np.asarray(norm["shift"], dtype=np.float32), np.asarray(norm["scale"], dtype=np.float32)
    )


def load_generator(
    source: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None, device: str = "cpu"
) -> Generator:
    """The model of a run, checkpoint or bundle, in eval mode on ``device``."""
    path = find_checkpoint(source, checkpoint)
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        last = path.with_name("last.pt")
        # a run's best.pt damaged (outside cadenza: its writes are atomic): its last.pt is a model too
        if (
            checkpoint is not None
            or not Path(source).is_dir()
            or path.name != "best.pt"
            or not last.is_file()
        ):
            raise
        log.warning("%s; generating from %s instead", exc, last)
        path, state = last, load_checkpoint(last)
    missing = [k for k in ("model", "config", "data_info", "weights", "representation") if k not in state]
    if missing:  # cadenza writes every one: the file was damaged or made by hand
        raise CheckpointError(
            f"{path}: a cadenza checkpoint without its {', '.join(missing)}; export the run again, "
            "or use another checkpoint"
        )
    config = ExperimentConfig.from_dict(state["config"], source=f"{path} (saved config)")
    config.data.store = _locate_store(config.data.store, path, state["representation"])
    spec = get_model_spec(state["model"])
    info = DataInfo.from_dict(state["data_info"])
    model = spec.build(config.model, info)
    try:
        model.load_state_dict(state["weights"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: its weights do not fit its own model ({detail}); the file was damaged or edited: "
            "export the run again, or use another checkpoint"
        ) from None
    model.to(resolve_device(device)).eval()
    source = Path(source)
    if source.is_dir():
        name = source.name
    else:
        name = source.parent.parent.name if source.parent.name == "checkpoints" else source.stem
    return Generator(
        model=model,
        config=config,
        representation=representation_from_dict(dict(state["representation"])),
        normalizer=normalizer_from_state(state),
        info=info,
        checkpoint=path,
        state=state,
        name=name,
    )


def _locate_store(store: str | None, checkpoint: Path, representation: Any) -> str | None:
    """The run's feature store: where its config says, or, where that is gone (a study or a
    project folder moved, renamed or copied to another machine), the same store found by the
    end of its old path beside the run (``data/mel-22.05k`` in the study folder the checkpoint
    is now in), when it holds the run's representation. A run moved had lost its store without
    a word but a warning, and a mel RNN seeded from quiet noise wrote silence.
    """
    if not store or (Path(store) / "meta.yaml").exists():
        return store
    import yaml

    old = Path(store).parts
    for folder in list(checkpoint.resolve().parents)[:5]:  # the checkpoints, the run, runs, the study...
        for k in range(min(3, len(old) - 1), 0, -1):  # the longest end of the old path first
            candidate = folder.joinpath(*old[-k:])
            try:
                meta = yaml.safe_load((candidate / "meta.yaml").read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                continue
            if meta.get("representation") == dict(representation):
                log.info("the run's store %s is gone; using %s, found beside the run", store, candidate)
                return str(candidate)
    return store


# ----------------------------------------------------------------------------- seeds
def held_out_clips(
    store: FeatureStore, n_frames: int, n: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """``n`` random windows of ``n_frames`` raw frames from the store's held-out files."""
    for split in SEED_SPLITS:
        records = [r for r in store.records_of(split) if int(r["n_frames"]) >= n_frames]
        if records:
            break
    else:
        raise StoreError(f"{store.path}: no file has the {n_frames} frames a seed needs")
    rep = store.representation
    out = []
    for _ in range(n):
        for _ in range(SEED_DRAWS):
            record = records[int(rng.integers(len(records)))]
            start = int(rng.integers(int(record["n_frames"]) - n_frames + 1))
            frames = np.array(store.load(record["id"])[start : start + n_frames], dtype=np.float32)
            if np.isfinite(frames).all() and not _quiet_audio(rep, frames):  # (damaged: NaN in, NaN out)
                break
        out.append(
            (
                frames,
                {
                    "kind": "store",
                    "store": str(store.path),
                    "split": split,
                    "id": record["id"],
                    "start": start,
                },
            )
        )
    return out


def _quiet_audio(rep: Representation, frames: np.ndarray) -> bool:
    """Whether raw-audio frames (waveform) are mostly silence, as a generated sample's warning says."""
    if rep.name != "waveform":
        return False
    return silent_fraction(rep.decode(frames.astype(rep.dtype)), int(rep.sample_rate)) > SILENCE_WARNING


def file_clips(
    path: str | os.PathLike, rep: Representation, n_frames: int, n: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """``n`` random windows of ``n_frames`` frames of a file (audio or score, as ``rep`` reads it:
    as ``cadenza prepare`` would, its offset taken out and its silent ends trimmed), drawn from
    its first :data:`SEED_FILE_SECONDS`."""
    from cadenza.data.prepare import read_frames
    from cadenza.errors import DecodeError

    found: dict[str, Any] = {}
    try:
        frames = read_frames(path, rep, max_seconds=SEED_FILE_SECONDS, info=found)
    except DecodeError as exc:
        why = "a seed must hold music; " if exc.reason in ("silent", "too short", "no notes") else ""
        raise ParameterError(f"--seed-file {exc}: {why}give another file") from None
    if len(frames) < n_frames:
        raise ParameterError(
            f"{path}: {len(frames)} frames, but the model starts from {n_frames} frames; use a longer seed file"
        )
    lead = float((found.get("trimmed") or [0.0])[0])
    out = []
    for _ in range(n):
        start = int(rng.integers(len(frames) - n_frames + 1))
        source: dict[str, Any] = {"kind": "file", "path": str(path), "start": start}
        if rep.input_kind == "audio":  # where in the file: its silent start was trimmed
            source["seconds"] = round(lead + start / rep.frame_rate, 3)
        out.append((frames[start : start + n_frames], source))
    return out


def bundle_clips(
    clips: list[torch.Tensor], n_frames: int, n: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    usable = [i for i, c in enumerate(clips) if len(c) >= n_frames]
    out = []
    for _ in range(n):
        i = usable[int(rng.integers(len(usable)))]
        start = int(rng.integers(len(clips[i]) - n_frames + 1))
        out.append(
            (clips[i][start : start + n_frames].numpy(), {"kind": "bundle", "clip": i, "start": start})
        )
    return out


def noise_clips(
    rep: Representation, n_frames: int, n: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """The representation's quiet start (noise at about -60 dBFS for audio, empty steps for scores)."""
    return [
        (
            rep.quiet_frames(n_frames, rng, amplitude=NOISE_SEED_AMPLITUDE),
            {"kind": "noise", "amplitude": NOISE_SEED_AMPLITUDE},
        )
        for _ in range(n)
    ]


def reference_clip(gen: Generator, n_frames: int, rng: np.random.Generator) -> np.ndarray | None:
    """Real frames to draw beside a result: a held-out window of ``n_frames`` (or the longest
    held-out file, when none is that long) of the run's store; None without a store."""
    store_path = gen.config.data.store
    if not store_path or not (Path(store_path) / "meta.yaml").exists():
        return None
    store = FeatureStore(store_path)
    for split in SEED_SPLITS:
        records = store.records_of(split)
        if records:
            longest = max(int(r["n_frames"]) for r in records)
            return held_out_clips(store, min(n_frames, longest), 1, rng)[0][0]
    return None


def seed_clips(
    gen: Generator, n: int, rng: np.random.Generator, *, seed_file: str | os.PathLike | None = None
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Raw (not normalised) seed frames for ``n`` samples, by the preference the module states."""
    n_frames = gen.n_seed_frames
    if seed_file is not None:
        return file_clips(seed_file, gen.representation, n_frames, n, rng)
    clips = gen.state.get("seed_clips") or []
    if clips and any(len(c) >= n_frames for c in clips):
        return bundle_clips(list(clips), n_frames, n, rng)
    store_path = gen.config.data.store
    if store_path and (Path(store_path) / "meta.yaml").exists():
        try:
            return held_out_clips(FeatureStore(store_path), n_frames, n, rng)
        except StoreError as exc:
            log.warning("cannot take seeds from the run's store (%s); trying other seeds", exc)
    log.warning(
        "no feature store or seed clips at hand: starting from quiet noise (give --seed-file for real music)"
    )
    return noise_clips(gen.representation, n_frames, n, rng)


# ----------------------------------------------------------------------------- generating
def synthesize(
    gen: Generator,
    *,
    n: int,
    seconds: float | None = None,
    beats: float | None = None,
    bars: float | None = None,
    seed: int,
    seed_file: str | os.PathLike | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Raw frames ``(n, n_frames, n_features)`` of new music and where each sample's seed came from.

    The length is ``seconds`` (any representation) or, for scores, ``beats`` or ``bars``.
    """
    if n < 1:
        raise ParameterError(f"n must be at least 1, got {n}")
    if seed_file is not None and gen.n_seed_frames == 0:
        raise ParameterError(
            f"model {gen.config.model_name} does not continue music (it starts from noise), so it has "
            "no use for a seed file; leave out --seed-file"
        )
    if (options or {}).get("style") and not gen.info.labels:
        raise ParameterError(
            f"model {gen.config.model_name} was trained without labels (data.label_key), so --style has "
            "nothing to blend; leave it out"
        )
    rep = gen.representation
    n_frames = rep.frames_for(seconds=seconds, beats=beats, bars=bars)
    _require_memory(n * n_frames * gen.info.n_features * 4)  # the float32 frames returned, at least
    _require_memory(rep.decode_bytes(n_frames), "turning one sample into sound")  # one at a time
    rng = np.random.default_rng(seed)
    device = next(gen.model.parameters()).device
    seed_tensor, sources = None, [{"kind": "none"}] * n
    if gen.n_seed_frames > 0:
        clips = seed_clips(gen, n, rng, seed_file=seed_file)
        sources = [info for _, info in clips]
        raw = np.stack([frames for frames, _ in clips]).astype(np.float32)  # (n, T, F)
        seed_tensor = torch.from_numpy(np.asarray(gen.normalizer.apply(raw), dtype=np.float32)).to(device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    request = GenerationRequest(
        n=n,
        n_frames=n_frames,
        generator=generator,
        seed=seed_tensor,
        options=dict(options or {}),
        normalizer=gen.normalizer,
    )
    was_training = gen.model.training
    gen.model.eval()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(int(seed))
        with torch.no_grad():
            try:
                frames = gen.model.generate(request)  # (n, n_frames, F), normalised
            except (TypeError, ValueError) as exc:  # a family reading an option as a number
                unread = [
                    f"{k}={v}"
                    for k, v in (options or {}).items()
                    if isinstance(v, str) and repr(v) in str(exc)
                ]
                if not unread:
                    raise
                raise ParameterError(
                    f"generation option {unread[0]} of model {gen.config.model_name} cannot be read ({exc})"
                ) from None
    gen.model.train(was_training)
    frames = frames.detach().float().cpu().numpy()
    if frames.shape[:2] != (n, n_frames):
        raise CadenzaError(
            f"model {gen.config.model_name} generated frames of shape {frames.shape}, expected ({n}, {n_frames}, F)"
        )
    raw = np.asarray(gen.normalizer.invert(frames), dtype=np.float32)
    if not np.all(np.isfinite(raw)):
        raise CadenzaError(
            f"model {gen.config.model_name} generated non-finite values from {gen.checkpoint}; "
            "the checkpoint may come from a diverged run: try an earlier one with --checkpoint"
        )
    return raw, sources


def _require_memory(n_bytes: int, what: str = "the frames asked for") -> None:
    """Refuse, before any work, a result whose frames alone, or whose decoding to sound, exceed
    this machine's memory (a model that chains its output piece by piece would otherwise grind
    for hours first, and a mel inversion of an hour's frames be killed at the end)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: let the allocator say
        return
    if n_bytes > total:
        raise ParameterError(
            f"{what}: about {n_bytes / 2**30:,.0f} GiB, more than this machine's "
            f"{total / 2**30:,.0f} GiB of memory; ask for shorter or fewer samples"
        )


def decode_to_audio(rep: Representation, frames: np.ndarray, seconds: float | None = None) -> np.ndarray:
    """Frames -> samples (audio cut or padded to ``seconds``, a score rendered whole); the rate is
    what ``rep.to_audio`` gives with them."""
    return rep.to_audio(frames, seconds=seconds)[0]


def write_output(
    rep: Representation,
    frames: np.ndarray,
    stem: Path,
    seconds: float | None = None,
    *,
    audio: Any = None,
    reference: np.ndarray | None = None,
) -> list[Path]:
    """One sample's files through its representation: ``stem.wav``, or MIDI with a rendering, and a
    PNG (above real ``reference`` frames when given) where the representation draws one."""
    return rep.write(frames, stem, seconds=seconds, audio=audio, reference=reference)


def generate_from_run(
    source: str | os.PathLike,
    *,
    seconds: float | None = 10.0,
    beats: float | None = None,
    bars: float | None = None,
    n: int = 1,
    seed: int = 0,
    out: str | os.PathLike = "samples",
    checkpoint: str | os.PathLike | None = None,
    seed_file: str | os.PathLike | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
) -> list[Path]:
    """Generate ``n`` samples of ``seconds`` from a run, checkpoint or bundle; return the files written.

    Parameters
    ----------
    source : path
        A run directory (``runs/<name>``), an exported bundle (folder or ``.pt``) or a checkpoint.
    seconds : float
        Length of each sample (None when ``beats`` or ``bars`` give it).
    beats, bars : float, optional
        For scores: the length in beats or bars instead of seconds.
    n : int
        Number of samples.
    seed : int
        Seeds every random choice (seed clips and the model's sampling): the same seed writes
        the same bytes on the same machine.
    out : path
        Folder for ``<name>-seed<seed>-<i>.wav`` and its ``.json`` sidecar.
    checkpoint : path, optional
        A checkpoint to use instead of ``best.pt`` (or ``last.pt``).
    seed_file : path, optional
        An audio file to take seed clips from.
    device : str
        ``cpu`` (the default, reproducible across machines), ``cuda``, ``mps`` or ``auto``.
    options : dict, optional
        Family-specific generation options, recorded in the sidecars.

    Returns
    -------
    list of Path
        The audio (or MIDI) files, in sample order; each has a ``.json`` sidecar beside it.
    """
    if Path(out).exists() and not Path(out).is_dir():
        raise ParameterError(f"--out {out} is a file, not a folder for the samples; give a folder")
    gen = load_generator(source, checkpoint=checkpoint, device=device)
    frames, sources = synthesize(
        gen, n=n, seconds=seconds, beats=beats, bars=bars, seed=seed, seed_file=seed_file, options=options
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    quiet: list[tuple[str, float]] = []  # (sample, silent share) of the mostly silent samples
    reference = reference_clip(gen, frames.shape[1], np.random.default_rng(seed))
    for i in range(n):
        stem = out / f"{gen.name}-seed{seed}-{i}"
        silent = None
        inversion: dict[str, Any] = {}
        try:
            audio = gen.representation.to_audio(frames[i], seconds=seconds, report=inversion)
        except (ImportError, CadenzaError) as exc:  # a score that cannot be rendered is still written
            log.warning("could not turn %s into sound (%s)", stem.name, exc)
            audio = None
        else:
            silent = silent_fraction(*audio)
            if silent > SILENCE_WARNING:
                quiet.append((stem.name, silent))
        files = write_output(gen.representation, frames[i], stem, seconds, audio=audio, reference=reference)
        sidecar = {
            "silent_fraction": silent,
            "inversion": inversion or None,  # an estimating inverse's own consistency (mel, MFCC)
            "files": [p.name for p in files],
            "index": i,
            "n": n,
            "seconds": seconds,
            "beats": beats,
            "bars": bars,
            "seed": seed,
            "seed_source": sources[i],
            "options": dict(options or {}),
            "source": str(source),
            "checkpoint": str(gen.checkpoint),
            "checkpoint_kind": gen.state.get("kind"),
            "step": int(gen.state.get("step", 0)),
            "epoch": int(gen.state.get("epoch", 0)),
            "model": gen.config.model_name,
            "config": gen.config.to_dict(),
            "representation": dict(gen.state["representation"]),
            "sample_rate": int(getattr(gen.representation, "sample_rate", 0) or 0),
            "n_frames": int(frames.shape[1]),
            "device": device,
            "cadenza_version": __version__,
        }
        atomic_write_text(stem.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
        written.append(files[0])
    if quiet:
        log.warning("%s", silence_warning(quiet, n))
    return written


def silence_warning(quiet: list[tuple[str, float]], n: int, shown: int = 3) -> str:
    """One line for the mostly silent samples of a run of ``n`` (a study's 50 clips gave 50 lines).

    Examples
    --------
    >>> silence_warning([("run-seed0-2", 0.62)], 5)
    'run-seed0-2 is 62% silence (10 ms frames below -50 dBFS): the model may have collapsed'
    >>> silence_warning([("a-0", 0.6), ("a-3", 0.9), ("a-4", 0.75), ("a-7", 0.51)], 8)
    '4 of 8 samples are mostly silence (51-90% of 10 ms frames below -50 dBFS: a-0, a-3, a-4 and 1 more): the model may have collapsed'
    """
    if len(quiet) == 1:
        name, share = quiet[0]
        return f"{name} is {100 * share:.0f}% silence (10 ms frames below {SILENCE_THRESHOLD_DB:g} dBFS): the model may have collapsed"
    shares = [share for _, share in quiet]
    names = ", ".join(name for name, _ in quiet[:shown])
    if len(quiet) > shown:
        names += f" and {len(quiet) - shown} more"
    return (
        f"{len(quiet)} of {n} samples are mostly silence ({100 * min(shares):.0f}-{100 * max(shares):.0f}% of 10 ms "
        f"frames below {SILENCE_THRESHOLD_DB:g} dBFS: {names}): the model may have collapsed"
    )
