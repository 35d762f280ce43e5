"""Experiment configuration: typed sections, YAML files, ``key=value`` overrides.

An experiment is five sections, each a dataclass whose defaults match the papers::

    model:     name: fft_base   (a key of cadenza.models.MODELS)
               preset: paper    (the family preset the fields below start from)
               ...              (fields of the family's Config, e.g. hidden_size)
    data:      DataConfig       which windows of which feature store, batch size, loaders
    optim:     OptimConfig      optimiser, learning rate, L2, several optimisers' ratio
    schedule:  ScheduleConfig   learning-rate schedule and early stopping
    train:     TrainConfig      epochs, seed, clipping, validation, checkpoints, logging

YAML files name the sections; a section or field left out keeps its default. Overrides
(``model.hidden_size=512 optim.lr=3e-4``) are applied on top, and every key and value is
checked against the field types: a mistake gives one :class:`ConfigError` that names the key
and lists the valid keys of its section. Dict fields take sub-keys
(``optim.ratio.generator=2``).

Shipped configs live in ``cadenza/configs/<model>-<preset>.yaml``; :func:`resolve_config_path`
finds them by name (``fft_base-tiny``), by path, or by a path under ``configs/``.

Examples
--------
>>> cfg = load_config("fft_base-tiny", ["model.hidden_size=32", "optim.lr=3e-4"])
>>> cfg.model.hidden_size, cfg.optim.lr, cfg.model_name
(32, 0.0003, 'fft_base')
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from cadenza.errors import ConfigError, ParameterError
from cadenza.models import PRESETS, get_model_spec
from cadenza.validation import _parse_text, _type_name, coerce
from cadenza.validation import check_limits as _check_limits

SECTIONS = ("model", "data", "optim", "schedule", "train")
OPTIMIZERS = ("rmsprop", "adam", "adamw", "sgd")
SCHEDULES = ("none", "plateau", "step", "exponential", "cosine")
NORMALIZATIONS = ("standard", "minmax", "none")
PRECISIONS = ("auto", "fp32", "bf16")


def _f(default: Any, **metadata: Any) -> Any:
    """A dataclass field with checks in its metadata (``choices``, ``min``, ``max``)."""
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class DataConfig:
    """Which windows of which feature store, and how they are batched."""

    store: str = ""  # the feature store (``--data`` sets it)
    dataset: str = ""  # a key of cadenza.training.data.DATASETS; empty: the model's default
    seq_len: int = _f(40, min=1)  # T, frames per window (paper 000)
    hop: int | None = _f(None, min=1)  # frames between window starts; None: seq_len
    normalization: str = _f("standard", choices=NORMALIZATIONS)
    label_key: str | None = None  # a manifest label to condition on ("composer")
    batch_size: int = _f(16, min=1)  # the global batch, split evenly across DDP processes
    num_workers: int = _f(0, min=0)
    valid_split: str = _f("valid", choices=("valid", "test", "train"))
    options: dict[str, Any] = _f({})  # further keyword arguments of the dataset class


@dataclasses.dataclass
class OptimConfig:
    """Optimiser; ``groups`` changes these fields for one named optimiser of a GAN."""

    name: str = _f("rmsprop", choices=OPTIMIZERS)  # paper 000
    lr: float = _f(1e-4, min=0.0)  # paper 000
    weight_decay: float = _f(0.0, min=0.0)  # L2 penalty (decoupled for adamw)
    momentum: float = _f(0.0, min=0.0)  # sgd and rmsprop
    nesterov: bool = False  # sgd
    alpha: float = _f(0.9, min=0.0, max=1.0)  # rmsprop's smoothing: Keras's rho, as the papers used
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    eps: float = _f(1e-7, min=0.0)  # Keras's default
    ratio: dict[str, int] = _f({})  # updates per batch of each named optimiser; default 1 (paper 004)
    groups: dict[str, dict[str, Any]] = _f({})  # per-optimiser changes: {discriminator: {lr: 4e-4}}


@dataclasses.dataclass
class ScheduleConfig:
    """Learning-rate schedule (stepped once per epoch) and early stopping (paper 003)."""

    name: str = _f("none", choices=SCHEDULES)
    factor: float = _f(0.1, min=0.0, max=1.0)  # plateau and step: multiply the lr by this
    patience: int = _f(10, min=0)  # plateau: validations without improvement before lowering
    step_size: int = _f(100, min=1)  # step: epochs between drops
    gamma: float = _f(0.99, min=0.0, max=1.0)  # exponential: per-epoch factor
    min_lr: float = _f(0.0, min=0.0)  # plateau and cosine floor
    # step, exponential, cosine under a budget (train.max_seconds, else train.max_steps): the
    # epochs the schedule spans over the whole budget, followed by the fraction of it spent
    # instead of counted epochs; 0: it counts the run's own epochs
    span_epochs: int = _f(0, min=0)
    early_stopping: int = _f(0, min=0)  # stop after this many validations without improvement; 0: off
    min_delta: float = _f(0.0, min=0.0)  # a smaller improvement does not count


@dataclasses.dataclass
class TrainConfig:
    """The loop: length, seed, clipping, checks, checkpoints, logging."""

    max_epochs: int = _f(2000, min=1)  # paper 000
    max_steps: int = _f(0, min=0)  # stop after this many steps in all; 0: no limit
    max_seconds: float = _f(0.0, min=0.0)  # stop once training took this long, resumes counted; 0: off
    seed: int = 0
    grad_clip: float = _f(0.0, min=0.0)  # max global gradient norm; 0: no clipping
    valid_every: int = _f(1, min=1)  # epochs between validations
    save_every: int = _f(1, min=1)  # epochs between writes of last.pt (also written on stop)
    save_every_steps: int = _f(0, min=0)  # also write last.pt every this many steps; 0: off
    sample_every: int = _f(0, min=0)  # epochs between samples written to samples/; 0: never
    sample_seconds: float = _f(4.0, min=0.0)
    log_every: int = _f(10, min=1)  # steps per row of metrics.csv
    monitor: str = "loss"  # the validation loss that picks best.pt and drives plateau/early stopping
    precision: str = _f("auto", choices=PRECISIONS)  # auto: bf16 autocast on CUDA, fp32 elsewhere
    max_nonfinite: int = _f(5, min=1)  # non-finite steps in a row before training stops
    nonfinite_lr_factor: float = _f(0.5, min=0.0, max=1.0)  # lr multiplier after a non-finite step
    tensorboard: bool = True
    progress: bool = True


SECTION_CLASSES: dict[str, type] = {
    "data": DataConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
}
#: Keys of the ``model`` section that are not fields of the family's Config.
MODEL_KEYS = ("name", "preset")


@dataclasses.dataclass
class ExperimentConfig:
    """A resolved experiment: the model's key and Config, and the four other sections."""

    model_name: str
    model: Any
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    model_preset: str = "paper"

    def to_dict(self) -> dict[str, Any]:
        """Plain data with the YAML layout (``model`` holds ``name`` and ``preset``)."""
        out: dict[str, Any] = {"model": {"name": self.model_name, "preset": self.model_preset}}
        out["model"].update(_plain(dataclasses.asdict(self.model)))
        for name in SECTION_CLASSES:
            out[name] = _plain(dataclasses.asdict(getattr(self, name)))
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> ExperimentConfig:
        """A saved config (a checkpoint's, which lists every field). A model field added since it
        was saved takes the value that builds the model it was trained as (the family's
        ``SAVED_DEFAULTS``: Seq2Seq's ``head`` is ``mse`` in a run saved before the mixture head),
        not today's default."""
        model = raw.get("model") if isinstance(raw, dict) else None
        if isinstance(model, dict) and model.get("name"):
            try:
                family = get_model_spec(str(model["name"])).family
            except ParameterError:
                family = None  # build_config says what is wrong
            saved = getattr(family, "SAVED_DEFAULTS", {})
            if any(key not in model for key in saved):
                raw = {**raw, "model": {**{k: v for k, v in saved.items() if k not in model}, **model}}
        return build_config(_without_unknown_keys(raw, source), source=source)


