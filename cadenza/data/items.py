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


#: The longest id kept whole. A shard is named ``{id}.npy``, written as ``.{id}.npy.{pid}.tmp``,
#: and a file name may not exceed 255 bytes: a path deep in a music library ("Artist/Album
#: (Deluxe Remastered Edition)/01 Title (Live at ...).wav") joined into one id can pass that.
MAX_ID = 200


def safe_id(text: str) -> str:
    """A file-name-safe id from a relative path: ``"a b/c.wav"`` -> ``"a_b__c.wav"``; an id
    longer than :data:`MAX_ID` keeps its start and its end (the file's own name) around a hash
    of the whole path, so that it stays unique.

    >>> safe_id("a b/c.wav")
    'a_b__c.wav'
    >>> long = safe_id("/".join(["A very long folder name"] * 12) + "/01 Track.wav")
    >>> len(long) <= MAX_ID, long[:12], long.endswith("01_Track.wav")
    (True, 'A_very_long_', True)
    """
    text = text.replace("\\", "/").strip("/")
    parts = [_UNSAFE.sub("_", p) for p in text.split("/") if p]
    whole = "__".join(parts) or "item"
    if len(whole) <= MAX_ID:
        return whole
    import hashlib

    digest = hashlib.sha1(text.encode("utf-8", errors="surrogateescape")).hexdigest()[:10]
    return f"{whole[:80]}--{digest}--{whole[-100:]}"
