"""`cadenza train CONFIG [--data STORE] [--run DIR] [SECTION.KEY=VALUE ...]`: train, or resume.

Running the same command again resumes the run from ``checkpoints/last.pt``. Under
``torchrun --nproc-per-node=N -m cadenza train ...`` it trains with DDP.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from cadenza import threads


class _Intermixed:
    """Lets ``key=value`` overrides come before or after the options, as users type them."""

    _mixing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._mixing:
            return super().parse_known_args(args, namespace)  # type: ignore[misc]
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)  # type: ignore[attr-defined]
        finally:
            self._mixing = False


def intermixed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser``, made to accept positionals on either side of its options."""
    parser.__class__ = type(f"Intermixed{type(parser).__name__}", (_Intermixed, type(parser)), {})
    return parser


def register(sub: argparse._SubParsersAction) -> None:
    p = intermixed(
        sub.add_parser(
            "train",
            help="train a model from a config (the same command again resumes)",
            description=(
                "Train the experiment of CONFIG on a feature store. CONFIG is a YAML file or the name of a "
                "packaged config (e.g. fft_base-tiny, fft_base-paper). Overrides such as model.hidden_size=512 "
                "optim.lr=3e-4 train.max_epochs=50 change single values. Running the same command again "
                "resumes from the run's last checkpoint."
            ),
        )
    )
    p.add_argument("config", help="a YAML config or a packaged config name (fft_base-tiny)")
    p.add_argument(
        "overrides", nargs="*", metavar="SECTION.KEY=VALUE", help="config changes, checked by type"
    )
    p.add_argument(
        "--set",
        dest="set_overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a config change, repeatable (as cadenza study's --set; the same as one given without --set)",
    )
    p.add_argument("--data", metavar="STORE", help="the feature store to train on (sets data.store)")
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        metavar="DIR",
        help="the run directory (default: runs/<config name>); under torchrun write --run-dir, since torchrun "
        "takes --run for its own --run-path",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--restart", action="store_true", help="start the run again from step 0 instead of resuming"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    threads.add_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    threads.mark()  # the load is measured while the libraries load
    from cadenza.training import train

    threads.configure(getattr(args, "threads", None))

    result = train(
        args.config,
        data=args.data,
        run=args.run,
        overrides=[*args.overrides, *args.set_overrides],
        device=args.device,
        restart=args.restart,
        progress=False if args.no_progress else None,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        best = f"; best monitored loss {result.best_value:.6g}" if result.best_value is not None else ""
        print(f"{result.run_dir}: {result.stopped} at step {result.step}, epoch {result.last_epoch}{best}")
        for path in (result.last, result.best):
            if path is not None:
                print(f"  {path}")
        if result.stopped == "interrupted":
            print("interrupted; run the same command again to resume")
    return 130 if result.stopped == "interrupted" else 0
