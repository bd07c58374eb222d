"""Injected time.

Every time-dependent object in meshkit takes a [`Clock`][meshkit.Clock] instead of calling
`time.monotonic()` or `anyio.sleep()` itself, so that tests can drive time with
[`meshkit.testing.FakeClock`][meshkit.testing.FakeClock] and never sleep for real.

A clock answers four questions:

* `now()` -- seconds on a monotonic scale (only differences mean anything);
* `await sleep(seconds)` -- wait, from async code;
* `sleep_sync(seconds)` -- wait, from sync code (threads of a sync gRPC server);
* `deadline_scope(deadline)` -- an `anyio.CancelScope` that is cancelled once `now()` reaches
  `deadline`. This is what timeouts use, so a fake clock can fire them deterministically.
"""

from __future__ import annotations

import time
from typing import Protocol, final, runtime_checkable

import anyio
import attrs

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time that meshkit's policies read and wait on."""

    def now(self) -> float:
        """Return the current time in seconds on a monotonic scale."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` from async code (a checkpoint even when `seconds <= 0`)."""
        ...

    def sleep_sync(self, seconds: float) -> None:
        """Block the calling thread for `seconds`."""
        ...

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        """Return a cancel scope that is cancelled when `now()` reaches `deadline`."""
        ...


_LONGEST_SLEEP = 86_400.0


@final
@attrs.frozen
class SystemClock:
    """The real clock: `time.monotonic()` and the event loop's own timers."""

    def now(self) -> float:
        """Return `time.monotonic()`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep with `anyio.sleep`."""
        await anyio.sleep(max(seconds, 0.0))

    def sleep_sync(self, seconds: float) -> None:
        """Sleep with `time.sleep`, at most a day at a time (an infinite wait never ends)."""
        end = time.monotonic() + seconds
        # time.sleep raises OverflowError or OSError on a wait of centuries (a server's
        # retry hint can ask for one): such a wait is slept a day at a time instead.
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, _LONGEST_SLEEP))

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        """Return a scope with an event-loop deadline equal to `deadline` on this clock."""
        return anyio.CancelScope(deadline=anyio.current_time() + (deadline - time.monotonic()))


SYSTEM_CLOCK: SystemClock = SystemClock()
"""The shared real clock, the default of every policy."""
