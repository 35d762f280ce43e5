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

__all__ = ["STATE_FILE", "StudyError", "StudyState", "lock_study"]

STATE_FILE = "study.json"
#: Held (``flock``) by the process running the study in the folder; the kernel lets it go when the
#: process ends, however it ends, so a killed study leaves no stale lock.
LOCK_FILE = ".study.lock"
FORMAT = "cadenza-study"
VERSION = 1


class StudyError(CadenzaError):
    """A study folder that cannot be continued as asked (other settings, an unreadable state)."""


#: Fields of a stage's record that the study reads as numbers.
_NUMBERS = ("steps", "epoch", "seconds", "seconds_per_step", "best_step")


def _shape_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the layout of a state read from disk, or None: every section a mapping
    of records, every record a mapping, the numbers the study reads numbers."""
    if not isinstance(data.get("settings", {}), dict):
        return f"settings is {type(data['settings']).__name__}, not a mapping"
    if not isinstance(data.get("commands", []), list):
        return f"commands is {type(data['commands']).__name__}, not a list"
    for section in ("stores", "models", "groups", "table1"):
        records = data.get(section, {})
        if not isinstance(records, dict):
            return f"{section} is {type(records).__name__}, not a mapping"
        for key, record in records.items():
            if not isinstance(record, dict):
                return f"{section}.{key} is {type(record).__name__}, not a mapping"
    for model, record in data.get("models", {}).items():
        stages = record.get("stages", {})
        if not isinstance(stages, dict):
            return f"models.{model}.stages is {type(stages).__name__}, not a mapping"
        for stage, rec in stages.items():
            if not isinstance(rec, dict):
                return f"models.{model}.stages.{stage} is {type(rec).__name__}, not a mapping"
            for field in _NUMBERS:
                value = rec.get(field)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                    return f"models.{model}.stages.{stage}.{field} is {value!r}, not a number"
            if not isinstance(rec.get("files", []), list):
                return f"models.{model}.stages.{stage}.files is {rec['files']!r}, not a list"
    for key, record in data.get("stores", {}).items():
        if not isinstance(record.get("test_files", []), list):
            return f"stores.{key}.test_files is {record['test_files']!r}, not a list"
    return None


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
            version = data.get("version")
            if isinstance(version, int) and version > VERSION:
                raise StudyError(
                    f"{self.path} was written by a newer cadenza (format {version}); upgrade cadenza"
                )
            problem = _shape_problem(data)
            if problem:
                raise StudyError(
                    f"{self.path}: {problem}. The file was edited or damaged: correct it, or move it away "
                    "and run the study again with its SOURCE (the stores and runs in the folder are reused)"
                )
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
        record = self.data["models"].setdefault(key, {})
        record.setdefault("stages", {})
        return record

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


def lock_study(out: str | os.PathLike) -> Any:
    """Take the study folder ``out`` for this process, or raise :class:`StudyError`.

    Two studies in one folder would train the same runs and overwrite each other's ``study.json``.
    Returns the lock (:class:`~cadenza._fs.FolderLock`; ``close()`` lets it go). Nothing is
    written to it, so a study run again with nothing to do changes no file; a second study in
    this process is refused too.
    """
    from cadenza._fs import lock_folder

    def busy(pid: int | None) -> StudyError:
        return StudyError(
            f"another cadenza study is running in {out}; let it finish (or stop it) and run the "
            "command again, or give another --out"
        )

    return lock_folder(out, LOCK_FILE, busy, write_pid=False, shared=False)
