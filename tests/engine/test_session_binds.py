"""Contexts that arrive later in a session, under backends that bind host paths at start.

Bubblewrap (and docker) show the worker only the host paths bound when it starts. A
directory or a memory-mapped file that a later question brings is not among them, so the
worker is started again with every context's paths bound: the contexts and `history` come
back, the model's own variables do not, and the model is told so. The subprocess backend
sees the host's files and keeps its worker. A worker that ended between two questions is
replaced the same way, each context loaded once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e_helpers import repl, root_requests
from recursa import RLM
from recursa.sandbox import bwrap_problem, landlock_problem
from recursa.testing import LMRequest, ScriptedLM

TEXT = "alpha beta gamma"
CODE = "4417-KESTREL"
THRESHOLD = 1024

needs_bwrap = pytest.mark.skipif(
    bwrap_problem() is not None, reason=f"bubblewrap cannot run here: {bwrap_problem()}"
)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(a directory of notes, a log above THRESHOLD, a file beside both that stays hidden)."""
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "a.txt").write_text(f"the launch code is {CODE}\n")
    (notes / "sub" / "b.md").write_text("# B\n")
    lines = [f"{i:05d} heartbeat ok" for i in range(2000)]
    lines[1234] = "01234 the vault opens at dawn"
    log = tmp_path / "service.log"
    log.write_text("\n".join(lines) + "\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("beside the contexts")
    return notes, log, secret


def _script(replies: dict[str, str]) -> Callable[[LMRequest], str]:
    """Root replies keyed on the current question's word; `<word>+` answers its later turns
    (an observation is the last message rather than the question)."""

    def root(request: LMRequest) -> str:
        asked = [
            m["content"]
            for m in request.messages
            if m["role"] == "user"
            and ("Question: " in m["content"] or m["content"].startswith("New question: "))
        ][-1]
        word = next(w for w in replies if "+" not in w and w in asked)
        later = request.last_user != asked and f"{word}+" in replies
        return replies[f"{word}+" if later else word]

    return root


@pytest.mark.parametrize("backend", [pytest.param("bwrap", marks=needs_bwrap), "landlock"])
def test_a_binding_session_reads_a_directory_and_a_mapped_file_given_with_a_later_question(
    serve, files, backend: str
) -> None:
    """The same for the landlock backend, whose rules are fixed once its worker starts."""
    if backend == "landlock" and landlock_problem() is not None:
        pytest.skip(f"Landlock cannot confine a worker here: {landlock_problem()}")
    notes, log, secret = files
    server = serve(
        ScriptedLM(
            root=_script(
                {
                    "FIRST": repl("words = context.split()\nFINAL(len(words))"),
                    "SECOND": repl(
                        f"""
                        import os
                        def _opens(path):
                            try:
                                open(path).close()
                                return True
                            except OSError:
                                return False
                        seen = {{
                            "files": sorted(context_1),
                            "code": context_1["a.txt"].split()[-1],
                            "type": type(context_2).__name__,
                            "line": context_2.splitlines()[1234],
                            "first": context_0,
                            "words kept": "words" in globals(),
                            "history": [m["role"] for m in history],
                            "secret readable": _opens({str(secret)!r}),
                        }}
                        """
                    ),
                    "SECOND+": repl("FINAL(seen)"),
                    "THIRD": repl("FINAL([seen['code'], len(context), context_2[:5]])"),
                }
            )
        )
    )

    rlm = RLM("openai/x", base_url=server.url, sandbox=backend, mmap_threshold=THRESHOLD)
    with rlm.session() as session:
        first = session.ask("FIRST: how many words?", context=TEXT)
        second = session.ask("SECOND: what do the new files say?", contexts=[notes, log])
        third = session.ask("THIRD: and now?")

    assert (first.status, first.answer) == ("ok", 3)
    assert second.status == "ok", second.error
    assert second.answer == {
        "files": ["a.txt", "sub/b.md"],
        "code": CODE,
        "type": "MappedText",
        "line": "01234 the vault opens at dawn",
        "first": TEXT,
        "words kept": False,
        "history": ["system", "user", "assistant"],  # handed over before SECOND
        "secret readable": False,
    }
    # The new question itself says the REPL was restarted, not that variables are kept,
    asked = next(r.last_user for r in root_requests(server) if "SECOND" in r.last_user)
    assert "The REPL was restarted before this question (a new context's files" in asked
    assert "still in the REPL" not in asked
    # and the first observation after the restart says so again.
    told = root_requests(server)[-2].last_user
    assert "[sandbox] before this block" in told and "restarted" in told
    assert "every variable you made before was lost" in told
    block = next(e for e in second.events if e.type == "block")
    assert block.restarted and "every variable you made before was lost" in block.restarted
    # No new paths in the third question: the same worker, the second question's variables.
    assert (third.status, third.answer) == ("ok", [CODE, 3, "00000"])
    assert not any(e.restarted for e in third.events if e.type == "block")


@needs_bwrap
def test_bwrap_keeps_its_worker_when_a_new_file_lies_in_a_directory_already_bound(
    serve, files
) -> None:
    notes, log, _ = files
    inside = notes / "inside.log"
    inside.write_bytes(log.read_bytes())
    server = serve(
        ScriptedLM(
            root=_script(
                {
                    "FIRST": repl("kept = len(context)\nFINAL(kept)"),
                    "SECOND": repl("FINAL([kept, type(context_1).__name__, context_1[:5]])"),
                }
            )
        )
    )

    rlm = RLM("openai/x", base_url=server.url, sandbox="bwrap", mmap_threshold=THRESHOLD)
    with rlm.session() as session:
        first = session.ask("FIRST?", context=notes)
        second = session.ask("SECOND?", context=inside)

    assert (first.answer, second.status) == (3, "ok")
    assert second.answer == [3, "MappedText", "00000"]


def test_the_subprocess_backend_keeps_its_variables_when_paths_arrive(serve, files) -> None:
    notes, log, _ = files
    server = serve(
        ScriptedLM(
            root=_script(
                {
                    "FIRST": repl("words = context.split()\nFINAL(len(words))"),
                    "SECOND": repl("FINAL([words, context_1['a.txt'].split()[-1], context_2[:5]])"),
                }
            )
        )
    )

    rlm = RLM("openai/x", base_url=server.url, sandbox="subprocess", mmap_threshold=THRESHOLD)
    with rlm.session() as session:
        session.ask("FIRST?", context=TEXT)
        second = session.ask("SECOND?", contexts=[notes, log])

    assert second.status == "ok", second.error
    assert second.answer == [TEXT.split(), CODE, "00000"]
    assert not any(e.restarted for e in second.events if e.type == "block")


def test_a_worker_that_ended_between_questions_is_restarted_with_each_context_once(
    serve,
) -> None:
    server = serve(
        ScriptedLM(
            root=_script(
                {
                    "FIRST": repl("import os\ndoomed = True\nFINAL(os.getpid())"),
                    "SECOND": repl("print(len(context))"),
                    "SECOND+": repl("FINAL([context_0, context_1, 'doomed' in globals()])"),
                }
            )
        )
    )

    with RLM("openai/x", base_url=server.url, sandbox="subprocess").session() as session:
        worker = session.ask("FIRST?", context=TEXT).answer
        os.kill(worker, signal.SIGKILL)  # while no event loop runs to notice
        _wait_until_dead(worker)
        second = session.ask("SECOND?", context=CODE)

    assert second.status == "ok", second.error
    assert second.answer == [TEXT, CODE, False]
    asked = next(r.last_user for r in root_requests(server) if "SECOND" in r.last_user)
    assert "The REPL was restarted before this question (the worker process ended" in asked
    told = root_requests(server)[-1].last_user  # two contexts, not the new one twice
    assert told.startswith("[block 1] 2\n[sandbox] before this block, the worker process ended")
    assert "SIGKILL" in told and "every variable you made before was lost" in told


def _wait_until_dead(pid: int) -> None:
    """Until `pid` has exited (a zombie: the session's event loop has not reaped it yet)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still runs")
