"""Documents as contexts: a PDF opened by the worker itself, its pages read on demand; DOCX,
HTML, Markdown, CSV and TSV read by `textdocs.py` beside this.

Imported by `worker.py` (beside it, standard library only) when a `doc` context arrives,
or a directory holds one: only the file's path crosses the channel, never its text. The
PDF library (pypdf, the `docs` extra) is not in the sandbox's `sys.path` (`python -I -S`):
the host names the folder that holds its package (`lib`), every backend lets the worker
read that folder, and it is imported from there the first time a document is opened.

The host uses the same classes where it reads a document itself (a direct call).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

PDF_MAGIC = b"%PDF-"
TEXT_SUFFIXES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
}
CACHED_PAGES = 8
"""Page texts kept after extraction (the most recent): a document's memory stays flat."""
RELEASE_EVERY = 16
"""Pages extracted between two drops of the PDF library's own cache of parsed objects."""


class DocumentError(ValueError):
    """A document that cannot be read (a broken or encrypted PDF): raised in the model's
    code that reads it, with the reason, never at the worker's start."""


def detect(head: bytes, path: str = "") -> str | None:
    """The document format of a file: 'pdf', 'parquet', 'docx' and 'html' by content, never by name
    (a PDF may be called anything); 'markdown', 'csv' and 'tsv', plain text underneath,
    by the name's extension. None for any other file."""
    if PDF_MAGIC in head[:1024]:
        return "pdf"
    if _sibling_parquet().is_parquet(head, path):
        return "parquet"
    if head.startswith(b"PK\x03\x04") and path and _is_docx(path):
        return "docx"
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:256].lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "html"
    return TEXT_SUFFIXES.get(os.path.splitext(path)[1].lower())


def _is_docx(path: str) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return "word/document.xml" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _sibling_parquet() -> Any:
    if TYPE_CHECKING:  # the checker reads the package's module; a script finds the same file
        from . import parquet
    else:
        try:
            from . import parquet
        except ImportError:  # run as a script inside the sandbox: the sibling by bare name
            import parquet
    return parquet


def open_document(path: str, fmt: str, lib: str | None = None, arrow: str | None = None) -> Any:
    """The REPL's value for a document context of format `fmt`: a PdfDocument (pypdf from
    `lib`), a ParquetTable (pyarrow from `arrow`), or a str that carries its structure
    (textdocs.py: TextDocument, Table)."""
    if fmt == "pdf":
        return PdfDocument(path, lib)
    if fmt == "parquet":
        return _sibling_parquet().ParquetTable(path, arrow)
    if TYPE_CHECKING:  # the checker reads the package's module; a script finds the same file
        from . import textdocs
    else:
        try:
            from . import textdocs
        except ImportError:  # run as a script inside the sandbox: the sibling by bare name
            import textdocs
    return textdocs.read(path, fmt)


def _pypdf(lib: str | None) -> Any:
    """pypdf, imported from `lib` (the folder its package is in) where it is not importable."""
    if lib:
        parent = os.path.dirname(lib.rstrip("/"))
        if parent not in sys.path:
            sys.path.append(parent)
    import pypdf

    return pypdf


class Pages:
    """A PDF's pages as a lazy, read-only sequence of str: `pages[0]` is page 1's text,
    extracted when first asked for (negative indexes and slices work, a slice is a list)."""

    def __init__(self, doc: PdfDocument) -> None:
        self._doc = doc

    def __len__(self) -> int:
        return self._doc.page_count

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._doc.page_text(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"page index {index} out of range: the document has {n} pages")
        return self._doc.page_text(i)

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self._doc.page_text(i)

    def __repr__(self) -> str:
        return f"<{len(self)} pages: pages[i] is page i+1's text>"


