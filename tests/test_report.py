"""The HTML report, conflict snapshots and the conflict graph, on real repositories."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from paradev import report as report_module
from paradev import snapshots
from paradev.report import build_report, duration, hours
from paradev.report.data import CHAR, LEFT, WIDTH, Timeline, conflict_matrix, timeline
from paradev.snapshots import KEEP, remember
from paradev.state import State
from paradev.workspace import open_workspace
from tests.helpers import Result, agent_tree, commit, git, state_files, write
from tests.test_train import configure, work

Cli = Callable[..., Result]

HOSTILE = "<script>alert(1)</script>"


def state_of(repo: Path) -> Any:
    return state_files(repo)


def stopped_train(repo: Path, cli: Cli, worktrees: Path) -> Path:
    """Agents 1 and 2 change one line differently, agent 3 (hostile title) another file;
    a scan records the conflict and the train stops on it. Returns the worktree root."""
    configure(repo, gate="test -f src/util.py")
    plan = (repo / "plan.toml").read_text().replace("Add the health command", HOSTILE)
    write(repo, {"plan.toml": plan})
    git(repo, "commit", "-qam", "a hostile title")
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"src/util.py": "VALUE = 'one'\n"})
    work(cli, worktrees, 2, {"src/util.py": "VALUE = 'two'\n"})
    work(cli, worktrees, 3, {"three.py": "3\n"})
    assert cli("conflicts").code == 0
    assert cli("merge").code == 1
    return worktrees


@pytest.fixture
def stopped(repo: Path, cli: Cli, worktrees: Path) -> Path:
    return stopped_train(repo, cli, worktrees)


def resolve_and_land(repo: Path, worktrees: Path, cli: Cli) -> int:
    """Resolve the stopped train's conflict by hand and let it finish; the agent it stopped on."""
    agent: int = state_of(repo)["train"]["stop"]["agent"]
    tree = agent_tree(worktrees, agent)
    write(tree, {"src/util.py": "VALUE = 'both'\n"})
    git(tree, "add", "src/util.py")
    assert cli("merge", "--continue").code == 0
    return agent


def report_of(repo: Path) -> str:
    return build_report(open_workspace(repo))


def test_scan_and_train_record_snapshots_and_step_times(repo: Path, stopped: Path) -> None:
    state = state_of(repo)
    sources = [s["source"] for s in state["conflict_snapshots"]]
    assert sources == ["conflicts", "train"]
    for snap in state["conflict_snapshots"]:
        (pair,) = snap["pairs"]
        assert pair["agents"] == [1, 2] and pair["outcome"] == "conflict"
        (conflict,) = pair["conflicts"]
        assert conflict["path"] == "src/util.py" and conflict["type"] == "content"
        assert conflict["sides"][0]["theirs"] == ["VALUE = 'two'"]
    train = state["train"]
    assert train["stops"] == [train["stop"]]
    stopped_agent = train["stop"]["agent"]
    times = train["agents"][str(stopped_agent)]["times"]
    assert "start" in times["rebase"] and "end" not in times["rebase"]
    landed = train["landed"][0]["agent"]
    for step in ("backup", "rebase", "gate", "advance"):
        assert set(train["agents"][str(landed)]["times"][step]) <= {"start", "end"}
    assert "end" in train["agents"][str(landed)]["times"]["advance"]


def test_report_shows_agents_issues_the_stop_and_escapes_titles(repo: Path, stopped: Path) -> None:
    page = report_of(repo)

    stop = state_of(repo)["train"]["stop"]
    assert re.search(
        rf'<tr class="landing stopped" data-agent="{stop["agent"]}">.*?STOPPED here: conflict',
        page,
        re.S,
    )
    for agent in (1, 2, 3):
        assert f"agent {agent}" in page
    for issue in (11, 12, 13, 21):
        assert f"#{issue}" in page
    assert '<tr class="critical"><td>#11</td>' in page  # the critical path, said in words
    assert HOSTILE not in page
    assert html.escape(HOSTILE) in page
    assert 'data-pair="pair-1-2"' in page  # the conflicting cell is clickable
    detail = page.split('id="pair-1-2"', 1)[1].split("</div>\n  <div", 1)[0]
    assert "src/util.py" in detail and "content" in detail and "VALUE = &#39;two&#39;" in detail
    assert "Content-Security-Policy" in page and "http://" not in page.split("<svg", 1)[0]


