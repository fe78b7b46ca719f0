"""`recursa mine`: the tactics across many runs, read from their traces.

Each run's events are read back (trace files, folders of them, or the run store) and
summarised: which REPL helpers its code called, the chunk sizes written in that code, how
wide each block fanned out, the shapes of its sub-query prompts (normalised so the same
template matches across runs), its errors by kind, and the turns, calls and cost it took.
The report adds them up across runs and compares the runs that reached an answer (`ok`)
with the others, feature by feature.

Everything is computed from the events alone: nothing is re-run and no model is asked.
"""

from __future__ import annotations

import ast
import json
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sandbox.inside.names import HELPERS
from ..trace.reader import read_events
from ..trace.source import resolve_trace
from ..trace.store import RunStore

SUB_PURPOSES = frozenset({"sub", "leaf"})
"""LM calls made from code: llm_query (sub) and rlm_query at the depth limit (leaf)."""
_TOTAL = re.compile(r"\n\.\.\. \[([\d,]+) characters in all\]$")
_DIGITS = re.compile(r"\d[\d,_.]*")
_SPACES = re.compile(r"\s+")
_URL = re.compile(r"https?://\S+?(?=[:,;]?(\s|$))")
SHAPE_CHARS = 160
"""A prompt shape keeps at most this many characters of its template."""


# ---- reading traces ------------------------------------------------------------------------
@dataclass(slots=True)
class TraceRun:
    """One run's events, and where they were read from."""

    run_id: str
    source: str
    events: list[dict[str, Any]]


def load_runs(
    sources: Iterable[str],
    *,
    store: RunStore | None = None,
    all_stored: bool = False,
    limit: int | None = None,
) -> tuple[list[TraceRun], list[str]]:
    """The runs in `sources` (trace files, folders searched for *.jsonl, stored run ids),
    plus every stored run with `all_stored` (the newest `limit`). Returns the runs, each
    once, and warnings about what was skipped."""
    runs: list[TraceRun] = []
    warnings: list[str] = []
    seen: set[str] = set()

    def add(found: Iterable[TraceRun]) -> None:
        for run in found:
            if run.run_id not in seen:
                seen.add(run.run_id)
                runs.append(run)

    for source in sources:
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
            if not files:
                warnings.append(f"{source}: no *.jsonl trace in this folder")
            for file in files:
                add(_read_file(file, warnings))
        elif path.is_file():
            add(_read_file(path, warnings))
        else:
            found = resolve_trace(source, store)
            assert found.run is not None and found.store is not None
            store = found.store
            add(_split(found.events(), f"store:{found.run.id}", warnings))
    if all_stored:
        store = store or RunStore()
        for stored in store.list(limit or 1_000_000):
            add(_split(store.events(stored.id), f"store:{stored.id}", warnings))
    return runs, warnings


def _read_file(path: Path, warnings: list[str]) -> list[TraceRun]:
    """A trace file's runs, skipping (and counting) lines that are not events: a run killed
    mid-write leaves a torn last line."""
    events, problems = read_events(path, tolerant=True)
    warnings.extend(problems)
    return _split(events, str(path), warnings)


