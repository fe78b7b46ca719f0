"""The OpenAI Responses API: chosen for the models only it serves, spoken as documented to
the fake server, with reasoning and cached tokens counted and priced."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_helpers import host_env, one_json_object, repl, run_cli
from recursa.errors import LMResponseError
from recursa.lm import PriceTable, parse_model, resolve_endpoint
from recursa.lm.openai_compat import parse_openai_completion
from recursa.lm.responses import ResponsesClient, parse_response
from recursa.testing import ScriptedLM, count_message_tokens, count_tokens

MSGS = [
    {"role": "system", "content": "Be exact."},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "Q2"},
]


@pytest.mark.parametrize(
    ("model", "wire"),
    [
        ("openai/o3-pro", "responses"),
        ("openai/o3-pro-2025-06-10", "responses"),
        ("openai/gpt-5-codex", "responses"),
        ("openai/o3", "openai"),
        ("openai/gpt-5", "openai"),
        ("openrouter/openai/o3-pro", "openai"),
    ],
)
def test_models_only_the_responses_api_serves_go_there(model: str, wire: str) -> None:
    env = {"OPENAI_API_KEY": "k", "OPENROUTER_API_KEY": "k"}
    endpoint = resolve_endpoint(parse_model(model), env=env)
    assert endpoint.wire == wire


async def test_responses_request_and_answer_as_documented(serve) -> None:
    server = serve(ScriptedLM(root=["forty-two"]))
    async with ResponsesClient(server.url, "sk-1") as client:
        out = await client.complete(MSGS, model="o3-pro", max_tokens=300)
    [req] = server.requests
    assert req.wire == "responses" and req.headers["authorization"] == "Bearer sk-1"
    assert req.body["instructions"] == "Be exact."
    assert [i["role"] for i in req.body["input"]] == ["user", "assistant", "user"]
    assert req.body["max_output_tokens"] == 300 and req.body["store"] is False
    assert "temperature" not in req.body  # reasoning models refuse it
    assert out.text == "forty-two" and out.finish_reason == "stop"
    assert out.input_tokens == count_message_tokens(MSGS)
    assert out.output_tokens == count_tokens("forty-two")


def test_reasoning_and_cached_tokens_are_counted_and_priced() -> None:
    body = {
        "object": "response",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "model": "o3-pro-2025-06-10",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "partial"}]},
        ],
        "usage": {
            "input_tokens": 1000, "input_tokens_details": {"cached_tokens": 512},
            "output_tokens": 800, "output_tokens_details": {"reasoning_tokens": 790},
        },
    }  # fmt: skip
    out = parse_response(body, "o3-pro")
    assert (out.text, out.finish_reason) == ("partial", "length")
    assert (out.input_tokens, out.cache_read_tokens) == (1000, 512)
    assert (out.output_tokens, out.reasoning_tokens) == (800, 790)
    # Reasoning is billed as output: all 800 at o3-pro's output rate.
    cost = PriceTable.default().cost("openai/o3-pro", 1000, 800, 512)
    assert cost == pytest.approx((1000 * 20 + 800 * 80) / 1e6)
    with pytest.raises(LMResponseError, match="the response failed: boom"):
        parse_response({"status": "failed", "error": {"message": "boom"}}, "m")
    chat = parse_openai_completion(
        {
            "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 50,
                      "completion_tokens_details": {"reasoning_tokens": 45}},
        },
        "o3",
    )  # fmt: skip
    assert (chat.output_tokens, chat.reasoning_tokens) == (50, 45)


def test_cli_runs_a_responses_only_model(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(root=[repl("print(len(context))"), "FINAL(ok)"]))
    (tmp_path / "c.txt").write_text("hello")
    done = run_cli(
        ["run", "q?", "--context", str(tmp_path / "c.txt"), "--model", "openai/o3-pro",
         "--base-url", server.url, "--json", "--quiet"],
        env=host_env(OPENAI_API_KEY="sk-9"),
    )  # fmt: skip
    assert done.rc == 0, done.err
    out = one_json_object(done.out)
    assert out["answer"] == "ok"
    assert {r.wire for r in server.requests} == {"responses"}
    mine = out["usage"]["by_model"]["openai/o3-pro"]
    assert mine["llm_calls"] == 2 and mine["reasoning_tokens"] == 0
    assert out["usage"]["cost_usd"] == pytest.approx(
        (out["usage"]["input_tokens"] * 20 + out["usage"]["output_tokens"] * 80) / 1e6
    )
