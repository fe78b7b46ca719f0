"""The action kernel: variables, and one deterministic handler per action. No code runs.

Variables live in a dict. Each remembers where its data came from (`origins`): the context,
a sub-model, a tool, the model itself ("you"), the caller's inputs, or the kernel. What an
action shows the model is an `ActionResult`: a kernel summary (trusted) and excerpts, each
labelled with its origins, so text from the context, a sub-model or a tool is marked
untrusted wherever it appears. `render` bounds a whole turn's observation.

Kernel-only actions run in a worker thread (a search over a gigabyte must not stall the
event loop of a server running other jobs); every LM call goes through the run's gateway,
so the ledger, events and replay see them exactly as in code mode.

A large file (a `file` context, or a directory's file of at least its mmap threshold) is a
`MappedText`, mapped here in the host as the REPL worker maps it, and closed with the kernel:
search, lines, preview and ranges stream it; the actions that need a whole text (chunk,
json_parse, extract, sub_lm, final) get it only up to STR_LIMIT, as `str(context)` does.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from ...context import Context
from ...errors import BudgetExceeded, ConfigError, LMError
from ...events import BudgetRefused, ToolCalled
from ...sandbox._mapped import STR_LIMIT, MappedText
from ..run import Run
from ..signature import Signature, SignatureError, parse_signature
from . import prompts
from . import schema as s

KEEP_HITS = 100_000
"""Hits kept in an `into` variable; past this the count goes on, the list stops."""
COUNT_CAP = 1_000_000
"""Regex hits counted before the count is reported as "at least"."""
COUNT_BATCH = 65_536
NOCASE_WINDOW = 1 << 24
MAX_CHUNKS = 100_000
MAX_FANOUT = 10_000
"""Prompts one extract_over_chunks may send."""
MAX_PROMPT_CHARS = 4_000_000
"""A sub-model prompt longer than this (about a million tokens) is refused before sending."""
SHOW_ITEMS = 20
ITEM_CHARS = 300
LINE_CHARS = 500
LISTED_VARS = 30
HIT_WINDOW = 2 * ITEM_CHARS
"""Characters read on each side of a hit in a mapped file: enough for the text `_hit` shows."""
LINE_PIECE = 1 << 22
"""Characters of a mapped file read at once when counting lines."""

UNTRUSTED = frozenset({"context", "sub-model", "tool"})
PROTECTED = re.compile(r"^context(_\d+)?$")
_STEP = re.compile(r'\[(-?\d+)\]|\.([A-Za-z_]\w*)|\["([^"\]\\]+)"\]')
_HOLE = re.compile(r"\{([A-Za-z_]\w*" + s.STEP_PATTERN + r"*)\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
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
        self._mapped: dict[str, MappedText] = {}

    def __getitem__(self, key: str) -> str | MappedText:
        if key not in self.sizes:
            raise KeyError(key)
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


# ---- values --------------------------------------------------------------------------------


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
            text_of(v) if isinstance(v, str | MappedText) else _dumps(v) for v in value
        )
    return _dumps(value)


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


def _plain(value: Any) -> Any:
    """A value as JSON holds it: a mapped file as its text, a directory as a dict of texts."""
    if isinstance(value, MappedText):
        return _whole(value)
    if isinstance(value, DirView):
        return {rel: _plain(text) for rel, text in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _dumps(value: Any) -> str:
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


def _segments(value: Any) -> Iterator[tuple[Any, str | MappedText]]:
    """What a search reads: a text whole; a list or mapping item by item. A mapped file is
    searched where it lies, never read whole."""
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield i, _segment(item)
    elif isinstance(value, Mapping):
        for key in value:
            yield key, _segment(value[key])
    else:
        yield None, _segment(value)


def _segment(value: Any) -> str | MappedText:
    return value if isinstance(value, str | MappedText) else text_of(value)


def _peek(value: Any) -> str:
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


def _one_line(text: str, limit: int = ITEM_CHARS) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- search --------------------------------------------------------------------------------


@dataclass(slots=True)
class Found:
    total: int = 0
    capped: bool = False
    hits: list[dict[str, Any]] = field(default_factory=list)


def compile_regex(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """A regex as actions use it (^ and $ at line ends), or ActionFailed saying why not."""
    flags = re.MULTILINE | (re.IGNORECASE if ignore_case else 0)
    try:
        rx = re.compile(pattern, flags)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise ActionFailed(
            f"bad regex {_short(pattern)}: {exc}. Fix it, or search it as a literal with "
            '"regex": false.'
        ) from None
    if _nested_repeat(pattern, flags):
        raise ActionFailed(
            f"the regex {_short(pattern)} repeats a group that itself repeats (like (a+)+), "
            "which can take exponential time: rewrite it without the nesting."
        )
    return rx


def _nested_repeat(pattern: str, flags: int) -> bool:
    """True when an unbounded repeat holds another repeat: catastrophic backtracking."""
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser as parser  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - other Pythons
        return False
    try:
        parsed = parser.parse(pattern, flags)
    except Exception:  # the compile above accepted it
        return False
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT}

    def walk(items: Any, under_unbounded: bool, depth: int = 0) -> bool:
        if depth > 50:
            return True
        for op, av in items:
            if op in repeats:
                _low, high, sub = av
                if under_unbounded and high > 1:
                    return True
                if walk(sub, under_unbounded or high == c.MAXREPEAT, depth + 1):
                    return True
            elif op is c.SUBPATTERN:
                if walk(av[-1], under_unbounded, depth + 1):
                    return True
            elif op is c.BRANCH:
                if any(walk(branch, under_unbounded, depth + 1) for branch in av[1]):
                    return True
            elif op in (c.ASSERT, c.ASSERT_NOT):
                if walk(av[1], under_unbounded, depth + 1):
                    return True
            elif getattr(c, "ATOMIC_GROUP", None) is op and walk(av, False, depth + 1):
                return True
        return False

    try:
        return walk(parsed, False)
    except (TypeError, ValueError, RecursionError):  # pragma: no cover - defensive
        return False


def search_value(
    value: Any,
    pattern: str,
    *,
    regex: bool = False,
    ignore_case: bool = False,
    keep: int = 20,
) -> Found:
    """Every hit of `pattern` in `value` counted (regex: up to COUNT_CAP), the first `keep`
    kept as {offset, line, match, groups, text[, item]}: a literal by `str.find`, a regex
    by `finditer`."""
    found = Found()
    nocase = not regex and ignore_case and pattern.isascii() and "\n" not in pattern
    rx = None
    if regex or ignore_case:
        rx = compile_regex(pattern if regex else re.escape(pattern), ignore_case)
    for item, text in _segments(value):
        if isinstance(text, MappedText):
            if rx is None:
                _literal_mapped(text, pattern, keep, item, found)
            else:
                _regex_mapped(text, rx, keep, item, found)
        elif rx is None:
            _literal(text, pattern, keep, item, found)
        elif nocase and text.isascii():
            _literal_nocase(text, pattern.lower(), keep, item, found)
        else:
            _regex(text, rx, keep, item, found)
        if found.capped:
            break
    return found


def _literal(text: str, pattern: str, keep: int, item: Any, found: Found) -> None:
    find, count = text.find, text.count
    hits = found.hits
    pos = last = 0
    line = 1
    n = len(pattern)
    while len(hits) < keep:
        i = find(pattern, pos)
        if i < 0:
            found.total += 0
            return
        line += count("\n", last, i)
        last = i
        hits.append(_hit(text, i, i + n, pattern, (), line, item))
        found.total += 1
        pos = i + n
    found.total += count(pattern, pos)


def _literal_nocase(text: str, lowered: str, keep: int, item: Any, found: Found) -> None:
    """A case-insensitive literal in ASCII text: windows ending at a newline (a pattern
    without one never spans two) are lowered and scanned with `str.find`."""
    hits = found.hits
    n = len(lowered)
    start = last = 0
    line = 1
    while start < len(text):
        end = text.find("\n", start + NOCASE_WINDOW)
        end = len(text) if end < 0 else end + 1
        window = text[start:end].lower()
        pos = 0
        while len(hits) < keep:
            i = window.find(lowered, pos)
            if i < 0:
                break
            offset = start + i
            line += text.count("\n", last, offset)
            last = offset
            hits.append(_hit(text, offset, offset + n, text[offset : offset + n], (), line, item))
            found.total += 1
            pos = i + n
        else:
            found.total += window.count(lowered, pos)
        start = end


def _regex(text: str, rx: re.Pattern[str], keep: int, item: Any, found: Found) -> None:
    hits = found.hits
    last = 0
    line = 1
    matches = rx.finditer(text)
    for m in matches:
        found.total += 1
        i = m.start()
        line += text.count("\n", last, i)
        last = i
        hits.append(_hit(text, i, m.end(), m.group(), m.groups(), line, item))
        if len(hits) >= keep:
            break
    # The rest are only counted: in batches, so the iteration runs in C.
    while found.total < COUNT_CAP:
        batch = len(list(islice(matches, min(COUNT_BATCH, COUNT_CAP - found.total))))
        found.total += batch
        if batch == 0:
            return
    found.capped = next(matches, None) is not None


def _hit(
    text: str, start: int, end: int, match: str, groups: tuple[Any, ...], line: int, item: Any
) -> dict[str, Any]:
    begin = text.rfind("\n", 0, start) + 1
    stop = text.find("\n", end)
    if stop < 0:
        stop = len(text)
    if stop - begin > ITEM_CHARS:  # a long line: the part around the hit
        begin = max(begin, start - ITEM_CHARS // 3)
        stop = min(stop, max(end, begin + ITEM_CHARS))
    hit: dict[str, Any] = {
        "offset": start,
        "line": line,
        "match": match[:ITEM_CHARS],
        "groups": [g[:ITEM_CHARS] if isinstance(g, str) else g for g in groups],
        "text": text[begin:stop][: ITEM_CHARS * 2],
    }
    if item is not None:
        hit["item"] = item
    return hit


def _literal_mapped(text: MappedText, pattern: str, keep: int, item: Any, found: Found) -> None:
    """`_literal` over a mapped file: `find` and `count` search its bytes a window at a time,
    and lines are counted between hits, so a search reads the file once at most."""
    hits = found.hits
    pos = last = 0
    line = 1
    n = len(pattern)
    while len(hits) < keep:
        i = text.find(pattern, pos)
        if i < 0:
            return
        line += text.count("\n", last, i)
        last = i
        hits.append(_hit_mapped(text, i, i + n, pattern, (), line, item))
        found.total += 1
        pos = i + n
    found.total += text.count(pattern, pos)


def _regex_mapped(
    text: MappedText, rx: re.Pattern[str], keep: int, item: Any, found: Found
) -> None:
    """`_regex` over a mapped file, whose matches come a chunk of text at a time."""
    hits = found.hits
    last = 0
    line = 1
    matches = text._matches(rx)
    for i, m in matches:
        found.total += 1
        line += text.count("\n", last, i)
        last = i
        end = i + m.end() - m.start()
        hits.append(_hit_mapped(text, i, end, m.group(), m.groups(), line, item))
        if len(hits) >= keep:
            break
    while found.total < COUNT_CAP:
        batch = sum(1 for _ in islice(matches, min(COUNT_BATCH, COUNT_CAP - found.total)))
        found.total += batch
        if batch == 0:
            return
    found.capped = next(matches, None) is not None


def _hit_mapped(
    text: MappedText,
    start: int,
    end: int,
    match: str,
    groups: tuple[Any, ...],
    line: int,
    item: Any,
) -> dict[str, Any]:
    """`_hit` for a hit in a mapped file, read from a window around it: `_hit` shows at
    most ITEM_CHARS of a line around the hit, all of them inside the window."""
    w0 = max(start - HIT_WINDOW, 0)
    window = text[w0 : end + HIT_WINDOW]
    hit = _hit(window, start - w0, end - w0, match, groups, line, item)
    hit["offset"] = start
    return hit


# ---- lines ---------------------------------------------------------------------------------


def line_starts(text: str, first: int, count: int | None = None) -> array[int]:
    """Offsets where lines `first` (1-based) onwards start, `count` of them (all if None)."""
    pos = 0
    find = text.find
    for _ in range(first - 1):
        nl = find("\n", pos)
        if nl < 0:
            return array("q")
        pos = nl + 1
    starts = array("q")
    if pos > len(text) or (pos == len(text) and (pos > 0 or not text)):
        return starts
    while count is None or len(starts) < count:
        starts.append(pos)
        nl = find("\n", pos)
        if nl < 0 or nl + 1 >= len(text):
            break
        pos = nl + 1
    return starts


def _line_end(text: str, start: int) -> int:
    nl = text.find("\n", start)
    return len(text) if nl < 0 else nl


def _skip_lines(text: MappedText, pos: int, k: int) -> tuple[int, int]:
    """(the offset just past the k-th "\n" at or after `pos`, k) in a mapped file, or (its
    end, the line breaks there were) when it has fewer: pieces are counted, not split."""
    passed = 0
    while passed < k:
        piece = text[pos : pos + LINE_PIECE]
        if not piece:
            break
        n = piece.count("\n")
        if passed + n >= k:
            want, lo, hi = k - passed, 0, len(piece)
            while lo < hi:  # the shortest prefix of the piece that holds `want` of them
                mid = (lo + hi) // 2
                if piece.count("\n", 0, mid) >= want:
                    hi = mid
                else:
                    lo = mid + 1
            return pos + lo, k
        passed += n
        pos += len(piece)
    return pos, passed


def _line_start(text: MappedText, first: int) -> int:
    """Where line `first` (1-based) of a mapped file starts, or -1, as `line_starts` says."""
    pos, passed = _skip_lines(text, 0, first - 1)
    return pos if passed == first - 1 and text[pos : pos + 1] else -1


def _mapped_lines(text: MappedText, first: int, count: int, cut: int | None) -> list[str]:
    """Lines `first` onwards of a mapped file, `count` of them, as `line_starts` and
    `_line_end` split a str; each whole, or only its first `cut` characters (what the
    observation shows of a line: a line of a gigabyte is not read for it)."""
    lines: list[str] = []
    pos = _line_start(text, first)
    while pos >= 0 and len(lines) < count:
        nl = text.find("\n", pos)
        stop = None if nl < 0 else nl
        if cut is not None:
            stop = pos + cut if stop is None else min(stop, pos + cut)
        lines.append(text[pos:stop])
        if nl < 0 or not text[nl + 1 : nl + 2]:
            break
        pos = nl + 1
    return lines


def _mapped_range(text: MappedText, start: int, end: int | None) -> str:
    """`text[start:end]` of a mapped file, refused past STR_LIMIT characters."""
    if start < 0 or end is None or end < 0:
        start, end, _ = slice(start, end).indices(len(text))
    if end - start > STR_LIMIT:
        raise ActionFailed(
            f"that range is {end - start:,} characters; at most {STR_LIMIT:,} of a mapped file "
            "are read at once: load a smaller range, or search it."
        )
    return text[start:end]


def _mapped_line_range(text: MappedText, first: int, end: int | None) -> str:
    """Lines [first, end) of a mapped file, as `_do_load` cuts them from a str: without the
    line break that ends the last one."""
    count = None if end is None else max(end - first, 0)
    lo = _line_start(text, first) if count != 0 else -1
    if lo < 0:
        return ""
    if count is not None:
        hi, passed = _skip_lines(text, lo, count)
        if passed == count:
            return _mapped_range(text, lo, hi - 1)
    else:
        hi = len(text)
    if text[hi - 1 : hi] == "\n":
        hi -= 1
    return _mapped_range(text, lo, hi)


# ---- the kernel ----------------------------------------------------------------------------


class Kernel:
    """Variables and the actions over them, for one action-mode run."""

    def __init__(
        self,
        run: Run | None,
        contexts: list[Context],
        inputs: dict[str, Any] | None = None,
        *,
        signature: Signature | None = None,
    ) -> None:
        self.run = run
        self.signature = signature
        self.vars: dict[str, Any] = {}
        self.origins: dict[str, frozenset[str]] = {}
        self._described: dict[str, str] = {}
        self.tools = dict(run.tools) if run is not None else {}
        values = [_context_value(c) for c in contexts]
        self._opened = [v for v in values if isinstance(v, MappedText | DirView)]
        ctx = frozenset({"context"})
        if len(values) == 1:
            self._set("context", values[0], ctx)
        elif values:
            self._set("context", list(values), ctx)
            for i, value in enumerate(values):
                self._set(f"context_{i}", value, ctx)
        for name, value in (inputs or {}).items():
            if re.match(s.NAME_PATTERN, name) and not PROTECTED.match(name):
                self._set(name, value, frozenset({"input"}))

    def close(self) -> None:
        """Unmap the files this kernel mapped: its `file` contexts, directories' large files."""
        for value in self._opened:
            value.close()

    def _set(self, name: str, value: Any, origins: frozenset[str]) -> None:
        self.vars[name] = value
        self.origins[name] = origins
        self._described.pop(name, None)

    def about(self, ref: str, value: Any) -> str:
        """`describe(value)` of what `ref` names, remembered for whole variables: counting
        the lines of a gigabyte is a pass over it, not to be made on every search."""
        if ref not in self.vars or self.vars[ref] is not value:
            return describe(value)
        text = self._described.get(ref)
        if text is None:
            text = self._described[ref] = describe(value)
        return text

    def store(self, name: str, value: Any, origins: frozenset[str], result: ActionResult) -> str:
        if PROTECTED.match(name):
            raise ActionFailed(
                f"`{name}` holds a context and cannot be replaced: use another name."
            )
        self._set(name, value, origins or frozenset({"kernel"}))
        result.new_vars.append(name)
        return f"stored in `{name}` ({self.about(name, value)})"

    def listing(self) -> str:
        names = list(self.vars)
        shown = ", ".join(f"{n} ({self.about(n, self.vars[n])})" for n in names[:LISTED_VARS])
        more = f", and {len(names) - LISTED_VARS:,} more" if len(names) > LISTED_VARS else ""
        return f"Variables: {shown}{more}." if names else "There are no variables yet."

    # ---- references ------------------------------------------------------------------------
    def resolve(self, ref: str) -> tuple[Any, frozenset[str]]:
        head = re.match(r"[A-Za-z_]\w*", ref)
        if head is None:
            raise ActionFailed(f"{_short(ref)} is not a variable. {self.listing()}")
        name = head.group()
        if name not in self.vars:
            raise ActionFailed(f"no variable `{name}`. {self.listing()}")
        value = self.vars[name]
        path = name
        origins = self.origins[name]
        for step in _STEP.finditer(ref, head.end()):
            index, attr, key = step.groups()
            try:
                value = _step(value, path, int(index) if index is not None else None, attr or key)
            except ActionFailed as exc:
                for excerpt in exc.excerpts:  # the keys are the variable's own data
                    excerpt.origins = origins
                raise
            path += step.group()
        return value, origins

    # ---- running ---------------------------------------------------------------------------
    async def execute(self, action: Any) -> ActionResult:
        """Run one validated action; never raises on the model's mistakes."""
        name = action.action
        result = ActionResult(name)
        try:
            handler = getattr(self, f"_do_{name}")
            if name in _ASYNC_ACTIONS:
                await handler(action, result)
            else:
                await asyncio.to_thread(handler, action, result)
        except ActionFailed as exc:
            result.error = exc.message
            result.excerpts = exc.excerpts
        except BudgetExceeded as exc:
            result.error = f"the budget refused it: {exc}"
        except LMError as exc:
            result.error = f"the sub-model call failed: {exc}"
        except (MemoryError, RecursionError, OverflowError) as exc:
            result.error = f"too large: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a kernel bug must not end the run
            result.error = f"internal error in the kernel ({type(exc).__name__}: {exc})"
        return result

    # ---- looking ---------------------------------------------------------------------------
    def _do_preview(self, a: s.Preview, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        if isinstance(value, str | MappedText):
            start = max(len(value) + a.start, 0) if a.start < 0 else a.start
            part = value[start : start + a.length]
            if not part:  # past the end (the length of a mapped file costs a pass over it)
                start = min(start, len(value))
            about = self.about(a.var, value)
            r.summary = f"`{a.var}` ({about}), characters {start:,} to {start + len(part):,}:"
            r.excerpts.append(Excerpt(origins, part))
            return
        if isinstance(value, list | tuple | Mapping):
            keys = list(range(len(value))) if not isinstance(value, Mapping) else list(value)
            start = max(len(keys) + a.start, 0) if a.start < 0 else min(a.start, len(keys))
            chosen = keys[start : start + min(a.length, 200)]
            if isinstance(value, Mapping):
                lines = [f"{_one_line(str(k), 200)}: {_one_line(_peek(value[k]))}" for k in chosen]
            else:
                lines = [f"[{k}] {_one_line(_peek(value[k]))}" for k in chosen]
            body = "\n".join(lines)
            about = self.about(a.var, value)
            r.summary = f"`{a.var}` ({about}), items {start:,} to {start + len(chosen):,}:"
            r.excerpts.append(Excerpt(origins, body or "(none)"))
            return
        r.summary = f"`{a.var}` ({self.about(a.var, value)}):"
        r.excerpts.append(Excerpt(origins, _dumps(value)[: a.length]))

    def _do_search(self, a: s.Search, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        keep = KEEP_HITS if a.into else a.max_hits
        found = search_value(value, a.pattern, regex=a.regex, ignore_case=a.ignore_case, keep=keep)
        kind = "regex" if a.regex else "literal"
        total = f"at least {found.total:,}" if found.capped else f"{found.total:,}"
        shown = found.hits[: a.max_hits]
        summary = f"{total} hit{'' if found.total == 1 else 's'} for {kind} {_short(a.pattern)}"
        summary += f" in `{a.var}` ({self.about(a.var, value)})"
        if shown:
            summary += f"; the first {len(shown)} below (offset, line: text around the hit)"
        if a.into:
            summary += "; " + self.store(a.into, found.hits, origins, r)
            if len(found.hits) < found.total:
                summary += f"; only the first {len(found.hits):,} hits were kept"
        r.summary = summary + "."
        if shown:
            texts: dict[Any, str | MappedText] = {}  # only the items hits are in, read once
            lines = []
            for hit in shown:
                item = hit.get("item")
                if item not in texts:
                    texts[item] = _segment(value if item is None else value[item])
                text = texts[item]
                start, end = hit["offset"], hit["offset"] + len(hit["match"])
                around = text[max(start - a.context_chars, 0) : end + a.context_chars]
                where = f"item {hit['item']!r}, " if "item" in hit else ""
                lines.append(
                    f"- {where}offset {start:,}, line {hit['line']:,}: "
                    + _one_line(around, 2 * a.context_chars + ITEM_CHARS)
                )
            r.excerpts.append(Excerpt(origins, "\n".join(lines)))

    def _do_lines(self, a: s.Lines, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        text: str | MappedText
        if isinstance(value, MappedText):
            text = value
            lines = _mapped_lines(text, a.start, a.count, None if a.into else LINE_CHARS + 1)
        else:
            text = text_of(value)
            lines = [text[p : _line_end(text, p)] for p in line_starts(text, a.start, a.count)]
        if not lines:
            total = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
            raise ActionFailed(f"`{a.var}` has {total:,} lines: there is no line {a.start:,}.")
        last = a.start + len(lines) - 1
        r.summary = f"`{a.var}` lines {a.start:,} to {last:,}:"
        r.excerpts.append(
            Excerpt(
                origins,
                "\n".join(
                    f"{a.start + i:>7}| " + _one_line(line, LINE_CHARS)
                    for i, line in enumerate(lines)
                ),
            )
        )
        if a.into:
            r.summary += " " + self.store(a.into, "\n".join(lines), origins, r) + "."

    def _do_load(self, a: s.Load, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        unit = a.unit or ("chars" if isinstance(value, str | MappedText) else "items")
        if unit == "items":
            if isinstance(value, Mapping):
                keys = list(value)[a.start : a.end]
                part: Any = {k: value[k] for k in keys}
            elif isinstance(value, list | tuple):
                part = list(value[a.start : a.end])
            else:
                raise ActionFailed(
                    f'`{a.var}` is a {self.about(a.var, value)}: "unit": "items" needs a list or a '
                    'mapping; use "chars" or "lines".'
                )
        elif unit == "chars" and isinstance(value, MappedText):
            part = _mapped_range(value, a.start, a.end)
        elif unit == "chars":
            part = text_of(value)[a.start : a.end]
        elif a.start < 1 or (a.end is not None and a.end < 1):
            raise ActionFailed('with "unit": "lines", start and end are line numbers (1 up).')
        elif isinstance(value, MappedText):
            part = _mapped_line_range(value, a.start, a.end)
        else:
            text = text_of(value)
            count = None if a.end is None else max(a.end - a.start, 0)
            starts = line_starts(text, a.start, count) if count != 0 else array("q")
            if not starts:
                part = ""
            else:
                end = _line_end(text, starts[-1])
                part = text[starts[0] : end]
        r.summary = f"{unit} {a.start}:{'' if a.end is None else a.end} of `{a.var}` "
        r.summary += self.store(a.into, part, origins, r) + "."

    def _do_chunk(self, a: s.Chunk, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        if a.overlap >= a.size:
            raise ActionFailed(f"overlap ({a.overlap}) must be smaller than size ({a.size}).")
        unit = a.unit or ("items" if isinstance(value, list | tuple | Mapping) else "chars")
        step = a.size - a.overlap
        chunks: list[Any]
        if unit == "items":
            if not isinstance(value, list | tuple | Mapping):
                raise ActionFailed(
                    f'`{a.var}` is a {self.about(a.var, value)}: "unit": "items" needs a list; use '
                    '"chars" or "lines".'
                )
            items = list(value.values()) if isinstance(value, Mapping) else list(value)
            _check_chunks(len(items), a.size, step)
            chunks = [items[i : i + a.size] for i in range(0, max(len(items) - a.overlap, 1), step)]
        elif unit == "chars":
            text = text_of(value)
            _check_chunks(len(text), a.size, step)
            chunks = [text[i : i + a.size] for i in range(0, max(len(text) - a.overlap, 1), step)]
        else:
            text = text_of(value)
            starts = line_starts(text, 1)
            _check_chunks(len(starts), a.size, step)
            chunks = []
            for i in range(0, max(len(starts) - a.overlap, 1), step):
                if i >= len(starts):
                    break
                j = i + a.size
                end = starts[j] - 1 if j < len(starts) else _line_end(text, starts[-1])
                chunks.append(text[starts[i] : end])
            if not chunks:
                chunks = [text]
        r.summary = f"`{a.var}` in {len(chunks):,} chunk{'' if len(chunks) == 1 else 's'} of "
        r.summary += f"{a.size:,} {unit}"
        r.summary += f" (overlap {a.overlap:,})" if a.overlap else ""
        r.summary += "; " + self.store(a.into, chunks, origins, r) + "."

    def _do_vars(self, a: s.Vars, r: ActionResult) -> None:
        r.summary = self.listing()

    def _do_json_parse(self, a: s.JsonParse, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        text = text_of(value)
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as exc:
            parsed = _first_json(text)
            if parsed is None:
                raise ActionFailed(f"`{a.var}` holds no JSON value ({exc}).") from None
        r.summary = f"JSON parsed from `{a.var}`; " + self.store(a.into, parsed, origins, r) + "."

    def _do_aggregate(self, a: s.Aggregate, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        if isinstance(value, Mapping):
            items = list(value.values())
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise ActionFailed(
                f"aggregate needs a list, and `{a.var}` is a {self.about(a.var, value)}: make "
                "one with chunk, search (into) or extract_over_chunks first."
            )
        total = len(items)
        missing = 0
        if a.field:
            steps = a.field if a.field.startswith("[") else "." + a.field
            if not re.fullmatch(s.STEP_PATTERN + "+", steps):
                raise ActionFailed(
                    f"field {_short(a.field)} is not a field path such as match, groups[0] or a.b."
                )
            picked = []
            for item in items:
                try:
                    picked.append(_walk(item, steps))
                except ActionFailed:
                    missing += 1
            items = picked
        kept = 0
        if a.match is not None or a.exclude is not None:
            want = compile_regex(a.match) if a.match is not None else None
            skip = compile_regex(a.exclude) if a.exclude is not None else None
            chosen = []
            for item in items:
                text = item if isinstance(item, str) else _dumps(item)
                if want is not None and not want.search(text):
                    continue
                if skip is not None and skip.search(text):
                    continue
                chosen.append(item)
            kept = len(items) - len(chosen)
            items = chosen
        of = f"`{a.var}`" + (f" field {a.field}" if a.field else "")
        notes = []
        if missing:
            notes.append(f"{missing:,} item(s) without that field skipped")
        if kept:
            notes.append(f"{kept:,} item(s) filtered out")
        result_origins = frozenset({"kernel"})
        shown: Excerpt | None = None
        if a.op == "count":
            result: Any = len(items)
            head = f"count over {of} ({total:,} items): {result:,}"
        elif a.op == "sum":
            result, bad = _sum(items)
            head = f"sum over {of} ({total:,} items): {_number(result)}"
            if bad:
                notes.append(f"{len(bad):,} item(s) not numbers, skipped")
                shown = Excerpt(
                    origins, "\n".join(_one_line(_as_text(b), 120) for b in bad[:5]),
                    "the first items that are not numbers:",
                )  # fmt: skip
        else:
            result_origins = origins
            if a.op == "unique":
                result = _unique(items)
                head = f"{len(result):,} unique value(s) in {of} ({total:,} items)"
                body = "\n".join(f"- {_one_line(_as_text(v))}" for v in result[:SHOW_ITEMS])
            elif a.op == "top_k":
                counts = Counter(_key(v) for v in items)
                firsts: dict[str, Any] = {}
                for v in items:
                    firsts.setdefault(_key(v), v)
                result = [[firsts[k], n] for k, n in counts.most_common(a.k)]
                head = f"the {len(result):,} most common value(s) in {of} ({total:,} items)"
                body = "\n".join(f"- {n:,} x {_one_line(_as_text(v))}" for v, n in result)
            else:
                result = a.separator.join(_as_text(v) for v in items)
                head = f"{len(items):,} item(s) of {of} joined: {len(result):,} characters"
                body = result
            shown = Excerpt(origins, body or "(nothing)")
        summary = head + (f" ({'; '.join(notes)})" if notes else "")
        if a.into:
            summary += "; " + self.store(a.into, result, result_origins, r)
        r.summary = summary + "."
        if shown is not None:
            r.excerpts.append(shown)

    def _do_write_var(self, a: s.WriteVar, r: ActionResult) -> None:
        given = a.model_fields_set
        if ("value" in given) == ("var" in given and a.var is not None):
            raise ActionFailed('write_var takes either "value" or "var" (not both, not neither).')
        if "value" in given:
            value, origins = a.value, frozenset({"you"})
        else:
            value, origins = self.resolve(a.var or "")
        r.summary = self.store(a.name, value, origins, r) + "."

    def _do_final(self, a: s.Final, r: ActionResult) -> None:
        given = a.model_fields_set
        if ("value" in given) == ("var" in given and a.var is not None):
            raise ActionFailed('final takes either "value" or "var" (not both, not neither).')
        value = a.value if "value" in given else self.resolve(a.var or "")[0]
        r.final = (_plain(value),)
        r.summary = "final answer given."

    # ---- calling out -----------------------------------------------------------------------
    def _template(
        self, template: str, extra: dict[str, str], cache: dict[str, str]
    ) -> tuple[str, set[str]]:
        """`{name}` holes filled with `extra` or variables' text; unknown names stay."""
        unknown: set[str] = set()

        def fill(m: re.Match[str]) -> str:
            ref = m.group(1)
            if ref in extra:
                return extra[ref]
            if ref not in cache:
                name = re.match(r"[A-Za-z_]\w*", ref)
                if name is None or name.group() not in self.vars:
                    unknown.add(ref)
                    return m.group()
                cache[ref] = text_of(self.resolve(ref)[0])
            return cache[ref]

        return _HOLE.sub(fill, template), unknown

    def _model(self, model: str | None) -> str:
        run = self._need_run()
        if model is None:
            return run.cfg.sub_model or run.cfg.model
        try:
            run.pool.check(model)
        except ConfigError as exc:
            raise ActionFailed(f"model {_short(model)}: {exc}") from None
        if run.cfg.limits.max_cost is not None and run.cfg.prices.lookup(model) is None:
            raise ActionFailed(
                f"max_cost is set and the price of {model} is unknown: it cannot be used here."
            )
        return model

    def _need_run(self) -> Run:
        if self.run is None:
            raise ActionFailed("this kernel has no model to ask.")
        return self.run

    async def _ask(self, prompt: str, model: str) -> str:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ActionFailed(
                f"the prompt would be {len(prompt):,} characters, more than any sub-model "
                f"reads ({MAX_PROMPT_CHARS:,}): chunk the text and use extract_over_chunks."
            )
        run = self._need_run()
        completion = await run.gateway.complete(
            [{"role": "user", "content": prompt}],
            model=model,
            depth=0,
            rlm="0",
            purpose="sub",
            prompt_for_trace=prompt,
        )
        return completion.text

    async def _do_sub_lm(self, a: s.SubLM, r: ActionResult) -> None:
        model = self._model(a.model)
        prompt, unknown = await asyncio.to_thread(self._template, a.prompt, {}, {})
        answer = await self._ask(prompt, model)
        r.summary = f"the sub-model answered ({len(answer):,} characters)"
        if unknown:
            r.summary += f"; left as written, naming no variable: {_names(unknown)}"
        if a.into:
            r.summary += "; " + self.store(a.into, answer, frozenset({"sub-model"}), r)
        r.summary += "."
        r.excerpts.append(Excerpt(frozenset({"sub-model"}), answer))

    async def _do_extract_over_chunks(self, a: s.ExtractOverChunks, r: ActionResult) -> None:
        value, _ = self.resolve(a.var)
        if not isinstance(value, list | tuple | Mapping):
            raise ActionFailed(
                f"extract_over_chunks needs a list, and `{a.var}` is a {self.about(a.var, value)}: "
                "split it with chunk first."
            )
        items = list(value.values()) if isinstance(value, Mapping) else list(value)
        if not items:
            raise ActionFailed(f"`{a.var}` is empty: there is nothing to send.")
        if len(items) > MAX_FANOUT:
            raise ActionFailed(
                f"`{a.var}` has {len(items):,} items; one extract_over_chunks sends at most "
                f"{MAX_FANOUT:,}: use larger chunks."
            )
        model = self._model(a.model)
        template = a.prompt if "{chunk}" in a.prompt else a.prompt + "\n\n{chunk}"

        def build() -> tuple[list[str], set[str]]:
            cache: dict[str, str] = {}
            out, unknown = [], set()
            for i, item in enumerate(items):
                prompt, missing = self._template(
                    template, {"chunk": text_of(item), "index": str(i)}, cache
                )
                out.append(prompt)
                unknown |= missing
            return out, unknown

        prompts_, unknown = await asyncio.to_thread(build)
        longest = max(len(p) for p in prompts_)
        if longest > MAX_PROMPT_CHARS:
            raise ActionFailed(
                f"a prompt would be {longest:,} characters, more than any sub-model reads "
                f"({MAX_PROMPT_CHARS:,}): use smaller chunks."
            )
        results = await asyncio.gather(
            *(self._ask(p, model) for p in prompts_), return_exceptions=True
        )
        answers: list[str] = []
        refused = failed = 0
        first_refusal: BudgetExceeded | None = None
        for res in results:
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, BudgetExceeded):
                refused += 1
                first_refusal = first_refusal or res
                answers.append(f"[error] budget: {res}")
            elif isinstance(res, BaseException):
                failed += 1
                message = res.message if isinstance(res, ActionFailed) else str(res)
                answers.append(f"[error] {type(res).__name__}: {message}")
            else:
                answers.append(res)
        if refused == len(results) and first_refusal is not None:
            raise ActionFailed(f"the budget refused every prompt: {first_refusal}")
        answered = len(answers) - refused - failed
        summary = f"{len(prompts_):,} prompt(s) sent to {model}: {answered:,} answered"
        if refused:
            summary += f", {refused:,} refused by the budget"
        if failed:
            summary += f", {failed:,} failed"
        if unknown:
            summary += f"; left as written, naming no variable: {_names(unknown)}"
        summary += "; " + self.store(a.into, answers, frozenset({"sub-model"}), r)
        r.summary = summary + "."
        shown = answers[:SHOW_ITEMS]
        more = f"\n... and {len(answers) - len(shown):,} more" if len(answers) > len(shown) else ""
        r.excerpts.append(
            Excerpt(
                frozenset({"sub-model"}),
                "\n".join(f"[{i}] {_one_line(t)}" for i, t in enumerate(shown)) + more,
            )
        )

    async def _do_extract(self, a: s.Extract, r: ActionResult) -> None:
        value, _ = self.resolve(a.var)
        spec = "text -> " + ", ".join(f"{k}: {v}" for k, v in a.fields.items())
        try:
            signature = parse_signature(spec)
        except ConfigError as exc:
            raise ActionFailed(
                f"bad fields: {str(exc).split(': ', 2)[-1]}. Types: str, int, float, bool, "
                "list[T], dict[K, V], T | None."
            ) from None
        model = self._model(a.model)
        text = await asyncio.to_thread(text_of, value)
        instructions = f"\n{a.instructions}" if a.instructions else ""
        prompt = prompts.EXTRACT_FIELDS.format(
            fields=signature.describe(), instructions=instructions, text=text
        )
        answer = await self._ask(prompt, model)
        try:
            output = signature.validate(_first_json(answer, objects_only=True))
        except SignatureError as exc:
            reason = str(exc).split(";", 1)[-1].strip()
            raise ActionFailed(
                f"the sub-model's answer did not give {signature.describe()}: what was wrong "
                "and its answer are below.",
                [Excerpt(frozenset({"sub-model"}), f"{reason}\n\n{answer}", "what was wrong:")],
            ) from None
        fields = output.model_dump(mode="json")
        r.summary = f"fields read from `{a.var}`; " + self.store(
            a.into, fields, frozenset({"sub-model"}), r
        ) + "."  # fmt: skip
        r.excerpts.append(Excerpt(frozenset({"sub-model"}), _dumps(fields)))

    async def _do_tool_call(self, a: s.ToolCall, r: ActionResult) -> None:
        run = self._need_run()
        tool = self.tools.get(a.name)
        if tool is None:
            names = ", ".join(sorted(self.tools)) or "none in this run"
            raise ActionFailed(f"no tool named {_short(a.name)}; the tools: {names}.")
        used: set[frozenset[str]] = set()
        args = [self._with_vars(v, used) for v in a.args]
        kwargs = {k: self._with_vars(v, used) for k, v in a.kwargs.items()}
        try:
            run.ledger.charge_tool(a.name, tool.cost_usd or 0.0)
        except BudgetExceeded as exc:
            run.emitter.emit(
                BudgetRefused(
                    rlm="0",
                    depth=0,
                    limit=exc.limit,
                    model=f"tool:{a.name}",
                    purpose="tool",
                    message=str(exc),
                )
            )
            raise
        started = time.monotonic()
        error: str | None = None
        out: Any = None
        try:
            out = await tool.call(args, kwargs)
        except Exception as exc:  # the tool's failure is the model's news
            error = f"{type(exc).__name__}: {exc}"
        finally:
            run.emitter.emit(
                ToolCalled(
                    rlm="0",
                    depth=0,
                    name=a.name,
                    arguments=_short(_dumps({"args": args, "kwargs": kwargs}), 2000),
                    result=None if error else _short(_dumps(out), 2000),
                    error=error,
                    cost_usd=tool.cost_usd or 0.0,
                    elapsed_s=round(time.monotonic() - started, 6),
                )
            )
        if error is not None:
            raise ActionFailed(
                f"the tool {a.name} failed (its error below).",
                [Excerpt(frozenset({"tool"}), error, "its error:")],
            )
        r.summary = f"{a.name} returned a {describe(out)}"
        if a.into:
            r.summary += "; " + self.store(a.into, out, frozenset({"tool"}), r)
        r.summary += "."
        r.excerpts.append(Excerpt(frozenset({"tool"}), _as_text(out)))

    def _with_vars(self, value: Any, used: set[frozenset[str]], depth: int = 0) -> Any:
        if depth > 20:
            return value
        if isinstance(value, dict):
            if set(value) == {"$var"} and isinstance(value["$var"], str):
                if not re.match(s.REF_PATTERN, value["$var"]):
                    raise ActionFailed(f'{{"$var": {_short(value["$var"])}}} names no variable.')
                found, origins = self.resolve(value["$var"])
                used.add(origins)
                return _plain(found)
            return {k: self._with_vars(v, used, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self._with_vars(v, used, depth + 1) for v in value]
        return value


_ASYNC_ACTIONS = frozenset({"sub_lm", "extract_over_chunks", "extract", "tool_call"})


# ---- rendering -----------------------------------------------------------------------------


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


# ---- helpers -------------------------------------------------------------------------------


def _context_value(ctx: Context) -> Any:
    if ctx.kind == "text":
        return ctx.text or ""
    if ctx.kind == "dir":
        return DirView(ctx)
    if ctx.kind == "file":  # mapped here, as the REPL worker maps it: never read whole
        return MappedText(ctx.path or "")
    return ctx.value


def _step(value: Any, path: str, index: int | None, key: str | None) -> Any:
    if index is not None:
        if isinstance(value, list | tuple | str | MappedText):
            if -len(value) <= index < len(value):
                return value[index]
            raise ActionFailed(f"`{path}` has {len(value):,} item(s): [{index}] is out of range.")
        if isinstance(value, Mapping) and str(index) in value:
            return value[str(index)]
        raise ActionFailed(f"`{path}` is a {describe(value)}: it has no item [{index}].")
    if isinstance(value, Mapping):
        if key in value:
            return value[key]
        keys = "\n".join(_short(str(k), 80) for k in list(value)[:10])
        more = f" (the first 10 of {len(value):,} below)" if len(value) > 10 else " (below)"
        raise ActionFailed(
            f"`{path}` has no key {_short(key)}; its keys{more if keys else ': none'}.",
            [Excerpt(frozenset({"context"}), keys, "its keys:")] if keys else [],
        )
    raise ActionFailed(f"`{path}` is a {describe(value)}: it has no key {_short(key)}.")


def _walk(value: Any, steps: str) -> Any:
    path = "item"
    for step in _STEP.finditer(steps):
        index, attr, key = step.groups()
        value = _step(value, path, int(index) if index is not None else None, attr or key)
        path += step.group()
    return value


def _check_chunks(length: int, size: int, step: int) -> None:
    n = max(-(-(length - (size - step)) // step), 1) if length else 1
    if n > MAX_CHUNKS:
        raise ActionFailed(f"that makes {n:,} chunks; at most {MAX_CHUNKS:,}: use a larger size.")


def _first_json(text: str, objects_only: bool = False) -> Any:
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{" if objects_only else r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except (ValueError, RecursionError):
            continue
        return value
    return None


def _sum(items: list[Any]) -> tuple[int | float, list[Any]]:
    total: int | float = 0
    bad = []
    for item in items:
        if isinstance(item, bool) or item is None:
            bad.append(item)
        elif isinstance(item, int | float):
            total += item
        elif isinstance(item, str):
            text = item.strip().replace(",", "")
            try:
                total += int(text)
                continue
            except ValueError:
                pass
            found = _NUMBER.search(text)
            if found and not text.startswith("[error]"):
                number = found.group()
                total += float(number) if any(ch in number for ch in ".eE") else int(number)
            else:
                bad.append(item)
        else:
            bad.append(item)
    if isinstance(total, float) and not math.isfinite(total):
        raise ActionFailed("the sum is not a finite number.")
    return total, bad


def _number(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.6g}"


def _key(value: Any) -> str:
    if isinstance(value, str):
        return "s" + value
    return "j" + _dumps(value)


def _unique(items: list[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = _key(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else _dumps(value)


def _names(names: set[str]) -> str:
    return ", ".join("{" + n + "}" for n in sorted(names)[:10])


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
