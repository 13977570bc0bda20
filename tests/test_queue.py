"""The merge queue on real repositories: batches, bisection, ejection, parallel gates, crashes."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from paradev.train import advance as advance_mod
from paradev.train import candidates as queue_mod
from paradev.train import gate as gates_mod
from paradev.train import steps as train_mod
from tests.helpers import Result, agent_tree, commit, git, rev, state_files

Cli = Callable[..., Result]


def plan_text(agents: int, gate: str, **merge: Any) -> str:
    """A plan with ``agents`` agents, one task each (#101, #102, ...), and ``merge`` settings."""
    lines = [
        '[project]\nbase = "main"\n',
        f"[agents]\ncount = {agents}\n",
        f"[gate]\ncommand = {json.dumps(gate)}\ntimeout = 60\n",
        "[merge]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in merge.items()),
        '[[batches]]\nname = "all"\n',
    ]
    for agent in range(1, agents + 1):
        lines.append(
            f"  [[batches.tasks]]\n  agent = {agent}\n  issue = {100 + agent}\n"
            f'  title = "Task of agent {agent}"\n  hours = 1.0\n'
        )
    return "\n".join(lines)


RUNS = "runs.txt"  # each gate run appends a line here (outside the repository)


def counting(gate: str, repo: Path) -> str:
    """``gate``, counting its runs in ``<tmp>/runs.txt``."""
    return f"echo run >> {repo.parent / RUNS}; {gate}"


def gate_runs(repo: Path) -> int:
    runs = repo.parent / RUNS
    return len(runs.read_text().splitlines()) if runs.exists() else 0


@pytest.fixture
def queue_repo(repo: Path, cli: Cli, worktrees: Path) -> Callable[..., Path]:
    """Configure ``agents`` agents and [merge] settings, set up, each agent completes its work.

    ``files``: agent -> the files its one commit adds besides ``feature_<agent>.py``.
    """

    def make(
        agents: int, gate: str, files: dict[int, dict[str, str]] | None = None, **merge: Any
    ) -> Path:
        commit(repo, {"plan.toml": plan_text(agents, counting(gate, repo), **merge)}, "plan")
        assert cli("setup").code == 0
        for agent in range(1, agents + 1):
            assert cli("start", str(agent)).code == 0
            added = {f"feature_{agent}.py": f"X = {agent}\n", **(files or {}).get(agent, {})}
            commit(agent_tree(worktrees, agent), dict(added), f"feat: work of agent {agent}")
            result = cli("complete", str(agent))
            assert result.code == 0, result.err
        return worktrees

    return make


def state_of(repo: Path) -> Any:
    return state_files(repo)


def statuses(repo: Path) -> dict[str, str]:
    return {k: v["status"] for k, v in state_of(repo)["tasks"].items()}


def ever_on_main(repo: Path, path: str) -> bool:
    """Whether any commit in main's history holds ``path``."""
    for sha in git(repo, "rev-list", "main").split():
        if git(repo, "ls-tree", "--name-only", sha, "--", path):
            return True
    return False


def landed_files(repo: Path, agents: range) -> set[int]:
    return {a for a in agents if git(repo, "ls-tree", "--name-only", "main", f"feature_{a}.py")}


# -- batches -----------------------------------------------------------------------------------


def test_a_passing_batch_lands_everything_on_one_gate_run(
    repo: Path, queue_repo: Any, cli: Cli, worktrees: Path
) -> None:
    queue_repo(4, "test -f src/app.py", batch=4)
    old = {a: rev(repo, f"parallel-dev/agent-{a}") for a in range(1, 5)}

    result = cli("merge")

    assert result.code == 0, result.err
    assert gate_runs(repo) == 1
    assert landed_files(repo, range(1, 5)) == {1, 2, 3, 4}
    assert statuses(repo) == {str(100 + a): "merged" for a in range(1, 5)}
    assert git(repo, "status", "--porcelain") == ""  # main's work tree followed
    main = rev(repo, "main")
    for agent in range(1, 5):
        branch = f"parallel-dev/agent-{agent}"
        assert git(repo, "merge-base", "--is-ancestor", branch, "main") == ""
        assert rev(repo, branch) != old[agent]  # moved to its rebased commit
        tree = agent_tree(worktrees, agent)
        assert git(tree, "status", "--porcelain") == "" and rev(tree, "HEAD") == rev(repo, branch)
        backup = git(repo, "for-each-ref", "--format=%(refname)", f"refs/paradev/backup/{branch}")
        assert rev(repo, backup) == old[agent]
    trailers = git(repo, "log", "--format=%(trailers:key=Paradev-Issue,valueonly)", "main")
    assert {int(t) for t in trailers.split()} == {101, 102, 103, 104}
    history = state_of(repo)["merge_history"][-1]
    assert history["status"] == "done" and history["landed"][-1]["commit"] == main
    assert state_of(repo)["train"] is None


def test_a_failing_branch_is_found_by_bisection_and_ejected(
    repo: Path, queue_repo: Any, cli: Cli
) -> None:
    files = {3: {"bad.txt": "breaks the gate\n"}}
    queue_repo(8, "! test -e bad.txt", files, batch=8, on_gate_failure="eject")

    result = cli("merge")

    assert result.code == 0, result.err
    assert landed_files(repo, range(1, 9)) == {1, 2, 4, 5, 6, 7, 8}
    assert not ever_on_main(repo, "bad.txt")
    assert gate_runs(repo) <= 5  # the tip, 3 bisection steps, the rebuilt tip
    assert statuses(repo)["103"] == "gate_failed"
    assert "gate" in state_of(repo)["tasks"]["103"]["error"]
    assert "agent 3: ejected" in result.out
    backup = git(repo, "for-each-ref", "--format=%(refname)", "refs/paradev/backup/")
    assert rev(repo, "parallel-dev/agent-3") == rev(repo, backup.split()[2])  # untouched


def test_a_failing_branch_stops_the_queue_after_landing_what_is_ahead(
    repo: Path, queue_repo: Any, cli: Cli, worktrees: Path
) -> None:
    files = {3: {"bad.txt": "breaks the gate\n"}}
    queue_repo(4, "! test -e bad.txt", files, batch=4)

    result = cli("merge")

    assert result.code == 1
    assert "the gate exited 1 for agent 3" in result.err
    order = state_of(repo)["train"]["order"]
    assert landed_files(repo, range(1, 5)) == set(order[: order.index(3)])
    assert not ever_on_main(repo, "bad.txt")
    assert state_of(repo)["train"]["stop"]["agent"] == 3

    commit(agent_tree(worktrees, 3), {"bad.txt": None}, "fix: remove the file")
    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert landed_files(repo, range(1, 5)) == {1, 2, 3, 4}
    assert not (repo / "bad.txt").exists()
    assert statuses(repo) == {str(100 + a): "merged" for a in range(1, 5)}


def test_skip_leaves_the_failing_branch_out_and_lands_the_rest(
    repo: Path, queue_repo: Any, cli: Cli
) -> None:
    queue_repo(3, "! test -e bad.txt", {1: {"bad.txt": "x\n"}}, batch=3)
    assert cli("merge").code == 1

    result = cli("merge", "--skip")

    assert result.code == 0, result.err
    assert landed_files(repo, range(1, 4)) == {2, 3}
    assert not ever_on_main(repo, "bad.txt")
    assert statuses(repo)["101"] == "completed"


@pytest.mark.parametrize("mode", [{"batch": 3}, {"parallel": 3}])
def test_two_branches_that_pass_alone_but_fail_together_never_both_land(
    repo: Path, queue_repo: Any, cli: Cli, mode: dict[str, int]
) -> None:
    files = {1: {"a.txt": "a\n"}, 2: {"b.txt": "b\n"}}
    gate = "! { test -e a.txt && test -e b.txt; }"
    queue_repo(3, gate, files, on_gate_failure="eject", **mode)

    result = cli("merge")

    assert result.code == 0, result.err
    assert (repo / "a.txt").exists() and not (repo / "b.txt").exists()
    assert not ever_on_main(repo, "b.txt")
    assert (repo / "feature_3.py").exists()
    assert statuses(repo) == {"101": "merged", "102": "gate_failed", "103": "merged"}


# -- parallel ----------------------------------------------------------------------------------


def test_parallel_gates_run_at_the_same_time(
    repo: Path, queue_repo: Any, cli: Cli, tmp_path: Path
) -> None:
    """Each gate waits until all three candidates' gates have started: serial gates would fail."""
    seen = tmp_path / "started"
    seen.mkdir()
    gate = (
        f'touch {seen}/"$PARADEV_CANDIDATE"; '
        f"for i in $(seq 400); do [ $(ls {seen} | wc -l) -ge 3 ] && exit 0; sleep 0.05; done; "
        "exit 1"
    )
    queue_repo(3, gate, parallel=3)

    result = cli("merge")

    assert result.code == 0, result.err
    assert gate_runs(repo) == 3
    assert len(list(seen.iterdir())) == 3
    assert landed_files(repo, range(1, 4)) == {1, 2, 3}
    assert "slot-3" in " ".join(p.name for p in (repo / ".git/paradev/gates").iterdir())


def test_parallel_lands_the_passing_prefix_and_ejects_the_failure(
    repo: Path, queue_repo: Any, cli: Cli
) -> None:
    files = {2: {"bad.txt": "x\n"}}
    queue_repo(4, "! test -e bad.txt", files, parallel=4, on_gate_failure="eject")

    result = cli("merge")

    assert result.code == 0, result.err
    assert landed_files(repo, range(1, 5)) == {1, 3, 4}
    assert not ever_on_main(repo, "bad.txt")
    order = state_of(repo)["merge_history"][-1]["order"]
    behind = len(order) - 1 - order.index(2)
    assert gate_runs(repo) == 4 + behind  # c1..c4 at once, then those behind it, rebuilt


# -- retries -----------------------------------------------------------------------------------


def test_retries_re_run_a_flaky_gate_before_it_counts(
    repo: Path, queue_repo: Any, cli: Cli, tmp_path: Path
) -> None:
    """The gate fails the first time it sees each candidate."""
    seen = f'{tmp_path}/"$PARADEV_CANDIDATE"'
    gate = f"test -e {seen} || {{ touch {seen}; exit 1; }}"
    queue_repo(2, gate, batch=2, retries=1)

    result = cli("merge")

    assert result.code == 0, result.err
    assert gate_runs(repo) == 2
    assert landed_files(repo, range(1, 3)) == {1, 2}
    assert "retry 1" in result.out


# -- conflicts ---------------------------------------------------------------------------------


def test_a_conflicting_branch_is_ejected_with_on_conflict_eject(
    repo: Path, queue_repo: Any, cli: Cli
) -> None:
    files = {1: {"src/util.py": "VALUE = 2\n"}, 2: {"src/util.py": "VALUE = 3\n"}}
    queue_repo(3, "true", files, batch=3, on_conflict="eject")

    result = cli("merge")

    assert result.code == 0, result.err
    landed = {e["agent"] for e in state_of(repo)["merge_history"][-1]["landed"]}
    assert len(landed) == 2 and 3 in landed
    ejected = ({1, 2} - landed).pop()
    assert statuses(repo)[str(100 + ejected)] == "completed"  # still to land, after a rebase
    assert f"agent {ejected}: ejected" in result.out
    assert gate_runs(repo) == 1


def test_a_conflict_with_on_conflict_stop_stops_in_the_agents_worktree(
    repo: Path, queue_repo: Any, cli: Cli, worktrees: Path
) -> None:
    files = {1: {"src/util.py": "VALUE = 2\n"}, 2: {"src/util.py": "VALUE = 3\n"}}
    queue_repo(3, "true", files, batch=3)

    result = cli("merge")

    assert result.code == 1
    stopped = state_of(repo)["train"]["stop"]["agent"]
    tree = agent_tree(worktrees, stopped)
    assert git(tree, "diff", "--name-only", "--diff-filter=U") == "src/util.py"
    (tree / "src/util.py").write_text("VALUE = 5\n")
    git(tree, "add", "src/util.py")

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert (repo / "src/util.py").read_text() == "VALUE = 5\n"
    assert landed_files(repo, range(1, 4)) == {1, 2, 3}


# -- a remote that refuses non-fast-forward updates ----------------------------------------------


def test_the_queue_pushes_base_by_fast_forwards_only(
    repo: Path, remote: Path, queue_repo: Any, cli: Cli
) -> None:
    git(repo, "config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*")
    plan = plan_text(3, "true", batch=3, push=True).replace(
        'base = "main"\n', 'base = "main"\nremote = "origin"\n'
    )
    queue_repo(3, "true", batch=3, push=True)
    commit(repo, {"plan.toml": plan}, "remote")
    git(repo, "push", "-q", "origin", "main")

    result = cli("merge")

    assert result.code == 0, result.err
    assert git(remote, "rev-parse", "main") == rev(repo, "main")
    assert landed_files(repo, range(1, 4)) == {1, 2, 3}


# -- crashes -----------------------------------------------------------------------------------


class Crash(BaseException):
    """The process dying at an arbitrary point."""


FIXED = {
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+0000",
}

CRASH_POINTS = [
    (gates_mod, "run_gates", "before"),
    (gates_mod, "run_gates", "after"),
    (queue_mod, "build_chain", "after"),
    (advance_mod, "move_base", "before"),
    (advance_mod, "move_base", "after"),
    (queue_mod, "_point_branch", "after"),
    (train_mod, "step_mark", "before"),
    (train_mod, "step_mark", "after"),
    (queue_mod, "_mark_gate_failed", "before"),
    (queue_mod, "_mark_gate_failed", "after"),
]
MODES = {"batch": {"batch": 4}, "parallel": {"parallel": 2}}


def _crash(mocker: MockerFixture, module: Any, name: str, when: str) -> None:
    real = getattr(module, name)

    def die(*args: Any, **kwargs: Any) -> Any:
        if when == "after":
            real(*args, **kwargs)
        raise Crash(name)

    mocker.patch.object(module, name, side_effect=die)


def queue_outcome(
    root: Path,
    template: Path,
    cli: Cli,
    mocker: MockerFixture,
    crash: tuple[Any, str, str] | None,
    mode: str,
) -> tuple[dict[str, str], dict[str, str]]:
    """4 agents, agent 2 fails its gate and is ejected; the refs and statuses at the end."""
    project = root / "project"
    shutil.copytree(template, project, symlinks=True)
    os.chdir(project)
    plan = plan_text(4, "! test -e bad.txt", on_gate_failure="eject", **MODES[mode])
    commit(project, {"plan.toml": plan}, "plan")
    assert cli("setup").code == 0
    trees = project.parent / "project-worktrees"
    for agent in range(1, 5):
        assert cli("start", str(agent)).code == 0
        files: dict[str, str | bytes | None] = {f"feature_{agent}.py": f"{agent}\n"}
        if agent == 2:
            files = {"bad.txt": "x\n"}
        commit(agent_tree(trees, agent), files, f"feat: agent {agent}")
        assert cli("complete", str(agent)).code == 0
    mocker.stopall()
    if crash is not None:
        _crash(mocker, *crash)
        with pytest.raises(Crash):
            cli("merge")
        mocker.stopall()
        assert state_of(project)["train"] is not None
        result = cli("merge", "--continue")
    else:
        result = cli("merge")
    assert result.code == 0, result.err
    found = git(project, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads")
    return dict(line.split(" ") for line in found.splitlines()), statuses(project)


_CLEAN: dict[tuple[Path, str], tuple[dict[str, str], dict[str, str]]] = {}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("module", "name", "when"), CRASH_POINTS)
def test_crash_then_continue_reaches_the_same_refs(
    mode: str,
    module: Any,
    name: str,
    when: str,
    template_repo: Path,
    tmp_path: Path,
    cli: Cli,
    mocker: MockerFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable, value in FIXED.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)
    key = (template_repo, mode)
    if key not in _CLEAN:
        _CLEAN[key] = queue_outcome(tmp_path / "clean", template_repo, cli, mocker, None, mode)
    crash = (module, name, when)
    crashed = queue_outcome(tmp_path / "crashed", template_repo, cli, mocker, crash, mode)
    assert crashed == _CLEAN[key]
    assert crashed[1] == {"101": "merged", "102": "gate_failed", "103": "merged", "104": "merged"}


# -- dry run and plan keys ---------------------------------------------------------------------


def test_dry_run_shows_the_candidates_and_the_first_gate_round(
    repo: Path, queue_repo: Any, cli: Cli, snapshot: Callable[[], dict[str, object]]
) -> None:
    files = {1: {"src/util.py": "VALUE = 2\n"}, 2: {"src/util.py": "VALUE = 3\n"}}
    queue_repo(4, "true", files, batch=2, parallel=2, on_conflict="eject")
    assert cli("merge-order").code == 0  # the order is recorded once (the serial dry run does)
    before = snapshot()

    result = cli("merge", "--dry-run")

    assert result.code == 0, result.err
    assert snapshot() == before
    assert "merge queue (dry run, nothing changed): parallel 2, batch 2" in result.out
    assert "candidate 3: main + agents" in result.out
    assert "conflicts with main and the agents ahead of it -> set aside" in result.out
    assert "first gate round: candidate(s) 2, 3 at once" in result.out
    assert gate_runs(repo) == 0


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("parallel = 0", "merge.parallel: expected an integer from 1 to 32, got 0"),
        ("batch = 1.5", "merge.batch: expected an integer from 1 to 256"),
        ('on_gate_failure = "skip"', "merge.on_gate_failure: expected one of 'stop', 'eject'"),
        ("retries = -1", "merge.retries: expected an integer from 0 to 10, got -1"),
        ('on_conflict = "later"', "merge.on_conflict: expected one of 'stop', 'agent', 'eject'"),
    ],
)
def test_bad_queue_settings_are_refused_with_the_key_and_what_is_expected(
    repo: Path, cli: Cli, setting: str, expected: str
) -> None:
    plan = plan_text(2, "true").replace("[merge]\n", f"[merge]\n{setting}\n")
    (repo / "plan.toml").write_text(plan)

    result = cli("merge")

    assert result.code == 2
    assert expected in result.err
    assert "Traceback" not in result.err


