"""[setup]: copies from the main worktree, the setup command and PARADEV_PORT, on real repos."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from paradev.errors import PreconditionError
from paradev.git import worktree_git_dir
from paradev.prepare import (
    SETUP_RECORD,
    SetupError,
    gate_number,
    place_file,
    port_for,
    prepare_worktree,
)
from paradev.workspace import open_workspace
from tests.helpers import Result, agent_tree, commit, git

CliFn = Callable[..., Result]

# A setup command that records each run (argv, cwd, PARADEV_* env) as one JSON line in
# RECORD, prints a line for the log, and exits with the number in EXIT when that file exists.
SETUP = r"""
import json, os, sys
from pathlib import Path
record, exit_file = Path(sys.argv[1]), Path(sys.argv[2])
env = {k: v for k, v in os.environ.items() if k.startswith("PARADEV_")}
with record.open("a") as out:
    out.write(json.dumps({"argv": sys.argv[3:], "cwd": os.getcwd(), "env": env}) + "\n")
print(f"setting up {os.getcwd()}", flush=True)
if exit_file.exists():
    sys.exit(int(exit_file.read_text()))
"""


def set_setup(repo: Path, **keys: Any) -> None:
    """Write ``keys`` into plan.toml's [setup] table."""
    path = repo / "plan.toml"
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    table = doc.setdefault("setup", tomlkit.table())
    for key, value in keys.items():
        table[key] = value
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")


@pytest.fixture
def ignoring(repo: Path) -> Path:
    """main ignores .env, local/ and the setup's own output; the main worktree holds them."""
    commit(repo, {".gitignore": ".env\nlocal/\n.venv/\n", "uv.lock": "lock 1\n"}, "ignore")
    (repo / ".env").write_text("SECRET=1\n", encoding="utf-8")
    (repo / "local").mkdir()
    (repo / "local" / "settings.toml").write_text("debug = true\n", encoding="utf-8")
    return repo


