"""RateLimiter: a local token bucket, refilled lazily from the injected clock.

The bucket holds up to `burst` tokens and gains `rate` tokens per second. There is no
background task: each operation first adds what accrued since the last one (`clock.now()`).
A caller that may wait *reserves* its tokens at once, driving the bucket into debt, then
sleeps until the debt is paid; callers are therefore served in arrival order, and a cancelled
waiter hands its tokens back.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import TYPE_CHECKING, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import ConfigurationError, RateLimitExceededError
from meshkit._validate import finite, ge, gt, instance_of, non_empty_str, optional
from meshkit.resilience._common import TokenCalls, default_burst

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["RateLimiter", "RateLimiterStatistics"]


_TIME_TOLERANCE = 1e-9
"""A wait shorter than this (plus the clock's float resolution) counts as no wait."""


def check_tokens(tokens: object, burst: float) -> None:
    """Validate a token count against the bucket's capacity.

    Raises:
        ConfigurationError: If `tokens` is not a positive number or exceeds `burst`.
    """
    if isinstance(tokens, bool) or not isinstance(tokens, int | float) or not 0 < tokens <= burst:
        raise ConfigurationError("tokens", tokens, f"must be a number in (0, burst={burst}]")


@final
@attrs.define(eq=False)
class _TokenBucket:
    """The synchronous core: tokens (negative while reserved ahead) and the last refill time."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        """Add the tokens accrued since the last refill, up to `burst`."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, tokens: float, now: float) -> float:
        """Return the seconds until `tokens` are available (0 if they are now)."""
        self.refill(now)
        wait = (tokens - self.tokens) / self.rate
        slack = _TIME_TOLERANCE + 4 * (math.ulp(now) + math.ulp(self.burst) / self.rate)
        return wait if wait > slack else 0.0

    def refund(self, tokens: float) -> None:
        """Give reserved tokens back (a cancelled waiter)."""
        self.tokens = min(self.burst, self.tokens + tokens)


@final
@attrs.frozen(kw_only=True)
class RateLimiterStatistics:
    """A snapshot of a rate limiter.

    Attributes:
        name: The limiter's name.
        rate: Tokens added per second.
        burst: The bucket's capacity.
        tokens: Tokens available now (negative while waiters have reserved ahead).
        admitted: Acquisitions granted (including reservations still waiting).
        rejected: Acquisitions refused with `RateLimitExceededError`.
    """

    name: str
    rate: float
    burst: float
    tokens: float
    admitted: int
    rejected: int


@final
@attrs.define(eq=False, kw_only=True)
class RateLimiter(TokenCalls):
    """Admit at most `rate` calls per second on average, with bursts of up to `burst`.

    `acquire_nowait()` takes tokens or raises `RateLimitExceededError` whose `retry_after`
    says how long until they will be there. `await acquire()` (and `acquire_sync()` from a
    thread) waits for them instead, unless the wait would exceed `max_wait`, in which case it
    raises at once without waiting. It is thread-safe and shared freely between tasks,
    threads and event loops.

    Attributes:
        rate: Tokens added per second (> 0).
        burst: The bucket's capacity, also its initial content; defaults to
            `max(1, rate)`.
        max_wait: Longest wait `acquire()` accepts, in seconds; `None` (the default) waits
            as long as needed, 0 never waits.
        name: A name for errors and statistics.
        clock: The time source for refills and waits.

    Raises:
        ConfigurationError: If a setting is out of range.

    Example:
        ```python
        from meshkit import RateLimitExceededError
        from meshkit.resilience import RateLimiter
        from meshkit.testing import FakeClock

        clock = FakeClock()
        limiter = RateLimiter(rate=2, burst=2, clock=clock)
        limiter.acquire_nowait()
        limiter.acquire_nowait()
        try:
            limiter.acquire_nowait()
        except RateLimitExceededError as exc:
            assert exc.retry_after == 0.5
        clock.advance(0.5)
        limiter.acquire_nowait()
        ```
    """

    rate: float = attrs.field(validator=[gt(0), finite])
    burst: float = attrs.field(
        default=attrs.Factory(default_burst, takes_self=True), validator=[gt(0), finite]
    )
    max_wait: float | None = attrs.field(default=None, validator=optional([ge(0), finite]))
    name: str = attrs.field(default="ratelimiter", validator=non_empty_str)
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _bucket: _TokenBucket = attrs.field(init=False)
    _admitted: int = attrs.field(init=False, default=0)
    _rejected: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        burst = float(self.burst)
        self._bucket = _TokenBucket(float(self.rate), burst, burst, self.clock.now())

    def acquire_nowait(self, tokens: float = 1) -> None:
        """Take `tokens` now or fail.

        Raises:
            RateLimitExceededError: If they are not available; `retry_after` says when.
            ConfigurationError: If `tokens` is not in `(0, burst]`.
        """
        self._reserve(tokens, 0.0)

    async def acquire(self, tokens: float = 1) -> None:
        """Take `tokens`, waiting for them on the clock (at most `max_wait`).

        Raises:
            RateLimitExceededError: At once, if the wait would exceed `max_wait`.
            ConfigurationError: If `tokens` is not in `(0, burst]`.
        """
        if (wait := self._reserve(tokens, self.max_wait)) > 0:
            with self._refunded_on_error(tokens):
                await self.clock.sleep(wait)

    def acquire_sync(self, tokens: float = 1) -> None:
        """Take `tokens` from a thread, blocking on the clock for them (at most `max_wait`).

        Raises:
            RateLimitExceededError: At once, if the wait would exceed `max_wait`.
            ConfigurationError: If `tokens` is not in `(0, burst]`.
        """
        if (wait := self._reserve(tokens, self.max_wait)) > 0:
            with self._refunded_on_error(tokens):
                self.clock.sleep_sync(wait)

    def _reserve(self, tokens: float, max_wait: float | None) -> float:
        """Take `tokens` (into debt if need be) and return how long to wait for them."""
        check_tokens(tokens, self.burst)
        with self._lock:
            wait = self._bucket.wait_for(tokens, self.clock.now())
            if max_wait is not None and wait > max_wait:
                self._rejected += 1
                raise RateLimitExceededError(self.name, wait)
            self._bucket.tokens -= tokens
            self._admitted += 1
        return wait

    @contextlib.contextmanager
    def _refunded_on_error(self, tokens: float) -> Iterator[None]:
        """Around a wait for reserved tokens: a cancelled waiter hands them back."""
        try:
            yield
        except BaseException:
            self._refund(tokens)
            raise

    def _refund(self, tokens: float) -> None:
        with self._lock:
            self._bucket.refill(self.clock.now())
            self._bucket.refund(tokens)
            self._admitted -= 1

    def statistics(self) -> RateLimiterStatistics:
        """Return a snapshot of the bucket and counters."""
        with self._lock:
            self._bucket.refill(self.clock.now())
            return RateLimiterStatistics(
                name=self.name,
                rate=self._bucket.rate,
                burst=self._bucket.burst,
                tokens=self._bucket.tokens,
                admitted=self._admitted,
                rejected=self._rejected,
            )
