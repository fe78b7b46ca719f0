"""Scripted models: deterministic answers for tests, over HTTP or in process.

No real model is reachable in tests, so a *responder* decides what the "model" says to each
request. The same responder drives `FakeLMServer` (real sockets) and `ScriptedLM.complete`
(no sockets), and both report token counts from `count_tokens`, so a test can compute the
usage it expects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from recursa.errors import LMStatusError
from recursa.lm.base import Completion, Message

__all__ = [
    "PER_MESSAGE_TOKENS",
    "LMRequest",
    "Reply",
    "Responder",
    "ScriptedLM",
    "count_message_tokens",
    "count_tokens",
]

PER_MESSAGE_TOKENS = 4
"""Overhead charged per message, like real chat formats (role markers and separators)."""


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: one token per 4 characters, rounded up.

    Empty text is 0 tokens; any other text at least 1.
    """
    if not text:
        return 0
    return max(1, math.ceil(len(text) / 4))


def count_message_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """Input tokens of a request: sum of `count_tokens(content)` plus 4 per message.

    On the Anthropic wire the top-level `system` text counts as one more message.
    """
    return sum(count_tokens(m.get("content", "")) + PER_MESSAGE_TOKENS for m in messages)


Wire = Literal["openai", "anthropic", "gemini", "azure", "responses", "bedrock"]