class SetupScript:
    """The recording setup command, configured in a repository's plan."""

    def __init__(self, repo: Path, folder: Path) -> None:
        self.repo, self.script = repo, folder / "setup.py"
        self.script.write_text(SETUP, encoding="utf-8")
        self.record, self.exit_file = folder / "runs.jsonl", folder / "exit"

    def __call__(self, *extra: str, **keys: Any) -> None:
        """Set it as setup.command (``extra`` appended), inputs = ["uv.lock"], and ``keys``."""
        argv = [sys.executable, str(self.script), str(self.record), str(self.exit_file), *extra]
        set_setup(self.repo, command=argv, inputs=["uv.lock"], **keys)

    def runs(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture
def setup_command(ignoring: Path, tmp_path: Path) -> SetupScript:
    return SetupScript(ignoring, tmp_path)


def runs_in(runs: list[dict[str, Any]], tree: Path) -> int:
    return sum(1 for run in runs if Path(run["cwd"]) == tree)


# -- copies ----------------------------------------------------------------------------------


def test_setup_copies_ignored_files_into_every_new_worktree_as_separate_files(
    ignoring: Path, worktrees: Path, cli: CliFn
) -> None:
    set_setup(ignoring, copy=[".env", "local"])

    result = cli("setup")

    assert result.code == 0, result.err
    assert "agent 2: copied .env, local" in result.out
    for agent in (1, 2, 3):
        tree = agent_tree(worktrees, agent)
        assert (tree / ".env").read_text() == "SECRET=1\n"
        assert (tree / "local" / "settings.toml").read_text() == "debug = true\n"
        assert not (tree / ".env").samefile(ignoring / ".env")  # its own file
        assert git(tree, "status", "--porcelain") == ""  # ignored there too: never committed
    (agent_tree(worktrees, 1) / ".env").write_text("SECRET=agent\n")
    assert (ignoring / ".env").read_text() == "SECRET=1\n"  # a copy, not the original
    again = cli("setup")
    assert again.code == 0, again.err
    assert "copied" not in again.out
    assert (agent_tree(worktrees, 1) / ".env").read_text() == "SECRET=agent\n"  # kept


def test_link_true_places_hard_links(ignoring: Path, worktrees: Path, cli: CliFn) -> None:
    set_setup(ignoring, copy=[".env", "local"], link=True)

    assert cli("setup").code == 0

    for agent in (1, 2, 3):
        tree = agent_tree(worktrees, agent)
        assert (tree / ".env").samefile(ignoring / ".env")
        assert (tree / "local" / "settings.toml").samefile(ignoring / "local" / "settings.toml")
    assert (ignoring / ".env").stat().st_nlink == 4


def test_a_copy_keeps_the_mode_and_a_link_falls_back_to_a_copy_across_devices(
    tmp_path: Path, mocker: Any
) -> None:
    source = tmp_path / "run.sh"
    source.write_text("#!/bin/sh\n")
    source.chmod(0o751)
    assert place_file(source, tmp_path / "copy.sh", link=False) in ("reflink", "copy")
    assert (tmp_path / "copy.sh").stat().st_mode & 0o777 == 0o751
    # another file system: os.link fails with EXDEV (injected: tests have one file system)
    mocker.patch("paradev.prepare.os.link", side_effect=OSError(18, "Invalid cross-device link"))
    assert place_file(source, tmp_path / "linked.sh", link=True) in ("reflink", "copy")
    assert (tmp_path / "linked.sh").read_text() == "#!/bin/sh\n"
    assert not (tmp_path / "linked.sh").samefile(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.sh", "linked.sh", "run.sh"]


def test_a_missing_copy_source_is_named_and_nothing_is_created(
    ignoring: Path, worktrees: Path, cli: CliFn
) -> None:
    set_setup(ignoring, copy=[".env", "config/missing.toml"])

    result = cli("setup")

    assert result.code == 2
    assert "'config/missing.toml' does not exist in the main worktree" in result.err
    assert "remove it from setup.copy" in result.err
    assert "Traceback" not in result.err
    assert not worktrees.exists()  # refused before any worktree was made


def test_tracked_and_unignored_copy_sources_are_refused(
    ignoring: Path, worktrees: Path, cli: CliFn
) -> None:
    (ignoring / "notes.txt").write_text("mine\n")
    set_setup(ignoring, copy=["./README.md", "notes.txt/", ".env"])

    result = cli("setup")

    assert result.code == 2
    assert "'README.md' holds 'README.md', which git tracks" in result.err
    assert "'notes.txt' holds 'notes.txt', which git does not ignore" in result.err
    assert ".git/info/exclude" in result.err
    assert not worktrees.exists()


def test_a_symlinked_folder_in_the_worktree_never_leads_a_copy_outside(
    ignoring: Path, worktrees: Path, cli: CliFn, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    assert cli("setup").code == 0
    tree = agent_tree(worktrees, 1)
    os.symlink(outside, tree / "local")  # e.g. an agent replaced the folder by a link
    set_setup(ignoring, copy=["local/settings.toml"])

    result = cli("setup")

    assert result.code == 2
    assert f"{tree / 'local'} leads outside the worktree" in result.err
    assert list(outside.iterdir()) == []


# -- the setup command -----------------------------------------------------------------------


def test_the_setup_command_runs_once_per_worktree_and_again_only_when_inputs_change(
    setup_command: SetupScript, worktrees: Path, repo: Path, cli: CliFn
) -> None:
    setup_command(port_base=8000, port_step=10)

    first = cli("setup")

    assert first.code == 0, first.err
    runs = setup_command.runs()
    trees = [agent_tree(worktrees, a) for a in (1, 2, 3)]
    assert [runs_in(runs, t) for t in trees] == [1, 1, 1]
    for agent, tree in enumerate(trees, start=1):
        (run,) = [r for r in runs if Path(r["cwd"]) == tree]
        assert run["env"]["PARADEV_PORT"] == str(8000 + agent * 10)
        assert run["env"]["PARADEV_WORKTREE"] == str(tree)
        record = json.loads((worktree_git_dir(tree) / SETUP_RECORD).read_text())
        assert record["port"] == 8000 + agent * 10
        assert set(record["inputs"]) == {"uv.lock"}
    assert "never ran in this worktree" in first.out
    log = repo / ".git" / "paradev" / "logs" / "setup-agent-2.log"
    assert f"setting up {trees[1]}" in log.read_text()

    second = cli("setup")  # nothing changed: skipped
    assert second.code == 0, second.err
    assert [runs_in(setup_command.runs(), t) for t in trees] == [1, 1, 1]

    commit(trees[0], {"uv.lock": "lock 2\n"}, "bump the lockfile")
    third = cli("setup")
    assert third.code == 0, third.err
    assert "agent 1: running the setup command (changed: uv.lock" in third.out
    assert [runs_in(setup_command.runs(), t) for t in trees] == [2, 1, 1]


def test_argv_with_shell_metacharacters_arrives_intact(
    setup_command: SetupScript, worktrees: Path, cli: CliFn
) -> None:
    weird = ["$(touch pwned)", "a;b && c", "*", "'q' \"d\"", "`id`", ""]
    setup_command(*weird)

    assert cli("setup", "--agents", "1").code == 0

    (run,) = setup_command.runs()
    assert run["argv"] == weird
    assert not (agent_tree(worktrees, 1) / "pwned").exists()


def test_a_failing_setup_command_is_exit_2_naming_worktree_log_and_code(
    setup_command: SetupScript, worktrees: Path, repo: Path, cli: CliFn
) -> None:
    setup_command()
    setup_command.exit_file.write_text("3")

    result = cli("setup")

    tree = agent_tree(worktrees, 1)
    log = repo / ".git" / "paradev" / "logs" / "setup-agent-1.log"
    assert result.code == 2
    assert f"exited 3 in {tree}; log: {log}" in result.err
    assert "Traceback" not in result.err
    assert f"setting up {tree}" in log.read_text()
    assert json.loads((worktree_git_dir(tree) / SETUP_RECORD).read_text())["exit"] == 3
    assert runs_in(setup_command.runs(), agent_tree(worktrees, 2)) == 0

    setup_command.exit_file.unlink()
    fixed = cli("setup")
    assert fixed.code == 0, fixed.err
    assert "agent 1: running the setup command (its last run exited 3" in fixed.out
    assert runs_in(setup_command.runs(), tree) == 2


def test_a_setup_command_that_hangs_is_stopped_at_its_timeout(
    ignoring: Path, worktrees: Path, cli: CliFn
) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    set_setup(ignoring, command=sleeper, timeout=0.5)

    result = cli("setup", "--agents", "1")

    assert result.code == 2
    assert "timed out in" in result.err
    assert "stopped after 0.5s" in (ignoring / ".git/paradev/logs/setup-agent-1.log").read_text()


def test_a_changed_command_or_port_runs_it_again(
    setup_command: SetupScript, worktrees: Path, cli: CliFn
) -> None:
    setup_command()
    assert cli("setup", "--agents", "1").code == 0
    setup_command(port_base=9000)
    assert "PARADEV_PORT changed" in cli("setup", "--agents", "1").out
    setup_command("--extra")
    assert "setup.command changed" in cli("setup", "--agents", "1").out
    assert runs_in(setup_command.runs(), agent_tree(worktrees, 1)) == 3


# -- ports -----------------------------------------------------------------------------------


def test_port_numbers_for_agents_and_gate_slots(ignoring: Path) -> None:
    set_setup(ignoring, port_base=8000, port_step=10)
    plan = open_workspace(ignoring).plan
    assert [port_for(plan, n) for n in (1, 2, 3)] == [8010, 8020, 8030]
    assert port_for(plan, gate_number(plan, 1)) == 8040  # after agents.count = 3
    assert port_for(plan, gate_number(plan, 2)) == 8050
    with pytest.raises(PreconditionError, match="would get port 663370"):
        port_for(plan, 65537)
    set_setup(ignoring, port_base=0)
    assert port_for(open_workspace(ignoring).plan, 1) is None


def test_a_gate_worktree_is_prepared_with_its_slot_port(
    setup_command: SetupScript, repo: Path, tmp_path: Path
) -> None:
    setup_command(port_base=7000, port_step=5)
    set_setup(repo, copy=[".env"])
    gate = tmp_path / "gate-1"
    git(repo, "worktree", "add", "--quiet", "--detach", str(gate), "main")
    ws = open_workspace(repo)
    log = tmp_path / "gate-setup.log"

    prepared = prepare_worktree(ws, gate, gate_number(ws.plan, 1), log=log)

    (run,) = setup_command.runs()
    assert Path(run["cwd"]) == gate
    assert run["env"]["PARADEV_PORT"] == str(7000 + 4 * 5)
    assert (gate / ".env").read_text() == "SECRET=1\n"
    assert (prepared.ran, prepared.copied, prepared.log) == (True, (".env",), log)
    assert f"setting up {gate}" in log.read_text()
    again = prepare_worktree(ws, gate, gate_number(ws.plan, 1), log=log)
    assert (again.ran, again.why) == (False, "up to date")
    setup_command.exit_file.write_text("4")
    commit(gate, {"uv.lock": "lock 3\n"}, "gate candidate changes the lockfile")
    with pytest.raises(SetupError) as failed:
        prepare_worktree(ws, gate, gate_number(ws.plan, 1), log=log)
    assert (failed.value.code, failed.value.log, failed.value.worktree) == (4, log, gate)
    assert failed.value.exit_code == 2


def test_agents_and_gates_get_their_port_and_setup_runs_before_each_launch(
    setup_command: SetupScript, repo: Path, worktrees: Path, cli: CliFn, tmp_path: Path
) -> None:
    setup_command(port_base=8000, port_step=100)
    assert cli("setup").code == 0
    seen = tmp_path / "seen"
    recorder = (
        "import os, subprocess, pathlib, sys; "
        "pathlib.Path(sys.argv[1] + os.environ['PARADEV_AGENT'])"
        ".write_text(os.environ.get('PARADEV_PORT', 'none')); "
        "pathlib.Path('done-' + os.environ['PARADEV_AGENT']).write_text('x'); "
        "subprocess.run(['git', 'add', '-A'], check=True); "
        "subprocess.run(['git', 'commit', '-qm', 'work'], check=True)"
    )
    gate = (
        "import os, pathlib, sys; pathlib.Path(sys.argv[1] + os.environ['PARADEV_AGENT'])"
        ".write_text(os.environ['PARADEV_PORT'])"
    )
    configure_commands(repo, [sys.executable, "-c", recorder, f"{seen}-agent-"])
    doc = tomlkit.parse((repo / "plan.toml").read_text())
    doc["gate"]["command"] = [sys.executable, "-c", gate, f"{seen}-gate-"]
    (repo / "plan.toml").write_text(tomlkit.dumps(doc))
    commit(repo, {"uv.lock": "lock 2\n"}, "plan and lockfile")  # the branches move here

    result = cli("run-batch")

    assert result.code == 0, result.err
    assert [Path(f"{seen}-agent-{a}").read_text() for a in (1, 2, 3)] == ["8100", "8200", "8300"]
    runs = setup_command.runs()
    assert [runs_in(runs, agent_tree(worktrees, a)) for a in (1, 2, 3)] == [2, 2, 2]
    assert "agent 2: running the setup command (changed: uv.lock" in result.out
    again = cli("start", "1")  # nothing changed since: no third run
    assert again.code == 2  # agent 1 has its task completed, #21 waits for its dependency
    assert runs_in(setup_command.runs(), agent_tree(worktrees, 1)) == 2
    merged = cli("merge")
    assert merged.code == 0, merged.err
    assert [Path(f"{seen}-gate-{a}").read_text() for a in (1, 2, 3)] == ["8100", "8200", "8300"]


def configure_commands(repo: Path, agent: list[str]) -> None:
    doc = tomlkit.parse((repo / "plan.toml").read_text())
    doc["agents"]["command"] = agent
    (repo / "plan.toml").write_text(tomlkit.dumps(doc))


def test_a_failing_setup_before_a_launch_fails_that_task_with_the_log(
    setup_command: SetupScript, repo: Path, worktrees: Path, cli: CliFn
) -> None:
    setup_command()
    assert cli("setup").code == 0
    configure_commands(repo, [sys.executable, "-c", "raise SystemExit(0)"])
    setup_command.exit_file.write_text("5")
    commit(repo, {"uv.lock": "lock 9\n"}, "plan and lockfile")

    result = cli("run-batch")

    assert result.code == 1
    assert "#11 (failed: setup command" in result.err
    assert "exited 5" in result.err
    state = open_workspace(repo).store.read()
    for issue, agent in ((11, 1), (12, 2), (13, 3)):
        assert f"setup-agent-{agent}.log" in (state.tasks[issue].error or "")
        assert state.tasks[issue].status == "failed"


def test_start_prepares_the_worktree_first(
    setup_command: SetupScript, worktrees: Path, cli: CliFn
) -> None:
    setup_command()
    assert cli("setup").code == 0
    commit(agent_tree(worktrees, 3), {"uv.lock": "lock 3\n"}, "new lockfile")

    result = cli("start", "3")

    assert result.code == 0, result.err
    assert "agent 3: running the setup command (changed: uv.lock" in result.out
    assert runs_in(setup_command.runs(), agent_tree(worktrees, 3)) == 2


def test_doctor_names_a_worktree_whose_setup_is_out_of_date(
    setup_command: SetupScript, worktrees: Path, cli: CliFn
) -> None:
    setup_command(copy=[".env"])
    assert cli("setup").code == 0
    assert "setup: every agent worktree up to date" in cli("doctor").out
    commit(agent_tree(worktrees, 2), {"uv.lock": "lock 2\n"}, "new lockfile")
    (agent_tree(worktrees, 3) / ".env").unlink()

    result = cli("doctor")

    assert result.code == 1
    assert "agent 2: setup out of date (changed: uv.lock); run 'paradev setup'" in result.out
    assert "agent 3: setup out of date (.env not copied)" in result.out
    assert "agent 1: setup out of date" not in result.out


def test_the_train_prepares_the_rebased_worktree_before_its_gate_and_stops_when_it_fails(
    setup_command: SetupScript, repo: Path, worktrees: Path, cli: CliFn, tmp_path: Path
) -> None:
    setup_command()
    doc = tomlkit.parse((repo / "plan.toml").read_text())
    doc["gate"]["command"] = [sys.executable, "-c", "pass"]
    (repo / "plan.toml").write_text(tomlkit.dumps(doc))
    git(repo, "commit", "-qam", "plan: a gate")
    assert cli("setup").code == 0
    for agent in (1, 2):
        tree = agent_tree(worktrees, agent)
        assert cli("start", str(agent)).code == 0
        commit(tree, {f"feature_{agent}.py": "X = 1\n"}, f"feat: agent {agent}")
        assert cli("complete", str(agent)).code == 0
    commit(repo, {"uv.lock": "lock 2\n"}, "base moves its lockfile")  # the rebase brings it
    setup_command.exit_file.write_text("6")
    before = git(repo, "rev-parse", "main")

    stopped = cli("merge")

    tree1 = agent_tree(worktrees, 1)
    assert stopped.code == 2
    assert f"exited 6 in {tree1}" in stopped.err
    assert "setup-agent-1.log" in stopped.err
    assert git(repo, "rev-parse", "main") == before  # nothing landed without its setup
    setup_command.exit_file.unlink()

    resumed = cli("merge", "--continue")

    assert resumed.code == 0, resumed.err
    assert "agent 1: running the setup command (its last run exited 6" in resumed.out
    assert (worktrees / "agent-1" / "feature_1.py").exists()
    landed = git(repo, "log", "--format=%s", "main")
    assert "feat: agent 1" in landed and "feat: agent 2" in landed


def test_no_launch_prepares_every_worktree_before_starting_any_task(
    setup_command: SetupScript, repo: Path, worktrees: Path, cli: CliFn
) -> None:
    setup_command()
    assert cli("setup").code == 0
    (worktree_git_dir(agent_tree(worktrees, 3)) / SETUP_RECORD).unlink()  # as if new
    setup_command.exit_file.write_text("7")  # agents 1 and 2 are up to date: only 3 runs it

    result = cli("run-batch", "--no-launch")

    assert result.code == 2
    assert "exited 7" in result.err
    state = open_workspace(repo).store.read()
    assert all(state.status(issue) != "in_progress" for issue in (11, 12, 13))


def test_an_input_that_is_a_folder_or_a_device_is_refused_not_read(
    setup_command: SetupScript, worktrees: Path, cli: CliFn
) -> None:
    setup_command()
    assert cli("setup", "--agents", "1").code == 0
    tree = agent_tree(worktrees, 1)
    (tree / "uv.lock").unlink()
    os.symlink("/dev/zero", tree / "uv.lock")  # read to its end, it would never end

    result = cli("start", "1")

    assert result.code == 2
    assert f"setup.inputs: {tree / 'uv.lock'} is not a regular file" in result.err
    (tree / "uv.lock").unlink()
    (tree / "uv.lock").mkdir()
    assert "is not a regular file" in cli("setup", "--agents", "1").err
