"""run-batch and the conflict hand-back, with real processes as agents and real git repositories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from pytest_mock import MockerFixture

from paradev import processes, runner
from paradev.plan import Task
from paradev.state import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    INTERRUPTED,
    MERGED,
    PLANNED,
    StateStore,
)
from paradev.train.messages import squash_message
from paradev.workspace import open_workspace
from tests.helpers import (
    STUBBORN,
    Result,
    agent_tree,
    commit,
    git,
    gone,
    rev,
    signal_and_wait,
    start_paradev,
    stopped_together,
    wait_for_file,
)

CliFn = Callable[..., Result]

# A scripted agent: what it does depends on the issue (BEHAVIOUR, filled in per test).
AGENT = r"""
import json, os, subprocess, sys, time
from pathlib import Path

BEHAVIOUR = json.loads(Path(sys.argv[1]).read_text())
RECORD = Path(sys.argv[2])
issue = os.environ["PARADEV_ISSUE"]
env = {k: v for k, v in os.environ.items() if k.startswith("PARADEV_")}
RECORD.mkdir(exist_ok=True)
(RECORD / f"{issue}.json").write_text(json.dumps({"argv": sys.argv[3:], "env": env,
                                                 "cwd": os.getcwd()}))
action = BEHAVIOUR.get(issue, "commit")
print(f"agent working on #{issue}", flush=True)
if action == "commit":
    Path(f"done-{issue}.txt").write_text(f"issue {issue}\n")
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"work on #{issue}"], check=True)
elif action == "edit":  # a tracked file changed and left uncommitted
    Path("src/util.py").write_text(f"VALUE = {issue}\n")
elif action == "scratch":  # real work in a declared file, plus notes nobody asked to land
    Path("src").mkdir(exist_ok=True)
    Path(f"src/feature_{issue}.py").write_text(f"X = {issue}\n")
    Path("src/util.py").write_text(f"VALUE = {issue}\n")
    Path("NOTES.md").write_text("scratch notes\n")
    Path("tmp").mkdir(exist_ok=True)
    Path("tmp/plan.txt").write_text("what I tried\n")
elif action == "fail":
    print("boom: cannot do it", flush=True)
    sys.exit(3)
elif action == "hang":
    child = subprocess.Popen(["sleep", "60"])
    (RECORD / f"{issue}.child").write_text(str(child.pid))
    time.sleep(60)
elif action == "resolve":  # keep both sides of every conflict, then continue the rebase
    unmerged = subprocess.run(["git", "diff", "--name-only", "--diff-filter=U"],
                              capture_output=True, text=True, check=True).stdout.split()
    for name in unmerged:
        lines = Path(name).read_text().splitlines(keepends=True)
        markers = ("<<<<<<<", "=======", ">>>>>>>")
        Path(name).write_text("".join(l for l in lines if not l.startswith(markers)))
        subprocess.run(["git", "add", "--", name], check=True)
    subprocess.run(["git", "rebase", "--continue"], check=True,
                   env={**os.environ, "GIT_EDITOR": "true"})
