"""What a study needs before it runs: the budget, the store each model trains on, the music it is measured against.

* :class:`Budget` reads ``10m``, ``2h``, ``1h30m``, ``90s``, ``500steps`` or ``config`` (each
  packaged config's own length).
* :func:`store_needs` finds the representation and parameters a model trains on from what the
  package already says: the ``cadenza prepare`` line in the header of its packaged config
  (``<key>-<preset>.yaml``, else the other preset's), else its :attr:`ModelSpec.prepare`
  hint, else the representation its :attr:`ModelSpec.requires` names, else ``fft`` (the
  default of ``cadenza prepare``). The result is checked against ``requires``.
* :func:`reference_store` is the held-out music a store's models are measured against: the
  store itself when it decodes to the very sound (FFT frames, float samples, piano rolls, whose
  scores are rendered), else float samples at the same rate (mel, MFCC and mu-law models are
  measured against the rendered sound, not against their own lossy encoding of it).
* :func:`plan_study` puts it together: one store per distinct representation, shared by the
  models that need it, and the evaluation groups (models with the same reference).

Every store of a study is prepared from the same source with the same ``max_files`` and seed,
so the same files are drawn and split alike (:func:`check_held_out` verifies it on the
manifests): the held-out files are the same for every model.

Examples
--------
>>> Budget.parse("1h30m").seconds, Budget.parse("500steps").steps, Budget.parse("10m").text
(5400.0, 500, '10 min')
>>> store_key(store_needs("wavenet", "tiny"))
'waveform-8k-encoding=mulaw'
>>> store_key(reference_store(store_needs("wavenet", "tiny")))
'waveform-8k'
>>> store_key(store_needs("fft_base", "tiny")), store_key(store_needs("bilstm_gan", "tiny"))
('fft-16k', 'pianoroll-lowest_pitch=24-n_pitches=84')
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from cadenza.errors import ParameterError

__all__ = [
    "Budget",
    "Plan",
    "check_held_out",
    "plan_study",
    "reference_store",
    "store_key",
    "store_needs",
]

PRESETS = ("tiny", "paper")
#: Training per model when ``--budget`` is left out: the 13 tiny models of a default study then
#: train for 1 h 44 min in all, and the whole study (stores, training, clips, evaluation) runs
#: in about two hours on two CPU cores.
DEFAULT_BUDGET = "8m"

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}


def format_seconds(seconds: float) -> str:
    """``"1h05m"``, ``"4m12s"``, ``"37s"``: a duration as the study's progress lines write it."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long each model trains: ``kind`` is ``"seconds"`` (wall-clock), ``"steps"`` or ``"config"``."""

    kind: str
    value: float = 0.0

    @classmethod
    def parse(cls, text: str | Budget) -> Budget:
        """``10m``, ``2h``, ``1h30m``, ``90s``, ``500steps`` (or ``500 steps``), ``config``."""
        if isinstance(text, Budget):
            return text
        raw = str(text).strip().lower().replace(" ", "")
        if raw == "config":
            return cls("config")
        steps = re.fullmatch(r"(\d+)steps?", raw)
        if steps:
            n = int(steps.group(1))
            if n < 1:
                raise ParameterError(f"--budget {text!r}: at least one step")
            return cls("steps", float(n))
        parts = re.findall(r"(\d+(?:\.\d+)?)([a-z]+)", raw)
        if not parts or "".join(a + b for a, b in parts) != raw or any(u not in _UNITS for _, u in parts):
            raise ParameterError(
                f"--budget {text!r}: expected a time such as 10m, 2h, 1h30m or 90s, a number of steps "
                "such as 500steps, or 'config' (each config's own length)"
            )
        scales = [_UNITS[u] for _, u in parts]
        if any(a <= b for a, b in zip(scales, scales[1:])):
            raise ParameterError(f"--budget {text!r}: each unit once, largest first (such as 1h30m or 2m30s)")
        seconds = sum(float(a) * _UNITS[u] for a, u in parts)
        if not seconds > 0:
            raise ParameterError(f"--budget {text!r}: must be more than nothing")
        return cls("seconds", seconds)

    @property
    def seconds(self) -> float | None:
        return self.value if self.kind == "seconds" else None

    @property
    def steps(self) -> int | None:
        return int(self.value) if self.kind == "steps" else None

    @property
    def text(self) -> str:
        """``"10 min"``, ``"1 h 30 min"``, ``"500 steps"``, ``"each config's own length"``."""
        if self.kind == "steps":
            return f"{int(self.value)} steps"
        if self.kind == "config":
            return "each config's own length"
        s = int(round(self.value))
        h, rest = divmod(s, 3600)
        m, sec = divmod(rest, 60)
        words = [f"{h} h"] * bool(h) + [f"{m} min"] * bool(m) + [f"{sec} s"] * bool(sec)
        return " ".join(words) or "0 s"

    @property
    def each(self) -> str:
        """``"10 min of training each"``, ``"each config's own length of training"``: the budget in a sentence."""
        return (
            "each config's own length of training"
            if self.kind == "config"
            else f"{self.text} of training each"
        )

    @property
    def spec(self) -> str:
        """The budget as ``--budget`` takes it back (``"600s"``, ``"500steps"``, ``"config"``)."""
        if self.kind == "steps":
            return f"{int(self.value)}steps"
        if self.kind == "config":
            return "config"
        return f"{self.value:g}s"


