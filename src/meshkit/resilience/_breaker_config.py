"""The circuit breaker's configuration: trip models, open durations, outcome classification.

Everything here is a frozen value validated when it is built, so a bad knob fails at start-up
with a `ConfigurationError` naming the field and the value, never in the middle of a call.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias, final

import attrs

from meshkit._errors import BulkheadFullError, ConfigurationError, RateLimitExceededError
from meshkit._validate import (
    count,
    exception_matcher,
    exception_predicate,
    finite,
    ge,
    gt,
    in_range,
    instance_of,
    is_callable,
    le,
    optional,
    positive_seconds,
    require,
)
from meshkit.resilience._common import (
    MAX_BUCKETS,
    MAX_WINDOW_SIZE,
    MIN_BUCKET_SECONDS,
    draw_unit,
)

if TYPE_CHECKING:
    from meshkit._validate import ExceptionMatcher

__all__ = [
    "CircuitBreakerConfig",
    "CountWindow",
    "ExponentialOpenDuration",
    "FixedOpenDuration",
    "OpenDuration",
    "TimeWindow",
]

OpenDuration: TypeAlias = Callable[[int], float]
"""How long to stay OPEN, given the number of consecutive openings (1 for the first)."""

# Past this exponent every exponential duration is at its maximum anyway (and 2.0**1024
# overflows a float).
_MAX_EXPONENT = 1000


@final
@attrs.frozen(kw_only=True)
class CountWindow:
    """Judge the failure and slow-call rates over the last `size` recorded calls.

    Attributes:
        size: How many of the most recent calls the window holds (1 to 100,000).
        minimum_calls: Calls the window must hold before a rate can open the breaker
            (1 <= minimum_calls <= size).
    """

    size: int = attrs.field(default=100, validator=count(1, MAX_WINDOW_SIZE))
    minimum_calls: int = attrs.field(default=10, validator=count())

    def __attrs_post_init__(self) -> None:
        require(
            self.minimum_calls <= self.size,
            "minimum_calls",
            self.minimum_calls,
            f"must be <= size ({self.size})",
        )


@final
@attrs.frozen(kw_only=True)
class TimeWindow:
    """Judge the failure and slow-call rates over the calls of the last `seconds`.

    Calls are aggregated in `buckets` buckets of `seconds / buckets` each, like Resilience4j's
    time-based window: a call stays in the window while its bucket is one of the newest
    `buckets` buckets, so memory and time per call are constant however busy the breaker is.

    Attributes:
        seconds: The window's length (finite, at least a microsecond per bucket).
        buckets: How many buckets the window is cut into (1 to 10,000); more means finer
            expiry.
        minimum_calls: Calls the window must hold before a rate can open the breaker (>= 1).
    """

    seconds: float = attrs.field(default=60.0, validator=positive_seconds)
    buckets: int = attrs.field(default=60, validator=count(1, MAX_BUCKETS))
    minimum_calls: int = attrs.field(default=10, validator=count())

    def __attrs_post_init__(self) -> None:
        require(
            self.seconds / self.buckets >= MIN_BUCKET_SECONDS,
            "seconds",
            self.seconds,
            f"must be >= buckets * {MIN_BUCKET_SECONDS} s (a bucket of at least a microsecond)",
        )


@final
@attrs.frozen(kw_only=True)
class FixedOpenDuration:
    """Stay OPEN the same number of seconds every time.

    Attributes:
        seconds: The open duration (>= 0, finite).
    """

    seconds: float = attrs.field(default=30.0, validator=[ge(0), finite])

    def __call__(self, openings: int) -> float:  # noqa: ARG002 - the OpenDuration signature
        """Return `seconds`, whatever the number of consecutive openings."""
        return self.seconds


@final
@attrs.frozen(kw_only=True)
class ExponentialOpenDuration:
    """Stay OPEN longer each time the breaker reopens without having closed in between.

    The `n`-th consecutive opening lasts `min(maximum, initial * multiplier ** (n - 1))`,
    scaled by a uniform factor in `[1 - jitter, 1 + jitter]` so that many processes whose
    breakers opened together do not probe the recovering service in lockstep.

    Attributes:
        initial: The first opening's duration (> 0, finite).
        multiplier: The growth factor per reopening (>= 1, finite).
        maximum: The longest duration before jitter (>= initial, finite).
        jitter: The relative spread, in `[0, 1)`; 0 disables it.
        random: A source of floats in `[0, 1)`; inject a fixed one in tests.
    """

    initial: float = attrs.field(default=1.0, validator=positive_seconds)
    multiplier: float = attrs.field(default=2.0, validator=[ge(1), finite])
    maximum: float = attrs.field(default=60.0, validator=positive_seconds)
    jitter: float = attrs.field(default=0.0, validator=in_range(0.0, 0.999_999))
    random: Callable[[], float] = attrs.field(
        default=_random.random, eq=False, repr=False, validator=is_callable
    )

    def __attrs_post_init__(self) -> None:
        require(
            self.maximum >= self.initial,
            "maximum",
            self.maximum,
            f"must be >= initial ({self.initial})",
        )

    def __call__(self, openings: int) -> float:
        """Return the duration of the `openings`-th consecutive opening (1-based).

        Raises:
            ConfigurationError: If `random` returned something other than a number in
                `[0, 1)` (checked at each draw, since it is a callable).
        """
        exponent = min(max(openings - 1, 0), _MAX_EXPONENT)
        try:
            base = min(self.maximum, self.initial * self.multiplier**exponent)
        except OverflowError:
            base = self.maximum
        if self.jitter:
            base *= 1.0 - self.jitter + 2.0 * self.jitter * draw_unit(self.random)
        return base


def _to_open_duration(value: float | OpenDuration) -> OpenDuration:
    """Turn a number of seconds into a `FixedOpenDuration`; keep a callable as it is."""
    if callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError("open_duration", value, "must be seconds or a callable")
    if not (math.isfinite(value) and value >= 0):
        raise ConfigurationError("open_duration", value, "must be finite and >= 0")
    return FixedOpenDuration(seconds=float(value))


LOCAL_REJECTIONS: tuple[type[Exception], ...] = (BulkheadFullError, RateLimitExceededError)
"""The default `ignore_exceptions`: rejections by meshkit's local policies, not the dependency."""


