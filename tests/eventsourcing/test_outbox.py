"""Tests for the outbox relay and the in-process publisher."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from meshkit.eventsourcing import (
    Event,
    InProcessPublisher,
    MemoryCheckpointStore,
    MemoryEventStore,
    Publisher,
    outbox_relay,
)
from meshkit.testing._eventstore_conformance import make_events

if TYPE_CHECKING:
    from meshkit.testing import FakeClock

pytestmark = pytest.mark.anyio


def _fill(store: MemoryEventStore, stream: str, count: int) -> None:
    start = store.stream_version_nowait(stream)
    store.append_nowait(stream, make_events(stream, start + 1, count), start)


class FlakyPublisher:
    """Fails every third publish once, like a bus that drops connections."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.calls = 0

    async def publish(self, event: Event) -> None:
        self.calls += 1
        if self.calls % 3 == 0:
            raise ConnectionError("bus hiccup")
        self.sent.append(event.position or 0)


class TestOutboxRelay:
    async def test_relays_in_order_at_least_once(self, clock: FakeClock) -> None:
        """Every event reaches the bus, in log order, despite publish failures."""
        store, publisher = MemoryEventStore(), FlakyPublisher()
        assert isinstance(publisher, Publisher)
        _fill(store, "a", 4)
        relay = outbox_relay(
            name="outbox",
            store=store,
            publisher=publisher,
            checkpoints=MemoryCheckpointStore(),
            batch_size=3,
            backoff_initial=1.0,
            clock=clock,
        )
        async with relay:
            _fill(store, "b", 3)
            while relay.position < 7:
                await anyio.wait_all_tasks_blocked()
                clock.advance(1.0)
        assert publisher.sent == list(range(1, 8))
        assert publisher.calls == 10  # every third call failed once and was retried

    async def test_restart_does_not_republish_checkpointed_events(self) -> None:
        """A relay restarted with the same checkpoints publishes only the new events."""
        store, checkpoints = MemoryEventStore(), MemoryCheckpointStore()
        publisher = InProcessPublisher()
        received: list[int] = []

        async def collect(event: Event) -> None:
            received.append(event.position or 0)

        publisher.add_callback(collect)
        _fill(store, "a", 2)
        for expected in (2, 4):
            relay = outbox_relay(
                name="outbox", store=store, publisher=publisher, checkpoints=checkpoints
            )
            async with relay:
                await relay.wait_for_position(expected)
            _fill(store, "a", 2)
        assert received == [1, 2, 3, 4]


class TestInProcessPublisher:
    async def test_fans_out_to_callbacks_and_streams(self) -> None:
        """Callbacks and every open stream get each event; closed streams are dropped."""
        publisher = InProcessPublisher()
        seen: list[str] = []

        async def callback(event: Event) -> None:
            seen.append(f"cb{event.version}")

        publisher.add_callback(callback)
        first = publisher.open_stream()
        gone = publisher.open_stream()
        await gone.aclose()
        for event in make_events("s", 1, 2):
            await publisher.publish(event)
        await publisher.aclose()
        async with first:
            versions = [event.version async for event in first]
        assert seen == ["cb1", "cb2"]
        assert versions == [1, 2]

    async def test_closing_while_a_publish_waits(self) -> None:
        """A publish blocked on a full stream ends cleanly when the publisher and reader close."""
        publisher = InProcessPublisher()
        reader = publisher.open_stream(max_buffer_size=0)
        event = make_events("s", 1, 1)[0]
        async with anyio.create_task_group() as group:
            group.start_soon(publisher.publish, event)
            await anyio.wait_all_tasks_blocked()
            await publisher.aclose()
            await reader.aclose()
        await publisher.publish(event)  # nobody listens any more: a no-op
