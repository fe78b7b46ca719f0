"""Model code that writes the channel's frames itself: the host enforces every cap on what it
receives (docs/SECURITY.md, "The sandbox channel and model-code threads"). Real runs over the
fake server, real worker processes; the forged frames go out through the worker's own channel,
found from model code as an attacker would."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from e2e_helpers import observation_after, one_json_object, repl, run_cli
from recursa.core.programs import RLM
from recursa.sandbox import bwrap_problem
from recursa.testing import ScriptedLM

CONTEXT = "alpha beta gamma\n" * 100
BACKENDS = [
    "subprocess",
    pytest.param(
        "bwrap", marks=pytest.mark.skipif(bwrap_problem() is not None, reason=str(bwrap_problem()))
    ),
]

FORGE = textwrap.dedent(
    """
    import gc, sys
    def forge(frame, repeat=1):
        '''Write `frame` on the channel as the result of this block (or as is, `repeat` times).'''
        worker = next(o for o in gc.get_objects() if type(o).__name__ == 'Worker')
        f = sys._getframe()
        while f.f_code.co_name != 'execute':
            f = f.f_back
        frame = {'id': f.f_locals['header']['id'], **frame}
        framing = sys.modules['framing']
        worker.chan.write_parts([framing.encode(frame) * repeat])
    """
)


def run(
    serve, blocks: list[str], backend: str = "subprocess", **options: Any
) -> tuple[Any, Any, list[Any]]:
    server = serve(ScriptedLM(root=blocks, sub=lambda request: "pong"))
    events: list[Any] = []
    rlm = RLM("openai/x", base_url=server.url, sandbox=backend, **options)
    result = rlm.run("q", CONTEXT, on_event=events.append)
    return result, server, events


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_forged_result_holds_no_more_output_than_the_caps(serve, backend: str) -> None:
    huge = (
        "forge({'op': 'result', 'stdout': 'o' * 3_000_000, 'stdout_len': -5,"
        " 'stderr': 'e' * 3_000_000, 'error': 'x' * 3_000_000,"
        " 'new_vars': [f'v{i}' * 50 for i in range(100_000)],"
        " 'vars': {f'v{i}': 'd' * 10_000 for i in range(5_000)}})"
    )
    result, server, events = run(
        serve, [repl(FORGE + huge), repl("FINAL('done')")], backend, max_output_chars=1_000
    )

    assert result.status == "ok", result.error
    assert result.answer == "done"
    (forged,) = [e for e in events if e.type == "block" and "forge({" in e.code]
    assert len(forged.output) < 3 * 1_500 + 8_100  # stdout, stderr, error: each cut
    assert "characters cut by the host" in forged.output
    assert len(forged.new_vars) == 1_000
    assert len(observation_after(server, 0)) < 20_000


def test_a_forged_final_over_the_cap_is_refused_not_cut(serve, monkeypatch) -> None:
    monkeypatch.setattr("recursa.sandbox.received.MAX_FINAL", 1_000)
    blocks = [
        repl(FORGE + "forge({'op': 'result', 'final': {'kind': 'value', 'text': 'y' * 5_000}})"),
        repl("FINAL('short')"),
    ]
    result, server, _ = run(serve, blocks)

    assert result.status == "ok", result.error
    assert result.answer == "short"
    assert "5,000 characters, more than the 1,000 allowed; it was not accepted" in (
        observation_after(server, 0)
    )


def test_a_flood_of_frames_in_one_block_costs_the_worker(serve) -> None:
    blocks = [
        repl("kept = 1"),
        repl(FORGE + "forge({'op': 'noise'}, repeat=100_001)"),
        repl("FINAL(['kept' in globals(), 'alive'])"),
    ]
    result, server, _ = run(serve, blocks)

    assert result.status == "ok", result.error
    assert result.answer == [False, "alive"]
    told = observation_after(server, 1)
    assert "more than 100,000 frames in one block" in told
    assert "restarted" in told


def test_patching_the_code_of_llm_query_and_final_lasts_one_block(serve) -> None:
    patch = textwrap.dedent(
        """
        def closing(cell=None):  # the worker's functions close over one variable
            def forged(prompt, model=None):
                return 'forged' or cell
            return forged
        llm_query.__code__ = closing().__code__
        FINAL.__code__ = closing().__code__
        llm_query.__defaults__ = ('x',)
        print(llm_query('ping'))
        """
    )
    result, server, _ = run(serve, [repl(patch), repl("FINAL(llm_query('ping'))")])

    assert result.status == "ok", result.error
    assert "forged" in observation_after(server, 0)
    assert result.answer == "pong"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("float('nan')", "NaN"),
        (
            "[float('inf'), -float('inf'), {'x': float('nan')}]",
            ["Infinity", "-Infinity", {"x": "NaN"}],
        ),
    ],
)
def test_a_non_finite_answer_is_strict_json_in_the_output_and_the_trace(
    serve, tmp_path, value: str, shown: Any
) -> None:
    server = serve(ScriptedLM(root=[repl(f"FINAL({value})")]))
    trace = tmp_path / "t.jsonl"
    run = run_cli(
        [
            "run",
            "q",
            "--model",
            "openai/x",
            "--base-url",
            server.url,
            "--json",
            "--quiet",
            "--trace",
            str(trace),
        ]
    )

    assert run.rc == 0, run.err
    strict = {"parse_constant": _refuse}
    assert json.loads(run.out, **strict)["answer"] == shown
    assert one_json_object(run.out)["status"] == "ok"
    for line in trace.read_text(encoding="utf-8").splitlines():
        json.loads(line, **strict)


def _refuse(name: str) -> None:
    raise AssertionError(f"not strict JSON: {name}")


def test_a_call_over_the_size_cap_costs_the_worker_even_when_the_worker_lets_it_out(
    serve, monkeypatch
) -> None:
    monkeypatch.setattr(
        "recursa.sandbox.inside.framing.MAX_CALL", 100_000
    )  # the host's, not the worker's
    blocks = [
        repl("kept = 1\nrlm_query('q', context={'big': 'x' * 200_000})"),
        repl("FINAL(['kept' in globals(), llm_query('small')])"),
    ]
    result, server, _ = run(serve, blocks, max_depth=2)

    assert result.status == "ok", result.error
    assert result.answer == [False, "pong"]
    told = observation_after(server, 0)
    assert "exceeds 100000" in told and "restarted" in told
