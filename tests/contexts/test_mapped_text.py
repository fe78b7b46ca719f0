"""The memory-mapped text (sandbox/inside/mapped.py) against the same operations on a plain str.

Every property writes a file (UTF-8 text with multibyte characters and every kind of line
break, or arbitrary bytes, which decode with U+FFFD replacements), maps it with tiny windows,
index blocks and search chunks so that every boundary is crossed, and compares each result
with what `data.decode("utf-8", "replace")` gives for the same call.
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recursa.sandbox.inside import mapped as _mapped
from recursa.sandbox.inside.mapped import MappedText

PIECES = ["a", "b", "ab", "é", "€", "😀", "\n", "\r", "\r\n", "\x85", "\u2028", "\x0c", " "]
texts = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
raw = st.binary(max_size=60) | st.lists(
    st.sampled_from([b"\x80", b"\xe2", b"\x82", b"\xac", b"\xf0", b"\x90", b"\xff", b"A", b"\n"]),
    max_size=40,
).map(b"".join)
contents = texts.map(lambda s: s.encode("utf-8")) | raw
bound = st.none() | st.integers(min_value=-50, max_value=50)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = {"window": 7, "block": 5, "scan": 9}
"""Mapped 7 bytes at a time, indexed 9 bytes a step, 5-byte blocks: every edge is crossed."""


@contextmanager
def mapped(data: bytes, **options: int) -> Iterator[tuple[MappedText, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.txt"
        path.write_bytes(data)
        text = MappedText(str(path), **(options or SMALL))
        try:
            yield text, data.decode("utf-8", "replace")
        finally:
            text.close()


@contextmanager
def small_search_chunks() -> Iterator[None]:
    with (
        mock.patch.object(_mapped, "SEARCH_CHUNK", 4),
        mock.patch.object(_mapped, "SEARCH_MARGIN", 6),
    ):
        yield


@SETTINGS
@given(contents, bound, bound, st.sampled_from([None, 1, 2, -1, -3]))
def test_len_indexing_and_slices_equal_the_decoded_text(data, start, stop, step):
    with mapped(data) as (text, ref):
        assert len(text) == len(ref)
        assert text[start:stop:step] == ref[start:stop:step]
        for i in (0, len(ref) - 1, -1, len(ref) // 2):
            if -len(ref) <= i < len(ref):
                assert text[i] == ref[i]
        with pytest.raises(IndexError):
            text[len(ref)]
        assert bool(text) == bool(ref)


@SETTINGS
@given(contents, st.data(), bound, bound)
def test_find_rfind_count_and_in_agree_with_str(data, draw, start, end):
    with mapped(data) as (text, ref):
        if ref:
            i = draw.draw(st.integers(0, len(ref) - 1))
            sub = ref[i : i + draw.draw(st.integers(0, 4))]
        else:
            sub = draw.draw(st.sampled_from(["", "a"]))
        for needle in (sub, "a", "\n", "\r\n", "é", "\ufffd", "aa", "😀x", "\ud800"):
            assert text.find(needle, start, end) == ref.find(needle, start, end)
            assert text.rfind(needle, start, end) == ref.rfind(needle, start, end)
            assert text.count(needle, start, end) == ref.count(needle, start, end)
            assert (needle in text) == (needle in ref)
            assert text.startswith(needle, start, end) == ref.startswith(needle, start, end)
            assert text.endswith(needle, start, end) == ref.endswith(needle, start, end)


@SETTINGS
@given(contents)
def test_lines_iteration_and_splitlines_split_as_str_splitlines(data):
    with mapped(data) as (text, ref), mock.patch.object(_mapped, "SEARCH_CHUNK", 3):
        assert list(text.lines()) == ref.splitlines()
        assert list(text.lines(keepends=True)) == ref.splitlines(keepends=True)
        assert list(text) == ref.splitlines(keepends=True)  # like a file: line by line
        lines = text.splitlines()
        assert len(lines) == len(ref.splitlines())
        assert list(lines) == ref.splitlines()
        if ref.splitlines():
            assert lines[-1] == ref.splitlines()[-1]
            assert lines[1:3] == ref.splitlines()[1:3]


@SETTINGS
@given(contents, st.integers(1, 9), st.data())
def test_chunks_are_the_str_slices_that_cover_the_text(data, size, draw):
    overlap = draw.draw(st.integers(0, size - 1))
    with mapped(data) as (text, ref):
        want = []
        for start in itertools.count(0, size - overlap):
            if not ref:
                break
            want.append(ref[start : start + size])
            if start + size >= len(ref):
                break
        chunks = text.chunks(size, overlap)
        assert list(chunks) == want
        assert len(chunks) == len(want)
        assert [chunks[i] for i in range(-len(want), len(want))] == want + want
        assert all(type(c) is str for c in chunks)


PATTERNS = [
    ("a+", 0),
    ("é.", 0),
    (r"[^\n]{1,3}", 0),
    ("^a", re.MULTILINE),
    ("b$", re.MULTILINE),
    ("a(?=b)", 0),
    ("(?<=b)a", 0),
    ("^.", 0),
    ("\ufffd+", 0),
]


@SETTINGS
@given(contents)
def test_search_gives_the_offsets_and_matches_of_re_finditer(data):
    with mapped(data) as (text, ref), small_search_chunks():
        for pattern, flags in PATTERNS:
            want = [(m.start(), m.group()) for m in re.finditer(pattern, ref, flags)]
            assert text.search(pattern, max_hits=1000, flags=flags) == want
            assert text.search(re.compile(pattern, flags), max_hits=2) == want[:2]


def test_index_and_rindex_raise_when_the_substring_is_missing():
    with mapped(b"one two one") as (text, _):
        assert text.index("one") == 0 and text.rindex("one") == 8
        with pytest.raises(ValueError, match="substring not found"):
            text.index("three")
        with pytest.raises(ValueError, match="substring not found"):
            text.rindex("three")
        with pytest.raises(TypeError):
            text.find(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            3 in text  # type: ignore[operator]  # noqa: B015


def test_other_str_methods_are_refused_with_what_to_use_instead():
    with mapped(b"Hello") as (text, _):
        with pytest.raises(AttributeError, match=r"context\[a:b\]\.upper"):
            text.upper()
        with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
            text.nonsense  # noqa: B018
        assert text[0:5].upper() == "HELLO"


def test_str_of_a_file_over_the_limit_is_refused_but_slices_work():
    with mapped(b"x" * 100) as (text, _), mock.patch.object(_mapped, "STR_LIMIT", 50):
        with pytest.raises(MemoryError, match="slice what you need"):
            str(text)
        assert text[:60] == "x" * 60
        assert "mapped" in repr(text) and "100 bytes" in repr(text)


def test_slices_and_searches_are_plain_str():
    with mapped("ab\nc😀\n".encode()) as (text, ref):
        assert type(text[1:4]) is str and type(text[2]) is str
        assert all(type(line) is str for line in text)
        assert text.search("😀") == [(4, "😀")]
        assert text == ref and text != ref + "x"


def test_json_lines_are_read_one_record_at_a_time():
    with mapped(b'{"n": 1}\n\n{"n": 2}\r\n[3]') as (text, _):
        assert list(text.records()) == [{"n": 1}, {"n": 2}, [3]]


def test_the_start_of_a_file_is_read_without_indexing_the_rest():
    data = b"x" * 1_000_000
    with mapped(data, window=65536, block=4096, scan=65536) as (text, _):
        assert text[:10] == "x" * 10
        assert text.find("x", 5) == 5
        assert text._done_b < len(data)  # the index stopped near the start
        assert len(text) == len(data)
        assert text._done_b == len(data)


def test_a_scan_keeps_one_window_of_the_file_mapped():
    window = 64 * 1024
    data = (b"abcdefgh" * (window // 8)) * 20 + b"NEEDLE"
    with mapped(data, window=window, block=4096, scan=window) as (text, _):
        assert text.find("NEEDLE") == len(data) - 6
        assert text.count("abcdefgh") == len(data) // 8
        assert len(text.search("NEEDLE")) == 1
        mappings = [
            line
            for line in Path(f"/proc/{os.getpid()}/maps").read_text().splitlines()
            if line.endswith(text.path)
        ]
        assert len(mappings) == 1
        lo, hi = (int(x, 16) for x in mappings[0].split()[0].split("-"))
        assert hi - lo <= window + _mapped._GRANULE


def test_an_empty_file_is_an_empty_text():
    with mapped(b"") as (text, _):
        assert len(text) == 0 and text[:] == "" and not text
        assert text.find("") == 0 and text.count("") == 1 and text.find("a") == -1
        assert list(text) == [] and list(text.chunks(3)) == [] and text.search(".") == []


@SETTINGS
@given(st.text(max_size=30), st.text(max_size=3))
def test_any_unicode_text_round_trips(value, needle):
    data = value.encode("utf-8", "surrogatepass")
    with mapped(data) as (text, ref):
        assert text[:] == ref
        assert text.find(needle) == ref.find(needle)
        assert text.count(needle) == ref.count(needle)
