"""``paradev merge --dry-run``: the train's own checks, then its landings simulated in git objects.

The preconditions are the very functions ``paradev merge`` runs before its
first change (``checks.preflight``), so the dry run refuses where the train
would, with the same words and exit 2. Then every landing is simulated with
``merge-tree``/``commit-tree`` on a chain of commits standing for base as it
moves, and the dry run exits as the train would: 1 where it would stop (a
rebase conflict with ``on_conflict = "stop"``, conflict markers, work the
landing lost), 2 where git would refuse (untracked files a checkout or the
fast-forward of base would overwrite). Only objects are written: no ref, work
tree, index, lock holder note or state changes. The gate is not run.

Speed: replaying commit by commit (as ``git rebase`` does) takes two git
processes per commit, so commits that touch no path base changed since the
branch forked are merged together with the commit before them: a branch that
touches none is one merge, and the result is still exactly the replay's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from paradev import git as gitmod
from paradev import lanes
from paradev.errors import ParadevError, PreconditionError, Stopped
from paradev.git import BranchCommit, Git, MergeTree
from paradev.order import completed_head
from paradev.train import checks, landing
from paradev.train.journal import _rev, driving
from paradev.workspace import Workspace

Output = Callable[[str], None]

LAND, CONFLICT, MARKERS, LOST, BLOCKED, HAND_BACK, NOT_REACHED, EJECT, SKIPPED = (
    "land",
    "conflict",
    "markers",
    "lost-work",
    "blocked",
    "hand back",
    "not reached",
    "eject",
    "skipped",
)


@dataclass(frozen=True)
class DryStep:
    """What the train would do with one agent."""

    agent: int
    outcome: str  # one of LAND ... NOT_REACHED
    commits: int = 0
    stopped_at: str | None = None  # the commit whose replay conflicts
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # markers, lost work or blocking files
    detail: str = ""  # where, in words (blocked: which work tree)
    head: str = ""  # the commit whose work lands (the completed one)
    fork: str = ""  # where it forked from base: the rebase replays fork..head

    def describe(self) -> str:
        if self.outcome == LAND:
            how = f" ({self.detail})" if self.detail else ""
            return f"agent {self.agent}: would land ({self.commits} commit(s) rebased cleanly){how}"
        if self.outcome == SKIPPED:
            return f"agent {self.agent}: skipped: {self.detail}"
        if self.outcome == EJECT:
            where = "; ".join(_conflict_text(c) for c in self.conflicts)
            stop = (self.stopped_at or "")[:12]
            at = f"; its rebase would stop at {stop}: {where}" if where else ""
            return f"agent {self.agent}: {self.detail} -> set aside (on_conflict = eject){at}"
        if self.outcome == NOT_REACHED:
            return f"agent {self.agent}: not reached ({self.detail or 'the train stops before it'})"
        what = self.detail
        if self.stopped_at is not None:
            where = "; ".join(_conflict_text(c) for c in self.conflicts) or "conflict"
            what = f"the rebase would stop at {self.stopped_at[:12]}: {where}"
        then = "handed back to the agent" if self.outcome == HAND_BACK else "the train stops here"
        return f"agent {self.agent}: {what} -> {then}"


@dataclass(frozen=True)
class DryRun:
    """The simulated train: each agent's step, and the error the real train would end with.

    ``gated``: the positions (from 1) of the candidates whose gate would run
    when every gate passes; ``skipped``: agents left out, and why; ``lanes``:
    the tasks that wait to land from their lane (``lane_view``).
    """

    steps: list[DryStep]
    error: ParadevError | None = None
    mode: str = "serial"
    order: list[int] = field(default_factory=list)
    gated: list[int] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    lanes: list[dict[str, Any]] = field(default_factory=list)


def _conflict_text(conflict: dict[str, Any]) -> str:
    lines = ", ".join(f"lines {a}-{b}" for a, b in conflict.get("hunks", []))
    return f"{conflict['path']} ({conflict['type']}{', ' + lines if lines else ''})"


def dry_run(
    ws: Workspace,
    out: Output,
    *,
    push: bool | None = None,
    gate: bool = True,
) -> DryRun:
    """Check what ``paradev merge`` checks (raising its exit-2 refusals), then simulate it.

    The serial train lands agent after agent; the merge queue (``[merge]``
    parallel/batch/eject) builds its candidates as it would and says which it
    would gate. The returned ``error`` is what the train would end with (exit
    1 or 2); the caller shows the steps first, then raises it.
    """
    queue = ws.plan.merge_queue
    mode = "serial" if queue is None else "queue"
    with driving(ws, note_owner=False), ExitStack() as locks:
        checked = checks.preflight(ws, locks, push=push, gate=gate, peek=True)
        sim = Simulation(ws, checked.gating)
        base = ws.plan.base
        if checked.remote_tip is not None:
            sim.fast_forward_base(checked.remote_tip)  # refuses as move_base would
            out(
                f"{base}: would fast-forward to {ws.plan.remote}/{base} ({checked.remote_tip[:12]})"
            )
        for note in checked.selection.notes:
            out(note)
        waiting = lane_view(ws, checked.selection.agents)
        for lane in waiting:
            out(lane_text(lane))
        skipped = [{"agent": a, "reason": why} for a, why in checked.selection.left_out]
        if not checked.selection.agents:
            out("nothing to land")
            return DryRun([], mode=mode, skipped=skipped, lanes=waiting)
        order = checks.merge_order(ws, checked.selection.agents, save=False)
        if queue is not None:
            from paradev.train.dryqueue import simulate_queue

            found = simulate_queue(ws, sim, order, out)
            return DryRun(
                found.steps,
                _error(ws, found.steps),
                mode,
                order,
                found.gated,
                skipped + found.skipped,
                waiting,
            )
        steps = sim.run(order)
    out("dry run (nothing changed; the gate is not run):")
    for step in steps:
        out("  " + step.describe())
    gated = list(range(1, _landing(steps) + 1)) if checked.gating else []
    return DryRun(steps, _error(ws, steps), mode, order, gated, skipped, waiting)


# How a task waiting on its lane lands (``lane_view``'s "lands").
BY_BRANCH, BY_FOLLOW, BY_NEXT_TASK = "branch", "follow", "with next task"


def lane_view(ws: Workspace, selected: Sequence[int]) -> list[dict[str, Any]]:
    """Every task that waits to land from its lane (``paradev.lanes``), and how it lands.

    ``lands``: "branch" (this train lands the idle agent's branch, which holds
    it), "follow" (its agent works on its next task: a train started with
    ``--follow``, as ``paradev run``'s are, lands it from the lane) or "with
    next task" (held: it lands with the agent's branch once the agent is idle,
    its next task done).
    """
    if not (ws.store.dir / lanes.FILE).exists():
        return []
    from paradev.lifecycle import _lane_json

    found = []
    for agent, lane in sorted(lanes.waiting(ws, ws.store.read()).items()):
        lands = BY_BRANCH if agent in selected else BY_NEXT_TASK if lane.held else BY_FOLLOW
        found.append({"agent": agent, **(_lane_json(ws, lane) or {}), "lands": lands})
    return found


def lane_text(lane: dict[str, Any]) -> str:
    """One line of the dry run for a task that waits on its lane."""
    where = f"#{lane['issue']} waits to land from its lane {lane['branch']} ({lane['head'][:12]})"
    how = {
        BY_BRANCH: "this train lands it with the agent's branch",
        BY_FOLLOW: "its agent works on its next task: paradev run's trains "
        "(merge --follow) land it from the lane, not this one",
        BY_NEXT_TASK: "held: it lands with the agent's next task once the agent is idle",
    }[lane["lands"]]
    return f"agent {lane['agent']}: {where}; {how}"


def _landing(steps: Sequence[DryStep]) -> int:
    return sum(step.outcome == LAND for step in steps)


def to_json(ws: Workspace, result: DryRun) -> dict[str, Any]:
    """``merge --dry-run --json``: the order, every candidate, what is gated, what is skipped."""
    candidates: list[dict[str, Any]] = []
    landing: list[int] = []
    position = 0
    for step in result.steps:
        number = None
        if step.outcome == LAND:
            position += 1
            number = position
            landing.append(step.agent)
        agents = [*landing] if number else [*landing, step.agent]
        candidates.append(
            {
                "position": number,
                "agent": step.agent,
                "branch": ws.branch(step.agent),
                "agents": agents,
                "branches": [ws.branch(a) for a in agents],
                "outcome": step.outcome,
                "range": {"from": step.fork or None, "to": step.head or None},
                "commits": step.commits,
                "gated": number in result.gated,
                "stopped_at": step.stopped_at,
                "conflicts": step.conflicts,
                "paths": step.paths,
                "detail": step.detail,
            }
        )
    return {
        "dry_run": True,
        "mode": result.mode,
        "base": ws.plan.base,
        "settings": ws.plan.merge_queue
        or {"parallel": 1, "batch": 1, "on_gate_failure": "stop", "retries": 0}
        | {"on_conflict": ws.plan.on_conflict},
        "order": result.order,
        "candidates": candidates,
        "gated": result.gated,
        "skipped": result.skipped,
        "lanes": result.lanes,
        "exit": 0 if result.error is None else result.error.exit_code,
        "error": None if result.error is None else str(result.error),
        "steps": [asdict(step) for step in result.steps],
    }


def _error(ws: Workspace, steps: Sequence[DryStep]) -> ParadevError | None:
    """The exit the train would give: 2 where git refuses, 1 where it stops, else none."""
    for step in steps:
        if step.outcome == BLOCKED:
            return PreconditionError(f"dry run: the train would be refused: {step.detail}")
        if step.outcome in (CONFLICT, MARKERS, LOST):
            paths = ", ".join(sorted({c["path"] for c in step.conflicts}))
            what = step.detail or f"its rebase onto {ws.plan.base} would conflict in {paths}"
            return Stopped(f"dry run: the merge train would stop at agent {step.agent}: {what}")
    return None


@dataclass(frozen=True)
class Rebased:
    """A simulated rebase: the tree it ends with, or where it stops (``merge`` conflicted)."""

    tree: str
    dropped_merges: bool = False  # as git rebase does: what they alone held is lost
    stopped_at: str | None = None
    merge: MergeTree | None = None


class Simulation:
    """Base as the train would move it: a chain of commits in the object store, no ref."""

    def __init__(self, ws: Workspace, gating: bool) -> None:
        self.ws = ws
        self.git: Git = ws.git
        self.base = _rev(ws.git, f"refs/heads/{ws.plan.base}")
        self.start = self.base  # base when the train starts
        self.tree = gitmod.tree_of(ws.git, self.base)
        self.holder = gitmod.branch_holder(ws.repo, ws.plan.base)
        self.holder_untracked = gitmod.untracked_paths(self.holder) if self.holder else []
        self.gating = gating
        self.hands_back = ws.plan.on_conflict == "agent" and bool(ws.plan.agent_command)

    def fast_forward_base(self, new: str) -> None:
        """Base's checked-out tree follows: refuse when untracked files stand in the way."""
        blocking = self.blocking_in_holder(self.base, new)
        if blocking:
            raise PreconditionError(blocking)
        self.base, self.tree = new, gitmod.tree_of(self.git, new)
        self.start = new

    def run(self, order: Sequence[int]) -> list[DryStep]:
        steps: list[DryStep] = []
        for agent in order:
            if steps and steps[-1].outcome != LAND:
                steps.append(not_reached(agent, steps[-1]))
                continue
            steps.append(self.land(agent))
        return steps

    def land(self, agent: int) -> DryStep:
        """One agent as the train lands it: rebase, check, fast-forward (the gate aside)."""
        step = self._land(agent)
        return replace(step, fork=self.fork(step.head))

    def fork(self, head: str) -> str:
        """Where ``head`` forked from base as the train found it: its rebase replays fork..head."""
        return gitmod.merge_base(self.git, self.start, head) or ""

    def move_to(self, commit: str) -> None:
        """Base as it is once ``commit`` landed (the queue fast-forwards to its candidate)."""
        self.base, self.tree = commit, gitmod.tree_of(self.git, commit)

    def _land(self, agent: int) -> DryStep:
        head = self._candidate(agent)
        blocked = self._blocking_in_agent_tree(agent, head)
        if blocked:
            return DryStep(agent, BLOCKED, detail=blocked, head=head)
        commits = gitmod.branch_commits(self.git, self.base, head)
        rebased = self._rebase(commits, head)
        if rebased.merge is not None:
            outcome = HAND_BACK if self.hands_back else CONFLICT
            conflicts = describe(self.git, rebased.merge)
            return DryStep(agent, outcome, len(commits), rebased.stopped_at, conflicts, head=head)
        landed = gitmod.commit_tree(self.git, rebased.tree, [self.base], "paradev: dry run\n")
        checked = self._check(agent, head, landed, rebased.dropped_merges)
        if checked is not None:
            return replace(checked, commits=len(commits), head=head)
        blocking = self.blocking_in_holder(self.base, landed)
        if blocking:
            return DryStep(agent, BLOCKED, len(commits), detail=blocking, head=head)
        self.base, self.tree = landed, rebased.tree
        return DryStep(agent, LAND, len(commits), head=head)

    def _candidate(self, agent: int) -> str:
        """The commit the train lands: the completed one (later commits stay on the branch)."""
        completed = completed_head(self.ws, self.ws.store.read(), agent)
        return completed[1] if completed else _rev(self.git, f"refs/heads/{self.ws.branch(agent)}")

    def _rebase(self, commits: list[BranchCommit], head: str) -> Rebased:
        """What rebasing ``head`` onto the simulated base gives, or the commit where it stops.

        Each step is merged as a cherry-pick: a probe commit (the tree so far,
        the step's parent as its parent) makes that parent the merge base, as
        ``git rebase`` does for each commit.
        """
        tree = self.tree
        base_side = set(gitmod.changed_paths(self.git, head, self.base)) if commits else set()
        for parent, first, last in replay_steps(commits, base_side):
            probe = gitmod.commit_tree(self.git, tree, [parent], "paradev: probe\n")
            merge = gitmod.merge_trees(self.git, [(probe, last)])[0]
            if not merge.clean:
                return Rebased(tree, stopped_at=first, merge=merge)
            tree = merge.tree
        return Rebased(tree, dropped_merges=any(len(c.parents) != 1 for c in commits))

    def _check(self, agent: int, head: str, landed: str, dropped: bool) -> DryStep | None:
        """The train's check before the gate: no conflict markers added, none of the work lost."""
        marked = landing.files_with_markers(self.git, self.base, landed)
        if marked:
            outcome = HAND_BACK if self.hands_back else MARKERS
            return DryStep(
                agent,
                outcome,
                paths=marked,
                detail=f"its landing would add conflict markers in {', '.join(marked)}",
            )
        # the replay is exact but for merge commits: only then can work be missing
        missing = landing.missing_work(self.git, self.base, landed, head) if dropped else None
        if missing is not None:
            return DryStep(
                agent,
                LOST,
                paths=missing.paths,
                detail=f"its landing would lack part of its completed work: paths "
                f"{', '.join(missing.paths)} (the patch check stops it)",
            )
        return None

    def _blocking_in_agent_tree(self, agent: int, head: str) -> str:
        """Untracked files in the agent's tree the rebase's checkout of base would overwrite.

        With a gate the train refuses any untracked file there before it starts.
        """
        if self.gating:
            return ""
        tree = self.ws.worktree(agent)
        untracked = gitmod.untracked_paths(tree)
        if not untracked or gitmod.is_ancestor(self.git, self.base, head):
            return ""  # no rebase: nothing is checked out
        found = landing.colliding(untracked, gitmod.added_paths(self.git, head, self.base))
        if not found:
            return ""
        return (
            f"the rebase of agent {agent} in {tree} would overwrite its untracked files "
            f"{', '.join(found[:5])}; commit, move or remove them, then run paradev merge"
        )

    def blocking_in_holder(self, old: str, new: str) -> str:
        """Untracked files in base's tree that its fast-forward from ``old`` would overwrite."""
        if self.holder is None:
            return ""
        return landing.fast_forward_blocked(
            self.git,
            self.ws.plan.base,
            self.holder,
            self.holder_untracked,
            old,
            new,
            "paradev merge",
        )


