"""The command table: every command described once, typed, with exit codes and an example."""

from __future__ import annotations

import pytest

from paradev.commands import (
    BY_NAME,
    COMMANDS,
    GROUPS,
    HOURS,
    INT,
    SECONDS,
    Command,
    call,
    flag,
    one,
)
from paradev.errors import PreconditionError, Stopped

NAMES = sorted(BY_NAME)


def test_names_are_unique_and_every_group_has_commands() -> None:
    assert len(BY_NAME) == len(COMMANDS)
    assert {c.group for c in COMMANDS} == set(GROUPS)


@pytest.mark.parametrize("name", NAMES)
def test_every_command_is_described(name: str) -> None:
    command = BY_NAME[name]
    assert command.summary[0].isupper() and command.summary.endswith("."), name
    assert "\n" not in command.summary and len(command.summary) <= 90, name
    assert command.example.split()[0] == name
    assert all(arg.help for arg in command.args)
    assert {0, 2, 129, 130, 143} <= set(command.exit_codes())
    names = [arg.name for arg in command.args]
    assert len(names) == len(set(names)), name


@pytest.mark.parametrize(
    ("name", "usage"),
    [
        ("assign", "assign AGENT ISSUE TITLE HOURS [--batch NAME]"),
        ("check", "check PATH... [--agent INT] [--json]"),
        ("run-batch", "run-batch [BATCH] [--no-launch] [--dry-run] [--agents LIST] [--json]"),
        ("status", "status [--json]"),
        ("reset", "reset [--yes]"),
        ("completion", "completion SHELL"),
    ],
)
def test_usage_shows_positionals_and_typed_options(name: str, usage: str) -> None:
    assert BY_NAME[name].usage() == usage


def test_types_convert_text_or_say_what_is_wrong() -> None:
    agent = one("agent", INT, "agent number")
    assert agent.convert("3") == 3
    with pytest.raises(PreconditionError, match="AGENT must be a whole number, got 'x'"):
        agent.convert("x")
    assert one("hours", HOURS, "h").convert("1.5") == 1.5
    with pytest.raises(PreconditionError, match="finite number"):
        one("hours", HOURS, "h").convert("nan")
    with pytest.raises(PreconditionError, match=r"at least 0\.1"):
        one("interval", SECONDS, "s").convert("0")
    shell = BY_NAME["completion"].args[0]
    with pytest.raises(PreconditionError, match="SHELL must be one of bash, zsh, not 'fish'"):
        shell.convert("fish")


def _command(run: object, *args: object) -> Command:
    return Command("probe", "maintenance", "Probe.", run, "probe", args=args)  # type: ignore[arg-type]


def test_the_boundary_turns_errors_into_one_line_and_an_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[object] = []

    def fail(agent: int, json: bool) -> None:
        seen.append((agent, json))
        raise Stopped("agent 2 already changes it")

    probe = _command(fail, one("agent", INT, "a"), flag("json", "j"))
    assert call(probe, {"agent": "7", "json": True}) == 1
    assert seen == [(7, True)]
    assert capsys.readouterr().err == "paradev: agent 2 already changes it\n"

    assert call(probe, {"agent": "seven"}) == 2  # conversion errors pass the same boundary
    assert capsys.readouterr().err == "paradev: AGENT must be a whole number, got 'seven'\n"
    assert seen == [(7, True)]  # the command never ran


def test_an_interrupt_exits_130_and_a_bug_keeps_its_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    def buggy() -> None:
        raise ZeroDivisionError

    assert call(_command(interrupted), {}) == 130
    assert capsys.readouterr().err == "paradev: interrupted\n"
    with pytest.raises(ZeroDivisionError):
        call(_command(buggy), {})
