"""What each command does: glue between parsed arguments and the core modules.

Each function takes its command's arguments already converted (see the table
in ``paradev.commands``), calls the core, and prints the result. Core modules
are imported inside each function, so a command loads only what it needs;
this module itself imports nothing heavy.
"""

from __future__ import annotations

import sys

from paradev.errors import PreconditionError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path
    from typing import Any

    from paradev.claims import Claim
    from paradev.conflicts import Report
    from paradev.hooks import HookResult
    from paradev.runner import BatchRun, Outcome
    from paradev.workspace import Workspace

# -- output helpers -------------------------------------------------------------------------


def emit_json(data: Any) -> None:
    import json  # at first use: it loads re and enum (~13 ms), which a check may not need

    print(json.dumps(data, indent=2))


def warn(message: str) -> None:
    print(f"paradev: warning: {message}", file=sys.stderr)


def report_hook(result: HookResult | None) -> None:
    """A failing hook is a warning, never an error."""
    if result is not None and not result.ok:
        warn(result.describe())


def _workspace() -> Workspace:
    """The workspace, its state checked up front: a corrupt state stops every command but
    reset and doctor.

    The check skips looking on base for landed tasks (a git process): a command
    that needs the tasks' state reads it again itself.
    """
    from paradev.workspace import open_workspace

    ws = open_workspace()
    ws.store.view(recognise=False)
    return ws


# -- plan ------------------------------------------------------------------------------------


def assign(agent: int, issue: int, title: str, hours: float, batch: str | None) -> None:
    from paradev.lifecycle import assign as assign_task

    task = assign_task(_workspace(), agent, issue, title, hours, batch)
    print(f"assigned #{task.issue} to agent {task.agent} in batch {task.batch!r}")


def estimate(json: bool) -> None:
    from paradev.estimate import actuals, render, render_actuals
    from paradev.estimate import estimate as estimate_plan

    ws = _workspace()
    plan = ws.plan
    result = estimate_plan(plan)
    actual = actuals(plan, ws.store.read(), result.cost)
    if json:
        rows = [row.to_json() for row in actual]
        emit_json({**result.to_json(), "actual": {"batches": rows[:-1], "total": rows[-1]}})
    else:
        print(render(result, plan))
        print()
        print(render_actuals(actual, result.cost.currency))


# -- agents ----------------------------------------------------------------------------------


def setup(agents: int | None, host: str | None = None) -> None:
    from paradev.prepare import check_copy_sources, prepare_agents
    from paradev.worktrees import setup as set_up

    ws = _workspace()
    if host is not None:
        from paradev.hosts import remember_host

        remember_host(ws.git, ws.plan, host)
        agents_here = ", ".join(map(str, ws.plan.hosts[host])) or "none"
        print(f"this clone is host {host}: agents {agents_here}")
        ws = _workspace()  # its state store names the host
    check_copy_sources(ws)  # a missing .env is refused before any worktree is made
    steps = set_up(ws, agents)
    for step in steps:
        print(step.describe())
    prepare_agents(ws, [step.agent for step in steps], print)


def start(agent: int) -> None:
    from paradev.hooks import run_hook
    from paradev.lifecycle import start as start_task
    from paradev.text import printable

    ws = _workspace()
    _prepare(ws, agent)
    task, record = start_task(ws, agent)
    title = printable(task.title)
    print(f"agent {task.agent} started #{task.issue} {title} (base {record.base_commit})")
    report_hook(run_hook(ws, "on_start", task, record))


def _prepare(ws: Workspace, agent: int) -> None:
    """Bring the agent's worktree up to date with [setup] before work starts in it."""
    from paradev.prepare import as_agent, prepare_worktree

    ws.check_agent(agent)
    ws.agent_git(agent)  # no worktree: the usual 'run paradev setup'
    prepare_worktree(ws, ws.worktree(agent), agent, notify=as_agent(agent, print))


