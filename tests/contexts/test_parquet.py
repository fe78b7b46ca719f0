"""Parquet files as contexts (the `docs` extra: pyarrow): found by content, opened by the
sandbox worker itself and read a row group at a time; the first turn previews the columns
and first rows. A scripted root model behind a FakeLMServer on 127.0.0.1 runs real blocks
in a real worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from e2e_helpers import repl, root_requests
from recursa import RLM, context_docs
from recursa.context import from_path
from recursa.errors import ConfigError
from recursa.testing import ScriptedLM

pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")


def write_parquet(path: Path, rows: int, row_group_size: int = 10) -> Path:
    """A table of `rows` rows (id, city, amount) in row groups of `row_group_size`."""
    table = pa.table(
        {
            "id": list(range(rows)),
            "city": [f"city{i}" for i in range(rows)],
            "amount": [i * 1.5 for i in range(rows)],
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def run_code(serve, code: str, context: Any) -> tuple[Any, str]:
    server = serve(ScriptedLM(root=[repl(code)]))
    result = RLM("openai/scripted", base_url=server.url, env={}).run("q", context=context)
    assert result.status == "ok", result.error
    return result.answer, root_requests(server)[0].messages[1]["content"]


def test_a_parquet_file_is_a_table_of_records_with_its_columns_previewed(
    serve, tmp_path: Path
) -> None:
    data = write_parquet(tmp_path / "sales.data", rows=35)  # found by content, not by name
    answer, first = run_code(
        serve,
        "FINAL([type(context).__name__, context.columns, context.row_count, "
        "list(context.records(start=8, count=4)), len(list(context.records(30))), "
        "list(context.records(34, 10))])",
        from_path(str(data)),
    )
    assert answer == [
        "ParquetTable",
        ["id", "city", "amount"],
        35,
        [{"id": i, "city": f"city{i}", "amount": i * 1.5} for i in range(8, 12)],
        5,
        [{"id": 34, "city": "city34", "amount": 51.0}],
    ]
    assert "is a Parquet table (" in first and "sales.data, 3," in first
    assert "Columns: ['id', 'city', 'amount'] (35 rows)." in first
    assert "1 | city1 | 1.5" in first and "city3" not in first


def test_a_folder_holds_a_parquet_file_beside_text(serve, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_parquet(folder / "rows.parquet", rows=3)
    (folder / "notes.txt").write_text("see rows\n")
    answer, first = run_code(
        serve,
        "FINAL([sorted(context), [r['city'] for r in context['rows.parquet'].records()]])",
        from_path(str(folder)),
    )
    assert answer == [["notes.txt", "rows.parquet"], ["city0", "city1", "city2"]]
    assert "1 Parquet table file(s) (rows.parquet): in the REPL a ParquetTable" in first


def test_a_file_that_only_starts_like_parquet_is_not_one(tmp_path: Path) -> None:
    fake = tmp_path / "x.bin"
    fake.write_bytes(b"PAR1 and then some text without the closing magic\n")
    assert from_path(str(fake)).kind == "text"


def test_a_broken_parquet_file_fails_the_code_that_reads_it_with_the_reason(
    serve, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\0" * 40 + b"PAR1")
    answer, first = run_code(
        serve,
        "try:\n    context.columns\nexcept ValueError as e:\n    FINAL(str(e))",
        from_path(str(broken)),
    )
    assert answer.startswith("cannot read broken.parquet as Parquet: ")
    assert "Its footer cannot be read" in first


def test_without_the_docs_extra_parquet_is_refused_or_listed_with_the_reason(
    tmp_path: Path,
) -> None:
    data = write_parquet(tmp_path / "a.parquet", rows=2)
    with mock.patch.object(context_docs, "arrow_library", return_value=None):
        with pytest.raises(ConfigError, match=r"is a Parquet file: reading it needs the docs"):
            from_path(str(data))
        ctx = from_path(str(tmp_path))
    assert ctx.files == [] and ctx.docs == {}
    assert ctx.unreadable == [
        ("a.parquet", "a Parquet file, needs the docs extra: pip install 'recursa[docs]'")
    ]
