"""`recursa distill`: one successful run's working code path, as a standalone program.

The root RLM's blocks are read back from the trace. The block that gave the answer (its
FINAL, FINAL_VAR or SUBMIT; or the variable of a `FINAL_VAR(name)` line) is kept, and so,
walking backwards, is every earlier block that ran without error and binds or changes a
name a kept block reads: the chunking, the fan-out and the aggregation. Exploration (blocks
that only print, or whose results nothing uses) and failed blocks are left out.

The kept code is written, as recorded, into the body of a `run(question, context, ...)`
function, where `llm_query` & co. come from `recursa.mining.pipeline.SubModels`: every
request goes to a sub-model through recursa's gateway and ledger, none to a root model.
Three rewrites are made, each visible in the output: `FINAL_VAR("name")` becomes
`FINAL(name)`; a string that holds the recorded question takes the `question` parameter
instead; `global` statements become what they mean inside a function.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import re
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.protocol import parse_turn
from ..errors import ConfigError
from ..sandbox.inside.names import HELPERS, REPL_NAMES, RESERVED
from ..trace.store import RunStore
from .mine import MALFORMED, SUB_PURPOSES, TraceRun, error_kind, load_runs


class DistillError(ConfigError):
    """The run cannot be distilled (not successful, no code path, a broken dependency)."""


BUILTIN_NAMES = frozenset(dir(builtins))
MUTATING_METHODS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "remove",
        "pop",
        "popitem",
        "clear",
        "update",
        "setdefault",
        "add",
        "discard",
        "sort",
        "reverse",
        "appendleft",
        "extendleft",
        "popleft",
        "rotate",
        "subtract",
        "write",
        "writelines",
        "seek",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
    }
)
"""Methods that change the object they are called on: `hits.append(x)` changes `hits`."""
PURE_FUNCTIONS = frozenset(
    {
        "print",
        "len",
        "repr",
        "str",
        "int",
        "float",
        "bool",
        "type",
        "isinstance",
        "sorted",
        "list",
        "dict",
        "set",
        "tuple",
        "frozenset",
        "sum",
        "min",
        "max",
        "any",
        "all",
        "enumerate",
        "zip",
        "range",
        "reversed",
        "round",
        "abs",
        "hash",
        "id",
        "format",
        "iter",
        "next",
        "map",
        "filter",
        "dir",
        "vars",
        "chr",
        "ord",
        *HELPERS,
    }
)
"""Functions that do not change their arguments: passing `x` to them does not change `x`."""
PURE_MODULES = frozenset(
    {
        "re",
        "json",
        "math",
        "statistics",
        "textwrap",
        "itertools",
        "string",
        "difflib",
        "collections",
    }
)
INDENT = " " * 8


@dataclass(slots=True)
class Block:
    """One block the root RLM ran, as recorded."""

    iteration: int
    index: int
    code: str
    error: str | None
    sub_queries: int = 0
    binds: set[str] = field(default_factory=set)
    """Names the block binds at the REPL's top level (anywhere outside functions)."""
    kills: set[str] = field(default_factory=set)
    """Names its top-level statements rebind unconditionally (older values are dead)."""
    changes: set[str] = field(default_factory=set)
    """Names whose objects it changes in place (hits.append, counts[k] = ...)."""
    uses: set[str] = field(default_factory=set)
    local: set[str] = field(default_factory=set)
    """Every name bound anywhere in it: function arguments, loop and comprehension names."""
    syntax_ok: bool = True

    @property
    def where(self) -> str:
        return f"turn {self.iteration} block {self.index}"


@dataclass(slots=True)
class Plan:
    """What the pipeline keeps, what it leaves out and why, and notes for its header."""

    kept: list[Block]
    left_out: list[tuple[Block, str]]
    final_var: str | None = None
    """The variable of a `FINAL_VAR(name)` line outside code, when that gave the answer."""
    notes: list[str] = field(default_factory=list)


