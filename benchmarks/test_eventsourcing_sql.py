"""Durable appends: meshkit's SQLite and PostgreSQL stores against the `eventsourcing` package.

Both sides write one event per append to a file on disk (WAL, synchronous=FULL on both) or to
the local PostgreSQL, with 1 writer and with 16 (meshkit: 16 tasks; eventsourcing, which is
synchronous: 16 threads). eventsourcing is measured at its recorder level (the
`ApplicationRecorder`, which keeps a global notification log like meshkit's `read_all`).
Each round appends `PER_ROUND` events. A last group compares the application level: an
aggregate command plus `Repository.save` (meshkit) against `Application.save` (eventsourcing),
one new event per save, one writer, on SQLite.

Run: `.venv/bin/pytest benchmarks/test_eventsourcing_sql.py --benchmark-only`
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate as PeerAggregate
from eventsourcing.domain import event as peer_event
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from meshkit.eventsourcing import (
    Aggregate,
    Event,
    EventRegistry,
    EventStore,
    PostgresEventStore,
    Repository,
    SQLiteEventStore,
    applies,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

PER_ROUND = 320
DSN = os.environ.get("MESHKIT_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
ROUNDS = 5


def _meshkit_round(store: EventStore, writers: int) -> Callable[[], None]:
    """One round: `writers` tasks append PER_ROUND events in all, one per append."""
    per_writer = PER_ROUND // writers

    async def writer() -> None:
        stream = uuid.uuid4().hex
        for version in range(1, per_writer + 1):
            event = Event(stream_id=stream, version=version, type="Happened", data={"n": 1})
            await store.append(stream, [event], version - 1)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(writers):
                group.start_soon(writer)

    return lambda: anyio.run(main)


def _opened(open_store: Callable[[], Awaitable[Any]]) -> Any:
    """Open a store (its schema, connections) outside the timed rounds, as the peer's is."""

    async def main() -> Any:
        return await open_store()

    return anyio.run(main)


def _close(store: EventStore) -> None:
    anyio.run(store.aclose)


