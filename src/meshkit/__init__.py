"""meshkit: a proxyless service mesh for Python.

The stable API is re-exported here; the pattern packages (`meshkit.resilience`,
`meshkit.balancing`, `meshkit.eventsourcing`) hold the rest.
"""

from __future__ import annotations

from meshkit._clock import SYSTEM_CLOCK, Clock, SystemClock
from meshkit._errors import (
    BalancingError,
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    EventDecodeError,
    EventSourcingError,
    EventStoreUnavailableError,
    MeshkitError,
    NoAvailableEndpointError,
    PublishError,
    RateLimitExceededError,
    RateLimiterUnavailableError,
    ResilienceError,
    StreamNotFoundError,
    UnhandledEventError,
    UnknownEventTypeError,
    VersionConflictError,
)

__all__ = [
    "SYSTEM_CLOCK",
    "BalancingError",
    "BulkheadFullError",
    "CircuitOpenError",
    "Clock",
    "ConfigurationError",
    "DeadlineExceededError",
    "EventDecodeError",
    "EventSourcingError",
    "EventStoreUnavailableError",
    "MeshkitError",
    "NoAvailableEndpointError",
    "PublishError",
    "RateLimitExceededError",
    "RateLimiterUnavailableError",
    "ResilienceError",
    "StreamNotFoundError",
    "SystemClock",
    "UnhandledEventError",
    "UnknownEventTypeError",
    "VersionConflictError",
]
