"""Hypothesis drives the breaker (its pure core, then whole calls) against a plain model."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from meshkit import CircuitOpenError
from meshkit.resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    CountWindow,
    ExponentialOpenDuration,
    TimeWindow,
)
from meshkit.resilience._breaker_core import BreakerCore, CircuitBreakerStatistics
from meshkit.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Callable

RATES = st.sampled_from([0.25, 0.5, 0.75, 1.0])


@st.composite
def configs(draw: st.DrawFn) -> CircuitBreakerConfig:
    """A config of one of the trip models: consecutive, count window, time window, slow."""
    model = draw(st.sampled_from(["consecutive", "count", "time", "slow"]))
    window: CountWindow | TimeWindow | None = None
    if model in {"count", "slow"}:
        size = draw(st.integers(1, 6))
        window = CountWindow(size=size, minimum_calls=draw(st.integers(1, size)))
    elif model == "time":
        window = TimeWindow(
            seconds=draw(st.sampled_from([1.0, 2.0, 5.0])),
            buckets=draw(st.integers(1, 5)),
            minimum_calls=draw(st.integers(1, 4)),
        )
    threshold = (
        draw(st.integers(1, 4)) if model == "consecutive" else draw(st.none() | st.integers(1, 6))
    )
    return CircuitBreakerConfig(
        failure_threshold=threshold,
        window=window,
        failure_rate_threshold=draw(RATES),
        slow_call_duration=1.0 if model == "slow" else None,
        slow_call_rate_threshold=draw(RATES),
        open_duration=ExponentialOpenDuration(
            initial=draw(st.sampled_from([0.5, 1.0, 2.0])), multiplier=2.0, maximum=8.0
        ),
        half_open_calls=draw(st.integers(1, 3)),
        half_open_max_wait=draw(st.none() | st.sampled_from([1.0, 3.0])),
    )


class Model:
    """The breaker's rules written as plainly as possible: lists instead of rings."""

    def __init__(self, config: CircuitBreakerConfig) -> None:
        self.config = config
        self.state = CircuitState.CLOSED
        self.period = 0
        self.openings = 0
        self.consecutive = 0
        self.records: list[tuple[float, bool, bool]] = []
        self.trials: list[tuple[bool, bool]] = []
        self.in_flight = 0
        self.open_until = 0.0
        self.half_open_deadline = math.inf
        self.counts = {"success": 0, "failure": 0, "slow": 0, "ignored": 0, "rejected": 0}

    def enter(self, state: CircuitState) -> None:
        self.state = state
        self.period += 1
        self.consecutive = 0
        self.trials = []
        self.in_flight = 0

    def open(self, at: float) -> None:
        self.openings += 1
        duration = self.config.open_duration
        assert isinstance(duration, ExponentialOpenDuration)
        self.open_until = at + min(8.0, duration.initial * 2 ** (self.openings - 1))
        self.enter(CircuitState.OPEN)

    def close(self) -> None:
        self.openings = 0
        self.records = []
        self.enter(CircuitState.CLOSED)

    def poll(self, now: float) -> None:
        """Replay the timers that ran out by `now`, each at its own deadline (Resilience4j)."""
        while True:
            if self.state is CircuitState.OPEN and now >= self.open_until:
                self.half_open_deadline = math.inf  # the first trial starts the timer
                self.enter(CircuitState.HALF_OPEN)
            elif self.state is CircuitState.HALF_OPEN and now >= self.half_open_deadline:
                self.open(self.half_open_deadline)
            else:
                return

    def window(self, now: float) -> list[tuple[float, bool, bool]]:
        window = self.config.window
        if isinstance(window, CountWindow):
            return self.records[-window.size :]
        if isinstance(window, TimeWindow):
            width = window.seconds / window.buckets
            newest = math.floor(now / width)
            return [r for r in self.records if newest - math.floor(r[0] / width) < window.buckets]
        return []

    def trips(self, outcomes: list[tuple[bool, bool]]) -> bool:
        calls = len(outcomes)
        failures = sum(f for f, _ in outcomes)
        slow = sum(s for _, s in outcomes)
        if failures / calls >= self.config.failure_rate_threshold:
            return True
        return (
            self.config.slow_call_duration is not None
            and slow / calls >= self.config.slow_call_rate_threshold
        )

    def acquire(self, now: float) -> int | None:
        self.poll(now)
        if self.state in {CircuitState.CLOSED, CircuitState.DISABLED}:
            return self.period
        admitted = self.in_flight + len(self.trials)
        if self.state is CircuitState.HALF_OPEN and admitted < self.config.half_open_calls:
            if admitted == 0:
                self.half_open_deadline = now + (self.config.half_open_max_wait or math.inf)
            self.in_flight += 1
            return self.period
        self.counts["rejected"] += 1
        return None

    def record(self, period: int, now: float, failed: bool, slow: bool) -> None:
        self.poll(now)
        if self.state is CircuitState.DISABLED:
            return  # a disabled breaker records nothing
        self.counts["failure" if failed else "success"] += 1
        self.counts["slow"] += slow
        if period != self.period:
            return
        if self.state is CircuitState.CLOSED:
            self.consecutive = self.consecutive + 1 if failed else 0
            threshold = self.config.failure_threshold
            if threshold is not None and self.consecutive >= threshold:
                self.open(now)
                return
            window = self.config.window
            if window is None:
                return
            self.records.append((now, failed, slow))
            current = [(f, s) for _, f, s in self.window(now)]
            if len(current) >= window.minimum_calls and self.trips(current):
                self.open(now)
        elif self.state is CircuitState.HALF_OPEN:
            self.in_flight -= 1
            self.trials.append((failed, slow))
            if len(self.trials) >= self.config.half_open_calls:
                if self.trips(self.trials):
                    self.open(now)
                else:
                    self.close()

    def release(self, period: int, now: float, *, ignored: bool) -> None:
        self.poll(now)
        if self.state is CircuitState.DISABLED:
            return
        self.counts["ignored"] += ignored
        if period == self.period and self.state is CircuitState.HALF_OPEN:
            self.in_flight -= 1


