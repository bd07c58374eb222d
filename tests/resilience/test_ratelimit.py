"""Tests for meshkit.resilience.RateLimiter (the local token bucket)."""

from __future__ import annotations

import threading
from fractions import Fraction
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from meshkit import ConfigurationError, RateLimitExceededError
from meshkit.resilience import RateLimiter, RateLimiterStatistics
from meshkit.testing import FakeClock

pytestmark = pytest.mark.anyio

EIGHTHS = st.integers(0, 40).map(lambda k: k / 8)
"""Clock steps that floats represent exactly, so the model's arithmetic is exact too."""


class _FailingSleepClock:
    """A clock whose sync sleep is interrupted (as by Ctrl-C)."""

    def __init__(self) -> None:
        self._inner = FakeClock()

    def now(self) -> float:
        return self._inner.now()

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        raise KeyboardInterrupt

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        return self._inner.deadline_scope(deadline)


class TestConfiguration:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("rate", 0),
            ("rate", -1.0),
            ("rate", float("inf")),
            ("rate", float("nan")),
            ("rate", "fast"),
            ("burst", 0),
            ("burst", float("inf")),
            ("max_wait", -0.1),
            ("max_wait", float("inf")),
            ("name", None),
            ("name", ""),
            ("clock", "now"),
        ],
    )
    def test_bad_setting_names_field_and_value(self, field: str, value: object) -> None:
        """Each invalid setting raises ConfigurationError naming the field and the value."""
        kwargs: dict[str, Any] = {"rate": 1.0, field: value}
        with pytest.raises(ConfigurationError) as info:
            RateLimiter(**kwargs)
        assert info.value.field == field
        assert info.value.value is value

    @pytest.mark.parametrize(("rate", "burst"), [(0.5, 1.0), (5, 5.0), (100.0, 100.0)])
    def test_default_burst_is_one_second_of_rate(self, rate: float, burst: float) -> None:
        """burst defaults to max(1, rate)."""
        assert RateLimiter(rate=rate).burst == burst

    @pytest.mark.parametrize("tokens", [0, -1, 3, True, "1", float("nan")])
    def test_bad_token_count(self, tokens: Any) -> None:
        """Asking for no tokens, a non-number or more than burst is a ConfigurationError."""
        limiter = RateLimiter(rate=1, burst=2)
        with pytest.raises(ConfigurationError) as info:
            limiter.acquire_nowait(tokens)
        assert info.value.field == "tokens"


class TestNowait:
    def test_burst_then_retry_after(self, clock: FakeClock) -> None:
        """A full bucket admits burst calls, then reports when the next token comes."""
        limiter = RateLimiter(rate=4, burst=3, name="api", clock=clock)
        for _ in range(3):
            limiter.acquire_nowait()
        with pytest.raises(RateLimitExceededError) as info:
            limiter.acquire_nowait(2)
        assert (info.value.name, info.value.retry_after) == ("api", 0.5)
        clock.advance(0.5)
        limiter.acquire_nowait(2)
        assert limiter.statistics() == RateLimiterStatistics(
            name="api", rate=4.0, burst=3.0, tokens=0.0, admitted=4, rejected=1
        )

    def test_refill_is_capped_at_burst(self, clock: FakeClock) -> None:
        """A long idle period refills no more than burst."""
        limiter = RateLimiter(rate=10, burst=2, clock=clock)
        limiter.acquire_nowait(2)
        clock.advance(3600)
        assert limiter.statistics().tokens == 2.0

    def test_statistics_are_frozen(self) -> None:
        """statistics() returns an immutable snapshot."""
        stats = RateLimiter(rate=1).statistics()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            stats.tokens = 3  # type: ignore[misc]

    def test_eight_threads_admit_exactly_the_burst(self, clock: FakeClock) -> None:
        """Eight threads racing for tokens get exactly burst of them while time stands still."""
        limiter = RateLimiter(rate=1, burst=100, clock=clock)
        admitted: list[int] = []

        def hammer() -> None:
            mine = 0
            for _ in range(50):
                try:
                    limiter.acquire_nowait()
                    mine += 1
                except RateLimitExceededError:
                    pass
            admitted.append(mine)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(admitted) == 100
        assert limiter.statistics().rejected == 300


