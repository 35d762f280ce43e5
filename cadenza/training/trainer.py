"""The one trainer: every model family trains through :class:`Trainer`.

The trainer calls a model's ``losses(batch, step=name)``, ``configure_optimizers(optim)``
(optional) and ``generate(request)`` and nothing else model-specific (see
:mod:`cadenza.models`). It owns the loop and everything around it:

* **Optimisers** from the ``optim`` section; a model with several (a GAN) has them stepped
  in order, each ``optim.ratio[name]`` times per batch, and before each the model computes
  the losses of that step alone (``step=name``). The trainer counts the steps and tells the
  model (``model.n_steps_trained``). Gradient clipping by global norm;
  a schedule per optimiser, stepped each epoch (``plateau`` on the monitored validation
  loss); early stopping.
* **Non-finite guard** (:mod:`cadenza.training.guard`): a step whose loss or gradient norm
  is NaN or infinite is not applied, so it never reaches the weights; that optimiser's
  learning rate is lowered, and after ``train.max_nonfinite`` such steps in a row training
  stops with a :class:`TrainingDiverged` that says what to try.
* **Checkpoints** (:mod:`cadenza.training.checkpoint`): ``last.pt`` every ``save_every``
  epochs, every ``save_every_steps`` steps and whenever training stops; ``best.pt`` when the
  monitored loss improves (from the model's ``first_monitored_step`` on, if it has one).
  Running the same command again resumes exactly: the data order is a function of
  ``(seed, epoch)``, and the position in the epoch, the RNG states and the partial sums of the
  metrics are in ``last.pt``; on the CPU an interrupted and resumed run
  gives bitwise the same losses as one that was not interrupted.
* **Devices and scale**: CPU, CUDA or Apple MPS (:func:`~cadenza.training.distributed.resolve_device`),
  bf16 autocast on CUDA, DDP under ``torchrun`` with the global ``data.batch_size`` split
  across processes (so the result does not depend on their number; models with dropout or
  batch norm draw different masks or statistics per process, and match in distribution only).
  Rank 0 alone writes.
* **Logging** (:mod:`cadenza.training.tracking`): progress (epoch, step, loss, learning
  rate, time left), ``metrics.csv``, TensorBoard scalars, audio samples and figures,
  ``plots/loss.png`` each epoch, and samples in ``samples/`` every ``train.sample_every``
  epochs, for every model family.

Where training stands is one :class:`~cadenza.training.state.TrainState`, saved into every
checkpoint. A run directory holds ``config.yaml``, ``checkpoints/{last,best}.pt``,
``metrics.csv``, TensorBoard events, ``plots/`` and ``samples/``.

Examples
--------
>>> result = train("fft_base-tiny", data="data/bach-fft", run="runs/bach-tiny")  # doctest: +SKIP
>>> result.best                                                                 # doctest: +SKIP
PosixPath('runs/bach-tiny/checkpoints/best.pt')
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cadenza import threads
from cadenza._fs import FolderLock, lock_folder
from cadenza.data.normalize import Normalizer
from cadenza.data.store import FeatureStore, atomic_write_text
from cadenza.errors import BusyError, CadenzaError, ParameterError
from cadenza.kernels.lstm import bf16_autocast, cpu_bf16_lstm_supported
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
    data_info_of,
    normalizer_of,
    require_batches,
    to_device,
)
from cadenza.training.guard import NonfiniteGuard, TrainingDiverged
from cadenza.training.optim import (
    budget_lr,
    budget_span,
    build_optimizer,
    build_scheduler,
    current_lr,
    update_plan,
)
from cadenza.training.state import TrainState
from cadenza.training.tracking import Tracker, advise_allocator

log = logging.getLogger(__name__)

#: Config keys that may change when a run resumes; any other change needs a new run or --restart.
RESUMABLE_CHANGES = (
    "data.store",
    "data.num_workers",
    "train.max_epochs",
    "train.max_steps",
    "train.max_seconds",
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


@dataclasses.dataclass
class TrainResult:
    """Where a call to :meth:`Trainer.fit` left the run."""

    run_dir: Path
    step: int
    #: Epochs completed.
    epoch: int
    #: "finished", "max_steps", "max_seconds", "early_stopping", "interrupted" or "already finished".
    stopped: str
    last: Path | None
    best: Path | None
    best_value: float | None
    metrics: Path
    #: Wall-clock seconds of training steps in the run so far (every resume counted).
    seconds: float = 0.0
    #: The step count of ``best.pt`` (None: none, or written before the count was kept).
    best_step: int | None = None
    #: The epoch of the last step, counted from 1 as the progress, the logs and metrics.csv
    #: count it (``epoch`` + 1 for a run stopped inside an epoch; 0 before any step).
    last_epoch: int = 0


class _Losses(nn.Module):
    """``forward(batch, step)`` = the model's ``losses``, so that DDP sees every call.

    ``step`` reaches a model whose ``losses`` takes it; one that does not (a single optimiser
    needs no telling) is called as ``losses(batch)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.takes_step = "step" in inspect.signature(model.losses).parameters

    def forward(self, batch: Any, step: str | None = None) -> dict[str, torch.Tensor]:
        if self.takes_step:
            return self.model.losses(batch, step=step)
        return self.model.losses(batch)