def _peer_round(recorder: Any, writers: int) -> Callable[[], None]:
    """One round: `writers` threads append PER_ROUND events in all, one per insert."""
    per_writer = PER_ROUND // writers

    def writer() -> None:
        originator = uuid.uuid4()
        for version in range(1, per_writer + 1):
            stored = StoredEvent(
                originator_id=originator, originator_version=version, topic="t", state=b'{"n":1}'
            )
            recorder.insert_events([stored])

    def run() -> None:
        if writers == 1:
            writer()
            return
        threads = [threading.Thread(target=writer) for _ in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return run


registry = EventRegistry()


@registry.register("Added")
@attrs.frozen
class Added:
    n: int


class Tally(Aggregate):
    type_name = "Tally"

    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.total = 0

    def add(self, n: int) -> None:
        self.record(Added(n=n))

    @applies(Added)
    def _added(self, event: Added) -> None:
        self.total += event.n


class PeerTally(PeerAggregate):
    @peer_event("Created")
    def __init__(self) -> None:
        self.total = 0

    @peer_event("Added")
    def add(self, n: int) -> None:
        self.total += n


@pytest.fixture(scope="module")
def tmp_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as path:
        yield path


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"meshkit_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield schema
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.parametrize("writers", [1, 16])
class TestSQLite:
    def test_meshkit(self, benchmark: Any, tmp_dir: str, writers: int) -> None:
        path = os.path.join(tmp_dir, f"meshkit-{writers}.db")  # noqa: PTH118
        benchmark.group = f"eventsourcing-sqlite-{writers}-writers"
        store = _opened(lambda: SQLiteEventStore.open(path))
        benchmark.pedantic(_meshkit_round(store, writers), rounds=ROUNDS)
        _close(store)

    def test_eventsourcing(self, benchmark: Any, tmp_dir: str, writers: int) -> None:
        path = os.path.join(tmp_dir, f"peer-{writers}.db")  # noqa: PTH118
        datastore = SQLiteDatastore(path, pool_size=writers + 1, max_overflow=writers)
        recorder = SQLiteApplicationRecorder(datastore)
        recorder.create_table()
        benchmark.group = f"eventsourcing-sqlite-{writers}-writers"
        benchmark.pedantic(_peer_round(recorder, writers), rounds=ROUNDS)
        datastore.close()


class TestSQLiteFromAsync:
    """Context for the 1-writer group: the peer called from async code, as a service would.

    An async service cannot call a blocking recorder on its event loop (the fsync would stall
    every other task), so it hands each insert to a worker thread. meshkit pays a crossing too,
    to its store's own writer thread, a cheaper hand-off than `anyio.to_thread.run_sync`.
    """

    def test_eventsourcing_via_to_thread(self, benchmark: Any, tmp_dir: str) -> None:
        path = os.path.join(tmp_dir, "peer-async.db")  # noqa: PTH118
        datastore = SQLiteDatastore(path, pool_size=2, max_overflow=2)
        recorder = SQLiteApplicationRecorder(datastore)
        recorder.create_table()

        async def main() -> None:
            originator = uuid.uuid4()
            for version in range(1, PER_ROUND + 1):
                stored = StoredEvent(
                    originator_id=originator,
                    originator_version=version,
                    topic="t",
                    state=b'{"n":1}',
                )
                await anyio.to_thread.run_sync(recorder.insert_events, [stored])

        benchmark.group = "eventsourcing-sqlite-1-writers"
        benchmark.pedantic(lambda: anyio.run(main), rounds=ROUNDS)
        datastore.close()


@pytest.mark.parametrize("writers", [1, 16])
class TestPostgres:
    def test_meshkit(self, benchmark: Any, pg_schema: str, writers: int) -> None:
        benchmark.group = f"eventsourcing-postgres-{writers}-writers"
        store = _opened(lambda: PostgresEventStore.open(DSN, schema=pg_schema, max_connections=16))
        benchmark.pedantic(_meshkit_round(store, writers), rounds=ROUNDS)
        _close(store)

    def test_eventsourcing(self, benchmark: Any, pg_schema: str, writers: int) -> None:
        datastore = PostgresDatastore(
            "test", "127.0.0.1", 5432, "postgres", "", pool_size=16, schema=pg_schema
        )
        recorder = PostgresApplicationRecorder(datastore)
        recorder.create_table()
        benchmark.group = f"eventsourcing-postgres-{writers}-writers"
        benchmark.pedantic(_peer_round(recorder, writers), rounds=ROUNDS)
        datastore.close()


class TestSQLiteApplication:
    def test_meshkit(self, benchmark: Any, tmp_dir: str) -> None:
        store = _opened(lambda: SQLiteEventStore.open(os.path.join(tmp_dir, "app.db")))  # noqa: PTH118
        repository = Repository(store=store, aggregate_type=Tally, registry=registry)

        async def main() -> None:
            tally = Tally(uuid.uuid4().hex)
            for _ in range(PER_ROUND):
                tally.add(1)
                await repository.save(tally)

        benchmark.group = "eventsourcing-sqlite-application-1-writer"
        benchmark.pedantic(lambda: anyio.run(main), rounds=ROUNDS)
        _close(store)

    def test_eventsourcing(self, benchmark: Any, tmp_dir: str) -> None:
        path = os.path.join(tmp_dir, "peer-app.db")  # noqa: PTH118
        app: Any = Application(
            env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path}
        )

        def run() -> None:
            tally = PeerTally()
            for _ in range(PER_ROUND):
                tally.add(1)
                app.save(tally)

        benchmark.group = "eventsourcing-sqlite-application-1-writer"
        benchmark.pedantic(run, rounds=ROUNDS)
        app.close()
