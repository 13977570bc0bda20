"""[agents] hosts: host identity, setup and run-batch per host, the state shared or kept local."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from paradev.errors import PlanError
from paradev.git import Git
from paradev.hosts import HOST_CONFIG, HOST_ENV, host_of, owners, this_host
from paradev.lease import TRAIN, Lease
from paradev.plan import parse
from paradev.shared import STATE_REF
from paradev.state import StateStore
from tests.conftest import PLAN
from tests.helpers import Result, commit, git, work

CliFn = Callable[..., Result]
HOSTS_LINE = "hosts = { laptop = [1, 2], box = [3] }\n"

# A real agent: commits one file named after its issue, then exits.
AGENT = """
import os, subprocess
from pathlib import Path
issue = os.environ["PARADEV_ISSUE"]
Path(f"done-{issue}.txt").write_text(issue + "\\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", f"work on #{issue}"], check=True)
"""


def plan_text(hosts: str = HOSTS_LINE, remote: str = 'remote = "origin"\n') -> str:
    text = PLAN.replace('base = "main"\n', f'base = "main"\n{remote}')
    return text.replace("count = 3\n", f"count = 3\n{hosts}")


@pytest.fixture
def planned(hosts: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The three clones with the shared plan (laptop: agents 1, 2; box: 3; tower: none)."""
    monkeypatch.delenv(HOST_ENV, raising=False)
    commit(hosts["laptop"], {"plan.toml": plan_text()}, "share the plan between hosts")
    git(hosts["laptop"], "push", "-q", "origin", "main")
    for host in ("box", "tower"):
        git(hosts[host], "pull", "-q", "--ff-only")
    return hosts


def agents_run(clone: Path, source: str, tmp_path: Path) -> None:
    """The plan's agents become the real script ``source`` (committed on ``clone``'s main)."""
    script = tmp_path / "agent.py"
    script.write_text(source, encoding="utf-8")
    text = plan_text().replace(
        "count = 3\n", f"count = 3\ncommand = {json.dumps([sys.executable, str(script)])}\n"
    )
    commit(clone, {"plan.toml": text}, "agents run a script")


def worktree_folders(clone: Path) -> list[str]:
    root = clone.parent / "project-worktrees"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def remote_state(clone: Path) -> Any:
    proc = git(clone, "ls-remote", "origin", STATE_REF)
    if not proc:
        return None
    git(clone, "fetch", "-q", "origin", f"+{STATE_REF}:refs/test/state")
    return json.loads(git(clone, "cat-file", "blob", "refs/test/state:state.json"))


# -- the plan ---


@pytest.mark.parametrize(
    ("hosts", "remote", "problem"),
    [
        ("hosts = { a = [1, 4] }\n", 'remote = "origin"\n', "agents.hosts.a: expected a list of"),
        ("hosts = { a = [1], b = [2, 1] }\n", 'remote = "origin"\n', "agent 1 is also on host"),
        ("hosts = { a = [1] }\n", "", "agents.hosts: hosts share the plan through the git remote"),
        ('hosts = { "a b" = [1] }\n', 'remote = "origin"\n', "a host name is letters"),
        ("hosts = { a = 1 }\n", 'remote = "origin"\n', "agents.hosts.a: expected a list"),
        ("hosts = [1]\n", 'remote = "origin"\n', "agents.hosts: expected a table"),
    ],
)
def test_bad_hosts_are_refused_in_one_line(hosts: str, remote: str, problem: str) -> None:
    with pytest.raises(PlanError, match=problem) as caught:
        parse(plan_text(hosts, remote), Path("plan.toml"))
    assert "\n" not in str(caught.value)


def test_hosts_are_read_and_an_empty_table_means_one_machine() -> None:
    plan = parse(plan_text(), Path("plan.toml"))
    assert plan.hosts == {"laptop": (1, 2), "box": (3,)}
    assert parse(PLAN, Path("plan.toml")).hosts == {}


