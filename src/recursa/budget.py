"""The run's ledger: one per run, shared by every depth.

Every LM request reserves before it is sent and settles after (invariant 1). A reservation
is checked and recorded under one lock, so of several calls racing for the last unit exactly
one wins, and a refused reservation never reaches the network. Token and cost limits are
hard: each reservation is an upper bound (input bounded by the request's UTF-8 bytes, output
by the max_tokens the request carries), so a server that keeps to it cannot cross them. A
server that reports more than was reserved, or usage that cannot be read, has broken that
bound: the ledger records the breach and refuses every later request, and the run ends
with `budget_exhausted`.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import BudgetExceeded, ConfigError

DEFAULT_OUTPUT_RESERVE = 4096
"""Output tokens reserved per request when no tighter limit applies."""
MIN_OUTPUT_TOKENS = 16
"""A request that could not even get this many output tokens is refused instead."""


class Pricer(Protocol):
    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_llm_calls", "max_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a whole number of at least 1, not {value!r}")
        if self.max_cost is not None and not self.max_cost > 0:
            raise ConfigError(f"max_cost must be a positive number of USD, not {self.max_cost!r}")


@dataclass(slots=True)
class Tally:
    """Totals of sent requests: what `usage` reports."""

    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_read_tokens: int = 0
    """Of `input_tokens`, those the provider served from its prompt cache."""
    cache_write_tokens: int = 0
    """Of `input_tokens`, those written to the provider's prompt cache."""
    reasoning_tokens: int = 0
    """Of `output_tokens`, those the model spent reasoning."""

    def add(
        self,
        calls: int,
        input_tokens: int,
        output_tokens: int,
        cost: float,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> None:
        self.llm_calls += calls
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd += cost
        self.cache_read_tokens += cache_read_tokens
        self.cache_write_tokens += cache_write_tokens
        self.reasoning_tokens += reasoning_tokens

    def totals(self) -> dict[str, Any]:
        """The contract's top-level `usage` fields."""
        return {
            "llm_calls": self.llm_calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 10),
        }

    def to_dict(self) -> dict[str, Any]:
        """One `by_model` / `by_depth` entry: the totals and the cache and reasoning counts."""
        return {
            **self.totals(),
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


@dataclass(slots=True)
class Reservation:
    id: int
    model: str
    depth: int
    tokens: int
    cost: float
    output_cap: int | None
    """The max_tokens to send, when a token or cost limit makes one necessary."""
    input_bound: int = 0
    """The most input tokens the request can hold (what was reserved for its input)."""
    open: bool = True
    breach: str | None = None
    """Set at settlement when the server reported more than this reservation allows."""


@dataclass(slots=True)
class Ledger:
    """Limits, reservations in flight, and settled totals by model and by depth."""

    limits: Limits = field(default_factory=Limits)
    pricer: Pricer | None = None
    output_reserve: int = DEFAULT_OUTPUT_RESERVE
    total: Tally = field(default_factory=Tally)
    by_model: dict[str, Tally] = field(default_factory=dict)
    by_depth: dict[str, Tally] = field(default_factory=dict)
    by_tool: dict[str, Tally] = field(default_factory=dict)
    refused: int = 0
    breach: str | None = None
    """The first report that broke a reservation: once set, no request is sent again."""
    breach_limit: str = "max_tokens"
    _calls_in_flight: int = 0
    _tokens_in_flight: int = 0
    _cost_in_flight: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def reserve(self, model: str, depth: int, input_tokens: int) -> Reservation:
        """Claim one request of `input_tokens` (estimated); raise BudgetExceeded if it won't fit."""
        limits = self.limits
        with self._lock:
            if self.breach is not None:
                self._refuse(self.breach_limit, f"{self.breach}: no request was sent")
            calls = limits.max_llm_calls
            if calls is not None and self.total.llm_calls + self._calls_in_flight >= calls:
                self._refuse("max_llm_calls", f"max_llm_calls={calls} reached: no request was sent")
            output_cap = None
            output = self.output_reserve
            if limits.max_tokens is not None:
                settled_left = (
                    limits.max_tokens
                    - self.total.input_tokens
                    - self.total.output_tokens
                    - input_tokens
                )
                left = settled_left - self._tokens_in_flight
                if left < MIN_OUTPUT_TOKENS:
                    self._refuse(
                        "max_tokens",
                        f"max_tokens={limits.max_tokens} would be exceeded by a request of "
                        f"about {input_tokens:,} input tokens: no request was sent",
                        transient=settled_left >= MIN_OUTPUT_TOKENS and self._calls_in_flight > 0,
                    )
                output = output_cap = min(output, left)
            cost = 0.0
            if limits.max_cost is not None:
                cost, output_cap = self._fit_cost(model, input_tokens, output)
            reservation = Reservation(
                next(self._ids), model, depth, input_tokens + output, cost, output_cap, input_tokens
            )
            self._calls_in_flight += 1
            self._tokens_in_flight += reservation.tokens
            self._cost_in_flight += cost
            return reservation

    def _fit_cost(self, model: str, input_tokens: int, output: int) -> tuple[float, int]:
        """The largest output that keeps the estimated cost within max_cost (lock held)."""
        assert self.limits.max_cost is not None and self.pricer is not None
        plain = self.pricer.cost(model, 1_000_000, 0)
        # Any input token may turn out to be a cache write, priced above plain input.
        written = self.pricer.cost(model, 1_000_000, 0, 0, 1_000_000)
        per_output = self.pricer.cost(model, 0, 1_000_000)
        per_input = None if plain is None or written is None else max(plain, written)
        if per_input is None or per_output is None:
            self._refuse(
                "max_cost",
                f"max_cost is set and the price of {model} is unknown: give it with "
                f"--price {model}=INPUT,OUTPUT; no request was sent",
            )
            raise AssertionError  # _refuse raised
        settled_left = self.limits.max_cost - self.total.cost_usd
        left = settled_left - self._cost_in_flight
        input_cost = per_input * input_tokens / 1e6
        fits = output
        if per_output > 0:
            output = min(output, int((left - input_cost) * 1e6 / per_output))
            fits = min(fits, int((settled_left - input_cost) * 1e6 / per_output))
        if output < MIN_OUTPUT_TOKENS or input_cost > left:
            self._refuse(
                "max_cost",
                f"max_cost=${self.limits.max_cost:g} would be exceeded "
                f"(${self.total.cost_usd:.4f} spent): no request was sent",
                transient=fits >= MIN_OUTPUT_TOKENS and self._calls_in_flight > 0,
            )
        return input_cost + per_output * output / 1e6, output

    def _refuse(self, limit: str, message: str, *, transient: bool = False) -> None:
        self.refused += 1
        raise BudgetExceeded(limit, message, transient=transient)

    def settle(
        self,
        reservation: Reservation,
        input_tokens: int,
        output_tokens: int,
        reported_cost: float | None = None,
        usage_problem: str | None = None,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        *,
        usage_missing: bool = False,
    ) -> float:
        """Record a request that was sent, with the usage the server reported; returns its cost.

        `input_tokens` is the whole prompt; the cache counts say how much of it was read
        from or written to the provider's prompt cache, each priced at its own rate.
        Under a token or cost limit, a report beyond the reservation (or one that cannot be
        read) is a breach: the request is charged at least what was reserved, and
        `reservation.breach` says why. A reply with no usage at all is charged at the
        reservation's bound, which is no breach: the cap holds and the run goes on."""
        limited = self.limits.max_tokens is not None or self.limits.max_cost is not None
        if usage_missing and limited:
            input_tokens = reservation.input_bound
            output_tokens = reservation.output_cap or 0
            reported_cost = reservation.cost
        cost = reported_cost
        if cost is None and self.pricer is not None:
            cost = self.pricer.cost(
                reservation.model,
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
            )
        cost = cost or 0.0
        why = self._overrun(reservation, input_tokens, output_tokens, cost, usage_problem)
        if why is not None:
            input_tokens = max(input_tokens, reservation.input_bound)
            output_tokens = max(output_tokens, reservation.output_cap or 0)
            cost = max(cost, reservation.cost)
        with self._lock:
            if why is not None:
                reservation.breach = why
                if self.breach is None:
                    self.breach, self.breach_limit = why, self._breached_limit(why)
            self._close(reservation)
            for tally in (
                self.total,
                _tally(self.by_model, reservation.model),
                _tally(self.by_depth, str(reservation.depth)),
            ):
                tally.add(
                    1,
                    input_tokens,
                    output_tokens,
                    cost,
                    cache_read_tokens,
                    cache_write_tokens,
                    reasoning_tokens,
                )
        return cost

    def _overrun(
        self,
        reservation: Reservation,
        input_tokens: int,
        output_tokens: int,
        cost: float,
        usage_problem: str | None,
    ) -> str | None:
        """Why this report breaks the reservation's bound, when a limit depends on it."""
        limits = self.limits
        if limits.max_tokens is None and limits.max_cost is None:
            return None
        if usage_problem is not None:
            return f"the server's usage cannot be trusted ({usage_problem})"
        if input_tokens > reservation.input_bound:
            return (
                f"the server reported {input_tokens:,} input tokens for a request that holds "
                f"at most {reservation.input_bound:,}"
            )
        cap = reservation.output_cap
        if cap is not None and output_tokens > cap:
            return (
                f"the server reported {output_tokens:,} output tokens for a request capped at "
                f"{cap:,} (it ignored max_tokens)"
            )
        if limits.max_cost is not None and cost > reservation.cost * (1 + 1e-9) + 1e-12:
            return (
                f"the server reported a cost of ${cost:.6g} for a request reserved at "
                f"${reservation.cost:.6g}"
            )
        return None

    def _breached_limit(self, why: str) -> str:
        if "cost" in why or self.limits.max_tokens is None:
            return "max_cost"
        return "max_tokens"

    def charge_tool(self, name: str, cost: float) -> None:
        """Charge one host tool call to max_cost (not an LM call: llm_calls is unchanged)."""
        with self._lock:
            limit = self.limits.max_cost
            if limit is not None and self.total.cost_usd + self._cost_in_flight + cost > limit:
                self._refuse(
                    "max_cost",
                    f"max_cost=${limit:g} would be exceeded by tool {name} (${cost:g} a call)",
                )
            self.total.cost_usd += cost
            _tally(self.by_tool, name).add(1, 0, 0, cost)

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose request was never sent."""
        with self._lock:
            self._close(reservation)

    def _close(self, reservation: Reservation) -> None:
        if not reservation.open:
            raise RuntimeError(f"reservation {reservation.id} settled twice")
        reservation.open = False
        self._calls_in_flight -= 1
        self._tokens_in_flight -= reservation.tokens
        self._cost_in_flight -= reservation.cost

    @property
    def in_flight(self) -> int:
        return self._calls_in_flight

    def usage(self) -> dict[str, Any]:
        """The `usage` object of the contract, for the whole run tree."""
        with self._lock:
            usage = {
                **self.total.totals(),
                "by_model": {k: v.to_dict() for k, v in sorted(self.by_model.items())},
                "by_depth": {k: v.to_dict() for k, v in sorted(self.by_depth.items())},
            }
            if self.by_tool:
                usage["by_tool"] = {
                    k: {"calls": v.llm_calls, "cost_usd": round(v.cost_usd, 10)}
                    for k, v in sorted(self.by_tool.items())
                }
            return usage


def _tally(table: dict[str, Tally], key: str) -> Tally:
    tally = table.get(key)
    if tally is None:
        tally = table[key] = Tally()
    return tally
