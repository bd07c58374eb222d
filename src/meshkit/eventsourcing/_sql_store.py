"""The skeleton both SQL event stores share; each backend fills in only what differs.

`SQLStoreBase` holds the `EventStore` and checkpoint methods once: check the arguments, run a
named statement, decode the rows. A backend (`SQLiteEventStore`, `PostgresEventStore`) supplies
the parts that really differ:

- how to reach a connection: `_ready()` (open on first use), `_call()` (run a function on a
  connection in a worker thread), `_acquire()`/`_release()` (a connection for a transaction);
- its SQL dialect: `_statements()`, an object whose attributes are the statements named after
  the operation that runs them (`read`, `read_all`, `current_version`, ...), and `BEGIN`;
- how an append is written and serialized (`_append_rows`: SQLite's group commit, PostgreSQL's
  append function) and how the store is closed (`aclose`).

The behaviour of every method is documented once, on the `EventStore` and `CheckpointStore`
protocols (`meshkit.eventsourcing._store`), errors included.
"""

from __future__ import annotations

import abc
import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import anyio
import anyio.to_thread
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import EventStoreUnavailableError
from meshkit._validate import instance_of, positive_seconds
from meshkit.eventsourcing._checks import (
    check_append,
    check_checkpoint,
    check_limit,
    check_name,
    check_position,
    check_read,
    check_snapshot,
    check_stream_id,
)
from meshkit.eventsourcing._event import JSONSerializer, Serializer
from meshkit.eventsourcing._sql_common import (
    Wakeup,
    decode_event,
    decode_snapshot,
    encode_events,
    encode_snapshot,
    run_statement,
    stored_checkpoint,
    stored_version,
    transaction_scope,
    translate_errors,
)
from meshkit.eventsourcing._store import StoreContext

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from meshkit.eventsourcing._event import Event, Snapshot
    from meshkit.eventsourcing._sql_common import EventRow

__all__ = ["SQLStoreBase", "SQLTransaction"]

_T = TypeVar("_T")
_Conn = TypeVar("_Conn")
_Tx = TypeVar("_Tx", bound="SQLTransaction[Any]")


