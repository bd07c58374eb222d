"""The SQLite event store: embedded, durable, safe across processes, with group commit."""

from __future__ import annotations

import os
import sqlite3
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar, final

import anyio
import anyio.to_thread
import attrs

from meshkit._errors import ConfigurationError, EventStoreUnavailableError
from meshkit._validate import count, in_range, one_of, require
from meshkit.eventsourcing import _sqlite_sql as sql
from meshkit.eventsourcing._sql_common import translate_errors
from meshkit.eventsourcing._sql_lease import SQLLeaseStore
from meshkit.eventsourcing._sql_store import SQLStoreBase, SQLTransaction
from meshkit.eventsourcing._sqlite_group import AppendRequest, GroupCommitter, WriterThread

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from meshkit.eventsourcing._event import Event
    from meshkit.eventsourcing._sql_common import EventRow

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
class SQLiteTransaction(SQLTransaction[sqlite3.Connection]):
    """A write transaction on the store's database, for a projection's own tables.

    Obtained from `SQLiteEventStore.transaction()`; everything done through it, checkpoints
    included, commits or rolls back together. Statements use `?` placeholders.
    """


@final
@attrs.define(eq=False, kw_only=True)
class SQLiteEventStore(SQLStoreBase[SQLiteTransaction]):
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
    What each method does and raises is documented on the `EventStore` protocol.

    An append is never half-written. If the caller is cancelled while the append waits in the
    queue, it is dropped; once its batch has reached the writer thread, it commits or fails as
    a whole first, and then the cancellation is raised (read the stream to learn whether it
    landed).

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

    BACKEND: ClassVar[str] = "sqlite"
    BEGIN: ClassVar[str] = "BEGIN IMMEDIATE"

    path: str = attrs.field(converter=_path)
    busy_timeout: float = attrs.field(default=5.0, validator=in_range(0.001, 3600.0))
    synchronous: Literal["FULL", "NORMAL"] = attrs.field(
        default="FULL", validator=one_of("FULL", "NORMAL")
    )
    max_batch: int = attrs.field(default=256, validator=count(1))
    max_idle_connections: int = attrs.field(default=4, validator=count(0))
    _writer: sqlite3.Connection | None = attrs.field(init=False, default=None)
    _idle: list[sqlite3.Connection] = attrs.field(init=False, factory=list)
    _thread: WriterThread = attrs.field(init=False)
    _committer: GroupCommitter = attrs.field(init=False)

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
            EventStoreCorruptError: If the file is damaged or not a database.
        """
        store = cls(path=path, **options)
        await store._start()
        return store

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

    # ------------------------------------------------------------------ the backend's parts

    def _statements(self) -> type[sql.Statements]:
        return sql.Statements

    def _driver_error(self) -> type[Exception]:
        return sqlite3.Error

    def _transaction(self, conn: sqlite3.Connection) -> SQLiteTransaction:
        return SQLiteTransaction(conn, sql.Statements, self.BACKEND, sqlite3.Error)

    async def _ready(self) -> None:
        if self._closed:
            raise EventStoreUnavailableError("sqlite", "open", "the store is closed")
        if self._writer is None:
            with translate_errors("sqlite", "open", sqlite3.Error):
                await self._thread.run(self._open_sync)

    def _open_sync(self) -> None:
        """Open the write connection and the schema (in the writer thread, so serially)."""
        if self._writer is None:
            self._writer = sql.open_writer(self.path, self.busy_timeout, self.synchronous)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _append_rows(
        self, stream_id: str, events: Sequence[Event], expected_version: int, rows: list[EventRow]
    ) -> int:
        request = AppendRequest(
            stream_id=stream_id, events=events, expected_version=expected_version, rows=rows
        )
        return await self._committer.submit(request)

    def _write_batch(self, batch: Sequence[AppendRequest]) -> None:
        assert self._writer is not None  # noqa: S101 - opened before any append is queued
        sql.write_batch(self._writer, batch)

    def _connect(self) -> sqlite3.Connection:
        return sql.connect(self.path, self.busy_timeout, self.synchronous)

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
