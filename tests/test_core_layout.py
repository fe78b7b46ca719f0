"""The engine core as a layer: recursa/core imports nothing above it, has no import cycle
and no private name across modules; its statuses are one enum that prints as plain
strings; both loops run the one turn skeleton."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from e2e_helpers import repl
from recursa.cli import output as cli_output
from recursa.core.actions import ActionLoop
from recursa.core.code_loop import Loop
from recursa.core.programs import RLM
from recursa.core.status import LIMIT_STATUSES, Status
from recursa.core.turns import TurnLoop
from recursa.testing import ScriptedLM

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = SRC / "recursa" / "core"
ABOVE_THE_CORE = (
    *("cli", "options", "server", "mcp_server", "llm_plugin", "batch"),
    *("executors", "mining", "evals", "trace", "demo"),
)


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in the file, at any level, relative ones resolved."""
    package = _module(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def _core_graph() -> dict[str, set[str]]:
    files = sorted(CORE.rglob("*.py"))
    assert files, "no recursa/core package"
    modules = {_module(f) for f in files}
    graph: dict[str, set[str]] = {}
    for f in files:
        me, deps = _module(f), set()
        for target, names in _imports(f):
            for name in names or [""]:
                dep = f"{target}.{name}" if f"{target}.{name}" in modules else target
                # a module's own package (its __init__) is not a dependency of it
                if dep in modules and dep != me and not me.startswith(dep + "."):
                    deps.add(dep)
        graph[me] = deps
    return graph


def test_the_core_imports_nothing_above_it_and_no_private_name() -> None:
    for f in sorted(CORE.rglob("*.py")):
        for target, names in _imports(f):
            top = target.split(".")[1] if target.startswith("recursa.") else None
            assert top not in ABOVE_THE_CORE, f"{_module(f)} imports {target}"
            if target.startswith("recursa."):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                assert not private, f"{_module(f)} imports {private} from {target}"


def test_the_core_has_no_import_cycle_and_the_run_is_below_the_loops() -> None:
    graph = _core_graph()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in graph.get(module, ()):
            if dep.startswith("recursa.core.") and dep != "recursa.core":
                assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, dep])}"
                if dep not in state:
                    visit(dep, [*path, dep])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    above_the_run = {"programs", "code_loop", "session", "turns", "direct", "actions"}
    run_deps = {d.split(".")[2] for d in graph["recursa.core.run"] if d.startswith("recursa.core.")}
    assert not run_deps & above_the_run


def test_a_status_is_one_enum_that_reads_as_the_plain_string_everywhere(serve) -> None:
    # One turn that never answers, then the extraction request's FINAL: max_iterations.
    server = serve(ScriptedLM(root=[repl("x = 1"), "FINAL(late)"]))

    result = RLM("openai/x", base_url=server.url, max_iterations=1).run("q", "ctx")

    assert result.status == Status.MAX_ITERATIONS and result.answer == "late"
    assert type(result.status) is str  # not the enum: output is as it always was
    assert json.loads(json.dumps(result.to_dict()))["status"] == "max_iterations"
    ends = [e for e in result.events if e.type in ("rlm_end", "run_end")]
    assert [type(e.status) for e in ends] == [str, str]
    assert [e.status for e in ends] == ["max_iterations"] * 2
    assert cli_output.LIMIT_STATUSES is LIMIT_STATUSES and Status.MAX_ITERATIONS in LIMIT_STATUSES
    assert "max_iterations" in LIMIT_STATUSES and "ok" not in LIMIT_STATUSES
    assert [s.value for s in Status] == [
        "ok", "max_iterations", "budget_exhausted", "stalled", "timeout", "error"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "mode, turn, last",
    [
        ("code", repl("x = 1"), "FINAL(late)"),
        ("actions", '[{"action": "vars"}]', '[{"action": "final", "value": "late"}]'),
    ],
)
def test_both_loops_run_the_one_turn_skeleton(serve, mode: str, turn: str, last: str) -> None:
    assert Loop.turns is ActionLoop.turns is TurnLoop.turns
    assert Loop.extract is ActionLoop.extract and Loop.check_stall is ActionLoop.check_stall
    server = serve(ScriptedLM(root=[turn, last]))

    result = RLM("openai/x", base_url=server.url, max_iterations=1, mode=mode).run("q", "ctx")

    assert (result.status, result.answer, result.iterations) == ("max_iterations", "late", 1)
    skeleton = ("turn_start", "turn_end", "final", "rlm_end", "run_end")
    kinds = [e.type for e in result.events if e.type in skeleton]
    assert kinds == ["turn_start", "turn_end", "final", "rlm_end", "run_end"]
    final = next(e for e in result.events if e.type == "final")
    assert final.source == "extract"
