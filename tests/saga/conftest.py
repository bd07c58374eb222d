"""Fixtures for the saga tests: event stores on every backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from meshkit.eventsourcing import EventStore, MemoryEventStore, PostgresEventStore, SQLiteEventStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from saga_helpers import StoreFactory


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
