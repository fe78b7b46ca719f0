"""A large text file as a read-only, str-like object: the sandbox worker maps it itself.

Imported by `worker.py` (beside it, standard library only) when a `file` context arrives:
nothing large crosses the channel, only the file's path. The file is mapped in windows of
`window` bytes, never whole, so the worker's memory stays bounded by a window (plus what
the model's own code keeps) however large the file is.

Characters, not bytes: offsets, `len` and slices count characters of the file decoded as
UTF-8 with bad bytes replaced by U+FFFD, exactly as `data.decode("utf-8", "replace")`
would. A sparse index, built lazily as far as an operation needs it, records where each
segment of the file starts in bytes and in characters: a run of pure-ASCII bytes is one
segment (a byte is a character there), and other text is cut into blocks of about `block`
bytes whose characters are counted by decoding them once. Searching for a substring runs on
the bytes (UTF-8 is self-synchronizing, so a byte match of a needle's UTF-8 is a character
match), then converts the offset.

What stays a limit: `str(text)` and slices hold their characters in memory (a slice of the
whole of a 4 GB file needs 4 GB); `search` gives lookbehind and lookahead
`SEARCH_MARGIN` characters beyond each chunk it reads.
"""

from __future__ import annotations

import _bisect
import _thread
import mmap
import operator
import os
from itertools import islice as _islice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

WINDOW = 64 << 20
"""Bytes mapped at once."""
BLOCK = 64 << 10
"""Bytes per index block of non-ASCII text (one block is decoded to convert an offset)."""
SCAN = 16 << 20
"""Bytes indexed per step, and bytes copied at once when counting."""
SEARCH_CHUNK = 8 << 20
"""Characters given to the regular expression engine at once by `search`."""
SEARCH_MARGIN = 1 << 16
"""Characters of context on each side of a `search` chunk (for lookbehind and lookahead)."""
STR_LIMIT = 256 << 20
"""Above this many bytes, `str(text)` refuses (slice what you need instead)."""

_ASCII, _UTF8, _INVALID = 0, 1, 2
_GRANULE = mmap.ALLOCATIONGRANULARITY
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _unit_start(data: bytes, i: int) -> int:
    """The first offset at or after `i` where a character of `data` starts, given that
    one starts at 0 and at len(data). A byte that is not a continuation byte always starts
    one; a lead byte covers at most three continuation bytes, so the fourth of a run starts
    one too (a stray continuation byte is a character of its own: U+FFFD)."""
    n = len(data)
    for j in range(i, min(i + 3, n)):
        if data[j] & 0xC0 != 0x80:
            return j
    return min(i + 3, n)


