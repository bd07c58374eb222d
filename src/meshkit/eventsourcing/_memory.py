"""In-memory `EventStore` and `CheckpointStore`, for tests and single-process prototypes.

The state lives in Python lists and dicts behind a `threading.Lock`; every mutation is a
synchronous `_nowait` method (which hypothesis state machines drive directly), wrapped by the
async methods of the protocol. Payloads are checked to serialize (as a persistent backend
would refuse what does not) but kept by reference: treat `Event.data` as
immutable once appended. Snapshot state is deep-copied on the way in and out, as a
serializing backend would.
"""

from __future__ import annotations

import copy
import threading
from typing import TYPE_CHECKING, final

import anyio
import anyio.lowlevel
import attrs

from meshkit._errors import ConfigurationError, VersionConflictError
from meshkit._validate import instance_of, optional, require
from meshkit.eventsourcing._checks import (
    check_append,
    check_limit,
    check_name,
    check_position,
    check_read,
    check_stream_id,
)
from meshkit.eventsourcing._event import Event, JSONSerializer, Serializer, Snapshot

if TYPE_CHECKING:
    import uuid
    from collections.abc import Sequence

__all__ = ["MemoryCheckpointStore", "MemoryEventStore"]


@final
@attrs.define(eq=False)
class MemoryEventStore:
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

    Attributes:
        serializer: Every appended payload must encode with it, as it must for the SQLite and
            PostgreSQL stores, so code tested on memory cannot store what production would
            refuse (`ConfigurationError` naming `event.data`). The events themselves are kept
            by reference. `None` skips the check.
    """

    serializer: Serializer | None = attrs.field(
        factory=JSONSerializer, kw_only=True, validator=optional(instance_of(Serializer))
    )
    _log: list[Event] = attrs.field(init=False, factory=list)
    _streams: dict[str, list[Event]] = attrs.field(init=False, factory=dict)
    _ids: set[uuid.UUID] = attrs.field(init=False, factory=set)
    _snapshots: dict[str, Snapshot] = attrs.field(init=False, factory=dict)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _new: anyio.Event | None = attrs.field(init=False, default=None)
    _waiters: int = attrs.field(init=False, default=0)

    # ------------------------------------------------------------ synchronous core

    def append_nowait(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        """Append without waiting (see `append`).

        Raises:
            VersionConflictError: If the stream is not at `expected_version`, or an event id
                is already stored elsewhere.
            ConfigurationError: As `append` does.
        """
        check_append(stream_id, events, expected_version)
        if self.serializer is not None:
            check_payloads(self.serializer, events)
        with self._lock:
            stream = self._streams.get(stream_id)
            current = 0 if stream is None else len(stream)
            if current != expected_version or any(e.event_id in self._ids for e in events):
                return self._resolve(stream or [], events, expected_version, current)
            if stream is None:
                stream = self._streams[stream_id] = []
            position = len(self._log)
            for event in events:
                position += 1
                stored = _with_position(event, position)
                stream.append(stored)
                self._log.append(stored)
                self._ids.add(event.event_id)
        self._notify()
        return expected_version + len(events)

    def read_nowait(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        """Read a stream without waiting (see `read`).

        Raises:
            ConfigurationError: If `stream_id` is not a str, `from_version` not an int, or
                `limit` is given and not >= 1.
        """
        check_read(stream_id, from_version, limit)
        stream = self._streams.get(stream_id)
        if stream is None:
            return []
        start = max(from_version, 1) - 1
        return stream[start:] if limit is None else stream[start : start + limit]

    def read_all_nowait(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        """Read the global log without waiting (see `read_all`).

        Raises:
            ConfigurationError: If `after_position < 0` or `limit` is not >= 1.
        """
        check_position("after_position", after_position)
        check_limit(limit)
        log = self._log
        return (
            log[after_position:] if limit is None else log[after_position : after_position + limit]
        )

    def stream_version_nowait(self, stream_id: str) -> int:
        """Return the stream's version without waiting.

        Raises:
            ConfigurationError: If `stream_id` is not a str.
        """
        check_stream_id(stream_id)
        stream = self._streams.get(stream_id)
        return 0 if stream is None else len(stream)

    @property
    def last_position(self) -> int:
        """The position of the last stored event (0 when empty)."""
        return len(self._log)

    # ------------------------------------------------------------ the EventStore protocol

    async def append(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        """Append `events` atomically if `stream_id` is at `expected_version`.

        Returns:
            The stream's version after the append (for an idempotent retry, the version the
            original append reached).

        Raises:
            VersionConflictError: If the stream is not at `expected_version`, or an event id
                is already stored elsewhere.
            ConfigurationError: If `expected_version < 0`, `events` is empty, or an event's
                stream id, version or id does not fit.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.append_nowait(stream_id, events, expected_version)

    async def read(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        """Return the events of `stream_id` from `from_version` on, in order.

        Raises:
            ConfigurationError: If `stream_id` is not a str, `from_version` not an int, or
                `limit` is given and not >= 1.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.read_nowait(stream_id, from_version, limit=limit)

    async def read_all(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        """Return the events of the global log after `after_position`, in order.

        Raises:
            ConfigurationError: If `after_position < 0` or `limit` is not >= 1.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.read_all_nowait(after_position, limit=limit)

    async def stream_version(self, stream_id: str) -> int:
        """Return the version of `stream_id` (0 when it has no events).

        Raises:
            ConfigurationError: If `stream_id` is not a str.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self.stream_version_nowait(stream_id)

    async def wait_for_new(self, after_position: int) -> None:
        """Return once the log holds an event past `after_position`.

        Raises:
            ConfigurationError: If `after_position < 0`.
        """
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
        """Store (a deep copy of) `snapshot`, replacing the stream's previous one.

        Raises:
            ConfigurationError: If `snapshot` is not a `Snapshot`.
        """
        require(isinstance(snapshot, Snapshot), "snapshot", snapshot, "must be a Snapshot")
        await anyio.lowlevel.checkpoint_if_cancelled()
        stored = attrs.evolve(snapshot, state=copy.deepcopy(dict(snapshot.state)))
        with self._lock:
            self._snapshots[snapshot.stream_id] = stored

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """Return (a deep copy of) the latest snapshot of `stream_id`, or `None`.

        Raises:
            ConfigurationError: If `stream_id` is not a str.
        """
        check_stream_id(stream_id)
        await anyio.lowlevel.checkpoint_if_cancelled()
        snapshot = self._snapshots.get(stream_id)
        if snapshot is None:
            return None
        return attrs.evolve(snapshot, state=copy.deepcopy(dict(snapshot.state)))

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

    def _notify(self) -> None:
        new, self._new = self._new, None
        if new is not None:
            new.set()


_EVENT_FIELDS = tuple(field.name for field in attrs.fields(Event) if field.name != "position")
_set = object.__setattr__


def check_payloads(serializer: Serializer, events: Sequence[Event]) -> None:
    """Raise `ConfigurationError` unless every event's payload encodes with `serializer`."""
    for event in events:
        try:
            serializer.dumps(event.data)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError("event.data", event.data, str(exc)) from exc


def _with_position(event: Event, position: int) -> Event:
    """Copy the (already validated) `event` with its position, without re-validating it."""
    stored = object.__new__(Event)
    for name in _EVENT_FIELDS:
        _set(stored, name, getattr(event, name))
    _set(stored, "position", position)
    return stored


@final
@attrs.define(eq=False)
class MemoryCheckpointStore:
    """A `CheckpointStore` that keeps positions in a dict."""

    _positions: dict[str, int] = attrs.field(init=False, factory=dict)

    async def load_checkpoint(self, name: str) -> int:
        """Return the saved position of `name` (0 when it has none).

        Raises:
            ConfigurationError: If `name` is not a non-empty str.
        """
        check_name(name)
        await anyio.lowlevel.checkpoint_if_cancelled()
        return self._positions.get(name, 0)

    async def save_checkpoint(self, name: str, position: int) -> None:
        """Save `position` for `name`; a lower position than the saved one is ignored.

        Raises:
            ConfigurationError: If `name` is empty or `position < 0`.
        """
        check_name(name)
        check_position("position", position)
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._positions[name] = max(position, self._positions.get(name, 0))
