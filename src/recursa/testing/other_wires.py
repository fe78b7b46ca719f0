"""The fake server's Gemini and Azure OpenAI wire formats, as the providers document them.

Gemini: `POST /v1beta/models/{model}:generateContent` with the key in `x-goog-api-key`;
`contents` of `user`/`model` turns with text `parts`, `systemInstruction`, and
`generationConfig.maxOutputTokens`; answers carry `candidates` and `usageMetadata`, errors
`{"error": {"code", "message", "status", "details"}}` with the wait of a 429 in a
`google.rpc.RetryInfo` detail. Azure OpenAI: `POST /openai/deployments/{deployment}/chat/
completions?api-version=...` with `api-key` or a bearer token; OpenAI's body and answer.
"""

from __future__ import annotations

import re
from typing import Any

from recursa.testing.scripted import Reply

__all__ = [
    "AZURE_PATH",
    "GEMINI_PATH",
    "gemini_answer",
    "gemini_error",
    "gemini_messages",
]

GEMINI_PATH = re.compile(r"^/v1beta/models/([^/:]+):generateContent$")
AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}


def _text(parts: Any) -> str:
    if not isinstance(parts, list):
        raise ValueError("'parts' must be a list")
    return "".join(
        p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
    )


def gemini_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """A generateContent body's turns as chat messages (system first, `model` as assistant)."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ValueError("contents: at least one Content is required")
    messages = []
    system = body.get("systemInstruction")
    if system is not None:
        if not isinstance(system, dict):
            raise ValueError("systemInstruction must be a Content")
        messages.append({"role": "system", "content": _text(system.get("parts"))})
    for content in contents:
        if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
            raise ValueError("each Content needs role 'user' or 'model'")
        role = "assistant" if content["role"] == "model" else "user"
        messages.append({"role": role, "content": _text(content.get("parts"))})
    return messages


def gemini_answer(model: str, reply: Reply, inp: int, out: int) -> dict[str, Any]:
    """A GenerateContentResponse; a zero count is left out of usageMetadata, as Gemini does."""
    usage: dict[str, Any] = {"promptTokenCount": inp, "totalTokenCount": inp + out}
    if out:
        usage["candidatesTokenCount"] = out
    finish = reply.finish_reason or "stop"
    return {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": reply.text}]},
                "finishReason": _FINISH.get(finish, finish.upper()),
                "index": 0,
            }
        ],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": "fake",
    }


def gemini_error(status: int, message: str, retry_after: float | None) -> dict[str, Any]:
    """Gemini's error body; a 429's wait goes in a RetryInfo detail (`"30s"`)."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS.get(status, "UNKNOWN"),
    }
    if retry_after is not None:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}
        ]
    return {"error": error}
