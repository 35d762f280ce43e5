"""The `cadenza` command: one entry point, one thin module per verb in ``cadenza/commands``.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func(args) -> int``; modules import heavy libraries inside ``func`` so that
``cadenza --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cadenza import __version__
from cadenza.errors import CadenzaError

#: Verbs in the order ``cadenza --help`` lists them.
COMMANDS = ("doctor", "prepare", "train", "generate", "evaluate", "listen", "export", "demo", "study")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cadenza",
        description="Music generation with deep learning: prepare a corpus, train, generate, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"cadenza {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"cadenza.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cadenza.commands.{name}":
                raise
            continue  # a verb whose module is not written yet
        module.register(sub)
    return parser


#: Verbs that run models on the CPU for long: run under tcmalloc (see :mod:`cadenza._malloc`).
HEAVY = ("train", "generate", "demo", "study")


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the real command line, not a call from Python
        verb = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
        if verb in HEAVY and sys.executable:
            from cadenza._malloc import reexec_under_tcmalloc

            reexec_under_tcmalloc([sys.executable, "-m", "cadenza", *sys.argv[1:]])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CadenzaError as exc:
        print(f"cadenza {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cadenza {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
