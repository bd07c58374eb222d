"""The circuit breaker's pure state core: no I/O, no awaits, no locks, and no clock of its own.

Every method takes the current time as an argument, so hypothesis can drive the core through
any sequence of calls and instants; `CircuitBreaker` wraps it in a lock and a clock.

Each call admitted by `acquire()` carries a *permit*: the core's epoch, a number bumped on
every state change. An outcome is applied only if its permit is still the current epoch, so a
call admitted while CLOSED that finishes after the breaker opened (or a trial that finishes
after HALF_OPEN gave up waiting) does not leak into the state it was not admitted by.
"""

from __future__ import annotations

import enum
import itertools
import math
from typing import final

import attrs

from meshkit._errors import CircuitOpenError, ConfigurationError
from meshkit.resilience._breaker_config import CircuitBreakerConfig, CountWindow, TimeWindow

__all__ = ["BreakerCore", "CircuitBreakerStatistics", "CircuitState", "Permit", "count_value"]

_FAILED = 1
_SLOW = 2
_NEVER = math.inf


class CircuitState(enum.Enum):
    """The states of a circuit breaker.

    CLOSED, OPEN and HALF_OPEN are driven by call outcomes and time. FORCED_OPEN and DISABLED
    are states too (as in Resilience4j), entered and left only by hand: `force_open()`,
    `disable()`, and `reset()` back to CLOSED.
    """

    CLOSED = "closed"
    """Calls pass; outcomes are recorded and may open the breaker."""
    OPEN = "open"
    """Calls are rejected until the open duration has elapsed."""
    HALF_OPEN = "half_open"
    """A fixed number of trial calls pass; their outcomes close or reopen the breaker."""
    FORCED_OPEN = "forced_open"
    """Every call is rejected until `reset()` (or `disable()`)."""
    DISABLED = "disabled"
    """Every call passes and nothing is recorded until `reset()` (or `force_open()`)."""


def count_value(counter: itertools.count[int]) -> int:
    """Return the next value an `itertools.count` would yield, without advancing it."""
    # `next(count)` is one C call, an atomic increment under the GIL, so the success path
    # counts without the lock (1.2-2.4x faster call_sync, benchmarks/README.md "Speed tricks");
    # its repr, `count(N)`, is the only way to read N back.
    return int(repr(counter)[6:-1])


@final
class Permit:
    """One admitted call: the epoch it was admitted in, and when (0.0 if admitted lock-free)."""

    __slots__ = ("epoch", "start")

    def __init__(self, epoch: int, start: float) -> None:
        self.epoch = epoch
        self.start = start


@final
class _CountAccumulator:
    """The totals of the last `size` recorded calls (a ring of outcome codes)."""

    __slots__ = ("_next", "_ring", "calls", "failures", "minimum_calls", "size", "slow")

    def __init__(self, size: int, minimum_calls: int) -> None:
        self.size = size
        self.minimum_calls = minimum_calls
        self.calls = self.failures = self.slow = self._next = 0
        self._ring = [0] * size

    def add(self, _now: float, code: int) -> None:
        if self.calls == self.size:
            old = self._ring[self._next]
            self.failures -= old & _FAILED
            self.slow -= old >> 1
        else:
            self.calls += 1
        self._ring[self._next] = code
        self.failures += code & _FAILED
        self.slow += code >> 1
        self._next = (self._next + 1) % self.size

    def expire(self, _now: float) -> None:
        """Nothing expires by time in a count window."""

    def clear(self) -> None:
        self.calls = self.failures = self.slow = self._next = 0
        self._ring = [0] * self.size


