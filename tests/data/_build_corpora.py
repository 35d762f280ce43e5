"""Builders of small corpora in the real on-disk layouts, for the corpus and score tests.

The layouts follow the published archives: MusicNet's ``musicnet.tar.gz`` and
``musicnet_metadata.csv`` (zenodo record 5120004), GTZAN's ``genres.tar.gz`` and Kaggle's
``Data/genres_original``, FMA's ``fma_metadata.zip`` and ``fma_small.zip``, and the Lakh
Pianoroll Dataset's ``lpd_5_cleansed.tar.gz``.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf
from scipy.sparse import csc_matrix


def write_audio(path: Path, seconds: float = 0.05, sr: int = 8000) -> Path:
    """A short sine in the format the extension names (mp3: only an ID3-tagged stub)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".mp3":  # nothing here decodes it; the corpus only lists it
        path.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 8)
        return path
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, 0.1 * np.sin(2 * np.pi * 440 * t), sr)
    return path


def write_midi(path: Path, notes: list[tuple[int, float, float]] | None = None, program: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    for pitch, start, end in notes or [(60, 0.0, 0.5), (64, 0.5, 1.0)]:
        inst.notes.append(pretty_midi.Note(100, pitch, start, end))
    pm.instruments.append(inst)
    pm.write(str(path))
    return path


# --------------------------------------------------------------------------- MusicNet
MUSICNET_METADATA = [
    # id, composer, composition, movement, ensemble, source, transcriber, catalog_name, seconds
    ["1727", "Schubert", "Piano Quintet in A major", "2. Andante", "Piano Quintet", "European Archive",
     "http://tirolmusica.blogspot.com/", "D667", "447"],
    ["1759", "Schubert", "Piano Sonata in A minor", "1. Allegro moderato", "Solo Piano", "Museopen",
     "Segundo G. Yogore", "D845", "597"],
    ["2303", "Bach", "Violin Partita No 3 in E major", "3. Gavotte en Rondeau", "Solo Violin",
     "Museopen", "Jeff Staab", "BWV1006", "172"],
    ["2118", "Beethoven", "String Quartet No 13 in B-flat major, Op. 130", "5. Cavatina", "String Quartet",
     "European Archive", "harfesoft", "OP130", "390"],
]  # fmt: skip
MUSICNET_LABEL_HEADER = [
    "start_time",
    "end_time",
    "instrument",
    "note",
    "start_beat",
    "end_beat",
    "note_value",
]
MUSICNET_LABEL_ROWS = [
    [9182, 90078, 43, 53, 4.0, 1.5, "Dotted Quarter"],
    [9182, 33758, 42, 65, 4.0, 0.5, "Eighth"],
    [33758, 62430, 1, 69, 4.5, 0.5, "Eighth"],
]


def build_musicnet(root: Path) -> Path:
    """``root/musicnet_metadata.csv`` beside the extracted ``musicnet.tar.gz`` at ``root/musicnet``."""
    data = root / "musicnet"
    for split, ids in (("train", ["1727", "1759", "2118"]), ("test", ["2303"])):
        for item_id in ids:
            write_audio(data / f"{split}_data" / f"{item_id}.wav")
            labels = data / f"{split}_labels" / f"{item_id}.csv"
            labels.parent.mkdir(parents=True, exist_ok=True)
            with open(labels, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(MUSICNET_LABEL_HEADER)
                writer.writerows(MUSICNET_LABEL_ROWS)
    with open(root / "musicnet_metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "id",
                "composer",
                "composition",
                "movement",
                "ensemble",
                "source",
                "transcriber",
                "catalog_name",
                "seconds",
            ]
        )
        writer.writerows(MUSICNET_METADATA)
    return root


# ------------------------------------------------------------------------------ GTZAN
def build_gtzan_tarball(root: Path) -> Path:
    """The original ``genres.tar.gz``: ``genres/<genre>/<genre>.000NN.au`` and two .mf lists."""
    genres = root / "genres"
    for name in ("blues/blues.00000.au", "blues/blues.00001.au", "jazz/jazz.00054.au", "rock/rock.00099.au"):
        write_audio(genres / name)
    (genres / "bextract_single.mf").write_text("blues/blues.00000.au\tblues\n")
    (genres / "input.mf").write_text("blues/blues.00000.au\tblues\n")
    return root


def build_gtzan_kaggle(root: Path) -> Path:
    """Kaggle's copy: ``Data/genres_original/<genre>/<genre>.000NN.wav`` with the corrupt jazz.00054."""
    data = root / "Data"
    write_audio(data / "genres_original" / "jazz" / "jazz.00000.wav")
    (data / "genres_original" / "jazz" / "jazz.00054.wav").write_bytes(b"")  # the broken one
    write_audio(data / "genres_original" / "classical" / "classical.00012.wav")
    (data / "images_original" / "jazz").mkdir(parents=True)
    (data / "images_original" / "jazz" / "jazz00000.png").write_bytes(b"\x89PNG\r\n")
    (data / "features_30_sec.csv").write_text("filename,length,label\njazz.00000.wav,661794,jazz\n")
    return root


# -------------------------------------------------------------------------------- FMA
# A few of the 52 columns of the real tracks.csv, with its two header rows and its
# "track_id" row, as pandas writes a frame with two-level columns and a named index.
FMA_COLUMNS = [
    ("album", "id"), ("album", "title"), ("artist", "bio"), ("artist", "name"),
    ("set", "split"), ("set", "subset"), ("track", "genre_top"), ("track", "genres"), ("track", "title"),
]  # fmt: skip
FMA_ROWS = [
    [2, 1, "AWOL - A Way Of Life", "<p>A Way Of Life, A Collective of Hip-Hop from different backgrounds,\n"
     "scribes, producers</p>", "AWOL", "training", "small", "Hip-Hop", "[21]", "Food"],
    [5, 1, "AWOL - A Way Of Life", "", "AWOL", "validation", "small", "Hip-Hop", "[21]", "This World"],
    [1039, 112, "Bonus \"tracks\"", "", "Ed Askew", "test", "medium", "", "[17, 103]", "Untitled"],
    [3, 1, "AWOL - A Way Of Life", "", "AWOL", "training", "medium", "Hip-Hop", "[21]", "Electric Ave"],
]  # fmt: skip


def write_fma_tracks(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([""] + [top for top, _ in FMA_COLUMNS])
        writer.writerow([""] + [sub for _, sub in FMA_COLUMNS])
        writer.writerow(["track_id"] + [""] * len(FMA_COLUMNS))
        writer.writerows(FMA_ROWS)
    return path


def build_fma(root: Path) -> Path:
    """``fma_metadata/{tracks,genres}.csv`` and ``fma_small/NNN/NNNNNN.mp3`` (folder = id // 1000)."""
    write_fma_tracks(root / "fma_metadata" / "tracks.csv")
    (root / "fma_metadata" / "genres.csv").write_text(
        "genre_id,#tracks,parent,title,top_level\n21,1,0,Hip-Hop,21\n"
    )
    small = root / "fma_small"
    for track_id in (2, 5, 1039, 99999):  # 99999 is not in tracks.csv
        write_audio(small / f"{track_id // 1000:03d}" / f"{track_id:06d}.mp3")
    (small / "README.txt").write_text("This .zip archive is part of the FMA dataset.\n")
    (small / "checksums").write_text("f0df49ffe5f2a6008d7dc83c6915b31835dfe733  000/000002.mp3\n")
    return root


# -------------------------------------------------------------------------------- LPD
LPD_MSD_V1 = ("A/A/A/TRAAAGR128F425B14B", "b97c529ab9ef783a849b896816001748")
LPD_MSD_V0 = ("R/R/A/TRRRAJP128E0793859", "2c78d25cb52eb48f767186ddaf11b191")


def lpd_tracks(n_steps: int = 96) -> list[tuple[str, int, bool, np.ndarray]]:
    """Five LPD-5 tracks (name, program, is_drum, bool roll): drums, piano, guitar, bass, strings."""
    drums = np.zeros((n_steps, 128), bool)
    drums[::12, 36] = True
    piano = np.zeros((n_steps, 128), bool)
    piano[0:24, [60, 64, 67]] = True
    piano[24:30, 72] = True
    guitar = np.zeros((n_steps, 128), bool)
    bass = np.zeros((n_steps, 128), bool)
    bass[48:96, 36] = True
    strings = np.zeros((n_steps, 128), bool)
    strings[12:60, 64] = True  # overlaps the piano's E4
    return [
        ("Drums", 0, True, drums),
        ("Piano", 0, False, piano),
        ("Guitar", 24, False, guitar),
        ("Bass", 32, False, bass),
        ("Strings", 48, False, strings),
    ]


def write_lpd_v0(
    path: Path, tracks, *, beat_resolution: int = 24, tempo: float = 100.0, name: str = ""
) -> Path:
    """An .npz as pypianoroll 0.x's ``Multitrack.save`` wrote the published LPD files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n_steps = max(roll.shape[0] for *_, roll in tracks)
    arrays = {"tempo": np.full(n_steps, tempo)}
    downbeat = np.zeros(n_steps, bool)
    downbeat[:: 4 * beat_resolution] = True
    arrays["downbeat"] = downbeat
    info: dict = {"beat_resolution": beat_resolution, "name": name}
    for i, (track_name, program, is_drum, roll) in enumerate(tracks):
        csc = csc_matrix(roll)
        arrays.update(
            {
                f"pianoroll_{i}_csc_data": csc.data,
                f"pianoroll_{i}_csc_indices": csc.indices,
                f"pianoroll_{i}_csc_indptr": csc.indptr,
                f"pianoroll_{i}_csc_shape": csc.shape,
            }
        )
        info[str(i)] = {"program": program, "is_drum": is_drum, "name": track_name}
    np.savez_compressed(path, **arrays)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("info.json", json.dumps(info), zipfile.ZIP_DEFLATED)
    return path


def write_lpd_v1(path: Path, tracks, *, resolution: int = 24, tempo: float = 100.0) -> Path:
    """An .npz written by the installed pypianoroll (>= 1.0) itself."""
    import pypianoroll

    path.parent.mkdir(parents=True, exist_ok=True)
    n_steps = max(roll.shape[0] for *_, roll in tracks)
    multitrack = pypianoroll.Multitrack(
        name="lpd test",
        resolution=resolution,
        tempo=np.full(n_steps, tempo),
        tracks=[
            pypianoroll.BinaryTrack(name=n, program=p, is_drum=d, pianoroll=r)
            if r.dtype == np.bool_
            else pypianoroll.StandardTrack(name=n, program=p, is_drum=d, pianoroll=r)
            for n, p, d, r in tracks
        ],
    )
    pypianoroll.save(path, multitrack)
    return path


def build_lpd(root: Path) -> Path:
    """``lpd_5/lpd_5_cleansed/<A/A/A/TR...>/<md5>.npz``: one file per pypianoroll format."""
    cleansed = root / "lpd_5" / "lpd_5_cleansed"
    write_lpd_v1(cleansed / LPD_MSD_V1[0] / f"{LPD_MSD_V1[1]}.npz", lpd_tracks())
    write_lpd_v0(cleansed / LPD_MSD_V0[0] / f"{LPD_MSD_V0[1]}.npz", lpd_tracks())
    return root
