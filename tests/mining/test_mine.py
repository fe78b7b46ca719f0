"""`recursa mine` over twenty real runs of mixed outcomes.

Each run is a real RLM run (scripted model behind the fake HTTP server, real sandbox)
whose trace is written by the real JSON-lines writer; the report must count exactly what
those scripts did: ten reach an answer (six fan out over 1,000-line chunks, four ask one
sub-query), three run out of turns sending sub-queries one at a time, three are stopped as
stalled, four end in error.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import one_json_object, repl, run_cli
from recursa.core.programs import RLM
from recursa.mining import mine
from recursa.testing import FakeLMServer, LMRequest, Reply, ScriptedLM
from recursa.trace.jsonl import JsonlTrace
from recursa.trace.store import RunStore

QUESTION = "What is the vault passphrase mentioned in the log?"
SECRET = "amber-falcon-7731"
FAN_OUT_LINES = [2_000, 3_000, 4_000, 2_000, 3_000, 4_000]
"""Lines of each fan-out run's log: 1,000-line chunks make widths 2, 3, 4, 2, 3, 4."""

EXPLORE = repl("print(len(context))")
FAN_OUT = repl(
    r"""
    lines = context.splitlines()
    chunks = ["\n".join(lines[i:i + 1_000]) for i in range(0, len(lines), 1_000)]
    prompts = [
        "Quote the vault passphrase if this excerpt has one, else reply NONE.\n\n" + chunk
        for chunk in chunks
    ]
    answers = llm_query_batched(prompts)
    hits = [a for a in answers if a.startswith("FOUND")]
    """
)
FINISH = repl(
    """
    answer = hits[0].split(" ", 1)[1]
    FINAL_VAR("answer")
    """
)
TYPO = repl("print(contxt[:100])")
ONE_QUERY = repl(
    r"""
    word = llm_query("Summarise this log in one word.\n\n" + context[:500])
    FINAL(word)
    """
)


def _log(lines: int, planted: int) -> str:
    rows = [
        f"{i:08d} telemetry frame nominal, checksum {i * 7919 % 100_000:05d}" for i in range(lines)
    ]
    rows[planted] = f"{planted:08d} NOTE: the vault passphrase is {SECRET}"
    return "\n".join(rows) + "\n"


def _sub(request: LMRequest) -> str | Reply:
    prompt = request.last_user
    if prompt.startswith("BROKEN"):
        return Reply(status=400, error_body="scripted sub-query failure")
    if prompt.startswith("Summarise"):
        return "telemetry"
    match = re.search(r"the vault passphrase is (\S+)", prompt)
    return f"FOUND {match.group(1)}" if match else "NONE"


def _one_at_a_time(request: LMRequest) -> str:
    if "no turns left" in request.last_user:
        return "FINAL(unknown)"
    n = request.turn
    return repl(
        f"""
        r{n} = [llm_query("Find the passphrase.\\n\\n" + context[i:i + 100])
              for i in range(0, 300, 100)]
        """
    )


def _repeating(code_for_turn):
    def root(request: LMRequest) -> str:
        if "being stopped" in request.last_user:
            return "FINAL(no idea)"
        return repl(code_for_turn(request.turn))

    return root


# (kind, root script, max_iterations, context)
RUNS: list[tuple[str, Any, int, str]] = [
    *[("fan_out", [EXPLORE, FAN_OUT, FINISH], 30, _log(n, n - 7)) for n in FAN_OUT_LINES],
    ("one_query", [ONE_QUERY], 30, _log(300, 10)),
    ("one_query", [ONE_QUERY], 30, _log(300, 10)),
    ("one_query_after_typo", [TYPO, ONE_QUERY], 30, _log(300, 10)),
    ("one_query_after_typo", [TYPO, ONE_QUERY], 30, _log(300, 10)),
    *[("one_at_a_time", _one_at_a_time, 3, _log(300, 10)) for _ in range(3)],
    *[("repeat_block", _repeating(lambda n: "print(len(context))"), 30, "x" * 500)] * 2,
    ("repeat_error", _repeating(lambda n: f"1 / 0  # attempt {n}"), 30, "x" * 500),
    *[("root_fails", [EXPLORE, Reply(status=400, error_body="scripted")], 30, "y" * 300)] * 3,
    (
        "sub_fails",
        [repl('r = llm_query("BROKEN " + context[:10])'), Reply(status=400)],
        30,
        "y" * 300,
    ),
]


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    """Twenty runs, each written to its own trace file; also their events (for the store)."""
    folder = tmp_path_factory.mktemp("traces")
    results = []
    for number, (kind, root, max_iterations, context) in enumerate(RUNS):
        with FakeLMServer(ScriptedLM(root=root, sub=_sub)) as server:
            trace = JsonlTrace(folder / f"{number:02d}-{kind}.jsonl")
            rlm = RLM("openai/x", base_url=server.url, max_iterations=max_iterations)
            try:
                results.append(rlm.run(QUESTION, context, on_event=trace))
            finally:
                trace.close()
    return folder, results


