"""A real scripted run with a fan-out and a child RLM, recorded as a trace, for the viewer
and progress tests: the root fans out 6 sub-queries, hands a sub-task to child RLM 0.0 (which
asks one sub-query of its own) and answers with text that holds markup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e_helpers import repl
from recursa.core.programs import RLM
from recursa.lm.pricing import PriceTable
from recursa.testing import FakeLMServer, LMRequest, ScriptedLM
from recursa.trace.jsonl import JsonlTrace

QUESTION = "What colour is the door?"
CONTEXT = "the door is painted blue and the wall is white. " * 5
HOSTILE = "</script><script>alert(1)</script>"
ANSWER = f"The door is blue {HOSTILE}"
CHILD_QUESTION = "Find the colour of the door"
SUB_REPLY = f"a summary {HOSTILE}<b>bold?</b>"
FAN_OUT = 6

ROOT = [
    repl(
        """
        chunks = [context[i:i + 40] for i in range(0, len(context), 40)]
        answers = llm_query_batched(["Summarise: " + c for c in chunks])
        print(len(answers), "answers")
        """,
        prose="Fan out over chunks.",
    ),
    repl(
        f"""
        detail = rlm_query({CHILD_QUESTION!r}, context)
        print(detail)
        """
    ),
    repl(f"FINAL({ANSWER!r})"),
]
CHILD = [repl("print(llm_query('What colour? ' + context[:30]))"), repl("FINAL('blue')")]


def _root(request: LMRequest) -> str:
    first = request.messages[1]["content"] if len(request.messages) > 1 else ""
    script = CHILD if CHILD_QUESTION in first else ROOT
    return script[min(request.turn, len(script) - 1)]


def _sub(request: LMRequest) -> str:
    return f"{SUB_REPLY} ({request.last_user[:24]})"


def scripted_model() -> ScriptedLM:
    return ScriptedLM(root=_root, sub=_sub)


def record_run(server: FakeLMServer, trace: Path, *, on_event: Any = None) -> Any:
    """Run the scripted task against `server` with a JSON-lines trace written to `trace`."""
    writer = JsonlTrace(trace)
    listeners = [writer] + ([on_event] if on_event else [])

    def fan(event: Any) -> None:
        for listener in listeners:
            listener(event)

    try:
        result = RLM(
            "openai/x",
            base_url=server.url,
            max_depth=2,
            prices=PriceTable.default().with_overrides({"openai/x": "3,15"}),
        ).run(QUESTION, CONTEXT, on_event=fan)
    finally:
        writer.close()
    assert result.status == "ok", result.error
    assert result.answer == ANSWER
    return result
