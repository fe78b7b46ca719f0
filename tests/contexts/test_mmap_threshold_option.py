"""`RLM(mmap_threshold=...)`: a context given as a `Path` is mapped from that size on, in a
run and in a session. The argument wins over RECURSA_MMAP_THRESHOLD, which wins over the
64 MiB default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import repl, run_cli
from recursa import RLM
from recursa.errors import ConfigError
from recursa.testing import ScriptedLM

KIND = repl("FINAL([type(context).__name__, context[:5]])")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "service.log"
    path.write_text("".join(f"{i:05d} heartbeat ok\n" for i in range(500)))  # 9,000 bytes
    return path


def _kind(serve, log: Path, **options: Any) -> list[str]:
    server = serve(ScriptedLM(root=[KIND]))
    result = RLM("openai/x", base_url=server.url, **options).run("q", log)
    assert result.status == "ok", result.error
    return result.answer


def test_a_path_is_mapped_at_the_programs_threshold(serve, log) -> None:
    assert _kind(serve, log, mmap_threshold=1024) == ["MappedText", "00000"]
    assert _kind(serve, log, mmap_threshold=log.stat().st_size + 1) == ["str", "00000"]
    assert _kind(serve, log) == ["str", "00000"]  # 64 MiB by default


def test_the_argument_wins_over_the_environment_which_wins_over_the_default(
    serve, log, monkeypatch
) -> None:
    monkeypatch.setenv("RECURSA_MMAP_THRESHOLD", "1G")
    assert _kind(serve, log, mmap_threshold=1024) == ["MappedText", "00000"]
    monkeypatch.setenv("RECURSA_MMAP_THRESHOLD", "1K")
    assert _kind(serve, log) == ["MappedText", "00000"]
    assert _kind(serve, log, mmap_threshold=1 << 20) == ["str", "00000"]


def test_a_session_loads_a_path_at_the_programs_threshold(serve, log) -> None:
    server = serve(ScriptedLM(root=[repl("FINAL('none')"), KIND]))
    with RLM("openai/x", base_url=server.url, mmap_threshold=1024).session() as session:
        session.ask("FIRST?")
        second = session.ask("SECOND?", context=log)
    assert (second.status, second.answer) == ("ok", ["MappedText", "00000"])


@pytest.mark.parametrize("bad", [-1, "64M", 1.5, True])
def test_a_threshold_that_is_not_a_number_of_bytes_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigError, match="mmap_threshold must be a number of bytes"):
        RLM("openai/x", base_url="http://127.0.0.1:9", mmap_threshold=bad)


@pytest.mark.parametrize("command", ["run", "batch", "pipeline"])
@pytest.mark.parametrize(
    ("size", "why"),
    [("12Q", "expected bytes, or a number with K, M or G"), ("-5", "must not be negative")],
)
def test_a_bad_mmap_threshold_is_one_usage_line_before_anything_runs(
    tmp_path: Path, log: Path, command: str, size: str, why: str
) -> None:
    out = tmp_path / "results.jsonl"
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"id": 1, "question": "q"}\n')
    args = {
        "run": ["run", "q", "--context", str(log), "--model", "openai/x"],
        "batch": ["batch", str(questions), "--out", str(out), "--model", "openai/x"],
        "pipeline": ["pipeline", str(tmp_path / "none.py"), "q", "--context", str(log)],
    }[command]

    done = run_cli([*args, "--mmap-threshold", size])

    assert done.rc == 2
    assert done.err_lines == [
        f"recursa: error: Invalid value for '--mmap-threshold': bad size {size!r}: {why}"
    ]
    assert not out.exists()
