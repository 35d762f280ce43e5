"""The trainer: exact resume (a GAN's too), the non-finite guard, several optimisers and their own losses,
schedules, checkpoints and their state, samples for every family."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cadenza.errors import CadenzaError
from cadenza.kernels.lstm import cpu_bf16_lstm_supported
from cadenza.training import Trainer, TrainingDiverged, load_checkpoint, save_checkpoint, train
from cadenza.training.checkpoint import CheckpointError, rng_state, set_rng_state
from cadenza.training.config import ConfigError, build_config
from cadenza.training.data import EpochBatchSampler
from cadenza.training.logs import read_metrics
from cadenza.training.state import TrainState
from tests.training import family
from tests.training.conftest import BLOCK, SR, TINY, tone

STEPS_PER_EPOCH = 7  # 4 training tones of 2 s -> 15 windows of 8+1 frames each -> 60 windows, batch 8


def family_config(store: Path, *, model: dict | None = None, optim: dict | None = None, **train_cfg: object):
    raw = {
        "model": {"name": family.KEY, **(model or {})},
        "data": {"store": str(store), "seq_len": 8, "hop": 8, "batch_size": 8},
        "optim": {"name": "adam", "lr": 0.01, **(optim or {})},
        "train": {"max_epochs": 2, "log_every": 1, "tensorboard": False, "progress": False, **train_cfg},
    }
    return build_config(raw)


def losses_of(run: Path, *columns: str) -> list[tuple]:
    return [(r["step"], r["split"], *(r.get(c) for c in columns)) for r in read_metrics(run / "metrics.csv")]


# ----------------------------------------------------------------------------- exact resume
def test_interrupted_run_resumes_with_bitwise_equal_losses(store: Path, tmp_path: Path) -> None:
    # Dropout and a plateau schedule make the RNG state and the scheduler part of what must be restored.
    overrides = [
        *TINY,
        "model.dropout=0.3",
        "train.max_epochs=4",
        "schedule.name=plateau",
        "schedule.patience=0",
    ]
    straight = train(
        "fft_base-tiny", data=store, run=tmp_path / "a", overrides=[*overrides, "train.max_steps=17"]
    )
    first = train(
        "fft_base-tiny", data=store, run=tmp_path / "b", overrides=[*overrides, "train.max_steps=9"]
    )
    assert (first.step, first.stopped) == (9, "max_steps")  # stopped mid-epoch 2
    resumed = train(
        "fft_base-tiny", data=store, run=tmp_path / "b", overrides=[*overrides, "train.max_steps=17"]
    )
    assert straight.step == resumed.step == 17
    a, b = losses_of(tmp_path / "a", "loss", "lr"), losses_of(tmp_path / "b", "loss", "lr")
    assert len(a) == 17 + 2 and a == b  # 17 training rows and 2 validations, equal to the last bit
    wa = load_checkpoint(straight.last)["weights"]
    wb = load_checkpoint(resumed.last)["weights"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_time_budget_stops_training_and_counts_across_resumes(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = [*TINY, "train.max_epochs=1000"]
    first = train("fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_seconds=0.5"])
    assert first.stopped == "max_seconds" and 0.5 <= first.seconds < 5.0 and first.step > 0
    saved = load_checkpoint(first.last)["progress"]["seconds_trained"]
    assert saved == pytest.approx(first.seconds)  # the time is part of where the run stands
    again = train("fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_seconds=0.5"])
    assert again.stopped == "already finished" and again.step == first.step
    more = train("fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_seconds=1.5"])
    assert more.stopped == "max_seconds" and more.step > first.step and more.seconds >= 1.5


@pytest.mark.parametrize("direct", [False, True], ids=["lstm_forward", "nn.LSTM-called-directly"])
def test_bf16_training_on_the_cpu_runs_where_onednn_has_no_bf16_lstm(
    direct: bool,
    store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An AVX2 CPU's oneDNN raised on ``nn.LSTM`` under bf16 autocast; the LSTM runs in float32 there."""
    caplog.set_level(logging.WARNING)
    run = tmp_path / "run"
    if direct:
        family.register(monkeypatch)
        result = train(family_config(store, model={"lstm": True}, max_steps=3, precision="bf16"), run=run)
    else:
        overrides = [*TINY, "train.max_epochs=1000", "train.max_steps=3", "train.precision=bf16"]
        result = train("fft_base-tiny", data=store, run=run, overrides=overrides)
    assert result.step == 3
    losses = [r["loss"] for r in read_metrics(run / "metrics.csv") if r["split"] == "train"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert ("no bf16 LSTM" in caplog.text) == (not cpu_bf16_lstm_supported())


def test_an_epoch_schedule_spread_over_a_step_budget_sets_each_steps_lr(store: Path, tmp_path: Path) -> None:
    """exponential 0.5 spread as 4 epochs over 8 steps: step s trains at lr 1e-3 * 0.5 ** ((s - 1) / 2)."""
    overrides = [*TINY, "train.max_epochs=1000", "schedule.name=exponential", "schedule.gamma=0.5",
                 "schedule.span_epochs=4", "optim.lr=1e-3"]  # fmt: skip
    train("fft_base-tiny", data=store, run=tmp_path / "a", overrides=[*overrides, "train.max_steps=8"])
    rows = [r for r in losses_of(tmp_path / "a", "lr") if r[1] == "train"]
    assert [step for step, *_ in rows] == list(range(1, 9))
    for step, _, lr in rows:
        assert lr == pytest.approx(1e-3 * 0.5 ** ((step - 1) / 2), rel=1e-6), (step, lr)
    # the lr follows the state's step (or seconds): a resumed run picks the curve up where it was
    more = train("fft_base-tiny", data=store, run=tmp_path / "a", overrides=[*overrides, "train.max_steps=8"])
    assert more.stopped == "already finished"


def test_a_run_saved_before_a_config_field_existed_resumes(store: Path, tmp_path: Path) -> None:
    """A field added since (here schedule.span_epochs) takes its default in the saved config."""
    run, overrides = tmp_path / "run", [*TINY, "train.max_epochs=1000"]
    train("fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_steps=2"])
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    del state["config"]["schedule"]["span_epochs"]
    torch.save(state, last)
    assert train("fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_steps=4"]).step == 4
    with pytest.raises(
        ConfigError, match=r"different config \(model.hidden_size"
    ):  # a real change still stops it
        train(
            "fft_base-tiny",
            data=store,
            run=run,
            overrides=[*overrides, "train.max_steps=6", "model.hidden_size=8"],
        )


