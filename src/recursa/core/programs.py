"""The public programs (RLM, Direct, Auto) and the run that carries each call.

One `_Run` per call owns the ledger, the gateway and the event stream. The RLM strategy
drives a tree of `loop.Loop`s (the root and every child started by `rlm_query`); the Direct
strategy sends one request with the context in the prompt. Both go through the same
gateway, so they share limits, usage report, events and result type.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from ..budget import Ledger, Limits
from ..context import Context, from_path, from_value
from ..errors import BudgetExceeded, ConfigError, LMError, SandboxError
from ..events import (
    ControllerNote,
    Emitter,
    Event,
    FinalReached,
    Listener,
    RunEnded,
    RunStarted,
)
from ..lm.base import LMClient
from ..lm.openai_compat import DEFAULT_DEADLINE, DEFAULT_MAX_RESPONSE_BYTES
from ..lm.pricing import PriceTable
from ..lm.retry import RetryPolicy
from ..lm.windows import DEFAULT_WINDOW, context_window
from ..sandbox import resolve_backend
from . import prompts
from .code_loop import Loop, Outcome, _json_object, _jsonable, _short
from .controllers import known_controller
from .gateway import ClientPool, Gateway, estimate_tokens
from .guards import GuardSettings
from .signature import Signature, SignatureError
from .tools import Tool, normalize

STATUSES = ("ok", "max_iterations", "budget_exhausted", "stalled", "timeout", "error")
DIRECT_OUTPUT_RESERVE = 4096
"""Tokens left for the answer when deciding whether a direct call fits the window."""

ToolsArg = Mapping[str, Callable[..., Any] | Tool] | Iterable[Callable[..., Any] | Tool] | None


@dataclass(slots=True)
class RunResult:
    """What a run returns: the contract's JSON object, as Python, plus the typed output."""

    answer: Any
    status: str
    iterations: int
    usage: dict[str, Any]
    run_id: str
    trace: str | None = None
    error: str | None = None
    output: BaseModel | None = None
    """The validated outputs when the program has a signature."""
    strategy: str = "rlm"
    events: list[Event] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        data = {
            "answer": _jsonable(self.answer),
            "status": self.status,
            "iterations": self.iterations,
            "usage": self.usage,
            "run_id": self.run_id,
            "trace": self.trace,
        }
        if self.error:
            data["error"] = self.error
        return data


