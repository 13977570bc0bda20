"""The merge train's journal: the ``Train`` in progress, its driver and its locks.

The journal (``state.train``, its own small file) is what a resumed train
reads to go on where a crashed or stopped one left off.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from paradev import git as gitmod
from paradev.errors import PreconditionError, Stopped
from paradev.git import Git
from paradev.snapshots import note_stop, stamp_step
from paradev.state import State, now
from paradev.workspace import Workspace

if TYPE_CHECKING:
    from paradev.conflicts import Report

Output = Callable[[str], None]


BACKUP_PREFIX = "refs/paradev/backup"


BACKUP, REBASE, SQUASH, GATE, ADVANCE, PUSH, MARK, HOOKS = (
    "backup",
    "rebase",
    "squash",
    "gate",
    "advance",
    "push",
    "mark",
    "hooks",
)

# Steps of one landing that only some landings take.
CHECK, TRAILERS, WIP = "check", "trailers", "wip"


class HandBack(Protocol):
    """Launch an agent on a stopped rebase (the runner's): passed in, the runner sits above."""

    def __call__(
        self,
        ws: Workspace,
        agent: int,
        report: str,
        *,
        notify: Callable[[str], None] = ...,
        on_launch: Callable[[subprocess.Popen[bytes]], None] | None = ...,
        kind: str = ...,  # "conflict", or "gate": a failed gate (the queue ejected the branch)
    ) -> bool: ...


@dataclass(frozen=True)
class PushInFlight:
    """The push of one landing's base, running while the next landing rebases, checks and
    gates (``advance.step_push``); settled before base moves again or the train stops."""

    agent: int
    commit: str
    wait: Callable[[], None]


class Train:
    """A train in progress: its journal (``state.train``) and the workspace it runs in."""

    def __init__(
        self,
        ws: Workspace,
        journal: dict[str, Any],
        out: Output,
        hand_back: HandBack | None = None,
    ) -> None:
        self.ws = ws
        self.journal = journal
        self.out = out
        self.hand_back_to = hand_back  # the runner's launch of an agent (on_conflict = "agent")
        self._handed_on: dict[int, tuple[str, str]] = {}  # tips one step passes the next
        self._changes_handed_on: dict[int, list[str]] = {}  # the check's status, for the gate
        self._moves_handed_on: dict[int, Callable[[], None]] = {}  # a rewrite's, for the check
        self._clean_rebases: set[int] = set()  # agents whose rebase git just ended by itself
        self._rebased_onto: dict[int, str] = {}  # the commit a rebase just went onto
        self._on_base: dict[int, tuple[str, str, bool]] = {}  # tips, base already in the branch
        self._tracking: dict[str, str] = {}  # remote-tracking refs, read once
        self._tracking_asked: set[str] = set()
        self._task_views: dict[int, State] = {}  # the state as one landing began, by agent
        self._queue_read: tuple[set[int], State] | None = None  # one read, for these agents
        self.push_in_flight: PushInFlight | None = None  # at most one (advance.settle_push)
        self.landed_here: set[str] = set()  # commits this process made and moved base to
        self.analysis: Report | None = None  # the merge order's, at this process's start

    @property
    def id(self) -> str:
        return str(self.journal["id"])

    @property
    def base(self) -> str:
        return str(self.journal["base"])

    @property
    def queue(self) -> list[int]:
        queue: list[int] = self.journal["queue"]
        return queue

    def agent(self, agent: int) -> dict[str, Any]:
        """The journal entry of ``agent`` (created empty)."""
        entry: dict[str, Any] = self.journal["agents"].setdefault(str(agent), {"done": []})
        return entry

    def save(self) -> None:
        """Write the journal alone (its own small file): the task records are not rewritten."""
        self.ws.store.save_journal(self.journal)

    def begin(self, agent: int, step: str, *, flush: bool = False, **facts: Any) -> None:
        """Note that ``step`` starts, with the facts needed to resume it.

        Kept in memory until the next write, unless ``flush``: only a step
        whose effects git cannot show afterwards (a rebase we must recognise
        as ours, a squash commit, hooks that ran) needs its own write.
        """
        entry = self.agent(agent)
        entry["step"] = step
        entry.update(facts)
        stamp_step(entry, step, "start")
        if flush:
            self.save()

    def finish(self, agent: int, step: str, *, flush: bool = False, **facts: Any) -> None:
        """Note that ``step`` is done (written with the next write unless ``flush``)."""
        entry = self.agent(agent)
        if step not in entry["done"]:
            entry["done"].append(step)
            stamp_step(entry, step, "end")
        entry.update(facts)
        if flush:
            self.save()

    def is_done(self, agent: int, step: str) -> bool:
        return step in self.agent(agent)["done"]

    def stop(self, agent: int, reason: str, message: str) -> Stopped:
        """Journal the stop and return the error to raise (exit 1)."""
        self.journal["status"] = "stopped"
        self.journal["stop"] = {"agent": agent, "reason": reason, "at": now()}
        note_stop(self.ws, self.journal, self.analysis)  # for the report: what collided
        self.save()
        return Stopped(message)

    # -- facts from git --
    def branch(self, agent: int) -> str:
        """The branch being landed: the one journaled at backup, even if plan.toml changed."""
        return str(self.agent(agent).get("branch") or self.ws.branch(agent))

    def worktree(self, agent: int) -> Path:
        """The agent's work tree, or the lane its task lands from (``paradev.lanes``)."""
        lane = self.journal["agents"].get(str(agent), {}).get("worktree")
        return Path(lane) if lane else self.ws.worktree(agent)

    def head(self, agent: int) -> str:
        return _rev(self.ws.git, f"refs/heads/{self.branch(agent)}")

    def base_tip(self) -> str:
        return _rev(self.ws.git, f"refs/heads/{self.base}")

    def tips(self, agent: int) -> tuple[str, str]:
        """(base, agent branch) commits: from their ref files as a rule (the train's own
        updates leave them loose), else read together by one git process."""
        base, branch = f"refs/heads/{self.base}", f"refs/heads/{self.branch(agent)}"
        found = ref_tips(self.ws, [base, branch])
        for ref in (base, branch):
            if ref not in found:
                raise PreconditionError(f"{ref} does not exist")
        return found[base], found[branch]

    def hand_on(self, agent: int, base: str, head: str) -> None:
        """Pass the tips a step just read (or set) to the next step, which then reads no git.

        Sound between the rewrite, check and gate steps: the train holds the
        agent's lock, so only the train moves the branch (a hand-back to the
        agent reads the tips again), and base moving is caught when it advances.
        """
        self._handed_on[agent] = (base, head)

    def task_view(self, agent: int) -> State:
        """The state as this landing of ``agent`` first read it (read once, not once per step).

        Its task records do not change under the landing: the train holds the
        agent's lock, and only the mark step changes them (under the state lock).
        """
        view = self._task_views.get(agent)
        if view is None:
            view = self._task_views[agent] = self._queue_view(agent)
        return view

    def _queue_view(self, agent: int) -> State:
        """One read of the state for every agent queued when it was read (the train holds
        all their locks from then on): a state of thousands of records is read once a
        train, not once a landing. An agent that joined later, or lands again, reads anew."""
        if self._queue_read is None or agent not in self._queue_read[0]:
            self._queue_read = (set(self.queue), self.ws.store.view())
        return self._queue_read[1]

    def drop_task_view(self, agent: int) -> None:
        """Its landing is over: a later one (``merge --follow``) reads the state anew."""
        self._task_views.pop(agent, None)
        if self._queue_read is not None:
            self._queue_read[0].discard(agent)

    def tips_handed_on(self, agent: int) -> tuple[str, str]:
        """The tips the previous step handed on (once), else read from git."""
        return self.handed_on(agent) or self.tips(agent)

    def handed_on(self, agent: int) -> tuple[str, str] | None:
        """The tips the previous step handed on (once), None when it handed none."""
        return self._handed_on.pop(agent, None)

    def note_on_base(self, agent: int, base: str, head: str, on_base: bool) -> None:
        """Remember whether the branch at ``head`` holds base at ``base`` (read with the tips)."""
        self._on_base[agent] = (base, head, on_base)

    def on_base(self, agent: int, base: str, head: str) -> bool | None:
        """Whether base is already in the branch, if read for exactly these tips (once)."""
        noted = self._on_base.pop(agent, None)
        return noted[2] if noted is not None and noted[:2] == (base, head) else None

    def tracking(self, ref: str) -> str | None:
        """A remote-tracking ref's commit: every queued agent's read by one git process.

        Only a fetch (at the train's start) or this train's own push of that
        agent's branch (after its backup) moves them, so once per process is enough.
        """
        if ref not in self._tracking_asked:
            remote = self.ws.plan.remote
            refs = {f"refs/remotes/{remote}/{self.branch(a)}" for a in self.queue} | {ref}
            refs -= self._tracking_asked
            self._tracking |= gitmod.resolve_refs(self.ws.git, sorted(refs))
            self._tracking_asked |= refs
        return self._tracking.get(ref)

    def hand_on_onto(self, agent: int, onto: str) -> None:
        """Pass the commit the rebase just went onto to the rewrite (base, as ``hand_on``)."""
        self._rebased_onto[agent] = onto

    def rebased_onto(self, agent: int) -> str | None:
        """The commit this process's rebase of ``agent`` went onto (once), None if none."""
        return self._rebased_onto.pop(agent, None)

    def hand_on_changes(self, agent: int, changes: list[str]) -> None:
        """Pass the agent's uncommitted paths (untracked too) from the check to the gate step.

        Sound as ``hand_on``: nothing runs in the agent's tree between the two.
        """
        self._changes_handed_on[agent] = changes

    def changes_handed_on(self, agent: int) -> list[str] | None:
        """The uncommitted paths the check step handed on (once), None when it handed none."""
        return self._changes_handed_on.pop(agent, None)

    def hand_on_move(self, agent: int, move: Callable[[], None]) -> None:
        """Pass the branch move of a rewrite to the check step, which makes it beside its own
        git processes (``rewrite.step_trailers``)."""
        self._moves_handed_on[agent] = move

    def move_handed_on(self, agent: int) -> Callable[[], None]:
        """The branch move a rewrite handed on (once); a no-op when it handed none."""
        return self._moves_handed_on.pop(agent, _nothing)

    def note_clean_rebase(self, agent: int) -> None:
        """This process's ``git rebase`` of ``agent`` ended by itself, never stopped: git
        leaves no unmerged entry then (nothing was resolved, by an agent or a person)."""
        self._clean_rebases.add(agent)

    def rebased_cleanly(self, agent: int) -> bool:
        """Whether ``note_clean_rebase`` was said of the agent's rebase (once)."""
        clean = agent in self._clean_rebases
        self._clean_rebases.discard(agent)
        return clean


def _nothing() -> None:
    """No move to make."""


def _rev(git: Git, ref: str) -> str:
    sha = git.rev(ref)
    if sha is None:
        raise PreconditionError(f"{ref} does not exist")
    return sha


def ref_tips(ws: Workspace, refs: Sequence[str]) -> dict[str, str]:
    """The commit of each existing branch or remote-tracking ref of ``refs``: from the ref
    files as a rule (no git process), else one ``for-each-ref``."""
    return gitmod.resolve_refs_from_files(ws.git, ws.repo.common_dir, refs)


def _tip(ws: Workspace, ref: str) -> str:
    """``_rev`` of a branch, from its ref file as a rule."""
    sha = ref_tips(ws, [ref]).get(ref)
    if sha is None:
        raise PreconditionError(f"{ref} does not exist")
    return sha


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def backup_ref(branch: str, train_id: str, again: int = 0) -> str:
    """``again``: the agent's earlier landings in this train (``merge --follow``), each
    with a backup of its own; the train's id stays last (``paradev backups`` keeps a running
    train's)."""
    if again:
        return f"{BACKUP_PREFIX}/{branch}/again-{again}/{train_id}"
    return f"{BACKUP_PREFIX}/{branch}/{train_id}"


@contextmanager
def driving(ws: Workspace, note_owner: bool = True) -> Iterator[None]:
    """Hold the train lock: two paradev processes driving one train would land an agent twice.

    With [agents] hosts also the lease ``refs/paradev/lock/train``: one train across every
    host. A dry run (``note_owner`` False) changes nothing and takes no lease.
    """
    with ws.store.exclusive(  # noqa: SIM117 - the local lock first: it refuses without network
        "train.lock",
        wait=0,
        busy="another paradev merge is driving the merge train right now; wait for it to finish",
        note_owner=note_owner,
    ):
        with ws.store.leased("train") if note_owner else nullcontext():
            yield


def _lock_agents(ws: Workspace, agents: Sequence[int], locks: ExitStack, note: bool = True) -> None:
    """Hold every agent the train lands: run-batch must not run them meanwhile (else exit 2)."""
    for agent in agents:
        lock = ws.store.agent_lock(agent, "paradev merge", name_holder=note)
        if isinstance(locks, AgentLocks):
            locks.hold(agent, lock)
        else:
            locks.enter_context(lock)


class AgentLocks(ExitStack):
    """The agents a train holds, each of which can be let go once landed (``merge --follow``)."""

    def __init__(self) -> None:
        super().__init__()
        self.each: dict[int, ExitStack] = {}

    def hold(self, agent: int, lock: AbstractContextManager[None]) -> None:
        stack = ExitStack()
        stack.enter_context(lock)
        self.each[agent] = stack
        self.callback(stack.close)

    def release(self, agent: int) -> None:
        stack = self.each.pop(agent, None)
        if stack is not None:
            stack.close()


def _new_journal(ws: Workspace, order: list[int], push: bool, gate: bool) -> dict[str, Any]:
    """The journal of a new train: settings fixed for its whole run, even if plan.toml changes."""
    return {
        "id": _stamp(),
        "base": ws.plan.base,
        "base_start": _tip(ws, f"refs/heads/{ws.plan.base}"),
        "started_at": now(),
        "status": "running",
        "stop": None,
        "order": order,
        "queue": list(order),
        "landed": [],
        "skipped": [],
        "push": push,
        "gate": gate,
        "squash": ws.plan.squash,
        "mq": ws.plan.merge_queue,  # None: the serial train
        "agents": {},
        "driver": driver_record(),
        "drivers_since": time.time(),  # stale locks are looked for since then
        "committer": gitmod.committer_ident(ws.git),  # every rewritten commit's, on any host
        "host": ws.store.host,  # [agents] hosts: the host driving it (another one adopts it)
    }


def journaled_committer(train: Train) -> AbstractContextManager[None]:
    """Commits the train rewrites take the committer (name, email, date) of its journal.

    Whichever process or host drives it, a resumed train makes the same commits.
    """
    return gitmod.committing_as(committer_of(train))


def committer_of(train: Train) -> dict[str, str]:
    """The committer fixed in the journal (the one key for the serial train and the queue).

    A journal from before it was fixed there takes the queue's own, else now's.
    """
    journal = train.journal
    if "committer" not in journal:
        legacy = (journal.get("mq") or {}).get("committer")
        journal["committer"] = legacy or gitmod.committer_ident(train.ws.git)
    committer: dict[str, str] = journal["committer"]
    return committer


def driver_record() -> dict[str, Any]:
    """Who drives the train (pid, its start, since when): tells a later run what a crash left."""
    return {"pid": os.getpid(), "start": _process_start(os.getpid()), "since": time.time()}


def _process_start(pid: int) -> str | None:
    """The start of process ``pid`` (clock ticks since boot, Linux), to see a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def driver_gone(driver: dict[str, Any] | None) -> bool:
    """Whether the journaled driver is dead (an earlier call in this process counts as dead)."""
    pid = (driver or {}).get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _process_start(pid) != (driver or {}).get("start")


def remove_stale_locks(train: Train, agents: Sequence[int]) -> None:
    """Remove the lock files killed drivers' git children left, with a note.

    Only when the journaled driver is dead (every earlier one is too: each
    took over from a dead one or ended), only where this train works (the
    agents' and base's git dirs, their branch refs, backup refs), and only
    files made since the train's first driver started: they can only be its
    drivers' children's. The agents are not running: the train holds their locks.
    """
    driver = train.journal.get("driver")
    if not driver or not driver_gone(driver):
        return
    since = float(train.journal.get("drivers_since", driver.get("since", 0))) - 2  # coarse times
    for lock in _lock_files(train, agents):
        try:
            if lock.stat().st_mtime < since:
                continue
            lock.unlink()
        except OSError:
            continue
        train.out(f"paradev: removed {lock}, left by the killed paradev (pid {driver.get('pid')})")


def _lock_files(train: Train, agents: Sequence[int]) -> list[Path]:
    """Lock files a killed git child may have left where this train works.

    In an agent's git dir (and its rebase folders) any ``*.lock`` is git's
    (``CHERRY_PICK_HEAD.lock``, ``MERGE_MSG.lock``, ``REBASE_HEAD.lock``...:
    a single one left makes every later rebase stop); base's work tree is the
    user's, so only the locks of what the train moves there count; in a
    remote on this machine, those of the refs the train pushes.
    """
    ws, common = train.ws, train.ws.repo.common_dir
    files: list[Path] = []
    for tree in (train.worktree(a) for a in agents):
        if tree.exists():
            folder = gitmod.worktree_git_dir(tree)
            for where in (folder, folder / "rebase-merge", folder / "rebase-apply"):
                files += sorted(where.glob("*.lock")) if where.is_dir() else []
    holder = gitmod.branch_holder(ws.repo, train.base)
    if holder is not None and holder.exists():
        folder = gitmod.worktree_git_dir(holder)
        names = ("index.lock", "HEAD.lock", "ORIG_HEAD.lock", "AUTO_MERGE.lock")
        files += [folder / name for name in names]
    refs = [f"refs/heads/{train.base}", *(f"refs/heads/{train.branch(a)}" for a in agents)]
    files += [common / f"{ref}.lock" for ref in refs] + [common / "packed-refs.lock"]
    backups = common / "refs" / "paradev"
    files += sorted(backups.rglob("*.lock")) if backups.is_dir() else []
    remote = gitmod.local_remote_dir(ws.git, ws.plan.remote) if ws.plan.remote else None
    if remote is not None:  # a push's git-receive-pack, killed with its driver
        files += [remote / f"{ref}.lock" for ref in ("HEAD", *refs)] + [remote / "packed-refs.lock"]
    return files


class LaneHeld(Exception):  # noqa: N818 - not an error: the lane's task waits for its agent
    """A lane's landing that needs its agent, busy on its next task: it lands later."""


def load_train(ws: Workspace, out: Output, hand_back: HandBack | None = None) -> Train:
    journal = ws.store.read().train
    if journal is None:
        raise PreconditionError("no merge train is in progress; run paradev merge")
    return Train(ws, journal, out, hand_back)
