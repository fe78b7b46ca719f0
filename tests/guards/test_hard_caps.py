"""Token and cost caps are hard limits (issue 15): a provider that ignores the max_tokens a
request carries, or reports usage that cannot be read, ends the run with
`budget_exhausted` and a line that says so; never `ok` past the cap. A reply with no usage
at all is charged at the bound reserved for it.

Real CLI subprocesses against the fake server (or a raw socket server for bodies the fake
server cannot produce) and real sandbox workers."""

from __future__ import annotations

import json

import pytest

from e2e_helpers import one_json_object, repl, run_cli
from hostile_server import HostileServer, openai_answer, raw
from recursa.testing import LMRequest, Reply

MODEL = "openai/x"
CAP = 20_000

ASK_ONCE = repl("FINAL(llm_query('how many?'))")
ASK_AND_CATCH = repl(
    """
    try:
        answer = llm_query('how many?')
    except Exception as exc:
        answer = f'caught: {exc}'
    FINAL(answer)
    """
)


def _run(url: str, *flags: str):
    run = run_cli(["run", "q", "--model", MODEL, "--base-url", url, "--json", *flags])
    assert "Traceback" not in run.err
    return run, one_json_object(run.out) if run.out.strip() else {}


@pytest.mark.parametrize("code", [ASK_ONCE, ASK_AND_CATCH], ids=["raised", "caught"])
def test_a_server_that_ignores_max_tokens_ends_the_run_budget_exhausted(serve, code) -> None:
    def model(request: LMRequest) -> str | Reply:
        if request.is_root:
            return code
        return Reply("42", output_tokens=CAP * 10)  # whatever max_tokens said

    server = serve(model)

    run, data = _run(server.url, "--max-tokens", str(CAP))

    assert run.rc == 3, run.err
    assert data["status"] == "budget_exhausted"
    assert "ignored max_tokens" in run.err
    assert all(r.max_tokens is not None and r.max_tokens <= CAP for r in server.requests)
    assert data["usage"]["output_tokens"] >= CAP * 10  # what the server reported, shown
    assert len(server.requests) <= 3  # no request is sent after the breach but the reply's


ABSURD = {
    "negative": -5,
    "NaN": float("nan"),
    "1e308": 1e308,
    "a string": "12",
}


@pytest.mark.parametrize("case", list(ABSURD))
def test_absurd_usage_under_a_token_cap_ends_the_run(case: str) -> None:
    body = json.dumps(openai_answer("FINAL(42)", prompt_tokens=10, completion_tokens=ABSURD[case]))
    with HostileServer([raw(body.encode())]) as server:
        run, data = _run(server.url, "--max-tokens", str(CAP))

    assert run.rc == 3, run.err
    assert data["status"] == "budget_exhausted"
    assert "usage cannot be trusted (usage.completion_tokens is" in run.err
    # Charged at what was reserved for it, never as free.
    assert 0 < data["usage"]["input_tokens"] + data["usage"]["output_tokens"] <= CAP


def test_missing_usage_under_a_token_cap_is_charged_at_its_bound_and_the_run_goes_on() -> None:
    # Some local servers send no `usage` at all: the request is charged what was reserved
    # for it (its UTF-8 bound and the max_tokens it carried), so the cap still holds.
    body = json.dumps({"choices": [{"message": {"content": "FINAL(42)"}}]})
    with HostileServer([raw(body.encode())]) as server:
        run, data = _run(server.url, "--max-tokens", str(CAP))

    assert run.rc == 0, run.err
    assert data["status"] == "ok"
    charged = data["usage"]["input_tokens"] + data["usage"]["output_tokens"]
    assert 0 < charged <= CAP  # never free, never past the cap
    assert data["usage"]["output_tokens"] > 0  # the max_tokens the request carried


def test_a_usage_that_is_not_an_object_under_a_token_cap_ends_the_run() -> None:
    body = json.dumps({"choices": [{"message": {"content": "FINAL(42)"}}], "usage": "lots"})
    with HostileServer([raw(body.encode())]) as server:
        run, data = _run(server.url, "--max-tokens", str(CAP))

    assert run.rc == 3, run.err
    assert data["status"] == "budget_exhausted"
    assert "usage is 'lots'" in run.err


def test_absurd_usage_without_a_cap_still_completes() -> None:
    body = json.dumps(openai_answer("FINAL(42)", prompt_tokens=10, completion_tokens=1e308))
    with HostileServer([raw(body.encode())]) as server:
        run, data = _run(server.url)

    assert run.rc == 0, run.err
    assert data["status"] == "ok"
    assert data["usage"]["output_tokens"] == 0


@pytest.mark.parametrize("cost", [50.0, 1e308])
def test_a_provider_reported_cost_past_the_cap_ends_the_run(serve, cost: float) -> None:
    def model(request: LMRequest) -> str | Reply:
        if request.is_root:
            return ASK_AND_CATCH
        return Reply("42", cost_usd=cost)

    server = serve(model)

    run, data = _run(server.url, "--max-cost", "1", "--price", f"{MODEL}=1,1")

    assert run.rc == 3, run.err
    assert data["status"] == "budget_exhausted"
    assert "max_cost" in run.err
