"""Which machine (host) this clone is, and which of the plan's agents it runs.

``[agents] hosts = { laptop = [1, 2], box = [3, 4] }`` splits one plan over
machines that share only the git remote. A clone knows its host from
``paradev setup --host NAME`` (kept in the clone's own git config,
``paradev.host``), ``PARADEV_HOST`` overriding it, or else the machine's
short host name. Without ``hosts`` every agent runs here, as before.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from paradev.errors import GitError, PreconditionError
from paradev.git import Git, clone_config, fetch, push, set_clone_config
from paradev.plan import HOST_NAME, Plan

HOST_CONFIG = "paradev.host"
HOST_ENV = "PARADEV_HOST"


def this_host(git: Git) -> str:
    """This clone's host name: PARADEV_HOST, else ``setup --host``, else the machine's name."""
    import socket  # here: check and status, which never ask without hosts, skip its import

    return (
        os.environ.get(HOST_ENV, "").strip()
        or clone_config(git, HOST_CONFIG)
        or socket.gethostname().split(".")[0]
    )


def host_source(git: Git) -> str:
    """Where ``this_host`` found the name, for messages that must say how to change it."""
    if os.environ.get(HOST_ENV, "").strip():
        return f"from {HOST_ENV}"
    if clone_config(git, HOST_CONFIG):
        return "from 'paradev setup --host'"
    return "the machine's host name"


def remember_host(git: Git, plan: Plan, name: str) -> None:
    """``setup --host NAME``: this clone is host ``name`` from now on (refused if not planned)."""
    if not re.fullmatch(HOST_NAME, name):
        raise PreconditionError(f"--host {name!r}: a host name is letters, digits, '.', '_' or '-'")
    if not plan.hosts:
        raise PreconditionError(
            f"--host {name}: the plan has no [agents] hosts; add e.g. "
            f"hosts = {{ {name} = [1, 2] }} under [agents] in {plan.path.name}"
        )
    _require_planned(plan, name, lambda: f"--host {name}")
    set_clone_config(git, HOST_CONFIG, name)


def agents_here(plan: Plan, git: Git) -> tuple[int, ...] | None:
    """The agents this clone's host runs; None when the plan has no hosts (all run here)."""
    if not plan.hosts:
        return None
    name = this_host(git)
    _require_planned(plan, name, lambda: f"this clone is host {name!r} ({host_source(git)})")
    return plan.hosts[name]


def restrict_to_host(plan: Plan, git: Git, agents: list[int] | None) -> list[int] | None:
    """``agents`` (None: all) cut to this host's; an agent of another host asked for is refused."""
    mine = agents_here(plan, git)
    if mine is None:
        return agents
    if agents is None:
        return sorted(mine)
    elsewhere = [a for a in agents if a not in mine]
    if elsewhere:
        named = ", ".join(f"{a} ({host_of(plan, a) or 'no host'})" for a in elsewhere)
        raise PreconditionError(
            f"agents {named} do not run on host {this_host(git)}, which runs "
            f"{', '.join(map(str, mine)) or 'no agent'} ([agents] hosts); run them on their host"
        )
    return agents


def owners(plan: Plan) -> dict[int, str]:
    """Every agent a host runs -> that host (``[agents] hosts``; empty without hosts)."""
    return {agent: host for host, agents in plan.hosts.items() for agent in agents}


def host_of(plan: Plan, agent: int) -> str | None:
    """The host running ``agent``; None without hosts or when no host lists it."""
    return owners(plan).get(agent)


def elsewhere(plan: Plan, git: Git) -> dict[int, str]:
    """The agents other hosts run -> their host: their branches are read from the remote."""
    if not plan.hosts:
        return {}
    here = this_host(git)
    return {agent: host for agent, host in owners(plan).items() if host != here}


def fetch_pushed(plan: Plan, git: Git) -> None:
    """With hosts, fetch the remote: other hosts' agents are scanned as they last pushed."""
    if plan.hosts:
        fetch(git, plan.remote)


def _require_planned(plan: Plan, name: str, who: Callable[[], str]) -> None:
    """Refuse a host the plan does not list; ``who`` (a git call) is asked only then."""
    if name not in plan.hosts:
        raise PreconditionError(
            f"{who()}, which [agents] hosts does not list ({', '.join(plan.hosts)}); "
            f"run 'paradev setup --host NAME' with one of them, or set {HOST_ENV}"
        )


def publish_branch(git: Git, remote: str, branch: str, head: str, refused: str = "") -> None:
    """Push an agent's completed work before it is recorded: another host may land it.

    The lease is what this clone last saw of the remote branch (none: it must
    not exist there yet), so work pushed by another clone is never overwritten.
    ``refused``: what a refusal leaves and how to go on (else: a task's completion).
    """
    known = git.rev(f"refs/remotes/{remote}/{branch}")
    try:
        push(git, remote, head, branch, lease=known or "")
    except GitError as err:
        how = refused or (
            f"the task stays in progress: fetch {remote} and check who else pushed "
            f"{branch}, then complete it again"
        )
        raise GitError(f"{err}; {how}") from None


def refuse_unshared_branch(plan: Plan, branch: str, refusal: str) -> None:
    """With hosts, the remote refusing a rewritten agent branch stops the train (exit 2).

    The agent's host goes on from the branch as pushed: left at its old
    commits, its next completion (or task) would build on work already landed.
    """
    if plan.hosts:
        raise PreconditionError(
            f"{refusal}; with [agents] hosts every host needs the rewritten {branch}: let "
            f"{plan.remote} take forced pushes of agent branches (refusing non-fast-forwards "
            f"of {plan.base} alone, e.g. in a pre-receive hook), then run paradev merge --continue"
        )
