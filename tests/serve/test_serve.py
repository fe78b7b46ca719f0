"""`recursa serve` end to end: the real command in a subprocess on 127.0.0.1, the official
`openai` SDK and httpx as clients, a FakeLMServer behind it as the model.

Two servers are shared by the tests of this module: `main` (a token, a 4 MiB body limit,
an allowed directory, at most 3 LM calls per run) and `busy` (one run at a time).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e_helpers import RECURSA, host_env, run_cli
from extras import import_extra
from recursa.testing import FakeLMServer, ScriptedLM
from recursa.trace.store import RunStore
from serve_helpers import (
    SECRET,
    TOKEN,
    Scenarios,
    Served,
    kill_tagged,
    make_haystack,
    new_tag,
    recursa_serve,
    tagged,
    wait_for,
)

openai = import_extra("openai", "dev")

MODEL = "recursa/openai/scripted"
SERVER_MAX_LLM_CALLS = 3


@pytest.fixture(scope="module")
def haystack() -> str:
    return make_haystack()


@pytest.fixture(scope="module")
def scenarios() -> Iterator[Scenarios]:
    yield (scenarios := Scenarios())
    scenarios.release.set()


@pytest.fixture(scope="module")
def fake_lm(scenarios: Scenarios) -> Iterator[FakeLMServer]:
    with FakeLMServer(ScriptedLM(root=scenarios)) as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-home")


@pytest.fixture(scope="module")
def allowed(tmp_path_factory: pytest.TempPathFactory, haystack: str) -> Path:
    root = tmp_path_factory.mktemp("allowed")
    (root / "logs").mkdir()
    (root / "logs" / "haystack.log").write_text(haystack)
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("not for clients")
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    return root


def _serve(args: list[str], fake_lm: FakeLMServer, home: Path) -> Any:
    env = host_env(RECURSA_HOME=str(home))
    common = ["--base-url", fake_lm.url, "--model", "openai/scripted", "--sandbox", "auto"]
    return recursa_serve([*common, *args], env=env, workdir=home)


@pytest.fixture(scope="module")
def main(fake_lm: FakeLMServer, home: Path, allowed: Path) -> Iterator[Served]:
    args = ["--token", TOKEN, "--max-body", "4", "--allow-path", str(allowed)]
    args += ["--max-llm-calls", str(SERVER_MAX_LLM_CALLS), "--max-runs", "4"]
    with _serve(args, fake_lm, home) as served:
        yield served


@pytest.fixture(scope="module")
def busy(fake_lm: FakeLMServer, home: Path) -> Iterator[Served]:
    with _serve(["--max-runs", "1", "--cell-timeout", "600"], fake_lm, home) as served:
        yield served


def sdk(served: Served, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=TOKEN, max_retries=0, **options)


def http(served: Served, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=served.url, headers=headers, timeout=60)


def sent_to_model(fake_lm: FakeLMServer) -> str:
    return "\n".join(m["content"] for r in fake_lm.requests for m in r.messages)


# ---- the OpenAI-compatible API ---------------------------------------------------------------
def test_openai_sdk_gets_the_answer_over_a_2mb_haystack_sent_as_an_earlier_message(
    main: Served, fake_lm: FakeLMServer, haystack: str, home: Path
) -> None:
    client = sdk(main)
    response = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": haystack},
            {"role": "user", "content": "[haystack] What is the vault passphrase?"},
        ],
    )
    assert response.choices[0].message.content == SECRET
    assert response.choices[0].finish_reason == "stop"
    extra = response.model_extra["recursa"]
    assert extra["status"] == "ok" and extra["iterations"] == 2
    assert response.usage.prompt_tokens == extra["usage"]["input_tokens"] > 0
    # The haystack stayed in the REPL: the model saw its size and a preview, not the fact.
    assert SECRET not in sent_to_model(fake_lm)
    assert f"str {len(haystack)}" in sent_to_model(fake_lm)
    stored = RunStore(home / "runs.db").get(extra["run_id"])
    assert (stored.kind, stored.status, stored.answer) == ("serve", "ok", SECRET)


def test_openai_sdk_streams_progress_then_the_answer_over_a_2mb_haystack_context(
    main: Served, haystack: str
) -> None:
    stream = sdk(main).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "[haystack] What is the vault passphrase?"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"context": haystack},
    )
    kinds, content, finish, usage = [], [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta.model_extra or {}
            if delta.get("reasoning_content"):
                kinds.append("progress")
            if choice.delta.content:
                kinds.append("content")
                content.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(content) == SECRET
    assert finish == "stop"
    assert "progress" in kinds and kinds.index("progress") < kinds.index("content")
    assert kinds[-1] == "content"  # progress comes as it happens, before the answer
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_models_endpoint_lists_the_served_model_as_recursa_provider_model(main: Served) -> None:
    models = sdk(main).models.list()
    assert [m.id for m in models.data] == [MODEL]
    with pytest.raises(openai.NotFoundError):
        sdk(main).chat.completions.create(
            model="openai/scripted", messages=[{"role": "user", "content": "hi"}]
        )


def test_every_endpoint_refuses_a_request_without_the_right_token(main: Served) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=main.url + "/v1", api_key="wrong", max_retries=0).models.list()
    endpoints = [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/abc"),
        ("GET", "/v1/runs/abc/events"),
        ("GET", "/v1/runs/abc/trace"),
        ("DELETE", "/v1/runs/abc"),
        ("GET", "/no/such/page"),
    ]
    for token in (None, "wrong"):
        with http(main, token) as client:
            for method, path in endpoints:
                response = client.request(method, path, json={"question": "x"})
                assert response.status_code == 401, (method, path, token)
                assert response.headers["www-authenticate"] == "Bearer"


def test_a_body_declared_over_max_body_gets_413_before_any_of_it_is_sent(main: Served) -> None:
    host, port = main.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {5 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode())  # and not one byte of the body
        received = b""
        while chunk := sock.recv(65536):  # the server answers, then closes the connection
            received += chunk
    answer = received.decode()
    assert answer.startswith("HTTP/1.1 413 ")
    assert "--max-body" in answer


def test_openai_sdk_request_over_max_body_gets_413(main: Served) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(main).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x" * (5 * 1024 * 1024)}]
        )
    assert caught.value.status_code == 413


def test_a_chunked_body_over_max_body_gets_413(main: Served) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * (512 * 1024)  # 5 MiB in all, no Content-Length

    with http(main) as client:
        response = client.post("/v1/runs", content=chunks())
    assert response.status_code == 413


def test_request_limits_are_capped_by_the_server_maxima(main: Served) -> None:
    with http(main) as client:
        created = client.post(
            "/v1/runs",
            json={
                "question": "[forever] Look.",
                "context": "abc " * 100,
                "limits": {"max_llm_calls": 50},
            },
        )
        assert created.status_code == 202, created.text
        run = created.json()
        assert run["limits"]["max_llm_calls"] == SERVER_MAX_LLM_CALLS
        done = wait_for(
            lambda: (r := client.get(f"/v1/runs/{run['id']}").json())["status"] != "running" and r
        )
    assert done["status"] == "budget_exhausted"
    assert done["usage"]["llm_calls"] == SERVER_MAX_LLM_CALLS


# ---- the job API -----------------------------------------------------------------------------
def sse_events(client: httpx.Client, path: str) -> Iterator[dict[str, Any]]:
    with client.stream("GET", path) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[6:])


def test_job_api_answers_over_an_allowed_path_with_live_events_and_a_trace(
    main: Served, home: Path
) -> None:
    with http(main) as client:
        created = client.post(
            "/v1/runs",
            json={
                "question": "[haystack] What is the vault passphrase?",
                "model": MODEL,
                "context_path": "logs/haystack.log",
            },
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        assert created.headers["location"] == f"/v1/runs/{run_id}"
        types = [event["type"] for event in sse_events(client, f"/v1/runs/{run_id}/events")]
        assert "run_start" in types and types[-1] == "run_end"
        assert types.count("turn_end") == 2
        run = client.get(f"/v1/runs/{run_id}").json()
        assert (run["status"], run["answer"], run["iterations"]) == ("ok", SECRET, 2)
        assert run["usage"]["llm_calls"] == 2
        trace = client.get(f"/v1/runs/{run_id}/trace")
        lines = [json.loads(line) for line in trace.text.splitlines()]
        assert [e["type"] for e in lines] == types
        assert lines[-1]["usage"] == run["usage"]
        listed = client.get("/v1/runs").json()["data"]
        assert run_id in [r["id"] for r in listed]
        assert client.delete(f"/v1/runs/{run_id}").status_code == 409  # already over
        assert client.get("/v1/runs/nosuchrun").status_code == 404
    stored = RunStore(home / "runs.db")
    assert [e["type"] for e in stored.events(run_id)] == types


def test_context_paths_outside_the_allowed_directories_are_refused(
    main: Served, allowed: Path
) -> None:
    attempts = [
        "../../../../etc/passwd",
        "/etc/passwd",
        "logs/../../" + allowed.name + "-not/x",
        "escape.txt",  # a symlink inside that points outside
        str(allowed / "escape.txt"),
        "logs/no-such-file.log",
    ]
    with http(main) as client:
        for path in attempts:
            response = client.post("/v1/runs", json={"question": "q", "context_path": path})
            assert response.status_code == 403, (path, response.text)
            assert response.json()["error"]["code"] == "path_not_allowed"
            assert "not for clients" not in response.text
        with pytest.raises(openai.PermissionDeniedError):
            sdk(main).chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "q"}],
                extra_body={"context_path": "/etc/passwd"},
            )


# ---- the run limit and cancellation ----------------------------------------------------------
def test_a_run_over_the_run_limit_gets_429_with_retry_after(busy: Served) -> None:
    with http(busy, None) as client:
        blocking = client.post("/v1/runs", json={"question": "[block] Wait."})
        assert blocking.status_code == 202, blocking.text
        run_id = blocking.json()["id"]
        try:
            with pytest.raises(openai.RateLimitError) as caught:
                sdk(busy).chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "[haystack] q"}]
                )
            assert int(caught.value.response.headers["retry-after"]) > 0
            refused = client.post("/v1/runs", json={"question": "[haystack] q"})
            assert refused.status_code == 429 and "retry-after" in refused.headers
        finally:
            cancelled = client.delete(f"/v1/runs/{run_id}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        # The slot is free again.
        admitted = client.post("/v1/runs", json={"question": "[haystack] q", "context": "x"})
        assert admitted.status_code == 202
        wait_for(
            lambda: client.get(f"/v1/runs/{admitted.json()['id']}").json()["status"] != "running"
        )


def test_cancelling_a_run_through_the_api_ends_its_workers(busy: Served) -> None:
    tag = new_tag()
    try:
        with http(busy, None) as client:
            created = client.post(
                "/v1/runs", json={"question": f"[tag:{tag}] Work.", "context": "some text"}
            )
            assert created.status_code == 202, created.text
            run_id = created.json()["id"]
            for event in sse_events(client, f"/v1/runs/{run_id}/events"):
                if event["type"] == "block" and "marked" in event["output"]:
                    break
            # The worker and the helper it started are alive; the second block runs 300 s.
            assert len(wait_for(lambda: len(tagged(tag)) >= 2 and tagged(tag))) >= 2
            wait_for(lambda: client.get(f"/v1/runs/{run_id}").json()["usage"]["llm_calls"] >= 2)
            cancelled = client.delete(f"/v1/runs/{run_id}")
            assert cancelled.status_code == 200
            run = cancelled.json()
            assert run["status"] == "cancelled"
            assert run["usage"]["llm_calls"] >= 1  # the partial usage is still reported
            assert wait_for(lambda: not tagged(tag), within=15), f"left alive: {tagged(tag)}"
            assert client.get(f"/v1/runs/{run_id}").json()["status"] == "cancelled"
    finally:
        kill_tagged(tag)


def test_a_streaming_client_that_hangs_up_cancels_its_run(busy: Served) -> None:
    body = {
        "model": MODEL,
        "stream": True,
        "messages": [{"role": "user", "content": "[block] Wait for me."}],
    }
    with http(busy, None) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            run_id = response.headers["x-recursa-run-id"]
            next(response.iter_lines())  # the first chunk came; now hang up
        status = wait_for(
            lambda: (s := client.get(f"/v1/runs/{run_id}").json()["status"]) != "running" and s
        )
    assert status == "cancelled"


def test_a_client_that_hangs_up_before_the_answer_cancels_its_run(busy: Served) -> None:
    question = f"[block] Hang up on {new_tag()}."
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}]}
    with http(busy, None) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json=body, timeout=1.0)

        def status() -> str | None:
            runs = client.get("/v1/runs").json()["data"]
            found = [r["status"] for r in runs if r["question"] == question]
            return found[0] if found and found[0] != "running" else None

        assert wait_for(status) == "cancelled"


def test_stopping_the_server_cancels_its_runs_and_ends_their_workers(
    fake_lm: FakeLMServer, home: Path
) -> None:
    tag = new_tag()
    try:
        with _serve(["--cell-timeout", "600"], fake_lm, home) as served:
            with http(served, None) as client:
                created = client.post(
                    "/v1/runs", json={"question": f"[tag:{tag}] Work.", "context": "text"}
                )
                assert created.status_code == 202, created.text
                run_id = created.json()["id"]
                assert wait_for(lambda: len(tagged(tag)) >= 2)
            served.proc.send_signal(signal.SIGTERM)
            served.proc.wait(timeout=30)
            assert wait_for(lambda: not tagged(tag), within=15), f"left alive: {tagged(tag)}"
            assert f"run {run_id} cancelled" in served.stderr
        stored = RunStore(home / "runs.db").get(run_id)
        assert stored.status == "error" and stored.error == "the run was cancelled"
    finally:
        kill_tagged(tag)


# ---- starting the server ---------------------------------------------------------------------
def test_serve_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    result = run_cli(["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.rc == 2
    assert len(result.err_lines) == 1 and "token" in result.err
    assert "RECURSA_SERVER_TOKEN" in result.err


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [
        (["serve", "--port", "0"], "fastapi", "server"),
        (["mcp", "--model", "openai/m"], "mcp", "mcp"),
    ],
)
def test_a_missing_extra_is_one_line_naming_what_to_install(
    argv: list[str], module: str, extra: str
) -> None:
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from recursa.cli import dispatch\n"
        f"sys.exit(dispatch({argv!r}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=host_env(), timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'recursa[{extra}]'" in lines[0]


def test_import_and_help_load_none_of_the_serving_extras() -> None:
    code = (
        "import sys, contextlib, io, recursa, recursa.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    recursa.cli.dispatch(['--help']); recursa.cli.dispatch(['serve', '--help'])\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'mcp', 'llm')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=host_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert os.path.exists(RECURSA)
