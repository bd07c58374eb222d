"""A hypothesis state machine: any interleaving of appends, conflicts, retries and reads on the
memory store's synchronous core matches a plain model of streams and a global log."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshkit import ConfigurationError, VersionConflictError
from meshkit.eventsourcing import Event, MemoryEventStore

if TYPE_CHECKING:
    import uuid

STREAMS = st.sampled_from(["a", "b", "c"])


class EventStoreMachine(RuleBasedStateMachine):
    """The store against a model: stream -> event ids, and the global order of ids."""

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryEventStore()
        self.streams: dict[str, list[uuid.UUID]] = {}
        self.log: list[uuid.UUID] = []
        self.last_batch: tuple[str, list[Event], int] | None = None

    def _version(self, stream: str) -> int:
        return len(self.streams.get(stream, []))

    def _batch(self, stream: str, expected: int, count: int) -> list[Event]:
        return [
            Event(stream_id=stream, version=expected + i, type="T", data={"i": i})
            for i in range(1, count + 1)
        ]

    @rule(stream=STREAMS, count=st.integers(1, 3))
    def append(self, stream: str, count: int) -> None:
        """An append at the current version succeeds and extends stream and log."""
        expected = self._version(stream)
        batch = self._batch(stream, expected, count)
        assert self.store.append_nowait(stream, batch, expected) == expected + count
        ids = [e.event_id for e in batch]
        self.streams.setdefault(stream, []).extend(ids)
        self.log.extend(ids)
        self.last_batch = (stream, batch, expected)

    @rule(stream=STREAMS, count=st.integers(1, 3), off=st.sampled_from([-2, -1, 1, 2]))
    def stale_append(self, stream: str, count: int, off: int) -> None:
        """An append at any other version raises VersionConflictError and writes nothing."""
        expected = self._version(stream) + off
        if expected < 0:
            with pytest.raises(ConfigurationError):
                self.store.append_nowait(stream, self._batch(stream, expected, count), expected)
            return
        with pytest.raises(VersionConflictError):
            self.store.append_nowait(stream, self._batch(stream, expected, count), expected)

    @precondition(lambda self: self.last_batch is not None)
    @rule()
    def retry_last(self) -> None:
        """Re-appending the last successful batch is a no-op returning its version."""
        assert self.last_batch is not None
        stream, batch, expected = self.last_batch
        assert self.store.append_nowait(stream, batch, expected) == expected + len(batch)

    @rule(stream=STREAMS, start=st.integers(1, 8), limit=st.none() | st.integers(1, 4))
    def read(self, stream: str, start: int, limit: int | None) -> None:
        """read() returns the model's slice of the stream."""
        ids = self.streams.get(stream, [])[start - 1 :]
        want = ids if limit is None else ids[:limit]
        got = self.store.read_nowait(stream, start, limit=limit)
        assert [e.event_id for e in got] == want
        assert [e.version for e in got] == list(range(start, start + len(got)))

    @rule(after=st.integers(0, 20), limit=st.none() | st.integers(1, 5))
    def read_all(self, after: int, limit: int | None) -> None:
        """read_all() returns the model's slice of the global log with matching positions."""
        want = self.log[after:] if limit is None else self.log[after : after + limit]
        got = self.store.read_all_nowait(after, limit=limit)
        assert [e.event_id for e in got] == want
        assert [e.position for e in got] == list(range(after + 1, after + 1 + len(got)))

    @invariant()
    def versions_match(self) -> None:
        """Every stream's version and the last position match the model."""
        for stream in ("a", "b", "c"):
            assert self.store.stream_version_nowait(stream) == self._version(stream)
        assert self.store.last_position == len(self.log)


EventStoreMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30)
TestEventStoreMachine = EventStoreMachine.TestCase
