"""Three-step sagas per second: meshkit's orchestrator, the raw append rate, and DBOS.

Each round runs `SAGAS[concurrency]` three-step sagas (reserve: compensatable, pay: pivot,
confirm: retriable; the participants return at once) with 1 or 64 in flight, on a fresh
store: memory, SQLite (WAL, synchronous=FULL, the default) or the local PostgreSQL (a fresh
schema, synchronous_commit on). Beside it, in the same run: the same store's raw append rate
(one event per append, as many concurrent writers) and DBOS (`dbos` on PyPI, a workflow of
three `@DBOS.step`s, on a SQLite file or the same PostgreSQL). Nothing turns durability off:
every saga record is committed before the next step runs.

Run: `.venv/bin/pytest benchmarks/test_saga.py --benchmark-only --benchmark-group-by=param`
"""

from __future__ import annotations

import asyncio  # noqa: TID251 - DBOS async workflows run on asyncio only
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
import pytest

from meshkit.eventsourcing import (
    Event,
    EventStore,
    MemoryEventStore,
    PostgresEventStore,
    SQLiteEventStore,
)
from meshkit.saga import Saga, SagaOrchestrator, Step, StepContext, StepKind

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

DSN = os.environ.get("MESHKIT_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SAGAS = {1: 100, 64: 640}
ROUNDS = 3
CONCURRENCY = [1, 64]


async def _participant(data: Any, context: StepContext) -> None:
    """A participant that answers at once (the benchmark measures the orchestration)."""


SAGA = Saga(
    name="order",
    steps=[
        Step(name="reserve", action=_participant, compensation=_participant),
        Step(name="pay", action=_participant, kind=StepKind.PIVOT),
        Step(name="confirm", action=_participant, kind=StepKind.RETRIABLE),
    ],
)


class Stores:
    """Makes fresh stores outside the timed rounds, and drops them afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.schemas: list[str] = []
        self.opened: list[EventStore] = []

    def make(self, backend: str) -> EventStore:
        """Close the previous round's store (PostgreSQL connections are shared and few)."""
        self.close_stores()

        async def open_store() -> EventStore:
            if backend == "memory":
                return MemoryEventStore()
            if backend == "sqlite":
                return await SQLiteEventStore.open(self.tmp / f"{uuid.uuid4().hex}.db")
            schema = f"bench_saga_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(DSN, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            self.schemas.append(schema)
            return await PostgresEventStore.open(DSN, schema=schema, max_connections=8)

        store: EventStore = anyio.run(open_store)
        self.opened.append(store)
        return store

    def close_stores(self) -> None:
        while self.opened:
            anyio.run(self.opened.pop().aclose)

    def close(self) -> None:
        self.close_stores()
        with psycopg.connect(DSN, autocommit=True) as conn:
            for schema in self.schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="module")
def stores() -> Iterator[Stores]:
    with tempfile.TemporaryDirectory() as tmp:
        made = Stores(Path(tmp))
        yield made
        made.close()


def _sagas(store: EventStore, concurrency: int) -> None:
    """Run SAGAS[concurrency] sagas, `concurrency` at a time, each to completion."""
    count = SAGAS[concurrency]

    async def main() -> None:
        async with SagaOrchestrator(store=store, sagas=[SAGA]) as orch:

            async def worker(share: int) -> None:
                for n in range(share):
                    status = await orch.run(SAGA, {"n": n})
                    assert status.state.value == "completed"

            async with anyio.create_task_group() as group:
                for _ in range(concurrency):
                    group.start_soon(worker, count // concurrency)

    anyio.run(main)


def _appends(store: EventStore, concurrency: int) -> None:
    """Append SAGAS[concurrency] events, one per append, from `concurrency` writers."""
    count = SAGAS[concurrency]

    async def writer(share: int) -> None:
        stream = uuid.uuid4().hex
        for version in range(1, share + 1):
            event = Event(stream_id=stream, version=version, type="Happened", data={"n": 1})
            await store.append(stream, [event], version - 1)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(concurrency):
                group.start_soon(writer, count // concurrency)

    anyio.run(main)


def _rounds(benchmark: Any, stores: Stores, backend: str, run: Callable[..., None], c: int) -> None:
    benchmark.extra_info["operations"] = SAGAS[c]
    benchmark.pedantic(
        run, setup=lambda: ((stores.make(backend), c), {}), rounds=ROUNDS, iterations=1
    )


@pytest.mark.parametrize("concurrency", CONCURRENCY)
@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
class TestMeshkit:
    def test_saga(self, benchmark: Any, stores: Stores, backend: str, concurrency: int) -> None:
        """meshkit: three-step sagas, durable on the store."""
        benchmark.group = f"saga {backend} x{concurrency}"
        _rounds(benchmark, stores, backend, _sagas, concurrency)

    def test_raw_append(
        self, benchmark: Any, stores: Stores, backend: str, concurrency: int
    ) -> None:
        """The same store's raw append rate, one event per append."""
        benchmark.group = f"saga {backend} x{concurrency}"
        _rounds(benchmark, stores, backend, _appends, concurrency)


# ------------------------------------------------------------------ DBOS


def _dbos_workflow() -> Callable[[int], Any]:
    from dbos import DBOS  # noqa: PLC0415 - a benchmark peer, imported when measured

    @DBOS.step()
    async def reserve(n: int) -> int:
        return n

    @DBOS.step()
    async def pay(n: int) -> int:
        return n

    @DBOS.step()
    async def confirm(n: int) -> int:
        return n

    @DBOS.workflow()
    async def order(n: int) -> int:
        return await confirm(await pay(await reserve(n)))

    return order


WORKFLOW: Callable[[int], Any] | None = None


@pytest.fixture(params=["sqlite", "postgres"])
def dbos_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Launch DBOS on a fresh SQLite file or PostgreSQL schema; destroy it afterwards."""
    from dbos import DBOS  # noqa: PLC0415 - a benchmark peer

    global WORKFLOW  # noqa: PLW0603 - DBOS registers workflows once per process
    if WORKFLOW is None:
        WORKFLOW = _dbos_workflow()
    schema = f"bench_dbos_{uuid.uuid4().hex[:12]}"
    url = f"sqlite:///{tmp_path / 'dbos.db'}" if request.param == "sqlite" else DSN
    config: Any = {
        "name": "bench",
        "system_database_url": url,
        "dbos_system_schema": schema,
        "log_level": "WARNING",
        "console_log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    try:
        yield request.param
    finally:
        DBOS.destroy(destroy_registry=False)
        if request.param == "postgres":
            with psycopg.connect(DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _dbos_round(concurrency: int) -> None:
    workflow = WORKFLOW
    assert workflow is not None
    count = SAGAS[concurrency]

    async def main() -> None:
        async def worker(share: int) -> None:
            for n in range(share):
                assert await workflow(n) == n

        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))

    asyncio.run(main())


@pytest.mark.parametrize("concurrency", CONCURRENCY)
def test_dbos(benchmark: Any, dbos_backend: str, concurrency: int) -> None:
    """DBOS: a workflow of three steps, durable in its system database."""
    benchmark.group = f"saga {dbos_backend} x{concurrency}"
    benchmark.extra_info["operations"] = SAGAS[concurrency]
    benchmark.pedantic(_dbos_round, args=(concurrency,), rounds=ROUNDS, iterations=1)
