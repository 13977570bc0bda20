"""cleanup: remove merged, clean worktrees; keep every unmerged commit and change when forced."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from paradev.backups import ARCHIVE_CAP
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


def _ignore(repo: Path, *patterns: str) -> None:
    """Ignore ``patterns`` in every worktree (the common info/exclude), without a commit."""
    exclude = repo / ".git" / "info" / "exclude"
    exclude.parent.mkdir(exist_ok=True)
    exclude.write_text("".join(f"{p}\n" for p in patterns), encoding="utf-8")


def _archived(result: Result) -> dict[str, bytes]:
    """The files inside the one archive cleanup names in its output."""
    names = [w for w in result.out.split() if w.endswith(".tar.gz")]
    assert len(names) == 1, result.out
    with tarfile.open(names[0]) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_plain_cleanup_archives_ignored_files_before_the_worktree_goes(
    repo: Path, set_up: Path, cli: Cli
) -> None:
    _ignore(repo, ".env", "build/")
    tree = agent_tree(set_up, 2)
    write(tree, {".env": "SECRET=1\n", "build/out.bin": b"\x00\x01binary"})

    result = cli("cleanup")

    assert result.code == 0, result.err
    assert not tree.exists()
    archive = repo / ".git" / "paradev" / "backups"
    assert str(archive) in result.out and "2 ignored file(s)" in result.out
    assert _archived(result) == {".env": b"SECRET=1\n", "build/out.bin": b"\x00\x01binary"}


def test_ignored_files_over_the_cap_stop_cleanup_before_any_change(
    repo: Path, set_up: Path, cli: Cli, snapshot: Callable[[], dict[str, object]]
) -> None:
    _ignore(repo, "build/")
    big = agent_tree(set_up, 3) / "build" / "huge.bin"
    big.parent.mkdir()
    with big.open("wb") as handle:  # sparse: over the cap without using the disk
        handle.truncate(ARCHIVE_CAP + 1)
    before = snapshot()

    result = cli("cleanup")

    assert result.code == 2
    assert "over the 100.0 MB that cleanup backs up" in result.err
    assert f"largest: {agent_tree(set_up, 3) / 'build'}" in result.err
    assert result.err.count("\n") == 1
    assert snapshot() == before
    assert big.stat().st_size == ARCHIVE_CAP + 1
    assert all(agent_tree(set_up, a).is_dir() for a in (1, 2, 3))


@pytest.mark.parametrize("flag", ["--skip-worktree", "--assume-unchanged"])
def test_plain_cleanup_keeps_edits_hidden_from_git_status(
    repo: Path, set_up: Path, cli: Cli, flag: str
) -> None:
    tree = agent_tree(set_up, 1)
    git(tree, "update-index", flag, "src/util.py")
    write(tree, {"src/util.py": "VALUE = 'hidden edit'\n"})
    assert git(tree, "status", "--porcelain") == ""  # git itself does not show it

    result = cli("cleanup")

    assert result.code == 0, result.err
    assert not tree.exists()
    [ref] = [r for r in backup_refs(repo) if r.endswith("-uncommitted")]
    assert ref in result.out
    assert git(repo, "show", f"{ref}:src/util.py") == "VALUE = 'hidden edit'"


def test_force_keeps_a_staged_version_that_differs_from_the_files(
    repo: Path, set_up: Path, cli: Cli
) -> None:
    tree = agent_tree(set_up, 1)
    write(tree, {"src/util.py": "VALUE = 'staged'\n"})
    git(tree, "add", "src/util.py")
    write(tree, {"src/util.py": "VALUE = 'in the file'\n"})

    result = cli("cleanup", "--force")

    assert result.code == 0, result.err
    assert not tree.exists()
    refs = backup_refs(repo)
    [staged] = [r for r in refs if r.endswith("-staged")]
    [files] = [r for r in refs if r.endswith("-uncommitted")]
    assert staged in result.out and files in result.out
    assert git(repo, "show", f"{staged}:src/util.py") == "VALUE = 'staged'"
    assert git(repo, "show", f"{files}:src/util.py") == "VALUE = 'in the file'"


@pytest.mark.parametrize("ignored", [False, True])
def test_a_nested_repository_stops_cleanup_even_with_force(
    repo: Path,
    set_up: Path,
    cli: Cli,
    snapshot: Callable[[], dict[str, object]],
    ignored: bool,
) -> None:
    if ignored:
        _ignore(repo, "vendor/")
    nested = agent_tree(set_up, 2) / "vendor" / "lib"
    nested.mkdir(parents=True)
    git(nested, "init", "-q", "-b", "main")
    own = commit(nested, {"lib.py": "mine\n"}, "a commit only this repository has")
    before = snapshot()

    result = cli("cleanup", "--force")

    assert result.code == 2
    assert f"{nested} is a git repository inside {agent_tree(set_up, 2)}" in result.err
    assert "move it out of the worktree" in result.err and result.err.count("\n") == 1
    assert snapshot() == before
    assert rev(nested, "HEAD") == own


def test_backups_lists_and_prunes_by_age(repo: Path, set_up: Path, cli: Cli) -> None:
    _ignore(repo, ".env")
    write(agent_tree(set_up, 1), {".env": "A=1\n", "wip.py": "wip\n"})
    assert cli("cleanup", "--force").code == 0
    assert cli("reset", "--yes").code == 0
    old = "20200101T000000000000Z"
    git(repo, "update-ref", f"refs/paradev/backup/parallel-dev/agent-9/{old}", "main")
    old_archive = repo / ".git" / "paradev" / "backups" / f"cleanup-{old}-agent-9.tar.gz"
    old_archive.write_bytes(b"old")
    old_state = repo / ".git" / "paradev" / f"state.json.bak-{old}"
    old_state.write_text("{}")

    listed = cli("cleanup", "--backups")

    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert lines[-1] == "6 backup(s) (prune with --older DAYS)"
    assert [line.split()[3] for line in lines[:3]] == ["archive", "state", "ref"]
    assert all(line.startswith("2020-01-01 00:00 UTC") for line in lines[:3])
    assert sum(" archive " in line for line in lines) == 2 and "-uncommitted" in listed.out

    pruned = cli("cleanup", "--backups", "--older", "7")

    assert pruned.code == 0, pruned.err
    assert pruned.out.count("removed 2020-01-01") == 3
    assert pruned.out.splitlines()[-1] == "removed 3 backup(s) older than 7 day(s)"
    assert not old_archive.exists() and not old_state.exists()
    assert "agent-9" not in " ".join(backup_refs(repo))
    assert cli("cleanup", "--backups").out.splitlines()[-1].startswith("3 backup(s)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older", "3"], "--older prunes backups: use it with --backups"),
        (["--backups", "--older", "soon"], "--older 'soon': give a number of days"),
        (["--backups", "--older", "-1"], "--older -1.0: give a number of days from 0 to 36500"),
        (["--backups", "--force"], "--backups only lists and prunes"),
    ],
)
def test_bad_backup_flags_are_one_line_errors(
    repo: Path, set_up: Path, cli: Cli, args: list[str], message: str
) -> None:
    git(repo, "update-ref", "refs/paradev/backup/x/20200101T000000000000Z", "main")
    result = cli("cleanup", *args)
    assert result.code == 2 and result.err.startswith(f"paradev: {message}")
    assert result.err.count("\n") == 1
    assert "refs/paradev/backup/x/20200101T000000000000Z" in backup_refs(repo)


SETUP_MAKES_A_VENV = (
    "import os; os.makedirs('.venv/lib', exist_ok=True); "
    "open('.venv/lib/site.py', 'w').write('x = 1\\n'); "
    f"f = open('.venv/lib/huge.bin', 'wb'); f.truncate({ARCHIVE_CAP + 1})"
)


def test_what_worktree_set_up_put_there_is_exempt_and_what_an_agent_changed_is_archived(
    repo: Path, worktrees: Path, cli: Cli
) -> None:
    """[setup] copies still as copied, and what the setup command made, need no backup."""
    import sys

    import tomlkit

    commit(repo, {".gitignore": ".env\nlocal/\n.venv/\nbuild/\n"}, "ignore")
    write(repo, {".env": "SECRET=1\n", "local/settings.toml": "debug = true\n"})
    doc = tomlkit.parse((repo / "plan.toml").read_text(encoding="utf-8"))
    setup = doc.setdefault("setup", tomlkit.table())
    setup["copy"] = [".env", "local"]
    setup["command"] = [sys.executable, "-c", SETUP_MAKES_A_VENV]
    (repo / "plan.toml").write_text(tomlkit.dumps(doc), encoding="utf-8")
    assert cli("setup").code == 0
    tree = agent_tree(worktrees, 2)
    assert (tree / ".venv" / "lib" / "huge.bin").stat().st_size == ARCHIVE_CAP + 1
    write(tree, {"local/settings.toml": "debug = false\n", "build/out.bin": b"\x00built"})

    result = cli("cleanup")

    assert result.code == 0, result.err
    assert not tree.exists()
    assert _archived(result) == {  # the agent's edit and its build; not .env nor .venv
        "local/settings.toml": b"debug = false\n",
        "build/out.bin": b"\x00built",
    }
