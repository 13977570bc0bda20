"""The task lifecycle: assign -> start -> complete, and the status report.

Which task an agent works on comes from the plan (its order) and the state
(each task's status); per-agent totals are derived, never stored twice.
"""

from __future__ import annotations

from pathlib import Path

# coverage is imported by start/complete/drop alone: status, run in loops, never needs it.
from paradev import attention
from paradev import plan as plan_mod
from paradev.errors import GitError, PreconditionError
from paradev.git import (
    STATUS_ARGS,
    Git,
    Processes,
    Tips,
    ahead_behind_of,
    at_once,
    changed_paths,
    current_branch,
    dirty_and_untracked,
    dirty_paths,
    merge_base,
    merge_ff_only,
    plain_history_args,
    refs_of_plain_history,
    resolve_refs,
    side_by_side,
    tips_and_merge_base,
    update_ref,
)
from paradev.hosts import elsewhere, owners
from paradev.labels import AgentLabel, agent_label, landing_candidates
from paradev.landed import base_just_read
from paradev.plan import Task
from paradev.state import (
    ASSIGNED,
    COMPLETED,
    DONE_STATUSES,
    DROPPED,
    IN_PROGRESS,
    MERGED,
    OPEN_STATUSES,
    RESTARTABLE,
    State,
    TaskRecord,
    now,
)
from paradev.text import printable
from paradev.workspace import Workspace

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from subprocess import Popen
    from typing import Any

    from paradev.lanes import Lane
    from paradev.tasklease import Sight


def _same_task(task: Task, title: str, hours: float, batch: str | None) -> bool:
    return task.title == title and task.hours == hours and batch in (None, task.batch)


def current_task(ws: Workspace, state: State, agent: int) -> Task | None:
    """The agent's task in progress, if any."""
    return next((t for t in ws.tasks_of(agent) if state.status(t.issue) == IN_PROGRESS), None)


def next_task(ws: Workspace, state: State, agent: int) -> Task | None:
    """The agent's first planned or assigned task, in plan order."""
    return next((t for t in ws.tasks_of(agent) if state.status(t.issue) in OPEN_STATUSES), None)


def waiting_for_dependencies(state: State, task: Task) -> str | None:
    """Why ``task`` cannot start yet: a depends_on issue has not landed (None when none).

    start and run-batch both ask this, so they agree on what may start and say it alike.
    """
    waiting = [d for d in task.depends_on if state.status(d) != MERGED]
    if not waiting:
        return None
    deps = ", ".join(f"#{d}" for d in waiting)
    return f"#{task.issue} (agent {task.agent}) waits for {deps} to be merged"


def assign(
    ws: Workspace, agent: int, issue: int, title: str, hours: float, batch: str | None = None
) -> Task:
    """Add the task to plan.toml (layout kept) and mark it assigned.

    The plan is read again under the state lock, so concurrent ``assign`` runs
    never lose each other's tasks. An issue already in the plan for this
    agent is only marked assigned.
    """
    ws.check_agent(agent)
    if not title.strip():
        raise PreconditionError("TITLE must not be empty; say what the task is")
    if batch is not None and not batch.strip():
        raise PreconditionError("--batch must name a batch, not only spaces")
    with ws.store.update() as state:
        if state.status(issue) not in OPEN_STATUSES:
            raise PreconditionError(
                f"issue #{issue} is already {state.status(issue)}; nothing to assign"
            )
        plan = plan_mod.load(ws.plan.path, ws.repo.main_root)
        task = plan.task(issue)
        if task is None:
            plan = plan_mod.add_task(
                ws.plan.path,
                ws.repo.main_root,
                agent=agent,
                issue=issue,
                title=title,
                hours=hours,
                batch=batch,
            )
            task = plan.task(issue)
            assert task is not None  # just added
        elif task.agent != agent:
            raise PreconditionError(
                f"issue #{issue} is already planned for agent {task.agent}; "
                "edit plan.toml to move it, or pick another issue number"
            )
        elif not _same_task(task, title, hours, batch):
            raise PreconditionError(
                f"issue #{issue} is already in the plan as {task.title!r} ({task.hours:g}h, "
                f"batch {task.batch!r}); edit plan.toml to change it, or pick another issue number"
            )
        record = state.task(issue, agent)
        record.status, record.assigned_at = ASSIGNED, now()
    return task


