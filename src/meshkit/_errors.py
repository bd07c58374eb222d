"""The meshkit exception tree.

Every error meshkit raises on purpose derives from `MeshkitError`, one family per pattern.
Foreign errors (sqlite3's, psycopg's, redis') are translated where they enter and chained
with `from`, so callers catch meshkit's types only.

```text
MeshkitError
├── ConfigurationError (also ValueError)      a config or argument is invalid
├── ResilienceError
│   ├── CircuitOpenError                      the breaker rejects the call
│   ├── BulkheadFullError                     no concurrency slot nor queue place
│   ├── RateLimitExceededError                no token available
│   ├── RateLimiterUnavailableError           the shared limiter's store failed
│   └── DeadlineExceededError (also TimeoutError)
├── BalancingError
│   └── NoAvailableEndpointError              nothing to pick from
├── EventSourcingError
│   ├── VersionConflictError                  optimistic concurrency lost a race
│   ├── DuplicateEventIdError                 an event id is already stored elsewhere
│   ├── StreamNotFoundError                   a stream that must exist does not
│   ├── UnhandledEventError                   an aggregate has no `apply` for an event
│   ├── PublishError                          an outbox publisher could not send an event
│   ├── EventStoreUnavailableError            the database behind a store failed (retry)
│   ├── EventStoreCorruptError                the database file is damaged (no retry)
│   ├── EventDecodeError                      a stored event cannot be read back
│   │   └── UnknownEventTypeError             ... because its type is not registered
│   └── LeaseLostError                        a subscription runner's lease was taken over
├── SagaError
│   ├── SagaNotFoundError                     no saga has that id
│   ├── SagaAlreadyExistsError                a saga with that id was already started
│   ├── SagaStateError                        the saga is not in a state that allows it
│   └── SagaOwnershipLostError                another orchestrator now drives the saga
├── MessagingError
│   └── BusUnavailableError                   a message bus (NATS, Redis) failed
├── DiscoveryError                            a registry (Consul) call failed
│   ├── RegistryUnavailableError              agent unreachable, timed out, answered 429/5xx
│   ├── RegistryAccessDeniedError             the ACL token was refused (401/403)
│   ├── RegistryRequestError                  the agent rejected the request (other 4xx)
│   └── RegistryNotFoundError                 the agent does not know the service or check
└── GrpcError
    ├── RpcStatusError                        a gRPC call ended with a non-OK status
    ├── PermissionDeniedError                 an AuthorizationPolicy denied the call
    ├── IdempotencyConflictError              a call with the same key is still running
    └── IdempotencyStoreError                 the idempotency store's database failed
```
"""

from __future__ import annotations

__all__ = [
    "BalancingError",
    "BulkheadFullError",
    "BusUnavailableError",
    "CircuitOpenError",
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
    "UnhandledEventError",
    "UnknownEventTypeError",
    "VersionConflictError",
]


class MeshkitError(Exception):
    """The root of every error meshkit raises on purpose."""


