"""Where the time of one durable SQLite append goes: meshkit against `eventsourcing`, by part.

pytest-benchmark times whole rounds; this script times the parts of one append separately, so
the cost of the thread crossing an async store must pay can be told from the cost of the SQL
and the fsync, which both libraries pay alike. Each figure is the best (minimum) per-append
time of `--rounds` rounds of `--appends` appends, the least disturbed by other jobs.

Run: `.venv/bin/python benchmarks/sqlite_append_breakdown.py [--rounds 15] [--appends 200]`
"""

from __future__ import annotations

import argparse
import os
import queue
import tempfile
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from meshkit.eventsourcing import Event, JSONSerializer, SQLiteEventStore
from meshkit.eventsourcing import _sqlite_sql as sql
from meshkit.eventsourcing._checks import check_append
from meshkit.eventsourcing._sql_common import encode_events
from meshkit.eventsourcing._sqlite_group import AppendRequest

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Awaitable, Callable


def _best(rounds: int, appends: int, run: Callable[[int], float | None]) -> float:
    """Return the best per-append time in microseconds of `rounds` calls of `run(appends)`.

    A `run` that times itself (to leave out opening a store) returns its seconds.
    """
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        elapsed = run(appends)
        if elapsed is None:
            elapsed = time.perf_counter() - start
        times.append(elapsed / appends * 1e6)
    return min(times)


def _async(body: Callable[[int], Awaitable[None]]) -> Callable[[int], None]:
    return lambda n: anyio.run(body, n)


def peer_insert(path: str) -> Callable[[int], None]:
    """eventsourcing's recorder, in the calling thread: SQL + fsync, no crossing."""
    datastore = SQLiteDatastore(path, pool_size=2, max_overflow=2)
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()

    def run(n: int) -> None:
        originator = uuid.uuid4()
        for version in range(1, n + 1):
            stored = StoredEvent(
                originator_id=originator, originator_version=version, topic="t", state=b"{}"
            )
            recorder.insert_events([stored])

    return run


def _requests(n: int) -> list[AppendRequest]:
    stream = uuid.uuid4().hex
    requests = []
    for version in range(1, n + 1):
        events = [Event(stream_id=stream, version=version, type="Happened", data={"n": 1})]
        rows = encode_events(events, JSONSerializer())
        requests.append(AppendRequest(stream, events, version - 1, rows))
    return requests


def meshkit_sql(path: str) -> Callable[[int], None]:
    """meshkit's batch writer called directly in this thread: SQL + fsync, no crossing."""
    conn = sql.open_writer(path, 5.0, "FULL")

    def run(n: int) -> None:
        for request in _requests(n):
            sql.write_batch(conn, [request])

    return run


def meshkit_python(_path: str) -> Callable[[int], None]:
    """meshkit's Python per append before the crossing: build, check, encode one event."""

    def run(n: int) -> None:
        stream = uuid.uuid4().hex
        serializer = JSONSerializer()
        for version in range(1, n + 1):
            events = [Event(stream_id=stream, version=version, type="Happened", data={"n": 1})]
            check_append(stream, events, version - 1)
            encode_events(events, serializer)

    return run


def bare_ping_pong(_path: str) -> Callable[[int], None]:
    """The floor of any crossing: wake a waiting thread, have it wake the event loop back."""
    jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def serve() -> None:
        while (job := jobs.get()) is not None:
            token, event = job
            token.backend_class.run_sync_soon(event.set, (), token.native_token)

    async def body(n: int) -> None:
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        token = anyio.lowlevel.current_token()
        for _ in range(n):
            event = anyio.Event()
            jobs.put((token, event))
            await event.wait()
        jobs.put(None)
        thread.join()

    return _async(body)


def to_thread_round_trip(_path: str) -> Callable[[int], None]:
    """`anyio.to_thread.run_sync` of a no-op: the crossing a service pays to call the peer."""

    async def body(n: int) -> None:
        for _ in range(n):
            await anyio.to_thread.run_sync(lambda: None)

    return _async(body)


def meshkit_append_without_sql(path: str) -> Callable[[int], float]:
    """A whole `append` with the batch writer stubbed out: Python + the crossing, no SQL."""

    def fake_write(_conn: sqlite3.Connection, batch: list[AppendRequest]) -> None:
        for request in batch:
            request.result = request.expected_version + 1

    return _store_appends(path, fake_write)


def meshkit_append(path: str) -> Callable[[int], float]:
    """A whole durable `append`: Python + the crossing + SQL + fsync."""
    return _store_appends(path, None)


def _store_appends(path: str, fake: Any) -> Callable[[int], float]:
    """Time `n` appends in one event loop, the store opened before the clock starts."""

    async def body(n: int) -> float:
        real = sql.write_batch
        if fake is not None:
            sql.write_batch = fake
        try:
            async with SQLiteEventStore(path=path) as store:
                stream = uuid.uuid4().hex
                start = time.perf_counter()
                for version in range(1, n + 1):
                    event = Event(stream_id=stream, version=version, type="Happened", data={})
                    await store.append(stream, [event], version - 1)
                return time.perf_counter() - start
        finally:
            sql.write_batch = real

    return lambda n: anyio.run(body, n)


PARTS = [
    peer_insert,
    meshkit_sql,
    meshkit_python,
    bare_ping_pong,
    to_thread_round_trip,
    meshkit_append_without_sql,
    meshkit_append,
]


def main() -> None:
    """Print each part's best per-append time."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for part in PARTS:  # each part's run: a Callable[[int], float | None]
            if args.only and args.only not in part.__name__:
                continue
            run = part(os.path.join(directory, f"{part.__name__}.db"))  # noqa: PTH118
            best = _best(args.rounds, args.appends, run)
            summary = (part.__doc__ or "").splitlines()[0]
            print(f"{part.__name__:28} {best:8.1f} us/append  {summary}")  # noqa: T201


if __name__ == "__main__":
    main()
