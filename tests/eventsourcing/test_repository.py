"""Tests for Repository: load/save with optimistic concurrency, snapshots, decoding errors."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from es_orders import OrderAggregate, OrderCreated, events
from meshkit import (
    ConfigurationError,
    EventDecodeError,
    EventStoreUnavailableError,
    StreamNotFoundError,
    UnhandledEventError,
    UnknownEventTypeError,
    VersionConflictError,
)
from meshkit.eventsourcing import (
    Event,
    EventRegistry,
    EventStore,
    MemoryEventStore,
    Repository,
    Snapshot,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

pytestmark = pytest.mark.anyio


def _repo(store: EventStore, snapshot_every: int | None = None) -> Repository[OrderAggregate]:
    return Repository(
        store=store, aggregate_type=OrderAggregate, registry=events, snapshot_every=snapshot_every
    )


async def _saved_order(repo: Repository[OrderAggregate], items: int = 2) -> OrderAggregate:
    order = OrderAggregate.create("o-1", "ada")
    for number in range(items):
        order.add_item(f"sku-{number}", 1, unit_price=100)
    await repo.save(order)
    return order


@attrs.frozen
class Audited:
    """An event no OrderAggregate method applies."""

    note: str


class _LostReplyStore:
    """Delegates to a memory store, but its first append fails after it was written."""

    def __init__(self, store: MemoryEventStore) -> None:
        self.store = store
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        version = await self.store.append(stream_id, events, expected_version)
        if not self.failed:
            self.failed = True
            raise EventStoreUnavailableError("memory", "append", "the reply was lost")
        return version


class _BrokenSnapshotStore:
    """Delegates to a memory store, but cannot save snapshots."""

    def __init__(self, store: MemoryEventStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        raise EventStoreUnavailableError("memory", "save_snapshot", f"no room for {snapshot}")


class TestRepository:
    async def test_save_then_load(self) -> None:
        """A saved aggregate loads back with the same state and version."""
        store = MemoryEventStore()
        repo = _repo(store)
        order = await _saved_order(repo)
        assert order.pending_events == ()
        loaded = await repo.load("o-1")
        assert loaded.snapshot_state() == order.snapshot_state()
        assert loaded.version == order.version == 3
        assert await repo.save(loaded) == 3  # nothing pending: a no-op

    async def test_lost_race_is_a_version_conflict(self) -> None:
        """Two writers of the same version: the second gets VersionConflictError, keeps events."""
        repo = _repo(MemoryEventStore())
        await _saved_order(repo)
        first, second = await repo.load("o-1"), await repo.load("o-1")
        first.confirm()
        second.cancel("too slow")
        await repo.save(first)
        with pytest.raises(VersionConflictError) as info:
            await repo.save(second)
        assert (info.value.expected_version, info.value.actual_version) == (3, 4)
        assert len(second.pending_events) == 1
        assert (await repo.load("o-1")).status == "confirmed"

    async def test_retried_save_after_a_lost_reply_is_a_no_op(self) -> None:
        """A save whose append landed but whose reply was lost can be retried safely."""
        store = MemoryEventStore()
        repo = _repo(_LostReplyStore(store))
        order = OrderAggregate.create("o-1", "ada")
        order.add_item("sku-1", 1, unit_price=100)
        with pytest.raises(EventStoreUnavailableError):
            await repo.save(order)
        kept = [type(event).__name__ for event in order.pending_events]
        assert kept == ["OrderCreated", "ItemAdded"]
        assert await repo.save(order) == 2
        assert not order.pending_events
        assert [event.version for event in await store.read("o-1")] == [1, 2]

    async def test_a_failed_automatic_snapshot_does_not_fail_the_save(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Once the events are stored, save() succeeds even if the snapshot after it fails."""
        store = MemoryEventStore()
        repo = _repo(_BrokenSnapshotStore(store), snapshot_every=2)
        order = OrderAggregate.create("o-1", "ada")
        order.add_item("sku-1", 1, unit_price=100)
        with caplog.at_level(logging.ERROR, logger="meshkit.eventsourcing"):
            assert await repo.save(order) == 2
        assert not order.pending_events
        assert await store.stream_version("o-1") == 2
        assert await store.load_snapshot("o-1") is None
        assert "snapshot of 'o-1' at version 2 failed" in caplog.text

    async def test_missing_stream(self) -> None:
        """load() raises StreamNotFoundError for a stream without events; get() gives None."""
        repo = _repo(MemoryEventStore())
        with pytest.raises(StreamNotFoundError, match="'o-9'"):
            await repo.load("o-9")
        assert await repo.get("o-9") is None

    async def test_ids_are_stamped_on_events(self) -> None:
        """save() stamps correlation and causation ids on every stored event."""
        store = MemoryEventStore()
        correlation, causation = uuid.uuid4(), uuid.uuid4()
        order = OrderAggregate.create("o-1", "ada")
        await _repo(store).save(order, correlation_id=correlation, causation_id=causation)
        stored = await store.read("o-1")
        assert [(e.correlation_id, e.causation_id) for e in stored] == [(correlation, causation)]

    async def test_snapshot_every_n_events(self) -> None:
        """With snapshot_every=3, a save that crosses a multiple of 3 stores a snapshot."""
        store = MemoryEventStore()
        repo = _repo(store, snapshot_every=3)
        order = OrderAggregate.create("o-1", "ada")
        order.add_item("a", 1, unit_price=1)
        await repo.save(order)
        assert await store.load_snapshot("o-1") is None
        order.add_item("b", 2, unit_price=1)
        order.add_item("c", 3, unit_price=1)
        await repo.save(order)
        snapshot = await store.load_snapshot("o-1")
        assert snapshot is not None
        assert (snapshot.version, snapshot.type, snapshot.schema_version) == (4, "Order", 1)
        assert snapshot.state["lines"] == {"a": 1, "b": 2, "c": 3}

    async def test_load_starts_from_the_snapshot(self) -> None:
        """load() restores the snapshot and replays only the later events."""
        store = MemoryEventStore()
        repo = _repo(store)
        order = await _saved_order(repo)
        state = {**order.snapshot_state(), "customer": "from-snapshot"}
        await store.save_snapshot(Snapshot(stream_id="o-1", version=3, type="Order", state=state))
        order.confirm()
        await repo.save(order)
        loaded = await repo.load("o-1")
        assert (loaded.customer, loaded.status, loaded.version) == ("from-snapshot", "confirmed", 4)

    @pytest.mark.parametrize(("type_", "schema"), [("Order", 2), ("Invoice", 1)])
    async def test_stale_snapshots_are_ignored(self, type_: str, schema: int) -> None:
        """A snapshot of another schema marker or aggregate type is ignored; events replay."""
        store = MemoryEventStore()
        repo = _repo(store)
        await _saved_order(repo)
        stale = Snapshot(
            stream_id="o-1", version=3, type=type_, state={"bogus": 1}, schema_version=schema
        )
        await store.save_snapshot(stale)
        loaded = await repo.load("o-1")
        assert loaded.customer == "ada"
        assert not hasattr(loaded, "bogus")

    async def test_snapshot_needs_a_saved_aggregate(self) -> None:
        """snapshot() of an aggregate with unsaved events raises ConfigurationError."""
        repo = _repo(MemoryEventStore())
        with pytest.raises(ConfigurationError, match="aggregate"):
            await repo.snapshot(OrderAggregate.create("o-1", "ada"))
        with pytest.raises(ConfigurationError, match="snapshot_every"):
            _repo(MemoryEventStore(), snapshot_every=0)

    async def test_old_events_are_upcast_on_load(self) -> None:
        """A v1 ItemAdded stored long ago loads through the upcaster chain."""
        store = MemoryEventStore()
        created = events.to_event(
            OrderAggregate.create("x", "ada").pending_events[0], stream_id="o-1", version=1
        )
        old = Event(stream_id="o-1", version=2, type="ItemAdded", data={"sku": "a", "quantity": 2})
        await store.append("o-1", [created, old], 0)
        loaded = await _repo(store).load("o-1")
        assert (loaded.lines, loaded.total) == ({"a": 2}, 0)

    async def test_undecodable_events_name_the_event(self) -> None:
        """An unknown type or corrupt payload in the stream fails the load, naming the event."""
        store = MemoryEventStore()
        await _saved_order(_repo(store), items=0)
        gone = Event(stream_id="o-1", version=2, type="Teleported")
        await store.append("o-1", [gone], 1)
        with pytest.raises(UnknownEventTypeError, match="'Teleported' at 'o-1' version 2"):
            await _repo(store).load("o-1")
        other = MemoryEventStore()
        await _saved_order(_repo(other), items=0)
        bad = Event(stream_id="o-1", version=2, type="ItemAdded", data={}, schema_version=2)
        await other.append("o-1", [bad], 1)
        with pytest.raises(EventDecodeError, match="'ItemAdded' at 'o-1' version 2"):
            await _repo(other).load("o-1")

    async def test_an_event_the_aggregate_cannot_apply_names_the_event(self) -> None:
        """A registered event the aggregate has no @applies for names stream, version, type."""
        registry = EventRegistry()
        registry.add(OrderCreated)
        registry.add(Audited)
        store = MemoryEventStore()
        stored = [
            registry.to_event(OrderCreated("ada"), stream_id="o-1", version=1),
            registry.to_event(Audited("ok"), stream_id="o-1", version=2),
        ]
        await store.append("o-1", stored, 0)
        repo = Repository(store=store, aggregate_type=OrderAggregate, registry=registry)
        with pytest.raises(UnhandledEventError) as info:
            await repo.load("o-1")
        assert info.value.__notes__ == ["while loading event 'Audited' at 'o-1' version 2"]
