"""Rewriting the rebased branch (squash or issue trailers) and checking what would land.

Every rewrite is journaled before the branch moves, so a resumed train
recognises either side of the move; the check before the gate refuses
conflict markers, unmerged entries and missing work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from paradev import git as gitmod
from paradev.git import Git
from paradev.state import COMPLETED, TaskRecord
from paradev.train import landing
from paradev.train.gate import _gate_command
from paradev.train.journal import (
    CHECK,
    SQUASH,
    TRAILERS,
    Train,
)
from paradev.train.messages import squash_message
from paradev.train.rebase import (
    hand_back,
    hold_busy_lane,
)


def step_squash(train: Train, agent: int) -> None:
    """Rewrite the rebased branch as one commit per task (conventional messages from the plan).

    The squashed commit is journaled before the branch moves to it, so a
    resumed train recognises either side of the move and never squashes twice.
    """
    squashed = _rewrite_branch(train, agent, SQUASH, ("squash_from", "squashed"), build_squash)
    if squashed is not None:
        train.out(f"agent {agent}: squashed into {squashed[:12]}")


def _rewrite_branch(
    train: Train,
    agent: int,
    step: str,
    keys: tuple[str, str],
    build: Callable[[Train, int, str, str, Rebased | None], str],
    *,
    defer: bool = False,
) -> str | None:
    """Move the branch to ``build``'s rewrite of it; the new head, None when already done.

    The rewrite is journaled (under ``keys``: from, to) before the branch
    moves (in memory; written at once when the rewrite cannot be made again
    from the moved branch: a squash), so a resumed train recognises either
    side of the move and never rewrites twice. ``defer``: the move is handed
    on to the check step, which makes it beside its own git processes.
    """
    base, head, rebased, journaled = _rebased_tips(train, agent)
    entry = train.agent(agent)
    source, target = keys
    if entry.get(target) == head:
        train.hand_on(agent, base, head)
        return None
    if entry.get(source) != head:
        rewritten = build(train, agent, base, head, rebased)
        # Trailers added again change nothing: when the rebase just journaled the branch's
        # old head, a crash after the move only makes the same commits again.
        flush = rewritten != head and not (step == TRAILERS and journaled)
        train.begin(agent, step, flush=flush, **{source: head, target: rewritten})
    rewritten = str(entry[target])

    def move() -> None:
        if rewritten != head:  # compare-and-swap: the branch is at ``rewritten`` now
            gitmod.update_ref(train.ws.git, f"refs/heads/{train.branch(agent)}", rewritten, head)
        train.finish(agent, step)

    train.hand_on(agent, base, rewritten)
    if defer:
        train.hand_on_move(agent, move)
    else:
        move()
    return rewritten


Rebased = list[tuple[str, gitmod.RawCommit]]


def _rebased_tips(train: Train, agent: int) -> tuple[str, str, Rebased | None, bool]:
    """(base, branch head, the rebased commits, whether this process's rebase just journaled
    the branch's old head) after the rebase: no git process as a rule (``_read_rebased``).

    The base is the one the previous step handed on, or the commit the rebase
    went onto; the head is the newest rebased commit. When neither is known
    (a resumed train) or the range is empty, the tips are read from git.
    """
    handed = train.handed_on(agent)
    onto = handed[0] if handed else train.rebased_onto(agent)
    journaled = handed is None and onto is not None
    if onto is not None:
        rebased = _read_rebased(train, agent, onto, handed[1] if handed else None)
        if rebased:
            return onto, rebased[-1][0], rebased, journaled
    base, head = handed or train.tips(agent)
    return base, head, None, journaled


def _read_rebased(train: Train, agent: int, onto: str, head: str | None) -> Rebased:
    """The commits ``onto..head`` (None: the branch's head), oldest first: read from the
    loose objects and ref file the rebase just wrote, else by one ``git log``."""
    ref = f"refs/heads/{train.branch(agent)}"
    common = train.ws.repo.common_dir
    head = head or (gitmod.loose_refs(common, [ref]) or {}).get(ref)
    found = gitmod.read_loose_range(common / "objects", onto, head) if head else None
    return gitmod.read_range(train.ws.git, onto, head or ref) if found is None else found


def _landing_tasks(train: Train, agent: int) -> list[tuple[Any, TaskRecord | None]]:
    """The tasks this landing lands: the agent's completed ones, or a lane's one task
    (``paradev.lanes``: it holds exactly that task's range, whatever completed since)."""
    state = train.task_view(agent)
    lane = train.agent(agent).get("lane_issue")
    return [
        (task, state.tasks.get(task.issue))
        for task in train.ws.tasks_of(agent)
        if state.status(task.issue) == COMPLETED and lane in (None, task.issue)
    ]


def _rebased_tasks(
    train: Train, agent: int, base: str, head: str, read: Rebased | None = None
) -> tuple[list[str], list[tuple[Any, TaskRecord | None]]] | None:
    """The rebased commits ``base..head`` and the landing tasks; None when either is empty.

    ``read``: those commits, when the caller read them already.
    """
    rebased = [sha for sha, _ in read] if read else gitmod.commits_between(train.ws.git, base, head)
    tasks = _landing_tasks(train, agent)
    return (rebased, tasks) if rebased and tasks else None


def build_squash(
    train: Train,
    agent: int,
    base: str,
    head: str,
    read: Rebased | None = None,
    committer: dict[str, str] | None = None,
) -> str:
    """One commit per task on top of ``base`` ending at ``head``'s tree.

    Task boundaries come from each task's recorded head commit, matched to the
    rebased commits by position; when they cannot be matched, the whole branch
    becomes one commit naming every task. ``committer``: GIT_COMMITTER_* (else git's own).
    """
    git = train.ws.git
    found = _rebased_tasks(train, agent, base, head, read)
    if found is None:
        return head
    rebased, tasks = found
    cuts = _task_cuts(train, agent, tasks, len(rebased))
    wanted = [rebased[-1]] if cuts is None else [rebased[cut] for cut in cuts]
    known = dict(read or [])
    raw = (
        [known[sha] for sha in wanted]
        if all(sha in known for sha in wanted)
        else gitmod.read_commits(git, wanted)  # one git process for every task's commit
    )
    parent = base
    if cuts is None:
        message = "".join(squash_message(t.title, t.issue) for t, _ in tasks[:1])
        if len(tasks) > 1:
            message += "\n" + "".join(f"- {squash_message(t.title, t.issue)}" for t, _ in tasks[1:])
        message += landing.issue_trailers([t.issue for t, _ in tasks])
        return _squash_commit(git, raw[0], parent, message, committer)
    for (task, _), source in zip(tasks, raw, strict=True):
        message = squash_message(task.title, task.issue) + landing.issue_trailers([task.issue])
        parent = _squash_commit(git, source, parent, message, committer)
    return parent


def step_trailers(train: Train, agent: int) -> None:
    """Give every rebased commit a ``Paradev-Issue: N`` trailer naming its own task.

    Rewritten with the same trees, authors, committers and dates, so a resumed
    train makes the same commits; journaled before the branch moves, like a squash.
    The branch moves in the check step that must follow (``step_check``), beside
    its processes: the trees are the same, so nothing it reads depends on the move,
    and no journal write comes between.
    """
    keys = ("trailers_from", "trailered")
    _rewrite_branch(train, agent, TRAILERS, keys, build_trailers, defer=True)


def build_trailers(
    train: Train, agent: int, base: str, head: str, read: Rebased | None = None
) -> str:
    """``base..head`` again, each commit's message carrying its task's issue trailer."""
    found = _rebased_tasks(train, agent, base, head, read)
    if found is None:
        return head
    rebased, tasks = found
    issues = _issues_per_commit(train, agent, tasks, len(rebased))
    raw = [commit for _, commit in read] if read else None
    objects = train.ws.repo.common_dir / "objects"
    return landing.with_issue_trailers(train.ws.git, base, rebased, issues, raw, objects)


def _issues_per_commit(
    train: Train, agent: int, tasks: list[tuple[Any, TaskRecord | None]], count: int
) -> list[list[int]]:
    """The issue of each rebased commit's task; every landing issue when they cannot be told."""
    cuts = _task_cuts(train, agent, tasks, count)
    if cuts is None:
        return [[task.issue for task, _ in tasks]] * count
    owners = []
    for index in range(count):
        owner = next(k for k, cut in enumerate(cuts) if cut >= index)
        owners.append([tasks[owner][0].issue])
    return owners


def _task_cuts(
    train: Train, agent: int, tasks: list[tuple[Any, TaskRecord | None]], count: int
) -> list[int] | None:
    """Index (in the rebased commits) of each task's last commit, or None when unknown."""
    if len(tasks) == 1:
        return [count - 1]
    git = train.ws.git
    entry = train.agent(agent)
    old_head = entry.get("candidate") or entry.get("old_head", "")
    old_base = None
    if old_head:  # a range (the work after a task that landed from its lane) as journaled
        old_base = entry.get("range_from") or gitmod.merge_base(git, train.base_tip(), old_head)
    original = gitmod.commits_between(git, old_base, old_head) if old_base else []
    if len(original) != count:
        return None
    cuts: list[int] = []
    for _, record in tasks:
        sha = record.head_commit if record else None
        if sha not in original:
            return None
        cuts.append(original.index(sha))
    cuts[-1] = count - 1  # commits after the last recorded head belong to the last task
    return cuts if cuts == sorted(cuts) and len(set(cuts)) == len(cuts) else None


def _squash_commit(
    git: Git,
    source: gitmod.RawCommit,
    parent: str,
    message: str,
    committer: dict[str, str] | None = None,
) -> str:
    """A commit of ``source``'s tree and author on ``parent`` (the train's committer)."""
    env = {**source.author, **(committer or {})}
    return gitmod.commit_tree(git, source.tree, [parent], message, env=env)


def step_check(train: Train, agent: int) -> None:
    """Before the gate: no unmerged entries, no conflict markers added, all of the agent's work.

    Whatever resolved a conflict (the agent, a person, git), what lands is
    checked here, so nothing half-resolved or missing ever reaches base.
    """
    move = train.move_handed_on(agent)  # the trailers' branch move, when one is due
    base, head = train.tips_handed_on(agent)
    entry = train.agent(agent)
    if entry.get("checked") == head:
        move()
        train.hand_on(agent, base, head)
        return
    marked, missing = _look_at_landing(train, agent, base, head, move)
    if marked and train.ws.plan.on_conflict == "agent":
        hold_busy_lane(train, agent, "holds conflict markers")
        marked = _hand_back_markers(train, agent, marked)
        base, head = train.tips(agent)
        missing = _missing_work(train, agent, base, head)
    if marked:
        raise train.stop(agent, "markers", _markers_message(train, agent, marked))
    if missing:
        raise train.stop(agent, "patch-check", missing)
    train.finish(agent, CHECK, checked=head)
    train.hand_on(agent, base, head)


def _look_at_landing(
    train: Train, agent: int, base: str, head: str, move: Callable[[], None]
) -> tuple[list[str], str | None]:
    """(unresolved files, missing work): the agent's index, the markers the landing adds and
    its patch check, three git processes side by side, and ``move`` (the branch's) beside them.

    Every one has ended when this returns: the branch is at ``head`` then.
    """
    _, unmerged, markers, missing = gitmod.at_once(
        move,
        lambda: _unmerged_paths(train, agent),
        lambda: landing.files_with_markers(train.ws.git, base, head),
        lambda: _missing_work(train, agent, base, head),
    )
    return sorted(set(unmerged) | set(markers)), missing


def _unresolved_files(train: Train, agent: int, base: str, head: str) -> list[str]:
    """Files unmerged in the agent's index, or with conflict markers the landing adds."""
    unmerged = _unmerged_paths(train, agent)
    return sorted(set(unmerged) | set(landing.files_with_markers(train.ws.git, base, head)))


def _unmerged_paths(train: Train, agent: int) -> list[str]:
    """The agent's unmerged paths; when a gate will run in its tree, from the one ``git status``
    the gate step's check of that tree then reuses (handed on). Without a gate, none and no
    git process after a rebase git ended by itself (``Train.rebased_cleanly``)."""
    path = train.worktree(agent)
    clean = train.rebased_cleanly(agent)
    if not (train.journal["gate"] and _gate_command(train.ws)):
        return [] if clean else gitmod.unmerged_paths(path)
    unmerged, changes = gitmod.unmerged_and_changes(path)
    train.hand_on_changes(agent, changes)
    return unmerged


def _markers_message(train: Train, agent: int, files: Sequence[str]) -> str:
    return (
        f"merge train stopped: {_markers_facts(train, agent, files)} ({train.base} unchanged). "
        f"Resolve them in {train.worktree(agent)}, commit on {train.branch(agent)}, "
        "then run paradev merge --continue (or paradev merge --skip)"
    )


def _markers_facts(train: Train, agent: int, files: Sequence[str]) -> str:
    return (
        f"agent {agent}'s rebased branch still holds conflict markers "
        f"or unmerged entries in: {', '.join(files)}"
    )


def _hand_back_markers(train: Train, agent: int, files: list[str]) -> list[str]:
    """Give the agent one chance to remove the markers it left; what is still unresolved after."""
    report = (  # what to do, for the agent alone: no train commands
        f"{_markers_facts(train, agent, files)}. Remove every conflict marker from these "
        f"files in {train.worktree(agent)} and commit the result on {train.branch(agent)}."
    )
    train.out(f"agent {agent}: conflict markers left in {', '.join(files)}; handing it back")
    hand_back(train, agent, report)
    if gitmod.rebase_in_progress(train.worktree(agent)) is not None:
        return files
    base, head = train.tips(agent)
    return _unresolved_files(train, agent, base, head)


def _missing_work(train: Train, agent: int, base: str, head: str) -> str | None:
    """What of the agent's completed work the landing lacks, said for the stop; None if nothing.

    The completed commit is the one the rebase started from (or, when no
    rebase was needed, the completed commit itself).
    """
    entry = train.agent(agent)
    work = str(entry.get("rebase_from") or entry.get("candidate") or entry.get("old_head") or head)
    resolved, start = entry.get("resolved", []), entry.get("range_from")
    missing = (
        landing.missing_range_work(train.ws.git, head, work, start, resolved)
        if start  # only the range landed (paradev.lanes): only it is looked for
        else landing.missing_work(train.ws.git, base, head, work, resolved)
    )
    if missing is None:
        return None
    return (
        f"merge train stopped: the landing of agent {agent} lacks part of its completed work "
        f"({train.base} unchanged): paths {', '.join(missing.paths)}; from commits "
        f"{'; '.join(missing.commits) or work[:12]}. Its work is kept at {entry.get('backup')}; "
        "run paradev merge --abort to restore the branch, or fix the branch and "
        "run paradev merge --continue"
    )