def test_the_report_still_shows_conflicts_after_everything_landed(
    repo: Path, stopped: Path, cli: Cli
) -> None:
    resolve_and_land(repo, stopped, cli)
    assert "CONFLICT" not in cli("conflicts").out  # nothing collides any more

    result = cli("report")

    page = Path(result.out.strip()).read_text(encoding="utf-8")
    matrix = page.split('id="matrix"', 1)[1].split("</table>", 1)[0]
    assert "CONFLICT<small>now: no work</small>" in matrix  # the worst ever, and what is now
    assert state_of(repo)["conflict_snapshots"][-1]["source"] == "report"
    history = state_of(repo)["merge_history"][-1]
    assert history["status"] == "done" and len(history["stops"]) == 1
    assert set(history["agents"]) == {"1", "2", "3"}
    # every landing shows its diff stats, read through GitPython
    assert page.count("commit(s),") == 3
    assert "gate exit" not in page


def test_a_failing_gate_shows_its_exit_code_and_log_tail(
    repo: Path, cli: Cli, worktrees: Path
) -> None:
    configure(repo, gate="echo the-gate-said-no; exit 3")
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"one.py": "1\n"})
    assert cli("merge").code == 1

    page = report_of(repo)

    assert "gate exit 3" in page
    assert "the-gate-said-no" in page.split('class="log"', 1)[1]
    assert "STOPPED here: gate" in page


def test_report_command_writes_the_file_and_opens_it(
    repo: Path, stopped: Path, cli: Cli, tmp_path: Path, mocker: MockerFixture
) -> None:
    opened = mocker.patch("webbrowser.open")  # no browser to open in a test run
    target = tmp_path / "out" / "r.html"

    result = cli("report", "--output", str(target), "--open")

    assert result.code == 0, result.err
    assert result.out.strip() == str(target)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    opened.assert_called_once_with(target.as_uri())
    default = cli("report")
    assert Path(default.out.strip()) == repo / ".git" / "paradev" / "report.html"
    assert git(repo, "status", "--porcelain") == ""  # never inside a work tree


