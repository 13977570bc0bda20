"""invoke tasks: thin glue over the core modules, and the one error boundary.

Core modules are imported inside each task so that a command loads only
what it needs (``paradev status`` must stay fast).
"""

from __future__ import annotations

import functools
import json as jsonlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.parser.argument import Argument
from invoke.tasks import Task, task

from paradev.errors import EXIT_INTERRUPTED, ParadevError
from paradev.text import printable

if TYPE_CHECKING:
    from paradev.hooks import HookResult
    from paradev.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])


def boundary(func: F) -> F:
    """The one error boundary: a ParadevError becomes one line on stderr and its exit code.

    SIGTERM and SIGHUP end a command as Ctrl-C does: every process group it
    started is stopped, and it exits 128 + the signal number.
    """

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        from paradev import processes

        try:
            with processes.interruptible():
                return func(*args, **kwargs)
        except ParadevError as err:
            raise Exit(f"paradev: {err}", code=err.exit_code) from None
        except KeyboardInterrupt as interrupt:
            if isinstance(interrupt, processes.Interrupted):
                message = f"paradev: interrupted ({processes.describe(interrupt)})"
                raise Exit(message, code=interrupt.exit_code) from None
            raise Exit("paradev: interrupted", code=EXIT_INTERRUPTED) from None

    return guarded  # type: ignore[return-value]


class ParadevTask(Task[Any]):
    """An invoke Task whose flag help survives parsing.

    invoke's ``get_arguments`` pops each help string as it builds the flags,
    so a second parse in one process (tests, ``--help`` after a run) would
    show flags without help.
    """

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        kept = dict(self.help)
        try:
            return super().get_arguments(ignore_unknown_help)
        finally:
            self.help = kept


def command(**options: Any) -> Callable[[Callable[..., Any]], Task[Any]]:
    """``@task`` with stable long flags only, wrapped in the error boundary."""

    def decorate(func: Callable[..., Any]) -> Task[Any]:
        made: Task[Any] = task(klass=ParadevTask, auto_shortflags=False, **options)(boundary(func))
        return made

    return decorate


def emit_json(data: Any) -> None:
    print(jsonlib.dumps(data, indent=2))


def warn(message: str) -> None:
    print(f"paradev: warning: {message}", file=sys.stderr)


def report_hook(result: HookResult | None) -> None:
    """A failing hook is a warning, never an error."""
    if result is not None and not result.ok:
        warn(result.describe())


def _workspace() -> Workspace:
    from paradev.workspace import open_workspace

    ws = open_workspace()
    ws.store.read()  # a corrupt state stops every command but reset and doctor, up front
    return ws


# -- foundation -----------------------------------------------------------------------


@command(help={"agents": "set up agents 1..N only (default: agents.count from plan.toml)"})
def setup(c: Context, agents: str = "") -> None:
    """Create or repair every agent's worktree and branch from base (idempotent)."""
    from paradev.lifecycle import parse_int
    from paradev.worktrees import setup as setup_worktrees

    count = parse_int(agents, "--agents") if agents else None
    for step in setup_worktrees(_workspace(), count):
        print(step.describe())


@command(
    positional=["agent", "issue", "title", "hours"],
    help={
        "agent": "agent number (1..agents.count)",
        "issue": "issue number, unique in the plan",
        "title": "task title, stored verbatim",
        "hours": "estimated hours (a number >= 0)",
        "batch": "batch to add the task to (default: the last batch; created if missing)",
    },
)
def assign(
    c: Context, agent: str, issue: str, title: str, hours: str, batch: str | None = None
) -> None:
    """Add a task to plan.toml (comments and layout kept) and mark it assigned."""
    from paradev.lifecycle import assign as assign_task
    from paradev.lifecycle import parse_hours, parse_int

    task_ = assign_task(
        _workspace(),
        parse_int(agent, "AGENT"),
        parse_int(issue, "ISSUE"),
        title,
        parse_hours(hours),
        batch,  # None when --batch is not given; "" is refused as an empty name
    )
    print(f"assigned #{task_.issue} to agent {task_.agent} in batch {task_.batch!r}")


