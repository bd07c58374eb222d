"""Tests for the resilience Pipeline: order, timeouts, risky combinations, per-call details."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    RateLimitExceededError,
)
from meshkit.resilience import (
    Bulkhead,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    Pipeline,
    PipelineOutcome,
    RateLimiter,
    Retry,
    RetryBudget,
)
from meshkit.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio


class _NoWait:
    """A backoff that never waits, so retries run back to back on the fake clock."""

    def delay(self, retry: int) -> float:
        return 0.0


NO_WAIT = _NoWait()


class BoomError(Exception):
    """A failure of the protected dependency."""


class _ScopeCountingClock:
    """A FakeClock that counts the deadline scopes it hands out."""

    def __init__(self) -> None:
        self.inner = FakeClock()
        self.scopes = 0

    def now(self) -> float:
        return self.inner.now()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        self.inner.sleep_sync(seconds)

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        self.scopes += 1
        return self.inner.deadline_scope(deadline)


def _flaky(failures: int) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    calls: list[int] = []

    async def fn() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= failures:
            raise BoomError(len(calls))
        return "ok"

    return fn, calls


class TestComposition:
    def test_layers_are_named_in_the_documented_order(self, clock: FakeClock) -> None:
        """The configured policies are layered timeout, retry, limiter, breaker, bulkhead."""
        pipeline = Pipeline(
            attempt_timeout=1,
            bulkhead=Bulkhead(clock=clock),
            breaker=CircuitBreaker(clock=clock),
            retry=Retry(clock=clock),
            timeout=5,
            clock=clock,
        )
        assert pipeline.layers == ("timeout", "retry", "breaker", "bulkhead", "attempt_timeout")
        assert Pipeline(retry=Retry(clock=clock), clock=clock).layers == ("retry",)

    async def test_empty_pipeline_passes_through(self) -> None:
        """A pipeline with no policy just awaits the call."""

        async def fn(x: int, *, y: int) -> int:
            return x + y

        assert await Pipeline().call(fn, 1, y=2) == 3
        assert Pipeline().call_sync(lambda x: x * 2, 21) == 42

    async def test_retry_wraps_breaker_and_bulkhead(self, clock: FakeClock) -> None:
        """Each attempt goes through the breaker and holds a bulkhead slot while it runs."""
        breaker = CircuitBreaker(clock=clock)
        bulkhead = Bulkhead(max_concurrent=1, clock=clock)
        seen_active: list[int] = []

        calls = 0

        async def fn() -> str:
            nonlocal calls
            calls += 1
            seen_active.append(bulkhead.statistics().active)
            if calls < 3:
                raise BoomError
            return "done"

        pipeline = Pipeline(
            retry=Retry(max_attempts=3, backoff=NO_WAIT, clock=clock),
            breaker=breaker,
            bulkhead=bulkhead,
            clock=clock,
        )
        assert await pipeline.call(fn) == "done"
        assert seen_active == [1, 1, 1]
        assert bulkhead.statistics().active == 0
        stats = breaker.statistics()
        assert stats.state is CircuitState.CLOSED

    async def test_open_breaker_is_not_retried(self, clock: FakeClock) -> None:
        """CircuitOpenError ends the call at once: retry never hammers an open breaker."""
        breaker = CircuitBreaker(clock=clock)
        breaker.force_open()
        fn, calls = _flaky(0)
        pipeline = Pipeline(
            retry=Retry(max_attempts=5, backoff=NO_WAIT, clock=clock), breaker=breaker, clock=clock
        )
        outcome = await pipeline.call_with_details(fn)
        assert isinstance(outcome.error, CircuitOpenError)
        assert outcome.attempts == 1
        assert calls == []

    async def test_rate_limiter_sits_outside_the_breaker(self, clock: FakeClock) -> None:
        """A rate-limit rejection is not recorded by the breaker as a dependency failure."""
        breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1), clock=clock)
        limiter = RateLimiter(rate=1, burst=1, max_wait=0, clock=clock)
        fn, _ = _flaky(0)
        pipeline = Pipeline(rate_limiter=limiter, breaker=breaker, clock=clock)
        assert await pipeline.call(fn) == "ok"
        with pytest.raises(RateLimitExceededError):
            await pipeline.call(fn)
        assert breaker.state is CircuitState.CLOSED

    async def test_full_bulkhead_does_not_trip_the_default_breaker(self, clock: FakeClock) -> None:
        """A default breaker ignores BulkheadFullError, so local load shedding cannot trip it."""
        breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1), clock=clock)
        bulkhead = Bulkhead(max_concurrent=1, max_queued=0, clock=clock)
        pipeline = Pipeline(breaker=breaker, bulkhead=bulkhead, clock=clock)
        release = anyio.Event()

        async def hold() -> None:
            await release.wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.call, hold)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(BulkheadFullError):
                await pipeline.call(hold)
            release.set()
        assert breaker.state is CircuitState.CLOSED


class TestTimeouts:
    async def test_no_timeout_creates_no_cancel_scope(self) -> None:
        """Without timeouts configured the pipeline never asks the clock for a scope."""
        clock = _ScopeCountingClock()
        fn, _ = _flaky(1)
        pipeline = Pipeline(
            retry=Retry(max_attempts=2, backoff=NO_WAIT, clock=clock),
            breaker=CircuitBreaker(clock=clock),
            bulkhead=Bulkhead(max_concurrent=4, clock=clock),
            clock=clock,
        )
        assert await pipeline.call(fn) == "ok"
        assert clock.scopes == 0
        timed = Pipeline(timeout=5, clock=clock)
        assert await timed.call(_flaky(0)[0]) == "ok"
        assert clock.scopes == 1

    async def test_attempt_timeout_retries_and_total_caps(self, clock: FakeClock) -> None:
        """Slow attempts time out and are retried until the total deadline ends the call."""
        attempts = 0

        async def slow() -> None:
            nonlocal attempts
            attempts += 1
            await clock.sleep(10)

        pipeline = Pipeline(
            timeout=2.5,
            retry=Retry(max_attempts=10, backoff=NO_WAIT, clock=clock),
            attempt_timeout=1.0,
            clock=clock,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.advance_stepwise, 5)
            with pytest.raises(DeadlineExceededError) as info:
                await pipeline.call(slow)
        assert info.value.timeout == 2.5
        assert attempts == 3
        assert clock.now() == 5

    async def test_details_of_a_timed_out_call(self, clock: FakeClock) -> None:
        """call_with_details reports a total-timeout expiry as the call's error."""

        async def slow() -> None:
            await clock.sleep(10)

        pipeline = Pipeline(timeout=1, clock=clock)
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.advance_stepwise, 2)
            outcome = await pipeline.call_with_details(slow)
        assert isinstance(outcome.error, DeadlineExceededError)
        assert not outcome.succeeded
        assert outcome.elapsed == 1.0
        with pytest.raises(DeadlineExceededError):
            outcome.unwrap()

    async def test_details_of_retries_cut_short_by_the_total_timeout(
        self, clock: FakeClock
    ) -> None:
        """A total-timeout expiry keeps the attempts and errors the retries made before it."""

        async def slow() -> None:
            await clock.sleep(10)

        pipeline = Pipeline(
            timeout=2.5,
            retry=Retry(max_attempts=10, backoff=NO_WAIT, clock=clock),
            attempt_timeout=1.0,
            clock=clock,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.advance_stepwise, 5)
            outcome = await pipeline.call_with_details(slow)
        assert isinstance(outcome.error, DeadlineExceededError)
        assert outcome.error.timeout == 2.5
        assert outcome.attempts == 3
        assert [e.timeout for e in outcome.errors] == [1.0, 1.0, 2.5]  # type: ignore[attr-defined]
        assert outcome.errors[-1] is outcome.error

    def test_sync_overrun_is_reported(self, clock: FakeClock) -> None:
        """From sync code, an attempt that overran its deadline raises afterwards."""
        pipeline = Pipeline(timeout=1, clock=clock)

        def slow() -> str:
            clock.advance(2)
            return "late"

        with pytest.raises(DeadlineExceededError):
            pipeline.call_sync(slow)
        assert pipeline.call_sync(lambda: "fast") == "fast"


