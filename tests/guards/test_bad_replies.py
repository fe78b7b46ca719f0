"""Bad replies never crash the host (issue 15): a misbehaving server on a real socket, the
real CLI in a subprocess. The run ends with a clear status, `--json` still prints its object
with the usage so far, and the trace ends with `run_end`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from e2e_helpers import host_env, one_json_object, repl, run_cli
from hostile_server import Behaviour, HostileServer, good, openai_answer, raw, send, trickle
from recursa.errors import LMConnectionError, LMResponseError, LMStatusError
from recursa.lm import AnthropicClient, OpenAICompatClient
from recursa.lm.openai_compat import BaseHTTPClient

LOOK = repl("print('looked')")
TEN_MB = json.dumps(openai_answer("x" * 10_000_000)).encode()
WRONG_TYPES = json.dumps(
    {"choices": [{"message": {"content": [{"type": "text", "text": 5}]}}]}
).encode()

CASES: dict[str, tuple[Behaviour, str]] = {
    "deeply nested JSON": (raw(b"[" * 200_000), "nested too deeply"),
    "10 MB reply": (raw(TEN_MB), "more than 8,388,608 bytes"),
    "empty choices": (raw(b'{"choices": [], "usage": {}}'), "no choices"),
    "wrong types": (raw(WRONG_TYPES), "could not be read"),
    "not JSON at all": (raw(b"\xff\xfe<html>"), "not JSON"),
}


def _run(server: HostileServer, tmp_path: Path, model: str = "openai/x", **env: str):
    trace = tmp_path / "run.jsonl"
    base = server.base if model.startswith("anthropic/") else server.url
    url_var = "ANTHROPIC_BASE_URL" if model.startswith("anthropic/") else "OPENAI_BASE_URL"
    run = run_cli(
        ["run", "question?", "--model", model, "--json", "--trace", str(trace)],
        env=host_env(**{url_var: base}, **env),
        timeout=120,
    )
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return run, events


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_reply_ends_the_run_with_error_and_partial_usage(case: str, tmp_path) -> None:
    behaviour, why = CASES[case]
    with HostileServer([good(LOOK), behaviour]) as server:
        run, events = _run(server, tmp_path)

    assert "Traceback" not in run.err
    assert run.rc == 1, run.err
    data = one_json_object(run.out)
    assert data["status"] == "error"
    assert data["usage"]["llm_calls"] == len(server.requests) == 2
    assert data["usage"]["input_tokens"] == 10
    assert data["usage"]["output_tokens"] == 5
    assert events[-1]["type"] == "run_end"
    assert why in events[-1]["error"]
    assert why in run.err
    assert len(events[-1]["error"].splitlines()) == 1


@pytest.mark.parametrize("model", ["openai/x", "anthropic/y"])
def test_a_server_trickling_bytes_is_cut_by_the_request_deadline(model: str, tmp_path) -> None:
    with HostileServer([good(LOOK), trickle]) as server:
        run, events = _run(server, tmp_path, model, RECURSA_REQUEST_DEADLINE="1")

    assert run.rc == 1, run.err
    data = one_json_object(run.out)
    assert data["status"] == "error"
    assert "1s deadline" in data.get("error", events[-1]["error"])
    assert events[-1]["type"] == "run_end"
    assert data["usage"]["llm_calls"] == len(server.requests) == 6  # 1 + first try + 4 retries
    assert data["usage"]["input_tokens"] == 10


def test_the_reply_size_cap_is_configurable(tmp_path) -> None:
    with HostileServer([good(LOOK)]) as server:
        run, events = _run(server, tmp_path, RECURSA_MAX_RESPONSE_BYTES="20")

    assert run.rc == 1, run.err
    assert one_json_object(run.out)["status"] == "error"
    assert "more than 20 bytes" in events[-1]["error"]


def test_a_bad_deadline_setting_is_one_usage_line(tmp_path) -> None:
    run = run_cli(
        ["run", "q", "--model", "openai/x", "--base-url", "http://127.0.0.1:9/v1"],
        env=host_env(RECURSA_REQUEST_DEADLINE="soon"),
    )

    assert run.rc == 2
    assert run.err_lines == ["recursa: error: RECURSA_REQUEST_DEADLINE='soon' is not seconds"]


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_both_clients_hold_the_deadline_and_the_size_cap_sync_and_async(wire: str) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with HostileServer([trickle, raw(TEN_MB)]) as server:
        if wire == "openai":
            client: BaseHTTPClient = OpenAICompatClient(server.url, "k", deadline=0.5)
        else:
            client = AnthropicClient(server.base, "k", deadline=0.5, max_response_bytes=1 << 20)
        with pytest.raises(LMConnectionError, match=r"0\.5s deadline"):
            client.complete_sync(messages, model="m")
        with pytest.raises(LMResponseError, match="more than"):
            asyncio.run(client.complete(messages, model="m"))
        client.close()


def test_a_huge_error_page_still_reads_as_its_status() -> None:
    page = b"<html><title>overloaded</title>" + b" " * 10_000_000 + b"</html>"

    def overloaded(conn, path: str, body: object) -> None:
        send(conn, page, 503)

    with HostileServer([overloaded]) as server:
        client = OpenAICompatClient(server.url, None, max_response_bytes=1 << 20)
        with pytest.raises(LMStatusError, match=r"HTTP 503.*overloaded") as caught:
            client.complete_sync([{"role": "user", "content": "hi"}], model="m")
        client.close()

    assert caught.value.retryable
