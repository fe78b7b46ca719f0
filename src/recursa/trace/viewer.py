"""`recursa view`: a trace file read as untrusted input (`reader.py`) and drawn as one
self-contained HTML page: `run_model.py` rebuilds the run from its events, `page.py`
draws it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .page import Limits, render_html
from .reader import TraceFormatError, read_trace

__all__ = ["Limits", "TraceFormatError", "load_trace", "render_html"]


def load_trace(path: str | Path) -> list[dict[str, Any]]:
    """Every event of a trace file; a missing file or a malformed line is a `ConfigError`
    naming the file (and the line number)."""
    events = read_trace(path)
    if not events:
        raise TraceFormatError(f"trace {path} holds no events")
    return events
