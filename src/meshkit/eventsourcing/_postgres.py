"""The PostgreSQL event store: parallel writers, a global log no reader can skip through."""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, final

import anyio
import anyio.to_thread
import attrs

from meshkit._errors import EventStoreUnavailableError
from meshkit._validate import count, instance_of, positive_seconds, require
from meshkit.eventsourcing._sql_common import translate_errors
from meshkit.eventsourcing._sql_lease import SQLLeaseStore
from meshkit.eventsourcing._sql_store import SQLStoreBase, SQLTransaction

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import ModuleType

    import psycopg
    import psycopg_pool

    from meshkit.eventsourcing._event import Event
    from meshkit.eventsourcing._postgres_sql import Statements
    from meshkit.eventsourcing._sql_common import EventRow

__all__ = ["PostgresEventStore", "PostgresTransaction"]

_T = TypeVar("_T")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _check_schema(_inst: object, _attribute: object, value: object) -> None:
    ok = isinstance(value, str) and _IDENTIFIER.match(value) is not None
    require(ok, "schema", value, "must be a plain SQL identifier")


@final
class PostgresTransaction(SQLTransaction["psycopg.Connection[Any]"]):
    """A transaction on one pooled connection, for a projection's own tables.

    Obtained from `PostgresEventStore.transaction()`; everything done through it, checkpoints
    included, commits or rolls back together. Statements use `%s` placeholders.
    """


@final
@attrs.define(eq=False, kw_only=True)
class PostgresEventStore(SQLStoreBase[PostgresTransaction]):
    """An [`EventStore`][meshkit.eventsourcing.EventStore] and checkpoint store on PostgreSQL.

    Appends run in parallel on a pool of connections (psycopg 3, in worker threads, so the
    store works on asyncio and trio). Each row records its writing transaction's id, and
    `read_all` withholds rows of transactions still in flight (or of any younger one) until
    every transaction older than them has finished, so a subscriber never skips an event that
    commits late with a lower position. The tables are created on first use, idempotently, in
    `schema`. What each method does and raises is documented on the `EventStore` protocol.

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

    BACKEND: ClassVar[str] = "postgres"
    # Pinned, not the server's default: under REPEATABLE READ or SERIALIZABLE, the subscription
    # lease's fence (an UPDATE in the checkpoint transaction) fails with a serialization error
    # whenever the runner's own renewal or a takeover committed after the batch's snapshot;
    # READ COMMITTED re-checks the row and decides.
    BEGIN: ClassVar[str] = "BEGIN ISOLATION LEVEL READ COMMITTED"

    dsn: str = attrs.field(validator=instance_of(str))
    schema: str = attrs.field(default="public", validator=_check_schema)
    min_connections: int = attrs.field(default=1, validator=count(1))
    max_connections: int = attrs.field(default=16, validator=count(1))
    connect_timeout: float = attrs.field(default=10.0, validator=positive_seconds)
    _pool: psycopg_pool.ConnectionPool[Any] | None = attrs.field(init=False, default=None)
    _sql: ModuleType | None = attrs.field(init=False, default=None)
    _bound: Statements | None = attrs.field(init=False, default=None)
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
        await store._start()
        return store

    def leases(self) -> SQLLeaseStore:
        """Return the subscription leases kept in this schema (see `Subscription`)."""
        from meshkit.eventsourcing._postgres_lease_sql import PostgresLeaseSQL  # noqa: PLC0415 - imports psycopg

        return SQLLeaseStore(
            store=self,
            backend="postgres",
            locking_transactions=False,  # row locks: a takeover may commit mid-transaction
            sql=PostgresLeaseSQL(self.schema),
            call=self._call,
            ready=self._ready,
        )

    async def aclose(self) -> None:
        """Close the connection pool; the store cannot be used afterwards."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pool.close)

    # ------------------------------------------------------------------ the backend's parts

    def _statements(self) -> Statements:
        assert self._bound is not None  # noqa: S101 - set by _ready()
        return self._bound

    def _driver_error(self) -> type[Exception]:
        assert self._sql is not None  # noqa: S101 - set by _ready()
        error: type[Exception] = self._sql.DRIVER_ERROR
        return error

    def _transaction(self, conn: psycopg.Connection[Any]) -> PostgresTransaction:
        return PostgresTransaction(conn, self._statements(), self.BACKEND, self._driver_error())

    async def _ready(self) -> None:
        if self._closed:
            raise EventStoreUnavailableError("postgres", "open", "the store is closed")
        if self._sql is None:
            await anyio.to_thread.run_sync(self._open_sync)

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

    async def _append_rows(
        self, stream_id: str, events: Sequence[Event], expected_version: int, rows: list[EventRow]
    ) -> int:
        assert self._sql is not None  # noqa: S101 - set by _ready()
        append = self._sql.append
        version: int = await self._call(
            "append", append, self._statements(), stream_id, events, expected_version, rows
        )
        self._wakeup.fire()
        return version

    def _pool_or_fail(self) -> psycopg_pool.ConnectionPool[Any]:
        if self._pool is None:  # closed meanwhile
            raise EventStoreUnavailableError("postgres", "open", "the store is closed")
        return self._pool

    async def _acquire(self) -> psycopg.Connection[Any]:
        await self._ready()
        pool = self._pool_or_fail()
        with translate_errors("postgres", "transaction", self._driver_error()):
            return await anyio.to_thread.run_sync(pool.getconn, self.connect_timeout)

    async def _release(self, conn: psycopg.Connection[Any]) -> None:
        pool = self._pool
        # A pool closed meanwhile no longer takes connections back: close it here.
        await anyio.to_thread.run_sync(conn.close if pool is None else lambda: pool.putconn(conn))

    async def _call(self, operation: str, function: Callable[..., _T], *args: Any) -> _T:  # noqa: ANN401 - forwarded
        await self._ready()
        pool = self._pool_or_fail()

        def run() -> _T:
            with pool.connection(self.connect_timeout) as conn:
                return function(conn, *args)

        with translate_errors("postgres", operation, self._driver_error()):
            return await anyio.to_thread.run_sync(run)
