"""Debian's Chromium driven by Playwright, for the report's browser tests and its benchmark.

Playwright's own browser download is not available here, so it is pointed at
the system executable. Locally a missing Chromium skips the browser tests;
with ``CI=true`` it fails them, so CI never passes without running them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def find_chromium() -> str | None:
    """``$PARADEV_CHROMIUM``, else Debian's chromium on the PATH."""
    named = os.environ.get("PARADEV_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if find_chromium() is None:
        return "no Chromium found (apt-get install chromium, or set PARADEV_CHROMIUM)"
    return None


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed on exit."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    assert executable is not None, missing_reason()
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
