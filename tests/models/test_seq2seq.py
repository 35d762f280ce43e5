"""Seq2Seq on raw samples (paper 002): teacher forcing, both windowings, generation, the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from cadenza.cli import main
from cadenza.data.windows import AudioWindows
from cadenza.errors import ParameterError
from cadenza.evaluation.detectors import silent_fraction
from cadenza.models import DataInfo, GenerationRequest, get_model_spec
from cadenza.models.seq2seq import Config, Model
from cadenza.training import load_checkpoint
from tests.evaluation.helpers import assert_evaluates
from tests.models.test_wavenet import SR, make_audio_store

torch.set_num_threads(1)

FLOAT = {"name": "waveform", "encoding": "float", "sample_rate": SR}
TINY = [
    "model.hidden_size=16",
    "data.batch_size=16",
    "train.log_every=5",
    "train.save_every_steps=0",
    "train.sample_every=0",
    "train.tensorboard=false",
    "train.progress=false",
]


def tiny_model(**changes: object) -> Model:
    """The paper's regressor unless ``head`` says otherwise: its predictions are deterministic."""
    torch.manual_seed(0)
    changes = {"head": "mse", **changes}
    return Model(Config.tiny(hidden_size=16, **changes), DataInfo(n_features=1, representation=FLOAT))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_audio_store(tmp_path_factory.mktemp("seq2seq") / "m21-float", "float")


def test_shapes_and_teacher_forcing() -> None:
    model = tiny_model()
    x, y = torch.randn(3, 128), torch.randn(3, 128)
    assert model(x, y).shape == (3, 128)
    inputs = model.decoder_inputs(y)
    assert inputs.shape == (3, 128, 2)
    assert torch.equal(inputs[:, 0], torch.tensor([[0.0, 1.0]] * 3))  # the start token
    assert torch.equal(inputs[:, 1:, 0], y[:, :-1]) and not inputs[:, 1:, 1].any()  # true previous samples
    # prediction t sees targets < t only: changing y[t:] leaves predictions <= t unchanged
    y2 = y.clone()
    y2[:, 50:] = 0
    assert torch.equal(model(x, y)[:, :51], model(x, y2)[:, :51])


