"""`recursa distill` and `recursa pipeline`: a successful run becomes a program that
repeats its working code path on new inputs with sub-models only.

The recorded run is a real CLI run (scripted root model, real sandbox, real HTTP) that
explores, makes a typo, fans out over chunks and finishes; its pipeline then answers a
haystack of another size against a fake server that has no root script at all, so any
root-model request would be both counted and refused.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import host_env, one_json_object, repl, root_requests, run_cli
from recursa.core.programs import RLM
from recursa.mining import DistillError, distill, load_pipeline
from recursa.testing import FakeLMServer, LMRequest, ScriptedLM
from recursa.trace.jsonl import JsonlTrace
from recursa.trace.reader import read_trace
from recursa.trace.store import RunStore

QUESTION = "What is the vault passphrase mentioned in the log?"
NEW_QUESTION = "What is the vault passphrase written in this other log?"
OLD_SECRET = "amber-falcon-7731"
NEW_SECRET = "cobalt-heron-4242"

EXPLORE = repl(
    """
    print(len(context))
    print(context[:200])
    """
)
CHUNK = repl(
    r"""
    lines = context.split("\n")
    step = 1_000
    chunks = ["\n".join(lines[i:i + step]) for i in range(0, len(lines), step)]
    print(len(chunks), "chunks")
    """
)
TYPO = repl("print(undefined_name)")
FAN_OUT = repl(
    r"""
    prompts = [
        f"What is the vault passphrase mentioned in the log? Reply FOUND <it> or NONE.\n\n{c}"
        for c in chunks
    ]
    answers = llm_query_batched(prompts)
    hits = [a for a in answers if a.startswith("FOUND")]
    print(hits)
    """
)
FINISH = repl(
    """
    answer = hits[0].split(" ", 1)[1]
    FINAL_VAR("answer")
    """
)
ROOT = [EXPLORE, CHUNK + "\n" + TYPO, FAN_OUT, FINISH]


def _haystack(lines: int, secret: str, planted: int) -> str:
    rows = [
        f"{i:08d} telemetry frame nominal, checksum {i * 7919 % 100_000:05d}" for i in range(lines)
    ]
    rows[planted] = f"{planted:08d} NOTE: the vault passphrase is {secret}"
    return "\n".join(rows) + "\n"


def _finder(request: LMRequest) -> str:
    match = re.search(r"the vault passphrase is (\S+)", request.last_user)
    return f"FOUND {match.group(1)}" if match else "NONE"


def _chunks(text: str) -> int:
    return len(range(0, len(text.split("\n")), 1_000))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The needle run, through the CLI with --trace: 5,000 lines, five chunks."""
    folder = tmp_path_factory.mktemp("recorded")
    haystack = folder / "haystack.log"
    haystack.write_text(_haystack(5_000, OLD_SECRET, 3_100))
    trace = folder / "needle.jsonl"
    with FakeLMServer(ScriptedLM(root=ROOT, sub=_finder)) as server:
        run = run_cli(
            [
                *["run", QUESTION, "--context", str(haystack), "--model", "openai/x"],
                *["--base-url", server.url, "--trace", str(trace), "--no-store", "--json"],
            ]
        )
    assert run.rc == 0, run.err
    assert one_json_object(run.out)["answer"] == OLD_SECRET
    return trace


