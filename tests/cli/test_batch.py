"""`recursa batch`: many questions, results as JSON lines as they finish, resume, interrupt.

Every test drives the real console script in a subprocess against a FakeLMServer on
127.0.0.1, with real sandbox workers. The scripted root model reads the question ("[ID]
count WORD") from the first user message and answers with code that counts WORD in
`context`, so each answer depends on the question and on the context it was given.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from e2e_helpers import finish_cli, run_cli, start_cli
from recursa.batch import BatchConfig, load_questions, load_results, plan
from recursa.errors import ConfigError
from recursa.testing import LMRequest, Reply

ASK = re.compile(r"\[(q\d+)\] count (\w+)")


def responder(hold: set[str] | None = None, release: threading.Event | None = None):
    """Root turns: FINAL(context.count(WORD)) for "[ID] count WORD"; the ids in `hold`
    wait for `release` before the model answers."""

    def root(request: LMRequest) -> str:
        found = ASK.search(request.messages[1]["content"])
        assert found, "no question in the first user message"
        ident, word = found.groups()
        if hold and ident in hold and release is not None:
            release.wait(60)
        return f'```repl\nFINAL(context.count("{word}"))\n```'

    return root


def first_turns(server, ident: str) -> int:
    """How many runs of question `ident` the server saw start."""
    return sum(
        1
        for r in server.requests
        if r.is_root and r.turn == 0 and f"[{ident}] " in r.messages[1]["content"]
    )


@pytest.fixture
def batch_dir(tmp_path: Path) -> Path:
    (tmp_path / "shared.log").write_text("apple banana apple cherry apple\n" * 10)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "own.txt").write_text("banana banana\n")
    lines = []
    for i in range(20):
        row: dict = {
            "id": f"q{i:02d}",
            "question": f"[q{i:02d}] count {['apple', 'banana'][i % 2]}",
        }
        if i % 5 == 4:
            row["context"] = "data/own.txt"  # relative to the questions file
        lines.append(json.dumps(row))
    (tmp_path / "questions.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def batch_args(batch_dir: Path, url: str, *extra: str) -> list[str]:
    return [
        "batch",
        str(batch_dir / "questions.jsonl"),
        "--out",
        str(batch_dir / "results.jsonl"),
        "--context",
        str(batch_dir / "shared.log"),
        "--model",
        "openai/scripted",
        "--base-url",
        url,
        *extra,
    ]


def expected(i: int) -> int:
    if i % 5 == 4:
        return 0 if i % 2 == 0 else 2  # own.txt holds two bananas
    return 30 if i % 2 == 0 else 10


def results(batch_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (batch_dir / "results.jsonl").read_text().splitlines()]


def test_each_question_gets_one_result_line_with_its_answer(serve, batch_dir):
    server = serve(responder())
    done = run_cli(batch_args(batch_dir, server.url, "--jobs", "4"), timeout=120)
    assert done.rc == 0, done.err
    rows = results(batch_dir)
    assert sorted(r["id"] for r in rows) == [f"q{i:02d}" for i in range(20)]
    for row in rows:
        i = int(row["id"][1:])
        assert row["status"] == "ok" and row["answer"] == expected(i), row
        assert row["usage"]["llm_calls"] == 1 and row["run_id"] and row["executor"] == "local"
        own = i % 5 == 4
        want = batch_dir / ("data/own.txt" if own else "shared.log")
        assert row["contexts"] == [str(want.resolve())]
    assert "20 questions: 20 ran (20 ok), 0 already in" in done.err
    assert done.out.strip() == f"results: {batch_dir / 'results.jsonl'}"


def test_a_rerun_refuses_old_results_and_with_resume_skips_the_answered_ids(serve, batch_dir):
    server = serve(responder())
    assert run_cli(batch_args(batch_dir, server.url), timeout=120).rc == 0
    fresh = run_cli(batch_args(batch_dir, server.url), timeout=60)
    again = run_cli(batch_args(batch_dir, server.url, "--resume"), timeout=60)
    assert fresh.rc == 2 and fresh.err_lines == [
        f"recursa: error: {batch_dir / 'results.jsonl'} already holds 20 results: pass "
        "--resume to go on from them, or choose another --out"
    ]
    assert again.rc == 0 and "0 ran (none ran), 20 already in" in again.err
    assert len(results(batch_dir)) == 20
    assert all(first_turns(server, f"q{i:02d}") == 1 for i in range(20))


def test_a_batch_interrupted_by_sigint_keeps_its_results_and_resumes(serve, batch_dir):
    release = threading.Event()
    held = {f"q{i:02d}" for i in range(5, 20)}
    server = serve(responder(held, release))
    try:
        proc = start_cli(batch_args(batch_dir, server.url, "--concurrency", "2"))
        out = batch_dir / "results.jsonl"
        deadline = time.monotonic() + 90
        while not (out.exists() and len(out.read_text().splitlines()) >= 5):
            assert proc.poll() is None, finish_cli(proc).err
            assert time.monotonic() < deadline, "the first five questions never finished"
            time.sleep(0.05)
        while server.in_flight < 2:  # q05 and q06 are with the model, held
            assert time.monotonic() < deadline, "the held questions never reached the model"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stopped = finish_cli(proc, timeout=60)
    finally:
        release.set()
    assert stopped.rc == 130, stopped.err
    assert "interrupted; the finished results are kept" in stopped.err
    assert "again with --resume to go on" in stopped.err
    kept = results(batch_dir)
    assert sorted(r["id"] for r in kept) == [f"q{i:02d}" for i in range(5)]
    assert all(r["status"] == "ok" for r in kept)

    resumed = run_cli(batch_args(batch_dir, server.url, "--jobs", "4", "--resume"), timeout=120)
    assert resumed.rc == 0, resumed.err
    assert "15 ran (15 ok), 5 already in" in resumed.err
    rows = results(batch_dir)
    assert sorted(r["id"] for r in rows) == [f"q{i:02d}" for i in range(20)]
    assert all(r["answer"] == expected(int(r["id"][1:])) for r in rows)
    assert all(first_turns(server, f"q{i:02d}") == 1 for i in range(5))


def test_retry_errors_runs_again_only_the_failed_ids(serve, batch_dir):
    out = batch_dir / "results.jsonl"
    rows = [{"id": f"q{i:02d}", "status": "ok", "answer": expected(i)} for i in range(20)]
    rows[3] = {"id": "q03", "status": "error", "answer": None, "error": "boom"}
    out.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "q07", "sta')
    server = serve(responder())
    done = run_cli(batch_args(batch_dir, server.url, "--retry-errors"), timeout=60)
    assert done.rc == 0, done.err
    assert "1 ran (1 ok), 19 already in" in done.err
    last = load_results(out)
    assert last["q03"]["status"] == "ok" and last["q03"]["answer"] == expected(3)
    assert first_turns(server, "q03") == 1 and first_turns(server, "q07") == 0
    # the line cut short stays alone on its line: every other line still parses
    lines = out.read_text().splitlines()
    assert lines[-2] == '{"id": "q07", "sta' and json.loads(lines[-1])["id"] == "q03"


def test_a_failed_question_is_a_result_and_the_exit_status_says_so(serve, batch_dir):
    (batch_dir / "questions.jsonl").write_text(
        json.dumps({"id": "q01", "question": "[q01] count apple"})
        + "\n"
        + json.dumps({"id": "q02", "question": "[q02] count FAIL"})
        + "\n"
    )
    answer = responder()

    def root(request: LMRequest) -> str | Reply:
        if "count FAIL" in request.messages[1]["content"]:
            return Reply(status=400, error_body="this model refuses")
        return answer(request)

    server = serve(root)
    done = run_cli(batch_args(batch_dir, server.url), timeout=60)
    assert done.rc == 1, done.err
    last = load_results(batch_dir / "results.jsonl")
    assert last["q01"]["status"] == "ok" and last["q01"]["answer"] == 30
    assert last["q02"]["status"] == "error" and "this model refuses" in last["q02"]["error"]


def test_a_missing_context_path_in_one_line_fails_that_question_and_the_batch_goes_on(
    serve, batch_dir
):
    (batch_dir / "questions.jsonl").write_text(
        json.dumps({"id": "q01", "question": "[q01] count apple", "context": "missing.txt"})
        + "\n"
        + json.dumps({"id": "q02", "question": "[q02] count apple"})
        + "\n"
    )
    server = serve(responder())
    done = run_cli(batch_args(batch_dir, server.url), timeout=60)
    assert done.rc == 1, done.err  # some question failed: its line says why
    last = load_results(batch_dir / "results.jsonl")
    missing = batch_dir / "missing.txt"
    assert last["q01"]["status"] == "error"
    assert last["q01"]["error"] == f"context path not found: {missing}"
    assert last["q02"]["status"] == "ok" and last["q02"]["answer"] == 30
    assert "1 error, 1 ok" in done.err and first_turns(server, "q01") == 0


def test_a_missing_shared_context_path_is_refused_before_any_question_runs(serve, batch_dir):
    server = serve(responder())
    args = batch_args(batch_dir, server.url)
    args[args.index("--context") + 1] = str(batch_dir / "gone.log")
    done = run_cli(args, timeout=60)
    assert done.rc == 2 and done.err_lines == [
        f"recursa: error: context path not found: {batch_dir / 'gone.log'}"
    ]
    assert server.request_count == 0 and not (batch_dir / "results.jsonl").exists()


def test_a_bad_questions_file_is_refused_before_any_question_runs(batch_dir):
    path = batch_dir / "questions.jsonl"
    path.write_text('{"id": "a", "question": "x"}\n{"id": "a", "question": "y"}\n')
    with pytest.raises(ConfigError, match="id 'a' appears twice"):
        load_questions(path)
    path.write_text('{"id": true, "question": "x"}\n')
    with pytest.raises(ConfigError, match="must be a string or a whole number"):
        load_questions(path)
    path.write_text('{"id": "a", "question": "x", "context": 3}\n')
    with pytest.raises(ConfigError, match="a path or a list of paths"):
        load_questions(path)
    done = run_cli(["batch", str(path), "--out", str(batch_dir / "r.jsonl"), "--model", "openai/x"])
    assert done.rc == 2 and len(done.err_lines) == 1 and "a path or a list" in done.err


def test_a_line_may_name_several_contexts_and_the_plan_skips_finished_ids(batch_dir):
    path = batch_dir / "questions.jsonl"
    path.write_text(
        json.dumps({"id": "m", "question": "q", "context": ["shared.log", "data/own.txt"]})
        + "\n"
        + json.dumps({"id": "n", "question": "q"})
        + "\n"
    )
    out = batch_dir / "results.jsonl"
    out.write_text(json.dumps({"id": "n", "status": "ok"}) + "\n")
    items, todo = plan(
        BatchConfig(path, out, contexts=(str(batch_dir / "shared.log"),), resume=True)
    )
    assert items[0].contexts == (
        str((batch_dir / "shared.log").resolve()),
        str((batch_dir / "data/own.txt").resolve()),
    )
    assert [item.id for item in todo] == ["m"]