"""


def configure(root: Path, **agents: Any) -> None:
    """Set keys of [agents] (and hooks_*/merge_* keys of their sections) in plan.toml."""
    path = root / "plan.toml"
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    for key, value in agents.items():
        section, _, name = key.partition("__")
        if name:
            doc.setdefault(section, tomlkit.table())[name] = value
        else:
            doc["agents"][key] = value
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")


@pytest.fixture
def scripted(set_up: Path, repo: Path, tmp_path: Path) -> Callable[..., Path]:
    """Point agents.command at the scripted agent; returns the folder where it records runs."""

    def make(behaviour: dict[int, str] | None = None, timeout: float = 60, **extra: Any) -> Path:
        script = tmp_path / "agent.py"
        script.write_text(AGENT, encoding="utf-8")
        spec = tmp_path / "behaviour.json"
        spec.write_text(json.dumps({str(k): v for k, v in (behaviour or {}).items()}))
        record = tmp_path / "record"
        command = [sys.executable, str(script), str(spec), str(record)]
        command += ["{prompt_file}", "{title}", "{issue}", "{branch}", "{agent}", "{worktree}"]
        configure(repo, command=command, timeout=timeout, **extra)
        return record

    return make


def state_of(repo: Path) -> Any:
    return open_workspace(repo).store.read()


def mark_merged(repo: Path, *issues: int) -> None:
    ws = open_workspace(repo)
    with ws.store.update() as state:
        for issue in issues:
            task = ws.plan.task(issue)
            assert task is not None
            state.task(issue, task.agent).status = MERGED


# -- launching a batch -----------------------------------------------------------------------


def test_run_batch_launches_every_agent_and_completes_their_tasks(
    scripted: Callable[..., Path], repo: Path, worktrees: Path, cli: CliFn
) -> None:
    record = scripted({12: "edit"})

    result = cli("run-batch")

    assert result.code == 0, result.err
    assert "3 completed, 0 not completed" in result.out
    state = state_of(repo)
    assert [state.status(i) for i in (11, 12, 13, 21)] == [COMPLETED] * 3 + [PLANNED]
    assert state.tasks[11].files_modified == ["done-11.txt"]
    assert state.tasks[12].files_modified == ["src/util.py"]
    # what the agent left uncommitted was committed with a conventional message
    tree2 = agent_tree(worktrees, 2)
    assert git(tree2, "log", "-1", "--format=%s") == "feat: Add the init command (#12)"
    assert git(tree2, "status", "--porcelain") == ""
    assert state.tasks[12].head_commit == rev(repo, "parallel-dev/agent-2")
    # the agent ran in its worktree with the placeholders and PARADEV_* variables
    seen = json.loads((record / "11.json").read_text())
    prompt = Path(seen["argv"][0])
    assert seen["argv"][1:] == [
        "Add the status command",
        "11",
        "parallel-dev/agent-1",
        "1",
        str(agent_tree(worktrees, 1)),
    ]
    assert Path(seen["cwd"]) == agent_tree(worktrees, 1)
    assert seen["env"]["PARADEV_PROMPT_FILE"] == str(prompt)
    assert seen["env"]["PARADEV_TITLE"] == "Add the status command"
    assert seen["env"]["PARADEV_BRANCH"] == "parallel-dev/agent-1"
    assert seen["env"]["PARADEV_WORKTREE"] == str(agent_tree(worktrees, 1))
    assert seen["env"]["PARADEV_AGENT"] == "1"
    assert seen["env"]["PARADEV_MODE"] == "task"
    # the prompt names the task and the other agents of the batch
    text = prompt.read_text()
    assert "# Issue #11: Add the status command" in text
    assert "agent 2: #12 Add the init command" in text
    assert "agent 3: #13 Add the health command" in text
    # the log holds the agent's output, and the state points at it
    log = Path(state.tasks[11].log)
    assert log.is_relative_to(repo / ".git" / "paradev")
    assert "agent working on #11" in log.read_text()


# -- what an agent leaves uncommitted -------------------------------------------------------------


def _declare_files(repo: Path, index: int, files: list[str]) -> None:
    doc = tomlkit.parse((repo / "plan.toml").read_text())
    doc["batches"][0]["tasks"][index]["files"] = files
    (repo / "plan.toml").write_text(tomlkit.dumps(doc))


def _committed_by_paradev(tree: Path) -> list[str]:
    """The paths of the leftovers commit, as its message lists them."""
    body = git(tree, "log", "-1", "--format=%b")
    assert "committed by paradev run-batch" in body
    return [line[2:] for line in body.splitlines() if line.startswith("- ")]


def test_scratch_files_stay_in_place_and_only_declared_new_files_are_committed(
    scripted: Callable[..., Path], repo: Path, worktrees: Path, cli: CliFn
) -> None:
    scripted({12: "scratch"})
    _declare_files(repo, 1, ["src/feature_*.py"])

    result = cli("run-batch", "--agents", "2")

    assert result.code == 0, result.err
    tree = agent_tree(worktrees, 2)
    landed = git(tree, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert landed == ["src/feature_12.py", "src/util.py"]
    assert _committed_by_paradev(tree) == ["src/feature_12.py", "src/util.py"]
    # the notes are untouched, still untracked, and reported
    assert (tree / "NOTES.md").read_text() == "scratch notes\n"
    assert (tree / "tmp" / "plan.txt").read_text() == "what I tried\n"
    assert git(tree, "status", "--porcelain", "--untracked-files=all").splitlines() == [
        "?? NOTES.md",
        "?? tmp/plan.txt",
    ]
    record = state_of(repo).tasks[12]
    assert record.status == COMPLETED
    assert record.files_modified == ["src/feature_12.py", "src/util.py"]
    assert record.left_uncommitted == ["NOTES.md", "tmp/plan.txt"]
    assert (
        "2 path(s) left uncommitted (not in the task's declared files): NOTES.md, tmp/plan.txt"
        in (result.out)
    )
    status = cli("status")
    assert "left uncommitted by #12: NOTES.md, tmp/plan.txt" in status.out
    assert cli("status", "--json").json()["agents"]["2"]["completed_tasks"][0][
        "left_uncommitted"
    ] == ["NOTES.md", "tmp/plan.txt"]


def test_a_task_without_declared_files_gets_no_new_file_committed_and_is_told_so(
    scripted: Callable[..., Path], repo: Path, worktrees: Path, cli: CliFn
) -> None:
    scripted({12: "scratch"})

    result = cli("run-batch", "--agents", "2")

    assert result.code == 0, result.err
    tree = agent_tree(worktrees, 2)
    assert _committed_by_paradev(tree) == ["src/util.py"]
    left = ["NOTES.md", "src/feature_12.py", "tmp/plan.txt"]
    assert state_of(repo).tasks[12].left_uncommitted == left
    assert (
        "3 path(s) left uncommitted (the task declares no files, so paradev commits no new "
        "file for it): NOTES.md, src/feature_12.py, tmp/plan.txt"
    ) in result.out
    ws = open_workspace(repo)
    task = ws.plan.task(12)
    assert task is not None
    assert (
        "commit every new file yourself, or it does not land"
        in runner.prompt_path(ws, task).read_text()
    )


@pytest.mark.parametrize(
    ("mode", "committed", "left"),
    [
        ("all", ["NOTES.md", "src/feature_12.py", "src/util.py", "tmp/plan.txt"], []),
        ("none", [], ["NOTES.md", "src/feature_12.py", "src/util.py", "tmp/plan.txt"]),
    ],
)
def test_commit_leftovers_all_and_none(
    scripted: Callable[..., Path],
    repo: Path,
    worktrees: Path,
    cli: CliFn,
    mode: str,
    committed: list[str],
    left: list[str],
) -> None:
    scripted({12: "scratch"}, commit_leftovers=mode)
    _declare_files(repo, 1, ["src/feature_*.py"])

    result = cli("run-batch", "--agents", "2")

    tree = agent_tree(worktrees, 2)
    record = state_of(repo).tasks[12]
    if committed:
        assert result.code == 0, result.err
        assert record.files_modified == committed
        assert record.left_uncommitted == left
        assert _committed_by_paradev(tree) == committed
    else:  # nothing committed: the task is not done (it would land nothing)
        assert result.code == 1
        assert rev(tree, "HEAD") == rev(repo, "main")
        assert record.status == FAILED
        assert f"4 path(s) left uncommitted: {', '.join(left)}" in (record.error or "")


def test_failing_agent_marks_its_task_failed_and_exits_1(
    scripted: Callable[..., Path], repo: Path, cli: CliFn
) -> None:
    scripted({12: "fail"})

    result = cli("run-batch")

    assert result.code == 1
    assert "#12 (failed: exit code 3)" in result.err
    state = state_of(repo)
    assert state.status(12) == FAILED
    assert state.status(11) == state.status(13) == COMPLETED
    assert "exit code 3" in (state.tasks[12].error or "")
    log = Path(state.tasks[12].log)
    assert str(log) in (state.tasks[12].error or "")
    assert "boom: cannot do it" in log.read_text()


def test_failed_task_is_started_again_by_the_next_run(
    scripted: Callable[..., Path], repo: Path, cli: CliFn
) -> None:
    scripted({12: "fail"})
    assert cli("run-batch").code == 1
    scripted({})

    result = cli("run-batch")

    assert result.code == 0, result.err
    assert "#11 (agent 1) is already completed" in result.out
    assert "1 completed, 0 not completed" in result.out
    assert state_of(repo).status(12) == COMPLETED


def test_a_retried_task_starts_on_the_current_base(
    scripted: Callable[..., Path], repo: Path, worktrees: Path, cli: CliFn
) -> None:
    scripted({11: "fail"})
    assert cli("run-batch", "--agents", "1").code == 1
    new_base = commit(repo, {"later.txt": "landed meanwhile\n"}, "base moves on")
    scripted({})

    result = cli("run-batch", "--agents", "1")

    assert result.code == 0, result.err
    tree = agent_tree(worktrees, 1)
    assert git(tree, "rev-parse", "HEAD~1") == new_base
    assert state_of(repo).tasks[11].base_commit == new_base


def test_timeout_stops_the_whole_process_group(
    scripted: Callable[..., Path], repo: Path, cli: CliFn
) -> None:
    record = scripted({11: "hang"}, timeout=1)

    result = cli("run-batch", "--agents", "1")

    assert result.code == 1
    state = state_of(repo)
    assert state.status(11) == FAILED
    assert "timed out after 1s" in (state.tasks[11].error or "")
    assert state.status(12) == PLANNED  # not in --agents
    assert gone(int((record / "11.child").read_text()))


def test_title_that_looks_like_shell_arrives_verbatim(
    scripted: Callable[..., Path], repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    record = scripted({})
    title = "$(touch pwned) `touch pwned2`; rm -rf {worktree} \"' {title}"
    doc = tomlkit.parse((repo / "plan.toml").read_text())
    doc["batches"][0]["tasks"][0]["title"] = title
    (repo / "plan.toml").write_text(tomlkit.dumps(doc))

    result = cli("run-batch", "--agents", "1")

    assert result.code == 0, result.err
    seen = json.loads((record / "11.json").read_text())
    assert seen["argv"][1] == title  # {worktree} inside the title is not expanded either
    assert seen["env"]["PARADEV_TITLE"] == title
    assert not list(tmp_path.rglob("pwned*"))


def test_escape_sequences_in_a_title_are_printed_escaped_and_kept_out_of_commits(
    scripted: Callable[..., Path], repo: Path, worktrees: Path, cli: CliFn
) -> None:
    scripted({11: "edit"})
    title = "\x1b[31mred\x1b]0;pwned\x07 status\x1b[0m"
    doc = tomlkit.parse((repo / "plan.toml").read_text())
    doc["batches"][0]["tasks"][0]["title"] = title
    (repo / "plan.toml").write_text(tomlkit.dumps(doc))

    dry = cli("run-batch", "--agents", "1", "--dry-run")
    result = cli("run-batch", "--agents", "1")

    assert result.code == 0, result.err
    shown = "\\x1b[31mred\\x1b]0;pwned\\x07 status\\x1b[0m"
    for out in (dry.out, result.out):
        assert shown in out
        assert "\x1b" not in out and "\x07" not in out
    subject = git(agent_tree(worktrees, 1), "log", "-1", "--format=%s")
    assert subject == "feat: red status (#11)"


def test_no_launch_and_status_print_an_escaped_title(set_up: Path, repo: Path, cli: CliFn) -> None:
    doc = tomlkit.parse((repo / "plan.toml").read_text())
    doc["batches"][0]["tasks"][0]["title"] = "clear \x1b[2J\x1b[H screen\x9b"
    (repo / "plan.toml").write_text(tomlkit.dumps(doc))

    started = cli("run-batch", "--agents", "1", "--no-launch")
    status = cli("status")

    shown = "#11 clear \\x1b[2J\\x1b[H screen\\x9b"
    for out in (started.out, status.out):
        assert shown in out
        assert "\x1b" not in out and "\x9b" not in out


def test_missing_agent_program_is_refused_before_anything_starts(
    set_up: Path, repo: Path, cli: CliFn, snapshot: Callable[[], dict[str, object]]
) -> None:
    configure(repo, command=["no-such-agent-program-xyz", "{prompt_file}"])
    before = snapshot()

    result = cli("run-batch", "--agents", "2")

    assert result.code == 2
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert "'no-such-agent-program-xyz' (agent 2) is not on PATH" in result.err
    assert snapshot() == before
    assert not (repo / ".git" / "paradev" / "logs").exists()


def test_an_agent_program_that_cannot_start_fails_the_task_cleanly(
    set_up: Path, repo: Path, cli: CliFn, tmp_path: Path
) -> None:
    program = tmp_path / "broken-agent"  # on disk and executable, its interpreter is not
    program.write_text("#!/no/such/interpreter\n", encoding="utf-8")
    program.chmod(0o755)
    configure(repo, command=[str(program), "{prompt_file}"])

    result = cli("run-batch", "--agents", "2")

    assert result.code == 1
    assert "Traceback" not in result.err
    assert f"cannot launch {str(program)!r}" in result.err
    assert state_of(repo).status(12) == FAILED


def test_ctrl_c_stops_every_agent_and_leaves_the_state_true(
    scripted: Callable[..., Path], repo: Path, cli: CliFn, mocker: MockerFixture
) -> None:
    record = scripted({11: "hang", 12: "hang"})
    real_pause = runner.pause
    polls = {"n": 0}

    def pause_then_interrupt() -> None:
        polls["n"] += 1
        if all((record / f"{i}.child").exists() for i in (11, 12)) or polls["n"] > 300:
            raise KeyboardInterrupt
        real_pause()

    mocker.patch.object(runner, "pause", pause_then_interrupt)

    result = cli("run-batch", "--agents", "1,2")

    assert result.code == 130
    state = state_of(repo)
    for issue in (11, 12):
        assert state.status(issue) == INTERRUPTED
        assert "interrupted (Ctrl-C)" in (state.tasks[issue].error or "")
        assert gone(int((record / f"{issue}.child").read_text()))


def _stubborn_agents(repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """agents.command = a script that ignores SIGTERM, as does its child; (events, pid folder)."""
    script, events, pids = tmp_path / "stubborn.py", tmp_path / "events", tmp_path / "pids"
    script.write_text(STUBBORN)
    pids.mkdir()
    configure(
        repo, command=[sys.executable, str(script), str(events), "{issue}", f"{pids}/{{issue}}"]
    )
    return events, pids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_every_agent_at_once_and_record_them_interrupted(
    set_up: Path, repo: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    events, pids = _stubborn_agents(repo, tmp_path)
    paradev = start_paradev(repo, "run-batch")
    agents = [int(p) for i in (11, 12, 13) for p in wait_for_file(pids / str(i), paradev).split()]

    err, survivors = signal_and_wait(paradev, sig, agents)

    assert survivors == []
    assert paradev.returncode == 128 + sig
    assert f"interrupted ({sig.name})" in err
    assert "Traceback" not in err
    assert stopped_together(events.read_text(), ["11", "12", "13"])
    state = state_of(repo)
    for issue in (11, 12, 13):
        assert state.status(issue) == INTERRUPTED
        assert f"interrupted ({sig.name})" in (state.tasks[issue].error or "")
    assert "#11 interrupted" in run_status(repo)


def test_a_signal_while_an_agent_is_being_started_records_its_task_interrupted(
    set_up: Path, repo: Path, cli: CliFn, tmp_path: Path, mocker: MockerFixture
) -> None:
    pidfile = tmp_path / "agent.pid"
    waiting = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"
    configure(repo, command=[sys.executable, "-c", waiting, str(pidfile)])

    def signalled_while_recording(*args: Any, **kwargs: Any) -> None:
        wait_for_file(pidfile)
        raise processes.Interrupted(signal.SIGTERM)  # the agent runs, its launch not yet noted

    mocker.patch.object(runner, "record_launch", side_effect=signalled_while_recording)

    result = cli("run-batch", "--agents", "3")

    assert result.code == 128 + signal.SIGTERM, result.err
    assert gone(int(pidfile.read_text()))
    state = state_of(repo)
    assert state.status(13) == INTERRUPTED
    assert "interrupted (SIGTERM)" in (state.tasks[13].error or "")
    log = state.tasks[13].log  # the launch never recorded it; status still shows the log
    assert log is not None and Path(log).exists()


def run_status(repo: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "paradev", "status"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_an_agent_left_running_by_a_killed_run_batch_is_never_started_twice(
    scripted: Callable[..., Path], repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    _, pids = _stubborn_agents(repo, tmp_path)
    configure(repo, timeout=10)  # a second copy (the bug) would be stopped, not hang the test
    paradev = start_paradev(repo, "run-batch", "--agents", "1")
    agent, child = (int(p) for p in wait_for_file(pids / "11", paradev).split())
    paradev.kill()  # SIGKILL: no cleanup; the agent lives on in its own session
    paradev.communicate()
    try:
        refused = cli("run-batch", "--agents", "1")

        assert refused.code == 2
        assert f"agent 1 launched by an earlier run-batch is still running #11 (pid {agent})" in (
            refused.err
        )
        assert state_of(repo).status(11) == IN_PROGRESS
        assert f"(2h; agent pid {agent} running)" in cli("status").out
    finally:
        os.killpg(agent, signal.SIGKILL)
    while not (gone(agent) and gone(child)):
        runner.pause()
    assert f"agent pid {agent} gone: 'paradev run-batch' starts the task again" in cli("status").out
    snapshot = repo / ".git" / "paradev" / "run.json"  # a live `paradev run` records its end
    snapshot.write_text(json.dumps({"pid": os.getpid(), "running": [11]}))
    assert f"agent pid {agent} exited: the running 'paradev run' records it" in cli("status").out
    snapshot.unlink()
    scripted({})

    again = cli("run-batch", "--agents", "1")

    assert again.code == 0, again.err
    assert f"(pid {agent}) from an earlier run is gone; the task counts as interrupted" in again.out
    assert state_of(repo).status(11) == COMPLETED


def test_a_recorded_pid_reused_by_another_process_is_not_taken_for_the_agent(
    scripted: Callable[..., Path], repo: Path, cli: CliFn
) -> None:
    scripted({})
    assert cli("run-batch", "--agents", "1", "--no-launch").code == 0
    with open_workspace(repo).store.update() as state:  # as if the agent had this test's pid
        record = state.tasks[11]
        record.agent_pid = os.getpid()
        record.agent_started = (processes.start_time(os.getpid()) or 0) + 1

    result = cli("run-batch", "--agents", "1")

    assert result.code == 0, result.err
    assert f"(pid {os.getpid()}) from an earlier run is gone" in result.out
    assert state_of(repo).status(11) == COMPLETED


def test_hooks_run_with_task_data_and_a_failing_hook_is_not_fatal(
    scripted: Callable[..., Path], repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    out = tmp_path / "hooks.txt"
    scripted(
        {},
        hooks__on_start="exit 5",
        hooks__on_complete=f'echo "$PARADEV_ISSUE $PARADEV_STATUS" >> {out}',
    )

    result = cli("run-batch")

    assert result.code == 0, result.err
    assert "hook on_start ('exit 5') exited 5" in result.out
    assert sorted(out.read_text().splitlines()) == [
        "11 completed",
        "12 completed",
        "13 completed",
    ]


# -- choosing the batch --------------------------------------------------------------------------


def test_no_launch_starts_the_tasks_and_prints_where_to_work(
    set_up: Path, repo: Path, worktrees: Path, cli: CliFn
) -> None:
    doc = tomlkit.parse((repo / "plan.toml").read_text())
    doc["batches"][0]["tasks"][1]["files"] = ["src/init.py"]
    (repo / "plan.toml").write_text(tomlkit.dumps(doc))
    commit(agent_tree(worktrees, 3), {"src/health.py": "x = 1\n"})

    result = cli("run-batch", "--agents", "1,2")

    assert result.code == 0, result.err
    assert "no agents.command" in result.out
    assert f"worktree: {agent_tree(worktrees, 2)}" in result.out
    assert "branch:   parallel-dev/agent-2" in result.out
    state = state_of(repo)
    assert [state.status(i) for i in (11, 12, 13)] == [IN_PROGRESS, IN_PROGRESS, PLANNED]
    prompt = repo / ".git" / "paradev" / "prompts" / "issue-11.md"
    assert f"prompt:   {prompt}" in result.out
    text = prompt.read_text()
    assert "agent 2: #12 Add the init command (declares: src/init.py)" in text
    assert "agent 3: #13 Add the health command (declares: nothing declared; " in text
    assert "already changed: src/health.py" in text


def test_dry_run_changes_nothing(
    scripted: Callable[..., Path], repo: Path, worktrees: Path, cli: CliFn
) -> None:
    scripted({})
    before = (repo / ".git" / "paradev" / "state.json").read_text()

    result = cli("run-batch", "first", "--dry-run")

    assert result.code == 0, result.err
    assert "agent 1: start #11 Add the status command" in result.out
    assert f"in {agent_tree(worktrees, 1)}:" in result.out
    assert (repo / ".git" / "paradev" / "state.json").read_text() == before
    assert not (repo / ".git" / "paradev" / "prompts").exists()


def test_later_batch_is_refused_until_the_earlier_one_is_merged(
    set_up: Path, repo: Path, cli: CliFn
) -> None:
    result = cli("run-batch", "second")

    assert result.code == 2
    assert "cannot start until earlier work is merged" in result.err
    assert "#11 'Add the status command' (batch 'first', agent 1, planned, needed by #21)" in (
        result.err
    )
    assert "#13" in result.err
    assert state_of(repo).status(21) == PLANNED


def test_next_batch_moves_merged_branches_to_the_new_base(
    set_up: Path, repo: Path, worktrees: Path, cli: CliFn
) -> None:
    commit(agent_tree(worktrees, 1), {"src/status.py": "s = 1\n"}, "status")
    git(repo, "merge", "-q", "--ff-only", "parallel-dev/agent-1")
    commit(repo, {"NEWS": "more\n"}, "later work on main")
    mark_merged(repo, 11, 12, 13)

    result = cli("run-batch", "--no-launch")  # picks "second": the first batch is merged

    assert result.code == 0, result.err
    assert "#21 Config command" in result.out
    assert rev(repo, "parallel-dev/agent-1") == rev(repo, "main")
    assert (agent_tree(worktrees, 1) / "NEWS").exists()
    assert state_of(repo).status(21) == IN_PROGRESS


def test_unmerged_commits_are_never_discarded(
    set_up: Path, repo: Path, worktrees: Path, cli: CliFn
) -> None:
    head = commit(agent_tree(worktrees, 1), {"src/wip.py": "w = 1\n"}, "unlanded work")
    mark_merged(repo, 11, 12, 13)

    result = cli("run-batch")

    assert result.code == 2
    assert "has 1 commit(s) no task covers" in result.err
    assert "unlanded work" in result.err
    assert rev(repo, "parallel-dev/agent-1") == head
    assert state_of(repo).status(21) == PLANNED


def test_squash_merged_branch_moves_with_a_backup_ref(
    set_up: Path, repo: Path, worktrees: Path, cli: CliFn
) -> None:
    head = commit(agent_tree(worktrees, 1), {"src/status.py": "s = 1\n"}, "status")
    commit(repo, {"src/status.py": "s = 1\n"}, "feat: status (#11)")  # as a squash would
    mark_merged(repo, 11, 12, 13)

    result = cli("run-batch", "--no-launch")

    assert result.code == 0, result.err
    assert rev(repo, "parallel-dev/agent-1") == rev(repo, "main")
    backups = git(repo, "for-each-ref", "--format=%(objectname)", "refs/paradev/backup/")
    assert head in backups.splitlines()


def test_unknown_batch_and_bad_agents_are_usage_errors(set_up: Path, cli: CliFn) -> None:
    missing = cli("run-batch", "nope")
    assert missing.code == 2
    assert "no batch named 'nope'" in missing.err
    assert "first, second" in missing.err
    bad = cli("run-batch", "--agents", "1,9")
    assert bad.code == 2
    assert "unknown agent 9" in bad.err


def test_a_folder_where_the_run_batch_lock_belongs_is_one_line(
    set_up: Path, repo: Path, cli: CliFn
) -> None:
    lock = repo / ".git" / "paradev" / "run-batch.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir(parents=True)
    result = cli("run-batch", "--no-launch")
    assert (result.code, result.err) == (
        2,
        f"paradev: cannot lock {lock}: Is a directory; move it away\n",
    )
    assert StateStore(repo / ".git").read().status(11) == PLANNED


@pytest.mark.parametrize("agents", [",", " , ", "1_0", "1;2"])
def test_an_agents_list_without_numbers_is_refused_not_run_as_nobody(
    set_up: Path, cli: CliFn, snapshot: Callable[[], dict[str, object]], agents: str
) -> None:
    before = snapshot()
    result = cli("run-batch", "--no-launch", "--agents", agents)
    assert result.code == 2 and result.err.count("\n") == 1, result
    assert "--agents" in result.err
    assert snapshot() == before


def test_everything_completed_means_nothing_to_run(
    scripted: Callable[..., Path], repo: Path, cli: CliFn
) -> None:
    scripted({})
    assert cli("run-batch").code == 0

    again = cli("run-batch")

    assert again.code == 0
    assert "batch 'first': nothing to run" in again.out


# -- small pieces --------------------------------------------------------------------------------


def test_placeholders_are_replaced_per_argument_without_rescanning() -> None:
    values = {"title": "{issue} $(x)", "issue": "7"}
    argv = runner.expand_argv(["--t={title}", "{issue}", "{unknown}"], values)
    assert argv == ["--t={issue} $(x)", "7", "{unknown}"]


def test_commit_message_keeps_a_conventional_type() -> None:
    task = Task(agent=1, issue=5, title="fix: crash on empty input", hours=1, batch="b")
    assert runner.commit_message(task).startswith("fix: crash on empty input (#5)\n")
    plain = Task(agent=1, issue=6, title="Add a flag", hours=1, batch="b")
    assert runner.commit_message(plain).startswith("feat: Add a flag (#6)\n")
    # the squash commits of the merge train strip escapes the same way
    assert squash_message("fix: \x1b[1mbold\x1b[0m\nfix", 7) == "fix: bold fix (#7)\n"


def test_last_line_strips_terminal_escapes(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("first\n\x1b[32mgreen\x1b[0m line\n\n")
    assert runner.last_line(log) == "green line"
    assert runner.last_line(tmp_path / "missing.log") == ""


# -- handing a conflict back ---------------------------------------------------------------------


def _stopped_rebase(repo: Path, worktrees: Path) -> Path:
    """Agent 1's branch and main both changed src/util.py; its rebase stops on the conflict."""
    tree = agent_tree(worktrees, 1)
    commit(tree, {"src/util.py": "VALUE = 3\n"}, "agent value")
    commit(repo, {"src/util.py": "VALUE = 2\n"}, "main value")
    git(tree, "rebase", "main", check=False)
    assert (Path(git(tree, "rev-parse", "--absolute-git-dir")) / "rebase-merge").is_dir()
    return tree