# ----------------------------------------------------------------------------- stores
def _packaged_config_text(name: str) -> str | None:
    path = resources.files("cadenza").joinpath("configs", f"{name}.yaml")
    return path.read_text() if path.is_file() else None


def _prepare_line(name: str) -> list[str] | None:
    """The options of the ``cadenza prepare`` command in a packaged config's header comment."""
    text = _packaged_config_text(name)
    if text is None:
        return None
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("#").strip()
        if body.startswith("cadenza prepare "):
            tokens = shlex.split(body)
            return tokens[4:]  # cadenza prepare SOURCE OUT ...
    return None


def _parse_prepare_options(tokens: Sequence[str]) -> tuple[str | None, dict[str, Any]]:
    """``(representation or None, parameters)`` of ``cadenza prepare`` options (others are ignored)."""
    import yaml

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--representation", default=None)
    parser.add_argument("--sample-rate", type=int, default=None)
    parser.add_argument("--param", action="append", default=[])
    args, _ = parser.parse_known_args(list(tokens))
    params: dict[str, Any] = {}
    for pair in args.param:
        key, sep, value = pair.partition("=")
        if sep and key:
            params[key.strip()] = yaml.safe_load(value)
    if args.sample_rate is not None:
        params["sample_rate"] = args.sample_rate
    return args.representation, params


def store_needs(key: str, preset: str = "tiny") -> dict[str, Any]:
    """The representation (``rep.to_dict()``, every parameter) model ``key`` trains on at ``preset``.

    Read from the ``cadenza prepare`` line of the header of ``<key>-<preset>.yaml`` (else of the
    other preset's config), else from :attr:`ModelSpec.prepare`, else from the representation
    :attr:`ModelSpec.requires` names, else ``fft``; then checked against ``requires``.
    """
    from cadenza.models import get_model_spec
    from cadenza.representations import make_representation

    if preset not in PRESETS:
        raise ParameterError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    spec = get_model_spec(key)
    name: str | None = None
    params: dict[str, Any] = {}
    for config in (f"{key}-{preset}", *(f"{key}-{p}" for p in PRESETS if p != preset)):
        tokens = _prepare_line(config)
        if tokens is not None:
            name, params = _parse_prepare_options(tokens)
            break
    else:
        if spec.prepare:
            name, params = _parse_prepare_options(shlex.split(spec.prepare))
    if name is None:
        name = str(spec.requires["name"][0]) if spec.requires.get("name") else "fft"
    try:
        rep = make_representation(name, **params).to_dict()
    except (ParameterError, TypeError) as exc:
        raise ParameterError(
            f"model {key}: cannot make the store it needs ({name}, {params}): {exc}"
        ) from None
    for field, accepted in spec.requires.items():
        if rep.get(field) not in accepted:
            raise ParameterError(
                f"model {key}: its configs ask for a {name} store with {field}={rep.get(field)!r}, but the "
                f"model trains on {field} in {list(accepted)}"
            )
    return rep


def reference_store(rep: Mapping[str, Any]) -> dict[str, Any]:
    """The store whose held-out split a model trained on ``rep`` is measured against.

    The store itself when it decodes to the sound exactly (an exact inverse in floating point:
    FFT frames, float samples) or is a score (piano rolls: symbolic measures and the rendered
    sound); otherwise float samples at the same rate.
    """
    import numpy as np

    from cadenza.representations import make_representation, representation_from_dict

    r = representation_from_dict(dict(rep))
    if r.input_kind == "score":
        return dict(rep)
    if r.is_exact and np.dtype(r.dtype).kind == "f":
        return dict(rep)
    return make_representation("waveform", sample_rate=int(r.sample_rate)).to_dict()  # type: ignore[attr-defined]


def _rate(sr: int) -> str:
    return f"{sr / 1000:g}k"


def store_key(rep: Mapping[str, Any]) -> str:
    """A folder name for a store: the representation, its rate, and the parameters that differ from its defaults."""
    from cadenza.representations import make_representation

    name = str(rep["name"])
    default = make_representation(name).to_dict()
    parts = [name]
    if "sample_rate" in rep:
        parts.append(_rate(int(rep["sample_rate"])))
    for k, v in rep.items():
        if k in ("name", "sample_rate") or default.get(k) == v:
            continue
        parts.append(f"{k}={v}")
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(parts))


def prepare_arguments(rep: Mapping[str, Any]) -> dict[str, Any]:
    """``prepare_corpus`` keyword arguments that make a store of ``rep``."""
    params = {k: v for k, v in rep.items() if k != "name"}
    sample_rate = params.pop("sample_rate", None)
    return {"representation": str(rep["name"]), "sample_rate": sample_rate, "rep_params": params}


