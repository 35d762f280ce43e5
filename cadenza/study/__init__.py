"""``cadenza study``: every model on one corpus under one budget, measured, in one resumable command.

A study takes one source of music and a list of models (default: every key of
:data:`cadenza.models.MODELS`) and, into one folder::

    OUT/study.json                 where the study stands (settings, every stage's record)
    OUT/data/<store>/              one feature store per representation the models need, shared
    OUT/runs/<model>/              each model's run (checkpoints, metrics, loss curve)
    OUT/listen/<model>/            paper 000's listening clips (five of ten seconds per model)
    OUT/evaluation/<store>/        `cadenza evaluate` of the models measured against that store
    OUT/table1/<store>/            paper 004's Table 1 for the piano-roll models
    OUT/logs/                      the traceback of each stage that failed
    OUT/report.{md,html}           the comparison

The pieces, each usable alone:

* :mod:`cadenza.study.plan`: the budget (:class:`Budget`), the store each model needs
  (:func:`store_needs`), the held-out music it is measured against (:func:`reference_store`),
  the plan (:func:`plan_study`) and the check that every store holds the same held-out files
  (:func:`check_held_out`);
* :mod:`cadenza.study.state`: ``study.json``, written atomically after every stage;
* :mod:`cadenza.study.run`: the stages and :func:`run_study`;
* :mod:`cadenza.study.report`: the report, and :func:`markdown_to_html`.

Examples
--------
>>> result = run_study("study", source="music21:chorales", budget="10m")                    # doctest: +SKIP
>>> result = run_study("study", models=["fft_base", "fft_bilinear"], budget="500steps")      # doctest: +SKIP
>>> result.failed                                                                           # doctest: +SKIP
{}
"""

from __future__ import annotations

from cadenza.study.plan import (
    Budget,
    Plan,
    check_held_out,
    plan_study,
    reference_store,
    store_key,
    store_needs,
)
from cadenza.study.report import markdown_to_html, write_report
from cadenza.study.run import StudyResult, StudySettings, listen_command, resolve_settings, run_study
from cadenza.study.state import StudyError, StudyState

__all__ = [
    "Budget",
    "Plan",
    "StudyError",
    "StudyResult",
    "StudySettings",
    "StudyState",
    "check_held_out",
    "listen_command",
    "markdown_to_html",
    "plan_study",
    "reference_store",
    "resolve_settings",
    "run_study",
    "store_key",
    "store_needs",
    "write_report",
]
