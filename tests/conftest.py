"""Fixtures: real git repositories from a session-wide template, with isolated git config."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from paradev.cli import main
from tests.helpers import Result, commit, git

PLAN = """\
# Example plan used by the tests.
[project]
base = "main"

[agents]
count = 3

[gate]
command = ""

[[batches]]
name = "first"
  [[batches.tasks]]
  agent = 1
  issue = 11
  title = "Add the status command"
  hours = 2.0

  [[batches.tasks]]
  agent = 2
  issue = 12
  title = "Add the init command"
  hours = 1.5

  [[batches.tasks]]
  agent = 3
  issue = 13
  title = "Add the health command"
  hours = 1.0

[[batches]]
name = "second"
  [[batches.tasks]]
  agent = 1
  issue = 21
  title = "Config command"
  hours = 2.0
  depends_on = [11]
"""

APP = "".join(f"def f{i}():\n    return {i}\n\n\n" for i in range(20))


@pytest.fixture(scope="session", autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No user or system git config leaks in; a fixed identity for every commit."""
    home = tmp_path_factory.mktemp("home")
    config = home / "gitconfig"
    config.write_text(
        "[user]\n\tname = Paradev Test\n\temail = test@paradev.invalid\n"
        "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n"
        "[advice]\n\tdetachedHead = false\n",
        encoding="utf-8",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("GIT_CONFIG_GLOBAL", str(config))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "PARADEV_PLAN"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory, isolated_git: None) -> Path:
    """A small project with one commit on main and a 3-agent plan.toml; copied per test."""
    root = tmp_path_factory.mktemp("template") / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit(
        root,
        {
            "README.md": "# sample\n",
            "src/app.py": APP,
            "src/util.py": "VALUE = 1\n",
            "tests/test_app.py": "def test_ok():\n    assert True\n",
            "plan.toml": PLAN,
        },
        "initial commit",
    )
    return root


@pytest.fixture
def repo(template_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the template, as the cwd; worktrees go to ``<tmp>/project-worktrees``."""
    root = tmp_path / "project"
    shutil.copytree(template_repo, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def worktrees(repo: Path) -> Path:
    """Where the default plan puts agent worktrees."""
    return repo.parent / "project-worktrees"


@pytest.fixture
def remote(repo: Path, tmp_path: Path) -> Path:
    """A bare repository as origin (non-fast-forward pushes refused), with main pushed."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(bare, "config", "receive.denyNonFastForwards", "true")
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "push", "-q", "origin", "main")
    return bare


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """Run ``paradev ARGS`` in-process (in ``cwd`` if given) and return code and output."""

    def run(*args: str, cwd: Path | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def set_up(repo: Path, cli: Callable[..., Result], worktrees: Path) -> Path:
    """The repository with every agent worktree created by ``paradev setup``."""
    result = cli("setup")
    assert result.code == 0, result.err
    return worktrees


@pytest.fixture
def snapshot(repo: Path, worktrees: Path) -> Callable[[], dict[str, object]]:
    """What a refused command must leave untouched: plan bytes, state, refs, worktrees, files."""

    def take() -> dict[str, object]:
        state_dir = repo / ".git" / "paradev"
        return {
            "plan": (repo / "plan.toml").read_bytes() if (repo / "plan.toml").exists() else None,
            "state": {
                p.name: p.read_bytes()
                for p in sorted([*state_dir.glob("state.json*"), *state_dir.glob("train.json*")])
                if p.is_file()
            },
            "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
            "worktrees": git(repo, "worktree", "list", "--porcelain"),
            "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
            "root": sorted(str(p.relative_to(worktrees)) for p in worktrees.rglob("*"))
            if worktrees.exists()
            else [],
        }

    return take


HOSTS = ("laptop", "box", "tower")


@pytest.fixture
def origin(template_repo: Path, tmp_path: Path) -> Path:
    """A bare remote that refuses non-fast-forward pushes and deletions, with main pushed."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(bare, "config", "receive.denyNonFastForwards", "true")
    git(bare, "config", "receive.denyDeletes", "true")
    git(template_repo, "push", "-q", str(bare), "main")
    return bare


@pytest.fixture
def hosts(origin: Path, tmp_path: Path) -> dict[str, Path]:
    """Three clones of ``origin``, each in its own folder: one per host."""
    clones = {}
    for host in HOSTS:
        (tmp_path / host).mkdir()
        git(tmp_path / host, "clone", "-q", str(origin), "project")
        clones[host] = tmp_path / host / "project"
    return clones
