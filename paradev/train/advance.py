"""The gate on the rebased branch, then base's fast-forward, the push, tasks marked merged, hooks.

Base moves only by fast-forward to the gated head; every step first checks
what git already shows, so a resumed train never lands twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from paradev import git as gitmod
from paradev import processes
from paradev.errors import GitError, PreconditionError
from paradev.hosts import refuse_unshared_branch
from paradev.prepare import as_agent, prepare_worktree
from paradev.state import COMPLETED, MERGED, now
from paradev.train import gate as gates
from paradev.train.checks import (
    _check_base_tree,
    refuse_extra_files,
)
from paradev.train.gate import GateResult, _gate_command, _tail, gate_env, gate_log
from paradev.train.journal import (
    ADVANCE,
    BACKUP_PREFIX,
    GATE,
    HOOKS,
    MARK,
    PUSH,
    PushInFlight,
    Train,
)
from paradev.train.rebase import (
    next_steps,
)
from paradev.workspace import Workspace


def step_gate(train: Train, agent: int) -> None:
    """Run the gate on the rebased branch (base + this work); stop if it fails.

    Neither its start nor its pass is written at once (the next write carries
    them; an interrupt writes them): a crash only runs it once more, and not
    even that when base already holds the head, for then it has landed.
    """
    base, head = train.tips_handed_on(agent)
    changes = train.changes_handed_on(agent)
    entry = train.agent(agent)
    command = _gate_command(train.ws)
    if not train.journal["gate"] or not command or entry.get("gate_passed") == head or base == head:
        entry["gated"] = head  # what advance may land
        return
    _require_only_the_candidate(train, agent, head, changes)
    prepare_worktree(  # the rebase may have changed its lockfiles
        train.ws, train.worktree(agent), agent, notify=as_agent(agent, train.out)
    )
    attempt = int(entry.get("gate_runs", 0)) + 1
    log = gate_log(train, agent, attempt)
    train.begin(agent, GATE, gate_runs=attempt, gate_head=head, gate_log=str(log))
    train.out(f"agent {agent}: gate running ({log})")
    env = gate_env(train, agent, log)
    try:
        result = gates.run_gate(
            command, train.worktree(agent), train.ws.plan.gate_timeout, log, env
        )
    except KeyboardInterrupt:
        train.save()  # the user stopped it: say where
        raise
    if not result.ok:
        entry["gate_exit"] = result.returncode
        train.out(gate_report(train, agent, result))
        raise train.stop(agent, "gate", _gate_failure(train, agent, result))
    train.finish(agent, GATE, gate_passed=head, gated=head)
    train.out(f"agent {agent}: gate passed")


def _require_only_the_candidate(
    train: Train, agent: int, head: str, changes: list[str] | None = None
) -> None:
    """The gate runs in the agent's tree: refuse when it holds anything but ``head`` (exit 2).

    Untracked files count too (ignored ones do not): the gate would test them
    along with what lands. The agent is not running: the train holds its lock.
    ``changes``: the tree's uncommitted paths, when the check step just read them.
    """
    path = train.worktree(agent)
    if gitmod.current_branch(path) != train.branch(agent):
        raise PreconditionError(
            f"the gate cannot run in {path}: it does not have {train.branch(agent)} "
            f"({head[:12]}) checked out; check it out, then run paradev merge --continue"
        )
    refuse_extra_files(path, agent, "run paradev merge --continue", dirty=changes)


def gate_report(train: Train, agent: int, result: GateResult, lines: int = 20) -> str:
    """A failed gate for a person: the log's tail, then the next steps (as a conflict stop)."""
    tail = _tail(result.log, lines).splitlines()
    path, branch = train.worktree(agent), train.branch(agent)
    report = [
        f"agent {agent}: the gate {_gate_why(train, result)} on {train.base} + this agent's work",
        f"  log: {result.log}" + (f" (last {len(tail)} lines):" if tail else " (empty)"),
        *(f"      | {line}" for line in tail),
        *next_steps([f"fix what the log shows in {path}, commit it on {branch}, then"]),
    ]
    return "\n".join(report)


