"""Limits and hardening of the sandbox backends, checked from inside real workers; the
docker backend's command line; the protocol checks on what comes out of a worker; and the
table of docs/SANDBOX.md against `recursa.sandbox.threats`."""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import host_env, one_json_object, repl, run_cli
from recursa.core.programs import RLM
from recursa.errors import ConfigError
from recursa.sandbox import (
    ContextPayload,
    bwrap_problem,
    docker_problem,
    landlock_problem,
    make_sandbox,
    resolve_backend,
)
from recursa.sandbox import limits as _limits
from recursa.sandbox.bwrap import _userns_flags
from recursa.sandbox.docker import client_env, docker_argv
from recursa.sandbox.inside.worker import CappedText, _put_back
from recursa.sandbox.process import _tree
from recursa.sandbox.received import Malformed, block_result
from recursa.sandbox.threats import ATTACKS, BACKEND_ORDER, markdown_table
from recursa.testing import ScriptedLM

ROOT = Path(__file__).resolve().parents[2]
PROCESS_BACKENDS = [
    "subprocess",
    pytest.param(
        "bwrap", marks=pytest.mark.skipif(bwrap_problem() is not None, reason=str(bwrap_problem()))
    ),
    pytest.param(
        "landlock",
        marks=pytest.mark.skipif(landlock_problem() is not None, reason=str(landlock_problem())),
    ),
]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root's workers drop capabilities")


async def _no_calls(fn: str, args: dict[str, Any]) -> Any:
    raise ValueError("no calls expected")


def in_worker(backend: str, code: str, **options: Any) -> tuple[Any, dict[str, Any]]:
    """Run one block in a fresh worker; (its stdout, the sandbox's limits_in_force)."""

    async def go() -> tuple[Any, dict[str, Any]]:
        sandbox = make_sandbox(backend, **options)
        await sandbox.start(ContextPayload())
        try:
            result = await sandbox.execute(code, _no_calls)
            assert result.error is None, result.error
            return result.stdout, dict(sandbox.limits_in_force)
        finally:
            await sandbox.close()

    return asyncio.run(go())


