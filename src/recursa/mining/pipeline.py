"""What a distilled pipeline calls: sub-models through recursa's gateway, never a root model.

`SubModels` gives recorded REPL code the names it used (`llm_query`, `llm_query_batched`,
`rlm_query` as a plain sub-query, `FINAL`, `FINAL_VAR`, `SUBMIT`, `SHOW_VARS`) with the
same machinery as a run: one `Ledger` holds the budget (every request reserves before it
is sent), one `Gateway` sends, retries and emits `lm_call_start`/`lm_call_end`, and the
events go to the listeners a run has (progress, a JSON-lines trace, the run store). The
result is a `RunResult` with strategy `pipeline`, so `--json` prints the object `recursa
run` prints.

The recorded code runs on the host, in the calling thread; sub-queries run on an event
loop in a background thread, so the code can call them synchronously, as in the REPL.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from ..budget import Ledger, Limits
from ..context import Context, from_directory, from_file, from_text, from_value
from ..core.gateway import ClientPool, Gateway
from ..core.programs import RunResult
from ..errors import BudgetExceeded, ConfigError, LMError, RecursaError
from ..events import Emitter, Event, FinalReached, Listener, RunEnded, RunStarted
from ..lm.base import LMClient
from ..lm.pricing import PriceTable
from ..lm.retry import RetryPolicy
from ..sandbox.inside.documents import open_document
from ..sandbox.inside.mapped import MappedText
from ..sandbox.inside.worker import LazyDir
from ..trace.jsonl import JsonlTrace


class LLMQueryError(RecursaError):
    """A sub-query failed after its retries (as in the REPL)."""


class PipelineTimeout(TimeoutError):
    """The pipeline passed its `timeout`."""


class SubModels:
    """Sub-model calls, budget, events and the answer of one pipeline run.

    Use it as a context manager around the recorded code; leaving it ends the run (the
    `run_end` event) and `result` is the `RunResult`. An exception from the code ends the
    run with status `error` (`budget_exhausted` when the budget refused a request, `timeout`
    past `timeout`) instead of propagating; Ctrl-C still propagates. A run that reaches
    FINAL after the budget refused some of its requests ends `budget_exhausted` too (their
    replies were '[error] budget: ...' strings), and one whose answer is such an error
    string ends `error`: the status says what happened, not `ok`.
    """

    BudgetExceeded = BudgetExceeded
    LLMQueryError = LLMQueryError

    def __init__(
        self,
        sub_model: str,
        *,
        question: str = "",
        context: Any = None,
        base_url: str | None = None,
        client: LMClient | None = None,
        env: Mapping[str, str] | None = None,
        max_llm_calls: int | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        timeout: float | None = None,
        concurrency: int = 16,
        prices: PriceTable | None = None,
        retry: RetryPolicy | None = None,
        request_timeout: float = 300.0,
        on_event: Listener | None = None,
        trace: str | Path | None = None,
        record_full_prompts: bool = False,
        pipeline: str | None = None,
        run_id: str | None = None,
        context_refs: list[dict[str, Any]] | None = None,
    ) -> None:
        """`context_refs`: how the trace names the contexts (`Context.reference()`), when
        the caller loaded them; otherwise they are described from `context` itself."""
        if not sub_model:
            raise ConfigError("no sub-model: pass --sub-model PROVIDER/MODEL")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be a whole number of at least 1: {concurrency!r}")
        if timeout is not None and not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.sub_model = sub_model
        self.question = question
        self.context = context
        self.pipeline = pipeline
        self.context_refs = context_refs
        self.limits = Limits(max_llm_calls, max_tokens, max_cost)
        self.timeout = timeout
        self.concurrency = concurrency
        self.prices = prices or PriceTable.default()
        self.pool = ClientPool(
            base_url=base_url,
            base_url_for=sub_model,
            client=client,
            env=env,
            timeout=request_timeout,
            max_connections=max(concurrency, 8),
        )
        self._check_model(sub_model, ConfigError)
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._listeners: list[Listener] = [self.events.append]
        self._trace: JsonlTrace | None = None
        if trace is not None:
            contexts = (
                [_as_context(context)] if record_full_prompts and context is not None else None
            )
            self._trace = JsonlTrace(trace, contexts)
            self._listeners.append(self._trace)
        if on_event is not None:
            self._listeners.append(on_event)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.emitter = Emitter(self.run_id, [self._deliver])
        self.ledger = Ledger(limits=self.limits, pricer=self.prices)
        self.gateway = Gateway(
            self.ledger,
            self.pool,
            self.emitter,
            concurrency=concurrency,
            retry=retry or RetryPolicy(),
            full_prompts=record_full_prompts,
        )
        self.answer: Any = None
        self._answered = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None
        self.result: RunResult | None = None

    # ---- the run -----------------------------------------------------------------------
    def __enter__(self) -> SubModels:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="recursa-pipeline", daemon=True
        )
        self._thread.start()
        if self.timeout is not None:
            self._deadline = time.monotonic() + self.timeout
        contexts = self.context_refs
        if contexts is None:
            contexts = [] if self.context is None else [_as_context(self.context).reference()]
        self.emitter.emit(
            RunStarted(
                question=self.question,
                model=f"pipeline:{Path(self.pipeline).name}" if self.pipeline else "pipeline",
                sub_model=self.sub_model,
                settings={
                    "strategy": "pipeline",
                    "pipeline": self.pipeline,
                    "max_llm_calls": self.limits.max_llm_calls,
                    "max_tokens": self.limits.max_tokens,
                    "max_cost": self.limits.max_cost,
                    "timeout": self.timeout,
                    "concurrency": self.concurrency,
                },
                contexts=contexts,
                system_prompt="",
            )
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        cancelled = exc is not None and not isinstance(exc, Exception)
        status, error = self._outcome(exc)
        answer = self.answer if self._answered else None
        if self._answered:
            self.emitter.emit(FinalReached(iteration=0, answer=answer, source="pipeline"))
        try:
            self._close()
        finally:
            usage = self.ledger.usage()
            self.emitter.emit(
                RunEnded(
                    status=status,
                    answer=answer,
                    iterations=0,
                    usage=usage,
                    error=error,
                    cancelled=cancelled,
                )
            )
            if self._trace is not None:
                self._trace.close()
            self.result = RunResult(
                answer=answer,
                status=status,
                iterations=0,
                usage=usage,
                run_id=self.run_id,
                trace=self._trace.path if self._trace is not None else None,
                error=error,
                strategy="pipeline",
                events=self.events,
            )
        return not cancelled  # the code's exceptions become the status; Ctrl-C goes on

    def _outcome(self, exc: BaseException | None) -> tuple[str, str | None]:
        if exc is None:
            if not self._answered:
                return "error", "the pipeline ended without FINAL: no answer"
            if self.ledger.refused:  # refused items came back as '[error] budget: ...'
                return "budget_exhausted", (
                    f"the budget refused {self.ledger.refused} request(s): the answer may "
                    "hold '[error] budget: ...' in their place"
                )
            if isinstance(self.answer, str) and self.answer.startswith("[error] "):
                return "error", f"the answer is a failed sub-query's error: {self.answer}"
            return "ok", None
        if not isinstance(exc, Exception):
            return "error", "the run was cancelled"
        if isinstance(exc, PipelineTimeout):
            return "timeout", str(exc)
        if isinstance(exc, BudgetExceeded):
            return "budget_exhausted", str(exc)
        where = _where(exc)
        message = f"{type(exc).__name__}: {exc}{where}"
        if self.ledger.refused:
            return "budget_exhausted", (
                f"{message} (after the budget refused {self.ledger.refused} request(s))"
            )
        return "error", message

    def _close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.pool.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def _deliver(self, event: Event) -> None:
        with self._lock:  # events come from this thread and from the loop's
            for listener in self._listeners:
                listener(event)

    # ---- the REPL's names -----------------------------------------------------------------
    def llm_query(self, prompt: str, model: str | None = None) -> str:
        """Ask a sub-model one prompt (sent alone, no history); returns its reply."""
        return self._call(self._query(_as_text(prompt), model, "sub"))

    def llm_query_batched(self, prompts: list[str], model: str | None = None) -> list[str]:
        """Ask many prompts concurrently; a failed item comes back as '[error] ...'."""
        texts = [_as_text(p) for p in _as_list(prompts)]
        return self._call(_batched([self._query(p, model, "sub") for p in texts]))

    def rlm_query(self, prompt: str, context: Any = None, model: str | None = None) -> str:
        """As at the depth limit of a run: one plain sub-query, the context's text appended."""
        return self._call(self._query(_leaf_prompt(prompt, context), model, "leaf"))

    def rlm_query_batched(
        self, prompts: list[str], contexts: list[Any] | None = None, model: str | None = None
    ) -> list[str]:
        texts = [_as_text(p) for p in _as_list(prompts)]
        given = [None] * len(texts) if contexts is None else _as_list(contexts)
        if len(given) != len(texts):
            raise ValueError("rlm_query_batched: prompts and contexts differ in length")
        calls = [
            self._query(_leaf_prompt(p, c), model, "leaf")
            for p, c in zip(texts, given, strict=True)
        ]
        return self._call(_batched(calls))

    def FINAL(self, value: Any) -> None:
        """Set the answer (the last FINAL wins, as in the REPL)."""
        self.answer = _encode(value)
        self._answered = True

    def FINAL_VAR(self, name: Any) -> None:
        """Set the answer to the variable called `name` in the calling code."""
        if isinstance(name, str) and name.isidentifier():
            frame = sys._getframe(1)
            if name not in frame.f_locals and name not in frame.f_globals:
                raise NameError(f"FINAL_VAR: no variable named {name!r}")
            name = frame.f_locals.get(name, frame.f_globals.get(name))
        self.FINAL(name)

    def SUBMIT(self, **fields: Any) -> None:
        """Set the answer to the typed fields (not validated: the pipeline has no signature)."""
        self.FINAL(fields)

    def SHOW_VARS(self) -> dict[str, str]:
        """The calling code's variables, with their types."""
        names = sys._getframe(1).f_locals
        return {k: type(v).__name__ for k, v in names.items() if not k.startswith("_")}

    # ---- sending -----------------------------------------------------------------------
    def _call(self, coro: Any) -> Any:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("SubModels is used outside its `with` block")
        remaining = None
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                coro.close()
                raise PipelineTimeout(f"the pipeline passed its {self.timeout:g} s timeout")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout=remaining)
        except TimeoutError:
            future.cancel()
            raise PipelineTimeout(f"the pipeline passed its {self.timeout:g} s timeout") from None
        except BaseException:
            future.cancel()
            raise

    async def _query(self, prompt: str, model: str | None, purpose: str) -> str:
        if model is not None:
            if not isinstance(model, str):
                raise TypeError("model must be a 'PROVIDER/MODEL' string")
            self._check_model(model, ValueError)
        try:
            completion = await self.gateway.complete(
                [{"role": "user", "content": prompt}],
                model=model or self.sub_model,
                depth=0,
                rlm="0",
                purpose=purpose,
                prompt_for_trace=prompt,
            )
        except LMError as exc:
            raise LLMQueryError(str(exc)) from None
        return completion.text

    def _check_model(self, model: str, error: type[Exception]) -> None:
        try:
            self.pool.check(model)
        except ConfigError as exc:
            raise error(str(exc)) from None
        if self.limits.max_cost is not None and self.prices.lookup(model) is None:
            raise error(
                f"--max-cost needs the price of {model}, which is unknown: give it with "
                f"--price {model}=INPUT,OUTPUT (USD per million tokens) or a prices file"
            )


