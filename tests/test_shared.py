"""The shared state on the remote: three clones of one bare repository play three hosts."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from paradev import git as git_mod
from paradev import shared
from paradev.errors import GitError, StateError
from paradev.git import Git
from paradev.shared import (
    STATE_REF,
    SharedState,
    SharedStateStore,
    describe,
    replay,
)
from paradev.state import State, StateStore
from tests.conftest import HOSTS
from tests.helpers import git

JOURNAL = {
    "id": "t1",
    "base": "main",
    "status": "running",
    "queue": [1],
    "landed": [],
    "skipped": [],
    "agents": {},
    "gate": False,
    "push": False,
}


def shared_state(clone: Path, host: str) -> SharedState:
    return SharedState(Git(clone), "origin", host)


def shared_store(clone: Path, host: str) -> SharedStateStore:
    return SharedStateStore(clone / ".git", shared_state(clone, host))


def remote_state(origin: Path) -> Any:
    return json.loads(git(origin, "cat-file", "blob", f"{STATE_REF}:state.json"))


def history(origin: Path) -> list[str]:
    """The state ref's commits, newest first (first parents: the audit log is a line)."""
    return git(origin, "rev-list", "--first-parent", STATE_REF).split()


# -- the store ---


def test_first_write_creates_the_ref_and_later_writes_stack_on_it(hosts: dict[str, Path]) -> None:
    laptop, box = shared_state(hosts["laptop"], "laptop"), shared_state(hosts["box"], "box")
    assert laptop.fetch() == (None, None)

    first = laptop.change(lambda s: {**s, "merge_order": [1]}, "merge_order")
    second = box.change(lambda s: {**s, "merge_order": [*s["merge_order"], 2]}, "merge_order")

    origin = hosts["laptop"].parent.parent / "origin.git"
    assert first == {"merge_order": [1]}
    assert second == remote_state(origin) == {"merge_order": [1, 2]}
    commits = history(origin)
    assert len(commits) == 2
    assert git(origin, "rev-parse", f"{commits[0]}^") == commits[1]  # on top, never forced
    assert git(origin, "log", "-1", "--format=%an|%B", STATE_REF).startswith(
        "paradev on box|paradev: merge_order"
    )
    # the writer's tracking ref follows its own push, the other clone is untouched
    assert git(hosts["box"], "rev-parse", shared.TRACKING_REF) == commits[0]


def test_an_edit_that_changes_nothing_pushes_nothing(hosts: dict[str, Path], origin: Path) -> None:
    laptop = shared_state(hosts["laptop"], "laptop")
    laptop.change(lambda s: {"merge_order": [1]}, "merge_order")
    laptop.change(lambda s: s, "nothing")
    assert len(history(origin)) == 1


def test_a_rejected_push_reapplies_the_same_change_and_loses_nothing(
    hosts: dict[str, Path], origin: Path, mocker: MockerFixture
) -> None:
    """Another host pushes between our read and our push: ours is refused, then replayed."""
    laptop, box = shared_state(hosts["laptop"], "laptop"), shared_state(hosts["box"], "box")
    laptop.change(lambda s: {"merge_history": [{"by": "laptop"}]}, "start")
    real_push = git_mod.push_swap
    pushes: list[Any] = []

    def box_pushes_first(*args: Any) -> Any:
        if args[0] is not laptop.git:
            return real_push(*args)
        if not pushes:  # the race: box's change lands while laptop's is in flight
            box.change(
                lambda s: {**s, "merge_history": [*s["merge_history"], {"by": "box"}]}, "box"
            )
        pushes.append(result := real_push(*args))
        return result

    mocker.patch.object(shared, "push_swap", side_effect=box_pushes_first)
    laptop.change(
        lambda s: {**s, "merge_history": [*s["merge_history"], {"by": "laptop 2"}]}, "second"
    )

    assert [p is None for p in pushes] == [False, True]  # refused once, then accepted
    assert remote_state(origin)["merge_history"] == [
        {"by": "laptop"},
        {"by": "box"},
        {"by": "laptop 2"},
    ]


def test_bounded_retries_end_in_a_clear_error_with_nothing_recorded(
    hosts: dict[str, Path], origin: Path, mocker: MockerFixture
) -> None:
    laptop, box = shared_state(hosts["laptop"], "laptop"), shared_state(hosts["box"], "box")
    laptop.tries = 3
    laptop.change(lambda s: {"merge_order": [1]}, "start")
    real_push = git_mod.push_swap
    counter = iter(range(100))

    def box_always_first(*args: Any) -> Any:
        if args[0] is not laptop.git:
            return real_push(*args)
        box.change(lambda s: {**s, "merge_order": [next(counter)]}, "box")
        return real_push(*args)

    mocker.patch.object(shared, "push_swap", side_effect=box_always_first)
    with pytest.raises(StateError, match=r"each of 3 tries to record laptop.*nothing was recorded"):
        laptop.change(lambda s: {**s, "merge_order_from": {"laptop": True}}, "laptop")
    assert "merge_order_from" not in remote_state(origin)
    assert len(history(origin)) == 4  # the first write and box's three


