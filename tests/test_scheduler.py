"""``paradev run``: the pure schedule, then the whole loop with real agents, git and signals."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from paradev import runloop
from paradev.git import git_env
from paradev.plan import Plan, parse
from paradev.scheduler import Schedule, decide
from paradev.state import (
    COMPLETED,
    DROPPED,
    FAILED,
    GATE_FAILED,
    IN_PROGRESS,
    INTERRUPTED,
    MERGED,
    State,
)
from paradev.workspace import open_workspace
from tests.helpers import (
    Result,
    commit,
    git,
    gone,
    signal_and_wait,
    start_paradev,
    wait_for_file,
)

CliFn = Callable[..., Result]

# Two batches on two agents: 2 depends on 1 (other agent); 4 on 3 (same agent 1).
CHAIN = """
[project]
schedule = "{schedule}"
[agents]
count = 3
[[batches]]
name = "one"
  [[batches.tasks]]
  agent = 1
  issue = 1
  title = "first"
  hours = 1
  [[batches.tasks]]
  agent = 2
  issue = 2
  title = "needs 1"
  hours = 1
  depends_on = [1]
  [[batches.tasks]]
  agent = 3
  issue = 5
  title = "alone"
  hours = 1
[[batches]]
name = "two"
  [[batches.tasks]]
  agent = 1
  issue = 3
  title = "agent 1 again"
  hours = 1
  [[batches.tasks]]
  agent = 3
  issue = 4
  title = "needs 3"
  hours = 1
  depends_on = [3]
"""


def chain(tmp_path: Path, schedule: str = "flow") -> Plan:
    return parse(CHAIN.format(schedule=schedule), tmp_path / "plan.toml", tmp_path)


def state_with(**statuses: str) -> State:
    """A state whose task ``tN`` has the given status (agents from the CHAIN plan)."""
    agents = {1: 1, 2: 2, 3: 1, 4: 3, 5: 3}
    state = State()
    for name, status in statuses.items():
        issue = int(name[1:])
        state.task(issue, agents[issue]).status = status
    return state


def ready(plan: Plan, state: State) -> list[int]:
    return [t.issue for t in decide(plan, state).ready]


def test_flow_starts_every_task_whose_dependencies_landed_and_whose_agent_is_free(
    tmp_path: Path,
) -> None:
    plan = chain(tmp_path)
    first = decide(plan, State())
    assert [t.issue for t in first.ready] == [1, 5]
    assert first.waiting == {
        2: "dependency #1 (planned) to land",
        3: "agent 1 takes first #1",
        4: "agent 3 takes first #5",
    }
    # 1 completed but not landed: 2 still waits, and agent 1 waits for the train
    later = decide(plan, state_with(t1=COMPLETED, t5=MERGED))
    assert later.ready == ()
    assert later.landing == (1,)
    assert later.waiting[2] == "dependency #1 (completed) to land"
    assert later.waiting[3] == "agent 1 waits for the merge train to land #1"
    # 4 depends on 3, which has not started
    assert later.waiting[4] == "dependency #3 (planned) to land"
    # once 1 landed: 2 and 3 start together (no barrier in flow)
    assert ready(plan, state_with(t1=MERGED, t5=MERGED)) == [3, 2]


def test_batches_keep_a_barrier_until_the_earlier_batch_landed(tmp_path: Path) -> None:
    plan = chain(tmp_path, "batches")
    schedule = decide(plan, state_with(t1=MERGED, t5=MERGED, t2=IN_PROGRESS))
    assert [t.issue for t in schedule.ready] == []
    assert schedule.running == (2,)
    assert schedule.waiting[3] == "batch barrier: batch 'one' to land (#2)"
    # the same state in flow: agent 1's next task starts at once
    assert ready(chain(tmp_path), state_with(t1=MERGED, t5=MERGED, t2=IN_PROGRESS)) == [3]
    assert ready(plan, state_with(t1=MERGED, t5=MERGED, t2=MERGED)) == [3]


def test_a_failed_task_blocks_only_what_depends_on_it_or_follows_it_on_its_agent(
    tmp_path: Path,
) -> None:
    plan = chain(tmp_path)
    schedule = decide(plan, state_with(t1=FAILED), given_up={1})
    assert [t.issue for t in schedule.ready] == [5]
    assert schedule.blocked == {
        1: "it failed in this run",
        2: "it depends on #1, which cannot land in this run",
        3: "agent 1's earlier task #1 cannot land in this run",
        4: "it depends on #3, which cannot land in this run",
    }
    # a task that failed in an earlier run starts again
    assert ready(plan, state_with(t1=FAILED)) == [1, 5]
    # batches: everything after the failed batch is blocked, the rest of its batch goes on
    batches = decide(chain(tmp_path, "batches"), state_with(t1=GATE_FAILED))
    assert [t.issue for t in batches.ready] == [5]
    assert set(batches.blocked) == {1, 2, 3, 4}
    assert batches.blocked[1] == "its gate failed; it was set aside"


def test_a_dependency_on_a_dropped_task_blocks_with_the_way_out(tmp_path: Path) -> None:
    schedule = decide(chain(tmp_path), state_with(t1=DROPPED))
    assert schedule.blocked[2] == (
        "it depends on dropped #1 (remove it from depends_on, or reopen #1)"
    )
    assert [t.issue for t in schedule.ready] == [3, 5]


def test_nothing_is_left_to_start_run_or_land_once_all_landed(tmp_path: Path) -> None:
    plan = chain(tmp_path)
    done = decide(plan, state_with(t1=MERGED, t2=MERGED, t3=MERGED, t4=DROPPED, t5=MERGED))
    assert done == Schedule()


@pytest.mark.parametrize("value", ["fast", 3])
def test_a_bad_schedule_is_one_line_and_exit_2(
    value: object, repo: Path, cli: CliFn, snapshot: Callable[[], object]
) -> None:
    plan = repo / "plan.toml"
    text = plan.read_text(encoding="utf-8")
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    plan.write_text(text.replace("[project]", f"[project]\nschedule = {shown}", 1))
    before = snapshot()
    result = cli("status")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "project.schedule" in result.err and "'flow', 'batches'" in result.err
    assert snapshot() == before


# -- the loop, with real agents, real git and a real merge train -----------------------------

# A scripted agent: per issue, sleep, then commit work-<issue>.txt (or fail); every run
# appends "<issue> <pid>" to RUNS; SEEN notes whether each dependency's work was on base.
RUN_AGENT = r"""
import json, os, subprocess, sys, time
from pathlib import Path

