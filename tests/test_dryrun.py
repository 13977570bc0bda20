"""``merge --dry-run`` on real repositories: the real train's exit code, and nothing changed.

Each case builds a repository where the train meets one precondition or stop,
runs the dry run, checks that nothing moved (refs, work trees, state, lock
holder notes), then runs the real ``paradev merge`` and compares exit codes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from paradev import git as paradev_git
from paradev.train.dryrun import dry_run, replay_steps
from paradev.workspace import open_workspace
from tests.helpers import Result, agent_tree, commit, git, rev
from tests.test_train import (
    Holder,
    agent_command,
    configure,
    conflicting,
    state_of,
    stopped_agent,
    work,
)

Cli = Callable[..., Result]


@dataclass
class Case:
    """A repository set up for one case; ``args`` are given to both merge runs."""

    repo: Path
    trees: Path
    cli: Cli
    args: tuple[str, ...] = ()


@pytest.fixture
def case(repo: Path, cli: Cli, worktrees: Path) -> Callable[..., Case]:
    def make(**settings: Any) -> Case:
        configure(repo, **settings)
        assert cli("setup").code == 0
        return Case(repo, worktrees, cli)

    return make


def everything(case: Case) -> dict[str, object]:
    """What a dry run must leave alone: refs, every work tree's status and HEAD, paradev's files."""
    trees = [case.repo, *(agent_tree(case.trees, a) for a in (1, 2, 3))]
    state_dir = case.repo / ".git" / "paradev"
    return {
        "refs": git(case.repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "trees": {
            str(t): (
                git(t, "status", "--porcelain=v1", "--untracked-files=all"),
                git(t, "rev-parse", "HEAD"),
                paradev_git.rebase_in_progress(t) is not None,
            )
            for t in trees
            if (t / ".git").exists()
        },
        "paradev": {
            p.name: p.read_bytes()
            for p in sorted(state_dir.iterdir())
            if p.is_file() and not p.name.endswith((".lock", "cache.json", "landed.json"))
        },  # caches (landed issues, merge-tree results): any reading command refreshes them
        "fetch_head": (case.repo / ".git" / "FETCH_HEAD").exists(),
    }


def same_exit_as_merge(case: Case) -> tuple[Result, Result]:
    """Dry run (nothing must change), then the real train; both results."""
    before = everything(case)
    dry = case.cli("merge", "--dry-run", *case.args)
    assert everything(case) == before, dry.out + dry.err
    real = case.cli("merge", *case.args)
    assert dry.code == real.code, (dry.out, dry.err, real.out, real.err)
    return dry, real


# -- preconditions: exit 2, the same words -----------------------------------------------------


def uncommitted_in_agent(c: Case) -> None:
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    (agent_tree(c.trees, 1) / "src" / "util.py").write_text("VALUE = 'dirty'\n")


def untracked_in_agent_with_gate(c: Case) -> None:
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    (agent_tree(c.trees, 1) / "notes.txt").write_text("scratch\n")


def rebase_in_progress_in_agent(c: Case) -> None:
    work(c.cli, c.trees, 1, {"src/util.py": "VALUE = 'one'\n"})
    tree = agent_tree(c.trees, 1)
    git(tree, "checkout", "-q", "-b", "side", "HEAD~1")
    commit(tree, {"src/util.py": "VALUE = 'side'\n"}, "side")
    git(tree, "checkout", "-q", "parallel-dev/agent-1")
    git(tree, "rebase", "side", check=False)


def other_branch_in_agent(c: Case) -> None:
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    git(agent_tree(c.trees, 1), "switch", "-q", "-c", "elsewhere")


def merge_in_progress_in_base(c: Case) -> None:
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    git(c.repo, "switch", "-q", "-c", "side")
    commit(c.repo, {"src/util.py": "VALUE = 'side'\n"}, "side")
    git(c.repo, "switch", "-q", "main")
    commit(c.repo, {"src/util.py": "VALUE = 'main'\n"}, "main")
    git(c.repo, "merge", "side", check=False)


def dirty_base(c: Case) -> None:
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    (c.repo / "README.md").write_text("edited, not committed\n")


def missing_worktree(c: Case) -> None:
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    import shutil

    shutil.rmtree(agent_tree(c.trees, 1))


def train_in_progress(c: Case) -> None:
    conflicting(c.cli, c.trees)
    assert c.cli("merge").code == 1


def push_without_remote(c: Case) -> None:
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    c.args = ("--push",)


PRECONDITIONS = {
    "uncommitted changes in an agent's tree": (uncommitted_in_agent, {}, "agent 1's worktree"),
    "untracked file where the gate runs": (
        untracked_in_agent_with_gate,
        {"gate": "true"},
        "notes.txt",
    ),
    "a rebase paradev did not start": (rebase_in_progress_in_agent, {}, "a rebase is in progress"),
    "another branch checked out": (other_branch_in_agent, {}, "does not have parallel-dev/agent-1"),
    "a merge in progress where base is": (merge_in_progress_in_base, {}, "a merge is in progress"),
    "uncommitted changes in base's tree": (dirty_base, {}, "README.md"),
    "a missing worktree": (missing_worktree, {}, "agent 1 has no worktree"),
    "a train already in progress": (train_in_progress, {}, "already in progress"),
    "push without a remote": (push_without_remote, {}, "pushing needs a remote"),
}


@pytest.mark.parametrize("name", list(PRECONDITIONS))
def test_a_precondition_refuses_the_dry_run_as_the_train(
    name: str, case: Callable[..., Case]
) -> None:
    make, settings, words = PRECONDITIONS[name]
    c = case(**settings)
    make(c)

    dry, real = same_exit_as_merge(c)

    assert dry.code == 2
    assert words in dry.err
    assert dry.err.splitlines()[0] == real.err.splitlines()[0]  # one check, one message


def test_a_lock_a_running_agent_holds_refuses_both(case: Callable[..., Case]) -> None:
    c = case()
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    holder = Holder(c.repo, 1, "paradev run-batch")
    try:
        dry, _ = same_exit_as_merge(c)
    finally:
        holder.release()
    assert dry.code == 2
    assert f"agent 1 is busy: paradev run-batch (pid {holder.proc.pid})" in dry.err


def test_a_train_driven_elsewhere_refuses_both(case: Callable[..., Case]) -> None:
    c = case()
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    code = (
        "import sys; from pathlib import Path; from paradev.state import StateStore\n"
        "with StateStore(Path(sys.argv[1])).exclusive('train.lock', wait=0, busy='x'):\n"
        "    print('ready', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(c.repo / ".git")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    try:
        dry, _ = same_exit_as_merge(c)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    assert dry.code == 2
    assert "another paradev merge is driving" in dry.err


def push_from_elsewhere(remote: Path, tmp_path: Path, files: dict[str, str | bytes | None]) -> None:
    """Someone else pushes a commit to the remote's main."""
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    commit(other, files, "theirs")
    git(other, "push", "-q", "origin", "main")