def _split(events: list[dict[str, Any]], source: str, warnings: list[str]) -> list[TraceRun]:
    """A file may hold several runs (a session, files joined by hand): one per run id."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        run_id = event.get("run_id")
        if isinstance(run_id, str) and run_id:
            by_run.setdefault(run_id, []).append(event)
    runs = []
    for run_id, run_events in by_run.items():
        if not any(e["type"] == "run_start" for e in run_events):
            warnings.append(f"{source}: run {run_id} has no run_start event; skipped")
            continue
        runs.append(TraceRun(run_id, source, run_events))
    if not by_run:
        warnings.append(f"{source}: no events")
    return runs


# ---- one run ---------------------------------------------------------------------------------
@dataclass(slots=True)
class RunStats:
    """What one run shows: its outcome, its code's tactics, its sub-queries and errors."""

    run_id: str
    source: str
    question: str
    model: str
    strategy: str
    status: str
    turns: int = 0
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    blocks: int = 0
    error_blocks: int = 0
    helper_calls: Counter[str] = field(default_factory=Counter)
    """Calls to each REPL helper (and tool) written in the code of the blocks that ran."""
    helper_blocks: Counter[str] = field(default_factory=Counter)
    """Blocks whose code calls each helper."""
    tactics: Counter[str] = field(default_factory=Counter)
    """Blocks using each plain-code tactic (regex, slicing, splitting, searching, loops)."""
    lm_calls: Counter[str] = field(default_factory=Counter)
    """Requests by purpose (root, extract, compact, sub, leaf, direct), retries included."""
    sub_queries: int = 0
    fan_outs: list[int] = field(default_factory=list)
    """Sub-queries started by each block that started any."""
    batched_fan_outs: int = 0
    sequential_fan_outs: int = 0
    """Blocks that sent several sub-queries without a batched call (one at a time)."""
    chunk_sizes: set[int] = field(default_factory=set)
    """Chunk sizes written in code: range(.., .., N) steps and x[i:i + N] slices."""
    prompt_chars: list[int] = field(default_factory=list)
    """The length of every sub-query prompt (from its trace record)."""
    shapes: Counter[str] = field(default_factory=Counter)
    block_errors: Counter[str] = field(default_factory=Counter)
    lm_errors: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    stalls: Counter[str] = field(default_factory=Counter)
    context_printed: int = 0
    run_error: str | None = None
    extracted: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def features(self) -> dict[str, bool]:
        """Yes/no facts compared between successful and failed runs."""
        repeated = any(n > 1 for n in self.block_errors.values())
        return {
            "called llm_query_batched": self.helper_calls["llm_query_batched"] > 0,
            "called llm_query": self.helper_calls["llm_query"] > 0,
            "called rlm_query": self.helper_calls["rlm_query"]
            + self.helper_calls["rlm_query_batched"]
            > 0,
            "fanned out (a block sent 2+ sub-queries)": any(w > 1 for w in self.fan_outs),
            "sent sub-queries one at a time": self.sequential_fan_outs > 0,
            "chunked in code": bool(self.chunk_sizes),
            "used regular expressions": self.tactics["regex"] > 0,
            "ended in code (FINAL/FINAL_VAR/SUBMIT)": any(
                self.helper_calls[h] for h in ("FINAL", "FINAL_VAR", "SUBMIT")
            ),
            "a block raised an error": self.error_blocks > 0,
            "the same error came back": repeated,
            "was warned of a stall": self.stalls["warned"] > 0,
            "printed the context": self.context_printed > 0,
            "was refused by the budget": sum(self.refusals.values()) > 0,
            "a sub-query failed": sum(self.lm_errors.values()) > 0,
            "needed the last-chance extraction": self.extracted,
        }

    def numbers(self) -> dict[str, float]:
        """Measures compared between successful and failed runs (means)."""
        return {
            "turns": self.turns,
            "blocks": self.blocks,
            "blocks that raised": self.error_blocks,
            "sub-queries": self.sub_queries,
            "widest fan-out": max(self.fan_outs, default=0),
            "LM calls": self.llm_calls,
            "tokens": self.input_tokens + self.output_tokens,
            "cost (USD)": self.cost_usd,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "source": self.source,
            "question": self.question,
            "model": self.model,
            "strategy": self.strategy,
            "status": self.status,
            "turns": self.turns,
            "llm_calls": self.llm_calls,
            "cost_usd": round(self.cost_usd, 10),
            "blocks": self.blocks,
            "error_blocks": self.error_blocks,
            "sub_queries": self.sub_queries,
            "fan_outs": self.fan_outs,
            "chunk_sizes": sorted(self.chunk_sizes),
            "helpers": dict(sorted(self.helper_calls.items())),
            "error": self.run_error,
        }


