"""Bedrock's Converse API against the fake server speaking it: a Bedrock API key as a bearer
token, or AWS credentials signing each request with SigV4 (botocore, the bedrock extra);
region and keys from the documented variables; usage, cache counts, throttling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e_helpers import host_env, one_json_object, repl, run_cli
from extras import needs_extra
from recursa.errors import ConfigError, LMStatusError
from recursa.lm import PriceTable, parse_model, resolve_endpoint
from recursa.lm.bedrock import BedrockClient, parse_converse
from recursa.testing import ScriptedLM, count_message_tokens, count_tokens

MODEL_ID = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
MSGS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "Q2"},
]
AWS = {
    "AWS_REGION": "us-west-2",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_EC2_METADATA_DISABLED": "true",
}


async def test_converse_request_and_answer_with_an_api_key(serve) -> None:
    server = serve(ScriptedLM(root=["short"]))
    async with BedrockClient(server.base, "bedrock-key", region="us-east-1") as client:
        out = await client.complete(MSGS, model=MODEL_ID, max_tokens=99)
    [req] = server.requests
    assert req.wire == "bedrock" and req.model == MODEL_ID  # the id's ':' survives the path
    assert req.headers["authorization"] == "Bearer bedrock-key"
    assert req.body["system"][0] == {"text": "Be brief."}
    assert [m["role"] for m in req.body["messages"]] == ["user", "assistant", "user"]
    assert req.body["messages"][0]["content"][0] == {"text": "Q1"}
    assert req.body["inferenceConfig"] == {"maxTokens": 99}
    assert (out.text, out.finish_reason) == ("short", "end_turn")
    assert out.input_tokens == count_message_tokens(MSGS)
    assert out.output_tokens == count_tokens("short")


async def test_throttling_is_retryable_and_one_line(serve) -> None:
    server = serve(ScriptedLM(root=["ok"]), fail_first=1, fail_status=429)
    async with BedrockClient(server.base, "k", region="us-east-1") as client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model=MODEL_ID)
        assert (await client.complete(MSGS, model=MODEL_ID)).text == "ok"
    assert info.value.status == 429 and info.value.retryable
    assert "\n" not in str(info.value) and "injected failure" in str(info.value)


def test_cache_counts_are_read_back_and_claude_on_bedrock_is_priced() -> None:
    body = {
        "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
        "stopReason": "end_turn",
        "usage": {
            "inputTokens": 10,
            "outputTokens": 3,
            "cacheReadInputTokens": 2000,
            "cacheWriteInputTokens": 500,
        },
    }
    out = parse_converse(body, MODEL_ID)
    assert (out.input_tokens, out.cache_read_tokens, out.cache_write_tokens) == (2510, 2000, 500)
    table = PriceTable.default()
    assert table.lookup(f"bedrock/{MODEL_ID}") == table.lookup("anthropic/claude-sonnet-4-5")
    assert table.lookup("bedrock/meta.llama3-70b-instruct-v1:0") is None


def test_missing_region_or_credentials_is_one_line() -> None:
    spec = parse_model(f"bedrock/{MODEL_ID}")
    with pytest.raises(ConfigError, match=r"^AWS_REGION is not set"):
        resolve_endpoint(spec, env={"AWS_BEARER_TOKEN_BEDROCK": "k"})
    ep = resolve_endpoint(spec, env={"AWS_REGION": "eu-west-1", "AWS_BEARER_TOKEN_BEDROCK": "k"})
    assert ep.base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com"
    assert (ep.api_key, ep.region, ep.credentials) == ("k", "eu-west-1", None)


@needs_extra("bedrock", "botocore")
async def test_sigv4_signed_requests_from_aws_credentials(serve) -> None:
    server = serve(ScriptedLM(root=["signed"]))
    env = {**AWS, "AWS_SESSION_TOKEN": "session-tok"}
    endpoint = resolve_endpoint(parse_model(f"bedrock/{MODEL_ID}"), server.base, env)
    assert endpoint.api_key is None and endpoint.credentials is not None
    async with BedrockClient(
        server.base, None, region="us-west-2", credentials=endpoint.credentials
    ) as client:
        out = await client.complete(MSGS, model=MODEL_ID)
    assert out.text == "signed"
    headers = server.requests[0].headers
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-west-2/bedrock/aws4_request" in auth and "host" in auth
    assert headers["x-amz-security-token"] == "session-tok" and headers["x-amz-date"]
    assert "wJalrXUtnFEMI" not in str(headers)


@needs_extra("bedrock", "botocore")
def test_cli_runs_bedrock_with_aws_credentials(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(root=[repl("print(len(context))"), "FINAL(done)"]))
    (tmp_path / "c.txt").write_text("hello")
    env = host_env(**AWS, AWS_ENDPOINT_URL_BEDROCK_RUNTIME=server.base)
    done = run_cli(
        ["run", "q?", "--context", str(tmp_path / "c.txt"), "--model", f"bedrock/{MODEL_ID}",
         "--json", "--quiet"],
        env=env,
    )  # fmt: skip
    assert done.rc == 0, done.err
    out = one_json_object(done.out)
    assert out["answer"] == "done" and out["usage"]["cost_usd"] > 0
    assert all(r.headers["authorization"].startswith("AWS4-HMAC-SHA256") for r in server.requests)
    missing = run_cli(
        ["run", "q?", "--context", str(tmp_path / "c.txt"), "--model", f"bedrock/{MODEL_ID}"],
        env=host_env(AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                     AWS_CONFIG_FILE=str(tmp_path / "none"),
                     AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none")),
    )  # fmt: skip
    assert missing.rc == 2 and len(missing.err_lines) == 1, missing.err
    assert "AWS_ACCESS_KEY_ID" in missing.err


async def test_a_claude_conversation_carries_cache_points(serve) -> None:
    server = serve(ScriptedLM(root=["a"], sub=lambda req: "b"))
    point = {"cachePoint": {"type": "default"}}
    async with BedrockClient(server.base, "k", region="us-east-1") as client:
        await client.complete(MSGS, model=MODEL_ID)
        await client.complete([{"role": "user", "content": "one-off"}], model=MODEL_ID)
        await client.complete(MSGS, model="meta.llama3-70b-instruct-v1:0")
    claude, one_off, llama = (r.body for r in server.requests)
    assert claude["system"] == [{"text": "Be brief."}, point]
    assert [m["content"][1:] for m in claude["messages"]] == [[point], [], [point]]
    assert one_off["messages"] == [{"role": "user", "content": [{"text": "one-off"}]}]
    assert "cachePoint" not in str(llama)  # only Claude models are marked


def test_cli_bedrock_run_with_an_api_key_reads_the_cache_from_the_second_turn(
    serve, tmp_path: Path
) -> None:
    from test_prompt_caching_e2e import QUESTION, ROOT

    server = serve(ScriptedLM(root=ROOT))
    (tmp_path / "log.txt").write_text("".join(f"line {i} of the service log\n" for i in range(900)))
    trace = tmp_path / "trace.jsonl"
    env = host_env(
        AWS_REGION="us-east-1",
        AWS_BEARER_TOKEN_BEDROCK="br-key",
        AWS_ENDPOINT_URL_BEDROCK_RUNTIME=server.base,
    )
    done = run_cli(
        ["run", QUESTION, "--context", str(tmp_path / "log.txt"), "--model", f"bedrock/{MODEL_ID}",
         "--trace", str(trace), "--json", "--quiet"],
        env=env,
    )  # fmt: skip
    assert done.rc == 0, done.err
    calls = [
        e for e in map(json.loads, trace.read_text().splitlines()) if e["type"] == "lm_call_end"
    ]
    assert calls[0]["cache_read_tokens"] == 0 and calls[0]["cache_write_tokens"] > 0
    assert all(c["cache_read_tokens"] > 0 for c in calls[1:])
    usage = one_json_object(done.out)["usage"]
    assert usage["by_model"][f"bedrock/{MODEL_ID}"]["cache_read_tokens"] > 0
    assert {r.headers["authorization"] for r in server.requests} == {"Bearer br-key"}
