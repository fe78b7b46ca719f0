"""The HTTP LM clients against a real local HTTP server, through real sockets."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from recursa.errors import ConfigError, LMConnectionError, LMResponseError, LMStatusError
from recursa.lm import AnthropicClient, LMClient, OpenAICompatClient

KEY = "sk-test-SECRET-0123456789abcdef"


# -- a tiny local server ------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    client: tuple[str, int]

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class FakeLM:
    """What the server answers (by path) and everything it received."""

    def __init__(self) -> None:
        self.routes: dict[str, Reply | Callable[[Received], Reply]] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""

    def on(self, path: str, reply: Reply | Callable[[Received], Reply]) -> None:
        self.routes[path] = reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        state: FakeLM = self.server.state  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        got = Received(
            "POST",
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            raw,
            self.client_address,
        )
        with state.lock:
            state.received.append(got)
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            route = state.routes.get(self.path)
            if route is None:
                reply = Reply(404, {"error": {"message": f"no route {self.path}"}})
            else:
                reply = route(got) if callable(route) else route
            if reply.delay:
                time.sleep(reply.delay)
            body = reply.body
            if isinstance(body, bytes):
                data = body
            elif isinstance(body, str):
                data = body.encode()
            else:
                data = json.dumps(body).encode()
            self.send_response(reply.status)
            headers = {"content-type": "application/json", **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            with state.lock:
                state.in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected in some tests


@pytest.fixture
def fake() -> Iterator[FakeLM]:
    state = FakeLM()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = state  # type: ignore[attr-defined]
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openai_body(text: str | None = "Paris.", **usage: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
    }
    if usage:
        body["usage"] = usage
    return body


def anthropic_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Hello, "},
            {"type": "tool_use", "id": "t", "name": "f", "input": {}},
            {"type": "text", "text": "world."},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 21, "output_tokens": 4},
    }
    body.update(over)
    return body


MSGS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Capital of France?"},
]


def assert_one_clean_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "\r" not in text, text
    assert KEY not in text and KEY not in repr(exc)
    assert text.strip()
    return text


# -- OpenAI-compatible ---------------------------------------------------------------------


async def test_openai_completion_parsed_and_request_as_sent(fake: FakeLM) -> None:
    fake.on(
        "/v1/chat/completions",
        Reply(body=openai_body("Paris.", prompt_tokens=17, completion_tokens=3, cost=0.00042)),
    )
    async with OpenAICompatClient(fake.url + "/v1/", KEY) as client:
        assert isinstance(client, LMClient)
        out = await client.complete(MSGS, model="gpt-4o", max_tokens=50, temperature=0.2)
    assert out.text == "Paris."
    assert (out.input_tokens, out.output_tokens) == (17, 3)
    assert out.cost_usd == pytest.approx(0.00042)
    assert out.finish_reason == "stop"
    assert out.model == "gpt-4o-2024-08-06"
    [req] = fake.received
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    assert req.json == {
        "model": "gpt-4o",
        "messages": MSGS,
        "max_tokens": 50,
        "temperature": 0.2,
    }


async def test_openai_without_key_or_options_sends_neither(fake: FakeLM) -> None:
    fake.on("/v1/chat/completions", Reply(body=openai_body("ok", prompt_tokens=1)))
    async with OpenAICompatClient(fake.url + "/v1", None) as client:
        out = await client.complete(MSGS, model="llama3")
    [req] = fake.received
    assert "authorization" not in req.headers
    assert set(req.json) == {"model", "messages"}
    assert out.cost_usd is None


async def test_openai_null_content_and_missing_usage_still_complete(fake: FakeLM) -> None:
    fake.on("/v1/chat/completions", Reply(body=openai_body(None)))
    async with OpenAICompatClient(fake.url + "/v1", KEY) as client:
        out = await client.complete(MSGS, model="m")
    assert out.text == ""
    assert (out.input_tokens, out.output_tokens) == (0, 0)


async def test_openai_max_tokens_field_by_host(fake: FakeLM) -> None:
    assert OpenAICompatClient("https://api.openai.com/v1", KEY).max_tokens_field == (
        "max_completion_tokens"
    )
    fake.on("/v1/chat/completions", Reply(body=openai_body()))
    client = OpenAICompatClient(fake.url + "/v1", KEY, max_tokens_field="max_completion_tokens")
    async with client:
        await client.complete(MSGS, model="gpt-5", max_tokens=9)
    assert fake.received[0].json["max_completion_tokens"] == 9
    assert "max_tokens" not in fake.received[0].json


async def test_extra_headers_are_sent(fake: FakeLM) -> None:
    fake.on("/v1/chat/completions", Reply(body=openai_body()))
    async with OpenAICompatClient(fake.url + "/v1", KEY, headers={"X-Title": "recursa"}) as c:
        await c.complete(MSGS, model="m")
    assert fake.received[0].headers["x-title"] == "recursa"


async def test_429_is_retryable_with_retry_after_seconds(fake: FakeLM) -> None:
    fake.on(
        "/v1/chat/completions",
        Reply(
            429,
            {"error": {"message": "Rate limit reached for gpt-4o.\nTry again.", "type": "x"}},
            {"Retry-After": "7"},
        ),
    )
    async with OpenAICompatClient(fake.url + "/v1", KEY) as client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model="gpt-4o")
    err = info.value
    assert err.status == 429 and err.retryable
    assert err.retry_after == 7.0
    text = assert_one_clean_line(err)
    assert "429" in text and "Rate limit reached for gpt-4o. Try again." in text
    assert len(fake.received) == 1  # one attempt only: retries belong to the caller


async def test_503_retry_after_as_http_date(fake: FakeLM) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    fake.on("/v1/chat/completions", Reply(503, "busy", {"Retry-After": when}))
    async with OpenAICompatClient(fake.url + "/v1", KEY) as client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model="m")
    assert info.value.retryable
    assert info.value.retry_after is not None and 25 <= info.value.retry_after <= 31


async def test_400_not_retryable_and_no_retry_after(fake: FakeLM) -> None:
    fake.on(
        "/v1/chat/completions",
        Reply(400, {"error": {"message": "Unsupported parameter: 'max_tokens'"}}),
    )
    async with OpenAICompatClient(fake.url + "/v1", KEY) as client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model="m")
    assert info.value.status == 400 and not info.value.retryable
    assert info.value.retry_after is None
    assert "Unsupported parameter: 'max_tokens'" in assert_one_clean_line(info.value)


async def test_500_html_page_gives_a_short_line(fake: FakeLM) -> None:
    page = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
    page += "<p>nginx</p>\n" * 2000 + "</body></html>"
    fake.on("/v1/chat/completions", Reply(500, page, {"content-type": "text/html"}))
    async with OpenAICompatClient(fake.url + "/v1", KEY) as client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model="m")
    text = assert_one_clean_line(info.value)
    assert len(text) < 500
    assert "HTTP 500" in text and "502 Bad Gateway" in text


async def test_redirect_points_at_the_base_url(fake: FakeLM) -> None:
    fake.on("/chat/completions", Reply(301, "", {"Location": "/v1/chat/completions"}))
    async with OpenAICompatClient(fake.url, KEY) as client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model="m")
    assert "base URL" in assert_one_clean_line(info.value)
    assert len(fake.received) == 1


async def test_key_echoed_by_server_is_scrubbed(fake: FakeLM) -> None:
    def echo(req: Received) -> Reply:
        return Reply(
            401, {"error": {"message": f"Incorrect API key: {req.headers['authorization']}"}}
        )

    fake.on("/v1/chat/completions", echo)
    client = OpenAICompatClient(fake.url + "/v1", KEY)
    assert KEY not in repr(client)
    async with client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model="m")
    text = assert_one_clean_line(info.value)
    assert "Incorrect API key" in text and not info.value.retryable


async def test_unreachable_server_is_a_connection_error() -> None:
    port = closed_port()
    async with OpenAICompatClient(f"http://127.0.0.1:{port}/v1", KEY) as client:
        with pytest.raises(LMConnectionError) as info:
            await client.complete(MSGS, model="m")
    text = assert_one_clean_line(info.value)
    assert f"127.0.0.1:{port}/v1/chat/completions" in text
    assert info.value.retryable


async def test_slow_server_times_out_as_connection_error(fake: FakeLM) -> None:
    """The server holds its reply until the client has given up, so only the client's own
    timeout can end the call: the error comes while the request is still in flight."""
    release = threading.Event()

    def held(req: Received) -> Reply:
        release.wait(timeout=30)  # a bound for a client that never times out
        return Reply(body=openai_body())

    fake.on("/v1/chat/completions", held)
    try:
        async with OpenAICompatClient(fake.url + "/v1", KEY, timeout=0.3) as client:
            with pytest.raises(LMConnectionError) as info:
                await client.complete(MSGS, model="m")
            still_held = fake.in_flight
    finally:
        release.set()
    assert len(fake.received) == 1
    assert still_held == 1  # the reply had not been sent when the client gave up
    assert "timed out" in assert_one_clean_line(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b"this is not json",
        b"",
        [1, 2, 3],
        {"choices": []},
        {"choices": [{"finish_reason": "stop"}]},
        {"choices": [{"message": {"content": 42}}]},
    ],
    ids=["text", "empty", "list", "no-choices", "no-message", "bad-content"],
)
async def test_2xx_with_unreadable_body_is_a_response_error(fake: FakeLM, body: Any) -> None:
    fake.on("/v1/chat/completions", Reply(200, body))
    async with OpenAICompatClient(fake.url + "/v1", KEY) as client:
        with pytest.raises(LMResponseError) as info:
            await client.complete(MSGS, model="m")
    assert not info.value.retryable
    assert fake.url in assert_one_clean_line(info.value)


async def test_error_object_inside_200_keeps_its_status(fake: FakeLM) -> None:
    fake.on(
        "/v1/chat/completions",
        Reply(200, {"error": {"code": 429, "message": "Provider rate limited"}}),
    )
    async with OpenAICompatClient(fake.url + "/v1", KEY) as client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model="m")
        assert info.value.status == 429 and info.value.retryable
        assert "Provider rate limited" in assert_one_clean_line(info.value)
        fake.on("/v1/chat/completions", Reply(200, {"error": {"message": "weird"}}))
        with pytest.raises(LMResponseError):
            await client.complete(MSGS, model="m")


async def test_keep_alive_reuses_one_connection(fake: FakeLM) -> None:
    fake.on("/v1/chat/completions", Reply(body=openai_body()))
    async with OpenAICompatClient(fake.url + "/v1", KEY) as client:
        for _ in range(4):
            await client.complete(MSGS, model="m")
    assert len(fake.received) == 4
    assert len({r.client for r in fake.received}) == 1


async def test_concurrent_requests_bounded_by_max_connections(fake: FakeLM) -> None:
    fake.on("/v1/chat/completions", Reply(body=openai_body("x"), delay=0.05))
    async with OpenAICompatClient(fake.url + "/v1", KEY, max_connections=4) as client:
        outs = await asyncio.gather(*(client.complete(MSGS, model="m") for _ in range(40)))
    assert [o.text for o in outs] == ["x"] * 40
    assert len(fake.received) == 40
    assert 2 <= fake.max_in_flight <= 4


def test_sync_twin_same_parsing_and_errors(fake: FakeLM) -> None:
    fake.on(
        "/v1/chat/completions",
        Reply(body=openai_body("sync", prompt_tokens=5, completion_tokens=2)),
    )
    with OpenAICompatClient(fake.url + "/v1", KEY) as client:
        out = client.complete_sync(MSGS, model="m", max_tokens=3)
        assert (out.text, out.input_tokens, out.output_tokens) == ("sync", 5, 2)
        assert fake.received[0].json["max_tokens"] == 3
        fake.on("/v1/chat/completions", Reply(429, {"error": "slow down"}, {"Retry-After": "2"}))
        with pytest.raises(LMStatusError) as info:
            client.complete_sync(MSGS, model="m")
        assert info.value.retry_after == 2.0
        assert "slow down" in assert_one_clean_line(info.value)
    with pytest.raises(LMConnectionError) as info2:
        OpenAICompatClient(f"http://127.0.0.1:{closed_port()}", KEY).complete_sync(MSGS, model="m")
    assert_one_clean_line(info2.value)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_one_client_survives_successive_event_loops(fake: FakeLM) -> None:
    # Plain httpx fails here with "Event loop is closed": its pooled keep-alive socket
    # belongs to the first loop. The socket that first loop never closed is reclaimed below.
    fake.on("/v1/chat/completions", Reply(body=openai_body("again")))
    client = OpenAICompatClient(fake.url + "/v1", KEY)
    first = asyncio.run(client.complete(MSGS, model="m"))
    second = asyncio.run(client.complete(MSGS, model="m"))
    assert first.text == second.text == "again"
    asyncio.run(client.aclose())
    gc.collect()


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://x/v1", "", "http://"])
def test_bad_base_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        OpenAICompatClient(url, KEY)


# -- Anthropic -----------------------------------------------------------------------------


async def test_anthropic_request_as_received(fake: FakeLM) -> None:
    fake.on("/v1/messages", Reply(body=anthropic_body()))
    messages = [
        {"role": "system", "content": "Rule one."},
        {"role": "user", "content": "Q1"},
        {"role": "user", "content": "Q2"},
        {"role": "system", "content": "Rule two."},
        {"role": "assistant", "content": "A1"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": ""},
    ]
    async with AnthropicClient(fake.url, KEY, prompt_cache=False) as client:
        assert isinstance(client, LMClient)
        await client.complete(messages, model="claude-sonnet-4-20250514", temperature=0.0)
    [req] = fake.received
    assert req.path == "/v1/messages"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    body = req.json
    assert body["system"] == "Rule one.\n\nRule two."
    assert body["messages"] == [
        {"role": "user", "content": "Q1\n\nQ2"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "(empty)"},
    ]
    assert body["max_tokens"] == 8192
    assert body["temperature"] == 0.0
    assert body["model"] == "claude-sonnet-4-20250514"


async def test_anthropic_conversation_carries_cache_breakpoints(fake: FakeLM) -> None:
    fake.on("/v1/messages", Reply(body=anthropic_body()))
    messages = [
        {"role": "system", "content": "Rules."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
        {"role": "user", "content": "Q3"},
    ]
    async with AnthropicClient(fake.url, KEY) as client:
        await client.complete(messages, model="claude-sonnet-4-5")
        await client.complete([{"role": "user", "content": "one-off"}], model="m")
    body = fake.received[0].json
    mark = {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": "Rules.", "cache_control": mark}]
    marked = [
        m["content"][0]["text"] for m in body["messages"] if "cache_control" in m["content"][0]
    ]
    assert marked == ["Q2", "Q3"]  # the prefix the last turn wrote, and the new one
    assert [m["content"][0]["text"] for m in body["messages"]] == ["Q1", "A1", "Q2", "A2", "Q3"]
    # A sub-query without a system prompt is never re-sent: no cache write (it costs more).
    assert fake.received[1].json["messages"] == [{"role": "user", "content": "one-off"}]


async def test_anthropic_cache_usage_read_back(fake: FakeLM) -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 3000,
        "output_tokens": 5,
    }
    fake.on("/v1/messages", Reply(body=anthropic_body(usage=usage)))
    async with AnthropicClient(fake.url, KEY) as client:
        out = await client.complete(MSGS, model="m")
    assert (out.input_tokens, out.cache_read_tokens, out.cache_write_tokens) == (3210, 3000, 200)


async def test_openai_cached_tokens_read_back(fake: FakeLM) -> None:
    body = openai_body(
        prompt_tokens=2000, completion_tokens=7, prompt_tokens_details={"cached_tokens": 1920}
    )
    fake.on("/v1/chat/completions", Reply(body=body))
    async with OpenAICompatClient(fake.url + "/v1", KEY) as client:
        out = await client.complete(MSGS, model="gpt-5")
    assert (out.input_tokens, out.cache_read_tokens, out.cache_write_tokens) == (2000, 1920, 0)
    assert out.usage_problem is None


async def test_anthropic_response_parsed(fake: FakeLM) -> None:
    fake.on("/v1/messages", Reply(body=anthropic_body()))
    async with AnthropicClient(fake.url + "/", KEY) as client:
        out = await client.complete(MSGS, model="claude-sonnet-4-0", max_tokens=100)
    assert out.text == "Hello, world."
    assert (out.input_tokens, out.output_tokens) == (21, 4)
    assert out.finish_reason == "end_turn"
    assert out.model == "claude-sonnet-4-20250514"
    body = fake.received[0].json
    assert body["max_tokens"] == 100 and "temperature" not in body


async def test_anthropic_base_url_with_v1_suffix(fake: FakeLM) -> None:
    fake.on("/v1/messages", Reply(body=anthropic_body()))
    async with AnthropicClient(fake.url + "/v1", None) as client:
        await client.complete(MSGS, model="m")
    assert fake.received[0].path == "/v1/messages"
    assert "x-api-key" not in fake.received[0].headers


async def test_anthropic_overloaded_is_retryable(fake: FakeLM) -> None:
    fake.on(
        "/v1/messages",
        Reply(
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            {"retry-after": "3"},
        ),
    )
    async with AnthropicClient(fake.url, KEY) as client:
        with pytest.raises(LMStatusError) as info:
            await client.complete(MSGS, model="m")
    assert info.value.status == 529 and info.value.retryable
    assert info.value.retry_after == 3.0
    assert "Overloaded" in assert_one_clean_line(info.value)


@pytest.mark.parametrize(
    "body",
    [b"<html>", {"type": "message"}, {"content": "text, not blocks"}],
    ids=["html", "no-content", "content-not-list"],
)
async def test_anthropic_unreadable_body(fake: FakeLM, body: Any) -> None:
    fake.on("/v1/messages", Reply(200, body))
    async with AnthropicClient(fake.url, KEY) as client:
        with pytest.raises(LMResponseError) as info:
            await client.complete(MSGS, model="m")
    assert_one_clean_line(info.value)


def test_anthropic_sync_twin_and_unreachable(fake: FakeLM) -> None:
    fake.on("/v1/messages", Reply(body=anthropic_body(usage={"input_tokens": 2})))
    with AnthropicClient(fake.url, KEY) as client:
        out = client.complete_sync(MSGS, model="m")
    assert (out.text, out.input_tokens, out.output_tokens) == ("Hello, world.", 2, 0)
    assert fake.received[0].json["system"][0]["text"] == "You are terse."
    port = closed_port()
    with pytest.raises(LMConnectionError) as info:
        AnthropicClient(f"http://127.0.0.1:{port}", KEY).complete_sync(MSGS, model="m")
    assert f"127.0.0.1:{port}/v1/messages" in assert_one_clean_line(info.value)
    assert KEY not in repr(AnthropicClient(fake.url, KEY))
