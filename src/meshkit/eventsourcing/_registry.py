"""Domain event classes <-> the stored `Event` envelope, with upcasting of old payloads.

Users write their events as plain frozen attrs classes and register each one under a type
name and a schema version. The registry turns an instance into the JSON payload (`data`) of
an `Event`, and back; on the way back it first runs the chain of upcasters registered for
the stored schema version (v1 -> v2 -> v3 ...), so events written years ago load into
today's classes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, final

import attrs

from meshkit._errors import ConfigurationError, EventDecodeError, UnknownEventTypeError
from meshkit._validate import require
from meshkit.eventsourcing._event import Event, utc_now

if TYPE_CHECKING:
    import datetime as dt

__all__ = ["EventRegistry", "Upcaster"]

_T = TypeVar("_T")

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the payload of schema version `n` into the payload of version `n + 1`."""


@final
@attrs.frozen
class _Entry:
    cls: type[Any]
    name: str
    version: int
    encode: Callable[[object], dict[str, Any]]
    decode: Callable[[dict[str, Any]], object]


def _attrs_encoder(cls: type[Any]) -> Callable[[object], dict[str, Any]]:
    names = tuple(field.name for field in attrs.fields(cls))

    def encode(obj: object) -> dict[str, Any]:
        return {name: getattr(obj, name) for name in names}

    return encode


def _encoder(cls: type[Any]) -> Callable[[object], dict[str, Any]]:
    custom = getattr(cls, "to_data", None)
    if custom is not None:
        return custom  # type: ignore[no-any-return]
    return _attrs_encoder(cls)


def _decoder(cls: type[Any]) -> Callable[[dict[str, Any]], object]:
    custom = getattr(cls, "from_data", None)
    if custom is not None:
        return custom  # type: ignore[no-any-return]

    def decode(data: dict[str, Any]) -> object:
        return cls(**data)

    return decode


