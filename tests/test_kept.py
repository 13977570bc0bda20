"""paradev.kept: a kept answer is read back exactly, and a damaged file is never trusted."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paradev import kept

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(VALUES)
def test_what_is_saved_is_loaded_back_exactly(value: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "answers.kept")
        kept.save(path, value)
        assert kept.load(path) == value


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=400))
def test_damaged_or_foreign_bytes_are_never_trusted(garbage: bytes, cut: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "answers.kept")
        kept.save(path, {"a...b": ["x.py"]})
        good = Path(path).read_bytes()
        for damaged in (garbage, good[:cut], good[:cut] + garbage + good[cut + len(garbage) :]):
            if damaged == good:
                continue
            Path(path).write_bytes(damaged)
            assert kept.load(path) in (None, {"a...b": ["x.py"]})
            if len(damaged) < len(good):
                assert kept.load(path) is None


def test_a_flipped_payload_byte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "answers.kept"
    kept.save(str(path), {"a...b": ["x.py"]})
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    assert kept.load(str(path)) is None


def test_another_pythons_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "answers.kept"
    kept.save(str(path), [1, 2])
    data = path.read_bytes()
    tag = sys.implementation.cache_tag.encode()
    path.write_bytes(data.replace(tag, b"cpython-0" + tag[-3:], 1))
    assert kept.load(str(path)) is None


def test_nothing_is_written_outside_an_existing_folder(tmp_path: Path) -> None:
    kept.save(str(tmp_path / "missing" / "answers.kept"), [1])
    assert not (tmp_path / "missing").exists()
    assert kept.load(str(tmp_path / "missing" / "answers.kept")) is None


def test_a_file_changed_within_the_margin_refuses_the_key(tmp_path: Path) -> None:
    path = tmp_path / "ref"
    path.write_text("1\n")
    with pytest.raises(kept.NotKeyableError):
        kept.Stamps(time.time_ns()).file(str(path))
    old = time.time_ns() - 2 * kept.RACY_MARGIN_NS
    os.utime(path, ns=(old, old))  # its change time is still now: still refused
    with pytest.raises(kept.NotKeyableError):
        kept.Stamps(time.time_ns()).file(str(path))


def test_the_key_follows_content_size_and_presence(tmp_path: Path) -> None:
    path = tmp_path / "ref"
    later = time.time_ns() + 10 * kept.RACY_MARGIN_NS  # as if asked well after the writes

    def key() -> str:
        stamps = kept.Stamps(later)
        stamps.file(str(path))
        return stamps.key()

    absent = key()
    path.write_text("1\n")
    one = key()
    path.write_text("22\n")
    assert len({absent, one, key()}) == 3
    assert key() == key()
