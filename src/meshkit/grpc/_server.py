"""The server side's one definition: what every incoming call goes through, whatever its kind.

`ServerPolicy.admit()` is pure and synchronous: it reads an `IncomingCall` (method, metadata,
mTLS principal, remaining deadline) and either raises the meshkit error the call is refused
with (authorization, rate limit, spent deadline, bad idempotency key) or returns the
`Admission` the handler runs under. `ServerPolicy.failed()` turns any exception into the
status to answer and logs it. The grpcio adapters (`_sync_server`, `_aio_server`) only move
values between grpcio and these two functions.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import math
from typing import TYPE_CHECKING, Any, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import ConfigurationError, DeadlineExceededError, MeshkitError
from meshkit._validate import instance_of, optional
from meshkit.grpc._authz import AuthorizationPolicy, authorize, principal_of
from meshkit.grpc._checks import list_of
from meshkit.grpc._codes import Code, status_for
from meshkit.grpc._idempotency import IdempotencyStore
from meshkit.grpc._metrics import CallObserver
from meshkit.grpc._propagation import (
    CORRELATION_HEADER,
    CORRELATION_ID,
    IDEMPOTENCY_HEADER,
    TRACE,
    TRACEPARENT_HEADER,
    TraceContext,
    check_idempotency_key,
    parse_correlation_id,
)
from meshkit.resilience import RateLimiter, Timeout

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Admission", "IncomingCall", "Memo", "ServerPolicy"]

_LOG = logging.getLogger("meshkit.grpc")

# grpcio reports "no deadline" as None (aio) or as a huge number of seconds (sync).
_NO_DEADLINE = 1e9


@final
@attrs.frozen(kw_only=True)
class IncomingCall:
    """What a server interceptor knows about a call before running its handler.

    Attributes:
        method: The full method name, `/package.Service/Method`.
        metadata: The invocation metadata as `(key, value)` pairs.
        spiffe_id: The mTLS peer's SPIFFE id (`spiffe://...`), None without one.
        time_remaining: Seconds left before the caller's deadline, None without one.
    """

    method: str
    metadata: Sequence[tuple[str, str | bytes]] = ()
    spiffe_id: str | None = None
    time_remaining: float | None = None

    def header(self, key: str) -> str | None:
        """Return the first text value of metadata `key`, or None."""
        for k, v in self.metadata:
            if k == key:
                return v if isinstance(v, str) else None
        return None


@final
@attrs.frozen(kw_only=True)
class Admission:
    """What an admitted call's handler runs under.

    Attributes:
        method: The full method name.
        principal: The caller's Istio principal, None without mTLS.
        correlation_id: The call's correlation id (the caller's, or a new one).
        trace: The call's trace context (a child of the caller's, or a new trace).
        idempotency_key: The caller's idempotency key, if it sent one.
        expires_at: The caller's deadline on `clock`, None without one.
        clock: The clock of `expires_at`.
    """

    method: str
    principal: str | None
    correlation_id: str
    trace: TraceContext
    idempotency_key: str | None
    expires_at: float | None
    clock: Clock = attrs.field(eq=False)

    def timeout(self) -> Timeout | None:
        """Return a `Timeout` for the time left now, None without a deadline.

        Raises:
            DeadlineExceededError: If the deadline has passed.
        """
        if self.expires_at is None:
            return None
        left = self.expires_at - self.clock.now()
        if left <= 0:
            raise DeadlineExceededError(0.0, self.method)
        return Timeout(left, clock=self.clock, what=self.method)

    def enter(self) -> tuple[contextvars.Token[Any], ...]:
        """Publish the correlation id and trace in the current context; return the tokens."""
        return (CORRELATION_ID.set(self.correlation_id), TRACE.set(self.trace))

    @staticmethod
    def leave(tokens: tuple[contextvars.Token[Any], ...]) -> None:
        """Undo `enter()`."""
        correlation, trace = tokens
        TRACE.reset(trace)
        CORRELATION_ID.reset(correlation)

    def context(self) -> contextvars.Context:
        """Return a copy of the current context with the deadline, correlation id and trace set.

        Used by the sync adapter, which runs the handler (and each step of a streaming one)
        in it with `Context.run`.

        Raises:
            DeadlineExceededError: If the deadline has passed.
        """
        timeout = self.timeout()

        def build() -> contextvars.Context:
            self.enter()
            return contextvars.copy_context()

        if timeout is None:
            return contextvars.copy_context().run(build)
        return contextvars.copy_context().run(timeout.call_sync, build)


_NO_FINGERPRINT = bytes(32)


def fingerprint_of(request: object) -> bytes:
    """Return the 32-byte digest a stored answer is tied to (zeros: not comparable).

    A protobuf message is digested in its deterministic serialization, raw bytes as they
    are; a request stream (or any other object) cannot be read before the handler runs, so
    it gets zeros and its key is not checked against the request.
    """
    if isinstance(request, bytes):
        return hashlib.sha256(request).digest()
    serialize = getattr(request, "SerializeToString", None)
    if serialize is None:
        return _NO_FINGERPRINT
    return hashlib.sha256(serialize(deterministic=True)).digest()


@final
@attrs.frozen(kw_only=True)
class Memo:
    """One call's record in an idempotency store (see `meshkit.grpc.IdempotencyStore`).

    The answer is stored behind the request's fingerprint: a key answered for one request
    and sent again with another (a client bug, or a key reused on purpose) is refused with
    INVALID_ARGUMENT instead of being given the first request's answer, as the IETF
    `Idempotency-Key` draft asks.

    Attributes:
        store: The store.
        method: The call's method.
        key: The call's idempotency key.
        fingerprint: The request's `fingerprint_of`.
    """

    store: IdempotencyStore
    method: str
    key: str
    fingerprint: bytes = _NO_FINGERPRINT

    def begin(self) -> bytes | None:
        """Claim the key; return the stored answer if the call was already answered.

        Raises:
            IdempotencyConflictError: If the same call is still running.
            IdempotencyStoreError: If the store failed.
            ConfigurationError: If the key was answered for a different request.
        """
        stored = self.store.begin(self.method, self.key)
        if stored is None:
            return None
        digest, answer = stored[:32], stored[32:]
        if _NO_FINGERPRINT not in (digest, self.fingerprint) and digest != self.fingerprint:
            reason = "was already used with a different request"
            raise ConfigurationError(IDEMPOTENCY_HEADER, self.key, reason)
        return answer

    def complete(self, payload: bytes) -> None:
        """Store the answer (serialized), behind the request's fingerprint.

        Raises:
            IdempotencyStoreError: If the store failed.
        """
        self.store.complete(self.method, self.key, self.fingerprint + payload)

    def abandon(self) -> None:
        """Release the claim of a call that failed.

        Raises:
            IdempotencyStoreError: If the store failed.
        """
        self.store.abandon(self.method, self.key)


@final
@attrs.frozen(kw_only=True)
class ServerPolicy:
    """The policies a meshkit server enforces on every call, of every kind.

    Build one, then install `interceptor()` on a `grpc.server` or `aio_interceptor()` on a
    `grpc.aio.server`.

    Attributes:
        authorization: Istio AuthorizationPolicies, evaluated as Istio does.
        rate_limiter: Admits calls; a call without a token gets RESOURCE_EXHAUSTED.
        idempotency: Where answers to calls with an `idempotency-key` are kept (unary
            responses only): a repeat gets the stored answer, a repeat of a call still
            running gets ABORTED, the key sent with a different request INVALID_ARGUMENT.
        exempt: Method prefixes that skip authorization and rate limiting (by default the
            standard health and reflection services, which probes and tools call).
        observer: Told when calls start and end (`PrometheusObserver`,
            `OpenTelemetryObserver`); None: none.
        clock: The clock deadlines are read on.
        logger: Where refused and failed calls are logged (structured: `extra` fields
            `grpc_method`, `grpc_code`, `correlation_id`).
    """

    authorization: tuple[AuthorizationPolicy, ...] = list_of(AuthorizationPolicy, "authorization")
    rate_limiter: RateLimiter | None = attrs.field(
        default=None, validator=optional(instance_of(RateLimiter))
    )
    idempotency: IdempotencyStore | None = attrs.field(
        default=None, validator=optional(instance_of(IdempotencyStore))
    )
    exempt: tuple[str, ...] = attrs.field(
        default=("/grpc.health.v1.Health/", "/grpc.reflection."),
        converter=tuple,
        validator=attrs.validators.deep_iterable(instance_of(str)),
    )
    observer: CallObserver | None = attrs.field(
        default=None, validator=optional(instance_of(CallObserver))
    )
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    logger: logging.Logger = attrs.field(default=_LOG, validator=instance_of(logging.Logger))

    def admit(self, call: IncomingCall) -> Admission:
        """Decide whether `call` may run; return what its handler runs under.

        Raises:
            PermissionDeniedError: If the authorization policies refuse the call.
            RateLimitExceededError: If the rate limiter has no token.
            ConfigurationError: If the call carries a malformed idempotency key.
            DeadlineExceededError: If the caller's deadline has already passed.
        """
        principal = principal_of(call.spiffe_id)
        if not call.method.startswith(self.exempt):
            authorize(self.authorization, principal, call.method)
            if self.rate_limiter is not None:
                self.rate_limiter.acquire_nowait()
        key = call.header(IDEMPOTENCY_HEADER)
        if key is not None:
            check_idempotency_key(key)
        remaining = call.time_remaining
        if remaining is not None and (math.isnan(remaining) or remaining >= _NO_DEADLINE):
            remaining = None
        parent = TraceContext.parse(call.header(TRACEPARENT_HEADER) or "")
        return Admission(
            method=call.method,
            principal=principal,
            correlation_id=parse_correlation_id(call.header(CORRELATION_HEADER)),
            trace=TraceContext.new() if parent is None else parent.child(),
            idempotency_key=key,
            expires_at=None if remaining is None else self.clock.now() + remaining,
            clock=self.clock,
        )

    def memo(self, admission: Admission, request: object = None) -> Memo | None:
        """Return the idempotency record of an admitted call, None if it has none.

        Args:
            admission: The call's admission.
            request: The call's request (see `fingerprint_of`).
        """
        if self.idempotency is None or admission.idempotency_key is None:
            return None
        return Memo(
            store=self.idempotency,
            method=admission.method,
            key=admission.idempotency_key,
            fingerprint=fingerprint_of(request),
        )

    def failed(self, method: str, exc: Exception) -> tuple[Code, str]:
        """Return the status to answer `exc` with, logging the failure."""
        code, details = status_for(exc)
        extra = {
            "grpc_method": method,
            "grpc_code": code.name,
            "correlation_id": CORRELATION_ID.get(),
        }
        if not isinstance(exc, MeshkitError):
            self.logger.error("%s failed unexpectedly", method, exc_info=exc, extra=extra)
        else:
            self.logger.info("%s answered %s: %s", method, code.name, details, extra=extra)
        return code, details

    def interceptor(self) -> Any:  # noqa: ANN401 - a grpc.ServerInterceptor, grpcio is optional
        """Return a `grpc.ServerInterceptor` enforcing this policy (sync grpcio servers)."""
        from meshkit.grpc._sync_server import SyncServerInterceptor  # noqa: PLC0415 - lazy grpc

        return SyncServerInterceptor(self)

    def aio_interceptor(self) -> Any:  # noqa: ANN401 - a grpc.aio.ServerInterceptor
        """Return a `grpc.aio.ServerInterceptor` enforcing this policy (asyncio servers)."""
        from meshkit.grpc._aio_server import AioServerInterceptor  # noqa: PLC0415 - lazy grpc

        return AioServerInterceptor(self)
