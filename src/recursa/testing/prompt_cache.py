"""Anthropic's prompt cache (on the Messages API and on Bedrock), as the fake server plays it.

The Messages API caches the prompt prefix up to each `cache_control` breakpoint: a request
whose prefix up to a breakpoint was written before reads it back (`cache_read_input_tokens`),
the prefix up to its last breakpoint is written if it was not (`cache_creation_input_tokens`),
and only the rest is plain `input_tokens`. A read is looked for at the breakpoints and at up
to `LOOKBACK` block boundaries before each. Prefixes shorter than the model's minimum (1,024
tokens for Sonnet and Opus) are not cached. The fake works at message granularity (a message
with a marked block is a breakpoint), keys prefixes by model and exact content, and never
expires them, as a run under the five-minute lifetime sees it.

OpenAI's automatic caching (`automatic`) needs no breakpoints: a prompt of at least 1,024
tokens reads back the longest prefix an earlier prompt of the same model began with, in
steps of 128 tokens past the first 1,024 (`usage.prompt_tokens_details.cached_tokens`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from recursa.testing.scripted import LMRequest, count_message_tokens

__all__ = ["AUTOMATIC_STEP", "LOOKBACK", "MIN_CACHEABLE_TOKENS", "PromptCache"]

MIN_CACHEABLE_TOKENS = 1024
LOOKBACK = 20
AUTOMATIC_STEP = 128


def _marked(content: Any) -> bool:
    """True when a system or message content carries a breakpoint: a block with
    `cache_control` (Anthropic) or a `cachePoint` block (Bedrock Converse)."""
    return isinstance(content, list) and any(
        isinstance(block, dict) and (block.get("cache_control") or "cachePoint" in block)
        for block in content
    )


def _boundaries(request: LMRequest, input_tokens: int) -> list[tuple[str, int]]:
    """For each message, the key and token count of the prompt up to and including it
    (one running hash, so a long conversation costs one pass)."""
    digest = hashlib.sha256(json.dumps(request.model).encode())
    out, tokens = [], 0
    for message in request.messages:
        digest.update(json.dumps(message, sort_keys=True).encode())
        tokens += count_message_tokens([message])
        out.append((digest.copy().hexdigest(), min(tokens, input_tokens)))
    return out


class PromptCache:
    """The prefixes written so far, and the split of each request's input they imply."""

    def __init__(self, min_tokens: int = MIN_CACHEABLE_TOKENS) -> None:
        self.min_tokens = min_tokens
        self._written: set[str] = set()
        self._lock = threading.Lock()

    def split(self, request: LMRequest, input_tokens: int) -> tuple[int, int]:
        """(read, written) tokens of this Anthropic request's `input_tokens`; records writes."""
        body = request.body
        raw = found if isinstance(found := body.get("messages"), list) else []
        flags = [_marked(m.get("content")) if isinstance(m, dict) else False for m in raw]
        if body.get("system"):
            flags.insert(0, _marked(body.get("system")))
        breakpoints = [i for i, flag in enumerate(flags) if flag]
        if not breakpoints:
            return 0, 0
        looked = sorted({j for i in breakpoints for j in range(max(0, i - LOOKBACK), i + 1)})
        boundaries = _boundaries(request, input_tokens)
        candidates = {i: boundaries[i] for i in looked if i < len(boundaries)}
        breakpoints = [i for i in breakpoints if i in candidates]
        writes = [candidates[i] for i in breakpoints if candidates[i][1] >= self.min_tokens]
        with self._lock:
            read = max((t for key, t in candidates.values() if key in self._written), default=0)
            self._written.update(key for key, _ in writes)
        return read, max(0, writes[-1][1] - read) if writes else 0

    def automatic(self, request: LMRequest, input_tokens: int) -> int:
        """Tokens of this prompt an OpenAI-style automatic cache serves; records its prefixes."""
        prefixes = _boundaries(request, input_tokens)
        with self._lock:
            seen = max((t for key, t in prefixes if key in self._written), default=0)
            self._written.update(key for key, t in prefixes if t >= self.min_tokens)
        if seen < self.min_tokens:
            return 0
        return self.min_tokens + (seen - self.min_tokens) // AUTOMATIC_STEP * AUTOMATIC_STEP

    def clear(self) -> None:
        with self._lock:
            self._written.clear()