def test_the_host_of_each_agent_comes_from_one_map() -> None:
    plan = parse(plan_text("hosts = { laptop = [1, 2], box = [3], tower = [] }\n"), Path("p"))
    assert owners(plan) == {1: "laptop", 2: "laptop", 3: "box"}
    assert (host_of(plan, 3), host_of(plan, 4)) == ("box", None)
    alone = parse(PLAN, Path("plan.toml"))
    assert (owners(alone), host_of(alone, 1)) == ({}, None)


def test_a_bad_hosts_plan_exits_2_and_changes_nothing(repo: Path, cli: CliFn) -> None:
    (repo / "plan.toml").write_text(plan_text(remote=""), encoding="utf-8")
    result = cli("setup")
    assert result.code == 2
    assert "agents.hosts: hosts share the plan through the git remote" in result.err
    assert "Traceback" not in result.err
    assert not (repo.parent / "project-worktrees").exists()


# -- who this clone is ---


def test_the_host_comes_from_the_environment_then_the_clone_then_the_machine(
    hosts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = Git(hosts["laptop"])
    monkeypatch.delenv(HOST_ENV, raising=False)
    assert this_host(clone) == socket.gethostname().split(".")[0]
    git(hosts["laptop"], "config", HOST_CONFIG, "box")
    assert this_host(clone) == "box"
    assert this_host(Git(hosts["tower"])) != "box"  # remembered per clone, not globally
    monkeypatch.setenv(HOST_ENV, "laptop")
    assert this_host(clone) == "laptop"


def test_setup_host_remembers_the_host_and_creates_only_its_worktrees(
    planned: dict[str, Path], cli: CliFn
) -> None:
    result = cli("setup", "--host", "laptop", cwd=planned["laptop"])
    assert result.code == 0, result.err
    assert "this clone is host laptop: agents 1, 2" in result.out
    assert git(planned["laptop"], "config", "--local", HOST_CONFIG) == "laptop"
    assert worktree_folders(planned["laptop"]) == ["agent-1", "agent-2"]

    assert cli("setup", "--host", "box", cwd=planned["box"]).code == 0
    assert worktree_folders(planned["box"]) == ["agent-3"]
    assert cli("setup", cwd=planned["box"]).code == 0  # remembered: still box's agents only
    assert worktree_folders(planned["box"]) == ["agent-3"]


def test_setup_for_an_unknown_host_is_refused_and_remembers_nothing(
    planned: dict[str, Path], cli: CliFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli("setup", "--host", "kitchen", cwd=planned["tower"])
    assert result.code == 2
    assert result.err.strip().endswith("set PARADEV_HOST")
    assert "--host kitchen, which [agents] hosts does not list (laptop, box)" in result.err
    assert git(planned["tower"], "config", "--local", HOST_CONFIG, check=False) == ""

    monkeypatch.setenv(HOST_ENV, "tower")
    result = cli("setup", cwd=planned["tower"])
    assert result.code == 2
    assert "this clone is host 'tower' (from PARADEV_HOST)" in result.err
    assert worktree_folders(planned["tower"]) == []


def test_run_batch_launches_only_this_hosts_agents(
    planned: dict[str, Path], cli: CliFn, tmp_path: Path
) -> None:
    laptop = planned["laptop"]
    agents_run(laptop, AGENT, tmp_path)
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0

    result = cli("run-batch", cwd=laptop)
    assert result.code == 0, result.err
    tasks = StateStore(laptop / ".git").read().tasks
    assert {i: tasks[i].status for i in tasks} == {11: "completed", 12: "completed"}
    assert (laptop.parent / "project-worktrees/agent-1/done-11.txt").exists()
    shared = remote_state(laptop)
    assert shared is not None
    assert set(shared["tasks"]) == {"11", "12"}

    refused = cli("run-batch", "--agents", "3", cwd=laptop)
    assert refused.code == 2
    assert "agents 3 (box) do not run on host laptop, which runs 1, 2" in refused.err


# -- the state: shared with hosts, local without ---


def test_with_hosts_state_writes_reach_the_remote_and_other_hosts_see_them(
    planned: dict[str, Path], cli: CliFn
) -> None:
    laptop, box = planned["laptop"], planned["box"]
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    assert cli("setup", "--host", "box", cwd=box).code == 0
    assert cli("start", "1", cwd=laptop).code == 0

    shared = remote_state(laptop)
    assert shared is not None
    assert shared["tasks"]["11"]["status"] == "in_progress"
    assert 11 not in StateStore(box / ".git").read().tasks  # box's cache: no network yet
    assert cli("start", "3", cwd=box).code == 0  # a write fetches first
    cached = StateStore(box / ".git").read().tasks
    assert (cached[11].status, cached[13].status) == ("in_progress", "in_progress")
    subjects = git(box, "log", "--format=%an: %s", "refs/paradev/remote-state")
    assert "paradev on box: paradev: tasks 13" in subjects
    assert "paradev on laptop: paradev: tasks 11" in subjects


def test_without_hosts_a_remote_never_receives_the_state(
    repo: Path, remote: Path, cli: CliFn
) -> None:
    """A single-machine user with a remote keeps the local state and never pushes it."""
    text = (
        (repo / "plan.toml")
        .read_text()
        .replace('base = "main"\n', 'base = "main"\nremote = "origin"\n')
    )
    commit(repo, {"plan.toml": text + "\n[merge]\npush = true\n"}, "use the remote")
    assert cli("setup").code == 0
    assert cli("start", "1").code == 0
    assert git(remote, "for-each-ref", "refs/paradev") == ""
    assert StateStore(repo / ".git").read().tasks[11].status == "in_progress"
    assert git(repo, "for-each-ref", "refs/paradev") == ""

    trees = repo.parent / "project-worktrees"
    commit(trees / "agent-1", {"feature.txt": "one\n"}, "work of agent 1")
    assert cli("complete", "1").code == 0
    result = cli("merge")  # the train pushes base, nothing else
    assert result.code == 0, result.out + result.err
    assert git(remote, "show", "main:feature.txt") == "one"
    assert git(remote, "for-each-ref", "--format=%(refname)", "refs/paradev") == ""
    assert git(remote, "for-each-ref", "--format=%(refname)", "refs/heads") == "refs/heads/main"
    assert StateStore(repo / ".git").read().tasks[11].status == "merged"


# -- one merge train across hosts ---


def lease_on_server(origin: Path) -> Any:
    return json.loads(git(origin, "cat-file", "blob", "refs/paradev/lock/train:lease.json"))


def completed_on_laptop(planned: dict[str, Path], cli: CliFn) -> Path:
    """Laptop set up, agent 1 completed #11 with one commit; laptop as the cwd."""
    laptop = planned["laptop"]
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    work(cli, laptop.parent / "project-worktrees", 1, {"feature.txt": "one\n"})
    return laptop


def test_the_train_takes_the_lease_and_frees_it(
    planned: dict[str, Path], origin: Path, cli: CliFn
) -> None:
    laptop = completed_on_laptop(planned, cli)
    git(origin, "config", "receive.denyNonFastForwards", "false")  # rewritten agent branches
    result = cli("merge")
    assert result.code == 0, result.err
    assert git(origin, "rev-parse", "main") == git(laptop, "rev-parse", "main")  # pushed
    assert lease_on_server(origin) == {"holder": f"laptop (pid {os.getpid()})", "state": "free"}
    subjects = git(origin, "log", "--format=%s", "refs/paradev/lock/train").splitlines()
    assert [s.split(" by ")[0] for s in subjects] == [
        "paradev: lease train released",
        "paradev: lease train taken",
    ]
    assert remote_state(laptop)["tasks"]["11"]["status"] == "merged"
    assert (laptop / "feature.txt").read_text() == "one\n"


def test_with_hosts_a_landing_is_on_the_remote_before_the_state_calls_it_merged(
    planned: dict[str, Path], origin: Path, cli: CliFn, tmp_path: Path
) -> None:
    """Other hosts read the state from the remote: each write of it that calls a task merged
    reaches a server whose base holds that landing (with hosts base is always pushed, and
    never left behind the state)."""
    laptop = planned["laptop"]
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    trees = laptop.parent / "project-worktrees"
    work(cli, trees, 1, {"one.txt": "one\n"})
    work(cli, trees, 2, {"two.txt": "two\n"})
    git(origin, "config", "receive.denyNonFastForwards", "false")  # rewritten agent branches
    seen = tmp_path / "state-writes.txt"
    hook = origin / "hooks" / "pre-receive"  # notes base on the server at each state write
    hook.write_text(
        "#!/bin/sh\n"
        "while read old new ref; do\n"
        f'  [ "$ref" = {STATE_REF} ] && echo "$new $(git rev-parse main)" >> {seen}\n'
        '  [ "$ref" = refs/heads/main ] && sleep 1  # a slow push of base: a write may overtake\n'
        "done\nexit 0\n"
    )
    hook.chmod(0o755)

    result = cli("merge")

    assert result.code == 0, result.err
    merged_somewhere = set()
    for line in seen.read_text().splitlines():
        state_commit, base_then = line.split()
        state = json.loads(git(origin, "cat-file", "blob", f"{state_commit}:state.json"))
        landed = {t["merged_commit"] for t in state["tasks"].values() if t["status"] == "merged"}
        landed |= {e["commit"] for e in (state.get("train") or {}).get("landed", [])}
        for commit_id in landed:
            on_base = subprocess.run(
                ["git", "merge-base", "--is-ancestor", commit_id, base_then],
                cwd=origin,
                check=False,
            )
            assert on_base.returncode == 0, f"{commit_id} called merged before it was pushed"
        merged_somewhere |= landed
    assert git(origin, "rev-parse", "main") == git(laptop, "rev-parse", "main")
    assert len(merged_somewhere) >= 2  # both landings were seen in some write


def test_with_hosts_a_train_that_would_not_push_is_refused_and_changes_nothing(
    planned: dict[str, Path], origin: Path, cli: CliFn
) -> None:
    laptop = completed_on_laptop(planned, cli)
    before = git(laptop, "rev-parse", "main")

    result = cli("merge", "--no-push")

    assert result.code == 2
    assert "with [agents] hosts every landing is pushed" in result.err
    assert result.err.count("\n") == 1
    assert git(laptop, "rev-parse", "main") == before
    assert remote_state(laptop)["tasks"]["11"]["status"] == "completed"


def test_a_train_held_by_another_host_refuses_and_changes_nothing(
    planned: dict[str, Path], origin: Path, cli: CliFn
) -> None:
    laptop = completed_on_laptop(planned, cli)
    box = planned["box"]
    assert Lease(Git(box), "origin", TRAIN, "box (pid 7)", box / ".git/leases").acquire()
    before = git(laptop, "rev-parse", "main")

    result = cli("merge")
    assert result.code == 2
    assert "box (pid 7) holds the lease refs/paradev/lock/train on origin" in result.err
    assert git(laptop, "rev-parse", "main") == before
    assert remote_state(laptop)["tasks"]["11"]["status"] == "completed"
    assert lease_on_server(origin) == {"holder": "box (pid 7)", "state": "held"}


# -- completed work is pushed before it is recorded ---


def test_complete_pushes_the_branch_before_recording_it(
    planned: dict[str, Path], origin: Path, cli: CliFn
) -> None:
    laptop = completed_on_laptop(planned, cli)
    head = git(laptop, "rev-parse", "parallel-dev/agent-1")
    assert git(origin, "rev-parse", "refs/heads/parallel-dev/agent-1") == head
    assert remote_state(laptop)["tasks"]["11"]["head_commit"] == head


def test_a_refused_branch_push_leaves_the_task_in_progress(
    planned: dict[str, Path], origin: Path, cli: CliFn
) -> None:
    laptop, box = planned["laptop"], planned["box"]
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    assert cli("start", "1").code == 0
    commit(box, {"other.txt": "pushed by someone else\n"}, "not laptop's work")
    git(box, "push", "-q", "origin", "HEAD:refs/heads/parallel-dev/agent-1")
    commit(laptop.parent / "project-worktrees/agent-1", {"feature.txt": "one\n"}, "work")

    result = cli("complete", "1")
    assert result.code == 2
    assert "the task stays in progress: fetch origin" in result.err
    assert remote_state(laptop)["tasks"]["11"]["status"] == "in_progress"
    assert StateStore(laptop / ".git").read().tasks[11].status == "in_progress"
    assert git(origin, "log", "-1", "--format=%s", "parallel-dev/agent-1") == "not laptop's work"


def test_sync_brings_other_hosts_changes_into_the_cache(
    planned: dict[str, Path], cli: CliFn
) -> None:
    laptop, box = planned["laptop"], planned["box"]
    assert cli("setup", "--host", "box", cwd=box).code == 0
    result = cli("sync")
    assert result.code == 0, result.err
    assert "state synced from refs/paradev/state on origin: 0 task records, 1 agents" in result.out
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    assert cli("start", "2").code == 0
    assert 12 not in StateStore(box / ".git").read().tasks

    result = cli("sync", cwd=box)
    assert result.code == 0, result.err
    assert "1 task records, 3 agents" in result.out
    assert StateStore(box / ".git").read().tasks[12].status == "in_progress"


def test_sync_without_hosts_is_refused(repo: Path, cli: CliFn) -> None:
    result = cli("sync")
    assert result.code == 2
    assert "sync needs [agents] hosts in plan.toml" in result.err


def test_read_only_commands_use_the_cache_without_the_network(
    planned: dict[str, Path], cli: CliFn
) -> None:
    laptop, box = planned["laptop"], planned["box"]
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    assert cli("start", "1").code == 0
    assert cli("setup", "--host", "box", cwd=box).code == 0  # its write fetched laptop's
    git(box, "remote", "set-url", "origin", str(box.parent / "unreachable.git"))

    status = cli("status", "--json")
    assert status.code == 0, status.err
    assert '"issue": 11' in status.out
    check = cli("check", "src/app.py")
    assert check.code in (0, 1), check.err  # answered from the cache, no fetch attempted
    assert "unreachable" not in check.err + status.err
    refused = cli("start", "3")  # a write needs the remote: a clear error, nothing recorded
    assert refused.code == 2
    assert "git fetch origin" in refused.err
    assert 13 not in StateStore(box / ".git").read().tasks


def test_a_host_without_agents_sets_up_nothing(planned: dict[str, Path], cli: CliFn) -> None:
    tower = planned["tower"]
    text = plan_text("hosts = { laptop = [1, 2], box = [3], tower = [] }\n")
    commit(tower, {"plan.toml": text}, "tower is a spare")
    result = cli("setup", "--host", "tower", cwd=tower)
    assert result.code == 0, result.err
    assert "this clone is host tower: agents none" in result.out
    assert worktree_folders(tower) == []


# -- every host's agents on any host ---


def test_status_on_any_host_shows_every_hosts_agents_from_the_remote(
    planned: dict[str, Path], cli: CliFn
) -> None:
    laptop, box = planned["laptop"], planned["box"]
    completed_on_laptop(planned, cli)  # agent 1's branch: one commit, pushed
    assert cli("setup", "--host", "box", cwd=box).code == 0
    assert cli("sync", cwd=box).code == 0

    result = cli("status", "--json", cwd=box)
    assert result.code == 0, result.err
    agents = json.loads(result.out)["agents"]
    assert {a: (agents[a]["host"], agents[a]["here"]) for a in agents} == {
        "1": ("laptop", False),
        "2": ("laptop", False),
        "3": ("box", True),
    }
    assert (agents["1"]["ahead"], agents["1"]["behind"]) == (1, 0)
    assert agents["1"]["completed_tasks"][0]["issue"] == 11
    assert agents["2"]["ahead"] is None  # laptop pushed nothing of agent 2 yet
    assert agents["3"]["exists"] is True

    text = cli("status", cwd=box).out
    assert (
        "Agent 1  parallel-dev/agent-1  (1 ahead, 0 behind as pushed; worktree on host laptop)"
        in text
    )
    assert "Agent 2  parallel-dev/agent-2  (not pushed yet; worktree on host laptop)" in text
    assert "branch missing" not in text
    assert "worktree missing" not in text
    local = cli("status", "--json", cwd=laptop)
    assert json.loads(local.out)["agents"]["1"]["here"] is True
    assert "(1 ahead, 0 behind; worktree clean, here on host laptop)" in cli("status").out


def clashing_work_box_first(planned: dict[str, Path], cli: CliFn) -> Path:
    """box's agent 3 and then laptop's agent 1 change one file differently; box returned."""
    laptop, box = planned["laptop"], planned["box"]
    assert cli("setup", "--host", "box", cwd=box).code == 0
    work(cli, box.parent / "project-worktrees", 3, {"src/app.py": "box's version\n"})
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    work(cli, laptop.parent / "project-worktrees", 1, {"src/app.py": "laptop's version\n"})
    return box


def test_conflicts_on_one_host_cover_another_hosts_agents(
    planned: dict[str, Path], cli: CliFn
) -> None:
    """laptop pushed its work after box last fetched: the scan fetches it."""
    box = clashing_work_box_first(planned, cli)

    result = cli("conflicts", "--json", cwd=box)
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert [(p["agents"], p["conflict"]) for p in report["pairs"]] == [([1, 3], True)]


def test_the_report_on_one_host_covers_another_hosts_agents_as_pushed(
    planned: dict[str, Path], cli: CliFn, tmp_path: Path
) -> None:
    """box writes its report after laptop pushed work box never fetched: the report fetches."""
    box = clashing_work_box_first(planned, cli)

    page = tmp_path / "report.html"
    result = cli("report", "--output", str(page), cwd=box)
    assert result.code == 0, result.err
    scan = remote_state(box)["conflict_snapshots"][-1]
    assert (scan["source"], scan["agents"]) == ("report", [1, 3])
    assert [(p["agents"], p["outcome"]) for p in scan["pairs"]] == [([1, 3], "conflict")]
    assert "Add the status command" in page.read_text(encoding="utf-8")  # laptop's #11


# -- paradev run on every host ---


def test_run_on_each_host_launches_its_agents_and_waits_for_the_others_work(
    planned: dict[str, Path], origin: Path, cli: CliFn, tmp_path: Path
) -> None:
    """#21 (laptop's agent 1) depends on #13 (box's agent 3): laptop's run waits for it."""
    laptop, box = planned["laptop"], planned["box"]
    script = tmp_path / "agent.py"
    script.write_text(AGENT, encoding="utf-8")
    text = plan_text().replace(
        "count = 3\n", f"count = 3\ncommand = {json.dumps([sys.executable, str(script)])}\n"
    )
    text = text.replace("depends_on = [11]", "depends_on = [13]") + "\n[merge]\npush = true\n"
    commit(laptop, {"plan.toml": text}, "agents run a script; #21 needs box's #13")
    git(laptop, "push", "-q", "origin", "main")
    git(box, "pull", "-q", "--ff-only")
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    assert cli("setup", "--host", "box", cwd=box).code == 0
    # The train rewrites agent 1's branch, which its next task's completion then pushes:
    # a server refusing non-fast-forwards of branches would refuse that push.
    git(origin, "config", "receive.denyNonFastForwards", "false")

    runs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "paradev", "run"],
            cwd=clone,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for name, clone in (("laptop", laptop), ("box", box))
    }
    try:
        outputs = {name: proc.communicate(timeout=200)[0] for name, proc in runs.items()}
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    assert {n: p.returncode for n, p in runs.items()} == {"laptop": 0, "box": 0}, outputs

    state = remote_state(laptop)
    assert {i: state["tasks"][i]["status"] for i in ("11", "12", "13", "21")} == dict.fromkeys(
        ("11", "12", "13", "21"), "merged"
    )
    assert state["tasks"]["13"]["host"] == "box"
    assert {state["tasks"][i]["host"] for i in ("11", "12", "21")} == {"laptop"}
    # the dependency landed on box before laptop's agent started #21
    assert state["tasks"]["21"]["started_at"] >= state["tasks"]["13"]["merged_at"]
    files = git(origin, "ls-tree", "--name-only", "main").split()
    assert {"done-11.txt", "done-12.txt", "done-13.txt", "done-21.txt"} <= set(files)
    assert worktree_folders(laptop) == ["agent-1", "agent-2"]  # never agent 3's
    assert worktree_folders(box) == ["agent-3"]


