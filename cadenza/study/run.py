"""The stages of a study and the loop that runs them, resumably.

Per model, in study order: **prepare** the store it trains on (once per distinct store; see
:mod:`cadenza.study.plan`), **train** it for the budget, **generate** the listening test's clips
(paper 000's protocol: five clips of ten seconds). Then per evaluation group (the models
measured against the same held-out music) **evaluate** them with
:func:`cadenza.evaluation.evaluate.evaluate`, which generates the clips the metrics need; the
piano-roll models also get paper 004's **Table 1** against their training data. Last, the
**report** (:mod:`cadenza.study.report`).

A stage that raises is recorded in ``study.json`` with its error (the traceback goes to
``logs/``), the model's later stages are left out and the other models go on. Ctrl-C stops the
study (training first writes ``last.pt``); the same command again continues.

The budget
----------
``steps``: one call of the trainer with ``train.max_steps``. ``seconds``: one call with
``train.max_seconds``: the trainer stops at the step that spends the budget and keeps the time
of its steps (and of the waits for their batches) in ``last.pt``, so a study killed and run again
goes on with what is left; time after the last checkpoint of a killed run is not counted. Both kinds
lift ``train.max_epochs``, ``train.max_steps`` (for a time budget) and early stopping
(``best.pt``, picked by validation, is what generates) and turn off samples during training, so
the budget alone decides when a model stops. Schedules count epochs, which a budget does not
(an epoch of 24 chorales is 6 steps: the tiny FFT LSTMs' plateau schedule had cut the rate to
1.5e-8 within 600 steps of a 10-minute budget, and the GANs' 0.9 per epoch would leave 2e-14 of
SGD's rate after 10 minutes): an epoch-counted schedule (step, exponential, cosine) follows the
share of the budget spent, spread as over the config's ``max_epochs``
(``schedule.span_epochs``); a plateau schedule is turned off. ``config`` leaves each config's
own length and schedule.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cadenza._fs import is_disk_full
from cadenza.data.prepare import DEFAULT_SPLIT as PREPARE_SPLIT
from cadenza.errors import CadenzaError, ParameterError, SourceError, SourceKindError
from cadenza.study.plan import (
    DEFAULT_BUDGET,
    PRESETS,
    Budget,
    Plan,
    budget_dict,
    budget_from,
    check_held_out,
    describe_store,
    format_seconds,
    held_out_files,
    plan_study,
    prepare_arguments,
)
from cadenza.study.state import StudyError, StudyState, lock_study, now
from cadenza.validation import output_folder

log = logging.getLogger(__name__)

__all__ = ["StudyResult", "StudySettings", "resolve_settings", "run_study"]

#: ``train.max_epochs`` under a steps or time budget: the budget stops training, not the epochs.
NO_EPOCH_LIMIT = 1_000_000

#: Bars of the phrases Table 1 measures (``table1``'s ``bars_per_piece``): the least ``--bars``.
TABLE1_PHRASE_BARS = 4

#: Settings a study folder keeps: another value needs another ``--out``.
FIXED = ("source", "preset", "max_files", "seed", "split")

#: The held-out fractions of a study's stores (train, valid, test), as ``cadenza prepare``'s.
DEFAULT_SPLIT = list(PREPARE_SPLIT)


@dataclasses.dataclass
class StudySettings:
    """What a study does; saved in ``study.json`` so that the same command can leave options out."""

    source: str
    models: list[str]
    budget: Budget = dataclasses.field(default_factory=lambda: Budget.parse(DEFAULT_BUDGET))
    preset: str = "tiny"
    max_files: int | None = None
    seed: int = 0
    split: list[float] = dataclasses.field(default_factory=lambda: list(DEFAULT_SPLIT))
    eval_clips: int = 50
    eval_seconds: float = 10.0
    n_boot: int = 1000
    listen_clips: int = 5
    listen_seconds: float = 10.0
    bars: int = 2000
    overrides: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["budget"] = budget_dict(self.budget)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySettings:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["budget"] = budget_from(d["budget"])
        return cls(**kw)


def default_models() -> list[str]:
    """Every key of :data:`cadenza.models.MODELS`, in its order."""
    from cadenza.models import MODELS

    return list(MODELS)


def resolve_settings(out: str | os.PathLike, **given: Any) -> StudySettings:
    """The settings of the study in ``out``: what is given, else what ``study.json`` holds, else the defaults.

    ``source``, ``preset``, ``max_files`` and ``seed`` fix the data and cannot change in a
    study folder; the models, the budget and the evaluation's sizes can (a stage whose inputs
    changed is done again).
    """
    state = StudyState(out)
    saved = state.settings
    given = {k: v for k, v in given.items() if v is not None}
    if "budget" in given:
        given["budget"] = Budget.parse(given["budget"])
    if "models" in given:
        given["models"] = _check_models(given["models"])
    if "split" in given:
        given["split"] = parse_split(given["split"])
    if saved:
        fixed = {k: saved.get(k) for k in FIXED}
        if fixed["split"] is None:  # a study from before --split: the default
            fixed["split"] = list(DEFAULT_SPLIT)
        if "source" in given and _same_folder(given["source"], fixed["source"]):
            given["source"] = fixed["source"]  # music/ and ./music are one SOURCE
        differ = [k for k in FIXED if k in given and given[k] != fixed[k]]
        if differ:
            listed = ", ".join(f"{k}: {fixed[k]!r} there, {given[k]!r} now" for k in differ)
            raise StudyError(f"{out} holds a study with other settings ({listed}); use another --out")
        _check_saved(saved, given, state.path)
        merged = {**saved, **given}
        if "budget" not in given:
            merged["budget"] = budget_from(saved["budget"])
        return StudySettings.from_dict(merged)
    if "source" not in given:
        raise ParameterError(f"{out} holds no study yet: give the SOURCE of the music to study")
    given.setdefault("models", default_models())
    settings = StudySettings(**given)
    _check_settings(settings)
    return settings


def _same_folder(a: Any, b: Any) -> bool:
    """Whether two SOURCE texts name one existing folder or file (``music/``, ``./music``)."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