async def _batched(calls: list[Any]) -> list[str]:
    """Concurrently; a failed item becomes '[error] ...'; all refused raises BudgetExceeded."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    out: list[str] = []
    refused: list[BudgetExceeded] = []
    for result in results:
        if isinstance(result, BudgetExceeded):
            refused.append(result)
            out.append(f"[error] budget: {result}")
        elif isinstance(result, asyncio.CancelledError):
            raise result
        elif isinstance(result, BaseException):
            out.append(f"[error] {type(result).__name__}: {result}")
        else:
            out.append(result)
    if results and len(refused) == len(results):
        first = refused[0]
        raise BudgetExceeded(first.limit, f"every item of the batch was refused: {first}")
    return out


def _leaf_prompt(prompt: Any, context: Any) -> str:
    text = _as_text(prompt)
    return text if context is None else f"{text}\n\n{from_value(context).as_text()}"


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise TypeError("expected a list of prompts")
    return list(value)


def _encode(value: Any) -> Any:
    """The answer as a run gives it: JSON where it is JSON-serialisable, else its str()."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return str(value)


def _as_context(value: Any) -> Context:
    """The context as a trace records it (by reference)."""
    if isinstance(value, LazyDir):
        return from_directory(Path(value.root), mmap_threshold=value.mmap_threshold)
    if isinstance(value, MappedText):
        return from_file(value.path)
    try:
        return from_value(value)
    except ConfigError:  # several contexts, some of them directories
        return from_text(repr(value), "<contexts>")


