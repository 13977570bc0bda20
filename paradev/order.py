"""The merge order: providers before consumers, and the fewest rebases that will hit a conflict.

Agents land one at a time; each rebases onto base plus every agent landed
before it. A rebase hits a conflict when its branch conflicts with base or
with an agent landed earlier (the pairwise merges of ``paradev.conflicts``).
Which agents hit one depends only on the *set* landed before each, so a
dynamic program over subsets finds the exact minimum, one connected
component of the conflict graph at a time (up to ``EXACT_LIMIT`` agents per
component); beyond that a stated greedy heuristic is used.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from paradev import coverage
from paradev import git as gitmod
from paradev.hosts import elsewhere
from paradev.labels import landing_candidates, who
from paradev.records import NamedTuple
from paradev.state import COMPLETED, IN_PROGRESS, MERGED, State
from paradev.workspace import Workspace

if TYPE_CHECKING:
    from paradev.conflicts import Report

EXACT_LIMIT = 16  # 2^16 subsets x 16 agents: well under a second in Python
HEURISTIC = (
    "greedy: among agents whose providers have landed, first one that conflicts with no "
    "landed agent, preferring the fewest conflicts with the agents still waiting"
)


class Detail(NamedTuple):
    """One agent of the order as data: what lands (branch, issues) and what it collides with."""

    agent: int
    branch: str
    issues: list[int]  # its completed tasks: what the train lands
    conflicts_with: list[int]  # agents of the order whose work conflicts with its own
    conflicts_with_base: bool

    def to_json(self) -> dict[str, object]:
        return self._asdict()


@dataclass(frozen=True)
class MergeOrder:
    order: list[int]  # agent ids, first to land first
    conflicting_rebases: int
    reasons: dict[int, str]  # why each agent is where it is
    exact: bool  # exact search (True) or the stated heuristic (False)
    details: dict[int, Detail] = field(default_factory=dict)
    # The conflict analysis the order came from (not shown): the train's closing snapshot
    # reuses it (``paradev.snapshots.train_snapshot``).
    analysis: Report | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, object]:
        return {
            "order": self.order,
            "conflicting_rebases": self.conflicting_rebases,
            "reasons": {str(a): text for a, text in self.reasons.items()},
            "details": {str(a): self.details[a].to_json() for a in self.order if a in self.details},
            "exact": self.exact,
        }


@dataclass(frozen=True)
class Problem:
    """What the search needs: agents, who conflicts with whom, dependencies, sizes."""

    agents: list[int]
    conflicts: Mapping[int, frozenset[int]]  # agent -> agents it conflicts with
    base_conflicts: frozenset[int]  # agents whose branch conflicts with base itself
    providers: Mapping[int, frozenset[int]]  # agent -> agents that must land before it
    size: Mapping[int, int]  # files changed: the smaller change lands first on ties
    dropped: list[str] = field(default_factory=list)  # dependency cycles that were ignored

    def key(self, agent: int) -> tuple[int, int]:
        return (self.size.get(agent, 0), agent)

    def hits(self, agent: int, landed: set[int] | frozenset[int]) -> bool:
        if agent in self.base_conflicts:
            return True
        return not self.conflicts.get(agent, frozenset()).isdisjoint(landed)


def compute_merge_order(
    ws: Workspace, agents: Sequence[int] | None = None, save: bool = True
) -> MergeOrder:
    """Order ``agents`` and save the order in state.

    By default the agents are those the merge train would land (completed,
    unmerged work: ``select_agents``), so ``merge-order`` shows exactly
    the order ``merge`` follows (``save=False``: the dry run, which writes
    nothing). Conflicts come from the real branch contents
    (``paradev.conflicts``); ``depends_on`` makes the agent owning an issue
    land before the agent owning a task that depends on it, when both are in
    the set.
    """
    from paradev.conflicts import analyze

    if agents is None:
        agents = select_agents(ws).agents
    report = analyze(ws)
    chosen = sorted(set(agents))
    members = set(chosen)
    conflicts: dict[int, set[int]] = {a: set() for a in chosen}
    for pair in report.examined:  # the others are clean
        left, right = pair.agents
        if pair.conflict and left in members and right in members:
            conflicts[left].add(right)
            conflicts[right].add(left)
    problem = Problem(
        agents=chosen,
        conflicts={a: frozenset(c) for a, c in conflicts.items()},
        base_conflicts=frozenset(b.agent for b in report.against_base if b.conflict) & members,
        providers=agent_providers(ws, members),
        size={b.agent: len(b.files) for b in report.branches},
    )
    state = ws.store.view()
    result = replace(solve(problem), details=_details(ws, state, problem), analysis=report)
    source = computed_from(report, state)
    if save and (state.merge_order, state.merge_order_from) != (result.order, source):
        with ws.store.update() as changed:  # unchanged: no write
            changed.merge_order, changed.merge_order_from = list(result.order), source
    return result


def computed_from(report: Report, state: State) -> dict[str, object]:
    """What an order depends on: base and every agent branch as examined, and who may land.

    ``status`` shows the saved order only while all of it still holds.
    """
    return {
        "base": report.base_commit,
        "tips": {str(agent): tip for agent, tip in sorted(report.tips.items())},
        "completed": landing_candidates(state),
    }


def _details(ws: Workspace, state: State, problem: Problem) -> dict[int, Detail]:
    return {
        agent: Detail(
            agent=agent,
            branch=ws.branch(agent),
            issues=[t.issue for t in ws.tasks_of(agent) if state.status(t.issue) == COMPLETED],
            conflicts_with=sorted(problem.conflicts.get(agent, frozenset())),
            conflicts_with_base=agent in problem.base_conflicts,
        )
        for agent in problem.agents
    }


def agent_providers(ws: Workspace, members: set[int]) -> dict[int, frozenset[int]]:
    """agent -> agents owning an unmerged issue that one of its unmerged tasks depends on."""

    state = ws.store.view()
    providers: dict[int, set[int]] = {a: set() for a in members}
    for task in ws.plan.tasks():
        if task.agent not in members or state.status(task.issue) == MERGED:
            continue
        for issue in task.depends_on:
            owner = ws.plan.task(issue)
            if (
                owner is not None
                and owner.agent in members
                and owner.agent != task.agent
                and state.status(issue) != MERGED
            ):
                providers[task.agent].add(owner.agent)
    return {a: frozenset(p) for a, p in providers.items()}


def solve(problem: Problem) -> MergeOrder:
    """The order with the fewest conflicting rebases.

    Agents in different connected components of the conflict and dependency
    graph never affect each other's rebases, so each component is solved on
    its own: the order is exact while every component has at most
    EXACT_LIMIT agents, however many agents there are in all.
    """
    problem = _without_cycles(problem)
    orders = []
    for part in components(problem):
        sub = replace(problem, agents=part)
        orders.append(_exact(sub) if len(part) <= EXACT_LIMIT else _greedy(sub))
    exact = all(len(order) <= EXACT_LIMIT for order in orders)
    return _explain(problem, _interleave(orders, problem.key), exact)


def components(problem: Problem) -> list[list[int]]:
    """The agents grouped by connected component of conflicts and dependencies."""
    parent = {a: a for a in problem.agents}

    def root(agent: int) -> int:
        while parent[agent] != agent:
            parent[agent] = parent[parent[agent]]
            agent = parent[agent]
        return agent

    for agent in problem.agents:
        linked = problem.conflicts.get(agent, frozenset()) | problem.providers.get(
            agent, frozenset()
        )
        for other in linked:
            if other in parent:
                parent[root(other)] = root(agent)
    groups: dict[int, list[int]] = {}
    for agent in problem.agents:
        groups.setdefault(root(agent), []).append(agent)
    return list(groups.values())


def _interleave(orders: list[list[int]], key: Callable[[int], tuple[int, int]]) -> list[int]:
    """One order keeping each component's own order: the smallest next agent first.

    Components are independent, so any interleaving costs the same; this one
    keeps the (size, id) tie-break of a single search.
    """
    heads = [(key(order[0]), index, 0) for index, order in enumerate(orders) if order]
    heapq.heapify(heads)
    merged: list[int] = []
    while heads:
        _, index, position = heapq.heappop(heads)
        merged.append(orders[index][position])
        if position + 1 < len(orders[index]):
            following = orders[index][position + 1]
            heapq.heappush(heads, (key(following), index, position + 1))
    return merged


def _without_cycles(problem: Problem) -> Problem:
    """Drop dependencies between agents that depend on each other (no order satisfies them)."""
    cyclic = [a for a in problem.agents if a in _reachable(problem.providers, a)]
    if not cyclic:
        return problem
    blocked = set(cyclic)
    providers = {
        a: frozenset(p for p in ps if not (a in blocked and p in blocked))
        for a, ps in problem.providers.items()
    }
    note = "dependency cycle between agents " + ", ".join(map(str, sorted(blocked))) + " ignored"
    return Problem(
        problem.agents,
        problem.conflicts,
        problem.base_conflicts,
        providers,
        problem.size,
        [*problem.dropped, note],
    )


def _reachable(graph: Mapping[int, frozenset[int]], start: int) -> set[int]:
    seen: set[int] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def _exact(problem: Problem) -> list[int]:
    """Dynamic programming over the sets of landed agents (bit masks).

    ``best[mask]`` is the fewest conflicting rebases needed to land the rest
    once ``mask`` has landed. Rebuilding from the empty set, the first
    optimal choice in (size, id) order is taken, which breaks ties as asked.
    """
    agents = sorted(problem.agents, key=problem.key)
    n = len(agents)
    bit = {a: 1 << i for i, a in enumerate(agents)}
    conflict_mask = [sum(bit[c] for c in problem.conflicts.get(a, ()) if c in bit) for a in agents]
    need = [sum(bit[p] for p in problem.providers.get(a, ()) if p in bit) for a in agents]
    with_base = [a in problem.base_conflicts for a in agents]
    full = (1 << n) - 1
    infinity = n + 1
    best = [infinity] * (full + 1)
    best[full] = 0
    for mask in range(full - 1, -1, -1):
        value = infinity
        for i in range(n):
            if mask & (1 << i) or need[i] & ~mask:
                continue
            cost = best[mask | (1 << i)] + (with_base[i] or bool(conflict_mask[i] & mask))
            value = min(value, cost)
        best[mask] = value
    order: list[int] = []
    mask = 0
    while mask != full:
        for i in range(n):
            if mask & (1 << i) or need[i] & ~mask:
                continue
            cost = best[mask | (1 << i)] + (with_base[i] or bool(conflict_mask[i] & mask))
            if cost == best[mask]:
                order.append(agents[i])
                mask |= 1 << i
                break
    return order


def _greedy(problem: Problem) -> list[int]:
    """The stated heuristic (see HEURISTIC) for more agents than an exact search can take."""
    waiting = set(problem.agents)
    landed: set[int] = set()
    order: list[int] = []
    while waiting:
        ready = [a for a in waiting if problem.providers.get(a, frozenset()) <= landed]
        free = [a for a in ready if not problem.hits(a, landed)]
        if free:
            pick = min(
                free,
                key=lambda a: (
                    len(problem.conflicts.get(a, frozenset()) & waiting),
                    *problem.key(a),
                ),
            )
        else:
            pick = min(ready, key=problem.key)
        order.append(pick)
        landed.add(pick)
        waiting.discard(pick)
    return order


def _explain(problem: Problem, order: list[int], exact: bool) -> MergeOrder:
    reasons: dict[int, str] = {}
    landed: set[int] = set()
    hits = 0
    for position, agent in enumerate(order, start=1):
        parts = [f"lands {_ordinal(position)}"]
        providers = sorted(problem.providers.get(agent, frozenset()))
        if providers:
            parts.append("after its provider(s) " + ", ".join(f"agent {p}" for p in providers))
        blockers = sorted(problem.conflicts.get(agent, frozenset()) & landed)
        if agent in problem.base_conflicts:
            blockers_text = "base"
            if blockers:
                blockers_text += " and " + ", ".join(f"agent {b}" for b in blockers)
            parts.append(f"its rebase will conflict with {blockers_text}")
        elif blockers:
            parts.append(
                "its rebase will conflict with " + ", ".join(f"agent {b}" for b in blockers)
            )
        else:
            parts.append("rebases cleanly")
        parts.append(f"{problem.size.get(agent, 0)} file(s) changed")
        if problem.hits(agent, landed):
            hits += 1
        landed.add(agent)
        text = "; ".join(parts)
        if not exact:
            text += f" (heuristic: {HEURISTIC})"
        if problem.dropped:
            text += "; " + "; ".join(problem.dropped)
        reasons[agent] = text
    return MergeOrder(order=order, conflicting_rebases=hits, reasons=reasons, exact=exact)


def _issues(result: MergeOrder, agent: int) -> list[int]:
    detail = result.details.get(agent)
    return detail.issues if detail else []


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def render(result: MergeOrder) -> str:
    """The human view of ``merge-order``."""
    if not result.order:
        return "no agent has work to merge"
    method = "exact search" if result.exact else "heuristic"
    lines = [
        "merge order: " + " -> ".join(str(a) for a in result.order),
        f"{result.conflicting_rebases} conflicting rebase(s) ({method})",
    ]
    lines += [f"  {who(a, _issues(result, a))}: {result.reasons[a]}" for a in result.order]
    return "\n".join(lines)


# -- choosing what lands -----------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Agents with completed, unmerged work, and why others are left out."""

    agents: list[int]
    left_out: list[tuple[int, str]] = field(default_factory=list)  # (agent, why), in order

    @property
    def notes(self) -> list[str]:
        """Why each agent left out is: "agent N: ...; not landed"."""
        return [note for _, note in self.left_out]


