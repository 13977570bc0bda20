"""Small helpers for tests that drive real git repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paradev.git import git_env


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """Run real git in ``cwd`` and return its stdout without the trailing newline."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=git_env(), check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr}")
    return proc.stdout.rstrip("\n")


def write(root: Path, files: dict[str, str | bytes | None]) -> None:
    """Write (str/bytes) or delete (None) files below ``root``."""
    for name, content in files.items():
        path = root / name
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def commit(worktree: Path, files: dict[str, str | bytes | None], message: str = "change") -> str:
    """Write ``files`` in ``worktree``, commit everything, return the new commit id."""
    write(worktree, files)
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", message)
    return git(worktree, "rev-parse", "HEAD")


def agent_tree(worktrees: Path, agent: int) -> Path:
    """The work tree of ``agent`` under the worktree root."""
    return worktrees / f"agent-{agent}"


def state_files(repo: Path) -> Any:
    """state.json as written, with the merge journal file (if any) under "train", as it was read."""
    folder = repo / ".git" / "paradev"
    data = json.loads((folder / "state.json").read_text())
    journal = folder / "train.json"
    data["train"] = json.loads(journal.read_text()) if journal.exists() else data.get("train")
    return data


def rev(cwd: Path, name: str) -> str:
    return git(cwd, "rev-parse", "--verify", name)


@dataclass
class Result:
    """What one paradev command did: exit code and both streams."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_process(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> Result:
    """Run ``python -m paradev`` as a real process (for exit codes, tracebacks, concurrency)."""
    proc = subprocess.run(
        [sys.executable, "-m", "paradev", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


# A process that ignores SIGTERM, and so does the child it starts (same process group).
# argv: EVENTS NAME PIDFILE. Appends "term NAME" to EVENTS when SIGTERM arrives and
# "tick NAME" every 20 ms, so the order of events shows who was alive when.
STUBBORN = r"""
import os, signal, subprocess, sys, time
events, name, pidfile = sys.argv[1], sys.argv[2], sys.argv[3]

def note(text):
    fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{text} {name}\n".encode())
    os.close(fd)

signal.signal(signal.SIGTERM, lambda *_: note("term"))
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
with open(pidfile + ".tmp", "w") as out:
    out.write(f"{os.getpid()} {child.pid}\n")
os.replace(pidfile + ".tmp", pidfile)
while True:
    note("tick")
    time.sleep(0.02)
"""


def wait_for_file(path: Path, proc: subprocess.Popen[Any] | None = None, limit: float = 60) -> str:
    """The text of ``path`` once it holds some (while ``proc`` runs), else an AssertionError.

    A writer opens the file before it writes: an empty file is not yet its answer.
    """
    import time

    deadline = time.monotonic() + limit
    while not (text := path.read_text() if path.exists() else ""):
        assert proc is None or proc.poll() is None, f"exited {proc.returncode} first"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return text


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting for its parent counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" in status.read_text()


def stopped_together(events: str, names: list[str]) -> bool:
    """Every one of ``names`` got SIGTERM, and each still ticked after the last SIGTERM arrived.

    So all were signalled before any was killed: one shared grace period.
    """
    lines = events.splitlines()
    terms = [i for i, line in enumerate(lines) if line.startswith("term ")]
    if {lines[i].split()[1] for i in terms} != set(names):
        return False
    after = {line.split()[1] for line in lines[terms[-1] + 1 :] if line.startswith("tick ")}
    return after == set(names)


def start_paradev(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """``paradev ARGS`` as a real process of its own, to send signals to."""
    return subprocess.Popen(
        [sys.executable, "-m", "paradev", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def signal_and_wait(
    proc: subprocess.Popen[str], sig: int, pids: list[int]
) -> tuple[str, list[int]]:
    """Send ``sig`` to ``proc``, wait for it: its stderr and which of ``pids`` outlived it.

    Whatever happens, the process groups of ``pids`` are killed after: a test
    leaves nothing running.
    """
    import contextlib
    import signal

    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
        return err, [pid for pid in pids if not gone(pid)]
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def plan_with(
    repo: Path, *, agent: list[str] | None = None, gate: str = "", count: int = 3
) -> None:
    """Commit the tests' plan with ``agents.command``, a gate and a count; #21 waits for nothing."""
    from tests.conftest import PLAN  # conftest imports this module

    text = PLAN.replace("  depends_on = [11]\n", "").replace("count = 3", f"count = {count}")
    if count < 3:  # agent 3's task leaves the plan with it
        start = text.index("  [[batches.tasks]]\n  agent = 3")
        text = text[:start] + text[text.index("[[batches]]", start) :]
    text = text.replace('[gate]\ncommand = ""', f"[gate]\ncommand = {json.dumps(gate)}")
    if agent is not None:
        text = text.replace(
            f"count = {count}\n", f"count = {count}\ncommand = {json.dumps(agent)}\n"
        )
    commit(repo, {"plan.toml": text}, "configure the plan")


def work(
    cli: Callable[..., Result], worktrees: Path, agent: int, files: dict[str, str | bytes | None]
) -> str:
    """The agent starts its next task, commits ``files`` and completes it; the new head."""
    assert cli("start", str(agent)).code == 0
    head = commit(agent_tree(worktrees, agent), files, f"work of agent {agent}")
    result = cli("complete", str(agent))
    assert result.code == 0, result.err
    return head


def set_journal_field(repo: Path, key: str, value: object) -> None:
    """Write ``value`` at the dotted ``key`` (``agents.1.old_head``) of the train's journal."""
    import json

    path = repo / ".git" / "paradev" / "train.json"
    data = json.loads(path.read_text())
    *outer, last = key.split(".")
    field = data
    for name in outer:
        field = field[name]
    field[last] = value
    path.write_text(json.dumps(data))
