"""``check``: the branches and every work tree's status are asked side by side."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pytest_mock import MockerFixture

from paradev import branches as branches_mod
from paradev.branches import Heads, find_heads
from paradev.workspace import Workspace
from tests.helpers import Result, agent_tree, commit, git, write


def test_check_finds_branch_and_work_tree_changes_of_every_agent_at_once(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    commit(agent_tree(set_up, 2), {"src/app.py": "two\n"})
    write(agent_tree(set_up, 2), {"src/app.py": "two, then more\n"})
    write(agent_tree(set_up, 3), {"src/app.py": "three\n"})

    result = cli("check", "src/app.py", "--agent", "1")

    assert (result.code, result.out.splitlines()) == (
        1,
        [
            "src/app.py: agent 2 (parallel-dev/agent-2, branch+worktree)",
            "src/app.py: agent 3 (parallel-dev/agent-3, worktree)",
        ],
    )


def test_without_base_check_names_base_even_when_a_work_tree_is_broken(
    set_up: Path, repo: Path, cli: Callable[..., Result], mocker: MockerFixture
) -> None:
    # The broken tree's git fails first (the branches are made slow on purpose): the
    # branches' error still wins, as when they were asked before the trees.
    (agent_tree(set_up, 3) / ".git").write_text("gitdir: /nonexistent/agent-3\n")
    git(repo, "update-ref", "-d", "refs/heads/main")
    real = find_heads

    def slow_heads(ws: Workspace) -> Heads:
        time.sleep(0.5)
        return real(ws)

    mocker.patch.object(branches_mod, "find_heads", slow_heads)

    result = cli("check", "src/app.py", "--agent", "1")

    assert (result.code, result.err) == (2, "paradev: base branch 'main' does not exist\n")


def test_a_broken_work_tree_stops_check_with_one_line(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    (agent_tree(set_up, 3) / ".git").write_text("gitdir: /nonexistent/agent-3\n")

    result = cli("check", "src/app.py", "--agent", "1")

    assert result.code == 2 and result.out == ""
    assert result.err.startswith("paradev: ") and result.err.count("\n") == 1, result.err
