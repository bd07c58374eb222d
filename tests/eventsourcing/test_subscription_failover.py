"""Replicas in separate processes share one subscription name; the active one is SIGKILLed.

Each worker (`_lease_worker.py`) runs the same `Subscription` with a transactional
checkpoint and records every event it handles in an `effects` table, in the checkpoint's
transaction. The test appends events while the workers run, kills the active worker (the
one that wrote the latest effect) mid-run, and checks that every event was applied exactly
once and that a standby took over. The handover time (from the SIGKILL to the new runner's
first committed effect) is printed; docs/benchmarks record it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from meshkit.eventsourcing import Event, PostgresEventStore, SQLiteEventStore

if TYPE_CHECKING:
    from anyio.abc import Process

WORKER = Path(__file__).with_name("_lease_worker.py")
TOTAL = 400
APPEND_EVERY = 0.0075  # seconds: the producer spans about 3 s, so the kills land mid-run

Store = SQLiteEventStore | PostgresEventStore


@pytest.fixture
def anyio_backend() -> str:
    """Run on asyncio only: the worker processes dominate, and each backend runs them."""
    return "asyncio"


async def _effects(store: Store, table: str) -> list[tuple[int, int, float]]:
    """Return every effect row: (position, worker, time applied)."""
    async with store.transaction() as tx:
        rows = await tx.execute(f"SELECT position, worker, at FROM {table} ORDER BY at")  # noqa: S608 - test table
    return [(int(p), int(w), float(a)) for p, w, a in rows]


async def _produce(store: Store) -> None:
    for n in range(1, TOTAL + 1):
        stream = f"order-{n % 7}"
        version = await store.stream_version(stream)
        event = Event(stream_id=stream, version=version + 1, type="Placed", data={"n": n})
        await store.append(stream, [event], version)
        await anyio.sleep(APPEND_EVERY)


async def _kill_active(
    store: Store, table: str, processes: dict[int, Process], progress: int
) -> float:
    """Once `progress` effects exist, SIGKILL the active worker; return the handover time."""
    while len(effects := await _effects(store, table)) < progress:  # noqa: ASYNC110 - polls other processes
        await anyio.sleep(0.01)
    victim = effects[-1][1]
    killed_at = time.time()
    processes[victim].kill()
    await processes[victim].wait()
    while True:
        later = [at for _p, w, at in await _effects(store, table) if w != victim and at > killed_at]
        if later:
            return min(later) - killed_at
        await anyio.sleep(0.01)


async def _scenario(store: Store, table: str, argv: list[str], workers: int, kills: int) -> None:
    """Run `workers` replicas, kill the active one `kills` times, and check the effects."""
    command = [sys.executable, str(WORKER), *argv]
    processes = {
        w: await anyio.open_process([*command, str(w), str(TOTAL)], stdout=None, stderr=None)
        for w in range(workers)
    }
    handovers: list[float] = []
    try:
        with anyio.fail_after(90):
            async with anyio.create_task_group() as group:
                group.start_soon(_produce, store)
                for k in range(1, kills + 1):
                    progress = TOTAL * k // (kills + 2)
                    handovers.append(await _kill_active(store, table, processes, progress))
            for process in processes.values():
                await process.wait()
    finally:
        for process in processes.values():
            if process.returncode is None:  # pragma: no cover - only when the test failed
                process.kill()
                await process.wait()
    effects = await _effects(store, table)
    positions = sorted(p for p, _w, _at in effects)
    assert positions == list(range(1, TOTAL + 1))  # every event applied exactly once
    assert len({w for _p, w, _at in effects}) == kills + 1  # each kill handed over
    assert await store.load_checkpoint("projection") == TOTAL
    report = ", ".join(f"{h:.2f} s" for h in handovers)
    print(f"\n{argv[0]}, {workers} processes: handover after SIGKILL {report}")  # noqa: T201 - the measured figure


async def _sqlite(tmp_path: Path, workers: int, kills: int) -> None:
    path = str(tmp_path / "replicas.db")
    async with await SQLiteEventStore.open(path) as store:
        async with store.transaction() as tx:
            await tx.execute("CREATE TABLE effects (position INTEGER, worker INTEGER, at REAL)")
        await _scenario(store, "effects", ["sqlite", path, "-"], workers, kills)


async def _postgres(dsn: str, schema: str, workers: int, kills: int) -> None:
    async with await PostgresEventStore.open(dsn, schema=schema) as store:
        table = f'"{schema}".effects'
        async with store.transaction() as tx:
            await tx.execute(f"CREATE TABLE {table} (position BIGINT, worker INT, at FLOAT8)")
        await _scenario(store, table, ["postgres", dsn, schema], workers, kills)


@pytest.mark.anyio
class TestFailover:
    async def test_sqlite_two_processes(self, tmp_path: Path, capsys: Any) -> None:
        """SQLite, two replicas, the active one killed: every event applied once."""
        with capsys.disabled():
            await _sqlite(tmp_path, workers=2, kills=1)

    async def test_sqlite_three_processes(self, tmp_path: Path, capsys: Any) -> None:
        """SQLite, three replicas, the active one killed twice: every event applied once."""
        with capsys.disabled():
            await _sqlite(tmp_path, workers=3, kills=2)

    async def test_postgres_two_processes(
        self, postgres_dsn: str, pg_schema: str, capsys: Any
    ) -> None:
        """PostgreSQL, two replicas, the active one killed: every event applied once."""
        with capsys.disabled():
            await _postgres(postgres_dsn, pg_schema, workers=2, kills=1)

    async def test_postgres_three_processes(
        self, postgres_dsn: str, pg_schema: str, capsys: Any
    ) -> None:
        """PostgreSQL, three replicas, the active one killed twice: every event applied once."""
        with capsys.disabled():
            await _postgres(postgres_dsn, pg_schema, workers=3, kills=2)
