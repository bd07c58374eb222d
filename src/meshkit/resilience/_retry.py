"""The `Retry` policy: bounded attempts, jittered backoff, deadline- and budget-aware."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, final, overload

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import CircuitOpenError
from meshkit._validate import finite, ge, gt, instance_of, optional, require
from meshkit.resilience._backoff import Backoff, ExponentialBackoff
from meshkit.resilience._budget import RetryBudget
from meshkit.resilience._common import decorate, exception_predicate, valid_name
from meshkit.resilience._deadline import Timeout, current_deadline

if TYPE_CHECKING:
    from collections.abc import Awaitable, Coroutine

__all__ = ["Retry", "RetryEvent", "RetryOutcome"]

_LOG = logging.getLogger("meshkit.resilience")
_P = ParamSpec("_P")
_T = TypeVar("_T")

ExceptionFilter = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]


@final
@attrs.frozen(kw_only=True)
class RetryEvent:
    """What a retry listener is told, once per retry, before the backoff sleep.

    Attributes:
        name: The `Retry`'s name.
        attempt: The attempt that just failed (1 for the first call).
        delay: The seconds about to be slept before attempt `attempt + 1`.
        error: The exception that attempt raised, or `None` when its result was rejected.
        result: The rejected result (when `error` is `None`), else `None`.
    """

    name: str
    attempt: int
    delay: float
    error: Exception | None
    result: object


@final
@attrs.frozen(kw_only=True)
class RetryOutcome(Generic[_T]):
    """How one call through `Retry.call_with_details` went: its result and its history.

    Attributes:
        value: The returned value (`None` when the call failed).
        error: The exception the call finally failed with, or `None` when it returned.
        attempts: Attempts made, including the first (>= 1).
        delay: Total seconds slept between attempts.
        errors: Every exception the attempts raised, in order (the last is `error` on failure).
    """

    value: _T | None
    error: Exception | None
    attempts: int
    delay: float
    errors: tuple[Exception, ...]

    @property
    def succeeded(self) -> bool:
        """Whether the call returned a value (possibly one the result predicate disliked)."""
        return self.error is None

    def unwrap(self) -> _T:
        """Return the value, or raise the final exception unchanged."""
        if self.error is not None:
            raise self.error
        return cast("_T", self.value)


@attrs.define
class _Tally:
    """Per-call history, allocated only by `call_with_details`."""

    attempts: int = 1
    delay: float = 0.0
    errors: list[Exception] = attrs.field(factory=list)


def _hint_from_attribute(subject: object) -> float | None:
    hint = getattr(subject, "retry_after", None)
    if isinstance(hint, int | float) and not isinstance(hint, bool):
        return float(hint)
    return None


def _valid_filter(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    is_kinds = isinstance(value, tuple) and all(
        isinstance(k, type) and issubclass(k, Exception) for k in value
    )
    is_kind = isinstance(value, type) and issubclass(value, Exception)
    ok = is_kinds or is_kind or (callable(value) and not isinstance(value, type | tuple))
    require(ok, attribute.name, value, "must be an Exception type, a tuple of them, or a callable")


def _valid_callable(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    require(callable(value), attribute.name, value, "must be callable")


def _listeners(value: object) -> tuple[Callable[[RetryEvent], object], ...]:
    if callable(value):
        return (cast("Callable[[RetryEvent], object]", value),)
    require(
        isinstance(value, Iterable), "on_retry", value, "must be a callable or an iterable of them"
    )
    return tuple(cast("Iterable[Callable[[RetryEvent], object]]", value))


@final
@attrs.frozen(kw_only=True)
class Retry:
    """Call again after a failure, with jittered exponential backoff, within limits.

    Each attempt that raises an exception accepted by `retry_on` (or returns a value accepted
    by `retry_if_result`) is retried after `backoff.delay(n)` seconds, or after the server's
    `retry_after` hint when that is longer, unless:

    * `max_attempts` have been made;
    * the wait would end at or after the current deadline (see
      [`Timeout`][meshkit.resilience.Timeout]): the retry stops at once instead of sleeping;
    * the shared `budget` has no retry left.

    Then the last exception is re-raised unchanged (same object; a note saying why retrying
    stopped is added with `add_note`), or the last result is returned. `CircuitOpenError`,
    cancellation, `KeyboardInterrupt` and `SystemExit` are never retried. A `Retry` is an
    immutable value, safe to share between tasks and threads.

    Attributes:
        max_attempts: Attempts in all, including the first (>= 1).
        backoff: The waits between attempts.
        attempt_timeout: A timeout for each attempt (`None`: none, and no cancel scope).
        retry_on: Which exceptions to retry: a type, a tuple of types, or a predicate.
        retry_if_result: A predicate on returned values; `True` means "retry".
        retry_after: Reads a server's wait hint from an exception or a rejected result; the
            default reads a numeric `retry_after` attribute. `None` or a negative hint: none.
        budget: A `RetryBudget` to draw each retry from (`None`: unlimited).
        on_retry: Listeners called with a `RetryEvent` before each backoff sleep; one that
            raises is logged on the `meshkit.resilience` logger and otherwise ignored.
        clock: The clock to sleep on.
        name: A name for notes and events.
    """

    max_attempts: int = attrs.field(default=3, validator=[instance_of(int), ge(1)])
    backoff: Backoff = attrs.field(factory=ExponentialBackoff, validator=instance_of(Backoff))
    attempt_timeout: float | None = attrs.field(
        default=None, validator=[optional(gt(0)), optional(finite)]
    )
    retry_on: ExceptionFilter = attrs.field(default=Exception, validator=_valid_filter)
    retry_if_result: Callable[[Any], bool] | None = attrs.field(
        default=None, validator=optional(_valid_callable)
    )
    retry_after: Callable[[Any], float | None] = attrs.field(
        default=_hint_from_attribute, validator=_valid_callable
    )
    budget: RetryBudget | None = attrs.field(
        default=None, validator=optional(instance_of(RetryBudget))
    )
    on_retry: tuple[Callable[[RetryEvent], object], ...] = attrs.field(
        default=(), converter=_listeners
    )
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    name: str = attrs.field(default="retry", validator=valid_name)
    _should_retry: Callable[[Exception], bool] = attrs.field(init=False, eq=False, repr=False)
    _timeout: Timeout | None = attrs.field(init=False, default=None, eq=False, repr=False)

    @_should_retry.default
    def _make_should_retry(self) -> Callable[[Exception], bool]:
        return exception_predicate(self.retry_on)

    def __attrs_post_init__(self) -> None:
        for listener in self.on_retry:
            require(callable(listener), "on_retry", listener, "must hold callables")
        if self.attempt_timeout is not None:
            timeout = Timeout(self.attempt_timeout, clock=self.clock, what="attempt")
            object.__setattr__(self, "_timeout", timeout)  # frozen: set once, when built

    # ------------------------------------------------------------ the decision (pure, sync)

    def _plan(self, attempt: int, error: Exception | None, result: object) -> float | None:
        """Return the wait before the next attempt, or `None` to stop (adding a note why)."""
        if error is not None and (
            isinstance(error, CircuitOpenError) or not self._should_retry(error)
        ):
            return None
        if attempt >= self.max_attempts:
            self._stop(error, attempt, "max_attempts reached")
            return None
        delay = self.backoff.delay(attempt - 1)
        hint = self.retry_after(result if error is None else error)
        if hint is not None and math.isfinite(hint) and hint > delay:
            delay = hint
        deadline = current_deadline()
        if deadline is not None and delay >= deadline.remaining():
            self._stop(error, attempt, f"a {delay:.3f}s backoff would pass the deadline")
            return None
        if self.budget is not None and not self.budget.try_withdraw():
            self._stop(error, attempt, "the retry budget is spent")
            return None
        if self.on_retry:
            event = RetryEvent(
                name=self.name, attempt=attempt, delay=delay, error=error, result=result
            )
            for listener in self.on_retry:
                try:
                    listener(event)
                except Exception:  # noqa: BLE001 - observing a retry must not change its outcome
                    _LOG.exception("retry %r: on_retry listener %r failed", self.name, listener)
        return delay

    def _stop(self, error: Exception | None, attempt: int, why: str) -> None:
        if error is not None:
            error.add_note(f"{self.name}: gave up after {attempt} attempt(s): {why}")

    def _after_error(self, tally: _Tally | None, attempt: int, error: Exception) -> float | None:
        if tally is not None:
            tally.errors.append(error)
        return _count(tally, self._plan(attempt, error, None))

    def _after_result(self, tally: _Tally | None, attempt: int, result: object) -> float | None:
        return _count(tally, self._plan(attempt, None, result))

    def _reject(self, result: object) -> bool:
        return self.retry_if_result is not None and self.retry_if_result(result)

    # ------------------------------------------------------------ async

    async def call(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Await `fn(*args, **kwargs)`, retrying as configured; return its result.

        Raises:
            Exception: The last attempt's exception, unchanged, once retrying stops.
        """
        return await self._run(None, fn, *args, **kwargs)

    async def call_with_details(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> RetryOutcome[_T]:
        """Like `call`, but return a `RetryOutcome` instead of raising the final exception.

        Cancellation and other `BaseException`s still propagate.
        """
        tally = _Tally()
        try:
            value = await self._run(tally, fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported in the outcome, not swallowed
            return _outcome(tally, None, exc)
        return _outcome(tally, value, None)

    async def _run(
        self,
        tally: _Tally | None,
        fn: Callable[_P, Awaitable[_T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        if self.budget is not None:
            self.budget.deposit()
        attempt = 1
        while True:
            try:
                if self._timeout is None:
                    result = await fn(*args, **kwargs)
                else:
                    result = await self._timeout.call(fn, *args, **kwargs)
            except Exception as exc:
                delay = self._after_error(tally, attempt, exc)
                if delay is None:
                    raise
            else:
                if not self._reject(result):
                    return result
                delay = self._after_result(tally, attempt, result)
                if delay is None:
                    return result
            await self.clock.sleep(delay)
            attempt += 1

    # ------------------------------------------------------------ sync

    def call_sync(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call `fn(*args, **kwargs)` from sync code, retrying as configured.

        Waits with `clock.sleep_sync`; `attempt_timeout` uses `Timeout.call_sync` (which cannot
        interrupt a blocking call, only reject an attempt that overran).

        Raises:
            Exception: The last attempt's exception, unchanged, once retrying stops.
        """
        return self._run_sync(None, fn, *args, **kwargs)

    def call_sync_with_details(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> RetryOutcome[_T]:
        """Like `call_sync`, but return a `RetryOutcome` instead of raising."""
        tally = _Tally()
        try:
            value = self._run_sync(tally, fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported in the outcome, not swallowed
            return _outcome(tally, None, exc)
        return _outcome(tally, value, None)

    def _run_sync(
        self, tally: _Tally | None, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        if self.budget is not None:
            self.budget.deposit()
        attempt = 1
        while True:
            try:
                if self._timeout is None:
                    result = fn(*args, **kwargs)
                else:
                    result = self._timeout.call_sync(fn, *args, **kwargs)
            except Exception as exc:
                delay = self._after_error(tally, attempt, exc)
                if delay is None:
                    raise
            else:
                if not self._reject(result):
                    return result
                delay = self._after_result(tally, attempt, result)
                if delay is None:
                    return result
            self.clock.sleep_sync(delay)
            attempt += 1

    # ------------------------------------------------------------ decorator

    @overload
    def __call__(
        self, fn: Callable[_P, Coroutine[Any, Any, _T]]
    ) -> Callable[_P, Coroutine[Any, Any, _T]]: ...

    @overload
    def __call__(self, fn: Callable[_P, _T]) -> Callable[_P, _T]: ...

    def __call__(self, fn: Callable[_P, Any]) -> Callable[_P, Any]:
        """Decorate `fn` (a coroutine function or a plain function) to retry as configured."""
        return decorate(self.call, self.call_sync, fn)


def _count(tally: _Tally | None, delay: float | None) -> float | None:
    if tally is not None and delay is not None:
        tally.attempts += 1
        tally.delay += delay
    return delay


def _outcome(tally: _Tally, value: _T | None, error: Exception | None) -> RetryOutcome[_T]:
    return RetryOutcome(
        value=value,
        error=error,
        attempts=tally.attempts,
        delay=tally.delay,
        errors=tuple(tally.errors),
    )