def test_a_corrupt_remote_state_is_one_clear_error(hosts: dict[str, Path], origin: Path) -> None:
    clone = Git(hosts["laptop"])
    bad = git_mod.commit_files(clone, {"state.json": "{not json"}, "broken by hand")
    assert git_mod.push_swap(clone, "origin", STATE_REF, bad, None) is None
    with pytest.raises(StateError, match=r"refs/paradev/state on origin .* is corrupt"):
        shared_state(hosts["box"], "box").fetch()


def test_a_remote_that_cannot_be_reached_is_a_git_error(hosts: dict[str, Path]) -> None:
    git(hosts["laptop"], "remote", "set-url", "origin", str(hosts["laptop"].parent / "gone.git"))
    with pytest.raises(GitError, match="git fetch origin"):
        shared_state(hosts["laptop"], "laptop").fetch()


# -- replaying one write's change on a newer state ---


def test_replay_keeps_what_the_other_writer_changed() -> None:
    before = {"tasks": {"1": {"status": "planned"}, "2": {"status": "planned"}}, "order": [1]}
    after = {"tasks": {"1": {"status": "completed"}, "2": {"status": "planned"}}, "order": [1, 3]}
    theirs = {
        "tasks": {"1": {"status": "planned"}, "2": {"status": "merged"}, "4": {"status": "x"}},
        "order": [1, 2],
    }
    assert replay(before, after, theirs) == {
        "tasks": {"1": {"status": "completed"}, "2": {"status": "merged"}, "4": {"status": "x"}},
        "order": [1, 2, 3],  # a list that only grew gets the same items appended
    }


def test_replay_removes_what_this_writer_removed_and_sets_what_it_replaced() -> None:
    before = {"train": {"step": 1}, "order": [1, 2]}
    after = {"order": [2]}
    assert replay(before, after, {"train": {"step": 2}, "order": [1, 2, 5]}) == {"order": [2]}
    assert replay(before, before, {"other": 1}) == {"other": 1}


def test_describe_names_the_changed_records() -> None:
    before = {"tasks": {"11": 1, "12": 1}, "updated_at": "a", "merge_order": []}
    after = {"tasks": {"11": 2, "12": 1, "13": 1}, "updated_at": "b", "merge_order": [1]}
    assert describe(before, after) == "merge_order; tasks 11, 13"
    assert describe(before, before) == "state"


# -- the store as paradev uses it: the local file is a cache ---


def test_store_writes_go_to_the_remote_and_refresh_the_cache(
    hosts: dict[str, Path], origin: Path
) -> None:
    laptop, box = shared_store(hosts["laptop"], "laptop"), shared_store(hosts["box"], "box")
    with laptop.update() as state:
        state.task(11, 1).status = "in_progress"
    with box.update() as state:
        assert state.tasks[11].status == "in_progress"  # update fetched laptop's write
        state.task(12, 2).status = "completed"

    assert set(remote_state(origin)["tasks"]) == {"11", "12"}
    assert set(box.read().tasks) == {11, 12}
    # laptop's cache is read without the network: it still holds its own write only
    assert set(laptop.read().tasks) == {11}
    assert laptop.pull() is not None
    assert set(laptop.read().tasks) == {11, 12}


def test_a_stale_cache_write_replays_only_its_change(hosts: dict[str, Path], origin: Path) -> None:
    """A write made on an old cache (no pull first) never undoes another host's records."""
    laptop, box = shared_store(hosts["laptop"], "laptop"), shared_store(hosts["box"], "box")
    with laptop.update() as state:
        state.task(11, 1).status = "in_progress"
    with box.update() as state:
        state.task(11, 1).status = "completed"
    with laptop.locked():  # the write path that reads the cache under the lock, then writes
        state = laptop.read()
        state.task(12, 2).status = "assigned"
        laptop.write(state)
    tasks = remote_state(origin)["tasks"]
    assert (tasks["11"]["status"], tasks["12"]["status"]) == ("completed", "assigned")
    assert laptop.read().tasks[11].status == "completed"  # the cache holds the merged state


