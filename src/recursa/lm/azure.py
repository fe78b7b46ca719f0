"""A client for Azure OpenAI: chat completions on a deployment of the user's resource.

The wire format is OpenAI's; what differs is where and how: `POST {endpoint}/openai/
deployments/{deployment}/chat/completions?api-version=...`, the key in an `api-key` header
(or a Microsoft Entra token as `Authorization: Bearer`), and the output cap sent as
`max_completion_tokens`, which reasoning deployments require. A 429 names its wait in
`retry-after-ms` and `retry-after`, both of which the shared core reads.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from recursa.lm.base import Message
from recursa.lm.openai_compat import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RESPONSE_BYTES,
    OpenAICompatClient,
    WireRequest,
)

__all__ = ["AZURE_API_VERSION", "AzureOpenAIClient"]

AZURE_API_VERSION = "2024-10-21"
"""The latest generally available data-plane version as of this client's writing."""


class AzureOpenAIClient(OpenAICompatClient):
    """`LMClient` for an Azure OpenAI resource; the model name is the deployment name."""

    wire: ClassVar[str] = "azure"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        api_version: str = AZURE_API_VERSION,
        bearer: bool = False,
        timeout: float = 120.0,
        headers: dict[str, str] | None = None,
        max_connections: int = 64,
        deadline: float = DEFAULT_DEADLINE,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.bearer = bearer  # read by _auth_headers, which the base calls
        super().__init__(
            base_url.removesuffix("/").removesuffix("/openai"),
            api_key,
            timeout=timeout,
            headers=headers,
            max_connections=max_connections,
            max_tokens_field="max_completion_tokens",
            deadline=deadline,
            max_response_bytes=max_response_bytes,
        )
        self.api_version = api_version

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if self.bearer else {"api-key": api_key}

    def _build(
        self,
        messages: list[Message],
        model: str,
        max_tokens: int | None,
        temperature: float | None,
    ) -> WireRequest:
        request = super()._build(messages, model, max_tokens, temperature)
        body: dict[str, Any] = dict(request.body)
        body.pop("model", None)  # the deployment in the URL decides the model
        url = (
            f"{self.base_url}/openai/deployments/{quote(model, safe='')}/chat/completions"
            f"?api-version={quote(self.api_version, safe='')}"
        )
        return WireRequest(url, body)
