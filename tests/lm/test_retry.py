"""The retry policy: what is worth retrying, and how long to wait."""

from __future__ import annotations

import random

import pytest

from recursa.errors import (
    BudgetExceeded,
    ConfigError,
    LMConnectionError,
    LMResponseError,
    LMStatusError,
)
from recursa.lm import RetryPolicy


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (LMStatusError(429, "x"), True),
        (LMStatusError(408, "x"), True),
        (LMStatusError(500, "x"), True),
        (LMStatusError(529, "x"), True),
        (LMStatusError(400, "x"), False),
        (LMStatusError(401, "x"), False),
        (LMStatusError(404, "x"), False),
        (LMConnectionError("x"), True),
        (LMResponseError("x"), False),
        (BudgetExceeded("max_llm_calls", "x"), False),
        (ValueError("x"), False),
    ],
)
def test_is_retryable(exc: BaseException, expected: bool) -> None:
    assert RetryPolicy().is_retryable(exc) is expected


def test_should_retry_stops_after_max_retries() -> None:
    policy = RetryPolicy(max_retries=2)
    exc = LMConnectionError("down")
    assert [policy.should_retry(n, exc) for n in (1, 2, 3)] == [True, True, False]
    assert not policy.should_retry(1, LMStatusError(400, "bad"))


def test_backoff_doubles_without_jitter_and_caps() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0, jitter=0.0)
    exc = LMConnectionError("down")
    assert [policy.delay(n, exc) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(10_000, exc) == 3.0


def test_jitter_stays_within_bounds_and_varies() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0, jitter=0.25, rng=random.Random(7))
    delays = [policy.delay(3, LMStatusError(503, "x")) for _ in range(200)]
    assert all(3.0 <= d <= 5.0 for d in delays)
    assert max(delays) - min(delays) > 0.5


def test_seeded_rng_is_reproducible() -> None:
    a = RetryPolicy(rng=random.Random(1))
    b = RetryPolicy(rng=random.Random(1))
    assert [a.delay(n) for n in range(1, 5)] == [b.delay(n) for n in range(1, 5)]


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0, jitter=0.25)
    assert policy.delay(1, LMStatusError(429, "x", retry_after=7.0)) == 7.0
    assert policy.delay(1, LMStatusError(429, "x", retry_after=0.0)) == 0.0
    assert policy.delay(1, LMStatusError(503, "x", retry_after=3600.0)) == 30.0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": -1}, {"base_delay": -1.0}, {"max_delay": float("inf")}, {"jitter": 2.0}],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_retries = 9  # type: ignore[misc]
