"""paradev.git (the part the foundation owns): discovery, versions, names, worktrees, diffs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from paradev import git as git_mod
from paradev.errors import GitError, PreconditionError
from paradev.git import (
    Git,
    ahead_behind,
    ahead_behind_if_any,
    changed_paths,
    dirty_paths,
    discover,
    git_env,
    is_valid_branch_name,
    open_repo,
    parse_version,
    require_version,
    worktree_list,
)
from tests.helpers import Result, agent_tree, commit, git, rev, write

BRANCH_NAMES = [
    "main",
    "feature/x",
    "parallel-dev/agent-1",
    "a/b/c",
    "x.y",
    "x-",
    "a/-b",
    "a@b",
    "a@",
    "@a",
    "@",
    "a./b",
    "a.lock.b",
    "HEAD/x",
    "x/HEAD",
    "ü",
    "漢字/枝",
    "a{b}",
    "a%b#c'd\"e|f<g>!",
    "",
    "a..b",
    "a..",
    "a b",
    "a\tb",
    "a\nb",
    "a\x7fb",
    "a\x01b",
    "-x",
    "-",
    "HEAD",
    "a@{1}",
    "@{",
    "a/",
    "/a",
    "a//b",
    "a.lock",
    "a/b.lock",
    "a.lock/b",
    ".a",
    "a/.b",
    "a.",
    "a/b.",
    "a/.",
    "./a",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[",
    "a\\b",
]


@pytest.mark.parametrize("name", BRANCH_NAMES)
def test_branch_names_agree_with_git_check_ref_format(tmp_path: Path, name: str) -> None:
    proc = subprocess.run(
        ["git", "check-ref-format", "--branch", name],
        cwd=tmp_path,  # outside any repository: no @{-N} expansion
        capture_output=True,
        env=git_env(),
        check=False,
    )
    assert is_valid_branch_name(name) == (proc.returncode == 0)


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("git version 2.39.5", (2, 39, 5)),
        ("git version 2.38.0.windows.1", (2, 38, 0)),
        ("git version 2.40.1 (Apple Git-143)", (2, 40, 1)),
        ("git version 3.0", (3, 0, 0)),
    ],
)
def test_parse_version(text: str, version: tuple[int, int, int]) -> None:
    assert parse_version(text) == version


def test_parse_version_rejects_garbage() -> None:
    with pytest.raises(GitError, match="cannot read the git version"):
        parse_version("no digits here")


@pytest.mark.parametrize("version", [(2, 38, 0), (2, 39, 5), (3, 0, 0)])
def test_new_enough_git_is_accepted(version: tuple[int, int, int]) -> None:
    require_version(version)


@pytest.mark.parametrize("version", [(2, 37, 9), (2, 20, 1), (1, 9, 0)])
def test_old_git_is_refused_with_the_versions(version: tuple[int, int, int]) -> None:
    have = ".".join(map(str, version))
    with pytest.raises(
        PreconditionError, match=rf"git {have} is too old: .* git >= 2\.38; upgrade"
    ):
        require_version(version)


def test_the_real_git_is_new_enough() -> None:
    require_version(git_mod.git_version())


@pytest.mark.parametrize(
    "command", [["setup"], ["status"], ["assign", "1", "5", "t", "1"], ["start", "1"], ["reset"]]
)
def test_every_command_refuses_git_older_than_2_38(
    repo: Path,
    cli: Callable[..., Result],
    mocker: MockerFixture,
    snapshot: Callable[[], dict[str, object]],
    command: list[str],
) -> None:
    before = snapshot()
    mocker.patch("paradev.git.parse_version", return_value=(2, 37, 1))
    result = cli(*command)
    assert result.code == 2
    assert result.err == (
        "paradev: git 2.37.1 is too old: paradev needs git >= 2.38; upgrade git\n"
    )
    assert snapshot() == before


@pytest.mark.parametrize(
    "command", [["setup"], ["status"], ["assign", "1", "5", "t", "1"], ["reset"], ["doctor"]]
)
def test_outside_a_repository_every_command_says_so(
    tmp_path: Path, cli: Callable[..., Result], command: list[str]
) -> None:
    lonely = tmp_path / "not-a-repo"
    lonely.mkdir()
    result = cli(*command, cwd=lonely)
    assert result.code == 2
    assert result.err == (
        f"paradev: {lonely} is not inside a git repository; cd into one or run git init\n"
    )
    assert list(lonely.iterdir()) == []


def test_a_bare_repository_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    with pytest.raises(PreconditionError, match="is a bare repository"):
        discover(bare)


def test_discover_from_a_subfolder_and_from_a_worktree(repo: Path, set_up: Path) -> None:
    main = discover(repo / "src")
    assert (main.toplevel, main.main_root, main.common_dir) == (repo, repo, repo / ".git")
    assert main.name == "project"
    inside = discover(agent_tree(set_up, 2) / "src")
    assert inside.toplevel == agent_tree(set_up, 2)
    assert (inside.main_root, inside.common_dir) == (repo, repo / ".git")


def test_discover_with_a_separate_git_dir(tmp_path: Path) -> None:
    work, store = tmp_path / "work", tmp_path / "store.git"
    git(tmp_path, "init", "-q", "--separate-git-dir", str(store), str(work))
    commit(work, {"a.txt": "a\n"})
    found = discover(work)
    assert (found.main_root, found.common_dir) == (work, store)


def test_discover_ignores_git_dir_from_the_environment(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    git(tmp_path, "init", "-q", str(other))
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert discover(repo).main_root == repo
    assert "GIT_DIR" not in git_env() and git_env({"X": "1"})["X"] == "1"


def test_a_git_failure_names_gits_reason_not_its_closing_advice(repo: Path) -> None:
    git(repo, "remote", "add", "origin", str(repo.parent / "missing.git"))
    with pytest.raises(GitError) as caught:
        Git(repo).run("fetch", "--quiet", "--", "origin")
    assert str(caught.value) == (
        "git fetch --quiet -- origin failed: fatal: "
        f"'{repo.parent / 'missing.git'}' does not appear to be a git repository"
    )


def test_git_failures_are_one_line_git_errors(repo: Path) -> None:
    with pytest.raises(GitError) as caught:
        Git(repo).run("rev-parse", "--verify", "no-such-ref")
    assert (
        str(caught.value)
        == "git rev-parse --verify no-such-ref failed: fatal: Needed a single revision"
    )
    assert Git(repo).run("rev-parse", "--verify", "nope", check=False).returncode != 0
    assert not Git(repo).ok("merge-base", "--is-ancestor", "HEAD", "nope")


def test_a_missing_git_binary_is_a_clear_error(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo / "nowhere"))
    with pytest.raises(GitError, match="git is not installed or not on PATH"):
        Git(repo).out("version")


def test_rev_names_commits_only(repo: Path) -> None:
    head = rev(repo, "HEAD")
    assert Git(repo).rev("main") == head
    assert Git(repo).rev("HEAD^{tree}") is None  # a tree is not a commit
    assert Git(repo).rev("nope") is None
    assert Git(repo).rev("--all") is None  # never taken as an option


def test_open_repo_closes_gitpython(repo: Path) -> None:
    with open_repo(repo) as handle:
        assert handle.head.commit.hexsha == rev(repo, "HEAD")


def test_worktree_list_reads_branches_detached_and_stale(repo: Path, tmp_path: Path) -> None:
    git(repo, "worktree", "add", "-q", "-b", "feature", str(tmp_path / "wt-a"))
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "wt b"))
    git(repo, "worktree", "add", "-q", "-b", "gone", str(tmp_path / "wt-c"))
    git(repo, "worktree", "lock", str(tmp_path / "wt-a"))
    subprocess.run(["rm", "-rf", str(tmp_path / "wt-c")], check=True)
    records = {Path(r.path).name: r for r in worktree_list(Git(repo))}
    assert set(records) == {"project", "wt-a", "wt b", "wt-c"}
    assert records["project"].branch == "main" and records["project"].head == rev(repo, "HEAD")
    assert records["wt-a"].branch == "feature" and records["wt-a"].locked
    assert records["wt b"].branch is None
    assert records["wt-c"].prunable and not records["wt-a"].prunable


def test_ahead_behind_and_changed_paths_use_the_merge_base(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "work", str(tree))
    commit(tree, {"src/new.py": "x\n", "src/util.py": "VALUE = 2\n"})
    commit(tree, {"README.md": None})
    commit(repo, {"later-on-main.txt": "m\n"})  # base moves on: not the branch's change
    assert ahead_behind(Git(repo), "main", "work") == (2, 1)
    assert ahead_behind_if_any(Git(repo), "main", "work") == (2, 1)
    assert ahead_behind_if_any(Git(repo), "main", "missing") is None
    assert ahead_behind_if_any(Git(repo), "missing", "work") is None
    assert changed_paths(Git(repo), "main", "work") == ["README.md", "src/new.py", "src/util.py"]


def test_changed_paths_lists_both_sides_of_a_rename(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "work", str(tree))
    git(tree, "mv", "src/util.py", "src/helpers.py")
    git(tree, "commit", "-q", "-m", "rename")
    assert changed_paths(Git(repo), "main", "work") == ["src/helpers.py", "src/util.py"]


def test_dirty_paths_lists_every_kind_of_change(repo: Path) -> None:
    assert dirty_paths(repo) == []
    write(repo, {"src/app.py": "changed\n", "new dir/with space.txt": "u\n", "README.md": None})
    git(repo, "mv", "src/util.py", "src/renamed.py")
    write(repo, {".gitignore": "*.log\n", "debug.log": "ignored\n"})
    assert sorted(dirty_paths(repo)) == [
        ".gitignore",
        "README.md",
        "new dir/with space.txt",
        "src/app.py",
        "src/renamed.py",
        "src/util.py",  # a rename changes its original path too
    ]


def test_inside_the_git_dir_is_not_a_work_tree(repo: Path) -> None:
    with pytest.raises(PreconditionError, match="is not inside a work tree"):
        discover(repo / ".git")


def test_looking_at_a_worktree_takes_no_index_lock(repo: Path) -> None:
    write(repo, {"src/app.py": "changed\n"})
    (repo / ".git" / "index.lock").write_text("")  # an agent's git is busy in this tree
    try:
        assert dirty_paths(repo) == ["src/app.py"]
    finally:
        (repo / ".git" / "index.lock").unlink()


def test_git_output_that_is_not_utf8_reaches_git_again_unchanged(repo: Path) -> None:
    import os

    (Path(os.fsdecode(bytes(repo) + b"/caf\xe9.txt"))).write_text("latin-1 name\n")
    name = Git(repo).out("ls-files", "--others", "-z").rstrip("\0")
    assert name == os.fsdecode(b"caf\xe9.txt")
    Git(repo).run("add", "--", name)
    assert Git(repo).out("diff", "--cached", "--name-only", "-z").rstrip("\0") == name


def test_side_by_side_keeps_the_order_and_raises_the_first_error() -> None:
    import threading

    seen: set[int] = set()

    def work(n: int) -> int:
        seen.add(threading.get_ident())
        return n * n

    assert git_mod.side_by_side(work, list(range(40)), threads=4) == [n * n for n in range(40)]
    assert 1 <= len(seen) <= 4
    assert git_mod.side_by_side(work, []) == []

    def fail(n: int) -> int:
        if n == 7:
            raise GitError("git failed for 7")
        return n

    with pytest.raises(GitError, match="git failed for 7"):
        git_mod.side_by_side(fail, list(range(20)))


def test_processes_start_a_window_at_a_time_and_are_read_in_order(repo: Path) -> None:
    head = rev(repo, "HEAD")
    jobs = [(repo, ("update-ref", f"refs/heads/job-{n}", head)) for n in range(5)]
    jobs.append((repo, ("rev-parse", "--verify", "refs/heads/job-0")))  # read before it starts
    with git_mod.Processes(jobs, window=2) as running:
        for proc in running._started:  # the window: wait for what it started at once
            assert isinstance(proc, subprocess.Popen)
            proc.wait()
        made = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/job-*")
        assert made.split() == ["job-0", "job-1"]  # the others wait for their turn
        assert [running.result(n).returncode for n in range(5)] == [0] * 5
        assert running.result(5).stdout == head + "\n"


def test_processes_name_each_failure_when_read_and_the_others_still_answer(
    repo: Path, tmp_path: Path
) -> None:
    jobs = [
        (repo, ("rev-parse", "--verify", "refs/heads/nowhere")),
        (tmp_path / "gone", ("status",)),
        (repo, ("rev-parse", "HEAD")),
    ]
    with git_mod.Processes(jobs) as running:
        with pytest.raises(GitError, match="git rev-parse --verify refs/heads/nowhere failed"):
            running.result(0)
        with pytest.raises(GitError, match=f"cannot run git in {tmp_path / 'gone'}"):
            running.result(1)
        assert running.result(2).stdout.strip() == rev(repo, "HEAD")


def test_landed_issues_reads_the_newest_trailer_of_each_issue(repo: Path) -> None:
    older = commit(repo, {"a.py": "1\n"}, "feat: a\n\nParadev-Issue: 5")
    newer = commit(repo, {"a.py": "2\n"}, "fix: a again\n\nParadev-Issue: 5\nParadev-Issue: 6")
    commit(repo, {"b.py": "1\n"}, "docs: b\n\nParadev-Issue: 7 is mentioned here\n\nnot a trailer")
    commit(repo, {"c.py": "1\n"}, "docs: c\n\nParadev-Issue: seven")

    landed = git_mod.landed_issues(git_mod.Git(repo), "refs/heads/main")

    assert {issue: commit for issue, (commit, _) in landed.items()} == {5: newer, 6: newer}
    assert older != newer
    assert git_mod.landed_issues(git_mod.Git(repo), "refs/heads/missing") == {}


def test_read_commits_gives_what_git_show_gives_for_each_commit(repo: Path) -> None:
    """One cat-file for the whole chain: tree, identities (raw dates) and the exact message."""
    env = {
        "GIT_AUTHOR_NAME": "Zoë <not> Quote",
        "GIT_AUTHOR_EMAIL": "zoe@example.invalid",
        "GIT_AUTHOR_DATE": "1700000000 +0530",
        "GIT_COMMITTER_NAME": "Bot",
        "GIT_COMMITTER_EMAIL": "bot@example.invalid",
        "GIT_COMMITTER_DATE": "1700000100 -0200",
    }
    write(repo, {"odd.py": "x\n"})
    git(repo, "add", "odd.py")
    subprocess.run(
        ["git", "commit", "-q", "--cleanup=verbatim", "-m", "subject\n\n  body kept  \n\n"],
        cwd=repo,
        env={**git_mod.git_env(), **env},
        check=True,
    )
    first, second = rev(repo, "HEAD~1"), rev(repo, "HEAD")

    found = git_mod.read_commits(git_mod.Git(repo), [first, "HEAD"])

    for raw, name in zip(found, (first, second), strict=True):
        fields = git(
            repo, "show", "-s", "--date=raw", "--format=%an%n%ae%n%ad%n%cn%n%ce%n%cd", name
        )
        names = [f"GIT_{w}_{f}" for w in ("AUTHOR", "COMMITTER") for f in ("NAME", "EMAIL", "DATE")]
        assert raw.identity == dict(zip(names, fields.splitlines(), strict=True))
        assert raw.tree == rev(repo, f"{name}^{{tree}}")
        body = git(repo, "cat-file", "commit", name).split("\n\n", 1)[1]
        assert raw.message.rstrip("\n") == body
    assert found[1].message == "subject\n\n  body kept  \n\n"


def test_create_refs_makes_all_or_none(repo: Path) -> None:
    g = git_mod.Git(repo)
    head = rev(repo, "HEAD")
    assert git_mod.create_refs(g, {"refs/paradev/backup/a": head, "refs/paradev/backup/b": head})
    assert git_mod.resolve_refs(g, ["refs/paradev/backup/a", "refs/paradev/backup/b"]) == {
        "refs/paradev/backup/a": head,
        "refs/paradev/backup/b": head,
    }
    # one of them exists already: nothing is created
    assert not git_mod.create_refs(
        g, {"refs/paradev/backup/c": head, "refs/paradev/backup/a": head}
    )
    assert g.rev("refs/paradev/backup/c") is None


def test_unmerged_and_changes_reads_conflicts_and_untracked_files(repo: Path) -> None:
    base = rev(repo, "HEAD")
    git(repo, "checkout", "-q", "-b", "side")
    commit(repo, {"clash.txt": "side\n"}, "side")
    git(repo, "checkout", "-q", base)
    commit(repo, {"clash.txt": "main\n"}, "main")
    subprocess.run(["git", "merge", "-q", "side"], cwd=repo, capture_output=True, check=False)
    write(repo, {"extra.txt": "x\n"})
    unmerged, changes = git_mod.unmerged_and_changes(repo)
    assert unmerged == git_mod.unmerged_paths(repo) == ["clash.txt"]
    assert set(changes) == {"clash.txt", "extra.txt"}


def test_tips_and_ancestry_tell_whether_a_branch_needs_a_rebase(repo: Path) -> None:
    g = git_mod.Git(repo)
    base = rev(repo, "main")
    git(repo, "branch", "on-base")
    git(repo, "checkout", "-q", "-b", "ahead")
    ahead = commit(repo, {"a.py": "a\n"}, "ahead")
    git(repo, "checkout", "-q", "main")
    moved = commit(repo, {"m.py": "m\n"}, "main moves")

    assert git_mod.tips_and_ancestry(g, "refs/heads/main", "refs/heads/on-base") == (
        moved,
        base,
        False,
    )
    assert git_mod.tips_and_ancestry(g, "refs/heads/on-base", "refs/heads/ahead") == (
        base,
        ahead,
        True,
    )
    assert git_mod.tips_and_ancestry(g, "refs/heads/main", "refs/heads/main") == (
        moved,
        moved,
        True,
    )
    assert git_mod.tips_and_ancestry(g, "refs/heads/main", "refs/heads/missing") is None


def test_tips_and_merge_base_name_both_tips_and_their_one_fork_point(repo: Path) -> None:
    g = git_mod.Git(repo)
    base = rev(repo, "main")
    git(repo, "checkout", "-q", "-b", "agent")
    ahead = commit(repo, {"a.py": "a\n"}, "agent's work")
    git(repo, "checkout", "-q", "main")
    moved = commit(repo, {"m.py": "m\n"}, "main moves")

    tips = git_mod.tips_and_merge_base(g, "refs/heads/main", "refs/heads/agent")
    assert tips == git_mod.Tips(left=moved, right=ahead, merge_base=base)
    assert tips.merge_base == git_mod.merge_base(g, "main", "agent")
    same = git_mod.tips_and_merge_base(g, "refs/heads/main", "refs/heads/main")
    assert same == git_mod.Tips(moved, moved, moved)
    assert git_mod.tips_and_merge_base(g, "refs/heads/main", "refs/heads/missing") is None
    assert git_mod.tips_and_merge_base(g, "refs/heads/missing", "refs/heads/main") is None


def test_tips_and_merge_base_leave_a_criss_cross_fork_point_unnamed(repo: Path) -> None:
    g = git_mod.Git(repo)
    git(repo, "checkout", "-q", "-b", "side")
    side = commit(repo, {"s.py": "s\n"}, "side")
    git(repo, "checkout", "-q", "main")
    main = commit(repo, {"m.py": "m\n"}, "main")
    git(repo, "merge", "-q", "--no-edit", side)
    git(repo, "checkout", "-q", "side")
    git(repo, "merge", "-q", "--no-edit", main)

    tips = git_mod.tips_and_merge_base(g, "refs/heads/main", "refs/heads/side")
    assert tips is not None and tips.merge_base is None  # two merge bases: not one to record
    assert (tips.left, tips.right) == (rev(repo, "main"), rev(repo, "side"))


def test_read_range_and_write_commit_chain_make_the_commits_commit_tree_makes(repo: Path) -> None:
    g = git_mod.Git(repo)
    base = rev(repo, "HEAD")
    first = commit(repo, {"a.py": "a\n"}, "feat: a\n\nbody\n\n\n")
    second = commit(repo, {"b.py": "b\n"}, "feat: b")

    found = git_mod.read_range(g, base, "HEAD")

    assert [sha for sha, _ in found] == [first, second]
    assert [c.message for _, c in found] == [
        c.message for c in git_mod.read_commits(g, [first, second])
    ]
    assert [c.identity for _, c in found] == [
        c.identity for c in git_mod.read_commits(g, [first, second])
    ]
    assert git_mod.write_commit_chain(g, base, [c for _, c in found]) == [first, second]
    changed = found[1][1]._replace(message="feat: b\n\nParadev-Issue: 3\n")
    (new,) = git_mod.write_commit_chain(g, first, [changed])
    made = git_mod.commit_tree(g, changed.tree, [first], changed.message, env=changed.identity)
    assert new == made
    assert git_mod.read_range(g, second, "HEAD") == []


def test_commit_leftovers_commits_a_staged_change_and_leaves_a_clean_tree_alone(
    repo: Path,
) -> None:
    head = rev(repo, "HEAD")
    assert git_mod.commit_leftovers(repo, "nothing\n", None) == (None, [])
    assert rev(repo, "HEAD") == head
    write(repo, {"scratch.txt": "not declared\n"})
    assert git_mod.commit_leftovers(repo, "nothing declared\n", []) == (None, [])
    assert rev(repo, "HEAD") == head

    write(repo, {"staged.py": "s\n"})
    git(repo, "add", "staged.py")
    commit_id, staged = git_mod.commit_leftovers(repo, "left\n", [])

    assert staged == ["staged.py"]
    assert commit_id == rev(repo, "HEAD") != head
    assert git(repo, "status", "--porcelain") == "?? scratch.txt"


_MESSAGE_LINES = [
    "agent 1 commit 0",
    "feat: a conventional title",
    "",
    "  ",
    "body text, plain",
    "Signed-off-by: A <a@b.c>",
    "Paradev-Issue: 7",
    "Paradev-Issue: 3",
    "Closes #12",
    "# a comment",
    "--- a/file",
    "(cherry picked from commit 0123abc)",
    "    continued",
    "key=value",
    "Reviewed-by: someone",
    "x\r",
]


def _messages(count: int) -> list[str]:
    import random

    chooser = random.Random(11)
    found = ["agent 1 commit 0\n", "fix: it\n\nwhy it was wrong\n", "t\n\nPara: 1\n"]
    for _ in range(count):
        lines = chooser.choices(_MESSAGE_LINES, k=chooser.randint(1, 6))
        found.append("\n".join(lines) + chooser.choice(["\n", "", "\n\n"]))
    return found


def test_trailers_added_in_python_are_byte_for_byte_what_git_writes(repo: Path) -> None:
    """The plain case is appended without a git process; git decides every other message."""
    messages = _messages(600)
    values = ["3", "7"]
    ours = [git_mod.trailers_appended(m, "Paradev-Issue", values) for m in messages]
    plain = [(m, o) for m, o in zip(messages, ours, strict=True) if o is not None]
    gits = git_mod._interpret_trailers(Git(repo), [m for m, _ in plain], "Paradev-Issue", values)
    assert [o for _, o in plain] == gits
    assert len(plain) > 40  # the common case (no trailer-like line below the title) is ours
    assert ours[0] == "agent 1 commit 0\n\nParadev-Issue: 3\nParadev-Issue: 7\n"
    assert ours[2] is None  # may be a trailer block already: git's call


def test_add_trailers_to_each_mixes_both_ways_in_order(repo: Path) -> None:
    messages = ["plain title\n", "t\n\nParadev-Issue: 4\n", "other\n\nbody\n"]
    added = git_mod.add_trailers_to_each(Git(repo), messages, "Paradev-Issue", ["4"])
    assert added == [
        "plain title\n\nParadev-Issue: 4\n",
        "t\n\nParadev-Issue: 4\n",
        "other\n\nbody\n\nParadev-Issue: 4\n",
    ]


def test_write_commit_chain_with_no_process_writes_what_hash_object_writes(
    repo: Path, tmp_path: Path
) -> None:
    """The commits written straight into the object folder are git's own: same ids as
    ``git hash-object`` gives, readable, and fsck finds nothing wrong."""
    g = git_mod.Git(repo)
    base = rev(repo, "HEAD")
    first = commit(repo, {"a.py": "a\n"}, "first")
    second = commit(repo, {"b.py": "b\n"}, "second\n\nbody ü")
    raw = git_mod.read_commits(g, [first, second])
    again = [c._replace(message=c.message + "\nParadev-Issue: 7\n") for c in raw]
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", "--no-local", str(repo), str(other))

    by_git = git_mod.write_commit_chain(git_mod.Git(other), base, again)
    ids = git_mod.write_commit_chain(g, base, again, repo / ".git" / "objects")

    assert ids == by_git
    for sha, old in zip(ids, raw, strict=True):
        assert git(repo, "cat-file", "-t", sha) == "commit"
        assert git(repo, "rev-parse", f"{sha}^{{tree}}") == old.tree
        assert (
            git(repo, "log", "-1", "--format=%(trailers:key=Paradev-Issue,valueonly)", sha) == "7"
        )
    assert git(repo, "rev-parse", f"{ids[1]}~1") == ids[0]
    git(repo, "update-ref", "refs/heads/rewritten", ids[1])  # git takes them as its own
    assert git(repo, "fsck", "--strict", "--no-dangling") == ""
    assert not list((repo / ".git" / "objects").glob("*/tmp_obj_*"))  # nothing left behind
    # written again (a resumed train): the same objects, no error
    assert git_mod.write_commit_chain(g, base, again, repo / ".git" / "objects") == ids


def test_loose_refs_reads_ref_files_and_gives_up_on_anything_else(repo: Path) -> None:
    common = repo / ".git"
    head = rev(repo, "HEAD")
    git(repo, "branch", "loose")
    assert git_mod.loose_refs(common, ["refs/heads/loose"]) == {"refs/heads/loose": head}
    git(repo, "pack-refs", "--all")  # packed: no loose file to read, git must answer
    assert git_mod.loose_refs(common, ["refs/heads/loose"]) is None
    assert git_mod.loose_refs(common, ["refs/heads/missing"]) is None
    assert git_mod.loose_refs(common, ["HEAD"]) is None
    assert git_mod.loose_refs(common, ["refs/heads/../../HEAD"]) is None
    git(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    assert git_mod.loose_refs(common, ["refs/heads/alias"]) is None  # symbolic: "ref: ..."
    moved = commit(repo, {"c.py": "c\n"}, "moves main")
    assert git_mod.loose_refs(common, ["refs/heads/main"]) == {"refs/heads/main": moved}


def test_loose_objects_get_their_folder_the_mode_of_the_object_folder(repo: Path) -> None:
    """A shared repository's object folders are group-writable: a new one made here too."""
    objects = repo / ".git" / "objects"
    objects.chmod(0o2775)
    raw = git_mod.read_commits(git_mod.Git(repo), ["HEAD"])[0]
    base = rev(repo, "HEAD")
    there = {folder.name for folder in objects.iterdir()}
    for attempt in range(50):  # until one lands in a folder that did not exist yet
        (sha,) = git_mod.write_commit_chain(
            git_mod.Git(repo), base, [raw._replace(message=f"again {attempt}\n")], objects
        )
        if sha[:2] not in there:
            break
    assert sha[:2] not in there
    assert (objects / sha[:2]).stat().st_mode & 0o7777 == 0o2775
    assert git(repo, "cat-file", "-t", sha) == "commit"