def test_report_to_a_place_it_cannot_write_is_one_line(
    repo: Path, cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()

    under_file = cli("report", "--output", str(tmp_path / "a-file" / "r.html"))
    onto_dir = cli("report", "--output", str(tmp_path / "a-dir"))

    for result in (under_file, onto_dir):
        assert result.code == 2
        assert result.err.startswith("paradev: cannot write the report to ")
        assert "--output FILE" in result.err and "Traceback" not in result.err
    assert list((tmp_path / "a-dir").iterdir()) == []
    assert (tmp_path / "a-file").read_text() == "x"


def test_report_of_a_fresh_repository_says_nothing_happened_yet(
    repo: Path, cli: Cli, tmp_path: Path
) -> None:
    result = cli("report", "--output", str(tmp_path / "r.html"))

    assert result.code == 0, result.err
    page = (tmp_path / "r.html").read_text()
    assert "No agent branch has had work to compare yet (1 scan(s) recorded)" in page
    assert "No task has started yet" in page
    assert "No merge train has run yet" in page


def test_snapshots_are_bounded_and_alike_ones_merge() -> None:
    state = State()
    base = {"base": "main", "agents": [1, 2], "against_base": [], "source": "conflicts"}
    for index in range(KEEP + 10):
        pairs = [{"agents": [1, 2], "outcome": "overlap", "overlap": [f"f{index}"]}]
        remember(state, {**base, "pairs": pairs, "at": f"t{index}", "last_seen": f"t{index}"})
        remember(state, {**base, "pairs": pairs, "at": f"u{index}", "last_seen": f"u{index}"})

    assert len(state.conflict_snapshots) == KEEP
    assert state.conflict_snapshots[-1]["at"] == f"t{KEEP + 9}"
    assert state.conflict_snapshots[-1]["last_seen"] == f"u{KEEP + 9}"


def test_matrix_keeps_the_worst_outcome_ever_seen() -> None:
    conflict = {"agents": [1, 2], "outcome": "conflict", "overlap": ["a"], "conflicts": []}
    snaps = [
        {"at": "t1", "agents": [1, 2, 3], "pairs": [conflict], "against_base": []},
        {"at": "t2", "agents": [1, 2, 3], "pairs": [], "against_base": []},
    ]

    matrix = conflict_matrix([1, 2, 3, 4], snaps)

    assert matrix.cell(2, 1).outcome == "conflict"
    assert matrix.cell(1, 2).first_seen == "t1"
    assert matrix.cell(1, 3).outcome == "clean"
    assert matrix.cell(1, "base").outcome == "clean"
    assert matrix.cell(1, 2).now_label == "now: clean"
    assert matrix.cell(1, 3).now_label == ""
    assert matrix.cell(2, 4).outcome == "none"  # agent 4 never had work


def test_duration_reads_well() -> None:
    assert [duration(x) for x in (None, 0.5, 42, 75, 3700)] == [
        "-",
        "0.50s",
        "42s",
        "1m 15s",
        "1h 01m",
    ]
    assert [hours(x) for x in (None, 2.5, 0.05)] == ["-", "2.50h", "3m 00s"]


# -- conflicts --format -------------------------------------------------------------------------


def three_agents_colliding(repo: Path, cli: Cli, worktrees: Path) -> None:
    """1 and 2 conflict on a path with a quote; 2 and 3 only overlap; nothing is merged."""
    assert cli("setup").code == 0
    odd = 'say "hi" | x.py'
    work(cli, worktrees, 1, {odd: "A = 1\n", "shared.txt": "x\n"})
    work(cli, worktrees, 2, {odd: "A = 2\n", "notes.md": "top\n\n\n\n\n\nend\n"})
    git(repo, "commit", "--allow-empty", "-qm", "nothing")
    assert cli("start", "3").code == 0
    tree = agent_tree(worktrees, 3)
    write(tree, {"notes.md": "top\n\n\n\n\n\nend\n"})
    git(tree, "add", "-A")
    git(tree, "commit", "-qm", "same notes")


def test_conflicts_format_dot(repo: Path, cli: Cli, worktrees: Path) -> None:
    three_agents_colliding(repo, cli, worktrees)

    result = cli("conflicts", "--format", "dot")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "graph conflicts {" and lines[-1] == "}"
    assert '  a1 -- a2 [label="conflict: say \\"hi\\" | x.py", color="red", penwidth=2];' in lines
    assert '  a2 -- a3 [label="overlap: notes.md", style="dashed"];' in lines
    assert not any(line.startswith("  a1 -- a3") for line in lines)


def test_conflicts_format_mermaid(repo: Path, cli: Cli, worktrees: Path) -> None:
    three_agents_colliding(repo, cli, worktrees)

    result = cli("conflicts", "--format", "mermaid")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "graph LR"
    assert '  a1 ---|"conflict: say #quot;hi#quot; #124; x.py"| a2' in lines
    assert '  a2 -.-|"overlap: notes.md"| a3' in lines
    assert "  class a1,a2 conflict" in lines


def test_conflicts_format_refuses_a_bad_name_and_json(repo: Path, cli: Cli) -> None:
    bad = cli("conflicts", "--format", "png")
    both = cli("conflicts", "--format", "dot", "--json")

    assert bad.code == 2 and "--format must be one of text, dot, mermaid" in bad.err
    assert both.code == 2 and "without --json" in both.err
    assert "Traceback" not in bad.err + both.err


def test_a_snapshot_keeps_conflicts_first_when_pairs_are_many(
    repo: Path, cli: Cli, worktrees: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_agents_colliding(repo, cli, worktrees)
    monkeypatch.setattr(snapshots, "PAIRS_KEPT", 1)

    assert cli("conflicts").code == 0

    (snap,) = state_of(repo)["conflict_snapshots"]
    assert [p["agents"] for p in snap["pairs"]] == [[1, 2]]
    assert snap["pairs_left_out"] == 1


def test_watch_records_what_it_sees(
    repo: Path, cli: Cli, worktrees: Path, mocker: MockerFixture
) -> None:
    three_agents_colliding(repo, cli, worktrees)
    mocker.patch("time.sleep", side_effect=KeyboardInterrupt)  # Ctrl-C during the first wait

    assert cli("conflicts", "--watch", "--interval", "1").code == 130

    (snap,) = state_of(repo)["conflict_snapshots"]
    assert snap["source"] == "conflicts" and len(snap["pairs"]) == 2


def test_timeline_places_spans_dependency_arrows_and_the_critical_path(repo: Path) -> None:
    plan = open_workspace(repo).plan
    state = State()
    spans = {
        11: ("08:00", "09:00", "09:30"),
        12: ("08:00", "08:30", None),
        21: ("10:00", None, None),
    }
    for issue, (start, done, landed) in spans.items():
        record = state.task(issue, 1 if issue != 12 else 2)
        record.status = "merged" if landed else ("completed" if done else "in_progress")
        record.started_at = f"2026-11-02T{start}:00+00:00"
        record.completed_at = done and f"2026-11-02T{done}:00+00:00"
        record.merged_at = landed and f"2026-11-02T{landed}:00+00:00"
    now = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)

    line = timeline(plan, state, [11, 21], now)

    bars = {bar.issue: bar for bar in line.bars}
    assert sorted(bars) == [11, 12, 21] and [t.issue for t in line.unstarted] == [13]
    assert bars[11].x == bars[12].x == LEFT  # both started first
    assert bars[21].x + bars[21].work_width == pytest.approx(LEFT + WIDTH)  # runs until now
    assert bars[11].work_width == pytest.approx(WIDTH / 4)  # 1h of 4h
    assert bars[11].land_width == pytest.approx(WIDTH / 8)
    assert bars[12].y > bars[11].y == bars[21].y  # one lane per agent
    assert bars[11].critical and bars[21].critical and not bars[12].critical
    assert "(critical path)" in bars[11].label and "2h planned" in bars[11].label
    (arrow,) = line.arrows
    assert arrow.text == "#21 depends on #11" and arrow.critical
    assert arrow.path.startswith(f"M{bars[11].end:.1f},")
    assert [label for _, label in line.ticks] == ["08:00", "09:00", "10:00", "11:00", "12:00"]


def test_an_unchanged_scan_writes_nothing(repo: Path, cli: Cli, worktrees: Path) -> None:
    three_agents_colliding(repo, cli, worktrees)
    assert cli("conflicts").code == 0
    state = repo / ".git" / "paradev" / "state.json"
    before = state.read_bytes()

    assert cli("conflicts", "--json").code == 0

    assert state.read_bytes() == before  # no lock taken, nothing rewritten


def test_the_report_shows_the_cost_and_tokens_agents_reported(repo: Path) -> None:
    assert "<td>not reported</td>" in report_of(repo)
    with open_workspace(repo).store.update() as state:
        first, second = state.task(11, 1), state.task(12, 2)
        first.status, first.cost_usd = "completed", 1.25
        first.tokens = {"input": 12000, "output": 345}
        second.status, second.cost_usd = "completed", 0.5

    page = report_of(repo)

    assert "<th>actual cost (as agents reported it)</th><td>1.75 USD</td>" in page
    row = page[page.index("<td>#11</td>") :].split("</tr>")[0]
    assert "<td>1.25 USD</td><td>12,000 in / 345 out</td>" in row
    assert "not reported" not in page


def test_each_side_of_a_hunk_names_whose_it_is(repo: Path, stopped: Path) -> None:
    detail = report_of(repo).split('id="pair-1-2"', 1)[1].split("</div>\n  <div", 1)[0]

    side = r'<pre class="{}"><span class="side">(.*?)</span>\n(.*?)</pre>'
    ours = re.search(side.format("ours"), detail, re.S)
    theirs = re.search(side.format("theirs"), detail, re.S)
    assert ours and ours.groups() == ("agent 1", "VALUE = &#39;one&#39;\n")
    assert theirs and theirs.groups() == ("agent 2", "VALUE = &#39;two&#39;\n")
    css = (Path(report_module.__file__).parent / "templates" / "report.css").read_text()
    assert "base side" not in css  # agent 1 is no base


def test_a_gate_log_tail_drops_colours_and_redrawn_progress(
    repo: Path, cli: Cli, worktrees: Path
) -> None:
    gate = r"printf '10%%\r55%%\r100%%\n\033[31mFAILED\033[0m\ttest_x\n'; exit 1"
    configure(repo, gate=gate)
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"one.py": "1\n"})
    assert cli("merge").code == 1

    log = report_of(repo).split('<pre class="log">', 1)[1].split("</pre>", 1)[0]

    assert log == "100%\nFAILED\ttest_x"


