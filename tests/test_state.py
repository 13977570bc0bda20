"""Shared state: one locked, atomic JSON file in the git common dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import tomlkit
from filelock import FileLock
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_mock import MockerFixture

from paradev import state as state_mod
from paradev.errors import StateError
from paradev.state import AgentRecord, State, StateStore, TaskRecord
from tests.helpers import Result, agent_tree
from tests.test_train import configure, work

PROCESSES = 20


def journal(status: str = "running") -> dict[str, object]:
    """A merge-train journal with every key the train reads (the shape ``read`` checks)."""
    return {
        "id": "20260101T000000Z",
        "base": "main",
        "status": status,
        "queue": [1],
        "landed": [],
        "skipped": [],
        "agents": {"1": {"done": ["backup"], "step": "rebase"}},
        "gate": True,
        "push": False,
    }


def test_an_absent_file_reads_as_empty_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.read() == State()
    assert store.path == tmp_path / "paradev" / "state.json"


def test_state_round_trips_through_json(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        state.agents[2] = AgentRecord(agent=2, branch="b2", worktree="/w/agent-2")
        record = state.task(7, 2)
        record.status, record.files_modified = "completed", ["a.py"]
        state.merge_order = [2, 1]
        state.train = journal()
        state.merge_history.append({"agent": 2})
    again = store.read()
    assert again.agents == {2: AgentRecord(2, "b2", "/w/agent-2")}
    assert again.tasks[7] == TaskRecord(
        issue=7, agent=2, status="completed", files_modified=["a.py"]
    )
    assert (again.merge_order, again.train, again.merge_history) == (
        [2, 1],
        journal(),
        [{"agent": 2}],
    )
    assert again.updated_at is not None
    assert json.loads(store.path.read_text())["tasks"]["7"]["status"] == "completed"


def test_records_compare_by_value_and_never_share_their_default_lists() -> None:
    first, second = TaskRecord(issue=1, agent=1), TaskRecord(issue=1, agent=1)
    assert first == second and first is not second
    first.files_modified.append("a.py")
    first.left_uncommitted.append("b.py")
    assert second.files_modified == second.left_uncommitted == []
    assert first != second and first != AgentRecord(1, "b", "/w")
    assert State().tasks is not State().tasks and State().merge_order is not State().merge_order
    assert repr(AgentRecord(2, "b2", "/w")) == "AgentRecord(agent=2, branch='b2', worktree='/w')"
    assert list(State(tasks={1: first}).to_json()["tasks"]["1"])[:3] == ["issue", "agent", "status"]


def test_reported_cost_and_tokens_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        record = state.task(7, 2)
        record.cost_usd, record.tokens = 0.0, {"input": 0, "output": 0}
        state.task(8, 1).cost_usd = 12.5
    again = store.read()
    assert (again.tasks[7].cost_usd, again.tasks[7].tokens) == (0.0, {"input": 0, "output": 0})
    assert (again.tasks[8].cost_usd, again.tasks[8].tokens) == (12.5, None)
    written = json.loads(store.path.read_text())["tasks"]
    assert written["7"]["tokens"] == {"input": 0, "output": 0} and written["8"]["cost_usd"] == 12.5


def test_unknown_fields_from_a_newer_paradev_are_ignored(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.dir.mkdir()
    store.path.write_text(
        json.dumps({"version": 1, "tasks": {"3": {"issue": 3, "agent": 1, "new": 1}}})
    )
    assert store.read().tasks[3].status == "planned"


def test_the_state_lives_in_the_common_dir_for_every_worktree(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    assert cli("start", "2", cwd=agent_tree(set_up, 2)).code == 0
    assert (repo / ".git" / "paradev" / "state.json").is_file()
    assert not list(set_up.rglob("state.json"))
    data = cli("status", "--json", cwd=agent_tree(set_up, 3)).json()
    assert data["agents"]["2"]["current_task"]["issue"] == 12
    ignored = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "paradev" not in ignored.stdout


def test_nothing_is_written_when_the_change_fails(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        state.merge_order = [1]
    before = store.path.read_bytes()
    with pytest.raises(RuntimeError), store.update() as state:
        state.merge_order = [3]
        raise RuntimeError("boom")
    assert store.path.read_bytes() == before


def test_a_crash_while_writing_keeps_the_old_file_and_no_temp_file(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        state.merge_order = [1]
    before = store.path.read_bytes()
    mocker.patch("paradev.state.os.replace", side_effect=OSError("disk full"))
    with pytest.raises(OSError, match="disk full"), store.update() as state:
        state.merge_order = [2]
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.dir.iterdir()) == ["state.json", "state.lock"]


def test_writes_are_fsynced_before_the_rename(tmp_path: Path, mocker: MockerFixture) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: Path) -> None:
        calls.append("replace")
        real_replace(src, dst)

    mocker.patch("paradev.state.os.fsync", side_effect=fsync)
    mocker.patch("paradev.state.os.replace", side_effect=replace)
    with StateStore(tmp_path).update() as state:
        state.merge_order = [1]
    assert calls == ["fsync", "replace"]


def test_a_held_lock_times_out_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    store.dir.mkdir()
    monkeypatch.setattr(state_mod, "LOCK_TIMEOUT", 0.2)
    held = FileLock(str(store.lock_path))
    with held, pytest.raises(StateError, match="another paradev holds"), store.update() as state:
        state.merge_order = [9]
    assert not store.path.exists()


def test_the_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.locked(), store.update() as state:
        state.merge_order = [4]
    assert store.read().merge_order == [4]


CORRUPT = {
    "truncated": '{"version": 1, "tasks": {"1": {"issue": 1, "ag',
    "empty": "",
    "not-an-object": "[1, 2]",
    "future-version": '{"version": 99}',
    "bad-record": '{"version": 1, "tasks": {"1": 5}}',
    "bad-key": '{"version": 1, "tasks": {"x": {"issue": 1, "agent": 1}}}',
    "binary": "\udcff",
    "deep": "[" * 100_000 + "]" * 100_000,
}

# Valid JSON of the wrong shape: each must fail in read(), never later inside a command.
WRONG_SHAPE = {
    "tasks-not-object": ({"tasks": 5}, "tasks is 5, expected an object"),
    "tasks-list": ({"tasks": []}, "tasks is [], expected an object"),
    "status-int": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "status": 3}}},
        "tasks.1.status is 3, expected a string",
    ),
    "status-unknown": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "status": "weird"}}},
        "tasks.1.status is 'weird', expected one of",
    ),
    "record-missing-issue": ({"tasks": {"1": {"status": 3}}}, "tasks.1.issue is missing"),
    "issue-string": (
        {"tasks": {"1": {"issue": "1", "agent": 1}}},
        'tasks.1.issue is "1", expected an integer',
    ),
    "key-mismatch": ({"tasks": {"1": {"issue": 2, "agent": 1}}}, "tasks.1.issue is 2, expected 1"),
    "agent-bool": (
        {"tasks": {"1": {"issue": 1, "agent": True}}},
        "tasks.1.agent is true, expected an integer",
    ),
    "agent-zero": ({"tasks": {"1": {"issue": 1, "agent": 0}}}, "tasks.1.agent is 0"),
    "files-string": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "files_modified": "a.py"}}},
        'tasks.1.files_modified is "a.py"',
    ),
    "timestamp-int": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "started_at": 5}}},
        "tasks.1.started_at is 5",
    ),
    "cost-string": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "cost_usd": "0.5"}}},
        'tasks.1.cost_usd is "0.5", expected float',
    ),
    "cost-negative": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "cost_usd": -0.5}}},
        "tasks.1.cost_usd is -0.5, expected a finite number >= 0",
    ),
    "cost-nan": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "cost_usd": float("nan")}}},
        "tasks.1.cost_usd is nan, expected a finite number >= 0",
    ),
    "tokens-list": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "tokens": [1, 2]}}},
        "tasks.1.tokens is [1, 2]",
    ),
    "tokens-other-keys": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "tokens": {"in": 1, "out": 2}}}},
        'tasks.1.tokens is {"in": 1, "out": 2}, expected {"input": n, "output": n}',
    ),
    "tokens-negative": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "tokens": {"input": -1, "output": 2}}}},
        "tasks.1.tokens is",
    ),
    "tokens-float": (
        {"tasks": {"1": {"issue": 1, "agent": 1, "tokens": {"input": 1.5, "output": 2}}}},
        "tasks.1.tokens is",
    ),
    "agents-list": ({"agents": []}, "agents is [], expected an object"),
    "agent-branch-int": (
        {"agents": {"1": {"agent": 1, "branch": 5, "worktree": "/w"}}},
        "agents.1.branch is 5, expected a string",
    ),
    "agent-missing-worktree": (
        {"agents": {"1": {"agent": 1, "branch": "b"}}},
        "agents.1.worktree is missing",
    ),
    "record-missing-agent": ({"tasks": {"1": {"issue": 1}}}, "tasks.1.agent is missing"),
    "merge-order-string": ({"merge_order": "12"}, 'merge_order is "12"'),
    "merge-order-null": ({"merge_order": None}, "merge_order is null"),
    "train-int": ({"train": 5}, "train is 5, expected an object or null"),
    "train-empty": ({"train": {}}, "train.id is missing"),
    "train-queue": ({"train": {**journal(), "queue": "1"}}, 'train.queue is "1"'),
    "train-agent-entry": (
        {"train": {**journal(), "agents": {"1": {"done": 5}}}},
        "train.agents.1.done is 5",
    ),
    "train-landed": ({"train": {**journal(), "landed": [{}]}}, "train.landed[0].agent is null"),
    "train-old-head-int": (
        {"train": {**journal(), "agents": {"1": {"done": [], "old_head": 5}}}},
        "train.agents.1.old_head is 5, expected a string",
    ),
    "train-gate-runs-list": (
        {"train": {**journal(), "agents": {"1": {"done": [], "gate_runs": []}}}},
        "train.agents.1.gate_runs is [], expected an integer",
    ),
    "train-order-string": ({"train": {**journal(), "order": "1"}}, 'train.order is "1"'),
    "train-driver-since": (
        {"train": {**journal(), "driver": {"pid": 1, "since": "soon", "start": None}}},
        'train.driver.since is "soon"',
    ),
    "history-int": ({"merge_history": 5}, "merge_history is 5"),
    "history-items": ({"merge_history": [1]}, "merge_history is [1]"),
    "version-string": ({"version": "1"}, "state version '1' is not supported"),
    "version-bool": ({"version": True}, "state version True is not supported"),
    "updated-at-int": ({"updated_at": 5}, "updated_at is 5"),
}


@pytest.mark.parametrize(("data", "reason"), WRONG_SHAPE.values(), ids=WRONG_SHAPE.keys())
def test_valid_json_of_the_wrong_shape_is_one_line_state_error(
    tmp_path: Path, data: object, reason: str
) -> None:
    store = StateStore(tmp_path)
    store.dir.mkdir()
    store.path.write_text(json.dumps(data))
    with pytest.raises(StateError) as caught:
        store.read()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"state file {store.path} is corrupt ({reason}")


@pytest.mark.parametrize("text", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_file_is_one_line_state_error(tmp_path: Path, text: str) -> None:
    store = StateStore(tmp_path)
    store.dir.mkdir()
    store.path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(StateError) as caught:
        store.read()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"state file {store.path} is corrupt")
    assert message.endswith("run 'paradev doctor --repair' or 'paradev reset' to move it aside")


def test_a_folder_where_the_lock_file_belongs_is_one_line_state_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.lock_path.mkdir(parents=True)
    with pytest.raises(StateError) as caught, store.update():
        pass
    assert str(caught.value) == f"cannot lock {store.lock_path}: Is a directory; move it away"
    assert not store.path.exists()


@pytest.mark.parametrize("command", [["reset"], ["doctor", "--repair"], ["start", "1"]])
def test_a_file_where_the_state_folder_belongs_is_one_line_error(
    set_up: Path, repo: Path, cli: Callable[..., Result], command: list[str]
) -> None:
    folder = repo / ".git" / "paradev"
    shutil.rmtree(folder, ignore_errors=True)
    folder.write_text("not a folder\n", encoding="utf-8")
    result = cli(*command)
    assert result.code == 2
    assert result.err.endswith(f"{folder}: File exists; move it away\n") or (
        "Not a directory" in result.err
    ), result.err
    assert result.err.count("\n") == 1 and folder.read_text() == "not a folder\n"


def test_quarantine_moves_only_a_corrupt_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.quarantine_if_corrupt() is None
    with store.update() as state:
        state.merge_order = [1]
    assert store.quarantine_if_corrupt() is None and store.read().merge_order == [1]
    store.path.write_text("{oops")
    aside = store.quarantine_if_corrupt()
    assert aside is not None and aside.name.startswith("state.json.corrupt-")
    assert aside.read_text() == "{oops" and not store.path.exists()


# -- corrupt state through the commands ------------------------------------------------------


def _damage(repo: Path, content: str = '{"version": 1, "tasks": {') -> Path:
    """Write ``content`` (by default truncated JSON) as the state file; return its path."""
    path = repo / ".git" / "paradev" / "state.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


DAMAGE = [
    pytest.param(
        '{"version": 1, "tasks": {',
        "Expecting property name enclosed in double quotes: line 1 column 26 (char 25)",
        id="truncated",
    ),
    pytest.param('{"version": 1, "tasks": 5}', "tasks is 5, expected an object", id="wrong-shape"),
]


@pytest.mark.parametrize(("content", "reason"), DAMAGE)
@pytest.mark.parametrize(
    "command",
    [
        ["setup"],
        ["status"],
        ["status", "--json"],
        ["assign", "1", "50", "New task", "1"],
        ["start", "1"],
        ["complete", "1"],
        ["doctor"],
        ["conflicts", "--check"],
        ["check", "src/app.py"],
        ["merge-order"],
        ["merge"],
        ["merge", "--dry-run"],
        ["merge", "--continue"],
        ["run-batch", "--no-launch"],
        ["run-batch", "--dry-run"],
        ["cleanup"],
        ["estimate"],
    ],
)
def test_a_damaged_state_stops_every_other_command_with_one_line(
    set_up: Path,
    repo: Path,
    cli: Callable[..., Result],
    snapshot: Callable[[], dict[str, object]],
    command: list[str],
    content: str,
    reason: str,
) -> None:
    path = _damage(repo, content)
    before = snapshot()
    result = cli(*command)
    assert (result.code, result.err) == (
        2,
        f"paradev: state file {path} is corrupt ({reason}); "
        "run 'paradev doctor --repair' or 'paradev reset' to move it aside\n",
    )
    assert snapshot() == before


@pytest.mark.parametrize("command", [["reset"], ["doctor", "--repair"]])
def test_reset_and_repair_move_a_corrupt_state_aside_and_go_on(
    set_up: Path, repo: Path, cli: Callable[..., Result], command: list[str]
) -> None:
    path = _damage(repo)
    result = cli(*command)
    assert result.code == 0, result.err
    (aside,) = path.parent.glob("state.json.corrupt-*")
    assert aside.read_text(encoding="utf-8") == '{"version": 1, "tasks": {'
    assert str(aside) in result.out
    assert cli("status").code == 0
    assert cli("start", "1").code == 0


# -- no lost update under concurrency ----------------------------------------------------------


def _spawn(cwd: Path, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_concurrent_assigns_lose_no_update(repo: Path, cli: Callable[..., Result]) -> None:
    issues = range(100, 100 + PROCESSES)
    procs = [
        _spawn(
            repo,
            [sys.executable, "-m", "paradev", "assign", str(1 + i % 3), str(i), f"task {i}", "1.5"],
        )
        for i in issues
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert outcomes == [(0, "")] * PROCESSES
    state = json.loads((repo / ".git" / "paradev" / "state.json").read_text())
    assert {int(k) for k, v in state["tasks"].items() if v["status"] == "assigned"} == set(issues)
    plan = tomlkit.parse((repo / "plan.toml").read_text()).unwrap()
    in_plan = {t["issue"]: t for b in plan["batches"] for t in b["tasks"]}
    assert set(issues) <= set(in_plan)
    assert all(in_plan[i]["title"] == f"task {i}" for i in issues)
    assert cli("status").code == 0


SNIPPET = textwrap.dedent(
    """\
    import sys
    from pathlib import Path
    from paradev.state import StateStore

    store = StateStore(Path(sys.argv[1]))
    for n in range(int(sys.argv[3])):
        with store.update() as state:
            state.merge_history.append({"writer": int(sys.argv[2]), "n": n})
    """
)


def test_concurrent_read_modify_writes_lose_nothing(tmp_path: Path) -> None:
    rounds = 5
    procs = [
        _spawn(tmp_path, [sys.executable, "-c", SNIPPET, str(tmp_path), str(w), str(rounds)])
        for w in range(PROCESSES)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * PROCESSES
    history = StateStore(tmp_path).read().merge_history
    assert sorted((h["writer"], h["n"]) for h in history) == [
        (w, n) for w in range(PROCESSES) for n in range(rounds)
    ]


# -- the merge journal in its own file ---------------------------------------------------------


def test_the_journal_has_its_own_file_and_steps_leave_the_state_alone(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        state.task(7, 1).status = "completed"
        state.train = journal()
    assert "train" not in json.loads(store.path.read_text())
    assert json.loads(store.journal_path.read_text()) == journal()
    before = store.path.read_bytes()
    store.save_journal({**journal(), "queue": []})
    assert store.path.read_bytes() == before  # a train step never rewrites the task records
    assert store.read().train == {**journal(), "queue": []}
    assert store.read_journal() == {**journal(), "queue": []}
    with store.update() as state:
        state.train = None  # the train ended
    assert not store.journal_path.exists() and store.read().train is None


def test_a_crash_while_writing_the_journal_keeps_the_old_one_and_no_temp_file(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        state.train = journal()
    before = store.journal_path.read_bytes()
    calls: list[str] = []
    mocker.patch("paradev.state.os.fsync", side_effect=lambda fd: calls.append("fsync"))
    mocker.patch("paradev.state.os.replace", side_effect=OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        store.save_journal({**journal(), "queue": []})
    assert calls == ["fsync"]  # synced before the rename was tried
    assert store.journal_path.read_bytes() == before
    assert sorted(p.name for p in store.dir.iterdir()) == ["state.json", "state.lock", "train.json"]


def test_an_old_state_holding_the_journal_is_migrated_journal_first(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    store = StateStore(tmp_path)
    store.dir.mkdir()
    old = {"version": 1, "tasks": {"7": {"issue": 7, "agent": 1}}, "train": journal("stopped")}
    store.path.write_text(json.dumps(old))
    assert store.read().train == journal("stopped")  # read as it is: readers never write
    replaced = mocker.spy(StateStore, "_replace")
    with store.update() as state:
        state.merge_order = [1]
    order = [Path(call.args[1]).name for call in replaced.call_args_list]
    assert order == ["train.json", "state.json"]  # a crash between them loses nothing
    assert "train" not in json.loads(store.path.read_text())
    again = store.read()
    assert (again.train, again.merge_order, again.tasks[7].agent) == (journal("stopped"), [1], 1)


def test_the_journal_file_wins_over_a_stale_copy_in_the_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.dir.mkdir()
    store.path.write_text(json.dumps({"version": 1, "train": journal("stopped")}))
    store.journal_path.write_text(json.dumps(journal("running")))  # killed mid-migration
    assert store.read().train == journal("running")


CORRUPT_JOURNALS = {
    "truncated": ('{"id": "x", ', "Expecting property name"),
    "wrong-shape": (json.dumps({**journal(), "queue": "1"}), 'train.queue is "1"'),
    "null": ("null", "train is null"),
}


@pytest.mark.parametrize(("text", "reason"), CORRUPT_JOURNALS.values(), ids=CORRUPT_JOURNALS)
@pytest.mark.parametrize("command", [["status", "--json"], ["merge", "--continue"], ["merge"]])
def test_a_corrupt_journal_is_one_line_and_exit_2(
    set_up: Path,
    repo: Path,
    cli: Callable[..., Result],
    snapshot: Callable[[], dict[str, object]],
    command: list[str],
    text: str,
    reason: str,
) -> None:
    path = repo / ".git" / "paradev" / "train.json"
    path.write_text(text, encoding="utf-8")
    before = snapshot()
    result = cli(*command)
    assert result.code == 2
    assert result.err.startswith(f"paradev: merge journal {path} is corrupt (")
    assert reason in result.err and "paradev doctor --repair" in result.err
    assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err
    assert snapshot() == before


def test_repair_moves_only_the_corrupt_journal_aside(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    assert cli("start", "1").code == 0
    folder = repo / ".git" / "paradev"
    tasks = json.loads((folder / "state.json").read_text())["tasks"]
    assert tasks["11"]["status"] == "in_progress"
    (folder / "train.json").write_text("{oops", encoding="utf-8")
    result = cli("doctor", "--repair")
    assert result.code == 0, result.err
    (aside,) = folder.glob("train.json.corrupt-*")
    assert aside.read_text() == "{oops" and str(aside) in result.out
    assert json.loads((folder / "state.json").read_text())["tasks"] == tasks  # records kept
    assert cli("status").code == 0


def test_a_train_stopped_before_an_upgrade_resumes_from_the_old_state(
    repo: Path, cli: Callable[..., Result], worktrees: Path
) -> None:
    """A train stopped by paradev 0.1 (journal inside state.json) goes on after the upgrade."""
    failing = repo.parent / "gate-fails"
    configure(repo, gate=f"test ! -e {failing}")
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"one.py": "1\n"})
    work(cli, worktrees, 2, {"two.py": "2\n"})
    failing.write_text("")
    assert cli("merge").code == 1  # the first gate fails: the train stops
    folder = repo / ".git" / "paradev"
    old = json.loads((folder / "state.json").read_text())
    old["train"] = json.loads((folder / "train.json").read_text())
    (folder / "state.json").write_text(json.dumps(old))  # as the old version left it
    (folder / "train.json").unlink()
    assert json.loads(cli("status", "--json").out)["train"]["status"] == "stopped"
    failing.unlink()

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert result.out.rstrip().endswith("landed: agent 1 (#11), agent 2 (#12)")
    data = json.loads((folder / "state.json").read_text())
    assert "train" not in data and not (folder / "train.json").exists()
    assert [h["status"] for h in data["merge_history"]] == ["done"]
    assert {k: v["status"] for k, v in data["tasks"].items()} == {"11": "merged", "12": "merged"}
    assert (repo / "one.py").exists() and (repo / "two.py").exists()


# Reads within one process reuse the parsed state while the file's bytes are unchanged.


def _finished_tasks(store: StateStore, count: int) -> None:
    with store.update() as state:
        for issue in range(1, count + 1):
            record = state.task(issue, 1)
            record.status, record.files_modified = "failed", [f"f{issue}.py"]
        state.merge_history.append({"agent": 1, "landed": [1]})


def test_a_file_another_process_changes_in_place_within_the_same_instant_is_read_again(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path)
    _finished_tasks(store, 3)
    assert store.read().tasks[2].status == "failed"  # now known to this process
    before = os.stat(store.path)
    script = (
        "import os, sys; p = sys.argv[1]; t = open(p).read()"
        "\nwith open(p, 'r+') as f: f.write(t.replace('\"failed\"', '\"merged\"', 2))"
        f"\nos.utime(p, ns=({before.st_atime_ns}, {before.st_mtime_ns}))"
    )
    subprocess.run([sys.executable, "-c", script, str(store.path)], check=True)
    after = os.stat(store.path)  # same inode, size and time: only the bytes tell
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert [store.read().tasks[i].status for i in (1, 2, 3)] == ["merged", "merged", "failed"]


def test_a_changed_copy_never_reaches_the_next_read(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    _finished_tasks(store, 2)
    expected = store.read()
    for source in (store.read, StateStore(tmp_path).read):
        state = source()
        state.tasks[1].files_modified.append("x.py")
        state.tasks[2].status = "merged"
        state.merge_history[0]["landed"].append(2)
        state.merge_order.append(9)
        del state.tasks[1]
        assert store.read() == expected
    with pytest.raises(RuntimeError), store.update() as state:
        state.tasks[2].files_modified.clear()
        raise RuntimeError("boom")
    assert store.read() == expected
    with store.update() as state:
        state.task(7, 1).status = "completed"
    state.tasks[7].status = "merged"  # changed after the write: the file does not hold it
    assert store.read().tasks[7].status == "completed"


def test_a_view_shares_the_parsed_records_yet_reads_the_file_every_time(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    _finished_tasks(store, 3)
    expected = store.read()
    first, second = store.view(), store.view()
    assert first == expected
    assert first.tasks[1] is second.tasks[1]  # no copy of the history for a reader
    first.tasks.pop(1)  # the tables and top-level lists are the view's own
    first.task(9, 1).status = "completed"
    first.merge_history.append({"agent": 2})
    first.merge_order.append(4)
    assert store.view() == store.read() == expected
    script = (
        "import sys; from pathlib import Path; from paradev.state import StateStore"
        "\nwith StateStore(Path(sys.argv[1])).update() as s: s.tasks[2].status = 'merged'"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    assert store.view().tasks[2].status == "merged"  # another process's write: never stale
    assert first.tasks[2].status == "failed"  # a view taken before keeps what it read


def test_a_landing_the_journal_applies_to_a_view_never_reaches_the_records_kept(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        state.task(1, 1).status = "completed"
    with store.locked():
        store.write_journal(
            {**journal(), "landed": [{"agent": 1, "commit": "c" * 40, "issues": [1]}]}
        )
    assert store.view().tasks[1].status == "merged"
    store.remove_journal()  # e.g. an aborted train's journal gone without a state write
    assert store.view().tasks[1].status == store.read().tasks[1].status == "completed"


def test_a_first_write_after_a_parse_reads_back_only_the_records_it_changed(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    store = StateStore(tmp_path)
    _finished_tasks(store, 5)
    with store.update() as state:
        state.tasks[3].cost_usd = 2
    _as_a_new_process()
    store.read()
    read_back = mocker.spy(state_mod, "_read_record")
    with store.update() as state:
        state.tasks[2].status = "merged"
        state.tasks[3].cost_usd = 2.0  # equal, yet another type: the file says 2.0
    assert read_back.call_count == 2
    assert store.read() == State.from_json(json.loads(store.path.read_text()))
    assert type(store.read().tasks[3].cost_usd) is float
    assert store.read().tasks[2].status == "merged"


def _as_a_new_process() -> None:
    """Forget what this process parsed and wrote (module caches), as a new process starts."""
    state_mod._RECORD_LINES.clear()
    state_mod._PARSED.clear()


def test_a_first_write_keeps_the_file_lines_of_the_records_it_did_not_change(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    store = StateStore(tmp_path)
    _finished_tasks(store, 3)
    spaced = store.path.read_text().replace('"status": "failed"', '"status":  "failed"', 1)
    store.path.write_text(spaced)  # task 1's line, spaced by hand: still one line per record
    _as_a_new_process()
    store.read()
    read_back = mocker.spy(state_mod, "_read_record")
    with store.update() as state:
        state.tasks[2].status = "merged"
    written = store.path.read_text()
    assert '"status":  "failed"' in written  # task 1's own line, not made again
    assert read_back.call_count == 1  # task 2's line alone
    assert store.read() == State.from_json(json.loads(written))
    assert [store.read().tasks[i].status for i in (1, 2, 3)] == ["failed", "merged", "failed"]
    store.path.write_text(json.dumps(json.loads(written), indent=2))  # laid out otherwise
    _as_a_new_process()
    store.read()
    with store.update() as state:
        state.tasks[3].status = "merged"
    rewritten = store.path.read_text()
    assert store.read() == State.from_json(json.loads(rewritten))
    assert [store.read().tasks[i].status for i in (1, 2, 3)] == ["failed", "merged", "merged"]
    assert len(rewritten.splitlines()) < len(json.dumps(json.loads(rewritten), indent=2).split())
    assert '"status":  "failed"' not in rewritten  # every line made anew: one per record


def test_a_read_after_a_write_in_this_process_gives_what_the_file_holds(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        state.merge_order_from = {"7": (1, 2)}  # a tuple in memory is a list in the file
        state.task(3, 1).cost_usd = 2
    assert store.read().merge_order_from == {"7": [1, 2]}
    assert (
        store.read()
        == StateStore(tmp_path).read()
        == State.from_json(json.loads(store.path.read_text()))
    )


def test_the_file_keeps_one_record_per_line(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    _finished_tasks(store, 3)
    lines = [line.strip().partition(": ") for line in store.path.read_text().splitlines()]
    rows = {
        key: json.loads(value.rstrip(","))
        for key, _, value in lines
        if key in ('"1"', '"2"', '"3"')
    }
    assert rows == {f'"{k}"': store.read().to_json()["tasks"][str(k)] for k in (1, 2, 3)}
    assert rows['"2"']["files_modified"] == ["f2.py"]


def _full_rules(hint: object) -> Callable[[object], bool]:
    """The type rules as written before the fast paths: the oracle for ``_checker``."""
    import types
    import typing

    # state's field types name a stand-in for typing.Any (state does not import typing)
    if hint is typing.Any or hint is state_mod._hint("Any"):
        return lambda value: True
    if hint is None or hint is type(None):
        return lambda value: value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        options = [_full_rules(arg) for arg in args]
        return lambda value: any(check(value) for check in options)
    if origin is list:
        item = _full_rules(args[0])
        return lambda value: isinstance(value, list) and all(item(v) for v in value)
    if origin is dict:
        entry = _full_rules(args[1])
        return lambda value: isinstance(value, dict) and all(entry(v) for v in value.values())
    if hint is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return lambda value: isinstance(value, int | float) and not isinstance(value, bool)
    assert isinstance(hint, type)
    return lambda value: isinstance(value, hint)


HINTS = sorted(
    {
        *(spec[1] for cls in (TaskRecord, AgentRecord) for spec in state_mod._field_specs(cls)),
        *state_mod.TRAIN_KEYS.values(),
        *state_mod.TRAIN_OPTIONAL.values(),
        *state_mod.TRAIN_AGENT_KEYS.values(),
        bool,
        float,
    },
    key=str,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(value=JSON_VALUES)
def test_the_fast_type_checks_agree_with_the_full_rules(value: object) -> None:
    for hint in HINTS:
        assert state_mod._checker(hint)(value) == _full_rules(hint)(value), (hint, value)


def test_keys_that_are_not_strings_are_written_as_json_writes_them(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        state.merge_order_from = {10: 1, 3: {"x": 1}}  # type: ignore[dict-item]
        state.conflict_snapshots = [{"pairs": {2: True}}]
    assert store.read().merge_order_from == {"3": {"x": 1}, "10": 1}
    assert store.read().conflict_snapshots == [{"pairs": {"2": True}}]


WELL_TYPED = {
    int: st.integers(0, 9),
    str: st.sampled_from([*state_mod.STATUSES, "x"]),
    float: st.floats(-1, 5) | st.integers(0, 5),
    type(None): st.none(),
}


def _field_value(hint: object) -> st.SearchStrategy[object]:
    """Mostly a value of ``hint``'s own types (a record to accept), sometimes any JSON value."""
    import types
    import typing

    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    own = [WELL_TYPED[o] for o in options if o in WELL_TYPED]
    own += [st.lists(st.text(max_size=3), max_size=2) for o in options if o == list[str]]
    own += [
        st.fixed_dictionaries({"input": st.integers(-1, 9), "output": st.integers(0, 9)})
        for o in options
        if o == dict[str, int]
    ]
    return st.one_of(*own) if own else JSON_VALUES


