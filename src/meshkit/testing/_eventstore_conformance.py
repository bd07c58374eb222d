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

from meshkit._errors import (
    ConfigurationError,
    DuplicateEventIdError,
    EventDecodeError,
    VersionConflictError,
)
from meshkit.eventsourcing import NO_STREAM, CheckpointStore, Event, EventStore, Snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Iterator

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
        """Partly matching ids conflict; ids stored elsewhere are duplicates naming their stream.

        A partial match is a `VersionConflictError`; an id stored elsewhere a
        `DuplicateEventIdError` naming the id and the stream that holds it.
        """
        async with self._store() as store:
            events = make_events("s-1", 1, 2)
            await store.append("s-1", events, NO_STREAM)
            mixed = [events[0], make_events("s-1", 2, 1)[0]]
            with _raises(VersionConflictError, "a partial id match"):
                await store.append("s-1", mixed, NO_STREAM)
            moved = [Event(stream_id="s-2", version=1, type="X", event_id=events[0].event_id)]
            try:
                await store.append("s-2", moved, NO_STREAM)
            except DuplicateEventIdError as exc:
                found = (exc.event_id, exc.stream_id, exc.appended_to)
                _equal(found, (events[0].event_id, "s-1", "s-2"), "error fields")
                _check(str(events[0].event_id) in str(exc), "the message names the id")
            else:
                raise AssertionError("an id stored in another stream: no error")
            again = [Event(stream_id="s-1", version=3, type="X", event_id=events[1].event_id)]
            with _raises(DuplicateEventIdError, "an id stored earlier in the same stream"):
                await store.append("s-1", again, 2)
            _equal(await store.stream_version("s-2"), NO_STREAM, "s-2 version")
            _equal(await store.stream_version("s-1"), 2, "s-1 version")

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

    async def test_text_limits_are_the_same_everywhere(self) -> None:
        """A lone surrogate, a NUL or an over-long stream id is refused, on append and read."""
        async with self._store() as store:
            bad_texts = {
                "a lone surrogate": "bad-\ud800",
                "a NUL": "bad\x00id",
                "over 1024 UTF-8 bytes": "é" * 513,
            }
            for what, text in bad_texts.items():
                with _raises(ConfigurationError, f"stream_id with {what}"):
                    await store.append(text, [_event(text)], NO_STREAM)
                with _raises(ConfigurationError, f"type with {what}"):
                    await store.append("s-1", [_event("s-1", type=text)], NO_STREAM)
                with _raises(ConfigurationError, f"read of a stream_id with {what}"):
                    await store.read(text)
                with _raises(ConfigurationError, f"stream_version of a stream_id with {what}"):
                    await store.stream_version(text)
            longest = "é" * 512  # exactly 1024 UTF-8 bytes
            _equal(await store.append(longest, [_event(longest)], NO_STREAM), 1, "1024 bytes")
            with anyio.fail_after(_WAIT):  # PostgreSQL shows it once older transactions end
                await store.wait_for_new(0)
            _equal(len(await store.read_all()), 1, "only the valid append stored")

    async def test_numeric_limits_are_the_same_everywhere(self) -> None:
        """schema_version >= 2**31, versions past 2**63 and bad limits are refused alike."""
        async with self._store() as store:
            with _raises(ConfigurationError, "schema_version 2**31"):
                await store.append("s-1", [_event("s-1", schema_version=2**31)], NO_STREAM)
            with _raises(ConfigurationError, "expected_version 2**63"):
                await store.append("s-1", [_event("s-1", version=2**63 + 1)], 2**63)
            with _raises(ConfigurationError, "a last version of 2**63"):
                await store.append("s-1", [_event("s-1", version=2**63)], 2**63 - 1)
            with _raises(VersionConflictError, "expected_version 2**63 - 2 on an empty stream"):
                await store.append("s-1", [_event("s-1", version=2**63 - 1)], 2**63 - 2)
            with _raises(ConfigurationError, "read_all after 2**63"):
                await store.read_all(2**63)
            with _raises(ConfigurationError, "read from version 2**63"):
                await store.read("s-1", 2**63)
            top = _event("s-1", schema_version=2**31 - 1)
            _equal(await store.append("s-1", [top], NO_STREAM), 1, "schema_version 2**31 - 1")

    async def test_timestamps_out_of_range_in_utc_are_refused(self) -> None:
        """A timestamp that overflows once normalised to UTC raises ConfigurationError."""
        async with self._store() as store:
            late = dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
            with _raises(ConfigurationError, "a timestamp past year 9999 in UTC"):
                await store.append("s-1", [_event("s-1", timestamp=late)], NO_STREAM)
            early = dt.datetime(1, 1, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=5)))
            with _raises(ConfigurationError, "a timestamp before year 1 in UTC"):
                await store.append("s-1", [_event("s-1", timestamp=early)], NO_STREAM)
            east = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
            await store.append("s-1", [_event("s-1", timestamp=east)], NO_STREAM)
            stored = (await store.read("s-1"))[0].timestamp
            _equal((stored, stored.utcoffset()), (east, dt.timedelta(0)), "read back in UTC")

    async def test_payloads_are_strict_json(self) -> None:
        """NaN, infinities, huge ints and deep nesting are refused; data reads back as JSON."""
        async with self._store() as store:
            deep: dict[str, Any] = {}
            inner = deep
            for _ in range(100_000):
                inner["a"] = {}
                inner = inner["a"]
            bad: dict[str, dict[str, Any]] = {
                "NaN": {"x": float("nan")},
                "infinity": {"x": [float("inf")]},
                "100,000 levels": deep,
                "101 levels": _nested(101),
                # Too long for int-to-str (4,300 digits): the error's own repr must not fail.
                "a 5,000-digit int": {"x": 10**5000},
            }
            for what, data in bad.items():
                with _raises(ConfigurationError, f"a payload with {what}"):
                    await store.append("s-1", [_event("s-1", data=data)], NO_STREAM)
                snapshot = Snapshot(stream_id="s-1", version=1, type="T", state=data)
                with _raises(ConfigurationError, f"a snapshot state with {what}"):
                    await store.save_snapshot(snapshot)
            good: dict[Any, Any] = {1: "int key", "t": (1, 2), "deep": _nested(99)}
            await store.append("s-1", [_event("s-1", data=good)], NO_STREAM)
            read = (await store.read("s-1"))[0].data
            expected = {"1": "int key", "t": [1, 2], "deep": _nested(99)}
            _equal(read, expected, "JSON round-trip semantics")
            await store.save_snapshot(Snapshot(stream_id="s-1", version=1, type="T", state=good))
            loaded = await store.load_snapshot("s-1")
            _equal(loaded and loaded.state, expected, "snapshot state round trip")

    async def test_async_context_manager(self) -> None:
        """The store is an async context manager that yields itself."""
        store = await self.make_store()
        async with store as entered:  # type: ignore[attr-defined] # not in the protocol
            _check(entered is store, "yields the store")
            await store.append("s-1", [_event("s-1")], NO_STREAM)

    async def corrupt_event(
        self, store: EventStore, stream_id: str, column: str, value: object
    ) -> bool:
        """Overwrite `column` of the event at version 1 of `stream_id` with `value`.

        Return whether the backend can hold such a value at all (a typed column cannot hold
        text, a memory store has no rows to corrupt); the default holds none. A backend
        that returns True must make `read` raise `EventDecodeError` for it.
        """
        del store, stream_id, column, value
        return False

    async def test_corrupt_rows_raise_event_decode_error(self) -> None:
        """A corrupt stored event raises EventDecodeError naming stream, version and type."""
        cases: list[tuple[str, object]] = [
            ("data", 10**12),  # bytes(10**12) would allocate a terabyte
            ("data", b"[" * 100_000 + b"]" * 100_000),
            ("data", '{"a": 1}'),  # text where bytes belong
            ("data", b"{not json"),
            ("data", b"[1]"),
            ("data", b'{"x": NaN}'),  # not strict JSON
            ("version", "one"),
            ("timestamp", "yesterday"),
        ]
        tried = 0
        async with self._store() as store:
            for n, (column, value) in enumerate(cases):
                stream = f"corrupt-{n}"
                await store.append(stream, [_event(stream, type="Kind")], NO_STREAM)
                position = (await store.read(stream))[0].position or 1
                if await self.corrupt_event(store, stream, column, value):
                    tried += 1
                    await self._check_corrupt_stream(store, stream, position, column, value)
        if tried == 0:
            import pytest  # noqa: PLC0415 - only when a backend runs the suite

            pytest.skip("this backend cannot hold corrupt rows")

    async def _check_corrupt_stream(
        self, store: EventStore, stream: str, position: int, column: str, value: object
    ) -> None:
        what = f"{column}={value!r:.40}"
        await self._check_corrupt(store.read(stream), stream, what)
        with anyio.fail_after(_WAIT):  # PostgreSQL shows the row once older transactions end
            await store.wait_for_new(position - 1)
        await self._check_corrupt(store.read_all(position - 1), stream, what)
        if column == "version":  # the version a writer compares with
            await self._check_corrupt(store.stream_version(stream), stream, what)
            again = [_event(stream, version=2, type="Kind")]
            await self._check_corrupt(store.append(stream, again, 1), stream, what)

    async def _check_corrupt(self, read: Awaitable[object], stream: str, what: str) -> None:
        try:
            await read
        except EventDecodeError as exc:
            _equal((exc.stream_id, exc.event_type), (stream, "Kind"), f"{what}: fields")
            _check(exc.version in {1, "one"}, f"{what}: version named")
        else:
            raise AssertionError(f"{what}: no EventDecodeError")


def _event(stream_id: str, **fields: object) -> Event:
    return Event(**{"stream_id": stream_id, "version": 1, "type": "T", **fields})  # type: ignore[arg-type]


def _nested(depth: int) -> dict[str, Any]:
    """Return a payload of `depth` nested containers (the payload itself is the first)."""
    data: dict[str, Any] = {}
    inner = data
    for _ in range(depth - 1):
        inner["a"] = {}
        inner = inner["a"]
    return data


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
