"""Cost of one RLM iteration apart from the model, with a 10 MB context loaded.

    python -m recursa.evals.perf.iteration [--json PATH]

(a) exec round trip of a trivial block (`x = 1`) through SubprocessSandbox.execute (and
    BwrapSandbox, the backend `sandbox="auto"` picks where bubblewrap works);
(b) the engine's handling of a turn: parse_turn + rendering the observation (pure), and
    `Loop._handle` with a stub sandbox (parse, dispatch, the `block` event, render);
(c) one request through the Gateway (ledger + semaphore + OpenAICompatClient) to a
    FakeLMServer with zero latency in its own process, beside two floors: the same request
    with a bare httpx.AsyncClient (what the fake server and the socket cost), and the
    Gateway with the in-process ScriptedLM (what the ledger, semaphore and events cost);
(d) whole root turns end to end through `RLM(...).arun`: a scripted model runs 30 trivial
    turns (`x = K` then `print(x)`, K the turn, so no two are alike), then FINAL. Reported
    as the steady state (time between the first and the last trivial turn_end events,
    divided by the turns in between) and as the whole run's wall time divided by its turns
    (which also carries the worker start and the 10 MB load). Over HTTP to the fake server
    with each sandbox backend, and with the in-process ScriptedLM and the default backend.

Target: at most 5 ms per iteration. Peers (ANCHORS.md, 10 MB input): official library
1.7 ms, DSPy 1,482 ms.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import httpx

from recursa.budget import Ledger, Limits
from recursa.context import build_payload, describe, from_text
from recursa.core import prompts
from recursa.core.code_loop import Loop
from recursa.core.gateway import ClientPool, Gateway
from recursa.core.programs import RLM
from recursa.core.protocol import parse_turn
from recursa.core.run import Run
from recursa.events import Emitter
from recursa.sandbox.base import BlockResult
from recursa.testing import ScriptedLM

from .common import (
    MB,
    Result,
    ServerProcess,
    default_backend,
    median_of,
    report,
    sandbox_backends,
    synthetic_text,
)
from .fake_server import trivial_turns

BENCH = "iteration"
TARGET_MS = 5.0
ROUND_TRIP_TARGETS_US = {"bwrap": 100.0, "landlock": 150.0}
"""The sandbox issues' targets for one exec round trip, by backend."""
PEERS = "official 1.7 ms; DSPy 1,482 ms"
TURNS = 30
REPLY = "I will check the variable and go on.\n```repl\nx = 1\n```"


async def _no_calls(fn: str, args: dict[str, Any]) -> Any:
    raise ValueError("no calls expected")


async def exec_round_trip(backend: type, text: str, n: int) -> float:
    sandbox = backend()
    await sandbox.start(build_payload([from_text(text)]))
    try:
        for _ in range(50):
            await sandbox.execute("x = 1", _no_calls)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            result = await sandbox.execute("x = 1", _no_calls)
            samples.append(time.perf_counter() - t0)
        assert result.error is None, result.error
    finally:
        await sandbox.close()
    return median_of(samples)


class _StubSandbox:
    """Answers every block at once, as a finished `x = 1` would."""

    name = "stub"

    async def execute(self, code: str, handler: Any) -> BlockResult:
        return BlockResult(new_vars=["x"], vars={"x": "int"})

    async def get_value(self, name: str) -> dict[str, Any] | None:
        return None


def _loop(text: str) -> Loop:
    rlm = RLM("openai/scripted", client=ScriptedLM(root=[REPLY]), env={})
    run = Run(rlm, [])
    loop = Loop(run, "0", 0, "openai/scripted")
    loop.contexts = [from_text(text)]
    loop.sandbox = _StubSandbox()  # type: ignore[assignment]
    return loop


