"""Code the SQLite and PostgreSQL event stores share: validation, row codecs, error mapping."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel
import attrs

from meshkit._errors import (
    ConfigurationError,
    EventDecodeError,
    EventStoreUnavailableError,
    VersionConflictError,
)
from meshkit._validate import require
from meshkit.eventsourcing._checks import (
    check_append,
    check_limit,
    check_name,
    check_position,
    check_read,
)
from meshkit.eventsourcing._event import Event, Snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

    from meshkit._clock import Clock
    from meshkit.eventsourcing._event import Serializer

__all__ = [
    "MAX_INT64",
    "EventRow",
    "Wakeup",
    "check_append_args",
    "check_checkpoint_args",
    "check_int64",
    "check_position_args",
    "check_read_args",
    "decode_event",
    "decode_snapshot",
    "encode_events",
    "encode_snapshot",
    "resolve_mismatch",
    "transaction_scope",
    "translate_errors",
]

EventRow = tuple[str, int, str, str, int, bytes, str, str | None, str | None]
"""An event as stored: stream_id, version, event_id, type, schema_version, data, timestamp,
correlation_id, causation_id (ids and timestamp as text; the timestamp as ISO 8601 UTC)."""


MAX_INT64 = 2**63 - 1
"""The largest version, position or limit the databases store (a signed 64-bit integer)."""


def check_int64(field: str, *values: int | None) -> None:
    """Require ints (already checked to be ints, or `None`) that fit a 64-bit column.

    Raises:
        ConfigurationError: Naming `field` and the first value out of range; the driver
            would otherwise fail with a raw OverflowError (SQLite: for a whole group commit).
    """
    for value in values:
        if value is not None and not -MAX_INT64 - 1 <= value <= MAX_INT64:
            raise ConfigurationError(field, value, "must fit in 64 bits (|value| < 2**63)")


def check_append_args(stream_id: str, events: Sequence[Event], expected_version: int) -> None:
    """Check an append's arguments (`check_append`, and versions that fit the column).

    Raises:
        ConfigurationError: Naming the bad field and value.
    """
    check_append(stream_id, events, expected_version)
    check_int64("expected_version", expected_version + len(events))


def check_read_args(stream_id: str, from_version: int, limit: int | None) -> None:
    """Check `read`'s arguments (`check_read`, and numbers that fit a 64-bit column).

    Raises:
        ConfigurationError: Naming the bad field and value.
    """
    check_read(stream_id, from_version, limit)
    check_int64("from_version", from_version)
    check_int64("limit", limit)


def check_position_args(field: str, position: int, limit: int | None = None) -> None:
    """Check a global position (and a `read_all` limit) that must fit a 64-bit column.

    Raises:
        ConfigurationError: Naming the bad field and value.
    """
    check_position(field, position)
    check_limit(limit)
    check_int64(field, position)
    check_int64("limit", limit)


def check_checkpoint_args(name: str, position: int) -> None:
    """Check `save_checkpoint`'s arguments.

    Raises:
        ConfigurationError: If `name` is empty or `position` is not a 64-bit int >= 0.
    """
    check_name(name)
    check_position_args("position", position)


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def encode_events(events: Sequence[Event], serializer: Serializer) -> list[EventRow]:
    """Turn events into rows, serializing payloads.

    Raises:
        ConfigurationError: If a payload cannot be serialized.
    """
    rows: list[EventRow] = []
    for event in events:
        try:
            data = serializer.dumps(event.data)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError("event.data", event.data, str(exc)) from exc
        stamp = event.timestamp.astimezone(dt.UTC).isoformat()
        rows.append(
            (
                event.stream_id,
                event.version,
                str(event.event_id),
                event.type,
                event.schema_version,
                data,
                stamp,
                _text(event.correlation_id),
                _text(event.causation_id),
            )
        )
    return rows


def _uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _optional_uuid(value: object) -> uuid.UUID | None:
    return None if value is None else _uuid(value)


def _datetime(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return dt.datetime.fromisoformat(str(value)).astimezone(dt.UTC)


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
            data=serializer.loads(bytes(data)),
            schema_version=schema_version,
            event_id=_uuid(event_id),
            timestamp=_datetime(timestamp),
            correlation_id=_optional_uuid(correlation_id),
            causation_id=_optional_uuid(causation_id),
            position=position,
        )
    except (TypeError, ValueError) as exc:
        raise EventDecodeError(str(stream_id), version, str(type_), str(exc)) from exc


def encode_snapshot(snapshot: Snapshot, serializer: Serializer) -> tuple[Any, ...]:
    """Turn a snapshot into a row: stream_id, version, type, schema_version, state, timestamp.

    Raises:
        ConfigurationError: If `snapshot` is not a Snapshot, its version does not fit in 64
            bits, or its state cannot be serialized.
    """
    require(isinstance(snapshot, Snapshot), "snapshot", snapshot, "must be a Snapshot")
    check_int64("snapshot.version", snapshot.version)
    check_int64("snapshot.schema_version", snapshot.schema_version)
    try:
        state = serializer.dumps(snapshot.state)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError("snapshot.state", snapshot.state, str(exc)) from exc
    stamp = snapshot.timestamp.astimezone(dt.UTC).isoformat()
    return (
        snapshot.stream_id,
        snapshot.version,
        snapshot.type,
        snapshot.schema_version,
        state,
        stamp,
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
            state=serializer.loads(bytes(state)),
            timestamp=_datetime(timestamp),
        )
    except (TypeError, ValueError) as exc:
        raise EventDecodeError(str(stream_id), version, str(type_), str(exc)) from exc


def resolve_mismatch(
    stream_id: str,
    events: Sequence[Event],
    expected_version: int,
    current: int,
    stored_ids: Sequence[str],
) -> int:
    """Decide an append whose stream is not where the writer expected, or whose ids clash.

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


