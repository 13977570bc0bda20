"""The backups paradev keeps before it deletes or rewrites anything: listing and pruning.

Three kinds live in the common git dir: archives of ignored files taken by
``cleanup`` (``paradev/backups/*.tar.gz``), old state files kept by ``reset``
and ``doctor --repair`` (``paradev/state.json.bak-*``, ``.corrupt-*``), and
commits under ``refs/paradev/backup/`` (branch heads before a rebase, work a
forced cleanup removed). ``cleanup --backups`` lists them; ``--older DAYS``
prunes the old ones, never the backups of a train still in progress.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from paradev import git as gitmod
from paradev.errors import PreconditionError
from paradev.git import Git
from paradev.state import StateStore
from paradev.train.journal import BACKUP_PREFIX

# Ignored files of one worktree above this total are not archived: cleanup refuses
# instead, so a forgotten build folder never fills the git dir (nor is deleted unseen).
ARCHIVE_CAP = 100 * 1024 * 1024

MAX_DAYS = 36500
_STAMP = re.compile(r"(\d{8}T\d{12}Z)")
_STATE_BACKUPS = ("state.json.bak-*", "state.json.corrupt-*")


@dataclass(frozen=True)
class Backup:
    """One backup: an archive, an old state file or a backup ref."""

    kind: str  # "archive" | "state" | "ref"
    name: str  # a path, or a ref name
    made: datetime
    detail: str  # size, or the commit a ref keeps
    commit: str = ""

    def line(self) -> str:
        return f"{self.made:%Y-%m-%d %H:%M} UTC  {self.kind:<7}  {self.detail:>9}  {self.name}"


def archive_dir(store: StateStore) -> Path:
    return store.dir / "backups"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def total_size(root: Path, paths: Sequence[str]) -> int:
    """Bytes the files take as listed (a symlink counts as itself, never its target)."""
    return sum(os.lstat(root / p).st_size for p in paths)


def write_archive(root: Path, paths: Sequence[str], archive: Path) -> None:
    """A gzipped tar of ``paths`` (relative to ``root``), written whole or not at all."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for path in paths:
            tar.add(root / path, arcname=path, recursive=False)
    os.replace(partial, archive)


def list_backups(git: Git, store: StateStore) -> list[Backup]:
    """Every backup paradev keeps, oldest first."""
    found = [_file_backup("archive", path) for path in sorted(archive_dir(store).glob("*.tar.gz"))]
    for pattern in _STATE_BACKUPS:
        found += [_file_backup("state", path) for path in sorted(store.dir.glob(pattern))]
    for ref, commit, when in gitmod.refs_under(git, BACKUP_PREFIX):
        made = _stamp_time(ref) or datetime.fromtimestamp(when, UTC)
        found.append(Backup("ref", ref, made, commit[:12], commit))
    return sorted(found, key=lambda b: (b.made, b.name))


def prune_backups(git: Git, store: StateStore, days: float) -> tuple[list[Backup], list[Backup]]:
    """Remove the backups made more than ``days`` ago; (removed, kept for a running train)."""
    if not 0 <= days <= MAX_DAYS:  # also refuses NaN and infinity
        raise PreconditionError(
            f"--older {days}: give a number of days from 0 to {MAX_DAYS}, e.g. --older 30"
        )
    train = store.read().train
    live = f"/{train['id']}" if train else None
    cutoff = datetime.now(UTC) - timedelta(days=days)
    removed: list[Backup] = []
    kept: list[Backup] = []
    for backup in list_backups(git, store):
        if backup.made >= cutoff:
            continue
        if backup.kind == "ref" and live and backup.name.endswith(live):
            kept.append(backup)  # merge --abort/--continue restore from it
            continue
        if backup.kind == "ref":
            gitmod.delete_ref(git, backup.name, backup.commit)
        else:
            Path(backup.name).unlink(missing_ok=True)
        removed.append(backup)
    return removed, kept


def _file_backup(kind: str, path: Path) -> Backup:
    info = path.stat()
    made = _stamp_time(path.name) or datetime.fromtimestamp(info.st_mtime, UTC)
    return Backup(kind, str(path), made, human_size(info.st_size))


def _stamp_time(name: str) -> datetime | None:
    """When a backup was made, from the stamp paradev puts in its name (``20261129T101500...Z``)."""
    match = _STAMP.search(name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
