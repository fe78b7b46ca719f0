"""A client for the Anthropic Messages API, spoken natively (no SDK).

Same shape as the OpenAI-compatible client (one request per call, same errors, sync twin);
only the wire format differs: system prompt at the top level, strictly alternating roles,
`max_tokens` required.

Prompt caching: an RLM's conversation (a request with a system prompt) is re-sent whole every
turn, so it carries `cache_control` breakpoints on the system prompt and on its last two user
turns. The server then writes the prefix up to the newest turn and reads back the prefix the
previous turn wrote; reads cost a tenth of plain input. One-off sub-queries (no system
prompt) carry none: a cache write costs more than plain input and would never be read.
"""

from __future__ import annotations

from typing import Any, ClassVar

from recursa.errors import LMResponseError
from recursa.lm.base import Completion, ContentPart, Message, images_of, text_of
from recursa.lm.openai_compat import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RESPONSE_BYTES,
    BaseHTTPClient,
    UsageReader,
    WireRequest,
)

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "AnthropicClient",
    "anthropic_turns",
    "to_anthropic_messages",
    "with_cache_breakpoints",
]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 8192
"""The Messages API refuses a request without `max_tokens`; this is used when none is given."""

_EMPTY = "(empty)"
_EPHEMERAL = {"type": "ephemeral"}
CACHED_USER_TURNS = 2
"""User turns marked as cache breakpoints (with the system prompt: 3 of the 4 allowed)."""


def to_anthropic_messages(messages: list[Message]) -> tuple[str | None, list[dict[str, str]]]:
    """Split chat messages into Anthropic's `system` string and alternating turns.

    System messages are joined into one system prompt; consecutive messages of the same
    role are merged (the API wants user/assistant turns to alternate); any role other
    than assistant is sent as user. An empty turn would be refused, so it becomes "(empty)".
    Only text is kept: `anthropic_turns` adds the images.
    """
    system, turns, _ = _split(messages)
    return system, turns


def anthropic_turns(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """As `to_anthropic_messages`, with a turn's images as base64 `image` blocks before its
    text (a turn without images keeps its plain string content)."""
    system, turns, pictures = _split(messages)
    out: list[dict[str, Any]] = []
    for turn, images in zip(turns, pictures, strict=True):
        if not images:
            out.append(dict(turn))
            continue
        blocks: list[dict[str, Any]] = [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": p["media_type"], "data": p["data"]},
            }
            for p in images
        ]
        blocks.append({"type": "text", "text": turn["content"]})
        out.append({"role": turn["role"], "content": blocks})
    return system, out


def _split(
    messages: list[Message],
) -> tuple[str | None, list[dict[str, str]], list[list[ContentPart]]]:
    system_parts: list[str] = []
    turns: list[dict[str, str]] = []
    pictures: list[list[ContentPart]] = []
    for m in messages:
        role = m.get("role", "user")
        content = text_of(m.get("content"))
        images = images_of([m])
        if role == "system":
            if content:
                system_parts.append(content)
            continue
        role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            prev = turns[-1]["content"]
            turns[-1]["content"] = f"{prev}\n\n{content}" if prev and content else prev or content
            pictures[-1].extend(images)
        else:
            turns.append({"role": role, "content": content})
            pictures.append(images)
    for turn in turns:
        if not turn["content"].strip():
            turn["content"] = _EMPTY
    system = "\n\n".join(system_parts) if system_parts else None
    return system, turns, pictures


def with_cache_breakpoints(
    system: str, turns: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system prompt and turns as content blocks, with `cache_control` on the system
    prompt and the last `CACHED_USER_TURNS` user turns (the prefix the next turn re-sends)."""
    blocks = [{"type": "text", "text": system, "cache_control": dict(_EPHEMERAL)}]
    users = [i for i, turn in enumerate(turns) if turn["role"] == "user"]
    marked = set(users[-CACHED_USER_TURNS:])
    out: list[dict[str, Any]] = []
    for i, turn in enumerate(turns):
        content = turn["content"]
        parts = list(content) if isinstance(content, list) else [{"type": "text", "text": content}]
        if i in marked:
            parts[-1] = {**parts[-1], "cache_control": dict(_EPHEMERAL)}
        out.append({"role": turn["role"], "content": parts})
    return blocks, out


class AnthropicClient(BaseHTTPClient):
    """`LMClient` for the Anthropic Messages API (`POST {base_url}/v1/messages`).

    A base URL that already ends in `/v1` is accepted too, as some proxies document it so.
    """

    wire: ClassVar[str] = "anthropic"
    takes_images: ClassVar[bool] = True

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 120.0,
        headers: dict[str, str] | None = None,
        max_connections: int = 64,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        deadline: float = DEFAULT_DEADLINE,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        prompt_cache: bool = True,
    ) -> None:
        merged = {"anthropic-version": ANTHROPIC_VERSION}
        merged.update(headers or {})
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            headers=merged,
            max_connections=max_connections,
            deadline=deadline,
            max_response_bytes=max_response_bytes,
        )
        self.default_max_tokens = default_max_tokens
        self.prompt_cache = prompt_cache
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        self._url = f"{root}/v1/messages"

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    def _build(
        self,
        messages: list[Message],
        model: str,
        max_tokens: int | None,
        temperature: float | None,
    ) -> WireRequest:
        system, turns = anthropic_turns(messages)
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": self.default_max_tokens if max_tokens is None else max_tokens,
            "messages": turns,
        }
        if system is not None and self.prompt_cache:
            body["system"], body["messages"] = with_cache_breakpoints(system, turns)
        elif system is not None:
            body["system"] = system
        if temperature is not None:
            body["temperature"] = temperature
        return WireRequest(self._url, body)

    def _parse(self, data: Any, model: str) -> Completion:
        return parse_anthropic_message(data, model)


def parse_anthropic_message(data: Any, model: str) -> Completion:
    """Read a Messages API body: text blocks joined, usage, stop_reason.

    Input tokens include cache reads and writes when the server reports them, so the count
    means the whole prompt, as OpenAI's `prompt_tokens` does.
    """
    if not isinstance(data, dict):
        raise LMResponseError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("type") == "error":
        err = data.get("error")
        msg = err.get("message") if isinstance(err, dict) else None
        raise LMResponseError(f"error inside a 2xx answer: {msg or err!r}")
    content = data.get("content")
    if not isinstance(content, list):
        raise LMResponseError("the answer has no content list")
    text = "".join(
        block.get("text", "")
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )
    usage = UsageReader(data.get("usage"))
    written = usage.tokens("cache_creation_input_tokens", required=False)
    read = usage.tokens("cache_read_input_tokens", required=False)
    input_tokens = usage.tokens("input_tokens") + written + read
    stop = data.get("stop_reason")
    served = data.get("model")
    return Completion(
        text=text,
        input_tokens=input_tokens,
        output_tokens=usage.tokens("output_tokens"),
        cost_usd=usage.cost(),
        model=served if isinstance(served, str) and served else model,
        finish_reason=stop if isinstance(stop, str) else None,
        usage_problem=usage.problem,
        cache_read_tokens=read,
        cache_write_tokens=written,
        usage_missing=usage.missing,
    )
