"""The PostgreSQL event store: parallel writers, a global log no reader can skip through."""

from __future__ import annotations

import contextlib
import re
import threading
from typing import TYPE_CHECKING, Any, Self, TypeVar, final

import anyio
import anyio.to_thread
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import EventStoreUnavailableError
from meshkit._validate import ge, gt, instance_of, require
from meshkit.eventsourcing._checks import check_name, check_stream_id
from meshkit.eventsourcing._event import JSONSerializer, Serializer
from meshkit.eventsourcing._sql_common import (
    Wakeup,
    check_append_args,
    check_checkpoint_args,
    check_position_args,
    check_read_args,
    decode_event,
    decode_snapshot,
    encode_events,
    encode_snapshot,
    transaction_scope,
    translate_errors,
)
from meshkit.eventsourcing._sql_lease import SQLLeaseStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from types import ModuleType, TracebackType

    import psycopg
    import psycopg_pool

    from meshkit.eventsourcing._event import Event, Snapshot
    from meshkit.eventsourcing._postgres_sql import Statements

__all__ = ["PostgresEventStore", "PostgresTransaction"]

_T = TypeVar("_T")
Statement = Any  # a psycopg.sql.Composed; psycopg is imported lazily
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Pinned, not the server's default: under REPEATABLE READ or SERIALIZABLE, the lease fence's
# UPDATE fails with a serialization error whenever the runner's own renewal (or a takeover)
# committed after the batch's snapshot; READ COMMITTED re-checks the row and decides.
_BEGIN = b"BEGIN ISOLATION LEVEL READ COMMITTED"


def _check_schema(_inst: object, _attribute: object, value: object) -> None:
    ok = isinstance(value, str) and _IDENTIFIER.match(value) is not None
    require(ok, "schema", value, "must be a plain SQL identifier")


