"""Checks on what a landing holds, on real repositories: markers, missing work, trailers."""

from __future__ import annotations

from pathlib import Path

import pytest

from paradev import git as gitmod
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


def test_work_the_landing_holds_with_more_around_it_is_not_missing(repo: Path) -> None:
    """An agent handed a conflict back adds next to its own lines: nothing of its work is lost."""
    write_base = commit(repo, {"CHANGES.md": "# History\n\n## 1.0\n", "a.py": "a = 1\n"}, "base")
    git(repo, "checkout", "-q", "-b", "agent")
    work = commit(repo, {"CHANGES.md": "## Unreleased\n\n* fix\n\n# History\n\n## 1.0\n"}, "log")
    git(repo, "checkout", "-q", "main")
    base = commit(repo, {"a.py": "a = 2\n"}, "base moves")
    twice = "## Unreleased\n\n* fix\n\n## Unreleased\n\n* fix\n\n# History\n\n## 1.0\n"
    held = commit(repo, {"CHANGES.md": twice}, "the work, then the same entry again")
    rewritten = commit(
        repo, {"CHANGES.md": "## Unreleased\n\n* a fix\n\n# History\n\n## 1.0\n"}, "x"
    )
    g = Git(repo)

    assert landing.missing_work(g, base, held, work) is None
    lost = landing.missing_work(g, base, rewritten, work)  # its line changed: still called lost
    assert lost is not None and lost.paths == ["CHANGES.md"]
    assert landing.missing_range_work(g, held, work, write_base) is None
    assert landing.missing_range_work(g, rewritten, work, write_base) is not None
    assert set(gitmod.changes_held(g, write_base, work, held, ["CHANGES.md"])) == {"CHANGES.md"}