def test_a_diverged_remote_refuses_both_and_the_dry_run_writes_no_ref(
    repo: Path, remote: Path, case: Callable[..., Case], tmp_path: Path
) -> None:
    c = case(remote="origin")
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    push_from_elsewhere(remote, tmp_path, {"theirs.txt": "pushed elsewhere\n"})
    commit(repo, {"ours.txt": "local only\n"}, "ours")

    dry, _ = same_exit_as_merge(c)  # everything() holds refs/remotes: the dry run fetched none

    assert dry.code == 2
    assert "main and origin/main have diverged" in dry.err


def test_a_remote_ahead_is_simulated_from_its_tip(
    repo: Path, remote: Path, case: Callable[..., Case], tmp_path: Path
) -> None:
    c = case(remote="origin")
    work(c.cli, c.trees, 1, {"src/util.py": "VALUE = 'agent'\n"})
    push_from_elsewhere(remote, tmp_path, {"src/util.py": "VALUE = 'remote'\n"})

    dry, _ = same_exit_as_merge(c)

    assert dry.code == 1  # the conflict is with what only the remote has
    assert "main: would fast-forward to origin/main" in dry.out
    assert "agent 1" in dry.err and "src/util.py" in dry.err
    assert stopped_agent(repo) == 1


# -- stops and refusals met on the way ---------------------------------------------------------


