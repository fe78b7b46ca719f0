"""The event registry: every dict a trace holds reads back as its typed event, checked.

`Event.from_dict` is how a trace's events come back as the classes the run emitted; replay
serves its recorded replies from such typed events, so a wrong-typed field is refused in one
line naming it, before any code runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import run_cli
from recursa.events import EVENT_TYPES, Event, LMCallEnded
from recursa.testing import FakeLMServer
from recursa.trace.reader import read_trace
from run_samples import record_run, scripted_model


def test_every_event_of_a_real_run_reads_back_from_its_trace_as_the_event_emitted(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "run.jsonl"
    seen: list[Event] = []
    with FakeLMServer(scripted_model()) as server:
        record_run(server, trace, on_event=seen.append)

    typed = [Event.from_dict(e) for e in read_trace(trace)]

    assert [type(e) for e in typed] == [type(e) for e in seen]
    assert [e.to_dict() for e in typed] == [json.loads(json.dumps(e.to_dict())) for e in seen]
    assert {"run_start", "lm_call_end", "block", "rlm_start", "run_end"} <= {e.type for e in seen}


def test_fields_a_newer_recursa_added_are_left_out() -> None:
    data = {"type": "lm_call_end", "call_id": 2, "model": "m", "purpose": "sub", "new_field": 1}

    event = Event.from_dict(data)

    assert event == LMCallEnded(call_id=2, model="m", purpose="sub")


END = {"type": "lm_call_end", "model": "m", "purpose": "sub"}
BLOCK = {"type": "block", "index": 0, "code": "", "output": ""}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"type": "no_such_event"}, "not a known event type: 'no_such_event'"),
        (END, "lm_call_end event: LMCallEnded.__init__() missing 1 required"),
        ({**END, "call_id": "7"}, "lm_call_end event: call_id is not int"),
        ({**BLOCK, "iteration": True}, "block event: iteration is not int"),
        (
            {"type": "turn_end", "iteration": 1, "blocks": 0, "observation": 3},
            "turn_end event: observation is not str | None",
        ),
        (
            {"type": "run_end", "status": "ok", "answer": 1, "iterations": 1, "usage": []},
            "run_end event: usage is not dict",
        ),
    ],
)
def test_a_malformed_event_is_refused_naming_what_is_wrong(data: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        Event.from_dict(data)


def test_every_event_class_is_registered_under_its_type() -> None:
    import recursa.core.actions.events  # noqa: F401  (action mode's own event)

    assert all(cls.type == kind and issubclass(cls, Event) for kind, cls in EVENT_TYPES.items())
    assert {"run_start", "run_end", "lm_call_start", "lm_call_end", "block", "action"} <= set(
        EVENT_TYPES
    ), sorted(EVENT_TYPES)


def test_replay_refuses_a_recorded_reply_of_the_wrong_type_in_one_line(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    with FakeLMServer(scripted_model()) as server:
        record_run(server, trace)
    events = read_trace(trace)
    for event in events:
        if event["type"] == "lm_call_end":
            event["text"] = ["not", "text"]
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(e) + "\n" for e in events))

    done = run_cli(["replay", str(edited), "--json", "--quiet"])

    assert done.rc == 2, done.err
    assert done.err_lines == [
        f"recursa: error: {edited}: not a replayable recursa trace (malformed event:"
        " ValueError lm_call_end event: text is not str | None)"
    ]
