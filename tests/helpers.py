"""Small helpers for tests that drive real git repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