def test_a_removed_current_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    probe = "import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
    probe += "from paradev.cli import main; sys.exit(main(['check', 'x']))"
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(gone)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("paradev: the current folder no longer exists")
    assert proc.stderr.count("\n") == 1


def _locked_tracking_ref(repo: Path, remote: Path) -> Path:
    """origin/main held by another git process: its lock file exists, origin has moved on."""
    git(repo, "fetch", "-q", "origin")
    commit(repo, {"later.txt": rev(repo, "HEAD") + "\n"}, "later work")
    git(repo, "push", "-q", "origin", "main")
    git(repo, "update-ref", "refs/remotes/origin/main", "HEAD~1")
    lock = repo / ".git" / "refs" / "remotes" / "origin" / "main.lock"
    lock.write_text("")
    return lock


def test_a_fetch_racing_another_process_for_a_tracking_ref_is_tried_again(
    repo: Path, remote: Path, mocker: MockerFixture
) -> None:
    lock = _locked_tracking_ref(repo, remote)
    # The other process (an agent's own `git fetch`) lets go while paradev waits.
    pause = mocker.patch("time.sleep", side_effect=lambda _: lock.unlink(missing_ok=True))
    found = git_mod.fetch_ref(
        git_mod.Git(repo), "origin", "refs/heads/main", "refs/remotes/origin/main"
    )
    assert found == rev(repo, "HEAD") == rev(repo, "refs/remotes/origin/main")
    assert pause.call_count == 1
    lock = _locked_tracking_ref(repo, remote)
    git_mod.fetch(git_mod.Git(repo), "origin")  # the plain fetch of every branch too
    assert pause.call_count == 2
    assert rev(repo, "refs/remotes/origin/main") == rev(repo, "HEAD")


