"""Run options -> program: the one place that turns the options of a run (the dict the CLI's
`run`, `demo` and `batch` build, and what the server, MCP, the llm plugin, eval and mining
build) into a program (RLM, Direct or Auto) and a price table.

Every interface goes through here, so a run started from any of them is configured alike;
this module imports no interface (no click, no web framework).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .core.profile import resolve
from .core.programs import RLM, Auto, Direct
from .errors import ConfigError
from .lm.base import LMClient
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
            raise ConfigError(
                f"bad --price {arg!r}: expected "
                "PROVIDER/MODEL=INPUT,OUTPUT[,CACHE_READ[,CACHE_WRITE]]"
            )
        overrides[model] = value
    return prices.with_overrides(overrides) if overrides else prices


SETTINGS = (
    "signature",
    "context_window",
    "sub_model",
    "base_url",
    "base_url_for",
    "max_depth",
    "max_iterations",
    "max_llm_calls",
    "max_tokens",
    "max_cost",
    "timeout",
    "cell_timeout",
    "concurrency",
    "max_output_chars",
    "sandbox",
    "memory_limit",
    "dialect",
    "system_prompt",
)
"""The options passed to the program as they are; one left out keeps the program's default."""


def make_program(
    opts: Mapping[str, Any],
    env: dict[str, str] | None = None,
    *,
    client: LMClient | None = None,
) -> RLM:
    """The program `opts` describe: `model`, `profile` (a controller profile or its file),
    `strategy` (rlm, direct or auto; default: the profile's, rlm in the built-in one),
    `mode` (default code), `SETTINGS`, `prices_file` and `price_args` (`price_table`),
    `trace_context` (full prompts in the trace) and `no_guards`. `env` stands in for the
    process environment when keys and base URLs are looked up (None: the process's own);
    `client` is the LM client to use instead of one made from the model's name."""
    profile = resolve(opts.get("profile"))
    strategy = opts.get("strategy") or profile.strategy
    if strategy not in PROGRAMS:
        raise ConfigError(f"unknown strategy {strategy!r}: choose rlm, direct or auto")
    settings = {name: opts[name] for name in SETTINGS if name in opts}
    return PROGRAMS[strategy](
        opts["model"],
        mode=opts.get("mode") or "code",
        prices=price_table(opts.get("prices_file"), opts.get("price_args") or ()),
        env=env,
        client=client,
        record_full_prompts=bool(opts.get("trace_context")),
        guards=not opts.get("no_guards"),
        profile=profile,
        **settings,
    )
