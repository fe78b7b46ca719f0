"""The document family (`pdfpage`, only when named, needs the docs extra): a generated PDF
with an access code planted on a known page, run with the scripted oracle through every
strategy, so the PDF loader is measured like the rest: the oracle scores 1.0, anything
less is a bug in the loader or the harness."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_helpers import run_cli
from extras import needs_extra
from recursa.errors import ConfigError
from recursa.evals import EvalConfig, generate, run_eval
from recursa.evals.names import STRATEGIES
from recursa.evals.tasks import PdfPages

pytestmark = needs_extra("docs", "pypdf")


def test_the_task_is_a_pdf_with_the_code_on_the_page_its_params_name(tmp_path: Path) -> None:
    task = generate("pdfpage", 3, 8_000)
    assert isinstance(task.context, PdfPages) and len(task.context.pages) > 5
    page = task.params["page"]
    line = f"The access code for {task.params['key']} is: {task.expected}."
    assert [i + 1 for i, text in enumerate(task.context.pages) if line in text] == [page]
    assert task.context.materialize(tmp_path / "t").read_bytes().startswith(b"%PDF-")
    assert generate("pdfpage", 3, 8_000).expected == task.expected  # the same every time


def test_the_oracle_reads_the_pdf_perfectly_with_every_strategy(tmp_path: Path) -> None:
    summary = run_eval(
        EvalConfig(
            out=tmp_path, families=["pdfpage"], lengths=[8_000], strategies=STRATEGIES,
            oracle="oracle", concurrency=4, progress=False,
        )
    )  # fmt: skip
    assert {r["strategy"] for r in summary.ran} == set(STRATEGIES)
    for record in summary.ran:
        assert record["status"] == "ok", (record["strategy"], record["error"])
        assert record["score"] == 1.0, (record["strategy"], record["answer"], record["expected"])
    assert not [p for p in tmp_path.rglob("*.pdf")]  # each materialized PDF removed after use


def test_the_family_runs_only_when_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown task family 'pdfpages'.*codeqa, pdfpage$"):
        EvalConfig(out=tmp_path, families=["pdfpages"], oracle="oracle")
    done = run_cli(["eval", "--help"])
    assert "Only when named: pdfpage (PDFs; needs the docs extra)." in " ".join(done.out.split())