@final
class _TimeAccumulator:
    """The totals of the calls whose bucket is one of the newest `buckets` buckets."""

    __slots__ = (
        "_calls",
        "_failures",
        "_head",
        "_slow",
        "buckets",
        "calls",
        "failures",
        "minimum_calls",
        "slow",
        "width",
    )

    def __init__(self, width: float, buckets: int, minimum_calls: int) -> None:
        self.width = width
        self.buckets = buckets
        self.minimum_calls = minimum_calls
        self._head = -(1 << 62)
        self.clear()

    def expire(self, now: float) -> None:
        """Drop the buckets that have left the window by `now`."""
        index = math.floor(now / self.width)
        if index <= self._head:
            return
        for step in range(1, min(index - self._head, self.buckets) + 1):
            slot = (self._head + step) % self.buckets
            self.calls -= self._calls[slot]
            self.failures -= self._failures[slot]
            self.slow -= self._slow[slot]
            self._calls[slot] = self._failures[slot] = self._slow[slot] = 0
        self._head = index

    def add(self, now: float, code: int) -> None:
        self.expire(now)
        slot = self._head % self.buckets
        self._calls[slot] += 1
        self._failures[slot] += code & _FAILED
        self._slow[slot] += code >> 1
        self.calls += 1
        self.failures += code & _FAILED
        self.slow += code >> 1

    def clear(self) -> None:
        self.calls = self.failures = self.slow = 0
        self._calls = [0] * self.buckets
        self._failures = [0] * self.buckets
        self._slow = [0] * self.buckets


_Accumulator = _CountAccumulator | _TimeAccumulator


def _accumulator(window: CountWindow | TimeWindow | None) -> _Accumulator | None:
    if isinstance(window, CountWindow):
        return _CountAccumulator(window.size, window.minimum_calls)
    if isinstance(window, TimeWindow):
        return _TimeAccumulator(
            window.seconds / window.buckets, window.buckets, window.minimum_calls
        )
    return None