def test_hand_back_lets_the_agent_resolve_the_rebase(
    scripted: Callable[..., Path], repo: Path, worktrees: Path
) -> None:
    record = scripted({11: "resolve"})
    tree = _stopped_rebase(repo, worktrees)
    ws = open_workspace(repo)

    report = "CONFLICT (contents): src/util.py lines 1-1"
    ok = runner.hand_back_conflict(ws, 1, report, notify=print)

    assert ok is True
    assert not (Path(git(tree, "rev-parse", "--absolute-git-dir")) / "rebase-merge").exists()
    assert git(tree, "merge-base", "--is-ancestor", "main", "HEAD", check=False) == ""
    assert (tree / "src/util.py").read_text() == "VALUE = 2\nVALUE = 3\n"
    seen = json.loads((record / "11.json").read_text())
    assert seen["env"]["PARADEV_MODE"] == "conflict"
    prompt = Path(seen["env"]["PARADEV_PROMPT_FILE"]).read_text()
    assert report in prompt
    assert "git rebase --continue" in prompt
    assert "Do not run `git rebase --abort`" in prompt


def test_hand_back_reports_an_agent_that_fails(
    scripted: Callable[..., Path], repo: Path, worktrees: Path
) -> None:
    scripted({11: "fail"})
    tree = _stopped_rebase(repo, worktrees)
    notes: list[str] = []

    ok = runner.hand_back_conflict(open_workspace(repo), 1, "report", notify=notes.append)

    assert ok is False
    assert notes[-1] == "agent 1 exited 3"
    assert (Path(git(tree, "rev-parse", "--absolute-git-dir")) / "rebase-merge").is_dir()


