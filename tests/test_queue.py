"""The merge queue on real repositories: batches, bisection, ejection, parallel gates, crashes."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from paradev.train import advance as advance_mod
from paradev.train import candidates as queue_mod
from paradev.train import eject as eject_mod
from paradev.train import gate as gates_mod
from paradev.train import steps as train_mod
from tests.helpers import Result, agent_tree, commit, git, rev, set_journal_field, state_files

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
MODES: dict[str, dict[str, Any]] = {"batch": {"batch": 4}, "parallel": {"parallel": 2}}
# one gate at a time, the next candidate's gate running while the landing before it finishes
PIPELINED: dict[str, dict[str, Any]] = {"pipelined": {"parallel": 1}}


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
        agents: int,
        gate: str,
        files: dict[int, dict[str, str]] | None = None,
        *,
        extra: str = "",
        **merge: Any,
    ) -> Path:
        plan = plan_text(agents, counting(gate, repo), **merge) + extra
        commit(repo, {"plan.toml": plan}, "plan")
        assert cli("setup").code == 0
        for agent in range(1, agents + 1):
            assert cli("start", str(agent)).code == 0
            added = {f"feature_{agent}.py": f"X = {agent}\n", **(files or {}).get(agent, {})}
            commit(agent_tree(worktrees, agent), dict(added), f"feat: work of agent {agent}")
            result = cli("complete", str(agent))
            assert result.code == 0, result.err
        return worktrees

    return make


def with_agent_command(repo: Path, script: str) -> None:
    """Commit ``agents.command = ["sh", "-c", script]`` into the plan (what a hand-back runs)."""
    plan = (repo / "plan.toml").read_text()
    agent = f"command = {json.dumps(['sh', '-c', script])}\n"
    commit(repo, {"plan.toml": plan.replace("[agents]\n", f"[agents]\n{agent}")}, "agent")


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


@pytest.mark.parametrize("mode", list(MODES))
def test_skip_leaves_the_failing_branch_out_and_lands_the_rest(
    repo: Path, queue_repo: Any, cli: Cli, mode: str
) -> None:
    queue_repo(3, "! test -e bad.txt", {1: {"bad.txt": "x\n"}}, **MODES[mode])
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


# -- the pipeline: the next gate runs while the landing before it finishes ---------------------


@pytest.mark.parametrize(
    ("args", "merge"),
    [(["merge"], {"on_gate_failure": "eject"}), (["merge", "--follow"], {})],
    ids=["queue", "follow"],
)
def test_the_next_gate_runs_while_the_landing_before_it_finishes(
    repo: Path, queue_repo: Any, cli: Cli, tmp_path: Path, args: list[str], merge: dict[str, Any]
) -> None:
    """Agent 1's on_merge hook waits for agent 2's gate to start: a gate that waited for
    the landing ahead of it to finish (hooks included) would leave the hook waiting."""
    marks = tmp_path / "marks"
    marks.mkdir()
    gate = f'[ "$PARADEV_AGENT" != 2 ] || echo "$PARADEV_CANDIDATE" > {marks}/gate-2'
    hook = (
        f'[ "$PARADEV_AGENT" = 1 ] || exit 0; for i in $(seq 600); do '
        f"[ -e {marks}/gate-2 ] && {{ echo saw > {marks}/hook-1; exit 0; }}; sleep 0.05; done; "
        f"echo late > {marks}/hook-1"
    )
    queue_repo(2, gate, parallel=1, extra=f"\n[hooks]\non_merge = {json.dumps(hook)}\n", **merge)

    result = cli(*args)

    assert result.code == 0, result.err
    assert (marks / "hook-1").read_text().strip() == "saw"
    assert statuses(repo) == {"101": "merged", "102": "merged"}
    gated = (marks / "gate-2").read_text().strip()
    assert rev(repo, "main") == gated  # base moved to exactly the tree its gate passed on
    assert landed_files(repo, range(1, 3)) == {1, 2}
    assert gate_runs(repo) == 2


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


@pytest.mark.parametrize("mode", ["batch", "parallel-eject"])
def test_the_queue_pushes_base_by_fast_forwards_only(
    repo: Path, remote: Path, queue_repo: Any, cli: Cli, mode: str
) -> None:
    """The remote refuses non-fast-forward updates: every push of the queue is one."""
    git(repo, "config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*")
    settings: dict[str, Any] = {"batch": 3, "push": True}
    files: dict[int, dict[str, str]] = {}
    if mode == "parallel-eject":
        settings = {"parallel": 2, "on_gate_failure": "eject", "push": True}
        files = {2: {"bad.txt": "x\n"}}
    gate = "! test -e bad.txt"
    plan = plan_text(3, gate, **settings).replace(
        'base = "main"\n', 'base = "main"\nremote = "origin"\n'
    )
    queue_repo(3, gate, files, **settings)
    commit(repo, {"plan.toml": plan}, "remote")
    git(repo, "push", "-q", "origin", "main")

    result = cli("merge")

    assert result.code == 0, result.err
    assert git(remote, "rev-parse", "main") == rev(repo, "main")
    assert landed_files(repo, range(1, 4)) == ({1, 3} if files else {1, 2, 3})
    assert not git(remote, "log", "--format=%H", "main", "--", "bad.txt")


# -- crashes -----------------------------------------------------------------------------------


class Crash(BaseException):
    """The process dying at an arbitrary point."""


FIXED = {
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+0000",
}


@pytest.fixture
def fixed_dates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Author and committer dates fixed (runs compared by their refs), in ``tmp_path``."""
    for variable, value in FIXED.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)


