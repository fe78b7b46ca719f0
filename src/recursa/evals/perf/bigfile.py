"""A planted fact in a 4 GB log, answered through the memory-mapped context.

    python -m recursa.evals.perf.bigfile [--json PATH] [--size-gb 4] [--dir DIR] [--keep]
    recursa bench --only bigfile                        # not in the default suite: minutes

The parent writes a generated service log of `--size-gb` GB (10^9 bytes) in 64 MiB pieces
to `--dir` (default: the temporary folder; it checks the free space first), with one planted
line ("... the vault passphrase is <code> ...") at 73% of the file, and deletes it at the end.
Each measured run is a fresh host process that loads the file with `from_path` (above the
64 MiB threshold, so a `file` context: the host reads its head and 4 MiB of samples, the
worker maps the file itself) and runs `RLM(...).run` with a scripted root model behind a
FakeLMServer in that process. The model's one block times, inside the worker:
`context.find(...)` (the answer), `context.search(regex, max_hits=1)`, `len(context)` and
`context.count("\\n")`, and ends with FINAL(the passphrase).

Memory: the parent samples, every 10 ms, the resident memory (VmRSS: anonymous and file
pages mapped, so the worker's mapped window counts) of the host process and every process
under it (bwrap's two helpers, the worker) and keeps the largest sum: the peak of the whole
process tree. The host also reads each process's VmHWM at the `block` event; their sum is an
upper bound (peaks need not coincide). Target: under 300 MB, where peers hold the whole
input in memory several times over (ANCHORS.md: 9.6x for 400 MB).

Time: the run's wall time per GB of input, with a cold page cache (the file's pages dropped
with posix_fadvise(DONTNEED): read from disk), then warm (the parent reads the file once
first). A plain second run is not warm: the pages the worker reads are charged to its cgroup,
whose memory limit (2 GiB by default) evicts most of them again as it goes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .common import Result, descendants_of, proc_status_kb, report

BENCH = "bigfile"
GB = 1_000_000_000
MIB = 1024 * 1024
PIECE = 64 * MIB
PLANT_AT = 0.73
PASSPHRASE = "quartz-heron-4471"
TARGET_MB = 300.0
PEERS_X = 9.6  # the official library holds 9.6x a 400 MB input (ANCHORS.md)

CODE = """\
```repl
import json, time
def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0
i, t_find = timed(lambda: context.find("the vault passphrase is "))
line = context[i : context.find("\\n", i)]
hits, t_search = timed(lambda: context.search(r"vault passphrase is (\\S+)", max_hits=1))
n, t_len = timed(lambda: len(context))
lines, t_count = timed(lambda: context.count("\\n"))
print(json.dumps({"find_s": t_find, "search_s": t_search, "len_s": t_len, "count_s": t_count,
                  "chars": n, "lines": lines, "offset": i, "hits": hits}))
FINAL(line.split("passphrase is ")[1].split()[0])
```"""


def write_log(path: Path, size: int) -> tuple[int, str]:
    """A service log of `size` bytes, ASCII, with the planted line at PLANT_AT: (its offset,
    the line)."""
    services = ["auth", "billing", "search", "gateway", "ledger", "mailer", "cache", "queue"]
    rows = [
        f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}Z "
        f"{services[i % 8]:<8} request {i:06d} served in {(i * 37) % 1000} ms\n"
        for i in range(20_000)
    ]
    block = "".join(rows).encode("ascii")
    piece = (block * (PIECE // len(block) + 1))[:PIECE]
    cut = piece.rfind(b"\n") + 1
    piece = piece[:cut]  # whole lines in each piece
    planted = (
        f"2026-11-17T03:12:44Z auth     NOTE the vault passphrase is {PASSPHRASE} "
        "(rotate after use)\n"
    ).encode("ascii")
    plant_offset = -1
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while written < size:
            chunk = piece[: size - written]
            if plant_offset < 0 and written + len(chunk) >= size * PLANT_AT:
                at = chunk.find(b"\n", int(size * PLANT_AT) - written) + 1
                chunk = chunk[:at] + planted + chunk[at:]
                chunk = chunk[: size - written]
                plant_offset = written + at
            os.write(fd, chunk)
            written += len(chunk)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # start cold: read from disk
    finally:
        os.close(fd)
    return plant_offset, planted.decode().strip()


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm_cache(path: Path) -> None:
    """Read the file once from this process: its pages stay cached, charged to this process's
    cgroup rather than to the worker's (whose memory limit would evict them again)."""
    buf = bytearray(16 * MIB)
    with path.open("rb", buffering=0) as fh:
        while fh.readinto(buf):
            pass


def child(path: str) -> None:
    """One measured run in a fresh host process; prints one JSON line."""
    from recursa.context import from_path
    from recursa.core.programs import RLM
    from recursa.testing import FakeLMServer, ScriptedLM

    hwm: dict[int, int] = {}
    outputs: list[str] = []

    def on_event(event: Any) -> None:
        if event.type != "block":
            return
        outputs.append(event.to_dict().get("output") or "")
        for pid in [os.getpid(), *descendants_of(os.getpid())]:
            hwm[pid] = max(hwm.get(pid, 0), proc_status_kb(pid, "VmHWM") or 0)

    t0 = time.perf_counter()
    ctx = from_path(path)
    load_s = time.perf_counter() - t0
    rss_before = proc_status_kb("self", "VmRSS")
    with FakeLMServer(ScriptedLM(root=[CODE])) as server:
        rlm = RLM("openai/scripted", base_url=server.url, env={}, cell_timeout=600)
        t0 = time.perf_counter()
        result = rlm.run("What is the vault passphrase?", ctx, on_event=on_event)
        wall = time.perf_counter() - t0
    timings = {}
    for text in outputs:
        for line in text.splitlines():
            if line.startswith("{"):
                timings = json.loads(line)
    print(
        json.dumps(
            {
                "status": result.status,
                "answer": result.answer,
                "error": result.error,
                "kind": ctx.kind,
                "load_s": load_s,
                "wall_s": wall,
                "host_rss_before_kb": rss_before,
                "hwm_sum_kb": sum(hwm.values()),
                "sandbox": rlm.sandbox,
                **timings,
            }
        )
    )


