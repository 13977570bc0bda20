"""``check`` keeps each work tree's answer while nothing it depends on changed, and the kept
answer never hides a change: every edit below is made after a kept answer, and ``check`` must
still say what a fresh ``git status`` says."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast
from unittest.mock import MagicMock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_mock import MockerFixture

from paradev import dirtycache, kept
from paradev import git as gitmod
from paradev.claims import claims
from paradev.workspace import open_workspace
from tests.helpers import agent_tree, git, write

SHORT_MARGIN_NS = 50_000_000  # far above a file system clock tick, far below git's 2 s


@pytest.fixture
def asked(
    set_up: Path, monkeypatch: pytest.MonkeyPatch, mocker: MockerFixture
) -> Iterator[MagicMock]:
    """Every ``git status`` check runs (a spy: git still answers); the racy margin is made
    short so that an answer can be kept within a test (the edits wait it out)."""
    monkeypatch.setattr(kept, "RACY_MARGIN_NS", SHORT_MARGIN_NS)
    yield mocker.spy(gitmod, "dirty_paths")


def _settle() -> None:
    """Let the files just written age past the (short) racy margin."""
    time.sleep(SHORT_MARGIN_NS / 1e9 * 2)


def _seen(path: str) -> bool:
    """Whether ``check`` (asked by agent 1) says agent 2's work tree changes ``path``."""
    found = claims(open_workspace(), [path], exclude=1)
    return any(claim.agent == 2 and "worktree" in claim.where for claim in found)


def _truth(tree: Path, path: str) -> bool:
    """What a fresh git status says (no cache involved; the index left as it is)."""
    status = ["--no-optional-locks", "status", "--porcelain", "--untracked-files=all"]
    return bool(git(tree, *status, "--", f":(top,literal){path}"))


def _trees_asked(spy: MagicMock) -> list[str]:
    trees = [Path(call.args[0]).name for call in spy.call_args_list]
    spy.reset_mock()
    return sorted(trees)


def test_an_unchanged_tree_is_not_asked_again(set_up: Path, asked: MagicMock) -> None:
    write(agent_tree(set_up, 2), {"src/app.py": "changed\n"})
    _settle()
    assert _seen("src/app.py") and _trees_asked(asked) == ["agent-2", "agent-3"]
    assert _seen("src/app.py") and _trees_asked(asked) == []
    assert not _seen("src") or _trees_asked(asked) == ["agent-2", "agent-3"]  # other paths
    assert _seen("src") and _trees_asked(asked) == []


def _edit_same_size_same_mtime(tree: Path) -> None:
    app = tree / "src" / "util.py"
    before = app.stat()
    app.write_text("VALUE = 2\n")  # same size
    os.utime(app, ns=(before.st_atime_ns, before.st_mtime_ns))


def _add_untracked(tree: Path) -> None:
    write(tree, {"src/new.py": "new\n"})


def _add_untracked_deeper(tree: Path) -> None:
    write(tree, {"src/deep/er/new.py": "new\n"})


def _delete(tree: Path) -> None:
    write(tree, {"src/util.py": None})


def _chmod(tree: Path) -> None:
    (tree / "src" / "util.py").chmod(0o755)


def _assume_unchanged(tree: Path) -> None:
    git(tree, "update-index", "--assume-unchanged", "src/util.py")


def _commit(tree: Path) -> None:
    git(tree, "commit", "-qam", "work")


def _reset_soft(tree: Path) -> None:
    git(tree, "reset", "-q", "--soft", "HEAD~1")


def _ignore_in_root(tree: Path) -> None:
    write(tree, {".gitignore": "*.log\n"})


def _ignore_in_folder(tree: Path) -> None:
    write(tree, {"src/.gitignore": "*.log\n"})


