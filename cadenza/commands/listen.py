"""`cadenza listen RESULTS [--reference REF] [--mode ab] [--port 8000] [--results]`: a blind listening test.

Serves the test on 127.0.0.1 (``--host`` to open it wider) until Ctrl-C; running the same
command again continues it. ``--results`` prints the table and writes CSV, JSON and Markdown.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "listen",
        help="a blind listening test of the models' clips in the browser, and its results",
        description=(
            "Prepare (once) and serve a blind listening test of RESULTS: an evaluation output or a folder "
            "of per-model subfolders of WAV/MIDI. Listeners rate clips on ITU-T P.800's 1-5 scale (or, "
            "with --mode ab, pick the more musical of two); hidden among them are real clips from "
            "--reference and low-passed anchors (3.5 kHz, or 7/16 of the band of a test under 16 kHz: 1.75 "
            "kHz at 8 kHz). Clips are served by opaque tokens, cut to one "
            "length and matched in loudness; each listener gets a balanced block; ratings go to SQLite "
            "beside the samples. --results prints the table (95% intervals over listeners and clips) and "
            "writes results.csv, results.json and results.md."
        ),
    )
    p.add_argument(
        "source", metavar="RESULTS", help="an evaluation output or a folder of per-model subfolders"
    )
    p.add_argument(
        "--reference",
        metavar="REF",
        help="held-out real music: a feature store (its test split) or a folder "
        "(default: RESULTS' reference folder, when it has one)",
    )
    p.add_argument("--mode", choices=("acr", "ab"), help="acr: rate 1-5 (default); ab: pairwise preference")
    p.add_argument(
        "--test", metavar="NAME", help="the test's name, for several tests of one folder (default: the mode)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="the address to serve on (default: 127.0.0.1, this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="the port (default: 8000; 0: any free port)")
    p.add_argument(
        "--seconds",
        type=float,
        help="the clips' length, from 1 to 12 (default: 10; a model's clip under 1 s is left out)",
    )
    p.add_argument(
        "--n-clips", type=int, help="at most this many clips of each model in the test (default: 20)"
    )
    p.add_argument(
        "--n-per-model",
        type=int,
        help="clips of each model per listener (default: 5); A/B: trials of each pair per listener (default: 1)",
    )
    p.add_argument("--seed", type=int, help="the seed of the clip choice and the design (default: 0)")
    p.add_argument(
        "--results", action="store_true", help="print the results and write CSV, JSON and Markdown"
    )
    p.add_argument("--include-partial", action="store_true", help="--results: count unfinished blocks too")
    p.add_argument("--n-boot", type=int, default=2000, help="--results: bootstrap draws (default: 2000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.results:
        return _results(args)
    from cadenza.listening.experiment import open_experiment
    from cadenza.listening.server import make_server

    exp = open_experiment(
        args.source,
        name=args.test,
        reference=args.reference,
        mode=args.mode,
        seconds=args.seconds,
        n_clips=args.n_clips,
        n_per_condition=args.n_per_model,
        seed=args.seed,
    )
    _describe(exp)
    server = make_server(exp, host=args.host, port=args.port)
    url = server.url
    if not _is_loopback(args.host):
        print(f"warning: serving on {args.host}: anyone who can reach this machine can take the test")
    print(f"listeners: {url}")
    print(f"results:   {url}results?key={exp.results_key()}  (keep this address to yourself)")
    print("press Ctrl-C to stop; the same command continues the test", flush=True)
    previous = signal.signal(signal.SIGTERM, _stop)  # `kill PID` stops it as Ctrl-C does
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    n = len(exp.store.events())
    print(f"stopped; {n} answers are stored in {exp.store.path}")
    exp.close()
    return 0


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _describe(exp) -> None:  # noqa: ANN001 (an Experiment; imported lazily)
    from cadenza.listening.design import ANCHOR, REFERENCE

    config = exp.config
    hidden = " + hidden reference + anchor" if exp.has_reference else " (no hidden reference)"
    n_trials = exp.design.n_trials()
    per_trial = exp.seconds * (1 if exp.mode == "acr" else 2) + 6
    print(f"listening test: {exp.folder} ({exp.mode.upper()}, {len(exp.models)} models{hidden})")
    for c, tokens in exp.design.conditions.items():
        kind = "hidden reference" if c == REFERENCE else "anchor" if c == ANCHOR else "model"
        print(f"  {c:<24} {len(tokens):>3} clips  ({kind})")
    print(
        f"  clips: {exp.seconds:g} s at {config['sample_rate']} Hz, {config['loudness_lufs']:g} LUFS; "
        f"{n_trials} trials per listener (about {n_trials * per_trial / 60:.0f} min)"
    )
    print(f"  screening rule: {config['screening']['rule']}")
    print(f"  answers: {exp.store.path} ({len(exp.store.listeners())} listeners so far)")
    for path, reason in config.get("skipped", [])[:5]:
        print(f"  skipped {path}: {reason}")


def _results(args: argparse.Namespace) -> int:
    from cadenza.errors import ParameterError
    from cadenza.listening.clips import TEST_FOLDER
    from cadenza.listening.experiment import Experiment, experiment_folders
    from cadenza.listening.report import format_table, write_results
    from cadenza.listening.results import analyse

    if args.test or args.mode:
        folders = [Path(args.source) / TEST_FOLDER / (args.test or args.mode)]
        if not (folders[0] / "test.json").is_file():
            raise ParameterError(
                f"no listening test in {folders[0]}: run `cadenza listen {args.source}` first"
            )
    else:
        folders = experiment_folders(args.source)
        if not folders:
            raise ParameterError(
                f"no listening test in {args.source}: run `cadenza listen {args.source}` first"
            )
    for folder in folders:
        exp = Experiment(folder)
        results = analyse(exp, n_boot=args.n_boot, include_partial=args.include_partial)
        print(format_table(results))
        for path in write_results(results, folder).values():
            print(path)
        exp.close()
    return 0
