"""`recursa eval` and `recursa bench` as a user runs them: the installed console script in a
real subprocess, offline."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

from e2e_helpers import RECURSA, CliResult, finish_cli, host_env, run_cli, start_cli
from extras import needs_extra
from recursa.evals import load_results

README = Path(__file__).resolve().parents[2] / "README.md"
ORACLE = "ORACLE (scripted, not a model)"


def test_recursa_eval_with_the_oracle_says_so_and_a_resumed_rerun_runs_nothing(
    tmp_path: Path,
) -> None:
    args = [
        "eval", "--oracle", "--families", "niah,logs", "--lengths", "8k",
        "--strategies", "direct,rlm", "--out", str(tmp_path), "--no-plots",
    ]  # fmt: skip

    first = run_cli(args, timeout=120)
    fresh = run_cli(args, timeout=120)
    again = run_cli([*args, "--resume"], timeout=120)

    assert first.rc == 0, first.err
    assert first.out.startswith(f"model: {ORACLE}\n")
    assert ORACLE in first.err_lines[0]
    assert "| niah | 8k | 100.0 (n=1) | 100.0 (n=1) | — |" in first.out
    assert f"report: {tmp_path / 'report.md'}" in first.out
    assert len(load_results(tmp_path / "results.jsonl")) == 4
    # a fresh eval into a folder holding results is refused, in one line, and changes nothing
    assert fresh.rc == 2 and fresh.err_lines[1:] == [
        f"recursa: error: {tmp_path / 'results.jsonl'} already holds 4 results: pass --resume "
        "to go on from them, or choose another --out"
    ], fresh.err
    assert again.rc == 0, again.err
    assert f"4 runs already in {tmp_path / 'results.jsonl'}: skipped" in again.err
    assert len(load_results(tmp_path / "results.jsonl")) == 4


def test_ctrl_c_stops_recursa_eval_and_keeps_the_finished_results(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    proc = start_cli(
        ["eval", "--oracle", "--lengths", "8k", "--seeds", "2", "--jobs", "1",
         "--out", str(tmp_path), "--no-plots"]
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    result = finish_cli(proc, timeout=60)

    saved = load_results(results)
    assert result.rc == 130, result.err
    assert "interrupted;" in result.err_lines[-1] and "again with --resume" in result.err
    assert 2 <= len(saved) < 48  # 6 families x 2 seeds x 4 strategies were planned
    assert len({(r["task_id"], r["strategy"]) for r in saved}) == len(saved)


def test_recursa_eval_without_a_model_is_a_usage_error_in_one_line(tmp_path: Path) -> None:
    result = run_cli(["eval", "--out", str(tmp_path)])

    assert result.rc == 2
    assert len(result.err_lines) == 1 and "no model" in result.err_lines[0]
    assert not (tmp_path / "results.jsonl").exists()


def test_recursa_eval_rejects_an_unknown_strategy(tmp_path: Path) -> None:
    result = run_cli(["eval", "--oracle", "--strategies", "rlm,magic", "--out", str(tmp_path)])

    assert result.rc == 2 and "unknown strategy 'magic'" in result.err


def test_recursa_eval_report_only_rewrites_the_report_from_the_results(tmp_path: Path) -> None:
    ran = run_cli(
        ["eval", "--oracle", "--families", "vartrack", "--lengths", "4k", "--strategies",
         "rlm", "--out", str(tmp_path), "--no-plots", "--quiet"],
        timeout=120,
    )  # fmt: skip
    (tmp_path / "report.md").unlink()

    again = run_cli(["eval", "--out", str(tmp_path), "--report-only", "--no-plots"])

    assert ran.rc == 0 and again.rc == 0, again.err
    assert again.out.strip() == str(tmp_path / "report.md")
    assert "| vartrack | 4k |" in (tmp_path / "report.md").read_text()


@needs_extra("eval", "matplotlib")
def test_the_readme_eval_command_runs_as_written(tmp_path: Path) -> None:
    found = re.search(r"<!-- cli-example: eval -->\n```bash\n(.+?)\n```", README.read_text())
    assert found, "README lost its marked `recursa eval` example"
    argv = shlex.split(found.group(1))
    assert argv[0] == "recursa" and "--oracle" in argv

    done = subprocess.run(
        [RECURSA, *argv[1:]], cwd=tmp_path, env=host_env(), capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    result = CliResult(done.returncode, done.stdout, done.stderr)

    assert result.rc == 0, result.err
    out = tmp_path / argv[argv.index("--out") + 1]
    assert (out / "report.md").is_file()
    assert (out / "accuracy_vs_length.png").read_bytes()[:4] == b"\x89PNG"
    assert all(r["score"] == 1.0 for r in load_results(out / "results.jsonl"))


def test_recursa_bench_prints_its_table_with_the_machine(tmp_path: Path) -> None:
    table = tmp_path / "bench.md"

    result = run_cli(["bench", "--only", "ledger", "--out", str(table)], timeout=240)

    assert result.rc == 0, result.err
    assert result.out.startswith("Machine: ")
    assert "| benchmark | figure | result | target | verdict |" in result.out
    assert "| ledger | reserve+settle, 1 thread, no limits |" in result.out
    assert table.read_text() == result.out
    assert "== ledger" in result.err  # the benchmark's own output went to standard error
