"""protocol.parse_turn: which code runs and which FINAL line ends a reply."""

from __future__ import annotations

import pytest

from recursa.core.protocol import FinalMarker, parse_turn


@pytest.mark.parametrize("lang", ["repl", "python", "py", "Python", "python3"])
def test_fences_labelled_repl_python_or_py_are_code(lang: str) -> None:
    turn = parse_turn(f"Let me look.\n```{lang}\nprint(len(context))\n```\n")

    assert turn.blocks == ["print(len(context))\n"]
    assert turn.final is None
    assert not turn.unclosed


@pytest.mark.parametrize("lang", ["", "text", "bash", "json", "output"])
def test_unlabeled_or_other_language_fences_are_not_run(lang: str) -> None:
    turn = parse_turn(f"For example:\n```{lang}\nrm -rf /\n```\n```repl\nx = 1\n```")

    assert turn.blocks == ["x = 1\n"]


def test_several_blocks_keep_their_order() -> None:
    reply = "```repl\na = 1\n```\nthen\n```python\nb = 2\n```\n```py\nc = 3\n```"

    assert parse_turn(reply).blocks == ["a = 1\n", "b = 2\n", "c = 3\n"]


def test_indented_fences_and_info_after_the_language_are_accepted() -> None:
    reply = "  ```repl title=explore\n  x = 1\n  ```"

    assert parse_turn(reply).blocks == ["  x = 1\n"]


def test_a_longer_fence_holds_a_block_that_contains_triple_backticks() -> None:
    reply = '````repl\ndoc = """\n```\nnot a fence\n```\n"""\nprint(doc)\n````\nFINAL(done)'

    turn = parse_turn(reply)

    assert turn.blocks == ['doc = """\n```\nnot a fence\n```\n"""\nprint(doc)\n']
    assert turn.final == FinalMarker("value", "done")


def test_backticks_inside_a_line_of_code_do_not_close_the_block() -> None:
    reply = "```repl\nfence = '```'\nprint(fence * 2)\n```"

    assert parse_turn(reply).blocks == ["fence = '```'\nprint(fence * 2)\n"]


def test_backticks_mid_line_in_prose_open_nothing() -> None:
    reply = "Write code in ```repl blocks, as I do:\n```repl\nx = 1\n```"

    turn = parse_turn(reply)

    assert turn.blocks == ["x = 1\n"]
    assert not turn.unclosed


def test_tilde_fences_are_code_too() -> None:
    assert parse_turn("~~~repl\nx = 1\n~~~").blocks == ["x = 1\n"]


def test_a_closing_fence_of_the_other_kind_does_not_close() -> None:
    turn = parse_turn("```repl\nx = 1\n~~~\ny = 2\n```")

    assert turn.blocks == ["x = 1\n~~~\ny = 2\n"]


def test_an_empty_block_is_dropped() -> None:
    assert parse_turn("```repl\n\n   \n```").blocks == []


def test_an_unclosed_code_fence_runs_nothing_and_is_flagged() -> None:
    turn = parse_turn("Here:\n```repl\nx = 1\nprint(x)\n")

    assert turn.blocks == []
    assert turn.unclosed


def test_an_unclosed_fence_of_prose_is_not_flagged() -> None:
    turn = parse_turn("Example:\n```text\nsome output\n")

    assert not turn.unclosed


def test_a_final_inside_an_unclosed_fence_is_not_taken() -> None:
    turn = parse_turn("```repl\nx = 1\nFINAL(3)\n")

    assert turn.final is None
    assert turn.unclosed


def test_final_line_in_prose_is_found() -> None:
    turn = parse_turn("I know now.\nFINAL(The answer is 42)\n")

    assert turn.final == FinalMarker("value", "The answer is 42")
    assert turn.blocks == []


def test_final_mid_line_in_prose_is_ignored() -> None:
    turn = parse_turn("When done I will write FINAL(answer) on its own line.")

    assert turn.final is None


def test_final_inside_a_code_block_is_not_a_prose_marker() -> None:
    turn = parse_turn("```repl\nFINAL(1)\n```")

    assert turn.final is None
    assert turn.blocks == ["FINAL(1)\n"]


def test_final_after_a_block_in_the_same_reply_is_found() -> None:
    turn = parse_turn("```repl\nx = 1\n```\nFINAL(one)")

    assert turn.blocks == ["x = 1\n"]
    assert turn.final == FinalMarker("value", "one")


def test_final_may_span_several_lines() -> None:
    turn = parse_turn("FINAL(first line\nsecond line\n  third)")

    assert turn.final == FinalMarker("value", "first line\nsecond line\n  third")


@pytest.mark.parametrize(
    "line, text",
    [
        ("FINAL(f(x) = (a + b) * c)", "f(x) = (a + b) * c"),
        ("FINAL((1, 2))", "(1, 2)"),
        ("FINAL(a (b (c) d) e) and then prose", "a (b (c) d) e"),
        ("FINAL(unbalanced ( open) more)", "unbalanced ( open) more"),
    ],
)
def test_final_runs_to_the_balancing_parenthesis(line: str, text: str) -> None:
    assert parse_turn(line).final == FinalMarker("value", text)


@pytest.mark.parametrize(
    "line, text",
    [
        ('FINAL("Paris")', "Paris"),
        ("FINAL('Paris')", "Paris"),
        ('FINAL(""Paris"")', '"Paris"'),  # one pair only
        ('FINAL("it\'s")', "it's"),
        ("FINAL(\"mismatched')", "\"mismatched'"),
        ("FINAL(  padded  )", "padded"),
    ],
)
def test_final_strips_one_pair_of_surrounding_quotes(line: str, text: str) -> None:
    assert parse_turn(line).final == FinalMarker("value", text)


@pytest.mark.parametrize(
    "line", ["FINAL_VAR(answer)", "FINAL_VAR('answer')", 'FINAL_VAR("answer")']
)
def test_final_var_names_a_variable(line: str) -> None:
    assert parse_turn(line).final == FinalMarker("var", "answer")


@pytest.mark.parametrize("prefix", ["> ", "**", "  ", "`"])
def test_final_after_markdown_decoration_at_line_start_is_found(prefix: str) -> None:
    assert parse_turn(f"Done.\n{prefix}FINAL(yes)").final == FinalMarker("value", "yes")


def test_final_without_a_closing_parenthesis_is_not_an_answer() -> None:
    assert parse_turn("FINAL(never closed").final is None


def test_the_first_final_line_wins() -> None:
    turn = parse_turn("FINAL(first)\nFINAL(second)")

    assert turn.final == FinalMarker("value", "first")


def test_a_reply_without_code_or_final_has_neither() -> None:
    turn = parse_turn("I am thinking about the problem.")

    assert turn.blocks == []
    assert turn.final is None
    assert not turn.unclosed
