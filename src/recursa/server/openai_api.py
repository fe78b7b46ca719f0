"""The OpenAI chat-completions format, both ways: a request becomes a run, a run becomes a
completion (or a stream of chunks). Plain Python; the HTTP side is in `app`.

A request's last user message is the question. Earlier messages of at least
`LONG_MESSAGE_CHARS` characters become REPL contexts (in order, after the request's own
`context`, `contexts` and `context_path`); shorter earlier ones are kept with the question
as the conversation so far.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ..core.status import LIMIT_STATUSES
from ..events import Event
from .runs import RunSpec
from .settings import RequestError, ServeSettings, Source, request_sources

LONG_MESSAGE_CHARS = 2_000
ANSWER_PIECE_CHARS = 1_000


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts with `text`."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, Mapping) and part.get("type") not in (None, "text"):
                raise RequestError(
                    f"message parts of type {part.get('type')!r} are not supported: "
                    "send text (or give large inputs as context)"
                )
        return "".join(parts)
    raise RequestError(f"message content must be a string or a list of parts, not {content!r:.80}")


def chat_spec(body: Any, settings: ServeSettings) -> tuple[RunSpec, str]:
    """The run a chat-completions request asks for, and the model name to echo back."""
    if not isinstance(body, Mapping):
        raise RequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list")
    for message in messages:
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise RequestError("each message must be an object with a role")
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last is None:
        raise RequestError("no user message: the last user message is the question")
    question = message_text(messages[last].get("content")).strip()
    if not question:
        raise RequestError("the last user message is empty: it is the question")
    model = settings.model_for(body.get("model"))
    sources = request_sources(body)
    earlier: list[str] = []
    for index, message in enumerate(messages[:last]):
        text = message_text(message.get("content"))
        if len(text) >= LONG_MESSAGE_CHARS:
            sources.append(Source("text", text, f"<message {index} ({message['role']})>"))
        elif text.strip():
            earlier.append(f"[{message['role']}] {text.strip()}")
    if earlier:
        question = "The conversation so far:\n" + "\n".join(earlier) + f"\n\nQuestion: {question}"
    limits = settings.limits_for(body.get("limits"))
    echo = named if isinstance(named := body.get("model"), str) else "recursa/" + model
    return RunSpec(question, model, sources, limits), echo


def answer_text(answer: Any) -> str:
    if answer is None:
        return ""
    if isinstance(answer, str):
        return answer
    return json.dumps(answer, ensure_ascii=False)


def finish_reason(status: str) -> str:
    return "length" if status in LIMIT_STATUSES else "stop"


def openai_usage(usage: Mapping[str, Any]) -> dict[str, int]:
    prompt = int(usage.get("input_tokens", 0))
    completion = int(usage.get("output_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def recursa_part(run: Mapping[str, Any]) -> dict[str, Any]:
    """What a completion carries besides the OpenAI fields, under the key "recursa"."""
    keys = ("id", "status", "iterations", "usage", "error")
    return {("run_id" if k == "id" else k): run.get(k) for k in keys}


def completion(run: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A `chat.completion` object for a finished run (`Job.to_dict()`)."""
    return {
        "id": f"chatcmpl-{run['id']}",
        "object": "chat.completion",
        "created": int(run["created"]),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer_text(run["answer"])},
                "finish_reason": finish_reason(run["status"]),
                "logprobs": None,
            }
        ],
        "usage": openai_usage(run.get("usage") or {}),
        "recursa": recursa_part(run),
    }


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class ChunkWriter:
    """`chat.completion.chunk` events for one streamed run."""

    def __init__(self, run_id: str, model: str, created: float | None = None) -> None:
        self.id = f"chatcmpl-{run_id}"
        self.model = model
        self.created = int(created or time.time())

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
        )

    def start(self) -> str:
        return self.chunk({"role": "assistant", "content": ""})

    def progress(self, line: str, event_type: str) -> str:
        """Progress as reasoning text (which chat UIs show apart from the answer)."""
        return self.chunk({"reasoning_content": line + "\n"}, recursa_event=event_type)

    def answer(self, run: Mapping[str, Any], include_usage: bool) -> Iterator[str]:
        text = answer_text(run["answer"])
        for i in range(0, len(text), ANSWER_PIECE_CHARS):
            yield self.chunk({"content": text[i : i + ANSWER_PIECE_CHARS]})
        yield self.chunk({}, finish_reason(run["status"]), recursa=recursa_part(run))
        if include_usage:
            yield sse(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": openai_usage(run.get("usage") or {}),
                }
            )


def _tokens(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def progress_line(event: Event) -> str | None:
    """One line of progress for an event worth telling a chat client about, else None."""
    kind = event.type
    get = getattr
    who = f" (child {event.rlm})" if event.depth else ""
    if kind == "run_start":
        contexts = get(event, "contexts", None) or []
        sizes = ", ".join(f"{c['kind']} of {c['size']:,}" for c in contexts) or "none"
        return f"recursa run {event.run_id}: {get(event, 'model', '')}; context: {sizes}"
    if kind == "rlm_start" and event.depth:
        return f"child {event.rlm} started: {get(event, 'question', '')[:80]!r}"
    if kind == "turn_end":
        return f"turn {get(event, 'iteration', 0)}{who}: {get(event, 'blocks', 0)} block(s)"
    if kind == "block" and (get(event, "error", None) or get(event, "restarted", None)):
        text = get(event, "error", None) or get(event, "restarted", None) or ""
        last = (text.strip().splitlines() or [""])[-1][:200]
        return f"block {get(event, 'iteration', 0)}.{get(event, 'index', 0)}{who} failed: {last}"
    if kind == "lm_call_end" and get(event, "error", None):
        return f"LM call failed{who}: {get(event, 'error', '')[:200]}"
    if kind == "budget_refused":
        return f"budget{who}: {get(event, 'message', '')}"
    if kind == "final" and not event.depth:
        return "answer found"
    if kind == "run_end":
        usage = get(event, "usage", None) or {}
        return (
            f"{get(event, 'status', '?')} after {get(event, 'iterations', 0)} turn(s): "
            f"{usage.get('llm_calls', 0)} LM calls, {_tokens(usage.get('input_tokens', 0))} in / "
            f"{_tokens(usage.get('output_tokens', 0))} out"
        )
    return None
