"""The SQLite lease statements (see `_lease.py`), run with a store connection in a thread.

Each statement runs alone in autocommit mode, so it is its own transaction and takes
SQLite's write lock for the database file: two processes' compare-and-swaps are serialized,
and the loser's `WHERE` no longer matches. The fence runs inside the checkpoint transaction,
which `BEGIN IMMEDIATE` already holds the write lock for, until its commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

if TYPE_CHECKING:
    import sqlite3

__all__ = ["SQLiteLeaseSQL"]

_CREATE = """
CREATE TABLE IF NOT EXISTS meshkit_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token INTEGER NOT NULL,
    beat INTEGER NOT NULL,
    duration REAL NOT NULL
)
"""
_READ = "SELECT holder, token, beat, duration FROM meshkit_leases WHERE name = ?"
_INSERT = (
    "INSERT INTO meshkit_leases (name, holder, token, beat, duration) VALUES (?, ?, 1, 0, ?) "
    "ON CONFLICT (name) DO NOTHING"
)
_TAKE = (
    "UPDATE meshkit_leases SET holder = ?, token = token + 1, beat = 0, duration = ? "
    "WHERE name = ? AND holder = ? AND token = ? AND beat = ?"
)
_BEAT = "UPDATE meshkit_leases SET beat = beat + 1 WHERE name = ? AND holder = ? AND token = ?"
_RELEASE = (
    "UPDATE meshkit_leases SET holder = '', beat = beat + 1 "
    "WHERE name = ? AND holder = ? AND token = ?"
)


@final
class SQLiteLeaseSQL:
    """The lease statements of the SQLite store (`?` placeholders)."""

    read = _READ
    insert = _INSERT
    take = _TAKE
    beat = _BEAT
    release = _RELEASE

    def create(self, conn: sqlite3.Connection) -> None:
        """Create the lease table if it does not exist."""
        conn.execute(_CREATE)

    def execute(
        self, conn: sqlite3.Connection, statement: str, params: tuple[Any, ...]
    ) -> sqlite3.Cursor:
        """Run one statement in autocommit mode (SQLite transactions are serializable)."""
        return conn.execute(statement, params)
