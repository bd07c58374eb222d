"""In-memory `EventStore` and `CheckpointStore`, for tests and single-process prototypes.

The state lives in Python lists and dicts behind a `threading.Lock`; every mutation is a
synchronous `_nowait` method (which hypothesis state machines drive directly), wrapped by the
async methods of the protocol. It runs the very checks the SQL stores run (`_checks`), and
keeps what a serializing backend would read back: each payload and snapshot state is encoded
and decoded with the serializer (so integer keys become strings, tuples lists), timestamps are
normalised to UTC. Code tested on memory therefore meets production's rules and data.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel
import attrs

from meshkit._errors import ConfigurationError, DuplicateEventIdError, VersionConflictError
from meshkit._validate import instance_of, optional
from meshkit.eventsourcing._checks import (
    check_append,
    check_checkpoint,
    check_limit,
    check_name,
    check_position,
    check_read,
    check_snapshot,
    check_stream_id,
    encode_payload,
    to_utc,
)
from meshkit.eventsourcing._event import Event, JSONSerializer, Serializer, Snapshot
from meshkit.eventsourcing._store import StoreContext

if TYPE_CHECKING:
    import datetime as dt
    import uuid
    from collections.abc import Mapping, Sequence

__all__ = ["MemoryCheckpointStore", "MemoryEventStore"]


@final
@attrs.define(eq=False)
class MemoryEventStore(StoreContext):
    """An `EventStore` that keeps everything in memory.

    Example:
        ```python
        import anyio
        from meshkit.eventsourcing import Event, MemoryEventStore

        async def main() -> None:
            store = MemoryEventStore()
            event = Event(stream_id="s-1", version=1, type="Created")
            assert await store.append("s-1", [event], expected_version=0) == 1
            assert [e.position for e in await store.read_all()] == [1]

        anyio.run(main)
        ```

    It is an async context manager, as the SQL stores are (`async with MemoryEventStore()
    as store:`), and what each method does and raises is documented on the `EventStore`
    protocol.

    Attributes:
        serializer: Every appended payload (and snapshot state) is encoded and decoded with
            it, as the SQLite and PostgreSQL stores do, so code tested on memory can neither
            store what production would refuse (`ConfigurationError` naming `event.data`) nor
            read back other data than production would. A payload that is plain JSON (which
            decodes to an equal value) is kept by reference: treat `Event.data` as
            immutable once appended. Snapshot states are always copied. `None` skips both
            and keeps everything by reference.
    """

    serializer: Serializer | None = attrs.field(
        factory=JSONSerializer, kw_only=True, validator=optional(instance_of(Serializer))
    )
    _log: list[Event] = attrs.field(init=False, factory=list)
    _streams: dict[str, list[Event]] = attrs.field(init=False, factory=dict)
    _ids: dict[uuid.UUID, str] = attrs.field(init=False, factory=dict)
    _snapshots: dict[str, Snapshot] = attrs.field(init=False, factory=dict)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _new: anyio.Event | None = attrs.field(init=False, default=None)
    _waiters: int = attrs.field(init=False, default=0)

    # ------------------------------------------------------------ synchronous core

    def append_nowait(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        """Append without waiting (see `EventStore.append`, which lists its errors)."""
        check_append(stream_id, events, expected_version)
        # Converted before anything is written: each may still refuse its input.
        payloads = [self._round_trip("event.data", event.data) for event in events]
        stamps = [to_utc("event.timestamp", event.timestamp) for event in events]
        with self._lock:
            stream = self._streams.get(stream_id)
            current = 0 if stream is None else len(stream)
            if current != expected_version:
                return self._resolve(stream or [], events, expected_version, current)
            self._refuse_stored_ids(stream_id, events)
            if stream is None:
                stream = self._streams[stream_id] = []
            position = len(self._log)
            for event, data, stamp in zip(events, payloads, stamps, strict=True):
                position += 1
                stored = _stored(event, position, data, stamp)
                stream.append(stored)
                self._log.append(stored)
                self._ids[event.event_id] = stream_id
        self._notify()
        return expected_version + len(events)

    def read_nowait(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        """Read a stream without waiting (see `EventStore.read`)."""
        check_read(stream_id, from_version, limit)
        stream = self._streams.get(stream_id)
        if stream is None:
            return []
        start = max(from_version, 1) - 1
        return stream[start:] if limit is None else stream[start : start + limit]

    def read_all_nowait(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        """Read the global log without waiting (see `EventStore.read_all`)."""
        check_position("after_position", after_position)
        check_limit(limit)
        log = self._log
        return (
            log[after_position:] if limit is None else log[after_position : after_position + limit]
        )

    def stream_version_nowait(self, stream_id: str) -> int:
        """Return the stream's version without waiting (see `EventStore.stream_version`)."""
        check_stream_id(stream_id)
        stream = self._streams.get(stream_id)
        return 0 if stream is None else len(stream)

    @property
    def last_position(self) -> int:
        """The position of the last stored event (0 when empty)."""
        return len(self._log)

    # ------------------------------------------------------------ the EventStore protocol

    async def append(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        """See [`EventStore.append`][meshkit.eventsourcing.EventStore.append]."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.append_nowait(stream_id, events, expected_version)

    async def read(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        """See [`EventStore.read`][meshkit.eventsourcing.EventStore.read]."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.read_nowait(stream_id, from_version, limit=limit)

    async def read_all(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        """See [`EventStore.read_all`][meshkit.eventsourcing.EventStore.read_all]."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.read_all_nowait(after_position, limit=limit)

    async def stream_version(self, stream_id: str) -> int:
        """See [`EventStore.stream_version`][meshkit.eventsourcing.EventStore.stream_version]."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.stream_version_nowait(stream_id)

    async def wait_for_new(self, after_position: int) -> None:
        """See [`EventStore.wait_for_new`][meshkit.eventsourcing.EventStore.wait_for_new]."""
        check_position("after_position", after_position)
        while len(self._log) <= after_position:
            if self._new is None:
                self._new = anyio.Event()
            self._waiters += 1
            try:
                await self._new.wait()
            finally:
                self._waiters -= 1
                if self._waiters == 0:
                    self._new = None  # an event loop may end; its Event must not outlive it
        await anyio.lowlevel.checkpoint()

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """See [`EventStore.save_snapshot`][meshkit.eventsourcing.EventStore.save_snapshot]."""
        check_snapshot(snapshot)
        await anyio.lowlevel.checkpoint_if_cancelled()
        state = self._round_trip("snapshot.state", snapshot.state, copy=True)
        stamp = to_utc("snapshot.timestamp", snapshot.timestamp)
        stored = attrs.evolve(snapshot, state=state, timestamp=stamp)
        with self._lock:
            self._snapshots[snapshot.stream_id] = stored

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """See [`EventStore.load_snapshot`][meshkit.eventsourcing.EventStore.load_snapshot]."""
        check_stream_id(stream_id)
        await anyio.lowlevel.checkpoint_if_cancelled()
        snapshot = self._snapshots.get(stream_id)
        if snapshot is None:
            return None
        # A copy, as a database would return: the caller may mutate what it loaded.
        state = self._round_trip("snapshot.state", snapshot.state, copy=True)
        return attrs.evolve(snapshot, state=state)

    async def aclose(self) -> None:
        """Do nothing: there is nothing to release."""
        await anyio.lowlevel.checkpoint()

    # ------------------------------------------------------------ helpers

    def _resolve(
        self, stream: list[Event], events: Sequence[Event], expected: int, current: int
    ) -> int:
        stored = stream[expected : expected + len(events)]
        if [e.event_id for e in stored] == [e.event_id for e in events]:
            return expected + len(events)
        raise VersionConflictError(events[0].stream_id, expected, current)

    def _refuse_stored_ids(self, stream_id: str, events: Sequence[Event]) -> None:
        for event in events:
            holder = self._ids.get(event.event_id)
            if holder is not None:
                raise DuplicateEventIdError(event.event_id, holder, stream_id)

    def _round_trip(
        self, field: str, data: Mapping[str, Any], *, copy: bool = False
    ) -> Mapping[str, Any]:
        """Return `data` as the serializer reads it back (as it is, without a serializer).

        Unless a `copy` is asked for, plain JSON is kept as it is: it decodes to an equal
        value, and skipping the decoding saves ~40% of a small payload's round trip. Integer
        keys, tuples and subclasses are decoded, as a database would return them.
        """
        if self.serializer is None:
            return data
        raw = encode_payload(self.serializer, field, data)
        if not copy and type(self.serializer) is JSONSerializer and _is_plain_json(data):
            return data
        try:
            return self.serializer.loads(raw)
        except (TypeError, ValueError, RecursionError) as exc:
            # A custom serializer that cannot decode its own output: a SQL store would store
            # a row no read can decode; refusing it names the payload instead of a raw error.
            reason = f"the serializer cannot read it back: {exc}"
            raise ConfigurationError(field, data, reason) from exc

    def _notify(self) -> None:
        new, self._new = self._new, None
        if new is not None:
            new.set()


_SCALARS = frozenset({str, int, float, bool, type(None)})


_STR = frozenset({str})


def _is_plain_json(data: object) -> bool:
    """Return whether JSON reads `data` back equal, with the same types (no recursion)."""
    # A flat dict of str keys and scalars, the usual payload, is checked at C speed.
    if (
        type(data) is dict
        and {*map(type, data)} <= _STR
        and {*map(type, data.values())} <= _SCALARS
    ):
        return True
    pending = [data]
    while pending:
        value = pending.pop()
        kind = type(value)
        if kind is dict:
            if any(type(key) is not str for key in value):  # type: ignore[attr-defined]
                return False
            pending.extend(value.values())  # type: ignore[attr-defined]
        elif kind is list:
            pending.extend(value)  # type: ignore[arg-type]
        elif kind not in _SCALARS:
            return False
    return True


_COPIED = tuple(
    field.name
    for field in attrs.fields(Event)
    if field.name not in {"position", "data", "timestamp"}
)
_set = object.__setattr__


def _stored(event: Event, position: int, data: Mapping[str, Any], stamp: dt.datetime) -> Event:
    """Copy the (checked) `event` as stored: with its position, read-back data, UTC time.

    Built without re-running `Event`'s validators: every field was checked on the way in.
    """
    stored = object.__new__(Event)
    for name in _COPIED:
        _set(stored, name, getattr(event, name))
    _set(stored, "data", data)
    _set(stored, "timestamp", stamp)
    _set(stored, "position", position)
    return stored


@final
@attrs.define(eq=False)
class MemoryCheckpointStore:
    """A `CheckpointStore` that keeps positions in a dict."""

    _positions: dict[str, int] = attrs.field(init=False, factory=dict)

    async def load_checkpoint(self, name: str) -> int:
        """See `CheckpointStore.load_checkpoint`."""
        check_name(name)
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self._positions.get(name, 0)

    async def save_checkpoint(self, name: str, position: int) -> None:
        """See `CheckpointStore.save_checkpoint`."""
        check_checkpoint(name, position)
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._positions[name] = max(position, self._positions.get(name, 0))
