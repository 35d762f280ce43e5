"""`cadenza demo`: the main job on the embedded corpus (what `make demo` runs)."""

from __future__ import annotations

import argparse

from cadenza import threads


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="prepare the embedded corpus, plot, train a tiny model of each family, generate and evaluate",
        description="Runs the main job end to end on the music21 corpus shipped with the package.",
    )
    p.add_argument("--out", default="demo", help="output folder (default: demo)")
    p.add_argument(
        "--max-files",
        type=int,
        default=None,
        help="files per store (default: 24 chorales; 12 pieces of raw audio)",
    )
    p.add_argument("--workers", type=int, default=2, help="processes for preparation (default: 2)")
    p.add_argument(
        "--seconds", type=float, default=None, help="length of each generated sample (default: per model)"
    )
    p.add_argument(
        "--models",
        default="",
        help="comma-separated config names or model keys to train (default: one of each family)",
    )
    p.add_argument(
        "--bars", type=int, default=2000, help="generated bars per GAN for Table 1 (default: 2000)"
    )
    p.add_argument("--n", type=int, default=2, help="number of samples to generate")
    p.add_argument(
        "--eval-clips",
        type=int,
        default=20,
        help="clips per model measured by cadenza evaluate at the end (default: 20; 0: skip)",
    )
    p.add_argument("overrides", nargs="*", help="training overrides, e.g. train.max_epochs=5")
    threads.add_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    threads.mark()  # the load is measured while the libraries load
    import torch  # noqa: F401 - loaded now, inside the window

    from cadenza.demo import run_demo

    threads.configure(getattr(args, "threads", None))

    run_demo(
        args.out,
        max_files=args.max_files,
        workers=args.workers,
        train_overrides=args.overrides,
        seconds=args.seconds,
        n_samples=args.n,
        models=[m.strip() for m in args.models.split(",") if m.strip()] or None,
        eval_bars=args.bars,
        eval_clips=args.eval_clips,
    )
    return 0