def test_a_run_saved_with_a_key_this_version_lacks_loads_and_resumes_with_a_warning(
    store: Path, tmp_path: Path
) -> None:
    """A setting an experiment added (or a newer version has) is left out, named, not a crash."""
    from cadenza.generation import load_generator
    from cadenza.training.config import SavedConfigWarning

    run, overrides = tmp_path / "run", [*TINY, "train.max_epochs=1000"]
    train("fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_steps=2"])
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    state["config"]["model"]["prior"] = True
    state["config"]["train"]["ema"] = 0.999
    torch.save(state, last)
    with pytest.warns(SavedConfigWarning, match=r"model.prior=True, train.ema=0.999"):
        gen = load_generator(run, checkpoint=last)
    assert gen.config.model_name == "fft_base"
    with pytest.warns(SavedConfigWarning, match="model.prior=True"):
        assert (
            train("fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_steps=4"]).step == 4
        )


def test_progress_under_a_time_budget_shows_the_time_left_not_a_step_count(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study's run sets max_epochs huge; its line once read '16/6000000 steps, 563:11:16 left'."""
    overrides = [*TINY, "train.max_epochs=1000", "train.progress=true", "train.max_seconds=0.5"]
    train("fft_base-tiny", data=store, run=tmp_path / "run", overrides=overrides)
    lines = [x for x in capsys.readouterr().err.splitlines() if " steps" in x]
    assert lines, "no progress line"
    last = lines[-1]
    assert last.startswith("epoch ") and "/1000:" not in last and "%" not in last, last
    assert "left=0:00" in last, last


def test_sigterm_stops_after_the_step_and_resume_is_exact(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    family.register(monkeypatch)
    train(family_config(store, model={"dropout": 0.2}, max_steps=16, max_epochs=3), run=tmp_path / "a")
    killed = train(
        family_config(store, model={"dropout": 0.2, "sigterm_at": 10}, max_steps=16, max_epochs=3),
        run=tmp_path / "b",
    )
    assert (killed.stopped, killed.step) == ("interrupted", 10)
    assert load_checkpoint(killed.last)["step"] == 10
    # Same run, the model rebuilt in a "new process": the trainer's step goes on from 10, so no second signal.
    cfg = family_config(store, model={"dropout": 0.2, "sigterm_at": 10}, max_steps=16, max_epochs=3)
    resumed = train(cfg, run=tmp_path / "b")
    assert resumed.step == 16
    assert losses_of(tmp_path / "a", "loss") == losses_of(tmp_path / "b", "loss")


def test_same_run_again_resumes_and_a_changed_config_is_refused(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = train("fft_base-tiny", data=store, run=run, overrides=[*TINY, "train.max_epochs=1"])
    assert first.step == STEPS_PER_EPOCH
    again = train("fft_base-tiny", data=store, run=run, overrides=[*TINY, "train.max_epochs=1"])
    assert (again.stopped, again.step) == ("already finished", STEPS_PER_EPOCH)
    more = train("fft_base-tiny", data=store, run=run, overrides=[*TINY, "train.max_epochs=2"])
    assert more.step == 2 * STEPS_PER_EPOCH
    assert [r["step"] for r in read_metrics(run / "metrics.csv") if r["split"] == "train"] == list(
        range(1, 15)
    )
    with pytest.raises(ConfigError, match=r"different config \(model.hidden_size: 16 -> 32\).*--restart"):
        train(
            "fft_base-tiny",
            data=store,
            run=run,
            overrides=[*TINY, "train.max_epochs=3", "model.hidden_size=32"],
        )
    restarted = train(
        "fft_base-tiny",
        data=store,
        run=run,
        overrides=[*TINY, "train.max_epochs=1", "model.hidden_size=32"],
        restart=True,
    )
    assert restarted.step == STEPS_PER_EPOCH
    assert len([r for r in read_metrics(run / "metrics.csv") if r["split"] == "train"]) == STEPS_PER_EPOCH


# ----------------------------------------------------------------------------- non-finite guard
@pytest.mark.parametrize("in_grad", [False, True], ids=["nan-loss", "nan-gradient"])
def test_one_nonfinite_step_is_skipped_and_training_goes_on(
    store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    in_grad: bool,
) -> None:
    family.register(monkeypatch)
    cfg = family_config(store, model={"nan_steps": [5], "nan_in_grad": in_grad})
    with caplog.at_level(logging.WARNING, logger="cadenza.training.trainer"):
        result = train(cfg, run=tmp_path / "run")
    assert (result.stopped, result.step) == ("finished", 2 * STEPS_PER_EPOCH)
    rows = {r["step"]: r for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["split"] == "train"}
    bad = rows[5]["grad_norm"] if in_grad else rows[5]["loss"]
    assert math.isnan(bad)
    assert [rows[s]["n_nonfinite"] for s in (4, 5, 14)] == [0, 1, 1]
    assert (rows[4]["lr"], rows[5]["lr"], rows[14]["lr"]) == (0.01, 0.005, 0.005)  # lowered once
    assert all(math.isfinite(rows[s]["loss"]) for s in rows if s != 5)
    state = load_checkpoint(result.last)
    assert all(torch.isfinite(w).all() for w in state["weights"].values())
    steps_taken = {int(s["step"]) for s in state["optimizers"]["loss"]["state"].values()}
    assert steps_taken == {2 * STEPS_PER_EPOCH - 1}  # the bad step never reached the weights
    assert "step 5, epoch 1, batch 4 of the epoch (windows" in caplog.text


def test_nonfinite_steps_in_a_row_stop_with_advice(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    family.register(monkeypatch)
    cfg = family_config(store, model={"nan_from": 9}, max_nonfinite=3, max_epochs=5)
    with pytest.raises(TrainingDiverged) as info:
        train(cfg, run=tmp_path / "run")
    msg = str(info.value)
    assert isinstance(info.value, CadenzaError)
    assert "not finite for 3 steps in a row (last at step 11, epoch 2" in msg
    assert (
        "optim.lr" in msg
        and "train.grad_clip" in msg
        and str(tmp_path / "run" / "checkpoints" / "last.pt") in msg
    )
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")  # the epoch-1 checkpoint is intact
    assert state["step"] == STEPS_PER_EPOCH and all(
        torch.isfinite(w).all() for w in state["weights"].values()
    )


def test_nonfinite_weights_are_reloaded_from_the_last_checkpoint(store: Path, tmp_path: Path) -> None:
    cfg = build_config(
        {
            "model": {"name": "fft_base", "preset": "tiny", "hidden_size": 8},
            "data": {"store": str(store), "seq_len": 8, "batch_size": 8},
            "train": {"progress": False, "tensorboard": False},
        }
    )
    trainer = Trainer(cfg, tmp_path / "run", device="cpu")
    try:
        trainer.save_last()
        saved = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        with torch.no_grad():
            trainer.model.head.weight.fill_(float("inf"))
        batch = torch.utils.data.default_collate([trainer.train_set[i] for i in range(8)])
        values = trainer.train_step(batch)
        assert not math.isfinite(values["loss"]) and trainer.n_nonfinite == 1
        assert all(torch.equal(saved[k], v) for k, v in trainer.model.state_dict().items())
        assert trainer.optimizers["loss"].param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * 0.5)
    finally:
        trainer.close()


# ----------------------------------------------------------------------------- optimisers and schedules
def test_several_optimisers_are_stepped_in_the_configured_ratio(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    family.register(monkeypatch)
    cfg = family_config(
        store,
        model={"two_optimizers": True},
        optim={"ratio": {"a": 1, "b": 3}, "groups": {"b": {"lr": 0.5}}},
        max_steps=4,
        monitor="metric",  # the model has no "loss"
    )
    result = train(cfg, run=tmp_path / "run")
    state = load_checkpoint(result.last)
    steps = {
        name: {int(s["step"]) for s in opt["state"].values()} for name, opt in state["optimizers"].items()
    }
    assert steps == {"a": {4}, "b": {12}}
    row = read_metrics(tmp_path / "run" / "metrics.csv")[3]
    assert (
        row["lr/a"] == 0.01 and row["lr/b"] == 0.5 and row["metric"] == pytest.approx(2 * row["b"], rel=0.2)
    )
    frozen = train(
        family_config(
            store, model={"two_optimizers": True}, optim={"ratio": {"b": 0}}, max_steps=2, monitor="metric"
        ),
        run=tmp_path / "frozen",
    )
    assert load_checkpoint(frozen.last)["optimizers"]["b"]["state"] == {}
    with pytest.raises(ConfigError, match=r"optim.ratio names \['c'\]"):
        train(
            family_config(store, model={"two_optimizers": True}, optim={"ratio": {"c": 2}}),
            run=tmp_path / "bad",
        )


def test_each_optimiser_step_asks_for_its_own_losses_and_the_trainer_counts_the_steps(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    family.register(monkeypatch)
    cfg = family_config(
        store,
        model={"two_optimizers": True},
        optim={"ratio": {"a": 1, "b": 2}},
        max_epochs=1,
        monitor="metric",
    )
    trainer = Trainer(cfg, tmp_path / "run", device="cpu")
    try:
        trainer.fit()
        calls = trainer.model.calls
    finally:
        trainer.close()
    training = [(step, n) for step, n, is_training in calls if is_training]
    assert training == [(name, n) for n in range(STEPS_PER_EPOCH) for name in ("a", "b", "b")]
    assert {step for step, _, is_training in calls if not is_training} == {None}  # validation: every entry
    valid = [r for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["split"] == "valid"]
    assert {"a", "b", "metric"} <= set(valid[0])


def test_a_misnamed_monitor_fails_at_the_first_step_not_an_epoch_in(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    family.register(monkeypatch)
    cfg = family_config(store, max_epochs=3, monitor="los")
    trainer = Trainer(cfg, tmp_path / "run", device="cpu")
    try:
        with pytest.raises(ConfigError, match=r"train.monitor: the model has no loss 'los'; it has \['loss'"):
            trainer.fit()
        assert trainer.state.step <= 1  # the error came at once (it used to wait for the first validation)
    finally:
        trainer.close()
    assert train(family_config(store, max_steps=2, monitor="loss"), run=tmp_path / "good").last.is_file()


def test_best_checkpoint_is_chosen_only_from_the_models_first_monitored_step_on(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a GAN's pre-training is another model: its validations must not become best.pt
    family.register(monkeypatch)
    first = STEPS_PER_EPOCH * 2 + 1  # the validations after epochs 1 and 2 are before it
    monkeypatch.setattr(family.Model, "first_monitored_step", first, raising=False)
    # every validation scores the same, so without the rule the first one would be best.pt
    result = train(family_config(store, model={"constant_loss": True}, max_epochs=4), run=tmp_path / "run")
    valid = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["split"] == "valid"]
    assert valid == [STEPS_PER_EPOCH * k for k in (1, 2, 3, 4)]
    assert load_checkpoint(result.best)["step"] == STEPS_PER_EPOCH * 3 == result.best_step
    assert result.best_value == 1.0
    assert TrainState.from_checkpoint(load_checkpoint(result.last)).best_step == result.best_step  # kept


def test_plateau_lowers_the_rate_and_early_stopping_ends_the_run(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    family.register(monkeypatch)
    cfg = family_config(store, model={"constant_loss": True}, max_epochs=10)
    cfg.schedule.name, cfg.schedule.patience, cfg.schedule.factor, cfg.schedule.early_stopping = (
        "plateau",
        0,
        0.5,
        2,
    )
    result = train(cfg, run=tmp_path / "run")
    assert (result.stopped, result.epoch, result.best_value) == ("early_stopping", 3, 1.0)
    lrs = {
        r["epoch"]: r["lr"] for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["split"] == "train"
    }
    assert lrs == {1: 0.01, 2: 0.01, 3: 0.005}
    assert load_checkpoint(result.best)["epoch"] == 1
    assert train(cfg, run=tmp_path / "run").stopped == "already finished"


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_is_self_describing_and_loads_weights_only(store: Path, tmp_path: Path) -> None:
    result = train("fft_base-tiny", data=store, run=tmp_path / "run", overrides=[*TINY, "train.max_steps=3"])
    state = torch.load(result.last, map_location="cpu", weights_only=True)
    assert state["model"] == "fft_base" and state["kind"] == "last"
    assert state["config"]["model"]["hidden_size"] == 16 and state["config"]["data"]["store"] == str(store)
    assert state["representation"] == {"name": "fft", "sample_rate": 8000, "block_size": 128}
    assert state["normalization"]["kind"] == "standard" and state["normalization"]["shift"].shape == (256,)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (3, 0, 3)
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"} and set(state["optimizers"]) == {"loss"}
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("model:\n  name: fft_base\n")
    assert (tmp_path / "run" / "plots" / "loss.png").is_file()  # drawn when training stops, even mid-epoch


def test_train_state_round_trips_through_a_checkpoint_and_reads_older_ones() -> None:
    state = TrainState(
        step=12, epoch=1, batch_in_epoch=5, best_value=0.5, n_nonfinite=2, consecutive_nonfinite=1
    )
    state.add({"loss": 1.0, "grad_norm": 3.0})
    state.interval_seconds = 4.0  # wall time: not saved
    saved = state.to_checkpoint()
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == (12, 1, 5)
    assert saved["progress"]["epoch_sums"] == {"loss": 1.0, "grad_norm": 3.0}
    again = TrainState.from_checkpoint(saved)
    assert again == dataclasses.replace(state, interval_seconds=0.0)
    older = {"step": 3, "epoch": 0, "batch_in_epoch": 3, "progress": {"best_value": math.inf, "stopped": ""}}
    assert TrainState.from_checkpoint(older) == TrainState(step=3, batch_in_epoch=3)


def _audio_store(path: Path, encoding: str) -> Path:
    from cadenza.data.store import create_store
    from cadenza.representations import make_representation

    rep = make_representation("waveform", sample_rate=SR, encoding=encoding)
    plan = [("train", 220.0), ("train", 330.0), ("valid", 294.0)]
    items = {
        f"tone{i}": (rep.encode(tone(1.0, f0, seed=i)), split, {"composer": "synth"})
        for i, (split, f0) in enumerate(plan)
    }
    create_store(path, rep, items)
    return path


def _roll_store(path: Path) -> Path:
    from cadenza.data.store import create_store
    from cadenza.representations import make_representation

    rep = make_representation("pianoroll", resolution=4, lowest_pitch=48, n_pitches=24)
    rng = np.random.default_rng(0)
    items = {
        f"piece{i}": ((rng.random((8 * 16, 24)) < 0.1).astype(np.uint8), split, {"composer": "synth"})
        for i, split in enumerate(["train", "train", "valid"])
    }
    create_store(path, rep, items)
    return path


#: One epoch of each family at a size that trains in a second or two.
SAMPLED = {
    "fft_base": (None, ["model.hidden_size=8", "data.seq_len=8", "data.hop=8", "data.batch_size=8"]),
    "seq2seq": ("float", ["model.hidden_size=8", "data.batch_size=8"]),
    "wavenet": (
        "mulaw",
        [
            *(
                "model.n_stacks=1",
                "model.n_layers=3",
                "model.residual_channels=4",
                "model.dilation_channels=4",
            ),
            *("model.skip_channels=8", "model.label_channels=2", "data.batch_size=8"),
            *("data.options.n_input=64", "data.options.n_output=64", "data.options.hop=256"),
        ],
    ),
    "cnn_lstm_gan": (
        "rolls",
        [
            *("model.hidden_size=8", "model.noise_dim=4", "model.n_bars=2", "data.batch_size=4"),
            "data.options={n_bars: 2, hop_bars: 2, resolution: 2, transpose: 0}",
        ],
    ),
}
SAMPLED["bilstm_gan"] = ("rolls", [*SAMPLED["cnn_lstm_gan"][1], "model.step_noise=1"])


@pytest.mark.parametrize("key", sorted(SAMPLED))
def test_sample_every_writes_samples_for_every_family(key: str, store: Path, tmp_path: Path) -> None:
    kind, overrides = SAMPLED[key]
    if kind == "rolls":
        data = _roll_store(tmp_path / "rolls")
    elif kind is not None:
        data = _audio_store(tmp_path / kind, kind)
    else:
        data = store
    common = ["train.max_epochs=1", "train.sample_every=1", "train.sample_seconds=0.25", "train.log_every=1"]
    common += ["train.tensorboard=true", "train.progress=false", "schedule.name=none", "train.max_steps=0"]
    train(f"{key}-tiny", data=data, run=tmp_path / "run", overrides=[*overrides, *common])
    files = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert files and all(name.startswith("epoch00001.") for name in files), files
    assert any(name.endswith((".wav", ".mid")) for name in files)
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_a_gan_resumed_inside_its_pretraining_gives_bitwise_equal_losses(tmp_path: Path) -> None:
    rolls = _roll_store(tmp_path / "rolls")
    overrides = [
        *SAMPLED["bilstm_gan"][1],
        *("model.dropout=0.2", "model.pretrain_steps=4", "train.max_epochs=3", "train.log_every=1"),
        *("train.tensorboard=false", "train.progress=false", "train.sample_every=0"),
    ]
    train("bilstm_gan-tiny", data=rolls, run=tmp_path / "a", overrides=[*overrides, "train.max_steps=8"])
    first = train(
        "bilstm_gan-tiny", data=rolls, run=tmp_path / "b", overrides=[*overrides, "train.max_steps=3"]
    )
    assert first.step == 3
    train("bilstm_gan-tiny", data=rolls, run=tmp_path / "b", overrides=[*overrides, "train.max_steps=8"])
    columns = ("discriminator", "generator", "d_real", "d_fake", "density_gap")
    a, b = losses_of(tmp_path / "a", *columns), losses_of(tmp_path / "b", *columns)
    assert len(a) > 8 and a == b
    assert [row[2] == 0.0 for row in a if row[1] == "train"] == [
        row[0] <= 4 for row in a if row[1] == "train"
    ]


def test_a_store_shorter_than_one_window_names_the_window_length_not_the_batch_size(
    tmp_path: Path,
) -> None:
    from cadenza.data.store import create_store
    from cadenza.representations import make_representation

    # Every piece is 2 bars, shorter than the GAN's 4-bar phrase: no window, whatever the batch.
    rep = make_representation("pianoroll", resolution=4, lowest_pitch=48, n_pitches=24)
    roll = np.zeros((2 * 16, 24), np.uint8)
    roll[::4, 5] = 1
    create_store(tmp_path / "short", rep, {f"p{i}": (roll, "train", {}) for i in range(3)})
    with pytest.raises(CadenzaError, match="no window") as error:
        train(
            "cnn_lstm_gan-tiny",
            data=tmp_path / "short",
            run=tmp_path / "run",
            overrides=["data.batch_size=1"],
        )
    message = str(error.value)
    assert "shorter than one window of 64 frames (the longest has 32)" in message
    assert "data.options.n_bars" in message and "lower data.batch_size" not in message
    # With windows, but fewer than a batch: phrases a bar apart cannot overlap more.
    with pytest.raises(CadenzaError, match="3 windows, fewer than data.batch_size=16") as error:
        train(
            "cnn_lstm_gan-tiny",
            data=tmp_path / "short",
            run=tmp_path / "run",
            overrides=["data.options.n_bars=2"],
        )
    assert "shorten the windows (data.options.n_bars) or prepare" in str(error.value)
    assert "hop_bars" not in str(error.value)


def test_a_store_of_another_representation_is_named_before_its_windows_are_counted(
    store: Path, tmp_path: Path
) -> None:
    # The FFT store has too few windows for mel_rnn-tiny's batch: the representation is what is wrong.
    with pytest.raises(CadenzaError, match=r"model mel_rnn trains on stores with name in \['mel'\]"):
        train("mel_rnn-tiny", data=store, run=tmp_path / "run")
    with pytest.raises(CadenzaError, match="--representation waveform"):  # not AudioWindows' own words
        train("seq2seq-tiny", data=_roll_store(tmp_path / "rolls"), run=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_damaged_last_checkpoint_says_how_to_go_on_and_a_file_is_no_run(
    store: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    overrides = [*TINY, "train.max_epochs=1"]
    train("fft_base-tiny", data=store, run=run, overrides=overrides)
    (run / "checkpoints" / "last.pt").write_bytes(bytes(range(256)) * 4)  # damaged outside cadenza
    with pytest.raises(CheckpointError) as error:
        train("fft_base-tiny", data=store, run=run, overrides=[*TINY, "train.max_epochs=2"])
    message = str(error.value)
    assert "last.pt: not a readable checkpoint" in message and "cannot resume" in message
    assert "--restart (it deletes best.pt too" in message
    assert "weights_only" not in message  # torch's advice to load it unsafely is never the fix
    assert (run / "checkpoints" / "best.pt").is_file()  # nothing deleted
    (tmp_path / "file").write_text("x")
    with pytest.raises(CadenzaError, match="is a file, not a run directory"):  # was a FileExistsError
        train("fft_base-tiny", data=store, run=tmp_path / "file", overrides=overrides)


def test_rng_state_round_trips() -> None:
    state = rng_state()
    first = (random.random(), float(np.random.rand()), torch.rand(3))  # noqa: NPY002
    set_rng_state(state)
    again = (random.random(), float(np.random.rand()), torch.rand(3))  # noqa: NPY002
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "weights": {"w": torch.ones(1000)}})

    def dies_half_way(obj: object, f: object) -> None:
        f.write(b"PK\x03\x04" + b"\0" * 5000)  # a partial zip, as torch.save leaves it when killed
        raise KeyboardInterrupt

    monkeypatch.setattr("cadenza.training.checkpoint.torch.save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2, "weights": {"w": torch.zeros(1000)}})
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["weights"]["w"], torch.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    path = tmp_path / "last.pt"
    script = (
        "import torch, sys\n"
        "from cadenza.training.checkpoint import save_checkpoint\n"
        "step = 0\n"
        "while True:\n"
        "    step += 1\n"
        "    save_checkpoint(sys.argv[1], {'step': step, 'weights': {'w': torch.full((2_000_000,), float(step))}})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not path.exists():
            time.sleep(0.05)
        time.sleep(0.37)  # somewhere in the middle of a later write
    finally:
        proc.kill()
        proc.wait()
    state = load_checkpoint(path)
    assert state["step"] >= 1 and torch.all(state["weights"]["w"] == state["step"])


# ----------------------------------------------------------------------------- data order
def test_batch_order_is_a_function_of_seed_and_epoch_and_splits_across_processes() -> None:
    one = EpochBatchSampler(50, 8, seed=3)
    one.set_epoch(2)
    batches = list(one)
    assert len(batches) == 6 and all(len(b) == 8 for b in batches)  # the short last batch is dropped
    again = EpochBatchSampler(50, 8, seed=3)
    again.set_epoch(2, start_batch=4)
    assert list(again) == batches[4:]
    one.set_epoch(3)
    assert list(one) != batches
    ranks = [EpochBatchSampler(50, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(2)
    for k, (b0, b1) in enumerate(zip(*ranks)):
        assert len(b0) == len(b1) == 4 and sorted(b0 + b1) == sorted(batches[k])
    with pytest.raises(Exception, match="does not split evenly over 3 processes"):
        EpochBatchSampler(50, 8, world_size=3)


def test_a_label_key_no_file_has_is_an_error_when_the_files_have_others(
    store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cadenza.data.store import create_store
    from cadenza.representations import make_representation

    # the store's files are labelled by composer: a typo trained every file as unlabelled
    with pytest.raises(
        ConfigError, match=r"data.label_key='compser': no file of .* has that label; its files have composer"
    ):
        train("fft_base-tiny", data=store, run=tmp_path / "run", overrides=[*TINY, "data.label_key=compser"])
    assert not (tmp_path / "run").exists()
    # a store without any labels (one's own folder): the packaged composer trains unconditioned
    rep = make_representation("fft", sample_rate=SR, block_size=BLOCK)
    plan = [("train", 220.0), ("train", 262.0), ("valid", 294.0)]
    items = {f"t{i}": (rep.encode(tone(2.0, f0, seed=i)), s, {}) for i, (s, f0) in enumerate(plan)}
    create_store(tmp_path / "plain", rep, items)
    overrides = [*TINY, "train.max_epochs=1", "data.label_key=composer"]
    with caplog.at_level("WARNING", logger="cadenza.training.trainer"):
        train("fft_base-tiny", data=tmp_path / "plain", run=tmp_path / "run2", overrides=overrides)
    assert "has the label 'composer' (data.label_key): the model trains unconditioned" in caplog.text


def test_a_store_prepared_again_keeps_the_runs_normalisation_on_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store grown by `cadenza prepare` between two `cadenza train` (more files: other means
    and spreads) fed the resumed weights another scale without a word (seen: 0.72 of a spread on
    ten quartet movements grown from five). The run keeps the normalisation it began with and
    says so; an unchanged store says nothing."""
    import shutil

    from cadenza.data.store import create_store
    from cadenza.representations import make_representation
    from tests.training.conftest import make_store

    store = make_store(tmp_path / "store")
    run = tmp_path / "run"
    overrides = [*TINY, "train.max_epochs=100"]
    train("fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_steps=3"])
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["normalization"]
    with caplog.at_level(logging.WARNING, logger="cadenza.training.trainer"):
        train("fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_steps=5"])
    assert "has changed" not in caplog.text  # the same store: nothing to say

    # prepared again with two louder recordings among the training files
    rep = make_representation("fft", sample_rate=SR, block_size=BLOCK)
    shutil.rmtree(store)
    items = {f"tone{i}": (rep.encode(tone(2.0, 220.0 + 40 * i, seed=i)), "train", {}) for i in range(4)}
    items |= {
        f"loud{i}": (rep.encode(4 * tone(2.0, 500.0 + 50 * i, seed=9 + i)), "train", {}) for i in range(2)
    }
    items |= {
        "v": (rep.encode(tone(2.0, 294.0, seed=7)), "valid", {}),
        "t": (rep.encode(tone(2.0, 349.0, seed=8)), "test", {}),
    }
    create_store(store, rep, items)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cadenza.training.trainer"):
        result = train("fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_steps=8"])
    assert result.step == 8
    assert (
        "has changed since" in caplog.text and "goes on with the normalisation it began with" in caplog.text
    )
    kept = load_checkpoint(result.last)["normalization"]
    assert torch.equal(kept["shift"], saved["shift"]) and torch.equal(kept["scale"], saved["scale"])
    # --restart takes the store's own
    fresh = train(
        "fft_base-tiny", data=store, run=run, overrides=[*overrides, "train.max_steps=2"], restart=True
    )
    assert not torch.equal(load_checkpoint(fresh.last)["normalization"]["scale"], saved["scale"])


def test_a_store_with_new_labels_is_refused_on_resume_with_what_changed(tmp_path: Path) -> None:
    """WaveNet conditioned on composers, its store prepared again with a new composer's files:
    the resume failed in ``load_state_dict`` ("size mismatch for label_embedding.weight") with a
    traceback. It is refused with the labels that changed and what to do."""
    from cadenza.data.store import create_store
    from cadenza.representations import make_representation

    rep = make_representation("waveform", sample_rate=SR, encoding="mulaw")

    def make(path: Path, composers: list[str]) -> Path:
        items = {}
        for i, c in enumerate(composers * 2):
            split = "train" if i < len(composers) else ("valid" if i % 2 else "test")
            items[f"{c}{i}"] = (rep.encode(tone(1.0, 220.0 + 30 * i, seed=i)), split, {"composer": c})
        create_store(path, rep, items)
        return path

    import shutil

    store, run = make(tmp_path / "store", ["bach"]), tmp_path / "run"
    tiny = [
        "train.tensorboard=false",
        "train.progress=false",
        "train.sample_every=0",
        "data.label_key=composer",
    ]
    train("wavenet-tiny", data=store, run=run, overrides=[*tiny, "train.max_steps=2"])
    shutil.rmtree(store)
    make(store, ["bach", "mozart"])
    with pytest.raises(
        ConfigError, match=r"other composer labels than .* was trained on \(bach; new: mozart\).*--restart"
    ):
        train("wavenet-tiny", data=store, run=run, overrides=[*tiny, "train.max_steps=4"])
    assert (
        train("wavenet-tiny", data=store, run=run, overrides=[*tiny, "train.max_steps=2"], restart=True).step
        == 2
    )


# ----------------------------------------------------------------------------- one writer a run
def _hold(folder: Path, name: str):
    """Another process that takes ``folder`` as a cadenza would (its id in the lock file) and
    keeps it until killed."""
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from cadenza._fs import lock_folder\n"
        "lock = lock_folder(sys.argv[1], sys.argv[2], lambda pid: RuntimeError(pid))\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), name], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_run_being_trained_by_another_process_is_refused_not_written_over(
    store: Path, tmp_path: Path
) -> None:
    """Two trainings of one run (the same command in a second terminal) wrote their checkpoints
    over each other's, each resuming from the other's; the second is refused, naming the first."""
    from cadenza.errors import BusyError

    run = tmp_path / "run"
    run.mkdir()
    holder = _hold(run, ".train.lock")
    try:
        with pytest.raises(BusyError, match=rf"{run} is being trained now by process {holder.pid} "):
            train("fft_base-tiny", data=store, run=run, overrides=[*TINY, "train.max_epochs=1"])
        assert not (run / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed: the kernel let its lock go): the run trains, twice in a row
    first = train("fft_base-tiny", data=store, run=run, overrides=[*TINY, "train.max_epochs=1"])
    again = train("fft_base-tiny", data=store, run=run, overrides=[*TINY, "train.max_epochs=2"])
    assert (first.step, again.step) == (STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)


def test_damaged_training_data_is_named_and_does_not_starve_the_learning_rate(
    store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A shard damaged on disk (NaN in its frames) made the guard halve the learning rate at every
    draw of its window, blaming the model: 1e-3 fell to 1e-6 in 60 steps. The step is skipped with
    the rate kept, and the shard named once with what to do."""
    import shutil

    from cadenza.data import FeatureStore

    damaged = tmp_path / "store"
    shutil.copytree(store, damaged)
    first = FeatureStore(damaged).ids("train")[0]
    frames = np.load(damaged / "shards" / f"{first}.npy", mmap_mode="r+")
    frames[3, :5] = np.nan
    frames.flush()
    del frames
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="cadenza.training.guard"):
        result = train("fft_base-tiny", data=damaged, run=run, overrides=[*TINY, "train.max_epochs=4"])
    assert result.stopped == "finished" and result.step == 4 * STEPS_PER_EPOCH  # never "diverged"
    told = [r.getMessage() for r in caplog.records if "training data holds NaN" in r.getMessage()]
    assert len(told) == 1 and f"{first}.npy (frames 0-9)" in told[0] and "cadenza prepare" in told[0]
    rates = {r["lr"] for r in read_metrics(run / "metrics.csv") if r["split"] == "train"}
    assert len(rates) == 1  # the constant rate of the config, never lowered
    nonfinite = [r["n_nonfinite"] for r in read_metrics(run / "metrics.csv") if r["split"] == "train"]
    assert (
        max(float(x or 0) for x in nonfinite) >= 3
    )  # skipped at each draw (the last maybe after the last log)


def test_damaged_validation_data_is_left_out_of_the_loss_not_the_run(
    store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One NaN in a validation shard made every validation loss NaN: early stopping ended the
    run after its patience, with no best.pt. The damaged windows are left out of the mean."""
    import shutil

    from cadenza.data import FeatureStore

    damaged = tmp_path / "store"
    shutil.copytree(store, damaged)
    valid = FeatureStore(damaged).ids("valid")[0]
    frames = np.load(damaged / "shards" / f"{valid}.npy", mmap_mode="r+")
    frames[2, 0] = np.inf
    frames.flush()
    del frames
    run = tmp_path / "run"
    overrides = [*TINY, "train.max_epochs=3", "schedule.early_stopping=1"]
    with caplog.at_level(logging.WARNING, logger="cadenza.training.guard"):
        result = train("fft_base-tiny", data=damaged, run=run, overrides=overrides)
    assert result.stopped != "early_stopping" and (run / "checkpoints" / "best.pt").is_file()
    losses = [float(r["loss"]) for r in read_metrics(run / "metrics.csv") if r["split"] == "valid"]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    told = [r.getMessage() for r in caplog.records if "holds NaN or infinite" in r.getMessage()]
    assert len(told) == 1 and "'valid' data" in told[0] and f"{valid}.npy" in told[0]


def test_the_epoch_of_the_last_step_is_counted_as_the_logs_count_it(store: Path, tmp_path: Path) -> None:
    """A run stopped by max_steps inside its second epoch said "epoch 1" (epochs completed) where
    its warnings, progress and metrics.csv said 2."""
    run = tmp_path / "run"
    inside = train("fft_base-tiny", data=store, run=run, overrides=[*TINY, "train.max_steps=10"])
    rows = [r for r in read_metrics(run / "metrics.csv") if r["split"] == "train"]
    assert (inside.step, inside.epoch, inside.last_epoch) == (10, 1, 2) and int(rows[-1]["epoch"]) == 2
    done = train("fft_base-tiny", data=store, run=tmp_path / "b", overrides=[*TINY, "train.max_epochs=1"])
    assert (done.step, done.epoch, done.last_epoch) == (STEPS_PER_EPOCH, 1, 1)


def test_a_moved_run_finds_its_store_beside_it(store: Path, tmp_path: Path) -> None:
    """A study folder renamed (or copied to another machine) kept its runs' old store paths:
    generation took no seed from the store and a mel RNN, seeded from quiet noise, wrote silence."""
    import shutil

    from cadenza.generation.generator import load_generator

    project = tmp_path / "study"
    shutil.copytree(store, project / "data" / "fft-16k")
    shutil.copytree(store, project / "data" / "other")
    meta = (project / "data" / "other" / "meta.yaml").read_text().replace("block_size:", "block_size: 1 #")
    (project / "data" / "other" / "meta.yaml").write_text(meta)  # another representation: not taken
    train(
        "fft_base-tiny",
        data=project / "data" / "fft-16k",
        run=project / "runs" / "fft_base",
        overrides=[*TINY, "train.max_steps=2"],
    )
    moved = tmp_path / "renamed"
    project.rename(moved)
    gen = load_generator(moved / "runs" / "fft_base")
    assert gen.config.data.store == str(moved / "data" / "fft-16k")
    shutil.rmtree(moved / "data" / "fft-16k")
    (moved / "data" / "other").rename(moved / "data" / "fft-16k")  # the same name, another store
    assert load_generator(moved / "runs" / "fft_base").config.data.store == str(project / "data" / "fft-16k")
