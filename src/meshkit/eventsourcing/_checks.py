"""The argument checks every event store runs, so that all backends refuse the same input.

Memory, SQLite and PostgreSQL apply these very functions before anything is written, so code
tested on memory cannot store what production refuses. The limits are the tightest any
backend has, made the rule everywhere (and documented in `docs/eventsourcing-backends.md`):

- versions, positions and limits fit a signed 64-bit integer (`MAX_INT64`);
- a `schema_version` fits PostgreSQL's `INTEGER` (`MAX_SCHEMA_VERSION`);
- stream ids, event types and checkpoint names are text UTF-8 can encode, without NUL (which
  PostgreSQL's `TEXT` cannot hold), of at most `MAX_KEY_BYTES` UTF-8 bytes (a PostgreSQL
  b-tree entry holds at most 2,704 bytes, and stream ids and names are indexed);
- a timestamp stays a valid datetime once normalised to UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, TypeGuard, cast

from meshkit._errors import ConfigurationError
from meshkit._validate import check, count, require, text_problem
from meshkit.eventsourcing._event import Event, Snapshot

if TYPE_CHECKING:
    from meshkit.eventsourcing._event import Serializer

__all__ = [
    "MAX_INT64",
    "MAX_KEY_BYTES",
    "MAX_SCHEMA_VERSION",
    "check_append",
    "check_checkpoint",
    "check_limit",
    "check_name",
    "check_position",
    "check_read",
    "check_snapshot",
    "check_stream_id",
    "encode_payload",
    "to_utc",
]

MAX_INT64: Final = 2**63 - 1
"""The largest version, position or limit a store takes (a signed 64-bit column)."""

MAX_SCHEMA_VERSION: Final = 2**31 - 1
"""The largest `schema_version` a store takes (PostgreSQL's `INTEGER`)."""

MAX_KEY_BYTES: Final = 1024
"""The most UTF-8 bytes of a stream id, an event type or a checkpoint name."""


_POSITION = count(0, MAX_INT64)
_INT64 = count(-MAX_INT64 - 1, MAX_INT64)
_LIMIT = count(1, MAX_INT64)
_SCHEMA_VERSION = count(1, MAX_SCHEMA_VERSION)


def _is_int(value: object) -> TypeGuard[int]:
    return type(value) is int


def check_key(field: str, value: object, *, empty: bool = False) -> None:
    """Require storable text of at most `MAX_KEY_BYTES` UTF-8 bytes (non-empty unless `empty`).

    Raises:
        ConfigurationError: Naming `field` and `value` otherwise.
    """
    # The common case first: ASCII (str.isascii() is O(1)) has no surrogate, 1 byte a char.
    if type(value) is str and value.isascii() and len(value) <= MAX_KEY_BYTES:  # noqa: SIM102
        if (value or empty) and "\x00" not in value:
            return
    problem = text_problem(value)
    if problem is None and not value and not empty:
        problem = "must be a non-empty str"
    # 4 bytes per character at most: only a long text needs encoding to be measured.
    text = cast("str", value)
    if problem is None and len(text) * 4 > MAX_KEY_BYTES and len(text.encode()) > MAX_KEY_BYTES:
        problem = f"must be at most {MAX_KEY_BYTES} UTF-8 bytes"
    if problem is not None:
        raise ConfigurationError(field, value, problem)


def check_position(field: str, value: object) -> None:
    """Require a global position: an int in `[0, MAX_INT64]`.

    Raises:
        ConfigurationError: Naming `field` and `value` otherwise.
    """
    check(field, value, _POSITION)


def check_limit(limit: object) -> None:
    """Require `None` or an int in `[1, MAX_INT64]`.

    Raises:
        ConfigurationError: Otherwise.
    """
    if limit is not None:
        check("limit", limit, _LIMIT)


def check_name(name: object) -> None:
    """Require a checkpoint or subscription name (see `check_key`).

    Raises:
        ConfigurationError: Otherwise.
    """
    check_key("name", name)


def check_stream_id(stream_id: object) -> None:
    """Require a stream id to look up (an unknown one, or `""`, reads as empty).

    Raises:
        ConfigurationError: Otherwise.
    """
    check_key("stream_id", stream_id, empty=True)


def check_read(stream_id: object, from_version: object, limit: object) -> None:
    """Check the arguments of `EventStore.read`.

    Raises:
        ConfigurationError: Naming the bad argument.
    """
    check_stream_id(stream_id)
    check("from_version", from_version, _INT64)
    check_limit(limit)


def check_checkpoint(name: object, position: object) -> None:
    """Check the arguments of `save_checkpoint`.

    Raises:
        ConfigurationError: Naming the bad argument.
    """
    check_name(name)
    check_position("position", position)


def to_utc(field: str, stamp: dt.datetime) -> dt.datetime:
    """Return `stamp` in UTC.

    Raises:
        ConfigurationError: If it falls outside the datetime range once in UTC.
    """
    if stamp.tzinfo is dt.UTC:  # already UTC (utc_now's): nothing to convert
        return stamp
    try:
        return stamp.astimezone(dt.UTC)
    except OverflowError as exc:
        raise ConfigurationError(field, stamp, "is out of range once normalised to UTC") from exc


def encode_payload(serializer: Serializer, field: str, data: object) -> bytes:
    """Serialize a payload or a snapshot's state.

    Raises:
        ConfigurationError: Naming `field` if it cannot be serialized (the default JSON
            serializer refuses NaN, infinities and nesting deeper than its limit), or if the
            serializer returns something other than bytes.
    """
    try:
        raw: object = serializer.dumps(data)  # type: ignore[arg-type]
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigurationError(field, data, str(exc) or type(exc).__name__) from exc
    if type(raw) is bytes:
        return raw
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    # A buggy custom serializer: a str or int would be stored as such by SQLite (and text
    # coerced by psycopg), leaving a row no read can decode; memory would fail raw.
    reason = f"the serializer returned {type(raw).__name__}, not bytes"
    raise ConfigurationError(field, data, reason)


def check_snapshot(snapshot: object) -> Snapshot:
    """Require a `Snapshot` whose fields every backend can store.

    Raises:
        ConfigurationError: Naming the bad field.
    """
    require(isinstance(snapshot, Snapshot), "snapshot", snapshot, "must be a Snapshot")
    checked = cast("Snapshot", snapshot)
    check_key("snapshot.stream_id", checked.stream_id)
    check_key("snapshot.type", checked.type)
    check("snapshot.version", checked.version, _POSITION)
    check("snapshot.schema_version", checked.schema_version, _SCHEMA_VERSION)
    to_utc("snapshot.timestamp", checked.timestamp)
    return checked


def check_append(stream_id: object, events: Sequence[Event], expected_version: object) -> None:
    """Check the arguments of `EventStore.append` before anything is written.

    The timestamps and payloads are checked where they are converted (`to_utc`,
    `encode_payload`), which every store does before it writes.

    Raises:
        ConfigurationError: Naming the bad argument: a bad stream id, an `expected_version`
            out of `[0, MAX_INT64]`, `events` not a non-empty sequence of `Event`, an event of
            another stream, with the wrong version, an unstorable type or schema version, two
            events sharing an id, or a last version beyond `MAX_INT64`.
    """
    check_key("stream_id", stream_id)
    if type(expected_version) is not int or not 0 <= expected_version <= MAX_INT64:
        check("expected_version", expected_version, _POSITION)
    if type(events) is not list and not isinstance(events, Sequence):
        raise ConfigurationError("events", events, "must be a sequence (a list) of Event")
    require(len(events) > 0, "events", events, "must not be empty")
    want = cast("int", expected_version)
    for event in events:
        want += 1
        if type(event) is not Event or event.stream_id != stream_id or event.version != want:
            _reject(event, stream_id, want)
        _check_event(event)
    if want > MAX_INT64:  # named for the argument that pushes the versions past 64 bits
        raise ConfigurationError("expected_version", expected_version, "too close to 2**63")
    if len(events) > 1:
        ids = {event.event_id for event in events}
        require(len(ids) == len(events), "event_id", events, "event ids must be unique")


def _check_event(event: Event) -> None:
    check_key("event.type", event.type)
    if not (_is_int(event.schema_version) and event.schema_version <= MAX_SCHEMA_VERSION):
        check("event.schema_version", event.schema_version, _SCHEMA_VERSION)


def _reject(event: object, stream_id: object, want: int) -> None:
    require(isinstance(event, Event), "events", event, "must hold Event objects")
    checked = cast("Event", event)
    require(checked.stream_id == stream_id, "event.stream_id", checked.stream_id, "must match")
    require(checked.version == want, "event.version", checked.version, f"expected {want}")