#: The type of each setting in ``study.json``, and how a message names it.
_SAVED_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "source": ((str,), "a text"),
    "models": ((list,), "a list of model keys"),
    "preset": ((str,), "a text"),
    "max_files": ((int, type(None)), "a whole number or null"),
    "seed": ((int,), "a whole number"),
    "split": ((list,), "a list of three fractions"),
    "eval_clips": ((int,), "a whole number"),
    "eval_seconds": ((int, float), "a number"),
    "n_boot": ((int,), "a whole number"),
    "listen_clips": ((int,), "a whole number"),
    "listen_seconds": ((int, float), "a number"),
    "bars": ((int,), "a whole number"),
    "overrides": ((list,), "a list of SECTION.KEY=VALUE texts"),
}


def _check_saved(saved: dict[str, Any], given: dict[str, Any], path: Path) -> None:
    """The settings read from ``study.json`` that ``given`` leaves to it are of the types the study
    takes (a hand-edited or damaged file is named, with the way on, instead of failing somewhere
    inside the study)."""
    problems = []
    for name, (types, words) in _SAVED_TYPES.items():
        if name in given:
            continue
        if name not in saved:
            if name in ("source", "models"):
                problems.append(f"settings.{name} is missing")
            continue
        value = saved[name]
        item_type = (int, float) if name == "split" else str
        items_ok = not isinstance(value, list) or all(
            isinstance(v, item_type) and not isinstance(v, bool) for v in value
        )
        if isinstance(value, bool) or not isinstance(value, types) or not items_ok:
            problems.append(f"settings.{name} is {value!r}, not {words}")
        elif name == "models" and not value:
            problems.append("settings.models is empty")
    if "budget" not in given:
        if "budget" not in saved:
            problems.append("settings.budget is missing")
        else:
            try:
                budget_from(saved["budget"])
            except (ParameterError, KeyError, TypeError, ValueError) as exc:
                problems.append(f"settings.budget is {saved['budget']!r} ({exc})")
    if problems:
        raise StudyError(
            f"{path}: {'; '.join(problems)}. The file was edited or damaged: correct it, give the "
            "setting on the command line (SOURCE, --models, --budget ...), or move the file away and "
            "run the study again with its SOURCE (the stores and runs in the folder are reused)"
        )


