"""recursa through `llm` itself: `llm/MODEL_ID` is any model `llm` knows (here one that a
plugin registers in this process, as other `llm` plugins do), and `recursa_rlm` is offered
as a tool to models that use `llm`'s tool calling."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from e2e_helpers import repl
from extras import import_extra
from recursa import RLM
from recursa.errors import ConfigError
from recursa.testing import LMRequest, ScriptedLM, count_message_tokens, count_tokens

llm = import_extra("llm", "llm")

SCRIPT = ScriptedLM(
    root=[repl("print(llm_query('size: ' + str(len(context))))"), "FINAL(found it)"],
    sub=lambda req: "a sub answer",
)


class ScriptedLLMModel(llm.Model):
    """An `llm` model answered by a ScriptedLM, reporting usage as plugins do."""

    model_id = "recursa-test-scripted"
    seen: ClassVar[list[LMRequest]] = []

    class Options(llm.Options):
        max_tokens: int | None = None

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> Iterator[str]:
        messages = [
            {"role": m.role, "content": "".join(getattr(p, "text", "") for p in m.parts)}
            for m in prompt.messages
        ]
        request = LMRequest(messages, self.model_id, prompt.options.max_tokens, "openai")
        self.seen.append(request)
        text = str(SCRIPT(request))
        response.set_usage(input=count_message_tokens(messages), output=count_tokens(text))
        yield text


class ScriptedPlugin:
    @llm.hookimpl
    def register_models(self, register: Any) -> None:
        register(ScriptedLLMModel())


@pytest.fixture
def scripted_llm_model(tmp_path, monkeypatch) -> Iterator[type[ScriptedLLMModel]]:
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    ScriptedLLMModel.seen = []
    llm.plugins.pm.register(ScriptedPlugin(), name="recursa-test-scripted")
    yield ScriptedLLMModel
    llm.plugins.pm.unregister(name="recursa-test-scripted")


def test_root_and_sub_model_may_be_any_model_llm_knows(scripted_llm_model) -> None:
    rlm = RLM("llm/recursa-test-scripted", sub_model="llm/recursa-test-scripted", max_tokens=50_000)
    result = rlm.run("What is in it?", "some context text")
    assert (result.status, result.answer) == ("ok", "found it")
    seen = scripted_llm_model.seen
    assert [r.is_root for r in seen] == [True, False, True]
    assert seen[0].messages[0]["role"] == "system"  # the conversation went as messages
    assert all(r.max_tokens is not None for r in seen)  # the hard cap is carried
    mine = result.usage["by_model"]["llm/recursa-test-scripted"]
    assert mine["llm_calls"] == 3
    assert mine["input_tokens"] == sum(r.input_tokens for r in seen)


def test_an_unknown_llm_model_is_one_line_before_any_request(scripted_llm_model) -> None:
    with pytest.raises(ConfigError, match=r"^llm knows no model 'nope-model'"):
        RLM("llm/nope-model").run("q", "c")


def test_recursa_is_a_tool_for_llm_tool_calling(serve, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm"))
    tools = llm.get_tools()
    assert "recursa_rlm" in tools
    server = serve(ScriptedLM(root=[repl("print(context[:5])"), "FINAL(tool answer)"]))
    monkeypatch.setenv("RECURSA_MODEL", "openai/scripted")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("RECURSA_HOME", str(tmp_path / "home"))
    tool = tools["recursa_rlm"]
    assert tool.input_schema["required"] == ["question", "context"]
    assert tool.implementation("What does it say?", "hello world") == "tool answer"
    assert "hello" in server.requests[1].last_user  # the REPL read the context it was given
    monkeypatch.delenv("RECURSA_MODEL")
    with pytest.raises(ValueError, match="RECURSA_MODEL"):
        tool.implementation("q", "c")
