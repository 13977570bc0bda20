"""The one module that talks to git.

Hot paths (status, conflicts) use git plumbing through ``subprocess`` with
argv lists: importing GitPython alone costs ~90 ms, more than the git work of
``paradev status``. GitPython is opened lazily (``open_repo``) where its object
model helps. Every call strips inherited ``GIT_DIR``-style variables so a hook
environment can never redirect paradev to another repository.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from paradev import gitdir, spawn
from paradev.errors import GitError, PreconditionError
from paradev.gitdir import COMMITTER, find_repository, program_identity
from paradev.layout import STORE_DIR, VERSION_STAMP
from paradev.records import NamedTuple
from paradev.spawn import start_git
from paradev.text import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _T = TypeVar("_T")
    _R = TypeVar("_R")

    from git import Repo

MIN_GIT_VERSION = (2, 38)

GIT_TEXT_ERRORS = spawn.GIT_TEXT_ERRORS  # git's bytes that are not UTF-8 kept as they are

git_env = gitdir.git_env  # the environment of every git child (defined beside discovery)


@contextmanager
def committing_as(ident: Mapping[str, str]) -> Iterator[None]:
    """git run meanwhile commits as ``ident`` (a train's journaled committer, name and date).

    Only paradev's own git calls take it: the user's programs (agents, gates,
    hooks: ``user_env``) commit as the user, at the time they commit.
    """
    saved = dict(COMMITTER)
    COMMITTER.clear()
    COMMITTER.update(ident)
    try:
        yield
    finally:
        COMMITTER.clear()
        COMMITTER.update(saved)


def user_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``git_env`` for a user's own program (setup command, agent, gate, hook): in the user's
    locale, committing as the user (not as a train's journaled committer)."""
    env = git_env(extra)
    for name in ("LC_ALL", *COMMITTER):
        if name in os.environ:
            env[name] = os.environ[name]
        elif not extra or name not in extra:
            env.pop(name, None)
    return env


def side_by_side(work: Callable[[_T], _R], items: Sequence[_T], threads: int = 16) -> list[_R]:
    """``work(item)`` for every item, run in threads (each git call is its own process).

    Results come in the order of ``items``; the first exception is raised once
    all threads are done. Plain threads: ``concurrent.futures`` would import
    ``logging``, a few ms of every ``paradev status`` and ``check``.
    """
    import threading

    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    todo = iter(enumerate(items))
    lock = threading.Lock()

    def worker() -> None:
        while not errors:
            with lock:
                job = next(todo, None)
            if job is None:
                return
            try:
                results[job[0]] = work(job[1])
            except BaseException as exc:
                errors.append(exc)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(min(threads, len(items)))]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return results


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
                encoding="utf-8",
                errors=GIT_TEXT_ERRORS,
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
    """One line: the command (its first words) and git's own reason.

    git's reason is its first ``fatal:``/``error:`` line: the last line is
    often advice ("...and the repository exists.") that names nothing.
    """
    detail = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
    reasons = [line for line in detail if line.startswith(("fatal:", "error:"))]
    reason = (reasons or detail or [f"exit code {proc.returncode}"])[0]
    shown = " ".join(args[:4]) + (" ..." if len(args) > 4 else "")
    return f"git {shown} failed: {reason}"


@contextmanager
def open_repo(path: Path) -> Iterator[Repo]:
    """A GitPython ``Repo`` that is closed on exit (it leaks cat-file processes otherwise)."""
    from git import Repo

    with Repo(path) as repo:
        yield repo


# -- repository discovery -------------------------------------------------------


class Repository(NamedTuple):
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
    try:
        where = (cwd or Path.cwd()).resolve()
    except FileNotFoundError:
        raise PreconditionError(
            "the current folder no longer exists (removed while you stood in it); "
            "cd into the repository again"
        ) from None
    git = Git(where)
    found = find_repository(str(where))
    if found is not None:  # git's own answer, read from its files without a process
        common_dir = Path(found.common_dir)
        require_version_once(git, common_dir / STORE_DIR / VERSION_STAMP)
        return Repository(Path(found.toplevel), common_dir, Path(found.main_root))
    proc = git.run(
        "rev-parse",
        "--path-format=absolute",
        "--is-bare-repository",
        "--absolute-git-dir",
        "--git-common-dir",
        "--show-toplevel",
        check=False,
    )
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not lines or lines[0] not in ("true", "false"):
        require_version(parse_version(git.out("version")))  # an old git: say so, not "no repo"
    if not lines:
        raise PreconditionError(
            f"{where} is not inside a git repository; cd into one or run git init"
        )
    if lines[0] == "true":
        raise PreconditionError(f"{where} is a bare repository; run paradev in a work tree")
    if proc.returncode != 0 or len(lines) < 4:
        raise PreconditionError(
            f"{where} is not inside a work tree; cd into the repository's files"
        )
    git_dir, common_dir, toplevel = (Path(line) for line in lines[1:4])
    if git_dir == common_dir:  # the main work tree itself
        main_root = toplevel
    elif common_dir.name == ".git":
        main_root = common_dir.parent
    else:  # a linked work tree of a separate git dir: git's first record is the main one
        main_root = Path(worktree_list(Git(toplevel))[0].path)
    require_version_once(git, common_dir / STORE_DIR / VERSION_STAMP)
    return Repository(toplevel=toplevel, common_dir=common_dir, main_root=main_root)


def require_version_once(git: Git, stamp: Path) -> None:
    """``require_version``, asking git (a process) only when the git program on PATH changed.

    ``stamp`` names the program (path, size, modification time) last found new
    enough; it is written only into paradev's existing folder, never creating it.
    """
    program = program_identity()
    try:
        if stamp.read_text(encoding="utf-8") == program:
            return
    except (OSError, UnicodeDecodeError):
        pass
    require_version(parse_version(git.out("version")))
    if stamp.parent.is_dir():
        with contextlib.suppress(OSError):
            stamp.write_text(program, encoding="utf-8")


# -- worktrees -----------------------------------------------------------------


class Worktree(NamedTuple):
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


def worktree_link_ok(worktree: Path) -> bool:
    """Whether git can open ``worktree`` (its ``.git`` file points at a live record)."""
    return Git(worktree).ok("rev-parse", "--git-dir")


def repair_worktree(git: Git, worktree: Path) -> None:
    """Rewrite the links between a worktree and its record (``git worktree repair``).

    git repairs and still exits 1 when it found the link broken, so success
    is judged by whether the worktree opens afterwards. Files are never touched.
    """
    git.run("worktree", "repair", "--", str(worktree), check=False)
    if not worktree_link_ok(worktree):
        raise PreconditionError(
            f"{worktree} is a broken worktree that 'git worktree repair' could not fix; "
            "move it away and run 'paradev setup' again"
        )


# -- refs ----------------------------------------------------------------------

_BAD_REF_CHARS = r"[\x00-\x20\x7f~^:?*\[\\]"  # compiled at first use (re's cache)


def is_valid_branch_name(name: str) -> bool:
    """``git check-ref-format --branch`` rules, without spawning git for each name."""
    if not name or name == "HEAD" or name.startswith("-") or "@{" in name:
        return False
    if ".." in name or "//" in name or name.endswith(("/", ".")) or name.startswith("/"):
        return False
    if re.search(_BAD_REF_CHARS, name):
        return False
    return all(
        part and not part.startswith(".") and not part.endswith(".lock") for part in name.split("/")
    )


def local_branches(git: Git) -> list[str]:
    """Every local branch (short names), in one git process."""
    out = git.out("for-each-ref", "--format=%(refname)", "refs/heads/")
    return [line.removeprefix("refs/heads/") for line in out.splitlines() if line]


def ahead_behind(git: Git, base: str, branch: str) -> tuple[int, int]:
    """Commits on ``branch`` not on ``base``, and on ``base`` not on ``branch``."""
    behind, ahead = git.out(
        "rev-list", "--left-right", "--count", f"{base}...{branch}", "--"
    ).split()
    return int(ahead), int(behind)


def ahead_behind_if_any(
    git: Git, base: str, branch: str, prefix: str = "refs/heads/"
) -> tuple[int, int] | None:
    """``ahead_behind`` of ``branch`` (local, or under ``prefix``), None when it or base is absent.

    One git process where checking first would take two.
    """
    return ahead_behind_of(git, f"refs/heads/{base}", f"{prefix}{branch}")


def ahead_behind_of(git: Git, base: str, rev: str) -> tuple[int, int] | None:
    """(commits on ``rev`` not on ``base``, on ``base`` not on ``rev``); None when git cannot
    tell (a rev absent, an object missing): status runs it for every agent and goes on."""
    proc = git.run("rev-list", "--left-right", "--count", f"{base}...{rev}", "--", check=False)
    if proc.returncode != 0:
        return None
    behind, ahead = proc.stdout.split()
    return int(ahead), int(behind)


def changed_paths(git: Git, base: str, head: str) -> list[str]:
    """Paths ``head`` changed since its merge-base with ``base`` (renames as delete + add)."""
    out = git.out("diff", "--name-only", "-z", "--no-renames", f"{base}...{head}", "--")
    return [p for p in out.split("\0") if p]


def dirty_paths(worktree: Path, *, untracked: bool = True, within: Sequence[str] = ()) -> list[str]:
    """Uncommitted paths in a work tree: tracked changes, plus untracked (not ignored) ones.

    ``within``: only below these repository paths ("" is the whole tree); git
    then looks at those files alone, not at every file of a large tree.
    ``--no-optional-locks``: looking must never take the index lock an agent
    working in that tree may need at the same moment.
    """
    return [path for _, path in _status_entries(worktree, untracked, within)]


