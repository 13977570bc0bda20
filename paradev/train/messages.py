"""Commit-message rules: the conventional subject of a squashed landing."""

from __future__ import annotations

import re

from paradev.text import plain

CONVENTIONAL = re.compile(
    r"^(feat|fix|docs|style|refactor|perf|test|tests|build|ci|chore|revert)(\([^)]*\))?!?:\s*\S",
    re.IGNORECASE,
)


def squash_message(title: str, issue: int) -> str:
    """``feat: <title> (#<issue>)``; a conventional prefix already in the title wins."""
    subject = plain(title).strip()
    if not CONVENTIONAL.match(subject):
        subject = f"feat: {subject}"
    return f"{subject} (#{issue})\n"
