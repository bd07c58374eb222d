"""The event store's global log as a bus: conformance on memory and SQLite stores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from meshkit.eventsourcing import (
    Event,
    MemoryCheckpointStore,
    MemoryDeadLetterStore,
    MemoryEventStore,
    SQLiteEventStore,
)
from meshkit.messaging import Delivery, EventLogConsumer
from meshkit.testing import BusConformance

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

    from meshkit.eventsourcing import CheckpointStore, EventStore


class _LogConformance(BusConformance):
    store: EventStore
    checkpoints: CheckpointStore
    parked: MemoryDeadLetterStore

    async def make_consumer(self, name: str) -> EventLogConsumer:
        return EventLogConsumer(
            name=name, store=self.store, checkpoints=self.checkpoints, dead_letters=self.parked
        )

    async def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            await self.store.append(event.stream_id, [event], event.version - 1)

    async def dead_lettered(self, name: str) -> list[tuple[str, str]]:
        letters = await self.parked.dead_letters(name)
        return [(str(letter.event.event_id), letter.error) for letter in letters]


class TestMemoryLogConformance(_LogConformance):
    def setup_method(self) -> None:
        self.store = MemoryEventStore()
        self.checkpoints = MemoryCheckpointStore()
        self.parked = MemoryDeadLetterStore()


class TestSQLiteLogConformance(_LogConformance):
    @pytest.fixture(autouse=True)
    async def _store(self, tmp_path: Path) -> AsyncIterator[None]:
        store = await SQLiteEventStore.open(tmp_path / "log.db")
        self.store = self.checkpoints = store
        self.parked = MemoryDeadLetterStore()
        yield
        await store.aclose()


@pytest.mark.anyio
class TestEventLogConsumer:
    async def test_checkpoint_waits_for_every_earlier_ack(self) -> None:
        """The checkpoint moves only past positions whose every predecessor is acknowledged."""
        store, checkpoints = MemoryEventStore(), MemoryCheckpointStore()
        for version in (1, 2, 3):
            await store.append("s", [Event(stream_id="s", version=version, type="T")], version - 1)
        consumer = EventLogConsumer(name="c", store=store, checkpoints=checkpoints)
        first, second, third = await consumer.fetch(10, 0.0)
        await consumer.ack(third)
        assert await checkpoints.load_checkpoint("c") == 0
        await consumer.ack(first)
        assert await checkpoints.load_checkpoint("c") == 1
        await consumer.ack(second)
        assert await checkpoints.load_checkpoint("c") == 3

    async def test_fetch_waits_then_returns_nothing(self) -> None:
        """A fetch on a caught-up log returns nothing after its wait."""
        consumer = EventLogConsumer(
            name="c", store=MemoryEventStore(), checkpoints=MemoryCheckpointStore()
        )
        assert list(await consumer.fetch(10, 0.01)) == []

    async def test_touch_is_harmless(self) -> None:
        """Touching a delivery does nothing: the log never redelivers on its own."""
        consumer = EventLogConsumer(
            name="c", store=MemoryEventStore(), checkpoints=MemoryCheckpointStore()
        )
        event = Event(stream_id="s", version=1, type="T", position=1)
        await consumer.touch(Delivery.of(event, handle=1))
        assert await consumer.checkpoints.load_checkpoint("c") == 0

    def test_empty_name_is_refused(self) -> None:
        """An empty consumer name is a ConfigurationError naming `name`."""
        from meshkit import ConfigurationError  # noqa: PLC0415

        with pytest.raises(ConfigurationError, match="name"):
            EventLogConsumer(name="", store=MemoryEventStore(), checkpoints=MemoryCheckpointStore())
