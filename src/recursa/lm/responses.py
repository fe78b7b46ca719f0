"""A client for the OpenAI Responses API (`POST {base_url}/responses`).

Some OpenAI models are served only there (the `-pro` reasoning models, deep research, the
codex models); `openai/MODEL` uses this client for them (`needs_responses`). The system
prompt goes as `instructions`, the turns as `input` messages, the output cap as
`max_output_tokens` (reasoning included, so the hard caps hold); nothing is stored
server-side (`store: false`). Reasoning tokens are part of `output_tokens`, priced as output,
and reported apart; cached input tokens are read back as on chat completions.
"""

from __future__ import annotations

from typing import Any, ClassVar

from recursa.errors import LMResponseError
from recursa.lm.base import Completion, Message
from recursa.lm.openai_compat import BaseHTTPClient, UsageReader, WireRequest, one_line

__all__ = ["RESPONSES_ONLY", "ResponsesClient", "needs_responses", "parse_response"]

RESPONSES_ONLY = (
    "o1-pro",
    "o3-pro",
    "o3-deep-research",
    "o4-mini-deep-research",
    "gpt-5-pro",
    "gpt-5-codex",
    "gpt-5.1-codex",
    "codex-mini",
)
"""Models (and their dated snapshots) that chat completions refuses."""


def needs_responses(model: str) -> bool:
    """True for a model the Responses API alone serves."""
    name = model.strip().lower()
    return any(name == m or name.startswith(f"{m}-") for m in RESPONSES_ONLY)


class ResponsesClient(BaseHTTPClient):
    """`LMClient` for the Responses API; same errors and sync twin as the other clients."""

    wire: ClassVar[str] = "responses"

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def _build(
        self,
        messages: list[Message],
        model: str,
        max_tokens: int | None,
        temperature: float | None,
    ) -> WireRequest:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        body: dict[str, Any] = {
            "model": model,
            "input": [
                {
                    "role": "assistant" if m["role"] == "assistant" else "user",
                    "content": m["content"],
                }
                for m in messages
                if m["role"] != "system"
            ],
            "store": False,
        }
        if system:
            body["instructions"] = system
        if max_tokens is not None:
            body["max_output_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        return WireRequest(f"{self.base_url}/responses", body)

    def _parse(self, data: Any, model: str) -> Completion:
        return parse_response(data, model)


def parse_response(data: Any, model: str) -> Completion:
    """Read a Response object: the output messages' text, usage with reasoning and cached
    tokens, and `length` when it stopped at `max_output_tokens`."""
    if not isinstance(data, dict):
        raise LMResponseError(f"expected a JSON object, got {type(data).__name__}")
    status = data.get("status")
    error = data.get("error")
    if status == "failed" or isinstance(error, dict):
        message = error.get("message") if isinstance(error, dict) else None
        raise LMResponseError(f"the response failed: {one_line(str(message or error))}")
    output = data.get("output")
    if not isinstance(output, list):
        raise LMResponseError("the answer has no output list")
    text = "".join(
        part["text"]
        for item in output
        if isinstance(item, dict) and item.get("type") == "message"
        for part in _content_list(item)
        if isinstance(part, dict)
        and part.get("type") == "output_text"
        and isinstance(part.get("text"), str)
    )
    usage = UsageReader(data.get("usage"))
    input_tokens = usage.tokens("input_tokens")
    output_tokens = usage.tokens("output_tokens")
    cached = usage.nested_tokens("input_tokens_details", "cached_tokens")
    reasoning = usage.nested_tokens("output_tokens_details", "reasoning_tokens")
    details = data.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    finish = (
        "length" if reason == "max_output_tokens" else reason if status == "incomplete" else "stop"
    )
    served = data.get("model")
    return Completion(
        text=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        model=served if isinstance(served, str) and served else model,
        finish_reason=finish if isinstance(finish, str) else None,
        usage_problem=usage.problem,
        cache_read_tokens=min(cached, input_tokens),
        reasoning_tokens=min(reasoning, output_tokens),
    )


def _content_list(item: dict[str, Any]) -> list[Any]:
    """An output message's `content` parts (none when the field is not a list)."""
    content = item.get("content")
    return content if isinstance(content, list) else []
