"""`recursa mcp` end to end: the MCP SDK's own stdio client starts the real command and calls
its `ask` tool; a FakeLMServer is the model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e_helpers import RECURSA, host_env
from extras import import_extra
from recursa.testing import FakeLMServer, ScriptedLM
from recursa.trace.store import RunStore
from serve_helpers import SECRET, Scenarios, make_haystack

import_extra("mcp", "mcp")

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402


def _result(call: Any) -> dict[str, Any]:
    """The tool's returned object: structured content, else the JSON of its text."""
    if getattr(call, "structuredContent", None):
        return dict(call.structuredContent)
    return json.loads(call.content[0].text)


async def _session(args: list[str], env: dict[str, str], body: Callable[..., Any]) -> Any:
    params = StdioServerParameters(command=RECURSA, args=["mcp", *args], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return await body(session)


async def test_mcp_client_calls_ask_over_stdio_on_a_file_a_directory_and_text(
    serve: Callable[..., FakeLMServer], tmp_path: Path
) -> None:
    fake = serve(ScriptedLM(root=Scenarios()))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "big.log").write_text(make_haystack())
    home = tmp_path / "home"
    env = host_env(RECURSA_HOME=str(home))
    args = ["--model", "openai/scripted", "--base-url", fake.url, "--max-llm-calls", "5"]

    async def body(session: Any) -> list[Any]:
        tools = (await session.list_tools()).tools
        ask = next(t for t in tools if t.name == "ask")
        assert {"question", "path", "text"} <= set(ask.inputSchema["properties"])
        question = "[haystack] What is the vault passphrase?"
        return [
            await session.call_tool("ask", {"question": question, "path": str(logs / "big.log")}),
            await session.call_tool("ask", {"question": question, "path": str(logs)}),
            await session.call_tool(
                "ask", {"question": question, "text": f"the passphrase is {SECRET}\n"}
            ),
            await session.call_tool("ask", {"question": question, "path": str(tmp_path / "no")}),
        ]

    over_file, over_dir, over_text, missing = await _session(args, env, body)
    for call in (over_file, over_text):
        assert not call.isError, call.content
        result = _result(call)
        assert (result["answer"], result["status"], result["iterations"]) == (SECRET, "ok", 2)
        assert result["usage"]["llm_calls"] == 2 and result["usage"]["input_tokens"] > 0
    assert not over_dir.isError and _result(over_dir)["status"] == "ok"
    # The file and the directory stayed in the REPL (the short text's preview shows it all).
    assert SECRET not in json.dumps([r.messages for r in fake.requests[:4]])
    assert missing.isError and "not a file or directory" in missing.content[0].text
    stored = RunStore(home / "runs.db").get(_result(over_file)["run_id"])
    assert (stored.kind, stored.answer) == ("mcp", SECRET)


async def test_mcp_ask_refuses_paths_outside_allow_path_and_caps_limits(
    serve: Callable[..., FakeLMServer], tmp_path: Path
) -> None:
    fake = serve(ScriptedLM(root=Scenarios()))
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "private.txt").write_text(f"the passphrase is {SECRET}\n")
    env = host_env(RECURSA_HOME=str(tmp_path / "home"))
    args = ["--model", "openai/scripted", "--base-url", fake.url]
    args += ["--allow-path", str(allowed), "--max-llm-calls", "2"]

    async def body(session: Any) -> list[Any]:
        outside = await session.call_tool(
            "ask", {"question": "[haystack] q", "path": str(allowed / ".." / "private.txt")}
        )
        capped = await session.call_tool(
            "ask", {"question": "[forever] q", "text": "abc " * 50, "max_llm_calls": 100}
        )
        return [outside, capped]

    outside, capped = await _session(args, env, body)
    assert outside.isError and "--allow-path" in outside.content[0].text
    assert fake.request_count == 2  # only the capped run reached the model
    result = _result(capped)
    assert result["status"] == "budget_exhausted" and result["usage"]["llm_calls"] == 2
