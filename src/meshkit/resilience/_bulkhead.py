"""Bulkhead: a cap on concurrent calls with a bounded FIFO queue (Envoy's max connections/pending).

One `Bulkhead` serves async code (asyncio and trio) and threads at once. Its state is a slot
counter and a FIFO of waiters guarded by a `threading.Lock` that is never held across a call or
a wait. A released slot is handed straight to the oldest waiter, so the queue is fair and a
newcomer never overtakes it. Async waiters sleep on an `anyio.Event` that is set in their own
event loop (through the loop's token when the release happens in another thread); sync waiters
sleep on a `threading.Event`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar, final

import anyio
import anyio.lowlevel
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import BulkheadFullError
from meshkit._validate import count, instance_of, non_empty_str, optional, positive_seconds
from meshkit.resilience._common import Decorates

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

__all__ = ["Bulkhead", "BulkheadStatistics"]

P = ParamSpec("P")
T = TypeVar("T")
W = TypeVar("W", "_AsyncWaiter", "_SyncWaiter")

_SYNC_POLL = 0.05
"""Longest real-time nap of a sync waiter with `max_wait` before it re-reads the clock."""


class _Waiter(Protocol):
    granted: bool

    def wake(self) -> None: ...


@final
@attrs.define(eq=False)
class _AsyncWaiter:
    """A task waiting for a slot; woken in its own event loop thread."""

    event: anyio.Event = attrs.field(factory=anyio.Event)
    token: anyio.lowlevel.EventLoopToken = attrs.field(factory=anyio.lowlevel.current_token)
    thread: int = attrs.field(factory=threading.get_ident)
    granted: bool = False

    def wake(self) -> None:
        if threading.get_ident() == self.thread:
            self.event.set()
            return
        # The loop may have finished: the waiter then gave its slot back while unwinding.
        with contextlib.suppress(anyio.RunFinishedError):
            self.token.backend_class.run_sync_soon(self.event.set, (), self.token.native_token)


@final
@attrs.define(eq=False)
class _SyncWaiter:
    """A thread waiting for a slot."""

    event: threading.Event = attrs.field(factory=threading.Event)
    granted: bool = False

    def wake(self) -> None:
        self.event.set()


@final
@attrs.define(eq=False)
class _BulkheadState:
    """The synchronous core: slots, the FIFO queue and counters (callers hold the lock)."""

    max_concurrent: int
    max_queued: int
    active: int = 0
    rejected: int = 0
    timed_out: int = 0
    queue: deque[_Waiter] = attrs.field(factory=deque)

    def try_acquire(self) -> bool:
        """Take a free slot if there is one (a queue only exists when none is free)."""
        if self.active < self.max_concurrent:
            self.active += 1
            return True
        return False

    def enqueue(self, waiter: _Waiter) -> bool:
        """Queue `waiter` if there is room; count a rejection otherwise."""
        if len(self.queue) >= self.max_queued:
            self.rejected += 1
            return False
        self.queue.append(waiter)
        return True

    def release(self) -> _Waiter | None:
        """Free a slot, or hand it to the oldest waiter and return that waiter to wake."""
        if self.queue:
            waiter = self.queue.popleft()
            waiter.granted = True
            return waiter
        if self.active <= 0:
            msg = "Bulkhead.release() called more times than acquire()"
            raise RuntimeError(msg)
        self.active -= 1
        return None

    def withdraw(self, waiter: _Waiter) -> bool:
        """Take `waiter` out of the queue; return True if it was granted a slot meanwhile."""
        if waiter.granted:
            return True
        self.queue.remove(waiter)
        return False


@final
@attrs.frozen(kw_only=True)
class BulkheadStatistics:
    """A snapshot of a bulkhead's state.

    Attributes:
        name: The bulkhead's name.
        active: Slots in use (including ones just handed to a waiter that has not resumed).
        queued: Callers waiting for a slot.
        max_concurrent: The concurrency limit.
        max_queued: The queue limit.
        rejected: Calls refused at once because slots and queue were full.
        timed_out: Queued calls that gave up after `max_wait`.
    """

    name: str
    active: int
    queued: int
    max_concurrent: int
    max_queued: int
    rejected: int
    timed_out: int


@final
@attrs.define(eq=False, kw_only=True)
class Bulkhead(Decorates):
    """Limit how many calls run at once, with a bounded, fair (FIFO) queue for the rest.

    A call takes a free slot at once when there is one (no queue machinery is touched); else it
    waits in the queue if the queue has room; else it is rejected at once with
    `BulkheadFullError`. A queued call that has not got a slot after `max_wait` seconds (on
    the injected clock) gives up with `BulkheadFullError` too: like a full queue, it is load
    shedding, and the call never started. A cancelled waiter leaves the queue, and a slot is
    always given back, whether the call returns, raises or is cancelled.

    The same instance can be used from async code (`await bulkhead.call(fn)`,
    `async with bulkhead:`, `@bulkhead` on an `async def`) on asyncio and trio, and from
    threads (`bulkhead.call_sync(fn)`, `with bulkhead:`, `@bulkhead` on a plain `def`); both
    share the slots and the queue.

    Attributes:
        max_concurrent: Calls allowed to run at once (Envoy's `max_connections`); >= 1.
        max_queued: Calls allowed to wait for a slot (Envoy's `max_pending_requests`); >= 0,
            and 0 rejects as soon as every slot is taken.
        max_wait: Longest time a queued call waits for a slot, in seconds; `None` (the
            default) waits as long as it takes.
        name: A name for errors and statistics.
        clock: The time source for `max_wait`.

    Raises:
        ConfigurationError: If a setting is out of range.

    Example:
        ```python
        import anyio
        from meshkit.resilience import Bulkhead

        bulkhead = Bulkhead(max_concurrent=2, max_queued=10, name="inventory")

        async def main() -> None:
            async with bulkhead:
                assert bulkhead.statistics().active == 1

        anyio.run(main)
        ```
    """

    max_concurrent: int = attrs.field(default=10, validator=count())
    max_queued: int = attrs.field(default=10, validator=count(0))
    max_wait: float | None = attrs.field(default=None, validator=optional(positive_seconds))
    name: str = attrs.field(default="bulkhead", validator=non_empty_str)
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _state: _BulkheadState = attrs.field(init=False)

    @_state.default
    def _new_state(self) -> _BulkheadState:
        return _BulkheadState(self.max_concurrent, self.max_queued)

    # ------------------------------------------------------------ acquiring and releasing

    def acquire_nowait(self) -> None:
        """Take a free slot without waiting; pair it with `release()`.

        Raises:
            BulkheadFullError: If every slot is taken (this never queues).
        """
        with self._lock:
            if self._state.try_acquire():
                return
            self._state.rejected += 1
        raise self._full()

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue when none is free; pair it with `release()`.

        A free slot is taken without yielding to the event loop.

        Raises:
            BulkheadFullError: If slots and queue are full, or `max_wait` ran out.
        """
        if (waiter := self._admit(_AsyncWaiter)) is not None:
            await self._wait(waiter)

    def acquire_sync(self) -> None:
        """Take a slot from a thread, blocking in the queue when none is free.

        Do not call this in an event loop thread: it blocks the loop.

        Raises:
            BulkheadFullError: If slots and queue are full, or `max_wait` ran out.
        """
        if (waiter := self._admit(_SyncWaiter)) is not None:
            with self._queued(waiter):
                self._wait_sync(waiter)

    def release(self) -> None:
        """Give a slot back, handing it to the oldest queued caller if there is one.

        Raises:
            RuntimeError: If no slot is held (more releases than acquisitions).
        """
        with self._lock:
            waiter = self._state.release()
        if waiter is not None:
            waiter.wake()

    def _admit(self, new_waiter: Callable[[], W]) -> W | None:
        """Take a free slot (return None) or queue a new waiter and return it."""
        with self._lock:
            if self._state.try_acquire():
                return None
            waiter = new_waiter()
            if self._state.enqueue(waiter):
                return waiter
        raise self._full()

    async def _wait(self, waiter: _AsyncWaiter) -> None:
        with self._queued(waiter):
            if self.max_wait is None:
                await waiter.event.wait()
                return
            with self.clock.deadline_scope(self.clock.now() + self.max_wait):
                await waiter.event.wait()

    @contextlib.contextmanager
    def _queued(self, waiter: _Waiter) -> Iterator[None]:
        """Around a queued wait: keep the slot granted meanwhile, or give up cleanly."""
        try:
            yield
        except BaseException:
            self._abandon(waiter)
            raise
        self._settle(waiter)

    def _wait_sync(self, waiter: _SyncWaiter) -> None:
        if self.max_wait is None:
            waiter.event.wait()
            return
        deadline = self.clock.now() + self.max_wait
        while (remaining := deadline - self.clock.now()) > 0:
            if waiter.event.wait(min(remaining, _SYNC_POLL)):
                return

    def _abandon(self, waiter: _Waiter) -> None:
        """Leave the queue on cancellation or error, passing on a slot granted meanwhile."""
        with self._lock:
            granted = self._state.withdraw(waiter)
        if granted:
            self.release()

    def _settle(self, waiter: _Waiter) -> None:
        """After a wait ended without error: keep the slot if granted, else give up."""
        with self._lock:
            if self._state.withdraw(waiter):
                return
            self._state.timed_out += 1
        raise self._full(waited=self.max_wait or 0.0)

    def _full(self, *, waited: float = 0.0) -> BulkheadFullError:
        return BulkheadFullError(self.name, self.max_concurrent, self.max_queued, waited=waited)

    # ------------------------------------------------------------ calling through it

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `await fn(*args, **kwargs)` inside a slot.

        Returns:
            What `fn` returns.

        Raises:
            BulkheadFullError: If no slot could be had (see `acquire()`).
        """
        # Not `await self.acquire()`: a free slot is then taken without building a coroutine.
        if (waiter := self._admit(_AsyncWaiter)) is not None:
            await self._wait(waiter)
        try:
            return await fn(*args, **kwargs)
        finally:
            self.release()

    def call_sync(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn(*args, **kwargs)` inside a slot, from a thread (see `acquire_sync()`).

        Returns:
            What `fn` returns.

        Raises:
            BulkheadFullError: As `call`.
        """
        self.acquire_sync()
        try:
            return fn(*args, **kwargs)
        finally:
            self.release()

    async def __aenter__(self) -> None:
        """Take a slot (see `acquire()`) for the block.

        Raises:
            BulkheadFullError: If no slot could be had.
        """
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        """Give the slot back, however the block ended."""
        self.release()

    def __enter__(self) -> None:
        """Take a slot from a thread (see `acquire_sync()`) for the block.

        Raises:
            BulkheadFullError: If no slot could be had.
        """
        self.acquire_sync()

    def __exit__(self, *exc_info: object) -> None:
        """Give the slot back, however the block ended."""
        self.release()

    def statistics(self) -> BulkheadStatistics:
        """Return a snapshot of slots, queue and counters."""
        with self._lock:
            state = self._state
            return BulkheadStatistics(
                name=self.name,
                active=state.active,
                queued=len(state.queue),
                max_concurrent=self.max_concurrent,
                max_queued=self.max_queued,
                rejected=state.rejected,
                timed_out=state.timed_out,
            )
