"""Event sourcing: events, aggregates, repositories, event stores and subscriptions."""

from __future__ import annotations

from meshkit._public import publish as _publish
from meshkit.eventsourcing._aggregate import Aggregate, applies
from meshkit.eventsourcing._deadletter import DeadLetter, DeadLetterStore, MemoryDeadLetterStore
from meshkit.eventsourcing._event import Event, JSONSerializer, Serializer, Snapshot
from meshkit.eventsourcing._memory import MemoryCheckpointStore, MemoryEventStore
from meshkit.eventsourcing._outbox import InProcessPublisher, Publisher, outbox_relay
from meshkit.eventsourcing._postgres import PostgresEventStore, PostgresTransaction
from meshkit.eventsourcing._redis_publisher import RedisStreamPublisher
from meshkit.eventsourcing._registry import EventRegistry
from meshkit.eventsourcing._repository import Repository
from meshkit.eventsourcing._sqlite import SQLiteEventStore, SQLiteTransaction
from meshkit.eventsourcing._store import NO_STREAM, CheckpointStore, EventStore
from meshkit.eventsourcing._subscription import (
    Subscription,
    Transaction,
    TransactionalCheckpointStore,
)

__all__ = [
    "NO_STREAM",
    "Aggregate",
    "CheckpointStore",
    "DeadLetter",
    "DeadLetterStore",
    "Event",
    "EventRegistry",
    "EventStore",
    "InProcessPublisher",
    "JSONSerializer",
    "MemoryCheckpointStore",
    "MemoryDeadLetterStore",
    "MemoryEventStore",
    "PostgresEventStore",
    "PostgresTransaction",
    "Publisher",
    "RedisStreamPublisher",
    "Repository",
    "SQLiteEventStore",
    "SQLiteTransaction",
    "Serializer",
    "Snapshot",
    "Subscription",
    "Transaction",
    "TransactionalCheckpointStore",
    "applies",
    "outbox_relay",
]

_publish(__name__, globals())