class RLM:
    """A Recursive Language Model: answers `question` over `context` through a REPL.

    `model` and `sub_model` are `PROVIDER/MODEL` names (defaults: RECURSA_MODEL and
    RECURSA_SUB_MODEL). `client` replaces the HTTP clients with any `LMClient` (tests).
    `signature` types the outputs (SUBMIT); `tools` are host callables the REPL may call.
    `mmap_threshold` (bytes): a context given as a `Path` to a file of at least this size
    is memory-mapped by the worker (default: RECURSA_MMAP_THRESHOLD, else 64 MiB).
    """

    strategy: ClassVar[str] = "rlm"

    def __init__(
        self,
        model: str | None = None,
        *,
        sub_model: str | None = None,
        base_url: str | None = None,
        base_url_for: str | None = None,
        client: LMClient | None = None,
        signature: str | type[BaseModel] | Signature | None = None,
        tools: ToolsArg = None,
        max_depth: int = 1,
        max_iterations: int = 30,
        max_llm_calls: int | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        timeout: float | None = None,
        cell_timeout: float = 60.0,
        concurrency: int = 16,
        max_output_chars: int = 20_000,
        sandbox: str = "auto",
        sandbox_options: dict[str, Any] | None = None,
        memory_limit: int | None = None,
        mmap_threshold: int | None = None,
        context_window: int | None = None,
        compact_at: float = 0.8,
        prices: PriceTable | None = None,
        retry: RetryPolicy | None = None,
        on_event: Listener | None = None,
        request_timeout: float = 300.0,
        request_deadline: float | None = None,
        max_response_bytes: int | None = None,
        env: dict[str, str] | None = None,
        record_full_prompts: bool = False,
        guards: GuardSettings | bool | None = True,
        system_prompt: str | None = None,
        mode: str = "code",
        seed: int | None = None,
    ) -> None:
        environ = os.environ if env is None else env
        model = model or environ.get("RECURSA_MODEL")
        if not model:
            raise ConfigError("no model: pass --model PROVIDER/MODEL or set RECURSA_MODEL")
        self.model = model
        self.sub_model = sub_model or environ.get("RECURSA_SUB_MODEL") or None
        _positive_int("max_depth", max_depth)
        _positive_int("max_iterations", max_iterations)
        _positive_int("concurrency", concurrency)
        _positive_int("max_output_chars", max_output_chars)
        _positive_number("cell_timeout", cell_timeout)
        if timeout is not None:
            _positive_number("timeout", timeout)
        if context_window is not None:
            _positive_int("context_window", context_window)
        if not 0 < compact_at <= 1:
            raise ConfigError(f"compact_at must be in (0, 1], not {compact_at!r}")
        self.signature = Signature.of(signature) if signature is not None else None
        self.tools = normalize(tools)
        self.limits = Limits(max_llm_calls, max_tokens, max_cost)
        self.max_depth = max_depth
        self.max_iterations = max_iterations
        self.timeout = timeout
        self.cell_timeout = cell_timeout
        self.concurrency = concurrency
        self.max_output_chars = max_output_chars
        self.sandbox = sandbox
        self.sandbox_options = dict(sandbox_options or {})
        if memory_limit is not None:  # MiB per sandbox worker (default: 2 GiB + 6x the context)
            if type(memory_limit) is not int or memory_limit < 64:
                raise ConfigError(f"memory_limit must be at least 64 (MiB), not {memory_limit!r}")
            self.sandbox_options["memory_limit"] = memory_limit
        if mmap_threshold is not None and (type(mmap_threshold) is not int or mmap_threshold < 0):
            raise ConfigError(f"mmap_threshold must be a number of bytes, not {mmap_threshold!r}")
        self.mmap_threshold = mmap_threshold
        self.context_window = context_window
        self.compact_at = compact_at
        self.prices = prices or PriceTable.default()
        self.retry = retry or RetryPolicy()
        self.listeners: list[Listener] = [on_event] if on_event else []
        self.client = client
        self.base_url = base_url
        self.base_url_for = base_url_for or model
        """The model whose provider `base_url` belongs to (default: the root model); a
        model of another provider never goes there, nor does its key."""
        self.request_timeout = request_timeout
        self.request_deadline, self.max_response_bytes = _reply_limits(
            environ, request_deadline, max_response_bytes
        )
        self.env = env
        self.record_full_prompts = record_full_prompts
        if guards is True:
            guards = GuardSettings()
        self.guards: GuardSettings | None = guards or None
        if mode not in ("code", "actions"):
            raise ConfigError(f"mode must be 'code' or 'actions', not {mode!r}")
        self.mode = mode
        self.system_prompt = system_prompt or prompts.SYSTEM
        """A replacement may use the fields {context_kind}, {sub_window} and {depth_note};
        every other brace is sent as written (`prompts.fill`)."""
        if seed is not None and type(seed) is not int:
            raise ConfigError(f"seed must be a whole number, not {seed!r}")
        self.seed = seed
        """Seeds `random` in the REPL; None: a fresh seed per run. Either way the run's
        seed is in `run_start`'s settings, and a replay uses it."""
        self._check_config()

    def _check_config(self) -> None:
        pool = ClientPool(
            base_url=self.base_url,
            base_url_for=self.base_url_for,
            client=self.client,
            env=self.env,
        )
        for model in filter(None, (self.model, self.sub_model)):
            pool.check(model)
            if self.limits.max_cost is not None and self.prices.lookup(model) is None:
                raise ConfigError(
                    f"--max-cost needs the price of {model}, which is unknown: give it with "
                    f"--price {model}=INPUT,OUTPUT (USD per million tokens) or a prices file"
                )
        if self.strategy != "direct" and self.mode == "code":
            self.sandbox = resolve_backend(self.sandbox)

    def settings(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "mode": self.mode,
            "max_depth": self.max_depth,
            "max_iterations": self.max_iterations,
            "max_llm_calls": self.limits.max_llm_calls,
            "max_tokens": self.limits.max_tokens,
            "max_cost": self.limits.max_cost,
            "timeout": self.timeout,
            "cell_timeout": self.cell_timeout,
            "concurrency": self.concurrency,
            "max_output_chars": self.max_output_chars,
            "sandbox": self.sandbox,
            "memory_limit": self.sandbox_options.get("memory_limit"),
            "context_window": self.context_window,
            "signature": self.signature.describe() if self.signature else None,
            "tools": sorted(self.tools),
            "guards": None if self.guards is None else dataclasses.asdict(self.guards),
            "prices": {
                model: [price.input_per_mtok, price.output_per_mtok]
                for model in filter(None, (self.model, self.sub_model))
                if (price := self.prices.lookup(model)) is not None
            },
        }

    def choose(self, contexts: list[Context]) -> str:
        """Which strategy runs this call: fixed here; `Auto` looks at the input's size."""
        return self.strategy

    def load(self, value: Any, name: str = "<value>") -> Context:
        """A context as this program loads it: a `Path` with its `mmap_threshold`."""
        if isinstance(value, Path):
            return from_path(str(value), mmap_threshold=self.mmap_threshold)
        return from_value(value, name)

    async def arun(
        self,
        question: str,
        context: Any = None,
        *,
        contexts: list[Any] | None = None,
        inputs: dict[str, Any] | None = None,
        on_event: Listener | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Answer `question`. `context` is one value; `contexts` several (context_0, ...);
        `inputs` are a signature's other inputs, also set as REPL variables; `run_id` names
        the run (a fresh one is made when None)."""
        loaded = _load_contexts(self, context, contexts)
        listeners = [*self.listeners, *([on_event] if on_event else [])]
        run = _Run(self, listeners, run_id)
        return await run.execute(question, loaded, dict(inputs or {}))

    def run(self, question: str, context: Any = None, **kwargs: Any) -> RunResult:
        """The synchronous twin of `arun` (safe to call where an event loop already runs)."""
        return _sync(self.arun(question, context, **kwargs))

    async def events(
        self, question: str, context: Any = None, **kwargs: Any
    ) -> AsyncIterator[Event]:
        """Run and yield every event as it happens; the last one is the `run_end` event."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        run = self.arun(question, context, on_event=queue.put_nowait, **kwargs)
        task = asyncio.create_task(run)
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (event := await queue.get()) is not None:
                yield event
            task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def session(self) -> Any:
        """A conversation whose REPL persists across questions (see recursa.core.session)."""
        from .session import Session

        return Session(self)


class Direct(RLM):
    """One request with the context in the prompt: no REPL, same signature and result.
    Refused before any call when the prompt cannot fit the model's window."""

    strategy: ClassVar[str] = "direct"


class Auto(RLM):
    """Direct below `direct_below_chars` of context, an RLM above. The default is half of
    what the window holds beside the answer's 4,096 tokens, at four characters a token."""

    strategy: ClassVar[str] = "auto"

    def __init__(self, model: str | None = None, *, direct_below_chars: int | None = None, **kw):
        super().__init__(model, **kw)
        if direct_below_chars is not None:
            _positive_int("direct_below_chars", direct_below_chars)
        window, _ = context_window(self.model, self.context_window)
        self.direct_below_chars = direct_below_chars or max(window - DIRECT_OUTPUT_RESERVE, 0) * 2

    def choose(self, contexts: list[Context]) -> str:
        size = sum(_text_chars(c)[1] for c in contexts)
        return "direct" if size < self.direct_below_chars else "rlm"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "direct_below_chars": self.direct_below_chars}