def test_the_first_shared_write_keeps_the_local_state(hosts: dict[str, Path], origin: Path) -> None:
    """Turning hosts on: the first host's local records seed the shared state."""
    local = StateStore(hosts["laptop"] / ".git")
    with local.update() as state:
        state.task(11, 1).status = "completed"
    store = shared_store(hosts["laptop"], "laptop")
    with store.update() as state:
        state.task(12, 2).status = "assigned"
    assert set(remote_state(origin)["tasks"]) == {"11", "12"}


def test_the_merge_journal_is_part_of_the_shared_state(
    hosts: dict[str, Path], origin: Path
) -> None:
    laptop = shared_store(hosts["laptop"], "laptop")
    laptop.save_journal(JOURNAL)
    assert remote_state(origin)["train"] == JOURNAL
    pulled = shared_store(hosts["box"], "box").pull()
    assert pulled is not None
    assert pulled.train == laptop.read().train == JOURNAL
    assert StateStore(hosts["box"] / ".git").read().train == JOURNAL  # box's cache has it


def test_an_invalid_state_never_reaches_the_remote(hosts: dict[str, Path], origin: Path) -> None:
    laptop = shared_store(hosts["laptop"], "laptop")
    laptop.save_journal(JOURNAL)
    with pytest.raises(StateError, match=r"refs/paradev/state on origin is corrupt \(train.id"):
        laptop.save_journal({"base": "main"})
    assert remote_state(origin)["train"] == JOURNAL
    assert len(history(origin)) == 1


# -- real processes: three hosts, ten writers each ---

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from paradev.git import Git
    from paradev.shared import SharedState, SharedStateStore

    host, issue = sys.argv[1], int(sys.argv[2])
    store = SharedStateStore(Path(".git"), SharedState(Git(Path(".")), "origin", host))
    with store.update() as state:
        state.task(issue, 1).status = "completed"
        state.merge_history.append({"issue": issue, "host": host})
    """
)


def test_three_hosts_with_ten_concurrent_writers_each_lose_no_update(
    hosts: dict[str, Path], origin: Path
) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, host, str(100 * n + i)],
            cwd=hosts[host],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(10)
        for n, host in enumerate(HOSTS, start=1)
    ]
    errors = [w.communicate(timeout=300)[1] for w in writers]
    assert [w.returncode for w in writers] == [0] * 30, errors

    expected = {100 * n + i for i in range(10) for n in range(1, 4)}
    state = remote_state(origin)
    assert {int(k) for k in state["tasks"]} == expected
    assert sorted(e["issue"] for e in state["merge_history"]) == sorted(expected)
    assert len(history(origin)) == 30  # one commit per write: the audit log is complete
    for host, clone in hosts.items():  # each cache holds at least its own host's writes
        cached = StateStore(clone / ".git").read()
        n = HOSTS.index(host) + 1
        assert {100 * n + i for i in range(10)} <= set(cached.tasks)


COUNTER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from paradev.git import Git
    from paradev.shared import SharedState

    shared = SharedState(Git(Path(".")), "origin", sys.argv[1], tries=200)
    for _ in range(int(sys.argv[2])):
        shared.change(lambda s: {**s, "count": s.get("count", 0) + 1}, "count")
    """
)


def test_racing_compare_and_swap_writers_apply_every_increment(
    hosts: dict[str, Path], origin: Path
) -> None:
    """No lock at all, only the compare-and-swap: a read-modify-write counter loses nothing."""
    clones = [*hosts.items()]  # a second clone per host: SharedState alone takes no lock
    for host in HOSTS:
        git(hosts[host].parent, "clone", "-q", str(origin), "second")
        clones.append((host, hosts[host].parent / "second"))
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", COUNTER, host, "3"],
            cwd=clone,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host, clone in clones
    ]
    errors = [w.communicate(timeout=300)[1] for w in writers]
    assert [w.returncode for w in writers] == [0] * 6, errors
    assert remote_state(origin)["count"] == 18
    assert len(history(origin)) == 18


def test_refs_only_move_forward_on_a_strict_server(hosts: dict[str, Path], origin: Path) -> None:
    """Every state write is a fast-forward: the server's reflog shows each old value kept."""
    git(origin, "config", "core.logAllRefUpdates", "always")
    laptop = shared_store(hosts["laptop"], "laptop")
    for issue in range(1, 5):
        with laptop.update() as state:
            state.task(issue, 1).status = "assigned"
    with laptop.update() as state:
        state.tasks.clear()  # a write that removes records is still a commit on top
    moves = git(origin, "reflog", "show", "--format=%H", STATE_REF).split()
    assert len(moves) == 5
    for newer, older in itertools.pairwise(moves):
        git(origin, "merge-base", "--is-ancestor", older, newer)  # raises if not forward
    assert remote_state(origin)["tasks"] == {}
    assert State.from_json(remote_state(origin)).tasks == {}
