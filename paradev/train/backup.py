"""Before a branch is rewritten: its backup ref and lease; work in progress set aside and put back.

The journal notes the branch's head, the completed commit that lands and
the later commits (work in progress) that do not; ``--abort`` restores the
branch from the backup ref.
"""

from __future__ import annotations

from collections.abc import Sequence

from paradev import git as gitmod
from paradev.errors import GitError, PreconditionError
from paradev.git import Git
from paradev.order import completed_head
from paradev.train.checks import (
    _check_agent_branch,
)
from paradev.train.journal import (
    BACKUP,
    WIP,
    Train,
    backup_ref,
    ref_tips,
)
from paradev.train.rebase import (
    _abort_or_quit,
)


def step_backup(train: Train, agent: int) -> None:
    """Keep the branch's head under refs/paradev/backup/<branch>/<train id> before rewriting it."""
    if train.is_done(agent, BACKUP):
        return
    entry = train.agent(agent)
    tips = None if "old_head" in entry else journal_backup(train, agent)
    if entry.pop("backed_up_early", False):  # now under way: its own landing began
        tips = _fresh_tips(train, agent)
        if tips is not None and tips[1] != entry["old_head"]:
            tips = _follow_moved_branch(train, agent)
    else:
        _keep_ref(train.ws.git, entry["backup"], entry["old_head"])
    share_backup(train, agent)
    if entry.get("wip") and (tips[1] if tips else train.head(agent)) == entry["wip"]:
        _set_wip_aside(train, agent)
    elif tips is not None:
        train.hand_on(agent, *tips)  # the rebase step reads no git: nothing moved since
    train.finish(agent, BACKUP)


def back_up_queue(train: Train) -> None:
    """Every queued branch's backup ref at the train's start: one git process reads the
    refs, one creates them all, instead of one per landing.

    Journaled in memory first and written with the first step that writes; a
    crash before that leaves refs the next run finds at the same commits (the
    branches have not moved). Each landing's own backup step then sets work in
    progress aside and marks the agent under way.
    """
    fresh = [a for a in train.queue if not train.is_done(a, BACKUP)]
    fresh = [a for a in fresh if "old_head" not in train.agent(a)]
    if len(fresh) < 2 or train.ws.plan.hosts:  # hosts: each backup is pushed in its turn
        return
    found = read_tips(train, fresh)
    for agent in fresh:
        journal_backup(train, agent, found)
    keep_backups(train, fresh)
    for agent in fresh:
        train.agent(agent)["backed_up_early"] = True


def _fresh_tips(train: Train, agent: int) -> tuple[str, str] | None:
    """Base and branch now (base moved with each landing), and whether the branch holds
    base, for the rebase step: one git process, as ``journal_backup`` reads them.

    No git process as a rule: the tips come from the ref files, and base at a
    commit this process made and landed cannot be in a branch still at the head
    it had when the train started, before that commit existed.
    """
    base, ref, *_ = _tip_refs(train, agent)
    found = gitmod.loose_refs(train.ws.repo.common_dir, [base, ref]) or {}
    made_here, head = found.get(base) in train.landed_here, found.get(ref)
    if made_here and head is not None and head == train.agent(agent).get("old_head"):
        train.note_on_base(agent, found[base], head, False)
        return found[base], head
    tips = gitmod.tips_and_ancestry(train.ws.git, base, ref)
    if tips is None:
        return None
    train.note_on_base(agent, tips[0], tips[1], tips[2])
    return tips[0], tips[1]


def _follow_moved_branch(train: Train, agent: int) -> tuple[str, str]:
    """Someone committed on the branch after the train's start: back up and land its head
    now, as if backed up only now; refused when the early backup's commits would be lost."""
    entry = train.agent(agent)
    old, backup = str(entry["old_head"]), str(entry["backup"])
    head = train.head(agent)
    if not gitmod.is_ancestor(train.ws.git, old, head):
        raise PreconditionError(
            f"{train.branch(agent)} moved off {old[:12]} (kept in {backup}) after the train "
            "started; put it back or merge it, then run paradev merge --continue"
        )
    tips = journal_backup(train, agent)
    gitmod.update_ref(train.ws.git, backup, str(entry["old_head"]), old)
    return tips


