from collections.abc import Callable
from pathlib import Path

from tests.helpers import Result, commit


def test_flow(set_up: Path, cli: Callable[..., Result]) -> None:
    assert cli("start", "1").code == 0
    commit(set_up / "agent-1", {"x.py": "x\n"})
    r = cli("complete", "1")
    assert r.code == 0, r.err
    data = cli("status", "--json").json()
    assert data["agents"]["1"]["completed_tasks"][0]["files_modified"] == ["x.py"]
