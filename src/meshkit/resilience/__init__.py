"""Resilience policies: circuit breaker, retry, timeouts and deadlines, bulkhead, rate limiter."""

from __future__ import annotations

__all__: list[str] = []
