"""What a context can be, how it is loaded once into the worker, and how it is described.

The root model never sees a context's text: only its kind, size and a short preview
(invariant 4). Traces record a context by reference: name, size and sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import context_docs, context_files
from .errors import ConfigError
from .sandbox.base import ContextPayload, PayloadBody, encoded_slices, utf8_size

PREVIEW_CHARS = 500
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})


@dataclass(slots=True)
class Context:
    """One loaded context. `kind` is how the worker rebuilds it: text, json, dir, file
    (a large file the worker maps itself: `path`, `nbytes`; see context_files.py), or doc
    (a document the worker opens itself: `path`, `nbytes`, `doc_format`; context_docs.py).
    A directory's files of at least `mmap_threshold` bytes are mapped the same way, its
    documents (`docs`: path -> format) opened the same way, and `unreadable` lists the
    files it cannot give the model, each with the reason."""

    name: str
    kind: str
    text: str | None = None
    value: Any = None
    root: str | None = None
    files: list[tuple[str, int]] = field(default_factory=list)
    sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    path: str | None = None
    nbytes: int = 0
    mmap_threshold: int = context_files.MMAP_THRESHOLD
    doc_format: str = ""
    docs: dict[str, str] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Characters of text, items of a list or dict, or bytes of a directory or file."""
        if self.kind == "text":
            return len(self.text or "")
        if self.kind == "dir":
            return sum(size for _, size in self.files)
        if self.kind in ("file", "doc"):
            return self.nbytes
        return len(self.value) if hasattr(self.value, "__len__") else 1

    @property
    def type_name(self) -> str:
        if self.kind == "text":
            return "str"
        if self.kind == "dir":
            return "directory"
        if self.kind == "file":
            return "MappedText"
        if self.kind == "doc":
            return context_docs.TYPE_NAMES[self.doc_format]
        return type(self.value).__name__

    def reference(self) -> dict[str, Any]:
        """How a trace records this context: never its text."""
        ref = {"name": self.name, "kind": self.kind, "size": self.size, "sha256": self.sha256}
        if self.kind == "file" or self.doc_format in context_docs.WHOLE_FORMATS:
            ref["sha256_of"] = context_files.FINGERPRINT
        if self.kind == "dir":  # which of its files the REPL maps: replay maps the same
            ref["mmap_threshold"] = self.mmap_threshold
        return ref

    def as_text(self) -> str:
        """The context as one text, for a plain sub-query at the depth limit."""
        if self.kind == "text":
            return self.text or ""
        if self.kind == "json":
            return self.value if isinstance(self.value, str) else json.dumps(self.value)
        if self.kind == "file":
            if self.nbytes > context_files.AS_TEXT_LIMIT:
                raise ConfigError(
                    f"context {self.name} is a {self.nbytes:,}-byte file, mapped in the REPL "
                    f"and never read whole here: more than {context_files.AS_TEXT_LIMIT:,} "
                    "bytes cannot go into one prompt (use the RLM strategy, which slices it)"
                )
            return Path(self.path or "").read_bytes().decode("utf-8", "replace")
        if self.kind == "doc":
            return context_docs.document_text(self.path or "", self.doc_format)
        parts = []
        for rel, _ in self.files:
            full = Path(self.root or ".") / rel
            if rel in self.docs:
                text = context_docs.document_text(str(full), self.docs[rel])
            else:
                text = full.read_bytes().decode("utf-8", "replace")
            parts.append(f"=== {rel} ===\n{text}")
        return "\n".join(parts)


def from_text(text: str, name: str = "<text>") -> Context:
    digest = hashlib.sha256()
    for data in encoded_slices(text):
        digest.update(data)
    ctx = Context(name=name, kind="text", text=text, sha256=digest.hexdigest())
    if not text:
        ctx.warnings.append(f"context {name} is empty")
    return ctx


