"""Subscriptions sharing a name: one runner at a time, standbys, handover, fencing."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs
import pytest

from meshkit import ConfigurationError, EventStoreUnavailableError
from meshkit.eventsourcing import (
    Event,
    LeaseRecord,
    LeaseStore,
    MemoryCheckpointStore,
    MemoryEventStore,
    MemoryLeaseStore,
    PostgresEventStore,
    SQLiteEventStore,
    SQLiteTransaction,
    Subscription,
)
from meshkit.eventsourcing._sql_lease import SQLLeaseStore
from meshkit.eventsourcing._subscription import _position
from meshkit.testing._eventstore_conformance import make_events

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from meshkit.testing import FakeClock

pytestmark = pytest.mark.anyio

DURATION = 10.0
INTERVAL = 2.0


def _fill(store: MemoryEventStore, count: int) -> None:
    start = store.stream_version_nowait("s")
    store.append_nowait("s", make_events("s", start + 1, count), start)


@attrs.define
class _Replica:
    """One replica's subscription and what its handler saw."""

    subscription: Subscription[Any]
    seen: list[int] = attrs.field(factory=list)


def _replica(
    store: MemoryEventStore,
    checkpoints: Any,
    leases: LeaseStore,
    clock: FakeClock,
) -> _Replica:
    replica: _Replica

    async def handler(event: Event, _tx: object) -> None:
        replica.seen.append(_position(event))

    subscription: Subscription[Any] = Subscription(
        name="p",
        store=store,
        handler=handler,
        checkpoints=checkpoints,
        leases=leases,
        clock=clock,
        lease_duration=DURATION,
        renew_interval=INTERVAL,
    )
    replica = _Replica(subscription)
    return replica


@attrs.define
class _Freezable:
    """A lease store that hangs forever once frozen, like a process that stopped."""

    inner: MemoryLeaseStore
    frozen: bool = False
    renew_errors: int = 0
    acquire_errors: int = 0
    locking_transactions: bool = False

    async def _gate(self) -> None:
        if self.frozen:
            await anyio.sleep_forever()

    async def read_lease(self, name: str) -> LeaseRecord | None:
        await self._gate()
        return await self.inner.read_lease(name)

    async def acquire_lease(
        self, name: str, seen: LeaseRecord | None, owner: str, duration: float
    ) -> LeaseRecord | None:
        await self._gate()
        if self.acquire_errors:
            self.acquire_errors -= 1
            raise EventStoreUnavailableError("sqlite", "acquire_lease", "database is locked")
        return await self.inner.acquire_lease(name, seen, owner, duration)

    async def renew_lease(self, name: str, owner: str, token: int) -> bool:
        await self._gate()
        if self.renew_errors:
            self.renew_errors -= 1
            raise EventStoreUnavailableError("memory", "renew_lease", "connection reset")
        return await self.inner.renew_lease(name, owner, token)

    async def release_lease(self, name: str, owner: str, token: int) -> None:
        await self._gate()
        await self.inner.release_lease(name, owner, token)

    async def fence(self, tx: object, name: str, owner: str, token: int) -> None:
        await self._gate()
        await self.inner.fence(tx, name, owner, token)


@attrs.define
class _Tx:
    """A fake database transaction: writes become visible on commit only."""

    writes: list[int] = attrs.field(factory=list)
    checkpoint: int | None = None

    async def save_checkpoint(self, name: str, position: int) -> None:
        self.checkpoint = position


