"""`cadenza evaluate SOURCE... --reference REF --out DIR`: measure generated music against real music.

``SOURCE`` is a run, a bundle or a folder of audio/MIDI. Without ``--reference``, runs of
piano-roll models get paper 004's Table 1 against their training data, as before
(``--data``, ``--bars``, ``--all``, ``--legacy``, ``--paper``); other runs are measured against
the held-out split of their own feature store.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cadenza import threads
from cadenza.commands import seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure generated music against real music: distances, calibration rows, flags, HTML report",
        description=(
            "Generate --n-clips clips with each run (a folder is taken as it is), measure them against "
            "--reference (a feature store's held-out split, or a folder of real music) with weight-free "
            "DSP features: KAD and FAD with 95% intervals, precision/recall/density/coverage, calibration "
            "rows (real vs real, noise, silence, low-pass, loop; for mel and MFCC runs, the reference "
            "through their representation and back: the nearest such a model can come), per-clip "
            "flags (silent, noise, loop, "
            "copy, clipping) and, for scores, EB/UPC/QN. Writes report.html, report.md, metrics.json "
            "and metrics.csv into --out. Without --reference, piano-roll runs get paper 004's Table 1."
        ),
    )
    p.add_argument(
        "runs", nargs="*", metavar="SOURCE", help="run directories, bundles, checkpoints or folders"
    )
    p.add_argument(
        "--reference",
        metavar="REF",
        help="a feature store (its test split is used) or a folder of held-out audio/MIDI",
    )
    p.add_argument("--out", metavar="DIR", help="the report folder (default: results/ with --reference)")
    p.add_argument("--n-clips", type=int, default=50, help="clips generated per run (default: 50)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each clip (default: 10)")
    p.add_argument(
        "--n-boot", type=int, default=1000, help="bootstrap draws of the intervals (default: 1000)"
    )
    p.add_argument(
        "--train",
        metavar="STORE_OR_DIR",
        help="training material for the copy check (default: each run's store, else the reference's)",
    )
    p.add_argument("--data", metavar="STORE", help="Table 1: the training data's feature store")
    p.add_argument("--bars", type=int, default=2000, help="Table 1: bars generated per run (default: 2000)")
    p.add_argument(
        "--data-bars",
        type=int,
        default=20000,
        help="Table 1: at most this many training bars, whole phrases at random (default: 20000; 0: all)",
    )
    p.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    p.add_argument("--all", action="store_true", help="Table 1: show muspy's metrics too")
    p.add_argument(
        "--legacy", action="store_true", help="Table 1: UPC and QN as MuseGAN's released code counts them"
    )
    p.add_argument(
        "--paper", action="store_true", help="Table 1: add paper 004's published rows for reference"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or mps")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a generation option of the model family, e.g. temperature=0.9 (repeatable)",
    )
    threads.add_argument(p)
    p.set_defaults(func=run)


def _saved_state(source: str) -> dict:
    """The checkpoint of a run or bundle (``{}`` for a folder or an unreadable checkpoint)."""
    from cadenza.errors import CadenzaError
    from cadenza.evaluation.clips import is_run
    from cadenza.generation import find_checkpoint
    from cadenza.training.checkpoint import load_checkpoint

    if not is_run(source):
        return {}
    try:
        return load_checkpoint(find_checkpoint(source))
    except CadenzaError:
        return {}


def _is_pianoroll_run(source: str) -> bool:
    return (_saved_state(source).get("representation") or {}).get("name") == "pianoroll"


def _run_store(source: str) -> str | None:
    from cadenza.evaluation.clips import is_store

    store = ((_saved_state(source).get("config") or {}).get("data") or {}).get("store")
    return store if store and is_store(store) else None


def run(args: argparse.Namespace) -> int:
    threads.mark()  # the load is measured while the libraries load
    import torch  # noqa: F401 - loaded now, inside the window

    from cadenza.commands.generate import parse_options
    from cadenza.errors import ParameterError

    threads.configure(getattr(args, "threads", None))

    options = parse_options(args.option)
    reference = args.reference
    if reference is None and (args.data or (args.runs and all(_is_pianoroll_run(r) for r in args.runs))):
        return _table1(args, options)
    if not args.runs:
        raise ParameterError("give runs, bundles or folders to evaluate (and --reference REF)")
    missing = [s for s in args.runs if not Path(s).exists()]
    if missing:  # a mistyped path, found before the reference is measured and every run generates
        raise ParameterError(f"no such run, bundle, folder or file: {', '.join(missing)}")
    if reference is None:
        reference = next((s for s in map(_run_store, args.runs) if s), None)
        if reference is None:
            raise ParameterError(
                "no --reference given and no run names a feature store that exists here: pass "
                "--reference STORE (its test split) or --reference FOLDER of held-out music"
            )
        print(f"reference: the held-out split of {reference}")
    from cadenza.evaluation.evaluate import evaluate, format_summary

    out = Path(args.out or "results")
    evaluation = evaluate(
        args.runs,
        reference=reference,
        out=out,
        n_clips=args.n_clips,
        seconds=args.seconds,
        seed=args.seed,
        n_boot=args.n_boot,
        device=args.device,
        options=options,
        train=args.train,
    )
    print(format_summary(evaluation), end="")
    for note in evaluation.notes:
        print(f"note: {note}")
    print(f"report: {out / 'report.html'} (and report.md, metrics.json, metrics.csv)")
    return 0


def _table1(args: argparse.Namespace, options: dict) -> int:
    from cadenza.evaluation.table import format_table, table1, write_table

    rows = table1(
        args.runs,
        data=args.data,
        n_bars=args.bars,
        max_data_bars=args.data_bars or None,
        seed=args.seed,
        legacy=args.legacy,
        device=args.device,
        options=options,
    )
    columns = "all" if args.all else "table1"
    print(format_table(rows, columns=columns, with_paper=args.paper), end="")
    if args.out:
        for path in write_table(rows, args.out, columns=columns, with_paper=args.paper):
            print(path)
    return 0
