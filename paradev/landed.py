"""What git says landed: tasks whose ``Paradev-Issue`` trailer is on base.

The train writes ``Paradev-Issue: N`` into what it lands, so after a reset
(or a lost state) the plan's tasks with no record but a trailer on base are
known to be merged: run-batch, status and merge never run them again, and the
next write of the state records them. A task with a record keeps it.

Reading base's whole history costs about 0.17 s per 20,000 commits, so what
was found is cached in ``<common>/paradev/landed.json`` by base commit and
extended with only the new commits when base moves forward.
"""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path

from paradev.atomic import write_atomic
from paradev.git import Git, is_ancestor, landed_issues, ref_stamp, refs_from_files
from paradev.plan import Plan
from paradev.state import MERGED, State, TaskRecord

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

LANDED_CACHE = "landed.json"

Landed = dict[int, tuple[str, str]]  # issue -> (commit, committer date)


class LandedTasks:
    """A ``StateStore.recognise`` hook: marks landed tasks without a record as merged."""

    def __init__(self, git: Git, plan: Plan, cache: Path) -> None:
        self.git, self.plan, self.cache = git, plan, cache
        self._memo: tuple[str, Landed] | None = None
        self.base_tip: str | None = None  # base's commit when the caller just read it (status)
        self._stamp: object = None  # ref_stamp of base when _memo was taken

    def __call__(self, state: State) -> None:
        unknown = [t for t in self.plan.tasks() if t.issue not in state.tasks]
        if not unknown:
            return
        landed = self.landed()
        for task in unknown:
            if task.issue in landed:
                commit, date = landed[task.issue]
                state.tasks[task.issue] = TaskRecord(
                    issue=task.issue,
                    agent=task.agent,
                    status=MERGED,
                    merged_at=date,
                    merged_commit=commit,
                )

    def landed(self) -> Landed:
        """The issues landed on base, read once per base commit.

        Whether base moved is asked of its ref files first (``ref_stamp``): a
        train reads the state at every step, and a git process per read cost
        a tenth of its time. A caller that just read base's tip passes it, for
        the next read only: a long-lived process must not trust it later.
        """
        ref = f"refs/heads/{self.plan.base}"
        tip, self.base_tip = self.base_tip, None
        stamp = None if tip else ref_stamp(self.cache.parent.parent, ref)
        if stamp is not None and self._memo is not None and self._stamp == stamp:
            return self._memo[1]
        head = tip or self._tip_from_files(ref) or self.git.rev(ref)
        if head is None:
            return {}
        if self._memo is None or self._memo[0] != head:
            self._memo = (head, self._read_through(head))
        self._stamp = stamp
        return self._memo[1]

    def _tip_from_files(self, ref: str) -> str | None:
        """Base's commit from its ref file or ``packed-refs``, with no git process (None: ask
        git): read at every landing, in the run and in its train alike."""
        found = refs_from_files(self.cache.parent.parent, [ref])
        return None if found is None else found.get(ref)

    def _read_through(self, head: str) -> Landed:
        cached_head, found = _load(self.cache)
        if cached_head == head:
            return found
        if cached_head and is_ancestor(self.git, cached_head, head):
            found = {**found, **landed_issues(self.git, f"{cached_head}..{head}")}  # newer wins
        else:  # first time, or base was rewound: the whole history
            found = landed_issues(self.git, head)
        _save(self.cache, head, found)
        return found


def base_just_read(recognise: object, tip: str | None) -> None:
    """Hand base's tip, just read by the caller, to the state's next landed read: one git
    process less (``recognise``: a ``StateStore.recognise`` hook, this one or another)."""
    if isinstance(recognise, LandedTasks):
        recognise.base_tip = tip


def _load(path: Path) -> tuple[str | None, Landed]:
    """The cache as written, or nothing when it is missing or not of our making."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        found = {int(k): (str(v[0]), str(v[1])) for k, v in data["issues"].items()}
        return str(data["head"]), found
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None, {}


def _save(path: Path, head: str, found: Landed) -> None:
    """Replace the cache by rename; a cache that cannot be written is simply not kept."""
    data = {"head": head, "issues": {str(k): list(v) for k, v in found.items()}}
    with suppress(OSError):
        write_atomic(path, json.dumps(data), durable=False)
