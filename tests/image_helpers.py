"""Images the fake vision sub-model can 'read': a valid PNG carrying words in a tEXt chunk,
and a scripted sub-model that answers with the words in each image it was sent."""

from __future__ import annotations

import struct
import zlib

from recursa.testing import LMRequest


def png(words: str) -> bytes:
    """A valid 1x1 PNG that carries `words` in a tEXt chunk: what the fake vision model
    'sees' in it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"Comment\0" + words.encode())
        + chunk(b"IDAT", zlib.compress(b"\0\0"))
        + chunk(b"IEND", b"")
    )


def words_in(data: bytes) -> str:
    """The text of a PNG's tEXt chunk (what `png` wrote)."""
    at = data.index(b"tEXt")
    (size,) = struct.unpack(">I", data[at - 4 : at])
    return data[at + 4 : at + 4 + size].split(b"\0", 1)[1].decode()


def vision(request: LMRequest) -> str:
    """A sub-model that reads the text written in each image it was sent."""
    if not request.images:
        return "I see no image."
    return " | ".join(words_in(data) for _, data in request.images)
