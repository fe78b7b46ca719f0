"""recursa: Recursive Language Models over inputs far larger than a model's window."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BudgetExceeded,
    ConfigError,
    LMConnectionError,
    LMError,
    LMStatusError,
    RecursaError,
    SandboxError,
)

if TYPE_CHECKING:
    from .budget import Limits
    from .core.programs import RLM, Auto, Direct, RunResult
    from .core.session import Session
    from .core.signature import Signature, SignatureError
    from .core.tools import Tool, tool
    from .events import Event
    from .lm.base import Completion, LMClient
    from .lm.pricing import Price, PriceTable
    from .lm.retry import RetryPolicy

_HOMES = {
    "Limits": "budget",
    "RLM": "core.programs",
    "Auto": "core.programs",
    "Direct": "core.programs",
    "RunResult": "core.programs",
    "Event": "events",
    "Completion": "lm.base",
    "LMClient": "lm.base",
    "Price": "lm.pricing",
    "PriceTable": "lm.pricing",
    "RetryPolicy": "lm.retry",
    "Session": "core.session",
    "Signature": "core.signature",
    "SignatureError": "core.signature",
    "Tool": "core.tools",
    "tool": "core.tools",
}
"""Each public name's module, imported on first use, so that `recursa --help` (which
imports this package) does not load the engine, the LM clients and httpx."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "RLM",
    "Auto",
    "BudgetExceeded",
    "Completion",
    "ConfigError",
    "Direct",
    "Event",
    "LMClient",
    "LMConnectionError",
    "LMError",
    "LMStatusError",
    "Limits",
    "Price",
    "PriceTable",
    "RecursaError",
    "RetryPolicy",
    "RunResult",
    "SandboxError",
    "Session",
    "Signature",
    "SignatureError",
    "Tool",
    "tool",
]
