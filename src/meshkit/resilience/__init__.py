"""Resilience policies: circuit breaker, retry, timeouts and deadlines, bulkhead, rate limiter."""

from __future__ import annotations

from meshkit.resilience._backoff import Backoff, ExponentialBackoff
from meshkit.resilience._budget import RetryBudget, RetryBudgetStatistics
from meshkit.resilience._deadline import Deadline, Timeout, current_deadline, time_remaining
from meshkit.resilience._retry import Retry, RetryEvent, RetryOutcome

__all__ = [
    "Backoff",
    "Deadline",
    "ExponentialBackoff",
    "Retry",
    "RetryBudget",
    "RetryBudgetStatistics",
    "RetryEvent",
    "RetryOutcome",
    "Timeout",
    "current_deadline",
    "time_remaining",
]
