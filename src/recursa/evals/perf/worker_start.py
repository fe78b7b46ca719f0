"""Sandbox worker start to ready, with an empty context and with a 10 MB context.

    python -m recursa.evals.perf.worker_start [--json PATH]

Both backends that run here: SubprocessSandbox, and BwrapSandbox (the same worker inside
bubblewrap's namespaces; what `sandbox="auto"` picks where it works). `start` spawns
`python -I worker.py`, sends the `init` frame (with the context's bytes as its body) and
waits for `ready`. Timed alone: the host's preparation of the payload
(`from_text` hashes the text, `build_payload` encodes it) is reported on its own line, and
`close` too. The floor is the interpreter itself: `python -I -c pass`.

Target: at most 50 ms with an empty context. For scale (ANCHORS.md): a bare persistent
worker measured about 15 ms to start here, about 20 ms inside bubblewrap; DSPy's sandbox
boots in 2.9 s.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from recursa.context import build_payload, from_text
from recursa.sandbox.base import ContextPayload

from .common import MB, Result, median_of, report, sandbox_backends, synthetic_text, time_calls

BENCH = "worker_start"
TARGET_MS = 50.0


async def start_close(backend: type, payload: ContextPayload, repeats: int) -> tuple[float, float]:
    """Median seconds of `start` (to ready) and of `close`."""
    starts, closes = [], []
    for _ in range(repeats + 1):
        sandbox = backend()
        t0 = time.perf_counter()
        await sandbox.start(payload)
        t1 = time.perf_counter()
        await sandbox.close()
        t2 = time.perf_counter()
        starts.append(t1 - t0)
        closes.append(t2 - t1)
    # the first one warms the page cache and the event loop's child watcher
    return median_of(starts[1:]), median_of(closes[1:])


def main() -> list[Result]:
    ms = 1000.0
    out: list[Result] = []
    floor = median_of(
        time_calls(lambda: subprocess.run([sys.executable, "-I", "-c", "pass"], check=True), 10)
    )
    text = synthetic_text(10 * MB)
    prep = median_of(time_calls(lambda: build_payload([from_text(text)]), 5))
    payload = build_payload([from_text(text)])
    closes = []
    for name, backend in sandbox_backends():
        empty_start, empty_close = asyncio.run(start_close(backend, ContextPayload(), 30))
        big_start, big_close = asyncio.run(start_close(backend, payload, 12))
        out.append(
            Result(
                BENCH,
                f"start to ready, empty context, {name}",
                empty_start * ms,
                "ms",
                target=TARGET_MS,
                compare="bare worker ~15 ms, in bwrap ~20 ms; DSPy sandbox 2,900 ms",
            )
        )
        out.append(Result(BENCH, f"start to ready, 10 MB context, {name}", big_start * ms, "ms"))
        closes.append((name, empty_close, big_close))
    out.append(Result(BENCH, "    host-side payload prep, 10 MB (hash + encode)", prep * ms, "ms"))
    out.append(Result(BENCH, "    floor: python -I -c pass", floor * ms, "ms"))
    for name, empty_close, big_close in closes:
        out.append(
            Result(
                BENCH,
                f"close, {name}",
                empty_close * ms,
                "ms",
                note=f"with a 10 MB context: {big_close * ms:.1f} ms",
            )
        )
    return out


if __name__ == "__main__":
    print("worker_start: sandbox worker start to ready")
    report(main(), sys.argv[1:])
