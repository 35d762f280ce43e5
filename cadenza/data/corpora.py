"""Corpus sources: where the files of a corpus are and which labels they carry.

A source lists :class:`~cadenza.data.items.SourceItem` s (id, kind, path, labels), sorted and
stable across runs; it decodes nothing (the preparer does, and records what fails).
:func:`open_source` reads a spec:

===============================  =================================================================
spec                             source
===============================  =================================================================
``music21``                      the Bach chorales shipped inside music21 (``music21:chorales``)
``music21:beethoven,mozart``     composers (folder names) or ``chorales``/``quartets``/``folk``/``all``
``folder:/path`` or ``/path``    any folder: audio, scores and piano rolls, recursively
``musicnet:/path``               MusicNet: ``{train,test}_{data,labels}/`` + ``musicnet_metadata.csv``
``gtzan:/path``                  GTZAN: ``genres/<genre>/<genre>.000NN.au`` (original tarball) or
                                 ``Data/genres_original/<genre>/<genre>.000NN.wav`` (Kaggle)
``fma:/path``                    FMA: ``fma_metadata/tracks.csv`` + ``fma_<size>/NNN/NNNNNN.mp3``
``lpd:/path``                    Lakh Pianoroll Dataset: ``lpd_5/lpd_5_cleansed/A/A/A/TR.../<md5>.npz``
===============================  =================================================================

A plain path is recognised as MusicNet, GTZAN, FMA or LPD by its layout, else read as a
folder; a single file is a folder of one.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from cadenza.audio.io import AUDIO_EXTENSIONS
from cadenza.data.items import SourceItem, safe_id
from cadenza.errors import DecodeError, ParameterError, SourceError, SourceKindError

__all__ = [
    "AUDIO_EXTENSIONS",
    "CORPORA",
    "ROLL_EXTENSIONS",
    "SCORE_EXTENSIONS",
    "FmaSource",
    "FolderSource",
    "GtzanSource",
    "LpdSource",
    "Music21Source",
    "MusicNetSource",
    "Source",
    "musicnet_labels",
    "kind_of",
    "open_source",
]

# AUDIO_EXTENSIONS (from cadenza.audio.io) lists every audio extension, decodable here or not:
# a file this environment cannot decode is listed and then recorded as skipped with its reason.
SCORE_EXTENSIONS = (".mid", ".midi", ".kar", ".xml", ".musicxml", ".mxl", ".krn", ".abc")
ROLL_EXTENSIONS = (".npz",)
#: What a caller may ask for; "score" and "roll" both mean "something symbolic".
KINDS = ("audio", "score", "roll")


def kind_of(name: str) -> str | None:
    """The kind of a file by its extension: "audio", "score", "roll", or None for anything else."""
    ext = os.path.splitext(name)[1].lower()
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in SCORE_EXTENSIONS:
        return "score"
    if ext in ROLL_EXTENSIONS:
        return "roll"
    return None


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _walk(top: str) -> Iterator[str]:
    """Paths relative to ``top`` of the visible files below it; symbolic links are followed once."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up the tree
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        for name in filenames:
            full = os.path.join(dirpath, name)
            # a broken link to a music file is listed, so that preparing it records why it was skipped
            if not _is_hidden(name) and (os.path.exists(full) or kind_of(name) is not None):
                yield os.path.relpath(full, top).replace(os.sep, "/")