class _Run:
    """One call: ledger, gateway and events shared by every depth of the tree."""

    def __init__(self, rlm: RLM, listeners: list[Listener], run_id: str | None = None) -> None:
        self.cfg = rlm
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.events: list[Event] = []
        self.emitter = Emitter(self.run_id, [self.events.append, *listeners])
        self.ledger = Ledger(limits=rlm.limits, pricer=rlm.prices)
        self.pool = ClientPool(
            base_url=rlm.base_url,
            base_url_for=rlm.base_url_for,
            client=rlm.client,
            env=rlm.env,
            timeout=rlm.request_timeout,
            max_connections=max(rlm.concurrency, 8),
            deadline=rlm.request_deadline,
            max_response_bytes=rlm.max_response_bytes,
        )
        self.gateway = Gateway(
            self.ledger,
            self.pool,
            self.emitter,
            concurrency=rlm.concurrency,
            retry=rlm.retry,
            full_prompts=rlm.record_full_prompts,
        )
        self.tools = rlm.tools
        self.system_prompt = rlm.system_prompt
        self.seed = rlm.seed if rlm.seed is not None else secrets.randbits(32)
        self.child_count: dict[str, int] = {}
        self.child_slots: dict[int, asyncio.Semaphore] = {}

    def start(self, question: str, contexts: list[Context], strategy: str) -> None:
        self.emitter.emit(
            RunStarted(
                question=question,
                model=self.cfg.model,
                sub_model=self.cfg.sub_model,
                settings={**self.cfg.settings(), "strategy": strategy, "seed": self.seed},
                contexts=[c.reference() for c in contexts],
                system_prompt=self.system_prompt,
            )
        )
        if strategy != "direct" and not known_controller(self.cfg.model):
            note = (
                f"{self.cfg.model} is not in the table of models known to drive RLMs well; "
                "smaller models often write poor REPL code (see --strategy auto)"
            )
            self.emitter.emit(ControllerNote(model=self.cfg.model, message=note))

    async def execute(
        self, question: str, contexts: list[Context], inputs: dict[str, Any]
    ) -> RunResult:
        strategy = self.cfg.choose(contexts)
        if strategy == "direct":
            try:
                direct_prompt = self._direct_prompt(question, contexts, inputs)
            except ConfigError:
                if self.cfg.strategy != "auto":
                    raise
                strategy = "rlm"  # Auto's guess did not fit the window after all
        root: Loop | Any
        if self.cfg.mode == "actions" and strategy != "direct":
            from .actions import ActionLoop

            root = ActionLoop(self, question, contexts, inputs)
            self.system_prompt = root.system_prompt()
        else:
            root = Loop(self, "0", 0, self.cfg.model, signature=self.cfg.signature, inputs=inputs)
        self.start(question, contexts, strategy)
        try:
            async with asyncio.timeout(self.cfg.timeout):
                if strategy == "direct":
                    outcome = await self._direct(direct_prompt)
                elif self.cfg.mode == "actions":
                    outcome = await root.run()
                else:
                    outcome = await root.run(question, contexts)
        except TimeoutError:
            why = f"the run passed its {self.cfg.timeout:g} s timeout"
            outcome = Outcome("timeout", root.best, root.iterations, why)
        except (LMError, SandboxError) as exc:
            outcome = Outcome("error", root.best, root.iterations, str(exc))
        except asyncio.CancelledError:
            # Report what was spent before letting the cancellation go on: a caller that
            # cancelled (Ctrl-C in the CLI) still gets the partial usage from `run_end`.
            cancelled = Outcome("error", root.best, root.iterations, "the run was cancelled")
            self.finish(cancelled, strategy, cancelled=True)
            raise
        finally:
            await asyncio.shield(self.pool.aclose())
        return self.finish(outcome, strategy)

    def finish(
        self, outcome: Outcome, strategy: str = "rlm", *, cancelled: bool = False
    ) -> RunResult:
        breach = self.ledger.breach
        if breach is not None and outcome.status not in ("error", "budget_exhausted"):
            # Model code may have caught the BudgetExceeded of a sub-query and gone on to
            # FINAL: a run whose limit no longer holds is never reported `ok`.
            why = f"{breach}: the run stopped, as {self.ledger.breach_limit} can no longer hold"
            outcome = dataclasses.replace(outcome, status="budget_exhausted", error=why)
        usage = self.ledger.usage()
        self.emitter.emit(
            RunEnded(
                status=outcome.status,
                answer=_jsonable(outcome.answer),
                iterations=outcome.iterations,
                usage=usage,
                error=outcome.error,
                cancelled=cancelled,
            )
        )
        return RunResult(
            answer=outcome.answer,
            status=outcome.status,
            iterations=outcome.iterations,
            usage=usage,
            run_id=self.run_id,
            error=outcome.error,
            output=outcome.output,
            strategy=strategy,
            events=self.events,
        )

    # ---- the direct strategy ---------------------------------------------------------------
    def _direct_prompt(self, question: str, contexts: list[Context], inputs: dict[str, Any]) -> str:
        signature = self.cfg.signature
        if signature is None:
            answer_format = prompts.DIRECT_TEXT
        else:
            answer_format = prompts.DIRECT_JSON.format(fields=signature.describe())
        shown = "".join(f"- {k} = {_short(v, 300)}\n" for k, v in inputs.items())
        window, known = context_window(self.cfg.model, self.cfg.context_window)
        at_least = sum(_text_chars(c)[0] for c in contexts) // 4
        unread = any(c.kind in ("file", "dir") for c in contexts)
        if unread and at_least > window:  # refused before a file or directory is read whole
            raise ConfigError(
                f"a direct call needs at least {at_least:,} tokens, more than "
                f"{self.cfg.model}'s window of {window:,}: use the RLM strategy for this input"
            )
        text = "\n\n".join(c.as_text() for c in contexts)
        prompt = prompts.DIRECT.format(
            question=question,
            inputs=prompts.INPUTS.format(inputs=shown) if inputs else "",
            context=text,
            format=answer_format,
        )
        needed = estimate_tokens([{"role": "user", "content": prompt}]) + DIRECT_OUTPUT_RESERVE
        if needed > window:
            assumed = "" if known else f" (assumed {DEFAULT_WINDOW:,}: set context_window)"
            raise ConfigError(
                f"a direct call needs about {needed:,} tokens, more than {self.cfg.model}'s "
                f"window of {window:,}{assumed}: use the RLM strategy for this input"
            )
        return prompt

    async def _direct(self, prompt: str) -> Outcome:
        try:
            completion = await self.gateway.complete(
                [{"role": "user", "content": prompt}],
                model=self.cfg.model,
                depth=0,
                rlm="0",
                purpose="direct",
                prompt_for_trace=prompt,
            )
        except BudgetExceeded as exc:
            return Outcome("budget_exhausted", None, 0, str(exc))
        reply = completion.text
        signature = self.cfg.signature
        if signature is None:
            answer, output = reply.strip(), None
        else:
            try:
                output = signature.validate(_json_object(reply))
            except SignatureError as exc:
                return Outcome("error", reply.strip(), 1, str(exc))
            answer = output.model_dump(mode="json")
        self.emitter.emit(
            FinalReached(rlm="0", iteration=1, answer=_jsonable(answer), source="direct")
        )
        return Outcome("ok", answer, 1, output=output)

    # ---- the tree ----------------------------------------------------------------------------
    def slots(self, depth: int) -> asyncio.Semaphore:
        """How many child RLMs (each a worker process) may run at once at `depth`. One
        limit per depth, so parents waiting on their children never starve them."""
        slots = self.child_slots.get(depth)
        if slots is None:
            slots = self.child_slots[depth] = asyncio.Semaphore(self.cfg.concurrency)
        return slots

    def child_id(self, parent: str) -> str:
        n = self.child_count.get(parent, 0)
        self.child_count[parent] = n + 1
        return f"{parent}.{n}"