def test_a_fetch_whose_ref_stays_locked_fails_naming_the_lock(
    repo: Path, remote: Path, mocker: MockerFixture
) -> None:
    _locked_tracking_ref(repo, remote)
    pause = mocker.patch("time.sleep")
    with pytest.raises(GitError, match=r"git fetch .*cannot lock ref 'refs/remotes/origin/main'"):
        git_mod.fetch_refspecs(
            git_mod.Git(repo), "origin", ["+refs/heads/main:refs/remotes/origin/main"]
        )
    assert pause.call_count == len(git_mod.REF_RACE_PAUSES)
    assert rev(repo, "refs/remotes/origin/main") == rev(repo, "HEAD~1")  # nothing moved


def _commit_with(repo: Path, parent: str, message: str, **ident: str) -> str:
    """A commit of ``parent``'s tree with this message and identity (commit-tree)."""
    env = {
        "GIT_AUTHOR_NAME": "A  Name",
        "GIT_AUTHOR_EMAIL": "a@x.invalid",
        "GIT_AUTHOR_DATE": "1700000000 +0130",
        "GIT_COMMITTER_NAME": "Çommitter",
        "GIT_COMMITTER_EMAIL": "c@x.invalid",
        "GIT_COMMITTER_DATE": "1700000100 -0700",
        **ident,
    }
    return git_mod.commit_tree(Git(repo), rev(repo, f"{parent}^{{tree}}"), [parent], message, env)