def tree_rss_kb(root: int) -> int:
    return sum(proc_status_kb(pid, "VmRSS") or 0 for pid in [root, *descendants_of(root)])


def measured_run(path: Path) -> dict[str, Any]:
    """One child run, its tree's resident memory sampled every 10 ms."""
    cmd = [sys.executable, "-m", "recursa.evals.perf.bigfile", "--child", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = [0, 0]  # kB, processes seen at the peak
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pids = [proc.pid, *descendants_of(proc.pid)]
            total = sum(proc_status_kb(pid, "VmRSS") or 0 for pid in pids)
            if total > peak[0]:
                peak[0], peak[1] = total, len(pids)
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"the measured run failed (exit {proc.returncode})")
    run = json.loads(out.strip().splitlines()[-1])
    run["tree_peak_kb"], run["tree_procs"] = peak
    return run


def _arg(argv: list[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def main(argv: list[str]) -> list[Result]:
    size = int(float(_arg(argv, "--size-gb", "4")) * GB)
    folder = Path(_arg(argv, "--dir", tempfile.gettempdir()))
    free = shutil.disk_usage(folder).free
    if free < size + 2 * GB:
        raise SystemExit(
            f"bigfile: {free / GB:.1f} GB free in {folder}, {size / GB + 2:.1f} needed"
        )
    path = folder / f"recursa-bigfile-{os.getpid()}.log"
    try:
        t0 = time.perf_counter()
        line_at, planted = write_log(path, size)
        offset = line_at + planted.index("the vault passphrase is ")
        write_s = time.perf_counter() - t0
        print(f"  wrote {size / GB:.1f} GB in {write_s:.1f} s; planted at byte {line_at:,}")
        runs = []
        for label in ("cold", "warm"):
            if label == "cold":
                drop_cache(path)
            else:
                warm_cache(path)
            run = measured_run(path)
            run["label"] = label
            if run["status"] != "ok" or run["answer"] != PASSPHRASE or run["offset"] != offset:
                raise RuntimeError(f"the planted fact was not found: {run}")
            print(f"  {label}: {json.dumps(run)}")
            runs.append(run)
    finally:
        if "--keep" not in argv:
            path.unlink(missing_ok=True)
    cold, warm = runs
    gb = size / GB
    peak_mb = max(r["tree_peak_kb"] for r in runs) / 1024
    hwm_mb = max(r["hwm_sum_kb"] for r in runs) / 1024
    host_mb = max(r["host_rss_before_kb"] for r in runs) / 1024
    backend = warm["sandbox"]
    results = [
        Result(
            BENCH,
            f"planted fact in a {gb:g} GB log: peak RSS of the process tree",
            peak_mb,
            "MB",
            target=TARGET_MB,
            compare=f"peers: the whole input in memory, {PEERS_X}x it for 400 MB",
            note=(
                f"sandbox {backend}; sum of VmRSS of host + {warm['tree_procs'] - 1} processes "
                f"under it, sampled every 10 ms; sum of their VmHWM {hwm_mb:.0f} MB (an upper "
                f"bound); host RSS before the run {host_mb:.0f} MB; input {size / MIB:,.0f} MiB, "
                f"{warm['lines']:,} lines"
            ),
        ),
        Result(BENCH, "    peak / input", peak_mb * MIB / size, "x"),
        Result(
            BENCH,
            f"RLM.run wall time per GB, cold page cache ({cold['wall_s']:.1f} s in all)",
            cold["wall_s"] / gb,
            "s",
            note="the file's pages dropped with posix_fadvise(DONTNEED) first: read from disk",
        ),
        Result(
            BENCH,
            f"RLM.run wall time per GB, warm page cache ({warm['wall_s']:.1f} s in all)",
            warm["wall_s"] / gb,
            "s",
            note="one block: find, search, len and count over the whole file, then FINAL; "
            "the file read once by the parent first",
        ),
    ]
    scanned = {"find_s": PLANT_AT, "search_s": PLANT_AT, "len_s": 1 - PLANT_AT, "count_s": 1.0}
    for key, what in (
        ("find_s", "context.find(...), to the fact at 73%"),
        ("search_s", "context.search(regex, max_hits=1), to the fact"),
        ("len_s", "len(context): the index's last 27%"),
        ("count_s", 'context.count("\\n"), the whole file'),
    ):
        results.append(
            Result(
                BENCH,
                f"    {what}, per GB (warm)",
                warm[key] / (gb * scanned[key]),
                "s",
                note=f"in all: cold {cold[key]:.2f} s, warm {warm[key]:.2f} s",
            )
        )
    results.append(
        Result(
            BENCH, "    host: from_path (head + sampled fingerprint)", warm["load_s"] * 1000, "ms"
        )
    )
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        print("bigfile: a planted fact in a generated log, through the memory-mapped context")
        report(main(sys.argv[1:]), sys.argv[1:])
