"""``check``: the branches and every work tree's status are asked side by side."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest.mock import MagicMock

import pytest
from pytest_mock import MockerFixture

from paradev import branches as branches_mod
from paradev import claims as claims_mod
from paradev import context, kept
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


# -- answered from kept answers alone ---------------------------------------------------------

SHORT_MARGIN_NS = 50_000_000  # far above a file system clock tick, far below the real 2 s


@pytest.fixture
def asked_git(
    set_up: Path, monkeypatch: pytest.MonkeyPatch, mocker: MockerFixture
) -> Iterator[MagicMock]:
    """Every answer that asked git (``claims``; a spy: it still answers); a short racy margin
    so answers can be kept within a test (``_settle`` waits it out)."""
    monkeypatch.setattr(kept, "RACY_MARGIN_NS", SHORT_MARGIN_NS)
    yield mocker.spy(claims_mod, "claims")


def _settle() -> None:
    time.sleep(SHORT_MARGIN_NS / 1e9 * 2)


def _check(cli: Callable[..., Result], *paths: str) -> tuple[int, list[str], str]:
    result = cli("check", *paths, "--agent", "1")
    return result.code, result.out.splitlines(), result.err


def _truth(set_up: Path, repo: Path, path: str) -> list[str]:
    """What git says now, without paradev: each other agent's branch and work tree."""
    lines = []
    for agent in (2, 3):
        tree = agent_tree(set_up, agent)
        branch = f"parallel-dev/agent-{agent}"
        places = []
        if path in git(repo, "diff", "--name-only", f"main...{branch}").split():
            places.append("branch")
        status = ["status", "--porcelain", "--untracked-files=all", "--", path]
        if git(tree, *status).strip():
            places.append("worktree")
        if places:
            lines.append(f"{path}: agent {agent} ({branch}, {'+'.join(places)})")
    return lines


def test_a_check_run_again_answers_without_asking_git(
    set_up: Path, repo: Path, cli: Callable[..., Result], asked_git: MagicMock
) -> None:
    commit(agent_tree(set_up, 2), {"src/app.py": "two\n"})
    write(agent_tree(set_up, 3), {"src/util.py": "three\n"})
    _settle()
    first = _check(cli, "src/app.py", "src/util.py", "docs")
    assert asked_git.call_count == 1
    assert first == (
        1,
        [
            "src/app.py: agent 2 (parallel-dev/agent-2, branch)",
            "src/util.py: agent 3 (parallel-dev/agent-3, worktree)",
        ],
        "paradev: already changed by agent(s) 2, 3\n",
    )
    assert _check(cli, "src/app.py", "src/util.py", "docs") == first
    again = cli("check", "src/app.py", "src/util.py", "docs", "--agent", "1", "--json").json()
    assert (again["agents"], again["paths"]) == ([2, 3], ["src/app.py", "src/util.py", "docs"])
    assert asked_git.call_count == 1  # both answered from kept answers alone
    assert (repo / ".git" / "paradev" / context.CONTEXT_FILE).is_file()


def _commit_on_agent_2(set_up: Path, repo: Path) -> None:
    commit(agent_tree(set_up, 2), {"src/app.py": "two\n"})


def _edit_in_agent_3(set_up: Path, repo: Path) -> None:
    write(agent_tree(set_up, 3), {"src/app.py": "three\n"})


def _plan_comment(set_up: Path, repo: Path) -> None:
    with (repo / "plan.toml").open("a", encoding="utf-8") as handle:
        handle.write("# a comment changes nothing check says, but the plan must be read\n")


def _base_takes_agent_2(set_up: Path, repo: Path) -> None:
    _commit_on_agent_2(set_up, repo)
    git(repo, "merge", "-q", "--ff-only", "parallel-dev/agent-2")


@pytest.mark.parametrize(
    "change", [_commit_on_agent_2, _edit_in_agent_3, _plan_comment, _base_takes_agent_2]
)
def test_after_any_change_the_kept_answer_is_not_used(
    set_up: Path,
    repo: Path,
    cli: Callable[..., Result],
    asked_git: MagicMock,
    change: Callable[[Path, Path], None],
) -> None:
    _settle()
    _check(cli, "src/app.py")
    _check(cli, "src/app.py")
    assert asked_git.call_count == 1
    change(set_up, repo)
    _settle()
    code, lines, _ = _check(cli, "src/app.py")
    assert asked_git.call_count == 2, "the change must send check to git"
    assert lines == (_truth(set_up, repo, "src/app.py") or ["no other agent changes src/app.py"])
    assert code == (1 if _truth(set_up, repo, "src/app.py") else 0)


