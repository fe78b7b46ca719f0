"""A fact on one page of a 500-page PDF: the host's memory stays flat, the worker reads pages.

    python -m recursa.evals.perf.pdf_pages [--pages 500] [--json PATH]

Writes a generated PDF (`recursa.testing.documents`, each page 60 lines of text) with one
planted line on page `0.87 * pages`, loads it with `from_path` (a `doc` context: the host
reads its first KiB and a sampled fingerprint, and never parses it) and runs `RLM.run` with
a scripted root model (FakeLMServer in this process, default sandbox) whose one block calls
`context.search(...)`, which extracts every page in order, then FINALs the page
number and the worker's VmHWM.

Memory: the host's VmRSS before loading, after loading and describing, and its VmHWM after
the run (the peak reset after writing the PDF); the worker reports its own VmHWM (pypdf
imported, the pages extracted) from /proc/self/status inside the block. Needs `docs`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ...context import describe, from_path
from ...core.programs import RLM
from ...testing import FakeLMServer, ScriptedLM
from ...testing.documents import write_pdf

FACT = "The vault passphrase is quartz-heron-4471."
CODE = """\
```repl
hits = context.search(r"vault passphrase is (\\S+)", max_hits=1)
status = open("/proc/self/status").read()
hwm = [line for line in status.splitlines() if line.startswith("VmHWM")][0]
FINAL({"page": hits[0][0], "pages": len(context.pages), "worker_hwm_kb": int(hwm.split()[1])})
```"""


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(pages: int, folder: Path) -> dict[str, Any]:
    """Write the PDF, run the block over it, and return the figures."""
    plant = int(pages * 0.87)
    texts = [
        "\n".join(f"page {n} line {i}: nothing of note in this paragraph" for i in range(60))
        for n in range(1, pages + 1)
    ]
    texts[plant - 1] += "\n" + FACT
    pdf = write_pdf(folder / "long.pdf", texts)
    del texts
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    ctx = from_path(str(pdf))
    describe([ctx])
    load_s = time.perf_counter() - t0
    after_load = _status_kb("VmRSS")
    server = FakeLMServer(ScriptedLM(root=[CODE])).start()
    try:
        t0 = time.perf_counter()
        result = RLM("openai/scripted", base_url=server.url, env={}).run("q", context=ctx)
        run_s = time.perf_counter() - t0
    finally:
        server.stop()
    printed = result.answer if isinstance(result.answer, dict) else {}
    if result.status != "ok" or printed.get("page") != plant:
        raise SystemExit(f"the run failed: {result.status} {result.error} {result.answer!r}")
    return {
        "pages": pages,
        "pdf_bytes": pdf.stat().st_size,
        "answer_page": printed["page"],
        "host_rss_before_kb": before,
        "host_rss_after_load_kb": after_load,
        "host_hwm_after_run_kb": _status_kb("VmHWM"),
        "worker_hwm_kb": printed["worker_hwm_kb"],
        "load_s": load_s,
        "run_s": run_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recursa-pdf-") as folder:
        figures = measure(args.pages, Path(folder))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
