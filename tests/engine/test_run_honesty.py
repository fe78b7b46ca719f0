"""A run says what happened: a pipeline's budget errors are its status, a session keeps the
RLM's listener, a system prompt may hold braces, a run without a context is not told to
explore one, and `random` in model code draws the same numbers when the run is replayed."""

from __future__ import annotations

import json
from pathlib import Path

from e2e_helpers import host_env, repl, root_requests, run_cli
from recursa import RLM
from recursa.testing import ScriptedLM

PIPELINE = """\
from recursa.mining.pipeline import SubModels


def run(question, context, **options):
    options.setdefault("sub_model", "openai/x")
    with SubModels(options.pop("sub_model"), question=question, context=context,
                   **options) as models:
        models.FINAL(models.llm_query_batched(["one", "two", "three"]))
    return models.result
"""


def test_a_pipeline_whose_budget_refused_items_does_not_report_ok(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(sub=lambda request: "fine"))
    pipeline = tmp_path / "pipeline.py"
    pipeline.write_text(PIPELINE)
    context = tmp_path / "c.txt"
    context.write_text("text")

    done = run_cli(
        ["pipeline", str(pipeline), "Q", "--context", str(context), "--base-url", server.url,
         "--max-llm-calls", "2", "--no-store", "--json", "--quiet"],
    )  # fmt: skip

    result = json.loads(done.out)
    assert done.rc == 3, done.err  # a limit stopped part of it: the answer is still printed
    assert result["status"] == "budget_exhausted"
    assert sorted(result["answer"]) == [
        "[error] budget: max_llm_calls=2 reached: no request was sent",
        "fine",
        "fine",
    ]
    assert "the budget refused 1 request(s)" in result["error"]
    assert server.request_count == 2


def test_a_session_tells_the_rlms_own_listener(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('ok')")]))
    seen: list[str] = []
    rlm = RLM("openai/x", base_url=server.url, on_event=lambda e: seen.append(e.type))
    with rlm.session() as session:
        answer = session.ask("first?", context="some text")
    assert answer.answer == "ok"
    assert seen[0] == "run_start" and seen[-1] == "run_end" and "block" in seen


def test_a_system_prompt_may_hold_literal_braces(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('ok')")]))
    system = 'Reply as JSON, {"answer": ...}; in code, f"{x}" is fine. The input: {context_kind}.'
    result = RLM("openai/x", base_url=server.url, system_prompt=system).run("q?", "abc")

    assert result.status == "ok", result.error
    sent = root_requests(server)[0].messages[0]["content"]
    assert sent.startswith('Reply as JSON, {"answer": ...}; in code, f"{x}" is fine. The input: ')
    assert "{context_kind}" not in sent and "str of 3" in sent


def test_a_run_without_a_context_is_not_told_to_explore_one(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(6 * 7)")]))
    result = RLM("openai/x", base_url=server.url).run("What is six times seven?")

    assert result.answer == 42
    first = root_requests(server)[0].messages[1]["content"]
    assert "There is no `context` variable" in first
    assert "exploring `context`" not in first and "FINAL(answer)" in first


def test_random_in_model_code_is_seeded_per_run_and_replayed_alike(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(root=[repl("import random\nFINAL(random.random())")]))
    trace = tmp_path / "run.jsonl"
    common = ["--model", "openai/x", "--base-url", server.url, "--no-store", "--quiet"]

    first = run_cli(["run", "draw", "--trace", str(trace), *common], env=host_env())
    second = run_cli(["run", "draw", *common], env=host_env())
    replayed = run_cli(["replay", str(trace), "--quiet"], env=host_env())

    start = json.loads(trace.read_text().splitlines()[0])
    assert first.rc == 0 and second.rc == 0, first.err + second.err
    assert isinstance(start["settings"]["seed"], int)  # recorded in run_start
    assert first.out != second.out  # a fresh seed per run
    assert replayed.rc == 0, replayed.err  # no divergence
    assert replayed.out == first.out


def test_a_given_seed_draws_the_same_numbers(serve) -> None:
    server = serve(ScriptedLM(root=[repl("import random\nFINAL(random.randrange(10**9))")]))
    rlm = RLM("openai/x", base_url=server.url, seed=7)
    runs = [rlm.run("draw") for _ in range(2)]
    assert runs[0].answer == runs[1].answer
    assert runs[0].events[0].settings["seed"] == 7
