"""Every lease store (memory, SQLite, PostgreSQL) keeps the same lease contract."""

from __future__ import annotations

import contextlib
import math
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest

from meshkit import ConfigurationError, LeaseLostError
from meshkit.eventsourcing import (
    CheckpointStore,
    LeaseRecord,
    LeaseStore,
    MemoryCheckpointStore,
    MemoryLeaseStore,
    PostgresEventStore,
    SQLiteEventStore,
)
from meshkit.eventsourcing._lease import LeaseCore, Standby, TakeOver

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


class LeaseStoreContract:
    """The contract; each backend implements `backend()`."""

    def backend(
        self,
    ) -> contextlib.AbstractAsyncContextManager[tuple[LeaseStore, CheckpointStore]]:
        """Yield a fresh lease store and the checkpoint store it lives with."""
        raise NotImplementedError

    def transaction(
        self, checkpoints: CheckpointStore
    ) -> contextlib.AbstractAsyncContextManager[Any]:
        """Return the checkpoint store's unit of work."""
        return checkpoints.transaction()  # type: ignore[attr-defined,no-any-return]

    async def test_acquire_renew_take_over_release(self) -> None:
        """Compare-and-swap takeovers, owner-and-token renewals, and release."""
        async with self.backend() as (leases, _):
            assert await leases.read_lease("p") is None
            first = await leases.acquire_lease("p", None, "a", 5.0)
            assert first == LeaseRecord(holder="a", token=1, beat=0, duration=5.0)
            assert await leases.acquire_lease("p", None, "b", 5.0) is None
            assert await leases.read_lease("p") == first
            assert await leases.renew_lease("p", "a", 1)
            assert not await leases.renew_lease("p", "b", 1)
            assert not await leases.renew_lease("p", "a", 2)
            renewed = await leases.read_lease("p")
            assert renewed == LeaseRecord(holder="a", token=1, beat=1, duration=5.0)
            assert await leases.acquire_lease("p", first, "b", 5.0) is None  # a stale view
            taken = await leases.acquire_lease("p", renewed, "b", 2.5)
            assert taken == LeaseRecord(holder="b", token=2, beat=0, duration=2.5)
            assert not await leases.renew_lease("p", "a", 1)
            await leases.release_lease("p", "a", 1)  # not the holder: nothing happens
            assert await leases.read_lease("p") == taken
            await leases.release_lease("p", "b", 2)
            released = await leases.read_lease("p")
            assert released == LeaseRecord(holder="", token=2, beat=1, duration=2.5)
            again = await leases.acquire_lease("p", released, "a", 5.0)
            assert again == LeaseRecord(holder="a", token=3, beat=0, duration=5.0)

    async def test_names_are_independent(self) -> None:
        """Each subscription name has a lease of its own."""
        async with self.backend() as (leases, _):
            assert await leases.acquire_lease("p", None, "a", 1.0) is not None
            assert await leases.acquire_lease("q", None, "b", 1.0) is not None
            one, two = await leases.read_lease("p"), await leases.read_lease("q")
            assert (one and one.holder, two and two.holder) == ("a", "b")

    async def test_fence_guards_the_checkpoint(self) -> None:
        """A fenced checkpoint commits for the holder; after a takeover it cannot."""
        async with self.backend() as (leases, checkpoints):
            assert await leases.acquire_lease("p", None, "a", 5.0) is not None
            async with self.transaction(checkpoints) as tx:
                await leases.fence(tx, "p", "a", 1)
                await tx.save_checkpoint("p", 5)
            record = await leases.read_lease("p")
            assert record is not None
            assert record.beat == 1
            assert await leases.acquire_lease("p", record, "b", 5.0) is not None

            async def stale_save() -> None:
                async with self.transaction(checkpoints) as tx:
                    await leases.fence(tx, "p", "a", 1)
                    await tx.save_checkpoint("p", 9)  # pragma: no cover - never reached

            with pytest.raises(LeaseLostError) as info:
                await stale_save()
            assert (info.value.subscription, info.value.owner, info.value.token) == ("p", "a", 1)
            assert await checkpoints.load_checkpoint("p") == 5

    async def test_bad_names(self) -> None:
        """A lease name must be a non-empty str."""
        async with self.backend() as (leases, _):
            for name in ("", 3):
                with pytest.raises(ConfigurationError):
                    await leases.read_lease(name)  # type: ignore[arg-type]
                with pytest.raises(ConfigurationError):
                    await leases.acquire_lease(name, None, "a", 1.0)  # type: ignore[arg-type]


class TestMemoryLeaseStore(LeaseStoreContract):
    @contextlib.asynccontextmanager
    async def backend(self) -> AsyncIterator[tuple[LeaseStore, CheckpointStore]]:
        """Yield a memory lease store and checkpoint store."""
        yield MemoryLeaseStore(), MemoryCheckpointStore()

    @contextlib.asynccontextmanager
    async def transaction(self, checkpoints: CheckpointStore) -> AsyncIterator[Any]:
        """Memory has no transactions: the checkpoint store itself saves."""
        yield checkpoints


class TestSQLiteLeaseStore(LeaseStoreContract):
    @pytest.fixture(autouse=True)
    def _path(self, db: str) -> None:
        self.path = db

    @contextlib.asynccontextmanager
    async def backend(self) -> AsyncIterator[tuple[LeaseStore, CheckpointStore]]:
        """Yield the leases of a SQLite store and the store."""
        async with SQLiteEventStore(path=self.path) as store:
            yield store.leases(), store

    async def test_fence_needs_the_stores_transaction(self) -> None:
        """Fencing with anything but a SQL transaction is a configuration error."""
        async with self.backend() as (leases, _):
            with pytest.raises(ConfigurationError, match="leases"):
                await leases.fence(object(), "p", "a", 1)

    async def test_a_damaged_duration_is_waited_out(self) -> None:
        """SQLite keeps text in a REAL column: such a duration reads as NaN, not a crash."""
        async with self.backend() as (leases, _):
            await leases.acquire_lease("p", None, "dead", 1.0)
            with sqlite3.connect(self.path) as conn:
                conn.execute("UPDATE meshkit_leases SET duration = 'garbage'")
            record = await leases.read_lease("p")
            assert record is not None
            assert math.isnan(record.duration)
            core = LeaseCore(owner="standby", duration=2.0, renew_interval=1.0)
            assert core.observe(record, 0.0) == Standby(1.0)
            decision = core.observe(record, 2.0)  # after its own duration
            assert isinstance(decision, TakeOver)
            assert decision.seen is record


class TestPostgresLeaseStore(LeaseStoreContract):
    @pytest.fixture(autouse=True)
    def _target(self, postgres_dsn: str, pg_schema: str) -> None:
        self.dsn, self.schema = postgres_dsn, pg_schema

    @contextlib.asynccontextmanager
    async def backend(self) -> AsyncIterator[tuple[LeaseStore, CheckpointStore]]:
        """Yield the leases of a PostgreSQL store and the store."""
        async with PostgresEventStore(dsn=self.dsn, schema=self.schema) as store:
            yield store.leases(), store