def share_backup(train: Train, agent: int) -> None:
    """With [agents] hosts, push the backup ref before the branch is rewritten.

    Every journal write naming the backup comes after it: a host continuing
    this train (``paradev.train.adopt``) redoes the landing from it.
    """
    if train.ws.plan.hosts:
        entry = train.agent(agent)
        gitmod.push_ref(train.ws.git, train.ws.plan.remote, entry["old_head"], entry["backup"])


def share_backups(train: Train, agents: Sequence[int]) -> None:
    """``share_backup`` for a whole merge queue, in one push: a queue rewrites no branch
    before it lands, so another host can rebuild every candidate from these."""
    if train.ws.plan.hosts:
        gitmod.push_refs(train.ws.git, train.ws.plan.remote, _journaled_backups(train, agents))


def journal_backup(
    train: Train, agent: int, found: dict[str, str] | None = None
) -> tuple[str, str]:
    """Note the branch, its head, what lands (the completed commit) and what does not (wip).

    Written with the next step: until then nothing has changed. Returns the
    (base, branch) commits it read. ``found``: the refs, when ``read_tips`` read them.
    """
    branch = train.branch(agent)
    base, head, tracking = _tips_and_tracking(train, agent, found)
    completed = completed_head(train.ws, train.task_view(agent), agent)
    candidate = completed[1] if completed else head
    if train.agent(agent).get("lane_issue"):  # the lane holds exactly its task's head
        candidate = head
    train.begin(
        agent,
        BACKUP,
        branch=branch,
        old_head=head,
        backup=backup_ref(branch, train.id, train.agent(agent).get("again", 0)),
        remote_head=_lease(train, agent, candidate, tracking),
        candidate=candidate,
        wip=head if candidate != head else None,
    )
    return base, head


def _tip_refs(train: Train, agent: int) -> list[str]:
    """Base, the agent's branch and (with a remote) its remote-tracking copy."""
    branch, remote = train.branch(agent), train.ws.plan.remote
    tracking = [f"refs/remotes/{remote}/{branch}"] if remote else []
    return [f"refs/heads/{train.base}", f"refs/heads/{branch}", *tracking]


def read_tips(train: Train, agents: Sequence[int]) -> dict[str, str]:
    """The refs ``journal_backup`` reads for every one of ``agents``: from the ref files
    as a rule, else one git process."""
    refs = sorted({ref for agent in agents for ref in _tip_refs(train, agent)})
    return ref_tips(train.ws, refs)


def _tips_and_tracking(
    train: Train, agent: int, found: dict[str, str] | None = None
) -> tuple[str, str, str | None]:
    """Base's commit, the branch's and its remote-tracking copy's (None: none).

    Without ``found``: one git process for the tips, which also tells the
    rebase step whether the branch holds base already (``Train.note_on_base``);
    the tracking copies of every queued agent are read once per process.
    """
    base, ref, *tracking = _tip_refs(train, agent)
    if found is None:
        tips = gitmod.tips_and_ancestry(train.ws.git, base, ref)
        if tips is not None:
            train.note_on_base(agent, tips[0], tips[1], tips[2])
            return tips[0], tips[1], train.tracking(tracking[0]) if tracking else None
        found = gitmod.resolve_refs(train.ws.git, [base, ref, *tracking])
    for wanted in (base, ref):
        if wanted not in found:
            raise PreconditionError(f"{wanted} does not exist")
    return found[base], found[ref], found.get(tracking[0]) if tracking else None


def keep_backups(train: Train, agents: Sequence[int]) -> None:
    """Create the journaled backup ref of every one of ``agents``: one git process.

    When one is there already (a resumed train), each is kept on its own.
    """
    wanted = _journaled_backups(train, agents)
    if wanted and not gitmod.create_refs(train.ws.git, wanted):
        for ref, commit in wanted.items():
            _keep_ref(train.ws.git, ref, commit)


def _journaled_backups(train: Train, agents: Sequence[int]) -> dict[str, str]:
    """Each agent's journaled backup ref -> the head it keeps."""
    return {str(train.agent(a)["backup"]): str(train.agent(a)["old_head"]) for a in agents}


