"""Shell completion scripts, generated from the command table (so they never go stale).

The scripts are static: completing a word never starts Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from paradev.errors import PreconditionError

if TYPE_CHECKING:
    from paradev.commands import Arg, Command

FILE_TYPES = ("PATH", "DIR")  # arguments completed with file names


def script(shell: str, commands: Sequence[Command]) -> str:
    if shell == "bash":
        return bash(commands)
    if shell == "zsh":
        return zsh(commands)
    raise PreconditionError(f"no completion for {shell!r}: use bash or zsh")


def _takes_files(args: Sequence[Arg]) -> bool:
    return any(a.position and a.type and a.type.metavar in FILE_TYPES for a in args)


def _flags(args: Sequence[Arg]) -> list[Arg]:
    """The arguments given as flags, including ``--batch``/``--path`` for [BATCH]/PATH...."""
    return [a for a in args if not a.position or a.invoke_flag]


def _zsh_flag(arg: Arg) -> str:
    """``--agent[help]:INT:`` (a value follows), ``*--path[help]:PATH:_files`` (repeatable)."""
    text = arg.help.replace("[", "(").replace("]", ")")
    spec = f"{'*' if arg.position == 'many' else ''}{arg.flag}[{text}]"
    if arg.type is None:
        return spec
    action = "_files" if arg.type.metavar in FILE_TYPES else ""
    return f"{spec}:{arg.type.metavar}:{action}"


def _choices(args: Sequence[Arg]) -> list[str]:
    return [c for a in args if a.position for c in a.choices]


def bash(commands: Sequence[Command]) -> str:
    """``complete -F _paradev paradev``: command names, then each command's flags."""
    cases = []
    for command in commands:
        words = " ".join(["--help", *(a.flag for a in _flags(command.args))])
        words = " ".join([*_choices(command.args), words])
        files = ' COMPREPLY+=($(compgen -f -- "$cur"))' if _takes_files(command.args) else ""
        cases.append(
            f'        {command.name}) COMPREPLY=($(compgen -W "{words}" -- "$cur"));{files} ;;'
        )
    names = " ".join(c.name for c in commands)
    return "\n".join(
        [
            "# paradev completion for bash: source this file (paradev completion bash)",
            "_paradev() {",
            '    local cur="${COMP_WORDS[COMP_CWORD]}"',
            '    if [ "$COMP_CWORD" -le 1 ]; then',
            f'        COMPREPLY=($(compgen -W "{names} --help --version" -- "$cur"))',
            "        return 0",
            "    fi",
            '    case "${COMP_WORDS[1]}" in',
            *cases,
            "        *) COMPREPLY=() ;;",
            "    esac",
            "}",
            "complete -F _paradev paradev",
            "",
        ]
    )


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def zsh(commands: Sequence[Command]) -> str:
    """A ``#compdef paradev`` function: described commands, then each command's flags."""
    described = [
        _zsh_quote(f"{c.name}:{c.summary.rstrip('.')}".replace("[", "(")) for c in commands
    ]
    cases = []
    for command in commands:
        specs = [_zsh_quote(_zsh_flag(a)) for a in _flags(command.args)]
        if _takes_files(command.args):
            specs.append("'*:file:_files'")
        elif _choices(command.args):
            specs.append(
                _zsh_quote(f"1:{command.args[0].name}:({' '.join(_choices(command.args))})")
            )
        cases.append(f"    {command.name}) _arguments {' '.join(specs) or ''} ;;")
    return "\n".join(
        [
            "#compdef paradev",
            "# paradev completion for zsh: save as _paradev in a folder on $fpath",
            "_paradev() {",
            "  local -a commands",
            f"  commands=({' '.join(described)})",
            "  if (( CURRENT == 2 )); then",
            "    _describe 'command' commands",
            "    return",
            "  fi",
            "  shift words; (( CURRENT-- ))",
            "  case $words[1] in",
            *cases,
            "  esac",
            "}",
            'if [ "$funcstack[1]" = "_paradev" ]; then _paradev "$@"',
            "else compdef _paradev paradev; fi",
            "",
        ]
    )
