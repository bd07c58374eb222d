"""The PostgreSQL lease statements (see `_lease.py`), run with a pooled connection.

Imported lazily by `PostgresEventStore.leases()`, so `import meshkit` needs no psycopg.

Each statement runs alone in a READ COMMITTED transaction, whatever the server's default
(as the store's own transactions do). Under READ COMMITTED, an `UPDATE`
that finds its row changed by a transaction that committed meanwhile re-checks its `WHERE`
on the new row version, so of two racing compare-and-swaps only one matches. The fence's
`UPDATE` inside the checkpoint transaction keeps the row locked until that transaction ends:
a takeover waits for the commit, then finds the beat moved and fails; a takeover that
committed first makes the fence match no row, and the batch rolls back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from psycopg import sql

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresLeaseSQL"]

LEASE_SCHEMA_LOCK_KEY = 0x6D65_7368_6B69_7403  # "meshkit" + 3: creating the lease table

_CREATE = """
CREATE TABLE IF NOT EXISTS {schema}.meshkit_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    beat BIGINT NOT NULL,
    duration DOUBLE PRECISION NOT NULL
)
"""
_READ = "SELECT holder, token, beat, duration FROM {schema}.meshkit_leases WHERE name = %s"
_INSERT = (
    "INSERT INTO {schema}.meshkit_leases (name, holder, token, beat, duration) "
    "VALUES (%s, %s, 1, 0, %s) ON CONFLICT (name) DO NOTHING"
)
_TAKE = (
    "UPDATE {schema}.meshkit_leases SET holder = %s, token = token + 1, beat = 0, "
    "duration = %s WHERE name = %s AND holder = %s AND token = %s AND beat = %s"
)
_BEAT = (
    "UPDATE {schema}.meshkit_leases SET beat = beat + 1 "
    "WHERE name = %s AND holder = %s AND token = %s"
)
_RELEASE = (
    "UPDATE {schema}.meshkit_leases SET holder = '', beat = beat + 1 "
    "WHERE name = %s AND holder = %s AND token = %s"
)


@final
class PostgresLeaseSQL:
    """The lease statements of the PostgreSQL store (`%s` placeholders), bound to its schema."""

    def __init__(self, schema: str) -> None:
        def bind(text: str) -> sql.Composed:
            return sql.SQL(text).format(schema=sql.Identifier(schema))

        self._create = bind(_CREATE)
        self.read = bind(_READ)
        self.insert = bind(_INSERT)
        self.take = bind(_TAKE)
        self.beat = bind(_BEAT)
        self.release = bind(_RELEASE)

    def create(self, conn: psycopg.Connection[Any]) -> None:
        """Create the lease table if it does not exist (serialized across processes)."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEASE_SCHEMA_LOCK_KEY,))
            conn.execute(self._create)

    def execute(
        self, conn: psycopg.Connection[Any], statement: sql.Composed, params: tuple[Any, ...]
    ) -> psycopg.Cursor[Any]:
        """Run one statement in a READ COMMITTED transaction of its own.

        Under REPEATABLE READ or SERIALIZABLE, a compare-and-swap that waited for another
        transaction's commit on the row would fail with a serialization error instead of
        re-checking the row: a renewal after the runner's own fenced commit, every time.
        """
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            return conn.execute(statement, params)
