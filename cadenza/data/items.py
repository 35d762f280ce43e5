"""What a corpus yields: one source file with its labels."""

from __future__ import annotations

import dataclasses
import re

#: Kinds of source file. "audio" is a recording; "score" a MIDI/MusicXML/music21 score;
#: "roll" a stored piano roll (the Lakh Pianoroll Dataset's .npz files).
ITEM_KINDS = ("audio", "score", "roll")


@dataclasses.dataclass(frozen=True)
class SourceItem:
    """One file of a corpus.

    ``id`` is unique within the source, stable across runs and safe as a file name
    (it names the item's shard in a feature store); ``path`` is the file (for music21,
    the corpus file inside the installed package); ``labels`` are strings such as
    ``{"composer": "bach", "ensemble": "choir"}`` or ``{"genre": "jazz"}``.
    """

    id: str
    kind: str
    path: str
    labels: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ITEM_KINDS:
            raise ValueError(f"unknown item kind {self.kind!r}; expected one of {ITEM_KINDS}")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(text: str) -> str:
    """A file-name-safe id from a relative path: ``"a b/c.wav"`` -> ``"a_b__c.wav"``."""
    text = text.replace("\\", "/").strip("/")
    parts = [_UNSAFE.sub("_", p) for p in text.split("/") if p]
    return "__".join(parts) or "item"
