"""The names the REPL gives model code, in one place: the worker defines them, the host
reserves them (tools may not take them), mining counts them and distill binds them."""

from __future__ import annotations

HELPERS = (
    "llm_query",
    "llm_query_batched",
    "rlm_query",
    "rlm_query_batched",
    "FINAL",
    "FINAL_VAR",
    "SUBMIT",
    "SHOW_VARS",
)
"""The functions the REPL gives model code (tools are added per run, from its settings)."""
EXCEPTIONS = ("BudgetExceeded", "LLMQueryError")
"""The exception types the REPL gives model code, to catch a refused or failed sub-query."""
REPL_NAMES = HELPERS + EXCEPTIONS
"""Every name the worker installs before model code runs, tools aside."""
VARIABLES = ("context", "history")
"""The variables the host sets in the REPL: the contexts and a session's earlier turns."""
NUMBERED = ("context_", "history_")
"""Prefixes of the numbered variables: `context_N` (the N-th context, when there are several)
and, in the official dialect's sessions, `history_N` (question N's root conversation, a list
of {"role", "content"} dicts; `history` is then the latest one)."""
RESERVED = frozenset(REPL_NAMES + VARIABLES)
"""Names model code finds already bound, so a tool may not take one."""


def is_numbered(name: str) -> bool:
    """Whether `name` is one of the numbered variables (`context_0`, `history_3`, ...)."""
    return any(name.startswith(p) and name[len(p) :].isdigit() for p in NUMBERED)
