"""The eval harness's response cache keeps what prices a request: a cached completion
comes back with its prompt-cache and reasoning counts, so a resumed eval costs the same."""

from __future__ import annotations

from pathlib import Path

from recursa.evals.cache import ResponseCache
from recursa.lm import Completion


def test_cached_completions_keep_cache_and_reasoning_counts(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "responses.sqlite")
    sent = Completion(
        text="x",
        input_tokens=5000,
        output_tokens=300,
        model="anthropic/claude-sonnet-4-5",
        finish_reason="end_turn",
        cache_read_tokens=4000,
        cache_write_tokens=900,
        reasoning_tokens=250,
    )
    cache.put("k", sent)
    assert cache.get("k") == sent
    cache.close()
