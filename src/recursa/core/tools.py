"""Host tools: user Python callables the model's code may call by name from the REPL.

They run here, on the host, never in the sandbox: the worker holds only a stub that sends
the call over its channel. Each call is an event, and may be charged to the run's budget.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..sandbox.inside.names import RESERVED, is_numbered


@dataclass(frozen=True, slots=True)
class Tool:
    """A callable, the name the REPL knows it by, and what one call costs (USD), if anything."""

    fn: Callable[..., Any]
    name: str
    cost_usd: float | None = None
    description: str = ""

    async def call(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(self.fn):
            value = await self.fn(*args, **kwargs)
        else:
            value = await asyncio.to_thread(self.fn, *args, **kwargs)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
        return value


def tool(fn: Callable[..., Any], *, name: str | None = None, cost_usd: float | None = None) -> Tool:
    """Wrap `fn` as a tool, optionally named differently or charged per call."""
    return _checked(Tool(fn, fn.__name__ if name is None else name, cost_usd, _describe(fn)))


def normalize(
    tools: Mapping[str, Callable[..., Any] | Tool] | Iterable[Callable[..., Any] | Tool] | None,
) -> dict[str, Tool]:
    """Tools given as a mapping, a list of callables, or Tool objects, keyed by name."""
    if tools is None:
        return {}
    items: list[Tool] = []
    if isinstance(tools, Mapping):
        for name, value in tools.items():
            if isinstance(value, Tool):
                items.append(_checked(Tool(value.fn, name, value.cost_usd, value.description)))
            else:
                items.append(tool(value, name=name))
    else:
        items = [t if isinstance(t, Tool) else tool(t) for t in tools]
    table = {t.name: t for t in items}
    if len(table) != len(items):
        raise ConfigError("two tools have the same name")
    return table


def _checked(t: Tool) -> Tool:
    if not callable(t.fn):
        raise ConfigError(f"tool {t.name!r} is not callable")
    taken = t.name in RESERVED or is_numbered(t.name)
    if not t.name.isidentifier() or taken or t.name.startswith("_"):
        raise ConfigError(f"{t.name!r} cannot be a tool name: it must be a free identifier")
    if t.cost_usd is not None and t.cost_usd < 0:
        raise ConfigError(f"tool {t.name!r}: cost_usd must not be negative")
    return t


def _describe(fn: Callable[..., Any]) -> str:
    try:
        signature = str(inspect.signature(fn, eval_str=True))
    except (NameError, TypeError, ValueError, SyntaxError):
        try:
            signature = str(inspect.signature(fn))
        except (TypeError, ValueError):
            signature = "(...)"
    doc = (inspect.getdoc(fn) or "").strip().splitlines()
    return f"{signature}" + (f": {doc[0]}" if doc else "")
