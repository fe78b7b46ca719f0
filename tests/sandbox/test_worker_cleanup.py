"""No sandbox worker (nor anything it started) outlives its run, however the run ends.

The model's code tags its own worker (its /proc/self/comm) and starts a helper process
carrying the same tag in its command line; the test finds both from the host's /proc, which
works whether the worker runs under bubblewrap (its own pid namespace) or as a plain
subprocess.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_helpers import bwrap_in_use, finish_cli, host_env, repl, start_cli, worker_processes
from recursa.core import prompts
from recursa.core.programs import RLM
from recursa.sandbox.limits import cgroup_problem
from recursa.testing import LMRequest, Reply, ScriptedLM

SANDBOXES = ["auto", "subprocess"]


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique tag for this test's processes; any left behind are killed afterwards."""
    value = "rq" + uuid.uuid4().hex[:12]  # comm holds at most 15 characters
    yield value
    for pid in tagged(value):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _mark(tag: str, extra: str = "") -> str:
    """Tag the worker, and start a helper process (with Popen options `extra`) tagged too."""
    return repl(
        f"""
        import subprocess, sys
        with open('/proc/self/comm', 'w') as fh:
            fh.write({tag!r})
        helper = subprocess.Popen(
            [sys.executable, '-c', 'import time; time.sleep(300)', {tag!r}],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, {extra}
        )
        print('marked')
        """
    )


def tagged(tag: str, *, workers_only: bool = False) -> list[int]:
    """Live processes (zombies excluded) whose name or command line carries `tag`;
    with `workers_only`, just the tagged worker itself."""
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
        if stat[stat.rindex(")") + 2] == "Z":
            continue
        if comm == tag or (tag in cmdline and not workers_only):
            found.append(int(entry.name))
    return found


def wait_until_gone(tag: str, within: float = 5.0, *, workers_only: bool = False) -> list[int]:
    """The tagged processes still alive once `within` seconds passed (or none, sooner)."""
    deadline = time.monotonic() + within
    while (left := tagged(tag, workers_only=workers_only)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _script(
    tag: str, second: str | Reply, alive_during: list[list[int]], extra: str = ""
) -> ScriptedLM:
    def root(request: LMRequest) -> str | Reply:
        if request.turn == 0:
            return _mark(tag, extra)
        if request.last_user == prompts.EXTRACT:
            return "FINAL(out of turns)"
        alive_during.append(tagged(tag))
        return second

    return ScriptedLM(root=root)


ENDINGS = {
    "ok": (repl("FINAL('done')"), {}, "ok"),
    "error": (Reply(status=400, error_body="scripted bad request"), {}, "error"),
    "timeout": (repl("while True:\n    pass"), {"timeout": 1.0, "cell_timeout": 30}, "timeout"),
}


@pytest.mark.parametrize("sandbox", SANDBOXES)
@pytest.mark.parametrize("ending", ENDINGS.keys())
def test_no_worker_process_is_left_after_a_run(serve, tag: str, sandbox: str, ending: str) -> None:
    second, options, status = ENDINGS[ending]
    alive_during: list[list[int]] = []
    server = serve(_script(tag, second, alive_during))

    result = RLM("openai/x", base_url=server.url, sandbox=sandbox, **options).run("q", "ctx")

    assert result.status == status, result.error
    assert len(alive_during[0]) == 2  # the worker and its helper were there during the run
    assert wait_until_gone(tag) == []
    assert [pid for pid, ppid in worker_processes().items() if ppid == os.getpid()] == []


def test_no_worker_is_left_after_a_cli_run_stopped_by_timeout(serve, tag: str) -> None:
    alive_during: list[list[int]] = []
    server = serve(_script(tag, repl("while True:\n    pass"), alive_during))

    run = finish_cli(
        start_cli(
            [
                "run",
                "q",
                "--model",
                "openai/x",
                "--base-url",
                server.url,
                "--timeout",
                "1",
                "--json",
                "--quiet",
            ]
        )
    )

    assert run.rc == 3, run.err
    assert '"status": "timeout"' in run.out
    assert len(alive_during[0]) == 2
    assert wait_until_gone(tag) == []


def _wait_for_loop(proc, server, tag: str) -> None:
    """Wait until the CLI's worker and helper are up and its looping block was sent."""
    deadline = time.monotonic() + 20
    while len(tagged(tag)) < 2 or len(server.requests) < 2:
        assert proc.poll() is None, "the CLI ended before its looping block"
        assert time.monotonic() < deadline, "the run never reached its looping block"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "sig, sandbox, workers_only",
    [
        (signal.SIGTERM, "auto", False),
        (signal.SIGINT, "auto", False),
        (signal.SIGKILL, "auto", False),
        (signal.SIGTERM, "subprocess", False),
        (signal.SIGKILL, "subprocess", True),  # PDEATHSIG reaches the worker itself
    ],
    ids=["sigterm-auto", "sigint-auto", "sigkill-auto", "sigterm-subprocess", "sigkill-subprocess"],
)
def test_no_worker_is_left_when_the_cli_is_signalled_mid_run(
    serve, tag: str, sig: int, sandbox: str, workers_only: bool, tmp_path: Path
) -> None:
    """The CLI's temporary folders go to this test's own folder: a SIGKILLed CLI cannot
    remove its worker's `recursa-*` folder, which must not pile up in the system's /tmp."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    alive_during: list[list[int]] = []
    server = serve(_script(tag, repl("while True:\n    pass"), alive_during))
    proc = start_cli(
        [
            "run",
            "q",
            "--model",
            "openai/x",
            "--base-url",
            server.url,
            "--sandbox",
            sandbox,
            "--quiet",
        ],
        env=host_env(TMPDIR=str(temp)),
    )
    try:
        _wait_for_loop(proc, server, tag)
        proc.send_signal(sig)
        run = finish_cli(proc, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run.rc != 0
    assert "Traceback" not in run.err
    assert wait_until_gone(tag, workers_only=workers_only) == []
    left = sorted(p.name for p in temp.glob("recursa-*"))
    if sig != signal.SIGKILL:  # a CLI that could clean up did
        assert left == []


ESCAPE = "start_new_session=True"
"""A helper that leaves the worker's session and process group."""


