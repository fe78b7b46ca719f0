"""A key goes only to its own provider: `--base-url` belongs to one provider, and model
code naming another provider's model never sends that provider's key to it (issue 15).

Two real fake servers stand for the two providers; what each received is checked."""

from __future__ import annotations

import httpx
import pytest

from e2e_helpers import host_env, one_json_object, repl, run_cli
from extras import needs_extra
from recursa.core.gateway import ClientPool
from recursa.errors import ConfigError
from recursa.testing import FakeLMServer, LMRequest
from serve_helpers import TOKEN, recursa_serve

OPENAI_KEY = "sk-openai-SECRET-1111"
ANTHROPIC_KEY = "sk-ant-SECRET-2222"

ASK_ANTHROPIC = repl(
    """
    answer = llm_query('which provider?', model='anthropic/claude-x')
    FINAL(answer)
    """
)


def _root(request: LMRequest) -> str:
    return ASK_ANTHROPIC if request.is_root else "the openai server"


def _secrets_in(server: FakeLMServer) -> str:
    return " ".join(" ".join(r.headers.values()) for r in server.requests)


def _env(anthropic: FakeLMServer) -> dict[str, str]:
    return host_env(
        OPENAI_API_KEY=OPENAI_KEY,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        ANTHROPIC_BASE_URL=anthropic.base,
    )


def test_model_code_asking_another_provider_never_sends_its_key_to_the_base_url(
    serve,
) -> None:
    openai_side = serve(_root)
    anthropic_side = serve(lambda request: "the anthropic server")

    run = run_cli(
        ["run", "which?", "--model", "openai/root", "--base-url", openai_side.url, "--json"],
        env=_env(anthropic_side),
    )

    assert run.rc == 0, run.err
    data = one_json_object(run.out)
    assert data["answer"] == "the anthropic server"
    assert [r.wire for r in anthropic_side.requests] == ["anthropic"]
    assert ANTHROPIC_KEY not in _secrets_in(openai_side)
    assert "x-api-key" not in {h for r in openai_side.requests for h in r.headers}
    assert OPENAI_KEY not in _secrets_in(anthropic_side)
    assert anthropic_side.requests[0].headers["x-api-key"] == ANTHROPIC_KEY
    assert data["usage"]["llm_calls"] == openai_side.request_count + 1


def test_a_sub_model_of_another_provider_does_not_follow_the_base_url(serve) -> None:
    openai_side = serve(
        lambda r: repl("FINAL(llm_query('hi'))") if r.is_root else "the openai server"
    )
    anthropic_side = serve(lambda request: "the anthropic server")

    run = run_cli(
        [
            "run",
            "which?",
            "--model",
            "openai/root",
            "--sub-model",
            "anthropic/claude-x",
            "--base-url",
            openai_side.url,
            "--json",
        ],
        env=_env(anthropic_side),
    )

    assert run.rc == 0, run.err
    assert one_json_object(run.out)["answer"] == "the anthropic server"
    assert ANTHROPIC_KEY not in _secrets_in(openai_side)
    assert anthropic_side.request_count == 1


def test_serve_sends_a_request_for_another_provider_to_that_provider(serve, tmp_path) -> None:
    openai_side = serve(lambda r: "FINAL(the openai server)")
    anthropic_side = serve(lambda r: "FINAL(the anthropic server)")
    env = {**_env(anthropic_side), "RECURSA_SERVER_TOKEN": TOKEN}
    args = ["--model", "openai/a", "--model", "anthropic/b", "--base-url", openai_side.url]

    with recursa_serve(args, env=env, workdir=tmp_path) as served:
        reply = httpx.post(
            served.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {TOKEN}"},
            json={
                "model": "recursa/anthropic/b",
                "messages": [{"role": "user", "content": "which?"}],
            },
            timeout=60,
        )

    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "the anthropic server"
    assert openai_side.request_count == 0
    assert anthropic_side.requests[0].headers["x-api-key"] == ANTHROPIC_KEY


def test_a_pool_keeps_the_base_url_to_its_own_provider() -> None:
    env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OPENAI_API_KEY": OPENAI_KEY}
    pool = ClientPool(base_url="http://127.0.0.1:9/v1", base_url_for="openai/a", env=env)

    openai_client, _ = pool.get("openai/a")
    anthropic_client, _ = pool.get("anthropic/b")

    assert openai_client.base_url == "http://127.0.0.1:9/v1"
    assert anthropic_client.base_url == "https://api.anthropic.com"
    with pytest.raises(ConfigError, match="base_url_for"):
        ClientPool(base_url="http://127.0.0.1:9/v1")


@needs_extra("server", "fastapi", "uvicorn")  # the extra is checked before the options
def test_serve_refuses_a_base_url_that_belongs_to_no_model() -> None:
    run = run_cli(["serve", "--port", "0", "--base-url", "http://127.0.0.1:9/v1"])

    assert run.rc == 2
    assert run.err_lines == [
        "recursa: error: --base-url needs --model: it belongs to that model's provider"
    ]