def complete(agent: int, empty: bool) -> None:
    from paradev.hooks import run_hook
    from paradev.lifecycle import complete as complete_task

    ws = _workspace()
    done = complete_task(ws, agent, empty=empty)
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


def reopen(issue: int) -> None:
    from paradev.lifecycle import reopen as reopen_task
    from paradev.text import printable

    task, _ = reopen_task(_workspace(), issue)
    print(f"agent {task.agent} is working on #{task.issue} {printable(task.title)} again")


def drop(issue: int) -> None:
    from paradev.lifecycle import drop as drop_task

    done = drop_task(_workspace(), issue)
    print(f"dropped #{done.task_issue} (agent {done.agent})")
    if done.backup:
        where = "still on the branch" if done.held else "taken off the branch"
        print(f"  {done.commits} commit(s) kept at {done.backup}; {where}")
    if done.held:
        warn(f"they come off before agent {done.agent}'s next task: {done.held}")


def status(json: bool) -> None:
    from paradev.context import files_before_reading, keep_context, start_statuses

    before = files_before_reading()
    early = start_statuses()  # every work tree's git status runs while the modules load
    from paradev.lifecycle import render_status
    from paradev.lifecycle import status as status_report
    from paradev.workspace import open_workspace

    # No up-front read of the state (``_workspace``): status reads it anyway, after starting
    # every work tree's ``git status``, and a corrupt one stops it with the same error.
    ws = open_workspace()
    report = status_report(ws, early)
    if before is not None:
        keep_context(ws, before)
    run = _running_plan(ws)
    if json:
        emit_json({**report, "run": run} if run else report)
    else:
        print(render_status(report, run_alive=run is not None))
        if run:
            from paradev.runstatus import render

            print(render(run))


def _running_plan(ws: Workspace) -> dict[str, Any] | None:
    """What a live ``paradev run`` waits for (its snapshot); None when none runs."""
    from paradev.runstatus import read

    return read(ws.store.dir)


def run_batch(
    batch: str | None, no_launch: bool, dry_run: bool, agents: str | None, json: bool
) -> None:
    from paradev import runner

    ws = _workspace()
    with runner.batch_lock(ws):
        run = runner.prepare(ws, batch or None, runner.parse_agents(agents or "", ws))
        launch = ws.plan.launches_agents and not no_launch
        if launch:
            runner.require_programs(ws, run)
        if json:
            _run_batch_json(ws, run, launch, dry_run)
            return
        for note in run.notes:
            print(f"skipped: {note}")
        if not run.queues:
            print(f"batch {run.batch.name!r}: nothing to run")
            return
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
    from paradev.text import printable

    if not ws.plan.launches_agents:
        print("no agents.command or agents.preset in plan.toml: starting the tasks to hand out")
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


def run(json: bool, detach: bool) -> None:
    """``paradev run``: the whole plan; exit 1 unless every task landed or was dropped."""
    from paradev import runloop, runner

    ws = _workspace()
    if detach:
        _detach_run(ws, json)
        return
    if json:
        from paradev.report import machine

        def emit(kind: str, text: str, quiet: bool = False, **fields: Any) -> None:
            machine.emit_event(kind, text=text, **fields)

        summary = runloop.run_plan(ws, machine.JsonProgress(rows=False), emit)
        machine.emit_event(
            "summary",
            landed=summary.landed,
            statuses={str(i): s for i, s in summary.statuses.items()},
            notes={str(i): n for i, n in summary.notes.items()},
        )
    else:
        with runner.progress_display(sys.stdout.isatty()) as progress:

            def say(kind: str, text: str, quiet: bool = False, **fields: Any) -> None:
                if not quiet:
                    progress.event(text)

            summary = runloop.run_plan(ws, progress, say)
        print("\n".join(runloop.summary_lines(summary)))
    runloop.raise_unless_landed(summary)


