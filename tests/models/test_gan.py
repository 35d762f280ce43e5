"""Paper 004's GANs: shapes, losses by hand and per optimiser step, WGAN-GP, binarisation, interpolation,
and the CLI end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cadenza.cli import main
from cadenza.data import prepare_corpus
from cadenza.errors import ParameterError
from cadenza.models import DataInfo, GenerationRequest
from cadenza.models.gan import Config, Model, binarize, gradient_penalty, note_gap, phrase_gap, slerp
from cadenza.training import load_checkpoint
from cadenza.training.logs import read_metrics
from tests.evaluation.helpers import assert_evaluates

torch.set_num_threads(1)

T, P = 16, 12
SIZES = {
    "noise_dim": 8,
    "g_lstm_size": 8,
    "g_bilstm_size": 8,
    "g_dense_size": 8,
    "cnn_channels": 8,
    "d_lstm_size": 8,
    "d_bilstm_size": 8,
    "d_dense_sizes": (8, 4),
    "dropout": 0.0,
}


def _model(arch: str, **changes: object) -> Model:
    torch.manual_seed(0)
    return Model(Config.tiny(arch=arch, **{**SIZES, **changes}), DataInfo(n_features=P, seq_len=T))


def _real(n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(n, T, P, generator=g) < 0.2).float()


@pytest.mark.parametrize("arch", ["bilstm", "cnn"])
def test_shapes_and_bce_losses_match_a_hand_computation(arch: str) -> None:
    model = _model(arch).eval()  # no dropout, batch norm in eval mode: the same network twice
    real = _real()
    assert model.generator(torch.zeros(3, 8)).shape == (3, T, P)
    assert model.discriminator(real).shape == (6,)
    torch.manual_seed(5)
    losses = model.losses({"x": real})
    steps = {}
    for step in ("discriminator", "generator"):
        torch.manual_seed(5)
        steps[step] = model.losses({"x": real}, step=step)[step]
    torch.manual_seed(5)
    z = torch.randn(6, 8)
    fake = torch.sigmoid(model.generator(z))
    p_real = torch.sigmoid(model.discriminator(real))
    p_fake = torch.sigmoid(model.discriminator(fake))
    d_loss = -torch.log(p_real).mean() - torch.log(1 - p_fake).mean()
    g_loss = -torch.log(p_fake).mean()
    assert losses["discriminator"].item() == pytest.approx(d_loss.item(), rel=1e-5)
    assert losses["generator"].item() == pytest.approx(g_loss.item(), rel=1e-5)
    assert losses["d_real"].item() == pytest.approx(p_real.mean().item(), rel=1e-5)
    assert losses["density_gap"].item() == pytest.approx(abs(fake.mean() - real.mean()).item(), rel=1e-5)
    assert steps["discriminator"].item() == losses["discriminator"].item()  # each step: the same value
    assert steps["generator"].item() == losses["generator"].item()
    with pytest.raises(ParameterError, match="unknown GAN step"):
        model.losses({"x": real}, step="loss")


def one_forward_losses(model: Model, real: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both losses from one forward, as cadenza computed them for every optimiser step before."""
    logits = model.generator(model.sample_noise(real.shape[0]))
    fake = torch.sigmoid(logits)  # not detached: the discriminator's loss reached the generator
    d_real, d_fake = model.discriminator(real), model.discriminator(fake)
    if model.config.loss == "bce":
        ones, zeros = torch.ones_like(d_real), torch.zeros_like(d_real)
        d_loss = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(
            d_fake, zeros
        )
        return {"discriminator": d_loss, "generator": F.binary_cross_entropy_with_logits(d_fake, ones)}
    penalty = gradient_penalty(model.discriminator, real, fake)
    d_loss = d_fake.mean() - d_real.mean() + model.config.gp_weight * penalty
    return {"discriminator": d_loss, "generator": -d_fake.mean()}


