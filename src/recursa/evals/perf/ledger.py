"""Ledger.reserve + Ledger.settle, per call, single-threaded and with 8 threads.

    python -m recursa.evals.perf.ledger [--json PATH]

One "call" is one reserve followed by its settle, as the Gateway makes for every request.
Two ledgers: with no limits, and with every limit set (calls, tokens, cost, with the
default price table and a priced model), which is the most work a reservation does. With 8
threads, each thread makes 1/8 of the calls on one shared ledger; the figure is the wall
time divided by all the calls (the ledger's throughput cost per call under contention;
with the GIL the threads take turns). The latency one thread sees per call is shown too.
Each figure is the median of 5 repeats. After each repeat the ledger's totals are checked
(every call counted, nothing left in flight).

Target: under 50 microseconds per call.
"""

from __future__ import annotations

import sys
import threading
import time

from recursa.budget import Ledger, Limits
from recursa.lm.pricing import PriceTable

from .common import Result, median_of, report

BENCH = "ledger"
TARGET_US = 50.0
MODEL = "openai/gpt-4o-mini"
CALLS = 40_000
THREADS = 8


def make_ledger(limited: bool) -> Ledger:
    if not limited:
        return Ledger(limits=Limits(), pricer=PriceTable.default())
    limits = Limits(max_llm_calls=10**9, max_tokens=10**15, max_cost=10.0**9)
    return Ledger(limits=limits, pricer=PriceTable.default())


def _calls(ledger: Ledger, n: int) -> None:
    reserve, settle = ledger.reserve, ledger.settle
    for _ in range(n):
        reservation = reserve(MODEL, 1, 1200)
        settle(reservation, 1100, 40)


def _check(ledger: Ledger, n: int) -> None:
    if ledger.total.llm_calls != n or ledger.in_flight != 0:
        raise RuntimeError(f"ledger miscounted: {ledger.total.llm_calls} of {n}, in flight")


def single(limited: bool) -> float:
    samples = []
    for _ in range(5):
        ledger = make_ledger(limited)
        _calls(ledger, 1000)
        ledger = make_ledger(limited)
        t0 = time.perf_counter()
        _calls(ledger, CALLS)
        samples.append((time.perf_counter() - t0) / CALLS)
        _check(ledger, CALLS)
    return median_of(samples)


def threaded(limited: bool) -> tuple[float, float]:
    """(wall time / all calls, mean latency per call seen by one thread), seconds."""
    per_thread = CALLS // THREADS
    walls, latencies = [], []
    for _ in range(5):
        ledger = make_ledger(limited)
        barrier = threading.Barrier(THREADS + 1)
        spent: list[float] = []

        def worker(
            ledger: Ledger = ledger, barrier: threading.Barrier = barrier, spent: list = spent
        ) -> None:
            barrier.wait()
            t0 = time.perf_counter()
            _calls(ledger, per_thread)
            spent.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join()
        walls.append((time.perf_counter() - t0) / (per_thread * THREADS))
        latencies.append(sum(spent) / len(spent) / per_thread)
        _check(ledger, per_thread * THREADS)
    return median_of(walls), median_of(latencies)


def main() -> list[Result]:
    us = 1e6
    out = []
    for limited, label in ((False, "no limits"), (True, "all limits (calls, tokens, cost)")):
        one = single(limited)
        wall, latency = threaded(limited)
        out.append(
            Result(
                BENCH,
                f"reserve+settle, 1 thread, {label}",
                one * us,
                "us",
                target=TARGET_US,
            )
        )
        out.append(
            Result(
                BENCH,
                f"reserve+settle, {THREADS} threads, {label}",
                wall * us,
                "us",
                target=TARGET_US,
                note=f"latency one thread sees per call: {latency * us:.1f} us",
                extra={"thread_latency_us": latency * us},
            )
        )
    return out


if __name__ == "__main__":
    print("ledger: reserve + settle per call")
    report(main(), sys.argv[1:])
