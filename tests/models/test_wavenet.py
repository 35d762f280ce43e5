"""WaveNet (paper 002): shapes, causality, cached vs naive generation, styles, the CLI, collapse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cadenza.cli import main
from cadenza.errors import ParameterError
from cadenza.generation import silent_fraction
from cadenza.kernels import guards
from cadenza.models import DataInfo, GenerationRequest, get_model_spec
from cadenza.models.wavenet import DEFAULT_QUIET_DB, Config, Level, Model, draw, receptive_field
from cadenza.training import load_checkpoint
from tests.evaluation.helpers import assert_evaluates

torch.set_num_threads(1)

SR = 8000
MULAW = {"name": "waveform", "encoding": "mulaw", "n_classes": 256, "sample_rate": SR}
#: Real music: two Bach chorales and a Corelli trio-sonata movement from music21's corpus,
#: rendered to audio; (collection, file name, split, first second, seconds).
PIECES = [
    ("bach", "bwv1.6.mxl", "train", 0.0, 6.0),
    ("corelli", "1grave.xml", "train", 0.0, 6.0),
    ("bach", "bwv10.7.mxl", "valid", 0.0, 2.0),
    ("corelli", "1grave.xml", "test", 30.0, 2.0),
]
#: wavenet-tiny made smaller still (receptive field 65) so that the CLI tests take seconds.
TINY = [
    "model.n_stacks=1",
    "model.n_layers=6",
    "model.residual_channels=8",
    "model.dilation_channels=8",
    "model.skip_channels=32",
    "model.label_channels=4",
    "data.options.n_input=192",
    "data.options.n_output=192",
    "data.options.hop=96",
    "data.batch_size=16",
    "optim.lr=0.01",
    "train.log_every=5",
    "train.save_every_steps=0",
    "train.sample_every=0",
    "train.tensorboard=false",
    "train.progress=false",
]


def real_audio(sr: int = SR) -> list[tuple[str, np.ndarray, str, str]]:
    """``(id, samples, split, composer)`` for :data:`PIECES` (renderings are cached by cadenza)."""
    from music21 import corpus

    from cadenza.data.items import SourceItem
    from cadenza.data.prepare import load_audio_item

    out = []
    for i, (composer, name, split, start, seconds) in enumerate(PIECES):
        path = next(p for p in corpus.getComposer(composer) if p.name == name)
        y = load_audio_item(SourceItem(f"{composer}{i}", "score", str(path)), sr)
        out.append((f"{composer}{i}", y[int(start * sr) : int((start + seconds) * sr)], split, composer))
    return out


def make_audio_store(path: Path, encoding: str) -> Path:
    """A waveform store (``float`` or ``mulaw``) of :func:`real_audio`, labelled by composer."""
    from cadenza.data.store import create_store
    from cadenza.representations import make_representation

    rep = make_representation("waveform", sample_rate=SR, encoding=encoding)
    items = {i: (rep.encode(y), split, {"composer": c}) for i, y, split, c in real_audio()}
    create_store(path, rep, items)
    return path


def tiny_model(labels: tuple[str, ...] = ("bach", "corelli"), **changes: object) -> Model:
    torch.manual_seed(0)
    base = {"n_stacks": 2, "n_layers": 4, "residual_channels": 8, "dilation_channels": 8}
    config = Config.tiny(**{**base, "skip_channels": 16, "label_channels": 4, **changes})
    return Model(config, DataInfo(n_features=1, labels=labels, representation=MULAW)).eval()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_audio_store(tmp_path_factory.mktemp("wavenet") / "m21-mulaw", "mulaw")


def test_receptive_field_formula_and_shapes() -> None:
    assert receptive_field(5, 10) == 5117  # the paper size of the issue
    assert receptive_field(2, 9) == 1024
    model = tiny_model()
    assert model.receptive_field == receptive_field(2, 4) == 32
    assert model.dilations == [1, 2, 4, 8, 1, 2, 4, 8]
    c = torch.randint(0, 256, (3, 50))
    assert model(c, model.label_vector(torch.tensor([0, 1, -1]))).shape == (3, 256, 50)
    # the receptive field is exact: the last output depends on the last 32 inputs and no more
    with torch.no_grad():  # larger weights, so that the one long path to the oldest input shows
        for p in model.parameters():
            p.mul_(3)
    c2 = c.clone()
    c2[:, 50 - 33] = (c[:, 50 - 33] + 1) % 256
    assert torch.equal(model(c)[:, :, -1], model(c2)[:, :, -1])
    c2[:, 50 - 32] = (c[:, 50 - 32] + 1) % 256
    assert not torch.equal(model(c)[:, :, -1], model(c2)[:, :, -1])


def test_causal() -> None:
    model = tiny_model()
    c = torch.randint(0, 256, (2, 40))
    before = model(c)
    for t in (0, 17, 38):
        changed = c.clone()
        changed[:, t + 1 :] = torch.randint(0, 256, changed[:, t + 1 :].shape)
        after = model(changed)
        assert torch.equal(before[:, :, : t + 1], after[:, :, : t + 1])  # output at <= t is untouched


def test_loss_decreases_on_a_small_batch() -> None:
    model = tiny_model().train()
    c = torch.from_numpy(np.tile(np.arange(100, 160), 3)[None].repeat(4, 0))  # a sawtooth of classes
    batch = {"x": c[:, :-1], "y": c[:, 1:], "label": torch.tensor([0, 1, 0, -1])}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model.losses(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    with pytest.raises(ParameterError, match="longer than the receptive field"):
        model.losses({"x": c[:, :20], "y": c[:, 1:21]})


@pytest.mark.parametrize("batch", [1, 3])
def test_cached_and_fast_generation_equal_naive(batch: int) -> None:
    assert guards.passes("numba")  # a declared dependency; without it "fast" would run as "cached"
    model = tiny_model()
    seed = torch.randint(0, 256, (batch, 45))
    cond = model.label_vector(torch.rand(batch, 2))
    u = torch.rand(batch, 60, dtype=torch.float64)
    naive = model.sample(seed, 60, cond=cond, uniforms=u, mode="naive", return_logits=True)
    for mode in ("cached", "fast"):
        classes, logits = model.sample(seed, 60, cond=cond, uniforms=u, mode=mode, return_logits=True)
        assert (logits - naive[1]).abs().max() < 1e-4, mode
        assert torch.equal(classes, naive[0]), mode
    # min-p: every mode leaves out the same unlikely classes
    cut = model.sample(seed, 60, cond=cond, uniforms=u, mode="naive", min_p=0.95, return_logits=True)
    for mode in ("cached", "fast"):
        assert torch.equal(model.sample(seed, 60, cond=cond, uniforms=u, mode=mode, min_p=0.95)[0], cut[0]), (
            mode
        )
    p = cut[1].softmax(-1)  # (B, 60, C): what each draw was drawn from
    drawn = p.gather(2, cut[0][:, 45:, None])[..., 0]
    assert (drawn >= 0.95 * p.max(-1).values * (1 - 1e-5)).all()
    assert not torch.equal(cut[0], naive[0])  # an untrained model's flat softmax: min-p changes draws
    # a seed shorter than the receptive field (zero history), no conditioning, greedy
    plain = tiny_model(labels=())
    short = seed[:, :3]
    ref = plain.sample(short, 40, temperature=0.0, mode="naive", return_logits=True)
    for mode in ("cached", "fast"):
        classes, logits = plain.sample(short, 40, temperature=0.0, mode=mode, return_logits=True)
        assert (logits - ref[1]).abs().max() < 1e-4 and torch.equal(classes, ref[0])


def test_min_p_is_lifted_in_a_rest_and_every_mode_agrees() -> None:
    """``quiet_db``: a stream whose recent level is below it draws from every class, the others
    under ``min_p``; naive, cached and fast draw the same samples, and the level they leave agrees."""
    model = tiny_model(labels=())
    with torch.no_grad():
        model.head2.weight.mul_(30)  # a peaked softmax, so that the cut leaves classes out
    rest = torch.full((2, 45), 128)  # digital silence: the level starts far below -40 dBFS
    loud = torch.randint(0, 256, (2, 45))  # full-scale noise: far above it
    seed = torch.cat([rest, loud])
    u = torch.rand(4, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    runs = {}
    for mode in ("naive", "cached", "fast"):
        for quiet in (None, DEFAULT_QUIET_DB):
            runs[mode, quiet] = model.sample(
                seed, 80, uniforms=u, mode=mode, min_p=0.95, quiet_db=quiet, return_logits=True
            )
    for quiet in (None, DEFAULT_QUIET_DB):
        for mode in ("cached", "fast"):
            assert torch.equal(runs[mode, quiet][0], runs["naive", quiet][0]), (mode, quiet)
    cut, lifted = runs["naive", None], runs["naive", DEFAULT_QUIET_DB]
    # the loud streams are cut the same way either way; the rest's first draws are not cut
    assert torch.equal(lifted[0][2:], cut[0][2:])
    assert not torch.equal(lifted[0][:2, 45:], cut[0][:2, 45:])
    p = lifted[1][:2, 0].softmax(-1)  # what the rest's first sample was drawn from
    drawn = p.gather(1, lifted[0][:2, 45:46])[:, 0]
    assert (drawn < 0.95 * p.max(-1).values).any()  # a class that min_p would have left out
    # the level: an exponential mean square over the receptive field, started over the seed
    level = Level(seed, 256, model.receptive_field, DEFAULT_QUIET_DB)
    assert (level.ms[:2] < level.threshold).all() and (level.ms[2:] > level.threshold).all()
    assert level.threshold == pytest.approx(1e-4) and level.alpha == 1 - 1 / model.receptive_field
    assert not Level(seed, 256, model.receptive_field, None).on


def test_the_level_follows_a_known_signal() -> None:
    """A constant -20 dBFS signal: the mean square climbs from silence to 0.01 with time constant tau."""
    from cadenza.representations.waveform import mu_law_encode

    c = mu_law_encode(torch.full((1, 2000), 0.1), n_classes=256)
    level = Level(c[:, :1], 256, 100, -40.0)
    y2 = level.squares[c[0, 0]].item()
    for t in range(1, 2000):
        level.draw(torch.zeros(1, 256), 0.0, torch.tensor([0.5]), 0.2)  # flat logits, greedy: class 0
        if t == 1:
            assert level.ms.item() == pytest.approx((1 - 1 / 100) * (y2 / 100) + 1 / 100 * 1.0)
    assert level.ms.item() == pytest.approx(1.0, rel=1e-6)  # class 0 decodes to -1: full scale
    assert y2 == pytest.approx(0.01, rel=0.05)


#: ``state_dict`` keys (n_stacks=1, n_layers=3) as of the commit before the kernels moved out
#: (8e0acde): checkpoints saved before must keep loading.
STATE_DICT_KEYS = [
    "input_conv.weight", "input_conv.bias", "dilated.0.weight", "dilated.0.bias", "dilated.1.weight",
    "dilated.1.bias", "dilated.2.weight", "dilated.2.bias", "skip.0.weight", "skip.0.bias", "skip.1.weight",
    "skip.1.bias", "skip.2.weight", "skip.2.bias", "residual.0.weight", "residual.0.bias", "residual.1.weight",
    "residual.1.bias", "label_embedding.weight", "label_proj.0.weight", "label_proj.1.weight",
    "label_proj.2.weight", "head1.weight", "head1.bias", "head2.weight", "head2.bias",
]  # fmt: skip


def test_checkpoint_weight_names_are_unchanged() -> None:
    labelled = tiny_model(n_stacks=1, n_layers=3)
    assert list(labelled.state_dict()) == STATE_DICT_KEYS
    unlabelled = tiny_model(labels=(), n_stacks=1, n_layers=3)
    assert list(unlabelled.state_dict()) == [k for k in STATE_DICT_KEYS if not k.startswith("label_")]


def test_draw_inverts_the_cdf_with_temperature() -> None:
    logits = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    assert [draw(logits, 1.0, torch.tensor([u])).item() for u in (0.1, 0.3, 0.6, 0.999)] == [0, 1, 2, 2]
    assert draw(logits, 0.0, torch.tensor([0.1])).item() == 2
    assert draw(logits, 1e-3, torch.tensor([0.01])).item() == 2  # cold: the most likely class
    # min_p 0.6: the classes at half the likeliest's probability are left out
    assert [draw(logits, 1.0, torch.tensor([u]), min_p=0.6).item() for u in (0.01, 0.5, 0.99)] == [2, 2, 2]
    # min_p 0.45 keeps them: the plain CDF
    assert [draw(logits, 1.0, torch.tensor([u]), min_p=0.45).item() for u in (0.1, 0.3, 0.6)] == [0, 1, 2]


def test_style_blends_are_validated() -> None:
    model = tiny_model()
    assert torch.allclose(model.style_weights({"bach": 1, "corelli": 3}), torch.tensor([0.25, 0.75]))
    assert torch.equal(model.style_weights(None), torch.tensor([0.5, 0.5]))
    one = model.label_vector(model.style_weights({"corelli": 2.0})[None])
    assert torch.equal(one, model.label_vector(torch.tensor([1])))  # a blend of one label is that label
    with pytest.raises(ParameterError, match="unknown style 'mozart'; this model knows bach, corelli"):
        model.style_weights({"mozart": 1.0})
    for bad in ({"bach": -1.0}, {"bach": 0.0}, {"bach": float("nan")}):
        with pytest.raises(ParameterError):
            model.style_weights(bad)
    with pytest.raises(ParameterError, match="without labels"):
        tiny_model(labels=()).style_weights({"bach": 1.0})


def test_generate_lengths_and_options() -> None:
    model = tiny_model(n_stacks=1, n_layers=3)
    n_frames = 5 * 16000  # 5 s at 16 kHz
    request = GenerationRequest(
        n=2, n_frames=n_frames, generator=torch.Generator().manual_seed(0), options={"seed": "silence"}
    )
    out = model.generate(request)
    assert out.shape == (2, n_frames, 1) and out.min() >= 0 and out.max() <= 255
    assert torch.equal(out, out.round())
    long = GenerationRequest(n=1, n_frames=120 * 4000, generator=torch.Generator().manual_seed(0))
    assert model.generate(long).shape == (1, 120 * 4000, 1)  # 2 minutes at 4 kHz
    with pytest.raises(ParameterError, match="temperature"):
        model.generate(GenerationRequest(n=1, n_frames=5, generator=None, options={"bogus": 1}))
    for bad in (-0.1, 1.0):
        with pytest.raises(ParameterError, match="min_p"):
            model.generate(GenerationRequest(n=1, n_frames=5, generator=None, options={"min_p": bad}))
    for bad in (3.0, "loud", float("nan"), [1]):
        with pytest.raises(ParameterError, match="quiet_db"):
            model.generate(GenerationRequest(n=1, n_frames=5, generator=None, options={"quiet_db": bad}))
    for ok in ("off", False, None, -60, float("-inf")):
        assert model.generate(
            GenerationRequest(n=1, n_frames=5, generator=None, options={"quiet_db": ok})
        ).shape == (1, 5, 1)


def test_silent_fraction_of_known_signals() -> None:
    t = np.arange(SR) / SR
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    assert silent_fraction(tone, SR) == 0.0
    assert silent_fraction(np.zeros(SR), SR) == 1.0
    assert silent_fraction(np.concatenate([tone, np.zeros(SR)]), SR) == 0.5
    assert silent_fraction(np.full(SR, 10 ** (-55 / 20)), SR) == 1.0  # -55 dBFS counts as silence
    assert silent_fraction(np.full(SR, 10 ** (-45 / 20)), SR) == 0.0
    assert silent_fraction(np.zeros(0), SR) == 1.0


def test_cli_train_resume_generate_with_styles(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", "wavenet-tiny", "--data", str(store), "--run", str(run), *TINY]
    assert main([*args, "train.max_steps=20"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 20
    assert main([*args, "train.max_steps=40"]) == 0  # resumes
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 40 and state["data_info"]["labels"] == ["bach", "corelli"]
    out = tmp_path / "mix"
    gen = ["generate", str(run), "--seconds", "1", "--seed", "3", "--out", str(out)]
    assert main([*gen, "--style", "bach=0.5,corelli=0.5", "--option", "temperature=0.9"]) == 0
    meta = json.loads((out / "run-seed3-0.json").read_text())
    assert meta["options"] == {"style": {"bach": 0.5, "corelli": 0.5}, "temperature": 0.9}
    assert meta["seed_source"]["kind"] == "store"
    y, sr = sf.read(out / "run-seed3-0.wav")
    assert sr == SR and y.shape == (SR,)
    assert meta["silent_fraction"] == pytest.approx(silent_fraction(y, sr), abs=0.02)  # of the sound written
    assert_evaluates(run, store, tmp_path / "eval", seconds=0.5)
    assert main([*gen, "--style", "beethoven=0.5,mozart=0.5"]) != 0
    assert "unknown style 'beethoven'; this model knows bach, corelli" in capsys.readouterr().err


def test_tiny_wavenet_on_real_music_does_not_fall_silent(store: Path, tmp_path: Path) -> None:
    """Paper 002's WaveNet fell silent after a second; ours, trained briefly on real audio, does not."""
    run = tmp_path / "run"
    assert (
        main(["train", "wavenet-tiny", "--data", str(store), "--run", str(run), *TINY, "train.max_steps=150"])
        == 0
    )
    for seed_kind in ("real", "silence"):
        out = tmp_path / seed_kind
        args = [
            "generate",
            str(run),
            "--seconds",
            "3",
            "--n",
            "2",
            "--out",
            str(out),
            "--option",
            f"seed={seed_kind}",
        ]
        assert main(args) == 0
        for meta in sorted(out.glob("*.json")):
            silent = json.loads(meta.read_text())["silent_fraction"]
            assert silent < 0.5, (seed_kind, meta.name, silent)


