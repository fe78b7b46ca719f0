"""Hostile model code, one test per attack, against every sandbox backend available here.

Each test drives a real run (FakeLMServer on a real socket, real worker processes) whose
scripted model tries one attack, then checks two things: the run goes on (a later block
reaches FINAL), and the attack fails or is reported, as `recursa.sandbox.threats` (the table
in docs/SANDBOX.md) says for that backend. Where the table says a backend does NOT block an
attack, the test checks that too: it shows the attack working, so the table cannot claim more
than the backend does. Attacks that would harm the test process itself under the in-process
`local` backend (forking it, exhausting its memory, `os._exit`) are skipped there, with the
reason; the table marks them not blocked.

The fork bomb is bounded whatever the backend: at most 300 forks, each child sleeping half a
second, so a machine where nothing caps processes (root without a writable cgroup) is safe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import host_env, observation_after, one_json_object, repl, run_cli
from recursa.core.programs import RLM
from recursa.sandbox import bwrap_problem, docker_problem, landlock_problem, process_cap_problem
from recursa.sandbox.landlock import landlock_abi
from recursa.sandbox.threats import BLOCKED, BOUNDED, CONTAINED, NOT_BLOCKED, PARTLY, verdict
from recursa.testing import ScriptedLM
from test_worker_cleanup import tagged, wait_until_gone

CONTEXT = "alpha beta gamma\n" * 100
SECRET = "sk-hostile-0123456789abcdef"


def _backends() -> list[Any]:
    bwrap, docker, landlock = bwrap_problem(), docker_problem(), landlock_problem()
    return [
        pytest.param("subprocess", id="subprocess"),
        pytest.param(
            "bwrap",
            id="bwrap",
            marks=pytest.mark.skipif(bwrap is not None, reason=f"bwrap cannot run: {bwrap}"),
        ),
        pytest.param(
            "landlock",
            id="landlock",
            marks=pytest.mark.skipif(landlock is not None, reason=f"landlock: {landlock}"),
        ),
        pytest.param(
            "docker",
            id="docker",
            marks=pytest.mark.skipif(docker is not None, reason=f"docker: {docker}"),
        ),
        pytest.param("local", id="local"),
    ]


BACKENDS = _backends()


def not_in_process(backend: str, why: str) -> None:
    if backend == "local":
        pytest.skip(f"local runs model code in this test process: {why}")


def run(serve, backend: str, blocks: list[str], context: Any = CONTEXT, **options: Any):
    server = serve(ScriptedLM(root=blocks, sub=lambda request: "pong"))
    result = RLM("openai/x", base_url=server.url, sandbox=backend, **options).run("q", context)
    return result, server


def expect_blocked(backend: str, attack: str) -> bool:
    """True where the table says `backend` stops `attack`; False where it says it does not."""
    kind = verdict(backend, attack)
    assert kind in (BLOCKED, BOUNDED, CONTAINED, NOT_BLOCKED), kind
    return kind != NOT_BLOCKED


@pytest.fixture
def tag() -> Iterator[str]:
    value = "rh" + uuid.uuid4().hex[:12]
    yield value
    for pid in tagged(value):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# ---- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_reading_the_api_key_from_the_environment(
    serve, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    code = "import os\nFINAL(repr(dict(os.environ)))"
    result, _ = run(serve, backend, [repl(code)])

    assert result.status == "ok", result.error
    if expect_blocked(backend, "env_key"):
        assert SECRET not in result.answer
        assert "OPENAI_API_KEY" not in result.answer
    else:  # local: the table says the host's environment is right there
        assert SECRET in result.answer


@pytest.mark.parametrize("backend", BACKENDS)
def test_reading_proc_1_and_the_parents_environ(serve, backend: str) -> None:
    """Through the CLI, whose own environment (/proc/PID/environ) holds the key."""
    server = serve(
        ScriptedLM(
            root=[
                repl(
                    """
                    import os
                    seen = {}
                    for label, pid in (('init', '1'), ('parent', str(os.getppid())),
                                       ('self', 'self')):
                        for part in ('environ', 'cmdline'):
                            try:
                                with open(f'/proc/{pid}/{part}', 'rb') as fh:
                                    seen[label + '_' + part] = fh.read().decode('utf-8', 'replace')
                            except OSError as exc:
                                seen[label + '_' + part] = 'refused: ' + type(exc).__name__
                    FINAL(seen)
                    """
                )
            ]
        )
    )
    cli = run_cli(
        [
            *("run", "q", "--model", "openai/x", "--base-url", server.url),
            *("--sandbox", backend, "--json", "--quiet"),
        ],
        env=host_env(OPENAI_API_KEY=SECRET),
    )

    assert cli.rc == 0, cli.err
    seen = one_json_object(cli.out)["answer"]
    host_init = Path("/proc/1/cmdline").read_bytes().decode("utf-8", "replace")
    if backend == "local":  # the code runs in the CLI process itself
        assert not expect_blocked(backend, "proc_environ")
        assert SECRET in seen["self_environ"]
        return
    assert SECRET not in repr(seen)
    if backend == "subprocess":
        # partly: the parent (the CLI) refuses; pid 1 is the machine's own init
        assert seen["parent_environ"].startswith("refused")
        assert seen["init_cmdline"] == host_init
    elif backend == "landlock":  # the host's pid namespace, but only its own /proc entry
        assert expect_blocked(backend, "proc_environ")
        assert all(seen[f"{who}_{part}"].startswith("refused") for who in ("init", "parent")
                   for part in ("environ", "cmdline"))  # fmt: skip
        assert "worker.py" in seen["self_cmdline"]
    else:
        assert expect_blocked(backend, "proc_environ")
        assert seen["init_cmdline"] != host_init  # a pid namespace of its own


# ---- files and network -----------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_reading_a_host_file(serve, tmp_path: Path, backend: str) -> None:
    secret_file = tmp_path / "host-secret.txt"
    secret_file.write_text(SECRET)
    code = f"""
        try:
            got = open({str(secret_file)!r}).read()
        except OSError as exc:
            got = 'refused: ' + type(exc).__name__
        FINAL(got)
        """
    result, _ = run(serve, backend, [repl(code)])

    assert result.status == "ok", result.error
    if expect_blocked(backend, "file_read"):
        assert result.answer.startswith("refused")
    else:  # subprocess and local: the table says the host's files are readable
        assert result.answer == SECRET


@pytest.mark.parametrize("backend", BACKENDS)
def test_writing_a_host_file(serve, tmp_path: Path, backend: str) -> None:
    context_dir = tmp_path / "ctx"
    context_dir.mkdir()
    (context_dir / "a.txt").write_text("context file\n")
    outside, inside_context = tmp_path / "pwned.txt", context_dir / "pwned.txt"
    code = f"""
        done = []
        for path in ({str(outside)!r}, {str(inside_context)!r}):
            try:
                with open(path, 'w') as fh:
                    fh.write('pwned')
                done.append('wrote')
            except OSError as exc:
                done.append('refused: ' + type(exc).__name__)
        FINAL(done)
        """
    result, _ = run(serve, backend, [repl(code)], context=context_dir)

    assert result.status == "ok", result.error
    if expect_blocked(backend, "file_write"):
        # Writing beside the context may land in the sandbox's own /tmp (bwrap makes the
        # bind's parent folders there); nothing reaches the host.
        assert not outside.exists()
        assert result.answer[1].startswith("refused")  # the context is bound read-only
        assert not inside_context.exists()
    else:
        assert result.answer == ["wrote", "wrote"]
        assert outside.read_text() == "pwned"


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 that records what it is sent."""
    received: list[bytes] = []
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    received.append(conn.recv(100))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1], received
    stop.set()
    thread.join(2)
    sock.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_connecting_to_a_loopback_server(serve, loopback_server, backend: str) -> None:
    port, received = loopback_server
    code = f"""
        import socket
        try:
            with socket.create_connection(('127.0.0.1', {port}), timeout=2) as conn:
                conn.sendall(b'leak')
            got = 'connected'
        except OSError as exc:
            got = 'refused: ' + type(exc).__name__
        FINAL(got)
        """
    result, _ = run(serve, backend, [repl(code)])

    assert result.status == "ok", result.error
    if expect_blocked(backend, "network"):
        assert result.answer.startswith("refused")
        assert received == []
    else:  # subprocess and local: the table says the network is the host's
        assert result.answer == "connected"


