"""paradev setup: create, repair and refuse agent worktrees, for any number of agents."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from paradev import worktrees as worktrees_mod
from paradev.state import StateStore
from paradev.workspace import Workspace
from paradev.worktrees import Step
from tests.helpers import Result, agent_tree, commit, git, rev, write


def _use_plan(repo: Path, agents: int, extra: str = "") -> None:
    (repo / "plan.toml").write_text(f"{extra}\n[agents]\ncount = {agents}\n", encoding="utf-8")


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_setup_creates_a_worktree_and_branch_per_agent(
    repo: Path, worktrees: Path, cli: Callable[..., Result]
) -> None:
    _use_plan(repo, 5)
    result = cli("setup")
    assert result.code == 0, result.err
    base = rev(repo, "main")
    for agent in range(1, 6):
        tree = agent_tree(worktrees, agent)
        assert git(tree, "branch", "--show-current") == f"parallel-dev/agent-{agent}"
        assert rev(tree, "HEAD") == base
        assert (tree / "src" / "app.py").is_file()
        assert (
            f"agent {agent}: created branch and worktree parallel-dev/agent-{agent}" in result.out
        )
    agents = StateStore(repo / ".git").read().agents
    assert sorted(agents) == [1, 2, 3, 4, 5]
    assert agents[4].worktree == str(agent_tree(worktrees, 4))
    assert git(repo, "branch", "--show-current") == "main"  # the main worktree is untouched


def test_setup_agents_n_sets_up_the_first_n(
    repo: Path, worktrees: Path, cli: Callable[..., Result]
) -> None:
    assert cli("setup", "--agents", "2").code == 0
    assert sorted(p.name for p in worktrees.iterdir()) == ["agent-1", "agent-2"]
    assert git(repo, "branch", "--list", "parallel-dev/*").split() == [
        "+",
        "parallel-dev/agent-1",
        "+",
        "parallel-dev/agent-2",
    ]


@pytest.mark.parametrize("value", ["0", "4", "x", "-1"])
def test_setup_agents_out_of_range_is_refused(
    repo: Path,
    cli: Callable[..., Result],
    snapshot: Callable[[], dict[str, object]],
    value: str,
) -> None:
    before = snapshot()
    result = cli("setup", f"--agents={value}")
    assert result.code == 2
    assert result.err.count("\n") == 1 and "--agents" in result.err
    assert snapshot() == before


def test_a_second_setup_changes_nothing(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    state = repo / ".git" / "paradev" / "state.json"
    before = (
        git(repo, "worktree", "list", "--porcelain"),
        git(repo, "for-each-ref"),
        _mtimes(set_up),
        state.read_bytes(),
        state.stat().st_mtime_ns,
    )
    result = cli("setup")
    assert result.code == 0, result.err
    assert result.out.count(": ok ") == 3
    after = (
        git(repo, "worktree", "list", "--porcelain"),
        git(repo, "for-each-ref"),
        _mtimes(set_up),
        state.read_bytes(),
        state.stat().st_mtime_ns,
    )
    assert after == before


def test_setup_prunes_a_stale_record_and_recreates_the_folder(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 2)
    work = commit(tree, {"feature.py": "x = 1\n"}, "agent 2 work")
    shutil.rmtree(tree)  # the folder is gone; git still records it
    assert "prunable" in git(repo, "worktree", "list", "--porcelain")
    result = cli("setup")
    assert result.code == 0, result.err
    assert "agent 2: added worktree for existing branch" in result.out
    assert "prunable" not in git(repo, "worktree", "list", "--porcelain")
    assert rev(tree, "HEAD") == work  # the branch with commits was reused, never reset
    assert (tree / "feature.py").read_text() == "x = 1\n"


def test_setup_repairs_a_broken_git_link_and_keeps_the_work(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 2)
    work = commit(tree, {"feature.py": "x = 1\n"}, "agent 2 work")
    (tree / "notes.txt").write_text("uncommitted\n", encoding="utf-8")
    (tree / ".git").write_text("gitdir: /nowhere\n", encoding="utf-8")  # e.g. a copied folder
    result = cli("setup")
    assert result.code == 0, result.err
    assert f"agent 2: repaired the broken .git link of parallel-dev/agent-2 at {tree}" in result.out
    assert "agent 1: ok" in result.out and "agent 3: ok" in result.out
    assert rev(tree, "HEAD") == work
    assert git(tree, "status", "--porcelain") == "?? notes.txt"
    assert "repaired" not in cli("setup").out  # idempotent once repaired


@pytest.mark.parametrize("kind", ["file", "dangling-symlink"])
def test_setup_refuses_a_worktree_root_that_is_not_a_folder(
    repo: Path,
    worktrees: Path,
    cli: Callable[..., Result],
    snapshot: Callable[[], dict[str, object]],
    kind: str,
) -> None:
    if kind == "file":
        worktrees.write_text("not a folder\n", encoding="utf-8")
    else:
        worktrees.symlink_to(worktrees.parent / "gone" / "dir")
    before = snapshot()
    result = cli("setup")
    assert result.code == 2
    assert result.err == (
        f"paradev: {worktrees} is not a folder, so no agent worktree can be created in it; "
        "move it away or change project.worktrees\n"
    )
    assert snapshot() == before and git(repo, "branch", "--list", "parallel-dev/*") == ""


def test_setup_reuses_an_existing_branch_with_commits(
    repo: Path, worktrees: Path, cli: Callable[..., Result]
) -> None:
    git(repo, "branch", "parallel-dev/agent-3")
    git(repo, "worktree", "add", "-q", str(repo.parent / "tmp-wt"), "parallel-dev/agent-3")
    work = commit(repo.parent / "tmp-wt", {"mine.txt": "keep\n"})
    git(repo, "worktree", "remove", str(repo.parent / "tmp-wt"))
    commit(repo, {"base-moved.txt": "later\n"})  # base moves on: the branch must not follow
    assert cli("setup").code == 0
    assert rev(agent_tree(worktrees, 3), "HEAD") == work
    assert rev(repo, "parallel-dev/agent-3") == work


def test_setup_reuses_an_empty_folder(
    repo: Path, worktrees: Path, cli: Callable[..., Result]
) -> None:
    agent_tree(worktrees, 1).mkdir(parents=True)
    assert cli("setup").code == 0
    assert (agent_tree(worktrees, 1) / ".git").is_file()


def test_setup_refuses_a_folder_that_is_not_our_worktree(
    repo: Path,
    worktrees: Path,
    cli: Callable[..., Result],
    snapshot: Callable[[], dict[str, object]],
) -> None:
    write(agent_tree(worktrees, 2), {"notes.txt": "precious\n"})
    before = snapshot()
    result = cli("setup")
    assert result.code == 2
    assert result.err == (
        f"paradev: {agent_tree(worktrees, 2)} exists and is not agent 2's worktree; "
        "move it away or change project.worktrees\n"
    )
    assert snapshot() == before  # agents 1 and 3 were not created either
    assert (agent_tree(worktrees, 2) / "notes.txt").read_text() == "precious\n"


def test_setup_refuses_a_worktree_on_another_branch(
    repo: Path,
    worktrees: Path,
    cli: Callable[..., Result],
    snapshot: Callable[[], dict[str, object]],
) -> None:
    git(repo, "worktree", "add", "-q", "-b", "other", str(agent_tree(worktrees, 1)))
    before = snapshot()
    result = cli("setup")
    assert result.code == 2
    assert "is a worktree on other, not parallel-dev/agent-1" in result.err
    assert snapshot() == before


def test_setup_refuses_a_branch_checked_out_elsewhere(
    repo: Path,
    cli: Callable[..., Result],
    snapshot: Callable[[], dict[str, object]],
) -> None:
    git(repo, "switch", "-q", "-c", "parallel-dev/agent-2")
    before = snapshot()
    result = cli("setup")
    assert result.code == 2
    assert result.err == (
        f"paradev: branch parallel-dev/agent-2 is checked out in {repo}; "
        "switch that worktree to another branch first\n"
    )
    assert snapshot() == before


def test_setup_refuses_a_worktree_root_inside_the_repository(
    repo: Path, cli: Callable[..., Result], snapshot: Callable[[], dict[str, object]]
) -> None:
    _use_plan(repo, 2, '[project]\nworktrees = "build/agents"')
    before = snapshot()
    result = cli("setup")
    assert result.code == 2
    assert f"{repo / 'build' / 'agents'} is inside the repository" in result.err
    assert snapshot() == before
    assert not (repo / "build").exists()


def test_setup_refuses_a_missing_base(
    repo: Path, cli: Callable[..., Result], snapshot: Callable[[], dict[str, object]]
) -> None:
    _use_plan(repo, 2, '[project]\nbase = "develop"')
    before = snapshot()
    result = cli("setup")
    assert result.code == 2
    assert result.err == (
        "paradev: base 'develop' does not exist; create it or set project.base in plan.toml\n"
    )
    assert snapshot() == before


def test_setup_from_inside_an_agent_worktree_acts_on_the_same_repository(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    shutil.rmtree(agent_tree(set_up, 3))
    result = cli("setup", cwd=agent_tree(set_up, 1) / "src")
    assert result.code == 0, result.err
    assert (agent_tree(set_up, 3) / ".git").is_file()
    assert sorted(p.name for p in set_up.parent.iterdir()) == ["project", "project-worktrees"]
    assert not list(set_up.glob("*/*-worktrees")) and not list(set_up.glob("*-worktrees"))


def test_setup_with_a_custom_prefix_and_root(
    repo: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    root = tmp_path / "elsewhere"
    _use_plan(repo, 2, f'[project]\nworktrees = "{root}/{{repo}}"\nbranch_prefix = "team/bot-"')
    assert cli("setup").code == 0
    assert git(root / "project" / "agent-2", "branch", "--show-current") == "team/bot-2"


def test_a_worktree_root_under_the_home_folder_is_expanded(
    repo: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _use_plan(repo, 1, '[project]\nworktrees = "~/trees/{repo}"')
    result = cli("setup")
    assert result.code == 0, result.err
    tree = tmp_path / "home" / "trees" / "project" / "agent-1"
    assert git(tree, "branch", "--show-current") == "parallel-dev/agent-1"
    assert not (repo / "~").exists()


def test_setup_with_a_remote_bases_new_branches_on_the_remote_base(
    repo: Path, remote: Path, worktrees: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    other = tmp_path / "other-machine"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    pushed = commit(other, {"from-elsewhere.txt": "new\n"}, "pushed by a colleague")
    git(other, "push", "-q", "origin", "main")
    git(repo, "branch", "parallel-dev/agent-1")  # existing: kept where it is
    local_main = rev(repo, "main")
    _use_plan(repo, 3, '[project]\nremote = "origin"')
    result = cli("setup")
    assert result.code == 0, result.err
    assert rev(repo, "refs/remotes/origin/main") == pushed
    assert rev(agent_tree(worktrees, 2), "HEAD") == pushed
    assert rev(agent_tree(worktrees, 3), "HEAD") == pushed
    assert rev(agent_tree(worktrees, 1), "HEAD") == local_main
    assert rev(repo, "main") == local_main  # the local base is not moved by setup
    assert (
        git(
            agent_tree(worktrees, 2),
            "config",
            "--get",
            "branch.parallel-dev/agent-2.remote",
            check=False,
        )
        == ""
    )


def test_setup_with_an_unreachable_remote_is_a_clear_error(
    repo: Path, cli: Callable[..., Result], snapshot: Callable[[], dict[str, object]]
) -> None:
    git(repo, "remote", "add", "origin", str(repo.parent / "missing.git"))
    _use_plan(repo, 2, '[project]\nremote = "origin"')
    before = snapshot()
    result = cli("setup")
    assert result.code == 2
    assert result.err.startswith(
        "paradev: git fetch --quiet -- origin failed: fatal: "
    ) and result.err.endswith("does not appear to be a git repository\n")
    assert result.err.count("\n") == 1
    assert snapshot() == before


def test_setup_follows_a_symlinked_worktree_root(
    repo: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    real = tmp_path / "real-root"
    real.mkdir()
    os.symlink(real, tmp_path / "link-root")
    _use_plan(repo, 2, f'[project]\nworktrees = "{tmp_path / "link-root"}"')
    assert cli("setup").code == 0
    assert cli("setup").out.count(": ok ") == 2  # the symlinked path is recognised as ours


def test_setup_refuses_a_prefix_that_clashes_with_a_branch(
    repo: Path, cli: Callable[..., Result], snapshot: Callable[[], dict[str, object]]
) -> None:
    git(repo, "branch", "parallel-dev")  # git cannot have both parallel-dev and parallel-dev/x
    before = snapshot()
    result = cli("setup")
    assert result.code == 2
    assert result.err.startswith(
        "paradev: branch parallel-dev exists, so git cannot also create parallel-dev/agent-1; "
        "change project.branch_prefix; "
    )
    assert result.err.count("\n") == 1
    assert snapshot() == before


def test_a_setup_that_fails_midway_records_what_it_made(
    repo: Path, worktrees: Path, cli: Callable[..., Result], mocker: MockerFixture
) -> None:
    real_apply = worktrees_mod._apply

    def apply(ws: Workspace, step: Step, start: str) -> None:
        if step.agent == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during agent 2
        real_apply(ws, step, start)

    mocker.patch.object(worktrees_mod, "_apply", side_effect=apply)
    assert cli("setup").code == 130
    assert sorted(StateStore(repo / ".git").read().agents) == [1]
    mocker.stopall()
    assert cli("setup").code == 0
    assert sorted(StateStore(repo / ".git").read().agents) == [1, 2, 3]
    assert (agent_tree(worktrees, 2) / ".git").is_file()


def test_setup_refuses_a_symlink_planted_at_an_agent_folder(
    repo: Path, worktrees: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    worktrees.mkdir()
    os.symlink(elsewhere, agent_tree(worktrees, 2))
    _use_plan(repo, 2)

    result = cli("setup")

    assert result.code == 2
    assert f"{agent_tree(worktrees, 2)} is a symbolic link" in result.err
    assert "remove the link" in result.err and result.err.count("\n") == 1
    assert list(elsewhere.iterdir()) == []  # nothing was built outside the root
    assert not agent_tree(worktrees, 1).exists()  # refused before anything changed


def test_a_symlinked_root_that_resolves_inside_the_repository_is_refused(
    repo: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    (repo / "build").mkdir()
    os.symlink(repo / "build", tmp_path / "looks-outside")
    _use_plan(repo, 2, f'[project]\nworktrees = "{tmp_path / "looks-outside"}"')

    result = cli("setup")

    assert result.code == 2
    assert "is inside the repository" in result.err
    assert list((repo / "build").iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["run-batch", "--no-launch"],
        ["merge"],
        ["conflicts", "--uncommitted"],
        ["start", "2"],
    ],
)
def test_every_command_refuses_a_symlinked_agent_folder(
    repo: Path,
    set_up: Path,
    tmp_path: Path,
    cli: Callable[..., Result],
    snapshot: Callable[[], dict[str, object]],
    command: list[str],
) -> None:
    if command[0] in ("merge", "conflicts"):  # they use the folder of an agent with work
        assert cli("start", "2").code == 0
        commit(agent_tree(set_up, 2), {"two.py": "2\n"})
        assert cli("complete", "2").code == 0
    elsewhere = tmp_path / "elsewhere"
    shutil.move(agent_tree(set_up, 2), elsewhere)  # a real worktree, now outside the root
    os.symlink(elsewhere, agent_tree(set_up, 2))
    before = snapshot()

    result = cli(*command)

    assert result.code == 2, result.out
    assert f"agent 2's folder {agent_tree(set_up, 2)} is a symbolic link" in result.err
    assert snapshot() == before


def test_setup_leaves_a_rebase_of_the_agent_branch_alone_and_accepts_the_worktree(
    repo: Path, worktrees: Path, cli: Callable[..., Result]
) -> None:
    """A stopped rebase shows a detached HEAD: it is still the agent's branch, never refused."""
    _use_plan(repo, 2)
    assert cli("setup").code == 0
    tree = agent_tree(worktrees, 1)
    commit(tree, {"a.txt": "1\n"}, "one")
    commit(tree, {"b.txt": "2\n"}, "two")
    git(tree, "-c", "sequence.editor=sed -i s/^pick/edit/", "rebase", "-i", "HEAD~1")

    result = cli("setup")

    assert result.code == 0, result.err
    assert (tree / git(tree, "rev-parse", "--git-path", "rebase-merge")).is_dir()  # still on
