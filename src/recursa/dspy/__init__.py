"""A drop-in for DSPy's `dspy.RLM` on recursa's engine (extra: dspy; docs/MIGRATING.md)."""

from .module import RLM

__all__ = ["RLM"]