def _csv_rows(path: str, without: str) -> Iterator[list[str]]:
    """The rows of a corpus's metadata CSV (a byte-order mark is dropped, CRLF and quoted fields
    read); a file that is not UTF-8 CSV is a :class:`SourceError` that says what to do
    (``without``: what moving the file away gives, "the recordings without composer labels")."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            yield from csv.reader(f)
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8, or move it away to list {without}"
        ) from None
    except (OSError, csv.Error) as exc:
        raise SourceError(
            f"cannot read {path} ({exc}); restore it, or move it away to list {without}"
        ) from None


# ------------------------------------------------------------------------------ the base
class Source:
    """A corpus: a named, rooted, sorted list of items.

    Subclasses set ``name`` and ``label_keys`` and implement ``_scan``; the list is made
    on first use and kept. ``kind`` is what the caller needs ("audio", or "score"/"roll"
    for anything symbolic; None for everything).
    """

    name: ClassVar[str] = ""
    label_keys: ClassVar[tuple[str, ...]] = ()
    #: The kinds of item this source can hold (audio-only corpora refuse symbolic requests).
    holds: ClassVar[tuple[str, ...]] = KINDS

    def __init__(self, root: str | os.PathLike[str], *, kind: str | None = None) -> None:
        if kind is not None and kind not in KINDS:
            raise ParameterError(f"kind must be one of {KINDS} or None, got {kind!r}")
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.kind = kind
        self._items: list[SourceItem] | None = None
        #: Files of another kind than the one asked for, by kind, once the list is made: the
        #: scores of a folder that also holds audio (an audio store is made from recordings),
        #: the recordings of one asked for scores.
        self.left_out: Counter[str] = Counter()
        if not os.path.exists(self.root):
            raise SourceError(f"{self.name}:{self.root} does not exist; check the path")
        if kind in ("score", "roll") and self.holds == ("audio",):
            raise SourceKindError(
                f"no MIDI/MusicXML files in {self.name}:{self.root} (a corpus of recordings); piano rolls need scores"
            )

    @classmethod
    def from_spec(cls, rest: str, *, kind: str | None = None) -> Source:
        """The source for the part of a spec after ``<name>:``."""
        if not rest:
            raise SourceError(f"{cls.name}: needs a path, as in '{cls.name}:/data/{cls.name}'")
        return cls(rest, kind=kind)

    @classmethod
    def detect(cls, path: str) -> bool:
        """Whether the folder ``path`` has this corpus's layout."""
        return False

    def _scan(self) -> list[SourceItem]:
        raise NotImplementedError

    def _list(self) -> list[SourceItem]:
        if self._items is None:
            items = self._scan()
            if self.kind == "audio" and any(i.kind == "audio" for i in items):
                kept = [i for i in items if i.kind == "audio"]
            elif self.kind in ("score", "roll"):
                kept = [i for i in items if i.kind != "audio"]
            else:
                kept = items
            self.left_out = Counter(i.kind for i in items) - Counter(i.kind for i in kept)
            items = kept
            self._items = sorted(self._unique(items), key=lambda i: i.id)
        return self._items

    def _unique(self, items: list[SourceItem]) -> list[SourceItem]:
        """Tell apart ids that ``safe_id`` made equal ("a b.wav", "a_b.wav") by their paths, and
        ids equal but for case ("Track.wav", "track.wav"): on a file system that ignores case
        (macOS, Windows) their shards would be one file, the second written over the first."""
        counts = Counter(i.id.lower() for i in items)
        if all(n == 1 for n in counts.values()):
            return items

        def tagged(item: SourceItem) -> SourceItem:
            rel = os.path.relpath(item.path, self.root).replace(os.sep, "/")
            return dataclasses.replace(item, id=f"{item.id}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}")

        return [tagged(i) if counts[i.id.lower()] > 1 else i for i in items]

    def items(self) -> Iterator[SourceItem]:
        """The items, sorted by id."""
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._list())

    def describe(self) -> str:
        """One line: what the source is and what it holds."""
        items = self._list()
        kinds = Counter(i.kind for i in items)
        counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        labels = f"; labels: {', '.join(self.label_keys)}" if self.label_keys else ""
        return f"{self.name} corpus {self._where()}: {len(items)} files ({counts or 'none'}){labels}"

    def _where(self) -> str:
        return f"at {self.root}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r}, kind={self.kind!r})"


