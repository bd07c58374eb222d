"""The client side's one definition: what every outgoing call goes through, whatever its kind.

`ClientPolicy.plan()` is called once per call and returns a `CallPlan`: the call's deadline
(the caller's timeout, the route timeout and the enclosing meshkit deadline minus a margin,
whichever ends first), its metadata (correlation id, child `traceparent`, idempotency key) and
how to run attempts (`run_sync` / `run`): each attempt goes through the breaker, and failed
attempts through meshkit's `Retry`, which draws retries from the budget and never retries an
open breaker. An attempt ends at the first response: for a streaming response that means a
failure after the first message is never retried, as in Envoy.

The adapters (`_sync_client`, `_aio_client`) are thin: they call the continuation for one
attempt and report its status with `CallPlan.failure()`.
"""

from __future__ import annotations

import functools
import re
import uuid
from typing import TYPE_CHECKING, Any, TypeVar, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import DeadlineExceededError, RpcStatusError
from meshkit._validate import finite, ge, gt, instance_of, optional
from meshkit.grpc._checks import callable_or_none
from meshkit.grpc._codes import SERVER_FAILURES, Code, error_for, status_for
from meshkit.grpc._metrics import CallObserver
from meshkit.grpc._propagation import (
    CORRELATION_HEADER,
    CORRELATION_ID,
    IDEMPOTENCY_HEADER,
    TRACE,
    TRACEPARENT_HEADER,
    TraceContext,
    check_metadata,
    new_correlation_id,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

from meshkit.resilience import (
    Backoff,
    CircuitBreaker,
    ExponentialBackoff,
    Retry,
    RetryBudget,
    current_deadline,
)

__all__ = ["CallPlan", "ClientPolicy", "Failed", "RetryPolicy", "is_mutating"]

_T = TypeVar("_T")

Metadata = tuple[tuple[str, str | bytes], ...]

# A read verb followed by the start of the next word: `GetOrder`, `List`, not `Getaway`.
_READ_ONLY = re.compile(r"(Get|List|Watch|Check|Describe|Search|Read|Query)([A-Z0-9_]|$)")


@functools.lru_cache(maxsize=1024)  # asked once per call; a service has few methods
def is_mutating(method: str) -> bool:
    """Return whether a method probably changes state: its name does not start with a read verb.

    The default of `ClientPolicy.idempotency_keys`: `/shop.Orders/CreateOrder` gets a key,
    `/shop.Orders/GetOrder` does not.
    """
    name = method.rsplit("/", 1)[-1]
    return _READ_ONLY.match(name) is None


MAX_GRPC_TIMEOUT = 1e8
"""The longest `timeout` sent to grpc (about three years): grpcio fails a call at once,
with DEADLINE_EXCEEDED, when now + timeout overflows its nanosecond clock (~7e9 s)."""


class PerTryTimeoutError(DeadlineExceededError):
    """One attempt ran out of its `per_try_timeout` while the call still had time: retried."""


def _codes(value: object) -> frozenset[Code]:
    items = value if isinstance(value, list | tuple | set | frozenset) else (value,)
    return frozenset(_code(item) for item in items)


def _code(item: object) -> Code:
    if isinstance(item, Code):
        return item
    name = item.upper().replace("-", "_") if isinstance(item, str) else None
    if name is None or name not in Code.__members__:
        from meshkit._errors import ConfigurationError  # noqa: PLC0415 - only on bad input

        raise ConfigurationError("retry_on", item, "must be gRPC status codes")
    return Code[name]


@final
@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Istio's `HTTPRetry` for gRPC: how many retries, each bounded how, on which statuses.

    Attributes:
        attempts: Retries after the first attempt (Istio counts the same way), >= 0.
        per_try_timeout: Seconds per attempt (None: each attempt may use the whole call's
            deadline). An attempt that runs out of it while the call still has time is retried.
        retry_on: The statuses that are retried; names as Istio writes them
            (`"unavailable"`, `"resource-exhausted"`) or `Code` values.
        backoff: The waits between attempts (Envoy's default: 25 ms base, 250 ms cap).
    """

    attempts: int = attrs.field(default=2, validator=[instance_of(int), ge(0)])
    per_try_timeout: float | None = attrs.field(
        default=None, validator=optional(attrs.validators.and_(gt(0), finite))
    )
    retry_on: frozenset[Code] = attrs.field(
        default=frozenset({Code.UNAVAILABLE, Code.CANCELLED}), converter=_codes
    )
    backoff: Backoff = attrs.field(
        factory=lambda: ExponentialBackoff(base=0.025, cap=0.25), validator=instance_of(Backoff)
    )


@final
@attrs.frozen
class Failed:
    """An attempt's failure that must not count against the endpoint (NOT_FOUND, ...)."""

    error: Exception


@final
@attrs.frozen(kw_only=True)
class CallPlan:
    """One outgoing call: its deadline, its metadata, and how its attempts run.

    Attributes:
        method: The full method name.
        metadata: The outgoing metadata, with meshkit's headers added.
        expires_at: The call's deadline on `clock`, None without one.
        per_try: The per-attempt timeout, None without one.
        retry: The retry policy, None for one attempt.
        breaker: The breaker every attempt goes through, None without one.
        clock: The clock of `expires_at`.
    """

    method: str
    metadata: Metadata
    expires_at: float | None
    per_try: float | None
    retry: Retry | None
    breaker: CircuitBreaker | None
    clock: Clock = attrs.field(eq=False)
    kind: str = "unary"
    observer: CallObserver | None = None

    def time_left(self) -> float | None:
        """Return the seconds left before the call's deadline, None without one."""
        return None if self.expires_at is None else self.expires_at - self.clock.now()

    def expired(self) -> bool:
        """Return whether the call's deadline has passed."""
        left = self.time_left()
        return left is not None and left <= 0

    def attempt_timeout(self) -> float | None:
        """Return the grpc `timeout` of the next attempt.

        Raises:
            DeadlineExceededError: If the call's deadline has passed.
        """
        left = self.time_left()
        if left is not None and left <= 0:
            raise DeadlineExceededError(0.0, self.method)
        limits = [t for t in (left, self.per_try) if t is not None]
        return min(*limits, MAX_GRPC_TIMEOUT) if limits else None

    def failure(self, code: Code, details: str, timeout: float | None) -> Failed:
        """Judge a failed attempt.

        Returns:
            `Failed(error)` when the status says nothing about the endpoint's health.

        Raises:
            RpcStatusError: For a server failure (UNAVAILABLE, INTERNAL, ...), which the
                breaker counts.
            DeadlineExceededError: For DEADLINE_EXCEEDED (a `PerTryTimeoutError` when it was
                the attempt's own timeout and the call still has time).
        """
        per_try = self.per_try
        own_timeout = per_try is not None and timeout == per_try and not self.expired()
        if code is Code.DEADLINE_EXCEEDED and own_timeout:
            raise PerTryTimeoutError(timeout or 0.0, "attempt")
        error = error_for(code, details, self.method)
        if code in SERVER_FAILURES:
            raise error
        return Failed(error)

    def _guard(self, result: _T | Failed) -> _T:
        if isinstance(result, Failed):
            raise result.error
        return result

    def run_sync(self, once: Callable[[float | None], _T | Failed]) -> _T:
        """Run `once(timeout)` through the breaker and the retries; return its result.

        Raises:
            Exception: The last attempt's meshkit error.
        """

        def attempt() -> _T:
            timeout = self.attempt_timeout()
            if self.breaker is None:
                return self._guard(once(timeout))
            return self._guard(self.breaker.call_sync(once, timeout))

        token = self._started()
        try:
            result = attempt() if self.retry is None else self.retry.call_sync(attempt)
        except Exception as exc:
            self._handled(token, exc)
            raise
        self._handled(token, None)
        return result

    def _started(self) -> Any:  # noqa: ANN401
        return (
            None
            if self.observer is None
            else self.observer.started("client", self.kind, self.method)
        )

    def _handled(self, token: Any, error: Exception | None) -> None:  # noqa: ANN401
        if self.observer is not None:
            self.observer.handled(token, Code.OK if error is None else status_for(error)[0])

    async def run(self, once: Callable[[float | None], Awaitable[_T | Failed]]) -> _T:
        """Await `once(timeout)` through the breaker and the retries; return its result.

        Raises:
            Exception: The last attempt's meshkit error.
        """

        async def attempt() -> _T:
            timeout = self.attempt_timeout()
            if self.breaker is None:
                return self._guard(await once(timeout))
            return self._guard(await self.breaker.call(once, timeout))

        token = self._started()
        try:
            result = await attempt() if self.retry is None else await self.retry.call(attempt)
        except Exception as exc:
            self._handled(token, exc)
            raise
        self._handled(token, None)
        return result


def _retryable(codes: frozenset[Code]) -> Callable[[Exception], bool]:
    def retryable(exc: Exception) -> bool:
        if isinstance(exc, PerTryTimeoutError):
            return True
        return isinstance(exc, RpcStatusError) and Code.__members__.get(exc.code) in codes

    return retryable


@final
@attrs.frozen(kw_only=True)
class ClientPolicy:
    """The policies a meshkit client applies to every call, of every kind.

    Install `interceptor()` with `grpc.intercept_channel` (sync) or `aio_interceptors()` as a
    `grpc.aio` channel's `interceptors=`.

    Attributes:
        timeout: A default timeout per call in seconds (Istio's route `timeout`); None: none.
        deadline_margin: Seconds kept back from the enclosing deadline when passing it on,
            for the answer's trip back (>= 0).
        retries: Istio-style retries; None: one attempt.
        budget: The retry budget retries are drawn from (None: unlimited).
        breaker: The circuit breaker attempts go through (None: none).
        idempotency_keys: Which methods get an `idempotency-key` (the same on every retry);
            None: none. By default `is_mutating`.
        propagate: Whether to send the correlation id and `traceparent`.
        observer: Told when calls start and end (a stream's call ends, for it, at its first
            response); None: none.
        clock: The clock deadlines are measured on.
    """

    timeout: float | None = attrs.field(
        default=None, validator=optional(attrs.validators.and_(gt(0), finite))
    )
    deadline_margin: float = attrs.field(default=0.005, validator=[ge(0), finite])
    retries: RetryPolicy | None = attrs.field(
        default=None, validator=optional(instance_of(RetryPolicy))
    )
    budget: RetryBudget | None = attrs.field(
        default=None, validator=optional(instance_of(RetryBudget))
    )
    breaker: CircuitBreaker | None = attrs.field(
        default=None, validator=optional(instance_of(CircuitBreaker))
    )
    idempotency_keys: Callable[[str], bool] | None = attrs.field(
        default=is_mutating, validator=callable_or_none
    )
    propagate: bool = attrs.field(default=True, validator=instance_of(bool))
    observer: CallObserver | None = attrs.field(
        default=None, validator=optional(instance_of(CallObserver))
    )
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _retry: Retry | None = attrs.field(init=False, default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # After the validators: frozen, so set once, here.
        object.__setattr__(self, "_retry", self._make_retry())

    def _make_retry(self) -> Retry | None:
        if self.retries is None or self.retries.attempts == 0:
            return None
        return Retry(
            max_attempts=self.retries.attempts + 1,
            backoff=self.retries.backoff,
            retry_on=_retryable(self.retries.retry_on),
            budget=self.budget,
            clock=self.clock,
            name="grpc-retry",
        )

    def plan(
        self,
        method: str,
        timeout: float | None,
        metadata: Sequence[tuple[str, str | bytes]] | None,
        *,
        replayable: bool = True,
        scope_left: float | None = None,
        kind: str = "unary",
    ) -> CallPlan:
        """Return the plan of one outgoing call.

        Args:
            method: The full method name.
            timeout: The caller's own `timeout=` argument.
            metadata: The caller's metadata.
            replayable: Whether the request can be sent again (a streamed request can only
                when it is a list or tuple); a call that cannot gets one attempt.
            scope_left: Seconds left in the caller's cancel scope (`anyio.fail_after`), if any.
            kind: The call's `grpc_type` for metrics (`unary`, `server_stream`, ...).

        Raises:
            ConfigurationError: If `metadata` holds a key or value gRPC would refuse.
        """
        # The margin is kept back from what encloses the call (the deadline it inherits, the
        # caller's scope), for the answer's trip back to whoever set it; the call's own
        # timeouts are Istio's and the caller's full budget.
        limits = [t for t in (timeout, self.timeout) if t is not None]
        enclosing = [] if scope_left is None else [scope_left]
        deadline = current_deadline()
        if deadline is not None:
            enclosing.append(deadline.remaining())
        if enclosing:
            limits.append(min(enclosing) - self.deadline_margin)
        left = min(limits) if limits else None
        return CallPlan(
            method=method,
            metadata=self._metadata(method, metadata),
            expires_at=None if left is None else self.clock.now() + left,
            per_try=None if self.retries is None else self.retries.per_try_timeout,
            retry=self._retry if replayable else None,
            breaker=self.breaker,
            clock=self.clock,
            kind=kind,
            observer=self.observer,
        )

    def _metadata(self, method: str, given: Sequence[tuple[str, str | bytes]] | None) -> Metadata:
        pairs: list[tuple[str, str | bytes]] = list(given or ())
        check_metadata(pairs)
        keys = {k for k, _ in pairs}
        if self.propagate:
            if CORRELATION_HEADER not in keys:
                pairs.append((CORRELATION_HEADER, CORRELATION_ID.get() or new_correlation_id()))
            if TRACEPARENT_HEADER not in keys:
                parent = TRACE.get()
                trace = TraceContext.new() if parent is None else parent.child()
                pairs.append((TRACEPARENT_HEADER, trace.header()))
        wants_key = self.idempotency_keys is not None and self.idempotency_keys(method)
        if wants_key and IDEMPOTENCY_HEADER not in keys:
            pairs.append((IDEMPOTENCY_HEADER, uuid.uuid4().hex))
        return tuple(pairs)

    def interceptor(self) -> Any:  # noqa: ANN401 - grpcio is optional
        """Return one sync interceptor for all four kinds (for `grpc.intercept_channel`)."""
        from meshkit.grpc._sync_client import SyncClientInterceptor  # noqa: PLC0415 - lazy grpc

        return SyncClientInterceptor(self)

    def aio_interceptors(self) -> list[Any]:
        """Return four `grpc.aio` interceptors, one per call kind (grpc/grpc#31442)."""
        from meshkit.grpc._aio_client import aio_client_interceptors  # noqa: PLC0415 - lazy

        return aio_client_interceptors(self)