def test_hand_back_without_an_agent_command_returns_false(
    set_up: Path, repo: Path, worktrees: Path
) -> None:
    notes: list[str] = []
    ok = runner.hand_back_conflict(open_workspace(repo), 1, "report", notify=notes.append)
    assert ok is False
    assert "no agents.command" in notes[0]


def test_merge_train_hands_a_conflict_to_the_agent_and_lands_both(
    scripted: Callable[..., Path], repo: Path, worktrees: Path, cli: CliFn
) -> None:
    scripted({11: "resolve", 12: "resolve"}, merge__on_conflict="agent")
    git(repo, "commit", "-qam", "plan: agents resolve conflicts")
    for agent, value in ((1, "VALUE = 3\n"), (2, "VALUE = 4\n")):
        assert cli("start", str(agent)).code == 0
        commit(agent_tree(worktrees, agent), {"src/util.py": value}, f"agent {agent}")
        assert cli("complete", str(agent)).code == 0

    result = cli("merge")

    assert result.code == 0, result.out + result.err
    assert "handed the conflict back" in result.out
    util = git(repo, "show", "main:src/util.py")
    assert "VALUE = 3" in util
    assert "VALUE = 4" in util
    state = state_of(repo)
    assert state.status(11) == state.status(12) == MERGED


