"""Row names of `cadenza evaluate`: runs of the same folder name stay apart."""

from __future__ import annotations

from pathlib import Path

from cadenza.evaluation.evaluate import display_names


def test_runs_of_the_same_name_get_their_parents_and_others_stay_short(tmp_path: Path) -> None:
    a, b = tmp_path / "study-a" / "runs" / "mel_rnn", tmp_path / "study-b" / "runs" / "mel_rnn"
    names = display_names([a, b, tmp_path / "runs" / "wavenet", "relative/generated"])
    assert names == ["study-a/runs/mel_rnn", "study-b/runs/mel_rnn", "wavenet", "generated"]
    # checkpoints of one run: the file names differ, so they are enough
    ck = tmp_path / "runs" / "x" / "checkpoints"
    assert display_names([ck / "best.pt", ck / "last.pt"]) == ["best.pt", "last.pt"]
    # the same run twice: the whole path, still two rows (their clip folders are kept apart anyway)
    same = display_names([a, a])
    assert same[0] == same[1] == str(a)
