"""Library exceptions. Every error a user can cause names the thing at fault and what to do."""

from __future__ import annotations


class CadenzaError(Exception):
    """Base class of every error cadenza raises on purpose."""


class ParameterError(CadenzaError, ValueError):
    """A bad argument: an unknown name, a value out of range, a wrong type."""


class ConfigError(ParameterError):
    """A config file, override or parameter that does not fit its schema."""


class DecodeError(CadenzaError):
    """A file that cannot be turned into audio or a score (corrupt, empty, foreign, silent...).

    ``reason`` is a short phrase suitable for a manifest and a summary ("empty file",
    "not an audio file", "silent"), ``path`` the file at fault.
    """

    def __init__(self, path: object, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{self.path}: {reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class SourceError(CadenzaError):
    """A corpus source that cannot be read at all (missing folder, unknown layout, no usable file)."""


class SourceKindError(SourceError):
    """A source that holds nothing of the kind asked for (scores for piano rolls), though it may
    hold other music: another representation can still be made from it."""


class StoreError(CadenzaError):
    """A feature store that is missing, incomplete or was prepared with other parameters."""


class DiskFullError(StoreError):
    """A run stopped because its disk is full (not because of what it was writing); what it had
    finished is kept, and the same command goes on once there is room."""


class BusyError(CadenzaError):
    """A folder that another cadenza process is writing now (a store being prepared, a run being
    trained, a study): two writers would overwrite each other's files."""
