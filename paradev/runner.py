"""Launching agents: the batch to run, prompt files, logs, timeouts, live progress, hand-back.

Agents start from the argv template ``agents.command`` whose placeholders are
replaced argument by argument, never through a shell, so plan and issue text
(a title such as ``$(rm -rf ~)``) reaches the agent verbatim. Each agent runs
in its own process group, so a timeout or Ctrl-C stops everything it spawned.
Everything is polled from one thread: state changes stay in order and a
Ctrl-C always lands where the cleanup is.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol

from paradev import coverage, processes, supervise
from paradev.errors import GitError, ParadevError, PreconditionError
from paradev.git import (
    at_once,
    changed_paths,
    commit_leftovers,
    commit_subjects,
    content_merged,
    current_branch,
    dirty_paths,
    reset_keep,
    resolve_refs,
    side_by_side,
    unfinished_operation,
    update_ref,
    user_env,
)
from paradev.hooks import HookResult, run_hook, task_env
from paradev.lifecycle import (
    EmptyWorkError,
    agent_tips,
    assign,
    complete,
    current_task,
    start,
    waiting_for_dependencies,
)
from paradev.limits import parse_int
from paradev.plan import AGENT_PLACEHOLDERS, Batch, Task
from paradev.prepare import as_agent, prepare_worktree, with_port
from paradev.presets import (
    MAX_PROMPT_ARGUMENT,
    AgentCommand,
    find_programs,
    missing_programs,
    usage_in,
)
from paradev.state import (
    COMPLETED,
    DROPPED,
    FAILED,
    GATE_FAILED,
    IN_PROGRESS,
    INTERRUPTED,
    MERGED,
    PLANNED,
    RESTARTABLE,
    State,
    TaskRecord,
    now,
)
from paradev.text import printable
from paradev.workspace import Workspace

PLACEHOLDER = re.compile(r"\{(" + "|".join(AGENT_PLACEHOLDERS) + r")\}")
POLL_SECONDS = 0.1
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


class LaunchError(ParadevError):
    """The agent command could not be started at all."""


# -- choosing what to run -------------------------------------------------------------


@dataclass(frozen=True)
class BranchMove:
    """An agent branch whose work is all in base, moved to base before its next task."""

    agent: int
    branch: str
    old: str
    new: str
    backup: str | None  # set when old is not an ancestor of new (e.g. squash-merged)

    def describe(self, base: str) -> str:
        kept = f"; old head kept as {self.backup}" if self.backup else ""
        return f"agent {self.agent}: move {self.branch} to {base} ({self.new[:12]}){kept}"


@dataclass(frozen=True)
class BatchRun:
    """What run-batch is about to do, decided before anything changes."""

    batch: Batch
    queues: dict[int, list[Task]]  # agent -> its tasks to run, in order
    notes: list[str] = field(default_factory=list)  # tasks left out, and why
    moves: list[BranchMove] = field(default_factory=list)
    lost: list[tuple[Task, str]] = field(default_factory=list)  # agents gone with an earlier run


@contextmanager
def batch_lock(ws: Workspace) -> Iterator[None]:
    """One run-batch at a time per repository: a second one would launch the same tasks again."""
    ws.store.read()  # a corrupt state or state folder stops us before any lock file is made
    with ws.store.exclusive(
        "run-batch.lock",
        wait=0,
        busy="another 'paradev run-batch' is running or 'paradev run' drives the plan in this "
        "repository; wait for it or stop it with Ctrl-C",
    ):
        yield


def parse_agents(text: str, ws: Workspace) -> list[int] | None:
    """``--agents 1,3`` -> [1, 3]; "" -> None (every agent); cut to this host's agents."""
    from paradev.hosts import restrict_to_host

    if not text.strip():
        return restrict_to_host(ws.plan, ws.git, None)
    agents = [parse_int(part.strip(), "--agents") for part in text.split(",") if part.strip()]
    if not agents:
        raise PreconditionError(f"--agents needs agent numbers such as 1,3, got {text!r}")
    for agent in agents:
        ws.check_agent(agent)
    return restrict_to_host(ws.plan, ws.git, sorted(set(agents)))


def prepare(ws: Workspace, name: str | None = None, agents: list[int] | None = None) -> BatchRun:
    """Choose the batch and its tasks and check every precondition; changes nothing."""
    state = ws.store.read()
    batch = choose_batch(ws, state, name)
    require_unblocked(ws, state, batch)
    queues, notes = queue_tasks(state, batch, agents)
    problems: list[str] = []
    for agent, tasks in queues.items():
        problems += _agent_problems(ws, state, agent, tasks)
    running, lost = earlier_agents(state, queues)
    problems += running
    if ws.plan.instructions and not instructions_path(ws).is_file():
        problems.append(f"agents.instructions: {instructions_path(ws)} does not exist")
    moves: list[BranchMove] = []
    if not problems:
        for agent, tasks in queues.items():
            drops = coverage.pending_drops(ws, state, agent)
            if drops:  # start() takes them off first, then moves the branch to base
                problems += _held_drops(ws, state, drops)
                continue
            try:
                move = branch_move(ws, state, agent, tasks[0])
            except PreconditionError as err:
                problems.append(str(err))
            else:
                moves += [move] if move else []
    if problems:
        raise PreconditionError(f"cannot run batch {batch.name!r}: " + "; ".join(problems))
    return BatchRun(batch=batch, queues=queues, notes=notes, moves=moves, lost=lost)


def require_programs(ws: Workspace, run: BatchRun) -> None:
    """Refuse, before anything starts, when an agent of the run cannot be launched."""
    missing = programs_missing(ws, list(run.queues))
    if missing:
        raise PreconditionError(
            f"cannot launch batch {run.batch.name!r}: {missing}; "
            "or run 'paradev run-batch --no-launch' to hand the prompts out yourself"
        )


