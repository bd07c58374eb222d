"""Group commit: concurrent appends queue to one writer thread that commits them in batches.

The writer is one long-lived thread per store (`WriterThread`): it owns the write connection
and runs jobs from a `queue.SimpleQueue`, one at a time, in order. A job's caller sleeps on an
`anyio.Event` that the thread sets through the caller's event-loop token, so a hand-off costs a
queue put and one wake-up of the loop: about half of `anyio.to_thread.run_sync`, which also
takes a capacity limiter, a pooled worker and a future per call.

There is no background task. The first append that finds no batch being gathered becomes the
*leader*: it takes the queue (up to `max_batch` requests, its own first), hands the batch to the
writer thread, wakes every request of the batch with its own outcome, and hands leadership to
the oldest request still queued. While a batch is being written, new appends pile up behind
it, so the next batch is larger: the busier the store, the more appends share one commit (one
fsync).

Cancellation never half-writes: a request still queued is dropped, and one whose batch has
reached the thread is completed (committed or failed as a whole) before its caller's
cancellation is raised; the caller learns from the stream whether it landed.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from meshkit._errors import EventStoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from meshkit.eventsourcing._event import Event
    from meshkit.eventsourcing._sql_common import EventRow

__all__ = ["AppendRequest", "GroupCommitter", "WriterThread"]

_T = TypeVar("_T")


@final
@attrs.define(eq=False)
class _Job(Generic[_T]):
    """A call for the writer thread, and the way back to the event loop that waits for it."""

    function: Callable[[], _T | None]
    last: bool = False
    result: _T | None = None
    error: BaseException | None = None
    done: anyio.Event = attrs.field(factory=anyio.Event)
    token: anyio.lowlevel.EventLoopToken = attrs.field(factory=anyio.lowlevel.current_token)

    def execute(self) -> None:
        """Run the call (in the writer thread) and wake the waiting task in its own loop."""
        # Drop the function (often a store's bound method) before waking the caller: once
        # woken, it may drop the store and expect its finalizer to end this thread.
        function, self.function = self.function, _nothing
        try:
            self.result = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting task
            self.error = exc
        del function
        # The loop can only be gone if its task was torn down without waiting; nobody listens.
        with contextlib.suppress(anyio.RunFinishedError):
            self.token.backend_class.run_sync_soon(self.done.set, (), self.token.native_token)

    def outcome(self) -> _T:
        """Return the call's result, or raise its error."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value] # set by execute() when no error


def _nothing() -> None:
    """What a job holds once its function has run."""


def _serve(jobs: queue.SimpleQueue[_Job[Any] | None]) -> None:
    """The writer thread's body: run jobs in order until the last one (or `None`)."""
    while _serve_one(jobs.get()):
        pass


def _serve_one(job: _Job[Any] | None) -> bool:
    """Run one job; return whether to go on (no reference to it outlives the call)."""
    if job is None:
        return False
    job.execute()
    return not job.last


@final
@attrs.define(eq=False)
class WriterThread:
    """One long-lived thread that runs a store's writes, one at a time, in submission order.

    It starts on the first `run()` and ends with `stop()`; the thread holds no reference to the
    store, so `stop_soon()` can also end it from a finalizer.
    """

    name: str
    _jobs: queue.SimpleQueue[_Job[Any] | None] = attrs.field(init=False, factory=queue.SimpleQueue)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)
    _stopping: bool = attrs.field(init=False, default=False)

    @property
    def thread(self) -> threading.Thread | None:
        """The thread, once started."""
        return self._thread

    async def run(self, function: Callable[[], _T], *, last: bool = False) -> _T:
        """Call `function()` in the writer thread and return its result or raise its error.

        Once queued, the call runs to its end: if the caller is cancelled meanwhile, it still
        waits for the call to finish, then the cancellation is raised (the outcome is dropped).

        Raises:
            EventStoreUnavailableError: If the writer was stopped (`function` is not called).
        """
        if self._stopping:
            raise EventStoreUnavailableError("sqlite", "write", "the store is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=_serve, args=(self._jobs,), name=self.name, daemon=True
            )
            self._thread.start()
        job = _Job(function, last=last)
        self._stopping = last
        self._jobs.put(job)
        try:
            await job.done.wait()
        except BaseException:
            # Cheaper than shielding every wait: only a cancelled caller pays for the scope.
            with anyio.CancelScope(shield=True):
                await job.done.wait()
            raise
        return job.outcome()

    async def stop(self, last: Callable[[], None]) -> None:
        """Run `last()` as the final job, then end the thread (a no-op if never started).

        Jobs queued before it still run; any later `run()` raises. A second `stop()` (while
        the first is still running, or after it) returns once the thread has ended.

        Raises:
            BaseException: Whatever `last()` raised (the thread ends all the same).
        """
        thread = self._thread
        if thread is None or self._stopping:
            self._stopping = True
            if thread is not None and thread.is_alive():
                await anyio.to_thread.run_sync(thread.join)
            return
        try:
            await self.run(last, last=True)
        finally:
            # The thread has finished its last job and is returning: this join is immediate.
            thread.join()

    def stop_soon(self) -> None:
        """End the thread once the jobs already queued have run, without waiting."""
        self._stopping = True
        self._jobs.put(None)


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
    """Serializes appends through the writer thread, batching those that arrive meanwhile.

    `write_batch` runs in `writer`'s thread, one batch at a time, and must set `result` or
    `error` on every request of the batch; `on_commit` runs in the event loop after each batch.
    """

    write_batch: Callable[[Sequence[AppendRequest]], None]
    on_commit: Callable[[], None]
    max_batch: int
    writer: WriterThread
    _queue: collections.deque[AppendRequest] = attrs.field(init=False, factory=collections.deque)
    _leader: AppendRequest | None = attrs.field(init=False, default=None)
    _busy: bool = attrs.field(init=False, default=False)

    async def submit(self, request: AppendRequest) -> int:
        """Queue `request`, write it (leading a batch if no one else is), return its outcome.

        If the caller is cancelled after the request's batch reached the writer thread, the
        append still commits or fails as a whole, and the cancellation is raised after that.

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
                await self._abandon(request)
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
        """Write a batch; every request of it gets its outcome even if the leader is cancelled."""
        count = min(self.max_batch, len(self._queue))
        batch = [self._queue.popleft() for _ in range(count)]
        self._busy = count > 1
        try:
            await self.writer.run(lambda: self._write(batch))
        except Exception as exc:  # noqa: BLE001 - the writer is stopped: handed to every request
            for request in batch:
                request.error = exc
        finally:
            for request in batch:
                request.done = True
                request.wake.set()
            self.on_commit()

    def _write(self, batch: Sequence[AppendRequest]) -> None:
        """Run `write_batch` (in the writer thread); an escaping error fails the whole batch."""
        try:
            self.write_batch(batch)
        except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
            for request in batch:
                request.result = None
                request.error = exc

    async def _abandon(self, request: AppendRequest) -> None:
        """Forget a cancelled request still queued, or wait for the batch that took it."""
        if request in self._queue:
            self._queue.remove(request)
            if self._leader is request:
                self._pass_leadership()
            return
        if not request.done:
            # Its batch is in the writer thread: let it commit or fail before unwinding.
            with anyio.CancelScope(shield=True):
                await request.wake.wait()

    def _pass_leadership(self) -> None:
        if self._queue:
            self._leader = self._queue[0]
            self._leader.wake.set()
        else:
            self._leader = None
