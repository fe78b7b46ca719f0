"""A real HTTP server speaking the OpenAI and Anthropic wire formats, answered by a script.

End-to-end tests and benchmarks point recursa's real clients at it, so every byte goes
through real sockets. It is built for many concurrent requests (each on its own thread,
a deep accept backlog, Nagle off, keep-alive) so that what a benchmark measures is our
scheduling, not this fake. Faults can be injected: latency, HTTP errors, dropped
connections.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from recursa.testing.other_wires import (
    AZURE_PATH,
    BEDROCK_PATH,
    GEMINI_PATH,
    bedrock_answer,
    bedrock_auth_problem,
    bedrock_error,
    bedrock_messages,
    gemini_answer,
    gemini_error,
    gemini_messages,
    responses_answer,
    responses_messages,
)
from recursa.testing.prompt_cache import MIN_CACHEABLE_TOKENS, PromptCache
from recursa.testing.scripted import (
    LMRequest,
    Reply,
    Responder,
    Wire,
    as_reply,
    usage_of,
    within_max_tokens,
)

__all__ = ["FakeLMServer"]

_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens"}


def _flatten(content: Any) -> str:
    """Text of a message's content: a str, or a list of parts/blocks with `text`."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    raise ValueError(f"message content must be text or a list of parts, not {content!r:.80}")


def _images(raw: Any) -> list[tuple[str, bytes]]:
    """The images of a request's messages: OpenAI `image_url` parts with a base64 data URL
    and Anthropic `image` blocks with a base64 source, as (media type, bytes)."""
    out: list[tuple[str, bytes]] = []
    for m in raw if isinstance(raw, list) else []:
        content = m.get("content") if isinstance(m, dict) else None
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "image_url":
                url = str((part.get("image_url") or {}).get("url", ""))
                head, _, data = url.partition(";base64,")
                if not head.startswith("data:") or not data:
                    raise ValueError(f"image_url must be a base64 data URL: {url[:60]!r}")
                out.append((head[5:], base64.b64decode(data, validate=True)))
            elif part.get("type") == "image":
                source = part.get("source") or {}
                if source.get("type") != "base64" or not source.get("media_type"):
                    raise ValueError("an image block needs a base64 source with a media_type")
                out.append((source["media_type"], base64.b64decode(source["data"], validate=True)))
    return out


def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list):
        raise ValueError("'messages' must be a list")
    out: list[dict[str, str]] = []
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f"each message needs a 'role': {m!r:.80}")
        out.append({"role": m["role"], "content": _flatten(m.get("content"))})
    return out


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _zero_usage() -> dict[str, Any]:
    return {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "responses": 0}


