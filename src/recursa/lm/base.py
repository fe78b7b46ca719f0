"""The one small protocol every LM client speaks, and what a completion carries back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

ContentPart = dict[str, str]
"""One part of a message with images: {"type": "text", "text": ...} or {"type": "image",
"media_type": "image/png", "data": BASE64, "path": its context path, "sha256": ...}."""

Message = dict[str, Any]
"""A chat message: {"role": "system"|"user"|"assistant", "content": str}; a sub-query
with images has a list of `ContentPart`s as its content instead, which each client turns
into its provider's image format (text-only messages stay plain strings)."""


def text_of(content: Any) -> str:
    """The text of a message's content: the string itself, or its text parts joined."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    return str(content or "")


def images_of(messages: list[Message]) -> list[ContentPart]:
    """The image parts of a request's messages, in order."""
    return [
        part
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if part.get("type") == "image"
    ]


@dataclass(frozen=True, slots=True)
class Completion:
    """One model reply, with the usage the server reported for it."""

    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = None
    """Cost reported by the provider itself (OpenRouter does), else None."""
    model: str = ""
    finish_reason: str | None = None
    usage_problem: str | None = None
    """Why the reported usage cannot be trusted (a field missing, negative, NaN...), if so."""
    cache_read_tokens: int = 0
    """Of `input_tokens`, those the provider served from its prompt cache (priced lower)."""
    cache_write_tokens: int = 0
    """Of `input_tokens`, those written to the provider's prompt cache (Anthropic prices
    these above plain input)."""
    reasoning_tokens: int = 0
    """Of `output_tokens`, those the model spent reasoning (billed as output, not shown)."""
    usage_missing: bool = False
    """The reply carried no usage at all (some local servers send none): under a token or
    cost limit the ledger charges the request's reserved bound, which it cannot exceed."""


@runtime_checkable
class LMClient(Protocol):
    """A transport to one server. `complete` is ONE attempt: retries live in the gateway,
    because every attempt must be reserved against the run's budget before it is sent."""

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion: ...

    async def aclose(self) -> None: ...
