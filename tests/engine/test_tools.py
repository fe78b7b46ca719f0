"""Host tools end to end: callables exposed by name in the REPL, run on the host (never in
the sandbox), recorded as `tool_call` events, optionally charged to the budget, their
exceptions catchable by the model's code, and bad names refused before anything runs.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading

import pytest

from e2e_helpers import bwrap_in_use, observation_after, repl, root_requests
from recursa import RLM, ConfigError, PriceTable, Tool, tool
from recursa.testing import LMRequest, ScriptedLM

NOWHERE = "http://127.0.0.1:9/v1"


def unquoted(text: str) -> str:
    """Annotations without quotes: this module's are strings (`from __future__ import
    annotations`), which inspect.signature shows quoted."""
    return re.sub(r"'(\w+)'", r"\1", text)


def host_pid() -> int:
    """The process id of whoever runs this tool."""
    return os.getpid()


def read_file(path: str) -> str:
    """Read a file on the host."""
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def test_a_tool_runs_on_the_host_and_reads_what_the_sandbox_cannot(serve, tmp_path) -> None:
    secret = tmp_path / "host-only.txt"
    secret.write_text("only the host knows this", encoding="utf-8")
    server = serve(
        ScriptedLM(
            root=[
                repl(
                    f"""
                    import os
                    try:
                        with open({str(secret)!r}) as fh:
                            direct = fh.read()
                    except OSError as exc:
                        direct = type(exc).__name__
                    FINAL({{
                        "tool_pid": host_pid(),
                        "repl_pid": os.getpid(),
                        "via_tool": read_file({str(secret)!r}),
                        "direct": direct,
                    }})
                    """
                )
            ]
        )
    )
    rlm = RLM("openai/x", base_url=server.url, tools=[host_pid, read_file])

    result = rlm.run("What does the host know?", "ctx")

    assert result.status == "ok", result.error
    assert result.answer["tool_pid"] == os.getpid()  # ran in this very process
    assert result.answer["repl_pid"] != os.getpid()  # the model's code did not
    assert result.answer["via_tool"] == "only the host knows this"
    if bwrap_in_use():
        assert result.answer["direct"] in {"FileNotFoundError", "PermissionError"}


def test_each_tool_call_is_a_tool_call_event_with_arguments_result_and_cost(serve) -> None:
    def lookup(user_id: str, *, field: str = "plan") -> dict:
        """A user's record."""
        return {"id": user_id, field: "pro"}

    server = serve(
        ScriptedLM(root=[repl("a = lookup('u1')\nb = lookup('u2', field='tier')\nFINAL([a, b])")])
    )
    rlm = RLM("openai/x", base_url=server.url, tools=[tool(lookup, cost_usd=0.25)])

    result = rlm.run("q", "ctx")

    assert result.answer == [{"id": "u1", "plan": "pro"}, {"id": "u2", "tier": "pro"}]
    calls = [e for e in result.events if e.type == "tool_call"]
    assert [(e.name, e.rlm, e.depth, e.error, e.cost_usd) for e in calls] == [
        ("lookup", "0", 0, None, 0.25),
        ("lookup", "0", 0, None, 0.25),
    ]
    assert calls[0].arguments == '{"args": ["u1"], "kwargs": {}}'
    assert calls[1].arguments == '{"args": ["u2"], "kwargs": {"field": "tier"}}'
    assert "'u2'" in calls[1].result and "'tier'" in calls[1].result
    assert calls[0].to_dict()["type"] == "tool_call"
    # The events come between the block's start and its `block` event, in order.
    types = [e.type for e in result.events]
    assert types.index("tool_call") < types.index("block")


def test_a_charged_tool_counts_in_usage_by_tool_and_cost_but_not_as_an_llm_call(serve) -> None:
    server = serve(ScriptedLM(root=[repl("for _ in range(3):\n    ping()\nFINAL('done')")]))
    rlm = RLM(
        "openai/x", base_url=server.url, tools=[tool(lambda: "pong", name="ping", cost_usd=0.125)]
    )

    result = rlm.run("q", "ctx")

    assert result.status == "ok"
    assert result.usage["by_tool"] == {"ping": {"calls": 3, "cost_usd": 0.375}}
    assert result.usage["cost_usd"] == pytest.approx(0.375)  # the fake model is free
    assert result.usage["llm_calls"] == server.request_count == 1


def test_max_cost_refuses_a_tool_call_inside_the_repl_with_budget_exceeded(serve) -> None:
    ran: list[int] = []

    def pricey() -> str:
        ran.append(1)
        return "paid"

    server = serve(
        ScriptedLM(
            root=[
                repl(
                    """
                    first = pricey()
                    try:
                        pricey()
                        second = "allowed"
                    except BudgetExceeded as exc:
                        second = "refused: " + str(exc)
                    FINAL({"first": first, "second": second})
                    """
                )
            ]
        )
    )
    rlm = RLM(
        "openai/x",
        base_url=server.url,
        tools=[tool(pricey, cost_usd=0.3)],
        max_cost=0.5,
        prices=PriceTable.default().with_overrides({"openai/x": "1,1"}),
    )

    result = rlm.run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer["first"] == "paid"
    assert result.answer["second"] == (
        "refused: max_cost=$0.5 would be exceeded by tool pricey ($0.3 a call)"
    )
    assert ran == [1]  # the refused call never ran
    assert result.usage["by_tool"] == {"pricey": {"calls": 1, "cost_usd": 0.3}}
    assert 0.3 < result.usage["cost_usd"] <= 0.5
    assert len([e for e in result.events if e.type == "tool_call"]) == 1


def test_an_exception_a_tool_raises_can_be_caught_by_the_models_code(serve) -> None:
    def strict(value: int) -> int:
        """Only positive numbers."""
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value

    def broken() -> None:
        raise KeyError("no such record")

    server = serve(
        ScriptedLM(
            root=[
                repl(
                    """
                    caught = []
                    for call in (lambda: strict(-1), broken):
                        try:
                            call()
                        except Exception as exc:
                            caught.append([type(exc).__name__, str(exc)])
                    FINAL({"caught": caught, "after": strict(5)})
                    """
                )
            ]
        )
    )
    rlm = RLM("openai/x", base_url=server.url, tools=[strict, broken])

    result = rlm.run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer == {
        "caught": [
            ["ValueError", "-1 is negative"],
            ["LLMQueryError", "KeyError: 'no such record'"],
        ],
        "after": 5,
    }
    errors = [e.error for e in result.events if e.type == "tool_call"]
    assert errors == ["ValueError: -1 is negative", "KeyError: 'no such record'", None]


def test_an_uncaught_tool_exception_is_shown_to_the_model_and_the_run_goes_on(serve) -> None:
    def broken() -> None:
        raise RuntimeError("database down")

    server = serve(ScriptedLM(root=[repl("broken()"), repl("FINAL('recovered')")]))

    result = RLM("openai/x", base_url=server.url, tools=[broken]).run("q", "ctx")

    assert (result.status, result.answer) == ("ok", "recovered")
    told = observation_after(server, 0)
    assert "LLMQueryError: RuntimeError: database down" in told


async def test_async_tools_mappings_and_unserialisable_results_all_work(serve) -> None:
    host_thread = threading.get_ident()
    seen_threads: list[int] = []

    async def fetch(key: str) -> str:
        await asyncio.sleep(0)
        seen_threads.append(threading.get_ident())
        return key.upper()

    server = serve(ScriptedLM(root=[repl("FINAL([get('k'), when()])")]))
    rlm = RLM(
        "openai/x",
        base_url=server.url,
        tools={"get": fetch, "when": lambda: {1, 2}},  # a set is not JSON: sent as its str
    )

    result = await rlm.arun("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer == ["K", "{1, 2}"]
    assert seen_threads == [host_thread]  # a coroutine tool runs on the run's own loop


def test_the_system_prompt_lists_each_tool_with_its_signature_and_doc(serve) -> None:
    def lookup(user_id: str, verbose: bool = False) -> dict:
        """The user's record from our database.

        More detail that the model does not need.
        """
        return {}

    server = serve(ScriptedLM(root=[repl("FINAL(1)")]))

    result = RLM("openai/x", base_url=server.url, tools=[lookup, read_file]).run("q", "ctx")

    system = root_requests(server)[0].system
    tools = system.split("## Tools", 1)[1].strip().splitlines()[1:]
    assert [unquoted(line) for line in tools] == [
        "- `lookup(user_id: str, verbose: bool = False) -> dict: "
        "The user's record from our database.`",
        "- `read_file(path: str) -> str: Read a file on the host.`",
    ]
    (start,) = [e for e in result.events if e.type == "run_start"]
    assert start.settings["tools"] == ["lookup", "read_file"]


