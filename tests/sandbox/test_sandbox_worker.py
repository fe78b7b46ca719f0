"""The sandbox as a model meets it, through real runs and real worker processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import recursa
from e2e_helpers import host_env, observation_after, repl
from recursa.core.programs import RLM
from recursa.testing import ScriptedLM

CONTEXT = "alpha beta gamma\n" * 100


def _run(serve, root: list[str], **options) -> tuple[object, object]:
    server = serve(ScriptedLM(root=root, sub=lambda request: "pong"))
    result = RLM("openai/x", base_url=server.url, **options).run("q", CONTEXT)
    return result, server


def test_variables_persist_across_turns(serve) -> None:
    result, _ = _run(
        serve,
        [repl("x = 41\nnotes = ['a']"), repl("notes.append('b')"), repl("FINAL([x + 1, notes])")],
    )

    assert result.status == "ok", result.error
    assert result.answer == [42, ["a", "b"]]


def test_context_and_llm_query_reassigned_by_the_model_are_restored_next_block(serve) -> None:
    result, _server = _run(
        serve,
        [
            repl("context = 'gone'\nllm_query = None\nFINAL_VAR = 0"),
            repl("FINAL([len(context), llm_query('ping')])"),
        ],
    )

    assert result.status == "ok", result.error
    assert result.answer == [len(CONTEXT), "pong"]


def test_restored_names_hold_for_the_next_block_of_the_same_reply(serve) -> None:
    reply = (
        repl("context = None\nllm_query_batched = print")
        + "\n"
        + repl("FINAL([context[:5], llm_query_batched(['a', 'b'])])")
    )
    result, _ = _run(serve, [reply])

    assert result.answer == ["alpha", ["pong", "pong"]]


def test_huge_print_is_cut_in_the_middle_with_its_true_length_and_stays_bounded(serve) -> None:
    limit = 2_000
    code = "print('A' * 60_000 + 'MIDDLE' + 'Z' * 60_000)"
    result, server = _run(serve, [repl(code), repl("FINAL('done')")], max_output_chars=limit)

    assert result.status == "ok"
    told = observation_after(server, 0)
    assert len(told) <= limit + 200
    assert "MIDDLE" not in told
    assert "120,007" in told  # the true length of what was printed (with its newline)
    body = told.split("]", 1)[1].strip()
    assert body.startswith("AAAA")
    assert body.endswith("ZZZZ")


def test_output_of_stdout_and_stderr_together_stays_bounded(serve) -> None:
    limit = 1_000
    code = (
        "import sys\n"
        "for i in range(5000):\n"
        "    print('out line', i)\n"
        "    print('err line', i, file=sys.stderr)"
    )
    result, server = _run(serve, [repl(code), repl("FINAL('done')")], max_output_chars=limit)

    assert result.status == "ok"
    told = observation_after(server, 0)
    assert len(told) <= limit + 200
    assert "out line 0" in told


def test_block_past_cell_timeout_is_interrupted_and_variables_survive(serve) -> None:
    result, server = _run(
        serve,
        [
            repl("kept = 'still here'"),
            repl("n = 0\nwhile True:\n    n += 1"),
            repl("FINAL([kept, n > 0])"),
        ],
        cell_timeout=0.5,
    )

    assert result.status == "ok", result.error
    assert result.answer == ["still here", True]
    told = observation_after(server, 1)
    assert "interrupted" in told
    assert "limit" in told


def test_os_exit_kills_the_worker_the_model_is_told_and_context_is_reloaded(serve) -> None:
    result, server = _run(
        serve,
        [
            repl("lost = 1"),
            repl("import os\nos._exit(1)"),
            repl("FINAL([len(context), context[:5], 'lost' in globals()])"),
        ],
    )

    assert result.status == "ok", result.error
    assert result.answer == [len(CONTEXT), "alpha", False]
    told = observation_after(server, 1)
    assert "exit code 1" in told
    assert "restarted" in told
    assert "reloaded" in told


def test_sys_exit_does_not_end_the_repl(serve) -> None:
    result, server = _run(serve, [repl("kept = 5\nraise SystemExit(3)"), repl("FINAL(kept)")])

    assert result.answer == 5
    assert "SystemExit" in observation_after(server, 0)


@pytest.mark.parametrize("sandbox", ["auto", "subprocess"])
def test_the_worker_environment_holds_no_host_variable(
    serve, monkeypatch: pytest.MonkeyPatch, sandbox: str
) -> None:
    secret = "sk-test-e2e-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("RECURSA_E2E_MARKER", "host-only")
    code = (
        "import os, subprocess\n"
        "env = dict(os.environ)\n"
        "listing = subprocess.run(['env'], capture_output=True, text=True).stdout\n"
        "proc_env = open('/proc/self/environ', 'rb').read().decode('utf-8', 'replace')\n"
        "FINAL({'env': env, 'listing': listing, 'proc': proc_env})"
    )
    result, server = _run(serve, [repl(code)], sandbox=sandbox)

    assert result.status == "ok", result.error
    seen = result.answer
    assert "OPENAI_API_KEY" not in seen["env"]
    assert "RECURSA_E2E_MARKER" not in seen["env"]
    for text in (repr(seen["env"]), seen["listing"], seen["proc"]):
        assert secret not in text
        assert "host-only" not in text
    # The key still reached the server: the host used it, the sandbox never saw it.
    assert server.requests[0].headers.get("authorization") == f"Bearer {secret}"


def test_a_failing_block_shows_the_model_its_traceback_and_the_run_goes_on(serve) -> None:
    result, server = _run(
        serve,
        [repl("def f():\n    return {}['missing']\nf()"), repl("FINAL('recovered')")],
    )

    assert result.answer == "recovered"
    told = observation_after(server, 0)
    assert "KeyError" in told
    assert "missing" in told
    assert "worker.py" not in told  # only the model's own frames are shown


def test_a_recursa_installed_under_tmp_runs_blocks_in_the_default_sandbox() -> None:
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="recursa-e2e-"))
    try:
        shutil.copytree(
            Path(recursa.__file__).parent,
            root / "recursa",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        script = textwrap.dedent(
            f"""
            import recursa
            from recursa.core.programs import RLM
            from recursa.testing import FakeLMServer, ScriptedLM
            assert recursa.__file__.startswith({str(root)!r}), recursa.__file__
            lm = ScriptedLM(root=["```repl\\nFINAL(6 * 7)\\n```"])
            with FakeLMServer(lm) as server:
                result = RLM("openai/x", base_url=server.url).run("q", "ctx")
            print(result.status, result.answer)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=host_env(PYTHONPATH=str(root)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    assert done.stdout.strip() == "ok 42", done.stderr[-2000:]
