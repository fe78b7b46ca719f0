"""The generated task families and the scorers: deterministic tasks of the asked size whose
expected answers the family's own program recomputes from the text, and scorers that give
full, partial and no credit where they should."""

from __future__ import annotations

import json

import pytest

from recursa.errors import ConfigError
from recursa.evals import FAMILIES, RepoFiles, generate, parse_length, parse_lengths
from recursa.evals.generators import OOLONG_VARIANTS
from recursa.evals.oracle import _host_program
from recursa.evals.scoring import score
from recursa.evals.tasks import format_length


def _as_text(task) -> str:
    if isinstance(task.context, RepoFiles):
        return "\n".join(f"=== {p} ===\n{t}" for p, t in sorted(task.context.files.items()))
    return task.context


@pytest.mark.parametrize("family", FAMILIES)
def test_a_task_is_the_same_for_the_same_family_seed_and_length(family: str) -> None:
    first, again = generate(family, 3, 8_000), generate(family, 3, 8_000)
    other = generate(family, 4, 8_000)

    assert first.id == f"{family}-8k-s3"
    assert (first.question, first.expected) == (again.question, again.expected)
    assert _as_text(first) == _as_text(again)
    assert _as_text(first) != _as_text(other)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tokens", [2_000, 50_000])
def test_a_generated_context_is_within_two_percent_of_the_asked_length(
    family: str, tokens: int
) -> None:
    task = generate(family, 0, tokens)

    assert abs(task.context_chars - 4 * tokens) <= 0.02 * 4 * tokens
    assert task.length == tokens


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_family_program_recomputes_the_expected_answer_from_the_text(
    family: str, seed: int
) -> None:
    task = generate(family, seed, 20_000)
    program = _host_program(family)

    answer = program["finish"](
        program["merge"]([program["map_chunk"](_as_text(task))]), task.question
    )

    assert task.score(answer) == 1.0, (answer, task.expected)


def test_oolong_asks_each_of_its_three_variants_by_seed() -> None:
    variants = [generate("oolong", seed, 8_000).params["variant"] for seed in range(3)]

    assert variants == list(OOLONG_VARIANTS)


def test_the_oolong_labels_are_never_written_in_the_text() -> None:
    text = generate("oolong", 0, 8_000).context
    for label in ("abbreviation", "description", "numeric", "location"):
        assert f"|| {label}" not in text and f"Label: {label}" not in text


def test_the_codeqa_repository_has_a_decoy_of_the_answer_constant() -> None:
    task = generate("codeqa", 0, 8_000)
    files = task.context.files
    entry_file = files[task.params["path"]]

    assert f"def {task.params['entry']}():" in entry_file
    helper = entry_file.split(f"def {task.params['entry']}():\n    return ")[1].split("(")[0]
    defining = [p for p, t in files.items() if f"def {helper}():" in t]
    assert len(defining) == 2  # the real helper and a decoy of the same name


def test_the_logs_incident_has_a_rollback_after_the_first_error() -> None:
    task = generate("logs", 0, 8_000)
    service, version = task.expected.split()
    lines = task.context.splitlines()
    first_error = next(i for i, line in enumerate(lines) if " ERROR " in line)
    deploys = [i for i, line in enumerate(lines) if f"deployed {service} version" in line]

    assert lines[first_error].split()[2] == service
    assert any(i < first_error and line_has(lines[i], version) for i in deploys)
    assert any(i > first_error for i in deploys)  # a rollback the answer must ignore


def line_has(line: str, text: str) -> bool:
    return line.endswith(text)


def test_an_unknown_family_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown task family 'nope'"):
        generate("nope", 0, 8_000)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("8k", 8_000), ("131K", 131_000), ("1m", 1_000_000), ("10M", 10_000_000), ("32768", 32_768)],
)
def test_lengths_are_read_in_tokens(text: str, tokens: int) -> None:
    assert parse_length(text) == tokens


def test_lengths_out_of_range_or_malformed_are_config_errors() -> None:
    for bad in ("12", "eight", "100m", ""):
        with pytest.raises(ConfigError):
            parse_lengths(bad)