@contextlib.contextmanager
def translate_errors(
    backend: str, operation: str, driver_error: type[BaseException]
) -> Iterator[None]:
    """Translate the driver's exceptions raised inside the block.

    Raises:
        EventStoreUnavailableError: In place of any `driver_error`, chained with `from`.
    """
    try:
        yield
    except driver_error as exc:
        raise EventStoreUnavailableError(backend, operation, str(exc)) from exc


@contextlib.asynccontextmanager
async def transaction_scope(
    backend: str,
    driver_error: type[BaseException],
    run: Callable[[Callable[[], object]], Awaitable[object]],
    conn: Any,  # noqa: ANN401 - a sqlite3 or psycopg connection
    begin: str | bytes,
) -> AsyncIterator[None]:
    """Begin a transaction on `conn`; commit it if the block exits normally, else roll back.

    `run(function)` calls `function()` in a worker thread. The commit and the rollback are
    shielded from cancellation. A failed commit is rolled back too (SQLite may keep the
    transaction, and its write lock, open after a failed COMMIT); a failing rollback is
    suppressed, so the block's (or the commit's) error is the one raised.

    Raises:
        EventStoreUnavailableError: If the driver fails to begin or to commit.
    """
    with translate_errors(backend, "transaction", driver_error):
        await run(lambda: conn.execute(begin))
    try:
        yield
        with anyio.CancelScope(shield=True), translate_errors(backend, "commit", driver_error):
            await run(lambda: conn.execute(b"COMMIT" if isinstance(begin, bytes) else "COMMIT"))
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(driver_error):
            await run(conn.rollback)
        raise


@final
@attrs.define(eq=False)
class Wakeup:
    """Wakes `wait_for_new` callers when this process appended, else after a poll interval."""

    _event: anyio.Event | None = attrs.field(init=False, default=None)
    _loop: object = attrs.field(init=False, default=None)

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
