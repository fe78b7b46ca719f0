"""The turn skeleton both loops share: start, compact, ask, stall check, extraction.

`TurnLoop.turns` runs up to `max_iterations` turns. Each turn: compact the prompt when it
nears the window, ask the model, let the loop play the reply (`play`: code blocks in the
code loop, JSON actions in the action loop), check the stall guard, and stop at an
accepted answer. Out of turns, or stalled, one more request asks for the best answer known
(`extract`). The loops bring their own words (`TurnTexts`), handling and extraction; the
events, statuses and budget handling are the same for both by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..errors import BudgetExceeded
from ..events import Compacted, FinalReached, RLMEnded, StallDetected, TurnEnded, TurnStarted
from ..lm.base import Message
from ..lm.windows import context_window
from .gateway import estimate_tokens
from .guards import Guard
from .render import jsonable
from .run import Outcome, Run
from .signature import Signature
from .status import Status


@dataclass(frozen=True, slots=True)
class TurnTexts:
    """A loop's own words for the shared steps (its prompts module's constants)."""

    compact: str
    compacted: str
    """With {first} and {summary}."""
    extract: str
    stalled_extract: str
    """With {what}."""
    stall: Mapping[str, str]
    stall_warning: str


@dataclass(slots=True)
class Turn:
    """What a loop made of one reply: the observation, the accepted answer (answer,
    typed output, source) if any, and what the stall guard sees."""

    observation: str
    final: tuple[Any, BaseModel | None, str] | None
    blocks: int
    codes: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    new_vars: int = 0


class TurnLoop:
    """One RLM's conversation with its model; subclasses say how a reply is played."""

    texts: TurnTexts

    def __init__(
        self,
        run: Run,
        rlm_id: str,
        depth: int,
        model: str,
        signature: Signature | None,
        window: int | None,
    ) -> None:
        self.run_ = run
        self.cfg = run.cfg
        self.id = rlm_id
        self.depth = depth
        self.model = model
        self.signature = signature
        self.messages: list[Message] = []
        self.first = ""
        self.iterations = 0
        self.best: Any = None
        self.window, _ = context_window(model, window)
        self.guard = Guard(run.cfg.guards) if run.cfg.guards is not None else None

    # ---- what each loop brings ---------------------------------------------------------------
    async def play(self, reply: str, iteration: int) -> Turn:
        """Handle one reply: run its code or its actions."""
        raise NotImplementedError

    async def extracted(self, reply: str) -> tuple[Any, BaseModel | None]:
        """The answer (and typed output) a last-chance reply gives."""
        raise NotImplementedError

    def extract_prompt(self, ask: str | None) -> str:
        """The last-chance request: the signature's form, else `ask`, else the default."""
        raise NotImplementedError

    def with_warning(self, observation: str, warning: str) -> str:
        return f"{observation}\n\n{warning}"

    def append(self, message: Message) -> None:
        self.messages.append(message)

    async def after_compaction(self) -> None:
        """What a loop must do once its prompt is compacted (the code loop's REPL history)."""

    # ---- the skeleton ------------------------------------------------------------------------
    async def turns(self) -> Outcome:
        for iteration in range(1, self.cfg.max_iterations + 1):
            self.run_.emitter.emit(TurnStarted(rlm=self.id, depth=self.depth, iteration=iteration))
            await self.compact_if_needed(iteration)
            try:
                reply = await self.ask_model(self.messages, "root")
            except BudgetExceeded as exc:
                return Outcome(Status.BUDGET_EXHAUSTED, self.best, self.iterations, str(exc))
            self.iterations = iteration
            self.append({"role": "assistant", "content": reply})
            turn = await self.play(reply, iteration)
            observation = turn.observation
            warning, stop = (None, None) if turn.final is not None else self.check_stall(
                iteration, turn
            )  # fmt: skip
            if warning is not None:
                observation = self.with_warning(observation, warning)
            self.run_.emitter.emit(
                TurnEnded(
                    rlm=self.id,
                    depth=self.depth,
                    iteration=iteration,
                    blocks=turn.blocks,
                    observation=observation,
                    final=turn.final is not None,
                )
            )
            if turn.final is not None:
                answer, output, source = turn.final
                self.final(iteration, answer, source)
                return Outcome(Status.OK, answer, iteration, output=output)
            self.append({"role": "user", "content": observation})
            if stop is not None:
                why = self.texts.stalled_extract.format(what=stop)
                return await self.extract(Status.STALLED, why, f"stalled: {stop}")
        return await self.extract()

    def check_stall(self, iteration: int, turn: Turn) -> tuple[str | None, str | None]:
        """(a warning for the observation, or why to stop): the first detection warns,
        one after that stops the run."""
        if self.guard is None:
            return None, None
        verdict = self.guard.judge(
            turn.codes,
            turn.outputs,
            turn.errors,
            turn.new_vars,
            texts=self.texts.stall,
            warning=self.texts.stall_warning,
        )
        if verdict is None:
            return None, None
        self.run_.emitter.emit(
            StallDetected(
                rlm=self.id,
                depth=self.depth,
                iteration=iteration,
                kind=verdict.detection.kind,
                detail=verdict.detection.detail,
                count=verdict.detection.count,
                action=verdict.action,
            )
        )
        return verdict.warning, verdict.stop

    async def extract(
        self, status: Status = Status.MAX_ITERATIONS, ask: str | None = None, why: str | None = None
    ) -> Outcome:
        """Out of turns (or stalled): one more request asks for the best answer known."""
        self.append({"role": "user", "content": self.extract_prompt(ask)})
        iterations = self.iterations
        try:
            reply = await self.ask_model(self.messages, "extract")
        except BudgetExceeded as exc:
            return Outcome(status, self.best, iterations, why or str(exc))
        self.append({"role": "assistant", "content": reply})
        answer, output = await self.extracted(reply)
        self.best = answer
        self.final(iterations, answer, "extract")
        return Outcome(status, answer, iterations, why, output=output)

    async def compact_if_needed(self, iteration: int) -> None:
        """Near the model's window, replace older turns by a summary the model writes."""
        before = estimate_tokens(self.messages)
        # Only with two whole turns or more since the start (or the last compaction): there
        # must be older turns to fold, and a window smaller than the prompt must not loop.
        if before <= self.cfg.compact_at * self.window or len(self.messages) < 6:
            return
        try:
            summary = await self.ask_model(
                [*self.messages, {"role": "user", "content": self.texts.compact}], "compact"
            )
        except BudgetExceeded:
            return  # no budget for a summary: go on uncompacted
        self.messages = [
            self.messages[0],
            {
                "role": "user",
                "content": self.texts.compacted.format(first=self.first, summary=summary.strip()),
            },
        ]
        await self.after_compaction()
        self.run_.emitter.emit(
            Compacted(
                rlm=self.id,
                depth=self.depth,
                iteration=iteration,
                tokens_before=before,
                tokens_after=estimate_tokens(self.messages),
                window=self.window,
            )
        )

    def final(self, iteration: int, answer: Any, source: str) -> None:
        self.run_.emitter.emit(
            FinalReached(
                rlm=self.id,
                depth=self.depth,
                iteration=iteration,
                answer=jsonable(answer),
                source=source,
            )
        )

    def ended(self, outcome: Outcome) -> None:
        """The `rlm_end` event, however the loop ended."""
        self.run_.emitter.emit(
            RLMEnded(
                rlm=self.id,
                depth=self.depth,
                status=Status(outcome.status).value,  # a plain str in the trace
                answer=jsonable(outcome.answer),
                iterations=outcome.iterations,
                error=outcome.error,
            )
        )

    async def ask_model(self, messages: list[Message], purpose: str) -> str:
        completion = await self.run_.gateway.complete(
            messages, model=self.model, depth=self.depth, rlm=self.id, purpose=purpose
        )
        return completion.text
