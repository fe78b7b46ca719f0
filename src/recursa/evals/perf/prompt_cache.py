"""Prompt caching: the demo's trajectory, its input-token cost with and without the cache.

    python -m recursa.evals.perf.prompt_cache [--json PATH] [--model anthropic/...]

The demo's scripted model (20 MB log, three root turns and one sub-query per 200,000-char
chunk) runs against the fake server on the Anthropic wire, which plays Anthropic's prompt
cache as documented (`recursa.testing.prompt_cache`). The run's usage gives the tokens read
from and written to the cache; they are priced with the shipped price table, against the
same tokens all at the plain input rate (no caching). Root turns and sub-queries are
reported apart: only the root conversation is re-sent, so only it is marked for caching.
Token counts are the fake's (one token per 4 characters), a stand-in for the tokenizer.

The demo's root conversation is short (three turns), so a second trajectory shows the lever
on a longer one: 20 root turns, each reading 4,000 characters of the same log.
"""

from __future__ import annotations

import sys

from recursa import RLM, PriceTable
from recursa.context import from_text
from recursa.demo import QUESTION, make_haystack, scripted_model
from recursa.events import Event, LMCallEnded
from recursa.testing import FakeLMServer, ScriptedLM

from .common import Result, report

BENCH = "prompt_cache"
MODEL = "anthropic/claude-sonnet-4-5"
OPENAI_MODEL = "openai/gpt-5"
"""On the OpenAI wire the fake plays the automatic cache (no breakpoints)."""
DEMO_CHARS = 20_000_000
LONG_TURNS = 20


def _input_costs(table: PriceTable, model: str, calls: list[LMCallEnded]) -> tuple[float, float]:
    """(with the cache, without) USD for these calls' input tokens."""
    cached = uncached = 0.0
    for c in calls:
        cached += (
            table.cost(model, c.input_tokens, 0, c.cache_read_tokens, c.cache_write_tokens) or 0
        )
        uncached += table.cost(model, c.input_tokens, 0) or 0
    return cached, uncached


def _long_root() -> ScriptedLM:
    turns = [
        f"Reading on.\n```repl\nprint(context[{k * 4000}:{(k + 1) * 4000}])\n```"
        for k in range(LONG_TURNS - 1)
    ]
    return ScriptedLM(root=[*turns, "FINAL(read)"])


def _calls(model: str, lm: ScriptedLM, text: str) -> list[LMCallEnded]:
    """The answered requests of one run of `lm` on `text` through the Anthropic-wire fake."""
    events: list[Event] = []
    with FakeLMServer(lm) as server:
        base = server.url if model.startswith("openai/") else server.base
        rlm = RLM(model, base_url=base, sandbox="subprocess", on_event=events.append)
        result = rlm.run(QUESTION, from_text(text, "<demo log>"))
    if result.status != "ok":
        raise SystemExit(f"the run ended {result.status}")
    return [e for e in events if isinstance(e, LMCallEnded) and e.error is None]


def measure(model: str = MODEL) -> list[Result]:
    table = PriceTable.default()
    if table.lookup(model) is None:
        raise SystemExit(f"no price for {model} in the shipped table")
    text, _code, _service = make_haystack(DEMO_CHARS)
    done = _calls(model, scripted_model(), text)
    root = [e for e in done if e.purpose == "root"]
    long_root = [e for e in _calls(model, _long_root(), text) if e.purpose == "root"]
    results: list[Result] = []
    trajectories = (
        ("demo, root turns", root),
        ("demo, whole run", done),
        (f"{LONG_TURNS} root turns", long_root),
    )
    for label, calls in trajectories:
        cached, uncached = _input_costs(table, model, calls)
        read = sum(c.cache_read_tokens for c in calls)
        written = sum(c.cache_write_tokens for c in calls)
        tokens = sum(c.input_tokens for c in calls)
        note = (
            f"{len(calls)} requests, {tokens:,} input tokens: {read:,} read from the cache, "
            f"{written:,} written to it"
        )
        results += [
            Result(BENCH, f"{label}: input cost without caching", uncached, "USD", note=note),
            Result(BENCH, f"{label}: input cost with caching", cached, "USD"),
            Result(BENCH, f"{label}: saved by caching", 100 * (1 - cached / uncached), "%"),
        ]
    per_turn = ", ".join(f"{c.cache_read_tokens}/{c.input_tokens}" for c in root)
    results[0].note += f"; read/input per root turn: {per_turn}"
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    models = [argv[argv.index("--model") + 1]] if "--model" in argv else [MODEL, OPENAI_MODEL]
    results: list[Result] = []
    for model in models:
        print(f"{BENCH}: the demo's trajectory on {model}, priced with the shipped table")
        for result in measure(model):
            result.figure = f"{model.split('/')[0]}: {result.figure}"
            results.append(result)
    report(results, argv)


if __name__ == "__main__":
    main()
