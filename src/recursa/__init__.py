"""recursa: Recursive Language Models over inputs far larger than a model's window."""

from .budget import Limits
from .core.programs import RLM, Auto, Direct, RunResult
from .core.session import Session
from .core.signature import Signature, SignatureError
from .core.tools import Tool, tool
from .errors import (
    BudgetExceeded,
    ConfigError,
    LMConnectionError,
    LMError,
    LMStatusError,
    RecursaError,
    SandboxError,
)
from .events import Event
from .lm.base import Completion, LMClient
from .lm.pricing import Price, PriceTable
from .lm.retry import RetryPolicy

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
