"""Framing for the sandbox channel, shared verbatim by the host and the worker.

A frame is MAGIC, then two big-endian u32 lengths (JSON header, raw body), then the header
as UTF-8 JSON and the body as bytes. The body carries bulk data (a context's text) without
JSON escaping. This module is imported by the worker from inside the sandbox, so it must
depend on the standard library alone.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is slow to import, and the worker imports this module at start
    from collections.abc import Iterable, Iterator
    from typing import Any

MAGIC = b"RCS1"
_LENGTHS = struct.Struct(">II")
PREFIX_SIZE = len(MAGIC) + _LENGTHS.size
MAX_HEADER = 512 * 1024 * 1024
"""The largest JSON header either side accepts; a bigger one is a protocol violation."""
MAX_CALL = 256 * 1024 * 1024
"""The largest call the worker sends; it refuses bigger ones with an error the code sees."""


class FrameError(Exception):
    """The peer sent bytes that are not a well-formed frame."""


# ---- JSON on the C accelerator alone ------------------------------------------------------
# The `json` package imports `re` (and with it enum, functools, collections): about a third
# of the worker's start. Its C core does the same work; the package is the fallback.


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class _ScanContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": -1e999, "Infinity": 1e999, "NaN": 1e999 - 1e999}.__getitem__


_WHITESPACE = " \t\n\r"


def _c_codec() -> tuple[Any, Any]:
    """dumps and loads on `_json`, checked on a sample; raises where they do not work."""
    from _json import encode_basestring, make_encoder, make_scanner

    # typeshed types the context as a scanner (its TODO); the C code reads only these fields
    scan = make_scanner(_ScanContext())  # type: ignore[arg-type]

    def dumps(value: Any) -> str:
        encoder = make_encoder({}, _not_serializable, encode_basestring, None, ":", ",", *_FLAGS)
        return "".join(encoder(value, 0))

    def loads(text: str) -> Any:
        start = len(text) - len(text.lstrip(_WHITESPACE))
        try:
            value, end = scan(text, start)
        except StopIteration as exc:
            raise ValueError(f"Expecting value at {exc.value}") from None
        if text[end:].strip(_WHITESPACE):
            raise ValueError(f"Extra data at {end}")
        return value

    sample = {"op": "x", "v": [1, 2.5, None, True, "é\n"], "n": {"1": -1e999}}
    if loads(dumps(sample)) != sample or dumps(sample)[:10] != '{"op":"x",':
        raise ValueError("the _json accelerator does not behave as expected")
    return dumps, loads


_FLAGS = (False, False, True)  # sort_keys, skipkeys, allow_nan
try:
    dumps, loads = _c_codec()
except Exception:  # no accelerator, or another one: the json package
    import json as _json_module

    def dumps(value: Any) -> str:
        """JSON text, as `json.dumps(value, ensure_ascii=False, separators=(",", ":"))`."""
        return _json_module.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def loads(text: str) -> Any:
        """A JSON value, as `json.loads(text)` (ValueError when `text` is not JSON)."""
        return _json_module.loads(text)


def encode_parts(
    header: dict[str, Any], body: bytes = b"", body_size: int | None = None
) -> tuple[bytes, bytes, bytes]:
    """A frame as (prefix, header bytes, body): large frames are written part by part
    rather than joined into one more copy. `body_size` announces a body written after."""
    data = dumps(header).encode("utf-8")
    size = len(body) if body_size is None else body_size
    return MAGIC + _LENGTHS.pack(len(data), size), data, body


SMALL_FRAME = 1 << 20
"""Frames up to this size are written in one piece: one system call, one wakeup of the peer."""


def coalesce(parts: tuple[bytes, bytes, bytes]) -> tuple[bytes, ...]:
    """The parts of a frame as they should be written: joined when the frame is small."""
    if len(parts[1]) + len(parts[2]) <= SMALL_FRAME:
        return (b"".join(parts),)
    return parts


def encode(header: dict[str, Any], body: bytes = b"") -> bytes:
    return b"".join(encode_parts(header, body))


# ---- calls whose prompts travel in the body -----------------------------------------------
# A batched call over a large context carries megabytes of prompts. As JSON they would be
# held three times over on each side (the list, its JSON text, its UTF-8 bytes); in the body
# each prompt is encoded (worker) or decoded (host) on its own as the frame is written or read.

TEXT_ARGS = ("prompt", "prompts")
"""The call arguments whose text may travel in the body: a string, or a list of strings."""
BODY_TEXT_MIN = 64 * 1024
"""Below this many characters of prompts, a call is plain JSON (one small frame)."""


class OutgoingCall:
    """A `call` frame written part by part: its header as JSON, with `texts` giving each
    body argument's UTF-8 lengths (an int for a string, a list for a list of strings), then
    each text's bytes in order."""

    def __init__(self, header: dict[str, Any]) -> None:
        args = dict(header.get("args") or {})
        bulk = {
            name: args[name]
            for name in TEXT_ARGS
            if isinstance(args.get(name), str)
            or (isinstance(args.get(name), list) and all(type(t) is str for t in args[name]))
        }
        if sum(len(v) if isinstance(v, str) else sum(map(len, v)) for v in bulk.values()) < (
            BODY_TEXT_MIN
        ):
            bulk = {}
        self.texts: list[str] = []
        self.body_size = 0
        layout: dict[str, Any] = {}
        for name, value in bulk.items():
            del args[name]
            items = [value] if isinstance(value, str) else value
            lengths = [_utf8_len(text) for text in items]  # a lone surrogate raises here
            self.texts.extend(items)
            self.body_size += sum(lengths)
            layout[name] = lengths[0] if isinstance(value, str) else lengths
        texts = {"texts": layout} if layout else {}
        self.head = dumps({**header, "args": args, **texts}).encode("utf-8")

    @property
    def size(self) -> int:
        return len(self.head) + self.body_size

    def parts(self) -> Iterable[bytes]:
        """The bytes to write, in order: one joined piece for a small frame; otherwise the
        prefix, the header and each text, encoded only as its turn comes."""
        prefix = MAGIC + _LENGTHS.pack(len(self.head), self.body_size)
        if self.size <= SMALL_FRAME:
            return (b"".join([prefix, self.head, *(t.encode("utf-8") for t in self.texts)]),)
        return _chain(prefix, self.head, self.texts)

    def plain(self) -> dict[str, Any]:
        """The call as the host reads it: a fresh copy of plain JSON data, texts restored."""
        header = loads(self.head.decode("utf-8"))
        it = iter(self.texts)
        for name, spec in header.pop("texts", {}).items():
            header["args"][name] = next(it) if isinstance(spec, int) else [next(it) for _ in spec]
        return header


