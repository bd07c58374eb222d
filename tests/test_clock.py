"""Tests for the injected clocks."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from meshkit import SYSTEM_CLOCK, Clock, ConfigurationError, SystemClock
from meshkit.testing import FakeClock

pytestmark = pytest.mark.anyio


class TestSystemClock:
    def test_is_a_clock(self) -> None:
        """SystemClock satisfies the Clock protocol."""
        assert isinstance(SYSTEM_CLOCK, Clock)
        assert isinstance(SystemClock(), Clock)

    def test_now_is_monotonic(self) -> None:
        """now() follows time.monotonic()."""
        before = time.monotonic()
        assert before <= SYSTEM_CLOCK.now() <= time.monotonic()

    async def test_sleep_zero_and_sync_zero_return(self) -> None:
        """Sleeping zero or a negative time returns at once."""
        await SYSTEM_CLOCK.sleep(0)
        await SYSTEM_CLOCK.sleep(-1)
        SYSTEM_CLOCK.sleep_sync(0)

    def test_sleep_sync_blocks_briefly(self) -> None:
        """sleep_sync() blocks for about the time asked."""
        start = time.monotonic()
        SYSTEM_CLOCK.sleep_sync(0.001)
        assert time.monotonic() - start >= 0.001

    @pytest.mark.parametrize("seconds", [1e10, 1e300, float("inf")])
    def test_overlong_sync_sleep_is_cut_into_pieces(
        self, monkeypatch: pytest.MonkeyPatch, seconds: float
    ) -> None:
        """A wait time.sleep would refuse (centuries: a server's retry hint) is slept in days."""
        asked: list[float] = []

        class StopSleepingError(Exception):
            pass

        def fake_sleep(delay: float) -> None:
            asked.append(delay)
            raise StopSleepingError

        monkeypatch.setattr(time, "sleep", fake_sleep)
        with pytest.raises(StopSleepingError):
            SYSTEM_CLOCK.sleep_sync(seconds)
        assert 0 < asked[0] <= 86_400

    async def test_deadline_scope_in_the_past_cancels(self) -> None:
        """A deadline already passed cancels the body at its first checkpoint."""
        with SYSTEM_CLOCK.deadline_scope(SYSTEM_CLOCK.now() - 1) as scope:
            await anyio.sleep(10)
        assert scope.cancelled_caught


class TestFakeClock:
    def test_starts_where_told(self) -> None:
        """A FakeClock starts at 0 or at `start`."""
        assert FakeClock().now() == 0.0
        assert FakeClock(start=100.0).now() == 100.0
        assert isinstance(FakeClock(), Clock)

    async def test_advance_wakes_sleepers_in_deadline_order(self, clock: FakeClock) -> None:
        """advance() wakes exactly the sleepers now due, earliest deadline first."""
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.now()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper, "late", 3.0)
            tg.start_soon(sleeper, "early", 1.0)
            await clock.wait_sleepers(2)
            clock.advance(0.5)
            await anyio.wait_all_tasks_blocked()
            assert woke == []
            await clock.advance_stepwise(2.5)
        assert woke == [("early", 1.0), ("late", 3.0)]
        assert clock.sleepers == 0

    async def test_advance_wakes_all_due(self, clock: FakeClock) -> None:
        """advance() wakes every sleeper due by the new time, and only those."""
        woke: list[float] = []

        async def sleeper(seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append(seconds)

        async with anyio.create_task_group() as tg:
            for seconds in (1.0, 2.0, 5.0):
                tg.start_soon(sleeper, seconds)
            await clock.wait_sleepers(3)
            clock.advance(2.0)
            await anyio.wait_all_tasks_blocked()
            assert sorted(woke) == [1.0, 2.0]
            assert clock.sleepers == 1
            clock.advance(3.0)
        assert sorted(woke) == [1.0, 2.0, 5.0]

    async def test_stepwise_rejects_negative(self, clock: FakeClock) -> None:
        """advance_stepwise() refuses to go back in time."""
        with pytest.raises(ConfigurationError):
            await clock.advance_stepwise(-0.5)

    async def test_cancelled_sleeper_is_forgotten(self, clock: FakeClock) -> None:
        """A sleeper cancelled before its time leaves no trace."""
        with anyio.move_on_after(0.01):
            await clock.sleep(100)
        assert clock.sleepers == 0

    async def test_sleep_zero_is_a_checkpoint(self, clock: FakeClock) -> None:
        """sleep(0) returns without advancing time."""
        await clock.sleep(0)
        assert clock.now() == 0.0

    def test_sleep_sync_advances(self, clock: FakeClock) -> None:
        """sleep_sync() moves the fake time instead of blocking."""
        clock.sleep_sync(2.5)
        clock.sleep_sync(0)
        assert clock.now() == 2.5

    async def test_deadline_scope_fires_on_advance(self, clock: FakeClock) -> None:
        """A deadline scope is cancelled when the clock reaches its deadline."""
        reached = False

        async def body() -> None:
            nonlocal reached
            with clock.deadline_scope(5.0) as scope:
                await anyio.sleep_forever()
            reached = scope.cancelled_caught

        async with anyio.create_task_group() as tg:
            tg.start_soon(body)
            await anyio.lowlevel.checkpoint()
            clock.advance(4.9)
            await anyio.lowlevel.checkpoint()
            assert not reached
            clock.advance(0.1)
        assert reached

    async def test_deadline_scope_already_due(self, clock: FakeClock) -> None:
        """A deadline at or before now cancels at once."""
        with clock.deadline_scope(0.0) as scope:
            await anyio.sleep_forever()
        assert scope.cancelled_caught

    def test_advance_outside_the_loop_ignores_exited_scopes(self) -> None:
        """Advancing after the event loop ended does not trip over old deadline scopes."""
        clock = FakeClock()

        async def use_a_timeout() -> None:
            with clock.deadline_scope(5.0):
                await anyio.lowlevel.checkpoint()

        anyio.run(use_a_timeout)
        clock.advance(10)
        assert clock.now() == 10.0

    def test_advance_rejects_negative(self, clock: FakeClock) -> None:
        """Time never goes back."""
        with pytest.raises(ConfigurationError, match="seconds"):
            clock.advance(-1)
        with pytest.raises(ConfigurationError):
            clock.advance(float("nan"))
