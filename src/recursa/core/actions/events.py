"""The one event action mode adds to the stream: an action ran (or was refused)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ...events import Event


@dataclass(slots=True, kw_only=True)
class ActionExecuted(Event):
    """One action of a root turn in action mode: what was asked, and what came of it.

    `arguments` is the action as JSON (excerpt), `observation` this action's part of the
    turn's observation (excerpt; the whole bounded observation is in `turn_end`)."""

    type: ClassVar[str] = "action"
    iteration: int
    index: int
    action: str
    arguments: str
    ok: bool
    error: str | None = None
    observation: str = ""
    new_vars: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
