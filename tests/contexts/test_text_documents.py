"""DOCX, HTML, Markdown, CSV and TSV as contexts (standard library only, no extra): read by
the sandbox worker into a str that carries the document's structure (headings, columns),
described in the first turn by kind. A scripted root model behind a FakeLMServer on
127.0.0.1 runs real blocks in a real worker."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

from e2e_helpers import repl, root_requests, sub_requests
from recursa import RLM, Direct
from recursa.context import from_path
from recursa.testing import ScriptedLM
from recursa.testing.documents import write_docx

PAGE = """<!DOCTYPE html>
<html><head><title>Status</title><style>p { color: red }</style>
<script>var secret = "not text";</script></head>
<body><h1>Release notes</h1><p>Version <b>4.2</b> ships on Friday.</p>
<ul><li>faster search</li><li>fewer bugs</li></ul>
<h2>Known issues</h2><p>The export button is grey.</p></body></html>
"""


def run_code(serve, code: str, context: Any) -> tuple[Any, str]:
    server = serve(ScriptedLM(root=[repl(code)]))
    result = RLM("openai/scripted", base_url=server.url, env={}).run("q", context=context)
    assert result.status == "ok", result.error
    return result.answer, root_requests(server)[0].messages[1]["content"]


def test_a_docx_file_is_its_paragraphs_with_headings_in_the_repl(serve, tmp_path: Path) -> None:
    docx = write_docx(
        tmp_path / "handbook.docx",
        [
            ("Title", "Handbook"),
            ("Heading1", "Safety"),
            ("", "Wear gloves & goggles."),
            ("Heading2", "Codes"),
            ("", "The gate code is 5150."),
            ("Heading1", "Leave"),
            ("", "Ask your manager."),
        ],
    )
    answer, first = run_code(
        serve,
        "FINAL([type(context).__name__, context.headings, context.section('Codes'), "
        "context.splitlines()[2]])",
        from_path(str(docx)),
    )
    assert answer == [
        "TextDocument",
        [[1, "Handbook"], [1, "Safety"], [2, "Codes"], [1, "Leave"]],
        "## Codes\nThe gate code is 5150.\n",
        "Wear gloves & goggles.",
    ]
    assert "is a Word document (DOCX)" in first and ".section(title)" in first


def test_an_html_page_is_its_readable_text_with_headings(serve, tmp_path: Path) -> None:
    page = tmp_path / "status.txt"  # an HTML page found by its content, whatever its name
    page.write_text(PAGE)
    answer, _ = run_code(
        serve,
        "FINAL([context.headings, 'secret' in context, 'Version 4.2 ships on Friday.' in "
        "context, context.section('Known issues'), '- faster search\\n- fewer bugs' in context])",
        from_path(str(page)),
    )
    assert answer == [
        [[1, "Release notes"], [2, "Known issues"]],
        False,
        True,
        "## Known issues\n\nThe export button is grey.\n",
        True,
    ]


def test_a_csv_file_is_a_table_of_records_with_its_columns_previewed(serve, tmp_path: Path) -> None:
    table = tmp_path / "sales.csv"
    table.write_text('region,amount\nnorth,12\nsouth,30\n"east, far",5\n')
    answer, first = run_code(
        serve,
        "FINAL([context.columns, context.row_count, "
        "sum(int(r['amount']) for r in context.records()), context.splitlines()[0]])",
        from_path(str(table)),
    )
    assert answer == [["region", "amount"], 3, 47, "region,amount"]
    assert "is a CSV table" in first and "Columns: ['region', 'amount']." in first
    assert "north | 12" in first


def test_a_folder_mixes_kinds_each_read_as_its_own(serve, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "guide.md").write_text(
        "# Guide\nintro\n```\n# not a heading\n```\n## Setup\nrun it\n"
    )
    (folder / "page.html").write_text(PAGE)
    (folder / "rows.tsv").write_text("k\tv\na\t1\n")
    (folder / "plain.txt").write_text("just text\n")
    write_docx(folder / "memo.docx", [("Heading1", "Memo"), ("", "Budget approved.")])
    answer, first = run_code(
        serve,
        "FINAL({k: type(v).__name__ for k, v in context.items()} | "
        "{'md': context['guide.md'].headings, 'tsv': list(context['rows.tsv'].records())})",
        from_path(str(folder)),
    )
    assert answer == {
        "guide.md": "TextDocument",
        "memo.docx": "TextDocument",
        "page.html": "TextDocument",
        "plain.txt": "str",
        "rows.tsv": "Table",
        "md": [[1, "Guide"], [2, "Setup"]],
        "tsv": [{"k": "a", "v": "1"}],
    }
    assert "1 Word document (DOCX) file(s) (memo.docx)" in first
    assert "1 TSV table file(s) (rows.tsv)" in first


def test_a_direct_call_sends_a_docx_as_its_text(serve, tmp_path: Path) -> None:
    docx = write_docx(tmp_path / "m.docx", [("Heading1", "Memo"), ("", "Budget approved.")])
    server = serve(ScriptedLM(sub=["approved"]))
    result = Direct("openai/scripted", base_url=server.url, env={}).run(
        "q", context=from_path(str(docx))
    )
    assert result.status == "ok", result.error
    assert "# Memo\nBudget approved." in sub_requests(server)[0].messages[-1]["content"]


def test_a_broken_docx_in_a_folder_fails_the_code_that_reads_it_with_the_reason(
    serve, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    with zipfile.ZipFile(folder / "bad.docx", "w") as archive:
        archive.writestr("word/document.xml", "<w:document")
    (folder / "ok.md").write_text("# Fine\n")
    answer, _ = run_code(
        serve,
        "try:\n    context['bad.docx']\nexcept ValueError as exc:\n"
        "    FINAL([str(exc), context['ok.md'].headings])",
        from_path(str(folder)),
    )
    assert answer[0].startswith("cannot read bad.docx as DOCX: ParseError")
    assert answer[1] == [[1, "Fine"]]


def test_a_text_format_is_hashed_whole_as_text_contexts_are(tmp_path: Path) -> None:
    page = tmp_path / "notes.md"
    page.write_text("# Notes\n")
    ref = from_path(str(page)).reference()
    assert ref["sha256"] == hashlib.sha256(b"# Notes\n").hexdigest() and "sha256_of" not in ref
