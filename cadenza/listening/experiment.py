"""A listening test on disk: prepared once, then served, resumed and analysed from its folder.

:func:`prepare_experiment` turns a results folder (an evaluation output, or per-model
subfolders of WAV/MIDI) into a test folder, ``<results>/listening/<name>/``:

- ``clips/<token>.wav``: every clip under an opaque random token (16-bit PCM, one sample rate,
  one length, one loudness; see :mod:`cadenza.listening.clips`), the hidden reference's real
  clips and their 3.5 kHz anchors among them;
- ``test.json``: the configuration - mode, clip length, rate, loudness, the balanced design
  (:class:`~cadenza.listening.design.Design`), the screening rule, which token is which
  condition - and its hash, written into every stored row;
- ``ratings.sqlite``: the event log (:class:`~cadenza.listening.store.Store`), made when the
  first listener arrives;
- ``secret.key``: the key that signs listeners' cookies and opens the results page.

The folder is written under a temporary name and renamed when complete, so an interrupted
preparation leaves nothing half-made; running the same command again reuses the test.

Examples
--------
>>> exp = open_experiment("results/", reference="data/bach-fft", mode="acr")  # doctest: +SKIP
>>> exp.design.block(0)[:2]                                                   # doctest: +SKIP
[Trial(tokens=('kQ3...',), repeat_of=None), ...]
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cadenza import __version__
from cadenza.data.store import atomic_write_text
from cadenza.errors import ParameterError
from cadenza.listening import clips as cl
from cadenza.listening.design import ANCHOR, REFERENCE, Design, listener_seed
from cadenza.listening.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "MAX_SECONDS",
    "SCALE",
    "Experiment",
    "experiment_folders",
    "open_experiment",
    "prepare_experiment",
]

#: The longest clip a test plays (seconds).
MAX_SECONDS = 12.0
#: The shortest: a model's clip under it is left out (a listener cannot judge a click as music).
MIN_SECONDS = 1.0
#: ITU-T P.800's absolute category rating scale, best first.
SCALE = {5: "Excellent", 4: "Good", 3: "Fair", 2: "Poor", 1: "Bad"}
QUESTION = {"acr": "How good is this clip as music?", "ab": "Which clip is more musical?"}
#: A listener is screened out above this share of failed reference-anchor comparisons.
MAX_FAIL_SHARE = 0.25
FORMAT = 1
TOKEN_BYTES = 12  # 16 URL-safe characters
DEFAULTS = {"mode": "acr", "seconds": 10.0, "n_clips": 20, "seed": 0}
#: Clips of each condition per listener (ACR), trials of each pair per listener (A/B).
N_PER_CONDITION = {"acr": 5, "ab": 1}


def _say(text: str) -> None:
    log.info(text)


def screening_rule(
    mode: str,
    *,
    max_fail_share: float = MAX_FAIL_SHARE,
    has_reference: bool = True,
    anchor_hz: float = cl.ANCHOR_HZ,
) -> str:
    """The screening rule in the experimenter's words (stored in ``test.json`` before anyone listens)."""
    if not has_reference:
        return "no hidden reference in this test: no listener is screened out"
    share = f"{max_fail_share:.0%}"
    anchor = cl.anchor_name(anchor_hz)
    if mode == "acr":
        return (
            "each listener's ratings of the hidden real clips are compared with their ratings of the "
            f"{anchor} anchors, every real clip with every anchor clip they rated; a listener who rated the "
            f"real clip at or below the anchor in more than {share} of these pairs is screened out"
        )
    return (
        f"a listener who preferred the {anchor} anchor over the real clip in more than "
        f"{share} of their reference-against-anchor trials is screened out"
    )


def listener_rule(mode: str, *, max_fail_share: float = MAX_FAIL_SHARE, has_reference: bool = True) -> str:
    """The same rule in the listener's words, shown before the test starts."""
    if not has_reference:
        return ""
    which = (
        "rates a muffled clip as high as a real one"
        if mode == "acr"
        else "prefers a muffled clip to a real one"
    )
    return (
        "Some clips are real recordings and some are deliberately muffled. If a listener "
        f"{which} in more than {max_fail_share:.0%} of such comparisons, their answers are kept "
        "but set aside in the analysis."
    )


