"""`litellm/PROVIDER/MODEL` through the LiteLLM library, against the fake server on the
OpenAI wire (LiteLLM's `openai/` route): request, usage, one attempt per call with the
rate limit's wait handed to the gateway, and `recursa run` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_helpers import host_env, one_json_object, repl, run_cli
from extras import needs_extra
from recursa.errors import LMStatusError
from recursa.lm import PriceTable
from recursa.testing import ScriptedLM, count_message_tokens, count_tokens

pytestmark = needs_extra("litellm", "litellm")

MSGS = [{"role": "system", "content": "Hi."}, {"role": "user", "content": "Q"}]


async def test_a_request_through_litellm_reaches_the_server_as_sent(serve) -> None:
    from recursa.lm.litellm_client import LiteLLMClient

    server = serve(ScriptedLM(root=["via litellm"]))
    client = LiteLLMClient(server.url, "sk-lite")
    out = await client.complete(MSGS, model="openai/scripted", max_tokens=77)
    [req] = server.requests
    assert req.model == "scripted" and req.max_tokens == 77
    assert req.headers["authorization"] == "Bearer sk-lite"
    assert req.messages == MSGS
    assert out.text == "via litellm"
    assert (out.input_tokens, out.output_tokens) == (
        count_message_tokens(MSGS),
        count_tokens("via litellm"),
    )


async def test_one_attempt_per_call_and_the_wait_goes_to_the_gateway(serve) -> None:
    from recursa.lm.litellm_client import LiteLLMClient

    server = serve(ScriptedLM(root=["ok"]), fail_first=1, fail_status=429, retry_after=4)
    client = LiteLLMClient(server.url, "k")
    with pytest.raises(LMStatusError) as info:
        await client.complete(MSGS, model="openai/scripted")
    assert server.request_count == 1  # LiteLLM did not retry on its own
    assert info.value.status == 429 and info.value.retryable
    assert info.value.retry_after == 4.0
    assert "\n" not in str(info.value)


def test_cli_runs_a_litellm_model(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(root=[repl("print(len(context))"), "FINAL(done)"]))
    (tmp_path / "c.txt").write_text("hello")
    env = host_env(LITELLM_API_BASE=server.url, LITELLM_API_KEY="sk-env")
    done = run_cli(
        ["run", "q?", "--context", str(tmp_path / "c.txt"), "--model", "litellm/openai/gpt-4o",
         "--json", "--quiet"],
        env=env,
    )  # fmt: skip
    assert done.rc == 0, done.err
    out = one_json_object(done.out)
    assert out["answer"] == "done"
    assert {r.headers["authorization"] for r in server.requests} == {"Bearer sk-env"}
    price = PriceTable.default().lookup("openai/gpt-4o")
    assert PriceTable.default().lookup("litellm/openai/gpt-4o") == price
    assert out["usage"]["cost_usd"] > 0
