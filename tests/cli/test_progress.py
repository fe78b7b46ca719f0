"""Progress on stderr: plain lines when it is not a terminal (through the CLI), and the live
view of the tree when it is (rendered to a forced-terminal rich Console)."""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from e2e_helpers import repl, run_cli
from recursa import RLM
from recursa.events import (
    BlockExecuted,
    Event,
    LMCallEnded,
    LMCallStarted,
    RLMEnded,
    RLMStarted,
    RunEnded,
    RunStarted,
    SubQueriesAsked,
    TurnEnded,
    TurnStarted,
)
from recursa.progress import Progress
from recursa.testing import ScriptedLM
from run_samples import ANSWER, CHILD_QUESTION, CONTEXT, QUESTION, record_run, scripted_model


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120, highlight=False), out


def live_progress() -> tuple[Progress, io.StringIO]:
    """A live view with no refresh thread: only run_end (or a test) draws it."""
    console, out = terminal()
    progress = Progress(console, auto_refresh=False)
    assert progress.live
    return progress, out


def frame(progress: Progress) -> str:
    """The live view as it stands, as plain text."""
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(progress.renderable())
    return out.getvalue()


def row(text: str, rlm: str) -> str:
    return next(line for line in text.splitlines() if line.split()[:1] == [rlm])


_ids = itertools.count(1)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_start() -> RunStarted:
    return RunStarted(
        run_id="r1",
        question="q?",
        model="openai/x",
        sub_model=None,
        settings={},
        contexts=[{"kind": "text", "size": 10}],
        system_prompt="s",
    )


def call(rlm: str, purpose: str, *, attempt: int = 1) -> LMCallStarted:
    return LMCallStarted(
        rlm=rlm, depth=rlm.count("."), call_id=next(_ids), model="m", purpose=purpose,
        attempt=attempt,
    )  # fmt: skip


def done(start: LMCallStarted, error: str | None = None, tokens: int = 100) -> LMCallEnded:
    return LMCallEnded(
        rlm=start.rlm, depth=start.depth, call_id=start.call_id, model="m",
        purpose=start.purpose, attempt=start.attempt, text=None if error else "ok",
        input_tokens=0 if error else tokens, output_tokens=0 if error else 10,
        cost_usd=0 if error else 0.01, error=error,
    )  # fmt: skip


