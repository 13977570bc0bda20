"""The full argparse parser of one command: for help, errors and every spelling of a flag.

``paradev.cli`` parses a plain command line itself and imports this module
only when argparse has to decide (its import and parser build cost more than
a fast command's own work).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from paradev.commands import Command


class UsageError(Exception):
    """A command line argparse cannot parse; shown as one line, exit 2."""


class HelpShown(Exception):  # noqa: N818 - control flow, not a failure
    """argparse printed help (it would otherwise exit the process)."""


class Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter without its ``shutil`` import (and bz2, lzma): parsers build
    one per argument, so every command would pay for it."""

    def __init__(self, prog: str) -> None:
        try:
            columns = int(os.environ.get("COLUMNS") or os.get_terminal_size().columns)
        except (ValueError, OSError):
            columns = 80
        super().__init__(prog, width=max(columns, 40) - 2)


class Parser(argparse.ArgumentParser):
    """argparse that reports instead of exiting, so the one boundary decides the exit code.

    A word such as ``-1``, ``-.5`` or ``-inf`` is a (bad) value, never an option:
    the command then says what is wrong with it.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._negative_number_matcher = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr, end="")
        raise HelpShown


def build_parser(command: Command) -> Parser:
    """The parser of one command: real usage, typed arguments, exit codes and an example."""
    exits = "\n".join(f"  {code:<4}{text}" for code, text in sorted(command.exit_codes().items()))
    epilog = f"exit codes:\n{exits}\n\nexample:\n  paradev {command.example}"
    description = command.summary + (f"\n\n{command.details}" if command.details else "")
    parser = Parser(
        prog=f"paradev {command.name}",
        usage=f"paradev {command.usage()}",
        description=description,
        epilog=epilog,
        formatter_class=Formatter,
        allow_abbrev=False,
    )
    for arg in command.args:
        kind = arg.type.metavar if arg.type else ""
        if arg.position:
            nargs = {"one": None, "maybe": "?", "many": "*"}[arg.position]
            shown = f"{kind}: {arg.help}" if kind else arg.help
            parser.add_argument(arg.name, metavar=arg.label, nargs=nargs, help=shown)
            if arg.invoke_flag:  # invoke's spelling works here too: --batch NAME, --path A
                parser.add_argument(
                    arg.flag,
                    dest=_AS_FLAG + arg.name,
                    metavar=kind,
                    action="append" if arg.position == "many" else "store",
                    help=f"the same as {arg.label}"
                    + (" (repeatable)" if arg.position == "many" else ""),
                )
        elif arg.type is None:
            parser.add_argument(arg.flag, dest=arg.name, action="store_true", help=arg.help)
        else:
            parser.add_argument(arg.flag, dest=arg.name, metavar=kind, help=arg.help)
    return parser


_AS_FLAG = "flag:"  # dest prefix of a positional given as a flag (see build_parser)


def merge_flag_forms(command: Command, values: dict[str, Any]) -> dict[str, Any]:
    """``check A --path B`` -> path [A, B]; ``run-batch X --batch Y`` is refused (two batches)."""
    for arg in command.args:
        given = values.pop(_AS_FLAG + arg.name, None)
        if given is None:
            continue
        if arg.position == "many":
            values[arg.name] = [*(values.get(arg.name) or []), *given]
        elif values.get(arg.name) is not None:
            raise UsageError(f"give {arg.label} or {arg.flag}, not both")
        else:
            values[arg.name] = given
    return values


def parse(command: Command, words: Sequence[str]) -> dict[str, Any]:
    """The values of ``words`` by argument name; UsageError or HelpShown when argparse says so."""
    parser = build_parser(command)
    # Options may come between positionals; after "--" everything is positional.
    parse_words = parser.parse_args if "--" in words else parser.parse_intermixed_args
    return merge_flag_forms(command, vars(parse_words(words)))