def test_a_pipeline_distilled_from_a_needle_run_answers_a_new_haystack_with_no_root_requests(
    recorded: Path, tmp_path: Path, serve
) -> None:
    pipeline = tmp_path / "pipeline.py"
    haystack = tmp_path / "other.log"
    text = _haystack(12_345, NEW_SECRET, 11_017)
    haystack.write_text(text)
    server = serve(ScriptedLM(root=None, sub=_finder))  # no root script: a root call fails
    trace = tmp_path / "pipeline.jsonl"

    made = run_cli(["distill", str(recorded), "-o", str(pipeline)])
    ran = run_cli(
        [
            *["pipeline", str(pipeline), "--context", str(haystack), NEW_QUESTION],
            *["--sub-model", "openai/x", "--base-url", server.url, "--trace", str(trace), "--json"],
        ]
    )

    assert made.rc == 0, made.err
    assert made.out.strip() == str(pipeline)
    assert ran.rc == 0, ran.err
    data = one_json_object(ran.out)
    assert data["answer"] == NEW_SECRET and data["status"] == "ok"
    assert root_requests(server) == []
    assert server.request_count == _chunks(text) == 13  # the recorded run had 5 chunks
    assert data["usage"]["llm_calls"] == server.request_count
    # the question is a parameter: the prompts carry the new one, not the recorded one
    assert all(r.last_user.startswith(NEW_QUESTION + " Reply FOUND") for r in server.requests)
    events = read_trace(trace)
    assert events[0]["type"] == "run_start" and events[0]["settings"]["strategy"] == "pipeline"
    assert events[0]["contexts"][0]["name"] == str(haystack)
    purposes = {e["purpose"] for e in events if e["type"] == "lm_call_start"}
    assert purposes == {"sub"}
    assert events[-1]["type"] == "run_end" and events[-1]["answer"] == NEW_SECRET
    stored = RunStore().list()
    assert [(r.kind, r.status, r.id) for r in stored] == [("pipeline", "ok", data["run_id"])]


def test_a_pipeline_gets_a_large_file_as_the_repl_would_mapped_unless_the_threshold_says(
    recorded: Path, tmp_path: Path, serve
) -> None:
    pipeline = tmp_path / "pipeline.py"
    pipeline.write_text(distill(str(recorded)))
    haystack = tmp_path / "big.log"
    haystack.write_text(_haystack(3_000, NEW_SECRET, 2_500))  # 180 KB
    server = serve(ScriptedLM(root=None, sub=_finder))

    def run(threshold: str) -> Any:
        return run_cli(
            [
                *["pipeline", str(pipeline), "--context", str(haystack), NEW_QUESTION],
                *["--base-url", server.url, "--mmap-threshold", threshold, "--json"],
            ]
        )

    mapped, whole = run("64K"), run("1M")

    # mapped, as the sandbox maps it: the recorded code's `context.split` is refused, in the
    # words the REPL would use, and nothing is sent
    assert mapped.rc == 1, mapped.err
    error = mapped.err_lines[-1]
    assert error.startswith("recursa: error: AttributeError: MappedText has no split()")
    assert "Slice first" in error and "(pipeline.py line " in error  # where, in its code
    # below the threshold it is the text, and the pipeline answers
    assert whole.rc == 0, whole.err
    assert one_json_object(whole.out)["answer"] == NEW_SECRET
    assert server.request_count == _chunks(haystack.read_text()) == 4


def test_a_pipelines_directory_maps_its_large_files_as_the_repl_does(tmp_path: Path) -> None:
    from recursa.context import from_path
    from recursa.mining.pipeline import context_value
    from recursa.sandbox.inside.mapped import MappedText

    (tmp_path / "big.log").write_text("x" * 5_000 + "\nneedle\n")
    (tmp_path / "small.txt").write_text("tiny")
    directory = context_value(from_path(str(tmp_path), mmap_threshold=4_096))
    one_file = context_value(from_path(str(tmp_path / "big.log"), mmap_threshold=4_096))

    assert isinstance(directory["big.log"], MappedText) and directory["small.txt"] == "tiny"
    assert directory["big.log"].find("needle") == 5_001 and len(directory["big.log"]) == 5_008
    assert isinstance(one_file, MappedText) and one_file[5_001:5_007] == "needle"


