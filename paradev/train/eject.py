"""The merge queue sets an agent aside (``on_gate_failure``/``on_conflict = "eject"``).

Its branch is left untouched and the queue goes on without it. A gate
failure is handed back to the agent with ``on_conflict = "agent"``: a fix it
commits joins the end of the queue again. With ``[agents] hosts`` another
host's agent has the failure handed back to its own host, once the queue
landed the rest.
"""

from __future__ import annotations

import functools
from typing import Any

from paradev import git as gitmod
from paradev.hosts import publish_branch
from paradev.state import COMPLETED, GATE_FAILED
from paradev.train import rebase, steps
from paradev.train.journal import Train


def settings(train: Train) -> dict[str, Any]:
    """The queue's part of the journal: settings fixed at the start, gate results, memo."""
    mq: dict[str, Any] = train.journal["mq"]
    return mq


def eject(train: Train, agent: int, reason: str, message: str, facts: str = "") -> None:
    """Set the agent aside (its branch untouched), mark a gate failure, let the queue go on."""
    train.queue.remove(agent)
    train.journal["skipped"].append(agent)
    ejected: list[dict[str, Any]] = settings(train).setdefault("ejected", [])
    ejected.append({"agent": agent, "reason": reason, "message": message, "facts": facts})
    train.save()
    train.out(f"agent {agent}: ejected: {message}; the queue goes on without it")
    if reason == "gate":
        gate_failed_here(train, ejected[-1])
    drop_dependents(train)


def gate_failed_here(train: Train, ejected: dict[str, Any]) -> None:
    """Mark the ejected agent's tasks ``gate_failed`` and hand the failure back; or, for
    another host's agent (``on_conflict = "agent"``), leave both to that host, its tasks
    still completed: the queue goes on, then hands it back (``hand_to_hosts``)."""
    agent = int(ejected["agent"])
    if settings(train)["on_conflict"] == "agent":
        owner = rebase._host_elsewhere(train, agent)
        if owner is not None and not ejected.get("settled"):
            ejected["handed_to"] = owner
            return
    _mark_gate_failed(train, agent, ejected["message"])
    _settle_hand_back(train, ejected)


def still_out(train: Train, ejected: dict[str, Any]) -> bool:
    """Whether the ejected agent is still set aside: not queued again, and not taken back
    after a fix (which may have landed since; the agent's later tasks are no gate failure)."""
    agent = int(ejected["agent"])
    return agent not in train.queue and agent in train.journal["skipped"]


def _settle_hand_back(train: Train, ejected: dict[str, Any]) -> None:
    """Hand a gate failure back to its agent (``on_conflict = "agent"``), take its fix; once.

    A driver killed meanwhile leaves the agent running in its own process
    group: ``--continue`` waits for it when it was launched (its resolver is
    journaled), or launches it when the kill came first.
    """
    agent = int(ejected["agent"])
    if settings(train)["on_conflict"] != "agent" or ejected.get("settled"):
        return
    entry = train.agent(agent)
    entry.pop("handed_to", None)
    if "resolver" in entry:
        rebase.wait_for_resolver(train, agent)
    else:
        _hand_back_gate_failure(train, agent, ejected.get("facts") or ejected["message"])
    entry.pop("resolver", None)  # the next ejection hands back again
    ejected["settled"] = True
    _take_back(train, agent)
    train.save()


def hand_to_hosts(train: Train) -> None:
    """The queue is done but for a gate failure of another host's agent: stop, handed back.

    Through the shared state, as a conflict is: that host's ``merge --continue``
    (or ``run``) takes the train over, has its agent fix the failure and lands the fix.
    """
    for ejected in settings(train).get("ejected", []):
        owner, agent = ejected.get("handed_to"), int(ejected["agent"])
        if owner is None or ejected.get("settled"):
            continue
        raise rebase.handed_to_host(
            train,
            agent,
            owner,
            ("gate", "gate failure", "the gate failure", "fix"),
            f"agent {agent}'s work failed the gate ({ejected['message']})",
        )


def _mark_gate_failed(train: Train, agent: int, message: str) -> None:
    with train.ws.store.update() as state:
        for task in train.ws.tasks_of(agent):
            record = state.tasks.get(task.issue)
            if record is not None and record.status == COMPLETED:
                record.status, record.error = GATE_FAILED, f"merge queue: {message}"


def _take_back(train: Train, agent: int) -> None:
    """The agent committed a fix after the hand-back: its work joins the end of the queue again."""
    entry, head = train.agent(agent), train.head(agent)
    if head == entry["old_head"] or not gitmod.is_ancestor(train.ws.git, entry["candidate"], head):
        return
    _publish_fix(train, agent, head)
    with train.ws.store.update() as state:
        for task in train.ws.tasks_of(agent):
            record = state.tasks.get(task.issue)
            if record is not None and record.status == GATE_FAILED:
                record.status, record.head_commit, record.error = COMPLETED, head, None
    entry.update(candidate=head, wip=None)
    train.journal["skipped"].remove(agent)
    train.queue.append(agent)
    train.save()
    train.out(f"agent {agent}: committed {head[:12]} after the hand-back; back in the queue")


def _publish_fix(train: Train, agent: int, head: str) -> None:
    """With ``[agents] hosts`` the fix reaches the remote before the journal names it, as a
    completed task's branch does: another host adopting the train rebuilds from it."""
    entry, ws = train.agent(agent), train.ws
    if not ws.plan.hosts:
        return
    remote, branch = ws.plan.remote, train.branch(agent)
    publish_branch(
        ws.git, remote, branch, head,
        refused=f"agent {agent}'s fix is not back in the queue: fetch {remote} and check who "
        f"else pushed {branch}, then run paradev merge --continue",
    )  # fmt: skip
    if entry.get("remote_head") is not None:
        entry["remote_head"] = head  # the landed branch replaces what was pushed now


def _hand_back_gate_failure(train: Train, agent: int, facts: str) -> None:
    """The serial train's hand-back, with the runner's gate-failure prompt (not a conflict's)."""
    launch = train.hand_back_to
    if launch is not None:
        train.hand_back_to = functools.partial(launch, kind="gate")
    try:
        rebase.hand_back(train, agent, facts)
    finally:
        train.hand_back_to = launch


def drop_dependents(train: Train) -> None:
    """Leave out agents whose tasks depend on work that is no longer landing."""
    steps.drop_skipped_dependents(
        train, "which is not landing", keep=lambda agent: bool(train.agent(agent).get("serial"))
    )
    train.save()
