"""Sessions: a conversation whose REPL persists from one question to the next.

Each `ask` may bring new contexts (context_0, context_1, ... in the order they came); the
model is told what it has. Under bwrap or docker, a directory or mapped file that arrives
later restarts the worker with every context's paths bound (the sandbox's `add`): contexts
and `history` come back, the model's own variables do not, and it is told so. The whole
conversation is kept in the REPL as `history`, and the root's prompt is compacted into a
summary when it nears the model's window. Limits hold for the whole session; each answer
reports the usage of its own question.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import ConfigError, LMError, SandboxError
from ..events import Listener, RLMStarted
from .code_loop import Loop
from .run import Outcome, Program, Run, RunResult
from .status import Status


class Session:
    def __init__(self, rlm: Program) -> None:
        self.rlm = rlm
        self._listeners: list[Listener] = []
        self.run = Run(rlm, [self._fan_out])
        self.loop: Loop | None = None
        self._lock = asyncio.Lock()
        self._sync_runner: asyncio.Runner | None = None

    def _fan_out(self, event: Any) -> None:
        for listener in self._listeners:
            listener(event)

    async def aask(
        self,
        question: str,
        context: Any = None,
        *,
        contexts: list[Any] | None = None,
        on_event: Listener | None = None,
    ) -> RunResult:
        """Ask the next question, with an optional new context (or several: `contexts`),
        loaded as the RLM loads them (a `Path` with its `mmap_threshold`)."""
        if contexts is not None and context is not None:
            raise ConfigError("give either context or contexts, not both")
        async with self._lock:
            # the RLM's own listeners (`RLM(on_event=...)`), then this question's
            self._listeners = [*self.rlm.listeners, *([on_event] if on_event else [])]
            values = list(contexts or []) if context is None else [context]
            first = len(self.loop.contexts) if self.loop is not None else 0
            new = [self.rlm.load(v, f"<context_{i}>") for i, v in enumerate(values, first)]
            before = self.run.ledger.usage()
            mark = len(self.run.events)
            if self.loop is None:
                self.loop = Loop(self.run, "0", 0, self.rlm.model, signature=self.rlm.signature)
                self.loop.open(new)
                self.run.start(question, new, "rlm")
                self.run.emitter.emit(
                    RLMStarted(
                        question=question,
                        model=self.rlm.model,
                        first_message="",
                        contexts=[c.reference() for c in new],
                    )
                )
                ask = self.loop.ask(question)
            else:
                self.run.start(question, new, "rlm")
                ask = self.loop.ask(question, new)
            try:
                async with asyncio.timeout(self.rlm.timeout):
                    outcome = await ask
            except TimeoutError:
                outcome = Outcome(Status.TIMEOUT, self.loop.best, self.loop.iterations, "timed out")
            except (LMError, SandboxError) as exc:
                outcome = Outcome(Status.ERROR, self.loop.best, self.loop.iterations, str(exc))
            result = self.run.finish(outcome)
            result.usage = _delta(before, result.usage)
            result.events = self.run.events[mark:]  # this question's events only
            return result

    def ask(self, question: str, context: Any = None, **kwargs: Any) -> RunResult:
        """The synchronous twin of `aask`; the session keeps its own event loop."""
        return self._runner().run(self.aask(question, context, **kwargs))

    def _runner(self) -> asyncio.Runner:
        if self._sync_runner is None:
            self._sync_runner = asyncio.Runner()
        return self._sync_runner

    async def aclose(self) -> None:
        if self.loop is not None:
            await self.loop.close()
            self.loop = None
        await self.run.pool.aclose()

    def close(self) -> None:
        runner = self._sync_runner
        if runner is not None:
            runner.run(self.aclose())
            runner.close()
            self._sync_runner = None
        elif self.loop is not None:
            asyncio.run(self.aclose())

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What one question spent: the session's usage now, less what it was before."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict):
            out[key] = {
                k: d for k, v in value.items() if (d := _delta_leaf(old or {}, k, v)) is not None
            }
        else:
            out[key] = _sub(value, old)
    return out


def _delta_leaf(old: dict[str, Any], key: str, value: Any) -> Any:
    if isinstance(value, dict):
        diff = {k: _sub(v, (old.get(key) or {}).get(k)) for k, v in value.items()}
        return diff if any(diff.values()) else None
    return _sub(value, old.get(key))


def _sub(value: Any, old: Any) -> Any:
    if isinstance(value, int | float) and isinstance(old, int | float):
        result = value - old
        return round(result, 10) if isinstance(result, float) else result
    return value
