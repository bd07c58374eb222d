"""The event store's own global log as a bus: the embedded default, no broker needed.

`EventLogConsumer` reads the log the way a `Subscription` does (`read_all` after a saved
checkpoint, then `wait_for_new` to follow it live), but hands the events out as deliveries,
so the `Dispatcher`'s lanes, retries and inbox work over it exactly as over a broker. The
checkpoint is the highest position below which every fetched event is acknowledged: after a
crash the log is re-read from there, and the inbox skips what was already processed.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, final

import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._validate import instance_of
from meshkit.eventsourcing import (
    CheckpointStore,
    DeadLetter,
    DeadLetterStore,
    EventStore,
    MemoryDeadLetterStore,
)
from meshkit.messaging._consumer import Delivery
from meshkit.messaging._inbox import check_text

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["EventLogConsumer"]


def _name(_inst: object, _attribute: object, value: str) -> None:
    check_text("name", value)


@final
@attrs.define(eq=False, kw_only=True)
class EventLogConsumer:
    """A `Consumer` over an `EventStore`'s global log, with a checkpoint per name.

    Use one instance per name at a time (the checkpoint is this consumer's alone).

    Attributes:
        name: The consumer name; its checkpoint is saved under it.
        store: The event store whose log is read.
        checkpoints: Where the checkpoint is kept (the store itself, for SQL stores).
        dead_letters: Where dead-lettered events are parked.
        clock: Time source for fetch timeouts.
    """

    name: str = attrs.field(validator=_name)
    store: EventStore = attrs.field(validator=instance_of(EventStore))
    checkpoints: CheckpointStore = attrs.field(validator=instance_of(CheckpointStore))
    dead_letters: DeadLetterStore = attrs.field(
        factory=MemoryDeadLetterStore, validator=instance_of(DeadLetterStore)
    )
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _cursor: int | None = attrs.field(init=False, default=None)
    _in_flight: collections.deque[int] = attrs.field(init=False, factory=collections.deque)
    _acked: set[int] = attrs.field(init=False, factory=set)

    async def fetch(self, max_messages: int, max_wait: float) -> Sequence[Delivery]:
        """Return the next events after the last fetched one, waiting up to `max_wait`.

        Raises:
            EventStoreUnavailableError: If the store fails.
            EventDecodeError: If a stored event cannot be decoded (the log cannot skip it).
        """
        if self._cursor is None:
            self._cursor = await self.checkpoints.load_checkpoint(self.name)
        cursor = self._cursor
        events = await self.store.read_all(cursor, limit=max_messages)
        if not events:
            with self.clock.deadline_scope(self.clock.now() + max_wait):
                await self.store.wait_for_new(cursor)
            events = await self.store.read_all(cursor, limit=max_messages)
        deliveries = []
        for event in events:
            position = event.position
            assert position is not None  # noqa: S101 - the store sets it
            self._in_flight.append(position)
            self._cursor = position
            deliveries.append(Delivery.of(event, handle=position))
        return deliveries

    async def ack(self, delivery: Delivery) -> None:
        """Mark `delivery` done; save the checkpoint once everything before it is done too.

        Raises:
            EventStoreUnavailableError: If saving the checkpoint fails.
        """
        position = delivery.handle
        assert isinstance(position, int)  # noqa: S101 - set by fetch
        self._acked.add(position)
        floor = None
        while self._in_flight and self._in_flight[0] in self._acked:
            floor = self._in_flight.popleft()
            self._acked.discard(floor)
        if floor is not None:
            await self.checkpoints.save_checkpoint(self.name, floor)

    async def touch(self, delivery: Delivery) -> None:
        """Nothing to do: the log never redelivers on its own."""
        del delivery

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park the event in `dead_letters` with `reason`, and acknowledge it."""
        assert delivery.event is not None  # noqa: S101 - the log holds decoded events only
        letter = DeadLetter(
            subscription=self.name, event=delivery.event, error=reason, attempts=delivery.delivered
        )
        await self.dead_letters.park(letter)
        await self.ack(delivery)

    async def aclose(self) -> None:
        """Forget what was fetched: the next fetch re-reads from the saved checkpoint."""
        self._cursor = None
        self._in_flight.clear()
        self._acked.clear()