def test_distill_keeps_the_working_path_and_leaves_out_exploration_and_failed_blocks(
    recorded: Path,
) -> None:
    program = distill(str(recorded))

    assert "Kept:     turn 2 block 1, turn 3 block 1, turn 4 block 1" in program
    assert "Left out: turn 1 block 1 (exploration: nothing kept reads what it made)" in program
    assert "Left out: turn 2 block 2 (raised NameError)" in program
    assert "print(context[:200])" not in program  # exploration
    assert "undefined_name" not in program  # the failed block
    assert "answers = llm_query_batched(prompts)" in program
    assert "FINAL(answer)" in program and 'FINAL_VAR("answer")' not in program
    assert 'f"{question} Reply FOUND <it> or NONE.\\n\\n{c}"' in program
    assert "runs on THIS machine" in program  # the warning in its header
    compile(program, "pipeline.py", "exec")


def test_a_distilled_pipeline_runs_from_python_under_the_same_budget(
    recorded: Path, tmp_path: Path, serve
) -> None:
    path = tmp_path / "needle_pipeline.py"
    path.write_text(distill(str(recorded)))
    server = serve(ScriptedLM(root=None, sub=_finder))
    seen: list[str] = []
    text = _haystack(9_000, NEW_SECRET, 8_500)

    run = load_pipeline(path)
    limited = run(
        QUESTION,
        text,
        base_url=server.url,
        max_llm_calls=4,
        on_event=lambda e: seen.append(e.type),
    )

    assert _chunks(text) == 10
    assert server.request_count == 4  # ten chunks asked, four sent
    assert limited.usage["llm_calls"] == 4
    # the needle sits in the ninth chunk, which the budget refused: the code found no hit
    assert limited.status == "budget_exhausted"
    assert "IndexError" in (limited.error or "")
    assert seen[0] == "run_start" and seen[-1] == "run_end"
    assert seen.count("budget_refused") == 6


