"""Recursion and a budget that cannot leak, end to end: real server, real workers, real CLI.

A root at max_depth 2 hands quarters of a 2 MB input to four child RLMs; the usage it
reports (tokens and provider-reported cost, by model and by depth) is what the server
reported. Cancellation, timeouts and SIGINT stop the whole tree, leave no worker process at
any depth and still report what was spent. Token and cost caps hold at the server; a child's
failure is an exception the parent's code can handle; one concurrency limit holds for the
whole tree.

Workers are found from /proc: the model's code writes a per-test tag into its worker's
/proc/self/comm, which works under bubblewrap (own pid namespace) and as a plain subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import (
    finish_cli,
    observation_after,
    one_json_object,
    prompt_chars,
    repl,
    run_cli,
    start_cli,
    worker_processes,
)
from recursa.core import prompts
from recursa.core.gateway import input_token_bound
from recursa.core.programs import RLM
from recursa.errors import ConfigError
from recursa.events import Event, RLMEnded, RunEnded
from recursa.lm.pricing import PriceTable
from recursa.testing import FakeLMServer, LMRequest, Reply, ScriptedLM, count_tokens

MODEL = "openai/x"
SUB_MODEL = "openai/small"
ROOT_COST, CHILD_COST, SUB_COST = 0.0125, 0.00375, 0.0005
"""What the server reports as the provider's cost of each kind of reply (USD)."""

# ---- helpers ------------------------------------------------------------------------------


def is_child_turn(request: LMRequest) -> bool:
    """A turn of a child RLM at depth 1 under max_depth 2 (its system prompt says so)."""
    return request.is_root and prompts.DEPTH_LIMIT in request.system


def is_root_turn(request: LMRequest) -> bool:
    """A turn of the root RLM (depth 0) under max_depth 2."""
    return request.is_root and prompts.DEPTH_CHILD in request.system


def tagged(tag: str) -> list[int]:
    """Live processes (zombies excluded) named `tag` or carrying it in their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "Z":
            continue
        if comm == tag or tag in cmdline:
            found.append(int(entry.name))
    return found


def my_workers() -> list[int]:
    """Worker processes started by this process (with bwrap: the bwrap wrappers)."""
    return [pid for pid, ppid in worker_processes().items() if ppid == os.getpid()]


def left_alive(tag: str, within: float = 5.0) -> list[int]:
    """The tagged processes, and workers of this process, still alive after `within` seconds
    (none: returns sooner). Blocks the calling thread on purpose: an event loop cannot
    finish anything meanwhile, so what is found was not ended by the run itself."""
    deadline = time.monotonic() + within
    while (alive := tagged(tag) + my_workers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique name for this test's workers; any left behind are killed afterwards."""
    value = "rq" + uuid.uuid4().hex[:12]  # comm holds at most 15 characters
    yield value
    for pid in tagged(value):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def mark(tag: str) -> str:
    """Code that names the worker running it `tag`."""
    return f"with open('/proc/self/comm', 'w') as fh:\n    fh.write({tag!r})\n"


def cli_run(server: FakeLMServer) -> list[str]:
    """`recursa run q` against `server` with the root model."""
    return ["run", "q", "--model", MODEL, "--base-url", server.url]


def check_usage_is_what_the_server_reported(usage: dict[str, Any], server: FakeLMServer) -> None:
    """Calls, tokens and cost: in total, by model and by depth, all from the server."""
    reported = server.usage
    assert usage["llm_calls"] == server.request_count
    assert usage["input_tokens"] == reported["input_tokens"]
    assert usage["output_tokens"] == reported["output_tokens"]
    assert usage["cost_usd"] == pytest.approx(reported["cost_usd"], abs=1e-9)
    by_model = {f"openai/{name}": totals for name, totals in server.by_model.items()}
    assert set(usage["by_model"]) == set(by_model)
    for model, totals in by_model.items():
        mine = usage["by_model"][model]
        assert mine["input_tokens"] == totals["input_tokens"]
        assert mine["output_tokens"] == totals["output_tokens"]
        assert mine["cost_usd"] == pytest.approx(totals["cost_usd"], abs=1e-9)
    for key in ("by_model", "by_depth"):
        for field in ("llm_calls", "input_tokens", "output_tokens"):
            assert sum(t[field] for t in usage[key].values()) == usage[field], (key, field)
        assert sum(t["cost_usd"] for t in usage[key].values()) == pytest.approx(
            usage["cost_usd"], abs=1e-9
        )


