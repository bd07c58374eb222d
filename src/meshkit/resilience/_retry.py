"""The `Retry` policy: bounded attempts, jittered backoff, deadline- and budget-aware."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import CircuitOpenError
from meshkit._validate import (
    ExceptionMatcher,
    count,
    exception_matcher,
    exception_predicate,
    instance_of,
    is_callable,
    non_empty_str,
    optional,
    positive_seconds,
    require,
)
from meshkit.resilience._backoff import Backoff, ExponentialBackoff
from meshkit.resilience._budget import RetryBudget
from meshkit.resilience._common import Decorates, Outcome
from meshkit.resilience._deadline import Timeout, current_deadline

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from types import TracebackType

__all__ = ["Retry", "RetryEvent", "RetryHistory", "RetryOutcome"]

_LOG = logging.getLogger("meshkit.resilience")
_P = ParamSpec("_P")
_T = TypeVar("_T")


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
class RetryOutcome(Outcome[_T]):
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


@final
class RetryHistory:
    """What one call through a `Retry` has done so far, filled in while it runs.

    Give one to `Retry.call_recording` (or `call_sync_recording`) to read a call's attempts
    even when something outside the retry ends it (an enclosing `Timeout`, a cancellation),
    where no `RetryOutcome` would come back; `Pipeline.call_with_details` does this.

    Attributes:
        attempts: Attempts made so far, including the first and one about to start (>= 1).
        delay: Seconds of backoff planned so far.
        errors: The exceptions the attempts raised, in order.
    """

    __slots__ = ("attempts", "delay", "errors")

    def __init__(self) -> None:
        """Start an empty history: one attempt, no delay, no errors."""
        self.attempts = 1
        self.delay = 0.0
        self.errors: list[Exception] = []

    def __repr__(self) -> str:
        """Show the counts (`RetryHistory(attempts=2, delay=0.1, errors=[...])`)."""
        return f"RetryHistory(attempts={self.attempts}, delay={self.delay}, errors={self.errors})"

    def outcome(self, value: _T | None, error: Exception | None) -> RetryOutcome[_T]:
        """Freeze this history, with the call's final value or error, into a `RetryOutcome`."""
        return RetryOutcome(
            value=value,
            error=error,
            attempts=self.attempts,
            delay=self.delay,
            errors=tuple(self.errors),
        )


def _hint_from_attribute(subject: object) -> float | None:
    hint = getattr(subject, "retry_after", None)
    if isinstance(hint, int | float) and not isinstance(hint, bool):
        return float(hint)
    return None


def _listeners(value: object) -> tuple[Callable[[RetryEvent], object], ...]:
    if callable(value):
        return (cast("Callable[[RetryEvent], object]", value),)
    require(
        isinstance(value, Iterable), "on_retry", value, "must be a callable or an iterable of them"
    )
    return tuple(cast("Iterable[Callable[[RetryEvent], object]]", value))


