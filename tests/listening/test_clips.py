"""Clip preparation: one rate, one length, one loudness; the 3.5 kHz anchor; folders of models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cadenza.errors import ParameterError
from cadenza.evaluation.detectors import loudness_lufs
from cadenza.listening import clips as cl
from cadenza.listening.experiment import open_experiment, prepare_experiment
from tests.listening.helpers import make_folders, tone

SR = 16000


def test_loudness_is_matched_without_clipping() -> None:
    rng = np.random.default_rng(0)
    loud = tone(440, 2, SR, 0.9)
    quiet = tone(220, 2, SR, 0.01)
    spiky = 0.01 * rng.standard_normal(2 * SR).astype(np.float32)
    spiky[SR] = 0.9  # one click: little loudness, a high peak
    silent = np.zeros(2 * SR, np.float32)
    matched, level = cl.match_loudness([loud, quiet, spiky, silent], SR)
    assert cl.MIN_TARGET_LUFS <= level <= cl.TARGET_LUFS
    for y in matched[:3]:
        assert loudness_lufs(y, SR) == pytest.approx(level, abs=0.5)
        assert np.abs(y).max() <= 10 ** (cl.PEAK_CEILING_DB / 20) + 1e-6
    assert not matched[3].any()  # silence stays silence


def test_the_anchor_removes_what_lies_above_3_5_khz() -> None:
    y = tone(1000, 1, SR, 0.3) + tone(6000, 1, SR, 0.3)
    anchor = cl.lowpass_anchor(y, SR)
    spectrum = np.abs(np.fft.rfft(anchor * np.hanning(len(anchor))))
    freqs = np.fft.rfftfreq(len(anchor), 1 / SR)
    at = lambda f: spectrum[np.argmin(np.abs(freqs - f))]  # noqa: E731
    assert at(1000) > 0.9 * np.abs(np.fft.rfft(y * np.hanning(len(y))))[np.argmin(np.abs(freqs - 1000))]
    assert 20 * np.log10(at(6000) / at(1000)) < -40
    with pytest.raises(ParameterError):
        cl.lowpass_anchor(y, 6000)


def test_fit_length_cuts_pads_and_fades() -> None:
    y = np.ones(3 * SR, np.float32)
    out = cl.fit_length(y, SR, seconds=1.0)
    assert len(out) == SR and out[0] == 0 and out[-1] == 0 and out[SR // 2] == 1
    assert len(cl.fit_length(y[: SR // 2], SR, seconds=1.0)) == SR


def test_an_evaluation_output_is_read_as_models_and_a_reference(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    (out / "metrics.json").parent.mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    for folder in ("clips/fft_base-tiny", "clips/reference", "clips/calibration-white-noise"):
        (out / folder).mkdir(parents=True)
        for k in range(2):
            sf.write(out / folder / f"{k:03d}-clip.wav", tone(300 + 50 * k, 1.2, SR, 0.2), SR)
    (out / "clips/fft_base-tiny/000-clip.png").write_bytes(b"\x89PNG")
    (out / "clips/fft_base-tiny/000-clip.mid").write_bytes(b"MThd")  # the WAV of the same stem wins
    models, reference = cl.model_folders(out)
    assert list(models) == ["fft_base-tiny"] and reference == out / "clips" / "reference"
    assert [p.name for p in cl.clip_files(models["fft_base-tiny"])] == ["000-clip.wav", "001-clip.wav"]
    exp = prepare_experiment(out, seconds=1.0, n_per_condition=1)
    assert exp.folder == out / "listening" / "acr"
    assert set(exp.design.conditions) == {"fft_base-tiny", "reference", "anchor"}
    assert exp.config["reference"] == str(out / "clips" / "reference")
    exp.close()


def test_a_prepared_test_is_blind_and_reused(tmp_path: Path) -> None:
    results, reference = make_folders(tmp_path)
    (results / "notes.txt").write_text("not a model")
    exp = open_experiment(results, reference=reference, seconds=1.0, n_per_condition=1)
    config = json.loads((exp.folder / "test.json").read_text())
    files = sorted((exp.folder / "clips").iterdir())
    assert [f.stem for f in files] == sorted(exp.clips) and all(len(f.stem) == 16 for f in files)
    infos = [sf.info(f) for f in files]
    # the lowest rate among the sources (the reference is at 44.1 kHz), one length, one loudness
    assert {(i.samplerate, i.frames, i.subtype) for i in infos} == {(16000, 16000, "PCM_16")}
    levels = [loudness_lufs(sf.read(f, dtype="float32")[0], 16000) for f in files]
    assert np.allclose(levels, config["loudness_lufs"], atol=0.5)
    kinds = {c: v["kind"] for c, v in config["conditions"].items()}
    assert kinds == {"gru": "model", "lstm": "model", "reference": "reference", "anchor": "anchor"}
    assert len(exp.design.conditions["reference"]) == len(exp.design.conditions["anchor"]) == 3
    # the same command reuses it; another setting is refused; a listener's block never changes
    again = open_experiment(results, reference=reference)
    assert again.config_hash == exp.config_hash and again.design.block(3) == exp.design.block(3)
    with pytest.raises(ParameterError, match="seconds=1.0, not 2.0"):
        open_experiment(results, seconds=2.0)
    with pytest.raises(ParameterError, match="already exists"):
        prepare_experiment(results)
    exp.close()
    again.close()


def test_unusable_folders_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="no such folder"):
        cl.model_folders(tmp_path / "missing")
    flat = tmp_path / "flat"
    flat.mkdir()
    sf.write(flat / "a.wav", tone(300, 1, SR, 0.2), SR)
    with pytest.raises(ParameterError, match="own subfolder"):
        cl.model_folders(flat)
    results, _ = make_folders(tmp_path / "x")
    with pytest.raises(ParameterError, match="seconds must be"):
        prepare_experiment(results, seconds=13.0)
    with pytest.raises(ParameterError, match="no such"):
        prepare_experiment(results, reference=tmp_path / "nowhere")


def test_a_click_of_a_clip_is_left_out_with_its_reason_not_the_test_cut_to_it(tmp_path: Path) -> None:
    """One model's clip of one sample once cut every clip to 0.000125 s and crashed the anchor's filter."""
    results, reference = make_folders(tmp_path)
    model = sorted(p for p in results.iterdir() if p.is_dir())[0]
    sf.write(model / "click.wav", np.zeros(1) + 0.5, 8000)
    sf.write(model / "blip.wav", tone(440, 0.3, 8000, 0.2), 8000)
    exp = prepare_experiment(results, reference=reference, seconds=1.0, n_per_condition=1)
    assert exp.seconds == pytest.approx(1.0)
    sources = {c["source"] for c in exp.config["clips"].values()}
    assert not any(s.endswith(("click.wav", "blip.wav")) for s in sources)
    reasons = dict(exp.config["skipped"])
    assert reasons[str(model / "blip.wav")] == "too short to judge (0.30 s; a trial plays at least 1 s)"
    with pytest.raises(ParameterError, match=r"seconds must be in \[1, 12\]"):
        prepare_experiment(results, reference=reference, seconds=0.5, folder=tmp_path / "other")


def test_a_model_without_a_usable_clip_stops_the_test_saying_what_to_do(tmp_path: Path) -> None:
    results, reference = make_folders(tmp_path)
    (results / "broken").mkdir()
    (results / "broken" / "a.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    with pytest.raises(
        ParameterError, match=f"no readable clip .*or move the folder out of {re.escape(str(results))}"
    ):
        prepare_experiment(results, reference=reference, seconds=1.0, n_per_condition=1)


def test_a_test_at_8_khz_gets_an_anchor_a_listener_can_hear(tmp_path, caplog) -> None:
    """A study's listening test runs at its lowest rate, 8 kHz where WaveNet or Seq2Seq take part;
    a 3.5 kHz anchor there kept all but the band's top 500 Hz (one critical band of seventeen)
    and was hard to tell from the real clip, failing honest listeners at the screening. In a test
    whose band is narrower than 8 kHz the anchor keeps 7/16 of it: 1.75 kHz at 8 kHz."""
    import soundfile as sf

    from cadenza.listening.design import ANCHOR
    from cadenza.listening.experiment import prepare_experiment
    from cadenza.listening.results import analyse

    assert [cl.anchor_cutoff(sr) for sr in (48000, 16000, 8000, 6000)] == [3500.0, 3500.0, 1750.0, 1312.5]
    results, reference = tmp_path / "results", tmp_path / "reference"
    for model, sr in (("wavenet", 8000), ("mel_rnn", 22050)):
        (results / model).mkdir(parents=True)
        for i in range(2):
            sf.write(results / model / f"{i}.wav", tone(440 * (i + 1), 2.0, sr, 0.3), sr)
    reference.mkdir()
    for i in range(2):  # a real clip with a partial at 500 Hz and one at 2.5 kHz, inside the 8 kHz band
        y = tone(500, 6.0, 22050, 0.2) + tone(2500 + 100 * i, 6.0, 22050, 0.2)
        sf.write(reference / f"piece-{i}.wav", y, 22050)
    with caplog.at_level("WARNING", logger="cadenza.listening.experiment"):
        exp = prepare_experiment(results, reference=reference, seconds=1.5, n_per_condition=1)
    assert exp.config["sample_rate"] == 8000 and exp.config["anchor_hz"] == 1750.0
    # the user is told which model brings every clip down, and how to hear the rest in full
    assert "every clip is heard at 8000 Hz, the lowest rate among them (wavenet)" in caplog.text
    assert "leave wavenet out (a folder without it) to hear the rest at 22050 Hz or more" in caplog.text
    assert "1.75 kHz anchors" in exp.config["screening"]["rule"]
    anchors = [t for t, c in exp.clips.items() if c["condition"] == ANCHOR]
    assert anchors and all("low-passed at 1750 Hz" in exp.clips[t]["source"] for t in anchors)
    for token in anchors:  # the 2.5 kHz partial is gone from every anchor, the 500 Hz one kept
        y, sr = sf.read(exp.clip_path(token), dtype="float32")
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        freqs = np.fft.rfftfreq(len(y), 1 / sr)
        high, low = spectrum[(freqs > 2400) & (freqs < 2700)].max(), spectrum[np.abs(freqs - 500) < 30].max()
        assert 20 * np.log10(high / low) < -30
    rows = {r.condition: r.to_dict()["label"] for r in analyse(exp, n_boot=10).rows}
    assert rows[ANCHOR] == "anchor (low-pass 1.75 kHz)"
