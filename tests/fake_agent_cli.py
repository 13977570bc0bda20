"""A stand-in for the real ``claude``, ``codex`` and ``aider``: installed under those names.

It records its argv, environment, stdin and working directory, then answers
as the real tool does (the documented JSON events), according to
``$FAKE_AGENT_MODES`` ({"<issue>": "ok" | "fail" | "hang"}). On "ok" it
commits a file the way an agent would. Standard library only: the tests
copy it into a folder first on PATH with a shebang to this interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

VERSIONS = {
    "claude": "2.1.197 (Claude Code)",
    "codex": "codex-cli 0.171.0",
    "aider": "aider 0.86.2",
}

# The final event of `claude -p --output-format stream-json --verbose` (Claude Code 2.1).
CLAUDE_RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "duration_ms": 4210,
    "num_turns": 3,
    "result": "Done.",
    "session_id": "f0d60403-b2bf-45a8-b440-2e5eade91531",
    "total_cost_usd": 0.1234,
    "usage": {
        "input_tokens": 1200,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 500,
        "output_tokens": 456,
        "service_tier": "standard",
    },
}
# `codex exec --json`: the usage of each completed turn.
CODEX_USAGE = {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122}


def main() -> int:
    tool = Path(sys.argv[0]).name
    args = sys.argv[1:]
    if args == ["--version"]:
        print(VERSIONS[tool])
        return 0
    issue = os.environ.get("PARADEV_ISSUE", "0")
    record(tool, issue, args)
    mode = json.loads(os.environ.get("FAKE_AGENT_MODES", "{}")).get(issue, "ok")
    if mode == "hang":
        print(json.dumps({"type": "turn.started"}), flush=True)
        time.sleep(120)
        return 0
    if mode == "ok":
        commit_work(tool, issue)
    return {"claude": claude, "codex": codex, "aider": aider}[tool](mode)


def record(tool: str, issue: str, args: list[str]) -> None:
    folder = Path(os.environ["FAKE_AGENT_RECORD"])
    folder.mkdir(parents=True, exist_ok=True)
    runs = len(list(folder.glob(f"{tool}-{issue}-*.json")))
    stdin = sys.stdin.read() if not sys.stdin.closed else ""
    env = {k: v for k, v in os.environ.items() if k.startswith("PARADEV_")}
    data = {"argv": args, "env": env, "stdin": stdin, "cwd": os.getcwd()}
    (folder / f"{tool}-{issue}-{runs}.json").write_text(json.dumps(data), encoding="utf-8")


def commit_work(tool: str, issue: str) -> None:
    Path(f"{tool}-{issue}.txt").write_text(f"{tool} did #{issue}\n", encoding="utf-8")
    subprocess.run(["git", "add", "--", f"{tool}-{issue}.txt"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"{tool}: #{issue}"], check=True)


def claude(mode: str) -> int:
    print(json.dumps({"type": "system", "subtype": "init", "cwd": os.getcwd()}), flush=True)
    text = "Done." if mode == "ok" else "I could not do it."
    print(json.dumps({"type": "assistant", "message": {"content": [{"text": text}]}}), flush=True)
    result = dict(CLAUDE_RESULT, result=text)
    if mode != "ok":
        result.update(subtype="error_during_execution", is_error=True, total_cost_usd=0.02)
    print(json.dumps(result), flush=True)
    return 0 if mode == "ok" else 1


def codex(mode: str) -> int:
    print(json.dumps({"type": "thread.started", "thread_id": "01a22a3b"}), flush=True)
    print(json.dumps({"type": "turn.started"}), flush=True)
    if mode != "ok":
        print(json.dumps({"type": "turn.failed", "error": {"message": "refused"}}), flush=True)
        return 1
    item = {"id": "item_0", "type": "agent_message", "text": "Done."}
    print(json.dumps({"type": "item.completed", "item": item}), flush=True)
    print(json.dumps({"type": "turn.completed", "usage": CODEX_USAGE}), flush=True)
    return 0


def aider(mode: str) -> int:
    print("Aider v0.86.2\nModel: sonnet with diff edit format", flush=True)
    print("Tokens: 2.3k sent, 151 received. Cost: $0.0092 message, $0.0092 session.", flush=True)
    return 0 if mode == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
