"""Sessions and compaction end to end: one REPL across questions, new contexts announced as
context_0, context_1, ..., the conversation kept as the REPL variable `history`, and older
turns compacted into a summary when the root prompt nears a (small) window while the full
history stays readable from the REPL.
"""

from __future__ import annotations

from e2e_helpers import repl, root_requests
from recursa import RLM
from recursa.core import prompts
from recursa.testing import LMRequest, ScriptedLM

A = "alpha beta gamma"
B = "one two three four five"


def _by_question(script: dict[str, str]):
    """A root responder keyed on a word of the current question (its latest user message
    that is a question, i.e. the first message or a 'New question')."""

    def root(request: LMRequest) -> str:
        asked = [
            m["content"]
            for m in request.messages
            if m["role"] == "user"
            and ("Question: " in m["content"] or m["content"].startswith("New question: "))
        ][-1]
        for word, reply in script.items():
            if word in asked:
                return reply
        raise AssertionError(f"unscripted question: {asked[:200]!r}")

    return root


def test_a_three_question_session_keeps_variables_contexts_and_history(serve) -> None:
    server = serve(
        ScriptedLM(
            root=_by_question(
                {
                    "FIRST": repl("words_a = context.split()\nFINAL(len(words_a))"),
                    "SECOND": repl(
                        "words_b = context_1.split()\n"
                        "FINAL([context_0 == context[0], len(words_a), len(words_b)])"
                    ),
                    "THIRD": repl(
                        "asked = [m['content'] for m in history if m['role'] == 'user']\n"
                        "FINAL({'all': words_a + words_b, 'asked': len(asked),"
                        " 'first': 'FIRST' in asked[0]})"
                    ),
                }
            )
        )
    )

    with RLM("openai/x", base_url=server.url).session() as session:
        first = session.ask("FIRST: how many words?", context=A)
        second = session.ask("SECOND: and in this one?", context=B)
        third = session.ask("THIRD: all the words, please")

    assert (first.status, first.answer) == ("ok", 3)
    assert (second.status, second.answer) == ("ok", [True, 3, 5])
    assert third.status == "ok", third.error
    assert third.answer == {"all": A.split() + B.split(), "asked": 2, "first": True}
    # Each answer reports its own question's usage; together they are the session's.
    assert [r.usage["llm_calls"] for r in (first, second, third)] == [1, 1, 1]
    assert [r.iterations for r in (first, second, third)] == [1, 1, 1]
    assert server.request_count == 3
    # One conversation: each request carries every earlier turn.
    assert [len(r.messages) for r in root_requests(server)] == [2, 4, 6]


def test_each_new_question_tells_the_model_which_context_arrived_and_what_it_keeps(
    serve,
) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('ok')")]))

    with RLM("openai/x", base_url=server.url).session() as session:
        session.ask("FIRST?", context=A)
        session.ask("SECOND?", context=B)
        session.ask("THIRD?")

    first, second, third = (r.last_user for r in root_requests(server))
    assert "`context` is a str of 16 characters" in first and "Question: FIRST?" in first
    assert second.startswith("New question: SECOND?")
    assert "A new context arrived. `context_1` is a str of 23 characters (1 line)" in second
    assert B in second  # its preview
    assert "Every variable from before is still in the REPL; `history` holds" in second
    assert third.startswith("New question: THIRD?")
    assert "A new context arrived" not in third
    assert third == prompts.NEW_QUESTION.format(
        question="THIRD?", contexts="", repl=prompts.REPL_KEPT
    )


def test_history_in_a_later_question_is_the_whole_conversation_so_far(serve) -> None:
    def root(request: LMRequest) -> str:
        if request.last_user.startswith("New question: SECOND?"):
            return repl("FINAL([[m['role'], m['content']] for m in history])")
        return repl("print('looked')") if request.turn == 0 else repl("FINAL('first')")

    server = serve(ScriptedLM(root=root))
    session = RLM("openai/x", base_url=server.url).session()
    try:
        session.ask("FIRST?", context=A)
        result = session.ask("SECOND?")
    finally:
        session.close()

    last = root_requests(server)[-1].messages
    # `history` was handed over before the new question was asked: all but that message.
    assert result.answer == [[m["role"], m["content"]] for m in last[:-1]]
    assert [role for role, _ in result.answer] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert "Question: FIRST?" in result.answer[1][1]
    assert result.answer[-1][1] == repl("FINAL('first')")


def test_an_answer_extracted_at_max_iterations_stays_in_the_session_history(serve) -> None:
    def root(request: LMRequest) -> str:
        if request.last_user.startswith("New question: SECOND?"):
            return repl("FINAL([m['content'] for m in history if m['role'] == 'assistant'])")
        if request.last_user == prompts.EXTRACT:
            return "FINAL(42)"
        return repl("print('looked')")

    server = serve(ScriptedLM(root=root))

    with RLM("openai/x", base_url=server.url, max_iterations=1).session() as session:
        first = session.ask("FIRST?", context=A)
        second = session.ask("SECOND?")

    assert (first.status, first.answer) == ("max_iterations", "42")
    assert "FINAL(42)" in second.answer
    roles = [m["role"] for m in root_requests(server)[-1].messages]
    assert roles[-2:] == ["assistant", "user"]