def from_bytes(data: bytes, name: str) -> Context:
    text = data.decode("utf-8", errors="replace")
    ctx = from_text(text, name)
    ctx.sha256 = hashlib.sha256(data).hexdigest()
    bad = text.count("\ufffd") - data.count("\ufffd".encode())
    if bad > 0:
        ctx.warnings.append(
            f"context {name} is not valid UTF-8: {bad:,} bad byte sequences were replaced"
        )
    return ctx


def from_value(value: Any, name: str = "<value>") -> Context:
    """A context given from Python: text, bytes, a path, or JSON-like data."""
    if isinstance(value, Context):
        return value
    if isinstance(value, str):
        return from_text(value, name)
    if isinstance(value, bytes | bytearray):
        return from_bytes(bytes(value), name)
    if isinstance(value, Path):
        return from_path(str(value))
    try:
        data = json.dumps(value).encode("utf-8")
    except (TypeError, ValueError):
        raise ConfigError(
            f"context of type {type(value).__name__} is not text, bytes, a path or JSON data"
        ) from None
    return Context(name=name, kind="json", value=value, sha256=hashlib.sha256(data).hexdigest())


def from_path(path: str, *, mmap_threshold: int | None = None) -> Context:
    """A CLI `--context`: a file, a directory, or '-' for standard input. A regular file of
    at least `mmap_threshold` bytes (default: context_files.mmap_threshold()) is mapped by
    the worker, never read whole here; a smaller `.jsonl` file is a list of records."""
    if path == "-":
        return from_bytes(sys.stdin.buffer.read(), "<stdin>")
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"context path not found: {path}")
    if p.is_dir():
        return from_directory(p, mmap_threshold=mmap_threshold)
    try:
        size = p.stat().st_size
        fmt = context_docs.sniff(p) if p.is_file() else None
        large = size >= context_files.mmap_threshold(mmap_threshold)
        if fmt and (fmt in context_docs.WHOLE_FORMATS or not large):
            return from_document(p, fmt)
        if p.is_file() and size and large:
            return from_file(p)
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read context {path}: {exc.strerror or exc}") from None
    if context_files.is_jsonl(p):
        records, problem = context_files.parse_jsonl(data)
        if records is not None:
            digest = hashlib.sha256(data).hexdigest()
            return Context(name=path, kind="json", value=records, sha256=digest)
        ctx = from_bytes(data, path)
        ctx.warnings.append(f"context {path} is not JSON lines ({problem}): loaded as text")
        return ctx
    return from_bytes(data, path)


def from_file(path: str | Path) -> Context:
    """A large file as a context the worker maps itself (a MappedText in the REPL)."""
    real = Path(path).resolve()
    size = real.stat().st_size
    return Context(
        name=str(path),
        kind="file",
        path=str(real),
        nbytes=size,
        sha256=context_files.fingerprint(str(real), size),
    )


def from_document(path: str | Path, fmt: str) -> Context:
    """A document as a context the worker opens itself (a PDF page by page)."""
    if context_docs.library_for(fmt) is None:
        kind = context_docs.SHORT_NAMES[fmt]
        raise ConfigError(f"context {path} is a {kind}: reading it {context_docs.EXTRA_HINT}")
    real = Path(path).resolve()
    size = real.stat().st_size
    sampled = fmt in context_docs.WHOLE_FORMATS  # any size; the others are under the threshold
    return Context(
        name=str(path),
        kind="doc",
        path=str(real),
        nbytes=size,
        doc_format=fmt,
        sha256=context_files.fingerprint(str(real), size)
        if sampled
        else hashlib.sha256(real.read_bytes()).hexdigest(),
    )