def test_a_conflict_stop_exits_1_and_names_agent_and_path(case: Callable[..., Case]) -> None:
    c = case()
    conflicting(c.cli, c.trees)

    dry, _ = same_exit_as_merge(c)

    assert dry.code == 1
    predicted = [line for line in dry.out.splitlines() if "the train stops here" in line]
    assert len(predicted) == 1 and "src/util.py (content, lines 1-5)" in predicted[0]
    agent = int(predicted[0].split()[1].rstrip(":"))
    assert agent == stopped_agent(c.repo)
    assert f"would stop at agent {agent}: its rebase onto main would conflict in src/util.py" in (
        dry.err
    )
    landed = [line for line in dry.out.splitlines() if "would land" in line]
    assert len(state_of(c.repo)["train"]["landed"]) == len(landed)


def test_a_conflict_handed_back_is_no_stop(case: Callable[..., Case], tmp_path: Path) -> None:
    c = case(on_conflict="agent")
    script = tmp_path / "resolver"
    script.write_text(
        "#!/bin/sh\nprintf 'VALUE = 3\\n' > src/util.py && git add -A"
        " && GIT_EDITOR=true git rebase --continue\n"
    )
    script.chmod(0o755)
    agent_command(c.repo, script)
    conflicting(c.cli, c.trees)

    dry, _ = same_exit_as_merge(c)

    assert dry.code == 0
    assert "-> handed back to the agent" in dry.out
    assert "depends on how agent" in dry.out


def stops_both(c: Case, reason: str) -> Result:
    """The dry run exits 1 and the real train stops for ``reason``; the dry run's result."""
    dry, _ = same_exit_as_merge(c)
    assert dry.code == 1
    assert state_of(c.repo)["train"]["stop"]["reason"] == reason
    return dry


def test_committed_conflict_markers_stop_both(case: Callable[..., Case]) -> None:
    c = case()
    work(
        c.cli,
        c.trees,
        1,
        {"src/util.py": "<<<<<<< HEAD\nVALUE = 1\n=======\nVALUE = 2\n>>>>>>> x\n"},
    )

    dry = stops_both(c, "markers")

    assert "conflict markers in src/util.py" in dry.err


def test_work_a_rebase_drops_stops_both(case: Callable[..., Case]) -> None:
    """An edit made only in a merge commit: git rebase drops it, the patch check stops."""
    c = case()
    assert c.cli("start", "1").code == 0
    tree = agent_tree(c.trees, 1)
    commit(tree, {"a.py": "A = 1\n"}, "a")
    git(tree, "switch", "-q", "-c", "side", "HEAD~1")
    commit(tree, {"b.py": "B = 1\n"}, "b")
    git(tree, "switch", "-q", "parallel-dev/agent-1")
    git(tree, "merge", "-q", "--no-commit", "side")
    (tree / "README.md").write_text("# changed only in the merge\n")
    git(tree, "add", "README.md")
    git(tree, "commit", "-q", "-m", "merge side")
    git(tree, "branch", "-q", "-D", "side")
    assert c.cli("complete", "1").code == 0
    commit(c.repo, {"base.py": "moved\n"}, "base moves")  # so the train must rebase

    dry = stops_both(c, "patch-check")

    assert "lack part of its completed work: paths README.md" in dry.err


def test_untracked_files_the_rebase_would_overwrite_refuse_both(case: Callable[..., Case]) -> None:
    c = case()
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    commit(c.repo, {"new.py": "on main\n"}, "main adds new.py")
    (agent_tree(c.trees, 1) / "new.py").write_text("the agent's own, untracked\n")

    dry, _ = same_exit_as_merge(c)

    assert dry.code == 2
    assert "agent 1" in dry.err and "new.py" in dry.err and "untracked" in dry.err


def test_untracked_files_the_fast_forward_would_overwrite_refuse_both(
    case: Callable[..., Case],
) -> None:
    c = case()
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    (c.repo / "one.py").write_text("someone's scratch file\n")

    dry, _ = same_exit_as_merge(c)

    assert dry.code == 2
    assert "fast-forward of main" in dry.err and "one.py" in dry.err


