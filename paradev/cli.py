"""The ``paradev`` console script: an invoke ``Program`` over ``paradev.tasks.ns``.

invoke positionals are always required and take one value, so the commands
whose contract has ``[BATCH]`` or ``PATH...`` declare a flag instead
(``--batch``, ``--path``) and this program turns bare words after those
commands into that flag before invoke parses them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from invoke.exceptions import Exit, ParseError
from invoke.parser.argument import Argument
from invoke.program import Program

from paradev import __version__
from paradev.errors import EXIT_USAGE
from paradev.tasks import ns

# invoke's core flags that mean something for paradev; the rest (--pty, --echo,
# --prompt-for-sudo-password, ...) configure invoke's shell runner, which paradev never uses.
CORE_SHOWN = {"help", "version", "list", "list-format", "list-depth", "complete", "debug"}
CORE_SHOWN |= {"print-completion-script"}


def _core_flag(column: str) -> str:
    """The long name in a help column such as ``-h [STRING], --help[=STRING]``."""
    match = re.search(r"--([\w-]+)", column)
    return match.group(1) if match else ""


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a killed writer

# command -> flag that collects its bare (positional) words
REST_FLAGS: dict[str, str] = {"check": "path", "run-batch": "batch"}


def rewrite_rest(argv: list[str], rest_flags: dict[str, str] = REST_FLAGS) -> list[str]:
    """``paradev check a b --agent 2`` -> ``paradev check --path a --path b --agent 2``."""
    if len(argv) < 2 or argv[1] not in rest_flags:
        return argv
    task = ns[argv[1]]
    takes_value = {
        f"--{name.replace('_', '-')}"
        for name, default in _defaults(task).items()
        if not isinstance(default, bool)
    }
    out = argv[:2]
    words = iter(argv[2:])
    for word in words:
        if word == "--":  # everything after -- is bare words
            out += [item for rest in words for item in (f"--{rest_flags[argv[1]]}", rest)]
        elif word.startswith("-"):
            out.append(word)
            if word in takes_value and "=" not in word:
                out.append(next(words, ""))
        else:
            out += [f"--{rest_flags[argv[1]]}", word]
    return out


def help_first(argv: list[str]) -> list[str]:
    """``paradev assign --help`` -> ``paradev --help assign``.

    invoke would take ``--help`` as the value of the first positional argument
    and then complain about the missing others.
    """
    if len(argv) > 2 and argv[1] in ns.task_names and any(a in ("--help", "-h") for a in argv[2:]):
        return [argv[0], "--help", argv[1]]
    return argv


def _defaults(task: object) -> dict[str, object]:
    import inspect

    body = getattr(task, "body", None)
    if body is None:
        return {}
    params = list(inspect.signature(body).parameters.values())[1:]
    return {p.name: p.default for p in params}


class ParadevProgram(Program):
    """invoke's Program with paradev's exit codes: a command line it cannot parse exits 2."""

    def run(self, argv: str | list[str] | None = None, exit: bool = True) -> None:
        import shlex

        if argv is None:
            argv = list(sys.argv)
        elif isinstance(argv, str):
            argv = shlex.split(argv)
        super().run(rewrite_rest(help_first(list(argv))), exit=exit)

    def core_args(self) -> list[Argument]:
        """invoke's core flags, but bytecode caching stays as Python's own setting says.

        invoke turns bytecode writing off unless ``--write-pyc`` is given; the
        modules each command imports lazily would then be recompiled on every
        run (tens of ms for ``paradev status``).
        """
        args: list[Argument] = super().core_args()
        for arg in args:
            if arg.name == "write-pyc":
                arg.default = not sys.flags.dont_write_bytecode
        return args

    def print_help(self) -> None:
        """invoke's help, without its flags for running shell commands (they do nothing here)."""
        print(f"Usage: {self.binary} [--core-opts] <command> [--command-opts] ...")
        print("\nCore options:\n")
        self.print_columns(
            [row for row in self.initial_context.help_tuples() if _core_flag(row[0]) in CORE_SHOWN]
        )
        self.list_tasks()

    def parse_core(self, argv: list[str] | None) -> None:
        with _usage_errors():
            super().parse_core(argv)

    def parse_tasks(self) -> None:
        with _usage_errors():
            super().parse_tasks()


@contextmanager
def _usage_errors() -> Iterator[None]:
    """invoke reports a bad command line with exit 1; paradev's contract says 2 (bad input)."""
    try:
        yield
    except ParseError as err:
        raise Exit(f"paradev: {err} (see 'paradev --help')", code=EXIT_USAGE) from None


program = ParadevProgram(namespace=ns, version=__version__, name="paradev", binary="paradev")


def main(argv: Sequence[str] | None = None) -> None:
    _print_raw_bytes_of_undecodable_paths()
    try:
        program.run(list(argv) if argv is not None else None)
    except BrokenPipeError:
        # The reader went away (``paradev status | head``): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_BROKEN_PIPE)


def _print_raw_bytes_of_undecodable_paths() -> None:
    """A path git gave as non-UTF-8 bytes is printed as those bytes, as ``ls`` would.

    paradev reads git output with ``surrogateescape``; a strict stdout would
    turn such a path into a traceback.
    """
    import sys

    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="surrogateescape")
