"""`Pipeline`: the resilience policies composed in one documented order.

```text
total timeout -> retry -> rate limiter -> breaker -> bulkhead -> per-attempt timeout -> call
```

- The **total timeout** bounds everything, backoff sleeps included, and publishes its deadline
  so `Retry` never sleeps past it.
- **Retry** sits outside the breaker, so an open breaker (`CircuitOpenError`) ends the call
  at once instead of being retried, and outside the limiter and bulkhead, so every attempt
  takes a token and a slot like any other call.
- The **rate limiter** sits outside the breaker: a local rejection is not the dependency's
  failure and must not trip it.
- The **breaker** sees each attempt; the **bulkhead** inside it is only entered when the
  breaker admits the call, so an open breaker holds no slot.
- The **per-attempt timeout** is innermost: a slow attempt counts as a failure for the breaker
  and is retried, while the total timeout still caps the whole call.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Awaitable, Callable
from typing import (
    Any,
    NamedTuple,
    ParamSpec,
    Protocol,
    TypeVar,
    final,
)

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import BulkheadFullError, ConfigurationError
from meshkit._validate import instance_of, optional, positive_seconds, require
from meshkit.resilience._breaker import CircuitBreaker
from meshkit.resilience._bulkhead import Bulkhead
from meshkit.resilience._common import Outcome
from meshkit.resilience._deadline import Timeout
from meshkit.resilience._retry import Retry, RetryHistory

__all__ = ["Pipeline", "PipelineOutcome"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Limiter(Protocol):
    """What the pipeline needs of a rate limiter (`RateLimiter`, `RedisRateLimiter`)."""

    async def call(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T: ...

    def call_sync(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T: ...


class _Layer(NamedTuple):
    """One policy of the pipeline, by name, with its async and sync faces.

    Each face takes the function it protects first, then that function's arguments; the
    retry layer's faces (`records`) take the call's `RetryHistory` (or `None`) before that.
    """

    name: str
    call: Callable[..., Awaitable[Any]]
    call_sync: Callable[..., Any]
    records: bool = False


_Face = Callable[[_Layer], Callable[..., Any]]
_ASYNC: _Face = operator.attrgetter("call")
_SYNC: _Face = operator.attrgetter("call_sync")


@final
@attrs.frozen(kw_only=True)
class PipelineOutcome(Outcome[_T]):
    """How one call through `Pipeline.call_with_details` went.

    Every call gets its own outcome; nothing is shared between concurrent calls.

    Attributes:
        value: The returned value (`None` when the call failed).
        error: The exception the call finally failed with, or `None`.
        attempts: Attempts made, including the first (also when the total timeout ended the
            call between or during retries).
        delay: Seconds slept between attempts.
        errors: The exceptions of the failed attempts, in order; on failure the last one is
            `error`.
        elapsed: Seconds from the start of the call to its end, on the pipeline's clock.
    """

    value: _T | None
    error: Exception | None
    attempts: int
    delay: float
    errors: tuple[Exception, ...]
    elapsed: float


def _limiter(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    is_limiter = not isinstance(value, type) and all(
        callable(getattr(value, method, None)) for method in ("call", "call_sync")
    )
    require(
        value is None or is_limiter,
        attribute.name,
        value,
        "must be a rate limiter (an object with call and call_sync methods)",
    )


@final
@attrs.frozen(kw_only=True)
class Pipeline:
    """Run calls through timeout, retry, rate limiter, breaker, bulkhead and attempt timeout.

    Every policy is optional; the ones given are applied in the fixed order of the module
    documentation. Without `timeout` and `attempt_timeout` no cancel scope is created at all.
    A `Pipeline` is an immutable value that many tasks and threads may share; each call's
    history comes back from `call_with_details` as its own `PipelineOutcome`.

    Risky combinations are rejected when the pipeline is built: a per-attempt timeout (here
    or in `Retry`) that is not shorter than the total one, two per-attempt timeouts (here and
    in `Retry`), a breaker that would count a full local bulkhead as the dependency's failure,
    and policies reading different clocks.

    Example:
        ```python
        import anyio
        from meshkit.resilience import Bulkhead, CircuitBreaker, Pipeline, Retry

        pipeline = Pipeline(
            timeout=2.0,
            retry=Retry(max_attempts=3),
            breaker=CircuitBreaker(name="inventory"),
            bulkhead=Bulkhead(max_concurrent=10),
            attempt_timeout=0.5,
        )

        async def reserve(sku: str) -> str:
            return f"reserved {sku}"

        assert anyio.run(pipeline.call, reserve, "sku-1") == "reserved sku-1"
        ```

    Attributes:
        timeout: Total seconds for the call, retries and backoff included.
        retry: The retry policy.
        rate_limiter: A `RateLimiter` or `RedisRateLimiter` (anything with `call`/`call_sync`).
        breaker: The circuit breaker.
        bulkhead: The concurrency limit.
        attempt_timeout: Seconds for each attempt.
        clock: The clock of the timeouts; every policy given must use this same clock.
    """

    timeout: float | None = attrs.field(default=None, validator=optional(positive_seconds))
    retry: Retry | None = attrs.field(default=None, validator=optional(instance_of(Retry)))
    rate_limiter: _Limiter | None = attrs.field(default=None, validator=_limiter)
    breaker: CircuitBreaker | None = attrs.field(
        default=None, validator=optional(instance_of(CircuitBreaker))
    )
    bulkhead: Bulkhead | None = attrs.field(default=None, validator=optional(instance_of(Bulkhead)))
    attempt_timeout: float | None = attrs.field(default=None, validator=optional(positive_seconds))
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _layers: tuple[_Layer, ...] = attrs.field(init=False)
    _inner_first: tuple[_Layer, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._check_combinations()
        total = None if self.timeout is None else Timeout(self.timeout, clock=self.clock)
        attempt = None
        if self.attempt_timeout is not None:
            attempt = Timeout(self.attempt_timeout, clock=self.clock, what="attempt")
        policies = {
            "timeout": total,
            "rate_limiter": self.rate_limiter,
            "breaker": self.breaker,
            "bulkhead": self.bulkhead,
            "attempt_timeout": attempt,
        }
        layers = [_Layer(n, p.call, p.call_sync) for n, p in policies.items() if p is not None]
        if (retry := self.retry) is not None:  # inside the total timeout, outside the rest
            faces = (retry.call_recording, retry.call_sync_recording)
            layers.insert(0 if total is None else 1, _Layer("retry", *faces, records=True))
        object.__setattr__(self, "_layers", tuple(layers))  # frozen: set once, when built
        object.__setattr__(self, "_inner_first", tuple(reversed(layers)))

    @property
    def layers(self) -> tuple[str, ...]:
        """The names of the configured policies, outermost first (`("timeout", "retry")`)."""
        return tuple(layer.name for layer in self._layers)

    def _check_combinations(self) -> None:
        self._check_timeouts()
        if self.breaker is not None and self.bulkhead is not None:
            probe = BulkheadFullError(self.bulkhead.name, 1, 0)
            if self.breaker.config.classify()(probe):
                raise ConfigurationError(
                    "breaker",
                    self.breaker.name,
                    "records BulkheadFullError as a failure, so a full local bulkhead would "
                    "trip the breaker; add BulkheadFullError to its ignore_exceptions",
                )
        budget = None if self.retry is None else self.retry.budget
        clocks = {
            "retry": self.retry,
            "retry.budget": budget,
            "rate_limiter": self.rate_limiter,
            "breaker": self.breaker,
            "bulkhead": self.bulkhead,
        }
        for name, policy in clocks.items():
            policy_clock = getattr(policy, "clock", self.clock)
            if policy_clock is not self.clock:
                raise ConfigurationError(
                    f"{name}.clock",
                    policy_clock,
                    f"differs from the pipeline's clock {self.clock!r}; "
                    "deadlines and durations must all be read on one clock",
                )

    def _check_timeouts(self) -> None:
        field, attempt = "attempt_timeout", self.attempt_timeout
        retry_attempt = None if self.retry is None else self.retry.attempt_timeout
        if retry_attempt is not None:
            if attempt is not None:
                raise ConfigurationError(
                    field,
                    attempt,
                    f"the Retry already has attempt_timeout={retry_attempt}; "
                    "set the per-attempt timeout in one place",
                )
            field, attempt = "retry.attempt_timeout", retry_attempt
        if self.timeout is not None and attempt is not None and attempt >= self.timeout:
            raise ConfigurationError(
                field,
                attempt,
                f"must be shorter than timeout={self.timeout}, or it can never fire "
                "before the total timeout and no retry can happen",
            )

    async def call(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Await `fn(*args, **kwargs)` through every configured policy.

        Raises:
            DeadlineExceededError: If the total or the last attempt's timeout expired.
            CircuitOpenError: If the breaker rejected the call.
            BulkheadFullError: If the bulkhead had no slot and no queue place.
            RateLimitExceededError: If the rate limiter had no token.
            RateLimiterUnavailableError: If a `RedisRateLimiter` failing closed could not
                reach Redis.
        """
        result: _T = await self._wrap(_ASYNC, fn, None)(*args, **kwargs)
        return result

    def call_sync(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call `fn(*args, **kwargs)` through every configured policy, from sync code.

        A sync call cannot be interrupted: the timeouts set the deadline for `fn` to read
        (`time_remaining()`) and turn an overrun into `DeadlineExceededError` afterwards.

        Raises:
            DeadlineExceededError: If the total or the last attempt's timeout was overrun.
            CircuitOpenError: If the breaker rejected the call.
            BulkheadFullError: If the bulkhead had no slot and no queue place.
            RateLimitExceededError: If the rate limiter had no token.
            RateLimiterUnavailableError: If a `RedisRateLimiter` failing closed could not
                reach Redis.
        """
        result: _T = self._wrap(_SYNC, fn, None)(*args, **kwargs)
        return result

    async def call_with_details(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> PipelineOutcome[_T]:
        """Like `call`, but return this call's `PipelineOutcome` instead of raising.

        Cancellation and other `BaseException`s still propagate.
        """
        # The Retry writes into this call's own history, which survives a total timeout
        # ending the call mid-way (a RetryOutcome would be lost with it).
        history, start = RetryHistory(), self.clock.now()
        try:
            value = await self._wrap(_ASYNC, fn, history)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported in the outcome, not swallowed
            return self._outcome(start, history, None, exc)
        return self._outcome(start, history, value, None)

    def call_sync_with_details(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> PipelineOutcome[_T]:
        """Like `call_sync`, but return this call's `PipelineOutcome` instead of raising.

        `KeyboardInterrupt`, `SystemExit` and other `BaseException`s still propagate.
        """
        history, start = RetryHistory(), self.clock.now()
        try:
            value = self._wrap(_SYNC, fn, history)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported in the outcome, not swallowed
            return self._outcome(start, history, None, exc)
        return self._outcome(start, history, value, None)

    def _wrap(
        self, face: _Face, fn: Callable[..., Any], history: RetryHistory | None
    ) -> Callable[..., Any]:
        """Return `fn` wrapped in every layer, innermost first, on one face (async or sync).

        Each layer's `call` takes the function it protects as its first argument, so wrapping
        is `partial(layer.call, inner)`; the outermost partial is what the caller invokes.
        """
        for layer in self._inner_first:
            if layer.records:
                fn = functools.partial(face(layer), history, fn)
            else:
                fn = functools.partial(face(layer), fn)
        return fn

    def _outcome(
        self, start: float, history: RetryHistory, value: object, error: Exception | None
    ) -> PipelineOutcome[Any]:
        errors = tuple(history.errors)
        if error is not None and (not errors or errors[-1] is not error):
            errors = (*errors, error)  # ended by something the Retry did not see, or no Retry
        return PipelineOutcome(
            value=value,
            error=error,
            attempts=history.attempts,
            delay=history.delay,
            errors=errors,
            elapsed=self.clock.now() - start,
        )
