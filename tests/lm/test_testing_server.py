"""recursa.testing through real sockets: the fakes every end-to-end test stands on."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest

from recursa.errors import LMStatusError
from recursa.lm.base import LMClient
from recursa.testing import (
    FakeLMServer,
    LMRequest,
    Reply,
    ScriptedLM,
    count_message_tokens,
    count_tokens,
)

SYSTEM = "You are an RLM. Write ```repl blocks."


def chat(client: httpx.Client, server: FakeLMServer, messages: list[dict[str, str]], **kw: Any):
    body = {"model": kw.pop("model", "m"), "messages": messages, **kw}
    return client.post(f"{server.url}/chat/completions", json=body)


def sub_msg(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def root_msgs(question: str, *history: str) -> list[dict[str, str]]:
    """A root conversation: system, question, then (assistant, observation) pairs."""
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    for i, said in enumerate(history):
        msgs.append({"role": "assistant", "content": said})
        msgs.append({"role": "user", "content": f"output {i}"})
    return msgs


def parse_sse(text: str) -> list[Any]:
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


# -- counting ----------------------------------------------------------------------------


def test_count_tokens_is_deterministic() -> None:
    assert count_tokens("") == 0
    assert count_tokens("a") == 1
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2
    assert count_tokens("x" * 400) == 100
    msgs = [{"role": "system", "content": "abcdefgh"}, {"role": "user", "content": ""}]
    assert count_message_tokens(msgs) == 2 + 4 + 0 + 4


def test_request_properties() -> None:
    req = LMRequest(root_msgs("q?", "first", "second"), "m", None, "openai")
    assert req.is_root and req.turn == 2 and req.system == SYSTEM
    assert req.last_user == "output 1"
    sub = LMRequest(sub_msg("hello"), "m", 10, "openai")
    assert not sub.is_root and sub.turn == 0 and sub.system == "" and sub.last_user == "hello"


# -- OpenAI wire ---------------------------------------------------------------------------


def test_openai_non_streaming_completion_and_usage() -> None:
    lm = ScriptedLM(sub=lambda r: f"echo: {r.last_user}")
    with FakeLMServer(lm) as server, httpx.Client() as client:
        resp = chat(client, server, sub_msg("hello there"), model="gpt-x", max_tokens=7)
        assert resp.status_code == 200
        assert resp.headers["content-length"] == str(len(resp.content))
        data = resp.json()
        assert data["object"] == "chat.completion"
        assert data["model"] == "gpt-x"
        assert data["choices"][0]["message"] == {
            "role": "assistant",
            "content": "echo: hello there",
        }
        assert data["choices"][0]["finish_reason"] == "stop"
        expected_in = count_tokens("hello there") + 4
        expected_out = count_tokens("echo: hello there")
        assert data["usage"] == {
            "prompt_tokens": expected_in,
            "completion_tokens": expected_out,
            "total_tokens": expected_in + expected_out,
        }
        assert server.usage == {
            "input_tokens": expected_in,
            "output_tokens": expected_out,
            "cost_usd": 0.0,
            "responses": 1,
        }
        assert server.by_model == {"gpt-x": server.usage}
        (req,) = server.requests
        assert req.wire == "openai" and req.max_tokens == 7 and not req.is_root
        assert server.request_count == 1 and server.errors == []


def test_openai_streaming_with_and_without_usage() -> None:
    text = "The answer is forty-two, and here is a longer tail to split into chunks."
    lm = ScriptedLM(sub=[text, "short"])
    with FakeLMServer(lm) as server, httpx.Client() as client:
        resp = chat(
            client,
            server,
            sub_msg("q"),
            stream=True,
            stream_options={"include_usage": True},
        )
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(resp.text)
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        content = "".join(
            c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]
        )
        assert content == text
        deltas = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
        assert len(deltas) > 1, "a reply should arrive in several deltas"
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["prompt_tokens"] == count_tokens("q") + 4
        assert chunks[-1]["usage"]["completion_tokens"] == count_tokens(text)

        resp = chat(client, server, sub_msg("q"), stream=True)
        events = parse_sse(resp.text)
        assert events[-1] == "[DONE]"
        assert not any("usage" in e for e in events[:-1])
        got = "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1])
        assert got == "short"
        assert server.usage["output_tokens"] == count_tokens(text) + count_tokens("short")
        assert all(r.stream for r in server.requests)


def test_models_endpoint_and_unknown_path() -> None:
    with FakeLMServer(ScriptedLM(), models=["a", "b"]) as server, httpx.Client() as client:
        data = client.get(f"{server.url}/models").json()
        assert [m["id"] for m in data["data"]] == ["a", "b"]
        assert client.post(f"{server.url}/nope", json={}).status_code == 404
        assert server.request_count == 0


def test_reply_overrides_are_reported_and_totalled() -> None:
    def responder(req: LMRequest) -> Reply:
        return Reply("ok", input_tokens=1000, output_tokens=50, cost_usd=0.25)

    with FakeLMServer(responder) as server, httpx.Client() as client:
        for model in ("a", "a", "b"):
            usage = chat(client, server, sub_msg("x"), model=model).json()["usage"]
            assert usage["prompt_tokens"] == 1000 and usage["completion_tokens"] == 50
            assert usage["cost"] == 0.25
        assert server.usage == {
            "input_tokens": 3000,
            "output_tokens": 150,
            "cost_usd": 0.75,
            "responses": 3,
        }
        assert server.by_model["a"]["input_tokens"] == 2000
        assert server.by_model["b"]["cost_usd"] == 0.25


def test_bad_json_is_400_and_recorded_as_error() -> None:
    with FakeLMServer(ScriptedLM()) as server, httpx.Client() as client:
        resp = client.post(f"{server.url}/chat/completions", content=b"{not json")
        assert resp.status_code == 400
        assert server.request_count == 0
        assert server.errors and "not JSON" in server.errors[0]


# -- Anthropic wire ------------------------------------------------------------------------


def test_anthropic_messages_endpoint() -> None:
    lm = ScriptedLM(root=["turn zero"])
    body = {
        "model": "claude-x",
        "max_tokens": 100,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "question?"}]}],
    }
    headers = {"anthropic-version": "2023-06-01", "x-api-key": "k"}
    with FakeLMServer(lm) as server, httpx.Client() as client:
        resp = client.post(f"{server.base}/v1/messages", json=body, headers=headers)
        assert resp.status_code == 200
        data = resp.json()
        assert data["type"] == "message" and data["role"] == "assistant"
        assert data["content"] == [{"type": "text", "text": "turn zero"}]
        assert data["stop_reason"] == "end_turn"
        expected_in = count_tokens(SYSTEM) + 4 + count_tokens("question?") + 4
        assert data["usage"] == {
            "input_tokens": expected_in,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 3,
        }
        (req,) = server.requests
        assert req.wire == "anthropic" and req.is_root and req.system == SYSTEM
        assert req.last_user == "question?" and req.headers["x-api-key"] == "k"
        assert server.usage["input_tokens"] == expected_in

        # The real API insists on the version header; a client that forgets must find out.
        resp = client.post(f"{server.base}/v1/messages", json=body)
        assert resp.status_code == 400
        assert resp.json()["type"] == "error"
        assert "anthropic-version" in resp.json()["error"]["message"]
        assert server.request_count == 1

        # Streaming: text deltas add up, usage comes in message_start and message_delta.
        resp = client.post(
            f"{server.base}/v1/messages", json={**body, "stream": True}, headers=headers
        )
        events = parse_sse(resp.text)
        assert events[0]["type"] == "message_start"
        assert events[0]["message"]["usage"]["input_tokens"] == expected_in
        text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
        assert text == "turn zero"
        (delta,) = [e for e in events if e["type"] == "message_delta"]
        assert delta["usage"]["output_tokens"] == 3
        assert events[-1]["type"] == "message_stop"


# -- ScriptedLM ----------------------------------------------------------------------------


def test_root_list_is_indexed_by_turn_across_interleaved_conversations() -> None:
    lm = ScriptedLM(root=["r0", "r1", "r2"])
    with FakeLMServer(lm) as server, httpx.Client() as client:

        def ask(msgs: list[dict[str, str]]) -> str:
            return chat(client, server, msgs).json()["choices"][0]["message"]["content"]

        a: list[str] = []
        b: list[str] = []
        # Two conversations (say, two child RLMs) advance turn by turn, interleaved.
        a.append(ask(root_msgs("A", *a)))
        b.append(ask(root_msgs("B", *b)))
        b.append(ask(root_msgs("B", *b)))
        a.append(ask(root_msgs("A", *a)))
        a.append(ask(root_msgs("A", *a)))
        a.append(ask(root_msgs("A", *a)))  # past the end: the last item repeats
        b.append(ask(root_msgs("B", *b)))
        assert a == ["r0", "r1", "r2", "r2"]
        assert b == ["r0", "r1", "r2"]
        assert [r.turn for r in server.requests] == [0, 0, 1, 1, 2, 3, 2]


def test_sub_list_is_handed_out_in_order_then_errors() -> None:
    lm = ScriptedLM(root=["root"], sub=["s0", "s1", "s2"])
    with FakeLMServer(lm) as server, httpx.Client() as client:
        got = [chat(client, server, sub_msg(f"p{i}")).json() for i in range(3)]
        assert [g["choices"][0]["message"]["content"] for g in got] == ["s0", "s1", "s2"]
        # A root turn in between does not consume the sub list.
        resp = chat(client, server, root_msgs("q"))
        assert resp.json()["choices"][0]["message"]["content"] == "root"
        resp = chat(client, server, sub_msg("one too many"))
        assert resp.status_code == 400
        assert "exhausted" in resp.json()["error"]["message"]
        assert lm.sub_served == 4


def test_sub_list_is_thread_safe() -> None:
    n = 64
    lm = ScriptedLM(sub=[f"s{i}" for i in range(n)])
    results: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        answer = lm(LMRequest(sub_msg("x"), "m", None, "openai"))
        with lock:
            results.append(str(answer))

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"s{i}" for i in range(n))


def test_missing_script_is_a_clear_error() -> None:
    with FakeLMServer(ScriptedLM(root=["r"])) as server, httpx.Client() as client:
        resp = chat(client, server, sub_msg("orphan prompt"))
        assert resp.status_code == 400
        msg = resp.json()["error"]["message"]
        assert "no sub script" in msg and "orphan prompt" in msg
    with FakeLMServer(ScriptedLM(sub=["s"])) as server, httpx.Client() as client:
        resp = chat(client, server, root_msgs("q"))
        assert resp.status_code == 400 and "no root script" in resp.text


def test_responder_exception_is_500_with_its_text() -> None:
    def responder(req: LMRequest) -> str:
        raise RuntimeError("script bug here")

    with FakeLMServer(responder) as server, httpx.Client() as client:
        resp = chat(client, server, sub_msg("x"))
        assert resp.status_code == 500
        assert "script bug here" in resp.json()["error"]["message"]
        assert server.errors == ["responder raised RuntimeError: script bug here"]
        assert server.usage["responses"] == 0


def test_reply_status_answers_http_error() -> None:
    lm = ScriptedLM(sub=[Reply(status=429, error_body="slow down", retry_after=2), "fine"])
    with FakeLMServer(lm) as server, httpx.Client() as client:
        resp = chat(client, server, sub_msg("x"))
        assert resp.status_code == 429
        assert resp.headers["retry-after"] == "2"
        assert resp.json()["error"]["message"] == "slow down"
        assert chat(client, server, sub_msg("x")).json()["choices"][0]["message"]["content"] == (
            "fine"
        )
        assert server.usage["responses"] == 1


# -- fault injection -----------------------------------------------------------------------


def test_fail_first_with_retry_after() -> None:
    lm = ScriptedLM(sub=lambda r: "ok")
    with (
        FakeLMServer(lm, fail_first=2, fail_status=503, retry_after=1.5) as server,
        httpx.Client() as client,
    ):
        for _ in range(2):
            resp = chat(client, server, sub_msg("x"))
            assert resp.status_code == 503
            assert resp.headers["retry-after"] == "1.5"
            assert resp.headers["retry-after-ms"] == "1500"
        resp = chat(client, server, sub_msg("x"))
        assert resp.status_code == 200
        assert "retry-after" not in resp.headers
        assert server.request_count == 3
        assert server.usage["responses"] == 1
        assert lm.requests and len(lm.requests) == 1, "failures come before the responder"

        server.reset()
        assert server.request_count == 0 and server.usage["responses"] == 0
        assert chat(client, server, sub_msg("x")).status_code == 503


def test_drop_first_gives_a_connection_error() -> None:
    with FakeLMServer(ScriptedLM(sub=lambda r: "ok"), drop_first=1) as server:
        with httpx.Client() as client, pytest.raises(httpx.TransportError):
            chat(client, server, sub_msg("x"))
        with httpx.Client() as client:
            assert chat(client, server, sub_msg("x")).status_code == 200
        assert server.request_count == 2
        assert server.usage["responses"] == 1


# -- concurrency ---------------------------------------------------------------------------


async def test_latency_overlaps_concurrent_requests() -> None:
    lm = ScriptedLM(sub=lambda r: "ok")
    with FakeLMServer(lm, latency=0.2) as server:
        async with httpx.AsyncClient() as client:
            body = {"model": "m", "messages": sub_msg("x")}
            # One at a time: never more than one in flight.
            for _ in range(2):
                await client.post(f"{server.url}/chat/completions", json=body)
            assert server.max_in_flight == 1
            server.reset()
            resps = await asyncio.gather(
                *(client.post(f"{server.url}/chat/completions", json=body) for _ in range(10))
            )
        assert all(r.status_code == 200 for r in resps)
        assert server.max_in_flight > 1
        assert server.in_flight == 0


async def test_two_hundred_concurrent_requests_all_succeed() -> None:
    n = 200
    lm = ScriptedLM(sub=lambda r: f"answer to {r.last_user}")
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    timeout = httpx.Timeout(10.0)
    with FakeLMServer(lm, latency=0.1) as server:
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

            async def one(i: int) -> str:
                body = {"model": "m", "messages": sub_msg(f"q{i}")}
                resp = await client.post(f"{server.url}/chat/completions", json=body)
                resp.raise_for_status()
                return resp.json()["choices"][0]["message"]["content"]

            answers = await asyncio.gather(*(one(i) for i in range(n)))
    assert answers == [f"answer to q{i}" for i in range(n)]
    assert server.request_count == n and server.usage["responses"] == n


# -- in-process client ---------------------------------------------------------------------


async def test_scripted_lm_in_process_complete() -> None:
    lm = ScriptedLM(
        root=["turn 0", Reply("turn 1", cost_usd=0.5)],
        sub=[Reply(status=429, error_body="busy", retry_after=3), "sub answer"],
    )
    assert isinstance(lm, LMClient)
    msgs = root_msgs("question")
    c = await lm.complete(msgs, model="m", max_tokens=9)
    assert c.text == "turn 0" and c.model == "m" and c.finish_reason == "stop"
    assert c.input_tokens == count_message_tokens(msgs) and c.output_tokens == count_tokens(
        "turn 0"
    )
    assert c.cost_usd is None
    c = await lm.complete(root_msgs("question", "turn 0"), model="m")
    assert c.text == "turn 1" and c.cost_usd == 0.5

    with pytest.raises(LMStatusError) as info:
        await lm.complete(sub_msg("p"), model="m")
    assert info.value.status == 429 and info.value.retry_after == 3 and "busy" in str(info.value)
    c = await lm.complete(sub_msg("p"), model="m")
    assert c.text == "sub answer" and c.input_tokens == count_tokens("p") + 4

    def broken(req: LMRequest) -> str:
        raise ValueError("oops")

    with pytest.raises(LMStatusError) as info:
        await ScriptedLM(sub=broken).complete(sub_msg("p"), model="m")
    assert info.value.status == 500 and "oops" in str(info.value)
    assert [r.turn for r in lm.requests] == [0, 1, 0, 0]
    await lm.aclose()


async def test_in_process_and_server_report_the_same_usage() -> None:
    text = "some longer reply text " * 5
    msgs = root_msgs("what is it?", "looked around")
    local = await ScriptedLM(root=[text]).complete(msgs, model="m")
    with FakeLMServer(ScriptedLM(root=[text])) as server:
        async with httpx.AsyncClient() as client:
            body = {"model": "m", "messages": msgs}
            usage = (await client.post(f"{server.url}/chat/completions", json=body)).json()
    assert usage["usage"]["prompt_tokens"] == local.input_tokens
    assert usage["usage"]["completion_tokens"] == local.output_tokens


def test_anthropic_prompt_cache_as_documented() -> None:
    """A prefix up to a breakpoint is written once, then read; short prefixes are not cached."""
    lm = ScriptedLM(root=lambda req: "ok")
    system = "rules " * 1000  # 1,500 tokens: over the 1,024-token minimum
    mark = {"type": "ephemeral"}

    def body(*turns: str, cache: bool = True) -> dict[str, object]:
        messages = []
        for i, text in enumerate(turns):
            block: dict[str, object] = {"type": "text", "text": text}
            if cache and i == len(turns) - 1:
                block["cache_control"] = mark
            messages.append({"role": "assistant" if i % 2 else "user", "content": [block]})
        sys_block: dict[str, object] = {"type": "text", "text": system}
        if cache:
            sys_block["cache_control"] = mark
        return {"model": "claude-x", "max_tokens": 10, "system": [sys_block], "messages": messages}

    headers = {"anthropic-version": "2023-06-01"}
    with FakeLMServer(lm) as server, httpx.Client() as client:

        def usage(payload: dict[str, object]) -> dict[str, int]:
            resp = client.post(f"{server.base}/v1/messages", json=payload, headers=headers)
            return resp.json()["usage"]

        sys_tokens = count_tokens(system) + 4
        first = usage(body("q1"))
        assert first["cache_read_input_tokens"] == 0
        assert first["cache_creation_input_tokens"] == sys_tokens + count_tokens("q1") + 4
        assert first["input_tokens"] == 0
        second = usage(body("q1", "a1", "q2"))
        assert second["cache_read_input_tokens"] == sys_tokens + count_tokens("q1") + 4
        # Read back at the boundary the first request wrote (looked up behind the breakpoint).
        assert second["cache_creation_input_tokens"] == count_tokens("a1") + count_tokens("q2") + 8
        # No breakpoints: nothing is read or written, though the prefix is cached.
        plain = usage(body("q1", cache=False))
        assert plain["cache_read_input_tokens"] == plain["cache_creation_input_tokens"] == 0
        server.reset()
        assert usage(body("q1"))["cache_read_input_tokens"] == 0
    with FakeLMServer(lm) as server, httpx.Client() as client:
        short = {**body("q1"), "system": [{"type": "text", "text": "hi", "cache_control": mark}]}
        resp = client.post(f"{server.base}/v1/messages", json=short, headers=headers)
        assert resp.json()["usage"]["cache_creation_input_tokens"] == 0