def test_lengths_print_short() -> None:
    assert [format_length(n) for n in (8_000, 131_072, 1_000_000, 1_500_000)] == [
        "8k", "131.1k", "1m", "1.5m",
    ]  # fmt: skip


# ---- scoring -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected", "want"),
    [
        ("billing v2.3.1", "billing v2.3.1", 1.0),
        ("**Billing V2.3.1.**", "billing v2.3.1", 1.0),
        ("The answer is billing v2.3.1", "billing v2.3.1", 1.0),
        ("Answer: location\nbecause it is most frequent", "location", 1.0),
        ("billing v2.3.0", "billing v2.3.1", 0.0),
        (
            "a long explanation that mentions billing v2.3.1 somewhere among the many other "
            "words here",
            "billing v2.3.1",
            0.0,
        ),
    ],
)
def test_exact_match_normalizes_but_does_not_accept_long_answers(
    answer: str, expected: str, want: float
) -> None:
    assert score("exact", answer, expected) == want


def test_numeric_takes_the_last_number_and_gives_oolong_partial_credit() -> None:
    assert score("numeric", "Answer: 42", 42) == 1.0
    assert score("numeric", "I counted 3 chunks and found 1,234", "1234") == 1.0
    assert score("numeric", "Answer: 40", 42, decay=0.75) == pytest.approx(0.75**2)
    assert score("numeric", "Answer: 40", 42) == 0.0
    assert score("numeric", "Answer: 40", 42, abs_tol=2) == 1.0
    assert score("numeric", "no number", 42, decay=0.75) == 0.0


def test_choice_reads_the_letter_in_several_forms() -> None:
    for answer in ("B", "(B)", "b.", "Answer: B", "The right choice is (B) 123"):
        assert score("choice", answer, "B") == 1.0, answer
    assert score("choice", "C", "B") == 0.0


def test_set_f1_scores_pairs_in_any_order_and_form() -> None:
    expected = [[1, 2], [1, 3], [2, 3]]

    assert score("set_f1", "(2, 1)\n(3, 1)\n(2, 3)", expected, item="pair") == 1.0
    assert score("set_f1", json.dumps([[1, 2], [1, 3], [2, 3]]), expected, item="pair") == 1.0
    # 2 right of 3 found, 2 of 3 expected: precision = recall = 2/3
    assert score("set_f1", "(1, 2) (1, 3) (4, 5)", expected, item="pair") == pytest.approx(2 / 3)
    assert score("set_f1", "NONE", expected, item="pair") == 0.0


def test_set_f1_of_names_uses_the_given_pattern() -> None:
    want = ["ABCDE", "FGHIJ"]

    assert score("set_f1", "ABCDE, FGHIJ", want, pattern=r"\b[A-Z]{5}\b") == 1.0
    assert score("set_f1", "VAR ABCDE only", want, pattern=r"\b[A-Z]{5}\b") == pytest.approx(2 / 3)


def test_distribution_averages_the_count_of_each_label() -> None:
    expected = {"human": 10, "location": 4}

    assert score("distribution", "human: 10\nlocation: 4", expected) == 1.0
    assert score("distribution", "human: 10\nlocation: 3", expected) == pytest.approx(
        (1 + 0.75) / 2
    )
    assert score("distribution", "human: 10", expected) == 0.5


def test_the_oolong_rubric_reads_gold_list_literals() -> None:
    assert score("oolong", "Answer: 47", "[47]", answer_type="ANSWER_TYPE.NUMERIC") == 1.0
    assert score("oolong", "Answer: 45", "[47]", answer_type="ANSWER_TYPE.NUMERIC") == 0.5625
    assert (
        score("oolong", "Label: location", "['location']", answer_type="ANSWER_TYPE.LABEL") == 1.0
    )
    assert score("oolong", "Answer: more common than human", "['more common']") == 1.0
    assert score("oolong", "Date: 2023-03-14", "[datetime.date(2023, 3, 14)]") == 1.0
    assert score("oolong", "Answer: human", "['location']") == 0.0


def test_no_answer_scores_zero_with_every_scorer() -> None:
    for name, expected in (("exact", "x"), ("numeric", 1), ("choice", "A"), ("set_f1", ["A"])):
        assert score(name, None, expected) == 0.0
