"""A train another host began: continued here with the same refs (``[agents] hosts``).

The journal lives in the shared state, so ``merge --continue`` on any host
reads where the train stood; the commits that host rewrote did not leave
it, unless it pushed them. What is on the remote is enough to redo the rest
exactly: base as pushed, each agent's branch as pushed when its task was
completed, and each backup ref, pushed before its branch was rewritten
(``backup.share_backup``). Every landing the remote does not hold is redone
from its backup; rewritten commits take the journal's committer (name,
email, date), so they come out the same commits, whichever host makes them.
A merge queue's candidates are rebuilt the same way (``_queue_landing``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paradev import git as gitmod
from paradev.errors import PreconditionError
from paradev.train import candidates
from paradev.train.advance import move_base
from paradev.train.journal import ADVANCE, BACKUP, Train, backup_ref, journaled_committer
from paradev.workspace import Workspace
from paradev.worktrees import add_worktree

# What the backup step journals: a landing redone from its backup starts from these.
# ``serial``: a queue's agent whose work did not replay, going through the serial steps.
BACKUP_FACTS = (
    "branch", "old_head", "backup", "remote_head", "candidate", "wip", "times", "serial",
)  # fmt: skip


def needs_adoption(train: Train) -> bool:
    """Whether the train was driven by another host, whose local refs this clone lacks."""
    return bool(train.ws.plan.hosts) and driven_elsewhere(train.ws, train.journal)


def adopt(train: Train) -> None:
    """Bring this clone to what the remote holds of the train, to go on from there.

    Base fast-forwards to the remote's; every queued agent's branch (and work
    tree, created here when missing) goes to the journaled commit the rest
    of its landing starts from. Refused, with nothing changed, when base
    here holds commits the remote lacks.
    """
    ws, journal = train.ws, train.journal
    remote, base = ws.plan.remote, train.base
    gitmod.fetch_refspecs(
        ws.git,
        remote,
        [f"+refs/heads/*:refs/remotes/{remote}/*", "refs/paradev/backup/*:refs/paradev/backup/*"],
    )
    pushed_base = _pushed_base(train, str(journal["base_start"]))
    train.out(
        f"merge train {train.id} was driven by host {journal['host']}: going on from "
        f"{remote}/{base} ({pushed_base[:12]}); landings it did not push are redone"
    )
    for agent in train.queue:
        _check_tree(train.worktree(agent))
    targets = {agent: _restart_point(train, agent, pushed_base) for agent in train.queue}
    if journal.get("mq"):
        _queue_landing(train, pushed_base)
    local = ws.git.rev(f"refs/heads/{base}")
    if local is not None and not gitmod.is_ancestor(ws.git, local, pushed_base):
        _take_back_unpushed_landing(train, local, pushed_base)
    elif local != pushed_base:
        move_base(ws, base, local or pushed_base, pushed_base, then="run paradev merge --continue")
    for agent, target in targets.items():
        _place_branch(ws, train, agent, target)
    journal["host"] = ws.store.host
    train.save()


def _pushed_base(train: Train, start: str) -> str:
    """The remote's base, refused unless the train's start is in it, and base here too
    (or its extra commits are a landing this clone's killed driver never pushed)."""
    ws, base = train.ws, train.base
    remote = ws.plan.remote
    pushed = ws.git.rev(f"refs/remotes/{remote}/{base}")
    local = ws.git.rev(f"refs/heads/{base}")
    if pushed is None or not gitmod.is_ancestor(ws.git, start, pushed):
        raise PreconditionError(
            f"{remote}/{base} does not hold the base the train started from ({start[:12]}); "
            "the train cannot go on here"
        )
    if (
        local is not None
        and not gitmod.is_ancestor(ws.git, local, pushed)
        and _unpushed_landing_of(train, local) is None
    ):
        raise PreconditionError(
            f"{base} here has commits {remote}/{base} lacks; push or move them away "
            f"(e.g. git branch -f {base} {remote}/{base} after keeping them), "
            "then run paradev merge --continue"
        )
    return pushed


def _unpushed_landing_of(train: Train, local: str) -> int | None:
    """The queued agent whose landing base here holds, unpushed; None when base holds other work.

    A driver killed after it moved base and before its push leaves base here
    at the agent's branch as it rewrote it (the serial steps rebase in the
    agent's tree; the queue points the branch at its candidate): base is in
    that branch, and not in the agent's completed work (the rewrite is new).
    The train redoes that landing from the backup, so base here goes back.
    """
    git = train.ws.git
    for agent in train.queue:
        entry, head = train.agent(agent), git.rev(f"refs/heads/{train.branch(agent)}")
        old_head = entry.get("old_head")
        if head is None or old_head is None or not gitmod.is_ancestor(git, local, head):
            continue
        if not gitmod.is_ancestor(git, local, str(old_head)):
            return agent
    return None


def _take_back_unpushed_landing(train: Train, local: str, pushed_base: str) -> None:
    """Base here back at the remote's, its unpushed landing kept under a backup ref.

    In base's work tree (when checked out) ``git reset --keep`` moves files and
    index too, refusing to lose a change made there.
    """
    ws, base = train.ws, train.base
    agent = _unpushed_landing_of(train, local)
    holder = gitmod.branch_holder(ws.repo, base)
    if holder is not None:
        _check_tree(holder)
    kept = f"{backup_ref(base, train.id)}-here"
    if ws.git.rev(kept) is None:
        gitmod.update_ref(ws.git, kept, local, "")
    if holder is None:
        gitmod.update_ref(ws.git, f"refs/heads/{base}", pushed_base, local)
    else:
        gitmod.reset_keep(holder, pushed_base)
    train.out(
        f"{base} here held agent {agent}'s landing ({local[:12]}), {ws.store.host}'s own "
        f"landing its killed driver never pushed: back at {ws.plan.remote}/{base}, kept in "
        f"{kept}; the landing is redone"
    )


def _restart_point(train: Train, agent: int, pushed_base: str) -> str:
    """The commit the agent's branch must be at here; its journal entry cut to match.

    Landed and pushed: the landed commit (the steps after the move go on).
    Backed up: the backup (or the completed commit when the work in progress
    was set aside), every later step to be redone. Not begun: its branch as
    pushed, or as the backup another driver pushed.
    """
    entry: dict[str, Any] = train.agent(agent)
    landed = entry.get("landed")
    git = train.ws.git
    if landed and ADVANCE in entry["done"] and gitmod.is_ancestor(git, landed, pushed_base):
        return str(landed)
    if "old_head" in entry:
        _expect_backup(train, entry)
        facts = {key: entry[key] for key in BACKUP_FACTS if key in entry}
        # the serial steps set work in progress aside at their backup; the queue's
        # candidates leave the branch alone until it lands
        aside = entry.get("wip") and (entry.get("serial") or not train.journal.get("mq"))
        entry.clear()
        entry.update(facts, done=[BACKUP], step=BACKUP)
        return str(entry["candidate"] if aside else entry["old_head"])
    branch = train.branch(agent)
    found = gitmod.resolve_refs(
        train.ws.git,
        [backup_ref(branch, train.id), f"refs/remotes/{train.ws.plan.remote}/{branch}"],
    )
    if not found:
        raise PreconditionError(
            f"{branch} is not on {train.ws.plan.remote}: the host that completed agent {agent}'s "
            "task never pushed it; continue the train on that host"
        )
    return next(iter(found.values()))  # the backup first: a killed driver may have cut the branch


def _queue_landing(train: Train, pushed_base: str) -> None:
    """A merge queue's landing the driver did not push whole, made to go on from the remote's base.

    The driver's replays are not in this clone: its memo is dropped and the
    landing's candidates the remote lacks are built again from the backups,
    with the journaled committer, into the same commits (checked); the gate
    results journaled per candidate commit still hold. The landing then
    moves base from where the remote has it (its start, or an agent of it
    pushed before the kill).
    """
    mq: dict[str, Any] = train.journal["mq"]
    mq["built"] = {}
    pending = mq.get("landing")
    git = train.ws.git
    if not pending or gitmod.is_ancestor(git, str(pending["to"]), pushed_base):
        return  # nothing under way, or pushed whole: its bookkeeping goes on
    tip, made = str(pending["from"]), [str(pending["from"])]
    with journaled_committer(train):
        for agent, commit in pending["agents"]:
            pushed = gitmod.is_ancestor(git, str(commit), pushed_base)  # its tasks may be marked
            built = commit if pushed else candidates._link(train, int(agent), tip)
            if built != commit:
                raise PreconditionError(
                    f"agent {agent}'s candidate rebuilt here is not the one "
                    f"{train.journal['host']} gated ({str(commit)[:12]}); continue the train there"
                )
            tip = str(built)
            made.append(tip)
    if pushed_base not in made[:-1]:
        raise PreconditionError(
            f"{train.ws.plan.remote}/{train.base} ({pushed_base[:12]}) is not where the merge "
            "queue's landing started or went; reconcile it, then run paradev merge --continue"
        )
    pending["from"] = pushed_base


def _expect_backup(train: Train, entry: dict[str, Any]) -> None:
    """The journaled backup, fetched from the remote, is the journaled old head."""
    if train.ws.git.rev(str(entry["backup"])) != entry["old_head"]:
        raise PreconditionError(
            f"{entry['backup']} is not on {train.ws.plan.remote} at {str(entry['old_head'])[:12]}; "
            "continue the train on the host that began it"
        )


def _place_branch(ws: Workspace, train: Train, agent: int, target: str) -> None:
    """The agent's branch at ``target`` in its work tree (created here when missing).

    Commits of this clone's copy of the branch that ``target`` lacks stay
    under a backup ref: nothing is dropped.
    """
    branch, tree = train.branch(agent), train.worktree(agent)
    ref = f"refs/heads/{branch}"
    local = ws.git.rev(ref)
    if local is not None and local != target and not gitmod.is_ancestor(ws.git, local, target):
        kept = f"{backup_ref(branch, train.id)}-here"
        if ws.git.rev(kept) is None:
            gitmod.update_ref(ws.git, kept, local, "")
        train.out(f"agent {agent}: {branch} here had other commits; kept in {kept}")
    if not (tree / ".git").exists():
        if local is not None:
            gitmod.update_ref(ws.git, ref, target, local)
        add_worktree(ws, tree, branch, None if local is not None else target)
        return
    gitmod.checkout_force(tree, branch, target)


def _check_tree(tree: Path) -> None:
    """An agent's work tree here must hold nothing the move of its branch would lose."""
    if not (tree / ".git").exists():
        return
    if gitmod.unfinished_operation(tree) is not None or any(gitmod.changes(tree)):
        raise PreconditionError(
            f"{tree} has uncommitted changes or an unfinished git operation; commit or clear "
            "them, then run paradev merge --continue"
        )


def handed_here(ws: Workspace, journal: dict[str, Any]) -> bool:
    """Whether a stopped train handed a conflict back to this host (its agent resolves it here)."""
    stop = journal.get("stop") or {}
    if journal.get("status") != "stopped" or ws.store.host is None:
        return False
    entry = journal.get("agents", {}).get(str(stop.get("agent"))) or {}
    return bool(entry.get("handed_to") == ws.store.host)


def driven_elsewhere(ws: Workspace, journal: dict[str, Any]) -> bool:
    """Whether another host drives the train (its driver's pid means nothing here)."""
    host = journal.get("host")
    return host is not None and ws.store.host is not None and host != ws.store.host
