"""The `llm` plugin end to end: the `llm` command installed in the test environment (the
plugin is registered by recursa's entry point) answers through recursa; a FakeLMServer is
the model. LLM_USER_PATH keeps llm's keys and logs in the test's own directory."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e_helpers import host_env, observation_after
from extras import needs_extra
from recursa.testing import FakeLMServer, ScriptedLM
from serve_helpers import SECRET, Scenarios, make_haystack

pytestmark = needs_extra("llm", "llm")

LLM = str(Path(sys.executable).with_name("llm"))


def llm_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LLM, *args], capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL
    )


def test_llm_command_answers_through_the_plugin_with_fragments_and_attachments_as_context(
    serve: Callable[..., FakeLMServer], tmp_path: Path
) -> None:
    fake = serve(ScriptedLM(root=Scenarios()))
    notes = tmp_path / "notes.txt"
    notes.write_text("Nothing to see in these notes.\n")
    haystack = tmp_path / "haystack.log"
    haystack.write_text(make_haystack())
    env = host_env(
        LLM_USER_PATH=str(tmp_path / "llm"),
        RECURSA_HOME=str(tmp_path / "home"),
        RECURSA_LLM_MODELS="openai/scripted",
        OPENAI_BASE_URL=fake.url,
    )
    done = llm_cli(
        [
            *("-m", "recursa/openai/scripted", "-o", "max_llm_calls", "5"),
            *("-f", str(notes), "--at", str(haystack), "text/plain"),
            "[haystack] What is the vault passphrase?",
        ],
        env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == SECRET
    # The fragment and the attachment are the two contexts, in the REPL, never in a prompt.
    assert "list 2" in observation_after(fake, 0)
    assert SECRET not in json.dumps([r.messages for r in fake.requests])


def test_llm_python_api_reports_recursa_usage_and_takes_limits_as_options(
    serve: Callable[..., FakeLMServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = serve(ScriptedLM(root=Scenarios()))
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    monkeypatch.setenv("RECURSA_LLM_MODELS", "openai/scripted")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    import llm  # here, not at collection: importing llm loads every installed plugin

    model = llm.get_model("recursa/openai/scripted")
    response = model.prompt(
        "[haystack] What is the vault passphrase?", fragments=[make_haystack(200_000)]
    )
    assert response.text() == SECRET
    usage = response.usage()
    assert (usage.input, usage.output) == (fake.usage["input_tokens"], fake.usage["output_tokens"])
    assert response.response_json["status"] == "ok"
    assert response.response_json["usage"]["llm_calls"] == 2

    capped = model.prompt("[forever] Look.", fragments=["abc " * 50], max_llm_calls=2)
    capped.text()
    assert capped.response_json["status"] == "budget_exhausted"
    assert capped.response_json["usage"]["llm_calls"] == 2


def test_llm_plugin_reports_a_failed_run_as_a_model_error(
    serve: Callable[..., FakeLMServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = serve(ScriptedLM(root=Scenarios()), fail_first=100, fail_status=401)
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    monkeypatch.setenv("RECURSA_MODEL", "openai/scripted")  # registered as recursa/...
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    import llm

    response = llm.get_model("recursa/openai/scripted").prompt("[haystack] q")
    with pytest.raises(llm.ModelError, match="recursa: the run failed"):
        response.text()
