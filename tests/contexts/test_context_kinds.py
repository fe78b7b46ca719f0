"""Each kind of context: the metadata the root model's first turn gets, and the operations
model code runs on it inside a real sandbox worker (the default backend, bwrap where it works).

Every run is a scripted root model behind a FakeLMServer on 127.0.0.1: its first reply is a
block that computes something from `context` and ends with FINAL, so the answer is what the
worker really saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from e2e_helpers import bwrap_in_use, repl, root_requests
from recursa import RLM, Auto, Direct
from recursa import context_files as cf
from recursa.context import describe, from_path, from_value
from recursa.errors import ConfigError
from recursa.testing import ScriptedLM

MIB = 1024 * 1024


def run_code(serve, code: str, **kwargs: Any) -> tuple[Any, str]:
    """Run one block over the given context(s): (the answer, the first user message)."""
    server = serve(ScriptedLM(root=[repl(code)]))
    result = RLM("openai/scripted", base_url=server.url, env={}).run("q", **kwargs)
    assert result.status == "ok", result.error
    first = root_requests(server)[0].messages[1]["content"]
    return result.answer, first


def log_text(lines: int, planted_at: int, fact: str) -> str:
    rows = [
        f"{i:07d} svc{i % 7} request served in {i * 37 % 1000} ms, état ok" for i in range(lines)
    ]
    rows[planted_at] = f"{planted_at:07d} NOTE {fact}"
    return "\n".join(rows) + "\n"


# ---- text, bytes, lists, dicts -------------------------------------------------------------------


def test_text_is_described_by_characters_lines_and_a_preview(serve):
    text = "alpha\nbeta\ngamma é\n"
    answer, first = run_code(
        serve,
        "FINAL([len(context), context.count('a'), context.splitlines()[2]])",
        context=text,
    )
    assert answer == [len(text), text.count("a"), "gamma é"]
    assert f"str of {len(text):,} characters (3 lines)" in first
    assert "alpha\nbeta" in first


def test_bytes_are_decoded_with_replacement_and_warned_about(serve):
    data = b"ok \xff\xfe done"
    ctx = from_value(data, "<bytes>")
    assert any("not valid UTF-8" in w for w in ctx.warnings)
    answer, _ = run_code(serve, "FINAL([context, context.count('\\ufffd')])", context=data)
    assert answer == [data.decode("utf-8", "replace"), 2]


def test_a_list_of_records_is_described_by_items_and_keys(serve):
    rows = [{"user": f"u{i}", "spent": i * 3, "tags": ["a"] * (i % 2)} for i in range(50)]
    answer, first = run_code(
        serve, "FINAL(sum(r['spent'] for r in context if r['tags']))", context=rows
    )
    assert answer == sum(r["spent"] for r in rows if r["tags"])
    assert "list of 50 items (50 dict)" in first
    assert "Keys of its dicts (in the first 1,000): user, spent, tags" in first


def test_a_dict_is_described_by_its_keys(serve):
    data = {"alpha": 1, "beta": [1, 2], "gamma": {"x": 2}}
    answer, first = run_code(
        serve, "FINAL(sorted(context) + [context['gamma']['x']])", context=data
    )
    assert answer == ["alpha", "beta", "gamma", 2]
    assert "dict of 3 keys; first keys: ['alpha', 'beta', 'gamma']" in first


# ---- JSON lines ----------------------------------------------------------------------------------


def test_a_jsonl_file_is_a_list_of_records(serve, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"n": i, "ok": i % 3 == 0}) + "\n" for i in range(30)))
    ctx = from_path(str(path))
    assert ctx.kind == "json" and len(ctx.value) == 30
    answer, first = run_code(serve, "FINAL(sum(r['n'] for r in context if r['ok']))", context=ctx)
    assert answer == sum(i for i in range(30) if i % 3 == 0)
    assert "list of 30 items (30 dict)" in first and "Keys of its dicts" in first


def test_a_jsonl_file_with_a_bad_line_stays_text_with_a_warning(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"n": 1}\nnot json\n')
    ctx = from_path(str(path))
    assert ctx.kind == "text" and ctx.text == '{"n": 1}\nnot json\n'
    assert any("line 2 is not JSON" in w for w in ctx.warnings)


def test_a_jsonl_file_above_the_threshold_stays_mapped_and_yields_records(serve, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"n": i}) + "\n" for i in range(2000)))
    ctx = from_path(str(path), mmap_threshold=1024)
    assert ctx.kind == "file"
    answer, first = run_code(serve, "FINAL(sum(r['n'] for r in context.records()))", context=ctx)
    assert answer == sum(range(2000))
    assert "context.records() yields them parsed" in first


# ---- directories ---------------------------------------------------------------------------------


def test_a_directory_of_10000_files_is_a_lazy_mapping_with_sizes(serve, tmp_path):
    root = tmp_path / "corpus"
    for d in range(10):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(1000):
            ext = ".py" if f % 4 == 0 else ".txt"
            (root / f"d{d}" / f"f{f:04d}{ext}").write_text(f"file {d}/{f} " + "x" * (f % 50))
    (root / "d3" / "big.log").write_text("needle\n" * 5000)
    ctx = from_path(str(root))
    assert ctx.kind == "dir" and len(ctx.files) == 10_001
    total = sum(size for _, size in ctx.files)
    answer, first = run_code(
        serve,
        """
        text = context["d7/f0421.txt"]
        needles = context["d3/big.log"].count("needle")
        FINAL([len(context), sum(context.sizes.values()), text, needles])
        """,
        context=ctx,
    )
    assert answer == [10_001, total, "file 7/421 " + "x" * 21, 5000]
    assert f"10,001 files, {total:,} bytes in all" in first
    assert "Largest: d3/big.log (35,000 B)" in first
    assert "Extensions: .txt (7500), .py (2500), .log (1)" in first
    assert "... and 9,981 more" in first


# ---- several at once -----------------------------------------------------------------------------


def test_several_contexts_are_a_list_and_each_is_numbered(serve, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A")
    contexts = ["plain text", [1, 2, 3], from_path(str(tmp_path / "docs"))]
    answer, first = run_code(
        serve,
        "FINAL([len(context), context_0, sum(context_1), context_2['a.md']])",
        contexts=contexts,
    )
    assert answer == [3, "plain text", 6, "# A"]
    assert "`context` is a list of 3 contexts" in first
    assert "`context_0` is a str" in first and "`context_1` is a list of 3 items" in first
    assert "`context_2` is a directory" in first


# ---- large files, memory-mapped ------------------------------------------------------------------


@pytest.fixture
def big_log(tmp_path: Path) -> tuple[Path, str]:
    text = log_text(60_000, 41_234, "the vault code is 88-ZETA-41")
    path = tmp_path / "service.log"
    path.write_text(text, encoding="utf-8")
    return path, text


def test_a_file_above_the_threshold_is_mapped_and_described_from_its_head(big_log):
    path, text = big_log
    ctx = from_path(str(path), mmap_threshold=MIB)
    assert ctx.kind == "file" and ctx.nbytes == path.stat().st_size and ctx.text is None
    first = describe([ctx])
    assert f"MappedText of {ctx.nbytes:,} bytes" in first
    assert "about " in first and "lines (estimated from the first MiB)" in first
    estimate = int(first.split("about ")[1].split(" lines")[0].replace(",", ""))
    assert abs(estimate - 60_000) < 600
    assert "non-ASCII UTF-8" in first and text[:200] in first
    assert from_path(str(path), mmap_threshold=ctx.nbytes + 1).kind == "text"


def test_the_threshold_comes_from_the_environment_with_a_unit(big_log, monkeypatch):
    path, _ = big_log
    monkeypatch.setenv("RECURSA_MMAP_THRESHOLD", "1M")
    assert from_path(str(path)).kind == "file"
    monkeypatch.setenv("RECURSA_MMAP_THRESHOLD", "1G")
    assert from_path(str(path)).kind == "text"
    monkeypatch.setenv("RECURSA_MMAP_THRESHOLD", "lots")
    with pytest.raises(ConfigError, match="bad size"):
        from_path(str(path))


def test_model_code_uses_the_mapped_file_like_a_str(serve, big_log):
    path, text = big_log
    ctx = from_path(str(path), mmap_threshold=MIB)
    answer, _ = run_code(
        serve,
        """
        i = context.find("vault code is ")
        hits = context.search(r"code is (\\S+)")
        chunks = context.chunks(100_000, overlap=100)
        FINAL({
            "type": type(context).__name__, "len": len(context), "find": i,
            "slice": context[i:i + 26], "count": context.count("état"),
            "in": "88-ZETA-41" in context, "search": hits, "lines": len(context.splitlines()),
            "line": context.splitlines()[41_234], "chunks": len(chunks),
            "chunk_types": sorted({type(c).__name__ for c in chunks}),
            "tail": context[-20:], "rfind": context.rfind("svc3"),
        })
        """,
        context=ctx,
    )
    i = text.find("vault code is ")
    assert answer == {
        "type": "MappedText",
        "len": len(text),
        "find": i,
        "slice": text[i : i + 26],
        "count": text.count("état"),
        "in": True,
        "search": [[text.find("code is 88"), "code is 88-ZETA-41"]],
        "lines": 60_000,
        "line": "0041234 NOTE the vault code is 88-ZETA-41",
        "chunks": len(range(0, len(text) - 100, 99_900)),
        "chunk_types": ["str"],
        "tail": text[-20:],
        "rfind": text.rfind("svc3"),
    }


def test_only_the_path_of_a_mapped_file_crosses_into_the_sandbox(big_log):
    from recursa.context import build_payload

    path, _ = big_log
    payload = build_payload([from_path(str(path), mmap_threshold=MIB)])
    assert len(payload.body) == 0 and bytes(payload.body) == b""
    assert payload.specs == [
        {"kind": "file", "path": str(path.resolve()), "size": path.stat().st_size}
    ]
    assert payload.host_paths() == [str(path.resolve())]


@pytest.mark.skipif(not bwrap_in_use(), reason="bubblewrap is not the default backend here")
def test_bwrap_binds_a_mapped_file_read_only_and_nothing_beside_it(serve, big_log):
    path, _ = big_log
    (path.parent / "secret.txt").write_text("beside the log")
    ctx = from_path(str(path), mmap_threshold=MIB)
    answer, _ = run_code(
        serve,
        f"""
        import os
        try:
            open({str(path.resolve())!r}, "a").write("x")
            wrote = "wrote"
        except OSError as exc:
            wrote = type(exc).__name__
        FINAL([wrote, os.path.exists({str(path.parent / "secret.txt")!r}), context[:7]])
        """,
        context=ctx,
    )
    assert answer == ["OSError", False, "0000000"]


def test_a_mapped_file_is_referenced_by_a_sampled_fingerprint(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"a" * (8 * MIB))
    ctx = from_path(str(path), mmap_threshold=MIB)
    ref = ctx.reference()
    assert ref["kind"] == "file" and ref["size"] == 8 * MIB
    assert ref["sha256_of"] == cf.FINGERPRINT
    assert from_path(str(path), mmap_threshold=MIB).sha256 == ctx.sha256
    with path.open("r+b") as fh:
        fh.write(b"b")  # the first sample changes
    assert from_path(str(path), mmap_threshold=MIB).sha256 != ctx.sha256


def test_a_mapped_file_too_big_for_a_prompt_is_refused_by_direct(serve, big_log):
    path, _ = big_log
    ctx = from_path(str(path), mmap_threshold=MIB)
    server = serve(ScriptedLM(root=["FINAL(x)"], sub=lambda r: "x"))
    with mock.patch.object(cf, "AS_TEXT_LIMIT", MIB):
        with pytest.raises(ConfigError, match="never read whole here"):
            ctx.as_text()
        # too big for the window by its bytes alone: refused before anything is read
        with pytest.raises(ConfigError, match="a direct call needs at least"):
            Direct("openai/scripted", base_url=server.url, env={}).run("q", context=ctx)
        # a window that could hold it: refused by the limit on reading a mapped file whole
        wide = Direct("openai/scripted", base_url=server.url, env={}, context_window=10**8)
        with pytest.raises(ConfigError, match="never read whole here"):
            wide.run("q", context=ctx)
    assert server.request_count == 0


def test_auto_sizes_a_mapped_file_without_reading_it(serve, big_log):
    path, _ = big_log
    ctx = from_path(str(path), mmap_threshold=MIB)
    server = serve(ScriptedLM(root=["FINAL(done)"]))
    auto = Auto("openai/scripted", base_url=server.url, env={}, direct_below_chars=1000)
    with mock.patch.object(type(ctx), "as_text", side_effect=AssertionError("read whole")):
        assert auto.choose([ctx]) == "rlm"
        assert auto.run("q", context=ctx).strategy == "rlm"
