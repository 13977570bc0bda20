"""Task leases across hosts: a started task names its host, a vanished host's task is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from paradev import lease
from paradev.state import StateStore
from paradev.tasklease import task_lease
from paradev.workspace import open_workspace
from tests.helpers import Result, commit, git, start_paradev
from tests.test_hosts import agents_run, planned, remote_state  # noqa: F401 - the fixture

CliFn = Callable[..., Result]
LEASE_11 = "refs/paradev/lock/task-11"


class Clock:
    """The hosts' monotonic clock, moved by the test (each host keeps its own observations)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(lease, "monotonic", fake)
    return fake


def lease_data(origin: Path, ref: str = LEASE_11) -> Any:
    return json.loads(git(origin, "cat-file", "blob", f"{ref}:lease.json"))


def started_on_laptop(planned: dict[str, Path], cli: CliFn) -> str:  # noqa: F811
    """Laptop starts #11 on agent 1, commits once and pushes it; box is set up; the pushed head."""
    laptop, box = planned["laptop"], planned["box"]
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    assert cli("start", "1", cwd=laptop).code == 0
    tree = laptop.parent / "project-worktrees/agent-1"
    head = commit(tree, {"feature.txt": "half done\n"}, "first half of #11")
    git(tree, "push", "-q", "origin", "HEAD:refs/heads/parallel-dev/agent-1")
    commit(tree, {"feature.txt": "never pushed\n"}, "second half, never pushed")
    assert cli("setup", "--host", "box", cwd=box).code == 0
    return head


def test_a_started_task_records_its_host_and_holds_its_lease(
    planned: dict[str, Path],  # noqa: F811
    origin: Path,
    cli: CliFn,
    clock: Clock,
) -> None:
    started_on_laptop(planned, cli)
    assert remote_state(planned["laptop"])["tasks"]["11"]["host"] == "laptop"
    assert lease_data(origin) == {"holder": "laptop", "state": "held", "expires": False}
    report = json.loads(cli("status", "--json", cwd=planned["box"]).out)
    assert report["agents"]["1"]["current_task"]["host"] == "laptop"
    assert "host_vanished" not in report["agents"]["1"]["current_task"]


def agent_runs_on_laptop(laptop: Path) -> None:
    """Laptop's agent takes #11's lease, renewed while it runs (``keep_alive``), as
    ``run-batch`` does; then laptop vanishes: nobody renews it any more."""
    assert task_lease(open_workspace(laptop), 11).acquire()


def test_a_vanished_hosts_task_is_reported_and_taken_over_with_its_pushed_commits(
    planned: dict[str, Path],  # noqa: F811
    origin: Path,
    cli: CliFn,
    clock: Clock,
) -> None:
    box = planned["box"]
    pushed = started_on_laptop(planned, cli)
    agent_runs_on_laptop(planned["laptop"])
    assert cli("sync", cwd=box).code == 0  # box sees laptop's lease for the first time

    early = cli("reopen", "11", cwd=box)  # laptop may still be alive: refused
    assert early.code == 2
    assert "host laptop works on #11" in early.err
    assert "'paradev reopen 11' takes it here" in early.err
    assert not (box.parent / "project-worktrees/agent-1").exists()
    assert remote_state(box)["tasks"]["11"]["host"] == "laptop"

    clock.now += lease.DEFAULT_EXPIRY  # laptop renews nothing for the whole expiry
    assert cli("sync", cwd=box).code == 0
    report = json.loads(cli("status", "--json", cwd=box).out)
    current = report["agents"]["1"]["current_task"]
    assert (current["host"], current["host_vanished"]) == ("laptop", True)
    assert current["lease_unchanged_seconds"] == int(lease.DEFAULT_EXPIRY)
    text = cli("status", cwd=box).out
    assert "host laptop vanished: its lease on #11 went 300s unrenewed" in text

    result = cli("reopen", "11", cwd=box)
    assert result.code == 0, result.err
    tree = box.parent / "project-worktrees/agent-1"
    assert git(tree, "rev-parse", "HEAD") == pushed  # the pushed commit kept, here
    assert git(tree, "symbolic-ref", "--short", "HEAD") == "parallel-dev/agent-1"
    shared = remote_state(box)["tasks"]["11"]
    assert (shared["status"], shared["host"]) == ("in_progress", "box")
    assert lease_data(origin) == {"holder": "box", "state": "held", "expires": False}
    assert StateStore(box / ".git").read().tasks[11].host == "box"

    # box finishes the task: completing it pushes on top of laptop's pushed commit
    commit(tree, {"feature.txt": "done on box\n"}, "second half of #11, on box")
    assert cli("complete", "1", cwd=box).code == 0
    assert git(origin, "rev-parse", "parallel-dev/agent-1^") == pushed
    assert lease_data(origin) == {"holder": "box", "state": "free"}


