"""Group commit: concurrent appends queue to one writer that commits them as one transaction.

There is no background task. The first append that finds no writer at work becomes the
*leader*: it takes the queue (up to `max_batch` requests, its own first), writes the batch in a
worker thread, wakes every request of the batch with its own outcome, and hands leadership to
the oldest request still queued. While a batch is being written, new appends pile up behind
it, so the next batch is larger: the busier the store, the more appends share one commit (one
fsync).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, final

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from meshkit.eventsourcing._event import Event
    from meshkit.eventsourcing._sql_common import EventRow

__all__ = ["AppendRequest", "GroupCommitter"]


@final
@attrs.define(eq=False)
class AppendRequest:
    """One append waiting for (or taking part in) a group commit."""

    stream_id: str
    events: Sequence[Event]
    expected_version: int
    rows: list[EventRow]
    result: int | None = None
    error: BaseException | None = None
    done: bool = False
    wake: anyio.Event = attrs.field(factory=anyio.Event)

    def outcome(self) -> int:
        """Return the new stream version, or raise the append's error."""
        if self.error is not None:
            raise self.error
        assert self.result is not None  # noqa: S101 - set with done
        return self.result


@final
@attrs.define(eq=False)
class GroupCommitter:
    """Serializes appends through one writer, batching those that arrive meanwhile.

    `write_batch` runs in a worker thread, one batch at a time, and must set `result` or
    `error` on every request of the batch; `on_commit` runs in the event loop after each batch.
    """

    write_batch: Callable[[Sequence[AppendRequest]], None]
    on_commit: Callable[[], None]
    max_batch: int
    _queue: collections.deque[AppendRequest] = attrs.field(init=False, factory=collections.deque)
    _leader: AppendRequest | None = attrs.field(init=False, default=None)
    _busy: bool = attrs.field(init=False, default=False)

    async def submit(self, request: AppendRequest) -> int:
        """Queue `request`, write it (leading a batch if no one else is), return its outcome.

        Raises:
            BaseException: The request's own error (conflict, bad input, database failure).
        """
        self._queue.append(request)
        if self._leader is None:
            self._leader = request
            if self._busy:
                await self._gather()
        else:
            try:
                await request.wake.wait()
            except BaseException:
                self._abandon(request)
                raise
            if request.done:
                return request.outcome()
            await self._gather()
        try:
            await self._lead()
        finally:
            self._pass_leadership()
        return request.outcome()

    async def _gather(self) -> None:
        """Yield to the event loop until no more appends join the queue.

        Under contention the appends a batch has just completed come right back with their
        next append; waiting for them lets them share this commit instead of the next one.
        """
        queued = -1
        while queued != len(self._queue) < self.max_batch:
            queued = len(self._queue)
            await anyio.lowlevel.cancel_shielded_checkpoint()

    async def _lead(self) -> None:
        count = min(self.max_batch, len(self._queue))
        batch = [self._queue.popleft() for _ in range(count)]
        self._busy = count > 1
        with anyio.CancelScope(shield=True):
            # Shielded: a cancelled leader must still hand every request of its batch an
            # outcome (run_sync itself checkpoints and waits for a thread slot first).
            try:
                await anyio.to_thread.run_sync(self.write_batch, batch)
            except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                for request in batch:
                    request.error = exc
        for request in batch:
            request.done = True
            request.wake.set()
        self.on_commit()

    def _abandon(self, request: AppendRequest) -> None:
        """Forget a request whose caller was cancelled before its batch was taken."""
        if request in self._queue:
            self._queue.remove(request)
        if self._leader is request:
            self._pass_leadership()

    def _pass_leadership(self) -> None:
        if self._queue:
            self._leader = self._queue[0]
            self._leader.wake.set()
        else:
            self._leader = None