def require_own_branch(ws: Workspace, agent: int) -> Git:
    """git in the agent's worktree, which must have the agent's branch checked out.

    Work committed on another branch would never be counted, merged or seen
    by the conflict checks: say so before recording anything.
    """
    agent_git = ws.agent_git(agent)
    branch = ws.branch(agent)
    current = current_branch(agent_git.cwd)
    if current != branch:
        raise PreconditionError(
            f"agent {agent}'s worktree {agent_git.cwd} is on {current or 'a detached HEAD'}, "
            f"not {branch}; finish what is in progress there and run "
            f"'git -C {agent_git.cwd} switch {branch}' first"
        )
    return agent_git


def start(ws: Workspace, agent: int, issue: int | None = None) -> tuple[Task, TaskRecord]:
    """Mark the agent's next task (or ``issue``) in progress and record its base commit."""
    from paradev import coverage

    ws.check_agent(agent)
    require_own_branch(ws, agent)
    with ws.store.update() as state:
        busy = current_task(ws, state, agent)
        if busy is not None:
            raise PreconditionError(
                f"agent {agent} is already working on #{busy.issue}; "
                f"run 'paradev complete {agent}' first"
            )
        task = next_task(ws, state, agent) if issue is None else ws.plan.task(issue)
        if task is None and issue is not None:
            raise PreconditionError(
                f"issue #{issue} is not in the plan; add it with 'paradev assign'"
            )
        if task is None:
            raise PreconditionError(
                f"agent {agent} has no planned or assigned task left; add one with 'paradev assign'"
            )
        if task.agent != agent or state.status(task.issue) not in (*OPEN_STATUSES, *RESTARTABLE):
            raise PreconditionError(
                f"issue #{task.issue} is {state.status(task.issue)} for agent {task.agent}; "
                f"agent {agent} cannot start it"
            )
        waiting = waiting_for_dependencies(state, task)
        if waiting:
            raise PreconditionError(
                f"{waiting}; finish and land that work first ('paradev merge'), then start again"
            )
        held = coverage.settle_drops(ws, state, agent)
        if held:
            raise PreconditionError(f"cannot start #{task.issue}: {held[0]}")
        tips = agent_tips(ws, agent)
        moved = catch_up(ws, agent, tips)
        record = state.task(task.issue, agent)
        if ws.plan.hosts:  # the task's lease names this host; run-batch renews it
            from paradev.tasklease import take

            record.host = take(ws, task.issue)
        record.status, record.started_at = IN_PROGRESS, now()
        record.assigned_at = record.assigned_at or record.started_at
        record.base_commit = moved or _fork_point(ws, agent, tips)
        record.start_commit = moved or (tips.right if tips else coverage.branch_tip(ws, agent))
        record.error = None
        record.left_uncommitted = []
    return task, record


def agent_tips(ws: Workspace, agent: int) -> Tips | None:
    """Base's tip, the agent branch's tip and their fork point: one git process."""
    return tips_and_merge_base(
        ws.git, f"refs/heads/{ws.plan.base}", f"refs/heads/{ws.branch(agent)}"
    )


def catch_up(ws: Workspace, agent: int, tips: Tips | None = None) -> str | None:
    """Fast-forward an agent branch with no commits of its own to base; return the new tip.

    A task (a retried one too) must start from today's base, not from where
    an earlier run left the branch. The move is git's own fast-forward in the
    agent's worktree (never a ref update under a checked-out branch), and only
    when that worktree is clean: uncommitted work stays exactly where it is.
    ``tips``: ``agent_tips`` already read (None: read here).
    """
    tips = tips or agent_tips(ws, agent)
    if tips is None or tips.right == tips.left or tips.merge_base != tips.right:
        return None  # missing, already at base, or with commits of its own
    worktree = ws.worktree(agent)
    if dirty_paths(worktree):
        return None
    merge_ff_only(worktree, tips.left)
    return tips.left


def _fork_point(ws: Workspace, agent: int, tips: Tips | None) -> str | None:
    """``fork_point`` from the tips already read (several merge bases: asked again)."""
    if tips is not None and tips.merge_base is not None:
        return tips.merge_base
    return fork_point(ws, agent)


def fork_point(ws: Workspace, agent: int) -> str | None:
    """Where the agent branch left base (their merge-base), not base's tip: the task's real base."""
    base = f"refs/heads/{ws.plan.base}"
    return merge_base(ws.git, base, f"refs/heads/{ws.branch(agent)}") or ws.git.rev(base)


class Completion:
    """What ``complete`` recorded.

    A plain class: ``status`` imports this module, and a ``typing.NamedTuple``
    costs ~0.2 ms of its start-up.
    """

    __slots__ = ("record", "task", "uncommitted")

    def __init__(self, task: Task, record: TaskRecord, uncommitted: list[str]) -> None:
        self.task = task
        self.record = record
        self.uncommitted = uncommitted