# ---------------------------------------------------------------------------- any folder
class FolderSource(Source):
    """Any folder, walked recursively; a file in a first-level subfolder is labelled with it.

    Audio files are kind "audio", MIDI/MusicXML/Humdrum/ABC "score", ``.npz`` "roll"; other
    files, hidden ones and ``__MACOSX`` are ignored. Asked for audio, a folder without any
    yields its scores (the preparer renders them); asked for scores, a folder of recordings
    only is an error.
    """

    name = "folder"
    label_keys = ("folder",)

    def _scan(self) -> list[SourceItem]:
        if os.path.isfile(self.root):
            top, names = os.path.dirname(self.root), [os.path.basename(self.root)]
        else:
            top, names = self.root, list(_walk(self.root))
        items = []
        for rel in names:
            kind = kind_of(rel)
            if kind is None:
                continue
            parts = rel.split("/")
            labels = {"folder": parts[0]} if len(parts) > 1 else {}
            items.append(SourceItem(safe_id(rel), kind, os.path.join(top, *parts), labels))
        if not items and os.path.isfile(self.root):
            raise SourceError(
                f"{self.root} is not a file cadenza reads; it reads audio ({' '.join(AUDIO_EXTENSIONS)}), "
                f"scores ({' '.join(SCORE_EXTENSIONS)}) and piano rolls (.npz)"
            )
        if not items:
            raise SourceError(
                f"{self.name}:{self.root} contains no usable file; looked for audio "
                f"({' '.join(AUDIO_EXTENSIONS)}), scores ({' '.join(SCORE_EXTENSIONS)}) and piano rolls (.npz)"
            )
        if self.kind in ("score", "roll") and all(i.kind == "audio" for i in items):
            raise SourceKindError(
                f"no MIDI/MusicXML files in {self.root} (only {len(items)} audio files); piano rolls need scores"
            )
        return items


# ------------------------------------------------------------------- music21's own corpus
#: Collection folder of the music21 corpus -> (composer label, ensemble). Folders not
#: named here are still selectable by name, labelled (folder, "unknown").
_M21_COLLECTIONS = {
    "bach": ("bach", "choir"),
    "beethoven": ("beethoven", "string quartet"),
    "haydn": ("haydn", "string quartet"),
    "mozart": ("mozart", "string quartet"),
    "palestrina": ("palestrina", "vocal"),
    "monteverdi": ("monteverdi", "vocal"),
    "josquin": ("josquin", "vocal"),
    "trecento": ("trecento", "vocal"),
    "ciconia": ("ciconia", "vocal"),
    "luca": ("luca", "vocal"),
    "lusitano": ("lusitano", "vocal"),
    "schumann_robert": ("schumann_robert", "voice and piano"),
    "schumann_clara": ("schumann_clara", "piano"),
    "schubert": ("schubert", "voice and piano"),
    "chopin": ("chopin", "piano"),
    "joplin": ("joplin", "piano"),
    "schoenberg": ("schoenberg", "piano"),
    "cpebach": ("cpebach", "keyboard"),
    "corelli": ("corelli", "trio sonata"),
    "handel": ("handel", "voice and piano"),
    "verdi": ("verdi", "voice and piano"),
    "webern": ("webern", "voice and ensemble"),
    "weber": ("weber", "clarinet and piano"),
    "beach": ("beach", "voice and piano"),
    "johnson_j_r": ("johnson_j_r", "voice and piano"),
    "liliuokalani": ("liliuokalani", "voice and piano"),
    "leadsheet": ("various", "lead sheet"),
    "essenfolksong": ("traditional", "melody"),
    "ryansmammoth": ("traditional", "melody"),
    "oneills1850": ("traditional", "melody"),
    "airdsairs": ("traditional", "melody"),
    "miscfolk": ("traditional", "melody"),
    "nottingham-dataset": ("traditional", "melody"),
}
#: Files whose ensemble differs from their collection's (path prefixes below the corpus root).
_M21_ENSEMBLE_EXCEPTIONS = {
    "bach/bwv846": "keyboard",
    "mozart/k545": "piano",
    "schumann_robert/opus41": "string quartet",
    "schumann_clara/opus17": "piano trio",
}
#: Not music to learn from: format demonstrations and exercises.
_M21_EXCLUDED = ("demos", "theoryexercises")
_M21_ALIASES = {
    "chorales": "Bach chorales",
    "quartets": "Beethoven, Mozart and Haydn string quartets",
    "folk": "the folk-tune collections",
    "all": "every collection",
}
#: Preference among files of the same piece in several formats.
_M21_FORMATS = (".mxl", ".musicxml", ".xml", ".krn", ".abc", ".mid", ".midi")


