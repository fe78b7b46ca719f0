"""A response cache for evaluations: the same request is answered from SQLite the second
time, so rerunning an eval (or resuming one cut off mid-task) costs nothing.

`CachedClient` wraps any `LMClient`. The key is the sha256 of (namespace, model, messages,
max_tokens): the namespace names the endpoint or the oracle's program version, so two
servers that call a model by the same name never share answers. Temperature is not part of
the key: a cached eval is a replay of the first one. Failures are never cached.

`RoutingClient` sends each model name to the client of its endpoint, for runs whose root
and sub-model live behind different servers (RLM(client=...) hands the client the model's
name without its provider).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from ..errors import ConfigError, LMStatusError
from ..lm.base import Completion, LMClient, Message

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    completion TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def request_key(namespace: str, model: str, messages: list[Message], max_tokens: int | None) -> str:
    body = json.dumps(
        [namespace, model, [[m.get("role"), m.get("content") or ""] for m in messages], max_tokens],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


class ResponseCache:
    """One SQLite file of completions by request key; safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the response cache {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT completion FROM responses WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        return Completion(**data)

    def put(self, key: str, completion: Completion) -> None:
        data = {
            "text": completion.text,
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
            "cost_usd": completion.cost_usd,
            "model": completion.model,
            "finish_reason": completion.finish_reason,
            "cache_read_tokens": completion.cache_read_tokens,
            "cache_write_tokens": completion.cache_write_tokens,
            "reasoning_tokens": completion.reasoning_tokens,
        }
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, model, completion, created) "
                "VALUES (?, ?, ?, ?)",
                (key, completion.model, json.dumps(data, ensure_ascii=False), time.time()),
            )

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedClient:
    """An `LMClient` that answers repeated requests from a `ResponseCache`."""

    def __init__(self, inner: LMClient, cache: ResponseCache, namespace: str = "") -> None:
        self.inner = inner
        self.cache = cache
        self.namespace = namespace
        self.hits = 0
        self.misses = 0

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        key = request_key(self.namespace, model, messages, max_tokens)
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        completion = await self.inner.complete(
            messages, model=model, max_tokens=max_tokens, temperature=temperature
        )
        self.misses += 1
        self.cache.put(key, completion)
        return completion

    async def aclose(self) -> None:
        """The inner client belongs to whoever made it: it is not closed here."""


class RoutingClient:
    """Sends each request to the client registered for its model name."""

    def __init__(self, routes: dict[str, LMClient]) -> None:
        self.routes = dict(routes)

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        client = self.routes.get(model)
        if client is None:
            raise LMStatusError(400, f"no endpoint configured for model {model!r} in this eval")
        return await client.complete(
            messages, model=model, max_tokens=max_tokens, temperature=temperature
        )

    async def aclose(self) -> None:
        """The routed clients belong to the pool that made them."""


class NoSubQueries:
    """Refuses every plain sub-query (a request without a system message): the `rlm-nosub`
    strategy's guarantee that the root answered with code alone. Each refusal is an HTTP
    400 to the engine, so it is not retried; `refused` counts them."""

    MESSAGE = "sub-queries are disabled in the rlm-nosub strategy"

    def __init__(self, inner: LMClient) -> None:
        self.inner = inner
        self.refused = 0

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        if not any(m.get("role") == "system" for m in messages):
            self.refused += 1
            raise LMStatusError(400, self.MESSAGE)
        return await self.inner.complete(
            messages, model=model, max_tokens=max_tokens, temperature=temperature
        )

    async def aclose(self) -> None:
        """Nothing of its own to close."""