def _gate_why(train: Train, result: GateResult) -> str:
    timeout = train.ws.plan.gate_timeout
    return (
        f"timed out after {timeout:g}s"
        if result.returncode is None
        else f"exited {result.returncode}"
    )


def _gate_failure(train: Train, agent: int, result: GateResult) -> str:
    why = _gate_why(train, result)
    return (
        f"merge train stopped: the gate {why} for agent {agent} "
        f"({train.base} unchanged); log: {result.log}. Commit a fix on {train.branch(agent)} "
        "and run paradev merge --continue, or paradev merge --skip"
    )


def move_base(
    ws: Workspace,
    base: str,
    old: str,
    new: str,
    *,
    checked: bool = False,
    then: str = "run paradev merge again",
    changes: Sequence[str] | None = None,
) -> None:
    """Fast-forward ``base`` from ``old`` to ``new``, with its checked-out work tree if any.

    Not checked out: ``git update-ref`` compare-and-swap. Checked out (and clean):
    ``git merge --ff-only`` there, which moves ref, index and files together and
    refuses anything but a fast-forward (and untracked files it would overwrite).
    ``checked``: the caller already knows ``new`` contains ``old``; ``then``:
    what to run once the user committed or stashed their changes to base's tree;
    ``changes``: that tree's tracked changes, when the caller just read them.
    """
    holder = gitmod.branch_holder(ws.repo, base)
    if holder is None:
        _require_fast_forward(ws, base, old, new, checked)
        gitmod.update_ref(ws.git, f"refs/heads/{base}", new, old, f"paradev merge: {base}")
        return
    _check_base_tree(ws, base, holder, then, changes)
    try:
        gitmod.merge_ff_only(holder, new)  # refuses anything but a fast-forward: the proof
    except GitError:
        _require_fast_forward(ws, base, old, new, checked)  # say so when it is not one
        raise


def _require_fast_forward(ws: Workspace, base: str, old: str, new: str, checked: bool) -> None:
    if not checked and not gitmod.is_ancestor(ws.git, old, new):
        raise PreconditionError(f"{new[:12]} is not a fast-forward of {base} ({old[:12]})")


def step_advance(train: Train, agent: int) -> None:
    """Move base to the gated head, fast-forward only.

    Not journaled before the move: a resumed train sees in git whether base
    already holds the head (then only the journal is behind).
    """
    if train.is_done(agent, ADVANCE):
        return
    settle_push(train)  # the last landing's push: on the remote before base moves again
    (current, new), status = _tips_and_base_tree(train, agent)
    if current != new:
        checked_out = gitmod.branch_holder(train.ws.repo, train.base) is not None
        _check_still_landable(train, agent, current, new, ancestry=not checked_out)
        changes = _undo_killed_fast_forward(train, current, new, status)
        train.begin(agent, ADVANCE, advance_from=current, advance_to=new)
        try:
            move_base(
                train.ws,
                train.base,
                current,
                new,
                checked=True,
                then="run paradev merge --continue",
                changes=changes,
            )
        except GitError:  # git merge --ff-only refused: say why when base moved
            _stop_if_base_moved(train, agent, current, new)
            raise
        if new != train.agent(agent).get("old_head"):  # made by this train: in no branch yet
            train.landed_here.add(new)
    train.finish(agent, ADVANCE, landed=new)
    train.out(f"agent {agent}: {train.base} -> {new[:12]}")


