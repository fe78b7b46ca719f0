"""Model names (`PROVIDER/MODEL`) and where each provider's server and key come from.

Resolution is a pure function of the name, an optional explicit base URL and an
environment mapping, so the CLI, the server and the tests all get the same answer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from recursa.errors import ConfigError
from recursa.lm.anthropic import AnthropicClient
from recursa.lm.azure import AZURE_API_VERSION, AzureOpenAIClient
from recursa.lm.base import LMClient
from recursa.lm.bedrock import (
    BEDROCK_TOKEN_ENV,
    ENDPOINT_ENV,
    BedrockClient,
    aws_credentials,
    aws_region,
)
from recursa.lm.gemini import GeminiClient
from recursa.lm.litellm_client import LiteLLMClient, import_litellm
from recursa.lm.llm_library import LLMLibraryClient, check_model
from recursa.lm.openai_compat import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RESPONSE_BYTES,
    OpenAICompatClient,
    normalize_base_url,
)
from recursa.lm.responses import ResponsesClient, needs_responses

__all__ = [
    "LOCAL_PROVIDERS",
    "PROVIDERS",
    "Endpoint",
    "ModelSpec",
    "ProviderInfo",
    "make_client",
    "parse_model",
    "resolve_endpoint",
]

Wire = Literal["openai", "anthropic", "gemini", "azure", "responses", "bedrock", "llm", "litellm"]


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """How to reach one provider: its wire format, default URL and environment variables.

    `key_required` means the key is needed against the default (official) host only: a
    base URL pointing anywhere else is assumed to be a proxy or local server.
    """

    wire: Wire
    default_base_url: str
    base_url_env: str | None
    key_env: str | None
    key_required: bool


PROVIDERS: dict[str, ProviderInfo] = {
    "openai": ProviderInfo(
        "openai", "https://api.openai.com/v1", "OPENAI_BASE_URL", "OPENAI_API_KEY", True
    ),
    "anthropic": ProviderInfo(
        "anthropic",
        "https://api.anthropic.com",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        True,
    ),
    "ollama": ProviderInfo("openai", "http://127.0.0.1:11434/v1", "OLLAMA_BASE_URL", None, False),
    "vllm": ProviderInfo(
        "openai", "http://127.0.0.1:8000/v1", "VLLM_BASE_URL", "VLLM_API_KEY", False
    ),
    "llamacpp": ProviderInfo(
        "openai", "http://127.0.0.1:8080/v1", "LLAMACPP_BASE_URL", "LLAMACPP_API_KEY", False
    ),
    "lmstudio": ProviderInfo(
        "openai", "http://127.0.0.1:1234/v1", "LMSTUDIO_BASE_URL", None, False
    ),
    "openrouter": ProviderInfo(
        "openai",
        "https://openrouter.ai/api/v1",
        "OPENROUTER_BASE_URL",
        "OPENROUTER_API_KEY",
        True,
    ),
    "gemini": ProviderInfo(
        "gemini",
        "https://generativelanguage.googleapis.com",
        "GEMINI_BASE_URL",
        "GEMINI_API_KEY",
        True,
    ),
    "azure": ProviderInfo("azure", "", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY", True),
    "bedrock": ProviderInfo("bedrock", "", ENDPOINT_ENV, BEDROCK_TOKEN_ENV, False),
    "llm": ProviderInfo("llm", "", None, None, False),
    "litellm": ProviderInfo("litellm", "", "LITELLM_API_BASE", "LITELLM_API_KEY", False),
}
"""Every provider recursa knows, by the name used in `PROVIDER/MODEL`."""

LOCAL_PROVIDERS: frozenset[str] = frozenset({"ollama", "vllm", "llamacpp", "lmstudio"})
"""Providers that run on the user's own machine (they cost nothing per token)."""

AZURE_TOKEN_ENV = "AZURE_OPENAI_AD_TOKEN"
"""A Microsoft Entra token, sent as a bearer token instead of the resource's key."""
AZURE_VERSION_ENVS = ("AZURE_OPENAI_API_VERSION", "OPENAI_API_VERSION")
"""Where Azure's `api-version` comes from (the first set), else `AZURE_API_VERSION`."""


def _known() -> str:
    return ", ".join(PROVIDERS)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A parsed `PROVIDER/MODEL` name; `name` is what the provider's server is sent."""

    provider: str
    name: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.name}"


def parse_model(model: str) -> ModelSpec:
    """Split `PROVIDER/MODEL` on the first slash (the model part may hold more slashes)."""
    text = (model or "").strip()
    provider, slash, name = text.partition("/")
    provider = provider.strip().lower()
    name = name.strip()
    if not slash or not provider or not name:
        raise ConfigError(
            f"model {text!r} is not PROVIDER/MODEL (e.g. openai/gpt-4o); "
            f"known providers: {_known()}"
        )
    if provider not in PROVIDERS:
        raise ConfigError(f"unknown provider {provider!r} in {text!r}; known providers: {_known()}")
    return ModelSpec(provider, name)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to send a provider's requests and with which key (never shown by repr)."""

    provider: str
    wire: Wire
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    api_version: str | None = None
    """Azure's `api-version`."""
    bearer: bool = False
    """Azure: `api_key` is an Entra token, sent as `Authorization: Bearer`."""
    region: str | None = None
    """Bedrock's AWS region."""
    credentials: Any = field(default=None, repr=False, compare=False)
    """Bedrock without an API key: the botocore credentials that sign each request."""

    def __repr__(self) -> str:
        key = "***" if self.api_key else None
        return (
            f"Endpoint(provider={self.provider!r}, wire={self.wire!r}, "
            f"base_url={self.base_url!r}, api_key={key!r})"
        )


