"""Values as the action kernel holds and shows them: results, excerpts and their origins,
texts of values (a mapped file only up to STR_LIMIT), descriptions, and `render`, which
bounds a whole turn's observation and marks untrusted text wherever it appears.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import context_docs
from ...context import Context
from ...sandbox.inside.mapped import STR_LIMIT, MappedText

SHOW_ITEMS = 20


ITEM_CHARS = 300


LINE_CHARS = 500


UNTRUSTED = frozenset({"context", "sub-model", "tool"})


_DEFANG = (
    ("[end untrusted]", "(end untrusted)"),
    ("[untrusted:", "(untrusted:"),
    ("[kernel]", "(kernel)"),
)


class ActionFailed(Exception):
    """What the model did wrong (or what refused it), shown as the action's error."""

    def __init__(self, message: str, excerpts: list[Excerpt] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.excerpts = excerpts or []


@dataclass(slots=True)
class Excerpt:
    origins: frozenset[str]
    text: str
    title: str = ""

    @property
    def label(self) -> str:
        return label_of(self.origins)


@dataclass(slots=True)
class ActionResult:
    name: str
    summary: str = ""
    excerpts: list[Excerpt] = field(default_factory=list)
    error: str | None = None
    new_vars: list[str] = field(default_factory=list)
    final: tuple[Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def label_of(origins: frozenset[str]) -> str:
    bad = sorted(origins & UNTRUSTED)
    if bad:
        return "untrusted: from " + ", ".join(bad)
    if "you" in origins:
        return "from you"
    if "input" in origins:
        return "input"
    return "kernel"


class DirView(Mapping[str, "str | MappedText"]):
    """A directory context: relative path -> file text, read when asked for. A file of at
    least the directory's mmap threshold is a MappedText, as in the REPL, mapped once and
    unmapped by `close`."""

    def __init__(self, ctx: Context) -> None:
        self.root = Path(ctx.root or ".")
        self.sizes = dict(ctx.files)
        self.mmap_threshold = ctx.mmap_threshold
        self.docs = dict(ctx.docs)
        self._mapped: dict[str, MappedText] = {}

    def __getitem__(self, key: str) -> str | MappedText:
        if key not in self.sizes:
            raise KeyError(key)
        if key in self.docs:  # a document's text, its pages after `[page n]` lines
            return context_docs.document_text(str(self.root / key), self.docs[key])
        size = self.sizes[key]
        if size and size >= self.mmap_threshold:
            if key not in self._mapped:
                self._mapped[key] = MappedText(str(self.root / key))
            return self._mapped[key]
        return (self.root / key).read_bytes().decode("utf-8", "replace")

    def __iter__(self) -> Iterator[str]:
        return iter(self.sizes)

    def __len__(self) -> int:
        return len(self.sizes)

    def as_text(self) -> str:
        return "\n".join(f"=== {rel} ===\n{text_of(self[rel])}" for rel in self.sizes)

    def close(self) -> None:
        for text in self._mapped.values():
            text.close()
        self._mapped.clear()


def text_of(value: Any) -> str:
    """A value as one text: what search, lines, chunk and prompts read."""
    if isinstance(value, str):
        return value
    if isinstance(value, MappedText):
        return _whole(value)
    if isinstance(value, DirView):
        return value.as_text()
    if isinstance(value, list | tuple):
        return "\n".join(
            text_of(v) if isinstance(v, str | MappedText) else json_text(v) for v in value
        )
    return json_text(value)


def _whole(text: MappedText) -> str:
    """All of a mapped file, for an action that needs a whole text: refused past STR_LIMIT,
    as `str(context)` is in the REPL, so that no action copies gigabytes into the host."""
    if text.nbytes > STR_LIMIT:
        raise ActionFailed(
            f"this needs the whole text of a mapped file of {text.nbytes:,} bytes, and more "
            f"than {STR_LIMIT:,} are never read whole: search it, or load a range of it "
            '(load with "unit": "lines" or "chars") and use that.'
        )
    return str(text)


def plain(value: Any) -> Any:
    """A value as JSON holds it: a mapped file as its text, a directory as a dict of texts."""
    if isinstance(value, MappedText):
        return _whole(value)
    if isinstance(value, DirView):
        return {rel: plain(text) for rel, text in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def json_text(value: Any) -> str:
    if isinstance(value, DirView):
        return value.as_text()
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _json_default(value: Any) -> Any:
    return text_of(value) if isinstance(value, MappedText | DirView) else str(value)


def describe(value: Any) -> str:
    """`str of 1,234 characters (12 lines)`, `list of 21 items`, `int 42`: never text."""
    if isinstance(value, str):
        lines = value.count("\n") + (1 if value and not value.endswith("\n") else 0)
        return f"str of {len(value):,} characters ({lines:,} line{'' if lines == 1 else 's'})"
    if isinstance(value, MappedText):  # never its lines or characters: a pass over the file
        return f"mapped file of {value.nbytes:,} bytes"
    if isinstance(value, DirView):
        return f"directory of {len(value):,} files ({sum(value.sizes.values()):,} bytes)"
    if isinstance(value, list | tuple):
        return f"list of {len(value):,} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, Mapping):
        return f"mapping of {len(value):,} key{'' if len(value) == 1 else 's'}"
    if value is None or isinstance(value, bool | int | float):
        shown = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else value
        return f"{type(value).__name__} {shown}"
    return type(value).__name__


def segments(value: Any) -> Iterator[tuple[Any, str | MappedText]]:
    """What a search reads: a text whole; a list or mapping item by item. A mapped file is
    searched where it lies, never read whole."""
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield i, segment(item)
    elif isinstance(value, Mapping):
        for key in value:
            yield key, segment(value[key])
    else:
        yield None, segment(value)


def segment(value: Any) -> str | MappedText:
    return value if isinstance(value, str | MappedText) else text_of(value)


def peek(value: Any) -> str:
    """An item's text for a one-line preview: no more of a mapped file than that line shows."""
    return value[: ITEM_CHARS + 1] if isinstance(value, MappedText) else text_of(value)


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, cut in the middle with the true length shown."""
    if len(text) <= limit:
        return text
    note = f"\n... [cut: {len(text):,} characters in all] ...\n"
    if limit < len(note) + 20:
        return text[: max(limit, 0)]
    head = (limit - len(note)) // 2
    tail = limit - len(note) - head
    return text[:head] + note + text[len(text) - tail :]


def one_line(text: str, limit: int = ITEM_CHARS) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def mapped_range(text: MappedText, start: int, end: int | None) -> str:
    """`text[start:end]` of a mapped file, refused past STR_LIMIT characters."""
    if start < 0 or end is None or end < 0:
        start, end, _ = slice(start, end).indices(len(text))
    if end - start > STR_LIMIT:
        raise ActionFailed(
            f"that range is {end - start:,} characters; at most {STR_LIMIT:,} of a mapped file "
            "are read at once: load a smaller range, or search it."
        )
    return text[start:end]


def render(
    results: list[tuple[int, ActionResult]], notes: list[str], limit: int
) -> tuple[str, list[str]]:
    """A turn's observation in at most `limit` characters, and each action's own part.

    Kernel lines are kept whole where they fit; excerpts share what remains, each cut in
    the middle; whatever still overflows is cut as a whole."""
    heads = []
    for index, result in results:
        if result.error is not None:
            heads.append(f"[action {index}: {result.name}] [kernel] error: {result.error}")
        else:
            heads.append(f"[action {index}: {result.name}] [kernel] {result.summary}")
    excerpts = [(i, e) for i, (_, res) in enumerate(results) for e in res.excerpts]
    fixed = sum(len(h) + 1 for h in heads) + sum(len(n) + 2 for n in notes)
    framing = sum(len(e.label) + len(e.title) + 25 for _, e in excerpts)
    share = (limit - fixed - framing) // max(len(excerpts), 1)
    parts = list(heads)
    for i, excerpt in excerpts:
        body = _defang(cut(excerpt.text, max(share, 0)))
        close = "[end untrusted]" if excerpt.label.startswith("untrusted") else "[end]"
        title = f" {excerpt.title}" if excerpt.title else ""
        parts[i] += f"\n[{excerpt.label}]{title}\n{body}\n{close}"
    whole = "\n".join(parts)
    if notes:
        whole += "\n\n" + "\n\n".join(notes)
    return cut(whole, limit), parts


def _defang(text: str) -> str:
    """Untrusted text cannot close its own block or pose as the kernel (same lengths)."""
    for marker, harmless in _DEFANG:
        if marker in text:
            text = text.replace(marker, harmless)
    return text


def brief(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