def analyse(run: TraceRun) -> RunStats:
    """Summarise one run's events."""
    events = run.events
    start = next(e for e in events if e["type"] == "run_start")
    end = next((e for e in reversed(events) if e["type"] == "run_end"), None)
    settings = start.get("settings") or {}
    question = str(start.get("question") or "")
    stats = RunStats(
        run_id=run.run_id,
        source=run.source,
        question=question,
        model=str(start.get("model") or ""),
        strategy=str(settings.get("strategy") or "rlm"),
        status=str(end.get("status")) if end else "unfinished",
    )
    if end is not None:
        usage = end.get("usage") or {}
        stats.turns = int(end.get("iterations") or 0)
        stats.llm_calls = int(usage.get("llm_calls") or 0)
        stats.input_tokens = int(usage.get("input_tokens") or 0)
        stats.output_tokens = int(usage.get("output_tokens") or 0)
        stats.cost_usd = float(usage.get("cost_usd") or 0.0)
        stats.seconds = float(end.get("t") or 0.0)
        if end.get("error") and stats.status != "ok":
            stats.run_error = str(end["error"])
    helpers = (*HELPERS, *(settings.get("tools") or []))
    pending: dict[str, list[str]] = defaultdict(list)
    """Sub-query prompts each RLM started since its last block ended: that block's."""
    for event in events:
        kind = event["type"]
        rlm = str(event.get("rlm", "0"))
        if kind == "turn_start":
            pending.pop(rlm, None)
        elif kind == "lm_call_start":
            purpose = str(event.get("purpose") or "")
            if purpose in SUB_PURPOSES and int(event.get("attempt") or 1) == 1:
                stats.sub_queries += 1
                prompt = event.get("prompt") or ""
                stats.prompt_chars.append(_prompt_length(prompt))
                pending[rlm].append(prompt)
        elif kind == "lm_call_end":
            stats.lm_calls[str(event.get("purpose") or "?")] += 1
            if event.get("error") and event.get("purpose") in SUB_PURPOSES:
                stats.lm_errors[_lm_error_kind(event)] += 1
            if event.get("purpose") == "extract":
                stats.extracted = True
        elif kind == "block":
            _block(stats, event, helpers, pending.pop(rlm, []))
        elif kind == "budget_refused":
            stats.refusals[str(event.get("limit") or "?")] += 1
        elif kind == "stall":
            stats.stalls[str(event.get("action") or "?")] += 1
            stats.stalls[f"kind:{event.get('kind')}"] += 1
        elif kind == "context_printed":
            stats.context_printed += 1
    return stats


def _block(stats: RunStats, event: dict[str, Any], helpers: tuple[str, ...], prompts: list[str]):
    code = str(event.get("code") or "")
    stats.blocks += 1
    if event.get("error"):
        stats.error_blocks += 1
        stats.block_errors[error_kind(str(event["error"]))] += 1
    calls, tactics, sizes = code_facts(code, helpers)
    stats.helper_calls.update(calls)
    stats.helper_blocks.update(calls.keys())
    stats.tactics.update(tactics)
    stats.chunk_sizes.update(sizes)
    if prompts:
        stats.fan_outs.append(len(prompts))
        batched = calls["llm_query_batched"] + calls["rlm_query_batched"] > 0
        if batched:
            stats.batched_fan_outs += 1
        elif len(prompts) > 1:
            stats.sequential_fan_outs += 1
        for shape in prompt_shapes(prompts, stats.question):
            stats.shapes[shape] += 1


# ---- reading code ---------------------------------------------------------------------------
def code_facts(
    code: str, helpers: Iterable[str] = HELPERS
) -> tuple[Counter[str], set[str], set[int]]:
    """(calls to each helper, plain-code tactics used, chunk sizes written) in one block."""
    wanted = set(helpers)
    calls: Counter[str] = Counter()
    tactics: set[str] = set()
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        for name in wanted:  # unparsable: count the names that look called
            found = len(re.findall(rf"(?<![\w.]){re.escape(name)}\s*\(", code))
            if found:
                calls[name] = found
        return calls, tactics, set()
    constants = _int_constants(tree)
    sizes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in wanted:
                calls[func.id] += 1
            if isinstance(func, ast.Name) and func.id == "range" and len(node.args) == 3:
                step = _int_value(node.args[2], constants)
                if step is not None and step > 1:
                    sizes.add(step)
            if isinstance(func, ast.Attribute):
                if isinstance(func.value, ast.Name) and func.value.id == "re":
                    tactics.add("regex")
                elif func.attr in ("split", "splitlines"):
                    tactics.add("split")
                elif func.attr in ("find", "rfind", "index", "count", "startswith", "endswith"):
                    tactics.add("search")
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            tactics.add("slice")
            upper = node.slice.upper
            if isinstance(upper, ast.BinOp) and isinstance(upper.op, ast.Add):
                for side in (upper.left, upper.right):
                    size = _int_value(side, constants)
                    if size is not None and size > 1:
                        sizes.add(size)
        elif isinstance(node, ast.For | ast.While):
            tactics.add("loop")
        elif isinstance(node, ast.ListComp | ast.GeneratorExp | ast.DictComp | ast.SetComp):
            tactics.add("comprehension")
    return calls, tactics, sizes


