"""Remove agent worktrees (and optionally branches) once their work is on base.

A worktree goes only when its branch is fully merged into base and its tree
is clean. ``--force`` removes the others too. Before any worktree goes, what
git would not keep is kept and named: unmerged commits, uncommitted changes,
edits hidden by ``--skip-worktree``/``--assume-unchanged`` and a staged
version that differs from the files (commits under ``refs/paradev/backup/``),
and ignored files (``.env``, ``build/``: a tar archive in the common git dir,
up to ``ARCHIVE_CAP``). A nested repository, whose commits no backup could
hold, stops cleanup. Every refusal that stops the command comes before the
first change. Base, and any branch checked out in another work tree, is never
deleted. Lanes (``paradev.lanes``) go too, branch and tree, unless their task
still waits to land; a commit only a lane holds is backed up first. Cleanup
holds the state lock, and each agent it changes, as the other writers do.
"""

from __future__ import annotations

import filecmp
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from paradev import git as gitmod
from paradev import lanes
from paradev.backups import (
    ARCHIVE_CAP,
    archive_dir,
    human_size,
    total_size,
    write_archive,
)
from paradev.errors import PreconditionError, StateError
from paradev.git import Worktree
from paradev.prepare import SetupConfig, made_by_setup
from paradev.state import IN_PROGRESS, State
from paradev.train.journal import BACKUP_PREFIX
from paradev.workspace import Workspace


@dataclass
class CleanupReport:
    """What cleanup did and what it refused (refusals make the command exit 1)."""

    removed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"kept {b}" for b in self.backups]
        lines += [f"removed worktree {p}" for p in self.removed]
        lines += [f"deleted branch {b}" for b in self.deleted]
        lines += [f"refused: {r}" for r in self.refused]
        return lines or ["nothing to clean up"]


@dataclass(frozen=True)
class AgentFacts:
    """Why an agent's worktree or branch may not simply be removed."""

    agent: int
    branch: str
    path: Path
    record: Worktree | None
    head: str | None
    dirty: list[str]
    unmerged: int
    busy: list[int]
    operation: str | None  # a rebase, merge or cherry-pick under way in the worktree

    def problems(self, base: str) -> list[str]:
        found: list[str] = []
        if self.record is not None and self.record.branch != self.branch:
            found.append(f"it has {self.record.branch or 'a detached HEAD'} checked out")
        if self.record is not None and self.record.locked:
            found.append("the worktree is locked")
        if self.dirty:
            shown = ", ".join(self.dirty[:5]) + (" ..." if len(self.dirty) > 5 else "")
            found.append(f"{len(self.dirty)} uncommitted path(s): {shown}")
        if self.unmerged:
            found.append(f"{self.unmerged} commit(s) not in {base}")
        if self.busy:
            found.append("task(s) in progress: " + ", ".join(f"#{i}" for i in self.busy))
        return found


@dataclass(frozen=True)
class Keep:
    """What must be kept before one worktree goes, all decided before anything changes."""

    facts: AgentFacts
    worktree_commit: str | None  # the files as they are, hidden edits included
    staged_commit: str | None  # the index, when it differs from HEAD and from the files
    ignored: list[str]  # ignored files to archive (setup's own copies left out)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _facts(ws: Workspace, agent: int, records: dict[str, Worktree], busy: list[int]) -> AgentFacts:
    branch, path = ws.branch(agent), ws.worktree(agent)
    record = records.get(os.path.realpath(path))
    head = ws.git.rev(f"refs/heads/{branch}")
    unmerged = gitmod.ahead_behind(ws.git, ws.plan.base, branch)[0] if head else 0
    dirty = gitmod.dirty_paths(path) if record is not None else []
    operation = gitmod.unfinished_operation(path) if record is not None else None
    return AgentFacts(agent, branch, path, record, head, dirty, unmerged, busy, operation)


def cleanup(ws: Workspace, *, force: bool = False, delete_branches: bool = False) -> CleanupReport:
    """Remove merged, clean agent worktrees; with ``force`` the rest too, after backing them up.

    Under the state lock, as every writer of the state and of the lanes'
    record: a run or merge waits for it, or it for them. Each agent whose
    worktree or lane it removes is held as run, run-batch and merge hold it:
    one they hold is refused, kept whole.
    """
    with ws.store.locked(), ExitStack() as held:
        return _cleanup(ws, held, force, delete_branches)


