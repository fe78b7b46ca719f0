"""The core issue end to end: scripted models behind a real HTTP server, real sandboxes.

A root model that chunks a 20 MB input and fans out with `llm_query_batched` finds the one
planted fact while its own prompts stay small, and `usage` agrees with what the server saw.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from e2e_helpers import (
    HAYSTACK_SECRET,
    assert_usage_matches_server,
    one_json_object,
    prompt_chars,
    repl,
    root_requests,
    run_cli,
    sub_requests,
)
from recursa.core.programs import RLM
from recursa.testing import LMRequest, ScriptedLM

QUESTION = "What is the vault passphrase mentioned in the log?"

FAN_OUT = repl(
    r"""
    lines = context.split("\n")
    step = 20_000
    chunks = ["\n".join(lines[i:i + step]) for i in range(0, len(lines), step)]
    prompts = [
        "Quote the vault passphrase if this excerpt has one, else reply NONE.\n\n" + chunk
        for chunk in chunks
    ]
    answers = llm_query_batched(prompts)
    hits = [a for a in answers if a.startswith("FOUND")]
    print(len(chunks), "chunks;", len(hits), "hit(s):", hits)
    """,
    prose="The log is far too large to read; I will fan out over chunks.",
)
FINISH = repl(
    """
    answer = hits[0].split(" ", 1)[1]
    FINAL_VAR("answer")
    """
)


def _needle_finder(request: LMRequest) -> str:
    match = re.search(r"the vault passphrase is (\S+)", request.last_user)
    return f"FOUND {match.group(1)}" if match else "NONE"


def _haystack_model() -> ScriptedLM:
    return ScriptedLM(root=[FAN_OUT, FINISH], sub=_needle_finder)


def _check_haystack_run(server, usage: dict, text: str) -> None:
    roots = root_requests(server)
    subs = sub_requests(server)
    assert len(roots) == 2
    # The root never read the input: every root prompt stays far below the input's size.
    largest_root_prompt = max(prompt_chars(r) for r in roots)
    assert largest_root_prompt < 20_000
    # ... while the sub-models together read all of it, in one batch of chunks.
    assert len(subs) == -(-(text.count("\n") + 1) // 20_000)
    assert sum(len(r.last_user) for r in subs) >= len(text) - len(subs)
    assert usage["by_depth"]["0"]["llm_calls"] == server.request_count
    assert_usage_matches_server(usage, server)


def test_20mb_needle_is_found_through_batched_sub_queries_via_python_api(
    serve, haystack_20mb: tuple[str, Path]
) -> None:
    text, _ = haystack_20mb
    server = serve(_haystack_model())

    result = RLM("openai/x", base_url=server.url).run(QUESTION, text)

    assert result.status == "ok", result.error
    assert result.answer == HAYSTACK_SECRET
    assert result.iterations == 2
    _check_haystack_run(server, result.usage, text)


def test_20mb_needle_is_found_via_cli_json_in_a_subprocess(
    serve, haystack_20mb: tuple[str, Path]
) -> None:
    text, path = haystack_20mb
    server = serve(_haystack_model())

    run = run_cli(
        [
            "run",
            QUESTION,
            "--context",
            str(path),
            "--base-url",
            server.url,
            "--model",
            "openai/x",
            "--json",
        ]
    )

    assert run.rc == 0, run.err
    assert "Traceback" not in run.err
    data = one_json_object(run.out)
    assert data["status"] == "ok"
    assert data["answer"] == HAYSTACK_SECRET
    assert data["iterations"] == 2
    assert set(data) >= {"answer", "status", "iterations", "usage", "run_id", "trace"}
    _check_haystack_run(server, data["usage"], text)


def test_counting_labels_over_5000_lines_with_batched_sub_queries_is_exact(serve) -> None:
    rng = random.Random(2024)
    labels = [rng.choice(["spam", "ham", "eggs", "spam-free"]) for _ in range(5_000)]
    text = "\n".join(f"item {i}: label={label}" for i, label in enumerate(labels))
    expected = labels.count("spam")

    def count_in_chunk(request: LMRequest) -> str:
        return str(len(re.findall(r"^item \d+: label=spam$", request.last_user, re.MULTILINE)))

    lm = ScriptedLM(
        root=[
            repl(
                r"""
                lines = context.splitlines()
                chunks = ["\n".join(lines[i:i + 250]) for i in range(0, len(lines), 250)]
                counts = llm_query_batched([
                    "How many lines end in exactly label=spam? Reply with a number.\n\n" + c
                    for c in chunks
                ])
                total = sum(int(c) for c in counts)
                print(len(chunks), "chunks, total", total)
                """
            ),
            repl("FINAL(total)"),
        ],
        sub=count_in_chunk,
    )
    server = serve(lm)

    result = RLM("openai/x", base_url=server.url).run("How many items are labelled spam?", text)

    assert result.status == "ok", result.error
    assert result.answer == expected
    subs = sub_requests(server)
    assert len(subs) == 20
    # Every line was counted exactly once across the batch.
    seen = [int(n) for r in subs for n in re.findall(r"^item (\d+):", r.last_user, re.MULTILINE)]
    assert sorted(seen) == list(range(5_000))
    assert_usage_matches_server(result.usage, server)


def test_plain_sub_query_is_the_prompt_alone_and_goes_to_the_sub_model(serve) -> None:
    lm = ScriptedLM(
        root=[repl("FINAL(llm_query('say pong'))")],
        sub=lambda request: "pong" if request.last_user == "say pong" else "wrong",
    )
    server = serve(lm)

    result = RLM("openai/root-m", sub_model="openai/sub-m", base_url=server.url).run("q", "ctx")

    assert result.answer == "pong"
    (sub,) = sub_requests(server)
    assert sub.messages == [{"role": "user", "content": "say pong"}]
    assert sub.model == "sub-m"
    assert {r.model for r in root_requests(server)} == {"root-m"}
    assert result.usage["by_model"]["openai/sub-m"]["llm_calls"] == 1
    assert result.usage["by_model"]["openai/root-m"]["llm_calls"] == 1
    assert_usage_matches_server(result.usage, server)