def assert_matches(stats: CircuitBreakerStatistics, model: Model, now: float) -> None:
    """Check a breaker's statistics against the model's state at `now`."""
    model.poll(now)
    assert stats.state is model.state
    assert stats.consecutive_failures == model.consecutive
    assert stats.consecutive_openings == model.openings
    assert stats.half_open_in_flight == model.in_flight
    if model.state is CircuitState.HALF_OPEN:
        outcomes = model.trials
    else:
        outcomes = [(f, s) for _, f, s in model.window(now)]
    assert stats.window_calls == len(outcomes)
    assert stats.window_failures == sum(f for f, _ in outcomes)
    assert stats.window_slow_calls == sum(s for _, s in outcomes)
    counts = ("success", "failure", "slow", "ignored", "rejected")
    assert (
        stats.successful_calls,
        stats.failed_calls,
        stats.slow_calls,
        stats.ignored_calls,
        stats.rejected_calls,
    ) == tuple(model.counts[k] for k in counts)


class BreakerMachine(RuleBasedStateMachine):
    """Random calls, outcomes, clock moves and manual transitions on core and model alike."""

    permits = Bundle("permits")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.core: BreakerCore
        self.model: Model
        self.last_transition = 0.0

    @property
    def now(self) -> float:
        """The fake clock's time, which every core call is given."""
        return self.clock.now()

    @initialize(config=configs(), listening=st.booleans())
    def build(self, config: CircuitBreakerConfig, listening: bool) -> None:
        self.core = BreakerCore(config, "sm")
        self.core.set_listening(listening=listening)
        self.model = Model(config)
        self.last_transition = 0.0

    @rule(target=permits)
    def acquire(self) -> Any:
        expected = self.model.acquire(self.now)
        if expected is None:
            with pytest.raises(CircuitOpenError) as info:
                self.core.acquire(self.now)
            model = self.model
            open_for = model.open_until - self.now if model.state is CircuitState.OPEN else 0.0
            assert info.value.retry_after == pytest.approx(max(open_for, 0.0))
            return multiple()
        return (self.core.acquire(self.now), expected)

    @rule(
        permit=consumes(permits),
        failed=st.booleans(),
        slow=st.booleans(),
    )
    def record(self, permit: tuple[int, int], failed: bool, slow: bool) -> None:
        slow = slow and self.model.config.slow_call_duration is not None
        self.core.record(permit[0], self.now, failed=failed, slow=slow)
        self.model.record(permit[1], self.now, failed, slow)

    @rule(permit=consumes(permits), ignored=st.booleans())
    def release(self, permit: tuple[int, int], ignored: bool) -> None:
        self.core.release(permit[0], self.now, ignored=ignored)
        self.model.release(permit[1], self.now, ignored=ignored)

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.5, 7.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(which=st.sampled_from(["force_open", "disable", "reset"]))
    def control(self, which: str) -> None:
        getattr(self.core, which)(self.now)
        if which == "reset":
            self.model.close()
        else:
            self.model.enter(
                CircuitState.FORCED_OPEN if which == "force_open" else CircuitState.DISABLED
            )

    @invariant()
    def same_state_and_counts(self) -> None:
        assert_matches(self.core.statistics(self.now), self.model, self.now)

    @invariant()
    def transitions_happen_at_their_deadlines(self) -> None:
        """Transitions are dated by the deadline that caused them: in order, never ahead."""
        for _old, _new, at in self.core.take_transitions():
            assert self.last_transition <= at <= self.now
            self.last_transition = at
        if self.core.state is not CircuitState.HALF_OPEN:
            return
        trials = self.core.in_flight + self.core.trial_calls
        if trials:  # the first trial started the timer, no later than now
            limit = self.model.config.half_open_max_wait or math.inf
            assert self.core.half_open_deadline <= self.now + limit

    @invariant()
    def fast_path_only_when_closed(self) -> None:
        fast = self.core.fast_epoch
        assert fast == 0 or (self.core.state is CircuitState.CLOSED and fast == self.core.epoch)


