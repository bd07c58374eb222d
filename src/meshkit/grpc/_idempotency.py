"""Idempotency stores: a call repeated with the same `idempotency-key` gets the stored answer.

The decision is one small state machine per (method, key): absent -> RUNNING (the first call
claims it) -> DONE with the serialized answer (or back to absent when the call failed, so the
client may retry it). A second call finding RUNNING is refused with `IdempotencyConflictError`
(answered as ABORTED: meshkit does not hold a call open waiting for another); one finding DONE
gets the stored bytes. A RUNNING claim older than `lease` seconds is taken over (its server
died). Entries older than `ttl` seconds are forgotten. The three backends share this contract
(tests/grpc_mesh/test_grpc_idempotency.py runs one suite over all of them).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any, Protocol, final, runtime_checkable

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._errors import IdempotencyConflictError, IdempotencyStoreError
from meshkit._validate import finite, gt, instance_of

__all__ = [
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "PostgresIdempotencyStore",
    "SQLiteIdempotencyStore",
]

_RUNNING = b""  # the answer column of a claim not yet answered (answers are never empty: see
# `_answer`, which prefixes one byte, so an empty protobuf message is told apart)


def _answer(payload: bytes) -> bytes:
    return b"\x01" + payload


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where a server remembers the answers of calls that carried an idempotency key."""

    blocking: bool
    """Whether the methods block on I/O (the aio server then calls them in a worker thread)."""

    def begin(self, method: str, key: str) -> bytes | None:
        """Claim (method, key); return None if claimed now, or the stored answer.

        Raises:
            IdempotencyConflictError: If another call holds the claim.
            IdempotencyStoreError: If the store's database failed.
        """
        ...

    def complete(self, method: str, key: str, payload: bytes) -> None:
        """Store the answer of a claimed call.

        Raises:
            IdempotencyStoreError: If the store's database failed.
        """
        ...

    def abandon(self, method: str, key: str) -> None:
        """Release a claim whose call failed, so that a retry runs again.

        Raises:
            IdempotencyStoreError: If the store's database failed.
        """
        ...


@attrs.frozen
class _Entry:
    answer: bytes
    at: float


@final
@attrs.define(eq=False)
class MemoryIdempotencyStore:
    """An in-process store (one server process; lost on restart).

    Attributes:
        ttl: Seconds an answer is kept.
        lease: Seconds after which a claim never answered may be taken over.
        clock: The clock of `ttl` and `lease`.
    """

    ttl: float = attrs.field(default=86_400.0, validator=[gt(0), finite])
    lease: float = attrs.field(default=60.0, validator=[gt(0), finite])
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    blocking: bool = attrs.field(default=False, init=False)
    _entries: dict[tuple[str, str], _Entry] = attrs.field(init=False, factory=dict)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    def begin(self, method: str, key: str) -> bytes | None:
        """Claim (method, key), or return its answer.

        Raises:
            IdempotencyConflictError: If another call holds the claim.
        """
        now = self.clock.now()
        with self._lock:
            entry = self._entries.get((method, key))
            if entry is not None and _live(entry.answer, entry.at, now, self.ttl, self.lease):
                if entry.answer == _RUNNING:
                    raise IdempotencyConflictError(key)
                return entry.answer[1:]
            self._entries[method, key] = _Entry(_RUNNING, now)
            return None

    def complete(self, method: str, key: str, payload: bytes) -> None:
        """Store the answer."""
        with self._lock:
            self._entries[method, key] = _Entry(_answer(payload), self.clock.now())

    def abandon(self, method: str, key: str) -> None:
        """Release the claim."""
        with self._lock:
            self._entries.pop((method, key), None)


def _live(answer: bytes, at: float, now: float, ttl: float, lease: float) -> bool:
    """Return whether a stored row still counts: an answer within ttl, a claim within lease."""
    return now - at < (lease if answer == _RUNNING else ttl)


_SQLITE_SCHEMA = """CREATE TABLE IF NOT EXISTS meshkit_idempotency (
    method TEXT NOT NULL, key TEXT NOT NULL, answer BLOB NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (method, key))"""


