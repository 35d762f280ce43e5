"""`cadenza demo`: the main job on the embedded corpus (what `make demo` runs)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="prepare the embedded Bach chorales, plot, train a tiny model and generate",
        description="Runs the main job end to end on the music21 corpus shipped with the package.",
    )
    p.add_argument("--out", default="demo", help="output folder (default: demo)")
    p.add_argument("--max-files", type=int, default=24, help="chorales to prepare (default: 24)")
    p.add_argument("--workers", type=int, default=2, help="processes for preparation (default: 2)")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each generated sample")
    p.add_argument("--n", type=int, default=2, help="number of samples to generate")
    p.add_argument("overrides", nargs="*", help="training overrides, e.g. train.max_epochs=5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cadenza.demo import run_demo

    run_demo(
        args.out,
        max_files=args.max_files,
        workers=args.workers,
        train_overrides=args.overrides,
        seconds=args.seconds,
        n_samples=args.n,
    )
    return 0
