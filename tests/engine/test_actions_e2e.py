"""Action mode end to end: scripted models behind the real fake HTTP server, the CLI, replay.

The needle and counting tasks of the core issue, solved by a root model that sends JSON
actions instead of code: the same answers as code mode, in fewer root turns, with the same
sub-queries where the fan-out is the same. A traced action-mode run replays offline.
"""

from __future__ import annotations

import json
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
from recursa.trace.reader import read_trace
from test_e2e_core import QUESTION, _haystack_model, _needle_finder


def actions(*items: dict) -> str:
    """A model reply: a list of actions inside a ```json fence, as models write them."""
    return "```json\n" + json.dumps(list(items), indent=1) + "\n```"


NEEDLE_FAN_OUT = actions(
    {"action": "chunk", "var": "context", "size": 20_000, "unit": "lines", "into": "chunks"},
    {
        "action": "extract_over_chunks",
        "var": "chunks",
        "prompt": "Quote the vault passphrase if this excerpt has one, else reply NONE.\n\n{chunk}",
        "into": "answers",
    },
    {
        "action": "search",
        "var": "answers",
        "pattern": r"^FOUND (\S+)",
        "regex": True,
        "into": "found",
    },
    {"action": "final", "var": "found[0].groups[0]"},
)


def test_20mb_needle_in_action_mode_same_answer_fewer_root_turns_than_code_mode(
    serve, haystack_20mb: tuple[str, Path]
) -> None:
    text, _ = haystack_20mb
    code_server = serve(_haystack_model())
    code = RLM("openai/x", base_url=code_server.url).run(QUESTION, text)
    action_server = serve(ScriptedLM(root=[NEEDLE_FAN_OUT], sub=_needle_finder))

    result = RLM("openai/x", base_url=action_server.url, mode="actions").run(QUESTION, text)

    assert code.status == "ok" and code.answer == HAYSTACK_SECRET
    assert result.status == "ok", result.error
    assert result.answer == code.answer
    assert result.iterations < code.iterations
    assert len(root_requests(action_server)) == result.iterations == 1
    # The root never read the input; the sub-models read all of it, in one fan-out of the
    # same chunks as code mode's.
    assert max(prompt_chars(r) for r in root_requests(action_server)) < 20_000
    subs = sub_requests(action_server)
    assert len(subs) == len(sub_requests(code_server)) == -(-(text.count("\n") + 1) // 20_000)
    assert sum(len(r.last_user) for r in subs) >= len(text) - len(subs)
    assert_usage_matches_server(result.usage, action_server)


def test_20mb_needle_found_by_one_search_action_with_no_sub_query(
    serve, haystack_20mb: tuple[str, Path]
) -> None:
    text, _ = haystack_20mb
    reply = actions(
        {
            "action": "search",
            "var": "context",
            "pattern": r"the vault passphrase is (\S+)",
            "regex": True,
            "into": "hits",
        },
        {"action": "final", "var": "hits[0].groups[0]"},
    )
    server = serve(ScriptedLM(root=[reply]))

    result = RLM("openai/x", base_url=server.url, mode="actions").run(QUESTION, text)

    assert result.status == "ok", result.error
    assert result.answer == HAYSTACK_SECRET
    assert result.iterations == 1
    assert sub_requests(server) == []
    assert_usage_matches_server(result.usage, server)


def _labels() -> tuple[str, int]:
    rng = random.Random(2024)
    labels = [rng.choice(["spam", "ham", "eggs", "spam-free"]) for _ in range(5_000)]
    text = "\n".join(f"item {i}: label={label}" for i, label in enumerate(labels))
    return text, labels.count("spam")


def _count_in_chunk(request: LMRequest) -> str:
    return str(len(re.findall(r"^item \d+: label=spam$", request.last_user, re.MULTILINE)))


CODE_COUNTING = [
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
]
ACTION_COUNTING = actions(
    {"action": "chunk", "var": "context", "size": 250, "unit": "lines", "into": "chunks"},
    {
        "action": "extract_over_chunks",
        "var": "chunks",
        "prompt": "How many lines end in exactly label=spam? Reply with a number.\n\n{chunk}",
        "into": "counts",
    },
    {"action": "aggregate", "var": "counts", "op": "sum", "into": "total"},
    {"action": "final", "var": "total"},
)


def test_counting_5000_labels_in_action_mode_is_exact_in_fewer_root_turns_than_code_mode(
    serve,
) -> None:
    text, expected = _labels()
    code_server = serve(ScriptedLM(root=CODE_COUNTING, sub=_count_in_chunk))
    code = RLM("openai/x", base_url=code_server.url).run("How many are labelled spam?", text)
    server = serve(ScriptedLM(root=[ACTION_COUNTING], sub=_count_in_chunk))

    result = RLM("openai/x", base_url=server.url, mode="actions").run(
        "How many are labelled spam?", text
    )

    assert code.status == "ok" and code.answer == expected
    assert result.status == "ok", result.error
    assert result.answer == expected == code.answer
    assert result.iterations == 1 < code.iterations
    subs = sub_requests(server)
    assert len(subs) == len(sub_requests(code_server)) == 20
    seen = [int(n) for r in subs for n in re.findall(r"^item (\d+):", r.last_user, re.MULTILINE)]
    assert sorted(seen) == list(range(5_000))  # every line counted exactly once
    assert_usage_matches_server(result.usage, server)


def test_counting_by_kernel_regex_search_alone_needs_no_sub_model(serve) -> None:
    text, expected = _labels()
    reply = actions(
        {
            "action": "search",
            "var": "context",
            "pattern": r"^item \d+: label=spam$",
            "regex": True,
            "into": "hits",
        },
        {"action": "aggregate", "var": "hits", "op": "count", "into": "n"},
        {"action": "final", "var": "n"},
    )
    server = serve(ScriptedLM(root=[reply]))

    result = RLM("openai/x", base_url=server.url, mode="actions").run("How many spam?", text)

    assert result.answer == expected and result.iterations == 1
    assert sub_requests(server) == []


# ---- the CLI and replay ------------------------------------------------------------------

MAGIC = "the magic number is 48213"
RECORDED_TURNS = [
    actions(
        {"action": "chunk", "var": "context", "size": 200_000, "into": "chunks"},
        {
            "action": "extract_over_chunks",
            "var": "chunks",
            "prompt": "Find the magic number or say NONE.\n{chunk}",
            "into": "answers",
        },
        {"action": "aggregate", "var": "answers", "op": "unique", "exclude": "^NONE$"},
    ),
    "Not JSON at all, so the kernel says what was wrong.",
    actions(
        {"action": "aggregate", "var": "answers", "op": "unique", "exclude": "^NONE$", "into": "u"},
        {"action": "final", "var": "u[0]"},
    ),
]


def _magic_sub(request: LMRequest) -> str:
    match = re.search(r"magic number is (\d+)", request.last_user)
    return match.group(1) if match else "NONE"


def _record(serve, tmp_path: Path) -> tuple[Path, dict]:
    """An action-mode run through the CLI, traced; the model server is gone afterwards."""
    line = "lorem ipsum dolor sit amet consectetur adipiscing elit\n"
    lines = [line] * (1_000_000 // len(line))
    lines[len(lines) * 2 // 3] = MAGIC + "\n"
    context = tmp_path / "haystack.txt"
    context.write_text("".join(lines))
    server = serve(ScriptedLM(root=RECORDED_TURNS, sub=_magic_sub))
    trace = tmp_path / "run.jsonl"
    done = run_cli([
        "run", "What is the magic number?", "--context", str(context),
        "--model", "openai/x", "--base-url", server.url, "--mode", "actions",
        "--trace", str(trace), "--json", "--quiet",
    ])  # fmt: skip
    assert done.rc == 0, done.err
    assert "Traceback" not in done.err
    data = one_json_object(done.out)
    server.stop()  # from here on, no model can be reached
    return trace, data


def test_cli_mode_actions_runs_to_the_answer_and_traces_each_action(serve, tmp_path: Path) -> None:
    trace, data = _record(serve, tmp_path)

    assert data["status"] == "ok" and data["answer"] == "48213"
    assert data["iterations"] == 3
    events = read_trace(trace)
    assert next(e for e in events if e["type"] == "run_start")["settings"]["mode"] == "actions"
    done = [(e["iteration"], e["action"], e["ok"]) for e in events if e["type"] == "action"]
    assert done == [
        (1, "chunk", True),
        (1, "extract_over_chunks", True),
        (1, "aggregate", True),
        (2, "?", False),
        (3, "aggregate", True),
        (3, "final", True),
    ]
    first = next(e for e in events if e["type"] == "turn_end")
    assert "[untrusted: from sub-model]" in first["observation"]
    assert not any(e["type"] == "block" for e in events)  # no code ran


def test_a_traced_action_mode_run_replays_offline_to_the_same_answer(serve, tmp_path: Path) -> None:
    trace, data = _record(serve, tmp_path)
    recorded_end = next(e for e in read_trace(trace) if e["type"] == "run_end")

    done = run_cli(
        ["replay", str(trace), "--context", str(tmp_path / "haystack.txt"), "--json", "--quiet"]
    )

    assert done.rc == 0, done.err
    out = json.loads(done.out)
    assert out["answer"] == data["answer"] == "48213"
    assert out["diverged"] is False and out["first_divergence"] is None
    assert out["iterations"] == 3
    assert out["usage"] == recorded_end["usage"]


def test_an_edited_action_mode_trace_reports_where_it_diverged(serve, tmp_path: Path) -> None:
    trace, _ = _record(serve, tmp_path)
    events = read_trace(trace)
    for event in events:
        if event["type"] == "lm_call_end" and event.get("text") == "48213":
            event["text"] = "99999"
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(e) + "\n" for e in events))

    done = run_cli(
        ["replay", str(edited), "--context", str(tmp_path / "haystack.txt"), "--json", "--quiet"]
    )

    assert done.rc == 4
    out = json.loads(done.out)
    # The sub-model's answer shows in turn 1's observation, so turn 2's prompt differs.
    assert out["first_divergence"]["what"] == "root prompt"
    assert out["first_divergence"]["turn"] == 2
