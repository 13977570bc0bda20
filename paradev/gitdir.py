"""git's own files, read without starting git: where the repository is, which git runs.

``paradev.git`` talks to git through its processes; this small module is its
process-free half, for the commands run before every edit (``check``): a
``git rev-parse`` costs a process start (~4 ms) plus importing
``subprocess`` (~7 ms). It reads only what git's repository discovery reads
(``.git`` folders and files, ``commondir``, ``HEAD``) and answers only when
the answer is certain to be git's own; anything unusual (a bare repository,
``core.worktree``, config includes, another owner, a file system boundary,
discovery variables) returns None, and the caller asks git.
"""

from __future__ import annotations

import os
import stat

from paradev.kept import NotKeyableError, Stamps

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# Variables that would make git act on another repository, index or tree: paradev's git
# calls never inherit them (``git_env``), so discovery ignores them too.
REPO_ENV_VARS = (
    "GIT_DIR",
    "GIT_INDEX_FILE",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)
# Variables that change where git's discovery stops: with them set, git is asked.
_DISCOVERY_ENV_VARS = ("GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM")

# ``git status`` as paradev reads a work tree: machine-readable, every untracked file, and
# without refreshing the index (an agent's own git may hold its lock).
STATUS_ARGS = ("--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all")

# GIT_COMMITTER_* a merge train fixes for the git it runs (``paradev.git.committing_as``).
COMMITTER: dict[str, str] = {}


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a git child: ours minus repository overrides, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in REPO_ENV_VARS}
    env.update(COMMITTER)
    env["LC_ALL"] = "C"  # messages we parse stay in English
    env["GIT_TERMINAL_PROMPT"] = "0"  # never hang on a credential prompt
    env.setdefault("GIT_EDITOR", "true")  # rebase --continue must not open an editor
    if extra:
        env.update(extra)
    return env


def git_program(path: str | None = None) -> str | None:
    """The git that runs: the first on ``path`` (default $PATH), as ``shutil.which`` finds it
    without importing shutil, links followed; None when there is none."""
    for folder in (os.environ.get("PATH", os.defpath) if path is None else path).split(os.pathsep):
        program = os.path.join(folder or os.curdir, "git")
        try:
            info = os.stat(program)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and os.access(program, os.X_OK):
            return os.path.realpath(program)
    return None


def program_identity() -> str:
    """The git that runs as "path:size:mtime"; plain "git" when none is found."""
    program = git_program()
    if program is None:
        return "git"
    info = os.stat(program)
    return f"{program}:{info.st_size}:{info.st_mtime_ns}"


def refs_key(common_dir: str, refs: Sequence[str], since_ns: int) -> str | None:
    """The identity of every file git keeps ``refs`` in (loose, packed, replace refs, grafts,
    shallow): while it holds, so do the refs. None when it cannot be taken exactly (a ref
    store this reading does not know, a symbolic ref, a file written moments ago)."""
    stamps = Stamps(since_ns)
    try:
        if os.path.exists(os.path.join(common_dir, "reftable")):
            raise NotKeyableError("refs kept in a reftable")
        for ref in refs:
            if stamps.text(os.path.join(common_dir, ref)).startswith("ref:"):
                raise NotKeyableError(f"{ref} is a symbolic ref: it moves with its target")
        names = ["packed-refs", "refs/replace", "shallow", "info/grafts"]
        stamps.files([os.path.join(common_dir, name) for name in names])
        return stamps.key()
    except NotKeyableError:
        return None


class Found:
    """Where git's discovery leads from a folder: as ``git rev-parse`` would print them."""

    __slots__ = ("common_dir", "main_root", "toplevel")

    def __init__(self, toplevel: str, common_dir: str, main_root: str) -> None:
        self.toplevel = toplevel  # this work tree
        self.common_dir = common_dir  # the git dir every work tree shares
        self.main_root = main_root  # the main work tree


