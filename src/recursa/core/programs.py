"""The public programs (RLM, Direct, Auto): their settings, and how one call is carried.

A program is the checked configuration; each call makes a `run.Run` (ledger, gateway,
events) and `execute` drives it: the RLM strategy through a tree of loops (`code_loop.Loop`,
or `actions.ActionLoop` in action mode), the Direct strategy through one request
(`direct`). All go through the run's gateway, so they share limits, usage report, events
and result type.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel

from ..budget import Limits
from ..context import Context, from_path, from_value
from ..errors import ConfigError, LMError, SandboxError
from ..events import Event, Listener
from ..lm.base import LMClient
from ..lm.openai_compat import DEFAULT_DEADLINE, DEFAULT_MAX_RESPONSE_BYTES
from ..lm.pricing import PriceTable
from ..lm.retry import RetryPolicy
from ..lm.windows import context_window
from ..sandbox import resolve_backend
from .code_loop import Loop
from .dialect import DIALECTS
from .dialect import SYSTEM as OFFICIAL_SYSTEM
from .direct import DIRECT_OUTPUT_RESERVE, answer_directly, direct_prompt, text_chars
from .gateway import ClientPool
from .guards import GuardSettings
from .profile import Profile, resolve
from .prompts import SYSTEM as RECURSA_SYSTEM
from .run import Outcome, Run, RunResult
from .session import Session
from .signature import Signature
from .status import Status
from .tools import Tool, normalize

__all__ = ["RLM", "Auto", "Direct", "RunResult", "execute"]

if TYPE_CHECKING:
    from .actions import ActionLoop

T = TypeVar("T")

ToolsArg = Mapping[str, Callable[..., Any] | Tool] | Iterable[Callable[..., Any] | Tool] | None


class RLM:
    """A Recursive Language Model: answers `question` over `context` through a REPL.

    `model` and `sub_model` are `PROVIDER/MODEL` names (defaults: RECURSA_MODEL and
    RECURSA_SUB_MODEL). `client` replaces the HTTP clients with any `LMClient` (tests).
    `signature` types the outputs (SUBMIT); `tools` are host callables the REPL may call.
    `mmap_threshold` (bytes): a context given as a `Path` to a file of at least this size
    is memory-mapped by the worker (default: RECURSA_MMAP_THRESHOLD, else 64 MiB).
    `profile` (a `Profile` or its file) gives the controller's knobs: system prompt,
    first-turn instruction, chunk hint, sub-model, max_iterations, guards; an argument
    given here wins over it, and `self.profile` is the profile the run really uses.
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
        max_iterations: int | None = None,
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
        dialect: str = "recursa",
        profile: Profile | str | Path | None = None,
    ) -> None:
        environ = os.environ if env is None else env
        model = model or environ.get("RECURSA_MODEL")
        if not model:
            raise ConfigError("no model: pass --model PROVIDER/MODEL or set RECURSA_MODEL")
        self.model = model
        if dialect not in DIALECTS:
            raise ConfigError(f"dialect must be one of {', '.join(DIALECTS)}, not {dialect!r}")
        self.dialect = dialect
        """The REPL conventions the root model is given (`core.dialect`)."""
        base = resolve(profile)
        # The official dialect has its own system prompt, unless the profile brings one.
        official = dialect == "official" and base.system_prompt == RECURSA_SYSTEM
        self.profile = base.replace(
            system_prompt=system_prompt or (OFFICIAL_SYSTEM if official else base.system_prompt),
            sub_model=sub_model or base.sub_model,
            max_iterations=base.max_iterations if max_iterations is None else max_iterations,
            guards=_guard_table(guards, base),
            strategy=self.strategy,
        )
        """The knobs this program runs with (its id is in every `run_start`)."""
        sub_model = self.profile.sub_model
        max_iterations = self.profile.max_iterations
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
            guards = self.profile.guard_settings()
        self.guards: GuardSettings | None = guards or None
        if mode not in ("code", "actions"):
            raise ConfigError(f"mode must be 'code' or 'actions', not {mode!r}")
        self.mode = mode
        self.system_prompt = self.profile.system_prompt
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
            "dialect": self.dialect,
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
            # the profile's knobs, its system prompt left out: run_start holds that once
            "profile": {k: v for k, v in self.profile.to_dict().items() if k != "system_prompt"},
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
        run = Run(self, listeners, run_id)
        return await execute(run, question, loaded, dict(inputs or {}))

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

    def session(self) -> Session:
        """A conversation whose REPL persists across questions (see recursa.core.session)."""
        return Session(self)


