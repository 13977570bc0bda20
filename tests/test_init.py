"""``paradev init``: the example plan, the invoke tasks.py, the CI workflow; never overwriting."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from paradev import init as init_mod
from paradev.plan import parse
from tests.helpers import Result

Cli = Callable[..., Result]
Snapshot = Callable[[], dict[str, object]]
BIN = Path(sys.executable).parent


@pytest.fixture
def bare(repo: Path) -> Path:
    """The test repository without its plan: where a new user starts."""
    (repo / "plan.toml").unlink()
    return repo


def read_plan(repo: Path) -> dict[str, Any]:
    return tomllib.loads((repo / "plan.toml").read_text(encoding="utf-8"))


def test_init_writes_the_commented_example_plan_ready_to_use(bare: Path, cli: Cli) -> None:
    result = cli("init")
    assert result.code == 0, result.err
    assert result.out.startswith(f"wrote {bare / 'plan.toml'}: the commented example plan for 3")
    text = (bare / "plan.toml").read_text(encoding="utf-8")
    assert text.startswith("# Written by `paradev init`.")
    assert "# The command run-batch launches in each agent's worktree" in text  # comments kept
    data = read_plan(bare)
    assert data["agents"]["command"] == []  # never the demo's scripted agent on a real project
    assert (data["agents"]["timeout"], data["gate"]["timeout"]) == (5400, 1800)
    assert data["merge"]["on_conflict"] == "stop"  # no agent command to hand a conflict to
    assert [t["issue"] for b in data["batches"] for t in b["tasks"]] == [
        101,
        102,
        103,
        104,
        105,
        106,
    ]
    status = cli("status", "--json")
    assert status.code == 0, status.err
    assert list(status.json()["agents"]) == ["1", "2", "3"]


@pytest.mark.parametrize("agents", [1, 2, 5, 1000])
def test_init_agents_sets_the_count_and_deals_the_tasks_to_them(
    bare: Path, cli: Cli, agents: int
) -> None:
    assert cli("init", "--agents", str(agents)).code == 0
    data = read_plan(bare)
    assert data["agents"]["count"] == agents
    tasks = [t for b in data["batches"] for t in b["tasks"]]
    assert len(tasks) == 6 and all(1 <= t["agent"] <= agents for t in tasks)
    assert {t["agent"] for t in tasks} == set(range(1, min(agents, 3) + 1))
    assert cli("estimate").code == 0


def test_init_never_overwrites_a_plan(repo: Path, cli: Cli, snapshot: Snapshot) -> None:
    before = snapshot()
    result = cli("init", "--agents", "2")
    assert result.code == 2
    assert result.err == (
        f"paradev: {repo / 'plan.toml'} already exists; paradev init never overwrites it: "
        "it is your plan: edit it, or remove it to start again\n"
    )
    assert snapshot() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agents", "0"], "--agents must be > 0, got '0'"),
        (["--agents", "1001"], "--agents must be from 1 to 1,000, got 1001"),
        (["--agents", "two"], "--agents must be a whole number, got 'two'"),
        (["--ci", "gitlab"], "--ci must be one of github, got 'gitlab'"),
        (["--invoke", "--agents", "2"], "--agents is for the plan"),
    ],
)
def test_bad_init_arguments_write_nothing(
    bare: Path, cli: Cli, args: list[str], message: str
) -> None:
    result = cli("init", *args)
    assert result.code == 2
    assert result.err.startswith(f"paradev: {message}") and result.err.count("\n") == 1
    assert sorted(p.name for p in bare.iterdir()) == [".git", "README.md", "src", "tests"]


# -- invoke -------------------------------------------------------------------------------------


def invoke_list(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "invoke"), "--list"], cwd=repo, capture_output=True, text=True, check=False
    )


def test_init_invoke_writes_a_tasks_py_that_invoke_runs(repo: Path, cli: Cli) -> None:
    result = cli("init", "--invoke")
    assert result.code == 0, result.err
    assert result.out == f"wrote {repo / 'tasks.py'}: 'invoke --list' shows paradev's commands\n"
    assert "from paradev.tasks import ns" in (repo / "tasks.py").read_text()
    listed = invoke_list(repo)
    assert listed.returncode == 0, listed.stderr
    assert {"status", "run-batch", "merge", "init"} <= {
        line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()
    }


def test_init_invoke_keeps_an_existing_tasks_py_and_its_advice_works(repo: Path, cli: Cli) -> None:
    own = "from invoke import Collection, task\n\n\n@task\ndef hello(c):\n    print('hi')\n\n\n"
    own += "ns = Collection(hello)\n"
    (repo / "tasks.py").write_text(own)
    result = cli("init", "--invoke")
    assert result.code == 2
    assert "tasks.py already exists; paradev init never overwrites it" in result.err
    assert 'ns.add_collection(paradev_ns, name="paradev")' in result.err
    assert (repo / "tasks.py").read_text() == own
    advice = result.err.split("add paradev's commands to it: ")[1]
    import_line, add_line = (part.strip("' ") for part in advice.split(" (then")[0].split(" and "))
    (repo / "tasks.py").write_text(own + f"{import_line}\n{add_line}\n")
    names = {line.split()[0] for line in invoke_list(repo).stdout.splitlines()[1:] if line.strip()}
    assert {"hello", "paradev.status", "paradev.merge"} <= names


# -- CI -----------------------------------------------------------------------------------------


def with_remote(repo: Path, prefix: str = "parallel-dev/agent-") -> None:
    plan = (repo / "plan.toml").read_text()
    plan = plan.replace(
        'base = "main"', f'base = "main"\nremote = "origin"\nbranch_prefix = {json.dumps(prefix)}'
    )
    (repo / "plan.toml").write_text(plan)


def load_yaml(path: Path) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with the GitHub workflow schema it ships (no network needed)."""
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_init_ci_github_writes_a_valid_workflow(repo: Path, cli: Cli) -> None:
    with_remote(repo)
    result = cli("init", "--ci", "github")
    assert result.code == 0, result.err
    path = repo / ".github/workflows/paradev.yml"
    checked = schema_check(path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    flow = load_yaml(path)
    assert flow["on"]["push"]["branches"] == ["parallel-dev/agent-*"]
    assert "workflow_dispatch" in flow["on"]
    assert flow["permissions"] == {"contents": "read"}
    check, train = flow["jobs"]["check"], flow["jobs"]["merge-train"]
    assert check["permissions"] == {"contents": "read"}
    assert train["permissions"] == {"contents": "write"}
    assert check["if"] == "github.event_name == 'push'"
    assert train["if"] == "github.event_name == 'workflow_dispatch'"
    for job in (check, train):
        checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
        assert checkout["with"]["fetch-depth"] == 0
        runs = [s.get("run", "") for s in job["steps"]]
        assert 'python -m pip install "$PARADEV_SOURCE"' in runs
    check_runs = [s.get("run") for s in check["steps"]]
    assert "paradev conflicts --remote --check" in check_runs
    assert not any("Gate" in s.get("name", "") for s in check["steps"])  # gate.command is ""
    assert "paradev merge --push" in [s.get("run") for s in train["steps"]]


def test_the_workflow_runs_the_plans_gate_and_matches_its_branch_prefix(
    repo: Path, cli: Cli
) -> None:
    with_remote(repo, prefix="team+x/agent-")
    plan = (repo / "plan.toml").read_text().replace('command = ""', 'command = ["make", "a b"]')
    (repo / "plan.toml").write_text(plan)
    assert cli("init", "--ci", "github").code == 0, cli("doctor").out
    path = repo / ".github/workflows/paradev.yml"
    assert schema_check(path).returncode == 0
    flow = load_yaml(path)
    assert flow["on"]["push"]["branches"] == ["team\\+x/agent-*"]  # + escaped for GitHub
    assert "make 'a b'" in [s.get("run") for s in flow["jobs"]["check"]["steps"]]


def test_the_schema_check_does_refuse_a_broken_workflow(repo: Path, cli: Cli) -> None:
    with_remote(repo)
    assert cli("init", "--ci", "github").code == 0
    path = repo / ".github/workflows/paradev.yml"
    path.write_text(path.read_text().replace("runs-on:", "runs_on:"))
    assert schema_check(path).returncode == 1


def file_in_the_way(repo: Path) -> None:
    with_remote(repo)
    (repo / ".github").write_text("a file, where the workflows folder belongs")


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda repo: None, 'set project.remote = "origin" in plan.toml'),
        (lambda repo: (repo / "plan.toml").unlink(), "not found: run 'paradev init' first"),
        (file_in_the_way, ".github/workflows/paradev.yml: Not a directory"),
    ],
)
def test_init_ci_refuses_what_it_cannot_write_and_changes_nothing(
    repo: Path, cli: Cli, prepare: Callable[[Path], object], message: str
) -> None:
    prepare(repo)
    result = cli("init", "--ci", "github")
    assert result.code == 2
    assert message in result.err and result.err.count("\n") == 1, result.err
    assert not (repo / ".github" / "workflows").exists()