@attrs.define
class _TransactionalStore:
    """A TransactionalCheckpointStore over a fake projection table."""

    table: list[int] = attrs.field(factory=list)
    position: int = 0
    rollbacks: int = 0

    async def load_checkpoint(self, name: str) -> int:
        return self.position

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Never called: the subscription saves through transactions."""  # pragma: no cover

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        tx = _Tx()
        try:
            yield tx
        except BaseException:
            self.rollbacks += 1
            raise
        self.table.extend(tx.writes)
        if tx.checkpoint is not None:
            self.position = tx.checkpoint


class TestOneRunner:
    async def test_standby_takes_over_when_the_runner_exits(self, clock: FakeClock) -> None:
        """A second replica stands by, then takes over at its next look once the first exits."""
        store, checkpoints, leases = MemoryEventStore(), MemoryCheckpointStore(), MemoryLeaseStore()
        a = _replica(store, checkpoints, leases, clock)
        b = _replica(store, checkpoints, leases, clock)
        _fill(store, 3)
        stop_a = anyio.Event()
        async with anyio.create_task_group() as group:
            await group.start(_serve, a.subscription, stop_a)
            await group.start(_serve, b.subscription, stop_b := anyio.Event())
            await a.subscription.wait_for_position(3)
            await clock.advance_stepwise(5 * DURATION)  # renewals keep the standby waiting
            assert (a.subscription.active, b.subscription.active) == (True, False)
            stop_a.set()
            await anyio.wait_all_tasks_blocked()
            record = leases.read_nowait("p")
            assert record is not None
            assert (record.holder, record.token) == ("", 1)  # released on exit
            await clock.advance_stepwise(INTERVAL)
            assert b.subscription.active
            _fill(store, 2)
            await b.subscription.wait_for_position(5)
            stop_b.set()
        assert (a.seen, b.seen) == ([1, 2, 3], [4, 5])
        assert await checkpoints.load_checkpoint("p") == 5

    async def test_a_failing_body_releases_the_lease(self, clock: FakeClock) -> None:
        """An error in the `async with` body comes out as is, and the lease is released."""
        leases = MemoryLeaseStore()
        a = _replica(MemoryEventStore(), MemoryCheckpointStore(), leases, clock)

        async def fail() -> None:
            async with a.subscription:
                raise LookupError("no such order")

        with pytest.raises(LookupError, match="no such order"):
            await fail()
        record = leases.read_nowait("p")
        assert record is not None
        assert (record.holder, a.subscription.active) == ("", False)

    async def test_a_stopped_runner_is_replaced_after_one_lease(self, clock: FakeClock) -> None:
        """A runner that stops renewing stops itself at its deadline; the standby then runs."""
        store, checkpoints, leases = MemoryEventStore(), MemoryCheckpointStore(), MemoryLeaseStore()
        frozen = _Freezable(leases)
        a = _replica(store, checkpoints, frozen, clock)
        b = _replica(store, checkpoints, leases, clock)
        _fill(store, 3)
        async with a.subscription, b.subscription:
            await a.subscription.wait_for_position(3)
            await clock.advance_stepwise(INTERVAL / 2)
            frozen.frozen = True  # from now on, a's renewals never return
            start = clock.now()
            while not b.subscription.active:
                await clock.advance_stepwise(0.5)
            assert not a.subscription.active
            assert DURATION - INTERVAL < clock.now() - start <= DURATION + INTERVAL
            _fill(store, 2)
            await b.subscription.wait_for_position(5)
            record = leases.read_nowait("p")
            assert record is not None
            assert record.token == 2
        assert (a.seen, b.seen) == ([1, 2, 3], [4, 5])

    async def test_a_runner_that_lost_its_lease_cannot_commit(self, clock: FakeClock) -> None:
        """A takeover during a batch makes its fenced checkpoint fail: the batch rolls back."""
        store, leases, projection = MemoryEventStore(), MemoryLeaseStore(), _TransactionalStore()
        proceed = anyio.Event()

        async def handler(event: Event, tx: _Tx) -> None:
            await proceed.wait()
            tx.writes.append(_position(event))

        sub = Subscription(
            name="p",
            store=store,
            handler=handler,
            checkpoints=projection,
            leases=leases,
            clock=clock,
            lease_duration=DURATION,
            renew_interval=INTERVAL,
        )
        _fill(store, 2)
        async with sub:
            await anyio.wait_all_tasks_blocked()
            leases.acquire_nowait("p", leases.read_nowait("p"), "thief", DURATION)
            proceed.set()
            await anyio.wait_all_tasks_blocked()
            assert not sub.active  # standing by behind the thief
        assert (projection.table, projection.position, projection.rollbacks) == ([], 0, 1)
        record = leases.read_nowait("p")
        assert record is not None
        assert (record.holder, record.token) == ("thief", 2)  # not released by the loser

    async def test_a_takeover_is_noticed_at_the_next_renewal(self, clock: FakeClock) -> None:
        """A runner whose lease was taken while it idled stands by at its next renewal."""
        store, checkpoints, leases = MemoryEventStore(), MemoryCheckpointStore(), MemoryLeaseStore()
        a = _replica(store, checkpoints, leases, clock)
        async with a.subscription:
            leases.acquire_nowait("p", leases.read_nowait("p"), "thief", DURATION)
            states = [a.subscription.active]
            await clock.advance_stepwise(INTERVAL)
            states.append(a.subscription.active)
            assert states == [True, False]
            _fill(store, 1)
            await anyio.wait_all_tasks_blocked()
        assert a.seen == []

    async def test_a_lost_takeover_race_means_standing_by(self, clock: FakeClock) -> None:
        """When another replica wins the compare-and-swap, this one stands by behind it."""

        class Raced(_Freezable):
            async def acquire_lease(
                self, name: str, seen: LeaseRecord | None, owner: str, duration: float
            ) -> LeaseRecord | None:
                self.inner.acquire_nowait(name, seen, "rival", duration)  # gets there first
                return await self.inner.acquire_lease(name, seen, owner, duration)

        leases = MemoryLeaseStore()
        a = _replica(MemoryEventStore(), MemoryCheckpointStore(), Raced(leases), clock)
        async with a.subscription:
            assert not a.subscription.active
        record = leases.read_nowait("p")
        assert record is not None
        assert (record.holder, record.token) == ("rival", 1)

    async def test_renewal_errors_are_retried_until_the_deadline(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A renewal that fails is logged and tried again; the runner keeps running."""
        store, checkpoints = MemoryEventStore(), MemoryCheckpointStore()
        leases = _Freezable(MemoryLeaseStore(), renew_errors=2)
        a = _replica(store, checkpoints, leases, clock)
        with caplog.at_level(logging.WARNING, logger="meshkit.eventsourcing"):
            async with a.subscription:
                await clock.advance_stepwise(3 * INTERVAL + 0.1)
                assert a.subscription.active
                _fill(store, 1)
                await a.subscription.wait_for_position(1)
        assert caplog.text.count("lease renewal failed") == 2
        assert a.seen == [1]

    async def test_a_failed_takeover_is_tried_again(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A takeover write that fails (SQLite's lock held past busy_timeout) is retried."""
        store, checkpoints, inner = MemoryEventStore(), MemoryCheckpointStore(), MemoryLeaseStore()
        inner.acquire_nowait("p", None, "replica-that-died", DURATION)
        b = _replica(store, checkpoints, _Freezable(inner, acquire_errors=2), clock)
        with caplog.at_level(logging.WARNING, logger="meshkit.eventsourcing"):
            async with b.subscription:
                await clock.advance_stepwise(DURATION)
                standing_by = not b.subscription.active  # the takeover failed
                await clock.advance_stepwise(2 * INTERVAL)
                assert (standing_by, b.subscription.active) == (True, True)
                _fill(store, 1)
                await b.subscription.wait_for_position(1)
        assert caplog.text.count("taking the lease over failed") == 2
        assert b.seen == [1]

    async def test_release_with_a_hung_store_gives_up_after_an_interval(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Exiting while the store hangs waits one renew interval; the lease then runs out."""
        store, leases = MemoryEventStore(), _Freezable(MemoryLeaseStore())
        a = _replica(store, MemoryCheckpointStore(), leases, clock)
        with caplog.at_level(logging.WARNING, logger="meshkit.eventsourcing"):
            async with anyio.create_task_group() as group:
                stop = anyio.Event()
                await group.start(_serve, a.subscription, stop)
                leases.frozen = True
                stop.set()
                await anyio.wait_all_tasks_blocked()
                clock.advance(INTERVAL)
        assert "releasing its lease timed out" in caplog.text
        record = leases.inner.read_nowait("p")
        assert record is not None
        assert record.holder != ""

    async def test_failed_release_is_logged(
        self, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A release the store refuses is logged; the lease then runs out by itself."""

        class Refusing(_Freezable):
            async def release_lease(self, name: str, owner: str, token: int) -> None:
                raise EventStoreUnavailableError("memory", "release_lease", "gone")

        a = _replica(
            MemoryEventStore(), MemoryCheckpointStore(), Refusing(MemoryLeaseStore()), clock
        )
        with caplog.at_level(logging.WARNING, logger="meshkit.eventsourcing"):
            async with a.subscription:
                assert a.subscription.active
        assert "could not release its lease" in caplog.text


class TestConfiguration:
    def test_lease_knobs_are_checked(self) -> None:
        """Bad lease knobs raise ConfigurationError naming the field."""
        store = MemoryEventStore()
        bad: list[tuple[str, dict[str, Any]]] = [
            ("renew_interval", {"lease_duration": 1.0, "renew_interval": 1.0}),
            ("lease_duration", {"lease_duration": float("nan")}),
            ("lease_duration", {"lease_duration": float("inf")}),
            ("renew_interval", {"renew_interval": -1.0}),
            ("renew_interval", {"renew_interval": 10**400}),
            ("leases", {"leases": object()}),
        ]
        for field, knobs in bad:
            with pytest.raises(ConfigurationError) as info:
                Subscription(
                    name="p",
                    store=store,
                    handler=_noop,
                    checkpoints=MemoryCheckpointStore(),
                    **knobs,
                )
            assert info.value.field == field

    def test_names_and_callables_are_checked(self) -> None:
        """A name SQL could not store, or a handler that is not callable, is refused at once."""
        store = MemoryEventStore()
        bad: list[tuple[str, dict[str, Any]]] = [
            ("name", {"name": "bad-\ud800"}),
            ("name", {"name": "nul\x00"}),
            ("name", {"name": 7}),
            ("name", {"name": "é" * 501}),
            ("handler", {"handler": "not callable"}),
            ("on_dead_letter", {"on_dead_letter": 3}),
        ]
        for field, knobs in bad:
            arguments: dict[str, Any] = {
                "name": "p",
                "store": store,
                "handler": _noop,
                "checkpoints": MemoryCheckpointStore(),
            }
            with pytest.raises(ConfigurationError) as info:
                Subscription(**(arguments | knobs))
            assert info.value.field == field

    async def test_sql_stores_lease_by_default(self, db: str) -> None:
        """A SQL checkpoint store brings its leases; memory or `leases=None` run without."""
        async with SQLiteEventStore(path=db) as store:
            leased = Subscription(name="p", store=store, handler=_noop, checkpoints=store)
            assert isinstance(leased.leases, SQLLeaseStore)
            bare = Subscription(
                name="p", store=store, handler=_noop, checkpoints=store, leases=None
            )
            assert bare.leases is None
        memory = Subscription(
            name="p", store=MemoryEventStore(), handler=_noop, checkpoints=MemoryCheckpointStore()
        )
        assert memory.leases is None


class TestLeasesMatchCheckpoints:
    async def test_sql_leases_need_their_stores_checkpoints(self, tmp_path: Path) -> None:
        """SQL leases fence inside the checkpoints' transactions: other checkpoints are refused."""
        one = SQLiteEventStore(path=str(tmp_path / "one.db"))
        two = SQLiteEventStore(path=str(tmp_path / "two.db"))
        async with one, two:
            for checkpoints in (two, MemoryCheckpointStore()):
                with pytest.raises(ConfigurationError) as info:
                    Subscription(
                        name="p",
                        store=one,
                        handler=_noop,
                        checkpoints=checkpoints,
                        leases=one.leases(),
                    )
                assert info.value.field == "leases"


class TestSameProcessSQLite:
    async def test_two_subscriptions_of_one_name_apply_each_event_once(
        self, tmp_path: Path
    ) -> None:
        """Two stores on one file, one subscription name: every effect is written once."""
        path = str(tmp_path / "shared.db")
        async with SQLiteEventStore(path=path) as one, SQLiteEventStore(path=path) as two:
            async with one.transaction() as tx:
                await tx.execute("CREATE TABLE effects (position INTEGER, replica TEXT)")

            def replica(store: SQLiteEventStore, tag: str) -> Subscription[SQLiteTransaction]:
                async def project(event: Event, tx: SQLiteTransaction) -> None:
                    await tx.execute("INSERT INTO effects VALUES (?, ?)", (event.position, tag))

                return Subscription(name="p", store=store, handler=project, checkpoints=store)

            async with replica(one, "one") as first, replica(two, "two") as second:
                for n in range(1, 21):  # one at a time: a second runner would apply each too
                    await one.append(f"s-{n}", make_events(f"s-{n}", 1, 1), 0)
                    while await one.load_checkpoint("p") < n:  # noqa: ASYNC110 - another store's progress
                        await anyio.sleep(0.005)
                running = [first.active, second.active]
            async with one.transaction() as tx:
                rows = await tx.execute("SELECT position, count(*) FROM effects GROUP BY position")
        assert rows == [(n, 1) for n in range(1, 21)]
        assert running.count(True) == 1


async def _serve(
    subscription: Subscription[Any],
    stop: anyio.Event,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run `subscription` in a task of its own until `stop` is set."""
    async with subscription:
        task_status.started()
        await stop.wait()


async def _noop(_event: Event, _tx: object) -> None:
    """Handle nothing."""


class TestSQLiteLongBatch:
    async def test_a_batch_longer_than_the_lease_commits_once(
        self, db: str, clock: FakeClock
    ) -> None:
        """SQLite: a batch outlasting the lease is not cancelled (its write lock holds it)."""
        calls: list[int] = []
        gate = anyio.Event()

        async def slow(event: Event, _tx: object) -> None:
            calls.append(_position(event))
            await gate.wait()

        async with SQLiteEventStore(path=db, busy_timeout=0.05) as store:
            await store.append("s", make_events("s", 1, 2), 0)
            subscription = Subscription(
                name="p",
                store=store,
                handler=slow,
                checkpoints=store,
                clock=clock,
                lease_duration=DURATION,
                renew_interval=INTERVAL,
            )
            async with subscription:
                while not calls:  # noqa: ASYNC110 - the batch starts in SQLite's threads
                    await anyio.sleep(0.001)
                await clock.advance_stepwise(3 * DURATION)  # renewals are locked out meanwhile
                gate.set()
                await subscription.wait_for_position(2)
                assert subscription.active
        assert calls == [1, 2]


class TestPostgresIsolation:
    async def test_a_renewal_during_a_batch_under_repeatable_read(
        self, postgres_dsn: str, pg_schema: str, clock: FakeClock
    ) -> None:
        """A server defaulting to REPEATABLE READ: the fence still sees the runner's renewal."""
        import psycopg  # noqa: PLC0415 - optional dependency

        repeatable = psycopg.conninfo.make_conninfo(
            postgres_dsn, options="-c default_transaction_isolation=repeatable\\ read"
        )
        calls: list[int] = []
        gate = anyio.Event()

        async def slow(event: Event, tx: Any) -> None:
            await tx.execute("SELECT 1")  # the snapshot of the batch is taken here
            calls.append(_position(event))
            await gate.wait()

        async with await PostgresEventStore.open(repeatable, schema=pg_schema) as store:
            await store.append("s", make_events("s", 1, 1), 0)
            subscription = Subscription(
                name="p",
                store=store,
                handler=slow,
                checkpoints=store,
                clock=clock,
                lease_duration=DURATION,
                renew_interval=INTERVAL,
            )
            async with subscription:
                while not calls:  # noqa: ASYNC110 - the batch starts in PostgreSQL's threads
                    await anyio.sleep(0.001)
                await clock.advance_stepwise(INTERVAL)  # a renewal commits mid-batch
                gate.set()
                await subscription.wait_for_position(1)
        assert calls == [1]

    async def test_lease_writes_under_repeatable_read(
        self, postgres_dsn: str, pg_schema: str
    ) -> None:
        """A renewal that waited for a fenced commit re-checks the row, as a takeover does."""
        import psycopg  # noqa: PLC0415 - optional dependency

        repeatable = psycopg.conninfo.make_conninfo(
            postgres_dsn, options="-c default_transaction_isolation=repeatable\\ read"
        )
        async with await PostgresEventStore.open(repeatable, schema=pg_schema) as store:
            leases = store.leases()
            held = await leases.acquire_lease("p", None, "me", DURATION)
            assert held is not None
            renewed: list[bool] = []

            async def renew() -> None:
                renewed.append(await leases.renew_lease("p", "me", held.token))

            async with anyio.create_task_group() as group, store.transaction() as tx:
                await leases.fence(tx, "p", "me", held.token)  # locks the row
                group.start_soon(renew)
                await _lock_waiter(postgres_dsn, pg_schema)  # the renewal waits for it
            stolen = await leases.acquire_lease("p", held, "thief", DURATION)
        assert renewed == [True]
        assert stolen is None  # the beat moved twice since `held`


async def _lock_waiter(dsn: str, schema: str) -> None:
    """Return once a statement on `schema` waits for a lock (polling pg_stat_activity)."""
    import psycopg  # noqa: PLC0415 - optional dependency

    def waiting() -> bool:
        with psycopg.connect(dsn, autocommit=True) as conn:
            query = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND strpos(query, %s) > 0"
            )
            row = conn.execute(query, (schema,)).fetchone()
        return row is not None and row[0] > 0

    while not await anyio.to_thread.run_sync(waiting):  # noqa: ASYNC110 - polls the server
        await anyio.sleep(0.01)
