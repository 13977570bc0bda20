"""The state shared by several machines, kept on the git remote they already share.

With ``[agents] hosts`` set, the state lives on the remote under
``refs/paradev/state``: a commit whose tree holds ``state.json``, so the
ref's history is the audit log of every change (who, when, what). There is
no server of paradev's own: every change is a compare-and-swap push
(``--force-with-lease`` against the commit it was made on). When another
host pushed first the push is refused, and the SAME change (a function from
the state it read to the state it wants) is applied again to the new state
and pushed again, a bounded number of times.

Each clone's ``state.json`` becomes a cache of the remote state, written
after every successful push and every fetch, so read-only commands (status,
check) never touch the network.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from paradev.errors import PreconditionError, StateError
from paradev.git import Git, commit_files, fetch_refspecs, file_at, push_swap
from paradev.lease import DEFAULT_EXPIRY, LOCK_PREFIX, TRACKING_PREFIX, TRAIN, Lease
from paradev.limits import MAX_STATE_BYTES
from paradev.state import State, StateStore, now

STATE_REF = "refs/paradev/state"
TRACKING_REF = "refs/paradev/remote-state"  # this clone's copy of the remote's STATE_REF
STATE_FILE = "state.json"
MAX_TRIES = 30  # refused pushes before giving up: each refusal means another host progressed

Edit = Callable[[dict[str, Any]], dict[str, Any]]


def host_ident(host: str) -> dict[str, str]:
    """The author of a state commit: the host, whatever the user's git identity (or none)."""
    name, email = f"paradev on {host}", f"paradev@{host}.invalid"
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


