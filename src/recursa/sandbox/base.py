"""The Sandbox protocol: what the engine needs from any backend, and what a block returns."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

CallHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""Serves a call that code in the sandbox made (`llm_query`, a tool ...): (fn, args) -> value.
Raising sends the error back into the sandbox as an exception the model's code can catch."""


WRITE_STEP = 1 << 20
"""Characters (or bytes) of a payload body encoded and written at a time."""


def encoded_slices(text: str) -> Iterator[bytes]:
    """`text` in UTF-8 (lone surrogates passed through), a WRITE_STEP slice at a time: never
    a whole encoded copy of a large text."""
    for i in range(0, len(text), WRITE_STEP):
        yield text[i : i + WRITE_STEP].encode("utf-8", "surrogatepass")


def utf8_size(text: str) -> int:
    """The length of `text` in UTF-8, without holding its encoding."""
    return len(text) if text.isascii() else sum(map(len, encoded_slices(text)))


@dataclass(frozen=True, slots=True)
class PayloadBody:
    """A payload's bulk data as the pieces it is made of (a context's own str, JSON bytes),
    encoded a slice at a time as it is written: the host never holds a second, encoded
    copy of a large text (nor the pipe's buffer a third)."""

    pieces: tuple[str | bytes, ...] = ()
    size: int = 0
    """Bytes, once encoded."""

    def __len__(self) -> int:
        return self.size

    def chunks(self) -> Iterator[bytes | memoryview]:
        for piece in self.pieces:
            if isinstance(piece, bytes):
                view = memoryview(piece)
                for i in range(0, len(view), WRITE_STEP):
                    yield view[i : i + WRITE_STEP]
            else:
                yield from encoded_slices(piece)

    def __bytes__(self) -> bytes:
        return b"".join(self.chunks())


NO_BODY = PayloadBody()


class StreamedTexts:
    """The prompts of a batched call still on the channel, read in order as they are taken:
    the host holds the few in flight, not the whole batch (which the worker holds anyway).
    Whatever is not taken is skipped before the call is answered (`finish`), so the channel
    stays in step; `finished` is set once the call's bytes are all read, or cannot be."""

    def __init__(
        self,
        lengths: list[int],
        read: Callable[[int], Awaitable[str]],
        skip: Callable[[int], Awaitable[None]],
    ) -> None:
        self.lengths = lengths
        self._read, self._skip = read, skip
        self._ahead: dict[int, str] = {}
        self._next = 0
        self._lock = asyncio.Lock()
        self.finished = asyncio.Event()
        self.broken: BaseException | None = None
        if not lengths:
            self.finished.set()

    def __len__(self) -> int:
        return len(self.lengths)

    async def take(self, index: int) -> str:
        """Prompt `index` (each is taken once); those before it are read and kept."""
        async with self._lock:
            while self._next <= index:
                at = self._next  # `_step` moves it on
                self._ahead[at] = await self._step(self._read)
            return self._ahead.pop(index)

    async def finish(self) -> None:
        """Skip what was not taken, so that the next frame can be read."""
        async with self._lock:
            self._ahead.clear()
            while self._next < len(self.lengths):
                await self._step(self._skip)

    def abandon(self, why: BaseException) -> None:
        """The channel is out of step for good (cancelled mid-read): the worker must go."""
        self.broken = self.broken or why
        self.finished.set()

    async def _step(self, action: Callable[[int], Awaitable[Any]]) -> Any:
        if self.broken is not None:
            raise self.broken
        try:
            value = await action(self.lengths[self._next])
        except BaseException as exc:
            self.abandon(exc)
            raise
        self._next += 1
        if self._next == len(self.lengths):
            self.finished.set()
        return value


@dataclass(frozen=True, slots=True)
class ContextPayload:
    """What the worker loads once at start: one spec per context, bulk data in `body`."""

    specs: list[dict[str, Any]] = field(default_factory=list)
    body: PayloadBody = NO_BODY
    variables: dict[str, Any] = field(default_factory=dict)
    """Names the host sets and the REPL restores after every block (signature inputs,
    a session's `history`), as JSON values."""
    seed: int | None = None
    """Seeds the REPL's `random` at start (the run's seed, recorded in `run_start`)."""

    def host_paths(self) -> list[str]:
        """The host paths the worker reads itself, for backends to bind read-only: each
        directory context's root, each mapped file's or document's path, and the folders of
        the libraries that open documents (sandbox/inside/documents.py)."""
        paths = {spec["root"] for spec in self.specs if spec["kind"] == "dir"}
        paths |= {spec["path"] for spec in self.specs if spec["kind"] in ("file", "doc")}
        for key in ("lib", "arrow"):  # pypdf's folder, pyarrow's
            paths |= {spec[key] for spec in self.specs if spec.get(key) and _opens_docs(spec)}
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


def _opens_docs(spec: dict[str, Any]) -> bool:
    """Whether the worker may open a document for this context spec (a doc, or a directory
    holding one): only then is the document library's folder bound for it."""
    return spec["kind"] == "doc" or bool(spec.get("docs"))