# ---- entry points -----------------------------------------------------------------------------
def distill(
    trace: str, *, run_id: str | None = None, store: RunStore | None = None, name: str = ""
) -> str:
    """The program for one run: `trace` is a trace file or a stored run's id (or prefix);
    `run_id` picks a run when the file holds several."""
    runs, _ = load_runs([trace], store=store)
    if run_id is not None:
        runs = [r for r in runs if r.run_id.startswith(run_id)]
    if not runs:
        raise DistillError(f"{trace} holds no run" + (f" {run_id!r}" if run_id else ""))
    if len(runs) > 1:
        ids = ", ".join(r.run_id for r in runs[:5])
        raise DistillError(f"{trace} holds {len(runs)} runs ({ids}): pick one with --run ID")
    return distill_run(runs[0], name=name)


def distill_events(
    events: list[dict[str, Any]], *, source: str = "<events>", name: str = ""
) -> str:
    """The program for a run given as its events (dicts, as a trace file holds them)."""
    run_ids = {str(e.get("run_id")) for e in events if e.get("type") == "run_start"}
    if len(run_ids) != 1:
        raise DistillError(f"{source}: expected the events of one run, found {len(run_ids)}")
    return distill_run(TraceRun(run_ids.pop(), source, events), name=name)


def distill_run(run: TraceRun, *, name: str = "") -> str:
    try:
        return render(plan_blocks(run.events), _facts(run), name=name)
    except MALFORMED as exc:
        raise DistillError(
            f"{run.source}: run {run.run_id} has an event of the wrong shape "
            f"({type(exc).__name__}: {exc})"
        ) from None


# ---- choosing the blocks ------------------------------------------------------------------------
def plan_blocks(events: list[dict[str, Any]]) -> Plan:
    """Which root blocks make the answer, from a successful run's events."""
    start = next(e for e in events if e.get("type") == "run_start")
    end = next((e for e in reversed(events) if e.get("type") == "run_end"), None)
    strategy = (start.get("settings") or {}).get("strategy")
    if strategy in ("direct", "pipeline"):
        raise DistillError(f"run {start['run_id']} used the {strategy} strategy: no REPL code")
    if end is None:
        raise DistillError(f"run {start['run_id']} never ended (no run_end event)")
    if end.get("status") != "ok":
        raise DistillError(
            f"run {start['run_id']} ended with status {end.get('status')}: distill needs a "
            "run that reached its answer (status ok)"
        )
    final = next(
        (e for e in reversed(events) if e.get("type") == "final" and e.get("rlm", "0") == "0"),
        None,
    )
    if final is None:
        raise DistillError(f"run {start['run_id']} has no final event for its root")
    blocks = _root_blocks(events)
    _analyse(blocks)
    source = final.get("source")
    iteration = int(final.get("iteration") or 0)
    plan = Plan(kept=[], left_out=[])
    if source in ("code", "submit"):
        in_turn = [b for b in blocks if b.iteration == iteration]
        if not in_turn:
            raise DistillError(f"no block of turn {iteration} is recorded: the trace is partial")
        last = in_turn[-1]
        if last.error:
            raise DistillError(
                f"the block that gave the answer ({last.where}) also raised "
                f"{error_kind(last.error)}: its code path cannot be repeated as recorded"
            )
        needed = set(last.uses)
        plan.kept.append(last)
        earlier = [b for b in blocks if (b.iteration, b.index) < (last.iteration, last.index)]
    elif source == "line":
        marker = parse_turn(_root_reply(events, iteration)).final
        if marker is None or marker.kind != "var":
            raise DistillError(
                "the answer was written by the root model as a literal FINAL(...) line, not "
                "computed by code: there is no code path to distill (a run that ends with "
                "FINAL/FINAL_VAR in code, or a FINAL_VAR(name) line, can be distilled)"
            )
        plan.final_var = marker.text
        needed = {marker.text}
        earlier = [b for b in blocks if b.iteration <= iteration]
    else:
        raise DistillError(f"the answer came from {source!r}, not from code: nothing to distill")
    for block in reversed(earlier):
        if block.error or not block.syntax_ok:
            plan.left_out.append((block, f"raised {error_kind(block.error or 'SyntaxError')}"))
            continue
        if (block.binds | block.changes) & needed:
            plan.kept.append(block)
            needed = (needed - block.kills) | block.uses
        else:
            plan.left_out.append((block, "exploration: nothing kept reads what it made"))
    plan.kept.reverse()
    plan.left_out.sort(key=lambda item: (item[0].iteration, item[0].index))
    _check_names(plan, blocks)
    return plan