@final
@attrs.frozen(kw_only=True)
class CircuitBreakerConfig:
    """How a circuit breaker decides to open, how long it stays open and how it recovers.

    `CircuitBreakerConfig()` opens after 5 consecutive failures, stays open 30 seconds, then
    lets 1 trial call through (HALF_OPEN): its success closes the breaker, its failure reopens
    it. Add a `window` to trip on a failure *rate* (and, with `slow_call_duration`, on a
    slow-call rate) instead of, or as well as, a run of failures.

    Attributes:
        failure_threshold: Consecutive failures that open the breaker (>= 1), or `None` to
            trip on rates only.
        window: A `CountWindow` or `TimeWindow` over which rates are judged, or `None`.
        failure_rate_threshold: Failure rate in `(0, 1]` at or above which the breaker opens
            (judged over `window` while CLOSED, and over the trial calls in HALF_OPEN).
        slow_call_duration: Seconds after which a call counts as slow (> 0), or `None` to not
            time calls. Needs a `window`.
        slow_call_rate_threshold: Slow-call rate in `(0, 1]` at or above which it opens.
        open_duration: Seconds to stay OPEN, or a callable taking the number of consecutive
            openings (see `FixedOpenDuration`, `ExponentialOpenDuration`).
        half_open_calls: Trial calls admitted in HALF_OPEN (>= 1); the breaker decides once
            all of them have completed.
        half_open_max_wait: Seconds HALF_OPEN may last before the breaker reopens if its
            trials have not all completed (> 0), or `None` to wait for them indefinitely.
        record_exceptions: Exceptions that count as failures; any other exception counts as
            a success (default: every `Exception`).
        ignore_exceptions: Exceptions that count as neither (checked first). By default
            meshkit's own local load shedding, `BulkheadFullError` and
            `RateLimitExceededError`: a call turned away on this side never reached the
            dependency, so it says nothing about the dependency's health.
        record_result: A predicate on the returned value; `True` counts the call as failed.
    """

    failure_threshold: int | None = attrs.field(default=5, validator=optional(count()))
    window: CountWindow | TimeWindow | None = attrs.field(
        default=None, validator=optional(instance_of(CountWindow, TimeWindow))
    )
    failure_rate_threshold: float = attrs.field(default=0.5, validator=[gt(0), le(1)])
    slow_call_duration: float | None = attrs.field(
        default=None, validator=optional(positive_seconds)
    )
    slow_call_rate_threshold: float = attrs.field(default=1.0, validator=[gt(0), le(1)])
    open_duration: OpenDuration = attrs.field(
        default=FixedOpenDuration(), converter=_to_open_duration
    )
    half_open_calls: int = attrs.field(default=1, validator=count())
    half_open_max_wait: float | None = attrs.field(
        default=None, validator=optional(positive_seconds)
    )
    record_exceptions: ExceptionMatcher = attrs.field(
        default=Exception, validator=exception_matcher
    )
    ignore_exceptions: ExceptionMatcher = attrs.field(
        default=LOCAL_REJECTIONS, validator=exception_matcher
    )
    record_result: Callable[[Any], bool] | None = attrs.field(
        default=None, validator=optional(is_callable)
    )

    def __attrs_post_init__(self) -> None:
        require(
            self.failure_threshold is not None or self.window is not None,
            "failure_threshold",
            self.failure_threshold,
            "must be set when there is no window (nothing else could open the breaker)",
        )
        require(
            self.slow_call_duration is None or self.window is not None,
            "slow_call_duration",
            self.slow_call_duration,
            "needs a window to judge the slow-call rate over",
        )

    def classify(self) -> Callable[[Exception], bool | None]:
        """Return a function telling whether an exception is a failure, or `None` if ignored."""
        is_ignored = exception_predicate(self.ignore_exceptions)
        is_failure = exception_predicate(self.record_exceptions)

        def classify(exc: Exception) -> bool | None:
            if is_ignored(exc):
                return None
            return bool(is_failure(exc))  # a predicate may return any truthy value, or None

        return classify
