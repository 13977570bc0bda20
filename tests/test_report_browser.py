"""The report in a real browser (Debian's Chromium through Playwright): what a person sees.

Each test loads the report of a real scenario from ``file://``, clicks what a
person would click, checks that nothing went to the network and that the page
logged no error, and saves a screenshot in its temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from paradev import demo
from paradev.report import write_report
from paradev.workspace import open_workspace
from tests.browser import chromium, missing_reason
from tests.helpers import Result
from tests.test_report import HOSTILE, state_of, stopped_train

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

Cli = Callable[..., Result]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs the browser tests: {reason}")
        pytest.skip(reason)
    with chromium() as launched:
        yield launched


class Watched:
    """A page with every console error, page error, dialog and non-file request it caused."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("request", self._request)
        page.on("dialog", self._dialog)

    def _request(self, request: Any) -> None:
        if not request.url.startswith("file://"):
            self.requests.append(request.url)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def open_report(browser: Browser, report: Path) -> Watched:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watched = Watched(page)
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    return watched


def finish(watched: Watched, shot: Path) -> None:
    watched.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert watched.errors == []
    assert watched.requests == []
    assert watched.dialogs == []
    watched.page.close()


def test_stopped_train_report_in_chromium(
    browser: Browser, repo: Path, cli: Cli, worktrees: Path, tmp_path: Path
) -> None:
    stopped_train(repo, cli, worktrees)
    stop = state_of(repo)["train"]["stop"]
    report = write_report(open_workspace(repo), tmp_path / "report.html")

    watched = open_report(browser, report)
    page = watched.page

    for agent in (1, 2, 3):
        assert page.locator("#matrix").get_by_text(f"agent {agent}", exact=True).is_visible()
    tasks = page.locator("#tasks").inner_text()
    for issue in (11, 12, 13, 21):
        assert f"#{issue}" in tasks
    assert HOSTILE in tasks  # shown as text, never run
    detail = page.locator("#pair-1-2")
    assert detail.is_hidden()
    page.locator('[data-pair="pair-1-2"]').first.click()
    assert detail.is_visible()
    shown = detail.inner_text()
    assert "src/util.py" in shown and "content" in shown
    assert "VALUE = 'one'" in shown and "VALUE = 'two'" in shown
    row = page.locator(f'tr.landing.stopped[data-agent="{stop["agent"]}"]')
    assert row.is_visible() and "STOPPED here: conflict" in row.inner_text()
    assert page.locator("#timeline-svg .bar").count() == 3
    finish(watched, tmp_path / "stopped.png")


def test_demo_report_in_chromium(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    project = demo.run_demo(tmp_path / "demo-run", echo=lines.append)
    report = Path(lines[-1].rsplit(" ", 1)[-1])
    assert report.is_file(), lines[-3:]

    watched = open_report(browser, report)
    page = watched.page

    tasks = page.locator("#tasks").inner_text()
    for issue in range(101, 107):
        assert f"#{issue}" in tasks
    for agent in (1, 2, 3):
        assert page.locator("#matrix").get_by_text(f"agent {agent}", exact=True).is_visible()
    conflicting = page.locator("td.cell.conflict button").first
    key = conflicting.get_attribute("data-pair")
    assert key == "pair-1-2" and page.locator(f"#{key}").is_hidden()
    conflicting.click()
    shown = page.locator(f"#{key}").inner_text()
    assert "calc/core.py" in shown and "lines" in shown
    ours, theirs = page.locator(f"#{key} .hunk pre.ours"), page.locator(f"#{key} .hunk pre.theirs")
    assert ours.first.is_visible() and theirs.first.is_visible()
    assert ours.first.inner_text().startswith("agent 1\ndef ")  # the hunk's own lines
    assert theirs.first.inner_text().startswith("agent 2\ndef ")
    trains = page.locator("#train article")
    assert trains.count() == 2
    assert page.locator("tr.landing.landed").count() == 6
    handed_back = page.locator("#train article").first.locator("tr.landing .resolved")
    assert handed_back.count() == 1  # the conflict the demo hands back to its agent
    assert "calc/core.py" in handed_back.inner_text() and handed_back.is_visible()
    assert project.name in page.title()
    finish(watched, tmp_path / "demo.png")


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_without_chromium_ci_fails_and_a_local_run_skips(
    ci: str, outcome: str, tmp_path: Path
) -> None:
    env = {**os.environ, "CI": ci, "PARADEV_CHROMIUM": str(tmp_path / "no-chromium")}
    test = f"{__file__}::test_demo_report_in_chromium"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rsf", "-n0", test],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert outcome in proc.stdout, proc.stdout
    assert (proc.returncode == 0) == (ci != "true")
    assert "no Chromium found (apt-get install chromium, or set PARADEV_CHROMIUM)" in proc.stdout


def fake_tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/bash\n{body}\n", encoding="utf-8")
    path.chmod(0o755)


@pytest.mark.parametrize(
    ("uid", "with_chromium", "with_sudo", "calls"),
    [
        (0, False, False, ["update -qq", "install -y -qq chromium"]),
        (1000, False, True, ["sudo apt-get update -qq", "sudo apt-get install -y -qq chromium"]),
        (0, True, False, []),
        (1000, False, False, []),
    ],
)
def test_ci_installs_chromium_only_when_missing(
    tmp_path: Path, uid: int, with_chromium: bool, with_sudo: bool, calls: list[str]
) -> None:
    """The package manager cannot run in a test: fake apt-get, id and sudo log their calls."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    fake_tool(bin_dir, "id", f"echo {uid}")
    fake_tool(bin_dir, "apt-get", f'echo "$*" >> {log}')
    if with_sudo:
        fake_tool(bin_dir, "sudo", f'[ "$1" = -n ] && exit 0; echo "sudo $*" >> {log}')
    if with_chromium:
        fake_tool(bin_dir, "chromium", "exit 0")
    script = Path(__file__).resolve().parent.parent / ".ci" / "install-chromium"

    proc = subprocess.run(
        ["/bin/bash", str(script)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )

    assert proc.returncode == 0, proc.stderr
    assert (log.read_text().splitlines() if log.exists() else []) == calls
    if not calls and not with_chromium:
        assert proc.stderr == (
            "chromium is missing and CI can neither be root nor sudo: "
            "install it (apt-get install chromium)\n"
        )
