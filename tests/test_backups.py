"""Backups: how they are dated, listed and pruned (the cleanup command drives them too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from paradev import backups
from paradev.errors import PreconditionError
from paradev.git import Git
from paradev.state import StateStore
from tests.helpers import git
from tests.test_state import journal

OLD = "20200101T000000000000Z"


def test_prune_keeps_the_backups_of_a_train_in_progress(repo: Path) -> None:
    store = StateStore(repo / ".git")
    with store.update() as state:
        state.train = {**journal(), "id": OLD}
    live = f"refs/paradev/backup/parallel-dev/agent-1/{OLD}"
    done = "refs/paradev/backup/parallel-dev/agent-2/20190101T000000000000Z"
    for ref in (live, done):
        git(repo, "update-ref", ref, "main")

    removed, kept = backups.prune_backups(Git(repo), store, 1)

    assert [b.name for b in removed] == [done] and [b.name for b in kept] == [live]
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/paradev/backup") == live


def test_a_ref_without_a_stamp_is_dated_by_its_commit(repo: Path) -> None:
    git(repo, "update-ref", "refs/paradev/backup/hand-made", "main")
    when = int(git(repo, "log", "-1", "--format=%ct", "main"))

    [found] = backups.list_backups(Git(repo), StateStore(repo / ".git"))

    assert found.kind == "ref" and int(found.made.timestamp()) == when


def test_prune_refuses_a_negative_or_nan_age(repo: Path) -> None:
    for days in (-1.0, float("nan"), float("inf")):
        with pytest.raises(PreconditionError, match="give a number of days from 0 to 36500"):
            backups.prune_backups(Git(repo), StateStore(repo / ".git"), days)


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KB"), (100 * 1024**2, "100.0 MB")]
)
def test_human_size(size: int, text: str) -> None:
    assert backups.human_size(size) == text
