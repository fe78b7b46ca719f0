"""The fake server's Gemini, Azure OpenAI, OpenAI Responses and Bedrock Converse wire
formats, as the providers document them.

Gemini: `POST /v1beta/models/{model}:generateContent` with the key in `x-goog-api-key`;
`contents` of `user`/`model` turns with text `parts`, `systemInstruction`, and
`generationConfig.maxOutputTokens`; answers carry `candidates` and `usageMetadata`, errors
`{"error": {"code", "message", "status", "details"}}` with the wait of a 429 in a
`google.rpc.RetryInfo` detail. Azure OpenAI: `POST /openai/deployments/{deployment}/chat/
completions?api-version=...` with `api-key` or a bearer token; OpenAI's body and answer.
Responses: `POST /v1/responses` with `instructions`, `input` messages and
`max_output_tokens`; a Response with `output` items and `usage` (`status: incomplete` when
cut at `max_output_tokens`). Bedrock: `POST /model/{modelId}/converse`, signed with SigV4
(`AWS4-HMAC-SHA256` for service `bedrock`, `x-amz-date`) or a Bedrock API key as a bearer
token; `system` and `messages` of text blocks, `inferenceConfig.maxTokens`; errors are
`{"message"}` with the exception's name in `x-amzn-ErrorType`.
"""

from __future__ import annotations

import re
from typing import Any

from recursa.testing.scripted import Reply

__all__ = [
    "AZURE_PATH",
    "BEDROCK_PATH",
    "GEMINI_PATH",
    "bedrock_answer",
    "bedrock_auth_problem",
    "bedrock_error",
    "bedrock_messages",
    "gemini_answer",
    "gemini_error",
    "gemini_messages",
    "responses_answer",
    "responses_messages",
]

GEMINI_PATH = re.compile(r"^/v1beta/models/([^/:]+):generateContent$")
AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")
BEDROCK_PATH = re.compile(r"^/model/([^/]+)/converse$")
_SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=[A-Z0-9]+/\d{8}/[a-z0-9-]+/bedrock/aws4_request, "
    r"SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*, Signature=[0-9a-f]{64}$"
)
_BEDROCK_ERRORS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
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


def responses_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """A Responses request's `instructions` and `input` as chat messages."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise ValueError("model: field required")
    raw = body.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise ValueError("input: a string or a list of items is required")
    messages = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    for item in items:
        if not isinstance(item, dict) or item.get("role") not in (
            "user", "assistant", "system", "developer",
        ):  # fmt: skip
            raise ValueError(f"each input item needs a role: {item!r:.80}")
        content = item.get("content")
        text = content if isinstance(content, str) else _text(content)
        role = "system" if item["role"] == "developer" else item["role"]
        messages.append({"role": role, "content": text})
    return messages


def responses_answer(
    model: str, reply: Reply, inp: int, out: int, cached: int = 0
) -> dict[str, Any]:
    """A Response object: one output message, usage with its details."""
    cut = reply.finish_reason == "length"
    return {
        "id": "resp_fake",
        "object": "response",
        "model": model,
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "error": None,
        "output": [
            {
                "type": "message",
                "id": "msg_fake",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": inp + out,
        },
    }


def bedrock_auth_problem(headers: Any) -> str | None:
    """Why a Converse request's credentials would be refused, or None."""
    auth = headers.get("authorization") or ""
    if auth.startswith("Bearer ") and len(auth) > 7:
        return None
    if not _SIGV4.match(auth):
        return "Missing Authentication Token"
    if not headers.get("x-amz-date"):
        return "Authorization header requires existence of either a 'X-Amz-Date' header"
    return None


def bedrock_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """A Converse body's `system` and `messages` as chat messages."""
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ValueError("messages: at least one message is required")
    messages = []
    system = body.get("system")
    if system is not None:
        if not isinstance(system, list):
            raise ValueError("system must be a list of content blocks")
        messages.append({"role": "system", "content": _text(system)})
    for m in raw:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise ValueError("each message needs role 'user' or 'assistant'")
        messages.append({"role": m["role"], "content": _text(m.get("content"))})
    return messages


def bedrock_answer(
    reply: Reply, inp: int, out: int, read: int = 0, written: int = 0
) -> dict[str, Any]:
    """A ConverseResponse; `inputTokens` are those neither read from nor written to the cache."""
    stop = {"stop": "end_turn", "length": "max_tokens"}.get(reply.finish_reason or "stop")
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": reply.text}]}},
        "stopReason": stop or reply.finish_reason,
        "usage": {
            "inputTokens": inp - read - written,
            "outputTokens": out,
            "totalTokens": inp + out,
            "cacheReadInputTokens": read,
            "cacheWriteInputTokens": written,
        },
        "metrics": {"latencyMs": 1},
    }


def bedrock_error(status: int, message: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Bedrock's error body and its `x-amzn-ErrorType` header."""
    kind = _BEDROCK_ERRORS.get(status, "InternalServerException")
    return {"message": message}, {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/"}
