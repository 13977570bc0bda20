"""Each work tree's uncommitted paths below the paths ``check`` asks about, kept between runs.

``check`` runs before every edit an agent makes and asks every other work
tree a path-limited ``git status``: ~8 ms of CPU each (git starting and
reading the index), most of ``check``'s time. Between two checks most trees
have not changed, so git's answer is kept with a *key*: the identity (inode,
mode, size, modification and change times) of every file the answer depends
on — the tree's HEAD and the ref it names, its index, every entry at or
below the paths asked (so a created, deleted or edited file is seen), the
ignore and attribute files that decide what is untracked or changed, and the
config files and variables git reads. A tree whose key is unchanged gets the
kept answer; any other is asked again.

A file written twice within one tick of the file system's clock keeps its
size and times: like git's racy-clean rule, no answer is kept while any of
those files is younger than ``RACY_MARGIN_NS`` before the moment it is asked.
Whenever the key cannot be made exactly (the whole tree, a large directory,
a submodule, config includes, a ref store this module does not know, an
unreadable file), git is asked and nothing is kept.
"""

from __future__ import annotations

import os
import time
from stat import S_ISDIR

from paradev.kept import NotKeyableError, Stamps, figures, load, save
from paradev.layout import STORE_DIR

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TypeAlias

    StrPath: TypeAlias = "str | os.PathLike[str]"

CACHE_FILE = "dirty-paths.kept"  # under <common>/paradev (paradev.kept's format)
MAX_ENTRIES = 2_000  # below the paths asked; beyond that git is asked (and is about as fast)
KEPT_ANSWERS = 512  # (tree, paths) answers a save keeps, the most recently asked last
_VERSION = 3  # 3: in paradev.kept's format


# git variables that change nothing ``git status`` says (who commits, tracing, prompts): agents
# that differ only in them share the kept answers.
_INERT_ENV = (
    "GIT_AUTHOR_",
    "GIT_COMMITTER_",
    "GIT_TRACE",
    "GIT_TERMINAL_PROMPT",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "GIT_PAGER",
    "GIT_ASKPASS",
    "GIT_SSH",
    "GIT_MERGE_AUTOEDIT",
    "GIT_REFLOG_ACTION",
)


def shared_key(common_dir: StrPath, since_ns: int, env: dict[str, str] | None = None) -> str:
    """What every tree's answer depends on alike: git's config, global ignores, git itself."""
    from paradev.gitdir import git_env, git_program

    env = git_env() if env is None else env  # what git sees
    stamps = Stamps(since_ns)
    stamps.parts += sorted(
        f"{name}={value}"
        for name, value in env.items()
        if (name.startswith("GIT_") and not name.startswith(_INERT_ENV))
        or name in ("HOME", "XDG_CONFIG_HOME")
    )
    program = git_program(env.get("PATH", os.defpath))  # the git that answers
    if program is None:
        raise NotKeyableError("no git on PATH")
    stamps.file(program)
    home = env.get("HOME", "")
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    configs = [os.path.join(common_dir, "config")]
    if env.get("GIT_CONFIG_GLOBAL"):
        configs.append(env["GIT_CONFIG_GLOBAL"])
    else:
        configs += [os.path.join(home, ".gitconfig"), os.path.join(xdg, "git", "config")]
    if env.get("GIT_CONFIG_NOSYSTEM", "").lower() not in ("1", "true", "yes", "on"):
        prefix = os.path.dirname(os.path.dirname(program))  # a git installed under PREFIX
        configs += [env.get("GIT_CONFIG_SYSTEM") or "/etc/gitconfig"]
        configs += [os.path.join(prefix, "etc", "gitconfig")]
    for config in configs:
        _config_file(stamps, config, home)
    for name in ("info/exclude", "info/attributes", "info/sparse-checkout"):
        stamps.file(os.path.join(common_dir, name))
    for name in ("ignore", "attributes"):
        stamps.file(os.path.join(xdg, "git", name))
    if os.path.exists(os.path.join(common_dir, "reftable")):
        raise NotKeyableError("refs kept in a reftable")
    return stamps.key()