def programs_missing(ws: Workspace, agents: Sequence[int]) -> str | None:
    """What keeps ``agents`` from being launched (None: nothing)."""
    commands = {a: c for a in agents if (c := ws.plan.agent_command_for(a)) is not None}
    unset = [a for a in agents if a not in commands]
    found = find_programs(commands, ws.repo.main_root, os.environ.get("PATH"))
    return missing_programs(found, unset)


def earlier_agents(
    state: State, queues: Mapping[int, Sequence[Task]]
) -> tuple[list[str], list[tuple[Task, str]]]:
    """Agents an earlier run launched for tasks still in progress: still running, or gone.

    A running one is never started a second time in the same worktree. It is
    the same process only if pid *and* start time match: pids are reused.
    """
    running: list[str] = []
    lost: list[tuple[Task, str]] = []
    for tasks in queues.values():
        for task in tasks:
            record = state.tasks.get(task.issue)
            if record is None or record.status != IN_PROGRESS or record.agent_pid is None:
                continue
            pid = record.agent_pid
            if processes.alive(pid, record.agent_started):
                running.append(
                    f"agent {task.agent} launched by an earlier run-batch is still running "
                    f"#{task.issue} (pid {pid}); wait for it to end or stop it "
                    f"(kill -TERM -- -{pid}), then run 'paradev run-batch' again"
                )
            else:
                lost.append(
                    (
                        task,
                        f"agent {task.agent}'s process for #{task.issue} (pid {pid}) from an "
                        "earlier run is gone; the task counts as interrupted and starts again",
                    )
                )
    return running, lost


def mark_lost(ws: Workspace, run: BatchRun, progress: Progress) -> None:
    """Record the tasks whose agent vanished with an earlier run as interrupted, and say so."""
    for task, message in run.lost:
        mark_failed(ws, task, message, INTERRUPTED)
        progress.event(message)


def _held_drops(ws: Workspace, state: State, drops: Sequence[TaskRecord]) -> list[str]:
    """Dropped tasks whose commits cannot come off their branch before the next task."""
    held = []
    for record in drops:
        why = coverage.drop_obstacle(ws, state, record)
        if why is not None:
            held.append(coverage.held_drop(ws, record, why))
    return held


def choose_batch(ws: Workspace, state: State, name: str | None) -> Batch:
    """The named batch, else the first one with a task not merged yet."""
    if name:
        batch = ws.plan.batch(name)
        if batch is None:
            names = ", ".join(b.name for b in ws.plan.batches) or "none"
            raise PreconditionError(f"no batch named {name!r} in the plan (batches: {names})")
        return batch
    for batch in ws.plan.batches:
        if any(state.status(t.issue) not in (MERGED, DROPPED) for t in batch.tasks):
            return batch
    raise PreconditionError(
        "every batch of the plan is merged; add tasks to plan.toml or with 'paradev assign'"
    )


def require_unblocked(ws: Workspace, state: State, batch: Batch) -> None:
    """Refuse, naming them, while tasks of earlier batches are not merged."""
    needed = {dep: t.issue for t in batch.tasks for dep in t.depends_on}
    blocking: list[str] = []
    for earlier in ws.plan.batches[: ws.plan.batches.index(batch)]:
        for task in earlier.tasks:
            status = state.status(task.issue)
            if status not in (MERGED, DROPPED):
                why = f", needed by #{needed[task.issue]}" if task.issue in needed else ""
                blocking.append(
                    f"#{task.issue} {task.title!r} (batch {earlier.name!r}, "
                    f"agent {task.agent}, {status}{why})"
                )
    if blocking:
        raise PreconditionError(
            f"batch {batch.name!r} cannot start until earlier work is merged: "
            + "; ".join(blocking)
            + ". Finish and land it first ('paradev run-batch', 'paradev merge')"
        )


def queue_tasks(
    state: State, batch: Batch, agents: list[int] | None
) -> tuple[dict[int, list[Task]], list[str]]:
    """Each agent's tasks to run (a task already in progress first), and notes on the rest."""
    queues: dict[int, list[Task]] = {}
    notes: list[str] = []
    for task in batch.tasks:
        if agents is not None and task.agent not in agents:
            continue
        status = state.status(task.issue)
        waiting = waiting_for_dependencies(state, task)
        if status in (COMPLETED, MERGED, DROPPED):
            notes.append(f"#{task.issue} (agent {task.agent}) is already {status}")
        elif waiting:
            notes.append(waiting)
            notes += [
                f"#{task.issue} depends on dropped #{d}: remove #{d} from its depends_on "
                f"in plan.toml, or 'paradev reopen {d}'"
                for d in task.depends_on
                if state.status(d) == DROPPED
            ]
        else:
            queues.setdefault(task.agent, []).append(task)
    for tasks in queues.values():
        tasks.sort(key=lambda t: state.status(t.issue) != IN_PROGRESS)
    return dict(sorted(queues.items())), notes


def _agent_problems(ws: Workspace, state: State, agent: int, tasks: list[Task]) -> list[str]:
    worktree, branch = ws.worktree(agent), ws.branch(agent)
    if not (worktree / ".git").exists():
        return [f"agent {agent} has no worktree at {worktree}; run 'paradev setup'"]
    problems = []
    busy = current_task(ws, state, agent)
    if busy is not None and busy not in tasks:
        problems.append(
            f"agent {agent} is working on #{busy.issue} of batch {busy.batch!r}; "
            f"finish it with 'paradev complete {agent}'"
        )
    on = current_branch(worktree)
    if on != branch:
        problems.append(f"{worktree} is on {on or 'a detached HEAD'}, not {branch}")
    operation = unfinished_operation(worktree)
    if operation:
        problems.append(
            f"{worktree} has a {operation} in progress; finish it first "
            "('paradev merge --continue' or '--abort' if the merge train started it)"
        )
    return problems


