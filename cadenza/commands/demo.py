"""`cadenza demo`: the main job on the embedded corpus (what `make demo` runs), a small `cadenza study`.

The work is :func:`cadenza.demo.run_demo`; this module reads the command line. Options left out
take what ``OUT/study.json`` holds, else the demo's sizes. The exit status is 0 when every model
went through, 1 when one failed (the report says which and why).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from cadenza import threads

#: The study's sizes the demo takes: option, study setting, type, what it is.
SIZES = (
    ("--budget", "budget", str, "training per model: a time (90s, 10m) or steps (500steps)"),
    ("--max-files", "max_files", int, "chorales drawn for every store"),
    ("--n", "listen_clips", int, "listening clips per model"),
    ("--seconds", "listen_seconds", float, "length of each listening clip"),
    ("--eval-clips", "eval_clips", int, "clips per model for the metrics; 0: no evaluation"),
    ("--eval-seconds", "eval_seconds", float, "length of each metric clip"),
    ("--bars", "bars", int, "generated bars per GAN for paper 004's Table 1; 0: none"),
)


def register(sub: argparse._SubParsersAction) -> None:
    from cadenza.demo import DEMO_SETTINGS

    p = sub.add_parser(
        "demo",
        help="a small study of one tiny model of each family on the embedded chorales (resumable)",
        description=(
            "cadenza study music21:chorales of one tiny model of each family at a small budget: prepares "
            "the stores, plots one chorale, trains, writes listening clips, measures every model against "
            "held-out chorales (paper 004's Table 1 for the GANs) and writes OUT/report.html. The same "
            "command again continues where it stopped; options left out are taken from OUT/study.json."
        ),
    )
    p.add_argument("--out", default="demo", help="output folder (default: demo)")
    p.add_argument("--models", default="", help="comma-separated model keys (default: one of each family)")
    for flag, dest, kind, what in SIZES:
        default = DEMO_SETTINGS[dest]
        shown = f"{default:g}" if isinstance(default, float) else default
        p.add_argument(flag, dest=dest, type=kind, metavar=dest.upper(), help=f"{what} (default: {shown})")
    p.add_argument("--workers", type=int, help="processes preparing the stores (default: one per CPU)")
    p.add_argument(
        "--device", default="auto", help="auto (default: CUDA, then MPS, then CPU), cpu, cuda or mps"
    )
    p.add_argument(
        "--set",
        dest="set_overrides",
        action="append",
        default=[],
        metavar="OVERRIDE",
        help="a training override, repeatable (as cadenza study's --set; the same as one given without --set)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="training overrides: SECTION.KEY=VALUE for every model (data.batch_size=8), "
        "MODEL:SECTION.KEY=VALUE for one",
    )
    threads.add_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    threads.mark()  # the load is measured while the libraries load
    import torch  # noqa: F401 - loaded now, inside the window

    from cadenza.commands.prepare import default_workers
    from cadenza.demo import run_demo

    threads.configure(getattr(args, "threads", None))
    result = run_demo(
        args.out,
        models=[m.strip() for m in args.models.split(",") if m.strip()] or None,
        overrides=[*args.overrides, *args.set_overrides] or None,
        workers=args.workers or default_workers(getattr(args, "threads", None)),
        device=args.device,
        command=shlex.join(["cadenza", *sys.argv[1:]]) if "demo" in sys.argv[1:] else None,
        **{dest: getattr(args, dest) for _, dest, _, _ in SIZES},
    )
    for model, error in result.study.failed.items():
        print(f"cadenza demo: {model} failed at {error.splitlines()[0][:300]}", file=sys.stderr)
    return 1 if result.study.failed else 0
