"""Health checks (``doctor``) and a clean restart of the state (``reset``)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from paradev import plan as plan_mod
from paradev.errors import GitError, ParadevError, PlanError, PreconditionError, StateError
from paradev.git import Git, Repository, git_version, worktree_link_ok, worktree_list
from paradev.plan import Plan
from paradev.state import State, StateStore
from paradev.workspace import Workspace


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report."""

    ok: bool
    text: str
    blocking: bool = False  # every other command refuses to run until this is fixed
    repairable: bool = False  # ``doctor --repair`` fixes it (else the text says what will)


# The locks that mean a command is running right now, and who takes them
# (``runner.batch_lock`` and the train's ``driving``).
RUNNING_LOCKS = {"train.lock": "paradev merge", "run-batch.lock": "paradev run-batch"}


@dataclass(frozen=True)
class ResetResult:
    """What reset did: where the old state went, and what it held."""

    aside: Path | None  # a corrupt file, moved aside
    backup: Path | None  # a readable file, copied before it was cleared
    dropped: State | None


def reset(store: StateStore, *, yes: bool = False) -> ResetResult:
    """Clear the state, keeping the old file, once no train or batch is running.

    Holding their locks for the whole reset means no merge or run-batch can
    start and then write into records that are being cleared.
    """
    with ExitStack() as held:
        for name in _command_locks(store):
            command = RUNNING_LOCKS.get(name, f"the paradev command holding {name}")
            _hold_unless_running(held, store, name, command)
        with store.locked():
            try:
                dropped: State | None = store.read()
            except StateError:
                dropped = None
            if dropped is not None and _has_records(dropped) and not yes:
                raise PreconditionError(
                    f"the state holds {len(dropped.tasks)} task and {len(dropped.agents)} agent "
                    "record(s); re-run with --yes ('paradev reset --yes') to clear it; "
                    "the old file is kept as a backup"
                )
            aside, backup = store.reset()
    return ResetResult(aside, backup, dropped)


def shared_reset_note(repo: Repository, plan_path: Path) -> str | None:
    """What reset leaves alone with [agents] hosts: the remote's shared state (None: no hosts).

    Clearing every host's records is not one clone's call: reset clears this
    clone's cache only, and the next state change pulls the shared state back.
    """
    try:
        plan = plan_mod.load(plan_path, repo.main_root)
    except ParadevError:
        return None  # a broken plan must not stop a reset
    if not plan.hosts:
        return None
    from paradev.shared import STATE_REF

    return (
        f"only this clone's cache was cleared: the shared state {STATE_REF} on {plan.remote} "
        "(every host's records, a train's journal) is untouched and comes back with "
        "'paradev sync' or the next state change; reset never changes the remote"
    )


def _command_locks(store: StateStore) -> list[str]:
    """Every lock a running command may hold, the named commands' first (so a refusal names
    the command, not one of the per-agent locks it also holds), never the state's own."""
    present = {p.name for p in store.dir.glob("*.lock")} if store.dir.is_dir() else set()
    others = sorted(present - set(RUNNING_LOCKS) - {store.lock_path.name})
    return [*RUNNING_LOCKS, *others]


def _hold_unless_running(held: ExitStack, store: StateStore, name: str, command: str) -> None:
    """Take ``command``'s lock for the rest of ``held``; refuse, naming its pid, while it runs."""
    busy = f"{command} is running"
    try:
        held.enter_context(store.exclusive(name, wait=0, busy=busy))
    except StateError as exc:
        if not str(exc).startswith(busy):  # e.g. a folder where the lock file belongs
            raise
        pid = store.lock_owner(name)
        raise PreconditionError(
            f"'{command}' is running (pid {pid if pid else 'unknown'}); "
            "wait for it to finish or stop it, then run reset again"
        ) from None


def _has_records(state: State) -> bool:
    return bool(
        state.tasks or state.agents or state.train or state.merge_history or state.merge_order
    )