class SharedState:
    """``refs/paradev/state`` on ``remote``: read by fetching it, changed by compare-and-swap."""

    def __init__(
        self,
        git: Git,
        remote: str,
        host: str | Callable[[], str],
        tries: int = MAX_TRIES,
        expiry: float = DEFAULT_EXPIRY,
    ) -> None:
        self.git, self.remote, self.tries = git, remote, tries
        self.expiry = expiry  # [agents] lease_expiry: every host's leases
        self._host = host  # or how to find it: only a write needs it, read-only commands never
        self.known: tuple[str, dict[str, Any]] | None = None  # the last commit fetched or pushed

    @property
    def host(self) -> str:
        """This clone's host, named in every state commit."""
        if callable(self._host):
            self._host = self._host()
        return self._host

    def fetch(self, everything: bool = False) -> tuple[str | None, dict[str, Any] | None]:
        """(the remote state's commit, its JSON data); (None, None) before the first write.

        ``everything``: every branch and every lease of the remote come in the
        same fetch (one round trip). The state ref by a pattern: a remote
        without it yet matches nothing rather than failing (the ref only moves
        forward, it is never deleted).
        """
        refspecs = [f"+{STATE_REF}*:{TRACKING_REF}*"]
        if everything:
            refspecs += [
                f"+refs/heads/*:refs/remotes/{self.remote}/*",
                f"+{LOCK_PREFIX}*:{TRACKING_PREFIX}*",
            ]
        fetch_refspecs(self.git, self.remote, refspecs)
        commit = self.git.rev(TRACKING_REF)
        if commit is None:
            return None, None
        data = self._data(commit)
        self.known = commit, data
        return commit, data

    def _data(self, commit: str) -> dict[str, Any]:
        text = file_at(self.git, commit, STATE_FILE)
        where = f"{STATE_REF} on {self.remote} (commit {commit[:12]})"
        if text is None or len(text) > MAX_STATE_BYTES:
            raise StateError(
                f"{where} holds no readable {STATE_FILE}; push a good state commit on top of it"
            )
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StateError(f"{where} is corrupt ({exc}); push a good state on top") from None
        if not isinstance(data, dict):
            raise StateError(f"{where} is corrupt (not a JSON object); push a good state on top")
        return data

    def change(
        self, edit: Edit, what: str, initial: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Apply ``edit`` to the remote state and push it; the state now on the remote.

        ``initial`` is the state the very first write starts from (this
        clone's local state: turning hosts on keeps what it knew). A refused
        push fetches again and re-applies ``edit``; after ``tries`` refusals
        StateError says nothing was recorded. An edit that changes nothing
        pushes nothing.
        """
        for attempt in range(self.tries):
            # the first try trusts the last state seen (a stale one is only refused): one
            # round trip per change when this host is the one writing
            old, data = self.known if attempt == 0 and self.known else self.fetch()
            base = data if data is not None else (initial or {})
            new = edit(_copied(base))
            if old is not None and new == data:
                return new
            text = json.dumps(new, indent=1, sort_keys=True) + "\n"
            commit = commit_files(
                self.git,
                {STATE_FILE: text},
                f"paradev: {what}\n\nParadev-Host: {self.host}",
                parent=old,
                env=host_ident(self.host),
            )
            if push_swap(self.git, self.remote, STATE_REF, commit, old) is None:
                self.git.run("update-ref", TRACKING_REF, commit)
                self.known = commit, _copied(new)
                return new
            time.sleep(random.uniform(0, 0.02 * (attempt + 1)))  # let the winner's push finish
        raise StateError(
            f"the shared state {STATE_REF} on {self.remote} changed under each of {self.tries} "
            f"tries to record {what}; nothing was recorded: run the command again"
        )


def _copied(data: dict[str, Any]) -> dict[str, Any]:
    """An independent copy of JSON data: an edit may change what it is given."""
    copy: dict[str, Any] = json.loads(json.dumps(data))
    return copy


# -- one state write as a change that can be applied again on a newer state ---

_ABSENT = object()


def replay(before: Any, after: Any, theirs: Any) -> Any:
    """What ``theirs`` becomes with the change from ``before`` to ``after`` applied to it.

    Objects are merged key by key (what this writer did not change keeps
    the other writer's value), a list that only grew gets the same items
    appended, anything else takes this writer's value.
    """
    if after == before:
        return theirs
    if isinstance(before, dict) and isinstance(after, dict) and isinstance(theirs, dict):
        merged = dict(theirs)
        for key in before.keys() | after.keys():
            old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
            if new is _ABSENT:
                merged.pop(key, None)
            elif old is _ABSENT or key not in theirs:
                merged[key] = new
            else:
                merged[key] = replay(old, new, theirs[key])
        return merged
    if (
        isinstance(before, list)
        and isinstance(after, list)
        and isinstance(theirs, list)
        and after[: len(before)] == before
    ):
        return theirs + after[len(before) :]
    return after


def describe(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A commit subject naming what a write changed, e.g. ``tasks 11, 12; merge_order``."""
    parts = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old == new or key == "updated_at":
            continue
        if isinstance(old, dict) and isinstance(new, dict) and key in ("tasks", "agents"):
            ids = sorted((k for k in old.keys() | new.keys() if old.get(k) != new.get(k)), key=int)
            parts.append(f"{key} {', '.join(ids)}")
        else:
            parts.append(key)
    return "; ".join(parts) or "state"


class SharedStateStore(StateStore):
    """A StateStore whose writes go to the remote first; its files are the clone's cache.

    Reads stay local (no network). ``update`` fetches the remote state into
    the cache first, so the caller decides on fresh data; ``write`` turns
    the caller's edit of the cache into a change replayed on the remote.
    """

    def __init__(
        self,
        common_dir: Path,
        shared: SharedState,
        recognise: Callable[[State], None] | None = None,
    ) -> None:
        super().__init__(common_dir, recognise)
        self.shared = shared
        self.lease: Lease | None = None  # held while this process drives the train

    @contextmanager
    def leased(self, name: str) -> Iterator[None]:
        """Hold the lease ``name`` on the remote (renewed meanwhile), the cache pulled fresh.

        Another host holding it refuses at once; every state write made
        meanwhile first checks the lease was not lost (expired and taken).
        """
        lease = self._lease(name)
        with lease.held():
            self.lease = lease
            try:
                self.pull()  # e.g. the journal of a train another host began
                yield
            finally:
                self.lease = None

    def _lease(self, name: str) -> Lease:
        """The lease ``name`` as this process (of this host) would hold it.

        It names this process: once it dies (e.g. SIGKILL), this host takes the lease
        back at once instead of waiting out its own expiry.
        """
        shared = self.shared
        host = shared.host
        holder = f"{host} (pid {os.getpid()})"
        seen = self.dir / "leases"
        return Lease(shared.git, shared.remote, name, holder, seen, shared.expiry, host=host)

    def lease_expired(self, name: str = TRAIN) -> bool:
        """Whether lease ``name`` is free or expired on this host's clock: its holder died.

        One fetch; each look counts towards the expiry (``paradev run`` looks
        while it waits for another host's train).
        """
        return self._lease(name).expired_now()

    @property
    def host(self) -> str:
        return self.shared.host

    def pull(self, everything: bool = False) -> State | None:
        """Copy the remote state into the cache; None (cache untouched) before the first write.

        ``everything``: the remote's branches and leases come in the same fetch.
        """
        with self.locked():
            _, data = self.shared.fetch(everything)
            if data is None:
                return None
            state = _state_of(data, self.shared)
            StateStore.write(self, state.copy())
            return state

    @contextmanager
    def update(self) -> Iterator[State]:
        with self.locked():
            self.pull()
            with super().update() as state:
                yield state

    def write(self, state: State) -> None:
        """Record ``state`` on the remote as a change of the cache, then refresh the cache."""
        if self.lease is not None:
            self.lease.check()
        with self.locked():
            before = _detached(self._cached().to_json())
            state.updated_at = now()
            after = _detached(state.to_json())
            merged = self.shared.change(
                partial(_checked_replay, before, after, self.shared),
                describe(before, after),
                initial=before,
            )
            StateStore.write(self, _state_of(merged, self.shared))

    def _cached(self) -> State:
        """The cache as on the remote: the journal (its own file) with the state file's records,
        its landings not yet applied to them."""
        state = self._read_state_file()
        journal = self.read_journal()
        if journal is not None:
            state.train = journal
        return state

    def begin_train(self, journal: dict[str, Any]) -> bool:
        """A new train is a change of the shared state, decided on the remote's."""
        with self.update() as state:
            if state.train is not None:
                return False
            state.train = journal
        return True

    def save_journal(self, journal: dict[str, Any]) -> None:
        """The merge journal is part of the shared state: a train step is a state change."""
        with self.locked():
            state = self._read_file()
            state.train = journal
            self.write(state)


def _checked_replay(
    before: dict[str, Any], after: dict[str, Any], shared: SharedState, theirs: dict[str, Any]
) -> dict[str, Any]:
    """``replay``, refusing (before any push) a result that is not a valid state."""
    merged: dict[str, Any] = replay(before, after, theirs)
    _state_of(merged, shared)
    return merged


def _detached(data: dict[str, Any]) -> dict[str, Any]:
    """JSON data sharing nothing with the State it came from (``to_json`` shares lists)."""
    return _copied(data)


def _state_of(data: dict[str, Any], shared: SharedState) -> State:
    try:
        return State.from_json(data)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise StateError(
            f"the shared state {STATE_REF} on {shared.remote} is corrupt ({exc}); "
            "push a good state commit on top of it"
        ) from None


def sync(store: StateStore) -> str:
    """``paradev sync``: refresh the cache from the remote; one line saying what it holds."""
    if not isinstance(store, SharedStateStore):
        raise PreconditionError(
            "sync needs [agents] hosts in plan.toml: without hosts the state is this clone's own"
        )
    state = store.pull(everything=True)  # other hosts' agent branches and leases, for status
    where = f"{STATE_REF} on {store.shared.remote}"
    if state is None:
        return f"no shared state on {where} yet: the first state change creates it"
    return f"state synced from {where}: {len(state.tasks)} task records, {len(state.agents)} agents"
