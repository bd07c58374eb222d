"""How an event travels on a bus: a metadata mapping plus the serialized payload.

The Redis publisher of `meshkit.eventsourcing` writes the metadata as stream entry fields;
the NATS publisher writes it as one JSON line before the payload in the message body. Both
decode through `event_from_meta`, and anything wrong with the bytes becomes a decode error
text (the message is dead-lettered), never an exception escaping into the consumer loop.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import TYPE_CHECKING, Any

from meshkit.eventsourcing import Event, Serializer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["decode", "decode_envelope", "encode_envelope", "event_from_meta"]

_DECODE_ERRORS = (KeyError, ValueError, TypeError, RecursionError, OverflowError, AttributeError)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def _optional_uuid(meta: Mapping[str, Any], key: str) -> uuid.UUID | None:
    value = meta.get(key)
    return None if value is None else uuid.UUID(str(value))


def event_from_meta(meta: Mapping[str, Any], data: bytes, serializer: Serializer) -> Event:
    """Rebuild an event from its metadata and serialized payload.

    Raises:
        ValueError: (or KeyError, TypeError...) If something is missing or malformed;
            `decode` turns these into a reason.
    """
    position = meta.get("position")
    return Event(
        stream_id=str(meta["stream_id"]),
        version=int(meta["version"]),
        type=str(meta["type"]),
        data=serializer.loads(data),
        schema_version=int(meta["schema_version"]),
        event_id=uuid.UUID(str(meta["event_id"])),
        timestamp=dt.datetime.fromisoformat(str(meta["timestamp"])),
        correlation_id=_optional_uuid(meta, "correlation_id"),
        causation_id=_optional_uuid(meta, "causation_id"),
        position=None if position is None else int(position),
    )


def encode_envelope(event: Event, serializer: Serializer) -> bytes:
    """Return the message body: the metadata as one ASCII JSON line, then the payload."""
    meta: dict[str, Any] = {
        "event_id": str(event.event_id),
        "stream_id": event.stream_id,
        "version": event.version,
        "type": event.type,
        "schema_version": event.schema_version,
        "timestamp": event.timestamp.isoformat(),
    }
    if event.position is not None:
        meta["position"] = event.position
    if event.correlation_id is not None:
        meta["correlation_id"] = str(event.correlation_id)
    if event.causation_id is not None:
        meta["causation_id"] = str(event.causation_id)
    return _ENCODER.encode(meta).encode() + b"\n" + serializer.dumps(event.data)


def decode_envelope(body: bytes, serializer: Serializer) -> Event:
    """Decode a body written by `encode_envelope` (raises on malformed input)."""
    head, newline, data = body.partition(b"\n")
    if not newline:
        msg = "no metadata line"
        raise ValueError(msg)
    meta = json.loads(head)
    if not isinstance(meta, dict):
        msg = "the metadata line is not a JSON object"
        raise TypeError(msg)
    return event_from_meta(meta, data, serializer)


def decode(function: Callable[..., Event], *args: Any) -> tuple[Event | None, str | None]:  # noqa: ANN401 - forwarded
    """Call a decoder; return `(event, None)`, or `(None, reason)` if the input is bad."""
    try:
        return function(*args), None
    except _DECODE_ERRORS as exc:
        return None, f"{type(exc).__name__}: {exc}"
