"""Large files as contexts, and JSON lines: what `context.from_path` uses beyond text.

A file of at least `mmap_threshold()` bytes (64 MiB unless RECURSA_MMAP_THRESHOLD or an
explicit `mmap_threshold=` says otherwise) becomes a context of kind `file`: the host never
reads it whole. Only its path crosses into the sandbox, and the worker maps it itself
(`sandbox/inside/mapped.py`, a `MappedText`). The host reads a few MiB: the head for the
description, and evenly spaced samples for the fingerprint recorded in traces.

A `.jsonl` / `.ndjson` file below the threshold becomes a list of records (kind `json`);
above it, it stays mapped text, and `context.records()` parses its lines one at a time.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
MMAP_THRESHOLD = 64 * MIB
"""Files of at least this many bytes are mapped by the worker instead of sent to it."""
THRESHOLD_ENV = "RECURSA_MMAP_THRESHOLD"
AS_TEXT_LIMIT = 256 * MIB
"""A mapped file above this is never read whole on the host (Direct, --trace-context)."""
HEAD_BYTES = 1 * MIB
"""Bytes read from the start of a mapped file to describe it."""
SAMPLES, SAMPLE_BYTES = 64, 64 * 1024
FINGERPRINT = f"sha256 of the size and {SAMPLES} samples of {SAMPLE_BYTES // 1024} KiB"
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
PREVIEW_CHARS = 500


def mmap_threshold(explicit: int | None = None) -> int:
    """The threshold in force: `explicit`, else RECURSA_MMAP_THRESHOLD (bytes, or with a
    K/M/G suffix), else MMAP_THRESHOLD."""
    if explicit is not None:
        return int(explicit)
    raw = os.environ.get(THRESHOLD_ENV, "").strip()
    if not raw:
        return MMAP_THRESHOLD
    return parse_size(raw)


def parse_size(text: str) -> int:
    """'64M', '1.5G', '4096' -> bytes (K, M, G are binary: 1024-based)."""
    from .errors import ConfigError

    units = {"k": 1024, "m": MIB, "g": 1024 * MIB}
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(raw[-1:], 1)
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise ConfigError(
            f"bad size {text!r}: expected bytes, or a number with K, M or G"
        ) from None
    if value < 0:
        raise ConfigError(f"bad size {text!r}: must not be negative")
    return value


def fingerprint(path: str, size: int) -> str:
    """What a trace records as a mapped file's `sha256`: the hash of its size and of
    SAMPLES evenly spaced pieces of SAMPLE_BYTES (the first and the last included). It
    reads at most 4 MiB, so a 4 GB file costs milliseconds, not the seconds a full hash
    takes; a change between samples goes unnoticed by it (replay still compares every
    block's output)."""
    digest = hashlib.sha256(f"recursa-sampled-v1\0{size}\0".encode())
    with open(path, "rb") as fh:
        if size <= SAMPLES * SAMPLE_BYTES:
            while chunk := fh.read(MIB):
                digest.update(chunk)
            return digest.hexdigest()
        stride = (size - SAMPLE_BYTES) / (SAMPLES - 1)
        for i in range(SAMPLES):
            fh.seek(int(i * stride))
            digest.update(fh.read(SAMPLE_BYTES))
    return digest.hexdigest()


def read_head(path: str, size: int) -> tuple[str, bool, int]:
    """(the decoded first HEAD_BYTES, whether those bytes are pure ASCII, line breaks there)."""
    with open(path, "rb") as fh:
        data = fh.read(min(size, HEAD_BYTES))
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=len(data) == size)
    return text, data.isascii(), data.count(b"\n")


def describe_file(
    var: str, name: str, size: int, head: str, ascii_head: bool, breaks: int, records: bool
) -> str:
    """The first turn's metadata for a mapped file: size, an estimate of its lines from its
    head, how to use it, and a preview; never a count that needs the whole file read."""
    read = min(size, HEAD_BYTES)
    if read == size:
        lines = f"{breaks + (1 if head and not head.endswith(chr(10)) else 0):,} lines"
    elif breaks:
        lines = f"about {round(breaks * size / read):,} lines (estimated from the first MiB)"
    else:
        lines = "no line break in its first MiB"
    chars = (
        "its first MiB is pure ASCII (a byte is a character there)"
        if ascii_head
        else "it holds non-ASCII UTF-8: len(context) counts characters"
    )
    usage = (
        "It behaves like a read-only str: len(context) (the first call reads the file once), "
        "context[a:b] (a str), context.find / rfind / index / count(sub), `sub in context`, "
        "startswith / endswith; `for line in context` and context.lines() go line by line, "
        "context.splitlines() is a lazy sequence; context.search(pattern, max_hits=100) gives "
        "[(offset, match), ...] for a regular expression; context.chunks(size, overlap=0) "
        "gives str pieces (len() and indexing work). Other str methods work on a slice."
    )
    if records:
        usage += " Each line is a JSON record: context.records() yields them parsed."
    return (
        f"`{var}` is a MappedText of {size:,} bytes ({name}), memory-mapped in the REPL and "
        f"never loaded whole: {lines}; {chars}. {usage}\n"
        f"Preview of its start:\n<<<\n{head[:PREVIEW_CHARS]}\n>>>"
    )


MAPPED_IN_DIR = (
    "in the REPL such a file is a MappedText (like a read-only str: len, slices, find, count, "
    "search, lines, chunks), not a str."
)


def mapped_in_dir(files: list[tuple[str, int]], threshold: int) -> int:
    """How many of a directory's files the worker maps (LazyDir in sandbox/inside/worker.py)."""
    return sum(1 for _, size in files if size and size >= threshold)


def edges(path: str, size: int) -> list[str]:
    """The decoded first and last HEAD_BYTES of a mapped file: where a slice that model code
    prints usually comes from (`context[:n]`, `context[-n:]`, or `print(context)`, whose
    output keeps its head and tail). The printed-context guard compares outputs with them,
    never with the whole file."""
    with open(path, "rb") as fh:
        head = fh.read(min(size, HEAD_BYTES))
        fh.seek(max(size - HEAD_BYTES, len(head)))
        tail = fh.read(HEAD_BYTES)
    return [head.decode("utf-8", "replace"), tail.decode("utf-8", "replace")]


def parse_jsonl(data: bytes) -> tuple[list[Any] | None, str | None]:
    """(the records, None), or (None, why not) when a line is not JSON."""
    records = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            return None, f"line {number} is not JSON ({exc})"
    return records, None


def is_jsonl(path: str | Path) -> bool:
    return Path(path).suffix.lower() in JSONL_SUFFIXES
