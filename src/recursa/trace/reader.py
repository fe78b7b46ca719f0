"""The one reader of traces: a trace file (`--trace`) or a run store's rows, read with
bounded memory, since a trace may come from anyone (docs/SECURITY.md).

Strict (`replay`, `view`, the run store): the first line that is not an event is a
`TraceFormatError` naming the file and the line. Tolerant (`mine`, `distill`: a run killed
mid-write leaves a torn last line): such lines are skipped and counted in a warning.
Either way every event is a JSON object with a string `type`, no line is longer than
MAX_LINE_BYTES, no event nests deeper than MAX_DEPTH, and no more than MAX_EVENTS are read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError

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
    """The events of a trace file and the warnings of a tolerant read (see the module)."""
    name = str(path)
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise TraceFormatError(f"trace file not found: {name}") from None
    except OSError as exc:
        raise TraceFormatError(f"cannot read trace {name}: {exc.strerror or exc}") from None
    with fh:
        try:
            events, warnings = parse_lines(_lines(fh), name, tolerant=tolerant)
        except OSError as exc:
            raise TraceFormatError(f"cannot read trace {name}: {exc.strerror or exc}") from None
    if events and events[0].get("type") == "metadata":
        events = _from_official(events, name)
    return events, warnings


def _from_official(lines: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """An official RLM library log (its first line is `metadata`) as recursa events,
    under the same cap on their number."""
    from .official import to_recursa  # the core's hash: loaded only for such a log

    try:
        events = to_recursa(lines, name)
    except ValueError as exc:
        raise TraceFormatError(str(exc)) from None
    if len(events) > MAX_EVENTS:
        raise TraceFormatError(f"{name}: more than {MAX_EVENTS:,} events")
    return events


def parse_lines(
    lines: Iterable[bytes | str | None], name: str, *, tolerant: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each line (None: one longer than MAX_LINE_BYTES) as an event, under the module's
    caps; `name` says where the lines came from in every error and warning."""
    events: list[dict[str, Any]] = []
    warnings: list[str] = []
    skipped = 0
    for number, raw in enumerate(lines, start=1):
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


def _parse(raw: bytes | str | None) -> tuple[dict[str, Any], str | None]:
    """One line as an event, or why it is not one."""
    if raw is None or len(raw) > MAX_LINE_BYTES:
        return {}, f"longer than {MAX_LINE_BYTES // MIB} MiB"
    try:
        event = json.loads(raw if isinstance(raw, str) else raw.decode("utf-8"))
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
