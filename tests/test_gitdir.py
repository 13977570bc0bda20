"""paradev.gitdir: repository discovery without git gives git's own answer, or none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paradev import gitdir
from tests.helpers import git


def rev_parse(cwd: Path) -> tuple[str, str, str] | None:
    """What git says: (toplevel, common dir, main work tree); None outside a work tree.

    The main work tree: this one when its git dir is the common one, else the
    first of ``git worktree list``.
    """
    out = git(
        cwd,
        "rev-parse",
        "--path-format=absolute",
        "--absolute-git-dir",
        "--git-common-dir",
        "--show-toplevel",
        check=False,
    ).splitlines()
    if len(out) != 3:
        return None
    git_dir, common, top = out
    if git_dir == common:
        return top, common, top
    main = git(cwd, "worktree", "list", "--porcelain").splitlines()[0].removeprefix("worktree ")
    return top, common, main


def found(cwd: Path) -> tuple[str, str, str] | None:
    answer = gitdir.find_repository(str(cwd))
    return None if answer is None else (answer.toplevel, answer.common_dir, answer.main_root)


def test_main_work_tree_and_subfolders_match_git(repo: Path) -> None:
    sub = repo / "deep" / "er"
    sub.mkdir(parents=True)
    for where in (repo, repo / "deep", sub):
        assert found(where) == rev_parse(where)
        assert found(where) is not None


def test_linked_work_tree_matches_git(repo: Path, tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "side", str(linked))
    (linked / "sub").mkdir()
    for where in (linked, linked / "sub"):
        answer = found(where)
        assert answer == rev_parse(where)
        assert answer is not None and answer[0] == str(linked) and answer[2] == str(repo)


def test_a_symlinked_folder_is_resolved_as_git_does(repo: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(repo)
    assert found(link) == rev_parse(link) == found(repo)


def test_outside_any_repository_git_is_asked(tmp_path: Path) -> None:
    lone = tmp_path / "lone"
    lone.mkdir()
    assert rev_parse(lone) is None
    assert found(lone) is None


@pytest.mark.parametrize(
    "config",
    [
        "[core]\n\tworktree = /elsewhere\n",
        "[include]\n\tpath = other.cfg\n",
        '[includeIf "gitdir:/x/"]\n\tpath = other.cfg\n',
        "[core]\n\tbare = true\n",
    ],
)
def test_config_that_moves_the_work_tree_leaves_it_to_git(repo: Path, config: str) -> None:
    with open(repo / ".git" / "config", "a", encoding="utf-8") as handle:
        handle.write(config)
    assert found(repo) is None


def test_inside_the_git_dir_or_a_broken_git_dir_leaves_it_to_git(
    repo: Path, tmp_path: Path
) -> None:
    assert found(repo / ".git") is None
    broken = tmp_path / "broken"
    (broken / ".git").mkdir(parents=True)  # no HEAD: git looks further up, or fails
    assert found(broken) is None
    named = tmp_path / "named"
    named.mkdir()
    (named / ".git").write_text("gitdir: /nowhere/at/all\n")
    assert found(named) is None


def test_separate_git_dir_is_left_to_git(tmp_path: Path) -> None:
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "--separate-git-dir", str(tmp_path / "store.git"), str(work))
    assert rev_parse(work) is not None
    answer = found(work)
    assert answer is None or answer == rev_parse(work)


def test_discovery_variables_leave_it_to_git(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(repo.parent))
    assert found(repo) is None


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.sampled_from(["a", "b", ".hidden", "with space", "ü"]), min_size=0, max_size=4),
    st.booleans(),
)
def test_any_folder_gets_git_s_answer_or_none(
    repo: Path, tmp_path: Path, parts: list[str], linked: bool
) -> None:
    """Fuzzed folders in the main or a linked work tree: never an answer git would not give."""
    top = repo
    if linked:
        top = tmp_path / "fuzz-linked"
        if not top.exists():
            git(repo, "worktree", "add", "-q", "--detach", str(top))
    where = top.joinpath(*parts)
    where.mkdir(parents=True, exist_ok=True)
    answer = found(where)
    assert answer is not None
    assert answer == rev_parse(where)
    assert os.path.isdir(answer[1])


def test_a_bare_repository_inside_a_work_tree_is_left_to_git(repo: Path) -> None:
    git(repo, "init", "-q", "--bare", "inner.git")
    for where in (repo / "inner.git", repo / "inner.git" / "refs"):
        assert rev_parse(where) is None  # git: a bare repository, no work tree
        assert found(where) is None


@pytest.mark.parametrize("line", ["[core] worktree = /elsewhere\n", "[core] bare = true\n"])
def test_a_setting_on_its_section_header_line_is_read(repo: Path, line: str) -> None:
    with open(repo / ".git" / "config", "a", encoding="utf-8") as handle:
        handle.write(line)
    assert found(repo) is None


def test_a_linked_work_tree_whose_git_dir_is_anothers_is_left_to_git(
    repo: Path, tmp_path: Path
) -> None:
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "--detach", str(linked))
    assert found(linked) is not None
    own = repo / ".git" / "worktrees" / "linked"
    try:
        os.chown(own, os.geteuid() + 1234, -1)
    except PermissionError:
        pytest.skip("only root can give a folder to another user")
    assert found(linked) is None  # git's safe.directory rule decides (it says "dubious")


def test_a_git_dir_git_would_not_accept_is_left_to_git(repo: Path) -> None:
    head = repo / ".git" / "HEAD"
    good = head.read_text()
    head.write_text("not a ref\n")
    assert found(repo) is None
    head.write_text(good)
    (repo / ".git" / "config").write_text("[core]\n\trepositoryformatversion = 1\n")
    assert found(repo) is None


def test_a_gitfile_git_would_refuse_is_left_to_git(repo: Path, tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "--detach", str(linked))
    text = (linked / ".git").read_text()
    (linked / ".git").write_text(text.replace("gitdir: ", "gitdir:  "))
    assert found(linked) is None
