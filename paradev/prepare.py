"""Worktrees ready to work: ``[setup]`` copies, the setup command, and ``PARADEV_PORT``.

An agent's worktree (and a merge-queue gate worktree) is a fresh checkout:
the ignored files a project needs (``.env``, local settings) are missing, and
what must point at its own folder (a virtual environment, node_modules) has
to be built in each one. ``prepare_worktree`` copies the first from the main
worktree and runs ``[setup] command`` in the worktree, again only when the
files in ``[setup] inputs`` (lockfiles) changed since its last successful
run. The record of that run lives in the worktree's own git dir, so it is
never committed and goes away with the worktree.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from paradev import processes
from paradev.atomic import write_atomic
from paradev.errors import PreconditionError
from paradev.git import ignored_files, user_env, visible_files, worktree_git_dir
from paradev.limits import MAX_PORT, LimitError, read_bounded
from paradev.plan import Plan
from paradev.workspace import Workspace

SETUP_RECORD = "paradev-setup.json"  # in the worktree's own git dir
MAX_RECORD_BYTES = 1_000_000
FICLONE = 0x40049409  # Linux ioctl: the new file shares the source's blocks (btrfs, XFS, ...)
_CHUNK = 1 << 20

Notify = Callable[[str], None]


@dataclass(frozen=True)
class SetupConfig:
    """The ``[setup]`` table of a plan, typed."""

    copy: tuple[str, ...]
    link: bool
    command: tuple[str, ...]
    inputs: tuple[str, ...]
    timeout: float
    port_base: int
    port_step: int

    @classmethod
    def of(cls, plan: Plan) -> SetupConfig:
        table = plan.section("setup")
        return cls(
            copy=tuple(os.path.normpath(entry) for entry in table["copy"]),  # "./x/" is "x"
            link=bool(table["link"]),
            command=tuple(table["command"]),
            inputs=tuple(os.path.normpath(entry) for entry in table["inputs"]),
            timeout=float(table["timeout"]),
            port_base=int(table["port_base"]),
            port_step=int(table["port_step"]),
        )


# -- ports -----------------------------------------------------------------------------------


def port_for(plan: Plan, number: int) -> int | None:
    """``port_base + number * port_step``; None when ``port_base`` is 0 (no ports handed out).

    ``number`` is the agent number for agent worktrees and ``gate_number`` for
    gate worktrees, so dev servers and test databases never share a port.
    """
    config = SetupConfig.of(plan)
    if not config.port_base:
        return None
    port = config.port_base + number * config.port_step
    if not 0 < port <= MAX_PORT:
        raise PreconditionError(
            f"setup.port_base: worktree number {number} would get port {port}, outside "
            f"1..{MAX_PORT}; lower setup.port_base or setup.port_step in plan.toml"
        )
    return port


def gate_number(plan: Plan, slot: int) -> int:
    """The port number of gate slot ``slot`` (1, 2, ...): after every agent's."""
    return plan.agent_count + slot


def with_port(env: dict[str, str], plan: Plan, number: int) -> dict[str, str]:
    """``env`` with this worktree's PARADEV_PORT, or without one inherited from elsewhere."""
    port = port_for(plan, number)
    if port is None:
        env.pop("PARADEV_PORT", None)
    else:
        env["PARADEV_PORT"] = str(port)
    return env


# -- the outcome -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What preparing one worktree did."""

    worktree: Path
    copied: tuple[str, ...]  # [setup] copy entries placed this time (existing ones are kept)
    ran: bool  # the setup command ran (and passed)
    why: str  # why it ran, or why not
    log: Path | None


class SetupError(PreconditionError):
    """The setup command exited non-zero (or timed out) in a worktree: exit 2."""

    def __init__(self, worktree: Path, command: Iterable[str], code: int | None, log: Path):
        self.worktree, self.code, self.log = worktree, code, log
        how = "timed out" if code is None else f"exited {code}"
        super().__init__(
            f"setup command {list(command)!r} {how} in {worktree}; log: {log}. "
            "Fix the cause (or setup.command in plan.toml) and run the paradev command again"
        )


# -- preparing -------------------------------------------------------------------------------