def test_a_landing_says_which_rebase_conflict_was_resolved(
    repo: Path, stopped: Path, cli: Cli
) -> None:
    agent = resolve_and_land(repo, stopped, cli)

    page = report_of(repo)

    row = page.split(f'<tr class="landing landed" data-agent="{agent}">', 1)[1].split("</tr>")[0]
    assert "after its rebase conflict in <code>src/util.py</code> was resolved" in row
    assert page.count("was resolved") == 1


def test_timeline_captions_never_run_into_the_next_bar(repo: Path) -> None:
    plan = open_workspace(repo).plan
    state = State()
    spans = {11: ("08:00", "08:01"), 21: ("08:02", "12:00"), 12: ("08:00", "12:00")}
    for issue, (start, done) in spans.items():
        record = state.task(issue, 2 if issue == 12 else 1)
        record.status = "completed"
        record.started_at = f"2026-11-02T{start}:00+00:00"
        record.completed_at = f"2026-11-02T{done}:00+00:00"

    line = timeline(plan, state, [11, 21], datetime(2026, 11, 2, 12, 0, tzinfo=UTC))

    bars = {bar.issue: bar for bar in line.bars}
    assert bars[21].caption == "#21 2h planned ★ critical"  # the lane's last: room to the end
    assert bars[12].caption == "#12 1.5h planned"
    assert bars[11].caption in ("#11", "")  # #21 starts 8 px after it
    for bar in line.bars:
        assert bar.x + len(bar.caption) * CHAR <= min(
            [b.x for b in line.bars if b.y == bar.y and b.x > bar.x] + [line.width]
        )
    for x, label in line.ticks:
        assert x + len(label) * CHAR / 2 <= line.width  # the last tick's label is not cut off


