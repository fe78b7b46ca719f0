"""Run the benchmarks, each in a process of its own, and render one markdown table with the
machine it ran on (what `recursa bench` prints and BENCHMARKS.md holds)."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from .common import fmt, loadavg, machine_line

BENCHMARKS = ("iteration", "worker_start", "fanout", "ledger", "needle")
OPTIONAL = ("bigfile",)
"""Run only when named (`--only bigfile`): they take minutes and gigabytes of disk."""
DESCRIPTIONS = {
    "iteration": "cost of one RLM iteration apart from the model, 10 MB context",
    "worker_start": "sandbox worker start to ready, empty and 10 MB context",
    "fanout": "100 sub-queries of 0.25 s in one batch, against the ideal schedule",
    "ledger": "budget ledger reserve + settle per call, 1 and 8 threads",
    "needle": "needle in 20 MB end to end: wall time and peak memory",
    "bigfile": "a planted fact in a 4 GB log through the mapped context: peak RSS, time per GB",
}


def run_one(name: str, log: TextIO) -> tuple[list[dict], float, str | None]:
    """One benchmark in a fresh interpreter: its records, seconds taken, and any failure."""
    with tempfile.TemporaryDirectory(prefix="recursa-bench-") as tmp:
        out = Path(tmp) / f"{name}.json"
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", f"recursa.evals.perf.{name}", "--json", str(out)],
            stdout=log,
            stderr=log,
            check=False,
        )
        took = time.perf_counter() - started
        if proc.returncode != 0 or not out.exists():
            return [], took, f"exit status {proc.returncode}"
        return json.loads(out.read_text()), took, None


def table(results: list[dict]) -> str:
    lines = [
        "| benchmark | figure | result | target | verdict | peers (ANCHORS.md) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        figure = r["figure"]
        if figure.startswith(" "):
            figure = "↳ " + figure.strip()
        target = f"≤ {fmt(r['target'], r['unit'])}" if r["target"] is not None else ""
        verdict = {True: "pass", False: "**MISS**", None: ""}[r["passed"]]
        cells = [r["bench"], figure, fmt(r["value"], r["unit"]), target, verdict, r["compare"]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def run_suite(names: list[str] | None = None, log: TextIO | None = None) -> tuple[str, bool]:
    """(the report as markdown, whether every benchmark ran). Each benchmark's own output
    goes to `log` (standard error by default) as it runs."""
    log = log or sys.stderr
    names = list(names or BENCHMARKS)
    known = BENCHMARKS + OPTIONAL
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; known: {', '.join(known)}")
    started = time.perf_counter()
    load_before = loadavg()
    results: list[dict] = []
    failures: list[str] = []
    timings: list[str] = []
    for name in names:
        print(f"== {name}: {DESCRIPTIONS[name]}", file=log, flush=True)
        got, took, error = run_one(name, log)
        results += got
        timings.append(f"{name} {took:.1f} s")
        if error:
            failures.append(f"{name}: {error}")
    total = time.perf_counter() - started
    text = "\n".join(
        [
            f"Machine: {machine_line()}",
            f"Date: {datetime.date.today().isoformat()}; suite took {total:.0f} s "
            f"({', '.join(timings)}); 1-minute load average {load_before} before, "
            f"{loadavg()} after",
            "",
            table(results),
        ]
    )
    notes = [f"- {r['bench']}: {r['figure'].strip()}: {r['note']}" for r in results if r["note"]]
    if notes:
        text += "\n\nNotes:\n" + "\n".join(notes)
    if failures:
        text += "\n\nFailed to run: " + "; ".join(failures)
    return text, not failures