def not_reached(agent: int, stop: DryStep) -> DryStep:
    """An agent behind one the train stops at (or hands back): what happens depends on it."""
    why = (
        f"what it lands on depends on how agent {stop.agent} resolves"
        if stop.outcome == HAND_BACK
        else ""
    )
    return DryStep(agent, NOT_REACHED, detail=why)


def replay_steps(
    commits: Sequence[BranchCommit], base_side: set[str]
) -> list[tuple[str, str, str]]:
    """(parent, first, last) merges that replay ``commits`` (merge commits dropped, as git does).

    A commit touching no path of ``base_side`` (what base changed since the
    fork) joins the step before it: the tree so far differs from its parent
    only on those paths, so merging it with the others changes nothing. A
    step that conflicts therefore conflicts at its first commit.
    """
    steps: list[tuple[str, str, str]] = []
    for item in commits:
        if len(item.parents) != 1:
            continue
        parent = item.parents[0]
        if steps and steps[-1][2] == parent and base_side.isdisjoint(item.paths):
            steps[-1] = (steps[-1][0], steps[-1][1], item.commit)
        else:
            steps.append((parent, item.commit, item.commit))
    return steps


def describe(git: Git, merge: MergeTree) -> list[dict[str, Any]]:
    """Conflicts of a merge as path/type/message/hunks (from paradev.conflicts)."""
    from paradev.conflicts import describe_conflicts

    return [c.to_json() for c in describe_conflicts(git, merge)]