class PdfDocument:
    """A PDF file, read page by page. `pages` is the lazy sequence of page texts; `page(n)`
    is page n (numbered from 1, as a reader names it); `search(pattern)` finds a regular
    expression page by page; `str(doc)` is the whole text with a `[page n]` line before
    each page; `len(doc)` is its page count."""

    def __init__(self, path: str, lib: str | None = None) -> None:
        self.path = path
        self.name = os.path.basename(path)
        """How image names start (`page_images`): a directory context sets its key."""
        self.doc_format = "pdf"
        self.size = os.path.getsize(path)
        self._lib = lib
        self._opened: Any = None
        self._count: int | None = None
        self._texts: dict[int, str] = {}
        self._extracted = 0
        self.pages = Pages(self)

    @property
    def _reader(self) -> Any:
        """pypdf's reader, made when the document is first read (so a broken PDF fails the
        code that reads it, with the reason, not the worker's start)."""
        if self._opened is None:
            # A file object, not a path: given a path, pypdf reads the whole file into memory.
            fh = open(self.path, "rb")  # noqa: SIM115 (held for the document's life)
            try:
                self._opened = _pypdf(self._lib).PdfReader(fh)
            except Exception as exc:
                fh.close()
                raise DocumentError(self._cannot(exc)) from None
        return self._opened

    def _cannot(self, exc: BaseException) -> str:
        return f"cannot read {os.path.basename(self.path)} as a PDF: {type(exc).__name__}: {exc}"

    @property
    def page_count(self) -> int:
        if self._count is None:
            try:
                self._count = len(self._reader.pages)
            except DocumentError:
                raise
            except Exception as exc:
                raise DocumentError(self._cannot(exc)) from None
        return self._count

    def page_text(self, i: int) -> str:
        """Page i+1's text (0-based `i`), from the small cache or extracted now."""
        text = self._texts.pop(i, None)
        if text is None:
            try:
                text = self._reader.pages[i].extract_text() or ""
            except DocumentError:
                raise
            except Exception as exc:  # a broken page: the reason, in the code that read it
                raise DocumentError(f"page {i + 1}: {self._cannot(exc)}") from None
            self._extracted += 1
            if self._extracted % RELEASE_EVERY == 0:
                self._release()
        self._texts[i] = text  # most recent last
        while len(self._texts) > CACHED_PAGES:
            del self._texts[next(iter(self._texts))]
        return text

    def _release(self) -> None:
        """Drop pypdf's cache of the objects parsed so far (content streams, fonts), so that
        reading every page of a long PDF holds a few pages' objects at a time, not the whole
        file's; the page dictionaries themselves stay (small, and found again cheaply)."""
        cache = getattr(self._reader, "resolved_objects", None)
        if isinstance(cache, dict):
            cache.clear()

    def page(self, number: int) -> str:
        """Page `number`, counted from 1."""
        if not 1 <= number <= self.page_count:
            raise IndexError(f"no page {number}: the document has pages 1 to {self.page_count}")
        return self.page_text(number - 1)

    def page_images(self, number: int) -> list[str]:
        """Names of page `number`'s images (counted from 1), for `llm_query(prompt,
        images=[...])`: listed here without decoding them; the host extracts the one sent."""
        if not 1 <= number <= self.page_count:
            raise IndexError(f"no page {number}: the document has pages 1 to {self.page_count}")
        try:
            count = len(list(self._reader.pages[number - 1].images.keys()))
        except Exception as exc:
            raise DocumentError(f"page {number}: {self._cannot(exc)}") from None
        return [f"{self.name}#page={number}/image{i}" for i in range(count)]

    def search(self, pattern: str, max_hits: int = 100, flags: int = 0) -> list[tuple[int, str]]:
        """[(page number, the line around each match), ...] for a regular expression,
        reading the pages in order and stopping at `max_hits`."""
        import re

        regex = re.compile(pattern, flags)
        hits: list[tuple[int, str]] = []
        for i in range(self.page_count):
            text = self.page_text(i)
            for match in regex.finditer(text):
                start = text.rfind("\n", 0, match.start()) + 1
                end = text.find("\n", match.end())
                hits.append((i + 1, text[start : end if end >= 0 else len(text)][:300]))
                if len(hits) >= max_hits:
                    return hits
        return hits

    def __len__(self) -> int:
        return self.page_count

    def __str__(self) -> str:
        return "\n".join(f"[page {i + 1}]\n{text}" for i, text in enumerate(self.pages))

    def __repr__(self) -> str:
        name = os.path.basename(self.path)
        return f"<PDF {name!r}: {self.size} bytes>"
