"""meshkit: a proxyless service mesh for Python.

Every public name has exactly one import path. The top level holds what spans the areas: the
injected clock and the whole error tree, so `except meshkit.CircuitOpenError` works wherever
the error comes from. Each capability is its own package and the public home of its names:
`meshkit.resilience`, `meshkit.balancing`, `meshkit.eventsourcing` and `meshkit.testing`
(optional dependencies of an area are imported only when one of its classes needs them).
"""

from __future__ import annotations

from meshkit._clock import SYSTEM_CLOCK, Clock, SystemClock
from meshkit._errors import (
    BalancingError,
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    DuplicateEventIdError,
    EventDecodeError,
    EventSourcingError,
    EventStoreCorruptError,
    EventStoreUnavailableError,
    MeshkitError,
    NoAvailableEndpointError,
    PublishError,
    RateLimiterUnavailableError,
    RateLimitExceededError,
    ResilienceError,
    StreamNotFoundError,
    UnhandledEventError,
    UnknownEventTypeError,
    VersionConflictError,
)
from meshkit._public import publish as _publish

__all__ = [
    "SYSTEM_CLOCK",
    "BalancingError",
    "BulkheadFullError",
    "CircuitOpenError",
    "Clock",
    "ConfigurationError",
    "DeadlineExceededError",
    "DuplicateEventIdError",
    "EventDecodeError",
    "EventSourcingError",
    "EventStoreCorruptError",
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

_publish(__name__, globals())