def _detach_run(ws: Workspace, json: bool) -> None:
    """Check what would stop the run at once here, then start it in the background."""
    from paradev import background, runloop

    runloop.refuse_unrunnable(ws)
    pid = background.start(ws, ["run", "--json"] if json else ["run"])
    if json:  # the one event of this process; the run's own go to its log
        from paradev.report.machine import emit_event

        log = ws.store.dir / background.RUN_LOG
        emit_event("detached", pid=pid, log=str(log), follow="paradev logs --follow")
        return
    print(
        f"paradev run started in the background (pid {pid}); follow it with "
        "'paradev logs --follow', wait for it with 'paradev wait'"
    )


# -- conflicts -------------------------------------------------------------------------------


def conflicts(
    json: bool,
    all_pairs: bool,
    uncommitted: bool,
    check: bool,
    remote: bool,
    watch: bool,
    interval: float | None,
    format: str | None,
) -> None:
    from paradev.conflicts import analyze, render
    from paradev.conflicts import watch as watch_loop
    from paradev.errors import Stopped
    from paradev.snapshots import record_scan

    shape = format or "text"
    if shape != "text" and (json or watch):
        raise PreconditionError("--format draws one scan: use it without --json and --watch")
    ws = _workspace()

    def scan() -> Report:
        if not remote:  # --remote fetches anyway
            from paradev.hosts import fetch_pushed

            fetch_pushed(ws.plan, ws.git)
        found = analyze(ws, uncommitted=uncommitted, remote=remote)
        record_scan(ws, found)  # the report shows conflicts as they were, too
        return found

    if watch:
        watch_loop(
            scan,
            lambda text: print(text, flush=True),
            5.0 if interval is None else interval,
            as_json=json,
            all_pairs=all_pairs,
        )
        return
    report = scan()
    if shape != "text":
        from paradev.report.graph import to_dot, to_mermaid

        print(to_dot(report) if shape == "dot" else to_mermaid(report))
    elif json:  # compact: hundreds of pairs, printed every few seconds
        import json as jsonlib

        print(jsonlib.dumps(report.to_json(all_pairs=all_pairs), separators=(",", ":")))
    else:
        print(render(report))
    if check and report.conflict_count:
        raise Stopped(f"{report.conflict_count} real conflict(s)")


def check(path: list[str], agent: int | None, json: bool) -> None:
    from paradev.claims import claims, repo_relative
    from paradev.context import files_before_reading

    if not path:
        raise PreconditionError("name at least one path: paradev check PATH... [--agent N]")
    before = files_before_reading()  # the context is kept only if they stay the same
    ws = _workspace()
    if agent is not None:
        ws.check_agent(agent)
    toplevel = str(ws.repo.toplevel)
    found = claims(ws, [repo_relative(toplevel, p) for p in path], agent, before)
    _report_claims(path, found, ws.branch, json)


def check_kept(path: list[str], agent: int | None, json: bool) -> bool:
    """``check`` answered from kept answers alone (``paradev.claims.kept_claims``), when it can."""
    from paradev.claims import kept_claims

    kept = kept_claims(path, agent)
    if kept is None:
        return False
    found, branches = kept
    _report_claims(path, found, lambda agent: branches[agent - 1], json)
    return True


def _report_claims(
    path: Sequence[str], found: list[Claim], branch: Callable[[int], str], json: bool
) -> None:
    """Print ``check``'s answer; exit 1 (Stopped) when another agent changes a path."""
    from paradev.claims import check_json
    from paradev.errors import Stopped

    if json:
        emit_json(check_json(list(path), found))
    elif not found:
        print("no other agent changes " + ", ".join(path))
    else:
        for claim in found:
            shown = claim.path or "."
            print(f"{shown}: agent {claim.agent} ({branch(claim.agent)}, {claim.where})")
    if found:
        agents = sorted({claim.agent for claim in found})
        raise Stopped("already changed by agent(s) " + ", ".join(map(str, agents)))