spec = json.loads(Path(sys.argv[1]).read_text())
runs = Path(sys.argv[2])
issue = os.environ["PARADEV_ISSUE"]
mine = spec.get(issue, {})
with runs.open("a") as out:
    out.write(f"{issue} {os.getpid()}\n")
for dep in mine.get("check", []):
    seen = subprocess.run(["git", "cat-file", "-e", f"main:work-{dep}.txt"]).returncode == 0
    with runs.open("a") as out:
        out.write(f"{issue} saw {dep} on main: {seen}\n")
if "touch" in mine:
    Path(mine["touch"]).write_text("started\n")
if "wait_for" in mine:
    while not Path(mine["wait_for"]).exists():
        time.sleep(0.05)
time.sleep(mine.get("sleep", 0))
if mine.get("fail"):
    print("cannot do it", flush=True)
    sys.exit(3)
Path(f"work-{issue}.txt").write_text(f"issue {issue}\n")
if mine.get("shared"):
    Path("shared.txt").write_text(f"written by {issue}\n")
if mine.get("deps"):
    Path("deps.txt").write_text(f"changed by {issue}\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", f"feat: work on #{issue}"], check=True)
if "litter" in mine:  # left behind, untracked, after the commit
    Path(mine["litter"]).write_text("scratch\n")
"""

RUN_PLAN = """\
[project]
base = "main"
schedule = "{schedule}"

[agents]
count = 3
command = {command}
timeout = 60

[gate]
command = {gate}

{setup}
[[batches]]
name = "one"
  [[batches.tasks]]
  agent = 1
  issue = 1
  title = "first"
  hours = 1
  [[batches.tasks]]
  agent = 2
  issue = 2
  title = "needs 1"
  hours = 1
  depends_on = [1]
  [[batches.tasks]]
  agent = 3
  issue = 3
  title = "fails"
  hours = 1

[[batches]]
name = "two"
  [[batches.tasks]]
  agent = 3
  issue = 4
  title = "after the failure"
  hours = 1
  [[batches.tasks]]
  agent = 1
  issue = 5
  title = "agent 1 again"
  hours = 1
