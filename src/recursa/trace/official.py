"""The official RLM library's log format (JSON lines), written and read.

The format, from that library's documented fields: a `metadata` line (root_model,
max_depth, max_iterations, backend, backend_kwargs, environment_type, environment_kwargs,
other_backends), then one `iteration` line per root turn: `prompt` (the messages sent),
`response`, `code_blocks` [{code, result: {stdout, stderr, locals, execution_time,
rlm_calls}}], `final_answer`, `iteration_time`. Each `rlm_calls` item is a sub-call
{root_model, prompt, response, execution_time}; a child RLM's item also holds its own
iteration lines under `iterations` (child trajectories nested).

recursa writes that format (`--trace-format official`, `recursa.compat.rlm`'s `logger=`)
with each line's recursa events under `recursa_events`, which the other library ignores,
so a log recursa wrote reads back as the very events it came from. A log the other library
wrote has no such key: its lines are turned into the events they stand for (untrusted
input, like any trace: wrong-typed fields are left out, never trusted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ..context import Context
from ..core.gateway import messages_sha256
from ..errors import ConfigError
from ..events import Event

EVENTS_KEY = "recursa_events"
SUB_PURPOSES = frozenset({"sub", "leaf"})
ROOT_PURPOSES = frozenset({"root", "extract"})
UNRECORDED_CONTEXT = "context (not in an official log: give it with --context)"


def is_official(lines: list[dict[str, Any]]) -> bool:
    """Whether parsed lines are an official log: its first line is the `metadata` line."""
    return bool(lines) and lines[0].get("type") == "metadata"


# ---- writing ---------------------------------------------------------------------------------
def to_official(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A recursa run's events (dicts, in order) as the official log's lines."""
    start = next((e for e in events if e.get("type") == "run_start"), {})
    segments = _segments(events, "0")
    head = {"type": "metadata", "timestamp": _now(), **_metadata(start), EVENTS_KEY: segments[0]}
    lines = [head]
    for number, line in enumerate(_iterations(events, "0", start), start=1):
        line[EVENTS_KEY] = segments[number] if number < len(segments) else []
        lines.append(line)
    return lines


def _segments(events: list[dict[str, Any]], rlm: str) -> list[list[dict[str, Any]]]:
    """The events before RLM `rlm`'s first turn, then those of each of its turns."""
    segments: list[list[dict[str, Any]]] = [[]]
    for event in events:
        if event.get("type") == "turn_start" and event.get("rlm") == rlm:
            segments.append([])
        segments[-1].append(event)
    return segments


def _metadata(start: dict[str, Any]) -> dict[str, Any]:
    settings = start.get("settings") or {}
    backend, _, name = str(start.get("model", "")).partition("/")
    sub = start.get("sub_model")
    sub_backend, _, sub_name = str(sub or "").partition("/")
    return {
        "root_model": name,
        "max_depth": settings.get("max_depth"),
        "max_iterations": settings.get("max_iterations"),
        "backend": backend,
        "backend_kwargs": {"model_name": name},
        "environment_type": settings.get("sandbox"),
        "environment_kwargs": {},
        "other_backends": [sub_backend] if sub else None,
        "other_backend_kwargs": [{"model_name": sub_name}] if sub else None,
    }


