"""Code the SQLite and PostgreSQL event stores share: row codecs, error mapping, waking."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel

from meshkit._errors import (
    DuplicateEventIdError,
    EventDecodeError,
    EventSourcingError,
    EventStoreCorruptError,
    EventStoreUnavailableError,
    VersionConflictError,
)
from meshkit.eventsourcing._checks import MAX_INT64, encode_payload, to_utc
from meshkit.eventsourcing._event import Event, Snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

    from meshkit._clock import Clock
    from meshkit.eventsourcing._event import Serializer

__all__ = [
    "EventRow",
    "Wakeup",
    "decode_event",
    "decode_snapshot",
    "duplicate_id",
    "encode_events",
    "encode_snapshot",
    "resolve_mismatch",
    "run_statement",
    "stored_checkpoint",
    "stored_version",
    "transaction_scope",
    "translate",
    "translate_errors",
]

EventRow = tuple[str, int, str, str, int, bytes, str, str | None, str | None]
"""An event as stored: stream_id, version, event_id, type, schema_version, data, timestamp,
correlation_id, causation_id (ids and timestamp as text; the timestamp as ISO 8601 UTC)."""


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def encode_events(events: Sequence[Event], serializer: Serializer) -> list[EventRow]:
    """Turn (checked) events into rows, serializing payloads.

    Raises:
        ConfigurationError: If a payload cannot be serialized.
    """
    return [
        (
            event.stream_id,
            event.version,
            str(event.event_id),
            event.type,
            event.schema_version,
            encode_payload(serializer, "event.data", event.data),
            to_utc("event.timestamp", event.timestamp).isoformat(),
            _text(event.correlation_id),
            _text(event.causation_id),
        )
        for event in events
    ]


def _uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _optional_uuid(value: object) -> uuid.UUID | None:
    return None if value is None else _uuid(value)


def _datetime(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC)


def _payload(raw: object, serializer: Serializer) -> dict[str, Any]:
    # A corrupt SQLite cell may hold an int: bytes(10**12) would allocate a terabyte.
    if not isinstance(raw, bytes | bytearray | memoryview):
        msg = f"the payload is stored as {type(raw).__name__}, not bytes"
        raise TypeError(msg)
    return serializer.loads(bytes(raw))


_CORRUPT = (TypeError, ValueError, OverflowError, RecursionError)
"""What decoding a corrupt row raises (ConfigurationError, from Event's checks, is a ValueError)."""


def _decode_error(stream_id: object, version: object, type_: object, exc: BaseException) -> Any:  # noqa: ANN401
    shown = version if isinstance(version, int) else str(version)
    return EventDecodeError(str(stream_id), shown, str(type_), str(exc) or type(exc).__name__)


def decode_event(row: Sequence[Any], serializer: Serializer) -> Event:
    """Turn a stored row (position first, then the `EventRow` fields) back into an event.

    Raises:
        EventDecodeError: If any field of the row is corrupt, naming stream, version and type.
    """
    position, stream_id, version, event_id, type_, schema_version = row[:6]
    data, timestamp, correlation_id, causation_id = row[6:10]
    try:
        return Event(
            stream_id=stream_id,
            version=version,
            type=type_,
            data=_payload(data, serializer),
            schema_version=schema_version,
            event_id=_uuid(event_id),
            timestamp=_datetime(timestamp),
            correlation_id=_optional_uuid(correlation_id),
            causation_id=_optional_uuid(causation_id),
            position=position,
        )
    except _CORRUPT as exc:
        raise _decode_error(stream_id, version, type_, exc) from exc


def stored_version(stream_id: str, value: object, type_: object) -> int:
    """Return a stream version read from the database, checking it is an int.

    Raises:
        EventDecodeError: If the stored version is corrupt (`type_` is that row's type).
    """
    if type(value) is not int:
        reason = f"its version is stored as {type(value).__name__}, not an integer"
        raise _decode_error(stream_id, value, type_, TypeError(reason))
    return value


def stored_checkpoint(backend: str, name: str, value: object) -> int:
    """Return a checkpoint position read from the database, checking it is one.

    A corrupt cell (text, a float, a negative number) would otherwise escape as a raw
    `ValueError` from `int()`, or resume a subscription from a position no read accepts.

    Raises:
        EventStoreCorruptError: If the stored value is not an int in `[0, MAX_INT64]`.
    """
    if type(value) is not int or not 0 <= value <= MAX_INT64:
        reason = f"checkpoint {name!r} holds {type(value).__name__} {str(value)[:100]!r}"
        raise EventStoreCorruptError(backend, "load_checkpoint", reason)
    return value


def encode_snapshot(snapshot: Snapshot, serializer: Serializer) -> tuple[Any, ...]:
    """Turn a (checked) snapshot into a row.

    The row holds stream_id, version, type, schema_version, state and timestamp.

    Raises:
        ConfigurationError: If its state cannot be serialized.
    """
    return (
        snapshot.stream_id,
        snapshot.version,
        snapshot.type,
        snapshot.schema_version,
        encode_payload(serializer, "snapshot.state", snapshot.state),
        to_utc("snapshot.timestamp", snapshot.timestamp).isoformat(),
    )


def decode_snapshot(row: Sequence[Any], serializer: Serializer) -> Snapshot:
    """Turn a stored snapshot row back into a `Snapshot`.

    Raises:
        EventDecodeError: If the row is corrupt (naming the stream, version and type).
    """
    stream_id, version, type_, schema_version, state, timestamp = row
    try:
        return Snapshot(
            stream_id=stream_id,
            version=version,
            type=type_,
            schema_version=schema_version,
            state=_payload(state, serializer),
            timestamp=_datetime(timestamp),
        )
    except _CORRUPT as exc:
        raise _decode_error(stream_id, version, type_, exc) from exc


def resolve_mismatch(
    stream_id: str,
    events: Sequence[Event],
    expected_version: int,
    current: int,
    stored_ids: Sequence[str],
) -> int:
    """Decide an append whose stream is not where the writer expected.

    `stored_ids` are the event ids stored at versions `expected_version + 1, ...` (as many
    as there are events). When they are exactly the ids being appended, the append already
    happened: it is a no-op returning the version it reached.

    Returns:
        The stream version the earlier, identical append reached.

    Raises:
        VersionConflictError: Otherwise.
    """
    if list(stored_ids) == [str(event.event_id) for event in events]:
        return expected_version + len(events)
    raise VersionConflictError(stream_id, expected_version, current)


def duplicate_id(stream_id: str, holders: Sequence[Sequence[Any]]) -> DuplicateEventIdError:
    """Return the error for an append to `stream_id` whose event ids are stored already.

    `holders` are `(event_id, stream_id)` rows of the ids found stored: the first is named.
    """
    event_id, holder = holders[0]
    return DuplicateEventIdError(_uuid(event_id), str(holder), stream_id)


_DAMAGED_SQLITE = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)
_DAMAGED_SQLSTATE = {"XX001", "XX002"}  # data_corrupted, index_corrupted
# Python's sqlite3 raises OperationalError (no SQLite result code) for a TEXT cell that is not
# UTF-8: damaged data that no retry mends, not an outage.
_UNDECODABLE_TEXT = "Could not decode to UTF-8"


