"""Anything else, through the LiteLLM library (extra: litellm): `litellm/PROVIDER/MODEL`.

The name after `litellm/` is LiteLLM's own (`litellm/mistral/mistral-large-latest`,
`litellm/watsonx/ibm/granite-13b-chat-v2`), and so are the keys it reads (each provider's
usual variables); `--base-url` or `LITELLM_API_BASE` and `LITELLM_API_KEY` are passed as
`api_base` and `api_key` when set. One attempt per call (`num_retries=0`: the gateway
retries, reserving each attempt), the cap as `max_tokens`, the answer read as a chat
completion. LiteLLM's price map is its packaged copy: nothing is fetched at run time.
"""

from __future__ import annotations

import os
from typing import Any

from recursa.errors import ConfigError, LMConnectionError, LMResponseError, LMStatusError
from recursa.lm.base import Completion, Message
from recursa.lm.openai_compat import parse_openai_completion, parse_retry_after

__all__ = ["LiteLLMClient", "import_litellm"]


def import_litellm() -> Any:
    """The litellm module, told to use its packaged price map (no download at import)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        raise ConfigError(
            "litellm/ models need the LiteLLM library: pip install 'recursa[litellm]'"
        ) from None
    return litellm


def _error(exc: Exception) -> Exception:
    """A LiteLLM exception as the gateway's errors: a connection, a status (with its wait),
    or anything else (not retried)."""
    text = " ".join(f"litellm: {exc}".split())[:480]
    status = getattr(exc, "status_code", None)
    if type(exc).__name__ in ("APIConnectionError", "Timeout"):
        return LMConnectionError(text)
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status < 600:
        return LMResponseError(text)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    retry_after = parse_retry_after(headers.get("retry-after")) if headers else None
    return LMStatusError(status, text, retry_after=retry_after)


class LiteLLMClient:
    """`LMClient` over `litellm.acompletion`."""

    wire = "litellm"

    def __init__(self, base_url: str | None = None, api_key: str | None = None) -> None:
        self.base_url = base_url or None
        self._api_key = api_key or None

    def __repr__(self) -> str:
        return f"LiteLLMClient(base_url={self.base_url!r})"

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        litellm = import_litellm()
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "num_retries": 0,
        }
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if temperature is not None:
            kwargs["temperature"] = temperature
        if self.base_url:
            kwargs["api_base"] = self.base_url
        if self._api_key:
            kwargs["api_key"] = self._api_key
        try:
            response = await litellm.acompletion(**kwargs)
        except Exception as exc:
            raise _error(exc) from None
        return parse_openai_completion(response.model_dump(), model)

    async def aclose(self) -> None:
        """Nothing to release: LiteLLM keeps its own clients."""
