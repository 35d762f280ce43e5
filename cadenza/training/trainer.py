"""The one trainer: every model family trains through :class:`Trainer`.

The trainer calls a model's ``losses(batch)``, ``configure_optimizers(optim)`` (optional)
and ``generate(request)`` and nothing else model-specific (see :mod:`cadenza.models`). It
owns the loop and everything around it:

* **Optimisers** from the ``optim`` section; a model with several (a GAN) has them stepped
  in order, each ``optim.ratio[name]`` times per batch. Gradient clipping by global norm;
  a schedule per optimiser, stepped each epoch (``plateau`` on the monitored validation
  loss); early stopping.
* **Non-finite guard**: a step whose loss or gradient norm is NaN or infinite is not
  applied, so it never reaches the weights (they are reloaded from ``last.pt`` in the rare
  case that they hold non-finite values themselves); that optimiser's learning rate is
  multiplied by ``train.nonfinite_lr_factor`` and the step and batch are logged. After
  ``train.max_nonfinite`` such steps in a row, training stops with a :class:`TrainingDiverged`
  that says what to try.
* **Checkpoints** (:mod:`cadenza.training.checkpoint`): ``last.pt`` every ``save_every``
  epochs, every ``save_every_steps`` steps and whenever training stops; ``best.pt`` when the
  monitored loss improves. Running the same command again resumes exactly: the data order is
  a function of ``(seed, epoch)``, and the position in the epoch, the RNG states and the
  partial sums of the metrics are in ``last.pt``; on the CPU an interrupted and resumed run
  gives bitwise the same losses as one that was not interrupted.
* **Devices and scale**: CPU, CUDA or Apple MPS (:func:`~cadenza.training.distributed.resolve_device`),
  bf16 autocast on CUDA, DDP under ``torchrun`` with the global ``data.batch_size`` split
  across processes (so the result does not depend on their number; models with dropout or
  batch norm draw different masks or statistics per process, and match in distribution only).
  Rank 0 alone writes.
* **Logging**: a tqdm progress bar (epoch, step, loss, learning rate, time left),
  ``metrics.csv``, TensorBoard scalars, audio samples and figures, ``plots/loss.png`` each
  epoch, and samples in ``samples/`` every ``train.sample_every`` epochs.

A run directory holds ``config.yaml``, ``checkpoints/{last,best}.pt``, ``metrics.csv``,
TensorBoard events, ``plots/`` and ``samples/``.

Examples
--------
>>> result = train("fft_base-tiny", data="data/bach-fft", run="runs/bach-tiny")  # doctest: +SKIP
>>> result.best                                                                 # doctest: +SKIP
PosixPath('runs/bach-tiny/checkpoints/best.pt')
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cadenza.data.store import FeatureStore, atomic_write_text
from cadenza.errors import CadenzaError, ParameterError
from cadenza.models import DataInfo, get_model_spec
from cadenza.training import distributed
from cadenza.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from cadenza.training.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    build_config,
    config_stem,
    diff_configs,
    load_config,
)
from cadenza.training.data import (
    EpochBatchSampler,
    batch_size_of,
    build_dataset,
    normalizer_of,
    require_batches,
    to_device,
)
from cadenza.training.logs import Board, MetricsLog, loss_figure, read_metrics, save_figure
from cadenza.training.optim import build_optimizer, build_scheduler, current_lr, scale_lr, update_plan

log = logging.getLogger(__name__)

#: Config keys that may change when a run resumes; any other change needs a new run or --restart.
RESUMABLE_CHANGES = (
    "data.store",
    "data.num_workers",
    "train.max_epochs",
    "train.max_steps",
    "train.valid_every",
    "train.save_every",
    "train.save_every_steps",
    "train.sample_every",
    "train.sample_seconds",
    "train.log_every",
    "train.max_nonfinite",
    "train.nonfinite_lr_factor",
    "train.tensorboard",
    "train.progress",
)


class TrainingDiverged(CadenzaError):
    """The loss or the gradients stayed non-finite for ``train.max_nonfinite`` steps in a row."""


@dataclasses.dataclass
class TrainResult:
    """Where a call to :meth:`Trainer.fit` left the run."""

    run_dir: Path
    step: int
    epoch: int
    #: "finished", "max_steps", "early_stopping", "interrupted" or "already finished".
    stopped: str
    last: Path | None
    best: Path | None
    best_value: float | None
    metrics: Path


class _Losses(nn.Module):
    """``forward`` = the model's ``losses``, so that DDP sees every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.model.losses(batch)


