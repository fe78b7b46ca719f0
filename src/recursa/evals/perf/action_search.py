"""Action mode's `search` over a 1 GB context: literal and regex throughput.

    python -m recursa.evals.perf.action_search [--size 1000] [--repeats 3] [--json PATH]

The text (`--size` MB of log-like ASCII, default 1,000, i.e. 1 GB) is generated in memory
in 1 MB pieces and joined once; one planted line ("the vault passphrase is ...") sits at
70% of it. Each figure is one `search` action run through the kernel as a run would run it
(`Kernel.execute`: resolve the variable, scan, keep hits with line numbers, build the
observation), the median of `--repeats`, as MB of context per second (1 MB = 10^6
characters, which for this ASCII text are bytes):

- literal, 1 hit: the planted phrase (`str.find` over the whole text, plus the newline count
  to its line);
- literal, every line: a word on every line (the first hits kept, the rest counted by
  `str.count`);
- literal, ignore_case: the planted phrase in capitals (a compiled case-insensitive regex);
- regex, literal prefix: `passphrase is (\\S+)`;
- regex, no literal prefix: `[cC]ode=9\\d{2}7 served in 99`, rare, which `re` must try at
  every position whose character is in the class;
- regex, every line: `^\\d{8} ` (counted to the kernel's cap of 1,000,000 hits, so the
  figure is MB scanned until the cap, per second).

Floors beside them: bare `str.count` of the literal and bare `re.search` of the prefixed
regex over the same text, to show what the kernel adds.

Target: at least 300 MB/s for a literal search (the issue's). Figures are printed, never
asserted.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import time
from typing import Any

from ...context import Context
from ...core.actions import Kernel
from ...core.actions.schema import ADAPTER
from .common import MB, Result, report

BENCH = "action_search"
TARGET_MB_S = 300.0
NEEDLE = "the vault passphrase is amber-falcon-7731"


def make_text(size_mb: int) -> str:
    """`size_mb` x 10^6 characters of log lines, built from 1 MB pieces, one needle at 70%."""
    pieces = []
    for p in range(8):
        lines = []
        length = 0
        i = 0
        while length < MB:
            line = (
                f"{(p * 131_071 + i) % 10**8:08d} 2026-11-17T03:{i % 60:02d}:{(i * 7) % 60:02d}Z "
                f"service{(i + p) % 16} request {i} code={(i * 7919 + p) % 9000:04d} "
                f"served in {(i * 37) % 1000} ms\n"
            )
            lines.append(line)
            length += len(line)
            i += 1
        pieces.append("".join(lines)[: MB - 1] + "\n")
    chunks = [pieces[i % len(pieces)] for i in range(size_mb)]
    at = size_mb * 7 // 10
    chunks[at] = NEEDLE + "\n" + chunks[at][len(NEEDLE) + 1 :]
    return "".join(chunks)


def time_search(kernel: Kernel, repeats: int, **fields: Any) -> tuple[float, str]:
    action = ADAPTER.validate_python({"action": "search", "var": "context", **fields})
    samples = []
    summary = ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = asyncio.run(kernel.execute(action))
        samples.append(time.perf_counter() - t0)
        if result.error:
            raise RuntimeError(result.error)
        summary = result.summary
    return statistics.median(samples), summary


def time_call(fn: Any, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main(argv: list[str]) -> list[Result]:
    size_mb = int(argv[argv.index("--size") + 1]) if "--size" in argv else 1000
    repeats = int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else 3
    t0 = time.perf_counter()
    text = make_text(size_mb)
    built = time.perf_counter() - t0
    mb = len(text) / MB
    print(f"  context: {len(text):,} characters built in {built:.1f} s", flush=True)
    ctx = Context(name="<bench>", kind="text", text=text)
    kernel = Kernel(None, [ctx])
    cases: list[tuple[str, dict[str, Any], float | None]] = [
        ("literal search, 1 hit", {"pattern": "vault passphrase"}, TARGET_MB_S),
        ("literal search, a hit on every line", {"pattern": " ms\n", "max_hits": 20}, None),
        (
            "literal search, ignore_case, 1 hit",
            {"pattern": "VAULT PASSPHRASE", "ignore_case": True},
            None,
        ),
        (
            "regex search, literal prefix, 1 hit",
            {"pattern": r"passphrase is (\S+)", "regex": True},
            None,
        ),
        (
            "regex search, no literal prefix, rare",
            {"pattern": r"[cC]ode=9\d{2}7 served in 99", "regex": True},
            None,
        ),
        (
            "regex search, a hit on every line (to the 1,000,000 cap)",
            {"pattern": r"^\d{8} ", "regex": True},
            None,
        ),
    ]
    results = []
    for figure, fields, target in cases:
        took, summary = time_search(kernel, repeats, **fields)
        scanned = mb
        if "cap" in figure:  # stops at the cap: MB scanned up to the 1,000,000th hit
            line_len = len(text) / text.count("\n")
            scanned = min(mb, 1_000_000 * line_len / MB)
        rate = scanned / took
        note = f"{took:.3f} s for {scanned:,.0f} MB; {summary}"
        if target is not None:
            note += f"; target >= {target:g} MB/s: {'PASS' if rate >= target else 'MISS'}"
        print(f"  {figure}: {rate:,.0f} MB/s ({took:.3f} s)", flush=True)
        results.append(Result(BENCH, figure, round(rate), "MB/s", note=note))
    floor_literal = time_call(lambda: text.count("vault passphrase"), repeats)
    rx = re.compile(r"passphrase is (\S+)", re.MULTILINE)
    floor_regex = time_call(lambda: rx.search(text), repeats)
    results.append(
        Result(BENCH, "  floor: bare str.count, same literal", round(mb / floor_literal), "MB/s")
    )
    results.append(
        Result(BENCH, "  floor: bare re.search, prefixed regex", round(mb / floor_regex), "MB/s")
    )
    return results


if __name__ == "__main__":
    print("action_search: search actions over a generated context")
    report(main(sys.argv[1:]), sys.argv[1:])
