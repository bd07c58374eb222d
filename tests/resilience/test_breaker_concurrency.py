"""The breaker under concurrency: many tasks, many threads, cancellation and timeouts."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from meshkit import CircuitOpenError, DeadlineExceededError
from meshkit.resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    CountWindow,
)

if TYPE_CHECKING:
    from meshkit.testing import FakeClock

pytestmark = pytest.mark.anyio


class BoomError(Exception):
    """The failure the protected calls raise."""


def boom() -> None:
    """Fail."""
    raise BoomError


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """Read the state (a function, so mypy does not narrow a property across calls)."""
    return breaker.state


def half_open(clock: FakeClock, trials: int, **kwargs: Any) -> CircuitBreaker:
    """Return a breaker that has just become HALF_OPEN with `trials` trial slots."""
    config = CircuitBreakerConfig(
        failure_threshold=1, open_duration=1, half_open_calls=trials, **kwargs
    )
    breaker = CircuitBreaker(config, name="ho", clock=clock)
    with pytest.raises(BoomError):
        breaker.call_sync(boom)
    clock.advance(1)
    assert state_of(breaker) is CircuitState.HALF_OPEN
    return breaker


class TestManyTasks:
    async def test_exactly_n_of_1000_tasks_get_through(self, clock: FakeClock) -> None:
        """1000 tasks arriving at once at a HALF_OPEN breaker: exactly N are admitted."""
        breaker = half_open(clock, trials=7)
        release = anyio.Event()
        admitted: list[int] = []
        rejected: list[float] = []

        async def trial(i: int) -> None:
            admitted.append(i)
            await release.wait()

        async def caller(i: int) -> None:
            try:
                await breaker.call(trial, i)
            except CircuitOpenError as exc:
                rejected.append(exc.retry_after)

        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(caller, i)
            await anyio.wait_all_tasks_blocked()
            assert len(admitted) == 7
            assert breaker.statistics().half_open_in_flight == 7
            release.set()
        assert (len(admitted), len(rejected)) == (7, 993)
        stats = breaker.statistics()
        assert (stats.state, stats.rejected_calls, stats.successful_calls) == (
            CircuitState.CLOSED,
            993,
            7,
        )

    async def test_cancelled_trials_give_their_slots_back(self, clock: FakeClock) -> None:
        """Cancelling in-flight trials frees their slots for new trials."""
        breaker = half_open(clock, trials=3)
        entered = 0

        async def hang() -> None:
            nonlocal entered
            entered += 1
            await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(_swallow_open, breaker, hang)
            await anyio.wait_all_tasks_blocked()
            assert entered == 3
            tg.cancel_scope.cancel()
        stats = breaker.statistics()
        assert (stats.state, stats.half_open_in_flight, stats.window_calls) == (
            CircuitState.HALF_OPEN,
            0,
            0,
        )
        for _ in range(3):
            assert await breaker.call(_value, 1) == 1
        assert state_of(breaker) is CircuitState.CLOSED

    async def test_ignored_trial_gives_its_slot_back(self, clock: FakeClock) -> None:
        """An ignored exception in a trial frees the slot without deciding anything."""
        breaker = half_open(clock, trials=1, ignore_exceptions=LookupError)

        async def missing() -> None:
            await anyio.lowlevel.checkpoint()
            raise KeyError("gone")

        with pytest.raises(KeyError):
            await breaker.call(missing)
        assert state_of(breaker) is CircuitState.HALF_OPEN
        assert await breaker.call(_value, 2) == 2
        assert state_of(breaker) is CircuitState.CLOSED

    async def test_timeout_outside_is_not_a_failure(self, clock: FakeClock) -> None:
        """A deadline that cancels the call from outside records nothing."""
        breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1), clock=clock)
        with clock.deadline_scope(clock.now() + 5) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(breaker.call, anyio.sleep_forever)
                await anyio.wait_all_tasks_blocked()
                clock.advance(5)
        assert scope.cancelled_caught
        stats = breaker.statistics()
        assert (stats.state, stats.failed_calls, stats.successful_calls) == (
            CircuitState.CLOSED,
            0,
            0,
        )

    async def test_timeout_inside_is_a_failure(self, clock: FakeClock) -> None:
        """A timeout raised by the protected call itself is an Exception, so a failure."""
        breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1), clock=clock)

        async def timing_out() -> None:
            await anyio.lowlevel.checkpoint()
            raise DeadlineExceededError(1.0)

        with pytest.raises(DeadlineExceededError):
            await breaker.call(timing_out)
        assert state_of(breaker) is CircuitState.OPEN

    async def test_no_lock_is_held_across_the_call(self, clock: FakeClock) -> None:
        """The protected call can use the breaker's locked methods without deadlocking."""
        for config in (CircuitBreakerConfig(), CircuitBreakerConfig(window=CountWindow())):
            breaker = CircuitBreaker(config, clock=clock)

            async def inspect(breaker: CircuitBreaker = breaker) -> CircuitState:
                await anyio.lowlevel.checkpoint()
                return breaker.statistics().state

            assert await breaker.call(inspect) is CircuitState.CLOSED
            async with breaker:
                assert state_of(breaker) is CircuitState.CLOSED


