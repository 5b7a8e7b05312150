"""What every ``pgps`` command shares: its argument parser (one error format), integer argument types, the plans-file
reading and writing of the plans commands, and the command groups of ``pgps --help``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from pgps.io import atomic_write_text


class Parser(argparse.ArgumentParser):
    """argparse's parser with the one error format of the ``pgps`` commands: ``pgps COMMAND: error: ...``."""

    def error(self, message: str) -> None:  # argparse already exits 2
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def integer(minimum: int):
    """An argparse type: an integer of at least ``minimum`` (argparse names the argument in its error)."""
    kind = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f">= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a {kind} integer, got {text!r}")
        return value

    parse.__name__ = f"{kind} integer"
    return parse


POSITIVE, NON_NEGATIVE = integer(1), integer(0)


def read_plans(path: str) -> dict:
    """A plans JSON file, with errors that name it."""
    with open(path) as f:
        try:
            plans = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise ValueError(f"{path} is not an nnU-Net v2 plans file: it has no 'configurations'")
    return plans


def refuse_silent_changes(path: str, before: dict, after: dict, overwrite: bool) -> None:
    """Raise unless writing ``after`` to ``path`` (holding ``before``) keeps every configuration it held,
    or ``overwrite`` allows replacing and dropping them: a run trained on a configuration cannot resume once
    its architecture changed."""
    old, new = before.get("configurations", {}), after.get("configurations", {})
    dropped = [name for name in old if name not in new]
    changed = [name for name in old if name in new and new[name] != old[name]]
    if (dropped or changed) and not overwrite:
        what = "; ".join(
            part for part in (f"would replace configuration(s) {', '.join(changed)}" if changed else "",
                              f"would drop configuration(s) {', '.join(dropped)}" if dropped else "") if part
        )  # fmt: skip
        raise ValueError(
            f"{path}: {what}, which runs may have been trained on (their --c would fail); pass --overwrite to do it"
        )


def write_plans(path: str, before: dict, after: dict, overwrite: bool) -> bool:
    """Write ``after`` to ``path`` (holding ``before``) atomically, refusing silent changes (see
    :func:`refuse_silent_changes`); an identical file is left alone. Returns whether it was unchanged."""
    refuse_silent_changes(path, before, after, overwrite)
    unchanged = after == before
    if not unchanged:
        atomic_write_text(path, json.dumps(after, indent=4))
    return unchanged


def add_overwrite_configuration(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing configuration NAME that differs (without it, only an identical one is kept)",
    )  # fmt: skip


def output_plans_name(args: argparse.Namespace, out: str) -> str | None:
    """``--plans-name``, or with ``--out`` the output file's name without ``.json`` (nnU-Net names result folders
    by it); None keeps the plans' own."""
    return args.plans_name or (Path(out).name.removesuffix(".json") if args.out else None)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """The options every command has: how much it logs, and its progress bars."""
    output = parser.add_argument_group("output options (every command)")
    level = output.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_true", help="log details too (DEBUG)")
    level.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors (no progress lines)")
    output.add_argument(
        "--progress", action=argparse.BooleanOptionalAction,
        help="progress bars of long steps on stderr (default: on a terminal; otherwise a log line every tenth)",
    )  # fmt: skip


def setup_logging(command: str, verbose: bool = False, quiet: bool = False) -> Callable[[], None]:
    """Log the ``pgps`` loggers to stderr as ``pgps COMMAND: message`` (INFO; DEBUG with ``verbose``, WARNING
    with ``quiet``), Python's warnings as ``pgps COMMAND: warning: message`` (each once per place, Python's
    default). Returns the function that undoes it (``main`` runs many times in one process in the tests)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"pgps {command}: %(message)s"))
    logger = logging.getLogger("pgps")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        name = "" if category is UserWarning else f"{category.__name__}: "
        logger.warning("warning: %s%s", name, message)

    warnings.showwarning = show

    def undo() -> None:
        warnings.showwarning = shown
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True

    return undo


class CommandGroups:
    """``add_subparsers`` that remembers each command's group and help, for the grouped listing of ``pgps --help``
    (the flat listing argparse would print is left out)."""

    def __init__(self, sub: argparse._SubParsersAction) -> None:
        self.sub = sub
        self.groups: dict[str, list[tuple[str, str]]] = {}
        self._title = ""

    def group(self, title: str) -> CommandGroups:
        self._title = title
        self.groups.setdefault(title, [])
        return self

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        help_text = kwargs.pop("help", "")
        self.groups[self._title].append((name, help_text))
        kwargs.setdefault("description", help_text)
        parser = self.sub.add_parser(name, **kwargs)
        add_output_options(parser)
        return parser

    def listing(self) -> str:
        width = max(len(name) for commands in self.groups.values() for name, _ in commands) + 2
        lines = []
        for title, commands in self.groups.items():
            lines.append(f"{title}:")
            lines += [f"  {name.ljust(width)}{text}" for name, text in commands]
            lines.append("")
        return "\n".join(lines) + "Run 'pgps COMMAND --help' for a command's options."
