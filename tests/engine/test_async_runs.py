"""The async API end to end: `arun`, the event iterator, cancellation that leaves no worker
behind, and twenty concurrent runs in one event loop that share nothing by accident.

Workers are found from the host's /proc by a tag the model's code writes to its own
/proc/self/comm (as in test_worker_cleanup), which works under bubblewrap's pid namespace too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_helpers import repl
from recursa import RLM, tool
from recursa.events import Event
from recursa.testing import LMRequest, ScriptedLM

RUNS = 20


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique prefix for this test's worker names; any left behind are killed afterwards."""
    value = "rq" + uuid.uuid4().hex[:8]
    yield value
    for pid in tagged(value):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def tagged(prefix: str) -> list[int]:
    """Live processes (zombies excluded) whose name starts with `prefix`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if comm.startswith(prefix) and stat[stat.rindex(")") + 2] != "Z":
            found.append(int(entry.name))
    return found


def gone(prefix: str, within: float = 5.0) -> list[int]:
    """The tagged processes still alive after waiting up to `within` seconds for them."""
    deadline = time.monotonic() + within
    while (left := tagged(prefix)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def name_worker(name: str) -> str:
    return f"with open('/proc/self/comm', 'w') as fh:\n    fh.write({name!r})\n"


# ---- arun and the event iterator ----------------------------------------------------------------


async def test_arun_answers_inside_the_callers_event_loop(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(len(context))")]))
    rlm = RLM("openai/x", base_url=server.url)

    result = await rlm.arun("How long?", "x" * 321)

    assert (result.status, result.answer) == ("ok", 321)


async def test_the_sync_run_also_works_from_inside_a_running_event_loop(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('sync')")]))

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.answer == "sync"


async def test_the_event_iterator_yields_the_run_as_it_happens_ending_with_run_end(serve) -> None:
    server = serve(ScriptedLM(root=[repl("x = 41"), repl("FINAL(x + 1)")]))
    rlm = RLM("openai/x", base_url=server.url)

    events: list[Event] = [e async for e in rlm.events("q", "ctx")]

    types = [e.type for e in events]
    assert types.index("run_start") < types.index("turn_start") and types[-1] == "run_end"
    assert types.count("turn_start") == 2 and types.count("block") == 2
    assert events[-1].answer == 42 and events[-1].status == "ok"
    assert len({e.run_id for e in events}) == 1


async def test_leaving_the_event_iterator_early_stops_the_run_and_its_worker(
    serve, tag: str
) -> None:
    server = serve(
        ScriptedLM(root=[repl(name_worker(tag) + "print('named')"), repl("while True:\n    pass")])
    )
    rlm = RLM("openai/x", base_url=server.url, cell_timeout=60)

    seen = []
    async with contextlib.aclosing(rlm.events("q", "ctx")) as stream:
        async for event in stream:
            seen.append(event.type)
            if event.type == "turn_start" and event.iteration == 2:
                assert len(tagged(tag)) == 1  # the worker was named and is running
                break

    assert "run_end" not in seen
    assert gone(tag) == []


# ---- cancellation -----------------------------------------------------------------------------


async def test_cancelling_the_task_mid_block_stops_the_run_and_leaves_no_worker(
    serve, tag: str
) -> None:
    looping = threading.Event()

    def now_looping() -> str:
        looping.set()
        return "host saw it"

    server = serve(
        ScriptedLM(
            root=[
                repl(name_worker(tag) + "print('named')"),
                repl("now_looping()\nwhile True:\n    pass"),
                repl("FINAL('should never get here')"),
            ]
        )
    )
    ended: list[Event] = []
    rlm = RLM(
        "openai/x",
        base_url=server.url,
        cell_timeout=60,
        tools=[tool(now_looping)],
        on_event=lambda e: ended.append(e) if e.type == "run_end" else None,
    )

    task = asyncio.create_task(rlm.arun("q", "ctx"))
    assert await asyncio.to_thread(looping.wait, 30), "the looping block never started"
    assert len(tagged(tag)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert gone(tag) == []
    assert server.request_count == 2  # nothing was asked after the cancellation
    (end,) = ended
    assert end.status == "error" and end.error == "the run was cancelled"
    assert end.usage["llm_calls"] == 2


# ---- twenty concurrent runs ----------------------------------------------------------------------


async def test_twenty_concurrent_runs_share_no_answer_usage_worker_or_variable(
    serve, tag: str
) -> None:
    workers: dict[int, list[int]] = {}
    lock = threading.Lock()

    def root(request: LMRequest) -> str:
        i = int(request.model.rsplit("-", 1)[1])
        if request.turn == 0:
            return repl(
                name_worker(f"{tag}{i:02d}")
                + f"mine_{i} = context\n"
                + "print(sorted(n for n in SHOW_VARS() if n.startswith('mine_')))"
            )
        found = tagged(f"{tag}{i:02d}")  # seen from the host, while this run is alive
        with lock:
            workers[i] = found
        return repl(
            f"FINAL({{'context': mine_{i}, "
            "'visible': sorted(n for n in SHOW_VARS() if n.startswith('mine_'))})"
        )

    server = serve(ScriptedLM(root=root), latency=0.05)

    async def one(i: int):
        rlm = RLM(f"openai/run-{i}", base_url=server.url)
        return await rlm.arun(f"question {i}", f"the context of run {i}")

    results = await asyncio.gather(*(one(i) for i in range(RUNS)))

    for i, result in enumerate(results):
        assert result.status == "ok", (i, result.error)
        assert result.answer["context"] == f"the context of run {i}"
        assert result.answer["visible"] == [f"mine_{i}"]  # no other run's variable
        model = f"openai/run-{i}"
        served = server.by_model[f"run-{i}"]  # the provider prefix is not sent
        assert list(result.usage["by_model"]) == [model]
        assert result.usage["llm_calls"] == served["responses"] == 2
        assert result.usage["input_tokens"] == served["input_tokens"]
        assert result.usage["output_tokens"] == served["output_tokens"]
        assert {e.run_id for e in result.events} == {result.run_id}
    assert len({r.run_id for r in results}) == RUNS
    assert sorted(workers) == list(range(RUNS))
    assert all(len(pids) == 1 for pids in workers.values()), workers
    assert len({pids[0] for pids in workers.values()}) == RUNS  # twenty different workers
    assert sum(r.usage["llm_calls"] for r in results) == server.request_count
    assert server.max_in_flight > 1  # the runs did overlap
    assert gone(tag) == []
