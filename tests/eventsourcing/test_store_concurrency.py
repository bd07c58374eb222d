"""Eight processes append to shared and own streams while a subscriber follows the global log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from meshkit.eventsourcing import Event, EventStore, PostgresEventStore, SQLiteEventStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

WORKER = Path(__file__).with_name("_es_worker.py")
PROCESSES = 8
COUNT = 12


@pytest.fixture
def anyio_backend() -> str:
    """Run on asyncio only: the worker processes dominate, and each backend runs them."""
    return "asyncio"


async def _worker(args: list[str]) -> None:
    await anyio.run_process([sys.executable, str(WORKER), *args])


async def _run(store: EventStore, argv: Callable[[int], list[str]]) -> list[Event]:
    """Run the workers while subscribing; return what the subscriber saw."""
    seen: list[Event] = []
    finished = anyio.Event()

    async def subscriber() -> None:
        position = 0
        while True:
            done = finished.is_set()
            batch = await store.read_all(position)
            seen.extend(batch)
            position = batch[-1].position or position if batch else position
            if done and not batch:
                return
            await anyio.sleep(0.01)

    async def workers() -> None:
        async with anyio.create_task_group() as group:
            for worker in range(PROCESSES):
                group.start_soon(_worker, argv(worker))
        finished.set()

    async with anyio.create_task_group() as group:
        group.start_soon(subscriber)
        group.start_soon(workers)
    return seen


async def _check(store: EventStore, run: Callable[[], Awaitable[list[Event]]]) -> None:
    seen = await run()
    log = await store.read_all()
    assert len(log) == PROCESSES * COUNT * 2
    assert [e.event_id for e in seen] == [e.event_id for e in log]  # every event once, in order
    positions = [e.position or 0 for e in log]
    assert positions == sorted(set(positions))
    streams = {e.stream_id for e in log}
    assert len(streams) == PROCESSES + 2
    for stream_id in streams:
        versions = [e.version for e in await store.read(stream_id)]
        assert versions == list(range(1, len(versions) + 1))
    for worker in range(PROCESSES):
        assert len(await store.read(f"own-{worker}")) == COUNT


@pytest.mark.anyio
class TestEightProcesses:
    async def test_sqlite(self, tmp_path: Path) -> None:
        """SQLite: no lost or duplicated event; the live subscriber sees each once, in order."""
        path = str(tmp_path / "shared.db")
        async with await SQLiteEventStore.open(path) as store:
            argv = lambda w: ["sqlite", path, "-", str(w), str(COUNT)]  # noqa: E731
            await _check(store, lambda: _run(store, argv))

    async def test_postgres(self, postgres_dsn: str, pg_schema: str) -> None:
        """PostgreSQL: the same, with writers in parallel and the xmin-guarded log."""
        async with await PostgresEventStore.open(postgres_dsn, schema=pg_schema) as store:
            argv = lambda w: ["postgres", postgres_dsn, pg_schema, str(w), str(COUNT)]  # noqa: E731
            await _check(store, lambda: _run(store, argv))
