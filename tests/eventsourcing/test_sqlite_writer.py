"""Tests for the SQLite writer thread and group commit: hand-off, cancellation, lifecycle."""

from __future__ import annotations

import functools
import gc
import sqlite3
import threading
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from meshkit import EventStoreUnavailableError
from meshkit.eventsourcing import Event, SQLiteEventStore
from meshkit.eventsourcing._sqlite_group import AppendRequest, GroupCommitter, WriterThread

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

pytestmark = pytest.mark.anyio

PREFIX = "meshkit-sqlite-writer"


@pytest.fixture
async def writer() -> AsyncIterator[WriterThread]:
    """A writer thread, stopped after the test."""
    thread = WriterThread(f"{PREFIX} test")
    yield thread
    await thread.stop(lambda: None)


def _events(stream_id: str, first: int, count: int = 1) -> list[Event]:
    return [Event(stream_id=stream_id, version=v, type="T") for v in range(first, first + count)]


def _request(stream_id: str) -> AppendRequest:
    return AppendRequest(stream_id=stream_id, events=[], expected_version=0, rows=[])


class TestWriterThread:
    async def test_runs_calls_in_order_on_one_thread(self, writer: WriterThread) -> None:
        """Calls run one after another on the same non-loop thread and return their results."""
        seen: list[tuple[int, int]] = []

        def call(n: int) -> int:
            seen.append((n, threading.get_ident()))
            return n * 10

        results = [await writer.run(functools.partial(call, n)) for n in range(3)]
        assert results == [0, 10, 20]
        assert [n for n, _ in seen] == [0, 1, 2]
        assert len({ident for _, ident in seen}) == 1
        assert seen[0][1] != threading.get_ident()

    async def test_call_error_is_raised_to_the_caller(self, writer: WriterThread) -> None:
        """An exception of the call is raised in the waiting task; the thread keeps serving."""

        def fail() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await writer.run(fail)
        assert await writer.run(lambda: 1) == 1

    async def test_stop_ends_the_thread_and_refuses_calls(self) -> None:
        """stop() runs its last call, joins the thread; later calls and stops are refused/no-ops."""
        writer = WriterThread(f"{PREFIX} stop")
        await writer.stop(lambda: None)  # never started: nothing to end
        assert writer.thread is None
        writer = WriterThread(f"{PREFIX} stop")
        await writer.run(lambda: None)
        closed: list[bool] = []
        await writer.stop(lambda: closed.append(True))
        assert closed == [True]
        assert writer.thread is not None
        assert not writer.thread.is_alive()
        with pytest.raises(EventStoreUnavailableError, match="closed"):
            await writer.run(lambda: None)
        await writer.stop(lambda: None)

    async def test_stop_soon_ends_the_thread_without_waiting(self) -> None:
        """stop_soon() lets the thread finish its queue and end (what a finalizer calls)."""
        writer = WriterThread(f"{PREFIX} soon")
        await writer.run(lambda: None)
        writer.stop_soon()
        assert writer.thread is not None
        await anyio.to_thread.run_sync(writer.thread.join, 5)
        assert not writer.thread.is_alive()

    async def test_cancelled_caller_waits_for_its_call(self, writer: WriterThread) -> None:
        """A caller cancelled mid-call unwinds only after the call finished in the thread."""
        started, gate, order = threading.Event(), threading.Event(), list[str]()

        def slow() -> None:
            started.set()
            gate.wait(5)
            order.append("call finished")

        async def caller(scope: anyio.CancelScope) -> None:
            with scope:
                try:
                    await writer.run(slow)
                except anyio.get_cancelled_exc_class():
                    order.append("cancelled")
                    raise
            order.append("unwound")

        scope = anyio.CancelScope()
        async with anyio.create_task_group() as group:
            group.start_soon(caller, scope)
            await anyio.to_thread.run_sync(started.wait, 5)
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert order == []
            gate.set()
        assert order == ["call finished", "cancelled", "unwound"]


def _committer(writer: WriterThread, gate: threading.Event, written: list[str]) -> GroupCommitter:
    """A committer whose batches wait for `gate`."""

    def write_batch(batch: Sequence[AppendRequest]) -> None:
        gate.wait(5)
        for request in batch:
            written.append(request.stream_id)
            request.result = request.expected_version + len(request.rows)

    return GroupCommitter(
        write_batch=write_batch, on_commit=lambda: None, max_batch=2, writer=writer
    )