def test_the_conflict_handed_back_tells_the_agent_only_what_it_should_do(
    scripted: Callable[..., Path], repo: Path, worktrees: Path, cli: CliFn
) -> None:
    record = scripted({11: "resolve", 12: "resolve"}, merge__on_conflict="agent")
    git(repo, "commit", "-qam", "plan: agents resolve conflicts")
    for agent, value in ((1, "VALUE = 3\n"), (2, "VALUE = 4\n")):
        assert cli("start", str(agent)).code == 0
        commit(agent_tree(worktrees, agent), {"src/util.py": value}, f"agent {agent}")
        assert cli("complete", str(agent)).code == 0

    assert cli("merge").code == 0
    runs = [json.loads(f.read_text()) for f in sorted(record.glob("1?.json"))]
    handed = [r for r in runs if r["env"]["PARADEV_MODE"] == "conflict"]

    assert len(handed) == 1
    prompt = Path(handed[0]["env"]["PARADEV_PROMPT_FILE"]).read_text()
    assert "src/util.py: lines 1-5" in prompt  # what conflicts
    assert "git rebase --continue" in prompt  # what the agent does
    for people in ("paradev merge --skip", "paradev merge --abort", "paradev merge --continue"):
        assert people not in prompt


def test_a_batch_prompt_never_tells_an_agent_to_avoid_its_own_files(repo: Path, cli: CliFn) -> None:
    text = (repo / "plan.toml").read_text()
    text = text.replace(
        "  hours = 2.0\n", '  hours = 2.0\n  files = ["src/util.py", "src/a.py"]\n', 1
    )
    text = text.replace("  hours = 1.5\n", '  hours = 1.5\n  files = ["src/*.py", "b.py"]\n', 1)
    commit(repo, {"plan.toml": text}, "overlapping tasks")
    ws = open_workspace(repo)
    task = ws.plan.task(11)
    assert task is not None

    prompt = runner.task_prompt(ws, task)

    others = prompt.split("## Other agents in this batch: avoid touching their files")[1]
    others = others.split("##")[0]
    assert (
        "- agent 2: #12 Add the init command (declares: b.py; "
        "overlapping your own files, yours to change: src/*.py)"
    ) in others
    assert "src/util.py" not in others and "src/a.py" not in others