def _root_blocks(events: list[dict[str, Any]]) -> list[Block]:
    blocks: list[Block] = []
    pending = 0
    for event in events:
        kind = event.get("type")
        if event.get("rlm", "0") != "0":
            continue
        if kind == "turn_start":
            pending = 0
        elif (
            kind == "lm_call_start"
            and event.get("purpose") in SUB_PURPOSES
            and int(event.get("attempt") or 1) == 1
        ):
            pending += 1
        elif kind == "block":
            blocks.append(
                Block(
                    iteration=int(event.get("iteration") or 0),
                    index=int(event.get("index") or 0),
                    code=str(event.get("code") or ""),
                    error=event.get("error"),
                    sub_queries=pending,
                )
            )
            pending = 0
    return blocks


def _root_reply(events: list[dict[str, Any]], iteration: int) -> str:
    """The root model's reply of turn `iteration` (the successful root calls, in order)."""
    replies = [
        str(e.get("text") or "")
        for e in events
        if e.get("type") == "lm_call_end"
        and e.get("rlm", "0") == "0"
        and e.get("purpose") == "root"
        and not e.get("error")
    ]
    if not 1 <= iteration <= len(replies):
        raise DistillError(f"the root's reply of turn {iteration} is not in the trace")
    return replies[iteration - 1]


