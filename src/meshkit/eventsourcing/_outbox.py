"""The transactional outbox: relay stored events to a message bus, in order, at least once.

With event sourcing the outbox table is the event log itself: an event is "in the outbox"
the moment its append commits, atomically with the state change it records. The relay is a
`Subscription` whose handler publishes each event to a `Publisher`; it saves its checkpoint
after publishing, so a crash re-publishes at most the last batch (at least once; consumers
deduplicate on `event_id`). It retries a failing publish forever by default, since skipping
an event would break the order downstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, final, runtime_checkable

import anyio
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit.eventsourcing._deadletter import DeadLetter, DeadLetterStore, MemoryDeadLetterStore
from meshkit.eventsourcing._subscription import Subscription

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from meshkit.eventsourcing._event import Event
    from meshkit.eventsourcing._store import CheckpointStore, EventStore

__all__ = ["InProcessPublisher", "Publisher", "outbox_relay"]


@runtime_checkable
class Publisher(Protocol):
    """Sends one event to a message bus; raises to have it retried."""

    async def publish(self, event: Event) -> None:
        """Publish `event` (idempotently if the bus allows: it may be sent again)."""
        ...


@final
@attrs.define(eq=False)
class InProcessPublisher:
    """A `Publisher` that fans events out in-process, to async callbacks and memory streams.

    Callbacks are awaited in registration order; then each open stream receives the event
    (waiting while its buffer is full, so a slow reader applies backpressure). A stream
    whose receiver was closed is dropped.
    """

    _callbacks: list[Callable[[Event], Awaitable[None]]] = attrs.field(init=False, factory=list)
    _streams: list[MemoryObjectSendStream[Event]] = attrs.field(init=False, factory=list)

    def add_callback(self, callback: Callable[[Event], Awaitable[None]]) -> None:
        """Have `callback` awaited with every published event."""
        self._callbacks.append(callback)

    def open_stream(self, max_buffer_size: float = 100) -> MemoryObjectReceiveStream[Event]:
        """Return a new receive stream that gets every event published from now on."""
        send, receive = anyio.create_memory_object_stream["Event"](max_buffer_size)
        self._streams.append(send)
        return receive

    async def publish(self, event: Event) -> None:
        """Deliver `event` to every callback, then to every open stream."""
        for callback in self._callbacks:
            await callback(event)
        for stream in list(self._streams):
            try:
                await stream.send(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                if stream in self._streams:  # aclose() may have emptied the list meanwhile
                    self._streams.remove(stream)
                stream.close()

    async def aclose(self) -> None:
        """Close every stream, so their readers see the end."""
        streams, self._streams = self._streams, []
        for stream in streams:
            await stream.aclose()


def outbox_relay(
    *,
    name: str,
    store: EventStore,
    publisher: Publisher,
    checkpoints: CheckpointStore,
    batch_size: int = 100,
    max_attempts: int | None = None,
    backoff_initial: float = 0.1,
    backoff_max: float = 30.0,
    dead_letters: DeadLetterStore | None = None,
    on_dead_letter: Callable[[DeadLetter], Awaitable[None]] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    lease_duration: float = 10.0,
    renew_interval: float = 2.0,
) -> Subscription[object]:
    """Return the subscription that relays every stored event to `publisher`.

    Use it as an async context manager (`async with outbox_relay(...):`). The knobs are the
    `Subscription`'s; `max_attempts` defaults to `None` (retry forever, never reorder). With
    SQL checkpoints, one relay of a name publishes at a time (the subscription lease).

    Raises:
        ConfigurationError: If a knob is invalid.
    """

    async def publish(event: Event, _tx: object) -> None:
        await publisher.publish(event)

    return Subscription(
        name=name,
        store=store,
        handler=publish,
        checkpoints=checkpoints,
        dead_letters=MemoryDeadLetterStore() if dead_letters is None else dead_letters,
        on_dead_letter=on_dead_letter,
        batch_size=batch_size,
        max_attempts=max_attempts,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        clock=clock,
        lease_duration=lease_duration,
        renew_interval=renew_interval,
    )