def from_directory(root: Path, *, mmap_threshold: int | None = None) -> Context:
    """A lazy mapping of its files; those of at least `mmap_threshold` bytes (default:
    context_files.mmap_threshold()) are MappedText in the REPL, never read whole."""
    files: list[tuple[str, int]] = []
    docs: dict[str, str] = {}
    unreadable: list[tuple[str, str]] = []
    ctx_threshold = context_files.mmap_threshold(mmap_threshold)  # larger text stays mapped
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for fname in sorted(filenames):
            full = Path(dirpath) / fname
            if not full.is_file():
                continue
            rel = full.relative_to(root).as_posix()
            reason = context_docs.why_not_text(full)
            if reason:
                unreadable.append((rel, reason))
                continue
            size = full.stat().st_size
            fmt = context_docs.sniff(full)
            if fmt and (fmt in context_docs.WHOLE_FORMATS or size < ctx_threshold):
                docs[rel] = fmt
            files.append((rel, size))
            digest.update(f"{rel}\0{size}\n".encode())
    ctx = Context(
        name=str(root),
        kind="dir",
        root=str(root.resolve()),
        files=files,
        sha256=digest.hexdigest(),
        mmap_threshold=ctx_threshold,
        docs=docs,
        unreadable=unreadable,
    )
    if unreadable:
        shown = ", ".join(f"{rel} ({why})" for rel, why in unreadable[:5])
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        ctx.warnings.append(
            f"context directory {root}: cannot read {len(unreadable)} "
            f"file{_s(len(unreadable))}: {shown}{more}"
        )
    if not files:
        ctx.warnings.append(f"context directory {root} holds no text files")
    return ctx


def build_payload(contexts: list[Context]) -> ContextPayload:
    """Specs and one body for the worker's `init`: each context crosses the channel once."""
    specs: list[dict[str, Any]] = []
    pieces: list[str | bytes] = []
    offset = 0
    for ctx in contexts:
        if ctx.kind == "dir":
            specs.append(
                {
                    "kind": "dir",
                    "root": ctx.root,
                    "files": ctx.files,
                    "mmap_threshold": ctx.mmap_threshold,
                    **_docs_spec(ctx.docs),
                }
            )
            continue
        if ctx.kind == "doc":  # only the path crosses: the worker opens the document
            specs.append(
                {"kind": "doc", "path": ctx.path, "format": ctx.doc_format, **_docs_spec({})}
            )
            continue
        if ctx.kind == "file":  # only the path crosses: the worker maps the file
            specs.append({"kind": "file", "path": ctx.path, "size": ctx.nbytes})
            continue
        if ctx.kind == "text":  # the text itself, encoded a slice at a time as it is sent
            text = ctx.text or ""
            data: str | bytes = text
            size = utf8_size(text)  # at once for ASCII; slice by slice otherwise
        else:
            data = json.dumps(ctx.value).encode("utf-8")
            size = len(data)
        specs.append({"kind": ctx.kind, "offset": offset, "length": size})
        pieces.append(data)
        offset += size
    return ContextPayload(specs=specs, body=PayloadBody(tuple(pieces), offset))


def _docs_spec(docs: dict[str, str]) -> dict[str, Any]:
    """What the worker needs to open documents: their formats, pypdf's and pyarrow's folders."""
    return {"docs": docs, "lib": context_docs.pdf_library(), "arrow": context_docs.arrow_library()}


def describe(contexts: list[Context]) -> str:
    """The metadata the root model gets instead of the text."""
    if not contexts:
        return "There is no `context` variable: the question is all there is."
    if len(contexts) == 1:
        return _describe_one("context", contexts[0])
    lines = [
        f"`context` is a list of {len(contexts)} contexts, each also available as "
        + ", ".join(f"`context_{i}`" for i in range(len(contexts)))
        + "."
    ]
    lines += [_describe_one(f"context_{i}", ctx) for i, ctx in enumerate(contexts)]
    return "\n\n".join(lines)


