"""The official library's log format, both ways: recursa writes it (`--trace-format
official`, the compat layer's `logger=`) and reads it back as the events it came from; a
log in that format that the other library wrote (built here from its documented fields)
opens in `recursa view`, is mined, and replays offline."""

from __future__ import annotations

import json
import re

from e2e_helpers import one_json_object, repl, run_cli
from recursa.compat.rlm import RLM as OfficialRLM
from recursa.compat.rlm import RLMLogger
from recursa.core.programs import RLM
from recursa.testing import LMRequest, ScriptedLM
from recursa.trace.jsonl import JsonlTrace
from recursa.trace.official import OfficialTrace
from recursa.trace.viewer import load_trace, render_html

LOOK = repl(
    """
    word = llm_query("Which animal? " + context[:40])
    print("sub said", word)
    """
)
DONE = repl(
    """
    answer["content"] = word.upper()
    answer["ready"] = True
    """
)


def _sub(request: LMRequest) -> str:
    return "okapi" if "okapi" in request.last_user else "none"


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_recursa_writes_the_official_lines_and_reads_them_back_identically(serve, tmp_path) -> None:
    server = serve(ScriptedLM(root=[LOOK, DONE], sub=_sub))
    own, official = JsonlTrace(tmp_path / "own.jsonl"), OfficialTrace(tmp_path / "off.jsonl")

    def both(event) -> None:
        own(event)
        official(event)

    program = RLM("openai/root", base_url=server.url, dialect="official", env={})
    result = program.run("Which animal?", "an okapi lives here", on_event=both)
    own.close()
    official.close()
    assert result.answer == "OKAPI"

    meta, *iterations = _lines(tmp_path / "off.jsonl")
    assert (meta["type"], meta["root_model"], meta["backend"]) == ("metadata", "root", "openai")
    assert [i["type"] for i in iterations] == ["iteration", "iteration"]
    first, second = iterations
    assert first["prompt"][0]["role"] == "system" and first["response"] == LOOK
    block = first["code_blocks"][0]
    assert block["result"]["stdout"] == "sub said okapi"
    assert set(block["result"]) >= {"stdout", "stderr", "locals", "execution_time", "rlm_calls"}
    call = block["result"]["rlm_calls"][0]
    assert (call["response"], call["prompt"]) == ("okapi", "Which animal? an okapi lives here")
    assert first["final_answer"] is None and second["final_answer"] == "OKAPI"
    assert len(second["prompt"]) == len(first["prompt"]) + 2  # the reply and its observation

    back, original = load_trace(tmp_path / "off.jsonl"), load_trace(tmp_path / "own.jsonl")
    assert back == original
    assert render_html(back) == render_html(original)


def test_the_compat_logger_writes_one_official_log_per_completion(serve, tmp_path) -> None:
    server = serve(ScriptedLM(root=[LOOK, DONE], sub=_sub))
    logger = RLMLogger(log_dir=tmp_path / "logs")
    rlm = OfficialRLM(backend_kwargs={"model_name": "m", "base_url": server.url}, logger=logger)
    assert rlm.completion("an okapi lives here").response == "OKAPI"
    assert logger.log_file_path is not None and logger.log_file_path.parent == tmp_path / "logs"
    lines = _lines(logger.log_file_path)
    assert lines[0]["type"] == "metadata"
    assert lines[-1]["final_answer"] == "OKAPI"


FOREIGN_CODE_1 = 'hits = llm_query("Find the animal in: " + context)\nprint(hits)'
FOREIGN_CODE_2 = 'answer["content"] = hits.strip()\nanswer["ready"] = True'


