"""Event sourcing: events, aggregates, repositories, event stores and subscriptions."""

from __future__ import annotations

from meshkit.eventsourcing._event import Event, JSONSerializer, Serializer, Snapshot
from meshkit.eventsourcing._store import NO_STREAM, CheckpointStore, EventStore

__all__ = [
    "NO_STREAM",
    "CheckpointStore",
    "Event",
    "EventStore",
    "JSONSerializer",
    "Serializer",
    "Snapshot",
]