def _analyse(blocks: list[Block]) -> None:
    """Fill in each block's names; modules are what any block imported."""
    trees: list[ast.Module | None] = []
    for block in blocks:
        try:
            trees.append(ast.parse(block.code))
        except (SyntaxError, ValueError):
            block.syntax_ok = False
            trees.append(None)
    modules = {
        (alias.asname or alias.name).split(".")[0]
        for tree in trees
        if tree is not None
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    for block, tree in zip(blocks, trees, strict=True):
        if tree is not None:
            block.binds = _top_binds(tree)
            block.kills = _kills(tree)
            block.uses, block.local, block.changes = _uses_and_changes(tree, modules)


def _top_binds(tree: ast.Module, *, with_globals: bool = True) -> set[str]:
    """Names bound in the REPL's namespace: anywhere except inside functions and classes
    (whose names are bound) and comprehensions (whose `:=` targets are); with
    `with_globals`, also the names functions declare `global`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found.add(child.name)
                if with_globals:
                    found.update(_global_names(child))
                continue
            if isinstance(child, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp):
                found.update(_walrus_names(child))
                continue
            if isinstance(child, ast.GeneratorExp):
                found.update(_walrus_names(child))
                continue
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store | ast.Del):
                found.add(child.id)
            elif isinstance(child, ast.Import | ast.ImportFrom):
                found.update((a.asname or a.name).split(".")[0] for a in child.names)
            elif isinstance(child, ast.ExceptHandler) and child.name:
                found.add(child.name)
            elif isinstance(child, ast.NamedExpr) and isinstance(child.target, ast.Name):
                found.add(child.target.id)
            visit(child)

    visit(tree)
    return found


def _global_names(node: ast.AST) -> set[str]:
    return {n for g in ast.walk(node) if isinstance(g, ast.Global) for n in g.names}


def _walrus_names(node: ast.AST) -> set[str]:
    return {
        n.target.id
        for n in ast.walk(node)
        if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name)
    }


def _kills(tree: ast.Module) -> set[str]:
    """Names a top-level statement rebinds whatever happens (not in an if, loop or try)."""
    found: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                found.update(_plain_names(target))
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            found.update(_plain_names(stmt.target))
        elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.add(stmt.name)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            found.update((a.asname or a.name).split(".")[0] for a in stmt.names)
    return found


def _plain_names(target: ast.AST) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Tuple | ast.List):
        return {n for elt in target.elts for n in _plain_names(elt)}
    if isinstance(target, ast.Starred):
        return _plain_names(target.value)
    return set()


def _base_name(node: ast.AST) -> str | None:
    """`x` of x, x[k], x.a, x[k].a[j]."""
    while isinstance(node, ast.Subscript | ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _uses_and_changes(tree: ast.Module, modules: set[str]) -> tuple[set[str], set[str], set[str]]:
    uses: set[str] = set()
    local: set[str] = set()
    changes: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                uses.add(node.id)
            else:
                local.add(node.id)
        elif isinstance(node, ast.arg):
            local.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            local.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            local.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            local.add(node.name)
        elif isinstance(node, ast.Global | ast.Nonlocal):
            uses.update(node.names)
        elif isinstance(node, ast.AugAssign):
            if isinstance(node.target, ast.Name):
                uses.add(node.target.id)
            elif (base := _base_name(node.target)) is not None:
                changes.add(base)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            for target in targets:
                if isinstance(target, ast.Subscript | ast.Attribute):
                    base = _base_name(target)
                    if base is not None:
                        changes.add(base)
        elif isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Name)
                and func.id == "FINAL_VAR"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                uses.add(node.args[0].value)
            if isinstance(func, ast.Attribute) and func.attr in MUTATING_METHODS:
                base = _base_name(func.value)
                if base is not None:
                    changes.add(base)
            if _may_change_arguments(func, modules):
                for arg in [*node.args, *(k.value for k in node.keywords)]:
                    if isinstance(arg, ast.Name):
                        changes.add(arg.id)
    return uses, local, changes


def _may_change_arguments(func: ast.AST, modules: set[str]) -> bool:
    """Whether a call might change the objects passed to it: any function but the plain
    builtins and helpers, and any function of an imported module but the pure ones."""
    if isinstance(func, ast.Name):
        return func.id not in PURE_FUNCTIONS
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        base = func.value.id
        return base in modules and base not in PURE_MODULES
    return False


def _check_names(plan: Plan, blocks: list[Block]) -> None:
    """A name the kept code reads must come from kept code, the REPL or Python itself."""
    known = set(RESERVED) | BUILTIN_NAMES | {"question"}
    for block in plan.kept:
        known |= block.binds | block.local
    missing: set[str] = set()
    for block in plan.kept:
        missing |= {n for n in block.uses if n not in known and not _is_context_n(n)}
    if plan.final_var is not None and plan.final_var not in known:
        missing.add(plan.final_var)
    if "history" in {n for b in plan.kept for n in b.uses}:
        raise DistillError(
            "the working path reads `history` (the root model's conversation), which a "
            "pipeline does not have: this run cannot be distilled"
        )
    for name in sorted(missing):
        makers = [b for b in blocks if name in b.binds]
        if makers:
            maker = makers[-1]
            why = f"which raised {error_kind(maker.error)}" if maker.error else "which was left out"
            raise DistillError(
                f"the working path reads `{name}`, made only by {maker.where} ({why}): "
                "this run's code path cannot be repeated"
            )
        plan.notes.append(f"`{name}` is read but no recorded block binds it")


def _is_context_n(name: str) -> bool:
    return re.fullmatch(r"context_\d+", name) is not None


# ---- the run's facts, for the header ----------------------------------------------------------
def _facts(run: TraceRun) -> dict[str, Any]:
    events = run.events
    start = next(e for e in events if e.get("type") == "run_start")
    end = next((e for e in reversed(events) if e.get("type") == "run_end"), None) or {}
    usage = end.get("usage") or {}
    sub_models = Counter(
        str(e.get("model"))
        for e in events
        if e.get("type") == "lm_call_start" and e.get("purpose") in SUB_PURPOSES
    )
    sub_model = (
        sub_models.most_common(1)[0][0]
        if sub_models
        else start.get("sub_model") or start.get("model") or ""
    )
    subs = sum(
        1
        for e in events
        if e.get("type") == "lm_call_start"
        and e.get("purpose") in SUB_PURPOSES
        and int(e.get("attempt") or 1) == 1
    )
    settings = start.get("settings") or {}
    return {
        "run_id": run.run_id,
        "source": run.source,
        "question": str(start.get("question") or ""),
        "answer": end.get("answer"),
        "model": str(start.get("model") or ""),
        "sub_model": sub_model,
        "turns": end.get("iterations"),
        "llm_calls": usage.get("llm_calls", 0),
        "sub_queries": subs,
        "cost_usd": usage.get("cost_usd", 0.0),
        "tools": list(settings.get("tools") or []),
        "max_depth": settings.get("max_depth") or 1,
        "blocks": sum(1 for e in events if e.get("type") == "block" and e.get("rlm", "0") == "0"),
    }


# ---- writing the program ------------------------------------------------------------------------
def render(plan: Plan, facts: dict[str, Any], *, name: str = "") -> str:
    question = facts["question"]
    steps = [_rewrite(block.code, question, plan) for block in plan.kept]
    all_code = "\n".join(steps)
    used = _names_in(all_code) | ({plan.final_var} if plan.final_var else set())
    pipe = next(n for n in ("pipe", "pipe_", "_pipe", "_recursa_pipe") if n not in used)
    tools = [t for t in facts["tools"] if t in used]
    if tools:
        raise DistillError(
            f"the working path calls host tools ({', '.join(tools)}), which a pipeline does "
            "not provide: this run cannot be distilled"
        )
    lines: list[str] = []
    lines += _header(plan, facts, name)
    lines += [
        "from __future__ import annotations",
        "",
        "from typing import Any",
        "",
        "from recursa import RunResult",
        "from recursa.mining.pipeline import SubModels",
        "",
        f"RECORDED_QUESTION = {question!r}",
        f"RECORDED_ANSWER = {facts['answer']!r}",
        f"SUB_MODEL = {facts['sub_model']!r}",
        '"""Where the recorded run sent its sub-queries; pass sub_model= for another."""',
        "",
        "",
        "def run(",
        "    question: str, context: Any, *, sub_model: str = SUB_MODEL, **options: Any",
        ") -> RunResult:",
        '    """Answer `question` over `context` by the recorded code path. `options` go to',
        "    SubModels: base_url, max_llm_calls, max_tokens, max_cost, timeout, concurrency,",
        '    on_event, trace, record_full_prompts."""',
        "    with SubModels(",
        "        sub_model, question=question, context=context, pipeline=__file__, **options",
        f"    ) as {pipe}:",
    ]
    bound = [n for n in REPL_NAMES if n in used or n == "FINAL"]
    for group in _groups(bound):
        targets = ", ".join(group)
        values = ", ".join(f"{pipe}.{n}" for n in group)
        lines.append(f"{INDENT}{targets} = {values}")
    contexts_n = sorted({n for n in used if _is_context_n(n)}, key=lambda n: int(n[8:]))
    for n in contexts_n:
        lines.append(f"{INDENT}{n} = context[{int(n[8:])}]  # several contexts: a list")
    total = len(plan.kept)
    for number, (block, code) in enumerate(zip(plan.kept, steps, strict=True), start=1):
        what = _step_note(block, number == total and plan.final_var is None)
        lines.append("")
        lines.append(f"{INDENT}# ---- step {number} of {total}: {block.where}{what} ----")
        lines.extend(_indent(code))
    if plan.final_var is not None:
        lines.append("")
        lines.append(
            f"{INDENT}# ---- the answer: the run ended with the line FINAL_VAR({plan.final_var})"
        )
        lines.append(f"{INDENT}FINAL({plan.final_var})")
    lines += [
        f"    return {pipe}.result",
        "",
        "",
        'if __name__ == "__main__":  # the same as: recursa pipeline THIS_FILE --context PATH Q',
        "    import sys",
        "",
        "    from recursa.cli import main",
        "",
        '    main(["pipeline", __file__, *sys.argv[1:]])',
        "",
    ]
    program = "\n".join(lines)
    try:
        compile(program, name or "pipeline.py", "exec")
    except SyntaxError as exc:
        raise DistillError(
            f"the distilled program does not compile (line {exc.lineno}: {exc.msg}); "
            "the recorded code cannot run inside a function as written"
        ) from None
    return program