def test_registered_with_paper_and_tiny_configs() -> None:
    from cadenza.training.config import load_config

    spec = get_model_spec("wavenet")
    assert spec.dataset == "audio"
    paper = load_config("wavenet-paper")
    assert receptive_field(paper.model.n_stacks, paper.model.n_layers) == 5117
    assert paper.model.skip_channels == 512 and paper.data.label_key == "composer"
    assert paper.data.options["n_input"] > 5117 and paper.data.options["shift"] == 1
    tiny = load_config("wavenet-tiny")
    assert tiny.data.options["n_input"] > receptive_field(tiny.model.n_stacks, tiny.model.n_layers)
    # both leave out the windows whose target is mostly silence (docs/models.md#wavenet)
    assert tiny.data.options["skip_quiet"] is True and paper.data.options["skip_quiet"] is True


def test_a_float_store_is_mu_law_encoded_on_the_fly() -> None:
    """The model derives its input from a float waveform store instead of refusing it."""
    float_rep = {"name": "waveform", "encoding": "float", "n_classes": 256, "sample_rate": SR}
    torch.manual_seed(0)
    model = Model(
        Config.tiny(n_stacks=1, n_layers=3, use_full_context_only=False),
        DataInfo(n_features=1, representation=float_rep),
    )
    assert model.encodes_input and model.n_classes == 256
    x = 0.3 * torch.sin(torch.arange(2 * 64, dtype=torch.float32) / 5).reshape(2, 64)
    assert torch.isfinite(model.losses({"x": x, "y": x.roll(-1, 1)})["loss"])
    seed = x[:, :, None]
    out = model.generate(
        GenerationRequest(n=2, n_frames=10, generator=torch.Generator().manual_seed(0), seed=seed)
    )
    assert out.shape == (2, 10, 1) and out.dtype == torch.float32 and out.abs().max() <= 1.0
    with pytest.raises(ParameterError, match="model.n_classes=128 but the store's mu-law has 256"):
        Model(Config.tiny(n_classes=128), DataInfo(n_features=1, representation=MULAW))


def test_a_seed_from_the_held_out_files_is_music_not_a_silent_stretch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held-out file half digital silence, half Corelli: every raw-audio seed window is drawn
    again until it is louder than the silence flag's -50 dBFS; with one draw, about half are
    silent (a sample-level model continues those with silence)."""
    from cadenza.data.store import create_store
    from cadenza.generation import generator
    from cadenza.representations import make_representation

    rep = make_representation("waveform", sample_rate=SR, encoding="mulaw")
    _, y, _, _ = next(piece for piece in real_audio() if piece[2] == "test")
    half = np.concatenate([np.zeros_like(y), y])
    store = create_store(tmp_path / "s", rep, {"t": (rep.encode(half), "test", {})})

    def levels() -> np.ndarray:
        clips = generator.held_out_clips(store, 512, 40, np.random.default_rng(0))
        return np.array([np.sqrt(np.mean(rep.decode(f.astype(np.uint8)) ** 2)) for f, _ in clips])

    threshold = 10 ** (-50 / 20)
    assert (levels() > threshold).all()
    monkeypatch.setattr(generator, "SEED_DRAWS", 1)
    quiet = (levels() < threshold).mean()
    assert 0.3 < quiet < 0.7, quiet
