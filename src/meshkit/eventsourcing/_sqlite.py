"""The SQLite event store: embedded, durable, safe across processes, with group commit."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import weakref
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar, final

import anyio
import anyio.to_thread
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import ConfigurationError, EventStoreUnavailableError
from meshkit._validate import ge, gt, in_range, instance_of, require
from meshkit.eventsourcing import _sqlite_sql as sql
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
from meshkit.eventsourcing._sqlite_group import AppendRequest, GroupCommitter, WriterThread

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from types import TracebackType

    from meshkit.eventsourcing._event import Event, Snapshot

__all__ = ["SQLiteEventStore", "SQLiteTransaction"]

_T = TypeVar("_T")


def _path(value: str | os.PathLike[str]) -> str:
    try:
        text = os.fsdecode(value)
    except TypeError:
        raise ConfigurationError("path", value, "must be a str or os.PathLike") from None
    require(text not in {"", ":memory:"}, "path", value, "must name a file (durability)")
    require("\0" not in text, "path", value, "must not contain a NUL character")
    return text


@final
@attrs.define(eq=False, kw_only=True)
class SQLiteTransaction:
    """A write transaction on the store's database, for a projection's own tables.

    Obtained from `SQLiteEventStore.transaction()`; everything done through it, checkpoints
    included, commits or rolls back together.
    """

    _conn: sqlite3.Connection
    _ended: bool = attrs.field(init=False, default=False)

    async def execute(self, statement: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Run one SQL statement (`?` placeholders) and return the rows it produced.

        Raises:
            EventStoreUnavailableError: If SQLite fails (the driver's error is chained).
        """
        return await self.run_sync(lambda conn: conn.execute(statement, parameters).fetchall())

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save subscription `name`'s position in this transaction (positions only grow).

        Raises:
            ConfigurationError: If `name` is empty or `position` is negative.
            EventStoreUnavailableError: If SQLite fails.
        """
        check_checkpoint_args(name, position)
        await self.run_sync(lambda conn: sql.save_checkpoint(conn, name, position))

    async def load_checkpoint(self, name: str) -> int:
        """Return subscription `name`'s position as this transaction sees it (0 if none).

        Raises:
            ConfigurationError: If `name` is empty.
            EventStoreUnavailableError: If SQLite fails.
        """
        check_name(name)
        return await self.run_sync(lambda conn: sql.load_checkpoint(conn, name))

    async def run_sync(self, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """Call `function(connection)` in a worker thread, inside this transaction.

        Raises:
            EventStoreUnavailableError: If SQLite fails, or the transaction has ended (its
                connection is back in the store's pool, maybe in another task's hands).
        """
        if self._ended:
            raise EventStoreUnavailableError("sqlite", "transaction", "it has ended")
        with translate_errors("sqlite", "transaction", sqlite3.Error):
            return await anyio.to_thread.run_sync(function, self._conn)


@final
@attrs.define(eq=False, kw_only=True)
class SQLiteEventStore:
    """An [`EventStore`][meshkit.eventsourcing.EventStore] and checkpoint store in one SQLite file.

    The database runs in WAL mode with `synchronous=FULL` by default, so an append that
    returned survives a crash or power loss. Concurrent appends in one process queue to a single
    writer thread, owned by the store, that commits them in batches (group commit; a
    conflicting or failing append is undone alone, by its savepoint or by SQLite's statement
    atomicity, and only its caller gets the error); writers in other processes are serialized
    by `BEGIN IMMEDIATE` and `busy_timeout`. Reads run in anyio worker threads. Nothing blocks
    the event loop, and the store works on asyncio and trio alike (one event loop at a time).

    Use it as an async context manager (`async with SQLiteEventStore(path=...) as store:`)
    or call `aclose()`, which also ends the writer thread; the schema is created on first use.

    Attributes:
        path: The database file (created if missing; `:memory:` is refused).
        serializer: Encodes payloads and snapshot states.
        clock: Paces `wait_for_new` polling.
        poll_interval: Seconds between checks for events written by other processes.
        busy_timeout: Seconds to wait for another process's write lock before failing.
        synchronous: `"FULL"` (durable: every commit is fsynced) or `"NORMAL"` (in WAL mode
            a power loss may drop the last commits, but the file stays consistent).
        max_batch: The most appends one group commit takes.
        max_idle_connections: Reader connections kept open between calls.
    """

    path: str = attrs.field(converter=_path)
    serializer: Serializer = attrs.field(factory=JSONSerializer, validator=instance_of(Serializer))
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    poll_interval: float = attrs.field(default=0.05, validator=gt(0))
    busy_timeout: float = attrs.field(default=5.0, validator=in_range(0.001, 3600.0))
    synchronous: Literal["FULL", "NORMAL"] = attrs.field(default="FULL")
    max_batch: int = attrs.field(default=256, validator=[instance_of(int), ge(1)])
    max_idle_connections: int = attrs.field(default=4, validator=[instance_of(int), ge(0)])
    _writer: sqlite3.Connection | None = attrs.field(init=False, default=None)
    _idle: list[sqlite3.Connection] = attrs.field(init=False, factory=list)
    _wakeup: Wakeup = attrs.field(init=False, factory=Wakeup)
    _thread: WriterThread = attrs.field(init=False)
    _committer: GroupCommitter = attrs.field(init=False)
    _closed: bool = attrs.field(init=False, default=False)

    @synchronous.validator
    def _check_synchronous(self, _attribute: object, value: str) -> None:
        require(value in {"FULL", "NORMAL"}, "synchronous", value, "must be FULL or NORMAL")

    @_thread.default
    def _make_thread(self) -> WriterThread:
        thread = WriterThread(f"meshkit-sqlite-writer {self.path}")
        # Ends the thread of a store dropped without aclose() (the thread holds no reference to
        # the store, and the finalizer none to the store either).
        weakref.finalize(self, thread.stop_soon)
        return thread

    @_committer.default
    def _make_committer(self) -> GroupCommitter:
        return GroupCommitter(
            write_batch=self._write_batch,
            on_commit=self._wakeup.fire,
            max_batch=self.max_batch,
            writer=self._thread,
        )

    @classmethod
    async def open(cls, path: str | os.PathLike[str], **options: Any) -> Self:  # noqa: ANN401 - constructor options
        """Create a store on `path`, create its schema, and return it.

        Raises:
            ConfigurationError: If an option is invalid.
            EventStoreUnavailableError: If the database cannot be opened.
        """
        store = cls(path=path, **options)
        await store._start()
        return store

    async def __aenter__(self) -> Self:
        await self._start()
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

        An append is never half-written. If the caller is cancelled while the append waits in
        the queue, it is dropped; once its batch has reached the writer thread, it commits or
        fails as a whole first, and then the cancellation is raised (read the stream to learn
        whether it landed).

        Raises:
            VersionConflictError: If the stream is not at `expected_version`.
            ConfigurationError: On bad arguments, an unserializable payload, or an event id
                already stored elsewhere.
            EventStoreUnavailableError: If SQLite fails; nothing of the append is written.
        """
        check_append_args(stream_id, events, expected_version)
        rows = encode_events(events, self.serializer)
        await self._ready()
        request = AppendRequest(
            stream_id=stream_id, events=events, expected_version=expected_version, rows=rows
        )
        return await self._committer.submit(request)

    async def read(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        """Return the events of `stream_id` from `from_version` on, in order.

        Raises:
            ConfigurationError: If `stream_id` is not a str, `from_version` not an int, or
                `limit` not positive.
            EventDecodeError: If a stored event is corrupt.
            EventStoreUnavailableError: If SQLite fails.
        """
        check_read_args(stream_id, from_version, limit)
        rows = await self._query("read", sql.READ, (stream_id, from_version, limit or -1))
        return [decode_event(row, self.serializer) for row in rows]

    async def read_all(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        """Return the events of the global log after `after_position`, in order.

        Raises:
            ConfigurationError: If `after_position` is negative or `limit` is not positive.
            EventDecodeError: If a stored event is corrupt.
            EventStoreUnavailableError: If SQLite fails.
        """
        check_position_args("after_position", after_position, limit)
        rows = await self._query("read_all", sql.READ_ALL, (after_position, limit or -1))
        return [decode_event(row, self.serializer) for row in rows]

    async def stream_version(self, stream_id: str) -> int:
        """Return the stream's current version (0 when it has no events).

        Raises:
            ConfigurationError: If `stream_id` is not a str.
            EventStoreUnavailableError: If SQLite fails.
        """
        check_stream_id(stream_id)
        rows = await self._query("stream_version", sql.CURRENT_VERSION, (stream_id,))
        return int(rows[0][0])

    async def last_position(self) -> int:
        """Return the highest global position stored (0 for an empty store).

        Raises:
            EventStoreUnavailableError: If SQLite fails.
        """
        statement = "SELECT coalesce(max(position), 0) FROM meshkit_events"
        rows = await self._query("last_position", statement, ())
        return int(rows[0][0])

    async def wait_for_new(self, after_position: int) -> None:
        """Return once the log holds an event after `after_position`.

        Appends of this store wake waiters at once; appends of other processes are noticed
        by polling every `poll_interval` seconds on the store's clock.

        Raises:
            ConfigurationError: If `after_position` is negative.
            EventStoreUnavailableError: If SQLite fails.
        """
        check_position_args("after_position", after_position)

        async def arrived() -> bool:
            return await self.last_position() > after_position

        await self._wakeup.wait_until(arrived, self.clock, self.poll_interval)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store `snapshot`, replacing the stream's previous one.

        Raises:
            ConfigurationError: If the state cannot be serialized.
            EventStoreUnavailableError: If SQLite fails.
        """
        row = encode_snapshot(snapshot, self.serializer)
        statement = "INSERT OR REPLACE INTO meshkit_snapshots VALUES (?, ?, ?, ?, ?, ?)"
        await self._query("save_snapshot", statement, row)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return the stream's snapshot, or `None`.

        Raises:
            ConfigurationError: If `stream_id` is not a str.
            EventDecodeError: If the stored snapshot is corrupt.
            EventStoreUnavailableError: If SQLite fails.
        """
        check_stream_id(stream_id)
        statement = (
            "SELECT stream_id, version, type, schema_version, state, timestamp "
            "FROM meshkit_snapshots WHERE stream_id = ?"
        )
        rows = await self._query("load_snapshot", statement, (stream_id,))
        return decode_snapshot(rows[0], self.serializer) if rows else None

    # ------------------------------------------------------------------ checkpoints

    async def load_checkpoint(self, name: str) -> int:
        """Return subscription `name`'s saved position (0 when it has none).

        Raises:
            ConfigurationError: If `name` is empty.
            EventStoreUnavailableError: If SQLite fails.
        """
        check_name(name)
        return await self._call("load_checkpoint", sql.load_checkpoint, name)

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save `position` for subscription `name` (a lower position than saved is ignored).

        Raises:
            ConfigurationError: If `name` is empty or `position` is negative.
            EventStoreUnavailableError: If SQLite fails.
        """
        check_checkpoint_args(name, position)
        await self._call("save_checkpoint", sql.save_checkpoint, name, position)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteTransaction]:
        """Open a write transaction for a projection's tables and its checkpoint.

        It commits when the block exits normally and rolls back when it raises.

        Yields:
            The transaction.

        Raises:
            EventStoreUnavailableError: If SQLite fails to begin or commit (the transaction is
                then rolled back).
        """
        conn = await self._acquire()
        tx = SQLiteTransaction(conn=conn)
        try:
            async with transaction_scope(
                "sqlite", sqlite3.Error, anyio.to_thread.run_sync, conn, "BEGIN IMMEDIATE"
            ):
                yield tx
        finally:
            tx._ended = True  # noqa: SLF001 - the store owns its transactions
            await self._release(conn)

    # ------------------------------------------------------------------ subscription leases

    def leases(self) -> SQLLeaseStore:
        """Return the subscription leases kept in this database (see `Subscription`)."""
        from meshkit.eventsourcing._sqlite_lease_sql import SQLiteLeaseSQL  # noqa: PLC0415 - the hook stays one block

        return SQLLeaseStore(
            store=self,
            backend="sqlite",
            locking_transactions=True,  # `transaction()` begins with BEGIN IMMEDIATE
            sql=SQLiteLeaseSQL(),
            call=self._call,
            ready=self._ready,
        )

    async def aclose(self) -> None:
        """Close every connection and end the writer thread; the store is unusable afterwards.

        Appends already handed to the writer thread finish first; later ones fail with
        `EventStoreUnavailableError`.
        """
        self._closed = True
        idle = [*self._idle]
        self._idle.clear()
        for conn in idle:
            conn.close()
        await self._thread.stop(self._close_writer)

    # ------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        return sql.connect(self.path, self.busy_timeout, self.synchronous)

    def _open_sync(self) -> None:
        """Open the write connection and the schema (in the writer thread, so serially)."""
        if self._writer is None:
            writer = self._connect()
            try:
                sql.init_schema(writer)
            except BaseException:
                writer.close()
                raise
            self._writer = writer

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _start(self) -> None:
        """Open the store, or close it (ending its writer thread) if that fails."""
        try:
            await self._ready()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise

    async def _ready(self) -> None:
        if self._closed:
            raise EventStoreUnavailableError("sqlite", "open", "the store is closed")
        if self._writer is None:
            with translate_errors("sqlite", "open", sqlite3.Error):
                await self._thread.run(self._open_sync)

    def _write_batch(self, batch: Sequence[AppendRequest]) -> None:
        assert self._writer is not None  # noqa: S101 - opened before any append is queued
        sql.write_batch(self._writer, batch)

    async def _acquire(self) -> sqlite3.Connection:
        await self._ready()
        if self._idle:
            return self._idle.pop()
        with translate_errors("sqlite", "connect", sqlite3.Error):
            return await anyio.to_thread.run_sync(self._connect)

    async def _release(self, conn: sqlite3.Connection) -> None:
        # A connection still in a transaction (its rollback failed) would hold the write lock.
        if self._closed or conn.in_transaction or len(self._idle) >= self.max_idle_connections:
            conn.close()
        else:
            self._idle.append(conn)

    async def _call(self, operation: str, function: Callable[..., _T], *args: Any) -> _T:  # noqa: ANN401 - forwarded
        conn = await self._acquire()
        try:
            with translate_errors("sqlite", operation, sqlite3.Error):
                return await anyio.to_thread.run_sync(function, conn, *args)
        finally:
            await self._release(conn)

    async def _query(self, operation: str, statement: str, params: Sequence[Any]) -> list[Any]:
        def run(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(statement, params).fetchall()

        return await self._call(operation, run)
