"""The idempotent inbox: memory, SQLite and PostgreSQL claims commit with the handler's writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

from meshkit import ConfigurationError
from meshkit.eventsourcing import (
    Event,
    PostgresEventStore,
    PostgresTransaction,
    SQLiteEventStore,
    SQLiteTransaction,
)
from meshkit.messaging import (
    Dispatcher,
    EventLogConsumer,
    MemoryInbox,
    PostgresInbox,
    SQLiteInbox,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

BAD_IDS = ["", "nul\0", "\ud800", 7]


class _BoomError(Exception):
    pass


class TestMemoryInbox:
    async def test_second_claim_is_refused(self) -> None:
        """A committed claim makes the next claim of the same message return False."""
        inbox = MemoryInbox()
        async with inbox.transaction() as tx:
            assert await inbox.claim(tx, "c", "m1")
            assert not await inbox.claim(tx, "c", "m1")
            tx.data["x"] = 1
        async with inbox.transaction() as tx:
            assert not await inbox.claim(tx, "c", "m1")
            assert await inbox.claim(tx, "other", "m1")
        assert inbox.data == {"x": 1}
        assert inbox.processed("c") == {"m1"}

    async def test_rollback_drops_claim_and_writes(self) -> None:
        """A failing block commits neither its claim nor its data."""
        inbox = MemoryInbox(data={"x": 0})

        async def fail() -> None:
            async with inbox.transaction() as tx:
                await inbox.claim(tx, "c", "m1")
                tx.data["x"] = 1
                raise _BoomError

        with pytest.raises(_BoomError):
            await fail()
        assert inbox.data == {"x": 0}
        assert inbox.processed("c") == set()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteEventStore]:
    store = await SQLiteEventStore.open(tmp_path / "inbox.db")
    async with store.transaction() as tx:
        await tx.execute("CREATE TABLE effects (key TEXT, version INTEGER)")
    yield store
    await store.aclose()


class TestSQLiteInbox:
    async def test_claim_commits_with_the_handler_writes(
        self, sqlite_store: SQLiteEventStore
    ) -> None:
        """The inbox row and the handler's row commit together; a re-claim is refused."""
        inbox = SQLiteInbox(store=sqlite_store)
        async with inbox.transaction() as tx:
            assert await inbox.claim(tx, "c", "m1")
            await tx.execute("INSERT INTO effects VALUES ('k', 1)")
        async with inbox.transaction() as tx:
            assert not await inbox.claim(tx, "c", "m1")
        async with sqlite_store.transaction() as tx:
            assert await tx.execute("SELECT count(*) FROM effects") == [(1,)]

    async def test_rollback_undoes_both(self, sqlite_store: SQLiteEventStore) -> None:
        """A handler failure rolls back the claim with the writes: the message is new again."""
        inbox = SQLiteInbox(store=sqlite_store)

        async def fail() -> None:
            async with inbox.transaction() as tx:
                await inbox.claim(tx, "c", "m1")
                await tx.execute("INSERT INTO effects VALUES ('k', 1)")
                raise _BoomError

        with pytest.raises(_BoomError):
            await fail()
        async with inbox.transaction() as tx:
            assert await inbox.claim(tx, "c", "m1")
            assert await tx.execute("SELECT count(*) FROM effects") == [(0,)]

    @pytest.mark.parametrize("bad", BAD_IDS)
    async def test_bad_message_id_is_refused(
        self, sqlite_store: SQLiteEventStore, bad: Any
    ) -> None:
        """An id a database cannot store is a ConfigurationError naming `message_id`."""
        inbox = SQLiteInbox(store=sqlite_store)
        async with inbox.transaction() as tx:
            with pytest.raises(ConfigurationError) as caught:
                await inbox.claim(tx, "c", bad)
        assert caught.value.field == "message_id"

    async def test_bad_table_name_is_refused(self, sqlite_store: SQLiteEventStore) -> None:
        """A table name that is not a plain identifier is refused at construction."""
        with pytest.raises(ConfigurationError, match="table"):
            SQLiteInbox(store=sqlite_store, table="x; DROP TABLE y")

    async def test_event_log_bus_with_sqlite_inbox(self, sqlite_store: SQLiteEventStore) -> None:
        """The embedded bus: the store's own log, consumed into the same file, exactly once."""
        for version in (1, 2, 3):
            event = Event(stream_id="order-1", version=version, type="OrderPlaced")
            await sqlite_store.append("order-1", [event], version - 1)

        async def handler(event: Event, tx: SQLiteTransaction) -> None:
            await tx.execute("INSERT INTO effects VALUES (?, ?)", (event.stream_id, event.version))

        consumer = EventLogConsumer(name="shipping", store=sqlite_store, checkpoints=sqlite_store)
        inbox = SQLiteInbox(store=sqlite_store)
        async with Dispatcher(consumer=consumer, handler=handler, inbox=inbox) as dispatcher:
            with anyio.fail_after(30):
                await dispatcher.wait_for(lambda s: s.handled == 3)
        async with sqlite_store.transaction() as tx:
            rows = await tx.execute("SELECT version FROM effects ORDER BY rowid")
        assert rows == [(1,), (2,), (3,)]
        assert await sqlite_store.load_checkpoint("shipping") == 3


