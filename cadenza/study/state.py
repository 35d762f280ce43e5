"""``study.json``: where a study stands, written atomically after every stage.

The file holds the study's settings, and a record per store, per model stage (``train``,
``generate``, ``evaluate``), per evaluation group and for Table 1. A record's ``status`` is
``done``, ``failed`` or ``running`` (a stage that was under way when the process stopped); a
``done`` record also holds the ``key`` of what it was done for (the budget, the steps trained,
the clips asked for), so a stage whose inputs changed since is done again. Every write goes to
a temporary file that is flushed and renamed, so a kill at any moment leaves the old state or
the new one, never a torn file.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from cadenza.data.store import atomic_write_text
from cadenza.errors import CadenzaError

__all__ = ["STATE_FILE", "StudyError", "StudyState"]

STATE_FILE = "study.json"
FORMAT = "cadenza-study"
VERSION = 1


class StudyError(CadenzaError):
    """A study folder that cannot be continued as asked (other settings, an unreadable state)."""


def now() -> str:
    """The local time as ISO 8601 with its offset, to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class StudyState:
    """The contents of ``OUT/study.json``, read on creation and written by :meth:`save`."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out) / STATE_FILE
        self.data: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise StudyError(
                    f"{self.path} cannot be read ({exc}); move it away to start the study again"
                ) from None
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise StudyError(f"{self.path} is not a cadenza study state; use another --out")
            self.data = data
        for section in ("stores", "models", "groups"):
            self.data.setdefault(section, {})

    @property
    def exists(self) -> bool:
        return self.path.exists()

    @property
    def settings(self) -> dict[str, Any]:
        return self.data.get("settings") or {}

    def save(self) -> None:
        self.data["updated"] = now()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")

    # ------------------------------------------------------------------ records
    def store(self, key: str) -> dict[str, Any]:
        return self.data["stores"].setdefault(key, {})

    def model(self, key: str) -> dict[str, Any]:
        return self.data["models"].setdefault(key, {"stages": {}})

    def stage(self, model: str, stage: str) -> dict[str, Any]:
        return self.model(model)["stages"].setdefault(stage, {})

    def group(self, key: str) -> dict[str, Any]:
        return self.data["groups"].setdefault(key, {})

    def set(self, record: dict[str, Any], **fields: Any) -> None:
        """Update a record (from :meth:`store`, :meth:`stage`, ...) and save the whole state."""
        if fields.get("status") in ("done", "running"):
            record.pop("error", None)
            record.pop("log", None)
        record.update(fields)
        self.save()

    @staticmethod
    def is_done(record: dict[str, Any], key: Any = None) -> bool:
        """The record is done, for ``key`` when one is given."""
        return record.get("status") == "done" and (key is None or record.get("key") == key)