@command(positional=["agent"], help={"agent": "agent number"})
def start(c: Context, agent: str) -> None:
    """Start the agent's next planned or assigned task and record the base commit."""
    from paradev.hooks import run_hook
    from paradev.lifecycle import parse_int
    from paradev.lifecycle import start as start_task

    ws = _workspace()
    task_, record = start_task(ws, parse_int(agent, "AGENT"))
    title = printable(task_.title)
    print(f"agent {task_.agent} started #{task_.issue} {title} (base {record.base_commit})")
    report_hook(run_hook(ws, "on_start", task_, record))


@command(positional=["agent"], help={"agent": "agent number"})
def complete(c: Context, agent: str) -> None:
    """Mark the agent's task completed; files come from the branch's real diff."""
    from paradev.hooks import run_hook
    from paradev.lifecycle import complete as complete_task
    from paradev.lifecycle import parse_int

    ws = _workspace()
    done = complete_task(ws, parse_int(agent, "AGENT"))
    files = done.record.files_modified
    print(f"agent {done.task.agent} completed #{done.task.issue} ({len(files)} files changed)")
    for path in files:
        print(f"  {path}")
    if done.uncommitted:
        warn(
            f"{len(done.uncommitted)} uncommitted path(s) in the worktree are not counted: "
            + ", ".join(done.uncommitted)
        )
    report_hook(run_hook(ws, "on_complete", done.task, done.record))


@command(help={"json": "print JSON (stable keys) instead of the table"})
def status(c: Context, json: bool = False) -> None:
    """Show every agent: branch, worktree, tasks, hours, ahead/behind, dirty."""
    from paradev.lifecycle import render_status
    from paradev.lifecycle import status as status_report

    report = status_report(_workspace())
    if json:
        emit_json(report)
    else:
        print(render_status(report))


@command(help={"yes": "clear a state that holds records (the old file is kept as a backup)"})
def reset(c: Context, yes: bool = False) -> None:
    """Clear the shared state; refused while a merge or run-batch runs; the old file is kept."""
    from paradev.doctor import reset as reset_state
    from paradev.git import discover
    from paradev.state import StateStore

    store = StateStore(discover().common_dir)
    done = reset_state(store, yes=yes)
    if done.aside:
        print(f"moved the corrupt state file aside to {done.aside}")
    if done.backup:
        print(f"kept the old state as {done.backup}")
    if done.dropped and done.dropped.train:
        warn("a merge train was in progress; its journal is gone (git state is untouched)")
    print(f"state cleared: {store.path}")


@command(
    help={
        "repair": "fix what is safe: prune stale worktree records, "
        "move a corrupt state aside, recreate missing worktrees"
    }
)
def doctor(c: Context, repair: bool = False) -> None:
    """Check git, the plan, the state and the worktrees (exit 1 when something is wrong).

    A corrupt state file exits 2, as every command but reset and doctor --repair does.
    """
    from paradev import plan as plan_mod
    from paradev.doctor import doctor as run_doctor
    from paradev.errors import StateError, Stopped
    from paradev.git import discover

    repo = discover()
    findings = run_doctor(repo, plan_mod.find_plan(repo.main_root), repair)
    for finding in findings:
        print(f"{'ok ' if finding.ok else 'BAD'}  {finding.text}")
    bad = [f for f in findings if not f.ok]
    blocking = [f for f in bad if f.blocking]
    if blocking:  # a corrupt state stops every command: exit 2 like them
        raise StateError(blocking[0].text)
    if bad:
        raise Stopped(
            f"{len(bad)} problem(s) found" + ("" if repair else "; try 'paradev doctor --repair'")
        )


# -- merge train (issue 4) ---------------------------------------------------------------


