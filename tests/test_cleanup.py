"""cleanup: remove merged, clean worktrees; keep every unmerged commit and change when forced."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import Result, agent_tree, commit, git, rev, write

Cli = Callable[..., Result]


def work(cli: Cli, worktrees: Path, agent: int, files: dict[str, str | bytes | None]) -> str:
    assert cli("start", str(agent)).code == 0
    head = commit(agent_tree(worktrees, agent), files, f"agent {agent} work")
    assert cli("complete", str(agent)).code == 0
    return head


def worktree_paths(repo: Path) -> list[str]:
    out = git(repo, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


def backup_refs(repo: Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/paradev/backup")
    return dict(line.split(" ") for line in out.splitlines())


def state_agents(repo: Path) -> Any:
    return json.loads((repo / ".git" / "paradev" / "state.json").read_text())["agents"]


def test_merged_clean_worktrees_are_removed(repo: Path, set_up: Path, cli: Cli) -> None:
    work(cli, set_up, 1, {"one.py": "1\n"})
    assert cli("merge").code == 0

    result = cli("cleanup")

    assert result.code == 0, result.err
    assert worktree_paths(repo) == [str(repo)]
    for agent in (1, 2, 3):
        assert not agent_tree(set_up, agent).exists()
        assert git(repo, "branch", "--list", f"parallel-dev/agent-{agent}") != ""  # kept
    assert state_agents(repo) == {}


def test_delete_branches_never_touches_base(repo: Path, set_up: Path, cli: Cli) -> None:
    work(cli, set_up, 2, {"two.py": "2\n"})
    assert cli("merge").code == 0

    result = cli("cleanup", "--delete-branches")

    assert result.code == 0, result.err
    assert git(repo, "branch", "--list", "parallel-dev/*") == ""
    assert rev(repo, "main")
    assert (repo / "two.py").exists()


def test_dirty_and_unmerged_worktrees_are_refused(repo: Path, set_up: Path, cli: Cli) -> None:
    work(cli, set_up, 1, {"one.py": "1\n"})  # unmerged
    write(agent_tree(set_up, 2), {"scratch.py": "wip\n"})  # dirty (untracked counts)

    result = cli("cleanup", "--delete-branches")

    assert result.code == 1
    assert "agent 1" in result.out and "1 commit(s) not in main" in result.out
    assert "agent 2" in result.out and "scratch.py" in result.out
    assert "3 worktree" not in result.err and "2 worktree(s) kept" in result.err
    assert agent_tree(set_up, 1).is_dir() and agent_tree(set_up, 2).is_dir()
    assert not agent_tree(set_up, 3).exists()  # the clean, merged one went
    assert git(repo, "branch", "--list", "parallel-dev/agent-1") != ""


def test_force_keeps_unmerged_commits_and_uncommitted_work(
    repo: Path, set_up: Path, cli: Cli
) -> None:
    head = work(cli, set_up, 1, {"one.py": "1\n"})
    write(agent_tree(set_up, 1), {"one.py": "edited\n", "new.py": "untracked\n"})
    index_before = git(agent_tree(set_up, 1), "diff", "--cached", "--name-only")

    result = cli("cleanup", "--force", "--delete-branches")

    assert result.code == 0, result.err
    assert index_before == ""
    assert not agent_tree(set_up, 1).exists()
    assert git(repo, "branch", "--list", "parallel-dev/agent-1") == ""
    kept = backup_refs(repo)
    commits = [ref for ref in kept if not ref.endswith("-uncommitted")]
    snapshots = [ref for ref in kept if ref.endswith("-uncommitted")]
    assert [kept[r] for r in commits] == [head]
    assert len(snapshots) == 1
    assert git(repo, "show", f"{snapshots[0]}:one.py") == "edited"
    assert git(repo, "show", f"{snapshots[0]}:new.py") == "untracked"
    assert rev(repo, f"{snapshots[0]}^") == head


def test_branch_checked_out_elsewhere_is_not_deleted(
    repo: Path, set_up: Path, cli: Cli, tmp_path: Path
) -> None:
    git(repo, "worktree", "remove", str(agent_tree(set_up, 3)))
    elsewhere = tmp_path / "elsewhere"
    git(repo, "worktree", "add", "-q", str(elsewhere), "parallel-dev/agent-3")

    result = cli("cleanup", "--delete-branches")

    assert result.code == 1
    assert f"checked out in {elsewhere}" in result.out
    assert git(repo, "branch", "--list", "parallel-dev/agent-3") != ""
    assert elsewhere.is_dir()


def test_task_in_progress_blocks_cleanup(set_up: Path, cli: Cli) -> None:
    assert cli("start", "3").code == 0

    result = cli("cleanup")

    assert result.code == 1
    assert "task(s) in progress: #13" in result.out
    assert agent_tree(set_up, 3).is_dir()


def test_nothing_to_clean(repo: Path, cli: Cli) -> None:
    result = cli("cleanup")
    assert result.code == 0
    assert "nothing to clean up" in result.out


def test_cleanup_waits_for_a_stopped_train(repo: Path, set_up: Path, cli: Cli) -> None:
    work(cli, set_up, 1, {"src/util.py": "VALUE = 'one'\n"})
    work(cli, set_up, 2, {"src/util.py": "VALUE = 'two'\n"})
    assert cli("merge").code == 1

    result = cli("cleanup", "--force")

    assert result.code == 2
    assert "merge train is in progress" in result.err
    assert all(agent_tree(set_up, a).is_dir() for a in (1, 2, 3))


def test_force_keeps_commits_made_on_a_detached_head(repo: Path, set_up: Path, cli: Cli) -> None:
    tree = agent_tree(set_up, 3)
    git(tree, "checkout", "-q", "--detach")
    lone = commit(tree, {"lone.py": "only here\n"}, "on a detached HEAD")

    result = cli("cleanup", "--force")

    assert result.code == 0, result.err
    assert not tree.exists()
    assert lone in backup_refs(repo).values()


def test_force_never_ends_a_rebase_the_user_started(repo: Path, set_up: Path, cli: Cli) -> None:
    tree = agent_tree(set_up, 2)
    commit(tree, {"a.py": "1\n"}, "first")
    commit(tree, {"b.py": "2\n"}, "second")
    git(tree, "-c", "sequence.editor=sed -i s/^pick/edit/", "rebase", "-q", "-i", "HEAD~2")
    assert (Path(git(tree, "rev-parse", "--absolute-git-dir")) / "rebase-merge").is_dir()

    result = cli("cleanup", "--force")

    assert result.code == 1
    assert "a rebase is in progress there" in result.out
    assert tree.is_dir()
    assert (Path(git(tree, "rev-parse", "--absolute-git-dir")) / "rebase-merge").is_dir()


def test_cleanup_never_follows_a_symlinked_agent_folder_outside_the_root(
    repo: Path, worktrees: Path, tmp_path: Path, cli: Cli
) -> None:
    (repo / "plan.toml").write_text("[agents]\ncount = 2\n", encoding="utf-8")
    assert cli("setup", "--agents", "1").code == 0
    outside = tmp_path / "outside"  # a worktree of agent 2's branch, outside the root
    git(repo, "worktree", "add", "-q", "-b", "parallel-dev/agent-2", str(outside), "main")
    write(outside, {"precious.txt": "kept\n"})
    git(outside, "add", "precious.txt")
    git(outside, "commit", "-q", "-m", "precious")
    git(repo, "merge", "-q", "--ff-only", "parallel-dev/agent-2")  # merged: cleanup's candidate
    os.symlink(outside, agent_tree(worktrees, 2))

    result = cli("cleanup")

    assert result.code == 2
    assert f"{agent_tree(worktrees, 2)} is a symbolic link" in result.err
    assert (outside / "precious.txt").read_text() == "kept\n"
    assert agent_tree(worktrees, 1).is_dir()  # refused before anything was removed
