"""Tasks that git shows landed (a Paradev-Issue trailer on base), and the cache of them."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_mock import MockerFixture

from paradev.git import ref_stamp
from paradev.landed import LANDED_CACHE, LandedTasks
from paradev.state import MERGED, State, TaskRecord
from paradev.workspace import open_workspace
from tests.helpers import commit, git
from tests.helpers import rev as rev_of


def _landed(repo: Path) -> LandedTasks:
    ws = open_workspace(repo)
    assert isinstance(ws.store.recognise, LandedTasks)
    return ws.store.recognise


def test_base_moving_forward_reads_only_the_new_commits(repo: Path) -> None:
    (repo / ".git" / "paradev").mkdir()
    first = commit(repo, {"a.py": "1\n"}, "feat: a\n\nParadev-Issue: 11")
    assert set(_landed(repo).landed()) == {11}
    cache = repo / ".git" / "paradev" / LANDED_CACHE
    data = json.loads(cache.read_text())
    assert data["head"] == first
    data["issues"]["77"] = [first, "2020-01-01T00:00:00+00:00"]  # only the cache knows it
    cache.write_text(json.dumps(data))

    second = commit(repo, {"b.py": "1\n"}, "feat: b\n\nParadev-Issue: 12")

    assert _landed(repo).landed() == {
        11: (first, data["issues"]["11"][1]),
        12: (second, git(repo, "log", "-1", "--format=%cI")),
        77: (first, "2020-01-01T00:00:00+00:00"),
    }


def test_a_rewound_base_or_a_damaged_cache_reads_the_whole_history(repo: Path) -> None:
    (repo / ".git" / "paradev").mkdir()
    commit(repo, {"a.py": "1\n"}, "feat: a\n\nParadev-Issue: 11")
    commit(repo, {"b.py": "1\n"}, "feat: b\n\nParadev-Issue: 12")
    assert set(_landed(repo).landed()) == {11, 12}

    git(repo, "reset", "-q", "--hard", "HEAD~1")
    assert set(_landed(repo).landed()) == {11}

    (repo / ".git" / "paradev" / LANDED_CACHE).write_text('{"head": [1]}')
    assert set(_landed(repo).landed()) == {11}


def test_a_record_is_never_overridden_and_unknown_issues_are_ignored(repo: Path) -> None:
    landed = commit(repo, {"a.py": "1\n"}, "feat\n\nParadev-Issue: 11\nParadev-Issue: 12\n")
    commit(repo, {"b.py": "1\n"}, "fix\n\nParadev-Issue: 404")
    state = State(tasks={12: TaskRecord(issue=12, agent=2, status="in_progress")})

    _landed(repo)(state)

    assert state.tasks[11].status == MERGED and state.tasks[11].merged_commit == landed
    assert state.tasks[11].agent == 1
    assert state.tasks[12].status == "in_progress" and 404 not in state.tasks


def test_one_reader_sees_base_move_however_git_keeps_the_ref_and_asks_git_only_then(
    repo: Path, mocker: MockerFixture
) -> None:
    (repo / ".git" / "paradev").mkdir()
    landed = _landed(repo)
    commit(repo, {"a.py": "1\n"}, "feat: a\n\nParadev-Issue: 11")
    assert set(landed.landed()) == {11}
    rev = mocker.spy(landed.git, "rev")
    assert set(landed.landed()) == {11}  # base did not move: no git process
    assert rev.call_count == 0

    commit(repo, {"b.py": "1\n"}, "feat: b\n\nParadev-Issue: 12")  # a loose ref moved
    assert set(landed.landed()) == {11, 12}
    git(repo, "pack-refs", "--all")  # the ref now lives in packed-refs alone
    assert set(landed.landed()) == {11, 12}
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    git(repo, "pack-refs", "--all")  # moved while packed
    assert set(landed.landed()) == {11}
    git(repo, "update-ref", "refs/heads/main", rev_of(repo, "HEAD@{1}"))
    assert set(landed.landed()) == {11, 12}


def test_a_ref_stamp_changes_with_the_ref_and_refuses_a_name_outside_refs(repo: Path) -> None:
    common = repo / ".git"
    before = ref_stamp(common, "refs/heads/main")
    assert before is not None and before == ref_stamp(common, "refs/heads/main")
    commit(repo, {"a.py": "1\n"}, "feat: a")
    assert ref_stamp(common, "refs/heads/main") != before
    assert ref_stamp(common, "HEAD") is None
    assert ref_stamp(common, "refs/../../etc/passwd") is None
    assert ref_stamp(common, "refs/heads/none-such") is None  # no file holds it


def test_base_moving_is_read_from_its_ref_files_with_no_rev_parse(
    repo: Path, mocker: MockerFixture
) -> None:
    """Each landing moves base: its new commit comes from the loose ref file or packed-refs
    (both read by paradev), git asked only for what those cannot say."""
    (repo / ".git" / "paradev").mkdir()
    landed = _landed(repo)
    commit(repo, {"a.py": "1\n"}, "feat: a\n\nParadev-Issue: 11")
    rev = mocker.spy(landed.git, "rev")
    assert set(landed.landed()) == {11}
    commit(repo, {"b.py": "1\n"}, "feat: b\n\nParadev-Issue: 12")
    assert set(landed.landed()) == {11, 12}
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    git(repo, "pack-refs", "--all")  # moved, and now in packed-refs alone
    assert set(landed.landed()) == {11}
    assert rev.call_count == 0
    git(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    assert landed._tip_from_files("refs/heads/alias") is None  # symbolic: git answers