class EmptyWorkError(PreconditionError):
    """``complete`` on a branch with no commit since the task started."""


def complete(ws: Workspace, agent: int, *, empty: bool = False, clean: bool = False) -> Completion:
    """Mark the task in progress completed, with files from the branch's real diff.

    A branch with no new commit is refused unless ``empty`` says the task
    needed no change: a task marked done with nothing to land would be skipped
    by run-batch and merge alike, for ever. ``clean``: the caller has just seen
    the agent's work tree clean (its agent ended): nothing is left uncommitted,
    and no second ``git status`` looks again.
    """

    ws.check_agent(agent)
    agent_git = require_own_branch(ws, agent)
    with ws.store.update() as state:
        task = current_task(ws, state, agent)
        if task is None:
            raise PreconditionError(
                f"agent {agent} has no task in progress; run 'paradev start {agent}'"
            )
        record = state.task(task.issue, agent)
        branch = ws.branch(agent)
        head, start = _head_and_work_start(ws, state, record)
        if start == head and not empty:
            raise EmptyWorkError(
                f"#{task.issue} has no commit on {branch} since it started ({head[:12]}); "
                f"commit the work first, or run 'paradev complete {agent} --empty' "
                "if the task needed no change"
            )
        if ws.plan.hosts:  # pushed before it is recorded: any host's train may land it
            from paradev.hosts import publish_branch

            publish_branch(ws.git, ws.plan.remote, branch, head)
        record.start_commit = start
        if clean:
            files, left = changed_paths(ws.git, ws.plan.base, branch), []
        else:
            files, left = at_once(
                lambda: changed_paths(ws.git, ws.plan.base, branch),
                lambda: dirty_paths(agent_git.cwd),
            )
        record.files_modified = files
        record.head_commit = head
        record.status, record.completed_at = COMPLETED, now()
        uncommitted = sorted(left)
        record.left_uncommitted = uncommitted
    if ws.plan.hosts:
        from paradev.tasklease import let_go

        let_go(ws, task.issue)
    return Completion(task=task, record=record, uncommitted=uncommitted)


def _head_and_work_start(ws: Workspace, state: State, record: TaskRecord) -> tuple[str, str | None]:
    """The branch's head and where the task's work on it begins (``coverage.work_start``).

    The usual case, the branch still holding the commit the task started
    from, is one ``rev-parse`` instead of two processes one after the other.
    """
    from paradev import coverage

    branch = f"refs/heads/{ws.branch(record.agent)}"
    began = record.start_commit
    if began and all(c in "0123456789abcdef" for c in began):  # a commit id, never an option
        tips = tips_and_merge_base(ws.git, began, branch)
        if tips is not None and tips.merge_base == tips.left:
            return tips.right, tips.left
    head = coverage.branch_tip(ws, record.agent)
    assert head is not None  # checked out in the agent's worktree
    return head, coverage.work_start(ws, state, record, head)


# -- reopen and drop ------------------------------------------------------------------


REOPENABLE = (COMPLETED, *RESTARTABLE, "gate_failed")  # gate_failed: when the train records it


def _refuse_during_train(state: State, agent: int, what: str) -> None:
    """A train in progress owns the branches it lands: no task of them changes under it."""
    train = state.train
    if train is not None and agent in train.get("queue", []):
        raise PreconditionError(
            f"a merge train is landing agent {agent}'s work; finish it first "
            f"('paradev merge --continue' or '--abort'), then {what}"
        )


def reopen(ws: Workspace, issue: int) -> tuple[Task, TaskRecord]:
    """Take a completed, failed or interrupted task back into work on its agent; keep its branch.

    A dropped task comes back too while its commits are on the branch, or when
    the branch still stands where its work began (they return from the backup).
    """
    task = ws.plan.task(issue)
    if task is None:
        raise PreconditionError(
            f"issue #{issue} is not in the plan; put it back in plan.toml to reopen it"
        )
    agent = task.agent
    takeover = _take_over_if_elsewhere(ws, issue)
    require_own_branch(ws, agent)
    with ws.store.agent_lock(agent, "paradev reopen"), ws.store.update() as state:
        status = state.status(issue)
        if takeover is not None and status == IN_PROGRESS:
            record = state.task(issue, agent)
            record.host = takeover
            return task, record
        if status not in (*REOPENABLE, DROPPED):
            raise PreconditionError(_not_reopenable(issue, agent, status))
        _refuse_during_train(state, agent, f"reopen #{issue}")
        busy = current_task(ws, state, agent)
        if busy is not None:
            raise PreconditionError(
                f"agent {agent} is working on #{busy.issue}; complete it first "
                f"('paradev complete {agent}'), then reopen #{issue}"
            )
        record = state.task(issue, agent)
        if status == DROPPED:
            _restore_dropped(ws, record)
        record.status = IN_PROGRESS
        record.started_at = record.started_at or now()
        record.completed_at = record.failed_at = record.error = record.dropped_at = None
        record.head_commit = None
        record.files_modified = []
    return task, record