def _config_file(stamps: Stamps, path: str, home: str) -> None:
    """A config file's identity, and the ignore/attribute files it names.

    An include may pull in any file, on conditions git alone evaluates: then
    nothing is kept. A value this simple reading cannot be sure of neither.
    """
    text = stamps.text(path)
    if "include" in text.lower():
        raise NotKeyableError(f"{path} includes other config files")
    for line in text.splitlines():
        name, equals, value = line.partition("=")
        if equals and any(word in name.lower() for word in ("excludesfile", "attributesfile")):
            value = value.strip()
            if any(c in value for c in '"\\;#') or not value:
                raise NotKeyableError(f"{path} names an ignore file this reading cannot be sure of")
            if value.startswith("~/"):
                value = os.path.join(home, value[2:])
            if not os.path.isabs(value):
                raise NotKeyableError(f"{path} names a relative ignore file")
            stamps.file(value)


def tree_key(tree: StrPath, common_dir: StrPath, within: Sequence[str], since_ns: int) -> str:
    """What one tree's answer below ``within`` depends on (NotKeyableError: not exactly known)."""
    top = str(tree)
    stamps = Stamps(since_ns, top + os.sep)
    gitdir = _gitdir(stamps, top)
    head = stamps.text(os.path.join(gitdir, "HEAD")).strip()
    if head.startswith("ref: "):
        ref = head[5:]
        if not ref.startswith("refs/") or ".." in ref.split("/"):
            raise NotKeyableError(f"HEAD names {ref}")
        for file in (os.path.join(common_dir, ref), os.path.join(common_dir, "packed-refs")):
            stamps.file(file)
    stamps.parts.append(f"HEAD={head}")
    for name in ("index", "config.worktree", "info/exclude", "info/sparse-checkout"):
        stamps.file(os.path.join(gitdir, name))
    stamps.parts.append(f"paths={within!r}")
    for path in within:
        _path(stamps, top, path)
    return stamps.key()


def _gitdir(stamps: Stamps, top: str) -> str:
    """The tree's own git dir, from its ``.git`` file (a linked work tree) or folder."""
    dot_git = os.path.join(top, ".git")
    st = stamps.file(dot_git)
    if st is None:
        raise NotKeyableError(f"{top} has no .git")
    if os.path.isdir(dot_git):
        return dot_git
    text = stamps.text(dot_git)
    if not text.startswith("gitdir: "):
        raise NotKeyableError(f"{dot_git} names no git dir")
    return os.path.join(top, text[8:].strip())


def _path(stamps: Stamps, top: str, path: str) -> None:
    """The folders on the way to ``path`` (and their ignore files), then ``path`` and below."""
    if not path or path in (".", "/") or path.startswith("/"):
        raise NotKeyableError("the whole tree is asked")
    parts = path.split("/")
    if any(part in ("", ".", "..", ".git") for part in parts):
        raise NotKeyableError(f"{path} is not a plain path")
    folder = top
    for part in ["", *parts[:-1]]:
        folder = os.path.join(folder, part) if part else folder
        if stamps.identity(folder) is None:
            return  # nothing below a missing folder; its creation changes the key
        for name in (".gitignore", ".gitattributes"):
            stamps.file(os.path.join(folder, name))
        if part and os.path.lexists(os.path.join(folder, ".git")):
            raise NotKeyableError(f"{folder} is a submodule or another repository")
    target = os.path.join(top, path)
    st = stamps.file(target)
    if st is not None and S_ISDIR(st.st_mode):
        _below(stamps, target)