def test_read_loose_range_reads_what_git_log_reads_with_no_process(repo: Path) -> None:
    g = Git(repo)
    base = rev(repo, "HEAD")
    head = base
    for message in [*_messages(40), "", "no newline", "ü ☃\n\n\n", "t\n\n\tx\n"]:
        head = _commit_with(repo, head, message)
    git(repo, "reset", "-q", "--hard", head)
    head = _commit_with(repo, commit(repo, {"f.py": "1\n"}, "real"), "after a real one\n")
    objects = repo / ".git" / "objects"

    found = git_mod.read_loose_range(objects, base, head)

    assert found == git_mod.read_range(g, base, head)
    assert found is not None and len(found) == 49
    commits = [sha for sha, _ in found]
    assert [c for _, c in found] == git_mod.read_commits(g, commits)  # byte for byte: CRs kept
    assert git_mod.read_loose_range(objects, head, head) == git_mod.read_range(g, head, head) == []


@pytest.mark.parametrize(
    "odd",
    [
        "author A <a@x.invalid> 1700000000 -0000",  # git prints "+0000"
        "author A <a@x.invalid> 01700000000 +0000",  # git prints the number
        "author x <y <a@x.invalid> 1700000000 +0000",  # git cuts the identity elsewhere
        "author  A <a@x.invalid> 1700000000 +0000",
        "author <a@x.invalid> 1700000000 +0000",
        "author A <a@x.invalid> 1700000000 +0000\nmergetag x",  # a header git does not print
    ],
)
def test_read_loose_range_leaves_what_git_prints_otherwise_to_git(repo: Path, odd: str) -> None:
    """Commits git itself would not write (made by hand): git reads them, not paradev."""
    base = rev(repo, "HEAD")
    plain = _commit_with(repo, base, "plain\n")
    body = f"tree {rev(repo, 'HEAD^{tree}')}\nparent {plain}\n{odd}\n"
    body += "committer C <c@x.invalid> 1700000000 +0000\n\nodd\n"
    head = Git(repo).out("hash-object", "-t", "commit", "-w", "--literally", "--stdin", input=body)
    assert git_mod.read_loose_range(repo / ".git" / "objects", base, plain) is not None
    assert git_mod.read_loose_range(repo / ".git" / "objects", base, head) is None
    assert [sha for sha, _ in git_mod.read_range(Git(repo), base, head)] == [plain, head]


