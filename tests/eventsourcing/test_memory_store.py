"""The in-memory event store and checkpoint store: the shared conformance suite, and extras."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

import anyio
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshkit import ConfigurationError
from meshkit.eventsourcing import (
    CheckpointStore,
    DeadLetter,
    Event,
    EventStore,
    MemoryCheckpointStore,
    MemoryDeadLetterStore,
    MemoryEventStore,
    Snapshot,
)
from meshkit.testing import CheckpointStoreConformance, EventStoreConformance
from meshkit.testing._eventstore_conformance import make_events

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class TestMemoryEventStore(EventStoreConformance):
    async def make_store(self) -> EventStore:
        return MemoryEventStore()


class TestMemoryCheckpointStore(CheckpointStoreConformance):
    async def make_checkpoints(self) -> CheckpointStore:
        return MemoryCheckpointStore()


class ClosableCheckpoints:
    """A checkpoint store with an aclose(), as SQL ones have."""

    def __init__(self) -> None:
        self.inner = MemoryCheckpointStore()
        self.closed = False

    async def load_checkpoint(self, name: str) -> int:
        return await self.inner.load_checkpoint(name)

    async def save_checkpoint(self, name: str, position: int) -> None:
        await self.inner.save_checkpoint(name, position)

    async def aclose(self) -> None:
        self.closed = True


class TestClosableCheckpointStore(CheckpointStoreConformance):
    async def make_checkpoints(self) -> CheckpointStore:
        return ClosableCheckpoints()


class TestConformanceSuite:
    def test_subclasses_are_marked_for_anyio(self) -> None:
        """Subclassing a suite adds the anyio mark, keeping marks the class already has."""

        class TestMarked(EventStoreConformance):
            pytestmark = pytest.mark.redis

            async def make_store(self) -> EventStore:
                return MemoryEventStore()

        names = [mark.name for mark in getattr(TestMarked, "pytestmark", [])]
        assert names == ["redis", "anyio"]

    @pytest.mark.anyio
    async def test_a_broken_store_fails_the_suite(self) -> None:
        """A store that ignores expected versions makes the conflict test fail."""

        class CarelessStore:
            """Ignores expected versions: appends wherever the events say."""

            def __init__(self) -> None:
                self.inner = MemoryEventStore()

            async def append(self, stream_id: str, events: list[Event], expected: int) -> int:
                current = self.inner.stream_version_nowait(stream_id)
                moved = [
                    attrs.evolve(e, version=current + i) for i, e in enumerate(events, start=1)
                ]
                return self.inner.append_nowait(stream_id, moved, current)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

        class Careless(EventStoreConformance):
            async def make_store(self) -> EventStore:
                return cast("EventStore", CarelessStore())

        with pytest.raises(AssertionError, match="expected VersionConflictError"):
            await Careless().test_version_conflict_writes_nothing()

        class LyingStore(CarelessStore):
            async def stream_version(self, stream_id: str) -> int:
                return 0

        class Lying(EventStoreConformance):
            async def make_store(self) -> EventStore:
                return cast("EventStore", LyingStore())

        with pytest.raises(AssertionError, match="stream_version: expected 3, got 0"):
            await Lying().test_append_and_read_back()


class TestMemoryExtras:
    def test_nowait_core(self) -> None:
        """The synchronous core appends and reads without an event loop."""
        store = MemoryEventStore()
        assert store.append_nowait("s", make_events("s", 1, 3), 0) == 3
        assert store.last_position == 3
        assert [e.version for e in store.read_nowait("s", 0, limit=2)] == [1, 2]
        assert [e.position for e in store.read_all_nowait(1)] == [2, 3]
        assert store.stream_version_nowait("s") == 3

    @pytest.mark.anyio
    async def test_bad_read_arguments_are_configuration_errors(self) -> None:
        """A stream id that is not a str, or a from_version that is not an int, is refused."""
        store = MemoryEventStore()
        bad_calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("stream_id", lambda: store.read(cast("str", 7))),
            ("stream_id", lambda: store.read(cast("str", ["s"]))),
            ("from_version", lambda: store.read("s", cast("int", "2"))),
            ("stream_id", lambda: store.stream_version(cast("str", None))),
            ("stream_id", lambda: store.load_snapshot(cast("str", {}))),
        ]
        for field, call in bad_calls:
            with pytest.raises(ConfigurationError) as info:
                await call()
            assert info.value.field == field

    @pytest.mark.anyio
    async def test_events_must_be_a_sequence(self) -> None:
        """One event without brackets, or a generator, is a ConfigurationError naming events."""
        store = MemoryEventStore()
        [event] = make_events("s", 1, 1)
        for bad in (event, (e for e in [event])):
            with pytest.raises(ConfigurationError) as info:
                await store.append("s", cast("list[Event]", bad), 0)
            assert info.value.field == "events"
        assert store.last_position == 0

    @pytest.mark.anyio
    async def test_many_waiters_wake(self) -> None:
        """Every task waiting in wait_for_new() wakes on the next append."""
        store = MemoryEventStore()
        woke: list[int] = []

        async def wait(number: int) -> None:
            await store.wait_for_new(0)
            woke.append(number)

        async with anyio.create_task_group() as tg:
            for number in range(3):
                tg.start_soon(wait, number)
            await anyio.wait_all_tasks_blocked()
            await store.append("s", make_events("s", 1, 1), 0)
        assert sorted(woke) == [0, 1, 2]

    def test_store_outlives_event_loops(self) -> None:
        """A waiter cancelled in one event loop does not break waiting in the next one."""
        store = MemoryEventStore()

        async def cancelled_waiter() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.wait_for_new, 0)
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()

        async def woken_waiter() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.wait_for_new, 0)
                await anyio.wait_all_tasks_blocked()
                await store.append("s", make_events("s", 1, 1), 0)

        anyio.run(cancelled_waiter)
        anyio.run(woken_waiter)
        assert store.last_position == 1

    @pytest.mark.anyio
    async def test_snapshot_state_is_copied(self) -> None:
        """Mutating a saved or loaded snapshot's state does not change the stored one."""
        store = MemoryEventStore()
        state = {"lines": {"fig": 1}}
        await store.save_snapshot(Snapshot(stream_id="s", version=1, type="T", state=state))
        state["lines"]["fig"] = 2
        loaded = await store.load_snapshot("s")
        assert loaded is not None
        loaded.state["lines"]["fig"] = 3
        again = await store.load_snapshot("s")
        assert again is not None
        assert again.state == {"lines": {"fig": 1}}
        await store.aclose()

    @pytest.mark.anyio
    async def test_dead_letter_store(self) -> None:
        """The memory dead-letter store keeps letters per subscription, oldest first."""
        letters = MemoryDeadLetterStore()
        event = make_events("s", 1, 1)[0]
        first = DeadLetter(subscription="a", event=event, error="boom", attempts=3)
        await letters.park(first)
        await letters.park(DeadLetter(subscription="b", event=event, error="x", attempts=1))
        assert await letters.dead_letters("a") == [first]
        assert await letters.dead_letters("c") == []


