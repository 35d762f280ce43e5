"""Experiment configs: packaged files, typed overrides, and one clear error for each mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from cadenza.cli import main
from cadenza.errors import ParameterError
from cadenza.models import MODELS, DataInfo, get_model_spec
from cadenza.representations import make_representation
from cadenza.training.config import (
    ConfigError,
    ExperimentConfig,
    _plain,
    build_config,
    load_config,
    packaged_configs,
    resolve_config_path,
)


def _data_info(cfg: ExperimentConfig) -> DataInfo:
    """A DataInfo of the kind the config's dataset gives, small but with the facts each family reads."""
    spec = get_model_spec(cfg.model_name)
    dataset = cfg.data.dataset or spec.dataset
    if dataset == "phrases":
        rep = make_representation("pianoroll", lowest_pitch=24, n_pitches=84)
        n_bars = int(cfg.data.options.get("n_bars", 4))
        resolution = int(cfg.data.options.get("resolution") or rep.resolution)
        window = {
            "n_bars": n_bars,
            "resolution": resolution,
            "resolution_factor": rep.resolution // resolution,
            "steps_per_bar": rep.beats_per_bar * resolution,
        }
        steps = n_bars * rep.beats_per_bar * resolution
        return DataInfo(
            n_features=84,
            seq_len=steps,
            representation=rep.to_dict(),
            frame_rate=rep.frame_rate,
            window=window,
        )
    if dataset == "audio":
        encoding = "mulaw" if cfg.model_name == "wavenet" else "float"
        rep = make_representation("waveform", encoding=encoding, sample_rate=8000)
        labels = ("bach", "corelli") if cfg.data.label_key else ()
        return DataInfo(n_features=1, representation=rep.to_dict(), frame_rate=rep.frame_rate, labels=labels)
    return DataInfo(n_features=16, seq_len=3)  # 8 frequencies: enough for fft_conv1d's conv_pool


def test_every_packaged_config_loads_and_builds_its_model() -> None:
    names = packaged_configs()
    assert {"fft_base-paper", "fft_base-tiny"} <= set(names)
    assert {name.rsplit("-", 1)[0] for name in names if name.endswith(("-paper", "-tiny"))} >= set(MODELS)
    sizes = {}
    for name in names:
        cfg = load_config(name)  # every field checked against its type
        assert cfg.model_name in MODELS, name
        assert name == f"{cfg.model_name}-{cfg.model_preset}"
        with torch.device("meta"):  # paper sizes too, without allocating their weights
            model = get_model_spec(cfg.model_name).build(cfg.model, _data_info(cfg))
        sizes[name] = sum(p.numel() for p in model.parameters())
    for key in MODELS:
        assert 0 < sizes[f"{key}-tiny"] < sizes[f"{key}-paper"], key


def test_tiny_configs_hold_only_what_differs_from_the_preset() -> None:
    for name in packaged_configs():
        if not name.endswith("-tiny"):
            continue
        raw = yaml.safe_load(resolve_config_path(name).read_text())["model"]
        preset = get_model_spec(raw["name"]).preset("tiny")
        restated = [
            k for k, v in raw.items() if k not in ("name", "preset") and _plain(getattr(preset, k)) == v
        ]
        assert restated == [], f"{name} restates the tiny preset's {restated}"


def test_paper_config_has_the_papers_values() -> None:
    cfg = load_config("fft_base-paper")
    assert (cfg.model.hidden_size, cfg.model.dropout, cfg.data.seq_len) == (2048, 0.5, 40)
    assert (cfg.optim.name, cfg.optim.lr) == ("rmsprop", 1e-4)


def test_config_found_by_name_path_and_configs_folder(tmp_path: Path) -> None:
    packaged = resolve_config_path("fft_base-tiny")
    assert packaged.name == "fft_base-tiny.yaml" and packaged.is_file()
    assert resolve_config_path("configs/fft_base-tiny.yaml") == packaged
    assert resolve_config_path("fft_base-tiny.yaml") == packaged
    own = tmp_path / "mine.yaml"
    own.write_text("model:\n  name: fft_base\n  preset: tiny\ntrain:\n  max_epochs: 3\n")
    cfg = load_config(own)
    assert cfg.train.max_epochs == 3 and cfg.model.hidden_size == 128  # the tiny preset fills the rest
    with pytest.raises(ConfigError, match="fft_base-paper, fft_base-tiny"):
        resolve_config_path("no-such-config")


def test_overrides_are_read_by_field_type() -> None:
    cfg = load_config(
        "fft_base-tiny",
        [
            "model.hidden_size=512",
            "optim.lr=3e-4",
            "train.max_epochs=50",
            "train.tensorboard=no",
            "data.hop=null",
            "data.label_key=007",
            "optim.betas=[0.5, 0.9]",
            "optim.ratio.generator=2",
        ],
    )
    assert cfg.model.hidden_size == 512 and cfg.optim.lr == 3e-4 and cfg.train.max_epochs == 50
    assert cfg.train.tensorboard is False and cfg.data.hop is None and cfg.data.label_key == "007"
    assert cfg.optim.betas == (0.5, 0.9) and cfg.optim.ratio == {"generator": 2}
    assert load_config("seq2seq-tiny", ["data.options.scheme=shift"]).data.options == {"scheme": "shift"}
    assert load_config("bilstm_gan-tiny", ["data.options.n_bars=2"]).data.options["n_bars"] == 2


