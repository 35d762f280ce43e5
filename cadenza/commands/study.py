"""`cadenza study SOURCE [--models a,b] [--budget 10m] [--out DIR]`: every model on one corpus, one budget, measured.

The work is :func:`cadenza.study.run_study`; this module reads the command line. Options left
out take what ``DIR/study.json`` holds (so ``cadenza study --out DIR`` continues a study), else
the defaults. The exit status is 0 when every model went through, 1 when one failed (the
report says which and why), 130 when interrupted (the same command continues).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from cadenza import threads


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="train every model on one corpus for one budget, generate, evaluate and compare (resumable)",
        description=(
            "Prepare the stores the models need from SOURCE (shared where they can be; the same held-out "
            "files for all), train each model for the same budget (wall-clock such as 10m or 2h, or "
            "steps such as 500steps), generate paper 000's five listening clips per model, measure the "
            "models against the held-out files with cadenza evaluate (paper 004's Table 1 for the "
            "piano-roll models) and write DIR/report.html. The same command again continues where it "
            "stopped; options left out are taken from DIR/study.json. A model that fails is reported "
            "and the others go on (exit status 1)."
        ),
    )
    p.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="folder, file or corpus spec (e.g. music21:chorales); may be left out to continue a study",
    )
    from cadenza.models import MODELS  # the table only: the families load when used

    p.add_argument("--models", help=f"comma-separated model keys (default: every model: {', '.join(MODELS)})")
    p.add_argument(
        "--budget",
        help="training per model: a wall-clock time (10m, 2h, 1h30m, 90s), steps (500steps) or 'config' "
        "(each config's own length) (default: 8m)",
    )
    p.add_argument("--out", default="study", metavar="DIR", help="the study's folder (default: study)")
    p.add_argument("--preset", choices=("tiny", "paper"), help="the configs' size (default: tiny)")
    p.add_argument("--max-files", type=int, help="at most this many files of SOURCE (default: all)")
    p.add_argument("--seed", type=int, help="seed of the file draw, the split and generation (default: 0)")
    p.add_argument(
        "--split",
        metavar="TRAIN,VALID,TEST",
        help="fractions of the files to train on and to hold out (default: 0.8,0.1,0.1; a small folder "
        "of your own music: 0.6,0.2,0.2 holds out more to measure against; one or two recordings of "
        "100 s or more are cut into parts, split the same way)",
    )
    p.add_argument(
        "--eval-clips", type=int, help="clips per model for the metrics (default: 50; 0: no evaluation)"
    )
    p.add_argument("--eval-seconds", type=float, help="length of each metric clip (default: 10)")
    p.add_argument("--n-boot", type=int, help="bootstrap draws of the intervals (default: 1000)")
    p.add_argument("--listen-clips", type=int, help="listening clips per model (default: 5, as paper 000)")
    p.add_argument("--listen-seconds", type=float, help="length of each listening clip (default: 10)")
    p.add_argument("--bars", type=int, help="bars per piano-roll model for Table 1 (default: 2000; 0: none)")
    p.add_argument("--workers", type=int, help="processes preparing the stores (default: one per CPU)")
    p.add_argument(
        "--device", default="auto", help="auto (default: CUDA, then MPS, then CPU), cpu, cuda or mps"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="OVERRIDE",
        help="a training override, repeatable: SECTION.KEY=VALUE for every model (data.batch_size=8), "
        "MODEL:SECTION.KEY=VALUE for one (wavenet:optim.lr=1e-3); --set '' alone drops the changes "
        "a study was given before",
    )
    threads.add_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    threads.mark()  # the load is measured while the libraries load
    import torch  # noqa: F401 - loaded now, inside the window

    from cadenza.commands.prepare import default_workers
    from cadenza.study import run_study

    threads.configure(getattr(args, "threads", None))
    result = run_study(
        args.out,
        source=args.source,
        models=args.models.split(",") if args.models is not None else None,
        budget=args.budget,
        preset=args.preset,
        max_files=args.max_files,
        seed=args.seed,
        split=args.split,
        eval_clips=args.eval_clips,
        eval_seconds=args.eval_seconds,
        n_boot=args.n_boot,
        listen_clips=args.listen_clips,
        listen_seconds=args.listen_seconds,
        bars=args.bars,
        # none given: the study's own; --set '' alone: none any more
        overrides=[o for o in args.overrides if o.strip()] if args.overrides else None,
        workers=args.workers or default_workers(getattr(args, "threads", None)),
        device=args.device,
        command=_command_line(),
    )
    if result.failed:
        for model, error in result.failed.items():
            print(f"cadenza study: {model} failed at {error.splitlines()[0][:300]}", file=sys.stderr)
        return 1
    return 0


def _command_line() -> str | None:
    """The command line as typed, for the report, when this process is ``cadenza study`` (else None:
    the study writes the equivalent command of its settings)."""
    argv = sys.argv[1:]
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb != "study":
        return None
    return shlex.join(["cadenza", *argv])