# -- landing ---------------------------------------------------------------------------------


def merge_order(json: bool) -> None:
    from paradev.order import compute_merge_order, render

    result = compute_merge_order(_workspace())
    if json:
        emit_json(result.to_json())
    else:
        print(render(result))


def merge(
    dry_run: bool,
    continue_: bool,
    abort: bool,
    skip: bool,
    push: bool,
    no_push: bool,
    no_gate: bool,
    json: bool,
    follow: bool = False,
) -> None:
    from paradev import train
    from paradev.errors import ParadevError
    from paradev.text import printable_lines

    if sum((dry_run, continue_, abort, skip)) > 1:
        raise PreconditionError("use only one of --dry-run, --continue, --abort, --skip")
    if push and no_push:
        raise PreconditionError("use --push or --no-push, not both")
    pushing = True if push else (False if no_push else None)
    ws = _workspace()
    say = _to_stderr if json else print

    def out(text: str) -> None:  # train messages quote agents' commit subjects and file names
        say(printable_lines(text))

    if dry_run:
        _dry_run(ws, out, json, push=pushing, gate=not no_gate)
        return
    history = len(ws.store.view(recognise=False).merge_history)
    options = train.Options(
        push=pushing, gate=not no_gate, hand_back=_hand_back_conflict, follow=follow
    )
    try:
        if abort:
            train.abort(ws, out)
        elif continue_:
            train.resume(ws, out, options)
        elif skip:
            train.skip(ws, out, options)
        else:
            train.merge(ws, out, options)
    except ParadevError as err:
        if json and err.exit_code == 1:  # stopped: say where, then exit 1
            _emit_merge_json(ws, history)
        raise
    except KeyboardInterrupt:
        _say_how_to_resume(ws)
        raise
    if json:
        _emit_merge_json(ws, history)


def _hand_back_conflict(ws: Workspace, agent: int, report: str, **options: Any) -> bool:
    """The runner's hand-back, imported only when a train hands work back (~50 ms of imports
    a train without a conflict would wait for)."""
    from paradev.runner import hand_back_conflict

    return hand_back_conflict(ws, agent, report, **options)


def _say_how_to_resume(ws: Workspace) -> None:
    """A train a signal cut short is journaled: say the one command that finishes it."""
    if ws.store.read().train is not None:
        print(
            "paradev: the merge train was interrupted; run paradev merge --continue to resume it "
            "(or paradev merge --abort to end it)",
            file=sys.stderr,
        )


def _dry_run(
    ws: Workspace, out: Callable[[str], None], json: bool, push: bool | None, gate: bool
) -> None:
    """``merge --dry-run``: the steps shown (as JSON too), then the train's own exit."""
    from paradev.train.dryrun import dry_run, to_json

    result = dry_run(ws, out, push=push, gate=gate)
    if json:
        emit_json(to_json(ws, result))
    if result.error is not None:
        raise result.error


def _emit_merge_json(ws: Workspace, history: int) -> None:
    from paradev.report.machine import merge_json

    emit_json(merge_json(ws, history))


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cleanup(force: bool, delete_branches: bool, backups: bool, older: float | None) -> None:
    from paradev.errors import Stopped

    if older is not None and not backups:
        raise PreconditionError("--older prunes backups: use it with --backups")
    if backups:
        if force or delete_branches:
            raise PreconditionError(
                "--backups only lists and prunes: drop --force/--delete-branches"
            )
        _cleanup_backups(older)
        return
    from paradev.cleanup import cleanup as clean_up

    report = clean_up(_workspace(), force=force, delete_branches=delete_branches)
    for line in report.lines():
        print(line)
    if report.refused:
        raise Stopped(
            f"{len(report.refused)} worktree(s) kept; see above, or use --force "
            "(unmerged and uncommitted work is kept under refs/paradev/backup/ first)"
        )


