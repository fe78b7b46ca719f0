"""The eval harness end to end: every family through every strategy with its scripted oracle
(real sandbox workers, real fan-out, real child RLMs), a wrong model, resuming, the response
cache, the rlm-nosub guarantee, Direct overflow, the report and its plots, and the loaders of
the real datasets on small fixture files."""

from __future__ import annotations

import ast
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from extras import needs_extra
from recursa.errors import ConfigError
from recursa.evals import FAMILIES, EvalConfig, generate, load_results, run_eval
from recursa.evals.datasets import _json_array, load_browsecomp, load_longbench, load_oolong
from recursa.evals.oracle import Oracle
from recursa.evals.report import write_report
from recursa.evals.tasks import Task
from recursa.testing import FakeLMServer, ScriptedLM

FIXTURES = Path(__file__).parents[1] / "eval_fixtures"
STRATEGIES = ["direct", "rlm", "rlm-d2", "rlm-nosub"]


def assert_valid_png(path: Path) -> tuple[int, int]:
    """Every chunk's CRC, IHDR first and IEND last, and image data that inflates to exactly
    the size the header announces."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, chunks, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    assert depth == 8
    assert len(zlib.decompress(idat)) == height * (1 + width * channels)
    return width, height


@pytest.fixture(scope="module")
def oracle_eval(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every family x every strategy at 8K tokens with the oracle (run once)."""
    out = tmp_path_factory.mktemp("oracle-eval")
    return run_eval(
        EvalConfig(
            out=out, families=FAMILIES, lengths=[8_000], strategies=STRATEGIES,
            oracle="oracle", concurrency=4, progress=False,
        )
    )  # fmt: skip


def test_the_oracle_scores_every_family_perfectly_with_every_strategy(oracle_eval: Any) -> None:
    ran = {(r["family"], r["strategy"]): r for r in oracle_eval.ran}

    assert set(ran) == {(f, s) for f in FAMILIES for s in STRATEGIES}
    for (family, strategy), record in ran.items():
        assert record["status"] == "ok", (family, strategy, record["error"])
        assert record["score"] == 1.0, (family, strategy, record["answer"], record["expected"])
        assert record["oracle"] is True and record["model"] == "oracle"


def test_each_strategy_runs_the_pipeline_it_names(oracle_eval: Any) -> None:
    for family in FAMILIES:
        by = {r["strategy"]: r for r in oracle_eval.ran if r["family"] == family}
        assert by["direct"]["llm_calls"] == 1  # one request, the context inside
        assert by["rlm-nosub"]["llm_calls"] == 2  # two root turns, no sub-query at all
        assert by["rlm-nosub"]["refused_sub_queries"] == 0
        # two root turns plus one batched sub-query per chunk (32K characters: 4 or 5)
        assert by["rlm"]["llm_calls"] >= 2 + 4
        # and at depth 2, child RLMs: each two turns of its own plus its sub-queries
        assert by["rlm-d2"]["llm_calls"] > by["rlm"]["llm_calls"] + 4


def test_a_wrong_model_scores_what_its_answer_is_worth(tmp_path: Path) -> None:
    summary = run_eval(
        EvalConfig(
            out=tmp_path, families=FAMILIES, lengths=[8_000], strategies=STRATEGIES,
            oracle="wrong", concurrency=4, progress=False, plots=False,
        )
    )  # fmt: skip

    assert len(summary.ran) == len(FAMILIES) * len(STRATEGIES)
    for record in summary.ran:
        task = generate(record["family"], record["seed"], record["length"])
        assert record["answer"] == "0"
        assert record["score"] == task.score("0") < 1.0
    assert summary.mean_score() < 0.01
    assert summary.records[0]["model"] == "wrong"


def test_every_oolong_variant_scores_perfectly_with_the_oracle(tmp_path: Path) -> None:
    summary = run_eval(
        EvalConfig(
            out=tmp_path, families=["oolong"], lengths=[8_000], seeds=[0, 1, 2],
            strategies=["direct", "rlm"], oracle="oracle", progress=False, plots=False,
        )
    )  # fmt: skip

    assert sorted((r["seed"], r["score"]) for r in summary.ran) == [
        (s, 1.0) for s in (0, 0, 1, 1, 2, 2)
    ]


