"""The one module that talks to git.

Hot paths (status, conflicts) use git plumbing through ``subprocess`` with
argv lists: importing GitPython alone costs ~90 ms, more than the git work of
``paradev status``. GitPython is opened lazily (``open_repo``) where its object
model helps. Every call strips inherited ``GIT_DIR``-style variables so a hook
environment can never redirect paradev to another repository.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from paradev.errors import GitError, PreconditionError

if TYPE_CHECKING:
    from git import Repo

MIN_GIT_VERSION = (2, 38)

# Variables that would make git act on another repository, index or tree.
_REPO_ENV_VARS = (
    "GIT_DIR",
    "GIT_INDEX_FILE",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a git child: ours minus repository overrides, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV_VARS}
    env["LC_ALL"] = "C"  # messages we parse stay in English
    env["GIT_TERMINAL_PROMPT"] = "0"  # never hang on a credential prompt
    env.setdefault("GIT_EDITOR", "true")  # rebase --continue must not open an editor
    if extra:
        env.update(extra)
    return env


class Git:
    """Runs git in one directory (a work tree or the common dir)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def run(
        self,
        *args: str,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``git args`` and return the finished process; raise GitError on failure."""
        try:
            proc = subprocess.run(
                ["git", *args],
                cwd=self.cwd,
                input=input,
                capture_output=True,
                text=True,
                env=git_env(env),
                check=False,
            )
        except FileNotFoundError as exc:
            raise GitError("git is not installed or not on PATH; install git >= 2.38") from exc
        if check and proc.returncode != 0:
            raise GitError(_failure_message(args, proc))
        return proc

    def out(self, *args: str, input: str | None = None) -> str:
        """stdout of a successful ``git args``, trailing newline removed."""
        return self.run(*args, input=input).stdout.rstrip("\n")

    def ok(self, *args: str) -> bool:
        """Whether ``git args`` exits 0 (for predicates such as ``merge-base --is-ancestor``)."""
        return self.run(*args, check=False).returncode == 0

    def rev(self, rev: str) -> str | None:
        """The commit ``rev`` names, or None when it does not exist."""
        proc = self.run(
            "rev-parse", "--verify", "--quiet", "--end-of-options", rev + "^{commit}", check=False
        )
        if proc.returncode != 0:
            return None
        return proc.stdout.strip() or None


def _failure_message(args: Sequence[str], proc: subprocess.CompletedProcess[str]) -> str:
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    last = detail[-1] if detail else f"exit code {proc.returncode}"
    return f"git {' '.join(args[:3])} failed: {last}"


@contextmanager
def open_repo(path: Path) -> Iterator[Repo]:
    """A GitPython ``Repo`` that is closed on exit (it leaks cat-file processes otherwise)."""
    from git import Repo

    with Repo(path) as repo:
        yield repo


# -- repository discovery -------------------------------------------------------


@dataclass(frozen=True)
class Repository:
    """Where a repository lives: this work tree, the shared git dir, the main work tree."""

    toplevel: Path
    common_dir: Path
    main_root: Path

    @property
    def git(self) -> Git:
        """git in the main work tree (where base is usually checked out)."""
        return Git(self.main_root)

    @property
    def name(self) -> str:
        return self.main_root.name


def parse_version(text: str) -> tuple[int, int, int]:
    """``git version 2.39.5`` -> (2, 39, 5)."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise GitError(f"cannot read the git version from {text.strip()!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def require_version(version: tuple[int, int, int]) -> None:
    if version[:2] < MIN_GIT_VERSION:
        have = ".".join(map(str, version))
        need = ".".join(map(str, MIN_GIT_VERSION))
        raise PreconditionError(f"git {have} is too old: paradev needs git >= {need}; upgrade git")


def git_version() -> tuple[int, int, int]:
    return parse_version(Git(Path.cwd()).out("version"))


def discover(cwd: Path | None = None) -> Repository:
    """The repository containing ``cwd`` (any of its work trees); checks git's version."""
    where = (cwd or Path.cwd()).resolve()
    git = Git(where)
    require_version(parse_version(git.out("version")))
    proc = git.run(
        "rev-parse",
        "--path-format=absolute",
        "--is-bare-repository",
        "--git-common-dir",
        "--show-toplevel",
        check=False,
    )
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        raise PreconditionError(
            f"{where} is not inside a git repository; cd into one or run git init"
        )
    if lines[0] == "true" or len(lines) < 3:
        raise PreconditionError(f"{where} is a bare repository; run paradev in a work tree")
    common_dir = Path(lines[1])
    toplevel = Path(lines[2])
    if common_dir.name == ".git":
        main_root = common_dir.parent
    else:  # separate git dir: the first worktree record is the main work tree
        main_root = Path(worktree_list(Git(toplevel))[0].path)
    return Repository(toplevel=toplevel, common_dir=common_dir, main_root=main_root)


# -- worktrees -----------------------------------------------------------------


@dataclass(frozen=True)
class Worktree:
    """One record of ``git worktree list --porcelain``."""

    path: str
    head: str | None
    branch: str | None  # short name, None when detached
    prunable: bool = False
    locked: bool = False


def worktree_list(git: Git) -> list[Worktree]:
    records: list[Worktree] = []
    for block in git.out("worktree", "list", "--porcelain", "-z").split("\0\0"):
        fields = [f for f in block.split("\0") if f]
        if not fields:
            continue
        info: dict[str, str] = {}
        for field in fields:
            key, _, value = field.partition(" ")
            info[key] = value
        branch = info.get("branch")
        records.append(
            Worktree(
                path=info["worktree"],
                head=info.get("HEAD"),
                branch=branch.removeprefix("refs/heads/") if branch else None,
                prunable="prunable" in info,
                locked="locked" in info,
            )
        )
    return records


# -- refs ----------------------------------------------------------------------

_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def is_valid_branch_name(name: str) -> bool:
    """git check-ref-format --branch rules, without spawning git for each name."""
    if not name or name == "@" or name.startswith("-") or "@{" in name:
        return False
    if ".." in name or "//" in name or name.endswith(("/", ".")) or name.startswith("/"):
        return False
    if _BAD_REF_CHARS.search(name):
        return False
    return all(
        part and not part.startswith(".") and not part.endswith(".lock") for part in name.split("/")
    )


def ahead_behind(git: Git, base: str, branch: str) -> tuple[int, int]:
    """Commits on ``branch`` not on ``base``, and on ``base`` not on ``branch``."""
    behind, ahead = git.out(
        "rev-list", "--left-right", "--count", f"{base}...{branch}", "--"
    ).split()
    return int(ahead), int(behind)


def changed_paths(git: Git, base: str, head: str) -> list[str]:
    """Paths ``head`` changed since its merge-base with ``base`` (renames as delete + add)."""
    out = git.out("diff", "--name-only", "-z", "--no-renames", f"{base}...{head}", "--")
    return [p for p in out.split("\0") if p]


def dirty_paths(worktree: Path) -> list[str]:
    """Uncommitted and untracked (not ignored) paths in a work tree."""
    out = Git(worktree).run("status", "--porcelain=v1", "-z", "--untracked-files=all").stdout
    entries = out.split("\0")
    paths: list[str] = []
    skip_next = False
    for entry in entries:
        if skip_next:  # the original path of a rename
            skip_next = False
            continue
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        skip_next = entry[0] in "RC"
    return paths


# -- merge-tree ----------------------------------------------------------------------


@dataclass(frozen=True)
class ConflictStage:
    """One higher-stage index entry of a conflicted merge (stage 1 base, 2 ours, 3 theirs)."""

    mode: str
    oid: str
    stage: int
    path: str


@dataclass(frozen=True)
class MergeMessage:
    """One informational message of merge-tree: the paths it names, its stable type, its text."""

    paths: tuple[str, ...]
    kind: str  # e.g. "CONFLICT (contents)", "CONFLICT (modify/delete)", "Auto-merging"
    text: str


@dataclass(frozen=True)
class MergeTree:
    """What ``git merge-tree --write-tree`` says about merging two commits."""

    clean: bool
    tree: str
    stages: tuple[ConflictStage, ...] = ()
    messages: tuple[MergeMessage, ...] = ()

    @property
    def conflicted_paths(self) -> list[str]:
        return sorted({s.path for s in self.stages})


def merge_trees(git: Git, pairs: Sequence[tuple[str, str]]) -> list[MergeTree]:
    """Merge every (left, right) pair in one ``git merge-tree --stdin`` process; nothing is touched.

    Results come back in the order of ``pairs``. The merged trees are written
    to the object store (that is how merge-tree works) but no ref or work tree
    changes.
    """
    if not pairs:
        return []
    for left, right in pairs:
        if not left or not right or any(c.isspace() for c in left + right):
            raise GitError(f"cannot merge {left!r} with {right!r}: use commit ids")
    text = "".join(f"{left} {right}\n" for left, right in pairs)
    proc = git.run("merge-tree", "--write-tree", "--stdin", "-z", input=text)
    return parse_merge_tree_stdin(proc.stdout, len(pairs))


def parse_merge_tree_stdin(output: str, expected: int) -> list[MergeTree]:
    """Parse the NUL-separated output of ``merge-tree --write-tree --stdin -z``.

    Per merge: ``<1 clean|0 conflicted> NUL <tree> NUL``; a conflicted merge
    then lists ``<mode> <oid> <stage>TAB<path> NUL`` entries, an empty field,
    and messages as ``<n> NUL <path>*n NUL <type> NUL <text> NUL``; every merge
    ends with an empty field.
    """
    tokens = output.split("\0")
    pos = 0
    results: list[MergeTree] = []

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise GitError("git merge-tree output ended early")
        token = tokens[pos]
        pos += 1
        return token

    while len(results) < expected:
        status, tree = take(), take()
        if status not in ("0", "1"):
            raise GitError(f"unexpected git merge-tree output near {status!r}")
        if status == "1":
            take()  # the empty field that ends this merge
            results.append(MergeTree(clean=True, tree=tree))
            continue
        stages: list[ConflictStage] = []
        while entry := take():
            info, _, path = entry.partition("\t")
            mode, oid, stage = info.split(" ")
            stages.append(ConflictStage(mode=mode, oid=oid, stage=int(stage), path=path))
        messages: list[MergeMessage] = []
        while count := take():
            paths = tuple(take() for _ in range(int(count)))
            kind, text = take(), take()
            messages.append(MergeMessage(paths=paths, kind=kind, text=text.rstrip("\n")))
        results.append(
            MergeTree(clean=False, tree=tree, stages=tuple(stages), messages=tuple(messages))
        )
    return results
