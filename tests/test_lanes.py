"""``paradev run`` overlap: an agent starts its next task while its previous one lands from a
lane (``paradev.lanes``), with real scripted agents, a real gate and a real merge train."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paradev import lanes
from paradev.git import git_env
from paradev.state import MERGED
from paradev.workspace import open_workspace
from tests.helpers import Result, commit, git

CliFn = Callable[..., Result]

# Per issue: optionally wait for a file, write files, commit; notes "<issue> started".
AGENT = r"""
import json, os, subprocess, sys, time
from pathlib import Path

spec = json.loads(Path(sys.argv[1]).read_text())
issue = os.environ["PARADEV_ISSUE"]
mine = spec.get(issue, {})
if os.environ.get("PARADEV_MODE") == "conflict":  # keep both sides, finish the rebase
    for name in subprocess.run(["git", "diff", "--name-only", "--diff-filter=U"],
                               capture_output=True, text=True, check=True).stdout.split():
        text = Path(name).read_text()
        kept = [l for l in text.splitlines() if not l.startswith(("<<<<<<<", "=======", ">>>>>>>"))]
        Path(name).write_text("\n".join(kept) + "\n")
        subprocess.run(["git", "add", name], check=True)
    env = {**os.environ, "GIT_EDITOR": "true"}
    subprocess.run(["git", "rebase", "--continue"], check=True, env=env)
    with Path(sys.argv[2]).open("a") as out:
        out.write(f"resolved for {issue}\n")
    sys.exit(0)
with Path(sys.argv[2]).open("a") as out:
    out.write(f"{issue} started\n")
if "touch" in mine:
    Path(mine["touch"]).write_text("started\n")
if "wait_for" in mine:
    deadline = time.monotonic() + 30
    while not Path(mine["wait_for"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
for name, text in mine.get("files", {f"work-{issue}.txt": f"issue {issue}\n"}).items():
    Path(name).write_text(text)
for number in range(mine.get("commits", 1)):
    Path(f"work-{issue}.txt").write_text(f"issue {issue} step {number}\n")
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"feat: #{issue} step {number}"], check=True)
"""

# The gate of agent <owner>'s landing that holds ``work-<wait>.txt`` waits (at most 20 s) for
# a file an agent writes when its next task starts, and notes whether it came: the overlap.
GATE = r"""
import os, sys, time
from pathlib import Path

notes, wait, marker, agent = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
mine = os.environ["PARADEV_AGENT"] == agent
if mine and Path(f"work-{wait}.txt").exists() and not marker.parent.joinpath("gated").exists():
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    marker.parent.joinpath("gated").write_text("")
    with notes.open("a") as out:
        branch = os.environ["PARADEV_BRANCH"]
        out.write(f"gate of #{wait} on {branch}: next task started meanwhile: {marker.exists()}\n")
"""

PLAN = """\
[project]
base = "main"

[agents]
count = 2
command = {command}
timeout = 60

[gate]
command = {gate}

[merge]
on_conflict = "{on_conflict}"

[[batches]]
name = "one"
  [[batches.tasks]]
  agent = 1
  issue = 1
  title = "first"
  hours = 1
  [[batches.tasks]]
  agent = 2
  issue = 3
  title = "agent 2 first"
  hours = 1
  {deps3}

[[batches]]
name = "two"
  [[batches.tasks]]
  agent = 1
  issue = 2
  title = "needs 1"
  hours = 1
  depends_on = [1]
  [[batches.tasks]]
  agent = 2
  issue = 4
  title = "agent 2 again, on its own"
  hours = 1
