"""The MFCC VAE (paper 003, made stable): formulas, stability on real MFCCs, generation, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
import soundfile as sf
import torch

from cadenza.cli import main
from cadenza.data.normalize import Normalizer
from cadenza.data.store import FeatureStore
from cadenza.data.windows import SequenceWindows
from cadenza.errors import ParameterError
from cadenza.evaluation.detectors import silent_fraction
from cadenza.models import MODELS, DataInfo, GenerationRequest, ModelSpec
from cadenza.models.mfcc_vae import ACTIVE_KL, Config, Model, kl_per_unit, soft_clamp
from cadenza.training import load_checkpoint
from tests.evaluation.helpers import assert_evaluates

torch.set_num_threads(1)

#: The MODELS entry the family is registered with (the tests register it themselves).
SPEC = ModelSpec(
    key="mfcc_vae",
    module="cadenza.models.mfcc_vae",
    summary="VAE (paper 003): a clip of MFCCs flattened -> dense -> latent Gaussians -> dense -> clip",
    dataset="sequence",
    requires=MappingProxyType({"name": ("mfcc",)}),
    prepare="--representation mfcc",
)
T = 64  # frames per clip of mfcc_vae-tiny (1.5 s)
CLI = [
    "data.batch_size=16",
    "train.log_every=5",
    "train.save_every_steps=0",
    "train.sample_every=0",
    "train.tensorboard=false",
    "train.progress=false",
]


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "mfcc_vae", SPEC)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MFCC store of four Bach chorales rendered from music21's corpus (2 train, 1 valid, 1 test)."""
    path = tmp_path_factory.mktemp("mfcc_vae") / "m21-mfcc"
    args = ["prepare", "music21:bach", str(path), "--representation", "mfcc", "--max-files", "4"]
    assert main([*args, "--workers", "1", "--no-progress"]) == 0
    return path


def clips(store: Path, split: str) -> tuple[torch.Tensor, DataInfo]:
    """Every normalised window of ``T`` frames (hop 16) of a split, and the data's DataInfo."""
    ds = SequenceWindows(store, split, seq_len=T, hop=16, shift=0)
    return torch.stack([ds[i]["x"] for i in range(len(ds))]), ds.data_info()


def tiny_model(seq_len: int = 16, **changes: object) -> Model:
    torch.manual_seed(0)
    return Model(Config.tiny(**changes), DataInfo(n_features=20, seq_len=seq_len))


