"""A client for servers that speak OpenAI chat completions (OpenAI, vLLM, Ollama, OpenRouter...).

One core builds requests and reads responses; two thin transports (async and sync httpx
clients) carry them. Each call is exactly ONE HTTP request: retries belong to the caller,
which must reserve every attempt against the run's budget before sending it.

The shared machinery (`BaseHTTPClient`, error mapping, Retry-After parsing) lives here too
and is reused by the Anthropic client.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import math
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import certifi
import httpx

from recursa.errors import ConfigError, LMConnectionError, LMResponseError, LMStatusError
from recursa.lm.base import Completion, Message

__all__ = [
    "BaseHTTPClient",
    "OpenAICompatClient",
    "UsageReader",
    "WireRequest",
    "parse_retry_after",
]

_USER_AGENT = "recursa/0.1"
DEFAULT_DEADLINE = 600.0
"""Seconds one attempt may take in all, however the server paces its bytes."""
DEFAULT_MAX_RESPONSE_BYTES = 8 << 20
"""The most bytes of one answer that are read (decoded): a longer one is refused."""
_ERROR_BODY_BYTES = 64 << 10
"""Of an error answer only this much is read: its message is near the start."""
_EXCERPT_CHARS = 240
_WS = re.compile(r"\s+")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date.

    Returns None for a missing or unreadable header so the caller falls back to backoff.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def one_line(text: str, limit: int = _EXCERPT_CHARS) -> str:
    """Collapse whitespace and cut, so a message stays on one readable line."""
    text = _WS.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _public_url(url: str) -> str:
    """The URL without user:password, for messages (a base URL may carry credentials)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return url
    if parsed.userinfo:
        parsed = parsed.copy_with(username=None, password=None)
    return str(parsed)


def normalize_base_url(base_url: str) -> str:
    """Check that a base URL is usable and strip trailing slashes.

    A bad URL is a configuration mistake, so it fails here with ConfigError (exit code 2)
    instead of turning into a retried connection error on every request.
    """
    url = (base_url or "").strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"invalid base URL {url!r}: {one_line(str(exc))}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"invalid base URL {_public_url(url)!r}: expected http(s)://HOST[:PORT][/PATH]"
        )
    return url


def _error_excerpt(body: bytes, content_type: str) -> str:
    """The server's own error message when the body is JSON, else the start of the body."""
    text = body[:20_000].decode("utf-8", errors="replace")
    if "json" in content_type or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
        message = _find_message(data)
        if message:
            return message
    if "html" in content_type or text.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
        return title.group(1) if title else "(HTML error page)"
    return text


def _find_message(data: Any) -> str | None:
    """Dig out an error message from the usual JSON shapes (OpenAI, Anthropic, Ollama...)."""
    if isinstance(data, str):
        return data
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if isinstance(err, str):
        return err
    if isinstance(err, dict):
        msg = err.get("message")
        if isinstance(msg, str):
            kind = err.get("type")
            return f"{kind}: {msg}" if isinstance(kind, str) and kind not in msg else msg
    for key in ("message", "detail"):
        msg = data.get(key)
        if isinstance(msg, str):
            return msg
        if isinstance(msg, list | dict):
            return json.dumps(msg)[:_EXCERPT_CHARS]
    return None


MAX_REPORTED_TOKENS = 1 << 40
"""More tokens than any request could hold: a count above it is not a count."""