def _iterations(
    events: list[dict[str, Any]], rlm: str, start: dict[str, Any]
) -> list[dict[str, Any]]:
    """One RLM's turns as iteration lines; its children's nested in their rlm_calls."""
    rlm_start = next(
        (e for e in events if e.get("type") == "rlm_start" and e.get("rlm") == rlm), {}
    )
    messages: list[dict[str, str]] = [
        {"role": "system", "content": str(start.get("system_prompt", ""))},
        {"role": "user", "content": str(rlm_start.get("first_message", ""))},
    ]
    lines: list[dict[str, Any]] = []
    line: dict[str, Any] | None = None
    pending: list[dict[str, Any]] = []
    opened: dict[Any, dict[str, Any]] = {}
    began = 0.0
    for event in events:
        kind, who = event.get("type"), event.get("rlm")
        if who == rlm and kind == "turn_start":
            began = float(event.get("t", 0.0))
            line = {
                "type": "iteration",
                "iteration": event.get("iteration"),
                "timestamp": _now(),
                "prompt": list(messages),
                "response": "",
                "code_blocks": [],
                "final_answer": None,
                "iteration_time": 0.0,
            }
            lines.append(line)
            pending = []
        elif line is None:
            continue
        elif who == rlm and kind == "lm_call_end" and event.get("purpose") in ROOT_PURPOSES:
            if event.get("error") is None:
                line["response"] = event.get("text") or ""
        elif who == rlm and kind == "lm_call_start" and event.get("purpose") in SUB_PURPOSES:
            opened[event.get("call_id")] = event
        elif who == rlm and kind == "lm_call_end" and event.get("purpose") in SUB_PURPOSES:
            begin = opened.pop(event.get("call_id"), {})
            pending.append(_sub_call(begin, event))
        elif kind == "rlm_start" and _is_child(who, rlm):
            child = [e for e in events if _within(e.get("rlm"), str(who))]
            end = next((e for e in child if e.get("type") == "rlm_end"), {})
            pending.append(
                {
                    "root_model": str(event.get("model", "")).partition("/")[2],
                    "prompt": event.get("question"),
                    "response": end.get("answer"),
                    "execution_time": round(
                        float(end.get("t", 0.0)) - float(event.get("t", 0.0)), 6
                    ),
                    "iterations": _iterations(child, str(who), start),
                }
            )
        elif who == rlm and kind == "block":
            line["code_blocks"].append(
                {"code": event.get("code"), "result": _result(event, pending)}
            )
            pending = []
        elif who == rlm and kind == "final":
            line["final_answer"] = event.get("answer")
        elif who == rlm and kind == "turn_end":
            line["iteration_time"] = round(float(event.get("t", 0.0)) - began, 6)
            messages += [{"role": "assistant", "content": line["response"]}]
            if event.get("observation"):
                messages += [{"role": "user", "content": str(event["observation"])}]
    return lines


def _within(who: Any, rlm: str) -> bool:
    """Whether an event of RLM `who` belongs to `rlm`'s subtree."""
    return isinstance(who, str) and (who == rlm or who.startswith(rlm + "."))


def _is_child(who: Any, parent: str) -> bool:
    return (
        isinstance(who, str) and who.startswith(parent + ".") and "." not in who[len(parent) + 1 :]
    )