def test_python_runs_a_distilled_pipeline_file_like_recursa_pipeline(
    recorded: Path, tmp_path: Path, serve
) -> None:
    pipeline = tmp_path / "pipeline.py"
    pipeline.write_text(distill(str(recorded)))
    haystack = tmp_path / "small.log"
    haystack.write_text(_haystack(1_500, NEW_SECRET, 20))
    server = serve(ScriptedLM(root=None, sub=_finder))

    proc = subprocess.run(
        [
            *[sys.executable, str(pipeline), "--context", str(haystack), QUESTION],
            *["--base-url", server.url, "--quiet"],
        ],
        capture_output=True,
        text=True,
        env=host_env(),
        timeout=60,
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == NEW_SECRET + "\n"  # what the code printed went elsewhere
    assert server.request_count == 2 and root_requests(server) == []


def _record(tmp_path: Path, root: list[str], context: str, max_iterations: int = 10) -> Path:
    trace = tmp_path / "run.jsonl"
    listener = JsonlTrace(trace)
    with FakeLMServer(ScriptedLM(root=root, sub=_finder)) as server:
        rlm = RLM("openai/x", base_url=server.url, max_iterations=max_iterations)
        try:
            rlm.run(QUESTION, context, on_event=listener)
        finally:
            listener.close()
    return trace


def test_the_pipeline_sends_the_recorded_prompts_keeping_multiline_strings_and_mutations(
    tmp_path: Path, serve
) -> None:
    text = _haystack(600, OLD_SECRET, 450)
    root = [
        repl("results = []"),
        repl('print(results, "nothing yet")'),
        repl(
            '''
            template = """Find the vault passphrase.
                Indented lines stay as they were.
            Reply FOUND <it> or NONE."""
            for i in range(0, len(context), 9_000):
                results.append(llm_query(template + "\\n\\n" + context[i:i + 9_000]))
            '''
        ),
        repl(
            """
            picked = None

            def pick(replies):
                global picked
                picked = [r.split(" ", 1)[1] for r in replies if r.startswith("FOUND")]
                return picked[0]

            FINAL(pick(results))
            """
        ),
    ]
    trace = _record(tmp_path, root, text)
    recorded_prompts = [e["prompt"] for e in read_trace(trace) if e["type"] == "lm_call_start"]
    recorded_prompts = [p for p in recorded_prompts if p is not None]
    path = tmp_path / "mutations.py"
    path.write_text(distill(str(trace)))
    server = serve(ScriptedLM(root=None, sub=_finder))

    result = load_pipeline(path)(QUESTION, text, base_url=server.url)

    assert result.status == "ok", result.error
    assert result.answer == OLD_SECRET
    program = path.read_text()
    assert "results = []" in program  # only `results.append` reads it later
    assert "nothing yet" not in program
    assert "nonlocal picked" in program
    sent = [r.last_user[:1000] for r in server.requests]
    assert [p[:1000] for p in recorded_prompts] == sent  # byte for byte, indentation kept


def test_distill_refuses_a_run_that_did_not_reach_an_answer(tmp_path: Path) -> None:
    trace = _record(tmp_path, [repl(f"x{n} = {n}") for n in range(5)], "text", max_iterations=3)

    run = run_cli(["distill", str(trace), "-o", str(tmp_path / "p.py")])

    assert run.rc == 2
    assert "ended with status max_iterations" in run.err and len(run.err.splitlines()) == 1
    assert not (tmp_path / "p.py").exists()


def test_distill_refuses_an_answer_the_root_model_wrote_as_a_literal(tmp_path: Path) -> None:
    trace = _record(tmp_path, [repl("n = len(context)\nprint(n)"), f"FINAL({OLD_SECRET})"], "t")

    with pytest.raises(DistillError, match="literal FINAL"):
        distill(str(trace))


def test_a_final_var_line_becomes_the_pipelines_final(tmp_path: Path, serve) -> None:
    trace = _record(tmp_path, [repl("n = len(context)"), "FINAL_VAR(n)"], "four")
    path = tmp_path / "line.py"
    path.write_text(distill(str(trace)))
    server = serve(ScriptedLM(root=None, sub=None))

    result = load_pipeline(path)("How long?", "eleven char", base_url=server.url)

    assert "FINAL(n)" in path.read_text()
    assert (result.status, result.answer, result.usage["llm_calls"]) == ("ok", 11, 0)


def test_distill_reads_a_stored_run_by_its_id_prefix(tmp_path: Path, serve) -> None:
    server = serve(ScriptedLM(root=[repl("size = len(context) * 2\nFINAL(size)")]))
    result = RLM("openai/x", base_url=server.url).run("Twice the length?", "abc")
    RunStore().save(result.events)  # the test's own store (RECURSA_HOME, conftest)

    made = run_cli(["distill", result.run_id[:8]])

    assert made.rc == 0, made.err
    assert f"from run {result.run_id}" in made.out
    assert "size = len(context) * 2\n        FINAL(size)" in made.out


def test_distill_refuses_a_path_that_needs_a_block_that_failed(tmp_path: Path) -> None:
    root = [
        repl("chunks = [context[:2], context[2:]]\nraise ValueError('oops')"),
        repl("FINAL(len(chunks))"),
    ]
    trace = _record(tmp_path, root, "abcd")

    with pytest.raises(DistillError, match=r"`chunks`, made only by turn 1 block 1 \(which raised"):
        distill(str(trace))


def test_pipeline_cli_reports_a_missing_file_and_a_bad_pipeline_in_one_line(
    tmp_path: Path,
) -> None:
    context = tmp_path / "c.txt"
    context.write_text("x")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")

    missing = run_cli(["pipeline", str(tmp_path / "nope.py"), "--context", str(context), "Q"])
    no_run = run_cli(["pipeline", str(bad), "--context", str(context), "Q"])

    assert missing.rc == 2 and "pipeline not found" in missing.err
    assert no_run.rc == 2 and "defines no run(question, context, ...) function" in no_run.err
