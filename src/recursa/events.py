"""Typed events: one stream per run feeds progress, traces and the Python API.

Each event is small and stores each message once: a root turn's prompt is never written
out whole, because it is the system prompt plus the messages of earlier events, so a
trace grows linearly with the number of turns.
"""

from __future__ import annotations

import sys
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

EVENT_TYPES: dict[str, type[Event]] = {}
"""Every event class by its `type`, filled in as the classes below are made."""


@dataclass(slots=True, kw_only=True)
class Event:
    type: ClassVar[str] = "event"
    run_id: str = ""
    t: float = 0.0
    """Seconds since the run started."""
    rlm: str = "0"
    """Which RLM of the tree: "0" is the root, "0.2" its third child, and so on."""
    depth: int = 0

    def __init_subclass__(cls) -> None:
        """Each event class is registered under its `type`, so `from_dict` finds it. (No
        super() call: a slotted dataclass is a copy of the class its methods were made in.)"""
        EVENT_TYPES[cls.type] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """The typed event a trace's dict stands for, its fields checked against their
        declared types; keys this recursa does not know (a newer one's) are left out. An
        unknown type, a missing field or a value of the wrong type is a ValueError."""
        kind = data.get("type")
        event_cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
        if event_cls is None:
            raise ValueError(f"not a known event type: {kind!r}")
        hints = _hints(event_cls)
        values: dict[str, Any] = {}
        for f in fields(event_cls):
            if f.name in data:
                if not _fits(data[f.name], hints[f.name]):
                    raise ValueError(f"{kind} event: {f.name} is not {_name(hints[f.name])}")
                values[f.name] = data[f.name]
        try:
            return event_cls(**values)
        except TypeError as exc:  # a required field is missing
            raise ValueError(f"{kind} event: {exc}") from None