class BoomError(Exception):
    """A failure raised by a protected call."""


class ShellMachine(RuleBasedStateMachine):
    """Whole calls through the breaker's faces on a FakeClock, against the model.

    Each call goes through `call_sync`, `await call` or a decorated function, at random: the
    faces drive one source, so the model cannot tell them apart.

    Each call makes the fake clock advance by its duration, so the shell's own timing decides
    which calls are slow; exceptions go through the shell's classification.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker: CircuitBreaker
        self.model: Model
        self.ignores = False
        self.checks_result = False

    @initialize(config=configs(), ignores=st.booleans(), checks_result=st.booleans())
    def build(self, config: CircuitBreakerConfig, ignores: bool, checks_result: bool) -> None:
        self.ignores, self.checks_result = ignores, checks_result
        config = attrs.evolve(
            config,
            ignore_exceptions=LookupError if ignores else (),
            record_result=(lambda r: r == "bad") if checks_result else None,
        )
        self.breaker = CircuitBreaker(config, name="shell", clock=self.clock)
        self.model = Model(config)

    def through(self, face: str, kind: str, protected: Callable[[], str]) -> str:
        """Call `protected` through one face of the breaker: all faces must agree."""
        if face == "call" and kind != "interrupt":  # asyncio handles KeyboardInterrupt itself

            async def aprotected() -> str:
                return protected()

            return anyio.run(self.breaker.call, aprotected)
        if face == "decorated":
            return self.breaker(protected)()
        return self.breaker.call_sync(protected)

    @rule(
        kind=st.sampled_from(["ok", "bad", "fail", "lookup", "interrupt"]),
        duration=st.sampled_from([0.0, 0.5, 1.5]),
        face=st.sampled_from(["call_sync", "call", "decorated"]),
    )
    def call(self, kind: str, duration: float, face: str) -> None:
        period = self.model.acquire(self.clock.now())

        def protected() -> str:
            self.clock.advance(duration)
            if kind in RAISES:
                raise RAISES[kind]
            return kind

        if period is None:
            with pytest.raises(CircuitOpenError):
                self.through(face, kind, protected)
            return
        if kind in RAISES:
            with pytest.raises(type(RAISES[kind])):
                self.through(face, kind, protected)
        else:
            assert self.through(face, kind, protected) == kind
        self.model_outcome(period, kind, duration)

    def model_outcome(self, period: int, kind: str, duration: float) -> None:
        now = self.clock.now()
        if kind == "interrupt":
            self.model.release(period, now, ignored=False)
        elif kind == "lookup" and self.ignores:
            self.model.release(period, now, ignored=True)
        else:
            slow_after = self.model.config.slow_call_duration
            slow = slow_after is not None and duration > slow_after
            failed = kind in {"fail", "lookup"} or (kind == "bad" and self.checks_result)
            self.model.record(period, now, failed, slow)

    @rule(seconds=st.sampled_from([0.25, 1.0, 2.5, 7.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(which=st.sampled_from(["force_open", "disable", "reset"]))
    def control(self, which: str) -> None:
        getattr(self.breaker, which)()
        if which == "reset":
            self.model.close()
        else:
            self.model.enter(
                CircuitState.FORCED_OPEN if which == "force_open" else CircuitState.DISABLED
            )

    @invariant()
    def same_state_and_counts(self) -> None:
        assert_matches(self.breaker.statistics(), self.model, self.clock.now())


RAISES: dict[str, BaseException] = {
    "fail": BoomError(),
    "lookup": KeyError("missing"),
    "interrupt": KeyboardInterrupt(),
}

ShellMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestShellStateMachine = ShellMachine.TestCase

BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50)
TestBreakerStateMachine = BreakerMachine.TestCase