CRASH_POINTS = [
    (gates_mod, "run_gates", "before"),
    (gates_mod, "run_gates", "after"),
    (queue_mod, "build_chain", "after"),
    (queue_mod, "_start_gates", "after"),
    (advance_mod, "move_base", "before"),
    (advance_mod, "move_base", "after"),
    (queue_mod, "_point_branch", "before"),
    (queue_mod, "_point_branch", "after"),
    (train_mod, "step_mark", "before"),
    (train_mod, "step_mark", "after"),
    (eject_mod, "_mark_gate_failed", "before"),
    (eject_mod, "_mark_gate_failed", "after"),
    (eject_mod, "eject", "before"),
    (eject_mod, "drop_dependents", "before"),
    (queue_mod, "_land", "before"),
    (train_mod, "step_hooks", "before"),
    (train_mod, "step_push", "after"),
]


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
    before_continue: Callable[[], None] = lambda: None,
    agent_script: str = "",
) -> tuple[dict[str, str], dict[str, str]]:
    """4 agents, agent 2 fails its gate and is ejected; the refs and statuses at the end.

    ``agent_script``: the agents' command; the ejected one is handed back to it.
    """
    project = root / "project"
    shutil.copytree(template, project, symlinks=True)
    os.chdir(project)
    settings = {
        **{**MODES, **PIPELINED}[mode],
        **({"on_conflict": "agent"} if agent_script else {}),
    }
    plan = plan_text(4, "! test -e bad.txt", on_gate_failure="eject", **settings)
    commit(project, {"plan.toml": plan}, "plan")
    if agent_script:
        with_agent_command(project, agent_script)
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
        before_continue()
        result = cli("merge", "--continue")
    else:
        result = cli("merge")
    assert result.code == 0, result.err
    found = git(project, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads")
    return dict(line.split(" ") for line in found.splitlines()), statuses(project)


_CLEAN: dict[tuple[Path, str], tuple[dict[str, str], dict[str, str]]] = {}


@pytest.mark.parametrize("mode", [*MODES, *PIPELINED])
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
    fixed_dates: None,
) -> None:
    key = (template_repo, mode)
    if key not in _CLEAN:
        _CLEAN[key] = queue_outcome(tmp_path / "clean", template_repo, cli, mocker, None, mode)

    def a_day_later_as_someone_else() -> None:
        """Rewritten commits must take the committer journaled at the start, not this one."""
        monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-01-02T09:30:00+0000")
        monkeypatch.setenv("GIT_COMMITTER_NAME", "Someone Else")
        monkeypatch.setenv("GIT_COMMITTER_EMAIL", "else@example.com")

    crash = (module, name, when)
    crashed = queue_outcome(
        tmp_path / "crashed", template_repo, cli, mocker, crash, mode, a_day_later_as_someone_else
    )
    assert crashed == _CLEAN[key]
    assert crashed[1] == {"101": "merged", "102": "gate_failed", "103": "merged", "104": "merged"}


# -- dry run and plan keys ---------------------------------------------------------------------


def test_dry_run_shows_the_candidates_and_the_first_gate_round(
    repo: Path, queue_repo: Any, cli: Cli, snapshot: Callable[[], dict[str, object]]
) -> None:
    files = {1: {"src/util.py": "VALUE = 2\n"}, 2: {"src/util.py": "VALUE = 3\n"}}
    queue_repo(4, "true", files, batch=2, parallel=2, on_conflict="eject")
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
    with_agent_command(repo, fix)

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


@pytest.mark.parametrize("mode", list(MODES))
def test_abort_after_a_gate_stop_keeps_what_landed_and_leaves_the_rest_untouched(
    repo: Path, queue_repo: Any, cli: Cli, mode: str
) -> None:
    queue_repo(3, "! test -e bad.txt", {3: {"bad.txt": "x\n"}}, **MODES[mode])
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


# -- dry run as JSON, in every mode ------------------------------------------------------------

JSON_MODES: dict[str, dict[str, Any]] = {
    "serial": {},
    "parallel": {"parallel": 3, "on_conflict": "eject"},
    "batch": {"batch": 4, "on_conflict": "eject"},
    "parallel-stop": {"parallel": 2},
    "batch-stop": {"batch": 4},
}


