"""`recursa.compat.rlm`: a script written for the official RLM library runs on recursa with
its import line changed and nothing else, against a real local OpenAI-compatible server
scripted in that library's dialect (the `answer` dict), with real sandbox workers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from e2e_helpers import repl, root_requests, sub_requests
from recursa.compat.rlm import RLM
from recursa.errors import ConfigError
from recursa.testing import LMRequest, ScriptedLM

OFFICIAL_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from rlm import RLM

    url, key = os.environ["FAKE_URL"], "sk-local"
    text = "\\n".join(f"record {i}: nothing here" for i in range(3000))
    text = text.replace("record 2024: nothing here", "record 2024: the code is TANGERINE-42")
    rlm = RLM(
        backend="openai",
        backend_kwargs={"model_name": "root-model", "base_url": url, "api_key": key},
        other_backends=["openai"],
        other_backend_kwargs=[{"model_name": "sub-model", "base_url": url, "api_key": key}],
        environment="local",
        max_iterations=5,
        verbose=False,
    )
    result = rlm.completion(text, root_prompt="What is the code?")
    print(json.dumps({
        "response": result.response,
        "root_model": result.root_model,
        "usage": result.usage_summary.to_dict(),
        "error": result.error,
        "seconds": result.execution_time,
    }))
    """
)

EXPLORE = repl(
    """
    lines = context.split("\\n")
    chunks = ["\\n".join(lines[i:i + 1000]) for i in range(0, len(lines), 1000)]
    found = [a for a in llm_query_batched(["Quote the code, or NONE:\\n" + c for c in chunks])
             if a != "NONE"]
    print(len(chunks), found)
    """
)
ANSWER = repl(
    """
    answer["content"] = found[0]
    answer["ready"] = True
    """
)


def _finder(request: LMRequest) -> str:
    match = re.search(r"the code is (\S+)", request.last_user)
    return match.group(1) if match else "NONE"


def test_an_official_script_runs_with_only_its_import_changed(serve, tmp_path) -> None:
    server = serve(ScriptedLM(root=[EXPLORE, ANSWER], sub=_finder))
    script = tmp_path / "script.py"
    changed = OFFICIAL_SCRIPT.replace("from rlm import RLM", "from recursa.compat.rlm import RLM")
    assert changed.count("recursa") == 1  # the one line a user changes
    script.write_text(changed)
    done = subprocess.run(
        [sys.executable, str(script)],
        env={"FAKE_URL": server.url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["response"] == "TANGERINE-42"
    assert out["error"] is None
    assert out["root_model"] == "root-model"
    usage = out["usage"]["model_usage_summaries"]
    assert usage["openai/root-model"]["total_calls"] == 2
    assert usage["openai/sub-model"]["total_calls"] == 3
    assert {r.model for r in root_requests(server)} == {"root-model"}
    assert {r.model for r in sub_requests(server)} == {"sub-model"}
    assert all(r.headers.get("authorization") == "Bearer sk-local" for r in server.requests)


def test_the_official_dialect_shows_the_code_and_its_repl_output(serve) -> None:
    server = serve(
        ScriptedLM(root=[repl("print(len(context))"), ANSWER.replace("found[0]", "'7'")])
    )
    rlm = RLM(backend_kwargs={"model_name": "m", "base_url": server.url, "api_key": "k"})
    result = rlm.completion("0123456", root_prompt="How long?")
    assert result.response == "7"
    system, *_ = [m["content"] for m in root_requests(server)[0].messages]
    assert 'answer["ready"] = True' in system
    observation = root_requests(server)[1].last_user
    assert observation.startswith("Code executed:\n```python\nprint(len(context))\n```")
    assert "REPL output:\n7" in observation


def test_final_still_ends_an_official_run_and_custom_values_are_variables(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(f'{rate * 2}')")]))
    rlm = RLM(
        backend_kwargs={"model_name": "m", "base_url": server.url},
        custom_tools={"rate": 21},
    )
    assert rlm.completion("ctx").response == "42"


def test_limits_are_hard_and_reported_as_the_error(serve) -> None:
    server = serve(ScriptedLM(root=[repl("print(1)")]))
    rlm = RLM(backend_kwargs={"model_name": "m", "base_url": server.url}, max_iterations=2)
    result = rlm.completion("ctx", root_prompt="q")
    assert result.error is not None
    assert result.metadata["status"] != "ok"
    assert len(root_requests(server)) <= 3  # two turns, then one extraction request


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "portkey"}, "has no recursa provider"),
        ({"environment": "modal"}, "not available in recursa"),
        ({"backend_kwargs": {}}, "model_name"),
        ({"custom_sub_tools": {"f": print}}, "root RLM only"),
        ({"persistent": True, "custom_tools": {"rate": 2}}, "only functions"),
        ({"other_backends": ["openai", "openai"]}, "one sub-model"),
    ],
)
def test_what_recursa_cannot_map_is_one_clear_error(kwargs: dict, message: str) -> None:
    settings = {"backend_kwargs": {"model_name": "m", "base_url": "http://127.0.0.1:9/v1"}}
    with pytest.raises(ConfigError, match=message):
        RLM(**{**settings, **kwargs})


def test_a_persistent_rlm_keeps_its_repl_and_starts_each_answer_afresh(serve) -> None:
    server = serve(
        ScriptedLM(
            root=[
                repl("seen = context\nanswer['content'] = 'noted'\nanswer['ready'] = True"),
                repl("print(answer['ready'])"),  # a new question: the answer is not ready
                repl("answer['content'] = seen + '+' + context_1\nanswer['ready'] = True"),
            ]
        )
    )
    with RLM(backend_kwargs={"model_name": "m", "base_url": server.url}, persistent=True) as rlm:
        assert rlm.completion("first").response == "noted"
        assert rlm.completion("second").response == "first+second"
    assert "REPL output:\nFalse" in root_requests(server)[-1].last_user


def test_a_persistent_rlm_gives_each_finished_question_as_history_n(serve) -> None:
    server = serve(
        ScriptedLM(
            root=[
                repl("answer['content'] = 'one'\nanswer['ready'] = True"),
                repl(
                    "roles = [m['role'] for m in history_0]\n"
                    "said = history_0[-1]['content']\n"
                    "answer['content'] = f\"{roles[:2]} {'one' in said} {history == history_0}\"\n"
                    "answer['ready'] = True"
                ),
            ]
        )
    )
    with RLM(backend_kwargs={"model_name": "m", "base_url": server.url}, persistent=True) as rlm:
        assert rlm.completion("first", root_prompt="Say one").response == "one"
        second = rlm.completion("second", root_prompt="What did you say?")
    assert second.response == "['system', 'user'] True True"