class Music21Source(Source):
    """The corpus shipped inside music21, by composer (its folder name) or alias.

    ``chorales`` (the default) is Bach's four-part chorales; ``quartets`` the string
    quartets of Beethoven, Mozart and Haydn; ``folk`` the folk-tune collections; ``all``
    everything but demos and exercises. A piece present in several formats is listed once,
    preferring ``.mxl``; Roman-numeral analyses (``.rntxt``) are not scores and are skipped.
    """

    name = "music21"
    label_keys = ("composer", "ensemble")
    holds = ("score",)

    def __init__(self, selection: str = "chorales", *, kind: str | None = None) -> None:
        import music21.corpus

        self.selection = tuple(s.strip().lower() for s in selection.split(",") if s.strip()) or ("chorales",)
        self._paths = [os.fspath(p) for p in music21.corpus.getPaths()]
        corpus_root = os.path.dirname(os.path.abspath(music21.corpus.__file__))
        super().__init__(corpus_root, kind=kind)
        if not self._paths:
            raise SourceError("music21: this music21 installation has no corpus files; reinstall music21")
        unknown = [s for s in self.selection if s not in _M21_ALIASES and s not in self.collections()]
        if unknown:
            raise SourceError(
                f"music21:{','.join(self.selection)}: no composer or collection named {', '.join(unknown)}; "
                f"available: {', '.join(sorted(_M21_ALIASES))} (aliases), {', '.join(self.collections())}"
            )

    @classmethod
    def from_spec(cls, rest: str, *, kind: str | None = None) -> Source:
        return cls(rest or "chorales", kind=kind)

    def collections(self) -> list[str]:
        """The selectable collection names (lower-case corpus folders)."""
        names = {self._rel(p).split("/")[0].lower() for p in self._paths}
        return sorted(n for n in names if n not in _M21_EXCLUDED and "/" not in n)

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.root).replace(os.sep, "/")

    def _wanted(self, folder: str, ensemble: str) -> bool:
        for s in self.selection:
            if s == folder or (s == "all" and folder not in _M21_EXCLUDED):
                return True
            if s == "chorales" and folder == "bach" and ensemble == "choir":
                return True
            if (
                s == "quartets"
                and folder in ("beethoven", "mozart", "haydn")
                and ensemble == "string quartet"
            ):
                return True
            if s == "folk" and _M21_COLLECTIONS.get(folder, ("", ""))[0] == "traditional":
                return True
        return False

    def _scan(self) -> list[SourceItem]:
        best: dict[str, tuple[int, str]] = {}  # piece (path without extension) -> (format rank, path)
        for path in self._paths:
            stem, ext = os.path.splitext(self._rel(path))
            if ext.lower() not in _M21_FORMATS:
                continue
            rank = _M21_FORMATS.index(ext.lower())
            if stem not in best or rank < best[stem][0]:
                best[stem] = (rank, path)
        items = []
        for stem, (_, path) in best.items():
            folder = stem.split("/")[0].lower()
            composer, ensemble = _M21_COLLECTIONS.get(folder, (folder, "unknown"))
            for prefix, special in _M21_ENSEMBLE_EXCEPTIONS.items():
                if stem.lower().startswith(prefix):
                    ensemble = special
            if self._wanted(folder, ensemble):
                labels = {"composer": composer, "ensemble": ensemble}
                items.append(SourceItem(safe_id(self._rel(path)), "score", path, labels))
        if not items:
            raise SourceError(
                f"music21:{','.join(self.selection)} matches no score; available: {', '.join(self.collections())}"
            )
        return items

    def _where(self) -> str:
        return f"({','.join(self.selection)}) at {self.root}"

    def __repr__(self) -> str:
        return f"Music21Source({','.join(self.selection)!r}, kind={self.kind!r})"


# ------------------------------------------------------------------------------ MusicNet
_MUSICNET_LABEL_DTYPE = np.dtype(
    [
        ("start_time", np.int64),  # sample index at 44.1 kHz
        ("end_time", np.int64),
        ("instrument", np.int16),  # General MIDI program (1-based, as MusicNet writes it)
        ("note", np.int16),  # MIDI pitch
        ("start_beat", np.float64),  # beats from the start of the piece
        ("end_beat", np.float64),  # the note's length in beats, despite the name
        ("note_value", "U32"),  # "Quarter", "Dotted Eighth", ...
    ]
)