@pytest.mark.parametrize("loss", ["bce", "wgan-gp"])
@pytest.mark.parametrize("arch", ["bilstm", "cnn"])
def test_each_step_computes_its_own_loss_and_gradients_as_one_forward_did(
    arch: str, loss: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(arch, loss=loss).train()  # batch norm on batch statistics; no dropout (SIZES)
    real = _real()
    penalties = []
    grad = torch.autograd.grad

    def counted(*args: object, **kwargs: object) -> object:
        penalties.append(kwargs.get("create_graph"))
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counted)
    for step, other in (("discriminator", "generator"), ("generator", "discriminator")):
        model.zero_grad(set_to_none=True)
        penalties.clear()
        torch.manual_seed(5)
        losses = model.losses({"x": real}, step=step)
        losses[step].backward()
        # the discriminator's step reaches no generator weight, the generator's no discriminator weight
        assert all(p.grad is None for p in getattr(model, other).parameters())
        assert penalties == ([True] if step == "discriminator" and loss == "wgan-gp" else [])
        grads = [p.grad.clone() for p in getattr(model, step).parameters()]
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        before = one_forward_losses(model, real)
        before[step].backward()
        assert losses[step].item() == before[step].item()  # the same draws, the same value
        for new, old in zip(grads, (p.grad for p in getattr(model, step).parameters())):
            torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-8)
    assert all(p.requires_grad for p in model.parameters())  # the generator's step unfroze them


def test_the_discriminator_alone_learns_real_from_fixed_fakes() -> None:
    model = _model("cnn").train()
    real = _real(8)
    with torch.no_grad():
        fake = torch.sigmoid(model.generator(torch.randn(8, 8)))
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-2)

    def d_loss() -> torch.Tensor:
        d_real, d_fake = model.discriminator(real), model.discriminator(fake)
        return F.binary_cross_entropy_with_logits(
            d_real, torch.ones_like(d_real)
        ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))

    first = d_loss().item()
    for _ in range(40):
        opt.zero_grad()
        d_loss().backward()
        opt.step()
    assert d_loss().item() < 0.5 * first


def test_gradient_penalty_of_a_linear_critic_is_known() -> None:
    class Linear(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x * 0.25).flatten(1).sum(dim=1)  # gradient 0.25 everywhere

    real, fake = _real(4), torch.rand(4, T, P)
    norm = 0.25 * (T * P) ** 0.5
    assert gradient_penalty(Linear(), real, fake).item() == pytest.approx((norm - 1) ** 2, rel=1e-5)
    with torch.no_grad():  # works under validation's no_grad too
        assert gradient_penalty(Linear(), real, fake).item() == pytest.approx((norm - 1) ** 2, rel=1e-5)


@pytest.mark.parametrize("arch", ["bilstm", "cnn"])
def test_wgan_gp_losses_train_both_networks(arch: str) -> None:
    model = _model(arch, loss="wgan-gp").train()
    assert all(torch.isfinite(v) for v in model.losses({"x": _real()}).values())
    model.losses({"x": _real()}, step="discriminator")[
        "discriminator"
    ].backward()  # the penalty's double backward
    assert all(p.grad is not None for p in model.discriminator.parameters())
    model.zero_grad()
    model.losses({"x": _real()}, step="generator")["generator"].backward()
    assert all(p.grad is not None for p in model.generator.parameters())


def test_pretraining_teaches_the_generator_alone_for_the_trainers_first_steps() -> None:
    model = _model("cnn", pretrain_steps=2).train()
    real = _real()
    for trained in (0, 1, 1, 0):  # set by the trainer; calls are not counted
        model.n_steps_trained = trained
        torch.manual_seed(trained)
        losses = model.losses({"x": real}, step="generator")
        torch.manual_seed(trained)
        logits = model.generator(torch.randn(6, 8))
        assert losses["generator"].item() == pytest.approx(
            F.binary_cross_entropy_with_logits(logits, real).item(), rel=1e-4
        )
        model.zero_grad(set_to_none=True)
        d_loss = model.losses({"x": real}, step="discriminator")["discriminator"]
        d_loss.backward()
        assert d_loss.item() == 0.0
        assert all(not p.grad.any() for p in model.discriminator.parameters())  # it keeps its weights
    model.n_steps_trained = 2
    assert model.losses({"x": real}, step="discriminator")["discriminator"].item() > 0.0  # adversarial
    assert model.eval().losses({"x": real})["discriminator"].item() > 0.0  # validation: never pre-training
    assert "n_updates" not in model.state_dict()
    old = {**model.state_dict(), "n_updates": torch.tensor(7)}  # a checkpoint from before loads
    _model("cnn", pretrain_steps=2).load_state_dict(old)


