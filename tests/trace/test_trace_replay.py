"""Traces and replay: a recorded run re-runs offline, and an edited one reports where."""

from __future__ import annotations

import json
import re
from pathlib import Path

from e2e_helpers import run_cli
from recursa.testing import FakeLMServer, LMRequest, ScriptedLM
from recursa.trace.reader import read_trace

NEEDLE = "the magic number is 48213"


def _haystack(path: Path, size: int = 2_000_000) -> Path:
    line = "lorem ipsum dolor sit amet consectetur adipiscing elit\n"
    lines = [line] * (size // len(line))
    lines[len(lines) * 2 // 3] = NEEDLE + "\n"
    path.write_text("".join(lines))
    return path


FAN_OUT = """```repl
chunks = [context[i:i + 200_000] for i in range(0, len(context), 200_000)]
answers = llm_query_batched(["Find the magic number or say NONE.\\n" + c for c in chunks])
hits = [a for a in answers if a != "NONE"]
print(len(chunks), "chunks", hits)
```"""
FINISH = "```repl\nFINAL(hits[0])\n```"


def _sub(request: LMRequest) -> str:
    match = re.search(r"magic number is (\d+)", request.last_user)
    return match.group(1) if match else "NONE"


def _record(serve, tmp_path: Path, *extra: str, root: list[str] | None = None) -> Path:
    server = serve(ScriptedLM(root=root or [FAN_OUT, FINISH], sub=_sub))
    trace = tmp_path / "run.jsonl"
    context = _haystack(tmp_path / "haystack.txt")
    done = run_cli([
        "run", "What is the magic number?", "--context", str(context),
        "--model", "openai/x", "--base-url", server.url,
        "--trace", str(trace), "--json", "--quiet", *extra,
    ])  # fmt: skip
    assert done.rc == 0, done.err
    assert json.loads(done.out)["answer"] == "48213"
    server.stop()  # from here on, no model can be reached
    return trace


def test_a_traced_run_replays_offline_to_the_same_answer_with_no_requests(
    serve, tmp_path: Path
) -> None:
    trace = _record(serve, tmp_path)
    recorded = read_trace(trace)
    recorded_end = next(e for e in recorded if e["type"] == "run_end")

    done = run_cli(
        ["replay", str(trace), "--context", str(tmp_path / "haystack.txt"), "--json", "--quiet"]
    )

    assert done.rc == 0, done.err
    out = json.loads(done.out)
    assert out["answer"] == "48213"
    assert out["diverged"] is False and out["first_divergence"] is None
    assert out["usage"] == recorded_end["usage"]


def test_an_edited_trace_reports_its_divergence_and_exits_4(serve, tmp_path: Path) -> None:
    trace = _record(serve, tmp_path)
    events = read_trace(trace)
    for event in events:
        if event["type"] == "lm_call_end" and event.get("text") == "48213":
            event["text"] = "99999"
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(e) + "\n" for e in events))

    done = run_cli(
        ["replay", str(edited), "--context", str(tmp_path / "haystack.txt"), "--json", "--quiet"]
    )

    assert done.rc == 4
    first = json.loads(done.out)["first_divergence"]
    assert first["what"] == "block output" and first["turn"] == 1
    assert "99999" in first["got"] and "48213" in first["expected"]
    assert "diverged at turn 1" in done.err


def test_a_changed_context_file_is_reported_as_a_context_hash_divergence(
    serve, tmp_path: Path
) -> None:
    trace = _record(serve, tmp_path)
    (tmp_path / "haystack.txt").write_text(NEEDLE + "\n")

    done = run_cli(
        ["replay", str(trace), "--context", str(tmp_path / "haystack.txt"), "--json", "--quiet"]
    )

    assert done.rc == 4
    assert json.loads(done.out)["first_divergence"]["what"] == "context hash"


def test_trace_context_stores_the_text_so_the_trace_replays_without_the_file(
    serve, tmp_path: Path
) -> None:
    trace = _record(serve, tmp_path, "--trace-context")
    (tmp_path / "haystack.txt").unlink()

    done = run_cli(["replay", str(trace), "--json", "--quiet"])

    assert done.rc == 0, done.err
    assert json.loads(done.out)["answer"] == "48213"


def test_a_trace_without_the_context_and_no_file_is_a_usage_error(serve, tmp_path: Path) -> None:
    trace = _record(serve, tmp_path)
    (tmp_path / "haystack.txt").unlink()

    done = run_cli(["replay", str(trace), "--quiet"])

    assert done.rc == 2
    assert "--trace-context" in done.err and len(done.err.strip().splitlines()) == 1


def test_the_trace_never_holds_the_context_text_or_an_api_key(serve, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-0123456789")
    trace = _record(serve, tmp_path)

    text = trace.read_text()

    assert "sk-test-secret" not in text
    assert NEEDLE not in text
    start = next(e for e in read_trace(trace) if e["type"] == "run_start")
    assert start["contexts"][0]["sha256"] and start["contexts"][0]["size"] > 1_000_000


def test_fork_replays_up_to_a_turn_then_continues_live(serve, tmp_path: Path) -> None:
    trace = _record(serve, tmp_path)
    live = serve(ScriptedLM(root=lambda r: "FINAL(from the live model)", sub=_sub))

    done = run_cli([
        "replay", str(trace), "--context", str(tmp_path / "haystack.txt"),
        "--from-turn", "2", "--model", "openai/live",
        "--base-url", live.url, "--json", "--quiet",
    ])  # fmt: skip

    assert json.loads(done.out)["answer"] == "from the live model"
    assert live.request_count == 1  # only turn 2 went live; turn 1 and its fan-out replayed
    assert live.requests[0].turn == 1


def _trace_size(serve, tmp_path: Path, turns: int) -> int:
    root = [f"```repl\nx{i} = {i}\nprint(x{i})\n```" for i in range(turns - 1)]
    root.append("FINAL(done)")
    server: FakeLMServer = serve(ScriptedLM(root=root))
    trace = tmp_path / f"t{turns}.jsonl"
    (tmp_path / "ctx.txt").write_text("some context\n" * 100)
    done = run_cli([
        "run", "q", "--context", str(tmp_path / "ctx.txt"), "--model", "openai/x",
        "--base-url", server.url, "--trace", str(trace), "--quiet", "--max-iterations", "40",
    ])  # fmt: skip
    assert done.rc == 0, done.err
    return trace.stat().st_size


def test_a_trace_grows_linearly_with_turns_not_quadratically(serve, tmp_path: Path) -> None:
    small = _trace_size(serve, tmp_path, 3)
    large = _trace_size(serve, tmp_path, 30)

    # Each message is stored once: 10x the turns costs about 10x the bytes, far from 100x.
    assert large / 30 <= 3 * (small / 3)