def test_a_task_started_by_hand_is_never_called_vanished_and_reopen_takes_it(
    planned: dict[str, Path],  # noqa: F811
    origin: Path,
    cli: CliFn,
    clock: Clock,
) -> None:
    """A person works on #11 on laptop: no process renews its lease, however long it is;
    every host's status says it was started by hand there; box's reopen takes it at once."""
    laptop, box = planned["laptop"], planned["box"]
    pushed = started_on_laptop(planned, cli)
    for _ in range(2):  # each host's first sight, then ten expiries of silence later
        for clone in (laptop, box):
            assert cli("sync", cwd=clone).code == 0
        clock.now += 10 * lease.DEFAULT_EXPIRY
    line = (
        "  host laptop: #11 started by hand there, its lease renewed by no agent and never "
        "expiring; 'paradev reopen 11' on another host takes the task over"
    )
    for clone in (laptop, box):
        current = json.loads(cli("status", "--json", cwd=clone).out)["agents"]["1"]
        current = current["current_task"]
        assert "host_vanished" not in current
        assert (current["host"], current.get("started_by_hand")) == ("laptop", True)
        text = cli("status", cwd=clone).out
        assert line in text.splitlines()
        assert "vanished" not in text

    result = cli("reopen", "11", cwd=box)  # the user asks: no expiry to wait for
    assert result.code == 0, result.err
    tree = box.parent / "project-worktrees/agent-1"
    assert git(tree, "rev-parse", "HEAD") == pushed  # the pushed commit kept, here
    shared = remote_state(box)["tasks"]["11"]
    assert (shared["status"], shared["host"]) == ("in_progress", "box")
    assert lease_data(origin) == {"holder": "box", "state": "held", "expires": False}
    laptop_tree = laptop.parent / "project-worktrees/agent-1"
    assert git(laptop_tree, "log", "-1", "--format=%s") == "second half, never pushed"
    assert cli("sync", cwd=laptop).code == 0
    current = json.loads(cli("status", "--json", cwd=laptop).out)["agents"]["1"]
    assert (current["current_task"]["host"], current["current_task"]["started_by_hand"]) == (
        "box",
        True,
    )


AGENT = """
import subprocess, time
from pathlib import Path
time.sleep(1.5)
Path("done.txt").write_text("done\\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work"], check=True)
"""


def test_run_batch_renews_the_task_lease_while_the_agent_runs(
    planned: dict[str, Path],  # noqa: F811
    origin: Path,
    cli: CliFn,
    tmp_path: Path,
) -> None:
    laptop = planned["laptop"]
    agents_run(laptop, AGENT, tmp_path)
    plan = (laptop / "plan.toml").read_text()
    plan = plan.replace("count = 3\n", "count = 3\nlease_expiry = 0.6\n")  # renewed every 0.2 s
    commit(laptop, {"plan.toml": plan}, "short leases")
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0

    result = cli("run-batch", "--agents", "1", cwd=laptop)
    assert result.code == 0, result.err
    subjects = git(origin, "log", "--format=%s", LEASE_11).splitlines()
    renewals = [s for s in subjects if s.startswith("paradev: lease task-11 renewed by laptop")]
    assert len(renewals) >= 2  # renewed while the agent slept
    assert subjects[0] == "paradev: lease task-11 released by laptop"
    assert lease_data(origin) == {"holder": "laptop", "state": "free"}
    assert remote_state(laptop)["tasks"]["11"]["status"] == "completed"


