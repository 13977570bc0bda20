"""Machine-readable outcomes on real repositories: ``merge --json`` and ``check --json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import test_runner
from tests.helpers import Result, agent_tree, commit, git, state_files, write
from tests.test_report import stopped_train
from tests.test_train import configure, work

Cli = Callable[..., Result]


def test_merge_json_names_the_conflict_it_stopped_on(repo: Path, cli: Cli, worktrees: Path) -> None:
    configure(repo)
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"src/util.py": "VALUE = 'one'\n"})
    work(cli, worktrees, 2, {"src/util.py": "VALUE = 'two'\n"})

    result = cli("merge", "--json")

    assert result.code == 1
    data = result.json()  # stdout holds only the JSON; progress went to stderr
    assert "merge train" in result.err and "merge train stopped" in result.err
    assert data["status"] == "stopped"
    (landed,) = data["landed"]
    stop = data["stop"]
    assert {landed["agent"], stop["agent"]} == {1, 2}
    assert stop["reason"] == "conflict"
    assert stop["files"] == ["src/util.py"]
    assert stop["hunks"] == {"src/util.py": [[1, 5]]}
    assert stop["gate_exit"] is None and stop["gate_log"] is None
    assert stop["worktree"] == str(agent_tree(worktrees, stop["agent"]))

    tree = agent_tree(worktrees, stop["agent"])
    write(tree, {"src/util.py": "VALUE = 'both'\n"})
    git(tree, "add", "src/util.py")
    done = cli("merge", "--continue", "--json")

    assert done.code == 0, done.err
    finished = done.json()
    assert finished["status"] == "done" and finished["stop"] is None
    assert [e["agent"] for e in finished["landed"]] == finished["order"]


def test_merge_json_gives_the_gate_exit_code_and_log(repo: Path, cli: Cli, worktrees: Path) -> None:
    configure(repo, gate="echo nope; exit 3")
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"one.py": "1\n"})

    result = cli("merge", "--json")

    assert result.code == 1
    stop = result.json()["stop"]
    assert stop["reason"] == "gate" and stop["gate_exit"] == 3
    assert Path(stop["gate_log"]).read_text().strip() == "nope"
    assert stop["files"] == [] and stop["hunks"] == {}

    skipped = cli("merge", "--skip", "--json").json()
    assert skipped["status"] == "done" and skipped["skipped"] == [1]


def test_merge_json_with_nothing_to_land_and_dry_run(repo: Path, cli: Cli, worktrees: Path) -> None:
    configure(repo)
    assert cli("setup").code == 0

    nothing = cli("merge", "--json")
    assert nothing.code == 0 and nothing.json()["status"] == "nothing"

    work(cli, worktrees, 1, {"one.py": "1\n"})
    dry = cli("merge", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    (step,) = dry.json()["steps"]
    assert step["agent"] == 1 and step["outcome"] == "land" and step["commits"] == 1


def test_stopped_train_json_matches_the_state(repo: Path, cli: Cli, worktrees: Path) -> None:
    stopped_train(repo, cli, worktrees)
    again = cli("merge", "--continue", "--json")  # the conflict is still unresolved
    assert again.code == 1
    state = state_files(repo)
    assert again.json()["stop"]["agent"] == state["train"]["stop"]["agent"]

    aborted = cli("merge", "--abort", "--json")

    assert aborted.code == 0, aborted.err
    data = aborted.json()
    assert data["status"] == "aborted" and data["stop"] is None
    assert [e["agent"] for e in data["landed"]] == [e["agent"] for e in state["train"]["landed"]]


def test_check_json(set_up: Path, cli: Cli) -> None:
    commit(agent_tree(set_up, 2), {"src/app.py": "changed\n"})

    taken = cli("check", "src/app.py", "--agent", "1", "--json")
    free = cli("check", "src/util.py", "--agent", "1", "--json")

    assert taken.code == 1
    assert taken.json() == {
        "paths": ["src/app.py"],
        "claimed": True,
        "claims": [{"path": "src/app.py", "agent": 2, "where": "branch"}],
        "agents": [2],
    }
    assert free.code == 0
    assert free.json() == {"paths": ["src/util.py"], "claimed": False, "claims": [], "agents": []}


def scripted_agents(repo: Path, tmp_path: Path, behaviour: dict[int, str]) -> None:
    """agents.command: the runner tests' scripted agent (commits, fails, ...) per issue."""
    script = tmp_path / "agent.py"
    script.write_text(test_runner.AGENT, encoding="utf-8")
    spec = tmp_path / "behaviour.json"
    spec.write_text(json.dumps({str(k): v for k, v in behaviour.items()}))
    command = [sys.executable, str(script), str(spec), str(tmp_path / "record")]
    test_runner.configure(repo, command=command, timeout=60)


def events(result: Result) -> list[dict[str, Any]]:
    lines = result.out.splitlines()
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_run_batch_json_prints_one_event_per_line(
    set_up: Path, repo: Path, cli: Cli, tmp_path: Path
) -> None:
    scripted_agents(repo, tmp_path, {12: "fail"})

    result = cli("run-batch", "--json")

    assert result.code == 1
    seen = events(result)
    assert all(isinstance(e["at"], str) for e in seen)
    tasks = {e["issue"]: e for e in seen if e["event"] == "task"}
    assert tasks[11]["status"] == "completed" and tasks[13]["status"] == "completed"
    assert tasks[12]["status"] == "failed" and Path(tasks[12]["log"]).is_file()
    assert seen[-1] == {**seen[-1], "event": "batch", "completed": 2, "not_completed": 1}
    states = {(e["agent"], e["state"]) for e in seen if e["event"] == "state"}
    assert {agent for agent, _ in states} == {1, 2, 3}
    assert "#12" in result.err  # the failure is still said on stderr, exit 1


def test_run_batch_json_without_launching_and_dry_run(set_up: Path, cli: Cli) -> None:
    dry = cli("run-batch", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert {e["event"] for e in events(dry)} == {"plan"}

    started = cli("run-batch", "--json")  # no agents.command: start the tasks only

    assert started.code == 0, started.err
    by_agent = {e["agent"]: e for e in events(started) if e["event"] == "started"}
    assert sorted(by_agent) == [1, 2, 3]
    assert by_agent[1]["issue"] == 11 and by_agent[1]["branch"] == "parallel-dev/agent-1"
    assert Path(by_agent[1]["prompt"]).is_file()
