"""The ``paradev`` console script: the command table on the command line; never imports invoke.

A plain command line (positionals, and flags and options spelled out in full)
is read here directly; anything else (help, errors, ``--name=value``, ``--``,
invoke's flag spelling of positionals) goes to argparse (``paradev.argv``),
built for the one command being run. Each command imports only the core
modules it needs, so ``paradev check`` starts about as fast as Python itself.
"""

from __future__ import annotations

import os
import sys

from paradev.startup import collect_after_start_up

collect_after_start_up()  # before the command table and the command's own imports

from paradev import __version__  # noqa: E402
from paradev.commands import BY_NAME, COMMANDS, GROUPS, Command, call  # noqa: E402
from paradev.errors import EXIT_USAGE  # noqa: E402

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a killed writer
ABOUT = "Run several coding agents in parallel on one git repository and land their work."


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


def plain_values(command: Command, words: Sequence[str]) -> dict[str, Any] | None:
    """The values of a plain command line, as argparse would give them; None when unsure.

    Plain: every word is a positional, or a flag or option of ``command`` spelled
    out in full, an option's value being the next word and not starting with
    "-"; the positionals fill the command's in order, a "many" or "maybe" one
    only in last place. Anything else is for argparse to decide.
    """
    options = {arg.flag: arg for arg in command.args if not arg.position}
    values: dict[str, Any] = {arg.name: None if arg.type else False for arg in options.values()}
    loose: list[str] = []
    rest = iter(words)
    for word in rest:
        if not word.startswith("-") or word == "-":
            loose.append(word)
            continue
        arg = options.get(word)
        if arg is None:
            return None
        if arg.type is None:
            values[arg.name] = True
            continue
        value = next(rest, None)
        if value is None or value.startswith("-"):
            return None
        values[arg.name] = value
    positionals = [arg for arg in command.args if arg.position]
    for index, arg in enumerate(positionals):
        last = index == len(positionals) - 1
        if arg.position == "one" and loose:
            values[arg.name] = loose.pop(0)
        elif arg.position == "maybe" and last and len(loose) <= 1:
            values[arg.name] = loose.pop(0) if loose else None
        elif arg.position == "many" and last:
            values[arg.name], loose = loose, []
        else:
            return None
    return None if loose else values


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
    values = plain_values(command, argv[1:])
    if values is None:
        from paradev.argv import HelpShown, UsageError, parse

        try:
            values = parse(command, argv[1:])
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
