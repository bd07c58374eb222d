"""The SQLite store, driven by hypothesis, behaves exactly like the in-memory model."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshkit import VersionConflictError
from meshkit.eventsourcing import Event, MemoryEventStore, SQLiteEventStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

STREAMS = ("a", "b", "c")


def _run(function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return anyio.run(function, *args)


class SQLiteMatchesMemory(RuleBasedStateMachine):
    """Appends (right, wrong or repeated) give the same outcomes and log on both stores."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        path = Path(self.tmp.name) / "model.db"
        self.store = SQLiteEventStore(path=path, synchronous="NORMAL")
        self.model = MemoryEventStore()
        self.last: tuple[str, list[Event], int] | None = None

    def _both(self, stream_id: str, events: list[Event], expected: int) -> None:
        try:
            want: object = self.model.append_nowait(stream_id, events, expected)
        except VersionConflictError:
            want = VersionConflictError
        try:
            got: object = _run(self.store.append, stream_id, events, expected)
        except VersionConflictError:
            got = VersionConflictError
        assert got == want

    @rule(
        stream_id=st.sampled_from(STREAMS),
        count=st.integers(1, 3),
        skew=st.sampled_from([0, 0, 0, -1, 1]),
    )
    def append(self, stream_id: str, count: int, skew: int) -> None:
        """Append at the current version, or one off it."""
        expected = max(self.model.stream_version_nowait(stream_id) + skew, 0)
        events = [
            Event(stream_id=stream_id, version=expected + n, type="T", data={"n": n})
            for n in range(1, count + 1)
        ]
        self._both(stream_id, events, expected)
        self.last = (stream_id, events, expected)

    @precondition(lambda self: self.last is not None)
    @rule()
    def retry_last(self) -> None:
        """Repeat the last append with the same ids: a no-op or a conflict, never a write."""
        assert self.last is not None
        self._both(*self.last)

    @invariant()
    def same_log(self) -> None:
        """The global logs hold the same events in the same order, positions increasing."""
        stored = _run(self.store.read_all)
        model = self.model.read_all_nowait()
        assert [(e.stream_id, e.version, e.event_id) for e in stored] == [
            (e.stream_id, e.version, e.event_id) for e in model
        ]
        positions = [e.position or 0 for e in stored]
        assert positions == sorted(set(positions))

    def teardown(self) -> None:
        _run(self.store.aclose)
        self.tmp.cleanup()


TestSQLiteMatchesMemory = SQLiteMatchesMemory.TestCase
TestSQLiteMatchesMemory.settings = settings(max_examples=15, stateful_step_count=12)