def changes(
    worktree: Path, *, untracked: bool = True, within: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """(changed tracked paths, untracked paths) of a work tree, from one ``git status``."""
    entries = _status_entries(worktree, untracked, within)
    return [p for code, p in entries if code != "??"], [p for code, p in entries if code == "??"]


def _status_entries(
    worktree: Path, untracked: bool, within: Sequence[str]
) -> list[tuple[str, str]]:
    """(two-letter status, path) of every uncommitted path; a rename's origin shares its code.

    Below a few paths, git's threads that stat the whole index in advance
    (``core.preloadIndex``) cost ~3 ms of a ~10 ms call and stat nothing useful.
    """
    limit = ["--", *(f":(top,literal){p}" if p else ":(top)" for p in within)] if within else []
    no_preload = ["-c", "core.preloadIndex=false"] if within and "" not in within else []
    out = (
        Git(worktree)
        .run(
            *no_preload,
            "--no-optional-locks",
            "status",
            "--porcelain=v1",
            "-z",
            f"--untracked-files={'all' if untracked else 'no'}",
            *limit,
        )
        .stdout
    )
    return status_entries(out)


def untracked_paths(worktree: Path) -> list[str]:
    """Untracked, not ignored files of a work tree (each file, not just its folder)."""
    out = Git(worktree).out("ls-files", "--others", "--exclude-standard", "-z")
    return [p for p in out.split("\0") if p]


# -- merge-tree ----------------------------------------------------------------------


class ConflictStage(NamedTuple):
    """One higher-stage index entry of a conflicted merge (stage 1 base, 2 ours, 3 theirs)."""

    mode: str
    oid: str
    stage: int
    path: str


class MergeMessage(NamedTuple):
    """One informational message of merge-tree: the paths it names, its stable type, its text."""

    paths: tuple[str, ...]
    kind: str  # e.g. "CONFLICT (contents)", "CONFLICT (modify/delete)", "Auto-merging"
    text: str


class MergeTree(NamedTuple):
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


# -- merge train ---------------------------------------------------------------------


def is_ancestor(git: Git, ancestor: str, descendant: str) -> bool:
    """Whether every commit of ``ancestor`` is in ``descendant`` (a fast-forward is possible)."""
    return git.ok("merge-base", "--is-ancestor", ancestor, descendant)


def update_ref(git: Git, ref: str, new: str, old: str, reason: str = "paradev") -> None:
    """Compare-and-swap ``ref`` from ``old`` to ``new`` ("" as ``old``: it must not exist)."""
    proc = git.run("update-ref", "-m", reason, ref, new, old or "0" * 40, check=False)
    if proc.returncode != 0:
        raise GitError(
            f"could not move {ref} to {new[:12]}: it changed meanwhile ({proc.stderr.strip()})"
        )


def delete_ref(git: Git, ref: str, old: str) -> None:
    """Delete ``ref`` only if it still points at ``old``."""
    git.run("update-ref", "-d", ref, old)


def worktree_git_dir(worktree: Path) -> Path:
    """The private git dir of a work tree: ``.git`` itself, or where its ``.git`` file points.

    Read from the file system: the train asks this for every agent at every
    step, and a git process per question costs more than the question.
    """
    dot = worktree / ".git"
    if dot.is_dir():
        return dot
    try:
        text = dot.read_text(encoding="utf-8")
    except OSError:
        text = ""
    if text.startswith("gitdir: "):
        path = Path(text.removeprefix("gitdir: ").strip())
        return path if path.is_absolute() else (worktree / path).resolve()
    return Path(Git(worktree).out("rev-parse", "--absolute-git-dir"))


class RebaseInProgress(NamedTuple):
    """A rebase stopped in a work tree, as its own state files describe it.

    ``head_name`` is the branch it rewrites (``refs/heads/<branch>``, or
    "detached HEAD"), ``onto`` the commit it replays onto and ``orig_head`` the
    branch's head when it started: together they tell whose rebase it is.
    """

    head_name: str
    onto: str
    orig_head: str


def rebase_in_progress(worktree: Path) -> RebaseInProgress | None:
    """The rebase in progress in ``worktree`` (merge or apply backend), or None."""
    git_dir = worktree_git_dir(worktree)
    for name in ("rebase-merge", "rebase-apply"):
        folder = git_dir / name
        if folder.is_dir():
            return RebaseInProgress(
                head_name=_state_file(folder / "head-name"),
                onto=_state_file(folder / "onto"),
                orig_head=_state_file(folder / "orig-head"),
            )
    return None


def _state_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def branch_holder(repo: Repository, branch: str) -> Path | None:
    """The work tree that has ``branch`` checked out, read from the HEAD files, or None.

    The train asks before every move of base; reading a few small files costs
    far less than ``git worktree list``. Work trees whose folder is gone
    (prunable) do not count.
    """
    wanted = f"ref: refs/heads/{branch}"
    if _state_file(repo.common_dir / "HEAD") == wanted:
        return repo.main_root
    linked = repo.common_dir / "worktrees"
    for admin in sorted(linked.iterdir()) if linked.is_dir() else []:
        if _state_file(admin / "HEAD") != wanted:
            continue
        recorded = _state_file(admin / "gitdir")  # absolute, or relative to admin
        if recorded and (admin / recorded).exists():
            return (admin / recorded).resolve().parent
    return None


def refs_not_merged(git: Git, refs: Sequence[str], base: str) -> set[str]:
    """Those of ``refs`` with commits ``base`` lacks, in one ``git for-each-ref``."""
    if not refs:
        return set()
    out = git.out("for-each-ref", f"--no-merged={base}", "--format=%(refname)", "--", *refs)
    return set(out.splitlines()) & set(refs)


def unmerged_paths(worktree: Path) -> list[str]:
    """Paths with conflicts still unresolved in the index of ``worktree``."""
    out = Git(worktree).out("diff", "--name-only", "-z", "--diff-filter=U", "--")
    return sorted({p for p in out.split("\0") if p})


def current_branch(worktree: Path) -> str | None:
    """The branch checked out in ``worktree`` (short name), None when detached."""
    try:
        head = (worktree_git_dir(worktree) / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else None


def rebase(worktree: Path, onto: str) -> bool:
    """Rebase the branch checked out in ``worktree`` onto ``onto``; False when it stopped."""
    proc = Git(worktree).run(
        "-c", "rebase.autoStash=false", "rebase", "--no-update-refs", onto, check=False
    )
    if proc.returncode == 0:
        return True
    if rebase_in_progress(worktree) is None:
        raise GitError(_failure_message(("rebase", onto), proc))
    return False


def rebase_continue(worktree: Path) -> bool:
    """Go on with a resolved rebase; False when it stopped again (next commit conflicts)."""
    proc = Git(worktree).run("rebase", "--continue", check=False)
    if proc.returncode == 0:
        return True
    if rebase_in_progress(worktree) is None:
        raise GitError(_failure_message(("rebase", "--continue"), proc))
    return False


def rebase_stopped_at(worktree: Path) -> str | None:
    """``<short sha> <subject>`` of the commit a stopped rebase could not apply, if known."""
    proc = Git(worktree).run("log", "-1", "--format=%h %s", "REBASE_HEAD", "--", check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def tree_of(git: Git, commit: str) -> str:
    return git.out("rev-parse", f"{commit}^{{tree}}")


def rebase_abort(worktree: Path) -> None:
    Git(worktree).run("rebase", "--abort")


def rebase_quit(worktree: Path) -> None:
    """Forget a rebase git can no longer abort (half-written state); HEAD stays where it is."""
    Git(worktree).run("rebase", "--quit")


def rebase_position(worktree: Path) -> str | None:
    """Where a rebase in ``worktree`` is: ``<pick number>:<commit it stopped at>``, None if none.

    A rebase that stopped on a conflict keeps this until someone continues it;
    a rebase killed between two picks shows another number (git counts the
    next pick before it makes the commit), so the two cannot be mistaken.
    """
    folder = worktree_git_dir(worktree) / "rebase-merge"
    if not folder.is_dir():
        return None
    stopped = _state_file(worktree_git_dir(worktree) / "REBASE_HEAD")
    return f"{_state_file(folder / 'msgnum')}:{stopped}"


def checkout_force(worktree: Path, branch: str, commit: str) -> None:
    """Check ``branch`` out in ``worktree`` at ``commit``, discarding what a dead rebase left."""
    Git(worktree).run("checkout", "--quiet", "--force", "--no-track", "-B", branch, commit)


def rebase_onto(worktree: Path, onto: str, upstream: str) -> bool:
    """Replay the checked-out branch's commits after ``upstream`` onto ``onto``; False: stopped."""
    proc = Git(worktree).run(
        "-c",
        "rebase.autoStash=false",
        "rebase",
        "--no-update-refs",
        "--onto",
        onto,
        upstream,
        check=False,
    )
    return proc.returncode == 0 and rebase_in_progress(worktree) is None


def added_lines(git: Git, base: str, head: str) -> dict[str, list[str]]:
    """The lines ``head`` adds to ``base``, per path (from a zero-context diff)."""
    out = git.out(
        "diff",
        "-U0",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-renames",
        base,
        head,
        "--",
    )
    added: dict[str, list[str]] = {}
    path = ""
    for line in out.splitlines():
        if line.startswith("+++ "):
            path = line[4:].removeprefix("b/")
        elif line.startswith("+") and path:
            added.setdefault(path, []).append(line[1:])
    return added


def probe_merge(
    git: Git, tree_commit: str, parent: str, commit: str, tree: str | None = None
) -> MergeTree:
    """Merge ``commit`` into ``tree_commit``'s tree with ``parent`` as the merge base.

    A synthetic commit (``tree_commit``'s tree, ``parent`` as its only parent)
    makes ``parent`` the merge base, as a cherry-pick or rebase does, on any
    git >= 2.38 (``merge-tree --merge-base`` needs 2.40). ``tree``: that tree,
    when the caller knows it (one git process less).
    """
    probe = commit_tree(git, tree or f"{tree_commit}^{{tree}}", [parent], "paradev: merge probe\n")
    return merge_trees(git, [(probe, commit)])[0]


def tree_diff_paths(git: Git, left: str, right: str) -> list[str]:
    """Paths whose content differs between two trees or commits."""
    out = git.out("diff-tree", "-r", "-z", "--name-only", "--no-renames", left, right, "--")
    return [p for p in out.split("\0") if p]


def log_touching(git: Git, base: str, head: str, paths: Sequence[str]) -> list[str]:
    """``<short sha> <subject>`` of the commits in ``base..head`` that change ``paths``."""
    return git.out("log", "--format=%h %s", f"{base}..{head}", "--", *paths).splitlines()


def reset_keep(worktree: Path, commit: str) -> None:
    """Point the checked-out branch at ``commit``; git refuses if local changes would be lost.

    A refusal changes nothing; the index is then refreshed and the reset tried once more:
    a file touched or copied back with the same bytes is no local change, yet ``reset
    --keep`` trusts stale stat data. A clean tree (the rule) costs one git process.
    """
    git = Git(worktree)
    if git.run("reset", "--quiet", "--keep", commit, check=False).returncode == 0:
        return
    git.run("update-index", "-q", "--refresh", check=False)  # exits 1 when files really differ
    git.run("reset", "--quiet", "--keep", commit)


def paths_as_in(
    worktree: Path, commit: str, paths: Sequence[str], *, cut_short: bool = False
) -> list[str]:
    """Those of ``paths`` whose work-tree file is exactly ``commit``'s (absent where it has none).

    Such a file holds nothing that is not committed: putting it back loses
    nothing. ``cut_short``: a start of ``commit``'s file counts too (a killed
    checkout writing it may stop anywhere, even at zero bytes); only for files
    paradev's own checkout created, where nobody's edit can look like that.
    """
    if not paths:
        return []
    git = Git(worktree)
    blobs: dict[str, str] = {}
    for entry in git.out("ls-tree", "-r", "-z", commit, "--", *paths).split("\0"):
        if entry:
            meta, path = entry.split("\t", 1)
            blobs[path] = meta.split()[2]
    files = [p for p in paths if (worktree / p).is_file() and not (worktree / p).is_symlink()]
    hashes = dict(zip(files, git.out("hash-object", "--", *files).split(), strict=True))
    cut = [p for p in files if cut_short and p in blobs and hashes[p] != blobs[p]]
    starts = dict(zip(cut, read_blobs(git, [blobs[p] for p in cut]), strict=True))
    return [
        p
        for p in paths
        if (p in blobs and hashes.get(p) == blobs[p])
        or _is_start_of(worktree / p, starts.get(p))
        or (p not in blobs and not (worktree / p).exists() and not (worktree / p).is_symlink())
    ]


def _is_start_of(file: Path, blob: bytes | None) -> bool:
    """Whether ``file`` holds the first bytes of ``blob`` (a write cut short)."""
    return blob is not None and blob.startswith(file.read_bytes())


def restore_to_head(worktree: Path, paths: Sequence[str]) -> None:
    """Index and files of ``paths`` back to HEAD (files HEAD lacks removed)."""
    git = Git(worktree)
    git.run("reset", "-q", "HEAD", "--", *paths, check=False)  # exits 1 when files still differ
    known = set(git.out("ls-tree", "-r", "-z", "--name-only", "HEAD", "--", *paths).split("\0"))
    if tracked := [p for p in paths if p in known]:
        git.run("checkout", "HEAD", "--", *tracked)
    for path in paths:
        if path not in known:
            (worktree / path).unlink(missing_ok=True)


def merge_ff_only(worktree: Path, commit: str) -> None:
    """Fast-forward the branch checked out in ``worktree`` (ref, index and files) to ``commit``.

    Without git's automatic maintenance after it (``git maintenance run --auto``, a process
    per landing while the landing waits): the user's own git commands still run it.
    """
    Git(worktree).run(*NO_AUTO_MAINTENANCE, "merge", "--quiet", "--ff-only", "--no-edit", commit)


def commit_tree(
    git: Git, tree: str, parents: Sequence[str], message: str, env: Mapping[str, str] | None = None
) -> str:
    """A commit object of ``tree`` with ``parents`` (no ref changes); the message goes via stdin."""
    args = ["commit-tree", tree]
    for parent in parents:
        args += ["-p", parent]
    return git.run(*args, input=message, env=env).stdout.strip()


class RawCommit(NamedTuple):
    """What a rewrite keeps of a commit: tree, parents, who made it and when, exact message."""

    tree: str
    parents: list[str]
    identity: dict[str, str]  # GIT_AUTHOR_* and GIT_COMMITTER_*: name, email, raw date
    message: str

    @property
    def author(self) -> dict[str, str]:
        """The GIT_AUTHOR_* variables alone (a replay gets a committer of its own)."""
        return {k: v for k, v in self.identity.items() if k.startswith("GIT_AUTHOR_")}


def read_commits(git: Git, commits: Sequence[str]) -> list[RawCommit]:
    """Tree, parents, identity and message of each of ``commits``, from one ``cat-file --batch``."""
    found = _cat_file_batch(git, commits, b"commit")
    return [_raw_commit(raw, name) for raw, name in zip(found, commits, strict=True)]


def _raw_commit(raw: bytes | None, name: str) -> RawCommit:
    if raw is None:
        raise GitError(f"{name} is not a commit")
    text = raw.decode("utf-8", GIT_TEXT_ERRORS)
    headers, _, message = text.partition("\n\n")
    lines = [line.split(" ", 1) for line in headers.splitlines() if not line.startswith(" ")]
    fields = dict(lines)
    parents = [value for key, value in lines if key == "parent"]
    identity: dict[str, str] = {}
    for who in ("author", "committer"):
        ident = fields[who]
        name_end, email_end = ident.index("<"), ident.rindex(">")
        identity |= {
            f"GIT_{who.upper()}_NAME": ident[:name_end].strip(),
            f"GIT_{who.upper()}_EMAIL": ident[name_end + 1 : email_end],
            f"GIT_{who.upper()}_DATE": ident[email_end + 1 :].strip(),
        }
    return RawCommit(fields["tree"], parents, identity, message)


def add_trailers_to_each(
    git: Git, messages: Sequence[str], key: str, values: Sequence[str]
) -> list[str]:
    """Each of ``messages`` with a ``key: value`` trailer for each of ``values`` it lacks.

    Messages with no trailer block get theirs appended here, as git would
    (``trailers_appended``); one ``git interpret-trailers --in-place`` takes
    all the others, not one per message.
    """
    done = [trailers_appended(message, key, values) for message in messages]
    left = [message for message, result in zip(messages, done, strict=True) if result is None]
    if not left:
        return [str(result) for result in done]
    added = iter(_interpret_trailers(git, left, key, values))
    return [next(added) if result is None else result for result in done]


def _interpret_trailers(
    git: Git, messages: Sequence[str], key: str, values: Sequence[str]
) -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="paradev-trailers-") as folder:
        files = [Path(folder) / f"{index}.msg" for index in range(len(messages))]
        for file, message in zip(files, messages, strict=True):
            file.write_bytes(message.encode("utf-8", GIT_TEXT_ERRORS))
        args = ["interpret-trailers", "--in-place", "--if-exists", "addIfDifferent"]
        for value in values:
            args += ["--trailer", f"{key}: {value}"]
        git.run(*args, "--", *map(str, files))
        return [file.read_bytes().decode("utf-8", GIT_TEXT_ERRORS) for file in files]


def commits_between(git: Git, base: str, head: str) -> list[str]:
    """Non-merge commits of ``head`` not in ``base``, oldest first (what a rebase replays)."""
    out = git.out("rev-list", "--reverse", "--no-merges", f"{base}..{head}", "--")
    return out.split()


class BranchCommit(NamedTuple):
    """One commit a rebase would replay: its parents and the paths it changes."""

    commit: str
    parents: tuple[str, ...]
    paths: tuple[str, ...]


def branch_commits(git: Git, base: str, head: str) -> list[BranchCommit]:
    """Commits of ``head`` not in ``base``, oldest first, with parents and paths (one process).

    Merge commits come with no paths (``git log`` shows none without ``-m``).
    """
    out = git.out(
        "log",
        "--reverse",
        "--format=%x01%H %P",
        "--name-only",
        "--no-renames",
        "-z",
        f"{base}..{head}",
        "--",
    )
    found: list[BranchCommit] = []
    for chunk in out.split("\x01")[1:]:
        header, _, rest = chunk.partition("\0")
        commit, *parents = header.split()
        paths = tuple(p for p in rest.lstrip("\n").split("\0") if p)
        found.append(BranchCommit(commit, tuple(parents), paths))
    return found


def added_paths(git: Git, old: str, new: str) -> list[str]:
    """Paths ``new`` has and ``old`` lacks: the files a checkout from ``old`` to ``new`` creates."""
    out = git.out(
        "diff-tree", "-r", "-z", "--name-only", "--no-renames", "--diff-filter=A", old, new
    )
    return [p for p in out.split("\0") if p]


def peek_remote_branch(git: Git, remote: str, branch: str) -> str | None:
    """``remote``'s ``branch`` commit, its objects fetched, no ref or FETCH_HEAD written."""
    tip = remote_branch(git, remote, branch)
    if tip is not None and not git.ok("cat-file", "-e", f"{tip}^{{commit}}"):
        git.run("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--", remote, tip)
    return tip


def merge_base(git: Git, left: str, right: str) -> str | None:
    proc = git.run("merge-base", left, right, check=False)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


class Tips(NamedTuple):
    """Two tips and their merge base, read by one process (``tips_and_merge_base``)."""

    left: str
    right: str
    merge_base: str | None  # None: no common history, or several (criss-cross) merge bases


def tips_and_merge_base(git: Git, left: str, right: str) -> Tips | None:
    """Both commits and their one merge base from one ``git rev-parse LEFT...RIGHT``.

    Starting a task asked for each tip and the fork point separately: three
    processes, a tenth of a second per launch on a loaded machine. None when
    either does not exist.
    """
    proc = git.run("rev-parse", f"{left}...{right}", check=False)  # full ref names: no option
    lines = proc.stdout.split()
    if proc.returncode != 0 or len(lines) < 2:
        return None
    head, found, *bases = lines  # git names the right side first
    only = bases[0].removeprefix("^") if len(bases) == 1 else None
    return Tips(found, head, only)


# A fetch that moves a remote-tracking ref another git process (an agent's own
# ``git fetch`` or ``git pull``, a push) is moving at the same moment fails with
# "cannot lock ref ...: is at X but expected Y", which git does not retry.
REF_RACE = "cannot lock ref"
REF_RACE_PAUSES = (0.05, 0.2, 0.5, 1.0)


def fetch_retrying(git: Git, *args: str) -> subprocess.CompletedProcess[str]:
    """``git fetch args``, tried again when another process moved a ref it updates."""
    import time

    proc = git.run("fetch", *args, check=False)
    for pause in REF_RACE_PAUSES:
        if proc.returncode == 0 or REF_RACE not in proc.stderr:
            break
        time.sleep(pause)
        proc = git.run("fetch", *args, check=False)
    return proc


def fetch(git: Git, remote: str) -> None:
    proc = fetch_retrying(git, "--quiet", "--", remote)
    if proc.returncode != 0:
        raise GitError(_failure_message(("fetch", "--quiet", "--", remote), proc))


def remote_branch(git: Git, remote: str, branch: str) -> str | None:
    """What ``remote`` has for ``branch`` right now (ls-remote), None when absent."""
    out = git.out("ls-remote", "--", remote, f"refs/heads/{branch}")
    return out.split()[0] if out else None


def local_remote_dir(git: Git, remote: str) -> Path | None:
    """The git dir of ``remote`` when it is a repository on this machine (a path or file://).

    A push to it runs git-receive-pack here, as our child: killed with us, it
    can leave lock files in that repository.
    """
    proc = git.run("remote", "get-url", "--", remote, check=False)
    url = proc.stdout.strip()
    if proc.returncode != 0 or not url or ("://" in url and not url.startswith("file://")):
        return None
    place = Path(url.removeprefix("file://"))
    place = place if place.is_absolute() else git.cwd / place
    for folder in (place / ".git", place):
        if (folder / "HEAD").is_file() and (folder / "refs").is_dir():
            return folder
    return None


def push(git: Git, remote: str, commit: str, branch: str, lease: str | None = None) -> None:
    """Push ``commit`` to ``remote``'s ``branch``: fast-forward only, or with a lease.

    ``lease`` (the commit the remote is expected to hold, "" for none) turns on
    ``--force-with-lease`` for that one ref; without it git refuses anything but
    a fast-forward.
    """
    args = ["push", "--porcelain"]
    if lease is not None:
        args.append(f"--force-with-lease=refs/heads/{branch}:{lease}")
    proc = git.run(*args, "--", remote, f"{commit}:refs/heads/{branch}", check=False)
    if proc.returncode != 0:
        rejected = [line.split("\t")[-1] for line in proc.stdout.splitlines() if line[:1] == "!"]
        why = rejected[0] if rejected else _failure_message(("push", remote), proc)
        raise GitError(f"{remote} rejected {branch}: {why}")


def snapshot_worktree(worktree: Path, message: str) -> str | None:
    """A commit of everything uncommitted in ``worktree`` (tracked and untracked, not ignored).

    Built through a temporary index, so the work tree's own index and files are
    never touched; None when there is nothing uncommitted.
    """
    import tempfile

    git = Git(worktree)
    head = git.rev("HEAD")
    with tempfile.TemporaryDirectory(prefix="paradev-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if head:
            git.run("read-tree", head, env=env)
        git.run("add", "-A", "--", ".", env=env)
        tree = git.run("write-tree", env=env).stdout.strip()
    if head and tree_of(git, head) == tree:
        return None
    return commit_tree(git, tree, [head] if head else [], message)


def prune_worktrees(git: Git) -> None:
    """Forget the records of work trees whose folders are gone."""
    git.run("worktree", "prune")


def add_detached_worktree(git: Git, path: Path, commit: str) -> None:
    """A work tree at ``path`` with ``commit`` checked out on a detached HEAD (no branch).

    ``--force`` twice: a record git left locked ("initializing") by an add that was killed,
    its folder gone, is replaced too (paradev's own trees only)."""
    git.run("worktree", "add", "--quiet", "--detach", *_FORCE_TWICE, "--", str(path), commit)


_FORCE_TWICE = ("--force", "--force")


def checkout_detached(worktree: Path, commit: str) -> None:
    """``commit`` on a detached HEAD, files forced; untracked files removed, ignored ones kept.

    Only for paradev's own scratch work trees: whatever a previous run left goes.
    """
    tree = Git(worktree)
    tree.run("checkout", "--quiet", "--detach", "--force", commit)
    tree.run("clean", "-d", "--force", "--quiet")


def committer_ident(git: Git) -> dict[str, str]:
    """The committer git would use now (name, email, date) as GIT_COMMITTER_* variables."""
    ident = git.out("var", "GIT_COMMITTER_IDENT")
    name, _, rest = ident.partition(" <")
    email, _, date = rest.partition("> ")
    return {"GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email, "GIT_COMMITTER_DATE": date}


def remove_worktree(git: Git, path: Path, force: bool = False) -> None:
    args = ["worktree", "remove"]
    if force:
        args += ["--force", "--force"]
    git.run(*args, "--", str(path))


# -- runner ---


def unfinished_operation(worktree: Path) -> str | None:
    """The rebase, merge or cherry-pick an agent left unfinished in ``worktree``, if any."""
    if rebase_in_progress(worktree) is not None:
        return "rebase"
    git_dir = worktree_git_dir(worktree)  # both markers are per work tree: no git process
    for marker, name in (("MERGE_HEAD", "merge"), ("CHERRY_PICK_HEAD", "cherry-pick")):
        if (git_dir / marker).exists():
            return name
    return None


def commit_leftovers(
    worktree: Path, message: str, new_files: Sequence[str] | None
) -> tuple[str | None, list[str]]:
    """Commit the tracked changes left in ``worktree`` plus the new files ``new_files`` matches.

    ``new_files`` are glob pathspecs (git's matching: ``*`` stays inside a
    folder, ``**`` crosses them); None takes every untracked, not ignored file.
    The message gets the committed paths as its last lines. Returns the new
    commit (None when there was nothing to commit) and those paths.
    """
    if not _status_entries(worktree, new_files != [], ()):
        return None, []  # the usual case, in one process: no index write, no diff
    git = Git(worktree)
    git.run("add", "--update", "--", ".")
    if new_files is None:
        git.run("add", "--all", "--", ".")
    elif new_files:
        specs = [f":(glob){pattern}" for pattern in new_files]
        matched = git.out("ls-files", "--others", "--exclude-standard", "-z", "--", *specs)
        paths = [f":(literal){p}" for p in matched.split("\0") if p]
        if paths:
            git.run("add", "--", *paths)
    staged = [p for p in git.out("diff", "--cached", "--name-only", "-z").split("\0") if p]
    if not staged:
        return None, []
    listing = "".join(f"- {printable(path)}\n" for path in staged)
    git.run("commit", "--quiet", "-F", "-", input=f"{message}\n{listing}")
    return git.out("rev-parse", "HEAD"), staged


def commit_subjects(git: Git, base: str, branch: str) -> list[str]:
    """``<short sha> <subject>`` of every commit on ``branch`` that ``base`` lacks."""
    return git.out("log", "--format=%h %s", f"{base}..{branch}", "--").splitlines()


def switch(worktree: Path, branch: str) -> None:
    """Check ``branch`` out in ``worktree`` (git refuses to lose local changes)."""
    Git(worktree).run("switch", "--quiet", branch)


def commit_count(git: Git, spec: str) -> int:
    """How many commits ``git rev-list`` lists for ``spec`` (e.g. ``a..b``)."""
    return int(git.out("rev-list", "--count", spec, "--"))


def content_merged(git: Git, base: str, branch: str) -> bool:
    """Whether merging ``branch`` into ``base`` would change nothing (e.g. it was squash-merged)."""
    result = merge_trees(git, [(base, branch)])[0]
    return result.clean and result.tree == git.out("rev-parse", f"{base}^{{tree}}")


# -- conflicts ---------------------------------------------------------------------

# A snapshot commit of uncommitted work: fixed identity and dates make it
# deterministic, so an unchanged work tree gives the same commit (and cache key).
_SNAPSHOT_ENV = {
    "GIT_AUTHOR_NAME": "paradev",
    "GIT_AUTHOR_EMAIL": "paradev@localhost",
    "GIT_AUTHOR_DATE": "1700000000 +0000",
    "GIT_COMMITTER_NAME": "paradev",
    "GIT_COMMITTER_EMAIL": "paradev@localhost",
    "GIT_COMMITTER_DATE": "1700000000 +0000",
}


def diff_trees(git: Git, pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """``{path: status}`` changed from ``old`` to ``new`` for every (old, new) pair.

    One ``git diff-tree --stdin`` process serves every pair. Renames are not
    detected, so a rename shows as its old path deleted and its new path added.
    """
    if not pairs:
        return []
    text = "".join(f"{new} {old}\n" for old, new in pairs)  # "<commit> <parent>" lines
    out = git.run(
        "diff-tree",
        "--stdin",
        "--always",
        "-r",
        "--no-renames",
        "--name-status",
        "-z",
        input=text,
    ).stdout
    return parse_diff_tree_stdin(out, len(pairs))


def parse_diff_tree_stdin(output: str, expected: int) -> list[dict[str, str]]:
    """Split ``diff-tree --stdin --always --name-status -z`` output into one dict per input line.

    Each diff starts with the commit id; then status and path fields
    alternate. A status is one letter, so a 40/64-hex field where a status
    belongs starts the next diff.
    """
    results: list[dict[str, str]] = []
    tokens = output.split("\0")
    pos = 0
    while pos < len(tokens) and tokens[pos]:
        token = tokens[pos]
        if len(token) > 1:  # a commit id: the next diff begins
            results.append({})
            pos += 1
            continue
        if not results or pos + 1 >= len(tokens):
            raise GitError("unexpected git diff-tree output")
        results[-1][tokens[pos + 1]] = token
        pos += 2
    if len(results) != expected:
        raise GitError(f"git diff-tree returned {len(results)} diffs for {expected} inputs")
    return results


def commits_beyond(
    git: Git, base: str, heads: Sequence[str]
) -> tuple[dict[str, list[str]], set[str]]:
    """Commits reachable from ``heads`` but not from ``base`` (id -> parents), and the boundary.

    The boundary holds the commits of ``base`` those commits grow from: one
    ``git rev-list`` for every branch at once.
    """
    if not heads:
        return {}, set()
    out = git.out("rev-list", "--boundary", "--parents", *heads, f"^{base}", "--")
    parents: dict[str, list[str]] = {}
    boundary: set[str] = set()
    for line in out.splitlines():
        if line.startswith("-"):
            boundary.add(line[1:].split(" ")[0])
        elif line:
            commit, *rest = line.split(" ")
            parents[commit] = rest
    return parents, boundary


def read_blobs(git: Git, specs: Sequence[str]) -> list[bytes | None]:
    """Contents of ``<tree>:<path>``-style object names, one ``git cat-file --batch`` process.

    None for a name that does not resolve to a blob.
    """
    return _cat_file_batch(git, specs, b"blob")


def _cat_file_batch(git: Git, specs: Sequence[str], kind: bytes) -> list[bytes | None]:
    """The raw objects ``specs`` name, None where one is missing or not a ``kind``."""
    if not specs:
        return []
    return _parse_cat_file_batch(_cat_file_batch_output(git, specs), len(specs), kind)


def _cat_file_batch_output(git: Git, specs: Sequence[str]) -> bytes:
    data = "".join(f"{spec}\0" for spec in specs).encode()
    proc = subprocess.run(
        ["git", "cat-file", "--batch", "-z"],
        cwd=git.cwd,
        input=data,
        capture_output=True,
        env=git_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"git cat-file --batch failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _parse_cat_file_batch(out: bytes, expected: int, kind: bytes) -> list[bytes | None]:
    blobs: list[bytes | None] = []
    pos = 0
    while len(blobs) < expected:
        end = out.index(b"\n", pos)
        header = out[pos:end].split(b" ")
        pos = end + 1
        if len(header) != 3 or not header[2].isdigit():  # "<name> missing"
            blobs.append(None)
            continue
        size = int(header[2])
        body = out[pos : pos + size]
        pos += size + 1  # the content is followed by a newline
        blobs.append(body if header[1] == kind else None)
    return blobs


def snapshot_work(worktree: Path) -> tuple[str, str]:
    """(HEAD, snapshot): a commit of the work tree's tracked and untracked (not ignored) files.

    Works on a copy of the work tree's index (``GIT_INDEX_FILE``), so the
    agent's own index and files are never touched. The snapshot is HEAD
    itself when nothing is uncommitted.
    """
    git = Git(worktree)
    index, head, head_tree = git.out(
        "rev-parse", "--path-format=absolute", "--git-path", "index", "HEAD", "HEAD^{tree}"
    ).splitlines()
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="paradev-snapshot-") as tmp:
        temp_index = Path(tmp) / "index"
        if Path(index).exists():
            shutil.copyfile(index, temp_index)
        env = {"GIT_INDEX_FILE": str(temp_index)}
        git.run("add", "--all", "--", ".", env=env)
        tree = git.run("write-tree", env=env).stdout.strip()
    if tree == head_tree:
        return head, head
    commit = git.run(
        "commit-tree",
        tree,
        "-p",
        head,
        "-m",
        "paradev snapshot of uncommitted work",
        env=_SNAPSHOT_ENV,
    ).stdout.strip()
    return head, commit


def resolve_refs(git: Git, refs: Sequence[str]) -> dict[str, str]:
    """The commit each existing ref points at, one ``git for-each-ref`` for all of them."""
    if not refs:
        return {}
    out = git.out("for-each-ref", "--format=%(refname) %(objectname)", "--", *refs)
    found = dict(line.split(" ", 1) for line in out.splitlines() if line)
    return {ref: found[ref] for ref in refs if ref in found}


REPLACE_REFS = "refs/replace/"


def resolve_refs_of_plain_history(
    git: Git, refs: Sequence[str], common_dir: Path
) -> tuple[dict[str, str], bool]:
    """``resolve_refs``, and whether history here is what commit ids alone say it is.

    Replace refs, grafts and a shallow boundary make git walk another history
    behind the same ids, so answers cached by commit id (``paradev.commitcache``)
    are kept only when none is present. The replace refs come from the same
    ``for-each-ref``: no extra process.
    """
    return refs_of_plain_history(git.out(*plain_history_args(refs)), refs, common_dir)


def plain_history_args(refs: Sequence[str]) -> tuple[str, ...]:
    """The one ``for-each-ref`` of ``resolve_refs_of_plain_history`` (``status`` runs it
    beside its work trees' ``git status``)."""
    return ("for-each-ref", "--format=%(refname) %(objectname)", "--", *refs, REPLACE_REFS)


def refs_of_plain_history(
    out: str, refs: Sequence[str], common_dir: Path
) -> tuple[dict[str, str], bool]:
    """``resolve_refs_of_plain_history``'s answer from the output of its ``for-each-ref``."""
    found = dict(line.split(" ", 1) for line in out.splitlines() if line)
    rewritten = any(ref.startswith(REPLACE_REFS) for ref in found) or any(
        (common_dir / name).exists() for name in ("shallow", "info/grafts")
    )
    return {ref: found[ref] for ref in refs if ref in found}, not rewritten


def ref_stamp(common_dir: Path, ref: str) -> tuple[tuple[int, int, int, int] | None, ...] | None:
    """A token that changes whenever ``ref`` may have moved, with no git process: the identity
    of the files git keeps it in (git replaces them by rename). None for a ref store this does
    not know, or a ref name that is not a plain ``refs/...`` path."""
    if not ref.startswith("refs/") or ".." in ref.split("/"):
        return None
    if (common_dir / "reftable").exists():
        files = [common_dir / "reftable" / "tables.list"]
    else:
        files = [common_dir / ref, common_dir / "packed-refs"]
    stamps: list[tuple[int, int, int, int] | None] = []
    for file in files:
        try:
            st = os.stat(file)
        except FileNotFoundError:
            stamps.append(None)
            continue
        except OSError:
            return None
        stamps.append((st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size))
    return tuple(stamps) if any(stamps) else None


def merge_bases(git: Git, pairs: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Every best common ancestor (``merge-base --all``) of each pair; [] when unrelated.

    ``merge-base`` answers one pair per process, so the processes run side by
    side: many fork pairs then cost about as much as a few.
    """
    if not pairs:
        return []
    from concurrent.futures import ThreadPoolExecutor

    def ask(pair: tuple[str, str]) -> list[str]:
        proc = git.run("merge-base", "--all", pair[0], pair[1], check=False)
        return proc.stdout.split() if proc.returncode == 0 else []

    with ThreadPoolExecutor(max_workers=min(8, len(pairs))) as pool:
        return list(pool.map(ask, pairs))


# What a merge's result depends on besides the commits: the git version and these settings
# (conflict style moves hunk lines; rename and directory-rename settings change the outcome;
# merge drivers and attributes files change how contents merge).
_MERGE_SETTINGS = r"^(merge|diff)\.|^core\.(attributesfile|autocrlf|eol|ignorecase)$"


def start_merge_settings(git: Git) -> Callable[[], str]:
    """Start reading the merge settings; the call returns them with the git program's identity.

    The git process runs while the caller reads refs and diffs. The program is
    identified by its file (path, size, time) rather than a ``git version``
    process: any upgrade or rebuild changes it.
    """
    child = _start(git, "config", "--null", "--get-regexp", _MERGE_SETTINGS)

    def result() -> str:
        return f"{program_identity()}\0{child.communicate()[0]}"

    return result


def _start(git: Git, *args: str) -> subprocess.Popen[str]:
    """``git args`` running in the background, its stdout to be read with ``communicate``."""
    return subprocess.Popen(
        ["git", *args],
        cwd=git.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=git_env(),
    )


# -- landed work ---

ISSUE_TRAILER = "Paradev-Issue"


def landed_issues(git: Git, base: str) -> dict[int, tuple[str, str]]:
    """issue -> (commit, committer date) of the newest commit in ``base`` (a rev or range)
    with its trailer.

    The train writes ``Paradev-Issue: N`` into what it lands, so git itself
    remembers what landed even when the state is gone.
    """
    fmt = f"%H%x00%cI%x00%(trailers:key={ISSUE_TRAILER},valueonly,unfold,separator=%x2C)"
    proc = git.run(
        "log", f"--grep=^{ISSUE_TRAILER}:", "-i", f"--format={fmt}", base, "--", check=False
    )
    found: dict[int, tuple[str, str]] = {}
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        commit, date, values = line.split("\0", 2) if line.count("\0") == 2 else ("", "", "")
        for value in values.split(","):
            if value.strip().isdigit():
                found.setdefault(int(value.strip()), (commit, date))
    return found


# -- cleanup backups ---


def ignored_files(worktree: Path, folders: bool = False) -> list[str]:
    """Every ignored file in ``worktree`` (``.env``, ``build/...``): git keeps no copy of them.

    With ``folders``, a wholly ignored folder is one entry (``build/``), as git lists it.
    """
    collapse = ["--directory"] if folders else []
    out = Git(worktree).out(
        "ls-files", "-z", "--others", "--ignored", "--exclude-standard", *collapse, "--", "."
    )
    return [p for p in out.split("\0") if p]


def visible_files(worktree: Path, paths: Sequence[str]) -> list[tuple[str, bool]]:
    """The files under ``paths`` that git sees: (path, tracked) for tracked and for untracked,
    not ignored ones. Paths are taken literally (no glob), in one git process."""
    if not paths:
        return []
    out = Git(worktree).out(
        "--literal-pathspecs",
        "ls-files",
        "-z",
        "-t",
        "--cached",
        "--others",
        "--exclude-standard",
        "--",
        *paths,
    )
    return [(entry[2:], entry[0] != "?") for entry in out.split("\0") if entry]


def staged_tree(worktree: Path) -> str:
    """The tree of ``worktree``'s index as staged, written from a copy (never touching it)."""
    import shutil
    import tempfile

    git = Git(worktree)
    index = Path(git.out("rev-parse", "--path-format=absolute", "--git-path", "index"))
    with tempfile.TemporaryDirectory(prefix="paradev-index-") as tmp:
        copy = Path(tmp) / "index"
        if index.exists():
            shutil.copyfile(index, copy)
        return git.run("write-tree", env={"GIT_INDEX_FILE": str(copy)}).stdout.strip()


def refs_under(git: Git, prefix: str) -> list[tuple[str, str, int]]:
    """(ref, commit, committer time) of every ref below ``prefix``."""
    out = git.out(
        "for-each-ref", "--format=%(refname)%00%(objectname)%00%(committerdate:unix)", prefix
    )
    found: list[tuple[str, str, int]] = []
    for line in out.splitlines():
        ref, commit, when = line.split("\0")
        found.append((ref, commit, int(when or 0)))
    return found


# -- the report ---


class RangeStats(NamedTuple):
    """What a range of commits changed: the report's size of each landing."""

    commits: int
    files: int
    insertions: int
    deletions: int


def range_stats(path: Path, ranges: Sequence[tuple[str, str]]) -> list[RangeStats | None]:
    """``(old, new)`` -> the commits of ``old..new`` and their summed diff stats (GitPython).

    None where a commit no longer exists (say a pruned backup).
    """
    from git import BadName, GitCommandError

    stats: list[RangeStats | None] = []
    with open_repo(path) as repo:
        for old, new in ranges:
            try:
                commits = list(repo.iter_commits(f"{old}..{new}", max_count=500))
                totals = [commit.stats for commit in commits]
            except (BadName, ValueError, GitCommandError):
                stats.append(None)
                continue
            stats.append(
                RangeStats(
                    commits=len(commits),
                    files=len({name for s in totals for name in s.files}),
                    insertions=sum(s.total["insertions"] for s in totals),
                    deletions=sum(s.total["deletions"] for s in totals),
                )
            )
    return stats


# -- shared refs on the remote (state, leases): compare-and-swap, only ever forward ---


class PushRejected(NamedTuple):
    """Why the remote refused a compare-and-swap push (someone moved the ref first)."""

    reason: str


def fetch_ref(git: Git, remote: str, ref: str, tracking: str) -> str | None:
    """Copy the remote's ``ref`` to the local ``tracking`` ref; its commit, None if absent.

    One round trip. A ref the remote lacks deletes ``tracking`` (nothing stale stays).
    """
    proc = fetch_retrying(
        git, "--quiet", "--no-tags", "--no-write-fetch-head", "--end-of-options",
        remote, f"+{ref}:{tracking}",
    )  # fmt: skip
    if proc.returncode != 0:
        if "couldn't find remote ref" not in proc.stderr:
            raise GitError(_failure_message(("fetch", remote, ref), proc))
        git.run("update-ref", "-d", tracking)
        return None
    return git.rev(tracking)


def fetch_refspecs(git: Git, remote: str, refspecs: Sequence[str]) -> None:
    """One fetch of every refspec (one round trip however many refs it copies)."""
    proc = fetch_retrying(
        git, "--quiet", "--no-tags", "--no-write-fetch-head", "--end-of-options",
        remote, *refspecs,
    )  # fmt: skip
    if proc.returncode != 0:
        raise GitError(_failure_message(("fetch", remote), proc))


def remote_ref(git: Git, remote: str, ref: str) -> str | None:
    """What ``remote`` has for the full ref ``ref`` right now (ls-remote), None when absent."""
    out = git.out("ls-remote", "--", remote, ref)
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


def push_ref(git: Git, remote: str, commit: str, ref: str) -> None:
    """Create the remote's ``ref`` at ``commit`` (never forced; already there: nothing to do)."""
    git.run("push", "--quiet", "--end-of-options", remote, f"{commit}:{ref}")


def file_at(git: Git, commit: str, name: str) -> str | None:
    """The text of file ``name`` in ``commit``'s tree; None when the tree lacks it."""
    proc = git.run("cat-file", "blob", f"{commit}:{name}", check=False)
    return proc.stdout if proc.returncode == 0 else None


def commit_files(
    git: Git,
    files: Mapping[str, str],
    message: str,
    parent: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """A new commit (no ref moved) whose tree holds exactly ``files``, on top of ``parent``.

    ``env`` may set the author and committer (``GIT_AUTHOR_NAME``...). A random
    trailer makes every commit unique: two writers making the same change on
    the same parent in the same second would otherwise make the same commit,
    the second compare-and-swap push would find the ref already there and
    succeed, and one of the two changes would be lost.
    """
    import secrets

    entries = []
    for name, text in sorted(files.items()):
        blob = git.run("hash-object", "-w", "--stdin", input=text).stdout.strip()
        entries.append(f"100644 blob {blob}\t{name}\n")
    tree = git.run("mktree", input="".join(entries)).stdout.strip()
    parents = ["-p", parent] if parent else []
    message = f"{message.rstrip()}\n\nParadev-Write: {secrets.token_hex(8)}\n"
    return git.run("commit-tree", tree, *parents, "-m", message, env=env).stdout.strip()


def push_swap(git: Git, remote: str, ref: str, new: str, old: str | None) -> PushRejected | None:
    """Move the remote's ``ref`` to ``new`` only if it is still at ``old`` (absent: None).

    ``--force-with-lease`` is the compare and the swap in one step on the
    server; ``new`` always descends from ``old``, so a server that refuses
    non-fast-forwards accepts it. A refusal (someone pushed first, or holds
    the server's ref lock) comes back as PushRejected; anything else raises.
    """
    proc = git.run(
        "push", "--porcelain", "--atomic", "--quiet", f"--force-with-lease={ref}:{old or ''}",
        "--end-of-options", remote, f"{new}:{ref}", check=False,
    )  # fmt: skip
    if proc.returncode == 0:
        return None
    refused = [line for line in proc.stdout.splitlines() if line.startswith("!")]
    if refused:
        return PushRejected(refused[0].split("\t")[-1])
    raise GitError(_failure_message(("push", remote, ref), proc))


def clone_config(git: Git, key: str) -> str | None:
    """This clone's own setting ``key`` (``.git/config`` only), None when unset."""
    proc = git.run("config", "--local", "--get", "--end-of-options", key, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def set_clone_config(git: Git, key: str, value: str) -> None:
    """Remember ``key = value`` for this clone alone (never the user's global config)."""
    git.run("config", "--local", "--end-of-options", key, value)


# Unmerged index entries, as ``git status --porcelain`` names them.
_UNMERGED_CODES = frozenset({"DD", "AU", "UD", "UA", "DU", "AA", "UU"})


def unmerged_and_changes(worktree: Path) -> tuple[list[str], list[str]]:
    """(unmerged paths, every uncommitted path, untracked too) of a tree: one ``git status``."""
    entries = _status_entries(worktree, True, ())
    unmerged = sorted({path for code, path in entries if code in _UNMERGED_CODES})
    return unmerged, [path for _, path in entries]


def create_refs(git: Git, refs: Mapping[str, str], reason: str = "paradev") -> bool:
    """Create every one of ``refs`` at its commit, all or none (one ``update-ref --stdin``).

    False, nothing created, when one of them exists already.
    """
    lines = "".join(f"create {ref} {commit}\n" for ref, commit in refs.items())
    proc = git.run("update-ref", "-m", reason, "--stdin", input=lines, check=False)
    return proc.returncode == 0


# %B is a commit's message byte for byte; --date=raw keeps each date as stored.
_RANGE_FORMAT = "%H%n%T%n%P%n%an%n%ae%n%ad%n%cn%n%ce%n%cd%n%B"


def read_range(git: Git, base: str, head: str) -> list[tuple[str, RawCommit]]:
    """Each non-merge commit of ``base..head``, oldest first, with what a rewrite keeps of it.

    One ``git log`` (``commits_between`` and ``read_commits`` together), read as bytes:
    text mode would turn a message's carriage returns into newlines.
    """
    argv = ["log", "--reverse", "--no-merges", "-z", "--date=raw", f"--format={_RANGE_FORMAT}"]
    proc = subprocess.run(
        ["git", *argv, f"{base}..{head}", "--"],
        cwd=git.cwd,
        capture_output=True,
        env=git_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"git log {base}..{head} failed: {proc.stderr.decode(errors='replace')}")
    out = proc.stdout.decode("utf-8", GIT_TEXT_ERRORS)
    found: list[tuple[str, RawCommit]] = []
    for record in out.split("\0")[:-1]:  # each record ends with a NUL
        sha, tree, parents, *who, message = record.split("\n", 9)
        keys = [f"GIT_{w}_{k}" for w in ("AUTHOR", "COMMITTER") for k in ("NAME", "EMAIL", "DATE")]
        found.append(
            (sha, RawCommit(tree, parents.split(), dict(zip(keys, who, strict=True)), message))
        )
    return found


def write_commit_chain(
    git: Git, parent: str, commits: Sequence[RawCommit], objects: Path | None = None
) -> list[str]:
    """Write ``commits`` as a chain on ``parent`` (each the next one's parent): their ids.

    One ``git hash-object --stdin-paths`` for the whole chain, not one
    ``commit-tree`` per commit: the ids are computed here (each commit names
    its parent's), and git's own answer must agree. Identity and message are
    written exactly as given, as ``commit-tree`` writes them. ``objects``: the
    repository's object folder, to write them there with no git process at all
    (``write_loose_objects``).
    """
    import hashlib
    import tempfile

    if not commits:
        return []
    algorithm = hashlib.sha1 if len(parent) == 40 else hashlib.sha256
    bodies, ids = [], []
    for commit in commits:
        ident = commit.identity
        lines = [f"tree {commit.tree}", f"parent {parent}"]
        for who in ("AUTHOR", "COMMITTER"):
            name, email, date = (ident[f"GIT_{who}_{k}"] for k in ("NAME", "EMAIL", "DATE"))
            lines.append(f"{who.lower()} {name} <{email}> {date}")
        body = ("\n".join(lines) + "\n\n" + commit.message).encode("utf-8", GIT_TEXT_ERRORS)
        parent = algorithm(b"commit %d\0" % len(body) + body).hexdigest()
        bodies.append(body)
        ids.append(parent)
    if objects is not None:
        write_loose_objects(objects, "commit", bodies, ids)
        return ids
    with tempfile.TemporaryDirectory(prefix="paradev-commits-") as folder:
        files = [Path(folder) / f"{index}" for index in range(len(bodies))]
        for file, body in zip(files, bodies, strict=True):
            file.write_bytes(body)
        paths = "".join(f"{file}\n" for file in files)
        written = git.out(
            "hash-object", "-t", "commit", "-w", "--no-filters", "--stdin-paths", input=paths
        )
    if written.split() != ids:
        raise GitError(f"git wrote commits {written.split()} where {ids} were expected")
    return ids


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Independent calls (each its own git process) run side by side; results in order.

    The train's checks of one landing read different things (an index, a diff,
    a merge): on several cores their processes overlap instead of queueing.
    The last call runs in the calling thread: one thread fewer to start (a
    start waits until the new thread runs, about a millisecond on a busy
    machine). Every call has ended when this returns or raises its first error.
    """
    waits = [in_background(call) for call in calls[:-1]]
    results: list[Any] = []
    errors: list[BaseException] = []
    for get in [*calls[-1:], *waits]:
        try:
            results.append(get())
        except BaseException as exc:  # the others end first: none runs on behind the caller
            errors.append(exc)
    if errors:
        raise errors[0]
    return [*results[1:], *results[:1]]


def tips_and_ancestry(git: Git, base: str, branch: str) -> tuple[str, str, bool] | None:
    """(base's commit, branch's commit, whether base is already in the branch): one process.

    ``git rev-parse base...branch`` names both tips and their merge bases, so
    the question "does this branch need a rebase?" costs no ``merge-base``
    process of its own. None when either does not exist.
    """
    tips = tips_and_merge_base(git, base, branch)
    if tips is None:
        return None
    return tips.left, tips.right, tips.merge_base == tips.left


def trailers_appended(message: str, key: str, values: Sequence[str]) -> str | None:
    """``message`` ending in a new ``key: value`` trailer block, exactly as ``git
    interpret-trailers`` writes it; None when git must decide (the message may hold trailers).

    Sure only of the plain case, the usual one (saving a git process per
    landing): one final newline, and below the title no line that could be
    a trailer, comment, patch divider or blank-looking line git reads otherwise.
    (Under a ``trailer.*`` or ``core.commentChar`` setting git might lay it out
    otherwise; the message still ends in the same trailers, read back alike.)
    """
    if not message.endswith("\n") or message.endswith("\n\n") or "\r" in message:
        return None
    lines = message[:-1].split("\n")
    title_end = next((i for i, line in enumerate(lines) if not line), len(lines))
    if not lines[0] or any(line.strip() == "" and line for line in lines):
        return None  # no title, or whitespace-only lines: git's idea of a blank line
    if any(line.startswith(("#", "---")) for line in lines):
        return None  # comments and a patch's divider: git cuts the message there
    if any(_may_be_trailer(line) for line in lines[title_end:]):
        return None
    return message + "\n" + "".join(f"{key}: {value}\n" for value in values)


def _may_be_trailer(line: str) -> bool:
    return ":" in line or line.startswith(("(cherry picked from", " ", "\t"))


def rebase_range(worktree: Path, onto: str, upstream: str) -> bool:
    """``git rebase --onto onto upstream`` there: exactly the commits after ``upstream``.

    False when it stopped (a conflict, left in progress); a refusal (a dirty
    tree) raises, as ``rebase`` does.
    """
    args = ("rebase", "--no-update-refs", "--onto", onto, upstream)
    proc = Git(worktree).run("-c", "rebase.autoStash=false", *args, check=False)
    if proc.returncode == 0:
        return True
    if rebase_in_progress(worktree) is None:
        raise GitError(_failure_message(args, proc))
    return False


def push_refs(git: Git, remote: str, refs: Mapping[str, str]) -> None:
    """Create each of the remote's refs at its commit in one push (never forced).

    A ref already there at that commit is nothing to do.
    """
    if refs:
        specs = [f"{commit}:{ref}" for ref, commit in sorted(refs.items())]
        git.run("push", "--quiet", "--end-of-options", remote, *specs)


# -- git processes started now, read later --------------------------------------------------

STATUS_ARGS = gitdir.STATUS_ARGS


class Processes:
    """git processes run side by side, at most ``window`` at once, each read when asked.

    No thread per process (``side_by_side``): the caller starts them, goes on
    with its own work meanwhile, then reads each result in turn. ``status``
    overlaps its every work tree's ``git status`` with reading the refs and
    the state. Use as a context manager: processes left unread are stopped.
    """

    def __init__(
        self,
        jobs: Sequence[tuple[Path, Sequence[str]]],
        window: int = 16,
        early: Mapping[tuple[str, tuple[str, ...]], subprocess.Popen[str]] | None = None,
    ) -> None:
        self._jobs = jobs
        self._window = window
        self._env = git_env()
        self._early = dict(early or {})  # started before this was made: (folder, args) -> git
        self._started: list[subprocess.Popen[str] | OSError] = []
        self._start_up_to(window)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in [*self._started, *self._early.values()]:
            if isinstance(proc, subprocess.Popen) and proc.returncode is None:
                proc.kill()
                proc.communicate()

    def _start_up_to(self, count: int) -> None:
        for cwd, args in self._jobs[len(self._started) : count]:
            early = self._early.pop((str(cwd), tuple(args)), None)
            if early is not None:  # the very same git, already running
                self._started.append(early)
                continue
            try:
                self._started.append(start_git(cwd, args, self._env))
            except OSError as exc:  # git missing, or a work tree removed meanwhile
                self._started.append(exc)

    def result(self, index: int) -> subprocess.CompletedProcess[str]:
        """Job ``index``'s finished process (the next ones start); GitError when it failed."""
        self._start_up_to(index + 1 + self._window)
        proc = self._started[index]
        args = list(self._jobs[index][1])
        if isinstance(proc, OSError):
            raise GitError(f"cannot run git in {self._jobs[index][0]}: {proc.strerror or proc}")
        out, err = proc.communicate()
        done = subprocess.CompletedProcess(["git", *args], proc.returncode, out, err)
        if proc.returncode != 0:
            raise GitError(_failure_message(args, done))
        return done


def status_entries(out: str) -> list[tuple[str, str]]:
    """``git status --porcelain=v1 -z`` output as (two-letter status, path) of every path
    listed; a rename's or copy's origin is listed too, with the same status."""
    entries: list[tuple[str, str]] = []
    origin_of = ""
    for entry in out.split("\0"):
        if origin_of:  # a rename's or copy's original path: changed too
            entries.append((origin_of, entry))
            origin_of = ""
        elif len(entry) >= 4:
            entries.append((entry[:2], entry[3:]))
            origin_of = entry[:2] if entry[0] in "RC" else ""
    return entries


def dirty_and_untracked(out: str) -> tuple[bool, list[str]]:
    """(whether anything is uncommitted, the untracked paths), from the output of one
    ``git STATUS_ARGS``."""
    entries = status_entries(out)
    return bool(entries), [path for code, path in entries if code == "??"]


def write_loose_objects(
    objects: Path, kind: str, bodies: Sequence[bytes], ids: Sequence[str]
) -> None:
    """Store each of ``bodies`` as the loose ``kind`` object ``ids[i]`` under ``objects``.

    What ``git hash-object -w`` does, without its process (a merge train writes
    each landing's commits): zlib-deflated ``<kind> <size>\\0<body>`` in
    ``objects/<2 hex>/<rest>``, read-only, written under a temporary name and
    renamed into place. Not synced, as git's own default; the ref update that
    names them reads each one.
    """
    import zlib

    for body, oid in zip(bodies, ids, strict=True):
        path = objects / oid[:2] / oid[2:]
        if path.exists():
            continue
        if not path.parent.is_dir():  # made as git makes it: with the object folder's mode
            path.parent.mkdir(exist_ok=True)  # (a shared repository's group bits too)
            os.chmod(path.parent, stat.S_IMODE(objects.stat().st_mode))
        data = zlib.compress(b"%s %d\0" % (kind.encode(), len(body)) + body, 1)
        temporary = path.parent / f"tmp_obj_paradev_{os.getpid()}_{oid[:12]}"
        temporary.unlink(missing_ok=True)  # a killed earlier run's (read-only: not reopened)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, path)  # the same bytes as any copy already there
        finally:
            temporary.unlink(missing_ok=True)


_HEX = frozenset("0123456789abcdef")


def loose_refs(common_dir: Path, refs: Sequence[str]) -> dict[str, str] | None:
    """The object each of ``refs`` points at, read from git's loose ref files: no process.

    A loose ref file, while it exists, is what git itself answers (packing
    writes ``packed-refs`` before it deletes the loose file). None when any
    of them is not a plain loose file (packed, symbolic, missing, a reftable
    store, a name outside ``refs/``): ask git then (``resolve_refs``).
    """
    return refs_from_files(common_dir, refs, packed=False)


def in_background(call: Callable[[], _R]) -> Callable[[], _R]:
    """``call`` started now in a thread of its own (its git process runs meanwhile); the
    function returned waits for it and gives its result, or raises what it raised.

    Not a daemon: a process leaving early still waits for the git child it started.
    The wait is on an event, not ``Thread.join``: a join cut short by a signal
    (Python 3.11) marks the thread ended while it still runs, so a second wait,
    after an interrupt, would not wait at all.
    """
    import threading

    outcome: list[Any] = []
    done = threading.Event()

    def work() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the caller of the wait
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=work, name="paradev-background").start()

    def wait() -> _R:
        done.wait()
        ok, value = outcome[0]
        if not ok:
            raise value
        result: _R = value
        return result

    return wait


def changes_held(git: Git, old: str, new: str, target: str, paths: Sequence[str]) -> list[str]:
    """The ``paths`` whose change ``old`` -> ``new`` ``target`` still holds, whatever else it has.

    A three-way merge calls a change lost when the target changed the same
    lines further (an agent handed a conflict back adds more next to its own
    work); the change reapplied in reverse to the target's version proves it
    is there: every line it adds or removes, with two lines of context (``-C2``
    also frees a hunk at a file's start or end to match further in). Checked
    in a throwaway index, path by path (only paths already suspected come
    here: a handful).
    """
    import tempfile

    found: list[str] = []
    with tempfile.TemporaryDirectory(prefix="paradev-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git.run("read-tree", target, env=env)
        for path in paths:
            patch = git.run(
                "diff", "--binary", "--full-index", "--no-renames", "--no-color", "--no-ext-diff",
                "--src-prefix=a/", "--dst-prefix=b/", old, new, "--", f":(literal){path}",
            ).stdout  # fmt: skip
            check = ("apply", "--cached", "--check", "--reverse", "-C2", "--whitespace=nowarn", "-")
            if patch and git.run(*check, input=patch, env=env, check=False).returncode == 0:
                found.append(path)
    return found


WORKTREE_LOCK_SECONDS = 120.0


@contextmanager
def adding_worktrees(common_dir: Path) -> Iterator[None]:
    """Held by a paradev process while it prunes or adds worktree records.

    ``paradev run`` opens lanes while its merge train adds gate slots: git reads
    every record while it adds one (a record half written by the other fails it),
    and a prune may remove a record the other is writing.
    """
    from paradev.lockfile import LockBusyError, LockFile

    path = common_dir / STORE_DIR / "worktree-add.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = LockFile(str(path), timeout=WORKTREE_LOCK_SECONDS)
    try:
        lock.acquire()
    except LockBusyError as exc:
        raise PreconditionError(
            f"another paradev process held {path} for {WORKTREE_LOCK_SECONDS:g}s; "
            "if none runs, remove that file and try again"
        ) from exc
    try:
        yield
    finally:
        lock.release()


LOOSE_RANGE_LIMIT = 1000  # commits read from loose objects before git is asked instead
_PLAIN_IDENT = re.compile(r"(\S(?:[^<>\n]*\S)?) <([^<>\n]*)> ((?:0|[1-9][0-9]*) [+-][0-9]{4})")


def read_loose_range(objects: Path, base: str, head: str) -> list[tuple[str, RawCommit]] | None:
    """``read_range(base..head)`` with no git process: the commits a rebase just wrote.

    Read from their loose object files under ``objects`` (zlib, checked
    against their ids), following the one parent of each from ``head`` back
    to ``base``. None whenever only git can answer alike: an object packed,
    missing or damaged, a merge or a root commit, a header beyond tree,
    parent, author and committer (an ``encoding`` git would re-encode, a
    signature), an identity or date git would print otherwise, or more than
    ``LOOSE_RANGE_LIMIT`` commits.
    """
    import hashlib
    import zlib

    algorithm = hashlib.sha1 if len(head) == 40 else hashlib.sha256
    found: list[tuple[str, RawCommit]] = []
    commit = head
    while commit != base:
        if len(found) >= LOOSE_RANGE_LIMIT or not _HEX.issuperset(commit):
            return None
        try:
            data = zlib.decompress((objects / commit[:2] / commit[2:]).read_bytes())
        except (OSError, ValueError, zlib.error):
            return None
        header, _, body = data.partition(b"\0")
        if header != b"commit %d" % len(body) or algorithm(data).hexdigest() != commit:
            return None
        raw = _plain_commit(body, commit)
        if raw is None or len(raw.parents) != 1:
            return None
        found.append((commit, raw))
        commit = raw.parents[0]
    found.reverse()
    return found


def _plain_commit(body: bytes, name: str) -> RawCommit | None:
    """The commit ``body`` as ``read_range`` gives it, or None when git would print it otherwise."""
    headers = body.partition(b"\n\n")[0].decode("utf-8", GIT_TEXT_ERRORS).split("\n")
    keys = [line.split(" ", 1)[0] for line in headers]
    wanted = ["tree", *["parent"] * (len(keys) - 3), "author", "committer"]
    if keys != wanted:
        return None
    for line in headers[-2:]:
        ident = _PLAIN_IDENT.fullmatch(line.split(" ", 1)[1])
        if ident is None or ident[3].endswith(" -0000"):
            return None
    return _raw_commit(body, name)


def refs_from_files(
    common_dir: Path, refs: Sequence[str], *, packed: bool = True
) -> dict[str, str] | None:
    """``resolve_refs`` with no git process: each ref's loose file, else its line in
    ``packed-refs`` (a loose file wins, as in git); refs in neither do not exist.

    None when git must answer: a reftable store, a name outside ``refs/``, a
    symbolic or unreadable ref file, a ``packed-refs`` this does not read
    (``packed`` False: any ref without a loose file, see ``loose_refs``).
    """
    if (common_dir / "reftable").exists():
        return None
    found: dict[str, str] = {}
    missing: list[str] = []
    for ref in refs:
        if not ref.startswith("refs/") or ".." in ref.split("/"):
            return None
        try:
            sha = (common_dir / ref).read_bytes().decode("ascii").strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            missing.append(ref)
            continue
        except (OSError, UnicodeDecodeError):
            return None
        if len(sha) not in (40, 64) or not _HEX.issuperset(sha):
            return None
        found[ref] = sha
    if missing and not packed:
        return None
    in_pack = _packed_refs(common_dir, set(missing)) if missing else {}
    return None if in_pack is None else found | in_pack


def _packed_refs(common_dir: Path, wanted: set[str]) -> dict[str, str] | None:
    """The ``wanted`` refs ``packed-refs`` holds (none: no such file); None if unreadable."""
    try:
        text = (common_dir / "packed-refs").read_bytes().decode("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError):
        return None
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(("#", "^")):  # the header, a tag's peeled commit
            continue
        sha, _, name = line.partition(" ")
        if len(sha) not in (40, 64) or not _HEX.issuperset(sha) or not name:
            return None
        if name in wanted:
            found[name] = sha
    return found


def resolve_refs_from_files(git: Git, common_dir: Path, refs: Sequence[str]) -> dict[str, str]:
    """``resolve_refs``: from the ref files as a rule (``refs_from_files``), else git."""
    found = refs_from_files(common_dir, refs)
    return found if found is not None else resolve_refs(git, refs)


# ``-c`` options for paradev's own git commands that would start git's automatic
# maintenance (a ``git maintenance run --auto`` process) after they end.
NO_AUTO_MAINTENANCE = ("-c", "maintenance.auto=false", "-c", "gc.auto=0")


def write_probe(objects: Path, tree: str, parent: str) -> str:
    """``probe_merge``'s synthetic commit (``tree`` on ``parent``), written under ``objects``
    with no git process (``write_loose_objects``): only a merge base for ``merge-tree``, no ref
    ever names it. Dated now, as ``commit-tree`` dates it: git's merge-base walk goes from the
    newest commit down, and an older probe would send it through the whole history first."""
    import hashlib
    import time

    algorithm = hashlib.sha1 if len(parent) == 40 else hashlib.sha256
    ident = f"paradev <paradev@invalid> {int(time.time())} +0000"
    body = f"tree {tree}\nparent {parent}\nauthor {ident}\ncommitter {ident}\n\n"
    data = (body + "paradev: merge probe\n").encode()
    oid = algorithm(b"commit %d\0" % len(data) + data).hexdigest()
    write_loose_objects(objects, "commit", [data], [oid])
    return oid


def add_unchecked_worktree(git: Git, path: Path, commit: str) -> None:
    """A work tree at ``path``, on ``commit`` detached, no file written yet (nor an index): its
    first ``checkout_detached`` writes them. One git process less than a checked-out one."""
    git.run(
        "worktree",
        "add",
        "--quiet",
        "--detach",
        *_FORCE_TWICE,
        "--no-checkout",
        "--",
        str(path),
        commit,
    )