@st.composite
def task_records(draw: st.DrawFn) -> dict[str, object]:
    specs = state_mod._field_specs(TaskRecord)
    return {
        name: draw(JSON_VALUES if draw(st.integers(0, 40)) == 0 else _field_value(hint))
        for name, hint, _check, required in specs
        if required or draw(st.integers(0, 4)) > 0
    }


def _outcome(raw: dict[str, object]) -> object:
    try:
        return state_mod._record(TaskRecord, raw, "tasks.1")
    except (ValueError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(raw=task_records())
def test_a_record_checked_at_once_reads_as_one_checked_field_by_field(
    raw: dict[str, object],
) -> None:
    # an unknown field (ignored) takes the field-by-field path: both must agree
    assert _outcome(raw) == _outcome({**raw, "from_a_newer_paradev": 1})


def test_writes_that_reuse_unchanged_record_lines_still_hold_every_change(tmp_path: Path) -> None:
    """Each write dumps only the records that changed: a change in place is still one."""
    store = StateStore(tmp_path)
    _finished_tasks(store, 3)
    state = store.read()
    with store.locked():
        state.tasks[2].status = "completed"
        store.write(state)  # task 2's line made again, from this very list
        state.tasks[2].files_modified.append("g.py")  # changed in place
        state.tasks[3].cost_usd = 2  # == 2.0, yet dumped apart
        store.write(state)
    with store.update() as state:
        state.tasks[1].status = "merged"
    text = store.path.read_text()
    assert json.loads(text)["tasks"]["2"]["files_modified"] == ["f2.py", "g.py"]
    assert '"cost_usd": 2,' in text.splitlines()[_line_of(text, '"3": ')]
    with store.update() as state:
        state.tasks[3].cost_usd = 2.0
    fresh = StateStore(tmp_path)
    text = store.path.read_text()
    assert '"cost_usd": 2.0,' in text.splitlines()[_line_of(text, '"3": ')]
    assert store.read() == State.from_json(json.loads(store.path.read_text()))
    assert store.read().tasks[1].status == "merged"
    assert fresh.read().tasks[2].files_modified == ["f2.py", "g.py"]


def _line_of(text: str, start: str) -> int:
    return next(n for n, line in enumerate(text.splitlines()) if line.strip().startswith(start))


def test_a_train_begins_by_its_journal_alone_and_only_once(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        state.task(7, 1).status = "completed"
    before = store.path.read_bytes()
    journal: dict[str, object] = {"id": "t1", "base": "main", "status": "running"}
    journal.update(queue=[1], agents={}, landed=[], skipped=[], gate=True, push=False)

    assert store.begin_train(journal) is True
    assert store.begin_train({**journal, "id": "t2"}) is False  # one train at a time

    assert store.path.read_bytes() == before  # the state file is not rewritten
    train = store.read().train
    assert train is not None and train["id"] == "t1"