def test_an_interrupted_eval_resumes_without_repeating_finished_tasks(tmp_path: Path) -> None:
    def config(**kw: Any) -> EvalConfig:
        return EvalConfig(
            out=tmp_path, families=["niah", "vartrack"], lengths=[8_000],
            strategies=["direct", "rlm"], oracle="oracle", concurrency=1, progress=False,
            plots=False, **kw,
        )  # fmt: skip

    seen: list[dict[str, Any]] = []

    def stop_after_two(record: dict[str, Any]) -> None:
        seen.append(record)
        if len(seen) == 2:
            raise KeyboardInterrupt  # as Ctrl-C would

    first = run_eval(config(on_result=stop_after_two))
    with pytest.raises(ConfigError, match="already holds 2 results: pass --resume"):
        run_eval(config())  # a fresh eval never mixes in old results
    second = run_eval(config(resume=True))

    def keys(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(r["task_id"], r["strategy"]) for r in records}

    assert first.interrupted and len(first.ran) == 2
    assert not second.interrupted and second.skipped == 2 and len(second.ran) == 2
    assert keys(first.ran).isdisjoint(keys(second.ran))
    lines = load_results(tmp_path / "results.jsonl")
    assert len(lines) == 4 and len(keys(lines)) == 4
    assert run_eval(config(resume=True)).ran == []  # finished: nothing left to do


def test_a_rerun_into_a_new_directory_is_answered_from_the_cache(
    oracle_eval: Any, tmp_path: Path
) -> None:
    again = run_eval(
        EvalConfig(
            out=tmp_path, families=["niah", "codeqa"], lengths=[8_000], strategies=STRATEGIES,
            oracle="oracle", progress=False, plots=False,
            cache_path=oracle_eval.out / "cache.sqlite",
        )
    )  # fmt: skip

    assert len(again.ran) == 8
    for record in again.ran:
        assert record["score"] == 1.0
        assert record["cache_misses"] == 0  # nothing reached the model
        assert record["cache_hits"] == record["llm_calls"] > 0


def test_rlm_nosub_refuses_the_sub_queries_a_model_sends_anyway(tmp_path: Path) -> None:
    disobedient = [
        "```repl\nreplies = llm_query_batched(['one', 'two'])\nprint(replies)\n```",
        "```repl\nFINAL(str(sum(r.startswith('[error]') for r in replies)))\n```",
    ]
    summary = run_eval(
        EvalConfig(
            out=tmp_path, families=["niah"], lengths=[2_000], strategies=["rlm-nosub", "rlm"],
            client_factory=lambda task: ScriptedLM(root=disobedient, sub=lambda r: "ok"),
            model_label="disobedient", progress=False, plots=False, cache=False,
        )
    )  # fmt: skip
    by = {r["strategy"]: r for r in summary.ran}

    assert by["rlm-nosub"]["refused_sub_queries"] == 2
    assert by["rlm-nosub"]["answer"] == "2"  # both came back to the REPL as errors
    assert by["rlm"]["refused_sub_queries"] == 0 and by["rlm"]["answer"] == "0"


def test_the_nosub_strategy_tells_the_model_in_its_question(tmp_path: Path) -> None:
    questions: list[str] = []

    def root(request: Any) -> str:
        questions.append(request.messages[1]["content"])
        return "FINAL(x)"

    run_eval(
        EvalConfig(
            out=tmp_path, families=["niah"], lengths=[2_000], strategies=["rlm-nosub"],
            client_factory=lambda task: ScriptedLM(root=root), model_label="probe",
            progress=False, plots=False, cache=False,
        )
    )  # fmt: skip

    assert "disabled: answer with code alone" in questions[0]


