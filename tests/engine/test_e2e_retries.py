"""Failed LM requests through real sockets: retried, every attempt counted, Retry-After kept."""

from __future__ import annotations

from e2e_helpers import assert_usage_matches_server, closed_port, repl, sub_requests
from recursa.core.programs import RLM
from recursa.lm.retry import RetryPolicy
from recursa.testing import LMRequest, Reply, ScriptedLM

SCRIPT = [repl("x = llm_query('hello')\nprint(x)"), repl("FINAL(x)")]


def _model() -> ScriptedLM:
    return ScriptedLM(root=SCRIPT, sub=lambda request: "world")


def test_two_server_errors_are_retried_and_every_attempt_is_counted(serve, fast_retry) -> None:
    server = serve(_model(), fail_first=2, fail_status=500)

    result = RLM("openai/x", base_url=server.url, retry=fast_retry).run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer == "world"
    assert server.request_count == 3 + 2  # two root turns and a sub-query, plus 2 failures
    assert result.usage["llm_calls"] == server.request_count
    assert_usage_matches_server(result.usage, server)


def test_dropped_connections_are_retried_and_counted(serve, fast_retry) -> None:
    server = serve(_model(), drop_first=2)

    result = RLM("openai/x", base_url=server.url, retry=fast_retry).run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.usage["llm_calls"] == server.request_count == 5
    assert_usage_matches_server(result.usage, server)


def test_retry_after_of_a_429_is_honoured_over_the_backoff(serve) -> None:
    # The backoff alone would wait 30 s, past the run's 10 s timeout: only a run that
    # waits the server's Retry-After (0.2 s) instead can end ok.
    slow_backoff = RetryPolicy(max_retries=2, base_delay=30.0, max_delay=60.0, jitter=0.0)
    server = serve(_model(), fail_first=1, fail_status=429, retry_after=0.2)

    result = RLM("openai/x", base_url=server.url, retry=slow_backoff, timeout=10).run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer == "world"
    assert result.usage["llm_calls"] == server.request_count == 4
    assert_usage_matches_server(result.usage, server)


def test_errors_past_the_retry_limit_end_the_run_with_error_and_count_every_attempt(
    serve,
) -> None:
    server = serve(_model(), fail_first=50, fail_status=503)
    policy = RetryPolicy(max_retries=2, base_delay=0.01, jitter=0.0)

    result = RLM("openai/x", base_url=server.url, retry=policy).run("q", "ctx")

    assert result.status == "error"
    assert "503" in (result.error or "")
    assert server.request_count == 3
    assert result.usage["llm_calls"] == 3
    assert result.usage["input_tokens"] == 0


def test_a_bad_request_is_not_retried(serve, fast_retry) -> None:
    server = serve(ScriptedLM(root=[Reply(status=400, error_body="malformed request")]))

    result = RLM("openai/x", base_url=server.url, retry=fast_retry).run("q", "ctx")

    assert result.status == "error"
    assert "malformed request" in (result.error or "")
    assert server.request_count == result.usage["llm_calls"] == 1


def test_retries_count_against_max_llm_calls(serve, fast_retry) -> None:
    server = serve(_model(), fail_first=2, fail_status=500)

    result = RLM("openai/x", base_url=server.url, retry=fast_retry, max_llm_calls=2).run("q", "ctx")

    assert result.status == "budget_exhausted"
    assert server.request_count == 2
    assert result.usage["llm_calls"] == 2


def test_unreachable_server_ends_with_error_naming_it_after_the_retries(fast_retry) -> None:
    port = closed_port()
    rlm = RLM("openai/x", base_url=f"http://127.0.0.1:{port}/v1", retry=fast_retry)

    result = rlm.run("q", "ctx")

    assert result.status == "error"
    assert f"127.0.0.1:{port}" in (result.error or "")
    assert result.usage["llm_calls"] == 1 + fast_retry.max_retries
    assert result.usage["input_tokens"] == result.usage["output_tokens"] == 0


def test_a_batch_item_that_keeps_failing_comes_back_as_an_error_string(serve) -> None:
    def sub(request: LMRequest) -> str | Reply:
        if request.last_user == "bad":
            return Reply(status=500, error_body="this one always fails")
        return "ok:" + request.last_user

    lm = ScriptedLM(root=[repl("FINAL(llm_query_batched(['a', 'bad', 'b']))")], sub=sub)
    server = serve(lm)
    policy = RetryPolicy(max_retries=1, base_delay=0.01, jitter=0.0)

    result = RLM("openai/x", base_url=server.url, retry=policy).run("q", "ctx")

    assert result.status == "ok", result.error
    first, failed, last = result.answer
    assert (first, last) == ("ok:a", "ok:b")
    assert failed.startswith("[error]")
    assert "always fails" in failed
    assert sum(1 for r in sub_requests(server) if r.last_user == "bad") == 2
    assert result.usage["llm_calls"] == server.request_count == 5


def test_a_failed_plain_sub_query_raises_llm_query_error_in_the_repl(serve) -> None:
    code = """
    try:
        outcome = llm_query('bad')
    except LLMQueryError as exc:
        outcome = 'caught: ' + str(exc)
    FINAL(outcome)
    """
    lm = ScriptedLM(
        root=[repl(code)], sub=lambda request: Reply(status=500, error_body="still down")
    )
    server = serve(lm)
    policy = RetryPolicy(max_retries=1, base_delay=0.01, jitter=0.0)

    result = RLM("openai/x", base_url=server.url, retry=policy).run("q", "ctx")

    assert isinstance(result.answer, str)
    assert result.answer.startswith("caught: ")
    assert "still down" in result.answer