@final
@attrs.define(eq=False, kw_only=True)
class PostgresTransaction:
    """A transaction on one pooled connection, for a projection's own tables.

    Obtained from `PostgresEventStore.transaction()`; everything done through it, checkpoints
    included, commits or rolls back together.
    """

    _conn: psycopg.Connection[Any]
    _statements: Statements
    _driver_error: type[Exception]
    _ended: bool = attrs.field(init=False, default=False)

    async def execute(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement (`%s` placeholders); return its rows (empty if it has none).

        Raises:
            EventStoreUnavailableError: If PostgreSQL fails (the driver's error is chained).
        """

        def run(conn: psycopg.Connection[Any]) -> list[Any]:
            cursor = conn.execute(query.encode(), params)
            return cursor.fetchall() if cursor.description is not None else []

        return await self.run_sync(run)

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save subscription `name`'s position in this transaction (positions only grow).

        Raises:
            ConfigurationError: If `name` is empty or `position` is negative.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        check_checkpoint_args(name, position)
        statement = self._statements.save_checkpoint
        await self.run_sync(lambda conn: conn.execute(statement, (name, position)))

    async def load_checkpoint(self, name: str) -> int:
        """Return subscription `name`'s position as this transaction sees it (0 if none).

        Raises:
            ConfigurationError: If `name` is empty.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        check_name(name)
        statement = self._statements.load_checkpoint
        rows = await self.run_sync(lambda conn: conn.execute(statement, (name,)).fetchall())
        return int(rows[0][0]) if rows else 0

    async def run_sync(self, function: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Call `function(connection)` in a worker thread, inside this transaction.

        Raises:
            EventStoreUnavailableError: If PostgreSQL fails, or the transaction has ended
                (its connection is back in the pool, maybe in another task's hands).
        """
        if self._ended:
            raise EventStoreUnavailableError("postgres", "transaction", "it has ended")
        with translate_errors("postgres", "transaction", self._driver_error):
            return await anyio.to_thread.run_sync(function, self._conn)


@final
@attrs.define(eq=False, kw_only=True)
class PostgresEventStore:
    """An [`EventStore`][meshkit.eventsourcing.EventStore] and checkpoint store on PostgreSQL.

    Appends run in parallel on a pool of connections (psycopg 3, in worker threads, so the
    store works on asyncio and trio). Each row records its writing transaction's id, and
    `read_all` withholds rows of transactions still in flight, so a subscriber never skips
    an event that commits late with a lower position. The tables are created on first use,
    idempotently, in `schema`.

    Attributes:
        dsn: A libpq connection string or URL.
        schema: The (existing) schema holding the store's tables.
        serializer: Encodes payloads and snapshot states.
        clock: Paces `wait_for_new` polling.
        poll_interval: Seconds between checks for new events in `wait_for_new`.
        min_connections: Connections the pool keeps open.
        max_connections: The most connections the pool opens.
        connect_timeout: Seconds to wait for a pooled connection before failing.
    """

    dsn: str = attrs.field(validator=instance_of(str))
    schema: str = attrs.field(default="public", validator=_check_schema)
    serializer: Serializer = attrs.field(factory=JSONSerializer, validator=instance_of(Serializer))
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    poll_interval: float = attrs.field(default=0.05, validator=gt(0))
    min_connections: int = attrs.field(default=1, validator=[instance_of(int), ge(1)])
    max_connections: int = attrs.field(default=16, validator=[instance_of(int), ge(1)])
    connect_timeout: float = attrs.field(default=10.0, validator=gt(0))
    _pool: psycopg_pool.ConnectionPool[Any] | None = attrs.field(init=False, default=None)
    _sql: ModuleType | None = attrs.field(init=False, default=None)
    _bound: Statements | None = attrs.field(init=False, default=None)
    _closed: bool = attrs.field(init=False, default=False)
    _wakeup: Wakeup = attrs.field(init=False, factory=Wakeup)
    _open_lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    @max_connections.validator
    def _check_max(self, _attribute: object, value: int) -> None:
        require(value >= self.min_connections, "max_connections", value, ">= min_connections")

    @classmethod
    async def open(cls, dsn: str, **options: Any) -> Self:  # noqa: ANN401 - constructor options
        """Create a store on `dsn`, create its tables if missing, and return it.

        Raises:
            ConfigurationError: If an option is invalid (a malformed `dsn` included).
            EventStoreUnavailableError: If PostgreSQL cannot be reached.
        """
        store = cls(dsn=dsn, **options)
        await store._ready()
        return store

    async def __aenter__(self) -> Self:
        await self._ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ EventStore

    async def append(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        """Append `events` to `stream_id` atomically if it is at `expected_version`.

        Returns:
            The stream's version after the append.

        Raises:
            VersionConflictError: If the stream is not at `expected_version`, or an event id
                is already stored elsewhere.
            ConfigurationError: On bad arguments or an unserializable payload.
            EventStoreUnavailableError: If PostgreSQL fails. Nothing is written, unless the
                connection failed while committing; appending the same events again is then
                safe (a no-op if they were stored).
        """
        check_append_args(stream_id, events, expected_version)
        rows = encode_events(events, self.serializer)
        module = await self._module()
        statements = self._statements()
        version: int = await self._call(
            "append", module.append, statements, list(events), expected_version, rows
        )
        self._wakeup.fire()
        return version

    async def read(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        """Return the events of `stream_id` from `from_version` on, in order.

        Raises:
            ConfigurationError: If `stream_id` is not a str, `from_version` not an int, or
                `limit` not positive.
            EventDecodeError: If a stored event is corrupt.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        check_read_args(stream_id, from_version, limit)
        await self._module()
        rows = await self._fetch("read", self._statements().read, (stream_id, from_version, limit))
        return [decode_event(row, self.serializer) for row in rows]

    async def read_all(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        """Return committed events after `after_position`, in order, never skipping one.

        Rows of transactions still in flight (or of any younger one) are withheld until every
        transaction older than them has finished.

        Raises:
            ConfigurationError: If `after_position` is negative or `limit` is not positive.
            EventDecodeError: If a stored event is corrupt.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        check_position_args("after_position", after_position, limit)
        await self._module()
        rows = await self._fetch("read_all", self._statements().read_all, (after_position, limit))
        return [decode_event(row, self.serializer) for row in rows]

    async def stream_version(self, stream_id: str) -> int:
        """Return the stream's current version (0 when it has no events).

        Raises:
            ConfigurationError: If `stream_id` is not a str.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        check_stream_id(stream_id)
        await self._module()
        rows = await self._fetch("stream_version", self._statements().current_version, (stream_id,))
        return int(rows[0][0])

    async def last_position(self) -> int:
        """Return the highest position a reader can see now (0 for an empty store).

        Raises:
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        await self._module()
        rows = await self._fetch("last_position", self._statements().last_position, ())
        return int(rows[0][0])

    async def wait_for_new(self, after_position: int) -> None:
        """Return once a reader can see an event after `after_position`.

        Appends of this store wake waiters at once; others are noticed by polling every
        `poll_interval` seconds on the store's clock.

        Raises:
            ConfigurationError: If `after_position` is negative.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        check_position_args("after_position", after_position)
        await self._module()
        statement = self._statements().has_new

        async def arrived() -> bool:
            return bool((await self._fetch("wait_for_new", statement, (after_position,)))[0][0])

        await self._wakeup.wait_until(arrived, self.clock, self.poll_interval)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store `snapshot`, replacing the stream's previous one.

        Raises:
            ConfigurationError: If the state cannot be serialized.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        row = encode_snapshot(snapshot, self.serializer)
        await self._module()
        await self._execute("save_snapshot", self._statements().save_snapshot, row)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return the stream's snapshot, or `None`.

        Raises:
            ConfigurationError: If `stream_id` is not a str.
            EventDecodeError: If the stored snapshot is corrupt.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        check_stream_id(stream_id)
        await self._module()
        rows = await self._fetch("load_snapshot", self._statements().load_snapshot, (stream_id,))
        return decode_snapshot(rows[0], self.serializer) if rows else None

    # ------------------------------------------------------------------ checkpoints

    async def load_checkpoint(self, name: str) -> int:
        """Return subscription `name`'s saved position (0 when it has none).

        Raises:
            ConfigurationError: If `name` is empty.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        check_name(name)
        await self._module()
        rows = await self._fetch("load_checkpoint", self._statements().load_checkpoint, (name,))
        return int(rows[0][0]) if rows else 0

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save `position` for subscription `name` (a lower position than saved is ignored).

        Raises:
            ConfigurationError: If `name` is empty or `position` is negative.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        check_checkpoint_args(name, position)
        await self._module()
        statement = self._statements().save_checkpoint
        await self._execute("save_checkpoint", statement, (name, position))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """Open a transaction for a projection's tables and its checkpoint.

        It commits when the block exits normally and rolls back when it raises. It runs at
        READ COMMITTED whatever the server's default isolation level, as the subscription
        lease's fence needs (see `_postgres_lease_sql`).

        Yields:
            The transaction.

        Raises:
            EventStoreUnavailableError: If PostgreSQL fails to begin or commit.
        """
        await self._module()
        pool = self._pool
        assert pool is not None  # noqa: S101 - set by _module()
        with translate_errors("postgres", "transaction", self._driver_error()):
            conn = await anyio.to_thread.run_sync(pool.getconn, self.connect_timeout)
        tx = PostgresTransaction(
            conn=conn, statements=self._statements(), driver_error=self._driver_error()
        )
        try:
            # A dead connection cannot roll back (nor commit): the block's error matters.
            async with transaction_scope(
                "postgres", self._driver_error(), anyio.to_thread.run_sync, conn, _BEGIN
            ):
                yield tx
        finally:
            tx._ended = True  # noqa: SLF001 - the store owns its transactions
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pool.putconn, conn)

    # ------------------------------------------------------------------ subscription leases

    def leases(self) -> SQLLeaseStore:
        """Return the subscription leases kept in this schema (see `Subscription`)."""
        from meshkit.eventsourcing._postgres_lease_sql import PostgresLeaseSQL  # noqa: PLC0415 - imports psycopg

        lease_sql = PostgresLeaseSQL(self.schema)
        return SQLLeaseStore(
            store=self,
            backend="postgres",
            locking_transactions=False,  # row locks: a takeover may commit mid-transaction
            sql=lease_sql,
            call=self._call,
            ready=self._module,
        )

    async def aclose(self) -> None:
        """Close the connection pool; the store cannot be used afterwards."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pool.close)

    # ------------------------------------------------------------------ plumbing

    def _statements(self) -> Statements:
        assert self._bound is not None  # noqa: S101 - set by _module()
        return self._bound

    def _driver_error(self) -> type[Exception]:
        assert self._sql is not None  # noqa: S101 - set by _module()
        error: type[Exception] = self._sql.DRIVER_ERROR
        return error

    async def _ready(self) -> None:
        await self._module()

    async def _module(self) -> ModuleType:
        if self._closed:
            raise EventStoreUnavailableError("postgres", "open", "the store is closed")
        if self._sql is None:
            await anyio.to_thread.run_sync(self._open_sync)
        assert self._sql is not None  # noqa: S101 - set by _open_sync
        return self._sql

    def _open_sync(self) -> None:
        with self._open_lock:  # callers racing on a fresh store must share one pool
            if self._sql is None:
                self._open_pool()

    def _open_pool(self) -> None:
        import psycopg_pool  # noqa: PLC0415 - optional dependency, imported on first use

        from meshkit.eventsourcing import _postgres_sql  # noqa: PLC0415 - imports psycopg

        _postgres_sql.check_dsn(self.dsn)
        statements = _postgres_sql.Statements(self.schema)
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            self.dsn,
            min_size=self.min_connections,
            max_size=self.max_connections,
            kwargs={"autocommit": True},
            timeout=self.connect_timeout,
            open=False,
        )
        try:
            with translate_errors("postgres", "open", _postgres_sql.DRIVER_ERROR):
                pool.open(wait=True, timeout=self.connect_timeout)
                with pool.connection() as conn:
                    _postgres_sql.init_schema(conn, statements)
        except BaseException:
            pool.close()
            raise
        if self._closed:  # aclose() ran meanwhile and could not close this pool
            pool.close()
            raise EventStoreUnavailableError("postgres", "open", "the store is closed")
        self._pool, self._bound, self._sql = pool, statements, _postgres_sql

    async def _call(self, operation: str, function: Callable[..., _T], *args: Any) -> _T:  # noqa: ANN401 - forwarded
        pool = self._pool
        assert pool is not None  # noqa: S101 - set by _module()

        def run() -> _T:
            with pool.connection(self.connect_timeout) as conn:
                return function(conn, *args)

        with translate_errors("postgres", operation, self._driver_error()):
            return await anyio.to_thread.run_sync(run)

    async def _fetch(
        self, operation: str, statement: Statement, params: Sequence[Any]
    ) -> list[Any]:
        assert self._sql is not None  # noqa: S101 - set by _module()
        rows: list[Any] = await self._call(operation, self._sql.fetch, statement, params)
        return rows

    async def _execute(self, operation: str, statement: Statement, params: Sequence[Any]) -> None:
        await self._call(operation, lambda conn: conn.execute(statement, params))
