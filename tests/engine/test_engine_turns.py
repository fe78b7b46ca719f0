"""The root conversation through real runs: malformed turns, FINAL forms, max_iterations."""

from __future__ import annotations

import json

import pytest

from e2e_helpers import (
    assert_usage_matches_server,
    observation_after,
    repl,
    root_requests,
)
from recursa.core import prompts
from recursa.core.programs import RLM
from recursa.testing import LMRequest, ScriptedLM

RECOVER = repl("FINAL(['recovered', 'marker' in globals()])")

MALFORMED = {
    "no_code_and_no_final": ("I think the answer is probably 42.", prompts.NO_CODE),
    "unclosed_fence": ("```repl\nmarker = 'ran'\nprint(marker)\n", prompts.UNCLOSED_FENCE),
    "empty_reply": ("", prompts.EMPTY_REPLY),
    "final_var_of_a_missing_name": (
        "FINAL_VAR(no_such_name)",
        "FINAL_VAR(no_such_name) names no variable",
    ),
    "final_line_after_a_block_that_raised": (
        "```repl\nmarker = 1 / 0\n```\nFINAL(wrong answer)",
        prompts.FINAL_AFTER_ERROR,
    ),
}


@pytest.mark.parametrize("reply, correction", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_turn_gets_a_corrective_message_and_the_run_recovers(
    serve, reply: str, correction: str
) -> None:
    server = serve(ScriptedLM(root=[reply, RECOVER]))

    result = RLM("openai/x", base_url=server.url).run("q", "some context")

    assert result.status == "ok", result.error
    # Nothing of the malformed turn ran or ended the run ('marker' was never set).
    assert result.answer == ["recovered", False]
    assert result.iterations == 2  # the malformed turn counted as a turn
    told = observation_after(server, 0)
    assert correction in told
    second = root_requests(server)[1]
    assert second.messages[-2] == {"role": "assistant", "content": reply}
    assert_usage_matches_server(result.usage, server)


def test_final_after_a_raising_block_shows_the_error_and_is_not_accepted(serve) -> None:
    reply, _ = MALFORMED["final_line_after_a_block_that_raised"]
    server = serve(ScriptedLM(root=[reply, RECOVER]))

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.answer != "wrong answer"
    assert "ZeroDivisionError" in observation_after(server, 0)


def test_every_malformed_turn_in_a_row_is_corrected_then_the_run_ends_ok(serve) -> None:
    replies = [reply for reply, _ in MALFORMED.values()]
    server = serve(ScriptedLM(root=[*replies, RECOVER]))

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer == ["recovered", False]
    assert result.iterations == len(replies) + 1
    for turn, (_, correction) in enumerate(MALFORMED.values()):
        assert correction in observation_after(server, turn)
    assert_usage_matches_server(result.usage, server)


def test_malformed_turns_count_against_max_iterations(serve) -> None:
    def model(request: LMRequest) -> str:
        if request.last_user == prompts.EXTRACT:
            return "FINAL(no idea)"
        return "Let me think about it some more."

    server = serve(ScriptedLM(root=model))

    result = RLM("openai/x", base_url=server.url, max_iterations=2).run("q", "ctx")

    assert result.status == "max_iterations"
    assert result.iterations == 2
    assert len(root_requests(server)) == 3


# ---- max_iterations -----------------------------------------------------------------------


def _never_finishes(final_reply: str):
    def model(request: LMRequest) -> str:
        if request.last_user == prompts.EXTRACT:
            return final_reply
        return repl(f"partial = 'forty-two'\nprint('turn', {request.turn})")

    return model


def test_max_iterations_sends_one_extraction_request_and_never_reports_ok(serve) -> None:
    server = serve(ScriptedLM(root=_never_finishes("FINAL(best guess: 7)")))

    result = RLM("openai/x", base_url=server.url, max_iterations=3).run("q", "ctx")

    assert result.status == "max_iterations"
    assert not result.ok
    assert result.answer == "best guess: 7"
    assert result.iterations == 3  # the extraction is not a turn
    roots = root_requests(server)
    assert len(roots) == 4  # 3 turns + 1 extraction
    assert roots[-1].last_user == prompts.EXTRACT
    assert roots[-1].is_root  # a root request like the others, with the history
    assert roots[-1].turn == 3
    assert result.usage["llm_calls"] == 4
    assert_usage_matches_server(result.usage, server)


def test_extraction_reply_with_final_var_resolves_the_variable(serve) -> None:
    server = serve(ScriptedLM(root=_never_finishes("FINAL_VAR(partial)")))

    result = RLM("openai/x", base_url=server.url, max_iterations=1).run("q", "ctx")

    assert result.status == "max_iterations"
    assert result.answer == "forty-two"


def test_extraction_reply_without_final_is_the_answer_as_written(serve) -> None:
    server = serve(ScriptedLM(root=_never_finishes("  Probably forty-two.  ")))

    result = RLM("openai/x", base_url=server.url, max_iterations=1).run("q", "ctx")

    assert result.status == "max_iterations"
    assert result.answer == "Probably forty-two."


def test_extraction_request_counts_against_max_llm_calls(serve) -> None:
    server = serve(ScriptedLM(root=_never_finishes("FINAL(never sent)")))

    result = RLM("openai/x", base_url=server.url, max_iterations=2, max_llm_calls=2).run("q", "ctx")

    assert result.status == "max_iterations"
    assert result.answer != "never sent"
    assert server.request_count == 2
    assert_usage_matches_server(result.usage, server)


def test_final_on_the_last_allowed_turn_is_ok_without_extraction(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('in time')")]))

    result = RLM("openai/x", base_url=server.url, max_iterations=1).run("q", "ctx")

    assert result.status == "ok"
    assert result.answer == "in time"
    assert server.request_count == 1


# ---- FINAL forms -------------------------------------------------------------------------


def test_final_with_a_dict_in_code_gives_a_json_answer(serve) -> None:
    value = {"city": "Paris", "population": 2_100_000, "tags": ["capital", "river"]}
    server = serve(ScriptedLM(root=[repl(f"FINAL({value!r})")]))

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.status == "ok"
    assert result.answer == value
    assert json.loads(json.dumps(result.to_dict()))["answer"] == value


def test_final_of_a_value_that_is_not_json_gives_its_str(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(range(3))")]))

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.answer == "range(0, 3)"
    assert result.to_dict()["answer"] == "range(0, 3)"


def test_final_var_in_code_returns_the_named_variable(serve) -> None:
    server = serve(ScriptedLM(root=[repl("summary = {'n': 3, 'ok': True}\nFINAL_VAR('summary')")]))

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.status == "ok"
    assert result.answer == {"n": 3, "ok": True}


@pytest.mark.parametrize(
    "line, answer",
    [
        ('FINAL("Paris, France")', "Paris, France"),
        ("FINAL('Paris, France')", "Paris, France"),
        ("FINAL(Paris, France)", "Paris, France"),
        ("FINAL(1 + 1)", "1 + 1"),  # as written, not evaluated
        ('FINAL(""quoted" twice")', '"quoted" twice'),
    ],
)
def test_final_line_outside_code_is_the_text_as_written_with_quotes_stripped(
    serve, line: str, answer: str
) -> None:
    server = serve(ScriptedLM(root=[repl("print(len(context))"), f"I have seen enough.\n{line}"]))

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.status == "ok"
    assert result.answer == answer
    assert result.iterations == 2


def test_final_var_line_outside_code_resolves_the_variable_from_the_repl(serve) -> None:
    server = serve(
        ScriptedLM(root=[repl("result = [1, 2, 3]\nprint(len(result))"), "FINAL_VAR(result)"])
    )

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.status == "ok"
    assert result.answer == [1, 2, 3]


def test_final_mentioned_mid_line_in_prose_does_not_end_the_run(serve) -> None:
    server = serve(
        ScriptedLM(
            root=[
                "I could write FINAL(42) now, but first I look.\n" + repl("print(len(context))"),
                repl("FINAL('looked first')"),
            ]
        )
    )

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.answer == "looked first"
    assert result.iterations == 2


def test_python_and_py_blocks_run_and_unlabeled_fences_do_not(serve) -> None:
    first = (
        "```python\na = 1\n```\n"
        "```py\nb = 2\n```\n"
        "An example, not to run:\n```\nc = 3\n```\n"
        "```repl\nprint(a + b)\n```"
    )
    server = serve(ScriptedLM(root=[first, repl("FINAL([a, b, 'c' in globals()])")]))

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.answer == [1, 2, False]
    told = observation_after(server, 0)
    assert "[block 3] 3" in told


def test_question_and_context_metadata_are_in_the_first_user_message(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('x')")]))

    RLM("openai/x", base_url=server.url).run("Who wrote it?", "line one\nline two\n")

    (first,) = root_requests(server)
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert "Who wrote it?" in first.last_user
    assert "18 characters" in first.last_user


def test_a_first_request_that_fails_reports_no_iterations(serve) -> None:
    from recursa.testing import Reply

    server = serve(ScriptedLM(root=[Reply(status=400, error_body="scripted bad request")]))

    result = RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert result.status == "error"
    assert result.iterations == 0
    assert "scripted bad request" in (result.error or "")


def test_a_worker_that_cannot_start_ends_the_run_with_status_error(serve, monkeypatch) -> None:
    from recursa.sandbox import process

    monkeypatch.setattr(process, "WORKER_PATH", process.WORKER_PATH.with_name("missing.py"))
    server = serve(ScriptedLM(root=["```repl\nprint(1)\n```", "FINAL(x)"]))

    result = RLM("openai/x", base_url=server.url, sandbox="subprocess").run("q", "ctx")

    assert result.status == "error"
    assert "worker" in (result.error or "")
    assert result.to_dict()["status"] == "error"