def musicnet_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a MusicNet label file (``train_labels/<id>.csv``) as a structured array.

    Columns ``start_time, end_time, instrument, note, start_beat, end_beat, note_value``;
    times are sample indices at 44.1 kHz (divide by 44100 for seconds).

    Raises
    ------
    DecodeError
        "missing file", or "not a MusicNet label file" for other columns or bad values.

    Examples
    --------
    >>> labels = musicnet_labels("musicnet/train_labels/1727.csv")  # doctest: +SKIP
    >>> labels["note"][:3], labels["start_time"][:3] / 44100        # doctest: +SKIP
    (array([53, 65, 69], dtype=int16), array([0.2095, 0.2095, 0.2095]))
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DecodeError(path, "missing file")
    names = _MUSICNET_LABEL_DTYPE.names or ()
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if tuple(header) != names:
                raise DecodeError(
                    path, "not a MusicNet label file", f"columns {header}, expected {list(names)}"
                )
            rows = [
                (int(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4]), float(r[5]), r[6].strip())
                for r in reader
                if r
            ]
        return np.array(rows, dtype=_MUSICNET_LABEL_DTYPE)
    except (ValueError, IndexError, OverflowError, csv.Error) as exc:  # UnicodeDecodeError is a ValueError
        raise DecodeError(path, "not a MusicNet label file", f"{type(exc).__name__}: {exc}"[:300]) from None


class MusicNetSource(Source):
    """MusicNet: 330 recordings of chamber music, 44.1 kHz WAV, with aligned note labels.

    The zenodo ``musicnet.tar.gz`` holds ``{train,test}_data/<id>.wav`` and
    ``{train,test}_labels/<id>.csv``; ``musicnet_metadata.csv`` (columns id, composer,
    composition, movement, ensemble, source, transcriber, catalog_name, seconds) is a
    separate download, looked for at the root and up to two folders above the data.
    Labels: ``composer`` and ``ensemble`` (lower-case) and ``musicnet_split``.
    """

    name = "musicnet"
    label_keys = ("composer", "ensemble", "musicnet_split")
    holds = ("audio",)

    def __init__(self, root: str | os.PathLike[str], *, kind: str | None = None) -> None:
        super().__init__(root, kind=kind)
        self.data_root = self._find_data(self.root)
        if self.data_root is None:
            raise SourceError(
                f"musicnet:{self.root} has no train_data/ or test_data/ folder; "
                "point it at the extracted musicnet.tar.gz"
            )
        above = os.path.dirname(self.data_root)
        candidates = (self.data_root, self.root, above, os.path.dirname(above))
        self.metadata_path = next(
            (
                os.path.join(d, "musicnet_metadata.csv")
                for d in candidates
                if os.path.isfile(os.path.join(d, "musicnet_metadata.csv"))
            ),
            None,
        )

    @staticmethod
    def _find_data(root: str) -> str | None:
        # The tarball extracts to musicnet/; Kaggle's copy nests it as musicnet/musicnet/.
        for d in (root, os.path.join(root, "musicnet"), os.path.join(root, "musicnet", "musicnet")):
            if any(os.path.isdir(os.path.join(d, f"{s}_data")) for s in ("train", "test")):
                return d
        return None

    @classmethod
    def detect(cls, path: str) -> bool:
        data = cls._find_data(path)
        has_labels = data is not None and any(
            os.path.isdir(os.path.join(data, f"{s}_labels")) for s in ("train", "test")
        )
        return os.path.isfile(os.path.join(path, "musicnet_metadata.csv")) or has_labels

    def label_path(self, item: SourceItem) -> str | None:
        """The note-label CSV of an item, if the corpus has it (read it with :func:`musicnet_labels`)."""
        split = item.labels.get("musicnet_split", "train")
        path = os.path.join(self.data_root or self.root, f"{split}_labels", f"{item.id}.csv")
        return path if os.path.isfile(path) else None

    def _scan(self) -> list[SourceItem]:
        meta: dict[str, dict[str, str]] = {}
        if self.metadata_path:
            rows = _csv_rows(self.metadata_path, "the recordings without composer labels")
            header = [h.strip().lower() for h in next(rows, [])]
            if "id" not in header:
                raise SourceError(
                    f"{self.metadata_path} is not musicnet_metadata.csv (no id column; columns {header[:9]}); "
                    "download it again, or move it away to list the recordings without composer labels"
                )
            cols = {k: header.index(k) for k in ("id", "composer", "ensemble") if k in header}
            for row in rows:
                cell = {k: row[i].strip() if i < len(row) else "" for k, i in cols.items()}
                labels = {k: cell.get(k, "").lower() for k in ("composer", "ensemble")}
                meta[cell["id"]] = {k: v for k, v in labels.items() if v}
        items = []
        for split in ("train", "test"):
            folder = os.path.join(self.data_root or self.root, f"{split}_data")
            if not os.path.isdir(folder):
                continue
            for name in sorted(os.listdir(folder)):
                stem, ext = os.path.splitext(name)
                if ext.lower() in AUDIO_EXTENSIONS and not _is_hidden(name):
                    labels = {**meta.get(stem, {}), "musicnet_split": split}
                    items.append(SourceItem(safe_id(stem), "audio", os.path.join(folder, name), labels))
        if not items:
            raise SourceError(f"musicnet:{self.root} has no .wav file in train_data/ or test_data/")
        return items


