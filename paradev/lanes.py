"""Lanes: a completed task lands from paradev's own branch while its agent works on the next.

``paradev run`` lets an agent start its next task while the previous one
waits in the merge queue (``paradev.scheduler``). The agent's branch and work
tree are then busy: the train must neither rebase nor gate there. So before
the next task starts, the completed task's exact head is put on a branch and
work tree paradev owns (its *lane*: ``paradev/lane/agent-N`` under the common
dir), and the train lands that instead: it replays exactly the task's range
(from the previous task's original head, or the merge base for a first
task) onto base, gates it in the lane's tree and fast-forwards base. The
agent's branch is never touched; its next task's range starts at the
completed task's original head, which ``range_start`` gives the train.

A lane whose rebase conflicts while ``on_conflict = "agent"`` cannot be
handed back (its agent is busy): it is *held*, and once the agent is idle its
branch lands the usual way, both tasks' work together, the conflict handed
back to it then.

One small JSON file (``lanes.json``) records each agent's last lane; it is
written before the next task starts, so a killed run finds it again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from paradev import git as gitmod
from paradev.atomic import write_atomic
from paradev.errors import PreconditionError
from paradev.state import COMPLETED, MERGED, State
from paradev.workspace import Workspace

FILE = "lanes.json"


@dataclass(frozen=True)
class Lane:
    """The task ``issue`` of ``agent``, completed at ``head``, whose range starts at ``start``
    (None: the merge base with base); ``held``: it waits for its agent to be idle."""

    agent: int
    issue: int
    head: str
    start: str | None = None
    held: bool = False


def branch(agent: int) -> str:
    return f"paradev/lane/agent-{agent}"


def tree(ws: Workspace, agent: int) -> Path:
    return ws.store.dir / "lanes" / f"agent-{agent}"


def read(ws: Workspace) -> dict[int, Lane]:
    """Every agent's last lane (an unreadable file counts as none: lanes only speed a run up)."""
    try:
        data = json.loads((ws.store.dir / FILE).read_text(encoding="utf-8"))
        return {int(k): Lane(**v) for k, v in data.items()}
    except (OSError, ValueError, TypeError):
        return {}


def _write(ws: Workspace, lanes: dict[int, Lane]) -> None:
    data = {str(agent): asdict(lane) for agent, lane in sorted(lanes.items())}
    write_atomic(ws.store.dir / FILE, json.dumps(data, indent=1) + "\n")


def allowed(ws: Workspace) -> bool:
    """Lanes are used only where they were built and tested: on one host, with a train that
    sets no work aside (an ejected task's agent has built its next task on it).

    The trains of ``paradev run`` all land through the merge queue's code, which
    replays a lane's range as the serial rebase does; ``parallel`` and ``batch`` change
    only how many candidates one gate run or round covers.
    """
    mq = ws.plan.queue_settings
    ejects = "eject" in (mq["on_gate_failure"], mq["on_conflict"])
    return not ejects and not ws.plan.hosts


def open_lane(ws: Workspace, state: State, agent: int, issue: int, head: str) -> Lane:
    """Put ``head`` on the agent's lane (branch and work tree) and record it; before the
    agent's next task starts. A lane still landing (its tree mid-rebase) is refused."""
    path = tree(ws, agent)
    lane = Lane(agent, issue, head, range_start(ws, state, agent, head))
    if path.exists() and not path.is_dir():
        raise PreconditionError(f"{path} is in the way of the lane's work tree; remove it")
    if (path / ".git").exists() and gitmod.rebase_in_progress(path) is not None:
        raise PreconditionError(f"the lane {path} has a rebase in progress; finish the train first")
    if not (path / ".git").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with gitmod.adding_worktrees(ws.repo.common_dir):  # the train may add a gate slot
            gitmod.prune_worktrees(ws.git)
            gitmod.add_detached_worktree(ws.git, path, head)
    gitmod.checkout_force(path, branch(agent), head)
    with ws.store.locked():  # the record's writers (cleanup too) take the state lock
        lanes = read(ws)
        lanes[agent] = lane
        _write(ws, lanes)
    return lane


def waiting(ws: Workspace, state: State) -> dict[int, Lane]:
    """Every agent's lane whose task still waits to land (from it, or held for its agent)."""
    return {a: lane for a, lane in read(ws).items() if state.status(lane.issue) == COMPLETED}


def landable(ws: Workspace, state: State, agent: int) -> Lane | None:
    """The agent's lane when its task waits to land from it (completed, not held)."""
    lane = read(ws).get(agent)
    if lane is None or lane.held or state.status(lane.issue) != COMPLETED:
        return None
    return lane


def held(ws: Workspace, state: State, agent: int) -> Lane | None:
    """The agent's lane when its task waits, held, for the agent to be idle."""
    lane = read(ws).get(agent)
    return (
        lane if lane is not None and lane.held and state.status(lane.issue) == COMPLETED else None
    )


def hold(ws: Workspace, agent: int) -> None:
    """The lane's task lands with the agent's branch once the agent is idle, not from the lane."""
    with ws.store.locked():
        lanes = read(ws)
        if agent in lanes:
            lanes[agent] = replace(lanes[agent], held=True)
            _write(ws, lanes)


def range_start(ws: Workspace, state: State, agent: int, head: str) -> str | None:
    """Where the work at ``head`` on the agent's branch starts, when not at the merge base.

    After a task landed from a lane, the agent's branch still holds its
    original commits (rewritten on base): the next work is what follows them
    (a held lane's task lands with it: from where that task started). None
    when base holds those commits as they are (a plain rebase skips them), or
    when no lane landed under this branch.
    """
    lane = read(ws).get(agent)
    if lane is None or lane.head == head:
        return None
    status = state.status(lane.issue)
    if status == MERGED:
        start: str | None = lane.head
    elif lane.held and status == COMPLETED:  # it lands with what follows: from its own start
        start = lane.start
    else:
        return None
    if start is None or not gitmod.is_ancestor(ws.git, start, head):
        return None
    base = f"refs/heads/{ws.plan.base}"
    return None if gitmod.is_ancestor(ws.git, start, base) else start


def present(ws: Workspace) -> list[int]:
    """Every agent with a lane record, a lane branch or a lane work tree (what cleanup looks at)."""
    names = [
        ref.rsplit("/", 1)[1] for ref, _, _ in gitmod.refs_under(ws.git, "refs/heads/paradev/lane")
    ]
    folder = tree(ws, 0).parent
    if folder.is_dir():
        names += [path.name for path in folder.iterdir()]
    numbers = {n.removeprefix("agent-") for n in names if n.startswith("agent-")}
    return sorted(set(read(ws)) | {int(n) for n in numbers if n.isdigit()})


def needed(ws: Workspace, agent: int) -> bool:
    """Whether the agent's branch still holds its lane task's original commits, not on base:
    its next landing starts after them (``range_start``), so the record must stay."""
    lane = read(ws).get(agent)
    tip = ws.git.rev(f"refs/heads/{ws.branch(agent)}")
    if lane is None or tip is None or not gitmod.is_ancestor(ws.git, lane.head, tip):
        return False
    return not gitmod.is_ancestor(ws.git, lane.head, f"refs/heads/{ws.plan.base}")


def forget(ws: Workspace, agent: int) -> None:
    """Drop the agent's lane record (the file goes with the last one)."""
    with ws.store.locked():
        lanes = read(ws)
        if lanes.pop(agent, None) is None:
            return
        if lanes:
            _write(ws, lanes)
        else:
            (ws.store.dir / FILE).unlink(missing_ok=True)
