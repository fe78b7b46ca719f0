"""The run behind a trace, rebuilt from its events: the tree of RLMs, each with its turns,
LM calls (root turns, retries, sub-queries), blocks, tool calls and usage.

`RunModel(events)` takes the dicts of a trace (or `Event` objects) and never raises on odd
or cut traces: values of the wrong type count as empty or zero, calls without an end are
marked so. `page.py` draws it; nothing here knows HTML.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Call:
    """One attempt of one LM request."""

    call_id: Any
    rlm: str
    purpose: str
    model: str
    attempt: int
    t0: float
    t1: float | None = None
    prompt: str | None = None
    text: str | None = None
    error: str | None = None
    status: Any = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency: float | None = None


@dataclass
class Block:
    iteration: int
    index: int
    code: str
    output: str
    error: str | None
    restarted: str | None
    new_vars: list[str]
    t0: float
    t1: float


@dataclass
class Turn:
    iteration: int
    t0: float
    extract: bool = False
    t1: float | None = None
    calls: list[Call] = field(default_factory=list)
    """The RLM's own requests: root turns (and retries) or the extraction."""
    subs: list[Call] = field(default_factory=list)
    """Sub-queries (llm_query, and rlm_query at the depth limit) made by this turn's code."""
    blocks: list[Block] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    compactions: list[dict[str, Any]] = field(default_factory=list)
    observation: str | None = None
    final: bool = False

    def all_calls(self) -> list[Call]:
        return self.calls + self.subs


@dataclass
class Node:
    id: str
    depth: int
    question: str = ""
    model: str = ""
    t0: float = 0.0
    t1: float | None = None
    status: str | None = None
    answer: Any = None
    iterations: int = 0
    error: str | None = None
    final_source: str | None = None
    parent: str | None = None
    turns: list[Turn] = field(default_factory=list)
    loose: Turn | None = None
    """Calls and blocks that came outside any turn (only in odd or cut traces)."""
    children: list[str] = field(default_factory=list)
    own: Usage = field(default_factory=lambda: Usage())
    tree: Usage = field(default_factory=lambda: Usage())


@dataclass
class Usage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    failed: int = 0

    def add_call(self, call: Call) -> None:
        if call.t1 is None:
            return
        self.calls += 1
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        self.cost += call.cost
        self.failed += call.error is not None

    def add_tool(self, event: dict[str, Any]) -> None:
        self.cost += as_float(event.get("cost_usd"))

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost += other.cost
        self.failed += other.failed


