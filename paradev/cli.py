"""The ``paradev`` console script: an invoke ``Program`` over ``paradev.tasks.ns``.

invoke positionals are always required and take one value, so the commands
whose contract has ``[BATCH]`` or ``PATH...`` declare a flag instead
(``--batch``, ``--path``) and this program turns bare words after those
commands into that flag before invoke parses them.
"""

from __future__ import annotations

from collections.abc import Sequence

from invoke.program import Program

from paradev import __version__
from paradev.tasks import ns

# command -> flag that collects its bare (positional) words
REST_FLAGS: dict[str, str] = {}


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


def _defaults(task: object) -> dict[str, object]:
    import inspect

    body = getattr(task, "body", None)
    if body is None:
        return {}
    params = list(inspect.signature(body).parameters.values())[1:]
    return {p.name: p.default for p in params}


class ParadevProgram(Program):
    def run(self, argv: str | list[str] | None = None, exit: bool = True) -> None:
        import shlex
        import sys

        if argv is None:
            argv = list(sys.argv)
        elif isinstance(argv, str):
            argv = shlex.split(argv)
        super().run(rewrite_rest(list(argv)), exit=exit)


program = ParadevProgram(namespace=ns, version=__version__, name="paradev", binary="paradev")


def main(argv: Sequence[str] | None = None) -> None:
    program.run(list(argv) if argv is not None else None)