class TestDetails:
    async def test_details_count_attempts_and_errors(self, clock: FakeClock) -> None:
        """Each call's outcome has its own attempts, errors and delay."""
        pipeline = Pipeline(
            retry=Retry(max_attempts=4, backoff=NO_WAIT, clock=clock),
            breaker=CircuitBreaker(clock=clock),
            clock=clock,
        )
        fn, _ = _flaky(2)
        outcome = await pipeline.call_with_details(fn)
        assert outcome.succeeded
        assert outcome.unwrap() == "ok"
        assert outcome.attempts == 3
        assert [type(e) for e in outcome.errors] == [BoomError, BoomError]
        assert outcome.delay == 0.0

    async def test_details_without_retry(self, clock: FakeClock) -> None:
        """Without a Retry the outcome reports the single attempt."""
        ok = await Pipeline(clock=clock).call_with_details(_flaky(0)[0])
        assert (ok.value, ok.attempts, ok.errors) == ("ok", 1, ())
        bad = await Pipeline(breaker=CircuitBreaker(clock=clock), clock=clock).call_with_details(
            _flaky(1)[0]
        )
        assert isinstance(bad.error, BoomError)
        assert bad.errors == (bad.error,)

    async def test_concurrent_calls_do_not_share_details(self, clock: FakeClock) -> None:
        """Concurrent calls through one pipeline each get their own history."""
        pipeline = Pipeline(retry=Retry(max_attempts=5, backoff=NO_WAIT, clock=clock), clock=clock)
        results: dict[int, int] = {}

        async def run(failures: int) -> None:
            fn, _ = _flaky(failures)
            results[failures] = (await pipeline.call_with_details(fn)).attempts

        async with anyio.create_task_group() as tg:
            for failures in range(4):
                tg.start_soon(run, failures)
        assert results == {0: 1, 1: 2, 2: 3, 3: 4}

    def test_threads_share_one_pipeline(self, clock: FakeClock) -> None:
        """Eight threads calling through one sync pipeline all succeed, none lost."""
        breaker = CircuitBreaker(clock=clock)
        pipeline = Pipeline(
            breaker=breaker, bulkhead=Bulkhead(max_concurrent=8, clock=clock), clock=clock
        )
        done: list[int] = []
        lock = threading.Lock()

        def work() -> None:
            for i in range(200):
                value = pipeline.call_sync(int, i)
                with lock:
                    done.append(value)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(done) == 1600
        assert breaker.statistics().successful_calls == 1600

    @given(failures=st.integers(0, 6), max_attempts=st.integers(1, 5))
    def test_attempts_property(self, failures: int, max_attempts: int) -> None:
        """Attempts = min(failures + 1, max_attempts); success iff failures < max_attempts."""
        clock = FakeClock()
        pipeline = Pipeline(
            retry=Retry(max_attempts=max_attempts, backoff=NO_WAIT, clock=clock), clock=clock
        )
        fn, calls = _flaky(failures)

        async def run() -> PipelineOutcome[str]:
            return await pipeline.call_with_details(fn)

        outcome = anyio.run(run)
        assert outcome.attempts == min(failures + 1, max_attempts) == len(calls)
        assert outcome.succeeded is (failures < max_attempts)