def check_launch(ws: Workspace, state: State, task: Task) -> list[str]:
    """What keeps ``task`` from starting on its agent's branch as it is (no move: ``paradev
    run`` starting it while the previous task lands from its lane)."""
    problems = _agent_problems(ws, state, task.agent, [task])
    return problems + (
        ["dropped work to take off"] if coverage.pending_drops(ws, state, task.agent) else []
    )


def launch_preflight(ws: Workspace, state: State, task: Task) -> BranchMove | None:
    """run-batch's checks of one agent, for ``paradev run``'s next task: the move it needs."""
    problems = _agent_problems(ws, state, task.agent, [task])
    drops = coverage.pending_drops(ws, state, task.agent)
    problems += _held_drops(ws, state, drops) if drops else []
    if problems:
        raise PreconditionError("; ".join(problems))
    return None if drops else branch_move(ws, state, task.agent, task)


def branch_move(ws: Workspace, state: State, agent: int, first: Task) -> BranchMove | None:
    """Move a fully merged branch to base before a fresh task; refuse to drop unmerged commits.

    A task that failed or is in progress keeps its branch: the commits are its own work.
    """
    if state.status(first.issue) in (IN_PROGRESS, *RESTARTABLE):
        return None
    git, base, branch = ws.git, ws.plan.base, ws.branch(agent)
    tips = agent_tips(ws, agent)
    if tips is None:
        new = git.rev(f"refs/heads/{base}")
        missing = base if new is None else branch
        raise PreconditionError(f"branch {missing} does not exist; run 'paradev setup'")
    new, old = tips.left, tips.right
    if old == new:
        return None
    if tips.merge_base == old:  # an ancestor of base: nothing of its own to lose
        return BranchMove(agent, branch, old, new, backup=None)
    if content_merged(git, new, old):
        backup = f"refs/paradev/backup/{branch}/{_stamp()}"
        return BranchMove(agent, branch, old, new, backup=backup)
    stray = coverage.stray_work(ws, state, agent)
    if stray is not None:  # merge says the same about these commits
        raise PreconditionError(stray.message)
    extra = commit_subjects(git, new, old)
    shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
    raise PreconditionError(
        f"agent {agent}'s branch {branch} has {len(extra)} commit(s) not on {base} ({shown}); "
        "land them first ('paradev merge') or move them to another branch"
    )


def describe(ws: Workspace, run: BatchRun, launch: bool) -> list[str]:
    """What run-batch would do (``--dry-run``): moves, starts and the exact argv of each agent."""
    import shlex

    state = ws.store.read()
    lines = [f"batch {run.batch.name!r}:"]
    lines += [f"  {move.describe(ws.plan.base)}" for move in run.moves]
    for agent, tasks in run.queues.items():
        lines += [
            f"  agent {agent}: take dropped #{r.issue}'s commits off {ws.branch(agent)} "
            f"(kept at {r.backup_ref})"
            for r in coverage.pending_drops(ws, state, agent)
        ]
        for task in tasks:
            verb = "resume" if state.status(task.issue) == IN_PROGRESS else "start"
            lines.append(f"  agent {agent}: {verb} #{task.issue} {printable(task.title)}")
            if launch:
                prompt = prompt_path(ws, task)
                argv = agent_argv(ws, task, prompt, text=f"<the text of {prompt}>")
                lines.append(f"    in {ws.worktree(agent)}: {printable(shlex.join(argv))}")
    return lines


def apply_moves(ws: Workspace, moves: Sequence[BranchMove]) -> None:
    for move in moves:
        if move.backup:
            update_ref(ws.git, move.backup, move.old, "", reason="paradev run-batch: backup")
        reset_keep(ws.worktree(move.agent), move.new)


def assign_planned(ws: Workspace, run: BatchRun) -> None:
    """Mark every planned task of the run assigned (the plan already holds them)."""
    state = ws.store.read()
    for tasks in run.queues.values():
        for task in tasks:
            if state.status(task.issue) == PLANNED:
                assign(ws, task.agent, task.issue, task.title, task.hours, task.batch)


# -- prompts, logs, commands -------------------------------------------------------------


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def instructions_path(ws: Workspace) -> Path:
    return ws.repo.main_root / ws.plan.instructions


def prompt_path(ws: Workspace, task: Task) -> Path:
    """Outside every worktree (in the git common dir), so it is never committed."""
    return ws.store.dir / "prompts" / f"issue-{task.issue}.md"


def log_path(ws: Workspace, name: str) -> Path:
    return ws.store.dir / "logs" / f"{name}.log"


def _bullets(items: Sequence[str], empty: str) -> list[str]:
    return [f"- {item}" for item in items] if items else [f"- {empty}"]


def _instructions(ws: Workspace) -> list[str]:
    if not ws.plan.instructions:
        return []
    text = instructions_path(ws).read_text(encoding="utf-8", errors="replace")
    return ["", f"## Project instructions ({ws.plan.instructions})", "", text.rstrip()]


def _neighbours(ws: Workspace, task: Task) -> list[str]:
    """The other agents of the batch: what they declare and what their branches changed.

    The task's own declared files are never among what to avoid: where two
    tasks declare the same files, they are named as shared instead.
    """
    batch = ws.plan.batch(task.batch)
    others = [o for o in (batch.tasks if batch else ()) if o.agent != task.agent]
    lines = []
    for other, changed in zip(others, _changed_by(ws, [o.agent for o in others]), strict=True):
        shared = [f for f in [*other.files, *changed] if _is_own(f, task.files)]
        theirs = [f for f in other.files if f not in shared]
        declared = ", ".join(theirs) or ("nothing else" if other.files else "nothing declared")
        line = f"agent {other.agent}: #{other.issue} {other.title} (declares: {declared}"
        if changed := [f for f in changed if f not in shared]:
            line += f"; already changed: {', '.join(changed)}"
        if shared:
            line += (
                f"; overlapping your own files, yours to change: {', '.join(dict.fromkeys(shared))}"
            )
        lines.append(line + ")")
    return lines


