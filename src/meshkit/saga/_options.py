"""The orchestrator's option converters, and building a status from a saga's events."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, cast

from meshkit._validate import require
from meshkit.saga._definition import Saga
from meshkit.saga._status import HistoryEntry, SagaStatus, SagaTransition

if TYPE_CHECKING:
    from meshkit.eventsourcing import Event
    from meshkit.saga._core import SagaMachine

__all__ = ["Listener", "listeners_of", "sagas_by_name", "status_of"]

Listener = Callable[[SagaTransition], object]


def sagas_by_name(value: object) -> dict[str, Saga]:
    """Return the definitions by name (the `sagas` converter); names must be unique."""
    items = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else None
    require(items is not None, "sagas", value, "must be an iterable of Saga")
    by_name: dict[str, Saga] = {}
    for saga in items or ():
        require(isinstance(saga, Saga), "sagas", saga, "must hold Saga definitions")
        require(saga.name not in by_name, "sagas", saga.name, "duplicate saga name")
        by_name[saga.name] = saga
    return by_name


def listeners_of(value: object) -> tuple[Listener, ...]:
    """Return the listeners as a tuple of plain callables (the `listeners` converter)."""
    ok = isinstance(value, Iterable) and not isinstance(value, str)
    require(ok, "listeners", value, "must be an iterable of callables")
    items = tuple(cast("Iterable[object]", value))
    for item in items:
        require(callable(item), "listeners", item, "must hold callables")
        # Listeners are called, not awaited: an async one would silently do nothing.
        sync = not inspect.iscoroutinefunction(item)
        require(sync, "listeners", item, "must hold plain (not async) callables")
    return cast("tuple[Listener, ...]", items)


def status_of(saga: Saga, machine: SagaMachine, events: Sequence[Event]) -> SagaStatus:
    """Return the status of the saga `machine` holds, with `events` as its history."""
    history = tuple(
        HistoryEntry(
            version=e.version,
            type=e.type,
            step=e.data.get("step"),
            timestamp=e.timestamp,
            data=e.data,
        )
        for e in events
    )
    return SagaStatus.of(saga.name, machine, history)
