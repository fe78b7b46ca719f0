"""A directory context's large files: at or above the mmap threshold, a file of a directory
is a MappedText in the REPL (the worker maps it itself, as a `file` context), never read
whole; smaller files stay str. Model code runs in a real sandbox worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import repl, root_requests
from recursa import RLM
from recursa.context import build_payload, from_path
from recursa.testing import ScriptedLM

THRESHOLD = 256 * 1024


def run_code(serve, code: str, context: Any) -> tuple[Any, str]:
    """One block over `context`, ending with FINAL: (the answer, the first user message)."""
    server = serve(ScriptedLM(root=[repl(code)]))
    result = RLM("openai/scripted", base_url=server.url, env={}).run("q", context=context)
    assert result.status == "ok", result.error
    return result.answer, root_requests(server)[0].messages[1]["content"]


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, str]:
    """A directory of two small files and one log of about 1 MB with a planted line."""
    root = tmp_path / "corpus"
    (root / "logs").mkdir(parents=True)
    rows = [f"{i:06d} svc{i % 5} served in {i * 31 % 900} ms, état ok" for i in range(25_000)]
    rows[17_171] = "017171 NOTE the vault code is 88-ZETA-41"
    text = "\n".join(rows) + "\n"
    (root / "logs" / "big.log").write_text(text, encoding="utf-8")
    (root / "README.md").write_text("# Corpus\n")
    (root / "logs" / "small.log").write_text("000000 svc0 ok\n")
    return root, text


def test_model_code_gets_a_mapped_object_for_the_big_file_with_str_operations(
    serve, corpus: tuple[Path, str]
) -> None:
    root, text = corpus
    ctx = from_path(str(root), mmap_threshold=THRESHOLD)

    answer, first = run_code(
        serve,
        """
        big = context["logs/big.log"]
        i = big.find("vault code is ")
        FINAL({
            "types": {k: type(v).__name__ for k, v in context.items()},
            "same": big is context["logs/big.log"],
            "len": len(big), "find": i, "slice": big[i:i + 24], "count": big.count("état"),
            "in": "88-ZETA-41" in big, "search": big.search(r"code is (\\S+)"),
            "line": big.splitlines()[17_171], "lines": len(big.splitlines()),
            "tail": big[-10:], "startswith": big.startswith("000000 svc0"),
            "chunks": len(big.chunks(100_000)), "small": context["logs/small.log"],
        })
        """,
        ctx,
    )

    i = text.find("vault code is ")
    assert (
        answer
        == {
            "types": {  # a Markdown file is a TextDocument: a str that also has .headings
                "README.md": "TextDocument",
                "logs/big.log": "MappedText",
                "logs/small.log": "str",
            },
            "same": True,
            "len": len(text),
            "find": i,
            "slice": text[i : i + 24],
            "count": text.count("état"),
            "in": True,
            "search": [[text.find("code is 88"), "code is 88-ZETA-41"]],
            "line": "017171 NOTE the vault code is 88-ZETA-41",
            "lines": 25_000,
            "tail": text[-10:],
            "startswith": True,
            "chunks": -(-len(text) // 100_000),
            "small": "000000 svc0 ok\n",
        }
    )
    assert "1 file of at least 262,144 bytes is memory-mapped, never read whole" in first
    assert "MappedText" in first


def test_below_the_threshold_every_file_of_a_directory_is_a_str(
    serve, corpus: tuple[Path, str]
) -> None:
    root, text = corpus
    ctx = from_path(str(root))  # the default threshold, 64 MiB

    answer, first = run_code(
        serve, "FINAL([type(context['logs/big.log']).__name__, len(context['logs/big.log'])])", ctx
    )

    assert answer == ["str", len(text)]
    assert "memory-mapped" not in first


def test_the_threshold_crosses_with_the_directory_and_is_recorded_for_replay(
    corpus: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = corpus
    ctx = from_path(str(root), mmap_threshold=THRESHOLD)

    spec = build_payload([ctx]).specs[0]
    assert spec["kind"] == "dir" and spec["mmap_threshold"] == THRESHOLD
    assert ctx.reference()["mmap_threshold"] == THRESHOLD
    monkeypatch.setenv("RECURSA_MMAP_THRESHOLD", "512K")
    assert from_path(str(root)).mmap_threshold == 512 * 1024