# -- doctor and reset say what they do (and do not do) to the shared state ---


def test_doctor_reads_the_shared_state_and_reset_clears_only_the_cache(
    planned: dict[str, Path], origin: Path, cli: CliFn
) -> None:
    laptop, box = planned["laptop"], planned["box"]
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    shared = git(origin, "rev-parse", STATE_REF)
    line = (
        f"ok   shared state {STATE_REF} on origin: {shared[:12]}, this clone's cache is up to date"
    )
    assert line in cli("doctor", cwd=laptop).out

    assert cli("setup", "--host", "box", cwd=box).code == 0  # box moves the shared state
    moved = git(origin, "rev-parse", STATE_REF)
    result = cli("doctor", "--repair", cwd=laptop)
    assert result.code == 1
    assert (
        f"BAD  shared state {STATE_REF} on origin is at {moved[:12]}, this clone's cache at "
        f"{shared[:12]}: run 'paradev sync' (doctor never changes the remote)"
    ) in result.out
    assert git(origin, "rev-parse", STATE_REF) == moved
    assert cli("sync", cwd=laptop).code == 0
    assert "this clone's cache is up to date" in cli("doctor", cwd=laptop).out

    result = cli("reset", "--yes", cwd=laptop)
    assert result.code == 0, result.err
    assert f"only this clone's cache was cleared: the shared state {STATE_REF} on origin" in (
        result.out
    )
    assert git(origin, "rev-parse", STATE_REF) == moved  # every host's records kept
    assert StateStore(laptop / ".git").read().agents == {}
    assert cli("sync", cwd=laptop).code == 0
    assert sorted(StateStore(laptop / ".git").read().agents) == [1, 2, 3]


def test_a_train_says_another_hosts_completed_agent_lands_on_its_own_host(
    planned: dict[str, Path], origin: Path, cli: CliFn
) -> None:
    """Box's agent 3 completed (its branch pushed, not in laptop's clone): laptop's train
    lands its own agent and names the host that lands agent 3, not a missing branch."""
    laptop = completed_on_laptop(planned, cli)
    box = planned["box"]
    assert cli("setup", "--host", "box", cwd=box).code == 0
    assert cli("start", "3", cwd=box).code == 0
    commit(box.parent / "project-worktrees" / "agent-3", {"three.txt": "3\n"}, "work of 3")
    assert cli("complete", "3", cwd=box).code == 0
    git(origin, "config", "receive.denyNonFastForwards", "false")  # rewritten agent branches

    result = cli("merge", cwd=laptop)

    assert result.code == 0, result.err
    said = result.out + result.err
    assert "agent 3: runs on host box, whose train lands its work; not landed here" in said
    assert "does not exist" not in said
    assert remote_state(laptop)["tasks"]["11"]["status"] == "merged"
    assert remote_state(laptop)["tasks"]["13"]["status"] == "completed"