@command(
    help={
        "dry_run": "simulate the whole train (merge-tree/commit-tree); change nothing",
        "continue_": "resume a stopped or interrupted train where it was",
        "abort": "end the train: abort paradev's rebase, restore that branch from its backup",
        "skip": "leave the stopped agent out and go on with the others",
        "push": "push base and the rewritten agent branches (default: merge.push)",
        "no_push": "do not push, whatever merge.push says",
        "no_gate": "land without running gate.command",
        "json": "print the outcome as JSON (landed, skipped, stop); progress goes to stderr",
    }
)
def merge(
    c: Context,
    dry_run: bool = False,
    continue_: bool = False,
    abort: bool = False,
    skip: bool = False,
    push: bool = False,
    no_push: bool = False,
    no_gate: bool = False,
    json: bool = False,
) -> None:
    """Land every agent's completed work on base: rebase, gate, fast-forward, push."""
    from paradev import train
    from paradev.errors import PreconditionError
    from paradev.report.machine import dry_run_json, merge_json

    if sum((dry_run, continue_, abort, skip)) > 1:
        raise PreconditionError("use only one of --dry-run, --continue, --abort, --skip")
    if push and no_push:
        raise PreconditionError("use --push or --no-push, not both")
    pushing = True if push else (False if no_push else None)
    ws = _workspace()
    out = _to_stderr if json else print
    history = len(ws.store.read().merge_history)
    try:
        if dry_run:
            steps = train.dry_run(ws, out)
            if json:
                emit_json(dry_run_json(steps))
            return
        if abort:
            train.abort(ws, out)
        elif continue_:
            train.resume(ws, out, push=pushing, gate=not no_gate)
        elif skip:
            train.skip(ws, out, push=pushing, gate=not no_gate)
        else:
            train.merge(ws, out, push=pushing, gate=not no_gate)
    except ParadevError as err:
        if json and err.exit_code == 1:  # stopped: say where, then exit 1
            emit_json(merge_json(ws, history))
        raise
    if json:
        emit_json(merge_json(ws, history))


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@command(
    help={
        "force": "also remove dirty or unmerged worktrees (their work kept under backup refs)",
        "delete_branches": "delete the agent branches too (never base, never one checked out)",
        "backups": "list the backups paradev keeps (archives, old states, refs/paradev/backup)",
        "older": "with --backups: remove the backups made more than DAYS days ago",
    }
)
def cleanup(
    c: Context,
    force: bool = False,
    delete_branches: bool = False,
    backups: bool = False,
    older: str = "",
) -> None:
    """Remove the worktrees of agents whose work is merged and whose trees are clean."""
    from paradev.errors import PreconditionError, Stopped

    if older and not backups:
        raise PreconditionError("--older prunes backups: use it with --backups")
    if backups:
        if force or delete_branches:
            raise PreconditionError(
                "--backups only lists and prunes: drop --force/--delete-branches"
            )
        _cleanup_backups(older)
        return
    from paradev.cleanup import cleanup as run_cleanup

    report = run_cleanup(_workspace(), force=force, delete_branches=delete_branches)
    for line in report.lines():
        print(line)
    if report.refused:
        raise Stopped(
            f"{len(report.refused)} worktree(s) kept; see above, or use --force "
            "(unmerged and uncommitted work is kept under refs/paradev/backup/ first)"
        )


def _cleanup_backups(older: str) -> None:
    """``cleanup --backups [--older DAYS]``: list the backups, or prune the old ones."""
    from paradev import backups as backups_mod
    from paradev.errors import PreconditionError
    from paradev.git import discover
    from paradev.state import StateStore

    repo = discover()
    store = StateStore(repo.common_dir)
    if not older:
        found = backups_mod.list_backups(repo.git, store)
        for backup in found:
            print(backup.line())
        print(f"{len(found)} backup(s)" + (" (prune with --older DAYS)" if found else ""))
        return
    try:
        days = float(older)
    except ValueError:
        raise PreconditionError(
            f"--older {older!r}: give a number of days, e.g. --older 30"
        ) from None
    removed, kept = backups_mod.prune_backups(repo.git, store, days)
    for backup in removed:
        print(f"removed {backup.line()}")
    for backup in kept:
        print(f"kept (a merge train in progress needs it) {backup.line()}")
    print(f"removed {len(removed)} backup(s) older than {older} day(s)")


# -- run-batch, estimate, demo (issue 5) ---

if TYPE_CHECKING:
    from paradev.runner import BatchRun, Outcome


