"""Lease refs on a strict remote, seen from three clones (hosts) with their own clocks."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from paradev.git import Git, commit_files, push_swap
from paradev.lease import LOCK_PREFIX, TRAIN, Lease, LeaseHeld, LeaseLost, refused_for_lease
from paradev.processes import kernel_id, start_time
from tests.conftest import HOSTS
from tests.helpers import git

REF = LOCK_PREFIX + TRAIN
EXPIRY = 300.0


class Clock:
    """One host's monotonic clock: its own origin, moved by the test."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def lease(clone: Path, holder: str, clock: Clock | None = None) -> Lease:
    return Lease(
        Git(clone), "origin", TRAIN, holder, clone / ".git" / "paradev" / "leases", EXPIRY, clock
    )


def on_server(origin: Path) -> dict[str, Any]:
    return dict(json.loads(git(origin, "cat-file", "blob", f"{REF}:lease.json")))


def test_one_holder_at_a_time_and_release_frees_it(hosts: dict[str, Path], origin: Path) -> None:
    laptop, box = lease(hosts["laptop"], "laptop"), lease(hosts["box"], "box")
    assert laptop.acquire()
    assert on_server(origin) == {"holder": "laptop", "state": "held"}
    assert not box.acquire()
    assert box.last.holder == "laptop"
    laptop.release()
    assert on_server(origin) == {"holder": "laptop", "state": "free"}
    assert box.acquire()
    assert on_server(origin)["holder"] == "box"


def test_refs_only_move_forward_on_a_server_refusing_rewinds_and_deletions(
    hosts: dict[str, Path], origin: Path
) -> None:
    git(origin, "config", "core.logAllRefUpdates", "always")
    laptop, box = lease(hosts["laptop"], "laptop"), lease(hosts["box"], "box")
    assert laptop.acquire()
    laptop.renew()
    laptop.release()
    assert box.acquire()
    box.release()
    moves = git(origin, "reflog", "show", "--format=%H", REF).split()
    assert len(moves) == 5
    for newer, older in itertools.pairwise(moves):
        git(origin, "merge-base", "--is-ancestor", older, newer)  # raises if not forward
    assert git(origin, "config", "receive.denyDeletes") == "true"


def test_hosts_with_clocks_ten_minutes_apart_agree_on_expiry(
    hosts: dict[str, Path], origin: Path
) -> None:
    """Wall clocks 10 minutes apart (the commit dates) and unrelated monotonic clocks:
    every observer counts ``expiry`` seconds of no change on its own clock."""
    clocks = {"laptop": Clock(50.0), "box": Clock(90_000.0), "tower": Clock(7.5)}
    leases = {host: lease(hosts[host], host, clocks[host]) for host in HOSTS}
    skew = {"laptop": 600, "box": -600, "tower": 0}  # seconds off the true time

    def as_host(host: str) -> Any:
        """The host's wall clock, as git stamps its commits."""
        date = f"@{int(time.time()) + skew[host]} +0000"
        return mock.patch.dict(os.environ, {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date})

    def tick(seconds: float) -> None:
        for clock in clocks.values():
            clock.now += seconds

    def expired_for(host: str) -> bool:
        with as_host(host):
            return leases[host].expired(leases[host].observe())

    with as_host("laptop"):
        assert leases["laptop"].acquire()  # dated 10 minutes in the future
    assert [expired_for(h) for h in ("box", "tower")] == [False, False]
    tick(EXPIRY - 1)
    assert [expired_for(h) for h in ("box", "tower")] == [False, False]
    with as_host("laptop"):
        leases["laptop"].renew()  # a new value restarts every observer's count
    tick(2)
    assert [expired_for(h) for h in ("box", "tower")] == [False, False]
    tick(EXPIRY - 1)
    assert [expired_for(h) for h in ("box", "tower")] == [False, False]
    tick(2)  # the holder stopped renewing: both observers agree it expired
    assert [expired_for(h) for h in ("box", "tower")] == [True, True]

    with as_host("box"):
        assert leases["box"].acquire()
    assert on_server(origin)["holder"] == "box"
    with as_host("tower"):
        assert not leases["tower"].acquire()  # box's take is a new value: not expired
    with pytest.raises(LeaseLost, match="no longer held by laptop"):
        leases["laptop"].renew()
    assert on_server(origin)["holder"] == "box"