def test_shapes_reparameterisation_and_the_log_variance_bounds() -> None:
    model = tiny_model()
    x = torch.randn(3, 16, 20)
    x_hat, mu, logvar = model(x)
    assert x_hat.shape == x.shape and mu.shape == logvar.shape == (3, 16)
    assert model.decode(mu).shape == (3, 16, 20)
    # z = mu + exp(logvar / 2) * eps, differentiable in mu and logvar
    mu, logvar = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    eps = torch.randn(5, 4)
    z = Model.reparameterize(mu, logvar, eps)
    torch.testing.assert_close(z, mu + torch.exp(0.5 * logvar) * eps)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)
    # samples have the posterior's moments
    m, lv = torch.tensor([1.0, -2.0]), torch.tensor([0.0, math.log(4.0)])
    many = Model.reparameterize(m, lv, torch.randn(20000, 2, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(many.mean(0), m, atol=0.05, rtol=0)
    torch.testing.assert_close(many.std(0), torch.tensor([1.0, 2.0]), atol=0.05, rtol=0)
    # the bound: the identity well inside, never outside, a gradient beyond it
    raw = torch.tensor([-1e9, -50.0, -3.0, -1.0, 0.0, 1.0, 50.0, 1e9], requires_grad=True)
    out = soft_clamp(raw, -8.0, 4.0)
    assert out.min() >= -8.0 and out.max() <= 4.0
    torch.testing.assert_close(out[2:6], raw[2:6].detach(), atol=0.05, rtol=0)
    out[6].backward()
    assert raw.grad[6] == 0 or raw.grad[6] > 0  # far out the gradient vanishes, never flips
    edge = torch.tensor(6.0, requires_grad=True)
    soft_clamp(edge, -8.0, 4.0).backward()
    assert 0 < edge.grad < 0.2  # beyond the bound: a small gradient, not a dead one
    _, logvar = model.encode(1e6 * x)  # inputs of any scale: exp(logvar) stays finite
    assert logvar.min() >= model.config.logvar_min and logvar.max() <= model.config.logvar_max
    with pytest.raises(ParameterError, match="logvar_min must be below"):
        tiny_model(logvar_min=2.0, logvar_max=1.0)
    with pytest.raises(ParameterError, match="seq_len"):
        Model(Config.tiny(), DataInfo(n_features=20))


def test_kl_per_unit_and_the_loss_terms_by_hand() -> None:
    mu = torch.tensor([0.0, 1.0, 0.0, 2.0])
    logvar = torch.log(torch.tensor([1.0, 1.0, 2.0, 0.5]))
    # 0.5 * (mu^2 + var - 1 - log var)
    hand = torch.tensor([0.0, 0.5, 0.5 * (2 - 1 - math.log(2)), 0.5 * (4 + 0.5 - 1 + math.log(2))])
    torch.testing.assert_close(kl_per_unit(mu, logvar), hand)
    normal = torch.distributions.Normal
    torch.testing.assert_close(
        kl_per_unit(mu, logvar),
        torch.distributions.kl_divergence(normal(mu, (0.5 * logvar).exp()), normal(0.0, 1.0)),
    )
    model = tiny_model(kl_warmup_steps=100)
    with torch.no_grad():
        model.recon_logvar.copy_(torch.linspace(-1.0, 1.0, 20))
    x, x_hat = torch.randn(2, 16, 20), torch.randn(2, 16, 20)
    gauss = torch.nn.GaussianNLLLoss(full=True, reduction="none")
    torch.testing.assert_close(
        model.recon_nll(x, x_hat), gauss(x_hat, x, model.recon_logvar.exp().expand_as(x))
    )
    # the loss per element is recon + weight * KL / (T * F): in training the warm-up weight...
    batch, n = {"x": torch.randn(8, 16, 20)}, 16 * 20
    model.n_steps_trained = 25
    out = model.train().losses(batch)
    assert out["kl_weight"] == 0.25
    torch.testing.assert_close(out["loss"], out["recon"] + 0.25 * out["kl"] / n)
    # ...in validation the full negative ELBO, whatever the step
    out = model.eval().losses(batch)
    assert out["kl_weight"] == 1.0
    torch.testing.assert_close(out["loss"], out["recon"] + out["kl"] / n)
    model.n_steps_trained = 1000
    assert model.train().kl_weight() == 1.0 and tiny_model(kl_warmup_steps=0).kl_weight() == 1.0
    # free bits: every unit is charged at least free_bits nats
    free = tiny_model(free_bits=100.0).eval()
    out = free.losses(batch)
    torch.testing.assert_close(out["loss"], out["recon"] + 16 * 100.0 / n)


def test_training_on_real_mfccs_is_stable_and_uses_the_latent(store: Path) -> None:
    train, info = clips(store, "train")
    valid, _ = clips(store, "valid")
    assert info.representation["name"] == "mfcc" and info.n_features == 20
    torch.manual_seed(0)
    model = Model(Config.tiny(), info)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    losses = []
    for step in range(300):
        model.n_steps_trained = step
        loss = model.losses({"x": train[torch.randint(0, len(train), (16,), generator=order)]})["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the configs' train.grad_clip
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-30:]) < 0.9 * np.mean(losses[:30])
    model.eval()
    with torch.no_grad():
        mu, logvar = model.encode(valid)
        active = kl_per_unit(mu, logvar).mean(0) > ACTIVE_KL
        assert active.sum() >= model.config.latent_size // 2, active
        a, b = train[0], train[-1]  # clips of two different chorales
        mu, _ = model.encode(torch.stack([a, b]))
        recon = model.decode(mu)
        prior_mean = model.decode(torch.zeros_like(mu))
        mse = lambda u, v: float((u - v).pow(2).mean())  # noqa: E731
        assert mse(recon, train[[0, -1]]) < 0.7 * mse(prior_mean, train[[0, -1]])
        o = 8
        path = model.interpolate(a, b, steps=3, crossfade=o)  # t = 0, 0.5, 1
        assert path.shape == (3 * T - 2 * o, 20)
        torch.testing.assert_close(path[: T - o], recon[0, : T - o])  # t = 0 decodes A's reconstruction
        torch.testing.assert_close(path[-(T - o) :], recon[1, o:])  # t = 1 decodes B's
        assert mse(path[: T - o], a[: T - o]) < mse(path[: T - o], b[: T - o])
        assert mse(path[-(T - o) :], b[o:]) < mse(path[-(T - o) :], a[o:])


def test_unnormalised_inputs_stay_finite_with_the_stabilisers(store: Path) -> None:
    """Paper 003's failure: raw MFCCs in the hundreds; here normalised clips times 1000."""
    train, info = clips(store, "train")
    x = 1000.0 * train[:32]
    torch.manual_seed(0)
    plain = Model(Config.tiny(logvar_min=None, logvar_max=None, learn_recon_variance=False), info)
    with torch.no_grad():  # the paper's unbounded log-variance: exp overflows on the first batch
        assert not math.isfinite(plain.losses({"x": x[:8]})["loss"].item())
    torch.manual_seed(0)
    model = Model(Config.tiny(), info)  # the same weights, with the bounds
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(10):
        model.n_steps_trained = step
        loss = model.losses({"x": x[(8 * step) % 32 :][:8]})["loss"]
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        assert math.isfinite(loss.item()) and math.isfinite(norm.item()), step
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_generation_from_the_prior_a_latent_walk_and_crossfades() -> None:
    model = tiny_model().eval()
    request = lambda n_frames, seed=0, **opts: GenerationRequest(  # noqa: E731
        n=2, n_frames=n_frames, generator=torch.Generator().manual_seed(seed), options=opts
    )
    for n_frames in (5, 16, 100):
        out = model.generate(request(n_frames))
        assert out.shape == (2, n_frames, 20) and torch.isfinite(out).all()
    torch.testing.assert_close(model.generate(request(40)), model.generate(request(40)))
    assert not torch.allclose(model.generate(request(40)), model.generate(request(40, seed=1)))
    # walk=0: one code, its clip repeated, each repeat overlapping the last by crossfade frames
    out = model.generate(request(16 + 12, walk=0.0, crossfade=4))  # two clips
    clip = torch.cat([out[:, :4], out[:, 16:28]], 1)  # (2, 16, F): the first 4 frames, then the second copy
    torch.testing.assert_close(out[:, 4:12], clip[:, 4:12])
    ramp = torch.tensor([0.2, 0.4, 0.6, 0.8])[:, None]
    torch.testing.assert_close(out[:, 12:16], clip[:, 12:16] * (1 - ramp) + clip[:, :4] * ramp)
    # temperature 0: the decoded prior mean; walk=1: independent codes
    zero = model.decode(torch.zeros(1, 16))[0]
    torch.testing.assert_close(model.generate(request(16, temperature=0.0))[1], zero)
    cold = model.generate(request(16, temperature=0.1))
    hot = model.generate(request(16, temperature=3.0))
    assert (cold - zero).abs().mean() < (hot - zero).abs().mean()
    assert Model.n_clips(16, 16, 4) == 1 and Model.n_clips(17, 16, 4) == 2 and Model.n_clips(40, 16, 4) == 3
    for bad in ({"style": "x"}, {"crossfade": 16}, {"walk": 2}, {"temperature": -1}):
        with pytest.raises(ParameterError):
            model.generate(request(20, **bad))


def test_interpolation_between_two_audio_files(store: Path, tmp_path: Path) -> None:
    _, info = clips(store, "train")
    model = Model(Config.tiny(), info).eval()
    sr = int(info.representation["sample_rate"])
    t = np.arange(2 * sr) / sr
    files = []
    for name, f0 in (("a", 220.0), ("b", 330.0)):
        files.append(tmp_path / f"{name}.wav")
        sf.write(files[-1], 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * 2 * t)), sr)
    options = {"interpolate": f"{files[0]},{files[1]}", "steps": 4, "crossfade": 8}
    request = GenerationRequest(n=2, n_frames=3 * T, generator=torch.Generator(), options=options)
    with pytest.raises(ParameterError, match="GenerationRequest.normalizer"):
        model.generate(request)
    norm = Normalizer.from_stats("standard", FeatureStore(store).stats)
    request.normalizer = norm  # what the generator will pass (GenerationRequest.normalizer)
    out = model.generate(request)
    from cadenza.representations import representation_from_dict

    rep = representation_from_dict(dict(info.representation))
    xa, xb = (torch.from_numpy(np.asarray(norm.apply(rep.read(f)), np.float32)) for f in files)
    expected = model.interpolate(xa, xb, steps=4, crossfade=8)  # 4 * 64 - 3 * 8 = 232 frames
    assert out.shape == (2, 3 * T, 20)
    torch.testing.assert_close(out[0], expected[: 3 * T])
    torch.testing.assert_close(out[1], out[0])
    # a longer request goes back from B towards A: t = 0, 1/3, 2/3, 1, then 2/3
    request.n_frames = expected.shape[0] + T - 8
    back = model.generate(request)[0]
    torch.testing.assert_close(back[: expected.shape[0] - 8], expected[:-8])
    torch.testing.assert_close(
        back[-(T - 8) :], model.decode(model._line(xa, xb, torch.tensor([2 / 3])))[0, 8:]
    )
    with pytest.raises(ParameterError, match="two audio files"):
        model.generate(GenerationRequest(n=1, n_frames=T, generator=None, options={"interpolate": "a.wav"}))


