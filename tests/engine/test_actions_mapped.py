"""Action mode over memory-mapped files: the kernel maps a `file` context (and a directory's
large files) in the host and answers every text action over it as it does over the same
text held as a str, without reading the whole file; past STR_LIMIT, the actions that need a
whole text are refused with what to do instead, and the files are unmapped after the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recursa import RLM
from recursa.context import from_path, from_text
from recursa.core.actions import Kernel
from recursa.core.actions import search as kernel_module
from recursa.core.actions import values as values_module
from recursa.core.actions.schema import ADAPTER
from recursa.core.actions.values import ActionResult
from recursa.events import Event
from recursa.sandbox.inside import mapped as _mapped
from recursa.sandbox.inside.mapped import MappedText
from recursa.testing import ScriptedLM

LOG = "".join(
    f"{i:05d} {'ERROR' if i % 97 == 5 else 'INFO'} svc{i % 7} état {i * 37 % 1000} ms\n"
    for i in range(3000)
)
SECRET_LINE = 2222


def _log(tmp_path: Path, text: str = LOG, name: str = "service.log") -> Path:
    lines = text.splitlines(keepends=True)
    lines[SECRET_LINE - 1] = f"{SECRET_LINE - 1:05d} NOTE the vault code is 88-ZETA-41\n"
    path = tmp_path / name
    path.write_text("".join(lines), encoding="utf-8")
    return path


def act(**fields: Any) -> dict[str, Any]:
    return fields


def reply(*items: dict[str, Any]) -> str:
    return "```json\n" + json.dumps(list(items)) + "\n```"


def do(kernel: Kernel, **fields: Any) -> ActionResult:
    return asyncio.run(kernel.execute(ADAPTER.validate_python(fields)))


def excerpts(result: ActionResult) -> list[str]:
    return [e.text for e in result.excerpts]


@contextmanager
def pair(text: str) -> Iterator[tuple[Kernel, Kernel]]:
    """A kernel over `text` mapped from a file (threshold 1 byte) and one over it as a str."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.txt"
        path.write_bytes(text.encode("utf-8"))
        mapped = Kernel(None, [from_path(str(path), mmap_threshold=1)])
        plain = Kernel(None, [from_text(text, "data")])
        try:
            yield mapped, plain
        finally:
            mapped.close()


def open_fds_to(path: Path) -> list[str]:
    target = str(path.resolve())
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                fds.append(fd)
        except OSError:
            continue
    return fds


# ---- a whole run ---------------------------------------------------------------------------------


def test_a_run_over_a_mapped_file_answers_with_search_lines_load_and_preview(tmp_path) -> None:
    path = _log(tmp_path)
    ctx = from_path(str(path), mmap_threshold=1024)
    assert ctx.kind == "file"
    lm = ScriptedLM(
        root=[
            reply(
                act(action="search", var="context", pattern=r"code is (\S+)", regex=True,
                    into="found"),
                act(action="search", var="context", pattern="ERROR", into="errors"),
                act(action="lines", var="context", start=SECRET_LINE - 1, count=3, into="near"),
                act(action="load", var="context", start=10, end=13, unit="lines", into="some"),
                act(action="load", var="context", start=-30, into="tail"),
                act(action="preview", var="context", start=6, length=5),
                act(action="aggregate", var="errors", op="count", into="n"),
            ),
            reply(act(action="final", var="found[0].groups[0]")),
        ]
    )  # fmt: skip
    events: list[Event] = []
    rlm = RLM("openai/x", client=lm, mode="actions", on_event=events.append)

    with mock.patch.object(MappedText, "__str__", side_effect=AssertionError("read whole")):
        result = rlm.run("What is the vault code?", ctx)

    assert result.status == "ok", result.error
    assert result.answer == "88-ZETA-41"
    text = path.read_text(encoding="utf-8")
    first = lm.requests[0].messages[1]["content"]
    assert f"[kernel] `context` is a mapped file of {ctx.nbytes:,} bytes." in first
    assert f"[untrusted: from context]\n{text[:200]}" in first
    observation = next(e.observation for e in events if e.type == "turn_end")
    assert "[kernel] 1 hit for regex" in observation
    assert f'{text.count("ERROR"):,} hits for literal "ERROR"' in observation
    assert f"line {SECRET_LINE:,}: " in observation
    assert (
        f"   {SECRET_LINE}| {SECRET_LINE - 1:05d} NOTE the vault code is 88-ZETA-41" in observation
    )
    assert f"`context` (mapped file of {ctx.nbytes:,} bytes), characters 6 to 11:" in observation
    assert f"[kernel] count over `errors` ({text.count('ERROR'):,} items)" in observation
    assert "[kernel] error" not in observation


