"""How a run ended: the one list of statuses, for results, events, the CLI and the server.

A `StrEnum` (a `str` and an `Enum`), so a status compares equal to its string and prints
and serialises as it, and JSON or CLI output is the same as with plain strings.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    MAX_ITERATIONS = "max_iterations"
    BUDGET_EXHAUSTED = "budget_exhausted"
    STALLED = "stalled"
    TIMEOUT = "timeout"
    ERROR = "error"


LIMIT_STATUSES = frozenset(
    {Status.MAX_ITERATIONS, Status.BUDGET_EXHAUSTED, Status.STALLED, Status.TIMEOUT}
)
"""The statuses of a run stopped by a limit or a guard (CLI exit code 3, `length` in the
server's finish_reason)."""