class TestPayloadCheck:
    def test_unserializable_payload_is_refused_like_sql_stores(self) -> None:
        """A payload JSON cannot encode is a ConfigurationError and nothing is stored."""
        store = MemoryEventStore()
        bad = Event(stream_id="s", version=1, type="T", data={"when": object()})
        with pytest.raises(ConfigurationError) as info:
            store.append_nowait("s", [bad], 0)
        assert info.value.field == "event.data"
        assert store.read_all_nowait() == []

    def test_check_can_be_turned_off(self) -> None:
        """serializer=None keeps payloads by reference without encoding them."""
        store = MemoryEventStore(serializer=None)
        odd = Event(stream_id="s", version=1, type="T", data={"when": object()})
        assert store.append_nowait("s", [odd], 0) == 1

    def test_serializer_must_be_a_serializer(self) -> None:
        """A serializer that is not one is refused, naming the field."""
        with pytest.raises(ConfigurationError) as info:
            MemoryEventStore(serializer="json")  # type: ignore[arg-type]
        assert info.value.field == "serializer"


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
_json_like = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text() | st.integers() | st.booleans(), inner, max_size=3)
    ),
    max_leaves=10,
)


class TestJSONRoundTrip:
    @given(data=st.dictionaries(st.text() | st.integers(), _json_like, max_size=4))
    def test_memory_reads_back_what_json_would(self, data: dict[Any, Any]) -> None:
        """A payload reads back as JSON would return it: equal values, JSON's own types."""
        store = MemoryEventStore()
        try:
            expected = json.loads(json.dumps(data, allow_nan=False))
        except ValueError:  # lone surrogates: refused by the store too
            return
        event = Event(stream_id="s", version=1, type="T", data=data)
        store.append_nowait("s", [event], 0)
        read = store.read_nowait("s")[0].data
        assert read == expected
        assert json.dumps(read, sort_keys=True) == json.dumps(expected, sort_keys=True)