class TestRiskyCombinations:
    def test_attempt_timeout_must_be_shorter_than_total(self) -> None:
        """A per-attempt timeout that cannot fire before the total one is rejected."""
        with pytest.raises(ConfigurationError, match="attempt_timeout=2") as info:
            Pipeline(timeout=2, attempt_timeout=2)
        assert info.value.field == "attempt_timeout"

    def test_retry_attempt_timeout_must_be_shorter_than_total(self) -> None:
        """The check holds for a per-attempt timeout set in the Retry as well."""
        with pytest.raises(ConfigurationError, match="timeout=2") as info:
            Pipeline(timeout=2, retry=Retry(attempt_timeout=3))
        assert (info.value.field, info.value.value) == ("retry.attempt_timeout", 3)
        assert Pipeline(timeout=2, retry=Retry(attempt_timeout=1)).timeout == 2

    def test_two_attempt_timeouts_are_rejected(self) -> None:
        """Setting the per-attempt timeout in both Retry and Pipeline is ambiguous."""
        with pytest.raises(ConfigurationError, match="one place"):
            Pipeline(retry=Retry(attempt_timeout=1), attempt_timeout=0.5)

    def test_breaker_recording_bulkhead_rejections_is_rejected(self) -> None:
        """A breaker that would count BulkheadFullError as a failure is refused."""
        breaker = CircuitBreaker(CircuitBreakerConfig(ignore_exceptions=()), name="db")
        with pytest.raises(ConfigurationError, match="BulkheadFullError") as info:
            Pipeline(breaker=breaker, bulkhead=Bulkhead())
        assert (info.value.field, info.value.value) == ("breaker", "db")

    def test_policies_must_share_the_clock(self, clock: FakeClock) -> None:
        """Policies reading another clock than the pipeline's are refused."""
        with pytest.raises(ConfigurationError) as info:
            Pipeline(retry=Retry(clock=clock))
        assert info.value.field == "retry.clock"

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("timeout", 0),
            ("timeout", float("inf")),
            ("attempt_timeout", -1),
            ("retry", 3),
            ("rate_limiter", 3),
            ("rate_limiter", RateLimiter),  # the class, not an instance
        ],
    )
    def test_bad_values_name_the_field(self, field: str, value: object) -> None:
        """Bad settings raise ConfigurationError naming the field and value."""
        with pytest.raises(ConfigurationError) as info:
            Pipeline(**{field: value})  # type: ignore[arg-type]
        assert (info.value.field, info.value.value) == (field, value)