@pytest.mark.parametrize("mode", list(JSON_MODES))
def test_dry_run_json_lists_order_candidates_gates_and_skips_then_the_train_does_that(
    repo: Path, queue_repo: Any, cli: Cli, snapshot: Callable[[], dict[str, object]], mode: str
) -> None:
    """Agents 1 and 2 conflict: the train stops at the later one, or ejects it."""
    files = {1: {"src/util.py": "VALUE = 2\n"}, 2: {"src/util.py": "VALUE = 3\n"}}
    queue_repo(4, "true", files, **JSON_MODES[mode])
    main = rev(repo, "main")
    heads = {a: rev(repo, f"parallel-dev/agent-{a}") for a in range(1, 5)}
    before = snapshot()

    dry = cli("merge", "--dry-run", "--json")

    assert snapshot() == before  # no ref, worktree or state file changed (the order not saved)
    assert gate_runs(repo) == 0
    data = dry.json()
    assert data["dry_run"] is True and data["base"] == "main"
    assert data["mode"] == ("serial" if mode == "serial" else "queue")
    assert sorted(data["order"]) == [1, 2, 3, 4]
    assert [c["agent"] for c in data["candidates"]] == data["order"]
    landing = [c for c in data["candidates"] if c["position"] is not None]
    assert [c["position"] for c in landing] == list(range(1, len(landing) + 1))
    for number, candidate in enumerate(landing, start=1):
        agents = [c["agent"] for c in landing[:number]]
        assert candidate["agents"] == agents and candidate["outcome"] == "land"
        assert candidate["branches"] == [f"parallel-dev/agent-{a}" for a in agents]
    for candidate in data["candidates"]:
        if candidate["outcome"] != "not reached":
            agent = candidate["agent"]
            assert candidate["range"] == {"from": main, "to": heads[agent]}
            assert candidate["commits"] == 1
    (clash,) = [c for c in data["candidates"] if c["conflicts"]]
    assert {c["path"] for c in clash["conflicts"]} == {"src/util.py"}
    assert clash["agent"] in (1, 2) and clash["position"] is None
    every = [c["position"] for c in landing]
    assert data["gated"] == (every[-1:] if mode.startswith("batch") else every)  # batch: the tip
    assert [c["position"] for c in data["candidates"] if c["gated"]] == data["gated"]
    if "on_conflict" not in JSON_MODES[mode]:
        assert clash["outcome"] == "conflict" and data["skipped"] == []
        assert dry.code == 1 and data["exit"] == 1 and "would stop" in data["error"]
    else:
        assert clash["outcome"] == "eject" and len(landing) == 3
        (skip,) = data["skipped"]
        assert skip["agent"] == clash["agent"] and skip["reason"].startswith("ejected: ")
        assert dry.code == 0 and data["exit"] == 0 and data["error"] is None

    real = cli("merge")

    assert real.code == dry.code
    assert gate_runs(repo) == len(data["gated"])
    assert landed_files(repo, range(1, 5)) == {c["agent"] for c in landing}


# -- a gate failure handed back to its agent ---------------------------------------------------


def test_a_gate_failure_is_handed_back_with_its_own_prompt_and_the_fix_lands(
    repo: Path, queue_repo: Any, cli: Cli, tmp_path: Path
) -> None:
    """The agent keeps its prompt and mode, then commits a fix on top of its completed work."""
    kept = tmp_path / "handed"
    agent_script = (
        f'cp "$PARADEV_PROMPT_FILE" {kept}.md; echo "$PARADEV_MODE" > {kept}.mode; '
        "git rm -q bad.txt && git commit -q -m 'fix: drop bad.txt'"
    )
    gate = "if test -e bad.txt; then echo 'BROKEN: bad.txt must not exist'; exit 3; fi"
    settings = {"on_gate_failure": "eject", "on_conflict": "agent", "parallel": 2}
    queue_repo(3, gate, {2: {"bad.txt": "x\n"}}, **settings)
    with_agent_command(repo, agent_script)

    result = cli("merge")

    assert result.code == 0, result.err
    assert "handed the gate failure back to agent 2" in result.out
    prompt = Path(f"{kept}.md").read_text()
    assert (Path(f"{kept}.mode")).read_text().strip() == "gate"
    assert prompt.startswith("# Fix the gate failure on parallel-dev/agent-2 (issue #102")
    assert f"gate command: {counting(gate, repo)}" in prompt
    assert "exit code: 3" in prompt
    assert "| BROKEN: bad.txt must not exist" in prompt  # the log's tail
    log = re.search(r"log: (\S+) \(last \d+ lines\):", prompt)
    assert log is not None and "BROKEN" in Path(log.group(1)).read_text()
    assert "new commits on parallel-dev/agent-2" in prompt and "exit 0" in prompt
    assert "back at the end of the merge queue" in prompt  # how it is resubmitted
    assert "conflict marker" not in prompt and "rebase --continue" not in prompt
    assert landed_files(repo, range(1, 4)) == {1, 2, 3}
    assert not (repo / "bad.txt").exists()
    assert "fix: drop bad.txt" in git(repo, "log", "--format=%s", "main").splitlines()
    assert statuses(repo) == {"101": "merged", "102": "merged", "103": "merged"}