def limits_of(text: str) -> dict[str, str]:
    """/proc/self/limits as {name: soft limit}."""
    found = {}
    for line in text.splitlines()[1:]:
        match = re.match(r"(Max [a-z ]+?)\s{2,}(\S+)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_worker_runs_under_address_space_cpu_file_and_core_limits(backend: str) -> None:
    out, in_force = in_worker(
        backend, "print(open('/proc/self/limits').read())", memory_limit=300, cell_timeout=10
    )

    limits = limits_of(out)
    assert limits["Max address space"] == str(300 * 2**20)
    assert limits["Max file size"] == str(_limits.DEFAULT_FILE_MIB * 2**20)
    assert limits["Max cpu time"] == str(_limits.default_cpu_seconds(10))
    assert limits["Max core file size"] == "0"
    assert in_force["memory_mib"] == 300


def test_default_memory_limit_is_2_gib_plus_six_times_the_context() -> None:
    assert _limits.default_memory_mib(0) == 2048
    assert _limits.default_memory_mib(10 * 2**20) == 2048 + 60
    assert _limits.default_memory_mib(1) == 2048 + 6


@needs_root
def test_a_subprocess_worker_under_root_has_no_capabilities_and_no_new_privileges() -> None:
    out, _ = in_worker("subprocess", "print(open('/proc/self/status').read())")

    status = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"


def test_the_host_is_not_dumpable_once_a_subprocess_worker_ran() -> None:
    in_worker("subprocess", "pass")

    pr_get_dumpable = 3
    assert ctypes.CDLL(None).prctl(pr_get_dumpable, 0, 0, 0, 0) == 0


@pytest.mark.skipif(_limits.cgroup_problem() is not None, reason=str(_limits.cgroup_problem()))
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_a_cgroup_holds_the_workers_tree_and_is_removed_at_close(backend: str) -> None:
    async def go() -> None:
        sandbox = make_sandbox(backend, max_procs=64)
        await sandbox.start(ContextPayload())
        dirs = list(sandbox.cgroup.dirs)
        pids_dir = next(d for d in dirs if os.path.exists(os.path.join(d, "pids.max")))
        assert Path(pids_dir, "pids.max").read_text().strip() == "64"
        worker = [sandbox.proc.pid, *_tree(sandbox.proc.pid)][-1]  # under bwrap's processes
        assert worker in sandbox.cgroup.pids()
        assert sandbox.limits_in_force["processes"] == "cgroup"
        await sandbox.close()
        assert [d for d in dirs if os.path.exists(d)] == []

    asyncio.run(go())


@pytest.mark.skipif(bwrap_problem() is not None, reason=str(bwrap_problem()))
def test_bwrap_private_tmp_is_capped_at_the_memory_limit() -> None:
    code = "import os\ns = os.statvfs('/tmp')\nprint(s.f_blocks * s.f_frsize)"
    out, _ = in_worker("bwrap", code, memory_limit=200)

    assert int(out) == 200 * 2**20


@pytest.mark.skipif(
    bwrap_problem() is not None or not _userns_flags(),
    reason=f"bubblewrap cannot run ({bwrap_problem()})"
    if bwrap_problem() is not None
    else "this bubblewrap cannot forbid nested user namespaces (--disable-userns needs "
    "bwrap 0.8+ and user namespaces allowed)",
)
def test_bwrap_worker_cannot_make_a_new_user_namespace() -> None:
    code = (
        "import ctypes\n"
        "print(ctypes.CDLL(None, use_errno=True).unshare(0x10000000), ctypes.get_errno())"
    )
    out, _ = in_worker("bwrap", code)

    assert out.split()[0] == "-1"


def test_memory_limit_below_64_mib_is_refused_everywhere(serve) -> None:
    with pytest.raises(ValueError):
        make_sandbox("subprocess", memory_limit=10)
    with pytest.raises(ConfigError, match="memory_limit"):
        RLM("openai/x", base_url="http://127.0.0.1:9/v1", memory_limit=10)
    cli = run_cli(["run", "q", "--model", "openai/x", "--memory-limit", "10"])
    assert cli.rc == 2
    assert "--memory-limit" in cli.err


def test_cli_memory_limit_reaches_the_worker(serve) -> None:
    code = "limits = open('/proc/self/limits').read()\nFINAL(limits)"
    server = serve(ScriptedLM(root=[repl(code)]))
    cli = run_cli(
        [
            *("run", "q", "--model", "openai/x", "--base-url", server.url),
            *("--sandbox", "subprocess", "--memory-limit", "300", "--json", "--quiet"),
        ]
    )

    assert cli.rc == 0, cli.err
    assert limits_of(one_json_object(cli.out)["answer"])["Max address space"] == str(300 * 2**20)


def test_progress_says_which_sandbox_auto_chose(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(1)")]))
    cli = run_cli(["run", "q", "--model", "openai/x", "--base-url", server.url])

    assert cli.rc == 0, cli.err
    chosen = resolve_backend("auto")
    assert chosen in ("bwrap", "landlock")  # auto never picks an unisolated backend
    assert f"sandbox: {chosen} (" in cli.err


def test_the_local_sandbox_warns_loudly_even_when_quiet(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(1)")]))
    base = ["run", "q", "--model", "openai/x", "--base-url", server.url, "--sandbox", "local"]

    loud = run_cli(base)
    quiet = run_cli([*base, "--quiet"])

    assert loud.rc == 0, loud.err
    assert "WARNING" in loud.err
    assert "sandbox: local: WARNING" in loud.err  # the progress line too
    assert quiet.rc == 0, quiet.err
    assert "INSIDE this process" in quiet.err


# ---- docker without an engine ------------------------------------------------------------------


def test_docker_command_has_no_network_a_read_only_root_limits_and_no_host_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-docker-secret")
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/docker.sock")
    limits = _limits.WorkerLimits(memory_mib=512, cpu_seconds=3600, file_mib=64, max_procs=128)

    argv = docker_argv("recursa-test", "python:3.11-slim", limits, ["/data/ctx"])

    joined = " ".join(argv)
    for flag in (
        "--network none",
        "--read-only",
        "--cap-drop ALL",
        "--security-opt no-new-privileges",
        "--memory 512m",
        "--memory-swap 512m",
        "--pids-limit 128",
        "--cpus 1",
        "-v /data/ctx:/data/ctx:ro",
    ):
        assert flag in joined
    assert "sk-docker-secret" not in joined
    assert "OPENAI_API_KEY" not in joined
    env = client_env()  # the docker client's own environment: how to reach the engine only
    assert env["DOCKER_HOST"] == "unix:///tmp/docker.sock"
    assert "OPENAI_API_KEY" not in env


@pytest.mark.skipif(docker_problem() is None, reason="a Docker engine answers here")
def test_docker_without_an_engine_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="docker"):
        resolve_backend("docker")
    cli = run_cli(
        ["run", "q", "--model", "openai/x", "--sandbox", "docker"],
        env=host_env(OPENAI_API_KEY="sk-unused"),
    )
    assert cli.rc == 2
    assert "docker" in cli.err


# ---- what comes out of a worker ------------------------------------------------------------------

GOOD_RESULT = {"op": "result", "id": 1, "stdout": "x", "stdout_len": 1, "vars": {"a": "int"}}


@pytest.mark.parametrize(
    "bad",
    [
        {"stdout": 5},
        {"stdout_len": "1"},
        {"error": ["no"]},
        {"final": [1]},
        {"final": {"kind": "other", "json": 1}},
        {"new_vars": "abc"},
        {"vars": {"a": 1}},
    ],
    ids=lambda bad: next(iter(bad)),
)
def test_a_result_frame_of_the_wrong_shape_is_a_protocol_violation(bad: dict[str, Any]) -> None:
    assert block_result(GOOD_RESULT, 100).stdout == "x"
    with pytest.raises(Malformed, match="malformed"):
        block_result({**GOOD_RESULT, **bad}, 100)


def test_capped_text_holds_at_most_twice_its_limit_however_much_is_written() -> None:
    text = CappedText(1_000)
    for i in range(20_000):
        text.write(f"line {i}\n")
        assert text.head_len + text.tail_len <= 2_000
    text.write("Z" * 5_000_000)

    rendered, total = text.render()
    assert total == sum(len(f"line {i}\n") for i in range(20_000)) + 5_000_000
    assert rendered.startswith("line 0\n")
    assert rendered.endswith("Z" * 500)
    assert len(rendered) < 1_100


def test_put_back_restores_patched_deleted_and_added_names_in_order() -> None:
    snapshot = {"len": len, "repr": repr, "print": print}
    current = dict(snapshot)
    current["len"] = None
    del current["repr"]
    current["extra"] = 1

    _put_back(current, snapshot, list(snapshot.values()))

    assert list(current.items()) == list(snapshot.items())


# ---- the docs ------------------------------------------------------------------------------------


def test_the_docs_table_is_the_threat_table_of_the_code() -> None:
    docs = (ROOT / "docs" / "SANDBOX.md").read_text()

    assert markdown_table() in docs
    for _label, cells in ATTACKS.values():
        assert set(cells) == set(BACKEND_ORDER)
