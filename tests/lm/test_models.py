"""Model names and where each provider's requests go."""

from __future__ import annotations

import pytest

from recursa.errors import ConfigError
from recursa.lm import (
    AnthropicClient,
    Endpoint,
    ModelSpec,
    OpenAICompatClient,
    make_client,
    parse_model,
    resolve_endpoint,
)


def resolve(model: str, env: dict[str, str], base_url: str | None = None) -> Endpoint:
    return resolve_endpoint(parse_model(model), base_url, env=env)


@pytest.mark.parametrize(
    ("name", "provider", "model"),
    [
        ("openai/gpt-4o", "openai", "gpt-4o"),
        ("openrouter/meta-llama/llama-3-70b", "openrouter", "meta-llama/llama-3-70b"),
        ("ollama/qwen2.5:7b", "ollama", "qwen2.5:7b"),
        ("  Anthropic/claude-sonnet-4-0 ", "anthropic", "claude-sonnet-4-0"),
        ("vllm//models/Qwen", "vllm", "/models/Qwen"),
    ],
)
def test_parse_model_splits_on_first_slash(name: str, provider: str, model: str) -> None:
    spec = parse_model(name)
    assert spec == ModelSpec(provider, model)
    assert str(spec) == f"{provider}/{model}"


@pytest.mark.parametrize("name", ["gpt-4o", "", "openai/", "/gpt-4o", "bedrockx/claude"])
def test_bad_model_names_list_known_providers(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model(name)
    text = str(info.value)
    assert "\n" not in text
    assert "openai" in text and "ollama" in text and "openrouter" in text


def test_unknown_provider_is_named_in_the_message() -> None:
    with pytest.raises(ConfigError, match="bedrockx"):
        parse_model("bedrockx/claude")


def test_openai_defaults_and_key() -> None:
    ep = resolve("openai/gpt-4o", {"OPENAI_API_KEY": "sk-1"})
    assert (ep.provider, ep.wire, ep.base_url, ep.api_key) == (
        "openai",
        "openai",
        "https://api.openai.com/v1",
        "sk-1",
    )


def test_openai_missing_key_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        resolve("openai/gpt-4o", {"OPENAI_API_KEY": "  "})
    assert str(info.value) == (
        "OPENAI_API_KEY is not set: export it, or use --base-url for a local server"
    )


def test_openai_base_url_precedence() -> None:
    env = {"OPENAI_BASE_URL": "http://10.0.0.5:9000/v1/"}
    assert resolve("openai/m", env).base_url == "http://10.0.0.5:9000/v1"
    assert resolve("openai/m", env).api_key is None  # a non-official server needs no key
    explicit = resolve("openai/m", env, base_url="http://127.0.0.1:7000/v1//")
    assert explicit.base_url == "http://127.0.0.1:7000/v1"


def test_official_url_given_explicitly_still_needs_key() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve("openai/m", {}, base_url="https://api.openai.com/v1")


def test_anthropic_resolution() -> None:
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        resolve("anthropic/claude-sonnet-4-0", {})
    ep = resolve("anthropic/claude-sonnet-4-0", {"ANTHROPIC_API_KEY": "ak"})
    assert (ep.wire, ep.base_url, ep.api_key) == ("anthropic", "https://api.anthropic.com", "ak")
    proxy = resolve("anthropic/c", {"ANTHROPIC_BASE_URL": "http://127.0.0.1:4000"})
    assert (proxy.base_url, proxy.api_key) == ("http://127.0.0.1:4000", None)
    assert resolve("anthropic/c", {}, base_url="http://h:1").base_url == "http://h:1"


@pytest.mark.parametrize(
    ("provider", "default", "url_env", "key_env"),
    [
        ("ollama", "http://127.0.0.1:11434/v1", "OLLAMA_BASE_URL", None),
        ("vllm", "http://127.0.0.1:8000/v1", "VLLM_BASE_URL", "VLLM_API_KEY"),
        ("llamacpp", "http://127.0.0.1:8080/v1", "LLAMACPP_BASE_URL", "LLAMACPP_API_KEY"),
        ("lmstudio", "http://127.0.0.1:1234/v1", "LMSTUDIO_BASE_URL", None),
    ],
)
def test_local_providers(provider: str, default: str, url_env: str, key_env: str | None) -> None:
    ep = resolve(f"{provider}/some-model", {})
    assert (ep.wire, ep.base_url, ep.api_key) == ("openai", default, None)
    env = {url_env: "http://gpu-box:9999/v1/", "OPENAI_API_KEY": "sk-not-for-local"}
    if key_env:
        env[key_env] = "local-key"
    ep = resolve(f"{provider}/some-model", env)
    assert ep.base_url == "http://gpu-box:9999/v1"
    assert ep.api_key == ("local-key" if key_env else None)
    assert resolve(f"{provider}/m", env, base_url="http://x:1/v1").base_url == "http://x:1/v1"


def test_openrouter_needs_key_unless_overridden() -> None:
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY is not set"):
        resolve("openrouter/openai/gpt-4o", {})
    ep = resolve("openrouter/openai/gpt-4o", {"OPENROUTER_API_KEY": "or-1"})
    assert (ep.base_url, ep.api_key) == ("https://openrouter.ai/api/v1", "or-1")
    local = resolve("openrouter/openai/gpt-4o", {}, base_url="http://127.0.0.1:5000/v1")
    assert local.api_key is None


def test_bad_base_url_is_config_error() -> None:
    with pytest.raises(ConfigError, match="base URL"):
        resolve("ollama/m", {}, base_url="127.0.0.1:11434")


def test_endpoint_repr_hides_key() -> None:
    ep = resolve("openai/gpt-4o", {"OPENAI_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(ep) and "sk-very-secret" not in str(ep)
    assert "api.openai.com" in repr(ep)


async def test_make_client_picks_class_by_wire() -> None:
    oa = make_client(resolve("vllm/m", {}), timeout=5.0, max_connections=3)
    an = make_client(resolve("anthropic/c", {"ANTHROPIC_API_KEY": "k"}))
    assert type(oa) is OpenAICompatClient and type(an) is AnthropicClient
    assert oa.base_url == "http://127.0.0.1:8000/v1" and oa.timeout == 5.0
    assert oa.max_connections == 3
    await oa.aclose()
    await an.aclose()
