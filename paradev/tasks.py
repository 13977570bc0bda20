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
from invoke.tasks import Task, task

from paradev.errors import EXIT_INTERRUPTED, ParadevError

if TYPE_CHECKING:
    from paradev.hooks import HookResult
    from paradev.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])


def boundary(func: F) -> F:
    """The one error boundary: a ParadevError becomes one line on stderr and its exit code."""

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ParadevError as err:
            raise Exit(f"paradev: {err}", code=err.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("paradev: interrupted", code=EXIT_INTERRUPTED) from None

    return guarded  # type: ignore[return-value]


def command(**options: Any) -> Callable[[Callable[..., Any]], Task[Any]]:
    """``@task`` with stable long flags only, wrapped in the error boundary."""

    def decorate(func: Callable[..., Any]) -> Task[Any]:
        made: Task[Any] = task(auto_shortflags=False, **options)(boundary(func))
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

    return open_workspace()


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
def assign(c: Context, agent: str, issue: str, title: str, hours: str, batch: str = "") -> None:
    """Add a task to plan.toml (comments and layout kept) and mark it assigned."""
    from paradev.lifecycle import assign as assign_task
    from paradev.lifecycle import parse_hours, parse_int

    task_ = assign_task(
        _workspace(),
        parse_int(agent, "AGENT"),
        parse_int(issue, "ISSUE"),
        title,
        parse_hours(hours),
        batch or None,
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
    print(f"agent {task_.agent} started #{task_.issue} {task_.title} (base {record.base_commit})")
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


@command()
def reset(c: Context) -> None:
    """Clear the shared state (a corrupt file is moved aside, never overwritten)."""
    from paradev.doctor import reset as reset_state
    from paradev.git import discover
    from paradev.state import StateStore

    store = StateStore(discover().common_dir)
    aside, dropped = reset_state(store)
    if aside:
        print(f"moved the corrupt state file aside to {aside}")
    if dropped and dropped.train:
        warn("a merge train was in progress; its journal is gone (git state is untouched)")
    print(f"state cleared: {store.path}")


@command(
    help={
        "repair": "fix what is safe: prune stale worktree records, "
        "move a corrupt state aside, recreate missing worktrees"
    }
)
def doctor(c: Context, repair: bool = False) -> None:
    """Check git, the plan, the state and the worktrees (exit 1 when something is wrong)."""
    from paradev import plan as plan_mod
    from paradev.doctor import doctor as run_doctor
    from paradev.errors import Stopped
    from paradev.git import discover

    repo = discover()
    findings = run_doctor(repo, plan_mod.find_plan(repo.main_root), repair)
    for finding in findings:
        print(f"{'ok ' if finding.ok else 'BAD'}  {finding.text}")
    bad = [f for f in findings if not f.ok]
    if bad:
        raise Stopped(
            f"{len(bad)} problem(s) found" + ("" if repair else "; try 'paradev doctor --repair'")
        )


# Every @command above (and in later sections) becomes a task; no list to keep in sync.
ns = Collection.from_module(sys.modules[__name__], auto_dash_names=True)
