"""`RLM`: the official library's constructor and `completion`, run by recursa's engine.

Every setting maps onto a recursa one (docs/MIGRATING.md has the table): limits become the
run's ledger limits, so they are hard caps as recursa's always are; `environment="local"`
runs code in recursa's isolating sandbox, not in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ...core.guards import GuardSettings
from ...core.programs import RLM as Program
from ...core.run import RunResult
from ...core.session import Session
from ...errors import ConfigError
from ...events import Listener
from .backends import Endpoints, sandbox_of
from .logger import RLMLogger
from .types import RLMChatCompletion, UsageSummary

DEFAULT_QUESTION = "Answer the query or complete the task that `context` holds."
"""The root's question when `completion` is given no `root_prompt`."""


class RLM:
    """The official `rlm.RLM`, on recursa: same arguments, same result object."""

    def __init__(
        self,
        backend: str = "openai",
        backend_kwargs: Mapping[str, Any] | None = None,
        environment: str = "local",
        environment_kwargs: Mapping[str, Any] | None = None,
        max_depth: int = 1,
        max_iterations: int = 30,
        max_budget: float | None = None,
        max_timeout: float | None = None,
        max_tokens: int | None = None,
        max_errors: int | None = None,
        custom_system_prompt: str | None = None,
        other_backends: list[str] | None = None,
        other_backend_kwargs: list[Mapping[str, Any]] | None = None,
        logger: RLMLogger | None = None,
        verbose: bool = False,
        persistent: bool = False,
        custom_tools: Mapping[str, Any] | None = None,
        custom_sub_tools: Mapping[str, Any] | None = None,
        compaction: bool = False,
        compaction_threshold_pct: float = 0.85,
        max_concurrent_subcalls: int = 16,
        on_subcall_start: Callable[[int, str, str], Any] | None = None,
        on_subcall_complete: Callable[[int, str, float, str | None], Any] | None = None,
        *,
        dialect: str = "official",
        env: Mapping[str, str] | None = None,
    ) -> None:
        if logger is not None and not isinstance(logger, RLMLogger):
            raise ConfigError("logger must be a recursa.compat.rlm.RLMLogger")
        self.logger: RLMLogger | None = logger
        if custom_sub_tools:
            raise ConfigError(
                "custom_sub_tools: recursa gives tools to the root RLM only (its children "
                "have no host access); leave custom_sub_tools empty"
            )
        endpoints = Endpoints(env)
        model = endpoints.model_of(backend, backend_kwargs)
        sub_model = None
        others = list(other_backends or [])
        other_kwargs = list(other_backend_kwargs or [])
        if len(others) != len(other_kwargs) and other_kwargs:
            raise ConfigError("other_backends and other_backend_kwargs differ in length")
        if len(others) > 1:
            raise ConfigError("recursa takes one sub-model: give one entry in other_backends")
        if others:
            sub_model = endpoints.model_of(others[0], other_kwargs[0] if other_kwargs else None)
        tools = {k: v for k, v in dict(custom_tools or {}).items() if callable(v)}
        self.variables = {k: v for k, v in dict(custom_tools or {}).items() if not callable(v)}
        """custom_tools that are values, not functions: REPL variables of those names."""
        if persistent and self.variables:
            raise ConfigError(
                "persistent=True takes only functions in custom_tools (a session sets no "
                f"other variables): {', '.join(sorted(self.variables))}"
            )
        listeners: list[Listener] = []
        if on_subcall_start is not None or on_subcall_complete is not None:
            from .subcalls import Subcalls

            listeners.append(Subcalls(on_subcall_start, on_subcall_complete))
        if verbose:
            from ...progress import Progress  # rich: loaded only when asked for

            listeners.append(Progress())
        guards = GuardSettings() if max_errors is None else GuardSettings(repeated_error=max_errors)
        self.program = Program(
            model,
            sub_model=sub_model,
            env=endpoints.env,
            tools=tools,
            max_depth=max_depth,
            max_iterations=max_iterations,
            max_tokens=max_tokens,
            max_cost=max_budget,
            timeout=max_timeout,
            concurrency=max_concurrent_subcalls,
            sandbox=sandbox_of(environment, environment_kwargs),
            compact_at=compaction_threshold_pct if compaction else 1.0,
            guards=guards,
            system_prompt=custom_system_prompt,
            dialect=dialect,
            on_event=_fan_out(listeners),
        )
        self.backend = backend
        self.root_model = str((backend_kwargs or {}).get("model_name") or model)
        self.persistent = persistent
        self._session: Session | None = None

    def completion(self, prompt: Any, root_prompt: str | None = None) -> RLMChatCompletion:
        """Answer over `prompt` (the context: text, or JSON-able data); `root_prompt` is the
        question the root model sees beside it."""
        question = root_prompt or DEFAULT_QUESTION
        started = time.perf_counter()
        log = self.logger.open() if self.logger is not None else None
        try:
            if self.persistent:
                if self._session is None:
                    self._session = self.program.session()
                result = self._session.ask(question, prompt, on_event=log)
            else:
                result = self.program.run(question, prompt, inputs=self.variables, on_event=log)
        finally:
            if log is not None:
                log.close()
        return self._completion(prompt, result, time.perf_counter() - started)

    def _completion(self, prompt: Any, result: RunResult, elapsed: float) -> RLMChatCompletion:
        answer = result.answer
        response = "" if answer is None else answer if isinstance(answer, str) else str(answer)
        return RLMChatCompletion(
            root_model=self.root_model,
            prompt=prompt,
            response=response,
            usage_summary=UsageSummary.of(result.usage),
            execution_time=elapsed,
            metadata={
                "run_id": result.run_id,
                "status": result.status,
                "iterations": result.iterations,
                "usage": result.usage,
            },
            error=None if result.ok else (result.error or result.status),
        )

    def close(self) -> None:
        """End a persistent REPL (no-op otherwise)."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> RLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fan_out(listeners: list[Listener]) -> Listener | None:
    if not listeners:
        return None

    def listen(event: Any) -> None:
        for listener in listeners:
            listener(event)

    return listen
