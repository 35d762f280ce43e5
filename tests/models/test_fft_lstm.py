"""The frequency-domain LSTMs of paper 000: shapes, learning, both generation modes, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cadenza.cli import main
from cadenza.errors import ParameterError
from cadenza.models import DataInfo, GenerationRequest, get_model_spec
from cadenza.models.fft_lstm import ARCHS, Config, Model
from cadenza.training import load_checkpoint
from cadenza.training.config import load_config
from cadenza.training.logs import read_metrics
from cadenza.training.optim import build_optimizer
from tests.evaluation.helpers import assert_evaluates
from tests.training.conftest import SR, TINY, make_store

torch.set_num_threads(1)

KEYS = [f"fft_{arch}" for arch in ARCHS]
NEW_KEYS = [k for k in KEYS if k != "fft_base"]
N_FEATURES, SEQ_LEN = 32, 6


def tiny_model(key: str, *, n_features: int = N_FEATURES, seq_len: int = SEQ_LEN, **changes) -> Model:
    changes = {"hidden_size": 12, "dropout": 0.0, "fc_dropout": 0.0, "cnn_channels": (2, 3), **changes}
    config = get_model_spec(key).preset("tiny")
    for name, value in changes.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    return get_model_spec(key).build(config, DataInfo(n_features=n_features, seq_len=seq_len))


def generate(model: Model, seed: torch.Tensor, n_frames: int, **options) -> torch.Tensor:
    request = GenerationRequest(
        n=seed.shape[0], n_frames=n_frames, generator=torch.Generator(), seed=seed, options=options
    )
    return model.eval().generate(request)


@pytest.mark.parametrize("key", KEYS)
def test_forward_gives_one_prediction_per_frame(key: str) -> None:
    model = tiny_model(key)
    y, _ = model(torch.randn(3, SEQ_LEN, N_FEATURES))
    assert y.shape == (3, SEQ_LEN, N_FEATURES)
    assert model.n_seed_frames == SEQ_LEN + (2 if key == "fft_conv2d" else 0)


@pytest.mark.parametrize("key", KEYS)
def test_loss_decreases_on_one_batch(key: str) -> None:
    model = tiny_model(key).train()
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(4, SEQ_LEN + 1, N_FEATURES, generator=g).cumsum(1) * 0.3  # smooth in time
    batch = {"x": frames[:, :-1], "y": frames[:, 1:]}
    opt = build_optimizer(model.parameters(), load_config(f"{key}-tiny", ["optim.lr=3e-3"]).optim)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = model.losses(batch)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses[::5]


@pytest.mark.parametrize("key", KEYS)
def test_both_modes_generate_n_frames_and_match_a_plain_forward(key: str) -> None:
    model = tiny_model(key).double().eval()
    seed = torch.randn(2, model.n_seed_frames, N_FEATURES, dtype=torch.double)
    n_frames = 9
    sliding = generate(model, seed, n_frames)
    stateful = generate(model, seed, n_frames, mode="stateful")
    assert sliding.shape == stateful.shape == (2, n_frames, N_FEATURES)
    # Sliding window, the plain way: the whole model over the last T (+ K - 1) frames, per frame.
    window, expected = seed, []
    for _ in range(n_frames):
        y, _ = model(window, n_context=model.n_context)
        expected.append(y[:, -1])
        window = torch.cat([window[:, 1:], y[:, -1:]], 1)
    torch.testing.assert_close(sliding, torch.stack(expected, 1))
    # Stateful: the model over seed + generated frames at once predicts the generated frames.
    y, _ = model(torch.cat([seed, stateful[:, :-1]], 1), n_context=model.n_context)
    torch.testing.assert_close(stateful, y[:, -n_frames:])
    # Both read the same seed first; afterwards sliding forgets what left the window.
    torch.testing.assert_close(sliding[:, 0], stateful[:, 0])
    assert not torch.allclose(sliding[:, -1], stateful[:, -1])


def test_generation_options_and_seed_are_checked() -> None:
    model = tiny_model("fft_bilinear")
    seed = torch.randn(1, SEQ_LEN, N_FEATURES)
    with pytest.raises(ParameterError, match="mode='loop' is not one of sliding, stateful"):
        generate(model, seed, 2, mode="loop")
    with pytest.raises(ParameterError, match="options mode and dropout"):
        generate(model, seed, 2, temperature=1.0)
    for bad in ("sometimes", 1.0, -0.1):
        with pytest.raises(ParameterError, match=r"is not on, off or a rate in \[0, 1\)"):
            generate(model, seed, 2, dropout=bad)


@pytest.mark.parametrize("key", ["fft_base", "fft_bilinear"])
def test_generation_keeps_the_training_dropout_on_unless_told_off(key: str) -> None:
    """Dropout on at generation draws each frame (against the fixed point a plain regressor falls
    into); off is the paper's deterministic model."""
    model = tiny_model(key, dropout=0.3, fc_dropout=0.2).double().eval()
    seed = torch.randn(2, model.n_seed_frames, N_FEATURES, dtype=torch.double)
    off = generate(model, seed, 6, dropout=False)
    torch.testing.assert_close(off, generate(model, seed, 6, dropout="off"))
    torch.testing.assert_close(off, generate(model, seed, 6, dropout=0.0))
    torch.manual_seed(3)
    on = generate(model, seed, 6)
    torch.manual_seed(3)
    torch.testing.assert_close(on, generate(model, seed, 6, dropout="on"))  # reproducible from the seed
    assert not torch.allclose(on, off)
    assert not torch.allclose(on, generate(model, seed, 6))  # a new draw
    torch.manual_seed(3)
    assert not torch.allclose(on, generate(model, seed, 6, dropout=0.6))  # a rate of its own
    assert not model.training  # the model's own modules stay in evaluation
    with pytest.raises(ParameterError, match=r"\(n, 6, F\) seed frames"):
        generate(model, seed[:, :3], 2)