class TestClockChecks:
    def test_retry_budget_must_share_the_clock(self, clock: FakeClock) -> None:
        """A retry budget counting on another clock than the pipeline's is refused."""
        retry = Retry(budget=RetryBudget(), clock=clock)
        with pytest.raises(ConfigurationError) as info:
            Pipeline(retry=retry, clock=clock)
        assert info.value.field == "retry.budget.clock"


class TestSyncDetails:
    def test_sync_details_count_attempts(self, clock: FakeClock) -> None:
        """call_sync_with_details reports attempts and errors of a sync call."""
        pipeline = Pipeline(
            timeout=5,
            retry=Retry(max_attempts=3, backoff=NO_WAIT, clock=clock),
            breaker=CircuitBreaker(clock=clock),
            clock=clock,
        )
        calls = 0

        def flaky() -> str:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise BoomError(calls)
            return "ok"

        outcome = pipeline.call_sync_with_details(flaky)
        assert (outcome.value, outcome.attempts, len(outcome.errors)) == ("ok", 3, 2)

    def test_sync_details_without_policies_and_on_failure(self, clock: FakeClock) -> None:
        """With no policy the single attempt is reported; a failure becomes the error."""
        assert Pipeline(clock=clock).call_sync_with_details(int, "7").unwrap() == 7

        def broken() -> None:
            raise BoomError

        outcome = Pipeline(breaker=CircuitBreaker(clock=clock), clock=clock).call_sync_with_details(
            broken
        )
        assert isinstance(outcome.error, BoomError)
        assert outcome.attempts == 1