def translate(backend: str, operation: str, exc: BaseException) -> EventSourcingError:
    """Return the meshkit error for a driver error, chained to it.

    A damaged database (SQLite's "malformed" and "not a database" and text that is not
    UTF-8, PostgreSQL's `data_corrupted`/`index_corrupted`) is an `EventStoreCorruptError`,
    which no retry can mend; anything else an `EventStoreUnavailableError`.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    damaged = (
        (isinstance(code, int) and code & 0xFF in _DAMAGED_SQLITE)
        or getattr(exc, "sqlstate", None) in _DAMAGED_SQLSTATE
        or str(exc).startswith(_UNDECODABLE_TEXT)
    )
    kind = EventStoreCorruptError if damaged else EventStoreUnavailableError
    error = kind(backend, operation, str(exc))
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def translate_errors(
    backend: str, operation: str, driver_error: type[BaseException]
) -> Iterator[None]:
    """Translate the driver's exceptions raised inside the block (see `translate`).

    Raises:
        EventStoreUnavailableError: In place of a `driver_error`, chained with `from`.
        EventStoreCorruptError: In place of a `driver_error` that says the file is damaged.
    """
    try:
        yield
    except driver_error as exc:
        raise translate(backend, operation, exc) from exc


def run_statement(conn: Any, statement: Any, params: Sequence[Any]) -> list[Any]:  # noqa: ANN401 - a DB-API connection and its statement
    """Run one statement on a DB-API connection; return its rows (none for a write)."""
    cursor = conn.execute(statement, params)
    return cursor.fetchall() if cursor.description is not None else []


@contextlib.asynccontextmanager
async def transaction_scope(
    backend: str,
    driver_error: type[BaseException],
    run: Callable[[Callable[[], object]], Awaitable[object]],
    conn: Any,  # noqa: ANN401 - a sqlite3 or psycopg connection
    begin: str,
) -> AsyncIterator[None]:
    """Begin a transaction on `conn`; commit it if the block exits normally, else roll back.

    `run(function)` calls `function()` in a worker thread. The commit and the rollback are
    shielded from cancellation. A failed commit is rolled back too (SQLite may keep the
    transaction, and its write lock, open after a failed COMMIT); a failing rollback is
    suppressed, so the block's (or the commit's) error is the one raised.

    Raises:
        EventStoreUnavailableError: If the driver fails to begin or to commit.
        EventStoreCorruptError: If the database is damaged.
    """
    with translate_errors(backend, "transaction", driver_error):
        await run(lambda: conn.execute(begin))
    try:
        yield
        with anyio.CancelScope(shield=True), translate_errors(backend, "commit", driver_error):
            await run(lambda: conn.execute("COMMIT"))
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(driver_error):
            await run(conn.rollback)
        raise


@final
class Wakeup:
    """Wakes `wait_for_new` callers when this process appended, else after a poll interval."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None
        self._loop: object = None

    def arm(self) -> anyio.Event:
        """Return the event the next `fire()` sets (take it before checking the store).

        An event armed in an earlier event loop (a store outliving an `anyio.run`) is
        replaced: its loop is gone, and waiting on it in another would fail.
        """
        loop = anyio.lowlevel.current_token().native_token
        if self._event is None or self._loop is not loop:
            self._event = anyio.Event()
            self._loop = loop
        return self._event

    def fire(self) -> None:
        """Wake every armed waiter."""
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait_until(
        self, check: Callable[[], Awaitable[bool]], clock: Clock, interval: float
    ) -> None:
        """Return once `check()` is true, re-checking on every `fire()` or after `interval`.

        The event is armed before each check, so a `fire()` during the check is not missed.
        """
        while True:
            event = self.arm()
            if await check():
                return
            await self.wait(event, clock, interval)

    @staticmethod
    async def wait(event: anyio.Event, clock: Clock, interval: float) -> None:
        """Wait until `event` is set or `interval` has passed on `clock`, whichever is first."""
        async with anyio.create_task_group() as group:

            async def tick() -> None:
                await clock.sleep(interval)
                group.cancel_scope.cancel()

            group.start_soon(tick)
            await event.wait()
            group.cancel_scope.cancel()
