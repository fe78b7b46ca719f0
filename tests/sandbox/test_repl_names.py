"""The names the REPL gives model code are listed once (`sandbox/inside/names.py`): the
worker installs exactly those, and every name there is refused as a tool name."""

from __future__ import annotations

import pytest

from e2e_helpers import repl
from recursa import RLM, ConfigError
from recursa.sandbox.inside.names import RESERVED
from recursa.testing import ScriptedLM

NOWHERE = "http://127.0.0.1:9/v1"


def host_pid() -> int:
    """A tool for the refusal checks; never called."""
    return 0


@pytest.mark.parametrize("backend", ["subprocess", "local"])
def test_model_code_finds_exactly_the_listed_names_and_variables(serve, backend) -> None:
    server = serve(
        ScriptedLM(root=[repl("FINAL(sorted(n for n in globals() if not n.startswith('_')))")])
    )
    rlm = RLM("openai/x", base_url=server.url, sandbox=backend)

    result = rlm.run("Which names are there?", "ctx")

    assert result.status == "ok", result.error
    assert sorted(result.answer) == sorted(RESERVED)


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_every_listed_name_and_variable_is_refused_as_a_tool_name(name: str) -> None:
    with pytest.raises(ConfigError, match="cannot be a tool name"):
        RLM("openai/x", base_url=NOWHERE, tools={name: host_pid})


@pytest.mark.parametrize("name", ["context_0", "history_2"])
def test_a_numbered_variable_is_refused_as_a_tool_name(name: str) -> None:
    with pytest.raises(ConfigError, match="cannot be a tool name"):
        RLM("openai/x", base_url=NOWHERE, tools={name: host_pid})