class Direct(RLM):
    """One request with the context in the prompt: no REPL, same signature and result.
    Refused before any call when the prompt cannot fit the model's window."""

    strategy: ClassVar[str] = "direct"


class Auto(RLM):
    """Direct below `direct_below_chars` of context, an RLM above. The default is half of
    what the window holds beside the answer's 4,096 tokens, at four characters a token."""

    strategy: ClassVar[str] = "auto"

    def __init__(
        self, model: str | None = None, *, direct_below_chars: int | None = None, **kw: Any
    ) -> None:
        super().__init__(model, **kw)
        if direct_below_chars is not None:
            _positive_int("direct_below_chars", direct_below_chars)
            self.profile = self.profile.replace(direct_below_chars=direct_below_chars)
        direct_below_chars = self.profile.direct_below_chars
        window, _ = context_window(self.model, self.context_window)
        self.direct_below_chars = direct_below_chars or max(window - DIRECT_OUTPUT_RESERVE, 0) * 2

    def choose(self, contexts: list[Context]) -> str:
        size = sum(text_chars(c)[1] for c in contexts)
        return "direct" if size < self.direct_below_chars else "rlm"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "direct_below_chars": self.direct_below_chars}


async def execute(
    run: Run, question: str, contexts: list[Context], inputs: dict[str, Any]
) -> RunResult:
    """Carry one call of a program: pick the strategy, run its root loop (or the direct
    request) under the timeout, and report what was spent whatever happened."""
    cfg = run.cfg
    strategy = cfg.choose(contexts)
    if strategy == "direct":
        try:
            prompt = direct_prompt(run, question, contexts, inputs)
        except ConfigError:
            if cfg.strategy != "auto":
                raise
            strategy = "rlm"  # Auto's guess did not fit the window after all
    root: Loop | ActionLoop
    if cfg.mode == "actions" and strategy != "direct":
        from .actions import ActionLoop  # action mode's pydantic schema: loaded when used

        root = ActionLoop(run, question, contexts, inputs)
        run.system_prompt = root.system_prompt()
    else:
        root = Loop(run, "0", 0, cfg.model, signature=cfg.signature, inputs=inputs)
    run.start(question, contexts, strategy)
    try:
        async with asyncio.timeout(cfg.timeout):
            if strategy == "direct":
                outcome = await answer_directly(run, prompt)
            elif isinstance(root, Loop):
                outcome = await root.run(question, contexts)
            else:
                outcome = await root.run()
    except TimeoutError:
        why = f"the run passed its {cfg.timeout:g} s timeout"
        outcome = Outcome(Status.TIMEOUT, root.best, root.iterations, why)
    except (LMError, SandboxError) as exc:
        outcome = Outcome(Status.ERROR, root.best, root.iterations, str(exc))
    except asyncio.CancelledError:
        # Report what was spent before letting the cancellation go on: a caller that
        # cancelled (Ctrl-C in the CLI) still gets the partial usage from `run_end`.
        cancelled = Outcome(Status.ERROR, root.best, root.iterations, "the run was cancelled")
        run.finish(cancelled, strategy, cancelled=True)
        raise
    finally:
        await asyncio.shield(run.pool.aclose())
    return run.finish(outcome, strategy)


def _sync(coro: Coroutine[Any, Any, T]) -> T:
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
    result: T = box["result"]
    return result


def _load_contexts(rlm: RLM, context: Any, contexts: list[Any] | None) -> list[Context]:
    if contexts is not None and context is not None:
        raise ConfigError("give either context or contexts, not both")
    if contexts is not None:
        return [rlm.load(c, f"<context_{i}>") for i, c in enumerate(contexts)]
    return [] if context is None else [rlm.load(context)]


def _guard_table(guards: GuardSettings | bool | None, base: Profile) -> dict[str, Any]:
    """The guard thresholds a run really uses, as its profile records them (0: off)."""
    if isinstance(guards, GuardSettings):
        return dataclasses.asdict(guards)
    if guards is True:
        return base.guards
    off = GuardSettings(repeated_block=0, repeated_error=0, idle_turns=0, cycle=False)
    return dataclasses.asdict(off) | {"print_context_chars": 0}


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
