"""Corpus sources: each built in its real layout in tmp_path (music21: the installed corpus)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from cadenza.data.corpora import CORPORA, Source, musicnet_labels, open_source
from cadenza.data.items import SourceItem
from cadenza.errors import DecodeError, ParameterError, SourceError, SourceKindError

from ._build_corpora import (
    LPD_MSD_V0,
    LPD_MSD_V1,
    MUSICNET_LABEL_ROWS,
    build_fma,
    build_gtzan_kaggle,
    build_gtzan_tarball,
    build_lpd,
    build_musicnet,
    write_audio,
    write_midi,
)


def ids(source: Source) -> list[str]:
    return [item.id for item in source.items()]


def test_corpora_table_names_every_source():
    assert set(CORPORA) == {"folder", "music21", "musicnet", "gtzan", "fma", "lpd"}
    for name, cls in CORPORA.items():
        assert issubclass(cls, Source)
        assert cls.name == name
        assert cls.label_keys and all(isinstance(k, str) for k in cls.label_keys)


# ----------------------------------------------------------------------------- folder
@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    write_audio(root / "top.wav")
    write_audio(root / "jazz" / "take 1.wav")
    write_audio(root / "jazz" / "live" / "b.flac")
    (root / "jazz" / "empty.ogg").write_bytes(b"")  # listed: the preparer skips it with a reason
    write_midi(root / "bach" / "chorale.mid")
    (root / "bach" / "fugue.musicxml").write_text("<score-partwise/>")
    write_audio(root / "bach" / "Recording.WAV")
    (root / "rolls").mkdir()
    np.savez(root / "rolls" / "song.npz", x=np.zeros(3))
    (root / "notes.txt").write_text("not music")
    (root / "jazz" / "cover.jpg").write_bytes(b"\xff\xd8")
    write_audio(root / ".hidden.wav")
    write_audio(root / ".git" / "objects.wav")
    write_audio(root / "__MACOSX" / "jazz" / "._take 1.wav")
    os.symlink(root, root / "jazz" / "loop")  # a link back up the tree is walked once only
    os.symlink(root / "gone.wav", root / "broken.wav")
    return root


def test_folder_lists_sorted_with_ids_kinds_and_labels(mixed_folder: Path):
    src = open_source(f"folder:{mixed_folder}")
    assert src.name == "folder" and src.root == str(mixed_folder)
    items = list(src.items())
    assert [i.id for i in items] == [
        "bach__Recording.WAV",
        "bach__chorale.mid",
        "bach__fugue.musicxml",
        "broken.wav",  # a broken link: listed, so that preparing it records it as missing
        "jazz__empty.ogg",
        "jazz__live__b.flac",
        "jazz__take_1.wav",
        "rolls__song.npz",
        "top.wav",
    ]
    by_id = {i.id: i for i in items}
    assert by_id["jazz__live__b.flac"] == SourceItem(
        "jazz__live__b.flac", "audio", str(mixed_folder / "jazz" / "live" / "b.flac"), {"folder": "jazz"}
    )
    assert by_id["bach__chorale.mid"].kind == "score"
    assert by_id["bach__fugue.musicxml"].kind == "score"
    assert by_id["rolls__song.npz"].kind == "roll"
    assert by_id["top.wav"].labels == {}
    assert ids(open_source(str(mixed_folder))) == [i.id for i in items]  # a plain path is a folder
    assert "9 files" in src.describe() and "\n" not in src.describe()


def test_folder_kind_filters(mixed_folder: Path):
    audio = list(open_source(str(mixed_folder), kind="audio").items())
    assert {i.kind for i in audio} == {"audio"} and len(audio) == 6
    symbolic = list(open_source(str(mixed_folder), kind="score").items())
    assert [i.id for i in symbolic] == ["bach__chorale.mid", "bach__fugue.musicxml", "rolls__song.npz"]
    assert ids(open_source(str(mixed_folder), kind="roll")) == [i.id for i in symbolic]


def test_folder_of_scores_serves_an_audio_request_with_its_scores(tmp_path: Path):
    write_midi(tmp_path / "a.mid")
    assert [i.kind for i in open_source(str(tmp_path), kind="audio").items()] == ["score"]


def test_ids_made_equal_by_safe_id_are_told_apart(tmp_path: Path):
    write_audio(tmp_path / "a b.wav")
    write_audio(tmp_path / "a_b.wav")
    first = ids(open_source(str(tmp_path)))
    assert len(set(first)) == 2 and all(i.startswith("a_b.wav-") for i in first)
    assert ids(open_source(str(tmp_path))) == first  # stable


def test_ids_equal_but_for_case_are_told_apart(tmp_path: Path):
    write_audio(tmp_path / "Track.wav")
    write_audio(tmp_path / "track.wav")
    found = ids(open_source(str(tmp_path)))
    # two shards a file system that ignores case (macOS, Windows) keeps apart
    assert len({i.lower() for i in found}) == 2 and all(i.lower().startswith("track.wav-") for i in found)


def test_a_file_deep_in_a_library_with_long_names_is_prepared(tmp_path: Path):
    from cadenza.data import FeatureStore, prepare_corpus
    from cadenza.data.items import MAX_ID

    artist = "Artist With A Fairly Long Name And Featuring Several Other Artists " * 2
    album = "Album With A Very Long Title (Deluxe Remastered Anniversary Edition) " * 2
    deep = tmp_path / "music" / artist.strip() / album.strip()
    deep.mkdir(parents=True)
    long_name = "01 A Track Title That Is Long Too (Live at the Royal Albert Hall, 1971) [Remastered].wav"
    write_audio(deep / long_name, seconds=0.5)
    write_audio(
        deep / long_name.replace("01", "02"), seconds=0.6
    )  # the same start and end: told apart by the hash
    found = ids(open_source(str(tmp_path / "music")))
    assert len(set(found)) == 2 and all(len(i) <= MAX_ID and i.endswith("_Remastered_.wav") for i in found)
    assert all(i.startswith("Artist_With_A_Fairly_Long_Name") for i in found)
    summary = prepare_corpus(
        str(tmp_path / "music"),
        tmp_path / "store",
        representation="fft",
        rep_params={"block_size": 400},
        progress=False,
    )
    assert summary.n_ok == 2 and summary.n_skipped == 0  # "File name too long" before
    assert len(FeatureStore(tmp_path / "store").records) == 2


def test_a_file_named_in_latin_1_on_a_utf_8_system_is_prepared(tmp_path: Path):
    from cadenza.data import prepare_corpus

    src = tmp_path / "music"
    write_audio(src / "ok.wav", seconds=0.5)
    write_audio(src / "tmp.wav", seconds=0.6)
    try:  # an archive made on Windows: the name's bytes are not UTF-8
        os.rename(src / "tmp.wav", os.fsencode(src) + b"/caf\xe9 latin1.wav")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    summary = prepare_corpus(
        str(src), tmp_path / "store", representation="fft", rep_params={"block_size": 400}, progress=False
    )
    assert summary.n_ok == 2 and summary.n_skipped == 0  # "UnicodeEncodeError" in soundfile before


def test_single_file_is_a_one_item_folder(tmp_path: Path):
    path = write_midi(tmp_path / "piece one.mid")
    src = open_source(str(path))
    assert [(i.id, i.kind, i.path, i.labels) for i in src.items()] == [
        ("piece_one.mid", "score", str(path), {})
    ]
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(SourceError, match=r"\.mid"):
        open_source(str(tmp_path / "readme.txt"))


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_audio(tmp_path / "corpus" / "a.wav")
    assert open_source("~/corpus").root == str(tmp_path / "corpus")
    assert open_source("folder:~/corpus").root == str(tmp_path / "corpus")


def test_folder_errors(tmp_path: Path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    write_audio(tmp_path / "junk" / ".hidden.wav")
    with pytest.raises(SourceError, match=r"no usable file.*\.wav.*\.mid.*\.npz"):
        open_source(str(tmp_path / "junk"))
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"gtzan:{tmp_path / 'missing'}")
    with pytest.raises(
        SourceError, match=r"unknown corpus 'maestro'.*folder, music21, musicnet, gtzan, fma, lpd"
    ):
        open_source("maestro:/data/maestro")
    with pytest.raises(SourceError, match="needs a path"):
        open_source("gtzan")
    write_audio(tmp_path / "recordings" / "a.wav")
    with pytest.raises(
        SourceKindError, match=r"no MIDI/MusicXML files in .*recordings.*piano rolls need scores"
    ):
        open_source(str(tmp_path / "recordings"), kind="roll")
    with pytest.raises(ParameterError):
        open_source(str(tmp_path / "recordings"), kind="video")


# ---------------------------------------------------------------------------- music21
def test_music21_bach_chorales(monkeypatch: pytest.MonkeyPatch):
    import music21

    def no_parsing(*args, **kwargs):
        raise AssertionError("listing must not parse scores")

    monkeypatch.setattr(music21.converter, "parse", no_parsing)
    t0 = time.perf_counter()
    src = open_source("music21:bach")
    items = list(src.items())
    assert time.perf_counter() - t0 < 5.0  # about 0.2 s; parsing them all would take minutes
    chorales = [i for i in items if i.labels == {"composer": "bach", "ensemble": "choir"}]
    assert len(chorales) > 300
    assert all(i.kind == "score" and os.path.isfile(i.path) and i.path.startswith(src.root) for i in items)
    assert not [i for i in items if i.path.endswith(".rntxt")]  # analyses are not scores
    stems = [os.path.splitext(os.path.relpath(i.path, src.root))[0] for i in items]
    assert len(stems) == len(set(stems))  # bwv277/281/366 come as .krn and .mxl: listed once
    assert next(i for i in items if i.id.startswith("bach__bwv277")).path.endswith(".mxl")
    assert len(ids(src)) == len(set(ids(src)))
    default = open_source("music21")
    assert {i.labels["ensemble"] for i in default.items()} == {"choir"}
    assert len(default) == len(chorales)


def test_music21_composers_and_aliases():
    src = open_source("music21:beethoven,mozart")
    labels = [i.labels for i in src.items()]
    assert {lab["composer"] for lab in labels} == {"beethoven", "mozart"}
    assert sum(lab["composer"] == "beethoven" for lab in labels) >= 20
    assert sum(lab["composer"] == "mozart" and lab["ensemble"] == "string quartet" for lab in labels) >= 12
    assert {lab["ensemble"] for lab in labels} == {"string quartet", "piano"}  # K. 545 is a sonata
    quartets = list(open_source("music21:quartets").items())
    assert {i.labels["composer"] for i in quartets} == {"beethoven", "mozart", "haydn"}
    assert {i.labels["ensemble"] for i in quartets} == {"string quartet"}
    palestrina = open_source("music21:Palestrina")
    assert len(palestrina) > 1000 and {i.labels["ensemble"] for i in palestrina.items()} == {"vocal"}


def test_music21_unknown_composer_lists_the_names():
    with pytest.raises(SourceError, match=r"wagner.*available:.*bach.*beethoven.*mozart"):
        open_source("music21:bach,wagner")


# --------------------------------------------------------------------------- MusicNet
def test_musicnet(tmp_path: Path):
    build_musicnet(tmp_path)
    for spec in (f"musicnet:{tmp_path}", str(tmp_path), str(tmp_path / "musicnet")):
        src = open_source(spec)
        assert src.name == "musicnet"
        assert ids(src) == ["1727", "1759", "2118", "2303"]
    items = {i.id: i for i in open_source(str(tmp_path)).items()}
    assert items["2118"].labels == {
        "composer": "beethoven",
        "ensemble": "string quartet",
        "musicnet_split": "train",
    }
    assert items["2303"].labels == {"composer": "bach", "ensemble": "solo violin", "musicnet_split": "test"}
    assert items["2303"].path == str(tmp_path / "musicnet" / "test_data" / "2303.wav")
    assert items["2303"].kind == "audio"
    with pytest.raises(SourceKindError, match="piano rolls need scores"):
        open_source(str(tmp_path), kind="score")


def test_musicnet_labels(tmp_path: Path):
    build_musicnet(tmp_path)
    src = open_source(str(tmp_path))
    item = next(i for i in src.items() if i.id == "2303")
    labels = musicnet_labels(src.label_path(item))
    assert labels.dtype.names == (
        "start_time",
        "end_time",
        "instrument",
        "note",
        "start_beat",
        "end_beat",
        "note_value",
    )
    assert labels["start_time"].tolist() == [r[0] for r in MUSICNET_LABEL_ROWS]
    assert labels["note"].tolist() == [53, 65, 69]
    assert labels["end_beat"].tolist() == [1.5, 0.5, 0.5]
    assert labels["note_value"].tolist() == ["Dotted Quarter", "Eighth", "Eighth"]
    bad = tmp_path / "bad.csv"
    bad.write_text("onset,offset\n1,2\n")
    with pytest.raises(DecodeError, match="not a MusicNet label file"):
        musicnet_labels(bad)


# ------------------------------------------------------------------------------ GTZAN
def test_gtzan_original_tarball(tmp_path: Path):
    build_gtzan_tarball(tmp_path)
    expected = ["blues.00000", "blues.00001", "jazz.00054", "rock.00099"]
    for spec in (
        f"gtzan:{tmp_path}",
        f"gtzan:{tmp_path / 'genres'}",
        str(tmp_path),
        str(tmp_path / "genres"),
    ):
        src = open_source(spec)
        assert src.name == "gtzan" and ids(src) == expected
    item = next(open_source(str(tmp_path)).items())
    assert item.labels == {"genre": "blues"}
    assert item.path == str(tmp_path / "genres" / "blues" / "blues.00000.au")
    assert open_source(str(tmp_path / "genres" / "jazz")).name == "folder"  # one genre folder: no layout


def test_gtzan_kaggle(tmp_path: Path):
    build_gtzan_kaggle(tmp_path)
    for spec in (str(tmp_path), str(tmp_path / "Data"), str(tmp_path / "Data" / "genres_original")):
        src = open_source(spec)
        assert src.name == "gtzan"
        assert [(i.id, i.labels["genre"]) for i in src.items()] == [
            ("classical.00012", "classical"),
            ("jazz.00000", "jazz"),
            ("jazz.00054", "jazz"),  # zero bytes in Kaggle's copy; listed, skipped later
        ]
    with pytest.raises(SourceError, match="piano rolls need scores"):
        open_source(f"gtzan:{tmp_path}", kind="roll")
    with pytest.raises(SourceError, match="no genre folders"):
        open_source(f"gtzan:{tmp_path / 'Data' / 'images_original'}")


# -------------------------------------------------------------------------------- FMA
def test_fma(tmp_path: Path):
    build_fma(tmp_path)
    for spec in (f"fma:{tmp_path}", str(tmp_path), str(tmp_path / "fma_small")):
        src = open_source(spec)
        assert src.name == "fma"
        assert ids(src) == ["000002", "000005", "001039", "099999"]
    items = {i.id: i for i in open_source(str(tmp_path)).items()}
    assert items["000002"].labels == {"genre": "hip-hop", "fma_split": "training"}
    assert items["000002"].path == str(tmp_path / "fma_small" / "000" / "000002.mp3")
    assert items["000005"].labels == {"genre": "hip-hop", "fma_split": "validation"}
    assert items["001039"].labels == {"fma_split": "test"}  # no genre_top: no genre label
    assert items["001039"].path == str(tmp_path / "fma_small" / "001" / "001039.mp3")
    assert items["099999"].labels == {}  # not in tracks.csv
    assert open_source(str(tmp_path)).label_keys == ("genre", "fma_split")


def test_fma_without_metadata_lists_audio_unlabelled(tmp_path: Path):
    write_audio(tmp_path / "fma_large" / "155" / "155066.mp3")
    src = open_source(str(tmp_path))
    assert src.name == "fma" and [(i.id, i.labels) for i in src.items()] == [("155066", {})]


# -------------------------------------------------------------------------------- LPD
def test_lpd(tmp_path: Path):
    build_lpd(tmp_path)
    v1 = f"lpd_5__lpd_5_cleansed__{LPD_MSD_V1[0].replace('/', '__')}__{LPD_MSD_V1[1]}.npz"
    for spec in (
        f"lpd:{tmp_path}",
        str(tmp_path),
        str(tmp_path / "lpd_5"),
        str(tmp_path / "lpd_5" / "lpd_5_cleansed"),
    ):
        src = open_source(spec)
        assert src.name == "lpd"
        assert len(src) == 2 and {i.kind for i in src.items()} == {"roll"}
    items = list(open_source(str(tmp_path)).items())
    assert items[0].id == v1
    assert items[0].labels == {"msd_id": "TRAAAGR128F425B14B"}
    assert items[1].labels == {"msd_id": "TRRRAJP128E0793859"}
    assert items[1].path == str(
        tmp_path / "lpd_5" / "lpd_5_cleansed" / LPD_MSD_V0[0] / f"{LPD_MSD_V0[1]}.npz"
    )
    assert len(open_source(str(tmp_path), kind="score")) == 2


# ----------------------------------------------------------------- damaged metadata and files
def test_musicnet_metadata_with_a_bom_or_other_case_keeps_its_labels(tmp_path: Path):
    """Saved by Excel: a byte-order mark glued to "id" once dropped every composer label silently."""
    build_musicnet(tmp_path)
    meta = tmp_path / "musicnet_metadata.csv"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes().replace(b"id,composer", b"ID,Composer", 1))
    labels = {i.id: i.labels for i in open_source(str(tmp_path)).items()}
    assert labels["2303"] == {"composer": "bach", "ensemble": "solo violin", "musicnet_split": "test"}


@pytest.mark.parametrize(
    "content, message",
    [
        ("id,composer\n9999,Händel\n".encode("latin-1"), "not UTF-8 text"),  # was a UnicodeDecodeError
        (b"", "no id column"),  # was read as no labels at all
        (b"number;composer\n1727;Schubert\n", "no id column"),
    ],
)
def test_musicnet_metadata_that_cannot_be_read_says_what_to_do(tmp_path: Path, content: bytes, message: str):
    build_musicnet(tmp_path)
    (tmp_path / "musicnet_metadata.csv").write_bytes(content)
    with pytest.raises(SourceError, match=f"{message}.*move it away to list the recordings without"):
        open_source(str(tmp_path))


def test_a_damaged_musicnet_label_file_is_a_decode_error(tmp_path: Path):
    header = b"start_time,end_time,instrument,note,start_beat,end_beat,note_value\r\n"
    path = tmp_path / "1727.csv"
    path.write_bytes(b"\xef\xbb\xbf" + header + b"9182,90078,43,53,4.0,1.5,Quarter\r\n")  # BOM, CRLF
    assert musicnet_labels(path)["note"].tolist() == [53]
    for row in (
        b"1,2,99999,53,4.0,1.5,Quarter\n",
        b"1,2,43,53,4.0,1.5,Noire \xe9\n",
    ):  # int16 overflow, latin-1
        path.write_bytes(header + row)
        with pytest.raises(DecodeError, match="not a MusicNet label file"):
            musicnet_labels(path)


def test_a_damaged_fma_tracks_csv_says_what_to_do(tmp_path: Path):
    build_fma(tmp_path)
    tracks = tmp_path / "fma_metadata" / "tracks.csv"
    lines = tracks.read_bytes().splitlines(keepends=True)
    tracks.write_bytes(b"".join(lines[1:]))  # the top header row lost
    with pytest.raises(SourceError, match="two header rows.*fma_metadata.zip.*without genre labels"):
        open_source(str(tmp_path))
    tracks.write_bytes(b"".join(lines) + "7,1,x,,Bj\xf6rk,training,small,Pop,[1],t\n".encode("latin-1"))
    with pytest.raises(SourceError, match="not UTF-8 text"):  # was a UnicodeDecodeError
        open_source(str(tmp_path))
    tracks.write_bytes(b"".join(lines) + "\u00b2,1,x,,B,training,small,Pop,[1],t\n".encode())
    write_audio(tmp_path / "fma_small" / "000" / "\u00b2.mp3")  # a digit to str.isdigit, not to int()
    assert ids(open_source(str(tmp_path))) == ["000002", "000005", "001039", "099999"]


def test_a_misfiled_gtzan_copy_does_not_take_the_genre_of_its_folder(tmp_path: Path):
    build_gtzan_tarball(tmp_path)
    write_audio(tmp_path / "genres" / "blues" / "jazz.00054.au")  # a stray copy, sorted first
    (tmp_path / "genres" / "pop").mkdir()  # an empty genre
    labels = {i.id: i.labels["genre"] for i in open_source(str(tmp_path)).items()}
    assert labels == {
        "blues.00000": "blues",
        "blues.00001": "blues",
        "jazz.00054": "jazz",
        "rock.00099": "rock",
    }
