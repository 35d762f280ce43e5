"""The one trainer of cadenza, its configs and checkpoints (generation is :mod:`cadenza.generation`).

=====================  ==================================================================
module                 what it holds
=====================  ==================================================================
``config``             typed experiment sections, YAML files, ``key=value`` overrides
``data``               the ``DATASETS`` table (typed ``data.options``), the DataInfo a dataset
                       gives, and the resumable, DDP-aware batch sampler
``optim``              the tables of optimisers and learning-rate schedules
``trainer``            :class:`Trainer` and :func:`train`: the loop, validation, checkpoints
``state``              :class:`TrainState`: every counter of a run, saved and resumed as one
``tracking``           progress, ``metrics.csv``, TensorBoard, the loss plot, samples
``guard``              the non-finite guard and :class:`TrainingDiverged`
``checkpoint``         atomic, self-describing checkpoints loaded with ``weights_only=True``
``distributed``        devices and the DDP process group under ``torchrun``
``logs``               ``metrics.csv``, TensorBoard, the loss plot
``generation``         moved to :mod:`cadenza.generation` (still importable from here)
``export``             :func:`export_bundle`: a run as one self-contained file
=====================  ==================================================================

Examples
--------
>>> from cadenza.training import train                                         # doctest: +SKIP
>>> from cadenza.generation import generate_from_run                            # doctest: +SKIP
>>> train("fft_base-tiny", data="data/bach-fft", run="runs/tiny")              # doctest: +SKIP
>>> generate_from_run("runs/tiny", seconds=10, n=3, seed=7, out="samples")     # doctest: +SKIP
"""

from cadenza.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from cadenza.training.config import ConfigError, ExperimentConfig, load_config
from cadenza.training.trainer import Trainer, TrainingDiverged, TrainResult, train

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ExperimentConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "load_checkpoint",
    "load_config",
    "save_checkpoint",
    "train",
]