def _chain(prefix: bytes, head: bytes, texts: list[str]) -> Iterator[bytes]:
    yield prefix
    yield head
    for text in texts:
        yield text.encode("utf-8")


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def text_layout(header: dict[str, Any], body_len: int) -> list[tuple[str, list[int], bool]]:
    """A call frame's body layout: (argument, UTF-8 lengths, whether it is one string), in
    body order, checked against the body's length (the frame comes from the sandbox)."""
    texts = header.get("texts")
    if (
        header.get("op") != "call"
        or not isinstance(texts, dict)
        or not isinstance(header.get("args"), dict)
    ):
        raise FrameError("only a call frame with `texts` may carry a body")
    layout = []
    for name, spec in texts.items():
        single = type(spec) is int
        lengths = [spec] if single else spec
        if name not in TEXT_ARGS or not isinstance(lengths, list) or name in header["args"]:
            raise FrameError(f"bad text argument {name!r} in a call frame")
        if not all(type(n) is int and n >= 0 for n in lengths):
            raise FrameError(f"bad text lengths for {name!r} in a call frame")
        layout.append((name, lengths, single))
    if sum(sum(lengths) for _, lengths, _ in layout) != body_len:
        raise FrameError("a call frame's text lengths do not add up to its body")
    return layout


def parse_prefix(prefix: bytes, max_body: int) -> tuple[int, int]:
    """Check the fixed prefix and return (header length, body length)."""
    if len(prefix) != PREFIX_SIZE or prefix[:4] != MAGIC:
        raise FrameError(f"bad frame prefix {prefix[:12]!r}")
    header_len, body_len = _LENGTHS.unpack(prefix[4:])
    if header_len > MAX_HEADER:
        raise FrameError(f"frame header of {header_len} bytes exceeds {MAX_HEADER}")
    if body_len > max_body:
        raise FrameError(f"frame body of {body_len} bytes exceeds {max_body}")
    return header_len, body_len


def decode_header(data: bytes) -> dict[str, Any]:
    try:
        header = loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise FrameError("frame header is not an object with an 'op'")
    return header
