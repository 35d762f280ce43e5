"""The `cadenza` command: one entry point, one thin module per verb in ``cadenza/commands``.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func(args) -> int``; modules import heavy libraries inside ``func`` so that
``cadenza --help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
import warnings

from cadenza import __version__
from cadenza._fs import disk_full_text, is_disk_full
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
    _printable_names()
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _format_warning
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
    except OSError as exc:
        if _refused(exc):  # a folder of another user, a read-only disk: said in one line too
            print(f"cadenza {args.command}: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 1
        if not is_disk_full(exc):
            raise
        again = _AGAIN.get(args.command, "run it again")
        print(
            f"cadenza {args.command}: error: {disk_full_text(exc)}; free some space and {again}",
            file=sys.stderr,
        )
        return 1
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        print(
            f"cadenza {args.command}: error: out of memory ({detail}); "
            f"{_LESS.get(args.command, 'ask for less')}",
            file=sys.stderr,
        )
        return 1


_python_format_warning = warnings.formatwarning


def _format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """cadenza's own warnings (a seed file kept in part, a loud file scaled down, a score rendered
    without FluidSynth) as one line for the user: Python's format adds the file and source line
    of the ``warnings.warn`` call (``prepare.py:208: PartialAudioWarning: ...`` and
    ``y, _ = read_audio(item.path, sr=sr)``). Other libraries' warnings keep Python's format."""
    if category.__module__.split(".")[0] == "cadenza":
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def _printable_names() -> None:
    """A file name that is not valid UTF-8 (Latin-1 bytes from an old archive) reaches Python
    with surrogates; printed on a strict UTF-8 terminal it would stop the command. It is shown
    with its odd bytes escaped instead (``caf\\udce9.wav``)."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


#: What running a verb again does after it stopped for a full disk (its last writes are atomic).
_AGAIN = {
    "train": "run the same command again: training goes on from its last checkpoint",
    "study": "run the same command again: the study goes on where it stopped",
    "demo": "run the same command again: the demo goes on where it stopped",
    "prepare": "run the same command again: it goes on with the files not yet prepared",
}

#: What to ask for less of, per verb, when what was asked for does not fit in memory.
_LESS = {
    "train": "choose a smaller model (model.*) or data.batch_size",
    "generate": "ask for fewer --seconds or a smaller --n",
    "evaluate": "ask for fewer --seconds or a smaller --n-clips",
}


def _refused(exc: OSError) -> bool:
    """A file the system would not let this user open or write (permissions, a read-only file
    system), where the error names it."""
    return exc.filename is not None and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that failed (numpy's MemoryError, torch's CPU or GPU one).

    >>> _out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"))
    True
    >>> _out_of_memory(RuntimeError("shape mismatch"))
    False
    """
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return (
        "can't allocate memory" in text
        or "CUDA out of memory" in text
        or type(exc).__name__ == "OutOfMemoryError"
    )


if __name__ == "__main__":
    raise SystemExit(main())
