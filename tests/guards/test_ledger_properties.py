"""The Ledger's caps and sums under concurrent reserve/settle/release, with all three caps.

Hypothesis draws limits (calls, tokens, cost with a price table) and interleavings of
reserve -> settle / release played by several threads at once, and by asyncio tasks that
yield between the steps. What the workers observe is kept so that it can only under-count
what the ledger holds (counted after a grant, given back before the ledger hears of it),
so a cap the observers see exceeded was truly exceeded.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recursa.budget import MIN_OUTPUT_TOKENS, Ledger, Limits, Reservation
from recursa.errors import BudgetExceeded
from recursa.lm.pricing import Price, PriceTable

PRICES = PriceTable(
    {
        "openai/a": Price(1000.0, 1000.0),  # $0.001 a token, in and out
        "openai/b": Price(250.0, 2000.0),
        "anthropic/c": Price(3.0, 15.0),
        "ollama/free": Price(0.0, 0.0),
    }
)
MODELS = tuple(PRICES.prices)
COST_SLACK = 1e-9
"""Float sums of prices may differ from exact arithmetic in the last bits; no more."""


@dataclass(frozen=True)
class Step:
    model: str
    depth: int
    estimate: int  # estimated input tokens, as the gateway reserves them
    send: bool  # True: sent and settled; False: released unsent
    in_share: float  # share of the estimate the server reports as input
    out_share: float  # share of the output allowance it reports as output
    reported_cost: bool  # True: the server reports a cost (a share of the reserved one)
    yields: int  # asyncio only: how often the task yields while the request is out


steps = st.builds(
    Step,
    model=st.sampled_from(MODELS),
    depth=st.integers(min_value=0, max_value=3),
    estimate=st.integers(min_value=1, max_value=600),
    send=st.booleans(),
    in_share=st.floats(min_value=0, max_value=1),
    out_share=st.floats(min_value=0, max_value=1),
    reported_cost=st.booleans(),
    yields=st.integers(min_value=0, max_value=3),
)
plans_st = st.lists(st.lists(steps, max_size=20), min_size=2, max_size=6)
limits_st = st.builds(
    Limits,
    max_llm_calls=st.none() | st.integers(min_value=1, max_value=40),
    max_tokens=st.none() | st.integers(min_value=MIN_OUTPUT_TOKENS + 1, max_value=30_000),
    max_cost=st.none() | st.floats(min_value=0.001, max_value=20.0),
)


@dataclass
class Observer:
    """What the players saw, kept so that it never exceeds what the ledger holds."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempts: int = 0
    granted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    open_calls: int = 0
    open_tokens: int = 0
    open_cost: float = 0.0
    done_tokens: int = 0
    done_cost: float = 0.0
    most_calls: int = 0
    most_tokens: int = 0
    most_cost: float = 0.0
    settled: list[tuple[str, int, int, int, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def peak(self) -> None:
        self.most_calls = max(self.most_calls, self.open_calls + len(self.settled))
        self.most_tokens = max(self.most_tokens, self.open_tokens + self.done_tokens)
        self.most_cost = max(self.most_cost, self.open_cost + self.done_cost)

    def refuse(self, exc: BudgetExceeded) -> None:
        with self.lock:
            self.attempts += 1
            self.refused[exc.limit] = self.refused.get(exc.limit, 0) + 1

    def grant(self, ledger: Ledger, r: Reservation) -> None:
        with self.lock:
            self.attempts += 1
            self.granted += 1
            self.open_calls += 1
            self.open_tokens += r.tokens
            self.open_cost += r.cost
            self.peak()
            self._check_reservation(ledger, r)

    def _check_reservation(self, ledger: Ledger, r: Reservation) -> None:
        limits = ledger.limits
        if r.model not in MODELS:
            self.problems.append(f"reservation for an unknown model {r.model!r}")
        if limits.max_tokens is None and limits.max_cost is None and r.output_cap is not None:
            self.problems.append(f"an output cap {r.output_cap} without a token or cost limit")
        if (limits.max_tokens is not None or limits.max_cost is not None) and (
            r.output_cap is None or r.output_cap < MIN_OUTPUT_TOKENS
        ):
            self.problems.append(f"output cap {r.output_cap} under a token or cost limit")

    def close(self, r: Reservation, settled: tuple[str, int, int, int, float] | None) -> None:
        """Before the ledger hears of it: give back the reservation, count what was spent."""
        with self.lock:
            self.open_calls -= 1
            self.open_tokens -= r.tokens
            self.open_cost -= r.cost
            if settled is not None:
                self.settled.append(settled)
                self.done_tokens += settled[2] + settled[3]
                self.done_cost += settled[4]
            self.peak()


def _usage_for(ledger: Ledger, step: Step, r: Reservation) -> tuple[int, int, float | None]:
    """What the server reports: never more than was reserved (input, output and cost)."""
    allowance = r.output_cap if r.output_cap is not None else ledger.output_reserve
    inp = math.floor(step.estimate * step.in_share)
    out = math.floor(allowance * step.out_share)
    if not step.reported_cost:
        return inp, out, None
    priced = PRICES.cost(r.model, inp, out) or 0.0
    return inp, out, min(priced, r.cost) if ledger.limits.max_cost is not None else priced


def _settle(ledger: Ledger, seen: Observer, step: Step, r: Reservation) -> None:
    inp, out, reported = _usage_for(ledger, step, r)
    expected = reported if reported is not None else (PRICES.cost(r.model, inp, out) or 0.0)
    seen.close(r, (r.model, r.depth, inp, out, expected))
    cost = ledger.settle(r, inp, out, reported)
    if cost != expected:
        with seen.lock:
            seen.problems.append(f"settle returned {cost}, expected {expected}")


def _release(ledger: Ledger, seen: Observer, r: Reservation) -> None:
    seen.close(r, None)
    ledger.release(r)


def _reserve(ledger: Ledger, seen: Observer, step: Step) -> Reservation | None:
    try:
        r = ledger.reserve(step.model, step.depth, step.estimate)
    except BudgetExceeded as exc:
        seen.refuse(exc)
        return None
    seen.grant(ledger, r)
    return r


def play_in_threads(ledger: Ledger, plans: list[list[Step]]) -> Observer:
    seen = Observer()
    barrier = threading.Barrier(len(plans))
    errors: list[BaseException] = []

    def play(plan: list[Step]) -> None:
        try:
            barrier.wait()
            held: list[tuple[Step, Reservation]] = []
            for step in plan:
                r = _reserve(ledger, seen, step)
                if r is not None:
                    held.append((step, r))
                # Close the older half of what is held: requests overlap across steps.
                while len(held) > 1:
                    old_step, old = held.pop(0)
                    (
                        _settle(ledger, seen, old_step, old)
                        if old_step.send
                        else _release(ledger, seen, old)
                    )
            for old_step, old in held:
                (
                    _settle(ledger, seen, old_step, old)
                    if old_step.send
                    else _release(ledger, seen, old)
                )
        except BaseException as exc:  # surfaced by the test, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=play, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return seen


def play_in_tasks(ledger: Ledger, plans: list[list[Step]]) -> Observer:
    seen = Observer()

    async def request(step: Step) -> None:
        r = _reserve(ledger, seen, step)
        if r is None:
            return
        for _ in range(step.yields):  # the request is "out": other tasks reserve meanwhile
            await asyncio.sleep(0)
        if step.send:
            _settle(ledger, seen, step, r)
        else:
            _release(ledger, seen, r)

    async def play(plan: list[Step]) -> None:
        # Each plan is a batch: its requests race one another and the other plans'.
        await asyncio.gather(*(request(step) for step in plan))

    async def main() -> None:
        await asyncio.gather(*(play(plan) for plan in plans))

    asyncio.run(main())
    return seen


def check_caps_and_sums(ledger: Ledger, plans: list[list[Step]], seen: Observer) -> None:
    limits = ledger.limits
    total = ledger.total
    assert seen.problems == []
    # Every attempt was granted or refused, and nothing is left reserved.
    assert seen.attempts == sum(len(plan) for plan in plans)
    assert seen.granted + sum(seen.refused.values()) == seen.attempts
    assert ledger.refused == sum(seen.refused.values())
    assert ledger.in_flight == 0
    assert seen.open_calls == 0
    # Only limits that are set refuse anything.
    set_limits = {
        name for name in ("max_llm_calls", "max_tokens", "max_cost") if getattr(limits, name)
    }
    assert set(seen.refused) <= set_limits
    # No cap is ever exceeded: not while requests are in flight, not at the end.
    if limits.max_llm_calls is not None:
        assert seen.most_calls <= limits.max_llm_calls
        assert total.llm_calls <= limits.max_llm_calls
    if limits.max_tokens is not None:
        assert seen.most_tokens <= limits.max_tokens
        assert total.input_tokens + total.output_tokens <= limits.max_tokens
    if limits.max_cost is not None:
        assert seen.most_cost <= limits.max_cost + COST_SLACK
        assert total.cost_usd <= limits.max_cost + COST_SLACK
    # Settled totals equal the sum of the parts: overall, by model and by depth.
    settled = seen.settled
    assert total.llm_calls == len(settled)
    assert total.input_tokens == sum(s[2] for s in settled)
    assert total.output_tokens == sum(s[3] for s in settled)
    assert total.cost_usd == pytest.approx(sum(s[4] for s in settled), rel=1e-9, abs=1e-12)
    usage = ledger.usage()
    for key, index in (("by_model", 0), ("by_depth", 1)):
        groups = {str(s[index]) for s in settled}
        assert set(usage[key]) == groups
        for group in groups:
            part = [s for s in settled if str(s[index]) == group]
            got = usage[key][group]
            assert got["llm_calls"] == len(part)
            assert got["input_tokens"] == sum(s[2] for s in part)
            assert got["output_tokens"] == sum(s[3] for s in part)
            assert got["cost_usd"] == pytest.approx(sum(s[4] for s in part), abs=1e-9)
        for field_ in ("llm_calls", "input_tokens", "output_tokens"):
            assert sum(t[field_] for t in usage[key].values()) == usage[field_]
        assert sum(t["cost_usd"] for t in usage[key].values()) == pytest.approx(
            usage["cost_usd"], abs=1e-9
        )


PLAYERS: dict[str, Callable[[Ledger, list[list[Step]]], Observer]] = {
    "threads": play_in_threads,
    "asyncio_tasks": play_in_tasks,
}


@pytest.mark.parametrize("player", PLAYERS.keys())
@settings(max_examples=60, deadline=None)
@given(limits=limits_st, plans=plans_st)
def test_ledger_keeps_calls_tokens_and_cost_caps_and_exact_sums_under_interleavings(
    player: str, limits: Limits, plans: list[list[Step]]
) -> None:
    ledger = Ledger(limits=limits, pricer=PRICES)

    seen = PLAYERS[player](ledger, plans)

    check_caps_and_sums(ledger, plans, seen)


@pytest.mark.parametrize("player", PLAYERS.keys())
@settings(max_examples=30, deadline=None)
@given(
    max_cost=st.floats(min_value=0.05, max_value=2.0),
    sizes=st.lists(st.integers(min_value=1, max_value=15), min_size=2, max_size=5),
)
def test_ledger_spends_the_cost_cap_down_to_less_than_one_minimal_request(
    player: str, max_cost: float, sizes: list[int]
) -> None:
    # $0.001 a token: every request of 10 input tokens sends whatever output the cap left.
    ledger = Ledger(limits=Limits(max_cost=max_cost), pricer=PRICES, output_reserve=200)
    plans = [[Step("openai/a", 0, 10, True, 1.0, 1.0, False, 1) for _ in range(n)] for n in sizes]

    seen = PLAYERS[player](ledger, plans)

    check_caps_and_sums(ledger, plans, seen)
    if seen.refused:  # refused only once less than one minimal request was affordable
        smallest = PRICES.cost("openai/a", 10, MIN_OUTPUT_TOKENS) or 0.0
        assert max_cost - ledger.total.cost_usd < smallest + COST_SLACK
        assert set(seen.refused) == {"max_cost"}


@pytest.mark.parametrize("player", PLAYERS.keys())
@settings(max_examples=30, deadline=None)
@given(
    max_tokens=st.integers(min_value=100, max_value=5_000),
    sizes=st.lists(st.integers(min_value=1, max_value=15), min_size=2, max_size=5),
)
def test_ledger_spends_the_token_cap_down_to_less_than_one_minimal_request(
    player: str, max_tokens: int, sizes: list[int]
) -> None:
    ledger = Ledger(limits=Limits(max_tokens=max_tokens), pricer=PRICES, output_reserve=200)
    plans = [[Step("openai/a", 1, 10, True, 1.0, 1.0, False, 1) for _ in range(n)] for n in sizes]

    seen = PLAYERS[player](ledger, plans)

    check_caps_and_sums(ledger, plans, seen)
    if seen.refused:
        assert max_tokens - ledger.total.input_tokens - ledger.total.output_tokens < (
            10 + MIN_OUTPUT_TOKENS
        )
        assert set(seen.refused) == {"max_tokens"}


def test_a_released_reservation_gives_its_call_tokens_and_cost_back() -> None:
    ledger = Ledger(limits=Limits(max_llm_calls=1, max_tokens=100, max_cost=0.1), pricer=PRICES)
    first = ledger.reserve("openai/a", 0, 20)
    with pytest.raises(BudgetExceeded):
        ledger.reserve("openai/a", 0, 20)

    ledger.release(first)
    again = ledger.reserve("openai/a", 0, 20)

    assert again.tokens == first.tokens
    assert again.cost == pytest.approx(first.cost)
    assert ledger.total.llm_calls == 0


@settings(max_examples=200, deadline=None)
@given(
    cap=st.integers(min_value=200, max_value=5_000),
    reports=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=400),  # input tokens reserved
            st.integers(min_value=0, max_value=800),  # input tokens reported
            st.integers(min_value=0, max_value=10_000),  # output tokens reported
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_a_report_past_its_reservation_is_a_breach_and_nothing_is_sent_after(
    cap: int, reports: list[tuple[int, int, int]]
) -> None:
    """Whatever a server reports: while no breach is recorded the settled total is within
    max_tokens, and after one every reservation is refused."""
    ledger = Ledger(limits=Limits(max_tokens=cap))
    for reserved, reported_in, reported_out in reports:
        try:
            reservation = ledger.reserve("openai/a", 0, reserved)
        except BudgetExceeded:
            break
        ledger.settle(reservation, reported_in, reported_out)
        honest = reported_in <= reserved and reported_out <= (reservation.output_cap or 0)
        assert (reservation.breach is None) == honest
        if ledger.breach is None:
            assert ledger.total.input_tokens + ledger.total.output_tokens <= cap
        else:
            with pytest.raises(BudgetExceeded):
                ledger.reserve("openai/a", 0, 1)