def fit(model: Model, batch: dict[str, torch.Tensor], steps: int) -> list[float]:
    """``steps`` of Adam (lr 0.01) on one batch; the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = model.losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_checkpoint_weight_names_are_unchanged() -> None:
    """``state_dict`` keys as of the commit before the kernels moved out (8e0acde)."""
    keys = [
        f"{m}.{w}_l{k}"
        for m in ("encoder", "decoder")
        for k in (0, 1)
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]
    assert list(tiny_model(n_layers=2).state_dict()) == [*keys, "head.weight", "head.bias"]
    assert list(tiny_model(head="mdn").state_dict()) == [
        *[k for k in keys if k.endswith("_l0")],
        "head.weight",
        "head.bias",
    ]


def test_loss_decreases_on_a_small_batch() -> None:
    model = tiny_model()
    t = torch.arange(256, dtype=torch.float32)
    s = torch.stack([0.5 * torch.sin(2 * torch.pi * t * f / 64) for f in (1.0, 2.0, 3.0, 4.0)])
    losses = fit(model, {"x": s[:, :128], "y": s[:, 128:]}, 40)
    assert losses[-1] < 0.2 * losses[0]


def test_both_windowings_of_the_paper(store: Path) -> None:
    split = AudioWindows(store, "train", scheme="split")
    shift = AudioWindows(store, "train", scheme="shift")
    a, b = split[1], shift[1]
    assert a["x"].shape == a["y"].shape == b["x"].shape == b["y"].shape == (128,)
    assert torch.equal(split[0]["y"], a["x"])  # hop 128: the next window's input is this one's target
    assert torch.equal(b["x"][1:], b["y"][:-1]) and torch.equal(shift[0]["x"][64:], b["x"][:64])  # hop 64
    batch = {"x": torch.stack([b["x"]]), "y": torch.stack([b["y"]])}
    # the model takes the windowing from the data: no copy of it to keep in step
    model = Model(Config.tiny(hidden_size=16), shift.data_info())
    assert (model.scheme, model.n_input, model.advance) == ("shift", 128, 1)
    assert torch.isfinite(model.losses(batch)["loss"])
    assert Model(Config.tiny(hidden_size=16), split.data_info()).advance == 128
    with pytest.raises(ParameterError, match="the data is windowed 'shift'"):
        Model(Config.tiny(hidden_size=16, scheme="split"), shift.data_info())


def test_a_longer_context_than_its_target(store: Path) -> None:
    """n_input=512, shift=512, n_output=128: the encoder hears 4 windows, each round adds 128 samples."""
    ds = AudioWindows(store, "train", scheme="split", n_input=512, n_output=128, shift=512)
    item = ds[0]
    assert item["x"].shape == (512,) and item["y"].shape == (128,)
    model = Model(Config.tiny(hidden_size=16, head="mse"), ds.data_info()).eval()
    assert (model.n_input, model.shift, model.advance) == (512, 512, 128)
    batch = {"x": item["x"][None], "y": item["y"][None]}
    assert torch.isfinite(model.losses(batch)["loss"])
    seed = item["x"][None, :, None]
    out = model.generate(GenerationRequest(n=1, n_frames=300, generator=torch.Generator(), seed=seed))
    assert out.shape == (1, 300, 1)
    level = model.loudness(seed[..., 0])
    first = model.continue_window(seed[..., 0] / level) * level
    assert first.shape == (1, 128) and torch.allclose(out[:, :128, 0], first, atol=1e-6)
    # the second round reads the last 384 seed samples and the 128 it made
    x2 = torch.cat([seed[0, 128:, 0], out[0, :128, 0]])[None] / level
    second = model.continue_window(x2 / model.loudness(x2)) * level
    assert torch.allclose(out[:, 128:256, 0], second, atol=1e-5)
    gap = AudioWindows(store, "train", scheme="split", n_input=128, n_output=128, shift=256).data_info()
    with pytest.raises(ParameterError, match="starts within or right after its input"):
        Model(Config.tiny(hidden_size=16), gap)


def test_free_running_decoder_equals_the_lstm_module() -> None:
    model = tiny_model(n_layers=2).eval()
    window = 0.1 * torch.randn(2, 128)
    with torch.no_grad():
        fast = model.continue_window(window)  # the written-out LSTM step
        state = model.encode(window)
        h, state = model.decoder(model.decoder_inputs(torch.zeros(2, 1)), state)
        y, ref = model.head(h), []
        for _ in range(128):
            ref.append(y[:, 0, 0])
            h, state = model.decoder(torch.nn.functional.pad(y, (0, 1)), state)
            y = model.head(h)
    assert torch.allclose(fast, torch.stack(ref, dim=1), atol=1e-5)


@pytest.mark.parametrize("scheme", ["split", "shift"])
def test_generation_continues_the_seed_window(scheme: str) -> None:
    model = tiny_model(scheme=scheme).eval()
    seed = 0.1 * torch.randn(2, 128, 1)
    n_frames = 300 if scheme == "split" else 5
    request = GenerationRequest(n=2, n_frames=n_frames, generator=torch.Generator(), seed=seed)
    out = model.generate(request)
    assert out.shape == (2, n_frames, 1) and torch.isfinite(out).all()
    # the first window is what the model predicts after the unit-RMS seed window, at the seed's level
    level = model.loudness(seed[..., 0])
    first = model.continue_window(seed[..., 0] / level)
    assert torch.allclose(out[:, : first.shape[1], 0], (first * level)[:, :n_frames], atol=1e-6)
    if scheme == "shift":  # one new sample per window: the last teacher-forced decoder step
        with torch.no_grad():
            x = seed[..., 0] / level
            y = torch.cat([x[:, 1:], torch.zeros(2, 1)], dim=1)
            assert torch.allclose(first[:, 0], model(x, y)[:, -1], atol=1e-6)


@pytest.mark.parametrize("head", ["mse", "mdn"])
def test_normalized_model_is_blind_to_loudness_and_the_plain_one_is_not(head: str) -> None:
    model = tiny_model(head=head).eval()
    seed = 0.05 * torch.randn(2, 128, 1)
    x, y = torch.randn(4, 128), torch.randn(4, 128)
    with torch.no_grad():
        loss = model.losses({"x": x, "y": y})["loss"]
        torch.testing.assert_close(model.losses({"x": 8 * x, "y": 8 * y})["loss"], loss)
    request = GenerationRequest(n=2, n_frames=640, generator=torch.Generator(), seed=seed)
    quiet = model.generate(request)
    loud = model.generate(
        dataclasses.replace(request, seed=10 * seed, generator=torch.Generator())
    )  # same draws
    torch.testing.assert_close(loud, 10 * quiet, atol=1e-5, rtol=1e-4)  # same music, 20 dB louder
    rounds = quiet[0, :, 0].reshape(5, 128).pow(2).mean(1).sqrt()
    assert rounds[-1] > 0.2 * rounds[0]  # no round-by-round decay
    plain = tiny_model(normalize=False).eval()
    with torch.no_grad():
        assert not torch.allclose(
            plain.losses({"x": 8 * x, "y": 8 * y})["loss"], plain.losses({"x": x, "y": y})["loss"]
        )


def test_generation_of_5_seconds_and_2_minutes() -> None:
    model = tiny_model().eval()
    five = GenerationRequest(
        n=1, n_frames=5 * 16000, generator=torch.Generator(), seed=torch.zeros(1, 128, 1)
    )
    assert model.generate(five).shape == (1, 80000, 1)
    two_minutes = GenerationRequest(
        n=1, n_frames=120 * 500, generator=torch.Generator(), options={"seed": "silence"}
    )
    assert model.generate(two_minutes).shape == (1, 60000, 1)  # 2 minutes at 500 Hz
    with pytest.raises(ParameterError, match="seed=real|silence"):
        model.generate(GenerationRequest(n=1, n_frames=5, generator=None, options={"style": {"x": 1}}))


def test_cli_train_resume_generate(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "seq2seq-tiny", "--data", str(store), "--run", str(run), *TINY]
    assert main([*args, "train.max_steps=15"]) == 0
    assert main([*args, "train.max_steps=30"]) == 0  # resumes
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 30
    out = tmp_path / "samples"
    assert main(["generate", str(run), "--seconds", "2", "--seed", "1", "--out", str(out)]) == 0
    y, sr = sf.read(out / "run-seed1-0.wav")
    meta = json.loads((out / "run-seed1-0.json").read_text())
    assert sr == SR and y.shape == (2 * SR,) and meta["model"] == "seq2seq"
    assert meta["seed_source"]["kind"] == "store"
    assert meta["silent_fraction"] == pytest.approx(silent_fraction(y, sr), abs=0.02)  # of the sound written
    assert_evaluates(run, store, tmp_path / "eval", seconds=1.0)
    assert main(["export", str(run), str(tmp_path / "bundle.pt")]) == 0  # a bundle evaluates like its run
    assert_evaluates(tmp_path / "bundle.pt", store, tmp_path / "eval-bundle", seconds=1.0)
    shift = tmp_path / "shift"
    assert main(["train", "seq2seq-tiny", "--data", str(store), "--run", str(shift), *TINY, "train.max_steps=5",
                 "data.options.scheme=shift"]) == 0  # fmt: skip
    saved = load_checkpoint(shift / "checkpoints" / "last.pt")["data_info"]["window"]
    assert saved == {"scheme": "shift", "n_input": 128, "n_output": 128, "shift": 1}  # the model's only copy


def test_registered_with_paper_and_tiny_configs() -> None:
    from cadenza.training.config import build_config, load_config

    assert get_model_spec("seq2seq").dataset == "audio"
    for preset in ("paper", "tiny"):
        cfg = load_config(f"seq2seq-{preset}")
        assert cfg.model.scheme is None and cfg.data.options["scheme"] == "split" and cfg.optim.name == "adam"
    old = load_config("seq2seq-paper").to_dict()
    old["model"].update(scheme="split", n_input=128)  # a config saved by an earlier release
    assert build_config(old).model.scheme == "split"
    # a run saved before the mixture head (its config has no `head`) loads as the regressor it was
    from cadenza.training.config import ExperimentConfig

    assert load_config("seq2seq-tiny").model.head == "mdn"  # a new run: the mixture
    saved = load_config("seq2seq-tiny").to_dict()
    assert ExperimentConfig.from_dict(saved).model.head == "mdn"  # saved since: as saved
    del saved["model"]["head"]
    assert ExperimentConfig.from_dict(saved).model.head == "mse"


def test_mixture_head_likelihood_and_draws() -> None:
    """head=mdn: the loss is the mixture's NLL (as torch.distributions computes it); generation draws."""
    from torch import distributions as D

    model = tiny_model(head="mdn", n_mixtures=3)
    x, y = torch.randn(2, 128), torch.randn(2, 128)
    z = model(x / model.loudness(x), y / model.loudness(x))
    assert z.shape == (2, 128, 9)
    logits, mean, log_std = model.mixture(z)
    mixture = D.MixtureSameFamily(D.Categorical(logits=logits), D.Normal(mean[..., 0], log_std[..., 0].exp()))
    expected = -mixture.log_prob(y / model.loudness(x)).mean()
    assert model.losses({"x": x, "y": y})["loss"].item() == pytest.approx(expected.item(), rel=1e-5)

    model.eval()
    seed = 0.1 * torch.randn(2, 128, 1)

    def run(temperature: float, seed_value: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed_value)
        options = {"temperature": temperature}
        return model.generate(GenerationRequest(n=2, n_frames=256, generator=g, seed=seed, options=options))

    a, b = run(1.0, 0), run(1.0, 1)
    assert torch.equal(a, run(1.0, 0)) and not torch.allclose(a, b)  # reproducible from the generator, drawn
    # temperature 0 takes each step's mixture mean: the written-out decoder equals the module
    cold = run(0.0, 0)
    assert torch.equal(cold, run(0.0, 1))
    with torch.no_grad():
        window = seed[..., 0] / model.loudness(seed[..., 0])
        h, state = model.decoder(model.decoder_inputs(torch.zeros(2, 1)), model.encode(window))
        ref = []
        for _ in range(128):
            logits, mean, _ = model.mixture(model.head(h[:, -1]))
            y1 = (logits.softmax(-1) * mean[..., 0]).sum(-1)
            ref.append(y1)
            h, state = model.decoder(torch.stack([y1, torch.zeros_like(y1)], -1)[:, None], state)
    expected = torch.stack(ref, 1) * model.loudness(seed[..., 0])
    assert torch.allclose(cold[:, :128, 0], expected, atol=1e-5)
    with pytest.raises(ParameterError, match="temperature"):
        run(-1.0, 0)