def test_without_tools_the_system_prompt_has_no_tools_section(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(1)")]))

    RLM("openai/x", base_url=server.url).run("q", "ctx")

    assert "## Tools" not in root_requests(server)[0].system


def test_tools_belong_to_the_root_and_are_not_in_a_child_rlms_repl(serve) -> None:
    def root(request: LMRequest) -> str:
        if "CHILD TASK" in request.messages[1]["content"]:
            return repl(
                "try:\n    ping()\n    FINAL('child had it')\n"
                "except NameError:\n    FINAL('child has no ping')"
            )
        return repl("FINAL([ping(), rlm_query('CHILD TASK', context='x')])")

    server = serve(ScriptedLM(root=root))
    rlm = RLM("openai/x", base_url=server.url, max_depth=2, tools={"ping": lambda: "pong"})

    result = rlm.run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer == ["pong", "child has no ping"]
    assert "## Tools" not in [r for r in root_requests(server) if r.turn == 0][-1].system


# ---- refused configurations -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "context",
        "history",
        "FINAL",
        "SUBMIT",
        "llm_query",
        "BudgetExceeded",
        "_hidden",
        "a-b",
        "1x",
    ],
)
def test_a_tool_name_that_is_reserved_or_not_an_identifier_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="cannot be a tool name"):
        RLM("openai/x", base_url=NOWHERE, tools={name: host_pid})
    with pytest.raises(ConfigError, match="cannot be a tool name"):
        tool(host_pid, name=name)


def test_an_empty_tool_name_is_refused_rather_than_replaced() -> None:
    with pytest.raises(ConfigError, match="cannot be a tool name"):
        RLM("openai/x", base_url=NOWHERE, tools={"": host_pid})


def test_two_tools_with_the_same_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="two tools have the same name"):
        RLM("openai/x", base_url=NOWHERE, tools=[host_pid, tool(read_file, name="host_pid")])


def test_a_tool_that_is_not_callable_is_refused() -> None:
    with pytest.raises(ConfigError, match="'answer' is not callable"):
        RLM("openai/x", base_url=NOWHERE, tools={"answer": 42})


def test_a_negative_tool_cost_is_refused() -> None:
    with pytest.raises(ConfigError, match="cost_usd must not be negative"):
        tool(host_pid, cost_usd=-0.01)


def test_a_tool_object_keeps_its_name_cost_and_description() -> None:
    made = tool(read_file, name="cat", cost_usd=0.5)

    assert isinstance(made, Tool)
    assert (made.name, made.cost_usd) == ("cat", 0.5)
    assert unquoted(made.description) == "(path: str) -> str: Read a file on the host."