# ---- max_depth 2 over a 2 MB input -----------------------------------------------------------

INPUT_CHARS = 2_000_000
LAUNCH_CODE = "ZX-4471-QUILL"
QUESTION = "What is the launch code?"
CHILD_PROMPT = "Find the launch code in your context; reply with it, or NONE."

ROOT_FAN_OUT = repl(
    f"""
    quarter = len(context) // 4
    quarters = [context[i * quarter:(i + 1) * quarter] for i in range(3)]
    quarters.append(context[3 * quarter:])
    answers = rlm_query_batched([{CHILD_PROMPT!r}] * 4, contexts=quarters)
    print(answers)
    """
)
ROOT_FINISH = repl(
    """
    sizes = [int(a.split(":", 1)[0]) for a in answers]
    codes = [a.split(":", 1)[1] for a in answers if not a.endswith(":NONE")]
    result = {"code": codes[0] if len(codes) == 1 else codes, "sizes": sizes}
    FINAL_VAR("result")
    """
)
CHILD_TURN = repl(
    r"""
    import re
    hit = re.search(r"the launch code is (\S+)", context)
    note = llm_query("Confirm this line: " + (hit.group(0) if hit else "no line found"))
    FINAL(f"{len(context)}:{hit.group(1) if hit else 'NONE'}")
    """
)


