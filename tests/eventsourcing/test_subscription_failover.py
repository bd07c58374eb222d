"""Replicas in separate processes share one subscription name; the active one is SIGKILLed.

Each worker (`_lease_worker.py`) runs the same `Subscription` with a transactional
checkpoint and records every event it handles in an `effects` table, in the checkpoint's
transaction. The test appends events while the workers run, kills the active worker (the
one that wrote the latest effect) mid-run, and checks that every event was applied exactly
once and that a standby took over. The handover time (from the SIGKILL to the new runner's
first committed effect) is printed; docs/benchmarks record it.
"""

from __future__ import annotations

import signal
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
PAUSE = 3.0  # seconds SIGSTOPped: 3 leases of the worker, less than SQLite's busy_timeout

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


async def _stop_active(
    store: Store, table: str, processes: dict[int, Process], progress: int, *, pause: bool
) -> float | None:
    """Once `progress` effects exist, stop the active worker; return the handover time.

    It is SIGKILLed, or with `pause` SIGSTOPped for `PAUSE` seconds and then resumed (it
    must find its lease gone and stand by). A pause that lands inside a SQLite transaction
    (or after a PostgreSQL fence) keeps every other writer out, so no one takes over and
    the handover time is `None`; a pause never makes an effect apply twice.
    """
    while len(effects := await _effects(store, table)) < progress:  # noqa: ASYNC110 - polls other processes
        await anyio.sleep(0.01)
    victim = effects[-1][1]
    stopped_at = time.time()
    if pause:
        processes[victim].send_signal(signal.SIGSTOP)
        try:
            await anyio.sleep(PAUSE)
        finally:
            processes[victim].send_signal(signal.SIGCONT)
        later = await _effects_of_others(store, table, victim, stopped_at)
        return min(later) - stopped_at if later else None
    processes[victim].kill()
    await processes[victim].wait()
    while not (later := await _effects_of_others(store, table, victim, stopped_at)):  # noqa: ASYNC110 - polls other processes
        await anyio.sleep(0.01)
    return min(later) - stopped_at


async def _effects_of_others(store: Store, table: str, victim: int, since: float) -> list[float]:
    """Return when the workers other than `victim` applied effects after `since`."""
    return [at for _p, w, at in await _effects(store, table) if w != victim and at > since]


async def _scenario(
    store: Store, table: str, argv: list[str], workers: int, kills: int, *, pause: bool
) -> None:
    """Run `workers` replicas, stop the active one `kills` times, and check the effects."""
    command = [sys.executable, str(WORKER), *argv]
    processes = {
        w: await anyio.open_process([*command, str(w), str(TOTAL)], stdout=None, stderr=None)
        for w in range(workers)
    }
    handovers: list[float | None] = []
    try:
        with anyio.fail_after(90):
            async with anyio.create_task_group() as group:
                group.start_soon(_produce, store)
                for k in range(1, kills + 1):
                    progress = TOTAL * k // (kills + 2)
                    handover = await _stop_active(store, table, processes, progress, pause=pause)
                    handovers.append(handover)
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
    if not pause:
        assert len({w for _p, w, _at in effects}) == kills + 1  # each kill handed over
    assert await store.load_checkpoint("projection") == TOTAL
    report = ", ".join("none" if h is None else f"{h:.2f} s" for h in handovers)
    how = "SIGSTOP" if pause else "SIGKILL"
    print(f"\n{argv[0]}, {workers} processes: handover after {how} {report}")  # noqa: T201 - the measured figure


async def _sqlite(tmp_path: Path, workers: int, kills: int, *, pause: bool = False) -> None:
    path = str(tmp_path / "replicas.db")
    async with await SQLiteEventStore.open(path) as store:
        async with store.transaction() as tx:
            await tx.execute("CREATE TABLE effects (position INTEGER, worker INTEGER, at REAL)")
        await _scenario(store, "effects", ["sqlite", path, "-"], workers, kills, pause=pause)


async def _postgres(
    dsn: str, schema: str, workers: int, kills: int, *, pause: bool = False
) -> None:
    async with await PostgresEventStore.open(dsn, schema=schema) as store:
        table = f'"{schema}".effects'
        async with store.transaction() as tx:
            await tx.execute(f"CREATE TABLE {table} (position BIGINT, worker INT, at FLOAT8)")
        argv = ["postgres", dsn, schema]
        await _scenario(store, table, argv, workers, kills, pause=pause)


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

    async def test_sqlite_paused_runner(self, tmp_path: Path, capsys: Any) -> None:
        """SQLite, the runner SIGSTOPped past its lease then resumed: it commits nothing."""
        with capsys.disabled():
            await _sqlite(tmp_path, workers=2, kills=1, pause=True)

    async def test_postgres_paused_runner(
        self, postgres_dsn: str, pg_schema: str, capsys: Any
    ) -> None:
        """PostgreSQL, the runner SIGSTOPped past its lease then resumed: it commits nothing."""
        with capsys.disabled():
            await _postgres(postgres_dsn, pg_schema, workers=2, kills=1, pause=True)
