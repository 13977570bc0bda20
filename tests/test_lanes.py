"""``paradev run`` overlap: an agent starts its next task while its previous one lands from a
lane (``paradev.lanes``), with real scripted agents, a real gate and a real merge train."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from paradev import lanes
from paradev.git import git_env
from paradev.state import MERGED
from paradev.workspace import Workspace, open_workspace
from tests.helpers import Result, agent_tree, commit, git, gone, start_paradev, wait_for_file
from tests.test_train import configure, work

CliFn = Callable[..., Result]

# Per issue: optionally wait for a file, write files, commit; notes "<issue> started".
AGENT = r"""
import json, os, subprocess, sys, time
from pathlib import Path

spec = json.loads(Path(sys.argv[1]).read_text())
issue = os.environ.get("PARADEV_ISSUE", "")
mine = spec.get(issue, {})

def git_ok(*args):
    return subprocess.run(["git", *args], capture_output=True).returncode == 0

def common_file(name):
    out = subprocess.run(["git", "rev-parse", "--git-common-dir"], capture_output=True, text=True)
    return Path(out.stdout.strip()).resolve() / "paradev" / name

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
deadline = time.monotonic() + 30
while "wait_for" in mine and not Path(mine["wait_for"]).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
while "after" in mine and not git_ok("cat-file", "-e", f"main:work-{mine['after']}.txt"):
    time.sleep(0.05)  # until that issue landed
while mine.get("until_held") and '"held": true' not in (
    common_file("lanes.json").read_text() if common_file("lanes.json").exists() else ""
):
    time.sleep(0.05)  # until its previous task's lane was held
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
    marker.parent.joinpath("gating").write_text(str(os.getpid()))
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
{merge}

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
    merge: str = "",
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
        merge=merge,
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


@pytest.mark.parametrize("merge", ["", "parallel = 2", "batch = 2"])
def test_an_agent_starts_its_next_task_while_the_previous_one_lands_from_its_lane(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn, merge: str
) -> None:
    marker = str(tmp_path / "marks" / "next-started")
    spec: dict[int, dict[str, Any]] = {3: {"commits": 2}, 4: {"touch": marker, "commits": 2}}
    notes = lane_plan(repo, tmp_path, spec, merge=merge)

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


