"""The conformance suites every `EventStore` and `CheckpointStore` backend must pass.

Subclass a suite in a test module, name the subclass `Test...`, and implement its factory:

```python
from meshkit.eventsourcing import MemoryEventStore
from meshkit.testing import EventStoreConformance

class TestMyStore(EventStoreConformance):
    async def make_store(self) -> MemoryEventStore:
        return MemoryEventStore()
```

Every test is async and marked for the anyio pytest plugin (the mark is added when the
class is subclassed, so importing this module does not import pytest); the suite closes each
store with `aclose()`. A factory that needs a fixture (a database schema, say) gets it from
an autouse fixture method of the subclass that stores it on `self`.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from meshkit._errors import ConfigurationError, VersionConflictError
from meshkit.eventsourcing import NO_STREAM, CheckpointStore, Event, EventStore, Snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

__all__ = ["CheckpointStoreConformance", "EventStoreConformance"]

_WAIT = 10.0  # seconds a test may wait for a backend to wake a waiter (a guard, not a sleep)


def _check(ok: bool, message: str) -> None:  # noqa: FBT001 - an assert as a function
    if not ok:
        raise AssertionError(message)


def _equal(actual: object, expected: object, what: str) -> None:
    _check(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")


@contextlib.contextmanager
def _raises(kind: type[BaseException], what: str) -> Iterator[None]:
    try:
        yield
    except kind:
        return
    raise AssertionError(f"{what}: expected {kind.__name__}")


def make_events(stream_id: str, first_version: int, count: int) -> list[Event]:
    """Return `count` events of `stream_id` numbered from `first_version`, with rich fields."""
    return [
        Event(
            stream_id=stream_id,
            version=version,
            type="Happened",
            data={"n": version, "nested": {"list": [1, 2.5, None, True]}, "text": "naïve ✓"},
            schema_version=2,
            timestamp=dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC),
            correlation_id=uuid.uuid4(),
            causation_id=None if version % 2 else uuid.uuid4(),
        )
        for version in range(first_version, first_version + count)
    ]


def _ids(events: list[Event]) -> list[uuid.UUID]:
    return [event.event_id for event in events]


def _add_anyio_mark(cls: type) -> None:
    import pytest  # noqa: PLC0415 - only needed when a test class subclasses a suite

    marks = getattr(cls, "pytestmark", [])
    marks = list(marks) if isinstance(marks, list | tuple) else [marks]
    cls.pytestmark = [*marks, pytest.mark.anyio]  # type: ignore[attr-defined]


class EventStoreConformance(abc.ABC):
    """The behaviour every `EventStore` must have; subclass it and implement `make_store`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:  # noqa: ANN401 - passed through
        super().__init_subclass__(**kwargs)
        _add_anyio_mark(cls)

    @abc.abstractmethod
    async def make_store(self) -> EventStore:
        """Return a new, empty store (the suite closes it)."""

    @contextlib.asynccontextmanager
    async def _store(self) -> AsyncIterator[EventStore]:
        store = await self.make_store()
        try:
            yield store
        finally:
            await store.aclose()

    async def test_append_and_read_back(self) -> None:
        """Appended events read back with every field intact and positions assigned."""
        async with self._store() as store:
            events = make_events("s-1", 1, 3)
            _equal(await store.append("s-1", events, NO_STREAM), 3, "append's version")
            read = await store.read("s-1")
            _equal([attrs_without_position(e) for e in read], events, "events read back")
            positions = [e.position for e in read]
            _check(all(isinstance(p, int) and p > 0 for p in positions), "positions are set")
            _equal(await store.stream_version("s-1"), 3, "stream_version")
            _equal(await store.append("s-1", make_events("s-1", 4, 1), 3), 4, "second append")

    async def test_unknown_stream_is_empty(self) -> None:
        """An unknown stream reads as empty at version NO_STREAM."""
        async with self._store() as store:
            _equal(await store.read("nope"), [], "read of an unknown stream")
            _equal(await store.stream_version("nope"), NO_STREAM, "its version")
            _equal(await store.read_all(), [], "read_all of an empty store")

    async def test_version_conflict_writes_nothing(self) -> None:
        """A stale expected version raises VersionConflictError and writes nothing."""
        async with self._store() as store:
            await store.append("s-1", make_events("s-1", 1, 2), NO_STREAM)
            for expected in (0, 1, 3):
                stale = make_events("s-1", expected + 1, 2)
                with _raises(VersionConflictError, f"append at {expected}"):
                    await store.append("s-1", stale, expected)
            try:
                await store.append("s-1", make_events("s-1", 2, 1), 1)
            except VersionConflictError as exc:
                _equal((exc.stream_id, exc.expected_version), ("s-1", 1), "error fields")
                _equal(exc.actual_version, 2, "actual_version")
            _equal(len(await store.read_all()), 2, "events stored")

    async def test_concurrent_writers_one_wins(self) -> None:
        """Of several writers expecting the same version, exactly one succeeds."""
        async with self._store() as store:
            outcomes: list[str] = []

            async def write() -> None:
                try:
                    await store.append("s-1", make_events("s-1", 1, 2), NO_STREAM)
                    outcomes.append("won")
                except VersionConflictError:
                    outcomes.append("lost")

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(write)
            _equal(sorted(outcomes), ["lost", "lost", "lost", "won"], "outcomes")
            _equal(await store.stream_version("s-1"), 2, "version")

    async def test_idempotent_retry(self) -> None:
        """Appending the same event ids at the same versions again is a no-op."""
        async with self._store() as store:
            events = make_events("s-1", 1, 2)
            await store.append("s-1", events, NO_STREAM)
            await store.append("s-1", make_events("s-1", 3, 1), 2)
            _equal(await store.append("s-1", events, NO_STREAM), 2, "retry's version")
            _equal(await store.append("s-1", events[1:], 1), 2, "retry of a suffix")
            _equal(len(await store.read_all()), 3, "events stored")

    async def test_reused_event_ids_conflict(self) -> None:
        """Ids that match only partly, or sit elsewhere, raise VersionConflictError."""
        async with self._store() as store:
            events = make_events("s-1", 1, 2)
            await store.append("s-1", events, NO_STREAM)
            mixed = [events[0], make_events("s-1", 2, 1)[0]]
            with _raises(VersionConflictError, "a partial id match"):
                await store.append("s-1", mixed, NO_STREAM)
            moved = [Event(stream_id="s-2", version=1, type="X", event_id=events[0].event_id)]
            with _raises(VersionConflictError, "an id stored in another stream"):
                await store.append("s-2", moved, NO_STREAM)
            _equal(await store.stream_version("s-2"), NO_STREAM, "s-2 version")

    async def test_read_from_version_with_limit(self) -> None:
        """read() honours from_version and limit."""
        async with self._store() as store:
            await store.append("s-1", make_events("s-1", 1, 5), NO_STREAM)
            _equal([e.version for e in await store.read("s-1", 3)], [3, 4, 5], "from 3")
            _equal([e.version for e in await store.read("s-1", 2, limit=2)], [2, 3], "limit")
            _equal(await store.read("s-1", 6), [], "past the end")

    async def test_read_all_is_ordered(self) -> None:
        """read_all() returns interleaved streams in append order, resumable by position."""
        async with self._store() as store:
            order: list[tuple[str, int]] = []
            for round_ in range(3):
                for stream in ("a", "b"):
                    await store.append(stream, make_events(stream, round_ + 1, 1), round_)
                    order.append((stream, round_ + 1))
            everything = await store.read_all()
            _equal([(e.stream_id, e.version) for e in everything], order, "global order")
            positions = [e.position or 0 for e in everything]
            _equal(positions, sorted(set(positions)), "strictly increasing positions")
            after = await store.read_all(positions[1], limit=3)
            _equal(_ids(after), _ids(everything[2:5]), "read_all after a position")
            _equal(await store.read_all(positions[-1]), [], "after the last")

    async def test_snapshots(self) -> None:
        """load_snapshot() returns the latest saved snapshot, or None."""
        async with self._store() as store:
            _equal(await store.load_snapshot("s-1"), None, "no snapshot yet")
            stamp = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
            first = Snapshot(
                stream_id="s-1", version=3, type="Order", state={"a": [1]}, timestamp=stamp
            )
            await store.save_snapshot(first)
            _equal(await store.load_snapshot("s-1"), first, "saved snapshot")
            second = Snapshot(
                stream_id="s-1", version=9, type="Order", state={"b": 2}, schema_version=2
            )
            await store.save_snapshot(second)
            loaded = await store.load_snapshot("s-1")
            _equal(loaded and (loaded.version, loaded.state), (9, {"b": 2}), "replaced")
            _equal(loaded and loaded.schema_version, 2, "schema marker")
            _equal(await store.load_snapshot("s-2"), None, "other stream")

    async def test_wait_for_new(self) -> None:
        """wait_for_new() returns at once when behind, and wakes when an event is appended."""
        async with self._store() as store:
            await store.append("s-1", make_events("s-1", 1, 1), NO_STREAM)
            with anyio.fail_after(_WAIT):
                await store.wait_for_new(0)
            # Read the position before starting the waiter: on trio, wait_all_tasks_blocked()
            # counts a task waiting on a worker thread as blocked, so a read inside the waiter
            # could still be running when the append lands, and it would then wait for one too
            # many events.
            position = (await store.read_all())[-1].position or 0
            woke: list[bool] = []

            async def waiter() -> None:
                await store.wait_for_new(position)
                woke.append(True)

            with anyio.fail_after(_WAIT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(waiter)
                    await anyio.wait_all_tasks_blocked()
                    _equal(woke, [], "woke before the append")
                    await store.append("s-1", make_events("s-1", 2, 1), 1)
            _equal(woke, [True], "woke after the append")

    async def test_bad_input_writes_nothing(self) -> None:
        """Bad append or read arguments raise ConfigurationError and write nothing."""
        async with self._store() as store:
            good = make_events("s-1", 1, 2)
            duplicate = [
                good[0],
                Event(stream_id="s-1", version=2, type="X", event_id=good[0].event_id),
            ]
            cases: list[tuple[str, list[Event], int]] = [
                ("negative expected version", make_events("s-1", 1, 1), -1),
                ("no events", [], 0),
                ("another stream's event", [*good[:1], *make_events("s-2", 2, 1)], 0),
                ("a version gap", [good[0], *make_events("s-1", 3, 1)], 0),
                ("versions not after expected", good, 1),
                ("duplicate ids", duplicate, 0),
            ]
            for what, events, expected in cases:
                with _raises(ConfigurationError, what):
                    await store.append("s-1", events, expected)
            with _raises(ConfigurationError, "limit=0"):
                await store.read_all(0, limit=0)
            with _raises(ConfigurationError, "negative after_position"):
                await store.read_all(-1)
            _equal(await store.read_all(), [], "nothing written")


def attrs_without_position(event: Event) -> Event:
    """Return `event` with `position=None`, to compare with what was appended."""
    return attrs.evolve(event, position=None)


class CheckpointStoreConformance(abc.ABC):
    """The behaviour every `CheckpointStore` must have; implement `make_checkpoints`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:  # noqa: ANN401 - passed through
        super().__init_subclass__(**kwargs)
        _add_anyio_mark(cls)

    @abc.abstractmethod
    async def make_checkpoints(self) -> CheckpointStore:
        """Return a new, empty checkpoint store."""

    @contextlib.asynccontextmanager
    async def _checkpoints(self) -> AsyncIterator[CheckpointStore]:
        store = await self.make_checkpoints()
        try:
            yield store
        finally:
            aclose = getattr(store, "aclose", None)
            if aclose is not None:
                await aclose()

    async def test_checkpoints_move_forward(self) -> None:
        """Positions start at 0, are kept per name, and never move back."""
        async with self._checkpoints() as store:
            await self._check_forward(store)

    async def _check_forward(self, store: CheckpointStore) -> None:
        _equal(await store.load_checkpoint("projection"), 0, "initial position")
        await store.save_checkpoint("projection", 7)
        await store.save_checkpoint("other", 2)
        _equal(await store.load_checkpoint("projection"), 7, "saved position")
        await store.save_checkpoint("projection", 5)
        _equal(await store.load_checkpoint("projection"), 7, "after saving a lower one")
        await store.save_checkpoint("projection", 12)
        _equal(await store.load_checkpoint("projection"), 12, "after saving a higher one")
        _equal(await store.load_checkpoint("other"), 2, "another name")

    async def test_bad_checkpoints(self) -> None:
        """A negative position or an empty name raises ConfigurationError."""
        async with self._checkpoints() as store:
            await self._check_bad(store)

    async def _check_bad(self, store: CheckpointStore) -> None:
        with _raises(ConfigurationError, "negative position"):
            await store.save_checkpoint("projection", -1)
        with _raises(ConfigurationError, "empty name"):
            await store.save_checkpoint("", 1)
        _equal(await store.load_checkpoint("projection"), 0, "nothing saved")