def prepare_worktree(
    ws: Workspace,
    path: Path,
    number: int,
    *,
    log: Path | None = None,
    notify: Notify | None = None,
) -> Prepared:
    """Copy the ``[setup] copy`` files into ``path`` and run the setup command when needed.

    ``number`` gives the worktree its PARADEV_PORT (see ``port_for``). Raises
    PreconditionError when a copy source is missing, tracked or outside the
    repository, and SetupError when the command fails; ``log`` defaults to
    ``<common dir>/paradev/logs/setup-<folder name>.log``. ``notify`` hears
    what was copied and, before it starts, why the command runs.
    """
    say = notify or _quiet
    if not (path / ".git").exists():
        raise PreconditionError(f"{path} is not a git worktree; run 'paradev setup'")
    config = SetupConfig.of(ws.plan)
    copied = copy_files(ws.repo.main_root, path, config) if config.copy else ()
    if copied:
        say("copied " + ", ".join(copied))
    if not config.command:
        return Prepared(path, copied, False, "no setup command", None)
    log = log or setup_log(ws, path)
    record = worktree_git_dir(path) / SETUP_RECORD
    with _worktree_lock(record, path, config.timeout):  # read after another run has finished
        why = why_outdated(read_record(record), fingerprint(ws.plan, path, number))
        if why is None:
            return Prepared(path, copied, False, "up to date", None)
        made = _made_before(record)
        before = set(ignored_files(path, folders=True))
        write_record(record, {"exit": None, "made": made})  # killed: it runs again next time
        say(f"running the setup command ({why}; log {log})")
        env = with_port(user_env({"PARADEV_WORKTREE": str(path)}), ws.plan, number)
        code = run_logged(config.command, path, env, log, config.timeout, why)
        if code != 0:
            write_record(record, {"exit": code, "made": made})
            raise SetupError(path, config.command, code, log)
        made = sorted({*made, *(set(ignored_files(path, folders=True)) - before)})
        wanted = fingerprint(ws.plan, path, number)  # the inputs as the run left them
        write_record(record, {**wanted, "exit": 0, "made": made})
    return Prepared(path, copied, True, why, log)


def prepare_agents(ws: Workspace, agents: Iterable[int], notify: Notify) -> list[Prepared]:
    """Prepare each agent's worktree in turn (``paradev setup``); stop at the first failure."""
    done = []
    for agent in agents:
        prepared = prepare_worktree(ws, ws.worktree(agent), agent, notify=as_agent(agent, notify))
        if prepared.why == "up to date":
            notify(f"agent {agent}: setup up to date")
        done.append(prepared)
    return done


def as_agent(agent: int, notify: Notify) -> Notify:
    """``notify`` with each line said as agent ``agent``'s."""
    return lambda text: notify(f"agent {agent}: {text}")


def _quiet(text: str) -> None:
    """Nobody listens."""


def check_copy_sources(ws: Workspace) -> None:
    """Refuse (exit 2) ``[setup] copy`` entries that cannot be copied, before anything changes."""
    entries = SetupConfig.of(ws.plan).copy
    if entries:
        check_sources(ws.repo.main_root, entries)


def setup_outdated(ws: Workspace, path: Path, number: int) -> str | None:
    """Why the setup of worktree ``path`` is out of date (for doctor); None when it is not."""
    config = SetupConfig.of(ws.plan)
    missing = [c for c in config.copy if not os.path.lexists(path / c)]
    if missing and (ws.repo.main_root / missing[0]).exists():
        return f"{', '.join(missing)} not copied"
    if not config.command:
        return None
    record = read_record(worktree_git_dir(path) / SETUP_RECORD)
    return why_outdated(record, fingerprint(ws.plan, path, number))


def setup_log(ws: Workspace, path: Path) -> Path:
    return ws.store.dir / "logs" / f"setup-{path.name}.log"


# -- the setup command -----------------------------------------------------------------------


def fingerprint(plan: Plan, path: Path, number: int) -> dict[str, Any]:
    """What the setup command's result depends on: the command, the port, the inputs' hashes."""
    config = SetupConfig.of(plan)
    return {
        "command": list(config.command),
        "port": port_for(plan, number),
        "inputs": {name: file_hash(path / name) for name in config.inputs},
    }


