"""Shared helpers for the benchmarks: timing, machine description, result records, and a
FakeLMServer run in a process of its own.

Every benchmark prints its figures for a human and, with `--json PATH`, writes them as a
list of result records for `recursa bench`. Benchmarks report numbers; they never assert on
time.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MB = 1_000_000


@dataclass
class Result:
    """One figure: `value` in `unit`, judged against `target` where one applies."""

    bench: str
    figure: str
    value: float
    unit: str
    target: float | None = None
    """The largest acceptable value (every target here is an upper bound)."""
    compare: str = ""
    """Peers' figures from ANCHORS.md, or other context, as text."""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.value <= self.target

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("ms", "us", "s"):
        digits = 3 if value < 1 else 2 if value < 10 else 1 if value < 100 else 0
        return f"{value:,.{digits}f} {unit}"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:g} {unit}"


def report(results: list[Result], argv: list[str] | None = None) -> None:
    """Print the figures; write them as JSON when `--json PATH` was given."""
    argv = sys.argv[1:] if argv is None else argv
    for r in results:
        target = f"target <= {fmt(r.target, r.unit)}" if r.target is not None else "info"
        verdict = {True: "PASS", False: "MISS", None: ""}[r.passed]
        line = f"  {r.figure:<58} {fmt(r.value, r.unit):>12}  {target:<22} {verdict}"
        print(line.rstrip())
        if r.note:
            print(f"      {r.note}")
    if "--json" in argv:
        path = Path(argv[argv.index("--json") + 1])
        path.write_text(json.dumps([r.to_dict() for r in results], indent=2))


def median_of(samples: Iterable[float]) -> float:
    return statistics.median(list(samples))


def time_calls(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Seconds taken by each of `repeats` calls of `fn`."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def synthetic_text(size: int) -> str:
    """`size` characters of log-like ASCII text, built fast (content does not matter here)."""
    lines = [
        f"2026-11-17T03:{i % 60:02d}:{(i * 7) % 60:02d}Z service{i % 8} request {i} served in "
        f"{(i * 37) % 1000} ms\n"
        for i in range(1000)
    ]
    block = "".join(lines)
    return (block * (size // len(block) + 1))[:size]


# ---- the machine ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    mhz = None
    try:
        info = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        cpu = found.group(1).strip() if found else cpu
        found = re.search(r"^cpu MHz\s*:\s*([\d.]+)$", info, re.M)
        mhz = float(found.group(1)) if found else None
    except OSError:
        pass
    mem_gb = None
    try:
        found = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem_gb = int(found.group(1)) / 1024 / 1024 if found else None
    except OSError:
        pass
    return {
        "cpu": cpu,
        "mhz": mhz,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1) if mem_gb else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
    }


def loadavg() -> str:
    """The 1-minute load average (other work on the machine skews every figure)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def machine_line() -> str:
    m = machine()
    mhz = f" @ {m['mhz']:.0f} MHz" if m["mhz"] else ""
    mem = f", {m['memory_gb']:g} GiB RAM" if m["memory_gb"] else ""
    return (
        f"{m['cpu']}{mhz}, {m['cores']} cores{mem}, {m['implementation']} {m['python']}, "
        f"Linux {m['kernel']}"
    )


# ---- memory --------------------------------------------------------------------------------


def proc_status_kb(pid: int | str, field_name: str) -> int | None:
    """A `kB` field (VmHWM, VmRSS ...) of /proc/<pid>/status, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else None


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process (one scan of /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the comm field may hold spaces: the ppid is the 2nd field after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            out[int(entry)] = int(fields[1])
    return out


def descendants_of(pid: int) -> list[int]:
    """Live descendants of `pid`: children, grandchildren ... (bwrap puts the worker two
    levels down, inside its own pid namespace, which the host still sees)."""
    parents = _parents()
    found: list[int] = []
    frontier = {pid}
    while frontier:
        below = [p for p, pp in parents.items() if pp in frontier and p not in found]
        found += below
        frontier = set(below)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ---- sandbox backends ----------------------------------------------------------------------


def sandbox_backends() -> list[tuple[str, type]]:
    """(name, class) of each sandbox backend that runs here: subprocess always, bwrap where
    bubblewrap can create its namespaces, landlock where the kernel can confine a worker,
    docker where an engine answers, and local (the in-process debugging backend, for scale)."""
    from recursa.sandbox.process import SubprocessSandbox

    out: list[tuple[str, type]] = [("subprocess", SubprocessSandbox)]
    try:
        from recursa.sandbox.bwrap import BwrapSandbox, bwrap_problem
        from recursa.sandbox.docker import DockerSandbox, docker_problem
        from recursa.sandbox.local import LocalSandbox
    except ImportError:
        return out
    if bwrap_problem() is None:
        out.append(("bwrap", BwrapSandbox))
    with contextlib.suppress(ImportError):  # a recursa from before the landlock backend
        from recursa.sandbox.landlock import LandlockSandbox, landlock_problem

        if landlock_problem() is None:
            out.append(("landlock", LandlockSandbox))
    if docker_problem() is None:
        out.append(("docker", DockerSandbox))
    out.append(("local", LocalSandbox))
    return out


def default_backend() -> str:
    """The backend `RLM(sandbox="auto")` picks on this machine."""
    try:
        from recursa.sandbox import resolve_backend
    except ImportError:
        return "subprocess"
    return resolve_backend("auto")


# ---- a fake LM server in its own process ---------------------------------------------------


class ServerProcess:
    """`recursa.evals.perf.fake_server` in a child process: the fake model gets its own
    interpreter (and GIL), as a real model server would be on its own machine, so that what we
    time is recursa's side of the socket, not the fake's threads fighting the host for the GIL."""

    def __init__(self, mode: str, *args: Any, latency: float = 0.0) -> None:
        self.cmd = [
            sys.executable,
            "-m",
            "recursa.evals.perf.fake_server",
            mode,
            str(latency),
            *map(str, args),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http"):
            self.proc.kill()
            raise RuntimeError(f"the fake server did not start: {line!r}")
        self.url = line
        return self

    def stats(self) -> dict[str, Any]:
        """What the server saw since the last call (requests, max in flight), then reset."""
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