def _env(env: Mapping[str, str], name: str | None) -> str | None:
    """An environment variable, with an empty or blank value counting as unset."""
    if not name:
        return None
    value = env.get(name)
    return value.strip() if value and value.strip() else None


def _same_host(url: str, other: str) -> bool:
    return httpx.URL(url).host == httpx.URL(other).host


def resolve_endpoint(
    spec: ModelSpec,
    base_url: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> Endpoint:
    """Find the base URL and key for a model: explicit `base_url`, else the provider's
    variable, else its usual default. A missing key is an error only against the
    provider's official API."""
    info = PROVIDERS.get(spec.provider)
    if info is None:
        raise ConfigError(f"unknown provider {spec.provider!r}; known providers: {_known()}")
    if info.wire == "azure":
        return _azure_endpoint(spec, info, base_url, env)
    if info.wire == "bedrock":
        return _bedrock_endpoint(spec, base_url, env)
    if info.wire == "litellm":  # LiteLLM reads each provider's own variables
        import_litellm()
        given = (base_url or "").strip() or _env(env, info.base_url_env)
        url = normalize_base_url(given) if given else ""
        return Endpoint(spec.provider, "litellm", url, _env(env, info.key_env))
    if info.wire == "llm":  # the llm library finds the model, its key and its server
        check_model(spec.name)
        return Endpoint(spec.provider, "llm", "")
    chosen = (base_url or "").strip() or _env(env, info.base_url_env) or info.default_base_url
    url = normalize_base_url(chosen)
    api_key = _env(env, info.key_env)
    if (
        info.key_required
        and api_key is None
        and info.key_env
        and _same_host(url, info.default_base_url)
    ):
        raise ConfigError(
            f"{info.key_env} is not set: export it, or use --base-url for a local server"
        )
    wire: Wire = info.wire
    if spec.provider == "openai" and needs_responses(spec.name):
        wire = "responses"  # served by the Responses API alone
    return Endpoint(spec.provider, wire, url, api_key)


def _azure_endpoint(
    spec: ModelSpec, info: ProviderInfo, base_url: str | None, env: Mapping[str, str]
) -> Endpoint:
    """Azure has no default host: the resource's endpoint and a key (or token) are needed."""
    chosen = (base_url or "").strip() or _env(env, info.base_url_env)
    if not chosen:
        raise ConfigError(
            f"{info.base_url_env} is not set: export it (https://RESOURCE.openai.azure.com) "
            "or use --base-url"
        )
    key, token = _env(env, info.key_env), _env(env, AZURE_TOKEN_ENV)
    if key is None and token is None:
        raise ConfigError(
            f"{info.key_env} is not set: export it, or {AZURE_TOKEN_ENV} for an Entra token"
        )
    version = next(
        (v for v in (_env(env, name) for name in AZURE_VERSION_ENVS) if v), AZURE_API_VERSION
    )
    return Endpoint(
        spec.provider,
        info.wire,
        normalize_base_url(chosen),
        key or token,
        api_version=version,
        bearer=key is None,
    )


def _bedrock_endpoint(spec: ModelSpec, base_url: str | None, env: Mapping[str, str]) -> Endpoint:
    """A Bedrock API key when one is set, else AWS credentials (SigV4); the region's host."""
    region = aws_region(env)
    chosen = (
        (base_url or "").strip()
        or _env(env, ENDPOINT_ENV)
        or f"https://bedrock-runtime.{region}.amazonaws.com"
    )
    token = _env(env, BEDROCK_TOKEN_ENV)
    credentials = None if token else aws_credentials(env)
    return Endpoint(
        spec.provider,
        "bedrock",
        normalize_base_url(chosen),
        token,
        region=region,
        credentials=credentials,
    )


def make_client(
    endpoint: Endpoint,
    *,
    timeout: float = 120.0,
    max_connections: int = 64,
    deadline: float = DEFAULT_DEADLINE,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> LMClient:
    """Build the client that speaks the endpoint's wire format."""
    options: dict[str, Any] = {
        "timeout": timeout,
        "max_connections": max_connections,
        "deadline": deadline,
        "max_response_bytes": max_response_bytes,
    }
    if endpoint.wire == "anthropic":
        return AnthropicClient(endpoint.base_url, endpoint.api_key, **options)
    if endpoint.wire == "openai":
        return OpenAICompatClient(endpoint.base_url, endpoint.api_key, **options)
    if endpoint.wire == "llm":
        return LLMLibraryClient()
    if endpoint.wire == "litellm":
        return LiteLLMClient(endpoint.base_url, endpoint.api_key)
    if endpoint.wire == "bedrock":
        return BedrockClient(
            endpoint.base_url,
            endpoint.api_key,
            region=endpoint.region or "",
            credentials=endpoint.credentials,
            **options,
        )
    if endpoint.wire == "responses":
        return ResponsesClient(endpoint.base_url, endpoint.api_key, **options)
    if endpoint.wire == "gemini":
        return GeminiClient(endpoint.base_url, endpoint.api_key, **options)
    if endpoint.wire == "azure":
        return AzureOpenAIClient(
            endpoint.base_url,
            endpoint.api_key,
            api_version=endpoint.api_version or AZURE_API_VERSION,
            bearer=endpoint.bearer,
            **options,
        )
    raise ConfigError(f"unknown wire format {endpoint.wire!r}")
