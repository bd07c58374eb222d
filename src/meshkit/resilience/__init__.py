"""Resilience policies: circuit breaker, retry, timeouts and deadlines, bulkhead, rate limiter."""

from __future__ import annotations

from meshkit._public import publish as _publish
from meshkit.resilience._backoff import Backoff, ExponentialBackoff
from meshkit.resilience._breaker import CircuitBreaker
from meshkit.resilience._breaker_config import (
    CircuitBreakerConfig,
    CountWindow,
    ExponentialOpenDuration,
    FixedOpenDuration,
    TimeWindow,
)
from meshkit.resilience._breaker_core import CircuitBreakerStatistics, CircuitState
from meshkit.resilience._breaker_events import (
    CircuitBreakerListener,
    CircuitCallOutcome,
    CircuitCallRecorded,
    CircuitStateChange,
)
from meshkit.resilience._budget import RetryBudget, RetryBudgetStatistics
from meshkit.resilience._bulkhead import Bulkhead, BulkheadStatistics
from meshkit.resilience._deadline import Deadline, Timeout, current_deadline, time_remaining
from meshkit.resilience._pipeline import Pipeline, PipelineOutcome
from meshkit.resilience._ratelimit import RateLimiter, RateLimiterStatistics
from meshkit.resilience._redis_ratelimit import RedisRateLimiter, RedisRateLimiterStatistics
from meshkit.resilience._retry import Retry, RetryEvent, RetryHistory, RetryOutcome

__all__ = [
    "Backoff",
    "Bulkhead",
    "BulkheadStatistics",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerListener",
    "CircuitBreakerStatistics",
    "CircuitCallOutcome",
    "CircuitCallRecorded",
    "CircuitState",
    "CircuitStateChange",
    "CountWindow",
    "Deadline",
    "ExponentialBackoff",
    "ExponentialOpenDuration",
    "FixedOpenDuration",
    "Pipeline",
    "PipelineOutcome",
    "RateLimiter",
    "RateLimiterStatistics",
    "RedisRateLimiter",
    "RedisRateLimiterStatistics",
    "Retry",
    "RetryBudget",
    "RetryBudgetStatistics",
    "RetryEvent",
    "RetryHistory",
    "RetryOutcome",
    "TimeWindow",
    "Timeout",
    "current_deadline",
    "time_remaining",
]

_publish(__name__, globals())
