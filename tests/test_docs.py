"""Every ``cadenza`` command the documentation shows still parses, with keys that exist.

A reader copies the commands of the README, docs/*.md and the packaged configs' headers; an
option renamed since (``--valid-fraction`` had become ``--split``) fails them at the first
try. Each command is parsed by the real CLI parser (nothing runs), and the config keys it
changes (``cadenza train CONFIG KEY=VALUE``, ``--set``) are applied to the packaged configs it
names, which checks every section, key and value.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from cadenza.cli import build_parser
from cadenza.demo import DEMO_MODELS
from cadenza.errors import ParameterError
from cadenza.models import MODELS
from cadenza.study.run import _model_config, _split_overrides
from cadenza.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGS = sorted((ROOT / "cadenza" / "configs").glob("*.yaml"))


def _commands(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, command, whole)`` for each ``cadenza ...`` command in a file: whole where it
    stands on its own line (a code block, a config's header), else quoted inline in a sentence,
    where it may leave out arguments the sentence gives (``cadenza prepare --workers 2``)."""
    found = []
    in_block = path.suffix == ".yaml"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if path.suffix == ".md" and stripped.startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            text = stripped.lstrip("#").strip().removeprefix("$ ")
            if text.startswith("cadenza "):
                found.append((number, text, True))
        if path.suffix == ".md":
            found += [(number, m.group(1), False) for m in re.finditer(r"`(cadenza [^`]+)`", line)]
    return found


def _argv(command: str) -> list[str] | None:
    """The arguments after ``cadenza``, a trailing comment left out and ``[--optional ones]``
    unbracketed; None for a command with a placeholder for arguments (``...``)."""
    command = re.split(r"\s+#\s", command)[0]
    if "..." in command or "…" in command:
        return None
    command = re.sub(r"\[(-[^\]]*)\]", r"\1", command)
    return shlex.split(command)[1:]


def _parse(argv: list[str]) -> tuple[object | None, str]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv), ""
    except SystemExit as exc:
        if not exc.code:  # --help, --version
            return None, ""
        lines = err.getvalue().strip().splitlines()
        return None, lines[-1] if lines else f"exit {exc.code}"


def _config_errors(args: object, whole: bool) -> list[str]:
    """The packaged configs a parsed command names, with the keys it changes applied as the command
    would apply them (a study's and a demo's ``--set`` through the study's own split and check;
    inline, a config of a family the sentence imagines is left alone: docs/extending.md's
    ``gru-tiny``)."""
    command = getattr(args, "command", None)
    changes = [*(getattr(args, "overrides", None) or []), *(getattr(args, "set_overrides", None) or [])]
    try:
        if command == "train":
            config = str(args.config)  # type: ignore[attr-defined]
            packaged = "/" not in config and not config.endswith((".yaml", ".yml"))
            if packaged and (whole or config.rsplit("-", 1)[0] in MODELS):
                load_config(config, changes)
        elif command in ("study", "demo") and any(changes):
            default = DEMO_MODELS if command == "demo" else MODELS
            models = [m for m in (getattr(args, "models", None) or "").split(",") if m] or list(default)
            preset = getattr(args, "preset", None) or "tiny"
            errors = []
            for model, overrides in _split_overrides([c for c in changes if c], models).items():
                try:
                    _model_config(model, preset, overrides)
                except ParameterError as exc:
                    errors.append(f"{model}: {exc}")
            return errors
    except ParameterError as exc:
        return [str(exc)]
    return []


def _problems(path: Path) -> list[str]:
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    problems = []
    for number, command, whole in _commands(path):
        argv = _argv(command)
        if argv is None:
            continue
        args, error = _parse(argv)
        if error and (whole or "arguments are required" not in error):
            problems.append(f"{name}:{number}: {command}\n    {error}")
        if args is not None:
            problems += [f"{name}:{number}: {command}\n    {e}" for e in _config_errors(args, whole)]
    return problems


def test_the_docs_show_commands_to_check() -> None:
    """The extraction finds the commands it is meant to (else the test below checks nothing)."""
    readme = [c for _, c, _ in _commands(ROOT / "README.md")]
    assert any(c.startswith("cadenza study music21:chorales") for c in readme)
    assert sum(1 for path in DOCS + CONFIGS for _ in _commands(path)) > 100
    header = [c for _, c, whole in _commands(ROOT / "cadenza/configs/fft_base-tiny.yaml") if whole]
    assert any(c.startswith("cadenza train fft_base-tiny") for c in header)


@pytest.mark.parametrize("path", DOCS + CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_parses(path: Path) -> None:
    problems = _problems(path)
    assert not problems, "\n".join(problems)


def test_a_stale_option_or_key_is_caught(tmp_path: Path) -> None:
    """The check fails on what it exists to catch: an option that is gone, a --set key, a
    packaged config and a train override that do not exist; a prose fragment passes."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```\n"
        "cadenza prepare music21:bach data/x --representation fft --valid-fraction 0.2\n"
        "cadenza study music21:chorales --models mel_rnn --set mel_rnn:model.hiden_size=8\n"
        "cadenza study music21:chorales --set train.seeed=1\n"
        "cadenza train no_such_model-tiny --data data/x\n"
        "cadenza train fft_base-tiny --data data/x optim.lr=fast\n"
        "cadenza train fft_base-tiny --data data/x optim.lr=3e-4   # fine\n"
        "```\n"
        "Run `cadenza prepare --workers 2` in a sentence, and `cadenza generate run --n 2`.\n",
        encoding="utf-8",
    )
    problems = _problems(doc)
    text = "\n".join(problems)
    assert "--valid-fraction" in text
    assert "hiden_size" in text
    assert "seeed" in text
    assert "no_such_model-tiny" in text
    assert "fast" in text
    assert len(problems) == 4 + len(MODELS), text  # train.seeed: once for each model
