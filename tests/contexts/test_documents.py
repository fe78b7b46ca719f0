"""PDF documents as contexts: found by content, opened by the sandbox worker itself (never
parsed by the host for an RLM), read page by page, and what cannot be read is named in the
first message with the reason. A scripted root model behind a FakeLMServer on 127.0.0.1
runs real blocks in a real worker (bwrap where it works)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from e2e_helpers import repl, root_requests, sub_requests
from extras import needs_extra
from recursa import RLM, Direct, context_docs
from recursa.context import from_path
from recursa.core.actions import Kernel
from recursa.core.actions.schema import ADAPTER
from recursa.errors import ConfigError
from recursa.testing import ScriptedLM
from recursa.testing.documents import write_pdf
from recursa.trace.jsonl import JsonlTrace

pytestmark = needs_extra("docs", "pypdf")

PAGES = [f"Chapter {n}\nNothing to see on page {n}." for n in range(1, 13)]
PAGES[8] = "Chapter 9\nThe vault code is 7341.\nEnd of chapter."


def run_code(serve, code: str, context: Any) -> tuple[Any, str]:
    """Run one block over `context`: (the answer, the first user message)."""
    server = serve(ScriptedLM(root=[repl(code)]))
    result = RLM("openai/scripted", base_url=server.url, env={}).run("q", context=context)
    assert result.status == "ok", result.error
    return result.answer, root_requests(server)[0].messages[1]["content"]


def test_a_pdf_is_a_document_with_lazy_pages_in_the_repl(serve, tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "report.bin", PAGES)  # found by content, not by its name
    answer, first = run_code(
        serve,
        "FINAL([len(context.pages), context.pages[8].splitlines()[1], context.page(1)[:9], "
        "context.search(r'code is \\d+'), str(context).count('[page ')])",
        context=from_path(str(pdf)),
    )
    assert answer == [
        12,
        "The vault code is 7341.",
        "Chapter 1",
        [[9, "The vault code is 7341."]],
        12,
    ]
    assert "is a PDF document" in first and "context.pages[i] is the text of page i+1" in first
    assert "Chapter" not in first  # the host did not read the pages into the first message


def test_a_folder_of_text_pdfs_and_images_maps_documents_and_names_what_it_cannot_read(
    serve, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "manual.pdf", PAGES)
    (folder / "notes.md").write_text("# Notes\nsee the manual\n")
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (folder / "blob.bin").write_bytes(b"\x00\x01\x02")
    answer, first = run_code(
        serve,
        "FINAL([sorted(context), context['manual.pdf'].search('vault')[0][0], "
        "context['notes.md'].splitlines()[0]])",
        context=from_path(str(folder)),
    )
    assert answer == [["manual.pdf", "notes.md"], 9, "# Notes"]
    assert "1 PDF document file(s) (manual.pdf): in the REPL a PdfDocument" in first
    assert "Not in the mapping (cannot be read as text):" in first
    assert "  blob.bin: binary, not text" in first
    assert "  logo.png: a PNG image: not text" in first


def test_without_the_docs_extra_a_pdf_is_refused_or_listed_with_the_reason(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "a.pdf", PAGES)
    with mock.patch.object(context_docs, "pdf_library", return_value=None):
        with pytest.raises(ConfigError, match=r"is a PDF: reading it needs the docs extra"):
            from_path(str(pdf))
        ctx = from_path(str(tmp_path))
    assert ctx.files == [] and ctx.docs == {}
    assert ctx.unreadable == [("a.pdf", "a PDF, needs the docs extra: pip install 'recursa[docs]'")]


def test_a_direct_call_puts_the_pages_with_their_numbers_in_its_prompt(
    serve, tmp_path: Path
) -> None:
    pdf = write_pdf(tmp_path / "r.pdf", PAGES[:3])
    server = serve(ScriptedLM(sub=["page 2"]))
    result = Direct("openai/scripted", base_url=server.url, env={}).run(
        "q", context=from_path(str(pdf))
    )
    assert result.status == "ok", result.error
    prompt = sub_requests(server)[0].messages[-1]["content"]
    assert "[page 2]\nChapter 2\nNothing to see on page 2." in prompt


def test_trace_context_stores_a_directory_pdf_as_its_page_text(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "manual.pdf", PAGES[:2])
    trace = tmp_path / "run.jsonl"
    JsonlTrace(str(trace), [from_path(str(folder))]).close()  # --trace-context's record
    stored = json.loads(trace.read_text().splitlines()[0])
    assert stored["type"] == "context_data"
    assert stored["files"]["manual.pdf"] == (
        "[page 1]\nChapter 1\nNothing to see on page 1.\n"
        "[page 2]\nChapter 2\nNothing to see on page 2."
    )


def test_action_mode_searches_a_pdf_alone_or_in_a_folder_as_its_page_text(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    pdf = write_pdf(folder / "manual.pdf", PAGES)
    for ctx, where in [(from_path(str(pdf)), {}), (from_path(str(folder)), {"item": "manual.pdf"})]:
        kernel = Kernel(None, [ctx])
        found = asyncio.run(
            kernel.execute(
                ADAPTER.validate_python(
                    {"action": "search", "var": "context", "pattern": "vault", "into": "hits"}
                )
            )
        )
        assert found.error is None
        hit = kernel.vars["hits"][0]
        assert (hit["text"], {k: v for k, v in hit.items() if k == "item"}) == (
            "The vault code is 7341.",
            where,
        )
        text = kernel.vars["context"] if not where else kernel.vars["context"]["manual.pdf"]
        assert text.splitlines()[hit["line"] - 3] == "[page 9]"  # lines count from 1


def test_a_broken_pdf_fails_the_code_that_reads_it_with_the_reason(serve, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nnot a PDF body\n")
    answer, first = run_code(
        serve,
        "try:\n    len(context.pages)\nexcept ValueError as exc:\n    FINAL(str(exc))",
        context=from_path(str(broken)),
    )
    assert answer.startswith("cannot read broken.pdf as a PDF: ")
    assert "is a PDF document (" in first
