"""``paradev merge --dry-run`` for the merge queue: candidates, what it gates, what it sets aside.

The candidates are built by the queue's own code (``candidates.build_chain``:
commit objects nothing points at) on a journal that lives only in memory, and
base moves only in the simulation (``dryrun.Simulation``): no ref, work tree
or state changes. Every gate is assumed to pass (the gate is not run), so the
gated candidates are the batch tips of each round; an agent whose work does
not replay cleanly is set aside (``on_conflict = "eject"``) or taken through
the serial train's steps, whose outcome the serial simulation predicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from paradev import git as gitmod
from paradev.order import drop_dependents
from paradev.train import backup, candidates
from paradev.train.dryrun import (
    BLOCKED,
    EJECT,
    LAND,
    SKIPPED,
    DryStep,
    Output,
    Simulation,
    not_reached,
)
from paradev.train.journal import Train
from paradev.workspace import Workspace


@dataclass(frozen=True)
class QueueDryRun:
    steps: list[DryStep]
    gated: list[int]  # candidate positions, from 1
    skipped: list[dict[str, Any]]


class _DryTrain(Train):
    """A train whose journal lives in memory and whose base is the simulation's."""

    def __init__(self, ws: Workspace, journal: dict[str, Any], sim: Simulation) -> None:
        super().__init__(ws, journal, lambda _: None)
        self.sim = sim

    def base_tip(self) -> str:
        return self.sim.base

    def save(self) -> None:  # never written
        return None


def gate_rounds(count: int, parallel: int, batch: int) -> list[list[int]]:
    """The positions (from 1) each round gates when every gate passes, as the queue picks them."""
    rounds: list[list[int]] = []
    landed = 0
    while landed < count:
        picks = candidates.probes([None] * (count - landed), parallel, batch)
        rounds.append([landed + p for p in picks])
        landed += max(picks)
    return rounds


def simulate_queue(
    ws: Workspace, sim: Simulation, order: Sequence[int], out: Output
) -> QueueDryRun:
    """Every candidate the queue would build, round after round, and the text that shows them."""
    mq = ws.plan.merge_queue
    assert mq is not None
    train = _dry_train(ws, sim, order)
    run = _QueueRun(ws, sim, train)
    run.go()
    run.in_order(order)
    out(
        f"merge queue (dry run, nothing changed): parallel {mq['parallel']}, "
        f"batch {mq['batch']}, on gate failure {mq['on_gate_failure']}"
    )
    for line in run.lines:
        out("  " + line)
    gated = [p for r in run.rounds for p in r]
    if run.rounds:
        shown = ", ".join(str(p) for p in run.rounds[0])
        out(
            f"  first gate round: candidate(s) {shown} at once; when they pass, "
            f"{ws.plan.base} fast-forwards to candidate {run.rounds[0][-1]}"
        )
        out(f"  gated when every gate passes: candidate(s) {', '.join(map(str, gated))}")
    return QueueDryRun(run.steps, gated, run.skipped)


def _dry_train(ws: Workspace, sim: Simulation, order: Sequence[int]) -> _DryTrain:
    mq = ws.plan.merge_queue or {}
    journal = {
        "id": "dry-run",
        "base": ws.plan.base,
        "queue": list(order),
        "agents": {},
        "landed": [],
        "skipped": [],
        "gate": True,
        "squash": ws.plan.squash,
        "mq": dict(mq),
        "committer": gitmod.committer_ident(ws.git),
    }
    train = _DryTrain(ws, journal, sim)
    for agent in order:
        backup.journal_backup(train, agent)
    return train