def _changed_by(ws: Workspace, agents: Sequence[int]) -> list[list[str]]:
    """What each agent's branch changed since base: one ``for-each-ref`` for the tips, and a
    diff (side by side) only for a branch not at base's tip: a prompt per launch asked
    each branch twice, one process after another."""
    base = f"refs/heads/{ws.plan.base}"
    refs = [f"refs/heads/{ws.branch(a)}" for a in agents]
    tips = resolve_refs(ws.git, [base, *refs]) if refs else {}

    def changed(ref: str) -> list[str]:
        if ref not in tips or tips[ref] == tips.get(base):
            return []
        return changed_paths(ws.git, ws.plan.base, ref)

    return side_by_side(changed, refs)


def _is_own(path: str, own: Sequence[str]) -> bool:
    """Whether ``path`` (a file or a glob) and the task's declared ``own`` files overlap."""
    return any(
        path == glob
        or fnmatch.fnmatchcase(path, glob)
        or fnmatch.fnmatchcase(glob, path)
        or path.startswith(glob.rstrip("/") + "/")
        for glob in own
    )


def task_prompt(ws: Workspace, task: Task, neighbours: list[str] | None = None) -> str:
    """The prompt file of one task: what to do, and what the other agents are touching
    (``neighbours``: ``_neighbours`` already read, None: read here)."""
    branch, worktree = ws.branch(task.agent), ws.worktree(task.agent)
    lines = [
        f"# Issue #{task.issue}: {task.title}",
        "",
        f"You are agent {task.agent} of batch {task.batch!r}, working in {worktree} "
        f"on branch {branch} (based on {ws.plan.base}). Estimated effort: {task.hours:g}h.",
        "",
        "## Task",
        "",
        task.prompt.strip() or f"Implement issue #{task.issue}: {task.title}.",
        "",
        "## Files this task is expected to change",
        "",
        *_bullets(list(task.files), "not declared: keep the change focused"),
        "",
        "Before you edit a file not listed above, run `paradev check PATH` in your worktree: "
        "exit 1 names the other agents already changing it; then find another way.",
        "",
        "## Other agents in this batch: avoid touching their files",
        "",
        *_bullets(
            _neighbours(ws, task) if neighbours is None else neighbours,
            "none: you are alone in this batch",
        ),
        *_instructions(ws),
        "",
        "## When you are done",
        "",
        f"Commit your own work on {branch} and exit 0; exit non-zero if you could not do "
        f"the task. {_leftovers_rule(ws.plan.commit_leftovers, task)} Do not switch "
        "branches, rebase, merge or push: paradev lands the work.",
        "",
    ]
    return "\n".join(lines)


def _leftovers_rule(mode: str, task: Task) -> str:
    """What paradev does with what the agent leaves uncommitted (agents.commit_leftovers)."""
    if mode == "all":
        return "paradev commits everything you leave uncommitted, new files included."
    if mode == "none":
        return "paradev commits nothing for you: what you leave uncommitted does not land."
    if not task.files:
        return (
            "paradev commits your changes to tracked files, but no new file you leave "
            "uncommitted: commit every new file yourself, or it does not land."
        )
    return (
        "paradev commits your changes to tracked files and new files matching the "
        "expected files above; any other new file you leave uncommitted does not land."
    )


def conflict_prompt(ws: Workspace, task: Task, report: str) -> str:
    """The prompt that hands a stopped rebase back to the agent that owns the branch."""
    branch, worktree = ws.branch(task.agent), ws.worktree(task.agent)
    return _hand_back_prompt(
        f"Resolve a rebase conflict on {branch} (issue #{task.issue}: {task.title})",
        f"paradev's merge train is rebasing {branch} onto {ws.plan.base} in {worktree}, "
        "and the rebase stopped on a conflict with work that already landed.",
        ("The conflict", report),
        [
            "Edit each conflicted file so it keeps the intent of both sides, and remove "
            "every conflict marker (<<<<<<<, |||||||, =======, >>>>>>>).",
            "`git add <file>` for each resolved file.",
            "If a rebase is in progress: `GIT_EDITOR=true git rebase --continue`; if the "
            f"next commit stops too, resolve it the same way. Otherwise commit on {branch}.",
            "Exit 0 once `git status` shows no rebase in progress; exit non-zero if you "
            "cannot resolve it.",
        ],
        "Do not run `git rebase --abort`, reset, switch branches or push: paradev checks "
        "the result, runs the gate and goes on with the train.",
    )


def gate_failure_prompt(ws: Workspace, task: Task, report: str) -> str:
    """The prompt that hands a branch the merge queue ejected on a failed gate back to its agent.

    Not a conflict: nothing is in progress in the worktree; the fix is new
    commits on top of the completed work, which the queue then gates again.
    """
    branch, worktree = ws.branch(task.agent), ws.worktree(task.agent)
    return _hand_back_prompt(
        f"Fix the gate failure on {branch} (issue #{task.issue}: {task.title})",
        f"paradev's merge queue ran the gate (the project's checks) on {ws.plan.base} + the "
        f"work landing ahead of yours + your completed work on {branch}, and it failed: "
        f"{branch} was set aside and the queue went on without it. Your worktree {worktree} "
        "has your branch checked out, unchanged (not rebased).",
        ("The gate failure", report),
        [
            "Read the log above (and the whole log at its path) to find what fails; run the "
            "gate command in your worktree to reproduce it. The failure may come from how "
            f"your work meets what landed on {ws.plan.base} since you started: "
            f"`git log HEAD..{ws.plan.base}` shows those commits.",
            f"Fix it with new commits on {branch}, on top of your completed work: do not "
            "amend, rebase, reset or drop commits (paradev only takes a fix that keeps them).",
            "Run the gate command again until it passes.",
            "Exit 0 once the fix is committed and `git status` is clean; exit non-zero if "
            "you cannot fix it.",
        ],
        "To resubmit, just commit and exit 0: paradev puts your branch back at the end of "
        "the merge queue and gates it again (if the train is over by then, "
        f"`paradev complete {task.agent}` and the next `paradev merge` land it). Do not "
        "switch branches, merge or push.",
    )