def turn_handling(text: str, n: int) -> tuple[float, float]:
    """(parse_turn + render, whole _handle with a stub sandbox), seconds per turn."""
    loop = _loop(text)
    result = BlockResult(new_vars=["x"], vars={"x": "int"})

    def pure() -> str:
        parsed = parse_turn(REPLY)
        return "\n\n".join(loop._render(i, result, code) for i, code in enumerate(parsed.blocks, 1))

    for _ in range(200):
        pure()
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            pure()
        samples.append((time.perf_counter() - t0) / n)
    pure_s = median_of(samples)

    async def handled() -> float:
        loop._starting = asyncio.ensure_future(asyncio.sleep(0))  # the stub needs no start
        for i in range(200):
            await loop._handle(REPLY, parse_turn(REPLY), i)
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            for i in range(n):
                await loop._handle(REPLY, parse_turn(REPLY), i)
            runs.append((time.perf_counter() - t0) / n)
        return median_of(runs)

    handle_s = asyncio.run(handled())
    return pure_s, handle_s


def _first_messages(text: str) -> list[dict[str, str]]:
    loop = _loop(text)
    ctx = [from_text(text[:1000])]
    first = prompts.FIRST_USER.format(context_description=describe(ctx), question="question?")
    return [
        {"role": "system", "content": loop._system_prompt()},
        {"role": "user", "content": first},
    ]


async def gateway_requests(url: str | None, messages: list[dict[str, str]], n: int) -> float:
    """Median seconds for one Gateway.complete: over HTTP to `url`, or in process."""
    client = ScriptedLM(root=lambda r: REPLY, sub=lambda r: REPLY) if url is None else None
    pool = ClientPool(
        base_url=url, base_url_for="openai/fake", client=client, env={}, max_connections=16
    )
    gateway = Gateway(Ledger(limits=Limits()), pool, Emitter("bench", []), concurrency=16)
    try:
        for _ in range(30):
            await gateway.complete(messages, model="openai/fake", depth=0, rlm="0", purpose="root")
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            await gateway.complete(messages, model="openai/fake", depth=0, rlm="0", purpose="root")
            samples.append(time.perf_counter() - t0)
    finally:
        await pool.aclose()
    return median_of(samples)


async def bare_httpx(url: str, messages: list[dict[str, str]], n: int) -> float:
    body = {"model": "fake", "messages": messages, "max_tokens": 4096}
    async with httpx.AsyncClient() as client:
        for _ in range(30):
            (await client.post(f"{url}/chat/completions", json=body)).raise_for_status()
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            (await client.post(f"{url}/chat/completions", json=body)).json()
            samples.append(time.perf_counter() - t0)
    return median_of(samples)


def end_to_end(text: str, url: str | None, sandbox: str, repeats: int) -> dict[str, float]:
    """Medians over repeats, in seconds: `steady` (per trivial turn, between the first and
    the last trivial turn_end), `whole` (run wall time / turns), and the run's fixed costs
    read from its events: `start` (rlm_start to the first request: worker start and the
    10 MB load), `first` (the first request: client creation and connect included), `close`
    (the last turn_end to rlm_end: worker shutdown), `before` (arun called to rlm_start:
    hashing and describing the context)."""
    keys = ("steady", "whole", "start", "first", "close", "before")
    runs: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(repeats):
        if url is None:
            client = ScriptedLM(root=trivial_turns(TURNS), sub=lambda r: "ok")
            rlm = RLM(
                "openai/scripted", client=client, env={}, max_iterations=TURNS + 5, sandbox=sandbox
            )
        else:
            rlm = RLM(
                "openai/fake", base_url=url, env={}, max_iterations=TURNS + 5, sandbox=sandbox
            )
        ends: list[float] = []
        marks: dict[str, float] = {}

        def on_event(event: Any, ends: list[float] = ends, marks: dict[str, float] = marks) -> None:
            now = time.perf_counter()
            if event.type == "turn_end":
                ends.append(now)
            elif event.type in ("rlm_start", "rlm_end"):
                marks[event.type] = now
            elif event.type == "lm_call_start":
                marks.setdefault("lm_start", now)
            elif event.type == "lm_call_end":
                marks.setdefault("lm_end", now)

        t0 = time.perf_counter()
        result = asyncio.run(rlm.arun("What is x?", text, on_event=on_event))
        wall = time.perf_counter() - t0
        if result.status != "ok" or result.iterations != TURNS + 1 or len(ends) != TURNS + 1:
            raise RuntimeError(f"unexpected run: {result.status} {result.error}")
        trivial = ends[:TURNS]
        runs["steady"].append((trivial[-1] - trivial[0]) / (len(trivial) - 1))
        runs["whole"].append(wall / result.iterations)
        runs["before"].append(marks["rlm_start"] - t0)
        runs["start"].append(marks["lm_start"] - marks["rlm_start"])
        runs["first"].append(marks["lm_end"] - marks["lm_start"])
        runs["close"].append(marks["rlm_end"] - ends[-1])
    return {k: median_of(v) for k, v in runs.items()}