def _int_constants(tree: ast.AST) -> dict[str, int]:
    """Names bound to a whole number in this code (`step = 20_000`)."""
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                value = _int_value(node.value, found)
                if value is not None:
                    found[target.id] = value
    return found


def _int_value(node: ast.AST, names: dict[str, int]) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.BinOp):
        left, right = _int_value(node.left, names), _int_value(node.right, names)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.FloorDiv) and right:
            return left // right
    return None


def error_kind(error: str) -> str:
    """The exception's name from a block's traceback: its last line's first word."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown"
    match = re.match(r"([A-Za-z_][\w.]*)", lines[-1])
    return match.group(1).rsplit(".", 1)[-1] if match else "unknown"


def _lm_error_kind(event: dict[str, Any]) -> str:
    status = event.get("status")
    if status:
        return f"HTTP {status}"
    text = str(event.get("error") or "")
    return "connection" if "connect" in text.lower() else "other"


# ---- prompt shapes ----------------------------------------------------------------------------
def _prompt_length(prompt: str) -> int:
    """A recorded prompt's real length: an excerpt says how long the whole prompt was."""
    match = _TOTAL.search(prompt)
    return int(match.group(1).replace(",", "")) if match else len(prompt)


def prompt_shapes(prompts: list[str], question: str = "") -> list[str]:
    """One normalised shape per prompt. Prompts of one block (one fan-out) share their
    template: the text common to all of them, with the varying part shown as `{text}`.
    A lone prompt keeps its first paragraph. The question becomes `{question}`, numbers
    `N` and runs of white space one space, so the same template matches across runs."""
    texts = [_TOTAL.sub("", p) for p in prompts]
    truncated = any(_TOTAL.search(p) for p in prompts)
    if len(texts) > 1:
        prefix = _cut_prefix(_common_prefix(texts))
        suffix = "" if truncated else _cut_suffix(_common_suffix(texts, len(prefix)))
        if len(prefix.strip()) + len(suffix.strip()) >= 8:
            return [_normalise(prefix, suffix, question)] * len(texts)
    shapes = []
    for text in texts:
        head, sep, _ = text[:600].partition("\n\n")
        if sep and head.strip():
            shapes.append(_normalise(head + "\n\n", "", question))
        else:
            shapes.append(_normalise(text[:SHAPE_CHARS], "", question, whole=len(text) <= 120))
    return shapes


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    n = 0
    while n < len(first) and first[n] == last[n]:
        n += 1
    return first[:n]


def _common_suffix(texts: list[str], skip: int) -> str:
    reversed_texts = [t[skip:][::-1] for t in texts]
    return _common_prefix(reversed_texts)[::-1]


def _cut_prefix(prefix: str) -> str:
    """Stop before the varying part: at the last line break, else the last space."""
    if "\n" in prefix:
        return prefix[: prefix.rindex("\n") + 1]
    if " " in prefix:
        return prefix[: prefix.rindex(" ") + 1]
    return prefix


def _cut_suffix(suffix: str) -> str:
    """Start after the varying part (at a line break or space); kept only when it is text
    of the template (words), not the end of what varies."""
    for mark in ("\n", " "):
        if mark in suffix:
            suffix = suffix[suffix.index(mark) :]
            break
    else:
        return ""
    return suffix if len(re.findall(r"[A-Za-z]", suffix)) >= 8 else ""


def _normalise(prefix: str, suffix: str, question: str, *, whole: bool = False) -> str:
    def clean(text: str) -> str:
        if question and len(question) >= 8:
            text = text.replace(question, "\0")
        text = _SPACES.sub(" ", _DIGITS.sub("N", text)).strip()
        return text.replace("\0", "{question}")

    head = clean(prefix)
    if len(head) > SHAPE_CHARS:
        head = head[:SHAPE_CHARS] + "…"
    if whole:
        return head
    tail = clean(suffix)[:60]
    return f"{head} {{text}}" + (f" {tail}" if tail else "")


# ---- across runs --------------------------------------------------------------------------------
@dataclass(slots=True)
class MineReport:
    """The report: `data` is what `--json` prints; `markdown()` the readable form."""

    data: dict[str, Any]
    runs: list[RunStats]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, ensure_ascii=False)

    def markdown(self) -> str:
        return render_markdown(self.data)


def mine(
    sources: Iterable[str],
    *,
    store: RunStore | None = None,
    all_stored: bool = False,
    limit: int | None = None,
) -> MineReport:
    """Read the runs in `sources` (see `load_runs`) and report their tactics."""
    runs, warnings = load_runs(sources, store=store, all_stored=all_stored, limit=limit)
    return mine_runs(runs, warnings)


