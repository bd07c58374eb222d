"""Tests for deadlines in the context and the Timeout policy."""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import ConfigurationError, DeadlineExceededError
from meshkit.resilience import Deadline, Timeout, current_deadline, time_remaining
from meshkit.testing import FakeClock

pytestmark = pytest.mark.anyio


class TestDeadline:
    def test_after_remaining_and_expired(self, clock: FakeClock) -> None:
        """A deadline counts down on its clock and never reports negative time."""
        deadline = Deadline.after(3, clock=clock)
        assert deadline.expires_at == 3.0
        assert deadline.remaining() == 3.0
        assert not deadline.expired()
        clock.advance(5)
        assert deadline.remaining() == 0.0
        assert deadline.expired()

    def test_equality_ignores_the_clock(self) -> None:
        """Two deadlines with the same expiry compare equal."""
        assert Deadline(expires_at=1, clock=FakeClock()) == Deadline(expires_at=1)

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"expires_at": "soon"}, "expires_at"),
            ({"expires_at": math.nan}, "expires_at"),
            ({"expires_at": True}, "expires_at"),
            ({"expires_at": 1.0, "clock": 3}, "clock"),
        ],
    )
    def test_rejects_bad_values(self, kwargs: dict[str, object], field: str) -> None:
        """expires_at must be a number (not NaN) and clock a Clock."""
        with pytest.raises(ConfigurationError) as info:
            Deadline(**kwargs)  # type: ignore[arg-type]
        assert (info.value.field, info.value.value) == (field, kwargs[field])

    @pytest.mark.parametrize("seconds", [math.nan, "3", None, True])
    def test_after_rejects_a_non_number(self, seconds: object) -> None:
        """Deadline.after() names `seconds` instead of failing in arithmetic or going NaN."""
        with pytest.raises(ConfigurationError) as info:
            Deadline.after(seconds)  # type: ignore[arg-type]
        assert (info.value.field, info.value.value) == ("seconds", seconds)
        with pytest.raises(ConfigurationError) as info:
            Deadline.after(1.0, clock=seconds)  # type: ignore[arg-type]
        assert (info.value.field, info.value.value) == ("clock", seconds)

    def test_nothing_outside_a_timeout(self) -> None:
        """Outside any Timeout there is no deadline and no remaining time."""
        assert current_deadline() is None
        assert time_remaining() is None