def file_hash(path: Path) -> str | None:
    """sha256 of a file's bytes; None when it does not exist (a lockfile not made yet).

    Only a regular file is read: a folder, or a FIFO or device a branch put
    there, is refused rather than read forever.
    """
    import hashlib  # OpenSSL's load (~4 ms): only for a [setup] command's inputs

    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PreconditionError(
            f"setup.inputs: {path} is not a regular file; list the files whose change "
            "needs a new setup run (lockfiles such as uv.lock)"
        )
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def why_outdated(record: dict[str, Any] | None, wanted: dict[str, Any]) -> str | None:
    """Why the command must run (again), or None when its last run still holds."""
    if record is None:
        return "never ran in this worktree"
    if record.get("exit", 0) != 0:
        code = record.get("exit")
        return "its last run did not finish" if code is None else f"its last run exited {code}"
    if record.get("command") != wanted["command"]:
        return "setup.command changed"
    if record.get("port") != wanted["port"]:
        return "PARADEV_PORT changed"
    before = record.get("inputs")
    before = before if isinstance(before, dict) else {}
    changed = [name for name, digest in wanted["inputs"].items() if before.get(name) != digest]
    if changed:
        return "changed: " + ", ".join(changed)
    return None


def made_by_setup(worktree: Path) -> list[str]:
    """The ignored files and folders (``.venv/``) the setup command made in ``worktree``.

    cleanup needs no backup of them: set-up makes them again.
    """
    return _made_before(worktree_git_dir(worktree) / SETUP_RECORD)


def _made_before(record: Path) -> list[str]:
    made = (read_record(record) or {}).get("made")
    return [m for m in made if isinstance(m, str)] if isinstance(made, list) else []


def read_record(path: Path) -> dict[str, Any] | None:
    """The last successful run's fingerprint; None when absent or unreadable (run again)."""
    try:
        data = json.loads(read_bounded(path, MAX_RECORD_BYTES, str(path)))
    except (OSError, LimitError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps({**data, "at": time.time()}, indent=1), durable=False)


@contextmanager
def _worktree_lock(record: Path, worktree: Path, timeout: float) -> Iterator[None]:
    """One setup run per worktree at a time (``paradev setup`` beside ``run-batch``)."""
    from paradev.lockfile import LockBusyError, LockFile

    lock = LockFile(str(record.with_name(record.name + ".lock")), timeout=timeout)
    try:
        lock.acquire()
    except LockBusyError:
        raise PreconditionError(
            f"another paradev has been running the setup command in {worktree} for over "
            f"{timeout:g}s; wait for it to finish"
        ) from None
    try:
        yield
    finally:
        lock.release()