@final
@attrs.frozen(kw_only=True)
class Retry(Decorates):
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
        retry_on: Which exceptions to retry: an `Exception` type, a tuple of them, or a
            predicate.
        retry_if_result: A predicate on returned values; `True` means "retry".
        retry_after: Reads a server's wait hint from an exception or a rejected result; the
            default reads a numeric `retry_after` attribute. `None` or a negative hint: none.
        budget: A `RetryBudget` to draw each retry from (`None`: unlimited).
        on_retry: Listeners called with a `RetryEvent` before each backoff sleep; one that
            raises is logged on the `meshkit.resilience` logger and otherwise ignored.
        clock: The clock to sleep on.
        name: A name for notes and events.
    """

    max_attempts: int = attrs.field(default=3, validator=count())
    backoff: Backoff = attrs.field(factory=ExponentialBackoff, validator=instance_of(Backoff))
    attempt_timeout: float | None = attrs.field(default=None, validator=optional(positive_seconds))
    retry_on: ExceptionMatcher = attrs.field(default=Exception, validator=exception_matcher)
    retry_if_result: Callable[[Any], bool] | None = attrs.field(
        default=None, validator=optional(is_callable)
    )
    retry_after: Callable[[Any], float | None] = attrs.field(
        default=_hint_from_attribute, validator=is_callable
    )
    budget: RetryBudget | None = attrs.field(
        default=None, validator=optional(instance_of(RetryBudget))
    )
    on_retry: tuple[Callable[[RetryEvent], object], ...] = attrs.field(
        default=(), converter=_listeners
    )
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    name: str = attrs.field(default="retry", validator=non_empty_str)
    _should_retry: Callable[[Exception], bool] = attrs.field(init=False, eq=False, repr=False)
    _timeout: Timeout | None = attrs.field(init=False, default=None, eq=False, repr=False)

    @_should_retry.default
    def _make_should_retry(self) -> Callable[[Exception], bool]:
        return exception_predicate(self.retry_on)

    def __attrs_post_init__(self) -> None:
        # Only an `Exception` can be retried: a `BaseException` type here is a mistake.
        kinds = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        catchable = all(not isinstance(k, type) or issubclass(k, Exception) for k in kinds)
        require(catchable, "retry_on", self.retry_on, "must name Exception types only")
        for listener in self.on_retry:
            require(callable(listener), "on_retry", listener, "must hold callables")
        if self.attempt_timeout is not None:
            timeout = Timeout(self.attempt_timeout, clock=self.clock, what="attempt")
            object.__setattr__(self, "_timeout", timeout)  # frozen: set once, when built

    # ------------------------------------------------------------ the decision (pure, sync)

    def plan(self, attempt: int, error: Exception | None, result: object) -> float | None:
        """Decide what follows attempt number `attempt` (1-based) that failed with `error`.

        `error` is `None` when the attempt returned `result` and `retry_if_result` rejected
        it. Return the seconds to sleep before the next attempt, or `None` to stop (then a
        note saying why is added to `error`). A planned retry has been drawn from the budget
        and announced to the `on_retry` listeners. Both faces of `call` drive this method.
        """
        if error is not None and (
            isinstance(error, CircuitOpenError) or not self._should_retry(error)
        ):
            return None
        if attempt >= self.max_attempts:
            return self._stop(error, attempt, "max_attempts reached")
        delay = self.backoff.delay(attempt - 1)
        hint = self.retry_after(result if error is None else error)
        if hint is not None and math.isfinite(hint) and hint > delay:
            delay = hint
        deadline = current_deadline()
        if deadline is not None and delay >= deadline.remaining():
            return self._stop(error, attempt, f"a {delay:.3f}s backoff would pass the deadline")
        if self.budget is not None and not self.budget.try_withdraw():
            return self._stop(error, attempt, "the retry budget is spent")
        if self.on_retry:
            event = RetryEvent(
                name=self.name, attempt=attempt, delay=delay, error=error, result=result
            )
            self._announce(event)
        return delay

    def _stop(self, error: Exception | None, attempt: int, why: str) -> float | None:
        """Note on `error` why retrying stopped; return `None` (stop) for `plan` to pass on."""
        if error is not None:
            error.add_note(f"{self.name}: gave up after {attempt} attempt(s): {why}")
        return None

    def _announce(self, event: RetryEvent) -> None:
        for listener in self.on_retry:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - observing a retry must not change its outcome
                _LOG.exception("retry %r: on_retry listener %r failed", self.name, listener)

    # ------------------------------------------------------------ the two faces

    async def call(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """Await `fn(*args, **kwargs)`, retrying as configured; return its result.

        Raises:
            Exception: The last attempt's exception, unchanged, once retrying stops.
            ConfigurationError: If the backoff's `random` source returns NaN or a non-number.
        """
        return await self.call_recording(None, fn, *args, **kwargs)

    def call_sync(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call `fn(*args, **kwargs)` from sync code, retrying as configured.

        Waits with `clock.sleep_sync`; `attempt_timeout` uses `Timeout.call_sync` (which cannot
        interrupt a blocking call, only reject an attempt that overran).

        Raises:
            Exception: The last attempt's exception, unchanged, once retrying stops.
            ConfigurationError: If the backoff's `random` source returns NaN or a non-number.
        """
        return self.call_sync_recording(None, fn, *args, **kwargs)

    async def call_recording(
        self,
        history: RetryHistory | None,
        fn: Callable[_P, Awaitable[_T]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Like `call`, writing the attempts, delays and errors into `history` as they happen.

        Raises:
            Exception: The last attempt's exception, unchanged, once retrying stops.
            ConfigurationError: If the backoff's `random` source returns NaN or a non-number.
        """
        attempt = fn if self._timeout is None else functools.partial(self._timeout.call, fn)
        run = _Run(self, history)
        while True:
            with run:
                result = await attempt(*args, **kwargs)
                if run.accept(result):
                    return result
            await self.clock.sleep(run.delay)

    def call_sync_recording(
        self,
        history: RetryHistory | None,
        fn: Callable[_P, _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Like `call_sync`, writing the attempts, delays and errors into `history`.

        Raises:
            Exception: As `call_recording`.
        """
        run = _Run(self, history)
        attempt = fn if self._timeout is None else functools.partial(self._timeout.call_sync, fn)
        while True:
            with run:
                result = attempt(*args, **kwargs)
                if run.accept(result):
                    return result
            self.clock.sleep_sync(run.delay)

    async def call_with_details(
        self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> RetryOutcome[_T]:
        """Like `call`, but return a `RetryOutcome` instead of raising the final exception.

        Cancellation and other `BaseException`s still propagate.
        """
        history = RetryHistory()
        try:
            value = await self.call_recording(history, fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported in the outcome, not swallowed
            return history.outcome(None, exc)
        return history.outcome(value, None)

    def call_sync_with_details(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> RetryOutcome[_T]:
        """Like `call_sync`, but return a `RetryOutcome` instead of raising."""
        history = RetryHistory()
        try:
            value = self.call_sync_recording(history, fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported in the outcome, not swallowed
            return history.outcome(None, exc)
        return history.outcome(value, None)


@final
class _Run:
    """One call's retry loop as a step machine; both faces of `Retry` drive it the same way.

    A face runs each attempt inside `with run:`. A result that `accept()`s ends the call; an
    exception that is to be retried is swallowed by `__exit__`; either way `delay` then holds
    the sleep before the next attempt, which only the face performs (awaited or blocking).
    An exception that is not to be retried leaves the `with` unchanged. The decision itself
    is `Retry.plan`.
    """

    __slots__ = ("_attempt", "_history", "_judging", "_retry", "delay")

    def __init__(self, retry: Retry, history: RetryHistory | None) -> None:
        self._retry = retry
        self._history = history
        self._attempt = 1
        self._judging = False
        self.delay = 0.0
        if retry.budget is not None:
            retry.budget.deposit()

    def accept(self, result: object) -> bool:
        """Say whether `result` ends the call; if not, plan the retry (see `delay`).

        An error raised while judging the result (by `retry_if_result`, or by the plan) is
        not the attempt's: it leaves the `with` unchanged, never retried.
        """
        retry = self._retry
        if retry.retry_if_result is None:
            return True
        self._judging = True
        if not retry.retry_if_result(result):
            return True
        delay = retry.plan(self._attempt, None, result)
        self._judging = False
        return not self._next(delay)

    def __enter__(self) -> None:
        """Start an attempt."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Swallow the attempt's exception when it is to be retried."""
        if self._judging or not isinstance(exc, Exception):  # cancellation and its kin too
            return False
        if self._history is not None:
            self._history.errors.append(exc)
        return self._next(self._retry.plan(self._attempt, exc, None))

    def _next(self, delay: float | None) -> bool:
        if delay is None:
            return False
        self._attempt += 1
        self.delay = delay
        if self._history is not None:
            self._history.attempts += 1
            self._history.delay += delay
        return True