def _take_over_if_elsewhere(ws: Workspace, issue: int) -> str | None:
    """A task in progress on another host: taken here once its lease expired; this host."""
    if not ws.plan.hosts:
        return None
    from paradev import tasklease

    record = tasklease.in_progress_elsewhere(ws, issue)
    return tasklease.take_over(ws, record) if record is not None else None


def _not_reopenable(issue: int, agent: int, status: str) -> str:
    if status == MERGED:
        return f"#{issue} is merged: its work is on base; plan a new task for more work on it"
    if status == IN_PROGRESS:
        return f"#{issue} is already in progress on agent {agent}"
    if status in OPEN_STATUSES:
        return f"#{issue} has not started ({status}); start it with 'paradev start {agent}'"
    return f"#{issue} is {status}; only completed, failed, interrupted or dropped tasks reopen"


def _restore_dropped(ws: Workspace, record: TaskRecord) -> None:
    """Bring a dropped task's commits back onto its branch (a fast-forward to the backup)."""
    from paradev import coverage

    if coverage.drop_on_branch(ws, record) or not record.backup_ref:
        return
    backup = ws.git.rev(record.backup_ref)
    worktree = ws.worktree(record.agent)
    tip = coverage.branch_tip(ws, record.agent)
    if backup is None or tip != record.start_commit or dirty_paths(worktree):
        kept = record.backup_ref
        raise PreconditionError(
            f"#{record.issue}'s commits are kept at {kept}, but {ws.branch(record.agent)} has "
            f"moved on (or {worktree} has uncommitted changes); manual: 'git -C {worktree} "
            f"cherry-pick {(record.start_commit or '')[:12]}..{kept}', then reopen #{record.issue}"
        )
    merge_ff_only(worktree, backup)


class Drop:
    """What ``drop`` did with the task and its commits (plain: see ``Completion``)."""

    __slots__ = ("agent", "backup", "commits", "held", "task_issue")

    def __init__(
        self,
        task_issue: int,
        agent: int,
        commits: int,  # commits of its work
        backup: str | None,  # the ref that keeps them
        held: str | None,  # why they are still on the branch (they go before the next task)
    ) -> None:
        self.task_issue = task_issue
        self.agent = agent
        self.commits = commits
        self.backup = backup
        self.held = held


def drop(ws: Workspace, issue: int) -> Drop:
    """Never run the task; set its commits aside under a backup ref, off its agent's branch.

    Works for an issue that left the plan but has a record (a renamed issue):
    its stranded work needs a way out too. Holds the agent, so no run-batch
    agent is writing the commits being moved and no train is landing them.
    """
    from paradev import coverage

    task = ws.plan.task(issue)
    owner = task if task is not None else ws.store.read().tasks.get(issue)
    if owner is None:
        raise PreconditionError(f"issue #{issue} is neither in the plan nor in the state")
    with ws.store.agent_lock(owner.agent, "paradev drop"), ws.store.update() as state:
        agent = owner.agent
        status = state.status(issue)
        if status == MERGED:
            raise PreconditionError(
                f"#{issue} is merged: its work is on base; revert it there if it must go"
            )
        if status == DROPPED:
            raise PreconditionError(f"#{issue} is already dropped; 'paradev reopen {issue}'")
        _refuse_during_train(state, agent, f"drop #{issue}")
        record = state.task(issue, agent)
        commits, backup = _set_aside(ws, state, record)
        record.status, record.dropped_at = DROPPED, now()
        held = None
        if coverage.drop_on_branch(ws, record):
            held = coverage.drop_obstacle(ws, state, record)
            if held is None:
                coverage.take_off(ws, record)
    return Drop(issue, agent, commits, backup, held)


def _set_aside(ws: Workspace, state: State, record: TaskRecord) -> tuple[int, str | None]:
    """Keep the task's commits under ``refs/paradev/backup/<branch>/dropped-<issue>-<time>``."""
    from paradev import coverage

    if record.status in OPEN_STATUSES:
        return 0, None
    tip = coverage.branch_tip(ws, record.agent)
    end = record.head_commit or tip
    if end is None:
        return 0, None
    start = coverage.work_start(ws, state, record, end)
    commits = coverage.count_commits(ws, start, end)
    record.start_commit, record.head_commit = start or end, end
    if not commits:
        return 0, None
    name = f"dropped-{record.issue}-{coverage.stamp()}"
    backup = f"refs/paradev/backup/{ws.branch(record.agent)}/{name}"
    update_ref(ws.git, backup, end, "", reason=f"paradev drop #{record.issue}")
    record.backup_ref = backup
    return commits, backup