def _tips_and_base_tree(
    train: Train, agent: int
) -> tuple[tuple[str, str], tuple[list[str], list[str]] | None]:
    """The tips, and the changes in base's work tree (None: not checked out, or an operation
    under way there): the tips from their ref files as a rule, else two git processes side
    by side."""
    holder = gitmod.branch_holder(train.ws.repo, train.base)
    if holder is None or gitmod.unfinished_operation(holder) is not None:
        return train.tips(agent), None
    refs = [f"refs/heads/{train.base}", f"refs/heads/{train.branch(agent)}"]
    found = gitmod.loose_refs(train.ws.repo.common_dir, refs)
    if found is not None:
        return (found[refs[0]], found[refs[1]]), gitmod.changes(holder)
    tips, status = gitmod.at_once(lambda: train.tips(agent), lambda: gitmod.changes(holder))
    return tips, status


def _undo_killed_fast_forward(
    train: Train,
    current: str,
    new: str,
    status: tuple[list[str], list[str]] | None = None,
) -> list[str] | None:
    """Put back the files a killed ``git merge --ff-only`` of base already wrote.

    Killed mid-way, it leaves base's work tree (and maybe index) partly at the
    new commit while the branch is still at the old one: changed paths whose
    files are exactly the new commit's. They hold nothing uncommitted, so they
    go back to base's head and the fast-forward is done again; any other
    change is the user's and still refuses the move. Returns the tracked
    changes left in base's tree (None: not read), so the move reads them once.
    ``status``: base's tree's (tracked, untracked) changes, when the caller just read them.
    """
    holder = gitmod.branch_holder(train.ws.repo, train.base)
    if holder is None or gitmod.unfinished_operation(holder) is not None:
        return None
    tracked, untracked = gitmod.changes(holder) if status is None else status
    if not tracked and not untracked:
        return []  # nothing written: the usual case needs no diff
    moving = set(gitmod.changed_paths(train.ws.git, current, new))
    dirty = [p for p in tracked + untracked if p in moving]
    written = gitmod.paths_as_in(holder, new, dirty, cut_short=True)
    if not written:
        return tracked
    if set(written) - set(gitmod.paths_as_in(holder, new, written)):
        _keep_cut_short_files(train, holder)
    gitmod.restore_to_head(holder, written)
    train.out(
        f"paradev: {holder}: put back {len(written)} file(s) a killed fast-forward of "
        f"{train.base} had already written ({', '.join(written[:5])})"
    )
    return None  # changed just now: the move reads the tree again


def _keep_cut_short_files(train: Train, holder: Path) -> None:
    """Commit base's work tree under a backup ref before files cut short are put back.

    A file holding the first bytes of the new commit's is what a killed
    checkout leaves, but it could also be someone's edit: kept, nothing is lost.
    """
    message = f"paradev merge: {holder} before putting back files a killed fast-forward cut short\n"
    snapshot = gitmod.snapshot_worktree(holder, message)
    if snapshot is not None:
        ref = f"{BACKUP_PREFIX}/{train.base}/{train.id}-worktree-{snapshot[:12]}"
        if train.ws.git.rev(ref) is None:
            gitmod.update_ref(train.ws.git, ref, snapshot, "")
        train.out(f"paradev: {holder}: its files as they were are kept in {ref}")


def _check_still_landable(
    train: Train, agent: int, base: str, head: str, *, ancestry: bool = True
) -> None:
    """Stop when the branch moved after its gate, or base moved after the rebase.

    ``ancestry=False``: ``git merge --ff-only`` will prove the fast-forward itself.
    """
    if head != train.agent(agent).get("gated"):
        raise train.stop(
            agent,
            "branch-moved",
            f"{train.branch(agent)} moved after its gate ran; "
            "run paradev merge --continue to gate it again",
        )
    if ancestry:
        _stop_if_base_moved(train, agent, base, head)


def _stop_if_base_moved(train: Train, agent: int, base: str, head: str) -> None:
    if not gitmod.is_ancestor(train.ws.git, base, head):
        raise train.stop(
            agent,
            "base-moved",
            f"{train.base} moved while agent {agent} was being landed; "
            "run paradev merge --continue to rebase and gate it again",
        )


