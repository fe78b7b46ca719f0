"""Documents (PDF) as contexts, on the host's side: found by content, described, never parsed
here for an RLM. The worker opens them itself (`sandbox/inside/documents.py`), page by page.

pypdf is the `docs` extra. The host only finds where its package is (without importing it)
and names that folder in the worker's spec; every backend lets the worker read it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .sandbox.inside.documents import detect, open_document

EXTRA_HINT = "needs the docs extra: pip install 'recursa[docs]'"
IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
}


def pdf_library() -> str | None:
    """The folder of the installed pypdf package (bound for the worker), or None."""
    try:
        spec = importlib.util.find_spec("pypdf")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))).resolve())


def sniff(path: Path) -> str | None:
    """The document format of the file at `path` ('pdf'), by its first bytes, or None."""
    try:
        with path.open("rb") as fh:
            return detect(fh.read(1024))
    except OSError:
        return None


def why_not_text(path: Path, probe: int = 8192) -> str | None:
    """Why a file of a directory cannot be given to the model as text, or None when it can:
    what it is (a PDF without the extra, an image, other binary), never a silent drop."""
    try:
        with path.open("rb") as fh:
            head = fh.read(probe)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    fmt = detect(head)
    if fmt == "pdf":
        return None if pdf_library() else f"a PDF, {EXTRA_HINT}"
    for magic, kind in IMAGE_MAGIC.items():
        if head.startswith(magic):
            return f"a {kind} image: not text"
    if b"\0" in head:  # the test git uses for binary content
        return "binary, not text"
    return None


def describe_doc(var: str, name: str, size: int) -> str:
    """The first turn's metadata for a PDF context; its pages are not counted here (that
    would parse the file in the host), the worker counts them when asked."""
    return (
        f"`{var}` is a PDF document ({name}, {size:,} bytes), opened in the REPL and read "
        f"page by page, never whole: len({var}.pages) is its page count; {var}.pages[i] "
        f"is the text of page i+1 (extracted when first read); {var}.page(n) is page n "
        "counted from 1; "
        f"{var}.search(pattern, max_hits=100) gives [(page number, matching line), ...] "
        f"for a regular expression; str({var}) is all of its text, each page after a "
        "`[page n]` line (costly for long documents: prefer pages and search). Cite page "
        "numbers in your answer where they matter."
    )


DIR_DOCS = (
    "in the REPL such a file is a PDF document, not a str: .pages (lazy list of page texts, "
    "pages[i] is page i+1), .page(n), .search(pattern) -> [(page, line)], str() for all text."
)


def document_text(path: str, fmt: str) -> str:
    """A document's whole text, read here (a direct call puts it in one prompt)."""
    return str(open_document(path, fmt))
