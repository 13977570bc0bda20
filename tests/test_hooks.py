"""Hooks: the user's shell line, task data only in PARADEV_* variables, failures are warnings."""

from __future__ import annotations

import json
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from paradev import hooks
from paradev.hooks import run_hook, task_env
from paradev.state import StateStore
from paradev.workspace import open_workspace
from tests.helpers import (
    STUBBORN,
    Result,
    agent_tree,
    commit,
    rev,
    signal_and_wait,
    start_paradev,
    stopped_together,
    wait_for_file,
)


def _hooks(repo: Path, **commands: str) -> None:
    table = "".join(f"{name} = {_toml(cmd)}\n" for name, cmd in commands.items())
    text = (repo / "plan.toml").read_text(encoding="utf-8")
    (repo / "plan.toml").write_text(text.replace("[gate]", f"[hooks]\n{table}\n[gate]"))


def _toml(text: str) -> str:
    import tomlkit

    return str(tomlkit.item(text).as_string())


def _dump_env(out: Path) -> str:
    return f"env | grep ^PARADEV_ | sort > {shlex.quote(str(out))}; pwd >> {shlex.quote(str(out))}"


def _read(out: Path) -> tuple[dict[str, str], str]:
    lines = out.read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines[:-1] if "=" in line)
    return env, lines[-1]


