"""Strategies end to end: Direct (one request, context in the prompt, refused when it cannot
fit the window), Auto (Direct below a size, an RLM above) and RLM share the signature, the
result type and the usage report; the CLI's --strategy and --context-window.
"""

from __future__ import annotations

import pytest

from e2e_helpers import one_json_object, repl, root_requests, run_cli, sub_requests
from recursa import RLM, Auto, ConfigError, Direct, RunResult
from recursa.testing import LMRequest, ScriptedLM

SPEC = "question, context -> count: int, lines: list[int]"
LOG = "ok\nERROR\nok\nERROR\nERROR"
USAGE_KEYS = {"llm_calls", "input_tokens", "output_tokens", "cost_usd", "by_model", "by_depth"}


def _both_ways() -> ScriptedLM:
    """RLM turns SUBMIT from code; a direct request (no system prompt) answers JSON."""
    return ScriptedLM(
        root=[repl("SUBMIT(count=context.count('ERROR'), lines=[2, 4, 5])")],
        sub=lambda request: 'Sure: {"count": 3, "lines": [2, 4, 5]}',
    )


# ---- Direct ---------------------------------------------------------------------------------


def test_direct_sends_one_request_with_the_context_and_question_in_the_prompt(serve) -> None:
    server = serve(ScriptedLM(sub=lambda request: "  three  "))

    result = Direct("openai/x", base_url=server.url).run("How many errors?", LOG)

    assert (result.status, result.answer, result.iterations) == ("ok", "three", 1)
    assert result.strategy == "direct" and result.output is None
    (request,) = server.requests
    assert not request.is_root  # no system prompt, no REPL
    assert [m["role"] for m in request.messages] == ["user"]
    assert "Question: How many errors?" in request.last_user
    assert LOG in request.last_user
    types = [e.type for e in result.events]
    core = {"run_start", "lm_call_start", "lm_call_end", "final", "run_end"}
    assert [t for t in types if t in core] == [
        "run_start",
        "lm_call_start",
        "lm_call_end",
        "final",
        "run_end",
    ]
    assert not {"rlm_start", "turn_start", "block"} & set(types)  # no REPL, no turns
    assert result.usage["llm_calls"] == 1
    assert result.usage["input_tokens"] == request.input_tokens


def test_direct_with_a_signature_parses_and_validates_the_json_reply(serve) -> None:
    server = serve(_both_ways())

    result = Direct("openai/x", base_url=server.url, signature=SPEC).run("q", LOG)

    assert result.status == "ok", result.error
    assert result.output is not None and result.output.lines == [2, 4, 5]
    assert result.answer == {"count": 3, "lines": [2, 4, 5]}
    assert "one JSON object with the fields count: int, lines: list[int]" in (
        server.requests[0].last_user
    )


def test_direct_with_a_reply_that_fails_the_signature_ends_in_error_saying_why(serve) -> None:
    server = serve(ScriptedLM(sub=lambda request: '{"count": "lots", "lines": []}'))

    result = Direct("openai/x", base_url=server.url, signature=SPEC).run("q", LOG)

    assert result.status == "error"
    assert result.output is None
    assert result.error is not None and "- count: " in result.error and "'lots'" in result.error


def test_direct_is_refused_before_any_request_when_the_prompt_cannot_fit_the_window(
    serve,
) -> None:
    server = serve(ScriptedLM(sub=lambda request: "never sent"))
    direct = Direct("openai/x", base_url=server.url, context_window=5_000)

    with pytest.raises(ConfigError) as caught:
        direct.run("q", "word " * 4_000)

    message = str(caught.value)
    assert "a direct call needs about" in message
    assert "openai/x's window of 5,000" in message
    assert "use the RLM strategy" in message
    assert server.request_count == 0