def _exclude(tree: Path) -> None:
    common = Path(git(tree, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    write(common, {"info/exclude": "*.log\n"})


def _excludes_file(tree: Path) -> None:
    ignore = Path(os.environ["HOME"]) / f"ignore-{os.getpid()}-{time.time_ns()}"
    ignore.write_text("*.log\n")
    git(tree, "config", "core.excludesFile", str(ignore))


def _replace_folder_by_link(tree: Path) -> None:
    src = tree / "src"
    src.rename(tree / "moved")
    src.symlink_to(tree / "moved")


Edit = Callable[[Path], None]

# (what the tree holds before the kept answer, the edit, the path checked)
CASES: dict[str, tuple[dict[str, str | bytes | None], Edit, str]] = {
    "same size and mtime": ({}, _edit_same_size_same_mtime, "src/util.py"),
    "same size and mtime, folder": ({}, _edit_same_size_same_mtime, "src"),
    "untracked file": ({}, _add_untracked, "src"),
    "untracked file asked by name": ({}, _add_untracked, "src/new.py"),
    "untracked file deeper": ({}, _add_untracked_deeper, "src"),
    "deleted file": ({}, _delete, "src/util.py"),
    "deleted file, folder": ({}, _delete, "src"),
    "mode change": ({}, _chmod, "src/util.py"),
    "index only (assume-unchanged)": ({"src/util.py": "VALUE = 9\n"}, _assume_unchanged, "src"),
    "commit": ({"src/util.py": "VALUE = 9\n"}, _commit, "src/util.py"),
    "HEAD moved, index kept": ({}, _reset_soft, "src"),
    "ignored by the root .gitignore": ({"src/x.log": "log\n"}, _ignore_in_root, "src/x.log"),
    "ignored by a folder's .gitignore": ({"src/x.log": "log\n"}, _ignore_in_folder, "src/x.log"),
    "ignored by info/exclude": ({"src/x.log": "log\n"}, _exclude, "src"),
    "ignored by core.excludesFile": ({"src/x.log": "log\n"}, _excludes_file, "src"),
    "folder replaced by a link": ({}, _replace_folder_by_link, "src/util.py"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_kept_answer_never_hides_a_change(set_up: Path, asked: MagicMock, case: str) -> None:
    before, edit, path = CASES[case]
    tree = agent_tree(set_up, 2)
    if edit is _reset_soft:
        write(tree, {"src/util.py": "VALUE = 3\n"})
        _commit(tree)
    write(tree, before)
    _settle()
    assert _seen(path) == _truth(tree, path) and "agent-2" in _trees_asked(asked)
    assert _seen(path) == _truth(tree, path) and "agent-2" not in _trees_asked(asked)  # kept
    was = _truth(tree, path)

    edit(tree)
    _settle()

    assert _truth(tree, path) != was, "the edit must change git's answer"
    assert _seen(path) == _truth(tree, path)
    assert _seen(path) == _truth(tree, path)  # and the new answer is kept right


def test_a_file_changed_moments_ago_is_always_asked(set_up: Path, mocker: MockerFixture) -> None:
    # The real margin: a file written within it may be written again in the same clock tick,
    # its size and times unchanged. No answer is kept then: git is asked every time.
    spy = mocker.spy(gitmod, "dirty_paths")
    tree = agent_tree(set_up, 2)
    write(tree, {"src/util.py": "VALUE = 1\n"})  # same content, fresh times
    assert not _seen("src/util.py")
    _edit_same_size_same_mtime(tree)
    assert _seen("src/util.py")
    assert _trees_asked(spy) == ["agent-2", "agent-2", "agent-3", "agent-3"]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"paradev kept 1 x\n" + b"0" * 30])
def test_a_corrupt_or_foreign_cache_file_is_rebuilt(
    set_up: Path, repo: Path, asked: MagicMock, content: bytes
) -> None:
    write(agent_tree(set_up, 2), {"src/app.py": "changed\n"})
    _settle()
    cache = repo / ".git" / "paradev" / dirtycache.CACHE_FILE
    cache.write_bytes(content)

    assert _seen("src/app.py") and _trees_asked(asked) == ["agent-2", "agent-3"]
    version, _, answers = cast(tuple[int, str, dict[str, Any]], kept.load(str(cache)))
    assert version == dirtycache._VERSION and len(answers) == 2  # agents 2 and 3, rebuilt
    assert _seen("src/app.py") and _trees_asked(asked) == []


def test_a_kept_answer_for_another_tree_state_is_not_used(
    set_up: Path, repo: Path, asked: MagicMock
) -> None:
    # A cache file written by hand with a wrong answer under a wrong key: never trusted.
    tree = agent_tree(set_up, 2)
    write(tree, {"src/app.py": "changed\n"})
    _settle()
    assert _seen("src/app.py")
    cache = repo / ".git" / "paradev" / dirtycache.CACHE_FILE
    version, shared, answers = cast(tuple[int, str, dict[str, Any]], kept.load(str(cache)))
    wrong: dict[str, Any] = {slot: (key + "x", []) for slot, (key, _) in answers.items()}
    kept.save(str(cache), (version, shared, wrong))
    assert _seen("src/app.py")


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ("[include]\n\tpath = other\n", "an include"),
        ('[core]\n\texcludesFile = "quoted"\n', "a quoted value"),
    ],
)
def test_config_this_module_cannot_read_exactly_means_git_is_asked(
    set_up: Path, repo: Path, asked: MagicMock, config: str, why: str
) -> None:
    with (repo / ".git" / "config").open("a") as handle:
        handle.write(config)
    write(agent_tree(set_up, 2), {"src/app.py": "changed\n"})
    _settle()
    assert _seen("src/app.py") and _seen("src/app.py")
    assert _trees_asked(asked) == ["agent-2", "agent-2", "agent-3", "agent-3"], why