class TestTimeoutConfig:
    def test_defaults(self) -> None:
        """Timeout(seconds) needs only the budget."""
        timeout = Timeout(1.5)
        assert (timeout.seconds, timeout.what) == (1.5, "call")

    @pytest.mark.parametrize(
        ("args", "kwargs", "field"),
        [
            ((0,), {}, "seconds"),
            ((-1,), {}, "seconds"),
            ((math.nan,), {}, "seconds"),
            ((math.inf,), {}, "seconds"),
            ((True,), {}, "seconds"),
            ((1,), {"what": 3}, "what"),
            ((1,), {"what": ""}, "what"),
            ((1,), {"clock": 3}, "clock"),
        ],
    )
    def test_rejects_bad_config(
        self, args: tuple[object, ...], kwargs: dict[str, object], field: str
    ) -> None:
        """A bad value raises ConfigurationError naming the field."""
        with pytest.raises(ConfigurationError) as info:
            Timeout(*args, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field


class TestTimeoutAsync:
    async def test_call_returns_and_publishes_the_deadline(self, clock: FakeClock) -> None:
        """call() returns the result; the callee sees the deadline, which is removed after."""

        async def callee(x: int) -> float | None:
            assert current_deadline() == Deadline(expires_at=4.0)
            return time_remaining()

        clock.advance(1)
        assert await Timeout(3, clock=clock).call(callee, 1) == 3.0
        assert current_deadline() is None

    async def test_expiry_raises_deadline_exceeded(self, clock: FakeClock) -> None:
        """A call outliving its budget raises DeadlineExceededError (a TimeoutError)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.advance_stepwise, 10)
            with pytest.raises(TimeoutError) as info:
                await Timeout(2, clock=clock, what="lookup").call(clock.sleep, 5)
        assert isinstance(info.value, DeadlineExceededError)
        assert info.value.timeout == 2.0
        assert "lookup" in str(info.value)
        assert info.value.__context__ is None
        assert clock.now() == 10.0

    async def test_context_manager(self, clock: FakeClock) -> None:
        """`async with Timeout(...)` yields the deadline and raises on expiry."""
        async with Timeout(5, clock=clock) as deadline:
            assert current_deadline() is deadline
            assert deadline.expires_at == 5.0
        assert current_deadline() is None

        async def expire() -> None:
            async with Timeout(1, clock=clock):
                clock.advance(1)
                await anyio.sleep_forever()

        with pytest.raises(DeadlineExceededError):
            await expire()
        assert current_deadline() is None

    async def test_nested_timeout_is_clamped(self, clock: FakeClock) -> None:
        """An inner timeout longer than the outer one gets only the outer's remaining time."""
        async with Timeout(2, clock=clock):
            clock.advance(0.5)
            async with Timeout(10, clock=clock) as inner:
                assert inner.expires_at == 2.0
                assert time_remaining() == 1.5

    async def test_outer_expiry_is_reported_by_the_outer_scope(self, clock: FakeClock) -> None:
        """When the enclosing deadline fires, the inner scope lets it through to the outer."""
        reached: list[str] = []

        async def nested() -> None:
            async with Timeout(2, clock=clock, what="outer"):
                try:
                    async with Timeout(10, clock=clock, what="inner"):
                        clock.advance(2)
                        await anyio.sleep_forever()
                finally:
                    reached.append("inner exited")

        with pytest.raises(DeadlineExceededError) as info:
            await nested()
        assert "outer" in str(info.value)
        assert reached == ["inner exited"]

    async def test_inner_expiry_is_caught_inside(self, clock: FakeClock) -> None:
        """A shorter inner timeout fires alone; the outer block carries on."""
        async with Timeout(10, clock=clock):
            with pytest.raises(DeadlineExceededError):
                await Timeout(1, clock=clock).call(_advance_then_wait, clock, 1)
            assert time_remaining() == 9.0

    async def test_outer_cancellation_is_not_a_timeout(self, clock: FakeClock) -> None:
        """Cancelling from outside propagates as cancellation, never as a timeout."""
        with anyio.CancelScope() as outer:
            async with Timeout(5, clock=clock):
                outer.cancel()
                await anyio.sleep_forever()
        assert outer.cancelled_caught

    async def test_outer_scope_firing_with_same_deadline_wins(self, clock: FakeClock) -> None:
        """A plain cancel scope due at the same time as the timeout keeps its cancellation."""
        with clock.deadline_scope(2) as outer:
            await Timeout(2, clock=clock).call(_advance_then_wait, clock, 2)
        assert outer.cancelled_caught

    async def test_expired_on_entry_fails_fast(self, clock: FakeClock) -> None:
        """If the enclosing deadline has passed, the call is not even started."""
        called: list[bool] = []

        async def callee() -> None:
            called.append(True)

        async with Timeout(1, clock=clock):
            clock.advance(1)
            with pytest.raises(DeadlineExceededError) as info:
                await Timeout(5, clock=clock).call(callee)
            assert info.value.timeout == 0.0
            with pytest.raises(DeadlineExceededError):
                async with Timeout(5, clock=clock):
                    called.append(True)
        assert called == []

    async def test_effective_deadline(self, clock: FakeClock) -> None:
        """effective_deadline() computes the clamped deadline without entering a scope."""
        timeout = Timeout(10, clock=clock)
        assert timeout.effective_deadline() == Deadline(expires_at=10.0)
        async with Timeout(4, clock=clock):
            assert timeout.effective_deadline() == Deadline(expires_at=4.0)
            assert current_deadline() == Deadline(expires_at=4.0)

    async def test_system_clock_timeouts(self) -> None:
        """With the real clock a quick call passes and an expired budget fails fast."""
        assert await Timeout(60).call(_echo, 7) == 7
        async with Timeout(60) as deadline:
            assert 0 < deadline.remaining() <= 60
            assert Timeout(60).call_sync(time_remaining) == pytest.approx(60, abs=1)

    async def test_other_clock_is_clamped_by_remaining_time(self, clock: FakeClock) -> None:
        """An inner timeout on another clock is clamped by the outer's remaining time."""
        other = FakeClock(start=100)
        async with Timeout(3, clock=clock), Timeout(60, clock=other) as inner:
            assert inner.expires_at == 103.0
            assert time_remaining() == 3.0

    async def test_errors_propagate_and_restore_the_context(self, clock: FakeClock) -> None:
        """An exception in the body passes through unchanged and the context is restored."""
        error = KeyError("k")
        with pytest.raises(KeyError) as info:
            async with Timeout(5, clock=clock):
                raise error
        assert info.value is error
        assert current_deadline() is None

    async def test_one_instance_shared_by_concurrent_tasks(self, clock: FakeClock) -> None:
        """A single Timeout used by two tasks keeps their scopes and deadlines apart."""
        timeout = Timeout(5, clock=clock)
        seen: dict[str, float] = {}

        async def task(name: str, start_delay: float) -> None:
            await clock.sleep(start_delay)
            async with timeout as deadline:
                await clock.sleep(1)
                seen[name] = deadline.expires_at
                assert current_deadline() is deadline

        async with anyio.create_task_group() as tg:
            tg.start_soon(task, "a", 0)
            tg.start_soon(task, "b", 0.5)
            await clock.wait_sleepers(2)
            await clock.advance_stepwise(3)
        assert seen == {"a": 5.0, "b": 5.5}


async def _echo(value: int) -> int:
    await anyio.lowlevel.checkpoint()
    return value


async def _advance_then_wait(clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    await anyio.sleep_forever()


class TestTimeoutSync:
    def test_call_sync_sets_the_deadline(self, clock: FakeClock) -> None:
        """call_sync() publishes the deadline to the callee and returns its result."""
        assert Timeout(4, clock=clock).call_sync(time_remaining) == 4.0
        assert current_deadline() is None

    def test_call_sync_overrun_raises(self, clock: FakeClock) -> None:
        """A sync call that returns after the deadline raises DeadlineExceededError."""
        with pytest.raises(DeadlineExceededError) as info:
            Timeout(2, clock=clock).call_sync(clock.sleep_sync, 3)
        assert info.value.timeout == 2.0

    def test_call_sync_error_propagates(self, clock: FakeClock) -> None:
        """An exception from the callee passes through, even after the deadline."""

        def boom() -> None:
            clock.sleep_sync(5)
            raise LookupError

        with pytest.raises(LookupError):
            Timeout(2, clock=clock).call_sync(boom)
        assert current_deadline() is None

    def test_call_sync_nested_and_expired(self, clock: FakeClock) -> None:
        """Nested sync timeouts clamp, and an expired outer deadline fails fast."""

        def inner() -> float | None:
            return Timeout(10, clock=clock).call_sync(time_remaining)

        assert Timeout(3, clock=clock).call_sync(inner) == 3.0

        def late() -> None:
            clock.advance(3)
            Timeout(10, clock=clock).call_sync(time_remaining)

        with pytest.raises(DeadlineExceededError) as info:
            Timeout(3, clock=clock).call_sync(late)
        assert info.value.timeout == 0.0

    @given(chain=st.lists(st.floats(0.01, 1000), min_size=1, max_size=6))
    def test_effective_deadline_is_the_minimum(self, chain: list[float]) -> None:
        """Through any chain of nested timeouts the callee sees min(chain) remaining."""
        clock = FakeClock()

        def nest(rest: list[float]) -> float | None:
            if not rest:
                return time_remaining()
            return Timeout(rest[0], clock=clock).call_sync(nest, rest[1:])

        assert nest(chain) == min(chain)


class TestRefusedDurations:
    @pytest.mark.parametrize("seconds", [math.inf, -math.inf, math.nan, 10**400, "1"])
    def test_after_refuses_what_timeout_refuses(self, seconds: object) -> None:
        """Deadline.after(inf) is refused like Timeout(inf), naming `seconds`."""
        with pytest.raises(ConfigurationError) as info:
            Deadline.after(seconds, clock=FakeClock())  # type: ignore[arg-type]
        assert info.value.field == "seconds"

    @pytest.mark.parametrize("seconds", [math.inf, math.nan])
    def test_timeout_refuses_the_same(self, seconds: float) -> None:
        """Timeout refuses the same non-finite durations."""
        with pytest.raises(ConfigurationError):
            Timeout(seconds)

    @pytest.mark.parametrize("start", [math.nan, math.inf, 10**400, "0", None])
    def test_fake_clock_refuses_a_bad_start(self, start: object) -> None:
        """FakeClock(start=nan) is refused, naming `start` (it would never reach a deadline)."""
        with pytest.raises(ConfigurationError) as info:
            FakeClock(start=start)  # type: ignore[arg-type]
        assert info.value.field == "start"