@pytest.mark.skipif(not bwrap_in_use(), reason="bubblewrap cannot run here")
def test_a_process_that_left_the_workers_session_dies_with_the_bwrap_sandbox(
    serve, tag: str
) -> None:
    alive_during: list[list[int]] = []
    server = serve(_script(tag, repl("FINAL('done')"), alive_during, extra=ESCAPE))

    result = RLM("openai/x", base_url=server.url, sandbox="auto").run("q", "ctx")

    assert result.status == "ok", result.error
    assert len(alive_during[0]) == 2
    assert wait_until_gone(tag) == []


def test_a_process_that_left_the_workers_session_dies_with_the_subprocess_sandbox(
    serve, tag: str
) -> None:
    alive_during: list[list[int]] = []
    server = serve(_script(tag, repl("FINAL('done')"), alive_during, extra=ESCAPE))

    result = RLM("openai/x", base_url=server.url, sandbox="subprocess").run("q", "ctx")

    assert result.status == "ok", result.error
    assert len(alive_during[0]) == 2
    assert wait_until_gone(tag) == []


@pytest.mark.skipif(cgroup_problem() is not None, reason=f"no cgroup: {cgroup_problem()}")
def test_a_process_that_left_the_workers_session_dies_with_a_sigkilled_host(
    serve, tag: str
) -> None:
    alive_during: list[list[int]] = []
    server = serve(_script(tag, repl("while True:\n    pass"), alive_during, extra=ESCAPE))
    proc = start_cli(
        ["run", "q", "--model", "openai/x", "--base-url", server.url, "--sandbox", "subprocess"]
    )
    try:
        _wait_for_loop(proc, server, tag)  # the worker and the helper in its own session
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert wait_until_gone(tag) == []  # the watchdog, not a later run's sweep