@command(
    help={
        "batch": "batch to run (default: the first batch not fully merged)",
        "no_launch": "only assign and start; print each agent's worktree, branch and prompt file",
        "dry_run": "say what would happen and change nothing",
        "agents": "only these agents, comma-separated (e.g. 1,3)",
        "json": "print one JSON object per event, one per line",
    }
)
def run_batch(
    c: Context,
    batch: str = "",
    no_launch: bool = False,
    dry_run: bool = False,
    agents: str = "",
    json: bool = False,
) -> None:
    """Start a batch: assign and start its tasks, launch the agents at once, wait, complete."""
    from paradev import runner

    ws = _workspace()
    with runner.batch_lock(ws):
        run = runner.prepare(ws, batch or None, runner.parse_agents(agents, ws))
        if json:
            _run_batch_json(ws, run, bool(ws.plan.agent_command) and not no_launch, dry_run)
            return
        for note in run.notes:
            print(f"skipped: {note}")
        if not run.queues:
            print(f"batch {run.batch.name!r}: nothing to run")
            return
        launch = bool(ws.plan.agent_command) and not no_launch
        if dry_run:
            print("\n".join(runner.describe(ws, run, launch)))
        elif not launch:
            _start_without_agents(ws, run)
        else:
            _launch_agents(ws, run)


def _run_batch_json(ws: Workspace, run: BatchRun, launch: bool, dry_run: bool) -> None:
    """run-batch --json: the same steps, each told as one JSON line."""
    from paradev import runner
    from paradev.report import machine

    for note in run.notes:
        machine.emit_event("skipped", text=note)
    if not run.queues:
        machine.emit_event("batch", batch=run.batch.name, completed=0, not_completed=0)
    elif dry_run:
        for line in runner.describe(ws, run, launch):
            machine.emit_event("plan", text=line)
    elif not launch:
        for started in runner.start_only(ws, run, machine.JsonProgress()):
            machine.started_event(started)
    else:
        outcomes = runner.run_batch(ws, run, machine.JsonProgress())
        machine.outcome_events(run.batch.name, outcomes)
        _raise_if_failed(outcomes)


def _start_without_agents(ws: Workspace, run: BatchRun) -> None:
    from paradev import runner

    if not ws.plan.agent_command:
        print("no agents.command in plan.toml: starting the tasks for you to hand out")
    for started in runner.start_only(ws, run, runner.LineProgress()):
        print(f"agent {started.task.agent}: #{started.task.issue} {printable(started.task.title)}")
        print(f"  worktree: {started.worktree}")
        print(f"  branch:   {started.branch}")
        print(f"  prompt:   {started.prompt}")
        if started.queued:
            later = ", ".join(f"#{t.issue}" for t in started.queued)
            print(f"  then:     {later} (after 'paradev complete {started.task.agent}')")


def _launch_agents(ws: Workspace, run: BatchRun) -> None:
    from paradev import runner

    with runner.progress_display(sys.stdout.isatty()) as progress:
        outcomes = runner.run_batch(ws, run, progress)
    failed = [o for o in outcomes if o.status != "completed"]
    done = len(outcomes) - len(failed)
    print(f"batch {run.batch.name!r}: {done} completed, {len(failed)} not completed")
    _raise_if_failed(outcomes)


def _raise_if_failed(outcomes: list[Outcome]) -> None:
    from paradev.errors import Stopped

    failed = [o for o in outcomes if o.status != "completed"]
    if failed:
        issues = ", ".join(f"#{o.task.issue} ({o.status}: {o.detail})" for o in failed)
        raise Stopped(
            f"{len(failed)} task(s) not completed: {issues}; "
            "fix the cause and run 'paradev run-batch' again to restart them"
        )


@command(help={"json": "print JSON (stable keys) instead of the summary"})
def estimate(c: Context, json: bool = False) -> None:
    """Sequential vs parallel hours (critical path per batch), time saved and cost."""
    from paradev.estimate import estimate as estimate_plan
    from paradev.estimate import render

    plan = _workspace().plan
    result = estimate_plan(plan)
    if json:
        emit_json(result.to_json())
    else:
        print(render(result, plan))


@command(help={"folder": "where to build the sample project (default: ./demo-run, recreated)"})
def demo(c: Context, folder: str = "") -> None:
    """Run the whole flow on a generated sample project with a scripted agent."""
    from pathlib import Path

    from paradev.demo import run_demo

    run_demo(Path(folder) if folder else None)


# -- conflicts (issue 3) -----------------------------------------------------------------


