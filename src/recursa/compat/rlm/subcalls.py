"""`on_subcall_start` / `on_subcall_complete`: the official callbacks, fed by recursa events.

A subcall is a child RLM (`rlm_query` below the depth limit) or one request of a sub-model
(`llm_query`, or `rlm_query` at the limit). start(depth, model, prompt_preview) and
complete(depth, model, duration_s, error); a retried request reports each attempt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...events import Event, LMCallEnded, LMCallStarted, RLMEnded, RLMStarted

SUB_PURPOSES = frozenset({"sub", "leaf"})
PREVIEW_CHARS = 200


class Subcalls:
    """An event listener that calls the two callbacks (either may be None)."""

    def __init__(
        self,
        on_start: Callable[[int, str, str], Any] | None,
        on_complete: Callable[[int, str, float, str | None], Any] | None,
    ) -> None:
        self.on_start = on_start
        self.on_complete = on_complete
        self._started: dict[tuple[str, Any], tuple[float, str]] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, RLMStarted) and event.depth > 0:
            self._start(("rlm", event.rlm), event, event.model, event.question)
        elif isinstance(event, RLMEnded) and event.depth > 0:
            self._complete(("rlm", event.rlm), event, event.error)
        elif isinstance(event, LMCallStarted) and event.purpose in SUB_PURPOSES:
            self._start(("call", event.call_id), event, event.model, event.prompt or "")
        elif isinstance(event, LMCallEnded) and event.purpose in SUB_PURPOSES:
            self._complete(("call", event.call_id), event, event.error)

    def _start(self, key: tuple[str, Any], event: Event, model: str, prompt: str) -> None:
        self._started[key] = (event.t, model)
        if self.on_start is not None:
            self.on_start(event.depth, model, prompt[:PREVIEW_CHARS])

    def _complete(self, key: tuple[str, Any], event: Event, error: str | None) -> None:
        started = self._started.pop(key, None)
        if started is not None and self.on_complete is not None:
            t0, model = started
            self.on_complete(event.depth, model, round(event.t - t0, 6), error)
