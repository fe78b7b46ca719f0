"""Typed programs end to end: signatures (a string or a pydantic model), SUBMIT validated by
the host with the exact reason shown to the model, FINAL under a signature, extraction at
max_iterations, and the CLI's --signature. Scripted models behind the real fake HTTP server,
real sandbox workers.
"""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from e2e_helpers import observation_after, one_json_object, repl, root_requests, run_cli
from recursa import RLM, ConfigError, Signature
from recursa.core import prompts
from recursa.testing import LMRequest, ScriptedLM

COUNT_AND_LINES = "question, context -> count: int, lines: list[int]"
LOG = "ok\nERROR\nok\nERROR\nERROR"


class ErrorReport(BaseModel):
    """Count the errors and say where they are."""

    count: int
    lines: list[int]


# ---- SUBMIT: validated, the exact failure shown, the corrected SUBMIT accepted ---------------


def test_a_wrong_submit_is_refused_with_each_bad_field_named_and_the_corrected_one_accepted(
    serve,
) -> None:
    server = serve(
        ScriptedLM(
            root=[
                repl('SUBMIT(count="three", lines=[1, "four"])'),
                repl("SUBMIT(count=3, lines=[1, 3, 4])"),
            ]
        )
    )

    result = RLM("openai/x", base_url=server.url, signature=COUNT_AND_LINES).run(
        "How many errors, on which lines?", LOG
    )

    assert result.status == "ok", result.error
    assert result.iterations == 2
    assert result.output is not None
    assert (result.output.count, result.output.lines) == (3, [1, 3, 4])
    assert result.answer == {"count": 3, "lines": [1, 3, 4]}
    told = observation_after(server, 0)
    assert "SUBMIT needs count: int, lines: list[int]; it was rejected" in told
    assert "- count: " in told and "'three'" in told  # the field, and what it got
    assert "- lines.1: " in told and "'four'" in told  # the exact list item
    assert "- lines.0" not in told  # the good item is not blamed
    finals = [e for e in result.events if e.type == "final"]
    assert [(e.iteration, e.source) for e in finals] == [(2, "submit")]


def test_a_submit_missing_a_field_and_adding_an_unknown_one_is_told_both(serve) -> None:
    server = serve(
        ScriptedLM(root=[repl("SUBMIT(count=3, extra='x')"), repl("SUBMIT(count=3, lines=[])")])
    )

    result = RLM("openai/x", base_url=server.url, signature=COUNT_AND_LINES).run("q", LOG)

    assert result.status == "ok" and result.iterations == 2
    told = observation_after(server, 0)
    assert "- lines: Field required" in told
    assert "- unexpected field(s): extra" in told


def test_a_pydantic_model_signature_returns_an_instance_of_that_model(serve) -> None:
    server = serve(
        ScriptedLM(root=[repl("SUBMIT(count='x', lines=[2])"), repl("SUBMIT(count=1, lines=[2])")])
    )

    result = RLM("openai/x", base_url=server.url, signature=ErrorReport).run("q", "a\nERROR")

    assert result.status == "ok"
    assert isinstance(result.output, ErrorReport)
    assert result.output == ErrorReport(count=1, lines=[2])
    system = root_requests(server)[0].system
    assert "count: int, lines: list[int]" in system
    assert "SUBMIT(count=..., lines=...)" in system
    assert "SUBMIT needs count: int, lines: list[int]" in observation_after(server, 0)


