"""Guardrails end to end: stall detection, context hygiene and the controller note.

Scripted root models behind the fake HTTP server, real sandboxes, and the `recursa`
console script in a subprocess: a model that repeats a block, repeats an error or idles is
told so once (the corrective message is in the next request the server receives), then
stopped as `stalled` long before `max_iterations`, with `stall` events in the trace.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_helpers import observation_after, one_json_object, repl, root_requests, run_cli
from recursa.core.programs import RLM
from recursa.testing import LMRequest, ScriptedLM
from recursa.trace.reader import read_trace

MAX_ITERATIONS = 30
GAVE_UP = "FINAL(what I have: nothing certain)"

# kind -> (the block of turn n, the turn that is warned, what the warning says)
STALLS = {
    "repeated_block": (
        lambda n: "print(len(context))",
        2,
        "You ran the same block again (print(len(context))).",
    ),
    "repeated_error": (
        lambda n: f"1 / 0  # attempt {n}",
        3,
        "The same error came back 3 times: ZeroDivisionError: division by zero",
    ),
    "idle": (
        lambda n: f"pass  # turn {n}",
        4,
        "4 turns in a row made no new variable and printed nothing new.",
    ),
}


def _stalling(kind: str):
    code_for_turn = STALLS[kind][0]

    def root(request: LMRequest) -> str:
        if "being stopped" in request.last_user:
            return GAVE_UP
        return repl(code_for_turn(request.turn + 1))

    return ScriptedLM(root=root)


def _stalls(events: list[dict]) -> list[tuple[str, str, int]]:
    return [(e["kind"], e["action"], e["iteration"]) for e in events if e["type"] == "stall"]


@pytest.mark.parametrize("kind", list(STALLS))
def test_a_stalling_model_is_warned_then_stopped_as_stalled_via_python(serve, kind: str) -> None:
    _, warned_at, says = STALLS[kind]
    server = serve(_stalling(kind))
    events: list = []

    result = RLM("openai/x", base_url=server.url, max_iterations=MAX_ITERATIONS).run(
        "What is in the context?", "some text", on_event=lambda e: events.append(e.to_dict())
    )

    assert result.status == "stalled"
    assert result.iterations == warned_at + 1 < MAX_ITERATIONS
    assert result.answer == "what I have: nothing certain"
    assert _stalls(events) == [(kind, "warned", warned_at), (kind, "stopped", warned_at + 1)]
    # the corrective message went to the model with the observation of the warned turn
    told = observation_after(server, warned_at - 1)
    assert "[guard] " + says in told and "Change approach" in told
    for earlier in range(warned_at - 1):
        assert "[guard]" not in observation_after(server, earlier)
    # then one last request asks for the best answer, and nothing after it
    last = root_requests(server)[-1]
    assert "The run is being stopped because it stopped making progress" in last.last_user
    assert len(root_requests(server)) == warned_at + 2
    assert result.usage["llm_calls"] == server.request_count


@pytest.mark.parametrize("kind", list(STALLS))
def test_a_stalling_model_is_stopped_via_the_cli_with_exit_3_and_stall_events_in_the_trace(
    serve, tmp_path: Path, kind: str
) -> None:
    _, warned_at, says = STALLS[kind]
    server = serve(_stalling(kind))
    context = tmp_path / "context.txt"
    context.write_text("some text")
    trace = tmp_path / "run.jsonl"

    run = run_cli(
        [
            *["run", "What is in the context?", "--context", str(context)],
            *["--model", "openai/x", "--base-url", server.url, "--trace", str(trace), "--json"],
        ]
    )

    assert run.rc == 3, run.err
    data = one_json_object(run.out)
    assert data["status"] == "stalled" and data["iterations"] == warned_at + 1
    assert data["answer"] == "what I have: nothing certain"
    assert "recursa: stopped (stalled)" in run.err
    events = read_trace(trace)
    assert _stalls(events) == [(kind, "warned", warned_at), (kind, "stopped", warned_at + 1)]
    assert events[-1]["type"] == "run_end" and events[-1]["status"] == "stalled"
    assert "[guard] " + says in observation_after(server, warned_at - 1)


def _prints_the_context(request: LMRequest) -> str:
    if "being stopped" in request.last_user:
        return GAVE_UP
    return repl("print(context)")


def test_printing_the_context_is_warned_and_a_repeat_stalls_the_cli_run(
    serve, tmp_path: Path
) -> None:
    server = serve(ScriptedLM(root=_prints_the_context))
    context = tmp_path / "context.txt"
    context.write_text("".join(f"line {i}: nothing to see here\n" for i in range(400)))
    trace = tmp_path / "run.jsonl"

    run = run_cli(
        [
            *["run", "Anything odd?", "--context", str(context), "--model", "openai/x"],
            *["--base-url", server.url, "--trace", str(trace), "--json"],
        ]
    )

    assert run.rc == 3, run.err
    events = read_trace(trace)
    printed = [e for e in events if e["type"] == "context_printed"]
    assert [(e["iteration"], e["index"]) for e in printed] == [(1, 1), (2, 1), (3, 1)]
    assert all(e["chars"] >= 4_000 for e in printed)
    assert "[guard] This block printed about" in observation_after(server, 0)
    assert _stalls(events) == [("repeated_block", "warned", 2), ("repeated_block", "stopped", 3)]


def test_no_guards_turns_off_stalls_and_the_context_warning(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(root=_prints_the_context))
    context = tmp_path / "context.txt"
    context.write_text("".join(f"line {i}: nothing to see here\n" for i in range(400)))
    trace = tmp_path / "run.jsonl"

    run = run_cli(
        [
            *["run", "Anything odd?", "--context", str(context), "--model", "openai/x"],
            *["--base-url", server.url, "--trace", str(trace), "--json", "--no-guards"],
            *["--max-iterations", "6"],
        ]
    )

    assert run.rc == 3, run.err
    assert one_json_object(run.out)["status"] == "max_iterations"
    events = read_trace(trace)
    assert [e for e in events if e["type"] in ("stall", "context_printed")] == []
    assert events[0]["settings"]["guards"] is None
    assert len(root_requests(server)) == 6 + 1  # every turn, then the last-chance request
    assert not any("[guard]" in r.last_user for r in server.requests)


def test_no_guards_lets_a_repeating_model_run_to_max_iterations_via_python(serve) -> None:
    server = serve(_stalling("repeated_block"))

    result = RLM("openai/x", base_url=server.url, max_iterations=5, guards=False).run(
        "What is in the context?", "some text"
    )

    assert result.status == "max_iterations" and result.iterations == 5
    assert [e for e in result.events if e.type == "stall"] == []


def test_an_unknown_root_model_gets_a_controller_note_and_a_known_one_does_not(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(len(context))")]))

    unknown = RLM("openai/x", base_url=server.url).run("How long?", "four")
    known = RLM("openai/gpt-5", base_url=server.url).run("How long?", "four")

    notes = [e for e in unknown.events if e.type == "controller_note"]
    assert [(n.model, "not in the table" in n.message) for n in notes] == [("openai/x", True)]
    assert [e for e in known.events if e.type == "controller_note"] == []
    assert unknown.answer == known.answer == 4


def test_the_controller_note_is_in_the_cli_trace_and_progress(serve, tmp_path: Path) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(len(context))")]))
    context = tmp_path / "context.txt"
    context.write_text("four")
    trace = tmp_path / "run.jsonl"

    run = run_cli(
        [
            *["run", "How long?", "--context", str(context), "--model", "openai/x"],
            *["--base-url", server.url, "--trace", str(trace)],
        ]
    )

    assert run.rc == 0, run.err
    assert run.out == "4\n"
    notes = [e for e in read_trace(trace) if e["type"] == "controller_note"]
    assert len(notes) == 1 and notes[0]["model"] == "openai/x"
    assert "note: openai/x is not in the table of models known to drive RLMs well" in run.err


def test_a_model_that_makes_progress_every_turn_is_never_warned(serve) -> None:
    def root(request: LMRequest) -> str:
        n = request.turn + 1
        return repl(f"FINAL(x{n - 1})" if n == 8 else f"x{n} = {n}\nprint(x{n})")

    server = serve(ScriptedLM(root=root))

    result = RLM("openai/x", base_url=server.url).run("Count", "text")

    assert result.status == "ok" and result.answer == 7 and result.iterations == 8
    assert not any("[guard]" in r.last_user for r in server.requests)