def run_logged(
    argv: Iterable[str], cwd: Path, env: dict[str, str], log: Path, timeout: float, why: str
) -> int | None:
    """Run ``argv`` (no shell) in ``cwd``, output appended to ``log``; None when it timed out."""
    argv = list(argv)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(
            f"=== paradev {time.strftime('%Y-%m-%dT%H:%M:%S')}: {argv!r} in {cwd}"
            f" ({why})\n".encode()
        )
        out.flush()
        try:
            proc = processes.spawn(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        except (OSError, ValueError) as exc:
            out.write(f"paradev: cannot run the setup command: {exc}\n".encode())
            return 127
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            processes.stop([proc])
            out.write(f"\nparadev: setup command stopped after {timeout:g}s\n".encode())
            return None
        except BaseException:  # Ctrl-C, SIGTERM: nothing paradev started outlives it
            with processes.shielded():
                processes.stop_all()
            raise
        processes.release(proc)
    return code


# -- copying ---------------------------------------------------------------------------------


def copy_files(main_root: Path, dest_root: Path, config: SetupConfig) -> tuple[str, ...]:
    """Place each ``[setup] copy`` entry missing from ``dest_root``; never overwrite one.

    Every entry is checked first (all problems in one message), so a bad
    entry copies nothing.
    """
    if os.path.realpath(main_root) == os.path.realpath(dest_root):
        return ()  # the main worktree is where the copies come from
    check_sources(main_root, config.copy)
    placed = []
    for entry in config.copy:
        if _place(main_root / entry, dest_root / entry, dest_root, config.link):
            placed.append(entry)
    return tuple(placed)


def check_sources(main_root: Path, entries: Iterable[str]) -> None:
    """Refuse (exit 2) entries that are missing, outside the repository, or seen by git."""
    entries = list(entries)
    real_root = os.path.realpath(main_root)
    problems = []
    for entry in entries:
        source = main_root / entry
        if not os.path.lexists(source):
            problems.append(
                f"{entry!r} does not exist in the main worktree {main_root}; "
                "create it there or remove it from setup.copy"
            )
        elif not _inside(os.path.realpath(source.parent), real_root):
            problems.append(f"{entry!r} leads outside the repository {main_root}")
    present = [e for e in entries if os.path.lexists(main_root / e)]
    for path, tracked in visible_files(main_root, present):
        entry = next((e for e in present if path == e or path.startswith(e + "/")), path)
        problems.append(
            f"{entry!r} holds {path!r}, which git "
            + ("tracks: every worktree has it already" if tracked else "does not ignore")
            + "; setup.copy is for ignored files (add them to .gitignore or .git/info/exclude)"
        )
    if problems:
        raise PreconditionError("setup.copy: " + "; ".join(dict.fromkeys(problems)))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _place(source: Path, dest: Path, dest_root: Path, link: bool) -> bool:
    """Copy (or link) ``source`` to ``dest`` unless something is there; True when placed."""
    if os.path.lexists(dest):
        return False
    _make_parent(dest, dest_root)
    if source.is_dir() and not source.is_symlink():
        _copy_tree(source, dest, link)
    else:
        _place_one(source, dest, link)
    return True


def _copy_tree(source: Path, dest: Path, link: bool) -> None:
    """A new folder ``dest`` (ours, so no symlink inside it) with everything ``source`` holds."""
    for folder, dirs, files in os.walk(source):  # symlinked folders are copied as links
        here = Path(folder)
        target = dest / here.relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in [*files, *(d for d in dirs if (here / d).is_symlink())]:
            _place_one(here / name, target / name, link)


def _place_one(source: Path, dest: Path, link: bool) -> None:
    if source.is_symlink():  # a link stays a link: nothing is read through it
        os.symlink(os.readlink(source), dest)
    else:
        place_file(source, dest, link)


def _make_parent(dest: Path, dest_root: Path) -> None:
    """Create ``dest``'s folder, refusing one that a symlink takes outside the worktree."""
    if not _inside(os.path.realpath(dest.parent), os.path.realpath(dest_root)):
        raise PreconditionError(
            f"setup.copy: {dest.parent} leads outside the worktree {dest_root} "
            "(a symbolic link); paradev copies nothing there"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)


def place_file(source: Path, dest: Path, link: bool) -> str:
    """Hard-link (``link``), else reflink, else copy ``source`` to ``dest``; returns which.

    The copy is written under a temporary name and renamed: a crash never
    leaves a cut-short file that a later run would keep as done.
    """
    if link:
        try:
            os.link(source, dest)
            return "link"
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    tmp = dest.with_name(f".{dest.name}.paradev-{os.getpid()}.tmp")
    try:
        with source.open("rb") as src, tmp.open("wb") as dst:
            how = _clone(src, dst)
        shutil.copystat(source, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return how


def _clone(src: BinaryIO, dst: BinaryIO) -> str:
    """Share blocks when the file system can (reflink), else copy in the kernel, else in Python."""
    try:
        import fcntl

        fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return "reflink"
    except (ImportError, OSError):
        pass
    try:
        size = os.fstat(src.fileno()).st_size
        while size > 0:
            sent = os.copy_file_range(src.fileno(), dst.fileno(), min(size, 1 << 30))
            if sent == 0:
                break
            size -= sent
        return "copy"
    except (AttributeError, OSError):  # no copy_file_range here, or not between these files
        src.seek(0)
        dst.seek(0)
        dst.truncate()
    shutil.copyfileobj(src, dst, _CHUNK)
    return "copy"
