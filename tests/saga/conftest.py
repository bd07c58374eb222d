"""Fixtures for the saga tests: event stores on every backend, and recording participants."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from meshkit import EventStoreUnavailableError
from meshkit.eventsourcing import (
    Event,
    EventStore,
    MemoryEventStore,
    PostgresEventStore,
    Snapshot,
    SQLiteEventStore,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from meshkit.saga import StepContext

StoreFactory = Callable[[], Awaitable[EventStore]]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Yield a factory of stores that share one database (memory: one shared store)."""
    opened: list[EventStore] = []
    shared = MemoryEventStore()

    async def make() -> EventStore:
        store: EventStore
        if request.param == "memory":
            return shared
        if request.param == "sqlite":
            store = await SQLiteEventStore.open(tmp_path / "saga.db")
        else:
            dsn = request.getfixturevalue("postgres_dsn")
            schema = request.getfixturevalue("pg_schema")
            store = await PostgresEventStore.open(dsn, schema=schema, max_connections=4)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.aclose()


class Participant:
    """A participant keeping a ledger keyed by idempotency key, with injectable failures.

    `fail[step]` is how many more calls of the action fail; `fail_undo[step]` the same for
    the compensation (-1: always).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.ledger: dict[str, str] = {}
        self.fail: dict[str, int] = {}
        self.fail_undo: dict[str, int] = {}
        self.applied = 0
        self.undone = 0

    def _should_fail(self, table: dict[str, int], step: str) -> bool:
        left = table.get(step, 0)
        if left == 0:
            return False
        if left > 0:
            table[step] = left - 1
        return True

    async def act(self, data: Any, context: StepContext) -> dict[str, Any]:
        self.calls.append(("do", context.step, context.attempt))
        if self._should_fail(self.fail, context.step):
            msg = f"{context.step} refused"
            raise RuntimeError(msg)
        if context.idempotency_key not in self.ledger:
            self.ledger[context.idempotency_key] = "done"
            self.applied += 1
        return {context.step: context.idempotency_key}

    async def undo(self, data: Any, context: StepContext) -> None:
        self.calls.append(("undo", context.step, context.attempt))
        assert context.compensating
        if self._should_fail(self.fail_undo, context.step):
            msg = f"{context.step} undo refused"
            raise RuntimeError(msg)
        if self.ledger.get(context.idempotency_key) == "done":
            self.undone += 1
        self.ledger[context.idempotency_key] = "undone"  # a tombstone: a late action is refused

    def did(self, operation: str) -> list[str]:
        return [step for op, step, _ in self.calls if op == operation]


class FlakyStore:
    """A memory store whose appends (and reads of the global log) fail on demand.

    `failures` appends fail first with `EventStoreUnavailableError` (or `append_error`);
    `read_failures` calls of `read_all` fail the same way.
    """

    def __init__(self, failures: int = 2, append_error: Exception | None = None) -> None:
        self.failures = failures
        self.read_failures = 0
        self.append_error = append_error or EventStoreUnavailableError("flaky", "append", "down")
        self.inner = MemoryEventStore()

    async def append(self, stream_id: str, events: Sequence[Event], expected_version: int) -> int:
        if self.failures:
            self.failures -= 1
            raise self.append_error
        return await self.inner.append(stream_id, events, expected_version)

    async def read(
        self, stream_id: str, from_version: int = 1, *, limit: int | None = None
    ) -> list[Event]:
        return await self.inner.read(stream_id, from_version, limit=limit)

    async def read_all(self, after_position: int = 0, *, limit: int | None = None) -> list[Event]:
        if self.read_failures:
            self.read_failures -= 1
            raise EventStoreUnavailableError("flaky", "read_all", "down")
        return await self.inner.read_all(after_position, limit=limit)

    async def stream_version(self, stream_id: str) -> int:
        return await self.inner.stream_version(stream_id)

    async def wait_for_new(self, after_position: int) -> None:
        await self.inner.wait_for_new(after_position)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self.inner.save_snapshot(snapshot)

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return await self.inner.load_snapshot(stream_id)

    async def aclose(self) -> None:
        await self.inner.aclose()
