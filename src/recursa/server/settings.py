"""What an operator allows a client: models, limits (as maxima) and server-side paths.

Shared by `recursa serve`, `recursa mcp` and the `llm` plugin; plain Python, no web
framework. A client's mistake raises `RequestError` (an HTTP 4xx, or a tool error).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..context import Context, from_directory, from_path, from_text, from_value
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..core.programs import RLM

MODEL_PREFIX = "recursa/"

LIMIT_TYPES: dict[str, type] = {
    "max_depth": int,
    "max_iterations": int,
    "max_llm_calls": int,
    "max_tokens": int,
    "concurrency": int,
    "max_cost": float,
    "timeout": float,
    "cell_timeout": float,
}
"""Every limit a request may set, and its kind."""

RUN_DEFAULTS: dict[str, Any] = {
    "max_depth": 1,
    "max_iterations": 30,
    "cell_timeout": 60.0,
    "concurrency": 16,
}
"""`recursa run`'s defaults: also the server's maxima unless the operator gives others."""

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


class RequestError(Exception):
    """A client's mistake: `status` is the HTTP status, `code` OpenAI's error code."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_limit(name: str, value: Any) -> int | float:
    """`value` as a valid limit `name`, or RequestError."""
    kind = LIMIT_TYPES.get(name)
    if kind is None:
        raise RequestError(f"unknown limit {name!r}: the limits are {', '.join(LIMIT_TYPES)}")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int and (not number or not isinstance(value, int) or value < 1):
        raise RequestError(f"limit {name} must be a whole number of at least 1, not {value!r}")
    if kind is float and (not number or not math.isfinite(value) or not value > 0):
        raise RequestError(f"limit {name} must be a positive number, not {value!r}")
    return value


