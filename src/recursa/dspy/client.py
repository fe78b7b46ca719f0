"""An LMClient whose requests are calls of DSPy LM objects, so DSPy's cache, history and
usage tracking see every request recursa makes (root turns and sub-queries alike)."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from ..lm.base import Completion, Message

ROOT = "openai/dspy-lm"
SUB = "openai/dspy-sub-lm"
"""The names recursa's ledger and events give the two DSPy LMs (the client routes by them)."""


class DSPyClient:
    """Routes `ROOT` to `lm` and `SUB` to `sub_lm` (the gateway sends the name without its
    provider); each request is one call of that LM."""

    def __init__(self, lm: Any, sub_lm: Any) -> None:
        self.lms = {ROOT.partition("/")[2]: lm, SUB.partition("/")[2]: sub_lm}

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        lm = self.lms[model]
        sent = [dict(m) for m in messages]
        outputs = await asyncio.to_thread(_call, lm, sent)
        text = outputs[0] if outputs else ""
        if isinstance(text, dict):
            text = text.get("text") or ""
        usage = _usage(lm, sent)
        return Completion(
            text=str(text),
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            model=model,
        )

    async def aclose(self) -> None:
        return None


def _call(lm: Any, messages: list[dict[str, Any]]) -> list[Any]:
    with warnings.catch_warnings():  # messages= is the call every DSPy 3 LM takes
        warnings.simplefilter("ignore", DeprecationWarning)
        return list(lm(messages=messages))


def _usage(lm: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The usage DSPy recorded for this very call (its history entry holds our messages)."""
    for entry in reversed(getattr(lm, "history", None) or []):
        if entry.get("messages") is messages:
            return dict(entry.get("usage") or {})
    return {}
