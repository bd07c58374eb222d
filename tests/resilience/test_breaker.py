"""Tests for the circuit breaker: config, trip models, classification, control, listeners."""

from __future__ import annotations

import inspect
import logging
import math
import pickle
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import CircuitOpenError, ConfigurationError
from meshkit.resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitCallOutcome,
    CircuitCallRecorded,
    CircuitState,
    CircuitStateChange,
    CountWindow,
    ExponentialOpenDuration,
    FixedOpenDuration,
    TimeWindow,
)
from meshkit.resilience._breaker_core import BreakerCore

if TYPE_CHECKING:
    from meshkit.testing import FakeClock


class BoomError(Exception):
    """The failure the protected calls raise."""


class BenignError(Exception):
    """An exception configured as ignored or as a success."""


def ok(value: int = 1) -> int:
    """Succeed."""
    return value


def boom() -> int:
    """Fail."""
    raise BoomError


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    """Record `times` failures through `breaker`."""
    for _ in range(times):
        with pytest.raises(BoomError):
            breaker.call_sync(boom)


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """Read the state (a function, so mypy does not narrow a property across calls)."""
    return breaker.state


def make(clock: FakeClock, **kwargs: Any) -> CircuitBreaker:
    """Build a breaker on the fake clock."""
    return CircuitBreaker(CircuitBreakerConfig(**kwargs), name="svc", clock=clock)


class Recorder:
    """A listener that keeps everything it hears."""

    def __init__(self) -> None:
        self.changes: list[CircuitStateChange] = []
        self.calls: list[CircuitCallRecorded] = []

    def on_state_change(self, event: CircuitStateChange) -> None:
        self.changes.append(event)

    def on_call(self, event: CircuitCallRecorded) -> None:
        self.calls.append(event)


class TestConfig:
    def test_defaults(self) -> None:
        """A default breaker opens after 5 failures for 30 s and tries 1 call."""
        config = CircuitBreaker().config
        assert config.failure_threshold == 5
        assert config.open_duration == FixedOpenDuration(seconds=30.0)
        assert config.half_open_calls == 1
        assert CircuitBreaker().name == "circuit-breaker"

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"failure_threshold": 0}, "failure_threshold"),
            ({"failure_threshold": True}, "failure_threshold"),
            ({"failure_threshold": None}, "failure_threshold"),
            ({"failure_rate_threshold": 0}, "failure_rate_threshold"),
            ({"failure_rate_threshold": 1.5}, "failure_rate_threshold"),
            ({"slow_call_rate_threshold": -1}, "slow_call_rate_threshold"),
            ({"slow_call_duration": 1.0}, "slow_call_duration"),
            ({"slow_call_duration": 0, "window": CountWindow()}, "slow_call_duration"),
            ({"open_duration": -1}, "open_duration"),
            ({"open_duration": math.inf}, "open_duration"),
            ({"open_duration": "30"}, "open_duration"),
            ({"open_duration": True}, "open_duration"),
            ({"half_open_calls": 0}, "half_open_calls"),
            ({"half_open_max_wait": 0}, "half_open_max_wait"),
            ({"window": 10}, "window"),
            ({"record_exceptions": 3}, "record_exceptions"),
            ({"record_exceptions": int}, "record_exceptions"),
            ({"ignore_exceptions": (ValueError, int)}, "ignore_exceptions"),
            ({"ignore_exceptions": (ValueError, 3)}, "ignore_exceptions"),
            ({"record_result": 3}, "record_result"),
        ],
    )
    def test_bad_values_name_the_field(self, kwargs: dict[str, Any], field: str) -> None:
        """Each invalid knob raises ConfigurationError naming that knob."""
        with pytest.raises(ConfigurationError) as info:
            CircuitBreakerConfig(**kwargs)
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("build", "field"),
        [
            (lambda: CountWindow(size=0), "size"),
            (lambda: CountWindow(size=5, minimum_calls=6), "minimum_calls"),
            (lambda: TimeWindow(seconds=0), "seconds"),
            (lambda: TimeWindow(buckets=0), "buckets"),
            (lambda: TimeWindow(minimum_calls=0), "minimum_calls"),
            (lambda: FixedOpenDuration(seconds=-1), "seconds"),
            (lambda: ExponentialOpenDuration(initial=0), "initial"),
            (lambda: ExponentialOpenDuration(multiplier=0.5), "multiplier"),
            (lambda: ExponentialOpenDuration(initial=5, maximum=1), "maximum"),
            (lambda: ExponentialOpenDuration(jitter=1.0), "jitter"),
            (lambda: CircuitBreaker(name=3), "name"),  # type: ignore[arg-type]
            (lambda: CircuitBreaker(name=""), "name"),
            (lambda: CircuitBreaker(config=3), "config"),  # type: ignore[arg-type]
            (lambda: CircuitBreaker(clock=3), "clock"),  # type: ignore[arg-type]
            (lambda: ExponentialOpenDuration(random=3), "random"),  # type: ignore[arg-type]
        ],
    )
    def test_bad_parts_name_the_field(self, build: Any, field: str) -> None:
        """Windows, durations and the breaker itself validate their fields too."""
        with pytest.raises(ConfigurationError) as info:
            build()
        assert info.value.field == field

    def test_number_open_duration_becomes_fixed(self) -> None:
        """A number of seconds is turned into a FixedOpenDuration."""
        assert CircuitBreakerConfig(open_duration=5).open_duration == FixedOpenDuration(seconds=5)

    def test_open_duration_callable_must_return_seconds(self, clock: FakeClock) -> None:
        """A strategy returning a negative or NaN duration is reported when it is used."""
        breaker = make(clock, failure_threshold=1, open_duration=lambda _n: math.nan)
        with pytest.raises(ConfigurationError) as info:
            breaker.call_sync(boom)
        assert info.value.field == "open_duration"


