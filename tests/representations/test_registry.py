"""The REPRESENTATIONS table: every registered representation round-trips and saves its parameters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pretty_midi
import pytest
import yaml

from cadenza.errors import ParameterError
from cadenza.representations import (
    REPRESENTATIONS,
    Representation,
    make_representation,
    representation_from_dict,
    spectral_distance,
)

from .test_spectral import music_signal, noise_signal, one_torch_thread  # noqa: F401 (autouse fixture)

#: Non-default parameters for each representation, to check that they survive saving.
VARIANTS = {
    "waveform": [{"encoding": "mulaw", "n_classes": 256}, {"encoding": "mulaw", "n_classes": 1024}],
    "fft": [{"block_size": 1000, "sample_rate": 8000}],
    "mel": [{"n_fft": 1024, "hop_length": 256, "n_mels": 96, "htk": True, "top_db": 80.0}],
    "mfcc": [{"n_mfcc": 13, "lifter": 22.0, "top_db": None}],
    "pianoroll": [{"lowest_pitch": 24, "n_pitches": 84, "include_drums": True}],
}


def _instances():
    for name, cls in REPRESENTATIONS.items():
        yield pytest.param(cls(), id=name)
        for i, params in enumerate(VARIANTS.get(name, [])):
            yield pytest.param(cls(**params), id=f"{name}-{i}")


def _score() -> pretty_midi.PrettyMIDI:
    rng = np.random.default_rng(0)
    midi = pretty_midi.PrettyMIDI(initial_tempo=100.0)
    inst = pretty_midi.Instrument(program=0)
    for start in np.arange(0, 16, 0.5):  # eighth notes over four bars, chords of three
        for pitch in rng.choice(np.arange(40, 90), size=3, replace=False):
            inst.notes.append(
                pretty_midi.Note(velocity=90, pitch=int(pitch), start=start * 0.6, end=start * 0.6 + 0.25)
            )
    midi.instruments.append(inst)
    return midi


def test_table_holds_the_five_representations():
    assert set(REPRESENTATIONS) == {"waveform", "fft", "mel", "mfcc", "pianoroll"}
    for name, cls in REPRESENTATIONS.items():
        assert issubclass(cls, Representation) and cls.name == name
        assert cls.input_kind in ("audio", "score")
        assert cls.is_exact or cls.round_trip_tolerance > 0


@pytest.mark.parametrize("rep", list(_instances()))
def test_round_trip(rep):
    if rep.input_kind == "score":
        roll = rep.encode(_score())
        assert roll.shape[1] == rep.n_features and roll.dtype == np.dtype(rep.dtype)
        assert roll.any() and len(roll) % rep.steps_per_bar == 0
        np.testing.assert_array_equal(rep.encode(rep.decode(roll)), roll)
        return
    y = music_signal(2.0, sr=rep.sample_rate, seed=11)
    frames = rep.encode(y)
    assert frames.ndim == 2 and frames.shape[1] == rep.n_features
    assert frames.dtype == np.dtype(rep.dtype)
    # frame_rate says how many frames a second of audio makes.
    assert abs(len(frames) - len(y) / rep.sample_rate * rep.frame_rate) <= 1
    y_hat = rep.decode(frames)
    assert y_hat.dtype == np.float32 and y_hat.ndim == 1
    if rep.is_exact:
        if np.issubdtype(frames.dtype, np.integer):  # mu-law: exact at its resolution
            np.testing.assert_array_equal(rep.encode(y_hat), frames)
            np.testing.assert_array_equal(rep.decode(rep.encode(y_hat)), y_hat)
            assert np.abs(y_hat[: len(y)] - y).max() < 0.05
        else:
            assert np.abs(y_hat[: len(y)] - y).max() < 1e-5
            assert np.abs(y_hat[len(y) :]).max(initial=0) < 1e-5
    else:
        tolerance = rep.round_trip_tolerance
        assert abs(len(y_hat) - len(y)) < rep.hop_length
        assert spectral_distance(y, y_hat, sr=rep.sample_rate) < tolerance
        # ...and the check can fail: noise and silence are far outside the tolerance.
        assert spectral_distance(y, noise_signal(2.0, sr=rep.sample_rate), sr=rep.sample_rate) > tolerance
        assert spectral_distance(y, np.zeros_like(y), sr=rep.sample_rate) > tolerance


@pytest.mark.parametrize("rep", list(_instances()))
def test_to_dict_survives_yaml(rep):
    d = rep.to_dict()
    assert next(iter(d)) == "name" and d["name"] == rep.name
    assert all(v is None or type(v) in (int, float, str, bool) for v in d.values())
    text = yaml.safe_dump(d, sort_keys=False)
    back = representation_from_dict(yaml.safe_load(text))
    assert back == rep and type(back) is type(rep) and back.to_dict() == d


def test_make_representation_overrides_defaults():
    rep = make_representation("mel", n_mels=64, hop_length=256)
    assert rep.n_mels == 64 and rep.hop_length == 256 and rep.n_fft == 2048
    # A float field given an int (as YAML or a key=value override may) is stored as a float.
    rep = make_representation("pianoroll", tempo=100)
    assert rep.tempo == 100.0 and type(rep.tempo) is float
    assert make_representation("fft", block_size=np.int64(2000)).block_size == 2000


def test_unknown_names_and_parameters_are_reported():
    with pytest.raises(ParameterError, match="waveform, fft, mel, mfcc, pianoroll"):
        make_representation("wavelet")
    with pytest.raises(ParameterError, match="valid: sample_rate, block_size"):
        make_representation("fft", blocksize=4000)
    with pytest.raises(ParameterError, match="name"):
        representation_from_dict({"n_mels": 128})


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("waveform", {"sample_rate": -16000}),
        ("waveform", {"sample_rate": 16000.0}),  # an int field refuses floats
        ("fft", {"block_size": 1}),
        ("fft", {"block_size": True}),  # ... and bools
        ("mel", {"hop_length": 4096}),  # hop > n_fft
        ("mel", {"n_mels": -1}),
        ("mfcc", {"n_mfcc": 200}),  # n_mfcc > n_mels
        ("mfcc", {"fmin": float("nan")}),
        ("pianoroll", {"lowest_pitch": 100, "n_pitches": 84}),  # past pitch 127
        ("pianoroll", {"resolution": -24}),
    ],
)
def test_nonsense_parameters_are_refused(name, params):
    with pytest.raises(ParameterError):
        make_representation(name, **params)


def test_instances_are_frozen_and_hashable():
    rep = make_representation("mel")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.n_mels = 64  # type: ignore[misc]
    assert len({rep, make_representation("mel"), make_representation("mel", n_mels=64)}) == 2