def test_mixture_head_learns_a_two_valued_target() -> None:
    """Every target sample +1 or -1 by a coin: least squares predicts 0; the mixture learns both values."""
    torch.manual_seed(0)
    x = torch.randn(64, 128)
    x = x / x.pow(2).mean(1, keepdim=True).sqrt()  # unit RMS: the targets are +-1 in the model's units
    y = torch.where(torch.rand(64, 128) < 0.5, 1.0, -1.0)
    model = tiny_model(head="mdn", n_mixtures=2)
    fit(model, {"x": x, "y": y}, 150)
    with torch.no_grad():
        logits, mean, log_std = model.mixture(model(x[:4], y[:4]))
    means = mean[..., 0].sort(-1).values  # (4, 128, 2)
    assert torch.allclose(means, torch.tensor([-1.0, 1.0]).expand_as(means), atol=0.1)
    assert torch.allclose(logits.softmax(-1), torch.full_like(logits, 0.5), atol=0.15)  # a fair coin
    assert log_std.exp().max() < 0.1
    plain = tiny_model()
    fit(plain, {"x": x, "y": y}, 150)
    with torch.no_grad():
        assert plain(x[:4], y[:4]).abs().mean() < 0.3  # the regressor hedges between them


def test_a_near_silent_seed_is_continued_at_the_silence_level() -> None:
    """A seed below -50 dBFS (a file's dying ending) is continued as a silent seed is, at
    SILENCE_LEVEL; a quiet but audible one keeps its own level."""
    from cadenza.models.seq2seq import QUIET_SEED, SILENCE_LEVEL

    model = tiny_model(head="mdn").eval()
    shape = torch.randn(1, 128, 1)
    shape = shape / shape.pow(2).mean().sqrt()  # unit RMS

    def level_of(seed_rms: float) -> float:
        g = torch.Generator().manual_seed(0)
        out = model.generate(GenerationRequest(n=1, n_frames=512, generator=g, seed=seed_rms * shape))
        return out.pow(2).mean().sqrt().item()

    silent = model.generate(
        GenerationRequest(
            n=1, n_frames=512, generator=torch.Generator().manual_seed(0), options={"seed": "silence"}
        )
    )
    dying, audible = level_of(0.3 * QUIET_SEED), level_of(3 * QUIET_SEED)
    assert dying == pytest.approx(level_of(0.03 * QUIET_SEED), rel=1e-4)  # the same music, at one level
    assert dying / audible == pytest.approx(SILENCE_LEVEL / (3 * QUIET_SEED), rel=1e-4)
    assert silent.pow(2).mean().sqrt().item() > 0.3 * SILENCE_LEVEL