class TestKnobBounds:
    @pytest.mark.parametrize(
        ("build", "field"),
        [
            (lambda: CountWindow(size=10**9), "size"),
            (lambda: TimeWindow(buckets=10**9), "buckets"),
            (lambda: TimeWindow(seconds=1e-308), "seconds"),
            (lambda: TimeWindow(seconds=1e-3, buckets=10_000), "seconds"),
        ],
    )
    def test_refused_at_construction(self, build: Any, field: str) -> None:
        """Windows that would exhaust memory or overflow are refused, naming the field."""
        with pytest.raises(ConfigurationError) as info:
            build()
        assert info.value.field == field

    def test_largest_windows_are_accepted(self) -> None:
        """The documented upper bounds themselves are fine."""
        assert CountWindow(size=100_000).size == 100_000
        assert TimeWindow(seconds=1.0, buckets=10_000).buckets == 10_000

    def test_misbehaving_jitter_source_is_named(self) -> None:
        """A NaN from the open duration's random source names `random` when it is drawn."""
        duration = ExponentialOpenDuration(jitter=0.5, random=lambda: math.nan)
        with pytest.raises(ConfigurationError) as info:
            duration(1)
        assert info.value.field == "random"


class TestOpenDurations:
    def test_exponential_grows_and_caps(self) -> None:
        """Consecutive openings double the duration up to the maximum."""
        duration = ExponentialOpenDuration(initial=1, multiplier=2, maximum=10)
        assert [duration(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
        assert duration(10**6) == 10

    def test_exponential_overflow_is_capped(self) -> None:
        """A huge multiplier that overflows a float gives the maximum."""
        duration = ExponentialOpenDuration(initial=1, multiplier=1e300, maximum=7)
        assert duration(5) == 7

    @given(st.floats(0, 0.999), st.floats(0, 0.999_999), st.integers(1, 50))
    def test_jitter_stays_in_band(self, jitter: float, draw: float, openings: int) -> None:
        """Jitter scales the duration by a factor within [1 - jitter, 1 + jitter]."""
        plain = ExponentialOpenDuration(initial=0.5, maximum=30)
        jittered = ExponentialOpenDuration(
            initial=0.5, maximum=30, jitter=jitter, random=lambda: draw
        )
        base = plain(openings)
        value = jittered(openings)
        assert base * (1 - jitter) - 1e-9 <= value <= base * (1 + jitter) + 1e-9
        assert value > 0


class TestConsecutiveFailures:
    def test_opens_after_threshold_and_rejects(self, clock: FakeClock) -> None:
        """N consecutive failures open it; calls are then rejected with retry_after."""
        breaker = make(clock, failure_threshold=3, open_duration=10)
        fail(breaker, 2)
        assert state_of(breaker) is CircuitState.CLOSED
        fail(breaker)
        assert state_of(breaker) is CircuitState.OPEN
        clock.advance(4)
        with pytest.raises(CircuitOpenError) as info:
            breaker.call_sync(ok)
        assert info.value.retry_after == pytest.approx(6)
        assert info.value.name == "svc"

    def test_success_resets_the_run(self, clock: FakeClock) -> None:
        """A success between failures restarts the count."""
        breaker = make(clock, failure_threshold=3)
        fail(breaker, 2)
        assert breaker.call_sync(ok) == 1
        fail(breaker, 2)
        assert state_of(breaker) is CircuitState.CLOSED
        assert breaker.statistics().consecutive_failures == 2

    def test_half_open_success_closes(self, clock: FakeClock) -> None:
        """After the open duration one trial is admitted; its success closes the breaker."""
        breaker = make(clock, failure_threshold=1, open_duration=5)
        fail(breaker)
        clock.advance(5)
        assert state_of(breaker) is CircuitState.HALF_OPEN
        assert breaker.call_sync(ok, 7) == 7
        assert state_of(breaker) is CircuitState.CLOSED

    def test_half_open_failure_reopens_longer(self, clock: FakeClock) -> None:
        """A failed trial reopens the breaker for the next, longer duration."""
        breaker = make(clock, failure_threshold=1, open_duration=ExponentialOpenDuration(initial=2))
        fail(breaker)
        clock.advance(2)
        fail(breaker)
        stats = breaker.statistics()
        assert stats.state is CircuitState.OPEN
        assert stats.consecutive_openings == 2
        assert stats.retry_after == pytest.approx(4)

    def test_half_open_admits_only_n(self, clock: FakeClock) -> None:
        """HALF_OPEN admits exactly half_open_calls trials, then rejects with retry_after 0."""
        breaker = make(clock, failure_threshold=1, open_duration=1, half_open_calls=2)
        fail(breaker)
        clock.advance(1)
        with breaker, breaker:
            with pytest.raises(CircuitOpenError) as info:
                breaker.call_sync(ok)
            assert info.value.retry_after == 0
            assert breaker.statistics().half_open_in_flight == 2
        assert state_of(breaker) is CircuitState.CLOSED

    def test_half_open_decides_on_trial_failure_rate(self, clock: FakeClock) -> None:
        """With 4 trials and a 50% threshold, 2 failures reopen; 1 failure closes."""
        breaker = make(clock, failure_threshold=1, open_duration=1, half_open_calls=4)
        fail(breaker)
        clock.advance(1)
        fail(breaker)
        breaker.call_sync(ok)
        assert state_of(breaker) is CircuitState.HALF_OPEN
        fail(breaker)
        breaker.call_sync(ok)
        assert state_of(breaker) is CircuitState.OPEN
        clock.advance(1)
        fail(breaker)
        for _ in range(3):
            breaker.call_sync(ok)
        assert state_of(breaker) is CircuitState.CLOSED

    def test_half_open_max_wait_reopens(self, clock: FakeClock) -> None:
        """A trial that never completes within half_open_max_wait sends it back to OPEN."""
        breaker = make(clock, failure_threshold=1, open_duration=1, half_open_max_wait=3)
        fail(breaker)
        clock.advance(1)
        with breaker:
            clock.advance(3)
            assert state_of(breaker) is CircuitState.OPEN
        assert state_of(breaker) is CircuitState.OPEN
        assert breaker.statistics().successful_calls == 1

    def test_half_open_max_wait_is_a_timer(self, clock: FakeClock) -> None:
        """A stuck trial reopens the breaker at its deadline, not when someone next looks."""
        breaker = make(clock, failure_threshold=1, open_duration=10, half_open_max_wait=5)
        recorder = Recorder()
        breaker.add_listener(recorder)
        fail(breaker)
        clock.advance(10)
        breaker.__enter__()  # a trial from t=10 that never ends
        clock.advance(90)
        assert state_of(breaker) is CircuitState.HALF_OPEN
        assert breaker.call_sync(ok) == 1  # admitted as a new trial at t=100
        assert state_of(breaker) is CircuitState.CLOSED
        changes = [(c.from_state, c.to_state, c.at) for c in recorder.changes]
        assert changes[2:4] == [
            (CircuitState.HALF_OPEN, CircuitState.OPEN, 15.0),
            (CircuitState.OPEN, CircuitState.HALF_OPEN, 25.0),
        ]

    def test_half_open_timer_starts_with_the_first_trial(self, clock: FakeClock) -> None:
        """An idle HALF_OPEN breaker does not time out: nothing is waited for yet."""
        breaker = make(clock, failure_threshold=1, open_duration=1, half_open_max_wait=3)
        fail(breaker)
        clock.advance(50)
        assert state_of(breaker) is CircuitState.HALF_OPEN
        assert breaker.statistics().consecutive_openings == 1

    def test_late_outcome_of_an_old_state_is_not_applied(self, clock: FakeClock) -> None:
        """A call admitted while CLOSED that fails after the breaker opened changes nothing."""
        breaker = make(clock, failure_threshold=1, open_duration=1)
        breaker.__enter__()
        fail(breaker)
        clock.advance(1)
        breaker.__exit__(BoomError, BoomError(), None)
        assert state_of(breaker) is CircuitState.HALF_OPEN
        assert breaker.statistics().failed_calls == 2


class TestRateWindows:
    def test_count_window_opens_on_failure_rate(self, clock: FakeClock) -> None:
        """The rate is judged only once minimum_calls calls are in the window."""
        breaker = make(
            clock,
            failure_threshold=None,
            window=CountWindow(size=4, minimum_calls=4),
            failure_rate_threshold=0.5,
        )
        fail(breaker, 3)
        assert state_of(breaker) is CircuitState.CLOSED
        breaker.call_sync(ok)
        assert state_of(breaker) is CircuitState.OPEN

    def test_count_window_slides(self, clock: FakeClock) -> None:
        """Old outcomes leave a full count window as new ones arrive."""
        breaker = make(clock, failure_threshold=None, window=CountWindow(size=3, minimum_calls=3))
        fail(breaker)
        for _ in range(3):
            breaker.call_sync(ok)
        stats = breaker.statistics()
        assert (stats.window_calls, stats.window_failures, stats.failure_rate) == (3, 0, 0.0)

    def test_time_window_expires_by_bucket(self, clock: FakeClock) -> None:
        """Calls older than the window stop counting; the rate opens only on fresh ones."""
        breaker = make(
            clock,
            failure_threshold=None,
            window=TimeWindow(seconds=10, buckets=10, minimum_calls=3),
        )
        fail(breaker, 2)
        clock.advance(10)
        assert breaker.statistics().window_calls == 0
        fail(breaker, 2)
        clock.advance(5)
        fail(breaker)
        assert state_of(breaker) is CircuitState.OPEN

    def test_time_window_long_gap_clears_everything(self, clock: FakeClock) -> None:
        """A gap longer than the window empties it."""
        breaker = make(
            clock, failure_threshold=None, window=TimeWindow(seconds=2, buckets=2, minimum_calls=5)
        )
        breaker.call_sync(ok)
        clock.advance(1000)
        breaker.call_sync(ok)
        assert breaker.statistics().window_calls == 1

    def test_slow_call_rate_opens(self, clock: FakeClock) -> None:
        """Calls slower than slow_call_duration count toward the slow-call rate."""
        breaker = make(
            clock,
            failure_threshold=None,
            window=CountWindow(size=3, minimum_calls=3),
            slow_call_duration=1.0,
            slow_call_rate_threshold=0.6,
        )
        breaker.call_sync(clock.advance, 2)
        breaker.call_sync(clock.advance, 0.5)
        assert state_of(breaker) is CircuitState.CLOSED
        breaker.call_sync(clock.advance, 1.5)
        stats = breaker.statistics()
        assert stats.state is CircuitState.OPEN
        assert stats.slow_calls == 2

    def test_reset_clears_the_window(self, clock: FakeClock) -> None:
        """reset() empties the window and the counts that drive the state."""
        breaker = make(clock, window=CountWindow(size=10, minimum_calls=5))
        fail(breaker, 3)
        breaker.reset()
        stats = breaker.statistics()
        assert (stats.window_calls, stats.consecutive_failures) == (0, 0)


class TestClassification:
    def test_ignored_exception_is_neither(self, clock: FakeClock) -> None:
        """An ignored exception propagates and counts as neither success nor failure."""
        breaker = make(clock, failure_threshold=1, ignore_exceptions=BenignError)
        with pytest.raises(BenignError):
            breaker.call_sync(_raise, BenignError())
        stats = breaker.statistics()
        assert (stats.state, stats.ignored_calls, stats.failed_calls) == (
            CircuitState.CLOSED,
            1,
            0,
        )

    def test_unrecorded_exception_is_a_success(self, clock: FakeClock) -> None:
        """An exception outside record_exceptions counts as a success."""
        breaker = make(clock, failure_threshold=2, record_exceptions=(BoomError,))
        fail(breaker)
        with pytest.raises(BenignError):
            breaker.call_sync(_raise, BenignError())
        fail(breaker)
        assert state_of(breaker) is CircuitState.CLOSED
        assert breaker.statistics().successful_calls == 1

    def test_predicates(self, clock: FakeClock) -> None:
        """record_exceptions and ignore_exceptions also accept predicates."""
        breaker = make(
            clock,
            failure_threshold=1,
            record_exceptions=lambda exc: "bad" in str(exc),
            ignore_exceptions=lambda exc: "skip" in str(exc),
        )
        with pytest.raises(BenignError):
            breaker.call_sync(_raise, BenignError("skip bad"))
        with pytest.raises(BenignError):
            breaker.call_sync(_raise, BenignError("fine"))
        assert state_of(breaker) is CircuitState.CLOSED
        with pytest.raises(BenignError):
            breaker.call_sync(_raise, BenignError("bad"))
        assert state_of(breaker) is CircuitState.OPEN

    def test_result_predicate_counts_failures(self, clock: FakeClock) -> None:
        """A returned value matching record_result is a failure, yet still returned."""
        breaker = make(clock, failure_threshold=2, record_result=lambda r: r is None)
        assert breaker.call_sync(lambda: None) is None
        assert breaker.call_sync(lambda: None) is None
        assert state_of(breaker) is CircuitState.OPEN

    def test_result_predicate_error_releases_the_trial(self, clock: FakeClock) -> None:
        """A record_result that raises propagates and gives the trial slot back."""
        breaker = make(
            clock, failure_threshold=1, open_duration=1, record_result=lambda r: 1 / r < 0
        )
        fail(breaker)
        clock.advance(1)
        with pytest.raises(ZeroDivisionError):
            breaker.call_sync(ok, 0)
        assert breaker.statistics().half_open_in_flight == 0
        assert breaker.call_sync(ok, 2) == 2
        assert state_of(breaker) is CircuitState.CLOSED

    @pytest.mark.parametrize("knob", ["record_exceptions", "ignore_exceptions"])
    def test_exception_predicate_error_releases_the_trial(
        self, clock: FakeClock, knob: str
    ) -> None:
        """An exception predicate that raises propagates and gives the trial slot back."""
        kwargs: dict[str, Any] = {knob: lambda exc: exc.args[0] > 0}
        breaker = make(clock, failure_threshold=1, open_duration=1, **kwargs)
        counted_as_failure = BoomError(1 if knob == "record_exceptions" else 0)
        with pytest.raises(BoomError):
            breaker.call_sync(_raise, counted_as_failure)
        assert state_of(breaker) is CircuitState.OPEN
        clock.advance(1)
        with pytest.raises(IndexError) as info:
            breaker.call_sync(boom)  # BoomError() has no args: the predicate fails
        assert isinstance(info.value.__context__, BoomError)
        assert breaker.statistics().half_open_in_flight == 0
        assert breaker.call_sync(ok, 2) == 2
        assert state_of(breaker) is CircuitState.CLOSED

    def test_truthy_result_predicate_decides_a_trial(self, clock: FakeClock) -> None:
        """A record_result returning a truthy/falsy value (not a bool) still decides a trial."""
        breaker = make(
            clock, failure_threshold=1, open_duration=1, record_result=lambda r: r.get("error")
        )
        assert breaker.call_sync(dict, error="down") == {"error": "down"}
        assert state_of(breaker) is CircuitState.OPEN
        clock.advance(1)
        assert breaker.call_sync(dict, ok=1) == {"ok": 1}  # None: a success
        assert state_of(breaker) is CircuitState.CLOSED

    def test_falsy_exception_predicate_is_a_success_not_ignored(self, clock: FakeClock) -> None:
        """A record_exceptions predicate returning None counts the call as a success."""
        breaker = make(clock, record_exceptions=lambda exc: getattr(exc, "code", None))
        with pytest.raises(BoomError):
            breaker.call_sync(boom)
        stats = breaker.statistics()
        assert (stats.successful_calls, stats.ignored_calls) == (1, 0)

    def test_base_exceptions_pass_through(self, clock: FakeClock) -> None:
        """KeyboardInterrupt is not recorded and gives a trial slot back."""
        breaker = make(clock, failure_threshold=1, open_duration=1)
        with pytest.raises(KeyboardInterrupt):
            breaker.call_sync(_raise, KeyboardInterrupt())
        assert state_of(breaker) is CircuitState.CLOSED
        fail(breaker)
        clock.advance(1)
        with pytest.raises(SystemExit):
            breaker.call_sync(_raise, SystemExit())
        assert breaker.statistics().half_open_in_flight == 0
        assert state_of(breaker) is CircuitState.HALF_OPEN


def _raise(exc: BaseException) -> int:
    raise exc


def _raise_or_return(exc: BaseException | None) -> int:
    if exc is not None:
        raise exc
    return 1


async def _araise_or_return(exc: BaseException | None) -> int:
    await anyio.lowlevel.checkpoint()
    return _raise_or_return(exc)


class TestControl:
    def test_force_open_rejects_with_zero_retry_after(self, clock: FakeClock) -> None:
        """FORCED_OPEN rejects every call, whatever the time, until reset()."""
        breaker = make(clock)
        breaker.force_open()
        clock.advance(10**6)
        with pytest.raises(CircuitOpenError) as info:
            breaker.call_sync(ok)
        assert info.value.retry_after == 0
        assert state_of(breaker) is CircuitState.FORCED_OPEN
        breaker.reset()
        assert breaker.call_sync(ok) == 1

    def test_disabled_admits_and_records_nothing(self, clock: FakeClock) -> None:
        """DISABLED lets failures through without opening, and counts none of them."""
        breaker = make(clock, failure_threshold=1)
        breaker.disable()
        fail(breaker, 3)
        breaker.call_sync(ok)
        stats = breaker.statistics()
        assert stats.state is CircuitState.DISABLED
        assert (stats.consecutive_failures, stats.failed_calls, stats.successful_calls) == (0, 0, 0)
        breaker.force_open()
        assert state_of(breaker) is CircuitState.FORCED_OPEN

    def test_statistics_is_a_frozen_value(self, clock: FakeClock) -> None:
        """statistics() returns an immutable snapshot."""
        breaker = make(clock, window=CountWindow(size=4, minimum_calls=4))
        breaker.call_sync(ok)
        fail(breaker)
        stats = breaker.statistics()
        assert (stats.window_calls, stats.failure_rate, stats.successful_calls) == (2, 0.5, 1)
        with pytest.raises(AttributeError):
            stats.state = CircuitState.OPEN  # type: ignore[misc]

    def test_error_pickles_and_formats(self) -> None:
        """CircuitOpenError keeps its attributes through pickling and formats its message."""
        err = pickle.loads(pickle.dumps(CircuitOpenError("db", 2.5)))  # noqa: S301
        assert (err.name, err.retry_after) == ("db", 2.5)
        assert str(err) == "circuit 'db' is open; retry after 2.500s"


class TestListeners:
    def test_transitions_and_outcomes_are_reported(self, clock: FakeClock) -> None:
        """A listener hears every state change and every call outcome."""
        breaker = make(clock, failure_threshold=1, open_duration=1, ignore_exceptions=BenignError)
        recorder = Recorder()
        breaker.add_listener(recorder)
        breaker.call_sync(ok)
        with pytest.raises(BenignError):
            breaker.call_sync(_raise, BenignError())
        fail(breaker)
        with pytest.raises(CircuitOpenError):
            breaker.call_sync(ok)
        clock.advance(1)
        with pytest.raises(KeyboardInterrupt):
            breaker.call_sync(_raise, KeyboardInterrupt())
        breaker.call_sync(ok)
        assert [c.outcome for c in recorder.calls] == [
            CircuitCallOutcome.SUCCESS,
            CircuitCallOutcome.IGNORED,
            CircuitCallOutcome.FAILURE,
            CircuitCallOutcome.REJECTED,
            CircuitCallOutcome.CANCELLED,
            CircuitCallOutcome.SUCCESS,
        ]
        assert [(c.from_state, c.to_state, c.at) for c in recorder.changes] == [
            (CircuitState.CLOSED, CircuitState.OPEN, 0.0),
            (CircuitState.OPEN, CircuitState.HALF_OPEN, 1.0),
            (CircuitState.HALF_OPEN, CircuitState.CLOSED, 1.0),
        ]
        assert isinstance(recorder.calls[3].exception, CircuitOpenError)

    def test_manual_transitions_are_reported(self, clock: FakeClock) -> None:
        """force_open/disable/reset are transitions too; a no-op reset is not."""
        breaker = make(clock)
        recorder = Recorder()
        breaker.add_listener(recorder)
        breaker.reset()
        breaker.force_open()
        breaker.disable()
        breaker.reset()
        assert [c.to_state for c in recorder.changes] == [
            CircuitState.FORCED_OPEN,
            CircuitState.DISABLED,
            CircuitState.CLOSED,
        ]

    def test_removed_listener_hears_nothing(self, clock: FakeClock) -> None:
        """After remove_listener the fast path is back and the listener is silent."""
        breaker = make(clock)
        recorder = Recorder()
        breaker.add_listener(recorder)
        assert breaker._core.fast_epoch == 0
        breaker.remove_listener(recorder)
        breaker.remove_listener(recorder)
        assert breaker._core.fast_epoch != 0
        breaker.call_sync(ok)
        assert recorder.calls == []

    def test_listener_errors_are_logged(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A failing listener is logged and the call still returns."""

        class Broken(Recorder):
            def on_call(self, event: CircuitCallRecorded) -> None:
                raise RuntimeError(event.outcome)

        breaker = make(clock)
        breaker.add_listener(Broken())
        with caplog.at_level(logging.ERROR, logger="meshkit.resilience"):
            assert breaker.call_sync(ok) == 1
        assert "listener" in caplog.text

    def test_slow_and_duration_are_reported(self, clock: FakeClock) -> None:
        """Outcome events carry the duration and the slow flag."""
        breaker = make(clock, window=CountWindow(), slow_call_duration=1)
        recorder = Recorder()
        breaker.add_listener(recorder)
        breaker.call_sync(clock.advance, 3)
        assert (recorder.calls[0].duration, recorder.calls[0].slow) == (3, True)


class TestShapes:
    def test_sync_decorator(self, clock: FakeClock) -> None:
        """A decorated sync function goes through the breaker and keeps its name."""
        breaker = make(clock, failure_threshold=1)

        @breaker
        def divide(a: int, b: int) -> float:
            return a / b

        assert divide(4, 2) == 2
        assert divide.__name__ == "divide"
        with pytest.raises(ZeroDivisionError):
            divide(1, 0)
        with pytest.raises(CircuitOpenError):
            divide(4, 2)
        clock.advance(30)
        assert divide(8, 2) == 4
        assert state_of(breaker) is CircuitState.CLOSED

    @pytest.mark.anyio
    async def test_decorated_methods_bind_self(self, clock: FakeClock) -> None:
        """A decorated method receives its instance, sync and async alike."""
        breaker = make(clock)

        class Client:
            def __init__(self, base: int) -> None:
                self.base = base

            @breaker
            def get(self, offset: int) -> int:
                return self.base + offset

            @breaker
            async def aget(self, offset: int) -> int:
                return self.base - offset

        client = Client(10)
        assert client.get(2) == 12
        assert await client.aget(2) == 8
        assert inspect.iscoroutinefunction(Client.aget)
        assert not inspect.iscoroutinefunction(Client.get)
        assert Client.get.__name__ == "get"
        assert breaker.statistics().successful_calls == 2

    def test_decorated_success_resets_the_run(self, clock: FakeClock) -> None:
        """A decorated call's success after a failure restarts the consecutive count."""
        breaker = make(clock, failure_threshold=2)
        decorated = breaker(_raise_or_return)
        with pytest.raises(BoomError):
            decorated(BoomError())
        assert decorated(None) == 1
        with pytest.raises(BoomError):
            decorated(BoomError())
        assert state_of(breaker) is CircuitState.CLOSED

    def test_context_manager_records_the_block(self, clock: FakeClock) -> None:
        """`with breaker:` records a failing block and rejects when open."""
        breaker = make(clock, failure_threshold=1)
        with breaker:
            pass
        with pytest.raises(BoomError), breaker:
            raise BoomError
        with pytest.raises(CircuitOpenError), breaker:
            pass  # pragma: no cover - never entered

    def test_unbalanced_exit_is_an_error(self, clock: FakeClock) -> None:
        """Exiting a breaker that was not entered raises RuntimeError."""
        with pytest.raises(RuntimeError):
            make(clock).__exit__(None, None, None)

    def test_nested_breakers(self, clock: FakeClock) -> None:
        """Two breakers nest; each records its own block."""
        outer, inner = make(clock, failure_threshold=1), make(clock, failure_threshold=2)
        with pytest.raises(BoomError), outer, inner:
            raise BoomError
        assert (state_of(outer), state_of(inner)) == (CircuitState.OPEN, CircuitState.CLOSED)

    def test_system_clock_by_default(self) -> None:
        """Without a clock the breaker reads time.monotonic."""
        breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1, open_duration=60))
        fail(breaker)
        with pytest.raises(CircuitOpenError) as info:
            breaker.call_sync(ok)
        assert 59 < info.value.retry_after <= 60

    def test_core_without_shell(self) -> None:
        """The pure core can be driven directly with explicit instants."""
        core = BreakerCore(CircuitBreakerConfig(failure_threshold=1, open_duration=2), "core")
        permit = core.acquire(0.0)
        core.record(permit, 0.5, failed=True, slow=False)
        with pytest.raises(CircuitOpenError):
            core.acquire(1.0)
        assert core.poll(2.5) is CircuitState.HALF_OPEN


@pytest.mark.anyio
class TestAsync:
    async def test_call_and_decorator(self, clock: FakeClock) -> None:
        """`await breaker.call` and an async decorated function share one breaker."""
        breaker = make(clock, failure_threshold=2, open_duration=1)

        @breaker
        async def fetch(value: int) -> int:
            await anyio.lowlevel.checkpoint()
            if value < 0:
                raise BoomError
            return value

        assert await fetch(3) == 3
        assert await breaker.call(fetch.__wrapped__, 4) == 4  # type: ignore[attr-defined]
        for _ in range(2):
            with pytest.raises(BoomError):
                await fetch(-1)
        with pytest.raises(CircuitOpenError):
            await fetch(1)
        clock.advance(1)
        assert await fetch(5) == 5
        assert state_of(breaker) is CircuitState.CLOSED

    async def test_async_fast_path_resets_the_run(self, clock: FakeClock) -> None:
        """An async success after failures resets the consecutive count."""
        breaker = make(clock, failure_threshold=2)

        async def run(exc: BaseException | None) -> int:
            await anyio.lowlevel.checkpoint()
            if exc is not None:
                raise exc
            return 1

        with pytest.raises(BoomError):
            await breaker.call(run, BoomError())
        assert await breaker.call(run, None) == 1
        with pytest.raises(BoomError):
            await breaker.call(run, BoomError())
        assert state_of(breaker) is CircuitState.CLOSED

    async def test_decorated_async_success_resets_the_run(self, clock: FakeClock) -> None:
        """An async decorated success after a failure restarts the consecutive count."""
        breaker = make(clock, failure_threshold=2)
        decorated = breaker(_araise_or_return)
        with pytest.raises(BoomError):
            await decorated(BoomError())
        assert await decorated(None) == 1
        with pytest.raises(BoomError):
            await decorated(BoomError())
        assert state_of(breaker) is CircuitState.CLOSED

    async def test_cancelled_block_gives_the_trial_back(self, clock: FakeClock) -> None:
        """A cancelled `async with` trial is not recorded and frees its slot."""
        breaker = make(clock, failure_threshold=1, open_duration=1)
        fail(breaker)
        clock.advance(1)
        with anyio.CancelScope() as scope:
            async with breaker:
                scope.cancel()
                await anyio.lowlevel.checkpoint()
        stats = breaker.statistics()
        assert (stats.state, stats.half_open_in_flight) == (CircuitState.HALF_OPEN, 0)

    async def test_async_with(self, clock: FakeClock) -> None:
        """`async with breaker:` records the block."""
        breaker = make(clock, failure_threshold=1)
        async with breaker:
            await anyio.lowlevel.checkpoint()
        with pytest.raises(BoomError):
            async with breaker:
                raise BoomError
        with pytest.raises(CircuitOpenError):
            async with breaker:
                pass  # pragma: no cover - never entered

    async def test_slow_path_async(self, clock: FakeClock) -> None:
        """With a window the async call is timed, classified and may be rejected."""
        breaker = make(
            clock,
            failure_threshold=None,
            window=CountWindow(size=2, minimum_calls=2),
            slow_call_duration=1,
            ignore_exceptions=BenignError,
        )

        async def slow(seconds: float) -> float:
            clock.advance(seconds)
            await anyio.lowlevel.checkpoint()
            return seconds

        async def raising(exc: BaseException) -> None:
            await anyio.lowlevel.checkpoint()
            raise exc

        with pytest.raises(BenignError):
            await breaker.call(raising, BenignError())
        with pytest.raises(KeyboardInterrupt):
            await breaker.call(raising, KeyboardInterrupt())
        assert await breaker.call(slow, 2) == 2
        with pytest.raises(BoomError):
            await breaker.call(raising, BoomError())
        assert state_of(breaker) is CircuitState.OPEN
        with pytest.raises(CircuitOpenError):
            await breaker.call(slow, 0)