def _sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="recursa-run")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _text_chars(ctx: Context) -> tuple[int, int]:
    """Bounds on the characters of `ctx.as_text()`, from sizes known without reading a
    file or a directory (a byte is a quarter of a character at least, one at most)."""
    if ctx.kind == "text":
        return ctx.size, ctx.size
    if ctx.kind == "file":
        return ctx.nbytes // 4, ctx.nbytes
    if ctx.kind == "dir":
        headers = sum(len(rel) + 9 for rel, _ in ctx.files)  # "=== rel ===\n" and a newline
        return ctx.size // 4 + headers, ctx.size + headers
    n = len(ctx.as_text())
    return n, n


def _load_contexts(rlm: RLM, context: Any, contexts: list[Any] | None) -> list[Context]:
    if contexts is not None and context is not None:
        raise ConfigError("give either context or contexts, not both")
    if contexts is not None:
        return [rlm.load(c, f"<context_{i}>") for i, c in enumerate(contexts)]
    return [] if context is None else [rlm.load(context)]


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, not {value!r}")


def _reply_limits(
    environ: Mapping[str, str], deadline: float | None, max_bytes: int | None
) -> tuple[float, int]:
    """Each LM attempt's overall deadline (s) and answer size cap (bytes): the arguments,
    else RECURSA_REQUEST_DEADLINE / RECURSA_MAX_RESPONSE_BYTES, else the defaults."""
    if deadline is None:
        raw = environ.get("RECURSA_REQUEST_DEADLINE", "").strip()
        try:
            deadline = float(raw) if raw else DEFAULT_DEADLINE
        except ValueError:
            raise ConfigError(f"RECURSA_REQUEST_DEADLINE={raw!r} is not seconds") from None
    if max_bytes is None:
        raw = environ.get("RECURSA_MAX_RESPONSE_BYTES", "").strip()
        if raw and not raw.isdigit():
            raise ConfigError(f"RECURSA_MAX_RESPONSE_BYTES={raw!r} is not a number of bytes")
        max_bytes = int(raw) if raw else DEFAULT_MAX_RESPONSE_BYTES
    if not (isinstance(deadline, int | float) and math.isfinite(deadline) and deadline > 0):
        raise ConfigError(
            f"request_deadline must be a positive number of seconds, not {deadline!r}"
        )
    if type(max_bytes) is not int or max_bytes < 1:
        raise ConfigError(f"max_response_bytes must be a positive number, not {max_bytes!r}")
    return float(deadline), max_bytes


def _positive_number(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
