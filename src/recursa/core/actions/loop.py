"""The action-mode turn loop: the root model sends JSON actions, the kernel runs them.

Same run as code mode (one ledger, one gateway, one event stream, the same Outcome), same
turn structure (turn_start, the root request, turn_end with the observation, final), the
same last-chance extraction at max_iterations and the same stall guard; only what a turn
carries differs. Root turns use the purposes "root", "extract" and "compact", and sub-model
calls "sub" with the prompt recorded by hash, so `recursa replay` serves a recorded
action-mode run with no model.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel

from ...context import Context, describe
from ...errors import LMError
from ...events import (
    RLMStarted,
)
from ..protocol import parse_turn
from ..run import Outcome, Run
from ..signature import SignatureError
from ..status import Status
from ..turns import Turn, TurnLoop, TurnTexts
from . import prompts
from .events import ActionExecuted
from .kernel import PROTECTED, Kernel
from .schema import VALID_ACTIONS, parse_reply
from .values import ActionResult, Excerpt, cut
from .values import render as render_turn

PREVIEW_CHARS = 500
SUB_WINDOW = "100,000"
"""What the system prompt says a sub-model reads at once, as code mode says it."""
EVENT_EXCERPT = 2000


class ActionLoop(TurnLoop):
    """One action-mode run of the root: `await ActionLoop(run, question, contexts,
    inputs).run()` returns the same `Outcome` as code mode's loop."""

    texts = TurnTexts(
        compact=prompts.COMPACT,
        compacted=prompts.COMPACTED,
        extract=prompts.EXTRACT,
        stalled_extract=prompts.STALLED_EXTRACT,
        stall=prompts.STALL,
        stall_warning=prompts.STALL_WARNING,
    )

    def __init__(
        self,
        run: Run,
        question: str,
        contexts: list[Context],
        inputs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(run, "0", 0, run.cfg.model, run.cfg.signature, run.cfg.context_window)
        self.question = question
        self.contexts = list(contexts)
        self.inputs = dict(inputs or {})
        self.kernel = Kernel(run, self.contexts, self.inputs, signature=self.signature)

    # ---- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> Outcome:
        self.first = self.first_message()
        self.run_.emitter.emit(
            RLMStarted(
                rlm="0",
                depth=0,
                question=self.question,
                model=self.model,
                first_message=self.first,
                contexts=[c.reference() for c in self.contexts],
            )
        )
        outcome = Outcome(Status.ERROR, error="the run did not finish")
        try:
            self.messages = [
                {"role": "system", "content": self.system_prompt()},
                {"role": "user", "content": self.first},
            ]
            outcome = await self.turns()
        except LMError as exc:
            outcome = Outcome(Status.ERROR, self.best, self.iterations, str(exc))
        finally:
            self.kernel.close()
            self.ended(outcome)
        return outcome

    def system_prompt(self) -> str:
        fields = kwargs = tools = None
        if self.signature is not None:
            fields = self.signature.describe()
            kwargs = ", ".join(f'"{name}": ...' for name in self.signature.fields)
        if self.run_.tools:
            tools = "\n".join(
                f"  - `{name}{t.description}`" for name, t in sorted(self.run_.tools.items())
            )
        return prompts.system_prompt(
            fields=fields, kwargs=kwargs, tools=tools, sub_window=SUB_WINDOW
        )

    def first_message(self) -> str:
        inputs = ""
        if self.inputs:
            shown = "\n".join(
                f"- {k} = {cut(_text(v), 300)}"
                for k, v in self.inputs.items()
                if not PROTECTED.match(k)
            )
            inputs = prompts.INPUTS.replace("<<INPUTS>>", shown) if shown else ""
        return (
            prompts.FIRST_USER.replace("<<INPUTS>>", inputs)
            .replace("<<CONTEXTS>>", self._describe_contexts())
            .replace("<<QUESTION>>", self.question)
        )

    def _describe_contexts(self) -> str:
        if not self.contexts:
            return prompts.NO_CONTEXT
        parts = []
        if len(self.contexts) > 1:
            names = ", ".join(f"`context_{i}`" for i in range(len(self.contexts)))
            parts.append(
                f"[kernel] `context` is a list of {len(self.contexts)} contexts, each also "
                f"a variable of its own: {names}."
            )
        for i, ctx in enumerate(self.contexts):
            name = "context" if len(self.contexts) == 1 else f"context_{i}"
            value = self.kernel.vars[name]
            head = f"[kernel] `{name}` is a {self.kernel.about(name, value)}."
            if ctx.kind in ("text", "file"):  # a mapped file: only its start is read
                preview = value[:PREVIEW_CHARS]
                title = f"Its first {len(preview):,} characters:"
            else:
                preview = describe([ctx]).replace("`context`", f"`{name}`", 1)
                title = "Its shape:"
            if not preview:
                parts.append(head)
                continue
            body, _ = render_turn(
                [(0, ActionResult("", excerpts=[Excerpt(frozenset({"context"}), preview)]))],
                [],
                PREVIEW_CHARS * 4,
            )
            block = body.split("\n", 1)[1] if "\n" in body else body
            parts.append(f"{head} {title}\n{block}")
        return "\n\n".join(parts)

    # ---- the skeleton's hooks ----------------------------------------------------------------
    async def play(self, reply: str, iteration: int) -> Turn:
        observation, final, ran, stats = await self._handle(reply, iteration)
        accepted = None if final is None else (*final, "action")
        return Turn(
            observation,
            accepted,
            ran,
            codes=stats.codes,
            outputs=stats.outputs,
            errors=stats.errors,
            new_vars=stats.new_vars,
        )

    def with_warning(self, observation: str, warning: str) -> str:
        return cut(f"{observation}\n\n{warning}", self.cfg.max_output_chars)

    def extract_prompt(self, ask: str | None) -> str:
        if self.signature is not None:
            return prompts.EXTRACT_SIGNATURE.replace("<<FIELDS>>", self.signature.describe())
        return prompts.EXTRACT if ask is None else ask

    async def _handle(
        self, reply: str, iteration: int
    ) -> tuple[str, tuple[Any, BaseModel | None] | None, int, _Stats]:
        """Run a reply's actions in order, stopping at the first that fails or at final."""
        limit = self.cfg.max_output_chars
        stats = _Stats()
        parsed = parse_reply(reply)
        if parsed.error is not None:
            text = prompts.EMPTY_TURN.format(why=parsed.error, valid=VALID_ACTIONS)
            stats.codes.append(reply.strip()[:2000])
            stats.errors.append(parsed.error)
            stats.outputs.append(text)
            self._action_event(iteration, 1, "?", reply.strip(), None, parsed.error, text, 0.0)
            return cut(text, limit), None, 0, stats
        results: list[tuple[int, ActionResult]] = []
        notes: list[str] = []
        final: tuple[Any, BaseModel | None] | None = None
        timings: list[float] = []
        for index, item in enumerate(parsed.items, start=1):
            started = time.monotonic()
            if item.action is None:
                result = ActionResult(item.name, error=item.error)
            else:
                result = await self.kernel.execute(item.action)
                if result.final is not None:
                    accepted = self._accept(result.final[0])
                    if isinstance(accepted, str):
                        result.error, result.final = accepted, None
                    else:
                        final = accepted
            timings.append(time.monotonic() - started)
            results.append((index, result))
            if final is not None:
                break
            if result.error is not None:
                rest = len(parsed.items) - index
                if rest == 1:
                    notes.append(prompts.SKIPPED_ONE.format(index=index + 1))
                elif rest > 1:
                    notes.append(prompts.SKIPPED.format(index=index + 1, rest=rest - 1))
                notes += [
                    prompts.ALSO_INVALID.format(index=later, error=other.error)
                    for later, other in enumerate(parsed.items[index:], start=index + 1)
                    if other.error is not None
                ][:5]
                break
        observation, parts = render_turn(results, notes, limit)
        for (index, result), part, took in zip(results, parts, timings, strict=True):
            item = parsed.items[index - 1]
            stats.codes.append(_canonical(item.raw))
            stats.outputs.append(part)
            stats.new_vars += len(result.new_vars)
            if result.error is not None:
                stats.errors.append(result.error)
            self._action_event(
                iteration, index, result.name, item.raw, result, result.error, part, took
            )
        return observation, final, len(results), stats

    def _action_event(
        self,
        iteration: int,
        index: int,
        name: str,
        raw: Any,
        result: ActionResult | None,
        error: str | None,
        part: str,
        took: float,
    ) -> None:
        arguments = raw if isinstance(raw, str) else _canonical(raw)
        self.run_.emitter.emit(
            ActionExecuted(
                rlm="0",
                depth=0,
                iteration=iteration,
                index=index,
                action=name,
                arguments=cut(arguments, EVENT_EXCERPT),
                ok=error is None,
                error=error,
                observation=cut(part, EVENT_EXCERPT),
                new_vars=list(result.new_vars) if result is not None else [],
                elapsed_s=round(took, 6),
            )
        )

    def _accept(self, value: Any) -> tuple[Any, BaseModel | None] | str:
        """The answer and typed output, or why the signature refused it."""
        if self.signature is None:
            return value, None
        names = self.signature.fields
        fields = value
        if len(names) == 1 and not (isinstance(value, dict) and set(value) == {names[0]}):
            fields = {names[0]: value}
        try:
            output = self.signature.validate(fields)
        except SignatureError as exc:
            return str(exc).replace("SUBMIT needs", "final needs", 1)
        return output.model_dump(mode="json"), output

    async def extracted(self, reply: str) -> tuple[Any, BaseModel | None]:
        """The answer a last-chance reply gives: a final action, or the reply's text."""
        parsed = parse_reply(reply)
        finals = [i.action for i in parsed.items if i.action is not None]
        finals = [a for a in finals if a.action == "final"]
        value: Any = reply.strip()
        found = False
        if finals:
            result = await self.kernel.execute(finals[0])
            if result.final is not None:
                value, found = result.final[0], True
        else:
            marker = parse_turn(reply).final  # a code-mode habit: a line FINAL(answer)
            if marker is not None and marker.kind == "value":
                value = marker.text
        if self.signature is None:
            return value, None
        candidates = [value] if found else []
        candidates += [v for v in _json_values(reply) if v is not value]
        for candidate in candidates:
            accepted = self._accept(candidate)
            if not isinstance(accepted, str):
                return accepted
        return reply.strip(), None


class _Stats:
    """What the stall guard sees of one turn."""

    __slots__ = ("codes", "errors", "new_vars", "outputs")

    def __init__(self) -> None:
        self.codes: list[str] = []
        self.outputs: list[str] = []
        self.errors: list[str] = []
        self.new_vars = 0


def _canonical(raw: Any) -> str:
    try:
        return json.dumps(raw, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(raw)


def _json_values(text: str) -> list[Any]:
    """Every top-level JSON object in a reply, unwrapping final actions."""
    out = []
    decoder = json.JSONDecoder()
    pos = text.find("{")
    while pos >= 0:
        try:
            value, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            pos = text.find("{", pos + 1)
            continue
        if isinstance(value, dict) and value.get("action") == "final" and "value" in value:
            value = value["value"]
        out.append(value)
        pos = text.find("{", end)
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _canonical(value)
