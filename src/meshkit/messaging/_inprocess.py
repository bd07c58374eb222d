"""An in-process bus: a `Publisher` and durable `Consumer`s in one process, for tests and demos.

Each consumer name is a group with its own cursor over everything published (a new group
starts at the beginning, like a durable consumer on a broker); consumers of one name share
the group's messages. Deliveries fetched and not acknowledged when their consumer closes go
back to the front of the group's queue, so closing a consumer without acknowledging is how
a test simulates a crash.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, final

import anyio
import attrs

from meshkit._clock import SYSTEM_CLOCK, Clock
from meshkit._validate import instance_of
from meshkit.messaging._consumer import Delivery
from meshkit.messaging._inbox import check_text

if TYPE_CHECKING:
    from collections.abc import Sequence

    from meshkit.eventsourcing import Event

__all__ = ["InProcessBus", "InProcessConsumer"]


@final
@attrs.define(eq=False)
class _Group:
    queue: collections.deque[Event] = attrs.field(factory=collections.deque)
    delivered: collections.Counter[str] = attrs.field(factory=collections.Counter)
    dead: list[tuple[Event, str]] = attrs.field(factory=list)


@final
@attrs.define(eq=False, kw_only=True)
class InProcessBus:
    """A memory bus: publish events, consume them by durable name, in this process.

    Attributes:
        clock: Time source for `fetch` timeouts.
    """

    clock: Clock = attrs.field(default=SYSTEM_CLOCK, validator=instance_of(Clock))
    _log: list[Event] = attrs.field(init=False, factory=list)
    _groups: dict[str, _Group] = attrs.field(init=False, factory=dict)
    _arrived: anyio.Event | None = attrs.field(init=False, default=None)

    async def publish(self, event: Event) -> None:
        """Append `event` for every group (a `Publisher`, e.g. for `outbox_relay`)."""
        await anyio.lowlevel.checkpoint()
        self._log.append(event)
        for group in self._groups.values():
            group.queue.append(event)
        self._wake()

    def consumer(self, name: str) -> InProcessConsumer:
        """Return a consumer of group `name` (created, at the beginning, on first use).

        Raises:
            ConfigurationError: If `name` is empty or not text.
        """
        check_text("name", name)
        if name not in self._groups:
            self._groups[name] = _Group(queue=collections.deque(self._log))
        return InProcessConsumer(bus=self, name=name)

    def dead_letters(self, name: str) -> list[tuple[Event, str]]:
        """Return the events group `name` dead-lettered, with the reasons, oldest first."""
        group = self._groups.get(name)
        return [] if group is None else list(group.dead)

    def _group(self, name: str) -> _Group:
        return self._groups[name]

    def _wake(self) -> None:
        arrived, self._arrived = self._arrived, None
        if arrived is not None:
            arrived.set()

    async def _wait(self, max_wait: float) -> None:
        if self._arrived is None:
            self._arrived = anyio.Event()
        arrived = self._arrived
        with self.clock.deadline_scope(self.clock.now() + max_wait):
            await arrived.wait()


@final
@attrs.define(eq=False, kw_only=True)
class InProcessConsumer:
    """A `Consumer` of an `InProcessBus` group (from `InProcessBus.consumer`).

    Attributes:
        bus: The bus.
        name: The group name.
    """

    bus: InProcessBus
    name: str
    _pending: dict[str, Event] = attrs.field(init=False, factory=dict)

    async def fetch(self, max_messages: int, max_wait: float) -> Sequence[Delivery]:
        """Take up to `max_messages` events off the group's queue, waiting up to `max_wait`."""
        group = self.bus._group(self.name)  # noqa: SLF001 - the bus's own consumer
        if not group.queue:
            await self.bus._wait(max_wait)  # noqa: SLF001
        deliveries: list[Delivery] = []
        while group.queue and len(deliveries) < max_messages:
            event = group.queue.popleft()
            message_id = str(event.event_id)
            group.delivered[message_id] += 1
            self._pending[message_id] = event
            deliveries.append(Delivery.of(event, delivered=group.delivered[message_id]))
        await anyio.lowlevel.checkpoint()
        return deliveries

    async def ack(self, delivery: Delivery) -> None:
        """Forget `delivery`: it is done."""
        await anyio.lowlevel.checkpoint()
        self._pending.pop(delivery.message_id, None)

    async def touch(self, delivery: Delivery) -> None:
        """Nothing to do: in-process deliveries never time out."""
        del delivery
        await anyio.lowlevel.checkpoint()

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Keep the event with `reason` in the group's dead letters, and acknowledge it."""
        event = self._pending.pop(delivery.message_id, None)
        if event is not None:
            self.bus._group(self.name).dead.append((event, reason))  # noqa: SLF001
        await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Put unacknowledged deliveries back at the front of the queue, in their order."""
        pending, self._pending = self._pending, {}
        self.bus._group(self.name).queue.extendleft(reversed(pending.values()))  # noqa: SLF001
        self.bus._wake()  # noqa: SLF001
        await anyio.lowlevel.checkpoint()
