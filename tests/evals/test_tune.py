"""`recursa tune` on a scripted model whose behaviour depends on the profile it is given.

The world: a context of 50 fixed-width lines; the question asks how many say `red`. The
root model, under the built-in prompts, reads one 200-character chunk per turn with
`llm_query` and answers after two turns (too early: it only saw the first 400 characters).
Told to "BATCH ALL CHUNKS", it fans out once over 500-character chunks: right on every task,
in fewer calls. Told to "COUNT FROM THE END", it only reads the last 400 characters: right
on tasks whose reds are there (the train tasks), wrong elsewhere (the held-out ones).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e_helpers import repl, run_cli
from extras import needs_extra
from recursa.core.profile import BUILTIN, Profile
from recursa.testing import LMRequest, ScriptedLM

pytestmark = needs_extra("tune", "gepa")

BATCH = "BATCH ALL CHUNKS: split `context` into 500-character chunks, one llm_query_batched."
FROM_END = "COUNT FROM THE END: only the last 400 characters of `context` matter."
ASK = "COUNT red:\n"


def root(request: LMRequest) -> str:
    steer = request.messages[0]["content"] + request.messages[1]["content"]
    if "BATCH ALL CHUNKS" in steer:
        return repl(f"""
            parts = [context[i:i + 500] for i in range(0, len(context), 500)]
            FINAL(sum(int(a) for a in llm_query_batched([{ASK!r} + p for p in parts])))
        """)
    if "COUNT FROM THE END" in steer:
        return repl(f"FINAL(int(llm_query({ASK!r} + context[-400:])))")
    if request.turn < 2:
        k = request.turn
        start = "seen = 0\n" if k == 0 else ""
        return repl(f"{start}seen += int(llm_query({ASK!r} + context[{k * 200}:{k * 200 + 200}]))")
    return repl("FINAL(seen)")


def world(proposal: str) -> ScriptedLM:
    """The root model above; sub-queries count reds; the reflection proposes `proposal`."""

    def sub(request: LMRequest) -> str:
        if request.last_user.startswith(ASK):
            return str(request.last_user.count(" red\n"))
        return f"```\n{proposal}\n```"

    return ScriptedLM(root=root, sub=sub)


def task(reds: list[int], n: int) -> dict:
    lines = "".join(f"row {i:04d} {'red' if i in reds else 'blue':>9}\n" for i in range(50))
    return {"question": "How many rows say red?", "context": lines, "expected": len(reds),
            "scorer": "numeric", "id": f"t{n}"}  # fmt: skip


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tasks_files(tmp_path: Path) -> tuple[Path, Path]:
    """Train: reds late in the context (the built-in misses them, FROM_END finds them).
    Held out: reds early (the built-in finds them, FROM_END misses them) and one with both."""
    train = [task([31, 40, 45], 1), task([35, 48], 2), task([2, 44], 3)]
    held = [task([1, 5], 4), task([3], 5), task([1, 30, 47], 6)]
    return write(tmp_path / "train.jsonl", train), write(tmp_path / "held.jsonl", held)


def tune_cli(server, train: Path, held: Path, out: Path, *extra: str):
    return run_cli(
        ["tune", "--model", "openai/x", "--base-url", server.url, "--tasks", str(train),
         "--held-out-tasks", str(held), "--out", str(out), "--max-rollouts", "14", *extra],
        timeout=300,
    )  # fmt: skip


def test_tune_improves_the_held_out_score_and_eval_reproduces_it(serve, tmp_path) -> None:
    server = serve(world(BATCH))
    train, held = tasks_files(tmp_path)
    out = tmp_path / "tuned"

    run = tune_cli(server, train, held, out, "--max-llm-calls", "200")

    assert run.rc == 0, run.err
    assert "held-out score: built-in 0.667, tuned 1.000 (+0.333)" in run.out
    profile = Profile.load(out / "profile.json")
    assert "BATCH ALL CHUNKS" in profile.system_prompt + profile.first_turn
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "(winner)" in report and "(built-in)" in report and "+BATCH ALL CHUNKS" in report
    spent = json.loads((out / "spent.json").read_text())["llm_calls"]
    assert spent <= 200 and f"spent: {spent} model calls" in run.out
    calls = run.out.split("calls ")[1].split()  # held-out calls: built-in -> tuned
    assert int(calls[2]) < int(calls[0])  # the better prompt also costs less

    again = run_cli(
        ["eval", "--model", "openai/x", "--base-url", server.url, "--tasks", str(held),
         "--strategies", "rlm", "--profile", str(out / "profile.json"), "--out",
         str(tmp_path / "eval"), "--no-plots", "--no-cache", "--quiet"],
        timeout=300,
    )  # fmt: skip
    assert again.rc == 0, again.err
    records = [json.loads(x) for x in (tmp_path / "eval/results.jsonl").read_text().splitlines()]
    assert [r["score"] for r in records] == [1.0, 1.0, 1.0]
    assert {r["profile"] for r in records} == {profile.id}


def test_the_held_out_score_not_the_train_score_picks_the_winner(serve, tmp_path) -> None:
    server = serve(world(FROM_END))
    train, held = tasks_files(tmp_path)
    out = tmp_path / "tuned"

    run = tune_cli(server, train, held, out)

    assert run.rc == 0, run.err
    rows = [line for line in (out / "report.md").read_text().splitlines() if "| p-" in line]
    by_id = {row.split("|")[1].split()[0]: row.split("|") for row in rows}
    overfit = next(r for r in by_id.values() if "built-in" not in r[1])
    base = by_id[BUILTIN.id]
    assert float(overfit[2]) > float(base[2])  # better on the train tasks ...
    assert float(overfit[5]) < float(base[5])  # ... worse held out: not the winner
    assert "held-out score: built-in 0.667, tuned 0.667 (+0.000)" in run.out
    kept = Profile.load(out / "profile.json")
    assert (kept.system_prompt, kept.first_turn) == (BUILTIN.system_prompt, BUILTIN.first_turn)


def test_the_tuning_budget_holds_over_every_call(serve, tmp_path) -> None:
    server = serve(world(BATCH))
    train, held = tasks_files(tmp_path)

    run = tune_cli(server, train, held, tmp_path / "tuned", "--max-llm-calls", "20")

    assert len(server.requests) <= 20  # what reached the model, reflection included
    assert run.rc == 0, run.err
    assert "stopped early: the tuning budget is spent (--max-llm-calls 20)" in run.err
    assert "tuned 0.667 (+0.000)" in run.out


def test_a_budget_too_small_for_the_baseline_exits_3_with_one_line(serve, tmp_path) -> None:
    server = serve(world(BATCH))
    train, held = tasks_files(tmp_path)

    run = tune_cli(server, train, held, tmp_path / "tuned", "--max-llm-calls", "2")

    assert run.rc == 3, run.err
    assert "Traceback" not in run.err and len(run.err_lines) == 1
    assert len(server.requests) == 0  # one call per task is not enough to run it


@pytest.mark.parametrize(
    "args, word",
    [(["--tasks", "nope.jsonl"], "nope.jsonl"), ([], "--tasks"), (["--families", "x"], "x")],
)
def test_bad_tune_input_is_one_line_and_exit_2(tmp_path, args, word) -> None:
    run = run_cli(["tune", "--model", "openai/x", "--out", str(tmp_path / "o"), *args])

    assert run.rc == 2 and "Traceback" not in run.err
    assert len(run.err_lines) == 1 and word in run.err_lines[0]


def test_a_stopped_tuning_resumes_without_redoing_its_runs_and_keeps_its_spending(
    serve, tmp_path
) -> None:
    server = serve(world(BATCH))
    train, held = tasks_files(tmp_path)
    out = tmp_path / "tuned"
    first = tune_cli(server, train, held, out, "--max-llm-calls", "20")
    before = len(server.requests)
    spent_first = json.loads((out / "spent.json").read_text())["llm_calls"]

    again = tune_cli(server, train, held, out, "--max-llm-calls", "200")

    assert first.rc == 0 and again.rc == 0, again.err
    assert "tuned 1.000 (+0.333)" in again.out
    spent = json.loads((out / "spent.json").read_text())["llm_calls"]
    assert spent >= spent_first + len(server.requests) - before  # carried over, all counted
    assert before > 0 and spent <= 200
    base_held = out / "candidates" / BUILTIN.id / "held-out" / "results.jsonl"
    assert len(base_held.read_text().splitlines()) == 3  # kept from the first run, not redone
