"""100 sub-queries of 0.25 s in one `llm_query_batched` call, at concurrency 25.

    python -m recursa.evals.perf.fanout [--json PATH]

A real RLM run (subprocess sandbox, Gateway, OpenAICompatClient over HTTP) against a
FakeLMServer with latency=0.25 s in its own process: the scripted root writes one block
that calls `llm_query_batched` with 100 prompts, then FINAL. The figure is that block's wall
time (the `block` event's elapsed_s) against the ideal schedule, 100 / 25 * 0.25 s = 1.0 s.
Also shown: the median latency of one sub-query as the gateway saw it, and the most
requests the server had in flight at once.

Target: within 1.2x of the ideal. Peers (ANCHORS.md): official library 1.20x, DSPy 1.32x.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from recursa.core.programs import RLM

from .common import Result, ServerProcess, median_of, report

BENCH = "fanout"
N = 100
CONCURRENCY = 25
LATENCY = 0.25
IDEAL = N / CONCURRENCY * LATENCY
TARGET = 1.2


def one_run(url: str) -> dict[str, Any]:
    blocks: list[float] = []
    latencies: list[float] = []

    def on_event(event: Any) -> None:
        if event.type == "block" and "llm_query_batched" in event.code:
            blocks.append(event.elapsed_s)
        elif event.type == "lm_call_end" and event.purpose == "sub":
            latencies.append(event.latency_s)

    rlm = RLM("openai/fake", base_url=url, env={}, concurrency=CONCURRENCY)
    result = rlm.run("Ask every chunk.", "a small context", on_event=on_event)
    if result.status != "ok" or len(blocks) != 1 or result.usage["llm_calls"] != N + 2:
        raise RuntimeError(f"unexpected run: {result.status} {result.error} {result.usage}")
    return {
        "block_s": blocks[0],
        "sub_latency_s": statistics.median(latencies),
        "sub_latency_max_s": max(latencies),
    }


def main(repeats: int = 5) -> list[Result]:
    runs = []
    with ServerProcess("fanout", N, latency=LATENCY) as server:
        one_run(server.url)  # warm-up: imports, page cache
        server.stats()
        for _ in range(repeats):
            run = one_run(server.url)
            run.update(server.stats())
            runs.append(run)
    block = median_of(r["block_s"] for r in runs)
    in_flight = max(r["max_in_flight"] for r in runs)
    sub = median_of(r["sub_latency_s"] for r in runs)
    return [
        Result(
            BENCH,
            f"{N} x {LATENCY:g} s sub-queries at concurrency {CONCURRENCY}: block / ideal",
            block / IDEAL,
            "x",
            target=TARGET,
            compare="official 1.20x; DSPy 1.32x",
            note=(
                f"block wall time {block:.3f} s (ideal {IDEAL:.2f} s), runs: "
                + ", ".join(f"{r['block_s']:.3f}" for r in runs)
                + f"; median sub-query latency {sub * 1000:.0f} ms; "
                f"server max in flight {in_flight}"
            ),
            extra={"runs": runs},
        ),
        Result(BENCH, "    block wall time", block, "s"),
        Result(BENCH, "    median sub-query latency seen by the gateway", sub * 1000, "ms"),
    ]


if __name__ == "__main__":
    print("fanout: one llm_query_batched block of 100 x 0.25 s at concurrency 25")
    report(main(), sys.argv[1:])