#: ``state_dict`` keys as of the commit before the kernels moved out (8e0acde): checkpoints
#: saved before must keep loading.
STATE_DICT_KEYS = {
    "base": ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0", "head.weight", "head.bias"],
    "fc": ["encoder.0.weight", "encoder.0.bias", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0",
           "lstm.bias_hh_l0", "head.weight", "head.bias"],
    "conv1d": ["encoder.conv.weight", "encoder.conv.bias", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
               "lstm.bias_ih_l0", "lstm.bias_hh_l0", "head.weight", "head.bias"],
    "conv2d": ["encoder.0.cnn.0.weight", "encoder.0.cnn.0.bias", "encoder.0.cnn.3.weight", "encoder.0.cnn.3.bias",
               "encoder.0.dense.weight", "encoder.0.dense.bias", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
               "lstm.bias_ih_l0", "lstm.bias_hh_l0", "head.weight", "head.bias"],
    "bilinear": ["encoder.0.weight", "encoder.0.bias", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0",
                 "lstm.bias_hh_l0", "lstm2.weight_ih_l0", "lstm2.weight_hh_l0", "lstm2.bias_ih_l0",
                 "lstm2.bias_hh_l0", "head.weight", "head.bias"],
    "stacked": ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0", "lstm.weight_ih_l1",
                "lstm.weight_hh_l1", "lstm.bias_ih_l1", "lstm.bias_hh_l1", "head.weight", "head.bias"],
}  # fmt: skip


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_weight_names_are_unchanged(arch: str) -> None:
    model = Model(Config.tiny(arch=arch), DataInfo(n_features=16, seq_len=4))
    assert list(model.state_dict()) == STATE_DICT_KEYS[arch]


def test_conv2d_stacks_hold_the_previous_k_frames() -> None:
    """A change to frame t reaches the LSTM inputs t..t+K-1 through the stacks, no others."""
    model = tiny_model("fft_conv2d", k_blocks=3).double().eval()
    x = torch.randn(1, SEQ_LEN, N_FEATURES, dtype=torch.double)
    x2 = x.clone()
    x2[0, 2] += 1.0
    changed = (model.encode(x) - model.encode(x2)).abs().amax(-1)[0] > 1e-12
    assert changed.tolist() == [False, False, True, True, True, False]
    # With two frames of real context the first stack reads them instead of zeros.
    assert model.encode(x, n_context=2).shape == (1, SEQ_LEN - 2, model.lstm.input_size)


