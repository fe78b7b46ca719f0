"""`recursa serve` at its edges (issue 15): a deeply nested body, what a `subprocess` sandbox
cannot hold back, and where the server's token can be read from. A real server process,
real workers, the fake LM server."""

from __future__ import annotations

import httpx
import pytest

from e2e_helpers import host_env, repl
from recursa.testing import FakeLMServer
from serve_helpers import TOKEN, recursa_serve

# Looks for the token (written reversed, so that this code does not carry it) in every
# command line and environment that the worker can read.
FIND_TOKEN = repl(
    f"""
    import os
    token = {TOKEN[::-1]!r}[::-1].encode()
    seen = set()
    for pid in filter(str.isdigit, os.listdir('/proc')):
        for name in ('cmdline', 'environ'):
            try:
                with open(f'/proc/{{pid}}/{{name}}', 'rb') as fh:
                    if token in fh.read():
                        seen.add(name)
            except OSError:
                pass
    FINAL(','.join(sorted(seen)) or 'nowhere')
    """
)


def _ask(url: str) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {TOKEN}"},
        json={"model": "recursa/openai/x", "messages": [{"role": "user", "content": "find"}]},
        timeout=60,
    )


def _common(fake: FakeLMServer) -> list[str]:
    return ["--model", "openai/x", "--base-url", fake.url]


def test_a_deeply_nested_body_gets_a_400_in_openai_shape(serve, tmp_path) -> None:
    fake = serve(lambda r: "FINAL(x)")
    env = host_env(RECURSA_SERVER_TOKEN=TOKEN)

    with recursa_serve(_common(fake), env=env, workdir=tmp_path) as served:
        reply = httpx.post(
            served.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
            content=b"[" * 100_000,
            timeout=60,
        )
        alive = httpx.get(
            served.url + "/v1/models", headers={"authorization": f"Bearer {TOKEN}"}, timeout=60
        )

    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "nested too deeply" in error["message"]
    assert alive.status_code == 200
    assert fake.request_count == 0


def test_serve_with_a_subprocess_sandbox_warns_that_allow_path_is_not_enforced(
    serve, tmp_path
) -> None:
    fake = serve(lambda r: "FINAL(x)")
    args = [*_common(fake), "--sandbox", "subprocess", "--allow-path", str(tmp_path)]

    with recursa_serve(args, env=host_env(), workdir=tmp_path) as served:
        warned = served.stderr

    assert "--sandbox subprocess cannot enforce --allow-path" in warned


@pytest.mark.parametrize("given", ["environment", "command line"])
def test_where_model_code_can_read_the_server_token(serve, tmp_path, given: str) -> None:
    fake = serve(lambda r: FIND_TOKEN)
    args = [*_common(fake), "--sandbox", "subprocess"]
    env = host_env()
    if given == "environment":
        env["RECURSA_SERVER_TOKEN"] = TOKEN
    else:
        args += ["--token", TOKEN]

    with recursa_serve(args, env=env, workdir=tmp_path) as served:
        reply = _ask(served.url)
        stderr = served.stderr

    assert reply.status_code == 200, reply.text
    found = reply.json()["choices"][0]["message"]["content"]
    if given == "environment":
        # The host is non-dumpable: its environment is out of the worker's reach.
        assert found == "nowhere"
        assert "--token on the command line" not in stderr
    else:
        # A command line is world-readable in /proc: the server says so at start.
        assert found == "cmdline"
        assert "--token on the command line can be read" in stderr
        assert "RECURSA_SERVER_TOKEN" in stderr


def test_serve_with_the_official_dialect_ends_a_run_on_the_answer_dict(serve, tmp_path) -> None:
    fake = serve(lambda r: repl("answer['content'] = 'from the dict'\nanswer['ready'] = True"))
    args = [*_common(fake), "--dialect", "official"]
    env = host_env(RECURSA_SERVER_TOKEN=TOKEN)

    with recursa_serve(args, env=env, workdir=tmp_path) as served:
        reply = _ask(served.url)

    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "from the dict"
    assert 'answer["ready"] = True' in fake.requests[0].messages[0]["content"]
