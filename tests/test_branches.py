"""``find_heads_kept``: ``check`` reads the heads without git while no ref file was written, and
never answers from a kept copy after a ref moved."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest.mock import MagicMock

import pytest
from pytest_mock import MockerFixture

from paradev import git as gitmod
from paradev import kept
from paradev.branches import Heads, find_heads
from paradev.claims import HEADS_FILE, find_heads_kept
from paradev.workspace import open_workspace
from tests.helpers import agent_tree, commit, git

SHORT_MARGIN_NS = 50_000_000


@pytest.fixture
def asked(
    set_up: Path, monkeypatch: pytest.MonkeyPatch, mocker: MockerFixture
) -> Iterator[MagicMock]:
    """Every ``for-each-ref`` heads read (a spy: git still answers); a short racy margin."""
    monkeypatch.setattr(kept, "RACY_MARGIN_NS", SHORT_MARGIN_NS)
    yield mocker.spy(gitmod, "resolve_refs_of_plain_history")


def _settle() -> None:
    time.sleep(SHORT_MARGIN_NS / 1e9 * 2)


def _fields(heads: Heads) -> tuple[object, ...]:
    return heads.base, heads.base_ref, heads.base_commit, heads.heads, heads.plain


def _kept_matches_git(asked: MagicMock) -> int:
    """The kept heads equal what git says now; how many times git was asked for them."""
    ws = open_workspace()
    asked.reset_mock()
    kept = _fields(find_heads_kept(ws))
    count = asked.call_count
    assert kept == _fields(find_heads(ws))
    return count


def _commit_on_agent(set_up: Path, repo: Path) -> None:
    commit(agent_tree(set_up, 2), {"src/two.py": "2\n"})


def _commit_on_base(set_up: Path, repo: Path) -> None:
    commit(repo, {"src/base.py": "b\n"})


def _nothing(set_up: Path, repo: Path) -> None:
    pass


def _pack(set_up: Path, repo: Path) -> None:
    git(repo, "worktree", "remove", "--force", str(agent_tree(set_up, 3)))
    git(repo, "pack-refs", "--all")


def _delete_packed_branch(set_up: Path, repo: Path) -> None:
    git(repo, "branch", "-q", "-D", "parallel-dev/agent-3")  # rewrites packed-refs alone


def _replace_ref(set_up: Path, repo: Path) -> None:
    git(repo, "replace", git(repo, "rev-parse", "main"), "parallel-dev/agent-2")


Move = Callable[[Path, Path], None]

# name -> (made before the heads are kept, the move)
MOVES: dict[str, tuple[Move, Move]] = {
    "agent commit": (_nothing, _commit_on_agent),
    "base commit": (_nothing, _commit_on_base),
    "packed branch deleted": (_pack, _delete_packed_branch),
    "replace ref": (_commit_on_agent, _replace_ref),
}


@pytest.mark.parametrize("move", list(MOVES))
def test_kept_heads_follow_every_ref_move(
    set_up: Path, repo: Path, asked: MagicMock, move: str
) -> None:
    prepare, moving = MOVES[move]
    prepare(set_up, repo)
    _settle()
    assert _kept_matches_git(asked) == 1
    assert _kept_matches_git(asked) == 0  # kept
    before = _fields(find_heads(open_workspace()))

    moving(set_up, repo)
    _settle()

    assert _fields(find_heads(open_workspace())) != before, "the move must change the heads"
    assert _kept_matches_git(asked) == 1
    assert _kept_matches_git(asked) == 0


def test_a_ref_written_moments_ago_is_always_read_from_git(
    set_up: Path, mocker: MockerFixture
) -> None:
    spy = mocker.spy(gitmod, "resolve_refs_of_plain_history")
    _commit_on_agent(set_up, set_up)  # the real 2 s margin
    assert _kept_matches_git(spy) == 1
    assert _kept_matches_git(spy) == 1


@pytest.mark.parametrize("content", [b"", b"{}", b"[1, 2, 3, 4, 5, 6]", b'["k", 1, 2, 3, [], 5]'])
def test_a_corrupt_heads_file_is_rebuilt(
    set_up: Path, repo: Path, asked: MagicMock, content: bytes
) -> None:
    _settle()
    (repo / ".git" / "paradev" / HEADS_FILE).write_bytes(content)
    assert _kept_matches_git(asked) == 1
    assert _kept_matches_git(asked) == 0