def main() -> list[Result]:
    text = synthetic_text(10 * MB)
    ms = 1000.0
    out: list[Result] = []

    backends = sandbox_backends()
    default = default_backend()
    exec_s = {}
    for name, backend in backends:
        exec_s[name] = asyncio.run(exec_round_trip(backend, text, 1000))
        out.append(
            Result(
                BENCH,
                f"(a) exec round trip, trivial block, {name}",
                exec_s[name] * 1e6,
                "us",
                target=ROUND_TRIP_TARGETS_US.get(name),
            )
        )
    a_s = exec_s[default]

    pure_s, handle_s = turn_handling(text, 5000)
    out.append(Result(BENCH, "(b) parse_turn + render observation", pure_s * 1e6, "us"))
    out.append(Result(BENCH, "(b') engine _handle, stub sandbox", handle_s * 1e6, "us"))

    messages = _first_messages(text)
    with ServerProcess("const") as server:
        c_http = asyncio.run(gateway_requests(server.url, messages, 300))
        c_bare = asyncio.run(bare_httpx(server.url, messages, 300))
    c_inproc = asyncio.run(gateway_requests(None, messages, 2000))
    out.append(Result(BENCH, "(c) Gateway request over HTTP, fake server", c_http * ms, "ms"))
    out.append(
        Result(
            BENCH,
            "    floor: bare httpx, same request, same server",
            c_bare * ms,
            "ms",
            note="what the fake server and the loopback socket cost by themselves",
        )
    )
    out.append(
        Result(BENCH, "    Gateway with in-process ScriptedLM (no HTTP)", c_inproc * 1e6, "us")
    )
    parts = a_s + handle_s + c_http
    out.append(
        Result(
            BENCH,
            f"(a)+(b')+(c): parts of one iteration ({default})",
            parts * ms,
            "ms",
            target=TARGET_MS,
            compare=PEERS,
        )
    )

    runs = []
    with ServerProcess("turns", TURNS) as server:
        for name, _ in backends:
            runs.append((f"HTTP fake server, {name}", end_to_end(text, server.url, name, 5)))
    runs.append((f"in-process ScriptedLM, {default}", end_to_end(text, None, default, 5)))
    for label, d in runs:
        out.append(
            Result(
                BENCH,
                f"(d) root turn end to end (steady), {label}",
                d["steady"] * ms,
                "ms",
                target=TARGET_MS,
                compare=PEERS,
            )
        )
    for label, d in runs:
        out.append(
            Result(
                BENCH,
                f"(d) whole run / {TURNS + 1} turns, {label}",
                d["whole"] * ms,
                "ms",
                target=TARGET_MS,
                compare=PEERS,
                note=(
                    "fixed costs in it: context hash+describe {:.0f} ms, worker start with 10 MB "
                    "{:.0f} ms, first request {:.0f} ms, worker close {:.0f} ms".format(
                        d["before"] * ms, d["start"] * ms, d["first"] * ms, d["close"] * ms
                    )
                ),
                extra={k: v * ms for k, v in d.items()},
            )
        )
    return out


if __name__ == "__main__":
    print("iteration: one RLM iteration apart from the model, 10 MB context")
    report(main(), sys.argv[1:])
