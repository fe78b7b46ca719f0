"""`recursa run --context FOLDER` over a folder of generated PDFs, a DOCX, an HTML page and an
image, in real subprocesses against a FakeLMServer on 127.0.0.1: the answer sits on one PDF
page, the model's code sends that page (with its number) to a sub-model, and the trace shows
which page was sent; an image is sent to a vision sub-model by its path, and the trace names it
by its hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from e2e_helpers import one_json_object, repl, root_requests, run_cli
from extras import needs_extra
from image_helpers import png, vision
from recursa.testing import LMRequest, ScriptedLM
from recursa.testing.documents import write_docx, write_pdf

pytestmark = needs_extra("docs", "pypdf")

CODE = """
hits = [(rel, page) for rel, doc in context.items() if rel.endswith('.pdf')
        for page, _ in doc.search('vault code')]
rel, page = hits[0]
text = context[rel].page(page)
FINAL(llm_query(f'[{rel}, page {page}]\\n{text}\\nWhat is the vault code?'))
"""


def test_a_question_over_a_folder_of_documents_is_answered_from_one_pdf_page_and_replays(
    serve, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    write_pdf(folder / "a.pdf", [f"Annual report, page {n}" for n in range(1, 6)])
    pages = [f"Manual page {n}: nothing here." for n in range(1, 31)]
    pages[22] = "Manual page 23.\nThe vault code is 7341."
    write_pdf(folder / "manual.pdf", pages)
    write_docx(folder / "memo.docx", [("Heading1", "Memo"), ("", "See the manual.")])
    (folder / "index.html").write_text("<!doctype html><h1>Index</h1><p>docs</p>")
    (folder / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    server = serve(ScriptedLM(root=[repl(CODE)], sub=["7341"]))
    trace = tmp_path / "run.jsonl"

    run = run_cli(
        ["run", "What is the vault code?", "--context", str(folder), "--model", "openai/x",
         "--base-url", server.url, "--json", "--quiet", "--no-store", "--trace", str(trace)]
    )  # fmt: skip

    assert run.rc == 0, run.err
    assert one_json_object(run.out)["answer"] == "7341"
    first = root_requests(server)[0].messages[1]["content"]
    assert "  scan.png: a PNG image: not text" in first
    assert "2 PDF document file(s) (a.pdf, manual.pdf)" in first
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    sent = [e["prompt"] for e in events if e["type"] == "lm_call_start" and e.get("prompt")]
    assert sent == ["[manual.pdf, page 23]\nManual page 23.\nThe vault code is 7341.\n"
                    "What is the vault code?"]  # fmt: skip
    replayed = run_cli(["replay", str(trace), "--context", str(folder), "--json", "--quiet"])
    assert replayed.rc == 0, replayed.err
    out = json.loads(replayed.out)
    assert out["answer"] == "7341" and out["diverged"] is False


BOTH = """
hits = [(rel, page) for rel, doc in context.items() if rel.endswith('.pdf')
        for page, _ in doc.search('vault code')]
rel, page = hits[0]
code = llm_query(f'[{rel}, page {page}]\\n{context[rel].page(page)}\\nWhat is the vault code?')
meter = llm_query('What does the meter read?', images=['scans/meter.png'])
FINAL(f'vault {code}; {meter}')
"""


def test_one_answer_from_a_pdf_page_and_one_from_an_image_and_the_trace_names_both(
    serve, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    (folder / "scans").mkdir(parents=True)
    pages = [f"Manual page {n}: nothing here." for n in range(1, 31)]
    pages[22] = "Manual page 23.\nThe vault code is 7341."
    write_pdf(folder / "manual.pdf", pages)
    write_docx(folder / "memo.docx", [("Heading1", "Memo"), ("", "See the manual.")])
    (folder / "index.html").write_text("<!doctype html><h1>Index</h1><p>docs</p>")
    image = png("Meter reads 5812")
    (folder / "scans" / "meter.png").write_bytes(image)

    def sub(request: LMRequest) -> str:
        return vision(request) if request.images else "7341"

    server = serve(ScriptedLM(root=[repl(BOTH)], sub=sub))
    trace = tmp_path / "run.jsonl"

    run = run_cli(
        ["run", "What are the vault code and the meter reading?", "--context", str(folder),
         "--model", "openai/x", "--base-url", server.url, "--json", "--quiet", "--no-store",
         "--trace", str(trace)]
    )  # fmt: skip

    assert run.rc == 0, run.err
    assert one_json_object(run.out)["answer"] == "vault 7341; Meter reads 5812"
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    subs = [e for e in events if e["type"] == "lm_call_start" and e.get("purpose") == "sub"]
    assert subs[0]["prompt"].startswith("[manual.pdf, page 23]\nManual page 23.")
    assert subs[0]["images"] is None
    sha = hashlib.sha256(image).hexdigest()
    assert subs[1]["images"] == [{"path": "scans/meter.png", "sha256": sha}]