def test_an_ejected_branch_goes_back_to_its_agent_and_rejoins_once_fixed(
    repo: Path, queue_repo: Any, cli: Cli
) -> None:
    fix = "git rm -q bad.txt && git commit -q -m 'fix: drop bad.txt'"
    plan_settings = {"on_gate_failure": "eject", "on_conflict": "agent", "batch": 3}
    queue_repo(3, "! test -e bad.txt", {2: {"bad.txt": "x\n"}}, **plan_settings)
    plan = (repo / "plan.toml").read_text()
    agent = f"command = {json.dumps(['sh', '-c', fix])}\n"
    commit(repo, {"plan.toml": plan.replace("[agents]\n", f"[agents]\n{agent}")}, "agent")

    result = cli("merge")

    assert result.code == 0, result.err
    assert "agent 2: ejected" in result.out
    assert "back in the queue" in result.out
    assert landed_files(repo, range(1, 4)) == {1, 2, 3}
    assert not (repo / "bad.txt").exists()  # landed with its fix (the tip is what was gated)
    assert statuses(repo) == {"101": "merged", "102": "merged", "103": "merged"}


def test_commits_after_the_completed_one_stay_on_the_branch_unlanded(
    repo: Path, queue_repo: Any, cli: Cli, worktrees: Path
) -> None:
    queue_repo(2, "true", batch=2)
    wip = commit(agent_tree(worktrees, 1), {"wip.py": "later\n"}, "wip: not completed")

    result = cli("merge")

    assert result.code == 0, result.err
    assert landed_files(repo, range(1, 3)) == {1, 2}
    assert not ever_on_main(repo, "wip.py")
    branch = "parallel-dev/agent-1"
    assert git(repo, "log", "-1", "--format=%s", branch) == "wip: not completed"
    assert rev(repo, f"{branch}~1") in git(repo, "rev-list", "main").split()  # on what landed
    assert rev(repo, branch) != wip and (agent_tree(worktrees, 1) / "wip.py").exists()


def test_abort_after_a_gate_stop_keeps_what_landed_and_leaves_the_rest_untouched(
    repo: Path, queue_repo: Any, cli: Cli
) -> None:
    queue_repo(3, "! test -e bad.txt", {3: {"bad.txt": "x\n"}}, batch=3)
    heads = {a: rev(repo, f"parallel-dev/agent-{a}") for a in range(1, 4)}
    assert cli("merge").code == 1
    order = state_of(repo)["train"]["order"]
    ahead = set(order[: order.index(3)])

    result = cli("merge", "--abort")

    assert result.code == 0, result.err
    assert state_of(repo)["train"] is None
    assert landed_files(repo, range(1, 4)) == ahead
    for agent in set(range(1, 4)) - ahead:
        assert rev(repo, f"parallel-dev/agent-{agent}") == heads[agent]
        assert statuses(repo)[str(100 + agent)] == "completed"