class MappedText:
    """The text of a file, read on demand. Use it like a read-only `str`: `len`, indexing
    and slicing (slices are `str`), `find`/`rfind`/`index`/`rindex`/`count`, `in`,
    `startswith`/`endswith`; iterating yields its lines (with their line endings, like a
    file); `lines()`, `splitlines()` (lazy), `search(pattern)` (regular expressions),
    `chunks(size, overlap)` and, for JSON lines, `records()`."""

    def __init__(
        self,
        path: str,
        *,
        window: int = WINDOW,
        block: int = BLOCK,
        scan: int = SCAN,
    ) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self.nbytes = os.fstat(self._fd).st_size
        """The file's size in bytes."""
        self.window = max(int(window), 1)
        self.block = max(int(block), 4)
        self.scan = max(int(scan), self.block)
        self._lock = _thread.RLock()
        self._map: mmap.mmap | None = None
        self._map_base = 0
        # the sparse index: segment k starts at byte _sb[k], character _sc[k]
        self._sb: list[int] = []
        self._sc: list[int] = []
        self._sk: list[int] = []
        self._done_b = 0
        self._done_c = 0
        self._seg_cache: tuple[int, str] | None = None

    # ---- the mapping ---------------------------------------------------------------------
    def _mapping(self, b0: int, b1: int) -> tuple[mmap.mmap, int, bool]:
        """A mapping that covers bytes [b0, b1), its file offset, and whether it is a
        temporary one the caller must close (the cached window is replaced instead)."""
        cached = self._map
        if cached is not None and self._map_base <= b0 and b1 <= self._map_base + len(cached):
            return cached, self._map_base, False
        base = b0 - b0 % _GRANULE
        end = max(b1, min(base + self.window, self.nbytes))
        temporary = end - base > self.window + _GRANULE
        mapped = mmap.mmap(self._fd, end - base, access=mmap.ACCESS_READ, offset=base)
        if not temporary:
            if cached is not None:
                cached.close()  # its pages leave this process's resident memory
            self._map, self._map_base = mapped, base
        return mapped, base, temporary

    def _read(self, b0: int, b1: int) -> bytes:
        """A copy of bytes [b0, b1)."""
        if b1 <= b0:
            return b""
        with self._lock:
            mapped, base, temporary = self._mapping(b0, b1)
            try:
                return mapped[b0 - base : b1 - base]
            finally:
                if temporary:
                    mapped.close()

    def close(self) -> None:
        with self._lock:
            if self._map is not None:
                self._map.close()
                self._map = None
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # ---- the index -----------------------------------------------------------------------
    def _add(self, b: int, c: int, kind: int) -> None:
        if kind == _ASCII and self._sk and self._sk[-1] == _ASCII:
            return  # one ASCII run, however long
        self._sb.append(b)
        self._sc.append(c)
        self._sk.append(kind)

    def _index_step(self) -> None:
        """Index the next piece of the file (about `scan` bytes)."""
        start = self._done_b
        end = min(start + self.scan, self.nbytes)
        if end < self.nbytes:
            end += _unit_start(self._read(end, min(end + 3, self.nbytes)), 0)
        data = self._read(start, end)
        chars = self._done_c
        if data.isascii():
            self._add(start, chars, _ASCII)
            chars += len(data)
        else:
            i = 0
            while i < len(data):
                j = _unit_start(data, min(i + self.block, len(data)))
                piece = data[i:j]
                if piece.isascii():
                    self._add(start + i, chars, _ASCII)
                    chars += len(piece)
                else:
                    try:
                        count, kind = len(piece.decode("utf-8")), _UTF8
                    except UnicodeDecodeError:
                        count, kind = len(_decode(piece)), _INVALID
                    self._add(start + i, chars, kind)
                    chars += count
                i = j
        self._done_b, self._done_c = end, chars

    def _index_bytes(self, b: int) -> None:
        """Index at least up to byte `b` (or the whole file)."""
        while self._done_b <= b and self._done_b < self.nbytes:
            self._index_step()

    def _index_chars(self, c: int) -> None:
        """Index at least up to character `c` (or the whole file)."""
        while self._done_c <= c and self._done_b < self.nbytes:
            self._index_step()

    def _segment(self, k: int) -> tuple[int, int]:
        """Bytes [start, end) of segment k."""
        end = self._sb[k + 1] if k + 1 < len(self._sb) else self._done_b
        return self._sb[k], end

    def _segment_text(self, k: int) -> str:
        cached = self._seg_cache
        if cached is not None and cached[0] == k:
            return cached[1]
        text = _decode(self._read(*self._segment(k)))
        self._seg_cache = (k, text)
        return text

    def _byte_of(self, c: int) -> int:
        """The byte offset where character `c` starts (the file's size past the end)."""
        with self._lock:
            self._index_chars(c)
            if c >= self._done_c:
                return self._done_b
            k = _bisect.bisect_right(self._sc, c) - 1
            start, kind, t = self._sb[k], self._sk[k], c - self._sc[k]
            if kind == _ASCII or t == 0:
                return start + t
            if kind == _UTF8:
                return start + len(self._segment_text(k)[:t].encode("utf-8"))
            # bad bytes: the shortest prefix that decodes to more than t characters ends
            # with the first byte of character t
            data = self._read(*self._segment(k))
            lo, hi = 1, len(data)
            while lo < hi:
                mid = (lo + hi) // 2
                if len(_decode(data[:mid])) > t:
                    hi = mid
                else:
                    lo = mid + 1
            return start + lo - 1

    def _char_of(self, b: int) -> int:
        """The character offset of byte `b`, where a character starts."""
        with self._lock:
            self._index_bytes(b)
            if b >= self._done_b:
                return self._done_c
            k = _bisect.bisect_right(self._sb, b) - 1
            start, chars = self._sb[k], self._sc[k]
            if self._sk[k] == _ASCII:
                return chars + (b - start)
            return chars + len(_decode(self._read(start, b)))

    def _length(self) -> int:
        with self._lock:
            self._index_bytes(self.nbytes)
            return self._done_c

    # ---- str behaviour -------------------------------------------------------------------
    def __len__(self) -> int:
        """Characters in the file (the first call reads it all once to count them)."""
        return self._length()

    def __bool__(self) -> bool:
        return self.nbytes > 0

    def __repr__(self) -> str:
        return (
            f"<MappedText {self.path!r}: {self.nbytes:,} bytes, memory-mapped; slice it "
            "(context[a:b] is a str) or use find/count/search/lines/chunks>"
        )

    def __str__(self) -> str:
        if self.nbytes > STR_LIMIT:
            raise MemoryError(
                f"str() of this {self.nbytes:,}-byte mapped file would copy all of it: "
                "slice what you need (context[a:b]), or use find/search/lines/chunks"
            )
        return self._slice(0, None)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and hasattr(str, name):
            raise AttributeError(
                f"MappedText has no {name}(): it maps a {self.nbytes:,}-byte file and never "
                f"loads it whole. Slice first (context[a:b].{name}(...)), or use find, count, "
                "search, lines, splitlines or chunks"
            )
        raise AttributeError(f"'MappedText' object has no attribute {name!r}")

    def _slice(self, start: int, stop: int | None) -> str:
        """Characters [start, stop) for 0 <= start, stop None meaning the end."""
        b0 = self._byte_of(start)
        b1 = self.nbytes if stop is None else self._byte_of(stop)
        return _decode(self._read(b0, b1)) if b1 > b0 else ""

    def __getitem__(self, key: int | slice) -> str:
        if isinstance(key, slice):
            start, stop, step = key.start, key.stop, key.step
            if step in (None, 1) and (start is None or start >= 0) and (stop is None or stop >= 0):
                start = start or 0
                if stop is not None and stop <= start:
                    return ""
                return self._slice(start, stop)
            span = range(*key.indices(self._length()))
            if not span:
                return ""
            lo, hi = min(span[0], span[-1]), max(span[0], span[-1]) + 1
            text = self._slice(lo, hi)
            end = span.stop - lo
            return text[span.start - lo : end if end >= 0 else None : span.step]
        index = operator.index(key)
        if index < 0:
            index += self._length()
        char = self._slice(index, index + 1) if index >= 0 else ""
        if not char:
            raise IndexError("string index out of range")
        return char

    def __iter__(self) -> Iterator[str]:
        """Line by line, each with its line ending, like a file."""
        return self.lines(keepends=True)

    def __contains__(self, sub: object) -> bool:
        if not isinstance(sub, str):
            raise TypeError(f"'in <MappedText>' requires str as left operand, not {_tn(sub)}")
        return self.find(sub) >= 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MappedText):
            return other.path == self.path and other.nbytes == self.nbytes
        if not isinstance(other, str):
            return NotImplemented
        if not len(other) <= self.nbytes <= 4 * len(other) or len(other) != self._length():
            return False
        step = 1 << 20
        return all(
            self._slice(i, i + step) == other[i : i + step] for i in range(0, len(other), step)
        )

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: str) -> str:
        return str(self) + other

    def __radd__(self, other: str) -> str:
        return other + str(self)

    # ---- searching ------------------------------------------------------------------------
    def _bounds(self, start: Any, end: Any) -> tuple[int, int | None, int, int] | None:
        """[start, end) as str.find reads them: (lo, hi or None for the end, and the two as
        byte offsets), or None when `start` is past the end."""
        lo = 0 if start is None else operator.index(start)
        hi = None if end is None else operator.index(end)
        if lo < 0 or (hi is not None and hi < 0):
            n = self._length()
            lo = max(lo + n, 0) if lo < 0 else lo
            hi = None if hi is None else max(hi + n, 0) if hi < 0 else hi
        b0 = self._byte_of(lo)
        if b0 >= self.nbytes:  # at or past the end: the index is complete, len() is cheap
            n = self._length()
            if lo > n:
                return None
            return lo, n if hi is None else min(hi, n), self.nbytes, self.nbytes
        if hi is None:
            return lo, None, b0, self.nbytes
        b1 = self._byte_of(hi)
        return lo, hi if b1 < self.nbytes else min(hi, self._length()), b0, b1

    def find(self, sub: str, start: Any = None, end: Any = None) -> int:
        """The lowest character offset of `sub` in [start, end), or -1, like str.find."""
        return self._find(sub, start, end, reverse=False)

    def rfind(self, sub: str, start: Any = None, end: Any = None) -> int:
        """The highest character offset of `sub` in [start, end), or -1, like str.rfind."""
        return self._find(sub, start, end, reverse=True)

    def index(self, sub: str, start: Any = None, end: Any = None) -> int:
        found = self.find(sub, start, end)
        if found < 0:
            raise ValueError("substring not found")
        return found

    def rindex(self, sub: str, start: Any = None, end: Any = None) -> int:
        found = self.rfind(sub, start, end)
        if found < 0:
            raise ValueError("substring not found")
        return found

    def _find(self, sub: str, start: Any, end: Any, *, reverse: bool) -> int:
        if not isinstance(sub, str):
            raise TypeError(f"must be str, not {_tn(sub)}")
        bounds = self._bounds(start, end)
        if bounds is None:
            return -1
        lo, hi, b0, b1 = bounds
        if not sub:
            hi = self._length() if hi is None else hi
            return -1 if hi < lo else hi if reverse else lo
        if "\ufffd" in sub:  # it may stand for bad bytes: search the decoded text
            return self._find_decoded(sub, lo, hi, reverse)
        needle = _needle(sub)
        if needle is None or b1 - b0 < len(needle):
            return -1
        with self._lock:
            hit = self._rfind_bytes(needle, b0, b1) if reverse else self._find_bytes(needle, b0, b1)
        return -1 if hit < 0 else self._char_of(hit)

    def _find_bytes(self, needle: bytes, b0: int, b1: int) -> int:
        span = max(self.window, 2 * len(needle))
        pos = b0
        while pos + len(needle) <= b1:
            stop = min(pos + span, b1)
            mapped, base, temporary = self._mapping(pos, stop)
            try:
                hit = mapped.find(needle, pos - base, stop - base)
            finally:
                if temporary:
                    mapped.close()
            if hit >= 0:
                return base + hit
            if stop >= b1:
                break
            pos = stop - len(needle) + 1
        return -1

    def _rfind_bytes(self, needle: bytes, b0: int, b1: int) -> int:
        span = max(self.window, 2 * len(needle))
        stop = b1
        while stop - len(needle) >= b0:
            pos = max(stop - span, b0)
            mapped, base, temporary = self._mapping(pos, stop)
            try:
                hit = mapped.rfind(needle, pos - base, stop - base)
            finally:
                if temporary:
                    mapped.close()
            if hit >= 0:
                return base + hit
            if pos <= b0:
                break
            stop = pos + len(needle) - 1
        return -1

    def _find_decoded(self, sub: str, lo: int, hi: int | None, reverse: bool) -> int:
        hi = self._length() if hi is None else hi
        step = max(SEARCH_CHUNK, 2 * len(sub))
        best = -1
        i = lo
        while i < hi:
            text = self._slice(i, min(i + step, hi))
            hit = text.rfind(sub) if reverse else text.find(sub)
            if hit >= 0:
                if not reverse:
                    return i + hit
                best = i + hit
            if i + step >= hi:
                break
            i += step - len(sub) + 1
        return best

    def count(self, sub: str, start: Any = None, end: Any = None) -> int:
        """Non-overlapping occurrences of `sub` in [start, end), like str.count."""
        if not isinstance(sub, str):
            raise TypeError(f"must be str, not {_tn(sub)}")
        bounds = self._bounds(start, end)
        if bounds is None:
            return 0
        lo, hi, b0, b1 = bounds
        if not sub:
            hi = self._length() if hi is None else hi
            return max(hi - lo + 1, 0)
        if "\ufffd" in sub:  # it may stand for bad bytes: search the decoded text
            total, pos = 0, lo
            while (hit := self._find_decoded(sub, pos, hi, False)) >= 0:
                total, pos = total + 1, hit + len(sub)
            return total
        needle = _needle(sub)
        if needle is None or b1 - b0 < len(needle):
            return 0
        with self._lock:
            if _overlaps_itself(needle):  # greedy, left to right, as str.count counts
                total, pos = 0, b0
                while (hit := self._find_bytes(needle, pos, b1)) >= 0:
                    total, pos = total + 1, hit + len(needle)
                return total
            # occurrences cannot overlap: count piece by piece, pieces overlapping by
            # len(needle) - 1 bytes, so that each occurrence lies whole in exactly one
            total, pos, span = 0, b0, max(self.scan, 2 * len(needle))
            while pos + len(needle) <= b1:
                stop = min(pos + span, b1)
                total += self._read(pos, stop).count(needle)
                if stop >= b1:
                    break
                pos = stop - len(needle) + 1
            return total

    def startswith(self, prefix: Any, start: Any = None, end: Any = None) -> bool:
        if isinstance(prefix, tuple):
            return any(self.startswith(p, start, end) for p in prefix)
        if not isinstance(prefix, str):
            raise TypeError(
                f"startswith first arg must be str or a tuple of str, not {_tn(prefix)}"
            )
        bounds = self._bounds(start, end)
        if bounds is None:
            return False
        lo, hi = bounds[0], bounds[1]
        if hi is not None and hi - lo < len(prefix):
            return False
        return self._slice(lo, lo + len(prefix)) == prefix

    def endswith(self, suffix: Any, start: Any = None, end: Any = None) -> bool:
        if isinstance(suffix, tuple):
            return any(self.endswith(s, start, end) for s in suffix)
        if not isinstance(suffix, str):
            raise TypeError(f"endswith first arg must be str or a tuple of str, not {_tn(suffix)}")
        bounds = self._bounds(start, end)
        if bounds is None:
            return False
        lo, hi = bounds[0], bounds[1]
        hi = self._length() if hi is None else hi
        if hi - lo < len(suffix):
            return False
        return self._slice(hi - len(suffix), hi) == suffix

    def search(self, pattern: Any, max_hits: int = 100, flags: int = 0) -> list[tuple[int, str]]:
        """Matches of a regular expression, in order: a list of (character offset, matched
        text), at most `max_hits`, as re.finditer finds them in the whole text. The file goes
        through the regex engine in chunks; a match that reaches the end of a chunk is
        matched again over more text, so long matches come whole. Lookbehind and
        lookahead see SEARCH_MARGIN (65,536) characters beyond a chunk."""
        import re

        rx = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
        if not isinstance(getattr(rx, "pattern", None), str):
            raise TypeError("search() needs a str pattern (or a compiled str pattern)")
        if max_hits <= 0:
            return []
        return [(at, found.group()) for at, found in _islice(self._matches(rx), max_hits)]

    def _matches(self, rx: Any) -> Iterator[tuple[int, Any]]:
        """(character offset, re.Match over a chunk) for each match of the compiled `rx`, as
        re.finditer finds them in the whole text, read lazily: `search` takes the first few,
        and the action kernel (which maps files in the host: core/actions/search.py) counts
        them all and keeps their groups."""
        at, size = 0, SEARCH_CHUNK  # this chunk: matches that start in [at, at + size)
        pos = 0  # where the next match may start
        while True:
            left = max(at - SEARCH_MARGIN, 0)
            want = at + size + SEARCH_MARGIN
            text = self._slice(left, want)
            last = len(text) < want - left
            limit = len(text) if last else at + size - left
            grow = False
            for found in rx.finditer(text, max(pos - left, 0)):
                if not last and found.start() >= limit:
                    break
                if not last and found.end() >= len(text):  # it may go on: read more
                    at, size, grow = left + found.start(), size * 2, True
                    break
                yield left + found.start(), found
                pos = left + max(found.end(), found.start() + 1)
            if grow:
                pos = at
                continue
            if last:
                return
            at, size = at + size, SEARCH_CHUNK
            pos = max(pos, at)

    # ---- lines and chunks -----------------------------------------------------------------
    def _pieces(self, size: int) -> Iterator[str]:
        i = 0
        while True:
            text = self._slice(i, i + size)
            if not text:
                return
            yield text
            i += len(text)

    def _line_pieces(self) -> Iterator[tuple[str, bool]]:
        """The text in pieces that end where a line ends: (piece, is it the last one)."""
        carry = ""
        for piece in self._pieces(SEARCH_CHUNK):
            buf = carry + piece
            # a \r at the very end may be the first half of a \r\n: keep its line for later
            stop = len(buf) - 1 if buf.endswith("\r") else len(buf)
            cut = max(buf.rfind(ch, 0, stop) for ch in _LINE_BREAKS) + 1
            carry = buf[cut:]
            if cut:
                yield buf[:cut], False
        if carry:
            yield carry, True

    def lines(self, keepends: bool = False) -> Iterator[str]:
        """The lines, one at a time, split exactly as str.splitlines splits them."""
        for piece, _ in self._line_pieces():
            yield from piece.splitlines(keepends)

    def _count_lines(self) -> int:
        total = 0
        for piece, last in self._line_pieces():
            if last:
                total += 1  # a piece with no line break in it, or just one at its end
            else:
                total += sum(piece.count(ch) for ch in _LINE_BREAKS) - piece.count("\r\n")
        return total

    def splitlines(self, keepends: bool = False) -> Lines:
        """The lines as a lazy sequence: iterate it, take len() (one pass over the file) or
        index it (a pass up to the line); never a list of every line in memory."""
        return Lines(self, keepends)

    def records(self) -> Iterator[Any]:
        """For a JSON-lines file: each non-blank line parsed with json.loads."""
        import json

        for line in self.lines():
            if line.strip():
                yield json.loads(line)

    def chunks(self, size: int, overlap: int = 0) -> Chunks:
        """Pieces of `size` characters, each starting `size - overlap` after the last,
        until one reaches the end: a lazy sequence of str (len() and indexing work)."""
        return Chunks(self, size, overlap)