# -- abort after a crash in the middle of a landing of several agents ----------------------------

LANDING_CRASHES = [
    (advance_mod, "move_base", "before"),  # journaled, base not moved yet
    (advance_mod, "move_base", "after"),  # base moved, no agent's bookkeeping done
    (queue_mod, "_point_branch", "after"),  # the first agent's branch moved, not marked
    (train_mod, "step_mark", "after"),  # the first agent marked merged, the others not
]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("module", "name", "when"), LANDING_CRASHES)
def test_abort_after_a_crash_mid_landing_settles_every_agent_of_it(
    repo: Path,
    queue_repo: Any,
    cli: Cli,
    worktrees: Path,
    mocker: MockerFixture,
    mode: str,
    module: Any,
    name: str,
    when: str,
) -> None:
    """Three agents land by one fast-forward; killed inside it, --abort settles all three."""
    queue_repo(3, "true", **({"batch": 3} if mode == "batch" else {"parallel": 3}))
    main = rev(repo, "main")
    heads = {a: rev(repo, f"parallel-dev/agent-{a}") for a in range(1, 4)}
    _crash(mocker, module, name, when)
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    journal = state_of(repo)["train"]
    landing = journal["mq"]["landing"]
    assert sorted(a for a, _ in landing["agents"]) == [1, 2, 3]  # one landing of all three

    result = cli("merge", "--abort")

    assert result.code == 0, result.err
    assert state_of(repo)["train"] is None
    assert state_of(repo)["merge_history"][-1]["status"] == "aborted"
    moved = (name, when) != ("move_base", "before")
    for agent in range(1, 4):
        branch = f"parallel-dev/agent-{agent}"
        backups = f"refs/paradev/backup/{branch}"
        assert git(repo, "for-each-ref", "--format=%(objectname)", backups) == heads[agent]
        tree = agent_tree(worktrees, agent)
        assert git(tree, "status", "--porcelain") == "" and rev(tree, "HEAD") == rev(repo, branch)
    if moved:  # base holds the gated candidate: every agent of it finished, none left half-done
        assert rev(repo, "main") == landing["to"]
        assert journal["mq"]["gates"][landing["to"]]["ok"] is True
        assert "already holds the landing of agents" in result.out
        assert statuses(repo) == {"101": "merged", "102": "merged", "103": "merged"}
        for agent, commit in landing["agents"]:
            assert rev(repo, f"parallel-dev/agent-{agent}") == commit
        landed = state_of(repo)["merge_history"][-1]["landed"]
        assert sorted(e["agent"] for e in landed) == [1, 2, 3]
    else:  # base untouched, every agent back at its backup, still to land
        assert rev(repo, "main") == main
        assert "was not made; main stays at" in result.out
        assert statuses(repo) == {"101": "completed", "102": "completed", "103": "completed"}
        for agent in range(1, 4):
            assert rev(repo, f"parallel-dev/agent-{agent}") == heads[agent]
            assert f"agent {agent}: not landed" in result.out
        again = cli("merge")
        assert again.code == 0, again.err
        assert landed_files(repo, range(1, 4)) == {1, 2, 3}
    assert git(repo, "status", "--porcelain") == ""


# -- base moving while the queue gates ---------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_base_moving_during_a_gate_run_rebuilds_the_candidates_on_it(
    repo: Path, queue_repo: Any, cli: Cli, tmp_path: Path, mode: str
) -> None:
    """Someone commits to main while the first gate runs: nothing is landed on the old base."""
    mark = tmp_path / "moved"
    push_main = (
        f"if [ ! -e {mark} ]; then touch {mark}; echo late > {repo}/late.txt; "
        f"git -C {repo} add late.txt; git -C {repo} commit -q -m 'late: on main meanwhile'; fi"
    )
    queue_repo(3, push_main, **({"batch": 3} if mode == "batch" else {"parallel": 3}))

    result = cli("merge")

    assert result.code == 0, result.err
    assert state_of(repo)["train"] is None
    assert landed_files(repo, range(1, 4)) == {1, 2, 3}
    assert (repo / "late.txt").read_text() == "late\n"
    assert "late: on main meanwhile" in git(repo, "log", "--format=%s", "main").splitlines()
    assert git(repo, "status", "--porcelain") == ""
    assert gate_runs(repo) == 2 * (1 if mode == "batch" else 3)  # every candidate gated again


# -- base moves only to a tree whose gate passed -------------------------------------------------

GATED_MODES: dict[str, dict[str, Any]] = {
    "serial": {},
    "batch": {"batch": 4, "on_gate_failure": "eject"},
    "parallel": {"parallel": 2, "on_gate_failure": "eject"},
    "parallel-batch": {"parallel": 2, "batch": 2, "on_gate_failure": "eject", "retries": 1},
}