def _cleanup(ws: Workspace, held: ExitStack, force: bool, delete_branches: bool) -> CleanupReport:
    state = ws.store.read()
    if state.train is not None:
        raise PreconditionError(
            "a merge train is in progress; finish it (paradev merge --continue/--skip) "
            "or end it (paradev merge --abort) before cleaning up"
        )
    agents = range(1, ws.plan.agent_count + 1)
    for agent in agents:  # a symlinked agent folder stops us before anything is removed
        ws.worktree(agent)
    git = ws.git
    gitmod.prune_worktrees(git)
    records = {os.path.realpath(r.path): r for r in gitmod.worktree_list(git)}
    report = CleanupReport()
    chosen: list[AgentFacts] = []
    for agent in agents:
        busy = [t.issue for t in ws.tasks_of(agent) if state.status(t.issue) == IN_PROGRESS]
        facts = _facts(ws, agent, records, busy)
        if facts.record is None and not (delete_branches and facts.head):
            continue
        refusal = _hold(ws, held, agent) or _refusal(facts, ws.plan.base, force)
        if refusal:
            report.refused.append(f"agent {agent} ({facts.path}): {refusal}")
        else:
            chosen.append(facts)
    keeps = [_decide_keep(ws, facts) for facts in chosen]  # may refuse: nothing changed yet
    lane_facts = _lanes_to_clean(ws, state, records, report, held)
    stamp = _stamp()
    for lane in lane_facts:  # before any agent branch goes: it may be what holds their commits
        _clean_lane(ws, lane, stamp, report)
    removed_agents: list[int] = []
    for keep in keeps:
        facts = keep.facts
        _back_up(ws, keep, stamp, report)
        if facts.record is not None:
            gitmod.remove_worktree(git, facts.path, force=bool(facts.problems(ws.plan.base)))
            report.removed.append(str(facts.path))
            removed_agents.append(facts.agent)
        if delete_branches and facts.head:
            _delete_branch(ws, facts, report)
    if removed_agents:
        with ws.store.update() as state:  # the lock is ours already (re-entrant)
            for agent in removed_agents:
                state.agents.pop(agent, None)
    return report


def _refusal(facts: AgentFacts, base: str, force: bool) -> str | None:
    """Why this agent's worktree stays (cleanup goes on with the others and exits 1)."""
    if facts.operation is not None:  # never end a rebase or merge someone else started
        return (
            f"a {facts.operation} is in progress there; finish or abort it yourself "
            f"(git -C {facts.path} {facts.operation} --abort), even --force keeps it"
        )
    if facts.record is not None and (conflicted := gitmod.unmerged_paths(facts.path)):
        return (
            f"unresolved conflicts in {', '.join(conflicted[:5])}; resolve them (git add) "
            "first, even --force keeps it"
        )
    problems = facts.problems(base)
    if problems and not force:
        return "; ".join(problems)
    return None


def _decide_keep(ws: Workspace, facts: AgentFacts) -> Keep:
    """What to keep of a worktree about to go; refuse (exit 2) what no backup can hold."""
    if facts.record is None:
        return Keep(facts, None, None, [])
    path = facts.path
    nested = nested_repositories(path)
    if nested:
        raise PreconditionError(
            f"agent {facts.agent}: {nested[0]} is a git repository inside {path}; "
            "its commits would be lost with the worktree: move it out of the worktree "
            "(or push its commits and delete it), then run cleanup again"
        )
    set_up = _set_up_by_paradev(ws, path)
    ignored = [p for p in gitmod.ignored_files(path) if not set_up(p)]
    size = total_size(path, ignored)
    if size > ARCHIVE_CAP:
        raise PreconditionError(
            f"agent {facts.agent}: the ignored files in {path} take {human_size(size)}, over "
            f"the {human_size(ARCHIVE_CAP)} that cleanup backs up ({_largest(path, ignored)}); "
            "delete or move out what you do not need, then run cleanup again"
        )
    message = f"paradev cleanup: uncommitted work of agent {facts.agent} ({path})\n"
    snapshot = gitmod.snapshot_worktree(path, message)
    return Keep(facts, snapshot, _staged_commit(ws, facts, snapshot), ignored)


