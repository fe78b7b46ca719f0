"""The JSON-lines trace: one event per line, written as it happens, flushed each line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..context import Context
from ..errors import ConfigError
from ..events import Event


class JsonlTrace:
    """An event listener writing `--trace FILE`. The file is opened before the run starts,
    so a path that cannot be written is a usage error, not a lost run."""

    def __init__(self, path: str | Path, contexts: list[Context] | None = None) -> None:
        """With `contexts` (--trace-context), their full text is written first, so the
        trace replays anywhere; without, contexts are recorded by reference only."""
        self.path = str(path)
        try:
            self._fh: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot write trace {self.path}: {exc.strerror or exc}") from None
        for index, ctx in enumerate(contexts or []):
            record: dict[str, Any] = {"type": "context_data", "index": index, "name": ctx.name}
            if ctx.kind == "json":
                record["value"] = ctx.value
            elif ctx.kind == "dir":
                root = Path(ctx.root or ".")
                record["files"] = {
                    rel: (root / rel).read_bytes().decode("utf-8", "replace")
                    for rel, _ in ctx.files
                }
            else:
                record["text"] = ctx.as_text()  # a mapped file: read here, if small enough
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def __call__(self, event: Event) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(event.to_dict(), ensure_ascii=False, default=str) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


MIB = 1024 * 1024
MAX_LINE_BYTES = 256 * MIB
"""A trace line longer than this is refused (or skipped): a --trace-context line holds a
whole context, and no context longer than 256 MiB is stored as text."""
MAX_EVENTS = 200_000
"""Events read from one trace file at most: about 100,000 LM calls."""
MAX_DEPTH = 200
"""Nesting of one event at most, well below what would exhaust Python's stack later."""


class TraceFormatError(ConfigError):
    """A trace file that cannot be read as events (usage error: exit code 2)."""


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    """Every event of a trace file, in order; the first line that is not an event (or a
    file past the limits above) is a `TraceFormatError` naming the file and the line."""
    events, _ = read_events(path, tolerant=False)
    return events


def read_events(path: str | Path, *, tolerant: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """The events of a trace file, read with bounded memory, since a trace may come from
    anyone. Strict: the first bad line raises. Tolerant (a run killed mid-write leaves a torn
    last line): bad lines are skipped and counted, and reading stops at MAX_EVENTS; the
    warnings say so."""
    name = str(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise TraceFormatError(f"trace file not found: {name}") from None
    except OSError as exc:
        raise TraceFormatError(f"cannot read trace {name}: {exc.strerror or exc}") from None
    events: list[dict[str, Any]] = []
    warnings: list[str] = []
    skipped = 0
    with fh:
        try:
            for number, raw in enumerate(_lines(fh), start=1):
                if raw is not None and not raw.strip():
                    continue
                if len(events) >= MAX_EVENTS:
                    why = f"{name}: more than {MAX_EVENTS:,} events"
                    if not tolerant:
                        raise TraceFormatError(why)
                    warnings.append(why + f"; only the first {MAX_EVENTS:,} were read")
                    break
                event, problem = _parse(raw)
                if problem is None:
                    events.append(event)
                elif tolerant:
                    skipped += 1
                else:
                    raise TraceFormatError(f"{name} line {number}: {problem}")
        except OSError as exc:
            raise TraceFormatError(f"cannot read trace {name}: {exc.strerror or exc}") from None
    if skipped:
        warnings.append(f"{name}: {skipped} line(s) that are not events were skipped")
    return events, warnings


def _lines(fh: IO[bytes]) -> Iterator[bytes | None]:
    """The file's lines, each at most MAX_LINE_BYTES, read a slice at a time; None stands
    for a longer line, whose rest is read past and never held."""
    while True:
        parts: list[bytes] = []
        size = 0
        while True:
            part = fh.readline(MIB)
            size += len(part)
            if size <= MAX_LINE_BYTES:
                parts.append(part)
            elif parts:
                parts.clear()
            if not part or part.endswith(b"\n"):
                break
        if size == 0:
            return
        yield b"".join(parts) if size <= MAX_LINE_BYTES else None


def _parse(raw: bytes | None) -> tuple[dict[str, Any], str | None]:
    """One line as an event, or why it is not one."""
    if raw is None:
        return {}, f"longer than {MAX_LINE_BYTES // MIB} MiB"
    try:
        event = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return {}, "not UTF-8 text"
    except RecursionError:
        return {}, f"nested more than {MAX_DEPTH} deep"
    except ValueError as exc:
        return {}, f"not JSON ({exc.msg if isinstance(exc, json.JSONDecodeError) else exc})"
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return {}, "not an event (a JSON object with a type)"
    if _deeper_than(event, MAX_DEPTH):
        return {}, f"nested more than {MAX_DEPTH} deep"
    return event, None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests more than `limit` containers deep (without recursing)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item)
    return False
