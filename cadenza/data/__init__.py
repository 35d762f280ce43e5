"""Corpora, feature stores and the datasets that stream from them.

``CORPORA`` lists the sources (any folder, the embedded music21 corpus, MusicNet, GTZAN,
FMA, the Lakh Pianoroll Dataset); ``prepare_corpus`` turns one into a ``FeatureStore``;
``SequenceWindows`` and ``AudioWindows`` read windows from it for training.

Names are imported on first use, so ``import cadenza.data.store`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CORPORA": "corpora",
    "Source": "corpora",
    "open_source": "corpora",
    "SourceItem": "items",
    "Normalizer": "normalize",
    "PrepareSummary": "prepare",
    "prepare_corpus": "prepare",
    "FeatureStore": "store",
    "create_store": "store",
    "SEQ2SEQ_SCHEMES": "windows",
    "AudioWindows": "windows",
    "SequenceWindows": "windows",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cadenza.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cadenza.data.{_EXPORTS[name]}"), name)