def _below(stamps: Stamps, folder: str) -> None:
    """Every entry below ``folder``, folders included (a created file changes its folder).

    The one loop that runs per file (a hundred or more), so it is kept tight.
    """
    todo = [folder]
    seen = 0
    racy_after, parts, cut = stamps.racy_after, stamps.parts, len(stamps.root)
    while todo:
        current = todo.pop()
        try:
            with os.scandir(current) as listing:
                entries = sorted((entry.name, entry) for entry in listing)
            seen += len(entries)
            if seen > MAX_ENTRIES:
                raise NotKeyableError(f"more than {MAX_ENTRIES} entries below {folder}")
            for name, entry in entries:
                if name == ".git":
                    raise NotKeyableError(f"{current} is a submodule or another repository")
                st = entry.stat(follow_symlinks=False)
                if st.st_mtime_ns >= racy_after or st.st_ctime_ns >= racy_after:
                    raise NotKeyableError(f"{entry.path} changed moments ago")
                parts.append((entry.path[cut:], *figures(st)))
                if S_ISDIR(st.st_mode):
                    todo.append(entry.path)
        except OSError as exc:
            raise NotKeyableError(str(exc)) from None


class DirtyCache:
    """The kept answers: (tree, paths asked) -> (key, uncommitted paths), all under one
    shared key (``shared_key``): when it changes, every answer is dropped."""

    def __init__(self, path: str, shared: str) -> None:
        self.path, self.shared = path, shared
        self._kept = _load(path, shared)
        self._new: dict[str, tuple[str, list[str]]] = {}

    @staticmethod
    def slot(tree: str, within: Sequence[str]) -> str:
        return "\0".join([tree, *within])

    def get(self, slot: str, key: str) -> set[str] | None:
        """The answer kept for ``slot`` under exactly ``key``; None otherwise."""
        found = self._kept.get(slot)
        if (
            isinstance(found, tuple)
            and len(found) == 2
            and found[0] == key
            and isinstance(found[1], list)
            and all(isinstance(path, str) for path in found[1])
        ):
            return set(found[1])
        return None

    def put(self, slot: str, key: str, answer: set[str]) -> None:
        self._new[slot] = (key, sorted(answer))

    def save(self) -> None:
        """Replace the file when something was learnt (``paradev.kept.save``)."""
        if not self._new:
            return
        kept = {slot: answer for slot, answer in self._kept.items() if slot not in self._new}
        kept.update(self._new)  # the most recently learnt last
        answers = {slot: kept[slot] for slot in list(kept)[-KEPT_ANSWERS:]}
        save(self.path, (_VERSION, self.shared, answers))
        self._new = {}


def _load(path: str, shared: str) -> dict[str, object]:
    """The kept answers; nothing when the file is missing, corrupt, not of our making or
    kept under another shared key."""
    data = load(path)
    if not isinstance(data, tuple) or len(data) != 3 or data[:2] != (_VERSION, shared):
        return {}
    return data[2] if isinstance(data[2], dict) else {}


class KeptDirt:
    """Kept answers for one ``check``: looked up per tree, learnt from git for the others."""

    def __init__(self, common_dir: StrPath, within: Sequence[str]) -> None:
        self.common_dir, self.within = os.fspath(common_dir), list(within)
        self.since = time.time_ns()  # before any file is looked at (the racy rule's moment)
        self._keys: dict[str, str] = {}
        try:
            shared = shared_key(self.common_dir, self.since)
        except NotKeyableError:
            self.cache: DirtyCache | None = None
        else:
            self.cache = DirtyCache(os.path.join(self.common_dir, STORE_DIR, CACHE_FILE), shared)

    def get(self, tree: StrPath) -> set[str] | None:
        """The tree's kept answer when nothing it depends on changed since; else None.

        The key is taken now, before git is asked: whatever changes after it
        changes the key, so an answer is never kept for a state it does not
        describe.
        """
        if self.cache is None:
            return None
        top = os.fspath(tree)
        try:
            key = tree_key(top, self.common_dir, self.within, self.since)
        except NotKeyableError:
            return None
        self._keys[top] = key
        return self.cache.get(self.cache.slot(top, self.within), key)

    def learn(self, tree: StrPath, answer: set[str]) -> None:
        """Keep git's answer for the tree, when its key was taken before git was asked."""
        top = os.fspath(tree)
        if self.cache is not None and top in self._keys:
            self.cache.put(self.cache.slot(top, self.within), self._keys[top], answer)

    def save(self) -> None:
        if self.cache is not None:
            self.cache.save()