@dataclass(slots=True, kw_only=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_start"
    question: str
    model: str
    sub_model: str | None
    settings: dict[str, Any]
    contexts: list[dict[str, Any]]
    system_prompt: str
    profile: str | None = None
    """The id of the controller profile the run used (`core.profile`); None in older traces."""


@dataclass(slots=True, kw_only=True)
class RLMStarted(Event):
    """An RLM (root or child) began: its first user message is stored here, once."""

    type: ClassVar[str] = "rlm_start"
    question: str
    model: str
    first_message: str
    contexts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class LMCallStarted(Event):
    type: ClassVar[str] = "lm_call_start"
    call_id: int
    model: str
    purpose: str
    """root (a turn), extract (the last-chance turn), sub (llm_query) or leaf (rlm_query at
    the depth limit)."""
    attempt: int = 1
    prompt: str | None = None
    """Only for sub-queries, and only its first 1,000 characters unless full prompts are
    recorded (they hold the context's text); a root turn's prompt is rebuilt from events."""
    prompt_sha256: str | None = None
    """The hash of every message sent: how a replay matches a sub-query to its recorded
    reply, and tells that the conversation it rebuilt is the one recorded."""
    images: list[dict[str, str]] | None = None
    """The images sent with a sub-query, each as its context `path` and `sha256` (never
    the bytes); None for a text-only call."""


@dataclass(slots=True, kw_only=True)
class LMCallEnded(Event):
    type: ClassVar[str] = "lm_call_end"
    call_id: int
    model: str
    purpose: str
    attempt: int = 1
    text: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    status: int | None = None
    """The HTTP status of a failed attempt, when the server answered one."""
    cache_read_tokens: int = 0
    """Of `input_tokens`, those the provider read back from its prompt cache."""
    cache_write_tokens: int = 0
    """Of `input_tokens`, those written to the provider's prompt cache."""
    reasoning_tokens: int = 0
    """Of `output_tokens`, those the model spent reasoning."""


@dataclass(slots=True, kw_only=True)
class BudgetRefused(Event):
    type: ClassVar[str] = "budget_refused"
    limit: str
    model: str
    purpose: str
    message: str


@dataclass(slots=True, kw_only=True)
class TurnStarted(Event):
    type: ClassVar[str] = "turn_start"
    iteration: int


@dataclass(slots=True, kw_only=True)
class FinalReached(Event):
    """An RLM has its answer: from FINAL/FINAL_VAR/SUBMIT in code, a FINAL line, or the
    last-chance extraction turn."""

    type: ClassVar[str] = "final"
    iteration: int
    answer: Any
    source: str


@dataclass(slots=True, kw_only=True)
class Compacted(Event):
    """Older turns were replaced by a summary to stay inside the model's window."""

    type: ClassVar[str] = "compacted"
    iteration: int
    tokens_before: int
    tokens_after: int
    window: int


@dataclass(slots=True, kw_only=True)
class ToolCalled(Event):
    """Model code called a host tool (arguments and result shown in excerpt)."""

    type: ClassVar[str] = "tool_call"
    name: str
    arguments: str
    result: str | None = None
    error: str | None = None
    cost_usd: float = 0.0
    elapsed_s: float = 0.0


@dataclass(slots=True, kw_only=True)
class SubQueriesAsked(Event):
    """Model code asked for `count` plain sub-queries at once (`llm_query`: 1; a batch: its
    size), before any is sent: what progress counts them against ("34/62 done")."""

    type: ClassVar[str] = "sub_queries"
    count: int


@dataclass(slots=True, kw_only=True)
class StallDetected(Event):
    """A guard saw the controller repeat itself: first `warned`, then `stopped`."""

    type: ClassVar[str] = "stall"
    iteration: int
    kind: str
    detail: str
    count: int
    action: str


@dataclass(slots=True, kw_only=True)
class ContextPrinted(Event):
    """A block printed a large part of the context back into the root's prompt."""

    type: ClassVar[str] = "context_printed"
    iteration: int
    index: int
    chars: int


@dataclass(slots=True, kw_only=True)
class ControllerNote(Event):
    """The root model is not in the table of models known to drive RLMs well."""

    type: ClassVar[str] = "controller_note"
    model: str
    message: str


@dataclass(slots=True, kw_only=True)
class TurnEnded(Event):
    """A root turn's reply was handled: `observation` is the user message that follows it."""

    type: ClassVar[str] = "turn_end"
    iteration: int
    blocks: int
    observation: str | None
    final: bool = False


@dataclass(slots=True, kw_only=True)
class BlockExecuted(Event):
    type: ClassVar[str] = "block"
    iteration: int
    index: int
    code: str
    output: str
    error: str | None = None
    new_vars: list[str] = field(default_factory=list)
    restarted: str | None = None
    elapsed_s: float = 0.0


@dataclass(slots=True, kw_only=True)
class RLMEnded(Event):
    type: ClassVar[str] = "rlm_end"
    status: str
    answer: Any = None
    iterations: int = 0
    error: str | None = None


@dataclass(slots=True, kw_only=True)
class RunEnded(Event):
    type: ClassVar[str] = "run_end"
    status: str
    answer: Any
    iterations: int
    usage: dict[str, Any]
    error: str | None = None
    cancelled: bool = False
    """The run was cancelled (its task, Ctrl-C, a client that went away): status `error`."""


_HINTS: dict[type[Event], dict[str, Any]] = {}


def _hints(event_cls: type[Event]) -> dict[str, Any]:
    """The declared type of each field (annotations are strings here: resolved once)."""
    if event_cls not in _HINTS:
        _HINTS[event_cls] = typing.get_type_hints(event_cls)
    return _HINTS[event_cls]


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's declared type (an int fits a float field)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is types.UnionType or origin is typing.Union:
        return any(_fits(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, origin or hint)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


Listener = Callable[[Event], None]


class Emitter:
    """Fans each event out to listeners, stamped with the run id and elapsed time."""

    def __init__(self, run_id: str, listeners: list[Listener] | None = None) -> None:
        self.run_id = run_id
        self.started = time.monotonic()
        self.listeners: list[Listener] = list(listeners or [])
        self._warned = False

    def emit(self, event: Event) -> None:
        event.run_id = self.run_id
        event.t = round(time.monotonic() - self.started, 6)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:  # a broken listener must not break the run
                if not self._warned:
                    self._warned = True
                    print(f"recursa: an event listener failed: {exc!r}", file=sys.stderr)