def step_push(train: Train, agent: int, *, background: bool = False, may_stop: bool = True) -> None:
    """Push base (never forced) and the rewritten agent branch (with a lease).

    Journaled with the next step only: pushing the same commits again is a no-op.
    ``background`` (the serial train): when nothing waits on the remote, the push
    of base runs while the next landing rebases, checks and gates, and is
    settled (``settle_push``) before base moves again, the train ends or stops.
    ``may_stop`` False: a refused push is only said (the train ends or stops anyway).
    """
    if not train.journal["push"] or train.is_done(agent, PUSH):
        return
    entry = train.agent(agent)
    git, remote = train.ws.git, train.ws.plan.remote
    landed = entry["landed"]
    train.begin(agent, PUSH)
    if background and _may_push_in_background(train, agent):
        settle_push(train)  # none as a rule: base moved once since the last one started
        wait = gitmod.in_background(lambda: gitmod.push(git, remote, landed, train.base))
        train.push_in_flight = PushInFlight(agent, landed, wait)
        return
    try:
        gitmod.push(git, remote, landed, train.base)
    except GitError as err:
        if not _pushed_after_all(train, agent, landed, err, may_stop):
            return
    _base_pushed(train, agent)


def _may_push_in_background(train: Train, agent: int) -> bool:
    """Whether nothing waits on the remote holding this landing before the next one starts.

    With ``[agents] hosts`` the shared state marks it merged (other hosts read
    the remote), an ``on_merge`` hook may read the remote, and an agent branch
    on the remote is pushed with its lease, after base: those push at once.
    """
    plan = train.ws.plan
    return (
        not plan.hosts
        and not plan.hook("on_merge").strip()
        and train.agent(agent).get("remote_head") is None
    )


def settle_push(train: Train, *, may_stop: bool = True) -> None:
    """Wait for the push running in the background, then journal it (in memory) as done.

    Refused: the train stops with the message of a push made at once; with
    ``may_stop`` False (the train is stopping already, for its own reason) it
    is only said, and the resumed train pushes it again (``push_landed``).
    """
    pending = train.push_in_flight
    if pending is None:
        return
    try:
        pending.wait()
    except Exception as err:  # it ended; an interrupt leaves it to ``wait_for_push``
        train.push_in_flight = None
        if not isinstance(err, GitError):
            raise
        if not _pushed_after_all(train, pending.agent, pending.commit, err, may_stop):
            return
    train.push_in_flight = None
    _base_pushed(train, pending.agent)


def wait_for_push(train: Train) -> None:
    """Let the push running in the background end (interrupted: journal nothing of it; the
    resumed train pushes again, a no-op when it went through)."""
    pending, train.push_in_flight = train.push_in_flight, None
    if pending is not None:
        with processes.shielded(), suppress(Exception):  # a second signal cannot cut it short
            pending.wait()


def push_landed(train: Train, *, may_stop: bool = True) -> None:
    """Push what landed but was not pushed: a push left in the background by a crash or a
    stop, its agent gone from the queue (a landing still queued pushes in its own turn)."""
    if not train.journal["push"]:
        return
    for landing in list(train.journal["landed"]):
        agent = int(landing["agent"])
        if agent in train.queue or train.is_done(agent, PUSH):
            continue
        if train.agent(agent).get("landed") == landing["commit"]:  # else landed again since
            step_push(train, agent, may_stop=may_stop)


def _pushed_after_all(train: Train, agent: int, landed: str, err: GitError, may_stop: bool) -> bool:
    """A refused push of base counts as made when the remote holds ``landed`` already (a push
    of it before a crash, and maybe the next landing's after it); else the train stops, or
    (not ``may_stop``) it is only said and False returned."""
    git, remote = train.ws.git, train.ws.plan.remote
    try:
        tip = gitmod.remote_branch(git, remote, train.base)
    except GitError:  # the remote cannot be reached: it holds nothing we know of
        tip = None
    if tip is not None and gitmod.is_ancestor(git, landed, tip):
        return True
    message = (
        f"{remote} refused {train.base} at {landed[:12]} ({err}); it landed locally. "
        f"Someone else pushed to {remote}/{train.base}: "
        "reconcile, then paradev merge --continue"
    )
    if may_stop:
        raise train.stop(agent, "push", message) from None
    train.out(f"paradev: warning: {message}")
    return False