def _groups(names: list[str]) -> list[list[str]]:
    """Short assignment lines: at most three names each."""
    return [names[i : i + 3] for i in range(0, len(names), 3)]


def _step_note(block: Block, last: bool) -> str:
    parts = []
    if block.sub_queries:
        n = block.sub_queries
        parts.append(f"{n} sub-quer{'y' if n == 1 else 'ies'} when recorded")
    if last:
        parts.append("it gives the answer")
    return f" ({'; '.join(parts)})" if parts else ""


def _header(plan: Plan, facts: dict[str, Any], name: str) -> list[str]:
    kept = ", ".join(b.where for b in plan.kept) or "none"
    cost = float(facts["cost_usd"] or 0.0)
    lines = [
        f'"""Pipeline distilled by `recursa distill` from run {facts["run_id"]}.',
        "",
        f"Recorded question: {_line(facts['question'])}",
        f"Recorded answer:   {_line(json.dumps(facts['answer'], ensure_ascii=False))}",
        f"Recorded run:      {facts['model']}, {facts['turns']} turn(s), {facts['llm_calls']} LM "
        f"calls ({facts['sub_queries']} sub-queries), ${cost:.4f}",
        "",
        f"It repeats the root model's working code path ({len(plan.kept)} of the "
        f"{facts['blocks']} blocks it ran, in order)",
        "with the question and the context as parameters. Sub-queries (llm_query,",
        "llm_query_batched, and rlm_query as one plain sub-query) go to a sub-model through",
        "recursa.mining.pipeline.SubModels, under recursa's budget, events and traces. The",
        "root model is never called.",
        "",
        f"Kept:     {kept}",
    ]
    for block, why in plan.left_out:
        lines.append(f"Left out: {block.where} ({why})")
    if facts["max_depth"] > 1 and any("rlm_query" in b.code for b in plan.kept):
        lines.append("Note: rlm_query started child RLMs when recorded; here it is one sub-query.")
    for note in plan.notes:
        lines.append(f"Note: {note}")
    lines += [
        "",
        "WARNING: this is model-written code and it runs on THIS machine, in the Python process",
        "that calls run(), not in recursa's sandbox: it can do anything you can. Read it first.",
        "",
        "Run it:",
        f"    recursa pipeline {name or 'pipeline.py'} --context PATH QUESTION [--sub-model M]"
        " [--trace FILE] [--json]",
        f"    python {name or 'pipeline.py'} --context PATH QUESTION   (the same)",
        '"""',
        "",
    ]
    return [line.replace("\\", "\\\\") for line in lines]