def test_a_second_run_batch_is_refused_while_one_runs(
    set_up: Path, repo: Path, tmp_path: Path, cli: CliFn
) -> None:
    lock = repo / ".git" / "paradev" / "run-batch.lock"
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib, filelock\n"
            "with filelock.FileLock(sys.argv[1]):\n"
            "    pathlib.Path(sys.argv[2]).touch()\n"
            "    time.sleep(30)\n",
            str(lock),
            str(ready),
        ]
    )
    try:
        while not ready.exists():
            assert holder.poll() is None
            runner.pause()

        result = cli("run-batch", "--no-launch")

        assert result.code == 2
        assert "another 'paradev run-batch' is running" in result.err
        assert state_of(repo).status(11) == PLANNED
    finally:
        holder.kill()
        holder.wait()


def test_prompt_carries_the_project_instructions(set_up: Path, repo: Path, cli: CliFn) -> None:
    configure(repo, instructions="STANDARDS.md")
    missing = cli("run-batch", "--no-launch")
    assert missing.code == 2
    assert "STANDARDS.md does not exist" in missing.err
    assert state_of(repo).status(11) == PLANNED
    (repo / "STANDARDS.md").write_text("Type hints everywhere.\n")

    result = cli("run-batch", "--no-launch", "--agents", "1")

    assert result.code == 0, result.err
    prompt = (repo / ".git" / "paradev" / "prompts" / "issue-11.md").read_text()
    assert "## Project instructions (STANDARDS.md)" in prompt
    assert "Type hints everywhere." in prompt


