"""Shell completion from the command table: bash run for real, zsh checked where installed."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from paradev.commands import BY_NAME, COMMANDS
from tests.helpers import Result


def _complete(script: str, words: list[str], cwd: Path) -> list[str]:
    """What bash offers for the last of ``words``, from the real completion function."""
    quoted = " ".join(shlex.quote(w) for w in words)
    program = (
        f"{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        "_paradev\nprintf '%s\\n' \"${COMPREPLY[@]}\""
    )
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return sorted(line for line in proc.stdout.splitlines() if line)


def test_bash_completion_offers_commands_flags_and_files(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    result = cli("completion", "bash")
    assert result.code == 0
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("")
    script = result.out
    assert _complete(script, ["paradev", "sta"], tmp_path) == ["start", "status"]
    assert _complete(script, ["paradev", "merge"], tmp_path) == ["merge", "merge-order"]
    assert _complete(script, ["paradev", "conflicts", "--a"], tmp_path) == ["--all-pairs"]
    assert _complete(script, ["paradev", "run-batch", "--b"], tmp_path) == ["--batch"]
    assert _complete(script, ["paradev", "check", "src/a"], tmp_path) == ["src/app.py"]
    assert _complete(script, ["paradev", "completion", ""], tmp_path)[:2] == ["--help", "bash"]
    every = _complete(script, ["paradev", ""], tmp_path)
    assert set(every) == {*BY_NAME, "--help", "--version"}


def test_zsh_completion_describes_every_command(cli: Callable[..., Result]) -> None:
    out = cli("completion", "zsh").out
    assert out.startswith("#compdef paradev\n")
    for command in COMMANDS:
        assert f"'{command.name}:{command.summary[:9]}" in out
        assert f"    {command.name}) _arguments" in out
    assert "'--all-pairs[with --json: list every pair, clean ones too]'" in out
    assert "'--interval[seconds between checks with --watch (default 5)]:SECONDS:'" in out
    assert "'*--path[a file or directory you are about to change]:PATH:_files'" in out
    zsh = shutil.which("zsh")
    if zsh:  # syntax check where zsh is installed
        proc = subprocess.run([zsh, "-n"], input=out, text=True, capture_output=True, check=False)
        assert proc.returncode == 0, proc.stderr