def _line(text: str, limit: int = 200) -> str:
    one = " ".join(str(text).split()).replace('"""', "'''")
    return one if len(one) <= limit else one[:limit] + "…"


def _names_in(code: str) -> set[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set(re.findall(r"[A-Za-z_]\w*", code))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    return names


# ---- rewriting one block ------------------------------------------------------------------
def _rewrite(code: str, question: str, plan: Plan) -> str:
    """The block's code with the three rewrites; everything else, comments included, as is."""
    tree = ast.parse(code)
    # a `global` name bound directly in run()'s body is one of its locals: `nonlocal`;
    # one that only functions bind stays a global of the pipeline's module
    top = {n for b in plan.kept for n in _top_binds(ast.parse(b.code), with_globals=False)}
    edits: list[tuple[ast.AST, str]] = []
    use_question = len(question.strip()) >= 8

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Global):
                if not in_function:
                    edits.append((child, "pass  # was: " + ast.unparse(child)))
                elif all(n in top for n in child.names):
                    edits.append((child, "nonlocal " + ", ".join(child.names)))
                continue
            if (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Name)
                and child.func.id == "FINAL_VAR"
                and len(child.args) == 1
                and not child.keywords
                and isinstance(child.args[0], ast.Constant)
                and isinstance(child.args[0].value, str)
                and child.args[0].value.isidentifier()
            ):
                edits.append((child, f"FINAL({child.args[0].value})"))
                continue
            if use_question and isinstance(child, ast.JoinedStr):
                if any(_holds(v, question) for v in child.values):
                    text = _same_quotes(
                        ast.unparse(_with_question(child, question)),
                        ast.get_source_segment(code, child) or "",
                    )
                    edits.append((child, text))
                continue
            if use_question and _holds(child, question):
                edits.append((child, _concat(child.value, question)))  # type: ignore[attr-defined]
                continue
            inner = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            visit(child, inner)

    visit(tree, False)
    return _splice(code, edits)


