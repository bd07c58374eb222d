"""Argument checks of the in-memory store (the SQL backends share the same rules)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeGuard, cast

from meshkit._errors import ConfigurationError
from meshkit._validate import require
from meshkit.eventsourcing._event import Event

__all__ = [
    "check_append",
    "check_limit",
    "check_name",
    "check_position",
    "check_read",
    "check_stream_id",
]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_position(field: str, value: object) -> None:
    """Require a global position: an int >= 0.

    Raises:
        ConfigurationError: Naming `field` and `value` otherwise.
    """
    require(_is_int(value) and value >= 0, field, value, "must be an int >= 0")


def check_limit(limit: object) -> None:
    """Require `None` or an int >= 1.

    Raises:
        ConfigurationError: Otherwise.
    """
    if limit is not None:
        require(_is_int(limit) and limit >= 1, "limit", limit, "must be None or an int >= 1")


def check_name(name: object) -> None:
    """Require a non-empty str (a checkpoint or subscription name).

    Raises:
        ConfigurationError: Otherwise.
    """
    require(isinstance(name, str) and name != "", "name", name, "must be a non-empty str")


def check_stream_id(stream_id: object) -> None:
    """Require a stream id to look up: a str (an unknown one reads as empty).

    Raises:
        ConfigurationError: Otherwise.
    """
    require(isinstance(stream_id, str), "stream_id", stream_id, "must be a str")


def check_read(stream_id: object, from_version: object, limit: object) -> None:
    """Check the arguments of `EventStore.read`.

    Raises:
        ConfigurationError: If `stream_id` is not a str, `from_version` not an int, or
            `limit` neither `None` nor an int >= 1.
    """
    check_stream_id(stream_id)
    require(_is_int(from_version), "from_version", from_version, "must be an int")
    check_limit(limit)


def check_append(stream_id: object, events: Sequence[Event], expected_version: object) -> None:
    """Check the arguments of `EventStore.append` before anything is written.

    Raises:
        ConfigurationError: If `expected_version` is negative or not an int, `events` is
            not a sequence or is empty, an event belongs to another stream or has the wrong
            version, or two events share an id.
    """
    require(isinstance(stream_id, str) and stream_id != "", "stream_id", stream_id, "non-empty")
    if not (_is_int(expected_version) and expected_version >= 0):
        raise ConfigurationError("expected_version", expected_version, "must be an int >= 0")
    if type(events) is not list and not isinstance(events, Sequence):
        raise ConfigurationError("events", events, "must be a sequence (a list) of Event")
    require(len(events) > 0, "events", events, "must not be empty")
    want = expected_version
    for event in events:
        want += 1
        if type(event) is not Event or event.stream_id != stream_id or event.version != want:
            _reject(event, stream_id, want)
    if len(events) > 1:
        ids = {event.event_id for event in events}
        require(len(ids) == len(events), "event_id", events, "event ids must be unique")


def _reject(event: object, stream_id: object, want: int) -> None:
    require(isinstance(event, Event), "events", event, "must hold Event objects")
    checked = cast("Event", event)
    require(checked.stream_id == stream_id, "event.stream_id", checked.stream_id, "must match")
    require(checked.version == want, "event.version", checked.version, f"expected {want}")
