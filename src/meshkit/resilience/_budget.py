"""A retry budget: retries may add only a fraction of live traffic, plus a small floor.

Modelled on Finagle's `RetryBudget` and Envoy's retry budget. Every first attempt deposits one
request; every retry withdraws one. Within a sliding window of `window` seconds (kept as
`buckets` slices, so memory is constant), a retry is allowed only while

    retries_in_window + 1 <= ratio * requests_in_window + min_retries_per_second * window

so when a dependency fails hard, clients stop multiplying their load by `max_attempts` and add
at most `ratio` of it (the floor lets a quiet service still retry now and then).

The comparison is exact: `ratio`, `min_retries_per_second` and `window` are taken as the
decimals they are written as (`0.29` is 29/100, not the binary float just below it) and the
sum is compared in whole units of one retry, so 100 requests at ratio 0.29 allow 29 retries,
as Finagle's budget does, where floating point would give 28.
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction
from typing import final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._validate import count, finite, ge, instance_of, positive_seconds, require
from meshkit.resilience._common import MAX_BUCKETS, MIN_BUCKET_SECONDS

__all__ = ["RetryBudget", "RetryBudgetStatistics"]


def _decimal(value: float) -> Fraction:
    """The exact decimal a float was written as: `0.29` -> 29/100 (its shortest repr)."""
    return Fraction(repr(float(value)))


@final
@attrs.frozen(kw_only=True)
class RetryBudgetStatistics:
    """A snapshot of a budget's sliding window.

    Attributes:
        requests: First attempts deposited within the window.
        retries: Retries withdrawn within the window.
        available: Retries that would be allowed right now (may be fractional, never < 0).
    """

    requests: int
    retries: int
    available: float


@final
@attrs.define(eq=False)
class RetryBudget:
    """A thread-safe budget shared by every `Retry` that should draw from it.

    Example:
        ```python
        from meshkit.resilience import RetryBudget
        from meshkit.testing import FakeClock

        budget = RetryBudget(ratio=0.1, min_retries_per_second=0, clock=FakeClock())
        for _ in range(20):
            budget.deposit()
        assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]
        ```

    Attributes:
        ratio: Retries allowed per first attempt in the window (0.2 = 20% extra load).
        min_retries_per_second: A floor of retries per second, allowed whatever the traffic.
        window: The sliding window, in seconds (finite, at least a microsecond per slice).
        buckets: Slices the window is kept in (1 to 10,000); it slides one slice at a time.
        clock: The clock the window runs on.
    """

    ratio: float = attrs.field(default=0.2, kw_only=True, validator=[ge(0), finite])
    min_retries_per_second: float = attrs.field(
        default=10.0, kw_only=True, validator=[ge(0), finite]
    )
    window: float = attrs.field(default=10.0, kw_only=True, validator=positive_seconds)
    buckets: int = attrs.field(default=10, kw_only=True, validator=count(1, MAX_BUCKETS))
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, kw_only=True, validator=instance_of(Clock))
    _requests: list[int] = attrs.field(init=False)
    _retries: list[int] = attrs.field(init=False)
    _slice: float = attrs.field(init=False)
    _unit: int = attrs.field(init=False)
    _per_request: int = attrs.field(init=False)
    _floor: int = attrs.field(init=False)
    _current: int = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    def __attrs_post_init__(self) -> None:
        require(
            math.isfinite(self.floor),
            "min_retries_per_second",
            self.min_retries_per_second,
            f"times window ({self.window}) must be a finite number of retries",
        )
        require(
            self.window / self.buckets >= MIN_BUCKET_SECONDS,
            "window",
            self.window,
            f"must be >= buckets * {MIN_BUCKET_SECONDS} s (a slice of at least a microsecond)",
        )
        # Whole units: one retry is `_unit`, a request earns `_per_request`, the floor is
        # `_floor`; all exact integers, so the budget never rounds at a boundary.
        ratio = _decimal(self.ratio)
        floor = _decimal(self.min_retries_per_second) * _decimal(self.window)
        self._unit = math.lcm(ratio.denominator, floor.denominator)
        self._per_request = int(ratio * self._unit)
        self._floor = int(floor * self._unit)
        self._requests = [0] * self.buckets
        self._retries = [0] * self.buckets
        self._slice = self.window / self.buckets
        self._current = self._index()

    @property
    def floor(self) -> float:
        """Retries allowed per window whatever the traffic (`min_retries_per_second * window`)."""
        return self.min_retries_per_second * self.window

    def deposit(self) -> None:
        """Record one first attempt (live traffic)."""
        with self._lock:
            self._slide()
            self._requests[self._current % self.buckets] += 1

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; return whether it was allowed."""
        with self._lock:
            self._slide()
            if self._units() < self._unit:
                return False
            self._retries[self._current % self.buckets] += 1
            return True

    def statistics(self) -> RetryBudgetStatistics:
        """Return a snapshot of the current window."""
        with self._lock:
            self._slide()
            return RetryBudgetStatistics(
                requests=sum(self._requests),
                retries=sum(self._retries),
                available=max(self._units() / self._unit, 0.0),
            )

    def _units(self) -> int:
        """The retries available now, in whole units (`_unit` per retry)."""
        earned = self._per_request * sum(self._requests) + self._floor
        return earned - self._unit * sum(self._retries)

    def _index(self) -> int:
        return math.floor(self.clock.now() / self._slice)

    def _slide(self) -> None:
        index = self._index()
        stale = min(index - self._current, self.buckets)
        for step in range(1, stale + 1):
            bucket = (self._current + step) % self.buckets
            self._requests[bucket] = 0
            self._retries[bucket] = 0
        self._current = max(index, self._current)