def _sub_call(begin: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    return {
        "root_model": str(end.get("model", "")),
        "prompt": begin.get("prompt"),
        "response": end.get("text") if end.get("error") is None else f"[error] {end['error']}",
        "execution_time": end.get("latency_s", 0.0),
    }


def _result(block: dict[str, Any], calls: list[dict[str, Any]]) -> dict[str, Any]:
    stdout, error = str(block.get("output", "")), block.get("error")
    cut = stdout.rfind("[error]\n") if error else -1
    if cut >= 0:  # recursa's block output ends with its error: the official log splits them
        stdout = stdout[:cut].rstrip("\n")
    return {
        "stdout": stdout,
        "stderr": str(error or ""),
        "locals": {name: None for name in block.get("new_vars") or []},
        "execution_time": block.get("elapsed_s", 0.0),
        "rlm_calls": calls,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()


class OfficialTrace:
    """An event listener writing `--trace FILE --trace-format official`: the log is
    written whole when the run ends (`close`), as the official lines need every turn."""

    def __init__(self, path: str | Path, contexts: list[Context] | None = None) -> None:
        self.path = str(path)
        try:
            self._fh: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"cannot write trace {self.path}: {exc.strerror or exc}") from None
        self.events: list[dict[str, Any]] = []
        for index, ctx in enumerate(contexts or []):
            self.events.append(
                {"type": "context_data", "index": index, "name": ctx.name, "text": ctx.as_text()}
            )

    def __call__(self, event: Event) -> None:
        self.events.append(json.loads(json.dumps(event.to_dict(), default=str)))

    def close(self) -> None:
        if self._fh is None:
            return
        with self._fh:
            write_lines(self._fh, to_official(self.events))
        self._fh = None


def write_lines(fh: IO[str], lines: Iterable[dict[str, Any]]) -> None:
    for line in lines:
        fh.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")


# ---- reading ---------------------------------------------------------------------------------
def to_recursa(lines: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """An official log's lines as recursa events: the events recursa stored in them, else
    the events a foreign log's fields stand for. Raises ValueError on a malformed line."""
    stored = [line.get(EVENTS_KEY) for line in lines]
    if all(isinstance(s, list) for s in stored):
        events = [e for s in stored for e in s]  # type: ignore[union-attr]
        if not all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in events):
            raise ValueError(f"{name}: a stored recursa event is not an event object")
        return events
    return _Foreign(lines).events()


class _Foreign:
    """The events a log written by the other library stands for (root turns, blocks, sub
    calls, the final answer); what it does not record (the context, usage) is left out."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        self.meta = lines[0]
        self.iterations = [x for x in lines[1:] if x.get("type") == "iteration"]
        self.out: list[dict[str, Any]] = []
        self.calls = 0
        self.t = 0.0

    def emit(self, kind: str, **fields: Any) -> None:
        self.out.append(
            {
                "type": kind,
                "run_id": "official",
                "t": round(self.t, 6),
                "rlm": "0",
                "depth": 0,
                **fields,
            }
        )

    def events(self) -> list[dict[str, Any]]:
        backend = _text(self.meta.get("backend")) or "openai"
        model = f"{backend}/{_text(self.meta.get('root_model')) or 'unknown'}"
        others = self.meta.get("other_backends")
        other_kwargs = self.meta.get("other_backend_kwargs")
        sub_model = None
        if isinstance(others, list) and others and isinstance(other_kwargs, list) and other_kwargs:
            kwargs = other_kwargs[0] if isinstance(other_kwargs[0], dict) else {}
            sub_model = f"{_text(others[0])}/{_text(kwargs.get('model_name'))}"
        first = self.iterations[0].get("prompt") if self.iterations else None
        system, question = _first_messages(first)
        settings = {
            "max_depth": _int(self.meta.get("max_depth"), 1),
            "max_iterations": _int(self.meta.get("max_iterations"), 30),
            "dialect": "official",
            "sandbox": _text(self.meta.get("environment_type")),
        }
        ref = {"name": UNRECORDED_CONTEXT, "kind": "text"}
        self.emit(
            "run_start",
            question=question,
            model=model,
            sub_model=sub_model,
            settings=settings,
            contexts=[ref],
            system_prompt=system,
        )
        self.emit("rlm_start", question=question, model=model, first_message=question)
        answer: Any = None
        number = 0
        for number, line in enumerate(self.iterations, start=1):
            answer = self._iteration(number, line, model)
            if answer is not None:
                break
        status = "ok" if answer is not None else "max_iterations"
        usage = {"llm_calls": self.calls, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        self.emit("rlm_end", status=status, answer=answer, iterations=number)
        self.emit("run_end", status=status, answer=answer, iterations=number, usage=usage)
        return self.out

    def _iteration(self, number: int, line: dict[str, Any], model: str) -> Any:
        self.emit("turn_start", iteration=number)
        self._call(model, "root", None, _text(line.get("response")))
        blocks = found if isinstance(found := line.get("code_blocks"), list) else []
        final = line.get("final_answer")
        for index, block in enumerate(blocks, start=1):
            block = block if isinstance(block, dict) else {}
            result = got if isinstance(got := block.get("result"), dict) else {}
            calls = made if isinstance(made := result.get("rlm_calls"), list) else []
            for call in calls:
                if isinstance(call, dict) and isinstance(call.get("prompt"), str):
                    self._call(
                        _text(call.get("root_model")),
                        "sub",
                        call["prompt"],
                        _text(call.get("response")),
                    )
            stdout, stderr = _text(result.get("stdout")), _text(result.get("stderr"))
            output = stdout.rstrip("\n") + (f"\n[stderr]\n{stderr.rstrip()}" if stderr else "")
            elapsed = result.get("execution_time")
            seconds = float(elapsed) if isinstance(elapsed, int | float) else 0.0
            self.t += seconds
            self.emit(
                "block",
                iteration=number,
                index=index,
                code=_text(block.get("code")),
                output=output.lstrip("\n"),
                elapsed_s=seconds,
            )
        if final is not None:
            self.emit("final", iteration=number, answer=final, source="code")
        self.emit(
            "turn_end",
            iteration=number,
            blocks=len(blocks),
            observation=None,
            final=final is not None,
        )
        return final

    def _call(self, model: str, purpose: str, prompt: str | None, text: str) -> None:
        self.calls += 1
        extra: dict[str, Any] = {}
        if prompt is not None:
            extra = {
                "prompt": prompt[:1000],
                "prompt_sha256": messages_sha256([{"role": "user", "content": prompt}]),
            }
        self.emit("lm_call_start", call_id=self.calls, model=model, purpose=purpose, **extra)
        self.emit("lm_call_end", call_id=self.calls, model=model, purpose=purpose, text=text)


def _first_messages(prompt: Any) -> tuple[str, str]:
    """The system prompt and first user message of a logged prompt (a list of messages)."""
    system, user = "", ""
    if isinstance(prompt, list):
        for message in prompt:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                if message.get("role") == "system" and not system:
                    system = message["content"]
                elif message.get("role") == "user" and not user:
                    user = message["content"]
    elif isinstance(prompt, str):
        user = prompt
    return system, user


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _int(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
    )
