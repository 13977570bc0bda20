"""Leases on the git remote: one holder at a time across hosts (e.g. one merge train).

A lease is a ref ``refs/paradev/lock/<name>`` whose commit's tree holds
``lease.json`` (who holds it, or that it is free). It is taken, renewed and
released by compare-and-swap pushes, each a new commit on top of the last:
the ref only ever moves forward, never deleted or forced, so a server that
refuses non-fast-forwards and deletions accepts every step.

Expiry never trusts a clock of another machine: a lease has expired when
its ref has not changed for ``expiry`` seconds on the observing host's own
monotonic clock. Each clone notes when it first saw each value of the ref
(``<common>/paradev/leases/<name>.json``); a renewal is a new value, so it
restarts every observer's count. Commit dates are the writers' clocks and
play no part.

Two exceptions, both needing no clock. A lease held by a process (the
merge train) names its host, pid, start time and kernel: on that same host
and kernel, a holder whose process is gone (or whose pid is now another
process) has certainly died, and this host takes the lease at once. A
lease taken ``expires=False`` (a task started by hand: no process renews
it) never expires; only a caller who asks for it (``paradev reopen``) takes
it from its holder.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

from paradev import processes
from paradev.atomic import write_json
from paradev.errors import ParadevError, PreconditionError, StateError
from paradev.git import Git, commit_files, fetch_ref, file_at, push_swap

LOCK_PREFIX = "refs/paradev/lock/"
TRACKING_PREFIX = "refs/paradev/remote-lock/"  # this clone's copies of the remote's leases
LEASE_FILE = "lease.json"
TRAIN = "train"
DEFAULT_EXPIRY = 300.0  # seconds unchanged before another host may take the lease

Clock = Callable[[], float]


HELD = (
    "holds the lease "  # the refusal's words, which ``paradev run`` looks for in a merge's output
)


class LeaseHeld(PreconditionError):  # noqa: N818 - reads as "the lease is held"
    """Another holder has the lease and it has not expired: try again later."""


def refused_for_lease(lines: Iterable[str]) -> bool:
    """Whether a command's output says it was refused because another host holds a lease."""
    return any(f"{HELD}{LOCK_PREFIX}" in line for line in lines)


class LeaseLost(StateError):  # noqa: N818 - reads as "the lease was lost"
    """Another host took the lease: it had expired, or was never ours."""


class Owner(NamedTuple):
    """The process holding a lease: only on its host and kernel can its pid be judged."""

    host: str
    pid: int
    started: int | None  # its start time (clock ticks since boot): a reused pid differs
    kernel: str | None  # ``processes.kernel_id`` where it ran


class View(NamedTuple):
    """The lease ref as last fetched: its commit (None: never taken) and its holder."""

    commit: str | None
    holder: str | None  # None: free
    expires: bool = True  # False: held until released, or taken by a caller who asks
    owner: Owner | None = None  # the holding process, when the lease names it


def monotonic() -> float:
    """This host's monotonic clock (one place for tests to inject a clock)."""
    return time.monotonic()