# --------------------------------------------------------------------------------- GTZAN
GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
_GTZAN_FILE = re.compile(r"^(" + "|".join(GTZAN_GENRES) + r")\.\d{5}\.(au|wav)$", re.IGNORECASE)


class GtzanSource(Source):
    """GTZAN: 1000 30-second excerpts, 100 in each of ten genres; label ``genre``.

    The original tarball has ``genres/<genre>/<genre>.000NN.au``, Kaggle's copy
    ``Data/genres_original/<genre>/<genre>.000NN.wav`` (its ``jazz.00054.wav`` is corrupt
    and is listed all the same: the preparer skips it with a reason). The root may be any
    folder on the way down to the genre folders. Ids are the file stems (``blues.00000``),
    the same in both copies.
    """

    name = "gtzan"
    label_keys = ("genre",)
    holds = ("audio",)

    def __init__(self, root: str | os.PathLike[str], *, kind: str | None = None) -> None:
        super().__init__(root, kind=kind)
        self.genres_root = self._find_genres(self.root)
        if self.genres_root is None:
            raise SourceError(
                f"gtzan:{self.root} has no genre folders ({', '.join(GTZAN_GENRES)}) under it, "
                "nor genres/ or Data/genres_original/; point it at the extracted dataset"
            )

    @staticmethod
    def _find_genres(root: str) -> str | None:
        for sub in (
            "",
            "genres",
            "genres_original",
            "Data/genres_original",
            "data/genres_original",
            "Data/genres",
        ):
            d = os.path.join(root, sub) if sub else root
            for genre in GTZAN_GENRES:
                g = os.path.join(d, genre)
                if os.path.isdir(g) and any(_GTZAN_FILE.match(n) for n in os.listdir(g)):
                    return d
        return None

    @classmethod
    def detect(cls, path: str) -> bool:
        return cls._find_genres(path) is not None

    def _scan(self) -> list[SourceItem]:
        # stem -> (rank, path, genre): a copy in the folder of the genre its name says beats a
        # misfiled one (jazz.00054 under blues/), then a .wav beats an .au
        found: dict[str, tuple[tuple[bool, bool], str, str]] = {}
        for genre in GTZAN_GENRES:
            folder = os.path.join(self.genres_root or self.root, genre)
            if not os.path.isdir(folder):
                continue
            for name in sorted(os.listdir(folder)):
                stem, ext = os.path.splitext(name)
                if ext.lower() in (".wav", ".au") and not _is_hidden(name):
                    rank = (stem.split(".")[0].lower() == genre, ext.lower() == ".wav")
                    if stem not in found or rank > found[stem][0]:
                        found[stem] = (rank, os.path.join(folder, name), genre)
        if not found:
            raise SourceError(f"gtzan:{self.root} has no .au or .wav file in its genre folders")
        return [SourceItem(safe_id(s), "audio", p, {"genre": g}) for s, (_, p, g) in found.items()]


# ----------------------------------------------------------------------------------- FMA
_FMA_AUDIO = re.compile(r"^fma_(small|medium|large|full)$")


