"""Task leases: a started task names its host, which renews the task's lease while it works.

Each task in progress on a plan with ``[agents] hosts`` holds the lease
``refs/paradev/lock/task-<issue>`` (``paradev.lease``) for its host. One lease
ref per task rather than a lease field in the shared state: a renewal every
``expiry / 3`` seconds would otherwise be a state commit (the state's audit
log filling with heartbeats) and a compare-and-swap against every host's
state writes, retried on each refusal; a task's own ref races only with a
host taking that task over. The state records the task's host; the lease
says whether that host is still alive.

When a host vanishes its leases stop moving: ``status`` says so once this
clone has seen a lease unchanged for ``expiry`` seconds (``paradev sync``
looks), and ``paradev reopen ISSUE`` on another host takes the task, its
agent's pushed commits kept.

A task started by hand (``paradev start``, a person working in the work
tree) has no process to renew its lease, and a person's silence proves
nothing: its lease never expires (``expires=False``). ``status`` on every
host says it was started by hand on its host, never that the host vanished;
``paradev reopen ISSUE`` on another host is the user asking, and takes it at
once. An agent launched for it (``run-batch``, ``run``) turns it into a
renewed lease while the agent runs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext, suppress
from typing import NamedTuple

from paradev.errors import ParadevError, PreconditionError
from paradev.git import fetch, is_ancestor, merge_ff_only, resolve_refs
from paradev.hosts import this_host
from paradev.lease import Lease
from paradev.shared import SharedStateStore
from paradev.state import IN_PROGRESS, State, TaskRecord
from paradev.workspace import Workspace
from paradev.worktrees import add_worktree

PREFIX = "task-"


def task_lease(ws: Workspace, issue: int, host: str | None = None, expires: bool = True) -> Lease:
    """The lease of task ``issue`` as held (or looked at) by ``host`` (default: this clone's).

    ``expires`` False: held by hand, never expiring (nobody renews it).
    """
    holder = host or this_host(ws.git)
    seen = ws.store.dir / "leases"
    expiry = ws.plan.lease_expiry  # seconds its lease may stand still before its host is gone
    name = f"{PREFIX}{issue}"
    return Lease(ws.git, ws.plan.remote, name, holder, seen, expiry, expires=expires)


def take(ws: Workspace, issue: int) -> str:
    """Take task ``issue``'s lease for this host, by hand; the host.

    Refused while another host's agent renews it; a task started by hand on
    another host is taken (the user asked: ``paradev reopen``). An agent
    launched for it renews it meanwhile (``keep_alive``).
    """
    lease = task_lease(ws, issue, expires=False)
    if not lease.acquire(asked=True):
        raise PreconditionError(
            f"host {lease.last.holder} works on #{issue} (lease {lease.ref} on {lease.remote}); "
            f"once it goes {lease.expiry:g}s unrenewed, 'paradev reopen {issue}' takes it here"
        )
    return lease.holder


def keep_alive(ws: Workspace, issue: int) -> AbstractContextManager[object]:
    """Renew task ``issue``'s lease in the background while its agent runs (hosts only)."""
    if not ws.plan.hosts:
        return nullcontext()
    return task_lease(ws, issue).held()


def let_go(ws: Workspace, issue: int) -> None:
    """Free the task's lease once it is done; a failure only lets it expire (it is done)."""
    if ws.plan.hosts:
        with suppress(ParadevError):
            task_lease(ws, issue).release_if_mine()


class Sight(NamedTuple):
    """What this clone last saw of a task's lease held by the task's host."""

    by_hand: bool  # started by hand: never expires, so its host is never called vanished
    still: float  # seconds seen unchanged; past the expiry (not by hand): the host vanished


def lease_sights(ws: Workspace, state: State) -> dict[int, Sight]:
    """Issue -> its lease as last seen, for each task in progress by hand or past its expiry.

    Read from this clone's last look (``paradev sync``, a write), never from
    the network: one ref read for every task's lease.
    """
    if not ws.plan.hosts:
        return {}
    records = [r for r in state.tasks.values() if r.status == IN_PROGRESS and r.host]
    leases = {r.issue: task_lease(ws, r.issue, r.host) for r in records}
    tips = resolve_refs(ws.git, [lease.tracking for lease in leases.values()])
    sights: dict[int, Sight] = {}
    for record in records:
        lease = leases[record.issue]
        view, still = lease.last_seen(tips.get(lease.tracking))
        if view.holder == record.host and (not view.expires or still >= lease.expiry):
            sights[record.issue] = Sight(not view.expires, still)
    return sights


def look(ws: Workspace, state: State) -> None:
    """Note the leases of every task in progress on another host, as ``paradev sync`` fetched them.

    The count of how long each stood still runs on this host's clock from here.
    """
    here = this_host(ws.git)
    leases = [
        task_lease(ws, r.issue, r.host)
        for r in state.tasks.values()
        if r.status == IN_PROGRESS and r.host and r.host != here
    ]
    tips = resolve_refs(ws.git, [lease.tracking for lease in leases])
    for lease in leases:
        lease.noted(tips.get(lease.tracking))


def in_progress_elsewhere(ws: Workspace, issue: int) -> TaskRecord | None:
    """The task's record when it is in progress on another host (the remote state, fresh)."""
    state = ws.store.pull() if isinstance(ws.store, SharedStateStore) else ws.store.read()
    record = state.tasks.get(issue) if state is not None else None
    if record is None or record.status != IN_PROGRESS or not record.host:
        return None
    return record if record.host != this_host(ws.git) else None


def take_over(ws: Workspace, record: TaskRecord) -> str:
    """Take a vanished host's task here: its lease, then its agent's branch as pushed.

    Refused while its host renews the lease. The agent's worktree is created
    here when missing; its branch takes the pushed commits (fast-forward
    only: commits of this clone that were never pushed are never dropped).
    """
    host = take(ws, record.issue)
    fetch(ws.git, ws.plan.remote)
    branch = ws.branch(record.agent)
    pushed = ws.git.rev(f"refs/remotes/{ws.plan.remote}/{branch}")
    tree = ws.worktree(record.agent)
    if not (tree / ".git").exists():
        exists = ws.git.rev(f"refs/heads/{branch}") is not None
        add_worktree(ws, tree, branch, None if exists else pushed or ws.base_ref())
    local = ws.git.rev(f"refs/heads/{branch}")
    if pushed and local and local != pushed and not is_ancestor(ws.git, pushed, local):
        if not is_ancestor(ws.git, local, pushed):
            raise PreconditionError(
                f"{branch} here and on {ws.plan.remote} have diverged; merge "
                f"{ws.plan.remote}/{branch} into it in {tree}, then reopen #{record.issue} again"
            )
        merge_ff_only(tree, pushed)
    return host
