"""The idempotent inbox: "message X processed by consumer C", committed with the handler's work.

The `Dispatcher` opens one inbox transaction per delivery, claims the message id in it, and
only if the claim is new calls the handler with the same transaction; the handler writes its
effects through it. Both commit together or not at all, so a message delivered twice (the
bus is at-least-once) has its effects applied once. The acknowledgement to the bus is sent
after the commit.

The SQL inboxes keep their table in the event store's own database and write through the
store's `transaction()`, on the connection the handler uses too.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, final, runtime_checkable

import anyio
import attrs

from meshkit._validate import instance_of, require
from meshkit.eventsourcing import (
    PostgresEventStore,
    PostgresTransaction,
    SQLiteEventStore,
    SQLiteTransaction,
)

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

    import psycopg

__all__ = [
    "Inbox",
    "MemoryInbox",
    "MemoryInboxTransaction",
    "PostgresInbox",
    "SQLiteInbox",
    "check_text",
]

_TxT_co = TypeVar("_TxT_co", covariant=True)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_text(field: str, value: object) -> str:
    """Return `value` if it is a non-empty str a database can store, else refuse it.

    Raises:
        ConfigurationError: If it is not a str, is empty, holds a NUL character or is not
            encodable as UTF-8 (a lone surrogate).
    """
    require(isinstance(value, str), field, value, "must be a str")
    text: str = value  # type: ignore[assignment]
    require(text != "", field, value, "must not be empty")
    require("\0" not in text, field, value, "must not contain a NUL character")
    try:
        text.encode()
    except UnicodeEncodeError:
        require(False, field, value, "must be encodable as UTF-8")  # noqa: FBT003
    return text


def _check_table(_inst: object, _attribute: object, value: object) -> None:
    ok = isinstance(value, str) and _IDENTIFIER.match(value) is not None
    require(ok, "table", value, "must be a plain SQL identifier")


@runtime_checkable
class Inbox(Protocol[_TxT_co]):
    """Where a consumer records the messages it has processed, transactionally."""

    def transaction(self) -> AbstractAsyncContextManager[_TxT_co]:
        """Begin a unit of work; it commits when the block exits normally, else rolls back."""
        ...

    async def claim(self, tx: Any, consumer: str, message_id: str) -> bool:  # noqa: ANN401 - the inbox's own transaction type
        """Record `message_id` as processed by `consumer` in `tx`.

        Returns:
            `False` if it was already recorded (a redelivery to skip), else `True`.
        """
        ...


@final
@attrs.define(eq=False)
class MemoryInboxTransaction:
    """A memory inbox's unit of work: a private copy of `data` the handler changes.

    Attributes:
        data: The inbox's data as of the transaction's start; assign to keys (do not mutate
            the values in place: they are shared with the committed copy).
    """

    data: dict[str, Any]
    claims: set[tuple[str, str]] = attrs.field(factory=set)


@final
@attrs.define(eq=False)
class MemoryInbox:
    """An inbox and a tiny key-value "database" in memory, for tests and examples.

    Transactions run one at a time; a transaction's `data` replaces the inbox's `data`
    when it commits, together with its claims.

    Attributes:
        data: The committed data.
    """

    data: dict[str, Any] = attrs.field(factory=dict)
    _processed: set[tuple[str, str]] = attrs.field(init=False, factory=set)
    _lock: anyio.Lock | None = attrs.field(init=False, default=None)

    def processed(self, consumer: str) -> set[str]:
        """Return the ids of the messages `consumer` has processed (committed claims)."""
        return {message for who, message in self._processed if who == consumer}

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryInboxTransaction]:
        """Begin a unit of work on a copy of `data`; commit it if the block succeeds."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            tx = MemoryInboxTransaction(dict(self.data))
            yield tx
            self.data = tx.data
            self._processed |= tx.claims

    async def claim(self, tx: MemoryInboxTransaction, consumer: str, message_id: str) -> bool:
        """Record `message_id` for `consumer` in `tx`; `False` if it is already recorded."""
        await anyio.lowlevel.checkpoint()
        key = (consumer, message_id)
        if key in self._processed or key in tx.claims:
            return False
        tx.claims.add(key)
        return True


