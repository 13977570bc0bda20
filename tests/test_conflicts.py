"""Conflicts from real branch contents, checked against what a real ``git merge`` does."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from paradev import conflicts as conf
from paradev import git as gitmod
from paradev.branches import Changes, Heads, find_heads
from paradev.conflicts import Report, analyze, may_conflict, parse_hunks
from paradev.git import Git, git_env, merge_trees
from paradev.workspace import Workspace, open_workspace
from tests.conftest import APP
from tests.helpers import Result, agent_tree, commit, git, plan_with, work, write

Files = dict[str, str | bytes | None]


def ws_of(repo: Path) -> Workspace:
    return open_workspace(repo)


@dataclass(frozen=True)
class RealMerge:
    """What a real ``git merge`` of two commits did in a throwaway clone."""

    failed: bool
    unmerged: set[str]
    output: str  # what git printed (its CONFLICT lines)
    clone: Path


def real_merge(repo: Path, tmp: Path, ours: str, theirs: str) -> RealMerge:
    """Merge ``theirs`` into ``ours`` with a real ``git merge`` in a throwaway clone."""
    clone = tmp / f"clone-{ours[:8]}-{theirs[:8]}"
    git(tmp, "clone", "-q", "--no-checkout", str(repo), str(clone))
    git(clone, "checkout", "-q", "--detach", ours)
    proc = subprocess.run(
        ["git", "merge", "--no-edit", "--no-ff", theirs],
        cwd=clone,
        capture_output=True,
        text=True,
        env=git_env(),
        check=False,
    )
    unmerged = {line.split("\t", 1)[1] for line in git(clone, "ls-files", "-u").splitlines()}
    return RealMerge(proc.returncode != 0, unmerged, proc.stdout + proc.stderr, clone)


def plain(paths: set[str]) -> set[str]:
    """Paths without the ``~<side>`` suffix git adds when moving one aside (labels differ)."""
    return {p.split("~", 1)[0] for p in paths}


def kinds(text: str) -> list[str]:
    return sorted(re.findall(r"^CONFLICT \(([^)]*)\)", text, flags=re.MULTILINE))


def two_agents(set_up: Path, left: Files, right: Files) -> tuple[str, str]:
    one = commit(agent_tree(set_up, 1), left, "agent 1 work")
    two = commit(agent_tree(set_up, 2), right, "agent 2 work")
    return one, two


EDITED = APP.replace("    return 5\n", "    return 'five'\n")
EDITED_OTHER = APP.replace("    return 5\n", "    return 'FIVE'\n")
SYMLINK = "symlink"  # marker: replace the path by a symlink

CASES: dict[str, tuple[Files, Files]] = {
    "content": ({"src/app.py": EDITED}, {"src/app.py": EDITED_OTHER}),
    "add/add": ({"src/new.py": "A = 1\n"}, {"src/new.py": "A = 2\n"}),
    "modify/delete": ({"src/util.py": "VALUE = 2\n"}, {"src/util.py": None}),
    "rename/rename": (
        {"src/util.py": None, "src/a.py": "VALUE = 1\n"},
        {"src/util.py": None, "src/b.py": "VALUE = 1\n"},
    ),
    "rename/delete": ({"src/util.py": None, "src/a.py": "VALUE = 1\n"}, {"src/util.py": None}),
    "file/directory": ({"src/pkg": "a file\n"}, {"src/pkg/x.py": "X = 1\n"}),
    "binary": ({"logo.bin": b"\x00\x01left\x00"}, {"logo.bin": b"\x00\x02right\x00"}),
    "file location": (
        {"tests/test_app.py": None, "checks/test_app.py": "def test_ok():\n    assert True\n"},
        {"tests/test_new.py": "def test_new():\n    pass\n"},
    ),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_conflict_type_matches_a_real_merge(
    set_up: Path, repo: Path, tmp_path: Path, kind: str
) -> None:
    left, right = CASES[kind]
    one, two = two_agents(set_up, left, right)

    report = analyze(ws_of(repo))

    pair = report.pair(1, 2)
    assert pair is not None and pair.merged
    real = real_merge(repo, tmp_path, one, two)
    assert real.failed and real.unmerged
    assert pair.conflict is True
    assert kind in {c.type for c in pair.conflicts}
    named = {p for c in pair.conflicts for p in c.paths}
    assert plain(real.unmerged) <= plain(named)  # every path git leaves unmerged is reported
    assert kinds(real.output) == kinds("\n".join(c.message for c in pair.conflicts))


def test_mode_conflict_from_a_symlink_matches_a_real_merge(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    tree1 = agent_tree(set_up, 1)
    (tree1 / "README.md").unlink()
    os.symlink("src/util.py", tree1 / "README.md")
    one = commit(tree1, {}, "README becomes a symlink")
    two = commit(agent_tree(set_up, 2), {"README.md": "# changed\n"})

    pair = analyze(ws_of(repo)).pair(1, 2)

    real = real_merge(repo, tmp_path, one, two)
    assert pair is not None and real.failed and pair.conflict
    assert [c.type for c in pair.conflicts] == ["mode"]
    assert plain(real.unmerged) <= plain({p for c in pair.conflicts for p in c.paths})
    assert kinds(real.output) == kinds(pair.conflicts[0].message)


HARMLESS: dict[str, tuple[Files, Files]] = {
    "far-apart edits": (
        {"src/app.py": APP.replace("    return 1\n", "    return 'one'\n")},
        {"src/app.py": APP.replace("    return 18\n", "    return 'eighteen'\n")},
    ),
    "identical changes": ({"src/util.py": "VALUE = 3\n"}, {"src/util.py": "VALUE = 3\n"}),
    "identical added files": ({"src/same.py": "S = 1\n"}, {"src/same.py": "S = 1\n"}),
}


@pytest.mark.parametrize("case", sorted(HARMLESS))
def test_harmless_overlap_is_overlap_without_conflict(
    set_up: Path, repo: Path, tmp_path: Path, case: str
) -> None:
    left, right = HARMLESS[case]
    one, two = two_agents(set_up, left, right)

    pair = analyze(ws_of(repo)).pair(1, 2)

    assert pair is not None
    assert pair.overlap == sorted(set(left) & set(right))
    assert pair.conflict is False and pair.conflicts == []
    assert pair.merged  # it was really merged, not guessed
    real = real_merge(repo, tmp_path, one, two)
    assert not real.failed and not real.unmerged


def test_disjoint_pairs_are_never_merged_and_are_clean(set_up: Path, repo: Path) -> None:
    two_agents(set_up, {"src/util.py": "VALUE = 9\n"}, {"README.md": "# other\n"})

    report = analyze(ws_of(repo))

    pair = report.pair(1, 2)
    assert pair is not None
    assert (pair.merged, pair.conflict, pair.overlap) == (False, False, [])
    assert [b.agent for b in report.branches] == [1, 2]
    assert report.idle == [3]


def test_content_hunks_are_the_line_ranges_of_the_real_merge(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    left = APP.replace("    return 3\n", "    return 'three'\n").replace(
        "    return 15\n", "    return 'fifteen'\n"
    )
    right = APP.replace("    return 3\n", "    return 'THREE'\n").replace(
        "    return 15\n", "    return 'FIFTEEN'\n"
    )
    one, two = two_agents(set_up, {"src/app.py": left}, {"src/app.py": right})

    pair = analyze(ws_of(repo)).pair(1, 2)

    merged = (real_merge(repo, tmp_path, one, two).clone / "src/app.py").read_text(encoding="utf-8")
    expected = parse_hunks(merged)
    assert pair is not None
    (found,) = pair.conflicts
    assert [(h.start, h.end) for h in found.hunks] == [(h.start, h.end) for h in expected]
    assert len(found.hunks) == 2
    assert [h.ours for h in found.hunks] == [("    return 'three'",), ("    return 'fifteen'",)]
    assert [h.theirs for h in found.hunks] == [("    return 'THREE'",), ("    return 'FIFTEEN'",)]


def test_describe_conflicts_reuses_merge_tree_results(set_up: Path, repo: Path) -> None:
    one, two = two_agents(set_up, {"src/app.py": EDITED}, {"src/app.py": EDITED_OTHER})
    gitrepo = Git(repo)

    (merge,) = merge_trees(gitrepo, [(one, two)])
    (found,) = conf.describe_conflicts(gitrepo, merge)

    assert (found.path, found.type) == ("src/app.py", "content")
    assert found.hunks[0].ours == ("    return 'five'",)
    assert found.hunks[0].theirs == ("    return 'FIVE'",)


def test_parse_hunks_handles_diff3_style_and_ignores_unfinished_markers() -> None:
    text = "a\n<<<<<<< x\nours\n||||||| base\nold\n=======\ntheirs\n>>>>>>> y\nb\n<<<<<<< z\n"
    (hunk,) = parse_hunks(text)
    assert (hunk.start, hunk.end, hunk.ours, hunk.theirs) == (2, 8, ("ours",), ("theirs",))


def test_against_base_matches_a_real_merge_into_base(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    head = commit(agent_tree(set_up, 1), {"src/util.py": "VALUE = 'agent'\n"})
    commit(agent_tree(set_up, 2), {"README.md": "# two\n"})
    base = commit(repo, {"src/util.py": "VALUE = 'base'\n"}, "base moved on")

    report = analyze(ws_of(repo))

    by_agent = {b.agent: b for b in report.against_base}
    assert by_agent[1].conflict is True
    assert [c.type for c in by_agent[1].conflicts] == ["content"]
    assert by_agent[2].conflict is False
    assert real_merge(repo, tmp_path, base, head).failed


def test_pairs_forked_from_different_base_commits_are_compared_from_their_merge_base(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    """Agent 2 forks later, after base changed util.py; agent 1 changed it from the old fork."""
    one = commit(agent_tree(set_up, 1), {"src/util.py": "VALUE = 'one'\n"})
    commit(repo, {"src/util.py": "VALUE = 'base'\n"}, "base moved on")
    tree2 = agent_tree(set_up, 2)
    git(tree2, "merge", "-q", "--ff-only", "main")
    two = commit(tree2, {"README.md": "# two\n"})

    pair = analyze(ws_of(repo)).pair(1, 2)

    assert pair is not None and pair.overlap == []
    assert pair.conflict is real_merge(repo, tmp_path, one, two).failed is True


def test_branches_sharing_commits_are_always_merged(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    tree1, tree2 = agent_tree(set_up, 1), agent_tree(set_up, 2)
    commit(tree1, {"src/util.py": "VALUE = 2\n"})
    git(tree2, "merge", "-q", "--ff-only", "parallel-dev/agent-1")
    one = commit(tree1, {"src/util.py": "VALUE = 1\n"}, "revert on agent 1")
    two = commit(tree2, {"src/util.py": "VALUE = 22\n"})

    pair = analyze(ws_of(repo)).pair(1, 2)

    assert pair is not None and pair.merged
    assert pair.conflict is real_merge(repo, tmp_path, one, two).failed


def test_prefilter_catches_renames_file_directory_and_directory_renames() -> None:
    renamed = Changes.of({"src/util.py": "D", "src/a.py": "A"})
    assert may_conflict(renamed, Changes.of({"src/util.py": "M"}))  # rename vs modify
    assert may_conflict(renamed, Changes.of({"src/a.py": "A"}))  # rename onto an added file
    assert may_conflict(Changes.of({"src/pkg": "A"}), Changes.of({"src/pkg/x.py": "A"}))
    assert may_conflict(Changes.of({"src/pkg/x.py": "A"}), Changes.of({"src/pkg": "A"}))
    moved_dir = Changes.of({"tests/t.py": "D", "checks/t.py": "A"})
    assert may_conflict(moved_dir, Changes.of({"tests/new.py": "A"}))
    assert not may_conflict(Changes.of({"src/a.py": "M"}), Changes.of({"src/b.py": "M"}))
    assert not may_conflict(Changes.of({"src/a.py": "D"}), Changes.of({"src/b.py": "M"}))


def test_uncommitted_work_is_snapshotted_without_touching_the_worktree(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    commit(agent_tree(set_up, 1), {"src/app.py": EDITED})
    tree2 = agent_tree(set_up, 2)
    write(tree2, {"src/app.py": EDITED_OTHER, "notes/new.txt": "untracked\n"})
    (tree2 / ".gitignore").write_text("ignored.txt\n", encoding="utf-8")
    write(tree2, {"ignored.txt": "never\n"})
    index = Path(git(tree2, "rev-parse", "--path-format=absolute", "--git-path", "index"))
    before = (index.read_bytes(), git(tree2, "status", "--porcelain=v1"))

    committed = analyze(ws_of(repo))
    snapshot = analyze(ws_of(repo), uncommitted=True)

    assert committed.pair(1, 2) is None  # agent 2 has no commits
    pair = snapshot.pair(1, 2)
    assert pair is not None and pair.conflict
    branch2 = next(b for b in snapshot.branches if b.agent == 2)
    assert branch2.uncommitted is True
    assert set(branch2.files) == {"src/app.py", "notes/new.txt", ".gitignore"}
    assert (index.read_bytes(), git(tree2, "status", "--porcelain=v1")) == before
    assert git(tree2, "rev-parse", "HEAD") == git(repo, "rev-parse", "main")


def test_the_cache_is_keyed_by_commits_under_the_common_dir(set_up: Path, repo: Path) -> None:
    two_agents(set_up, {"src/app.py": EDITED}, {"src/app.py": EDITED_OTHER})
    ws = ws_of(repo)
    first = analyze(ws)
    path = conf.cache_path(ws)
    assert path.parent == repo / ".git" / "paradev"
    data = json.loads(path.read_text(encoding="utf-8"))
    (key,) = data["entries"]
    assert key.split(":") == [first.base_commit, first.branches[0].head, first.branches[1].head]
    # An unchanged pair is read back, never recomputed: a doctored entry shows through.
    data["entries"][key]["conflicts"][0]["message"] = "from the cache"
    path.write_text(json.dumps(data), encoding="utf-8")

    pair = analyze(ws).pair(1, 2)

    assert pair is not None and pair.conflicts[0].message == "from the cache"
    assert analyze(ws, use_cache=False).pair(1, 2) == first.pair(1, 2)


def test_a_damaged_cache_only_costs_time(set_up: Path, repo: Path) -> None:
    two_agents(set_up, {"src/app.py": EDITED}, {"src/app.py": EDITED_OTHER})
    ws = ws_of(repo)
    conf.cache_path(ws).parent.mkdir(parents=True, exist_ok=True)
    conf.cache_path(ws).write_text("{not json", encoding="utf-8")

    pair = analyze(ws).pair(1, 2)

    assert pair is not None and pair.conflict
    assert (
        json.loads(conf.cache_path(ws).read_text(encoding="utf-8"))["version"] == conf.CACHE_VERSION
    )


def test_remote_uses_the_remote_tracking_agent_branches(
    set_up: Path, repo: Path, remote: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    plan = repo / "plan.toml"
    plan.write_text(
        plan.read_text(encoding="utf-8").replace(
            'base = "main"\n', 'base = "main"\nremote = "origin"\n'
        ),
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    git(tmp_path, "clone", "-q", str(remote), str(elsewhere))
    for agent, content in ((1, EDITED), (2, EDITED_OTHER)):
        git(elsewhere, "checkout", "-q", "-B", f"parallel-dev/agent-{agent}", "origin/main")
        commit(elsewhere, {"src/app.py": content})
        git(elsewhere, "push", "-q", "origin", f"parallel-dev/agent-{agent}")

    local = cli("conflicts", "--json", "--check")
    remote_run = cli("conflicts", "--json", "--check", "--remote")

    assert local.code == 0 and local.json()["pairs"] == []
    assert remote_run.code == 1, remote_run.err
    (pair,) = remote_run.json()["pairs"]
    assert pair["conflict"] is True and pair["agents"] == [1, 2]


def test_remote_without_a_configured_remote_is_a_clear_error(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    result = cli("conflicts", "--remote")
    assert result.code == 2
    assert "project.remote" in result.err and "Traceback" not in result.err


def test_cli_json_has_the_design_keys_and_check_exits_1(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    two_agents(set_up, {"src/app.py": EDITED}, {"src/app.py": EDITED_OTHER})
    commit(agent_tree(set_up, 3), {"README.md": "# three\n"})

    result = cli("conflicts", "--json")
    every = cli("conflicts", "--json", "--all-pairs")
    checked = cli("conflicts", "--check")

    assert result.code == 0
    data = result.json()
    assert {"base", "base_commit", "branches", "pairs", "summary", "against_base"} <= set(data)
    assert data["base"] == "main"
    assert [b["agent"] for b in data["branches"]] == [1, 2, 3]
    assert set(data["branches"][0]) >= {"agent", "branch", "head", "files", "uncommitted"}
    assert [p["agents"] for p in data["pairs"]] == [[1, 2]]  # the clean pairs are only counted
    assert data["summary"] == {"clean": 2, "overlap": 0, "conflict": 1}
    assert [p["agents"] for p in every.json()["pairs"]] == [[1, 2], [1, 3], [2, 3]]
    assert every.json()["summary"] == data["summary"]
    assert every.json()["pairs"][1] == {
        "agents": [1, 3],
        "overlap": [],
        "conflict": False,
        "conflicts": [],
        "issues": {"1": [], "3": []},  # work begun outside any task
    }
    first = data["pairs"][0]
    assert first["overlap"] == ["src/app.py"] and first["conflict"] is True
    (conflict,) = first["conflicts"]
    assert conflict["path"] == "src/app.py" and conflict["type"] == "content"
    assert conflict["hunks"] == [[22, 26]] and conflict["message"]
    assert data["against_base"] == [
        {"agent": a, "conflict": False, "conflicts": []} for a in (1, 2, 3)
    ]
    assert checked.code == 1 and "1 real conflict" in checked.err
    assert "CONFLICT" in checked.out and "agent 1 x agent 2: CONFLICT" in checked.out


def test_cli_check_exits_0_without_conflicts_and_shows_harmless_overlap(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    two_agents(set_up, {"src/util.py": "VALUE = 3\n"}, {"src/util.py": "VALUE = 3\n"})

    result = cli("conflicts", "--check")
    data = cli("conflicts", "--json").json()

    assert result.code == 0, result.err
    assert "overlap, merges cleanly: src/util.py" in result.out
    assert "0 conflict(s), 1 harmless overlap(s)" in result.out
    assert data["summary"] == {"clean": 0, "overlap": 1, "conflict": 0}
    assert [(p["agents"], p["overlap"], p["conflict"]) for p in data["pairs"]] == [
        ([1, 2], ["src/util.py"], False)
    ]


def test_watch_prints_only_what_changed(set_up: Path, repo: Path) -> None:
    commit(agent_tree(set_up, 1), {"src/app.py": EDITED})
    commit(agent_tree(set_up, 2), {"README.md": "# two\n"})
    ws = ws_of(repo)
    printed: list[str] = []
    changes: list[Callable[[], object]] = [
        lambda: None,  # nothing changes: nothing printed
        lambda: commit(agent_tree(set_up, 2), {"src/app.py": EDITED_OTHER}),
    ]

    def sleep(_: float) -> None:
        changes.pop(0)()

    conf.watch(lambda: analyze(ws), printed.append, 0.0, iterations=3, sleep=sleep)

    assert len(printed) == 2
    assert printed[0].startswith("conflicts (base main")
    assert "agents 1 x 2: clean -> CONFLICT (src/app.py)" in printed[1]
    assert "agent 2 x base" not in printed[1]


def test_watch_command_line_runs_until_interrupted(
    set_up: Path, cli: Callable[..., Result], mocker: MockerFixture
) -> None:
    mocker.patch("time.sleep", side_effect=KeyboardInterrupt)  # Ctrl-C during the first wait
    result = cli("conflicts", "--watch", "--interval", "1")
    assert result.code == 130
    assert result.out.startswith("conflicts (base main")


def test_check_names_other_agents_changing_a_path(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    commit(agent_tree(set_up, 2), {"src/app.py": EDITED})
    write(agent_tree(set_up, 3), {"src/app.py": EDITED_OTHER, "docs/new.md": "x\n"})

    mine = cli("check", "src/app.py", "--agent", "1")
    own = cli("check", "src/util.py", "--agent", "1")
    directory = cli("check", "docs", "--agent", "2")
    excluded = cli("check", "src/app.py", "--agent", "2")

    assert mine.code == 1
    assert "src/app.py: agent 2 (parallel-dev/agent-2, branch)" in mine.out
    assert "src/app.py: agent 3 (parallel-dev/agent-3, worktree)" in mine.out
    assert "agent(s) 2, 3" in mine.err
    assert own.code == 0 and "no other agent" in own.out
    assert directory.code == 1 and "agent 3" in directory.out
    assert excluded.code == 1 and "agent 2 " not in excluded.out


def test_check_from_an_agent_worktree_leaves_that_agent_out(
    set_up: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARADEV_AGENT", raising=False)
    commit(agent_tree(set_up, 1), {"src/app.py": EDITED})
    commit(agent_tree(set_up, 2), {"src/util.py": "VALUE = 2\n"})

    alone = cli("check", "src/app.py", cwd=agent_tree(set_up, 1))
    other = cli("check", "util.py", cwd=agent_tree(set_up, 1) / "src")
    from_main = cli("check", "src/app.py", cwd=set_up.parent / "project")

    assert alone.code == 0, alone.out
    assert alone.out == "no other agent changes src/app.py\n"
    assert other.code == 1 and other.out == (
        "src/util.py: agent 2 (parallel-dev/agent-2, branch)\n"
    )
    assert from_main.code == 1 and "src/app.py: agent 1 " in from_main.out


def test_check_knows_the_agent_from_paradev_agent_and_the_flag_wins(
    set_up: Path, repo: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    commit(agent_tree(set_up, 1), {"src/app.py": EDITED})
    commit(agent_tree(set_up, 2), {"src/app.py": EDITED_OTHER})

    monkeypatch.setenv("PARADEV_AGENT", "2")
    from_env = cli("check", "src/app.py", cwd=agent_tree(set_up, 1))
    flag_wins = cli("check", "src/app.py", "--agent", "1", cwd=repo)
    monkeypatch.setenv("PARADEV_AGENT", "9")
    unknown = cli("check", "src/app.py")
    monkeypatch.setenv("PARADEV_AGENT", "two")
    not_a_number = cli("check", "src/app.py")

    assert from_env.code == 1 and "agent 1 " in from_env.out and "agent 2 " not in from_env.out
    assert flag_wins.code == 1 and "agent 2 " in flag_wins.out and "agent 1 " not in flag_wins.out
    assert unknown.code == 2 and unknown.err == (
        "paradev: PARADEV_AGENT='9' is not an agent of the plan (1..3); "
        "unset it or pass --agent N\n"
    )
    assert not_a_number.code == 2 and "PARADEV_AGENT='two'" in not_a_number.err


def test_an_agent_process_checking_its_own_file_is_not_told_about_itself(
    set_up: Path, repo: Path
) -> None:
    commit(agent_tree(set_up, 3), {"docs/mine.md": "mine\n"})
    env = {k: v for k, v in os.environ.items() if k != "PARADEV_AGENT"}
    proc = subprocess.run(
        [sys.executable, "-m", "paradev", "check", "docs/mine.md"],
        cwd=agent_tree(set_up, 3),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        "no other agent changes docs/mine.md\n",
        "",
    )


def test_check_takes_paths_relative_to_the_agent_worktree(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    commit(agent_tree(set_up, 2), {"src/app.py": EDITED})

    result = cli("check", "app.py", "--agent", "1", cwd=agent_tree(set_up, 1) / "src")
    outside = cli("check", "../../../elsewhere", cwd=agent_tree(set_up, 1))
    missing = cli("check")
    empty = cli("check", "", cwd=agent_tree(set_up, 1))

    assert result.code == 1 and "src/app.py: agent 2" in result.out
    assert outside.code == 2 and "outside the repository" in outside.err
    assert missing.code == 2 and "name at least one path" in missing.err
    assert empty.code == 2 and "an empty PATH names nothing" in empty.err


def test_check_looks_only_below_the_paths_asked_and_takes_them_literally(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    write(agent_tree(set_up, 3), {"src/aXb.py": "untracked\n", "docs/deep/er/x.md": "new\n"})

    glob = cli("check", "src/a*b.py", "--agent", "1")
    whole = cli("check", ".", "--agent", "1")
    deep = cli("check", "docs/deep", "--agent", "1")

    assert glob.code == 0, glob.out  # "*" is a character of the name, not a wildcard
    assert whole.code == 1 and ".: agent 3 (parallel-dev/agent-3, worktree)" in whole.out
    assert deep.code == 1 and "docs/deep: agent 3" in deep.out


def test_check_sees_the_old_path_of_a_rename_in_a_worktree(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    git(agent_tree(set_up, 2), "mv", "src/util.py", "src/values.py")

    result = cli("check", "src/util.py", "--agent", "1")

    assert result.code == 1 and "src/util.py: agent 2" in result.out


def test_render_lists_only_noisy_pairs_beyond_the_matrix_limit(set_up: Path, repo: Path) -> None:
    plan = repo / "plan.toml"
    plan.write_text(
        plan.read_text(encoding="utf-8").replace("count = 3", "count = 14"), encoding="utf-8"
    )
    scratch = set_up / "scratch"
    git(repo, "worktree", "add", "-q", "--detach", str(scratch), "main")
    for agent in range(1, 15):  # committed work only: branch refs are enough
        git(scratch, "checkout", "-q", "--detach", "main")
        text = EDITED if agent == 1 else EDITED_OTHER if agent == 2 else f"# {agent}\n"
        head = commit(scratch, {"src/app.py" if agent < 3 else f"docs/{agent}.md": text})
        git(repo, "update-ref", f"refs/heads/parallel-dev/agent-{agent}", head)

    text = conf.render(analyze(ws_of(repo)))

    assert "14 agent(s) with work" in text
    assert "agent 1 x agent 2: CONFLICT" in text
    assert "agent 1    " not in text  # no matrix header
    assert "1 conflict(s), 0 harmless overlap(s), 91 pair(s)" in text


@pytest.mark.parametrize("interval", ["soon", "-1", "0", "nan", "inf"])
def test_a_bad_interval_is_a_usage_error(
    set_up: Path, cli: Callable[..., Result], interval: str
) -> None:
    """A negative or zero interval used to become a 0.1 s busy loop; nan crashed in sleep."""
    result = cli("conflicts", "--watch", "--interval", interval)
    assert result.code == 2 and "--interval must be a number" in result.err
    assert "Traceback" not in result.err


def test_only_examined_pairs_are_built_and_every_other_pair_is_clean(
    set_up: Path, repo: Path
) -> None:
    two_agents(set_up, {"src/app.py": EDITED}, {"src/app.py": EDITED_OTHER})
    commit(agent_tree(set_up, 3), {"README.md": "# three\n"})

    report = analyze(ws_of(repo))

    assert [p.agents for p in report.examined] == [(1, 2)]
    assert [(p.agents, p.state, p.merged) for p in report.pairs] == [
        ((1, 2), "CONFLICT", True),
        ((1, 3), "clean", False),
        ((2, 3), "clean", False),
    ]
    clean = report.pair(3, 1)
    assert clean is not None and (clean.agents, clean.state) == ((1, 3), "clean")
    assert report.summary() == {"clean": 2, "overlap": 0, "conflict": 1}
    assert report.pair_count == 3 and report.conflict_count == 1


def test_an_empty_report_renders() -> None:
    report = Report("main", "0" * 40, [], [], [], idle=[1, 2])
    text = conf.render(report)
    assert "0 agent(s) with work" in text and "no work yet: agent 1, agent 2" in text


def test_git_batches_diffs_blobs_and_commits_beyond_base(repo: Path) -> None:
    gitrepo = Git(repo)
    base = git(repo, "rev-parse", "HEAD")
    commit(repo, {"A": "single-letter name\n", "src/util.py": None})
    head = commit(repo, {"src/x y.py": "spaces\n"})

    diffs = gitmod.diff_trees(gitrepo, [(base, head), (head, head), (head, base)])
    blobs = gitmod.read_blobs(gitrepo, [f"{head}:A", f"{head}:missing", f"{head}:src"])
    parents, boundary = gitmod.commits_beyond(gitrepo, base, [head])

    assert diffs == [
        {"A": "A", "src/util.py": "D", "src/x y.py": "A"},
        {},
        {"A": "D", "src/util.py": "A", "src/x y.py": "D"},
    ]
    assert blobs == [b"single-letter name\n", None, None]
    assert len(parents) == 2 and boundary == {base}


def test_directory_rename_seen_from_the_pair_merge_base_across_forks(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    """Base adds tests/new.py after agent 2 forked; agent 1 forks later and edits it.

    From the pair's merge base agent 1 *adds* tests/new.py while agent 2 moved
    tests/ away: git reports a file location conflict, which the prefilter must
    not skip although agent 1's own diff only *modifies* that file.
    """
    tree2 = agent_tree(set_up, 2)
    two = commit(
        tree2,
        {"tests/test_app.py": None, "checks/test_app.py": "def test_ok():\n    assert True\n"},
        "move tests/ to checks/",
    )
    commit(repo, {"tests/new.py": "def test_new():\n    pass\n"}, "base adds a test")
    tree1 = agent_tree(set_up, 1)
    git(tree1, "merge", "-q", "--ff-only", "main")
    one = commit(tree1, {"tests/new.py": "def test_new():\n    assert 1\n"})

    pair = analyze(ws_of(repo)).pair(1, 2)

    real = real_merge(repo, tmp_path, one, two)
    assert real.failed
    assert pair is not None and pair.merged and pair.conflict
    assert kinds(real.output) == kinds("\n".join(c.message for c in pair.conflicts))


def test_a_branch_that_merged_base_in_is_judged_from_its_real_merge_base(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    tree1 = agent_tree(set_up, 1)
    commit(tree1, {"docs/one.md": "one\n"})
    commit(repo, {"src/util.py": "VALUE = 'base'\n"}, "base moved on")
    git(tree1, "merge", "-q", "--no-edit", "main")
    one = commit(tree1, {"src/util.py": "VALUE = 'one'\n"})
    two = commit(agent_tree(set_up, 2), {"src/util.py": "VALUE = 'two'\n"})

    report = analyze(ws_of(repo))

    pair = report.pair(1, 2)
    assert pair is not None and pair.conflict is real_merge(repo, tmp_path, one, two).failed
    by_agent = {b.agent: b for b in report.against_base}
    assert by_agent[1].conflict is False  # base's change is already in agent 1's history
    assert by_agent[2].conflict is True


def test_colliding_pairs_is_may_conflict_for_every_pair() -> None:
    """The index finds exactly the pairs a pairwise test would (random path sets)."""
    rng = random.Random(3)
    names = ["a", "a/b", "a/b/c", "a/d", "e", "e/f", "g/h", "g"]
    for _ in range(200):
        sides = {
            key: Changes.of({p: rng.choice("AMDT") for p in rng.sample(names, rng.randint(0, 3))})
            for key in range(rng.randint(1, 6))
        }
        expected = {
            (i, j) for i, j in combinations(sorted(sides), 2) if may_conflict(sides[i], sides[j])
        }
        assert conf.colliding_pairs(sides) == expected


def test_the_cache_follows_the_merge_settings(set_up: Path, repo: Path) -> None:
    """merge.conflictStyle moves the hunk lines: a cached result must not outlive it."""
    two_agents(set_up, {"src/app.py": EDITED}, {"src/app.py": EDITED_OTHER})
    ws = ws_of(repo)
    merge_style = analyze(ws).pair(1, 2)
    git(repo, "config", "merge.conflictStyle", "diff3")

    diff3_style = analyze(ws).pair(1, 2)

    assert merge_style is not None and diff3_style is not None
    assert [[h.start, h.end] for h in merge_style.conflicts[0].hunks] == [[22, 26]]
    assert [[h.start, h.end] for h in diff3_style.conflicts[0].hunks] == [[22, 28]]


def test_an_unchanged_run_does_not_rewrite_the_cache(set_up: Path, repo: Path) -> None:
    two_agents(set_up, {"src/app.py": EDITED}, {"src/app.py": EDITED_OTHER})
    ws = ws_of(repo)
    analyze(ws)
    before = conf.cache_path(ws).stat()

    analyze(ws)

    after = conf.cache_path(ws).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_branch_without_common_history_is_reported_not_fatal(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    """git merge-tree --stdin dies on the first unrelated pair: such pairs are never sent."""
    commit(agent_tree(set_up, 1), {"src/app.py": EDITED})
    tree2 = agent_tree(set_up, 2)
    git(tree2, "checkout", "-q", "--orphan", "parallel-dev/agent-2-new")
    git(tree2, "rm", "-q", "-r", "--cached", ".")
    orphan = commit(tree2, {"other.txt": "unrelated\n"}, "a history of its own")
    git(repo, "update-ref", "refs/heads/parallel-dev/agent-2", orphan)
    commit(agent_tree(set_up, 3), {"README.md": "# three\n"})

    report = analyze(ws_of(repo))

    refused = real_merge(repo, tmp_path, git(repo, "rev-parse", "main"), orphan)
    assert refused.failed and "unrelated histories" in refused.output
    for pair in (report.pair(1, 2), report.pair(2, 3)):
        assert pair is not None and pair.conflict
        assert [c.type for c in pair.conflicts] == ["unrelated histories"]
    by_agent = {b.agent: b for b in report.against_base}
    assert by_agent[2].conflict and not by_agent[1].conflict and not by_agent[3].conflict
    pair13 = report.pair(1, 3)
    assert pair13 is not None and not pair13.conflict


def test_merges_split_across_processes_keep_their_order(
    set_up: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = two_agents(set_up, {"src/app.py": EDITED}, {"src/app.py": EDITED_OTHER})
    three = commit(agent_tree(set_up, 3), {"src/util.py": "VALUE = 3\n"})
    base = git(repo, "rev-parse", "main")
    pairs = [(one, two), (one, three), (base, two), (two, one), (two, three)]
    gitrepo = Git(repo)
    alone = conf._merge_and_describe(gitrepo, pairs)
    monkeypatch.setattr(conf, "MERGES_PER_PROCESS", 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)

    split = conf._merge_and_describe(gitrepo, pairs)

    assert split == alone
    assert [bool(c) for c in split] == [True, False, False, True, False]


# -- agents named by state and issue -------------------------------------------------------------

# An agent that commits EDITED_OTHER to src/app.py, then fails.
COMMIT_THEN_FAIL = (
    "import pathlib, subprocess, sys; "
    "pathlib.Path('src/app.py').write_text(sys.argv[1]); "
    "subprocess.run(['git', 'commit', '-qam', 'half done'], check=True); sys.exit(3)"
)


def test_agents_are_labelled_by_state_with_their_issues(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    plan_with(repo, agent=[sys.executable, "-c", COMMIT_THEN_FAIL, EDITED_OTHER], count=4)
    work(cli, set_up, 3, {"three.py": "3\n"})
    assert cli("merge").code == 0  # #13 lands: agent 3 has nothing beyond base
    assert cli("run-batch", "--agents", "2").code == 1  # #12 commits, then fails
    assert cli("start", "1").code == 0
    commit(agent_tree(set_up, 1), {"src/app.py": EDITED})  # #11 in progress

    text = cli("conflicts")
    data = cli("conflicts", "--json").json()

    assert text.code == 0, text.err
    assert "no work yet" not in text.out
    assert (
        "  working: agent 1 (#11)\n"
        "  failed:  agent 2 (#12)\n"
        "  merged:  agent 3 (#13)\n"
        "  idle:    agent 4\n"
    ) in text.out
    assert "agent 1 (#11) x agent 2 (#12): CONFLICT" in text.out
    assert data["agents"] == {
        "1": {"state": "working", "issues": [11]},
        "2": {"state": "failed", "issues": [12]},
        "3": {"state": "merged", "issues": [13]},
        "4": {"state": "idle", "issues": []},
    }
    assert data["idle"] == [3]  # the design's key: agents with nothing beyond base
    (pair,) = data["pairs"]
    assert pair["agents"] == [1, 2] and pair["issues"] == {"1": [11], "2": [12]}
    assert data["summary"] == {"clean": 0, "overlap": 0, "conflict": 1}


def test_landed_tasks_are_read_on_base_as_the_scan_found_it_with_no_git_call_of_their_own(
    set_up: Path, repo: Path, mocker: MockerFixture
) -> None:
    from paradev.snapshots import record_scan

    commit(repo, {"health.py": "OK = 1\n"}, "feat: health\n\nParadev-Issue: 13")  # no record
    commit(agent_tree(set_up, 1), {"src/app.py": EDITED})
    first = ws_of(repo)
    record_scan(first, analyze(first))  # the first scan keeps a snapshot
    ws = ws_of(repo)  # the next run of a loop: a new process
    rev = mocker.spy(Git, "rev")

    report = analyze(ws)
    record_scan(ws, report)  # alike to the last: nothing written

    assert report.labels[3].to_json() == {"state": "merged", "issues": [13]}
    assert rev.call_args_list == []


def test_agents_without_commits_say_so_beside_their_state(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    assert cli("start", "1").code == 0  # working, nothing committed yet
    commit(agent_tree(set_up, 2), {"README.md": "# outside any task\n"})
    commit(agent_tree(set_up, 3), {"src/util.py": "VALUE = 3\n"})
    assert cli("start", "3").code == 0

    result = cli("conflicts")

    assert "  working: agent 1 (#11) [no commits], agent 3 (#13)\n" in result.out
    assert "  idle:    agent 2 [commits outside any task]\n" in result.out


def test_summary_counts_clean_overlapping_and_conflicting_pairs(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    plan_with(repo, count=4)
    assert cli("setup").code == 0
    two_agents(
        set_up, {"src/app.py": EDITED, "src/util.py": "VALUE = 3\n"}, {"src/app.py": EDITED_OTHER}
    )
    commit(agent_tree(set_up, 3), {"src/util.py": "VALUE = 3\n"})  # same change as agent 1
    commit(agent_tree(set_up, 4), {"docs/four.md": "4\n"})

    data = cli("conflicts", "--json").json()

    # 6 pairs: 1x2 conflict; 1x3 overlap only; 1x4, 2x3, 2x4, 3x4 clean
    assert data["summary"] == {"clean": 4, "overlap": 1, "conflict": 1}
    assert [(p["agents"], p["conflict"]) for p in data["pairs"]] == [
        ([1, 2], True),
        ([1, 3], False),
    ]
    assert all(p["issues"] == {str(a): [] for a in p["agents"]} for p in data["pairs"])


def test_a_report_restricted_to_heads_is_what_analysing_only_them_finds(
    set_up: Path, repo: Path
) -> None:
    changes: dict[int, Files] = {
        1: {"src/util.py": "VALUE = 'one'\n"},
        2: {"src/util.py": "VALUE = 'two'\n", "src/app.py": APP.replace("return 3\n", "3\n")},
        3: {"src/app.py": APP.replace("return 3\n", "return 'three'\n")},
    }
    for agent, files in changes.items():
        commit(agent_tree(set_up, agent), files)
    ws = ws_of(repo)
    full = analyze(ws)
    heads = find_heads(ws)
    two = heads.only({a: heads.heads[a] for a in (1, 2)})

    mine = full.for_heads(two)

    assert mine is not None
    alone = analyze(ws, heads=two)
    assert [b.agent for b in mine.branches] == [b.agent for b in alone.branches] == [1, 2]
    assert [(p.agents, p.overlap, p.conflict, p.conflicts) for p in mine.examined] == [
        (p.agents, p.overlap, p.conflict, p.conflicts) for p in alone.examined
    ]
    assert mine.examined and mine.examined[0].conflict  # 1 and 2 conflict; 2-3 left out
    assert mine.against_base == alone.against_base
    moved = commit(agent_tree(set_up, 2), {"more.txt": "1\n"})
    assert full.for_heads(two.only({**two.heads, 2: ("b", moved, False)})) is None
    assert full.for_heads(Heads("main", "refs/heads/main", moved, two.heads)) is None