def matches(text: MappedText, rx: Any) -> Iterator[tuple[int, Any]]:
    """(character offset, re.Match over a chunk) for each match of the compiled `rx` in
    `text`, read lazily: the host's action kernel counts them all and keeps their groups.
    A function, not a method, so model code in the REPL sees no new name on `context`."""
    return text._matches(rx)


class Lines:
    """The lines of a MappedText, read as they are needed."""

    def __init__(self, text: MappedText, keepends: bool) -> None:
        self._text = text
        self._keepends = keepends
        self._len: int | None = None

    def __iter__(self) -> Iterator[str]:
        return self._text.lines(self._keepends)

    def __len__(self) -> int:
        if self._len is None:
            self._len = self._text._count_lines()
        return self._len

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            span = range(*key.indices(len(self)))
            if span.step < 0:
                wanted = set(span)
                picked = {i: s for i, s in enumerate(self) if i in wanted}
                return [picked[i] for i in span]
            out = []
            for i, line in enumerate(self):
                if i >= span.stop:
                    break
                if i >= span.start and (i - span.start) % span.step == 0:
                    out.append(line)
            return out
        index = operator.index(key)
        if index < 0:
            index += len(self)
        if index >= 0:
            for i, line in enumerate(self):
                if i == index:
                    return line
        raise IndexError("list index out of range")

    def __repr__(self) -> str:
        return f"<lazy lines of {self._text.path!r}: iterate, len() or index>"