def test_the_twenty_scripted_runs_end_as_scripted(traces) -> None:
    _, results = traces
    statuses = [r.status for r in results]
    assert statuses == ["ok"] * 10 + ["max_iterations"] * 3 + ["stalled"] * 3 + ["error"] * 4
    assert [r.answer for r in results[:6]] == [SECRET] * 6


def test_mine_counts_statuses_helpers_and_lm_calls(traces) -> None:
    folder, _ = traces
    data = mine([str(folder)]).data

    assert data["runs"] == 20 and data["ok_runs"] == 10 and data["failed_runs"] == 10
    assert data["status"] == {"ok": 10, "max_iterations": 3, "stalled": 3, "error": 4}
    helpers = data["helpers"]
    assert helpers["llm_query_batched"] == {"runs": 6, "ok_runs": 6, "blocks": 6, "calls": 6}
    # one_query x4 (one call), one_at_a_time x3 (three blocks of one call), sub_fails x1
    assert helpers["llm_query"] == {"runs": 8, "ok_runs": 4, "blocks": 14, "calls": 14}
    assert helpers["FINAL_VAR"] == {"runs": 6, "ok_runs": 6, "blocks": 6, "calls": 6}
    assert helpers["FINAL"] == {"runs": 4, "ok_runs": 4, "blocks": 4, "calls": 4}
    assert "rlm_query" not in helpers
    # sub-queries: 18 in the fan-outs, 4 single, 27 one at a time, 1 that failed
    assert data["sub_queries"] == 50
    assert data["lm_calls"]["sub"] == 50
    # root turns: fan-out 3 each, one_query 1 or 2, one_at_a_time 3 + extraction,
    # stalls 3, 3, 4 + extraction, root_fails 1 + the failed turn, sub_fails the same
    assert data["lm_calls"]["root"] == 18 + 6 + 9 + 10 + 8
    assert data["lm_calls"]["extract"] == 6


def test_mine_finds_the_chunk_sizes_and_fan_out_widths(traces) -> None:
    folder, _ = traces
    data = mine([str(folder)]).data

    assert data["chunk_sizes"] == {
        "1000": {"runs": 6, "ok_runs": 6},
        "100": {"runs": 3, "ok_runs": 0},
    }
    fan = data["fan_out"]
    assert fan["widths"] == {"1": 5, "2": 2, "3": 11, "4": 2}
    assert fan["blocks"] == 20
    assert fan["batched_blocks"] == 6
    assert fan["sequential_blocks"] == 9
    assert fan["max"] == 4
    prompt_chars = data["sub_prompt_chars"]
    assert prompt_chars["count"] == 50
    # a whole 1,000-line chunk and its instruction: the length the excerpt records, not
    # the 1,000 characters of it the trace keeps
    with_needle = "\n".join(_log(2_000, 1_993).splitlines()[1_000:])
    instruction = "Quote the vault passphrase if this excerpt has one, else reply NONE.\n\n"
    assert prompt_chars["max"] == len(instruction) + len(with_needle)


def test_mine_normalises_prompt_shapes_across_runs(traces) -> None:
    folder, _ = traces
    shapes = {s["shape"]: s for s in mine([str(folder)]).data["prompt_shapes"]}

    fan_out = shapes["Quote the vault passphrase if this excerpt has one, else reply NONE. {text}"]
    assert (fan_out["prompts"], fan_out["runs"], fan_out["ok_runs"]) == (18, 6, 6)
    single = shapes["Summarise this log in one word. {text}"]
    assert (single["prompts"], single["runs"], single["ok_runs"]) == (4, 4, 4)
    one_at_a_time = shapes["Find the passphrase. {text}"]
    assert (one_at_a_time["prompts"], one_at_a_time["runs"]) == (27, 3)
    assert len(shapes) == 4  # and the failed "BROKEN ..." prompt


