"""The Gemini and Azure OpenAI clients against the fake server speaking each wire format:
request shape, keys from the documented variables, usage and cached tokens, rate limits with
their waits, and one clear line for a missing key or endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_helpers import host_env, one_json_object, repl, run_cli
from recursa.errors import ConfigError, LMResponseError, LMStatusError
from recursa.lm import PriceTable, parse_model, resolve_endpoint
from recursa.lm.azure import AzureOpenAIClient
from recursa.lm.gemini import GeminiClient, parse_gemini_response
from recursa.testing import ScriptedLM, count_message_tokens, count_tokens

MSGS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "Q2"},
]
ROOT = [repl("print(len(context))"), "FINAL(done)"]


# -- Gemini ------------------------------------------------------------------------------


async def test_gemini_request_and_usage_as_documented(serve) -> None:
    server = serve(ScriptedLM(root=["the answer"]))
    async with GeminiClient(server.base, "g-key") as client:
        out = await client.complete(MSGS, model="gemini-2.5-flash", max_tokens=50, temperature=0)
    [req] = server.requests
    assert req.wire == "gemini" and req.model == "gemini-2.5-flash"
    assert req.headers["x-goog-api-key"] == "g-key" and "authorization" not in req.headers
    assert req.body["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    assert [c["role"] for c in req.body["contents"]] == ["user", "model", "user"]
    assert req.body["generationConfig"] == {"maxOutputTokens": 50, "temperature": 0}
    assert out.text == "the answer"
    assert out.input_tokens == count_message_tokens(MSGS)
    assert out.output_tokens == count_tokens("the answer")
    assert out.finish_reason == "STOP" and out.usage_problem is None


async def test_gemini_rate_limit_wait_is_read_from_retry_info(serve) -> None:
    server = serve(ScriptedLM(root=["ok"]), fail_first=1, fail_status=429, retry_after=7)
    async with GeminiClient(server.base, "k") as client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model="gemini-2.5-pro")
        assert (await client.complete(MSGS, model="gemini-2.5-pro")).text == "ok"
    assert info.value.status == 429 and info.value.retryable
    assert info.value.retry_after == 7.0
    assert "\n" not in str(info.value) and "RESOURCE_EXHAUSTED" not in str(info.value)
    assert "retry after 7s" in str(info.value)


def test_gemini_thinking_cache_and_blocked_prompts() -> None:
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "plan...", "thought": True}, {"text": "42"}],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 5000,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 300,
            "cachedContentTokenCount": 4096,
        },
        "modelVersion": "gemini-2.5-flash-001",
    }
    out = parse_gemini_response(body, "gemini-2.5-flash")
    assert out.text == "42"  # thoughts are not the answer
    assert (out.input_tokens, out.output_tokens, out.cache_read_tokens) == (5000, 302, 4096)
    assert out.model == "gemini-2.5-flash-001"
    with pytest.raises(LMResponseError, match="blocked \\(SAFETY\\)"):
        parse_gemini_response({"promptFeedback": {"blockReason": "SAFETY"}}, "m")
    # Thinking is output: priced at the output rate, with the cached input at its own.
    cost = PriceTable.default().cost("gemini/gemini-2.5-flash", 5000, 302, 4096)
    assert cost == pytest.approx((904 * 0.3 + 4096 * 0.03 + 302 * 2.5) / 1e6)


def test_cli_runs_gemini_with_the_documented_key(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(root=ROOT))
    (tmp_path / "c.txt").write_text("hello")
    env = host_env(GEMINI_API_KEY="gk-123", GEMINI_BASE_URL=server.base)
    done = run_cli(
        ["run", "q?", "--context", str(tmp_path / "c.txt"), "--model", "gemini/gemini-2.5-flash",
         "--json", "--quiet"],
        env=env,
    )  # fmt: skip
    assert done.rc == 0, done.err
    out = one_json_object(done.out)
    assert out["answer"] == "done" and out["usage"]["llm_calls"] == 2
    assert out["usage"]["cost_usd"] > 0  # priced from the shipped table
    assert {r.headers["x-goog-api-key"] for r in server.requests} == {"gk-123"}


# -- Azure OpenAI ------------------------------------------------------------------------


async def test_azure_request_as_documented(serve) -> None:
    server = serve(ScriptedLM(root=["hi"]))
    async with AzureOpenAIClient(server.base, "az-key", api_version="2024-10-21") as client:
        out = await client.complete(MSGS, model="my-gpt4o", max_tokens=64)
    [req] = server.requests
    assert req.wire == "azure" and req.model == "my-gpt4o"
    assert req.headers["api-key"] == "az-key" and "authorization" not in req.headers
    assert req.body["max_completion_tokens"] == 64 and "model" not in req.body
    assert out.text == "hi" and out.input_tokens == count_message_tokens(MSGS)


async def test_azure_bearer_token_and_rate_limit(serve) -> None:
    server = serve(ScriptedLM(root=["ok"]), fail_first=1, fail_status=429, retry_after=2.5)
    async with AzureOpenAIClient(server.base + "/", "entra", bearer=True) as client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model="dep")
    assert info.value.retry_after == 2.5 and info.value.retryable
    assert server.requests[0].headers["authorization"] == "Bearer entra"
    assert "api-key" not in server.requests[0].headers


def test_azure_endpoint_from_the_documented_variables() -> None:
    spec = parse_model("azure/my-gpt4o")
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/",
        "AZURE_OPENAI_API_KEY": "k",
        "OPENAI_API_VERSION": "2025-01-01-preview",
    }
    ep = resolve_endpoint(spec, env=env)
    assert (ep.base_url, ep.api_key, ep.bearer) == ("https://res.openai.azure.com", "k", False)
    assert ep.api_version == "2025-01-01-preview"
    token = resolve_endpoint(
        spec, env={**env, "AZURE_OPENAI_API_KEY": "", "AZURE_OPENAI_AD_TOKEN": "t"}
    )
    assert (token.api_key, token.bearer) == ("t", True)
    with pytest.raises(ConfigError, match=r"^AZURE_OPENAI_ENDPOINT is not set"):
        resolve_endpoint(spec, env={"AZURE_OPENAI_API_KEY": "k"})
    with pytest.raises(
        ConfigError, match=r"^AZURE_OPENAI_API_KEY is not set.*AZURE_OPENAI_AD_TOKEN"
    ):
        resolve_endpoint(spec, env={"AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com"})
    assert PriceTable.default().lookup("azure/gpt-4o") == PriceTable.default().lookup(
        "openai/gpt-4o"
    )


def test_cli_runs_azure_with_the_documented_variables(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(root=ROOT))
    (tmp_path / "c.txt").write_text("hello")
    env = host_env(AZURE_OPENAI_ENDPOINT=server.base, AZURE_OPENAI_API_KEY="az-1")
    args = ["run", "q?", "--context", str(tmp_path / "c.txt"), "--model", "azure/gpt-4o", "--json"]
    done = run_cli([*args, "--quiet"], env=env)
    assert done.rc == 0, done.err
    assert one_json_object(done.out)["answer"] == "done"
    assert {r.headers["api-key"] for r in server.requests} == {"az-1"}


@pytest.mark.parametrize(
    ("model", "env", "variable"),
    [
        ("gemini/gemini-2.5-flash", {}, "GEMINI_API_KEY"),
        ("azure/gpt-4o", {"AZURE_OPENAI_API_KEY": "k"}, "AZURE_OPENAI_ENDPOINT"),
        ("azure/gpt-4o", {"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9"}, "AZURE_OPENAI_API_KEY"),
    ],
)
def test_cli_missing_key_or_endpoint_is_one_line(
    tmp_path: Path, model: str, env: dict[str, str], variable: str
) -> None:
    (tmp_path / "c.txt").write_text("hello")
    done = run_cli(["run", "q?", "--context", str(tmp_path / "c.txt"), "--model", model],
                   env=host_env(**env))  # fmt: skip
    assert done.rc == 2
    assert len(done.err_lines) == 1 and variable in done.err_lines[0], done.err
    assert "Traceback" not in done.err
