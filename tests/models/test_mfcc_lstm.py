"""Paper 003's MFCC LSTM: next-clip targets, recurrent dropout, residual noise, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cadenza.cli import main
from cadenza.data import FeatureStore
from cadenza.errors import ParameterError
from cadenza.models import DataInfo, GenerationRequest, get_model_spec
from cadenza.models.mfcc_lstm import Config, Model
from cadenza.training import load_checkpoint
from tests.evaluation.helpers import assert_evaluates
from tests.models.spectral import band_std, flux, prepare_store, real_measures

torch.set_num_threads(1)

TINY = ["train.tensorboard=false", "train.progress=false", "train.log_every=20"]


def tiny_model(seq_len: int = 6, **changes: object) -> Model:
    torch.manual_seed(0)
    info = DataInfo(
        n_features=20, seq_len=seq_len, representation={"name": "mfcc"}, window={"shift": seq_len}
    )
    return Model(Config.tiny(hidden_size=10, **changes), info)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_store(tmp_path_factory.mktemp("mfcc_lstm") / "m21-mfcc", "mfcc")


def test_recurrent_dropout_loop_is_the_lstm_without_dropout_and_masks_per_sequence() -> None:
    model = tiny_model(recurrent_dropout=0.0).train()
    x = torch.randn(3, 6, 20)
    assert torch.allclose(model._lstm_with_recurrent_dropout(x), model.lstm(x)[0], atol=1e-5)
    model.config.recurrent_dropout = 0.5
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    assert torch.equal(a, model(x))  # the masks come from torch's generator
    assert not torch.allclose(a, model.eval()(x))  # and change the result in training only
    # the first step sees a zero state, so dropout of the recurrence cannot change it
    assert torch.allclose(a[:, 0], model.eval()(x)[:, 0], atol=1e-6)


def test_next_clip_contract_and_generation_noise() -> None:
    with pytest.raises(ParameterError, match="data.options.shift to data.seq_len=6"):
        Model(Config.tiny(), DataInfo(n_features=20, seq_len=6, window={"shift": 1}))
    model = tiny_model().train()
    batch = {"x": torch.randn(8, 6, 20), "y": torch.randn(8, 6, 20)}
    model.losses(batch)
    assert model.residual_std.gt(0).all() and model.residual_rho.abs().le(1).all()
    model.eval()
    seed = torch.randn(2, 6, 20)

    def run(**options: object) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return model.generate(
            GenerationRequest(n=2, n_frames=15, generator=g, seed=seed, options=dict(options))
        )

    plain = run(noise=0)
    assert plain.shape == (2, 15, 20)
    assert torch.allclose(plain[:, :6], model(seed)) and torch.allclose(plain[:, 6:12], model(model(seed)))
    noisy = run()
    assert torch.equal(noisy, run()) and not torch.allclose(noisy, plain)
    with pytest.raises(ParameterError, match="noise only"):
        run(temperature=1)


def test_residual_noise_has_the_tracked_spread_and_correlation() -> None:
    model = tiny_model()
    model.residual_std.fill_(2.0)
    model.residual_rho.fill_(0.8)
    e, _ = model._residual_noise(torch.Size([64, 400, 20]), None, torch.Generator().manual_seed(0))
    assert e.std().item() == pytest.approx(2.0, rel=0.05)
    rho = (e[:, 1:] * e[:, :-1]).mean() / e.square().mean()
    assert rho.item() == pytest.approx(0.8, abs=0.03)


def test_registered() -> None:
    spec = get_model_spec("mfcc_lstm")
    assert spec.preset("paper").n_layers == 2 and spec.preset("paper").recurrent_dropout == 0.5


def test_cli_trains_resumes_and_generates_music_like_mfccs(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "mfcc_lstm-tiny", "--data", str(store), "--run", str(run), *TINY]
    assert main([*args, "train.max_steps=60"]) == 0
    assert main([*args, "train.max_steps=120"]) == 0  # resumes
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 120 and state["data_info"]["window"] == {"shift": 32}
    assert np.count_nonzero(state["weights"]["residual_std"].numpy()) == 20  # travels with the checkpoint
    out = tmp_path / "samples"
    assert main(["generate", str(run), "--seconds", "10", "--seed", "2", "--out", str(out)]) == 0
    y, sr = sf.read(out / "run-seed2-0.wav", dtype="float32")
    assert sr == 16000 and len(y) == 10 * sr
    meta = json.loads((out / "run-seed2-0.json").read_text())
    assert meta["model"] == "mfcc_lstm" and meta["seed_source"]["kind"] == "store"
    assert meta["inversion"]["domain"] == "mfcc" and meta["inversion"]["spectral_convergence_db"] < 0
    assert (out / "run-seed2-0.png").is_file()
    # judged by the MFCCs re-extracted from the sound: spread and motion of real music
    frames = FeatureStore(store).representation.encode(y)
    real_std, real_flux = real_measures(store)
    assert band_std(frames) >= 0.5 * real_std, (band_std(frames), real_std)
    assert 0.5 * real_flux <= flux(frames) <= 2 * real_flux, (flux(frames), real_flux)
    assert_evaluates(run, store, tmp_path / "eval", seconds=2.0)