def _staged_commit(ws: Workspace, facts: AgentFacts, snapshot: str | None) -> str | None:
    """A commit of the index when what is staged is neither HEAD nor the files as they are."""
    head = gitmod.Git(facts.path).rev("HEAD")
    staged = gitmod.staged_tree(facts.path)
    files = gitmod.tree_of(ws.git, snapshot) if snapshot else None
    if head is None or staged in (gitmod.tree_of(ws.git, head), files):
        return None
    message = f"paradev cleanup: staged changes of agent {facts.agent} ({facts.path})\n"
    return gitmod.commit_tree(ws.git, staged, [head], message)


def nested_repositories(worktree: Path) -> list[Path]:
    """Folders inside ``worktree`` holding their own ``.git`` (a clone, a submodule)."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(worktree):
        here = Path(folder)
        if here != worktree and (".git" in dirs or ".git" in files):
            found.append(here)
            dirs[:] = []  # its insides are its own
            continue
        dirs[:] = [d for d in dirs if d != ".git"]
    return sorted(found)


def _set_up_by_paradev(ws: Workspace, worktree: Path) -> Callable[[str], bool]:
    """Whether worktree set-up put an ignored ``path`` there, as it left it.

    Those need no backup: set-up makes them again. A ``[setup] copy`` entry
    counts while it still equals the main worktree's file (a changed copy is
    the agent's and is archived); the setup command's output (``.venv/``,
    ``node_modules/``, as its run recorded them) counts whole.
    """
    main = ws.repo.main_root
    copies = SetupConfig.of(ws.plan).copy
    made = [m.rstrip("/") for m in made_by_setup(worktree)]

    def under(path: str, entries: Sequence[str]) -> bool:
        return any(path == e or path.startswith(e + "/") for e in entries)

    def same_as_main(path: str) -> bool:
        source, copy = main / path, worktree / path
        if copy.is_symlink() or source.is_symlink():
            return (
                copy.is_symlink()
                and source.is_symlink()
                and (os.readlink(copy) == os.readlink(source))
            )
        try:
            return filecmp.cmp(source, copy, shallow=True)
        except OSError:
            return False

    return lambda path: under(path, made) or (under(path, copies) and same_as_main(path))


def _largest(root: Path, paths: list[str]) -> str:
    """The top-level entry holding the most bytes, to say what to clear first."""
    sizes: dict[str, int] = {}
    for path in paths:
        top = path.split("/", 1)[0]
        sizes[top] = sizes.get(top, 0) + os.lstat(root / path).st_size
    top = max(sizes, key=lambda name: sizes[name])
    return f"largest: {root / top} with {human_size(sizes[top])}"


def _back_up(ws: Workspace, keep: Keep, stamp: str, report: CleanupReport) -> None:
    """Keep commits and changes under refs/paradev/backup/<branch>/, ignored files in an archive."""
    facts = keep.facts
    prefix = f"{BACKUP_PREFIX}/{facts.branch}/cleanup-{stamp}"
    kept = [
        (keep.worktree_commit, "uncommitted", f"uncommitted and hidden edits of {facts.path}"),
        (keep.staged_commit, "staged", f"staged changes of {facts.path}"),
    ]
    if facts.unmerged and facts.head:
        kept.append((facts.head, "", f"{facts.unmerged} unmerged commit(s) of {facts.branch}"))
    detached = (
        facts.record.head if facts.record is not None and facts.record.branch is None else None
    )
    if detached and not gitmod.is_ancestor(ws.git, detached, f"refs/heads/{ws.plan.base}"):
        # commits made on a detached HEAD live only in that work tree's HEAD and reflog
        kept.append((detached, "detached", f"the detached HEAD of {facts.path}"))
    for commit, suffix, what in kept:
        if commit:
            ref = f"{prefix}-{suffix}" if suffix else prefix
            gitmod.update_ref(ws.git, ref, commit, "")
            report.backups.append(f"{ref} ({what})")
    if keep.ignored:
        archive = archive_dir(ws.store) / f"cleanup-{stamp}-agent-{facts.agent}.tar.gz"
        write_archive(facts.path, keep.ignored, archive)
        size = human_size(total_size(facts.path, keep.ignored))
        report.backups.append(
            f"{archive} ({len(keep.ignored)} ignored file(s), {size}, of {facts.path})"
        )


def _hold(ws: Workspace, held: ExitStack, agent: int) -> str | None:
    """Hold ``agent`` until cleanup ends; why not, when a run, run-batch or merge holds it."""
    try:
        held.enter_context(ws.store.agent_lock(agent, "paradev cleanup"))
    except StateError as err:
        return str(err)
    return None


def _delete_branch(ws: Workspace, facts: AgentFacts, report: CleanupReport) -> None:
    if facts.branch == ws.plan.base:
        report.refused.append(f"branch {facts.branch}: it is the base branch; never deleted")
        return
    holders = [r.path for r in gitmod.worktree_list(ws.git) if r.branch == facts.branch]
    if holders:
        report.refused.append(f"branch {facts.branch}: checked out in {holders[0]}; kept")
        return
    assert facts.head is not None
    gitmod.delete_ref(ws.git, f"refs/heads/{facts.branch}", facts.head)
    report.deleted.append(facts.branch)


# -- lanes (``paradev.lanes``): paradev's own branch and tree of a task that landed --------------


@dataclass(frozen=True)
class LaneFacts:
    """One agent's lane about to go: its tree (if git knows it) and the commits only it holds."""

    agent: int
    path: Path
    record: Worktree | None
    tip: str | None  # the lane branch's commit
    only_here: list[tuple[str, str]]  # (commit, what): on neither base nor the agent's branch