@pytest.mark.parametrize("mode", list(GATED_MODES))
def test_base_only_ever_moves_to_a_clean_tree_whose_gate_passed(
    repo: Path, queue_repo: Any, cli: Cli, tmp_path: Path, mode: str
) -> None:
    """The gate notes the tree it saw; every commit main moves to has a passing one."""
    seen = tmp_path / "trees.txt"
    gate = (
        'tree=$(git rev-parse "HEAD^{tree}"); '
        f'if [ -n "$(git status --porcelain)" ]; then echo "$tree dirty" >> {seen}; exit 1; fi; '
        f'if test -e bad.txt; then echo "$tree fail" >> {seen}; exit 1; fi; '
        f'echo "$tree pass" >> {seen}'
    )
    queue_repo(4, gate, {3: {"bad.txt": "x\n"}}, **GATED_MODES[mode])
    moves_before = len(git(repo, "reflog", "show", "--format=%H", "refs/heads/main").split())

    result = cli("merge")

    assert result.code == (1 if mode == "serial" else 0), result.err
    moves = git(repo, "reflog", "show", "--format=%H", "refs/heads/main").split()
    landed = moves[: len(moves) - moves_before]
    assert landed and landed[0] == rev(repo, "main")
    outcomes = [line.split() for line in seen.read_text().splitlines()]
    assert "dirty" not in {outcome for _, outcome in outcomes}
    passed = {tree for tree, outcome in outcomes if outcome == "pass"}
    for tip in landed:
        assert git(repo, "rev-parse", f"{tip}^{{tree}}") in passed, tip
    start = moves[len(landed)]
    for older, newer in zip([*landed[1:], start], landed, strict=True):  # fast-forwards only
        assert git(repo, "merge-base", "--is-ancestor", older, newer) == ""
    assert not ever_on_main(repo, "bad.txt")


# -- the patch check: a candidate that lost work never lands -------------------------------------


@pytest.mark.parametrize("mode", ["batch", "parallel", "eject"])
def test_a_candidate_that_lost_an_agents_work_never_lands(
    repo: Path, queue_repo: Any, cli: Cli, mocker: MockerFixture, mode: str
) -> None:
    """A faulty replay forgets agent 1's commit: the patch check keeps that candidate off main."""
    settings: dict[str, Any] = {"parallel": 3} if mode == "parallel" else {"batch": 3}
    if mode == "eject":
        settings["on_conflict"] = "eject"
    queue_repo(3, "true", **settings)
    forgotten = rev(repo, "parallel-dev/agent-1")
    real = queue_mod.replay

    def forgetting(
        git_: Any, onto: str, commits: Any, issues: Any = None, *rest: Any
    ) -> str | None:
        kept = [n for n, sha in enumerate(commits) if sha != forgotten]
        wanted = [issues[n] for n in kept] if issues is not None else None
        return real(git_, onto, [commits[n] for n in kept], wanted, *rest)

    mocker.patch.object(queue_mod, "replay", side_effect=forgetting)
    before = gate_runs(repo)

    result = cli("merge")

    assert result.code == 0, result.err
    if mode == "eject":  # set aside: never on main, still to land
        assert "agent 1: ejected: agent 1's rebased work lacks feature_1.py" in result.out
        assert not ever_on_main(repo, "feature_1.py")
        assert landed_files(repo, range(1, 4)) == {2, 3}
        assert statuses(repo)["101"] == "completed"
    else:  # rebased in its own worktree by git, checked again, landed whole
        assert "agent 1: its work does not replay cleanly" in result.out
        assert f"; {gate_runs(repo) - before} gate run(s)" in result.out  # its own run counted
        assert landed_files(repo, range(1, 4)) == {1, 2, 3}
        (entry,) = [e for e in state_of(repo)["merge_history"][-1]["landed"] if e["agent"] == 1]
        assert "feature_1.py" in git(repo, "ls-tree", "--name-only", entry["commit"]).split()


# -- a rebase conflict handed back to its agent, in the queue ------------------------------------

CONFLICTING = {1: {"src/util.py": "VALUE = 2\n"}, 2: {"src/util.py": "VALUE = 3\n"}}
RESOLVING = (
    "printf 'VALUE = 5\\n' > src/util.py && git add src/util.py && "
    "GIT_EDITOR=true git rebase --continue"
)
CARELESS = "git add -A && GIT_EDITOR=true git rebase --continue"


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("agent_script", [RESOLVING, CARELESS], ids=["resolves", "careless"])
def test_a_rebase_conflict_in_the_queue_goes_back_to_its_agent_as_in_the_serial_train(
    repo: Path, queue_repo: Any, cli: Cli, mode: str, agent_script: str
) -> None:
    queue_repo(3, "true", CONFLICTING, on_conflict="agent", **MODES[mode])
    with_agent_command(repo, agent_script)

    result = cli("merge")

    assert "rebase conflict; handing it back to the agent" in result.out
    assert "<<<<<<<" not in git(repo, "log", "-p", "main")
    if agent_script == RESOLVING:
        assert result.code == 0, result.err
        assert (repo / "src/util.py").read_text() == "VALUE = 5\n"
        assert landed_files(repo, range(1, 4)) == {1, 2, 3}
        assert statuses(repo) == {"101": "merged", "102": "merged", "103": "merged"}
    else:  # the markers it committed never land: the train stops as the serial one does
        assert result.code == 1
        assert state_of(repo)["train"]["stop"]["reason"] == "markers"
        stopped = state_of(repo)["train"]["stop"]["agent"]
        assert statuses(repo)[str(100 + stopped)] == "completed"