def test_the_whole_tree_and_submodule_like_folders_are_always_asked(
    set_up: Path, asked: MagicMock
) -> None:
    tree = agent_tree(set_up, 2)
    write(tree, {"vendor/lib/.git": "gitdir: elsewhere\n", "vendor/lib/a.py": "a\n"})
    _settle()
    for path in ("", "vendor"):
        claims(open_workspace(), [path], exclude=1)
        claims(open_workspace(), [path], exclude=1)
        assert _trees_asked(asked).count("agent-2") == 2, path


def test_a_large_folder_is_asked_to_git(
    set_up: Path, asked: MagicMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dirtycache, "MAX_ENTRIES", 3)
    write(agent_tree(set_up, 2), {f"src/many/{i}.py": "x\n" for i in range(4)})
    _settle()
    assert _seen("src") and _seen("src")
    assert _trees_asked(asked).count("agent-2") == 2


# -- fuzzing: any sequence of edits, the kept answers agree with git ----------------------

FILES = ["src/app.py", "src/util.py", "src/new.py", "src/sub/deep.py", "src/x.log", "README.md"]
PATHS = ["src", "src/app.py", "src/new.py", "src/sub", "src/x.log", "README.md", "nope/x.py"]


def _apply(tree: Path, step: tuple[str, int, int]) -> None:
    kind, which, value = step
    name = FILES[which % len(FILES)]
    file = tree / name
    if kind == "write":
        write(tree, {name: f"v{value}\n"})
    elif kind == "same-size" and file.is_file():
        before = file.stat()
        file.write_text(file.read_text()[::-1] if value % 2 else file.read_text())
        os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif kind == "delete" and file.exists():
        file.unlink()
    elif kind == "add":
        git(tree, "add", "-A")
    elif kind == "commit":
        git(tree, "commit", "-qam", "fuzz", check=False)
    elif kind == "ignore":
        write(tree, {".gitignore" if value % 2 else "src/.gitignore": "*.log\n" * (value % 3)})
    elif kind == "reset":
        git(tree, "reset", "-q", "--mixed" if value % 2 else "--soft", "HEAD", check=False)


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["write", "same-size", "delete", "add", "commit", "ignore", "reset"]),
        st.integers(0, 20),
        st.integers(0, 5),
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS, paths=st.lists(st.sampled_from(PATHS), min_size=1, max_size=2, unique=True))
def test_kept_answers_agree_with_git_after_any_edits(
    set_up: Path, asked: MagicMock, steps: list[tuple[str, int, int]], paths: list[str]
) -> None:
    tree = agent_tree(set_up, 2)
    for step in steps:
        _apply(tree, step)
        _settle()
        for path in paths:
            assert _seen(path) == _truth(tree, path), (step, path)


def test_only_variables_git_status_reads_part_kept_answers(
    set_up: Path, asked: MagicMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(agent_tree(set_up, 2), {"src/app.py": "changed\n"})
    _settle()
    assert _seen("src/app.py") and len(_trees_asked(asked)) == 2
    monkeypatch.setenv("GIT_AUTHOR_NAME", "another agent")  # who commits: inert
    assert _seen("src/app.py") and _trees_asked(asked) == []
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'status.relativepaths'='false'")
    assert _seen("src/app.py") and len(_trees_asked(asked)) == 2
