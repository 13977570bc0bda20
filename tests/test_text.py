"""Titles on a terminal (escaped) and in commit messages (stripped), fuzzed with Hypothesis."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from paradev.text import plain, printable

CONTROL_CATEGORIES = ("Cc", "Cf", "Cs")


def _controls(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in CONTROL_CATEGORIES]


@given(st.text())
def test_printable_never_lets_a_control_character_through(text: str) -> None:
    assert _controls(printable(text)) == []


@given(st.text(alphabet=st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp"))))
def test_printable_leaves_ordinary_text_alone(text: str) -> None:
    assert printable(text) == text


@given(st.text())
def test_plain_is_one_line_without_controls(text: str) -> None:
    cleaned = plain(text)
    assert _controls(cleaned) == []
    assert "\n" not in cleaned and "\r" not in cleaned


def test_escape_sequences_are_shown_escaped_and_stripped_whole() -> None:
    title = "feat: \x1b[31mred\x1b[0m\x1b]0;pwned\x07 title\u202e\nnext"
    assert printable(title) == "feat: \\x1b[31mred\\x1b[0m\\x1b]0;pwned\\x07 title\\u202e\\nnext"
    assert plain(title) == "feat: red title next"
