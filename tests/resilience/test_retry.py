"""Tests for the Retry policy."""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshkit import (
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    RateLimitExceededError,
)
from meshkit.resilience import (
    ExponentialBackoff,
    Retry,
    RetryBudget,
    RetryEvent,
    RetryHistory,
    RetryOutcome,
    Timeout,
    time_remaining,
)
from meshkit.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio

T = TypeVar("T")
FIXED = ExponentialBackoff(base=1, cap=8, jitter=False)


async def autojump(clock: FakeClock, fn: Callable[[], Awaitable[T]]) -> T:
    """Run `fn`, jumping the fake clock to the next sleeper or deadline whenever all block."""
    box: dict[str, Any] = {}
    done = anyio.Event()

    async def run() -> None:
        try:
            box["value"] = await fn()
        except Exception as exc:
            box["error"] = exc
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        while True:
            await anyio.wait_all_tasks_blocked()
            if done.is_set():
                break
            due = [heap[0][0] for heap in (clock._sleepers, clock._scopes) if heap]
            clock.advance(max(min(due) - clock.now(), 0.0))
    if "error" in box:
        raise box["error"]
    result: T = box["value"]
    return result


class BoomError(Exception):
    """A retriable failure."""


class Flaky:
    """A callable failing with the given exceptions, then returning `value`."""

    def __init__(self, *errors: Exception, value: object = "ok") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    def sync(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value

    async def __call__(self, *args: object, **kwargs: object) -> object:
        return self.sync(*args, **kwargs)


class TestRetryConfig:
    def test_defaults(self) -> None:
        """Retry() makes 3 attempts with jittered backoff, no timeout, no budget."""
        retry = Retry()
        assert retry.max_attempts == 3
        assert retry.backoff == ExponentialBackoff()
        assert (retry.attempt_timeout, retry.budget, retry.on_retry) == (None, None, ())
        assert retry._timeout is None

    def test_single_listener_becomes_a_tuple(self) -> None:
        """A lone callable passed as on_retry is wrapped in a tuple."""
        assert Retry(on_retry=print).on_retry == (print,)

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"max_attempts": 0}, "max_attempts"),
            ({"max_attempts": True}, "max_attempts"),
            ({"max_attempts": 2.0}, "max_attempts"),
            ({"backoff": 1.0}, "backoff"),
            ({"attempt_timeout": 0}, "attempt_timeout"),
            ({"attempt_timeout": math.inf}, "attempt_timeout"),
            ({"retry_on": 3}, "retry_on"),
            ({"retry_on": (ValueError, int)}, "retry_on"),
            ({"retry_on": KeyboardInterrupt}, "retry_on"),
            ({"retry_if_result": "yes"}, "retry_if_result"),
            ({"retry_after": None}, "retry_after"),
            ({"budget": 5}, "budget"),
            ({"on_retry": [print, 3]}, "on_retry"),
            ({"on_retry": 3}, "on_retry"),
            ({"on_retry": None}, "on_retry"),
            ({"name": 1}, "name"),
            ({"name": ""}, "name"),
            ({"clock": "now"}, "clock"),
        ],
    )
    def test_rejects_bad_config(self, kwargs: dict[str, object], field: str) -> None:
        """A bad value raises ConfigurationError naming the field."""
        with pytest.raises(ConfigurationError) as info:
            Retry(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field


class TestRetryAsync:
    async def test_first_success_is_returned(self, clock: FakeClock) -> None:
        """A call that succeeds at once is called once, with its arguments, and not slept."""
        seen: list[tuple[object, ...]] = []

        async def echo(*args: object, **kwargs: object) -> str:
            seen.append((args, kwargs))
            return "done"

        assert await Retry(clock=clock).call(echo, 1, k=2) == "done"
        assert seen == [((1,), {"k": 2})]
        assert clock.now() == 0.0

    async def test_retries_until_success(self, clock: FakeClock) -> None:
        """Failures are retried with growing backoff until a call succeeds."""
        flaky = Flaky(BoomError(), BoomError())
        retry = Retry(max_attempts=5, backoff=FIXED, clock=clock)
        assert await autojump(clock, lambda: retry.call(flaky)) == "ok"
        assert flaky.calls == 3
        assert clock.now() == 3.0  # 1 + 2

    async def test_last_error_reraised_unchanged(self, clock: FakeClock) -> None:
        """After the last attempt the last exception object is re-raised, with a note."""
        errors = [BoomError("1"), BoomError("2"), BoomError("3")]
        flaky = Flaky(*errors)
        retry = Retry(backoff=FIXED, clock=clock, name="db")
        with pytest.raises(BoomError) as info:
            await autojump(clock, lambda: retry.call(flaky))
        assert info.value is errors[2]
        assert info.value.__notes__ == ["db: gave up after 3 attempt(s): max_attempts reached"]
        assert flaky.calls == 3

    async def test_unlisted_exception_not_retried(self, clock: FakeClock) -> None:
        """An exception outside retry_on propagates at once, without a note."""
        flaky = Flaky(TypeError())
        retry = Retry(retry_on=(BoomError, ValueError), clock=clock)
        with pytest.raises(TypeError) as info:
            await retry.call(flaky)
        assert not hasattr(info.value, "__notes__")
        assert flaky.calls == 1

    async def test_exception_predicate(self, clock: FakeClock) -> None:
        """A callable retry_on decides per exception."""
        flaky = Flaky(BoomError("again"), BoomError("fatal"))
        retry = Retry(retry_on=lambda exc: str(exc) == "again", backoff=FIXED, clock=clock)
        with pytest.raises(BoomError, match="fatal"):
            await autojump(clock, lambda: retry.call(flaky))
        assert flaky.calls == 2

    async def test_circuit_open_never_retried(self, clock: FakeClock) -> None:
        """CircuitOpenError is not retried, whatever retry_on says."""
        flaky = Flaky(CircuitOpenError("db", 5.0))
        with pytest.raises(CircuitOpenError):
            await Retry(clock=clock).call(flaky)
        assert flaky.calls == 1

    async def test_cancel_during_backoff_stops_at_once(self, clock: FakeClock) -> None:
        """Cancelling the caller during a backoff sleep ends the call; nothing is retried."""
        flaky = Flaky(BoomError(), BoomError())
        retry = Retry(max_attempts=5, backoff=FIXED, clock=clock)
        async with anyio.create_task_group() as tg:
            tg.start_soon(retry.call, flaky)
            await clock.wait_sleepers(1)
            tg.cancel_scope.cancel()
        assert flaky.calls == 1
        assert clock.sleepers == 0

    async def test_cancel_during_attempt_not_retried(self, clock: FakeClock) -> None:
        """A cancellation raised inside an attempt propagates and is not retried."""
        calls: list[int] = []

        async def hang() -> None:
            calls.append(1)
            await anyio.sleep_forever()

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(Retry(clock=clock).call, hang)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        assert calls == [1]

    async def test_per_attempt_timeout_then_retry(self, clock: FakeClock) -> None:
        """An attempt exceeding attempt_timeout is abandoned and the next attempt runs."""
        calls: list[float] = []

        async def slow_then_fast() -> str:
            calls.append(clock.now())
            if len(calls) == 1:
                await clock.sleep(100)
            return "fast"

        retry = Retry(attempt_timeout=2, backoff=FIXED, clock=clock)
        outcome = await autojump(clock, lambda: retry.call_with_details(slow_then_fast))
        assert outcome.value == "fast"
        assert outcome.attempts == 2
        assert isinstance(outcome.errors[0], DeadlineExceededError)
        assert calls == [0.0, 3.0]  # timed out at 2, slept 1

    async def test_attempt_sees_its_own_deadline(self, clock: FakeClock) -> None:
        """With attempt_timeout, each attempt reads its own remaining time."""

        async def remaining() -> float | None:
            return time_remaining()

        assert await Retry(attempt_timeout=4, clock=clock).call(remaining) == 4.0

    async def test_deadline_stops_retries(self, clock: FakeClock) -> None:
        """A backoff that would end past the caller's deadline is not slept; the error is."""
        flaky = Flaky(*[BoomError(str(n)) for n in range(10)])
        retry = Retry(max_attempts=10, backoff=FIXED, clock=clock)
        timeout = Timeout(2.5, clock=clock)
        with pytest.raises(BoomError, match="1") as info:
            await autojump(clock, lambda: timeout.call(retry.call, flaky))
        assert flaky.calls == 2  # slept 1, then a 2 s backoff would end at 3 > 2.5
        assert clock.now() == 1.0
        assert "deadline" in info.value.__notes__[0]

    async def test_outer_timeout_firing_mid_attempt(self, clock: FakeClock) -> None:
        """When the total timeout fires during an attempt, it is a timeout, not a retry."""
        calls: list[int] = []

        async def hang() -> None:
            calls.append(1)
            await clock.sleep(100)

        retry = Retry(attempt_timeout=10, clock=clock)
        timeout = Timeout(3, clock=clock, what="total")
        with pytest.raises(DeadlineExceededError, match="total"):
            await autojump(clock, lambda: timeout.call(retry.call, hang))
        assert calls == [1]

    async def test_retry_after_hint_honoured(self, clock: FakeClock) -> None:
        """A retry_after attribute longer than the backoff sets the wait."""
        flaky = Flaky(RateLimitExceededError("api", 7.0))
        retry = Retry(backoff=FIXED, clock=clock)
        outcome = await autojump(clock, lambda: retry.call_with_details(flaky))
        assert (outcome.value, outcome.delay, clock.now()) == ("ok", 7.0, 7.0)

    async def test_retry_after_bounded_by_deadline(self, clock: FakeClock) -> None:
        """A retry_after hint past the deadline stops retrying at once."""
        flaky = Flaky(RateLimitExceededError("api", 30.0))
        timeout = Timeout(10, clock=clock)
        with pytest.raises(RateLimitExceededError):
            await autojump(clock, lambda: timeout.call(Retry(clock=clock).call, flaky))
        assert (flaky.calls, clock.now()) == (1, 0.0)

    async def test_retry_after_hook(self, clock: FakeClock) -> None:
        """A user hook reads the hint; non-numeric, negative or NaN hints are ignored."""
        hints = iter([None, -5.0, math.nan, 4.0])
        flaky = Flaky(*[BoomError() for _ in range(4)])
        retry = Retry(
            max_attempts=5, backoff=FIXED, retry_after=lambda _exc: next(hints), clock=clock
        )
        outcome = await autojump(clock, lambda: retry.call_with_details(flaky))
        assert outcome.delay == 1 + 2 + 4 + 8  # the 4 s hint is below the 8 s backoff
        flaky = Flaky(_HintedError("soon"))
        outcome = await autojump(
            clock, lambda: Retry(backoff=FIXED, clock=clock).call_with_details(flaky)
        )
        assert outcome.delay == 1.0

    async def test_result_predicate(self, clock: FakeClock) -> None:
        """A result the predicate rejects is retried; a good one is returned."""
        results = iter([None, None, 3])

        async def poll() -> int | None:
            return next(results)

        retry = Retry(retry_if_result=lambda r: r is None, backoff=FIXED, clock=clock)
        outcome = await autojump(clock, lambda: retry.call_with_details(poll))
        assert (outcome.value, outcome.attempts, outcome.errors) == (3, 3, ())

    async def test_result_predicate_exhausted_returns_last(self, clock: FakeClock) -> None:
        """When attempts run out on rejected results, the last result is returned."""
        events: list[RetryEvent] = []

        async def busy() -> _HintedError:
            return _HintedError(2.0)

        retry = Retry(
            max_attempts=2,
            retry_if_result=lambda r: isinstance(r, _HintedError),
            backoff=FIXED,
            on_retry=events.append,
            clock=clock,
        )
        result = await autojump(clock, lambda: retry.call(busy))
        assert isinstance(result, _HintedError)
        assert clock.now() == 2.0  # the result's retry_after hint beat the 1 s backoff
        assert [(e.attempt, e.delay, e.error) for e in events] == [(1, 2.0, None)]
        assert events[0].result is not None

    async def test_budget_limits_retries(self, clock: FakeClock) -> None:
        """An exhausted retry budget stops retrying, and first attempts deposit."""
        budget = RetryBudget(ratio=0.5, min_retries_per_second=0, clock=clock)
        retry = Retry(max_attempts=5, budget=budget, backoff=FIXED, clock=clock)
        flaky = Flaky(*[BoomError() for _ in range(5)])
        outcome = await autojump(clock, lambda: retry.call_with_details(flaky))
        assert outcome.attempts == 1
        assert outcome.error is not None
        assert "budget" in outcome.error.__notes__[0]
        await retry.call(Flaky())  # a second request: 2 * 0.5 = 1 retry available
        flaky = Flaky(BoomError(), BoomError())
        outcome = await autojump(clock, lambda: retry.call_with_details(flaky))
        assert outcome.attempts == 2
        assert budget.statistics().requests == 3

    async def test_listeners_see_every_retry(self, clock: FakeClock) -> None:
        """Each listener is told the attempt, the delay and the error, before sleeping."""
        first: list[RetryEvent] = []
        second: list[float] = []
        errors = [BoomError("a"), BoomError("b")]
        retry = Retry(
            backoff=FIXED,
            name="svc",
            on_retry=(first.append, lambda e: second.append(clock.now())),
            clock=clock,
        )
        await autojump(clock, lambda: retry.call(Flaky(*errors)))
        assert first == [
            RetryEvent(name="svc", attempt=1, delay=1.0, error=errors[0], result=None),
            RetryEvent(name="svc", attempt=2, delay=2.0, error=errors[1], result=None),
        ]
        assert second == [0.0, 1.0]

    async def test_failing_listener_does_not_change_the_outcome(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A listener that raises is logged; the retries and the result go on unchanged."""
        seen: list[int] = []

        def broken(event: RetryEvent) -> None:
            raise RuntimeError("listener bug")

        retry = Retry(
            backoff=FIXED, on_retry=(broken, lambda e: seen.append(e.attempt)), clock=clock
        )
        result = await autojump(clock, lambda: retry.call(Flaky(BoomError(), value=7)))
        assert result == 7
        assert seen == [1]
        assert "on_retry listener" in caplog.text

    async def test_details_on_first_success(self, clock: FakeClock) -> None:
        """call_with_details reports one attempt, no delay and no errors for a clean call."""
        outcome = await Retry(clock=clock).call_with_details(Flaky(value=5))
        assert outcome == RetryOutcome(value=5, error=None, attempts=1, delay=0.0, errors=())
        assert outcome.succeeded
        assert outcome.unwrap() == 5

    async def test_details_on_failure(self, clock: FakeClock) -> None:
        """On failure the outcome holds every error and unwrap() raises the last one."""
        errors = [BoomError("a"), BoomError("b")]
        retry = Retry(max_attempts=2, backoff=FIXED, clock=clock)
        outcome = await autojump(clock, lambda: retry.call_with_details(Flaky(*errors)))
        assert (outcome.attempts, outcome.delay, outcome.errors) == (2, 1.0, tuple(errors))
        assert not outcome.succeeded
        with pytest.raises(BoomError) as info:
            outcome.unwrap()
        assert info.value is errors[1]

    async def test_decorator(self, clock: FakeClock) -> None:
        """Decorating a coroutine function retries it and keeps its name."""
        flaky = Flaky(BoomError())
        retry = Retry(backoff=FIXED, clock=clock)

        @retry
        async def fetch(key: str) -> object:
            return await flaky(key)

        assert fetch.__name__ == "fetch"
        assert await autojump(clock, lambda: fetch("k")) == "ok"
        assert flaky.calls == 2


class _HintedError(Exception):
    def __init__(self, retry_after: object) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class TestRetrySync:
    def test_call_sync_retries_with_sleep_sync(self, clock: FakeClock) -> None:
        """call_sync retries and waits through clock.sleep_sync."""
        flaky = Flaky(BoomError(), BoomError())
        assert Retry(backoff=FIXED, clock=clock).call_sync(flaky.sync, 1) == "ok"
        assert (flaky.calls, clock.now()) == (3, 3.0)

    def test_call_sync_reraises_last(self, clock: FakeClock) -> None:
        """call_sync re-raises the last exception unchanged."""
        error = BoomError("last")
        with pytest.raises(BoomError) as info:
            Retry(max_attempts=2, backoff=FIXED, clock=clock).call_sync(
                Flaky(BoomError(), error).sync
            )
        assert info.value is error

    def test_sync_attempt_timeout(self, clock: FakeClock) -> None:
        """A sync attempt that overran attempt_timeout counts as failed and is retried."""
        calls: list[float] = []

        def slow_once() -> str:
            calls.append(clock.now())
            if len(calls) == 1:
                clock.sleep_sync(5)
            return "ok"

        retry = Retry(attempt_timeout=2, backoff=FIXED, clock=clock)
        outcome = retry.call_sync_with_details(slow_once)
        assert (outcome.value, outcome.attempts) == ("ok", 2)
        assert isinstance(outcome.errors[0], DeadlineExceededError)
        assert calls == [0.0, 6.0]

    def test_sync_result_predicate_and_details(self, clock: FakeClock) -> None:
        """Sync calls honour the result predicate and report details."""
        results = iter([0, 0, 0])
        retry = Retry(retry_if_result=lambda r: r == 0, backoff=FIXED, clock=clock)
        outcome = retry.call_sync_with_details(lambda: next(results))
        assert (outcome.value, outcome.attempts, outcome.delay) == (0, 3, 3.0)
        failing = retry.call_sync_with_details(Flaky(KeyError(), KeyError(), KeyError()).sync)
        assert isinstance(failing.error, KeyError)

    @pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1)])
    def test_base_exceptions_pass_through(self, clock: FakeClock, error: BaseException) -> None:
        """KeyboardInterrupt and SystemExit are never retried nor captured in details."""
        calls: list[int] = []

        def stop() -> None:
            calls.append(1)
            raise error

        retry = Retry(clock=clock)
        with pytest.raises(type(error)):
            retry.call_sync(stop)
        with pytest.raises(type(error)):
            retry.call_sync_with_details(stop)
        assert calls == [1, 1]

    def test_sync_decorator(self, clock: FakeClock) -> None:
        """Decorating a plain function retries it through call_sync."""
        flaky = Flaky(BoomError())

        @Retry(backoff=FIXED, clock=clock)
        def fetch() -> object:
            return flaky.sync()

        assert fetch() == "ok"
        assert fetch.__name__ == "fetch"

    def test_thread_safe(self, clock: FakeClock) -> None:
        """One Retry and one budget serve many threads at once."""
        budget = RetryBudget(clock=clock)
        retry = Retry(max_attempts=4, budget=budget, backoff=FIXED, clock=clock)
        results: list[object] = []

        def worker() -> None:
            results.extend(retry.call_sync(Flaky(BoomError(), BoomError()).sync) for _ in range(50))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == ["ok"] * 200
        assert budget.statistics().requests + budget.statistics().retries <= 600

    @given(
        max_attempts=st.integers(1, 8),
        failures=st.integers(0, 12),
        draw=st.floats(0, 1, exclude_max=True),
    )
    def test_attempts_never_exceed_max(self, max_attempts: int, failures: int, draw: float) -> None:
        """The callee runs min(failures + 1, max_attempts) times, whatever happens."""
        clock = FakeClock()
        flaky = Flaky(*[BoomError() for _ in range(failures)])
        backoff = ExponentialBackoff(base=0.1, cap=2, random=lambda: draw)
        retry = Retry(max_attempts=max_attempts, backoff=backoff, clock=clock)
        outcome = retry.call_sync_with_details(flaky.sync)
        assert flaky.calls == outcome.attempts == min(failures + 1, max_attempts)
        assert outcome.succeeded == (failures < max_attempts)
        assert len(outcome.errors) == min(failures, max_attempts)

    @given(
        base=st.floats(0.01, 5),
        total=st.floats(0.1, 60),
        hint=st.none() | st.floats(0, 20),
        draw=st.floats(0, 1, exclude_max=True),
    )
    def test_deadline_never_passed(
        self, base: float, total: float, hint: float | None, draw: float
    ) -> None:
        """No backoff sleep ever ends at or past the caller's deadline."""
        clock = FakeClock()
        ends: list[float] = []
        backoff = ExponentialBackoff(base=base, cap=base * 64, random=lambda: draw)
        retry = Retry(
            max_attempts=50,
            backoff=backoff,
            retry_after=lambda _exc: hint,
            on_retry=lambda event: ends.append(clock.now() + event.delay),
            clock=clock,
        )
        with pytest.raises(BoomError):
            Timeout(total, clock=clock).call_sync(retry.call_sync, Flaky(*[BoomError()] * 60).sync)
        assert all(end < total for end in ends)
        assert clock.now() < total


class TestRetryHistory:
    def test_history_survives_an_error_that_ends_the_call(self, clock: FakeClock) -> None:
        """call_sync_recording fills the caller's history even when the call raises."""
        errors: list[Exception] = [BoomError("1"), BoomError("2")]
        history = RetryHistory()
        retry = Retry(max_attempts=2, backoff=FIXED, clock=clock)
        with pytest.raises(BoomError):
            retry.call_sync_recording(history, Flaky(*errors).sync)
        assert (history.attempts, history.delay, history.errors) == (2, 1.0, errors)
        assert "attempts=2" in repr(history)

    async def test_async_history_matches_the_outcome(self, clock: FakeClock) -> None:
        """call_recording records what call_with_details reports."""
        retry = Retry(max_attempts=3, backoff=FIXED, clock=clock)
        history = RetryHistory()
        flaky = Flaky(BoomError())
        assert await autojump(clock, lambda: retry.call_recording(history, flaky)) == "ok"
        outcome = history.outcome("ok", None)
        assert (outcome.attempts, outcome.delay, outcome.value) == (2, 1.0, "ok")

    def test_plan_is_the_decision_both_faces_drive(self, clock: FakeClock) -> None:
        """plan() returns the next wait, or None with a note once attempts run out."""
        retry = Retry(max_attempts=2, backoff=FIXED, clock=clock)
        error = BoomError()
        assert retry.plan(1, error, None) == 1.0
        assert retry.plan(2, error, None) is None
        assert "max_attempts reached" in error.__notes__[-1]


class TestOneSource:
    @settings(max_examples=60, deadline=None)
    @given(
        outcomes=st.lists(st.sampled_from(["error", "other", "busy", "ok"]), max_size=8),
        max_attempts=st.integers(1, 6),
    )
    def test_both_faces_take_the_same_steps(self, outcomes: list[str], max_attempts: int) -> None:
        """call and call_sync drive one step machine: same attempts, delays, errors, result."""

        def script() -> Callable[[], object]:
            steps = iter([*outcomes, "ok"])
            errors = {"error": BoomError, "other": KeyError}

            def step() -> object:
                kind = next(steps)
                if kind in errors:
                    raise errors[kind](kind)
                return kind

            return step

        def facts(outcome: RetryOutcome[object]) -> tuple[object, ...]:
            kinds = tuple(type(e).__name__ for e in outcome.errors)
            return (outcome.value, type(outcome.error).__name__, outcome.attempts, kinds)

        retry = Retry(
            max_attempts=max_attempts,
            retry_on=BoomError,
            retry_if_result=lambda value: value == "busy",
            backoff=ExponentialBackoff(random=lambda: 0.0),  # no wait: nothing to advance
            clock=FakeClock(),
        )
        sync = retry.call_sync_with_details(script())
        step = script()

        async def run() -> RetryOutcome[object]:
            async def astep() -> object:
                return step()

            return await retry.call_with_details(astep)

        assert facts(anyio.run(run)) == facts(sync)


class TestJudgingErrors:
    def test_result_predicate_error_is_not_retried(self, clock: FakeClock) -> None:
        """An error raised by retry_if_result is not the attempt's: it propagates at once."""
        flaky = Flaky(value="odd")

        def judge(_value: object) -> bool:
            raise ValueError("judge broke")

        retry = Retry(retry_if_result=judge, backoff=FIXED, clock=clock)
        with pytest.raises(ValueError, match="judge broke"):
            retry.call_sync(flaky.sync)
        assert flaky.calls == 1