# -- status --------------------------------------------------------------------------


_TIMES = ("started_at", "completed_at", "failed_at", "merged_at", "dropped_at")


def _task_json(task: Task, record: TaskRecord | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "issue": task.issue,
        "title": task.title,
        "hours": task.hours,
        "batch": task.batch,
        "status": record.status if record else "planned",
    }
    if record:
        for key in (*_TIMES, "base_commit", "head_commit", "log", "backup_ref"):
            if getattr(record, key):
                data[key] = getattr(record, key)
        error = attention.task_error(record)
        if error:
            data["error"] = error
        if record.files_modified:
            data["files_modified"] = record.files_modified
        if record.left_uncommitted:
            data["left_uncommitted"] = record.left_uncommitted
        if record.cost_usd is not None:  # as its agent reported it
            data["cost_usd"] = record.cost_usd
        if record.tokens is not None:
            data["tokens"] = record.tokens
        if record.status == IN_PROGRESS and record.agent_pid is not None:
            from paradev import processes  # only when an agent may be running

            data["agent_pid"] = record.agent_pid
            data["agent_running"] = processes.alive(record.agent_pid, record.agent_started)
            if data["agent_running"]:
                data["agent_elapsed_seconds"] = _rounded(processes.age(record.agent_started))
                data["agent_quiet_seconds"] = _rounded(_since_written(record.log))
    return data


def _since_written(log: str | None) -> float | None:
    """Seconds since the agent last wrote to its log: a quiet agent may be stuck."""
    import os
    import time

    try:
        return max(0.0, time.time() - os.stat(log).st_mtime) if log else None
    except OSError:
        return None


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _worktree_jobs(ws: Workspace, agents: list[int]) -> dict[int, Path]:
    """The work trees of ``agents`` that exist: each gets its ``git status`` (a broken one too)."""
    paths = {agent: ws.worktree(agent) for agent in agents}
    return {agent: path for agent, path in paths.items() if (path / ".git").exists()}


def _worktree_facts(
    ws: Workspace, agents: list[int], trees: dict[int, Path], running: Processes
) -> dict[int, tuple[dict[str, Any], list[str]]]:
    """Each agent's work tree: there, dirty, its untracked paths, its branch.

    ``running``: the ``git status`` of every one of ``trees``, in that order from
    job 1 on, started before status read the refs and the state.
    """
    found: dict[int, tuple[dict[str, Any], list[str]]] = {}
    results = dict(zip(trees, range(1, len(trees) + 1), strict=True))
    for agent in agents:
        dirty: bool | None = None
        untracked: list[str] = []
        broken = False
        if agent in trees:
            try:
                dirty, untracked = dirty_and_untracked(running.result(results[agent]).stdout)
            except GitError:  # one broken worktree must not hide every other agent
                broken = True
        exists = agent in trees
        facts = {
            "exists": exists,
            "broken": broken,
            "dirty": dirty,
            "untracked": len(untracked),
            "checked_out": current_branch(trees[agent]) if exists and not broken else None,
        }
        found[agent] = facts, untracked
    return found


def _branch_facts(
    ws: Workspace,
    agent: int,
    worktree: dict[str, Any],
    counts: tuple[int, int] | None,
    host: str | None,
) -> dict[str, Any]:
    """An agent's entry beyond its tasks: ahead/behind base, and its work tree (when here).

    An agent of another ``host`` is its branch as this clone last fetched it
    from the remote (no network: ``paradev sync``); its work tree is there.
    """
    here = host is None
    facts = {
        "exists": worktree["exists"] if here else False,
        "broken": worktree["broken"] if here else False,
        "ahead": counts[0] if counts else None,
        "behind": counts[1] if counts else None,
        "dirty": worktree["dirty"] if here else None,
        "untracked": worktree["untracked"] if here else 0,
        "checked_out": worktree["checked_out"] if here else None,
    }
    if not here:
        facts.update(host=host, here=False, pushed_branch=f"{ws.plan.remote}/{ws.branch(agent)}")
    return facts


def _name_hosts(ws: Workspace, facts: dict[int, dict[str, Any]]) -> None:
    """With ``[agents] hosts``, every agent's entry names its host (this one's included)."""
    hosted = owners(ws.plan)
    for agent, found in facts.items():
        if "host" not in found and ws.plan.hosts:
            found.update(host=hosted.get(agent), here=agent in hosted)