class _QueueRun:
    """The queue's rounds replayed in the simulation: steps, gate rounds, skipped agents."""

    def __init__(self, ws: Workspace, sim: Simulation, train: _DryTrain) -> None:
        self.ws, self.sim, self.train = ws, sim, train
        self.gating = sim.gating  # a gate command, and no --no-gate
        self.steps: list[DryStep] = []
        self.rounds: list[list[int]] = []
        self.skipped: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.landed: list[int] = []
        mq = ws.plan.merge_queue or {}
        self.parallel, self.batch = int(mq["parallel"]), int(mq["batch"])
        self.ejecting = mq.get("on_conflict") == "eject"

    def go(self) -> None:
        queue = self.train.queue
        while queue:
            chain = candidates.build_chain(self.train)
            if chain.blocked is not None and self.ejecting:
                self._eject(chain.blocked, chain.links)
                continue
            self._land_links(chain.links)
            if chain.blocked is None:
                return
            step = self.sim.land(chain.blocked.agent)  # the serial train's steps
            queue.remove(chain.blocked.agent)
            if step.outcome != LAND:
                self._add(step, f"agent {step.agent}: " + _after(step))
                for agent in list(queue):
                    behind = not_reached(agent, step)
                    self._add(behind, behind.describe())
                queue.clear()
                return
            step = replace(step, detail="rebased in its own worktree: it does not replay cleanly")
            self._candidate(step)
            if self.gating:
                self.rounds.append([len(self.landed)])

    def _land_links(self, links: Sequence[candidates.Link]) -> None:
        """The links land round after round: base ends at the last one."""
        if not links:
            return
        first = len(self.landed) + 1
        for link in links:
            head = str(self.train.agent(link.agent)["candidate"])
            count = len(gitmod.commits_between(self.ws.git, self.sim.start, head))
            fork = self.sim.fork(head)
            self._candidate(DryStep(link.agent, LAND, count, head=head, fork=fork))
            self.lines[-1] += f" -> {link.commit[:12]}"
            self.train.queue.remove(link.agent)
        if self.gating:
            rounds = gate_rounds(len(links), self.parallel, self.batch)
            self.rounds += [[first - 1 + p for p in picks] for picks in rounds]
        blocking = self.sim.blocking_in_holder(self.sim.base, links[-1].commit)
        if blocking:  # the fast-forward of base's checked-out tree would be refused
            self.steps[-1] = replace(self.steps[-1], outcome=BLOCKED, detail=blocking)
        self.sim.move_to(links[-1].commit)

    def _candidate(self, step: DryStep) -> None:
        self.landed.append(step.agent)
        agents = ", ".join(str(a) for a in self.landed)
        self._add(step, f"candidate {len(self.landed)}: {self.ws.plan.base} + agents {agents}")

    def _eject(self, blocked: candidates.Blocked, ahead: Sequence[candidates.Link]) -> None:
        """Set aside as the queue does, with the conflicts its rebase onto ``ahead`` would meet."""
        saved = (self.sim.base, self.sim.tree)
        if ahead:
            self.sim.move_to(ahead[-1].commit)
        probe = self.sim.land(blocked.agent)
        self.sim.base, self.sim.tree = saved
        step = replace(probe, outcome=EJECT, detail=blocked.message)
        self._add(step, step.describe())
        self.train.queue.remove(blocked.agent)
        self.skipped.append({"agent": blocked.agent, "reason": f"ejected: {blocked.message}"})
        self._drop_dependents()

    def _drop_dependents(self) -> None:
        """As the queue does: agents whose tasks depend on work no longer landing are left out."""
        state = self.ws.store.read()
        dropped = drop_dependents(
            self.ws,
            state,
            self.train.queue,
            self.landed,
            lambda m: f"#{m[0]} depends on #{m[1]}, which is not landing",
        )
        for agent, why in dropped:
            self.skipped.append({"agent": agent, "reason": why})
            self._add(DryStep(agent, SKIPPED, detail=why), f"agent {agent}: skipped: {why}")

    def _add(self, step: DryStep, line: str) -> None:
        self.steps.append(step)
        self.lines.append(line)

    def in_order(self, order: Sequence[int]) -> None:
        """Steps and lines in the order's sequence (an agent set aside sits where it was)."""
        pairs = sorted(
            zip(self.steps, self.lines, strict=True), key=lambda p: order.index(p[0].agent)
        )
        self.steps, self.lines = [p[0] for p in pairs], [p[1] for p in pairs]


def _after(step: DryStep) -> str:
    """What the serial steps meet for an agent that does not replay cleanly."""
    return step.describe().split(": ", 1)[1]
