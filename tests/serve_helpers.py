"""Helpers for the serving tests: `recursa serve` in a real subprocess, a 2 MB haystack, a
scripted model that knows several scenarios, and finding tagged worker processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from e2e_helpers import RECURSA, repl
from extras import require_extra
from recursa.testing import LMRequest, Reply

SECRET = "amber-falcon-7731"
HAYSTACK_CHARS = 2_000_000
TOKEN = "test-token-5e1f"


def make_haystack(chars: int = HAYSTACK_CHARS) -> str:
    """About `chars` characters of log lines with one planted fact, deep in the middle."""
    count = chars // 50 + 1
    lines = [
        f"{i:08d} telemetry frame nominal, checksum {i * 7919 % 100_000:05d}, ok!!"
        for i in range(count)
    ]
    lines[count * 5 // 7] = f"{count * 5 // 7:08d} NOTE: the vault passphrase is {SECRET}"
    return "\n".join(lines) + "\n"


FIND_SECRET = repl(
    r"""
    import re
    text = context if isinstance(context, str) else "\n".join(map(str, context))
    found = re.search(r"passphrase is (\S+)", text)
    FINAL(found.group(1) if found else "not found")
    """
)


class Scenarios:
    """A root responder: what the model does depends on a marker in the question.

    [haystack]  looks at the context, then finds the passphrase (two turns)
    [forever]   never answers (prints and goes on)
    [block]     the model's reply never comes until `release` is set (the run just waits)
    [tag:NAME]  names its worker NAME and starts a helper named NAME, then runs a long block
    """

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, request: LMRequest) -> str | Reply:
        first = next(m["content"] for m in request.messages if m["role"] == "user")
        if "[haystack]" in first:
            if request.turn == 0:
                return repl("print(type(context).__name__, len(context))")
            return FIND_SECRET
        if "[forever]" in first:
            return repl(
                f"part = context[{request.turn} * 10:]\nprint('part', {request.turn}, len(part))"
            )
        if "[block]" in first:
            self.release.wait(60)
            return "FINAL(released)"
        tag = re.search(r"\[tag:(\w+)\]", first)
        if tag:
            if request.turn == 0:
                return mark_worker(tag.group(1))
            return repl("import time\ntime.sleep(300)")
        return "FINAL(no scenario)"


def mark_worker(tag: str) -> str:
    """A block that names its worker `tag` and starts a helper process carrying the tag."""
    return repl(
        f"""
        import subprocess, sys
        with open('/proc/self/comm', 'w') as fh:
            fh.write({tag!r})
        helper = subprocess.Popen(
            [sys.executable, '-c', 'import time; time.sleep(300)', {tag!r}],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        print('marked')
        """
    )


def new_tag() -> str:
    return "sv" + uuid.uuid4().hex[:10]  # comm holds at most 15 characters


def tagged(tag: str) -> list[int]:
    """Live processes (zombies excluded) named `tag` or carrying it in their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z" and (comm == tag or tag in cmdline):
            found.append(int(entry.name))
    return found


def kill_tagged(tag: str) -> None:
    for pid in tagged(tag):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def wait_for(predicate, within: float = 20.0, step: float = 0.05):
    """Poll until `predicate()` is truthy (returned) or `within` seconds pass (None)."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextlib.contextmanager
def recursa_serve(args: list[str], *, env: dict[str, str], workdir: Path) -> Iterator[Served]:
    """`recursa serve --port 0 ARGS` in a subprocess; yields once it says where it listens.
    Ended with SIGTERM afterwards (SIGKILL if it does not stop)."""
    require_extra("server", "fastapi", "uvicorn")
    stderr_path = workdir / f"serve-{uuid.uuid4().hex[:6]}.err"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [RECURSA, "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:

        def listening() -> str | None:
            found = re.search(r"listening on (http://\S+)", stderr_path.read_text())
            if found is None and proc.poll() is not None:
                raise AssertionError(
                    f"recursa serve exited with {proc.returncode}: {stderr_path.read_text()}"
                )
            return found.group(1) if found else None

        url = wait_for(listening, within=60)
        assert url, f"recursa serve never said where it listens: {stderr_path.read_text()}"
        yield Served(proc, url, stderr_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
