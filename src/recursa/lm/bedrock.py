"""A client for Amazon Bedrock's Converse API (`POST {endpoint}/model/{modelId}/converse`).

Two ways in, as AWS documents them: a Bedrock API key (`AWS_BEARER_TOKEN_BEDROCK`, sent as
a bearer token, nothing to install), or AWS credentials from the usual chain (environment,
profile, SSO, instance role), each request signed with SigV4 by botocore, the `bedrock`
extra (imported only then). The region comes from `AWS_REGION` / `AWS_DEFAULT_REGION`, the
host from `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` or the region. The output cap goes as
`inferenceConfig.maxTokens`; cached prompt tokens come back as `cacheReadInputTokens` and
`cacheWriteInputTokens`, counted within the input. A Claude model's conversation (a request
with a system prompt) carries `cachePoint` blocks where the Anthropic client puts its
breakpoints: after the system prompt and the last two user turns.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from recursa.errors import ConfigError, LMResponseError
from recursa.lm.anthropic import CACHED_USER_TURNS, to_anthropic_messages
from recursa.lm.base import Completion, Message
from recursa.lm.openai_compat import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RESPONSE_BYTES,
    BaseHTTPClient,
    UsageReader,
    WireRequest,
)

__all__ = [
    "BEDROCK_TOKEN_ENV",
    "BedrockClient",
    "SigV4",
    "aws_credentials",
    "aws_region",
    "parse_converse",
]

BEDROCK_TOKEN_ENV = "AWS_BEARER_TOKEN_BEDROCK"
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
ENDPOINT_ENV = "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"
_CACHE_POINT = {"cachePoint": {"type": "default"}}


def aws_region(env: Mapping[str, str]) -> str:
    """The region from the environment; a missing one is a one-line ConfigError."""
    for name in REGION_ENVS:
        value = (env.get(name) or "").strip()
        if value:
            return value
    raise ConfigError("AWS_REGION is not set: export it (e.g. us-east-1) for bedrock/ models")


_CHAIN: list[Any] = []
"""The chain's credentials, found once per process (they refresh themselves)."""


def aws_credentials(env: Mapping[str, str]) -> Any:
    """botocore credentials: the keys in `env` when given, else the usual chain's."""
    try:
        from botocore.credentials import Credentials
        from botocore.session import Session
    except ImportError:
        raise ConfigError(
            f"bedrock/ models sign requests with botocore: pip install 'recursa[bedrock]', "
            f"or set {BEDROCK_TOKEN_ENV} to a Bedrock API key"
        ) from None
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, env.get("AWS_SESSION_TOKEN") or None)
    if _CHAIN:
        return _CHAIN[0]
    found = Session().get_credentials()
    if found is None:
        raise ConfigError(
            "AWS_ACCESS_KEY_ID is not set and no AWS credentials were found (profile, SSO, "
            f"role): export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or {BEDROCK_TOKEN_ENV}"
        )
    _CHAIN.append(found)
    return found


class SigV4(httpx.Auth):
    """Signs each request for the `bedrock` service with botocore's SigV4."""

    requires_request_body = True

    def __init__(self, credentials: Any, region: str) -> None:
        self.credentials = credentials
        self.region = region

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        aws = AWSRequest(
            method=request.method,
            url=str(request.url),
            data=request.content,
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
        frozen = self.credentials.get_frozen_credentials()
        SigV4Auth(frozen, "bedrock", self.region).add_auth(aws)
        for name, value in aws.headers.items():
            request.headers[name] = value
        yield request


class BedrockClient(BaseHTTPClient):
    """`LMClient` for Bedrock Converse; `api_key` is a Bedrock API key (bearer), or None
    with `credentials` and `region` for SigV4."""

    wire: ClassVar[str] = "bedrock"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        region: str,
        credentials: Any = None,
        timeout: float = 120.0,
        headers: dict[str, str] | None = None,
        max_connections: int = 64,
        deadline: float = DEFAULT_DEADLINE,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if api_key is None and credentials is None:
            raise ConfigError(f"bedrock needs {BEDROCK_TOKEN_ENV} or AWS credentials")
        self.region = region
        self._signer = None if api_key else SigV4(credentials, region)
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            headers=headers,
            max_connections=max_connections,
            deadline=deadline,
            max_response_bytes=max_response_bytes,
        )

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def _httpx_options(self) -> dict[str, Any]:
        options = super()._httpx_options()
        if self._signer is not None:
            options["auth"] = self._signer
        return options

    def _build(
        self,
        messages: list[Message],
        model: str,
        max_tokens: int | None,
        temperature: float | None,
    ) -> WireRequest:
        system, turns = to_anthropic_messages(messages)
        body: dict[str, Any] = {
            "messages": [{"role": t["role"], "content": [{"text": t["content"]}]} for t in turns]
        }
        if system is not None:
            body["system"] = [{"text": system}]
            if "anthropic.claude" in model:  # a conversation re-sent every turn: cache it
                body["system"].append(dict(_CACHE_POINT))
                users = [m for m in body["messages"] if m["role"] == "user"]
                for message in users[-CACHED_USER_TURNS:]:
                    message["content"].append(dict(_CACHE_POINT))
        config: dict[str, Any] = {}
        if max_tokens is not None:
            config["maxTokens"] = max_tokens
        if temperature is not None:
            config["temperature"] = temperature
        if config:
            body["inferenceConfig"] = config
        return WireRequest(f"{self.base_url}/model/{quote(model, safe='')}/converse", body)

    def _parse(self, data: Any, model: str) -> Completion:
        return parse_converse(data, model)


def parse_converse(data: Any, model: str) -> Completion:
    """Read a Converse answer: the message's text blocks, usage with the cache's counts."""
    if not isinstance(data, dict):
        raise LMResponseError(f"expected a JSON object, got {type(data).__name__}")
    output = data.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        raise LMResponseError("the answer has no output message")
    text = "".join(
        block["text"]
        for block in content
        if isinstance(block, dict) and isinstance(block.get("text"), str)
    )
    usage = UsageReader(data.get("usage"))
    read = usage.tokens("cacheReadInputTokens", required=False)
    written = usage.tokens("cacheWriteInputTokens", required=False)
    stop = data.get("stopReason")
    return Completion(
        text=text,
        input_tokens=usage.tokens("inputTokens") + read + written,
        output_tokens=usage.tokens("outputTokens"),
        model=model,
        finish_reason=stop if isinstance(stop, str) else None,
        usage_problem=usage.problem,
        cache_read_tokens=read,
        cache_write_tokens=written,
    )