def doctor(repo: Repository, plan_path: Path, repair: bool) -> list[Finding]:
    """Check git, the plan, the state and the worktrees; with ``repair`` fix what is safe to fix."""
    version = ".".join(map(str, git_version()))
    findings = [Finding(True, f"git {version} (>= 2.38 required)")]
    findings += _check_state(StateStore(repo.common_dir), repair)
    findings += _check_stale_worktrees(repo.git, repair)
    try:
        plan = plan_mod.load(plan_path, repo.main_root)
    except PlanError as exc:
        findings.append(Finding(False, f"plan: {exc}"))
        return findings
    findings.append(Finding(True, f"plan {plan_path}: valid, {sum(1 for _ in plan.tasks())} tasks"))
    findings += _check_shared(repo, plan)
    findings += _check_agent_worktrees(repo, plan, repair)
    findings += _check_setup(repo, plan)
    findings += _check_agent_programs(repo, plan)
    findings += _check_flow(repo, plan, repair)
    return findings


def _check_agent_programs(repo: Repository, plan: Plan) -> list[Finding]:
    """Every program the plan launches is on PATH (with its version), every agent has one."""
    import os

    from paradev.presets import find_programs, missing_programs, program_version

    if not plan.launches_agents:
        return []
    agents = range(1, plan.agent_count + 1)
    commands = {a: c for a in agents if (c := plan.agent_command_for(a)) is not None}
    findings = []
    for program in find_programs(commands, repo.main_root, os.environ.get("PATH")):
        if program.path is None:
            text = missing_programs([program], []) or program.describe()
            findings.append(Finding(False, f"agent command {text}"))
        else:
            version = program_version(program)
            findings.append(
                Finding(True, f"agent command {program.describe()}: {program.path}, {version}")
            )
    unset = [a for a in agents if a not in commands]
    if unset:
        findings.append(Finding(False, f"agent commands: {missing_programs([], unset)}"))
    return findings


def _check_flow(repo: Repository, plan: Plan, repair: bool) -> list[Finding]:
    """Records, commits, agents and worktrees no task accounts for (``paradev.flowcheck``)."""
    from paradev.flowcheck import flow_checks
    from paradev.landed import LANDED_CACHE, LandedTasks

    store = StateStore(repo.common_dir)
    store.recognise = LandedTasks(repo.git, plan, store.dir / LANDED_CACHE)
    try:
        checks = flow_checks(Workspace(repo=repo, plan=plan, store=store), repair)
    except StateError:  # a corrupt state: reported above
        return []
    except ParadevError as exc:  # e.g. a symlinked agent folder
        return [Finding(False, f"tasks: cannot check: {exc}")]
    return [Finding(check.ok, check.text) for check in checks]


def _check_state(store: StateStore, repair: bool) -> list[Finding]:
    try:
        state = store.read()
    except StateError as exc:
        if not repair:
            return [Finding(False, str(exc), blocking=True)]
        aside = store.quarantine_if_corrupt()
        return [Finding(True, f"state: corrupt file moved aside to {aside}; starting empty")]
    found = [Finding(True, f"state {store.path}: readable, {len(state.tasks)} task records")]
    if state.train:
        found.append(
            Finding(True, "a merge train is in progress: 'paradev merge --continue' or '--abort'")
        )
    return found


def _check_shared(repo: Repository, plan: Plan) -> list[Finding]:
    """With [agents] hosts: this clone's cache against the remote's shared state (one ls-remote).

    Doctor only reads the remote: ``--repair`` never changes a ref there.
    """
    from paradev.git import remote_ref
    from paradev.shared import STATE_REF, TRACKING_REF

    if not plan.hosts:
        return []
    where = f"shared state {STATE_REF} on {plan.remote}"
    cached = repo.git.rev(TRACKING_REF)
    try:
        remote = remote_ref(repo.git, plan.remote, STATE_REF)
    except GitError as exc:
        return [Finding(False, f"{where}: cannot be read ({exc}); commands use this clone's cache")]
    if remote is None:
        return [Finding(True, f"{where}: none yet (the first state change creates it)")]
    if remote != cached:
        return [
            Finding(
                False,
                f"{where} is at {remote[:12]}, this clone's cache at "
                f"{cached[:12] if cached else 'nothing'}: run 'paradev sync' "
                "(doctor never changes the remote)",
            )
        ]
    return [Finding(True, f"{where}: {remote[:12]}, this clone's cache is up to date")]


