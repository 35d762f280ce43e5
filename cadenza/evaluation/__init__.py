"""Evaluation: objective metrics of generated music.

:mod:`cadenza.evaluation.symbolic` holds the piano-roll metrics: paper 004's EB, UPC and QN
(with MuseGAN's ``legacy`` conventions) and muspy's family, vectorised over many bars, and
:func:`symbolic_report`, which computes them all at once.
"""

from __future__ import annotations

from cadenza.evaluation.symbolic import *  # noqa: F403 - the metrics: symbolic.__all__
from cadenza.evaluation.symbolic import __all__  # noqa: F401
