"""Inputs that used to be taken silently: standard input on a terminal, an option the
strategy ignores, binary files in a directory context (the batch's bad paths are in
test_batch.py)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
from pathlib import Path

from e2e_helpers import RECURSA, host_env, repl, run_cli
from recursa.testing import ScriptedLM


def test_context_from_a_terminal_says_it_is_reading_standard_input(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(context.strip())")]))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [RECURSA, "run", "what did I type?", "--context", "-", "--model", "openai/x",
         "--base-url", server.url, "--no-store"],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=host_env(),
    )  # fmt: skip
    os.close(slave)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 60)
        assert ready, "recursa waited on the terminal without a word"
        notice = proc.stderr.readline().decode()  # before anything was typed
        os.write(master, b"typed by hand\n\x04")  # a line, then Ctrl-D
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert notice.startswith("recursa: reading the context from standard input; end it with")
    assert proc.returncode == 0, err
    assert out.decode() == "typed by hand\n"


def test_context_from_a_pipe_needs_no_notice(serve) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL(context.strip())")]))
    done = run_cli(
        ["run", "q", "--context", "-", "--model", "openai/x", "--base-url", server.url,
         "--no-store", "--quiet"],
        stdin=b"piped\n",
    )  # fmt: skip
    assert done.rc == 0 and done.out == "piped\n" and done.err == ""


def test_mode_with_the_direct_strategy_is_refused_in_one_line(serve) -> None:
    server = serve(ScriptedLM(root=["never sent"]))
    for command in (["run", "q"], ["demo"]):
        done = run_cli(
            [*command, "--strategy", "direct", "--mode", "actions", "--model", "openai/x",
             "--base-url", server.url],
        )  # fmt: skip
        assert done.rc == 2, done.err
        assert done.err_lines == [
            "recursa: error: --mode has no effect with --strategy direct (no REPL runs): "
            "leave one out"
        ]
    assert server.request_count == 0


def test_a_binary_file_in_a_directory_context_is_listed_with_the_reason(
    serve, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    (docs / "img").mkdir(parents=True)
    (docs / "notes.txt").write_text("the code is 7\n")
    (docs / "img" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    server = serve(ScriptedLM(root=[repl("FINAL(sorted(context))")]))
    done = run_cli(
        ["run", "which files?", "--context", str(docs), "--model", "openai/x", "--base-url",
         server.url, "--no-store"],
    )  # fmt: skip
    assert done.rc == 0, done.err
    assert done.out == '["notes.txt"]\n'
    warnings = [line for line in done.err_lines if "warning" in line]
    assert warnings == [
        f"recursa: warning: context directory {docs}: cannot read 1 file: "
        "img/logo.png (a PNG image: not text)"
    ]