def test_tasks_not_completed_are_left_out_by_both(case: Callable[..., Case]) -> None:
    c = case()
    work(c.cli, c.trees, 1, {"one.py": "1\n"})
    assert c.cli("start", "1").code == 0  # its next task, #21: in progress
    work(c.cli, c.trees, 2, {"two.py": "2\n"})
    note = "agent 1: #21 is still in progress; not landed"
    assert c.cli("merge", "--dry-run", "--json").json()["skipped"] == [{"agent": 1, "reason": note}]

    dry, real = same_exit_as_merge(c)

    assert dry.code == 0
    assert note in dry.out and note in real.out
    assert "agent 2: would land (1 commit(s) rebased cleanly)" in dry.out


# -- the simulation -----------------------------------------------------------------------------


def test_a_branch_that_edits_then_reverts_is_replayed_commit_by_commit(
    case: Callable[..., Case],
) -> None:
    """Merged at once it is clean (it ends as agent 1 does); its rebase conflicts at once."""
    c = case()
    work(c.cli, c.trees, 1, {"src/util.py": "VALUE = 'one'\n"})
    assert c.cli("start", "2").code == 0
    commit(agent_tree(c.trees, 2), {"src/util.py": "VALUE = 'two'\n"})
    commit(agent_tree(c.trees, 2), {"src/util.py": "VALUE = 'one'\n"})
    assert c.cli("complete", "2").code == 0

    steps = dry_run(open_workspace(), lambda _: None).steps

    outcomes = {s.agent: s.outcome for s in steps}
    assert sorted(outcomes.values()) == ["conflict", "land"]
    assert c.cli("merge").code == 1
    assert outcomes[stopped_agent(c.repo)] == "conflict"


def test_the_simulated_landing_is_the_real_tree(case: Callable[..., Case]) -> None:
    """Disjoint branches (merged once) and overlapping ones (replayed) end in main's real tree."""
    c = case()
    app = (c.repo / "src" / "app.py").read_text()
    work(c.cli, c.trees, 1, {"src/app.py": "X = 1\n" + app})
    work(c.cli, c.trees, 2, {"two.py": "2\n", "three.py": "3\n"}, n=2)
    late = app.replace("return 19", "return 'nineteen'")
    work(c.cli, c.trees, 3, {"src/app.py": late, "own.py": "3\n", "src/util.py": "V = 3\n"}, n=3)
    ws = open_workspace()
    from paradev.order import select_agents
    from paradev.train.checks import merge_order
    from paradev.train.dryrun import Simulation

    sim = Simulation(ws, gating=False)
    steps = sim.run(merge_order(ws, select_agents(ws).agents, save=False))

    assert [s.outcome for s in steps] == ["land"] * 3
    assert c.cli("merge").code == 0
    assert paradev_git.tree_of(ws.git, sim.base) == paradev_git.tree_of(ws.git, rev(c.repo, "main"))


def test_commits_that_touch_nothing_base_changed_join_the_step_before(repo: Path) -> None:
    fork = rev(repo, "HEAD")
    own = commit(repo, {"own.py": "1\n"})
    shared = commit(repo, {"src/util.py": "VALUE = 2\n"})
    more = commit(repo, {"own.py": "2\n"})
    again = commit(repo, {"own.py": "3\n"})
    commits = paradev_git.branch_commits(paradev_git.Git(repo), fork, again)

    assert [c.paths for c in commits] == [("own.py",), ("src/util.py",), ("own.py",), ("own.py",)]
    assert replay_steps(commits, {"src/util.py"}) == [(fork, own, own), (own, shared, again)]
    assert replay_steps(commits, set()) == [(fork, own, again)]
    assert replay_steps(commits, {"own.py"}) == [
        (fork, own, shared),  # src/util.py: nothing base changed
        (shared, more, more),
        (more, again, again),
    ]


def test_dry_run_json_carries_the_steps_and_exits_like_the_train(
    case: Callable[..., Case],
) -> None:
    c = case()
    conflicting(c.cli, c.trees)

    dry = c.cli("merge", "--dry-run", "--json")

    assert dry.code == 1
    data = dry.json()
    assert data["dry_run"] is True
    assert {s["outcome"] for s in data["steps"]} >= {"conflict", "land"}