class FmaSource(Source):
    """The Free Music Archive dataset: ``fma_<size>/NNN/NNNNNN.mp3`` and ``fma_metadata/``.

    ``tracks.csv`` has a two-level header (``track``/``album``/``artist``/``set`` over
    ``genre_top``/``split``/``subset``/...), then a ``track_id`` row, then one row per
    track. Labels: ``genre`` (``track.genre_top``, lower-case, absent when empty) and
    ``fma_split`` (``set.split``: training/validation/test). Audio without a row in
    ``tracks.csv`` is listed without labels. The root is the folder holding
    ``fma_metadata`` and the ``fma_<size>`` folders, or one ``fma_<size>`` folder.
    """

    name = "fma"
    label_keys = ("genre", "fma_split")
    holds = ("audio",)

    def __init__(self, root: str | os.PathLike[str], *, kind: str | None = None) -> None:
        super().__init__(root, kind=kind)
        base = os.path.basename(self.root)
        if _FMA_AUDIO.match(base):
            self.audio_roots = [self.root]
            parent = os.path.dirname(self.root)
        else:
            parent = self.root
            self.audio_roots = sorted(
                os.path.join(self.root, d)
                for d in os.listdir(self.root)
                if _FMA_AUDIO.match(d) and os.path.isdir(os.path.join(self.root, d))
            )
        tracks = os.path.join(parent, "fma_metadata", "tracks.csv")
        self.tracks_path = tracks if os.path.isfile(tracks) else None
        if not self.audio_roots:
            raise SourceError(
                f"fma:{self.root} has no fma_small/medium/large/full folder; "
                "point it at the folder holding fma_metadata and fma_<size>"
            )

    @classmethod
    def detect(cls, path: str) -> bool:
        if _FMA_AUDIO.match(os.path.basename(os.path.abspath(path))):
            return os.path.isdir(os.path.join(os.path.dirname(os.path.abspath(path)), "fma_metadata"))
        return os.path.isfile(os.path.join(path, "fma_metadata", "tracks.csv")) or any(
            _FMA_AUDIO.match(d) for d in os.listdir(path)
        )

    def _scan(self) -> list[SourceItem]:
        labels = read_fma_tracks(self.tracks_path) if self.tracks_path else {}
        found: dict[str, str] = {}
        for audio_root in self.audio_roots:
            for rel in _walk(audio_root):
                stem, ext = os.path.splitext(rel.rsplit("/", 1)[-1])
                if (
                    ext.lower() in AUDIO_EXTENSIONS
                    and stem.isascii()
                    and stem.isdigit()
                    and stem not in found
                ):
                    found[stem] = os.path.join(audio_root, *rel.split("/"))
        if not found:
            raise SourceError(f"fma:{self.root} has no NNN/NNNNNN.mp3 file in {', '.join(self.audio_roots)}")
        return [SourceItem(stem, "audio", path, labels.get(int(stem), {})) for stem, path in found.items()]


def read_fma_tracks(path: str) -> dict[int, dict[str, str]]:
    """``{track_id: {"genre": ..., "fma_split": ...}}`` from FMA's ``tracks.csv``, with the csv module."""
    # Its free-text columns (artist bios) are long; raise the csv module's field limit once.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))
    out: dict[int, dict[str, str]] = {}
    without = "the audio without genre labels"
    reader = _csv_rows(path, without)
    top, sub = next(reader, []), next(reader, [])
    filled, current = [], ""
    for name in top:  # pandas repeats the top level on every column; fill gaps regardless
        current = name or current
        filled.append(current)
    columns = {(t.strip(), s.strip()): i for i, (t, s) in enumerate(zip(filled, sub))}
    genre_col = columns.get(("track", "genre_top"))
    split_col = columns.get(("set", "split"))
    if genre_col is None and split_col is None:
        raise SourceError(
            f"{path} is not FMA's tracks.csv (no track/genre_top or set/split column in its two header rows); "
            f"extract it again from fma_metadata.zip, or move it away to list {without}"
        )
    for row in reader:
        track_id = row[0].strip() if row else ""
        if not (track_id.isascii() and track_id.isdigit()):  # the "track_id,,,," index-name row
            continue
        labels = {}
        if genre_col is not None and genre_col < len(row) and row[genre_col].strip():
            labels["genre"] = row[genre_col].strip().lower()
        if split_col is not None and split_col < len(row) and row[split_col].strip():
            labels["fma_split"] = row[split_col].strip()
        out[int(track_id)] = labels
    return out


# ----------------------------------------------------------------- Lakh Pianoroll Dataset
_LPD_NAME = re.compile(r"^lpd(_\d+)?(_(full|matched|cleansed))?$")
_MSD_ID = re.compile(r"^TR[A-Z0-9]{16}$")


