"""`cadenza export RUN OUT`: a self-contained bundle that `cadenza generate` takes in place of RUN."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="bundle a run (weights, config, representation, seed clips) for generation anywhere",
        description=(
            "Write the run's best checkpoint (or --checkpoint) without optimiser state, with the "
            "representation, the normalisation and a few seed clips, so that `cadenza generate OUT` "
            "works without the feature store. OUT ending in .pt is one file; otherwise a folder."
        ),
    )
    p.add_argument("run", metavar="RUN", help="a run directory (or a checkpoint file)")
    p.add_argument("out", metavar="OUT", help="bundle file (.pt) or folder")
    p.add_argument("--checkpoint", metavar="PATH", help="a checkpoint to export instead of best.pt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cadenza.training.export import export_bundle

    print(export_bundle(args.run, args.out, checkpoint=args.checkpoint))
    return 0