@final
@attrs.frozen(kw_only=True)
class CircuitBreakerStatistics:
    """A snapshot of a circuit breaker, from `CircuitBreaker.statistics()`.

    Attributes:
        name: The breaker's name.
        state: Its state at the time of the snapshot.
        retry_after: Seconds until an OPEN breaker admits a trial call (0 otherwise).
        consecutive_failures: Failures recorded in a row while CLOSED.
        consecutive_openings: Openings since the breaker was last CLOSED.
        window_calls: Calls in the sliding window (the trial calls while HALF_OPEN).
        window_failures: Failed calls among them.
        window_slow_calls: Slow calls among them.
        failure_rate: `window_failures / window_calls` (0 when there are no calls).
        slow_call_rate: `window_slow_calls / window_calls` (0 when there are no calls).
        half_open_in_flight: Trial calls admitted and not yet completed.
        successful_calls: Calls recorded as successes since the breaker was built.
        failed_calls: Calls recorded as failures since then.
        slow_calls: Calls recorded as slow since then.
        ignored_calls: Calls whose exception was ignored since then.
        rejected_calls: Calls the breaker rejected since then.
    """

    name: str
    state: CircuitState
    retry_after: float
    consecutive_failures: int
    consecutive_openings: int
    window_calls: int
    window_failures: int
    window_slow_calls: int
    failure_rate: float
    slow_call_rate: float
    half_open_in_flight: int
    successful_calls: int
    failed_calls: int
    slow_calls: int
    ignored_calls: int
    rejected_calls: int


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@final
class BreakerCore:
    """The breaker's state machine; every method takes `now` and none blocks or awaits.

    Attributes:
        fast_permit: The permit every call shares while the lock-free path applies (CLOSED
            with no failure in a row, trips on consecutive failures only, nobody
            listening); `None` otherwise. A new one is made each time the path opens again,
            so a success is counted lock-free only if nothing was recorded since its call
            was admitted (`permit is fast_permit`).
        reject_until: While OPEN with nobody listening, `open_until`: calls before it are
            rejected without the lock. Otherwise minus infinity.
    """

    __slots__ = (
        "_fast_capable",
        "_window",
        "config",
        "consecutive_failures",
        "epoch",
        "failures",
        "fast_permit",
        "half_open_deadline",
        "ignored",
        "in_flight",
        "listening",
        "name",
        "open_until",
        "openings",
        "reject_until",
        "rejections",
        "slow_calls",
        "state",
        "successes",
        "transitions",
        "trial_calls",
        "trial_failures",
        "trial_slow",
    )

    def __init__(self, config: CircuitBreakerConfig, name: str) -> None:
        """Start CLOSED, with empty counts."""
        self.config = config
        self.name = name
        self.state = CircuitState.CLOSED
        self.epoch = 1
        self.fast_permit: Permit | None = None
        self.reject_until = -_NEVER
        self.consecutive_failures = 0
        self.openings = 0
        self.open_until = 0.0
        self.half_open_deadline = _NEVER
        self.in_flight = self.trial_calls = self.trial_failures = self.trial_slow = 0
        self.successes = itertools.count()
        self.rejections = itertools.count()
        self.failures = self.ignored = self.slow_calls = 0
        self.listening = False
        self.transitions: list[tuple[CircuitState, CircuitState, float]] = []
        self._window = _accumulator(config.window)
        self._fast_capable = (
            config.window is None
            and config.slow_call_duration is None
            and config.record_result is None
        )
        self._refresh_fast()

    # ------------------------------------------------------------ admission

    def poll(self, now: float) -> CircuitState:
        """Apply the transitions that time alone causes by `now`, and return the state.

        Each transition happens at the deadline that caused it, not when it is noticed: an
        OPEN breaker becomes HALF_OPEN at `open_until`; a HALF_OPEN one whose trials overran
        `half_open_max_wait` reopened at that deadline, for an open duration counted from
        it, and may be HALF_OPEN again by `now` (Resilience4j's timers, without a thread).
        """
        while True:
            if self.state is CircuitState.OPEN and now >= self.open_until:
                self.half_open_deadline = _NEVER  # until the first trial is admitted
                self._transition(CircuitState.HALF_OPEN, self.open_until)
            elif self.state is CircuitState.HALF_OPEN and now >= self.half_open_deadline:
                self._open(self.half_open_deadline)
            else:
                return self.state

    def acquire(self, now: float) -> int:
        """Admit a call and return its permit.

        Raises:
            CircuitOpenError: If the breaker is OPEN or FORCED_OPEN, or HALF_OPEN with every
                trial slot taken.
        """
        state = self.poll(now)
        if state is CircuitState.CLOSED or state is CircuitState.DISABLED:
            return self.epoch
        trials = self.in_flight + self.trial_calls
        if state is CircuitState.HALF_OPEN and trials < self.config.half_open_calls:
            if not trials:  # the first trial starts the half_open_max_wait timer
                self.half_open_deadline = now + (self.config.half_open_max_wait or _NEVER)
            self.in_flight += 1
            return self.epoch
        next(self.rejections)
        raise CircuitOpenError(self.name, self.retry_after(now))

    def retry_after(self, now: float) -> float:
        """Return the seconds until an OPEN breaker admits a trial call (0 otherwise)."""
        if self.state is CircuitState.OPEN:
            return max(self.open_until - now, 0.0)
        return 0.0

    # ------------------------------------------------------------ outcomes

    def record(self, permit: int, now: float, *, failed: bool, slow: bool) -> None:
        """Record the outcome of the call admitted with `permit` (nothing while DISABLED)."""
        if self.poll(now) is CircuitState.DISABLED:
            return
        if failed:
            self.failures += 1
        else:
            next(self.successes)
        if slow:
            self.slow_calls += 1
        if permit != self.epoch:
            return
        if self.state is CircuitState.CLOSED:
            self._record_closed(now, failed=failed, slow=slow)
        else:  # a permit of the current epoch that is not CLOSED's is a HALF_OPEN trial's
            self._record_trial(now, failed=failed, slow=slow)

    def release(self, permit: int, now: float, *, ignored: bool) -> None:
        """Give back the permit of a call that is not recorded (ignored or cancelled)."""
        if self.poll(now) is CircuitState.DISABLED:
            return
        if ignored:
            self.ignored += 1
        if permit == self.epoch and self.state is CircuitState.HALF_OPEN:
            self.in_flight -= 1

    def _record_closed(self, now: float, *, failed: bool, slow: bool) -> None:
        config = self.config
        self.consecutive_failures = self.consecutive_failures + 1 if failed else 0
        self._refresh_fast()
        threshold = config.failure_threshold
        if threshold is not None and self.consecutive_failures >= threshold:
            self._open(now)
            return
        window = self._window
        if window is None:
            return
        window.add(now, (_FAILED if failed else 0) | (_SLOW if slow else 0))
        if window.calls >= window.minimum_calls and self._rates_trip(
            window.calls, window.failures, window.slow
        ):
            self._open(now)

    def _record_trial(self, now: float, *, failed: bool, slow: bool) -> None:
        self.in_flight -= 1
        self.trial_calls += 1
        self.trial_failures += failed
        self.trial_slow += slow
        if self.trial_calls < self.config.half_open_calls:
            return
        if self._rates_trip(self.trial_calls, self.trial_failures, self.trial_slow):
            self._open(now)
        else:
            self._close(now)

    def _rates_trip(self, calls: int, failures: int, slow: int) -> bool:
        config = self.config
        if failures / calls >= config.failure_rate_threshold:
            return True
        return (
            config.slow_call_duration is not None
            and slow / calls >= config.slow_call_rate_threshold
        )

    # ------------------------------------------------------------ transitions

    def force_open(self, now: float) -> None:
        """Reject every call until `reset()` or `disable()`."""
        self._transition(CircuitState.FORCED_OPEN, now)

    def disable(self, now: float) -> None:
        """Admit every call and record nothing until `reset()` or `force_open()`."""
        self._transition(CircuitState.DISABLED, now)

    def reset(self, now: float) -> None:
        """Return to CLOSED with empty counts, whatever the state."""
        self._close(now)

    def set_listening(self, *, listening: bool) -> None:
        """Say whether transitions must be kept for listeners (it disables the fast path)."""
        self.listening = listening
        self._refresh_fast()

    def take_transitions(self) -> list[tuple[CircuitState, CircuitState, float]]:
        """Return and forget the transitions made since the last call."""
        transitions, self.transitions = self.transitions, []
        return transitions

    def _open(self, now: float) -> None:
        duration = self.config.open_duration(self.openings + 1)
        if not (duration >= 0 and math.isfinite(duration)):
            raise ConfigurationError("open_duration", duration, "must return seconds >= 0")
        self.openings += 1
        self.open_until = now + duration
        self._transition(CircuitState.OPEN, now)

    def _close(self, now: float) -> None:
        self.openings = 0
        if self._window is not None:
            self._window.clear()
        self._transition(CircuitState.CLOSED, now)

    def _transition(self, state: CircuitState, now: float) -> None:
        old = self.state
        self.state = state
        self.epoch += 1
        self.consecutive_failures = 0
        self.in_flight = self.trial_calls = self.trial_failures = self.trial_slow = 0
        self._refresh_fast()
        if self.listening and old is not state:
            self.transitions.append((old, state, now))

    @property
    def fast_epoch(self) -> int:
        """The epoch of `fast_permit`, or 0 when there is none."""
        return 0 if self.fast_permit is None else self.fast_permit.epoch

    def _refresh_fast(self) -> None:
        fast = (
            self.state is CircuitState.CLOSED
            and self._fast_capable
            and not self.listening
            and not self.consecutive_failures
        )
        if not fast:
            self.fast_permit = None
        elif self.fast_permit is None or self.fast_permit.epoch != self.epoch:
            self.fast_permit = Permit(self.epoch, 0.0)
        rejects = self.state is CircuitState.OPEN and not self.listening
        self.reject_until = self.open_until if rejects else -_NEVER

    # ------------------------------------------------------------ reading

    def statistics(self, now: float) -> CircuitBreakerStatistics:
        """Return a snapshot of the counts and rates at `now`."""
        state = self.poll(now)
        if state is CircuitState.HALF_OPEN:
            calls, failures, slow = self.trial_calls, self.trial_failures, self.trial_slow
        elif self._window is not None:
            self._window.expire(now)
            calls, failures, slow = self._window.calls, self._window.failures, self._window.slow
        else:
            calls = failures = slow = 0
        return CircuitBreakerStatistics(
            name=self.name,
            state=state,
            retry_after=self.retry_after(now),
            consecutive_failures=self.consecutive_failures,
            consecutive_openings=self.openings,
            window_calls=calls,
            window_failures=failures,
            window_slow_calls=slow,
            failure_rate=_rate(failures, calls),
            slow_call_rate=_rate(slow, calls),
            half_open_in_flight=self.in_flight,
            successful_calls=count_value(self.successes),
            failed_calls=self.failures,
            slow_calls=self.slow_calls,
            ignored_calls=self.ignored,
            rejected_calls=count_value(self.rejections),
        )
