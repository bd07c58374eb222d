"""The in-process bus: the conformance suite, and its own corners."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from meshkit.eventsourcing import Event
from meshkit.messaging import InProcessBus, InProcessConsumer
from meshkit.testing import BusConformance, FakeClock

if TYPE_CHECKING:
    from collections.abc import Sequence


class TestInProcessBusConformance(BusConformance):
    def setup_method(self) -> None:
        self.bus = InProcessBus()

    async def make_consumer(self, name: str) -> InProcessConsumer:
        return self.bus.consumer(name)

    async def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            await self.bus.publish(event)

    async def dead_lettered(self, name: str) -> list[tuple[str, str]]:
        return [(str(event.event_id), reason) for event, reason in self.bus.dead_letters(name)]


@pytest.mark.anyio
class TestInProcessBus:
    async def test_fetch_times_out_empty(self, clock: FakeClock) -> None:
        """A fetch on an empty group returns nothing once the clock passes its wait."""
        bus = InProcessBus(clock=clock)
        consumer = bus.consumer("c")
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.advance_stepwise, 2.0)
            assert list(await consumer.fetch(10, 1.0)) == []

    async def test_new_group_starts_at_the_beginning(self) -> None:
        """A group created after events were published still gets them all."""
        bus = InProcessBus()
        event = Event(stream_id="s", version=1, type="T")
        await bus.publish(event)
        deliveries = await bus.consumer("late").fetch(10, 0.0)
        assert [d.event for d in deliveries] == [event]

    async def test_unknown_group_has_no_dead_letters(self) -> None:
        """Asking for the dead letters of a group never created returns an empty list."""
        assert InProcessBus().dead_letters("nobody") == []

    async def test_touch_is_harmless(self) -> None:
        """Touching a delivery changes nothing (nothing times out in process)."""
        bus = InProcessBus()
        await bus.publish(Event(stream_id="s", version=1, type="T"))
        consumer = bus.consumer("c")
        (delivery,) = await consumer.fetch(1, 0.0)
        await consumer.touch(delivery)
        await consumer.ack(delivery)
        await consumer.aclose()
        assert list(await bus.consumer("c").fetch(1, 0.0)) == []
