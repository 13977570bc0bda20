"""The ``paradev`` console script: argparse over the command table; never imports invoke.

Only the parser of the command being run is built, and the command imports
only the core modules it needs, so ``paradev check`` starts about as fast as
Python itself.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from paradev import __version__
from paradev.commands import BY_NAME, COMMANDS, GROUPS, Command, call
from paradev.errors import EXIT_USAGE

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a killed writer
ABOUT = "Run several coding agents in parallel on one git repository and land their work."


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


def top_help() -> str:
    """``paradev --help``: the commands by group, one line each."""
    width = max(len(c.name) for c in COMMANDS) + 2
    lines = [
        "usage: paradev COMMAND [ARGS...]",
        "",
        ABOUT,
        "",
    ]
    for group in GROUPS:
        lines.append(f"{group}:")
        lines += [f"  {c.name:<{width}}{c.summary}" for c in COMMANDS if c.group == group]
        lines.append("")
    lines += [
        "options:",
        f"  {'-h, --help':<{width}}show this help; 'paradev COMMAND --help' for one command",
        f"  {'--version':<{width}}print the version",
    ]
    return "\n".join(lines)


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


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'status'?)`` when ``word`` looks like a typo of one choice."""
    from difflib import get_close_matches

    close = get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _usage_error(message: str, help_hint: str) -> int:
    print(f"paradev: {message} (see '{help_hint}')", file=sys.stderr)
    return EXIT_USAGE


def _unknown_flags(message: str, command: Command) -> str:
    """argparse's "unrecognized arguments: --jsn" with a suggestion for the first one."""
    prefix = "unrecognized arguments: "
    if not message.startswith(prefix):
        return message
    word = message[len(prefix) :].split(maxsplit=1)[0].split("=", maxsplit=1)[0]
    if not word.startswith("-"):
        return f"unexpected argument {word!r} for '{command.name}'"
    flags = [a.flag for a in command.args if not a.position]
    return f"unknown option {word!r} for '{command.name}'" + did_you_mean(word, flags)


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` (without the program name), run the command, return the exit code."""
    if not argv or argv[0] in ("-h", "--help"):
        print(top_help())
        return 0
    if argv[0] == "--version":
        print(f"paradev {__version__}")
        return 0
    name = argv[0]
    command = BY_NAME.get(name)
    if command is None:
        what = "option" if name.startswith("-") else "command"
        hint = did_you_mean(name, [c.name for c in COMMANDS])
        return _usage_error(f"unknown {what} {name!r}{hint}", "paradev --help")
    parser = build_parser(command)
    try:
        # Options may come between positionals; after "--" everything is positional.
        parse = parser.parse_args if "--" in argv else parser.parse_intermixed_args
        values = merge_flag_forms(command, vars(parse(argv[1:])))
    except HelpShown:
        return 0
    except UsageError as err:
        return _usage_error(_unknown_flags(str(err), command), f"paradev {name} --help")
    return call(command, values)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: ``paradev ARGS``; returns the exit code."""
    _print_raw_bytes_of_undecodable_paths()
    try:
        code = run(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``paradev status | head``): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


def _print_raw_bytes_of_undecodable_paths() -> None:
    """A path git gave as non-UTF-8 bytes is printed as those bytes, as ``ls`` would.

    paradev reads git output with ``surrogateescape``; a strict stdout would
    turn such a path into a traceback.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="surrogateescape")