class SQLTransaction(Generic[_Conn]):
    """A transaction on one connection of a SQL store, for a projection's own tables.

    Obtained from the store's `transaction()`; everything done through it, checkpoints
    included, commits or rolls back together.
    """

    def __init__(
        self,
        conn: _Conn,
        statements: Any,  # noqa: ANN401 - the backend's statement set
        backend: str,
        driver_error: type[Exception],
    ) -> None:
        self._conn = conn
        self._statements = statements
        self._backend = backend
        self._driver_error = driver_error
        self._ended = False

    async def execute(self, statement: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Run one SQL statement and return the rows it produced (none for a write).

        Placeholders are the backend's: `?` for SQLite, `%s` for PostgreSQL.

        Raises:
            EventStoreUnavailableError: If the database fails (the driver's error is chained).
        """
        return await self.run_sync(lambda conn: run_statement(conn, statement, parameters))

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save subscription `name`'s position in this transaction (positions only grow).

        Raises:
            ConfigurationError: If `name` or `position` is invalid.
            EventStoreUnavailableError: If the database fails.
        """
        check_checkpoint(name, position)
        statement = self._statements.save_checkpoint
        await self.run_sync(lambda conn: run_statement(conn, statement, (name, position)))

    async def load_checkpoint(self, name: str) -> int:
        """Return subscription `name`'s position as this transaction sees it (0 if none).

        Raises:
            ConfigurationError: If `name` is invalid.
            EventStoreUnavailableError: If the database fails.
            EventStoreCorruptError: If the stored position is not one (a damaged row).
        """
        check_name(name)
        statement = self._statements.load_checkpoint
        rows = await self.run_sync(lambda conn: run_statement(conn, statement, (name,)))
        return stored_checkpoint(self._backend, name, rows[0][0]) if rows else 0

    async def run_sync(self, function: Callable[[_Conn], _T]) -> _T:
        """Call `function(connection)` in a worker thread, inside this transaction.

        Raises:
            EventStoreUnavailableError: If the database fails, or the transaction has ended
                (its connection is back with the store, maybe in another task's hands).
        """
        if self._ended:
            raise EventStoreUnavailableError(self._backend, "transaction", "it has ended")
        with translate_errors(self._backend, "transaction", self._driver_error):
            return await anyio.to_thread.run_sync(function, self._conn)

    def end(self) -> None:
        """Refuse any further use (called by the store when the transaction is over)."""
        self._ended = True


@attrs.define(eq=False, kw_only=True)
class SQLStoreBase(StoreContext, abc.ABC, Generic[_Tx]):
    """The `EventStore` and `CheckpointStore` methods both SQL backends share.

    See `EventStore` for what each method does and raises.
    """

    BACKEND: ClassVar[str]
    BEGIN: ClassVar[str]

    serializer: Serializer = attrs.field(factory=JSONSerializer, validator=instance_of(Serializer))
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    poll_interval: float = attrs.field(default=0.05, validator=positive_seconds)
    _wakeup: Wakeup = attrs.field(init=False, factory=Wakeup)
    _closed: bool = attrs.field(init=False, default=False)

    # ------------------------------------------------------------------ what a backend supplies

    @abc.abstractmethod
    async def _ready(self) -> None:
        """Open the store on first use; raise `EventStoreUnavailableError` once closed."""

    @abc.abstractmethod
    def _statements(self) -> Any:  # noqa: ANN401 - the backend's statement set
        """Return the statement set (after `_ready()`)."""

    @abc.abstractmethod
    def _driver_error(self) -> type[Exception]:
        """Return the driver's base exception (after `_ready()`)."""

    @abc.abstractmethod
    async def _call(self, operation: str, function: Callable[..., _T], *args: Any) -> _T:  # noqa: ANN401 - forwarded
        """Call `function(connection, *args)` in a worker thread, translating driver errors."""

    @abc.abstractmethod
    async def _acquire(self) -> Any:  # noqa: ANN401 - the backend's connection
        """Return a connection for a transaction."""

    @abc.abstractmethod
    async def _release(self, conn: Any) -> None:  # noqa: ANN401 - the backend's connection
        """Give back a connection `_acquire()` returned (runs shielded from cancellation)."""

    @abc.abstractmethod
    def _transaction(self, conn: Any) -> _Tx:  # noqa: ANN401 - the backend's connection
        """Wrap a connection in the backend's transaction class."""

    @abc.abstractmethod
    async def _append_rows(
        self, stream_id: str, events: Sequence[Event], expected_version: int, rows: list[EventRow]
    ) -> int:
        """Write a checked, encoded append and wake `wait_for_new` callers; return the version."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        """Open the store, or close it (ending its threads and pool) if that fails."""
        try:
            await self._ready()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise

    # ------------------------------------------------------------------ EventStore

    async def append(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        """See [`EventStore.append`][meshkit.eventsourcing.EventStore.append]."""
        check_append(stream_id, events, expected_version)
        rows = encode_events(events, self.serializer)
        await self._ready()
        return await self._append_rows(stream_id, events, expected_version, rows)

    async def read(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        """See [`EventStore.read`][meshkit.eventsourcing.EventStore.read]."""
        check_read(stream_id, from_version, limit)
        rows = await self._fetch("read", stream_id, from_version, limit)
        return [decode_event(row, self.serializer) for row in rows]

    async def read_all(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        """See [`EventStore.read_all`][meshkit.eventsourcing.EventStore.read_all]."""
        check_position("after_position", after_position)
        check_limit(limit)
        rows = await self._fetch("read_all", after_position, limit)
        return [decode_event(row, self.serializer) for row in rows]

    async def stream_version(self, stream_id: str) -> int:
        """See [`EventStore.stream_version`][meshkit.eventsourcing.EventStore.stream_version]."""
        check_stream_id(stream_id)
        version = (await self._fetch("current_version", stream_id))[0][0]
        if type(version) is not int:  # a corrupt row: name its type too
            rows = await self._fetch("type_at", stream_id, version)
            stored_version(stream_id, version, rows[0][0] if rows else "?")
        return int(version)

    async def last_position(self) -> int:
        """Return the highest global position a reader can see now (0 for an empty store).

        Raises:
            EventStoreUnavailableError: If the database fails.
        """
        return int((await self._fetch("last_position"))[0][0])

    async def wait_for_new(self, after_position: int) -> None:
        """See [`EventStore.wait_for_new`][meshkit.eventsourcing.EventStore.wait_for_new].

        Appends of this store wake waiters at once; appends of other processes are noticed
        by polling every `poll_interval` seconds on the store's clock.
        """
        check_position("after_position", after_position)

        async def arrived() -> bool:
            return bool((await self._fetch("has_new", after_position))[0][0])

        await self._wakeup.wait_until(arrived, self.clock, self.poll_interval)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """See [`EventStore.save_snapshot`][meshkit.eventsourcing.EventStore.save_snapshot]."""
        row = encode_snapshot(check_snapshot(snapshot), self.serializer)
        await self._fetch("save_snapshot", *row)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """See [`EventStore.load_snapshot`][meshkit.eventsourcing.EventStore.load_snapshot]."""
        check_stream_id(stream_id)
        rows = await self._fetch("load_snapshot", stream_id)
        return decode_snapshot(rows[0], self.serializer) if rows else None

    # ------------------------------------------------------------------ checkpoints

    async def load_checkpoint(self, name: str) -> int:
        """See `CheckpointStore.load_checkpoint`."""
        check_name(name)
        rows = await self._fetch("load_checkpoint", name)
        return stored_checkpoint(self.BACKEND, name, rows[0][0]) if rows else 0

    async def save_checkpoint(self, name: str, position: int) -> None:
        """See `CheckpointStore.save_checkpoint`."""
        check_checkpoint(name, position)
        await self._fetch("save_checkpoint", name, position)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        """Open a write transaction for a projection's tables and its checkpoint.

        It commits when the block exits normally and rolls back when it raises.

        Yields:
            The transaction.

        Raises:
            EventStoreUnavailableError: If the database fails to begin or commit (the
                transaction is then rolled back).
            EventStoreCorruptError: If the database file is damaged.
        """
        conn = await self._acquire()
        tx = self._transaction(conn)
        try:
            async with transaction_scope(
                self.BACKEND, self._driver_error(), anyio.to_thread.run_sync, conn, self.BEGIN
            ):
                yield tx
        finally:
            tx.end()
            with anyio.CancelScope(shield=True):
                await self._release(conn)

    # ------------------------------------------------------------------ plumbing

    async def _fetch(self, operation: str, *params: Any) -> list[Any]:  # noqa: ANN401 - parameters
        """Run the statement named `operation` with `params`; return its rows."""
        await self._ready()
        statement = getattr(self._statements(), operation)
        return await self._call(operation, run_statement, statement, params)