def test_read_loose_range_gives_up_on_packed_merged_encoded_or_foreign_commits(
    repo: Path,
) -> None:
    objects = repo / ".git" / "objects"
    base = rev(repo, "HEAD")
    root = git_mod.commit_tree(Git(repo), rev(repo, "HEAD^{tree}"), [], "root\n")
    assert git_mod.read_loose_range(objects, base, root) is None  # never reaches base
    git(repo, "config", "i18n.commitEncoding", "ISO-8859-1")
    encoded = commit(repo, {"e.py": "e\n"}, "encoded")
    git(repo, "config", "--unset", "i18n.commitEncoding")
    assert git_mod.read_loose_range(objects, base, encoded) is None  # git would re-encode it
    git(repo, "checkout", "-q", "-b", "side", base)
    side = commit(repo, {"s.py": "s\n"}, "side")
    git(repo, "checkout", "-q", "main")
    merge = git_mod.commit_tree(Git(repo), rev(repo, "HEAD^{tree}"), [encoded, side], "m\n")
    assert git_mod.read_loose_range(objects, base, merge) is None
    plain = _commit_with(repo, base, "plain\n")
    assert git_mod.read_loose_range(objects, base, plain) is not None
    (objects / plain[:2] / plain[2:]).chmod(0o644)
    (objects / plain[:2] / plain[2:]).write_bytes(b"damaged")
    assert git_mod.read_loose_range(objects, base, plain) is None
    git(repo, "gc", "-q", "--prune=now")  # every object packed: git must answer
    assert git_mod.read_loose_range(objects, base, encoded) is None
    assert git_mod.read_loose_range(objects, base, "refs/heads/main") is None