def _finite(x: float) -> bool:
    return math.isfinite(x)


class Trainer:
    """Trains one experiment into one run directory.

    Parameters
    ----------
    config : ExperimentConfig
        The resolved experiment; ``config.data.store`` must name a feature store.
    run_dir : path
        Where the run lives. A ``checkpoints/last.pt`` there is resumed unless ``restart``.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    restart : bool
        Delete the run's checkpoints, metrics, events, plots and samples and start again.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        run_dir: str | os.PathLike,
        *,
        device: str = "auto",
        restart: bool = False,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.dist = distributed.setup(device)
        self.device = self.dist.device
        cfg = config
        if not cfg.data.store:
            raise ParameterError("no feature store: pass --data STORE (or set data.store in the config)")
        self.store = FeatureStore(cfg.data.store)
        self.spec = get_model_spec(cfg.model_name)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.last_path = self.ckpt_dir / "last.pt"
        self.best_path = self.ckpt_dir / "best.pt"
        self.metrics_path = self.run_dir / "metrics.csv"
        if restart and self.dist.is_main:
            self._clear_run()
        distributed.barrier(self.dist)

        # data
        self.train_set = build_dataset(cfg.data, self.store, "train")
        require_batches(self.train_set, cfg.data.batch_size, "train")
        labels = list(getattr(self.train_set, "labels", []) or [])
        valid = build_dataset(cfg.data, self.store, cfg.data.valid_split, labels=labels or None)
        self.valid_set = valid if len(valid) else None  # type: ignore[arg-type]
        if self.valid_set is None:
            log.warning(
                "the %r split has no windows: best.pt and the schedule follow the training loss",
                cfg.data.valid_split,
            )
        self.normalizer = normalizer_of(self.train_set)
        rep = self.store.representation
        self.info = DataInfo(
            n_features=self.store.n_features,
            seq_len=getattr(self.train_set, "seq_len", None),
            labels=tuple(labels),
            representation=rep.to_dict(),
            frame_rate=float(rep.frame_rate),
        )
        self.sampler = EpochBatchSampler(
            len(self.train_set),  # type: ignore[arg-type]
            cfg.data.batch_size,
            seed=cfg.train.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )

        # model and optimisers
        seed_everything(cfg.train.seed)
        self.model: nn.Module = self.spec.build(cfg.model, self.info).to(self.device)
        if hasattr(self.model, "configure_optimizers"):
            self.optimizers: dict[str, torch.optim.Optimizer] = dict(
                self.model.configure_optimizers(cfg.optim)
            )
        else:
            self.optimizers = {"loss": build_optimizer(self.model.parameters(), cfg.optim)}
        self.plan = update_plan(list(self.optimizers), cfg.optim)
        self.params = {
            n: [p for g in o.param_groups for p in g["params"]] for n, o in self.optimizers.items()
        }
        self.schedulers = {n: build_scheduler(o, cfg.schedule, cfg.train) for n, o in self.optimizers.items()}
        self.use_bf16 = cfg.train.precision == "bf16" or (
            cfg.train.precision == "auto" and self.device.type == "cuda"
        )

        # where training stands (all of it goes into last.pt)
        self.step = 0
        self.epoch = 0  # epochs done
        self.batch_in_epoch = 0  # batches of the current epoch done
        self.best_value = math.inf
        self.bad_validations = 0
        self.n_nonfinite = 0
        self.consecutive_nonfinite = 0
        self.epoch_sums: dict[str, float] = {}
        self.epoch_count = 0
        self.interval_sums: dict[str, float] = {}
        self.interval_count = 0
        self.interval_seconds = 0.0
        self.stopped = ""
        self._stop_requested = False
        self._resumed_rng: dict[str, Any] | None = None
        self._loss_names: list[str] = []

        if self.last_path.exists():
            self._resume()
        elif self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "config.yaml", cfg.to_yaml())
        distributed.barrier(self.dist)

        self.forward: nn.Module = _Losses(self.model)
        if self.dist.is_distributed:
            self.forward = nn.parallel.DistributedDataParallel(
                self.forward,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=len(self.optimizers) > 1,
            )
        self.metrics: MetricsLog | None = None
        self.board: Board | None = None
        self.bar: Any = None

    # ------------------------------------------------------------------ run directory
    def _clear_run(self) -> None:
        for sub in ("checkpoints", "plots", "samples"):
            shutil.rmtree(self.run_dir / sub, ignore_errors=True)
        for path in [self.metrics_path, *self.run_dir.glob("events.out.tfevents.*")]:
            path.unlink(missing_ok=True)

    def _check_resumable(self, saved: dict[str, Any]) -> None:
        changes = [c for c in diff_configs(saved, self.config.to_dict()) if c[0] not in RESUMABLE_CHANGES]
        if changes:
            listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes[:6])
            raise ConfigError(
                f"{self.run_dir} was trained with a different config ({listed}); resume with the same config, "
                "start again with --restart, or train into another --run"
            )

    def _resume(self) -> None:
        state = load_checkpoint(self.last_path)
        if state.get("model") != self.config.model_name:
            raise ConfigError(
                f"{self.run_dir} holds a {state.get('model')} run, not {self.config.model_name}; "
                "use another --run or --restart"
            )
        self._check_resumable(state["config"])
        self.model.load_state_dict(state["weights"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            if sched is not None and state["schedulers"].get(name) is not None:
                sched.load_state_dict(state["schedulers"][name])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        progress = state["progress"]
        self.best_value = float(progress["best_value"])
        self.bad_validations = int(progress["bad_validations"])
        self.n_nonfinite = int(progress["n_nonfinite"])
        self.epoch_sums = {k: float(v) for k, v in progress["epoch_sums"].items()}
        self.epoch_count = int(progress["epoch_count"])
        self.interval_sums = {k: float(v) for k, v in progress["interval_sums"].items()}
        self.interval_count = int(progress["interval_count"])
        self.stopped = str(progress.get("stopped", ""))
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            log.warning(
                "resuming a run of %d process(es) with %d: the data order is kept, but random draws "
                "(dropout, noise) will differ from an uninterrupted run",
                len(rngs),
                self.dist.world_size,
            )
        self._resumed_rng = rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0]
        if self.dist.is_main:
            log.info(
                "resuming %s at step %d (epoch %d, batch %d)",
                self.run_dir,
                self.step,
                self.epoch + 1,
                self.batch_in_epoch,
            )

    # ------------------------------------------------------------------ checkpoints
    def _common_state(self) -> dict[str, Any]:
        norm = self.normalizer
        return {
            "model": self.config.model_name,
            "config": self.config.to_dict(),
            "representation": self.store.representation.to_dict(),
            "normalization": {
                "kind": norm.kind if norm is not None else "none",
                "shift": torch.as_tensor(norm.shift) if norm is not None else torch.zeros(1),
                "scale": torch.as_tensor(norm.scale) if norm is not None else torch.ones(1),
            },
            "data_info": self.info.to_dict(),
            "weights": self.model.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
        }

    def _progress_state(self) -> dict[str, Any]:
        return {
            "best_value": self.best_value,
            "bad_validations": self.bad_validations,
            "n_nonfinite": self.n_nonfinite,
            "epoch_sums": dict(self.epoch_sums),
            "epoch_count": self.epoch_count,
            "interval_sums": dict(self.interval_sums),
            "interval_count": self.interval_count,
            "stopped": self.stopped,
        }

    def save_last(self) -> Path:
        """Write ``last.pt`` (every process must call this; rank 0 writes)."""
        rngs = distributed.gather_objects(rng_state(), self.dist)
        if self.dist.is_main:
            state = self._common_state()
            state.update(
                kind="last",
                optimizers={n: o.state_dict() for n, o in self.optimizers.items()},
                schedulers={
                    n: (s.state_dict() if s is not None else None) for n, s in self.schedulers.items()
                },
                progress=self._progress_state(),
                rng=rngs,
            )
            save_checkpoint(self.last_path, state)
        distributed.barrier(self.dist)
        return self.last_path

    def save_best(self) -> Path:
        if self.dist.is_main:
            state = self._common_state()
            state.update(kind="best", progress=self._progress_state())
            save_checkpoint(self.best_path, state)
        distributed.barrier(self.dist)
        return self.best_path

    def _reload_weights(self) -> None:
        """Weights and optimiser states back from ``last.pt`` (when the live ones went bad)."""
        if not self.last_path.exists():
            raise TrainingDiverged(
                f"the weights became non-finite before any checkpoint was written; {self._remedies()}"
            )
        state = load_checkpoint(self.last_path, map_location=self.device)
        self.model.load_state_dict(state["weights"])
        for name, opt in self.optimizers.items():
            lrs = [g["lr"] for g in opt.param_groups]
            opt.load_state_dict(state["optimizers"][name])
            for g, lr in zip(opt.param_groups, lrs):
                g["lr"] = lr  # keep the lowered rate

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> Any:
        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def train_step(self, batch: Any) -> dict[str, float]:
        """One batch: every optimiser updated as ``optim.ratio`` says. Returns the losses as floats."""
        batch = to_device(batch, self.device)
        values: dict[str, float] = {}
        for name, count in self.plan:
            for _ in range(count):
                self._update(name, batch, values)
        return values

    def _update(self, name: str, batch: Any, values: dict[str, float]) -> None:
        self.model.zero_grad(set_to_none=True)  # a GAN's generator loss also reaches the discriminator
        with self._autocast():
            losses = self.forward(batch)
        if name not in losses:
            raise CadenzaError(
                f"model {self.config.model_name} returned losses {sorted(losses)} but has an optimiser {name!r}; "
                "losses() must return one entry per optimiser"
            )
        loss = losses[name]
        loss.backward()
        grads = [p.grad for p in self.params[name] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        others = [k for k in losses if k != name]
        if not self._loss_names:
            self._loss_names = list(losses)
        parts = [loss.detach().float(), norm.float(), *(losses[k].detach().float() for k in others)]
        vec = torch.stack([p.reshape(()) for p in parts])
        if self.dist.is_distributed:
            flag = torch.tensor([float(self._stop_requested)], device=vec.device)
            vec = distributed.all_reduce_sum(torch.cat([vec, flag]), self.dist)
            self._stop_requested = bool(vec[-1].item() > 0)
            vec = vec[:-1] / self.dist.world_size
        loss_value, norm_value, *other_values = vec.tolist()
        if _finite(loss_value) and _finite(norm_value):
            if self.config.train.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(self.params[name], self.config.train.grad_clip, norm)
            self.optimizers[name].step()
            self.consecutive_nonfinite = 0
        else:
            self._nonfinite(name, loss_value, norm_value)
        values[name] = loss_value
        values[f"grad_norm/{name}" if len(self.plan) > 1 else "grad_norm"] = norm_value
        for k, v in zip(others, other_values):
            if k not in self.optimizers:
                values[k] = v

    def _remedies(self) -> str:
        return (
            "try a lower learning rate (optim.lr=...), gradient clipping (train.grad_clip=1.0), "
            "normalised features (data.normalization=standard), fp32 (train.precision=fp32), "
            "or a smaller model"
        )

    def _nonfinite(self, name: str, loss_value: float, norm_value: float) -> None:
        self.model.zero_grad(set_to_none=True)
        self.n_nonfinite += 1
        self.consecutive_nonfinite += 1
        opt = self.optimizers[name]
        scale_lr(opt, self.config.train.nonfinite_lr_factor)
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self._reload_weights()
        what = "loss" if not _finite(loss_value) else "gradient norm"
        indices = self.sampler.batch(self.epoch, self.batch_in_epoch)
        shown = ", ".join(map(str, indices[:8])) + (", ..." if len(indices) > 8 else "")
        limit = self.config.train.max_nonfinite
        if self.dist.is_main:
            log.warning(
                "non-finite %s (%s, gradient norm %s) at step %d, epoch %d, batch %d of the epoch "
                "(windows %s): update of %r skipped, its learning rate lowered to %.3g (%d of %d in a row)",
                what,
                loss_value,
                norm_value,
                self.step + 1,
                self.epoch + 1,
                self.batch_in_epoch,
                shown,
                name,
                current_lr(opt),
                self.consecutive_nonfinite,
                limit,
            )
        if self.board is not None:
            self.board.scalars({"nonfinite": float(self.n_nonfinite)}, self.step + 1, "train")
        if self.consecutive_nonfinite >= limit:
            last = (
                f"the last good checkpoint is {self.last_path}"
                if self.last_path.exists()
                else "no checkpoint was written yet"
            )
            raise TrainingDiverged(
                f"training diverged: the {what} was not finite for {limit} steps in a row "
                f"(last at step {self.step + 1}, epoch {self.epoch + 1}, even with the learning rate of {name!r} "
                f"lowered to {current_lr(opt):.3g}); {last}. To fix it, {self._remedies()}"
            )

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean losses over the validation split (all processes together)."""
        if self.valid_set is None:
            return {}
        sampler = EpochBatchSampler(
            len(self.valid_set),  # type: ignore[arg-type]
            self.config.data.batch_size,
            shuffle=False,
            drop_last=False,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        loader = self._loader(self.valid_set, sampler, epoch=0)
        self.model.eval()
        names = self._loss_names or []
        sums: torch.Tensor | None = None
        count = 0
        with self._fork_rng():
            torch.manual_seed(self.config.train.seed)
            for batch in loader:
                batch = to_device(batch, self.device)
                with self._autocast():
                    losses = self.model.losses(batch)
                if not names:
                    names = list(losses)
                n = batch_size_of(batch)
                vec = torch.stack([losses[k].detach().float().reshape(()) for k in names]) * n
                sums = vec if sums is None else sums + vec
                count += n
        self.model.train()
        if not names:
            return {}
        total = torch.zeros(len(names) + 1, device=self.device)
        if sums is not None:
            total[:-1] = sums
        total[-1] = count
        total = distributed.all_reduce_sum(total, self.dist)
        n_total = float(total[-1].item())
        return {k: float(v) / n_total for k, v in zip(names, total[:-1].tolist())} if n_total else {}

    def _fork_rng(self) -> Any:
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def _loader(self, dataset: Any, sampler: EpochBatchSampler, *, epoch: int) -> DataLoader:
        # Our own generator: the DataLoader draws its workers' base seed from it, not from the
        # global RNG, so starting an epoch part-way does not shift the model's random draws.
        generator = torch.Generator().manual_seed(self.config.train.seed * 7919 + epoch)
        n_workers = self.config.data.num_workers
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=n_workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,
            persistent_workers=False,
            prefetch_factor=2 if n_workers else None,
        )

    # ------------------------------------------------------------------ the loop
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM: finish the step, write last.pt, stop. A second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_requested = True
            if self.dist.is_main:
                log.warning(
                    "stopping after this step and writing %s (Ctrl-C again to stop at once)", self.last_path
                )

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _total_steps(self) -> int:
        cfg = self.config.train
        total = cfg.max_epochs * self.sampler.n_batches
        return min(total, cfg.max_steps) if cfg.max_steps else total

    def open_logs(self) -> None:
        """Open metrics.csv, TensorBoard and the progress bar (rank 0); :meth:`fit` calls it."""
        cfg = self.config.train
        if self.dist.is_main:
            self.metrics = MetricsLog(self.metrics_path, keep_until_step=self.step)
            self.board = Board(self.run_dir, enabled=cfg.tensorboard, purge_step=self.step)
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            tqdm = None
        enabled = self.dist.is_main and cfg.progress and tqdm is not None
        if enabled:
            self.bar = tqdm(
                total=self._total_steps(),
                initial=self.step,
                unit="step",
                dynamic_ncols=True,
                desc=self._bar_desc(),
            )

    def _bar_desc(self) -> str:
        return f"epoch {min(self.epoch + 1, self.config.train.max_epochs)}/{self.config.train.max_epochs}"

    def close(self) -> None:
        """Close the logs and leave the DDP group (when this trainer joined it)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.board is not None:
            self.board.close()
            self.board = None
        distributed.teardown(self.dist)

    def _finished(self) -> str:
        cfg = self.config.train
        if self.stopped == "early_stopping":
            return "early_stopping"
        if cfg.max_steps and self.step >= cfg.max_steps:
            return "max_steps"
        if self.epoch >= cfg.max_epochs:
            return "finished"
        return ""

    def fit(self) -> TrainResult:
        """Train until ``max_epochs``, ``max_steps``, early stopping or a signal; return where it stopped."""
        already = self._finished()
        if already:
            if self.dist.is_main:
                log.info(
                    "%s is already done (%s at step %d, epoch %d); raise train.max_epochs or train.max_steps to go on",
                    self.run_dir,
                    already,
                    self.step,
                    self.epoch,
                )
            return self._result("already finished")
        self.open_logs()
        self._advise_allocator()
        if self._resumed_rng is not None:
            set_rng_state(self._resumed_rng)  # last, after everything that draws at start-up
        self.model.train()
        stopped = ""
        with self._signals():
            while not stopped:
                stopped = self.train_epoch()
                if stopped:
                    break
                stopped = self._end_epoch()
        self.stopped = stopped
        if stopped in ("max_steps", "interrupted"):
            if self.dist.is_main:
                self._plot()
            self.save_last()  # _end_epoch wrote it and the plot for the other reasons
        if self.board is not None:
            self.board.flush()
        return self._result(stopped)

    def _advise_allocator(self) -> None:
        """Say once when a large CPU model trains without tcmalloc (see :mod:`cadenza._malloc`)."""
        from cadenza import _malloc

        n_params = sum(p.numel() for p in self.model.parameters())
        if self.device.type != "cpu" or not self.dist.is_main or n_params < 5_000_000:
            return
        if _malloc.wanted() and _malloc.active_allocator() != "tcmalloc":
            how = (
                "run it as `cadenza train` (the command line re-runs itself under tcmalloc)"
                if _malloc.find_tcmalloc()
                else "apt-get install libtcmalloc-minimal4"
            )
            log.info(
                "training %.0f M parameters on the CPU with the system allocator, which page-faults every "
                "large gradient in again at each step; for faster steps, %s",
                n_params / 1e6,
                how,
            )

    def _result(self, stopped: str) -> TrainResult:
        return TrainResult(
            run_dir=self.run_dir,
            step=self.step,
            epoch=self.epoch,
            stopped=stopped,
            last=self.last_path if self.last_path.exists() else None,
            best=self.best_path if self.best_path.exists() else None,
            best_value=self.best_value if math.isfinite(self.best_value) else None,
            metrics=self.metrics_path,
        )

    def train_epoch(self) -> str:
        """The rest of the current epoch; returns "max_steps" or "interrupted" when it stopped early."""
        cfg = self.config.train
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        loader = self._loader(self.train_set, self.sampler, epoch=self.epoch)
        if self.bar is not None:
            self.bar.set_description(self._bar_desc(), refresh=False)
        tic = time.perf_counter()
        for batch in loader:
            values = self.train_step(batch)
            self.step += 1
            self.batch_in_epoch += 1
            for k, v in values.items():
                self.interval_sums[k] = self.interval_sums.get(k, 0.0) + v
                self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + v
            self.interval_count += 1
            self.epoch_count += 1
            if self.bar is not None:
                self.bar.update(1)
            if self.step % cfg.log_every == 0:
                toc = time.perf_counter()
                self.interval_seconds += toc - tic
                tic = toc
                self._log_interval()
            if cfg.save_every_steps and self.step % cfg.save_every_steps == 0:
                self.save_last()
            if cfg.max_steps and self.step >= cfg.max_steps:
                return "max_steps"
            if self._stop_requested:
                return "interrupted"
        self.interval_seconds += time.perf_counter() - tic
        return ""

    def _lrs(self) -> dict[str, float]:
        if len(self.optimizers) == 1:
            return {"lr": current_lr(next(iter(self.optimizers.values())))}
        return {f"lr/{n}": current_lr(o) for n, o in self.optimizers.items()}

    def _log_interval(self) -> None:
        if not self.interval_count:
            return
        means = {k: v / self.interval_count for k, v in self.interval_sums.items()}
        row = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "split": "train",
            **means,
            **self._lrs(),
            "n_nonfinite": self.n_nonfinite,
            "seconds_per_step": self.interval_seconds / self.interval_count,
        }
        self.interval_sums, self.interval_count, self.interval_seconds = {}, 0, 0.0
        if self.metrics is not None:
            self.metrics.write(row)
        if self.board is not None:
            self.board.scalars(
                {k: v for k, v in row.items() if k not in ("epoch", "step", "split")}, self.step, "train"
            )
        if self.bar is not None:
            shown = {k: f"{means[k]:.4g}" for k in self.optimizers if k in means}
            shown.update({k: f"{v:.2g}" for k, v in self._lrs().items()})
            self.bar.set_postfix(shown, refresh=False)

    def _end_epoch(self) -> str:
        cfg, sched_cfg = self.config.train, self.config.schedule
        self.epoch += 1
        self.batch_in_epoch = 0
        if self.interval_count:
            self._log_interval()
        train_means = {k: v / max(self.epoch_count, 1) for k, v in self.epoch_sums.items()}
        self.epoch_sums, self.epoch_count = {}, 0
        last_epoch = self.epoch >= cfg.max_epochs
        valid: dict[str, float] = {}
        if self.valid_set is not None and (self.epoch % cfg.valid_every == 0 or last_epoch):
            valid = self.validate()
            if self.metrics is not None:
                self.metrics.write({"epoch": self.epoch, "step": self.step, "split": "valid", **valid})
            if self.board is not None:
                self.board.scalars(valid, self.step, "valid")
        source = valid if self.valid_set is not None else train_means
        stopped = ""
        if source:
            if cfg.monitor not in source:
                raise ConfigError(
                    f"train.monitor: the model has no loss {cfg.monitor!r}; it has {sorted(source)}"
                )
            value = source[cfg.monitor]
            if math.isfinite(value) and value < self.best_value - sched_cfg.min_delta:
                self.best_value = value
                self.bad_validations = 0
                self.save_best()
            else:
                self.bad_validations += 1
            for sched in self.schedulers.values():
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(value)
            if sched_cfg.early_stopping and self.bad_validations >= sched_cfg.early_stopping:
                stopped = "early_stopping"
                if self.dist.is_main:
                    log.info(
                        "early stopping: no improvement of %s for %d validations (best %.6g)",
                        cfg.monitor,
                        self.bad_validations,
                        self.best_value,
                    )
        for sched in self.schedulers.values():
            if sched is not None and not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step()
        if cfg.sample_every and self.epoch % cfg.sample_every == 0:
            self._write_samples()
        if self.dist.is_main:
            self._plot()
        if last_epoch and not stopped:
            stopped = "finished"
        self.stopped = stopped
        if self.epoch % cfg.save_every == 0 or stopped:
            self.save_last()
        return stopped

    # ------------------------------------------------------------------ artefacts
    def _plot(self) -> None:
        rows = read_metrics(self.metrics_path)
        names = [n for n in (self._loss_names or ["loss"]) if any(n in r for r in rows)]
        fig = loss_figure(rows, names, title=f"{self.run_dir.name} ({self.config.model_name})")
        save_figure(fig, self.run_dir / "plots" / "loss.png")
        if self.board is not None:
            self.board.figure("loss", fig, self.step)

    def _write_samples(self) -> None:
        """A sample of ``train.sample_seconds`` from the current weights into ``samples/``."""
        from cadenza.training.generation import Generator, decode_to_audio, synthesize, write_output

        if not self.dist.is_main or self.normalizer is None:
            return
        gen = Generator(
            model=self.model,
            config=self.config,
            representation=self.store.representation,
            normalizer=self.normalizer,
            info=self.info,
            checkpoint=self.last_path,
            state={},
            name=self.run_dir.name,
        )
        seed = self.config.train.seed + self.epoch
        with self._fork_rng():
            try:
                frames, _ = synthesize(gen, n=1, seconds=self.config.train.sample_seconds, seed=seed)
            except CadenzaError as exc:
                log.warning("no sample at epoch %d: %s", self.epoch, exc)
                return
        rep = self.store.representation
        out = self.run_dir / "samples"
        out.mkdir(parents=True, exist_ok=True)
        files = write_output(rep, frames[0], out / f"epoch{self.epoch:05d}", self.config.train.sample_seconds)
        if self.board is not None and rep.input_kind == "audio":
            y = decode_to_audio(rep, frames[0], self.config.train.sample_seconds)
            self.board.audio("sample", y, int(rep.sample_rate), self.step)
            self.board.figure("sample_frames", _frames_figure(frames[0], rep), self.step)
        log.debug("wrote %s", files)


def _frames_figure(frames: np.ndarray, rep: Any) -> Any:
    """Magnitudes of generated frames in dB, as a figure for TensorBoard."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    mags = 20 * np.log10(np.abs(frames.T) + 1e-6)
    ax.imshow(mags, origin="lower", aspect="auto", cmap="magma", vmin=mags.max() - 80, vmax=mags.max())
    ax.set(xlabel="frame", ylabel="feature", title=f"generated {rep.name} frames (dB)")
    fig.tight_layout()
    return fig


