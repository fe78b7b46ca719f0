"""OpenTelemetry export (the optional extra `otel`): spans for the run, each RLM, each turn
and each LM call, built from the event stream with the times the events carry.

It uses whatever tracer provider the application configured; `recursa run --otel` sets up
the SDK with an OTLP exporter when one is installed, else prints spans to stderr.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ..errors import ConfigError
from ..events import (
    Event,
    LMCallEnded,
    LMCallStarted,
    RLMEnded,
    RLMStarted,
    RunEnded,
    RunStarted,
    TurnEnded,
    TurnStarted,
)

try:
    from opentelemetry import trace as otel_trace
except ImportError:  # the extra is not installed
    otel_trace = None  # type: ignore[assignment]  # mypy cannot type an optional module


class OtelExporter:
    """An event listener that turns events into spans; parents follow the run tree."""

    def __init__(self, tracer: Any = None) -> None:
        if otel_trace is None:
            raise ConfigError("OpenTelemetry is not installed: pip install 'recursa[otel]'")
        self.tracer = tracer or otel_trace.get_tracer("recursa")
        self.base_ns = 0
        self.spans: dict[tuple[str, ...], Any] = {}

    def _ns(self, event: Event) -> int:
        return self.base_ns + int(event.t * 1e9)

    def _start(self, key: tuple[str, ...], name: str, parent: Any, event: Event, **attrs: Any):
        context = otel_trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer.start_span(
            name,
            context=context,
            start_time=self._ns(event),
            attributes={k: v for k, v in attrs.items() if v is not None},
        )
        self.spans[key] = span
        return span

    def _end(self, key: tuple[str, ...], event: Event, **attrs: Any) -> None:
        span = self.spans.pop(key, None)
        if span is None:
            return
        for name, value in attrs.items():
            if value is not None:
                span.set_attribute(name, value)
        span.end(end_time=self._ns(event))

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.base_ns = time.time_ns() - int(event.t * 1e9)
            self._start(
                ("run",), "recursa.run", None, event,
                **{"recursa.run_id": event.run_id, "recursa.model": event.model},
            )  # fmt: skip
        elif isinstance(event, RLMStarted):
            parent_id = event.rlm.rpartition(".")[0]
            parent = self.spans.get(("rlm", parent_id)) or self.spans.get(("run",))
            self._start(
                ("rlm", event.rlm), "recursa.rlm", parent, event,
                **{"recursa.rlm": event.rlm, "recursa.depth": event.depth},
            )  # fmt: skip
        elif isinstance(event, TurnStarted):
            self._start(
                ("turn", event.rlm), "recursa.turn", self.spans.get(("rlm", event.rlm)), event,
                **{"recursa.iteration": event.iteration},
            )  # fmt: skip
        elif isinstance(event, LMCallStarted):
            parent = self.spans.get(("turn", event.rlm)) or self.spans.get(("rlm", event.rlm))
            self._start(
                ("call", str(event.call_id)), "recursa.lm_call", parent, event,
                **{
                    "gen_ai.request.model": event.model,
                    "recursa.purpose": event.purpose,
                    "recursa.attempt": event.attempt,
                },
            )  # fmt: skip
        elif isinstance(event, LMCallEnded):
            self._end(
                ("call", str(event.call_id)), event,
                **{
                    "gen_ai.usage.input_tokens": event.input_tokens,
                    "gen_ai.usage.output_tokens": event.output_tokens,
                    "recursa.cost_usd": event.cost_usd,
                    "error.type": event.error,
                },
            )  # fmt: skip
        elif isinstance(event, TurnEnded):
            self._end(("turn", event.rlm), event, **{"recursa.blocks": event.blocks})
        elif isinstance(event, RLMEnded):
            self._end(("rlm", event.rlm), event, **{"recursa.status": event.status})
        elif isinstance(event, RunEnded):
            for key in [k for k in self.spans if k != ("run",)]:
                self._end(key, event)  # what a cancellation left open
            self._end(
                ("run",), event,
                **{
                    "recursa.status": event.status,
                    "recursa.llm_calls": event.usage.get("llm_calls"),
                    "recursa.cost_usd": event.usage.get("cost_usd"),
                },
            )  # fmt: skip


def configure_sdk() -> None:
    """For the CLI's --otel: an SDK provider exporting over OTLP if installed, else stderr."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        raise ConfigError("--otel needs the SDK: pip install 'recursa[otel]'") from None
    provider = TracerProvider()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    except ImportError:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    otel_trace.set_tracer_provider(provider)


def shutdown() -> None:
    """Flush spans before the CLI exits."""
    provider = otel_trace.get_tracer_provider() if otel_trace is not None else None
    if provider is not None and hasattr(provider, "shutdown"):
        provider.shutdown()