@pytest.mark.parametrize("arch", ["bilstm", "cnn"])
def test_feature_matching_adds_the_gap_of_the_discriminators_mean_features(arch: str) -> None:
    plain = _model(arch).train()
    for weight, adversarial in ((0.5, 1.0), (2.0, 0.0)):
        model = _model(arch, feature_matching=weight, adversarial=adversarial).train()
        model.load_state_dict(plain.state_dict())
        real = _real()
        torch.manual_seed(3)
        losses = model.losses({"x": real}, step="generator")
        torch.manual_seed(3)
        fooling = plain.losses({"x": real}, step="generator")["generator"]
        # by hand: the same fakes (the same noise), the discriminator's last hidden layer averaged
        torch.manual_seed(3)
        fake = torch.sigmoid(model.generator(model.sample_noise(len(real))))
        hidden = model.discriminator.head[:-1]
        feats = [hidden(torch.cat(_last_states(model.discriminator, x), dim=-1)) for x in (real, fake)]
        gap = (feats[0].mean(0) - feats[1].mean(0)).pow(2).sum()
        assert losses["feature_gap"].item() == pytest.approx(gap.item(), rel=1e-5)
        assert gap.item() > 0
        expected = adversarial * fooling + weight * gap
        assert losses["generator"].item() == pytest.approx(expected.item(), rel=1e-5)
        model.zero_grad(set_to_none=True)
        losses["generator"].backward()
        assert all(p.grad is None for p in model.discriminator.parameters())  # frozen: the generator's step
        assert any(p.grad.abs().sum() > 0 for p in model.generator.parameters())
        # validation logs the same gap, so that the trainer can average every entry
        assert "feature_gap" in model.eval().losses({"x": real}) and "feature_gap" not in plain.eval().losses(
            {"x": real}
        )
        plain.train()


