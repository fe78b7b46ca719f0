"""The JSON-lines trace writer: one event per line, written as it happens, flushed each
line. Traces are read back by `reader.py`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from ..context import Context
from ..context_docs import document_text
from ..errors import ConfigError
from ..events import Event


class JsonlTrace:
    """An event listener writing `--trace FILE`. The file is opened before the run starts,
    so a path that cannot be written is a usage error, not a lost run."""

    def __init__(self, path: str | Path, contexts: list[Context] | None = None) -> None:
        """With `contexts` (--trace-context), their full text is written first, so the
        trace replays anywhere; without, contexts are recorded by reference only."""
        self.path = str(path)
        try:
            self._fh: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot write trace {self.path}: {exc.strerror or exc}") from None
        for index, ctx in enumerate(contexts or []):
            record: dict[str, Any] = {"type": "context_data", "index": index, "name": ctx.name}
            if ctx.kind == "json":
                record["value"] = ctx.value
            elif ctx.kind == "dir":
                root = Path(ctx.root or ".")
                record["files"] = {  # a document as its text (context_docs.document_text)
                    rel: document_text(str(root / rel), ctx.docs[rel])
                    if rel in ctx.docs
                    else (root / rel).read_bytes().decode("utf-8", "replace")
                    for rel, _ in ctx.files
                }
            else:
                record["text"] = ctx.as_text()  # a mapped file: read here, if small enough
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def __call__(self, event: Event) -> None:
        if self._fh is None:
            return
        self._fh.write(json.dumps(event.to_dict(), ensure_ascii=False, default=str) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