def test_prompt_tells_the_agent_to_check_before_editing_undeclared_files(
    set_up: Path, repo: Path, cli: CliFn
) -> None:
    result = cli("run-batch", "--no-launch", "--agents", "2")

    assert result.code == 0, result.err
    prompt = (repo / ".git" / "paradev" / "prompts" / "issue-12.md").read_text()
    assert "Before you edit a file not listed above, run `paradev check PATH`" in prompt


def test_run_batch_skips_a_dropped_task_and_a_batch_of_merged_and_dropped_is_done(
    set_up: Path, repo: Path, cli: CliFn
) -> None:
    assert cli("drop", "12").code == 0

    first = cli("run-batch", "--no-launch")

    assert first.code == 0, first.err
    assert "skipped: #12 (agent 2) is already dropped" in first.out
    assert state_of(repo).status(12) == "dropped"
    assert [state_of(repo).status(i) for i in (11, 13)] == [IN_PROGRESS] * 2
    mark_merged(repo, 11, 13)
    second = cli("run-batch", "--no-launch")
    assert second.code == 0, second.err
    assert "agent 1: #21 Config command" in second.out


def test_an_agent_that_commits_nothing_fails_its_task_with_the_way_out(
    scripted: Callable[..., Path], repo: Path, cli: CliFn
) -> None:
    scripted({11: "idle"})

    result = cli("run-batch", "--agents", "1")

    assert result.code == 1
    error = state_of(repo).tasks[11].error or ""
    assert state_of(repo).status(11) == FAILED
    assert "the agent exited 0 without committing anything for #11" in error
    assert "'paradev reopen 11' then 'paradev complete 1 --empty'" in error