def test_direct_over_a_directory_too_large_for_the_window_is_refused_before_reading_it(
    serve, tmp_path, monkeypatch
) -> None:
    from pathlib import Path

    from recursa.context import Context

    for i in range(4):
        (tmp_path / f"part{i}.log").write_text("x" * 30_000)
    server = serve(ScriptedLM(sub=lambda request: "never sent"))
    read: list[str] = []
    monkeypatch.setattr(Context, "as_text", lambda self: read.append(self.name) or "")

    with pytest.raises(ConfigError) as caught:
        Direct("openai/x", base_url=server.url, context_window=5_000).run("q", Path(tmp_path))

    assert "a direct call needs at least 7,518 tokens" in str(caught.value)
    assert read == [] and server.request_count == 0
    # Auto sizes it from the file sizes too: above its line, the RLM strategy
    auto = Auto("openai/x", base_url=server.url, context_window=5_000)
    assert auto.choose([auto.load(Path(tmp_path))]) == "rlm" and read == []


def test_direct_refusal_for_a_model_of_unknown_window_says_what_was_assumed(serve) -> None:
    server = serve(ScriptedLM(sub=lambda request: "never sent"))

    with pytest.raises(ConfigError, match=r"assumed 32,768: set context_window"):
        Direct("openai/unknown-model", base_url=server.url).run("q", "x" * 200_000)
    assert server.request_count == 0


def test_direct_uses_the_known_window_of_a_listed_model(serve) -> None:
    server = serve(ScriptedLM(sub=lambda request: "fits"))
    text = "x" * 200_000  # about 50,000 tokens: too big for 32,768, fine for gpt-4o's 128,000

    result = Direct("openai/gpt-4o", base_url=server.url).run("q", text)

    assert result.status == "ok" and result.answer == "fits"


# ---- Auto -----------------------------------------------------------------------------------


def test_auto_picks_direct_below_its_threshold_and_an_rlm_at_or_above_it(serve) -> None:
    server = serve(_both_ways())
    auto = Auto("openai/x", base_url=server.url, direct_below_chars=1_000)

    small = auto.run("q", "E" * 999)
    large = auto.run("q", "E" * 1_000)

    assert (small.strategy, large.strategy) == ("direct", "rlm")
    assert small.status == large.status == "ok"
    first, *rest = server.requests
    assert not first.is_root and "E" * 999 in first.last_user  # the context went in the prompt
    assert rest and all(r.is_root for r in rest)
    assert all("E" * 600 not in m["content"] for r in rest for m in r.messages)  # a preview
    starts = [
        e.settings["strategy"] for r in (small, large) for e in r.events if e.type == "run_start"
    ]
    assert starts == ["direct", "rlm"]


def test_auto_defaults_its_threshold_to_what_fits_beside_the_answer_at_four_chars_a_token(
    serve,
) -> None:
    server = serve(_both_ways())

    auto = Auto("openai/x", base_url=server.url, context_window=40_000)
    assert auto.direct_below_chars == (40_000 - 4_096) * 2
    assert Auto("openai/gpt-4o", base_url=server.url).direct_below_chars == (128_000 - 4_096) * 2
    assert Auto("openai/unknown", base_url=server.url).direct_below_chars == (32_768 - 4_096) * 2


def test_auto_counts_every_context_together(serve) -> None:
    server = serve(_both_ways())
    auto = Auto("openai/x", base_url=server.url, direct_below_chars=100)

    assert auto.run("q", contexts=["a" * 40, "b" * 40]).strategy == "direct"
    assert auto.run("q", contexts=["a" * 60, "b" * 60]).strategy == "rlm"


def test_auto_never_picks_a_direct_call_that_cannot_fit_the_window(serve) -> None:
    server = serve(_both_ways())
    auto = Auto("openai/x", base_url=server.url, context_window=4_000)  # threshold 8,000 chars

    result = auto.run("q", "E" * 1_000)  # ~4,400 tokens with the output reserve: no fit

    assert result.status == "ok" and result.strategy == "rlm"


# ---- one contract across strategies -----------------------------------------------------------