# -- dependencies on an ejected branch ---------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_an_agent_depending_on_an_ejected_one_is_left_out_with_the_reason(
    repo: Path, queue_repo: Any, cli: Cli, mode: str
) -> None:
    """Agent 2's task needs #101; agent 1 fails its gate and is ejected: 2 must not land."""
    queue_repo(
        3, "! test -e bad.txt", {1: {"bad.txt": "x\n"}}, on_gate_failure="eject", **MODES[mode]
    )
    plan = (repo / "plan.toml").read_text()
    needs = "  agent = 2\n  issue = 102\n"
    commit(repo, {"plan.toml": plan.replace(needs, needs + "  depends_on = [101]\n")}, "deps")

    result = cli("merge")

    assert result.code == 0, result.err
    order = state_of(repo)["merge_history"][-1]["order"]
    assert order.index(1) < order.index(2)
    assert "agent 2: skipped: #102 depends on #101, which is not landing" in result.out
    assert landed_files(repo, range(1, 4)) == {3}
    assert not ever_on_main(repo, "feature_2.py") and not ever_on_main(repo, "bad.txt")
    assert statuses(repo) == {"101": "gate_failed", "102": "completed", "103": "merged"}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_during_a_gate_failure_hand_back_then_continue_takes_the_fix(
    mode: str,
    when: str,
    template_repo: Path,
    tmp_path: Path,
    cli: Cli,
    mocker: MockerFixture,
    fixed_dates: None,
) -> None:
    """Killed before the agent starts, or while it fixes: --continue ends as if never killed."""
    from paradev import runner

    fix = "git rm -q bad.txt && git commit -q -m 'fix: drop bad.txt'"
    clean = queue_outcome(
        tmp_path / "clean", template_repo, cli, mocker, None, mode, agent_script=fix
    )
    assert clean[1] == {"101": "merged", "102": "merged", "103": "merged", "104": "merged"}

    crash = (runner, "hand_back_conflict", when)
    crashed = queue_outcome(
        tmp_path / "crashed", template_repo, cli, mocker, crash, mode, agent_script=fix
    )

    assert crashed == clean


def test_a_continue_leaves_the_next_task_of_an_agent_whose_ejection_was_fixed_completed(
    repo: Path, queue_repo: Any, cli: Cli, worktrees: Path, mocker: MockerFixture
) -> None:
    """Agent 2 is ejected, fixes its gate failure and lands; the train is killed before it
    ends. The next task agent 2 completes meanwhile is no gate failure: --continue leaves it
    completed, and it lands."""
    next_task = (
        '[[batches]]\nname = "next"\n  [[batches.tasks]]\n  agent = 2\n  issue = 201\n'
        '  title = "Next task of agent 2"\n  hours = 1.0\n'
    )
    settings = {"on_gate_failure": "eject", "on_conflict": "agent", "batch": 3}
    queue_repo(3, "! test -e bad.txt", {2: {"bad.txt": "x\n"}}, extra=next_task, **settings)
    with_agent_command(repo, "git rm -q bad.txt && git commit -q -m 'fix: drop bad.txt'")
    _crash(mocker, train_mod, "_end", "before")
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    assert landed_files(repo, range(1, 4)) == {1, 2, 3}
    started = cli("start", "2")
    assert started.code == 0, started.err
    commit(agent_tree(worktrees, 2), {"next_2.py": "N = 2\n"}, "feat: next task of agent 2")
    assert cli("complete", "2").code == 0

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert statuses(repo)["201"] == "completed"
    assert cli("merge").code == 0
    assert statuses(repo)["201"] == "merged"
    assert git(repo, "ls-tree", "--name-only", "main", "next_2.py") == "next_2.py"


