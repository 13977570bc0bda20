"""The task collection: the same tasks for ``paradev`` and ``invoke``, each documented."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from paradev.tasks import ns
from tests.helpers import Result

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = {"setup", "assign", "start", "complete", "status", "reset", "doctor"}
TASK_LINE = re.compile(r"^  (\S+)\s{2,}(\S.*)$")  # continuation lines are indented further


def _listed(text: str, heading: str) -> dict[str, str]:
    """Task name -> its help, from the section of ``text`` under ``heading``."""
    section = text.split(heading, 1)[1]
    listed: dict[str, str] = {}
    for line in section.splitlines()[1:]:
        if line and not line.startswith(" "):
            break
        match = TASK_LINE.match(line)
        if match:
            listed[match.group(1)] = match.group(2)
    return listed


def test_paradev_help_and_invoke_list_show_the_same_tasks(cli: Callable[..., Result]) -> None:
    paradev = _listed(cli("--help").out, "Subcommands:")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "invoke"), "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    invoke = _listed(proc.stdout, "Available tasks:")
    assert set(paradev) == set(invoke) == set(ns.task_names)
    assert set(paradev) >= FOUNDATION
    assert all(paradev.values()) and all(invoke.values())


@pytest.mark.parametrize("name", sorted(ns.task_names))
def test_every_task_has_a_one_line_summary(name: str) -> None:
    doc = (ns[name].__doc__ or "").strip()
    first = doc.splitlines()[0] if doc else ""
    assert first and first[0].isupper() and first.endswith("."), name
    assert len(first) <= 100, name


@pytest.mark.parametrize("name", sorted(ns.task_names))
def test_every_flag_has_help_text_even_after_a_parse(name: str) -> None:
    for _ in range(2):  # invoke pops help while parsing; ours must survive
        arguments = ns[name].get_arguments()
        missing = [arg.name for arg in arguments if not arg.help]
        assert not missing, f"{name}: flags without help: {missing}"


@pytest.mark.parametrize("name", sorted(ns.task_names))
def test_every_task_shows_its_help(name: str, cli: Callable[..., Result]) -> None:
    result = cli(name, "--help")
    assert result.code == 0, result.err
    assert f"Usage: paradev [--core-opts] {name}" in result.out
    for argument in ns[name].get_arguments():
        flag = argument.names[0]
        assert f"--{flag}" in result.out, (name, flag)


def test_flags_are_long_only() -> None:
    for name in ns.task_names:
        for argument in ns[name].get_arguments():
            assert all(len(n) > 1 for n in argument.names), (name, argument.names)


def test_the_top_level_tasks_file_exposes_the_same_collection() -> None:
    import tasks

    assert tasks.ns is ns
