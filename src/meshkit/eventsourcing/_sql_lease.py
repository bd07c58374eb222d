"""The lease store of the SQL event stores: one implementation, a dialect's statements.

Each statement runs through the store's own `call(operation, function, *args)` (a pooled
connection in a worker thread, driver errors translated), and the fence through the
checkpoint transaction's `run_sync`, so it commits or rolls back with the checkpoint. The
table is created on first use. See `_lease.py` for the protocol and the reasoning.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol, final

import attrs

from meshkit._errors import ConfigurationError, LeaseLostError
from meshkit.eventsourcing._checks import check_name
from meshkit.eventsourcing._lease import LeaseRecord

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["LeaseSQL", "SQLLeaseStore"]


class LeaseSQL(Protocol):
    """A dialect's lease statements (run with `connection.execute(statement, params)`).

    `read` selects `holder, token, beat, duration` by name; `insert` creates the record
    (name, owner, duration) unless one exists; `take` swaps (owner, duration) in where
    (name, holder, token, beat) still match; `beat` and `release` bump the beat (and
    `release` clears the holder) where (name, holder, token) match.
    """

    read: Any
    insert: Any
    take: Any
    beat: Any
    release: Any

    def create(self, conn: Any) -> None:  # noqa: ANN401 - a sqlite3 or psycopg connection
        """Create the lease table if it does not exist."""
        ...

    def execute(self, conn: Any, statement: Any, params: tuple[Any, ...]) -> Any:  # noqa: ANN401 - a driver connection, its statement and cursor
        """Run one statement outside the checkpoint transactions; return its cursor."""
        ...


def _read(conn: Any, sql: LeaseSQL, name: str) -> LeaseRecord | None:  # noqa: ANN401 - a driver connection
    row = sql.execute(conn, sql.read, (name,)).fetchone()
    if row is None:
        return None
    holder, token, beat, duration = row
    # SQLite keeps any value in a REAL column: a damaged duration reads as NaN, which
    # standbys wait out for their own duration (see LeaseCore) instead of crashing on it.
    if not isinstance(duration, int | float) or isinstance(duration, bool):
        duration = math.nan
    return LeaseRecord(holder=holder, token=token, beat=beat, duration=duration)


def _acquire(
    conn: Any,  # noqa: ANN401 - a driver connection
    sql: LeaseSQL,
    name: str,
    seen: LeaseRecord | None,
    wanted: LeaseRecord,
) -> bool:
    if seen is None:
        cursor = sql.execute(conn, sql.insert, (name, wanted.holder, wanted.duration))
    else:
        params = (wanted.holder, wanted.duration, name, seen.holder, seen.token, seen.beat)
        cursor = sql.execute(conn, sql.take, params)
    return bool(cursor.rowcount == 1)


def _beat(conn: Any, sql: LeaseSQL, statement: Any, params: tuple[str, str, int]) -> bool:  # noqa: ANN401 - a driver connection and its statement
    return bool(sql.execute(conn, statement, params).rowcount == 1)


@final
@attrs.define(eq=False, kw_only=True)
class SQLLeaseStore:
    """The `LeaseStore` of a SQL event store, made by its `leases()` method.

    Attributes:
        store: The event store that made it: the fence runs in its transactions only.
        backend: `"sqlite"` or `"postgres"` (for error messages).
        locking_transactions: Whether the store's checkpoint transactions keep every other
            writer out until they end (SQLite's `BEGIN IMMEDIATE`), see `LeaseStore`.
        sql: The backend's lease statements.
        call: The store's `call(operation, function, *args)`, which runs
            `function(connection, *args)` in a worker thread and translates driver errors.
        ready: Opens the store if it is not open yet.
    """

    store: object
    backend: str
    locking_transactions: bool
    sql: LeaseSQL
    call: Callable[..., Awaitable[Any]]
    ready: Callable[[], Awaitable[object]]
    _created: bool = attrs.field(init=False, default=False)

    async def read_lease(self, name: str) -> LeaseRecord | None:
        """Return the lease of `name`, or `None`.

        Raises:
            ConfigurationError: If `name` is not a non-empty str.
            EventStoreUnavailableError: If the database fails.
        """
        check_name(name)
        record: LeaseRecord | None = await self._run("read_lease", _read, self.sql, name)
        return record

    async def acquire_lease(
        self, name: str, seen: LeaseRecord | None, owner: str, duration: float
    ) -> LeaseRecord | None:
        """Take the lease if it is still exactly `seen`; return the new record, else `None`.

        Raises:
            ConfigurationError: If `name` is not a non-empty str.
            EventStoreUnavailableError: If the database fails.
        """
        check_name(name)
        token = 1 if seen is None else seen.token + 1
        wanted = LeaseRecord(holder=owner, token=token, beat=0, duration=duration)
        taken = await self._run("acquire_lease", _acquire, self.sql, name, seen, wanted)
        return wanted if taken else None

    async def renew_lease(self, name: str, owner: str, token: int) -> bool:
        """Bump the beat if `owner` still holds `token`; return whether it does.

        Raises:
            EventStoreUnavailableError: If the database fails.
        """
        params = (name, owner, token)
        return bool(await self._run("renew_lease", _beat, self.sql, self.sql.beat, params))

    async def release_lease(self, name: str, owner: str, token: int) -> None:
        """Give the lease up if `owner` still holds `token`.

        Raises:
            EventStoreUnavailableError: If the database fails.
        """
        params = (name, owner, token)
        await self._run("release_lease", _beat, self.sql, self.sql.release, params)

    async def fence(self, tx: object, name: str, owner: str, token: int) -> None:
        """Bump the beat inside the checkpoint transaction `tx`, or raise `LeaseLostError`.

        Raises:
            ConfigurationError: If `tx` is not a transaction of a SQL store.
            LeaseLostError: If `owner` no longer holds `token`; the caller's transaction
                must roll back.
            EventStoreUnavailableError: If the database fails.
        """
        run_sync = getattr(tx, "run_sync", None)
        if run_sync is None:
            reason = (
                f"a {self.backend} lease needs the checkpoints of the same {self.backend} store"
            )
            raise ConfigurationError("leases", self, reason)
        statement, params = self.sql.beat, (name, owner, token)
        if not await run_sync(lambda conn: conn.execute(statement, params).rowcount == 1):
            raise LeaseLostError(name, owner, token)

    async def _run(self, operation: str, function: Callable[..., Any], *args: Any) -> Any:  # noqa: ANN401 - forwarded
        await self.ready()
        if not self._created:
            await self.call("create_leases", self.sql.create)
            self._created = True
        return await self.call(operation, function, *args)