@final
@attrs.define(eq=False)
class EventRegistry:
    """Maps domain event classes to stored type names and schema versions.

    A registered class is an attrs class (frozen, by convention) whose fields are
    JSON-compatible; or any class with a `to_data(self) -> dict` method and a
    `from_data(cls, data) -> Self` classmethod, which then do the conversion.

    Example:
        ```python
        import attrs
        from meshkit.eventsourcing import EventRegistry

        events = EventRegistry()

        @events.register("ItemAdded", version=2)
        @attrs.frozen
        class ItemAdded:
            sku: str
            quantity: int

        @events.upcaster("ItemAdded", from_version=1)
        def _default_quantity(data: dict) -> dict:
            return {**data, "quantity": 1}
        ```
    """

    _by_class: dict[type[Any], _Entry] = attrs.field(init=False, factory=dict)
    _by_name: dict[str, _Entry] = attrs.field(init=False, factory=dict)
    _upcasters: dict[tuple[str, int], Upcaster] = attrs.field(init=False, factory=dict)

    def register(
        self, name: str | None = None, *, version: int = 1
    ) -> Callable[[type[_T]], type[_T]]:
        """Return a class decorator that registers the class (see `add`).

        Raises:
            ConfigurationError: As `add` does.
        """

        def decorate(cls: type[_T]) -> type[_T]:
            self.add(cls, name, version=version)
            return cls

        return decorate

    def add(self, cls: type[Any], name: str | None = None, *, version: int = 1) -> None:
        """Register `cls` under `name` (default: the class name) at schema `version`.

        Raises:
            ConfigurationError: If the name or class is already registered, `version < 1`,
                or `cls` is neither an attrs class nor has `to_data`/`from_data`.
        """
        type_name = cls.__name__ if name is None else name
        require(type_name != "", "name", type_name, "must not be empty")
        require(
            type(version) is int and version >= 1,
            "version",
            version,
            "must be an int >= 1",
        )
        require(type_name not in self._by_name, "name", type_name, "is already registered")
        require(cls not in self._by_class, "cls", cls, "is already registered")
        custom = hasattr(cls, "to_data") and hasattr(cls, "from_data")
        require(custom or attrs.has(cls), "cls", cls, "must be an attrs class or define to_data")
        entry = _Entry(cls, type_name, version, _encoder(cls), _decoder(cls))
        self._by_class[cls] = entry
        self._by_name[type_name] = entry

    def upcaster(self, name: str, *, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Return a decorator registering `fn(data) -> data` from `from_version` to the next.

        Raises:
            ConfigurationError: If an upcaster for that type and version exists already,
                or `from_version < 1`.
        """

        def decorate(fn: Upcaster) -> Upcaster:
            self.add_upcaster(name, from_version, fn)
            return fn

        return decorate

    def add_upcaster(self, name: str, from_version: int, fn: Upcaster) -> None:
        """Register `fn` to turn payloads of `name` at `from_version` into `from_version + 1`.

        Raises:
            ConfigurationError: If one is registered already, or `from_version < 1`.
        """
        require(
            type(from_version) is int and from_version >= 1,
            "from_version",
            from_version,
            "must be an int >= 1",
        )
        key = (name, from_version)
        require(key not in self._upcasters, "from_version", from_version, "has an upcaster")
        self._upcasters[key] = fn

    def type_name(self, cls: type[Any]) -> str:
        """Return the registered type name of `cls`.

        Raises:
            ConfigurationError: If `cls` is not registered.
        """
        return self._entry_for(cls).name

    def is_registered(self, cls: type[Any]) -> bool:
        """Return whether `cls` is registered."""
        return cls in self._by_class

    def to_event(
        self,
        obj: object,
        *,
        stream_id: str,
        version: int,
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
        timestamp: dt.datetime | None = None,
        event_id: uuid.UUID | None = None,
    ) -> Event:
        """Wrap the domain event `obj` in an `Event` envelope at `stream_id`/`version`.

        A new random `event_id` is minted unless one is given.

        Raises:
            ConfigurationError: If the class of `obj` is not registered.
        """
        entry = self._entry_for(type(obj))
        return Event(
            stream_id=stream_id,
            version=version,
            type=entry.name,
            data=entry.encode(obj),
            schema_version=entry.version,
            event_id=uuid.uuid4() if event_id is None else event_id,
            timestamp=utc_now() if timestamp is None else timestamp,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )

    def decode(self, event: Event) -> object:
        """Return the domain event stored in `event`, upcast to today's schema first.

        Raises:
            UnknownEventTypeError: If `event.type` is not registered.
            EventDecodeError: If the payload is corrupt, newer than the registered schema,
                or an upcaster is missing or fails.
        """
        entry = self._by_name.get(event.type)
        if entry is None:
            raise UnknownEventTypeError(event.stream_id, event.version, event.type)
        data = event.data
        if event.schema_version != entry.version:
            data = self._upcast(event, entry)
        try:
            return entry.decode(data if isinstance(data, dict) else dict(data))
        except Exception as exc:  # user code: whatever it raises, name the event
            raise _decode_error(event, f"corrupt payload: {exc!r}") from exc

    def upcast(self, name: str, data: Mapping[str, Any], from_version: int) -> dict[str, Any]:
        """Run the upcaster chain of `name` on `data`, from `from_version` to the current one.

        Raises:
            UnknownEventTypeError: If `name` is not registered.
            EventDecodeError: As `decode` does.
        """
        probe = Event(stream_id="", version=1, type=name, data=data, schema_version=from_version)
        entry = self._by_name.get(name)
        if entry is None:
            raise UnknownEventTypeError("", 1, name)
        return self._upcast(probe, entry) if from_version != entry.version else dict(data)

    def _upcast(self, event: Event, entry: _Entry) -> dict[str, Any]:
        if event.schema_version > entry.version:
            reason = f"schema version {event.schema_version} is newer than {entry.version}"
            raise _decode_error(event, reason)
        data = dict(event.data)
        for step in range(event.schema_version, entry.version):
            fn = self._upcasters.get((entry.name, step))
            if fn is None:
                raise _decode_error(event, f"no upcaster from schema version {step}")
            try:
                data = fn(data)
            except Exception as exc:  # user code: whatever it raises, name the event
                reason = f"upcaster from version {step} failed: {exc!r}"
                raise _decode_error(event, reason) from exc
        return data

    def _entry_for(self, cls: type[Any]) -> _Entry:
        entry = self._by_class.get(cls)
        if entry is None:
            raise ConfigurationError("event class", cls, "is not registered")
        return entry


def _decode_error(event: Event, reason: str) -> EventDecodeError:
    return EventDecodeError(event.stream_id, event.version, event.type, reason)
