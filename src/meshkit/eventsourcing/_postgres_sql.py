"""The PostgreSQL event store's blocking half: schema and the SQL it runs in worker threads.

Imported lazily by `meshkit.eventsourcing._postgres`, so `import meshkit` needs no psycopg.

An append is one statement, a call of the `meshkit_append` function the store creates: it
checks the stream version and inserts, and the statement's implicit transaction commits.

How the global log stays gapless for readers while writers run in parallel: every row
records the id of the transaction that wrote it (`tx_id`, `pg_current_xact_id()`), and a
writer takes its transaction id and its positions inside one short critical section (a
session advisory lock held only around the `INSERT`, released before `COMMIT`), so position
order and transaction-id order agree. A reader returns only rows whose transaction is older
than its snapshot's `xmin`: every transaction below `xmin` has finished, so no row can later
appear below a position the reader has already passed.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg import sql

from meshkit._errors import ConfigurationError
from meshkit.eventsourcing._sql_common import duplicate_id, resolve_mismatch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshkit.eventsourcing._event import Event
    from meshkit.eventsourcing._sql_common import EventRow

__all__ = ["DRIVER_ERROR", "Statements", "append", "check_dsn", "init_schema"]

DRIVER_ERROR = psycopg.Error
LOCK_KEY = 0x6D65_7368_6B69_7401  # "meshkit" + 1: the writers' ordering lock
SCHEMA_LOCK_KEY = 0x6D65_7368_6B69_7402

_DDL = """
CREATE TABLE IF NOT EXISTS {schema}.meshkit_events (
    position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    event_id UUID NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    data BYTEA NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    correlation_id UUID,
    causation_id UUID,
    tx_id XID8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT meshkit_events_stream_version UNIQUE (stream_id, version),
    CONSTRAINT meshkit_events_event_id UNIQUE (event_id)
);
CREATE TABLE IF NOT EXISTS {schema}.meshkit_snapshots (
    stream_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    state BYTEA NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.meshkit_checkpoints (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
)
"""

_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.meshkit_append(
    p_stream TEXT, p_expected BIGINT, p_ids UUID[], p_types TEXT[], p_schema_versions INTEGER[],
    p_data BYTEA[], p_timestamps TIMESTAMPTZ[], p_correlation UUID[], p_causation UUID[]
) RETURNS BIGINT LANGUAGE plpgsql AS $body$
DECLARE
    current_version BIGINT;
BEGIN
    SELECT coalesce(max(version), 0) INTO current_version
        FROM {schema}.meshkit_events WHERE stream_id = p_stream;
    IF current_version <> p_expected THEN
        RETURN current_version;
    END IF;
    PERFORM pg_advisory_lock({lock});
    INSERT INTO {schema}.meshkit_events (stream_id, version, event_id, type, schema_version,
            data, timestamp, correlation_id, causation_id)
        SELECT p_stream, p_expected + u.ord, u.e, u.t, u.sv, u.d, u.ts, u.c, u.ca
        FROM unnest(p_ids, p_types, p_schema_versions, p_data, p_timestamps, p_correlation,
                    p_causation) WITH ORDINALITY AS u (e, t, sv, d, ts, c, ca, ord);
    PERFORM pg_advisory_unlock({lock});
    RETURN -1;
END
$body$
"""

_COLUMNS = (
    "position, stream_id, version, event_id, type, schema_version, data, timestamp, "
    "correlation_id, causation_id"
)
_VISIBLE = "tx_id < pg_snapshot_xmin(pg_current_snapshot())"


class Statements:
    """Every statement of the store, bound to its schema."""

    def __init__(self, schema: str) -> None:
        def bind(text: str) -> sql.Composed:
            return sql.SQL(text).format(schema=sql.Identifier(schema))

        self.ddl = [bind(part) for part in _DDL.split(";")]
        self.ddl.append(
            sql.SQL(_FUNCTION).format(schema=sql.Identifier(schema), lock=sql.Literal(LOCK_KEY))
        )
        self.append = bind(
            "SELECT {schema}.meshkit_append(%s, %s, %s::uuid[], %s::text[], %s::integer[], "
            "%s::bytea[], %s::timestamptz[], %s::uuid[], %s::uuid[])"
        )
        self.unlock = sql.SQL("SELECT pg_advisory_unlock_all()")
        self.current_version = bind(
            "SELECT coalesce(max(version), 0) FROM {schema}.meshkit_events WHERE stream_id = %s"
        )
        self.type_at = bind(
            "SELECT type FROM {schema}.meshkit_events WHERE stream_id = %s AND version = %s"
        )
        self.holder = bind(
            "SELECT event_id, stream_id FROM {schema}.meshkit_events "
            "WHERE event_id = ANY(%s::uuid[]) LIMIT 1"
        )
        self.stored_ids = bind(
            "SELECT event_id::text FROM {schema}.meshkit_events "
            "WHERE stream_id = %s AND version > %s AND version <= %s ORDER BY version"
        )
        self.read = bind(
            f"SELECT {_COLUMNS} FROM {{schema}}.meshkit_events "  # noqa: S608 - constant text
            "WHERE stream_id = %s AND version >= %s ORDER BY version LIMIT %s"
        )
        self.read_all = bind(
            f"SELECT {_COLUMNS} FROM {{schema}}.meshkit_events "  # noqa: S608 - constant text
            f"WHERE position > %s AND {_VISIBLE} ORDER BY position LIMIT %s"
        )
        self.has_new = bind(
            "SELECT EXISTS (SELECT 1 FROM {schema}.meshkit_events "  # noqa: S608 - constant text
            f"WHERE position > %s AND {_VISIBLE})"
        )
        self.last_position = bind(
            f"SELECT coalesce(max(position), 0) FROM {{schema}}.meshkit_events WHERE {_VISIBLE}"  # noqa: S608 - constant text
        )
        self.save_snapshot = bind(
            "INSERT INTO {schema}.meshkit_snapshots VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, "
            "type = EXCLUDED.type, schema_version = EXCLUDED.schema_version, "
            "state = EXCLUDED.state, timestamp = EXCLUDED.timestamp"
        )
        self.load_snapshot = bind(
            "SELECT stream_id, version, type, schema_version, state, timestamp "
            "FROM {schema}.meshkit_snapshots WHERE stream_id = %s"
        )
        self.save_checkpoint = bind(
            "INSERT INTO {schema}.meshkit_checkpoints (name, position) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE "
            "SET position = GREATEST(meshkit_checkpoints.position, EXCLUDED.position)"
        )
        self.load_checkpoint = bind(
            "SELECT position FROM {schema}.meshkit_checkpoints WHERE name = %s"
        )


_SECRETS = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)|(://[^:/@]*:)[^@]*(@)")


def check_dsn(dsn: str) -> None:
    """Parse `dsn` as libpq would, so a malformed one fails at once, not at pool timeout.

    Raises:
        ConfigurationError: Naming `dsn` (its password masked) and libpq's reason.
    """
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        masked = _SECRETS.sub(lambda m: f"{m[1] or m[3]}***{m[4] or ''}", dsn)
        raise ConfigurationError("dsn", masked, str(exc).strip()) from exc


def init_schema(conn: psycopg.Connection[Any], statements: Statements) -> None:
    """Create the tables if they do not exist (serialized, so concurrent starts are safe)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        for statement in statements.ddl:
            conn.execute(statement)


def fetch(
    conn: psycopg.Connection[Any], statement: sql.Composed, params: Sequence[Any]
) -> list[Any]:
    """Run a query and return all its rows."""
    return conn.execute(statement, params).fetchall()


def append(  # noqa: PLR0917 - one append's parts, passed on by the store's _call
    conn: psycopg.Connection[Any],
    statements: Statements,
    stream_id: str,
    events: Sequence[Event],
    expected_version: int,
    rows: list[EventRow],
) -> int:
    """Append `rows` (the encoded `events`) in one transaction; return the new version.

    Raises:
        VersionConflictError: If the stream is not at `expected_version`.
        DuplicateEventIdError: If an event id is already stored elsewhere.
    """
    last = expected_version + len(rows)
    columns = list(zip(*rows, strict=True))
    params = [stream_id, expected_version, *(list(column) for column in columns[2:])]
    try:
        current = fetch(conn, statements.append, params)[0][0]
    except psycopg.errors.UniqueViolation as exc:
        conn.execute(statements.unlock)
        current = fetch(conn, statements.current_version, (stream_id,))[0][0]
        if exc.diag.constraint_name != "meshkit_events_stream_version":  # id stored elsewhere
            holders = fetch(conn, statements.holder, ([row[2] for row in rows],))
            raise duplicate_id(stream_id, holders) from exc
    except BaseException:
        conn.execute(statements.unlock)
        raise
    else:
        if current < 0:
            return last
    stored = _stored_ids(conn, statements, stream_id, expected_version, last)
    return resolve_mismatch(stream_id, events, expected_version, current, stored)


def _stored_ids(
    conn: psycopg.Connection[Any], statements: Statements, stream_id: str, first: int, last: int
) -> list[str]:
    return [row[0] for row in fetch(conn, statements.stored_ids, (stream_id, first, last))]
