"""`cadenza evaluate RUN [RUN ...] --data STORE --bars 2000 --out DIR`: paper 004's Table 1 for our runs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="objective metrics of piano-roll runs against their training data (paper 004's Table 1)",
        description=(
            "Generate --bars bars with each run (2000, as paper 004) and print EB, UPC and QN of the "
            "training data and of each run side by side (--all: muspy's metrics too). With --out, write "
            "table1.md, table1.csv and table1.json there."
        ),
    )
    p.add_argument("runs", nargs="*", metavar="RUN", help="run directories, bundles or checkpoints")
    p.add_argument(
        "--data", metavar="STORE", help="the training data's feature store (default: the first run's)"
    )
    p.add_argument("--bars", type=int, default=2000, help="bars generated per run (default: 2000)")
    p.add_argument(
        "--data-bars",
        type=int,
        default=20000,
        help="at most this many training bars, whole phrases at random (default: 20000; 0: all)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", metavar="DIR", help="write table1.md/.csv/.json into DIR")
    p.add_argument("--all", action="store_true", help="show muspy's metrics too")
    p.add_argument("--legacy", action="store_true", help="UPC and QN as MuseGAN's released code counts them")
    p.add_argument("--paper", action="store_true", help="add paper 004's published rows for reference")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or mps")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a generation option of the model family, e.g. binarize=bernoulli (repeatable)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cadenza.commands.generate import parse_options
    from cadenza.evaluation.table import format_table, table1, write_table

    rows = table1(
        args.runs,
        data=args.data,
        n_bars=args.bars,
        max_data_bars=args.data_bars or None,
        seed=args.seed,
        legacy=args.legacy,
        device=args.device,
        options=parse_options(args.option),
    )
    columns = "all" if args.all else "table1"
    print(format_table(rows, columns=columns, with_paper=args.paper), end="")
    if args.out:
        for path in write_table(rows, args.out, columns=columns, with_paper=args.paper):
            print(path)
    return 0