class TestGroupCommitter:
    async def test_batches_follow_the_leader(self, writer: WriterThread) -> None:
        """Requests queued behind a leader are written in batches of at most max_batch."""
        gate, written = threading.Event(), list[str]()
        committer = _committer(writer, gate, written)
        results: list[int] = []

        async def submit(name: str) -> None:
            results.append(await committer.submit(_request(name)))

        async with anyio.create_task_group() as group:
            for name in "abcde":
                group.start_soon(submit, name)
                await anyio.lowlevel.checkpoint()
            gate.set()
        assert sorted(written) == list("abcde")
        assert results == [0] * 5

    async def test_cancelled_waiter_is_not_written(self, writer: WriterThread) -> None:
        """A request cancelled while queued is dropped; the others still get written."""
        gate, written = threading.Event(), list[str]()
        committer = _committer(writer, gate, written)
        async with anyio.create_task_group() as group:
            group.start_soon(committer.submit, _request("leader"))
            await anyio.wait_all_tasks_blocked()
            with anyio.CancelScope() as scope:
                scope.cancel()
                await committer.submit(_request("cancelled"))
            group.start_soon(committer.submit, _request("after"))
            await anyio.wait_all_tasks_blocked()
            gate.set()
        assert written == ["leader", "after"]

    async def test_cancelled_leader_finishes_its_batch_first(self, writer: WriterThread) -> None:
        """A leader cancelled mid-write completes its batch, passes leadership, then raises."""
        gate, written = threading.Event(), list[str]()
        committer = _committer(writer, gate, written)
        results: list[int] = []
        scope = anyio.CancelScope()
        async with anyio.create_task_group() as group:

            async def leader() -> None:
                with scope:
                    await committer.submit(_request("leader"))
                    results.append(-1)  # not reached: the cancellation is raised

            async def follower() -> None:
                results.append(await committer.submit(_request("follower")))

            group.start_soon(leader)
            await anyio.wait_all_tasks_blocked()
            group.start_soon(follower)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert written == []
            gate.set()
        assert written == ["leader", "follower"]
        assert results == [0]
        assert scope.cancelled_caught

    async def test_cancelled_request_in_flight_waits_for_its_batch(
        self, writer: WriterThread
    ) -> None:
        """A request cancelled after its batch reached the thread is written, then raises."""
        gates = {"a": threading.Event(), "c": threading.Event()}
        written, order = list[str](), list[str]()

        def write_batch(batch: Sequence[AppendRequest]) -> None:
            gates[batch[-1].stream_id].wait(5)
            for request in batch:
                written.append(request.stream_id)
                request.result = 0

        committer = GroupCommitter(
            write_batch=write_batch, on_commit=lambda: None, max_batch=2, writer=writer
        )
        scope = anyio.CancelScope()

        async def doomed() -> None:
            with scope:
                try:
                    await committer.submit(_request("c"))
                except anyio.get_cancelled_exc_class():
                    order.append(f"cancelled after {written}")
                    raise

        async with anyio.create_task_group() as group:
            for name in "ab":
                group.start_soon(committer.submit, _request(name))
                await anyio.wait_all_tasks_blocked()
            group.start_soon(doomed)
            await anyio.wait_all_tasks_blocked()
            gates["a"].set()  # "b" then leads the next batch: ["b", "c"], held at its gate
            while written != ["a"] or committer._queue:
                await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert order == []
            gates["c"].set()
        assert written == ["a", "b", "c"]
        assert order == ["cancelled after ['a', 'b', 'c']"]

    async def test_cancelled_promoted_waiter_passes_leadership(self, writer: WriterThread) -> None:
        """A waiter promoted to leader but cancelled hands leadership to the next one."""
        committer = _committer(writer, threading.Event(), [])
        doomed, following = _request("doomed"), _request("next")
        committer._queue.extend([doomed, following])
        committer._leader = doomed
        await committer._abandon(doomed)
        assert committer._leader is following
        assert following.wake.is_set()
        assert list(committer._queue) == [following]

    async def test_cancelled_finished_request_returns_at_once(self, writer: WriterThread) -> None:
        """A request cancelled just as its batch finished has nothing left to wait for."""
        committer = _committer(writer, threading.Event(), [])
        finished = _request("finished")
        finished.done, finished.result = True, 1
        with anyio.fail_after(5):
            await committer._abandon(finished)
        assert not finished.wake.is_set()

    async def test_unexpected_writer_failure_reaches_every_request(
        self, writer: WriterThread
    ) -> None:
        """An exception escaping write_batch is raised to every request of the batch."""

        def write_batch(batch: Sequence[AppendRequest]) -> None:
            raise RuntimeError("boom")

        committer = GroupCommitter(
            write_batch=write_batch, on_commit=lambda: None, max_batch=8, writer=writer
        )
        with pytest.raises(RuntimeError, match="boom"):
            await committer.submit(_request("x"))

    async def test_stopped_writer_fails_the_batch(self, writer: WriterThread) -> None:
        """Requests reaching a stopped writer get EventStoreUnavailableError, unwritten."""
        written: list[str] = []
        committer = _committer(writer, threading.Event(), written)
        await writer.stop(lambda: None)
        with pytest.raises(EventStoreUnavailableError, match="closed"):
            await committer.submit(_request("x"))
        assert written == []


