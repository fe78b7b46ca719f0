"""The kernel's search engine and line reader, over a str or a mapped file.

A mapped file is searched where it lies: literals through its `find` and `count`, regular
expressions through the mapped-text module's public `matches`; lines are counted a piece
at a time. Nothing here reads a whole file into the host.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ...sandbox.inside.mapped import MappedText
from ...sandbox.inside.mapped import matches as mapped_matches
from .values import ITEM_CHARS, ActionFailed, brief, mapped_range, segments

KEEP_HITS = 100_000
"""Hits kept in an `into` variable; past this the count goes on, the list stops."""


COUNT_CAP = 1_000_000
"""Regex hits counted before the count is reported as "at least"."""


COUNT_BATCH = 65_536


NOCASE_WINDOW = 1 << 24


HIT_WINDOW = 2 * ITEM_CHARS
"""Characters read on each side of a hit in a mapped file: enough for the text `_hit` shows."""


LINE_PIECE = 1 << 22
"""Characters of a mapped file read at once when counting lines."""


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
            f"bad regex {brief(pattern)}: {exc}. Fix it, or search it as a literal with "
            '"regex": false.'
        ) from None
    if _nested_repeat(pattern, flags):
        raise ActionFailed(
            f"the regex {brief(pattern)} repeats a group that itself repeats (like (a+)+), "
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
    for item, text in segments(value):
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
    matches = mapped_matches(text, rx)
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


def line_end(text: str, start: int) -> int:
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


def mapped_lines(text: MappedText, first: int, count: int, cut: int | None) -> list[str]:
    """Lines `first` onwards of a mapped file, `count` of them, as `line_starts` and
    `line_end` split a str; each whole, or only its first `cut` characters (what the
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


def mapped_line_range(text: MappedText, first: int, end: int | None) -> str:
    """Lines [first, end) of a mapped file, as `_do_load` cuts them from a str: without the
    line break that ends the last one."""
    count = None if end is None else max(end - first, 0)
    lo = _line_start(text, first) if count != 0 else -1
    if lo < 0:
        return ""
    if count is not None:
        hi, passed = _skip_lines(text, lo, count)
        if passed == count:
            return mapped_range(text, lo, hi - 1)
    else:
        hi = len(text)
    if text[hi - 1 : hi] == "\n":
        hi -= 1
    return mapped_range(text, lo, hi)