def test_a_corrupt_state_stops_check_even_with_kept_answers(
    set_up: Path, repo: Path, cli: Callable[..., Result], asked_git: MagicMock
) -> None:
    _settle()
    _check(cli, "src/app.py")
    (repo / ".git" / "paradev" / "state.json").write_text("{not json")
    _settle()
    code, lines, err = _check(cli, "src/app.py")
    assert (code, lines) == (2, []) and "state" in err


def test_a_work_tree_replaced_by_a_link_is_refused_even_with_kept_answers(
    set_up: Path, repo: Path, cli: Callable[..., Result], asked_git: MagicMock, tmp_path: Path
) -> None:
    _settle()
    _check(cli, "src/app.py")
    tree = agent_tree(set_up, 3)
    tree.rename(tmp_path / "moved")
    tree.symlink_to(tmp_path / "moved")
    _settle()
    code, lines, err = _check(cli, "src/app.py")
    assert (code, lines) == (2, []) and "symbolic link" in err


def test_another_plan_or_asking_agent_is_honoured_with_kept_answers(
    set_up: Path,
    repo: Path,
    cli: Callable[..., Result],
    asked_git: MagicMock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    write(agent_tree(set_up, 2), {"src/app.py": "two\n"})
    _settle()
    assert _check(cli, "src/app.py")[0] == 1
    monkeypatch.setenv("PARADEV_AGENT", "2")  # agent 2 asks: its own edit is not a claim
    assert cli("check", "src/app.py").code == 0
    monkeypatch.delenv("PARADEV_AGENT")
    other = tmp_path / "other-plan.toml"
    other.write_text((repo / "plan.toml").read_text() + "# the same plan, elsewhere\n")
    _settle()
    monkeypatch.setenv("PARADEV_PLAN", str(other))
    calls = asked_git.call_count
    assert cli("check", "src/app.py", "--agent", "1").code == 1
    assert asked_git.call_count == calls + 1  # another plan file: read, not the kept context


def test_a_linked_plan_is_read_again_when_the_file_it_leads_to_changes(
    set_up: Path, repo: Path, cli: Callable[..., Result], asked_git: MagicMock, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-plan.toml"
    shared.write_text((repo / "plan.toml").read_text())
    (repo / "plan.toml").unlink()
    (repo / "plan.toml").symlink_to(shared)
    _settle()
    _check(cli, "src/app.py")
    _check(cli, "src/app.py")
    assert asked_git.call_count == 1
    with shared.open("a", encoding="utf-8") as handle:
        handle.write("bogus_key = 1\n")
    _settle()
    code, lines, err = _check(cli, "src/app.py")
    assert (code, lines) == (2, []) and "bogus_key" in err


def test_a_relative_paradev_plan_is_found_from_where_check_runs(
    set_up: Path,
    repo: Path,
    cli: Callable[..., Result],
    asked_git: MagicMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARADEV_PLAN", "plan.toml")
    _settle()
    _check(cli, "src/app.py")
    assert _check(cli, "src/app.py")[0] == 0
    (repo / "src" / "sub").mkdir()
    _settle()
    result = cli("check", "../app.py", "--agent", "1", cwd=repo / "src" / "sub")
    assert result.code == 2 and "plan.toml" in result.err  # no plan.toml there


def test_a_linked_agent_folder_is_refused_even_for_another_asking_agent(
    set_up: Path, repo: Path, cli: Callable[..., Result], asked_git: MagicMock, tmp_path: Path
) -> None:
    one = agent_tree(set_up, 1)
    one.rename(tmp_path / "moved")
    (tmp_path / "empty").mkdir()
    one.symlink_to(tmp_path / "empty")
    _settle()
    assert cli("check", "src/app.py", "--agent", "1").code == 0  # agent 1 asks: not looked at
    assert cli("check", "src/app.py", "--agent", "1").code == 0
    result = cli("check", "src/app.py", "--agent", "2")
    assert result.code == 2 and "symbolic link" in result.err


def test_a_branch_that_is_a_symbolic_ref_follows_its_target(
    set_up: Path, repo: Path, cli: Callable[..., Result], asked_git: MagicMock
) -> None:
    two = commit(agent_tree(set_up, 2), {"src/app.py": "two\n"})
    git(repo, "branch", "-q", "trunk", "main")
    git(repo, "symbolic-ref", "refs/heads/main", "refs/heads/trunk")
    _settle()
    assert _check(cli, "src/app.py")[0] == 1
    assert _check(cli, "src/app.py")[0] == 1
    git(repo, "update-ref", "refs/heads/trunk", two)  # base now holds agent 2's work
    _settle()
    assert _check(cli, "src/app.py")[:2] == (0, ["no other agent changes src/app.py"])