def _check_models(models: Sequence[str]) -> list[str]:
    from cadenza.models import MODELS

    models = [m.strip() for m in models if m and m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ParameterError(f"unknown model(s) {unknown}; expected some of {list(MODELS)}")
    if not models:
        raise ParameterError("--models names no model")
    return list(dict.fromkeys(models))


def parse_split(value: Any) -> list[float]:
    """``"0.6,0.2,0.2"`` (or three numbers) as the fractions of a study's stores, checked."""
    try:
        parts = [float(x) for x in (value.split(",") if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        parts = []
    if (
        len(parts) != 3
        or min(parts) < 0
        or not math.isclose(sum(parts), 1.0, abs_tol=1e-6)
        or parts[0] <= 0
        or parts[1] + parts[2] <= 0
    ):
        raise ParameterError(
            f"--split {value!r}: expected three fractions of the files, train,valid,test, summing to 1, with "
            "some to train and some held out (e.g. 0.6,0.2,0.2 to hold out more of a small folder)"
        )
    return parts


def _check_settings(s: StudySettings) -> None:
    parse_split(s.split)
    if s.preset not in PRESETS:
        raise ParameterError(f"--preset {s.preset!r}: expected one of {PRESETS}")
    if s.max_files is not None and s.max_files < 3:
        raise ParameterError(
            f"--max-files {s.max_files}: a study needs at least 3 files (train, valid, test)"
        )
    for name in ("eval_clips", "listen_clips", "bars", "n_boot"):
        if getattr(s, name) < 0:
            raise ParameterError(f"--{name.replace('_', '-')} must not be negative")
    for name in ("eval_seconds", "listen_seconds"):
        if not 0 < getattr(s, name) < math.inf:
            raise ParameterError(
                f"--{name.replace('_', '-')} {getattr(s, name)}: expected a positive number of seconds"
            )
    if 0 < s.bars < TABLE1_PHRASE_BARS:
        raise ParameterError(
            f"--bars {s.bars}: Table 1 measures whole phrases of {TABLE1_PHRASE_BARS} bars; give at least "
            f"{TABLE1_PHRASE_BARS}, or 0 for no Table 1"
        )


@dataclasses.dataclass
class StudyResult:
    """What a study wrote and which models failed (model -> ``"stage: error"``)."""

    out: Path
    report: Path
    html: Path
    failed: dict[str, str]
    state: StudyState


#: A config setting named in a message ("data.batch_size", "model.head=mdn").
_SETTING = re.compile(r"\b(?:data|model|optim|schedule|train)\.[a-z_]+")


def _in_study_terms(error: str, model: str | None) -> str:
    """``error`` with the study's way to change a config setting, where it advises one.

    >>> _in_study_terms("fewer than data.batch_size=16; lower data.batch_size", "wavenet")
    'fewer than data.batch_size=16; lower data.batch_size (in a study a setting is changed with --set wavenet:KEY=VALUE)'
    >>> _in_study_terms("the toy model is broken on purpose", "wavenet")
    'the toy model is broken on purpose'
    >>> print(_in_study_terms("s has no held-out files (no test or valid split); prepare it again", None))
    s has no held-out files (no test or valid split) (in a study: one or two files under 100 s are too short to cut into parts to hold out, or the files held out were skipped, see the store's manifest.jsonl; add music, or hold out others with --seed N or more with --split 0.6,0.2,0.2)
    """
    if model and _SETTING.search(error):
        error += f" (in a study a setting is changed with --set {model}:KEY=VALUE)"
    if "has no held-out files" in error:  # the store's advice is cadenza prepare's, not a study's
        error = error.split("; prepare it again")[0] + (
            " (in a study: one or two files under 100 s are too short to cut into parts to hold out, or "
            "the files held out were skipped, see the store's manifest.jsonl; add music, or hold out "
            "others with --seed N or more with --split 0.6,0.2,0.2)"
        )
    return error


# ----------------------------------------------------------------------------- the study
class _Study:
    def __init__(
        self,
        out: Path,
        settings: StudySettings,
        *,
        workers: int,
        device: str,
        say: Callable[[str], None],
    ) -> None:
        self.out = out
        self.s = settings
        self.workers = workers
        self.device = device
        self.say = say
        self.state = StudyState(out)
        self.plan: Plan = plan_study(settings.models, settings.preset)
        self.failed_stores: dict[str, str] = {}
        self.model_overrides = _split_overrides(settings.overrides, settings.models)

    # ------------------------------------------------------------------ helpers
    def store_path(self, key: str) -> Path:
        return self.out / "data" / key

    def run_dir(self, model: str) -> Path:
        return self.out / "runs" / model

    def _prefix(self, model: str) -> str:
        i = self.s.models.index(model) + 1
        return f"[{i}/{len(self.s.models)} {model}]"

    def _peek(self, model: str, stage: str) -> dict[str, Any]:
        """A stage's record as it stands, without making one."""
        return ((self.state.data["models"].get(model) or {}).get("stages") or {}).get(stage) or {}

    def failed(self, model: str) -> str | None:
        """``"stage: error"`` of the model's first failed stage, or None."""
        if model in self.plan.errors:
            return f"plan: {self.plan.errors[model]}"
        rec = self.state.data["models"].get(model, {})
        for stage, r in (rec.get("stages") or {}).items():
            if r.get("status") == "failed":
                return f"{stage}: {r.get('error', 'failed')}"
        return None

    def _attempt(self, model: str | None, record: dict[str, Any], what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``; an exception is recorded in ``record`` (and ``logs/``) instead of raised."""
        try:
            return fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a study outlives any one model; the error is kept
            if is_disk_full(exc):  # not the model's failure, and every stage after it would fail too
                raise
            if _unreadable_source(exc):  # nothing any model could use: said once, not once a model
                raise StudyError(f"{exc}; the study stops: no model can be prepared from it") from exc
            error = str(exc) if isinstance(exc, CadenzaError) else f"{type(exc).__name__}: {exc}"
            if not str(exc):
                error = type(exc).__name__
            error = _in_study_terms(error, model)
            logs = self.out / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            name = f"{model or 'study'}-{what}".replace("/", "_")
            log_path = logs / f"{name}.log"
            log_path.write_text(
                f"{now()}\n{traceback.format_exc()}", encoding="utf-8", errors="backslashreplace"
            )
            self.state.set(
                record, status="failed", error=error[:2000], log=str(log_path.relative_to(self.out))
            )
            where = self._prefix(model) if model else "[study]"
            self.say(f"{where} {what} failed: {error.splitlines()[0][:300]} (traceback: {log_path})")
            if model:
                self.say(f"{where} the other models go on")
            return None

    def training_left(self) -> float | None:
        """Seconds of training the study still has ahead (budget × models remaining), or None if unknown."""
        b = self.s.budget
        todo = [m for m in self.s.models if not self.failed(m)]
        if b.kind == "seconds":
            left = 0.0
            for m in todo:
                rec = self._peek(m, "train")
                if not StudyState.is_done(rec, b.spec):
                    left += max(0.0, b.value - float(rec.get("seconds") or 0.0))
            return left
        if b.kind == "steps":
            rates = [
                float(r["seconds_per_step"])
                for m in self.s.models
                if (r := self._peek(m, "train")).get("seconds_per_step")
            ]
            if not rates:
                return None
            mean = sum(rates) / len(rates)
            left = 0.0
            for m in todo:
                rec = self._peek(m, "train")
                if not StudyState.is_done(rec, b.spec):
                    steps_left = max(0.0, b.value - float(rec.get("steps") or 0))
                    left += steps_left * float(rec.get("seconds_per_step") or mean)
            return left
        return None

    def _left_text(self) -> str:
        left = self.training_left()
        return "" if left is None else f"; about {format_seconds(left)} of training left in the study"

    # ------------------------------------------------------------------ the loop
    def run(self, command: str) -> StudyResult:
        from cadenza import __version__

        s = self.s
        self.state.data["settings"] = s.to_dict()
        self.state.data.setdefault("started", now())
        self.state.data["cadenza_version"] = __version__
        self.state.data["machine"] = _machine(self.device)
        commands = self.state.data.setdefault("commands", [])
        commands.append({"command": command, "date": now()})
        self.state.data["plan"] = {
            "train_store": self.plan.train_store,
            "reference": self.plan.reference,
            "stores": self.plan.stores,
        }
        self.state.save()
        n = len(s.models)
        self.say(
            f"[study] {n} model{'s' * (n != 1)} on {s.source}: {s.budget.each} "
            f"({s.preset} configs) into {self.out}{self._left_text()}"
        )
        for model, error in self.plan.errors.items():
            self.say(f"{self._prefix(model)} cannot be planned: {error}")
        for model in s.models:
            if model in self.plan.errors:
                continue
            self._model(model)
        for group, members in self.plan.groups().items():
            self._evaluate(group, members)
        self._table1()
        return self._report()

    def _model(self, model: str) -> None:
        store = self.plan.train_store[model]
        rec = self.state.stage(model, "prepare")
        path = self._attempt(model, rec, "prepare", lambda: self._store(store, model))
        if path is None:
            return
        if rec.get("status") != "done" or rec.get("store") != store:
            self.state.set(rec, status="done", store=store)
        rec = self.state.stage(model, "train")
        if self._attempt(model, rec, "train", lambda: self._train(model, path)) is None:
            return
        rec = self.state.stage(model, "generate")
        self._attempt(model, rec, "generate", lambda: self._generate(model))

    # ------------------------------------------------------------------ prepare
    def _store(self, key: str, model: str | None = None) -> Path:
        """The store ``key``, prepared now unless a finished one is there."""
        from cadenza.data import prepare_corpus

        if key in self.failed_stores:
            raise StudyError(f"the store {key} could not be prepared: {self.failed_stores[key]}")
        rep = self.plan.stores[key]
        s = self.s
        rec = self.state.store(key)
        want = {"rep": rep, "source": s.source, "max_files": s.max_files, "seed": s.seed}
        if s.split != DEFAULT_SPLIT:  # (so that the stores of a study from before --split are kept)
            want["split"] = s.split
        path = self.store_path(key)
        if StudyState.is_done(rec, want) and (path / "meta.yaml").is_file() and _holds_out(path):
            return path  # (one that held nothing out is prepared again: music may have been added)
        users = ", ".join(self.plan.users(key))
        where = self._prefix(model) if model else "[study]"
        self.say(f"{where} prepare: {describe_store(rep)} from {s.source} into {path} (for {users})")
        self.state.set(rec, status="running", rep=rep)
        try:
            summary = prepare_corpus(
                s.source,
                path,
                **prepare_arguments(rep),
                max_files=s.max_files,
                seed=s.seed,
                split=tuple(s.split),
                workers=self.workers,
            )
        except Exception as exc:
            self.failed_stores[key] = f"{type(exc).__name__}: {exc}"
            self.state.set(rec, status="failed", error=self.failed_stores[key])
            raise
        print(summary, flush=True)
        self.state.set(
            rec,
            status="done",
            key=want,
            summary=str(summary),
            n_files=summary.n_files,
            n_ok=summary.n_ok,
            parts=summary.parts,
            hours=summary.hours,
            test_files=held_out_files(path),
        )
        done = {
            k: self.store_path(k) for k, r in self.state.data["stores"].items() if r.get("status") == "done"
        }
        same, notes = check_held_out(done)
        if not same:
            for note in notes:
                self.say(f"[study] warning: the held-out files differ between stores: {note}")
        if not _holds_out(path):  # its models would train, then fail their evaluation
            error = _nothing_held_out(path)
            self.failed_stores[key] = str(error)
            raise error
        return path

    # ------------------------------------------------------------------ train
    def _config(self, model: str, store: Path) -> tuple[Any, list[str]]:
        """The packaged ``<model>-<preset>`` config (else the family's preset) and the study's overrides."""
        from cadenza.data import FeatureStore
        from cadenza.training.optim import EPOCH_SCHEDULES

        mine = self.model_overrides.get(model, [])
        config, cfg = _model_config(model, self.s.preset, mine)  # cfg: as the user's --set leaves it
        overrides: list[str] = []
        if self.s.budget.kind != "config":
            # The configs' own lengths give way to the budget: wavenet-tiny's max_steps=400 had
            # stopped it after 36 s of a 60 s budget, seq2seq-tiny's after 4 s.
            overrides += [
                f"train.max_epochs={NO_EPOCH_LIMIT}",
                "train.max_steps=0",
                "schedule.early_stopping=0",
                "train.sample_every=0",
            ]
            # Schedules count epochs, which a budget does not: on the 24 chorales (6 steps an
            # epoch) the tiny FFT LSTMs' plateau schedule had cut the lr to 1.5e-8 by step 600 of
            # a 10-minute budget, and the GANs' 0.9 per epoch would leave 2e-14 of their rate. An
            # epoch-counted schedule is spread over the budget as over the config's max_epochs;
            # a plateau schedule (validations, not time) is turned off.
            if cfg.schedule.name in EPOCH_SCHEDULES:
                overrides.append(f"schedule.span_epochs={cfg.train.max_epochs}")
            elif cfg.schedule.name != "none":
                overrides.append("schedule.name=none")
        if cfg.data.label_key and not FeatureStore(store).label_values(cfg.data.label_key):
            overrides.append("data.label_key=null")  # the source has no such label: unconditioned
        overrides += mine  # last: what the user sets explicitly (a span, a plateau) stands
        return config, overrides

    def _train(self, model: str, store: Path) -> dict[str, Any]:
        from cadenza.training import train

        b = self.s.budget
        rec = self.state.stage(model, "train")
        mine = self.model_overrides.get(model, [])
        # The budget alone keys a run without --set changes (as studies before the changes were
        # keyed); other changes than the ones it was trained with start the run again.
        key: Any = {"budget": b.spec, "overrides": mine} if mine else b.spec
        if StudyState.is_done(rec, key):
            return rec
        pre = self._prefix(model)
        run_dir = self.run_dir(model)
        config, overrides = self._config(model, store)
        restart = bool(rec) and list(rec.get("overrides") or []) != mine
        if restart:
            self.say(f"{pre} train: its --set changes differ from the run's: training it again from step 0")
            rec.clear()  # what the old run recorded; the record itself stays in the state
        self.state.set(
            rec, status="running", budget=b.text, run=str(run_dir.relative_to(self.out)), overrides=mine
        )
        self.say(f"{pre} train: {b.text}{self._used_text(rec)}{self._left_text()}")

        def call(extra: list[str]) -> tuple[Any, float]:
            nonlocal restart
            t0 = time.monotonic()
            result = train(
                config,
                data=store,
                run=run_dir,
                overrides=[*overrides, *extra],
                device=self.device,
                restart=restart,
            )
            restart = False  # a second call (a resumed budget) goes on from the first
            return result, time.monotonic() - t0

        if b.kind in ("config", "steps"):
            extra = [f"train.max_steps={int(b.value)}"] if b.kind == "steps" else []
            before = int(rec.get("steps") or 0)
            result, dt = call(extra)
            seconds = float(rec.get("seconds") or 0.0) + dt
            done = result.step - before
            rate = dt / done if done > 0 else rec.get("seconds_per_step")
            self._record_train(rec, result, seconds, rate)
        else:
            self._train_for_seconds(model, rec, call)
        if rec.get("stopped") == "interrupted":
            raise KeyboardInterrupt
        self.state.set(rec, status="done", key=key)
        self.say(
            f"{pre} trained {rec.get('steps')} steps in {format_seconds(float(rec.get('seconds') or 0))}"
            f" ({rec.get('stopped')}){self._left_text()}"
        )
        return rec

    def _trained(self, model: str) -> Any:
        """What identifies the model a later stage measures: its steps, and its --set changes if any."""
        rec = self.state.stage(model, "train")
        mine = list(rec.get("overrides") or [])
        return [rec.get("steps"), mine] if mine else rec.get("steps")

    def _used_text(self, rec: dict[str, Any]) -> str:
        if not rec.get("steps"):
            return ""
        return f"; {rec['steps']} steps in {format_seconds(float(rec.get('seconds') or 0))} so far"

    def _record_train(
        self, rec: dict[str, Any], result: Any, seconds: float, rate: Any, **extra: Any
    ) -> None:
        self.state.set(
            rec,
            steps=int(result.step),
            epoch=int(result.epoch),
            seconds=round(seconds, 3),
            seconds_per_step=None if rate is None else round(float(rate), 6),
            stopped=_stopped(result.stopped, self.s.budget),
            best_value=result.best_value,
            best_step=result.best_step,
            **extra,
        )

    def _train_for_seconds(self, model: str, rec: dict[str, Any], call: Callable) -> None:
        """One call of the trainer with ``train.max_seconds``: the trainer stops at the step that
        spends the budget, counting the training time of every earlier call (saved in ``last.pt``)."""
        budget = float(self.s.budget.value)
        result, _ = call([f"train.max_seconds={budget:g}"])
        rate = result.seconds / result.step if result.step else None
        self._record_train(rec, result, result.seconds, rate)

    # ------------------------------------------------------------------ generate
    def _generate(self, model: str) -> list[str]:
        from cadenza.generation import generate_from_run

        s = self.s
        rec = self.state.stage(model, "generate")
        want = {
            "steps": self._trained(model),
            "n": s.listen_clips,
            "seconds": s.listen_seconds,
            "seed": s.seed,
        }
        if StudyState.is_done(rec, want) or s.listen_clips == 0:
            return list(rec.get("files") or [])
        folder = self.out / "listen" / model
        clips = f"{s.listen_clips} listening clip{'s' * (s.listen_clips != 1)}"
        self.say(f"{self._prefix(model)} generate: {clips} of {s.listen_seconds:g} s")
        self.state.set(rec, status="running")
        if folder.exists():
            shutil.rmtree(folder)  # clips of an earlier budget
        paths = generate_from_run(
            self.run_dir(model),
            seconds=s.listen_seconds,
            n=s.listen_clips,
            seed=s.seed,
            out=folder,
            device=self.device,
        )
        files = [str(Path(p).relative_to(self.out)) for p in paths]
        self.state.set(rec, status="done", key=want, files=files)
        return files

    # ------------------------------------------------------------------ evaluate
    def _ready(self, model: str) -> bool:
        """Trained (and its listening clips made, when asked for): ready to be measured."""
        if model in self.plan.errors:
            return False
        stages = self.state.model(model)["stages"]
        if any((stages.get(s) or {}).get("status") != "done" for s in ("prepare", "train")):
            return False
        return (stages.get("generate") or {}).get("status") != "failed"

    def _evaluate(self, group: str, members: list[str]) -> None:
        from cadenza.evaluation.evaluate import evaluate, format_summary

        s = self.s
        ready = [m for m in members if self._ready(m)]
        rec = self.state.group(group)
        if not ready or s.eval_clips == 0:
            return
        want = {
            "members": {m: self._trained(m) for m in ready},
            "clips": s.eval_clips,
            "seconds": s.eval_seconds,
            "n_boot": s.n_boot,
            "seed": s.seed,
        }
        if StudyState.is_done(rec, want):
            return
        i = list(self.plan.groups()).index(group) + 1
        where = f"[evaluate {i}/{len(self.plan.groups())}]"
        folder = self.out / "evaluation" / group

        def measure() -> Any:
            ref = self._store(group)
            self.say(
                f"{where} {', '.join(ready)} against the held-out files of {group}: "
                f"{s.eval_clips} clips of {s.eval_seconds:g} s each"
            )
            self.state.set(rec, status="running", members=ready)
            if folder.exists():
                shutil.rmtree(folder)  # clips and players of an earlier evaluation
            ev = evaluate(
                [self.run_dir(m) for m in ready],
                reference=ref,
                out=folder,
                n_clips=s.eval_clips,
                seconds=s.eval_seconds,
                seed=s.seed,
                n_boot=s.n_boot,
                device=self.device,
                names=ready,
            )
            print(format_summary(ev), end="", flush=True)
            return ev

        ev = self._attempt(None, rec, f"evaluate-{group}", measure)
        for m in ready:
            stage = self.state.stage(m, "evaluate")
            if ev is None:
                self.state.set(
                    stage, status="failed", error=f"the evaluation of {group} failed: {rec.get('error')}"
                )
                continue
            cs = next((c for c in ev.sets if c.name == m), None)
            if cs is None or (cs.note or "").startswith("could not be evaluated"):
                note = cs.note if cs is not None else "missing from the evaluation"
                self.state.set(stage, status="failed", error=note)
            else:
                self.state.set(stage, status="done", group=group, key=want["members"][m])
        if ev is not None:
            self.state.set(
                rec, status="done", key=want, members=ready, report=f"evaluation/{group}/report.html"
            )

    # ------------------------------------------------------------------ Table 1
    def _table1(self) -> None:
        from cadenza.representations import representation_from_dict

        s = self.s
        if s.bars == 0:
            return
        by_store: dict[str, list[str]] = {}
        for m in s.models:
            store = self.plan.train_store.get(m)
            if store is None or not self._ready(m):
                continue
            if representation_from_dict(self.plan.stores[store]).input_kind == "score":
                by_store.setdefault(store, []).append(m)
        tables = self.state.data.setdefault("table1", {})
        for store, members in by_store.items():
            rec = tables.setdefault(store, {})
            want = {
                "members": {m: self._trained(m) for m in members},
                "bars": s.bars,
            }
            if StudyState.is_done(rec, want):
                continue
            folder = self.out / "table1" / store

            def measure(members: list[str] = members, store: str = store, folder: Path = folder) -> str:
                from cadenza.evaluation.table import format_table, table1, write_table

                self.say(
                    f"[table 1] {', '.join(members)}: EB, UPC and QN of {s.bars} generated bars "
                    f"beside the training data of {store}"
                )
                rows = table1(
                    [self.run_dir(m) for m in members],
                    data=self.store_path(store),
                    n_bars=s.bars,
                    seed=s.seed,
                    device=self.device,
                )
                write_table(rows, folder, columns="all", with_paper=True)
                text = format_table(rows, with_paper=True)
                print(text, end="", flush=True)
                return text

            text = self._attempt(None, rec, f"table1-{store}", measure)
            for m in members:
                stage = self.state.stage(m, "table1")
                if text is None:
                    self.state.set(stage, status="failed", error=f"Table 1 failed: {rec.get('error')}")
                else:
                    self.state.set(stage, status="done", key=want["members"][m])
            if text is not None:
                self.state.set(rec, status="done", key=want, folder=str(folder.relative_to(self.out)))

    # ------------------------------------------------------------------ report
    def _report(self) -> StudyResult:
        from cadenza.study.report import write_report

        stores = {
            k: self.store_path(k) for k, r in self.state.data["stores"].items() if r.get("status") == "done"
        }
        same, notes = check_held_out(stores)
        self.state.data["held_out"] = {"same": same, "notes": notes}
        failed = {m: f for m in self.s.models if (f := self.failed(m))}
        self.state.data["failed"] = failed
        self.state.data["finished"] = now()
        self.state.save()
        md, html = write_report(self.out, self.state, self.plan)
        self.say(f"[study] report: {html} (and {md.name})")
        listen = listen_command(self.out, self.state, self.plan)
        if listen:
            self.say(f"[study] the listening test of the clips: {listen}")
        if failed:
            self.say(f"[study] {len(failed)} model{'s' * (len(failed) != 1)} failed: {', '.join(failed)}")
        return StudyResult(self.out, md, html, failed, self.state)


def listen_command(out: Path, state: StudyState, plan: Plan) -> str | None:
    """``cadenza listen OUT/listen --reference STORE --port 8000`` once clips exist, else None."""
    from cadenza.representations import representation_from_dict

    folder = out / "listen"
    if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
        return None
    done = [k for k, r in state.data["stores"].items() if r.get("status") == "done"]
    refs = [k for k in dict.fromkeys(plan.reference.values()) if k in done]
    audio = [k for k in refs if representation_from_dict(plan.stores[k]).input_kind == "audio"]
    ref = (audio or refs or [None])[0]
    cmd = f"cadenza listen {folder}"
    if ref is not None:
        cmd += f" --reference {out / 'data' / ref}"
    return cmd + " --port 8000"


def _split_overrides(overrides: Sequence[str], models: Sequence[str]) -> dict[str, list[str]]:
    """``SECTION.KEY=VALUE`` for every model, ``MODEL:SECTION.KEY=VALUE`` for one."""
    out: dict[str, list[str]] = {m: [] for m in models}
    for text in overrides:
        head, sep, rest = text.partition(":")
        if sep and "=" not in head and "." not in head:
            if head not in out:
                raise ParameterError(
                    f"override {text!r}: {head!r} is not a model of this study ({', '.join(models)})"
                )
            out[head].append(rest)
        else:
            for m in models:
                out[m].append(text)
    return out


def _model_config(model: str, preset: str, overrides: Sequence[str]) -> tuple[Any, Any]:
    """``(config, cfg)``: what the trainer is given for ``model`` (a packaged config's name, else the
    family's preset) and that config with the study's ``--set`` changes for the model applied."""
    from cadenza.training.config import apply_overrides, build_config, load_config, packaged_configs

    name = f"{model}-{preset}"
    if name in packaged_configs():
        return name, load_config(name, list(overrides))
    # a family without packaged configs (registered by a plug-in): its preset as it is
    raw = {"model": {"name": model, "preset": preset}}
    config = build_config(raw, source=f"{model} {preset}")
    return config, build_config(apply_overrides(raw, list(overrides)), source=f"{model} {preset} with --set")


def _check_overrides(s: StudySettings) -> None:
    """Every ``--set`` change applied to the config of each model it is for, before any work: a
    typo found only when the last model starts training would cost the hours before it."""
    from cadenza.models import MODELS

    per_model = _split_overrides(s.overrides, s.models)  # a bad MODEL: prefix fails here too
    problems: dict[str, list[str]] = {}
    for model in s.models:
        if model not in MODELS or not per_model[model]:
            continue  # an unknown model fails at its plan, with its reason
        try:
            _model_config(model, s.preset, per_model[model])
        except ParameterError as exc:
            problems.setdefault(str(exc), []).append(model)
    if problems:
        listed = "; ".join(f"{error} (for {', '.join(models)})" for error, models in problems.items())
        raise ParameterError(
            f"--set: {listed}. Nothing was done: correct the --set (MODEL:SECTION.KEY=VALUE changes one "
            "model only; in a study continued, the --set given replace the earlier ones, and --set '' "
            "drops them)"
        )


def _checkpoint_step(run_dir: Path) -> int:
    """The step saved in ``run_dir/checkpoints/last.pt`` (0 when there is none), read without loading the weights."""
    import torch

    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state.get("step", 0))
    except Exception:  # unreadable: the trainer says so when it resumes
        return 0


def _stopped(stopped: str, budget: Budget) -> str:
    """Why training stopped, in the study's words: ``budget`` when the study's budget stopped it."""
    if budget.kind == "config":
        return "finished" if stopped == "already finished" else stopped
    return "budget" if stopped in ("max_steps", "max_seconds", "already finished") else stopped


def _machine(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "device": device,
    }
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _print(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


def run_study(
    out: str | os.PathLike = "study",
    *,
    source: str | None = None,
    models: Sequence[str] | None = None,
    budget: str | Budget | None = None,
    preset: str | None = None,
    max_files: int | None = None,
    seed: int | None = None,
    split: str | Sequence[float] | None = None,
    eval_clips: int | None = None,
    eval_seconds: float | None = None,
    n_boot: int | None = None,
    listen_clips: int | None = None,
    listen_seconds: float | None = None,
    bars: int | None = None,
    overrides: Sequence[str] | None = None,
    workers: int = 1,
    device: str = "auto",
    command: str | None = None,
    preface: Sequence[str] | None = None,
    say: Callable[[str], None] = _print,
) -> StudyResult:
    """Run (or continue) the study in ``out`` and write its report; see :mod:`cadenza.study`.

    Options left as None take what ``out/study.json`` holds, else the defaults: every model,
    a budget of ten minutes of training per model, the tiny configs, every file of the source.
    ``command`` is the command line the report shows (default: the equivalent ``cadenza
    study`` command); ``preface``, Markdown lines the report shows under its summary (kept for
    later reports of the same study), lets a caller such as the demo add its own section.

    Returns
    -------
    StudyResult
        Its ``failed`` maps each model that failed to the stage and the error.
    """
    out = Path(out)
    settings = resolve_settings(
        out,
        source=source,
        models=list(models) if models is not None else None,
        budget=budget,
        preset=preset,
        max_files=max_files,
        seed=seed,
        split=split,
        eval_clips=eval_clips,
        eval_seconds=eval_seconds,
        n_boot=n_boot,
        listen_clips=listen_clips,
        listen_seconds=listen_seconds,
        bars=bars,
        overrides=list(overrides) if overrides is not None else None,
    )
    _check_settings(settings)
    _check_overrides(settings)  # a bad --set fails before any work
    if workers < 1:
        raise ParameterError(f"--workers {workers}: at least one process prepares the stores")
    from cadenza.training.distributed import resolve_device

    resolve_device(device)  # an unknown or absent device, before any store is prepared
    _check_out(out, settings.source)
    if command is None:
        command = equivalent_command(out, settings)
    lock = lock_study(out)  # the folder is this process's until the study returns
    try:
        study = _Study(out, settings, workers=workers, device=device, say=say)
        if preface is not None:
            study.state.data["preface"] = list(preface)
        return study.run(command)
    finally:
        if lock is not None:
            lock.close()


def _holds_out(store: Path) -> bool:
    """Whether a store prepared any held-out (test or valid) file to measure its models against."""
    from cadenza.data.store import FeatureStore

    st = FeatureStore(store)
    return bool(st.ids("test") or st.ids("valid"))


def _nothing_held_out(store: Path) -> CadenzaError:
    """Why a store holds nothing out (one short file, or held-out files skipped), and what to do:
    its models would train for their budget and then fail their evaluation."""
    from cadenza.data.store import read_manifest

    drawn = [r for r in read_manifest(store / "manifest.jsonl") if r.get("split") in ("valid", "test")]
    if drawn:
        shown = ", ".join(str(r.get("id")) for r in drawn[:2])
        why = f"the files drawn to hold out were skipped ({shown}); add music, or draw others with --seed N"
    else:
        why = "one or two files under 100 s are too short to cut into parts; add music"
    return CadenzaError(
        f"nothing held out in {store.name} to measure its models against, so none is trained: {why}"
    )


def _unreadable_source(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the study's source cannot be read at
    all (missing, empty of music, a corpus without its files), not that it lacks one kind."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SourceError):
            return not isinstance(exc, SourceKindError)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _check_out(out: Path, source: str) -> None:
    """Make the study's folder, or say why it cannot be made or written.

    A folder SOURCE must not hold it: the stores prepared after the first model's listening
    clips would read those clips as music (seen: the mel RNN trained on fft_base's clip).
    """
    source_dir = Path(source).expanduser()
    if source_dir.is_dir():
        inner, outer = out.resolve(), source_dir.resolve()
        if inner == outer or outer in inner.parents:
            raise ParameterError(
                f"--out {out} is inside the SOURCE folder {source}: the stores made after the first "
                "model's clips would read those clips as music; give an --out outside it"
            )
    if out.is_dir() and not (out / "study.json").exists():
        # hidden names (the lock, a half-written study.json, a file manager's .DS_Store) do not count
        stray = sorted(p.name for p in out.iterdir() if p.name != "data" and not p.name.startswith("."))
        if stray:
            shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
            raise StudyError(
                f"--out {out} is a folder that holds other things ({shown}) and no study.json: a study "
                "would write its runs, clips and reports among them; give a new or empty folder (one "
                "that holds only another study's data/ folder is fine: its stores are reused)"
            )
    output_folder(out, "the study", error=StudyError)
    if not os.access(out, os.W_OK | os.X_OK):
        raise StudyError(f"--out {out}: the folder cannot be written; give another --out")


def equivalent_command(out: Path, s: StudySettings) -> str:
    """The ``cadenza study`` command line that runs these settings."""
    import shlex

    args = ["cadenza", "study", s.source, "--models", ",".join(s.models), "--budget", s.budget.spec]
    args += ["--preset", s.preset, "--out", str(out)]
    if s.max_files is not None:
        args += ["--max-files", str(s.max_files)]
    if s.split != DEFAULT_SPLIT:
        args += ["--split", ",".join(f"{x:g}" for x in s.split)]
    defaults = StudySettings(source="", models=[])
    for name in ("seed", "eval_clips", "eval_seconds", "n_boot", "listen_clips", "listen_seconds", "bars"):
        if getattr(s, name) != getattr(defaults, name):
            args += [f"--{name.replace('_', '-')}", f"{getattr(s, name):g}"]
    return shlex.join([*args, *(a for o in s.overrides for a in ("--set", o))])