MALFORMED = (TypeError, ValueError, AttributeError, KeyError, IndexError, SyntaxError)
"""What reading an event of the wrong shape raises: a trace may come from anyone."""


def mine_runs(runs: list[TraceRun], warnings: list[str] | None = None) -> MineReport:
    warnings = list(warnings or [])
    stats = []
    for run in runs:
        try:
            stats.append(analyse(run))
        except MALFORMED as exc:
            warnings.append(
                f"{run.source}: run {run.run_id} has an event of the wrong shape "
                f"({type(exc).__name__}: {exc}); skipped"
            )
    ok = [s for s in stats if s.ok]
    failed = [s for s in stats if not s.ok]
    data: dict[str, Any] = {
        "runs": len(stats),
        "ok_runs": len(ok),
        "failed_runs": len(failed),
        "warnings": warnings,
        "status": dict(Counter(s.status for s in stats).most_common()),
        "strategies": dict(Counter(s.strategy for s in stats).most_common()),
        "helpers": _counted(stats, "helper_calls", "helper_blocks"),
        "tactics": {
            name: {"runs": sum(1 for s in stats if s.tactics[name]), "blocks": blocks}
            for name, blocks in _total(s.tactics for s in stats).most_common()
        },
        "lm_calls": dict(_total(s.lm_calls for s in stats).most_common()),
        "sub_queries": sum(s.sub_queries for s in stats),
        "chunk_sizes": _chunk_sizes(stats),
        "sub_prompt_chars": _spread([n for s in stats for n in s.prompt_chars]),
        "fan_out": _fan_out(stats),
        "prompt_shapes": _shapes(stats),
        "errors": _errors(stats),
        "turns_and_cost": _turns_and_cost(stats),
        "separators": _separators(ok, failed),
        "per_run": [s.to_dict() for s in stats],
    }
    return MineReport(data, stats)


