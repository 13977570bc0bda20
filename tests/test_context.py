"""paradev.context: what the fast commands keep of the plan and layout, and the work trees'
``git status`` that ``status`` starts from it before loading anything else."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from paradev import context, kept
from paradev.lifecycle import status
from paradev.workspace import open_workspace
from tests.helpers import Result, agent_tree, commit, write

SHORT_MARGIN_NS = 50_000_000


@pytest.fixture
def short_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kept, "RACY_MARGIN_NS", SHORT_MARGIN_NS)


def _settle() -> None:
    time.sleep(SHORT_MARGIN_NS / 1e9 * 2)


def test_status_keeps_the_context_and_starts_every_tree_s_status_from_it(
    set_up: Path, repo: Path, cli: Callable[..., Result], short_margin: None
) -> None:
    write(agent_tree(set_up, 2), {"src/app.py": "dirty\n"})
    commit(agent_tree(set_up, 3), {"three.py": "3\n"})
    _settle()
    assert context.start_statuses() == {}  # nothing kept yet
    first = cli("status", "--json").json()
    early = context.start_statuses()
    trees = sorted(Path(tree).name for tree, _ in early)
    assert trees == ["agent-1", "agent-2", "agent-3"]
    report = status(open_workspace(), early)
    assert all(proc.returncode is not None for proc in early.values())  # all read
    assert report["agents"] == first["agents"]
    assert report["agents"]["2"]["dirty"] is True


def test_early_processes_status_does_not_use_are_stopped(
    set_up: Path, repo: Path, cli: Callable[..., Result], short_margin: None
) -> None:
    _settle()
    cli("status")
    early = context.start_statuses()
    stray = context.start_statuses()  # a second set, as if for trees status no longer has
    report = status(open_workspace(), early)
    assert report["agents"]["1"]["state"]
    from paradev.git import Processes

    with Processes([], early=stray):
        pass
    assert all(proc.returncode is not None for proc in stray.values())  # stopped, reaped


def test_a_changed_plan_starts_nothing_early(
    set_up: Path, repo: Path, cli: Callable[..., Result], short_margin: None
) -> None:
    _settle()
    cli("status")
    with (repo / "plan.toml").open("a", encoding="utf-8") as handle:
        handle.write("# changed\n")
    _settle()
    assert context.start_statuses() == {}