def describe_store(rep: Mapping[str, Any]) -> str:
    """``"waveform at 8 kHz (encoding=mulaw)"``: a store's representation and the parameters that differ from its defaults."""
    from cadenza.representations import make_representation

    try:
        default = make_representation(str(rep["name"])).to_dict()
    except (ParameterError, KeyError):
        default = {}
    params = ", ".join(
        f"{k}={v}" for k, v in rep.items() if k not in ("name", "sample_rate") and default.get(k) != v
    )
    rate = f" at {int(rep['sample_rate']) / 1000:g} kHz" if "sample_rate" in rep else ""
    return f"{rep['name']}{rate}" + (f" ({params})" if params else "")


@dataclasses.dataclass
class Plan:
    """Which store each model trains on and which store it is measured against.

    ``stores`` maps a store key to its representation dict (training stores and reference-only
    stores alike); ``train_store`` and ``reference`` map a model to store keys; ``errors`` holds
    the models that cannot be planned, with the reason (they fail; the others go on).
    """

    models: list[str]
    preset: str
    stores: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    train_store: dict[str, str] = dataclasses.field(default_factory=dict)
    reference: dict[str, str] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def users(self, store: str) -> list[str]:
        """Models that train on ``store`` or are measured against it."""
        return [m for m in self.models if store in (self.train_store.get(m), self.reference.get(m))]

    def groups(self) -> dict[str, list[str]]:
        """Reference store -> the models measured against it, in study order."""
        out: dict[str, list[str]] = {}
        for m in self.models:
            if m in self.reference:
                out.setdefault(self.reference[m], []).append(m)
        return out


def plan_study(models: Iterable[str], preset: str = "tiny") -> Plan:
    """The stores and evaluation groups of a study of ``models`` at ``preset``."""
    plan = Plan(models=list(models), preset=preset)
    for key in plan.models:
        try:
            rep = store_needs(key, preset)
            ref = reference_store(rep)
        except ParameterError as exc:
            plan.errors[key] = str(exc)
            continue
        for r in (rep, ref):
            plan.stores.setdefault(store_key(r), r)
        plan.train_store[key] = store_key(rep)
        plan.reference[key] = store_key(ref)
    return plan


def split_of(store: str | Path) -> dict[str, str]:
    """``{file id: split}`` of every file a store drew (prepared or skipped), from its manifest."""
    from cadenza.data.store import read_manifest

    return {r["id"]: r.get("split", "") for r in read_manifest(Path(store) / "manifest.jsonl") if "id" in r}


def check_held_out(stores: Mapping[str, str | Path]) -> tuple[bool, list[str]]:
    """Whether every store drew the same files and split them alike; the differences in words.

    Stores of one source, ``max_files`` and seed agree by construction; they differ only where
    the source holds other files for other kinds of representation (a folder of both recordings
    and scores: audio stores read the recordings, piano rolls the scores).
    """
    splits = {key: split_of(path) for key, path in stores.items()}
    if len(splits) < 2:
        return True, []
    (first, base), *rest = splits.items()
    notes = []
    for key, other in rest:
        only_a = sorted(set(base) - set(other))
        only_b = sorted(set(other) - set(base))
        moved = sorted(i for i in set(base) & set(other) if base[i] != other[i])
        if only_a or only_b:
            notes.append(
                f"{key} drew other files than {first} ({len(only_b)} only in {key}, {len(only_a)} only in {first}, "
                f"e.g. {(only_b or only_a)[0]})"
            )
        if moved:
            notes.append(f"{key} splits {len(moved)} files differently from {first} (e.g. {moved[0]})")
    return not notes, notes


def held_out_files(store: str | Path) -> list[str]:
    """Ids of a store's test files (all that were drawn for the test split, prepared or not)."""
    return sorted(i for i, s in split_of(store).items() if s == "test")


def budget_dict(budget: Budget) -> dict[str, Any]:
    return {"kind": budget.kind, "value": budget.value}


def budget_from(value: Any) -> Budget:
    """A :class:`Budget` from ``study.json`` (``{"kind", "value"}``), a ``--budget`` text or a Budget."""
    if isinstance(value, Budget):
        return value
    if isinstance(value, Mapping):
        kind, amount = value.get("kind"), value.get("value", 0.0)
        if kind not in ("seconds", "steps", "config"):
            raise ParameterError(f"kind {kind!r} is not one of seconds, steps, config")
        if kind != "config" and (
            isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 < amount < float("inf")
        ):
            raise ParameterError(f"a {kind} budget of {amount!r}: expected a positive number")
        if kind == "steps" and amount < 1:
            raise ParameterError(f"a budget of {amount!r} steps: at least one step")
        return Budget(str(kind), float(amount) if kind != "config" else 0.0)
    return Budget.parse(str(value))