class TestStoreLifecycle:
    async def test_aclose_ends_the_writer_thread(self, tmp_path: Path) -> None:
        """The store's writer thread starts on open and is joined by aclose()."""
        store = await SQLiteEventStore.open(tmp_path / "a.db")
        thread = store._thread.thread
        assert thread is not None
        assert thread.is_alive()
        assert thread.name.startswith(PREFIX)
        await store.append("s", _events("s", 1), 0)
        await store.aclose()
        assert not thread.is_alive()
        with pytest.raises(EventStoreUnavailableError, match="closed"):
            await store.append("s", _events("s", 2), 1)

    async def test_concurrent_aclose_waits_for_the_thread(self, tmp_path: Path) -> None:
        """A second aclose() running alongside the first returns only once the store is closed."""
        store = await SQLiteEventStore.open(tmp_path / "c.db")
        thread = store._thread.thread
        assert thread is not None
        release = threading.Event()
        queued = anyio.Event()

        async def block_writer() -> None:
            queued.set()
            await store._thread.run(release.wait)

        async def close_second() -> None:
            await store.aclose()
            assert store._writer is None
            assert not thread.is_alive()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(block_writer)
                await queued.wait()
                group.start_soon(store.aclose)
                await anyio.lowlevel.checkpoint()
                group.start_soon(close_second)
                await anyio.lowlevel.checkpoint()
                release.set()
        finally:
            release.set()

    async def test_failed_open_ends_the_writer_thread(self, tmp_path: Path) -> None:
        """A store that cannot open closes itself, leaving no thread behind."""
        with pytest.raises(EventStoreUnavailableError, match="open"):
            await SQLiteEventStore.open(tmp_path / "missing" / "x.db")
        with pytest.raises(EventStoreUnavailableError, match="open"):
            async with SQLiteEventStore(path=tmp_path / "missing" / "y.db"):
                pass  # pragma: no cover - not entered

    async def test_concurrent_first_uses_open_once(self, tmp_path: Path) -> None:
        """Appends racing to open a fresh store open its write connection once."""
        async with SQLiteEventStore(path=tmp_path / "r.db") as store:
            pass
        store = SQLiteEventStore(path=tmp_path / "r.db")
        async with anyio.create_task_group() as group:
            for name in "abc":
                group.start_soon(store.append, name, _events(name, 1), 0)
        assert len(await store.read_all()) == 3
        await store.aclose()

    async def test_dropped_store_ends_its_thread(self, tmp_path: Path) -> None:
        """A store garbage-collected without aclose() still ends its writer thread."""
        store = await SQLiteEventStore.open(tmp_path / "d.db")
        thread = store._thread.thread
        assert thread is not None
        del store
        gc.collect()
        await anyio.to_thread.run_sync(thread.join, 5)
        assert not thread.is_alive()

    async def test_cancelled_append_in_flight_commits_whole(self, tmp_path: Path) -> None:
        """An append cancelled while the writer waits for a lock commits all of it, then raises."""
        path = tmp_path / "c.db"
        async with await SQLiteEventStore.open(path) as store:
            rival = sqlite3.connect(path, isolation_level=None)
            rival.execute("BEGIN IMMEDIATE")
            outcome: list[str] = []
            scope = anyio.CancelScope()

            async def append() -> None:
                with scope:
                    try:
                        await store.append("s", _events("s", 1, 3), 0)
                    except anyio.get_cancelled_exc_class():
                        outcome.append("cancelled")
                        raise

            async with anyio.create_task_group() as group:
                group.start_soon(append)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                assert outcome == []
                rival.execute("ROLLBACK")
                rival.close()
            assert outcome == ["cancelled"]
            assert [e.version for e in await store.read("s")] == [1, 2, 3]