def test_the_system_prompt_asks_for_submit_only_when_there_is_a_signature(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('x')")]))

    RLM("openai/x", base_url=server.url).run("q", "ctx")
    RLM("openai/x", base_url=server.url, signature="q -> answer: str").run("q", "ctx")

    plain, typed = (r.system for r in root_requests(server))
    assert "SUBMIT(" not in plain.split("## Names available")[0]
    assert "## Output" not in plain
    assert "## Output" in typed and "SUBMIT(answer=...)" in typed


def test_signature_inputs_are_repl_variables_and_shown_in_the_first_message(serve) -> None:
    server = serve(ScriptedLM(root=[repl("SUBMIT(total=year + len(context))")]))
    rlm = RLM("openai/x", base_url=server.url, signature="question, context, year -> total: int")

    result = rlm.run("q", "abcd", inputs={"year": 2000})

    assert result.status == "ok", result.error
    assert result.output is not None and result.output.total == 2004
    assert "- year = 2000" in root_requests(server)[0].last_user


# ---- FINAL under a signature ---------------------------------------------------------------


def test_final_with_a_one_field_signature_is_validated_then_accepted(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('many')"), repl("FINAL(3)")]))

    result = RLM("openai/x", base_url=server.url, signature="q -> count: int").run("q", LOG)

    assert result.status == "ok" and result.iterations == 2
    assert result.output is not None and result.output.count == 3
    assert result.answer == {"count": 3}
    told = observation_after(server, 0)
    assert "SUBMIT needs count: int; it was rejected" in told and "'many'" in told


def test_a_final_line_outside_code_with_a_one_field_signature_is_validated(serve) -> None:
    server = serve(ScriptedLM(root=["I counted.\nFINAL(3)"]))

    result = RLM("openai/x", base_url=server.url, signature="q -> count: int").run("q", LOG)

    assert result.status == "ok"
    assert result.output is not None and result.output.count == 3
    assert [e.source for e in result.events if e.type == "final"] == ["line"]


@pytest.mark.parametrize("final", ["FINAL(3)", "FINAL_VAR('n')"])
def test_final_with_a_multi_field_signature_is_refused_with_the_submit_to_use(
    serve, final: str
) -> None:
    server = serve(ScriptedLM(root=[repl(f"n = 3\n{final}"), repl("SUBMIT(count=n, lines=[])")]))

    result = RLM("openai/x", base_url=server.url, signature=COUNT_AND_LINES).run("q", LOG)

    assert result.status == "ok" and result.iterations == 2
    assert result.answer == {"count": 3, "lines": []}
    told = observation_after(server, 0)
    assert prompts.FINAL_NEEDS_SUBMIT.format(kwargs="count=..., lines=...") in told


# ---- extraction at max_iterations ----------------------------------------------------------


def _never_finishes_then(extracted: str):
    def root(request: LMRequest) -> str:
        if request.last_user.startswith("You have no turns left"):
            return extracted
        return repl(
            f"look_{request.turn} = {request.turn}\nprint('still looking', look_{request.turn})"
        )

    return root


def test_extraction_at_max_iterations_parses_the_json_reply_into_output(serve) -> None:
    server = serve(
        ScriptedLM(
            root=_never_finishes_then('Best guess:\n```json\n{"count": 2, "lines": [4]}\n```')
        )
    )
    rlm = RLM("openai/x", base_url=server.url, signature=COUNT_AND_LINES, max_iterations=2)

    result = rlm.run("q", LOG)

    assert result.status == "max_iterations"
    assert result.output is not None and (result.output.count, result.output.lines) == (2, [4])
    assert result.answer == {"count": 2, "lines": [4]}
    last = root_requests(server)[-1].last_user
    assert last == prompts.EXTRACT_SIGNATURE.format(fields="count: int, lines: list[int]")
    assert result.usage["llm_calls"] == 3 == server.request_count


def test_an_extraction_reply_that_fails_the_signature_is_kept_as_text_without_output(
    serve,
) -> None:
    server = serve(ScriptedLM(root=_never_finishes_then('{"count": "several"}')))
    rlm = RLM("openai/x", base_url=server.url, signature=COUNT_AND_LINES, max_iterations=1)

    result = rlm.run("q", LOG)

    assert result.status == "max_iterations"
    assert result.output is None
    assert result.answer == '{"count": "several"}'


# ---- signature specs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, problem",
    [
        ("q -> n: integer", "unknown type 'integer'"),
        ("q -> n: set[int]", "unsupported type 'set[int]'"),
        ("q -> n: list[int", "n:"),
        ("q -> n: Literal[x]", "Literal takes constants"),
        ("q, n: int", "expected 'inputs -> outputs'"),
        ("q -> a -> b", "expected 'inputs -> outputs'"),
        ("q -> 1n: int", "output '1n' is not a name"),
        ("q-x -> n: int", "input 'q-x' is not a name"),
        ("q -> ", "no outputs"),
        ("q -> n: __import__('os')", "unsupported type"),
    ],
)
def test_a_signature_string_with_a_bad_type_or_shape_is_refused_naming_the_problem(
    spec: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        RLM("openai/x", base_url="http://127.0.0.1:9/v1", signature=spec)
    assert problem in str(caught.value)
    assert repr(spec) in str(caught.value)


def test_a_signature_that_is_neither_a_string_nor_a_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="a string or a pydantic model"):
        RLM("openai/x", base_url="http://127.0.0.1:9/v1", signature=42)  # type: ignore[arg-type]


def test_the_signature_grammar_covers_the_documented_types() -> None:
    signature = Signature.of(
        "question, context -> a: str, b: float, c: bool, d: dict[str, list[int]], "
        "e: tuple[int, ...], f: Optional[int], g: str | None, h: Literal['x', 'y']"
    )

    good = signature.validate(
        {"a": "s", "b": 1.5, "c": True, "d": {"k": [1]}, "e": [1, 2], "h": "y"}
    )
    assert good.model_dump() == {
        "a": "s",
        "b": 1.5,
        "c": True,
        "d": {"k": [1]},
        "e": (1, 2),
        "f": None,
        "g": None,
        "h": "y",
    }
    with pytest.raises(ValueError, match=r"- h: Input should be 'x' or 'y'"):
        signature.validate({"a": "s", "b": 1, "c": True, "d": {}, "e": [], "h": "z"})


# ---- the CLI -----------------------------------------------------------------------------------


def test_the_cli_signature_flag_returns_the_validated_fields_as_json(serve, tmp_path) -> None:
    server = serve(
        ScriptedLM(root=[repl("SUBMIT(count='3x', lines=[1])"), repl("SUBMIT(count=3, lines=[1])")])
    )
    log = tmp_path / "app.log"
    log.write_text(LOG, encoding="utf-8")

    run = run_cli(
        [
            "run",
            "How many errors?",
            "--context",
            str(log),
            "--model",
            "openai/x",
            "--base-url",
            server.url,
            "--signature",
            COUNT_AND_LINES,
            "--json",
            "--quiet",
        ]
    )

    assert run.rc == 0, run.err
    out = one_json_object(run.out)
    assert out["answer"] == {"count": 3, "lines": [1]}
    assert (out["status"], out["iterations"]) == ("ok", 2)
    assert out["usage"]["llm_calls"] == 2 == server.request_count


def test_the_cli_refuses_a_bad_signature_with_one_line_and_exit_code_2(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(1)")]))

    run = run_cli(
        ["run", "q", "--model", "openai/x", "--base-url", server.url, "--signature", "q -> n: num"]
    )

    assert run.rc == 2
    assert run.err_lines == ["recursa: error: bad signature 'q -> n: num': n: unknown type 'num'"]
    assert server.request_count == 0