"""


def lane_plan(
    repo: Path,
    tmp_path: Path,
    spec: dict[int, dict[str, Any]],
    *,
    wait: int = 3,
    owner: int = 2,
    on_conflict: str = "stop",
    deps3: str = "",
) -> Path:
    """Write the plan (agents, gate) and commit it; return the notes file."""
    agent, gate = tmp_path / "agent.py", tmp_path / "gate.py"
    agent.write_text(AGENT, encoding="utf-8")
    gate.write_text(GATE, encoding="utf-8")
    spec_file, notes = tmp_path / "spec.json", tmp_path / "notes.txt"
    spec_file.write_text(json.dumps({str(k): v for k, v in spec.items()}))
    command = json.dumps([sys.executable, str(agent), str(spec_file), str(notes)])
    marker = tmp_path / "marks" / "next-started"
    marker.parent.mkdir()
    gate_argv = [sys.executable, str(gate), str(notes), str(wait), str(marker), str(owner)]
    text = PLAN.format(
        command=command,
        gate=json.dumps(shlex.join(gate_argv)),
        on_conflict=on_conflict,
        deps3=deps3,
    )
    commit(repo, {"plan.toml": text}, "chore: the lane plan")
    return notes


def _ancestor(repo: Path, older: str, newer: str) -> bool:
    argv = ["git", "merge-base", "--is-ancestor", older, newer]
    return subprocess.run(argv, cwd=repo, env=git_env(), check=False).returncode == 0


def _has(repo: Path, commit_: str, name: str) -> bool:
    argv = ["git", "cat-file", "-e", f"{commit_}:{name}"]
    found = subprocess.run(argv, cwd=repo, env=git_env(), check=False, capture_output=True)
    return found.returncode == 0


def test_an_agent_starts_its_next_task_while_the_previous_one_lands_from_its_lane(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    marker = str(tmp_path / "marks" / "next-started")
    notes = lane_plan(repo, tmp_path, {3: {"commits": 2}, 4: {"touch": marker, "commits": 2}})

    result = cli("run")

    assert result.code == 0, result.out + result.err
    seen = "gate of #3 on paradev/lane/agent-2: next task started meanwhile: True"
    assert seen in notes.read_text(), result.out
    ws = open_workspace(repo)
    state = ws.store.read()
    assert {i: r.status for i, r in state.tasks.items()} == {i: MERGED for i in (1, 2, 3, 4)}
    three, four = state.tasks[3], state.tasks[4]
    assert three.merged_commit and three.head_commit and four.merged_commit and four.start_commit
    # #4 started on #3's original head, before #3 landed; #3 landed from its lane
    assert four.start_commit == three.head_commit
    assert not _ancestor(repo, three.merged_commit, four.start_commit)
    assert lanes.read(ws)[2].issue == 3
    # each landing holds its task's work and nothing of the next
    assert _has(repo, three.merged_commit, "work-3.txt")
    assert not _has(repo, three.merged_commit, "work-4.txt")
    assert _ancestor(repo, three.merged_commit, four.merged_commit)
    subjects = git(repo, "log", "--format=%s", "main").splitlines()
    for issue in (3, 4):  # each commit landed once: #4's range is its own commits alone
        assert [s for s in subjects if s.startswith(f"feat: #{issue} ")] == [
            f"feat: #{issue} step 1",
            f"feat: #{issue} step 0",
        ]
    # the agent's branch kept #4's commits and lands as the merged head (idle at the end)
    assert git(repo, "rev-parse", "parallel-dev/agent-2") == four.merged_commit
    assert {"work-1.txt", "work-2.txt", "work-3.txt", "work-4.txt"} <= set(
        git(repo, "ls-tree", "--name-only", "main").split()
    )


def test_a_task_that_depends_on_the_previous_one_does_not_start_early(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    lane_plan(repo, tmp_path, {}, wait=0)

    result = cli("run")

    assert result.code == 0, result.out + result.err
    state = open_workspace(repo).store.read()
    one, two = state.tasks[1], state.tasks[2]
    assert one.merged_commit and two.start_commit
    assert _ancestor(repo, one.merged_commit, two.start_commit)  # #2 began on landed #1
    assert 1 not in {lane.issue for lane in lanes.read(open_workspace(repo)).values()}
