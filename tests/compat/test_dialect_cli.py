"""`recursa run --dialect official --system-prompt FILE`: the official REPL conventions from
the command line, with the user's own prompt text, through a real server and sandbox."""

from __future__ import annotations

import json

from e2e_helpers import one_json_object, repl, root_requests, run_cli
from recursa.testing import ScriptedLM

ANSWER = repl(
    """
    answer["content"] = context.split()[-1]
    answer["ready"] = True
    """
)


def _run(server, tmp_path, *extra: str):
    context = tmp_path / "ctx.txt"
    context.write_text("the last word is OKAPI")
    return run_cli(
        [
            "run",
            "What is the last word?",
            "--context",
            str(context),
            "--base-url",
            server.url,
            "--model",
            "openai/x",
            "--json",
            *extra,
        ]
    )


def test_the_official_dialect_ends_on_the_answer_dict_with_the_users_prompt(
    serve, tmp_path
) -> None:
    server = serve(ScriptedLM(root=[ANSWER]))
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("My own prompt: set answer['ready'] when done. {not a field}")
    run = _run(server, tmp_path, "--dialect", "official", "--system-prompt", str(prompt))
    assert run.rc == 0, run.err
    data = one_json_object(run.out)
    assert (data["status"], data["answer"]) == ("ok", "OKAPI")
    assert root_requests(server)[0].system == prompt.read_text()


def test_recursas_dialect_stays_the_default_and_has_no_answer_dict(serve, tmp_path) -> None:
    server = serve(ScriptedLM(root=[ANSWER, repl("FINAL('done')")]))
    run = _run(server, tmp_path)
    assert run.rc == 0, run.err
    data = one_json_object(run.out)
    assert data["answer"] == "done"  # `answer` was not a REPL name: the block failed
    assert "NameError" in root_requests(server)[1].last_user


def test_an_unreadable_system_prompt_is_a_usage_error(serve, tmp_path) -> None:
    server = serve(ScriptedLM(root=[ANSWER]))
    run = _run(server, tmp_path, "--system-prompt", str(tmp_path / "missing.txt"))
    assert run.rc == 2
    assert "Traceback" not in run.err


def test_trace_format_official_writes_a_log_that_view_opens(serve, tmp_path) -> None:
    server = serve(ScriptedLM(root=[ANSWER]))
    log = tmp_path / "run.jsonl"
    run = _run(
        server, tmp_path, "--dialect", "official", "--trace", str(log), "--trace-format", "official"
    )
    assert run.rc == 0, run.err
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["metadata", "iteration"]
    assert lines[1]["final_answer"] == "OKAPI"
    view = run_cli(["view", str(log), "--out", str(tmp_path / "page.html")])
    assert view.rc == 0, view.err
    assert "OKAPI" in (tmp_path / "page.html").read_text()
