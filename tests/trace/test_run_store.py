"""The run store: every CLI run kept in SQLite, listed and shown, with migrations."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from e2e_helpers import run_cli
from recursa.errors import ConfigError
from recursa.testing import ScriptedLM
from recursa.trace.store import MIGRATIONS, SCHEMA_VERSION, RunStore, default_path


def _run(serve, question: str, tmp_path: Path, *extra: str) -> dict:
    server = serve(ScriptedLM(root=["```repl\nprint(len(context))\n```", f"FINAL({question}!)"]))
    (tmp_path / "ctx.txt").write_text("hello")
    done = run_cli([
        "run", question, "--context", str(tmp_path / "ctx.txt"), "--model", "openai/x",
        "--base-url", server.url, "--json", "--quiet", *extra,
    ])  # fmt: skip
    assert done.rc == 0, done.err
    return json.loads(done.out)


def test_runs_list_shows_runs_from_two_separate_invocations(serve, tmp_path: Path) -> None:
    first = _run(serve, "first", tmp_path)
    second = _run(serve, "second", tmp_path)

    listed = run_cli(["runs", "list"])

    assert listed.rc == 0, listed.err
    lines = listed.out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["RUN", "STARTED", "KIND", "STATUS", "CALLS", "MODEL", "QUESTION"]
    assert lines[1].startswith(second["run_id"]) and lines[2].startswith(first["run_id"])
    assert re.match(r"\w{12}  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d  run ", lines[1]), lines[1]


def test_runs_show_gives_the_summary_and_the_whole_trace(serve, tmp_path: Path) -> None:
    out = _run(serve, "shown", tmp_path)

    summary = json.loads(run_cli(["runs", "show", out["run_id"][:6], "--json"]).out)
    shown = run_cli(["runs", "show", out["run_id"]]).out.splitlines()
    started = [line for line in shown if line.startswith("started_at: ")]
    assert isinstance(summary["started_at"], float)  # the JSON keeps epoch seconds
    assert re.fullmatch(r"started_at: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", started[0]), shown
    trace = run_cli(["runs", "show", out["run_id"], "--trace"]).out.strip().splitlines()

    assert summary["answer"] == "shown!" and summary["status"] == "ok"
    assert summary["usage"] == out["usage"]
    kinds = [json.loads(line)["type"] for line in trace]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert kinds.count("turn_end") == 2


def test_a_stored_run_replays_by_its_id(serve, tmp_path: Path) -> None:
    out = _run(serve, "again", tmp_path)

    done = run_cli(["replay", out["run_id"], "--json", "--quiet"])
    plain = run_cli(["replay", out["run_id"], "--quiet"])

    assert done.rc == 0, done.err
    replayed = json.loads(done.out)  # as the README says: run's JSON plus the divergence
    assert replayed["answer"] == "again!" and replayed["status"] == "ok"
    assert replayed["diverged"] is False and replayed["first_divergence"] is None
    assert plain.rc == 0 and plain.out == "again!\n"  # without --json: the answer, as run


def test_no_store_keeps_the_run_out_of_the_store(serve, tmp_path: Path) -> None:
    _run(serve, "hidden", tmp_path, "--no-store")

    assert RunStore().list() == []


def test_an_unknown_run_id_is_a_one_line_usage_error() -> None:
    done = run_cli(["runs", "show", "nosuchrun"])

    assert done.rc == 2
    assert len(done.err.strip().splitlines()) == 1 and "nosuchrun" in done.err


def test_a_store_at_schema_1_is_migrated_forward_keeping_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO runs (id, started_at, question, model, status, answer, iterations,"
            " usage, error) VALUES ('abc', 1.0, 'q', 'openai/x', 'ok', '\"a\"', 1, '{}', NULL)"
        )

    runs = RunStore(path).list()

    assert [r.id for r in runs] == ["abc"] and runs[0].kind == "run"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_store_from_a_newer_recursa_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(ConfigError, match="upgrade recursa"):
        RunStore(path).list()


def test_the_store_lives_under_recursa_home_when_it_is_set(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECURSA_HOME", str(tmp_path))

    assert default_path() == tmp_path / "runs.db"