def test_on_start_and_on_complete_get_the_task_in_the_environment(
    repo: Path, worktrees: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    started, completed = tmp_path / "start.env", tmp_path / "complete.env"
    _hooks(repo, on_start=_dump_env(started), on_complete=_dump_env(completed))
    assert cli("setup").code == 0
    base = rev(repo, "main")
    assert cli("start", "2").code == 0
    env, cwd = _read(started)
    tree = agent_tree(worktrees, 2)
    assert cwd == str(tree)  # the hook runs in the agent's worktree
    assert env == {
        "PARADEV_AGENT": "2",
        "PARADEV_ISSUE": "12",
        "PARADEV_TITLE": "Add the init command",
        "PARADEV_HOURS": "1.5",
        "PARADEV_BATCH": "first",
        "PARADEV_BRANCH": "parallel-dev/agent-2",
        "PARADEV_WORKTREE": str(tree),
        "PARADEV_BASE": "main",
        "PARADEV_STATUS": "in_progress",
        "PARADEV_FILES": "",
        "PARADEV_BASE_COMMIT": base,
        "PARADEV_EVENT": "on_start",
    }
    head = commit(tree, {"init.py": "x\n"})
    assert cli("complete", "2").code == 0
    env, _ = _read(completed)
    assert env["PARADEV_EVENT"] == "on_complete"
    assert env["PARADEV_STATUS"] == "completed"
    assert env["PARADEV_FILES"] == "init.py"
    assert env["PARADEV_HEAD_COMMIT"] == head


def test_a_failing_hook_is_only_a_warning(
    repo: Path, worktrees: Path, cli: Callable[..., Result]
) -> None:
    _hooks(repo, on_start="echo 'tracker is down' >&2; exit 3", on_complete="exit 1")
    assert cli("setup").code == 0
    result = cli("start", "1")
    assert result.code == 0
    assert result.err == (
        "paradev: warning: hook on_start (\"echo 'tracker is down' >&2; exit 3\") exited 3: "
        "tracker is down\n"
    )
    assert StateStore(repo / ".git").read().tasks[11].status == "in_progress"
    done = cli("complete", "1")
    assert done.code == 0 and "hook on_complete ('exit 1') exited 1: (no output)" in done.err
    assert StateStore(repo / ".git").read().tasks[11].status == "completed"


def test_a_hook_printing_bytes_that_are_not_utf8_is_only_a_warning(
    repo: Path, worktrees: Path, cli: Callable[..., Result]
) -> None:
    _hooks(repo, on_start="printf 'bad \\377\\376 bytes'; exit 3")
    assert cli("setup").code == 0
    result = cli("start", "1")
    assert result.code == 0
    assert result.err == (
        "paradev: warning: hook on_start (\"printf 'bad \\\\377\\\\376 bytes'; exit 3\") "
        "exited 3: bad \ufffd\ufffd bytes\n"
    )
    assert StateStore(repo / ".git").read().tasks[11].status == "in_progress"


def test_hooks_never_see_a_git_dir_from_our_environment(
    set_up: Path, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "env.txt"
    _hooks(repo, on_start=f"env > {shlex.quote(str(out))}")
    monkeypatch.setenv("GIT_DIR", "/somewhere/else")
    monkeypatch.setenv("GIT_INDEX_FILE", "/somewhere/index")
    ws = open_workspace(repo)
    task = ws.plan.task(11)
    assert task is not None
    result = run_hook(ws, "on_start", task)
    assert result is not None and result.ok
    assert "GIT_DIR=" not in out.read_text() and "GIT_INDEX_FILE=" not in out.read_text()


def test_an_unset_hook_does_nothing(set_up: Path, repo: Path) -> None:
    ws = open_workspace(repo)
    task = ws.plan.task(11)
    assert task is not None
    assert run_hook(ws, "on_merge", task) is None


def test_a_hook_that_hangs_is_stopped(
    set_up: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _hooks(repo, on_merge="sleep 30; echo never")  # the shell and its child are stopped
    monkeypatch.setattr(hooks, "HOOK_TIMEOUT", 0.3)
    ws = open_workspace(repo)
    task = ws.plan.task(13)
    assert task is not None
    result = run_hook(ws, "on_merge", task, commit="abc")
    assert result is not None and not result.ok
    assert (
        result.describe()
        == "hook on_merge ('sleep 30; echo never') exited -1: timed out after 0.3s"
    )


def test_a_hook_runs_in_the_main_worktree_when_the_agent_has_none(
    repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pwd.txt"
    _hooks(repo, on_start=f"pwd > {shlex.quote(str(out))}")
    ws = open_workspace(repo)
    task = ws.plan.task(11)
    assert task is not None
    result = run_hook(ws, "on_start", task)
    assert result is not None and result.ok
    assert out.read_text().strip() == str(repo)


def test_task_env_adds_extra_values_upper_cased(repo: Path) -> None:
    ws = open_workspace(repo)
    task = ws.plan.task(21)
    assert task is not None
    env = task_env(ws, task, None, commit="abc123", log="/tmp/x.log")
    assert env["PARADEV_COMMIT"] == "abc123" and env["PARADEV_LOG"] == "/tmp/x.log"
    assert env["PARADEV_HOURS"] == "2" and env["PARADEV_BATCH"] == "second"
    assert "PARADEV_STATUS" not in env


def test_sigterm_stops_a_running_hook_together_with_the_running_agents(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    script, events, pids = tmp_path / "stubborn.py", tmp_path / "events", tmp_path / "pids"
    script.write_text(STUBBORN)
    pids.mkdir()
    stubborn = shlex.join([sys.executable, str(script), str(events)])
    # agent 1 runs and ignores SIGTERM; then agent 2's on_start hook hangs and ignores it too
    _hooks(repo, on_start=f'[ "$PARADEV_ISSUE" != 12 ] || exec {stubborn} hook {pids}/hook')
    text = (repo / "plan.toml").read_text()
    command = f"command = {json.dumps([*shlex.split(stubborn), '{issue}', f'{pids}/{{issue}}'])}"
    (repo / "plan.toml").write_text(text.replace("count = 3", f"count = 3\n{command}"))
    paradev = start_paradev(repo, "run-batch", "--agents", "1,2")
    started = [int(p) for name in ("11", "hook") for p in wait_for_file(pids / name).split()]

    err, survivors = signal_and_wait(paradev, signal.SIGTERM, started)

    assert survivors == []
    assert paradev.returncode == 143, err
    assert stopped_together(events.read_text(), ["11", "hook"])
    state = StateStore(repo / ".git").read()
    assert state.status(11) == "interrupted"