def train(
    config: str | os.PathLike | ExperimentConfig,
    *,
    data: str | os.PathLike | None = None,
    run: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    device: str = "auto",
    restart: bool = False,
    progress: bool | None = None,
) -> TrainResult:
    """Train an experiment; the same call again resumes it.

    Parameters
    ----------
    config : path, name or ExperimentConfig
        A YAML file, a packaged config name (``fft_base-tiny``) or a resolved config.
    data : path, optional
        The feature store (sets ``data.store``).
    run : path, optional
        The run directory; default ``runs/<config name>``.
    overrides : sequence of str
        ``SECTION.KEY=VALUE`` changes, checked against the config's types.
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda`` or ``mps``.
    restart : bool
        Start the run again from step 0 instead of resuming it.
    progress : bool, optional
        Show the progress bar (default: ``train.progress``).

    Returns
    -------
    TrainResult
    """
    if isinstance(config, ExperimentConfig):
        cfg = build_config(apply_overrides(config.to_dict(), list(overrides)), source="config")
        stem = cfg.model_name
    else:
        cfg = load_config(config, overrides)
        stem = config_stem(config)
    if data is not None:
        cfg.data.store = str(data)
    if cfg.data.store:
        cfg.data.store = str(Path(cfg.data.store).expanduser().resolve())
    if progress is not None:
        cfg.train.progress = progress
    run_dir = Path(run) if run is not None else Path("runs") / stem
    trainer = Trainer(cfg, run_dir, device=device, restart=restart)
    try:
        return trainer.fit()
    finally:
        trainer.close()


__all__ = ["CheckpointError", "TrainResult", "Trainer", "TrainingDiverged", "train"]