AHEAD_BEHIND_CACHE = "ahead-behind.kept"  # under <common>/paradev: see paradev.commitcache


def _tracked_ref(ws: Workspace, agent: int, away: dict[int, str]) -> str:
    """The ref status reads: the local branch, or as pushed when another host runs the agent."""
    prefix = f"refs/remotes/{ws.plan.remote}/" if agent in away else "refs/heads/"
    return prefix + ws.branch(agent)


def _status_refs(ws: Workspace, away: dict[int, str]) -> list[str]:
    """Every ref status reads: base first, each agent's branch, as pushed for other hosts'."""
    agents = range(1, ws.plan.agent_count + 1)
    refs = [f"refs/heads/{ws.plan.base}", *(f"refs/heads/{ws.branch(a)}" for a in agents)]
    return refs + [_tracked_ref(ws, a, away) for a in sorted(away)]


def _state_and_counts(
    ws: Workspace, away: dict[int, str], refs: list[str], read_refs: str
) -> tuple[State, dict[str, str], dict[int, tuple[int, int] | None]]:
    """The state, every ref status reads, each agent's (ahead, behind).

    ``read_refs``: the output of ``refs``' one ``for-each-ref`` (``git.plain_history_args``).
    The state's landed tasks are looked for on base as just read (no second git call).

    A count depends on the two commits alone, so it is kept by their ids
    (``paradev.commitcache``): a branch or base that moved has new ids and is
    counted anew; only those cost a ``rev-list``, all of them side by side.
    """
    from paradev.commitcache import CommitCache

    agents = range(1, ws.plan.agent_count + 1)
    base = refs[0]
    tips, plain = refs_of_plain_history(read_refs, refs, ws.repo.common_dir)
    base_just_read(ws.store.recognise, tips.get(base))
    state = ws.store.read()
    cache = CommitCache(ws.store.dir / AHEAD_BEHIND_CACHE, enabled=plain)
    pairs = {
        a: (tips[base], tips[ref])
        for a in agents
        if base in tips and (ref := _tracked_ref(ws, a, away)) in tips
    }

    def count(missing: list[int]) -> dict[int, tuple[int, int] | None]:
        found = side_by_side(lambda agent: ahead_behind_of(ws.git, *pairs[agent]), missing)
        return dict(zip(missing, found, strict=True))

    keys = {agent: "...".join(pair) for agent, pair in pairs.items()}
    answers = cache.lookup(keys, _is_count, count)
    counts: dict[int, tuple[int, int] | None] = {a: None for a in agents}
    counts.update({a: (n[0], n[1]) for a, n in answers.items() if n is not None})
    return state, tips, counts


def _is_count(kept: Any) -> bool:
    return isinstance(kept, tuple) and len(kept) == 2 and all(type(n) is int for n in kept)


def tasks_by_agent(ws: Workspace) -> dict[int, list[Task]]:
    """agent -> its tasks in plan order, built in one pass (not one scan of the plan per agent)."""
    index: dict[int, list[Task]] = {a: [] for a in range(1, ws.plan.agent_count + 1)}
    for task in ws.plan.tasks():
        index.setdefault(task.agent, []).append(task)
    return index


def _agent_json(
    ws: Workspace,
    state: State,
    agent: int,
    tasks: list[Task],
    facts: dict[str, Any],
    label: AgentLabel,
    gone: dict[int, Sight],
) -> dict[str, Any]:
    """One agent's entry of the status report (``gone``: task leases by hand or run out)."""
    current = next((t for t in tasks if state.status(t.issue) == IN_PROGRESS), None)
    done = [t for t in tasks if state.status(t.issue) in DONE_STATUSES]
    return {
        "branch": ws.branch(agent),
        "worktree": str(ws.worktree(agent)),
        "state": label.label,
        "current_task": _hosted(
            ws, state, _task_json(current, state.tasks.get(current.issue)), gone
        )
        if current
        else None,
        "completed_tasks": [_task_json(t, state.tasks.get(t.issue)) for t in done],
        "merged_issues": [t.issue for t in done if state.status(t.issue) == MERGED],
        "not_landed_issues": [t.issue for t in done if state.status(t.issue) == COMPLETED],
        "total_hours": sum(t.hours for t in done),
        "tasks": [_task_json(t, state.tasks.get(t.issue)) for t in tasks],
        **facts,
    }


