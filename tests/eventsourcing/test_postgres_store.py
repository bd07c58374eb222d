"""Tests for the PostgreSQL event store: conformance, the no-skip log, errors, transactions."""

# ruff: noqa: S608 - the SQL text is built from the test's own schema name

from __future__ import annotations

import anyio
import psycopg
import pytest

from meshkit import (
    ConfigurationError,
    DuplicateEventIdError,
    EventDecodeError,
    EventStoreUnavailableError,
    VersionConflictError,
)
from meshkit.eventsourcing import Event, EventStore, PostgresEventStore, Snapshot
from meshkit.testing import CheckpointStoreConformance, EventStoreConformance, FakeClock

pytestmark = pytest.mark.anyio


def _events(stream_id: str, first: int, count: int = 1) -> list[Event]:
    return [Event(stream_id=stream_id, version=v, type="T") for v in range(first, first + count)]


async def _until_waiting_on_a_lock(dsn: str, schema: str) -> None:
    """Return once an append in `schema` is blocked on a lock (polls, for up to 5 s)."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
    with psycopg.connect(dsn, autocommit=True) as watch:
        for _ in range(500):
            row = watch.execute(query, (f'%"{schema}".meshkit_append%',)).fetchone()
            if row is not None and row[0]:
                return
            await anyio.sleep(0.01)
    raise AssertionError("the append never waited on the rival's lock")


class TestPostgresConformance(EventStoreConformance):
    @pytest.fixture(autouse=True)
    def _schema(self, postgres_dsn: str, pg_schema: str) -> None:
        self.dsn, self.schema = postgres_dsn, pg_schema

    async def make_store(self) -> PostgresEventStore:
        return await PostgresEventStore.open(self.dsn, schema=self.schema)

    async def corrupt_event(
        self, store: EventStore, stream_id: str, column: str, value: object
    ) -> bool:
        if column != "data" or not isinstance(value, bytes):
            return False  # typed columns: PostgreSQL refuses such values itself
        assert isinstance(store, PostgresEventStore)
        async with store.transaction() as tx:
            statement = f'UPDATE "{self.schema}".meshkit_events SET data = %s WHERE stream_id = %s'
            await tx.execute(statement, (value, stream_id))
        return True


class TestPostgresCheckpointConformance(CheckpointStoreConformance):
    @pytest.fixture(autouse=True)
    def _schema(self, postgres_dsn: str, pg_schema: str) -> None:
        self.dsn, self.schema = postgres_dsn, pg_schema

    async def make_checkpoints(self) -> PostgresEventStore:
        return await PostgresEventStore.open(self.dsn, schema=self.schema)


class TestConfiguration:
    def test_bad_knobs_name_the_field(self) -> None:
        """A schema that is not a plain identifier, or a bad pool size, is refused."""
        with pytest.raises(ConfigurationError, match="schema"):
            PostgresEventStore(dsn="x", schema='a"; DROP')
        with pytest.raises(ConfigurationError, match="max_connections"):
            PostgresEventStore(dsn="x", min_connections=4, max_connections=2)

    @pytest.mark.parametrize(
        "dsn",
        [
            "host=127.0.0.1 password=secret bogus_option=1",
            "postgresql://user:secret@127.0.0.1/test?bogus=1",
        ],
    )
    async def test_malformed_dsn_is_a_configuration_error(self, dsn: str) -> None:
        """A DSN libpq cannot parse is refused at once, naming the field, its password masked."""
        with pytest.raises(ConfigurationError) as info:
            await PostgresEventStore.open(dsn, connect_timeout=1.0)
        assert info.value.field == "dsn"
        assert "secret" not in str(info.value)
        assert "bogus" in str(info.value)

    async def test_unreachable_server_is_translated(self) -> None:
        """A server that cannot be reached raises EventStoreUnavailableError from psycopg."""
        store = PostgresEventStore(dsn="postgresql://nobody@127.0.0.1:1/x", connect_timeout=0.5)
        with pytest.raises(EventStoreUnavailableError) as info:
            await store.read_all()
        assert isinstance(info.value.__cause__, psycopg.Error)

    async def test_schema_creation_is_idempotent(self, postgres_dsn: str, pg_schema: str) -> None:
        """Opening twice on one schema keeps the data."""
        async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as store:
            await store.append("s", _events("s", 1), 0)
        async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as store:
            assert await store.stream_version("s") == 1
            assert await store.last_position() == 1


class TestNoSkip:
    async def test_in_flight_transaction_withholds_later_rows(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """Rows committed after an open writer's are withheld until that writer finishes."""
        async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as store:
            await store.append("warm", _events("warm", 1), 0)
            with psycopg.connect(postgres_dsn) as slow:
                slow.execute(f'INSERT INTO "{pg_schema}".meshkit_checkpoints VALUES (%s, 1)', ["x"])
                # `slow` now holds a transaction id older than the next append's
                await store.append("fast", _events("fast", 1), 0)
                assert [e.stream_id for e in await store.read_all()] == ["warm"]
                assert await store.last_position() == 1
                slow.rollback()
            assert [e.stream_id for e in await store.read_all()] == ["warm", "fast"]


