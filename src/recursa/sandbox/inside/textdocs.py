"""Documents that are text underneath: DOCX, HTML, Markdown, CSV/TSV (standard library only).

Imported by `documents.py` beside it, in the worker, when such a file is opened; the host
uses the same readers where it reads a document itself. Each becomes a `str` (so every str
operation model code knows still works) that also carries the document's structure:
DOCX, HTML and Markdown are a `TextDocument`, with its headings as `#` lines in the text and
in `.headings`; a CSV or TSV file is a `Table`, with `.columns` and `.records()`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
HTML_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "title"})
HTML_BLOCKS = frozenset(
    {"p", "div", "br", "tr", "section", "article", "table", "ul", "ol", "pre", "blockquote"}
)


class TextDocument(str):
    """A document's readable text, headings as `#` lines; `.headings` is [(level, title),
    ...] in order, `.section(title)` the text under a heading (to the next heading of the
    same or a higher level), `.doc_format` 'docx', 'html' or 'markdown' (not `.format`:
    that is str's own method, which model code may well call)."""

    doc_format: str
    headings: list[tuple[int, str]]

    def __new__(cls, text: str, fmt: str) -> TextDocument:
        doc = super().__new__(cls, text)
        doc.doc_format = fmt
        doc.headings = [(level, title) for level, title, _ in _heading_lines(text)]
        return doc

    def section(self, title: str) -> str:
        """The heading line whose title is `title` and what follows it, as a str."""
        found = _heading_lines(self)
        for i, (level, name, start) in enumerate(found):
            if name == title:
                end = next((s for lv, _, s in found[i + 1 :] if lv <= level), len(self))
                return str(self[start:end])
        raise KeyError(f"no heading {title!r}: see .headings")


class Table(str):
    """A CSV or TSV file's text; `.columns` is its header row, `.records()` yields each
    later row as a dict (column -> value), `.row_count` counts them."""

    columns: list[str]
    delimiter: str

    def __new__(cls, text: str, delimiter: str) -> Table:
        table = super().__new__(cls, text)
        table.delimiter = delimiter
        table.columns = next(_csv_rows(text, delimiter), [])
        return table

    def records(self) -> Iterator[dict[str, str]]:
        rows = _csv_rows(self, self.delimiter)
        next(rows, None)
        for row in rows:
            yield dict(zip(self.columns, row, strict=False))

    @property
    def row_count(self) -> int:
        return sum(1 for _ in self.records())


def _csv_rows(text: str, delimiter: str) -> Iterator[list[str]]:
    import csv
    import io

    return csv.reader(io.StringIO(text), delimiter=delimiter)


def _heading_lines(text: str) -> list[tuple[int, str, int]]:
    """(level, title, offset) of each Markdown heading line outside fenced code."""
    found = []
    fenced = False
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("```") or stripped.startswith("~~~"):
            fenced = not fenced
        elif not fenced and stripped.startswith("#"):
            level = len(stripped) - len(stripped.lstrip("#"))
            title = stripped[level:].strip()
            if level <= 6 and title and stripped[level : level + 1] in (" ", "\t"):
                found.append((level, title, offset))
        offset += len(line)
    return found


def read(path: str, fmt: str) -> str:
    """The REPL's value for a text-based document of format `fmt`."""
    if fmt == "docx":
        try:
            return TextDocument(docx_text(path), "docx")
        except Exception as exc:  # a broken archive or XML: said with the file's name
            name = path.rsplit("/", 1)[-1]
            raise ValueError(f"cannot read {name} as DOCX: {type(exc).__name__}: {exc}") from None
    with open(path, "rb") as fh:
        text = fh.read().decode("utf-8", "replace")
    if fmt == "html":
        return TextDocument(html_text(text), "html")
    if fmt == "markdown":
        return TextDocument(text, "markdown")
    if fmt in ("csv", "tsv"):
        return Table(text, "," if fmt == "csv" else "\t")
    raise ValueError(f"unknown document format {fmt!r}")


def docx_text(path: str) -> str:
    """A Word file's paragraphs in order, headings (Title, Heading n) as `#` lines, table
    rows as cells joined by ' | '."""
    import zipfile
    from xml.etree import ElementTree

    with zipfile.ZipFile(path) as archive:
        body = ElementTree.fromstring(archive.read("word/document.xml")).find(f"{W}body")
    lines: list[str] = []
    for block in body if body is not None else []:
        if block.tag == f"{W}p":
            lines.append(_docx_paragraph(block))
        elif block.tag == f"{W}tbl":
            for row in block.iter(f"{W}tr"):
                cells = [
                    " ".join(_docx_paragraph(p) for p in cell.iter(f"{W}p"))
                    for cell in row.iter(f"{W}tc")
                ]
                lines.append(" | ".join(cells))
    return "\n".join(lines) + "\n"


def _docx_paragraph(p: Any) -> str:
    parts = []
    for node in p.iter():
        if node.tag == f"{W}t":
            parts.append(node.text or "")
        elif node.tag == f"{W}tab":
            parts.append("\t")
        elif node.tag in (f"{W}br", f"{W}cr"):
            parts.append("\n")
    text = "".join(parts)
    style = p.find(f"{W}pPr/{W}pStyle")
    name = (style.get(f"{W}val") or "").lower() if style is not None else ""
    if name == "title":
        return f"# {text}"
    if name.startswith("heading") and name[7:].isdigit() and text.strip():
        return f"{'#' * min(int(name[7:]), 6)} {text}"
    return text


def html_text(markup: str) -> str:
    """A web page's readable text: scripts, styles and the title left out, h1-h6 as `#`
    lines, list items as `- ` lines, blocks on lines of their own, blank runs collapsed."""
    from html.parser import HTMLParser

    out: list[str] = []
    skipping = [0]

    class Reader(HTMLParser):
        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag in HTML_SKIP:
                skipping[0] += 1
            elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
                out.append("\n\n" + "#" * int(tag[1]) + " ")
            elif tag == "li":
                out.append("\n- ")
            elif tag in HTML_BLOCKS or tag in ("td", "th"):
                out.append("\n" if tag not in ("td", "th") else " | ")

        def handle_endtag(self, tag: str) -> None:
            if tag in HTML_SKIP:
                skipping[0] = max(skipping[0] - 1, 0)
            elif (len(tag) == 2 and tag[0] == "h" and tag[1] in "123456") or tag in HTML_BLOCKS:
                out.append("\n")

        def handle_data(self, data: str) -> None:
            if not skipping[0] and data:  # runs of white space as one space, edges kept
                words = " ".join(data.split())
                before = " " if data[0].isspace() else ""
                after = " " if data[-1].isspace() and words else ""
                out.append(before + words + after)

    reader = Reader(convert_charrefs=True)
    reader.feed(markup)
    reader.close()
    lines = [line.strip() for line in "".join(out).splitlines()]
    text: list[str] = []
    for line in lines:
        if line or (text and text[-1]):
            text.append(line)
    return "\n".join(text).strip() + "\n"