@dataclass
class ServeSettings:
    """The operator's choices, fixed when the server (or MCP server) starts."""

    models: list[str] = field(default_factory=list)
    """PROVIDER/MODEL names offered; empty: any (the default one listed)."""
    default_model: str | None = None
    sub_model: str | None = None
    base_url: str | None = None
    limits: dict[str, Any] = field(default_factory=lambda: dict(RUN_DEFAULTS))
    """Server-side maxima: a request may lower them, never raise them (None: no cap)."""
    allow_paths: list[Path] = field(default_factory=list)
    any_path: bool = False
    """True only for a local MCP server started without --allow-path: any readable path."""
    max_output_chars: int = 20_000
    sandbox: str = "auto"
    mode: str = "code"
    dialect: str = "recursa"
    """The REPL conventions of every served run: recursa's own, or the official library's."""
    memory_limit: int | None = None
    prices_file: str | None = None
    price_args: tuple[str, ...] = ()
    profile: str | None = None
    """The controller profile file every served run uses (None: the built-in one)."""

    def __post_init__(self) -> None:
        for name, value in self.limits.items():
            if value is not None:
                try:
                    check_limit(name, value)
                except RequestError as exc:
                    raise ConfigError(exc.message) from None
        resolved = []
        for raw in self.allow_paths:
            path = Path(raw).expanduser()
            if not path.is_dir():
                raise ConfigError(f"--allow-path {raw}: not a directory")
            resolved.append(path.resolve())
        self.allow_paths = resolved
        if self.default_model is None:
            first = self.models[0] if self.models else None
            self.default_model = first or os.environ.get("RECURSA_MODEL")
        if self.base_url and not self.default_model:
            raise ConfigError("--base-url needs --model: it belongs to that model's provider")

    # ---- models --------------------------------------------------------------------------
    def listed_models(self) -> list[str]:
        """The names /v1/models lists, as clients address them (recursa/PROVIDER/MODEL)."""
        names = self.models or ([self.default_model] if self.default_model else [])
        return [MODEL_PREFIX + name for name in names]

    def model_for(self, requested: Any, *, prefixed: bool = True) -> str:
        """The PROVIDER/MODEL a request names (`recursa/PROVIDER/MODEL` when `prefixed`)."""
        if requested is None or requested == "":
            if self.default_model:
                return self.default_model
            raise RequestError("no model: name one as recursa/PROVIDER/MODEL")
        if not isinstance(requested, str):
            raise RequestError(f"model must be a string, not {requested!r}")
        name = requested
        if prefixed:
            if not requested.startswith(MODEL_PREFIX):
                raise RequestError(
                    f"model {requested!r} is not served here: name it recursa/PROVIDER/MODEL, "
                    "for example recursa/openai/gpt-5",
                    404,
                    "model_not_found",
                )
            name = requested[len(MODEL_PREFIX) :]
        provider, sep, model = name.partition("/")
        if not sep or not provider or not model:
            raise RequestError(
                f"model {requested!r}: expected recursa/PROVIDER/MODEL", 404, "model_not_found"
            )
        if self.models and name not in self.models:
            offered = ", ".join(MODEL_PREFIX + m for m in self.models)
            raise RequestError(
                f"model {requested!r} is not offered by this server (it offers {offered})",
                404,
                "model_not_found",
            )
        return name

    # ---- limits --------------------------------------------------------------------------
    def limits_for(self, requested: Any) -> dict[str, Any]:
        """The limits a run gets: the request's, each capped by the server's maximum; the
        server's value where the request gives none."""
        out = {name: self.limits.get(name) for name in LIMIT_TYPES}
        if requested is None:
            return out
        if not isinstance(requested, Mapping):
            raise RequestError(f"limits must be an object, not {requested!r}")
        for name, value in requested.items():
            if value is None:
                check_limit(name, 1)  # still refuse unknown names
                continue
            value = check_limit(name, value)
            cap = self.limits.get(name)
            out[name] = value if cap is None else min(value, cap)
        return out

    # ---- paths ---------------------------------------------------------------------------
    def resolve_path(self, raw: Any) -> Path:
        """A server-side path a request names, only under an allowed directory (symlinks
        and `..` resolved first); one message for missing and forbidden paths alike."""
        if not isinstance(raw, str) or not raw or "\0" in raw:
            raise RequestError(f"context_path must be a non-empty string, not {raw!r}")
        if not self.allow_paths and not self.any_path:
            raise RequestError(
                "this server reads no server-side paths: its operator allows none (--allow-path)",
                403,
                "path_not_allowed",
            )
        path = Path(raw).expanduser() if self.any_path else Path(raw)
        candidates = [path] if path.is_absolute() else [root / path for root in self.allow_paths]
        if self.any_path and not path.is_absolute():
            candidates.insert(0, Path.cwd() / path)
        for candidate in candidates:
            try:
                real = candidate.resolve(strict=True)
            except (OSError, RuntimeError):
                continue
            if self._allowed(real):
                return real
        where = "" if self.any_path else " under a directory this server allows (--allow-path)"
        raise RequestError(
            f"context_path {raw!r} is not a file or directory{where}", 403, "path_not_allowed"
        )

    def _allowed(self, real: Path) -> bool:
        if self.any_path and not self.allow_paths:
            return True
        return any(real == root or real.is_relative_to(root) for root in self.allow_paths)

    def load_path(self, raw: Any) -> Context:
        """Load an allowed path as a context: a file's text, or a directory whose files
        (symlinks escaping the allowed directories left out) are read lazily."""
        real = self.resolve_path(raw)
        if not real.is_dir():
            return from_path(str(real))
        ctx = from_directory(real)
        kept = [(rel, size) for rel, size in ctx.files if self._allowed((real / rel).resolve())]
        if len(kept) != len(ctx.files):
            digest = hashlib.sha256()
            for rel, size in kept:
                digest.update(f"{rel}\0{size}\n".encode())
            ctx.files, ctx.sha256 = kept, digest.hexdigest()
        return ctx

    # ---- runs ----------------------------------------------------------------------------
    def make_rlm(self, model: str, limits: Mapping[str, Any]) -> RLM:
        """An RLM configured exactly as `recursa run` would be, with these limits."""
        from ..options import make_program

        opts: dict[str, Any] = {
            "model": model,
            "sub_model": self.sub_model,
            "base_url": self.base_url,
            # The base URL is the served (default) model's: a request naming a model of
            # another provider must not send that provider's key to it.
            "base_url_for": self.default_model,
            "strategy": "rlm",
            "mode": self.mode,
            "dialect": self.dialect,
            "signature": None,
            "context_window": None,
            "max_output_chars": self.max_output_chars,
            "sandbox": self.sandbox,
            "memory_limit": self.memory_limit,
            "prices_file": self.prices_file,
            "price_args": self.price_args,
            "trace_context": False,
            "profile": self.profile,
        }
        for name in LIMIT_TYPES:
            value = limits.get(name)
            opts[name] = RUN_DEFAULTS.get(name) if value is None else value
        return make_program(opts)


@dataclass(slots=True)
class Source:
    """A context a request gives, loaded only once the run is admitted."""

    kind: str  # "text", "value" or "path"
    value: Any
    name: str = "<context>"

    def load(self, settings: ServeSettings) -> Context:
        if self.kind == "path":
            return settings.load_path(self.value)
        if self.kind == "text":
            return from_text(self.value, self.name)
        return from_value(self.value, self.name)


def request_sources(body: Mapping[str, Any]) -> list[Source]:
    """The contexts named by a request's `context` (one value: text, or JSON data),
    `contexts` (a list of such values) and `context_path` (a path or a list of paths)."""
    sources: list[Source] = []
    if body.get("context") is not None:
        value = body["context"]
        kind = "text" if isinstance(value, str) else "value"
        sources.append(Source(kind, value, "<context>"))
    if body.get("contexts") is not None:
        values = body["contexts"]
        if not isinstance(values, list):
            raise RequestError("contexts must be a list")
        for i, value in enumerate(values):
            kind = "text" if isinstance(value, str) else "value"
            sources.append(Source(kind, value, f"<contexts[{i}]>"))
    if body.get("context_path") is not None:
        paths = body["context_path"]
        for path in paths if isinstance(paths, list) else [paths]:
            sources.append(Source("path", path, str(path)))
    return sources