class LpdSource(Source):
    """The Lakh Pianoroll Dataset: one pypianoroll ``.npz`` per song, kind "roll".

    ``lpd_5/lpd_5_cleansed/A/A/A/TRAAAGR128F425B14B/<md5>.npz`` (the matched and cleansed
    versions nest Million Song Dataset ids; ``lpd_full`` has ``<0-f>/<md5>.npz``). Label:
    ``msd_id`` where the parent folder is one.
    """

    name = "lpd"
    label_keys = ("msd_id",)
    holds = ("roll",)

    @classmethod
    def detect(cls, path: str) -> bool:
        return bool(_LPD_NAME.match(os.path.basename(os.path.abspath(path)))) or any(
            _LPD_NAME.match(d) and os.path.isdir(os.path.join(path, d)) for d in os.listdir(path)
        )

    def _scan(self) -> list[SourceItem]:
        items = []
        for rel in _walk(self.root):
            if rel.lower().endswith(".npz"):
                parts = rel.split("/")
                labels = {"msd_id": parts[-2]} if len(parts) > 1 and _MSD_ID.match(parts[-2]) else {}
                items.append(SourceItem(safe_id(rel), "roll", os.path.join(self.root, *parts), labels))
        if not items:
            raise SourceError(f"lpd:{self.root} has no .npz file; point it at the extracted lpd_* folder")
        return items


# ----------------------------------------------------------------------- table and opener
CORPORA: dict[str, type[Source]] = {
    "folder": FolderSource,
    "music21": Music21Source,
    "musicnet": MusicNetSource,
    "gtzan": GtzanSource,
    "fma": FmaSource,
    "lpd": LpdSource,
}
#: Tried in this order on a plain folder; the first whose layout matches reads it.
_DETECT_ORDER = ("musicnet", "gtzan", "fma", "lpd")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_+-]*):(.*)$", re.DOTALL)


def open_source(spec: str, *, kind: str | None = None) -> Source:
    """Open a corpus from a spec such as ``music21:bach``, ``gtzan:~/data/gtzan`` or a path.

    Parameters
    ----------
    spec : str
        ``<name>:<argument>`` with ``<name>`` a key of ``CORPORA``, ``music21`` alone (the
        Bach chorales), or a path (``~`` expanded) whose layout picks the corpus.
    kind : {"audio", "score", "roll"}, optional
        What the caller needs: a folder then yields only its audio files (or, with none,
        its scores), or only its scores and rolls; asking recordings-only corpora for
        scores is an error.

    Returns
    -------
    Source
        Already listed, so an empty or unusable corpus fails here.

    Raises
    ------
    SourceError
        Unknown scheme, missing path, a music21 selection that matches nothing, a folder
        without a usable file, or recordings asked for piano rolls.

    Examples
    --------
    >>> src = open_source("music21:bach")
    >>> src.describe()  # doctest: +ELLIPSIS
    'music21 corpus (bach) at ...: 410 files (410 score); labels: composer, ensemble'
    >>> next(src.items()).labels
    {'composer': 'bach', 'ensemble': 'choir'}
    """
    if kind is not None and kind not in KINDS:
        raise ParameterError(f"kind must be one of {KINDS} or None, got {kind!r}")
    spec = spec.strip()
    if spec.lower() in CORPORA and not os.path.exists(spec):
        name, rest = spec.lower(), ""
    else:
        match = _SCHEME.match(spec)
        is_path = os.path.exists(os.path.expanduser(spec)) or (match is not None and len(match.group(1)) == 1)
        if match and not is_path:  # (a one-letter scheme is a Windows drive)
            name, rest = match.group(1).lower(), match.group(2).strip()
            if name not in CORPORA:
                raise SourceError(
                    f"{spec!r}: unknown corpus {name!r}; known: {', '.join(CORPORA)} (or give a folder path)"
                )
        else:
            name, rest = "", spec
    if name:
        source = CORPORA[name].from_spec(rest, kind=kind)
    else:
        path = os.path.abspath(os.path.expanduser(rest))
        if not os.path.exists(path):
            raise SourceError(
                f"{spec!r} does not exist; give an existing folder or file, or a corpus such as music21:bach"
            )
        detected = "folder"
        if os.path.isdir(path):
            detected = next((n for n in _DETECT_ORDER if CORPORA[n].detect(path)), "folder")
        source = CORPORA[detected](path, kind=kind)
    source._list()  # fail now, not halfway through preparation
    return source