def test_init_ci_never_overwrites_a_workflow(repo: Path, cli: Cli) -> None:
    with_remote(repo)
    path = repo / ".github/workflows/paradev.yml"
    path.parent.mkdir(parents=True)
    path.write_text("mine\n")
    result = cli("init", "--ci", "github")
    assert result.code == 2 and "paradev.yml already exists" in result.err
    assert path.read_text() == "mine\n"


def test_the_workflow_installs_paradev_from_the_given_source(repo: Path, cli: Cli) -> None:
    with_remote(repo)
    plan = parse((repo / "plan.toml").read_text(), repo / "plan.toml", repo)
    text = init_mod.github_workflow(plan, "git+https://example.invalid/paradev@abc123")
    assert 'PARADEV_SOURCE: "git+https://example.invalid/paradev@abc123"' in text
    result = cli("init", "--ci", "github")  # this paradev is an editable install: no URL
    assert "set PARADEV_SOURCE in paradev.yml" in result.out
    flow = load_yaml(repo / ".github/workflows/paradev.yml")
    assert flow["env"]["PARADEV_SOURCE"].startswith("SET-ME")


def test_the_starter_plan_is_valid_for_every_agent_count(tmp_path: Path) -> None:
    for agents in (None, 1, 3, 4):
        parse(init_mod.starter_plan(agents), tmp_path / "plan.toml", tmp_path / "project")
