"""The retry policy against a table of inputs: no clock, no broker."""

from __future__ import annotations

import random

import pytest

from certctl_notify.retry import RetryPolicy

PRODUCTION = RetryPolicy(base_seconds=60, cap_seconds=3600, max_attempts=5)


@pytest.mark.parametrize(
    "failures, retry_after, expected",
    [
        (1, None, 60), (2, None, 120), (3, None, 240), (4, None, 480),  # 1, 2, 4, 8 minutes
        (7, None, 3600), (30, None, 3600),  # capped at an hour
        (1, 300, 300),  # Retry-After longer than the backoff wins
        (3, 10, 240),  # ... but never shortens it
        (1, 86400, 3600),  # ... and never exceeds the cap
        (2, 0, 120),
    ],
)
def test_delay_table(failures, retry_after, expected):
    assert PRODUCTION.delay_for(failures, retry_after) == expected


def test_compressed_schedule_keeps_the_shape():
    policy = RetryPolicy(base_seconds=0.05, cap_seconds=1, max_attempts=5)
    assert [policy.delay_for(n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.4, 0.8]


@pytest.mark.parametrize("failures, exhausted", [(0, False), (4, False), (5, True), (6, True)])
def test_budget_of_five_attempts(failures, exhausted):
    assert PRODUCTION.exhausted(failures) is exhausted


def test_jitter_stays_within_half_to_full_wait_and_respects_retry_after():
    policy = RetryPolicy(base_seconds=60, cap_seconds=3600, max_attempts=5, jitter=True)
    rng = random.Random(7)
    draws = [policy.delay_for(3, rng=rng) for _ in range(200)]
    assert all(120 <= d <= 240 for d in draws)
    assert len(set(draws)) > 100  # actually spread, not a constant
    assert all(policy.delay_for(3, 500, rng=rng) == 500 for _ in range(20))


def test_failures_count_from_one():
    with pytest.raises(ValueError):
        PRODUCTION.delay_for(0)