class TestErrors:
    async def test_corrupt_row_names_stream_version_and_type(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """A row whose payload cannot be decoded raises EventDecodeError with its coordinates."""
        async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as store:
            await store.append("s", _events("s", 1), 0)
            with psycopg.connect(postgres_dsn, autocommit=True) as raw:
                raw.execute(f"UPDATE \"{pg_schema}\".meshkit_events SET data = '\\xff00'")
            with pytest.raises(EventDecodeError, match="'s' version 1"):
                await store.read_all()

    async def test_event_id_stored_elsewhere_is_a_duplicate(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """An event id already stored in another stream is named with its stream; no write."""
        async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as store:
            first = _events("a", 1)
            await store.append("a", first, 0)
            clash = [
                *_events("b", 1),
                Event(stream_id="b", version=2, type="T", event_id=first[0].event_id),
            ]
            with pytest.raises(DuplicateEventIdError) as info:
                await store.append("b", clash, 0)
            assert (info.value.event_id, info.value.stream_id) == (first[0].event_id, "a")
            assert await store.read("b") == []

    async def test_failed_insert_releases_the_ordering_lock(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """A driver error inside an append is translated, and other writers are not blocked."""
        async with PostgresEventStore(
            dsn=postgres_dsn, schema=pg_schema, min_connections=1, max_connections=1
        ) as store:
            with psycopg.connect(postgres_dsn, autocommit=True) as raw:
                raw.execute(
                    f'CREATE FUNCTION "{pg_schema}".refuse() RETURNS trigger LANGUAGE plpgsql '
                    "AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$"
                )
                raw.execute(
                    f'CREATE TRIGGER refuse BEFORE INSERT ON "{pg_schema}".meshkit_events '
                    f"FOR EACH ROW WHEN (NEW.stream_id = 'bad') "
                    f'EXECUTE FUNCTION "{pg_schema}".refuse()'
                )
            with pytest.raises(EventStoreUnavailableError, match="refused"):
                await store.append("bad", _events("bad", 1), 0)
            async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as other:
                with anyio.fail_after(5):
                    assert await other.append("good", _events("good", 1), 0) == 1
            assert await store.read("bad") == []

    async def test_race_after_the_version_check_is_a_conflict(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """A writer that commits the same version after our check makes ours a conflict."""
        async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as store:
            await store.append("warm", _events("warm", 1), 0)
            with psycopg.connect(postgres_dsn) as rival:
                rival.execute(
                    f'INSERT INTO "{pg_schema}".meshkit_events (stream_id, version, event_id, '
                    "type, schema_version, data, timestamp) "
                    "VALUES ('s', 1, gen_random_uuid(), 'T', 1, '\\x7b7d', now())"
                )
                outcome: list[BaseException] = []

                async def ours() -> None:
                    try:
                        await store.append("s", _events("s", 1), 0)
                    except VersionConflictError as exc:
                        outcome.append(exc)

                async with anyio.create_task_group() as group:
                    group.start_soon(ours)
                    await _until_waiting_on_a_lock(postgres_dsn, pg_schema)
                    rival.commit()
            assert len(outcome) == 1
            assert [e.version for e in await store.read("s")] == [1]

    async def test_open_twice_is_harmless(self, postgres_dsn: str, pg_schema: str) -> None:
        """A second, racing open of the same store object keeps the first pool."""
        async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as store:
            pool = store._pool
            await anyio.to_thread.run_sync(store._open_sync)
            assert store._pool is pool
        await store.aclose()

    async def test_closed_store_refuses_work(self, postgres_dsn: str, pg_schema: str) -> None:
        """After aclose() every call raises EventStoreUnavailableError."""
        store = await PostgresEventStore.open(postgres_dsn, schema=pg_schema)
        await store.aclose()
        with pytest.raises(EventStoreUnavailableError, match="closed"):
            await store.read_all()

    async def test_snapshot_replaced(self, postgres_dsn: str, pg_schema: str) -> None:
        """A newer snapshot replaces the stream's previous one."""
        async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as store:
            await store.save_snapshot(Snapshot(stream_id="s", version=1, type="A", state={}))
            await store.save_snapshot(Snapshot(stream_id="s", version=5, type="A", state={"n": 5}))
            loaded = await store.load_snapshot("s")
            assert loaded is not None
            assert (loaded.version, loaded.state) == (5, {"n": 5})


class TestWaitForNew:
    async def test_polls_on_the_clock(
        self, postgres_dsn: str, pg_schema: str, clock: FakeClock
    ) -> None:
        """wait_for_new polls every poll_interval and returns once an event is visible."""
        async with PostgresEventStore(
            dsn=postgres_dsn, schema=pg_schema, clock=clock, poll_interval=1.0
        ) as store:
            done = anyio.Event()

            async def waiter() -> None:
                await store.wait_for_new(0)
                done.set()

            async with anyio.create_task_group() as group:
                group.start_soon(waiter)
                await clock.wait_sleepers(1)
                await store.append("s", _events("s", 1), 0)
                assert not done.is_set()
                clock.advance(1.0)
            assert done.is_set()


class TestTransactions:
    async def test_projection_and_checkpoint_commit_together(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """Writes and the checkpoint of one transaction commit together, or not at all."""
        table = f'"{pg_schema}".totals'
        async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as store:
            async with store.transaction() as tx:
                await tx.execute(f"CREATE TABLE {table} (n INTEGER)")
                await tx.execute(f"INSERT INTO {table} VALUES (%s)", (1,))
                await tx.save_checkpoint("proj", 7)
                assert await tx.load_checkpoint("proj") == 7
            with pytest.raises(RuntimeError):  # noqa: PT012 - the block is the subject
                async with store.transaction() as tx:
                    await tx.execute(f"INSERT INTO {table} VALUES (2)")
                    await tx.save_checkpoint("proj", 9)
                    raise RuntimeError
            assert await store.load_checkpoint("proj") == 7
            async with store.transaction() as tx:
                assert await tx.execute(f"SELECT n FROM {table}") == [(1,)]
                assert await tx.load_checkpoint("other") == 0

    async def test_sql_errors_are_translated(self, postgres_dsn: str, pg_schema: str) -> None:
        """A bad statement inside a transaction raises EventStoreUnavailableError."""
        async with PostgresEventStore(dsn=postgres_dsn, schema=pg_schema) as store:
            with pytest.raises(EventStoreUnavailableError):
                async with store.transaction() as tx:
                    await tx.execute("SELECT * FROM no_such_table")