"""


def run_plan(
    repo: Path,
    tmp_path: Path,
    spec: dict[int, dict[str, Any]],
    schedule: str = "flow",
    gate: str = '""',
    setup: str = "",
) -> Path:
    """Write the run plan with the scripted agent (commit it), return the file of agent runs."""
    script = tmp_path / "run_agent.py"
    script.write_text(RUN_AGENT, encoding="utf-8")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({str(k): v for k, v in spec.items()}))
    runs = tmp_path / "runs.txt"
    command = json.dumps([sys.executable, str(script), str(spec_file), str(runs)])
    text = RUN_PLAN.format(schedule=schedule, command=command, gate=gate, setup=setup)
    commit(repo, {"plan.toml": text}, "chore: the run plan")
    return runs


def statuses(repo: Path) -> dict[int, str]:
    state = open_workspace(repo).store.read()
    return {issue: record.status for issue, record in state.tasks.items()}


def on_main(repo: Path) -> set[str]:
    return set(git(repo, "ls-tree", "--name-only", "main").split())


def test_a_dependent_starts_after_its_dependency_landed_and_a_failure_holds_up_nothing_else(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    runs = run_plan(repo, tmp_path, {2: {"check": [1]}, 3: {"fail": True}})
    result = cli("run")
    assert result.code == 1, result.out + result.err
    assert statuses(repo) == {1: MERGED, 2: MERGED, 3: FAILED, 5: MERGED}  # 4 never started
    assert {"work-1.txt", "work-2.txt", "work-5.txt"} <= on_main(repo)
    assert "work-3.txt" not in on_main(repo)
    state = open_workspace(repo).store.read()
    one, two = state.tasks[1], state.tasks[2]
    assert one.merged_commit and two.head_commit
    git(repo, "merge-base", "--is-ancestor", one.merged_commit, two.head_commit)  # built on it
    assert "2 saw 1 on main: True" in runs.read_text()
    started = [line.split()[0] for line in runs.read_text().splitlines() if "saw" not in line]
    assert sorted(started) == ["1", "2", "3", "5"]  # each once: a failed task is not retried
    assert "#3: exit code 3" in result.out
    assert "#4: agent 3's earlier task #3 cannot land in this run" in result.out
    assert "4 did not land" not in result.err and "#4 (assigned)" not in result.err
    assert "task(s) did not land" in result.err


def test_another_hosts_completed_work_no_train_lands_without_a_person_is_not_waited_for(
    tmp_path: Path,
) -> None:
    """Host "here" runs agent 1; agents 2 and 3 run elsewhere, #5 (agent 3) completed. A run
    waiting for #5 while the train that would land it needs a person would never end."""
    plan = chain(tmp_path)
    state = state_with(t1=MERGED, t2=MERGED, t3=MERGED, t5=COMPLETED)
    assert decide(plan, state, here={1}).elsewhere == (5, 4)  # its host's train lands it

    state.task(2, 2).status = FAILED  # agent 2's own host says why and what to do
    assert decide(plan, state, here={1}).blocked[2] == (
        "it failed on agent 2's host, whose next 'paradev run' starts it again once the cause "
        "is fixed"
    )
    state.tasks[5].completed_at = "2026-01-01T10:00:00+00:00"
    left_out = {"order": [3], "skipped": [3], "skip_reasons": {"3": "left out with --skip"}}
    later = {"id": "B", "order": [1], "skipped": [], "finished_at": "2026-01-01T10:09:00+00:00"}
    state.merge_history = [{"id": "A", **left_out, "finished_at": "2026-01-01T10:05:00+00:00"}]
    state.merge_history.append(later)  # a later train without agent 3 changes nothing
    skipped = decide(plan, state, here={1})
    assert skipped.elsewhere == ()  # nor #4, which agent 3 takes only after #5
    assert skipped.blocked[5] == "the merge train A set it aside: left out with --skip"
    assert skipped.blocked[4] == "agent 3's earlier task #5 cannot land in this run"
    state.tasks[5].completed_at = "2026-01-01T10:06:00+00:00"  # completed again since
    assert decide(plan, state, here={1}).elsewhere == (5, 4)
    state.merge_history.append({"id": "C", "order": [3, 1], "skipped": [], "finished_at": "x"})
    assert decide(plan, state, here={1}).elsewhere == (5, 4)  # a later train took agent 3

    state.train = {"id": "T", "status": "stopped", "stop": {"agent": 3}, "agents": {"3": {}}}
    stopped = decide(plan, state, here={1})
    assert stopped.elsewhere == ()
    assert stopped.blocked[5] == "the merge train T is stopped until a person resolves it"

    state.train["agents"]["3"]["handed_to"] = "box"  # agent 3's host resolves it: wait for it
    assert decide(plan, state, here={1}).elsewhere == (5, 4)
    state.train = {"id": "T", "status": "running", "agents": {}}
    assert decide(plan, state, here={1}).elsewhere == (5, 4)
    assert decide(plan, state).blocked == {}  # one host: its own run resolves what it can


def _landed_before_started(repo: Path, landed: int, started: int) -> bool:
    """Whether ``landed``'s work was on the branch when ``started`` began (from the refs)."""
    state = open_workspace(repo).store.read()
    merged, start = state.tasks[landed].merged_commit, state.tasks[started].start_commit
    assert merged and start
    ancestor = ["git", "merge-base", "--is-ancestor", merged, start]
    return subprocess.run(ancestor, cwd=repo, env=git_env(), check=False).returncode == 0


