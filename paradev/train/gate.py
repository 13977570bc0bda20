"""Gate worktrees: paradev's own scratch checkouts where the merge queue gates candidates.

A candidate (base + several agents' rebased work) exists in no agent's
worktree, so each gate slot is a detached work tree of its own under
``<git common dir>/paradev/gates/slot-N``: kept between runs (what the
project's setup built there stays), checked out afresh for each candidate
(untracked files removed, ignored ones kept). Gates of one round run at
once, each in its own process group; Ctrl-C or a signal stops every group.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from paradev import git as gitmod
from paradev import processes
from paradev.atomic import write_json
from paradev.errors import GitError, ParadevError
from paradev.prepare import gate_number, prepare_worktree, with_port
from paradev.train.journal import Train
from paradev.workspace import Workspace


@dataclass(frozen=True)
class GateJob:
    """One gate run: the candidate commit, the agent it ends with, where its output goes."""

    commit: str
    agent: int
    log: Path


_ADDING = threading.Lock()


def slot_path(ws: Workspace, slot: int) -> Path:
    return ws.repo.common_dir / "paradev" / "gates" / f"slot-{slot}"


def ready_slot(ws: Workspace, slot: int, commit: str) -> Path:
    """Gate slot ``slot`` with ``commit`` checked out (created on first use), ready to gate."""
    path = slot_path(ws, slot)
    if not _checked_out(path, commit):
        _add_slot(ws, path, commit)
    prepare_slot(ws, path, slot)
    return path


def _add_slot(ws: Workspace, path: Path, commit: str, *, checkout: bool = True) -> None:
    # git reads every worktree's record while adding one: not side by side, nor while
    # another paradev process (a run opening a lane) adds or prunes one
    with _ADDING, gitmod.adding_worktrees(ws.repo.common_dir):
        if path.exists():  # a slot of ours that git no longer knows: rebuilt
            shutil.rmtree(path)
            gitmod.prune_worktrees(ws.git)
        path.parent.mkdir(parents=True, exist_ok=True)
        if checkout:
            gitmod.add_detached_worktree(ws.git, path, commit)
        else:  # its first gate checks its candidate out
            gitmod.add_unchecked_worktree(ws.git, path, commit)


_AHEAD: dict[Path, Callable[[], None]] = {}  # common dir -> wait for the slots added ahead


def add_slots_ahead(ws: Workspace, count: int, commit: str) -> None:
    """Add the missing ones of gate slots 1..``count`` (at ``commit``) in a thread of their
    own, while the train builds its first candidates: a slot's first use otherwise adds it
    (three git processes, one slot at a time) between a candidate and its gate.

    Only git's part, no file checked out yet: the first gate checks its candidate out, and
    ``[setup]`` makes the slot ready then, as always. A slot left half made (the train
    killed meanwhile) is made afresh at its first use.
    """
    missing = [s for s in range(1, count + 1) if not (slot_path(ws, s) / ".git").exists()]
    if not missing or ws.repo.common_dir in _AHEAD:
        return

    def add() -> None:
        with suppress(ParadevError, OSError):  # its first use makes it, or says why it cannot
            with gitmod.adding_worktrees(ws.repo.common_dir):
                gitmod.prune_worktrees(ws.git)  # a slot folder deleted by hand: its record
            for slot in missing:
                _add_slot(ws, slot_path(ws, slot), commit, checkout=False)

    _AHEAD[ws.repo.common_dir] = gitmod.in_background(add)


def _slots_added_ahead(ws: Workspace) -> None:
    """Wait for the slots being added ahead (``add_slots_ahead``), if any."""
    wait = _AHEAD.pop(ws.repo.common_dir, None)
    if wait is not None:
        wait()


def _checked_out(path: Path, commit: str) -> bool:
    """``commit`` checked out in the slot at ``path``; False when git cannot open it there
    (no slot yet, or one whose record git lost): it is made afresh."""
    if not (path / ".git").exists():
        return False
    try:
        gitmod.checkout_detached(path, commit)
    except GitError:
        if gitmod.worktree_link_ok(path):
            raise  # the slot is fine: the checkout itself failed
        return False
    return True


def prepare_slot(ws: Workspace, path: Path, slot: int) -> None:
    """Make the slot ready to work ([setup] copy/command), after every checkout.

    Its number (for PARADEV_PORT) comes after every agent's.
    """
    prepare_worktree(ws, path, gate_number(ws.plan, slot))


def run_gates(
    ws: Workspace,
    jobs: Sequence[GateJob],
    command: str | list[str],
    env_for: Callable[[GateJob, Path], dict[str, str]],
    cancelled: threading.Event | None = None,
) -> list[GateResult]:
    """Run the gate on every job at once, job i in slot i + 1; results in the order of ``jobs``.

    Each slot's checkout and gate (``train.run_gate``: its own process group,
    killed on its timeout) run in a thread of their own: sleeping gates
    overlap even on few cores. Once ``cancelled`` is set, a slot still being
    checked out starts no gate (its result: killed).
    """
    _slots_added_ahead(ws)
    if not all((slot_path(ws, slot) / ".git").exists() for slot in range(1, len(jobs) + 1)):
        with gitmod.adding_worktrees(ws.repo.common_dir):
            gitmod.prune_worktrees(ws.git)  # a slot folder deleted by hand: its record goes first

    def one(index: int) -> GateResult:
        job, record = jobs[index], gate_record(ws, index + 1)
        stop_leftover_gate(record)
        path = ready_slot(ws, index + 1, job.commit)  # slots check out side by side too
        if cancelled is not None and cancelled.is_set():
            return GateResult(None, job.log)
        env = with_port(env_for(job, path), ws.plan, gate_number(ws.plan, index + 1))
        return run_gate(command, path, ws.plan.gate_timeout, job.log, env, record)

    try:
        return gitmod.side_by_side(one, range(len(jobs)), threads=len(jobs))
    except BaseException:  # Ctrl-C, SIGTERM, SIGHUP: every gate group stops with paradev
        with processes.shielded():
            processes.stop_all(KILL_GRACE)
        raise


# -- one gate run (the serial train's, and each slot's) ----------------------------------


KILL_GRACE = 5.0


def _say_gate(train: Train) -> None:
    if not train.journal["gate"]:
        train.out("gate: skipped (--no-gate)")
    elif not _gate_command(train.ws):
        train.out("gate: none configured (gate.command is empty); landing without a gate")


def _gate_command(ws: Workspace) -> str | list[str]:
    command = ws.plan.gate_command
    if isinstance(command, str):
        return command if command.strip() else ""
    return command


@dataclass(frozen=True)
class GateResult:
    returncode: int | None  # None: killed on timeout
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def gate_log(train: Train, agent: int, attempt: int) -> Path:
    folder = train.ws.repo.common_dir / "paradev" / "logs"
    return folder / f"gate-{train.id}-agent-{agent}-{attempt}.log"


def gate_env(train: Train, agent: int, log: Path) -> dict[str, str]:
    env = gitmod.user_env()
    env.update(
        {
            "PARADEV_AGENT": str(agent),
            "PARADEV_BRANCH": train.branch(agent),
            "PARADEV_BASE": train.base,
            "PARADEV_WORKTREE": str(train.worktree(agent)),
            "PARADEV_GATE_LOG": str(log),
        }
    )
    return with_port(env, train.ws.plan, agent)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def failure_facts(
    train: Train, agent: int, candidate: str, code: int | None, log: Path, lines: int = 20
) -> str:
    """A failed gate for the agent it is handed back to: command, exit, log and its tail."""
    command = _gate_command(train.ws)
    shown = command if isinstance(command, str) else shlex.join(command)
    timeout = train.ws.plan.gate_timeout
    tail = _tail(log, lines).splitlines()
    return "\n".join(
        [
            f"agent {agent}: the gate failed on candidate {candidate[:12]} ({train.base} + "
            f"the work landing ahead of yours + your completed work on {train.branch(agent)})",
            f"  gate command: {shown}",
            f"  exit code: {code}" if code is not None else f"  timed out after {timeout:g}s",
            f"  log: {log}" + (f" (last {len(tail)} lines):" if tail else " (empty)"),
            *(f"      | {line}" for line in tail),
            f"  the candidate: {candidate} (`git diff HEAD {candidate}` shows what it adds "
            "to your branch)",
        ]
    )


def run_gate(
    command: str | list[str],
    cwd: Path,
    timeout: float,
    log: Path,
    env: dict[str, str],
    record: Path | None = None,
) -> GateResult:
    """Run the user's gate command with output streamed to ``log``; kill its group on timeout.

    ``record``: where a slot's gate notes its process while it runs (``gate_record``).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        try:
            proc = processes.spawn(
                command,
                shell=isinstance(command, str),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            handle.write(f"paradev: cannot run the gate: {exc}\n".encode())
            return GateResult(127, log)
        if record is not None:
            write_json(record, {"pid": proc.pid, "start": processes.start_time(proc.pid)})
        try:
            code = processes.wait(proc, timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            handle.write(f"\nparadev: gate killed after {timeout:g}s\n".encode())
            return GateResult(None, log)
        except BaseException:  # Ctrl-C, SIGTERM, SIGHUP: every group paradev started stops
            with processes.shielded():
                processes.stop_all(KILL_GRACE)
            raise
        finally:
            if record is not None:
                record.unlink(missing_ok=True)
        processes.release(proc)
        return GateResult(code, log)


def gate_record(ws: Workspace, slot: int) -> Path:
    """The note of the gate running in slot ``slot`` (beside the slot, outside its tree)."""
    return slot_path(ws, slot).with_name(f"slot-{slot}.gate.json")


class _Leftover:
    """A gate a killed train left running in its slot, known by its pid and start time."""

    def __init__(self, pid: int, started: int | None) -> None:
        self.pid, self.started = pid, started

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while processes.alive(self.pid, self.started):
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"gate {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        return 0


def stop_leftover_gate(record: Path) -> None:
    """Stop the gate a killed train left running in this slot, before the slot is reused.

    SIGKILL gives a train no chance to stop the gates it started; one still
    running would work in the tree the next candidate is checked out into.
    Never another process: the pid must still have the start time noted.
    """
    try:
        noted = json.loads(record.read_text(encoding="utf-8"))
        pid, started = int(noted["pid"]), noted.get("start")
    except (OSError, ValueError, TypeError, KeyError):
        return
    if started is not None and processes.alive(pid, int(started)):
        processes.stop([_Leftover(pid, int(started))], KILL_GRACE)
    record.unlink(missing_ok=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the gate's whole process group, SIGKILL what is left after the grace period."""
    processes.stop([proc], KILL_GRACE)
