"""The event bus: consumers with an idempotent inbox, over NATS, Redis, the event log or memory.

Events leave a service through the outbox (`meshkit.eventsourcing.outbox_relay` with a
`Publisher`); a `Dispatcher` takes them off a bus through a `Consumer` adapter and runs a
handler whose writes commit together with the inbox record of the message, so a redelivered
message has no second effect.
"""

from __future__ import annotations

from meshkit._public import publish as _publish
from meshkit.messaging._consumer import Consumer, Delivery
from meshkit.messaging._core import DeliveryPolicy
from meshkit.messaging._dispatcher import Dispatcher, DispatcherStatistics, MessageHandler
from meshkit.messaging._eventlog import EventLogConsumer
from meshkit.messaging._inbox import (
    Inbox,
    MemoryInbox,
    MemoryInboxTransaction,
    PostgresInbox,
    SQLiteInbox,
)
from meshkit.messaging._inprocess import InProcessBus, InProcessConsumer
from meshkit.messaging._nats import JetStreamConsumer, JetStreamPublisher
from meshkit.messaging._redis import RedisStreamConsumer

__all__ = [
    "Consumer",
    "Delivery",
    "DeliveryPolicy",
    "Dispatcher",
    "DispatcherStatistics",
    "EventLogConsumer",
    "InProcessBus",
    "InProcessConsumer",
    "Inbox",
    "JetStreamConsumer",
    "JetStreamPublisher",
    "MemoryInbox",
    "MemoryInboxTransaction",
    "MessageHandler",
    "PostgresInbox",
    "RedisStreamConsumer",
    "SQLiteInbox",
]

_publish(__name__, globals())
