"""A deterministic clock for tests."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import threading
from typing import TypeVar, final

import anyio
import anyio.lowlevel
import attrs

from meshkit._errors import ConfigurationError

__all__ = ["FakeClock"]

_T = TypeVar("_T")


@final
@attrs.define(eq=False)
class FakeClock:
    """A [`Clock`][meshkit.Clock] that moves only when told to.

    `advance()` moves time forward, wakes every task sleeping until then and cancels every
    `deadline_scope` that is due; `await advance_stepwise()` does the same one deadline at a
    time, so woken tasks run in deadline order. Call `advance()` from the event loop's thread
    (or from sync code that is not inside an event loop). `sleep_sync()` (used by sync policies in a
    single test thread) advances the clock itself, so sync code under test never blocks.

    Example:
        ```python
        import anyio
        from meshkit.testing import FakeClock

        async def main() -> None:
            clock = FakeClock()
            woke: list[float] = []

            async def sleeper() -> None:
                await clock.sleep(5)
                woke.append(clock.now())

            async with anyio.create_task_group() as tg:
                tg.start_soon(sleeper)
                await clock.wait_sleepers(1)
                clock.advance(5)
            assert woke == [5.0]

        anyio.run(main)
        ```
    """

    _now: float = attrs.field(default=0.0, alias="start")
    _sleepers: list[tuple[float, int, anyio.Event]] = attrs.field(init=False, factory=list)
    _scopes: list[tuple[float, int, anyio.CancelScope]] = attrs.field(init=False, factory=list)
    _seq: itertools.count[int] = attrs.field(init=False, factory=itertools.count)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    @_now.validator
    def _check_start(self, _attribute: attrs.Attribute[float], start: object) -> None:
        # The field is private; report it by its public name, `start`.
        is_number = isinstance(start, int | float) and not isinstance(start, bool)
        try:
            finite = is_number and math.isfinite(start)  # type: ignore[arg-type]
        except OverflowError:  # an int beyond any float
            finite = False
        if not finite:
            raise ConfigurationError("start", start, "must be a finite number of seconds")

    def now(self) -> float:
        """Return the fake current time."""
        return self._now

    @property
    def sleepers(self) -> int:
        """The number of tasks currently waiting in `sleep()`."""
        return len(self._sleepers)

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by `seconds` (at least a checkpoint)."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        entry = (self._now + seconds, next(self._seq), event)
        with self._lock:
            heapq.heappush(self._sleepers, entry)
        try:
            await event.wait()
        finally:
            if not event.is_set():
                with self._lock:
                    self._sleepers.remove(entry)
                    heapq.heapify(self._sleepers)

    def sleep_sync(self, seconds: float) -> None:
        """Advance the clock by `seconds` instead of blocking."""
        if seconds > 0:
            self.advance(seconds)

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        """Return a scope that `advance()` cancels once `now()` reaches `deadline`."""
        scope = anyio.CancelScope()
        if deadline <= self._now:
            scope.cancel()
        else:
            with self._lock:
                heapq.heappush(self._scopes, (deadline, next(self._seq), scope))
        return scope

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking sleepers and firing deadlines now due.

        Raises:
            ConfigurationError: If `seconds` is negative (time never goes back).
        """
        if not seconds >= 0:
            raise ConfigurationError("seconds", seconds, "must be >= 0")
        with self._lock:
            self._now += seconds
            due_events = _pop_due(self._sleepers, self._now)
            due_scopes = _pop_due(self._scopes, self._now)
        for scope in due_scopes:
            _cancel(scope)
        for event in due_events:
            event.set()

    async def advance_stepwise(self, seconds: float) -> None:
        """Advance by `seconds` one due deadline at a time, letting woken tasks run in between.

        `advance()` wakes every due sleeper at once, and the event loop may then run them in
        any order (trio shuffles on purpose). This async twin stops at each due deadline in
        turn and waits until all tasks are blocked again, so effects happen in deadline order.

        Raises:
            ConfigurationError: If `seconds` is negative.
        """
        if not seconds >= 0:
            raise ConfigurationError("seconds", seconds, "must be >= 0")
        target = self._now + seconds
        while True:
            await anyio.wait_all_tasks_blocked()
            pending = [h[0][0] for h in (self._sleepers, self._scopes) if h]
            step_to = min([target, *pending])
            self.advance(step_to - self._now)
            if step_to >= target:
                break
        await anyio.wait_all_tasks_blocked()

    async def wait_sleepers(self, count: int) -> None:
        """Yield to the event loop until at least `count` tasks are sleeping on this clock."""
        while len(self._sleepers) < count:
            await anyio.lowlevel.checkpoint()


def _cancel(scope: anyio.CancelScope) -> None:
    # asyncio's cancel() needs a running loop in this thread. Without one, the scope cannot
    # be active here: it exited long ago (a sync test advancing a clock an async test used).
    # Timeouts only fire when advance() is called from the event loop's thread (documented).
    with contextlib.suppress(RuntimeError):
        scope.cancel()


def _pop_due(heap: list[tuple[float, int, _T]], now: float) -> list[_T]:
    due: list[_T] = []
    while heap and heap[0][0] <= now:
        due.append(heapq.heappop(heap)[2])
    return due