def _number(value: Any) -> bool:
    """A finite int or float (a bool is not a count)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


class UsageReader:
    """Reads the fields of a reply's `usage`, noting the first one a well-behaved server
    would not send (missing, negative, NaN, 1e308, not a number). An odd field counts as 0
    here; the ledger decides what that means for a run with a token or cost limit."""

    def __init__(self, usage: Any) -> None:
        self.usage: dict[str, Any] = usage if isinstance(usage, dict) else {}
        self.missing = usage is None
        """No `usage` at all: not an odd report, an absent one (charged at its bound)."""
        self.problem: str | None = None
        if not self.missing and not isinstance(usage, dict):
            self.problem = f"usage is {one_line(repr(usage), 40)}"

    def _odd(self, text: str) -> None:
        if self.problem is None:
            self.problem = text

    def tokens(self, key: str, *, required: bool = True) -> int:
        """A token count; a missing optional field is 0 without complaint."""
        if key not in self.usage:
            if required and not self.missing:
                self._odd(f"usage.{key} is missing")
            return 0
        value = self.usage[key]
        if _number(value) and 0 <= value <= MAX_REPORTED_TOKENS and value == int(value):
            return int(value)
        self._odd(f"usage.{key} is {one_line(repr(value), 40)}")
        return 0

    def nested_tokens(self, parent: str, key: str) -> int:
        """An optional count inside an optional object (`prompt_tokens_details.cached_tokens`)."""
        inner = self.usage.get(parent)
        if inner is None:
            return 0
        reader = UsageReader(inner)
        value = reader.tokens(key, required=False)
        if reader.problem is not None:
            self._odd(reader.problem.replace("usage.", f"usage.{parent}.", 1))
        return value

    def cost(self, key: str = "cost") -> float | None:
        """A cost in USD that the provider reports itself (OpenRouter's `usage.cost`)."""
        value = self.usage.get(key)
        if value is None:
            return None
        if _number(value) and 0 <= value < 1e9:
            return float(value)
        self._odd(f"usage.{key} is {one_line(repr(value), 40)}")
        return None


@dataclass(frozen=True, slots=True)
class WireRequest:
    """What one call sends: the full URL and the JSON body."""

    url: str
    body: dict[str, Any]


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context per process: loading the trust store costs 15-45 ms, and httpx would
    otherwise do it for every client (every run), even for plain-http local servers."""
    cafile = os.environ.get("SSL_CERT_FILE") or certifi.where()
    capath = os.environ.get("SSL_CERT_DIR")
    return ssl.create_default_context(cafile=cafile, capath=capath)


class BaseHTTPClient:
    """Shared core of the HTTP LM clients: pooled transports, one request, error mapping.

    Subclasses supply `_build` (request body), `_parse` (JSON -> Completion) and
    `_auth_headers`. The API key goes only into headers and is scrubbed from messages.
    """

    wire: ClassVar[str] = ""
    takes_images: ClassVar[bool] = False
    """Whether `_build` sends a message's image parts (in this provider's format)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 120.0,
        headers: dict[str, str] | None = None,
        max_connections: int = 64,
        deadline: float = DEFAULT_DEADLINE,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        if not deadline > 0 or not math.isfinite(deadline):
            raise ConfigError(f"deadline must be a positive number of seconds, got {deadline}")
        if max_response_bytes < 1:
            raise ConfigError(f"max_response_bytes must be at least 1, got {max_response_bytes}")
        if max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, got {max_connections}")
        self.base_url = normalize_base_url(base_url)
        self.timeout = float(timeout)
        self.deadline = float(deadline)
        """The whole attempt (connect, send, every byte of the answer) ends by then: a
        server trickling bytes resets httpx's per-read timeout forever, not this one."""
        self.max_response_bytes = max_response_bytes
        self.max_connections = max_connections
        self._secret = api_key or None
        merged = {"user-agent": _USER_AGENT, "accept": "application/json"}
        merged.update({k.lower(): v for k, v in (headers or {}).items()})
        if api_key:
            merged.update(self._auth_headers(api_key))
        self._headers = merged
        self._async_client: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._sync_client: httpx.Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # -- the pieces a wire format provides ---------------------------------------------

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        raise NotImplementedError

    def _build(
        self,
        messages: list[Message],
        model: str,
        max_tokens: int | None,
        temperature: float | None,
    ) -> WireRequest:
        raise NotImplementedError

    def _parse(self, data: Any, model: str) -> Completion:
        raise NotImplementedError

    # -- transports ----------------------------------------------------------------------

    def _httpx_options(self) -> dict[str, Any]:
        # Pool waits are bounded by the caller's own concurrency limit, not by a timer:
        # a request queued behind busy connections has not been sent yet.
        return {
            "headers": self._headers,
            "timeout": httpx.Timeout(self.timeout, connect=min(self.timeout, 30.0), pool=None),
            "limits": httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
                keepalive_expiry=30.0,
            ),
            "follow_redirects": False,
            "verify": shared_ssl_context(),
        }

    def _get_async(self) -> httpx.AsyncClient:
        # An AsyncClient's pooled sockets belong to one event loop; a caller that runs
        # several loops in turn (asyncio.run per query) gets a fresh pool for each.
        loop = asyncio.get_running_loop()
        if self._async_client is None or self._async_loop is not loop:
            self._async_client = httpx.AsyncClient(**self._httpx_options())
            self._async_loop = loop
        return self._async_client

    def _get_sync(self) -> httpx.Client:
        with self._lock:
            if self._sync_client is None:
                self._sync_client = httpx.Client(**self._httpx_options())
            return self._sync_client

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        """Send ONE request and return the completion, or raise an LMError subclass."""
        req = self._build(messages, model, max_tokens, temperature)
        try:
            async with asyncio.timeout(self.deadline):
                async with self._get_async().stream("POST", req.url, json=req.body) as resp:
                    body = bytearray()
                    self._check_length(req.url, resp)
                    async for chunk in resp.aiter_bytes():
                        if self._take(req.url, resp, body, chunk):
                            break
        except TimeoutError:
            raise self._deadline_error(req.url) from None
        except httpx.HTTPError as exc:
            raise self._transport_error(req.url, exc) from exc
        return self._handle(req.url, resp, bytes(body), model)

    def complete_sync(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        """Blocking twin of `complete`: same request, same parsing, same errors. The
        deadline is checked between reads, each of which httpx bounds by `timeout`."""
        req = self._build(messages, model, max_tokens, temperature)
        ends = time.monotonic() + self.deadline
        try:
            with self._get_sync().stream("POST", req.url, json=req.body) as resp:
                body = bytearray()
                self._check_length(req.url, resp)
                for chunk in resp.iter_bytes():
                    if self._take(req.url, resp, body, chunk):
                        break
                    if time.monotonic() > ends:
                        raise self._deadline_error(req.url)
        except httpx.HTTPError as exc:
            raise self._transport_error(req.url, exc) from exc
        return self._handle(req.url, resp, bytes(body), model)

    async def aclose(self) -> None:
        """Release both connection pools."""
        client, loop = self._async_client, self._async_loop
        self._async_client = self._async_loop = None
        if client is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:  # pragma: no cover - aclose is always awaited
                running = None
            if running is loop:
                await client.aclose()
        self.close()

    def close(self) -> None:
        """Release the sync pool (an async pool needs `aclose` on its own loop)."""
        with self._lock:
            client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()

    async def __aenter__(self) -> BaseHTTPClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> BaseHTTPClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the shared core -----------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Never let the API key through into a message, even if a server echoes it."""
        if self._secret and len(self._secret) >= 4:
            text = text.replace(self._secret, "***")
        return text

    def _transport_error(self, url: str, exc: httpx.HTTPError) -> Exception:
        where = _public_url(url)
        if isinstance(exc, httpx.DecodingError):
            return LMResponseError(
                self._scrub(one_line(f"could not decode the response from {where}: {exc}"))
            )
        if isinstance(exc, httpx.TimeoutException):
            phase = {
                httpx.ConnectTimeout: "connecting",
                httpx.ReadTimeout: "waiting for the answer",
                httpx.WriteTimeout: "sending the request",
            }.get(type(exc), "the request")
            why = f"timed out {phase} after {self.timeout:g}s"
        else:
            detail = str(exc) or type(exc).__name__
            why = f"{type(exc).__name__}: {detail}"
        return LMConnectionError(self._scrub(one_line(f"could not reach {where}: {why}", 400)))

    def _check_length(self, url: str, resp: httpx.Response) -> None:
        """Refuse before reading when the server declares an answer over the cap."""
        declared = resp.headers.get("content-length", "")
        plain = "content-encoding" not in resp.headers and resp.is_success
        if plain and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise self._too_big(url)

    def _take(self, url: str, resp: httpx.Response, body: bytearray, chunk: bytes) -> bool:
        """Add a chunk of the answer; True once enough is read. A success answer past the
        cap is refused; of an error answer only the start is kept, for its message."""
        if not resp.is_success:
            body += chunk[: _ERROR_BODY_BYTES - len(body)]
            return len(body) >= _ERROR_BODY_BYTES
        if len(body) + len(chunk) > self.max_response_bytes:
            raise self._too_big(url)
        body += chunk
        return False

    def _too_big(self, url: str) -> LMResponseError:
        return LMResponseError(
            f"{_public_url(url)} answered more than {self.max_response_bytes:,} bytes: "
            "the answer was refused"
        )

    def _deadline_error(self, url: str) -> LMConnectionError:
        return LMConnectionError(
            f"could not reach {_public_url(url)}: no complete answer within the "
            f"{self.deadline:g}s deadline of one request"
        )

    def _handle(self, url: str, resp: httpx.Response, body: bytes, model: str) -> Completion:
        if not 200 <= resp.status_code < 300:
            raise self._status_error(url, resp, body)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            why = "is nested too deeply" if isinstance(exc, RecursionError) else "is not JSON"
            excerpt = one_line(body[:200].decode("utf-8", errors="replace"), 120)
            raise LMResponseError(
                self._scrub(
                    f"{_public_url(url)} answered HTTP {resp.status_code} with a body "
                    f"that {why}: {excerpt!r}"
                )
            ) from None
        try:
            return self._parse(data, model)
        except LMStatusError as exc:
            message = self._scrub(f"{_public_url(url)}: {exc}")
            raise LMStatusError(exc.status, message, retry_after=exc.retry_after) from None
        except LMResponseError as exc:
            raise LMResponseError(self._scrub(f"{_public_url(url)}: {exc}")) from None
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as exc:
            # A field of the wrong type deep inside an otherwise valid answer.
            why = one_line(f"{type(exc).__name__}: {exc}", 160)
            raise LMResponseError(
                self._scrub(f"{_public_url(url)}: the answer could not be read ({why})")
            ) from None

    def _status_error(self, url: str, resp: httpx.Response, body: bytes) -> LMStatusError:
        status = resp.status_code
        headers = resp.headers
        retry_after = None
        ms = headers.get("retry-after-ms")
        if ms is not None:
            try:
                retry_after = max(0.0, float(ms) / 1000.0)
            except ValueError:
                retry_after = None
            if retry_after is not None and not math.isfinite(retry_after):
                retry_after = None
        if retry_after is None:
            retry_after = parse_retry_after(headers.get("retry-after"))
        if 300 <= status < 400:
            where = headers.get("location", "?")
            excerpt = f"redirected to {where}: check the base URL"
        else:
            excerpt = _error_excerpt(body, headers.get("content-type", "")) or "(no body)"
        message = f"HTTP {status} from {_public_url(url)}: {one_line(excerpt)}"
        if retry_after is not None:
            message += f" (retry after {retry_after:g}s)"
        return LMStatusError(status, self._scrub(one_line(message, 480)), retry_after=retry_after)


class OpenAICompatClient(BaseHTTPClient):
    """`LMClient` for any server that speaks OpenAI chat completions.

    `max_tokens_field`: the official OpenAI API wants `max_completion_tokens` (newer
    models refuse `max_tokens`), most other servers only know `max_tokens`; None picks by
    host.
    """

    wire: ClassVar[str] = "openai"
    takes_images: ClassVar[bool] = True

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 120.0,
        headers: dict[str, str] | None = None,
        max_connections: int = 64,
        max_tokens_field: str | None = None,
        deadline: float = DEFAULT_DEADLINE,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            headers=headers,
            max_connections=max_connections,
            deadline=deadline,
            max_response_bytes=max_response_bytes,
        )
        if max_tokens_field is None:
            official = httpx.URL(self.base_url).host == "api.openai.com"
            max_tokens_field = "max_completion_tokens" if official else "max_tokens"
        self.max_tokens_field = max_tokens_field
        self._url = f"{self.base_url}/chat/completions"

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def _build(
        self,
        messages: list[Message],
        model: str,
        max_tokens: int | None,
        temperature: float | None,
    ) -> WireRequest:
        body: dict[str, Any] = {
            "model": model,
            "messages": [
                {"role": m["role"], "content": openai_content(m["content"])} for m in messages
            ],
        }
        if max_tokens is not None:
            body[self.max_tokens_field] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        return WireRequest(self._url, body)

    def _parse(self, data: Any, model: str) -> Completion:
        return parse_openai_completion(data, model)


def openai_content(content: Any) -> Any:
    """A message's content on the OpenAI wire: a string as it is; parts as `text` and
    `image_url` parts, each image a base64 data URL."""
    if not isinstance(content, list):
        return content
    return [
        {"type": "text", "text": p["text"]}
        if p.get("type") == "text"
        else {
            "type": "image_url",
            "image_url": {"url": f"data:{p['media_type']};base64,{p['data']}"},
        }
        for p in content
    ]


def parse_openai_completion(data: Any, model: str) -> Completion:
    """Read a chat-completions JSON body; anything unusable raises LMResponseError."""
    if not isinstance(data, dict):
        raise LMResponseError(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not choices:
        # Some gateways (OpenRouter) answer 200 with an error object instead of choices.
        err = data.get("error")
        if err is not None:
            msg = one_line(_find_message(data) or json.dumps(err)[:_EXCERPT_CHARS])
            code = err.get("code") if isinstance(err, dict) else None
            if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
                raise LMStatusError(code, f"error {code} inside a 2xx answer: {msg}")
            raise LMResponseError(f"error inside a 2xx answer: {msg}")
        raise LMResponseError("the answer has no choices")
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise LMResponseError("the answer's choices are not a list of objects")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise LMResponseError("the answer's first choice has no message")
    content = message.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):  # content parts, as a few servers send
        text = "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    else:
        raise LMResponseError(f"the message content is a {type(content).__name__}, not text")
    usage = UsageReader(data.get("usage"))
    finish = choice.get("finish_reason")
    served = data.get("model")
    input_tokens = usage.tokens("prompt_tokens")
    # OpenAI caches long prompts' stable prefixes by itself and says how much it read back.
    cached = min(input_tokens, usage.nested_tokens("prompt_tokens_details", "cached_tokens"))
    output_tokens = usage.tokens("completion_tokens")
    reasoning = usage.nested_tokens("completion_tokens_details", "reasoning_tokens")
    return Completion(
        text=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=usage.cost(),
        model=served if isinstance(served, str) and served else model,
        finish_reason=finish if isinstance(finish, str) else None,
        usage_problem=usage.problem,
        cache_read_tokens=cached,
        reasoning_tokens=min(output_tokens, reasoning),
        usage_missing=usage.missing,
    )