def _holds(node: ast.AST, question: str) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and question in node.value


def _with_question(node: ast.JoinedStr, question: str) -> ast.JoinedStr:
    values: list[ast.expr] = []
    for value in node.values:
        if not _holds(value, question):
            values.append(value)
            continue
        pieces = value.value.split(question)  # type: ignore[attr-defined]
        for i, piece in enumerate(pieces):
            if i:
                values.append(
                    ast.FormattedValue(
                        value=ast.Name("question", ast.Load()), conversion=-1, format_spec=None
                    )
                )
            if piece:
                values.append(ast.Constant(piece))
    return ast.JoinedStr(values=values)


def _same_quotes(unparsed: str, original: str) -> str:
    """ast.unparse writes f'...'; keep a recorded f"..." where nothing needs escaping."""
    body = unparsed[2:-1]
    simple = unparsed.startswith("f'") and not unparsed.startswith("f'''")
    if original[:2].lower() == 'f"' and simple and '"' not in body and "\\'" not in body:
        return f'f"{body}"'
    return unparsed


def _concat(text: str, question: str) -> str:
    parts: list[str] = []
    for i, piece in enumerate(text.split(question)):
        if i:
            parts.append("question")
        if piece:
            parts.append(repr(piece))
    return "(" + " + ".join(parts) + ")" if len(parts) > 1 else parts[0]


def _splice(code: str, edits: list[tuple[ast.AST, str]]) -> str:
    """Replace each node's source by its text (outermost edits only; ast columns are bytes)."""
    if not edits:
        return code
    data = code.encode("utf-8")
    starts = [0]
    for line in code.splitlines(keepends=True):
        starts.append(starts[-1] + len(line.encode("utf-8")))

    def offset(line: int, col: int) -> int:
        return starts[line - 1] + col

    spans = sorted(
        (
            offset(n.lineno, n.col_offset),  # type: ignore[attr-defined]
            offset(n.end_lineno, n.end_col_offset),  # type: ignore[attr-defined]
            text,
        )
        for n, text in edits
    )
    out: list[bytes] = []
    pos = 0
    for begin, end, text in spans:
        if begin < pos:  # inside an edit already made
            continue
        out.append(data[pos:begin])
        out.append(text.encode("utf-8"))
        pos = end
    out.append(data[pos:])
    return b"".join(out).decode("utf-8")


def _indent(code: str) -> list[str]:
    """The code, indented into run()'s body; lines inside multi-line strings stay as they
    are (indenting them would change the strings), and leading tabs become spaces."""
    code = code.rstrip() + "\n"
    keep = _string_rows(code)
    lines = []
    for number, line in enumerate(code.splitlines(), start=1):
        if number in keep:
            lines.append(line)
        elif not line.strip():
            lines.append("")
        else:
            stripped = line.lstrip(" \t")
            lead = line[: len(line) - len(stripped)].expandtabs(8)
            lines.append(INDENT + lead + stripped)
    return lines


def _string_rows(code: str) -> set[int]:
    """Line numbers that continue a string started on an earlier line."""
    rows: set[int] = set()
    opened: list[int] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            kind = tokenize.tok_name[tok.type]
            if kind == "STRING" and tok.end[0] > tok.start[0]:
                rows.update(range(tok.start[0] + 1, tok.end[0] + 1))
            elif kind == "FSTRING_START":
                opened.append(tok.start[0])
            elif kind == "FSTRING_END" and opened:
                first = opened.pop()
                rows.update(range(first + 1, tok.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass
    return rows


def write(program: str, out: str | Path) -> Path:
    path = Path(out)
    try:
        path.write_text(program, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