def as_str(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def as_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _id_key(rlm_id: str) -> tuple[tuple[int, Any], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in rlm_id.split("."))


class RunModel:
    """The run tree rebuilt from events, tolerant of cut or odd traces."""

    def __init__(self, events: Iterable[Any]) -> None:
        self.run: dict[str, Any] = {}
        self.end: dict[str, Any] | None = None
        self.nodes: dict[str, Node] = {}
        self.calls: list[Call] = []
        self.blocks: list[tuple[str, Block]] = []
        self.t_end = 0.0
        self.event_count = 0
        self.unknown_types: set[str] = set()
        self.context_data = 0
        self.notes: list[tuple[str, str]] = []
        self.level: dict[str, int] = {}
        """Each RLM's level in the tree as drawn (set by `order`)."""
        self._open: dict[tuple[str, Any], Call] = {}
        self._current: dict[str, Turn] = {}
        for raw in events:
            event = raw.to_dict() if hasattr(raw, "to_dict") else raw
            if isinstance(event, dict):
                self._add(event)
        for call in self._open.values():
            call.error = call.error or "no end in the trace"
        self._sum()

    def node(self, rlm_id: str, depth: int | None = None) -> Node:
        node = self.nodes.get(rlm_id)
        if node is None:
            guessed = rlm_id.count(".") if depth is None else depth
            node = self.nodes[rlm_id] = Node(rlm_id, guessed)
            if "." in rlm_id:
                parent_id = rlm_id.rsplit(".", 1)[0]
                node.parent = parent_id
                parent = self.node(parent_id)
                parent.children.append(rlm_id)
                turn = self._current.get(parent_id)
                if turn is not None:
                    turn.children.append(rlm_id)
        return node

    def _turn_of(self, node: Node, t: float) -> Turn:
        turn = self._current.get(node.id)
        if turn is None:
            if node.loose is None:
                node.loose = Turn(iteration=0, t0=t)
            turn = node.loose
        return turn

    def _add(self, e: dict[str, Any]) -> None:
        self.event_count += 1
        kind = e.get("type")
        t = as_float(e.get("t"))
        self.t_end = max(self.t_end, t)
        rlm_id = as_str(e.get("rlm")) or "0"
        depth = as_int(e.get("depth"))
        if kind == "run_start":
            self.run = e
            self.node("0", 0)
        elif kind == "run_end":
            self.end = e
        elif kind == "rlm_start":
            node = self.node(rlm_id, depth)
            node.question = as_str(e.get("question"))
            node.model = as_str(e.get("model"))
            node.t0 = t
        elif kind == "rlm_end":
            node = self.node(rlm_id, depth)
            node.t1 = t
            node.status = as_str(e.get("status")) or None
            node.answer = e.get("answer")
            node.iterations = as_int(e.get("iterations"))
            node.error = e.get("error") and as_str(e.get("error"))
            self._current.pop(rlm_id, None)
        elif kind == "turn_start":
            node = self.node(rlm_id, depth)
            turn = Turn(iteration=as_int(e.get("iteration")), t0=t)
            node.turns.append(turn)
            self._current[rlm_id] = turn
        elif kind == "turn_end":
            node = self.node(rlm_id, depth)
            turn = self._turn_of(node, t)
            turn.t1 = t
            turn.observation = e.get("observation") and as_str(e.get("observation"))
            turn.final = bool(e.get("final"))
        elif kind == "lm_call_start":
            self._call_start(e, t, rlm_id, depth)
        elif kind == "lm_call_end":
            self._call_end(e, t, rlm_id, depth)
        elif kind == "block":
            node = self.node(rlm_id, depth)
            elapsed = max(0.0, as_float(e.get("elapsed_s")))
            block = Block(
                iteration=as_int(e.get("iteration")),
                index=as_int(e.get("index")),
                code=as_str(e.get("code")),
                output=as_str(e.get("output")),
                error=e.get("error") and as_str(e.get("error")),
                restarted=e.get("restarted") and as_str(e.get("restarted")),
                new_vars=[as_str(v) for v in e.get("new_vars") or [] if v is not None]
                if isinstance(e.get("new_vars"), list)
                else [],
                t0=max(0.0, t - elapsed),
                t1=t,
            )
            self._turn_of(node, t).blocks.append(block)
            self.blocks.append((rlm_id, block))
        elif kind == "budget_refused":
            node = self.node(rlm_id, depth)
            self._turn_of(node, t).refusals.append(e)
        elif kind == "tool_call":
            node = self.node(rlm_id, depth)
            self._turn_of(node, t).tools.append(e)
        elif kind == "compacted":
            node = self.node(rlm_id, depth)
            self._turn_of(node, t).compactions.append(e)
        elif kind == "context_data":
            self.context_data += 1
        elif kind == "final":
            node = self.node(rlm_id, depth)
            node.final_source = as_str(e.get("source")) or None
            if node.answer is None:
                node.answer = e.get("answer")
        elif isinstance(e.get("message"), str):  # controller_note and later notes
            self.notes.append((as_str(kind), e["message"]))
        elif isinstance(kind, str):
            self.unknown_types.add(kind)

    def _call_start(self, e: dict[str, Any], t: float, rlm_id: str, depth: int) -> None:
        node = self.node(rlm_id, depth)
        purpose = as_str(e.get("purpose")) or "?"
        call = Call(
            call_id=e.get("call_id"),
            rlm=rlm_id,
            purpose=purpose,
            model=as_str(e.get("model")),
            attempt=as_int(e.get("attempt")) or 1,
            t0=t,
            prompt=e.get("prompt") if isinstance(e.get("prompt"), str) else None,
        )
        if purpose == "extract":
            turn = next((x for x in node.turns if x.extract), None)
            if turn is None:
                turn = Turn(iteration=len(node.turns) + 1, t0=t, extract=True)
                node.turns.append(turn)
            self._current[rlm_id] = turn
        turn = self._turn_of(node, t)
        (turn.calls if purpose in ("root", "extract") else turn.subs).append(call)
        self.calls.append(call)
        self._open[(rlm_id, _hashable(call.call_id))] = call

    def _call_end(self, e: dict[str, Any], t: float, rlm_id: str, depth: int) -> None:
        call = self._open.pop((rlm_id, _hashable(e.get("call_id"))), None)
        if call is None:  # an end without its start (a cut trace): keep what it says
            self._call_start(
                {**e, "prompt": None}, t - max(0.0, as_float(e.get("latency_s"))), rlm_id, depth
            )
            call = self._open.pop((rlm_id, _hashable(e.get("call_id"))))
        call.t1 = t
        call.text = e.get("text") if isinstance(e.get("text"), str) else None
        call.error = e.get("error") and as_str(e.get("error"))
        call.status = e.get("status")
        call.input_tokens = as_int(e.get("input_tokens"))
        call.output_tokens = as_int(e.get("output_tokens"))
        call.cost = as_float(e.get("cost_usd"))
        call.latency = as_float(e.get("latency_s")) if e.get("latency_s") is not None else None

    def _sum(self) -> None:
        for node in self.nodes.values():
            node.children.sort(key=_id_key)
            for turn in [*node.turns, *([node.loose] if node.loose else [])]:
                for call in turn.all_calls():
                    node.own.add_call(call)
                for tool in turn.tools:
                    node.own.add_tool(tool)
        for node in sorted(self.nodes.values(), key=lambda n: len(_id_key(n.id)), reverse=True):
            node.tree.add(node.own)
            if node.parent is not None and node.parent in self.nodes:
                self.nodes[node.parent].tree.add(node.tree)

    def order(self) -> list[Node]:
        """Every RLM, depth first (a parent before its children, children in order)."""
        out: list[Node] = []
        roots = sorted((n for n in self.nodes.values() if n.parent is None), key=lambda n: n.id)
        stack = [(node, 0) for node in reversed(roots)]
        while stack:
            node, level = stack.pop()
            if node.id in self.level:
                continue
            self.level[node.id] = level
            out.append(node)
            stack.extend((self.nodes[c], level + 1) for c in reversed(node.children))
        return out


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