@pytest.fixture(scope="module")
def two_mb(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """2 MB of log lines with the launch code planted once, well inside the third quarter."""
    lines = [f"{i:08d} routine telemetry frame, all systems nominal" for i in range(36_000)]
    lines[25_000] = f"{25_000:08d} NOTE: the launch code is {LAUNCH_CODE}"
    text = "\n".join(lines) + "\n"
    text += "." * (INPUT_CHARS - len(text))
    assert len(text) == INPUT_CHARS and text.count(LAUNCH_CODE) == 1
    path = tmp_path_factory.mktemp("two_mb") / "log.txt"
    path.write_text(text, encoding="utf-8")
    return text, path


def _depth_2_model() -> ScriptedLM:
    def root(request: LMRequest) -> Reply:
        if is_child_turn(request):
            return Reply(CHILD_TURN, cost_usd=CHILD_COST)
        return Reply([ROOT_FAN_OUT, ROOT_FINISH][min(request.turn, 1)], cost_usd=ROOT_COST)

    def sub(request: LMRequest) -> Reply:
        return Reply("confirmed: " + request.last_user[-40:], cost_usd=SUB_COST)

    return ScriptedLM(root=root, sub=sub)


def _check_depth_2_run(data: dict[str, Any], server: FakeLMServer) -> None:
    assert data["status"] == "ok", data
    quarter = INPUT_CHARS // 4
    assert data["answer"] == {
        "code": LAUNCH_CODE,
        "sizes": [quarter, quarter, quarter, INPUT_CHARS - 3 * quarter],
    }
    requests = server.requests
    roots = [r for r in requests if is_root_turn(r)]
    children = [r for r in requests if is_child_turn(r)]
    subs = [r for r in requests if not r.is_root]
    assert (len(roots), len(children), len(subs)) == (2, 4, 4)
    # Neither the root nor a child ever had the text in its prompt.
    assert max(prompt_chars(r) for r in roots + children) < 20_000
    assert {r.model for r in roots + children} == {"x"}
    assert {r.model for r in subs} == {"small"}
    assert sum(LAUNCH_CODE in r.last_user for r in subs) == 1

    usage = data["usage"]
    check_usage_is_what_the_server_reported(usage, server)
    assert set(usage["by_depth"]) == {"0", "1"}
    depth0, depth1 = usage["by_depth"]["0"], usage["by_depth"]["1"]
    assert depth0["llm_calls"] == 2
    assert depth1["llm_calls"] == 8  # four child turns and their four sub-queries
    assert depth0["input_tokens"] == sum(r.input_tokens for r in roots)
    assert depth1["input_tokens"] == sum(r.input_tokens for r in children + subs)
    assert depth0["cost_usd"] == pytest.approx(2 * ROOT_COST)
    assert depth1["cost_usd"] == pytest.approx(4 * CHILD_COST + 4 * SUB_COST)
    assert usage["cost_usd"] == pytest.approx(2 * ROOT_COST + 4 * CHILD_COST + 4 * SUB_COST)
    assert usage["by_model"][SUB_MODEL]["llm_calls"] == 4
    assert usage["by_model"][MODEL]["llm_calls"] == 6


def test_depth_2_root_hands_quarters_of_2mb_to_four_children_via_python_api(
    serve, two_mb: tuple[str, Path]
) -> None:
    text, _ = two_mb
    server = serve(_depth_2_model())

    result = RLM(MODEL, sub_model=SUB_MODEL, base_url=server.url, max_depth=2).run(QUESTION, text)

    _check_depth_2_run({**result.to_dict(), "answer": result.answer}, server)
    children = [e for e in result.events if isinstance(e, RLMEnded) and e.depth == 1]
    assert len(children) == 4
    assert {e.status for e in children} == {"ok"}


def test_depth_2_root_hands_quarters_of_2mb_to_four_children_via_cli(
    serve, two_mb: tuple[str, Path]
) -> None:
    _, path = two_mb
    server = serve(_depth_2_model())

    run = run_cli(
        [
            "run",
            QUESTION,
            "--context",
            str(path),
            "--model",
            MODEL,
            "--sub-model",
            SUB_MODEL,
            "--base-url",
            server.url,
            "--max-depth",
            "2",
            "--json",
            "--quiet",
        ]
    )

    assert run.rc == 0, run.err
    _check_depth_2_run(one_json_object(run.out), server)


# ---- cancellation, timeout and SIGINT in the middle of a fan-out ------------------------------

SLOW_SUB_S = 8.0
"""How long the sub-model takes: far longer than any test waits for it."""


def _stuck_fan_out(tag: str) -> ScriptedLM:
    """Root -> four children, each tagging its worker and waiting on a slow sub-query."""
    root_code = (
        mark(tag) + "answers = rlm_query_batched(['look'] * 4, contexts=['a', 'b', 'c', 'd'])"
    )
    child_code = mark(tag) + "print(llm_query('slow question about ' + context))"

    def root(request: LMRequest) -> str:
        if request.last_user == prompts.EXTRACT:
            return "FINAL(out of turns)"
        if is_child_turn(request):
            return repl(child_code) if request.turn == 0 else "FINAL(child done)"
        return repl(root_code) if request.turn == 0 else "FINAL(root done)"

    def sub(request: LMRequest) -> Reply:
        return Reply("slow answer", delay=SLOW_SUB_S)

    return ScriptedLM(root=root, sub=sub)


def _mid_fan_out(server: FakeLMServer, tag: str) -> bool:
    """The root and its four children are up, and the four sub-queries are at the server."""
    return len(tagged(tag)) == 5 and server.in_flight == 4


def _check_partial_usage(usage: dict[str, Any], server: FakeLMServer) -> None:
    """What a stopped run reports: the requests the server saw, the tokens it reported."""
    check_usage_is_what_the_server_reported(usage, server)
    assert usage["llm_calls"] == 9  # one root turn, four child turns, four sub-queries
    assert usage["by_depth"]["0"]["llm_calls"] == 1
    assert usage["by_depth"]["1"]["llm_calls"] == 8


@pytest.mark.parametrize("sandbox", ["auto", "subprocess"])
def test_cancelling_arun_mid_fan_out_leaves_no_worker_at_any_depth_and_reports_usage(
    serve, tag: str, sandbox: str
) -> None:
    server = serve(_stuck_fan_out(tag))
    ended: list[RunEnded] = []

    def on_event(event: Event) -> None:
        if isinstance(event, RunEnded):
            ended.append(event)

    rlm = RLM(MODEL, base_url=server.url, max_depth=2, sandbox=sandbox, on_event=on_event)

    async def main() -> list[int]:
        task = asyncio.create_task(rlm.arun("q", "ctx"))
        deadline = time.monotonic() + 30
        while not _mid_fan_out(server, tag):
            assert not task.done(), task.result()
            assert time.monotonic() < deadline, "the run never reached its fan-out"
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Checked before this loop may run anything else: arun itself must have ended them.
        return left_alive(tag)

    assert asyncio.run(main()) == []
    assert len(ended) == 1
    assert ended[0].status == "error"
    _check_partial_usage(ended[0].usage, server)


def test_timeout_mid_fan_out_is_status_timeout_with_partial_usage_and_no_worker_left(
    serve, tag: str
) -> None:
    server = serve(_stuck_fan_out(tag))

    result = RLM(MODEL, base_url=server.url, max_depth=2, timeout=3.0).run("q", "ctx")

    alive = left_alive(tag)
    assert result.status == "timeout", result.error
    assert alive == []
    _check_partial_usage(result.usage, server)


def test_cli_timeout_mid_fan_out_exits_3_with_partial_usage_and_no_worker_left(
    serve, tag: str
) -> None:
    server = serve(_stuck_fan_out(tag))

    run = run_cli([*cli_run(server), "--max-depth", "2", "--timeout", "3", "--json", "--quiet"])

    assert run.rc == 3, run.err
    data = one_json_object(run.out)
    assert data["status"] == "timeout"
    _check_partial_usage(data["usage"], server)
    assert left_alive(tag) == []


def test_sigint_to_cli_with_json_mid_fan_out_prints_one_object_with_partial_usage(
    serve, tag: str
) -> None:
    server = serve(_stuck_fan_out(tag))
    proc = start_cli([*cli_run(server), "--max-depth", "2", "--json", "--quiet"])
    try:
        deadline = time.monotonic() + 30
        while not _mid_fan_out(server, tag):
            assert proc.poll() is None, "the CLI ended before its fan-out"
            assert time.monotonic() < deadline, "the run never reached its fan-out"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        run = finish_cli(proc, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert run.rc == 1, run.err
    assert "Traceback" not in run.err
    data = one_json_object(run.out)
    assert data["status"] == "error"
    _check_partial_usage(data["usage"], server)
    assert left_alive(tag) == []


# ---- a child's failure, and rlm_query at the depth limit --------------------------------------


def test_a_child_whose_first_request_gets_http_400_is_an_exception_the_parent_catches(
    serve,
) -> None:
    catch = """
    try:
        rlm_query("child task", context="some text")
        outcome = "no exception"
    except Exception as exc:
        outcome = f"caught {type(exc).__name__}: {exc}"
    print(outcome)
    """

    def root(request: LMRequest) -> str | Reply:
        if is_child_turn(request):
            return Reply(status=400, error_body="the child's request is malformed")
        return repl(catch) if request.turn == 0 else repl("FINAL(outcome)")

    server = serve(ScriptedLM(root=root))

    result = RLM(MODEL, base_url=server.url, max_depth=2).run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer.startswith("caught ")
    assert "400" in result.answer and "malformed" in result.answer
    assert result.answer in observation_after(server, 0)  # the parent printed it, went on
    assert [is_child_turn(r) for r in server.requests] == [False, True, False]
    check_usage_is_what_the_server_reported(result.usage, server)
    assert result.usage["by_depth"]["1"]["llm_calls"] == 1


def test_a_failed_child_in_a_batch_is_an_error_item_and_the_others_answer(serve) -> None:
    fan_out = """
    answers = rlm_query_batched(["task 0", "task 1", "task 2"], contexts=["a", "b", "c"])
    FINAL(answers)
    """

    def root(request: LMRequest) -> str | Reply:
        if is_child_turn(request):
            if "Question: task 1" in request.messages[1]["content"]:
                return Reply(status=400, error_body="child 1 rejected")
            return repl("FINAL('child saw ' + context)")
        return repl(fan_out)

    server = serve(ScriptedLM(root=root))

    result = RLM(MODEL, base_url=server.url, max_depth=2).run("q", "ctx")

    assert result.status == "ok", result.error
    first, failed, last = result.answer
    assert (first, last) == ("child saw a", "child saw c")
    assert failed.startswith("[error]") and "child 1 rejected" in failed
    check_usage_is_what_the_server_reported(result.usage, server)


def test_rlm_query_at_max_depth_1_is_one_plain_sub_query_of_prompt_then_context(serve) -> None:
    prompt = "Summarise the following notes."
    context = "alpha: the meeting moved to Tuesday\nbeta: bring the slides"
    code = f"""
    one = rlm_query({prompt!r}, context={context!r})
    FINAL(one)
    """
    server = serve(ScriptedLM(root=[repl(code)], sub=lambda r: "a summary"))

    result = RLM(MODEL, sub_model=SUB_MODEL, base_url=server.url, max_depth=1).run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer == "a summary"
    assert len(server.requests) == 2
    leaf = server.requests[1]
    assert len(leaf.messages) == 1
    assert leaf.messages[0]["role"] == "user"
    assert not leaf.is_root  # no system message
    content = leaf.messages[0]["content"]
    assert content.startswith(prompt) and content.endswith(context)
    assert len(content) - len(prompt) - len(context) <= 2  # a separator, nothing else
    assert leaf.model == "small"  # the sub-model
    assert set(result.usage["by_depth"]) == {"0"}
    check_usage_is_what_the_server_reported(result.usage, server)


# ---- max_tokens and max_cost ------------------------------------------------------------------

LONG_ANSWER = "lorem ipsum dolor sit amet. " * 15  # 420 characters: 105 tokens
ONE_BY_ONE = repl(
    """
    got = []
    try:
        for i in range(1000):
            got.append(llm_query(f"question {i}"))
    except BudgetExceeded as exc:
        print("stopped after", len(got), "answers:", exc)
    """
)


def _one_by_one_model() -> ScriptedLM:
    return ScriptedLM(root=[ONE_BY_ONE, repl("FINAL(len(got))")], sub=lambda r: LONG_ANSWER)


def test_small_max_tokens_stops_the_run_without_reporting_more_tokens_than_the_cap(
    serve,
) -> None:
    cap = 5_000  # the root prompt alone reserves its ~3,300 UTF-8 bytes
    server = serve(_one_by_one_model())

    run = run_cli([*cli_run(server), "--max-tokens", str(cap), "--json", "--quiet"])

    assert run.rc == 3, run.err
    data = one_json_object(run.out)
    assert data["status"] == "budget_exhausted"
    usage = data["usage"]
    assert usage["input_tokens"] + usage["output_tokens"] <= cap
    check_usage_is_what_the_server_reported(usage, server)
    # Every request carried an output cap, and the last sub-query was squeezed by it.
    assert all(r.max_tokens is not None for r in server.requests)
    subs = [r for r in server.requests if not r.is_root]
    assert len(subs) >= 5
    assert subs[-1].max_tokens < count_tokens(LONG_ANSWER)


def test_max_tokens_holds_for_a_concurrent_batch_at_depth_2(serve) -> None:
    cap = 12_000  # each root prompt reserves its ~3,300 UTF-8 bytes
    fan_out = repl(
        """
        answers = rlm_query_batched(["dig"] * 4, contexts=["w", "x", "y", "z"])
        FINAL(answers)
        """
    )
    batch = repl("FINAL(llm_query_batched([f'item {i}' for i in range(20)]))")

    def root(request: LMRequest) -> str:
        return batch if is_child_turn(request) else fan_out

    server = serve(ScriptedLM(root=root, sub=lambda r: LONG_ANSWER), latency=0.01)

    result = RLM(MODEL, base_url=server.url, max_depth=2, max_tokens=cap).run("q", "ctx")

    usage = result.usage
    assert usage["input_tokens"] + usage["output_tokens"] <= cap
    check_usage_is_what_the_server_reported(usage, server)
    assert any(not r.is_root for r in server.requests)


def test_max_cost_with_a_given_price_stops_the_run_within_the_cap(serve) -> None:
    cap = 5.0  # at $1000 per million tokens, 5,000 tokens (the root prompt reserves ~3,300)
    server = serve(_one_by_one_model())

    run = run_cli(
        [*cli_run(server), "--price", f"{MODEL}=1000,1000", "--max-cost", str(cap), "--json"]
    )

    assert run.rc == 3, run.err
    data = one_json_object(run.out)
    assert data["status"] == "budget_exhausted"
    usage = data["usage"]
    assert usage["cost_usd"] <= cap
    assert usage["cost_usd"] == pytest.approx(
        (usage["input_tokens"] + usage["output_tokens"]) * 0.001
    )
    assert usage["cost_usd"] > cap / 2  # the budget was spent, not refused up front
    assert usage["llm_calls"] == server.request_count
    assert usage["input_tokens"] == server.usage["input_tokens"]
    assert usage["output_tokens"] == server.usage["output_tokens"]


@pytest.mark.parametrize(
    "flags, unknown",
    [
        (["--model", "openai/no-such-model"], "openai/no-such-model"),
        (
            ["--model", MODEL, "--price", f"{MODEL}=1,2", "--sub-model", "openai/unpriced-sub"],
            "openai/unpriced-sub",
        ),
    ],
    ids=["root_model", "sub_model"],
)
def test_max_cost_with_a_model_of_unknown_price_exits_2_before_any_request(
    serve, flags: list[str], unknown: str
) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('x')")]))

    run = run_cli(["run", "q", "--base-url", server.url, "--max-cost", "1", *flags])

    assert run.rc == 2, run.err
    assert run.out == ""
    assert "Traceback" not in run.err
    assert len(run.err_lines) == 1
    line = run.err_lines[0]
    assert line.startswith("recursa: error: ")
    assert unknown in line and "--price" in line
    assert server.request_count == 0


def test_max_cost_with_a_model_of_unknown_price_is_refused_by_the_python_api(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('x')")]))

    with pytest.raises(ConfigError, match="--price"):
        RLM("openai/no-such-model", base_url=server.url, max_cost=1.0)
    assert server.request_count == 0


# ---- a squeezed multi-message root turn stays within the cap ----------------------------------


class CapExceeded(AssertionError):
    """The reported usage passed the cap."""


# Two replies of 4k+1 characters before the squeezed turn: an estimate that rounded all
# characters down once (instead of each message up, as the server counts) would undercount
# this turn and let the squeezed output pass the cap.
SQUEEZE_REPLIES = [repl("x = 1"), repl("y = 2"), "z" * 4000]
assert all(len(r) % 4 == 1 for r in SQUEEZE_REPLIES[:2])


def _squeeze_model() -> ScriptedLM:
    return ScriptedLM(root=[*SQUEEZE_REPLIES, repl("FINAL('done')")])


def _before_the_squeeze(serve) -> tuple[int, int, int]:
    """From a run without limits: (tokens of turns 0 and 1, the bound reserved for turn 2's
    input, turn 2's input as the server counts it)."""
    probe = serve(_squeeze_model())
    assert RLM(MODEL, base_url=probe.url).run("q", "ctx").status == "ok"
    first, second, third = probe.requests[:3]
    spent = sum(
        r.input_tokens + count_tokens(t)
        for r, t in zip((first, second), SQUEEZE_REPLIES[:2], strict=True)
    )
    return spent, input_token_bound(third.messages), third.input_tokens


def test_max_tokens_holds_when_a_multi_message_root_turn_is_squeezed(serve) -> None:
    spent, estimate, actual = _before_the_squeeze(serve)
    assert estimate >= actual  # the estimate never undercounts what the server counts
    cap = spent + estimate + 50  # turn 2 may then send at most 50 output tokens
    server = serve(_squeeze_model())

    result = RLM(MODEL, base_url=server.url, max_tokens=cap).run("q", "ctx")

    assert result.status == "budget_exhausted", result.error
    assert server.requests[2].max_tokens == 50
    check_usage_is_what_the_server_reported(result.usage, server)
    total = result.usage["input_tokens"] + result.usage["output_tokens"]
    if total > cap:
        raise CapExceeded(f"reported {total} tokens under max_tokens={cap}")


def test_max_cost_holds_when_a_multi_message_root_turn_is_squeezed(serve) -> None:
    spent, estimate, actual = _before_the_squeeze(serve)
    assert estimate >= actual
    per_token = 0.001  # $1000 per million tokens, in and out
    cap = (spent + estimate + 50.5) * per_token  # turn 2 may then send 50 output tokens
    prices = PriceTable().with_overrides({MODEL: "1000,1000"})
    server = serve(_squeeze_model())

    result = RLM(MODEL, base_url=server.url, max_cost=cap, prices=prices).run("q", "ctx")

    assert result.status == "budget_exhausted", result.error
    assert server.requests[2].max_tokens == 50
    cost = result.usage["cost_usd"]
    tokens = result.usage["input_tokens"] + result.usage["output_tokens"]
    assert cost == pytest.approx(tokens * per_token)
    if cost > cap:
        raise CapExceeded(f"reported ${cost} under max_cost=${cap}")


def test_max_cost_refuses_sub_queries_to_a_model_of_unknown_price(serve) -> None:
    code = """
    try:
        print(llm_query("hi", model="openai/unpriced"))
    except Exception as exc:
        print("refused:", type(exc).__name__, exc)
    """
    server = serve(ScriptedLM(root=[repl(code), repl("FINAL('done')")], sub=lambda r: LONG_ANSWER))
    prices = PriceTable().with_overrides({MODEL: "1000,1000"})

    result = RLM(MODEL, base_url=server.url, max_cost=5.0, prices=prices).run("q", "ctx")

    assert result.status == "ok", result.error
    unpriced = [r for r in server.requests if r.model == "unpriced"]
    if unpriced:
        raise CapExceeded(
            f"{len(unpriced)} request(s) to a model of unknown price were sent under max_cost; "
            f"its usage for them: {result.usage['by_model'].get('openai/unpriced')}"
        )
    assert "refused" in observation_after(server, 0)


@pytest.mark.parametrize("cap", [4, 13, 30])
def test_max_llm_calls_holds_for_the_whole_tree_of_children_and_their_batches(
    serve, cap: int
) -> None:
    fan_out = repl(
        """
        answers = rlm_query_batched(["dig"] * 4, contexts=["w", "x", "y", "z"])
        FINAL(answers)
        """
    )
    batch = repl("FINAL(llm_query_batched([context + str(i) for i in range(10)]))")

    def root(request: LMRequest) -> str:
        return batch if is_child_turn(request) else fan_out

    server = serve(ScriptedLM(root=root, sub=lambda r: "ok"), latency=0.01)

    result = RLM(MODEL, base_url=server.url, max_depth=2, max_llm_calls=cap).run("q", "ctx")

    assert result.status == "ok", result.error
    assert server.request_count == cap  # 1 + 4 + 40 = 45 wanted; the cap allowed `cap`
    check_usage_is_what_the_server_reported(result.usage, server)
    assert len(result.answer) == 4  # every child has its item, answered or "[error] ..."
    refused = [a for a in result.answer if a.startswith("[error]")]
    assert all("budget" in a or "max_llm_calls" in a for a in refused)


class RefusedWithBudgetLeft(AssertionError):
    """A request was refused although what had been spent left ample room for it."""


def test_max_tokens_refuses_batch_items_only_when_the_spent_budget_leaves_no_room(serve) -> None:
    cap = 20_000
    batch = repl("FINAL(llm_query_batched([f'item {i}' for i in range(20)]))")
    server = serve(ScriptedLM(root=[batch], sub=lambda r: LONG_ANSWER), latency=0.01)

    result = RLM(MODEL, base_url=server.url, max_tokens=cap).run("q", "ctx")

    assert result.status == "ok", result.error
    usage = result.usage
    spent = usage["input_tokens"] + usage["output_tokens"]
    assert spent <= cap
    check_usage_is_what_the_server_reported(usage, server)
    refused = [a for a in result.answer if a.startswith("[error]")]
    # 20 answers of ~115 tokens each and a ~1,000-token root turn: about 3,300 of 20,000.
    if refused:
        raise RefusedWithBudgetLeft(
            f"{len(refused)} of 20 items refused with {spent:,} of {cap:,} tokens spent: "
            f"{refused[0][:160]}"
        )


# ---- one concurrency limit for the whole tree -------------------------------------------------


def test_concurrency_limit_holds_for_the_whole_tree_and_is_reached(serve) -> None:
    limit = 5
    fan_out = repl(
        """
        answers = rlm_query_batched(["dig"] * 4, contexts=["w", "x", "y", "z"])
        FINAL(answers)
        """
    )
    batch = repl("FINAL(str(len(llm_query_batched([context + str(i) for i in range(10)]))))")

    def root(request: LMRequest) -> str:
        return batch if is_child_turn(request) else fan_out

    server = serve(ScriptedLM(root=root, sub=lambda r: "ok"), latency=0.05)

    result = RLM(MODEL, base_url=server.url, max_depth=2, concurrency=limit).run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer == ["10"] * 4
    assert len([r for r in server.requests if not r.is_root]) == 40
    assert server.max_in_flight <= limit
    assert server.max_in_flight == limit
    assert result.usage["by_depth"]["1"]["llm_calls"] == 44
