"""The `recursa` command in real subprocesses: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e_helpers import (
    closed_port,
    finish_cli,
    host_env,
    observation_after,
    one_json_object,
    repl,
    run_cli,
    start_cli,
)
from recursa.core import prompts
from recursa.demo import make_haystack
from recursa.testing import LMRequest, ScriptedLM

MODEL = ["--model", "openai/x"]


@pytest.fixture
def ctx_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("the meeting is on Tuesday\n", encoding="utf-8")
    return path


def assert_one_error_line(run, *words: str) -> str:
    """The run failed with exactly one clear line on stderr, mentioning `words`."""
    assert "Traceback" not in run.err
    assert len(run.err_lines) == 1, run.err
    line = run.err_lines[0]
    assert line.startswith("recursa: error: ")
    for word in words:
        assert word.lower() in line.lower(), line
    return line


# ---- usage and configuration errors: exit 2, one line, nothing on stdout -------------------

BAD_INPUTS = {
    "missing_context_file": (["run", "q", "--context", "{missing}", *MODEL], ["not found"]),
    "unknown_provider": (["run", "q", "--model", "nosuch/x", "--base-url", "{url}"], ["nosuch"]),
    "zero_max_iterations": (["run", "q", *MODEL, "--max-iterations", "0"], ["0"]),
    "negative_max_llm_calls": (["run", "q", *MODEL, "--max-llm-calls", "-1"], ["-1"]),
    "zero_timeout": (["run", "q", *MODEL, "--timeout", "0"], []),
    "zero_concurrency": (["run", "q", *MODEL, "--concurrency", "0"], []),
    "wrong_flag": (["run", "q", *MODEL, "--no-such-flag"], ["--no-such-flag"]),
    "no_model": (["run", "q", "--base-url", "{url}"], ["model"]),
    "missing_api_key": (["run", "q", "--model", "openai/gpt-4o"], ["OPENAI_API_KEY"]),
    "unknown_price_with_max_cost": (
        ["run", "q", "--model", "openai/no-such-model", "--base-url", "{url}", "--max-cost", "1"],
        ["price"],
    ),
    "no_question": (["run", *MODEL], ["question"]),
    "unknown_sandbox": (["run", "q", *MODEL, "--sandbox", "nosuch"], ["nosuch"]),
}


@pytest.mark.parametrize("args, words", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_exits_2_with_one_clear_line_and_no_traceback(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    fill = {"missing": str(tmp_path / "nope.txt"), "url": "http://127.0.0.1:9/v1"}
    run = run_cli([a.format(**fill) for a in args])

    assert run.rc == 2, run.err
    assert_one_error_line(run, *words)
    assert run.out == ""


@pytest.mark.parametrize(
    "flag, value", [("--max-iterations", "0"), ("--max-llm-calls", "-1"), ("--timeout", "0")]
)
def test_bad_limit_error_line_names_the_flag(flag: str, value: str) -> None:
    run = run_cli(["run", "q", *MODEL, flag, value])

    assert run.rc == 2
    assert_one_error_line(run, flag)


def test_missing_context_line_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.log"
    run = run_cli(["run", "q", "--context", str(missing), *MODEL])

    assert run.rc == 2
    assert_one_error_line(run, str(missing))


# ---- runs that work, with warnings ----------------------------------------------------------


def test_non_utf8_context_runs_with_one_warning_and_the_right_answer(serve, tmp_path: Path) -> None:
    path = tmp_path / "latin1.log"
    path.write_bytes(b"caf\xe9 au lait \xff\xfe\nthe door code is 4417\n")
    lm = ScriptedLM(
        root=[
            repl("print(context.count('\\ufffd'), 'replaced')"),
            repl("import re\nFINAL(re.search(r'door code is (\\d+)', context).group(1))"),
        ]
    )
    server = serve(lm)

    run = run_cli(
        ["run", "What is the door code?", "--context", str(path), *MODEL, "--base-url", server.url]
    )

    assert run.rc == 0, run.err
    assert run.out == "4417\n"
    assert "Traceback" not in run.err
    warnings = [line for line in run.err_lines if "warning" in line.lower()]
    assert len(warnings) == 1
    assert "UTF-8" in warnings[0]
    assert "3 replaced" in observation_after(server, 0)


def test_empty_context_file_runs_with_a_warning(serve, tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    lm = ScriptedLM(root=[repl("print(repr(context))"), repl("FINAL('nothing there')")])
    server = serve(lm)

    run = run_cli(["run", "q", "--context", str(path), *MODEL, "--base-url", server.url])

    assert run.rc == 0, run.err
    assert run.out == "nothing there\n"
    warnings = [line for line in run.err_lines if "warning" in line.lower()]
    assert len(warnings) == 1
    assert "empty" in warnings[0]
    assert "''" in observation_after(server, 0)


def test_without_json_stdout_holds_the_answer_alone(serve, ctx_file: Path) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL({'day': 'Tuesday'})")]))

    run = run_cli(["run", "q", "--context", str(ctx_file), *MODEL, "--base-url", server.url])

    assert run.rc == 0, run.err
    assert json.loads(run.out) == {"day": "Tuesday"}
    assert run.out.count("\n") == 1


def test_several_contexts_become_a_list_and_context_n(serve, tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("alpha", encoding="utf-8")
    second.write_text("beta", encoding="utf-8")
    server = serve(ScriptedLM(root=[repl("FINAL([context, context_0, context_1])")]))

    run = run_cli(
        [
            "run",
            "q",
            "--context",
            str(first),
            "--context",
            str(second),
            *MODEL,
            "--base-url",
            server.url,
            "--json",
            "--quiet",
        ]
    )

    assert run.rc == 0, run.err
    assert one_json_object(run.out)["answer"] == [["alpha", "beta"], "alpha", "beta"]


def test_context_from_standard_input(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(context.upper())")]))

    run = run_cli(
        ["run", "q", "--context", "-", *MODEL, "--base-url", server.url, "--quiet"],
        stdin=b"from a pipe",
    )

    assert run.rc == 0, run.err
    assert run.out == "FROM A PIPE\n"


# ---- exit 1 and 3 -----------------------------------------------------------------------------


def test_unreachable_server_exits_1_with_one_line_and_json_still_printed(ctx_file: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    base = ["run", "q", "--context", str(ctx_file), *MODEL, "--base-url", url]
    # Both wait out the default retry backoff; they run side by side.
    as_json = start_cli([*base, "--json", "--quiet"])
    plain = start_cli(base)
    as_json_run, plain_run = finish_cli(as_json), finish_cli(plain)

    assert as_json_run.rc == 1
    data = one_json_object(as_json_run.out)
    assert data["status"] == "error"
    assert data["answer"] is None
    assert data["usage"]["llm_calls"] >= 1
    line = assert_one_error_line(as_json_run, url.removesuffix("/v1"))
    assert "Traceback" not in plain_run.err
    assert plain_run.rc == 1
    assert plain_run.out == ""
    errors = [x for x in plain_run.err_lines if x.startswith("recursa: error:")]
    assert errors == [line]


def _never_finishes(request: LMRequest) -> str:
    if request.last_user == prompts.EXTRACT:
        return "FINAL(probably Tuesday)"
    return repl("print(context[:20])")


def test_max_iterations_exits_3_and_prints_the_extracted_answer(serve, ctx_file: Path) -> None:
    server = serve(ScriptedLM(root=_never_finishes))

    run = run_cli(
        [
            "run",
            "q",
            "--context",
            str(ctx_file),
            *MODEL,
            "--base-url",
            server.url,
            "--max-iterations",
            "2",
            "--quiet",
        ]
    )

    assert run.rc == 3
    assert run.out == "probably Tuesday\n"
    assert "Traceback" not in run.err
    assert len(run.err_lines) == 1
    assert "max_iterations" in run.err_lines[0]
    assert server.request_count == 3  # two turns and the extraction


def test_max_iterations_with_json_prints_one_object_and_counts_the_extraction(
    serve, ctx_file: Path
) -> None:
    server = serve(ScriptedLM(root=_never_finishes))

    run = run_cli(
        [
            "run",
            "q",
            "--context",
            str(ctx_file),
            *MODEL,
            "--base-url",
            server.url,
            "--max-iterations",
            "2",
            "--json",
        ]
    )

    assert run.rc == 3
    data = one_json_object(run.out)
    assert data["status"] == "max_iterations"
    assert data["answer"] == "probably Tuesday"
    assert data["iterations"] == 2
    assert data["usage"]["llm_calls"] == server.request_count == 3
    assert data["usage"]["input_tokens"] == server.usage["input_tokens"]
    assert "Traceback" not in run.err


def test_trace_file_is_written_and_named_in_the_json(serve, ctx_file: Path, tmp_path) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('x')")]))
    trace = tmp_path / "run.jsonl"

    run = run_cli(
        [
            "run",
            "q",
            "--context",
            str(ctx_file),
            *MODEL,
            "--base-url",
            server.url,
            "--json",
            "--quiet",
            "--trace",
            str(trace),
        ]
    )

    assert run.rc == 0, run.err
    data = one_json_object(run.out)
    assert Path(data["trace"]).resolve() == trace.resolve()
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert events
    assert ctx_file.read_text() not in trace.read_text()  # contexts by reference only


# ---- the demo -----------------------------------------------------------------------------------


def test_demo_finds_the_planted_code(tmp_path: Path) -> None:
    _, code, service = make_haystack(2_000_000)

    run = run_cli(["demo", "--size-mb", "2", "--json"], env=host_env())

    assert run.rc == 0, run.err
    data = one_json_object(run.out)
    assert data["status"] == "ok"
    assert code in data["answer"]
    assert service in data["answer"]
    assert "Traceback" not in run.err