def _total(counters: Iterable[Counter[str]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return total


def _counted(stats: list[RunStats], calls_attr: str, blocks_attr: str) -> dict[str, Any]:
    calls = _total(getattr(s, calls_attr) for s in stats)
    blocks = _total(getattr(s, blocks_attr) for s in stats)
    return {
        name: {
            "runs": sum(1 for s in stats if getattr(s, calls_attr)[name]),
            "ok_runs": sum(1 for s in stats if s.ok and getattr(s, calls_attr)[name]),
            "blocks": blocks[name],
            "calls": n,
        }
        for name, n in calls.most_common()
    }


def _spread(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 4),
        "max": max(values),
    }


def _chunk_sizes(stats: list[RunStats]) -> dict[str, Any]:
    runs: Counter[int] = Counter()
    ok_runs: Counter[int] = Counter()
    for s in stats:
        runs.update(s.chunk_sizes)
        if s.ok:
            ok_runs.update(s.chunk_sizes)
    return {
        str(size): {"runs": n, "ok_runs": ok_runs[size]}
        for size, n in sorted(runs.items(), key=lambda kv: (-kv[1], kv[0]))
    }


def _fan_out(stats: list[RunStats]) -> dict[str, Any]:
    widths = [w for s in stats for w in s.fan_outs]
    histogram = Counter(widths)
    return {
        "blocks": len(widths),
        "batched_blocks": sum(s.batched_fan_outs for s in stats),
        "sequential_blocks": sum(s.sequential_fan_outs for s in stats),
        "widths": {str(w): histogram[w] for w in sorted(histogram)},
        **{k: v for k, v in _spread(widths).items() if k != "count"},
    }


def _shapes(stats: list[RunStats]) -> list[dict[str, Any]]:
    prompts: Counter[str] = Counter()
    runs: Counter[str] = Counter()
    ok_runs: Counter[str] = Counter()
    for s in stats:
        prompts.update(s.shapes)
        runs.update(s.shapes.keys())
        if s.ok:
            ok_runs.update(s.shapes.keys())
    ordered = sorted(prompts, key=lambda k: (-runs[k], -prompts[k], k))
    return [
        {"shape": k, "prompts": prompts[k], "runs": runs[k], "ok_runs": ok_runs[k]} for k in ordered
    ]


def _errors(stats: list[RunStats]) -> dict[str, Any]:
    stalls = _total(s.stalls for s in stats)
    run_errors = Counter(
        _SPACES.sub(" ", _DIGITS.sub("N", _URL.sub("URL", s.run_error)))[:100]
        for s in stats
        if s.run_error and s.status == "error"
    )
    return {
        "blocks": dict(_total(s.block_errors for s in stats).most_common()),
        "sub_queries": dict(_total(s.lm_errors for s in stats).most_common()),
        "budget_refused": dict(_total(s.refusals for s in stats).most_common()),
        "stalls": {
            "warned": stalls["warned"],
            "stopped": stalls["stopped"],
            "kinds": {
                k.removeprefix("kind:"): n for k, n in stalls.most_common() if k.startswith("kind:")
            },
        },
        "context_printed": sum(s.context_printed for s in stats),
        "runs": dict(run_errors.most_common()),
    }


def _turns_and_cost(stats: list[RunStats]) -> dict[str, Any]:
    groups: dict[str, list[RunStats]] = {"all": stats}
    for s in stats:
        groups.setdefault(s.status, []).append(s)
    out = {}
    for name, group in groups.items():
        out[name] = {
            "runs": len(group),
            "turns": _spread([s.turns for s in group]),
            "llm_calls": _spread([s.llm_calls for s in group]),
            "tokens": _spread([s.input_tokens + s.output_tokens for s in group]),
            "cost_usd": {**_spread([s.cost_usd for s in group]), "total": _sum_cost(group)},
            "seconds": _spread([s.seconds for s in group]),
        }
    return out


def _sum_cost(group: list[RunStats]) -> float:
    return round(sum(s.cost_usd for s in group), 10)


def _separators(ok: list[RunStats], failed: list[RunStats]) -> dict[str, Any]:
    """Each feature's rate among ok runs and among the others, largest gap first."""
    features: list[dict[str, Any]] = []
    numbers: list[dict[str, Any]] = []
    if ok or failed:
        names = (ok or failed)[0].features().keys()
        for name in names:
            ok_rate = _rate([s.features()[name] for s in ok])
            failed_rate = _rate([s.features()[name] for s in failed])
            features.append(
                {
                    "feature": name,
                    "ok": ok_rate,
                    "failed": failed_rate,
                    "ok_count": sum(1 for s in ok if s.features()[name]),
                    "failed_count": sum(1 for s in failed if s.features()[name]),
                    "difference": None
                    if ok_rate is None or failed_rate is None
                    else round(ok_rate - failed_rate, 4),
                }
            )
        for name in (ok or failed)[0].numbers():
            numbers.append(
                {
                    "measure": name,
                    "ok_mean": _mean([s.numbers()[name] for s in ok]),
                    "failed_mean": _mean([s.numbers()[name] for s in failed]),
                }
            )
    features.sort(key=lambda f: -abs(f["difference"] or 0))
    return {
        "ok_runs": len(ok),
        "failed_runs": len(failed),
        "features": features,
        "numbers": numbers,
    }


def _rate(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


# ---- markdown ---------------------------------------------------------------------------------
def render_markdown(data: dict[str, Any]) -> str:
    return "\n".join(_markdown_lines(data)) + "\n"


def _markdown_lines(data: dict[str, Any]) -> Iterator[str]:
    yield "# Tactics across runs"
    yield ""
    status = ", ".join(f"{n} {k}" for k, n in data["status"].items()) or "none"
    yield f"{data['runs']} runs: {status}."
    for warning in data["warnings"]:
        yield f"- warning: {_cell(warning)}"
    yield ""
    yield "## Helpers called from code"
    yield ""
    yield from _table(
        ["helper", "runs", "of them ok", "blocks", "calls"],
        [
            [f"`{k}`", v["runs"], v["ok_runs"], v["blocks"], v["calls"]]
            for k, v in data["helpers"].items()
        ],
    )
    if data["tactics"]:
        yield ""
        yield (
            "Plain-code tactics (blocks using them): "
            + ", ".join(
                f"{k} {v['blocks']} in {v['runs']} runs" for k, v in data["tactics"].items()
            )
            + "."
        )
    calls = ", ".join(f"{k} {n}" for k, n in data["lm_calls"].items()) or "none"
    yield ""
    yield f"LM requests by purpose: {calls}; sub-queries: {data['sub_queries']}."
    yield ""
    yield "## Chunking and fan-out"
    yield ""
    sizes = ", ".join(
        f"{int(k):,} ({v['runs']} runs, {v['ok_runs']} ok)" for k, v in data["chunk_sizes"].items()
    )
    yield f"Chunk sizes written in code (characters, lines or items): {sizes or 'none'}."
    chars = data["sub_prompt_chars"]
    if chars["count"]:
        yield (
            f"Sub-query prompts: {chars['count']}, {chars['min']:,} to {chars['max']:,} "
            f"characters (median {chars['median']:,})."
        )
    fan = data["fan_out"]
    if fan["blocks"]:
        widths = ", ".join(f"{w}: {n}" for w, n in fan["widths"].items())
        yield (
            f"Blocks that sent sub-queries: {fan['blocks']} ({fan['batched_blocks']} batched, "
            f"{fan['sequential_blocks']} one at a time); width min {fan['min']}, median "
            f"{fan['median']}, max {fan['max']}; widths (width: blocks) {widths}."
        )
    else:
        yield "No block sent sub-queries."
    yield ""
    yield "## Sub-query prompt shapes"
    yield ""
    yield from _table(
        ["shape", "prompts", "runs", "of them ok"],
        [
            [f"`{_cell(s['shape'])}`", s["prompts"], s["runs"], s["ok_runs"]]
            for s in data["prompt_shapes"][:20]
        ],
    )
    if len(data["prompt_shapes"]) > 20:
        yield f"\n… and {len(data['prompt_shapes']) - 20} more shapes (see the JSON report)."
    errors = data["errors"]
    yield ""
    yield "## Errors"
    yield ""
    rows = [["block raised", k, n] for k, n in errors["blocks"].items()]
    rows += [["sub-query failed", k, n] for k, n in errors["sub_queries"].items()]
    rows += [["budget refused", k, n] for k, n in errors["budget_refused"].items()]
    rows += [["stall", k, n] for k, n in errors["stalls"]["kinds"].items()]
    if errors["stalls"]["warned"] or errors["stalls"]["stopped"]:
        rows += [["stall", "warned", errors["stalls"]["warned"]]]
        rows += [["stall", "stopped", errors["stalls"]["stopped"]]]
    if errors["context_printed"]:
        rows += [["context printed", "", errors["context_printed"]]]
    rows += [["run ended in error", _cell(k), n] for k, n in errors["runs"].items()]
    yield from _table(["where", "kind", "count"], rows)
    yield ""
    yield "## Turns and cost to an answer"
    yield ""
    rows = []
    for name, group in data["turns_and_cost"].items():
        turns, calls_, cost = group["turns"], group["llm_calls"], group["cost_usd"]
        rows.append(
            [
                name,
                group["runs"],
                turns.get("median", "-"),
                turns.get("max", "-"),
                calls_.get("median", "-"),
                f"{cost.get('mean', 0):.4f}",
                f"{cost['total']:.4f}",
            ]
        )
    yield from _table(
        ["status", "runs", "median turns", "max turns", "median LM calls", "mean USD", "total USD"],
        rows,
    )
    sep = data["separators"]
    yield ""
    yield "## What separates successful runs from failed ones"
    yield ""
    if not sep["ok_runs"] or not sep["failed_runs"]:
        yield (
            f"Nothing to compare: {sep['ok_runs']} ok and {sep['failed_runs']} failed runs "
            "(both are needed)."
        )
        return
    yield f"{sep['ok_runs']} ok runs against {sep['failed_runs']} others, largest gap first."
    yield ""
    yield from _table(
        ["feature", "ok runs", "failed runs", "gap"],
        [
            [
                f["feature"],
                f"{f['ok_count']} ({f['ok']:.0%})",
                f"{f['failed_count']} ({f['failed']:.0%})",
                f"{f['difference']:+.0%}",
            ]
            for f in sep["features"]
            if f["ok_count"] or f["failed_count"]
        ],
    )
    yield ""
    yield from _table(
        ["measure (mean)", "ok runs", "failed runs"],
        [[n["measure"], _num(n["ok_mean"]), _num(n["failed_mean"])] for n in sep["numbers"]],
    )


def _table(head: list[str], rows: list[list[Any]]) -> Iterator[str]:
    if not rows:
        yield "(none)"
        return
    yield "| " + " | ".join(head) + " |"
    yield "|" + "|".join(" --- " for _ in head) + "|"
    for row in rows:
        yield "| " + " | ".join(str(c) for c in row) + " |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"