def _base_pushed(train: Train, agent: int) -> None:
    """Base is on the remote: push the agent branch (when it is there), journal, say it."""
    entry = train.agent(agent)
    if entry.get("remote_head") is not None:
        _push_agent_branch(train, agent, entry["landed"], entry["remote_head"])
    train.finish(agent, PUSH)
    train.out(f"agent {agent}: pushed {train.base} to {train.ws.plan.remote}")


def _push_agent_branch(train: Train, agent: int, head: str, lease: str) -> None:
    git, remote, branch = train.ws.git, train.ws.plan.remote, train.branch(agent)
    try:
        gitmod.push(git, remote, head, branch, lease=lease)
    except GitError as err:
        if gitmod.remote_branch(git, remote, branch) != head:  # not a re-run of a done push
            refuse_unshared_branch(train.ws.plan, branch, str(err))
            train.out(f"paradev: warning: {branch} not pushed to {remote}: {err}")


def step_mark(train: Train, agent: int, *, ride_along: bool = False) -> None:
    """Mark the agent's completed tasks merged (time, commit), in the journal alone.

    One small write: every read of the state applies the journal's landings
    to its task records (``StateStore.read``), and the train's end writes
    them into the state file. Persistent writes grow with the train, not with
    the history. A crash before the write redoes this step. ``ride_along``
    (the serial train): no write of its own unless ``on_merge`` hooks run
    next; the next write (the next rebase's, a stop's, the train's end) carries it.
    """
    if train.is_done(agent, MARK):
        return
    state = train.task_view(agent)  # read after any crash: a resumed train reads it anew
    train.drop_task_view(agent)
    entry = train.agent(agent)
    landed = entry["landed"]
    entry["step"] = MARK
    entry["done"].append(MARK)
    issues: list[int] = []
    lane = entry.get("lane_issue")  # a lane lands its one task (paradev.lanes)
    for task in train.ws.tasks_of(agent):
        if lane is not None and task.issue != lane:
            continue
        record = state.tasks.get(task.issue)
        if record is not None and record.status == COMPLETED:
            issues.append(task.issue)
        elif record is not None and record.status == MERGED and record.merged_commit == landed:
            issues.append(task.issue)  # marked before a crash (an older paradev's state write)
    entry["issues"] = issues
    landing = {"agent": agent, "commit": landed, "issues": issues, "merged_at": now()}
    train.journal["landed"].append(landing)
    if not ride_along or train.ws.plan.hook("on_merge").strip():
        train.save()
    merged = ", ".join(f"#{i}" for i in issues) or "no tasks"
    train.out(f"agent {agent}: landed {merged} at {landed[:12]}")


def step_hooks(train: Train, agent: int) -> None:
    """Run on_merge for each task just merged; a failing hook is only a warning."""
    if train.is_done(agent, HOOKS):
        return
    from paradev.hooks import run_hook

    if not train.ws.plan.hook("on_merge").strip():
        train.finish(agent, HOOKS)  # nothing to run: the queue write carries it
        return
    train.begin(agent, HOOKS)  # a crash before they end runs them again
    entry = train.agent(agent)
    state = train.ws.store.read()
    for issue in entry.get("issues", []):
        task = train.ws.plan.task(issue)
        if task is None:
            continue
        result = run_hook(
            train.ws, "on_merge", task, state.tasks.get(issue), commit=entry["landed"]
        )
        if result is not None and not result.ok:
            train.out(f"paradev: warning: {result.describe()}")
    train.finish(agent, HOOKS, flush=True)