def test_a_model_behind_an_openai_compatible_server_runs_through_the_http_clients(
    tmp_path: Path, serve: Any
) -> None:
    server: FakeLMServer = serve(Oracle("logs"))  # the oracle answering over real sockets

    summary = run_eval(
        EvalConfig(
            out=tmp_path, families=["logs"], lengths=[8_000], strategies=["direct", "rlm"],
            model="openai/scripted", sub_model="openai/scripted-mini", base_url=server.url,
            progress=False, plots=False,
        )
    )  # fmt: skip

    assert [(r["strategy"], r["score"]) for r in summary.ran] == [("direct", 1.0), ("rlm", 1.0)]
    assert summary.ran[0]["model"] == "openai/scripted" and summary.ran[0]["oracle"] is False
    models = {(r.is_root, r.model) for r in server.requests}
    # Direct's single request and the RLM's turns go to the root model, chunks to the sub-model
    assert models == {(False, "scripted"), (True, "scripted"), (False, "scripted-mini")}
    assert server.request_count == sum(r["llm_calls"] for r in summary.ran)


def test_direct_overflows_and_scores_zero_above_the_window(tmp_path: Path) -> None:
    summary = run_eval(
        EvalConfig(
            out=tmp_path, families=["niah"], lengths=[8_000], strategies=["direct", "rlm"],
            oracle="oracle", context_window=4_000, progress=False, plots=False,
        )
    )  # fmt: skip
    by = {r["strategy"]: r for r in summary.ran}

    assert by["direct"]["status"] == "overflow" and by["direct"]["score"] == 0.0
    assert by["direct"]["llm_calls"] == 0 and "4,000" in by["direct"]["error"]
    assert by["rlm"]["score"] == 1.0


@needs_extra("eval", "matplotlib")
def test_the_report_has_the_tables_the_paper_figures_and_valid_plots(oracle_eval: Any) -> None:
    report = oracle_eval.report.read_text()

    assert "ORACLE (scripted, not a model)" in report
    assert "| family | length | direct | rlm | rlm-d2 | rlm-nosub | paper" in report
    pairs_row = next(line for line in report.splitlines() if line.startswith("| pairs | 8k"))
    assert "100.0 (n=1)" in pairs_row and "OOLONG-Pairs (32K tokens, F1): base 0.1" in pairs_row
    assert "median cost (USD)" in report and "mean LM calls" in report
    assert [p.name for p in oracle_eval.plots] == ["accuracy_vs_length.png", "cost_calls.png"]
    for plot in oracle_eval.plots:
        width, height = assert_valid_png(plot)
        assert width > 300 and height > 200
        assert f"]({plot.name})" in report


