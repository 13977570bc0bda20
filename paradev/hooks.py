"""Hooks (``[hooks]`` in plan.toml) and the task environment shared with agent commands.

Task data reaches hooks and agents only through environment variables, never
through a command line, so a title such as ``$(rm -rf ~)`` stays inert text.
A failing hook is reported to the caller, never raised: hooks are side
effects (comment on the tracker, notify a chat) and must not stop a batch.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from paradev import processes
from paradev.git import user_env
from paradev.plan import Task
from paradev.state import TaskRecord
from paradev.workspace import Workspace

HOOK_TIMEOUT = 300.0
EVENTS = ("on_start", "on_complete", "on_merge")


def task_env(
    ws: Workspace, task: Task, record: TaskRecord | None = None, **extra: str
) -> dict[str, str]:
    """The PARADEV_* variables describing ``task`` (plus ``extra``, upper-cased)."""
    env = {
        "PARADEV_AGENT": str(task.agent),
        "PARADEV_ISSUE": str(task.issue),
        "PARADEV_TITLE": task.title,
        "PARADEV_HOURS": f"{task.hours:g}",
        "PARADEV_BATCH": task.batch,
        "PARADEV_BRANCH": ws.branch(task.agent),
        "PARADEV_WORKTREE": str(ws.worktree(task.agent)),
        "PARADEV_BASE": ws.plan.base,
    }
    if record is not None:
        env["PARADEV_STATUS"] = record.status
        env["PARADEV_FILES"] = "\n".join(record.files_modified)
        for key in ("base_commit", "head_commit", "merged_commit", "log"):
            value = getattr(record, key)
            if value:
                env[f"PARADEV_{key.upper()}"] = str(value)
    env.update({f"PARADEV_{k.upper()}": v for k, v in extra.items()})
    return env


@dataclass(frozen=True)
class HookResult:
    event: str
    command: str
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        last = self.output.strip().splitlines()[-1:] or ["(no output)"]
        return f"hook {self.event} ({self.command!r}) exited {self.returncode}: {last[0]}"


def run_hook(
    ws: Workspace,
    event: str,
    task: Task,
    record: TaskRecord | None = None,
    **extra: str,
) -> HookResult | None:
    """Run hook ``event`` if configured (None otherwise), in the agent's worktree when it exists.

    The command is the user's own shell line from plan.toml; the task data is
    only in the environment.
    """
    command = ws.plan.hook(event)
    if not command.strip():
        return None
    worktree = ws.worktree(task.agent)
    cwd: Path = worktree if worktree.is_dir() else ws.repo.main_root
    env = user_env(task_env(ws, task, record, event=event, **extra))  # the user's locale
    return _run_shell(event, command, cwd, env)


def _run_shell(event: str, command: str, cwd: Path, env: dict[str, str]) -> HookResult:
    """Run the hook in its own process group, so a timeout or a signal stops its children too.

    On an interrupt the hook is left registered: the interrupt's cleanup stops
    it together with every agent, in one grace period.
    """
    try:
        proc = processes.spawn(
            command,
            shell=True,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",  # a hook printing other bytes is still just a hook
        )
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte no environment can hold
        return HookResult(event, command, -1, f"cannot run: {exc}")
    try:
        output, _ = proc.communicate(timeout=HOOK_TIMEOUT)
    except subprocess.TimeoutExpired:
        processes.stop([proc])
        proc.communicate()
        return HookResult(event, command, -1, f"timed out after {HOOK_TIMEOUT:g}s")
    processes.release(proc)
    return HookResult(event, command, proc.returncode, output)
