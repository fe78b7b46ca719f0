"""Helpers shared by the end-to-end tests: scripted replies, CLI subprocesses, /proc checks.

Everything here drives real code: the `recursa` console script in a subprocess, the real
fake HTTP server on 127.0.0.1 and real sandbox worker processes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recursa.testing import FakeLMServer, LMRequest

RECURSA = str(Path(sys.executable).with_name("recursa"))
"""The installed console script of the venv that runs the tests."""

HAYSTACK_CHARS = 20_000_000
HAYSTACK_SECRET = "amber-falcon-7731"

HOST_ENV_PREFIXES = (
    "RECURSA_", "OPENAI_", "ANTHROPIC_", "OPENROUTER_", "OLLAMA_", "VLLM_", "GEMINI_",
    "AZURE_OPENAI_", "AWS_", "LITELLM_",
)  # fmt: skip


def repl(code: str, prose: str = "") -> str:
    """A model reply: optional prose, then one ```repl block holding `code` (dedented)."""
    body = textwrap.dedent(code).strip("\n")
    head = f"{prose}\n" if prose else ""
    return f"{head}```repl\n{body}\n```"


def root_requests(server: FakeLMServer) -> list[LMRequest]:
    """The RLM turns the server received (those carry the system prompt)."""
    return [r for r in server.requests if r.is_root]


def sub_requests(server: FakeLMServer) -> list[LMRequest]:
    """The plain sub-queries the server received (no system prompt)."""
    return [r for r in server.requests if not r.is_root]


def prompt_chars(request: LMRequest) -> int:
    """Size of a request as a model sees it: the sum of its message contents."""
    return sum(len(m.get("content", "")) for m in request.messages)


def observation_after(server: FakeLMServer, turn: int) -> str:
    """What the root model was told after its reply number `turn` (0-based)."""
    for request in root_requests(server):
        if request.turn == turn + 1:
            return request.last_user
    raise AssertionError(f"the server never received root turn {turn + 1}")


def assert_usage_matches_server(usage: dict[str, Any], server: FakeLMServer) -> None:
    """usage counts every request the server saw and the tokens it reported."""
    assert usage["llm_calls"] == server.request_count
    reported = server.usage
    assert usage["input_tokens"] == reported["input_tokens"]
    assert usage["output_tokens"] == reported["output_tokens"]


def one_json_object(stdout: str) -> dict[str, Any]:
    """Parse stdout that must hold exactly one JSON object and nothing else."""
    text = stdout.strip()
    assert text, "stdout is empty"
    value, end = json.JSONDecoder().raw_decode(text)
    assert end == len(text), f"stdout holds more than one JSON value: {text[end : end + 200]!r}"
    assert isinstance(value, dict)
    return value


def closed_port() -> int:
    """A local TCP port that nothing listens on (connecting is refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_env(**extra: str) -> dict[str, str]:
    """This process's environment without any model configuration, plus `extra`
    (RECURSA_HOME stays: the test's own run store, never the user's)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(HOST_ENV_PREFIXES) or k == "RECURSA_HOME"
    }
    env.update(extra)
    return env


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def start_cli(
    args: list[str], *, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [RECURSA, *args],
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else host_env(),
    )


def finish_cli(
    proc: subprocess.Popen[bytes], *, stdin: bytes | None = None, timeout: float = 60
) -> CliResult:
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"recursa did not finish in {timeout} s; stderr: {err[-2000:]!r}"
        ) from None
    return CliResult(proc.returncode, out.decode("utf-8"), err.decode("utf-8"))


def run_cli(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 60,
) -> CliResult:
    """Run `recursa ARGS` in a real subprocess, with no model configured in its environment."""
    return finish_cli(start_cli(args, env=env, stdin=stdin), stdin=stdin, timeout=timeout)


WORKER_SCRIPT = "recursa/sandbox/inside/worker.py"


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def is_running(pid: int) -> bool:
    """True while `pid` is a live process (a zombie is dead: it runs nothing)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def worker_processes() -> dict[int, int]:
    """Every live sandbox worker on this machine: pid -> ppid (read from /proc, no psutil)."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if WORKER_SCRIPT not in _cmdline(pid):
            continue
        stat = _stat(pid)
        if stat is not None and stat[0] != "Z":
            found[pid] = stat[1]
    return found


def is_worker(pid: int) -> bool:
    return WORKER_SCRIPT in _cmdline(pid) and is_running(pid)


def bwrap_in_use() -> bool:
    """Whether `--sandbox auto` picks bubblewrap on this machine."""
    from recursa.sandbox import resolve_backend

    return resolve_backend("auto") == "bwrap"