class Chunks:
    """Fixed-size pieces of a MappedText, each an ordinary str, made as they are needed."""

    def __init__(self, text: MappedText, size: int, overlap: int) -> None:
        size, overlap = operator.index(size), operator.index(overlap)
        if size < 1:
            raise ValueError("chunks: size must be at least 1")
        if not 0 <= overlap < size:
            raise ValueError("chunks: overlap must be at least 0 and smaller than size")
        self._text = text
        self.size = size
        self.overlap = overlap
        self.step = size - overlap

    def __len__(self) -> int:
        n = len(self._text)
        if n == 0:
            return 0
        return 1 + -(-max(n - self.size, 0) // self.step)

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        index = operator.index(key)
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("chunk index out of range")
        start = index * self.step
        return self._text[start : start + self.size]

    def __iter__(self) -> Iterator[str]:
        start = 0
        while True:
            piece = self._text[start : start + self.size]
            if not piece:
                return
            yield piece
            if (
                len(piece) < self.size
                or self._text._byte_of(start + self.size) >= self._text.nbytes
            ):
                return
            start += self.step

    def __repr__(self) -> str:
        return f"<{len(self):,} chunks of {self.size:,} characters, overlap {self.overlap:,}>"


def _needle(sub: str) -> bytes | None:
    try:
        return sub.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: decoded text never holds one
        return None


def _overlaps_itself(needle: bytes) -> bool:
    """Whether two occurrences of `needle` can overlap (a proper prefix is also a suffix)."""
    if len(needle) > 256:
        return True
    return any(needle[:k] == needle[-k:] for k in range(1, len(needle)))


def _tn(value: object) -> str:
    return type(value).__name__
