"""`cadenza generate RUN_OR_BUNDLE --seconds 10 --n 3 --seed 7 --out samples/`: new music from a model.

The length is ``--seconds`` for every model (a score at its tempo), or ``--beats``/``--bars`` for
symbolic models.
"""

from __future__ import annotations

import argparse

from cadenza import threads
from cadenza.commands import seed
from cadenza.errors import ParameterError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate music from a trained run or an exported bundle",
        description=(
            "Load a run's best checkpoint (or last, or --checkpoint), or an exported bundle, generate N "
            "samples and write them as WAV (MIDI for symbolic models) with a JSON sidecar each. "
            "The same --seed writes the same bytes."
        ),
    )
    p.add_argument("source", metavar="RUN_OR_BUNDLE", help="a run directory, a bundle or a checkpoint file")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=None, help="length of each sample (default: 10)")
    length.add_argument("--beats", type=float, help="symbolic models: length in beats instead of seconds")
    length.add_argument("--bars", type=float, help="symbolic models: length in bars instead of seconds")
    p.add_argument("--n", type=int, default=1, help="number of samples (default: 1)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    p.add_argument("--out", default="samples", help="output folder (default: samples)")
    p.add_argument("--checkpoint", metavar="PATH", help="a checkpoint to use instead of best.pt")
    p.add_argument(
        "--seed-file",
        metavar="FILE",
        help=(
            "an audio file (or score) to start from (models that continue music): its windows come "
            "from its first 10 minutes, read as prepare reads a file (a silent file is refused)"
        ),
    )
    p.add_argument("--device", default="cpu", help="cpu (default, reproducible), auto, cuda or mps")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "a generation option of the model family (repeatable), e.g. --option temperature=0.9 "
            "(WaveNet's sampling temperature), --option seed=silence, --option mode=naive"
        ),
    )
    p.add_argument(
        "--style",
        metavar="NAME=W,...",
        help=(
            "blend of the labels a conditioned model was trained on (WaveNet: composers), e.g. "
            "--style beethoven=0.5,mozart=0.5; a bare NAME weighs 1; weights are normalised to sum 1"
        ),
    )
    threads.add_argument(p)
    p.set_defaults(func=run)


def parse_options(items: list[str]) -> dict[str, object]:
    import yaml

    options: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"--option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key.strip()] = value
        if value.strip().lower() in ("nan", ".nan", "+nan", "-nan"):  # float() reads it; no option takes it
            raise ParameterError(f"--option {item!r}: expected a number, got NaN")
    return options


def parse_style(text: str) -> dict[str, float]:
    """``"beethoven=0.5,mozart=0.5"`` -> ``{"beethoven": 0.5, "mozart": 0.5}`` (a bare name weighs 1)."""
    style: dict[str, float] = {}
    for item in text.split(","):
        name, sep, weight = item.partition("=")
        name = name.strip()
        if not name:
            raise ParameterError(f"--style {text!r}: expected NAME=WEIGHT[,NAME=WEIGHT...]")
        try:
            style[name] = style.get(name, 0.0) + (float(weight) if sep else 1.0)
        except ValueError:
            raise ParameterError(f"--style {text!r}: the weight of {name!r} is not a number") from None
    return style


def run(args: argparse.Namespace) -> int:
    threads.mark()  # the load is measured while the libraries load
    from cadenza.generation import generate_from_run

    threads.configure(getattr(args, "threads", None))

    options = parse_options(args.option)
    if args.style:
        options["style"] = parse_style(args.style)
    seconds = (
        args.seconds if args.seconds is not None or args.beats is not None or args.bars is not None else 10.0
    )
    paths = generate_from_run(
        args.source,
        seconds=seconds,
        beats=args.beats,
        bars=args.bars,
        n=args.n,
        seed=args.seed,
        out=args.out,
        checkpoint=args.checkpoint,
        seed_file=args.seed_file,
        device=args.device,
        options=options,
    )
    for path in paths:
        print(path)
    return 0
