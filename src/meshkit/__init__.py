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
    BusUnavailableError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    DiscoveryError,
    DuplicateEventIdError,
    EventDecodeError,
    EventSourcingError,
    EventStoreCorruptError,
    EventStoreUnavailableError,
    GrpcError,
    IdempotencyConflictError,
    IdempotencyStoreError,
    LeaseLostError,
    MeshkitError,
    MessagingError,
    NoAvailableEndpointError,
    PermissionDeniedError,
    PublishError,
    RateLimiterUnavailableError,
    RateLimitExceededError,
    RegistryAccessDeniedError,
    RegistryNotFoundError,
    RegistryRequestError,
    RegistryUnavailableError,
    ResilienceError,
    RpcStatusError,
    SagaAlreadyExistsError,
    SagaError,
    SagaNotFoundError,
    SagaOwnershipLostError,
    SagaStateError,
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
    "BusUnavailableError",
    "CircuitOpenError",
    "Clock",
    "ConfigurationError",
    "DeadlineExceededError",
    "DiscoveryError",
    "DuplicateEventIdError",
    "EventDecodeError",
    "EventSourcingError",
    "EventStoreCorruptError",
    "EventStoreUnavailableError",
    "GrpcError",
    "IdempotencyConflictError",
    "IdempotencyStoreError",
    "LeaseLostError",
    "MeshkitError",
    "MessagingError",
    "NoAvailableEndpointError",
    "PermissionDeniedError",
    "PublishError",
    "RateLimitExceededError",
    "RateLimiterUnavailableError",
    "RegistryAccessDeniedError",
    "RegistryNotFoundError",
    "RegistryRequestError",
    "RegistryUnavailableError",
    "ResilienceError",
    "RpcStatusError",
    "SagaAlreadyExistsError",
    "SagaError",
    "SagaNotFoundError",
    "SagaOwnershipLostError",
    "SagaStateError",
    "StreamNotFoundError",
    "SystemClock",
    "UnhandledEventError",
    "UnknownEventTypeError",
    "VersionConflictError",
]

_publish(__name__, globals())
