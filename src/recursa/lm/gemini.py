"""A client for the Gemini API's own wire format (`generateContent`), spoken natively.

Same shape as the other clients (one request per call, same errors, sync twin). The Gemini
API names the assistant `model`, takes the system prompt as `systemInstruction`, and limits
output with `generationConfig.maxOutputTokens` (thinking included, so the hard cap holds).
Gemini 2.5 caches repeated prompt prefixes by itself (implicit caching); recursa's
conversations only grow at the end, and `usageMetadata.cachedContentTokenCount` is read back.
A 429's wait comes in the body (`google.rpc.RetryInfo.retryDelay`) as often as in a header.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, ClassVar

import httpx

from recursa.errors import LMResponseError, LMStatusError
from recursa.lm.anthropic import to_anthropic_messages
from recursa.lm.base import Completion, Message
from recursa.lm.openai_compat import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RESPONSE_BYTES,
    BaseHTTPClient,
    UsageReader,
    WireRequest,
    one_line,
)

__all__ = ["GEMINI_API_VERSION", "GeminiClient", "parse_gemini_response", "retry_delay"]

GEMINI_API_VERSION = "v1beta"
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def retry_delay(body: Any) -> float | None:
    """Seconds to wait from an error body's `RetryInfo` detail (`"retryDelay": "30s"`)."""
    err = body.get("error") if isinstance(body, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DELAY.match(str(detail.get("retryDelay", "")))
            if match and math.isfinite(float(match.group(1))):
                return float(match.group(1))
    return None


class GeminiClient(BaseHTTPClient):
    """`LMClient` for `POST {base_url}/v1beta/models/{model}:generateContent`.

    A base URL that already ends in the API version is accepted too.
    """

    wire: ClassVar[str] = "gemini"

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
        api_version: str = GEMINI_API_VERSION,
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
        suffix = f"/{api_version}"
        root = self.base_url.removesuffix(suffix)
        self._models_url = f"{root}{suffix}/models"

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-goog-api-key": api_key}

    def _build(
        self,
        messages: list[Message],
        model: str,
        max_tokens: int | None,
        temperature: float | None,
    ) -> WireRequest:
        system, turns = to_anthropic_messages(messages)
        body: dict[str, Any] = {
            "contents": [
                {
                    "role": "model" if t["role"] == "assistant" else "user",
                    "parts": [{"text": t["content"]}],
                }
                for t in turns
            ]
        }
        if system is not None:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        config: dict[str, Any] = {}
        if max_tokens is not None:
            config["maxOutputTokens"] = max_tokens
        if temperature is not None:
            config["temperature"] = temperature
        if config:
            body["generationConfig"] = config
        name = model.removeprefix("models/")
        return WireRequest(f"{self._models_url}/{name}:generateContent", body)

    def _parse(self, data: Any, model: str) -> Completion:
        return parse_gemini_response(data, model)

    def _status_error(self, url: str, resp: httpx.Response, body: bytes) -> LMStatusError:
        error = super()._status_error(url, resp, body)
        if error.retry_after is not None:
            return error
        try:
            delay = retry_delay(json.loads(body))
        except (ValueError, RecursionError):
            delay = None
        if delay is None:
            return error
        message = one_line(f"{error} (retry after {delay:g}s)", 480)
        return LMStatusError(error.status, message, retry_after=delay)


def parse_gemini_response(data: Any, model: str) -> Completion:
    """Read a `GenerateContentResponse`: the first candidate's text parts (thoughts left
    out), usage with thinking counted as output, and the finish reason."""
    if not isinstance(data, dict):
        raise LMResponseError(f"expected a JSON object, got {type(data).__name__}")
    err = data.get("error")
    if isinstance(err, dict):
        code = err.get("code")
        msg = one_line(str(err.get("message") or err))
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
            raise LMStatusError(code, f"error {code} inside a 2xx answer: {msg}")
        raise LMResponseError(f"error inside a 2xx answer: {msg}")
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        feedback = data.get("promptFeedback")
        blocked = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if blocked:
            raise LMResponseError(f"the prompt was blocked ({one_line(str(blocked), 60)})")
        raise LMResponseError("the answer has no candidates")
    first = candidates[0]
    if not isinstance(first, dict):
        raise LMResponseError("the answer's first candidate is not an object")
    content = first.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    text = "".join(
        p["text"]
        for p in (parts if isinstance(parts, list) else ())
        if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
    )
    usage = UsageReader(data.get("usageMetadata"))
    input_tokens = usage.tokens("promptTokenCount")
    # Gemini leaves out a count that is zero (no visible output, no thinking).
    thoughts = usage.tokens("thoughtsTokenCount", required=False)
    output_tokens = usage.tokens("candidatesTokenCount", required=False) + thoughts
    cached = min(input_tokens, usage.tokens("cachedContentTokenCount", required=False))
    finish = first.get("finishReason")
    served = data.get("modelVersion")
    return Completion(
        text=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        model=served if isinstance(served, str) and served else model,
        finish_reason=finish if isinstance(finish, str) else None,
        usage_problem=usage.problem,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
    )
