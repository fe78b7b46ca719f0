"""The official library's backends and environments, as recursa's models and sandboxes.

A backend's `backend_kwargs` (model_name, base_url, api_key) become a `PROVIDER/MODEL`
name plus that provider's own base-URL and key variables in the run's environment, so a
key still goes only to its own provider (ARCHITECTURE.md, invariant 8).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError
from ...lm.models import PROVIDERS

OFFICIAL_BACKENDS = (
    "openai",
    "vllm",
    "openrouter",
    "anthropic",
    "azure_openai",
    "gemini",
    "portkey",
    "vercel",
)
"""The backend names the official library accepts."""

KNOWN_KWARGS = frozenset({"model_name", "model", "base_url", "api_key"})

ENVIRONMENTS = {"local": "auto", "docker": "docker"}
"""Official environment -> recursa sandbox. `local` is recursa's isolating default (bwrap,
else landlock), never the host process the official `local` runs code in."""


def sandbox_of(environment: str, kwargs: Mapping[str, Any] | None) -> str:
    """The recursa sandbox for an official environment (`sandbox` in its kwargs overrides)."""
    chosen = dict(kwargs or {}).get("sandbox")
    if isinstance(chosen, str):
        return chosen
    if environment not in ENVIRONMENTS:
        raise ConfigError(
            f"environment {environment!r} is not available in recursa; use "
            f"{' or '.join(map(repr, ENVIRONMENTS))} (both isolate model code on this machine)"
        )
    return ENVIRONMENTS[environment]


class Endpoints:
    """The run's environment: the process's, plus what the backends' kwargs set."""

    def __init__(self, base: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if base is None else base)
        self._given: dict[str, str] = {}

    def model_of(self, backend: str, kwargs: Mapping[str, Any] | None) -> str:
        """The `PROVIDER/MODEL` name of one official backend; its base URL and key go to
        that provider's variables (refused when another backend set different ones)."""
        if backend not in PROVIDERS:
            known = ", ".join(b for b in OFFICIAL_BACKENDS if b in PROVIDERS)
            raise ConfigError(
                f"backend {backend!r} has no recursa provider yet; use one of {known}, or "
                "backend='openai' with the base_url of an OpenAI-compatible endpoint"
            )
        given = dict(kwargs or {})
        unknown = sorted(set(given) - KNOWN_KWARGS)
        if unknown:
            warnings.warn(
                f"recursa ignores backend_kwargs {', '.join(unknown)} (the server's "
                "defaults apply)",
                stacklevel=4,
            )
        name = given.get("model_name") or given.get("model")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"backend {backend!r} needs backend_kwargs={{'model_name': ...}}")
        info = PROVIDERS[backend]
        for field, variable in (("base_url", info.base_url_env), ("api_key", info.key_env)):
            value = given.get(field)
            if value is None:
                continue
            if variable is None or not isinstance(value, str):
                raise ConfigError(f"backend {backend!r}: {field} must be a string it accepts")
            if self._given.get(variable, value) != value:
                raise ConfigError(
                    f"two {backend} backends with different {field}s: recursa reaches one "
                    "provider through one endpoint and key per run"
                )
            self._given[variable] = self.env[variable] = value
        return f"{backend}/{name}"
