"""Machine-readable outcomes on real repositories: ``merge --json`` and ``check --json``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.helpers import Result, agent_tree, commit, git, write
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
    state = json.loads((repo / ".git" / "paradev" / "state.json").read_text())
    assert again.json()["stop"]["agent"] == state["train"]["stop"]["agent"]


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
