"""Does paper 003's VAE stay finite on ~300 clips of 30 s? The stabilised model against the plain one.

Paper 003 trained a dense VAE (MFCC clips of 20 x 1293 flattened to 25860 -> 2580 -> 128
latents -> 2580 -> 25860) on ~300 raw 30-second clips and saw its loss go to 1e22 and NaN.
This script builds such a corpus from music21's embedded scores and trains, in float32 and
from the same initial weights, for a fixed number of steps (default 1200, past the 1000 of the KL warm-up):

``stable``
    ``cadenza/configs/mfcc_vae-paper.yaml`` as shipped: coefficients standardised with the
    store's statistics, bounded encoder log-variance, Gaussian NLL with a learned variance per
    coefficient, KL warm-up, gradients clipped to ``train.grad_clip``, its Adam learning rate
    and batch size.
``paper``
    The plain VAE the paper describes: raw MFCCs (no normalisation), unbounded log-variance,
    unit-variance reconstruction, no warm-up, no clipping, Adam at Keras's default 1e-3.

Corpus: ``cadenza prepare SOURCE --representation mfcc`` (22.05 kHz, hop 512, 20
coefficients; 90% of the files train, 10% validate), windowed as the paper config does
(``seq_len 1293, hop 1293, shift 0``: non-overlapping 30.0-second clips; a file shorter
than 30 s gives none). ``--clips`` train clips are drawn from those (all when the corpus
has fewer: music21's ~410 Bach chorales last about 30 s each, so ``music21:bach`` gives
fewer than 300; ``--source music21:all`` adds the longer pieces). The number used is
recorded.

Recorded per variant: the loss every step (the negative ELBO per element, as
:meth:`cadenza.models.mfcc_vae.Model.losses` gives it; the KL weight of the warm-up
included), the gradient norm before clipping, the first step whose loss or gradient was not
finite, whether any weight became non-finite, the validation loss (full ELBO) and the active
latent units (batch-mean KL above 0.01 nats) every ``--valid-every`` steps, and seconds per
step. Results go to ``benchmarks/results/mfcc_vae_stability.json`` (``--out``).

    .venv/bin/python benchmarks/mfcc_vae_stability.py [--clips 300] [--steps 1200] [--source music21:bach]
    # a quick check of the script itself: a narrow model, few clips, few steps
    .venv/bin/python benchmarks/mfcc_vae_stability.py --max-files 24 --clips 8 --steps 5 --hidden 64 --out /tmp/vae.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from _machine import machine, run_as_cadenza

from cadenza.cli import main as cadenza
from cadenza.data.windows import SequenceWindows
from cadenza.models.mfcc_vae import ACTIVE_KL, Config, Model, kl_per_unit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "mfcc_vae_stability.json"
PAPER_YAML = ROOT / "cadenza" / "configs" / "mfcc_vae-paper.yaml"
#: The plain VAE of paper 003 (the ``paper`` variant): what the stabilisers change, undone.
PLAIN = {"logvar_min": None, "logvar_max": None, "learn_recon_variance": False, "kl_warmup_steps": 0}
PLAIN_LR = 1e-3  # Keras's Adam default


def prepare(source: str, out: Path, max_files: int | None, workers: int) -> Path:
    """An MFCC store of ``source`` (resumes when ``out`` exists)."""
    args = [
        "prepare",
        source,
        str(out),
        "--representation",
        "mfcc",
        "--split",
        "0.9,0.1,0.0",
        "--no-progress",
    ]
    if max_files:
        args += ["--max-files", str(max_files)]
    if cadenza([*args, "--workers", str(workers)]) != 0:
        raise SystemExit(f"cadenza prepare {source} failed")
    return out


def clips(store: Path, split: str, seq_len: int, normalization: str) -> tuple[torch.Tensor, Any]:
    """Every non-overlapping clip of ``seq_len`` frames of a split ``(N, T, 20)``, and its DataInfo."""
    ds = SequenceWindows(store, split, seq_len=seq_len, hop=seq_len, normalization=normalization, shift=0)
    if len(ds) == 0:
        return torch.zeros(0, seq_len, ds.store.n_features), ds.data_info()
    return torch.stack([ds[i]["x"] for i in range(len(ds))]), ds.data_info()


def train(
    variant: str,
    config: Config,
    info: Any,
    data: torch.Tensor,
    valid: torch.Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    grad_clip: float,
    valid_every: int,
    seed: int,
    max_nonfinite: int,
) -> dict[str, Any]:
    """``steps`` training steps as the trainer takes them; the record of the variant."""
    torch.manual_seed(seed)
    model = Model(config, info)  # the same initial weights for every variant
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)  # the trainer's (Keras's) eps
    order = torch.Generator().manual_seed(seed)
    rec: dict[str, Any] = {"variant": variant, "lr": lr, "grad_clip": grad_clip, "batch": batch}
    rec["n_weights"] = sum(p.numel() for p in model.parameters())
    rec.update(loss=[], recon=[], kl=[], grad_norm=[], valid=[], first_nonfinite_step=None, stopped_at=None)
    t0, in_a_row = time.perf_counter(), 0
    for step in range(steps):
        model.train()
        model.n_steps_trained = step
        x = data[torch.randint(0, len(data), (batch,), generator=order)]
        out = model.losses({"x": x})
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        loss, gnorm = out["loss"].item(), norm.item()
        finite = math.isfinite(loss) and math.isfinite(gnorm)
        in_a_row = 0 if finite else in_a_row + 1
        if not finite and rec["first_nonfinite_step"] is None:
            rec["first_nonfinite_step"] = step + 1
        if grad_clip > 0 and finite:
            torch.nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip, norm)
        opt.step()  # the paper's Keras loop stepped whatever the gradient was
        rec["loss"].append(loss)
        rec["recon"].append(out["recon"].item())
        rec["kl"].append(out["kl"].item())
        rec["grad_norm"].append(gnorm)
        if (step + 1) % valid_every == 0 or step + 1 == steps:
            rec["valid"].append({"step": step + 1, **evaluate(model, valid)})
            print(f"{variant:>6} step {step + 1}: loss {loss:.4g}, valid {rec['valid'][-1]}", flush=True)
        if in_a_row >= max_nonfinite:  # as the trainer gives up (train.max_nonfinite)
            rec["stopped_at"] = step + 1
            rec["valid"].append({"step": step + 1, **evaluate(model, valid)})
            break
    rec["seconds_per_step"] = (time.perf_counter() - t0) / len(rec["loss"])
    rec["final_kl_weight"] = model.kl_weight()
    rec["any_nonfinite_loss"] = rec["first_nonfinite_step"] is not None
    rec["weights_finite"] = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return rec


@torch.no_grad()
def evaluate(model: Model, valid: torch.Tensor, batch: int = 16) -> dict[str, float]:
    """Validation loss (full ELBO per element) and active units (mean KL per unit > ACTIVE_KL)."""
    if len(valid) == 0:
        return {}
    model.eval()
    losses, kls = [], []
    for i in range(0, len(valid), batch):
        x = valid[i : i + batch]
        losses.append(model.losses({"x": x})["loss"].item() * len(x))
        mu, logvar = model.encode(x)
        kls.append(kl_per_unit(mu, logvar).sum(0))
    kl = torch.stack(kls).sum(0) / len(valid)
    return {
        "loss": sum(losses) / len(valid),
        "active_units": int((kl > ACTIVE_KL).sum()),
        "kl": float(kl.sum()),
    }


def _finite(value: Any) -> Any:
    """Non-finite floats as strings ("nan", "inf"), so that the file is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default="music21:bach")
    parser.add_argument("--store", type=Path, help="an MFCC store to use (or to prepare into and keep)")
    parser.add_argument("--max-files", type=int, default=None, help="prepare at most this many files")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clips", type=int, default=300, help="training clips of 30 s (paper 003: ~300)")
    parser.add_argument("--steps", type=int, default=1200, help="training steps (the KL warm-up takes 1000)")
    parser.add_argument(
        "--max-nonfinite", type=int, default=20, help="stop a variant after this many in a row"
    )
    parser.add_argument("--valid-every", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=None, help="hidden width (default: the paper's 2580)")
    parser.add_argument("--latent", type=int, default=None, help="latent units (default: the paper's 128)")
    parser.add_argument("--variants", default="stable,paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run_as_cadenza()

    cfg = yaml.safe_load(PAPER_YAML.read_text())
    fields = {k: v for k, v in cfg["model"].items() if k not in ("name", "preset")}
    if args.hidden:
        fields["hidden_size"] = args.hidden
    if args.latent:
        fields["latent_size"] = args.latent
    seq_len = int(cfg["data"]["seq_len"])
    with tempfile.TemporaryDirectory(prefix="cadenza-vae-") as tmp:
        t0 = time.perf_counter()
        store = prepare(args.source, args.store or Path(tmp) / "store", args.max_files, args.workers)
        prepare_seconds = time.perf_counter() - t0
        records = []
        for variant in args.variants.split(","):
            stable = variant == "stable"
            data, info = clips(store, "train", seq_len, "standard" if stable else "none")
            valid, _ = clips(store, "valid", seq_len, "standard" if stable else "none")
            n_available = len(data)
            pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[: args.clips]
            data = data[pick]
            print(
                f"{variant}: {len(data)} of {n_available} train clips of {seq_len} frames, {len(valid)} valid",
                flush=True,
            )
            config = Config.paper(**fields) if stable else Config.paper(**{**fields, **PLAIN})
            rec = train(
                variant,
                config,
                info,
                data,
                valid,
                steps=args.steps,
                batch=int(cfg["data"]["batch_size"]),
                lr=float(cfg["optim"]["lr"]) if stable else PLAIN_LR,
                grad_clip=float(cfg["train"]["grad_clip"]) if stable else 0.0,
                valid_every=args.valid_every,
                seed=args.seed,
                max_nonfinite=args.max_nonfinite,
            )
            rec.update(
                n_train_clips=len(data),
                n_available_clips=n_available,
                n_valid_clips=len(valid),
                config=dict(vars(config)),
            )
            records.append(rec)
    result = {
        "benchmark": "mfcc_vae_stability",
        "machine": machine(),
        "source": args.source,
        "max_files": args.max_files,
        "seq_len": seq_len,
        "steps": args.steps,
        "prepare_seconds": round(prepare_seconds, 1),
        "date": time.strftime("%Y-%m-%d"),
        "variants": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_finite(result), indent=1) + "\n")
    for rec in records:
        last = rec["valid"][-1] if rec["valid"] else {}
        print(
            f"{rec['variant']:>6}: {rec['n_train_clips']} clips, first non-finite step {rec['first_nonfinite_step']}, "
            f"final loss {rec['loss'][-1]:.4g}, active units {last.get('active_units')}, "
            f"{rec['seconds_per_step']:.2f} s/step"
        )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