def select_agents(ws: Workspace, base: str | None = None) -> Selection:
    """Agents whose tasks are completed (not merged) and whose branch has commits not in base.

    ``base``: the commit base will be at when the train starts (the remote's
    tip when it is ahead), by default the local base branch.
    """
    state = ws.store.view()
    agents_all = range(1, ws.plan.agent_count + 1)
    branches = {agent: f"refs/heads/{ws.branch(agent)}" for agent in agents_all}
    existing = gitmod.resolve_refs_from_files(ws.git, ws.repo.common_dir, list(branches.values()))
    ahead = gitmod.refs_not_merged(ws.git, list(existing), base or f"refs/heads/{ws.plan.base}")
    agents: list[int] = []
    notes: list[tuple[int, str]] = []
    for agent, ref in branches.items():
        tasks = ws.tasks_of(agent)
        landing = any(state.status(t.issue) == COMPLETED for t in tasks)
        stray = (
            coverage.stray_work(ws, state, agent, uncovered=not landing, tip=existing.get(ref))
            if ref in ahead
            else None
        )
        if not landing:
            if stray is not None:  # run-batch refuses with the same words
                notes.append((agent, f"{stray.message}; not landed"))
            continue
        busy = [t for t in tasks if state.status(t.issue) == IN_PROGRESS]
        branch = ws.branch(agent)
        if stray is not None:  # dropped or unplanned work never lands with other work
            notes.append((agent, f"{stray.message}; not landed"))
        elif busy:
            notes.append((agent, busy_note(agent, busy[0].issue)))
        elif ref not in existing:
            notes.append((agent, _missing_branch_note(ws, agent, branch)))
        elif ref not in ahead:
            notes.append((agent, f"agent {agent}: {branch} has no commits beyond {ws.plan.base}"))
        elif (lost := _completed_head_lost(ws, state, agent, existing[ref])) is not None:
            notes.append((agent, lost))
        else:
            agents.append(agent)
    return _drop_unmet_dependencies(ws, state, Selection(agents, notes))