def _in_state(name: str) -> property:
    """``Trainer.<name>``: the field of :attr:`Trainer.state`, read and written through."""
    return property(
        lambda self: getattr(self.state, name),
        lambda self, value: setattr(self.state, name, value),
        doc=f"``state.{name}``",
    )


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

    step = _in_state("step")
    epoch = _in_state("epoch")
    batch_in_epoch = _in_state("batch_in_epoch")
    best_value = _in_state("best_value")
    n_nonfinite = _in_state("n_nonfinite")

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
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ParameterError(
                f"{self.run_dir} is a file, not a run directory; train into a folder (new, or a run's)"
            )
        self.dist = distributed.setup(device)
        self.device = self.dist.device
        if self.device.type == "cuda":
            # fixed batch shapes: let cuDNN time its convolution algorithms once and keep the fastest
            # (the convolutional models: fft_conv1d/conv2d, WaveNet, the GANs; benchmarks/gpu.py runs so)
            torch.backends.cudnn.benchmark = True
        cfg = config
        if not cfg.data.store:
            raise ParameterError("no feature store: pass --data STORE (or set data.store in the config)")
        self.store = FeatureStore(cfg.data.store)
        self.spec = get_model_spec(cfg.model_name)
        # the store's representation first: windowing another kind of store fails in its own terms
        self.spec.check(
            DataInfo(n_features=self.store.n_features, representation=self.store.representation.to_dict())
        )
        _check_label_key(self.store, cfg.data.label_key)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.last_path = self.ckpt_dir / "last.pt"
        self.best_path = self.ckpt_dir / "best.pt"
        self.tracker = Tracker(
            self.run_dir, title=f"{self.run_dir.name} ({cfg.model_name})", is_main=self.dist.is_main
        )
        self.metrics_path = self.tracker.metrics_path
        if restart and self.dist.is_main:
            self.tracker.clear()
        distributed.barrier(self.dist)

        # data
        self.train_set = build_dataset(cfg.data, self.store, "train")
        require_batches(self.train_set, cfg.data, "train")
        labels = list(self.train_set.labels or [])  # type: ignore[attr-defined]
        valid = build_dataset(cfg.data, self.store, cfg.data.valid_split, labels=labels or None)
        self.valid_set = valid if len(valid) else None  # type: ignore[arg-type]
        if self.valid_set is None:
            log.warning(
                "the %r split has no windows: best.pt and the schedule follow the training loss",
                cfg.data.valid_split,
            )
        # Windows without a normaliser (raw audio) are on their own scale: the identity.
        self.normalizer: Normalizer = normalizer_of(self.train_set) or Normalizer.from_stats("none", None)
        # facts flow one way: the dataset tells the model what it needs (DataInfo), never the reverse
        self.info: DataInfo = data_info_of(self.train_set)
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
        configure = getattr(self.model, "configure_optimizers", None)
        if configure is not None:
            self.optimizers: dict[str, torch.optim.Optimizer] = dict(configure(cfg.optim))
        else:
            self.optimizers = {"loss": build_optimizer(self.model.parameters(), cfg.optim)}
        self.plan = update_plan(list(self.optimizers), cfg.optim)
        self.params = {
            n: [p for g in o.param_groups for p in g["params"]] for n, o in self.optimizers.items()
        }
        self.schedulers = {n: build_scheduler(o, cfg.schedule, cfg.train) for n, o in self.optimizers.items()}
        self.budget_span = budget_span(cfg.schedule, cfg.train)
        self.use_bf16 = cfg.train.precision == "bf16" or (
            cfg.train.precision == "auto" and self.device.type == "cuda"
        )
        if self.use_bf16 and self.device.type == "cpu" and not cpu_bf16_lstm_supported():
            if any(isinstance(m, torch.nn.LSTM) for m in self.model.modules()):
                log.warning(
                    "train.precision=bf16: this CPU's oneDNN has no bf16 LSTM (it needs AVX-512); "
                    "the LSTM layers run in float32 and the rest in bf16"
                )

        self.guard = NonfiniteGuard(
            self.model,
            self.optimizers,
            self.last_path,
            cfg.train,
            device=self.device,
            is_main=self.dist.is_main,
        )

        # where training stands (all of it goes into last.pt)
        self.state = TrainState()
        self._stop_requested = False
        self._resumed_rng: dict[str, Any] | None = None
        self._loss_names: list[str] = []  # every entry the model's losses returned in training

        if self.last_path.exists():
            self._resume()
        elif self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "config.yaml", cfg.to_yaml())
        distributed.barrier(self.dist)

        self._losses = _Losses(self.model)
        self.forward: nn.Module = self._losses
        if self.dist.is_distributed:
            self.forward = nn.parallel.DistributedDataParallel(
                self._losses,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=len(self.optimizers) > 1,
            )

    # ------------------------------------------------------------------ resuming
    def _check_resumable(self, saved: dict[str, Any]) -> None:
        try:  # read as a config of today: a field added since the run began takes its default
            saved = ExperimentConfig.from_dict(saved, source=f"{self.last_path} (saved config)").to_dict()
        except CadenzaError:
            pass  # compared as saved; a real difference is then reported below
        changes = [c for c in diff_configs(saved, self.config.to_dict()) if c[0] not in RESUMABLE_CHANGES]
        if changes:
            listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes[:6])
            raise ConfigError(
                f"{self.run_dir} was trained with a different config ({listed}); resume with the same config, "
                "start again with --restart, or train into another --run"
            )

    def _check_labels(self, saved: Mapping[str, Any]) -> None:
        """Refuse, saying why, a resume where the store's labels changed since the run began: a
        conditioned model (WaveNet's composers) has one embedding row a label, so a store prepared
        again with a new composer's files failed in ``load_state_dict`` with a size mismatch."""
        before, now = list(saved.get("labels") or []), list(self.info.labels)
        if not before or before == now:
            return
        new = [x for x in now if x not in before]
        gone = [x for x in before if x not in now]
        what = "; ".join(
            part
            for part in (
                f"new: {', '.join(new)}" if new else "",
                f"gone: {', '.join(gone)}" if gone else "",
                "in another order" if not new and not gone else "",
            )
            if part
        )
        raise ConfigError(
            f"the store {self.store.path} has other {self.config.data.label_key} labels than {self.run_dir} "
            f"was trained on ({', '.join(before)}; {what}): a conditioned model cannot take them on. "
            "Use --restart to train on all of them from step 0, or train into another --run"
        )

    def _keep_normalization(self, saved: Mapping[str, Any] | None) -> None:
        """Train on with the normalisation the run began with, where the store has been prepared
        again since (more files: other statistics), and say so. The weights learnt on one scale
        were fed another without a word: a store of five quartet movements grown to ten moved
        its statistics by up to 0.72 of their spread."""
        norm = self.normalizer
        if not saved or saved.get("kind") != norm.kind or norm.kind == "none":
            return
        shift = np.asarray(torch.as_tensor(saved["shift"]).cpu(), np.float32)
        scale = np.asarray(torch.as_tensor(saved["scale"]).cpu(), np.float32)
        if shift.shape != norm.shift.shape or scale.shape != norm.scale.shape:
            return  # another feature count: the model's own check refuses the weights
        if np.allclose(shift, norm.shift, rtol=1e-5, atol=1e-7) and np.allclose(scale, norm.scale, rtol=1e-5):
            return
        moved = float(
            max(np.max(np.abs(shift - norm.shift) / norm.scale), np.max(np.abs(np.log(scale / norm.scale))))
        )
        kept = Normalizer(norm.kind, shift, scale)
        for dataset in (self.train_set, self.valid_set):
            if dataset is not None and getattr(dataset, "normalizer", None) is not None:
                dataset.normalizer = kept  # type: ignore[union-attr]
        self.normalizer = kept
        if self.dist.is_main:
            log.warning(
                "the store %s has changed since %s began (its feature statistics moved by up to %.2g of "
                "their spread): the run goes on with the normalisation it began with; --restart trains "
                "on the store's own from step 0",
                self.store.path,
                self.run_dir,
                moved,
            )

    def _resume(self) -> None:
        try:
            state = load_checkpoint(self.last_path)
        except CheckpointError as exc:  # damaged outside cadenza: its own writes are atomic
            keep = (
                " (it deletes best.pt too: copy that away first to keep it)"
                if self.best_path.is_file()
                else ""
            )
            raise CheckpointError(
                f"{exc}; the run cannot resume without it: start it again with --restart{keep}, "
                "or train into another --run"
            ) from None
        if state.get("model") != self.config.model_name:
            raise ConfigError(
                f"{self.run_dir} holds a {state.get('model')} run, not {self.config.model_name}; "
                "use another --run or --restart"
            )
        self._check_resumable(state["config"])
        self._check_labels(state.get("data_info") or {})
        self._keep_normalization(state.get("normalization"))
        try:
            self.model.load_state_dict(state["weights"])
        except RuntimeError as exc:  # the store gives the model another shape than the run's
            raise ConfigError(
                f"{self.run_dir} was trained on data the store {self.store.path} no longer matches "
                f"({str(exc).splitlines()[-1].strip()}); use another --run, or --restart"
            ) from None
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            if sched is not None and state["schedulers"].get(name) is not None:
                sched.load_state_dict(state["schedulers"][name])
        self.state = TrainState.from_checkpoint(state)
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
                self.state.step,
                self.state.epoch + 1,
                self.state.batch_in_epoch,
            )

    # ------------------------------------------------------------------ checkpoints
    def _common_state(self) -> dict[str, Any]:
        norm = self.normalizer
        return {
            "model": self.config.model_name,
            "config": self.config.to_dict(),
            "representation": self.store.representation.to_dict(),
            "normalization": {
                "kind": norm.kind,
                "shift": torch.as_tensor(norm.shift),
                "scale": torch.as_tensor(norm.scale),
            },
            "data_info": self.info.to_dict(),
            "weights": self.model.state_dict(),
            **self.state.to_checkpoint(),  # step, epoch, batch_in_epoch and the progress
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
                rng=rngs,
            )
            save_checkpoint(self.last_path, state)
        distributed.barrier(self.dist)
        return self.last_path

    def save_best(self) -> Path:
        if self.dist.is_main:
            state = self._common_state()
            state.update(kind="best")
            save_checkpoint(self.best_path, state)
        distributed.barrier(self.dist)
        return self.best_path

    # ------------------------------------------------------------------ one step
    def _autocast(self) -> Any:
        if not self.use_bf16:
            return contextlib.nullcontext()
        return bf16_autocast(self.device.type)  # torch.autocast; nn.LSTM in float32 where oneDNN has no bf16

    def train_step(self, batch: Any) -> dict[str, float]:
        """One batch: every optimiser updated as ``optim.ratio`` says. Returns the losses as floats."""
        batch = to_device(batch, self.device)
        self.model.n_steps_trained = self.state.step  # a model's own schedules follow this count
        if self.budget_span:
            self._follow_budget()
        values: dict[str, float] = {}
        for name, count in self.plan:
            for _ in range(count):
                self._update(name, batch, values)
        if not self._monitor_checked:  # a misnamed monitor fails at the first step, not an epoch in
            self._check_monitor(self._loss_names if self.valid_set is not None else list(values))
        return values

    _monitor_checked = False

    def _check_monitor(self, names: list[str]) -> None:
        """``train.monitor`` must be one of ``names``, what the model's validation (or, without a
        validation split, its training means) will report."""
        self._monitor_checked = True
        if self.config.train.monitor not in names:
            raise ConfigError(
                f"train.monitor: the model has no loss {self.config.train.monitor!r}; it has {sorted(names)}"
            )

    def _follow_budget(self) -> None:
        """Set every lr from the share of the budget spent (``schedule.span_epochs``)."""
        cfg, st = self.config.train, self.state
        fraction = st.seconds_trained / cfg.max_seconds if cfg.max_seconds else st.step / cfg.max_steps
        for o in self.optimizers.values():
            for group in o.param_groups:
                # the lr it starts from, kept in the group (saved with the optimiser) at the first step
                base = group.setdefault("initial_lr", group["lr"])
                group["lr"] = budget_lr(self.config.schedule, base, fraction, self.budget_span)

    def _update(self, name: str, batch: Any, values: dict[str, float]) -> None:
        """One step of optimiser ``name``: its losses alone, backward, the guard, the update."""
        self.model.zero_grad(set_to_none=True)  # another optimiser's loss may have reached these weights
        with self._autocast():
            losses = self.forward(batch, name)
        if name not in losses:
            raise CadenzaError(
                f"model {self.config.model_name} returned losses {sorted(losses)} for its {name!r} step; "
                "losses() must return the entry of the optimiser it is asked for"
            )
        self._loss_names += [k for k in losses if k not in self._loss_names]
        loss = losses[name]
        loss.backward()
        grads = [p.grad for p in self.params[name] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        metrics = [k for k in losses if k not in self.optimizers]
        parts = [loss.detach().float(), norm.float(), *(losses[k].detach().float() for k in metrics)]
        vec = torch.stack([p.reshape(()) for p in parts])
        if self.dist.is_distributed:
            flag = torch.tensor([float(self._stop_requested)], device=vec.device)
            vec = distributed.all_reduce_sum(torch.cat([vec, flag]), self.dist)
            self._stop_requested = bool(vec[-1].item() > 0)
            vec = vec[:-1] / self.dist.world_size
        loss_value, norm_value, *metric_values = vec.tolist()
        if math.isfinite(loss_value) and math.isfinite(norm_value):
            if self.config.train.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(self.params[name], self.config.train.grad_clip, norm)
            self.optimizers[name].step()
            self.state.consecutive_nonfinite = 0
        else:
            st = self.state
            st.n_nonfinite += 1
            self.tracker.nonfinite(st.n_nonfinite, st.step + 1)
            windows = self.sampler.batch(st.epoch, st.batch_in_epoch)
            damaged = not _finite(batch)
            bad = torch.tensor([float(damaged)], device=self.device)
            if self.dist.is_distributed:  # every process sees the loss non-finite: each takes part
                bad = distributed.all_reduce_sum(bad, self.dist)
            if bad.item() > 0:  # the data's fault, not the model's: no lower learning rate
                where = _damaged_windows(self.train_set, windows) if damaged else []
                self.guard.skip_bad_data(name, st, where or ["the batch of another process"])
            else:
                st.consecutive_nonfinite += 1
                self.guard.skip(name, loss_value, norm_value, st, windows)
        values[name] = loss_value
        values[f"grad_norm/{name}" if len(self.plan) > 1 else "grad_norm"] = norm_value
        values.update(zip(metrics, metric_values))

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
        names = list(self._loss_names)
        sums: torch.Tensor | None = None
        count = 0
        with self._fork_rng():
            torch.manual_seed(self.config.train.seed)
            for b, batch in enumerate(loader):
                batch = to_device(batch, self.device)
                with self._autocast():
                    losses = self._losses(batch, None)  # every entry, not one step's
                if not names:
                    names = list(losses)
                n = batch_size_of(batch)
                vec = torch.stack([losses[k].detach().float().reshape(()) for k in names]) * n
                if not bool(torch.isfinite(vec).all()) and not _finite(batch):
                    # damaged data: its windows left out of the mean (one NaN had made every
                    # validation NaN, and early stopping ended the run with no best.pt)
                    where = _damaged_windows(self.valid_set, sampler.batch(0, b))
                    self.guard.skip_bad_data(None, self.state, where, split=self.config.data.valid_split)
                    batch = _finite_rows(batch)
                    n = batch_size_of(batch) if batch is not None else 0
                    if not n:
                        continue
                    with self._autocast():
                        losses = self._losses(batch, None)
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

    def _total_steps(self) -> int | None:
        """Steps the run is set to take; None under a time budget (``train.max_seconds``),
        whose progress shows the training time left instead of a step count's."""
        cfg = self.config.train
        if cfg.max_seconds:
            return None
        total = cfg.max_epochs * self.sampler.n_batches
        return min(total, cfg.max_steps) if cfg.max_steps else total

    def _epoch_desc(self) -> str:
        cfg = self.config.train
        epoch = min(self.state.epoch + 1, cfg.max_epochs)
        return f"epoch {epoch}" if cfg.max_seconds else f"epoch {epoch}/{cfg.max_epochs}"

    def open_logs(self) -> None:
        """Open metrics.csv, TensorBoard and the progress display (rank 0); :meth:`fit` calls it."""
        cfg = self.config.train
        self.tracker.open(
            step=self.state.step,
            total_steps=self._total_steps(),
            desc=self._epoch_desc(),
            tensorboard=cfg.tensorboard,
            progress=cfg.progress,
        )

    def close(self, *, wait: bool = False) -> None:
        """Close the logs and leave the DDP group (when this trainer joined it); ``wait``: after
        a normal end, once every process has come to the same point."""
        self.tracker.close()
        distributed.teardown(self.dist, wait=wait)

    def _finished(self) -> str:
        cfg, st = self.config.train, self.state
        if st.stopped == "early_stopping":
            return "early_stopping"
        if cfg.max_steps and st.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_seconds and st.seconds_trained >= cfg.max_seconds:
            return "max_seconds"
        if st.epoch >= cfg.max_epochs:
            return "finished"
        return ""

    def fit(self) -> TrainResult:
        """Train until ``max_epochs``, ``max_steps``, early stopping or a signal; return where it stopped."""
        already = self._finished()
        if already:
            if self.dist.is_main:
                log.info(
                    "%s is already done (%s at step %d, epoch %d); raise train.max_epochs, train.max_steps or train.max_seconds to go on",
                    self.run_dir,
                    already,
                    self.state.step,
                    _last_epoch(self.state),
                )
            return self._result("already finished")
        threads.ensure()  # the threads the command chose, else chosen now from the free CPUs
        self.open_logs()
        if self.dist.is_main:
            advise_allocator(self.model, self.device)
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
        self.state.stopped = stopped
        if stopped in ("max_steps", "max_seconds", "interrupted"):
            self.tracker.plot(self._loss_names or ["loss"], self.state.step)
            self.save_last()  # _end_epoch wrote it and the plot for the other reasons
        self.tracker.flush()
        return self._result(stopped)

    def _result(self, stopped: str) -> TrainResult:
        st = self.state
        return TrainResult(
            run_dir=self.run_dir,
            step=st.step,
            epoch=st.epoch,
            stopped=stopped,
            last=self.last_path if self.last_path.exists() else None,
            best=self.best_path if self.best_path.exists() else None,
            best_value=st.best_value if math.isfinite(st.best_value) else None,
            metrics=self.metrics_path,
            seconds=st.seconds_trained,
            best_step=st.best_step if math.isfinite(st.best_value) and st.best_step else None,
            last_epoch=_last_epoch(st),
        )

    def train_epoch(self) -> str:
        """The rest of the current epoch; returns "max_steps", "max_seconds" or "interrupted" when it stopped early."""
        cfg, st = self.config.train, self.state
        self.sampler.set_epoch(st.epoch, st.batch_in_epoch)
        loader = self._loader(self.train_set, self.sampler, epoch=st.epoch)
        self.tracker.new_epoch(self._epoch_desc())
        tic = clock = time.perf_counter()
        for batch in loader:
            values = self.train_step(batch)
            threads.refresh()  # every few seconds: fewer threads when other programs start, more when they stop
            st.step += 1
            st.batch_in_epoch += 1
            st.add(values)
            self.tracker.advance()
            if st.step % cfg.log_every == 0:
                toc = time.perf_counter()
                st.interval_seconds += toc - tic
                tic = toc
                self._log_interval()
            if cfg.save_every_steps and st.step % cfg.save_every_steps == 0:
                self.save_last()
            if cfg.max_steps and st.step >= cfg.max_steps:
                return "max_steps"
            now = time.perf_counter()
            st.seconds_trained += now - clock  # the step and the wait for its batch
            clock = now
            if cfg.max_seconds and st.seconds_trained >= cfg.max_seconds:
                return "max_seconds"
            if self._stop_requested:
                return "interrupted"
        st.interval_seconds += time.perf_counter() - tic
        return ""

    def _lrs(self) -> dict[str, float]:
        if len(self.optimizers) == 1:
            return {"lr": current_lr(next(iter(self.optimizers.values())))}
        return {f"lr/{n}": current_lr(o) for n, o in self.optimizers.items()}

    def _log_interval(self) -> None:
        st = self.state
        if not st.interval_count:
            return
        means, seconds_per_step = st.take_interval()
        lrs = self._lrs()
        row = {
            "epoch": st.epoch + 1,
            "step": st.step,
            "split": "train",
            **means,
            **lrs,
            "n_nonfinite": st.n_nonfinite,
            "seconds_per_step": seconds_per_step,
        }
        shown = {k: f"{means[k]:.4g}" for k in self.optimizers if k in means}
        shown.update({k: f"{v:.2g}" for k, v in lrs.items()})
        if self.config.train.max_seconds:
            from cadenza.progress import format_duration

            left = max(0.0, self.config.train.max_seconds - st.seconds_trained)
            shown["left"] = format_duration(left)
        self.tracker.train_row(row, shown)

    def _end_epoch(self) -> str:
        cfg, sched_cfg, st = self.config.train, self.config.schedule, self.state
        self._log_interval()  # the epoch's last steps, still labelled with it
        st.epoch += 1
        st.batch_in_epoch = 0
        train_means = st.take_epoch()
        last_epoch = st.epoch >= cfg.max_epochs
        valid: dict[str, float] = {}
        if self.valid_set is not None and (st.epoch % cfg.valid_every == 0 or last_epoch):
            valid = self.validate()
            self.tracker.valid_row({"epoch": st.epoch, "step": st.step, "split": "valid", **valid})
        source = valid if self.valid_set is not None else train_means
        stopped = ""
        if source and cfg.monitor not in source:  # checked at the first step; again for losses that change
            self._check_monitor(list(source))
        if source and st.step >= getattr(self.model, "first_monitored_step", 0):
            value = source[cfg.monitor]
            if math.isfinite(value) and value < st.best_value - sched_cfg.min_delta:
                st.best_value, st.best_step = value, st.step
                st.bad_validations = 0
                self.save_best()
            else:
                st.bad_validations += 1
            for sched in self.schedulers.values():
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(value)
            if sched_cfg.early_stopping and st.bad_validations >= sched_cfg.early_stopping:
                stopped = "early_stopping"
                if self.dist.is_main:
                    log.info(
                        "early stopping: no improvement of %s for %d validations (best %.6g)",
                        cfg.monitor,
                        st.bad_validations,
                        st.best_value,
                    )
        for sched in self.schedulers.values():
            if sched is not None and not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step()
        if cfg.sample_every and st.epoch % cfg.sample_every == 0:
            self.write_samples()
        self.tracker.plot(self._loss_names or ["loss"], st.step)
        if last_epoch and not stopped:
            stopped = "finished"
        st.stopped = stopped
        if st.epoch % cfg.save_every == 0 or stopped:
            self.save_last()
        return stopped

    def write_samples(self) -> list[Path]:
        """A sample of ``train.sample_seconds`` from the current weights into ``samples/`` (rank 0)."""
        from cadenza.generation import Generator

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
        cfg = self.config.train
        with self._fork_rng():
            return self.tracker.write_sample(
                gen,
                epoch=self.state.epoch,
                step=self.state.step,
                seconds=cfg.sample_seconds,
                seed=cfg.seed + self.state.epoch,
            )


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
    new = not run_dir.exists()
    with _lock_run(run_dir):
        try:
            trainer = Trainer(cfg, run_dir, device=device, restart=restart)
        except BaseException:
            if new:  # a config or store refused: no empty run folder left behind
                _remove_if_only_lock(run_dir)
            raise
        try:
            result = trainer.fit()
        except BaseException:
            trainer.close()
            raise
        trainer.close(wait=True)
    return result


def _last_epoch(st: TrainState) -> int:
    """The epoch of the run's last step, from 1: one stopped inside an epoch (a step or time
    budget, an interrupt) is in the one after those completed. A run stopped at max_steps in its
    12th epoch had said "epoch 11" where its logs and metrics.csv said 12."""
    return st.epoch + 1 if st.batch_in_epoch else st.epoch


def _finite(batch: Any) -> bool:
    """Whether every floating-point tensor of a batch (a tensor, or a dict or list of them) is finite."""
    if isinstance(batch, torch.Tensor):
        return not batch.is_floating_point() or bool(torch.isfinite(batch).all())
    if isinstance(batch, Mapping):
        return all(_finite(v) for v in batch.values())
    if isinstance(batch, list | tuple):
        return all(_finite(v) for v in batch)
    return True


def _finite_rows(batch: Any) -> Any:
    """A batch (a tensor, or a dict of tensors sharing their first dimension) without the rows
    (windows) that hold a non-finite value; None where it cannot be cut so."""
    tensors = batch.values() if isinstance(batch, Mapping) else [batch]
    if not all(isinstance(t, torch.Tensor) and t.ndim for t in tensors):
        return None
    n = next(iter(tensors)).shape[0]
    if any(t.shape[0] != n for t in tensors):
        return None
    keep = torch.ones(n, dtype=torch.bool, device=next(iter(tensors)).device)
    for t in tensors:
        if t.is_floating_point():
            keep &= torch.isfinite(t.reshape(n, -1)).all(dim=1)
    if isinstance(batch, Mapping):
        return {k: v[keep] for k, v in batch.items()}
    return batch[keep]


def _damaged_windows(dataset: Any, windows: list[int]) -> list[str]:
    """``"<shard path> (frames a-b)"`` for each of ``windows`` whose frames are not finite (a
    store's windows), or the window numbers where the dataset cannot say where they lie."""
    found = []
    window = getattr(dataset, "window", None)
    for i in windows:
        if window is None:
            found.append(f"window {i}")
            continue
        frames, f = window(i)
        if not np.isfinite(frames).all():
            item_id = str(dataset.ids[f])
            start = dataset.locate(i)[1]
            found.append(f"{dataset.store.shard_path(item_id)} (frames {start}-{start + len(frames)})")
    return list(dict.fromkeys(found)) or [f"window {i}" for i in windows[:8]]


def _remove_if_only_lock(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        if [p.name for p in run_dir.iterdir()] == [".train.lock"]:
            (run_dir / ".train.lock").unlink()
            run_dir.rmdir()


def _lock_run(run_dir: Path) -> FolderLock:
    """The run directory taken for this process (the main one of a DDP run, the only one that
    writes there), or :class:`~cadenza.errors.BusyError` while another process trains into it:
    two would write their checkpoints over each other's, and each resume from the other's."""
    if os.environ.get("RANK", "0") != "0" or (run_dir.exists() and not run_dir.is_dir()):
        return FolderLock(None)  # (a file: the trainer says so)
    run_dir.mkdir(parents=True, exist_ok=True)

    def busy(pid: int | None) -> BusyError:
        who = f"process {pid}" if pid else "another process"
        return BusyError(
            f"{run_dir} is being trained now by {who} (a cadenza train, a study or a notebook); "
            "let it finish or stop it (the same command then goes on from its last checkpoint), "
            "or train into another folder with --run DIR"
        )

    return lock_folder(run_dir, ".train.lock", busy)


__all__ = ["CheckpointError", "TrainResult", "Trainer", "TrainingDiverged", "train"]


def _check_label_key(store: FeatureStore, key: str | None) -> None:
    """A ``data.label_key`` the store's files do not have: an error when they have other labels (a
    typo would have trained every file as unlabelled), a warning when they have none at all (a
    packaged config's ``composer`` on one's own folder: the model trains unconditioned)."""
    if not key or store.label_values(key):
        return
    keys = sorted({k for r in store.records for k in r.get("labels", {})})
    if keys:
        raise ConfigError(
            f"data.label_key={key!r}: no file of {store.path} has that label; its files have "
            f"{', '.join(keys)} (or data.label_key=null: unconditioned)"
        )
    log.warning(
        "no file of %s has the label %r (data.label_key): the model trains unconditioned", store.path, key
    )
