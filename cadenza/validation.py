"""One way to check values against type hints, for configs, overrides and representations.

:func:`coerce` turns a value into the type its field declares, leniently for text from YAML and
``key=value`` overrides, strictly for parameters given from Python; :func:`check_limits` applies
a field's ``metadata`` (``choices``, ``min``, ``max``). Both raise
:class:`~cadenza.errors.ConfigError` (a :class:`~cadenza.errors.ParameterError`) with the place
of the value in the message.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Union

import numpy as np
import yaml

from cadenza.errors import ConfigError, ParameterError

__all__ = ["check_limits", "coerce", "output_folder"]


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is not None:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", str(hint))


def _bad(where: str, hint: Any, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")


def coerce(value: Any, hint: Any, where: str, *, strict: bool = False) -> Any:
    """``value`` as type ``hint``, or a :class:`~cadenza.errors.ConfigError` naming ``where``.

    Lenient (the default, for YAML and ``key=value`` overrides): text is read as the type
    (``"3"`` as 3, ``"yes"`` as True) and a whole float as an int. ``strict`` (for parameters
    set from Python or saved data): no text for numbers or booleans, no float for an int, no
    bool for a number, and numbers must be finite; an int is stored as a float for a float
    field, so saved parameters stay the same through YAML.

    Examples
    --------
    >>> coerce("3", int, "data.seq_len")
    3
    >>> coerce(3, float, "tempo", strict=True)
    3.0
    >>> coerce(16000.0, int, "Waveform.sample_rate", strict=True)
    Traceback (most recent call last):
    ...
    cadenza.errors.ConfigError: Waveform.sample_rate: expected int, got 16000.0
    """
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if strict and origin not in (Union, types.UnionType):
        return _strict(value, hint, where)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where, strict=strict)
            except ConfigError as exc:
                errors.append(exc)
        raise _bad(where, hint, value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (
            "true",
            "yes",
            "on",
            "1",
            "false",
            "no",
            "off",
            "0",
        ):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise _bad(where, hint, value)
    if hint is int:
        if isinstance(value, bool):
            raise _bad(where, hint, value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    raise _bad(where, hint, value) from None
                if as_float.is_integer():
                    return int(as_float)
        raise _bad(where, hint, value)
    if hint is float:
        if isinstance(value, bool):
            raise _bad(where, hint, value)
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise _bad(where, hint, value) from None
        if isinstance(number, (int, float)):
            if not math.isfinite(number):  # nan passes every range check; inf is no setting either
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            return float(number)
        raise _bad(where, hint, value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _bad(where, hint, value)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = _parse_text(value)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _bad(where, hint, value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
            return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if isinstance(value, str):
            value = _parse_text(value)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _bad(where, hint, value)
        value_hint = args[1] if len(args) == 2 else Any
        return {str(k): coerce(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    raise ConfigError(f"{where}: cannot read a value of type {_type_name(hint)}")


def _parse_text(text: str) -> Any:
    """An override's right-hand side as YAML (``[0.9, 0.99]``, ``{a: 1}``, ``3``), else the text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def check_limits(field: dataclasses.Field, value: Any, where: str) -> None:
    """``value`` within the field's ``metadata``: ``choices``, ``min`` and ``max``."""
    meta = field.metadata
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: {value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: {value!r} is above the maximum {hi}")


def _strict(value: Any, hint: Any, where: str) -> Any:
    """A plain value of exactly ``hint`` (int, float, str, bool); numpy scalars count as Python's."""
    is_bool = isinstance(value, (bool, np.bool_))
    if hint is bool and is_bool:
        return bool(value)
    if hint is int and isinstance(value, (int, np.integer)) and not is_bool:
        return int(value)
    if hint is float and isinstance(value, (int, float, np.integer, np.floating)) and not is_bool:
        if math.isfinite(value):
            return float(value)
    if hint is str and isinstance(value, str):
        return value
    if hint in (bool, int, float, str):
        raise _bad(where, hint, value)
    return coerce(value, hint, where)


def output_folder(out: str | os.PathLike, what: str, *, error: type[Exception] = ParameterError) -> Path:
    """``--out``, made if missing; ``error`` says so when it is a file or cannot be made.

    >>> import tempfile
    >>> output_folder(Path(tempfile.mkdtemp()) / "report", "the report").is_dir()
    True
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise error(f"--out {out} is a file, not a folder for {what}; give another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(
            f"--out {out}: cannot make the folder ({exc.strerror}) for {what}; give another --out"
        ) from None
    return out
