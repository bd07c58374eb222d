"""The stored event envelope, snapshots, and the payload serializer."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any, Protocol, final, runtime_checkable

import attrs

from meshkit._errors import ConfigurationError
from meshkit._validate import count, instance_of, optional, require

__all__ = ["MAX_PAYLOAD_DEPTH", "Event", "JSONSerializer", "Serializer", "Snapshot", "utc_now"]

MAX_PAYLOAD_DEPTH = 100
"""How deep `JSONSerializer` lets containers nest in a payload (the payload itself is 1).

Python's `json` recurses once per level and fails with `RecursionError` near a thousand levels
(sooner on a deeper call stack), so a fixed, lower limit makes the outcome the same wherever
the payload is written or read."""

# Built once: `json.dumps` with non-default options builds a new encoder on every call.
# allow_nan=False: NaN and infinities are not JSON; PostgreSQL's jsonb and other readers
# refuse them, so they are refused on the way in.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def utc_now() -> dt.datetime:
    """Return the current time as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


def _aware(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    try:
        ok = isinstance(value, dt.datetime) and value.utcoffset() is not None
    except (TypeError, ValueError) as exc:  # a tzinfo whose offset Python refuses
        raise ConfigurationError(attribute.name, value, str(exc)) from exc
    require(ok, attribute.name, value, "must be an aware datetime")


_MAPPING = instance_of(Mapping)
_UUID = instance_of(uuid.UUID)


@attrs.frozen(kw_only=True)
class Event:
    """One event in a stream, as an event store keeps it.

    Attributes:
        stream_id: The stream (usually one aggregate instance) the event belongs to.
        version: Its 1-based position in that stream; gapless.
        type: The registered type name the payload decodes as.
        data: The JSON-compatible payload.
        schema_version: The payload's schema version, for upcasting (>= 1).
        event_id: Unique id; appending the same ids again is a no-op (idempotent append).
        timestamp: When the event was recorded (aware UTC).
        correlation_id: The id of the request or process that led to it, if any.
        causation_id: The id of the message or event that caused it, if any.
        position: Its position in the store's global log; `None` until stored.
    """

    stream_id: str = attrs.field(validator=instance_of(str))
    version: int = attrs.field(validator=count(1))
    type: str = attrs.field(validator=instance_of(str))
    data: Mapping[str, Any] = attrs.field(factory=dict, validator=_MAPPING)
    schema_version: int = attrs.field(default=1, validator=count(1))
    event_id: uuid.UUID = attrs.field(factory=uuid.uuid4, validator=_UUID)
    timestamp: dt.datetime = attrs.field(factory=utc_now, validator=_aware)
    correlation_id: uuid.UUID | None = attrs.field(default=None, validator=optional(_UUID))
    causation_id: uuid.UUID | None = attrs.field(default=None, validator=optional(_UUID))
    position: int | None = attrs.field(default=None, validator=optional(instance_of(int)))


@attrs.frozen(kw_only=True)
class Snapshot:
    """An aggregate's state as of a stream version, to load without replaying everything.

    Attributes:
        stream_id: The aggregate's stream.
        version: The stream version the state reflects.
        type: The aggregate's type name.
        state: The JSON-compatible state.
        schema_version: The state's schema marker; a snapshot whose marker differs from the
            aggregate class's current one is stale and ignored.
        timestamp: When it was taken.
    """

    stream_id: str = attrs.field(validator=instance_of(str))
    version: int = attrs.field(validator=count(1))
    type: str = attrs.field(validator=instance_of(str))
    state: Mapping[str, Any] = attrs.field(factory=dict, validator=_MAPPING)
    schema_version: int = attrs.field(default=1, validator=count(1))
    timestamp: dt.datetime = attrs.field(factory=utc_now, validator=_aware)


@runtime_checkable
class Serializer(Protocol):
    """Turns an event payload (or snapshot state) into bytes and back."""

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        """Encode a payload."""
        ...

    def loads(self, raw: bytes) -> dict[str, Any]:
        """Decode a payload (raise `ValueError` on corrupt input)."""
        ...


@final
@attrs.frozen
class JSONSerializer:
    """The default serializer: compact UTF-8 JSON."""

    def dumps(self, data: Mapping[str, Any]) -> bytes:
        """Encode `data` as compact, strict JSON.

        Raises:
            ValueError: For NaN or an infinity, a lone surrogate, or containers nested deeper
                than `MAX_PAYLOAD_DEPTH`.
            TypeError: For a value JSON cannot represent.
        """
        try:
            text = _ENCODER.encode(data)
        except RecursionError:  # far too deep: the C encoder gave up at the recursion limit
            raise ValueError(_TOO_DEEP) from None
        # Nesting is at most the number of brackets: only a payload with many needs the walk.
        if text.count("{") + text.count("[") > MAX_PAYLOAD_DEPTH:
            _check_depth(data)
        return text.encode()

    def loads(self, raw: bytes) -> dict[str, Any]:
        """Decode strict JSON; raise `ValueError` unless it is a JSON object."""
        try:
            value = _DECODER.decode(raw.decode())
        except RecursionError:
            msg = "JSON nested too deeply to decode"
            raise ValueError(msg) from None
        if not isinstance(value, dict):
            msg = f"expected a JSON object, got {type(value).__name__}"
            raise ValueError(msg)  # noqa: TRY004 - a corrupt payload is a value problem
        return value


def _refuse_constant(name: str) -> object:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


# Built once, as _ENCODER is: json.loads with an option builds a decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_TOO_DEEP = f"nested deeper than {MAX_PAYLOAD_DEPTH} levels"


def _check_depth(data: object) -> None:
    """Raise `ValueError` if containers nest deeper than `MAX_PAYLOAD_DEPTH` (no recursion)."""
    # Anything but a dict, list or tuple is no container to JSON (the encoder reports it).
    pending: list[tuple[Any, int]] = [(data, 1)] if isinstance(data, dict | list | tuple) else []
    while pending:
        value, depth = pending.pop()
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, dict | list | tuple):
                if depth == MAX_PAYLOAD_DEPTH:
                    raise ValueError(_TOO_DEEP)
                pending.append((child, depth + 1))