def test_a_conflict_while_the_agent_is_busy_is_handed_back_once_it_is_idle(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    notes = lane_plan(
        repo,
        tmp_path,
        {
            1: {"files": {"shared.txt": "one\n"}},
            3: {"after": 1, "files": {"shared.txt": "three\n"}},
            4: {"until_held": True},
        },
        wait=0,
        on_conflict="agent",
    )

    result = cli("run")

    assert result.code == 0, result.out + result.err
    out = result.out
    assert "#3 lands from paradev/lane/agent-2 while #4 starts" in out
    assert "agent 2: #3: its rebase conflicts; agent 2 is busy on its next task" in out
    assert "resolved for" in notes.read_text()  # handed back once idle, in its own tree
    ws = open_workspace(repo)
    state = ws.store.read()
    assert {i: r.status for i, r in state.tasks.items()} == {i: MERGED for i in (1, 2, 3, 4)}
    assert state.tasks[3].merged_commit == state.tasks[4].merged_commit  # landed together
    assert git(repo, "show", "main:shared.txt").splitlines() == ["one", "three"]
    assert lanes.read(ws)[2].held
    assert git(repo, "rev-parse", "parallel-dev/agent-2") == state.tasks[4].merged_commit


def test_a_run_killed_while_a_lane_lands_resumes_to_the_same_landings(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    go4 = tmp_path / "go-4"
    spec: dict[int, dict[str, Any]] = {3: {"commits": 2}, 4: {"wait_for": str(go4), "commits": 2}}
    lane_plan(repo, tmp_path, spec, wait=3)
    (marks / "next-started").unlink(missing_ok=True)  # the lane's gate waits for it: released
    first = start_paradev(repo, "run")
    gate = int(wait_for_file(marks / "gating", first))
    driver = open_workspace(repo).store.read().train or {}
    train_pid = int(driver["driver"]["pid"])
    supervisors = [
        json.loads(p.read_text())["supervisor"]
        for p in (repo / ".git" / "paradev" / "agents").glob("agent-*.json")
    ]
    try:
        for pid in (first.pid, train_pid, gate):  # the run, its train and the lane's gate
            os.kill(pid, signal.SIGKILL)
        first.communicate()
        while not (gone(train_pid) and gone(gate)):
            time.sleep(0.05)
        (marks / "next-started").write_text("")
        go4.write_text("")  # #4 ends under its supervisor, or under the next run
        second = start_paradev(repo, "run")
        out, err = second.communicate(timeout=120)
    finally:
        for pid in supervisors:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert second.returncode == 0, out + err
    assert "continuing merge train" in out  # the lane's landing resumed where it was killed
    ws = open_workspace(repo)
    state = ws.store.read()
    assert {i: r.status for i, r in state.tasks.items()} == {i: MERGED for i in (1, 2, 3, 4)}
    three, four = state.tasks[3], state.tasks[4]
    assert three.merged_commit and four.merged_commit
    assert four.start_commit == three.head_commit  # started while #3 was landing
    assert not _has(repo, three.merged_commit, "work-4.txt")
    subjects = git(repo, "log", "--format=%s", "main").splitlines()
    assert sorted(s for s in subjects if s.startswith(("feat: #3 ", "feat: #4 "))) == [
        "feat: #3 step 0",
        "feat: #3 step 1",
        "feat: #4 step 0",
        "feat: #4 step 1",
    ]
    assert git(repo, "rev-parse", "parallel-dev/agent-2") == four.merged_commit
    assert git(lanes.tree(ws, 2), "status", "--porcelain") == ""


def test_after_a_lane_landed_merge_by_hand_lands_only_the_next_tasks_own_range(
    repo: Path, cli: CliFn, worktrees: Path
) -> None:
    configure(repo, squash=True)  # the lane's task lands rewritten: its commits are not on main
    assert cli("setup").code == 0
    first = work(cli, worktrees, 1, {"a.py": "A = 1\nB = 1\n", "c.py": "C = 1\n"}, n=2)
    ws = open_workspace(repo)
    lanes.open_lane(ws, ws.store.read(), 1, 11, first)  # as 'paradev run' does
    assert cli("start", "1").code == 0  # #21, on #11's head, while #11 waits to land
    tree = agent_tree(worktrees, 1)
    second = commit(tree, {"b.py": "D = 1\n"}, "feat: #21's work")
    (tree / "notes.txt").write_text("uncommitted\n")

    landed = cli("merge", "--follow")

    assert landed.code == 0, landed.out + landed.err
    assert "agent 1: #11 lands from its lane while #21 is in progress" in landed.out
    assert "#21 is still in progress; not landed" not in landed.out
    assert git(repo, "rev-parse", "parallel-dev/agent-1") == second  # the busy branch untouched
    assert (tree / "notes.txt").read_text() == "uncommitted\n"
    assert git(repo, "show", "main:a.py") == "A = 1\nB = 1"
    assert "b.py" not in git(repo, "ls-tree", "--name-only", "main").split()
    work(cli, worktrees, 2, {"a.py": "A = 1\nB = 2\n"})  # main changes #11's file meanwhile
    assert cli("merge").code == 0
    assert cli("complete", "1").code == 0

    result = cli("merge")  # by hand, no run: the branch's tip, from #11's original head

    assert result.code == 0, result.out + result.err
    state = ws.store.read()
    assert {i: state.status(i) for i in (11, 12, 21)} == {i: MERGED for i in (11, 12, 21)}
    assert git(repo, "show", "main:a.py") == "A = 1\nB = 2"
    assert git(repo, "show", "main:b.py") == "D = 1"
    assert git(repo, "rev-parse", "parallel-dev/agent-1") == git(repo, "rev-parse", "main")
    assert (
        len(git(repo, "log", "--format=%H", f"{state.tasks[12].merged_commit}..main").split()) == 1
    )


def test_a_lane_that_cannot_be_made_leaves_the_run_landing_the_usual_way(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    lane_plan(repo, tmp_path, {}, wait=0)
    blocker = lanes.tree(open_workspace(repo), 2)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a work tree\n")  # git cannot add the lane's work tree there

    result = cli("run")

    assert result.code == 0, result.out + result.err
    assert "agent 2: no lane for #3:" in result.out
    state = open_workspace(repo).store.read()
    three, four = state.tasks[3], state.tasks[4]
    assert three.merged_commit and four.start_commit and four.merged_commit
    assert _ancestor(repo, three.merged_commit, four.start_commit)  # #4 waited for #3
    assert blocker.read_text() == "not a work tree\n"


def _lane_for_11(repo: Path, cli: CliFn, worktrees: Path, **settings: Any) -> tuple[Workspace, str]:
    """Agent 1 completes #11 (one commit) and its lane is made, as 'paradev run' does."""
    configure(repo, **settings)
    assert cli("setup").code == 0
    first = work(cli, worktrees, 1, {"a.py": "A = 1\n"})
    ws = open_workspace(repo)
    lanes.open_lane(ws, ws.store.read(), 1, 11, first)
    return ws, first


def test_cleanup_keeps_a_waiting_lane_and_removes_a_landed_one_keeping_its_own_commits(
    repo: Path, cli: CliFn, worktrees: Path
) -> None:
    # #11 lands rewritten: the agent's branch keeps its original commit
    ws, first = _lane_for_11(repo, cli, worktrees, squash=True)
    assert cli("start", "1").code == 0  # #21 starts while #11 waits to land
    path, branch = lanes.tree(ws, 1), "paradev/lane/agent-1"

    waiting = cli("cleanup")

    assert waiting.code == 1
    assert f"refused: lane {branch} ({path}): #11 still waits to land from it; kept" in waiting.out
    assert path.is_dir() and git(repo, "rev-parse", branch) == first
    assert cli("merge", "--follow").code == 0  # #11 lands from its lane
    stray = commit(path, {"stray.txt": "made in the lane\n"}, "a commit only the lane holds")

    landed = cli("cleanup")

    assert f"removed worktree {path}" in landed.out, landed.out + landed.err
    assert f"deleted branch {branch}" in landed.out
    assert not path.exists()
    assert git(repo, "branch", "--list", "paradev/lane/*") == ""
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/paradev/backup")
    kept = [line.split()[1] for line in refs.splitlines() if f"{branch}/cleanup-" in line]
    assert kept == [stray]  # the lane's own commit is kept
    # agent 1's branch still holds #11's original commit: its next landing needs the record
    assert lanes.read(ws)[1].head == first
    tree = agent_tree(worktrees, 1)
    commit(tree, {"b.py": "B = 1\n"}, "feat: #21's work")
    assert cli("complete", "1").code == 0
    assert cli("merge").code == 0
    assert git(repo, "show", "main:b.py") == "B = 1"

    assert cli("cleanup").code == 0
    assert not (ws.store.dir / lanes.FILE).exists()


def test_status_shows_the_task_that_waits_to_land_from_its_lane(
    repo: Path, cli: CliFn, worktrees: Path
) -> None:
    ws, first = _lane_for_11(repo, cli, worktrees)
    assert cli("start", "1").code == 0  # #21 in progress while #11 waits to land

    report = cli("status", "--json")
    text = cli("status")

    assert report.code == 0 and text.code == 0, report.err + text.err
    agents = json.loads(report.out)["agents"]
    assert agents["1"]["lane"] == {
        "issue": 11,
        "head": first,
        "branch": "paradev/lane/agent-1",
        "worktree": str(lanes.tree(ws, 1)),
        "held": False,
    }
    assert agents["2"]["lane"] is None
    assert f"  lane:     #11 on paradev/lane/agent-1 ({first[:12]}), waits to land" in text.out
    assert cli("merge", "--follow").code == 0
    assert json.loads(cli("status", "--json").out)["agents"]["1"]["lane"] is None  # landed


def test_cleanup_removes_a_lane_no_record_names_backing_up_its_own_commit(
    repo: Path, cli: CliFn, worktrees: Path
) -> None:
    ws, first = _lane_for_11(repo, cli, worktrees)
    path = lanes.tree(ws, 1)
    own = commit(path, {"lane.txt": "only here\n"}, "a commit only the lane holds")
    (ws.store.dir / lanes.FILE).write_text("not json\n")  # its record unreadable: no lane

    result = cli("cleanup")

    assert f"removed worktree {path}" in result.out, result.out + result.err
    assert "deleted branch paradev/lane/agent-1" in result.out
    refs = git(repo, "for-each-ref", "--format=%(objectname)", "refs/paradev/backup/paradev")
    assert refs.split() == [own]
    assert git(repo, "rev-parse", "parallel-dev/agent-1") == first  # the agent's branch kept
    assert not path.exists()


# Another paradev's writer: holds a lock (the agent's, as 'paradev run' does, or the state
# lock) in a process of its own; with a lane to open, opens it at the end of its hold.
HOLDER = r"""
import sys, time
from pathlib import Path
from paradev import lanes
from paradev.workspace import open_workspace
repo, which, ready, release = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
ws = open_workspace(repo)
lock = ws.store.agent_lock(1, "paradev run") if which == "agent" else ws.store.locked()
with lock:
    ready.write_text("held")
    deadline = time.monotonic() + 30
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if len(sys.argv) > 5:  # as a run does: the lane of agent 1's task that waits to land now
        issue, head = sys.argv[5].split(":")
        lanes.open_lane(ws, ws.store.read(), 1, int(issue), head)
"""


def _holding(repo: Path, tmp_path: Path, which: str, *lane: str) -> subprocess.Popen[str]:
    """A real process holding ``which`` lock until ``tmp_path/release`` exists."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER, encoding="utf-8")
    ready, release = tmp_path / f"ready-{which}", tmp_path / "release"
    release.unlink(missing_ok=True)
    argv = [sys.executable, str(script), str(repo), which, str(ready), str(release), *lane]
    holder = subprocess.Popen(argv, cwd=repo, text=True, env=git_env())
    wait_for_file(ready, holder)
    return holder


def _landed_lane(repo: Path, cli: CliFn, worktrees: Path) -> tuple[Workspace, str]:
    """#11 landed from agent 1's lane while #21 started: the lane may go."""
    ws, first = _lane_for_11(repo, cli, worktrees, squash=True)
    assert cli("start", "1").code == 0
    assert cli("merge", "--follow").code == 0
    return ws, first


def test_cleanup_leaves_the_lane_of_an_agent_a_run_holds_whole(
    repo: Path, cli: CliFn, worktrees: Path, tmp_path: Path
) -> None:
    ws, first = _landed_lane(repo, cli, worktrees)
    path, branch = lanes.tree(ws, 1), lanes.branch(1)
    tip = git(repo, "rev-parse", branch)
    holder = _holding(repo, tmp_path, "agent")

    try:
        busy = cli("cleanup")
    finally:
        (tmp_path / "release").write_text("go")
        holder.wait(timeout=30)

    assert busy.code == 1, busy.out + busy.err
    assert f"refused: lane {branch} ({path}): agent 1 is busy: paradev run (pid" in busy.out
    assert path.is_dir() and git(repo, "rev-parse", branch) == tip
    assert lanes.read(ws)[1].head == first
    assert "/cleanup-" not in git(repo, "for-each-ref", "refs/paradev/backup")
    done = cli("cleanup")  # the run let the agent go: the lane goes now
    assert f"removed worktree {path}" in done.out, done.out + done.err
    assert not path.exists() and git(repo, "branch", "--list", branch) == ""


def test_cleanup_waits_for_a_writer_holding_the_state_lock_and_sees_its_change(
    repo: Path, cli: CliFn, worktrees: Path, tmp_path: Path
) -> None:
    ws, _ = _landed_lane(repo, cli, worktrees)
    second = commit(agent_tree(worktrees, 1), {"b.py": "B = 1\n"}, "feat: #21's work")
    assert cli("complete", "1").code == 0
    # the writer holds the state lock; as it lets go, #21 goes to the lane to land from it
    holder = _holding(repo, tmp_path, "state", f"21:{second}")
    cleaning = start_paradev(repo, "cleanup")
    time.sleep(0.5)  # cleanup is waiting for the lock by now
    assert cleaning.poll() is None
    (tmp_path / "release").write_text("go")
    holder.wait(timeout=30)
    out, err = cleaning.communicate(timeout=60)

    assert cleaning.returncode == 1, out + err
    path, branch = lanes.tree(ws, 1), lanes.branch(1)
    assert f"refused: lane {branch} ({path}): #21 still waits to land from it; kept" in out
    assert lanes.read(ws)[1].issue == 21
    assert git(repo, "rev-parse", branch) == second
    assert git(path, "rev-parse", "HEAD") == second


def test_the_dry_run_shows_each_task_waiting_on_its_lane_and_how_it_lands(
    repo: Path, cli: CliFn, worktrees: Path
) -> None:
    ws, first = _lane_for_11(repo, cli, worktrees)
    lane = {
        "agent": 1,
        "issue": 11,
        "head": first,
        "branch": "paradev/lane/agent-1",
        "worktree": str(lanes.tree(ws, 1)),
        "held": False,
    }

    def dry_lanes() -> list[dict[str, Any]]:
        shown = cli("merge", "--dry-run", "--json")
        assert shown.code == 0, shown.out + shown.err
        found: list[dict[str, Any]] = json.loads(shown.out)["lanes"]
        return found

    # agent 1 idle: this train lands its branch, which holds #11
    assert dry_lanes() == [{**lane, "lands": "branch"}]
    assert cli("start", "1").code == 0  # #21 starts while #11 waits on its lane
    assert dry_lanes() == [{**lane, "lands": "follow"}]
    text = cli("merge", "--dry-run")
    assert text.code == 0, text.out + text.err
    assert (
        f"agent 1: #11 waits to land from its lane paradev/lane/agent-1 ({first[:12]}); its agent "
        "works on its next task: paradev run's trains (merge --follow) land it from the lane, "
        "not this one"
    ) in text.out.splitlines()
    lanes.hold(ws, 1)  # its rebase conflicted while the agent was busy
    assert dry_lanes() == [{**lane, "held": True, "lands": "with next task"}]
    commit(agent_tree(worktrees, 1), {"b.py": "B = 1\n"}, "feat: #21's work")
    assert cli("complete", "1").code == 0  # idle again: its branch lands #11 and #21
    assert dry_lanes() == [{**lane, "held": True, "lands": "branch"}]
    assert cli("merge").code == 0
    assert dry_lanes() == []
    assert {ws.store.read().status(i) for i in (11, 21)} == {MERGED}


def test_a_held_lane_lands_with_the_next_task_each_commit_naming_its_own_task(
    repo: Path, cli: CliFn, worktrees: Path
) -> None:
    """A lane holds exactly one task's range: landed with the next task (held), each task
    still lands as its own commit with its own trailer, after a rewritten earlier landing."""
    ws, _ = _lane_for_11(repo, cli, worktrees, squash=True)
    assert cli("start", "1").code == 0
    tree = agent_tree(worktrees, 1)
    second = commit(tree, {"b.py": "B = 1\n"}, "feat: #21's work")
    assert cli("merge", "--follow").code == 0  # #11 lands from its lane, squashed
    assert cli("complete", "1").code == 0
    assert cli("assign", "1", "31", "agent 1's third task", "1").code == 0
    lane = lanes.open_lane(ws, ws.store.read(), 1, 21, second)  # as 'paradev run' does
    assert lane.start is not None  # #21's range starts after #11's original commit
    assert cli("start", "1").code == 0
    lanes.hold(ws, 1)  # its rebase conflicted while the agent worked on #31
    commit(tree, {"c.py": "C = 1\n"}, "feat: #31's work")
    assert cli("complete", "1").code == 0

    landed = cli("merge")  # the agent is idle: its branch lands #21 and #31

    assert landed.code == 0, landed.out + landed.err
    assert {ws.store.read().status(i) for i in (11, 21, 31)} == {MERGED}
    log = git(repo, "log", "--format=%s|%(trailers:key=Paradev-Issue,valueonly,separator=+)")
    landings = [line.rsplit("|", 1) for line in log.splitlines()[:3]]
    assert [trailers for _, trailers in landings] == ["31", "21", "11"]  # not "21+31" twice
    assert [subject[-5:] for subject, _ in landings] == ["(#31)", "(#21)", "(#11)"]


def test_a_lane_lands_only_its_own_task_when_the_next_one_completed_meanwhile(
    repo: Path, cli: CliFn, worktrees: Path
) -> None:
    ws, _ = _lane_for_11(repo, cli, worktrees)
    assert cli("start", "1").code == 0
    commit(agent_tree(worktrees, 1), {"b.py": "B = 1\n"}, "feat: #21's work")
    assert cli("complete", "1").code == 0  # #21 completed while #11 still waits on its lane

    from_lane = cli("merge", "--follow")  # #11 from its lane, then #21 joins the same train

    assert from_lane.code == 0, from_lane.out + from_lane.err
    state = ws.store.read()
    assert (state.status(11), state.status(21)) == (MERGED, MERGED)
    trailers = "%(trailers:key=Paradev-Issue,valueonly,separator=+)"
    landings = git(repo, "log", "-2", f"--format=%s|{trailers}", "main").splitlines()
    assert landings == ["feat: #21's work|21", "work 0|11"]  # each with its own trailer only
    assert git(repo, "rev-parse", "main^") == state.tasks[11].merged_commit


def test_the_train_is_told_of_completed_work_before_the_next_task_starts_and_lands_it_all(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    """#3 completes first: its train starts before agent 2's next task is launched (a launch
    costs a tenth of a second or more), and that one train lands every task of the run."""
    marker = str(tmp_path / "marks" / "next-started")
    lane_plan(repo, tmp_path, {4: {"touch": marker}, 1: {"wait_for": marker}})

    result = cli("run", "--json")

    assert result.code == 0, result.out + result.err
    events = [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]
    texts = [str(e.get("text", "")) for e in events]
    landing = next(i for i, t in enumerate(texts) if t.startswith("merge train: landing"))
    started = next(i for i, t in enumerate(texts) if t.startswith("agent 2: started #4"))
    assert "#3" in texts[landing] and landing < started, texts
    state = open_workspace(repo).store.read()
    assert {i: r.status for i, r in state.tasks.items()} == {i: MERGED for i in (1, 2, 3, 4)}
    four, three = state.tasks[4], state.tasks[3]
    assert four.start_commit == three.head_commit  # #4 started while #3 landed from its lane
    assert len(state.merge_history) == 1  # one train landed the whole run


DEPENDENCY_GATE = r"""
import json, os, subprocess, sys, time
from pathlib import Path

marks = Path(sys.argv[1])
common = subprocess.run(["git", "rev-parse", "--git-common-dir"], capture_output=True, text=True)
state = Path(common.stdout.strip()).resolve() / "paradev" / "state.json"

def status(issue):
    return json.loads(state.read_text())["tasks"].get(issue, {}).get("status")

agent = os.environ["PARADEV_AGENT"]
if agent == "1" and not (marks / "gating-1").exists():  # #1: agent 3's #5 completes meanwhile
    (marks / "gating-1").write_text("")
    deadline = time.monotonic() + 20
    while status("5") != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)
elif agent == "3" and not (marks / "gating-5").exists():  # #5: agent 2 completes #3 meanwhile
    (marks / "gating-5").write_text("")
    deadline = time.monotonic() + 3  # long enough for #4 to start, were it let start
    while not (marks / "started-4").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""

DEPENDENCY_PLAN = (
    PLAN.split("[[batches]]", maxsplit=1)[0].replace("count = 2", "count = 3")
    + """\
[[batches]]
name = "one"
  [[batches.tasks]]
  agent = 1
  issue = 1
  title = "the dependency"
  hours = 1
  [[batches.tasks]]
  agent = 2
  issue = 3
  title = "agent 2 first"
  hours = 1
  [[batches.tasks]]
  agent = 3
  issue = 5
  title = "agent 3's, gated while #3 completes"
  hours = 1

[[batches]]
name = "two"
  [[batches.tasks]]
  agent = 2
  issue = 4
  title = "needs #1, which lands after #3 started"
  hours = 1
  depends_on = [1]
"""
)


def test_a_next_task_whose_dependency_landed_after_the_branch_forked_waits_for_the_landing(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    """#1 lands while agent 2's #3 waits to land and its agent is free: #4 (depends on #1)
    may not start on agent 2's branch, which lacks #1, from a lane; it starts once #3
    landed, on base, which holds #1 and #3."""
    marks = tmp_path / "marks"
    marks.mkdir()
    agent, gate = tmp_path / "agent.py", tmp_path / "gate.py"
    agent.write_text(AGENT, encoding="utf-8")
    gate.write_text(DEPENDENCY_GATE, encoding="utf-8")
    spec = {
        5: {"wait_for": str(marks / "gating-1")},
        3: {"wait_for": str(marks / "gating-5")},
        4: {"touch": str(marks / "started-4")},
    }
    spec_file, notes = tmp_path / "spec.json", tmp_path / "notes.txt"
    spec_file.write_text(json.dumps({str(k): v for k, v in spec.items()}))
    command = json.dumps([sys.executable, str(agent), str(spec_file), str(notes)])
    gate_line = json.dumps(shlex.join([sys.executable, str(gate), str(marks)]))
    text = DEPENDENCY_PLAN.format(command=command, gate=gate_line, on_conflict="stop", merge="")
    commit(repo, {"plan.toml": text}, "chore: the plan")

    result = cli("run", "--json")

    assert result.code == 0, result.out + result.err
    state = open_workspace(repo).store.read()
    assert {i: r.status for i, r in state.tasks.items()} == {i: MERGED for i in (1, 3, 4, 5)}
    four = state.tasks[4]
    assert four.start_commit is not None
    assert _has(repo, four.start_commit, "work-1.txt")  # #4 began with the work it needs
    assert _has(repo, four.start_commit, "work-3.txt")
    assert "#4 waits: #3 to land: agent 2's branch does not hold its dependency #1" in result.out


def _lane_then_next_task(
    repo: Path, cli: CliFn, worktrees: Path, hold: bool = False
) -> tuple[Workspace, Result]:
    """#11 completed and on its lane (held with ``hold``), #21 started on it, then completed:
    the ws and ``status`` while #21 ran."""
    configure(repo)
    assert cli("setup").code == 0
    first = work(cli, worktrees, 1, {"a.py": "A = 1\n"})
    ws = open_workspace(repo)
    lanes.open_lane(ws, ws.store.read(), 1, 11, first)
    if hold:
        lanes.hold(ws, 1)  # e.g. its landing held conflict markers while #21 ran
    assert cli("start", "1").code == 0
    busy = cli("status")
    commit(agent_tree(worktrees, 1), {"b.py": "B = 1\n"}, "feat: #21's work")
    assert cli("complete", "1").code == 0  # a quick task
    return ws, busy


def test_a_lane_note_made_while_the_next_task_ran_is_kept_when_that_task_completed_since(
    repo: Path, cli: CliFn, worktrees: Path
) -> None:
    """The train's selection saw #21 in progress; by the time it said so, #21 had completed."""
    from paradev.order import busy_note
    from paradev.train import join

    ws, _ = _lane_then_next_task(repo, cli, worktrees)

    said = join.lane_notes(ws, [busy_note(1, 21), "agent 2: something else"], [1])

    assert said == [
        "agent 1: #11 lands from its lane while #21 is in progress",
        "agent 2: something else",
    ]


def test_status_says_a_held_lane_of_an_idle_agent_lands_from_its_branch(
    repo: Path, cli: CliFn, worktrees: Path
) -> None:
    _, busy = _lane_then_next_task(repo, cli, worktrees, hold=True)

    idle = cli("status")

    assert "held until the agent is idle" in busy.out
    assert "held until the agent is idle" not in idle.out
    assert "lands from parallel-dev/agent-1" in idle.out