def _describe_one(var: str, ctx: Context) -> str:
    if ctx.kind == "text":
        text = ctx.text or ""
        lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
        head = f"`{var}` is a str of {len(text):,} characters ({lines:,} line{_s(lines)})"
        if not text:
            return head + ", empty."
        return f"{head}. Preview of its start:\n<<<\n{text[:PREVIEW_CHARS]}\n>>>"
    if ctx.kind == "dir":
        return _describe_dir(var, ctx)
    if ctx.kind == "doc":
        return context_docs.describe_doc(var, ctx.name, ctx.nbytes, ctx.doc_format, ctx.path or "")
    if ctx.kind == "file":
        path = ctx.path or ""
        head, ascii_head, breaks = context_files.read_head(path, ctx.nbytes)
        records = context_files.is_jsonl(path)
        return context_files.describe_file(
            var, ctx.name, ctx.nbytes, head, ascii_head, breaks, records
        )
    value = ctx.value
    if isinstance(value, list):
        kinds = Counter(type(v).__name__ for v in value)
        kinds_text = ", ".join(f"{n:,} {k}" for k, n in kinds.most_common(5))
        preview = json.dumps(value[:3], default=str)[:PREVIEW_CHARS]
        keys = Counter(k for v in value[:1000] if isinstance(v, dict) for k in v)
        common = ", ".join(str(k) for k, _ in keys.most_common(20))
        fields = f" Keys of its dicts (in the first 1,000): {common}." if keys else ""
        return (
            f"`{var}` is a list of {len(value):,} items ({kinds_text}).{fields} "
            f"First items:\n{preview}"
        )
    if isinstance(value, dict):
        first = list(value)[:20]
        preview = json.dumps({k: value[k] for k in first[:3]}, default=str)[:PREVIEW_CHARS]
        return (
            f"`{var}` is a dict of {len(value):,} keys; first keys: {first}.\nPreview:\n{preview}"
        )
    return f"`{var}` is a {type(value).__name__}: {json.dumps(value)[:PREVIEW_CHARS]}"


def _describe_dir(var: str, ctx: Context) -> str:
    total = sum(size for _, size in ctx.files)
    exts = Counter(Path(rel).suffix or "(none)" for rel, _ in ctx.files)
    largest = sorted(ctx.files, key=lambda f: -f[1])[:5]
    listing = "\n".join(f"  {rel}" for rel, _ in ctx.files[:20])
    more = f"\n  ... and {len(ctx.files) - 20:,} more" if len(ctx.files) > 20 else ""
    mapped = context_files.mapped_in_dir(ctx.files, ctx.mmap_threshold)
    large = (
        f"\n{mapped:,} file{_s(mapped)} of at least {ctx.mmap_threshold:,} bytes "
        f"{'is' if mapped == 1 else 'are'} memory-mapped, never read whole: "
        f"{context_files.MAPPED_IN_DIR}"
        if mapped
        else ""
    )
    if ctx.docs:
        large += "\nDocuments: " + context_docs.describe_in_dir(ctx.docs)
    if ctx.unreadable:
        shown = "\n".join(f"  {rel}: {why}" for rel, why in ctx.unreadable[:20])
        more = f"\n  ... and {len(ctx.unreadable) - 20:,} more" if len(ctx.unreadable) > 20 else ""
        large += f"\nNot in the mapping (cannot be read as text):\n{shown}{more}"
        if any(" image" in why for _, why in ctx.unreadable):
            large += (
                "\nAn image is shown to a vision sub-model by its path as listed: "
                f"llm_query(prompt, images=[path]) (in `{var}` the paths are relative)."
            )
    return (
        f"`{var}` is a directory: a mapping of relative path -> file text (read on access), "
        f"{len(ctx.files):,} files, {total:,} bytes in all; `{var}.sizes` maps path -> bytes.\n"
        f"Extensions: {', '.join(f'{e} ({n})' for e, n in exts.most_common(8))}.\n"
        f"Largest: {', '.join(f'{rel} ({size:,} B)' for rel, size in largest)}.{large}\n"
        f"Files:\n{listing}{more}"
    )


def _s(n: int) -> str:
    return "" if n == 1 else "s"