def _missing_branch_note(ws: Workspace, agent: int, branch: str) -> str:
    """Why an agent with completed work and no branch in this clone does not land: with hosts,
    another host runs it (its branch lives there, and that host's train lands it)."""
    host = elsewhere(ws.plan, ws.git).get(agent)
    if host is not None:
        return f"agent {agent}: runs on host {host}, whose train lands its work; not landed here"
    return f"agent {agent}: branch {branch} does not exist; not landed"


def busy_note(agent: int, issue: int) -> str:
    """Why an agent's completed task does not land: its next one is in progress on its branch."""
    return f"agent {agent}: #{issue} is still in progress; not landed"


def completed_head(ws: Workspace, state: State, agent: int) -> tuple[int, str] | None:
    """(issue, head commit) of the agent's last completed task: exactly what the train lands."""
    found = None
    for task in ws.tasks_of(agent):
        record = state.tasks.get(task.issue)
        if record is not None and record.status == COMPLETED and record.head_commit:
            found = (task.issue, record.head_commit)
    return found


def _completed_head_lost(ws: Workspace, state: State, agent: int, tip: str) -> str | None:
    """Why the agent cannot land when its branch no longer holds its completed commit."""
    completed = completed_head(ws, state, agent)
    if completed is None or completed[1] == tip or gitmod.is_ancestor(ws.git, completed[1], tip):
        return None
    issue, head = completed
    return (
        f"agent {agent}: {ws.branch(agent)} no longer holds #{issue}'s completed commit "
        f"{head[:12]} (history rewritten?); not landed: 'paradev reopen {issue}', then "
        f"'paradev complete {agent}' makes its branch the work to land"
    )


