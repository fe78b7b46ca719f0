"""Run options -> program: the one place that turns the options of a run (the dict the CLI's
`run`, `demo` and `batch` build, and what the server, MCP, the llm plugin, eval and mining
build) into a program (RLM, Direct or Auto) and a price table.

Every interface goes through here, so a run started from any of them is configured alike;
this module imports no interface (no click, no web framework).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .engine import RLM, Auto, Direct
from .errors import ConfigError
from .lm.pricing import PriceTable

PROGRAMS: dict[str, type[RLM]] = {"rlm": RLM, "direct": Direct, "auto": Auto}
"""The programs by strategy name (`--strategy`)."""


def price_table(prices_file: str | None = None, price_args: Iterable[str] = ()) -> PriceTable:
    """The built-in prices with a prices file (`--prices`) and then each `MODEL=IN,OUT`
    (`--price`) over them."""
    prices = PriceTable.default()
    if prices_file:
        prices = prices.with_overrides(prices_file)
    overrides = {}
    for arg in price_args:
        model, sep, value = arg.partition("=")
        if not sep or not model:
            raise ConfigError(f"bad --price {arg!r}: expected PROVIDER/MODEL=INPUT,OUTPUT")
        overrides[model] = value
    return prices.with_overrides(overrides) if overrides else prices


def make_program(opts: Mapping[str, Any], env: dict[str, str] | None = None) -> RLM:
    """The program `opts` describe. `opts` needs `model`, `max_depth`, `max_iterations`,
    `cell_timeout`, `concurrency`, `max_output_chars` and `sandbox`; every other key is
    optional (`strategy` defaults to rlm, `mode` to code). `env` stands in for the process
    environment when keys and base URLs are looked up (None: the process's own)."""
    strategy = opts.get("strategy") or "rlm"
    if strategy not in PROGRAMS:
        raise ConfigError(f"unknown strategy {strategy!r}: choose rlm, direct or auto")
    return PROGRAMS[strategy](
        opts["model"],
        signature=opts.get("signature"),
        mode=opts.get("mode") or "code",
        context_window=opts.get("context_window"),
        sub_model=opts.get("sub_model"),
        base_url=opts.get("base_url"),
        base_url_for=opts.get("base_url_for"),
        max_depth=opts["max_depth"],
        max_iterations=opts["max_iterations"],
        max_llm_calls=opts.get("max_llm_calls"),
        max_tokens=opts.get("max_tokens"),
        max_cost=opts.get("max_cost"),
        timeout=opts.get("timeout"),
        cell_timeout=opts["cell_timeout"],
        concurrency=opts["concurrency"],
        max_output_chars=opts["max_output_chars"],
        sandbox=opts["sandbox"],
        memory_limit=opts.get("memory_limit"),
        prices=price_table(opts.get("prices_file"), opts.get("price_args") or ()),
        env=env,
        record_full_prompts=bool(opts.get("trace_context")),
        guards=not opts.get("no_guards"),
    )