@pytest.mark.parametrize("mode", list(MODES))
def test_abort_during_a_conflict_stop_in_the_queue_undoes_the_rebase_it_started(
    repo: Path, queue_repo: Any, cli: Cli, worktrees: Path, mode: str
) -> None:
    queue_repo(3, "true", CONFLICTING, **MODES[mode])
    heads = {a: rev(repo, f"parallel-dev/agent-{a}") for a in range(1, 4)}
    assert cli("merge").code == 1
    stopped = state_of(repo)["train"]["stop"]["agent"]
    tree = agent_tree(worktrees, stopped)
    assert git(tree, "diff", "--name-only", "--diff-filter=U") == "src/util.py"
    landed = landed_files(repo, range(1, 4))

    result = cli("merge", "--abort")

    assert result.code == 0, result.err
    assert f"agent {stopped}: aborted the rebase paradev started" in result.out
    assert git(tree, "status", "--porcelain") == ""
    assert rev(repo, f"parallel-dev/agent-{stopped}") == heads[stopped]
    assert rev(tree, "HEAD") == heads[stopped]
    assert landed_files(repo, range(1, 4)) == landed and stopped not in landed
    assert statuses(repo)[str(100 + stopped)] == "completed"
    assert state_of(repo)["train"] is None


@pytest.mark.parametrize("mode", list(MODES))
def test_the_queue_dry_run_exits_as_the_queue_when_base_tree_blocks_the_fast_forward(
    repo: Path, queue_repo: Any, cli: Cli, snapshot: Callable[[], dict[str, object]], mode: str
) -> None:
    """An untracked file in main's work tree that the landing would overwrite: exit 2, both."""
    queue_repo(3, "true", **MODES[mode])
    (repo / "feature_2.py").write_text("mine, not committed\n")
    before, before_main = snapshot(), rev(repo, "main")

    dry = cli("merge", "--dry-run", "--json")

    assert snapshot() == before
    real = cli("merge")
    assert (dry.code, real.code) == (2, 2), (dry.out, dry.err, real.out, real.err)
    assert "would overwrite its untracked files feature_2.py" in dry.json()["error"]
    assert "would overwrite its untracked files feature_2.py" in real.err
    assert "paradev merge --continue" in real.err  # the landing waits, journaled
    assert rev(repo, "main") == before_main
    assert (repo / "feature_2.py").read_text() == "mine, not committed\n"  # never overwritten
    (repo / "feature_2.py").unlink()
    assert cli("merge", "--continue").code == 0
    assert landed_files(repo, range(1, 4)) == {1, 2, 3}


@pytest.mark.parametrize("mode", list(MODES))
def test_the_dry_run_leaves_out_what_depends_on_an_ejected_agent_as_the_queue_does(
    repo: Path, queue_repo: Any, cli: Cli, mode: str
) -> None:
    """1 -> 2 -> 3 by their dependencies; 2 conflicts with 1 and is ejected; 3 needs #102."""
    queue_repo(3, "true", CONFLICTING, on_conflict="eject", **MODES[mode])
    plan = (repo / "plan.toml").read_text()
    for agent, needs in ((2, 101), (3, 102)):
        task = f"  agent = {agent}\n  issue = {100 + agent}\n"
        plan = plan.replace(task, task + f"  depends_on = [{needs}]\n")
    commit(repo, {"plan.toml": plan}, "deps")

    dry = cli("merge", "--dry-run", "--json")

    assert dry.code == 0, dry.err
    data = dry.json()
    assert data["order"] == [1, 2, 3]
    assert [c["outcome"] for c in data["candidates"]] == ["land", "eject", "skipped"]
    assert [s["agent"] for s in data["skipped"]] == [2, 3]
    assert data["skipped"][1]["reason"] == "#103 depends on #102, which is not landing"
    assert "agent 3: skipped: #103 depends on #102" in dry.err  # --json: the text on stderr

    real = cli("merge")

    assert real.code == 0, real.err
    assert "agent 3: skipped: #103 depends on #102, which is not landing" in real.out
    assert landed_files(repo, range(1, 4)) == {1}
    assert statuses(repo) == {"101": "merged", "102": "completed", "103": "completed"}


@pytest.mark.parametrize("mode", [*MODES, "serial"])
def test_a_worktree_whose_files_git_has_not_looked_at_since_they_were_touched_still_lands(
    repo: Path, queue_repo: Any, cli: Cli, worktrees: Path, mode: str
) -> None:
    """Files touched (or copied back from a backup) with the same bytes are not local changes."""
    lines = [f"line {n}\n" for n in range(1, 8)]
    commit(repo, {"shared.txt": "".join(lines)}, "a file every agent edits, each its own line")
    edits = {
        a: {"shared.txt": "".join([*lines[: 2 * a], f"agent {a}\n", *lines[2 * a + 1 :]])}
        for a in range(1, 4)
    }
    queue_repo(3, "test -f shared.txt", edits, **MODES.get(mode, {}))
    for tree in [repo, *(agent_tree(worktrees, agent) for agent in range(1, 4))]:
        file = tree / "shared.txt"
        shutil.copy(file, file.with_suffix(".tmp"))
        os.replace(file.with_suffix(".tmp"), file)  # a new inode and time, the same bytes

    result = cli("merge")

    assert result.code == 0, result.err
    assert landed_files(repo, range(1, 4)) == {1, 2, 3}
    assert (repo / "shared.txt").read_text().count("agent ") == 3
    for agent in range(1, 4):
        tree = agent_tree(worktrees, agent)
        assert rev(tree, "HEAD") == rev(repo, f"parallel-dev/agent-{agent}")
        assert git(tree, "status", "--porcelain") == ""