@command(
    help={
        "json": "print JSON (stable keys) instead of the matrix",
        "uncommitted": "include each worktree's uncommitted and untracked (not ignored) work",
        "check": "exit 1 when any real conflict exists (for CI)",
        "remote": "fetch project.remote and use its remote-tracking agent branches",
        "watch": "re-check every --interval seconds and print only what changed (Ctrl-C ends)",
        "interval": "seconds between checks with --watch (default 5)",
        "format": "text (default), dot (Graphviz) or mermaid: the conflict graph",
    }
)
def conflicts(
    c: Context,
    json: bool = False,
    uncommitted: bool = False,
    check: bool = False,
    remote: bool = False,
    watch: bool = False,
    interval: str = "5",
    format: str = "text",
) -> None:
    """Pairwise and against-base conflicts from the branches' real contents."""
    from paradev.conflicts import Report, analyze, parse_interval, render
    from paradev.conflicts import watch as watch_loop
    from paradev.errors import PreconditionError, Stopped
    from paradev.report.graph import check_format, to_dot, to_mermaid
    from paradev.snapshots import record_scan

    shape = check_format(format)
    if shape != "text" and (json or watch):
        raise PreconditionError("--format draws one scan: use it without --json and --watch")
    seconds = parse_interval(interval) if watch else 0.0
    ws = _workspace()

    def scan() -> Report:
        found = analyze(ws, uncommitted=uncommitted, remote=remote)
        record_scan(ws, found)  # the report shows conflicts as they were, too
        return found

    if watch:
        watch_loop(scan, lambda text: print(text, flush=True), seconds, as_json=json)
        return
    report = scan()
    if shape != "text":
        print(to_dot(report) if shape == "dot" else to_mermaid(report))
    elif json:  # compact: thousands of pairs, printed every few seconds
        print(jsonlib.dumps(report.to_json(), separators=(",", ":")))
    else:
        print(render(report))
    if check and report.conflict_count:
        raise Stopped(f"{report.conflict_count} real conflict(s)")


@command(
    iterable=["path"],
    help={
        "path": "a path (file or directory) you are about to change; repeatable",
        "agent": "your own agent number, left out of the check",
        "json": "print JSON: every claim (path, agent, where) and the agents",
    },
)
def check(c: Context, path: list[str] | None = None, agent: str = "", json: bool = False) -> None:
    """Exit 1 naming the agents whose branch or worktree already changes PATH."""
    from paradev.conflicts import claims, repo_relative
    from paradev.errors import PreconditionError, Stopped
    from paradev.lifecycle import parse_int

    if not path:
        raise PreconditionError("name at least one path: paradev check PATH... [--agent N]")
    ws = _workspace()
    me = parse_int(agent, "--agent") if agent else None
    if me is not None:
        ws.check_agent(me)
    found = claims(ws, [repo_relative(ws, p) for p in path], exclude=me)
    if json:
        from paradev.report.machine import check_json

        emit_json(check_json(list(path), found))
    elif not found:
        print("no other agent changes " + ", ".join(path))
    else:
        for claim in found:
            shown = claim.path or "."
            print(f"{shown}: agent {claim.agent} ({ws.branch(claim.agent)}, {claim.where})")
    if found:
        agents = sorted({claim.agent for claim in found})
        raise Stopped("already changed by agent(s) " + ", ".join(map(str, agents)))


@command(help={"json": "print JSON (stable keys) instead of text"})
def merge_order(c: Context, json: bool = False) -> None:
    """The landing order that respects depends_on with the fewest conflicting rebases."""
    from paradev.order import compute_merge_order, render

    result = compute_merge_order(_workspace())
    if json:
        emit_json(result.to_json())
    else:
        print(render(result))


# -- report (issue 13) --------------------------------------------------------------------------


@command(
    help={
        "output": "where to write the HTML file (default: <git common dir>/paradev/report.html)",
        "open_": "open it in the default browser afterwards",
    }
)
def report(c: Context, output: str = "", open_: bool = False) -> None:
    """Write one self-contained HTML page: conflict heat map, timeline, merge train, estimate."""
    from pathlib import Path

    from paradev.report import write_report

    path = write_report(_workspace(), Path(output) if output else None)
    print(path)
    if open_:
        import webbrowser

        webbrowser.open(path.as_uri())


# Every @command above (and in later sections) becomes a task; no list to keep in sync.
ns = Collection.from_module(sys.modules[__name__], auto_dash_names=True)
