"""The SQLite event store's blocking half: schema, connections and the SQL it runs in threads."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from meshkit._errors import ConfigurationError, DuplicateEventIdError, MeshkitError
from meshkit.eventsourcing._sql_common import (
    duplicate_id,
    resolve_mismatch,
    stored_version,
    translate,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshkit.eventsourcing._sqlite_group import AppendRequest

__all__ = ["Statements", "connect", "init_schema", "open_writer", "write_batch"]

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

_COLUMNS = (
    "position, stream_id, version, event_id, type, schema_version, data, timestamp, "
    "correlation_id, causation_id"
)


class Statements:
    """Every statement of the store, named after the operation that runs it (`?` placeholders).

    A limit of `NULL` means none (`coalesce(?, -1)`: SQLite's "no limit" is -1).
    """

    read = (
        f"SELECT {_COLUMNS} FROM meshkit_events WHERE stream_id = ? AND version >= ? "  # noqa: S608 - constant text
        "ORDER BY version LIMIT coalesce(?, -1)"
    )
    read_all = (
        f"SELECT {_COLUMNS} FROM meshkit_events WHERE position > ? "  # noqa: S608 - constant text
        "ORDER BY position LIMIT coalesce(?, -1)"
    )
    insert = (
        "INSERT INTO meshkit_events (stream_id, version, event_id, type, schema_version, data, "
        "timestamp, correlation_id, causation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    current_version = "SELECT coalesce(max(version), 0) FROM meshkit_events WHERE stream_id = ?"
    type_at = "SELECT type FROM meshkit_events WHERE stream_id = ? AND version = ?"
    holder = (  # not counting the rows the failing append itself has just inserted
        "SELECT event_id, stream_id FROM meshkit_events WHERE event_id = ? "
        "AND (stream_id <> ? OR version <= ?)"
    )
    stored_ids = (
        "SELECT event_id FROM meshkit_events WHERE stream_id = ? AND version > ? "
        "AND version <= ? ORDER BY version"
    )
    last_position = "SELECT coalesce(max(position), 0) FROM meshkit_events"
    has_new = "SELECT EXISTS (SELECT 1 FROM meshkit_events WHERE position > ?)"
    save_snapshot = "INSERT OR REPLACE INTO meshkit_snapshots VALUES (?, ?, ?, ?, ?, ?)"
    load_snapshot = (
        "SELECT stream_id, version, type, schema_version, state, timestamp "
        "FROM meshkit_snapshots WHERE stream_id = ?"
    )
    save_checkpoint = (
        "INSERT INTO meshkit_checkpoints (name, position) VALUES (?, ?) ON CONFLICT (name) "
        "DO UPDATE SET position = max(position, excluded.position)"
    )
    load_checkpoint = "SELECT position FROM meshkit_checkpoints WHERE name = ?"


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


def open_writer(path: str, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    """Open the write connection and create the schema (closing the connection on failure)."""
    writer = connect(path, busy_timeout, synchronous)
    try:
        init_schema(writer)
    except BaseException:
        writer.close()
        raise
    return writer


def _current_version(conn: sqlite3.Connection, stream_id: str) -> int:
    value = conn.execute(Statements.current_version, (stream_id,)).fetchone()[0]
    if type(value) is int:
        return value
    found = conn.execute(Statements.type_at, (stream_id, value)).fetchone()
    return stored_version(stream_id, value, found[0] if found else "?")


def _duplicate(conn: sqlite3.Connection, request: AppendRequest) -> DuplicateEventIdError:
    """Name the first of the request's event ids that another row already holds."""
    own = (request.stream_id, request.expected_version)
    ids = [row[2] for row in request.rows]
    holders = [conn.execute(Statements.holder, (id_, *own)).fetchone() for id_ in ids]
    return duplicate_id(request.stream_id, [holder for holder in holders if holder])


def _append_one(conn: sqlite3.Connection, request: AppendRequest) -> int:
    stream_id, expected = request.stream_id, request.expected_version
    current = _current_version(conn, stream_id)
    last = expected + len(request.rows)
    if current != expected:
        rows = conn.execute(Statements.stored_ids, (stream_id, expected, last)).fetchall()
        return resolve_mismatch(
            stream_id, request.events, expected, current, [row[0] for row in rows]
        )
    try:
        conn.executemany(Statements.insert, request.rows)
    except sqlite3.IntegrityError as exc:
        if "meshkit_events.event_id" not in str(exc):
            raise
        raise _duplicate(conn, request) from exc
    return last


def _own_error(exc: Exception, request: AppendRequest) -> BaseException:
    """Return the error one append's caller gets for `exc` (the others of its batch go on)."""
    if isinstance(exc, sqlite3.Error):
        return translate("sqlite", "append", exc)
    if isinstance(exc, OverflowError):  # a number beyond SQLite's 64 bits the checks missed
        error = ConfigurationError("events", request.events, str(exc))
        error.__cause__ = exc
        return error
    return exc


def _attempt(conn: sqlite3.Connection, request: AppendRequest) -> None:
    """Run one append and record its outcome; only a failure that ended the transaction raises.

    Any other error of this append (a conflict, bad input the boundary checks missed, a
    failed statement) is its own: a failed statement was undone by SQLite, and the caller
    undoes a multi-row append's savepoint.
    """
    try:
        request.result = _append_one(conn, request)
    except Exception as exc:
        if isinstance(exc, sqlite3.Error) and not conn.in_transaction:
            raise
        request.error = exc if isinstance(exc, MeshkitError) else _own_error(exc, request)


def _append_in_batch(conn: sqlite3.Connection, request: AppendRequest) -> None:
    """Append one request of a batch so that its failure undoes only its own writes.

    A single-row append needs no savepoint: SQLite undoes a failed statement by itself.
    """
    if len(request.rows) == 1:
        _attempt(conn, request)
        return
    conn.execute("SAVEPOINT meshkit_append")
    _attempt(conn, request)
    if request.error is not None:
        conn.execute("ROLLBACK TO meshkit_append")
    conn.execute("RELEASE meshkit_append")


def write_batch(conn: sqlite3.Connection, batch: Sequence[AppendRequest]) -> None:
    """Append every request of `batch` in one transaction, each undone alone if it fails.

    A request that conflicts or fails gets its own error and leaves no trace; the others
    commit together (a batch's only request needs no savepoint: its transaction is one). If
    the transaction itself cannot begin or commit, every request gets the translated error
    and nothing is written.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for request in batch:
                if len(batch) == 1:
                    _attempt(conn, request)
                else:
                    _append_in_batch(conn, request)
            commit = len(batch) > 1 or batch[0].error is None
            conn.execute("COMMIT" if commit else "ROLLBACK")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        for request in batch:
            request.result = None
            request.error = translate("sqlite", "append", exc)