@pytest.mark.parametrize("n_features", [64, 2 * 60])  # frequencies a multiple of the pooling, and ragged
def test_conv2d_channels_last_is_the_nchw_function(n_features: int) -> None:
    """The CNN built in channels-last memory (the default) computes NCHW's outputs and gradients."""
    from cadenza.models.fft_lstm import StackCNN

    torch.manual_seed(0)
    cnn = StackCNN(n_features, 3, (2, 4), 8, 16).double()
    x = torch.randn(3, 12, n_features, dtype=torch.double, requires_grad=True)
    results = []
    for channels_last in (False, True):
        cnn.channels_last = channels_last
        x.grad = None
        cnn.zero_grad()
        y = cnn(x)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.double).view_as(y)).sum().backward()
        results.append((y.detach().clone(), x.grad.clone(), cnn.cnn[0].weight.grad.clone()))
    assert results[0][0].shape == (3, 10, 16) and results[0][0].abs().sum() > 0
    for nchw, nhwc in zip(*results):
        torch.testing.assert_close(nhwc, nchw, rtol=1e-10, atol=1e-12)


def test_conv2d_cpu_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/fft_conv2d_cpu.py at the tiny size: both layouts timed, the same first loss."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "conv2d.json"
    cmd = [sys.executable, str(root / "benchmarks" / "fft_conv2d_cpu.py"), "--presets", "tiny"]
    cmd += ["--steps", "1", "--repeats", "1", "--batch-size", "2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["preset"] == "tiny" and row["cnn_channels"] == [2, 4]
    assert row["first_loss_rel_diff"] < 1e-5 and row["speedup_channels_last"] > 0


def test_paper_presets_have_the_papers_values() -> None:
    for key in NEW_KEYS:
        cfg = load_config(f"{key}-paper")
        assert (cfg.model.hidden_size, cfg.model.dropout, cfg.data.seq_len) == (2048, 0.5, 40)
        assert (cfg.optim.name, cfg.optim.lr, cfg.data.batch_size) == ("rmsprop", 1e-4, 16)
    assert load_config("fft_stacked-paper").model.n_layers == 2
    assert load_config("fft_fc-paper").optim.weight_decay == 1e-4
    conv1d = load_config("fft_conv1d-paper").model
    assert (conv1d.conv_filters, conv1d.conv_kernel, conv1d.conv_pool) == (12, 3, 2)
    assert load_config("fft_conv2d-paper").model.k_blocks == 3


@pytest.mark.parametrize("key", KEYS)
def test_one_training_step_at_paper_size(key: str) -> None:
    """The paper's model (8000 features, hidden 2048) builds and takes a step on B = 2, T = 4."""
    cfg = load_config(f"{key}-paper")
    torch.manual_seed(0)
    model = get_model_spec(key).build(cfg.model, DataInfo(n_features=8000, seq_len=4))
    opt = build_optimizer(model.parameters(), cfg.optim)
    frames = torch.randn(2, 5, 8000)
    loss = model.losses({"x": frames[:, :-1], "y": frames[:, 1:]})["loss"]
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    out = generate(model, torch.randn(1, model.n_seed_frames, 8000), 2, mode="sliding")
    assert out.shape == (1, 2, 8000) and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("fft-lstm") / "store")


@pytest.mark.parametrize("key", NEW_KEYS)
def test_cli_trains_resumes_and_generates(key: str, store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        f"{key}-tiny",
        "--data",
        str(store),
        "--run",
        str(run),
        *TINY,
        "model.cnn_channels=[2,4]",
    ]
    assert main([*args, "train.max_steps=3"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert main([*args, "train.max_steps=5"]) == 0  # the same command resumes
    assert [r["step"] for r in read_metrics(run / "metrics.csv") if r["split"] == "train"] == [1, 2, 3, 4, 5]
    for mode in ("sliding", "stateful"):
        out = tmp_path / mode
        assert (
            main(
                [
                    "generate",
                    str(run),
                    "--seconds",
                    "0.5",
                    "--n",
                    "2",
                    "--option",
                    f"mode={mode}",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        wavs = sorted(out.glob("*.wav"))
        assert len(wavs) == 2
        y, sr = sf.read(wavs[0])
        assert sr == SR and y.shape == (SR // 2,) and np.isfinite(y).all()
        meta = json.loads(wavs[0].with_suffix(".json").read_text())
        assert meta["options"] == {"mode": mode} and meta["model"] == key
    assert_evaluates(run, store, tmp_path / "eval", seconds=1.0)