def test_dry_run_says_a_dropped_tasks_commits_come_off_first(
    set_up: Path, repo: Path, cli: CliFn
) -> None:
    tree = agent_tree(set_up, 1)
    assert cli("start", "1").code == 0
    head = commit(tree, {"src/a.py": "a\n"}, "work")
    assert cli("complete", "1").code == 0
    (tree / "scratch.txt").write_text("busy\n")
    assert cli("drop", "11").code == 0
    (tree / "scratch.txt").unlink()
    mark_merged(repo, 12, 13)
    waiting = cli("run-batch", "--dry-run", "--agents", "1")
    assert "skipped: #21 depends on dropped #11: remove #11 from its depends_on" in waiting.out
    plan = repo / "plan.toml"
    plan.write_text(plan.read_text(encoding="utf-8").replace("  depends_on = [11]\n", ""))

    dry = cli("run-batch", "--dry-run", "--agents", "1")

    assert dry.code == 0, dry.err
    ref = state_of(repo).tasks[11].backup_ref
    assert f"  agent 1: take dropped #11's commits off parallel-dev/agent-1 (kept at {ref})" in (
        dry.out
    )
    assert "  agent 1: start #21 Config command" in dry.out
    assert rev(repo, "parallel-dev/agent-1") == head
    run = cli("run-batch", "--no-launch", "--agents", "1")
    assert run.code == 0, run.err
    assert rev(repo, "parallel-dev/agent-1") == rev(repo, "main")
    assert state_of(repo).status(21) == IN_PROGRESS


def _statuses_in(trace: Path, tree: Path) -> int:
    """How many ``git status`` processes looked at ``tree`` (from GIT_TRACE2_EVENT)."""
    argv: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for line in trace.read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "start":
            argv[event["sid"]] = event["argv"]
        elif event.get("event") == "def_repo":
            where[event["sid"]] = event.get("worktree", "")
    return sum(
        "status" in args and Path(where.get(sid, "")) == tree.resolve()
        for sid, args in argv.items()
    )


def test_a_task_left_clean_is_completed_with_one_git_status_of_its_tree(
    scripted: Callable[..., Path],
    repo: Path,
    worktrees: Path,
    cli: CliFn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The usual end of a task: the agent committed everything. One look at its tree says
    so, for the leftovers commit and for the record alike (each look is on the way from
    the agent's exit to the merge train)."""
    scripted()
    trace = tmp_path / "trace2.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))

    result = cli("run-batch", "--agents", "1")

    assert result.code == 0, result.err
    record = state_of(repo).tasks[11]
    assert record.status == COMPLETED
    assert (record.files_modified, record.left_uncommitted) == (["done-11.txt"], [])
    assert _statuses_in(trace, agent_tree(worktrees, 1)) == 1


def test_a_launched_agents_prompt_names_what_the_other_branches_already_changed(
    scripted: Callable[..., Path], repo: Path, worktrees: Path, cli: CliFn
) -> None:
    """A launch reads the other branches while its task starts (side by side): the prompt
    still says what they changed, the agent's own branch left out."""
    scripted()
    commit(agent_tree(worktrees, 3), {"src/health.py": "x = 1\n"})

    result = cli("run-batch", "--agents", "1")

    assert result.code == 0, result.err
    text = (repo / ".git" / "paradev" / "prompts" / "issue-11.md").read_text()
    assert "agent 3: #13 Add the health command (declares: nothing declared; " in text
    assert "already changed: src/health.py" in text
    assert "agent 2: #12 Add the init command (declares: nothing declared)" in text
    assert "agent 1:" not in text.split("## Other agents", 1)[1]
    assert state_of(repo).status(11) == COMPLETED