# An agent that notes its start, then works until the test says go (a minute at most).
WAITING_AGENT = """
import os, subprocess, time
from pathlib import Path
marks, issue = Path(MARKS), os.environ["PARADEV_ISSUE"]
with open(marks / "runs", "a") as note:
    note.write(f"{issue} {os.getpid()}\\n")
deadline = time.monotonic() + 60
while not (marks / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
Path(f"done-{issue}.txt").write_text(issue + "\\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", f"work on #{issue}"], check=True)
"""


def test_a_run_renews_the_task_leases_of_the_agents_it_adopts(
    planned: dict[str, Path],  # noqa: F811
    origin: Path,
    cli: CliFn,
    tmp_path: Path,
) -> None:
    """laptop's run is SIGKILLed while its agents work: the next run adopts them and renews
    their task leases, or other hosts would see laptop vanished while its agents work."""
    laptop, marks = planned["laptop"], tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "agent.py"
    script.write_text(WAITING_AGENT.replace("MARKS", repr(str(marks))), encoding="utf-8")
    command = json.dumps([sys.executable, str(script)])
    plan = (laptop / "plan.toml").read_text().replace("box = [3]", "box = []")
    plan = plan.replace("laptop = [1, 2]", "laptop = [1, 2, 3]")
    plan = plan.replace("count = 3\n", f"count = 3\nlease_expiry = 1.0\ncommand = {command}\n")
    commit(laptop, {"plan.toml": plan}, "laptop runs every agent; short leases")
    git(laptop, "push", "-q", "origin", "main")
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    # the train rewrites agent 1's branch, which #21's completion pushes (paradev.hosts)
    git(origin, "config", "receive.denyNonFastForwards", "false")

    first = start_paradev(laptop, "run")
    pids: list[int] = []
    second: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 60
        while len(pids) < 3:
            runs = (marks / "runs").read_text() if (marks / "runs").exists() else ""
            pids = [int(line.split()[1]) for line in runs.splitlines()]
            assert first.poll() is None and time.monotonic() < deadline, runs
            time.sleep(0.05)
        first.kill()  # SIGKILL: its agents work on under their supervisors, unrenewed
        first.communicate()
        left = ""  # a push the killed run had under way still lands: then nobody renews it
        while (now := git(origin, "rev-parse", LEASE_11)) != left:
            left = now
            time.sleep(1.0)

        second = start_paradev(laptop, "run")
        deadline = time.monotonic() + 20
        while git(origin, "rev-parse", LEASE_11) == left:
            assert second.poll() is None, second.communicate()
            assert time.monotonic() < deadline, "the adopted agent's task lease stood still"
            time.sleep(0.1)
        assert lease_data(origin) == {"holder": "laptop", "state": "held"}
        (marks / "go").write_text("")
        out, err = second.communicate(timeout=120)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert second.returncode == 0, out + err
    assert len(pids) == 3  # adopted, never started again (#21 ran after: four lines)
    assert len((marks / "runs").read_text().splitlines()) == 4
    for issue in (11, 12, 13):
        ref = f"refs/paradev/lock/task-{issue}"
        subjects = git(origin, "log", "--format=%s", ref).splitlines()
        assert subjects[0] == f"paradev: lease task-{issue} released by laptop"
    states = remote_state(laptop)["tasks"]
    assert {i: t["status"] for i, t in states.items()} == dict.fromkeys(
        ("11", "12", "13", "21"), "merged"
    )
