"""The printed-context guard over a memory-mapped file: what model code prints of it is
compared with the file's first and last MiB (never the whole file), which is where
`context[:n]`, `context[-n:]` and `print(context)` take their text from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_helpers import repl
from recursa import RLM, context_files
from recursa.context import from_path, from_text
from recursa.core.guards import printed_contexts
from recursa.events import Event
from recursa.testing import ScriptedLM

MIB = 1024 * 1024


@pytest.fixture
def big_log(tmp_path: Path) -> Path:
    """About 3 MiB of log: a start, a middle and an end that the guard tells apart."""
    path = tmp_path / "service.log"
    rows = (f"{i:07d} svc{i % 7} request served in {i * 37 % 1000} ms" for i in range(80_000))
    path.write_text("\n".join(rows) + "\n")
    return path


def printed_events(code: str, path: Path) -> list[Event]:
    """The context_printed events of a run whose one block runs `code` over the mapped log."""
    events: list[Event] = []
    lm = ScriptedLM(root=[repl(code), repl("FINAL('done')")])
    ctx = from_path(str(path), mmap_threshold=MIB)
    assert ctx.kind == "file"
    result = RLM("openai/x", client=lm, env={}, on_event=events.append).run("q", ctx)
    assert result.status == "ok", result.error
    return [e for e in events if e.type == "context_printed"]


@pytest.mark.parametrize(
    "code",
    ["print(context[:20_000])", "print(context[-20_000:])", "print(context)"],
)
def test_printing_the_start_the_end_or_all_of_a_mapped_file_is_warned(
    code: str, big_log: Path
) -> None:
    printed = printed_events(code, big_log)

    assert len(printed) == 1 and printed[0].chars >= 4_000


def test_output_that_is_not_the_mapped_file_is_not_warned(big_log: Path) -> None:
    assert printed_events("print('x' * 20_000)", big_log) == []


def test_only_the_edges_of_a_mapped_file_are_read(big_log: Path) -> None:
    text = big_log.read_text()
    ctx = from_path(str(big_log), mmap_threshold=MIB)
    middle = text[len(text) // 2 : len(text) // 2 + 20_000]

    head, tail = context_files.edges(str(big_log), ctx.nbytes)

    assert head == text[:MIB] and tail == text[-MIB:]
    assert printed_contexts(text[:20_000], [ctx]) == 20_000
    assert printed_contexts(middle, [ctx]) == 0  # between the edges: not looked for
    assert printed_contexts(middle, [from_text(text)]) == 20_000