@final
@attrs.define(eq=False)
class SQLiteIdempotencyStore:
    """A store in a SQLite file (one host; survives restarts).

    Attributes:
        path: The database file (`":memory:"` for a private in-memory one).
        ttl: Seconds an answer is kept.
        lease: Seconds after which a claim never answered may be taken over.
        clock: The clock of `ttl` and `lease` (wall-clock-like: stored across restarts).
    """

    path: str = attrs.field(validator=instance_of(str))
    ttl: float = attrs.field(default=86_400.0, validator=[gt(0), finite])
    lease: float = attrs.field(default=60.0, validator=[gt(0), finite])
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    blocking: bool = attrs.field(default=True, init=False)
    _db: sqlite3.Connection = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    def __attrs_post_init__(self) -> None:
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute(_SQLITE_SCHEMA)
        except sqlite3.Error as exc:
            raise IdempotencyStoreError("sqlite", str(exc)) from exc

    def _run(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise IdempotencyStoreError("sqlite", str(exc)) from exc

    def begin(self, method: str, key: str) -> bytes | None:
        """Claim (method, key), or return its answer.

        Raises:
            IdempotencyConflictError: If another call holds the claim.
            IdempotencyStoreError: If SQLite failed.
        """
        now = self.clock.now()
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    row = self._db.execute(
                        "SELECT answer, at FROM meshkit_idempotency WHERE method=? AND key=?",
                        (method, key),
                    ).fetchone()
                    if row is None or not _live(row[0], row[1], now, self.ttl, self.lease):
                        self._db.execute(
                            "INSERT OR REPLACE INTO meshkit_idempotency VALUES (?, ?, ?, ?)",
                            (method, key, _RUNNING, now),
                        )
                        row = None
                finally:
                    self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise IdempotencyStoreError("sqlite", str(exc)) from exc
        return _decide(row, key)

    def complete(self, method: str, key: str, payload: bytes) -> None:
        """Store the answer.

        Raises:
            IdempotencyStoreError: If SQLite failed.
        """
        self._run(
            "UPDATE meshkit_idempotency SET answer=?, at=? WHERE method=? AND key=?",
            (_answer(payload), self.clock.now(), method, key),
        )

    def abandon(self, method: str, key: str) -> None:
        """Release the claim.

        Raises:
            IdempotencyStoreError: If SQLite failed.
        """
        self._run("DELETE FROM meshkit_idempotency WHERE method=? AND key=?", (method, key))

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()


def _decide(row: Any, key: str) -> bytes | None:  # noqa: ANN401 - a database row
    if row is None:
        return None
    answer = bytes(row[0])
    if answer == _RUNNING:
        raise IdempotencyConflictError(key)
    return answer[1:]


_PG_SCHEMA = """CREATE TABLE IF NOT EXISTS {table} (
    method TEXT NOT NULL, key TEXT NOT NULL, answer BYTEA NOT NULL,
    at DOUBLE PRECISION NOT NULL, PRIMARY KEY (method, key))"""
# One statement claims or reads: insert a claim, or take over a dead one; else read the row.
_PG_BEGIN = """
WITH claimed AS (
  INSERT INTO {table} AS t VALUES (%(m)s, %(k)s, ''::bytea, %(now)s)
  ON CONFLICT (method, key) DO UPDATE SET answer = ''::bytea, at = %(now)s
  WHERE (t.answer = ''::bytea AND %(now)s - t.at >= %(lease)s)
     OR (t.answer <> ''::bytea AND %(now)s - t.at >= %(ttl)s)
  RETURNING 1)
SELECT answer, at, EXISTS (SELECT 1 FROM claimed) FROM {table} WHERE method=%(m)s AND key=%(k)s
"""


@final
@attrs.define(eq=False)
class PostgresIdempotencyStore:
    """A store in PostgreSQL, shared by every replica of a service.

    Attributes:
        dsn: The connection string.
        table: The table's name (a plain identifier).
        ttl: Seconds an answer is kept.
        lease: Seconds after which a claim never answered may be taken over.
        clock: The clock of `ttl` and `lease` (must agree across replicas: wall time).
    """

    dsn: str = attrs.field(validator=instance_of(str), repr=False)
    table: str = attrs.field(default="meshkit_idempotency", validator=instance_of(str))
    ttl: float = attrs.field(default=86_400.0, validator=[gt(0), finite])
    lease: float = attrs.field(default=60.0, validator=[gt(0), finite])
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    blocking: bool = attrs.field(default=True, init=False)
    _conn: Any = attrs.field(init=False, default=None)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    def __attrs_post_init__(self) -> None:
        from meshkit._validate import require  # noqa: PLC0415

        require(
            self.table.isidentifier() and self.table.isascii(),
            "table",
            self.table,
            "must be a plain identifier",
        )
        self._execute(_PG_SCHEMA.format(table=self.table), {})

    def _execute(self, sql: str, args: dict[str, Any]) -> Any:  # noqa: ANN401
        import psycopg  # noqa: PLC0415 - optional dependency

        try:
            with self._lock:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.dsn, autocommit=True)
                return (
                    self._conn.execute(sql, args).fetchall()
                    if "SELECT" in sql
                    else self._conn.execute(sql, args)
                )
        except psycopg.Error as exc:
            raise IdempotencyStoreError("postgres", str(exc)) from exc

    def begin(self, method: str, key: str) -> bytes | None:
        """Claim (method, key), or return its answer.

        Raises:
            IdempotencyConflictError: If another call holds the claim.
            IdempotencyStoreError: If PostgreSQL failed.
        """
        args = {
            "m": method,
            "k": key,
            "now": self.clock.now(),
            "lease": self.lease,
            "ttl": self.ttl,
        }
        rows = self._execute(_PG_BEGIN.format(table=self.table), args)
        if not rows or rows[0][2]:
            return None
        return _decide(rows[0], key)

    def complete(self, method: str, key: str, payload: bytes) -> None:
        """Store the answer.

        Raises:
            IdempotencyStoreError: If PostgreSQL failed.
        """
        sql = f"UPDATE {self.table} SET answer=%(a)s, at=%(now)s WHERE method=%(m)s AND key=%(k)s"  # noqa: S608 - checked identifier
        self._execute(sql, {"a": _answer(payload), "now": self.clock.now(), "m": method, "k": key})

    def abandon(self, method: str, key: str) -> None:
        """Release the claim.

        Raises:
            IdempotencyStoreError: If PostgreSQL failed.
        """
        sql = f"DELETE FROM {self.table} WHERE method=%(m)s AND key=%(k)s"  # noqa: S608 - checked identifier
        self._execute(sql, {"m": method, "k": key})

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
