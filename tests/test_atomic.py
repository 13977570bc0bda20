"""Replacing a file whole: permissions, failures, concurrent writers."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from paradev.atomic import write_atomic


def test_write_atomic_keeps_the_file_mode_and_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o640)

    write_atomic(path, "new\r\nline", keep_mode=True)

    assert path.read_bytes() == b"new\r\nline"
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_new_file_gets_the_mode_asked_for_under_the_umask(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "private.json", "{}", mode=0o600)
        write_atomic(tmp_path / "report.html", "<p>é</p>", durable=False)
    finally:
        os.umask(umask)

    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == "<p>é</p>"


def test_a_failed_write_leaves_the_target_and_no_temp_file(tmp_path: Path) -> None:
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "a-dir" / "inside").write_text("kept")

    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "a-dir", "text")
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "x.json", "text")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir"]
    assert [p.name for p in (tmp_path / "a-dir").iterdir()] == ["inside"]


def test_concurrent_writers_never_share_a_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "seen.json"
    texts = [str(n) * 10_000 for n in range(8)]
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(20):
                write_atomic(path, text, durable=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert path.read_text() in texts  # one write whole, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["seen.json"]