@pytest.fixture
async def pg_store(postgres_dsn: str, pg_schema: str) -> AsyncIterator[PostgresEventStore]:
    store = await PostgresEventStore.open(postgres_dsn, schema=pg_schema)
    async with store.transaction() as tx:
        await tx.execute(f'CREATE TABLE "{pg_schema}".effects (key TEXT, version INTEGER)')
    yield store
    await store.aclose()


class TestPostgresInbox:
    async def test_claim_commits_with_the_handler_writes(
        self, pg_store: PostgresEventStore
    ) -> None:
        """The inbox row and the handler's row commit together; a re-claim is refused."""
        inbox = PostgresInbox(store=pg_store)
        effects = f'"{pg_store.schema}".effects'
        async with inbox.transaction() as tx:
            assert await inbox.claim(tx, "c", "m1")
            await tx.execute(f"INSERT INTO {effects} VALUES ('k', 1)")  # noqa: S608

        async def fail() -> None:
            async with inbox.transaction() as tx:
                assert await inbox.claim(tx, "c", "m2")
                raise _BoomError

        with pytest.raises(_BoomError):
            await fail()
        async with inbox.transaction() as tx:
            assert not await inbox.claim(tx, "c", "m1")
            assert await inbox.claim(tx, "c", "m2")
            assert await tx.execute(f"SELECT count(*) FROM {effects}") == [(1,)]  # noqa: S608

    async def test_concurrent_claims_of_one_message_admit_one(
        self, pg_store: PostgresEventStore
    ) -> None:
        """Two transactions claiming one message at once: exactly one wins."""
        inbox = PostgresInbox(store=pg_store)
        async with inbox.transaction() as tx:  # create the table first
            await inbox.claim(tx, "setup", "x")
        results: list[bool] = []

        async def claim(tx_ready: anyio.Event) -> None:
            async with inbox.transaction() as tx:
                results.append(await inbox.claim(tx, "c", "same"))
                tx_ready.set()
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            first, second = anyio.Event(), anyio.Event()
            tg.start_soon(claim, first)
            await first.wait()
            tg.start_soon(claim, second)
        assert sorted(results) == [False, True]

    @pytest.mark.parametrize("bad", BAD_IDS)
    async def test_bad_consumer_is_refused(self, pg_store: PostgresEventStore, bad: Any) -> None:
        """A consumer name a database cannot store is a ConfigurationError naming it."""
        inbox = PostgresInbox(store=pg_store)
        async with inbox.transaction() as tx:
            with pytest.raises(ConfigurationError) as caught:
                await inbox.claim(tx, bad, "m")
        assert caught.value.field == "consumer"

    async def test_handler_sees_its_transaction(self, pg_store: PostgresEventStore) -> None:
        """The handler gets the PostgresTransaction the claim was written in."""
        inbox = PostgresInbox(store=pg_store)
        async with inbox.transaction() as tx:
            assert isinstance(tx, PostgresTransaction)
            assert await inbox.claim(tx, "c", "m")


class TestPostgresEndToEnd:
    async def test_event_log_bus_with_postgres_inbox(self, pg_store: PostgresEventStore) -> None:
        """The store's log consumed into PostgreSQL: effects once, checkpoint saved."""
        effects = f'"{pg_store.schema}".effects'
        for version in (1, 2, 3):
            event = Event(stream_id="order-1", version=version, type="OrderPlaced")
            await pg_store.append("order-1", [event], version - 1)

        async def handler(event: Event, tx: PostgresTransaction) -> None:
            await tx.execute(
                f"INSERT INTO {effects} VALUES (%s, %s)",  # noqa: S608 - a test's own table
                (event.stream_id, event.version),
            )

        consumer = EventLogConsumer(name="billing", store=pg_store, checkpoints=pg_store)
        inbox = PostgresInbox(store=pg_store)
        async with Dispatcher(
            consumer=consumer, handler=handler, inbox=inbox, commit_batch=2
        ) as dispatcher:
            with anyio.fail_after(30):
                await dispatcher.wait_for(lambda s: s.handled == 3)
        async with pg_store.transaction() as tx:
            rows = await tx.execute(f"SELECT version FROM {effects} ORDER BY version")  # noqa: S608
        assert rows == [(1,), (2,), (3,)]
        assert await pg_store.load_checkpoint("billing") == 3