class Lease:
    """The lease ``name`` on ``remote``, as seen and changed by ``holder`` from this clone."""

    def __init__(
        self,
        git: Git,
        remote: str,
        name: str,
        holder: str,
        seen_dir: Path,
        expiry: float = DEFAULT_EXPIRY,
        clock: Clock | None = None,
        host: str | None = None,
        expires: bool = True,
    ) -> None:
        """``host``: this process's host, named with its pid in the lease while held (a
        holder that died on that host is then known dead there at once); ``expires``
        False: the lease, once taken, never expires (nobody renews it)."""
        self.git, self.remote, self.name, self.holder = git, remote, name, holder
        self.host, self.expires = host, expires
        self.ref, self.tracking = LOCK_PREFIX + name, TRACKING_PREFIX + name
        self.seen_path = seen_dir / f"{name}.json"
        self.expiry = expiry
        self.clock = clock or monotonic
        self.commit: str | None = None  # our last push while we hold it
        self.last = View(None, None)  # what the last acquire saw

    def observe(self) -> View:
        """Fetch the lease and note when this host first saw its current value."""
        return self.noted(fetch_ref(self.git, self.remote, self.ref, self.tracking))

    def noted(self, commit: str | None) -> View:
        """Note the lease as fetched (at ``commit``) by this host now: its view."""
        view = self._view(commit)
        self._first_seen(view)
        return view

    def _view(self, commit: str | None) -> View:
        """The lease at ``commit``, read from its ``lease.json``."""
        if commit is None:
            return View(None, None)
        text = file_at(self.git, commit, LEASE_FILE)
        with suppress(ValueError, TypeError):
            data = json.loads(text or "")
            if isinstance(data, dict):
                return _view_of(commit, data)
        return View(commit, None)

    def last_seen(self, commit: str | None) -> tuple[View, float]:
        """(the lease, seconds it was seen unchanged) by this host's last look: no network.

        ``commit``: this clone's copy of the ref (its tracking ref), read by the caller,
        who reads many at once. Holder and expiry come from the note of that look.
        """
        noted = _read_json(self.seen_path)
        at, checked = noted.get("at"), noted.get("checked")
        if commit is None or noted.get("commit") != commit or "holder" not in noted:
            return self._view(commit), 0.0
        holder = noted["holder"] if isinstance(noted["holder"], str) else None
        view = View(commit, holder, noted.get("expires") is not False)
        if not isinstance(at, int | float) or not isinstance(checked, int | float):
            return view, 0.0
        return view, max(0.0, float(checked) - float(at))

    def expired(self, view: View) -> bool:
        """Whether ``view``'s value has stayed unchanged for ``expiry`` s on this host's clock."""
        return self.clock() - self._first_seen(view) >= self.expiry

    def _first_seen(self, view: View) -> float:
        """When this host first saw the ref at ``view.commit`` (noted now if it is new to us)."""
        at = self.clock()
        noted = _read_json(self.seen_path)
        seen = noted.get("at")
        # a clock that went back (a reboot) starts the count again
        if noted.get("commit") == view.commit and isinstance(seen, int | float) and seen <= at:
            _write_json(self.seen_path, {**noted, "checked": at, **_noted(view)})
            return float(seen)
        note = {"commit": view.commit, **_noted(view), "at": at, "checked": at}
        _write_json(self.seen_path, note)
        return at

    def died_here(self, view: View) -> bool:
        """Whether ``view``'s holder is a process of this host and kernel that is gone.

        Certain, so no expiry to wait out: its pid is free, or is another process
        (another start time). Never a live process's lease, nor another host's.
        """
        owner = view.owner
        if owner is None or self.host is None or owner.host != self.host:
            return False
        if owner.kernel is None or owner.kernel != processes.kernel_id():
            return False
        return not processes.alive(owner.pid, owner.started)

    def takeable(self, view: View, asked: bool = False) -> bool:
        """Whether this holder may take the lease as ``view`` shows it.

        Free, or ours; held by another: once expired on this host's clock, or at once
        when its holder died on this host. A lease that never expires only when
        ``asked`` (the user asked to take it over).
        """
        if view.holder in (None, self.holder):
            return True
        if not view.expires:
            return asked
        return self.expired(view) or self.died_here(view)

    def expired_now(self) -> bool:
        """Whether the lease is free or its holder let it expire, on this host's clock (one fetch),
        or died on this host.

        Every look counts: the first sight of a value starts this host's count.
        """
        return self.takeable(self.observe())

    def acquire(self, asked: bool = False) -> bool:
        """Take the lease if free or expired; False when someone holds it (or won the race).

        ``asked``: the user asked to take it, so a lease that never expires is taken too.
        """
        view = self.last = self.observe()
        if not self.takeable(view, asked):
            return False
        return self._push(view.commit, "held", f"taken by {self.holder}")

    def renew(self) -> None:
        """Move the lease forward, so no observer sees it unchanged; LeaseLost if taken from us."""
        self._push_held(self.commit, "held", f"renewed by {self.holder}")

    def release(self) -> None:
        """Leave a commit saying the lease is free; LeaseLost if it was no longer ours."""
        self._push_held(self.commit, "free", f"released by {self.holder}")
        self.commit = None

    def release_if_mine(self) -> None:
        """Free the lease if this holder has it (e.g. a task done): it never expires in view."""
        view = self.observe()
        if view.holder == self.holder:
            self.commit = view.commit
            self.release()

    def _push_held(self, old: str | None, state: str, what: str) -> None:
        if old is None or not self._push(old, state, what):
            self.commit = None
            raise LeaseLost(
                f"the lease {self.ref} on {self.remote} is no longer held by {self.holder}: "
                f"another host took it after it went {self.expiry:g}s unrenewed"
            )

    def _push(self, old: str | None, state: str, what: str) -> bool:
        body = self._body(state)
        new = commit_files(
            self.git,
            {LEASE_FILE: json.dumps(body, sort_keys=True) + "\n"},
            f"paradev: lease {self.name} {what}",
            parent=old,
        )
        if push_swap(self.git, self.remote, self.ref, new, old) is not None:
            return False
        self.git.run("update-ref", self.tracking, new)
        self._first_seen(_view_of(new, body))
        self.commit = new if state == "held" else None
        return True

    def _body(self, state: str) -> dict[str, Any]:
        """``lease.json``: holder and state; a held lease also says if it never expires, and
        names the holding process when this lease knows its host."""
        body: dict[str, Any] = {"holder": self.holder, "state": state}
        if state != "held":
            return body
        if not self.expires:
            body["expires"] = False
        if self.host is not None:
            pid = os.getpid()
            body.update(host=self.host, pid=pid, kernel=processes.kernel_id())
            body["started"] = processes.start_time(pid)
        return body

    @contextmanager
    def held(self, renew_every: float | None = None) -> Iterator[Lease]:
        """Hold the lease for the block, renewed in the background; refuse if another holds it.

        A renewal that finds the lease taken stops renewing; ``check`` then raises.
        """
        if not self.acquire():
            raise LeaseHeld(
                f"{self.last.holder or 'another host'} {HELD}{self.ref} on "
                f"{self.remote}; it expires after {self.expiry:g}s without renewal: "
                "wait for it to finish, or run the command again later"
            )
        stop = threading.Event()
        thread = threading.Thread(
            target=self._renew_until, args=(stop, renew_every or self.expiry / 3), daemon=True
        )
        thread.start()
        try:
            yield self
        except BaseException:
            self._stop(stop, thread)
            with suppress(ParadevError):  # the block's own error is the one to report
                self._release_if_held()
            raise
        self._stop(stop, thread)
        self._release_if_held()

    @staticmethod
    def _stop(stop: threading.Event, thread: threading.Thread) -> None:
        stop.set()
        thread.join()  # a renewal under way finishes first

    def _release_if_held(self) -> None:
        if self.commit is not None:
            self.release()

    def _renew_until(self, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            try:
                self.renew()
            except LeaseLost:
                return  # check() reports it
            except (ParadevError, OSError):  # e.g. the remote unreachable: retried next time
                continue

    def check(self) -> None:
        """Raise LeaseLost if a renewal found the lease taken (long work calls it between steps)."""
        if self.commit is None:
            raise LeaseLost(f"the lease {self.ref} on {self.remote} was lost")


def _view_of(commit: str, data: dict[str, Any]) -> View:
    """The lease at ``commit`` whose ``lease.json`` holds ``data``."""
    if data.get("state") != "held":
        return View(commit, None)
    return View(commit, str(data.get("holder")), data.get("expires") is not False, _owner(data))


def _owner(data: dict[str, Any]) -> Owner | None:
    """The holding process a held ``lease.json`` names, if it names one."""
    host, pid, started, kernel = (data.get(k) for k in ("host", "pid", "started", "kernel"))
    if not isinstance(host, str) or not isinstance(pid, int) or isinstance(pid, bool):
        return None
    return Owner(
        host,
        pid,
        started if isinstance(started, int) else None,
        kernel if isinstance(kernel, str) else None,
    )


def _noted(view: View) -> dict[str, Any]:
    """What a look notes of the lease besides when: holder, and whether it ever expires."""
    return {"holder": view.holder, "expires": view.expires}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