def test_cli_train_resume_generate_evaluate(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "mfcc_vae-tiny", "--data", str(store), "--run", str(run), *CLI]
    assert main([*args, "train.max_steps=15"]) == 0
    assert main([*args, "train.max_steps=30"]) == 0  # resumes
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 30 and state["normalization"]["kind"] == "standard"
    assert state["data_info"]["window"] == {"shift": 0} and state["data_info"]["seq_len"] == T
    out = tmp_path / "samples"
    gen = ["generate", str(run), "--seconds", "3", "--seed", "1", "--out", str(out)]
    assert main([*gen, "--option", "walk=0.5", "--option", "crossfade=4"]) == 0
    y, sr = sf.read(out / "run-seed1-0.wav")
    meta = json.loads((out / "run-seed1-0.json").read_text())
    assert sr == 22050 and y.shape == (3 * sr,) and meta["model"] == "mfcc_vae"
    assert meta["options"] == {"walk": 0.5, "crossfade": 4}
    assert silent_fraction(y, sr) < 0.5 and np.sqrt(np.mean(y**2)) > 1e-3  # not silent
    assert_evaluates(run, store, tmp_path / "eval", seconds=1.0)


def test_paper_and_tiny_configs() -> None:
    from cadenza.training.config import load_config

    paper = load_config("mfcc_vae-paper")
    assert (paper.model.hidden_size, paper.model.latent_size) == (2580, 128)
    assert (paper.data.seq_len, paper.data.hop, paper.data.options) == (1293, 1293, {"shift": 0})
    assert paper.data.normalization == "standard" and paper.optim.name == "adam"
    assert paper.train.grad_clip > 0 and paper.train.precision == "fp32"
    with torch.device("meta"):  # paper 003's summary: 134,459,596 weights, plus 20 reconstruction variances
        model = SPEC.build(paper.model, DataInfo(n_features=20, seq_len=1293))
    assert sum(p.numel() for p in model.parameters()) == 134_459_596 + 20
    assert model.encoder.in_features == 25860
    tiny = load_config("mfcc_vae-tiny")
    assert tiny.model == Config.tiny() and tiny.data.seq_len == T and tiny.train.grad_clip > 0
    with pytest.raises(ParameterError, match="--representation mfcc"):
        SPEC.build(Config.tiny(), DataInfo(n_features=128, seq_len=T, representation={"name": "mel"}))
