"""What one evaluation task is, and how lengths are written.

A task is (family, id, question, context, expected, scorer): generated offline and
deterministically from (family, seed, length) by `recursa.evals.generators`, or read from a
real dataset's local files by `recursa.evals.datasets`. Sizes are in tokens at four
characters a token, the same estimate the rest of recursa uses.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import scoring

CHARS_PER_TOKEN = 4
MIN_TOKENS = 1_000
MAX_TOKENS = 50_000_000


@dataclass(frozen=True, slots=True)
class RepoFiles:
    """A directory context held in memory (relative path -> text) until it is written out:
    the code-repository family's input, handed to the model as a directory."""

    files: Mapping[str, str]

    @property
    def chars(self) -> int:
        return sum(len(text) for text in self.files.values())

    def materialize(self, root: Path) -> Path:
        """Write every file under `root` (emptied first) and return it."""
        if root.exists():
            shutil.rmtree(root)
        for rel, text in self.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root


@dataclass(frozen=True, slots=True)
class PdfPages:
    """A PDF context held as its pages' text until it is written out (the document family):
    `materialize` writes `report.pdf` (recursa.testing.documents) and returns its path."""

    pages: tuple[str, ...]

    @property
    def chars(self) -> int:
        return sum(len(text) for text in self.pages)

    def materialize(self, root: Path) -> Path:
        from ..testing.documents import write_pdf

        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        return write_pdf(root / "report.pdf", list(self.pages))


@dataclass(slots=True)
class Task:
    """One question over one context, with the answer and how to score a reply."""

    family: str
    id: str
    question: str
    context: Any
    """Text, JSON-like data (a list of documents), a `RepoFiles` or a directory `Path`."""
    expected: Any
    scorer: str
    """A name in `scoring.SCORERS`; `score_params` are its keyword arguments."""
    length: int
    """Tokens asked for (generated), or the context's estimated tokens (datasets)."""
    seed: int
    score_params: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    """What the question is about (its variant, label ...): public, never the answer."""
    source: str = "generated"
    paper: str | None = None
    """The row of the paper's table this task corresponds to (see `recursa.evals.paper`)."""

    def score(self, answer: Any) -> float:
        return scoring.score(self.scorer, answer, self.expected, **self.score_params)

    @property
    def context_chars(self) -> int:
        ctx = self.context
        if isinstance(ctx, str):
            return len(ctx)
        if isinstance(ctx, RepoFiles | PdfPages):
            return ctx.chars
        if isinstance(ctx, Path):
            return sum(p.stat().st_size for p in ctx.rglob("*") if p.is_file())
        if isinstance(ctx, list):
            return sum(len(str(item)) for item in ctx)
        return len(str(ctx))


_LENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([km]?)\s*$", re.I)


def parse_length(text: str | int) -> int:
    """'8k' -> 8000, '1.5m' -> 1500000, '32768' -> 32768 (tokens; k = 1,000)."""
    if isinstance(text, int):
        value = text
    else:
        match = _LENGTH.match(text)
        if not match:
            raise ConfigError(f"bad length {text!r}: write tokens as 8k, 131072, 1m or 10m")
        scale = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
        value = round(float(match.group(1)) * scale)
    if not MIN_TOKENS <= value <= MAX_TOKENS:
        raise ConfigError(
            f"length {text!r} is out of range: from {MIN_TOKENS:,} to {MAX_TOKENS:,} tokens"
        )
    return value


def parse_lengths(text: str) -> list[int]:
    lengths = [parse_length(part) for part in text.split(",") if part.strip()]
    if not lengths:
        raise ConfigError("no lengths given: e.g. --lengths 8k,32k")
    return sorted(set(lengths))


def format_length(tokens: int) -> str:
    """8000 -> '8k', 1500000 -> '1.5m', 32768 -> '32.8k' (labels in tables and plots)."""
    if tokens >= 1_000_000:
        return f"{tokens / 1_000_000:g}m" if tokens % 100_000 == 0 else f"{tokens / 1e6:.2f}m"
    if tokens >= 1_000:
        return f"{tokens / 1_000:g}k" if tokens % 100 == 0 else f"{tokens / 1_000:.1f}k"
    return str(tokens)


def load_task_file(path: str | Path) -> list[Task]:
    """Tasks from a JSON lines file, one object a line: `question`, `context` (text or
    JSON data), `expected`, and optionally `scorer` (a name in `scoring.SCORERS`, default
    `exact`), `score_params`, `id` and `family` (default `custom`). Each task's seed is its
    line number, so eval and tune key every task apart."""
    import json

    tasks = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"tasks file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"tasks file {path}, line {number}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not isinstance(row, dict) or not {"question", "context", "expected"} <= set(row):
            raise ConfigError(f"{where}: needs question, context and expected")
        scorer = row.get("scorer", "exact")
        if scorer not in scoring.SCORERS:
            raise ConfigError(f"{where}: unknown scorer {scorer!r}")
        task = Task(
            family=str(row.get("family", "custom")),
            id=str(row.get("id", number)),
            question=str(row["question"]),
            context=row["context"],
            expected=row["expected"],
            scorer=scorer,
            length=0,
            seed=number,
            score_params=dict(row.get("score_params") or {}),
            source=str(path),
        )
        task.length = max(1, task.context_chars // CHARS_PER_TOKEN)
        tasks.append(task)
    if not tasks:
        raise ConfigError(f"tasks file {path} holds no task")
    return tasks
