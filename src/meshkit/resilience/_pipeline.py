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
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, cast, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import BulkheadFullError, ConfigurationError
from meshkit._validate import finite, gt, instance_of, optional, require
from meshkit.resilience._breaker import CircuitBreaker
from meshkit.resilience._bulkhead import Bulkhead
from meshkit.resilience._deadline import Timeout
from meshkit.resilience._retry import Retry, _Tally

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Pipeline", "PipelineOutcome"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Limiter(Protocol):
    """What the pipeline needs of a rate limiter (`RateLimiter`, `RedisRateLimiter`)."""

    async def call(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T: ...

    def call_sync(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T: ...


@final
@attrs.frozen(kw_only=True)
class PipelineOutcome(Generic[_T]):
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

    @property
    def succeeded(self) -> bool:
        """Whether the call returned a value."""
        return self.error is None

    def unwrap(self) -> _T:
        """Return the value, or raise the final exception unchanged."""
        if self.error is not None:
            raise self.error
        return cast("_T", self.value)


def _positive_seconds() -> Any:  # noqa: ANN401 - an attrs validator
    return optional(attrs.validators.and_(gt(0), finite))


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

    timeout: float | None = attrs.field(default=None, validator=_positive_seconds())
    retry: Retry | None = attrs.field(default=None, validator=optional(instance_of(Retry)))
    rate_limiter: _Limiter | None = attrs.field(default=None, validator=_limiter)
    breaker: CircuitBreaker | None = attrs.field(
        default=None, validator=optional(instance_of(CircuitBreaker))
    )
    bulkhead: Bulkhead | None = attrs.field(default=None, validator=optional(instance_of(Bulkhead)))
    attempt_timeout: float | None = attrs.field(default=None, validator=_positive_seconds())
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _total: Timeout | None = attrs.field(init=False)
    _async_chain: tuple[Callable[..., Awaitable[Any]], ...] = attrs.field(init=False)
    _sync_chain: tuple[Callable[..., Any], ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._check_combinations()
        total = (
            None if self.timeout is None else Timeout(self.timeout, clock=self.clock, what="call")
        )
        attempt = None
        if self.attempt_timeout is not None:
            attempt = Timeout(self.attempt_timeout, clock=self.clock, what="attempt")
        inner = (self.retry, self.rate_limiter, self.breaker, self.bulkhead, attempt)
        policies = [p for p in inner if p is not None]
        object.__setattr__(self, "_total", total)
        object.__setattr__(self, "_async_chain", tuple(p.call for p in policies))
        object.__setattr__(self, "_sync_chain", tuple(p.call_sync for p in policies))

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
        chain = self._async_chain
        if self._total is not None:
            return cast("_T", await self._total.call(*chain, fn, *args, **kwargs))  # type: ignore[arg-type]
        if chain:
            return cast("_T", await chain[0](*chain[1:], fn, *args, **kwargs))
        return await fn(*args, **kwargs)

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
        chain = self._sync_chain
        if self._total is not None:
            return cast("_T", self._total.call_sync(*chain, fn, *args, **kwargs))  # type: ignore[arg-type]
        if chain:
            return cast("_T", chain[0](*chain[1:], fn, *args, **kwargs))
        return fn(*args, **kwargs)

    async def call_with_details(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> PipelineOutcome[_T]:
        """Like `call`, but return this call's `PipelineOutcome` instead of raising.

        Cancellation and other `BaseException`s still propagate.
        """
        start = self.clock.now()
        chain: tuple[Callable[..., Awaitable[Any]], ...] = self._async_chain
        tally = None
        if self.retry is not None:
            # The Retry records into this call's own tally, which survives a total timeout
            # ending the call mid-way (a RetryOutcome would be lost with it).
            tally = _Tally()
            chain = (functools.partial(self.retry._run, tally), *chain[1:])  # noqa: SLF001
        try:
            if self._total is not None:
                result = await self._total.call(*chain, fn, *args, **kwargs)  # type: ignore[arg-type]
            elif chain:
                result = await chain[0](*chain[1:], fn, *args, **kwargs)
            else:
                result = await fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported in the outcome, not swallowed
            return self._outcome(start, tally, None, exc)
        return self._outcome(start, tally, result, None)

    def call_sync_with_details(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> PipelineOutcome[_T]:
        """Like `call_sync`, but return this call's `PipelineOutcome` instead of raising.

        `KeyboardInterrupt`, `SystemExit` and other `BaseException`s still propagate.
        """
        start = self.clock.now()
        chain: tuple[Callable[..., Any], ...] = self._sync_chain
        tally = None
        if self.retry is not None:
            tally = _Tally()
            chain = (functools.partial(self.retry._run_sync, tally), *chain[1:])  # noqa: SLF001
        try:
            if self._total is not None:
                result = self._total.call_sync(*chain, fn, *args, **kwargs)  # type: ignore[arg-type]
            elif chain:
                result = chain[0](*chain[1:], fn, *args, **kwargs)
            else:
                result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported in the outcome, not swallowed
            return self._outcome(start, tally, None, exc)
        return self._outcome(start, tally, result, None)

    def _outcome(
        self, start: float, tally: _Tally | None, value: object, error: Exception | None
    ) -> PipelineOutcome[Any]:
        errors = () if tally is None else tuple(tally.errors)
        if error is not None and (not errors or errors[-1] is not error):
            errors = (*errors, error)  # ended by something the Retry did not see, or no Retry
        return PipelineOutcome(
            value=value,
            error=error,
            attempts=1 if tally is None else tally.attempts,
            delay=0.0 if tally is None else tally.delay,
            errors=errors,
            elapsed=self.clock.now() - start,
        )