def test_free_run_draws_follow_the_mixture() -> None:
    """The free run's pre-drawn draws (Gumbel-max component, then its Gaussian) have the mixture's
    component frequencies and moments, as sample_mixture's draws do."""
    from cadenza.models.mixture import sample_mixture
    from cadenza.models.seq2seq import _MixtureDraws

    config = Config.tiny(head="mdn", n_mixtures=3)
    n = 40_000
    logits, mean, log_std = (
        torch.tensor([0.0, 1.0, -0.5]),
        torch.tensor([-2.0, 0.5, 3.0]),
        torch.tensor([-1.0, -2.0, -0.5]),
    )
    z = torch.cat([logits, mean, log_std]).expand(n, -1)
    g = torch.Generator().manual_seed(0)
    draws = _MixtureDraws(n, 3, config, 0.8, g, None)
    ours = torch.cat([draws(z), draws(z)])
    ref = sample_mixture(
        logits.expand(n, -1), mean[:, None].expand(n, -1, 1), log_std[:, None].expand(n, -1, 1), 0.8, g
    )[:, 0]
    weights = logits.softmax(0)
    expect_mean = (weights * mean).sum()
    expect_var = (weights * ((0.8 * log_std.exp()) ** 2 + mean**2)).sum() - expect_mean**2
    for x in (ours, ref):
        assert x.mean().item() == pytest.approx(expect_mean.item(), abs=0.03)
        assert x.var().item() == pytest.approx(expect_var.item(), rel=0.03)
        # the component of each draw: the nearest mean (the Gaussians barely overlap)
        nearest = (x[:, None] - mean).abs().argmin(1)
        freq = torch.bincount(nearest, minlength=3) / len(x)
        torch.testing.assert_close(freq, weights, atol=0.01, rtol=0)