def test_refs_from_files_answers_as_for_each_ref_loose_packed_or_missing(repo: Path) -> None:
    common, g = repo / ".git", Git(repo)
    head = rev(repo, "HEAD")
    git(repo, "tag", "-a", "-m", "annotated", "v1")  # packed with its peeled line
    git(repo, "branch", "packed")
    git(repo, "branch", "deep/down")
    git(repo, "pack-refs", "--all")
    moved = commit(repo, {"c.py": "c\n"}, "moves main")  # loose again, over its packed line
    git(repo, "branch", "loose")
    names = [
        "refs/heads/main",
        "refs/heads/packed",
        "refs/heads/loose",
        "refs/heads/deep",  # a folder of refs, no ref of its own
        "refs/heads/deep/down",
        "refs/heads/missing",
        "refs/remotes/origin/main",
        "refs/tags/v1",
    ]

    found = git_mod.refs_from_files(common, names)

    assert found == git_mod.resolve_refs(g, names)
    assert found is not None and found["refs/heads/main"] == moved != head
    assert found["refs/heads/packed"] == head and "refs/heads/missing" not in found
    assert git_mod.resolve_refs_from_files(g, common, names) == found
    assert git_mod.refs_from_files(common, ["HEAD"]) is None  # outside refs/: git answers
    git(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    assert git_mod.refs_from_files(common, ["refs/heads/alias"]) is None
    (common / "packed-refs").write_text("not a packed ref\n")
    assert git_mod.refs_from_files(common, ["refs/heads/missing"]) is None
    assert git_mod.refs_from_files(common, ["refs/heads/loose"]) == {"refs/heads/loose": moved}


def test_at_once_runs_the_last_call_here_and_ends_every_call_before_raising() -> None:
    import threading
    import time

    here = threading.get_ident()
    ended: list[str] = []

    def slow() -> str:
        time.sleep(0.3)
        ended.append("slow")
        return "slow"

    def fails() -> None:
        raise GitError("no")

    assert git_mod.at_once(threading.get_ident, slow, threading.get_ident)[1:] == ["slow", here]
    ended.clear()
    with pytest.raises(GitError, match="no"):
        git_mod.at_once(slow, fails)  # the failure comes first, in the calling thread...
    assert ended == ["slow"]  # ...yet the slow call had ended when it was raised
    with pytest.raises(GitError, match="no"):
        git_mod.at_once(fails, lambda: None)
    assert git_mod.at_once(lambda: 1) == [1]


def test_a_fast_forward_of_base_starts_no_automatic_maintenance(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """paradev's own ``merge --ff-only`` leaves git's ``maintenance run --auto`` out (a process
    per landing); the same fast-forward run by hand starts it."""
    git(repo, "checkout", "-q", "-b", "side")
    commit(repo, {"side.txt": "side\n"}, "side")
    side = rev(repo, "side")
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "copy", "main")
    trace = tmp_path / "trace.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    git(repo, "checkout", "-q", "copy")
    git(repo, "merge", "--quiet", "--ff-only", side)  # by hand: git's maintenance runs
    assert '"maintenance","run","--auto"' in trace.read_text()
    git(repo, "checkout", "-q", "main")
    trace.unlink()
    git_mod.merge_ff_only(repo, side)
    assert rev(repo, "main") == side
    assert '"maintenance","run"' not in trace.read_text()


def test_reset_keep_costs_one_git_process_on_a_clean_tree_and_still_refuses_local_changes(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The index is refreshed only after a refusal: a clean tree moves with one ``reset``; a
    file touched with the same bytes still moves; a real change in the way refuses, kept."""
    first = rev(repo, "HEAD")
    second = commit(repo, {"src/util.py": "VALUE = 2\n"}, "two")
    trace = tmp_path / "trace.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    git_mod.reset_keep(repo, first)
    ran = [line for line in trace.read_text().splitlines() if '"event":"start"' in line]
    assert len(ran) == 1 and '"reset"' in ran[0]
    assert rev(repo, "HEAD") == first
    monkeypatch.delenv("GIT_TRACE2_EVENT")
    util = repo / "src" / "util.py"
    shutil.copy(util, tmp_path / "copy.py")
    os.replace(tmp_path / "copy.py", util)  # a new inode and time, the same bytes
    git_mod.reset_keep(repo, second)
    assert rev(repo, "HEAD") == second and util.read_text() == "VALUE = 2\n"
    util.write_text("VALUE = 9\n")  # a real local change to a file the reset would rewrite
    with pytest.raises(GitError):
        git_mod.reset_keep(repo, first)
    assert rev(repo, "HEAD") == second and util.read_text() == "VALUE = 9\n"
