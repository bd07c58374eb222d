"""The `Consumer` protocol every bus adapter implements, and the `Delivery` it hands out.

`Consumer` is the receiving twin of the outbox's `Publisher`: `Publisher.publish(event)` puts
an event on a bus, `Consumer.fetch()` takes deliveries off it for one durable consumer name.
The adapter decodes each message into an `Event`; a message it cannot decode comes out as a
delivery with `event=None` and the reason in `decode_error`, which the `Dispatcher` sends to
the dead-letter place instead of retrying it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

from meshkit._validate import ge, instance_of, optional
from meshkit.eventsourcing import Event

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Consumer", "Delivery"]


@attrs.frozen(kw_only=True)
class Delivery:
    """One message as a consumer received it.

    Attributes:
        message_id: The message's id, stable across redeliveries (the event id for events
            sent by a meshkit publisher): the inbox deduplicates on it.
        key: The ordering key (the event's stream id): messages of one key are handled one
            at a time, in the order received.
        delivered: How many times the bus has delivered this message, this time included.
        event: The decoded event, or `None` when it could not be decoded.
        decode_error: Why it could not be decoded (`None` when `event` is set).
        handle: The adapter's own reference (a NATS message, a Redis entry id...).
    """

    message_id: str = attrs.field(validator=instance_of(str))
    key: str = attrs.field(validator=instance_of(str))
    delivered: int = attrs.field(default=1, validator=[instance_of(int), ge(1)])
    event: Event | None = attrs.field(default=None, validator=optional(instance_of(Event)))
    decode_error: str | None = attrs.field(default=None, validator=optional(instance_of(str)))
    handle: object = None

    @classmethod
    def of(cls, event: Event, *, delivered: int = 1, handle: object = None) -> Delivery:
        """Return the delivery of a decoded `event` (id: its event id; key: its stream)."""
        return cls(
            message_id=str(event.event_id),
            key=event.stream_id,
            delivered=delivered,
            event=event,
            handle=handle,
        )


@runtime_checkable
class Consumer(Protocol):
    """The receive side of a bus, for one durable consumer (group) name.

    Messages fetched and not acknowledged are delivered again: after the process dies, or
    the consumer is closed, or (on brokers with a visibility timeout) once that runs out.
    """

    @property
    def name(self) -> str:
        """The durable consumer name; the inbox records processed messages under it."""
        ...

    async def fetch(self, max_messages: int, max_wait: float) -> Sequence[Delivery]:
        """Return up to `max_messages` deliveries, waiting up to `max_wait` s for the first.

        Returns an empty sequence when nothing arrived in time.
        """
        ...

    async def ack(self, delivery: Delivery) -> None:
        """Acknowledge `delivery`: the bus will not deliver it to this consumer again."""
        ...

    async def touch(self, delivery: Delivery) -> None:
        """Tell the bus `delivery` is still being worked on (postpone its redelivery)."""
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move `delivery` to the dead-letter place with `reason`, and acknowledge it."""
        ...

    async def aclose(self) -> None:
        """Release the connection; unacknowledged deliveries will be delivered again."""
        ...
