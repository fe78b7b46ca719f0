"""The event stream as the Python API exposes it: a callback, an async iterator, and
OpenTelemetry spans built from it."""

from __future__ import annotations

import asyncio

from extras import needs_extra
from recursa import RLM
from recursa.events import Event
from recursa.testing import LMRequest, ScriptedLM
from recursa.trace.otel import OtelExporter

FAN_OUT = '```repl\nanswers = llm_query_batched(["a", "b", "c"])\nprint(answers)\n```'
CHILD = '```repl\nkid = rlm_query("look", context="small text")\nprint(kid)\n```'


def _model() -> ScriptedLM:
    def root(request: LMRequest) -> str:
        if "Question: look" in request.messages[1]["content"]:
            return "FINAL(child answer)"
        return [FAN_OUT, CHILD, "FINAL(done)"][min(request.turn, 2)]

    return ScriptedLM(root=root, sub=lambda r: r.last_user.upper())


def test_the_callback_sees_every_event_in_order_ending_with_run_end(serve) -> None:
    server = serve(_model())
    seen: list[Event] = []

    result = RLM("openai/x", base_url=server.url, max_depth=2).run("q", "ctx", on_event=seen.append)

    kinds = [e.type for e in seen]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end"
    assert kinds.count("lm_call_end") == result.usage["llm_calls"] == server.request_count
    assert {e.rlm for e in seen if e.type == "rlm_start"} == {"0", "0.0"}
    assert [e.answer for e in seen if e.type == "final"] == ["child answer", "done"]
    times = [e.t for e in seen]
    assert times == sorted(times)


def test_the_async_iterator_yields_the_same_stream_as_it_happens(serve) -> None:
    server = serve(_model())
    rlm = RLM("openai/x", base_url=server.url, max_depth=2)

    async def collect() -> list[Event]:
        return [event async for event in rlm.events("q", "ctx")]

    events = asyncio.run(collect())

    assert events[-1].type == "run_end" and events[-1].answer == "done"
    assert sum(e.type == "block" for e in events) == 2


@needs_extra("otel", "opentelemetry")
def test_otel_spans_cover_the_run_each_rlm_each_turn_and_each_lm_call(serve) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    server = serve(_model())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    result = RLM("openai/x", base_url=server.url, max_depth=2).run(
        "q", "ctx", on_event=OtelExporter(provider.get_tracer("test"))
    )

    spans = exporter.get_finished_spans()
    by_name: dict[str, list] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert len(by_name["recursa.run"]) == 1
    assert len(by_name["recursa.rlm"]) == 2
    assert len(by_name["recursa.turn"]) == result.iterations + 1  # root turns + the child's
    calls = by_name["recursa.lm_call"]
    assert len(calls) == result.usage["llm_calls"]
    assert (
        sum(s.attributes["gen_ai.usage.input_tokens"] for s in calls)
        == (result.usage["input_tokens"])
    )
    ids = {s.context.span_id: s for s in spans}
    child = next(s for s in by_name["recursa.rlm"] if s.attributes["recursa.rlm"] == "0.0")
    assert ids[child.parent.span_id].attributes["recursa.rlm"] == "0"
    subs = [s for s in calls if s.attributes["recursa.purpose"] == "sub"]
    assert len(subs) == 3 and all(ids[s.parent.span_id].name == "recursa.turn" for s in subs)
    assert all(s.end_time >= s.start_time for s in spans)