def find_repository(cwd: str) -> Found | None:
    """The work tree holding ``cwd`` and its repository, as git finds them; None when only
    git can say (not a repository, a bare one, or any layout this reading is not sure of)."""
    if any(os.environ.get(name) for name in _DISCOVERY_ENV_VARS):
        return None
    try:
        folder = os.path.realpath(cwd)
        device = os.stat(folder).st_dev
        if ".git" in folder.split(os.sep):
            return None  # inside a git dir: git's answer differs (no work tree)
        while True:
            if os.path.lexists(os.path.join(folder, "HEAD")):
                return None  # perhaps a bare repository (git checks each folder for one)
            try:
                st = os.lstat(os.path.join(folder, ".git"))
            except FileNotFoundError:
                st = None
            if st is not None:
                return _work_tree(folder, st)
            parent = os.path.dirname(folder)
            if parent == folder or os.stat(parent).st_dev != device:
                return None  # no repository, or a file system boundary git may stop at
            folder = parent
    except (OSError, UnicodeError, ValueError):
        return None


def _work_tree(top: str, dot_git: os.stat_result) -> Found | None:
    """The repository whose ``.git`` (a folder, or a file naming the git dir) is in ``top``."""
    if stat.S_ISDIR(dot_git.st_mode):
        git_dir = os.path.join(top, ".git")
    elif stat.S_ISREG(dot_git.st_mode):
        text = _read(os.path.join(top, ".git"))
        if not text.startswith("gitdir: ") or text.rstrip("\r\n").count("\n"):
            return None
        git_dir = os.path.realpath(os.path.join(top, text[8:].rstrip("\r\n")))
    else:
        return None
    common = git_dir
    if os.path.lexists(os.path.join(git_dir, "commondir")):
        named = _read(os.path.join(git_dir, "commondir")).rstrip("\r\n")
        common = os.path.realpath(os.path.join(git_dir, named))
    if not _owned(top, dot_git, git_dir, common) or not _plain_repository(git_dir, common):
        return None
    if git_dir == common:
        return Found(top, common, top)
    if os.path.basename(common) == ".git":
        return Found(top, common, os.path.dirname(common))
    return None  # a separate git dir: git's worktree list names the main work tree


def _owned(top: str, dot_git: os.stat_result, git_dir: str, common: str) -> bool:
    """Everything git's safe.directory rule looks at is ours; otherwise git decides."""
    me = os.geteuid()
    owners = {dot_git.st_uid, *(os.stat(path).st_uid for path in (top, git_dir, common))}
    return owners == {me}


def _plain_repository(git_dir: str, common: str) -> bool:
    """A git dir git accepts as is, with no config that moves the work tree elsewhere."""
    if not (
        os.path.isdir(os.path.join(common, "objects"))
        and os.path.isdir(os.path.join(common, "refs"))
        and _valid_head(_read(os.path.join(git_dir, "HEAD")))
    ):
        return False
    if os.path.lexists(os.path.join(git_dir, "config.worktree")):
        return False
    return _plain_config(_read(os.path.join(common, "config")))


def _valid_head(text: str) -> bool:
    """HEAD as git accepts it: a symbolic ref under refs/, or a commit id."""
    head = text.rstrip("\r\n")
    if head.startswith("ref: "):
        return head[5:].startswith("refs/")
    return len(head) in (40, 64) and all(c in "0123456789abcdef" for c in head)


def _plain_config(text: str) -> bool:
    """No core.worktree, no core.bare other than false, no includes, format version 0.

    A setting may follow its section header on the same line (``[core] bare = true``).
    """
    for raw in text.lower().splitlines():
        line = raw.strip()
        if line.startswith("[include"):
            return False
        if line.startswith("["):
            line = line.partition("]")[2].strip()
        name, _, value = line.partition("=")
        name, value = name.strip(), value.split("#")[0].split(";")[0].strip()
        if name == "worktree" or (name == "bare" and value != "false"):
            return False
        if name == "repositoryformatversion" and value != "0":
            return False  # extensions this reading does not know
    return True


def _read(path: str) -> str:
    """A small file of git's, as text; a FIFO or device planted there is refused, never
    waited on (ValueError)."""
    from paradev.limits import read_bounded

    return read_bounded(path, 1_000_000, path).decode("utf-8")