def test_the_answers_are_those_of_the_same_text_held_as_a_str(tmp_path) -> None:
    path = _log(tmp_path)
    text = path.read_text(encoding="utf-8")
    actions = [
        act(action="search", var="context", pattern=r"^(\d+) ERROR svc(\d)", regex=True,
            into="a"),
        act(action="search", var="context", pattern="svc3 état", into="b"),
        act(action="search", var="context", pattern="error svc", ignore_case=True, into="c"),
        act(action="lines", var="context", start=2990, count=50, into="d"),
        act(action="load", var="context", start=100, end=400, unit="lines", into="e"),
        act(action="load", var="context", start=2999, unit="lines", into="f"),
        act(action="load", var="context", start=5000, end=5100, into="g"),
        act(action="chunk", var="context", size=700, overlap=3, unit="lines", into="h"),
        act(action="chunk", var="context", size=30_000, into="i"),
        act(action="write_var", name="j", var="context"),
        act(action="load", var="j", start=-10, into="k"),
    ]  # fmt: skip
    with pair(text) as (mapped, plain):
        for fields in actions:
            got, want = do(mapped, **fields), do(plain, **fields)
            assert got.error is None and want.error is None, (got.error, want.error)
            assert excerpts(got) == excerpts(want), fields
            if fields["action"] != "write_var":
                name = fields["into"]
                assert mapped.vars[name] == plain.vars[name], fields
        assert isinstance(mapped.vars["context"], MappedText)
        assert isinstance(mapped.vars["j"], MappedText)


PIECES = ["a", "b", "ab", "é", "€", "😀", "\n", "\r\n", "\n\n", " "]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.lists(st.sampled_from(PIECES), max_size=60).map("".join),
    pattern=st.sampled_from(["a", "ab", "é", "\n", "b\na", "😀"]),
    start=st.integers(-8, 30),
    end=st.none() | st.integers(-8, 30),
    line=st.integers(1, 12),
    count=st.integers(1, 6),
    ignore_case=st.booleans(),
)
def test_every_text_action_agrees_with_the_str_kernel_across_piece_and_chunk_edges(
    text: str,
    pattern: str,
    start: int,
    end: int | None,
    line: int,
    count: int,
    ignore_case: bool,
) -> None:
    if not text:
        return
    lines = [
        act(action="lines", var="context", start=line, count=count, into="x"),
        act(action="load", var="context", start=line, end=line + count, unit="lines", into="x"),
        act(action="load", var="context", start=line, unit="lines", into="x"),
    ]
    others = [
        act(action="search", var="context", pattern=pattern, ignore_case=ignore_case,
            max_hits=3, context_chars=4, into="x"),
        act(action="search", var="context", pattern=re.escape(pattern) + "(.?)", regex=True,
            max_hits=2, into="x"),
        act(action="load", var="context", start=start, end=end, into="x"),
        act(action="preview", var="context", start=start, length=count),
    ]  # fmt: skip
    with (
        mock.patch.object(kernel_module, "LINE_PIECE", 3),
        mock.patch.object(kernel_module, "ITEM_CHARS", 3),  # a hit's line: 3 characters
        mock.patch.object(kernel_module, "HIT_WINDOW", 6),  # read 6 on each side of it
        mock.patch.object(_mapped, "SEARCH_CHUNK", 4),
        mock.patch.object(_mapped, "SEARCH_MARGIN", 6),
        pair(text) as (mapped, plain),
    ):
        for fields in lines + others:
            got, want = do(mapped, **fields), do(plain, **fields)
            assert got.error == want.error, fields
            assert excerpts(got) == excerpts(want), fields
            assert mapped.vars.get("x") == plain.vars.get("x"), fields
            if fields["action"] == "preview":
                assert got.summary.split("),")[-1] == want.summary.split("),")[-1]


def test_search_lines_preview_and_ranges_never_read_the_whole_file(tmp_path) -> None:
    path = _log(tmp_path, LOG * 4)
    kernel = Kernel(None, [from_path(str(path), mmap_threshold=1)])
    with mock.patch.object(MappedText, "__str__", side_effect=AssertionError("read whole")):
        for fields in [
            act(action="search", var="context", pattern="NOTE the vault"),
            act(action="search", var="context", pattern=r"svc(\d) état 9\d\d", regex=True),
            act(action="search", var="context", pattern="NOTE THE", ignore_case=True),
            act(action="lines", var="context", start=11_000, count=10),
            act(action="load", var="context", start=5, end=9, unit="lines", into="a"),
            act(action="load", var="context", start=100, end=200, into="b"),
            act(action="preview", var="context", start=-100),
            act(action="vars"),
        ]:
            result = do(kernel, **fields)
            assert result.error is None, (fields, result.error)
    kernel.close()


