"""Status codes, and the one table that maps meshkit errors to them and back.

The table is pure (no grpcio): the server interceptors answer an exception with
`status_for(exc)`, the client interceptors raise `error_for(code, details)`. Both directions
live here so that a status survives a hop unchanged (`ABORTED` stays `ABORTED`).
"""

from __future__ import annotations

import enum

from meshkit._errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    IdempotencyConflictError,
    NoAvailableEndpointError,
    PermissionDeniedError,
    RateLimitExceededError,
    RpcStatusError,
    StreamNotFoundError,
    VersionConflictError,
)

__all__ = ["INTERNAL_DETAILS", "SERVER_FAILURES", "Code", "error_for", "status_for"]


class Code(enum.IntEnum):
    """The gRPC status codes, with grpcio's names and values (`grpc.StatusCode[code.name]`)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


INTERNAL_DETAILS = "internal error"
"""What an unexpected exception's caller is told: never the exception's own text."""

SERVER_FAILURES = frozenset(
    {Code.UNKNOWN, Code.INTERNAL, Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.DATA_LOSS}
)
"""The codes that count against an endpoint (breaker, outlier ejection): Envoy's 5xx family."""

# Checked in order: the first matching class wins (subclasses before their bases).
_STATUS_OF: tuple[tuple[type[Exception], Code], ...] = (
    (DeadlineExceededError, Code.DEADLINE_EXCEEDED),
    (CircuitOpenError, Code.UNAVAILABLE),
    (NoAvailableEndpointError, Code.UNAVAILABLE),
    (RateLimitExceededError, Code.RESOURCE_EXHAUSTED),
    (BulkheadFullError, Code.RESOURCE_EXHAUSTED),
    (VersionConflictError, Code.ABORTED),
    (IdempotencyConflictError, Code.ABORTED),
    (StreamNotFoundError, Code.NOT_FOUND),
    (ConfigurationError, Code.INVALID_ARGUMENT),
    (PermissionDeniedError, Code.PERMISSION_DENIED),
)


def status_for(exc: Exception) -> tuple[Code, str]:
    """Return the status a server answers `exc` with, and its details text.

    A known meshkit error keeps its message; anything else is INTERNAL with a fixed text, so
    an unexpected exception never leaks its message (paths, SQL, secrets) to the caller.
    """
    if isinstance(exc, RpcStatusError):
        return _code_named(exc.code), exc.details
    for kind, code in _STATUS_OF:
        if isinstance(exc, kind):
            return code, str(exc)
    return Code.INTERNAL, INTERNAL_DETAILS


def error_for(code: Code, details: str, method: str = "") -> Exception:
    """Return the meshkit error a client raises for a non-OK status."""
    if code is Code.DEADLINE_EXCEEDED:
        error = DeadlineExceededError(0.0, method or "call")
        error.add_note(f"server status DEADLINE_EXCEEDED: {details}")
        return error
    return RpcStatusError(code.name, details, method)


def _code_named(name: str) -> Code:
    # An error that names no status, or OK (not a failure: grpc.aio's abort() with OK leaves
    # the call hanging), is answered UNKNOWN.
    code = Code.__members__.get(name, Code.UNKNOWN)
    return Code.UNKNOWN if code is Code.OK else code