@pytest.mark.parametrize(
    ("key", "value"),
    [("mq", {"a": 1}), ("mq.parallel", "2"), ("mq.committer", 7), ("mq.landing", [])],
)
def test_a_queue_journal_field_of_the_wrong_type_is_one_clear_error(
    repo: Path, queue_repo: Any, cli: Cli, key: str, value: Any
) -> None:
    queue_repo(2, "! test -e bad.txt", {2: {"bad.txt": "breaks the gate\n"}}, batch=2)
    assert cli("merge").code == 1  # the gate fails: the journal is left behind
    set_journal_field(repo, key, value)

    result = cli("merge", "--continue")

    assert result.code == 2, result.err
    assert f"train.{key}" in result.err
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def _traced(monkeypatch: pytest.MonkeyPatch, trace: Path, call: Callable[[], Any]) -> Any:
    """``call``'s result, with the git commands it ran listed in ``trace`` (GIT_TRACE2_EVENT)."""
    trace.unlink(missing_ok=True)
    with monkeypatch.context() as patched:
        patched.setenv("GIT_TRACE2_EVENT", str(trace))
        return call()


def _git_commands(trace: Path) -> list[str]:
    """The git subcommands a trace holds, in order (``git -c ... merge-tree`` -> merge-tree)."""
    found = []
    for line in trace.read_text().splitlines() if trace.exists() else []:
        event = json.loads(line)
        if event.get("event") == "start":
            argv = [a for a in event["argv"][1:] if "=" not in a and a != "-c"]
            found.append(argv[0])
    return found


def test_a_replay_merges_only_what_is_not_on_its_tip_and_makes_the_same_commits(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A commit made on the candidate it is replayed onto needs no merge; another one is
    merged with a probe written by paradev itself (no commit-tree for it). Either way the
    replayed commits are those git's own probe gives, and a conflict is still one."""
    from paradev.git import Git

    base = rev(repo, "main")
    commit(repo, {"ahead.txt": "ahead\n"}, "ahead")
    tip = rev(repo, "main")
    git(repo, "checkout", "-q", "-b", "on-tip")
    commit(repo, {"mine.txt": "mine\n"}, "on the tip")
    commit(repo, {"mine.txt": "mine, more\n"}, "more on the tip")
    git(repo, "checkout", "-q", "-b", "older", base)
    commit(repo, {"older.txt": "older\n"}, "on the old base")
    git(repo, "checkout", "-q", "-b", "clash", base)
    commit(repo, {"ahead.txt": "other\n"}, "clashes with ahead")
    git(repo, "checkout", "-q", "main")
    objects, trace, g = repo / ".git" / "objects", tmp_path / "trace.json", Git(repo)
    committer = {
        "GIT_COMMITTER_NAME": "Q",
        "GIT_COMMITTER_EMAIL": "q@x",
        "GIT_COMMITTER_DATE": "1700000000 +0000",
    }

    def both(branch: str) -> tuple[str | None, list[str]]:
        commits = git(repo, "rev-list", "--reverse", f"{tip}..{branch}").split()
        queue_mod._TREES.clear()
        by_git = queue_mod.replay(g, tip, commits, None, committer)
        queue_mod._TREES.clear()
        mine = _traced(
            monkeypatch, trace, lambda: queue_mod.replay(g, tip, commits, None, committer, objects)
        )
        assert mine == by_git
        return mine, _git_commands(trace)

    replayed, ran = both("on-tip")
    assert replayed is not None and "merge-tree" not in ran
    assert git(repo, "rev-list", "--count", f"{tip}..{replayed}") == "2"
    assert git(repo, "diff", "on-tip", replayed) == ""
    replayed, ran = both("older")
    assert replayed is not None and ran.count("merge-tree") == 1
    assert ran.count("commit-tree") == 1  # the replayed commit; the probe is paradev's
    assert git(repo, "show", f"{replayed}:older.txt") == "older"
    assert both("clash")[0] is None


def test_work_that_adds_conflict_markers_is_set_aside_as_markers_while_the_rest_lands(
    repo: Path, queue_repo: Any, cli: Cli
) -> None:
    """The marker and lost-work checks of a candidate run side by side: markers are the
    reason given (not the lost-work look beside it), and only that agent is set aside."""
    marked = "<<<<<<< ours\nA = 1\n=======\nA = 2\n>>>>>>> theirs\n"
    queue_repo(2, "true", {1: {"marked.py": marked}}, parallel=2, on_conflict="eject")

    result = cli("merge")

    assert result.code == 0, result.err
    assert "agent 1: ejected: agent 1's work adds conflict markers to ['marked.py']" in result.out
    assert not ever_on_main(repo, "marked.py")
    assert landed_files(repo, range(1, 3)) == {2}
    assert statuses(repo) == {"101": "completed", "102": "merged"}