def test_mine_counts_errors_by_kind(traces) -> None:
    folder, _ = traces
    errors = mine([str(folder)]).data["errors"]

    assert errors["blocks"] == {"ZeroDivisionError": 4, "NameError": 2, "LLMQueryError": 1}
    assert errors["sub_queries"] == {"HTTP 400": 1}
    assert errors["stalls"] == {
        "warned": 3,
        "stopped": 3,
        "kinds": {"repeated_block": 4, "repeated_error": 2},
    }
    assert errors["budget_refused"] == {}
    assert errors["runs"] == {
        "HTTP N from URL: invalid_request_error: scripted": 3,
        "HTTP N from URL: invalid_request_error: scripted error (HTTP N)": 1,
    }


def test_mine_reports_turns_and_cost_by_status(traces) -> None:
    folder, _ = traces
    turns = mine([str(folder)]).data["turns_and_cost"]

    assert turns["all"]["runs"] == 20
    assert turns["ok"]["turns"] == {"count": 10, "min": 1, "median": 3.0, "mean": 2.4, "max": 3}
    assert turns["max_iterations"]["turns"]["max"] == 3
    assert [turns["stalled"]["turns"][k] for k in ("min", "max")] == [3, 4]
    assert turns["error"]["turns"]["max"] == 1
    # every request is counted: the fan-out runs each made 3 turns and 2-4 sub-queries
    assert turns["ok"]["llm_calls"]["max"] == 3 + 4
    assert turns["all"]["cost_usd"]["total"] == 0.0  # the scripted model is free


def test_mine_compares_successful_and_failed_runs(traces) -> None:
    folder, _ = traces
    separators = mine([str(folder)]).data["separators"]
    features = {f["feature"]: f for f in separators["features"]}

    assert separators["ok_runs"] == 10 and separators["failed_runs"] == 10
    assert separators["features"][0]["feature"] == "ended in code (FINAL/FINAL_VAR/SUBMIT)"
    assert separators["features"][0]["difference"] == 1.0
    batched = features["called llm_query_batched"]
    assert (batched["ok_count"], batched["failed_count"], batched["difference"]) == (6, 0, 0.6)
    stalls = features["was warned of a stall"]
    assert (stalls["ok_count"], stalls["failed_count"]) == (0, 3)
    errors = features["a block raised an error"]
    assert (errors["ok_count"], errors["failed_count"]) == (2, 2)
    numbers = {n["measure"]: n for n in separators["numbers"]}
    assert numbers["widest fan-out"]["ok_mean"] == pytest.approx((2 + 3 + 4) * 2 / 10 + 0.4)


def test_mine_cli_writes_markdown_and_json_reports(traces, tmp_path: Path) -> None:
    folder, _ = traces
    out = tmp_path / "report"

    run = run_cli(["mine", str(folder), "--out", str(out)])

    assert run.rc == 0, run.err
    data = json.loads((out / "report.json").read_text())
    assert data["runs"] == 20 and data["status"]["stalled"] == 3
    markdown = (out / "report.md").read_text()
    for heading in (
        "## Helpers called from code",
        "## Chunking and fan-out",
        "## Sub-query prompt shapes",
        "## Errors",
        "## Turns and cost to an answer",
        "## What separates successful runs from failed ones",
    ):
        assert heading in markdown
    assert "| `llm_query_batched` | 6 | 6 | 6 | 6 |" in markdown
    assert "| block raised | ZeroDivisionError | 4 |" in markdown


def test_mine_cli_reads_the_run_store_and_counts_each_run_once(traces, tmp_path: Path) -> None:
    folder, results = traces
    store = RunStore()  # the test's own RECURSA_HOME (conftest)
    for result in results:
        store.save(result.events)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)

    from_store = run_cli(["mine", "--json"])
    mixed = run_cli(["mine", str(folder), str(copy), results[0].run_id, "--store", "--json"])

    assert from_store.rc == 0, from_store.err
    assert one_json_object(from_store.out)["status"] == {
        "ok": 10,
        "max_iterations": 3,
        "stalled": 3,
        "error": 4,
    }
    assert mixed.rc == 0, mixed.err
    assert one_json_object(mixed.out)["runs"] == 20


def test_mine_skips_torn_lines_and_rejects_an_unknown_source(traces, tmp_path: Path) -> None:
    folder, _ = traces
    torn = tmp_path / "torn.jsonl"
    text = (folder / "00-fan_out.jsonl").read_text()
    torn.write_text(text + '{"type": "block", "run_id": "x", "co')

    report = mine([str(torn)])
    missing = run_cli(["mine", str(tmp_path / "nope.jsonl")])

    assert report.data["runs"] == 1 and report.data["status"] == {"ok": 1}
    assert any("1 line(s) that are not events" in w for w in report.data["warnings"])
    assert missing.rc == 2
    assert "trace file not found" in missing.err
