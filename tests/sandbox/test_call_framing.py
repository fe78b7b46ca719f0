"""Calls from model code whose prompts are large travel as the frame's body, one prompt at a
time: the host must get every prompt exactly (ASCII or not, empty or long, a list or one
string) on every backend, and a worker that lies about the layout is a protocol violation.
A batch's prompts are read off the channel as each sub-query's turn comes; whatever the
handler does not take is skipped, so the channel stays in step."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from recursa import RLM
from recursa.sandbox import (
    ContextPayload,
    bwrap_problem,
    landlock_problem,
    make_sandbox,
)
from recursa.sandbox.base import StreamedTexts
from recursa.sandbox.inside import framing
from recursa.testing import LMRequest, ScriptedLM

BACKENDS = [
    "subprocess",
    "local",
    pytest.param(
        "bwrap", marks=pytest.mark.skipif(bwrap_problem() is not None, reason=str(bwrap_problem()))
    ),
    pytest.param(
        "landlock",
        marks=pytest.mark.skipif(landlock_problem() is not None, reason=str(landlock_problem())),
    ),
]

PROMPTS_CODE = """
prompts = ["a" * 1_100_000, "", "é€😀" * 30_000, "line\\n" * 5, "z"]
replies = llm_query_batched(prompts)
single = llm_query("ü" * 100_000)
print(replies, single)
"""


def run_block(backend: str, code: str) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
    """Run `code` in a fresh worker; (its result, every call the host served)."""
    calls: list[tuple[str, dict[str, Any]]] = []

    async def handler(fn: str, args: dict[str, Any]) -> Any:
        if isinstance(args.get("prompts"), StreamedTexts):
            texts = args["prompts"]
            args = {**args, "prompts": [await texts.take(i) for i in range(len(texts))]}
        calls.append((fn, args))
        if fn == "llm_query_batched":
            return [f"{len(p)}:{p[:1]}" for p in args["prompts"]]
        return f"{len(args['prompt'])}:{args['prompt'][:1]}"

    async def go() -> Any:
        sandbox = make_sandbox(backend, cell_timeout=30)
        await sandbox.start(ContextPayload())
        try:
            return await sandbox.execute(code, handler)
        finally:
            await sandbox.close()

    return asyncio.run(go()), calls


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_prompts_reach_the_host_exactly(backend: str) -> None:
    result, calls = run_block(backend, PROMPTS_CODE)

    assert result.error is None, result.error
    (fn, batched), (fn2, single) = calls
    assert fn == "llm_query_batched" and fn2 == "llm_query"
    assert batched["prompts"] == ["a" * 1_100_000, "", "é€😀" * 30_000, "line\n" * 5, "z"]
    assert single["prompt"] == "ü" * 100_000 and single["model"] is None
    assert "['1100000:a', '0:', '90000:é', '25:l', '1:z'] 100000:ü" in result.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_prompt_that_is_not_valid_text_is_refused_in_the_block(backend: str) -> None:
    result, calls = run_block(
        backend,
        "try:\n    llm_query_batched(['x' * 70_000, '\\ud800'])\n"
        "except TypeError as exc:\n    print('refused:', exc)",
    )

    assert calls == []
    assert "refused: llm_query_batched: arguments must be plain text" in result.stdout


def test_small_calls_stay_one_json_frame() -> None:
    frame = framing.OutgoingCall({"op": "call", "id": 1, "fn": "f", "args": {"prompt": "hi"}})
    (whole,) = frame.parts()
    assert whole.endswith(b'"args":{"prompt":"hi"}}') and frame.body_size == 0


def test_a_large_call_is_written_prompt_by_prompt_and_reads_back_whole() -> None:
    prompts = ["x" * 600_000, "ö" * 300_000]  # over SMALL_FRAME together
    frame = framing.OutgoingCall(
        {"op": "call", "id": 7, "fn": "llm_query_batched", "args": {"prompts": prompts}}
    )
    parts = list(frame.parts())
    assert [len(p) for p in parts[2:]] == [600_000, 600_000]  # one write per prompt
    _, body_len = framing.parse_prefix(parts[0], framing.MAX_CALL)
    header = framing.decode_header(parts[1])
    assert header["texts"] == {"prompts": [600_000, 600_000]} and "prompts" not in header["args"]
    assert framing.text_layout(header, body_len) == [("prompts", [600_000, 600_000], False)]
    assert frame.plain()["args"]["prompts"] == prompts


@pytest.mark.parametrize(
    "header",
    [
        {"op": "result", "texts": {"prompt": 3}, "args": {}},  # only calls carry text
        {"op": "call", "texts": {"context": 3}, "args": {}},  # not a text argument
        {"op": "call", "texts": {"prompt": -3}, "args": {}},
        {"op": "call", "texts": {"prompts": [1, "2"]}, "args": {}},
        {"op": "call", "texts": {"prompt": 3}, "args": {"prompt": "abc"}},  # given twice
        {"op": "call", "texts": {"prompt": 2}, "args": {}},  # lengths short of the body
    ],
)
def test_a_frame_whose_text_layout_does_not_hold_is_a_protocol_violation(
    header: dict[str, Any],
) -> None:
    with pytest.raises(framing.FrameError):
        framing.text_layout(header, 3)


def _reader(texts: list[str]) -> tuple[StreamedTexts, list[int]]:
    """StreamedTexts over `texts`, and the indexes read or skipped, in order."""
    done: list[int] = []

    async def read(size: int) -> str:
        done.append(len(done))
        return texts[len(done) - 1]

    async def skip(size: int) -> None:
        done.append(len(done))

    return StreamedTexts([len(t) for t in texts], read, skip), done


def test_a_streamed_batch_reads_only_as_far_as_the_prompt_taken() -> None:
    async def go() -> None:
        texts, done = _reader(["a", "b", "c", "d"])
        assert await texts.take(1) == "b" and done == [0, 1]  # "a" read and kept for its turn
        assert await texts.take(0) == "a" and done == [0, 1]
        assert not texts.finished.is_set()
        await texts.finish()  # "c" and "d" are skipped, not kept
        assert done == [0, 1, 2, 3] and texts.finished.is_set() and texts.broken is None

    asyncio.run(go())


def test_a_streamed_batch_that_cannot_be_read_is_marked_broken() -> None:
    async def go() -> None:
        async def read(size: int) -> str:
            raise asyncio.IncompleteReadError(b"", size)

        texts = StreamedTexts([3, 3], read, read)  # type: ignore[arg-type]
        with pytest.raises(asyncio.IncompleteReadError):
            await texts.take(0)
        assert texts.finished.is_set() and texts.broken is not None
        with pytest.raises(asyncio.IncompleteReadError):
            await texts.finish()

    asyncio.run(go())


BIG_BATCH = "prompts = [str(i) + ':' + 'x' * 20_000 for i in range(12)]\n"


def sub_echo(request: LMRequest) -> str:
    return request.last_user.split(":", 1)[0]


@pytest.mark.parametrize("backend", ["subprocess", "local"])
def test_a_large_batch_answers_each_prompt_in_order_at_low_concurrency(serve, backend) -> None:
    root = [
        f"```repl\n{BIG_BATCH}answers = llm_query_batched(prompts)\nprint(answers)\n```",
        "```repl\nFINAL(answers)\n```",
    ]
    server = serve(ScriptedLM(root=root, sub=sub_echo))

    result = RLM("openai/x", base_url=server.url, concurrency=2, sandbox=backend, env={}).run(
        "q", "ctx"
    )

    assert result.status == "ok", result.error
    assert result.answer == [str(i) for i in range(12)]
    subs = [r for r in server.requests if not r.is_root]
    assert sorted(int(r.last_user.split(":")[0]) for r in subs) == list(range(12))


def test_a_batch_refused_before_any_prompt_is_read_leaves_the_channel_in_step(serve) -> None:
    block = (
        f"```repl\n{BIG_BATCH}"
        "try:\n    llm_query_batched(prompts, model=123)\n"
        "except TypeError as exc:\n    print('refused:', exc)\n"
        "print('then:', llm_query('7:' + 'y' * 100_000))\n```"
    )
    server = serve(ScriptedLM(root=[block, "FINAL(done)"], sub=sub_echo))

    result = RLM("openai/x", base_url=server.url, env={}).run("q", "ctx")

    observation = [r for r in server.requests if r.is_root][1].last_user
    assert "refused: model must be a 'PROVIDER/MODEL' string" in observation
    assert "then: 7" in observation and "restarted" not in observation
    assert result.status == "ok"


def test_a_batch_cut_short_by_the_budget_leaves_the_channel_in_step(serve) -> None:
    block = (
        f"```repl\n{BIG_BATCH}answers = llm_query_batched(prompts)\n"
        "print(sum(a.startswith('[error] budget') for a in answers), 'refused')\n"
        "print('then:', len(context))\n```"
    )
    server = serve(ScriptedLM(root=[block, "FINAL(done)"], sub=sub_echo))

    result = RLM("openai/x", base_url=server.url, max_llm_calls=5, env={}).run("q", "ctx")

    assert result.status == "budget_exhausted"
    assert len([r for r in server.requests if not r.is_root]) == 4  # 5 calls: 1 root, 4 subs
    block = next(e for e in result.events if e.type == "block")
    assert block.error is None and "8 refused" in block.output and "then: 3" in block.output
