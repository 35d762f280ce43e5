"""`cadenza prepare SOURCE OUT --representation NAME`: a corpus into a feature store."""

from __future__ import annotations

import argparse

from cadenza import threads


def _params(pairs: list[str]) -> dict[str, object]:
    import yaml

    from cadenza.errors import ParameterError

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParameterError(f"--param expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def default_workers(requested: int | None = None) -> int:
    """``--threads`` (else ``CADENZA_THREADS``) when given, else one per CPU this process may use
    (its affinity and cgroup quota), at most 8.

    Workers are independent single-threaded processes: beside other programs they share the
    cores fairly without waiting for each other, so the free CPUs do not lower the default.
    """
    choice = threads.parse_request(requested)
    if choice is None:
        import os

        choice = threads.parse_request(os.environ.get(threads.ENV_VAR))
    if choice is not None:
        return choice
    return max(1, min(8, threads.available_cpus().available))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="decode, resample and encode a corpus into a feature store",
        description=(
            "Prepare SOURCE into a feature store at OUT. SOURCE is a folder of audio or MIDI/MusicXML, "
            "a single file, or a corpus spec: music21:bach (the default embedded corpus), "
            "music21:beethoven,mozart, music21:quartets, gtzan:PATH, musicnet:PATH, fma:PATH, lpd:PATH. "
            "Running the same command again resumes where it stopped."
        ),
    )
    p.add_argument("source", help="folder, file or corpus spec (e.g. music21:bach)")
    p.add_argument("out", help="output folder of the feature store")
    p.add_argument(
        "-r", "--representation", default="fft", help="waveform, fft, mel, mfcc or pianoroll (default: fft)"
    )
    p.add_argument(
        "--sample-rate", type=int, default=None, help="audio rate in Hz (default: the representation's)"
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a representation parameter, e.g. --param block_size=2000 --param n_mels=80 (repeatable)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes decoding in parallel (default: one per CPU core, at most 8; the shards are the same for any)",
    )
    p.add_argument("--max-files", type=int, default=None, help="prepare at most this many files")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of --max-files (default: 0)")
    p.add_argument(
        "--split",
        default="0.8,0.1,0.1",
        help="train,valid,test fractions by file (default: 0.8,0.1,0.1); one or two recordings of 100 s "
        "or more are cut into parts, split the same way",
    )
    p.add_argument(
        "--file-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="skip a file still being read after this long as 'timed out' (default: 1800; 0: no limit)",
    )
    p.add_argument("--overwrite", action="store_true", help="start OUT again if it holds other parameters")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--plot", action="store_true", help="also write a PNG of one prepared piece to OUT/plots")
    threads.add_argument(
        p,
        help=f"CPUs to use: the default of --workers (default: the CPUs this process may use; {threads.ENV_VAR}=N sets a default)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cadenza.data.prepare import prepare_corpus
    from cadenza.errors import ParameterError

    try:
        split = tuple(float(x) for x in args.split.split(","))
    except ValueError:
        raise ParameterError(
            f"--split expects three fractions like 0.8,0.1,0.1, got {args.split!r}"
        ) from None
    summary = prepare_corpus(
        args.source,
        args.out,
        representation=args.representation,
        sample_rate=args.sample_rate,
        rep_params=_params(args.param),
        workers=args.workers if args.workers is not None else default_workers(getattr(args, "threads", None)),
        max_files=args.max_files,
        seed=args.seed,
        split=split,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        **({"file_timeout": args.file_timeout} if args.file_timeout is not None else {}),
    )
    print(summary)
    if args.plot:
        from cadenza.plots import plot_store_item

        print(f"plot: {plot_store_item(args.out)}")
    return 0