@pytest.mark.parametrize(
    "program, kwargs, strategy",
    [
        (RLM, {}, "rlm"),
        (Direct, {}, "direct"),
        (Auto, {"direct_below_chars": 1_000}, "direct"),
        (Auto, {"direct_below_chars": 10}, "rlm"),
    ],
    ids=["rlm", "direct", "auto-direct", "auto-rlm"],
)
def test_every_strategy_returns_the_same_signature_result_and_usage_report(
    serve, program, kwargs, strategy
) -> None:
    server = serve(_both_ways())
    rlm = program("openai/x", base_url=server.url, signature=SPEC, **kwargs)

    result = rlm.run("How many errors?", LOG)

    assert isinstance(result, RunResult)
    assert result.status == "ok" and result.strategy == strategy
    assert result.output is not None
    assert type(result.output) is rlm.signature.output
    assert result.output.model_dump() == {"count": 3, "lines": [2, 4, 5]}
    assert result.answer == {"count": 3, "lines": [2, 4, 5]}
    assert set(result.usage) == USAGE_KEYS
    assert result.usage["llm_calls"] == server.request_count == 1
    assert result.usage["by_model"]["openai/x"]["llm_calls"] == 1
    assert result.usage["by_depth"]["0"]["llm_calls"] == 1
    assert set(result.to_dict()) == {"answer", "status", "iterations", "usage", "run_id", "trace"}


def test_direct_and_rlm_charge_the_same_budget_the_same_way(serve) -> None:
    server = serve(ScriptedLM(root=[repl("print(1)")], sub=lambda request: "never sent"))

    for program in (Direct, RLM):
        result = program("openai/x", base_url=server.url, max_tokens=20).run("q", LOG)
        assert result.status == "budget_exhausted", (program.__name__, result)
        assert result.usage["llm_calls"] == 0
    assert server.request_count == 0


# ---- the CLI ---------------------------------------------------------------------------------


def _cli(server, log, *extra: str):
    return run_cli(
        [
            "run",
            "How many errors?",
            "--context",
            str(log),
            "--model",
            "openai/x",
            "--base-url",
            server.url,
            "--json",
            "--quiet",
            *extra,
        ]
    )


def test_the_cli_direct_strategy_with_a_signature_answers_in_one_request(serve, tmp_path) -> None:
    server = serve(_both_ways())
    log = tmp_path / "app.log"
    log.write_text(LOG, encoding="utf-8")

    run = _cli(server, log, "--strategy", "direct", "--signature", SPEC)

    assert run.rc == 0, run.err
    out = one_json_object(run.out)
    assert out["answer"] == {"count": 3, "lines": [2, 4, 5]}
    assert (out["status"], out["iterations"], out["usage"]["llm_calls"]) == ("ok", 1, 1)
    assert root_requests(server) == [] and len(sub_requests(server)) == 1


def test_the_cli_auto_strategy_goes_direct_for_a_small_file(serve, tmp_path) -> None:
    server = serve(ScriptedLM(sub=lambda request: "three"))
    log = tmp_path / "app.log"
    log.write_text(LOG, encoding="utf-8")

    run = _cli(server, log, "--strategy", "auto")

    assert run.rc == 0, run.err
    assert one_json_object(run.out)["answer"] == "three"
    assert root_requests(server) == []


def test_the_cli_refuses_a_direct_call_over_the_context_window_with_exit_code_2(
    serve, tmp_path
) -> None:
    server = serve(ScriptedLM(sub=lambda request: "never sent"))
    log = tmp_path / "app.log"
    log.write_text("x" * 40_000, encoding="utf-8")

    run = _cli(server, log, "--strategy", "direct", "--context-window", "8000")

    assert run.rc == 2
    assert run.out == ""
    assert len(run.err_lines) == 1
    assert run.err_lines[0].startswith("recursa: error: a direct call needs about")
    assert "window of 8,000" in run.err_lines[0]
    assert server.request_count == 0


def test_the_cli_context_window_flag_reaches_the_rlm(serve, tmp_path) -> None:
    seen: list[LMRequest] = []

    def root(request: LMRequest) -> str:
        seen.append(request)
        return repl("FINAL('ok')")

    server = serve(ScriptedLM(root=root))
    log = tmp_path / "app.log"
    log.write_text(LOG, encoding="utf-8")
    trace = tmp_path / "run.jsonl"

    run = _cli(server, log, "--context-window", "12345", "--trace", str(trace))

    assert run.rc == 0, run.err
    assert '"context_window": 12345' in trace.read_text(encoding="utf-8")
    assert len(seen) == 1
