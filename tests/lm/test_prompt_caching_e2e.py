"""Prompt caching end to end: `recursa run` on an Anthropic-shaped fake reads the root
conversation back from the cache from the second turn on, and the cost it reports is priced
at the cache's rates, below what the same tokens cost uncached."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from e2e_helpers import assert_usage_matches_server, one_json_object, repl, run_cli
from recursa.lm import PriceTable
from recursa.testing import ScriptedLM

MODEL = "anthropic/claude-sonnet-4-5"
QUESTION = "What does the log say? " + "Name each service, its errors and their times. " * 8
"""Long enough that the first turn's prompt passes the 1,024-token minimum Sonnet caches."""
ROOT = [
    repl("print(context[:6000])", "I will read the start of the log."),
    repl("print(context[6000:12000])", "And the next part."),
    repl("print(len(context))"),
    "FINAL(done)",
]


def _run(serve, tmp_path: Path, *extra: str, model: str = MODEL) -> tuple[dict, list[dict], object]:
    server = serve(ScriptedLM(root=ROOT))
    base = server.url if model.startswith("openai/") else server.base
    (tmp_path / "log.txt").write_text("".join(f"line {i} of the service log\n" for i in range(900)))
    trace = tmp_path / "trace.jsonl"
    done = run_cli([
        "run", QUESTION, "--context", str(tmp_path / "log.txt"),
        "--model", model, "--base-url", base, "--trace", str(trace),
        "--json", "--quiet", *extra,
    ])  # fmt: skip
    assert done.rc == 0, done.err
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    calls = [e for e in events if e["type"] == "lm_call_end" and e.get("error") is None]
    return one_json_object(done.out), calls, server


def test_root_turns_read_the_cache_from_the_second_on_and_cost_less(serve, tmp_path: Path) -> None:
    out, calls, server = _run(serve, tmp_path)
    assert out["status"] == "ok" and len(calls) == len(ROOT)
    assert_usage_matches_server(out["usage"], server)

    assert calls[0]["cache_read_tokens"] == 0 and calls[0]["cache_write_tokens"] > 0
    for call in calls[1:]:
        assert call["cache_read_tokens"] > 0, call  # the prefix the turn before wrote
        assert call["cache_read_tokens"] + call["cache_write_tokens"] <= call["input_tokens"]

    usage = out["usage"]
    mine = usage["by_model"][MODEL]
    assert mine["cache_read_tokens"] == sum(c["cache_read_tokens"] for c in calls) > 0
    assert mine["cache_write_tokens"] == sum(c["cache_write_tokens"] for c in calls) > 0
    table = PriceTable.default()
    priced = table.cost(
        MODEL,
        usage["input_tokens"],
        usage["output_tokens"],
        mine["cache_read_tokens"],
        mine["cache_write_tokens"],
    )
    uncached = table.cost(MODEL, usage["input_tokens"], usage["output_tokens"])
    assert usage["cost_usd"] == pytest.approx(priced)
    assert priced is not None and uncached is not None and priced < uncached


def test_cache_rates_from_the_price_flag_are_used(serve, tmp_path: Path) -> None:
    # Reads free, writes at the input rate: the cost is the uncached tokens' alone.
    out, _, _ = _run(serve, tmp_path, "--price", f"{MODEL}=3,15,0,3")
    usage = out["usage"]
    read = usage["by_model"][MODEL]["cache_read_tokens"]
    assert read > 0
    expected = ((usage["input_tokens"] - read) * 3 + usage["output_tokens"] * 15) / 1e6
    assert usage["cost_usd"] == pytest.approx(expected)


def test_the_end_line_says_how_many_input_tokens_were_cached(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(root=ROOT))
    (tmp_path / "log.txt").write_text("".join(f"line {i} of the service log\n" for i in range(900)))
    done = run_cli([
        "run", QUESTION, "--context", str(tmp_path / "log.txt"),
        "--model", MODEL, "--base-url", server.base,
    ])  # fmt: skip
    assert done.rc == 0, done.err
    end = next(line for line in done.err_lines if line.startswith("ok after "))
    assert re.search(r"[\d.]+k? in \([\d.]+k? cached\) / ", end), end


def test_a_replay_reports_the_same_cached_tokens_and_cost(serve, tmp_path: Path) -> None:
    out, _, _ = _run(serve, tmp_path, "--trace-context")
    done = run_cli(["replay", str(tmp_path / "trace.jsonl"), "--json", "--quiet"])
    assert done.rc == 0, done.err
    replayed = one_json_object(done.out)["usage"]
    assert replayed["by_model"][MODEL] == out["usage"]["by_model"][MODEL]
    assert replayed["cost_usd"] == pytest.approx(out["usage"]["cost_usd"])


def test_openai_automatic_cache_serves_each_root_turn_the_prefix_before_it(
    serve, tmp_path: Path
) -> None:
    """No breakpoints on OpenAI: the prompt only grows at the end, so from the second turn
    on the automatic cache serves the previous turn's prompt (in 128-token steps)."""
    out, calls, _ = _run(serve, tmp_path, model="openai/gpt-5")
    assert calls[0]["cache_read_tokens"] == 0
    for before, after in itertools.pairwise(calls):
        assert before["input_tokens"] - 128 < after["cache_read_tokens"] <= before["input_tokens"]
    usage = out["usage"]
    read = usage["by_model"]["openai/gpt-5"]["cache_read_tokens"]
    assert read == sum(c["cache_read_tokens"] for c in calls)
    expected = (usage["input_tokens"] - read) * 1.25 + read * 0.125 + usage["output_tokens"] * 10
    assert usage["cost_usd"] == pytest.approx(expected / 1e6)
