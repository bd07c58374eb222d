"""Tests for the PostgreSQL event store: opening and closing its pool, transactions, arguments."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.to_thread
import attrs
import psycopg
import psycopg_pool
import pytest

from meshkit import ConfigurationError, EventStoreUnavailableError
from meshkit.eventsourcing import Event, PostgresEventStore, _postgres_sql

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

pytestmark = pytest.mark.anyio


@attrs.define
class SlowOpen:
    """Counts the pools a store creates; its schema set-up waits until `gate` is set."""

    pools: list[Any] = attrs.field(factory=list)
    entered: threading.Event = attrs.field(factory=threading.Event)
    gate: threading.Event = attrs.field(factory=threading.Event)


@pytest.fixture
def slow_open(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowOpen]:
    """Patch pool creation to be counted and the schema set-up to wait for a gate."""
    probe = SlowOpen()
    real_pool = psycopg_pool.ConnectionPool
    real_init: Callable[..., None] = _postgres_sql.init_schema

    def counting_pool(*args: Any, **kwargs: Any) -> Any:
        pool = real_pool(*args, **kwargs)
        probe.pools.append(pool)
        return pool

    def gated_init(*args: Any) -> None:
        probe.entered.set()
        probe.gate.wait(5)
        real_init(*args)

    monkeypatch.setattr(psycopg_pool, "ConnectionPool", counting_pool)
    monkeypatch.setattr(_postgres_sql, "init_schema", gated_init)
    yield probe
    for pool in probe.pools:
        pool.close()


class TestOpen:
    async def test_concurrent_first_calls_open_one_pool(
        self, postgres_dsn: str, pg_schema: str, slow_open: SlowOpen
    ) -> None:
        """Calls racing on a store that is not open yet create one pool, not one each."""
        store = PostgresEventStore(dsn=postgres_dsn, schema=pg_schema, max_connections=4)
        try:
            async with anyio.create_task_group() as group:
                for _ in range(3):
                    group.start_soon(store.last_position)
                await anyio.to_thread.run_sync(slow_open.entered.wait, 5)
                for _ in range(20):  # let the other callers get as far as they can
                    await anyio.to_thread.run_sync(lambda: None)
                slow_open.gate.set()
        finally:
            await store.aclose()
        assert len(slow_open.pools) == 1

    async def test_close_during_open_leaves_no_pool(
        self, postgres_dsn: str, pg_schema: str, slow_open: SlowOpen
    ) -> None:
        """`aclose()` while the first call is still opening closes the pool being opened."""
        store = PostgresEventStore(dsn=postgres_dsn, schema=pg_schema, max_connections=4)
        failures: list[EventStoreUnavailableError] = []

        async def first_call() -> None:
            try:
                await store.last_position()
            except EventStoreUnavailableError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(first_call)
            await anyio.to_thread.run_sync(slow_open.entered.wait, 5)
            await store.aclose()
            slow_open.gate.set()
        assert [pool.closed for pool in slow_open.pools] == [True]
        assert [exc.reason for exc in failures] == ["the store is closed"]


class TestTransaction:
    async def test_a_failed_rollback_does_not_mask_the_body_error(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """When the connection dies mid-transaction, the block's own error still propagates."""

        async def die_then_fail(store: PostgresEventStore) -> None:
            async with store.transaction() as tx:
                pid = (await tx.execute("SELECT pg_backend_pid()"))[0][0]
                with psycopg.connect(postgres_dsn, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                raise LookupError("the body's own error")

        async with await PostgresEventStore.open(postgres_dsn, schema=pg_schema) as store:
            with pytest.raises(LookupError, match="the body's own error"):
                await die_then_fail(store)
            assert await store.last_position() == 0  # the pool replaced the dead connection


class TestArguments:
    async def test_bad_read_arguments_are_configuration_errors(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """A stream id that is not a str, or a from_version that is not an int, is refused."""
        async with await PostgresEventStore.open(postgres_dsn, schema=pg_schema) as store:
            bad_calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("stream_id", lambda: store.read(cast("str", 7))),
                ("from_version", lambda: store.read("s", cast("int", "2"))),
                ("stream_id", lambda: store.stream_version(cast("str", None))),
                ("stream_id", lambda: store.load_snapshot(cast("str", 7))),
            ]
            for field, call in bad_calls:
                with pytest.raises(ConfigurationError) as info:
                    await call()
                assert info.value.field == field

    async def test_numbers_beyond_64_bits_are_configuration_errors(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """Versions, positions and limits a BIGINT column cannot hold name their field."""
        big = 2**63
        events = [Event(stream_id="s", version=big, type="T")]
        async with await PostgresEventStore.open(postgres_dsn, schema=pg_schema) as store:
            bad_calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("expected_version", lambda: store.append("s", events, big - 1)),
                ("from_version", lambda: store.read("s", big)),
                ("limit", lambda: store.read_all(0, limit=big)),
                ("after_position", lambda: store.wait_for_new(big)),
                ("position", lambda: store.save_checkpoint("p", big)),
            ]
            for field, call in bad_calls:
                with pytest.raises(ConfigurationError) as info:
                    await call()
                assert info.value.field == field
            assert await store.read_all() == []

    async def test_a_transaction_is_unusable_after_its_block(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """A transaction kept past its block refuses work: its connection went back to the pool."""
        async with await PostgresEventStore.open(postgres_dsn, schema=pg_schema) as store:
            async with store.transaction() as tx:
                await tx.save_checkpoint("p", 1)
            with pytest.raises(EventStoreUnavailableError, match="ended"):
                await tx.save_checkpoint("p", 2)
            assert await store.load_checkpoint("p") == 1
