"""The invoke face: built from the command table, so it cannot drift from ``paradev``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from paradev.argv import build_parser
from paradev.commands import BY_NAME
from paradev.tasks import ns
from tests.helpers import Result, agent_tree, commit

ROOT = Path(__file__).resolve().parents[1]
INVOKE = str(Path(sys.executable).parent / "invoke")


def _argparse_face(name: str) -> tuple[dict[str, str], list[str]]:
    """flag -> its kind, and the positionals in order, from the real argparse parser."""
    flags: dict[str, str] = {}
    positionals: list[str] = []
    for action in build_parser(BY_NAME[name])._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            positionals.append(str(action.dest))
        elif isinstance(action, argparse._StoreTrueAction):
            flags[action.option_strings[0]] = "on/off"
        elif isinstance(action, argparse._AppendAction):
            flags[action.option_strings[0]] = "repeatable"
        else:
            flags[action.option_strings[0]] = "value"
    return flags, positionals


def _invoke_face(name: str) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    positionals: list[str] = []
    for argument in ns[name].get_arguments():
        if argument.positional:
            positionals.append(argument.attr_name or argument.names[0])
            continue
        kind = {bool: "on/off", list: "repeatable"}.get(argument.kind, "value")
        flags[f"--{argument.names[0]}"] = kind
    return flags, positionals


def test_both_faces_have_the_same_commands() -> None:
    assert set(ns.task_names) == set(BY_NAME)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_both_faces_take_the_same_arguments(name: str) -> None:
    """The same flags of the same kinds; paradev's [X] and X... are also positionals there."""
    paradev_flags, paradev_positionals = _argparse_face(name)
    invoke_flags, invoke_positionals = _invoke_face(name)
    assert paradev_flags == invoke_flags
    table = BY_NAME[name].args
    assert invoke_positionals == [a.name for a in table if a.position == "one"]
    assert paradev_positionals == [a.name for a in table if a.position]


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_flag_has_help_text_even_after_a_parse(name: str) -> None:
    for _ in range(2):  # invoke pops help while parsing; ours must survive
        arguments = ns[name].get_arguments()
        missing = [arg.name for arg in arguments if not arg.help]
        assert not missing, f"{name}: flags without help: {missing}"
        assert all(len(n) > 1 for arg in arguments for n in arg.names)  # long flags only


def test_invoke_list_shows_every_command_with_its_summary() -> None:
    proc = subprocess.run([INVOKE, "--list"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    for name, command in BY_NAME.items():
        assert f"  {name} " in proc.stdout
        assert command.summary[:40] in " ".join(proc.stdout.split()), name


def test_the_top_level_tasks_file_exposes_the_same_collection() -> None:
    import tasks

    assert tasks.ns is ns


USER_TASKS = """\
from invoke import Collection, task

import paradev.tasks


@task
def hello(c):
    print("hello from the user's own task")


ns = Collection(hello)
ns.add_collection(paradev.tasks.ns, name="pd")
"""


def _invoke(repo: Path, *args: str) -> Result:
    proc = subprocess.run(
        [INVOKE, *args], cwd=repo, capture_output=True, text=True, timeout=120, check=False
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_a_users_own_tasks_file_runs_paradev_commands_through_the_same_boundary(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    (repo / "tasks.py").write_text(USER_TASKS, encoding="utf-8")
    dry = _invoke(repo, "pd.run-batch", "--batch", "first", "--dry-run")
    assert dry.code == 0, dry.err
    assert dry.out == cli("run-batch", "first", "--dry-run").out  # the same command, either face
    commit(agent_tree(set_up, 1), {"src/app.py": "changed\n"})

    assert _invoke(repo, "hello").out == "hello from the user's own task\n"
    found = _invoke(repo, "pd.check", "--path", "README.md", "--path", "src/app.py")
    assert (found.code, found.err) == (1, "paradev: already changed by agent(s) 1\n")
    assert found.out.startswith("src/app.py: agent 1 (parallel-dev/agent-1, branch)")
    mine = _invoke(repo, "pd.check", "--path", "src/app.py", "--agent", "1")
    assert mine.code == 0 and mine.out == "no other agent changes src/app.py\n"

    bad = _invoke(repo, "pd.assign", "1", "5", "t", "nan")
    assert (bad.code, bad.err) == (2, "paradev: hours must be a finite number >= 0, got 'nan'\n")
    unknown = _invoke(repo, "pd.start", "9")
    assert unknown.code == 2 and unknown.err.startswith("paradev: unknown agent 9")