@final
@attrs.define(eq=False, kw_only=True)
class SQLiteInbox:
    """An inbox table in a `SQLiteEventStore`'s file, written in the handler's transaction.

    The handler receives the store's `SQLiteTransaction` and writes its own tables with
    `tx.execute(...)`: those writes and the inbox row commit together.

    Attributes:
        store: The store whose database holds the inbox (and the handler's tables).
        table: The inbox table's name (created on first use).
    """

    store: SQLiteEventStore = attrs.field(validator=instance_of(SQLiteEventStore))
    table: str = attrs.field(default="meshkit_inbox", validator=_check_table)
    _ready: bool = attrs.field(init=False, default=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteTransaction]:
        """Begin a write transaction on the store's database (see `SQLiteEventStore`).

        The first one creates the inbox table first, in a transaction of its own.

        Raises:
            EventStoreUnavailableError: If SQLite fails to begin or commit.
        """
        if not self._ready:
            async with self.store.transaction() as tx:
                await tx.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} (consumer TEXT NOT NULL, "
                    "message_id TEXT NOT NULL, processed_at TEXT NOT NULL DEFAULT "
                    "CURRENT_TIMESTAMP, PRIMARY KEY (consumer, message_id)) WITHOUT ROWID"
                )
            self._ready = True
        async with self.store.transaction() as tx:
            yield tx

    async def claim(self, tx: SQLiteTransaction, consumer: str, message_id: str) -> bool:
        """Insert the inbox row in `tx`; `False` if the message was processed already.

        Raises:
            ConfigurationError: If `consumer` or `message_id` cannot be stored.
            EventStoreUnavailableError: If SQLite fails.
        """
        check_text("consumer", consumer)
        check_text("message_id", message_id)
        statement = f"INSERT OR IGNORE INTO {self.table} (consumer, message_id) VALUES (?, ?)"  # noqa: S608 - a checked identifier

        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(statement, (consumer, message_id)).rowcount == 1

        return await tx.run_sync(run)


@final
@attrs.define(eq=False, kw_only=True)
class PostgresInbox:
    """An inbox table in a `PostgresEventStore`'s schema, written in the handler's transaction.

    Concurrent deliveries of one message (two consumers of a group) are safe: the second
    insert waits for the first transaction and then finds the row, so it skips.

    Attributes:
        store: The store whose database (and schema) holds the inbox.
        table: The inbox table's name (created on first use).
    """

    store: PostgresEventStore = attrs.field(validator=instance_of(PostgresEventStore))
    table: str = attrs.field(default="meshkit_inbox", validator=_check_table)
    _ready: bool = attrs.field(init=False, default=False)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """Begin a transaction on a pooled connection (see `PostgresEventStore`).

        The first one creates the inbox table first, in a transaction of its own.

        Raises:
            EventStoreUnavailableError: If PostgreSQL fails to begin or commit.
        """
        if not self._ready:
            async with self.store.transaction() as tx:
                # Two processes creating the table at once would race in the catalog.
                await tx.execute("SELECT pg_advisory_xact_lock(hashtext('meshkit_inbox'))")
                await tx.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._name} (consumer TEXT NOT NULL, "
                    "message_id TEXT NOT NULL, processed_at TIMESTAMPTZ NOT NULL DEFAULT "
                    "now(), PRIMARY KEY (consumer, message_id))"
                )
            self._ready = True
        async with self.store.transaction() as tx:
            yield tx

    @property
    def _name(self) -> str:
        return f'"{self.store.schema}".{self.table}'

    async def claim(self, tx: PostgresTransaction, consumer: str, message_id: str) -> bool:
        """Insert the inbox row in `tx`; `False` if the message was processed already.

        Raises:
            ConfigurationError: If `consumer` or `message_id` cannot be stored.
            EventStoreUnavailableError: If PostgreSQL fails.
        """
        check_text("consumer", consumer)
        check_text("message_id", message_id)
        statement = (
            f"INSERT INTO {self._name} (consumer, message_id) VALUES (%s, %s) "  # noqa: S608 - checked identifiers
            "ON CONFLICT DO NOTHING"
        ).encode()

        def run(conn: psycopg.Connection[Any]) -> bool:
            return conn.execute(statement, (consumer, message_id)).rowcount == 1

        return await tx.run_sync(run)