@pytest.mark.parametrize(
    ("config", "override", "expected"),
    [
        ("fft_base-tiny", "data.options.scheme=shift", "unknown key 'scheme' in section 'data.options'"),
        (
            "seq2seq-tiny",
            "data.options.scheme=bogus",
            "data.options.scheme: 'bogus' is not one of split, shift",
        ),
        ("bilstm_gan-tiny", "data.options.n_bars=zero", "data.options.n_bars: expected"),
        ("bilstm_gan-tiny", "data.options.n_bars=0", "data.options.n_bars: 0 is below the minimum 1"),
    ],
)
def test_dataset_options_are_typed_by_the_dataset(config: str, override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(config, [override])


def test_resolved_config_round_trips() -> None:
    cfg = load_config("fft_base-tiny", ["optim.lr=0.01", "optim.ratio.loss=1"])
    again = build_config(cfg.to_dict())
    assert again == cfg
    assert ExperimentConfig.from_dict(cfg.to_dict()).to_yaml() == cfg.to_yaml()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "model.hiden_size=512",
            r"'model.hiden_size=512'.*unknown key 'hiden_size' in section 'model'; valid keys: arch, .*hidden_size",
        ),
        (
            "optim.learning_rate=1",
            r"unknown key 'learning_rate' in section 'optim'; valid keys: alpha, betas, eps, groups, lr",
        ),
        (
            "trian.max_epochs=5",
            r"unknown section 'trian'; valid sections: model, data, optim, schedule, train",
        ),
        ("optim.lr=fast", r"'optim.lr=fast': optim.lr: expected float, got 'fast'"),
        ("train.max_epochs=2.5", r"train.max_epochs: expected int, got '2.5'"),
        ("data.seq_len=0", r"data.seq_len: 0 is below the minimum 1"),
        ("optim.name=adamax", r"optim.name: 'adamax' is not one of rmsprop, adam, adamw, sgd"),
        ("train.progress=perhaps", r"train.progress: expected bool"),
        ("optim.betas=[0.9]", r"optim.betas: expected 2 values"),
        ("optim.ratio.generator=often", r"optim.ratio.generator: expected int"),
        ("train.seed.x=1", r"train.seed is a single value \(int\), not a mapping"),
        ("lr=0.1", r"expected SECTION.KEY=VALUE"),
        ("model.name=wavenet9", r"unknown model 'wavenet9'; expected one of \[.*'fft_base'"),
        # NaN passes every range check (torch's optimiser then raised a traceback), inf trained on
        ("optim.lr=nan", r"optim.lr: expected a finite number, got 'nan'"),
        ("optim.lr=inf", r"optim.lr: expected a finite number, got 'inf'"),
    ],
)
def test_bad_override_gives_one_clear_error(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config("fft_base-tiny", [override])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "model:\n  name: fft_base\n  hidden: 3\n",
            r"bad.yaml: unknown key 'hidden' in section 'model'; valid keys: .*hidden_size",
        ),
        ("model:\n  name: fft_base\ntrainer:\n  max_epochs: 3\n", r"bad.yaml: unknown section 'trainer'"),
        (
            "model:\n  name: fft_base\ndata:\n  batch_size: many\n",
            r"bad.yaml: data.batch_size: expected int, got 'many'",
        ),
        ("model:\n  name: fft_base\n  arch: fc\n", r"model.arch.*(fixed|not one of)"),
        ("model:\n  preset: tiny\n", r"must name the model \(model.name\)"),
        ("model:\n  name: fft_base\n  preset: huge\n", r"model.preset: 'huge' is not one of paper, tiny"),
        ("model: [fft_base\n", r"bad.yaml: not valid YAML \(line 2"),
        ("model:\n  name: fft_base\noptim: 3\n", r"section 'optim' must be a mapping"),
        ("model:\n  name: fft_base\noptim:\n  groups: {b: {lr: slow}}\n", None),
        # not a mapping of sections: a word, a list (an AttributeError traceback before)
        ("fft_base-tiny\n", r"bad.yaml: not a config: it holds a str, where a config is a mapping"),
        ("- model\n- data\n", r"bad.yaml: not a config: it holds a list"),
        ("model:\n  name: fft_base\n  dropout: .nan\n", r"model.dropout: expected a finite number"),
    ],
)
def test_bad_config_file_gives_one_clear_error(tmp_path: Path, text: str, expected: str | None) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    if expected is None:  # per-optimiser groups are checked when the optimiser is built
        from cadenza.training.optim import optim_for

        with pytest.raises(ConfigError, match=r"optim.groups.b.lr: expected float"):
            optim_for(load_config(path).optim, "b")
        return
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_cli_reports_a_bad_override_in_one_line(
    capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path
) -> None:
    code = main(
        ["train", "fft_base-tiny", "--data", str(store), "--run", str(tmp_path / "r"), "model.hidden_sise=3"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "unknown key 'hidden_sise'" in err[0] and "hidden_size" in err[0]
    assert not (tmp_path / "r").exists()  # nothing started
    # --set, as cadenza study takes it, is read the same way
    code = main(
        ["train", "fft_base-tiny", "--data", str(store), "--run", str(tmp_path / "r"), "--set", "optim.lr=-1"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "optim.lr" in err[0], err
    assert not (tmp_path / "r").exists()
    sets = ["--set", "train.max_steps=2", "--set", "train.tensorboard=false", "--no-progress"]
    assert main(["train", "fft_base-tiny", "--data", str(store), "--run", str(tmp_path / "r"), *sets]) == 0
    assert "at step 2," in capsys.readouterr().out


def test_every_optimiser_and_schedule_a_config_may_name_is_built() -> None:
    from cadenza.training.config import OPTIMIZERS, SCHEDULES
    from cadenza.training.optim import OPTIMIZER_BUILDERS, SCHEDULE_BUILDERS, build_optimizer, build_scheduler

    assert set(OPTIMIZERS) == set(OPTIMIZER_BUILDERS) and set(SCHEDULES) == set(SCHEDULE_BUILDERS)
    params = [torch.nn.Parameter(torch.zeros(3))]
    for name in OPTIMIZERS:
        cfg = load_config("fft_base-tiny", [f"optim.name={name}"])
        opt = build_optimizer(params, cfg.optim)
        assert opt.param_groups[0]["lr"] == cfg.optim.lr
        for schedule in SCHEDULES:
            cfg = load_config("fft_base-tiny", [f"schedule.name={schedule}"])
            built = build_scheduler(opt, cfg.schedule, cfg.train)
            assert (built is None) == (schedule == "none")


@pytest.mark.parametrize(
    ("model", "rep", "expected"),
    [
        ("seq2seq", {"name": "waveform", "encoding": "mulaw"}, "encoding in ['float']"),
        ("wavenet", {"name": "fft"}, "--representation waveform --param encoding=mulaw"),
        ("bilstm_gan", {"name": "waveform"}, "name in ['pianoroll']"),
        # a frame read as N real parts then N imaginary parts: mel bands trained on silently before
        ("fft_conv1d", {"name": "mel"}, "name in ['fft']"),
        ("fft_conv2d", {"name": "mfcc"}, "--representation fft"),
    ],
)
def test_what_a_family_needs_of_the_data_is_checked_in_one_place(
    model: str, rep: dict, expected: str
) -> None:
    spec = get_model_spec(model)
    info = DataInfo(n_features=1, seq_len=16, representation=rep)
    with pytest.raises(ParameterError, match=re.escape(expected)):
        spec.build(spec.preset("tiny"), info)


@pytest.mark.parametrize("name", ["step", "exponential", "cosine"])
def test_a_schedule_spread_over_a_budget_gives_torchs_lr_at_whole_epochs(name: str) -> None:
    """``schedule.span_epochs`` under a budget: at the budget's fraction k / span, the lr torch's
    own scheduler gives after k epochs (and between them, the same curve continued)."""
    from cadenza.training.optim import SCHEDULE_BUILDERS, budget_lr, budget_span

    span = 6
    cfg = load_config(
        "fft_base-tiny",
        [f"schedule.name={name}", f"schedule.span_epochs={span}", "schedule.step_size=2", "schedule.gamma=0.7",
         "schedule.factor=0.5", "schedule.min_lr=1e-5", f"train.max_epochs={span}", "train.max_seconds=60"],
    )  # fmt: skip
    assert budget_span(cfg.schedule, cfg.train) == span
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    reference = SCHEDULE_BUILDERS[name](opt, cfg.schedule, cfg.train)
    for k in range(span + 1):
        assert budget_lr(cfg.schedule, 0.1, k / span, span) == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-9
        )
        opt.step()
        reference.step()
    halfway = budget_lr(cfg.schedule, 0.1, 2.5 / span, span)
    assert (
        budget_lr(cfg.schedule, 0.1, 3 / span, span)
        <= halfway
        <= budget_lr(cfg.schedule, 0.1, 2 / span, span)
    )
    # without a budget, or for a plateau schedule, the schedule counts epochs as before
    no_budget = load_config("fft_base-tiny", [f"schedule.name={name}", "schedule.span_epochs=6"])
    assert budget_span(no_budget.schedule, no_budget.train) == 0
    plateau = load_config("fft_base-tiny", ["schedule.span_epochs=6", "train.max_seconds=60"])
    assert plateau.schedule.name == "plateau" and budget_span(plateau.schedule, plateau.train) == 0


def test_a_cuda_device_that_is_not_there_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from cadenza.errors import ParameterError
    from cadenza.training.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    for bad in ("cuda:x", "cuda:2", "cuda:-1", "cuda:"):  # was a ValueError from int(), or a later crash
        with pytest.raises(ParameterError, match=f"--device {bad}: this machine has GPUs cuda:0 to cuda:1"):
            resolve_device(bad)
