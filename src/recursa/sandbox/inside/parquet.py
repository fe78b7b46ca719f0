"""Parquet files as contexts, opened by the worker itself (beside documents.py): only the
footer is read at open; rows come a row group at a time, when the model asks for them.

pyarrow is the `docs` extra. Like pypdf it is not on the sandbox's `sys.path`: the host
names the folder of its package (`lib`), the backends bind it, and it is imported from
there the first time a Parquet file is opened.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

MAGIC = b"PAR1"
BATCH_ROWS = 1024
"""Rows turned into Python dicts at a time: the Arrow group stays columnar until then."""


def is_parquet(head: bytes, path: str) -> bool:
    """Parquet by content: `PAR1` at the file's start and at its end."""
    if not head.startswith(MAGIC) or not path:
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            return fh.read(4) == MAGIC
    except OSError:
        return False


def _pyarrow_parquet(lib: str | None) -> Any:
    """pyarrow.parquet, imported from `lib` (its package's folder) where not importable."""
    if lib:
        parent = os.path.dirname(lib.rstrip("/"))
        if parent not in sys.path:
            sys.path.append(parent)
    import pyarrow.parquet as pq

    return pq


class ParquetTable:
    """A Parquet file: `.columns` (names), `.row_count` (from the footer), `.records(start=0,
    count=None)` yields rows as dicts, reading only the row groups that hold them."""

    def __init__(self, path: str, lib: str | None = None) -> None:
        self.path = path
        self.doc_format = "parquet"
        self.size = os.path.getsize(path)
        self._lib = lib
        self._file: Any = None

    @property
    def _parquet(self) -> Any:
        if self._file is None:
            try:
                self._file = _pyarrow_parquet(self._lib).ParquetFile(self.path)
            except ImportError:
                raise
            except Exception as exc:  # a broken file: the reason, in the code that read it
                name = os.path.basename(self.path)
                raise ValueError(
                    f"cannot read {name} as Parquet: {type(exc).__name__}: {exc}"
                ) from None
        return self._file

    @property
    def columns(self) -> list[str]:
        return list(self._parquet.schema_arrow.names)

    @property
    def row_count(self) -> int:
        return int(self._parquet.metadata.num_rows)

    def records(self, start: int = 0, count: int | None = None) -> Iterator[dict[str, Any]]:
        """Rows `start` to `start + count` (all after `start` when count is None), a row
        group at a time: groups before `start` are skipped by their footer counts."""
        if start < 0 or (count is not None and count < 0):
            raise ValueError("start and count must not be negative")
        pf = self._parquet
        end = self.row_count if count is None else min(self.row_count, start + count)
        first = 0
        for group in range(pf.num_row_groups):
            rows = pf.metadata.row_group(group).num_rows
            if first + rows > start and first < end:
                # One thread: the reader threads' allocator caches otherwise grow RSS with the file.
                table = pf.read_row_group(group, use_threads=False)
                lo, hi = max(start - first, 0), min(end - first, rows)
                for batch in table.slice(lo, hi - lo).to_batches(max_chunksize=BATCH_ROWS):
                    yield from batch.to_pylist()  # a few Python rows at a time, not a group's
                del table
            first += rows
            if first >= end:
                return

    def __len__(self) -> int:
        return self.row_count

    def __str__(self) -> str:
        lines = [" | ".join(self.columns)]
        lines += (" | ".join(str(v) for v in row.values()) for row in self.records())
        return "\n".join(lines)

    def __repr__(self) -> str:
        name = os.path.basename(self.path)
        return f"<Parquet {name!r}: {self.size} bytes, .columns, .row_count, .records()>"
