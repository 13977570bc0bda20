"""The invoke face: the collection ``ns``, one task per command of ``paradev.commands``.

``invoke NAME`` and a user's own tasks.py (``ns.add_collection(paradev.tasks.ns)``)
run the same commands, with the same flags and the same error boundary, as
``paradev NAME``. invoke positionals are always required and take one value,
so an optional positional (``[BATCH]``) is the flag ``--batch`` here and a
repeated one (``PATH...``) the repeatable ``--path``.
"""

from __future__ import annotations

import inspect
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.parser.argument import Argument
from invoke.tasks import Task

from paradev.commands import COMMANDS, Arg, Command, call


class ParadevTask(Task[Any]):
    """An invoke Task whose flag help survives parsing.

    invoke's ``get_arguments`` pops each help string as it builds the flags,
    so a second parse in one process (tests, ``--help`` after a run) would
    show flags without help.
    """

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        kept = dict(self.help)
        try:
            return super().get_arguments(ignore_unknown_help)
        finally:
            self.help = kept


def _parameter(arg: Arg) -> inspect.Parameter:
    """The body parameter invoke reads the flag from: its default sets the kind."""
    if arg.position == "one":
        default: Any = inspect.Parameter.empty
    elif arg.type is None:
        default = False
    else:
        default = None  # a string option, or a list for a repeated one (see ``iterable``)
    return inspect.Parameter(arg.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)


def _help(arg: Arg) -> str:
    metavar = f"{arg.type.metavar}: " if arg.type else ""
    if arg.position == "many":
        return f"{metavar}{arg.help} (repeat {arg.flag}; 'paradev' takes {arg.label}...)"
    if arg.position == "maybe":
        return f"{metavar}{arg.help} ('paradev' takes [{arg.label}])"
    return metavar + arg.help


def _docstring(command: Command) -> str:
    exits = "; ".join(f"{code} {text}" for code, text in sorted(command.exit_codes().items()))
    return f"{command.summary}\n\nExit codes: {exits}.\nExample: paradev {command.example}"


def make_task(command: Command) -> Task[Any]:
    """The invoke task of ``command``; it runs inside the commands' error boundary."""

    def body(c: Context, **values: Any) -> None:
        code = call(command, values)
        if code:
            raise Exit(code=code)

    context = inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    body.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [context, *(_parameter(arg) for arg in command.args)]
    )
    body.__doc__ = _docstring(command)
    body.__name__ = command.name.replace("-", "_")
    return ParadevTask(
        body,
        name=command.name,
        positional=[a.name for a in command.args if a.position == "one"],
        iterable=[a.name for a in command.args if a.position == "many"],
        help={arg.name: _help(arg) for arg in command.args},
        auto_shortflags=False,
    )


ns = Collection()
for _command in COMMANDS:
    ns.add_task(make_task(_command))