def test_a_context_arriving_after_a_question_without_one_is_reachable_by_its_announced_name(
    serve,
) -> None:
    server = serve(
        ScriptedLM(
            root=_by_question(
                {"FIRST": repl("FINAL('none yet')"), "SECOND": repl("FINAL(context)")}
            )
        )
    )

    with RLM("openai/x", base_url=server.url, max_iterations=2).session() as session:
        session.ask("FIRST?")
        result = session.ask("SECOND?", context=A)

    assert "`context` is a str" in root_requests(server)[1].last_user
    assert (result.status, result.answer) == ("ok", A)


async def test_an_async_session_answers_with_aask(serve) -> None:
    server = serve(
        ScriptedLM(
            root=_by_question(
                {"FIRST": repl("n = len(context)\nFINAL(n)"), "SECOND": repl("FINAL(n * 2)")}
            )
        )
    )

    async with RLM("openai/x", base_url=server.url).session() as session:
        first = await session.aask("FIRST?", context="abcd")
        second = await session.aask("SECOND?")

    assert (first.answer, second.answer) == (4, 8)


def test_a_session_with_a_signature_validates_each_questions_submit(serve) -> None:
    server = serve(
        ScriptedLM(
            root=_by_question(
                {
                    "FIRST": repl("rejected = False\nSUBMIT(n=len(context.split()))"),
                    "SECOND": repl("SUBMIT(n=7 if rejected else 'many')\nrejected = True"),
                }
            )
        )
    )

    with RLM("openai/x", base_url=server.url, signature="q -> n: int").session() as session:
        first = session.ask("FIRST?", context=A)
        second = session.ask("SECOND?")

    assert first.output is not None and first.output.n == 3
    assert (second.status, second.iterations) == ("ok", 2)
    assert second.output is not None and second.output.n == 7
    assert "SUBMIT needs n: int; it was rejected" in root_requests(server)[-1].last_user


# ---- compaction ------------------------------------------------------------------------------

SUMMARY = "SUMMARY: the first reply printed a long line of x."


def _compacting_root(finish: str):
    """Replies that print a lot until the prompt is compacted, then `finish`."""

    def root(request: LMRequest) -> str:
        if request.last_user == prompts.COMPACT:
            return SUMMARY
        if "Summary of the work so far" in request.messages[1]["content"]:
            return repl(finish)
        n = request.turn  # a new variable and a new output each turn: no stall
        return repl(f"# MARKER-EARLY\nstep_{n} = 'x' * 3000\nprint(step_{n}, {n})")

    return root


FIND_EARLY = (
    "early = [m['content'] for m in history if 'MARKER-EARLY' in m['content']]\n"
    "FINAL({'found': len(early), 'messages': len(history)})"
)


def test_a_small_window_compacts_older_turns_and_history_keeps_them_in_the_repl(serve) -> None:
    server = serve(ScriptedLM(root=_compacting_root(FIND_EARLY)))

    result = RLM("openai/x", base_url=server.url, context_window=2_500).run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer == {"found": 2, "messages": 6}  # both early replies, every message
    (compacted,) = [e for e in result.events if e.type == "compacted"]
    assert compacted.window == 2_500
    assert compacted.tokens_before > 0.8 * 2_500 > compacted.tokens_after
    asked_to_summarise, after = root_requests(server)[-2:]
    assert asked_to_summarise.last_user == prompts.COMPACT
    # After compaction the prompt is the system prompt and one message: the first question
    # and the model's summary; the early turns are gone from it.
    assert [m["role"] for m in after.messages] == ["system", "user"]
    assert SUMMARY in after.last_user and "Question: q" in after.last_user
    assert "`history`" in after.last_user
    assert all("MARKER-EARLY" not in m["content"] for m in after.messages)
    assert result.usage["llm_calls"] == server.request_count == 4  # the summary is charged


def test_a_large_window_never_compacts(serve) -> None:
    server = serve(
        ScriptedLM(
            root=lambda r: (
                repl(f"step_{r.turn} = 'x' * 3000\nprint(step_{r.turn}, {r.turn})")
                if r.turn < 3
                else repl("FINAL('done')")
            )
        )
    )

    result = RLM("openai/x", base_url=server.url, context_window=100_000).run("q", "ctx")

    assert result.status == "ok"
    assert [e for e in result.events if e.type == "compacted"] == []
    assert all(r.last_user != prompts.COMPACT for r in server.requests)


def test_a_session_compacts_when_a_later_question_nears_the_window(serve) -> None:
    def root(request: LMRequest) -> str:
        if request.last_user == prompts.COMPACT:
            return SUMMARY
        if "Summary of the work so far" in request.messages[1]["content"]:
            return repl(
                "firsts = [m['content'] for m in history if 'Question: FIRST' in m['content']]\n"
                "FINAL({'first_question_kept': len(firsts), 'big': big})"
            )
        if request.last_user.startswith("New question: SECOND?"):
            return repl("FINAL('not compacted')")
        if request.turn == 0:
            return repl("big = 'kept'\nprint('x' * 6000)")
        return repl("FINAL('first done')")

    server = serve(ScriptedLM(root=root))

    with RLM("openai/x", base_url=server.url, context_window=2_500).session() as session:
        first = session.ask("FIRST?", context=A)
        second = session.ask("SECOND?")

    assert first.answer == "first done"
    assert second.status == "ok", second.error
    assert second.answer == {"first_question_kept": 1, "big": "kept"}
    compactions = [e for e in second.events if e.type == "compacted"]
    assert len(compactions) == 1  # in the second question, none in the first
    after = root_requests(server)[-1]
    assert [m["role"] for m in after.messages] == ["system", "user"]
    assert after.last_user.startswith("New question: SECOND?") and SUMMARY in after.last_user
    assert second.usage["llm_calls"] == 2  # the summary and the turn after it