def _hand_back_prompt(
    title: str, situation: str, section: tuple[str, str], steps: Sequence[str], rule: str
) -> str:
    """A hand-back prompt: what happened, the facts under their heading, what to do, what not."""
    heading, report = section
    numbered = [f"{n}. {step}" for n, step in enumerate(steps, start=1)]
    return "\n".join(
        [
            f"# {title}",
            "",
            situation,
            "",
            f"## {heading}",
            "",
            report.rstrip(),
            "",
            "## What to do",
            "",
            *numbered,
            "",
            rule,
            "",
        ]
    )


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def expand_argv(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Each argument with its ``{name}`` placeholders replaced; inserted text is not re-scanned."""
    return [PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in template]


@dataclass(frozen=True)
class Invocation:
    """One agent process to start: its argv, and the file on its stdin (None: closed)."""

    argv: list[str]
    stdin: Path | None = None


def agent_invocation(
    ws: Workspace, task: Task, prompt: Path, text: str | None = None
) -> Invocation:
    """The agent's command with every placeholder filled in; ``text`` stands for the prompt.

    ``{prompt}`` is the prompt file's text as one argument; past what one
    argument can hold a preset takes the file on its stdin instead, and a
    plan's own command is refused with what to write instead.
    """
    command = _command_of(ws, task.agent)
    values = {
        "prompt_file": str(prompt),
        "prompt": "",
        "worktree": str(ws.worktree(task.agent)),
        "branch": ws.branch(task.agent),
        "agent": str(task.agent),
        "issue": str(task.issue),
        "title": task.title,
        "git_common_dir": str(ws.repo.common_dir),
    }
    if not command.takes_prompt_text():
        return Invocation(expand_argv(command.argv, values))
    values["prompt"] = prompt.read_text(encoding="utf-8") if text is None else text
    size = len(values["prompt"].encode("utf-8"))
    if size <= MAX_PROMPT_ARGUMENT:
        return Invocation(expand_argv(command.argv, values))
    if command.stdin_argv:
        return Invocation(expand_argv(command.stdin_argv, values), stdin=prompt)
    raise LaunchError(
        f"the prompt of #{task.issue} is {size // 1024} KiB, more than one argument may hold "
        f"({MAX_PROMPT_ARGUMENT // 1024} KiB): use {{prompt_file}} instead of {{prompt}} "
        "in the agent's command"
    )


def agent_argv(ws: Workspace, task: Task, prompt: Path, text: str | None = None) -> list[str]:
    return agent_invocation(ws, task, prompt, text).argv


def _command_of(ws: Workspace, agent: int) -> AgentCommand:
    command = ws.plan.agent_command_for(agent)
    if command is None:
        raise LaunchError(
            f"agent {agent} has no command: set agents.preset or agents.command, "
            f"or add it to [agents.commands] in plan.toml"
        )
    return command


def agent_env(ws: Workspace, task: Task, prompt: Path, log: Path, mode: str) -> dict[str, str]:
    """The user's environment (in their locale) plus the PARADEV_* task variables."""
    env = user_env(task_env(ws, task, prompt_file=str(prompt), log=str(log), mode=mode))
    return with_port(env, ws.plan, task.agent)


def launch(
    ws: Workspace, task: Task, prompt: Path, log: Path, mode: str, record: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start the agent command in its worktree, in a new process group, output to ``log``.

    ``record``: run it under a supervisor writing its pid and exit code there
    (``paradev run``: a later run adopts an agent that outlived it).
    """
    invocation = agent_invocation(ws, task, prompt)
    argv = invocation.argv
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out, ExitStack() as stdin:
        shown = [a if len(a) <= 200 else f"{a[:200]}... ({len(a)} chars)" for a in argv]
        out.write(f"=== paradev {now()}: {mode} #{task.issue}: {shown!r}\n".encode())
        out.flush()
        try:
            source = stdin.enter_context(invocation.stdin.open("rb")) if invocation.stdin else None
            return processes.spawn(
                supervise.command(record, argv) if record else argv,
                cwd=ws.worktree(task.agent),
                env=agent_env(ws, task, prompt, log, mode),
                stdin=source if source is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise LaunchError(f"cannot launch {argv[0]!r}: {exc.strerror or exc}") from None


def last_line(path: Path, limit: int = 4096) -> str:
    """The last non-empty line of a log, without terminal escapes (for the live table)."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - limit))
            data = handle.read()
    except OSError:
        return ""
    lines = (_CONTROL.sub("", line).strip() for line in data.decode(errors="replace").splitlines())
    return next((line for line in reversed(list(lines)) if line), "")


# -- state changes around one task ---------------------------------------------------------


def commit_message(task: Task) -> str:
    """The merge train's conventional message for the task, saying who committed it."""
    from paradev.train.messages import squash_message  # the train's package: loaded when needed

    note = f"Left uncommitted by agent {task.agent}; committed by paradev run-batch."
    return f"{squash_message(task.title, task.issue)}\n{note}\n"


def begin(ws: Workspace, task: Task) -> tuple[TaskRecord, HookResult | None]:
    """Start the task (unless already in progress) and run the on_start hook when it starts."""
    state = ws.store.read()
    if state.status(task.issue) == IN_PROGRESS:
        return state.tasks[task.issue], None
    _, record = start(ws, task.agent, task.issue)
    return record, run_hook(ws, "on_start", task, record)


def record_launch(ws: Workspace, task: Task, log: Path, pid: int) -> None:
    """The log, and the agent's pid and start time: a later run must not start a second copy."""
    with ws.store.update() as state:
        record = state.task(task.issue, task.agent)
        record.log = str(log)
        record.agent_pid, record.agent_started = pid, processes.start_time(pid)


def log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def record_usage(ws: Workspace, task: Task, log: Path, start: int) -> None:
    """Add what the agent reported it cost (read from its log since ``start``) to the task.

    Every run counts, a failed one too: the cost was real. Nothing is
    recorded when the agent reported nothing (a plain command, a timeout).
    """
    try:
        with log.open("rb") as handle:
            handle.seek(start)
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return
    usage = usage_in(lines)
    if usage is None:
        return
    with ws.store.update() as state:
        if task.issue not in state.tasks:
            return
        record = state.task(task.issue, task.agent)
        if usage.cost_usd is not None:
            record.cost_usd = (record.cost_usd or 0.0) + usage.cost_usd
        tokens = record.tokens or {"input": 0, "output": 0}
        record.tokens = {
            "input": tokens["input"] + usage.input_tokens,
            "output": tokens["output"] + usage.output_tokens,
        }


def mark_failed(
    ws: Workspace, task: Task, error: str, status: str = FAILED, log: Path | None = None
) -> None:
    """Mark a task in progress failed (or interrupted) with why; run-batch starts it again.

    ``log`` is kept when the launch did not get to record it (a signal while starting).
    """
    with ws.store.update() as state:
        record = state.task(task.issue, task.agent)
        if record.status == IN_PROGRESS:
            record.status, record.failed_at, record.error = status, now(), error
            if log is not None and record.log is None and log.exists():
                record.log = str(log)


def finish_task(ws: Workspace, task: Task) -> tuple[str, HookResult | None]:
    """After an agent exited 0: commit its leftovers, complete the task from the real diff.

    Raises PreconditionError when the worktree is not in a state to complete.
    """
    worktree, branch = ws.worktree(task.agent), ws.branch(task.agent)
    operation = unfinished_operation(worktree)
    if operation:
        raise PreconditionError(f"the agent exited 0 but left a {operation} unfinished")
    on = current_branch(worktree)
    if on != branch:
        raise PreconditionError(f"the agent left its worktree on {on or 'a detached HEAD'}")
    mode = ws.plan.commit_leftovers
    clean = not dirty_paths(worktree)  # the usual case: one git status for all that follows
    try:
        leftover, committed = (
            commit_leftovers(worktree, commit_message(task), _new_files_to_commit(mode, task))
            if mode != "none" and not clean
            else (None, [])
        )
    except GitError as err:
        raise PreconditionError(f"could not commit what the agent left: {err}") from None
    try:
        done = complete(ws, task.agent, clean=clean)
    except EmptyWorkError:
        left = sorted(dirty_paths(worktree))
        kept = f" ({len(left)} path(s) left uncommitted: {', '.join(left)})" if left else ""
        raise PreconditionError(
            f"the agent exited 0 without committing anything for #{task.issue}{kept}; "
            f"run-batch or run tries it again, or 'paradev reopen {task.issue}' then "
            f"'paradev complete {task.agent} --empty' if it needed no change"
        ) from None
    detail = f"{len(done.record.files_modified)} file(s) changed"
    if leftover:
        detail += f", {len(committed)} left uncommitted were committed as {leftover[:12]}"
    detail += _left_note(mode, task, done.record.left_uncommitted)
    return detail, run_hook(ws, "on_complete", done.task, done.record)


def _new_files_to_commit(mode: str, task: Task) -> list[str] | None:
    """Which new files a leftovers commit takes: all (None), or those the task declares."""
    return None if mode == "all" else list(task.files)


def _left_note(mode: str, task: Task, left: Sequence[str]) -> str:
    """The completion line's account of what stays uncommitted in the worktree."""
    if not left:
        return ""
    shown = ", ".join(printable(p) for p in left[:10])
    shown += f" and {len(left) - 10} more" if len(left) > 10 else ""
    if mode == "none":
        why = "agents.commit_leftovers is 'none'"
    elif not task.files:
        why = "the task declares no files, so paradev commits no new file for it"
    else:
        why = "not in the task's declared files"
    return f"; {len(left)} path(s) left uncommitted ({why}): {shown}"


# -- progress --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One agent's line in the live table."""

    agent: int
    issue: int
    state: str
    elapsed: float
    last: str


class Progress(Protocol):
    def event(self, text: str) -> None: ...

    def show(self, rows: list[Row]) -> None: ...


class LineProgress:
    """One line per event (not a terminal: logs, CI, tests)."""

    def __init__(self, echo: Callable[[str], None] = print) -> None:
        self.echo = echo

    def event(self, text: str) -> None:
        self.echo(text)

    def show(self, rows: list[Row]) -> None:
        """Nothing: without a terminal only events are printed."""


class LiveProgress:
    """A rich table refreshed in place on a terminal; events scroll above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def event(self, text: str) -> None:
        self.live.console.print(text, markup=False, highlight=False)

    def show(self, rows: list[Row]) -> None:
        from rich.table import Table

        table = Table("agent", "issue", "state", "elapsed", "last log line", expand=False)
        for row in rows:
            table.add_row(
                str(row.agent), f"#{row.issue}", row.state, f"{row.elapsed:.0f}s", row.last[-70:]
            )
        self.live.update(table)

    def close(self) -> None:
        self.live.stop()


@contextmanager
def progress_display(live: bool) -> Iterator[Progress]:
    """The live table on a terminal, one line per event otherwise."""
    if not live:
        yield LineProgress()
        return
    display = LiveProgress()
    try:
        yield display
    finally:
        display.close()


# -- running a batch --------------------------------------------------------------------------


class AgentProcess(processes.Group, Protocol):
    """A running agent: the process run-batch started, or one ``paradev run`` adopted."""

    def poll(self) -> int | None: ...


@dataclass
class Running:
    task: Task
    proc: AgentProcess
    log: Path
    started: float
    deadline: float
    log_start: int = 0  # where this run's output begins in the log (it is appended to)


@dataclass(frozen=True)
class Outcome:
    """How one task of the run ended: completed, failed, or not started."""

    task: Task
    status: str
    detail: str
    log: Path | None = None


@dataclass(frozen=True)
class Started:
    """A task started without launching an agent (``--no-launch``)."""

    task: Task
    worktree: Path
    branch: str
    prompt: Path
    queued: tuple[Task, ...]


def start_only(ws: Workspace, run: BatchRun, progress: Progress) -> list[Started]:
    """``--no-launch``: move branches, assign, start each agent's first task, write prompts."""
    mark_lost(ws, run, progress)
    apply_moves(ws, run.moves)
    assign_planned(ws, run)
    for tasks in run.queues.values():  # all ready before any starts: a failure starts none
        _prepare(ws, tasks[0], progress)
    started = []
    for agent, tasks in run.queues.items():
        task = tasks[0]
        _, hook = begin(ws, task)
        _report_hook(progress, hook)
        prompt = write_text(prompt_path(ws, task), task_prompt(ws, task))
        started.append(
            Started(task, ws.worktree(agent), ws.branch(agent), prompt, tuple(tasks[1:]))
        )
    return started


def run_batch(
    ws: Workspace,
    run: BatchRun,
    progress: Progress,
    clock: Callable[[], float] = time.monotonic,
) -> list[Outcome]:
    """Launch every agent of the batch at once, wait, and complete or fail each task."""
    mark_lost(ws, run, progress)
    with ExitStack() as locks:  # per agent: the merge train may land the others meanwhile
        for agent in run.queues:
            locks.enter_context(ws.store.agent_lock(agent, "paradev run-batch"))
        apply_moves(ws, run.moves)
        assign_planned(ws, run)
        return Supervisor(ws, run.queues, progress, clock).run()


def _prepare(ws: Workspace, task: Task, progress: Progress) -> None:
    """[setup] before the agent works: the branch (its lockfiles) may have moved since."""
    prepare_worktree(
        ws, ws.worktree(task.agent), task.agent, notify=as_agent(task.agent, progress.event)
    )


def _report_hook(progress: Progress, hook: HookResult | None) -> None:
    if hook is not None and not hook.ok:
        progress.event(f"warning: {hook.describe()}")


def pause() -> None:
    """Between two polls of the running agents."""
    time.sleep(POLL_SECONDS)


class Supervisor:
    """Runs each agent's queue of tasks; all agents at once, each agent's tasks in order."""

    def __init__(
        self,
        ws: Workspace,
        queues: Mapping[int, Sequence[Task]],
        progress: Progress,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ws = ws
        self.progress = progress
        self.clock = clock
        self.pending = {agent: deque(tasks) for agent, tasks in queues.items()}
        self.running: dict[int, Running] = {}
        self.launching: Task | None = None
        self.outcomes: list[Outcome] = []
        self.leases: dict[int, ExitStack] = {}  # agent -> its task's lease, renewed ([hosts])

    def run(self) -> list[Outcome]:
        try:
            for agent in self.pending:
                self._next(agent)
            while self.running:
                self._poll()
                self.progress.show(self.rows())
                pause()
        except KeyboardInterrupt as interrupt:
            with processes.shielded():
                self._interrupt(processes.describe(interrupt))
            raise
        finally:
            for agent in list(self.leases):
                self._let_go(agent)
        return self.outcomes

    def _keep_alive(self, task: Task) -> None:
        """Renew the task's lease while its agent runs: other hosts see this host alive.

        [agents] hosts only: without them the leases' modules are not even loaded."""
        if not self.ws.plan.hosts:
            return
        from paradev.tasklease import keep_alive

        stack = self.leases[task.agent] = ExitStack()
        stack.enter_context(keep_alive(self.ws, task.issue))

    def _let_go(self, agent: int) -> None:
        stack = self.leases.pop(agent, None)
        if stack is not None:
            stack.close()

    def rows(self) -> list[Row]:
        now_ = self.clock()
        rows = [
            Row(a, r.task.issue, "running", now_ - r.started, last_line(r.log))
            for a, r in self.running.items()
        ]
        rows += [Row(o.task.agent, o.task.issue, o.status, 0.0, o.detail) for o in self.outcomes]
        rows += [Row(a, t.issue, "queued", 0.0, "") for a, q in self.pending.items() for t in q]
        return sorted(rows, key=lambda r: (r.agent, r.issue))

    def _next(self, agent: int) -> None:
        queue = self.pending[agent]
        if queue:
            self.start(queue.popleft())

    def start(self, task: Task) -> None:
        """Launch the agent on ``task`` (in progress by then); a launch that fails fails it."""
        self.launching = task  # a signal before it runs still finds it
        try:
            self.running[task.agent] = self._launch(task)
        except ParadevError as err:
            mark_failed(self.ws, task, str(err))
            self._done(task, FAILED, str(err), None)
        self.launching = None

    def _launch(self, task: Task) -> Running:
        # what the other agents changed (git processes) is read while the task starts (a state
        # write): the launch waits for the longer of the two, not for both one after the other
        neighbours, _ = at_once(partial(_neighbours, self.ws, task), partial(self._begin, task))
        prompt = write_text(prompt_path(self.ws, task), task_prompt(self.ws, task, neighbours))
        log = log_path(self.ws, f"issue-{task.issue}")
        log_start = log_size(log)
        proc = self._spawn(task, prompt, log)
        record_launch(self.ws, task, log, proc.pid)
        self._keep_alive(task)
        started = self.clock()
        self.progress.event(
            f"agent {task.agent}: started #{task.issue} {printable(task.title)} "
            f"(pid {proc.pid}, log {log})"
        )
        deadline = started + self.ws.plan.agent_timeout
        return Running(task, proc, log, started, deadline, log_start)

    def _begin(self, task: Task) -> None:
        _, hook = begin(self.ws, task)
        _report_hook(self.progress, hook)
        _prepare(self.ws, task, self.progress)  # a failure fails the task (in progress by now)

    def _spawn(self, task: Task, prompt: Path, log: Path) -> subprocess.Popen[bytes]:
        return launch(self.ws, task, prompt, log, mode="task")

    def _poll(self) -> None:
        for agent, running in list(self.running.items()):
            code = running.proc.poll()
            if code is None and self.clock() >= running.deadline:
                processes.stop([running.proc])
                del self.running[agent]
                self._let_go(agent)
                record_usage(self.ws, running.task, running.log, running.log_start)
                self._fail(running, f"timed out after {self.ws.plan.agent_timeout:g}s")
            elif code is not None:
                processes.release(running.proc)
                del self.running[agent]
                self._let_go(agent)
                record_usage(self.ws, running.task, running.log, running.log_start)
                self._exited(running, code)

    def _exited(self, running: Running, code: int) -> None:
        task = running.task
        if code != 0:
            self._fail(running, f"exit code {code}")
            return
        try:
            detail, hook = finish_task(self.ws, task)
        except ParadevError as err:
            self._fail(running, str(err))
            return
        _report_hook(self.progress, hook)
        elapsed = self.clock() - running.started
        self._done(task, COMPLETED, f"{detail} in {elapsed:.1f}s", running.log)
        self._next(task.agent)

    def _fail(self, running: Running, error: str, status: str = FAILED) -> None:
        mark_failed(self.ws, running.task, f"{error}; see {running.log}", status)
        self._done(running.task, status, error, running.log)

    def _done(self, task: Task, status: str, detail: str, log: Path | None) -> None:
        self.outcomes.append(Outcome(task, status, detail, log))
        where = f" (log {log})" if log and status in RESTARTABLE else ""
        self.progress.event(f"agent {task.agent}: #{task.issue} {status}: {detail}{where}")
        if status in RESTARTABLE:
            self._skip_rest(task.agent, f"not started: #{task.issue} {status} before it")

    def _skip_rest(self, agent: int, why: str) -> None:
        queue = self.pending[agent]
        while queue:
            task = queue.popleft()
            self.outcomes.append(Outcome(task, "not started", why))
            self.progress.event(f"agent {agent}: #{task.issue} {why}")

    def _interrupt(self, why: str) -> None:
        """Stop every agent (and hook) at once, then record their tasks as interrupted."""
        processes.stop_all()
        stopped, self.running = self.running, {}
        error = f"interrupted ({why}); 'paradev run-batch' starts it again"
        for running in stopped.values():
            self._fail(running, error, INTERRUPTED)
        task, self.launching = self.launching, None
        if task is not None and task.agent not in stopped:  # signalled while it was starting
            log = log_path(self.ws, f"issue-{task.issue}")
            mark_failed(self.ws, task, f"{error}; see {log}", INTERRUPTED, log)
            self._done(task, INTERRUPTED, error, log)


# -- handing a conflict back ------------------------------------------------------------------


def hand_back_task(ws: Workspace, agent: int) -> Task:
    """The task whose branch is being landed (completed or gate_failed), else the next one."""
    state = ws.store.read()
    tasks = ws.tasks_of(agent)
    for wanted in (COMPLETED, GATE_FAILED, IN_PROGRESS):
        found = [t for t in tasks if state.status(t.issue) == wanted]
        if found:
            return found[-1]
    unmerged = [t for t in tasks if state.status(t.issue) != MERGED]
    if unmerged or tasks:
        return (unmerged or tasks)[0]
    return Task(agent=agent, issue=0, title="resolve the rebase conflict", hours=0.0, batch="")


def hand_back_conflict(
    ws: Workspace,
    agent: int,
    report: str,
    *,
    notify: Callable[[str], None] = print,
    on_launch: Callable[[subprocess.Popen[bytes]], None] | None = None,
    kind: str = "conflict",
) -> bool:
    """Launch the agent's command to resolve a stopped rebase; True when it exited 0.

    The merge train checks the rebase itself afterwards; this only reports
    whether the agent ran and said it succeeded. ``on_launch`` gets the
    agent's process first (the train journals it: it outlives a killed train).
    ``kind = "gate"``: a failed gate instead (the queue ejected the branch);
    the agent gets that prompt, and ``PARADEV_MODE=gate``.
    """
    what = "the gate failure" if kind == "gate" else "the conflict"
    if ws.plan.agent_command_for(agent) is None:
        notify(
            f"no agents.command, preset or [agents.commands] entry for agent {agent} in "
            f"plan.toml: nobody to hand {what} back to"
        )
        return False
    task = hand_back_task(ws, agent)
    name = f"{'gate-failure' if kind == 'gate' else 'conflict'}-agent-{agent}"
    build = gate_failure_prompt if kind == "gate" else conflict_prompt
    prompt = write_text(ws.store.dir / "prompts" / f"{name}-{_stamp()}.md", build(ws, task, report))
    log = log_path(ws, name)
    log_start = log_size(log)
    try:
        proc = launch(ws, task, prompt, log, mode=kind)
    except LaunchError as err:
        notify(str(err))
        return False
    notify(f"handed {what} back to agent {agent} (prompt {prompt}, log {log})")
    if on_launch is not None:
        on_launch(proc)
    code = wait_for(proc, ws.plan.agent_timeout)
    record_usage(ws, task, log, log_start)
    if code is None:
        notify(f"agent {agent} timed out after {ws.plan.agent_timeout:g}s and was stopped")
        return False
    notify(f"agent {agent} exited {code}")
    return code == 0


def wait_for(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The agent's exit code, or None after stopping it at the timeout; Ctrl-C stops it too."""
    try:
        code = processes.wait(proc, timeout)
    except subprocess.TimeoutExpired:
        processes.stop([proc])
        return None
    except KeyboardInterrupt:
        with processes.shielded():
            processes.stop_all()
        raise
    processes.release(proc)
    return code
