"""What a TRACE argument names: a trace file, or a run in the run store, resolved the same
way by `replay`, `view`, `distill` and `mine`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .reader import TraceFormatError, read_trace
from .store import RunNotFound, RunStore, StoredRun


@dataclass(frozen=True, slots=True)
class TraceSource:
    """A trace file (`path`) or a stored run (`run`, with the store that holds it)."""

    name: str
    path: Path | None = None
    run: StoredRun | None = None
    store: RunStore | None = None

    def events(self) -> list[dict[str, Any]]:
        """The run's events: a file is read as untrusted input (see `read_trace`)."""
        if self.path is not None:
            return read_trace(self.path)
        assert self.run is not None and self.store is not None
        return self.store.events(self.run.id)


def _looks_like_path(arg: str) -> bool:
    """Run ids are hex; a name with a folder separator or a suffix is meant as a file."""
    return "/" in arg or "\\" in arg or "." in arg


def resolve_trace(arg: str, store: RunStore | None = None) -> TraceSource:
    """`arg` as an existing trace file, else as a stored run's id (or a unique prefix).
    A missing file is "not found" whenever `arg` looks like a path, whatever the store holds."""
    path = Path(arg)
    if path.is_file():
        return TraceSource(arg, path=path)
    if path.is_dir():
        raise ConfigError(f"{arg} is a folder, not a trace file")
    if _looks_like_path(arg) or not arg:
        raise TraceFormatError(f"trace file not found: {arg}")
    store = store or RunStore()
    try:
        run = store.get(arg)
    except RunNotFound:
        raise ConfigError(
            f"{arg}: no such trace file, and no run {arg!r} in the run store {store.path}"
        ) from None
    return TraceSource(arg, run=run, store=store)
