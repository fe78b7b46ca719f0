"""The action kernel: variables, and one deterministic handler per action. No code runs.

Variables live in a dict. Each remembers where its data came from (`origins`): the context,
a sub-model, a tool, the model itself ("you"), the caller's inputs, or the kernel. What an
action shows the model is an `ActionResult`: a kernel summary (trusted) and excerpts, each
labelled with its origins, so text from the context, a sub-model or a tool is marked
untrusted wherever it appears (`values`, which also holds `render`, the bound on a whole
turn's observation). This module is the dispatcher; the search engine is `search`.

Kernel-only actions run in a worker thread (a search over a gigabyte must not stall the
event loop of a server running other jobs); every LM call goes through the run's gateway,
so the ledger, events and replay see them exactly as in code mode.

A large file (a `file` context, or a directory's file of at least its mmap threshold) is a
`MappedText`, mapped here in the host as the REPL worker maps it, and closed with the kernel:
search, lines, preview and ranges stream it; the actions that need a whole text (chunk,
json_parse, extract, sub_lm, final) get it only up to STR_LIMIT, as `str(context)` does.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from array import array
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ...context import Context
from ...errors import BudgetExceeded, ConfigError, LMError
from ...events import BudgetRefused, ToolCalled
from ...sandbox.inside.mapped import MappedText
from ..run import Run
from ..signature import Signature, SignatureError, parse_signature
from . import prompts
from . import schema as s
from .search import (
    KEEP_HITS,
    compile_regex,
    line_end,
    line_starts,
    mapped_line_range,
    mapped_lines,
    search_value,
)
from .values import (
    ITEM_CHARS,
    LINE_CHARS,
    SHOW_ITEMS,
    ActionFailed,
    ActionResult,
    DirView,
    Excerpt,
    brief,
    describe,
    json_text,
    mapped_range,
    one_line,
    peek,
    plain,
    segment,
    text_of,
)

MAX_CHUNKS = 100_000


MAX_FANOUT = 10_000
"""Prompts one extract_over_chunks may send."""


MAX_PROMPT_CHARS = 4_000_000
"""A sub-model prompt longer than this (about a million tokens) is refused before sending."""


LISTED_VARS = 30


PROTECTED = re.compile(r"^context(_\d+)?$")


_STEP = re.compile(r'\[(-?\d+)\]|\.([A-Za-z_]\w*)|\["([^"\]\\]+)"\]')


_HOLE = re.compile(r"\{([A-Za-z_]\w*" + s.STEP_PATTERN + r"*)\}")


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


class Kernel:
    """Variables and the actions over them, for one action-mode run."""

    def __init__(
        self,
        run: Run | None,
        contexts: list[Context],
        inputs: dict[str, Any] | None = None,
        *,
        signature: Signature | None = None,
    ) -> None:
        self.run = run
        self.signature = signature
        self.vars: dict[str, Any] = {}
        self.origins: dict[str, frozenset[str]] = {}
        self._described: dict[str, str] = {}
        self.tools = dict(run.tools) if run is not None else {}
        values = [_context_value(c) for c in contexts]
        self._opened = [v for v in values if isinstance(v, MappedText | DirView)]
        ctx = frozenset({"context"})
        if len(values) == 1:
            self._set("context", values[0], ctx)
        elif values:
            self._set("context", list(values), ctx)
            for i, value in enumerate(values):
                self._set(f"context_{i}", value, ctx)
        for name, value in (inputs or {}).items():
            if re.match(s.NAME_PATTERN, name) and not PROTECTED.match(name):
                self._set(name, value, frozenset({"input"}))

    def close(self) -> None:
        """Unmap the files this kernel mapped: its `file` contexts, directories' large files."""
        for value in self._opened:
            value.close()

    def _set(self, name: str, value: Any, origins: frozenset[str]) -> None:
        self.vars[name] = value
        self.origins[name] = origins
        self._described.pop(name, None)

    def about(self, ref: str, value: Any) -> str:
        """`describe(value)` of what `ref` names, remembered for whole variables: counting
        the lines of a gigabyte is a pass over it, not to be made on every search."""
        if ref not in self.vars or self.vars[ref] is not value:
            return describe(value)
        text = self._described.get(ref)
        if text is None:
            text = self._described[ref] = describe(value)
        return text

    def store(self, name: str, value: Any, origins: frozenset[str], result: ActionResult) -> str:
        if PROTECTED.match(name):
            raise ActionFailed(
                f"`{name}` holds a context and cannot be replaced: use another name."
            )
        self._set(name, value, origins or frozenset({"kernel"}))
        result.new_vars.append(name)
        return f"stored in `{name}` ({self.about(name, value)})"

    def listing(self) -> str:
        names = list(self.vars)
        shown = ", ".join(f"{n} ({self.about(n, self.vars[n])})" for n in names[:LISTED_VARS])
        more = f", and {len(names) - LISTED_VARS:,} more" if len(names) > LISTED_VARS else ""
        return f"Variables: {shown}{more}." if names else "There are no variables yet."

    # ---- references ------------------------------------------------------------------------
    def resolve(self, ref: str) -> tuple[Any, frozenset[str]]:
        head = re.match(r"[A-Za-z_]\w*", ref)
        if head is None:
            raise ActionFailed(f"{brief(ref)} is not a variable. {self.listing()}")
        name = head.group()
        if name not in self.vars:
            raise ActionFailed(f"no variable `{name}`. {self.listing()}")
        value = self.vars[name]
        path = name
        origins = self.origins[name]
        for step in _STEP.finditer(ref, head.end()):
            index, attr, key = step.groups()
            try:
                value = _step(value, path, int(index) if index is not None else None, attr or key)
            except ActionFailed as exc:
                for excerpt in exc.excerpts:  # the keys are the variable's own data
                    excerpt.origins = origins
                raise
            path += step.group()
        return value, origins

    # ---- running ---------------------------------------------------------------------------
    async def execute(self, action: Any) -> ActionResult:
        """Run one validated action; never raises on the model's mistakes."""
        name = action.action
        result = ActionResult(name)
        try:
            handler = getattr(self, f"_do_{name}")
            if name in _ASYNC_ACTIONS:
                await handler(action, result)
            else:
                await asyncio.to_thread(handler, action, result)
        except ActionFailed as exc:
            result.error = exc.message
            result.excerpts = exc.excerpts
        except BudgetExceeded as exc:
            result.error = f"the budget refused it: {exc}"
        except LMError as exc:
            result.error = f"the sub-model call failed: {exc}"
        except (MemoryError, RecursionError, OverflowError) as exc:
            result.error = f"too large: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a kernel bug must not end the run
            result.error = f"internal error in the kernel ({type(exc).__name__}: {exc})"
        return result

    # ---- looking ---------------------------------------------------------------------------
    def _do_preview(self, a: s.Preview, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        if isinstance(value, str | MappedText):
            start = max(len(value) + a.start, 0) if a.start < 0 else a.start
            part = value[start : start + a.length]
            if not part:  # past the end (the length of a mapped file costs a pass over it)
                start = min(start, len(value))
            about = self.about(a.var, value)
            r.summary = f"`{a.var}` ({about}), characters {start:,} to {start + len(part):,}:"
            r.excerpts.append(Excerpt(origins, part))
            return
        if isinstance(value, list | tuple | Mapping):
            keys = list(range(len(value))) if not isinstance(value, Mapping) else list(value)
            start = max(len(keys) + a.start, 0) if a.start < 0 else min(a.start, len(keys))
            chosen = keys[start : start + min(a.length, 200)]
            if isinstance(value, Mapping):
                lines = [f"{one_line(str(k), 200)}: {one_line(peek(value[k]))}" for k in chosen]
            else:
                lines = [f"[{k}] {one_line(peek(value[k]))}" for k in chosen]
            body = "\n".join(lines)
            about = self.about(a.var, value)
            r.summary = f"`{a.var}` ({about}), items {start:,} to {start + len(chosen):,}:"
            r.excerpts.append(Excerpt(origins, body or "(none)"))
            return
        r.summary = f"`{a.var}` ({self.about(a.var, value)}):"
        r.excerpts.append(Excerpt(origins, json_text(value)[: a.length]))

    def _do_search(self, a: s.Search, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        keep = KEEP_HITS if a.into else a.max_hits
        found = search_value(value, a.pattern, regex=a.regex, ignore_case=a.ignore_case, keep=keep)
        kind = "regex" if a.regex else "literal"
        total = f"at least {found.total:,}" if found.capped else f"{found.total:,}"
        shown = found.hits[: a.max_hits]
        summary = f"{total} hit{'' if found.total == 1 else 's'} for {kind} {brief(a.pattern)}"
        summary += f" in `{a.var}` ({self.about(a.var, value)})"
        if shown:
            summary += f"; the first {len(shown)} below (offset, line: text around the hit)"
        if a.into:
            summary += "; " + self.store(a.into, found.hits, origins, r)
            if len(found.hits) < found.total:
                summary += f"; only the first {len(found.hits):,} hits were kept"
        r.summary = summary + "."
        if shown:
            texts: dict[Any, str | MappedText] = {}  # only the items hits are in, read once
            lines = []
            for hit in shown:
                item = hit.get("item")
                if item not in texts:
                    texts[item] = segment(value if item is None else value[item])
                text = texts[item]
                start, end = hit["offset"], hit["offset"] + len(hit["match"])
                around = text[max(start - a.context_chars, 0) : end + a.context_chars]
                where = f"item {hit['item']!r}, " if "item" in hit else ""
                lines.append(
                    f"- {where}offset {start:,}, line {hit['line']:,}: "
                    + one_line(around, 2 * a.context_chars + ITEM_CHARS)
                )
            r.excerpts.append(Excerpt(origins, "\n".join(lines)))

    def _do_lines(self, a: s.Lines, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        text: str | MappedText
        if isinstance(value, MappedText):
            text = value
            lines = mapped_lines(text, a.start, a.count, None if a.into else LINE_CHARS + 1)
        else:
            text = text_of(value)
            lines = [text[p : line_end(text, p)] for p in line_starts(text, a.start, a.count)]
        if not lines:
            total = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
            raise ActionFailed(f"`{a.var}` has {total:,} lines: there is no line {a.start:,}.")
        last = a.start + len(lines) - 1
        r.summary = f"`{a.var}` lines {a.start:,} to {last:,}:"
        r.excerpts.append(
            Excerpt(
                origins,
                "\n".join(
                    f"{a.start + i:>7}| " + one_line(line, LINE_CHARS)
                    for i, line in enumerate(lines)
                ),
            )
        )
        if a.into:
            r.summary += " " + self.store(a.into, "\n".join(lines), origins, r) + "."

    def _do_load(self, a: s.Load, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        unit = a.unit or ("chars" if isinstance(value, str | MappedText) else "items")
        if unit == "items":
            if isinstance(value, Mapping):
                keys = list(value)[a.start : a.end]
                part: Any = {k: value[k] for k in keys}
            elif isinstance(value, list | tuple):
                part = list(value[a.start : a.end])
            else:
                raise ActionFailed(
                    f'`{a.var}` is a {self.about(a.var, value)}: "unit": "items" needs a list or a '
                    'mapping; use "chars" or "lines".'
                )
        elif unit == "chars" and isinstance(value, MappedText):
            part = mapped_range(value, a.start, a.end)
        elif unit == "chars":
            part = text_of(value)[a.start : a.end]
        elif a.start < 1 or (a.end is not None and a.end < 1):
            raise ActionFailed('with "unit": "lines", start and end are line numbers (1 up).')
        elif isinstance(value, MappedText):
            part = mapped_line_range(value, a.start, a.end)
        else:
            text = text_of(value)
            count = None if a.end is None else max(a.end - a.start, 0)
            starts = line_starts(text, a.start, count) if count != 0 else array("q")
            if not starts:
                part = ""
            else:
                end = line_end(text, starts[-1])
                part = text[starts[0] : end]
        r.summary = f"{unit} {a.start}:{'' if a.end is None else a.end} of `{a.var}` "
        r.summary += self.store(a.into, part, origins, r) + "."

    def _do_chunk(self, a: s.Chunk, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        if a.overlap >= a.size:
            raise ActionFailed(f"overlap ({a.overlap}) must be smaller than size ({a.size}).")
        unit = a.unit or ("items" if isinstance(value, list | tuple | Mapping) else "chars")
        step = a.size - a.overlap
        chunks: list[Any]
        if unit == "items":
            if not isinstance(value, list | tuple | Mapping):
                raise ActionFailed(
                    f'`{a.var}` is a {self.about(a.var, value)}: "unit": "items" needs a list; use '
                    '"chars" or "lines".'
                )
            items = list(value.values()) if isinstance(value, Mapping) else list(value)
            _check_chunks(len(items), a.size, step)
            chunks = [items[i : i + a.size] for i in range(0, max(len(items) - a.overlap, 1), step)]
        elif unit == "chars":
            text = text_of(value)
            _check_chunks(len(text), a.size, step)
            chunks = [text[i : i + a.size] for i in range(0, max(len(text) - a.overlap, 1), step)]
        else:
            text = text_of(value)
            starts = line_starts(text, 1)
            _check_chunks(len(starts), a.size, step)
            chunks = []
            for i in range(0, max(len(starts) - a.overlap, 1), step):
                if i >= len(starts):
                    break
                j = i + a.size
                end = starts[j] - 1 if j < len(starts) else line_end(text, starts[-1])
                chunks.append(text[starts[i] : end])
            if not chunks:
                chunks = [text]
        r.summary = f"`{a.var}` in {len(chunks):,} chunk{'' if len(chunks) == 1 else 's'} of "
        r.summary += f"{a.size:,} {unit}"
        r.summary += f" (overlap {a.overlap:,})" if a.overlap else ""
        r.summary += "; " + self.store(a.into, chunks, origins, r) + "."

    def _do_vars(self, a: s.Vars, r: ActionResult) -> None:
        r.summary = self.listing()

    def _do_json_parse(self, a: s.JsonParse, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        text = text_of(value)
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as exc:
            parsed = _first_json(text)
            if parsed is None:
                raise ActionFailed(f"`{a.var}` holds no JSON value ({exc}).") from None
        r.summary = f"JSON parsed from `{a.var}`; " + self.store(a.into, parsed, origins, r) + "."

    def _do_aggregate(self, a: s.Aggregate, r: ActionResult) -> None:
        value, origins = self.resolve(a.var)
        if isinstance(value, Mapping):
            items = list(value.values())
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise ActionFailed(
                f"aggregate needs a list, and `{a.var}` is a {self.about(a.var, value)}: make "
                "one with chunk, search (into) or extract_over_chunks first."
            )
        total = len(items)
        missing = 0
        if a.field:
            steps = a.field if a.field.startswith("[") else "." + a.field
            if not re.fullmatch(s.STEP_PATTERN + "+", steps):
                raise ActionFailed(
                    f"field {brief(a.field)} is not a field path such as match, groups[0] or a.b."
                )
            picked = []
            for item in items:
                try:
                    picked.append(_walk(item, steps))
                except ActionFailed:
                    missing += 1
            items = picked
        kept = 0
        if a.match is not None or a.exclude is not None:
            want = compile_regex(a.match) if a.match is not None else None
            skip = compile_regex(a.exclude) if a.exclude is not None else None
            chosen = []
            for item in items:
                text = item if isinstance(item, str) else json_text(item)
                if want is not None and not want.search(text):
                    continue
                if skip is not None and skip.search(text):
                    continue
                chosen.append(item)
            kept = len(items) - len(chosen)
            items = chosen
        of = f"`{a.var}`" + (f" field {a.field}" if a.field else "")
        notes = []
        if missing:
            notes.append(f"{missing:,} item(s) without that field skipped")
        if kept:
            notes.append(f"{kept:,} item(s) filtered out")
        result_origins = frozenset({"kernel"})
        shown: Excerpt | None = None
        if a.op == "count":
            result: Any = len(items)
            head = f"count over {of} ({total:,} items): {result:,}"
        elif a.op == "sum":
            result, bad = _sum(items)
            head = f"sum over {of} ({total:,} items): {_number(result)}"
            if bad:
                notes.append(f"{len(bad):,} item(s) not numbers, skipped")
                shown = Excerpt(
                    origins, "\n".join(one_line(_as_text(b), 120) for b in bad[:5]),
                    "the first items that are not numbers:",
                )  # fmt: skip
        else:
            result_origins = origins
            if a.op == "unique":
                result = _unique(items)
                head = f"{len(result):,} unique value(s) in {of} ({total:,} items)"
                body = "\n".join(f"- {one_line(_as_text(v))}" for v in result[:SHOW_ITEMS])
            elif a.op == "top_k":
                counts = Counter(_key(v) for v in items)
                firsts: dict[str, Any] = {}
                for v in items:
                    firsts.setdefault(_key(v), v)
                result = [[firsts[k], n] for k, n in counts.most_common(a.k)]
                head = f"the {len(result):,} most common value(s) in {of} ({total:,} items)"
                body = "\n".join(f"- {n:,} x {one_line(_as_text(v))}" for v, n in result)
            else:
                result = a.separator.join(_as_text(v) for v in items)
                head = f"{len(items):,} item(s) of {of} joined: {len(result):,} characters"
                body = result
            shown = Excerpt(origins, body or "(nothing)")
        summary = head + (f" ({'; '.join(notes)})" if notes else "")
        if a.into:
            summary += "; " + self.store(a.into, result, result_origins, r)
        r.summary = summary + "."
        if shown is not None:
            r.excerpts.append(shown)

    def _do_write_var(self, a: s.WriteVar, r: ActionResult) -> None:
        given = a.model_fields_set
        if ("value" in given) == ("var" in given and a.var is not None):
            raise ActionFailed('write_var takes either "value" or "var" (not both, not neither).')
        if "value" in given:
            value, origins = a.value, frozenset({"you"})
        else:
            value, origins = self.resolve(a.var or "")
        r.summary = self.store(a.name, value, origins, r) + "."

    def _do_final(self, a: s.Final, r: ActionResult) -> None:
        given = a.model_fields_set
        if ("value" in given) == ("var" in given and a.var is not None):
            raise ActionFailed('final takes either "value" or "var" (not both, not neither).')
        value = a.value if "value" in given else self.resolve(a.var or "")[0]
        r.final = (plain(value),)
        r.summary = "final answer given."

    # ---- calling out -----------------------------------------------------------------------
    def _template(
        self, template: str, extra: dict[str, str], cache: dict[str, str]
    ) -> tuple[str, set[str]]:
        """`{name}` holes filled with `extra` or variables' text; unknown names stay."""
        unknown: set[str] = set()

        def fill(m: re.Match[str]) -> str:
            ref = m.group(1)
            if ref in extra:
                return extra[ref]
            if ref not in cache:
                name = re.match(r"[A-Za-z_]\w*", ref)
                if name is None or name.group() not in self.vars:
                    unknown.add(ref)
                    return m.group()
                cache[ref] = text_of(self.resolve(ref)[0])
            return cache[ref]

        return _HOLE.sub(fill, template), unknown

    def _model(self, model: str | None) -> str:
        run = self._need_run()
        if model is None:
            return run.cfg.sub_model or run.cfg.model
        try:
            run.pool.check(model)
        except ConfigError as exc:
            raise ActionFailed(f"model {brief(model)}: {exc}") from None
        if run.cfg.limits.max_cost is not None and run.cfg.prices.lookup(model) is None:
            raise ActionFailed(
                f"max_cost is set and the price of {model} is unknown: it cannot be used here."
            )
        return model

    def _need_run(self) -> Run:
        if self.run is None:
            raise ActionFailed("this kernel has no model to ask.")
        return self.run

    async def _ask(self, prompt: str, model: str) -> str:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ActionFailed(
                f"the prompt would be {len(prompt):,} characters, more than any sub-model "
                f"reads ({MAX_PROMPT_CHARS:,}): chunk the text and use extract_over_chunks."
            )
        run = self._need_run()
        completion = await run.gateway.complete(
            [{"role": "user", "content": prompt}],
            model=model,
            depth=0,
            rlm="0",
            purpose="sub",
            prompt_for_trace=prompt,
        )
        return completion.text

    async def _do_sub_lm(self, a: s.SubLM, r: ActionResult) -> None:
        model = self._model(a.model)
        prompt, unknown = await asyncio.to_thread(self._template, a.prompt, {}, {})
        answer = await self._ask(prompt, model)
        r.summary = f"the sub-model answered ({len(answer):,} characters)"
        if unknown:
            r.summary += f"; left as written, naming no variable: {_names(unknown)}"
        if a.into:
            r.summary += "; " + self.store(a.into, answer, frozenset({"sub-model"}), r)
        r.summary += "."
        r.excerpts.append(Excerpt(frozenset({"sub-model"}), answer))

    async def _do_extract_over_chunks(self, a: s.ExtractOverChunks, r: ActionResult) -> None:
        value, _ = self.resolve(a.var)
        if not isinstance(value, list | tuple | Mapping):
            raise ActionFailed(
                f"extract_over_chunks needs a list, and `{a.var}` is a {self.about(a.var, value)}: "
                "split it with chunk first."
            )
        items = list(value.values()) if isinstance(value, Mapping) else list(value)
        if not items:
            raise ActionFailed(f"`{a.var}` is empty: there is nothing to send.")
        if len(items) > MAX_FANOUT:
            raise ActionFailed(
                f"`{a.var}` has {len(items):,} items; one extract_over_chunks sends at most "
                f"{MAX_FANOUT:,}: use larger chunks."
            )
        model = self._model(a.model)
        template = a.prompt if "{chunk}" in a.prompt else a.prompt + "\n\n{chunk}"

        def build() -> tuple[list[str], set[str]]:
            cache: dict[str, str] = {}
            out, unknown = [], set()
            for i, item in enumerate(items):
                prompt, missing = self._template(
                    template, {"chunk": text_of(item), "index": str(i)}, cache
                )
                out.append(prompt)
                unknown |= missing
            return out, unknown

        prompts_, unknown = await asyncio.to_thread(build)
        longest = max(len(p) for p in prompts_)
        if longest > MAX_PROMPT_CHARS:
            raise ActionFailed(
                f"a prompt would be {longest:,} characters, more than any sub-model reads "
                f"({MAX_PROMPT_CHARS:,}): use smaller chunks."
            )
        results = await asyncio.gather(
            *(self._ask(p, model) for p in prompts_), return_exceptions=True
        )
        answers: list[str] = []
        refused = failed = 0
        first_refusal: BudgetExceeded | None = None
        for res in results:
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, BudgetExceeded):
                refused += 1
                first_refusal = first_refusal or res
                answers.append(f"[error] budget: {res}")
            elif isinstance(res, BaseException):
                failed += 1
                message = res.message if isinstance(res, ActionFailed) else str(res)
                answers.append(f"[error] {type(res).__name__}: {message}")
            else:
                answers.append(res)
        if refused == len(results) and first_refusal is not None:
            raise ActionFailed(f"the budget refused every prompt: {first_refusal}")
        answered = len(answers) - refused - failed
        summary = f"{len(prompts_):,} prompt(s) sent to {model}: {answered:,} answered"
        if refused:
            summary += f", {refused:,} refused by the budget"
        if failed:
            summary += f", {failed:,} failed"
        if unknown:
            summary += f"; left as written, naming no variable: {_names(unknown)}"
        summary += "; " + self.store(a.into, answers, frozenset({"sub-model"}), r)
        r.summary = summary + "."
        shown = answers[:SHOW_ITEMS]
        more = f"\n... and {len(answers) - len(shown):,} more" if len(answers) > len(shown) else ""
        r.excerpts.append(
            Excerpt(
                frozenset({"sub-model"}),
                "\n".join(f"[{i}] {one_line(t)}" for i, t in enumerate(shown)) + more,
            )
        )

    async def _do_extract(self, a: s.Extract, r: ActionResult) -> None:
        value, _ = self.resolve(a.var)
        spec = "text -> " + ", ".join(f"{k}: {v}" for k, v in a.fields.items())
        try:
            signature = parse_signature(spec)
        except ConfigError as exc:
            raise ActionFailed(
                f"bad fields: {str(exc).split(': ', 2)[-1]}. Types: str, int, float, bool, "
                "list[T], dict[K, V], T | None."
            ) from None
        model = self._model(a.model)
        text = await asyncio.to_thread(text_of, value)
        instructions = f"\n{a.instructions}" if a.instructions else ""
        prompt = prompts.EXTRACT_FIELDS.format(
            fields=signature.describe(), instructions=instructions, text=text
        )
        answer = await self._ask(prompt, model)
        try:
            output = signature.validate(_first_json(answer, objects_only=True))
        except SignatureError as exc:
            reason = str(exc).split(";", 1)[-1].strip()
            raise ActionFailed(
                f"the sub-model's answer did not give {signature.describe()}: what was wrong "
                "and its answer are below.",
                [Excerpt(frozenset({"sub-model"}), f"{reason}\n\n{answer}", "what was wrong:")],
            ) from None
        fields = output.model_dump(mode="json")
        r.summary = f"fields read from `{a.var}`; " + self.store(
            a.into, fields, frozenset({"sub-model"}), r
        ) + "."  # fmt: skip
        r.excerpts.append(Excerpt(frozenset({"sub-model"}), json_text(fields)))

    async def _do_tool_call(self, a: s.ToolCall, r: ActionResult) -> None:
        run = self._need_run()
        tool = self.tools.get(a.name)
        if tool is None:
            names = ", ".join(sorted(self.tools)) or "none in this run"
            raise ActionFailed(f"no tool named {brief(a.name)}; the tools: {names}.")
        used: set[frozenset[str]] = set()
        args = [self._with_vars(v, used) for v in a.args]
        kwargs = {k: self._with_vars(v, used) for k, v in a.kwargs.items()}
        try:
            run.ledger.charge_tool(a.name, tool.cost_usd or 0.0)
        except BudgetExceeded as exc:
            run.emitter.emit(
                BudgetRefused(
                    rlm="0",
                    depth=0,
                    limit=exc.limit,
                    model=f"tool:{a.name}",
                    purpose="tool",
                    message=str(exc),
                )
            )
            raise
        started = time.monotonic()
        error: str | None = None
        out: Any = None
        try:
            out = await tool.call(args, kwargs)
        except Exception as exc:  # the tool's failure is the model's news
            error = f"{type(exc).__name__}: {exc}"
        finally:
            run.emitter.emit(
                ToolCalled(
                    rlm="0",
                    depth=0,
                    name=a.name,
                    arguments=brief(json_text({"args": args, "kwargs": kwargs}), 2000),
                    result=None if error else brief(json_text(out), 2000),
                    error=error,
                    cost_usd=tool.cost_usd or 0.0,
                    elapsed_s=round(time.monotonic() - started, 6),
                )
            )
        if error is not None:
            raise ActionFailed(
                f"the tool {a.name} failed (its error below).",
                [Excerpt(frozenset({"tool"}), error, "its error:")],
            )
        r.summary = f"{a.name} returned a {describe(out)}"
        if a.into:
            r.summary += "; " + self.store(a.into, out, frozenset({"tool"}), r)
        r.summary += "."
        r.excerpts.append(Excerpt(frozenset({"tool"}), _as_text(out)))

    def _with_vars(self, value: Any, used: set[frozenset[str]], depth: int = 0) -> Any:
        if depth > 20:
            return value
        if isinstance(value, dict):
            if set(value) == {"$var"} and isinstance(value["$var"], str):
                if not re.match(s.REF_PATTERN, value["$var"]):
                    raise ActionFailed(f'{{"$var": {brief(value["$var"])}}} names no variable.')
                found, origins = self.resolve(value["$var"])
                used.add(origins)
                return plain(found)
            return {k: self._with_vars(v, used, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self._with_vars(v, used, depth + 1) for v in value]
        return value


_ASYNC_ACTIONS = frozenset({"sub_lm", "extract_over_chunks", "extract", "tool_call"})


def _context_value(ctx: Context) -> Any:
    if ctx.kind == "text":
        return ctx.text or ""
    if ctx.kind == "dir":
        return DirView(ctx)
    if ctx.kind == "file":  # mapped here, as the REPL worker maps it: never read whole
        return MappedText(ctx.path or "")
    if ctx.kind == "doc":  # a document's text, its pages after `[page n]` lines
        return ctx.as_text()
    return ctx.value


def _step(value: Any, path: str, index: int | None, key: str | None) -> Any:
    if index is not None:
        if isinstance(value, list | tuple | str | MappedText):
            if -len(value) <= index < len(value):
                return value[index]
            raise ActionFailed(f"`{path}` has {len(value):,} item(s): [{index}] is out of range.")
        if isinstance(value, Mapping) and str(index) in value:
            return value[str(index)]
        raise ActionFailed(f"`{path}` is a {describe(value)}: it has no item [{index}].")
    if isinstance(value, Mapping):
        if key in value:
            return value[key]
        keys = "\n".join(brief(str(k), 80) for k in list(value)[:10])
        more = f" (the first 10 of {len(value):,} below)" if len(value) > 10 else " (below)"
        raise ActionFailed(
            f"`{path}` has no key {brief(key)}; its keys{more if keys else ': none'}.",
            [Excerpt(frozenset({"context"}), keys, "its keys:")] if keys else [],
        )
    raise ActionFailed(f"`{path}` is a {describe(value)}: it has no key {brief(key)}.")


def _walk(value: Any, steps: str) -> Any:
    path = "item"
    for step in _STEP.finditer(steps):
        index, attr, key = step.groups()
        value = _step(value, path, int(index) if index is not None else None, attr or key)
        path += step.group()
    return value


def _check_chunks(length: int, size: int, step: int) -> None:
    n = max(-(-(length - (size - step)) // step), 1) if length else 1
    if n > MAX_CHUNKS:
        raise ActionFailed(f"that makes {n:,} chunks; at most {MAX_CHUNKS:,}: use a larger size.")


def _first_json(text: str, objects_only: bool = False) -> Any:
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{" if objects_only else r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except (ValueError, RecursionError):
            continue
        return value
    return None


def _sum(items: list[Any]) -> tuple[int | float, list[Any]]:
    total: int | float = 0
    bad: list[Any] = []
    for item in items:
        if isinstance(item, bool) or item is None:
            bad.append(item)
        elif isinstance(item, int | float):
            total += item
        elif isinstance(item, str):
            text = item.strip().replace(",", "")
            try:
                total += int(text)
                continue
            except ValueError:
                pass
            found = _NUMBER.search(text)
            if found and not text.startswith("[error]"):
                number = found.group()
                total += float(number) if any(ch in number for ch in ".eE") else int(number)
            else:
                bad.append(item)
        else:
            bad.append(item)
    if isinstance(total, float) and not math.isfinite(total):
        raise ActionFailed("the sum is not a finite number.")
    return total, bad


def _number(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.6g}"


def _key(value: Any) -> str:
    if isinstance(value, str):
        return "s" + value
    return "j" + json_text(value)


def _unique(items: list[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = _key(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json_text(value)


def _names(names: set[str]) -> str:
    return ", ".join("{" + n + "}" for n in sorted(names)[:10])
