"""What the fast commands (``check``, ``status``) need of the plan and the repository's
layout, kept between runs (``paradev.kept``).

Reading plan.toml and state.json means loading the plan and state modules and
parsing both: more than ``check`` may spend in all. Their answer (the agents,
their branches and work tree folders, the base) is kept with a key: the
identity of the plan, state and journal files (and the file a linked plan
leads to), every work tree folder (a link there is refused), the git
program, paradev's version, ``PARADEV_PLAN`` and ``HOME``. A command that
read and validated them keeps the context (``keep_context``); the next ones
use it while the key holds (``kept_context``).
"""

from __future__ import annotations

import os
import time

from paradev import __version__
from paradev.kept import NotKeyableError, Stamps, load, save
from paradev.layout import JOURNAL_FILE, STATE_FILE, STORE_DIR

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from subprocess import Popen

    from paradev.workspace import Workspace

CONTEXT_FILE = "check-context.kept"  # under <common>/paradev
_CONTEXT_VERSION = 1


class Context:
    """What ``check`` needs of the plan and the repository's layout, as last validated."""

    __slots__ = ("agent_count", "base", "branches", "main_root", "worktree_root", "worktrees")

    def __init__(
        self,
        main_root: str,
        agent_count: int,
        base: str,
        branches: tuple[str, ...],
        worktree_root: str,
        worktrees: tuple[str, ...],
    ) -> None:
        self.main_root = main_root
        self.agent_count = agent_count
        self.base = base
        self.branches = branches  # agent N's branch at index N - 1
        self.worktree_root = worktree_root
        self.worktrees = worktrees  # agent N's work tree folder at index N - 1


class FilesRead:
    """The plan, state and journal files as they were before a command read them."""

    __slots__ = ("parts", "plan_path", "since_ns")

    def __init__(self, since_ns: int, plan_path: str, parts: list[object]) -> None:
        self.since_ns, self.plan_path, self.parts = since_ns, plan_path, parts


def _file_parts(common_dir: str, plan_path: str, since_ns: int) -> list[object]:
    """The identity of the plan (and of the file a linked plan leads to), state and journal
    files; NotKeyableError when one changed moments before ``since_ns``."""
    store = os.path.join(common_dir, STORE_DIR)
    stamps = Stamps(since_ns)
    files = [plan_path, os.path.realpath(plan_path)]
    stamps.files([*files, os.path.join(store, STATE_FILE), os.path.join(store, JOURNAL_FILE)])
    return stamps.parts


def files_before_reading(cwd: str | None = None) -> FilesRead | None:
    """Taken before ``check`` reads its plan and state: the context is kept only when these
    files are still the same after (``keep_context``). None outside a plain repository."""
    from paradev.gitdir import find_repository
    from paradev.layout import plan_file

    since = time.time_ns()
    try:
        found = find_repository(cwd or os.getcwd())
        if found is None:
            return None
        plan_path = plan_file(found.main_root)
        return FilesRead(since, plan_path, _file_parts(found.common_dir, plan_path, since))
    except (OSError, NotKeyableError):
        return None


def _context_key(
    common_dir: str, files: list[object], worktree_root: str, worktrees: Sequence[str]
) -> str:
    """The key of the context: the plan, state and journal files (``files``), the git
    program (its version was found new enough when the context was kept), every work tree
    folder (a link there is refused) and the variables read."""
    from paradev.gitdir import program_identity

    stamps = Stamps(time.time_ns())
    stamps.parts += files
    for folder in (worktree_root, *worktrees):
        stamps.identity(folder)
    stamps.parts += [
        __version__,  # another paradev may validate plans otherwise
        program_identity(),
        os.environ.get("PARADEV_PLAN", ""),
        os.environ.get("HOME", ""),
    ]
    return stamps.key()


def kept_context(common_dir: str, main_root: str) -> Context | None:
    """The context kept for this repository, when nothing it was read from changed."""
    from paradev.layout import plan_file

    kept = load(os.path.join(common_dir, STORE_DIR, CONTEXT_FILE))
    if not isinstance(kept, tuple) or len(kept) != 9 or kept[0] != _CONTEXT_VERSION:
        return None
    _, key, plan_path, root, count, base, branches, worktree_root, worktrees = kept
    texts = (plan_path, base, worktree_root)
    if root != main_root or not all(isinstance(text, str) for text in texts):
        return None
    if not (isinstance(branches, tuple) and isinstance(worktrees, tuple)):
        return None
    if not len(branches) == len(worktrees) == count or not all(
        isinstance(name, str) for name in (*branches, *worktrees)
    ):
        return None
    try:
        if plan_file(main_root) != plan_path:
            return None  # PARADEV_PLAN names another file from here
        files = _file_parts(common_dir, plan_path, time.time_ns())
        if _context_key(common_dir, files, worktree_root, worktrees) != key:
            return None
    except (OSError, NotKeyableError):
        return None
    return Context(main_root, count, base, branches, worktree_root, worktrees)


def keep_context(ws: Workspace, before: FilesRead) -> None:
    """Keep what ``check`` needs of ``ws`` for the next runs, when the files it was read
    from are the same now as ``before`` it read them (and none changed moments before):
    a context is never kept for files it does not describe. With hosts the state lives on
    the remote: nothing is kept.
    """
    plan_path = str(ws.plan.path)
    if ws.plan.hosts or plan_path != before.plan_path:
        return
    common = str(ws.repo.common_dir)
    count = ws.plan.agent_count
    worktrees = tuple(str(ws.plan.worktree(a, ws.repo.main_root)) for a in range(1, count + 1))
    worktree_root = str(ws.plan.worktree_root(ws.repo.main_root))
    try:
        if _file_parts(common, plan_path, before.since_ns) != before.parts:
            return
        key = _context_key(common, before.parts, worktree_root, worktrees)
    except NotKeyableError:
        return
    branches = tuple(ws.branch(a) for a in range(1, count + 1))
    value = (_CONTEXT_VERSION, key, plan_path, str(ws.repo.main_root), count, ws.plan.base)
    save(
        os.path.join(common, STORE_DIR, CONTEXT_FILE), (*value, branches, worktree_root, worktrees)
    )


def start_statuses(cwd: str | None = None) -> dict[tuple[str, tuple[str, ...]], Popen[str]]:
    """Every agent work tree's ``git status`` started now, from the kept context, before
    ``status`` loads the modules it needs (~40 ms): they run meanwhile. Empty when no
    context is kept; ``git.Processes`` adopts each one it would start itself, the very
    same, and stops the others.
    """
    from paradev.gitdir import STATUS_ARGS, find_repository, git_env

    try:
        found = find_repository(cwd or os.getcwd())
    except OSError:
        return {}
    context = kept_context(found.common_dir, found.main_root) if found else None
    if context is None:
        return {}
    from paradev.spawn import start_git

    env = git_env()
    started: dict[tuple[str, tuple[str, ...]], Popen[str]] = {}
    for tree in context.worktrees:
        if os.path.islink(tree) or not os.path.exists(os.path.join(tree, ".git")):
            continue  # refused, or not there: status says so itself
        try:
            started[(tree, STATUS_ARGS)] = start_git(tree, STATUS_ARGS, env)
        except OSError:
            continue  # started again, and its error reported, by status itself
    return started
