"""The Sandbox protocol: what the engine needs from any backend, and what a block returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

CallHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""Serves a call that code in the sandbox made (`llm_query`, a tool ...): (fn, args) -> value.
Raising sends the error back into the sandbox as an exception the model's code can catch."""


@dataclass(frozen=True, slots=True)
class ContextPayload:
    """What the worker loads once at start: one spec per context, bulk bytes in `body`."""

    specs: list[dict[str, Any]] = field(default_factory=list)
    body: bytes = b""
    variables: dict[str, Any] = field(default_factory=dict)
    """Names the host sets and the REPL restores after every block (signature inputs,
    a session's `history`), as JSON values."""

    def host_paths(self) -> list[str]:
        """The host paths the worker reads itself, for backends to bind read-only: each
        directory context's root and each mapped file's path."""
        paths = {spec["root"] for spec in self.specs if spec["kind"] == "dir"}
        paths |= {spec["path"] for spec in self.specs if spec["kind"] == "file"}
        return sorted(paths)


@dataclass(slots=True)
class BlockResult:
    """What one code block did, already bounded for the model's eyes."""

    stdout: str = ""
    stdout_len: int = 0
    stderr: str = ""
    stderr_len: int = 0
    error: str | None = None
    final: dict[str, Any] | None = None
    """{"kind": "value"|"submit", "json": v} or {..., "text": s} when FINAL/SUBMIT ran."""
    new_vars: list[str] = field(default_factory=list)
    vars: dict[str, str] = field(default_factory=dict)
    restarted: str | None = None
    """Set when the worker had to be killed and started again: says what was lost."""


class Sandbox(Protocol):
    """A persistent REPL in an isolated process. Scoped to one RLM: `close` ends it."""

    name: str

    async def start(
        self,
        payload: ContextPayload | Callable[[], ContextPayload],
        tools: list[str] | None = None,
    ) -> None: ...

    async def execute(self, code: str, handler: CallHandler) -> BlockResult: ...

    async def add(
        self, payload: ContextPayload, variables: dict[str, Any] | None = None
    ) -> str | None:
        """Give the REPL more contexts and variables; what was lost to a restart this
        needed (None: nothing)."""
        ...

    async def get_value(self, name: str) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...