async def _value(value: int) -> int:
    await anyio.lowlevel.checkpoint()
    return value


async def _swallow_open(breaker: CircuitBreaker, fn: object) -> None:
    with contextlib.suppress(CircuitOpenError):
        await breaker.call(fn)  # type: ignore[arg-type]


@pytest.mark.usefixtures("eager_switching")
class TestManyThreads:
    @pytest.mark.parametrize(
        "config",
        [
            CircuitBreakerConfig(failure_threshold=10**9),
            CircuitBreakerConfig(failure_threshold=None, window=CountWindow(size=50)),
        ],
        ids=["fast-path", "window"],
    )
    def test_eight_threads_lose_no_counts(self, config: CircuitBreakerConfig) -> None:
        """8 threads x 2000 calls through call_sync: every success and failure is counted."""
        config = CircuitBreakerConfig(
            failure_threshold=config.failure_threshold,
            window=config.window,
            failure_rate_threshold=1.0,
        )
        breaker = CircuitBreaker(config)
        calls, threads = 2000, 8

        def work(seed: int) -> None:
            for i in range(calls):
                if (i + seed) % 3 == 0:
                    with pytest.raises(BoomError):
                        breaker.call_sync(boom)
                else:
                    breaker.call_sync(int)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
        stats = breaker.statistics()
        failures = sum(1 for s in range(threads) for i in range(calls) if (i + s) % 3 == 0)
        assert stats.failed_calls == failures
        assert stats.successful_calls == calls * threads - failures
        assert stats.state is CircuitState.CLOSED

    def test_threads_at_half_open_admit_exactly_n(self, clock: FakeClock) -> None:
        """16 threads arriving at a HALF_OPEN breaker: exactly N trials run."""
        breaker = half_open(clock, trials=3)
        release = threading.Event()
        start = threading.Barrier(16)
        admitted: list[int] = []
        rejected: list[int] = []

        def trial(i: int) -> None:
            admitted.append(i)
            release.wait()

        def caller(i: int) -> None:
            start.wait()
            try:
                breaker.call_sync(trial, i)
            except CircuitOpenError:
                rejected.append(i)
                if len(rejected) == 13:
                    release.set()

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(caller, range(16)))
        assert (len(admitted), len(rejected)) == (3, 13)
        assert state_of(breaker) is CircuitState.CLOSED

    def test_statistics_during_a_call_from_another_thread(self) -> None:
        """Another thread reads statistics while a call is in progress (no lock held)."""
        breaker = CircuitBreaker(CircuitBreakerConfig(window=CountWindow()))
        inside, seen = threading.Event(), threading.Event()

        def slow_call() -> int:
            inside.set()
            assert seen.wait(10)
            return 1

        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(breaker.call_sync, slow_call)
            assert inside.wait(10)
            assert breaker.statistics().successful_calls == 0
            seen.set()
            assert future.result() == 1
