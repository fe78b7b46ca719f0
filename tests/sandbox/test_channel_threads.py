"""Model code that calls the host from several threads at once, through real workers."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from typing import Any

import pytest

from e2e_helpers import assert_usage_matches_server, observation_after, repl, start_cli
from recursa.core.programs import RLM
from recursa.sandbox import bwrap_problem
from recursa.testing import ScriptedLM

CONTEXT = "alpha beta gamma\n" * 100
BACKENDS = [
    "subprocess",
    pytest.param(
        "bwrap", marks=pytest.mark.skipif(bwrap_problem() is not None, reason=str(bwrap_problem()))
    ),
]


def echo(request: Any) -> str:
    """Each sub-query's answer names its own prompt, so a crossed reply shows."""
    return "re:" + request.last_user


def run(
    serve, blocks: list[str], backend: str = "subprocess", **options: Any
) -> tuple[Any, Any, list[Any]]:
    server = serve(ScriptedLM(root=blocks, sub=echo))
    events: list[Any] = []
    rlm = RLM("openai/x", base_url=server.url, sandbox=backend, **options)
    result = rlm.run("q", CONTEXT, on_event=events.append)
    return result, server, events


POOL = """
from concurrent.futures import ThreadPoolExecutor
kept = 41
with ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(llm_query, [f'p{i}' for i in range(16)]))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_eight_threads_calling_llm_query_each_get_their_own_answer(serve, backend: str) -> None:
    result, server, events = run(serve, [repl(POOL), repl("FINAL([kept + 1, answers])")], backend)

    assert result.status == "ok", result.error
    assert result.answer == [42, [f"re:p{i}" for i in range(16)]]
    assert_usage_matches_server(result.usage, server)
    starts = [e for e in events if e.type == "lm_call_start"]
    ends = [e for e in events if e.type == "lm_call_end"]
    assert len(starts) == len(ends) == server.request_count == 2 + 16


def test_the_cell_timeout_stops_while_any_thread_waits_on_a_call(serve) -> None:
    def slow(request: Any) -> str:
        time.sleep(0.6)  # two waves of eight: longer in calls than the cell timeout
        return echo(request)

    server = serve(ScriptedLM(root=[repl(POOL), repl("FINAL(answers)")], sub=slow))
    result = RLM("openai/x", base_url=server.url, sandbox="subprocess", cell_timeout=1).run(
        "q", CONTEXT
    )

    assert result.status == "ok", result.error
    assert result.answer == [f"re:p{i}" for i in range(16)]
    assert "TimeoutError" not in observation_after(server, 0)


MIXED = """
from concurrent.futures import ThreadPoolExecutor
def work(i):
    if i % 2:
        return llm_query_batched([f'b{i}a', f'b{i}b'])
    return [llm_query(f'q{i}')]
with ThreadPoolExecutor(6) as pool:
    answers = list(pool.map(work, range(12)))
"""


def test_threads_mixing_llm_query_and_batched_calls(serve) -> None:
    result, server, _ = run(serve, [repl(MIXED), repl("FINAL(answers)")])

    assert result.status == "ok", result.error
    want = [[f"re:b{i}a", f"re:b{i}b"] if i % 2 else [f"re:q{i}"] for i in range(12)]
    assert result.answer == want
    assert_usage_matches_server(result.usage, server)


LATE = """
import sys, threading, time
late = []
def later():
    while type(sys.stdout).__name__ == 'CappedText':  # until the block is over
        time.sleep(0.01)
    try:
        late.append(llm_query('late'))
    except Exception as exc:
        late.append(f'{type(exc).__name__}: {exc}')
threading.Thread(target=later, daemon=True).start()
"""


def test_a_thread_that_outlives_its_block_gets_a_clear_error_and_blocks_go_on(serve) -> None:
    blocks = [repl(LATE), repl("print(late)"), repl("FINAL([late, llm_query('after')])")]

    def root(request: Any) -> str:
        if request.turn == 1:  # the late call comes while the host waits for this reply
            time.sleep(1.0)
        return blocks[min(request.turn, 2)]

    server = serve(ScriptedLM(root=root, sub=echo))
    rlm = RLM("openai/x", base_url=server.url, sandbox="subprocess")
    result = rlm.run("q", CONTEXT)

    assert result.status == "ok", result.error
    (late,) = result.answer[0]
    assert late.startswith("LLMQueryError: a thread that outlived its block"), late
    assert result.answer[1] == "re:after"
    assert server.request_count == 3 + 1  # three root turns, one sub-query: 'after'
    assert "[error]" not in observation_after(server, 1)


CHILDREN = """
from concurrent.futures import ThreadPoolExecutor
with ThreadPoolExecutor(4) as pool:
    answers = list(pool.map(lambda i: rlm_query(f'kid{i}', context='c'), range(4)))
"""


def test_threads_starting_child_rlms_each_get_their_childs_answer(serve) -> None:
    def root(request: Any) -> str:
        asked = (
            re.search(r"kid(\d+)", request.messages[-1]["content"]) if request.turn == 0 else None
        )
        if asked:  # a child's first turn
            return repl(f"FINAL('answer {asked.group(1)}')")
        return [repl(CHILDREN), repl("FINAL(answers)")][min(request.turn, 1)]

    server = serve(ScriptedLM(root=root, sub=echo))
    events: list[Any] = []
    rlm = RLM("openai/x", base_url=server.url, sandbox="subprocess", max_depth=2)
    result = rlm.run("q", CONTEXT, on_event=events.append)

    assert result.status == "ok", result.error
    assert result.answer == [f"answer {i}" for i in range(4)]
    assert_usage_matches_server(result.usage, server)
    assert sum(e.type == "rlm_end" for e in events) == 5


@pytest.mark.parametrize("where", ["asking", "in-a-block"])
def test_after_sigint_a_childs_rlm_end_comes_before_the_runs_run_end(
    serve, tmp_path, where: str
) -> None:
    arrived, release = threading.Event(), threading.Event()

    def root(request: Any) -> str:
        if "kid" in request.messages[-1]["content"] and request.turn == 0:
            if where == "in-a-block":  # its block tells the test, then sleeps
                return repl("llm_query('inside')\nimport time\ntime.sleep(30)")
            arrived.set()  # the child waits here for its first reply
            release.wait(30)
            return repl("FINAL('late')")
        return repl("FINAL(rlm_query('kid', context='c'))")

    def sub(request: Any) -> str:
        arrived.set()
        return "ok"

    server = serve(ScriptedLM(root=root, sub=sub))
    trace = tmp_path / "t.jsonl"
    proc = start_cli(
        [
            "run",
            "q",
            "--model",
            "openai/x",
            "--base-url",
            server.url,
            "--max-depth",
            "2",
            "--sandbox",
            "subprocess",
            "--trace",
            str(trace),
            "--quiet",
        ]
    )
    try:
        assert arrived.wait(60), "the child RLM never asked its first question"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()

    events = [json.loads(line) for line in trace.read_text(encoding="utf-8").splitlines()]
    kinds = [(e["type"], e.get("rlm")) for e in events]
    assert kinds[-1][0] == "run_end", kinds
    ended = {rlm for kind, rlm in kinds if kind == "rlm_end"}
    started = {rlm for kind, rlm in kinds if kind == "rlm_start"}
    assert len(started) == 2 and ended == started, kinds