def _foreign_log(path) -> None:
    """A log as the other library writes it: only its documented fields, no recursa keys."""
    system = {"role": "system", "content": "You are tasked with answering a query..."}
    user = {"role": "user", "content": "Which animal is named?"}
    lines = [
        {
            "type": "metadata",
            "timestamp": "2026-01-31T11:05:04",
            "root_model": "gpt-5",
            "max_depth": 1,
            "max_iterations": 10,
            "backend": "openai",
            "backend_kwargs": {"model_name": "gpt-5"},
            "environment_type": "local",
            "environment_kwargs": {},
            "other_backends": None,
        },
        {
            "type": "iteration",
            "iteration": 1,
            "timestamp": "2026-01-31T11:05:16",
            "prompt": [system, user],
            "response": f"```repl\n{FOREIGN_CODE_1}\n```",
            "code_blocks": [
                {
                    "code": FOREIGN_CODE_1,
                    "result": {
                        "stdout": "okapi\n",
                        "stderr": "",
                        "locals": {"hits": "okapi"},
                        "execution_time": 0.4,
                        "rlm_calls": [
                            {
                                "root_model": "gpt-5",
                                "prompt": "Find the animal in: the okapi grazes",
                                "response": "okapi",
                                "execution_time": 0.3,
                            }
                        ],
                    },
                }
            ],
            "final_answer": None,
            "iteration_time": 1.2,
        },
        {
            "type": "iteration",
            "iteration": 2,
            "timestamp": "2026-01-31T11:05:18",
            "prompt": [system, user],
            "response": f"```repl\n{FOREIGN_CODE_2}\n```",
            "code_blocks": [
                {
                    "code": FOREIGN_CODE_2,
                    "result": {
                        "stdout": "",
                        "stderr": "",
                        "locals": {},
                        "execution_time": 0.01,
                        "rlm_calls": [],
                    },
                }
            ],
            "final_answer": "okapi",
            "iteration_time": 0.5,
        },
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_a_log_the_other_library_wrote_opens_in_view_is_mined_and_replays(tmp_path) -> None:
    log = tmp_path / "rlm_2026-01-31.jsonl"
    _foreign_log(log)
    context = tmp_path / "context.txt"
    context.write_text("the okapi grazes")

    view = run_cli(["view", str(log), "--out", str(tmp_path / "page.html")])
    assert view.rc == 0, view.err
    page = (tmp_path / "page.html").read_text()
    assert "Find the animal in:" in page and "okapi" in page

    mined = run_cli(["mine", str(log), "--json"])
    assert mined.rc == 0, mined.err
    assert json.loads(mined.out)["runs"] == 1

    replay = run_cli(["replay", str(log), "--context", str(context), "--json", "--quiet"])
    assert replay.rc == 0, replay.err
    data = one_json_object(replay.out)
    assert (data["status"], data["answer"], data["diverged"]) == ("ok", "okapi", False)


def test_replaying_an_official_log_without_its_context_asks_for_it(tmp_path) -> None:
    log = tmp_path / "log.jsonl"
    _foreign_log(log)
    replay = run_cli(["replay", str(log), "--json"])
    assert replay.rc == 2
    assert re.search(r"--context", replay.err) and "Traceback" not in replay.err


def test_a_malformed_official_log_is_one_clear_line_never_a_traceback(tmp_path) -> None:
    odd = tmp_path / "odd.jsonl"
    odd.write_text(
        json.dumps({"type": "metadata", "root_model": 5, "max_depth": "deep"})
        + "\n"
        + json.dumps(
            {
                "type": "iteration",
                "prompt": 5,
                "response": None,
                "code_blocks": [
                    1,
                    {"code": 2, "result": {"rlm_calls": [1, {"prompt": 3}], "execution_time": "x"}},
                ],
                "final_answer": {"odd": True},
            }
        )
        + "\n"
    )
    view = run_cli(["view", str(odd), "--out", str(tmp_path / "odd.html")])
    assert view.rc == 0, view.err  # wrong-typed fields are left out, the rest is drawn
    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps({"type": "metadata", "recursa_events": [1]}) + "\n")
    bad = run_cli(["view", str(forged), "--out", str(tmp_path / "forged.html")])
    assert bad.rc == 2
    assert "not an event object" in bad.err and "Traceback" not in bad.err