def _canonical(config: dict[str, Any]) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of everything that defines the test (not when it was made)."""
    body = {k: v for k, v in config.items() if k not in ("created", "config_hash")}
    return hashlib.sha256(_canonical(body)).hexdigest()[:16]


class Experiment:
    """A prepared test folder: its configuration, design, clips and ratings.

    Parameters
    ----------
    folder : path
        A folder written by :func:`prepare_experiment`.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        path = self.folder / "test.json"
        try:
            self.config: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ParameterError(f"{path}: not a listening test ({exc})") from exc
        self.config_hash = config_hash(self.config)
        if self.config.get("config_hash") != self.config_hash:
            raise ParameterError(f"{path} was edited after the test was made (its hash does not match)")
        self.design = Design.from_dict(self.config["design"])
        self.mode: str = self.config["mode"]
        self.seconds: float = float(self.config["seconds"])
        self.clips: dict[str, dict[str, Any]] = self.config["clips"]
        self._store: Store | None = None

    def __repr__(self) -> str:
        return (
            f"Experiment({str(self.folder)!r}, mode={self.mode!r}, conditions={list(self.design.conditions)})"
        )

    @property
    def has_reference(self) -> bool:
        return REFERENCE in self.design.conditions and ANCHOR in self.design.conditions

    @property
    def models(self) -> list[str]:
        return [c for c in self.design.conditions if c not in (REFERENCE, ANCHOR)]

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.folder / "ratings.sqlite", config_hash=self.config_hash)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def clip_path(self, token: str) -> Path | None:
        """The WAV of ``token``, or None for a token that is not one of this test's clips."""
        if not isinstance(token, str) or token not in self.clips:
            return None
        return self.folder / "clips" / f"{token}.wav"

    def listener_seed(self, number: int) -> int:
        return listener_seed(self.design.seed, number)

    def secret(self) -> bytes:
        """The key that signs cookies (made on first use, readable by the owner only)."""
        path = self.folder / "secret.key"
        damaged = False
        try:
            key = bytes.fromhex(path.read_text().strip())
            if len(key) == 32:
                return key
            damaged = True  # empty or cut short: a key anyone could guess signs nothing
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            damaged = True
        key = secrets.token_bytes(32)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:  # whole or not at all: a key file cut short by a full disk would be an empty key
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key.hex())
                f.flush()
                os.fsync(f.fileno())
            if damaged:
                log.warning("%s was damaged; a new key signs the cookies (listeners start again)", path)
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # fails where another thread made the key first: theirs holds
                except FileExistsError:
                    return bytes.fromhex(path.read_text().strip())
                except OSError:  # a file system without hard links
                    os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return key

    def results_key(self) -> str:
        """The key in the results page's address (listeners never see it)."""
        return hmac.new(self.secret(), b"results", hashlib.sha256).hexdigest()[:24]

    def page_config(self) -> dict[str, Any]:
        """What the listener's page is told: nothing that names a model or a file."""
        screening = self.config["screening"]
        return {
            "mode": self.mode,
            "seconds": self.seconds,
            "n_trials": self.design.n_trials(),
            "question": QUESTION[self.mode],
            "scale": [[k, v] for k, v in SCALE.items()],
            "rule": listener_rule(
                self.mode, max_fail_share=screening["max_fail_share"], has_reference=self.has_reference
            ),
        }


# ----------------------------------------------------------------------------- preparing
def experiment_folders(source: str | os.PathLike) -> list[Path]:
    """The prepared tests of a results folder, in name order."""
    root = Path(source) / cl.TEST_FOLDER
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "test.json").is_file())


def open_experiment(
    source: str | os.PathLike,
    *,
    name: str | None = None,
    reference: str | os.PathLike | None = None,
    mode: str | None = None,
    seconds: float | None = None,
    n_clips: int | None = None,
    n_per_condition: int | None = None,
    seed: int | None = None,
) -> Experiment:
    """The test ``name`` (default: the mode) of ``source``, prepared on first use.

    An existing test is reused as it is; a setting given here that differs from the one it was
    made with is an error (a running test's design never changes under its listeners).
    """
    folder = Path(source) / cl.TEST_FOLDER / (name or mode or DEFAULTS["mode"])
    asked = {"mode": mode, "seconds": seconds, "n_clips": n_clips, "n_per_condition": n_per_condition}
    asked |= {"seed": seed, "reference": None if reference is None else str(Path(reference))}
    if (folder / "test.json").is_file():
        exp = Experiment(folder)
        made = exp.config["request"]
        differ = [
            f"{k}={made.get(k)!r}, not {v!r}" for k, v in asked.items() if v is not None and made.get(k) != v
        ]
        if differ:
            raise ParameterError(
                f"{folder} holds a test made with {'; '.join(differ)}; run it as it is, or start "
                "another beside it with --test NAME"
            )
        return exp
    return prepare_experiment(source, folder=folder, **{k: v for k, v in asked.items() if v is not None})


