"""The `Aggregate` base class: command methods record events, one `apply` changes state.

An aggregate's state changes in exactly one place: `apply(event)`, which dispatches on the
event's class to the method decorated `@applies(ThatEvent)`. Command methods validate, then
call `record(event)`, which applies the event and keeps it as pending until a `Repository`
saves it. Loading replays stored events through the same `apply`, so state built by commands
and state rebuilt from the log cannot drift apart. This core is synchronous and does no I/O.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from meshkit._errors import ConfigurationError, UnhandledEventError

__all__ = ["Aggregate", "applies"]

_F = TypeVar("_F", bound=Callable[..., None])

_APPLIES_ATTR = "__meshkit_applies__"
_BASE_FIELDS = frozenset({"stream_id", "version"})


def applies(*event_types: type[Any]) -> Callable[[_F], _F]:
    """Mark an aggregate method as the one that applies `event_types` to its state.

    The method takes the event and mutates `self`; it must not fail (validation belongs in
    the command method that records the event). A subclass may override it by name; one
    class declaring two methods for the same event class raises `ConfigurationError`.
    """

    def mark(fn: _F) -> _F:
        setattr(fn, _APPLIES_ATTR, event_types)
        return fn

    return mark


def _override(own: Mapping[str, Any], inherited: Callable[[Any, Any], None]) -> Any:  # noqa: ANN401
    """Return the method overriding `inherited` by name without @applies, else `inherited`."""
    override = own.get(inherited.__name__)
    if callable(override) and not hasattr(override, _APPLIES_ATTR):
        return override
    return inherited  # not overridden, or re-decorated (the class's own loop maps it)


class Aggregate:
    """Base class of event-sourced aggregates.

    Subclasses must be constructible as `cls(stream_id)`, setting their initial state in
    `__init__`; the repository creates them that way before replaying their events.

    Attributes:
        stream_id: The id of the aggregate's event stream.
        version: The version of the last event applied (0 for a new aggregate).
        type_name: Class attribute; the aggregate type stored in snapshots (default: the
            class name).
        snapshot_schema: Class attribute; bump it when `snapshot_state()` changes shape, so
            older snapshots are ignored (the events are replayed instead).
    """

    type_name: ClassVar[str] = "Aggregate"
    snapshot_schema: ClassVar[int] = 1
    _appliers: ClassVar[dict[type[Any], Callable[[Any, Any], None]]] = {}

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.version = 0
        self._pending: list[object] = []
        self._pending_ids: list[uuid.UUID] = []  # kept across failed saves: retries are no-ops

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__
        own = cls.__dict__
        appliers = {event_type: _override(own, fn) for event_type, fn in cls._appliers.items()}
        declared: dict[type[Any], str] = {}
        for name, value in own.items():
            for event_type in getattr(value, _APPLIES_ATTR, ()):
                if event_type in declared:
                    raise ConfigurationError(
                        "applies", event_type.__name__, f"both {declared[event_type]} and {name}"
                    )
                declared[event_type] = name
                appliers[event_type] = value
        cls._appliers = appliers

    @property
    def pending_events(self) -> tuple[object, ...]:
        """The events recorded since the aggregate was loaded or last saved."""
        return tuple(self._pending)

    def record(self, event: object) -> None:
        """Apply `event` and keep it to be saved.

        Raises:
            UnhandledEventError: If no `@applies` method handles the event's class.
        """
        self.apply(event)
        self._pending.append(event)

    def apply(self, event: object) -> None:
        """Apply one event to the state: the single place where state changes.

        Raises:
            UnhandledEventError: If no `@applies` method handles the event's class.
        """
        fn = self._appliers.get(type(event))
        if fn is None:
            raise UnhandledEventError(type(self).__name__, type(event).__name__)
        fn(self, event)
        self.version += 1

    def snapshot_state(self) -> dict[str, Any]:
        """Return the JSON-compatible state to snapshot (default: a deep copy of public attributes).

        Override it, with `restore_state`, when the state holds non-JSON values.
        """
        return copy.deepcopy(
            {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in _BASE_FIELDS}
        )

    def restore_state(self, state: dict[str, Any]) -> None:
        """Set the state from a `snapshot_state()` result (default: set the attributes).

        The aggregate takes ownership of `state` (stores hand out a fresh copy).
        """
        vars(self).update(state)

    def _pending_event_ids(self) -> list[uuid.UUID]:
        """Return one stable event id per pending event, minting the missing ones.

        A save that fails after its append was stored (a lost reply) is retried with the
        same ids, which the store then recognizes as an idempotent no-op.
        """
        ids = self._pending_ids
        ids.extend(uuid.uuid4() for _ in range(len(self._pending) - len(ids)))
        return ids

    def _mark_saved(self) -> None:
        self._pending.clear()
        self._pending_ids.clear()