def status(
    ws: Workspace, early: Mapping[tuple[str, tuple[str, ...]], Popen[str]] | None = None
) -> dict[str, Any]:
    """The status report as JSON-ready data (the design's stable keys).

    Every work tree's ``git status`` and the one ``for-each-ref`` of the refs
    start first and run while status reads the state and the plan: the report
    waits for the slowest of them, not for each in turn. ``early``: those the
    command started before loading this module (``context.start_statuses``).
    """
    agents = range(1, ws.plan.agent_count + 1)
    away = elsewhere(ws.plan, ws.git)  # other hosts' agents: their branches from the remote
    local = [a for a in agents if a not in away]
    trees = _worktree_jobs(ws, local)
    refs = _status_refs(ws, away)
    jobs = [(ws.git.cwd, plain_history_args(refs))]  # job 0; the trees' from 1 on
    statuses = [(path, STATUS_ARGS) for path in trees.values()]
    with Processes([*jobs, *statuses], early=early) as running:
        read_refs = running.result(0).stdout
        state, tips, counts = _state_and_counts(ws, away, refs, read_refs)
        index = tasks_by_agent(ws)
        labels = {agent: agent_label(state, index[agent]) for agent in agents}
        refs = _order_refs(ws, state)
        asked = {f"refs/heads/{ws.branch(a)}" for a in agents}
        unread = [ref for ref in refs[1:] if ref not in asked]
        if unread:  # an old order naming agents the plan no longer has
            tips = {**tips, **resolve_refs(ws.git, unread)}
        worktrees = _worktree_facts(ws, local, trees, running)
    idle: tuple[dict[str, Any], list[str]] = ({}, [])
    facts = {
        a: _branch_facts(ws, a, worktrees.get(a, idle)[0], counts[a], away.get(a)) for a in agents
    }
    _name_hosts(ws, facts)
    untracked = {a: worktrees.get(a, idle)[1] for a in agents}
    stale = attention.order_staleness(
        state,
        tips.get(refs[0]),
        {a: tips[ref] for a, ref in zip(state.merge_order, refs[1:], strict=True) if ref in tips},
    )
    # Nothing left to order, or a train following its own queue: no word of an old order.
    landing = bool(landing_candidates(state)) and state.train is None
    gone: dict[int, Sight] = {}
    if ws.plan.hosts:  # other hosts' task leases: one ref read
        from paradev.tasklease import lease_sights

        gone = lease_sights(ws, state)
    waiting = _waiting_lanes(ws, state)
    return {
        "base": ws.plan.base,
        "base_exists": refs[0] in tips,
        "agents": {
            str(agent): {
                **_agent_json(ws, state, agent, index[agent], facts[agent], labels[agent], gone),
                "lane": _lane_json(ws, waiting.get(agent)),
            }
            for agent in agents
        },
        "merge_order": [] if stale else state.merge_order,
        "merge_order_stale": stale if stale and landing else None,
        "train": attention.train_view(ws, state),
        "warnings": attention.warnings(ws, state, labels, facts, untracked),
    }


def _waiting_lanes(ws: Workspace, state: State) -> dict[int, Lane]:
    """The lanes whose task waits to land; ``paradev.lanes`` (and its imports) loaded only
    where ``paradev run`` made one, to keep ``status`` fast."""
    if not (ws.store.dir / "lanes.json").exists():
        return {}
    from paradev import lanes

    return lanes.waiting(ws, state)


def _lane_json(ws: Workspace, lane: Lane | None) -> dict[str, Any] | None:
    """The agent's completed task that lands from its lane while it works on the next."""
    if lane is None:
        return None
    from paradev import lanes

    return {
        "issue": lane.issue,
        "head": lane.head,
        "branch": lanes.branch(lane.agent),
        "worktree": str(lanes.tree(ws, lane.agent)),
        "held": lane.held,
    }


def _hosted(
    ws: Workspace, state: State, data: dict[str, Any], gone: dict[int, Sight]
) -> dict[str, Any]:
    """A task in progress names its host, and whether it was started by hand there (its lease
    never expires) or that host's lease went unrenewed.

    ``gone``: ``tasklease.lease_sights``, read once for every agent.
    """
    if not ws.plan.hosts:
        return data
    record = state.tasks.get(data["issue"])
    if record is not None and record.host:
        data["host"] = record.host
        sight = gone.get(record.issue)
        if sight is not None and sight.by_hand:
            data["started_by_hand"] = True
        elif sight is not None:
            data["host_vanished"] = True
            data["lease_unchanged_seconds"] = round(sight.still)
    return data