def test_flow_starts_an_agents_next_task_while_others_work_and_one_train_lands_both(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    marker = tmp_path / "five-started"
    run_plan(repo, tmp_path, {5: {"touch": str(marker)}, 3: {"wait_for": str(marker)}})
    result = cli("run")
    assert result.code == 0, result.out + result.err
    assert set(statuses(repo).values()) == {MERGED}
    assert not _landed_before_started(repo, 3, 5)  # #5 (batch two) began before #3 landed
    history = open_workspace(repo).store.read().merge_history
    trains = {i: h["id"] for h in history for e in h["landed"] for i in e["issues"]}
    assert trains[1] == trains[5]  # the train that landed #1 waited for agent 1's next task
    assert "not landed" not in result.out, result.out  # no outdated note from a train start
    assert [e["agent"] for h in history for e in h["landed"]].count(1) == 2


def test_batches_start_the_next_batch_only_once_the_earlier_one_landed(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    run_plan(repo, tmp_path, {3: {"sleep": 1.0}}, schedule="batches")
    result = cli("run")
    assert result.code == 0, result.out + result.err
    assert set(statuses(repo).values()) == {MERGED}
    for earlier in (1, 2, 3):
        for later in (4, 5):
            assert _landed_before_started(repo, earlier, later)
    # the train waits at the barrier for the next batch's work: it lands the whole run
    assert len(open_workspace(repo).store.read().merge_history) == 1


def _started(runs: Path, count: int, proc: subprocess.Popen[str]) -> dict[str, int]:
    """Issue -> agent pid, once ``count`` agents started (while ``proc`` runs)."""
    deadline = time.monotonic() + 60
    while True:
        text = runs.read_text() if runs.exists() else ""
        found = {line.split()[0]: int(line.split()[1]) for line in text.splitlines()}
        if len(found) >= count:
            return found
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the agents never started"
        time.sleep(0.05)


def run_status(repo: Path, *args: str) -> str:
    """``paradev ARGS`` in a process of its own (the run's snapshot names a live pid)."""
    argv = [sys.executable, "-m", "paradev", *args]
    return subprocess.run(argv, cwd=repo, capture_output=True, text=True, check=True).stdout


def _snapshot_running(repo: Path, issues: list[int]) -> dict[str, Any]:
    """``status --json`` once the live run's snapshot lists ``issues`` running.

    The run notes its launches (and adoptions) on its next poll.
    """
    deadline = time.monotonic() + 30
    while True:
        data: dict[str, Any] = json.loads(run_status(repo, "status", "--json"))
        if data.get("run", {}).get("running") == issues:
            return data
        assert time.monotonic() < deadline, data


def _supervisors(repo: Path) -> list[int]:
    folder = repo / ".git" / "paradev" / "agents"
    return [json.loads(p.read_text())["supervisor"] for p in sorted(folder.glob("agent-*.json"))]


def test_sigterm_stops_every_agent_and_records_their_tasks_interrupted(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    runs = run_plan(repo, tmp_path, {1: {"sleep": 60}, 3: {"sleep": 60}})
    paradev = start_paradev(repo, "run")
    agents = list(_started(runs, 2, paradev).values())
    supervisors = _supervisors(repo)
    assert len(supervisors) == 2
    data = _snapshot_running(repo, [1, 3])
    assert data["run"]["waiting"]["4"] == "agent 3 is working on #3"
    shown = run_status(repo, "status")
    assert f"paradev run (pid {paradev.pid}, schedule flow):" in shown
    assert "#2 waits for: dependency #1 (in_progress) to land" in shown
    assert "#5 waits for: agent 1 is working on #1" in shown

    err, survivors = signal_and_wait(paradev, signal.SIGTERM, agents + supervisors)

    assert survivors == []
    assert paradev.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert statuses(repo) == {1: INTERRUPTED, 3: INTERRUPTED}
    assert not (repo / ".git" / "paradev" / "run.json").exists()


def test_after_sigkill_the_next_run_adopts_the_agents_and_never_starts_a_second_copy(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    go1, go3 = tmp_path / "go-1", tmp_path / "go-3"
    runs = run_plan(repo, tmp_path, {1: {"wait_for": str(go1)}, 3: {"wait_for": str(go3)}})
    first = start_paradev(repo, "run")
    agents = _started(runs, 2, first)
    first.kill()  # SIGKILL: no cleanup; the agents live on under their supervisors
    first.communicate()
    try:
        assert not gone(agents["1"]) and not gone(agents["3"])
        go1.write_text("")  # agent 1 ends while no run watches: its supervisor keeps the code
        while not gone(agents["1"]):
            time.sleep(0.05)
        second = start_paradev(repo, "run")
        wait_for_file(repo / ".git" / "paradev" / "run.json", second)
        go3.write_text("")  # agent 3 ends under the second run
        out, err = second.communicate(timeout=120)
    finally:
        for pid in agents.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert second.returncode == 0, out + err
    assert "#3 was launched under a supervisor" in out
    lines = [line for line in runs.read_text().splitlines() if line.split()[0] in ("1", "3")]
    assert sorted(lines) == [f"1 {agents['1']}", f"3 {agents['3']}"]  # never a second copy
    assert set(statuses(repo).values()) == {MERGED}
    assert {"work-1.txt", "work-3.txt"} <= on_main(repo)


def test_setup_readies_each_worktree_before_its_first_task_and_again_when_inputs_change(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    counter = tmp_path / "setups.txt"
    note = "import os, sys; open(sys.argv[1], 'a').write(os.getcwd() + '\\n')"
    command = json.dumps([sys.executable, "-c", note, str(counter)])
    setup = f'[setup]\ncopy = [".env"]\ncommand = {command}\ninputs = ["deps.txt"]\n'
    commit(repo, {".gitignore": ".env\n", "deps.txt": "v1\n"}, "chore: deps")
    (repo / ".env").write_text("SECRET=1\n")
    run_plan(repo, tmp_path, {1: {"deps": True}}, setup=setup)  # #1 changes the input

    result = cli("run")

    assert result.code == 0, result.out + result.err
    runs = [Path(line).name for line in counter.read_text().splitlines()]
    state = open_workspace(repo).store.read()
    starts = [state.tasks[i].start_commit or "" for i in (3, 4)]
    agent_3_saw = {git(repo, "show", f"{commit}:deps.txt") for commit in starts}
    assert runs.count("agent-1") == 2  # before #1, and before #5: #1 changed deps.txt
    assert runs.count("agent-2") == 1  # #2 started after #1 landed: one input, one run
    assert runs.count("agent-3") == len(agent_3_saw)  # again only if deps.txt changed between
    for agent in (1, 2, 3):
        assert (set_up / f"agent-{agent}" / ".env").read_text() == "SECRET=1\n"


def test_a_task_whose_gate_fails_is_set_aside_and_unrelated_work_lands(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    eject = '[merge]\non_gate_failure = "eject"\n'
    run_plan(repo, tmp_path, {}, gate=json.dumps("test ! -f work-3.txt"), setup=eject)

    result = cli("run", "--json")

    assert result.code == 1
    events = [json.loads(line) for line in result.out.splitlines()]
    assert {"event", "at", "text"} <= set(events[0])
    assert statuses(repo) == {1: MERGED, 2: MERGED, 3: GATE_FAILED, 5: MERGED}
    assert {"work-1.txt", "work-2.txt", "work-5.txt"} <= on_main(repo)
    assert "work-3.txt" not in on_main(repo)
    summary = events[-1]
    assert summary["event"] == "summary" and summary["landed"] is False
    assert summary["statuses"] == {
        "1": MERGED,
        "2": MERGED,
        "3": GATE_FAILED,
        "4": "planned",
        "5": MERGED,
    }
    assert summary["notes"]["4"] == "agent 3's earlier task #3 cannot land in this run"
    merged = [e["issue"] for e in events if e["event"] == "task" and e["status"] == MERGED]
    assert sorted(merged) == [1, 2, 5]


def test_a_stopped_train_ends_the_run_and_the_next_run_says_how_to_go_on(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    run_plan(repo, tmp_path, {}, gate=json.dumps("test ! -f work-3.txt"))

    result = cli("run")

    assert result.code == 1
    stopped = next(line for line in result.out.splitlines() if "nothing more lands" in line)
    assert "'paradev merge' exited 1: " in stopped  # with the train's own last word
    assert statuses(repo)[3] == COMPLETED  # stopped on the gate: its work waits, kept
    assert "work-3.txt" not in on_main(repo)
    again = cli("run")
    assert again.code == 2
    assert again.err.count("\n") == 1 and "is stopped; resolve it first" in again.err


def test_a_train_refused_for_a_reason_waiting_cannot_fix_is_not_tried_again_and_again(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    run_plan(repo, tmp_path, {4: {"litter": "scratch.txt"}}, gate=json.dumps("true"))

    result = cli("run")

    assert result.code == 1
    refusal = "paradev: the gate cannot run in agent 3's worktree"
    assert result.out.count(refusal) == 1, result.out  # tried once, said once: in the stop line
    assert "#4: the merge train, which stopped: nothing more lands in this run" in result.out
    stopped = next(line for line in result.out.splitlines() if "nothing more lands" in line)
    assert "'paradev merge' exited 2: " in stopped
    assert "Do what it says, then run 'paradev run' again" in stopped  # no train to resolve
    assert "--continue" not in stopped
    assert statuses(repo)[4] == COMPLETED  # refused, not lost: it waits for the person
    assert (repo.parent / f"{repo.name}-worktrees" / "agent-3" / "scratch.txt").exists()


def test_a_conflicting_task_is_set_aside_and_the_rest_lands(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    eject = '[merge]\non_conflict = "eject"\n'
    run_plan(repo, tmp_path, {1: {"shared": True}, 3: {"shared": True}}, setup=eject)

    result = cli("run")

    assert result.code == 1
    done = statuses(repo)
    loser = 1 if done[1] == COMPLETED else 3  # whichever landed second conflicted
    winner = 4 - loser
    assert (done[winner], done[loser]) == (MERGED, COMPLETED)
    assert git(repo, "show", "main:shared.txt") == f"written by {winner}"
    assert f"#{loser}: set aside by the merge train" in result.out
    if loser == 3:  # agent 1's chain and #2 land; agent 3's next task never starts
        assert (done[2], done[5]) == (MERGED, MERGED) and 4 not in done
    else:  # #2 depends on #1, #5 follows it on agent 1; #4 follows the winner
        assert done[4] == MERGED and 2 not in done and 5 not in done


def test_a_conflict_its_agent_does_not_resolve_is_set_aside_and_the_rest_lands(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    """on_conflict = "agent": the scripted agent handed the conflict back commits the markers,
    so the train stops; unattended, the run leaves that agent out and lands the rest."""
    hand_back = '[merge]\non_conflict = "agent"\n'
    run_plan(repo, tmp_path, {1: {"shared": True}, 3: {"shared": True}}, setup=hand_back)

    result = cli("run")

    assert result.code == 1, result.out + result.err
    done = statuses(repo)
    loser = 1 if done[1] == COMPLETED else 3
    winner = 4 - loser
    assert (done[winner], done[loser]) == (MERGED, COMPLETED)
    assert git(repo, "show", "main:shared.txt") == f"written by {winner}"
    assert f"agent {loser_agent(loser)} did not resolve the" in result.out
    assert f"to land it: 'paradev reopen {loser}'" in result.out
    assert "nothing more lands" not in result.out
    state = open_workspace(repo).store.read()
    assert state.train is None, result.out  # no stopped train left for a person to find
    agent = loser_agent(loser)
    completed = [r.head_commit for r in state.tasks.values() if r.agent == agent]
    assert done[loser] == COMPLETED and all(completed)
    branch = f"parallel-dev/agent-{agent}"
    assert git(repo, "rev-parse", branch) == completed[-1]  # back at its completed commit
    tree = repo.parent / f"{repo.name}-worktrees" / f"agent-{agent}"
    assert git(tree, "status", "--porcelain") == ""  # no rebase or markers left behind
    # what follows the loser on its agent (it may have started: on_conflict = "agent" lets an
    # agent go on while its task lands) is set aside with it; what depends on it never starts
    if loser == 3:
        assert (done[2], done[5]) == (MERGED, MERGED) and done.get(4) in (None, COMPLETED)
    else:
        assert done[4] == MERGED and 2 not in done and done.get(5) in (None, COMPLETED)
    assert {f"work-{i}.txt" for i in done if done[i] != MERGED}.isdisjoint(on_main(repo))


def loser_agent(issue: int) -> int:
    return {1: 1, 3: 3}[issue]


def test_run_without_an_agent_command_is_one_line_and_exit_2(
    set_up: Path, cli: CliFn, snapshot: Callable[[], object]
) -> None:
    before = snapshot()
    result = cli("run")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert result.err.startswith("paradev: paradev run cannot launch the agents:")
    assert snapshot() == before


def test_run_before_setup_is_one_line_and_exit_2(
    repo: Path, tmp_path: Path, cli: CliFn, worktrees: Path, snapshot: Callable[[], object]
) -> None:
    run_plan(repo, tmp_path, {})
    before = snapshot()

    for argv in (["run"], ["run", "--detach"]):
        result = cli(*argv)

        assert result.code == 2, result.out + result.err
        assert result.err.count("\n") == 1, result.err
        assert result.err.startswith(f"paradev: no worktree for agent 1 at {worktrees}/agent-1, ")
        assert result.err.endswith("; run 'paradev setup' first\n")
        assert snapshot() == before
    assert not (repo / ".git" / "paradev" / "run.pid").exists()


def test_sigterm_also_stops_the_agents_a_run_adopted(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    runs = run_plan(repo, tmp_path, {1: {"sleep": 60}, 3: {"sleep": 60}})
    first = start_paradev(repo, "run")
    agents = list(_started(runs, 2, first).values())
    first.kill()
    first.communicate()
    supervisors = _supervisors(repo)
    second = start_paradev(repo, "run")
    _snapshot_running(repo, [1, 3])

    err, survivors = signal_and_wait(second, signal.SIGTERM, agents + supervisors)

    assert survivors == []
    assert second.returncode == 128 + signal.SIGTERM, err
    assert statuses(repo) == {1: INTERRUPTED, 3: INTERRUPTED}
    assert len(runs.read_text().splitlines()) == 2  # adopted, never started again


def test_an_agent_run_batch_left_running_is_never_started_again_by_run(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    runs = run_plan(repo, tmp_path, {1: {"sleep": 60}})
    batch = start_paradev(repo, "run-batch", "--agents", "1")
    agent = _started(runs, 1, batch)["1"]
    batch.kill()  # SIGKILL: its agent lives on, with no supervisor
    batch.communicate()
    try:
        refused = cli("run")
        assert refused.code == 2
        assert refused.err.count("\n") == 1
        assert f"agent 1 is still running #1 (pid {agent}), launched by" in refused.err
        assert statuses(repo) == {1: IN_PROGRESS}
        assert len(runs.read_text().splitlines()) == 1
    finally:
        os.killpg(agent, signal.SIGKILL)


# -- run --detach ------------------------------------------------------------------------------


def test_a_detached_run_that_could_not_start_is_refused_before_it_detaches(
    set_up: Path, repo: Path, cli: CliFn, snapshot: Callable[[], object]
) -> None:
    before = snapshot()
    result = cli("run", "--detach")
    assert result.code == 2
    assert result.err.startswith("paradev: paradev run cannot launch the agents:")
    assert snapshot() == before
    assert not (repo / ".git" / "paradev" / "run.pid").exists()


def test_a_detached_run_lands_the_plan_and_wait_gives_its_exit_code(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    run_plan(repo, tmp_path, {2: {"check": [1]}, 3: {"fail": True}})
    started = cli("run", "--detach")
    assert started.code == 0, started.err
    assert "in the background" in started.out
    waited = cli("wait")
    assert waited.code == 1, waited.out + waited.err  # #3 fails: the run's own exit code
    assert statuses(repo) == {1: MERGED, 2: MERGED, 3: FAILED, 5: MERGED}
    log = cli("logs")
    assert log.code == 0
    assert "#3: exit code 3" in log.out


def test_a_detached_json_run_says_so_in_json_and_logs_its_events_as_json(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    run_plan(repo, tmp_path, {})

    started = cli("run", "--detach", "--json")

    assert started.code == 0, started.err
    (event,) = [json.loads(line) for line in started.out.splitlines()]
    assert event["event"] == "detached" and isinstance(event["pid"], int)
    assert event["log"] == str(repo / ".git" / "paradev" / "run.log")
    assert cli("wait").code == 0
    logged = [json.loads(line) for line in Path(event["log"]).read_text().splitlines()]
    assert logged[-1]["event"] == "summary" and logged[-1]["landed"] is True


def test_with_overlap_an_agent_starts_its_next_task_while_the_previous_one_waits_to_land(
    tmp_path: Path,
) -> None:
    plan = chain(tmp_path)
    landing = decide(plan, state_with(t1=COMPLETED, t5=MERGED), overlap=True)
    assert [t.issue for t in landing.ready] == [3]  # agent 1's next: it does not depend on 1
    assert landing.landing == (1,)
    assert landing.waiting[2] == "dependency #1 (completed) to land"
    # a next task that depends on the previous one, directly or through others, waits for it
    text = "[agents]\ncount = 2\n[[batches]]\nname = 'b'\n" + "".join(
        f"  [[batches.tasks]]\n  agent = {a}\n  issue = {i}\n  title = 't'\n"
        f"  hours = 1\n  depends_on = {d}\n"
        for a, i, d in ((1, 1, []), (1, 2, [1]), (2, 9, [1]), (2, 3, []), (1, 4, [9]))
    )
    mine = parse(text, tmp_path / "plan.toml", tmp_path)
    state = State()
    state.task(1, 1).status = COMPLETED
    direct = decide(mine, state, overlap=True)
    assert direct.ready == ()  # #9 (agent 2) needs #1 too; #3 comes after #9 on agent 2
    assert direct.waiting[2] == "dependency #1 (completed) to land"
    state.task(2, 1).status = MERGED
    through = decide(mine, state, overlap=True)
    assert through.waiting[4] == "dependency #9 (planned) to land"
    assert 4 not in [t.issue for t in through.ready]
    # one task at most waits so: with two waiting, the agent's branch lands both first
    both = decide(plan, state_with(t1=COMPLETED, t3=COMPLETED, t5=MERGED), overlap=True)
    assert both.landing == (1, 3) and not [t for t in both.ready if t.agent == 1]
    # a held task waits for its agent's running next task, and lands with it
    held = decide(plan, state_with(t1=COMPLETED, t3=IN_PROGRESS), overlap=True, held={1})
    assert held.running == (3,) and 1 not in held.landing
    assert held.waiting[1] == "held: it lands with #3 once agent 1 is idle"
    idle = decide(plan, state_with(t1=COMPLETED), overlap=True, held={1})
    assert idle.landing == (1,) and 3 not in [t.issue for t in idle.ready]
    # without overlap (batches, the merge queue, hosts) the agent waits for the landing
    assert [t.issue for t in decide(plan, state_with(t1=COMPLETED, t5=MERGED)).ready] == []


def test_a_dependent_started_while_the_train_lands_joins_that_train(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    # every agent is idle while #1 is gated; #2 (needing #1) starts once it landed and
    # completes while the train still lands the others: the train waits for it
    run_plan(repo, tmp_path, {2: {"sleep": 4}}, gate='"sleep 1"')
    result = cli("run", "--json")
    assert result.code == 0, result.out + result.err
    assert set(statuses(repo).values()) == {MERGED}
    history = open_workspace(repo).store.read().merge_history
    assert len(history) == 1, [[e["issues"] for e in h["landed"]] for h in history]
    events = [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]
    texts = [str(e.get("text", "")) for e in events]
    landed_1 = texts.index("#1 (agent 1): merged")
    assert any("started #2" in t for t in texts[landed_1:])  # after its dependency landed


def test_a_refusal_is_told_without_its_advice_and_its_lock_file() -> None:
    from paradev.runloop import _refusal

    lines = [
        "merge: something",
        "paradev: agent 1 is busy: paradev run (pid 7) holds it; wait for it to finish "
        "(/r/.git/paradev/agent-1.lock is locked)",
    ]
    assert _refusal(lines) == "agent 1 is busy: paradev run (pid 7) holds it"
    assert _refusal(["no word from it"]) == "refused"


def _waiting_paradev_children(parent: int) -> int:
    """How many children of ``parent`` run ``paradev.warm`` (a train, or one waiting to be)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            count += ppid == parent and b"paradev.warm" in argv
    return count


def test_while_a_train_lands_no_second_paradev_waits_beside_it(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    """The train lands all that completes meanwhile: a standby process beside it would mostly
    import paradev and exit unused, taking CPU from the train and the agents."""
    gating, release = tmp_path / "gating", tmp_path / "release"
    gate = f'"echo x > {gating}; while [ ! -e {release} ]; do sleep 0.05; done"'
    run_plan(repo, tmp_path, {}, gate=gate)
    paradev = start_paradev(repo, "run")
    try:
        wait_for_file(gating, paradev)  # the first train gates its first task
        waiting = _waiting_paradev_children(paradev.pid)
    finally:
        release.write_text("go\n")
        out, err = paradev.communicate(timeout=120)
    assert waiting == 1  # the train alone
    assert paradev.returncode == 0, out + err
    assert set(statuses(repo).values()) == {MERGED}


def test_the_run_loads_no_merge_train_module_before_its_first_launches() -> None:
    """The first agents wait for every module ``paradev run`` loads before it launches them:
    the train's package (a fifth of those), the leases of [agents] hosts and OpenSSL's
    hashes load later, when needed (``runloop._load_train``: after the first launches)."""
    root = Path(__file__).resolve().parent.parent
    code = "import sys, paradev.cli, paradev.handlers, paradev.runloop; print(*sys.modules)"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "paradev.runloop" in loaded and "paradev.runner" in loaded
    late = {"hashlib", "paradev.tasklease", "paradev.lease"} & set(loaded)
    assert not late and not [m for m in loaded if m.startswith("paradev.train")]


def test_a_run_whose_agents_all_work_quietly_does_not_look_at_the_state_ten_times_a_second(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn, mocker: MockerFixture
) -> None:
    """While no child ends and no train writes, only an agent's deadline or something
    unannounced (hosts, an adopted agent) can bring news: the loop sleeps up to a second
    instead of a poll's tenth. Each agent's end still wakes it at once, and the plan lands."""
    release = tmp_path / "release"
    spec = {i: {"touch": str(tmp_path / f"up-{i}"), "wait_for": str(release)} for i in (1, 3)}
    run_plan(repo, tmp_path, spec)
    looks = mocker.spy(runloop.Run, "_state")
    window: list[int] = []

    def measure_then_release() -> None:
        for issue in (1, 3):  # the tasks that start first (agents 1 and 3)
            wait_for_file(tmp_path / f"up-{issue}")
        window.append(looks.call_count)
        time.sleep(3)  # the window measured: every agent at work, nothing to do
        window.append(looks.call_count)
        release.write_text("go\n")

    helper = threading.Thread(target=measure_then_release)
    helper.start()
    result = cli("run")
    helper.join()

    assert result.code == 0, result.out + result.err
    assert set(statuses(repo).values()) == {MERGED}
    assert window[1] - window[0] <= 8  # a poll every 0.1 s: about 30
