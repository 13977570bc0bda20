"""Checks on what a landing holds, on real repositories: markers, missing work, trailers."""

from __future__ import annotations

from pathlib import Path

import pytest

from paradev.git import Git
from paradev.train import landing
from tests.helpers import commit, git, rev


@pytest.mark.parametrize(
    ("lines", "block"),
    [
        (["<<<<<<< HEAD", "a", "=======", "b", ">>>>>>> 1234 msg"], True),
        (["<<<<<<<", "=======", ">>>>>>>"], True),
        (["Title", "=======", "text  "], False),
        ([">>>>>>> x", "=======", "<<<<<<< y"], False),
        (["<<<<<<< HEAD", "a", ">>>>>>> x"], False),
        (["<<<<<<<< not a marker", "=======", ">>>>>>> x"], False),
    ],
)
def test_has_marker_block(lines: list[str], block: bool) -> None:
    assert landing.has_marker_block(lines) is block


def test_files_with_markers_reads_only_added_lines(repo: Path) -> None:
    base = commit(repo, {"old.txt": "<<<<<<< a\n=======\n>>>>>>> b\n"}, "markers already there")
    head = commit(
        repo,
        {
            "old.txt": "<<<<<<< a\n=======\n>>>>>>> b\nmore\n",
            "new.py": "<<<<<<< HEAD\n=======\n>>>>>>> x\n",
        },
        "adds markers",
    )
    assert landing.files_with_markers(Git(repo), base, head) == ["new.py"]


def test_missing_work_names_the_lost_paths_and_commits(repo: Path) -> None:
    fork = rev(repo, "HEAD")
    git(repo, "checkout", "-q", "-b", "agent")
    added = commit(repo, {"a.py": "a\n"}, "add a")
    commit(repo, {"b.py": "b\n"}, "add b")
    work = commit(repo, {"a.py": "a2\n"}, "change a")
    git(repo, "checkout", "-q", "main")
    commit(repo, {"base.py": "x\n"}, "base moves")
    base = rev(repo, "HEAD")
    git(repo, "checkout", "-q", "-b", "landing")
    git(repo, "cherry-pick", f"{fork}..{work}")
    complete = rev(repo, "HEAD")
    git(repo, "reset", "-q", "--hard", base)
    git(repo, "cherry-pick", added, work)  # "add b" lost on the way
    partial = rev(repo, "HEAD")
    g = Git(repo)

    assert landing.missing_work(g, base, complete, work) is None
    missing = landing.missing_work(g, base, partial, work)
    assert missing is not None
    assert missing.paths == ["b.py"]
    assert [line.split(" ", 1)[1] for line in missing.commits] == ["add b"]
    assert landing.missing_work(g, base, partial, work, resolved=["b.py"]) is None


def test_issue_trailers_are_added_once_and_identically(repo: Path) -> None:
    base = rev(repo, "HEAD")
    first = commit(repo, {"a.py": "a\n"}, "feat: a")
    second = commit(repo, {"b.py": "b\n"}, "feat: b\n\nParadev-Issue: 7")
    g = Git(repo)

    once = landing.with_issue_trailers(g, base, [first, second], [[3], [7]])
    again = landing.with_issue_trailers(g, base, [first, second], [[3], [7]])

    assert once == again
    values = git(repo, "log", "--format=%(trailers:key=Paradev-Issue,valueonly)", f"{base}..{once}")
    assert values.split() == ["7", "3"]
    assert rev(repo, f"{once}^{{tree}}") == rev(repo, f"{second}^{{tree}}")
    redone = landing.with_issue_trailers(g, base, [once + "~1", once], [[3], [7]])
    assert redone == once  # commits that already carry them are kept
