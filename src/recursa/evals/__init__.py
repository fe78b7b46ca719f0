"""Evaluation harness: generated long-context task families, scorers, an oracle model per
family, `recursa eval` (strategies x families x lengths, cached, resumable, reported) and
`recursa bench` (the performance suite).

    from recursa.evals import EvalConfig, run_eval

    summary = run_eval(EvalConfig(out="eval-out", families=["niah"], lengths=[8_000],
                                  strategies=["direct", "rlm"], oracle="oracle"))
    print(summary.mean_score("rlm"), summary.report)

Heavy pieces (matplotlib, the benchmarks, the harness itself) are imported only where used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recursa.evals.generators import FAMILIES, generate
    from recursa.evals.harness import (
        STRATEGIES,
        EvalConfig,
        EvalSummary,
        load_results,
        run_eval,
    )
    from recursa.evals.tasks import RepoFiles, Task, format_length, parse_length, parse_lengths

_HOMES = {
    "FAMILIES": "generators",
    "generate": "generators",
    "STRATEGIES": "harness",
    "EvalConfig": "harness",
    "EvalSummary": "harness",
    "load_results": "harness",
    "run_eval": "harness",
    "RepoFiles": "tasks",
    "Task": "tasks",
    "format_length": "tasks",
    "parse_length": "tasks",
    "parse_lengths": "tasks",
}
"""Each public name's module, imported on first use: `recursa eval --help` and the other
commands then do not load the harness and the engine."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "FAMILIES",
    "STRATEGIES",
    "EvalConfig",
    "EvalSummary",
    "RepoFiles",
    "Task",
    "format_length",
    "generate",
    "load_results",
    "parse_length",
    "parse_lengths",
    "run_eval",
]