def test_the_whole_text_past_str_limit_is_refused_with_what_to_do_instead(tmp_path) -> None:
    path = _log(tmp_path)
    kernel = Kernel(None, [from_path(str(path), mmap_threshold=1)])
    with mock.patch.object(values_module, "STR_LIMIT", 50_000):
        chunked = do(kernel, action="chunk", var="context", size=100, into="c")
        parsed = do(kernel, action="json_parse", var="context", into="j")
        final = do(kernel, action="final", var="context")
        loaded = do(kernel, action="load", var="context", start=0, end=60_000, into="l")
        found = do(kernel, action="search", var="context", pattern="vault code is")
        window = do(kernel, action="load", var="context", start=0, end=40_000, into="w")

    for refused in (chunked, parsed, final):
        assert refused.error is not None
        assert f"mapped file of {path.stat().st_size:,} bytes" in refused.error
        assert "search it, or load a range" in refused.error
    assert loaded.error is not None and "60,000 characters" in loaded.error
    assert found.error is None and found.summary.startswith("1 hit")
    assert window.error is None and len(kernel.vars["w"]) == 40_000
    kernel.close()


def test_below_str_limit_the_whole_text_actions_work(tmp_path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"answer": 42, "pad": "x" * 5000}))
    kernel = Kernel(None, [from_path(str(path), mmap_threshold=1)])

    parsed = do(kernel, action="json_parse", var="context", into="j")
    final = do(kernel, action="final", var="context")

    assert parsed.error is None and kernel.vars["j"]["answer"] == 42
    assert final.final == (path.read_text(),)
    kernel.close()


def test_the_mapped_file_is_unmapped_and_closed_when_the_run_ends(tmp_path) -> None:
    path = _log(tmp_path)
    seen: list[list[str]] = []

    def during(request: Any) -> str:
        seen.append(open_fds_to(path))
        return reply(act(action="search", var="context", pattern="vault", into="v"),
                     act(action="final", var="v[0].offset"))  # fmt: skip

    ctx = from_path(str(path), mmap_threshold=1)
    result = RLM("openai/x", client=ScriptedLM(root=during), mode="actions").run("q", ctx)

    assert result.status == "ok" and isinstance(result.answer, int)
    assert seen and seen[0], "the kernel did not hold the file open during the run"
    assert open_fds_to(path) == []


# ---- directories ---------------------------------------------------------------------------------


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    _log(root, name="big.log")
    (root / "notes.txt").write_text("no code here\nthe vault code is elsewhere\n")
    (root / "a.md").write_text("# A\n")
    return root


def test_a_directory_maps_its_large_files_and_searches_every_file(corpus: Path) -> None:
    ctx = from_path(str(corpus), mmap_threshold=64 * 1024)
    kernel = Kernel(None, [ctx])
    view = kernel.vars["context"]
    assert isinstance(view["big.log"], MappedText) and isinstance(view["a.md"], str)

    with mock.patch.object(MappedText, "__str__", side_effect=AssertionError("read whole")):
        found = do(kernel, action="search", var="context", pattern="vault code is", into="hits")
        lines = do(kernel, action="lines", var='context["big.log"]', start=SECRET_LINE, count=1)
        preview = do(kernel, action="preview", var="context")

    assert found.error is None and lines.error is None and preview.error is None
    assert [(h["item"], h["line"]) for h in kernel.vars["hits"]] == [
        ("big.log", SECRET_LINE),
        ("notes.txt", 2),
    ]
    assert "NOTE the vault code is 88-ZETA-41" in excerpts(lines)[0]
    assert "big.log: 00000 INFO svc0" in excerpts(preview)[0]
    kernel.close()
    assert open_fds_to(corpus / "big.log") == []


def test_a_directory_in_a_run_answers_from_its_mapped_file_and_its_small_ones(corpus) -> None:
    ctx = from_path(str(corpus), mmap_threshold=64 * 1024)
    lm = ScriptedLM(
        root=[
            reply(
                act(action="search", var="context", pattern=r"code is (\S+)", regex=True,
                    into="hits"),
                act(action="final", var="hits"),
            )
        ]
    )  # fmt: skip

    result = RLM("openai/x", client=lm, mode="actions").run("q", ctx)

    assert result.status == "ok", result.error
    assert [(h["item"], h["groups"]) for h in result.answer] == [
        ("big.log", ["88-ZETA-41"]),
        ("notes.txt", ["elsewhere"]),
    ]
    assert (
        "1 file of at least 65,536 bytes is memory-mapped" in lm.requests[0].messages[1]["content"]
    )
    assert open_fds_to(corpus / "big.log") == []
