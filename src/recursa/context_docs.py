"""Documents as contexts, on the host's side: found (PDF, Parquet, DOCX, HTML by content; Markdown,
CSV, TSV by extension), described, never parsed here for an RLM. The worker opens them
itself (`sandbox/inside/documents.py`: a PDF page by page; `textdocs.py`: the others).

pypdf and pyarrow (Parquet) are the `docs` extra. The host finds where their packages
are and names those folders in the worker's spec; every backend lets the worker read
them. The host imports pyarrow only to preview a Parquet file's footer and first rows.
The other formats need nothing beyond the standard library.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .sandbox.inside.documents import detect, open_document

SHORT_NAMES = {"pdf": "PDF", "parquet": "Parquet file"}
"""How a missing extra's message names a file that needs it."""
EXTRA_HINT = "needs the docs extra: pip install 'recursa[docs]'"
IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
}


def pdf_library() -> str | None:
    """The folder of the installed pypdf package (bound for the worker), or None."""
    return _package_folder("pypdf")


def arrow_library() -> str | None:
    """The folder of the installed pyarrow package (bound for the worker), or None."""
    return _package_folder("pyarrow")


def library_for(fmt: str) -> str | None:
    """The installed library a document format needs, or None (missing, or none needed)."""
    return {"pdf": pdf_library, "parquet": arrow_library}.get(fmt, lambda: "stdlib")()


def _package_folder(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))).resolve())


def sniff(path: Path) -> str | None:
    """The document format of the file at `path` (documents.detect), or None."""
    try:
        with path.open("rb") as fh:
            return detect(fh.read(1024), str(path))
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
    fmt = detect(head, str(path))
    if fmt in ("pdf", "parquet"):
        return None if library_for(fmt) else f"a {SHORT_NAMES[fmt]}, {EXTRA_HINT}"
    if fmt == "docx":
        return None
    for magic, kind in IMAGE_MAGIC.items():
        if head.startswith(magic):
            return f"a {kind} image: not text"
    if b"\0" in head:  # the test git uses for binary content
        return "binary, not text"
    return None


def describe_doc(var: str, name: str, size: int, fmt: str, path: str) -> str:
    """The first turn's metadata for a document context. A PDF's pages are not counted
    here (that would parse the file in the host): the worker counts them when asked."""
    if fmt == "pdf":
        return (
            f"`{var}` is a PDF document ({name}, {size:,} bytes), opened in the REPL and read "
            f"page by page, never whole: len({var}.pages) is its page count; {var}.pages[i] "
            f"is the text of page i+1 (extracted when first read); {var}.page(n) is page n "
            "counted from 1; "
            f"{var}.search(pattern, max_hits=100) gives [(page number, matching line), ...] "
            f"for a regular expression; str({var}) is all of its text, each page after a "
            "`[page n]` line (costly for long documents: prefer pages and search); "
            f"{var}.page_images(n) names page n's images, which llm_query(prompt, "
            "images=[name]) can show a vision model. Cite page numbers in your answer where "
            "they matter."
        )
    if fmt == "parquet":
        return (
            f"`{var}` is a Parquet table ({name}, {size:,} bytes): {USAGE[fmt]}\n"
            f"{parquet_preview(path)}"
        )
    if fmt in ("csv", "tsv"):
        return (
            f"`{var}` is a {fmt.upper()} table ({name}, {size:,} bytes): {USAGE[fmt]}\n"
            f"{table_preview(path, fmt)}"
        )
    return f"`{var}` is a {FORMAT_NAMES[fmt]} ({name}, {size:,} bytes): {USAGE[fmt]}"


FORMAT_NAMES = {
    "pdf": "PDF document",
    "docx": "Word document (DOCX)",
    "html": "web page (HTML)",
    "markdown": "Markdown document",
    "csv": "CSV table",
    "tsv": "TSV table",
    "parquet": "Parquet table",
}
_TEXT_DOC = (
    "in the REPL a TextDocument, a str of its readable text{what}, headings as `#` lines; "
    ".headings is [(level, title), ...], .section(title) the text under one heading."
)
USAGE = {
    "pdf": "in the REPL a PdfDocument, read page by page: .pages (lazy list of page texts, "
    "pages[i] is page i+1), .page(n), .search(pattern) -> [(page, line)], str() for all text, "
    ".page_images(n) names page n's images for llm_query(prompt, images=[...]).",
    "docx": _TEXT_DOC.format(what=" (paragraphs in order, table rows as cells joined by ' | ')"),
    "html": _TEXT_DOC.format(what=" (scripts and styles left out, list items as '- ' lines)"),
    "markdown": _TEXT_DOC.format(what=""),
    "csv": "in the REPL a Table, a str of the file's text; .columns is its header row, "
    ".records() yields each later row as a dict (column -> value), .row_count counts them.",
}
USAGE["tsv"] = USAGE["csv"]
USAGE["parquet"] = (
    "in the REPL a ParquetTable, read a row group at a time, never whole: .columns is "
    "its column names, .row_count its rows, .records(start=0, count=None) yields rows as "
    "dicts (column -> value); str() is all of its rows (costly: prefer records)."
)
PREVIEW_ROWS = 3


def table_preview(path: str, fmt: str) -> str:
    """The columns and first rows of a CSV/TSV file, from its first 64 KiB."""
    import csv
    import io

    with open(path, "rb") as fh:
        head = fh.read(64 * 1024).decode("utf-8", "replace")
    rows = list(csv.reader(io.StringIO(head), delimiter="," if fmt == "csv" else "\t"))
    if not rows:
        return "It is empty."
    shown = "\n".join(" | ".join(row) for row in rows[1 : 1 + PREVIEW_ROWS])
    return f"Columns: {rows[0]}.\nFirst rows:\n{shown[:500]}"


def parquet_preview(path: str) -> str:
    """The columns and first rows of a Parquet file: its footer and first batch only."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        batch = next(pf.iter_batches(batch_size=PREVIEW_ROWS), None)
    except Exception as exc:  # a broken file: the REPL says why when the model reads it
        return f"Its footer cannot be read: {type(exc).__name__}: {exc}"
    rows = batch.to_pylist() if batch is not None else []
    shown = "\n".join(" | ".join(str(v) for v in row.values()) for row in rows)
    return (
        f"Columns: {pf.schema_arrow.names} ({pf.metadata.num_rows:,} rows).\n"
        f"First rows:\n{shown[:500]}"
    )


def describe_in_dir(docs: dict[str, str]) -> str:
    """What a directory's first turn says of its documents: each format, its files, its use."""
    lines = []
    for fmt in FORMAT_NAMES:
        files = [rel for rel, f in docs.items() if f == fmt]
        if files:
            shown = ", ".join(files[:10]) + (" ..." if len(files) > 10 else "")
            lines.append(f"{len(files):,} {FORMAT_NAMES[fmt]} file(s) ({shown}): {USAGE[fmt]}")
    return "\n".join(lines)


def document_text(path: str, fmt: str) -> str:
    """A document's whole text, read here (a direct call puts it in one prompt)."""
    return str(open_document(path, fmt, arrow=arrow_library()))


WHOLE_FORMATS = frozenset({"pdf", "docx", "parquet"})
"""Formats opened as documents at any size (the others, above the mmap threshold, stay
mapped text: a 10 GB CSV is read line by line, never whole)."""
TYPE_NAMES = {
    "pdf": "PdfDocument",
    "docx": "TextDocument",
    "html": "TextDocument",
    "markdown": "TextDocument",
    "csv": "Table",
    "tsv": "Table",
    "parquet": "ParquetTable",
}