def run_end(calls: int) -> RunEnded:
    usage = {"llm_calls": calls, "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0}
    return RunEnded(status="ok", answer="a", iterations=1, usage=usage)


def feed(progress: Progress, *events: Event) -> None:
    for event in events:
        progress(event)


# ---- plain lines, through the CLI -----------------------------------------------------------


@pytest.fixture
def context_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text(CONTEXT, encoding="utf-8")
    return path


def test_plain_progress_via_cli_narrates_turns_child_rlms_and_the_end_without_styles(
    serve, context_file: Path
) -> None:
    server = serve(scripted_model())

    run = run_cli(
        ["run", QUESTION, "--context", str(context_file), "--model", "openai/x",
         "--base-url", server.url, "--max-depth", "2"]
    )  # fmt: skip

    assert run.rc == 0, run.err
    assert run.out == ANSWER + "\n"
    assert "\x1b[" not in run.err
    lines = run.err_lines
    header = next(line for line in lines if line.startswith("recursa run "))
    assert header.endswith(": openai/x; context: text of 240")
    turns = [line.strip().split(":")[0] for line in lines if line.lstrip().startswith("turn ")]
    assert turns == [
        "turn 1",
        "turn 1 of child 0.0",
        "turn 2 of child 0.0",
        "turn 2",
        "turn 3",
    ]
    assert next(x for x in lines if x.startswith("turn 1:")).startswith(
        "turn 1: 1 block(s), 7 call(s) · total 7 calls"
    )
    assert f"  child 0.0 started: {CHILD_QUESTION!r}" in lines
    assert "  child 0.0 ended: ok" in lines
    assert lines[-1].startswith("ok after 3 turn(s): 12 calls, ")


def test_quiet_prints_no_progress(serve, context_file: Path) -> None:
    server = serve(scripted_model())

    run = run_cli(
        ["run", QUESTION, "--context", str(context_file), "--model", "openai/x",
         "--base-url", server.url, "--max-depth", "2", "--quiet"]
    )  # fmt: skip

    assert run.rc == 0, run.err
    assert run.err == ""


def test_plain_mode_prints_lines_not_one_per_event_on_a_10000_event_run() -> None:
    out = io.StringIO()
    progress = Progress(Console(file=out, width=200))
    root = call("0", "root")
    feed(progress, run_start(), RLMStarted(question="q", model="m", first_message="f"))
    feed(progress, TurnStarted(iteration=1), root, done(root))
    subs = [call("0", "sub") for _ in range(5_000)]
    feed(progress, *subs, *(done(s) for s in subs))
    feed(progress, TurnEnded(iteration=1, blocks=1, observation="o", final=True))
    feed(progress, run_end(5_001))

    lines = out.getvalue().splitlines()
    assert not progress.live
    assert len(lines) == 3
    assert lines[1].startswith("turn 1: 1 block(s), 5001 call(s) · total 5001 calls")


# ---- the live view --------------------------------------------------------------------------


def test_live_mode_is_chosen_only_for_a_terminal() -> None:
    assert Progress(Console(file=io.StringIO())).live is False
    assert Progress(terminal()[0]).live is True
    assert Progress(terminal()[0], live=False).live is False


def test_live_view_says_what_each_worker_is_doing() -> None:
    progress, _ = live_progress()
    feed(progress, run_start(), RLMStarted(question="q", model="m", first_message="f"))
    root = call("0", "root")
    feed(progress, TurnStarted(iteration=1), root)
    assert "asking the model" in row(frame(progress), "0")

    feed(progress, done(root))
    assert "running block 1" in row(frame(progress), "0")

    subs = [call("0", "sub") for _ in range(3)]
    feed(progress, SubQueriesAsked(count=5), *subs, done(subs[0]))
    # how many of the sub-queries the block asked for are answered, beside those in flight
    assert "block 1: waiting on sub-queries (1/5 done, 2 in flight)" in row(frame(progress), "0")

    feed(progress, RLMStarted(rlm="0.0", depth=1, question="c", model="m", first_message="f"))
    text = frame(progress)
    assert "waiting on 1 child RLM and sub-queries (1/5 done, 2 in flight)" in row(text, "0")
    assert "starting" in row(text, "0.0")

    first = call("0.0", "root")
    feed(progress, TurnStarted(rlm="0.0", depth=1, iteration=1), first)
    feed(progress, done(first, error="HTTP 503: busy"))
    assert "waiting to retry" in row(frame(progress), "0.0")

    feed(progress, call("0.0", "root", attempt=2))
    assert "asking the model, attempt 2" in row(frame(progress), "0.0")

    extract = call("0", "extract")
    feed(progress, *(done(s) for s in subs[1:]), extract)
    assert "asking for an answer (extraction)" in row(frame(progress), "0")

    text = frame(progress)
    assert "2 RLMs (2 running)" in text
    assert "5 calls" in text  # ended calls: root, 1 sub, failed child attempt, 2 subs
    progress._stop_live()


def test_live_view_draws_a_final_frame_and_one_summary_line_at_run_end() -> None:
    progress, out = live_progress()
    root = call("0", "root")
    feed(progress, run_start(), RLMStarted(question="q", model="m", first_message="f"))
    feed(progress, TurnStarted(iteration=1), root, done(root, tokens=1_500))
    feed(progress, BlockExecuted(iteration=1, index=1, code="x", output="", error="Boom"))
    feed(progress, TurnEnded(iteration=1, blocks=1, observation="o", final=True))
    before = progress.renders
    feed(progress, RLMEnded(status="ok", answer="a", iterations=1), run_end(1))

    text = out.getvalue()
    assert "\x1b[" in text  # styled: this is the terminal mode
    assert "ended: ok" in text
    assert "1.5k / 10" in text
    assert "block 1.1 error" in text and "Boom" in text  # errors still print as lines
    assert "turn 1:" not in text  # turn lines are the live view's job here
    last = ANSI.sub("", text).rstrip().splitlines()[-1]
    assert last.startswith("ok after 1 turn(s): 1 calls, 1 in / 1 out, $0.0000, ")
    assert progress.renders == before + 1  # the final frame, drawn when the run ended


def test_live_view_is_not_redrawn_per_event_on_a_10000_event_run() -> None:
    progress, _ = live_progress()
    feed(progress, run_start(), RLMStarted(question="q", model="m", first_message="f"))
    started = progress.renders  # rich draws the first frame when the view starts
    root = call("0", "root")
    feed(progress, TurnStarted(iteration=1), root, done(root))
    subs = [call("0", "sub") for _ in range(5_000)]
    feed(progress, *subs, *(done(s) for s in subs))

    assert progress.renders == started
    assert "5001 calls" in frame(progress)
    feed(progress, TurnEnded(iteration=1, blocks=1, observation="o", final=True), run_end(5001))
    assert progress.renders == started + 2  # the frame above, and the last one at run_end


def test_live_view_of_a_real_run_ends_with_every_rlm_done(serve, tmp_path: Path) -> None:
    progress, out = live_progress()

    record_run(serve(scripted_model()), tmp_path / "run.jsonl", on_event=progress)

    text = ANSI.sub("", out.getvalue())
    last_frame = text[text.rindex("recursa run") :]
    assert "2 RLMs (0 running)" in last_frame
    assert "ended: ok" in row(last_frame, "0")
    assert "ended: ok" in row(last_frame, "0.0")
    assert "ok after 3 turn(s): 12 calls" in text


# ---- never into the run -----------------------------------------------------------------


class _BrokenFile(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError("stderr is gone")


@pytest.mark.parametrize("live", [False, True], ids=["plain", "live"])
def test_a_broken_stderr_never_raises_into_the_run(live: bool) -> None:
    progress = Progress(
        Console(file=_BrokenFile(), force_terminal=live), auto_refresh=False, live=live
    )
    root = call("0", "root")
    events: list[Any] = [run_start(), RLMStarted(question="q", model="m", first_message="f")]
    events += [TurnStarted(iteration=1), root, done(root)]
    events += [TurnEnded(iteration=1, blocks=0, observation="o"), run_end(1)]

    feed(progress, *events)  # raises nothing

    assert progress._live is None


def test_a_malformed_event_turns_the_display_off_with_one_line() -> None:
    out = io.StringIO()
    progress = Progress(Console(file=out, width=200))
    bad = run_start()
    bad.contexts = [{"no": "size"}]

    feed(progress, bad, RLMStarted(question="q", model="m", first_message="f"), run_end(0))

    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("recursa: progress display stopped: KeyError")


def test_a_run_tells_progress_how_many_sub_queries_each_call_asked_for(serve) -> None:
    code = "xs = llm_query_batched(['a', 'b', 'c'])\ny = llm_query('d')\nFINAL(len(xs))"
    server = serve(ScriptedLM(root=[repl(code)], sub=lambda prompt: "ok"))
    events: list[Event] = []

    result = RLM("openai/x", base_url=server.url, on_event=events.append).run("q", "ctx")

    assert result.status == "ok", result.error
    asked = [e.count for e in events if isinstance(e, SubQueriesAsked)]
    assert asked == [3, 1]
    assert server.request_count == 1 + 4  # the root turn and the four sub-queries
