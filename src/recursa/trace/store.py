"""The run store: every CLI run's summary and trace in one SQLite file.

It lives in the user's data directory (`$RECURSA_HOME`, else `$XDG_DATA_HOME/recursa`, else
`~/.local/share/recursa`). The schema is versioned with SQLite's `user_version` and moved
forward by numbered migrations, so an old store opens under a newer recursa.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..events import Event, RunEnded, RunStarted
from .reader import parse_lines

MIGRATIONS: list[str] = [
    # 1: runs and their events
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        started_at REAL NOT NULL,
        ended_at REAL,
        question TEXT NOT NULL,
        model TEXT NOT NULL,
        status TEXT,
        answer TEXT,
        iterations INTEGER,
        usage TEXT,
        error TEXT
    );
    CREATE TABLE events (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE INDEX runs_started ON runs(started_at);
    """,
    # 2: where a run came from (run, demo, replay) and the trace file it also wrote
    """
    ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';
    ALTER TABLE runs ADD COLUMN trace_path TEXT;
    """,
    # 3: the folder the run was started in, which its relative context paths are relative to
    # (trace paths are stored absolute from now on; an older row has no folder)
    """
    ALTER TABLE runs ADD COLUMN cwd TEXT;
    """,
    # 4: the id of the controller profile the run used (core.profile; none before it)
    """
    ALTER TABLE runs ADD COLUMN profile TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def default_path() -> Path:
    home = os.environ.get("RECURSA_HOME")
    if home:
        return Path(home) / "runs.db"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "recursa" / "runs.db"


@dataclass(frozen=True, slots=True)
class StoredRun:
    id: str
    started_at: float
    question: str
    model: str
    status: str | None
    answer: Any
    iterations: int | None
    usage: dict[str, Any]
    error: str | None
    kind: str
    trace_path: str | None
    cwd: str | None = None
    """The folder the run was started in (None for runs stored before schema 3)."""
    profile: str | None = None
    """The controller profile's id (None for runs stored before schema 4)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.id,
            "started_at": self.started_at,
            "kind": self.kind,
            "question": self.question,
            "model": self.model,
            "status": self.status,
            "answer": self.answer,
            "iterations": self.iterations,
            "usage": self.usage,
            "error": self.error,
            "trace": self.trace_path,
            "cwd": self.cwd,
            "profile": self.profile,
        }


class RunNotFound(ConfigError):
    """No stored run has this id (or prefix)."""


class RunStore:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=10)) as db:
                db.execute("PRAGMA foreign_keys = ON")
                self._migrate(db)
                with db:
                    yield db
        except sqlite3.Error as exc:
            raise ConfigError(f"run store {self.path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"run store {self.path}: {exc.strerror or exc}") from None

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"run store {self.path} has schema {version}, newer than this recursa "
                f"understands ({SCHEMA_VERSION}): upgrade recursa"
            )
        for number in range(version, SCHEMA_VERSION):
            with db:
                db.executescript(f"BEGIN; {MIGRATIONS[number]} PRAGMA user_version = {number + 1};")

    def save(self, events: list[Event], *, kind: str = "run", trace_path: str | None = None) -> str:
        """Store a finished (or cancelled) run: its summary and every event, in order, with
        the trace's absolute path and the working folder, so that `replay ID` finds the
        run's relative context paths from any folder."""
        start = next(e for e in events if isinstance(e, RunStarted))
        end = next((e for e in reversed(events) if isinstance(e, RunEnded)), None)
        now = time.time()
        with self.connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs (id, started_at, ended_at, question, model, status,"
                " answer, iterations, usage, error, kind, trace_path, cwd, profile)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    start.run_id,
                    now - (end.t if end else 0.0),
                    now,
                    start.question,
                    start.model,
                    end.status if end else None,
                    json.dumps(end.answer if end else None, default=str),
                    end.iterations if end else None,
                    json.dumps(end.usage if end else {}),
                    end.error if end else None,
                    kind,
                    os.path.abspath(trace_path) if trace_path else None,
                    os.getcwd(),
                    start.profile,
                ),
            )
            db.execute("DELETE FROM events WHERE run_id = ?", (start.run_id,))
            db.executemany(
                "INSERT INTO events (run_id, seq, event) VALUES (?, ?, ?)",
                (
                    (start.run_id, seq, json.dumps(e.to_dict(), ensure_ascii=False, default=str))
                    for seq, e in enumerate(events)
                ),
            )
        return start.run_id

    def list(self, limit: int = 20) -> list[StoredRun]:
        with self.connect() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM runs ORDER BY started_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_run(row) for row in rows]

    def get(self, run_id: str) -> StoredRun:
        """A run by its id or a unique prefix of it."""
        with self.connect() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE id LIKE ? LIMIT 2", (run_id + "%",)
            ).fetchall()
        if not rows:
            raise RunNotFound(f"no run {run_id!r} in the run store {self.path}")
        if len(rows) > 1:
            raise ConfigError(f"{run_id!r} names several runs: give more of the id")
        return _run(rows[0])

    def events(self, run_id: str) -> builtins.list[dict[str, Any]]:  # `list` is a method here
        """A run's events, read as strictly as a trace file: the store is a file too."""
        with self.connect() as db:
            rows = db.execute(
                "SELECT event FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        events, _ = parse_lines((row[0] for row in rows), f"run {run_id}", tolerant=False)
        return events


_COLUMNS = (
    "id, started_at, question, model, status, answer, iterations, usage, error, kind,"
    " trace_path, cwd, profile"
)


def _run(row: tuple[Any, ...]) -> StoredRun:
    return StoredRun(
        id=row[0],
        started_at=row[1],
        question=row[2],
        model=row[3],
        status=row[4],
        answer=json.loads(row[5]) if row[5] is not None else None,
        iterations=row[6],
        usage=json.loads(row[7]) if row[7] else {},
        error=row[8],
        kind=row[9],
        trace_path=row[10],
        cwd=row[11],
        profile=row[12],
    )