def _pieces(text: str) -> Iterator[str]:
    """Split a reply into stream deltas: several for short texts, at most ~64 for long."""
    size = max(16, -(-len(text) // 64))
    for i in range(0, len(text), size):
        yield text[i : i + size]


class _Drop(Exception):
    """Close the connection without answering."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen() backlog: bursts of hundreds of connects must not stall
    allow_reuse_address = True
    fake: FakeLMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr by default; a client hanging up is normal.
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        self.fake._record_error(f"handler error: {type(exc).__name__}: {exc}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    disable_nagle_algorithm = True  # small responses must not wait ~40 ms for an ACK
    wbufsize = 1 << 16  # headers and body leave in one send() at the flush after each request
    server_version = "recursa-fake-lm/1"
    sys_version = ""
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence: one stderr line per request would dominate a benchmark."""

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    # -- plumbing ------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _send_error(
        self,
        wire: Wire,
        status: int,
        message: str,
        *,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        if body is None and wire == "gemini":
            self._send_json(status, gemini_error(status, message, retry_after))
            return
        if body is None and wire == "bedrock":
            self._send_json(status, *bedrock_error(status, message))
            return
        if body is None:
            if wire == "anthropic":
                kind = "rate_limit_error" if status == 429 else "api_error"
                body = {"type": "error", "error": {"type": kind, "message": message}}
            else:
                kind = "rate_limit_exceeded" if status == 429 else "server_error"
                if status < 500 and status != 429:
                    kind = "invalid_request_error"
                body = {"error": {"message": message, "type": kind, "code": None}}
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = _format_seconds(retry_after)
            headers["retry-after-ms"] = str(round(retry_after * 1000))
        self._send_json(status, body, headers)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- endpoints -----------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "recursa-testing"}
                for m in self.server.fake.models
            ]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_error("openai", 404, f"no such endpoint: GET {self.path}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body = self._read_body()
        if path == "/v1/chat/completions":
            wire: Wire = "openai"
        elif path == "/v1/messages":
            wire = "anthropic"
        elif GEMINI_PATH.match(path):
            wire = "gemini"
        elif AZURE_PATH.match(path):
            wire = "azure"
        elif path == "/v1/responses":
            wire = "responses"
        elif BEDROCK_PATH.match(path):
            wire = "bedrock"
        else:
            self._send_error("openai", 404, f"no such endpoint: POST {self.path}")
            return
        fake = self.server.fake
        refused = self._refuse_auth(wire)
        if refused:
            fake._record_error(f"bad request: {refused[1]}")
            self._send_error(wire, *refused)
            return
        try:
            request = self._parse(wire, body)
        except ValueError as exc:
            fake._record_error(f"bad request: {exc}")
            self._send_error(wire, 400, str(exc))
            return
        try:
            outcome = fake._handle(request)
        except _Drop:
            self._drop()
            return
        if isinstance(outcome, tuple):  # (status, message, retry_after) from injection
            status, message, retry_after = outcome
            self._send_error(wire, status, message, retry_after=retry_after)
            return
        reply = outcome
        if reply.status is not None and reply.status >= 400:
            self._send_error(
                wire,
                reply.status,
                reply.error_message,
                body=reply.error_body if isinstance(reply.error_body, dict) else None,
                retry_after=reply.retry_after,
            )
            return
        cached = fake._account(request, reply)
        if wire in ("openai", "azure"):
            self._answer_openai(request, reply, cached[0])
        elif wire == "gemini":
            inp, out = usage_of(request, reply)
            self._send_json(200, gemini_answer(request.model, reply, inp, out))
        elif wire == "responses":
            inp, out = usage_of(request, reply)
            self._send_json(200, responses_answer(request.model, reply, inp, out, cached[0]))
        elif wire == "bedrock":
            self._send_json(200, bedrock_answer(reply, *usage_of(request, reply), *cached))
        else:
            self._answer_anthropic(request, reply, cached)

    def _refuse_auth(self, wire: Wire) -> tuple[int, str] | None:
        """Gemini wants its key, Azure a key or token and an api-version, as the real ones."""
        query = self.path.partition("?")[2]
        if wire == "gemini" and not self.headers.get("x-goog-api-key"):
            return 403, "Method doesn't allow unregistered callers: pass an API key"
        if wire == "bedrock" and (problem := bedrock_auth_problem(self.headers)):
            return 403, problem
        if wire == "azure":
            if not (self.headers.get("api-key") or self.headers.get("authorization")):
                return 401, "Access denied due to missing subscription key."
            if "api-version=" not in query:
                return 404, "Resource not found: the api-version query parameter is required"
        return None

    def _parse(self, wire: Wire, raw: bytes) -> LMRequest:
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise ValueError(f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        path = self.path.split("?", 1)[0].rstrip("/")
        if wire == "gemini":
            config = body.get("generationConfig") or {}
            limit = config.get("maxOutputTokens") if isinstance(config, dict) else None
            return LMRequest(
                messages=gemini_messages(body),
                model=GEMINI_PATH.match(path).group(1),  # type: ignore[union-attr]
                max_tokens=limit if isinstance(limit, int) else None,
                wire=wire,
                temperature=config.get("temperature") if isinstance(config, dict) else None,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
        sent = body
        if wire == "bedrock":
            config = body.get("inferenceConfig") or {}
            limit = config.get("maxTokens") if isinstance(config, dict) else None
            model = BEDROCK_PATH.match(path).group(1)  # type: ignore[union-attr]
            return LMRequest(
                messages=bedrock_messages(body),
                model=urllib.parse.unquote(model),
                max_tokens=limit if isinstance(limit, int) else None,
                wire=wire,
                temperature=config.get("temperature") if isinstance(config, dict) else None,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
        if wire == "responses":
            limit = body.get("max_output_tokens")
            return LMRequest(
                messages=responses_messages(body),
                model=str(body.get("model") or ""),
                max_tokens=limit if isinstance(limit, int) else None,
                wire=wire,
                temperature=body.get("temperature"),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
        if wire == "azure":  # the deployment in the path names the model
            body = {**body, "model": AZURE_PATH.match(path).group(1)}  # type: ignore[union-attr]
        messages = _messages(body.get("messages"))
        if wire == "anthropic":
            if not self.headers.get("anthropic-version"):
                raise ValueError("missing required header: anthropic-version")
            if not isinstance(body.get("max_tokens"), int):
                raise ValueError("max_tokens: field required")
            system = body.get("system")
            if system:
                messages.insert(0, {"role": "system", "content": _flatten(system)})
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise ValueError("model: field required")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        return LMRequest(
            messages=messages,
            model=body["model"],
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            wire=wire,
            temperature=body.get("temperature"),
            stream=bool(body.get("stream")),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=sent,
            images=_images(body.get("messages")),
        )

    def _answer_openai(self, request: LMRequest, reply: Reply, cached: int = 0) -> None:
        inp, out = usage_of(request, reply)
        usage: dict[str, Any] = {
            "prompt_tokens": inp,
            "completion_tokens": out,
            "total_tokens": inp + out,
        }
        if cached:  # the automatic cache served part of the prompt
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        if reply.cost_usd is not None:
            usage["cost"] = reply.cost_usd  # where OpenRouter reports it
        rid = f"chatcmpl-fake-{self.server.fake._next_id()}"
        created = int(time.time())
        if not request.stream:
            self._send_json(
                200,
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": request.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.text},
                            "finish_reason": reply.finish_reason,
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                },
            )
            return

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": piece}, None) for piece in _pieces(reply.text)]
        events.append(chunk({}, reply.finish_reason))
        options = request.body.get("stream_options") or {}
        if isinstance(options, dict) and options.get("include_usage"):
            last = chunk({}, None)
            last["choices"] = []
            last["usage"] = usage
            events.append(last)
        lines = [f"data: {json.dumps(e)}\n\n" for e in events]
        lines.append("data: [DONE]\n\n")
        self._send(200, "".join(lines).encode(), "text/event-stream", {"Cache-Control": "no-cache"})

    def _answer_anthropic(self, request: LMRequest, reply: Reply, cached: tuple[int, int]) -> None:
        inp, out = usage_of(request, reply)
        read, written = cached
        usage = {
            "input_tokens": inp - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }
        rid = f"msg_fake_{self.server.fake._next_id()}"
        stop = _ANTHROPIC_STOP.get(reply.finish_reason, reply.finish_reason)
        if not request.stream:
            self._send_json(
                200,
                {
                    "id": rid,
                    "type": "message",
                    "role": "assistant",
                    "model": request.model,
                    "content": [{"type": "text", "text": reply.text}],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {**usage, "output_tokens": out},
                },
            )
            return
        start: dict[str, Any] = {
            "id": rid,
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 0},
        }
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ("ping", {"type": "ping"}),
        ]
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
            for piece in _pieces(reply.text)
        ]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": out},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        text = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
        self._send(200, text.encode(), "text/event-stream", {"Cache-Control": "no-cache"})


class FakeLMServer:
    """OpenAI- and Anthropic-compatible server on a real socket, answered by `responder`.

    Each LM request is recorded (in arrival order, failed and dropped ones included), then
    the thread sleeps `latency` seconds (so concurrent requests overlap), then: the first
    `drop_first` requests get their connection closed without a response; the next
    `fail_first` get HTTP `fail_status` (with `Retry-After` when `retry_after` is set);
    only then is the responder consulted. A responder that raises gives HTTP 500 with the
    exception's text, also kept in `errors`. `usage` and `by_model` total what successful
    responses REPORTED (cost only where the OpenAI wire reports it, as `usage.cost`).
    On the Anthropic and Bedrock wires, cache breakpoints are honoured as the APIs document,
    and on the OpenAI ones the automatic prefix cache is played
    (`prompt_cache.PromptCache`, prefixes of at least `prompt_cache_min_tokens`); its
    `input_tokens` here count the whole prompt, cached parts included.
    """

    def __init__(
        self,
        responder: Responder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        fail_first: int = 0,
        fail_status: int = 500,
        retry_after: float | None = None,
        drop_first: int = 0,
        models: Sequence[str] = ("fake-model",),
        prompt_cache_min_tokens: int = MIN_CACHEABLE_TOKENS,
    ) -> None:
        self.responder = responder
        self.prompt_cache = PromptCache(prompt_cache_min_tokens)
        self.host = host
        self.latency = latency
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.drop_first = drop_first
        self.models = list(models)
        self._want_port = port
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._ids = 0
        self._clear()

    def _clear(self) -> None:
        self._requests: list[LMRequest] = []
        self._errors: list[str] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._usage = _zero_usage()
        self._by_model: dict[str, dict[str, Any]] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeLMServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("FakeLMServer already started")
        httpd = _HTTPServer((self.host, self._want_port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeLMServer:{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close the socket and hang up open keep-alive connections."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (port=0 picks a free one)."""
        if self._httpd is None:
            raise RuntimeError("FakeLMServer is not running: call start() or use `with`")
        return int(self._httpd.server_address[1])

    @property
    def base(self) -> str:
        """`http://HOST:PORT`, the base URL for Anthropic clients."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """`http://HOST:PORT/v1`, the base URL for OpenAI clients."""
        return f"{self.base}/v1"

    # -- what it saw ---------------------------------------------------------------------

    @property
    def requests(self) -> list[LMRequest]:
        """Every LM request received, in arrival order, failed and dropped ones included."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def in_flight(self) -> int:
        """LM requests being handled right now."""
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most LM requests ever handled at once: what concurrency limits are tested by."""
        with self._lock:
            return self._max_in_flight

    @property
    def usage(self) -> dict[str, Any]:
        """Totals reported in successful responses: input_tokens, output_tokens, cost_usd,
        and `responses` (how many successful responses)."""
        with self._lock:
            return dict(self._usage)

    @property
    def by_model(self) -> dict[str, dict[str, Any]]:
        """`usage`, split by the model named in the request."""
        with self._lock:
            return {m: dict(u) for m, u in self._by_model.items()}

    @property
    def errors(self) -> list[str]:
        """Responder exceptions and malformed requests, as text: a test can assert none."""
        with self._lock:
            return list(self._errors)

    def reset(self) -> None:
        """Forget requests, usage, errors, the in-flight maximum and the prompt cache.
        Injection restarts: `drop_first`/`fail_first` count from the next request again."""
        self.prompt_cache.clear()
        with self._lock:
            in_flight = self._in_flight
            self._clear()
            self._in_flight = self._max_in_flight = in_flight

    # -- called from handler threads -----------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _handle(self, request: LMRequest) -> Reply | tuple[int, str, float | None]:
        """Record, wait, inject faults, consult the responder. Raises `_Drop`."""
        with self._lock:
            index = len(self._requests)
            self._requests.append(request)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if self.latency > 0:
                time.sleep(self.latency)
            if index < self.drop_first:
                raise _Drop
            if index < self.drop_first + self.fail_first:
                return (
                    self.fail_status,
                    f"injected failure {index - self.drop_first + 1} of {self.fail_first}",
                    self.retry_after,
                )
            try:
                reply = within_max_tokens(request, as_reply(self.responder(request)))
            except Exception as exc:
                text = f"responder raised {type(exc).__name__}: {exc}"
                self._record_error(text)
                return (500, text, None)
            if reply.delay > 0:
                time.sleep(reply.delay)
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1

    def _account(self, request: LMRequest, reply: Reply) -> tuple[int, int]:
        """Total what this reply reports; returns its prompt-cache (read, written) tokens."""
        inp, out = usage_of(request, reply)
        if request.wire in ("anthropic", "bedrock"):
            cached = self.prompt_cache.split(request, inp)
        elif request.wire in ("openai", "azure", "responses"):
            cached = (self.prompt_cache.automatic(request, inp), 0)
        else:
            cached = (0, 0)
        with self._lock:
            model = self._by_model.setdefault(request.model, _zero_usage())
            for totals in (self._usage, model):
                totals["input_tokens"] += inp
                totals["output_tokens"] += out
                totals["responses"] += 1
                if reply.cost_usd is not None and request.wire == "openai":
                    totals["cost_usd"] += reply.cost_usd
        return cached