def test_without_matplotlib_the_report_says_so_in_one_line(
    oracle_eval: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError

    written = write_report(oracle_eval.records, tmp_path, plots=True)

    assert written.plots == [] and not list(tmp_path.glob("*.png"))
    assert written.notes == [
        "plots skipped: matplotlib is not installed (pip install 'recursa[eval]')"
    ]
    assert written.notes[0] in written.markdown.read_text()


def test_an_unknown_strategy_or_family_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'rlm-d3'"):
        EvalConfig(out=tmp_path, strategies=["rlm-d3"], oracle="oracle")
    with pytest.raises(ConfigError, match="unknown task family 'trivia'"):
        EvalConfig(out=tmp_path, families=["trivia"], oracle="oracle")
    with pytest.raises(ConfigError, match="no model"):
        EvalConfig(out=tmp_path)


# ---- the real datasets, from fixture files -----------------------------------------------


def test_the_oolong_loader_keeps_the_subset_and_lengths_asked_for() -> None:
    tasks = load_oolong(FIXTURES / "oolong_synth.jsonl", lengths=[8_000])

    assert [t.id for t in tasks] == ["oolong-11", "oolong-12"]  # not 131K, not spam
    assert tasks[0].length == 8192 and tasks[0].scorer == "oolong"
    assert tasks[0].paper == "oolong" and tasks[0].family == "oolong-data"
    every = load_oolong(FIXTURES / "oolong_synth.jsonl", subsets=(), lengths=None)
    assert len(every) == 4


def test_the_longbench_loader_keeps_the_code_domain_by_default() -> None:
    tasks = load_longbench(FIXTURES / "longbench_v2.json")

    assert [t.expected for t in tasks] == ["B", "A"]
    assert "(B) crc()" in tasks[0].question and tasks[0].paper == "codeqa"
    assert len(load_longbench(FIXTURES / "longbench_v2.json", domains=())) == 3


def test_a_json_array_is_read_one_item_at_a_time() -> None:
    with (FIXTURES / "longbench_v2.json").open() as fh:
        items = list(_json_array(fh, block=16))  # far smaller than one item

    assert [i["answer"] for i in items] == ["B", "C", "A"]


def test_the_browsecomp_loader_pads_each_query_with_corpus_documents() -> None:
    padded = load_browsecomp(
        FIXTURES / "browsecomp_plus_decrypted.jsonl",
        corpus=FIXTURES / "browsecomp_corpus.jsonl",
        docs_per_query=5,
    )
    alone = load_browsecomp(FIXTURES / "browsecomp_plus_decrypted.jsonl")

    first = padded[0].context
    assert len(first) == 5 and sum("[document d1]" in d for d in first) == 1
    assert sum("[document c" in d for d in first) == 3  # d1, d2 and three from the corpus
    assert [len(t.context) for t in alone] == [2, 1]
    assert padded[0].expected == "Port Aldo" and padded[0].paper == "browsecomp"


def _answer_key(task: Task) -> str:
    """What a perfect reader would reply to a dataset task (a test stand-in, not a model)."""
    if task.scorer == "oolong":
        gold = ast.literal_eval(task.expected)[0]
        return f"Answer: {gold}"
    return str(task.expected)


def test_dataset_tasks_run_through_the_harness_with_their_rubrics(tmp_path: Path) -> None:
    tasks = [
        *load_oolong(FIXTURES / "oolong_synth.jsonl", lengths=None),
        *load_longbench(FIXTURES / "longbench_v2.json"),
        *load_browsecomp(FIXTURES / "browsecomp_plus_decrypted.jsonl"),
    ]

    def key(task: Task) -> ScriptedLM:
        answer = _answer_key(task)
        return ScriptedLM(root=[f"FINAL({answer})"], sub=lambda request: answer)

    def off_by_one(task: Task) -> ScriptedLM:
        return ScriptedLM(root=["FINAL(Answer: 5)"], sub=lambda request: "Answer: 5")

    right = run_eval(
        EvalConfig(
            out=tmp_path / "right", families=[], extra_tasks=tasks,
            strategies=["direct", "rlm"], client_factory=key, model_label="answer-key",
            progress=False, plots=False,
        )
    )  # fmt: skip
    wrong = run_eval(
        EvalConfig(
            out=tmp_path / "wrong", families=[], extra_tasks=tasks,
            strategies=["direct"], client_factory=off_by_one, model_label="off-by-one",
            progress=False, plots=False,
        )
    )  # fmt: skip

    assert len(right.ran) == 2 * len(tasks) == 14
    assert all(r["score"] == 1.0 for r in right.ran), [
        (r["task_id"], r["answer"]) for r in right.ran if r["score"] < 1
    ]
    scores = {r["task_id"]: r["score"] for r in wrong.ran}
    assert scores["oolong-11"] == 0.75  # gold 6, answered 5: OOLONG's 0.75 ** 1
    assert scores["longbench-66f36490821e116aacb2cc22"] == 0.0
    report = right.report.read_text()
    assert "BrowseComp-Plus, 1K documents" in report
    assert "a similar task" not in report.split("| browsecomp-data")[1].splitlines()[0]


def test_the_oracle_is_refused_for_real_datasets(tmp_path: Path) -> None:
    tasks = load_longbench(FIXTURES / "longbench_v2.json")

    with pytest.raises(ConfigError, match="real datasets need a model"):
        EvalConfig(out=tmp_path, extra_tasks=tasks, oracle="oracle")