def prepare_experiment(
    source: str | os.PathLike,
    *,
    folder: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    mode: str = DEFAULTS["mode"],
    seconds: float = DEFAULTS["seconds"],
    n_clips: int = DEFAULTS["n_clips"],
    n_per_condition: int | None = None,
    seed: int = DEFAULTS["seed"],
) -> Experiment:
    """Prepare a blind listening test of the models in ``source``.

    Parameters
    ----------
    source : path
        An evaluation output or a folder of per-model subfolders of WAV/MIDI (see
        :func:`~cadenza.listening.clips.model_folders`).
    folder : path, optional
        The test folder (default ``<source>/listening/<mode>``); it must not exist yet.
    reference : path, optional
        Held-out real music: a feature store (its test split) or a folder. Default: the
        ``reference`` subfolder of ``source`` when it has one; without any, the test has no
        hidden reference, no anchor and no screening.
    mode : {"acr", "ab"}
    seconds : float
        The clips' length, from :data:`MIN_SECONDS` to :data:`MAX_SECONDS`; shorter when the
        shortest clip is (a model's clip under :data:`MIN_SECONDS` is left out, with its reason).
    n_clips : int
        At most this many clips of each model (a seeded choice), and of the reference.
    n_per_condition : int, optional
        ACR: clips of each model (and of the reference and the anchor) per listener (default 5).
        A/B: trials of each pair of conditions per listener (default 1).
    seed : int

    Returns
    -------
    Experiment
    """
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise ParameterError(f"seconds must be in [{MIN_SECONDS:g}, {MAX_SECONDS:g}], got {seconds}")
    if n_clips < 1:
        raise ParameterError(f"n_clips must be at least 1, got {n_clips}")
    if mode not in N_PER_CONDITION:
        raise ParameterError(f"mode must be one of {tuple(N_PER_CONDITION)}, got {mode!r}")
    if n_per_condition is None:
        n_per_condition = N_PER_CONDITION[mode]
    request = {
        "mode": mode,
        "seconds": float(seconds),
        "n_clips": int(n_clips),
        "n_per_condition": int(n_per_condition),
        "seed": int(seed),
        "reference": None if reference is None else str(Path(reference)),
    }
    Design({"x": ["a"], "y": ["b"]}, mode=mode, n_per_condition=n_per_condition)  # validates both
    source = Path(source)
    folder = Path(folder) if folder is not None else source / cl.TEST_FOLDER / mode
    if folder.exists():
        raise ParameterError(f"{folder} already exists: open it with open_experiment, or choose another name")
    models, found_reference = cl.model_folders(source)
    for name in models:
        if name in (REFERENCE, ANCHOR):
            raise ParameterError(f"{models[name]}: a model folder may not be called {name!r}")
    rng = np.random.default_rng(seed)

    # --- the models' clips, a seeded choice of at most n_clips each
    sets: dict[str, list[tuple[str, np.ndarray, int]]] = {}
    skipped: list[tuple[str, str]] = []
    for name, path in models.items():
        files = cl.clip_files(path)
        if len(files) > n_clips:
            files = [files[i] for i in sorted(rng.choice(len(files), n_clips, replace=False))]
        _say(f"{name}: reading {len(files)} clips from {path}")
        read, bad = cl.read_clips(files, max_seconds=seconds)
        short = [
            (str(p), f"too short to judge ({len(y) / sr:.2f} s; a trial plays at least {MIN_SECONDS:g} s)")
            for p, y, sr in read
            if len(y) < MIN_SECONDS * sr
        ]
        if short:
            log.warning(
                "%s: leaving out %d clips under %g s (%s)", name, len(short), MIN_SECONDS, short[0][0]
            )
            read = [(p, y, sr) for p, y, sr in read if len(y) >= MIN_SECONDS * sr]
            bad = bad + short
        skipped += bad
        if not read:
            raise ParameterError(
                f"{path}: no readable clip ({len(bad)} skipped: {bad[0][1] if bad else '-'}); give it clips "
                f"of at least {MIN_SECONDS:g} s, or move the folder out of {path.parent} to test the other models"
            )
        sets[name] = [(str(p), y, sr) for p, y, sr in read]
    shortest = min((len(y) / sr, origin) for clips in sets.values() for origin, y, sr in clips)
    length = min(float(seconds), shortest[0])
    if length < seconds:
        log.warning(
            "the shortest clip (%s) lasts %.2f s: every clip is cut to that length", shortest[1], length
        )

    # --- the hidden reference and its anchors
    ref_source = reference if reference is not None else found_reference
    if ref_source is not None:
        n_ref = max(len(c) for c in sets.values())
        _say(f"reference: {n_ref} clips of {length:g} s from {ref_source}")
        ref, bad = cl.reference_clips(ref_source, n_clips=n_ref, seconds=length, seed=seed)
        skipped += bad
        if not ref:
            raise ParameterError(
                f"the reference {ref_source} gives no clip of {length:g} s "
                + (f"({len(bad)} skipped: {bad[0][1]})" if bad else "")
            )
        sets[REFERENCE] = ref
    else:
        log.warning("no reference: the test has no hidden real clips, no anchor and no screening")

    # --- one rate, one length, one loudness
    rates = {c: {s for _, _, s in clips} for c, clips in sets.items()}
    every = sorted(set().union(*rates.values()))
    sr = every[0]
    _say(f"cutting every clip to {length:g} s at {sr} Hz and matching loudness")
    if len(every) > 1:  # blinding: no clip may give itself away by its band, so all lose theirs
        narrowest = [c for c, r in rates.items() if sr in r]
        log.warning(
            "every clip is heard at %d Hz, the lowest rate among them (%s): the others, the real "
            "clips too, lose what lies above %g kHz; leave %s out (a folder without it) to hear "
            "the rest at %d Hz or more",
            sr,
            ", ".join(narrowest),
            sr / 2000,
            ", ".join(c for c in narrowest if c != REFERENCE) or "the reference",
            every[1],
        )
    prepared: dict[str, list[np.ndarray]] = {
        c: [cl.fit_length(cl.resample(y, s, sr), sr, seconds=length) for _, y, s in clips]
        for c, clips in sets.items()
    }
    origins = {c: [o for o, _, _ in clips] for c, clips in sets.items()}
    cutoff = cl.anchor_cutoff(sr)
    if REFERENCE in prepared:
        prepared[ANCHOR] = [
            cl.fit_length(cl.lowpass_anchor(y, sr, cutoff=cutoff), sr, seconds=length)
            for y in prepared[REFERENCE]
        ]
        origins[ANCHOR] = [f"{o} low-passed at {cutoff:g} Hz" for o in origins[REFERENCE]]
    flat = [y for ys in prepared.values() for y in ys]
    matched, level = cl.match_loudness(flat, sr)

    # --- tokens, files, configuration
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # a full disk part way: the clips written so far do not stay to hold the room
        (tmp / "clips").mkdir(parents=True)
        from cadenza.audio import write_audio

        clip_table: dict[str, dict[str, Any]] = {}
        conditions: dict[str, list[str]] = {}
        k = 0
        for c in prepared:
            conditions[c] = []
            for origin in origins[c]:
                token = secrets.token_urlsafe(TOKEN_BYTES)
                write_audio(tmp / "clips" / f"{token}.wav", matched[k], sr)
                clip_table[token] = {"condition": c, "source": origin}
                conditions[c].append(token)
                k += 1
        design = Design(conditions, mode=mode, n_per_condition=n_per_condition, seed=seed)
        kinds = {
            c: ("reference" if c == REFERENCE else "anchor" if c == ANCHOR else "model") for c in conditions
        }
        has_reference = REFERENCE in conditions
        config: dict[str, Any] = {
            "format": FORMAT,
            "mode": mode,
            "request": request,
            "source": str(source),
            "reference": None if ref_source is None else str(ref_source),
            "seconds": round(length, 6),
            "sample_rate": int(sr),
            "loudness_lufs": round(level, 3),
            "anchor_hz": cutoff if has_reference else None,
            "conditions": {
                c: {"kind": kinds[c], "source": str(models[c]) if c in models else None} for c in conditions
            },
            "screening": {
                "max_fail_share": MAX_FAIL_SHARE,
                "rule": screening_rule(mode, has_reference=has_reference, anchor_hz=cutoff),
            },
            "design": design.to_dict(),
            "clips": clip_table,
            "skipped": [list(s) for s in skipped],
            "cadenza_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        config["config_hash"] = config_hash(config)
        atomic_write_text(tmp / "test.json", json.dumps(config, indent=1) + "\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Experiment(folder)