class SavedConfigWarning(UserWarning):
    """A saved config holds keys this cadenza does not know; they were left out."""


def _without_unknown_keys(raw: Any, source: str) -> Any:
    """A saved config without the keys this version has no field for (a setting an experiment
    added and a later version dropped, or one of a newer version), each named in a
    :class:`SavedConfigWarning`: the run still loads, and its weights must still fit the model
    built without them. Families list fields they retired on purpose in ``RETIRED_FIELDS``."""
    if not isinstance(raw, dict):
        return raw
    out, dropped = dict(raw), []
    for section, values in raw.items():
        if not isinstance(values, dict):
            continue
        try:
            valid = _section_fields(section, raw) if section in SECTIONS else None
        except ConfigError:
            valid = None  # build_config reports the model section's problem
        if valid is None:
            continue
        if section == "model":
            spec = get_model_spec(str(values["name"]))
            valid = {**valid, **dict.fromkeys(getattr(spec.family, "RETIRED_FIELDS", ()))}
        unknown = [k for k in values if k not in valid]
        if unknown:
            out[section] = {k: v for k, v in values.items() if k not in unknown}
            dropped += [f"{section}.{k}={values[k]!r}" for k in unknown]
    if dropped:
        warnings.warn(
            f"{source}: left out {', '.join(dropped)}: not settings of this version of cadenza (saved by "
            "another version or an experiment); the run is loaded without them and may behave differently",
            SavedConfigWarning,
            stacklevel=3,
        )
    return out


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so YAML writes plain sequences."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- locating files
def packaged_configs() -> list[str]:
    """Names (without ``.yaml``) of the configs shipped inside the package."""
    root = resources.files("cadenza") / "configs"
    if not root.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(name: str | os.PathLike) -> Path:
    """A config file from a path, a packaged name (``fft_base-tiny``) or ``configs/<name>.yaml``."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = path.name[: -len(".yaml")] if path.name.endswith((".yaml", ".yml")) else path.name
    if path.suffix == ".yml":
        stem = path.name[: -len(".yml")]
    packaged = resources.files("cadenza") / "configs" / f"{stem}.yaml"
    if packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(
        f"no config {str(name)!r}: not a file, and not one of the packaged configs "
        f"({', '.join(packaged_configs()) or 'none'})"
    )


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _unknown_key(section: str, key: str, valid: list[str], source: str) -> ConfigError:
    return ConfigError(
        f"{source}: unknown key {key!r} in section {section!r}; valid keys: {', '.join(sorted(valid))}"
    )


def build_section(cls: type, values: dict[str, Any], *, section: str, source: str, base: Any = None) -> Any:
    """An instance of dataclass ``cls`` from ``base`` (or the defaults) changed by ``values``."""
    fields = _fields(cls)
    if not isinstance(values, dict):
        raise ConfigError(
            f"{source}: section {section!r} must be a mapping of keys to values, got {values!r}"
        )
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise _unknown_key(section, str(key), list(fields), source)
        field, hint = fields[key]
        where = f"{source}: {section}.{key}"
        changes[key] = coerce(value, hint, where)
        _check_limits(field, changes[key], where)
    try:
        return dataclasses.replace(base, **changes) if base is not None else cls(**changes)
    except (ParameterError, ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: section {section!r}: {exc}") from None


# ----------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[list[str], str]:
    """``"optim.lr=3e-4"`` -> (["optim", "lr"], "3e-4")."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"override {text!r}: expected SECTION.KEY=VALUE (e.g. optim.lr=3e-4) with SECTION one of {', '.join(SECTIONS)}"
        )
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Overrides set into a copy of the raw YAML dict; keys are checked by :func:`build_config`.

    Values stay text here, so that each is read by its field's type (``3e-4`` as a float,
    ``007`` as a string for a string field). Unknown sections and keys are reported naming
    the override.
    """
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    model_name = None
    for text in overrides:
        parts, value = parse_override(text)
        if parts == ["model", "name"]:
            model_name = value.strip()
    if model_name is not None:
        raw.setdefault("model", {})["name"] = model_name
    for text in overrides:
        parts, value = parse_override(text)
        section, key, rest = parts[0], parts[1], parts[2:]
        if section not in SECTIONS:
            raise ConfigError(
                f"override {text!r}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}"
            )
        fields = _section_fields(section, raw)
        if key not in fields:
            raise _unknown_key(section, key, list(fields), f"override {text!r}")
        field, hint = fields[key]
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {text!r}: section {section!r} is not a mapping in the config file")
        if rest:
            if typing.get_origin(hint) is not dict:
                raise ConfigError(
                    f"override {text!r}: {section}.{key} is a single value ({_type_name(hint)}), not a mapping"
                )
            node = target.setdefault(key, {})
            node = dict(node) if isinstance(node, dict) else {}
            target[key] = node
            for sub in rest[:-1]:
                node = node.setdefault(sub, {})
            value_hint = typing.get_args(hint)[1] if typing.get_args(hint) else Any
            where = f"override {text!r}: {'.'.join(parts)}"
            node[rest[-1]] = coerce(_override_value(value, value_hint), value_hint, where)
        else:
            where = f"override {text!r}: {section}.{key}"
            target[key] = coerce(_override_value(value, hint), hint, where)
            if field is not None:
                _check_limits(field, target[key], where)
    return raw


def _override_value(text: str, hint: Any) -> Any:
    """Text for scalar fields (their coercion reads it), parsed YAML for containers and Any."""
    origin = typing.get_origin(hint)
    if hint in (int, float, bool, str) or origin in (Union, types.UnionType):
        return text
    return _parse_text(text)


def _section_fields(section: str, raw: dict[str, Any]) -> dict[str, tuple[dataclasses.Field | None, Any]]:
    if section != "model":
        return _fields(SECTION_CLASSES[section])
    name = (raw.get("model") or {}).get("name")
    if not name:
        raise ConfigError(
            "the config names no model: set model.name (one of the keys of cadenza.models.MODELS)"
        )
    try:
        spec = get_model_spec(str(name))
    except ParameterError as exc:
        raise ConfigError(f"model.name: {exc}") from None
    return {"name": (None, str), "preset": (None, str), **_fields(spec.config_class)}


# ----------------------------------------------------------------------------- building
def build_config(raw: dict[str, Any], *, source: str = "config") -> ExperimentConfig:
    """An :class:`ExperimentConfig` from a YAML-shaped dict, every key and value checked."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(raw).__name__}"
        )
    for section in raw:
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
    model_raw = raw.get("model") or {}
    if not isinstance(model_raw, dict) or not model_raw.get("name"):
        raise ConfigError(f"{source}: the model section must name the model (model.name), e.g. fft_base")
    try:
        spec = get_model_spec(str(model_raw["name"]))
    except ParameterError as exc:
        raise ConfigError(f"{source}: model.name: {exc}") from None
    preset = str(model_raw.get("preset", "paper"))
    if preset not in PRESETS:
        raise ConfigError(f"{source}: model.preset: {preset!r} is not one of {', '.join(PRESETS)}")
    retired = getattr(spec.family, "RETIRED_FIELDS", ())  # decided by the data now; old runs still load
    fields = {k: v for k, v in model_raw.items() if k not in MODEL_KEYS and k not in retired}
    for key, value in spec.fixed.items():
        if key in fields and coerce(fields[key], type(value), f"{source}: model.{key}") != value:
            raise ConfigError(
                f"{source}: model.{key} is fixed to {value!r} by model {spec.key}; choose another model.name instead"
            )
    model_cfg = build_section(
        spec.config_class, fields, section="model", source=source, base=spec.preset(preset)
    )
    sections = {
        name: build_section(cls, raw.get(name) or {}, section=name, source=source)
        for name, cls in SECTION_CLASSES.items()
    }
    cfg = ExperimentConfig(model_name=spec.key, model=model_cfg, model_preset=preset, **sections)
    if not cfg.data.dataset:
        cfg.data.dataset = spec.dataset
    from cadenza.training.data import check_options  # the typed options of the dataset chosen

    try:
        cfg.data.options = check_options(cfg.data, source=source)
    except ParameterError as exc:
        raise ConfigError(str(exc)) from None
    return cfg


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw YAML of a config file, with a clear error for bad YAML."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a config (not UTF-8 text)") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: not a config: it holds a {type(raw).__name__}, where a config is a mapping of "
            f"the sections {', '.join(SECTIONS)}"
        )
    return raw if raw is not None else {}


def load_config(name: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a config (a path or a packaged name) and apply ``key=value`` overrides.

    Parameters
    ----------
    name : str or PathLike
        A YAML file, a packaged config name (``fft_base-tiny``) or ``configs/<name>.yaml``.
    overrides : sequence of str
        ``SECTION.KEY=VALUE`` strings, applied in order.

    Raises
    ------
    ConfigError
        On a missing file, bad YAML, an unknown section or key (listing the valid ones), or a
        value of the wrong type or outside its range.
    """
    path = resolve_config_path(name)
    raw = read_config_file(path)
    raw = apply_overrides(raw, list(overrides))
    return build_config(raw, source=str(path) if not overrides else f"{path} with overrides")


def config_stem(name: str | os.PathLike) -> str:
    """The run name a config gives by default: its file name without ``.yaml``."""
    base = Path(name).name
    for suffix in (".yaml", ".yml"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(section.key, old, new)`` for every value that differs between two config dicts."""
    out = []
    for section in SECTIONS:
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append((f"{section}.{key}", a.get(key), b.get(key)))
    return out