# One host's process: ``hold`` the lease (renewed until killed), or look whether it ``expired``,
# or ``acquire`` it; each with the host's own wall clock (its commits' dates).
HOST_PROCESS = """
import sys, time
from pathlib import Path
from paradev.git import Git
from paradev.lease import TRAIN, Lease
host, action, expiry = sys.argv[1], sys.argv[2], float(sys.argv[3])
lease = Lease(Git(Path(".")), "origin", TRAIN, host, Path(".git/paradev/leases"), expiry)
if action == "hold":
    with lease.held(renew_every=expiry / 10):
        print("held", flush=True)
        time.sleep(600)
print(lease.expired_now() if action == "expired" else lease.acquire())
"""
SKEW = {"laptop": 600, "box": -600, "tower": 0}  # each host's wall clock, seconds off


def as_host(clone: Path, host: str, action: str, expiry: float) -> subprocess.Popen[str]:
    date = f"@{int(time.time()) + SKEW[host]} +0000"
    return subprocess.Popen(
        [sys.executable, "-c", HOST_PROCESS, host, action, str(expiry)],
        cwd=clone,
        env={**os.environ, "GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_host_processes_with_clocks_ten_minutes_apart_agree_on_expiry(
    hosts: dict[str, Path], origin: Path
) -> None:
    """Real processes, real clocks: laptop's holder, dated 10 minutes ahead, renews until it
    is SIGKILLed; box (10 minutes behind) and tower see it alive until it has stood still
    for the expiry on their own monotonic clocks, then both see it expired."""
    expiry = 3.0

    def answers(action: str, *looking: str) -> list[str]:
        procs = [as_host(hosts[h], h, action, expiry) for h in looking]
        return [p.communicate(timeout=60)[0].strip() for p in procs]

    holder = as_host(hosts["laptop"], "laptop", "hold", expiry)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        alive_until = time.monotonic() + expiry * 1.5
        looks = 0
        while time.monotonic() < alive_until or looks < 2:
            assert answers("expired", "box", "tower") == ["False", "False"]
            looks += 1
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate()
    assert on_server(origin) == {"holder": "laptop", "state": "held"}  # never released
    answers("expired", "box", "tower")  # both see laptop's last renewal
    time.sleep(expiry + 0.2)
    assert answers("expired", "box", "tower") == ["True", "True"]
    assert answers("acquire", "box") == ["True"]
    assert answers("acquire", "tower") == ["False"]  # box's take is a new value
    assert on_server(origin) == {"holder": "box", "state": "held"}


def test_an_observer_that_saw_the_lease_only_now_waits_the_whole_expiry(
    hosts: dict[str, Path],
) -> None:
    """A clock of its own cannot tell how old a value is: the count starts at first sight."""
    clock = Clock(1_000.0)
    assert lease(hosts["laptop"], "laptop").acquire()
    box = lease(hosts["box"], "box", clock)
    clock.now += 10 * EXPIRY  # long after, but box never looked
    assert not box.acquire()
    clock.now += EXPIRY
    assert box.acquire()


def test_a_clock_that_went_back_starts_the_count_again(hosts: dict[str, Path]) -> None:
    """After a reboot the monotonic clock restarts: the old note must not make it expire early."""
    assert lease(hosts["laptop"], "laptop").acquire()
    box = lease(hosts["box"], "box", Clock(5_000.0))
    assert not box.acquire()
    rebooted = lease(hosts["box"], "box", Clock(10.0))
    assert not rebooted.acquire()
    rebooted.clock = Clock(10.0 + EXPIRY - 1)
    assert not rebooted.acquire()
    rebooted.clock = Clock(10.0 + EXPIRY)
    assert rebooted.acquire()


def test_held_renews_in_the_background_and_releases_at_the_end(
    hosts: dict[str, Path], origin: Path
) -> None:
    laptop = lease(hosts["laptop"], "laptop")
    with laptop.held(renew_every=0.05):
        first = git(origin, "rev-parse", REF)
        deadline = time.monotonic() + 30
        while git(origin, "rev-list", "--count", f"{first}..{REF}") < "2":
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
        box = lease(hosts["box"], "box")
        with (
            pytest.raises(LeaseHeld, match="laptop holds the lease refs/paradev/lock") as refused,
            box.held(),
        ):
            pass
        assert refused_for_lease(["paradev: some other line", f"paradev: {refused.value}"])
        assert not refused_for_lease(["paradev: agent 1 is held by another paradev"])
        laptop.check()
    assert on_server(origin) == {"holder": "laptop", "state": "free"}


def test_a_lost_lease_is_reported_and_never_released(hosts: dict[str, Path], origin: Path) -> None:
    """The holder stalled past the expiry and another host took the lease over."""
    laptop = lease(hosts["laptop"], "laptop")
    with laptop.held(renew_every=3600):
        box = lease(hosts["box"], "box", Clock(0.0))
        assert not box.acquire()
        box.clock = Clock(EXPIRY)
        assert box.acquire()
        with pytest.raises(LeaseLost, match="another host took it after it went 300s unrenewed"):
            laptop.renew()
        with pytest.raises(LeaseLost):
            laptop.check()
    assert on_server(origin) == {"holder": "box", "state": "held"}  # box's lease stands


def test_a_failing_block_still_frees_the_lease(hosts: dict[str, Path], origin: Path) -> None:
    laptop = lease(hosts["laptop"], "laptop")
    with pytest.raises(RuntimeError, match="the train stopped"), laptop.held(renew_every=3600):
        raise RuntimeError("the train stopped")
    assert on_server(origin) == {"holder": "laptop", "state": "free"}


def test_a_failing_block_reports_its_own_error_when_the_lease_was_lost(
    hosts: dict[str, Path], origin: Path
) -> None:
    """Releasing a lease another host took fails; the block's error is still the one raised."""
    laptop = lease(hosts["laptop"], "laptop")
    with pytest.raises(RuntimeError, match="the gate failed"), laptop.held(renew_every=3600):
        box = lease(hosts["box"], "box", Clock(0.0))
        assert not box.acquire()
        box.clock = Clock(EXPIRY)
        assert box.acquire()
        raise RuntimeError("the gate failed")
    assert on_server(origin) == {"holder": "box", "state": "held"}


def test_expired_now_counts_from_this_hosts_first_look(hosts: dict[str, Path]) -> None:
    """``paradev run`` looks while another host's train runs: free, held, then expired."""
    box = lease(hosts["box"], "box", Clock(1000.0))
    assert box.expired_now()  # never taken: free
    laptop = lease(hosts["laptop"], "laptop", Clock(0.0))
    assert laptop.acquire()
    assert not box.expired_now()  # first sight: box's count starts now
    box.clock = Clock(1000.0 + EXPIRY - 1)
    assert not box.expired_now()
    box.clock = Clock(1000.0 + EXPIRY)
    assert box.expired_now()
    laptop.renew()  # a renewal is a new value: the count starts again
    assert not box.expired_now()
    laptop.release()
    assert box.expired_now()


# -- a holder that died on this very host; a lease that never expires ----------------------

# A process of ``host`` holding the train lease as ``paradev merge`` does: named with its pid.
PROCESS_HOLDER = """
import os, sys, time
from pathlib import Path
from paradev.git import Git
from paradev.lease import TRAIN, Lease
host = sys.argv[1]
lease = Lease(Git(Path(".")), "origin", TRAIN, f"{host} (pid {os.getpid()})",
              Path(".git/paradev/leases"), 300.0, host=host)
with lease.held(renew_every=3600):
    print("held", flush=True)
    time.sleep(600)
"""


def process_lease(clone: Path, host: str, clock: Clock) -> Lease:
    """The train lease as this test process of ``host`` would take it (``paradev merge``)."""
    holder = f"{host} (pid {os.getpid()})"
    return Lease(
        Git(clone), "origin", TRAIN, holder, clone / ".git/paradev/leases", EXPIRY, clock, host
    )


def test_a_holder_killed_on_this_host_is_taken_back_at_once_and_a_live_one_never(
    hosts: dict[str, Path], origin: Path
) -> None:
    """No clock moves: laptop knows its own holder is dead; box (another host) must wait."""
    holder = subprocess.Popen(
        [sys.executable, "-c", PROCESS_HOLDER, "laptop"],
        cwd=hosts["laptop"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        held = on_server(origin)
        assert (held["host"], held["pid"]) == ("laptop", holder.pid)
        laptop = process_lease(hosts["laptop"], "laptop", Clock(0.0))
        box = process_lease(hosts["box"], "box", Clock(0.0))
        assert not laptop.acquire()  # a live process of this host: never taken from it
        assert not box.acquire()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate()
    assert not box.acquire()  # another host's lease: its expiry, on box's clock
    assert not box.expired_now()
    assert laptop.expired_now()
    assert laptop.acquire()  # the same instant on laptop's clock: its holder is dead
    assert on_server(origin)["holder"] == f"laptop (pid {os.getpid()})"
    assert not box.acquire()


def craft(clone: Path, body: dict[str, Any]) -> None:
    """Push a lease naming a chosen process (as a holder on some host would have)."""
    gitobj = Git(clone)
    old = git(clone, "ls-remote", "origin", REF).split()[:1]
    new = commit_files(
        gitobj, {"lease.json": json.dumps(body)}, "a holder", old[0] if old else None
    )
    assert push_swap(gitobj, "origin", REF, new, old[0] if old else None) is None


def test_only_a_gone_process_of_this_host_and_kernel_loses_its_lease_at_once(
    hosts: dict[str, Path],
) -> None:
    """A live pid with its start time is alive; the same pid with another start time is
    another process (the holder's pid reused); another kernel's pid proves nothing."""
    parent = os.getppid()  # a live process that is not this one
    started = start_time(parent)
    assert started is not None
    live = {"holder": "laptop (pid x)", "state": "held", "host": "laptop", "pid": parent}
    live.update(started=started, kernel=kernel_id())
    laptop = process_lease(hosts["laptop"], "laptop", Clock(0.0))
    craft(hosts["laptop"], live)
    assert not laptop.acquire()
    craft(hosts["laptop"], {**live, "kernel": "another boot pid:[1]", "started": started + 7})
    assert not laptop.acquire()
    craft(hosts["laptop"], {**live, "host": "box", "started": started + 7})
    assert not laptop.acquire()
    craft(hosts["laptop"], {**live, "started": started + 7})  # the pid now names another process
    assert laptop.acquire()


def test_a_lease_that_never_expires_is_taken_only_when_asked(
    hosts: dict[str, Path], origin: Path
) -> None:
    """A task started by hand: nobody renews its lease, and a silence proves nothing."""
    by_hand = Lease(
        Git(hosts["laptop"]), "origin", TRAIN, "laptop", hosts["laptop"] / ".git/paradev/leases",
        EXPIRY, Clock(0.0), expires=False,
    )  # fmt: skip
    assert by_hand.acquire()
    assert on_server(origin) == {"holder": "laptop", "state": "held", "expires": False}
    clock = Clock(1_000.0)
    box = lease(hosts["box"], "box", clock)
    assert not box.expired_now()
    clock.now += 10 * EXPIRY
    assert not box.expired_now()
    assert not box.acquire()
    assert box.acquire(asked=True)
    assert on_server(origin) == {"holder": "box", "state": "held"}
