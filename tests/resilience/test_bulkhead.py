"""Tests for meshkit.resilience.Bulkhead."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
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
    precondition,
    rule,
)

from meshkit import BulkheadFullError, ConfigurationError
from meshkit.resilience import Bulkhead, BulkheadStatistics
from meshkit.resilience._bulkhead import _AsyncWaiter, _BulkheadState
from meshkit.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.anyio


class _Gauge:
    """Counts callers inside a section and remembers the peak (thread-safe)."""

    def __init__(self) -> None:
        self.inside = 0
        self.peak = 0
        self.done = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)

    def leave(self) -> None:
        with self._lock:
            self.inside -= 1
            self.done += 1


class _ExplodingClock:
    """A clock whose `now()` raises after `calls` readings (to break a sync wait)."""

    def __init__(self, calls: int) -> None:
        self._inner = FakeClock()
        self._calls = calls

    def now(self) -> float:
        self._calls -= 1
        if self._calls < 0:
            raise KeyboardInterrupt
        return self._inner.now()

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        self._inner.sleep_sync(seconds)

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        return self._inner.deadline_scope(deadline)


async def _queue_up(tg: anyio.abc.TaskGroup, bulkhead: Bulkhead, count: int, fn: Any) -> None:
    """Start `count` tasks calling `fn(i)` through the bulkhead, queued in index order."""
    for i in range(count):
        tg.start_soon(bulkhead.call, fn, i)
        await anyio.wait_all_tasks_blocked()


class TestConfiguration:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("max_concurrent", 0),
            ("max_concurrent", 1.5),
            ("max_concurrent", True),
            ("max_queued", -1),
            ("max_wait", 0),
            ("max_wait", float("inf")),
            ("max_wait", float("nan")),
            ("name", 3),
            ("name", ""),
            ("clock", object()),
        ],
    )
    def test_bad_setting_names_field_and_value(self, field: str, value: object) -> None:
        """Each invalid setting raises ConfigurationError naming the field and the value."""
        kwargs: dict[str, Any] = {field: value}
        with pytest.raises(ConfigurationError) as info:
            Bulkhead(**kwargs)
        assert info.value.field == field
        assert info.value.value is value

    def test_defaults(self) -> None:
        """The defaults are 10 running, 10 queued, no queue timeout."""
        stats = Bulkhead().statistics()
        assert (stats.max_concurrent, stats.max_queued) == (10, 10)
        assert Bulkhead().max_wait is None


class TestNowait:
    def test_takes_free_slots_then_rejects(self) -> None:
        """acquire_nowait takes free slots and raises BulkheadFullError when none is left."""
        bulkhead = Bulkhead(max_concurrent=2, max_queued=5, name="db")
        bulkhead.acquire_nowait()
        bulkhead.acquire_nowait()
        with pytest.raises(BulkheadFullError) as info:
            bulkhead.acquire_nowait()
        assert (info.value.name, info.value.max_concurrent, info.value.waited) == ("db", 2, 0)
        assert bulkhead.statistics() == BulkheadStatistics(
            name="db",
            active=2,
            queued=0,
            max_concurrent=2,
            max_queued=5,
            rejected=1,
            timed_out=0,
        )
        bulkhead.release()
        bulkhead.acquire_nowait()

    def test_release_without_acquire_is_a_bug(self) -> None:
        """Releasing more than was acquired raises RuntimeError."""
        with pytest.raises(RuntimeError, match="more times"):
            Bulkhead().release()

    def test_statistics_are_frozen(self) -> None:
        """statistics() returns an immutable snapshot."""
        stats = Bulkhead().statistics()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            stats.active = 3  # type: ignore[misc]


class TestAsync:
    async def test_call_returns_the_result(self) -> None:
        """call() runs the function in a slot and returns its result, freeing the slot."""

        async def double(x: int) -> int:
            assert bulkhead.statistics().active == 1
            return 2 * x

        bulkhead = Bulkhead(max_concurrent=1)
        assert await bulkhead.call(double, 21) == 42
        assert bulkhead.statistics().active == 0

    async def test_slot_released_on_exception(self) -> None:
        """A failing call gives its slot back."""

        async def boom() -> None:
            raise ValueError

        bulkhead = Bulkhead(max_concurrent=1)
        with pytest.raises(ValueError):  # noqa: PT011 - the function's own error
            await bulkhead.call(boom)
        assert bulkhead.statistics().active == 0

    async def test_context_manager_and_decorator(self) -> None:
        """`async with` and `@bulkhead` hold a slot for the duration."""
        bulkhead = Bulkhead(max_concurrent=1)

        @bulkhead
        async def inside() -> int:
            return bulkhead.statistics().active

        async with bulkhead:
            assert bulkhead.statistics().active == 1
        assert await inside() == 1
        assert inside.__name__ == "inside"
        assert bulkhead.statistics().active == 0

    async def test_queue_is_fifo_and_bounded(self) -> None:
        """Queued callers get slots in arrival order; one more than the queue is rejected."""
        bulkhead = Bulkhead(max_concurrent=1, max_queued=3)
        order: list[int] = []

        async def record(i: int) -> None:
            order.append(i)
            await anyio.lowlevel.checkpoint()

        bulkhead.acquire_nowait()
        async with anyio.create_task_group() as tg:
            await _queue_up(tg, bulkhead, 3, record)
            assert bulkhead.statistics().queued == 3
            with pytest.raises(BulkheadFullError):
                await bulkhead.call(record, 99)
            bulkhead.release()
        assert order == [0, 1, 2]
        stats = bulkhead.statistics()
        assert (stats.active, stats.queued, stats.rejected) == (0, 0, 1)

    async def test_max_wait_gives_up_with_bulkhead_full(self, clock: FakeClock) -> None:
        """A queued call that waits max_wait raises BulkheadFullError and leaves the queue."""
        bulkhead = Bulkhead(max_concurrent=1, max_queued=1, max_wait=2.0, clock=clock)
        bulkhead.acquire_nowait()
        errors: list[BulkheadFullError] = []

        async def waiter() -> None:
            try:
                await bulkhead.acquire()
            except BulkheadFullError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            clock.advance(1.9)
            await anyio.wait_all_tasks_blocked()
            assert bulkhead.statistics().queued == 1
            clock.advance(0.1)
        assert [e.waited for e in errors] == [2.0]
        stats = bulkhead.statistics()
        assert (stats.active, stats.queued, stats.timed_out) == (1, 0, 1)

    async def test_grant_at_the_deadline_keeps_the_slot(self, clock: FakeClock) -> None:
        """A waiter granted a slot as its max_wait runs out keeps the slot."""
        bulkhead = Bulkhead(max_concurrent=1, max_wait=1.0, clock=clock)
        bulkhead.acquire_nowait()
        got: list[bool] = []

        async def waiter() -> None:
            await bulkhead.acquire()
            got.append(True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            bulkhead.release()
            clock.advance(1.0)
        assert got == [True]
        assert bulkhead.statistics().active == 1

    async def test_granted_before_waiting_with_max_wait(self, clock: FakeClock) -> None:
        """A slot freed before the deadline is taken without a timeout."""
        bulkhead = Bulkhead(max_concurrent=1, max_wait=5.0, clock=clock)
        bulkhead.acquire_nowait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(bulkhead.acquire)
            await anyio.wait_all_tasks_blocked()
            bulkhead.release()
        assert bulkhead.statistics().active == 1
        assert bulkhead.statistics().timed_out == 0

    async def test_cancelled_waiter_leaves_queue(self) -> None:
        """Cancelling a queued caller removes it from the queue and leaks no slot."""
        bulkhead = Bulkhead(max_concurrent=1, max_queued=2)
        bulkhead.acquire_nowait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(bulkhead.acquire)
            await anyio.wait_all_tasks_blocked()
            assert bulkhead.statistics().queued == 1
            tg.cancel_scope.cancel()
        assert bulkhead.statistics().queued == 0
        bulkhead.release()
        assert bulkhead.statistics().active == 0

    async def test_cancelled_active_caller_releases(self) -> None:
        """Cancelling a caller while it runs gives its slot back to the next in line."""
        bulkhead = Bulkhead(max_concurrent=1, max_queued=1)
        ran: list[str] = []

        async def forever() -> None:
            await anyio.sleep_forever()

        async def quick() -> None:
            ran.append("quick")

        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(_call_in_scope, bulkhead, forever, scope)
            await anyio.wait_all_tasks_blocked()
            assert bulkhead.statistics().active == 1
            tg.start_soon(bulkhead.call, quick)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
        assert ran == ["quick"]
        assert bulkhead.statistics().active == 0

    async def test_granted_then_cancelled_passes_the_slot_on(self) -> None:
        """A waiter cancelled after being granted hands the slot to the next waiter."""
        bulkhead = Bulkhead(max_concurrent=1, max_queued=2)
        bulkhead.acquire_nowait()
        first = _AsyncWaiter()
        second = _AsyncWaiter()
        with bulkhead._lock:
            bulkhead._state.enqueue(first)
            bulkhead._state.enqueue(second)
        bulkhead.release()
        assert first.granted
        bulkhead._abandon(first)
        assert second.granted
        assert second.event.is_set()
        bulkhead._abandon(second)
        assert bulkhead.statistics().active == 0

    async def test_many_tasks_never_exceed_the_limit(self) -> None:
        """Fifty tasks through a 3-slot bulkhead: never more than 3 inside, none lost."""
        bulkhead = Bulkhead(max_concurrent=3, max_queued=50)
        gauge = _Gauge()

        async def work() -> None:
            gauge.enter()
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            gauge.leave()

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(bulkhead.call, work)
        assert (gauge.peak, gauge.done) == (3, 50)
        assert bulkhead.statistics().active == 0

    async def test_release_from_a_thread_wakes_the_task(self) -> None:
        """A slot released in a worker thread is handed to an async waiter in its loop."""
        bulkhead = Bulkhead(max_concurrent=1)
        bulkhead.acquire_nowait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(bulkhead.acquire)
            await anyio.wait_all_tasks_blocked()
            await anyio.to_thread.run_sync(bulkhead.release)
        assert bulkhead.statistics().active == 1

    async def test_tasks_and_threads_share_the_slots(self) -> None:
        """Async callers and sync callers in threads share one limit."""
        bulkhead = Bulkhead(max_concurrent=2, max_queued=40)
        gauge = _Gauge()

        def sync_work() -> None:
            gauge.enter()
            gauge.leave()

        def in_thread() -> None:
            bulkhead.call_sync(sync_work)

        async def async_work() -> None:
            gauge.enter()
            await anyio.lowlevel.checkpoint()
            gauge.leave()

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(bulkhead.call, async_work)
                tg.start_soon(anyio.to_thread.run_sync, in_thread)
        assert gauge.peak <= 2
        assert gauge.done == 20
        assert bulkhead.statistics().active == 0


async def _call_in_scope(bulkhead: Bulkhead, fn: Any, scope: anyio.CancelScope) -> None:
    with scope:
        await bulkhead.call(fn)


class TestWakeAfterLoopEnded:
    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_waking_a_finished_loop_is_harmless(self, backend: str) -> None:
        """Waking a waiter whose event loop has finished does not raise."""

        async def make() -> _AsyncWaiter:
            return _AsyncWaiter()

        waiter = anyio.run(make, backend=backend)
        thread = threading.Thread(target=waiter.wake)
        thread.start()
        thread.join()
        assert not waiter.event.is_set()


class TestSync:
    def test_call_sync_context_manager_and_decorator(self) -> None:
        """call_sync, `with` and `@bulkhead` on a plain function hold a slot."""
        bulkhead = Bulkhead(max_concurrent=1)

        @bulkhead
        def inside(x: int) -> int:
            return x + bulkhead.statistics().active

        with bulkhead:
            assert bulkhead.statistics().active == 1
        assert inside(1) == 2
        assert bulkhead.call_sync(lambda x: x + bulkhead.statistics().active, 1) == 2
        assert bulkhead.statistics().active == 0

    def test_full_sync_rejects(self) -> None:
        """acquire_sync raises at once when slots and queue are full."""
        bulkhead = Bulkhead(max_concurrent=1, max_queued=0)
        bulkhead.acquire_sync()
        with pytest.raises(BulkheadFullError):
            bulkhead.acquire_sync()

    def test_eight_threads_never_exceed_the_limit(self) -> None:
        """Eight threads hammering a 3-slot bulkhead: never more than 3 inside, none lost."""
        bulkhead = Bulkhead(max_concurrent=3, max_queued=8)
        gauge = _Gauge()

        def work() -> None:
            gauge.enter()
            gauge.leave()

        def hammer() -> None:
            for _ in range(200):
                bulkhead.call_sync(work)

        _run_threads(8, hammer)
        assert gauge.peak <= 3
        assert gauge.done == 1600
        assert bulkhead.statistics() == BulkheadStatistics(
            name="bulkhead",
            active=0,
            queued=0,
            max_concurrent=3,
            max_queued=8,
            rejected=0,
            timed_out=0,
        )

    def test_sync_waiter_gets_released_slot(self) -> None:
        """A blocked thread gets the slot another thread releases."""
        bulkhead = Bulkhead(max_concurrent=1)
        bulkhead.acquire_sync()
        got = threading.Event()

        def wait() -> None:
            bulkhead.acquire_sync()
            got.set()

        thread = threading.Thread(target=wait)
        thread.start()
        _wait_until(lambda: bulkhead.statistics().queued == 1)
        bulkhead.release()
        thread.join()
        assert got.is_set()
        assert bulkhead.statistics().active == 1

    def test_sync_max_wait(self) -> None:
        """A blocked thread gives up once the clock passes max_wait, and leaves the queue."""
        clock = FakeClock()
        bulkhead = Bulkhead(max_concurrent=1, max_wait=3.0, clock=clock)
        bulkhead.acquire_sync()
        errors: list[BaseException] = []
        thread = threading.Thread(target=_capture(errors, bulkhead.acquire_sync))
        thread.start()
        _wait_until(lambda: bulkhead.statistics().queued == 1)
        clock.advance(3.0)
        thread.join()
        assert isinstance(errors[0], BulkheadFullError)
        assert bulkhead.statistics().queued == 0
        assert bulkhead.statistics().timed_out == 1

    def test_sync_waiter_granted_within_max_wait(self) -> None:
        """A thread waiting with max_wait takes a slot freed before the deadline."""
        bulkhead = Bulkhead(max_concurrent=1, max_wait=3.0, clock=FakeClock())
        bulkhead.acquire_sync()
        thread = threading.Thread(target=bulkhead.acquire_sync)
        thread.start()
        _wait_until(lambda: bulkhead.statistics().queued == 1)
        bulkhead.release()
        thread.join()
        assert bulkhead.statistics().active == 1

    def test_interrupted_sync_waiter_leaves_queue(self) -> None:
        """An exception while a thread waits removes it from the queue."""
        bulkhead = Bulkhead(max_concurrent=1, max_wait=3.0, clock=_ExplodingClock(calls=2))
        bulkhead.acquire_nowait()
        with pytest.raises(KeyboardInterrupt):
            bulkhead.acquire_sync()
        assert bulkhead.statistics().queued == 0
        assert bulkhead.statistics().active == 1


def _run_threads(count: int, target: Callable[[], None]) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _capture(errors: list[BaseException], fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    return run


def _wait_until(condition: Callable[[], bool]) -> None:
    """Wait (on a real event, briefly) until another thread makes `condition` true."""
    pause = threading.Event()
    for _ in range(10_000):
        if condition():
            return
        pause.wait(0.001)
    raise AssertionError


# ---------------------------------------------------------------- the core against a model


@attrs.define(eq=False)
class _PlainWaiter:
    granted: bool = False

    def wake(self) -> None:
        """Nothing to wake in the model."""


class BulkheadMachine(RuleBasedStateMachine):
    """The synchronous bulkhead core checked against a plain model."""

    queued = Bundle("queued")
    holders = Bundle("holders")

    def __init__(self) -> None:
        super().__init__()
        self.state = _BulkheadState(1, 0)
        self.model_active = 0
        self.model_queue: list[_PlainWaiter] = []
        self.model_rejected = 0

    @initialize(max_concurrent=st.integers(1, 4), max_queued=st.integers(0, 4))
    def setup(self, max_concurrent: int, max_queued: int) -> None:
        self.state = _BulkheadState(max_concurrent, max_queued)

    @rule(target=queued)
    def arrive(self) -> Any:
        full = self.model_active == self.state.max_concurrent
        queue_full = len(self.model_queue) == self.state.max_queued
        if self.state.try_acquire():
            assert not full
            self.model_active += 1
            return multiple()
        waiter = _PlainWaiter()
        if self.state.enqueue(waiter):
            assert full
            assert not queue_full
            self.model_queue.append(waiter)
            return waiter
        assert full
        assert queue_full
        self.model_rejected += 1
        return multiple()

    @precondition(lambda self: self.model_active > 0)
    @rule(target=holders)
    def release(self) -> Any:
        woken = self.state.release()
        if self.model_queue:
            assert woken is self.model_queue.pop(0)
            assert woken.granted
            return woken
        assert woken is None
        self.model_active -= 1
        return multiple()

    @rule(waiter=consumes(queued))
    def cancel_waiter(self, waiter: Any) -> None:
        if waiter.granted:
            return
        assert self.state.withdraw(waiter) is False
        self.model_queue.remove(waiter)

    @rule(waiter=consumes(holders))
    def cancel_granted(self, waiter: Any) -> None:
        assert self.state.withdraw(waiter) is True

    @invariant()
    def matches_model(self) -> None:
        assert self.state.active == self.model_active
        assert list(self.state.queue) == self.model_queue
        assert self.state.rejected == self.model_rejected

    @invariant()
    def within_limits(self) -> None:
        assert 0 <= self.state.active <= self.state.max_concurrent
        assert len(self.state.queue) <= self.state.max_queued
        assert not self.state.queue or self.state.active == self.state.max_concurrent


TestBulkheadMachine = BulkheadMachine.TestCase
TestBulkheadMachine.settings = settings(max_examples=60, stateful_step_count=40)