class ConfigurationError(MeshkitError, ValueError):
    """A configuration value or argument is invalid.

    Attributes:
        field: The name of the offending field or argument.
        value: The value that was rejected.
        reason: Why it was rejected.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field}={_shown(value)}: {reason}")


def _shown(value: object, limit: int = 300) -> str:
    """Return `repr(value)` cut to `limit` characters; a value too deep to show is named.

    A rejected payload may be megabytes long or nested 100,000 deep: its message must not
    be either, nor raise while the error is being built (an int of over 4,300 digits makes
    repr raise ValueError; a caller's object may have a repr that raises anything).
    """
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    except Exception:  # noqa: BLE001 - the rejection being reported matters, not this
        return f"<{type(value).__name__} that cannot be shown>"
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} characters)"


# ---------------------------------------------------------------- resilience


class ResilienceError(MeshkitError):
    """A resilience policy rejected or abandoned a call."""


class CircuitOpenError(ResilienceError):
    """The circuit breaker is not admitting calls.

    Attributes:
        name: The breaker's name.
        retry_after: Seconds until the breaker may admit a trial call again (0 when unknown,
            for example while forced open).
    """

    # An open breaker raises this on every rejected call, so it is the one error whose cost
    # matters: the attributes live in `args` (set by the C constructor, which the breaker
    # calls directly) and the message is formatted only when shown. It also pickles.

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(name, retry_after)

    @property
    def name(self) -> str:
        """The breaker's name."""
        name: str = self.args[0]
        return name

    @property
    def retry_after(self) -> float:
        """Seconds until the breaker may admit a trial call again."""
        retry_after: float = self.args[1]
        return retry_after

    def __str__(self) -> str:
        return f"circuit {self.name!r} is open; retry after {self.retry_after:.3f}s"


class BulkheadFullError(ResilienceError):
    """The bulkhead has no free concurrency slot and no free queue place.

    Also raised when a queued call waited `max_wait` seconds without getting a slot.

    Attributes:
        name: The bulkhead's name.
        max_concurrent: Its concurrency limit.
        max_queued: Its queue limit.
        waited: Seconds the call waited in the queue before giving up (0 when rejected at
            once because the queue was full too).
    """

    def __init__(
        self, name: str, max_concurrent: int, max_queued: int, *, waited: float = 0.0
    ) -> None:
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.waited = waited
        gave_up = f"; gave up after waiting {waited:.3f}s" if waited > 0 else ""
        super().__init__(
            f"bulkhead {name!r} is full ({max_concurrent} running, {max_queued} queued){gave_up}"
        )


class RateLimitExceededError(ResilienceError):
    """The rate limiter has no token for this call.

    Attributes:
        name: The limiter's name.
        retry_after: Seconds until enough tokens will have accrued.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"rate limit {name!r} exceeded; retry after {retry_after:.3f}s")


class RateLimiterUnavailableError(ResilienceError):
    """A shared rate limiter could not reach its store (Redis), and it fails closed.

    Attributes:
        name: The limiter's name.
        reason: What went wrong (the store's own error, which is chained as `__cause__`).
    """

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"rate limiter {name!r} is unavailable: {reason}")


class DeadlineExceededError(ResilienceError, TimeoutError):
    """A call did not finish before its timeout or its caller's deadline.

    Attributes:
        timeout: The budget in seconds that was exceeded.
    """

    def __init__(self, timeout: float, what: str = "call") -> None:
        self.timeout = timeout
        super().__init__(f"{what} exceeded its deadline of {timeout:.3f}s")


# ---------------------------------------------------------------- balancing


class BalancingError(MeshkitError):
    """A load balancer could not pick an endpoint."""


class NoAvailableEndpointError(BalancingError):
    """There is no endpoint to pick: none configured, or all ejected.

    Attributes:
        balancer: A short description of the balancer (its class name).
        reason: Why nothing is available.
    """

    def __init__(self, balancer: str, reason: str = "no endpoints") -> None:
        self.balancer = balancer
        self.reason = reason
        super().__init__(f"{balancer}: no available endpoint ({reason})")


# ---------------------------------------------------------------- event sourcing


class EventSourcingError(MeshkitError):
    """An event store or aggregate operation failed."""


class VersionConflictError(EventSourcingError):
    """An append expected a stream version that is no longer current.

    Attributes:
        stream_id: The stream written to.
        expected_version: The version the writer expected.
        actual_version: The version the stream is at.
    """

    def __init__(self, stream_id: str, expected_version: int, actual_version: int) -> None:
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"stream {stream_id!r}: expected version {expected_version}, "
            f"but it is at {actual_version}"
        )


class StreamNotFoundError(EventSourcingError):
    """A stream that must exist has no events.

    Attributes:
        stream_id: The stream looked up.
    """

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id!r} not found")


class EventStoreUnavailableError(EventSourcingError):
    """The database behind an event store failed (unreachable, locked, I/O error, ...).

    The driver's own exception is chained as `__cause__`. Whether a failed write was
    committed may be unknown; retrying an append with the same event ids is safe
    (idempotent append).

    Attributes:
        backend: The store's backend (`"sqlite"`, `"postgres"`).
        operation: What the store was doing (`"append"`, `"read_all"`, ...).
        reason: The driver's message.
    """

    def __init__(self, backend: str, operation: str, reason: str) -> None:
        self.backend = backend
        self.operation = operation
        self.reason = reason
        super().__init__(f"{backend} event store failed during {operation}: {reason}")


class UnhandledEventError(EventSourcingError):
    """An aggregate was given an event class it has no `@applies` method for.

    Attributes:
        aggregate_type: The aggregate's class name.
        event_type: The event's class name.
    """

    def __init__(self, aggregate_type: str, event_type: str) -> None:
        self.aggregate_type = aggregate_type
        self.event_type = event_type
        super().__init__(f"{aggregate_type} has no @applies method for {event_type}")


class PublishError(EventSourcingError):
    """A publisher (an outbox relay's message bus) could not send an event.

    Attributes:
        destination: Where the event was going (e.g. a Redis stream key).
        event_id: The event's id.
        reason: What went wrong.
    """

    def __init__(self, destination: str, event_id: object, reason: str) -> None:
        self.destination = destination
        self.event_id = event_id
        self.reason = reason
        super().__init__(f"cannot publish event {event_id} to {destination!r}: {reason}")


class EventDecodeError(EventSourcingError):
    """A stored event cannot be turned back into an event object.

    Attributes:
        stream_id: The event's stream.
        version: The event's version in its stream (the stored text, if that is corrupt).
        event_type: The stored type name.
        reason: What went wrong.
    """

    def __init__(self, stream_id: str, version: int | str, event_type: str, reason: str) -> None:
        self.stream_id = stream_id
        self.version = version
        self.event_type = event_type
        self.reason = reason
        super().__init__(
            f"cannot decode event {event_type!r} at {stream_id!r} version {version}: {reason}"
        )


class UnknownEventTypeError(EventDecodeError):
    """A stored event's type name is not registered with the decoder."""

    def __init__(self, stream_id: str, version: int, event_type: str) -> None:
        super().__init__(stream_id, version, event_type, "unknown event type")


# ---------------------------------------------------------------- discovery


class DiscoveryError(MeshkitError):
    """A call to a service registry (a Consul agent) failed.

    The client library's own exception is chained as `__cause__`.

    Attributes:
        agent: The agent's address (`http://127.0.0.1:8500`), or the registry's name.
        path: The HTTP path that failed (`/v1/health/service/orders`).
        reason: What went wrong (the agent's answer or the transport's message).
    """

    def __init__(self, agent: str, path: str, reason: str) -> None:
        self.agent = agent
        self.path = path
        self.reason = reason
        super().__init__(f"{agent} {path}: {reason}")


class RegistryUnavailableError(DiscoveryError):
    """The agent could not be reached, timed out, or answered 429 (busy) or 5xx."""


class RegistryAccessDeniedError(DiscoveryError):
    """The agent refused the ACL token (HTTP 401 or 403)."""


class RegistryRequestError(DiscoveryError):
    """The agent rejected the request as invalid (a 4xx other than 401, 403, 404 and 429)."""


class RegistryNotFoundError(DiscoveryError):
    """The agent does not know the service or check (HTTP 404), e.g. after it restarted."""


# ---------------------------------------------------------------- subscription leases


class LeaseLostError(EventSourcingError):
    """A subscription runner no longer holds its name's lease: it must not commit progress.

    Raised by a lease store's fence inside the checkpoint transaction, which then rolls back;
    the `Subscription` catches it and stands by.

    Attributes:
        subscription: The subscription name.
        owner: The runner that lost the lease.
        token: The fencing token it held.
    """

    def __init__(self, subscription: str, owner: str, token: int) -> None:
        self.subscription = subscription
        self.owner = owner
        self.token = token
        super().__init__(
            f"subscription {subscription!r}: runner {owner!r} lost its lease (token {token})"
        )


# ---------------------------------------------------------------- saga


class SagaError(MeshkitError):
    """A saga cannot be found, started, resumed or driven as asked."""


class SagaNotFoundError(SagaError):
    """No saga with this id is recorded in the store.

    Attributes:
        saga_id: The unknown id.
    """

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"no saga {saga_id!r} in the store")


class SagaAlreadyExistsError(SagaError):
    """A saga with this id has already been started (ids are never reused).

    Attributes:
        saga_id: The id that is taken.
    """

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"saga {saga_id!r} already exists")


class SagaStateError(SagaError):
    """The saga is not in a state that allows the operation (e.g. resuming one not stuck).

    Attributes:
        saga_id: The saga.
        state: Its current state's name.
        operation: What was asked.
    """

    def __init__(self, saga_id: str, state: str, operation: str) -> None:
        self.saga_id = saga_id
        self.state = state
        self.operation = operation
        super().__init__(f"cannot {operation} saga {saga_id!r}: it is {state}")


class SagaOwnershipLostError(SagaError):
    """Another orchestrator appended to the saga's log first; this one stopped driving it.

    Attributes:
        saga_id: The saga.
        version: The log version this orchestrator expected.
    """

    def __init__(self, saga_id: str, version: int) -> None:
        self.saga_id = saga_id
        self.version = version
        super().__init__(
            f"saga {saga_id!r} is driven by another orchestrator (its log moved past version "
            f"{version})"
        )


# ---------------------------------------------------------------- grpc


class GrpcError(MeshkitError):
    """A gRPC call failed, or a server-side policy of `meshkit.grpc` refused it."""


class RpcStatusError(GrpcError):
    """A gRPC call ended with a status other than OK (and other than DEADLINE_EXCEEDED).

    The client interceptors translate grpcio's `RpcError` into this (DEADLINE_EXCEEDED
    becomes `DeadlineExceededError`); a server interceptor answers it with the same status.

    Attributes:
        code: The status code's name (`"UNAVAILABLE"`, `"NOT_FOUND"`, ...).
        details: The status message sent by the server.
        method: The full method name (`/package.Service/Method`), empty when unknown.
    """

    def __init__(self, code: str, details: str, method: str = "") -> None:
        self.code = code
        self.details = details
        self.method = method
        where = f" {method}" if method else ""
        super().__init__(f"gRPC call{where} failed with {code}: {details}")


class PermissionDeniedError(GrpcError):
    """An authorization policy denied the call (answered as PERMISSION_DENIED).

    Attributes:
        principal: The caller's principal (`cluster.local/ns/x/sa/y`), empty when
            unauthenticated.
        path: The call's path, `/package.Service/Method`.
    """

    def __init__(self, principal: str, path: str) -> None:
        self.principal = principal
        self.path = path
        who = principal or "an unauthenticated caller"
        super().__init__(f"{who} is not allowed to call {path}")


class IdempotencyConflictError(GrpcError):
    """A call carrying an idempotency key is still running (answered as ABORTED).

    Attributes:
        key: The idempotency key.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"a call with idempotency key {key!r} is still in progress")


class IdempotencyStoreError(GrpcError):
    """The database behind an idempotency store failed (its own error is the `__cause__`).

    Attributes:
        backend: `"sqlite"` or `"postgres"`.
        reason: The driver's message.
    """

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"{backend} idempotency store failed: {reason}")


# ---------------------------------------------------------------- messaging


class MessagingError(MeshkitError):
    """A message bus consumer or its adapter failed."""


class BusUnavailableError(MessagingError):
    """A message bus (NATS JetStream, Redis Streams) failed or cannot be reached.

    Attributes:
        bus: Which bus ("nats", "redis").
        operation: What was being done ("fetch", "ack", ...).
        reason: The driver's message.
    """

    def __init__(self, bus: str, operation: str, reason: str) -> None:
        self.bus = bus
        self.operation = operation
        self.reason = reason
        super().__init__(f"{bus} {operation} failed: {reason}")


# ---------------------------------------------------------------- event stores: bad ids, damage


class DuplicateEventIdError(EventSourcingError):
    """An appended event's id is already stored, elsewhere than the retried append's place.

    Event ids are unique across the whole store. This is no lost race: reloading and trying
    again with the same id fails again, so it is not a `VersionConflictError`.

    Attributes:
        event_id: The id already stored.
        stream_id: The stream that holds it.
        appended_to: The stream the failed append wrote to.
    """

    def __init__(self, event_id: object, stream_id: str, appended_to: str) -> None:
        self.event_id = event_id
        self.stream_id = stream_id
        self.appended_to = appended_to
        super().__init__(
            f"cannot append to stream {appended_to!r}: event id {event_id} is already "
            f"stored in stream {stream_id!r}"
        )


class EventStoreCorruptError(EventSourcingError):
    """The database file behind an event store is damaged (or is not a database at all).

    Unlike `EventStoreUnavailableError`, retrying does not help: restore the file from a
    backup. The driver's own exception is chained as `__cause__`.

    Attributes:
        backend: The store's backend (`"sqlite"`, `"postgres"`).
        operation: What the store was doing.
        reason: The driver's message.
    """

    def __init__(self, backend: str, operation: str, reason: str) -> None:
        self.backend = backend
        self.operation = operation
        self.reason = reason
        super().__init__(f"{backend} event store is damaged ({operation}): {reason}")