def test_a_long_critical_path_is_named_in_part_and_counted() -> None:
    line = Timeline([1], [], [], [], 100, 100, list(range(1, 41)), [])
    short = Timeline([1], [], [], [], 100, 100, [3, 5], [])

    assert line.critical_text == " → ".join(f"#{i}" for i in range(1, 13)) + " → … (28 more)"
    assert short.critical_text == "#3 → #5"


def test_report_open_without_a_browser_says_so_and_still_writes(
    repo: Path, cli: Cli, tmp_path: Path, mocker: MockerFixture
) -> None:
    mocker.patch("webbrowser.open", return_value=False)  # what it answers with no browser
    target = tmp_path / "r.html"

    result = cli("report", "--output", str(target), "--open")

    assert result.code == 0
    assert result.out.strip() == str(target) and target.is_file()
    assert result.err == (
        f"paradev: warning: no web browser found to open the report; "
        f"open {target.as_uri()} in one\n"
    )


def test_both_graph_formats_mark_an_agent_that_conflicts_with_base(
    repo: Path, cli: Cli, worktrees: Path
) -> None:
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"src/util.py": "VALUE = 'agent'\n"})
    commit(repo, {"src/util.py": "VALUE = 'base'\n"}, "base moves on")

    dot = cli("conflicts", "--format", "dot").out.splitlines()
    mermaid = cli("conflicts", "--format", "mermaid").out.splitlines()

    assert '  a1 [label="agent 1", color="red", xlabel="conflicts with base"];' in dot
    assert '  a1["agent 1 (conflicts with base)"]' in mermaid
    assert "  class a1 conflict" in mermaid
