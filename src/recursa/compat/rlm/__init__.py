"""The official RLM library's API on recursa: change `from rlm import RLM` to
`from recursa.compat.rlm import RLM` and nothing else (docs/MIGRATING.md)."""

from .core import RLM
from .logger import RLMLogger
from .types import ModelUsageSummary, RLMChatCompletion, UsageSummary

__all__ = ["RLM", "ModelUsageSummary", "RLMChatCompletion", "RLMLogger", "UsageSummary"]