def _missing_dependency(
    ws: Workspace, state: State, agent: int, landing: set[int]
) -> tuple[int, int] | None:
    """(task, dependency) of ``agent`` whose dependency is neither merged nor landing with it."""
    for task in ws.tasks_of(agent):
        if state.status(task.issue) != COMPLETED:
            continue
        for dep in task.depends_on:
            owner = ws.plan.task(dep)
            landing_too = owner is not None and owner.agent in landing
            if state.status(dep) != MERGED and not (landing_too and state.status(dep) == COMPLETED):
                return task.issue, dep
    return None


def drop_dependents(
    ws: Workspace,
    state: State,
    agents: list[int],
    landed: Collection[int],
    why: Callable[[tuple[int, int]], str],
    keep: Callable[[int], bool] = lambda agent: False,
) -> list[tuple[int, str]]:
    """Take out of ``agents`` (in place) each agent with a task whose dependency is neither
    merged nor landing (owned by one of ``agents`` or ``landed``), until none is left.

    ``why`` says it for (task, dependency); ``keep``: agents never taken out
    (already under way). Returns (agent, why) of each one taken out, in order.
    """
    dropped: list[tuple[int, str]] = []
    changed = True
    while changed:
        changed = False
        for agent in [a for a in agents if not keep(a)]:
            missing = _missing_dependency(ws, state, agent, set(agents) | set(landed))
            if missing is not None:
                agents.remove(agent)
                dropped.append((agent, why(missing)))
                changed = True
    return dropped


def _drop_unmet_dependencies(ws: Workspace, state: State, selection: Selection) -> Selection:
    """Leave out agents whose tasks depend on work that will not be on base before them."""
    agents = list(selection.agents)
    dropped = drop_dependents(
        ws,
        state,
        agents,
        (),
        lambda m: f"#{m[0]} depends on #{m[1]}, which is {state.status(m[1])} and not landing",
    )
    notes = [(agent, f"agent {agent}: {why}; not landed") for agent, why in dropped]
    return Selection(agents, [*selection.left_out, *notes])