_PACKAGE = str(Path(__file__).resolve().parents[1])


def _where(exc: BaseException) -> str:
    """' (pipeline.py line N: code)': where in the pipeline's code the exception came from."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not str(Path(f.filename).resolve()).startswith(_PACKAGE)
    ]
    if not frames:
        return ""
    frame = frames[-1]
    return f" ({Path(frame.filename).name} line {frame.lineno}: {(frame.line or '').strip()})"


# ---- contexts as the REPL has them --------------------------------------------------------------
def context_value(ctx: Context) -> Any:
    """What the REPL's `context` is for a loaded context, built by the worker's own classes:
    str, JSON data, a directory (its large files mapped) or a mapped file."""
    if ctx.kind == "text":
        return ctx.text or ""
    if ctx.kind == "dir":
        return LazyDir(ctx.root or ".", [list(f) for f in ctx.files], ctx.mmap_threshold, ctx.docs)
    if ctx.kind == "file":  # mapped here as the sandbox maps it: never read whole
        return MappedText(ctx.path or "")
    if ctx.kind == "doc":  # opened here as the sandbox opens it: page by page
        return open_document(ctx.path or "", ctx.doc_format)
    return ctx.value


# ---- loading and running a pipeline file --------------------------------------------------------
def load_pipeline(path: str | Path) -> Callable[..., RunResult]:
    """The `run` function of a pipeline file (importing it runs its top-level code)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"pipeline not found: {path}")
    name = f"recursa_pipeline_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path} is not a Python file")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would (dataclasses and pickling look it up)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise ConfigError(f"{path} line {exc.lineno}: {exc.msg}") from None
    run = getattr(module, "run", None)
    if not callable(run):
        raise ConfigError(f"{path} defines no run(question, context, ...) function")
    return run


def run_pipeline(path: str | Path, question: str, context: Any, **options: Any) -> RunResult:
    """Load the pipeline at `path` and run it: `options` go to its `run` (and SubModels)."""
    return load_pipeline(path)(question, context, **options)