@pytest.mark.parametrize("backend", BACKENDS)
def test_signalling_the_host_process(serve, backend: str) -> None:
    """SIGCONT, which a running process ignores: the test runner survives whoever wins."""
    code = f"""
        import os, signal
        try:
            os.kill({os.getpid()}, signal.SIGCONT)
            got = 'signalled'
        except OSError as exc:
            got = 'refused: ' + type(exc).__name__
        FINAL(got)
        """
    result, _ = run(serve, backend, [repl(code)])

    assert result.status == "ok", result.error
    kind = verdict(backend, "signal_host")
    if kind == PARTLY:  # landlock: signals are scoped from Landlock ABI 6
        kind = BLOCKED if landlock_abi() >= 6 else NOT_BLOCKED
    if kind == BLOCKED:
        assert result.answer.startswith("refused")
    else:
        assert kind == NOT_BLOCKED
        assert result.answer == "signalled"


# ---- processes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_starting_a_subprocess(serve, monkeypatch: pytest.MonkeyPatch, tag: str, backend: str):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    code = f"""
        import subprocess, sys
        listing = subprocess.run(['env'], capture_output=True, text=True).stdout
        subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', {tag!r}],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        FINAL(listing)
        """
    result, _ = run(serve, backend, [repl(code)])

    assert result.status == "ok", result.error
    if expect_blocked(backend, "subprocess"):
        assert SECRET not in result.answer  # it inherited the clean environment
        assert wait_until_gone(tag) == []  # and ended with the sandbox
    else:  # local: a child of the host, with its environment, left running
        assert SECRET in result.answer
        assert tagged(tag) != []


FORK_BOMB = """
    import os, time
    made, error, kids = 0, None, []
    try:
        for _ in range(300):
            pid = os.fork()
            if pid == 0:
                time.sleep(0.5)
                os._exit(0)
            kids.append(pid)
            made += 1
    except OSError as exc:
        error = type(exc).__name__
    for pid in kids:
        os.waitpid(pid, 0)
    print('forked', made, error)
    """


@pytest.mark.parametrize("backend", BACKENDS)
def test_fork_bomb(serve, backend: str) -> None:
    not_in_process(backend, "it would fork the test runner")
    result, server = run(serve, backend, [repl(FORK_BOMB), repl("FINAL([made, error])")])

    assert result.status == "ok", result.error
    made, error = result.answer
    assert verdict(backend, "fork_bomb") == BOUNDED
    problem = process_cap_problem() if backend in ("subprocess", "bwrap") else None
    if problem is None:
        assert error == "BlockingIOError"
        assert made < 300
        assert f"forked {made} BlockingIOError" in observation_after(server, 0)
    else:  # the table's exception: root without a writable cgroup
        assert made == 300, f"expected no cap here ({problem})"


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_bomb(serve, backend: str) -> None:
    not_in_process(backend, "it would exhaust the test runner's memory")
    bomb = "hog = []\nwhile True:\n    hog.append(bytearray(16 * 2**20))"
    result, server = run(
        serve,
        backend,
        [repl("kept = 'survived'"), repl(bomb), repl("del hog\nFINAL(kept)")],
        memory_limit=256,
    )

    assert result.status == "ok", result.error
    assert result.answer == "survived"
    assert "MemoryError" in observation_after(server, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_endless_loop_is_interrupted_and_variables_survive(serve, backend: str) -> None:
    result, server = run(
        serve,
        backend,
        [
            repl("kept = 'still here'"),
            repl("n = 0\nwhile True:\n    n += 1"),
            repl("FINAL([kept, n > 0])"),
        ],
        cell_timeout=0.5,
    )

    assert result.status == "ok", result.error
    assert result.answer == ["still here", True]
    assert "interrupted" in observation_after(server, 1)


IGNORES_INTERRUPT = """
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass
    """


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_loop_that_ignores_the_interrupt_loses_its_worker_and_the_model_is_told(
    serve, backend: str
) -> None:
    not_in_process(backend, "a thread cannot be killed; it would spin in the test runner")
    result, server = run(
        serve,
        backend,
        [
            repl("kept = 1"),
            repl(IGNORES_INTERRUPT),
            repl("FINAL(['kept' in globals(), len(context)])"),
        ],
        cell_timeout=0.5,
    )

    assert result.status == "ok", result.error
    assert result.answer == [False, len(CONTEXT)]
    told = observation_after(server, 1)
    assert "ignored the interrupt" in told
    assert "every variable was lost" in told


# ---- output and the interpreter -------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_print_stays_bounded_for_the_model_and_the_worker(serve, backend: str) -> None:
    blocks = [repl("print('A' * 100_000_000)")]
    if backend != "local":  # raw writes to fd 1 would land in the test runner's own stdout
        blocks.append(repl("import os\nos.write(1, b'B' * 20_000_000)\nprint('raw done')"))
    blocks.append(repl("FINAL('alive')"))
    # 256 MiB holds the 100 MB string once, not the copies an unbounded buffer would make
    options = {} if backend == "local" else {"memory_limit": 256}
    result, server = run(serve, backend, blocks, max_output_chars=2_000, **options)

    assert result.status == "ok", result.error
    assert result.answer == "alive"
    told = observation_after(server, 0)
    assert len(told) < 3_000
    assert "100,000,001" in told
    assert "MemoryError" not in told
    if backend != "local":
        assert "raw done" in observation_after(server, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_recursion_bomb(serve, backend: str) -> None:
    result, server = run(
        serve,
        backend,
        [repl("kept = 2\ndef f(n):\n    return f(n + 1)\nf(0)"), repl("FINAL(kept)")],
    )

    assert result.status == "ok", result.error
    assert result.answer == 2
    assert "RecursionError" in observation_after(server, 0)


C_STACK_BOMB = """
    import sys
    sys.setrecursionlimit(10**6)
    x = []
    for _ in range(10**6):
        x = [x]
    repr(x)
    """


@pytest.mark.parametrize("backend", BACKENDS)
def test_c_stack_overflow_costs_only_the_worker(serve, backend: str) -> None:
    not_in_process(backend, "a C stack overflow would kill the test runner")
    result, server = run(
        serve, backend, [repl("kept = 1"), repl(C_STACK_BOMB), repl("FINAL(len(context))")]
    )

    assert result.status == "ok", result.error
    assert result.answer == len(CONTEXT)
    told = observation_after(server, 1)
    assert "restarted" in told
    assert "SIGSEGV" in told or "RecursionError" in told or "MemoryError" in told


@pytest.mark.parametrize("backend", BACKENDS)
def test_sys_exit_and_os_exit(serve, backend: str) -> None:
    blocks = [repl("kept = 1"), repl("import sys\nsys.exit(3)")]
    if backend != "local":  # os._exit would end the test runner
        blocks.append(repl("import os\nos._exit(7)"))
    blocks.append(repl("FINAL(['kept' in globals(), len(context)])"))
    result, server = run(serve, backend, blocks)

    assert result.status == "ok", result.error
    assert "SystemExit(3)" in observation_after(server, 1)
    if backend == "local":
        assert result.answer == [True, len(CONTEXT)]
    else:
        assert result.answer == [False, len(CONTEXT)]
        told = observation_after(server, 2)
        assert "exit code 7" in told
        assert "restarted" in told


@pytest.mark.parametrize("backend", BACKENDS)
def test_reassigning_llm_query_context_and_final(serve, backend: str) -> None:
    result, _ = run(
        serve,
        backend,
        [
            repl("llm_query = None\ncontext = 'gone'\nFINAL = print\nFINAL_VAR = 0\nSUBMIT = 1"),
            repl("FINAL([len(context), llm_query('ping')])"),
        ],
    )

    assert result.status == "ok", result.error
    assert result.answer == [len(CONTEXT), "pong"]


PATCH_BUILTINS = """
    import builtins
    builtins.len = None
    builtins.isinstance = lambda *args: False
    builtins.repr = None
    builtins.str = None
    builtins.print = None
    del builtins.sorted
    builtins.__import__ = None
    answer = llm_query('ping')
    """


@pytest.mark.parametrize("backend", BACKENDS)
def test_patching_builtins(serve, backend: str) -> None:
    not_in_process(backend, "the builtins are the test runner's own")
    result, server = run(
        serve,
        backend,
        [
            repl(PATCH_BUILTINS),
            repl("FINAL([len('abc'), repr(1), isinstance(1, int), sorted([2, 1]), answer])"),
        ],
    )

    assert result.status == "ok", result.error
    assert result.answer == [3, "1", True, [1, 2], "pong"]
    assert "[error]" not in observation_after(server, 0)


# ---- the channel ---------------------------------------------------------------------------------

FIND_CHANNEL = textwrap.dedent(
    """
    import os
    def channel_fds():
        found = []
        for fd in range(3, 256):
            try:
                if os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:'):
                    found.append(fd)
            except OSError:
                pass
        return found
    """
)

JUNK = {
    "garbage": "payload = b'\\x00junk' * 10_000",
    "oversized": (
        "import struct\npayload = b'RCS1' + struct.pack('>II', 600 * 2**20, 0) + b'{' * 100"
    ),
    "wrong-shape": (
        "import json, struct\npayload = b''\n"
        "for i in range(1, 20):\n"
        "    h = json.dumps({'op': 'result', 'id': i, 'stdout': 5, 'final': [1]}).encode()\n"
        "    payload += b'RCS1' + struct.pack('>II', len(h), 0) + h"
    ),
}


@pytest.mark.parametrize("junk", JUNK.keys())
@pytest.mark.parametrize("backend", BACKENDS)
def test_flooding_the_channel_with_junk(serve, backend: str, junk: str) -> None:
    not_in_process(backend, "there is no channel")
    flood = (
        JUNK[junk] + "\nfor fd in channel_fds():\n    try:\n        os.write(fd, payload)\n"
        "    except OSError:\n        pass"
    )
    result, server = run(
        serve,
        backend,
        [
            repl(FIND_CHANNEL + "\nkept = 1"),
            repl(flood),
            repl("FINAL(['kept' in globals(), 'alive'])"),
        ],
    )

    assert result.status == "ok", result.error
    assert result.answer == [False, "alive"]  # a new worker answered
    told = observation_after(server, 1)
    assert "malformed" in told or "exceeds" in told
    assert "restarted" in told


@pytest.mark.parametrize("backend", BACKENDS)
def test_closing_the_channel(serve, backend: str) -> None:
    not_in_process(backend, "there is no channel")
    close = "for fd in channel_fds():\n    os.close(fd)\nprint('closed')"
    result, server = run(
        serve,
        backend,
        [repl(FIND_CHANNEL), repl(close), repl("FINAL(len(context))")],
    )

    assert result.status == "ok", result.error
    assert result.answer == len(CONTEXT)
    assert "restarted" in observation_after(server, 1)