def _lease(train: Train, agent: int, head: str, tracking: str | None) -> str | None:
    """What the remote's copy of the branch may be overwritten from, None: do not push it.

    Only a remote copy our branch already contains may be replaced: commits
    someone else pushed there (after our fetch) are never overwritten.
    ``tracking``: that copy as fetched (its remote-tracking ref).
    """
    remote, branch = train.ws.plan.remote, train.branch(agent)
    if tracking is None:
        return None
    if not gitmod.is_ancestor(train.ws.git, tracking, head):
        train.out(f"agent {agent}: {remote}/{branch} has commits {branch} lacks; not pushing it")
        return None
    return tracking


def _keep_ref(git: Git, ref: str, commit: str) -> None:
    """Create ``ref`` at ``commit``; fine when it is there already (a resumed step)."""
    try:
        gitmod.update_ref(git, ref, commit, "")
    except GitError:
        if git.rev(ref) != commit:
            raise PreconditionError(f"{ref} exists and points elsewhere; remove it") from None


def _set_wip_aside(train: Train, agent: int) -> None:
    """Cut the branch back to the completed commit: later commits (work in progress) never land.

    They are kept by the backup ref and put back on the branch once it landed.
    """
    entry = train.agent(agent)
    path = _check_agent_branch(train.ws, agent, train.branch(agent))
    train.save()  # the journal knows the cut before the branch moves
    gitmod.reset_keep(path, entry["candidate"])
    count = len(gitmod.commits_between(train.ws.git, entry["candidate"], entry["wip"]))
    train.out(
        f"agent {agent}: landing the completed commit {entry['candidate'][:12]}; "
        f"{count} later commit(s) stay on {train.branch(agent)}, unlanded"
    )


def step_wip(train: Train, agent: int) -> None:
    """Put the commits made after the completed one back on the branch, on top of what landed.

    When they do not rebase cleanly, the branch keeps them as they were.
    """
    entry = train.agent(agent)
    if not entry.get("wip") or train.is_done(agent, WIP):
        return
    path, wip, landed = train.worktree(agent), entry["wip"], entry["landed"]
    train.begin(agent, WIP, flush=True)
    if gitmod.rebase_in_progress(path) is not None:  # ours: a crash during this step
        _abort_or_quit(path)
    gitmod.checkout_force(path, train.branch(agent), wip)
    if gitmod.rebase_onto(path, landed, entry["candidate"]):
        where = f"rebased onto {landed[:12]}"
    else:
        _abort_or_quit(path)
        gitmod.checkout_force(path, train.branch(agent), wip)
        where = "kept as they were (they conflict with what landed; rebase them yourself)"
    train.finish(agent, WIP)
    train.out(
        f"agent {agent}: the commits after the landed one stay on {train.branch(agent)}, {where}"
    )


def _restore_branch(train: Train, agent: int) -> None:
    """Put the branch back at its backed-up head (a no-op when it never moved).

    The head it leaves is kept under ``<backup>-aborted`` first: it may hold a
    fix committed after a gate failure, which exists nowhere else.
    """
    entry = train.agent(agent)
    old = entry.get("old_head")
    if not old:
        return
    base, current = train.tips(agent)
    if current == old:
        return
    kept = ""
    if not gitmod.is_ancestor(train.ws.git, current, base):
        _keep_ref(train.ws.git, f"{entry['backup']}-aborted", current)
        kept = f"; the head it left, {current[:12]}, is kept at {entry['backup']}-aborted"
    move_branch(train, agent, old, current)
    restored = f"{train.branch(agent)} restored to {old[:12]} from {entry['backup']}"
    train.out(f"agent {agent}: {restored}{kept}")


def move_branch(train: Train, agent: int, target: str, current: str) -> None:
    """Point the agent's branch from ``current`` to ``target``.

    Checked out in its worktree: git run there (``reset --keep``: files follow,
    local changes refuse); elsewhere a compare-and-swap of the ref.
    """
    path = train.worktree(agent)
    if path.exists() and gitmod.current_branch(path) == train.branch(agent):
        gitmod.reset_keep(path, target)
    else:
        gitmod.update_ref(train.ws.git, f"refs/heads/{train.branch(agent)}", target, current)