def _cleanup_backups(older: float | None) -> None:
    """``cleanup --backups [--older DAYS]``: list the backups, or prune the old ones."""
    from paradev import backups as backups_mod
    from paradev.git import discover
    from paradev.state import StateStore

    repo = discover()
    store = StateStore(repo.common_dir)
    if older is None:
        found = backups_mod.list_backups(repo.git, store)
        for backup in found:
            print(backup.line())
        print(f"{len(found)} backup(s)" + (" (prune with --older DAYS)" if found else ""))
        return
    removed, kept = backups_mod.prune_backups(repo.git, store, older)
    for backup in removed:
        print(f"removed {backup.line()}")
    for backup in kept:
        print(f"kept (a merge train in progress needs it) {backup.line()}")
    print(f"removed {len(removed)} backup(s) older than {older:g} day(s)")


def report(output: str | None, open_: bool) -> None:
    from pathlib import Path

    from paradev.report import write_report

    path = write_report(_workspace(), Path(output) if output else None)
    print(path)
    if open_:
        import webbrowser

        if not webbrowser.open(path.as_uri()):
            warn(f"no web browser found to open the report; open {path.as_uri()} in one")


# -- maintenance -----------------------------------------------------------------------------


def init(agents: int | None, invoke: bool, ci: str | None) -> None:
    from paradev import plan as plan_mod
    from paradev.git import discover
    from paradev.init import init as run_init

    repo = discover()
    for line in run_init(repo.main_root, plan_mod.find_plan(repo.main_root), agents, invoke, ci):
        print(line)


def doctor(repair: bool) -> None:
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
        repairable = not repair and any(f.repairable for f in bad)  # never a useless hint
        raise Stopped(
            f"{len(bad)} problem(s) found"
            + ("; try 'paradev doctor --repair'" if repairable else "")
        )


def reset(yes: bool) -> None:
    from paradev import plan as plan_mod
    from paradev.doctor import reset as reset_state
    from paradev.doctor import shared_reset_note
    from paradev.git import discover
    from paradev.state import StateStore

    repo = discover()
    store = StateStore(repo.common_dir)
    done = reset_state(store, yes=yes)
    if done.aside:
        print(f"moved the corrupt state file aside to {done.aside}")
    if done.backup:
        print(f"kept the old state as {done.backup}")
    note = shared_reset_note(repo, plan_mod.find_plan(repo.main_root))
    if done.dropped and done.dropped.train and note is None:
        warn("a merge train was in progress; its journal is gone (git state is untouched)")
    print(f"state cleared: {store.path}")
    if note is not None:
        print(note)


def demo(folder: str | None) -> None:
    from pathlib import Path

    from paradev.demo import run_demo

    run_demo(Path(folder) if folder else None)


def completion(shell: str) -> None:
    from paradev.commands import COMMANDS
    from paradev.completion import script

    print(script(shell, COMMANDS), end="")


# -- the detached run ---------------------------------------------------------------------------


def _state_folder() -> Path:
    """``<git common dir>/paradev``, found without the plan: a broken plan must not hide the
    log of the run that reports it."""
    from paradev.git import discover
    from paradev.state import StateStore

    return StateStore(discover().common_dir).dir


def wait() -> None:
    from paradev import background

    code = background.wait(_state_folder())
    if code:
        raise background.ended(code)
    print("the detached run ended with exit 0")


def logs(agent: int | None, follow: bool) -> None:
    from paradev import background

    if agent is None:
        path, running = background.run_log(_state_folder())
    else:
        path, running = background.agent_log(_workspace(), agent)
    sys.stdout.flush()
    background.show(path, running if follow else None, sys.stdout.buffer)


def sync() -> None:
    from paradev.shared import sync as sync_state
    from paradev.tasklease import look

    ws = _workspace()
    print(sync_state(ws.store))
    if ws.plan.hosts:  # how long other hosts' task leases stood still, on this host's clock
        look(ws, ws.store.read())
