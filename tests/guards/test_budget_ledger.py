"""max_llm_calls holds at the server, however many batched calls race for the last ones;
and the Ledger itself keeps its caps and its sums under concurrent threads."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e_helpers import assert_usage_matches_server, repl, sub_requests
from recursa.budget import Ledger, Limits
from recursa.core.programs import RLM
from recursa.errors import BudgetExceeded
from recursa.testing import ScriptedLM

BATCH_OF_40 = repl(
    """
    answers = llm_query_batched([f"question {i}" for i in range(40)])
    FINAL(answers)
    """
)


def _echo(request) -> str:
    return "answer to " + request.last_user


@pytest.mark.parametrize("cap", [3, 10, 25])
def test_40_wide_batch_never_sends_more_requests_than_max_llm_calls(serve, cap: int) -> None:
    server = serve(ScriptedLM(root=[BATCH_OF_40], sub=_echo), latency=0.01)

    result = RLM("openai/x", base_url=server.url, max_llm_calls=cap, concurrency=40).run("q", "ctx")

    assert result.status == "ok", result.error
    assert server.request_count <= cap
    assert server.request_count == cap  # the root turn, then every call the cap left
    assert_usage_matches_server(result.usage, server)
    answers = result.answer
    assert len(answers) == 40  # no answer lost: refused items are still there
    refused = [a for a in answers if a.startswith("[error]")]
    assert len(refused) == 40 - (cap - 1)
    assert all("max_llm_calls" in a for a in refused)
    for i, answer in enumerate(answers):  # the answers that came back are in order
        assert answer.startswith("[error]") or answer == f"answer to question {i}"
    assert len(sub_requests(server)) == cap - 1


def test_every_item_refused_raises_budget_exceeded_that_the_model_can_catch(serve) -> None:
    code = """
    try:
        llm_query_batched([f"q{i}" for i in range(40)])
        outcome = "no exception"
    except BudgetExceeded as exc:
        outcome = "caught: " + str(exc)
    FINAL(outcome)
    """
    server = serve(ScriptedLM(root=[repl(code)], sub=_echo))

    result = RLM("openai/x", base_url=server.url, max_llm_calls=1).run("q", "ctx")

    assert result.status == "ok", result.error
    assert result.answer.startswith("caught: ")
    assert "max_llm_calls" in result.answer
    assert server.request_count == 1
    assert_usage_matches_server(result.usage, server)


def test_a_refused_plain_sub_query_raises_budget_exceeded_inside_the_repl(serve) -> None:
    code = """
    try:
        llm_query("one more?")
        outcome = "sent"
    except BudgetExceeded as exc:
        outcome = type(exc).__name__
    FINAL(outcome)
    """
    server = serve(ScriptedLM(root=[repl(code)], sub=_echo))

    result = RLM("openai/x", base_url=server.url, max_llm_calls=1).run("q", "ctx")

    assert result.answer == "BudgetExceeded"
    assert server.request_count == 1


def test_a_refused_root_turn_ends_the_run_as_budget_exhausted(serve) -> None:
    server = serve(ScriptedLM(root=[repl("x = llm_query('hi')"), repl("FINAL(x)")], sub=_echo))

    result = RLM("openai/x", base_url=server.url, max_llm_calls=2).run("q", "ctx")

    assert result.status == "budget_exhausted"
    assert "max_llm_calls" in (result.error or "")
    assert server.request_count == 2
    assert_usage_matches_server(result.usage, server)


# ---- the Ledger under threads --------------------------------------------------------------

MODELS = ("openai/a", "anthropic/b")

operation = st.tuples(
    st.integers(min_value=1, max_value=400),  # estimated input tokens
    st.booleans(),  # True: the request is sent and settled; False: released unsent
    st.floats(min_value=0, max_value=1),  # share of the estimate the server reports
    st.floats(min_value=0, max_value=1),  # share of the output allowance it reports
    st.sampled_from(MODELS),
    st.integers(min_value=0, max_value=2),  # depth
)


def _hammer(ledger: Ledger, plans: list[list[tuple]]) -> dict:
    """Run each plan in its own thread, all at once; return what the threads observed."""
    guard = threading.Lock()
    seen = {"granted": 0, "released": 0, "refused": 0, "most_held": 0, "settled": []}
    start = threading.Barrier(len(plans))
    errors: list[BaseException] = []

    def play(plan: list[tuple]) -> None:
        try:
            start.wait()
            for estimate, send, in_share, out_share, model, depth in plan:
                try:
                    reservation = ledger.reserve(model, depth, estimate)
                except BudgetExceeded:
                    with guard:
                        seen["refused"] += 1
                    continue
                with guard:
                    seen["granted"] += 1
                    held = seen["granted"] - seen["released"]
                    seen["most_held"] = max(seen["most_held"], held)
                if not send:
                    with guard:  # counted before the unit is given back: never under-counts
                        seen["released"] += 1
                    ledger.release(reservation)
                    continue
                allowance = reservation.output_cap or ledger.output_reserve
                inp, out = int(estimate * in_share), int(allowance * out_share)
                ledger.settle(reservation, inp, out)
                with guard:
                    seen["settled"].append((model, depth, inp, out))
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=play, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return seen


@settings(max_examples=60, deadline=None)
@given(
    max_calls=st.none() | st.integers(min_value=1, max_value=30),
    max_tokens=st.none() | st.integers(min_value=20, max_value=20_000),
    plans=st.lists(st.lists(operation, max_size=25), min_size=2, max_size=6),
)
def test_ledger_under_concurrent_threads_keeps_caps_and_sums(
    max_calls: int | None, max_tokens: int | None, plans: list[list[tuple]]
) -> None:
    ledger = Ledger(limits=Limits(max_llm_calls=max_calls, max_tokens=max_tokens))

    seen = _hammer(ledger, plans)

    settled = seen["settled"]
    total = ledger.total
    # No cap is ever exceeded: not while requests are in flight, not at the end.
    if max_calls is not None:
        assert seen["most_held"] <= max_calls
        assert total.llm_calls <= max_calls
    if max_tokens is not None:
        assert total.input_tokens + total.output_tokens <= max_tokens
    # Nothing is left reserved, and every attempt was either granted or refused.
    assert ledger.in_flight == 0
    assert seen["granted"] + seen["refused"] == sum(len(plan) for plan in plans)
    assert ledger.refused == seen["refused"]
    # Settled totals equal the sum of the parts, overall, by model and by depth.
    assert total.llm_calls == len(settled)
    assert total.input_tokens == sum(s[2] for s in settled)
    assert total.output_tokens == sum(s[3] for s in settled)
    usage = ledger.usage()
    for key, index in (("by_model", 0), ("by_depth", 1)):
        groups = {str(s[index]) for s in settled}
        assert set(usage[key]) == groups
        for group in groups:
            part = [s for s in settled if str(s[index]) == group]
            assert usage[key][group]["llm_calls"] == len(part)
            assert usage[key][group]["input_tokens"] == sum(s[2] for s in part)
            assert usage[key][group]["output_tokens"] == sum(s[3] for s in part)


@settings(max_examples=40, deadline=None)
@given(
    max_calls=st.integers(min_value=1, max_value=30),
    sizes=st.lists(st.integers(min_value=0, max_value=20), min_size=2, max_size=6),
)
def test_ledger_grants_exactly_the_cap_when_every_request_is_sent(
    max_calls: int, sizes: list[int]
) -> None:
    ledger = Ledger(limits=Limits(max_llm_calls=max_calls))
    plans = [[(10, True, 1.0, 0.0, "openai/a", 0)] * n for n in sizes]

    seen = _hammer(ledger, plans)

    assert ledger.total.llm_calls == min(sum(sizes), max_calls)
    assert seen["refused"] == sum(sizes) - ledger.total.llm_calls


def test_a_reservation_cannot_be_settled_twice() -> None:
    ledger = Ledger(limits=Limits(max_llm_calls=5))
    reservation = ledger.reserve("openai/a", 0, 10)
    ledger.settle(reservation, 5, 5)

    with pytest.raises(RuntimeError):
        ledger.settle(reservation, 5, 5)
    assert ledger.total.llm_calls == 1


def test_cache_writes_stay_within_max_cost_and_reads_are_charged_less() -> None:
    """Anthropic prices a cache write above plain input: the reservation must hold it."""
    from recursa.lm import Price, PriceTable

    prices = PriceTable({"anthropic/m": Price(3.0, 15.0, 0.3, 3.75)})
    ledger = Ledger(limits=Limits(max_cost=1.0), pricer=prices)
    first = ledger.reserve("anthropic/m", 0, 10_000)
    # The whole prompt written to the cache ($3.75/M, not $3/M) and every output token
    # the request was allowed: exactly the bound, which the reservation must have held.
    out = first.output_cap
    assert out is not None
    cost = ledger.settle(first, 10_000, out, cache_write_tokens=10_000)
    assert first.breach is None and ledger.breach is None
    assert cost == pytest.approx((10_000 * 3.75 + out * 15) / 1e6)
    second = ledger.reserve("anthropic/m", 0, 10_000)
    read = ledger.settle(second, 10_000, 100, cache_read_tokens=9_000)
    assert read == pytest.approx((1_000 * 3 + 9_000 * 0.3 + 100 * 15) / 1e6)
    usage = ledger.usage()["by_model"]["anthropic/m"]
    assert (usage["cache_read_tokens"], usage["cache_write_tokens"]) == (9_000, 10_000)