@pytest.mark.parametrize("arch", ["bilstm", "cnn"])
def test_the_averaged_generator_follows_the_generator_and_makes_validation_and_generation(arch: str) -> None:
    assert _model(arch).generator_ema is None  # off by default: the paper's generator
    model = _model(arch, ema=0.9).train()
    opt = torch.optim.SGD(model.generator.parameters(), lr=0.5)
    real = _real()
    start = [p.clone() for p in model.generator_ema.parameters()]
    weights = []
    for _ in range(3):  # each generator step first folds the weights of the step before into the average
        weights.append([p.detach().clone() for p in model.generator.parameters()])
        loss = model.losses({"x": real}, step="generator")["generator"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert int(model.ema_updates) == 3
    expected = start
    for k, w in enumerate(weights):  # decay min(0.9, (1 + k) / (10 + k)): 0.1, 2/11, 3/12
        decay = min(0.9, (1 + k) / (10 + k))
        expected = [decay * e + (1 - decay) * x for e, x in zip(expected, w, strict=True)]
    for avg, e in zip(model.generator_ema.parameters(), expected, strict=True):
        torch.testing.assert_close(avg, e)
        assert not avg.requires_grad
    assert any(
        not torch.equal(a, p) for a, p in zip(model.generator_ema.parameters(), model.generator.parameters())
    )
    # the discriminator's step trains against the generator itself; nothing moves the average there
    model.losses({"x": real}, step="discriminator")
    assert int(model.ema_updates) == 3
    # validation and generation read the average: silence it and the notes are gone
    model.eval()
    last = model.generator_ema.out if arch == "bilstm" else model.generator_ema.last
    with torch.no_grad():
        last.bias.fill_(-50.0)
    assert model.losses({"x": real})["note_gap"].item() == pytest.approx(
        real.mean().item() + F.relu(real - F.pad(real, (0, 0, 1, 0))[:, :-1]).mean().item(), rel=1e-5
    )
    roll = model.generate(GenerationRequest(n=2, n_frames=T, generator=torch.Generator().manual_seed(0)))
    assert roll.sum() == 0
    # a checkpoint keeps the average and its count: a resumed run goes on from them
    again = _model(arch, ema=0.9)
    again.load_state_dict(model.state_dict())
    assert int(again.ema_updates) == 3
    torch.testing.assert_close(again.generator_ema.state_dict(), model.generator_ema.state_dict())


def _last_states(disc: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, _ = disc.lstm(x)
    _, (h_n, _) = disc.bilstm(h)
    return h_n[0], h_n[1]


def test_binarisation_modes() -> None:
    probs = torch.tensor([[0.0, 0.3, 0.5, 0.51, 1.0]])
    assert binarize(probs).tolist() == [[0.0, 0.0, 0.0, 1.0, 1.0]]
    assert binarize(probs, threshold=0.2).tolist() == [[0.0, 1.0, 1.0, 1.0, 1.0]]
    many = torch.full((20000,), 0.3)
    draws = binarize(many, "bernoulli", generator=torch.Generator().manual_seed(0))
    assert set(draws.unique().tolist()) <= {0.0, 1.0} and abs(draws.mean().item() - 0.3) < 0.02
    again = binarize(many, "bernoulli", generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    edge = binarize(torch.tensor([0.0, 1.0]), "bernoulli", generator=torch.Generator().manual_seed(0))
    assert edge.tolist() == [0.0, 1.0]
    with pytest.raises(ParameterError):
        binarize(probs, "round")


@pytest.mark.parametrize("mode", ["deterministic", "stochastic"])
def test_binary_neurons_show_the_discriminator_a_0_1_roll_and_pass_gradients_straight_through(
    mode: str,
) -> None:
    model = _model("bilstm", binary_neurons=mode)
    seen: list[torch.Tensor] = []
    model.discriminator.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    real = _real()
    out = model.losses({"x": real}, step="generator")
    fake = seen[-1]
    assert set(fake.unique().tolist()) <= {0.0, 1.0} and 0 < fake.sum() < fake.numel()
    out["generator"].backward()
    grads = [p.grad for p in model.generator.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum().item() for g in grads) > 0
    assert all(p.grad is None for p in model.discriminator.parameters())  # frozen in G's step
    model.losses({"x": real}, step="discriminator")
    assert set(seen[-1].unique().tolist()) <= {0.0, 1.0}
    if mode == "deterministic":  # the generator's own probabilities, thresholded
        model.eval()
        torch.manual_seed(5)
        z = model.sample_noise(len(real))
        probs = torch.sigmoid(model.generator(z))
        assert torch.equal(model._notes(probs), binarize(probs, threshold=model.config.threshold))
    plain = _model("bilstm")  # the paper's: the probabilities themselves
    plain.discriminator.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    plain.losses({"x": real}, step="generator")
    assert ((seen[-1] > 0) & (seen[-1] < 1)).float().mean() > 0.9
    with pytest.raises(ParameterError):
        _model("bilstm", binary_neurons="sometimes")


def test_generation_chains_phrases_upsamples_and_interpolates() -> None:
    rep = {"name": "pianoroll", "resolution": 4, "beats_per_bar": 2, "lowest_pitch": 60, "n_pitches": P}
    # 2 bars of 2 beats at 2 steps per beat: 8 steps per phrase, each repeated twice back to 4 per beat.
    model = Model(
        Config.tiny(arch="cnn", n_bars=2, **SIZES), DataInfo(n_features=P, seq_len=8, representation=rep)
    )
    assert model.factor == 2
    seen: list[torch.Tensor] = []
    model.generator.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    request = GenerationRequest(n=5, n_frames=20, generator=torch.Generator().manual_seed(0))
    out = model.eval().generate(request)
    assert out.shape == (5, 20, P) and set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out[:, 0::2], out[:, 1::2])  # steps repeated back to the store's resolution
    assert seen[0].shape == (5 * 2, 8)  # 20 steps need two phrases of 16
    for kind in ("linear", True):
        seen.clear()
        request = GenerationRequest(
            n=5, n_frames=16, generator=torch.Generator().manual_seed(0), options={"interpolate": kind}
        )
        model.generate(request)
        z = seen[0].view(5, 8)
        ends = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(z[0], ends[0], atol=1e-5) and torch.allclose(z[-1], ends[1], atol=1e-5)
        if kind == "linear":
            assert torch.allclose(z[2], (ends[0] + ends[1]) / 2, atol=1e-5)
        else:
            assert torch.allclose(z[2], slerp(ends[0], ends[1], torch.tensor([0.5]))[0], atol=1e-5)
    with pytest.raises(ParameterError, match="unknown GAN generation options"):
        model.generate(GenerationRequest(n=1, n_frames=8, generator=None, options={"temperature": 1}))
    with pytest.raises(ParameterError, match="n_bars"):
        Model(
            Config.tiny(arch="cnn", n_bars=4, **SIZES), DataInfo(n_features=P, seq_len=12, representation=rep)
        )


def test_step_noise_gives_every_step_its_own_values() -> None:
    plain, stepped = _model("bilstm").eval(), _model("bilstm", step_noise=3).eval()
    assert plain.noise_size == 8 and stepped.noise_size == 8 + 3 * T
    assert plain.sample_noise(2).shape == (2, 8) and stepped.sample_noise(2).shape == (2, 8 + 3 * T)
    with torch.no_grad():
        # z alone, repeated: the first LSTM sees the same input at every step
        z = torch.randn(1, 8)
        stepped_z = torch.cat([z, torch.zeros(1, 3 * T)], dim=1)
        other = stepped_z.clone()
        other[0, 8 + 3 * 5 : 8 + 3 * 6] = 1.0  # the noise of step 5 only
        a, b = stepped.generator(stepped_z), stepped.generator(other)
    assert not torch.allclose(a, b)
    request = GenerationRequest(n=3, n_frames=2 * T, generator=torch.Generator().manual_seed(0), options={})
    roll = stepped.generate(dataclasses.replace(request, options={"interpolate": "slerp"}))
    assert roll.shape == (3, 2 * T, P)


def test_position_gives_the_bilstm_generator_a_clock_of_steps_and_bars() -> None:
    plain, clocked = _model("bilstm", n_bars=2).eval(), _model("bilstm", n_bars=2, position=True).eval()
    code = clocked.generator.position  # (T, steps per bar + bars)
    assert code.shape == (T, T // 2 + 2) and plain.generator.position.shape == (T, 0)
    assert code[:, : T // 2].argmax(1).tolist() == [t % (T // 2) for t in range(T)]
    assert code[:, T // 2 :].argmax(1).tolist() == [t // (T // 2) for t in range(T)]
    assert clocked.generator.lstm.input_size == 8 + T // 2 + 2 and clocked.noise_size == plain.noise_size
    # not saved: a checkpoint holds the same weight names with or without the clock
    assert clocked.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        z = torch.randn(2, clocked.noise_size)
        a = clocked.generator(z)
        clocked.generator.position = code.roll(3, dims=0)  # the same steps at other places in the bar
        assert not torch.allclose(a, clocked.generator(z))


def test_z_into_state_starts_the_first_lstm_from_z_and_feeds_the_steps_their_noise_alone() -> None:
    model = _model("bilstm", z_into="state", step_noise=3, position=True, n_bars=2).eval()
    gen = model.generator
    assert gen.lstm.input_size == 3 + T // 2 + 2 and model.noise_size == 8 + 3 * T
    z = torch.randn(2, model.noise_size)
    with torch.no_grad():
        h0, c0 = torch.tanh(gen.initial(z[:, :8])).chunk(2, dim=1)
        x = torch.cat([z[:, 8:].reshape(2, T, 3), gen.position.expand(2, -1, -1)], dim=2)
        by_hand, _ = gen.lstm(x, (h0[None], c0[None]))
        seen = {}
        gen.lstm.register_forward_hook(lambda m, i, o: seen.update(out=o[0]))
        out = gen(z)
    assert out.shape == (2, T, P) and torch.allclose(seen["out"], by_hand)
    # z still decides the phrase: another z, the same step noise, another phrase
    other = z.clone()
    other[:, :8] = torch.randn(2, 8)
    with torch.no_grad():
        assert not torch.allclose(out, gen(other))
    with pytest.raises(ParameterError, match="step_noise"):
        _model("bilstm", z_into="state", step_noise=0)
    with pytest.raises(ParameterError, match="z_into"):
        _model("bilstm", z_into="nowhere")


def test_mean_pooling_discriminator_reads_every_step_alike() -> None:
    last, mean = _model("bilstm").eval(), _model("bilstm", d_pool="mean").eval()
    mean.discriminator.load_state_dict(last.discriminator.state_dict())  # the same weights
    real = _real()
    with torch.no_grad():
        out, _ = last.discriminator.bilstm(last.discriminator.lstm(real)[0])  # (B, T, H)
        pooled = out.mean(dim=1)
        by_hand = mean.discriminator.head(pooled)[:, 0]
        assert torch.allclose(mean.discriminator(real), by_hand, atol=1e-6)
        assert not torch.allclose(last.discriminator(real), by_hand)
        # still a reader of order, not of a bag of steps: the roll reversed in time scores otherwise
        assert not torch.allclose(mean.discriminator(real), mean.discriminator(real.flip(1)))
    with pytest.raises(ParameterError, match="d_pool"):
        _model("bilstm", d_pool="max")


def test_r1_adds_half_gamma_times_the_squared_gradient_on_real_rolls() -> None:
    plain, penalised = _model("bilstm").eval(), _model("bilstm", r1=4.0).eval()
    real = _real()
    torch.manual_seed(3)
    base = plain.losses({"x": real}, step="discriminator")
    torch.manual_seed(3)
    out = penalised.losses({"x": real}, step="discriminator")
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(penalised.discriminator(x).sum(), x)
    by_hand = grad.pow(2).sum(dim=(1, 2)).mean()
    assert out["r1"].item() == pytest.approx(by_hand.item(), rel=1e-4) and by_hand > 0
    assert out["discriminator"].item() == pytest.approx(
        base["discriminator"].item() + 2.0 * by_hand.item(), rel=1e-4
    )
    # the penalty trains the discriminator (a double backward through its LSTMs) ...
    out["discriminator"].backward()
    assert all(p.grad is not None for p in penalised.discriminator.parameters())
    # ... and validation, without gradients, still reports its value
    with torch.no_grad():
        assert penalised.losses({"x": real})["r1"].item() == pytest.approx(by_hand.item(), rel=1e-4)


def test_phrase_gap_sees_the_burst_and_held_note_that_note_gap_takes_for_music() -> None:
    def voices(seed: int) -> torch.Tensor:  # four voices in quarter notes (2 steps), 4 bars of 8
        rng = np.random.default_rng(seed)
        roll = torch.zeros(8, 32, 84)
        for b in range(8):
            for t in range(0, 32, 2):
                for v, base in enumerate((36, 43, 48, 55)):
                    roll[b, t : t + 2, base + int(rng.integers(0, 5)) + v] = 1.0
        return roll

    real, moving = voices(0), voices(1)  # moving: other phrases of the same kind of music
    # a burst of 16 notes on the first step, then one held note; about as many onsets
    burst = torch.zeros_like(real)
    burst[:, 0, 10:80:4] = 1.0
    burst[:, :, 60] = 1.0
    burst[:, 1:, 10:80:4] = 0.0
    burst[:, 0:30:2, 20] = 1.0  # a repeated low note keeps the onsets near the real ones
    burst[:, :, 61] = 1.0
    burst[:, :, 62] = 1.0
    assert note_gap(burst, real).item() < 0.05  # note_gap has it near the real phrases
    assert phrase_gap(moving, real).item() < 0.3
    assert phrase_gap(burst, real).item() > 2.0 > 6 * phrase_gap(moving, real).item()
    # each of its parts moves it: a transposition by a tritone changes the pitch classes alone
    tritone = real.roll(6, dims=2)
    assert 0.3 < phrase_gap(tritone, real).item() < 1.5
    # pitch classes are counted per bar, as paper 004's UPC: C-G held against C-G then D-A
    held = torch.zeros(1, 8, 24)
    held[0, :, [0, 7]] = 1.0
    held[0, 3] = 0.0  # struck again in the second half: no bar without a note start
    moved = torch.zeros(1, 8, 24)
    moved[0, :4, [0, 7]] = 1.0
    moved[0, 4:, [2, 9]] = 1.0
    one_bar, two_bars = (phrase_gap(moved, held, n_bars=n).item() for n in (1, 2))
    assert one_bar - two_bars == pytest.approx(1.0)  # 4 classes in the bar against 2: the gap at 1


def test_phrase_gap_sees_a_chord_held_for_bars_after_its_burst() -> None:
    # four voices struck on every quarter (2 steps), 4 bars of 8 steps; then the same first
    # chord held for the whole phrase: a rendered piano dies away under it (the `silent` clips
    # of the tiny bi-LSTM GAN at a minute of training)
    real = torch.zeros(4, 32, 84)
    for t in range(0, 32, 2):
        real[:, t, [28, 40 + (t // 2) % 5, 47, 52]] = 1.0  # a chord on every quarter, the melody moving
    held = torch.zeros_like(real)
    held[:, :, [28, 40, 47, 52]] = 1.0
    struck = held.clone()
    struck[:, 7::8] = 0.0  # the same chord struck again at every bar
    # held: 24 of 32 steps come a bar or more after the latest note start; struck: none
    assert phrase_gap(held, real, n_bars=4).item() - phrase_gap(struck, real, n_bars=4).item() > 1.0
    assert phrase_gap(real.clone(), real, n_bars=4).item() == pytest.approx(0.0, abs=1e-6)


def test_slerp_keeps_the_norm_between_orthogonal_vectors() -> None:
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    z = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(z.norm(dim=-1), torch.full((5,), 3.0)) and torch.allclose(z[0], a)
    assert torch.allclose(z[-1], b, atol=1e-6)
    assert torch.allclose(slerp(a, a, torch.tensor([0.5]))[0], a)  # parallel: linear


# ----------------------------------------------------------------------------- the CLI
TINY = [
    *(f"model.{k}={v}" for k, v in SIZES.items() if k != "d_dense_sizes"),
    "model.d_dense_sizes=[8, 4]",
    "model.n_bars=2",
    "model.pretrain_steps=2",
    "data.options={n_bars: 2, hop_bars: 2, resolution: 2, transpose: 2}",
    "data.batch_size=4",
    "train.log_every=1",
    "train.tensorboard=false",
    "train.progress=false",
]


@pytest.fixture(scope="module")
def rolls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gan") / "bach-rolls"
    prepare_corpus(
        "music21:chorales",
        out,
        representation="pianoroll",
        rep_params={"lowest_pitch": 24, "n_pitches": 84, "resolution": 4},
        max_files=3,
        split=(0.67, 0.33, 0.0),
        progress=False,
    )
    return out


@pytest.mark.parametrize("key", ["bilstm_gan", "cnn_lstm_gan"])
def test_cli_trains_resumes_generates_and_evaluates(
    key: str, rolls: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / key
    args = ["train", f"{key}-tiny", "--data", str(rolls), "--run", str(run), *TINY]
    assert main([*args, "train.max_epochs=1"]) == 0
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert step > 0
    assert main([*args, "train.max_epochs=2"]) == 0  # resumes
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 2 * step and state["model"] == key
    assert set(state["optimizers"]) == {"discriminator", "generator"}
    train_rows = [r for r in read_metrics(run / "metrics.csv") if r["split"] == "train"]
    assert set(train_rows[0]) == {
        *(
            "epoch",
            "step",
            "split",
            "discriminator",
            "generator",
            "d_real",
            "d_fake",
            "density_gap",
            "note_gap",
            "phrase_gap",
        ),
        *(["feature_gap"] if key == "bilstm_gan" else []),  # bilstm_gan-tiny's feature matching
        *("grad_norm/discriminator", "grad_norm/generator", "lr/discriminator", "lr/generator"),
        *("n_nonfinite", "seconds_per_step"),
    }
    # pre-training for the trainer's first 2 steps (model.pretrain_steps=2), not again after the resume
    assert [r["discriminator"] == 0.0 for r in train_rows] == [r["step"] <= 2 for r in train_rows]

    out = tmp_path / "samples"
    assert main(["generate", str(run), "--beats", "8", "--n", "2", "--seed", "3", "--out", str(out)]) == 0
    for i in range(2):
        for suffix in (".mid", ".wav", ".png", ".json"):
            assert (out / f"{key}-seed3-{i}{suffix}").is_file(), suffix
    meta = json.loads((out / f"{key}-seed3-0.json").read_text())
    assert meta["n_frames"] == 8 * 4 and meta["model"] == key
    capsys.readouterr()
    assert main(["generate", str(run), "--bars", "0", "--out", str(tmp_path / "none")]) == 1
    # it was "give one of seconds, beats or bars": 0 bars read as none, and 10 seconds taken too
    assert "bars must be a positive, finite number, got 0" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                str(run),
                "--n",
                "3",
                "--seconds",
                "8",
                "--option",
                "interpolate=true",
                "--out",
                str(tmp_path / "walk"),
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "walk").glob("*.png"))) == 3

    capsys.readouterr()
    table = tmp_path / "table"
    assert main(["evaluate", str(run), "--bars", "40", "--out", str(table)]) == 0
    printed = capsys.readouterr().out
    assert "| Training data |" in printed and f"| {key} |" in printed and "EB (%)" in printed
    rows = json.loads((table / "table1.json").read_text())["rows"]
    assert [r["n_bars"] for r in rows][1] == 40
    assert {"empty_bar_rate", "used_pitch_classes", "qualified_note_rate"} <= set(rows[1]["metrics"])
    assert (table / "table1.md").read_text().startswith("| | EB (%) | UPC | QN (%) |")
    assert np.isfinite(rows[0]["metrics"]["used_pitch_classes"])
    payload = assert_evaluates(run, rolls, tmp_path / "eval", seconds=8.0)
    (model,) = payload["sets"]
    assert {"empty_bar_rate", "used_pitch_classes", "qualified_note_rate"} <= set(model["symbolic"])
    assert payload["reference"]["symbolic"]["used_pitch_classes"] > 0
    assert all(c["midi"] and c["image"].endswith(".png") for c in model["clips"])


def test_the_phrase_length_comes_from_the_data() -> None:
    rep = {"name": "pianoroll", "resolution": 4, "beats_per_bar": 4, "lowest_pitch": 0, "n_pitches": P}
    window = {"n_bars": 2, "resolution": 2, "resolution_factor": 2, "steps_per_bar": 8}
    info = DataInfo(n_features=P, seq_len=16, representation=rep, window=window)
    model = Model(Config.tiny(arch="cnn", **SIZES), info)
    assert (model.n_bars, model.factor) == (2, 2)
    with pytest.raises(ParameterError, match="the data's phrases have 2 bars"):
        Model(Config.tiny(arch="cnn", n_bars=4, **SIZES), info)


def test_best_checkpoint_is_never_the_pretrained_generator() -> None:
    # the trainer chooses best.pt from this step count on: one after pre-training
    assert _model("bilstm", pretrain_steps=30).first_monitored_step == 31
    assert _model("cnn").first_monitored_step == 0
