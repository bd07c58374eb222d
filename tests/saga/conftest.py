"""Fixtures for the saga tests: event stores on every backend, and recording participants."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

from meshkit.eventsourcing import EventStore, MemoryEventStore, PostgresEventStore, SQLiteEventStore

if TYPE_CHECKING:
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