def _check_stale_worktrees(git: Git, repair: bool) -> list[Finding]:
    stale = [r.path for r in worktree_list(git) if r.prunable]
    if not stale:
        return [Finding(True, "worktree records: none stale")]
    if repair:
        git.run("worktree", "prune")
        return [Finding(True, f"worktree records: pruned {len(stale)} stale: {', '.join(stale)}")]
    return [
        Finding(
            False,
            f"stale worktree record for {path} (run 'paradev doctor --repair')",
            repairable=True,
        )
        for path in stale
    ]


def _check_agent_worktrees(repo: Repository, plan: Plan, repair: bool) -> list[Finding]:
    ws = Workspace(repo=repo, plan=plan, store=StateStore(repo.common_dir))
    linked: list[Finding] = []
    missing: list[int] = []
    for agent in range(1, plan.agent_count + 1):
        try:
            usable = _usable(ws.worktree(agent))
        except PreconditionError as exc:  # a symlinked agent folder: a person must remove it
            linked.append(Finding(False, str(exc)))
            continue
        if not usable:
            missing.append(agent)
    if linked:
        return linked
    if not missing:
        return [Finding(True, f"worktrees: all {plan.agent_count} agents present")]
    if repair:
        from paradev.worktrees import setup

        try:
            setup(ws)
        except ParadevError as exc:  # e.g. a folder in the way: a person must decide
            return [Finding(False, f"worktrees: cannot repair: {exc}")]
        return [Finding(True, f"worktrees: repaired agents {', '.join(map(str, missing))}")]
    return [_missing_worktree(ws, a) for a in missing]


def _check_setup(repo: Repository, plan: Plan) -> list[Finding]:
    """Agent worktrees whose [setup] copies or command are behind (``paradev setup`` fixes it)."""
    from paradev.prepare import setup_outdated

    setup = plan.section("setup")
    if not setup["copy"] and not setup["command"]:
        return []
    ws = Workspace(repo=repo, plan=plan, store=StateStore(repo.common_dir))
    found = []
    for agent in range(1, plan.agent_count + 1):
        path = ws.plan.worktree(agent, repo.main_root)
        try:
            usable = _usable(path) and not path.is_symlink()  # a link is reported above
            why = setup_outdated(ws, path, agent) if usable else None
        except ParadevError as exc:  # a folder among the inputs, a port past the last one
            why = str(exc)
        if why:
            found.append(
                Finding(False, f"agent {agent}: setup out of date ({why}); run 'paradev setup'")
            )
    return found or [Finding(True, "setup: every agent worktree up to date")]


def _usable(worktree: Path) -> bool:
    return (worktree / ".git").exists() and worktree_link_ok(worktree)


def _missing_worktree(ws: Workspace, agent: int) -> Finding:
    """Missing or broken (setup recreates or repairs it), or a folder in its place (it refuses)."""
    path = ws.worktree(agent)
    if (path / ".git").exists():
        return Finding(
            False,
            f"agent {agent}: the .git link of {path} is broken (run 'paradev doctor --repair')",
            repairable=True,
        )
    if path.exists():
        return Finding(
            False,
            f"agent {agent}: {path} exists but is not a git worktree "
            "(move it away, then run 'paradev setup')",
        )
    return Finding(
        False, f"agent {agent}: no worktree at {path} (run 'paradev setup')", repairable=True
    )