def _order_refs(ws: Workspace, state: State) -> list[str]:
    """Base, then the branch of each agent of the saved merge order: what its staleness needs."""
    return [
        f"refs/heads/{ws.plan.base}",
        *(f"refs/heads/{ws.branch(a)}" for a in state.merge_order),
    ]


def _agent_process(task: dict[str, Any], run_alive: bool) -> str:
    """Whether the agent launched for a task in progress still runs; ``run_alive``: a live
    ``paradev run`` records the end of an agent that just exited, so nothing is to be done."""
    if "agent_pid" not in task:
        return ""
    if task.get("agent_running"):
        return f"; agent pid {task['agent_pid']} running"
    if run_alive:
        return f"; agent pid {task['agent_pid']} exited: the running 'paradev run' records it"
    return f"; agent pid {task['agent_pid']} gone: 'paradev run-batch' starts the task again"


def _running_line(task: dict[str, Any]) -> str:
    """``agent pid 4242 for 5m 12s, last output 3s ago``: is it working or stuck?"""
    elapsed, quiet = task.get("agent_elapsed_seconds"), task.get("agent_quiet_seconds")
    line = f"agent pid {task['agent_pid']}"
    line += f" for {_duration(elapsed)}" if elapsed is not None else ""
    line += f", last output {_duration(quiet)} ago" if quiet is not None else ""
    return line


def _duration(seconds: float) -> str:
    """``312`` -> ``5m 12s``, ``3725`` -> ``1h 02m``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def render_status(report: dict[str, Any], run_alive: bool = False) -> str:
    """The human view of ``status``; ``run_alive``: a ``paradev run`` drives the plan now."""
    lines = [f"paradev status (base: {report['base']})", ""]
    if not report.get("base_exists", True):
        lines[1:] = [
            f"base branch {report['base']!r} does not exist: create it or set project.base",
            "",
        ]
    for agent, info in report["agents"].items():
        lines += _agent_lines(agent, info, report.get("base_exists", True), run_alive)
    return "\n".join(lines + attention.render(report))


def _agent_lines(agent: str, info: dict[str, Any], base_exists: bool, run_alive: bool) -> list[str]:
    if info["ahead"] is None:
        position = "branch missing" if base_exists else "no base to compare"
    else:
        position = f"{info['ahead']} ahead, {info['behind']} behind"
    tree = "missing" if not info["exists"] else ("dirty" if info["dirty"] else "clean")
    if info.get("broken"):
        tree = "broken (run 'paradev setup' to repair it)"
    if info.get("here") is False:  # another host's agent: its branch as pushed, worktree there
        position = f"{position} as pushed" if info["ahead"] is not None else "not pushed yet"
        tree = f"on host {info['host']}"
    elif info.get("host"):
        tree = f"{tree}, here on host {info['host']}"
    label = f"  {info['state']}" if info.get("state") else ""
    lines = [
        f"Agent {agent}  {info['branch']}  ({position}; worktree {tree}){label}",
        f"  worktree: {info['worktree']}" + (f" on {info['host']}" if info.get("host") else ""),
    ]
    current = info["current_task"]
    if current:
        lines.append(
            f"  current:  #{current['issue']} {printable(current['title'])} "
            f"({current['hours']:g}h{_agent_process(current, run_alive)})"
        )
        if current.get("agent_running"):
            lines.append(f"  running:  {_running_line(current)}")
        if current.get("started_by_hand"):
            lines.append(
                f"  host {current['host']}: #{current['issue']} started by hand there, its "
                "lease renewed by no agent and never expiring; "
                f"'paradev reopen {current['issue']}' on another host takes the task over"
            )
        if current.get("host_vanished"):
            lines.append(
                f"  host {current['host']} vanished: its lease on #{current['issue']} went "
                f"{current['lease_unchanged_seconds']}s unrenewed; "
                f"'paradev reopen {current['issue']}' takes the task here"
            )
    else:
        lines.append("  current:  none")
    if lane := info.get("lane"):
        how = "waits to land"
        if lane["held"]:  # it lands with the agent's next work, from its branch
            how = "held until the agent is idle" if current else f"lands from {info['branch']}"
        lines.append(
            f"  lane:     #{lane['issue']} on {lane['branch']} ({lane['head'][:12]}), {how}"
        )
    done = ", ".join(f"#{t['issue']}" for t in info["completed_tasks"]) or "none"
    lines.append(f"  done:     {done}  (total {info['total_hours']:g}h)")
    lines += attention.render_tasks(info)
    lines += [
        f"  left uncommitted by #{t['issue']}: "
        + ", ".join(printable(p) for p in t["left_uncommitted"])
        for t in info["completed_tasks"]
        if t.get("left_uncommitted")
    ]
    return lines
