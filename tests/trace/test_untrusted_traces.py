"""A trace may come from anyone: replay, view, mine and distill read it as hostile input.

Each test records a real run through the CLI (the fake server, real sandbox workers), edits
its trace as an attacker would, and runs the real `recursa` command on it: nothing is
written outside replay's own temporary folder, no host path the trace names is read, the
recorded code runs only where it is isolated, and every reader ends in one line.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import recursa.sandbox
from e2e_helpers import RECURSA, CliResult, host_env, repl, run_cli
from recursa.cli import dispatch
from recursa.events import RunStarted
from recursa.testing import FakeLMServer, ScriptedLM
from recursa.trace.reader import MAX_EVENTS, MAX_LINE_BYTES, read_trace
from recursa.trace.store import RunStore, default_path
from run_samples import record_run, scripted_model

SECRET = "canary-7f3a-do-not-leak"
PRINT_CONTEXT = repl("print(str(context)[:200])\nFINAL('seen')")


def _cli(args: list[str], *, cwd: Path | None = None, memory: int | None = None) -> CliResult:
    """`recursa ARGS` in a real process, in the folder `cwd`, with at most `memory` bytes
    of address space."""

    def limit() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    done = subprocess.run(
        [RECURSA, *args], cwd=cwd, env=host_env(), capture_output=True, timeout=120,
        preexec_fn=limit,
    )  # fmt: skip
    return CliResult(done.returncode, done.stdout.decode(), done.stderr.decode())


def _record(serve, tmp_path: Path, context: Path, *extra: str, cwd: Path | None = None) -> Path:
    """A real traced run over `context` whose code prints the context."""
    server = serve(ScriptedLM(root=[PRINT_CONTEXT]))
    trace = tmp_path / "run.jsonl"
    done = _cli(
        [
            "run", "What is in it?", "--context", str(context), "--model", "openai/x",
            "--base-url", server.url, "--trace", str(trace), "--json", "--quiet", *extra,
        ],
        cwd=cwd,
    )  # fmt: skip
    assert done.rc == 0, done.err
    server.stop()
    return trace


def _rewrite(trace: Path, edit: Any) -> Path:
    events = read_trace(trace)
    for event in events:
        edit(event)
    out = trace.with_name("hostile.jsonl")
    out.write_text("".join(json.dumps(e) + "\n" for e in events))
    return out


def _one_error_line(done: CliResult, code: int = 2) -> str:
    assert done.rc == code, (done.rc, done.err)
    assert "Traceback" not in done.err
    assert len(done.err_lines) == 1, done.err
    return done.err_lines[0]


# ---- writes: a stored directory lays out only inside replay's own folder -------------------


@pytest.mark.parametrize("name", ["ABSOLUTE", "../escaped.txt", "sub/../../escaped.txt"])
def test_a_stored_directory_naming_a_file_outside_is_refused_and_nothing_is_written(
    serve, tmp_path: Path, name: str
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("alpha\n")
    trace = _record(serve, tmp_path, corpus, "--trace-context")
    outside = tmp_path / "outside" / "escaped.txt"
    name = str(outside) if name == "ABSOLUTE" else name

    def plant(event: dict[str, Any]) -> None:
        if event["type"] == "context_data":
            event["files"][name] = "written by the trace"

    hostile = _rewrite(trace, plant)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    done = run_cli(["replay", str(hostile), "--quiet"], env=host_env(TMPDIR=str(scratch)))

    assert "not a plain relative path" in _one_error_line(done)
    assert not outside.exists() and not outside.parent.exists()
    assert list(scratch.rglob("*")) == []  # not even replay's own folder was made


# ---- reads: a path the trace names is never read unless given again -----------------------


def test_a_trace_naming_a_host_file_never_reads_it(serve, tmp_path: Path) -> None:
    context = tmp_path / "ctx.txt"
    context.write_text("harmless text\n")
    trace = _record(serve, tmp_path, context)
    canary = tmp_path / "private.txt"
    canary.write_text(f"{SECRET}\n")

    def point_at_canary(event: dict[str, Any]) -> None:
        if event["type"] == "run_start":
            event["contexts"][0]["name"] = str(canary)

    hostile = _rewrite(trace, point_at_canary)
    context.unlink()

    done = run_cli(["replay", str(hostile), "--json", "--quiet"])
    again = run_cli(["replay", str(hostile), "--context", str(canary), "--json", "--quiet"])

    line = _one_error_line(done)
    assert "--context PATH" in line and "never read" in line
    assert SECRET not in done.out + done.err
    assert again.rc == 4  # given again by the user, it is read (and differs)
    assert json.loads(again.out)["first_divergence"]["what"] == "context hash"


# ---- code: recorded code runs where it is isolated, or where the user says -----------------


def test_replay_runs_recorded_code_only_where_it_is_isolated(serve, tmp_path: Path) -> None:
    context = tmp_path / "ctx.txt"
    context.write_text("harmless text\n")
    trace = _record(serve, tmp_path, context)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bwrap").write_text("#!/bin/sh\necho 'no namespaces here' >&2\nexit 1\n")
    (bin_dir / "bwrap").chmod(0o755)
    env = host_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    replayed = run_cli(["replay", str(trace), "--context", str(context), "--json"], env=env)

    assert replayed.rc == 0, replayed.err
    assert "sandbox: landlock (" in replayed.err  # bwrap cannot run here: the next that isolates
    assert json.loads(replayed.out)["answer"] == "seen"


def test_replay_refuses_where_nothing_isolates_unless_subprocess_is_named(
    serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    context = tmp_path / "ctx.txt"
    context.write_text("harmless text\n")
    trace = _record(serve, tmp_path, context)
    monkeypatch.setattr(recursa.sandbox, "bwrap_problem", lambda: "bwrap is not installed")
    monkeypatch.setattr(recursa.sandbox, "landlock_problem", lambda: "the kernel has no Landlock")
    args = ["replay", str(trace), "--context", str(context), "--json", "--quiet"]

    refused = dispatch(args)
    refused_io = capsys.readouterr()
    named = dispatch([*args, "--sandbox", "subprocess"])
    named_io = capsys.readouterr()

    assert refused == 2
    assert refused_io.out == ""
    assert len(refused_io.err.strip().splitlines()) == 1
    assert "--sandbox subprocess" in refused_io.err
    assert named == 0, named_io.err
    assert json.loads(named_io.out)["answer"] == "seen"


# ---- readers: bounded, one line, never a traceback -----------------------------------------


def _huge_line(path: Path) -> None:
    with open(path, "wb") as fh:  # sparse: no disk is used for the zeros
        fh.write(b'{"type": "run_start", "question": "')
        fh.truncate(2 * MAX_LINE_BYTES)


def _deep(path: Path) -> None:
    path.write_text('{"type": "run_start", "question": ' + "[" * 100_000 + "]" * 100_000 + "}\n")


def _nested_under_the_stack(path: Path) -> None:
    path.write_text('{"type": "run_start", "settings": ' + "[" * 900 + "]" * 900 + "}\n")


def _many(path: Path) -> None:
    path.write_text('{"type": "turn_start", "run_id": "r"}\n' * (MAX_EVENTS + 1))


def _not_utf8(path: Path) -> None:
    path.write_bytes(b'{"type": "run_start", "question": "\xff\xfe"}\n')


def _malformed(path: Path) -> None:
    lines = [
        {"type": "run_start", "run_id": "r", "question": "q", "model": "openai/x"},
        {"type": "lm_call_end", "run_id": "r", "purpose": "root"},
        {"type": "context_data", "run_id": "r", "index": "zero"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _bad_settings(path: Path) -> None:
    start = {"type": "run_start", "run_id": "r", "question": "q", "model": "openai/x"}
    path.write_text(json.dumps({**start, "settings": {"prices": 5}}) + "\n")


def _wrong_types(path: Path) -> None:
    """A run whose fields hold values of the wrong type, where readers convert them."""
    path.write_text(
        (Path(__file__).parents[1] / "hostile_traces" / "wrong_types.jsonl").read_text()
    )


@pytest.mark.parametrize(
    "write",
    [
        _huge_line, _deep, _nested_under_the_stack, _many, _not_utf8, _malformed,
        _bad_settings, _wrong_types,
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["replay", "view", "mine", "distill"])
def test_every_reader_ends_a_hostile_trace_in_one_line(
    tmp_path: Path, command: str, write: Any
) -> None:
    trace = tmp_path / "hostile.jsonl"
    write(trace)
    out = tmp_path / "out.html"
    extra = ["--out", str(out)] if command == "view" else []

    done = _cli([command, str(trace), *extra], memory=3 * MAX_LINE_BYTES)

    assert "Traceback" not in done.err
    shown_anyway = (_malformed, _bad_settings) + ((_wrong_types,) if command == "view" else ())
    if write in shown_anyway and command in ("view", "mine"):
        assert done.rc == 0, done.err  # these two show what they can of any event
        return
    assert done.rc == 2, done.err
    *warnings, last = done.err_lines
    assert last.startswith("recursa: error: ")
    # the tolerant readers (mine, distill) first say what they skipped, and how much
    assert all(w.startswith("recursa: warning: ") for w in warnings) and len(warnings) <= 2
    assert not out.exists()


# ---- the viewer: nothing from the trace becomes markup -------------------------------------

PAYLOAD = "\"'><img src=x onerror=alert(1)><script>alert(2)</script><!--"


def _poison(value: Any, numbers: bool, depth: int = 0) -> Any:
    """Every string and every nested key of an event (and with `numbers`, every number,
    made text) with markup appended."""
    if isinstance(value, dict):
        return {
            (k if depth == 0 else k + PAYLOAD): (
                v if k == "type" else _poison(v, numbers, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_poison(v, numbers, depth + 1) for v in value]
    if isinstance(value, str):
        return value + PAYLOAD
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value}{PAYLOAD}"
    return value


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.comments = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_comment(self, data: str) -> None:
        self.comments += 1


@pytest.mark.parametrize("numbers", [False, True], ids=["strings", "numbers_too"])
def test_view_escapes_every_field_of_a_hostile_trace(tmp_path: Path, numbers: bool) -> None:
    trace = tmp_path / "run.jsonl"
    with FakeLMServer(scripted_model()) as server:
        record_run(server, trace)
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text("".join(json.dumps(_poison(e, numbers)) + "\n" for e in read_trace(trace)))
    out = tmp_path / "page.html"

    done = run_cli(["view", str(hostile), "--out", str(out)])

    assert done.rc == 0, done.err
    page = out.read_text(encoding="utf-8")
    tags = _Tags()
    tags.feed(page)
    assert [t for t, _ in tags.tags].count("script") == 1  # the page's own
    assert "img" not in [t for t, _ in tags.tags]
    assert not [a for _, attrs in tags.tags for a in attrs if a.startswith("on")]
    assert tags.comments == 0
    assert page.count("alert(2)") > 10  # the payload is there, as text


# ---- ids and paths: one resolution for every command (issue 22, item 3) --------------------


def test_a_missing_trace_file_is_not_found_for_every_command(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.jsonl")

    for command in ("replay", "view", "distill", "mine"):
        done = run_cli([command, missing])
        assert _one_error_line(done) == f"recursa: error: trace file not found: {missing}"


def test_a_stored_run_replays_and_views_by_its_id_from_any_folder(serve, tmp_path: Path) -> None:
    here = tmp_path / "project"
    here.mkdir()
    (here / "ctx.txt").write_text("harmless text\n")
    server = serve(ScriptedLM(root=[PRINT_CONTEXT]))
    done = _cli(
        [
            "run", "What is in it?", "--context", "ctx.txt", "--model", "openai/x",
            "--base-url", server.url, "--trace", "run.jsonl", "--json", "--quiet",
        ],
        cwd=here,
    )  # fmt: skip
    assert done.rc == 0, done.err
    run_id = json.loads(done.out)["run_id"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    replayed = _cli(["replay", run_id, "--json", "--quiet"], cwd=elsewhere)
    viewed = _cli(["view", run_id[:8]], cwd=elsewhere)
    shown = _cli(["runs", "show", run_id, "--json"], cwd=elsewhere)

    assert replayed.rc == 0, replayed.err
    assert json.loads(replayed.out)["diverged"] is False
    assert viewed.rc == 0, viewed.err
    assert (elsewhere / f"{run_id}.html").is_file()
    assert json.loads(shown.out)["trace"] == str(here / "run.jsonl")


def test_from_turn_past_the_recorded_turns_is_a_usage_error(serve, tmp_path: Path) -> None:
    context = tmp_path / "ctx.txt"
    context.write_text("harmless text\n")
    trace = _record(serve, tmp_path, context)

    done = run_cli([
        "replay", str(trace), "--context", str(context), "--from-turn", "5",
        "--model", "openai/live", "--base-url", "http://127.0.0.1:9",
    ])  # fmt: skip

    assert "--from-turn 5: the recorded run has 1 root turn(s)" in _one_error_line(done)


def test_a_run_a_server_client_started_never_reads_the_paths_it_names(tmp_path: Path) -> None:
    canary = tmp_path / "private.txt"
    canary.write_text(f"{SECRET}\n")
    store = RunStore(default_path())
    store.list(1)  # created at the current schema
    start = {
        "type": "run_start", "run_id": "served0000ab", "question": "q", "model": "openai/x",
        "contexts": [{"name": str(canary), "kind": "text", "size": 24, "sha256": "0" * 64}],
    }  # fmt: skip
    with sqlite3.connect(store.path) as db:
        db.execute(
            "INSERT INTO runs (id, started_at, question, model, kind, cwd)"
            " VALUES ('served0000ab', 0, 'q', 'openai/x', 'serve', ?)",
            (str(tmp_path),),
        )
        db.execute(
            "INSERT INTO events (run_id, seq, event) VALUES ('served0000ab', 0, ?)",
            (json.dumps(start),),
        )

    done = run_cli(["replay", "served0000ab", "--json", "--quiet"])

    assert "--context PATH" in _one_error_line(done)
    assert SECRET not in done.out + done.err


@pytest.mark.parametrize(
    "ref",
    [
        {"name": "d", "kind": "dir", "mmap_threshold": "1M"},
        {"name": "d", "kind": "dir", "mmap_threshold": -1},
        {"name": ["d"], "kind": "dir"},
        {"name": "d", "kind": "text", "size": 1.5},
    ],
)
def test_replay_refuses_a_malformed_context_reference_in_one_line(
    tmp_path: Path, ref: dict[str, Any]
) -> None:
    trace = tmp_path / "hostile.jsonl"
    stored = {"type": "context_data", "index": 0, "name": "d", "files": {"a.txt": "alpha"}}
    start = {"type": "run_start", "question": "q", "model": "openai/x", "contexts": [ref]}
    trace.write_text(json.dumps(stored) + "\n" + json.dumps(start) + "\n")

    done = run_cli(["replay", str(trace), "--quiet"])

    assert "not a replayable recursa trace" in _one_error_line(done)


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested more than 200 deep"),
        ('{"type": "block", "output": "torn', "not JSON"),
        ("[1, 2]", "not an event (a JSON object with a type)"),
    ],
)
@pytest.mark.parametrize("command", ["replay", "view", "mine", "distill"])
def test_a_stored_run_with_a_hostile_event_row_ends_in_one_line(
    command: str, row: str, why: str, tmp_path: Path
) -> None:
    """The run store is a file too: its rows are read by the same reader as a trace."""
    store = RunStore()
    run_id = store.save([RunStarted(question="q", model="m", sub_model=None, settings={},
                                    contexts=[], system_prompt="s", run_id="abc123")])  # fmt: skip
    with sqlite3.connect(default_path()) as db:
        db.execute("UPDATE events SET event = ? WHERE run_id = ?", (row, run_id))
    extra = ["--out", str(tmp_path / "out.html")] if command == "view" else []

    line = _one_error_line(_cli([command, run_id, *extra]))

    assert line.startswith(f"recursa: error: run {run_id} line 1: {why}"), line


# ---- the terminal ------------------------------------------------------------------------


def test_stored_text_reaches_the_terminal_without_its_escape_sequences(serve) -> None:
    title = "\x1b]0;pwned\x07"  # sets a terminal's title: stored text must not reach it raw
    server = serve(ScriptedLM(root=[repl(f"FINAL({title!r})")]))

    run = run_cli(["run", f"what {title}?", "--model", "openai/x", "--base-url", server.url])
    listed = run_cli(["runs", "list"])
    run_id = listed.out.splitlines()[1].split()[0]
    shown = run_cli(["runs", "show", run_id])

    assert run.rc == 0, run.err
    assert run.out == title + "\n"  # piped, the answer is the answer, byte for byte
    for done in (listed, shown):
        assert done.rc == 0, done.err
        assert "\x1b" not in done.out and "\x07" not in done.out
        assert "what \\x1b]0;pwned\\x07?" in done.out
