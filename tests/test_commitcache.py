"""Answers kept by commit id (status's ahead/behind counts): kept, never stale, never trusted
when history is rewritten behind the same ids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from paradev import kept
from paradev.commitcache import CommitCache
from tests.helpers import Result, agent_tree, commit, git, rev

COUNTS = "ahead-behind.kept"


def _counts(cli: Callable[..., Result]) -> dict[str, tuple[int, int]]:
    agents = cli("status", "--json").json()["agents"]
    return {k: (v["ahead"], v["behind"]) for k, v in agents.items()}


def _cache(repo: Path, name: str = COUNTS) -> dict[str, Any]:
    found = kept.load(str(repo / ".git" / "paradev" / name))
    assert isinstance(found, dict)
    return found


def _plant(path: Path, answers: object) -> None:
    kept.save(str(path), answers)


def test_status_keeps_each_count_by_the_ids_of_base_and_branch(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    commit(agent_tree(set_up, 1), {"a.py": "a\n"})
    assert _counts(cli)["1"] == (1, 0)
    base, one = rev(repo, "main"), rev(repo, "parallel-dev/agent-1")
    assert _cache(repo)[f"{base}...{one}"] == (1, 0)
    assert _cache(repo)[f"{base}...{base}"] == (0, 0)  # agents 2 and 3, still at base
    assert len(_cache(repo)) == 2  # what this run counted, nothing else


def test_a_moved_branch_or_base_is_counted_anew(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 1)
    commit(tree, {"a.py": "a\n"})
    assert _counts(cli)["1"] == (1, 0)
    commit(tree, {"b.py": "b\n"})
    assert _counts(cli)["1"] == (2, 0)
    commit(repo, {"main.txt": "moves\n"})
    assert _counts(cli)["1"] == (2, 1)
    git(tree, "reset", "-q", "--hard", "HEAD~2")  # the branch goes back to a counted commit
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    assert _counts(cli)["1"] == (0, 0)
    assert list(_cache(repo)) == [f"{rev(repo, 'main')}...{rev(repo, 'main')}"]  # no old ids


def test_a_planted_answer_is_used_only_while_history_is_plain(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    """A replace ref shows git another history behind the same ids: the kept count is ignored."""
    tree = agent_tree(set_up, 1)
    first = commit(tree, {"a.py": "a\n"})
    commit(tree, {"b.py": "b\n"})
    assert _counts(cli)["1"] == (2, 0)
    key = f"{rev(repo, 'main')}...{rev(repo, 'parallel-dev/agent-1')}"
    path = repo / ".git" / "paradev" / COUNTS
    _plant(path, {**_cache(repo), key: (7, 7)})
    assert _counts(cli)["1"] == (7, 7)  # the cache is what status reads while ids are unchanged
    # Replace the tip by a copy of it whose parent is base: git now counts one commit ahead.
    copy = git(tree, "commit-tree", f"{rev(tree, 'HEAD')}^{{tree}}", "-p", rev(repo, "main"))
    git(repo, "replace", rev(tree, "HEAD"), copy.strip())
    assert _counts(cli)["1"] == (1, 0)
    assert _cache(repo)[key] == (7, 7)  # nothing kept while history is rewritten
    git(repo, "replace", "-d", rev(tree, "HEAD"))
    (repo / ".git" / "shallow").write_text(first + "\n")  # a shallow boundary: the same rule
    behind, ahead = git(repo, "rev-list", "--left-right", "--count", key).split()
    assert _counts(cli)["1"] == (int(ahead), int(behind)) != (7, 7)


def test_a_cache_of_the_wrong_shape_is_recomputed(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    commit(agent_tree(set_up, 2), {"a.py": "a\n"})
    path = repo / ".git" / "paradev" / COUNTS
    for broken in (b"not kept", b"[1, 2]"):
        path.write_bytes(broken)
        assert _counts(cli)["2"] == (1, 0)
    path.write_bytes(path.read_bytes()[:-3])  # cut short: its digest no longer matches
    assert _counts(cli)["2"] == (1, 0)
    _plant(path, [1, 2])
    assert _counts(cli)["2"] == (1, 0)
    key = f"{rev(repo, 'main')}...{rev(repo, 'parallel-dev/agent-2')}"
    _plant(path, {key: ["1", 0]})
    assert _counts(cli)["2"] == (1, 0)
    assert _cache(repo)[key] == (1, 0)


def test_the_cache_is_written_only_into_paradevs_folder(tmp_path: Path) -> None:
    cache = CommitCache(tmp_path / "missing" / "answers.kept")
    cache.put("a...b", [1, 2])
    cache.save()
    assert not (tmp_path / "missing").exists()
    written = CommitCache(tmp_path / "answers.kept")
    written.put("a...b", [1, 2])
    written.save()
    assert CommitCache(tmp_path / "answers.kept").get("a...b") == [1, 2]
    assert CommitCache(tmp_path / "answers.kept", enabled=False).get("a...b") is None


def test_lookup_computes_only_what_is_not_kept_in_one_call_and_keeps_no_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "answers.kept"
    _plant(path, {"a...1": [1, 0], "a...2": "wrong shape"})
    calls: list[list[int]] = []

    def compute(missing: list[int]) -> dict[int, list[int] | None]:
        calls.append(missing)
        return {2: [2, 0], 3: None}

    keys = {1: "a...1", 2: "a...2", 3: "a...3"}
    found = CommitCache(path).lookup(keys, lambda kept: isinstance(kept, list), compute)
    assert found == {1: [1, 0], 2: [2, 0], 3: None}
    assert calls == [[2, 3]]
    assert kept.load(str(path)) == {"a...1": [1, 0], "a...2": [2, 0]}
    again = CommitCache(path).lookup(keys, lambda kept: isinstance(kept, list), compute)
    assert again == {1: [1, 0], 2: [2, 0], 3: None} and calls == [[2, 3], [3]]


# -- check: each branch's changed paths -------------------------------------------------------

PATHS = "branch-paths.kept"


def _claims(cli: Callable[..., Result], path: str) -> list[str]:
    return cli("check", path, "--agent", "1").out.splitlines()


def test_check_reads_again_only_a_branch_that_moved(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    two, three = agent_tree(set_up, 2), agent_tree(set_up, 3)
    commit(two, {"a.py": "a\n"})
    commit(three, {"b.py": "b\n"})
    assert _claims(cli, "c.py") == ["no other agent changes c.py"]
    commit(two, {"c.py": "c\n"})  # agent 2 moves on: c.py is claimed at once
    assert _claims(cli, "c.py") == ["c.py: agent 2 (parallel-dev/agent-2, branch)"]
    git(two, "reset", "-q", "--hard", "HEAD~1")  # and takes it back
    assert _claims(cli, "c.py") == ["no other agent changes c.py"]
    assert _cache(repo, PATHS)[f"{rev(repo, 'main')}...{rev(two, 'HEAD')}"] == ["a.py"]


def test_check_forgets_work_that_base_took_in(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    two = agent_tree(set_up, 2)
    commit(two, {"a.py": "a\n"})
    assert _claims(cli, "a.py") == ["a.py: agent 2 (parallel-dev/agent-2, branch)"]
    git(repo, "merge", "-q", "--ff-only", "parallel-dev/agent-2")  # base moves to agent 2's head
    assert _claims(cli, "a.py") == ["no other agent changes a.py"]


def test_check_ignores_kept_paths_while_history_is_rewritten(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    two = agent_tree(set_up, 2)
    commit(two, {"a.py": "a\n"})
    key = f"{rev(repo, 'main')}...{rev(two, 'HEAD')}"
    path = repo / ".git" / "paradev" / PATHS
    _plant(path, {key: ["planted.py"]})
    assert _claims(cli, "planted.py") == ["planted.py: agent 2 (parallel-dev/agent-2, branch)"]
    before = path.read_bytes()
    git(repo, "replace", "--graft", rev(two, "HEAD"))  # agent 2's commit now has no parent
    assert _claims(cli, "planted.py") == ["no other agent changes planted.py"]
    assert path.read_bytes() == before  # nothing kept meanwhile