def _lanes_to_clean(
    ws: Workspace,
    state: State,
    records: dict[str, Worktree],
    report: CleanupReport,
    held: ExitStack,
) -> list[LaneFacts]:
    """Every lane but those whose task still waits to land (a failed task's next completion
    makes its lane again: ``lanes.open_lane``)."""
    waiting = lanes.waiting(ws, state)
    chosen: list[LaneFacts] = []
    for agent in lanes.present(ws):
        path, branch = lanes.tree(ws, agent), lanes.branch(agent)
        if agent in waiting:  # landed, dropped, failed (a new lane comes with a new completion)
            report.refused.append(
                f"lane {branch} ({path}): #{waiting[agent].issue} still waits to land from it; kept"
            )
            continue
        busy = _hold(ws, held, agent)
        if busy is not None:
            report.refused.append(f"lane {branch} ({path}): {busy}; kept")
            continue
        record = records.get(os.path.realpath(path))
        if record is not None and (operation := gitmod.unfinished_operation(path)) is not None:
            report.refused.append(f"lane {branch} ({path}): a {operation} is in progress; kept")
            continue
        tip = ws.git.rev(f"refs/heads/{branch}")
        chosen.append(LaneFacts(agent, path, record, tip, _only_on_lane(ws, agent, record, tip)))
    return chosen


def _only_on_lane(
    ws: Workspace, agent: int, record: Worktree | None, tip: str | None
) -> list[tuple[str, str]]:
    """The lane's commits (branch, detached HEAD) that neither base nor the agent's branch holds."""
    held = [(tip, f"the lane branch {lanes.branch(agent)}")] if tip else []
    if record is not None and record.branch is None and record.head:
        held.append((record.head, f"the detached HEAD of {record.path}"))
    keepers = [f"refs/heads/{ws.plan.base}"]
    if ws.git.rev(f"refs/heads/{ws.branch(agent)}"):
        keepers.append(f"refs/heads/{ws.branch(agent)}")
    return [
        (commit, what)
        for commit, what in held
        if not any(gitmod.is_ancestor(ws.git, commit, keeper) for keeper in keepers)
    ]


def _clean_lane(ws: Workspace, facts: LaneFacts, stamp: str, report: CleanupReport) -> None:
    """Back up what only the lane holds, remove its tree and branch, and forget its record
    once the agent's branch no longer needs it (``lanes.needed``)."""
    branch = lanes.branch(facts.agent)
    for number, (commit, what) in enumerate(facts.only_here):
        ref = f"{BACKUP_PREFIX}/{branch}/cleanup-{stamp}" + (f"-{number}" if number else "")
        gitmod.update_ref(ws.git, ref, commit, "")
        report.backups.append(f"{ref} ({what})")
    if facts.record is not None:
        gitmod.remove_worktree(ws.git, facts.path, force=True)
        report.removed.append(str(facts.path))
    if facts.tip is not None:
        gitmod.delete_ref(ws.git, f"refs/heads/{branch}", facts.tip)
        report.deleted.append(branch)
    if not lanes.needed(ws, facts.agent):
        lanes.forget(ws, facts.agent)