@dataclass(frozen=True)
class LMRequest:
    """One request as the model sees it, whichever wire format carried it.

    `messages` is normalised: content flattened to text, and on the Anthropic wire the
    top-level `system` becomes a leading system message, so `is_root` means the same on both.
    """

    messages: list[dict[str, str]]
    model: str
    max_tokens: int | None
    wire: Wire
    temperature: float | None = None
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """Request headers, lower-cased names (empty for in-process calls)."""
    body: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The raw JSON body as received (empty for in-process calls)."""
    images: list[tuple[str, bytes]] = field(default_factory=list, compare=False, repr=False)
    """The images the request carried, in order, as (media type, decoded bytes): OpenAI's
    `image_url` data-URL parts and Anthropic's base64 `image` blocks (what a vision model
    would see; its text stays in `messages`)."""

    @property
    def is_root(self) -> bool:
        """True for an RLM turn (root or child): those carry the system prompt.

        A plain sub-query is the user message alone, with no system message (contract).
        """
        return any(m.get("role") == "system" for m in self.messages)

    @property
    def turn(self) -> int:
        """Assistant messages already in the history: 0 for an RLM's first turn."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    @property
    def last_user(self) -> str:
        """Content of the last user message ("" when there is none)."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                return m.get("content", "")
        return ""

    @property
    def system(self) -> str:
        """The system text ("" for a plain sub-query)."""
        return "\n".join(m.get("content", "") for m in self.messages if m.get("role") == "system")

    @property
    def input_tokens(self) -> int:
        """What the fakes report as input tokens for this request."""
        return count_message_tokens(self.messages)


@dataclass
class Reply:
    """A scripted answer, with optional overrides of what the server reports or does.

    With `status` set, the server answers that HTTP error instead (and `ScriptedLM.complete`
    raises `LMStatusError`): `error_body` is the message (str) or the whole JSON body (dict).
    """

    text: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    status: int | None = None
    error_body: str | dict[str, Any] | None = None
    retry_after: float | None = None
    delay: float = 0.0
    """Seconds to wait before answering (on top of the server's `latency`)."""
    finish_reason: str = "stop"
    """OpenAI spelling; mapped to Anthropic's (`end_turn`, `max_tokens`) on that wire."""

    @property
    def error_message(self) -> str:
        """Human-readable text of the error (for `LMStatusError` and the wire body)."""
        if isinstance(self.error_body, str):
            return self.error_body
        if isinstance(self.error_body, dict):
            err = self.error_body.get("error")
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return err["message"]
            return str(self.error_body)
        return f"scripted error (HTTP {self.status})"


Responder = Callable[[LMRequest], "str | Reply"]
"""Decides the answer to one request. Called from server threads: must be thread-safe."""


def as_reply(value: str | Reply) -> Reply:
    """Normalise a responder's return value."""
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return Reply(value)
    raise TypeError(f"a responder must return str or Reply, not {type(value).__name__}")


def within_max_tokens(request: LMRequest, reply: Reply) -> Reply:
    """Cut a reply to the request's max_tokens, as a real server does (finish_reason
    "length"), so that output caps sent by the ledger are honoured in tests too."""
    cap = request.max_tokens
    if cap is None or reply.status is not None or reply.output_tokens is not None:
        return reply
    if count_tokens(reply.text) <= cap:
        return reply
    return dataclasses.replace(reply, text=reply.text[: cap * 4], finish_reason="length")


def usage_of(request: LMRequest, reply: Reply) -> tuple[int, int]:
    """(input_tokens, output_tokens) reported for `reply`: the overrides, else the counts."""
    inp = reply.input_tokens if reply.input_tokens is not None else request.input_tokens
    out = reply.output_tokens if reply.output_tokens is not None else count_tokens(reply.text)
    return inp, out


def _error(message: str) -> Reply:
    # 400: a mistake in the script is not worth retrying; it should fail the test fast.
    return Reply(status=400, error_body=f"ScriptedLM: {message}")


class ScriptedLM:
    """A responder (and an in-process `LMClient`) that answers from a script.

    Root requests (RLM turns, which carry a system message): with a list, turn `k` gets
    `root[k]`, computed from the request's history alone, so concurrent child RLMs each walk
    their own copy of the sequence; past the end the last item repeats. With a callable, it
    decides. Plain sub-queries: with a callable, it decides; with a list, items are handed
    out in arrival order (thread-safe) and running out is an error reply; with None, every
    sub-query is an error reply. Error replies are HTTP 400, so no gateway retries them.
    """

    def __init__(
        self,
        root: Sequence[str | Reply] | Callable[[LMRequest], str | Reply] | None = None,
        sub: Callable[[LMRequest], str | Reply] | Sequence[str | Reply] | None = None,
        *,
        model: str = "scripted",
    ) -> None:
        if isinstance(root, str) or isinstance(sub, str):
            raise TypeError("root and sub take a list of answers or a callable, not one str")
        self._root = list(root) if root is not None and not callable(root) else root
        self._sub = list(sub) if sub is not None and not callable(sub) else sub
        self.model = model
        self._lock = threading.Lock()
        self._sub_next = 0
        self._requests: list[LMRequest] = []

    @property
    def requests(self) -> list[LMRequest]:
        """Every request this script answered, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def sub_served(self) -> int:
        """How many items of a `sub` list have been handed out."""
        with self._lock:
            return self._sub_next

    def __call__(self, request: LMRequest) -> str | Reply:
        with self._lock:
            self._requests.append(request)
        if request.is_root:
            return self._answer_root(request)
        return self._answer_sub(request)

    def _answer_root(self, request: LMRequest) -> str | Reply:
        root = self._root
        if root is None:
            return _error("got a root request (with a system message) but no root script")
        if callable(root):
            return root(request)
        if not root:
            return _error("the root script is an empty list")
        return root[min(request.turn, len(root) - 1)]

    def _answer_sub(self, request: LMRequest) -> str | Reply:
        sub = self._sub
        if sub is None:
            return _error(
                "got a plain sub-query (no system message) but no sub script; "
                f"prompt starts {request.last_user[:80]!r}"
            )
        if callable(sub):
            return sub(request)
        with self._lock:
            index = self._sub_next
            self._sub_next += 1
        if index >= len(sub):
            return _error(f"sub script exhausted: sub-query #{index + 1}, {len(sub)} scripted")
        return sub[index]

    # -- in-process LMClient -------------------------------------------------------------

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        """Answer without any HTTP, reporting the same usage `FakeLMServer` would.

        An error reply (or a responder that raises) becomes `LMStatusError`, as a real
        client would raise for the server's HTTP error. Requests are recorded with wire
        "openai".
        """
        request = LMRequest(
            messages=[{"role": m["role"], "content": m.get("content", "")} for m in messages],
            model=model,
            max_tokens=max_tokens,
            wire="openai",
            temperature=temperature,
        )
        try:
            reply = within_max_tokens(request, as_reply(self(request)))
        except Exception as exc:
            raise LMStatusError(500, f"responder raised {type(exc).__name__}: {exc}") from exc
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.status is not None and reply.status >= 400:
            raise LMStatusError(reply.status, reply.error_message, retry_after=reply.retry_after)
        inp, out = usage_of(request, reply)
        return Completion(
            text=reply.text,
            input_tokens=inp,
            output_tokens=out,
            cost_usd=reply.cost_usd,
            model=model,
            finish_reason=reply.finish_reason,
        )

    async def aclose(self) -> None:
        """Nothing to release; present for the `LMClient` protocol."""
