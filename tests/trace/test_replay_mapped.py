"""Replaying a run over a memory-mapped file: the file is mapped again, its sampled
fingerprint compared as the trace recorded it, and a changed file is a context divergence.

Each run is recorded through the CLI with a small `--mmap-threshold`, so a 2 MB log is a
`file` context (a MappedText in the REPL) without a 64 MiB file on disk.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from e2e_helpers import host_env, repl, run_cli
from recursa import context_files
from recursa.context import from_path
from recursa.testing import LMRequest, ScriptedLM
from recursa.trace.reader import read_trace
from recursa.trace.replay import Recording, replay

NEEDLE = "the magic number is 48213"
THRESHOLD = "1M"

FAN_OUT = repl(
    """
    kind = type(context).__name__
    chunks = context.chunks(500_000)
    answers = llm_query_batched(["Find the magic number or say NONE.\\n" + c for c in chunks])
    hits = [a for a in answers if a != "NONE"]
    print(kind, len(chunks), "chunks", hits, context.count("lorem"))
    """
)
FINISH = repl("FINAL(hits[0])")


def _sub(request: LMRequest) -> str:
    match = re.search(r"magic number is (\d+)", request.last_user)
    return match.group(1) if match else "NONE"


def _log(path: Path, size: int = 2_000_000) -> Path:
    line = "lorem ipsum dolor sit amet consectetur adipiscing elit\n"
    lines = [line] * (size // len(line))
    lines[len(lines) * 2 // 3] = NEEDLE + "\n"
    path.write_text("".join(lines))
    return path


def _record(serve, tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """A traced CLI run over a mapped log: (the trace, the log)."""
    server = serve(ScriptedLM(root=[FAN_OUT, FINISH], sub=_sub))
    log = _log(tmp_path / "service.log")
    trace = tmp_path / "run.jsonl"
    done = run_cli([
        "run", "What is the magic number?", "--context", str(log),
        "--mmap-threshold", THRESHOLD, "--model", "openai/x", "--base-url", server.url,
        "--trace", str(trace), "--json", "--quiet", *extra,
    ])  # fmt: skip
    assert done.rc == 0, done.err
    assert json.loads(done.out)["answer"] == "48213"
    server.stop()  # from here on, no model can be reached
    return trace, log


def _recorded_ref(trace: Path) -> dict:
    start = next(e for e in read_trace(trace) if e["type"] == "run_start")
    return start["contexts"][0]


def test_a_run_over_a_mapped_file_replays_with_no_divergence(serve, tmp_path: Path) -> None:
    trace, log = _record(serve, tmp_path)
    ref = _recorded_ref(trace)
    assert ref["kind"] == "file" and ref["sha256_of"] == context_files.FINGERPRINT
    block = next(e for e in read_trace(trace) if e["type"] == "block")
    assert block["output"].startswith("MappedText 4 chunks ['48213']")

    done = run_cli(["replay", str(trace), "--context", str(log), "--json", "--quiet"])

    assert done.rc == 0, done.err
    out = json.loads(done.out)
    assert out["answer"] == "48213"
    assert out["diverged"] is False and out["first_divergence"] is None
    # the default threshold (64 MiB) would have read the 2 MB log as text
    assert log.stat().st_size < context_files.MMAP_THRESHOLD


def test_the_replayed_context_is_mapped_with_the_recorded_fingerprint(
    serve, tmp_path: Path
) -> None:
    trace, log = _record(serve, tmp_path)

    loaded = Recording.load(trace).contexts([str(log)])

    assert [c.kind for c in loaded] == ["file"]
    assert loaded[0].sha256 == _recorded_ref(trace)["sha256"]
    assert loaded[0].name == str(log)


def test_a_changed_mapped_file_is_a_context_divergence_and_exits_4(serve, tmp_path: Path) -> None:
    trace, log = _record(serve, tmp_path)
    data = bytearray(log.read_bytes())
    data[:5] = b"LOREM"  # same size, same answer: only the fingerprint tells
    log.write_bytes(bytes(data))

    done = run_cli(["replay", str(trace), "--context", str(log), "--json", "--quiet"])

    assert done.rc == 4
    out = json.loads(done.out)
    assert out["first_divergence"]["what"] == "context hash"
    assert out["first_divergence"]["expected"] == _recorded_ref(trace)["sha256"]
    assert "context hash differs" in done.err


def test_a_mapped_file_given_again_with_context_replays_from_its_new_path(
    serve, tmp_path: Path
) -> None:
    trace, log = _record(serve, tmp_path)
    moved = tmp_path / "moved" / "service.log"
    moved.parent.mkdir()
    log.rename(moved)

    result = replay(Recording.load(trace), contexts=[str(moved)])

    assert result.divergences == []
    assert result.result.answer == "48213"


def test_trace_context_stores_a_mapped_file_and_replays_it_mapped_without_the_file(
    serve, tmp_path: Path
) -> None:
    trace, log = _record(serve, tmp_path, "--trace-context")
    log.unlink()
    scratch = tmp_path / "tmp"
    scratch.mkdir()

    done = run_cli(
        ["replay", str(trace), "--json", "--quiet"], env={**host_env(), "TMPDIR": str(scratch)}
    )

    assert done.rc == 0, done.err
    out = json.loads(done.out)
    assert out["answer"] == "48213" and out["diverged"] is False
    assert list(scratch.glob("recursa-replay-*")) == []  # the file laid out again is gone


def test_a_directory_replays_with_the_files_it_mapped_mapped_again(serve, tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    _log(root / "service.log")
    (root / "notes.txt").write_text("nothing here\n")
    code = repl(
        """
        kinds = sorted((k, type(v).__name__) for k, v in context.items())
        print(kinds)
        FINAL(context["service.log"].search(r"number is (\\d+)")[0][1])
        """
    )
    server = serve(ScriptedLM(root=[code]))
    trace = tmp_path / "run.jsonl"
    done = run_cli([
        "run", "What is the magic number?", "--context", str(root),
        "--mmap-threshold", THRESHOLD, "--model", "openai/x", "--base-url", server.url,
        "--trace", str(trace), "--json", "--quiet",
    ])  # fmt: skip
    assert done.rc == 0, done.err
    assert json.loads(done.out)["answer"] == "number is 48213"
    assert _recorded_ref(trace)["mmap_threshold"] == 1024 * 1024
    server.stop()

    done = run_cli(["replay", str(trace), "--context", str(root), "--json", "--quiet"])

    assert done.rc == 0, done.err
    assert json.loads(done.out)["diverged"] is False
    block = next(e for e in read_trace(trace) if e["type"] == "block")
    assert "('service.log', 'MappedText')" in block["output"]


def test_an_action_mode_run_over_a_mapped_file_replays_with_no_divergence(
    serve, tmp_path: Path
) -> None:
    actions = json.dumps([
        {"action": "search", "var": "context", "pattern": r"number is (\d+)", "regex": True,
         "into": "hits"},
        {"action": "chunk", "var": "context", "size": 10_000, "unit": "lines", "into": "chunks"},
        {"action": "extract_over_chunks", "var": "chunks", "prompt": "Magic number?",
         "into": "answers"},
        {"action": "final", "var": "hits[0].groups[0]"},
    ])  # fmt: skip
    server = serve(ScriptedLM(root=[actions], sub=_sub))
    log = _log(tmp_path / "service.log")
    trace = tmp_path / "run.jsonl"
    done = run_cli([
        "run", "What is the magic number?", "--context", str(log), "--mode", "actions",
        "--mmap-threshold", THRESHOLD, "--model", "openai/x", "--base-url", server.url,
        "--trace", str(trace), "--json", "--quiet",
    ])  # fmt: skip
    assert done.rc == 0, done.err
    assert json.loads(done.out)["answer"] == "48213"
    assert _recorded_ref(trace)["kind"] == "file"
    server.stop()

    done = run_cli(["replay", str(trace), "--context", str(log), "--json", "--quiet"])

    assert done.rc == 0, done.err
    out = json.loads(done.out)
    assert out["answer"] == "48213" and out["diverged"] is False


def test_a_text_context_is_read_whole_again_whatever_the_threshold_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _log(tmp_path / "service.log")
    ref = from_path(str(log)).reference()
    recording = Recording.from_events([{"type": "run_start", "contexts": [ref]}])
    monkeypatch.setenv("RECURSA_MMAP_THRESHOLD", "1M")

    [again] = recording.contexts([str(log)])

    assert ref["kind"] == again.kind == "text" and again.sha256 == ref["sha256"]
    _log(log, size=4 * ref["size"] + 100)  # grown past any text of the recorded length
    [grown] = recording.contexts([str(log)])
    assert grown.kind == "file" and grown.sha256 != ref["sha256"]