class TestAcquire:
    async def test_waits_for_tokens_in_arrival_order(self, clock: FakeClock) -> None:
        """Waiters reserve in arrival order and wake when their tokens have accrued."""
        limiter = RateLimiter(rate=2, burst=1, clock=clock)
        limiter.acquire_nowait()
        woke: list[tuple[int, float]] = []

        async def waiter(i: int) -> None:
            await limiter.acquire()
            woke.append((i, clock.now()))

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(waiter, i)
                await anyio.wait_all_tasks_blocked()
            await clock.advance_stepwise(1.5)
        assert woke == [(0, 0.5), (1, 1.0), (2, 1.5)]

    async def test_free_token_does_not_wait(self, clock: FakeClock) -> None:
        """acquire() returns at once while tokens are available."""
        limiter = RateLimiter(rate=1, burst=1, clock=clock)
        await limiter.acquire()
        assert clock.sleepers == 0

    async def test_wait_beyond_max_wait_raises_at_once(self, clock: FakeClock) -> None:
        """If the wait would exceed max_wait, acquire() raises without waiting."""
        limiter = RateLimiter(rate=1, burst=1, max_wait=0.5, clock=clock)
        await limiter.acquire()
        with pytest.raises(RateLimitExceededError) as info:
            await limiter.acquire()
        assert info.value.retry_after == 1.0
        assert clock.now() == 0.0
        assert limiter.statistics().tokens == 0.0

    async def test_cancelled_waiter_refunds(self, clock: FakeClock) -> None:
        """A waiter cancelled before its tokens accrue gives its reservation back."""
        limiter = RateLimiter(rate=1, burst=2, clock=clock)
        limiter.acquire_nowait(2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(limiter.acquire, 2)
            await anyio.wait_all_tasks_blocked()
            assert limiter.statistics().tokens == -2.0
            clock.advance(0.5)
            tg.cancel_scope.cancel()
        assert limiter.statistics().tokens == 0.5
        assert limiter.statistics().admitted == 1

    async def test_call_and_decorator(self, clock: FakeClock) -> None:
        """call() and @limiter take a token before running the function."""
        limiter = RateLimiter(rate=1, burst=2, max_wait=0, clock=clock)

        @limiter
        async def hello(name: str) -> str:
            return f"hi {name}"

        async def answer() -> int:
            return 42

        assert await hello("a") == "hi a"
        assert hello.__name__ == "hello"
        assert await limiter.call(answer) == 42
        with pytest.raises(RateLimitExceededError):
            await limiter.call(answer)


class TestSync:
    def test_acquire_sync_sleeps_on_the_clock(self, clock: FakeClock) -> None:
        """acquire_sync waits for tokens with clock.sleep_sync."""
        limiter = RateLimiter(rate=4, burst=1, clock=clock)
        limiter.acquire_sync()
        limiter.acquire_sync()
        assert clock.now() == 0.25

    def test_call_sync_and_decorator(self, clock: FakeClock) -> None:
        """call_sync and @limiter on a plain function take a token first."""
        limiter = RateLimiter(rate=1, burst=2, max_wait=0, clock=clock)

        @limiter
        def add(a: int, b: int) -> int:
            return a + b

        assert add(1, 2) == 3
        assert limiter.call_sync(add.__wrapped__, 2, 3) == 5  # type: ignore[attr-defined]
        with pytest.raises(RateLimitExceededError):
            add(0, 0)

    def test_interrupted_sync_wait_refunds(self) -> None:
        """An exception during acquire_sync's wait gives the reservation back."""
        limiter = RateLimiter(rate=1, burst=1, clock=_FailingSleepClock())
        limiter.acquire_sync()
        with pytest.raises(KeyboardInterrupt):
            limiter.acquire_sync()
        assert limiter.statistics().tokens == 0.0


class TestProperties:
    @given(
        rate=st.integers(1, 20),
        burst=st.integers(1, 20),
        steps=st.lists(st.tuples(EIGHTHS, st.integers(1, 5)), max_size=40),
    )
    def test_never_admits_more_than_burst_plus_rate_times_elapsed(
        self, rate: int, burst: int, steps: list[tuple[float, int]]
    ) -> None:
        """Over any interval, admitted tokens <= burst + rate * elapsed."""
        clock = FakeClock()
        limiter = RateLimiter(rate=rate, burst=burst, clock=clock)
        log: list[tuple[float, int]] = []
        for dt, tokens in steps:
            clock.advance(dt)
            try:
                limiter.acquire_nowait(min(tokens, burst))
            except RateLimitExceededError:
                continue
            log.append((clock.now(), min(tokens, burst)))
        for i, (start, _) in enumerate(log):
            total = 0
            for when, tokens in log[i:]:
                total += tokens
                assert total <= burst + rate * (when - start) + 1e-6

    @given(
        rate=st.floats(0.01, 1000),
        burst=st.floats(1, 100),
        start=st.floats(0, 1e7),
        first=st.floats(0.01, 1),
    )
    def test_retry_after_is_accurate(
        self, rate: float, burst: float, start: float, first: float
    ) -> None:
        """Waiting retry_after is enough, and (when it is not tiny) 1% less is not."""
        clock = FakeClock(start=start)
        limiter = RateLimiter(rate=rate, burst=burst, clock=clock)
        limiter.acquire_nowait(first * burst)
        try:
            limiter.acquire_nowait(burst)
        except RateLimitExceededError as exc:
            retry_after = exc.retry_after
        else:  # pragma: no cover - the bucket was just drawn from
            raise AssertionError
        if retry_after > 1e-3:
            shorter = FakeClock(start=start)
            twin = RateLimiter(rate=rate, burst=burst, clock=shorter)
            twin.acquire_nowait(first * burst)
            shorter.advance(retry_after * 0.99)
            with pytest.raises(RateLimitExceededError):
                twin.acquire_nowait(burst)
        clock.advance(retry_after)
        limiter.acquire_nowait(burst)


class BucketMachine(RuleBasedStateMachine):
    """The limiter, driven through its sync core, against an exact (Fraction) model."""

    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.limiter = RateLimiter(rate=1, clock=self.clock)
        self.tokens = Fraction(1)
        self.admitted = 0
        self.rejected = 0

    @initialize(rate=st.integers(1, 8), burst=st.integers(1, 8))
    def setup(self, rate: int, burst: int) -> None:
        self.limiter = RateLimiter(rate=rate, burst=burst, clock=self.clock)
        self.tokens = Fraction(burst)

    @property
    def rate(self) -> int:
        return int(self.limiter.rate)

    @property
    def burst(self) -> int:
        return int(self.limiter.burst)

    @rule(dt=EIGHTHS)
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)
        self.tokens = min(Fraction(self.burst), self.tokens + Fraction(dt) * self.rate)

    @rule(tokens=st.integers(1, 8))
    def take_nowait(self, tokens: int) -> None:
        tokens = min(tokens, self.burst)
        if self.tokens >= tokens:
            self.limiter.acquire_nowait(tokens)
            self.tokens -= tokens
            self.admitted += 1
            return
        with pytest.raises(RateLimitExceededError) as info:
            self.limiter.acquire_nowait(tokens)
        expected = (tokens - self.tokens) / self.rate
        assert info.value.retry_after == pytest.approx(float(expected), abs=1e-9)
        self.rejected += 1

    @precondition(lambda self: self.tokens > -20)
    @rule(target=reservations, tokens=st.integers(1, 8))
    def reserve(self, tokens: int) -> int:
        tokens = min(tokens, self.burst)
        wait = self.limiter._reserve(tokens, None)
        expected = max(Fraction(0), (tokens - self.tokens) / self.rate)
        assert wait == pytest.approx(float(expected), abs=1e-9)
        self.tokens -= tokens
        self.admitted += 1
        return tokens

    @rule(tokens=consumes(reservations))
    def cancel(self, tokens: int) -> None:
        self.limiter._refund(tokens)
        self.tokens = min(Fraction(self.burst), self.tokens + tokens)
        self.admitted -= 1

    @invariant()
    def matches_model(self) -> None:
        stats = self.limiter.statistics()
        assert stats.tokens == pytest.approx(float(self.tokens), abs=1e-9)
        assert stats.tokens <= stats.burst
        assert (stats.admitted, stats.rejected) == (self.admitted, self.rejected)


TestBucketMachine = BucketMachine.TestCase
TestBucketMachine.settings = settings(max_examples=60, stateful_step_count=40)
