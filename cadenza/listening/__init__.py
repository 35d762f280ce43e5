"""Blind listening tests of generated music: clips, a balanced design, stored ratings, statistics.

The library half, usable from Python; :mod:`cadenza.listening.server` is the thin web app over
it and ``cadenza listen`` the command that serves it.

- :mod:`~cadenza.listening.clips`: reading per-model folders, one rate, length and loudness,
  the 3.5 kHz anchor;
- :mod:`~cadenza.listening.design`: balanced blocks per listener (ACR and A/B), the repeat;
- :mod:`~cadenza.listening.experiment`: a prepared test folder (opaque tokens, ``test.json``);
- :mod:`~cadenza.listening.store`: the append-only SQLite event log (WAL);
- :mod:`~cadenza.listening.stats`: two-way cluster bootstrap, Wilcoxon + Holm, Bradley-Terry;
- :mod:`~cadenza.listening.results` and :mod:`~cadenza.listening.report`: screening, the
  paper-000 table, CSV/JSON/Markdown.

Examples
--------
>>> from cadenza.listening import analyse, format_table, open_experiment
>>> exp = open_experiment("results/", reference="data/bach-fft")   # doctest: +SKIP
>>> print(format_table(analyse(exp)))                              # doctest: +SKIP
"""

from cadenza.listening.design import Design, Trial
from cadenza.listening.experiment import Experiment, experiment_folders, open_experiment, prepare_experiment
from cadenza.listening.report import format_table, write_results
from cadenza.listening.results import Results, analyse
from cadenza.listening.store import Event, Store

__all__ = [
    "Design",
    "Event",
    "Experiment",
    "Results",
    "Store",
    "Trial",
    "analyse",
    "experiment_folders",
    "format_table",
    "open_experiment",
    "prepare_experiment",
    "write_results",
]
