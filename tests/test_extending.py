"""docs/extending.md, done: a model family and a representation defined here, one table line each.

The toy representation (raw samples in blocks) and the toy family (a GRU over frames) are
registered into ``REPRESENTATIONS`` and ``MODELS`` for the test alone; then a store is
prepared with the representation, the family trains, resumes, generates and is evaluated from
the command line, as any built-in family is. Nothing else in cadenza is told about them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cadenza.audio import write_audio
from cadenza.cli import main
from cadenza.models import MODELS, DataInfo, GenerationRequest, ModelSpec
from cadenza.representations import REPRESENTATIONS, Representation
from cadenza.representations.base import as_mono
from cadenza.training import load_checkpoint

SR = 8000


# ----------------------------------------------------------------------------- the representation
@dataclasses.dataclass(frozen=True)
class Blocks(Representation):
    """Raw samples in blocks of ``block_size``: an exact, trivial encoding."""

    name: ClassVar[str] = "blocks"
    is_exact: ClassVar[bool] = True
    sample_rate: int = SR
    block_size: int = 80

    @property
    def n_features(self) -> int:
        return self.block_size

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.block_size

    def encode(self, y: Any) -> np.ndarray:  # (n,) -> (ceil(n / N), N)
        y = as_mono(y)
        return np.pad(y, (0, -len(y) % self.block_size)).reshape(-1, self.block_size)

    def decode(self, frames: np.ndarray) -> np.ndarray:  # (n_blocks, N) -> (n_blocks * N,)
        return np.asarray(frames, np.float32).reshape(-1)


# ----------------------------------------------------------------------------- the family
@dataclasses.dataclass
class Config:
    hidden_size: int = dataclasses.field(default=64, metadata={"min": 1})

    @classmethod
    def paper(cls, **changes: Any) -> Config:
        return cls(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> Config:
        return cls(**{"hidden_size": 8, **changes})


class Model(nn.Module):
    def __init__(self, config: Config, info: DataInfo) -> None:
        super().__init__()
        self.n_seed_frames = int(info.seq_len or 1)
        self.rnn = nn.GRU(info.n_features, config.hidden_size, batch_first=True)
        self.out = nn.Linear(config.hidden_size, info.n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, T, F)
        h, _ = self.rnn(x)  # (B, T, H)
        return self.out(h)

    def losses(self, batch: dict[str, torch.Tensor], *, step: str = "loss") -> dict[str, torch.Tensor]:
        return {"loss": F.mse_loss(self(batch["x"]), batch["y"])}

    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> torch.Tensor:
        frames = request.seed  # (n, T, F), normalised
        out = []
        for _ in range(request.n_frames):
            nxt = self(frames)[:, -1:]  # (n, 1, F)
            nxt = nxt + 0.1 * torch.randn(nxt.shape, generator=request.generator)
            out.append(nxt)
            frames = torch.cat([frames[:, 1:], nxt], dim=1)
        return torch.cat(out, dim=1)


TINY_YAML = """\
model:
  name: toy_gru
  preset: tiny
data:
  dataset: sequence
  seq_len: 8
  batch_size: 4
optim:
  name: adam
  lr: 1.0e-3
train:
  max_epochs: 1
  sample_every: 0
  tensorboard: false
  progress: false
"""


@pytest.fixture()
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REPRESENTATIONS, "blocks", Blocks)
    monkeypatch.setitem(
        MODELS, "toy_gru", ModelSpec(key="toy_gru", module=__name__, summary="a GRU over frames")
    )


def test_a_family_and_a_representation_from_one_file_each(registered: None, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(3 * SR) / SR
    for i, f0 in enumerate((220.0, 262.0, 330.0, 392.0, 440.0, 494.0)):
        write_audio(
            music / f"tone{i}.wav", 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * t)) / 2, SR
        )
    store = tmp_path / "store"
    prepare = ["prepare", str(music), str(store), "--representation", "blocks", "--workers", "1"]
    assert main([*prepare, "--sample-rate", str(SR), "--split", "0.5,0.17,0.33"]) == 0
    assert json.loads((store / "manifest.jsonl").read_text().splitlines()[0])["status"] == "ok"

    config = tmp_path / "toy_gru-tiny.yaml"
    config.write_text(TINY_YAML)
    run = tmp_path / "run"
    assert main(["train", str(config), "--data", str(store), "--run", str(run)]) == 0
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert step > 0
    assert main(["train", str(config), "--data", str(store), "--run", str(run), "train.max_epochs=2"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2 * step  # resumed

    out = tmp_path / "samples"
    assert main(["generate", str(run), "--seconds", "1", "--n", "2", "--out", str(out)]) == 0
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2 and json.loads(wavs[0].with_suffix(".json").read_text())["model"] == "toy_gru"

    results = tmp_path / "results"
    args = ["evaluate", str(run), "--reference", str(store), "--out", str(results), "--n-clips", "3"]
    assert main([*args, "--seconds", "1", "--n-boot", "10"]) == 0
    assert json.loads((results / "metrics.json").read_text())["sets"][0]["n_clips"] == 3


def test_the_guide_names_what_the_test_uses() -> None:
    guide = (Path(__file__).parents[1] / "docs" / "extending.md").read_text()
    for name in (
        "MODELS",
        "REPRESENTATIONS",
        "DataInfo",
        "losses(batch, *, step)",
        "frames_for",
        "to_audio",
        "write",
    ):
        assert name in guide, name
