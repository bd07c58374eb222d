"""The SQLite event store's blocking half: schema, connections and the SQL it runs in threads."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from meshkit._errors import (
    ConfigurationError,
    EventStoreUnavailableError,
    MeshkitError,
    VersionConflictError,
)
from meshkit.eventsourcing._sql_common import resolve_mismatch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshkit.eventsourcing._sqlite_group import AppendRequest

__all__ = [
    "COLUMNS",
    "CURRENT_VERSION",
    "READ",
    "READ_ALL",
    "connect",
    "init_schema",
    "load_checkpoint",
    "save_checkpoint",
    "write_batch",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meshkit_events (
    position INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    data BLOB NOT NULL,
    timestamp TEXT NOT NULL,
    correlation_id TEXT,
    causation_id TEXT,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS meshkit_snapshots (
    stream_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    state BLOB NOT NULL,
    timestamp TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meshkit_checkpoints (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
"""

COLUMNS = (
    "position, stream_id, version, event_id, type, schema_version, data, timestamp, "
    "correlation_id, causation_id"
)
READ = (
    f"SELECT {COLUMNS} FROM meshkit_events WHERE stream_id = ? AND version >= ? "  # noqa: S608 - constant text
    "ORDER BY version LIMIT ?"
)
READ_ALL = f"SELECT {COLUMNS} FROM meshkit_events WHERE position > ? ORDER BY position LIMIT ?"  # noqa: S608 - constant text
INSERT = (
    "INSERT INTO meshkit_events (stream_id, version, event_id, type, schema_version, data, "
    "timestamp, correlation_id, causation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM meshkit_events WHERE stream_id = ?"
STORED_IDS = (
    "SELECT event_id FROM meshkit_events WHERE stream_id = ? AND version > ? AND version <= ? "
    "ORDER BY version"
)
SAVE_CHECKPOINT = (
    "INSERT INTO meshkit_checkpoints (name, position) VALUES (?, ?) ON CONFLICT (name) "
    "DO UPDATE SET position = max(position, excluded.position)"
)


def connect(path: str, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are begun explicitly)."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def init_schema(conn: sqlite3.Connection) -> None:
    """Switch the database to WAL and create the tables if they do not exist."""
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _append_one(conn: sqlite3.Connection, request: AppendRequest) -> int:
    stream_id, expected = request.stream_id, request.expected_version
    current: int = conn.execute(CURRENT_VERSION, (stream_id,)).fetchone()[0]
    last = expected + len(request.rows)
    if current != expected:
        rows = conn.execute(STORED_IDS, (stream_id, expected, last)).fetchall()
        return resolve_mismatch(
            stream_id, request.events, expected, current, [row[0] for row in rows]
        )
    try:
        conn.executemany(INSERT, request.rows)
    except OverflowError as exc:  # a number (e.g. a schema_version) beyond SQLite's 64 bits
        raise ConfigurationError("events", request.events, str(exc)) from exc
    except sqlite3.IntegrityError as exc:
        if "meshkit_events.event_id" not in str(exc):
            raise
        # an event id is already stored elsewhere
        raise VersionConflictError(stream_id, expected, current) from exc
    return last


def _append_in_batch(conn: sqlite3.Connection, request: AppendRequest) -> None:
    """Append one request of a batch so that its failure undoes only its own writes.

    A single-row append needs no savepoint: SQLite undoes a failed statement by itself. A
    failure that ended the whole transaction fails the whole batch.
    """
    if len(request.rows) > 1:
        _append_in_savepoint(conn, request)
        return
    try:
        request.result = _append_one(conn, request)
    except MeshkitError as exc:
        request.error = exc
    except sqlite3.Error as exc:
        if not conn.in_transaction:
            raise
        request.error = _translated(exc, "append")


def _append_in_savepoint(conn: sqlite3.Connection, request: AppendRequest) -> None:
    conn.execute("SAVEPOINT meshkit_append")
    try:
        request.result = _append_one(conn, request)
    except (MeshkitError, sqlite3.Error) as exc:
        conn.execute("ROLLBACK TO meshkit_append")
        request.error = _translated(exc, "append")
    conn.execute("RELEASE meshkit_append")


def _append_alone(conn: sqlite3.Connection, request: AppendRequest) -> bool:
    """Append a batch's only request: its transaction is its savepoint. Return success."""
    try:
        request.result = _append_one(conn, request)
    except MeshkitError as exc:
        request.error = exc
        return False
    return True


def _translated(exc: BaseException, operation: str) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        error = EventStoreUnavailableError("sqlite", operation, str(exc))
        error.__cause__ = exc
        return error
    return exc


def write_batch(conn: sqlite3.Connection, batch: Sequence[AppendRequest]) -> None:
    """Append every request of `batch` in one transaction, each in its own savepoint.

    A request that conflicts or fails is rolled back to its savepoint and gets its error; the
    others commit together. If the transaction itself cannot begin or commit, every request
    gets an `EventStoreUnavailableError` and nothing is written.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if len(batch) == 1:
                commit = _append_alone(conn, batch[0])
            else:
                for request in batch:
                    _append_in_batch(conn, request)
                commit = True
            conn.execute("COMMIT" if commit else "ROLLBACK")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        for request in batch:
            request.result = None
            request.error = _translated(exc, "append")


def save_checkpoint(conn: sqlite3.Connection, name: str, position: int) -> None:
    """Save a checkpoint on `conn` (in its current transaction, if any)."""
    conn.execute(SAVE_CHECKPOINT, (name, position))


def load_checkpoint(conn: sqlite3.Connection, name: str) -> int:
    """Return a checkpoint (0 when it has none)."""
    row = conn.execute("SELECT position FROM meshkit_checkpoints WHERE name = ?", (name,))
    found: Any = row.fetchone()
    return 0 if found is None else int(found[0])
